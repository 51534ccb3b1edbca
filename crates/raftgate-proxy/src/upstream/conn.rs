//! Keep-alive HTTP/1.1 connections to one upstream address, reused most-recent first, and
//! driven by the request that uses them.
//!
//! Each endpoint keeps a stack of idle connections. A request takes the most recently used
//! one (its socket is the likeliest to be open and its buffers warm), writes its head and body
//! on it in the wire format of module `h1`, and reads the answer; the response body hands the
//! connection back once the answer has been read to the end and the request sent in full. A
//! connection whose exchange was cut short is closed instead. Nothing here is shared between
//! endpoints: the only lock is the endpoint's own, held for a push or a pop.
//!
//! A connection has no task of its own: the request's task writes and reads it while it waits
//! for the answer's head, and the response body does while the client reads — including the
//! rest of the request body, so an upstream may stream its answer while it still receives
//! (an echo). Client socket, upstream socket and the copy between them are served by one task.
//!
//! An idle connection the upstream has closed is noticed before it is used (its socket turned
//! readable while idle), so a stale keep-alive connection costs no error; a request that met
//! a connection closing under it without an answer is sent again on another when nothing was
//! sent yet, or when it has no body and its method is idempotent. A request asking for a
//! protocol switch (WebSocket) always gets a new connection, which, after a `101`, leaves the
//! pool for the tunnel.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::{Method, Request, Response, header};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tracing::debug;

use super::call::is_idempotent;
use super::h1::{self, Added, Chunks, Framing, Sending, WireError};
use super::pool::RequestBody;

/// Idle connections kept per endpoint; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// How long an idle connection is kept before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Read buffer room made at a time, and the least room a read is given.
const READ_BUFFER: usize = 16 * 1024;
const MIN_READ_ROOM: usize = 4 * 1024;

/// Why a request could not be sent to an endpoint.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be opened (refused, unreachable).
    #[error("connecting failed: {0}")]
    Connect(#[source] io::Error),
    /// Opening a connection took longer than the connect timeout.
    #[error("connecting timed out")]
    ConnectTimeout,
    /// The connection broke while the request was sent or the response awaited.
    #[error("the connection failed: {0}")]
    Broken(#[source] ExchangeError),
}

/// Why an exchange on an open connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before its answer was complete.
    #[error("the upstream closed the connection before its answer was complete")]
    Closed,
    /// The upstream's answer is not valid HTTP/1.1.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The client's request body failed (the client went away or sent too much).
    #[error("the request body failed: {0}")]
    RequestBody(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// One connection to an upstream, with its buffers and the request it is sending.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// The request head, or a chunk-size line, written out from `written`.
    head: Vec<u8>,
    written: usize,
    /// A body frame being written, after `head`.
    data: Bytes,
    /// What follows `data`: the CRLF closing a chunk, or the last chunk.
    tail: &'static [u8],
    /// The request body still to send.
    body: Option<RequestBody>,
    sending: Sending,
    /// Some byte of the current request was written.
    sent_any: bool,
    /// Writing failed: the upstream stopped reading; the rest of the request is dropped.
    write_failed: bool,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            read: BytesMut::with_capacity(READ_BUFFER),
            head: Vec::with_capacity(512),
            written: 0,
            data: Bytes::new(),
            tail: b"",
            body: None,
            sending: Sending::Nothing,
            sent_any: false,
            write_failed: false,
        }
    }

    /// Starts a request: its head is queued, its body sent as the exchange goes on.
    fn start(&mut self, parts: &Parts, added: Option<Added<'_>>, body: RequestBody) {
        self.sending = h1::encode_request(parts, added, &body, &mut self.head);
        self.written = 0;
        self.body = (self.sending != Sending::Nothing).then_some(body);
        self.sent_any = false;
        self.write_failed = false;
    }

    /// Whether the request has been sent in full and nothing unread is left: the connection
    /// can carry another request.
    fn idle(&self) -> bool {
        self.body.is_none()
            && !self.write_failed
            && self.written == self.head.len()
            && self.data.is_empty()
            && self.tail.is_empty()
            && self.read.is_empty()
    }

    /// Whether an idle connection is still open: its socket stays unreadable while idle
    /// unless the upstream closed it (or sent something unasked). Costs a syscall only when
    /// the socket was marked readable.
    fn alive(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes what is queued.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let head = &self.head[self.written..];
            if head.is_empty() && self.data.is_empty() && self.tail.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let stream = Pin::new(&mut self.stream);
            let mut n = if self.data.is_empty() && self.tail.is_empty() {
                // A request head alone, the usual case: one plain write.
                ready!(stream.poll_write(cx, head))?
            } else {
                let slices = [
                    IoSlice::new(head),
                    IoSlice::new(&self.data),
                    IoSlice::new(self.tail),
                ];
                ready!(stream.poll_write_vectored(cx, &slices))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent_any = true;
            let from_head = n.min(head.len());
            self.written += from_head;
            n -= from_head;
            let from_data = n.min(self.data.len());
            self.data.advance(from_data);
            n -= from_data;
            self.tail = &self.tail[n.min(self.tail.len())..];
        }
    }

    /// Sends what is left of the request; ready once all of it is written. A failed write
    /// only stops the sending (the upstream may have answered and stopped reading, which the
    /// read side then finds); a failed request body is an error.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ExchangeError>> {
        loop {
            if self.write_failed {
                return Poll::Ready(Ok(()));
            }
            if let Err(error) = ready!(self.poll_flush(cx)) {
                debug!(%error, "writing to an upstream failed; reading its answer");
                self.write_failed = true;
                self.body = None;
                return Poll::Ready(Ok(()));
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers of a request body are dropped.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.queue(data);
                    }
                }
                Some(Err(error)) => {
                    self.body = None;
                    return Poll::Ready(Err(ExchangeError::RequestBody(error)));
                }
                None => {
                    self.body = None;
                    if self.sending == Sending::Chunked {
                        self.head.clear();
                        self.written = 0;
                        self.tail = b"0\r\n\r\n";
                    }
                }
            }
        }
    }

    /// Queues a frame of the request body.
    fn queue(&mut self, data: Bytes) {
        self.head.clear();
        self.written = 0;
        if self.sending == Sending::Chunked {
            // Writing into a Vec cannot fail.
            let _ = write!(self.head, "{:x}\r\n", data.len());
            self.tail = b"\r\n";
        }
        self.data = data;
    }

    /// Reads more of the answer; 0 when the upstream closed the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < MIN_READ_ROOM {
            self.read.reserve(READ_BUFFER);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)
    }

    /// Sends the request and reads the head of its answer, sending the body meanwhile.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
        upgrade: bool,
    ) -> Poll<Result<h1::Head, ExchangeError>> {
        loop {
            if let Some(head) = h1::parse_response(&mut self.read, method, upgrade)? {
                return Poll::Ready(Ok(head));
            }
            if let Poll::Ready(Err(error)) = self.poll_send(cx) {
                return Poll::Ready(Err(error));
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err(ExchangeError::Closed)),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(ExchangeError::Io(error))),
            }
        }
    }
}

