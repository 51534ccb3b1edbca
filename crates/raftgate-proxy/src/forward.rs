//! Forwarding one request: route lookup, header rewriting, the upstream call, and the JSON
//! answers the proxy gives when it cannot forward.
//!
//! Upstream requests always use HTTP/1.1 on a pooled keep-alive client; request and response
//! bodies are streamed through without buffering. Per-request failures are logged at `debug`
//! level only, so that a failing upstream under load cannot turn logging into the bottleneck.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body as _, Incoming};
use raftgate_ai::Gateway;
use raftgate_ai::api::AiBody;
use raftgate_metrics::{Exchange, Metrics, RouteMetrics};
use raftgate_model::catalog::RefusedVersion;
use raftgate_model::path::{self, PathError};
use raftgate_policy::{Admitted, Answer, Engine, NO_ROUTE, RoutePolicies, X_CONSUMER_NAME};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::ProxyConfig;
use crate::ai::{AiTrace, AiVersion, Target as AiTarget};
use crate::client_body::ClientBody;
use crate::observe::{Observability, Observed, Outcome};
use crate::request_id::{RequestIds, X_REQUEST_ID};
use crate::router::{Route, Router, Target};
use crate::upgrade::{self, Upgrade};
use crate::upstream::{Pool, UpstreamBody, UpstreamError, rewrite_path};

/// Body of every response the proxy sends: the upstream's, streamed, a short error body, or
/// the AI gateway's answer (complete JSON or an event stream).
pub(crate) type Body = Either<UpstreamBody, Either<Full<Bytes>, AiBody>>;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static VIA: HeaderName = header::VIA;
/// `Via` entries (RFC 9110 §7.6.3): the protocol version received, then our pseudonym.
static VIA_HTTP11: HeaderValue = HeaderValue::from_static("1.1 raftgate");
static VIA_HTTP2: HeaderValue = HeaderValue::from_static("2 raftgate");

/// Headers that describe one connection, not the message, and so are never forwarded (in
/// addition to any header named in `Connection` and any `Proxy-*` header).
static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The JSON body of every error answer the proxy itself gives (as opposed to the upstream's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code: `no_route` (404), `bad_request` (400), `body_too_large`
    /// (413), `headers_too_large` (431), `no_upstream` (503),
    /// `no_healthy_upstream` (503), `upstream_unreachable` (502), `upstream_error` (502) or
    /// `upstream_timeout` (504).
    pub error: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The request's id, as sent upstream and returned in the `X-Request-Id` header; quote it
    /// when reporting a problem.
    pub request_id: String,
    /// The API version refused, for `not_subscribed` (403) and `retired` (410).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<RefusedVersion>,
}

/// A body's length when it is known before it is sent (`Content-Length`), else 0: what the
/// analytics and the access log count, without counting streamed bytes on the way.
fn declared(body: &impl hyper::body::Body) -> u64 {
    body.size_hint().exact().unwrap_or(0)
}

/// Why a request could not be forwarded. The messages are shown to clients, so they name the
/// service but never an internal address.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{NO_ROUTE}")]
    NoRoute,
    #[error("the request cannot be forwarded: {0}")]
    BadRequest(#[source] http::Error),
    #[error("{0}")]
    BadPath(#[from] PathError),
    #[error(
        "an HTTP/1.1 request must carry exactly one Host header (RFC 9112 section 3.2); send one"
    )]
    BadHost,
    #[error("CONNECT is not proxied; this is a reverse proxy, send requests for its routes")]
    Connect,
    #[error("the request body is larger than this proxy accepts ({limit} bytes); send less")]
    BodyTooLarge { limit: u64 },
    #[error("the request has more header lines than this proxy accepts ({limit}); send fewer")]
    HeadersTooLarge { limit: usize },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Refused (or, for a CORS preflight, answered) by the route's policies.
    #[error("{}", .0.error.as_ref().map_or("", |(_, message)| message.as_str()))]
    Policy(Box<Answer>),
}

