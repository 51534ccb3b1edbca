//! The one shape of the cluster's bookkeeping writers: rate-limit usage, AI usage, traffic
//! analytics and instance expiry.
//!
//! Each node notices things on its own (requests admitted, tokens used, traffic served, lapsed
//! instances) that the cluster must agree on. Proposing each one would put the log on the
//! request path, so a [`Reporter`] gathers them and, once per interval, turns what it gathered
//! into at most one [`Command`]. The application's wiring runs every reporter the same way
//! (a loop that asks, proposes, and tells the reporter how it went), so a reporter holds only
//! its own bookkeeping and never touches Raft itself.

use crate::{Command, State};

/// What a reporter is told when asked for its report.
#[derive(Debug, Clone, Copy)]
pub struct Moment<'a> {
    /// Wall-clock time, Unix milliseconds.
    pub now_ms: u64,
    /// This node's current copy of the replicated state.
    pub state: &'a State,
    /// Whether this node leads the cluster (for decisions only one node should propose).
    pub is_leader: bool,
}

/// A bookkeeping writer: gathers what happened on this node and reports it as one command per
/// interval.
pub trait Reporter: Send {
    /// A name for logs.
    fn name(&self) -> &'static str;

    /// The command reporting what was gathered since the last applied report, or `None` when
    /// there is nothing to report.
    fn collect(&mut self, moment: Moment<'_>) -> Option<Command>;

    /// The command from the last [`Reporter::collect`] was applied; `state` is this node's
    /// state once it was.
    fn applied(&mut self, state: &State);

    /// The command from the last [`Reporter::collect`] was not applied (no leader, a
    /// partition): what it held must go with the next report.
    fn failed(&mut self);
}
