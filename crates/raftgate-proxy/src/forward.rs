//! Forwarding one request: route lookup, header rewriting, the upstream call, and the JSON
//! answers the proxy gives when it cannot forward.
//!
//! Upstream requests always use HTTP/1.1 on a pooled keep-alive client; request and response
//! bodies are streamed through without buffering. Per-request failures are logged at `debug`
//! level only, so that a failing upstream under load cannot turn logging into the bottleneck.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::request_id::{RequestIds, X_REQUEST_ID};
use crate::router::{Route, Router};

/// Body of every response the proxy sends: the upstream's, streamed, or a short error body.
pub(crate) type Body = Either<Incoming, Full<Bytes>>;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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
    /// Stable machine-readable code: `no_route` (404), `bad_request` (400), `no_upstream` (503),
    /// `upstream_unreachable` (502), `upstream_error` (502) or `upstream_timeout` (504).
    pub error: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The request's id, as sent upstream and returned in the `X-Request-Id` header; quote it
    /// when reporting a problem.
    pub request_id: String,
}

/// Why a request could not be forwarded. The messages are shown to clients, so they name the
/// service but never an internal address.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(
        "no route matches this request; check its host, path and method against the routes configured with the admin API"
    )]
    NoRoute,
    #[error("the request cannot be forwarded: {0}")]
    BadRequest(#[source] http::Error),
    #[error(
        "service '{service}' has no target in rotation; give one of its targets a weight above 0"
    )]
    NoTarget { service: Arc<str> },
    #[error("service '{service}' is unreachable: its upstream refused the connection")]
    Unreachable {
        service: Arc<str>,
        target: Arc<str>,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("service '{service}' failed: its upstream closed or broke the connection")]
    UpstreamError {
        service: Arc<str>,
        target: Arc<str>,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("service '{service}' did not answer within {timeout:?}")]
    Timeout {
        service: Arc<str>,
        target: Arc<str>,
        timeout: Duration,
    },
}

impl Failure {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Failure::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            Failure::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Failure::NoTarget { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_upstream"),
            Failure::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
            Failure::UpstreamError { .. } => (StatusCode::BAD_GATEWAY, "upstream_error"),
            Failure::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        }
    }

    fn into_response(self, request_id: &HeaderValue) -> Response<Body> {
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            error: code.into(),
            message: self.to_string(),
            request_id: request_id.to_str().unwrap_or_default().into(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(json))));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// A request ready for its upstream, where it goes, and its route when the route changes
/// response headers.
type Prepared = (Request<Incoming>, Upstream, Option<Arc<Route>>);

/// Which upstream a request went to, for error messages and logs.
struct Upstream {
    service: Arc<str>,
    target: Arc<str>,
}

/// Everything a request needs, shared by all connections.
pub(crate) struct Forwarder {
    router: ArcSwap<Router>,
    client: Client<HttpConnector, Incoming>,
    ids: RequestIds,
    upstream_timeout: Duration,
}