impl Failure {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Failure::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            Failure::BadRequest(_) | Failure::BadHost => (StatusCode::BAD_REQUEST, "bad_request"),
            Failure::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path"),
            Failure::Connect => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Failure::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Failure::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Failure::Upstream(error) => error.status_and_code(),
            Failure::Policy(answer) => (
                answer.status,
                answer.error.as_ref().map_or("", |(code, _)| code),
            ),
        }
    }

    fn into_response(self, request_id: &HeaderValue) -> Response<Body> {
        let (status, code) = self.status_and_code();
        // A CORS preflight answer has no body.
        let json = !matches!(&self, Failure::Policy(answer) if answer.error.is_none());
        let body = if json {
            let api = match &self {
                Failure::Policy(answer) => answer.api.as_deref().cloned(),
                _ => None,
            };
            let body = ErrorBody {
                error: code.into(),
                message: self.to_string(),
                request_id: request_id.to_str().unwrap_or_default().into(),
                api,
            };
            Full::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
        } else {
            Full::default()
        };
        let mut response = Response::new(Either::Right(Either::Left(body)));
        *response.status_mut() = status;
        if json {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        if let Failure::Policy(answer) = self {
            response.headers_mut().extend(answer.headers);
        }
        response
    }
}

/// The client end of a connection: what every request on it shares.
pub(crate) struct Peer {
    /// The client's address.
    pub(crate) addr: SocketAddr,
    /// Its IP address as a header value, for `X-Forwarded-For` and hashing.
    pub(crate) ip: HeaderValue,
    /// `X-Forwarded-Proto`: `https` when the connection is TLS, `http` otherwise.
    pub(crate) proto: HeaderValue,
}

