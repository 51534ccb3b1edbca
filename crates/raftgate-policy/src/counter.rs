//! The cluster-wide counter engine: admission decided locally, usage exchanged through Raft in
//! batches.
//!
//! A counter is a key (`{limit}/{scope}:{subject}`), a [`Span`] and amounts. The engine is
//! generic over what an amount is — a request here; tokens or micro-dollars for the AI gateway —
//! and admission is *reserve then settle*: [`Counters::acquire`] reserves an amount before the
//! work, [`Reservation::settle`] corrects it with the actual amount afterwards.
//!
//! # How a node decides
//!
//! Time is cut into buckets ([`Span`]): a fixed window (a quota) is one bucket; a sliding
//! window is 20–30 buckets, and what counts at time `t` is every bucket the window ending at `t`
//! overlaps, the oldest weighed by its overlap. Each node keeps, per counter, one cell of
//! atomics per bucket in reach: what it admitted (`local`) and how much of that it has already
//! reported to the cluster (`reported`). The replicated [`State::usage`](raftgate_model::State)
//! holds the cluster's counts: the current bucket per node, earlier buckets summed. For a
//! request at time `t`:
//!
//! ```text
//! known    = Σ over buckets b in the window ending at t of w(b) × (replicated(b) + unsynced(b))
//!            (w = 1, but the oldest bucket's overlap for a sliding window; unsynced = this
//!            node's local − reported, not yet replicated; the current bucket's unsynced is
//!            `unsynced` below)
//! unsynced = local − reported of the current bucket
//! others   = Σ over the other nodes of their latest report's size (≈ what each holds unsynced)
//! admit a  ⇔  known + unsynced + a ≤ L
//!          ∧  (unsynced = 0  ∨  unsynced + a ≤ ⌊(L − known − others) / n⌋)
//! ```
//!
//! with `n` the number of nodes. The second condition caps what a node admits between two syncs
//! at its share of the budget left, after setting aside what the other nodes probably admitted
//! since their last report (as much as they reported last time), so nodes that cannot see each
//! other's latest admissions still cannot overshoot together. Fixed windows (quotas) use a
//! weight of 0 for the previous window.
//!
//! # Worst-case over-admission
//!
//! Every admission is either replicated (in `known`) or unsynced on one node, and each node's
//! unsynced amount is capped by its share of the budget *as that node last saw it*. If all
//! nodes saw the same `known` and nobody held anything unsynced, the total stays ≤ L. The error
//! comes from what a node cannot see: the others' admissions since their last report, at most
//! one sync interval `T` plus the commit time `c` of traffic. The `others` term sets aside the
//! expected part of it; what it cannot foresee is a change of rate. With a cluster-wide offered
//! rate `r` the overshoot within one window is bounded by
//!
//! ```text
//! over ≤ min( (n − 1)/n · r · (T + c),  (n − 1)/n · L ) + n          (+n: one request per node
//!                                                                     and interval always passes)
//! ```
//!
//! and it is 0 when traffic stops before the budget runs out. The sliding window adds its own
//! error on top: it assumes the oldest bucket's requests were spread evenly over the bucket, so
//! over a window-long span at most `L / buckets` more (3 % for 30 buckets) passes when they were
//! bunched at its end, and nothing when they were not; fixed windows have no such error.
//! Example: 3 nodes, T = 250 ms, c ≈ 5 ms, a limit of 1,000/min hit at 100 req/s: at most ⅔ · 100 · 0.255 + 3 ≈ 20 extra
//! requests (2 %); in practice less, since the shares shrink as the budget does.
//! A node cut off from the majority stops syncing: it admits at most one share more and then
//! refuses; once its counts are older than `stale_intervals` intervals, each limit's
//! `fail_open` decides whether it admits everything (open) or nothing (closed).
//!
//! # Costs
//!
//! The request path does one read-locked hash lookup in one of 64 shards (the write lock is
//! taken only to add a new counter or by the sync task to drop dead ones), a lookup in the
//! replicated map (an `ArcSwap` load, no lock), a pass over at most 31 cells and buckets, and a
//! compare-and-swap. Raft carries one entry
//! per node per sync interval with traffic, whatever the request rate.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use imbl::OrdMap;
#[cfg(test)]
use raftgate_model::policy::apply_usage;
use raftgate_model::policy::{Span, UsageCounter, UsageDelta};
use raftgate_model::{NodeId, RateWindow};

