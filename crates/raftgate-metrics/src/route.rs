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
//! - for the latency histograms: two relaxed atomic additions each ([`LatencyHistogram`]);
//! - when the node keeps traffic analytics, four to six more relaxed atomic additions on the
//!   consumer's traffic cells of the route, found by the same lookup as the request count
//!   (status class, latency bucket, latency sum, bytes). The analytics reporter swaps them to
//!   zero once per interval ([`crate::Metrics::take_traffic`]).
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

use raftgate_model::analytics::{LATENCY_BUCKETS, Traffic, latency_bucket};

use crate::histogram::{LatencyHistogram, nanos};

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

/// The counter of one consumer and status pair on a route, and, when the node keeps traffic
/// analytics, that consumer's traffic cells on the route: found by the same lookup.
#[derive(Debug, Default)]
struct CallCells {
    count: AtomicU64,
    traffic: Option<Arc<TrafficCells>>,
}

/// What one consumer did on one route since the analytics reporter last took it
/// ([`crate::Metrics::take_traffic`]): relaxed atomics, swapped to zero when taken.
#[derive(Debug)]
struct TrafficCells {
    status: [AtomicU64; 5],
    latency: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_us: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Default for TrafficCells {
    fn default() -> TrafficCells {
        TrafficCells {
            status: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_us: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }
}

/// What the traffic cells take of one request.
struct Sample {
    status: u16,
    bucket: usize,
    ns: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl TrafficCells {
    fn record(&self, sample: &Sample) {
        let class = usize::from(sample.status / 100).clamp(1, 5) - 1;
        self.status[class].fetch_add(1, Ordering::Relaxed);
        if let Some(cell) = self.latency.get(sample.bucket) {
            cell.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_us
            .fetch_add(sample.ns / 1000, Ordering::Relaxed);
        if sample.bytes_in > 0 {
            self.bytes_in.fetch_add(sample.bytes_in, Ordering::Relaxed);
        }
        if sample.bytes_out > 0 {
            self.bytes_out
                .fetch_add(sample.bytes_out, Ordering::Relaxed);
        }
    }

    /// What was recorded since the last take, leaving zeros; `None` when nothing was.
    fn take(&self) -> Option<Traffic> {
        let swap = |cell: &AtomicU64| cell.swap(0, Ordering::Relaxed);
        let status = self.status.each_ref().map(swap);
        let requests = status.iter().sum();
        if requests == 0 {
            return None;
        }
        Some(Traffic {
            requests,
            status,
            latency: self.latency.each_ref().map(swap),
            latency_sum_us: swap(&self.latency_sum_us),
            bytes_in: swap(&self.bytes_in),
            bytes_out: swap(&self.bytes_out),
        })
    }
}

/// A route's traffic cells by consumer (`None` without authentication).
type ByConsumer = HashMap<Option<Arc<str>>, Arc<TrafficCells>>;

/// Counts of one route's requests by consumer and status code, and its consumers' traffic cells.
#[derive(Debug)]
struct RouteRequests {
    labels: RouteLabels,
    /// Hashed with foldhash rather than SipHash: this is looked up on every request, and its
    /// keys (configured consumers, status codes) are few and not chosen by clients.
    by_call: RwLock<HashMap<Call, CallCells, foldhash::fast::RandomState>>,
    /// Each consumer's traffic cells, shared by its calls' entries; `None` when the node keeps
    /// no analytics. Only touched when a new consumer and status pair is seen, and when taken.
    traffic: Option<Mutex<ByConsumer>>,
}

impl RouteRequests {
    /// Counts one request; the consumer's name is moved into the key, not copied.
    fn count(&self, exchange: Exchange, bucket: usize, ns: u64) {
        let sample = Sample {
            status: exchange.status,
            bucket,
            ns,
            bytes_in: exchange.bytes_in,
            bytes_out: exchange.bytes_out,
        };
        let key = (exchange.consumer, exchange.status);
        {
            let counts = self.by_call.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(cells) = counts.get(&key) {
                cells.count.fetch_add(1, Ordering::Relaxed);
                if let Some(traffic) = &cells.traffic {
                    traffic.record(&sample);
                }
                return;
            }
        }
        let traffic = self
            .traffic
            .as_ref()
            .map(|by_consumer| lock(by_consumer).entry(key.0.clone()).or_default().clone());
        let mut counts = self.by_call.write().unwrap_or_else(PoisonError::into_inner);
        let cells = counts.entry(key).or_insert_with(|| CallCells {
            count: AtomicU64::new(0),
            traffic,
        });
        cells.count.fetch_add(1, Ordering::Relaxed);
        if let Some(traffic) = &cells.traffic {
            traffic.record(&sample);
        }
    }

    /// Each consumer's traffic since the last take.
    fn take_traffic(&self, into: &mut Vec<RouteTraffic>) {
        let Some(by_consumer) = &self.traffic else {
            return;
        };
        for (consumer, cells) in lock(by_consumer).iter() {
            if let Some(traffic) = cells.take() {
                into.push(RouteTraffic {
                    labels: self.labels.clone(),
                    consumer: consumer.clone(),
                    traffic,
                });
            }
        }
    }
}

/// One route's traffic from one consumer, taken for the analytics report.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTraffic {
    /// The route and its service (empty for requests that matched no route).
    pub labels: RouteLabels,
    /// The consumer (`None` without authentication).
    pub consumer: Option<Arc<str>>,
    /// What it did.
    pub traffic: Traffic,
}

/// One answered request, as the proxy records it.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// Who called (`None` without authentication).
    pub consumer: Option<Arc<str>>,
    /// The status sent to the client.
    pub status: u16,
    /// From receiving the request to having the response head.
    pub total: Duration,
    /// When the request was sent upstream: the upstream's share of `total`, retries included.
    pub upstream: Option<Duration>,
    /// Request body bytes, as declared (0 when not known in advance).
    pub bytes_in: u64,
    /// Response body bytes, as declared (0 when not known in advance).
    pub bytes_out: u64,
}

/// The handles one compiled route records its requests into.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    requests: Arc<RouteRequests>,
    latency: LatencyHistogram,
    upstream_latency: LatencyHistogram,
}

impl RouteMetrics {
    /// Records one answered request. See the module documentation for the cost.
    pub fn record(&self, exchange: Exchange) {
        let ns = nanos(exchange.total);
        let bucket = latency_bucket(ns);
        self.latency.observe_in(bucket, ns);
        if let Some(upstream) = exchange.upstream {
            self.upstream_latency.observe(upstream);
        }
        self.requests.count(exchange, bucket, ns);
    }
}

/// `raftgate_http_requests_total`: every route's [`RouteRequests`], encoded as one counter
/// family labelled route, service, consumer and code.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpRequests {
    routes: Arc<Mutex<HashMap<RouteLabels, Arc<RouteRequests>>>>,
    /// Whether routes keep traffic cells for the analytics.
    analytics: bool,
}

