//! raftgate's metrics: one registry per node, the metric families in it, and the typed handles
//! the other crates record into. The admin API serves the registry as Prometheus text
//! (version 0.0.4) at `GET /metrics`, as Kong's and APISIX's Prometheus plugins do.
//!
//! | metric | type | labels | recorded by |
//! |---|---|---|---|
//! | `raftgate_http_requests_total` | counter | `route`, `service`, `consumer`, `code` | the proxy, per request |
//! | `raftgate_request_latency_seconds` | histogram | `route`, `service` | the proxy: request received → response head ready |
//! | `raftgate_upstream_latency_seconds` | histogram | `route`, `service` | the proxy: upstream call → its response head, retries included |
//! | `raftgate_rate_limit_refusals_total` | counter | `limit` | the policies, per 429 |
//! | `raftgate_access_log_dropped_total` | counter | | the access log, per line dropped because its writer's queue was full |
//! | `raftgate_connections_refused_total` | counter | `listener` (`proxy`, `proxy_tls`, `admin`) | the listeners, per connection closed at once because the listener was full |
//! | `raftgate_upstream_target_health` | gauge | `service`, `target`, `address` | read from the proxy's health view at scrape time: 1 when the target gets traffic (healthy, not ejected) |
//! | `raftgate_raft_term`, `_leader_id`, `_last_log_index`, `_applied_index`, `_is_leader` | gauges | | the cluster, from openraft's metrics |
//! | `raftgate_ai_requests_total`, `_prompt_tokens_total`, `_completion_tokens_total`, `_cost_usd_total` | counters | `model`, `provider`, `consumer` | the AI gateway's usage records |
//!
//! `consumer` is the authenticated consumer's name, empty when the route does not authenticate
//! or the request was refused before authentication succeeded (a 401). Requests that matched no
//! route are counted with empty `route` and `service`; the AI gateway's own API is counted by
//! the `raftgate_ai_*` metrics only.
//!
//! Recording never takes a lock shared by all requests and never allocates on the proxy's
//! request path: see [`RouteMetrics`] and [`LatencyHistogram`]. Everything else is recorded off
//! that path (a refusal increments a counter resolved when the route was compiled; Raft and AI
//! usage are recorded by background tasks).

#![warn(missing_docs)]

mod histogram;
mod route;

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use raftgate_model::api::UpstreamHealth;

pub use histogram::LatencyHistogram;
pub use route::{Exchange, RouteLabels, RouteMetrics, RouteTraffic};

use route::HttpRequests;

/// The `Content-Type` of [`Metrics::encode`]'s text: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Where the upstream health gauge reads each target's health at scrape time (the proxy's
/// health view).
type HealthSource = Box<dyn Fn() -> Vec<UpstreamHealth> + Send + Sync>;

