//! A service's pool: its endpoints (targets and registered instances, DNS names resolved), the
//! balancer over them and the settings a request needs, built off the request path and then
//! only read.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body_util::{Either, Empty};
use raftgate_model::api::{TargetHealth, UpstreamHealth};
use raftgate_model::{ActiveCheck, HashOn, LbPolicy, PassiveCheck, ServiceSpec};
use tracing::warn;

use super::balance::{Balancer, Candidate, Fnv, Ring, Schedule};
use super::call::RetryBudget;
use super::conn::Conns;
use super::dns::Resolved;
use super::health::Health;
use super::target::{Destination, TargetUrl};
use crate::client_body::ClientBody;

/// Body of requests sent upstream: the client's, streamed, or nothing for a retry.
pub(crate) type RequestBody = Either<ClientBody, Empty<Bytes>>;

/// What a pool is built from; kept by the service, changed by state updates and DNS answers.
#[derive(Debug)]
pub(crate) struct Inputs {
    pub(crate) spec: ServiceSpec,
    /// The spec's targets, then the registered instances: (URL, weight).
    pub(crate) targets: Vec<(String, u32)>,
    pub(crate) resolved: Resolved,
    /// Health and idle connections by (target URL, address), reused by every rebuild.
    pub(crate) endpoints: HashMap<(Arc<str>, SocketAddr), Kept>,
}

/// What an endpoint keeps across pool rebuilds: its health and its idle connections.
pub(crate) type Kept = (Arc<Health>, Arc<Conns>);

/// One address of one target.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) destination: Destination,
    pub(crate) health: Arc<Health>,
    pub(crate) conns: Arc<Conns>,
}

impl Candidate for Endpoint {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn in_flight(&self) -> usize {
        self.health.in_flight()
    }
    fn available(&self) -> bool {
        self.health.available()
    }
}

/// A configured target and its endpoints (none while its DNS name is unresolved).
#[derive(Debug)]
struct TargetEntry {
    url: Arc<str>,
    weight: u32,
    endpoints: Range<usize>,
}

/// What consistent hashing hashes, compiled.
#[derive(Debug)]
enum HashKey {
    Header(HeaderName),
    Cookie(Box<str>),
    ClientIp,
}

/// A service's endpoints, balancer and request settings; immutable once built.
#[derive(Debug)]
pub(crate) struct Pool {
    /// Service name, for errors and logs.
    pub(crate) service: Arc<str>,
    endpoints: Box<[Endpoint]>,
    targets: Box<[TargetEntry]>,
    pub(crate) balancer: Balancer,
    hash_on: Option<HashKey>,
    pub(crate) connect: Duration,
    pub(crate) read: Duration,
    pub(crate) total: Option<Duration>,
    pub(crate) retries: u32,
    pub(crate) passive: Option<PassiveCheck>,
    active: Option<ActiveCheck>,
    pub(crate) budget: Arc<RetryBudget>,
}

