//! Traffic analytics kept by the cluster: how many calls, errors, bytes and what latency each
//! route, service, API version and consumer had, per minute, hour and day.
//!
//! Every node adds up its own proxied requests and, once per report interval, proposes them as
//! one [`crate::Command::RecordTraffic`] (never one entry per request). Applying it adds each
//! delta to its minute, hour and day buckets at once, so there is no roll-up job: a coarser
//! bucket is always the sum of the finer ones it covers, and every node's copy is the same.
//! Latency is kept as histogram counts over fixed bounds ([`LATENCY_BOUNDS_NS`]), which add up
//! across nodes and buckets; percentiles come from the merged counts.
//!
//! # Bounds
//!
//! Buckets expire after their retention ([`Resolution::retention_ms`]), dropped when a report
//! is applied. Each bucket holds at most [`Resolution::max_series`] series; the traffic of
//! series past that is added to one [`OTHER`] series of the bucket, so totals stay exact while
//! memory, snapshots and the log stay bounded however many routes and consumers are busy.
//! A node's report is bounded the same way ([`MAX_REPORT_SERIES`]). The bound is a lot of rows,
//! so a row is small: its series is shared with every other bucket of the series, its counters
//! are packed (see [`TrafficTable`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

mod packed;

/// Upper bounds of the latency buckets in nanoseconds: from 100 µs, where a proxy's own work
/// lies, to a minute, past which an upstream is broken rather than slow. The node's Prometheus
/// histograms use the same bounds, so the two agree.
pub const LATENCY_BOUNDS_NS: [u64; 18] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// Latency buckets: one per bound and one above the last.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// The bucket a duration of `ns` nanoseconds falls in (bounds are inclusive, as Prometheus's
/// `le`).
pub fn latency_bucket(ns: u64) -> usize {
    LATENCY_BOUNDS_NS.partition_point(|&bound| bound < ns)
}

/// The series name that collects the traffic of series past a bucket's bound. `~` is not
/// allowed in resource names, so it cannot clash with a route.
pub const OTHER: &str = "~other";

/// Most series one node reports at once; the rest go to [`OTHER`].
pub const MAX_REPORT_SERIES: usize = 2_000;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// How far ahead of the proposal's time a report's minute may be: a node whose clock runs
/// ahead by more would otherwise create buckets that outlive their retention.
const MAX_CLOCK_AHEAD_MS: u64 = 5 * MINUTE_MS;

/// The length of a bucket.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// One minute, kept 24 hours.
    Minute,
    /// One hour, kept 30 days.
    Hour,
    /// One UTC day, kept 400 days.
    Day,
}

impl Resolution {
    /// Every resolution, finest first.
    pub const ALL: [Resolution; 3] = [Resolution::Minute, Resolution::Hour, Resolution::Day];

    /// The bucket length in milliseconds.
    pub fn millis(self) -> u64 {
        match self {
            Resolution::Minute => MINUTE_MS,
            Resolution::Hour => HOUR_MS,
            Resolution::Day => DAY_MS,
        }
    }

    /// How long a bucket is kept after it ends.
    pub fn retention_ms(self) -> u64 {
        match self {
            Resolution::Minute => DAY_MS,
            Resolution::Hour => 30 * DAY_MS,
            Resolution::Day => 400 * DAY_MS,
        }
    }

    /// Most series one bucket holds (plus [`OTHER`]). With every bucket full the table holds
    /// 1,440 × 101 + 720 × 251 + 400 × 501 ≈ 527,000 rows: about 17 MiB of memory and a 10 MiB
    /// snapshot with the series of `raftgate-bench analytics-table`.
    pub fn max_series(self) -> u32 {
        match self {
            Resolution::Minute => 100,
            Resolution::Hour => 250,
            Resolution::Day => 500,
        }
    }

    /// The start of the bucket holding `ms`.
    pub fn start(self, ms: u64) -> u64 {
        ms - ms % self.millis()
    }
}

/// What one series is about. Empty strings stand for "none" (a route without an API, a
/// request without an authenticated consumer, a request that matched no route).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
pub struct Series {
    /// The route.
    pub route: String,
    /// The service it sends to (empty for the AI gateway).
    pub service: String,
    /// The API the route belongs to.
    pub api: String,
    /// The API version.
    pub version: String,
    /// The consumer (application) that called.
    pub consumer: String,
}

impl Series {
    /// The series that collects what did not fit.
    pub fn other() -> Series {
        Series {
            route: OTHER.into(),
            ..Series::default()
        }
    }
}