/// A node's registry and its metric families. Share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: HttpRequests,
    latency: Family<RouteLabels, LatencyHistogram>,
    upstream_latency: Family<RouteLabels, LatencyHistogram>,
    refusals: Family<LimitLabels, Counter>,
    connections_refused: Family<ListenerLabels, Counter>,
    access_log_dropped: Counter,
    ai: AiFamilies,
    raft: RaftGauges,
    health: Arc<UpstreamHealthGauge>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every raftgate metric registered and nothing recorded yet.
    pub fn new() -> Metrics {
        Metrics::build(false)
    }

    /// Like [`Metrics::new`], and routes also keep each consumer's traffic for the cluster's
    /// analytics, taken with [`Metrics::take_traffic`].
    pub fn with_analytics() -> Metrics {
        Metrics::build(true)
    }

    fn build(analytics: bool) -> Metrics {
        let mut registry = Registry::with_prefix("raftgate");
        let requests = HttpRequests::new(analytics);
        registry.register(
            "http_requests",
            "Proxied requests by route, service, authenticated consumer and status code",
            requests.clone(),
        );
        let latency = Family::default();
        registry.register_with_unit(
            "request_latency",
            "Time from receiving a proxied request to having its response head, by route",
            Unit::Seconds,
            latency.clone(),
        );
        let upstream_latency = Family::default();
        registry.register_with_unit(
            "upstream_latency",
            "Time the upstream took to answer with a response head (retries included), by route",
            Unit::Seconds,
            upstream_latency.clone(),
        );
        let refusals = Family::default();
        registry.register(
            "rate_limit_refusals",
            "Requests refused with 429 by a rate limit or quota, by limit name",
            refusals.clone(),
        );
        let connections_refused = Family::default();
        registry.register(
            "connections_refused",
            "Client connections closed on accept because the listener held its most connections, by listener",
            connections_refused.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the log writer's queue was full (the proxy never waits for it)",
            access_log_dropped.clone(),
        );
        let ai = AiFamilies::default();
        ai.register(&mut registry);
        let raft = RaftGauges::default();
        raft.register(&mut registry);
        let health = Arc::new(UpstreamHealthGauge::default());
        registry.register_collector(Box::new(health.clone()));
        Metrics {
            registry,
            requests,
            latency,
            upstream_latency,
            refusals,
            connections_refused,
            access_log_dropped,
            ai,
            raft,
            health,
        }
    }

    /// The handles of route `route` sending to `service`: a compiled route asks once, at its
    /// first request, so that later requests record without looking anything up by name. The same
    /// labels give the same series, so counts continue across recompiles.
    pub fn route(&self, route: &str, service: &str) -> RouteMetrics {
        let labels = RouteLabels {
            route: route.into(),
            service: service.into(),
        };
        RouteMetrics::new(
            &self.requests,
            &self.latency,
            &self.upstream_latency,
            &labels,
        )
    }

    /// Every route's traffic by consumer since the last call, leaving zeros (nothing without
    /// [`Metrics::with_analytics`]). A request recorded during the call is in this take or
    /// the next, never lost.
    pub fn take_traffic(&self) -> Vec<RouteTraffic> {
        self.requests.take_traffic()
    }

    /// The counter of access log lines dropped.
    pub fn access_log_drops(&self) -> Drops {
        Drops(self.access_log_dropped.clone())
    }

    /// The refusal counter of rate limit `limit`, resolved when a route's policies are compiled.
    pub fn limit_refusals(&self, limit: &str) -> Refusals {
        Refusals(self.refusals.get_or_create_owned(&LimitLabels {
            limit: limit.into(),
        }))
    }

    /// The counter of connections listener `listener` refused because it was full.
    pub fn connection_refusals(&self, listener: &str) -> Refusals {
        Refusals(
            self.connections_refused
                .get_or_create_owned(&ListenerLabels {
                    listener: listener.into(),
                }),
        )
    }

    /// Records one AI gateway call. Called off the request path, by the task that aggregates
    /// usage records.
    pub fn record_ai(&self, call: &AiLabels, usage: &AiCallUsage) {
        self.ai.requests.get_or_create(call).inc();
        self.ai
            .prompt_tokens
            .get_or_create(call)
            .inc_by(usage.prompt_tokens);
        self.ai
            .completion_tokens
            .get_or_create(call)
            .inc_by(usage.completion_tokens);
        if usage.cost_usd > 0.0 {
            self.ai.cost_usd.get_or_create(call).inc_by(usage.cost_usd);
        }
    }

    /// The Raft gauges, for the task that follows openraft's metrics.
    pub fn raft(&self) -> &RaftGauges {
        &self.raft
    }

    /// Makes `raftgate_upstream_target_health` read `source` at every scrape (the proxy's view
    /// of its targets, which changes with probes, ejections and their expiry, so it is read
    /// when asked rather than copied on every change). Replaces an earlier source.
    pub fn follow_upstream_health(
        &self,
        source: impl Fn() -> Vec<UpstreamHealth> + Send + Sync + 'static,
    ) {
        *self
            .health
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(source));
    }

    /// Everything recorded, as Prometheus text ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The label of a rate limit's refusals.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    limit: Arc<str>,
}

/// The label of a listener's refused connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: Arc<str>,
}

/// Counts access log lines dropped because the writer fell behind; cloning shares the count.
#[derive(Debug, Clone)]
pub struct Drops(Counter);

impl Drops {
    /// Counts one dropped line.
    pub fn dropped(&self) {
        self.0.inc();
    }
}

/// Counts refusals (of one rate limit, or of one listener's connections); cloning shares the
/// count.
#[derive(Debug, Clone)]
pub struct Refusals(Counter);

impl Refusals {
    /// Counts one refusal: a relaxed atomic increment.
    pub fn refused(&self) {
        self.0.inc();
    }
}

/// The labels of an AI gateway call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AiLabels {
    /// The model alias the caller asked for.
    pub model: String,
    /// The provider that served it (the last one tried when all failed).
    pub provider: String,
    /// The calling consumer; empty when unknown.
    pub consumer: String,
}

/// What one AI gateway call consumed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AiCallUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in USD.
    pub cost_usd: f64,
}

/// The AI gateway's families.
#[derive(Debug, Default)]
struct AiFamilies {
    requests: Family<AiLabels, Counter>,
    prompt_tokens: Family<AiLabels, Counter>,
    completion_tokens: Family<AiLabels, Counter>,
    cost_usd: Family<AiLabels, Counter<f64, AtomicU64>>,
}

