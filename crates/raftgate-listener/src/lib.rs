//! Accepting client connections — the proxy's listeners and the admin API's — with the limits
//! every listener facing clients needs, so that idle, slow or numerous connections cannot hold
//! a node's memory and file descriptors.
//!
//! # Limits ([`Limits`])
//!
//! - **Connections**: at most `max_connections` open at once per listener. One more is closed
//!   as soon as it is accepted and counted in `raftgate_connections_refused_total{listener}`.
//! - **First bytes and request heads**: a cleartext connection must send its first bytes, and a
//!   TLS connection complete its handshake, within `header_timeout`; an HTTP/1.1 request head
//!   must then arrive within `header_timeout` too. hyper counts the wait for the next head from
//!   the end of the previous answer, so this also bounds how long an HTTP/1.1 keep-alive
//!   connection may sit idle between requests (nginx has `client_header_timeout` and
//!   `keepalive_timeout` for these).
//! - **Idle HTTP/2**: an HTTP/2 connection on which no request started and none was in flight
//!   for `idle_timeout` is closed gracefully (`GOAWAY`), as nginx's `keepalive_timeout` closes
//!   idle HTTP/2 connections. A response body still streaming does not count as in flight: it
//!   keeps going, the `GOAWAY` only stops new requests.
//! - **Shutdown**: when the shutdown future completes, listeners stop accepting and connections
//!   are asked to finish their in-flight requests (HTTP/1.1 closes after the current answer,
//!   HTTP/2 sends `GOAWAY`); after `drain_timeout` the rest are closed.
//!
//! Request bodies and upstream answers have their own timeouts where they are read (the proxy's
//! services).
//!
//! # Protocols
//!
//! A cleartext connection speaks HTTP/2 when it starts with the HTTP/2 connection preface
//! (prior knowledge, "h2c"), HTTP/1.1 otherwise — with upgrades (WebSocket) left to the
//! service. A TLS connection speaks what ALPN chose: `h2`, or HTTP/1.1 when ALPN chose
//! `http/1.1` or nothing.
//!
//! # Cost
//!
//! Per connection: one `peek` of its first bytes (cleartext), one task, one drain flag. Per
//! request: nothing on HTTP/1.1; on HTTP/2 three relaxed atomic operations (the idle check),
//! and one timer per connection that wakes four times per `idle_timeout`.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use raftgate_metrics::Refusals;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// Pause after a failed `accept` (for example when out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// The HTTP/2 connection preface (RFC 9113 §3.4) a prior-knowledge client starts with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How often a cleartext connection that sent only part of the HTTP/2 preface is looked at
/// again (its bytes are peeked, not read, so the socket stays readable and cannot be waited on).
const PARTIAL_PREFACE_POLL: Duration = Duration::from_millis(5);
/// Checks of an HTTP/2 connection's activity per `idle_timeout`.
const IDLE_CHECKS: u32 = 4;

/// What bounds the connections of a listener; see the [crate documentation](crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// First bytes or TLS handshake, then each HTTP/1.1 request head (and so the keep-alive
    /// wait between requests). Default 30 s.
    pub header_timeout: Duration,
    /// An HTTP/2 connection without requests for this long is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// Most open connections per listener. Default 16,384.
    pub max_connections: usize,
    /// On shutdown, how long open connections get to finish their in-flight requests.
    /// Default 10 s.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 16_384,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// One listening socket.
pub struct Listener {
    /// Its name in logs and in `raftgate_connections_refused_total{listener}`.
    pub name: &'static str,
    /// The bound socket.
    pub socket: TcpListener,
    /// Terminates TLS on its connections when given.
    pub tls: Option<TlsAcceptor>,
    /// Counts the connections refused because it was full.
    pub refusals: Refusals,
}

/// The HTTP/1.1 and HTTP/2 server settings connections are served with (header sizes and
/// counts, for instance). The listener adds its timers and [`Limits::header_timeout`].
#[derive(Clone, Debug)]
pub struct Http {
    /// HTTP/1.1 settings.
    pub h1: http1::Builder,
    /// HTTP/2 settings.
    pub h2: http2::Builder<TokioExecutor>,
}