/// What a series did in a bucket; adds up across nodes and buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Requests answered.
    pub requests: u64,
    /// Requests by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 5],
    /// Requests by latency bucket (time to the response head), over [`LATENCY_BOUNDS_NS`].
    pub latency: [u64; LATENCY_BUCKETS],
    /// Sum of the latencies, in microseconds.
    pub latency_sum_us: u64,
    /// Request body bytes (as declared by the client).
    pub bytes_in: u64,
    /// Response body bytes (as declared by the answer).
    pub bytes_out: u64,
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic {
            requests: 0,
            status: [0; 5],
            latency: [0; LATENCY_BUCKETS],
            latency_sum_us: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

impl Traffic {
    /// Adds `other` to this.
    pub fn add(&mut self, other: &Traffic) {
        // Saturating: a report is a node's claim, and a counter that cannot grow further is
        // better than an apply that panics on one node and not another.
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.requests, other.requests);
        for (a, b) in self.status.iter_mut().zip(other.status) {
            add(a, b);
        }
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            add(a, b);
        }
        add(&mut self.latency_sum_us, other.latency_sum_us);
        add(&mut self.bytes_in, other.bytes_in);
        add(&mut self.bytes_out, other.bytes_out);
    }

    /// The latency at quantile `q` (0..=1) in milliseconds, interpolated within its bucket as
    /// Prometheus's `histogram_quantile` does; `None` without requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let count = self.latency.iter().fold(0u64, |a, &b| a.saturating_add(b));
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, &n) in self.latency.iter().enumerate() {
            if n > 0 && below.saturating_add(n) as f64 >= rank {
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_NS[i - 1] };
                // Above the last bound nothing is known but that bound.
                let Some(&upper) = LATENCY_BOUNDS_NS.get(i) else {
                    return Some(lower as f64 / 1e6);
                };
                let within = (rank - below as f64) / n as f64;
                return Some((lower as f64 + (upper - lower) as f64 * within) / 1e6);
            }
            below = below.saturating_add(n);
        }
        Some(LATENCY_BOUNDS_NS[LATENCY_BOUNDS_NS.len() - 1] as f64 / 1e6)
    }

    /// The summary shown to users.
    pub fn summary(&self) -> Summary {
        let errors = self.status[3].saturating_add(self.status[4]);
        Summary {
            requests: self.requests,
            errors,
            server_errors: self.status[4],
            error_rate: if self.requests == 0 {
                0.0
            } else {
                errors as f64 / self.requests as f64
            },
            status: StatusClasses {
                informational: self.status[0],
                success: self.status[1],
                redirect: self.status[2],
                client_error: self.status[3],
                server_error: self.status[4],
            },
            latency_ms: Latency {
                p50: self.quantile_ms(0.5),
                p95: self.quantile_ms(0.95),
                p99: self.quantile_ms(0.99),
                mean: (self.requests > 0)
                    .then(|| self.latency_sum_us as f64 / 1e3 / self.requests as f64),
            },
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
        }
    }
}

/// One node's traffic of one series in one minute since its last report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficDelta {
    /// Start of the minute, Unix milliseconds.
    pub minute_ms: u64,
    /// What the traffic was about.
    pub series: Series,
    /// The traffic.
    pub traffic: Traffic,
}

/// One bucket's rows, in series order: the order the queries read them in, and the one that
/// finds a series by binary search when a report is added.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bucket {
    /// Interned (see [`TrafficTable`]).
    series: Box<[Arc<Series>]>,
    /// What each of `series` did, in the same order, [`packed`] one after another: a
    /// [`Traffic`] is 224 bytes, mostly zeros.
    counters: Box<[u8]>,
}

/// A bucket opened by [`TrafficTable::apply`]: its rows, to add to, in series order.
type Rows = Vec<(Arc<Series>, Traffic)>;

impl Bucket {
    fn new(rows: Rows) -> Bucket {
        let mut counters = Vec::new();
        let series = rows
            .into_iter()
            .map(|(series, traffic)| {
                packed::pack(&traffic, &mut counters);
                series
            })
            .collect();
        Bucket {
            series,
            counters: counters.into(),
        }
    }

    fn rows(&self) -> impl Iterator<Item = (&Arc<Series>, packed::Row<'_>)> {
        let mut counters = &self.counters[..];
        self.series
            .iter()
            .map_while(move |series| Some((series, packed::split(&mut counters)?)))
    }
}

/// The replicated analytics: every bucket's rows.
///
/// The same routes and consumers recur in every minute, hour and day, so a series is stored
/// once, in `interned`, and a row holds a pointer to it and its counters, packed; owned names
/// and unpacked counters in every row took 27 times the memory. With each series is the number
/// of buckets holding it, so that it goes when the last of them expires: counted here rather
/// than read from the `Arc`, whose count the clones of the state a node happens to hold
/// (snapshots, readers) raise differently on every node. Buckets are behind an `Arc` so that
/// the copy-on-write of a map leaf, after the state was cloned, copies pointers rather than
/// rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficTable {
    buckets: OrdMap<(Resolution, u64), Arc<Bucket>>,
    interned: OrdMap<Arc<Series>, u32>,
}