impl Pool {
    /// Builds the pool of `service` from `inputs`, reusing the health of endpoints it keeps and
    /// forgetting that of the others.
    pub(crate) fn build(
        service: &Arc<str>,
        inputs: &mut Inputs,
        budget: &Arc<RetryBudget>,
    ) -> Pool {
        let spec = &inputs.spec;
        let mut endpoints = Vec::with_capacity(inputs.targets.len());
        let mut targets = Vec::with_capacity(inputs.targets.len());
        let mut kept = HashSet::new();
        for (url, weight) in &inputs.targets {
            if *weight == 0 {
                continue;
            }
            let Some(target) = TargetUrl::parse(url) else {
                warn!(service = %service, url = %url,
                    "target URL is not of the form http://host[:port][/path]; target skipped");
                continue;
            };
            let fixed;
            let addrs: &[SocketAddr] = match target.ip {
                Some(ip) => {
                    fixed = [SocketAddr::new(ip, target.port)];
                    &fixed
                }
                None => inputs
                    .resolved
                    .get(&(target.host.clone(), target.port))
                    .map_or(&[], Vec::as_slice),
            };
            let start = endpoints.len();
            for &addr in addrs {
                let destination = Destination::new(&target);
                let key = (target.url.clone(), addr);
                let (health, conns) = inputs.endpoints.entry(key.clone()).or_default().clone();
                kept.insert(key);
                endpoints.push(Endpoint {
                    url: target.url.clone(),
                    addr,
                    weight: *weight,
                    destination,
                    health,
                    conns,
                });
            }
            targets.push(TargetEntry {
                url: target.url,
                weight: *weight,
                endpoints: start..endpoints.len(),
            });
        }
        inputs.endpoints.retain(|key, _| kept.contains(key));
        if spec.health_checks.active.is_none() {
            for e in &endpoints {
                e.health.clear_probes();
            }
        }

        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let balancer = match spec.lb {
            LbPolicy::RoundRobin => Balancer::RoundRobin(Schedule::new(&weights)),
            LbPolicy::LeastConnections => Balancer::LeastConnections(AtomicUsize::new(0)),
            LbPolicy::ConsistentHash => Balancer::ConsistentHash(
                Ring::new(endpoints.iter().map(|e| (&*e.url, e.addr, e.weight))),
                Schedule::new(&weights),
            ),
        };
        let hash_on = match (&spec.lb, &spec.hash_on) {
            (LbPolicy::ConsistentHash, Some(HashOn::Header(name))) => {
                match HeaderName::from_str(name) {
                    Ok(name) => Some(HashKey::Header(name)),
                    Err(_) => {
                        warn!(service = %service, header = %name,
                            "hash_on names an invalid header; balancing round-robin");
                        None
                    }
                }
            }
            (LbPolicy::ConsistentHash, Some(HashOn::Cookie(name))) => {
                Some(HashKey::Cookie(name.as_str().into()))
            }
            (LbPolicy::ConsistentHash, Some(HashOn::ClientIp)) => Some(HashKey::ClientIp),
            _ => None,
        };
        let timeouts = &spec.timeouts;
        Pool {
            service: service.clone(),
            endpoints: endpoints.into(),
            targets: targets.into(),
            balancer,
            hash_on,
            connect: Duration::from_millis(timeouts.connect_ms),
            read: Duration::from_millis(timeouts.read_ms),
            total: (timeouts.total_ms > 0).then(|| Duration::from_millis(timeouts.total_ms)),
            retries: spec.retries,
            passive: spec.health_checks.passive.clone(),
            active: spec.health_checks.active.clone(),
            budget: budget.clone(),
        }
    }

    /// The endpoints, in configuration order.
    pub(crate) fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The active health checks, if configured.
    pub(crate) fn active(&self) -> Option<&ActiveCheck> {
        self.active.as_ref()
    }

    /// Whether balancing reads a request header, which may be one the proxy sets: then the
    /// proxy's lines must be in the request's map before the pool sees it.
    pub(crate) fn hashes_on_header(&self) -> bool {
        matches!(self.hash_on, Some(HashKey::Header(_)))
    }

    /// The consistent-hashing key of a request; `None` without hashing or without the header,
    /// cookie or address hashed.
    pub(crate) fn hash_key(&self, headers: &HeaderMap, client_ip: &HeaderValue) -> Option<u64> {
        match self.hash_on.as_ref()? {
            HashKey::Header(name) => headers.get(name).map(|v| Fnv::hash(v.as_bytes())),
            HashKey::ClientIp => Some(Fnv::hash(client_ip.as_bytes())),
            HashKey::Cookie(wanted) => headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| name == &&**wanted)
                .map(|(_, value)| Fnv::hash(value.as_bytes())),
        }
    }

    /// This node's view of the pool's health.
    pub(crate) fn health(&self) -> UpstreamHealth {
        let mut targets = Vec::with_capacity(self.endpoints.len());
        for t in &self.targets {
            let endpoints = self.endpoints.get(t.endpoints.clone()).unwrap_or_default();
            if endpoints.is_empty() {
                targets.push(TargetHealth {
                    url: t.url.to_string(),
                    address: None,
                    weight: t.weight,
                    healthy: false,
                    ejected_until: None,
                    available: false,
                    consecutive_failures: 0,
                    failed_probes: 0,
                    in_flight: 0,
                });
            }
            for e in endpoints {
                let (healthy, ejected_until, failures, failed_probes) = e.health.view();
                targets.push(TargetHealth {
                    url: t.url.to_string(),
                    address: Some(e.addr.to_string()),
                    weight: t.weight,
                    healthy,
                    ejected_until,
                    available: e.health.available(),
                    consecutive_failures: failures,
                    failed_probes,
                    in_flight: e.health.in_flight() as u64,
                });
            }
        }
        UpstreamHealth {
            service: self.service.to_string(),
            targets,
        }
    }
}
