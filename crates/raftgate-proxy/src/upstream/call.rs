//! Sending one request to a service: endpoint choice, timeouts, retries and passive health.
//!
//! # Timeouts
//! - `connect_ms` bounds each TCP connect;
//! - `read_ms` bounds the wait for the response head of each attempt, counted from when the
//!   request is handed to the endpoint's connections (so a new connection's connect time is
//!   included), and then each wait for more of the response body: an upstream that stalls in
//!   the middle of a body has the stream cut after `read_ms` without a byte (as nginx's
//!   `proxy_read_timeout` does), rather than holding the client;
//! - `total_ms`, when set, bounds the whole exchange: all attempts and the response body. Past
//!   it before the head arrived the client gets a 504; past it while the body streams, the
//!   stream is cut (the status was already sent).
//!
//! # Retries
//! A request is retried when its method is idempotent (`GET`, `HEAD`, `OPTIONS`, `PUT`,
//! `DELETE`), it has no body (nothing was streamed that could not be sent again), and the attempt
//! failed to connect, timed out waiting for the head, or was answered 502, 503 or 504. A retry
//! goes to an endpoint the request has not tried yet, up to `retries` times, and only while the
//! service's [`RetryBudget`] allows it. When no retry is possible, the last answer or error is
//! what the client gets.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::balance::{MAX_ATTEMPTS, Tried};
use super::conn::{ExchangeError, ResponseBody, SendError, Switched};
use super::h1::Added;
use super::pool::{Endpoint, Pool};
use crate::client_body::ClientBody;
use crate::forward::Forwarded;

/// Retry tokens are counted in thousandths.
const RETRY_COST: i64 = 1_000;
/// What each request earns: 0.2 retries, so retries add at most 20% to the request rate.
const EARNED_PER_REQUEST: i64 = 200;
/// Most retries saved up, spendable in a burst (also the initial balance, so that a quiet
/// service can retry at all).
const BUDGET_CAP: i64 = 10 * RETRY_COST;

/// A token bucket bounding retries so that they cannot amplify an outage: every request to the
/// service earns 0.2 tokens, a retry costs one, and at most 10 are saved. Over any period,
/// retries ≤ 10 + 20% of requests. Lock-free; a full bucket costs a request one relaxed load.
#[derive(Debug)]
pub(crate) struct RetryBudget(AtomicI64);

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget(AtomicI64::new(BUDGET_CAP))
    }
}

impl RetryBudget {
    fn earn(&self) {
        // Racing requests may overshoot the cap by a few deposits; harmless.
        if self.0.load(Ordering::Relaxed) < BUDGET_CAP {
            self.0.fetch_add(EARNED_PER_REQUEST, Ordering::Relaxed);
        }
    }

    fn spend(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= RETRY_COST).then_some(t - RETRY_COST)
            })
            .is_ok()
    }
}

/// Which limit a timeout hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `connect_ms`.
    Connect,
    /// `read_ms`.
    Read,
    /// `total_ms`.
    Total,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Connect => "accept a connection",
            Phase::Read => "answer",
            Phase::Total => "complete the exchange",
        })
    }
}

/// Why a request could not be forwarded to its service. The messages are shown to clients, so
/// they name the service but never an internal address.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error(
        "service '{service}' has no target in rotation; give one of its targets a weight above 0 or register an instance"
    )]
    NoTarget { service: Arc<str> },
    #[error(
        "service '{service}' has no healthy target: all fail their health checks or were ejected after failing requests; check its upstream servers"
    )]
    NoHealthy { service: Arc<str> },
    #[error("the request cannot be forwarded: {0}")]
    BadRequest(#[source] http::Error),
    #[error("service '{service}' is unreachable: its upstream refused the connection")]
    Unreachable {
        service: Arc<str>,
        target: Arc<str>,
        #[source]
        source: std::io::Error,
    },
    #[error("service '{service}' failed: its upstream closed or broke the connection")]
    Broken {
        service: Arc<str>,
        target: Arc<str>,
        #[source]
        source: ExchangeError,
    },
    #[error("service '{service}' did not {phase} within {limit:?}")]
    Timeout {
        service: Arc<str>,
        target: Arc<str>,
        phase: Phase,
        limit: Duration,
    },
}

impl UpstreamError {
    /// The status and machine-readable code the client gets.
    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            UpstreamError::NoTarget { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_upstream"),
            UpstreamError::NoHealthy { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_healthy_upstream")
            }
            UpstreamError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            UpstreamError::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
            UpstreamError::Broken { .. } => (StatusCode::BAD_GATEWAY, "upstream_error"),
            UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        }
    }

    /// The target URL involved, for logs.
    pub(crate) fn target(&self) -> Option<&str> {
        match self {
            UpstreamError::Unreachable { target, .. }
            | UpstreamError::Broken { target, .. }
            | UpstreamError::Timeout { target, .. } => Some(target),
            _ => None,
        }
    }

    /// Whether another endpoint may be tried (for a request that allows retries).
    fn retriable(&self) -> bool {
        match self {
            UpstreamError::Unreachable { .. } => true,
            UpstreamError::Timeout { phase, .. } => *phase != Phase::Total,
            _ => false,
        }
    }
}