impl TrafficTable {
    /// Rows held, all resolutions together.
    pub fn len(&self) -> usize {
        self.buckets.values().map(|b| b.series.len()).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Series held by the bucket of `resolution` starting at `start_ms`.
    pub fn series_in(&self, resolution: Resolution, start_ms: u64) -> u32 {
        self.buckets
            .get(&(resolution, start_ms))
            .map_or(0, |b| u32::try_from(b.series.len()).unwrap_or(u32::MAX))
    }

    /// Adds a node's report to its minute, hour and day buckets, and drops the buckets past
    /// their retention at `now_ms` (the proposal's time). Deterministic: the same on every node.
    pub fn apply(&mut self, deltas: &[TrafficDelta], now_ms: u64) {
        // A report's deltas mostly share a minute: each bucket is opened once and stored again
        // once, however many of them it gets.
        let mut open: BTreeMap<(Resolution, u64), Rows> = BTreeMap::new();
        for d in deltas {
            if d.minute_ms > now_ms.saturating_add(MAX_CLOCK_AHEAD_MS) {
                continue;
            }
            for resolution in Resolution::ALL {
                let at = (resolution, resolution.start(d.minute_ms));
                let rows = open.entry(at).or_insert_with(|| {
                    self.buckets.get(&at).map_or_else(Vec::new, |b| {
                        b.rows()
                            .map(|(s, row)| (Arc::clone(s), row.traffic()))
                            .collect()
                    })
                });
                self.add(resolution, rows, d);
            }
        }
        for (at, rows) in open {
            self.buckets.insert(at, Arc::new(Bucket::new(rows)));
        }
        self.expire(now_ms);
    }

    fn add(&mut self, resolution: Resolution, rows: &mut Rows, d: &TrafficDelta) {
        let find =
            |rows: &Rows, series: &Series| rows.binary_search_by(|(s, _)| s.as_ref().cmp(series));
        let mut found = find(rows, &d.series);
        let other;
        let series = if found.is_err() && rows.len() >= resolution.max_series() as usize {
            other = Series::other();
            found = find(rows, &other);
            &other
        } else {
            &d.series
        };
        let i = found.unwrap_or_else(|i| {
            rows.insert(i, (self.intern(series), Traffic::default()));
            i
        });
        rows[i].1.add(&d.traffic);
    }

    /// The shared copy of `series`, for one bucket more.
    fn intern(&mut self, series: &Series) -> Arc<Series> {
        if let Some((shared, held)) = self.interned.get_key_value_mut(series) {
            *held += 1;
            return Arc::clone(shared);
        }
        let shared = Arc::new(series.clone());
        self.interned.insert(Arc::clone(&shared), 1);
        shared
    }

    /// Forgets one bucket holding `series`.
    fn release(&mut self, series: &Series) {
        match self.interned.get_mut(series) {
            Some(held) if *held > 1 => *held -= 1,
            Some(_) => {
                self.interned.remove(series);
            }
            None => {}
        }
    }

    fn expire(&mut self, now_ms: u64) {
        let expired: Vec<(Resolution, u64)> = Resolution::ALL
            .into_iter()
            .flat_map(|r| {
                self.buckets
                    .range((r, 0)..=(r, u64::MAX))
                    .map(|(at, _)| *at)
                    .take_while(move |(r, start)| {
                        start
                            .saturating_add(r.millis())
                            .saturating_add(r.retention_ms())
                            <= now_ms
                    })
            })
            .collect();
        for at in expired {
            if let Some(bucket) = self.buckets.remove(&at) {
                for series in bucket.series.iter() {
                    self.release(series);
                }
            }
        }
    }

    /// The rows of `resolution` from `from_ms` (inclusive) to `to_ms` (exclusive), with the
    /// start of their bucket.
    fn window(
        &self,
        resolution: Resolution,
        from_ms: u64,
        to_ms: u64,
    ) -> impl Iterator<Item = (u64, &Series, packed::Row<'_>)> {
        self.buckets
            .range((resolution, resolution.start(from_ms))..)
            .take_while(move |((r, start), _)| *r == resolution && *start < to_ms)
            .flat_map(|(&(_, start_ms), bucket)| {
                bucket
                    .rows()
                    .map(move |(series, row)| (start_ms, series.as_ref(), row))
            })
    }

    /// `GET /analytics`: the matching series added up per step.
    pub fn report(&self, query: &AnalyticsQuery, now_ms: u64) -> AnalyticsReport {
        let (from_ms, to_ms, step) = query.window(now_ms);
        let mut points: Vec<AnalyticsPoint> = Vec::new();
        let mut total = Traffic::default();
        let mut current: Option<(u64, Traffic)> = None;
        for (start_ms, series, row) in self.window(step, from_ms, to_ms) {
            if !query.selects(series) {
                continue;
            }
            let traffic = row.traffic();
            total.add(&traffic);
            match &mut current {
                Some((start, sum)) if *start == start_ms => sum.add(&traffic),
                _ => {
                    if let Some((start_ms, sum)) = current.take() {
                        points.push(AnalyticsPoint::new(start_ms, &sum));
                    }
                    current = Some((start_ms, traffic));
                }
            }
        }
        if let Some((start_ms, sum)) = current {
            points.push(AnalyticsPoint::new(start_ms, &sum));
        }
        AnalyticsReport {
            from_ms,
            to_ms,
            step,
            points,
            total: total.summary(),
        }
    }

    /// `GET /analytics/top`: the groups with the most of `metric`, largest first.
    pub fn top(&self, query: &TopQuery, filter: &AnalyticsQuery, now_ms: u64) -> TopReport {
        let (from_ms, to_ms, step) = filter.window(now_ms);
        let mut groups: std::collections::BTreeMap<String, Traffic> = Default::default();
        for (_, s, row) in self.window(step, from_ms, to_ms) {
            if !filter.selects(s) {
                continue;
            }
            let name = match query.by {
                TopBy::Consumer => s.consumer.clone(),
                TopBy::Route => s.route.clone(),
                TopBy::Service => s.service.clone(),
                TopBy::Api if s.api.is_empty() => continue,
                TopBy::Api => format!("{}/{}", s.api, s.version),
            };
            groups.entry(name).or_default().add(&row.traffic());
        }
        let mut rows: Vec<TopRow> = groups
            .into_iter()
            .map(|(name, traffic)| {
                let summary = traffic.summary();
                let value = match query.metric {
                    TopMetric::Requests => summary.requests as f64,
                    TopMetric::Errors => summary.errors as f64,
                    TopMetric::Latency => summary.latency_ms.p99.unwrap_or(0.0),
                };
                TopRow {
                    name,
                    value,
                    summary,
                }
            })
            .collect();
        rows.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.name.cmp(&b.name)));
        rows.truncate(query.limit.unwrap_or(10).clamp(1, 1000));
        TopReport {
            from_ms,
            to_ms,
            step,
            by: query.by,
            metric: query.metric,
            rows,
        }
    }
}