/// Shards of the local counter map: enough that two cores rarely touch the same lock word.
const SHARDS: usize = 64;
/// A cell's `start` while it is being reset for a new window.
const OPENING: u64 = u64::MAX;

/// One shard of this node's counters, by key.
type Shard = RwLock<HashMap<Box<str>, Arc<Slot>>>;

/// The replicated counters, as [`raftgate_model::State::usage`] holds them.
pub type Known = Arc<OrdMap<String, UsageCounter>>;

/// One counter on this node: a cell per bucket in reach, and one to open the next bucket in.
#[derive(Debug)]
struct Slot {
    span: Span,
    cells: Box<[Cell]>,
}

/// One bucket of one counter on this node.
#[derive(Debug, Default)]
struct Cell {
    /// Bucket start (Unix ms); 0 unused; [`OPENING`] while being reset.
    start: AtomicU64,
    /// Amount admitted by this node in the bucket (net of settlements).
    local: AtomicU64,
    /// Part of `local` the cluster has applied.
    reported: AtomicU64,
}

impl Cell {
    fn unsynced(&self) -> u64 {
        self.local
            .load(Ordering::Acquire)
            .saturating_sub(self.reported.load(Ordering::Acquire))
    }
}

impl Slot {
    fn new(span: Span) -> Slot {
        Slot {
            span,
            cells: (0..=span.buckets()).map(|_| Cell::default()).collect(),
        }
    }

    /// The cell of the bucket starting at `start`, if this node has one.
    fn find(&self, start: u64) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.start.load(Ordering::Acquire) == start)
    }

    /// The cell of the bucket starting at `start`, reusing one out of reach: one older than the
    /// oldest bucket in reach (there is always one, as there is a cell more than buckets in
    /// reach), or else one ahead of `start` (left by a clock that went back).
    fn open(&self, start: u64) -> &Cell {
        let oldest = self.span.oldest(start);
        let out_of_reach = |s: u64| s != OPENING && (s < oldest || s > start);
        loop {
            if let Some(cell) = self.find(start) {
                return cell;
            }
            let starts = self.cells.iter().map(|c| c.start.load(Ordering::Acquire));
            let Some((i, old)) = starts
                .enumerate()
                .filter(|(_, s)| out_of_reach(*s))
                .min_by_key(|(_, s)| *s)
            else {
                // Another thread is opening a cell: it takes nanoseconds.
                std::hint::spin_loop();
                continue;
            };
            let reusable = &self.cells[i];
            if reusable
                .start
                .compare_exchange(old, OPENING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                reusable.local.store(0, Ordering::Release);
                reusable.reported.store(0, Ordering::Release);
                reusable.start.store(start, Ordering::Release);
                return reusable;
            }
        }
    }

    /// This node's unsynced amounts by bucket, leaving out the bucket starting at `except`.
    fn unsynced_except(&self, except: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.cells.iter().filter_map(move |c| {
            let start = c.start.load(Ordering::Acquire);
            (start != except && start != 0 && start != OPENING).then(|| (start, c.unsynced()))
        })
    }
}

/// One limit check: what to count, against what.
#[derive(Debug, Clone, Copy)]
pub struct Limit<'a> {
    /// Counter key.
    pub key: &'a str,
    /// Window kind.
    pub window: RateWindow,
    /// Most amount per window, cluster-wide.
    pub limit: u64,
    /// Fixed calendar windows (quotas) instead of a sliding window.
    pub fixed: bool,
    /// Admit when the counts are stale instead of refusing.
    pub fail_open: bool,
}

impl Limit<'_> {
    fn span(&self) -> Span {
        Span {
            window: self.window,
            fixed: self.fixed,
        }
    }
}

/// An amount counted by [`Counters::acquire`]; settle it when the real amount is known.
#[derive(Debug)]
pub struct Reservation {
    slot: Arc<Slot>,
    start: u64,
    amount: u64,
    /// `RateLimit-*` figures for the client.
    pub status: LimitStatus,
}

/// What `RateLimit-Limit`, `-Remaining` and `-Reset` report for one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    /// The limit.
    pub limit: u64,
    /// What is left in the window after this request.
    pub remaining: u64,
    /// Seconds until the current window ends.
    pub reset_s: u64,
}

impl Reservation {
    /// Replaces the reserved amount by `actual` (more or less), e.g. the tokens an LLM answer
    /// really used; a request that should not count settles 0.
    pub fn settle(self, actual: u64) {
        let Some(cell) = self.slot.find(self.start) else {
            return; // The window is gone: nothing left to correct.
        };
        if actual >= self.amount {
            cell.local.fetch_add(actual - self.amount, Ordering::AcqRel);
        } else {
            let back = self.amount - actual;
            let _ = cell
                .local
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                    Some(l.saturating_sub(back))
                });
        }
    }
}