impl Forwarder {
    pub(crate) fn new(router: Router, upstream_timeout: Duration) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Forwarder {
            router: ArcSwap::from_pointee(router),
            client,
            ids: RequestIds::new(),
            upstream_timeout,
        }
    }

    /// The router in use; the reload task swaps it.
    pub(crate) fn router(&self) -> &ArcSwap<Router> {
        &self.router
    }

    /// Serves one request: never fails, a problem becomes a JSON error answer.
    pub(crate) async fn handle(
        &self,
        client_ip: &HeaderValue,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let request_id = self.ids.for_request(request.headers());
        let (result, response_ops) = match self.upstream_request(request, client_ip, &request_id) {
            Ok((request, upstream, response_ops)) => {
                (self.send(request, upstream).await, response_ops)
            }
            Err(failure) => (Err(failure), None),
        };
        let mut response = match result {
            Ok(response) => {
                let mut response = response.map(Either::Left);
                remove_hop_by_hop(response.headers_mut());
                if let Some(route) = response_ops {
                    route.response_headers.apply(response.headers_mut());
                }
                response
            }
            Err(failure) => {
                debug!(request_id = ?request_id, error = %failure,
                    source = ?std::error::Error::source(&failure), upstream = failure_target(&failure),
                    "request not forwarded");
                failure.into_response(&request_id)
            }
        };
        response.headers_mut().insert(&X_REQUEST_ID, request_id);
        Ok(response)
    }

    /// Routes `request` and rewrites it for its upstream; also returns the route when it has
    /// response header changes. Only reads the current router: no lock, no I/O.
    fn upstream_request(
        &self,
        request: Request<Incoming>,
        client_ip: &HeaderValue,
        request_id: &HeaderValue,
    ) -> Result<Prepared, Failure> {
        let (mut parts, body) = request.into_parts();
        // HTTP/2 and absolute-form HTTP/1 carry the host in the URI, origin-form HTTP/1 in `Host`.
        let original_host = match parts.uri.authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => parts.headers.get(header::HOST).cloned(),
        };
        let router = self.router.load();
        let host = original_host.as_ref().and_then(|h| h.to_str().ok());
        let matched = router
            .find(host, parts.uri.path(), &parts.method, &parts.headers)
            .ok_or(Failure::NoRoute)?;
        let service = &matched.route.service;
        let target = service.next_target().ok_or_else(|| Failure::NoTarget {
            service: service.name.clone(),
        })?;
        parts.uri = target
            .upstream_uri(
                &parts.uri,
                matched.rewritten_path(parts.uri.path()).as_deref(),
            )
            .map_err(Failure::BadRequest)?;
        parts.version = Version::HTTP_11;

        let headers = &mut parts.headers;
        remove_hop_by_hop(headers);
        // The proxy answers `Expect: 100-continue` itself and streams the body anyway.
        headers.remove(header::EXPECT);
        let forwarded_for = forwarded_for(headers, client_ip);
        headers.insert(&X_FORWARDED_FOR, forwarded_for);
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        match original_host {
            Some(host) => headers.insert(&X_FORWARDED_HOST, host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
        headers.insert(header::HOST, target.host_header().clone());
        headers.insert(&X_REQUEST_ID, request_id.clone());
        matched.route.request_headers.apply(headers);

        let upstream = Upstream {
            service: service.name.clone(),
            target: target.url.clone(),
        };
        let response_ops =
            (!matched.route.response_headers.is_empty()).then(|| matched.route.clone());
        Ok((Request::from_parts(parts, body), upstream, response_ops))
    }

    async fn send(
        &self,
        request: Request<Incoming>,
        upstream: Upstream,
    ) -> Result<Response<Incoming>, Failure> {
        let Upstream { service, target } = upstream;
        match tokio::time::timeout(self.upstream_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(source)) if source.is_connect() => Err(Failure::Unreachable {
                service,
                target,
                source,
            }),
            Ok(Err(source)) => Err(Failure::UpstreamError {
                service,
                target,
                source,
            }),
            Err(_) => Err(Failure::Timeout {
                service,
                target,
                timeout: self.upstream_timeout,
            }),
        }
    }
}

fn failure_target(failure: &Failure) -> Option<&str> {
    match failure {
        Failure::Unreachable { target, .. }
        | Failure::UpstreamError { target, .. }
        | Failure::Timeout { target, .. } => Some(target),
        _ => None,
    }
}

/// The client's address appended to any `X-Forwarded-For` it sent.
fn forwarded_for(headers: &HeaderMap, client_ip: &HeaderValue) -> HeaderValue {
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if prior.peek().is_none() {
        return client_ip.clone();
    }
    let mut joined = Vec::with_capacity(64);
    for value in prior {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(client_ip.as_bytes());
    HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client_ip.clone())
}

/// Whether `name` is a hop-by-hop header (or a `Proxy-*` one), which only the proxy may handle.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_str()))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
}

/// Removes the hop-by-hop headers. Allocates only when the message names extra ones.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
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
    extra.extend(
        headers
            .keys()
            .filter(|name| name.as_str().starts_with("proxy-"))
            .cloned(),
    );
    for name in extra.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
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
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept", "content-length"]);
    }

    #[test]
    fn forwarded_for_appends() {
        let ip = HeaderValue::from_static("10.1.1.1");
        let mut h = HeaderMap::new();
        assert_eq!(forwarded_for(&h, &ip), "10.1.1.1");
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        assert_eq!(
            forwarded_for(&h, &ip),
            "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.1.1"
        );
    }
}
