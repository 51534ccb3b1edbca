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
//! [`ProxyConfig`] bounds the request head (bytes and header lines: 431), the request body
//! (413) and the time a client may take for its TLS handshake or request head. A client that
//! breaks off, sends malformed HTTP or TLS, or is too slow is disconnected without affecting
//! other connections.
//!
//! # Metrics
//!
//! Every answer is counted in the node's [`raftgate_metrics::Metrics`] (see
//! [`Proxy::with_metrics`]) by route, service, authenticated consumer and status code, with the
//! time to the response head and the upstream's share of it. A route's handles are resolved at
//! its first request and kept in the compiled route, so a request records without a lock shared
//! with other routes and without allocating; requests that match no route are counted under empty route and
//! service names. The AI gateway's API is counted by the AI metrics instead.
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
mod request_id;
pub mod router;
mod tls;
mod upgrade;
pub mod upstream;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::task::AtomicWaker;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use raftgate_metrics::Metrics;
use raftgate_model::State;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use forward::ErrorBody;
pub use upstream::HealthView;

use forward::{Forwarder, Peer};
use router::Router;
use tls::Certificates;
pub use tls::TlsSetupError;
use upstream::Upstreams;

/// Pause after a failed `accept` (for example when out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Tunables of the proxy; `ProxyConfig::default()` suits most deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// On shutdown, how long open connections get to finish their in-flight requests before
    /// they are closed. Default 10 s.
    pub drain_timeout: Duration,
    /// How long a client may take to complete a TLS handshake or to send an HTTP/1 request
    /// head; past it the connection is closed (against slow or idle clients). Default 30 s.
    pub header_read_timeout: Duration,
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
            drain_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
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
    #[error("the proxy listener has no local address ({0}); pass a bound TcpListener")]
    Listener(#[source] std::io::Error),
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
}

/// The connection settings shared by every connection.
struct Settings {
    http: auto::Builder<TokioExecutor>,
    /// Present when a TLS listener is served.
    tls: Option<TlsAcceptor>,
    header_read_timeout: Duration,
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
        }
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
        let addr = listener.local_addr().map_err(ProxyError::Listener)?;
        let tls_addr = tls_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(ProxyError::Listener)?;
        let state = self.states.borrow_and_update().clone();
        let certificates = tls_listener
            .as_ref()
            .map(|_| Arc::new(Certificates::new(&state.certificates)));
        let tls = match &certificates {
            Some(c) => Some(TlsAcceptor::from(c.server_config()?)),
            None => None,
        };
        self.policies.refresh(&state);
        let router = Router::compile(&state, &self.upstreams.sync(&state), &self.metrics);
        info!(%addr, tls_addr = ?tls_addr, routes = router.route_count(),
            services = router.service_count(), applied_index = state.applied_index,
            "proxy listening");
        let forwarder = Arc::new(
            Forwarder::new(router, &self.config, self.policies, self.metrics).with_ai(self.ai),
        );
        let reload = tokio::spawn(reload(
            self.states,
            forwarder.clone(),
            certificates,
            self.upstreams,
        ));

        let settings = Arc::new(Settings {
            http: http_builder(&self.config),
            tls,
            header_read_timeout: self.config.header_read_timeout,
        });
        let mut connections = JoinSet::new();
        // Each open connection's drain signal, by task.
        let mut drains = HashMap::new();

        tokio::pin!(shutdown);
        loop {
            let (accepted, tls) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(ended) = connections.join_next_with_id(), if !connections.is_empty() => {
                    drains.remove(&ended.map_or_else(|e| e.id(), |(id, ())| id));
                    continue;
                }
                accepted = listener.accept() => (accepted, false),
                accepted = accept(tls_listener.as_ref()) => (accepted, true),
            };
            match accepted {
                Ok((stream, peer)) => {
                    let drain = Arc::new(Drain::default());
                    let task = connections.spawn(serve_connection(
                        settings.clone(),
                        forwarder.clone(),
                        stream,
                        peer,
                        tls,
                        drain.clone(),
                    ));
                    drains.insert(task.id(), drain);
                }
                Err(error) => {
                    warn!(%error, tls, "accepting a proxy connection failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }

        drop(listener);
        drop(tls_listener);
        reload.abort();
        for drain in drains.values() {
            drain.request();
        }
        info!(
            open = connections.len(),
            "proxy stopped accepting; draining connections"
        );
        let drained = tokio::time::timeout(self.config.drain_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                open = connections.len(),
                "proxy connections still busy after the drain timeout; closing them"
            );
        }
        connections.shutdown().await;
        info!("proxy stopped");
        Ok(())
    }
}

/// Accepts from `listener`, or waits forever when there is none.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// The HTTP/1 and HTTP/2 server settings, with the configured limits.
fn http_builder(config: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    // The timer enables HTTP/1's header read timeout against slow clients.
    let mut h1 = http.http1();
    h1.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        // hyper needs at least 8 KiB; the buffer holds the request head while it is parsed.
        .max_buf_size(config.max_header_bytes.max(8192));
    if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        // Any other value makes hyper allocate the header array per request.
        h1.max_headers(config.max_headers);
    }
    http.http2()
        .timer(TokioTimer::new())
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

/// Tells one connection to finish its in-flight requests and close. The accept loop, which
/// knows every connection, raises all of them at shutdown; a connection checks its own with an
/// atomic load whenever it is polled. (A channel shared by all connections would take its lock
/// on every poll of every connection.)
#[derive(Default)]
struct Drain {
    requested: AtomicBool,
    waker: AtomicWaker,
}

impl Drain {
    fn request(&self) {
        self.requested.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Completes once the drain is requested.
    async fn requested(&self) {
        std::future::poll_fn(|cx| {
            if self.requested.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.requested.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// What every request of one connection shares; one `Arc` clone per request.
struct ConnectionContext {
    forwarder: Arc<Forwarder>,
    peer: Peer,
}

/// Serves one accepted connection: the TLS handshake first when `tls`, then HTTP until the
/// client leaves or the proxy drains.
async fn serve_connection(
    settings: Arc<Settings>,
    forwarder: Arc<Forwarder>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: bool,
    drain: Arc<Drain>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY on a proxy connection");
    }
    let context = ConnectionContext {
        forwarder,
        peer: Peer::new(peer, tls),
    };
    match (&settings.tls, tls) {
        (Some(acceptor), true) => {
            let handshake = tokio::select! {
                handshake = tokio::time::timeout(
                    settings.header_read_timeout,
                    acceptor.accept(stream),
                ) => handshake,
                () = drain.requested() => return,
            };
            match handshake {
                Ok(Ok(stream)) => serve_http(&settings, context, stream, &drain).await,
                Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        }
        _ => serve_http(&settings, context, stream, &drain).await,
    }
}

/// Serves HTTP/1.1 (with upgrades) or HTTP/2 on an established connection.
async fn serve_http<I>(settings: &Settings, context: ConnectionContext, io: I, drain: &Drain)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = context.peer.addr;
    let context = Arc::new(context);
    let service = service_fn(move |request| {
        let context = context.clone();
        async move { context.forwarder.handle(&context.peer, request).await }
    });
    let connection = settings
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        biased;
        result = connection.as_mut() => result,
        () = drain.requested() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        debug!(peer = %addr, %error, "proxy connection ended with an error");
    }
}
