//! The raftgate cluster: identical nodes that agree on their configuration through Raft.
//!
//! Read top-down:
//! - [`node`]: the [`Node`] facade the admin API and the binary use — start, bootstrap, write
//!   (forwarded to the leader when needed), linearizable reads, status and membership changes;
//! - [`network`]: openraft's network over tonic, one lazily connected channel per peer;
//! - [`server`]: the gRPC service every node runs for its peers;
//! - [`forward`]: what a follower asks the leader to do on behalf of its clients;
//! - [`security`]: mutual TLS and the cluster secret on the cluster port.
//!
//! The Raft log and state machine live in `raftgate-store`; the commands in `raftgate-model`.

#![warn(missing_docs)]

pub mod error;
pub mod forward;
pub mod network;
pub mod node;
pub mod security;
pub mod server;

/// Code generated from `proto/cluster.proto`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("raftgate.cluster.v1");
}

pub use error::{StartError, WriteError};
pub use node::{Node, NodeConfig, RaftTuning};
pub use security::{Security, TlsFiles};

/// The Raft instance type of raftgate.
pub type Raft = openraft::Raft<raftgate_store::TypeConfig>;