/// The idle keep-alive connections to one endpoint address.
#[derive(Default)]
pub(crate) struct Conns {
    idle: Mutex<VecDeque<(Box<Conn>, Instant)>>,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("idle", &self.lock().len())
            .finish()
    }
}

impl Conns {
    /// Held only for a push or a pop, never across an await. A poisoned lock is taken anyway:
    /// the stack holds no invariant a panic could break.
    fn lock(&self) -> MutexGuard<'_, VecDeque<(Box<Conn>, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Option<Box<Conn>> {
        loop {
            let (mut conn, _) = self.lock().pop_back()?;
            if conn.alive() {
                return Some(conn);
            }
        }
    }

    fn put(&self, conn: Box<Conn>) {
        let now = Instant::now();
        let mut idle = self.lock();
        while idle
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) > IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back((conn, now));
        }
    }

    /// Sends `request` to `addr` on an idle connection, or on a new one opened within
    /// `connect`, and returns the answer, whose body reads the rest from the connection.
    /// `added` are lines the codec writes into the head besides the request's own.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        connect: Duration,
        request: Request<RequestBody>,
        added: Option<Added<'_>>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let (parts, body) = request.into_parts();
        let switching =
            parts.headers.contains_key(header::UPGRADE) || parts.method == Method::CONNECT;
        let mut body = body;
        loop {
            let reused = if switching { None } else { self.take() };
            let is_reused = reused.is_some();
            let mut conn = match reused {
                Some(conn) => conn,
                // Boxed: opening is the rare path, and inline it would grow this future.
                None => Box::pin(open(addr, connect)).await?,
            };
            conn.start(&parts, added, body);
            match poll_fn(|cx| conn.poll_head(cx, &parts.method, switching)).await {
                Ok(head) => {
                    let reading = match head.framing {
                        Framing::Empty | Framing::Length(0) => Reading::Done,
                        Framing::Length(n) => Reading::Length(n),
                        Framing::Chunked => Reading::Chunked(Chunks::Size),
                        Framing::Close => Reading::Close,
                    };
                    let body = ResponseBody {
                        conn: Some(conn),
                        reading,
                        keep_alive: head.keep_alive,
                        hop_by_hop_left: head.hop_by_hop_left,
                        home: self.clone(),
                    };
                    return Ok(Response::from_parts(head.parts, body));
                }
                // A kept connection closed under the request: send it again on another if
                // that cannot do harm.
                Err(ExchangeError::Closed | ExchangeError::Io(_))
                    if is_reused && conn.read.is_empty() && resendable(&parts.method, &conn) =>
                {
                    debug!(%addr, "kept upstream connection was closed; sending on another");
                    body = conn
                        .body
                        .take()
                        .unwrap_or_else(|| Either::Right(Empty::new()));
                }
                Err(error) => return Err(SendError::Broken(error)),
            }
        }
    }
}

