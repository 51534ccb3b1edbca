//! Per-endpoint health, shared between the request path (atomics only), the active checker and
//! the health view.
//!
//! An endpoint is *available* when the active checks consider it healthy (always, without
//! active checks) and passive checks have not ejected it. Active checks probe every endpoint of a
//! service each `interval_ms` with `GET {path}` on a fresh connection (the target's base path is
//! not prepended), counting 2xx and 3xx answers within `timeout_ms` as successes; an endpoint
//! turns unhealthy after `unhealthy_threshold` failures in a row and healthy again after
//! `healthy_threshold` successes in a row. Endpoints start healthy. Passive checks count
//! forwarded requests that failed in a row (connect errors, timeouts, 5xx answers); at
//! `consecutive_failures` the endpoint is ejected for `ejection_ms`, then returns to rotation
//! with a clean count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use raftgate_model::{ActiveCheck, PassiveCheck};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::Service;
use super::pool::Pool;

/// The process's monotonic time origin; ejection deadlines are milliseconds since it.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since [`EPOCH`], never 0 (0 means "not ejected").
fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// The health of one endpoint. Kept by (service, target URL, address) across pool rebuilds.
#[derive(Debug, Default)]
pub(crate) struct Health {
    in_flight: AtomicUsize,
    /// Forwarded requests that failed in a row.
    failures: AtomicU32,
    /// [`now_ms`] until which the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    /// Set by the active checker.
    unhealthy: AtomicBool,
    probe_successes: AtomicU32,
    probe_failures: AtomicU32,
}

