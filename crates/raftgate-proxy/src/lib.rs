//! The data plane of raftgate: serves proxy traffic from the node's local replicated [`State`].
//!
//! [`Proxy::serve`] accepts cleartext connections and [`Proxy::serve_with_tls`] TLS ones too;
//! each request is matched against a [`router::Router`] compiled from the state and forwarded
//! over a pooled keep-alive HTTP/1.1 client to one of the route's service targets, chosen by the
//! service's balancing policy among its healthy targets, with its timeouts and retries (see
//! [`upstream`]). Bodies are streamed both ways.
//!
//! The request path never touches the cluster: a background task recompiles the router (and the
//! TLS certificates) each time the state published on the watch channel changes and swaps it in
//! atomically, so a request only performs a lock-free load of the current router. In-flight
//! requests keep the router they started with. If the channel closes, the last router stays in
//! use.
//!
//! # Protocols
//!
//! - HTTP/1.1 and HTTP/2 on the cleartext listener (HTTP/2 by prior knowledge, "h2c");
//! - on the TLS listener, HTTP/2 or HTTP/1.1 as chosen by ALPN (`h2`, `http/1.1`);
//! - WebSocket and any other HTTP/1.1 `Upgrade`: when the upstream answers `101`, the two
//!   connections are joined and bytes copied both ways until either side closes.
//!
//! # TLS
//!
//! Certificates are the `certificates` of the replicated state, chosen by SNI (exact name first,
//! then a `*.example.com` wildcard covering one label); a certificate that does not load is
//! logged and skipped, a name without a certificate fails the handshake. Changes take effect for
//! new handshakes without a restart. rustls with the ring provider; TLS 1.2 and 1.3.
//!
//! # What the proxy changes on the way
//!
//! (See also [`router`] for matching, precedence and path rewriting.)
//! - hop-by-hop headers are removed both ways: `Connection` and the headers it names,
//!   `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` (an upgrade
//!   request keeps `Connection: upgrade` and `Upgrade`); `Expect` is answered by the proxy
//!   itself;
//! - `Host` becomes the target's `host:port`; `X-Forwarded-For` gets the client address
//!   appended; `X-Forwarded-Proto` is set to `https` on the TLS listener and `http` otherwise,
//!   and `X-Forwarded-Host` to the client's host (both replacing what the client sent);
//! - `X-Request-Id` is kept when the client sent a usable one (printable, at most 128 bytes),
//!   generated otherwise, and sent both upstream and back to the client;
//! - the route's `strip_path` or `rewrite` changes the path, and a target URL with a path
//!   (`http://host:port/base`) has it prepended;
//! - last, the route's `request_headers` changes (remove, then set, then add) apply to the
//!   request sent upstream, and its `response_headers` changes to the upstream's response.
//!   Hop-by-hop headers and `Content-Length` cannot be changed by a route.
//!
//! # Limits
//!
//! [`ProxyConfig`] bounds the request head (bytes and header lines: 431) and the request body
//! (413); its [`Limits`] bound the connections: how many, how long a client may take for its
//! first bytes, TLS handshake or request head, how long an HTTP/2 connection may idle (see
//! [`raftgate_listener`]). An upstream's answer must come within the service's `read_ms`, and
//! then keep coming: a body with no progress for `read_ms` is cut off. A client that breaks
//! off, sends malformed HTTP or TLS, or is too slow is disconnected without affecting other
//! connections.
//!
//! # Metrics
//!
//! Every answer is counted in the node's [`raftgate_metrics::Metrics`] (see
//! [`Proxy::with_metrics`]) by route, service, authenticated consumer and status code, with the
//! time to the response head and the upstream's share of it. A route's handles are resolved at
//! its first request and kept in the compiled route, so a request records without a lock shared
//! with other routes and without allocating; requests that match no route are counted under empty route and
//! service names. The AI gateway's own entrance (`/v1`, prompt APIs' paths) is counted by the AI
//! metrics instead; the routes of AI API versions are counted as routes too.
//!
//! # Failure answers
//!
//! When it cannot forward, the proxy answers with an [`ErrorBody`] JSON: 404 `no_route`,
//! 502 `upstream_unreachable` (connection refused) or `upstream_error` (connection reset or
//! closed early), 504 `upstream_timeout` (a connect, read or total timeout of the service),
//! 503 `no_upstream` (no target) or `no_healthy_upstream` (every target unhealthy or ejected),
//! 400 `bad_request`, 413 `body_too_large`, 431 `headers_too_large` (HTTP/2; HTTP/1 heads that
//! are too large get a bare 431 from the HTTP parser).