impl AiFamilies {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "ai_requests",
            "AI gateway calls by model alias, provider and consumer",
            self.requests.clone(),
        );
        registry.register(
            "ai_prompt_tokens",
            "Prompt tokens of AI gateway calls (the provider's count, else an estimate)",
            self.prompt_tokens.clone(),
        );
        registry.register(
            "ai_completion_tokens",
            "Completion tokens of AI gateway calls (the provider's count, else an estimate)",
            self.completion_tokens.clone(),
        );
        registry.register(
            "ai_cost_usd",
            "Cost of AI gateway calls in US dollars, from the deployments' prices",
            self.cost_usd.clone(),
        );
    }
}

/// This node's view of Raft, as openraft reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RaftStatus {
    /// The current term.
    pub term: u64,
    /// The leader this node knows of, if any.
    pub leader: Option<u64>,
    /// Index of the last entry in this node's log.
    pub last_log_index: u64,
    /// Index of the last entry applied to this node's state.
    pub applied_index: u64,
    /// Whether this node is the leader.
    pub is_leader: bool,
}

/// The Raft gauges; cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct RaftGauges {
    term: Gauge,
    leader_id: Gauge,
    last_log_index: Gauge,
    applied_index: Gauge,
    is_leader: Gauge,
}

impl RaftGauges {
    fn register(&self, registry: &mut Registry) {
        let gauges = [
            ("raft_term", "The current Raft term", &self.term),
            (
                "raft_leader_id",
                "Id of the Raft leader this node knows of; 0 when none",
                &self.leader_id,
            ),
            (
                "raft_last_log_index",
                "Index of the last entry in this node's Raft log",
                &self.last_log_index,
            ),
            (
                "raft_applied_index",
                "Index of the last Raft entry applied to this node's state",
                &self.applied_index,
            ),
            (
                "raft_is_leader",
                "1 when this node is the Raft leader, else 0",
                &self.is_leader,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }

    /// Sets every gauge from `status`.
    pub fn set(&self, status: &RaftStatus) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.term.set(gauge(status.term));
        self.leader_id.set(gauge(status.leader.unwrap_or(0)));
        self.last_log_index.set(gauge(status.last_log_index));
        self.applied_index.set(gauge(status.applied_index));
        self.is_leader.set(i64::from(status.is_leader));
    }
}

/// `raftgate_upstream_target_health`, read from its source at each scrape.
#[derive(Default)]
struct UpstreamHealthGauge {
    source: Mutex<Option<HealthSource>>,
}

impl fmt::Debug for UpstreamHealthGauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamHealthGauge")
            .finish_non_exhaustive()
    }
}

