//! Runs the node's bookkeeping writers ([`Reporter`]s): rate-limit usage, AI usage, traffic
//! analytics and instance expiry all go through [`run`], one proposal per interval each.
//!
//! Also here are the two reporters that belong to no other crate: the traffic analytics (read
//! from the proxy's metrics) and instance expiry (decided by the leader).

use std::sync::Arc;
use std::time::Duration;

use raftgate_cluster::Node;
use raftgate_metrics::{Metrics, RouteTraffic};
use raftgate_model::analytics::{MAX_REPORT_SERIES, Resolution, Series, TrafficDelta};
use raftgate_model::catalog::split_key;
use raftgate_model::report::{Moment, Reporter};
use raftgate_model::{Command, State};
use raftgate_policy::counter::now_ms;

/// Asks `reporter` for its report every `interval` and proposes it, until the task is dropped.
/// With `aligned`, ticks fall on multiples of `interval` since the Unix epoch, so that a report
/// never straddles a minute when `interval` divides one.
pub async fn run(node: Node, interval: Duration, aligned: bool, mut reporter: impl Reporter) {
    let period = interval.max(Duration::from_millis(1));
    let start = if aligned {
        let ms = period.as_millis().max(1) as u64;
        let now = now_ms();
        tokio::time::Instant::now() + Duration::from_millis(ms - now % ms)
    } else {
        tokio::time::Instant::now()
    };
    let mut tick = tokio::time::interval_at(start, period);
    // Aligned ticks stay on their multiples when a report takes longer than the interval.
    tick.set_missed_tick_behavior(if aligned {
        tokio::time::MissedTickBehavior::Skip
    } else {
        tokio::time::MissedTickBehavior::Delay
    });
    let mut failures = 0u32;
    loop {
        tick.tick().await;
        let state = node.state();
        let moment = Moment {
            now_ms: now_ms(),
            state: &state,
            is_leader: node.is_leader(),
        };
        let Some(command) = reporter.collect(moment) else {
            continue;
        };
        match node.write(command).await {
            Ok(_) => {
                reporter.applied(&node.state());
                failures = 0;
            }
            Err(error) => {
                reporter.failed();
                failures += 1;
                // Once, then every 100th time: a partitioned node fails every interval.
                if failures % 100 == 1 {
                    tracing::warn!(%error, failures, reporter = reporter.name(),
                        "report failed; what it held goes with the next one");
                }
            }
        }
    }
}

/// Reports this node's proxied traffic, taken from its metrics, as one
/// [`Command::RecordTraffic`] per interval. Each route's series is named with the route's
/// API version as the state has it when the report is made.
pub struct TrafficReporter {
    metrics: Arc<Metrics>,
    /// How often it reports (on multiples of it since the epoch).
    interval: Duration,
    /// Deltas of a report that failed, sent again with the next one.
    unsent: Vec<TrafficDelta>,
}

impl TrafficReporter {
    /// The reporter of the traffic `metrics` keeps (see [`Metrics::with_analytics`]), run
    /// every `interval` by [`run`] with aligned ticks.
    pub fn new(metrics: Arc<Metrics>, interval: Duration) -> TrafficReporter {
        TrafficReporter {
            metrics,
            interval,
            unsent: Vec::new(),
        }
    }
}

/// The API and version that own route `route` in `state`: a route's `api_version`, or, for
/// the implicit route of an AI API version, the version it is named after.
fn owner(state: &State, route: &str) -> (String, String) {
    if let Some(entity) = state.routes.get(route) {
        return entity
            .spec
            .api_version
            .as_ref()
            .map(|v| (v.api.clone(), v.version.clone()))
            .unwrap_or_default();
    }
    match split_key(route) {
        Some((api, version)) if state.api_versions.contains_key(route) => {
            (api.to_string(), version.to_string())
        }
        _ => Default::default(),
    }
}

/// Merges `taken` into deltas for the minute of `minute_ms`, at most [`MAX_REPORT_SERIES`]
/// series (the rest in [`Series::other`]).
///
/// The busiest series come first, so that they are the ones with their own rows when the
/// report is cut, and the first to take a bucket's places (see
/// [`Resolution::max_series`]): what lands in `~other` is the quiet traffic. Ties go by name,
/// so the report does not depend on the order the metrics hold the series in.
fn deltas(mut taken: Vec<RouteTraffic>, state: &State, minute_ms: u64) -> Vec<TrafficDelta> {
    taken.sort_by(|a, b| {
        b.traffic
            .requests
            .cmp(&a.traffic.requests)
            .then_with(|| a.labels.route.cmp(&b.labels.route))
            .then_with(|| a.labels.service.cmp(&b.labels.service))
            .then_with(|| a.consumer.cmp(&b.consumer))
    });
    let mut out: Vec<TrafficDelta> = Vec::with_capacity(taken.len().min(MAX_REPORT_SERIES + 1));
    let mut other: Option<TrafficDelta> = None;
    for t in taken {
        if out.len() >= MAX_REPORT_SERIES {
            other
                .get_or_insert_with(|| TrafficDelta {
                    minute_ms,
                    series: Series::other(),
                    traffic: Default::default(),
                })
                .traffic
                .add(&t.traffic);
            continue;
        }
        let (api, version) = owner(state, &t.labels.route);
        out.push(TrafficDelta {
            minute_ms,
            series: Series {
                route: t.labels.route.to_string(),
                service: t.labels.service.to_string(),
                api,
                version,
                consumer: t.consumer.as_deref().unwrap_or_default().to_string(),
            },
            traffic: t.traffic,
        });
    }
    out.extend(other);
    out
}

