//! The HTTP/1.1 wire format of upstream exchanges: request heads written, response heads
//! parsed, and how each body is framed (RFC 9112).
//!
//! The proxy speaks HTTP/1.1 to its upstreams with this small codec rather than a general
//! client: a request head is written straight from the (already rewritten) request into the
//! connection's reused buffer, and a response head is parsed with `httparse` into a
//! `HeaderMap` whose values share the bytes read, with nothing queued between tasks. What a
//! general client would add here — a request channel, a response oneshot, a connection state
//! machine of its own — is per-request work the proxy does not need: one request is in flight
//! per connection and the request's own task does the I/O (see module `conn`).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Version};
use hyper::body::Body;

use crate::forward::{Forwarded, is_hop_by_hop_name};

/// Largest response head accepted from an upstream, in bytes.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines accepted in a response head.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE: usize = 4096;

/// Why an upstream's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// The response head is not HTTP/1.x.
    #[error("the upstream's response head is malformed ({0})")]
    Head(&'static str),
    /// The response head is larger than [`MAX_HEAD_BYTES`].
    #[error("the upstream's response head is larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The chunked body is malformed.
    #[error("the upstream's chunked response body is malformed")]
    Chunk,
}

/// How a request body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sending {
    /// There is none.
    Nothing,
    /// As is: the head declares its length.
    AsIs,
    /// In chunks: its length is not known in advance.
    Chunked,
}

/// What the proxy writes into a request head besides the request's own lines.
#[derive(Clone, Copy)]
pub(crate) struct Added<'a> {
    /// `Host`: the target's.
    pub(crate) host: &'a HeaderValue,
    /// The proxy's own lines; the request's lines they replace are left out.
    pub(crate) forwarded: &'a Forwarded<'a>,
}

/// Writes the head of a request into `out` (cleared first) and says how its body goes. The
/// request target is the URI's path and query (origin form). `Host` is among the headers,
/// or written with `added`.
pub(crate) fn encode_request<B: Body>(
    parts: &Parts,
    added: Option<Added<'_>>,
    body: &B,
    out: &mut Vec<u8>,
) -> Sending {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    match added {
        None => {
            for (name, value) in &parts.headers {
                line(out, name, value);
            }
        }
        Some(added) => {
            for (name, value) in &parts.headers {
                if !Forwarded::replaces(name) {
                    line(out, name, value);
                }
            }
            line(out, &header::HOST, added.host);
            for (name, value) in added.forwarded.lines() {
                line(out, name, value);
            }
        }
    }
    let sending = if parts.headers.contains_key(header::CONTENT_LENGTH) {
        Sending::AsIs
    } else if body.is_end_stream() {
        Sending::Nothing
    } else if let Some(length) = body.size_hint().exact() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(length.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        Sending::AsIs
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Sending::Chunked
    };
    out.extend_from_slice(b"\r\n");
    sending
}

/// Writes one header line.
fn line(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// There is none (a `HEAD` answer, 1xx, 204, 304, a switch of protocols or a tunnel).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) parts: http::response::Parts,
    pub(crate) framing: Framing,
    /// Whether the connection may carry another request after this answer.
    pub(crate) keep_alive: bool,
    /// Whether `parts.headers` may still hold hop-by-hop headers. The parser leaves them out
    /// unless a `Connection` line names other headers or the answer switches protocols.
    pub(crate) hop_by_hop_left: bool,
}

/// Parses a response head at the start of `buf` and removes it from there; `None` while it is
/// incomplete. Interim (1xx) answers other than `101` are skipped; a `101` is an error unless
/// the request asked to `upgrade` (a client's connection must not switch behind its back).
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    upgrade: bool,
) -> Result<Option<Head>, WireError> {
    loop {
        let Some(head) = parse_one(buf, method)? else {
            return Ok(None);
        };
        let status = head.parts.status;
        if status == StatusCode::SWITCHING_PROTOCOLS && !upgrade {
            return Err(WireError::Head(
                "101 Switching Protocols to a request that asked for no upgrade",
            ));
        }
        if !status.is_informational() || status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Some(head));
        }
    }
}

