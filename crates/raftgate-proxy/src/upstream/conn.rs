//! Keep-alive HTTP/1.1 connections to one upstream address, reused most-recent first.
//!
//! Each endpoint keeps a stack of idle connections. A request takes the most recently used
//! one (its socket is the likeliest to be open and its buffers warm), sends on it, and hands it
//! back when the response body has been read to the end; a connection whose response was not
//! read to the end, or that switched protocols, is closed instead. A request that an idle
//! connection could not even start to send (the upstream had closed it) moves on to the next
//! one, and to a new connection when none is left, so a stale keep-alive connection costs no
//! error. Nothing here is shared between endpoints: the only lock is the endpoint's own, held
//! for a push or a pop.
//!
//! This is leaner than a general-purpose client pool: no per-request extension map, no
//! checkout future, no background task to return a connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
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

struct Idle {
    sender: SendRequest<RequestBody>,
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

/// A connection lent to one exchange; given back with [`Lease::release`] once the response body
/// has been read to the end, closed when dropped otherwise.
#[derive(Debug)]
pub(crate) struct Lease {
    sender: SendRequest<RequestBody>,
    conns: Arc<Conns>,
}

impl Lease {
    /// Returns the connection to its endpoint's idle stack (unless it has closed).
    pub(crate) fn release(self) {
        self.conns.put(self.sender);
    }
}

impl Conns {
    /// Held only for a push or a pop, never across an await. A poisoned lock is taken anyway:
    /// the stack holds no invariant a panic could break.
    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop_back() {
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
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
            idle.push_back(Idle { sender, since: now });
        }
    }

    /// Sends `request` to `addr` on an idle connection, or on a new one opened within
    /// `connect`. The lease is `None` when the connection cannot be reused (101 answers).
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        connect: Duration,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
        while let Some(mut sender) = self.take() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.lend(response, sender)),
                Err(mut failed) => match failed.take_message() {
                    // Not a byte was sent: the connection had closed. Try the next one.
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Broken(failed.into_error())),
                },
            }
        }
        // Boxed: opening is the rare path, and inline it would double this future's size.
        let mut sender = Box::pin(open(addr, connect)).await?;
        match sender.send_request(request).await {
            Ok(response) => Ok(self.lend(response, sender)),
            Err(error) => Err(SendError::Broken(error)),
        }
    }

    fn lend(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<RequestBody>,
    ) -> (Response<Incoming>, Option<Lease>) {
        let lease = (response.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
            sender,
            conns: self.clone(),
        });
        (response, lease)
    }
}

/// Opens a connection to `addr` and starts the task that drives it.
async fn open(addr: SocketAddr, connect: Duration) -> Result<SendRequest<RequestBody>, SendError> {
    let stream = tokio::time::timeout(connect, TcpStream::connect(addr))
        .await
        .map_err(|_| SendError::ConnectTimeout)?
        .map_err(SendError::Connect)?;
    // Without Nagle's delay: requests and answers are small and latency matters.
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%addr, %error, "cannot disable Nagle's algorithm on an upstream connection");
    }
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Broken)?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            debug!(%addr, %error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