/// Whether a request whose connection closed without an answer can be sent again: nothing of
/// it was written, or it has no body and its method is idempotent.
fn resendable(method: &Method, conn: &Conn) -> bool {
    !conn.sent_any || (conn.sending == Sending::Nothing && is_idempotent(method))
}

/// Opens a connection to `addr`.
async fn open(addr: SocketAddr, connect: Duration) -> Result<Box<Conn>, SendError> {
    let stream = tokio::time::timeout(connect, TcpStream::connect(addr))
        .await
        .map_err(|_| SendError::ConnectTimeout)?
        .map_err(SendError::Connect)?;
    // Without Nagle's delay: requests and answers are small and latency matters.
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%addr, %error, "cannot disable Nagle's algorithm on an upstream connection");
    }
    Ok(Box::new(Conn::new(stream)))
}

/// How much of a response body is left to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Length(u64),
    Chunked(Chunks),
    Close,
    Done,
}

/// A response body read from its upstream connection, which it also uses to finish sending
/// the request. Once read to the end, the connection goes back to its endpoint's idle stack
/// if it can carry another request; a body dropped before its end closes the connection.
pub(crate) struct ResponseBody {
    conn: Option<Box<Conn>>,
    reading: Reading,
    keep_alive: bool,
    /// [`h1::Head::hop_by_hop_left`] of the answer.
    hop_by_hop_left: bool,
    home: Arc<Conns>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("reading", &self.reading)
            .finish_non_exhaustive()
    }
}

/// The upstream's end of a connection that switched protocols, and what it sent after the
/// `101` answer.
pub(crate) struct Switched {
    pub(crate) stream: TcpStream,
    pub(crate) early: Bytes,
}

impl ResponseBody {
    /// Whether the answer's headers may still hold hop-by-hop ones (see
    /// [`h1::Head::hop_by_hop_left`]).
    pub(crate) fn hop_by_hop_left(&self) -> bool {
        self.hop_by_hop_left
    }

    /// The connection of an answer that switched protocols, for the tunnel.
    pub(crate) fn switched(&mut self) -> Option<Switched> {
        let conn = self.conn.take()?;
        let Conn { stream, read, .. } = *conn;
        Some(Switched {
            stream,
            early: read.freeze(),
        })
    }

    /// The body ended: the connection goes back if it can carry another request.
    fn finish(&mut self) {
        self.reading = Reading::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.idle()
        {
            self.home.put(conn);
        }
    }

    /// The next piece of the body already read, if any.
    fn decode(&mut self) -> Result<Option<Bytes>, WireError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let read = &mut conn.read;
        Ok(match &mut self.reading {
            Reading::Length(left) if !read.is_empty() => {
                let take = usize::try_from(*left).map_or(read.len(), |l| l.min(read.len()));
                *left -= take as u64;
                Some(read.split_to(take).freeze())
            }
            Reading::Chunked(chunks) => chunks.decode(read)?,
            Reading::Close if !read.is_empty() => Some(read.split().freeze()),
            _ => None,
        })
    }

    fn ended(&self) -> bool {
        matches!(
            self.reading,
            Reading::Done | Reading::Length(0) | Reading::Chunked(Chunks::Done)
        )
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = self.get_mut();
        loop {
            if this.ended() {
                this.finish();
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // The rest of the request goes out as the answer comes in.
            if let Poll::Ready(Err(error)) = conn.poll_send(cx) {
                this.conn = None;
                this.reading = Reading::Done;
                return Poll::Ready(Some(Err(error)));
            }
            match this.decode() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) if this.ended() => continue,
                Ok(None) => {}
                Err(error) => {
                    this.conn = None;
                    this.reading = Reading::Done;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.reading == Reading::Close => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    this.reading = Reading::Done;
                    return Poll::Ready(Some(Err(ExchangeError::Closed)));
                }
                Ok(_) => {}
                Err(error) => {
                    this.conn = None;
                    this.reading = Reading::Done;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended()
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Length(n) => SizeHint::with_exact(n),
            Reading::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // An answer without a body is never polled: its connection goes back here.
        if self.ended() {
            self.finish();
        }
    }
}
