//! The data plane of raftgate: serves proxy traffic from the node's local replicated [`State`].
//!
//! [`Proxy::serve`] accepts HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) connections, matches
//! each request against a [`router::Router`] compiled from the state, and forwards it over a
//! pooled keep-alive HTTP/1.1 client to one of the route's service targets, picked by weighted
//! round-robin. Bodies are streamed both ways.
//!
//! The request path never touches the cluster: a background task recompiles the router each
//! time the state published on the watch channel changes and swaps it in atomically, so a
//! request only performs a lock-free load of the current router. If the channel closes, the last
//! router stays in use.
//!
//! What the proxy changes on the way (see also [`router`] for matching rules):
//! - hop-by-hop headers are removed both ways: `Connection` and the headers it names,
//!   `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` (so protocol
//!   upgrades such as WebSocket are not proxied); `Expect` is answered by the proxy itself;
//! - `Host` becomes the target's `host:port`; `X-Forwarded-For` gets the client address
//!   appended; `X-Forwarded-Proto` is set to `http` and `X-Forwarded-Host` to the client's host
//!   (both replacing what the client sent);
//! - `X-Request-Id` is kept when the client sent a usable one (printable, at most 128 bytes),
//!   generated otherwise, and sent both upstream and back to the client;
//! - with `strip_path`, the matched prefix is removed (an empty remainder becomes `/`); a target
//!   URL with a path (`http://host:port/base`) has it prepended.
//!
//! When it cannot forward, the proxy answers with an [`ErrorBody`] JSON: 404 `no_route`,
//! 502 `upstream_unreachable` (connection refused) or `upstream_error` (connection reset or
//! closed early), 504 `upstream_timeout` (no response head within
//! [`ProxyConfig::upstream_timeout`]), 503 `no_upstream`, 400 `bad_request`.

#![warn(missing_docs)]

mod forward;
mod header_ops;
mod request_id;
pub mod router;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use raftgate_model::State;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use forward::ErrorBody;

use forward::Forwarder;
use router::Router;

/// Pause after a failed `accept` (for example when out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Tunables of the proxy; `ProxyConfig::default()` suits most deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// How long an upstream may take to send its response head (the body may then take as
    /// long as it needs); past it the client gets a 504. Default 60 s.
    pub upstream_timeout: Duration,
    /// On shutdown, how long open connections get to finish their in-flight requests before
    /// they are closed. Default 10 s.
    pub drain_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            upstream_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listener handed to [`Proxy::serve`] has no local address.
    #[error("the proxy listener has no local address ({0}); pass a bound TcpListener")]
    Listener(#[source] std::io::Error),
}

/// A proxy over the states published on a watch channel (typically `Node::subscribe()`).
#[derive(Debug)]
pub struct Proxy {
    states: watch::Receiver<Arc<State>>,
    config: ProxyConfig,
}

impl Proxy {
    /// A proxy that will route by the current and all future states of `states`.
    pub fn new(states: watch::Receiver<Arc<State>>, config: ProxyConfig) -> Proxy {
        Proxy { states, config }
    }

    /// Serves connections from `listener` until `shutdown` completes, then stops accepting,
    /// lets open connections finish their in-flight requests for up to
    /// [`ProxyConfig::drain_timeout`], closes the rest and returns `Ok(())`. Failing accepts
    /// and broken client connections are logged and do not stop the proxy.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProxyError> {
        let addr = listener.local_addr().map_err(ProxyError::Listener)?;
        let state = self.states.borrow_and_update().clone();
        let router = Router::compile(&state);
        info!(%addr, routes = router.route_count(), services = router.service_count(),
            applied_index = state.applied_index, "proxy listening");
        let forwarder = Arc::new(Forwarder::new(router, self.config.upstream_timeout));
        let reload = tokio::spawn(reload(self.states, forwarder.clone()));

        let mut http = auto::Builder::new(TokioExecutor::new());
        // The timer enables HTTP/1's header read timeout (30 s) against slow clients.
        http.http1().timer(TokioTimer::new());
        http.http2().timer(TokioTimer::new());
        let http = Arc::new(http);
        let (stop, stopped) = watch::channel(false);
        let mut connections = JoinSet::new();

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(
                            http.clone(),
                            forwarder.clone(),
                            stream,
                            peer,
                            stopped.clone(),
                        ));
                    }
                    Err(error) => {
                        warn!(%error, "accepting a proxy connection failed; retrying");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }

        drop(listener);
        reload.abort();
        stop.send_replace(true);
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

/// Recompiles the router each time the routes or services change.
async fn reload(mut states: watch::Receiver<Arc<State>>, forwarder: Arc<Forwarder>) {
    while states.changed().await.is_ok() {
        let state = states.borrow_and_update().clone();
        if forwarder.router().load().is_compiled_from(&state) {
            continue;
        }
        let router = Router::compile(&state);
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
    client_ip: HeaderValue,
}

async fn serve_connection(
    http: Arc<auto::Builder<TokioExecutor>>,
    forwarder: Arc<Forwarder>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY on a proxy connection");
    }
    let context = Arc::new(ConnectionContext {
        forwarder,
        client_ip: HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
    });
    let service = service_fn(move |request| {
        let context = context.clone();
        async move { context.forwarder.handle(&context.client_ip, request).await }
    });
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        // The returned guard is not `Send`: drop it before awaiting again.
        () = async { drop(stop.wait_for(|stopped| *stopped).await) } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        debug!(%peer, %error, "proxy connection ended with an error");
    }
}