/// Methods whose requests may be sent twice.
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// What a retry needs to build its request again (its body is empty by definition).
struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Pool {
    /// Sends a request to an endpoint of this pool, retrying as the service allows. The request
    /// is ready for upstream but for where it goes: its headers are rewritten, and its URI has
    /// the path to send (see [`super::target::rewrite_path`]); each attempt sets the authority,
    /// the target's base path and `Host`. `client_ip` feeds consistent hashing on the client
    /// address. `sent` is now, as the caller read it for its own timing: the timeouts count
    /// from it (one clock read fewer per request). `forwarded`, when given, are the proxy's
    /// lines for the codec to write (and `Host` with them).
    pub(crate) async fn forward(
        self: Arc<Self>,
        parts: Parts,
        body: ClientBody,
        client_ip: &HeaderValue,
        sent: std::time::Instant,
        forwarded: Option<&Forwarded<'_>>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let sent = Instant::from_std(sent);
        let deadline = self.total.map(|total| sent + total);
        let attempts = if self.retries > 0 {
            self.budget.earn();
            if is_idempotent(&parts.method) && body.is_end_stream() {
                (self.retries as usize).saturating_add(1).min(MAX_ATTEMPTS)
            } else {
                1
            }
        } else {
            1
        };
        let key = self.hash_key(&parts.headers, client_ip);
        let mut tried = Tried::default();
        let mut index = self
            .balancer
            .pick(self.endpoints(), key, &tried)
            .ok_or_else(|| self.unavailable())?;
        // Copied only when a retry may need it.
        let template = (attempts > 1).then(|| Template {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        });
        let mut first = Some((parts, body));
        // When the first attempt starts; each retry reads the clock again.
        let mut started = Some(sent);
        loop {
            tried.push(index);
            let Some(endpoint) = self.endpoints().get(index) else {
                return Err(self.unavailable());
            };
            let request = match (first.take(), &template) {
                (Some((parts, body)), _) => {
                    request(parts, Either::Left(body), endpoint, forwarded.is_some())
                }
                (None, Some(t)) => {
                    let mut again = Request::new(Either::Right(Empty::new()));
                    *again.method_mut() = t.method.clone();
                    *again.uri_mut() = t.uri.clone();
                    *again.version_mut() = t.version;
                    *again.headers_mut() = t.headers.clone();
                    let (parts, body) = again.into_parts();
                    request(parts, body, endpoint, forwarded.is_some())
                }
                (None, None) => return Err(self.unavailable()),
            }?;
            let in_flight = endpoint.health.enter();
            let start = started.take().unwrap_or_else(Instant::now);
            let added = forwarded.map(|forwarded| Added {
                host: endpoint.destination.host_header(),
                forwarded,
            });
            let result = self
                .attempt(request, endpoint, start, deadline, added)
                .await;
            if let Some(passive) = &self.passive {
                let ok = result.as_ref().is_ok_and(|r| !r.status().is_server_error());
                endpoint
                    .health
                    .record(ok, passive, &endpoint.url, endpoint.addr);
            }
            let retry_worthy = match &result {
                Ok(response) => matches!(response.status().as_u16(), 502..=504),
                Err(error) => error.retriable(),
            };
            if retry_worthy
                && tried.len() < attempts
                && let Some(next) = self.balancer.pick(self.endpoints(), key, &tried)
            {
                if self.budget.spend() {
                    debug!(service = %self.service, target = %endpoint.url,
                        attempt = tried.len(), "retrying on another target");
                    index = next;
                    continue;
                }
                debug!(service = %self.service, "retry budget exhausted; not retrying");
            }
            let response = result?;
            in_flight.hand_over();
            return Ok(response.map(|inner| UpstreamBody {
                inner,
                pool: self,
                index,
                deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
                idle: None,
                stalled: false,
                retries: u8::try_from(tried.len().saturating_sub(1)).unwrap_or(u8::MAX),
            }));
        }
    }

    /// The error for a request that finds no endpoint to go to.
    fn unavailable(&self) -> UpstreamError {
        let service = self.service.clone();
        if self.endpoints().is_empty() {
            UpstreamError::NoTarget { service }
        } else {
            UpstreamError::NoHealthy { service }
        }
    }

    /// One attempt on `endpoint` starting at `start`, up to the response head.
    async fn attempt(
        &self,
        request: Request<super::pool::RequestBody>,
        endpoint: &Endpoint,
        start: Instant,
        deadline: Option<Instant>,
        added: Option<Added<'_>>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let read_deadline = start + self.read;
        let (until, phase, limit) = match (deadline, self.total) {
            (Some(d), Some(total)) if d < read_deadline => (d, Phase::Total, total),
            _ => (read_deadline, Phase::Read, self.read),
        };
        let timeout = |phase, limit| UpstreamError::Timeout {
            service: self.service.clone(),
            target: endpoint.url.clone(),
            phase,
            limit,
        };
        let exchange = endpoint
            .conns
            .send(endpoint.addr, self.connect, request, added);
        match tokio::time::timeout_at(until, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(SendError::ConnectTimeout)) => Err(timeout(Phase::Connect, self.connect)),
            Ok(Err(SendError::Connect(source))) => Err(UpstreamError::Unreachable {
                service: self.service.clone(),
                target: endpoint.url.clone(),
                source,
            }),
            Ok(Err(SendError::Broken(source))) => Err(UpstreamError::Broken {
                service: self.service.clone(),
                target: endpoint.url.clone(),
                source,
            }),
            Err(_) => Err(timeout(phase, limit)),
        }
    }
}

