//! One HTTP/1.1 keep-alive connection per worker, opened lazily and reopened after any failure.
//!
//! A hand-held connection (rather than a pooled client) guarantees that each worker uses exactly
//! one socket, as a real client with a persistent connection would, and that a timed-out request
//! never leaves a late answer on a connection that is then reused.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::BenchError;

/// A complete HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// Turns a non-2xx answer into an error so that callers can treat it like a transport failure.
    pub fn success(self, addr: &str) -> Result<Bytes, BenchError> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        let shown = &self.body[..self.body.len().min(200)];
        Err(BenchError::Status {
            addr: addr.to_owned(),
            status: self.status.as_u16(),
            body: String::from_utf8_lossy(shown).into_owned(),
        })
    }
}

/// A lazily connected keep-alive connection to one `host:port`.
pub struct Conn {
    addr: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `addr` that will be opened on the first request.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            sender: None,
        }
    }

    /// The `host:port` this connection talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Points the connection at another endpoint (the current socket is closed).
    pub fn retarget(&mut self, addr: impl Into<String>) {
        self.addr = addr.into();
        self.sender = None;
    }

    /// Sends one request and reads the whole answer, all within `timeout`. On any failure the
    /// socket is dropped, so the next request starts on a fresh connection.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, BenchError> {
        let result = tokio::time::timeout(timeout, self.exchange(method, path, body)).await;
        let result = result.unwrap_or_else(|_| {
            Err(BenchError::Timeout {
                addr: self.addr.clone(),
                ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
        });
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Reply, BenchError> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.addr)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|source| BenchError::Request {
                addr: self.addr.clone(),
                source,
            })?;
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.sender.insert(connect(&self.addr).await?),
        };
        let http = |source| BenchError::Http {
            addr: self.addr.clone(),
            source,
        };
        sender.ready().await.map_err(http)?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(http)?;
        Ok(Reply {
            status,
            body: body.to_bytes(),
        })
    }
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, BenchError> {
    let connect_err = |source| BenchError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let stream = TcpStream::connect(addr).await.map_err(connect_err)?;
    stream.set_nodelay(true).map_err(connect_err)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| BenchError::Http {
            addr: addr.to_owned(),
            source,
        })?;
    // The connection task ends when the sender is dropped or the peer closes the socket; its
    // error, if any, surfaces on the next request through the sender.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