fn parse_one(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, WireError> {
    // Not initialized ahead: the parser writes the lines it finds.
    let mut lines = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let base = buf.as_ptr() as usize;
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut lines,
    );
    let len = match parsed {
        // However it arrived: in one read or several.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Err(WireError::HeadTooLarge);
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(WireError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::HeadTooLarge),
        Err(_) => return Err(WireError::Head("not an HTTP/1.x response")),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(WireError::Head("bad status code"))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where each header's name and value lie in the head, to slice them once it is split off.
    let spans: Vec<(usize, usize, usize, usize)> = response
        .headers
        .iter()
        .map(|line| {
            let name = line.name.as_ptr() as usize - base;
            let value = line.value.as_ptr() as usize - base;
            (
                name,
                name + line.name.len(),
                value,
                value + line.value.len(),
            )
        })
        .collect();
    // The values keep sharing the bytes read: no copy.
    let bytes = buf.split_to(len).freeze();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut wire = Wire::default();
    // Sized for what arrived: the proxy adds two headers of its own, and the hop-by-hop ones
    // are left out, so a map of more than six headers (an allocation past the allocator's
    // small-size cache) is rarely needed.
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &(name_start, name_end, value_start, value_end) in &spans {
        let name = HeaderName::from_bytes(&bytes[name_start..name_end])
            .map_err(|_| WireError::Head("bad header name"))?;
        let raw = &bytes[value_start..value_end];
        if name == header::CONTENT_LENGTH {
            wire.content_length(raw);
        } else if !switching && is_hop_by_hop_name(&name) {
            // Read here and left out: the proxy never forwards these. Only a `Connection`
            // naming other headers stays, for the proxy to remove those too.
            let keep = name == header::CONNECTION && wire.connection(raw);
            if name == header::TRANSFER_ENCODING {
                wire.transfer_encoding = Some(raw);
            }
            if !keep {
                continue;
            }
            wire.hop_by_hop_left = true;
        }
        let value = HeaderValue::from_maybe_shared(bytes.slice(value_start..value_end))
            .map_err(|_| WireError::Head("bad header value"))?;
        headers.append(name, value);
    }
    let (framing, delimited) = framing(method, status, &wire)?;
    let keep_alive = delimited && wire.persistent(version);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    let (parts, ()) = response.into_parts();
    Ok(Some(Head {
        parts,
        framing,
        keep_alive,
        hop_by_hop_left: switching || wire.hop_by_hop_left,
    }))
}

/// What a response head's framing and connection headers say, read while it is parsed.
#[derive(Debug, Default)]
struct Wire<'a> {
    /// The last `Transfer-Encoding` line.
    transfer_encoding: Option<&'a [u8]>,
    /// `Content-Length`, once given (every value must agree).
    length: Option<u64>,
    /// What is wrong with `Content-Length`; an error only when it frames the body.
    bad_length: Option<&'static str>,
    /// `Connection: close` was sent.
    close: bool,
    /// `Connection: keep-alive` was sent.
    keep_alive: bool,
    /// A `Connection` line names other headers: the map keeps it, for the proxy to remove
    /// those with it.
    hop_by_hop_left: bool,
}

impl Wire<'_> {
    fn content_length(&mut self, raw: &[u8]) {
        for item in raw.split(|&b| b == b',') {
            let Some(n) = decimal(item.trim_ascii()) else {
                self.bad_length.get_or_insert("bad content-length");
                return;
            };
            if self.length.is_some_and(|l| l != n) {
                self.bad_length
                    .get_or_insert("conflicting content-length values");
            }
            self.length = Some(n);
        }
    }

    /// Records the tokens of one `Connection` line; whether it names other headers.
    fn connection(&mut self, raw: &[u8]) -> bool {
        let mut others = false;
        for token in raw.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() {
                others = true;
            }
        }
        others
    }

    /// Whether the upstream keeps the connection open after this answer.
    fn persistent(&self, version: Version) -> bool {
        match version {
            Version::HTTP_10 => self.keep_alive,
            _ => !self.close,
        }
    }
}