/// How a [`TrafficTable`] is written: each series once, sorted, and a bucket's rows as indexes
/// into that list, so that a snapshot does not name a series in every row. Index order is series
/// order, so a bucket's indexes are increasing; loading interns the series again.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    series: Vec<Cow<'a, Series>>,
    buckets: Vec<WireBucket<'a>>,
}

/// One bucket of a [`Wire`]: its series' indexes, and their counters as the bucket holds them.
#[derive(Serialize, Deserialize)]
struct WireBucket<'a> {
    resolution: Resolution,
    start_ms: u64,
    series: Vec<u32>,
    counters: Cow<'a, [u8]>,
}

/// Why a written [`TrafficTable`] is refused (or, for [`TableError::NotInterned`], cannot be
/// written).
#[derive(Debug, thiserror::Error)]
enum TableError {
    /// Series, buckets or a bucket's rows out of order or repeated.
    #[error("traffic analytics: {0} not in increasing order")]
    Unordered(&'static str),
    /// A bucket without rows.
    #[error("traffic analytics: an empty bucket")]
    EmptyBucket,
    /// A row naming a series past the list.
    #[error("traffic analytics: series {0} named, {1} listed")]
    SeriesIndex(u32, usize),
    /// A listed series no bucket holds.
    #[error("traffic analytics: series {0} is in no bucket")]
    SeriesUnused(usize),
    /// A row's counters that do not unpack.
    #[error("traffic analytics: {0}")]
    Counters(#[from] packed::PackError),
    /// Counters past a bucket's last row.
    #[error("traffic analytics: {0} bytes after a bucket's last row")]
    Trailing(usize),
    /// A bucket's series missing from the intern map (a bug).
    #[error("traffic analytics: a bucket's series is not interned")]
    NotInterned,
}

impl Serialize for TrafficTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let series: Vec<Cow<'_, Series>> = self
            .interned
            .keys()
            .map(|s| Cow::Borrowed(s.as_ref()))
            .collect();
        let index = |s: &Arc<Series>| {
            series
                .binary_search_by(|listed| listed.as_ref().cmp(s))
                .ok()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or(TableError::NotInterned)
        };
        let buckets = self
            .buckets
            .iter()
            .map(|(&(resolution, start_ms), bucket)| {
                Ok(WireBucket {
                    resolution,
                    start_ms,
                    series: bucket.series.iter().map(index).collect::<Result<_, _>>()?,
                    counters: Cow::Borrowed(&bucket.counters),
                })
            })
            .collect::<Result<Vec<_>, TableError>>()
            .map_err(serde::ser::Error::custom)?;
        Wire { series, buckets }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TrafficTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        TrafficTable::from_wire(Wire::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl TrafficTable {
    /// The table `wire` was written from. Refuses anything [`Serialize`] would not have
    /// written, so that equal tables stay equal after a snapshot is installed.
    fn from_wire(wire: Wire<'_>) -> Result<TrafficTable, TableError> {
        let series: Vec<Arc<Series>> = wire
            .series
            .into_iter()
            .map(|s| Arc::new(s.into_owned()))
            .collect();
        if !series.windows(2).all(|w| w[0] < w[1]) {
            return Err(TableError::Unordered("series"));
        }
        let mut held = vec![0u32; series.len()];
        let mut buckets = OrdMap::new();
        let mut last = None;
        for b in wire.buckets {
            let at = (b.resolution, b.start_ms);
            if last.is_some_and(|last| last >= at) {
                return Err(TableError::Unordered("buckets"));
            }
            last = Some(at);
            if b.series.is_empty() {
                return Err(TableError::EmptyBucket);
            }
            if !b.series.windows(2).all(|w| w[0] < w[1]) {
                return Err(TableError::Unordered("a bucket's series"));
            }
            let mut counters = &b.counters[..];
            for _ in &b.series {
                packed::unpack(&mut counters)?;
            }
            if !counters.is_empty() {
                return Err(TableError::Trailing(counters.len()));
            }
            let rows = b
                .series
                .iter()
                .map(|&i| {
                    let shared = series
                        .get(i as usize)
                        .ok_or(TableError::SeriesIndex(i, series.len()))?;
                    held[i as usize] += 1;
                    Ok(Arc::clone(shared))
                })
                .collect::<Result<_, TableError>>()?;
            let bucket = Bucket {
                series: rows,
                counters: b.counters.into_owned().into(),
            };
            buckets.insert(at, Arc::new(bucket));
        }
        let interned = series
            .into_iter()
            .zip(held)
            .enumerate()
            .map(|(i, (s, held))| match held {
                0 => Err(TableError::SeriesUnused(i)),
                _ => Ok((s, held)),
            })
            .collect::<Result<_, _>>()?;
        Ok(TrafficTable { buckets, interned })
    }
}

/// Which traffic `GET /analytics` reports. Without `from`, the last hour; without `to`, until
/// now; without `step`, the finest resolution still kept for all of `from`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyticsQuery {
    /// Only this API.
    pub api: Option<String>,
    /// Only this API version (with `api`).
    pub version: Option<String>,
    /// Only this route.
    pub route: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Only this consumer (application).
    pub consumer: Option<String>,
    /// From this Unix millisecond (inclusive).
    pub from: Option<u64>,
    /// To this Unix millisecond (exclusive).
    pub to: Option<u64>,
    /// Bucket length: minute (kept 24 h), hour (30 days) or day (400 days).
    pub step: Option<Resolution>,
}

impl AnalyticsQuery {
    fn selects(&self, s: &Series) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.api, &s.api)
            && is(&self.version, &s.version)
            && is(&self.route, &s.route)
            && is(&self.service, &s.service)
            && is(&self.consumer, &s.consumer)
    }

