//! Admin API bodies that are not resources themselves. The admin server, the CLI and the tests
//! all use these types, so the three can never disagree on a field name.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::NodeId;
use crate::access::TokenRole;
use crate::ai::AiLimits;
use crate::catalog::Lifecycle;

/// Every admin API error has this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `version_mismatch`, `no_leader`.
    pub error: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The JSON field at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Whether a member votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Counts towards the quorum.
    Voter,
    /// Receives the log but does not vote (a node catching up).
    Learner,
}

/// One member of the cluster as `GET /cluster` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    /// Node id.
    #[schema(value_type = u64)]
    pub id: NodeId,
    /// gRPC address for Raft and forwarding.
    pub cluster_addr: String,
    /// Admin API address.
    pub admin_addr: String,
    /// Proxy address.
    pub proxy_addr: String,
    /// Voter or learner.
    pub role: Role,
    /// Last log index known to be replicated to (on the leader) or applied by (on itself) the
    /// member; `None` when the answering node does not know.
    pub applied_index: Option<u64>,
}

/// `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// The node that answered.
    #[schema(value_type = u64)]
    pub node_id: NodeId,
    /// Current leader, if one is known.
    #[schema(value_type = Option<u64>)]
    pub leader_id: Option<NodeId>,
    /// Current Raft term.
    pub term: u64,
    /// Last log index applied by the answering node.
    pub applied_index: u64,
    /// All members, voters and learners.
    pub members: Vec<Member>,
}

/// How a member answers its own readiness check, as the node asked by `GET /cluster/nodes`
/// sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// It answers `GET /ready`: it can have writes committed now.
    Ready,
    /// It answers, but cannot have writes committed (cut off from the quorum, not a member
    /// yet, its Raft core stopped); `message` says why.
    NotReady,
    /// Its admin API does not answer (the process is down or unreachable from here).
    Down,
}

/// One member and its health, in `GET /cluster/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeHealth {
    /// Node id.
    #[schema(value_type = u64)]
    pub id: NodeId,
    /// Voter or learner.
    pub role: Role,
    /// Whether the answering node knows it as the leader.
    pub leader: bool,
    /// gRPC address for Raft and forwarding.
    pub cluster_addr: String,
    /// Admin API address; empty while unknown (a member named by `--peer` that has not
    /// answered at its cluster address).
    pub admin_addr: String,
    /// Proxy address; empty while unknown, as `admin_addr`.
    pub proxy_addr: String,
    /// Last log index it applied (as `GET /cluster` reports it); `None` when it did not answer.
    pub applied_index: Option<u64>,
    /// Entries it is behind the leader's applied index (or, without a known leader, the
    /// highest one reported); `None` when either is unknown.
    pub lag: Option<u64>,
    /// Its readiness.
    pub state: NodeState,
    /// Why it is not ready or down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /cluster/nodes`: every member with its health, asked by the answering node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterNodes {
    /// The node that answered.
    #[schema(value_type = u64)]
    pub node_id: NodeId,
    /// Current leader, if one is known.
    #[schema(value_type = Option<u64>)]
    pub leader_id: Option<NodeId>,
    /// Current Raft term, as the answering node knows it.
    pub term: u64,
    /// All members, voters and learners, by id.
    pub nodes: Vec<NodeHealth>,
}

/// `POST /cluster/members`: a node to add. It must already be running with these addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// Id of the new node (the `--id` it runs with); at least 1, and no voter's.
    #[schema(value_type = u64, minimum = 1)]
    pub id: NodeId,
    /// Its gRPC address.
    pub cluster_addr: String,
    /// Its admin API address.
    pub admin_addr: String,
    /// Its proxy address.
    pub proxy_addr: String,
}

/// `POST /consumers/{name}/keys`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// Key id, for listing and revoking.
    pub id: String,
    /// Owning consumer.
    pub consumer: String,
    /// The secret; store it now, it cannot be read again.
    pub key: String,
    /// First characters of the key.
    pub prefix: String,
    /// Version (log index) of the write.
    pub version: u64,
}

/// The settings of a key: the body of `POST /consumers/{name}/keys` (optional) and of
/// `PUT /consumers/{name}/keys/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// AI budgets and token rate of calls made with this key (on top of its consumer's).
    #[serde(default)]
    pub ai_limits: AiLimits,
}