/// Locks a map only touched when a route's handles are resolved and when metrics are scraped; a panic
/// elsewhere cannot leave it inconsistent, so a poisoned lock is taken anyway.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HttpRequests {
    /// Counts requests, and keeps traffic cells for the analytics when `analytics`.
    pub(crate) fn new(analytics: bool) -> HttpRequests {
        HttpRequests {
            routes: Arc::default(),
            analytics,
        }
    }

    fn route(&self, labels: &RouteLabels) -> Arc<RouteRequests> {
        lock(&self.routes)
            .entry(labels.clone())
            .or_insert_with(|| {
                Arc::new(RouteRequests {
                    labels: labels.clone(),
                    by_call: RwLock::default(),
                    traffic: self.analytics.then(Mutex::default),
                })
            })
            .clone()
    }

    /// Every route's traffic since the last take, by consumer.
    pub(crate) fn take_traffic(&self) -> Vec<RouteTraffic> {
        let routes: Vec<Arc<RouteRequests>> = lock(&self.routes).values().cloned().collect();
        let mut taken = Vec::new();
        for route in routes {
            route.take_traffic(&mut taken);
        }
        taken
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
            for ((consumer, code), cells) in counts.iter() {
                let labels = (
                    route.labels.clone(),
                    (
                        [("consumer", consumer.as_deref().unwrap_or_default())],
                        [("code", *code)],
                    ),
                );
                encoder
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(
                        &cells.count.load(Ordering::Relaxed),
                        None,
                    )?;
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