impl Peer {
    /// The peer at `addr`, over TLS when `tls`.
    pub(crate) fn new(addr: SocketAddr, tls: bool) -> Peer {
        Peer {
            addr,
            ip: HeaderValue::from_str(&addr.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }
}

/// Everything a request needs, shared by all connections.
pub(crate) struct Forwarder {
    router: ArcSwap<Router>,
    ids: RequestIds,
    /// [`ProxyConfig::max_headers`], checked here for HTTP/2 (hyper checks HTTP/1).
    max_headers: usize,
    /// [`ProxyConfig::max_body_bytes`].
    max_body_bytes: Option<u64>,
    /// Credentials and rate-limit counters for the routes' policies.
    policies: Arc<Engine>,
    /// The node's AI gateway, serving the unified API and prompt APIs before routing.
    ai: Option<Arc<Gateway>>,
    /// The node's metrics, which the reload task compiles routes against.
    metrics: Arc<Metrics>,
    /// Where requests that matched no route are counted.
    unrouted: RouteMetrics,
    /// The access log and the tracer, either of which may be off.
    observe: Observability,
}

impl Forwarder {
    pub(crate) fn new(
        router: Router,
        config: &ProxyConfig,
        policies: Arc<Engine>,
        metrics: Arc<Metrics>,
    ) -> Forwarder {
        Forwarder {
            router: ArcSwap::from_pointee(router),
            ids: RequestIds::new(),
            max_headers: config.max_headers,
            max_body_bytes: config.max_body_bytes,
            policies,
            ai: None,
            unrouted: metrics.route("", ""),
            metrics,
            observe: Observability::default(),
        }
    }

    /// Logs and traces requests as `observe` says.
    pub(crate) fn with_observability(mut self, observe: Observability) -> Forwarder {
        self.observe = observe;
        self
    }

    /// Serves the unified AI API with `gateway`.
    pub(crate) fn with_ai(mut self, gateway: Option<Arc<Gateway>>) -> Forwarder {
        self.ai = gateway;
        self
    }

    /// The policy engine; the reload task refreshes its credentials and counters.
    pub(crate) fn policies(&self) -> &Engine {
        &self.policies
    }

    /// The router in use; the reload task swaps it.
    pub(crate) fn router(&self) -> &ArcSwap<Router> {
        &self.router
    }

    /// The metrics routes record into; the reload task compiles routes against them.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves one request: never fails, a problem becomes a JSON error answer. Every answer
    /// is recorded in its route's metrics (see [`RouteMetrics::record`] for what that costs).
    pub(crate) async fn handle(
        &self,
        peer: &Peer,
        mut request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let received = Instant::now();
        let request_id = self.ids.for_request(request.headers());
        let mut observed = self.observe.start(peer, &request, &request_id);
        if let Err(failure) = check_request(&mut request) {
            debug!(request_id = ?request_id, error = %failure, "request refused before routing");
            let code = failure.status_and_code().1;
            let mut response = failure.into_response(&request_id);
            response.headers_mut().insert(&X_REQUEST_ID, request_id);
            let exchange = Exchange {
                status: response.status().as_u16(),
                total: received.elapsed(),
                bytes_out: declared(response.body()),
                ..Exchange::default()
            };
            self.observed(observed, &exchange, None, 0, Some(code));
            self.unrouted.record(exchange);
            return Ok(response);
        }
        if let Some(gateway) = &self.ai
            && let Some(target) = AiTarget::of(gateway, request.method(), request.uri().path())
        {
            // Only AI requests read what AI API versions offer.
            let router = self.router.load_full();
            let guards = router.ai_guards();
            if !guards.routed(&target, request.uri().path()) {
                // Boxed: the AI gateway's future is large, and inline it would be carried (and
                // moved) by every proxied request.
                let bytes_in = declared(request.body());
                let trace = observed
                    .as_ref()
                    .and_then(|o| o.span())
                    .and_then(AiTrace::of);
                let response = Box::pin(crate::ai::serve(
                    gateway,
                    &self.policies,
                    guards,
                    target,
                    request,
                    self.max_body_bytes,
                    trace,
                ))
                .await;
                let mut response = response.map(|b| Either::Right(Either::Right(b)));
                response.headers_mut().insert(&X_REQUEST_ID, request_id);
                let exchange = Exchange {
                    status: response.status().as_u16(),
                    total: received.elapsed(),
                    bytes_in,
                    bytes_out: declared(response.body()),
                    ..Exchange::default()
                };
                self.observed(observed, &exchange, None, 0, None);
                return Ok(response);
            }
        }
        // The request is changed in place from here on: its head is a few hundred bytes.
        let (mut parts, body) = request.into_parts();
        let bytes_in = declared(&body);
        let mut upgrade = Upgrade::take(&mut parts);
        let mut upstream_time = None;
        // When the upstream's answer arrived: the end of the upstream's share and, read once
        // for both, of the time to the response head.
        let mut answered = None;
        let mut route = None;
        let mut admitted = None;
        let mut result = match self
            .check_limits(&parts, &body)
            .and_then(|()| self.prepare(&mut parts, peer, &request_id))
        {
            Ok(Prepared::Ai { route, version }) => {
                if let Some(o) = &mut observed {
                    o.routed(&route);
                }
                // Boxed for the same reason as the gateway's own entrance.
                let request = Request::from_parts(parts, body);
                let served = self.serve_ai(route, &version, request, peer, received, &mut observed);
                let mut response = Box::pin(served).await;
                response.headers_mut().insert(&X_REQUEST_ID, request_id);
                return Ok(response);
            }
            Ok(Prepared::Upstream {
                pool,
                route: matched,
                forwarded: added,
            }) => {
                // An upgrade the route does not allow goes upstream as a plain request.
                if upgrade
                    .as_ref()
                    .is_some_and(|u| !u.allowed_by(&matched.upgrades))
                {
                    upgrade = None;
                }
                // Kept apart for the upstream span, only when the request is observed.
                let traced = observed.as_mut().map(|o| {
                    o.routed(&matched);
                    matched.clone()
                });
                let policies = route.insert(matched).policies.as_deref();
                match self.admit(policies, &mut parts, peer, &body).await {
                    Ok(ok) => {
                        admitted = ok;
                        if let Some(upgrade) = &upgrade {
                            upgrade::restore(&mut parts.headers, upgrade.protocol());
                        }
                        let limit = body_limit(self.max_body_bytes, admitted.as_ref());
                        let (body, overflow) = ClientBody::new(body, limit);
                        // Without policies only routing, well under a microsecond, ran since
                        // `received`: its reading serves, one clock read fewer per request.
                        let sent = if admitted.is_some() {
                            Instant::now()
                        } else {
                            received
                        };
                        let span = traced.and_then(|r| {
                            observed
                                .as_ref()?
                                .upstream(r.target_label(), &mut parts.headers)
                        });
                        let forwarded = pool
                            .forward(parts, body, &peer.ip, sent, added.as_ref())
                            .await;
                        if let Some(span) = span {
                            match &forwarded {
                                Ok(r) => {
                                    span.finish(Some(r.status().as_u16()), r.body().retries(), None)
                                }
                                Err(e) => span.finish(None, 0, Some(e.status_and_code().1)),
                            }
                        }
                        let now = Instant::now();
                        upstream_time = Some(now.duration_since(sent));
                        answered = Some(now);
                        match forwarded {
                            // Whatever the upstream made of a cut-off body, the client sent too much.
                            _ if overflow.is_some_and(|o| o.happened()) => {
                                Err(Failure::BodyTooLarge {
                                    limit: limit.unwrap_or_default(),
                                })
                            }
                            result => result.map_err(Failure::from),
                        }
                    }
                    Err(failure) => Err(failure),
                }
            }
            Err(failure) => Err(failure),
        };
        // Taken out, not cloned: the metrics below keep it. A refusal after authentication
        // (ACL, rate limit) names the consumer too.
        let consumer = match (&mut admitted, &mut result) {
            (Some(admitted), _) => admitted.consumer.take(),
            (None, Err(Failure::Policy(answer))) => answer.consumer.take(),
            _ => None,
        };
        // For the access log, only when there is one.
        let mut target: Option<Arc<str>> = None;
        let mut retries = 0;
        let mut error = None;
        let mut response = match result {
            Ok(mut response) => {
                if observed.is_some() {
                    target = response.body().target().cloned();
                    retries = response.body().retries();
                }
                let switched = upgrade.and_then(|upgrade| upgrade.splice(&mut response));
                let hop_by_hop_left = response.body().hop_by_hop_left();
                let mut response = response.map(Either::Left);
                if hop_by_hop_left {
                    remove_hop_by_hop(response.headers_mut(), Message::Response);
                }
                // Room for `Via` and `X-Request-Id` at once rather than a rehash per header.
                response.headers_mut().reserve(2);
                // Upstream responses always arrive over HTTP/1.1.
                response
                    .headers_mut()
                    .append(header::VIA, VIA_HTTP11.clone());
                if let Some(protocol) = &switched {
                    upgrade::restore(response.headers_mut(), protocol);
                }
                if let Some(route) = &route
                    && !route.response_headers.is_empty()
                {
                    route.response_headers.apply(response.headers_mut());
                }
                if let Some(admitted) = admitted {
                    response.headers_mut().extend(admitted.response_headers);
                }
                response
            }
            Err(failure) => {
                debug!(request_id = ?request_id, consumer = consumer.as_deref(), error = %failure,
                    source = ?std::error::Error::source(&failure), upstream = failure_target(&failure),
                    "request not forwarded");
                if let Some(o) = &mut observed {
                    let (status, code) = failure.status_and_code();
                    if matches!(failure, Failure::Policy(_)) {
                        o.refused(code, status.as_u16());
                    }
                    error = Some(code);
                    target = failure_target(&failure).map(Arc::from);
                }
                failure.into_response(&request_id)
            }
        };
        response.headers_mut().insert(&X_REQUEST_ID, request_id);
        let exchange = Exchange {
            consumer,
            status: response.status().as_u16(),
            total: answered
                .unwrap_or_else(Instant::now)
                .duration_since(received),
            upstream: upstream_time,
            bytes_in,
            bytes_out: declared(response.body()),
        };
        self.observed(observed, &exchange, target.as_ref(), retries, error);
        route
            .as_ref()
            .map_or(&self.unrouted, |r| r.metrics())
            .record(exchange);
        Ok(response)
    }

    /// Ends an observed request's span and queues its log line.
    fn observed(
        &self,
        observed: Option<Observed>,
        exchange: &Exchange,
        target: Option<&Arc<str>>,
        retries: u32,
        error: Option<&'static str>,
    ) {
        if let Some(observed) = observed {
            observed.finish(
                &self.observe,
                Outcome {
                    status: exchange.status,
                    consumer: exchange.consumer.as_ref(),
                    total: exchange.total,
                    upstream: exchange.upstream,
                    bytes_in: exchange.bytes_in,
                    bytes_out: exchange.bytes_out,
                    target,
                    retries,
                    error,
                },
            );
        }
    }

    /// Runs the route's policies, if it has any, on a request about to be forwarded.
    async fn admit(
        &self,
        policies: Option<&RoutePolicies>,
        parts: &mut Parts,
        peer: &Peer,
        body: &Incoming,
    ) -> Result<Option<Admitted>, Failure> {
        let Some(policies) = policies else {
            return Ok(None);
        };
        let declared = body.size_hint().exact();
        match policies
            .check(&self.policies, parts, peer.addr.ip(), declared)
            .await
        {
            Ok(admitted) => {
                debug!(
                    consumer = admitted.consumer.as_deref(),
                    "request admitted by the route's policies"
                );
                Ok(Some(admitted))
            }
            Err(answer) => Err(Failure::Policy(answer)),
        }
    }

    /// Refuses a request with more header lines or a larger declared body than configured.
    fn check_limits(&self, parts: &Parts, body: &Incoming) -> Result<(), Failure> {
        if parts.headers.len() > self.max_headers {
            return Err(Failure::HeadersTooLarge {
                limit: self.max_headers,
            });
        }
        if let Some(limit) = self.max_body_bytes
            && body.size_hint().lower() > limit
        {
            return Err(Failure::BodyTooLarge { limit });
        }
        Ok(())
    }

    /// Routes the request and rewrites its head for its upstream. Only reads the current
    /// router: no lock, no I/O.
    fn prepare<'a>(
        &self,
        parts: &mut Parts,
        peer: &'a Peer,
        request_id: &'a HeaderValue,
    ) -> Result<Prepared<'a>, Failure> {
        let via = if parts.version == Version::HTTP_2 {
            &VIA_HTTP2
        } else {
            &VIA_HTTP11
        };
        // HTTP/2 and absolute-form HTTP/1 carry the host in the URI, origin-form HTTP/1 in `Host`.
        let original_host = match parts.uri.authority() {
            // Without any userinfo (`user:pass@`) of an absolute-form target.
            Some(authority) => HeaderValue::from_str(
                authority
                    .as_str()
                    .rsplit_once('@')
                    .map_or(authority.as_str(), |(_, host)| host),
            )
            .ok(),
            None => parts.headers.get(header::HOST).cloned(),
        };
        let router = self.router.load();
        let host = original_host.as_ref().and_then(|h| h.to_str().ok());
        let matched = router
            .find(host, parts.uri.path(), &parts.method, &parts.headers)
            .ok_or(Failure::NoRoute)?;
        let route = matched.route.clone();
        let pool = match &route.target {
            Target::Service(service) => service.pool(),
            Target::Ai(version) => {
                let version = version.clone();
                return Ok(Prepared::Ai { route, version });
            }
        };
        let rewritten = matched
            .rewritten_path(parts.uri.path())
            .map(|path| rewrite_path(&parts.uri, &path))
            .transpose()
            .map_err(Failure::BadRequest)?;
        if let Some(uri) = rewritten {
            parts.uri = uri;
        }
        parts.version = Version::HTTP_11;

        let headers = &mut parts.headers;
        remove_hop_by_hop(headers, Message::Request);
        let forwarded = Forwarded::new(headers, peer, original_host, request_id, via);
        // Header ops and hashing on a header read the headers as they go upstream: for those
        // the proxy's lines go into the map first. Otherwise the codec writes them.
        if route.request_headers.is_empty() && !pool.hashes_on_header() {
            return Ok(Prepared::Upstream {
                pool,
                route,
                forwarded: Some(forwarded),
            });
        }
        forwarded.insert_into(headers);
        route.request_headers.apply(headers);
        Ok(Prepared::Upstream {
            pool,
            route,
            forwarded: None,
        })
    }

