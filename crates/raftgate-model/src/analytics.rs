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
//! A node's report is bounded the same way ([`MAX_REPORT_SERIES`]).

use imbl::OrdMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
    /// 1,440 × 100 + 720 × 250 + 400 × 500 ≈ 524,000 rows.
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
        self.requests += other.requests;
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
        self.latency_sum_us += other.latency_sum_us;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }

    /// The latency at quantile `q` (0..=1) in milliseconds, interpolated within its bucket as
    /// Prometheus's `histogram_quantile` does; `None` without requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let count: u64 = self.latency.iter().sum();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, &n) in self.latency.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_NS[i - 1] };
                // Above the last bound nothing is known but that bound.
                let Some(&upper) = LATENCY_BOUNDS_NS.get(i) else {
                    return Some(lower as f64 / 1e6);
                };
                let within = (rank - below as f64) / n as f64;
                return Some((lower as f64 + (upper - lower) as f64 * within) / 1e6);
            }
            below += n;
        }
        Some(LATENCY_BOUNDS_NS[LATENCY_BOUNDS_NS.len() - 1] as f64 / 1e6)
    }

    /// The summary shown to users.
    pub fn summary(&self) -> Summary {
        let errors = self.status[3] + self.status[4];
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

/// The key of one bucket of one series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BucketKey {
    /// Minute, hour or day.
    pub resolution: Resolution,
    /// Start of the bucket, Unix milliseconds.
    pub start_ms: u64,
    /// The series.
    pub series: Series,
}

/// The replicated analytics: every bucket, and how many series each holds (for the bound).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficTable {
    buckets: OrdMap<BucketKey, Traffic>,
    series: OrdMap<(Resolution, u64), u32>,
}

impl TrafficTable {
    /// Rows held, all resolutions together.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Series held by the bucket of `resolution` starting at `start_ms`.
    pub fn series_in(&self, resolution: Resolution, start_ms: u64) -> u32 {
        self.series
            .get(&(resolution, start_ms))
            .copied()
            .unwrap_or(0)
    }

    /// Adds a node's report to its minute, hour and day buckets, and drops the buckets past
    /// their retention at `now_ms` (the proposal's time). Deterministic: the same on every node.
    pub fn apply(&mut self, deltas: &[TrafficDelta], now_ms: u64) {
        for d in deltas {
            if d.minute_ms > now_ms.saturating_add(MAX_CLOCK_AHEAD_MS) {
                continue;
            }
            for resolution in Resolution::ALL {
                self.add(resolution, d);
            }
        }
        self.expire(now_ms);
    }

    fn add(&mut self, resolution: Resolution, d: &TrafficDelta) {
        let start_ms = resolution.start(d.minute_ms);
        let mut key = BucketKey {
            resolution,
            start_ms,
            series: d.series.clone(),
        };
        if !self.buckets.contains_key(&key) {
            let held = self.series.entry((resolution, start_ms)).or_default();
            if *held >= resolution.max_series() {
                key.series = Series::other();
            }
            if !self.buckets.contains_key(&key) {
                *held += 1;
            }
        }
        self.buckets.entry(key).or_default().add(&d.traffic);
    }

    fn expire(&mut self, now_ms: u64) {
        let expired: Vec<(Resolution, u64)> = self
            .series
            .keys()
            .filter(|(r, start)| {
                start
                    .saturating_add(r.millis())
                    .saturating_add(r.retention_ms())
                    <= now_ms
            })
            .copied()
            .collect();
        for (resolution, start_ms) in expired {
            self.series.remove(&(resolution, start_ms));
            let doomed: Vec<BucketKey> = self
                .buckets
                .range(
                    BucketKey {
                        resolution,
                        start_ms,
                        series: Series::default(),
                    }..,
                )
                .take_while(|(k, _)| k.resolution == resolution && k.start_ms == start_ms)
                .map(|(k, _)| k.clone())
                .collect();
            for key in doomed {
                self.buckets.remove(&key);
            }
        }
    }

    /// The buckets of `resolution` from `from_ms` (inclusive) to `to_ms` (exclusive).
    fn window(
        &self,
        resolution: Resolution,
        from_ms: u64,
        to_ms: u64,
    ) -> impl Iterator<Item = (&BucketKey, &Traffic)> {
        self.buckets
            .range(
                BucketKey {
                    resolution,
                    start_ms: resolution.start(from_ms),
                    series: Series::default(),
                }..,
            )
            .take_while(move |(k, _)| k.resolution == resolution && k.start_ms < to_ms)
    }

    /// `GET /analytics`: the matching series added up per step.
    pub fn report(&self, query: &AnalyticsQuery, now_ms: u64) -> AnalyticsReport {
        let (from_ms, to_ms, step) = query.window(now_ms);
        let mut points: Vec<AnalyticsPoint> = Vec::new();
        let mut total = Traffic::default();
        let mut current: Option<(u64, Traffic)> = None;
        for (key, traffic) in self.window(step, from_ms, to_ms) {
            if !query.selects(&key.series) {
                continue;
            }
            total.add(traffic);
            match &mut current {
                Some((start, sum)) if *start == key.start_ms => sum.add(traffic),
                _ => {
                    if let Some((start_ms, sum)) = current.take() {
                        points.push(AnalyticsPoint::new(start_ms, &sum));
                    }
                    current = Some((key.start_ms, traffic.clone()));
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
        for (key, traffic) in self.window(step, from_ms, to_ms) {
            if !filter.selects(&key.series) {
                continue;
            }
            let s = &key.series;
            let name = match query.by {
                TopBy::Consumer => s.consumer.clone(),
                TopBy::Route => s.route.clone(),
                TopBy::Service => s.service.clone(),
                TopBy::Api if s.api.is_empty() => continue,
                TopBy::Api => format!("{}/{}", s.api, s.version),
            };
            groups.entry(name).or_default().add(traffic);
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
}