impl Health {
    /// Whether the endpoint may receive traffic. Reads the clock only while it is ejected.
    pub(crate) fn available(&self) -> bool {
        if self.unhealthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped (or handed over with
    /// [`InFlight::hand_over`]).
    pub(crate) fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Ends a request counted by a handed-over [`InFlight`].
    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records how a forwarded request went, for passive checks.
    pub(crate) fn record(&self, ok: bool, passive: &PassiveCheck, url: &str, addr: SocketAddr) {
        if ok {
            // Only write when needed, so healthy traffic does not bounce the cache line.
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= passive.consecutive_failures {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until
                .store(now_ms() + passive.ejection_ms, Ordering::Relaxed);
            warn!(target = url, %addr, failures, ejection_ms = passive.ejection_ms,
                "upstream target failed too many requests in a row; ejected");
        }
    }

    /// Records a probe result; returns the new verdict when it changed.
    fn probed(&self, ok: bool, check: &ActiveCheck) -> Option<bool> {
        let unhealthy = self.unhealthy.load(Ordering::Relaxed);
        if ok {
            self.probe_failures.store(0, Ordering::Relaxed);
            let n = self.probe_successes.fetch_add(1, Ordering::Relaxed) + 1;
            if unhealthy && n >= check.healthy_threshold {
                self.unhealthy.store(false, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.probe_successes.store(0, Ordering::Relaxed);
            let n = self.probe_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if !unhealthy && n >= check.unhealthy_threshold {
                self.unhealthy.store(true, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// Forgets the active checks' verdict, for a service whose active checks were removed.
    pub(crate) fn clear_probes(&self) {
        self.unhealthy.store(false, Ordering::Relaxed);
        self.probe_successes.store(0, Ordering::Relaxed);
        self.probe_failures.store(0, Ordering::Relaxed);
    }

    /// The health view's fields: (healthy, ejected until in Unix ms, failures, failed probes).
    pub(crate) fn view(&self) -> (bool, Option<u64>, u32, u32) {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = now_ms();
        let ejected_until = (until > now).then(|| {
            let unix_now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            unix_now.saturating_add(until - now)
        });
        (
            !self.unhealthy.load(Ordering::Relaxed),
            ejected_until,
            self.failures.load(Ordering::Relaxed),
            self.probe_failures.load(Ordering::Relaxed),
        )
    }
}

/// A request counted in flight on an endpoint.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a Health);

impl InFlight<'_> {
    /// Stops counting through this guard: the caller must call [`Health::leave`] itself later
    /// (the response body does, once it is done).
    pub(crate) fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// Why a probe failed, for the debug log.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("connecting failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
    #[error("the probe request could not be built: {0}")]
    Request(#[source] http::Error),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Probes the service's endpoints every `interval_ms` while the service exists and has active
/// checks. Holds only a weak reference, so dropping the service ends it.
pub(crate) async fn run_active_checks(service: Weak<Service>) {
    loop {
        let Some(pool) = service.upgrade().map(|s| s.pool()) else {
            return;
        };
        let Some(check) = pool.active().cloned() else {
            return;
        };
        probe_all(&pool, &check).await;
        drop(pool);
        tokio::time::sleep(Duration::from_millis(check.interval_ms)).await;
    }
}

/// Probes every endpoint of `pool` at once and records the results.
async fn probe_all(pool: &Arc<Pool>, check: &ActiveCheck) {
    let timeout = Duration::from_millis(check.timeout_ms);
    let mut probes = JoinSet::new();
    for index in 0..pool.endpoints().len() {
        let pool = pool.clone();
        let path = check.path.clone();
        probes.spawn(async move {
            let endpoint = pool.endpoints().get(index)?;
            let host = endpoint.destination.host_header().clone();
            let result = tokio::time::timeout(timeout, probe(endpoint.addr, host, &path))
                .await
                .unwrap_or(Err(ProbeError::Timeout(timeout)));
            Some((index, result))
        });
    }
    while let Some(done) = probes.join_next().await {
        let Ok(Some((index, result))) = done else {
            continue;
        };
        let Some(endpoint) = pool.endpoints().get(index) else {
            continue;
        };
        if let Err(error) = &result {
            debug!(service = %pool.service, target = %endpoint.url, addr = %endpoint.addr,
                %error, "health probe failed");
        }
        match endpoint.health.probed(result.is_ok(), check) {
            Some(true) => info!(service = %pool.service, target = %endpoint.url,
                addr = %endpoint.addr, "upstream target healthy again"),
            Some(false) => warn!(service = %pool.service, target = %endpoint.url,
                addr = %endpoint.addr, "upstream target unhealthy; out of rotation"),
            None => {}
        }
    }
}

/// One `GET path` on a new connection; 2xx and 3xx are healthy.
async fn probe(addr: SocketAddr, host: HeaderValue, path: &str) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ProbeError::Http)?;
    let request = Request::get(path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "raftgate-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(ProbeError::Request)?;
    let exchange = sender.send_request(request);
    tokio::pin!(connection, exchange);
    // Drive the connection and the exchange together; both end when this returns. The
    // connection may finish (`Connection: close`) in the same poll that delivers the answer.
    let response = tokio::select! {
        biased;
        response = &mut exchange => response,
        ended = &mut connection => {
            ended.map_err(ProbeError::Http)?;
            exchange.await
        }
    }
    .map_err(ProbeError::Http)?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_ejection() {
        let check = ActiveCheck {
            path: "/".into(),
            interval_ms: 100,
            timeout_ms: 100,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        };
        let h = Health::default();
        assert_eq!(h.probed(false, &check), None);
        assert_eq!(h.probed(false, &check), None);
        assert!(h.available());
        assert_eq!(h.probed(false, &check), Some(false));
        assert!(!h.available());
        assert_eq!(h.probed(true, &check), None);
        assert_eq!(h.probed(true, &check), Some(true));
        assert!(h.available());

        let passive = PassiveCheck {
            consecutive_failures: 2,
            ejection_ms: 50,
        };
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        h.record(false, &passive, "u", addr);
        h.record(true, &passive, "u", addr);
        h.record(false, &passive, "u", addr);
        assert!(h.available(), "failures were not consecutive");
        h.record(false, &passive, "u", addr);
        assert!(!h.available());
        assert!(h.view().1.is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(h.available());
        assert_eq!(h.view(), (true, None, 0, 0));
    }
}
