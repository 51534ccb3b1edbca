//! Durable Raft storage for raftgate, in one sled database per node.
//!
//! - [`log_store`]: the Raft log and vote (openraft's `RaftLogStorage`), in segment files of its
//!   own ([`wal`]) with group commit. Nothing is acknowledged to Raft before it is `fdatasync`ed.
//! - [`state_machine`]: kept in sled (see [`durable`]); applies [`raftgate_model::Command`]s to the replicated
//!   [`raftgate_model::State`], persists it, builds and installs snapshots, and publishes every new
//!   state to the proxy and the admin API.
//! - [`types`]: the openraft type configuration shared by the cluster crate.

#![warn(missing_docs)]
// openraft dictates `StorageError` (224 bytes) as the error type of its storage traits.
#![allow(clippy::result_large_err)]

mod apply;
pub mod durable;
pub mod log_store;
pub mod state_machine;
pub mod types;
pub mod wal;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use log_store::LogStore;
pub use state_machine::StateMachineStore;
pub use types::TypeConfig;

/// Opening or using the on-disk store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error.
    #[error(
        "storage error in {path}: {source}; check that the data directory is writable and not used by another raftgate process"
    )]
    Sled {
        /// The database directory.
        path: String,
        /// The underlying error.
        source: sled::Error,
    },
    /// Stored data could not be decoded.
    #[error(
        "stored data in {path} is unreadable: {source}; restore the data directory from a backup or wipe it and re-add the node"
    )]
    Codec {
        /// The database directory.
        path: String,
        /// The underlying error.
        source: raftgate_model::codec::CodecError,
    },
    /// A file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// How much the Raft log holds against the size of the state. Snapshots every N entries alone
/// let the log hold far more than the state when entries are large (one batched entry carries
/// every write that waited for the leader, e.g. ~11 routes each when 10,000 are written): the
/// node also compacts when the log outgrows the last snapshot, so the entries held in memory stay
/// about as large as the state, at an amortized snapshot cost of one state per state's worth of
/// writes.
#[derive(Debug, Clone)]
pub struct LogGrowth {
    log: Arc<AtomicU64>,
    snapshot: Arc<AtomicU64>,
}

impl LogGrowth {
    /// The growth of `log` against the snapshots of `sm`.
    pub fn of(log: &LogStore, sm: &StateMachineStore) -> LogGrowth {
        LogGrowth {
            log: log.held_bytes(),
            snapshot: sm.snapshot_bytes(),
        }
    }

    /// Whether the log holds more encoded bytes than the last snapshot and than `floor`.
    pub fn outgrown(&self, floor: u64) -> bool {
        self.log.load(Ordering::Relaxed) > floor.max(self.snapshot.load(Ordering::Relaxed))
    }
}

/// Opens (or creates) the node's storage under `dir` — the log in `dir/log`, the state machine
/// in `dir/state` — and returns its two halves. Starts the log's writer thread.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = durable::Durable::open(&dir.join("state"))?;
    let log = LogStore::open(&dir.join("log"), db.clone())?;
    let sm = StateMachineStore::new(db)?;
    Ok((log, sm))
}
