//! The balancing policies, precomputed when a pool is built so that a pick is lock-free and
//! allocation-free.
//!
//! - **Round-robin**: a smooth weighted round-robin schedule (as in nginx) and an atomic
//!   counter. Weights are divided by their greatest common divisor; if their sum still exceeds
//!   [`MAX_SCHEDULE`] they are scaled down proportionally (a target always keeps a slot).
//! - **Least connections**: the endpoint with the fewest requests in flight relative to its
//!   weight (`in_flight / weight`, compared by cross-multiplication), counted by this node. The
//!   scan starts at a rotating offset so that ties are spread instead of all going to the
//!   first endpoint. A pick costs one relaxed load per endpoint.
//! - **Consistent hashing**: a ring of [`POINTS_PER_WEIGHT`] × weight points per endpoint, each
//!   at the 64-bit hash of (target URL, address, point number). A key goes to the owner of the
//!   first point at or after its hash. Since an endpoint's points depend only on itself, adding
//!   or removing an endpoint moves only the keys of its own points; the hash (FNV-1a with a
//!   final mix) is fixed, so all nodes agree on the mapping. Rings above [`MAX_RING`] points
//!   are scaled down proportionally, which gives up that property for such large rings.
//!
//! Every policy skips endpoints that are unavailable (unhealthy or ejected) or already tried by
//! the request: round-robin and hashing move on to the next slot or point, least-connections
//! leaves them out of the scan. A retry does not advance the round-robin counters, so the
//! turns of the other requests are not shifted by it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest round-robin schedule kept per service; bounds memory for very large weights.
pub(crate) const MAX_SCHEDULE: usize = 1024;

/// Ring points per unit of weight.
pub(crate) const POINTS_PER_WEIGHT: u64 = 160;

/// Largest consistent-hashing ring (12 bytes a point).
pub(crate) const MAX_RING: u64 = 1 << 15;

/// Most attempts one request makes (the first plus at most 10 retries, as validation allows).
pub(crate) const MAX_ATTEMPTS: usize = 11;

/// The endpoints a request already tried, so that a retry goes elsewhere. Fixed size: no
/// allocation.
#[derive(Debug, Default)]
pub(crate) struct Tried {
    indices: [u32; MAX_ATTEMPTS],
    len: usize,
}

impl Tried {
    /// Records an attempt on endpoint `index`; ignored once full.
    pub(crate) fn push(&mut self, index: usize) {
        if let Some(slot) = self.indices.get_mut(self.len) {
            *slot = index as u32;
            self.len += 1;
        }
    }

    /// Whether endpoint `index` was tried.
    pub(crate) fn contains(&self, index: usize) -> bool {
        self.indices[..self.len].contains(&(index as u32))
    }

