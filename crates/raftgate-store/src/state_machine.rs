//! The Raft state machine: applies committed proposals to the replicated [`State`] and publishes
//! each new state to the proxy and the admin API.
//!
//! The state lives in memory and is persisted in sled as snapshots: every snapshot (built every
//! few thousand entries, or on demand) is written to the `snapshots` tree and synced before the
//! log behind it may be purged. On restart the node loads its last snapshot and Raft replays the
//! log entries after it. Applying therefore touches no disk at all, and recovery never depends on
//! what sled happened to flush before a crash: the only state trusted after one is a synced
//! snapshot plus the synced log.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use raftgate_model::State;
use raftgate_model::codec;
use raftgate_model::command::Applied;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::StoreError;
use crate::apply::apply;
use crate::durable::Durable;
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// How many recent request ids are remembered for de-duplication of retried writes.
pub const RECENT_REQUESTS: usize = 10_000;

/// Key of the current snapshot in the `snapshots` tree.
const SNAPSHOT: &[u8] = b"current";

/// Outcomes of recent proposals by request id, oldest dropped first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Recent {
    by_id: BTreeMap<u128, Applied>,
    /// (log index, request id): one log entry carries a batch of requests.
    by_index: BTreeSet<(u64, u128)>,
}

impl Recent {
    fn get(&self, id: u128) -> Option<&Applied> {
        self.by_id.get(&id)
    }

    fn insert(&mut self, id: u128, index: u64, applied: Applied) {
        self.by_id.insert(id, applied);
        self.by_index.insert((index, id));
        while self.by_index.len() > RECENT_REQUESTS {
            if let Some((_, old)) = self.by_index.pop_first() {
                self.by_id.remove(&old);
            }
        }
    }
}

/// Everything a snapshot must carry besides the Raft metadata.
#[derive(Debug, Clone, Default)]
struct Machine {
    state: State,
    recent: Recent,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The bytes inside a snapshot: the state and the de-duplication window.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    state: State,
    recent: Recent,
}

fn decode_machine(meta: &SnapshotMeta, data: &[u8]) -> Result<Machine, codec::CodecError> {
    let body: SnapshotBody = codec::decode(data)?;
    let mut state = body.state;
    state.applied_index = meta.last_log_id.map_or(0, |l| l.index);
    Ok(Machine {
        state,
        recent: body.recent,
        last_applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
    })
}

/// The state machine store of one node.
pub struct StateMachineStore {
    db: Durable,
    snapshots: sled::Tree,
    machine: Machine,
    published: watch::Sender<Arc<State>>,
    /// Size of the last snapshot built, installed or loaded: about the size of the state.
    snapshot_bytes: Arc<AtomicU64>,
}

fn snap_err<E: std::error::Error + 'static>(e: &E) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::new(e)).into()
}

/// Stores a snapshot and makes it durable.
async fn save_snapshot(
    db: &Durable,
    tree: &sled::Tree,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<(), StorageError> {
    let stored = codec::encode(&(meta, data)).map_err(|e| snap_err(&e))?;
    tree.insert(SNAPSHOT, stored).map_err(|e| snap_err(&e))?;
    db.sync().await.map_err(|e| snap_err(&e))
}

impl StateMachineStore {
    /// Loads the state machine from the last snapshot stored in `db`.
    pub fn new(db: Durable) -> Result<Self, StoreError> {
        let snapshots = db.tree("snapshots")?;
        let snapshot_bytes = Arc::new(AtomicU64::new(0));
        let machine = match snapshots.get(SNAPSHOT).map_err(|e| db.sled_err(e))? {
            None => Machine::default(),
            Some(bytes) => {
                let codec_err = |source| StoreError::Codec {
                    path: db.dir().display().to_string(),
                    source,
                };
                let (meta, data): (SnapshotMeta, Vec<u8>) =
                    codec::decode(&bytes).map_err(codec_err)?;
                snapshot_bytes.store(data.len() as u64, Ordering::Relaxed);
                decode_machine(&meta, &data).map_err(codec_err)?
            }
        };
        let (published, _) = watch::channel(Arc::new(machine.state.clone()));
        Ok(Self {
            db,
            snapshots,
            machine,
            published,
            snapshot_bytes,
        })
    }

    /// Size of the last snapshot, shared: the node compacts when the log outgrows it
    /// ([`crate::LogGrowth`]).
    pub fn snapshot_bytes(&self) -> Arc<AtomicU64> {
        self.snapshot_bytes.clone()
    }

    /// A receiver that sees every newly applied state; the proxy and admin API read from it.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.published.subscribe()
    }

    fn publish(&self) {
        self.published
            .send_replace(Arc::new(self.machine.state.clone()));
    }
}

/// Builds snapshots from a copy of the machine taken when the build was requested, so applying
/// goes on meanwhile (the copy is cheap: the state's tables are persistent maps).
pub struct SnapshotBuilder {
    machine: Machine,
    db: Durable,
    snapshots: sled::Tree,
    snapshot_bytes: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let m = &self.machine;
        let body = SnapshotBody {
            state: m.state.clone(),
            recent: m.recent.clone(),
        };
        let data = codec::encode(&body).map_err(|e| snap_err(&e))?;
        let snapshot_id = match m.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, sequence()),
            None => format!("empty-{}", sequence()),
        };
        let meta = SnapshotMeta {
            last_log_id: m.last_applied,
            last_membership: m.membership.clone(),
            snapshot_id,
        };
        save_snapshot(&self.db, &self.snapshots, &meta, &data).await?;
        self.snapshot_bytes
            .store(data.len() as u64, Ordering::Relaxed);
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Distinguishes snapshots built at the same log id (ids must be unique, not random-quality).
fn sequence() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.machine.last_applied, self.machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Applied>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let m = &mut self.machine;
        for entry in entries {
            let index = entry.log_id.index;
            m.last_applied = Some(entry.log_id);
            m.state.applied_index = index;
            let outcomes = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(mem) => {
                    m.membership = StoredMembership::new(Some(entry.log_id), mem);
                    Vec::new()
                }
                EntryPayload::Normal(proposals) => {
                    let mut outcomes = Vec::with_capacity(proposals.len());
                    for proposal in &proposals {
                        if let Some(earlier) = m.recent.get(proposal.request_id) {
                            // A retry of a request already applied: answer as the first time.
                            outcomes.push(earlier.clone());
                            continue;
                        }
                        let result = apply(&mut m.state, index, proposal);
                        m.recent.insert(proposal.request_id, index, result.clone());
                        outcomes.push(result);
                    }
                    outcomes
                }
            };
            results.push(outcomes);
        }
        self.publish();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            machine: self.machine.clone(),
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
            snapshot_bytes: self.snapshot_bytes.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "installing snapshot");
        let machine = decode_machine(meta, &data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        save_snapshot(&self.db, &self.snapshots, meta, &data).await?;
        self.snapshot_bytes
            .store(data.len() as u64, Ordering::Relaxed);
        self.machine = machine;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(bytes) = self.snapshots.get(SNAPSHOT).map_err(|e| snap_err(&e))? else {
            return Ok(None);
        };
        let (meta, data): (SnapshotMeta, Vec<u8>) =
            codec::decode(&bytes).map_err(|e| snap_err(&e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