/// A `Content-Length` value: digits only (RFC 9110 §8.6), no sign, no overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let digit = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The body's framing, and whether the connection can be reused after it (RFC 9112 §6.3).
fn framing(
    method: &Method,
    status: StatusCode,
    wire: &Wire<'_>,
) -> Result<(Framing, bool), WireError> {
    if status == StatusCode::SWITCHING_PROTOCOLS
        || (*method == Method::CONNECT && status.is_success())
    {
        // The connection now belongs to whatever was switched to.
        return Ok((Framing::Empty, false));
    }
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    if let Some(codings) = wire.transfer_encoding {
        // RFC 9112 §6.3: a sign of request smuggling or response splitting; passing the
        // length on would make the client cut the body short.
        if wire.length.is_some() || wire.bad_length.is_some() {
            return Err(WireError::Head(
                "both Content-Length and Transfer-Encoding are set",
            ));
        }
        let chunked = codings
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked {
            (Framing::Chunked, true)
        } else {
            (Framing::Close, false)
        });
    }
    if let Some(problem) = wire.bad_length {
        return Err(WireError::Head(problem));
    }
    Ok(match wire.length {
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunks {
    /// Expecting a chunk-size line.
    Size,
    /// In a chunk's data, with this many bytes to go.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk, in the trailer section (trailers are dropped).
    Trailers,
    /// Done.
    Done,
}

impl Chunks {
    /// The next piece of data decoded from `buf` (consumed from it); `None` when `buf` holds
    /// no more of it: then either the body is [`Chunks::Done`] or more input is needed.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
        loop {
            match *self {
                Chunks::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = if size == 0 {
                            Chunks::Trailers
                        } else {
                            Chunks::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_LINE => {
                        return Err(WireError::Chunk);
                    }
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(_) => return Err(WireError::Chunk),
                },
                Chunks::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    *self = if left == 0 {
                        Chunks::DataEnd
                    } else {
                        Chunks::Data(left)
                    };
                    return Ok(Some(data));
                }
                Chunks::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Chunk);
                    }
                    buf.advance(2);
                    *self = Chunks::Size;
                }
                Chunks::Trailers => match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        buf.advance(2);
                        *self = Chunks::Done;
                    }
                    Some(end) => buf.advance(end + 2),
                    None if buf.len() > MAX_LINE => return Err(WireError::Chunk),
                    None => return Ok(None),
                },
                Chunks::Done => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    fn head(raw: &str, method: &Method) -> Result<Option<Head>, WireError> {
        parse_response(&mut BytesMut::from(raw), method, false)
    }

    /// The head of a complete, valid response.
    fn complete(raw: &str, method: &Method) -> Head {
        head(raw, method).unwrap().unwrap()
    }

    #[test]
    fn request_heads_declare_how_the_body_goes() {
        let mut out = Vec::new();
        let parts = |request: http::request::Builder| request.body(()).unwrap().into_parts().0;
        let get = parts(
            http::Request::get("http://ignored/a/b?c=1")
                .header("host", "up:8080")
                .header("x-two", "1")
                .header("x-two", "2"),
        );
        assert_eq!(
            encode_request(&get, None, &Empty::<Bytes>::new(), &mut out),
            Sending::Nothing
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET /a/b?c=1 HTTP/1.1\r\nhost: up:8080\r\nx-two: 1\r\nx-two: 2\r\n\r\n"
        );
        let post = parts(http::Request::post("/p"));
        assert_eq!(
            encode_request(
                &post,
                None,
                &Full::new(Bytes::from_static(b"abc")),
                &mut out
            ),
            Sending::AsIs
        );
        assert!(String::from_utf8_lossy(&out).ends_with("content-length: 3\r\n\r\n"));
        let stream = http_body_util::StreamBody::new(futures_util::stream::empty::<
            Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
        >());
        assert_eq!(
            encode_request(&post, None, &stream, &mut out),
            Sending::Chunked
        );
        assert!(String::from_utf8_lossy(&out).ends_with("transfer-encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn written_proxy_lines_equal_those_put_in_the_map() {
        static VIA: HeaderValue = HeaderValue::from_static("1.1 raftgate");
        let client = http::Request::get("/a")
            .header("host", "asked.example")
            .header("accept", "*/*")
            .header("x-forwarded-for", "1.1.1.1")
            .header("x-forwarded-proto", "https")
            .header("x-request-id", "from-client")
            .header("expect", "100-continue")
            .header("via", "1.0 edge")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let peer = crate::forward::Peer::new("10.0.0.9:4000".parse().unwrap(), false);
        let id = HeaderValue::from_static("rid-1");
        let target = HeaderValue::from_static("up:8080");
        let forwarded = || {
            let host = client.headers.get(header::HOST).cloned();
            Forwarded::new(&client.headers, &peer, host, &id, &VIA)
        };
        let lines = |head: &[u8]| {
            let text = String::from_utf8_lossy(head).into_owned();
            let mut lines: Vec<String> = text.lines().skip(1).map(str::to_owned).collect();
            lines.sort();
            lines
        };

        let mut written = Vec::new();
        let added = Added {
            host: &target,
            forwarded: &forwarded(),
        };
        encode_request(&client, Some(added), &Empty::<Bytes>::new(), &mut written);

        let mut inserted = Vec::new();
        let mut in_map = http::Request::get("/a").body(()).unwrap().into_parts().0;
        in_map.headers = client.headers.clone();
        forwarded().insert_into(&mut in_map.headers);
        in_map.headers.insert(header::HOST, target.clone());
        encode_request(&in_map, None, &Empty::<Bytes>::new(), &mut inserted);

        assert_eq!(lines(&written), lines(&inserted));
        assert_eq!(
            lines(&written),
            [
                "",
                "accept: */*",
                "host: up:8080",
                "via: 1.0 edge",
                "via: 1.1 raftgate",
                "x-forwarded-for: 1.1.1.1, 10.0.0.9",
                "x-forwarded-host: asked.example",
                "x-forwarded-proto: http",
                "x-request-id: rid-1",
            ]
        );
    }

    #[test]
    fn response_heads_and_their_framing() {
        let ok = complete(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
            &Method::GET,
        );
        assert_eq!(ok.parts.status, StatusCode::OK);
        assert_eq!(ok.framing, Framing::Length(5));
        assert!(ok.keep_alive);
        assert_eq!(ok.parts.headers["x-a"], "b");

        let partial = head("HTTP/1.1 200 OK\r\nContent-Le", &Method::GET).unwrap();
        assert!(partial.is_none());

        let chunked = complete(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(chunked.framing, Framing::Chunked);

        assert!(
            !chunked
                .parts
                .headers
                .contains_key(header::TRANSFER_ENCODING)
        );
        assert!(!chunked.hop_by_hop_left);

        let close = complete(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            &Method::GET,
        );
        assert!(!close.keep_alive);
        // Hop-by-hop headers are read, then left out of the map...
        assert!(!close.parts.headers.contains_key(header::CONNECTION));
        assert_eq!(close.parts.headers[header::CONTENT_LENGTH], "1");
        assert!(!close.hop_by_hop_left);
        let kept = complete(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\n\
             Proxy-Thing: x\r\nContent-Length: 0\r\n\r\n",
            &Method::GET,
        );
        assert!(kept.keep_alive);
        assert_eq!(kept.parts.headers.len(), 1);
        // ...unless `Connection` names others, which the proxy then removes with it.
        let naming = complete(
            "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\
             Content-Length: 0\r\n\r\n",
            &Method::GET,
        );
        assert!(naming.hop_by_hop_left && !naming.keep_alive);
        assert!(naming.parts.headers.contains_key(header::CONNECTION));
        // A length next to a transfer coding, valid or not, is refused (RFC 9112 §6.3).
        for both in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(head(both, &Method::GET).is_err(), "{both:?}");
        }
        assert!(head("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", &Method::GET).is_err());
        // Digits only: no sign, no overflow; repeated equal values are one length.
        for bad in ["+5", "-5", "", "5 5", "18446744073709551616"] {
            let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert!(head(&raw, &Method::GET).is_err(), "{bad:?}");
        }
        let repeated = complete(
            "HTTP/1.1 200 OK\r\nContent-Length: 5 , 5\r\nContent-Length: 5\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(repeated.framing, Framing::Length(5));
        let until_close = complete("HTTP/1.0 200 OK\r\n\r\n", &Method::GET);
        assert_eq!(
            (until_close.framing, until_close.keep_alive),
            (Framing::Close, false)
        );

        let head_answer = complete(
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(head_answer.framing, Framing::Empty);

        // An interim answer is skipped; a switch of protocols is not.
        let after_continue = complete(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            &Method::POST,
        );
        assert_eq!(after_continue.parts.status, StatusCode::NO_CONTENT);
        let switch = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        // Only a request that asked to upgrade may be answered with a switch.
        assert!(head(switch, &Method::GET).is_err());
        let switched = parse_response(&mut BytesMut::from(switch), &Method::GET, true)
            .unwrap()
            .unwrap();
        assert_eq!(
            (switched.framing, switched.keep_alive),
            (Framing::Empty, false)
        );
        // A switch keeps its `Upgrade` for the tunnel.
        assert!(switched.hop_by_hop_left);
        assert_eq!(switched.parts.headers[header::UPGRADE], "websocket");

        assert!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
                &Method::GET
            )
            .is_err()
        );
        assert!(head("SSH-2.0-OpenSSH\r\n\r\n", &Method::GET).is_err());
        // Too large, whether still partial or complete in one read.
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert!(matches!(
            head(&huge, &Method::GET),
            Err(WireError::HeadTooLarge)
        ));
        assert!(matches!(
            head(&format!("{huge}\r\n\r\n"), &Method::GET),
            Err(WireError::HeadTooLarge)
        ));
    }

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let raw = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        // Fed one byte at a time, as the worst split of reads would.
        let mut chunks = Chunks::Size;
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for &byte in raw.iter() {
            buf.extend_from_slice(&[byte]);
            while let Some(data) = chunks.decode(&mut buf).unwrap() {
                body.extend_from_slice(&data);
            }
        }
        assert_eq!(body, b"hello world");
        assert_eq!(chunks, Chunks::Done);
        assert_eq!(&buf[..], b"NEXT");

        let mut bad = BytesMut::from(&b"zz\r\n"[..]);
        assert!(Chunks::Size.decode(&mut bad).is_err());
        let mut missing_crlf = BytesMut::from(&b"1\r\naXY"[..]);
        let mut chunks = Chunks::Size;
        assert_eq!(chunks.decode(&mut missing_crlf).unwrap().unwrap(), "a");
        assert!(chunks.decode(&mut missing_crlf).is_err());
    }
}