/// `parts` and `body` addressed to `endpoint`; with `host_written`, the codec writes `Host`.
fn request(
    mut parts: Parts,
    body: super::pool::RequestBody,
    endpoint: &Endpoint,
    host_written: bool,
) -> Result<Request<super::pool::RequestBody>, UpstreamError> {
    parts.uri = endpoint
        .destination
        .upstream_uri(&parts.uri)
        .map_err(UpstreamError::BadRequest)?;
    // A route's header ops may have set `Host`; otherwise it is the target's.
    if !host_written {
        parts
            .headers
            .entry(header::HOST)
            .or_insert_with(|| endpoint.destination.host_header().clone());
    }
    Ok(Request::from_parts(parts, body))
}

/// Why an upstream response body ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the upstream response body failed: {0}")]
    Upstream(#[source] ExchangeError),
    #[error("the exchange exceeded the service's total timeout of {0:?}")]
    TotalTimeout(Duration),
    #[error(
        "the upstream sent nothing more of its response body for {0:?} (the service's read timeout)"
    )]
    IdleTimeout(Duration),
}

/// An upstream response body on its way to the client: drives its connection's I/O, counts the
/// request in flight on its endpoint until done, cuts the stream at the service's total
/// timeout, and gives the connection back for reuse once the body has been read to the end.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    inner: ResponseBody,
    pool: Arc<Pool>,
    index: usize,
    deadline: Option<Pin<Box<Sleep>>>,
    /// The read timeout between two pieces of the body: made when the body first waits for
    /// the upstream (most bodies arrive with their head and never do), then reset.
    idle: Option<Pin<Box<Sleep>>>,
    /// Whether `idle` runs, i.e. nothing came since the body last waited.
    stalled: bool,
    /// Attempts before the one that answered.
    retries: u8,
}

impl UpstreamBody {
    /// The target that answered, as configured (`http://host:port`), for the access log.
    pub(crate) fn target(&self) -> Option<&Arc<str>> {
        self.pool.endpoints().get(self.index).map(|e| &e.url)
    }

    /// Attempts before the one that answered.
    pub(crate) fn retries(&self) -> u32 {
        u32::from(self.retries)
    }

    /// Whether the answer's headers may still hold hop-by-hop ones: the upstream codec leaves
    /// them out of most answers.
    pub(crate) fn hop_by_hop_left(&self) -> bool {
        self.inner.hop_by_hop_left()
    }

    /// The upstream's end of a connection that switched protocols (after a `101`).
    pub(crate) fn switched(&mut self) -> Option<Switched> {
        self.inner.switched()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            let total = this.pool.total.unwrap_or_default();
            return Poll::Ready(Some(Err(BodyError::TotalTimeout(total))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_ready() {
            this.stalled = false;
            return polled.map_err(BodyError::Upstream);
        }
        let read = this.pool.read;
        let idle = match &mut this.idle {
            Some(idle) if this.stalled => idle,
            Some(idle) => {
                idle.as_mut().reset(Instant::now() + read);
                idle
            }
            None => this.idle.insert(Box::pin(tokio::time::sleep(read))),
        };
        this.stalled = true;
        if idle.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyError::IdleTimeout(read))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(endpoint) = self.pool.endpoints().get(self.index) {
            endpoint.health.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_a_burst_then_a_fifth_of_requests() {
        let budget = RetryBudget::default();
        let burst = (0..100).take_while(|_| budget.spend()).count();
        assert_eq!(burst, 10);
        let mut retries = 0;
        for _ in 0..1_000 {
            budget.earn();
            if budget.spend() {
                retries += 1;
            }
        }
        assert_eq!(retries, 200);
        for _ in 0..1_000 {
            budget.earn();
        }
        assert!(budget.0.load(Ordering::Relaxed) <= BUDGET_CAP + EARNED_PER_REQUEST);
    }
}
