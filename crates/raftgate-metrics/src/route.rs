//! What the proxy records per request, and why it is cheap.
//!
//! The route and service labels of a request are known from the compiled route it matched, so
//! a compiled route asks [`crate::Metrics::route`] for a [`RouteMetrics`] at its first request
//! and keeps it; later requests only use that handle (routes without traffic hold none). The handle of a route is the same across
//! recompiles (looked up by its labels), so counts continue when the configuration changes.
//!
//! Per request, [`RouteMetrics::record`] then costs:
//! - for `raftgate_http_requests_total`: a read lock on *this route's* small map (not a lock
//!   shared by all routes; taken for writing only the first time a consumer and status pair is
//!   seen on the route), one hash of the consumer name and the status code, and one relaxed
//!   atomic increment. The key is the consumer's `Arc<str>` the authentication step already
//!   produced, moved in, and a `u16`: nothing is allocated or copied;
//! - for the latency histograms: two relaxed atomic additions each ([`LatencyHistogram`]).
//!
//! The consumer label makes the number of series grow with the consumers that call a route, as
//! Kong's `per_consumer` option does; series of routes and consumers that went away stay until
//! the node restarts.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::histogram::LatencyHistogram;

/// The labels a route's series share: the route and the service it sends to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route name; empty for requests that matched no route.
    pub route: Arc<str>,
    /// Service name; empty for requests that matched no route.
    pub service: Arc<str>,
}

/// Who called and the status answered: the key of one route's request counts. `None` stands for
/// requests without an authenticated consumer (label value "").
type Call = (Option<Arc<str>>, u16);

/// Counts of one route's requests by consumer and status code.
#[derive(Debug)]
struct RouteRequests {
    labels: RouteLabels,
    /// Hashed with foldhash rather than SipHash: this is looked up on every request, and its
    /// keys (configured consumers, status codes) are few and not chosen by clients.
    by_call: RwLock<HashMap<Call, AtomicU64, foldhash::fast::RandomState>>,
}

impl RouteRequests {
    fn count(&self, consumer: Option<Arc<str>>, status: u16) {
        let key = (consumer, status);
        {
            let counts = self.by_call.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get(&key) {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut counts = self.by_call.write().unwrap_or_else(PoisonError::into_inner);
        counts
            .entry(key)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The handles one compiled route records its requests into.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    requests: Arc<RouteRequests>,
    latency: LatencyHistogram,
    upstream_latency: LatencyHistogram,
}

impl RouteMetrics {
    /// Records one answered request: who called (`None` without authentication), the status
    /// sent to the client, the time from receiving the request to having the response head,
    /// and, when the request was sent upstream, the time the upstream call took until its
    /// response head (retries included). See the module documentation for the cost.
    pub fn record(
        &self,
        consumer: Option<Arc<str>>,
        status: u16,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        self.requests.count(consumer, status);
        self.latency.observe(total);
        if let Some(upstream) = upstream {
            self.upstream_latency.observe(upstream);
        }
    }
}

/// `raftgate_http_requests_total`: every route's [`RouteRequests`], encoded as one counter
/// family labelled route, service, consumer and code.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpRequests {
    routes: Arc<Mutex<HashMap<RouteLabels, Arc<RouteRequests>>>>,
}

/// Locks a map only touched when a route's handles are resolved and when metrics are scraped; a panic
/// elsewhere cannot leave it inconsistent, so a poisoned lock is taken anyway.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HttpRequests {
    fn route(&self, labels: &RouteLabels) -> Arc<RouteRequests> {
        lock(&self.routes)
            .entry(labels.clone())
            .or_insert_with(|| {
                Arc::new(RouteRequests {
                    labels: labels.clone(),
                    by_call: RwLock::default(),
                })
            })
            .clone()
    }
}

impl TypedMetric for HttpRequests {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for HttpRequests {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let routes: Vec<Arc<RouteRequests>> = lock(&self.routes).values().cloned().collect();
        for route in routes {
            let counts = route.by_call.read().unwrap_or_else(PoisonError::into_inner);
            for ((consumer, code), count) in counts.iter() {
                let labels = (
                    route.labels.clone(),
                    (
                        [("consumer", consumer.as_deref().unwrap_or_default())],
                        [("code", *code)],
                    ),
                );
                encoder
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count.load(Ordering::Relaxed), None)?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }

    fn is_empty(&self) -> bool {
        lock(&self.routes).values().all(|r| {
            r.by_call
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        })
    }
}

impl RouteMetrics {
    /// The handles of the route labelled `labels`, from the families they are registered in.
    pub(crate) fn new(
        requests: &HttpRequests,
        latency: &Family<RouteLabels, LatencyHistogram>,
        upstream_latency: &Family<RouteLabels, LatencyHistogram>,
        labels: &RouteLabels,
    ) -> RouteMetrics {
        RouteMetrics {
            requests: requests.route(labels),
            latency: latency.get_or_create_owned(labels),
            upstream_latency: upstream_latency.get_or_create_owned(labels),
        }
    }
}
