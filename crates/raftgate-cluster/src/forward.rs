//! Requests a follower forwards to the leader on behalf of its clients, so that a client may talk
//! to any node. They travel codec-encoded in the `Forward` RPC.

use std::time::Duration;

use raftgate_model::api::AddMember;
use raftgate_model::command::Applied;
use raftgate_model::{NodeId, NodeInfo, Proposal};
use serde::{Deserialize, Serialize};

/// What the follower asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// Propose this write (the request id makes a retry safe).
    Write(Proposal),
    /// Confirm leadership and return the index a linearizable read must wait for.
    ReadIndex,
    /// Add a node as learner, wait for it to catch up, then make it a voter.
    AddMember(AddMember),
    /// Remove a node from the membership.
    RemoveMember(NodeId),
}

/// Deadline of one forwarded write or read; it is retried (with the same request id) after this.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a new learner may take to catch up before it is promoted.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(60);
/// How long each member may take to answer before a membership change, which goes ahead only
/// if a majority of the voters, before and after it, answers.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl ForwardRequest {
    /// How long one attempt may take before the caller gives up on it (and maybe retries).
    pub fn timeout(&self) -> Duration {
        match self {
            ForwardRequest::AddMember(_) => CATCH_UP_WAIT + FORWARD_TIMEOUT,
            ForwardRequest::RemoveMember(_) => FORWARD_TIMEOUT + PROBE_TIMEOUT,
            _ => FORWARD_TIMEOUT,
        }
    }

    /// Whether an attempt whose outcome is unknown may simply be tried again. Writes carry a
    /// request id and reads change nothing; a membership change does not, and trying it again
    /// after it took effect would answer an error about a change that happened, so its caller
    /// finds out what happened instead (see `Node::change_membership`).
    pub fn retry_safe(&self) -> bool {
        matches!(self, ForwardRequest::Write(_) | ForwardRequest::ReadIndex)
    }
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardResponse {
    /// The write's outcome.
    Written(Applied),
    /// The read index.
    ReadIndex(u64),
    /// The membership change is committed at this log index.
    MembershipChanged(u64),
}

/// Why the leader could not serve it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not (or no longer) the leader; it names the leader it knows.
    NotLeader(Option<(NodeId, NodeInfo)>),
    /// The request was invalid.
    Invalid(String),
    /// Raft stopped on the receiver.
    Stopped(String),
    /// The outcome is unknown — the attempt timed out, its connection broke after sending, or
    /// the leader stepped down with it appended — so it may still take effect.
    TimedOut,
    /// A membership change names a node or an address it may not (`field` says which).
    BadMember {
        /// The field of `POST /cluster/members` at fault (`id`, `cluster_addr`).
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A membership change was refused because the cluster could not commit after it: a
    /// majority of the resulting voters does not answer.
    Unsafe(String),
    /// A membership change was refused because a majority of the current voters does not
    /// answer: the cluster cannot commit anything now.
    NoQuorum(String),
}