impl Collector for UpstreamHealthGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let services = match &*self.source.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(source) => source(),
            None => return Ok(()),
        };
        if services.iter().all(|s| s.targets.is_empty()) {
            return Ok(());
        }
        let mut metric = encoder.encode_descriptor(
            "upstream_target_health",
            "1 when the target receives traffic (resolved, healthy, not ejected), else 0.",
            None,
            MetricType::Gauge,
        )?;
        for service in &services {
            for target in &service.targets {
                let labels = [
                    ("service", service.service.as_str()),
                    ("target", target.url.as_str()),
                    ("address", target.address.as_deref().unwrap_or_default()),
                ];
                metric
                    .encode_family(&labels)?
                    .encode_gauge(&i64::from(target.available))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::api::TargetHealth;
    use std::time::Duration;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    fn call(
        consumer: Option<&str>,
        status: u16,
        total: Duration,
        upstream: Option<Duration>,
    ) -> Exchange {
        Exchange {
            consumer: consumer.map(Into::into),
            status,
            total,
            upstream,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    #[test]
    fn traffic_is_taken_once_and_only_with_analytics() {
        let off = Metrics::new();
        off.route("r", "s")
            .record(call(None, 200, Duration::from_millis(1), None));
        assert!(off.take_traffic().is_empty());

        let on = Metrics::with_analytics();
        let route = on.route("r", "s");
        route.record(Exchange {
            bytes_in: 10,
            bytes_out: 100,
            ..call(Some("alice"), 200, Duration::from_millis(2), None)
        });
        route.record(call(Some("alice"), 503, Duration::from_millis(40), None));
        route.record(call(None, 404, Duration::from_micros(50), None));
        let mut taken = on.take_traffic();
        taken.sort_by(|a, b| a.consumer.cmp(&b.consumer));
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].consumer, None);
        assert_eq!(taken[0].traffic.status, [0, 0, 0, 1, 0]);
        let alice = &taken[1].traffic;
        assert_eq!(alice.requests, 2);
        assert_eq!(alice.status, [0, 1, 0, 0, 1]);
        assert_eq!((alice.bytes_in, alice.bytes_out), (10, 100));
        assert_eq!(alice.latency_sum_us, 42_000);
        assert_eq!(alice.latency.iter().sum::<u64>(), 2);
        assert!(on.take_traffic().is_empty(), "taken means zeroed");
        // The Prometheus counts are not taken.
        assert!(on.encode().unwrap().contains("code=\"503\""));
    }

    #[test]
    fn every_family_encodes_with_its_labels() {
        let metrics = Metrics::new();
        let route = metrics.route("orders", "orders-svc");
        route.record(call(
            Some("alice"),
            200,
            Duration::from_millis(3),
            Some(Duration::from_millis(2)),
        ));
        route.record(call(Some("alice"), 200, Duration::from_millis(1), None));
        route.record(call(None, 401, Duration::from_micros(50), None));
        // A recompile gets the same series.
        metrics.route("orders", "orders-svc").record(call(
            Some("alice"),
            200,
            Duration::ZERO,
            None,
        ));
        metrics.limit_refusals("per-minute").refused();
        metrics.raft().set(&RaftStatus {
            term: 3,
            leader: Some(2),
            last_log_index: 40,
            applied_index: 39,
            is_leader: false,
        });
        let call = AiLabels {
            model: "smart".into(),
            provider: "openai".into(),
            consumer: "app".into(),
        };
        metrics.record_ai(
            &call,
            &AiCallUsage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cost_usd: 0.25,
            },
        );
        metrics.follow_upstream_health(|| {
            vec![UpstreamHealth {
                service: "orders-svc".into(),
                targets: vec![TargetHealth {
                    url: "http://127.0.0.1:9000".into(),
                    address: Some("127.0.0.1:9000".into()),
                    weight: 1,
                    healthy: false,
                    ejected_until: None,
                    available: false,
                    consecutive_failures: 0,
                    failed_probes: 3,
                    in_flight: 0,
                }],
            }]
        });

        let text = metrics.encode().unwrap();
        for expected in [
            "raftgate_http_requests_total{route=\"orders\",service=\"orders-svc\",consumer=\"alice\",code=\"200\"} 3",
            "raftgate_http_requests_total{route=\"orders\",service=\"orders-svc\",consumer=\"\",code=\"401\"} 1",
            "raftgate_request_latency_seconds_count{route=\"orders\",service=\"orders-svc\"} 4",
            "raftgate_request_latency_seconds_bucket{route=\"orders\",service=\"orders-svc\",le=\"0.0001\"} 2",
            "raftgate_request_latency_seconds_bucket{route=\"orders\",service=\"orders-svc\",le=\"+Inf\"} 4",
            "raftgate_upstream_latency_seconds_count{route=\"orders\",service=\"orders-svc\"} 1",
            "raftgate_rate_limit_refusals_total{limit=\"per-minute\"} 1",
            "raftgate_raft_term 3",
            "raftgate_raft_leader_id 2",
            "raftgate_raft_last_log_index 40",
            "raftgate_raft_applied_index 39",
            "raftgate_raft_is_leader 0",
            "raftgate_ai_requests_total{model=\"smart\",provider=\"openai\",consumer=\"app\"} 1",
            "raftgate_ai_prompt_tokens_total{model=\"smart\",provider=\"openai\",consumer=\"app\"} 10",
            "raftgate_ai_completion_tokens_total{model=\"smart\",provider=\"openai\",consumer=\"app\"} 5",
            "raftgate_ai_cost_usd_total{model=\"smart\",provider=\"openai\",consumer=\"app\"} 0.25",
            "raftgate_upstream_target_health{service=\"orders-svc\",target=\"http://127.0.0.1:9000\",address=\"127.0.0.1:9000\"} 0",
            "# TYPE raftgate_http_requests_total counter",
            "# TYPE raftgate_request_latency_seconds histogram",
            "# TYPE raftgate_upstream_target_health gauge",
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "missing {expected:?} in\n{text}"
            );
        }
        let sum = line(&text, "raftgate_request_latency_seconds_sum").unwrap();
        assert!(sum.ends_with(" 0.00405"), "{sum}");
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics
            .route("r", "s")
            .record(call(Some("a\"b\\c\nd"), 200, Duration::ZERO, None));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"consumer="a\"b\\c\nd""#),
            "consumer names come from the admin API and must not break the format:\n{text}"
        );
    }
}
