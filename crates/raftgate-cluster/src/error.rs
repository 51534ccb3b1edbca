//! Errors a caller of the cluster can get, each saying what to do next.

use std::time::Duration;

use raftgate_model::Rejection;

/// Starting a node failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be opened.
    #[error(transparent)]
    Store(#[from] raftgate_store::StoreError),
    /// openraft refused the configuration.
    #[error("invalid Raft settings: {0}; check the --heartbeat-ms and --election-ms options")]
    Config(String),
    /// openraft could not start.
    #[error("cannot start Raft: {0}")]
    Raft(String),
    /// The cluster TLS files are not usable.
    #[error(
        "cannot use the cluster TLS files: {0}; check --cluster-ca, --cluster-cert and --cluster-key (PEM)"
    )]
    Tls(String),
    /// The cluster port could not be bound.
    #[error(
        "cannot listen on cluster address {addr}: {source}; pick a free port with --cluster-addr"
    )]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A write, read or membership change did not go through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The state machine refused the command (not found, version mismatch, in use...).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// No leader could be reached in time: the cluster has lost its quorum or is electing.
    #[error(
        "no Raft leader is reachable (quorum lost or election under way); retry after {retry_after:?}"
    )]
    NoLeader {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The request reached a leader but did not complete in time: it may or may not take effect.
    #[error(
        "the request timed out; it may still take effect: read the resource back before retrying (retry after {retry_after:?})"
    )]
    Timeout {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The request is not acceptable (for example, a membership change that makes no sense).
    #[error("{0}")]
    Invalid(String),
    /// A membership change names a node or an address it may not.
    #[error("{message}")]
    BadMember {
        /// The field of `POST /cluster/members` at fault.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A membership change was refused because the cluster could not commit after it.
    #[error("{0}")]
    Unsafe(String),
    /// A membership change was refused because a majority of the current voters does not
    /// answer, so nothing can be committed now.
    #[error("{0}")]
    NoQuorum(String),
    /// The node cannot have writes committed now (see `Node::ready`).
    #[error("this node is not ready: {0}")]
    NotReady(String),
    /// The node is shutting down or Raft has stopped.
    #[error("this node's Raft core has stopped ({0}); restart the node")]
    Stopped(String),
}