    /// From, to and step, with the defaults filled in.
    fn window(&self, now_ms: u64) -> (u64, u64, Resolution) {
        let to_ms = self.to.unwrap_or(now_ms.saturating_add(1));
        let from_ms = self.from.unwrap_or(to_ms.saturating_sub(HOUR_MS));
        let step = self.step.unwrap_or_else(|| {
            Resolution::ALL
                .into_iter()
                .find(|r| {
                    from_ms
                        .saturating_add(r.millis())
                        .saturating_add(r.retention_ms())
                        > now_ms
                })
                .unwrap_or(Resolution::Day)
        });
        (from_ms, to_ms, step)
    }
}

/// How many requests of each status class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusClasses {
    /// 1xx.
    #[serde(rename = "1xx")]
    pub informational: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub redirect: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

/// Latency percentiles from the merged histograms, in milliseconds (`null` without requests).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
}

/// Traffic of a step or a whole window, as users read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    /// Requests answered.
    pub requests: u64,
    /// 4xx and 5xx answers.
    pub errors: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Requests by status class.
    pub status: StatusClasses,
    /// Time to the response head.
    pub latency_ms: Latency,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
}

/// One step of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalyticsPoint {
    /// Start of the step, Unix milliseconds.
    pub start_ms: u64,
    /// What the matching series did in it.
    #[serde(flatten)]
    pub summary: Summary,
}

impl AnalyticsPoint {
    fn new(start_ms: u64, traffic: &Traffic) -> AnalyticsPoint {
        AnalyticsPoint {
            start_ms,
            summary: traffic.summary(),
        }
    }
}

/// The answer of `GET /analytics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnalyticsReport {
    /// Start of the window, Unix milliseconds.
    pub from_ms: u64,
    /// End of the window (exclusive), Unix milliseconds.
    pub to_ms: u64,
    /// Bucket length.
    pub step: Resolution,
    /// Steps with traffic, oldest first.
    pub points: Vec<AnalyticsPoint>,
    /// The whole window.
    pub total: Summary,
}

/// What `GET /analytics/top` groups by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TopBy {
    /// Consumers (applications); `""` is unauthenticated traffic.
    #[default]
    Consumer,
    /// Routes.
    Route,
    /// Services.
    Service,
    /// API versions, as `api/version`.
    Api,
}