#![warn(missing_docs)]

mod ai;
mod client_body;
mod forward;
mod header_ops;
mod observe;
mod request_id;
pub mod router;
mod tls;
mod upgrade;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use raftgate_listener::{Http, Listener};
use raftgate_metrics::Metrics;
use raftgate_model::State;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

pub use forward::ErrorBody;
pub use observe::Observability;
pub use raftgate_listener::Limits;
pub use upstream::HealthView;

use forward::{Forwarder, Peer};
use router::Router;
use tls::Certificates;
pub use tls::TlsSetupError;
use upstream::Upstreams;

/// Tunables of the proxy; `ProxyConfig::default()` suits most deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Connection limits and timeouts of the proxy's listeners: most connections, first bytes
    /// and request heads, idle HTTP/2 connections, drain on shutdown (see
    /// [`raftgate_listener`]).
    pub limits: Limits,
    /// Largest request head accepted, in bytes: for HTTP/1 the request line and headers as
    /// sent (at least 8 KiB whatever is set here), for HTTP/2 the decoded header list as
    /// RFC 9113 counts it. Larger heads get a 431 (HTTP/1) or a stream reset (HTTP/2).
    /// Default 64 KiB.
    pub max_header_bytes: usize,
    /// Most request header lines accepted; more get a 431. Default 100.
    pub max_headers: usize,
    /// Largest request body accepted, in bytes; `None` for no limit. A declared
    /// `Content-Length` above it gets a 413 before anything is forwarded; a chunked body that
    /// grows past it is cut off (the upstream sees an aborted request and the client a 413 if
    /// no response was sent yet). Default `None`: bodies are streamed, so a large one costs no
    /// memory; set a limit when the upstreams cannot cope with large bodies.
    pub max_body_bytes: Option<u64>,
}

/// Hyper's own default number of header lines: keeping it lets hyper parse HTTP/1 heads on
/// the stack.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            limits: Limits::default(),
            max_header_bytes: 64 * 1024,
            max_headers: HYPER_DEFAULT_MAX_HEADERS,
            max_body_bytes: None,
        }
    }
}

/// The proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener handed to [`Proxy::serve`] has no local address.
    #[error(transparent)]
    Listener(#[from] raftgate_listener::ListenError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
}

/// A proxy over the states published on a watch channel (typically `Node::subscribe()`).
#[derive(Debug)]
pub struct Proxy {
    states: watch::Receiver<Arc<State>>,
    config: ProxyConfig,
    upstreams: Upstreams,
    policies: Arc<raftgate_policy::Engine>,
    ai: Option<Arc<raftgate_ai::Gateway>>,
    metrics: Arc<Metrics>,
    observe: Observability,
}

impl Proxy {
    /// A proxy that will route by the current and all future states of `states`.
    pub fn new(states: watch::Receiver<Arc<State>>, config: ProxyConfig) -> Proxy {
        Proxy {
            states,
            config,
            upstreams: Upstreams::new(),
            policies: Arc::new(raftgate_policy::Engine::standalone()),
            ai: None,
            metrics: Arc::new(Metrics::new()),
            observe: Observability::default(),
        }
    }

    /// Writes an access log line for, and traces, the requests `observe` says (neither by
    /// default).
    pub fn with_observability(mut self, observe: Observability) -> Proxy {
        self.observe = observe;
        self
    }