    /// Serves a request routed to an AI API version: the route's policies, then the AI
    /// gateway, with the answers (refusals too) in the AI API's format.
    async fn serve_ai(
        &self,
        route: Arc<Route>,
        version: &AiVersion,
        request: Request<Incoming>,
        peer: &Peer,
        received: Instant,
        observed: &mut Option<Observed>,
    ) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        let bytes_in = declared(&body);
        let checked = match route.policies.as_deref() {
            Some(policies) => {
                let declared = body.size_hint().exact();
                policies
                    .check(&self.policies, &mut parts, peer.addr.ip(), declared)
                    .await
            }
            None => Ok(Admitted::default()),
        };
        let (response, consumer) = match (checked, &self.ai) {
            (Err(mut answer), _) => {
                let consumer = answer.consumer.take();
                if let (Some(o), Some((code, _))) = (observed.as_mut(), &answer.error) {
                    o.refused(code, answer.status.as_u16());
                }
                let dialect = version.dialect(parts.uri.path());
                (crate::ai::refusal(dialect, *answer), consumer)
            }
            (Ok(admitted), Some(gateway)) => {
                let limit = body_limit(self.max_body_bytes, Some(&admitted));
                let mut response = crate::ai::serve_version(
                    gateway,
                    self.policies.counters(),
                    version,
                    admitted.identity.as_ref(),
                    Request::from_parts(parts, body),
                    limit,
                    observed
                        .as_ref()
                        .and_then(|o| o.span())
                        .and_then(AiTrace::of),
                )
                .await;
                response.headers_mut().extend(admitted.response_headers);
                (response, admitted.consumer)
            }
            (Ok(admitted), None) => {
                let error = raftgate_ai::ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    "this node serves no AI gateway; call another node",
                );
                let dialect = version.dialect(parts.uri.path());
                (raftgate_ai::api::error(dialect, &error), admitted.consumer)
            }
        };
        let response = response.map(|b| Either::Right(Either::Right(b)));
        let exchange = Exchange {
            consumer,
            status: response.status().as_u16(),
            total: received.elapsed(),
            upstream: None,
            bytes_in,
            bytes_out: declared(response.body()),
        };
        self.observed(observed.take(), &exchange, None, 0, None);
        route.metrics().record(exchange);
        response
    }
}

