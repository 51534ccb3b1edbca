//! Policies: the one place that decides whether a request may pass — authentication (API keys,
//! JWTs, HTTP basic), consumer ACLs, client IP rules, request-size limits, CORS — and the
//! cluster-wide rate limits and quotas.
//!
//! The proxy compiles each route's effective policies ([`RoutePolicies`]) with its router and
//! calls [`RoutePolicies::check`] once the route is matched and before the upstream call. The
//! request path only reads immutable snapshots (credentials in an `ArcSwap`) and per-counter
//! atomics: no global lock, no I/O, no consensus round.
//!
//! Rate-limit counters are cluster-wide without a consensus round per request: each node
//! decides locally ([`counter`]) and a background task ([`UsageReporter`]) proposes one Raft command
//! per sync interval carrying that node's usage since its last report. The [`counter`] module
//! explains the admission rule and documents the worst-case over-admission:
//! `over ≤ min((n − 1)/n·r·(T + c), (n − 1)/n·L) + n` for `n` nodes, a sync interval `T`, a commit
//! time `c`, an offered rate `r` and a limit `L`.

#![warn(missing_docs)]

pub mod access;
pub mod api;
pub mod auth;
pub mod counter;
pub mod route;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use raftgate_model::report::{Moment, Reporter};
use raftgate_model::state::Table;
use raftgate_model::{Command, ConsumerSpec, NodeId, State, StoredKey};
use raftgate_secrets::SecretsKey;
use tracing::debug;

pub use api::{ApiGate, Gates, NO_ROUTE};
pub use auth::{Credentials, hash_password};
pub use counter::{Counters, Limit, LimitStatus, Refusal, Reservation};
pub use route::{Admitted, Answer, RoutePolicies, X_CONSUMER_NAME};

/// Default time between two usage reports of a node.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(250);
/// Sync intervals without a successful report after which a node's counts are stale and each
/// limit's `fail_open` decides.
pub const STALE_INTERVALS: u32 = 20;

/// A node's policy engine: the credentials index and the counters, shared by every request.
#[derive(Debug)]
pub struct Engine {
    counters: Counters,
    credentials: ArcSwap<Credentials>,
    /// The consumers and keys the credentials were built from; only the reload task locks it.
    source: Mutex<Option<(Table<ConsumerSpec>, Table<StoredKey>)>>,
    /// Opens the consumers' sealed HS256 secrets.
    secrets: Option<Arc<SecretsKey>>,
}

impl Engine {
    /// The engine of cluster node `node`, whose usage is reported every `interval` by
    /// [`UsageReporter`].
    pub fn new(node: NodeId, interval: Duration) -> Engine {
        Engine {
            counters: Counters::new(node, interval, STALE_INTERVALS),
            credentials: ArcSwap::from_pointee(Credentials::build(&State::default(), None)),
            source: Mutex::new(None),
            secrets: None,
        }
    }

    /// Opens the consumers' sealed HS256 JWT secrets with `secrets` (the node's secrets key);
    /// without one, HS256 credentials verify nothing.
    pub fn with_secrets(mut self, secrets: Option<Arc<SecretsKey>>) -> Engine {
        self.secrets = secrets;
        self
    }

    /// An engine that counts only locally and never goes stale: for a proxy without a cluster
    /// (tests, benchmarks), where nobody reports usage.
    pub fn standalone() -> Engine {
        Engine {
            counters: Counters::new(0, DEFAULT_SYNC_INTERVAL, u32::MAX),
            ..Engine::new(0, DEFAULT_SYNC_INTERVAL)
        }
    }

    /// Brings the credentials and the known counters up to `state`; cheap when they did not
    /// change (pointer comparisons).
    pub fn refresh(&self, state: &State) {
        self.counters.set_known(state.applied_index, &state.usage);
        let mut source = self.source.lock().unwrap_or_else(|p| p.into_inner());
        let same = source.as_ref().is_some_and(|(c, k)| {
            Arc::ptr_eq(k, &state.keys)
                && (Arc::ptr_eq(c, &state.consumers)
                    || self.credentials.load().unaffected_by(c, &state.consumers))
        });
        if !same {
            self.credentials
                .store(Arc::new(Credentials::build(state, self.secrets.as_deref())));
        }
        *source = Some((state.consumers.clone(), state.keys.clone()));
    }

    /// The current credentials index.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.load_full()
    }

    /// The counters, for rate limits and for other users of the engine (the AI gateway's token
    /// and budget limits).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// Reports this node's rate-limit usage: one [`raftgate_model::Command::RecordUsage`] per sync
/// interval ([`Counters::interval`]), none when nothing was admitted. A report that fails is
/// sent again with the next one; if it did apply after all, that usage counts twice (the error
/// is on the safe side).
pub struct UsageReporter {
    engine: Arc<Engine>,
    /// What the report in flight holds, and when it was collected.
    pending: Option<(Vec<counter::Pending>, u64)>,
}

impl UsageReporter {
    /// The reporter of `engine`'s counters.
    pub fn new(engine: Arc<Engine>) -> UsageReporter {
        UsageReporter {
            engine,
            pending: None,
        }
    }
}

impl Reporter for UsageReporter {
    fn name(&self) -> &'static str {
        "rate-limit usage"
    }

    fn collect(&mut self, moment: Moment<'_>) -> Option<Command> {
        let counters = self.engine.counters();
        let (deltas, pending) = counters.collect(moment.now_ms);
        if deltas.is_empty() {
            counters.mark_synced(moment.now_ms);
            return None;
        }
        debug!(counters = deltas.len(), "reporting usage");
        self.pending = Some((pending, moment.now_ms));
        Some(Command::RecordUsage {
            node: counters.node(),
            deltas,
        })
    }

    fn applied(&mut self, state: &State) {
        let counters = self.engine.counters();
        counters.set_known(state.applied_index, &state.usage);
        if let Some((pending, at)) = self.pending.take() {
            counters.confirm(&pending, at);
        }
    }

    fn failed(&mut self) {
        // Rate limits go on with the last known counts; the deltas are collected again.
        self.pending = None;
    }
}
