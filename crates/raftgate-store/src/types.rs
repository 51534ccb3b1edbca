//! The openraft type configuration: what the log carries and how nodes are addressed.

use std::io::Cursor;

use raftgate_model::command::Applied;
use raftgate_model::{Batch, NodeInfo};

openraft::declare_raft_types!(
    /// raftgate's Raft types: batches of proposals in, one result per proposal out, nodes
    /// addressed by [`NodeInfo`].
    pub TypeConfig:
        D = Batch,
        R = Vec<Applied>,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A log id of this configuration.
pub type LogId = openraft::LogId<u64>;
/// A stored membership of this configuration.
pub type StoredMembership = openraft::StoredMembership<u64, NodeInfo>;
/// A storage error of this configuration.
pub type StorageError = openraft::StorageError<u64>;
/// A snapshot of this configuration.
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
/// Snapshot metadata of this configuration.
pub type SnapshotMeta = openraft::SnapshotMeta<u64, NodeInfo>;
/// A log entry of this configuration.
pub type Entry = openraft::Entry<TypeConfig>;
