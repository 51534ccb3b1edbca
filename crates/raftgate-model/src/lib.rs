//! The domain model of raftgate.
//!
//! Everything the cluster replicates is described here: the resources users configure
//! (services, routes, consumers, keys, rate-limit policies, teams and the API [`catalog`]), who
//! may change them ([`access`]), the [`command::Command`] enum
//! that the Raft log carries, the [`state::State`] those commands build, and the one
//! [`codec`] that turns them into bytes. The crate has no I/O so that the admin API, the
//! proxy, the CLI and the tests can share the exact same types.

#![warn(missing_docs)]

pub mod access;
pub mod ai;
pub mod analytics;
pub mod api;
pub mod catalog;
pub mod codec;
pub mod command;
pub mod path;
pub mod policy;
pub mod prompt;
pub mod report;
pub mod resource;
pub mod state;
pub mod validate;

pub use command::{Batch, Command, Kind, Outcome, Proposal, Rejection, Spec};
pub use resource::{
    ActiveCheck, CertificateInfo, CertificateSpec, ConsumerSpec, Entity, HashOn, HeaderOps,
    HealthChecks, InstanceSpec, LbPolicy, PassiveCheck, RateLimitSpec, RateWindow, RouteSpec,
    ServiceSpec, StoredKey, Target, Timeouts,
};
pub use state::State;
pub use validate::ValidationError;

/// Identifies a node in the Raft cluster; stable across restarts.
pub type NodeId = u64;

/// The addresses a node listens on; replicated as part of the Raft membership so that any node can
/// reach (and tell clients about) any other.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct NodeInfo {
    /// `host:port` of the gRPC endpoint used for Raft traffic and write forwarding.
    pub cluster_addr: String,
    /// `host:port` of the admin HTTP API.
    pub admin_addr: String,
    /// `host:port` of the proxy listener.
    pub proxy_addr: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cluster={} admin={} proxy={}",
            self.cluster_addr, self.admin_addr, self.proxy_addr
        )
    }
}
