//! Keep-alive HTTP/1.1 connections to one upstream address, reused most-recent first, and
//! driven by the request that uses them.
//!
//! Each endpoint keeps a stack of idle connections. A request takes the most recently used
//! one (its socket is the likeliest to be open and its buffers warm), sends on it, and hands it
//! back when the response body has been read to the end; a connection whose response was not
//! read to the end is closed instead. A request that an idle connection could not even start
//! to send (the upstream had closed it) moves on to the next one, and to a new connection when
//! none is left, so a stale keep-alive connection costs no error. Nothing here is shared
//! between endpoints: the only lock is the endpoint's own, held for a push or a pop.
//!
//! A connection has no task of its own: the request's task polls it while it waits for the
//! answer, and the response body polls it while the client reads. Client socket, upstream
//! socket and the copy between them are then served by one task on one thread, without the
//! wake-ups and channel hops a connection task costs on every exchange. A request that asks
//! for a protocol switch (WebSocket) gets a connection of its own, driven by its own task, which
//! hands the socket over after the `101`.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::pool::RequestBody;

/// Idle connections kept per endpoint; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// How long an idle connection is kept before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request could not be sent to an endpoint.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be opened (refused, unreachable).
    #[error("connecting failed: {0}")]
    Connect(#[source] std::io::Error),
    /// Opening a connection took longer than the connect timeout.
    #[error("connecting timed out")]
    ConnectTimeout,
    /// The connection broke while the request was sent or the response awaited.
    #[error("the connection failed: {0}")]
    Broken(#[source] hyper::Error),
}

/// The half of a connection that does the I/O; whoever uses the connection polls it. Boxed
/// once when the connection opens: hyper's connection state is several hundred bytes, and a
/// connection changes hands (idle stack, request, response body) several times per request.
type Driver = Pin<Box<Connection<TokioIo<TcpStream>, RequestBody>>>;

/// A connection: the handle requests are sent through, and its I/O half.
struct Conn {
    sender: SendRequest<RequestBody>,
    driver: Driver,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle keep-alive connections to one endpoint address.
#[derive(Default)]
pub(crate) struct Conns {
    idle: Mutex<VecDeque<Idle>>,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("idle", &self.lock().len())
            .finish()
    }
}

/// A connection lent to one exchange: the response body drives it with [`Lease::poll_drive`],
/// gives it back with [`Lease::release`] once read to the end, and closes it by dropping it
/// otherwise.
pub(crate) struct Lease {
    conn: Conn,
    conns: Arc<Conns>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

impl Lease {
    /// Does the connection's pending I/O (reads the answer into the response body, sends what
    /// is left of the request body). Ready when the connection has ended: drop the lease then.
    pub(crate) fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.conn.driver.as_mut().poll(cx).map(|_| ())
    }

    /// Returns the connection to its endpoint's idle stack (unless it has closed).
    pub(crate) fn release(self) {
        self.conns.put(self.conn);
    }
}

impl Conns {
    /// Held only for a push or a pop, never across an await. A poisoned lock is taken anyway:
    /// the stack holds no invariant a panic could break.
    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Option<Conn> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop_back() {
            if !entry.conn.sender.is_closed() {
                return Some(entry.conn);
            }
        }
        None
    }

    fn put(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) > IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { conn, since: now });
        }
    }

    /// Sends `request` to `addr` on an idle connection, or on a new one opened within
    /// `connect`. The lease is `None` for a protocol switch, whose connection is not reused.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        connect: Duration,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
        if request.headers().contains_key(header::UPGRADE) || request.method() == Method::CONNECT {
            return Box::pin(switching(addr, connect, request)).await;
        }
        while let Some(conn) = self.take() {
            let Conn { mut sender, driver } = conn;
            // The connection first reads what arrived while it sat idle: an upstream's close.
            let (ready, driver) = drive(driver, sender.ready()).await;
            let Some(driver) = driver.filter(|_| ready.is_ok()) else {
                continue;
            };
            let (sent, driver) = drive(driver, sender.try_send_request(request)).await;
            match sent {
                Ok(response) => return Ok(self.lend(response, sender, driver)),
                Err(mut failed) => match failed.take_message() {
                    // Not a byte was sent: the connection had closed. Try the next one.
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Broken(failed.into_error())),
                },
            }
        }
        // Boxed: opening is the rare path, and inline it would double this future's size.
        let Conn { mut sender, driver } = Box::pin(open(addr, connect)).await?;
        let (sent, driver) = drive(driver, sender.send_request(request)).await;
        let response = sent.map_err(SendError::Broken)?;
        Ok(self.lend(response, sender, driver))
    }

    /// The response and its connection, to drive until the body is read; a connection that
    /// already ended (it had nothing more to read) has nothing to lend.
    fn lend(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<RequestBody>,
        driver: Option<Driver>,
    ) -> (Response<Incoming>, Option<Lease>) {
        let lease = driver.map(|driver| Lease {
            conn: Conn { sender, driver },
            conns: self.clone(),
        });
        (response, lease)
    }
}

/// Polls `future` and, while it waits, the connection's I/O. The connection is given back
/// unless it ended; an ended connection is dropped at once, which cancels what was queued on
/// it, so `future` cannot wait on a connection nobody drives.
async fn drive<F: Future>(driver: Driver, future: F) -> (F::Output, Option<Driver>) {
    let mut driver = Some(driver);
    let mut future = pin!(future);
    let output = poll_fn(|cx| {
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            let Some(d) = driver.as_mut() else {
                return Poll::Pending;
            };
            if d.as_mut().poll(cx).is_ready() {
                driver = None;
                continue;
            }
            // The I/O may have produced what `future` waits for.
            return future.as_mut().poll(cx);
        }
    })
    .await;
    (output, driver)
}

/// A request asking for a protocol switch, on a connection of its own driven by its own task
/// (which hands the socket to the upgrade after a `101`).
async fn switching(
    addr: SocketAddr,
    connect: Duration,
    request: Request<RequestBody>,
) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
    let Conn { mut sender, driver } = open(addr, connect).await?;
    tokio::spawn(async move {
        if let Err(error) = Pin::into_inner(driver).with_upgrades().await {
            debug!(%addr, %error, "upstream connection ended with an error");
        }
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(SendError::Broken)?;
    Ok((response, None))
}

/// Opens a connection to `addr`.
async fn open(addr: SocketAddr, connect: Duration) -> Result<Conn, SendError> {
    let stream = tokio::time::timeout(connect, TcpStream::connect(addr))
        .await
        .map_err(|_| SendError::ConnectTimeout)?
        .map_err(SendError::Connect)?;
    // Without Nagle's delay: requests and answers are small and latency matters.
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%addr, %error, "cannot disable Nagle's algorithm on an upstream connection");
    }
    let (sender, driver) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Broken)?;
    Ok(Conn {
        sender,
        driver: Box::pin(driver),
    })
}