/// A request routed (see [`Forwarder::prepare`]).
enum Prepared<'a> {
    /// Ready for its upstream.
    Upstream {
        pool: Arc<Pool>,
        route: Arc<Route>,
        /// The proxy's lines, when the upstream codec writes them.
        forwarded: Option<Forwarded<'a>>,
    },
    /// For the AI gateway: the route of an AI API version.
    Ai {
        route: Arc<Route>,
        version: Arc<AiVersion>,
    },
}

/// The lines the proxy adds to a request it forwards: `X-Forwarded-For/-Proto/-Host`,
/// `X-Request-Id` and `Via`. Inserting each into the request's `HeaderMap` costs a hash, a
/// probe and often a grow of the map, so when nothing reads them before the upstream codec,
/// the codec writes them after the request's own lines instead, leaving out the client's
/// lines they replace (with `Host`, 8% of the proxy's instructions per request).
pub(crate) struct Forwarded<'a> {
    forwarded_for: Cow<'a, HeaderValue>,
    proto: &'a HeaderValue,
    /// `X-Forwarded-Host`: the host the client asked for, if it named one.
    host: Option<HeaderValue>,
    request_id: &'a HeaderValue,
    via: &'static HeaderValue,
}

impl<'a> Forwarded<'a> {
    /// The lines for a request from `peer` with these `headers` (any `X-Forwarded-For` is
    /// appended to), for the host it asked for, with its id and our `Via` entry.
    pub(crate) fn new(
        headers: &HeaderMap,
        peer: &'a Peer,
        host: Option<HeaderValue>,
        request_id: &'a HeaderValue,
        via: &'static HeaderValue,
    ) -> Forwarded<'a> {
        Forwarded {
            forwarded_for: forwarded_for(headers, &peer.ip),
            proto: &peer.proto,
            host,
            request_id,
            via,
        }
    }

    /// The lines, in the order they are written.
    pub(crate) fn lines(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        [
            Some((&X_FORWARDED_FOR, &*self.forwarded_for)),
            Some((&X_FORWARDED_PROTO, self.proto)),
            self.host.as_ref().map(|host| (&X_FORWARDED_HOST, host)),
            Some((&X_REQUEST_ID, self.request_id)),
            Some((&VIA, self.via)),
        ]
        .into_iter()
        .flatten()
    }

    /// Whether a client's header is left out when these lines are written: those they replace
    /// (a client's `Via` is kept, ours follows it), `Host` (each target gets its own) and
    /// `Expect` (the proxy answers `100-continue` itself and streams the body anyway).
    pub(crate) fn replaces(name: &HeaderName) -> bool {
        *name == header::HOST
            || *name == header::EXPECT
            || [
                &X_FORWARDED_FOR,
                &X_FORWARDED_PROTO,
                &X_FORWARDED_HOST,
                &X_REQUEST_ID,
            ]
            .contains(&name)
    }

    /// [`Forwarded::replaces`] for a lowercase name that is not (yet) a `HeaderName`.
    fn replaces_name(name: &str) -> bool {
        HeaderName::from_bytes(name.as_bytes()).is_ok_and(|name| Forwarded::replaces(&name))
    }

    /// Puts the lines into `headers` as the codec would write them, for a route whose header
    /// ops or hashing read them. `Host` is left for the target (or a header op) to set.
    pub(crate) fn insert_into(self, headers: &mut HeaderMap) {
        // Room for the five lines at once: a client's head is often a few lines, and growing
        // the map one header at a time rehashes it several times.
        headers.reserve(5);
        headers.remove(header::EXPECT);
        headers.remove(header::HOST);
        headers.insert(&X_FORWARDED_FOR, self.forwarded_for.into_owned());
        headers.insert(&X_FORWARDED_PROTO, self.proto.clone());
        match self.host {
            Some(host) => headers.insert(&X_FORWARDED_HOST, host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
        headers.insert(&X_REQUEST_ID, self.request_id.clone());
        headers.append(&VIA, self.via.clone());
    }
}

/// What every request must pass before anything looks at it: no `CONNECT`, one `Host` on
/// HTTP/1.1, and a path that normalises (which it is, in place: see [`crate::path`]).
fn check_request<B>(request: &mut Request<B>) -> Result<(), Failure> {
    if request.method() == Method::CONNECT {
        return Err(Failure::Connect);
    }
    if request.version() == Version::HTTP_11 {
        let mut hosts = request.headers().get_all(header::HOST).iter();
        if hosts.next().is_none() || hosts.next().is_some() {
            return Err(Failure::BadHost);
        }
    }
    let Some(path) = path::normalize(request.uri().path())? else {
        return Ok(());
    };
    let uri = std::mem::take(request.uri_mut());
    let mut parts = uri.into_parts();
    let path_and_query = match parts.path_and_query.as_ref().and_then(PathAndQuery::query) {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    parts.path_and_query =
        Some(PathAndQuery::try_from(path_and_query).map_err(|e| Failure::BadRequest(e.into()))?);
    *request.uri_mut() = Uri::from_parts(parts).map_err(|e| Failure::BadRequest(e.into()))?;
    Ok(())
}

/// The proxy's body size limit, lowered by the route's own if it has one.
fn body_limit(proxy: Option<u64>, admitted: Option<&Admitted>) -> Option<u64> {
    match admitted.and_then(|a| a.max_body_bytes) {
        Some(route) => Some(proxy.map_or(route, |p| p.min(route))),
        None => proxy,
    }
}

fn failure_target(failure: &Failure) -> Option<&str> {
    match failure {
        Failure::Upstream(error) => error.target(),
        _ => None,
    }
}

/// The client's address appended to any `X-Forwarded-For` it sent.
fn forwarded_for<'a>(headers: &HeaderMap, client_ip: &'a HeaderValue) -> Cow<'a, HeaderValue> {
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if prior.peek().is_none() {
        return Cow::Borrowed(client_ip);
    }
    let mut joined = Vec::with_capacity(64);
    for value in prior {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(client_ip.as_bytes());
    Cow::Owned(HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client_ip.clone()))
}