/// Why [`Counters::acquire`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// When to try again, in seconds.
    pub retry_after_s: u64,
    /// `RateLimit-*` figures for the client.
    pub status: LimitStatus,
    /// Whether the refusal is because this node could not sync for too long (fail-closed).
    pub stale: bool,
}

/// One entry of a usage report, kept to confirm it once the cluster applied it.
#[derive(Debug)]
pub struct Pending {
    slot: Arc<Slot>,
    start: u64,
    local: u64,
}

/// The counter engine of one node. See the [module documentation](self).
#[derive(Debug)]
pub struct Counters {
    node: NodeId,
    shards: Box<[Shard]>,
    hasher: RandomState,
    /// The replicated counters and the log index they are as of.
    known: ArcSwap<(u64, Known)>,
    nodes: AtomicU64,
    /// When this node's counts last reached the cluster (or it had none to send), Unix ms.
    synced_at_ms: AtomicU64,
    interval: Duration,
    stale_intervals: u32,
}

impl Counters {
    /// The counters of node `node`, synced every `interval`; counts older than
    /// `stale_intervals` intervals are stale.
    pub fn new(node: NodeId, interval: Duration, stale_intervals: u32) -> Counters {
        Counters {
            node,
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            known: ArcSwap::from_pointee((0, Arc::new(OrdMap::new()))),
            nodes: AtomicU64::new(1),
            synced_at_ms: AtomicU64::new(now_ms()),
            interval,
            stale_intervals,
        }
    }

    /// This node's id, as its reports carry it.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The sync interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Publishes the replicated counters of the state applied up to log index `index`; an
    /// older state than the one published is ignored (the reload task and the sync task both
    /// publish, in either order).
    pub fn set_known(&self, index: u64, known: &Known) {
        self.known.rcu(|current| {
            if current.0 >= index || Arc::ptr_eq(&current.1, known) {
                current.clone()
            } else {
                Arc::new((index, known.clone()))
            }
        });
    }

    /// Sets how many nodes share each budget (the cluster's members).
    pub fn set_nodes(&self, n: u64) {
        self.nodes.store(n.max(1), Ordering::Relaxed);
    }

    fn shard(&self, key: &str) -> &Shard {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        &self.shards[i]
    }

    fn slot(&self, key: &str, span: Span) -> Arc<Slot> {
        let shard = self.shard(key);
        // A poisoned shard only means a panic elsewhere mid-insert; the map itself is intact.
        if let Some(slot) = shard
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .filter(|s| s.span == span)
        {
            return slot.clone();
        }
        let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
        map.entry(key.into())
            .and_modify(|s| {
                if s.span != span {
                    *s = Arc::new(Slot::new(span));
                }
            })
            .or_insert_with(|| Arc::new(Slot::new(span)))
            .clone()
    }

