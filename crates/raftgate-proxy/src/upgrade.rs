//! Protocol upgrades (WebSocket and any other `Upgrade` of HTTP/1.1) passed through.
//!
//! A request with `Connection: upgrade` and an `Upgrade` header keeps both on its way upstream
//! (they are hop-by-hop, so the proxy otherwise removes them). When the upstream answers
//! `101 Switching Protocols`, the proxy answers the client the same way, then joins the two
//! connections once both have switched, copying bytes both ways until either side closes. Any
//! other answer is passed on as usual and the client's connection stays HTTP.
//!
//! A tunnel no longer belongs to the HTTP connection it came from, so draining on shutdown does
//! not wait for it; it ends when either end closes. Upgrades are an HTTP/1.1 mechanism: HTTP/2
//! requests cannot carry them.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use crate::upstream::{Switched, UpstreamBody};

/// An upgrade a client asked for: the protocol and its side of the connection, once switched.
pub(crate) struct Upgrade {
    protocol: HeaderValue,
    client: OnUpgrade,
}

impl Upgrade {
    /// Takes the upgrade that a request (its head) asks for, if it is an HTTP/1.1 request with
    /// `Connection: upgrade` and an `Upgrade` header.
    pub(crate) fn take(request: &mut Parts) -> Option<Upgrade> {
        let protocol = requested(request)?;
        // Where hyper keeps the client's side of the connection once switched.
        let client = request.extensions.remove::<OnUpgrade>()?;
        Some(Upgrade { protocol, client })
    }

    /// Whether every protocol the client asked for is among `allowed` (lower-case names,
    /// without versions). `h2c` never is: an h2c upgrade passed through a proxy lets a client
    /// talk HTTP/2 to the upstream past every route and policy (h2c smuggling).
    pub(crate) fn allowed_by(&self, allowed: &[Box<str>]) -> bool {
        allows(allowed, &self.protocol)
    }

    /// The protocol asked for, to [`restore`] on the request sent upstream.
    pub(crate) fn protocol(&self) -> &HeaderValue {
        &self.protocol
    }

    /// When `response` (from upstream, its headers as received) switches protocols, starts the
    /// tunnel, which runs once the client has the response, and returns the protocol to
    /// [`restore`] on the response once its hop-by-hop headers are removed. Otherwise `None`:
    /// the client's connection stays HTTP.
    pub(crate) fn splice(self, response: &mut Response<UpstreamBody>) -> Option<HeaderValue> {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return None;
        }
        let protocol = response.headers().get(header::UPGRADE)?.clone();
        let upstream = response.body_mut().switched()?;
        tokio::spawn(tunnel(self.client, upstream));
        Some(protocol)
    }
}

/// Puts `Connection: upgrade` and `Upgrade: protocol` back on a message whose hop-by-hop
/// headers were removed.
pub(crate) fn restore(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
}

/// The protocol a request asks to switch to, if it is an HTTP/1.1 request with
/// `Connection: upgrade` and an `Upgrade` header.
fn requested(request: &Parts) -> Option<HeaderValue> {
    if request.version != Version::HTTP_11 || !connection_has_upgrade(&request.headers) {
        return None;
    }
    request.headers.get(header::UPGRADE).cloned()
}

/// See [`Upgrade::allowed_by`].
fn allows(allowed: &[Box<str>], asked: &HeaderValue) -> bool {
    let Ok(asked) = asked.to_str() else {
        return false;
    };
    asked.split(',').all(|protocol| {
        let name = protocol.split('/').next().unwrap_or_default().trim();
        !name.eq_ignore_ascii_case("h2c") && allowed.iter().any(|a| name.eq_ignore_ascii_case(a))
    })
}

fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|line| {
        line.to_str().is_ok_and(|line| {
            line.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
    })
}

/// Copies bytes both ways between the two switched connections until either side closes,
/// starting with what the upstream sent right after its `101`.
async fn tunnel(client: OnUpgrade, upstream: Switched) {
    let client = match client.await {
        Ok(client) => client,
        Err(error) => {
            debug!(%error, "protocol upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let Switched {
        stream: mut upstream,
        early,
    } = upstream;
    if let Err(error) = client.write_all(&early).await {
        debug!(%error, "upgraded connection broke");
        return;
    }
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => debug!(sent, received, "upgraded connection closed"),
        Err(error) => debug!(%error, "upgraded connection broke"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http11_requests_with_both_headers_upgrade() {
        let head = |builder: http::request::Builder| builder.body(()).unwrap().into_parts().0;
        let request = |version, connection: &'static str| {
            head(
                http::Request::builder()
                    .version(version)
                    .header(header::CONNECTION, connection)
                    .header(header::UPGRADE, "websocket"),
            )
        };
        assert!(requested(&request(Version::HTTP_11, "keep-alive, Upgrade")).is_some());
        assert!(requested(&request(Version::HTTP_11, "keep-alive")).is_none());
        assert!(requested(&request(Version::HTTP_10, "upgrade")).is_none());
        assert!(requested(&request(Version::HTTP_2, "upgrade")).is_none());
        let no_upgrade = head(http::Request::builder().header(header::CONNECTION, "upgrade"));
        assert!(requested(&no_upgrade).is_none());
    }

    #[test]
    fn only_listed_protocols_and_never_h2c_are_allowed() {
        let asked = HeaderValue::from_static;
        let websocket: Box<[Box<str>]> = ["websocket".into()].into();
        let with_h2c: Box<[Box<str>]> = ["websocket".into(), "h2c".into()].into();
        assert!(allows(&websocket, &asked("websocket")));
        assert!(allows(&websocket, &asked("WebSocket")));
        assert!(!allows(&[], &asked("websocket")));
        assert!(!allows(&with_h2c, &asked("h2c")));
        assert!(!allows(&with_h2c, &asked("websocket, h2c")));
        assert!(!allows(&websocket, &asked("TLS/1.2")));
    }
}