/// Whether `name` is a hop-by-hop header (or a `Proxy-*` one), which only the proxy may handle.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().len() == name.len() && name.eq_ignore_ascii_case(h.as_str()))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
}

/// [`is_hop_by_hop`] for a name as a map holds it (lowercase): a string match instead of a
/// case-insensitive comparison with each hop-by-hop name, for every header of every answer.
pub(crate) fn is_hop_by_hop_name(name: &HeaderName) -> bool {
    let name = name.as_str();
    hop_by_hop_index(name).is_some() || name.starts_with("proxy-")
}

/// The position in [`HOP_BY_HOP`] of a header name as a map holds it (lowercase): one string
/// match per name instead of a comparison with each hop-by-hop `HeaderName`.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    match name {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "te" => Some(2),
        "trailer" => Some(3),
        "transfer-encoding" => Some(4),
        "upgrade" => Some(5),
        _ => None,
    }
}

/// Which message [`remove_hop_by_hop`] cleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    /// A client's request: besides the hop-by-hop headers, what a client must not send
    /// upstream (see [`is_never_forwarded`]) goes too.
    Request,
    /// An upstream's answer.
    Response,
}

/// Headers a client's request never carries upstream, besides the hop-by-hop ones: the identity
/// the proxy itself asserts (`X-Consumer-Name`, set only after authentication), and
/// `HTTP2-Settings`, which belongs to an h2c upgrade the proxy never passes on (the h2c
/// smuggling class of attacks).
fn is_never_forwarded(name: &str) -> bool {
    name == X_CONSUMER_NAME.as_str() || name == "http2-settings"
}