    /// Reserves `amount` of `limit` at `now_ms`, or says why not.
    pub fn acquire(
        &self,
        limit: &Limit<'_>,
        amount: u64,
        now_ms: u64,
    ) -> Result<Reservation, Refusal> {
        let span = limit.span();
        let start = span.bucket_of(now_ms);
        let end = span.next_bucket(start);
        // When all counted now is gone: the end of a fixed window, or when the current bucket
        // leaves a sliding one.
        let reset_at = if span.fixed {
            end
        } else {
            end + (span.buckets() - 1) * (end - start)
        };
        let reset_s = (reset_at - now_ms).div_ceil(1000);
        let slot = self.slot(limit.key, span);
        let cell = slot.open(start);

        let known_state = self.known.load();
        let replicated = known_state.1.get(limit.key).filter(|c| c.span == span);
        let buckets = || {
            replicated
                .into_iter()
                .flat_map(UsageCounter::buckets)
                .chain(slot.unsynced_except(start))
        };
        let known = span.weigh(now_ms, buckets());
        // What the others reported for this bucket or the one before, the size of what each
        // probably admitted since.
        let recent = span.previous_bucket(start);
        let others_recent = replicated.map_or(0, |c| {
            c.last
                .iter()
                .filter(|(n, r)| **n != self.node && r.start_ms >= recent)
                .map(|(_, r)| r.amount)
                .sum::<u64>()
        });
        let status = |used: u64| LimitStatus {
            limit: limit.limit,
            remaining: limit.limit.saturating_sub(used),
            reset_s,
        };

        let stale = now_ms.saturating_sub(self.synced_at_ms.load(Ordering::Relaxed))
            > self.interval.as_millis() as u64 * u64::from(self.stale_intervals);
        if stale {
            if limit.fail_open {
                cell.local.fetch_add(amount, Ordering::AcqRel);
                return Ok(Reservation {
                    slot: slot.clone(),
                    start,
                    amount,
                    status: status(known + cell.unsynced()),
                });
            }
            return Err(Refusal {
                retry_after_s: self.interval_s(),
                status: status(known + cell.unsynced()),
                stale: true,
            });
        }

        let nodes = self.nodes.load(Ordering::Relaxed);
        // What the others probably admitted since their last report is set aside first.
        let share = limit.limit.saturating_sub(known + others_recent) / nodes;
        loop {
            let local = cell.local.load(Ordering::Acquire);
            let unsynced = local.saturating_sub(cell.reported.load(Ordering::Acquire));
            let used = known + unsynced;
            if used + amount > limit.limit {
                let buckets = buckets().chain(std::iter::once((start, unsynced)));
                return Err(Refusal {
                    retry_after_s: retry_after(span, now_ms, used + amount - limit.limit, buckets),
                    status: status(used),
                    stale: false,
                });
            }
            if unsynced > 0 && unsynced + amount > share {
                // This node used its share; the next sync tells it what the others used.
                return Err(Refusal {
                    retry_after_s: self.interval_s(),
                    status: status(used),
                    stale: false,
                });
            }
            if cell
                .local
                .compare_exchange_weak(local, local + amount, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(Reservation {
                    slot: slot.clone(),
                    start,
                    amount,
                    status: status(used + amount),
                });
            }
        }
    }

    fn interval_s(&self) -> u64 {
        (self.interval.as_millis() as u64).div_ceil(1000).max(1)
    }

    /// What this node admitted since its last confirmed report: the deltas to propose, and what
    /// to [`confirm`](Counters::confirm) once they are applied. Also forgets counters whose
    /// windows are over and fully reported.
    pub fn collect(&self, now_ms: u64) -> (Vec<UsageDelta>, Vec<Pending>) {
        let mut deltas = Vec::new();
        let mut pending = Vec::new();
        for shard in self.shards.iter() {
            let mut dead = Vec::new();
            for (key, slot) in shard.read().unwrap_or_else(|p| p.into_inner()).iter() {
                let live_from = slot.span.oldest(slot.span.bucket_of(now_ms));
                let mut alive = false;
                for cell in slot.cells.iter() {
                    let start = cell.start.load(Ordering::Acquire);
                    if start == 0 || start == OPENING {
                        continue;
                    }
                    let local = cell.local.load(Ordering::Acquire);
                    let reported = cell.reported.load(Ordering::Acquire);
                    alive |= start >= live_from;
                    if local == reported || cell.start.load(Ordering::Acquire) != start {
                        continue;
                    }
                    alive = true;
                    deltas.push(UsageDelta {
                        key: key.to_string(),
                        span: slot.span,
                        start_ms: start,
                        amount: local as i64 - reported as i64,
                    });
                    pending.push(Pending {
                        slot: slot.clone(),
                        start,
                        local,
                    });
                }
                if !alive {
                    dead.push(key.clone());
                }
            }
            if !dead.is_empty() {
                let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
                for key in dead {
                    map.remove(&key);
                }
            }
        }
        (deltas, pending)
    }

    /// Records that the cluster applied a report made by [`Counters::collect`] at `now_ms`.
    /// Publish a state that includes the report with [`Counters::set_known`] first: until the
    /// known counters include it, confirming would hide the reported amount from admission.
    pub fn confirm(&self, pending: &[Pending], now_ms: u64) {
        for p in pending {
            if let Some(cell) = p.slot.find(p.start) {
                cell.reported.store(p.local, Ordering::Release);
            }
        }
        self.mark_synced(now_ms);
    }