/// A key as listed: everything but the secret and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyInfo {
    /// Key id.
    pub id: String,
    /// Owning consumer.
    pub consumer: String,
    /// First characters of the key.
    pub prefix: String,
    /// Version (log index) of the write.
    pub version: u64,
    /// Creation time, Unix milliseconds.
    pub created_at: u64,
    /// AI budgets and token rate of calls made with this key.
    pub ai_limits: AiLimits,
}

/// `GET /health`: the node's admin API answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the node answers.
    pub status: String,
    /// The answering node.
    #[schema(value_type = u64)]
    pub node_id: NodeId,
}

/// `GET /ready`: this node can have writes committed now — a leader confirmed its leadership
/// with a quorum (a read-index round) and this node, a member, has applied up to that point.
/// `/health` only says the process answers; a node that is alive but cut off from the quorum,
/// or no longer a member, is not ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// The answering node.
    #[schema(value_type = u64)]
    pub node_id: NodeId,
    /// The leader that confirmed its leadership.
    #[schema(value_type = u64)]
    pub leader_id: NodeId,
    /// The log index this node has applied, at least the leader's commit index at the check.
    pub applied_index: u64,
}

/// One upstream target as one node's proxy sees it. Health is local to each node (every node
/// probes and ejects on its own), so the admin API shows it per node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TargetHealth {
    /// The target URL, from the service's `targets` or a registered instance.
    pub url: String,
    /// The address traffic goes to, `ip:port`; a DNS name may resolve to several, each listed
    /// on its own. `None` while a DNS name has not resolved.
    pub address: Option<String>,
    /// Relative share of traffic.
    pub weight: u32,
    /// The active health checks' verdict; `true` when the service has no active checks.
    pub healthy: bool,
    /// Until when (Unix milliseconds) passive checks took the target out of rotation; `None`
    /// when it is not ejected.
    pub ejected_until: Option<u64>,
    /// Whether the target receives traffic now: resolved, healthy and not ejected.
    pub available: bool,
    /// Requests in a row that failed (connect error, timeout, 5xx) on this target.
    pub consecutive_failures: u32,
    /// Active probes in a row that failed.
    pub failed_probes: u32,
    /// Requests being forwarded to the target right now, by this node.
    pub in_flight: u64,
}

/// The health of one service's targets, as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpstreamHealth {
    /// Service name.
    pub service: String,
    /// Every target with a weight above 0, in configuration order (registered instances after
    /// the static targets); a DNS name appears once per address it resolved to.
    pub targets: Vec<TargetHealth>,
}

/// One node's view of its upstreams, as `GET /upstreams/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeUpstreams {
    /// The node.
    #[schema(value_type = u64)]
    pub node_id: NodeId,
    /// Its view of each service's targets.
    pub services: Vec<UpstreamHealth>,
    /// Why the node's view could not be fetched (cluster view only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /tokens`: a new admin token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// The token's name: recorded as the actor of its writes in the audit log. Letters, digits
    /// and `- _ . ~`; `bootstrap` is reserved for `--admin-token`.
    #[schema(
        pattern = r"^(?:[A-Za-z0-9_-][A-Za-z0-9._~-]*|~[A-Za-z0-9._~-]+|\.[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.\.[A-Za-z0-9._~-]+)$",
        min_length = 1,
        max_length = 128
    )]
    pub name: String,
    /// What it may do: `admin` or `read-only` for the whole cluster, `owner`, `developer` or
    /// `viewer` within `team`.
    pub role: TokenRole,
    /// The team of a team role (a team owner's token may leave it out: its own team).
    #[serde(default)]
    pub team: Option<String>,
}

/// `POST /tokens`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub role: TokenRole,
    /// The team of a team role.
    pub team: Option<String>,
    /// The secret, sent as `Authorization: Bearer <token>`; store it now, it cannot be read again.
    pub token: String,
    /// First characters of the token.
    pub prefix: String,
    /// Version (log index) of the write.
    pub version: u64,
}

/// An admin token as listed: everything but the secret and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub role: TokenRole,
    /// The team of a team role.
    pub team: Option<String>,
    /// First characters of the token.
    pub prefix: String,
    /// Version (log index) of the write.
    pub version: u64,
    /// Creation time, Unix milliseconds.
    pub created_at: u64,
}

/// `POST /apis/{name}/subscriptions`: an application asks to call an API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    /// The subscribing application (a consumer's name).
    pub application: String,
    /// One of the API's plans.
    #[serde(default)]
    pub plan: Option<String>,
}

/// `POST /apis/{name}/versions/{version}/transition`: the lifecycle state to move to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// The new state: one of those the current state allows.
    pub to: Lifecycle,
}
