//! The client's request body on its way upstream, cut off once it grows past
//! [`crate::ProxyConfig::max_body_bytes`].
//!
//! A body with a declared length is checked against the limit before anything is forwarded
//! (hyper then holds the client to that length), so only bodies of unknown length — chunked
//! HTTP/1.1, HTTP/2 without `content-length` — are counted as they stream; only they pay for the
//! shared flag that tells the request handler the body was cut.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A request body as forwarded upstream.
#[derive(Debug)]
pub(crate) struct ClientBody {
    inner: Incoming,
    limit: Option<Limit>,
}

#[derive(Debug)]
struct Limit {
    /// Bytes the body may still carry.
    remaining: u64,
    max: u64,
    exceeded: Arc<AtomicBool>,
}

/// Tells whether a [`ClientBody`] was cut off for being too large.
#[derive(Debug)]
pub(crate) struct Overflow(Arc<AtomicBool>);

impl Overflow {
    /// Whether the body went past the limit (and the upstream got an aborted request).
    pub(crate) fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    /// Reading from the client failed (it went away, or sent a malformed body).
    #[error("reading the request body from the client failed: {0}")]
    Client(#[source] hyper::Error),
    /// The body went past the configured limit.
    #[error("the request body is larger than the {0} bytes this proxy accepts")]
    TooLarge(u64),
}

impl ClientBody {
    /// Wraps `inner`, limited to `max` bytes when set. The [`Overflow`] is returned only when
    /// the body must be counted as it streams.
    pub(crate) fn new(inner: Incoming, max: Option<u64>) -> (ClientBody, Option<Overflow>) {
        let counted = max.filter(|&max| inner.size_hint().upper().is_none_or(|upper| upper > max));
        let Some(max) = counted else {
            return (ClientBody { inner, limit: None }, None);
        };
        let exceeded = Arc::new(AtomicBool::new(false));
        let limit = Limit {
            remaining: max,
            max,
            exceeded: exceeded.clone(),
        };
        (
            ClientBody {
                inner,
                limit: Some(limit),
            },
            Some(Overflow(exceeded)),
        )
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(error)) => return Poll::Ready(Some(Err(ClientBodyError::Client(error)))),
            Some(Ok(frame)) => frame,
        };
        if let (Some(limit), Some(data)) = (&mut this.limit, frame.data_ref()) {
            let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
            match limit.remaining.checked_sub(len) {
                Some(remaining) => limit.remaining = remaining,
                None => {
                    limit.exceeded.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(ClientBodyError::TooLarge(limit.max))));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