    /// Records that this node is in sync at `now_ms` (it had nothing to report).
    pub fn mark_synced(&self, now_ms: u64) {
        self.synced_at_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// Seconds until `excess` more would fit at `now_ms`, assuming no more traffic: the time the
/// buckets in reach (amounts by start, in any order, repeats summed) take to slide out of the
/// window far enough. Each bucket leaves linearly over one bucket length — the oldest over the
/// rest of the current bucket, the next over the bucket after, and so on; a fixed window only
/// empties at its end.
fn retry_after(
    span: Span,
    now_ms: u64,
    mut excess: u64,
    amounts: impl Iterator<Item = (u64, u64)>,
) -> u64 {
    let start = span.bucket_of(now_ms);
    let end = span.next_bucket(start);
    let wait_ms = if span.fixed {
        end - now_ms
    } else {
        let oldest = span.oldest(start);
        let length = end - start;
        let mut by_bucket = BTreeMap::new();
        for (s, a) in amounts.filter(|(s, _)| (oldest..=start).contains(s)) {
            *by_bucket.entry(s).or_insert(0u64) += a;
        }
        let mut wait = None;
        for (s, amount) in by_bucket {
            // Bucket `s` leaves the window linearly over [from, from + length): it is the
            // oldest while `from` is the current bucket.
            let from = s + (start - oldest);
            let left = span.weigh(now_ms, [(s, amount)]);
            if left >= excess && amount > 0 {
                // amount × (from + length − t)/length ≤ left − excess
                let gone = from + length - (left - excess) * length / amount;
                wait = Some(gone.saturating_sub(now_ms));
                break;
            }
            excess -= left;
        }
        wait.unwrap_or(end + span.buckets() * length - now_ms)
    };
    wait_ms.div_ceil(1000).max(1)
}

/// Wall-clock time, Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn limit(key: &str, limit: u64) -> Limit<'_> {
        Limit {
            key,
            window: RateWindow::Minute,
            limit,
            fixed: false,
            fail_open: false,
        }
    }

    fn counters(node: NodeId, nodes: u64) -> Counters {
        let c = Counters::new(node, Duration::from_millis(200), 10);
        c.set_nodes(nodes);
        c
    }

    /// Log index of the simulated cluster.
    static INDEX: AtomicU64 = AtomicU64::new(0);

    /// Syncs every node's report into `usage` and publishes it to all.
    fn sync(nodes: &[&Counters], usage: &mut OrdMap<String, UsageCounter>, now: u64) {
        for n in nodes {
            let (deltas, pending) = n.collect(now);
            apply_usage(usage, n.node(), &deltas, now);
            let known = Arc::new(usage.clone());
            INDEX.fetch_add(1, Ordering::Relaxed);
            n.set_known(INDEX.load(Ordering::Relaxed), &known);
            n.confirm(&pending, now);
        }
        let known = Arc::new(usage.clone());
        for n in nodes {
            n.set_known(INDEX.load(Ordering::Relaxed), &known);
        }
    }

    #[test]
    fn a_lone_node_admits_exactly_the_limit() {
        let c = counters(1, 1);
        let t = 100 * MIN;
        let admitted = (0..150)
            .filter(|_| c.acquire(&limit("k", 100), 1, t).is_ok())
            .count();
        assert_eq!(admitted, 100);
        let refused = c.acquire(&limit("k", 100), 1, t).unwrap_err();
        assert_eq!(refused.status.remaining, 0);
        assert_eq!(refused.status.reset_s, 60);
        assert!(!refused.stale);
    }

    #[test]
    fn nodes_split_the_budget_and_stay_within_it() {
        let nodes: Vec<Counters> = (1..=3).map(|id| counters(id, 3)).collect();
        let refs: Vec<&Counters> = nodes.iter().collect();
        let mut usage = OrdMap::new();
        let t0 = 100 * MIN;
        let mut admitted = 0;
        // 10 sync intervals of 200 ms, each node offered 100 requests per interval: far more
        // than the limit of 300.
        for round in 0..10 {
            let now = t0 + round * 200;
            for n in &nodes {
                admitted += (0..100)
                    .filter(|_| n.acquire(&limit("k", 300), 1, now).is_ok())
                    .count();
            }
            sync(&refs, &mut usage, now + 100);
        }
        assert_eq!(admitted, 300, "three nodes together admit the limit");
        assert_eq!(usage["k"].current_total(), 300);
    }