    /// How many attempts were made.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// A policy over a pool's endpoints, which are referred to by index.
#[derive(Debug)]
pub(crate) enum Balancer {
    /// Smooth weighted round-robin.
    RoundRobin(Schedule),
    /// Fewest in flight per unit of weight; the counter rotates the scan's start.
    LeastConnections(AtomicUsize),
    /// A hash ring; requests without a key use the schedule.
    ConsistentHash(Ring, Schedule),
}

/// What a balancer needs to know about one endpoint at pick time.
pub(crate) trait Candidate {
    /// Relative share of traffic, above 0.
    fn weight(&self) -> u32;
    /// Requests in flight now.
    fn in_flight(&self) -> usize;
    /// Whether it may receive traffic (healthy and not ejected).
    fn available(&self) -> bool;
}

impl Balancer {
    /// The index of the endpoint for a request with hash `key` (when the policy hashes and the
    /// request has one) that is available and not in `tried`; `None` when there is none.
    pub(crate) fn pick<C: Candidate>(
        &self,
        endpoints: &[C],
        key: Option<u64>,
        tried: &Tried,
    ) -> Option<usize> {
        let usable = |i: usize| !tried.contains(i) && endpoints.get(i).is_some_and(C::available);
        let first = tried.len() == 0;
        match self {
            Balancer::RoundRobin(schedule) => schedule.pick(usable, first),
            Balancer::ConsistentHash(ring, schedule) => match key {
                Some(key) => ring.pick(key, usable),
                None => schedule.pick(usable, first),
            },
            Balancer::LeastConnections(next) => {
                let n = endpoints.len();
                if n == 0 {
                    return None;
                }
                let start = turn(next, first) % n;
                let mut best: Option<(usize, u64, u64)> = None;
                for i in (start..n).chain(0..start) {
                    let Some(e) = endpoints.get(i).filter(|_| usable(i)) else {
                        continue;
                    };
                    let (load, weight) = (e.in_flight() as u64, u64::from(e.weight().max(1)));
                    // load / weight < best_load / best_weight, without division.
                    if best.is_none_or(|(_, l, w)| load * w < l * weight) {
                        best = Some((i, load, weight));
                    }
                }
                best.map(|(i, _, _)| i)
            }
        }
    }
}

/// A smooth weighted round-robin order over endpoint indices and its position.
#[derive(Debug)]
pub(crate) struct Schedule {
    order: Box<[u32]>,
    next: AtomicUsize,
}

impl Schedule {
    /// The schedule for endpoints with these weights (all above 0).
    pub(crate) fn new(weights: &[u32]) -> Schedule {
        let weights = reduce(weights);
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                current[i] += w;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            order.push(best as u32);
        }
        Schedule {
            order: order.into(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next usable endpoint in schedule order, looking at most one full turn ahead; takes
    /// a turn only when `advance`.
    fn pick(&self, usable: impl Fn(usize) -> bool, advance: bool) -> Option<usize> {
        let n = self.order.len();
        if n == 0 {
            return None;
        }
        let start = turn(&self.next, advance);
        (0..n)
            .filter_map(|k| self.order.get((start.wrapping_add(k)) % n))
            .map(|&i| i as usize)
            .find(|&i| usable(i))
    }
}

/// The counter's value, taking a turn (incrementing it) only when `advance`.
fn turn(counter: &AtomicUsize, advance: bool) -> usize {
    if advance {
        counter.fetch_add(1, Ordering::Relaxed)
    } else {
        counter.load(Ordering::Relaxed)
    }
}

/// Divides weights by their GCD and scales them down if their sum exceeds the schedule cap.
fn reduce(weights: &[u32]) -> Vec<i64> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w))).max(1);
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let sum: u64 = reduced.iter().sum();
    let cap = MAX_SCHEDULE.max(weights.len()) as u64;
    reduced
        .into_iter()
        .map(|w| {
            let w = if sum > cap { (w * cap / sum).max(1) } else { w };
            i64::try_from(w).unwrap_or(1)
        })
        .collect()
}

/// A consistent-hashing ring: point hashes in ascending order and, in parallel, their owners.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    hashes: Box<[u64]>,
    owners: Box<[u32]>,
}

impl Ring {
    /// The ring of endpoints identified by (target URL, address), with their weights.
    pub(crate) fn new<'a>(
        endpoints: impl ExactSizeIterator<Item = (&'a str, SocketAddr, u32)>,
    ) -> Ring {
        let endpoints: Vec<_> = endpoints.collect();
        let wanted: Vec<u64> = endpoints
            .iter()
            .map(|&(_, _, w)| POINTS_PER_WEIGHT * u64::from(w))
            .collect();
        let total: u64 = wanted.iter().sum();
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(total.min(MAX_RING) as usize);
        for (owner, (&(url, addr, _), &want)) in endpoints.iter().zip(&wanted).enumerate() {
            let count = if total > MAX_RING {
                (want * MAX_RING / total).max(1)
            } else {
                want
            };
            let id = format!("{url}|{addr}|");
            for point in 0..count {
                let mut h = Fnv::new();
                h.write(id.as_bytes());
                h.write(&point.to_le_bytes());
                points.push((h.finish(), owner as u32));
            }
        }
        // Equal hashes (practically never) are ordered by owner so every node builds the same ring.
        points.sort_unstable();
        Ring {
            hashes: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.1).collect(),
        }
    }

    /// The owner of the first point at or after `key` (wrapping around) that is usable.
    fn pick(&self, key: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.hashes.len();
        let start = self.hashes.partition_point(|&h| h < key);
        (0..n)
            .filter_map(|k| self.owners.get((start + k) % n))
            .map(|&o| o as usize)
            .find(|&o| usable(o))
    }
}

/// 64-bit FNV-1a with a final avalanche (the splitmix64 finalizer), so that short, similar keys
/// still spread over the whole ring. Fixed forever: nodes must agree on it.
#[derive(Debug)]
pub(crate) struct Fnv(u64);