/// What `GET /analytics/top` ranks by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TopMetric {
    /// Requests.
    #[default]
    Requests,
    /// 4xx and 5xx answers.
    Errors,
    /// 99th percentile latency.
    Latency,
}

/// How `GET /analytics/top` ranks; which traffic counts is an [`AnalyticsQuery`] read from the
/// same query string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopQuery {
    /// Group by.
    #[serde(default)]
    pub by: TopBy,
    /// Rank by.
    #[serde(default)]
    pub metric: TopMetric,
    /// Most rows (default 10, at most 1000).
    pub limit: Option<usize>,
}

/// One group of `GET /analytics/top`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopRow {
    /// The consumer, route, service or `api/version`.
    pub name: String,
    /// The ranked metric's value.
    pub value: f64,
    /// Everything about the group.
    pub summary: Summary,
}

/// The answer of `GET /analytics/top`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopReport {
    /// Start of the window, Unix milliseconds.
    pub from_ms: u64,
    /// End of the window (exclusive), Unix milliseconds.
    pub to_ms: u64,
    /// The buckets read.
    pub step: Resolution,
    /// Grouped by.
    pub by: TopBy,
    /// Ranked by.
    pub metric: TopMetric,
    /// Largest first.
    pub rows: Vec<TopRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(requests: u64, status: u16, latency_ms: u64) -> Traffic {
        let mut t = Traffic {
            requests,
            latency_sum_us: requests * latency_ms * 1000,
            bytes_in: requests * 10,
            bytes_out: requests * 100,
            ..Traffic::default()
        };
        t.status[usize::from(status / 100 - 1)] = requests;
        t.latency[latency_bucket(latency_ms * 1_000_000)] = requests;
        t
    }

    fn delta(minute_ms: u64, route: &str, consumer: &str, t: Traffic) -> TrafficDelta {
        TrafficDelta {
            minute_ms,
            series: Series {
                route: route.into(),
                service: "svc".into(),
                api: "orders".into(),
                version: "v2".into(),
                consumer: consumer.into(),
            },
            traffic: t,
        }
    }

    /// A day boundary, so that minute, hour and day buckets all change at the same time.
    const T0: u64 = 20_000 * DAY_MS;

    #[test]
    fn rollups_cross_minute_hour_and_day_boundaries() {
        let mut table = TrafficTable::default();
        // Last minute of a day, then the first of the next.
        let before = T0 - MINUTE_MS;
        table.apply(&[delta(before, "r", "app", traffic(3, 200, 2))], before);
        table.apply(
            &[
                delta(T0, "r", "app", traffic(4, 500, 30)),
                delta(T0, "r", "other-app", traffic(1, 404, 2)),
            ],
            T0 + 1000,
        );
        let q = |step, from, to| AnalyticsQuery {
            step: Some(step),
            from: Some(from),
            to: Some(to),
            ..AnalyticsQuery::default()
        };
        let now = T0 + 2000;
        let minutes = table.report(&q(Resolution::Minute, before, T0 + MINUTE_MS), now);
        assert_eq!(minutes.points.len(), 2);
        assert_eq!(minutes.points[0].start_ms, before);
        assert_eq!(minutes.points[0].summary.requests, 3);
        assert_eq!(minutes.points[1].summary.requests, 5);
        assert_eq!(minutes.points[1].summary.errors, 5);
        assert_eq!(minutes.points[1].summary.server_errors, 4);
        let hours = table.report(&q(Resolution::Hour, T0 - DAY_MS, T0 + DAY_MS), now);
        assert_eq!(
            hours
                .points
                .iter()
                .map(|p| (p.start_ms, p.summary.requests))
                .collect::<Vec<_>>(),
            vec![(T0 - HOUR_MS, 3), (T0, 5)]
        );
        let days = table.report(&q(Resolution::Day, T0 - DAY_MS, T0 + DAY_MS), now);
        assert_eq!(
            days.points
                .iter()
                .map(|p| (p.start_ms, p.summary.requests))
                .collect::<Vec<_>>(),
            vec![(T0 - DAY_MS, 3), (T0, 5)]
        );
        // Coarser buckets are the sum of the finer ones.
        assert_eq!(hours.total, minutes.total);
        assert_eq!(days.total, minutes.total);
        assert_eq!(days.total.bytes_out, 800);
        let only = AnalyticsQuery {
            consumer: Some("other-app".into()),
            ..q(Resolution::Hour, T0 - DAY_MS, T0 + DAY_MS)
        };
        assert_eq!(table.report(&only, now).total.requests, 1);
    }

    #[test]
    fn buckets_expire_after_their_retention() {
        let mut table = TrafficTable::default();
        table.apply(&[delta(T0, "r", "", traffic(1, 200, 1))], T0);
        assert_eq!(table.len(), 3);
        table.apply(&[], T0 + DAY_MS + MINUTE_MS);
        assert_eq!(table.len(), 2, "the minute bucket is gone after a day");
        table.apply(&[], T0 + 31 * DAY_MS);
        assert_eq!(table.len(), 1, "the hour bucket is gone after 30 days");
        table.apply(&[], T0 + 402 * DAY_MS);
        assert!(table.is_empty());
        // A report from a clock far ahead is not kept.
        table.apply(&[delta(T0 + DAY_MS, "r", "", traffic(1, 200, 1))], T0);
        assert!(table.is_empty());
    }

    #[test]
    fn series_past_the_bound_go_to_other_and_totals_stay_exact() {
        let mut table = TrafficTable::default();
        let deltas: Vec<TrafficDelta> = (0..1000)
            .map(|i| delta(T0, &format!("route-{i}"), "", traffic(2, 200, 1)))
            .collect();
        table.apply(&deltas, T0);
        table.apply(&deltas, T0);
        for r in Resolution::ALL {
            assert_eq!(table.series_in(r, r.start(T0)), r.max_series() + 1);
        }
        let bound: u32 = Resolution::ALL.iter().map(|r| r.max_series() + 1).sum();
        assert_eq!(table.len(), bound as usize);
        let q = AnalyticsQuery {
            from: Some(T0),
            step: Some(Resolution::Minute),
            ..AnalyticsQuery::default()
        };
        assert_eq!(table.report(&q, T0).total.requests, 4000);
        let top = table.top(
            &TopQuery {
                by: TopBy::Route,
                limit: Some(1),
                ..TopQuery::default()
            },
            &q,
            T0,
        );
        assert_eq!(top.rows[0].name, OTHER);
        assert_eq!(top.rows[0].value, 2.0 * 2.0 * 900.0);
    }

    #[test]
    fn percentiles_fall_in_the_right_bucket() {
        let mut t = traffic(90, 200, 2);
        t.add(&traffic(10, 200, 40));
        let s = t.summary();
        let p50 = s.latency_ms.p50.unwrap();
        assert!((1.0..=2.5).contains(&p50), "{p50}");
        let p99 = s.latency_ms.p99.unwrap();
        assert!((25.0..=50.0).contains(&p99), "{p99}");
        assert_eq!(Traffic::default().summary().latency_ms.p99, None);
        let mut slow = Traffic::default();
        slow.latency[LATENCY_BUCKETS - 1] = 1;
        assert_eq!(slow.quantile_ms(0.5), Some(60_000.0));
    }

    #[test]
    fn top_ranks_by_the_metric() {
        let mut table = TrafficTable::default();
        table.apply(
            &[
                delta(T0, "a", "alice", traffic(5, 200, 1)),
                delta(T0, "b", "bob", traffic(3, 500, 100)),
                delta(T0, "a", "bob", traffic(1, 200, 1)),
            ],
            T0,
        );
        let top = |by, metric| {
            table
                .top(
                    &TopQuery {
                        by,
                        metric,
                        limit: None,
                    },
                    &AnalyticsQuery {
                        from: Some(T0),
                        ..AnalyticsQuery::default()
                    },
                    T0 + 1,
                )
                .rows
                .into_iter()
                .map(|r| (r.name, r.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            top(TopBy::Consumer, TopMetric::Requests),
            vec![("alice".into(), 5.0), ("bob".into(), 4.0)]
        );
        assert_eq!(top(TopBy::Route, TopMetric::Errors)[0], ("b".into(), 3.0));
        assert_eq!(top(TopBy::Route, TopMetric::Latency)[0].0, "b");
        assert_eq!(
            top(TopBy::Api, TopMetric::Requests),
            vec![("orders/v2".into(), 9.0)]
        );
    }

    #[test]
    fn buckets_share_a_series_and_forget_it_when_the_last_expires() {
        let mut table = TrafficTable::default();
        table.apply(&[delta(T0, "r", "app", traffic(1, 200, 1))], T0);
        table.apply(
            &[delta(T0 + HOUR_MS, "r", "app", traffic(1, 200, 1))],
            T0 + HOUR_MS,
        );
        table.apply(
            &[delta(T0 + HOUR_MS, "q", "app", traffic(1, 200, 1))],
            T0 + HOUR_MS,
        );
        let held: Vec<&Arc<Series>> = table
            .buckets
            .values()
            .flat_map(|b| b.series.iter())
            .filter(|s| s.route == "r")
            .collect();
        // Two minutes, two hours, one day.
        assert_eq!(held.len(), 5);
        assert!(held.iter().all(|s| Arc::ptr_eq(s, held[0])));
        assert_eq!(table.interned.len(), 2);
        assert_eq!(
            table
                .interned
                .get(&delta(T0, "r", "app", traffic(0, 200, 0)).series),
            Some(&5)
        );
        // Past the day of T0 + 1 h: its minutes are gone, "r" is still in the hours and day.
        table.apply(&[], T0 + HOUR_MS + DAY_MS + MINUTE_MS);
        assert_eq!(table.interned.len(), 2);
        assert_eq!(
            table.interned.values().copied().collect::<Vec<_>>(),
            vec![2, 3]
        );
        // Past every retention: nothing is left, series included.
        table.apply(&[], T0 + 402 * DAY_MS);
        assert!(table.is_empty());
        assert!(table.interned.is_empty());
    }

    /// A table with minutes, hours, days, several series, [`OTHER`] and large counts.
    fn busy_table() -> TrafficTable {
        let big = u64::MAX / 4;
        let mut huge = Traffic {
            requests: big,
            latency_sum_us: big,
            bytes_out: big,
            ..Traffic::default()
        };
        huge.status[4] = big;
        huge.latency[LATENCY_BUCKETS - 1] = big;
        let mut table = TrafficTable::default();
        for minute in 0..3 {
            let at = T0 + minute * MINUTE_MS;
            let deltas: Vec<TrafficDelta> = (0..120)
                .map(|i| delta(at, &format!("route-{i}"), "app", traffic(i + 1, 200, i)))
                .chain([delta(at, "r", "", huge.clone())])
                .collect();
            table.apply(&deltas, at);
        }
        table
    }

    #[test]
    fn the_table_roundtrips_through_the_codec() {
        use crate::codec::{decode, encode};
        let table = busy_table();
        assert_eq!(table.series_in(Resolution::Minute, T0), 101);
        let bytes = encode(&table).unwrap();
        let mut back: TrafficTable = decode(&bytes).unwrap();
        assert_eq!(back, table);
        assert_eq!(back.len(), table.len());
        assert_eq!(back.interned, table.interned);
        // Loading interns again: one copy of a series for all its buckets.
        let r: Vec<&Arc<Series>> = back
            .buckets
            .values()
            .flat_map(|b| b.series.iter())
            .filter(|s| s.route == "route-0")
            .collect();
        assert_eq!(r.len(), 5);
        assert!(r.iter().all(|s| Arc::ptr_eq(s, r[0])));
        // And goes on as the original would.
        let more = [delta(T0 + DAY_MS, "route-7", "app", traffic(3, 404, 2))];
        let mut table = table;
        table.apply(&more, T0 + DAY_MS + MINUTE_MS);
        back.apply(&more, T0 + DAY_MS + MINUTE_MS);
        assert_eq!(back, table);
        assert_eq!(encode(&back).unwrap(), encode(&table).unwrap());
        assert_eq!(
            decode::<TrafficTable>(&encode(&TrafficTable::default()).unwrap()).unwrap(),
            TrafficTable::default()
        );
    }

    #[test]
    fn a_table_out_of_shape_is_refused() {
        use crate::codec::{decode, encode};
        let series = |route: &str| {
            Cow::Owned(Series {
                route: route.into(),
                ..Series::default()
            })
        };
        let bucket = |start_ms, series: Vec<u32>| {
            let mut counters = Vec::new();
            for _ in &series {
                packed::pack(&traffic(1, 200, 1), &mut counters);
            }
            WireBucket {
                resolution: Resolution::Minute,
                start_ms,
                series,
                counters: Cow::Owned(counters),
            }
        };
        let load = |series: Vec<Cow<'static, Series>>, buckets| {
            decode::<TrafficTable>(&encode(&Wire { series, buckets }).unwrap())
        };
        let ab = || vec![series("a"), series("b")];
        assert!(load(ab(), vec![bucket(0, vec![0, 1])]).is_ok());
        let mut short = bucket(0, vec![0, 1]);
        short.counters.to_mut().pop();
        let mut long = bucket(0, vec![0, 1]);
        long.counters.to_mut().push(0);
        let mut bad = bucket(0, vec![0, 1]);
        // A count of zero named by the mask.
        bad.counters = Cow::Owned(vec![1, 0, 0]);
        for (series, buckets, why) in [
            (
                vec![series("b"), series("a")],
                vec![bucket(0, vec![0, 1])],
                "analytics: series not in",
            ),
            (
                ab(),
                vec![bucket(0, vec![1, 0])],
                "a bucket's series not in",
            ),
            (
                ab(),
                vec![bucket(0, vec![0, 0, 1])],
                "a bucket's series not in",
            ),
            (
                ab(),
                vec![bucket(0, vec![0, 2])],
                "series 2 named, 2 listed",
            ),
            (ab(), vec![bucket(0, vec![0])], "series 1 is in no bucket"),
            (
                ab(),
                vec![bucket(0, vec![0]), bucket(0, vec![1])],
                "buckets not in",
            ),
            (
                ab(),
                vec![bucket(0, vec![0, 1]), bucket(1, vec![])],
                "empty bucket",
            ),
            (ab(), vec![short], "ends early"),
            (ab(), vec![long], "1 bytes after"),
            (ab(), vec![bad], "marks a counter"),
        ] {
            let error = load(series, buckets).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
    }
}