    #[test]
    fn one_busy_node_gets_the_whole_budget_over_a_few_syncs() {
        let nodes: Vec<Counters> = (1..=3).map(|id| counters(id, 3)).collect();
        let refs: Vec<&Counters> = nodes.iter().collect();
        let mut usage = OrdMap::new();
        let t0 = 100 * MIN;
        let mut admitted = 0;
        for round in 0..20 {
            let now = t0 + round * 200;
            admitted += (0..1000)
                .filter(|_| nodes[0].acquire(&limit("k", 900), 1, now).is_ok())
                .count();
            sync(&refs, &mut usage, now + 100);
        }
        // Each interval it may take a third of what is left: 900 · (1 − (2/3)^20) ≈ 899.7.
        assert!((895..=900).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn the_sliding_window_weighs_its_oldest_bucket() {
        let c = counters(1, 1);
        let mut usage = OrdMap::new();
        let t0 = 100 * MIN;
        for _ in 0..100 {
            c.acquire(&limit("k", 100), 1, t0).unwrap();
        }
        sync(&[&c], &mut usage, t0 + 1);
        // One second past the minute, the window still overlaps half of the first 2 s bucket.
        let t1 = t0 + MIN + 1_000;
        c.mark_synced(t1);
        let admitted = (0..100)
            .filter(|_| c.acquire(&limit("k", 100), 1, t1).is_ok())
            .count();
        assert_eq!(admitted, 50);
        let refused = c.acquire(&limit("k", 100), 1, t1).unwrap_err();
        // The next request fits once the oldest bucket's weight drops by one request.
        assert_eq!(refused.retry_after_s, 1, "{refused:?}");
        // 100 more fit only once all 100 counted now are gone: the first bucket's 50 by
        // t0 + 62 s, the 50 just admitted (current bucket, t0 + 60 … 62 s) by t0 + 122 s.
        let far = c.acquire(&limit("k", 100), 100, t1).unwrap_err();
        assert_eq!(far.retry_after_s, 61, "{far:?}");
        // A fixed window (quota) does not look back.
        let quota = Limit {
            fixed: true,
            ..limit("q", 100)
        };
        for _ in 0..100 {
            c.acquire(&quota, 1, t0).unwrap();
        }
        assert_eq!(c.acquire(&quota, 1, t0 + 1).unwrap_err().retry_after_s, 60);
        assert!(c.acquire(&quota, 100, t1).is_ok());
    }

    /// Three times the limit offered steadily for five minutes, from a start that is not on a
    /// window boundary: over every minute-long span the node admits the limit within 4 % (the
    /// last 1/30 is the oldest bucket's estimate), and in the long run nearly all of it.
    #[test]
    fn any_minute_long_span_admits_about_the_limit() {
        const L: u64 = 600;
        let c = counters(1, 1);
        let mut usage = OrdMap::new();
        let t0 = 100 * MIN + 17_345;
        let step = MIN / (3 * L); // 3 L per minute
        let mut admitted_at = Vec::new();
        let mut next_sync = t0;
        let mut t = t0;
        while t < t0 + 5 * MIN {
            if t >= next_sync {
                sync(&[&c], &mut usage, t);
                next_sync += 200;
            }
            if c.acquire(&limit("k", L), 1, t).is_ok() {
                admitted_at.push(t);
            }
            t += step;
        }
        let most = admitted_at
            .iter()
            .enumerate()
            .map(|(i, &from)| admitted_at[i..].partition_point(|&a| a < from + MIN) as u64)
            .max()
            .unwrap();
        assert!(
            most <= L + L * 4 / 100,
            "{most} in a minute for a limit of {L}"
        );
        let per_minute = admitted_at.len() as u64 / 5;
        assert!(
            per_minute >= L * 95 / 100,
            "{per_minute} a minute on average"
        );
    }

    #[test]
    fn settling_returns_or_adds_the_difference() {
        let c = counters(1, 1);
        let t = 100 * MIN;
        let r = c.acquire(&limit("tokens", 1000), 800, t).unwrap();
        assert!(c.acquire(&limit("tokens", 1000), 300, t).is_err());
        r.settle(100);
        let r2 = c.acquire(&limit("tokens", 1000), 300, t).unwrap();
        assert_eq!(r2.status.remaining, 600);
        r2.settle(900);
        assert!(c.acquire(&limit("tokens", 1000), 1, t).is_err());
    }

    #[test]
    fn stale_counts_fail_open_or_closed() {
        let c = counters(1, 1);
        let t = now_ms() + 10 * 200 + 1;
        let closed = c.acquire(&limit("k", 100), 1, t + 1000).unwrap_err();
        assert!(closed.stale);
        let open = Limit {
            fail_open: true,
            ..limit("k", 100)
        };
        assert!(c.acquire(&open, 1, t + 1000).is_ok());
        c.mark_synced(t + 1000);
        assert!(c.acquire(&limit("k", 100), 1, t + 1000).is_ok());
    }
}