impl Fnv {
    /// A hasher at the FNV offset basis.
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// Hashes `bytes` in.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The final hash.
    pub(crate) fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The hash of `bytes` alone.
    pub(crate) fn hash(bytes: &[u8]) -> u64 {
        let mut h = Fnv::new();
        h.write(bytes);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct E {
        weight: u32,
        in_flight: usize,
        up: bool,
    }

    impl Candidate for E {
        fn weight(&self) -> u32 {
            self.weight
        }
        fn in_flight(&self) -> usize {
            self.in_flight
        }
        fn available(&self) -> bool {
            self.up
        }
    }

    fn e(weight: u32, in_flight: usize) -> E {
        E {
            weight,
            in_flight,
            up: true,
        }
    }

    #[test]
    fn weighted_schedule() {
        let order = |w: &[u32]| Schedule::new(w).order.to_vec();
        assert_eq!(order(&[3, 1]), [0, 0, 1, 0]);
        assert_eq!(order(&[5, 5]), [0, 1]);
        assert_eq!(order(&[2, 1, 1]).len(), 4);
        let big = order(&[u32::MAX, 1]);
        assert_eq!(big.len(), MAX_SCHEDULE);
        assert_eq!(big.iter().filter(|&&i| i == 1).count(), 1);
    }

    #[test]
    fn round_robin_skips_unavailable_and_tried() {
        let b = Balancer::RoundRobin(Schedule::new(&[1, 1, 1]));
        let mut eps = vec![e(1, 0), e(1, 0), e(1, 0)];
        eps[1].up = false;
        let picks: Vec<_> = (0..6)
            .map(|_| b.pick(&eps, None, &Tried::default()).unwrap())
            .collect();
        assert!(!picks.contains(&1), "{picks:?}");
        let mut tried = Tried::default();
        tried.push(0);
        tried.push(2);
        assert_eq!(b.pick(&eps, None, &tried), None);
        eps[1].up = true;
        assert_eq!(b.pick(&eps, None, &tried), Some(1));
    }

    #[test]
    fn least_connections_is_weighted() {
        let b = Balancer::LeastConnections(AtomicUsize::new(0));
        // 4/2 = 2 per unit beats 3/1.
        assert_eq!(
            b.pick(&[e(1, 3), e(2, 4)], None, &Tried::default()),
            Some(1)
        );
        assert_eq!(
            b.pick(&[e(1, 1), e(2, 4)], None, &Tried::default()),
            Some(0)
        );
        // Ties rotate.
        let eps = [e(1, 0), e(1, 0), e(1, 0)];
        let picks: Vec<_> = (0..3)
            .map(|_| b.pick(&eps, None, &Tried::default()).unwrap())
            .collect();
        let mut sorted = picks.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2], "{picks:?}");
    }

    fn ring(names: &[&str]) -> Ring {
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        Ring::new(names.iter().map(|n| (*n, addr, 1)))
    }

    #[test]
    fn ring_moves_only_the_removed_share() {
        let all = ["http://a", "http://b", "http://c", "http://d"];
        let full = ring(&all);
        let without_c = ring(&["http://a", "http://b", "http://d"]);
        let mut share = HashMap::new();
        let mut moved = 0;
        for k in 0..10_000u32 {
            let key = Fnv::hash(format!("user-{k}").as_bytes());
            let before = all[full.pick(key, |_| true).unwrap()];
            let after =
                ["http://a", "http://b", "http://d"][without_c.pick(key, |_| true).unwrap()];
            *share.entry(before).or_insert(0) += 1;
            if before != "http://c" {
                assert_eq!(before, after, "key {k} moved although its target stayed");
            } else {
                moved += 1;
            }
            // Skipping an unavailable owner is the same as removing it.
            let skipped = all[full.pick(key, |o| o != 2).unwrap()];
            assert_eq!(skipped, after);
        }
        assert_eq!(moved, share["http://c"]);
        for (name, n) in &share {
            assert!((1_800..3_200).contains(n), "{name} got {n} of 10000");
        }
    }

    #[test]
    fn ring_weights_and_cap() {
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let r = Ring::new([("http://a", addr, 3), ("http://b", addr, 1)].into_iter());
        assert_eq!(r.hashes.len() as u64, 4 * POINTS_PER_WEIGHT);
        let heavy = (0..10_000u32)
            .filter(|k| r.pick(Fnv::hash(&k.to_le_bytes()), |_| true) == Some(0))
            .count();
        assert!((6_800..8_200).contains(&heavy), "{heavy}");
        let r = Ring::new([("http://a", addr, u32::MAX), ("http://b", addr, 1)].into_iter());
        assert!(r.hashes.len() as u64 <= MAX_RING + 1);
        assert!(r.owners.contains(&1));
    }
}