impl Default for Http {
    fn default() -> Http {
        Http {
            h1: http1::Builder::new(),
            h2: http2::Builder::new(TokioExecutor::new()),
        }
    }
}

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// What serves the requests of one connection: a hyper service that never fails (errors are
/// answers), whose futures and bodies can move between threads.
pub trait ConnectionService:
    Service<
        Request<Incoming>,
        Response = Response<Self::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
    /// The body of its answers.
    type Body: Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static;
}

impl<S, B> ConnectionService for S
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Body = B;
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The socket has no local address.
    #[error("the {name} listener has no local address ({source}); pass a bound TcpListener")]
    Address {
        /// The listener's name.
        name: &'static str,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// Serves the connections of every listener with a service made by `service` for each
/// (`service(client address, over TLS)`), until `shutdown` completes; then drains them (see
/// [`Limits::drain_timeout`]) and returns. Failing accepts and broken connections are logged
/// and do not stop a listener.
pub async fn serve<F, S>(
    listeners: Vec<Listener>,
    http: Http,
    limits: Limits,
    service: F,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ListenError>
where
    F: Fn(SocketAddr, bool) -> S + Send + Sync + 'static,
    S: ConnectionService,
{
    for listener in &listeners {
        let addr = listener
            .socket
            .local_addr()
            .map_err(|source| ListenError::Address {
                name: listener.name,
                source,
            })?;
        info!(listener = listener.name, %addr, tls = listener.tls.is_some(), "listening");
    }
    let mut http = http;
    http.h1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    http.h2.timer(TokioTimer::new());
    let shared = Arc::new(Shared {
        http,
        limits,
        service,
    });
    let (stop, stopped) = watch::channel(false);
    let mut loops = JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(listener, shared.clone(), stopped.clone()));
    }
    shutdown.await;
    let _ = stop.send(true);
    while loops.join_next().await.is_some() {}
    Ok(())
}

/// What every connection of every listener shares.
struct Shared<F> {
    http: Http,
    limits: Limits,
    service: F,
}

/// Accepts connections on one listener until `stopped` turns true, then drains them.
async fn accept_loop<F, S>(
    listener: Listener,
    shared: Arc<Shared<F>>,
    mut stopped: watch::Receiver<bool>,
) where
    F: Fn(SocketAddr, bool) -> S + Send + Sync + 'static,
    S: ConnectionService,
{
    let name = listener.name;
    let mut connections = JoinSet::new();
    // Each open connection's drain signal, by task.
    let mut drains = HashMap::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopped.wait_for(|s| *s) => break,
            Some(ended) = connections.join_next_with_id(), if !connections.is_empty() => {
                drains.remove(&ended.map_or_else(|e| e.id(), |(id, ())| id));
                continue;
            }
            accepted = listener.socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) if connections.len() >= shared.limits.max_connections => {
                listener.refusals.refused();
                debug!(listener = name, "listener full; connection closed");
                drop(stream);
            }
            Ok((stream, peer)) => {
                let drain = Arc::new(Drain::default());
                let task = connections.spawn(connection(
                    shared.clone(),
                    listener.tls.clone(),
                    stream,
                    peer,
                    drain.clone(),
                ));
                drains.insert(task.id(), drain);
            }
            Err(error) => {
                warn!(listener = name, %error, "accepting a connection failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener.socket);
    for drain in drains.values() {
        drain.request();
    }
    info!(
        listener = name,
        open = connections.len(),
        "stopped accepting; draining connections"
    );
    let drained = tokio::time::timeout(shared.limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            listener = name,
            open = connections.len(),
            "connections still busy after the drain timeout; closing them"
        );
    }
    connections.shutdown().await;
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

/// Serves one accepted connection: the TLS handshake or the protocol sniff first, within the
/// header timeout, then HTTP until the client leaves, idles out or the listener drains.
async fn connection<F, S>(
    shared: Arc<Shared<F>>,
    tls: Option<TlsAcceptor>,
    stream: TcpStream,
    peer: SocketAddr,
    drain: Arc<Drain>,
) where
    F: Fn(SocketAddr, bool) -> S + Send + Sync + 'static,
    S: ConnectionService,
{
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY on a client connection");
    }
    let header_timeout = shared.limits.header_timeout;
    let service = (shared.service)(peer, tls.is_some());
    match tls {
        Some(acceptor) => {
            let handshake = tokio::select! {
                handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream)) => handshake,
                () = drain.requested() => return,
            };
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            let protocol = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            serve_http(&shared, protocol, stream, service, &drain, peer).await;
        }
        None => {
            let sniffed = tokio::select! {
                sniffed = tokio::time::timeout(header_timeout, sniff(&stream)) => sniffed,
                () = drain.requested() => return,
            };
            let protocol = match sniffed {
                Ok(Ok(Some(protocol))) => protocol,
                Ok(Ok(None)) => return,
                Ok(Err(error)) => return debug!(%peer, %error, "reading a new connection failed"),
                Err(_) => return debug!(%peer, "no request within the header timeout; closed"),
            };
            serve_http(&shared, protocol, stream, service, &drain, peer).await;
        }
    }
}

