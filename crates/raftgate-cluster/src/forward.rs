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

impl ForwardRequest {
    /// How long one attempt may take before the caller gives up on it (and maybe retries).
    pub fn timeout(&self) -> Duration {
        match self {
            ForwardRequest::AddMember(_) => CATCH_UP_WAIT + FORWARD_TIMEOUT,
            _ => FORWARD_TIMEOUT,
        }
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
}