impl Reporter for TrafficReporter {
    fn name(&self) -> &'static str {
        "traffic analytics"
    }

    fn collect(&mut self, moment: Moment<'_>) -> Option<Command> {
        // Ticks are aligned and the interval divides a minute, so what was taken was served in
        // the interval that just ended, all of it in one minute: the one of its middle (the
        // tick may come a little late).
        let half = u64::try_from(self.interval.as_millis() / 2).unwrap_or(u64::MAX);
        let minute_ms = Resolution::Minute.start(moment.now_ms.saturating_sub(half.max(1)));
        let taken = self.metrics.take_traffic();
        let mut deltas = deltas(taken, moment.state, minute_ms);
        if self.unsent.len() < 4 * MAX_REPORT_SERIES {
            deltas.append(&mut self.unsent);
        }
        self.unsent.clear();
        if deltas.is_empty() {
            return None;
        }
        self.unsent = deltas.clone();
        Some(Command::RecordTraffic { deltas })
    }

    fn applied(&mut self, _: &State) {
        self.unsent.clear();
    }

    fn failed(&mut self) {}
}

/// On the leader, proposes the removal of service instances whose TTL lapsed.
pub struct InstanceReaper;

/// How often the leader looks for instances whose TTL lapsed.
pub const REAP_INTERVAL: Duration = Duration::from_secs(1);

impl Reporter for InstanceReaper {
    fn name(&self) -> &'static str {
        "instance expiry"
    }

    fn collect(&mut self, moment: Moment<'_>) -> Option<Command> {
        (moment.is_leader && !moment.state.expired_instances(moment.now_ms).is_empty())
            .then_some(Command::ExpireInstances)
    }

    fn applied(&mut self, _: &State) {}

    fn failed(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_metrics::RouteLabels;
    use raftgate_model::analytics::Traffic;

    fn taken(n: usize) -> Vec<RouteTraffic> {
        (0..n)
            .map(|i| RouteTraffic {
                labels: RouteLabels {
                    route: format!("r{i}").into(),
                    service: "s".into(),
                },
                consumer: None,
                traffic: Traffic {
                    requests: 1,
                    ..Traffic::default()
                },
            })
            .collect()
    }

    #[test]
    fn a_report_is_bounded_and_keeps_every_request() {
        let state = State::default();
        let d = deltas(taken(MAX_REPORT_SERIES + 500), &state, 60_000);
        assert_eq!(d.len(), MAX_REPORT_SERIES + 1);
        assert_eq!(d.last().map(|d| d.series.route.as_str()), Some("~other"));
        let total: u64 = d.iter().map(|d| d.traffic.requests).sum();
        assert_eq!(total, (MAX_REPORT_SERIES + 500) as u64);
        assert!(d.iter().all(|d| d.minute_ms == 60_000));
    }

    #[test]
    fn the_busiest_series_get_their_own_rows() {
        let state = State::default();
        // r{i} made i requests, but r0 and r1 made as many as r2: the quietest come first, so
        // cutting in the order taken would keep them.
        let mut t = taken(MAX_REPORT_SERIES + 2);
        for (i, t) in t.iter_mut().enumerate() {
            t.traffic.requests = (i as u64).max(2);
        }
        let d = deltas(t.clone(), &state, 60_000);
        assert_eq!(d.len(), MAX_REPORT_SERIES + 1);
        let busiest = format!("r{}", MAX_REPORT_SERIES + 1);
        assert_eq!(d[0].series.route, busiest);
        assert_eq!(d[0].traffic.requests, MAX_REPORT_SERIES as u64 + 1);
        assert!(
            d.windows(2)
                .take(MAX_REPORT_SERIES - 1)
                .all(|w| { w[0].traffic.requests >= w[1].traffic.requests })
        );
        // Of the three with 2 requests, the first by name has the last row of its own.
        assert_eq!(d[MAX_REPORT_SERIES - 1].series.route, "r0");
        let other = &d[MAX_REPORT_SERIES];
        assert_eq!(other.series, Series::other());
        assert_eq!(other.traffic.requests, 4, "r1 and r2");
        let total: u64 = d.iter().map(|d| d.traffic.requests).sum();
        assert_eq!(total, t.iter().map(|t| t.traffic.requests).sum::<u64>());
        // Whatever order the metrics hold them in.
        t.reverse();
        assert_eq!(deltas(t, &state, 60_000), d);
    }
}