    /// Records requests, latencies and rate-limit refusals in `metrics` — the node's, which
    /// the admin API serves — instead of a registry of the proxy's own, and makes its upstream
    /// target health gauge read this proxy's health view.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Proxy {
        let health = self.upstreams.health_view();
        metrics.follow_upstream_health(move || health.all());
        self.metrics = metrics;
        self
    }

    /// Serves the unified AI API (`/v1/chat/completions`, `/v1/embeddings`, `/v1/models`,
    /// `/v1/messages`) with `gateway`, for callers with a consumer key, before routing.
    pub fn with_ai(mut self, gateway: Arc<raftgate_ai::Gateway>) -> Proxy {
        self.ai = Some(gateway);
        self
    }

    /// Enforces the routes' policies with `engine` — the node's, whose rate-limit counters
    /// its sync task reports to the cluster — instead of a standalone engine that counts
    /// only on this proxy.
    pub fn with_policies(mut self, engine: Arc<raftgate_policy::Engine>) -> Proxy {
        self.policies = engine;
        self
    }

    /// A handle on this node's view of its upstream targets' health, for the admin API: take
    /// it before serving; it stays current while the proxy serves.
    pub fn health(&self) -> HealthView {
        self.upstreams.health_view()
    }

    /// Serves cleartext connections from `listener` until `shutdown` completes, then stops
    /// accepting, lets open connections finish their in-flight requests for up to
    /// [`ProxyConfig::drain_timeout`], closes the rest and returns `Ok(())`. Failing accepts
    /// and broken client connections are logged and do not stop the proxy.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProxyError> {
        self.run(listener, None, shutdown).await
    }

    /// Like [`Proxy::serve`], and also serves TLS connections from `tls_listener`, terminated
    /// with the certificates of the replicated state (see [TLS](crate#tls)); both listeners
    /// share the routes, the upstream connections and the shutdown.
    pub async fn serve_with_tls(
        self,
        listener: TcpListener,
        tls_listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProxyError> {
        self.run(listener, Some(tls_listener), shutdown).await
    }

    async fn run(
        mut self,
        listener: TcpListener,
        tls_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProxyError> {
        let state = self.states.borrow_and_update().clone();
        let certificates = tls_listener
            .as_ref()
            .map(|_| Arc::new(Certificates::new(&state.certificates)));
        let mut listeners = vec![Listener {
            name: "proxy",
            socket: listener,
            tls: None,
            refusals: self.metrics.connection_refusals("proxy"),
        }];
        if let (Some(socket), Some(certificates)) = (tls_listener, &certificates) {
            listeners.push(Listener {
                name: "proxy_tls",
                socket,
                tls: Some(TlsAcceptor::from(certificates.server_config()?)),
                refusals: self.metrics.connection_refusals("proxy_tls"),
            });
        }
        self.policies.refresh(&state);
        let router = Router::compile(&state, &self.upstreams.sync(&state), &self.metrics);
        info!(
            routes = router.route_count(),
            services = router.service_count(),
            applied_index = state.applied_index,
            "proxy routes compiled"
        );
        let forwarder = Arc::new(
            Forwarder::new(router, &self.config, self.policies, self.metrics)
                .with_ai(self.ai)
                .with_observability(self.observe),
        );
        let reload = tokio::spawn(reload(
            self.states,
            forwarder.clone(),
            certificates,
            self.upstreams,
        ));
        let service = move |peer: SocketAddr, tls: bool| {
            let context = Arc::new(ConnectionContext {
                forwarder: forwarder.clone(),
                peer: Peer::new(peer, tls),
            });
            service_fn(move |request| {
                let context = context.clone();
                async move { context.forwarder.handle(&context.peer, request).await }
            })
        };
        let served = raftgate_listener::serve(
            listeners,
            http_settings(&self.config),
            self.config.limits,
            service,
            shutdown,
        )
        .await;
        reload.abort();
        info!("proxy stopped");
        Ok(served?)
    }
}

/// The HTTP/1 and HTTP/2 server settings, with the configured limits.
fn http_settings(config: &ProxyConfig) -> Http {
    let mut http = Http::default();
    // hyper needs at least 8 KiB; the buffer holds the request head while it is parsed.
    http.h1.max_buf_size(config.max_header_bytes.max(8192));
    if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        // Any other value makes hyper allocate the header array per request.
        http.h1.max_headers(config.max_headers);
    }
    http.h2
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    http
}

/// Recompiles the router each time the routes or services change, the TLS certificates
/// (when TLS is served) each time they change, and brings the upstream services in line with
/// the services and registered instances. Owns the upstreams: ending it ends their background
/// tasks.
async fn reload(
    mut states: watch::Receiver<Arc<State>>,
    forwarder: Arc<Forwarder>,
    certificates: Option<Arc<Certificates>>,
    mut upstreams: Upstreams,
) {
    while states.changed().await.is_ok() {
        let state = states.borrow_and_update().clone();
        if let Some(certificates) = &certificates {
            certificates.reload(&state.certificates);
        }
        let services = upstreams.sync(&state);
        forwarder.policies().refresh(&state);
        if forwarder.router().load().is_compiled_from(&state) {
            continue;
        }
        let router = Router::compile(&state, &services, forwarder.metrics());
        info!(
            routes = router.route_count(),
            services = router.service_count(),
            applied_index = state.applied_index,
            "proxy routes reloaded"
        );
        forwarder.router().store(Arc::new(router));
    }
    debug!("state channel closed; the proxy keeps its last routes");
}

/// What every request of one connection shares; one `Arc` clone per request.
struct ConnectionContext {
    forwarder: Arc<Forwarder>,
    peer: Peer,
}
