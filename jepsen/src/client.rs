//! A one-request-per-connection HTTP/1.1 client that tells *whether the request may have been
//! sent*, which a pooled client hides. The history needs that distinction: a request that never
//! left the client is a definite failure, one that left and got no answer is indeterminate.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long connecting may take: the controller is on the same bridge, so a slow connect means the
/// peer is gone (or its kernel is dropping SYNs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An answer with its status and whole body.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection could not be made: the request was certainly not sent.
    #[error("could not connect to {addr}: {reason}")]
    NotSent {
        /// Target.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The request may have been sent but no (complete) answer came: the outcome is unknown.
    #[error("no answer from {addr} after sending: {reason}")]
    Indeterminate {
        /// Target.
        addr: SocketAddr,
        /// What failed (timeout, reset...).
        reason: String,
    },
    /// The request itself could not be built (a bug in the harness).
    #[error("cannot build the request: {0}")]
    Build(String),
}

impl HttpError {
    /// True when the request may have reached the server.
    pub fn maybe_sent(&self) -> bool {
        matches!(self, HttpError::Indeterminate { .. })
    }
}

/// Sends one request on a fresh connection and reads the whole answer within `timeout`.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    if body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| HttpError::Build(e.to_string()))?;

    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(HttpError::NotSent {
                addr,
                reason: e.to_string(),
            });
        }
        Err(_) => {
            return Err(HttpError::NotSent {
                addr,
                reason: "connect timed out".into(),
            });
        }
    };
    let _ = stream.set_nodelay(true);
    let indeterminate = |reason: String| HttpError::Indeterminate { addr, reason };
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| indeterminate(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let answer = sender
            .send_request(request)
            .await
            .map_err(|e| indeterminate(e.to_string()))?;
        let (parts, body) = answer.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| indeterminate(e.to_string()))?
            .to_bytes();
        driver.abort();
        Ok(Response {
            status: parts.status,
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(indeterminate(format!("timed out after {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connection_is_not_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let err = send(addr, Method::GET, "/", &[], None, Duration::from_secs(1))
            .await
            .expect_err("nothing listens");
        assert!(!err.maybe_sent(), "{err}");
    }

    #[tokio::test]
    async fn silent_server_is_indeterminate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hold = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(conn);
        });
        let err = send(
            addr,
            Method::GET,
            "/",
            &[],
            None,
            Duration::from_millis(300),
        )
        .await
        .expect_err("no answer");
        assert!(err.maybe_sent(), "{err}");
        hold.abort();
    }
}