/// Which protocol a cleartext connection speaks, from its first bytes (peeked, not consumed);
/// `None` when it closed without sending any.
async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        if first[..n] != H2_PREFACE[..n] {
            return Ok(Some(Protocol::Http1));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(Protocol::Http2));
        }
        tokio::time::sleep(PARTIAL_PREFACE_POLL).await;
    }
}

/// Serves HTTP on an established connection until it ends, draining it when asked.
async fn serve_http<F, S, I>(
    shared: &Shared<F>,
    protocol: Protocol,
    io: I,
    service: S,
    drain: &Drain,
    peer: SocketAddr,
) where
    S: ConnectionService,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let result = match protocol {
        Protocol::Http1 => {
            let connection = shared.http.h1.serve_connection(io, service).with_upgrades();
            drive(
                connection,
                drain,
                std::future::pending(),
                shared.limits.header_timeout,
            )
            .await
        }
        Protocol::Http2 => {
            let activity = Arc::new(Activity::default());
            let service = Tracked {
                inner: service,
                activity: activity.clone(),
            };
            let connection = shared.http.h2.serve_connection(io, service);
            drive(
                connection,
                drain,
                idle(&activity, shared.limits.idle_timeout),
                shared.limits.header_timeout,
            )
            .await
        }
    };
    if let Err(error) = result {
        debug!(%peer, %error, "client connection ended with an error");
    }
}

/// A connection that can be asked to finish what it is doing and close.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, B, E> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// Runs `connection` to its end; once a drain is requested or `idle` completes, asks it to
/// finish gracefully and waits for that. After `idle`, a connection that does not finish
/// within `grace` is closed: HTTP/2's graceful close waits for the client to answer a `PING`,
/// which a client that never reads would never do.
async fn drive<C: Graceful>(
    connection: C,
    drain: &Drain,
    idle: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), hyper::Error> {
    tokio::pin!(connection);
    tokio::select! {
        biased;
        result = connection.as_mut() => result,
        () = drain.requested() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = idle => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(grace, connection).await.unwrap_or(Ok(()))
        }
    }
}

/// The requests of one HTTP/2 connection: how many started, and how many are in flight.
#[derive(Debug, Default)]
struct Activity {
    started: AtomicU64,
    in_flight: AtomicUsize,
}

/// Completes once no request started and none was in flight over `timeout` (give or take a
/// quarter of it).
async fn idle(activity: &Activity, timeout: Duration) {
    let tick = timeout / IDLE_CHECKS;
    let mut seen = activity.started.load(Ordering::Relaxed);
    let mut quiet = 0;
    loop {
        tokio::time::sleep(tick).await;
        let started = activity.started.load(Ordering::Relaxed);
        if started == seen && activity.in_flight.load(Ordering::Relaxed) == 0 {
            quiet += 1;
            if quiet >= IDLE_CHECKS {
                return;
            }
        } else {
            quiet = 0;
            seen = started;
        }
    }
}

/// A service whose requests are counted in an [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = InFlight<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.activity.started.fetch_add(1, Ordering::Relaxed);
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            inner: self.inner.call(request),
            activity: self.activity.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's future, counted in flight until it completes or is dropped.
    struct InFlight<F> {
        #[pin]
        inner: F,
        activity: Arc<Activity>,
    }

    impl<F> PinnedDrop for InFlight<F> {
        fn drop(this: Pin<&mut Self>) {
            this.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<F: Future> Future for InFlight<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}