/// Whether `name`, which contains `_`, becomes a framing, hop-by-hop or identity header when its
/// `_` are read as `-`, as CGI-style servers and some frameworks do (`Content_Length`,
/// `X_Consumer_Name`): such a twin could smuggle what the proxy removes or sets itself.
fn is_underscore_twin(name: &str) -> bool {
    let dashed = name.replace('_', "-");
    hop_by_hop_index(&dashed).is_some()
        || dashed.starts_with("proxy-")
        || is_never_forwarded(&dashed)
        || Forwarded::replaces_name(&dashed)
        || dashed == "content-length"
        || dashed == "forwarded"
        || dashed == "x-real-ip"
}

/// Whether a header that is not one of [`HOP_BY_HOP`] is removed from `message` all the same:
/// `Proxy-*` always, and on a request the names of [`is_never_forwarded`] and
/// [`is_underscore_twin`].
#[inline]
fn is_removed_too(name: &str, message: Message) -> bool {
    name.starts_with("proxy-")
        || (message == Message::Request
            && (is_never_forwarded(name)
                || (name.as_bytes().contains(&b'_') && is_underscore_twin(name))))
}

/// Removes the hop-by-hop headers, and from a request what [`is_never_forwarded`] and
/// [`is_underscore_twin`] name. Allocates only when the message names extra ones.
fn remove_hop_by_hop(headers: &mut HeaderMap, message: Message) {
    // One pass over the names, without hashing, finds which are present (most messages have
    // none, or only `Connection`); only those are then removed.
    let mut present = 0u8;
    let mut others = false;
    for name in headers.keys() {
        let name = name.as_str();
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        } else if is_removed_too(name, message) {
            others = true;
        }
    }
    if present == 0 && !others {
        return;
    }
    let mut extra: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value.to_str().unwrap_or_default().split(',') {
            let token = token.trim();
            if !token.is_empty()
                && !is_hop_by_hop(token)
                && headers.contains_key(token)
                && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
            {
                extra.push(name);
            }
        }
    }
    if others {
        extra.extend(
            headers
                .keys()
                .filter(|name| is_removed_too(name.as_str(), message))
                .cloned(),
        );
    }
    for name in &extra {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret, Upgrade"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "1"),
            ("content-length", "3"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        remove_hop_by_hop(&mut h, Message::Response);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept", "content-length"]);
    }

    #[test]
    fn every_hop_by_hop_header_has_its_index() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i), "{name}");
            assert!(is_hop_by_hop(&name.as_str().to_ascii_uppercase()));
            assert!(is_hop_by_hop_name(name));
        }
        assert_eq!(hop_by_hop_index("x-connection"), None);
        assert!(!is_hop_by_hop("x-te"));
        assert!(is_hop_by_hop("Proxy-Authorization"));
        assert!(is_hop_by_hop_name(&header::PROXY_AUTHORIZATION));
        assert!(is_hop_by_hop_name(&HeaderName::from_static(
            "proxy-connection"
        )));
        assert!(!is_hop_by_hop_name(&header::CONTENT_LENGTH));
        assert!(!is_hop_by_hop_name(&HeaderName::from_static("x-te")));
    }

    #[test]
    fn forwarded_for_appends() {
        let ip = HeaderValue::from_static("10.1.1.1");
        let mut h = HeaderMap::new();
        assert_eq!(*forwarded_for(&h, &ip), "10.1.1.1");
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        assert_eq!(
            *forwarded_for(&h, &ip),
            "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.1.1"
        );
    }
}
