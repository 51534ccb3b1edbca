//! A node-wide budget on the memory that AI answers hold while the gateway reads them.
//!
//! A complete answer is read whole before it is translated (up to 32 MiB each), and a stream
//! holds the event it is parsing; without a bound, a few huge answers at once can take the
//! node's memory and CPU from its Raft work (four 30 MB answers took a node to 277 MB and
//! delayed its heartbeats). Every answer therefore takes a [`Lease`] on the node's
//! [`AnswerMemory`] and grows it as bytes arrive; a growth that would pass the budget fails,
//! and the call is answered 503 with `Retry-After` (it is the node's limit, so no other
//! deployment is tried). A complete answer's lease doubles while it is parsed (the answer is
//! then held as read and as parsed) and is given back once it has been translated; the copy
//! encoded for the client, sent right after, is outside the budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;

use crate::error::ApiError;

/// The budget when the node sets none: room for an answer of the largest size read (32 MiB)
/// while it is parsed.
pub const DEFAULT_ANSWER_MEMORY: usize = 64 * 1024 * 1024;

/// Bytes of AI answers a node may hold at once, and how many it holds.
#[derive(Debug)]
pub struct AnswerMemory {
    limit: usize,
    used: AtomicUsize,
}

impl AnswerMemory {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<AnswerMemory> {
        Arc::new(AnswerMemory {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// An empty lease, grown as the answer arrives.
    pub fn lease(self: &Arc<Self>) -> Lease {
        Lease {
            memory: Arc::clone(self),
            bytes: 0,
        }
    }
}

/// One answer's share of the budget; given back when dropped.
#[derive(Debug)]
pub struct Lease {
    memory: Arc<AnswerMemory>,
    bytes: usize,
}

impl Lease {
    /// Sets the lease to `bytes`, or refuses (keeping what it had) when the budget cannot
    /// hold the growth.
    pub fn resize(&mut self, bytes: usize) -> Result<(), ApiError> {
        if bytes == self.bytes {
            // A stream's frames mostly complete their events: no shared write for them.
            return Ok(());
        }
        if bytes < self.bytes {
            self.memory
                .used
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
            return Ok(());
        }
        let more = bytes - self.bytes;
        let limit = self.memory.limit;
        self.memory
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|total| *total <= limit)
            })
            .map_err(|used| exhausted(used, limit))?;
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.memory.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The error code of a call refused for the node's answer memory.
const CODE: &str = "answer_memory_full";

/// Whether `error` is the node's answer memory refusing a call (the node's limit: no other
/// deployment would do better).
pub fn is_exhausted(error: &ApiError) -> bool {
    error.detail.code.as_deref() == Some(CODE)
}

fn exhausted(used: usize, limit: usize) -> ApiError {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        format!(
            "this node holds too many AI answers in memory ({:.1} MiB of its {:.1} MiB budget); retry in a moment, or ask an administrator to raise --ai-answer-memory-mib",
            mib(used),
            mib(limit)
        ),
    );
    e.retry_after_s = Some(1);
    e.detail.code = Some(CODE.into());
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_share_the_budget_and_give_it_back() {
        let memory = AnswerMemory::new(100);
        let used = || memory.used.load(Ordering::Relaxed);
        let mut a = memory.lease();
        let mut b = memory.lease();
        a.resize(60).unwrap();
        let refused = b.resize(50).unwrap_err();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after_s, Some(1));
        assert!(is_exhausted(&refused));
        assert_eq!(used(), 60, "a refused growth holds nothing");
        b.resize(40).unwrap();
        a.resize(10).unwrap();
        b.resize(90).unwrap();
        assert_eq!(used(), 100);
        drop(a);
        drop(b);
        assert_eq!(used(), 0);
    }
}
