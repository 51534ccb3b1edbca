//! Client-side protocols end to end: TLS termination by SNI with certificates taken from the
//! replicated state (and hot-swapped), HTTP/2 and HTTP/1.1 over TLS by ALPN, WebSocket
//! passthrough, and how client connections that break the rules are handled (oversized heads
//! and bodies, slow and aborting clients, garbage). Real servers and the real proxy run on
//! loopback ephemeral ports; the replicated state is built in-process; certificates are made
//! by a test CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use raftgate_model::{CertificateSpec, Entity, RouteSpec, ServiceSpec, State, Target};
use raftgate_proxy::{ErrorBody, Limits, Proxy, ProxyConfig, ProxyError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------------------
// Certificates

/// A test certificate authority that issues server certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// A certificate resource for `names`, signed by this CA.
    fn issue(&self, names: &[&str]) -> CertificateSpec {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names.clone())
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        CertificateSpec {
            cert: cert.pem(),
            key: key.serialize_pem(),
            snis: names,
        }
    }

    /// A client trusting this CA only, offering `alpn`.
    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

/// The leaf certificate of a PEM chain.
fn leaf_of(spec: &CertificateSpec) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(spec.cert.as_bytes()).unwrap()
}

/// A TLS connection to `addr` asking for server name `sni`.
async fn tls_connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    connector.connect(name, tcp).await
}

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

// ---------------------------------------------------------------------------------------------
// Upstreams

/// An HTTP/1.1 upstream answering `{x-forwarded-proto} {uri}` as plain text, followed by the
/// length of the body for a `POST` (which it reads whole first); `/slow` waits ten seconds
/// first.
async fn http_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                    let proto = req
                        .headers()
                        .get("x-forwarded-proto")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    let mut text = format!("{proto} {}", req.uri());
                    if req.method() == http::Method::POST {
                        let uri = req.uri().clone();
                        let Ok(body) = req.into_body().collect().await else {
                            return Err(format!("the body of {uri} broke off"));
                        };
                        text = format!("{text} {}", body.to_bytes().len());
                    }
                    Ok::<_, String>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A WebSocket server echoing every text and binary message.
async fn websocket_echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// State and proxy

/// `/ws` goes to the WebSocket upstream, everything else to the HTTP one; `certificates` are
/// the TLS certificates.
fn state(http: SocketAddr, ws: SocketAddr, certificates: &[(&str, &CertificateSpec)]) -> State {
    let service = |addr: SocketAddr| ServiceSpec {
        targets: vec![Target {
            url: format!("http://{addr}"),
            weight: 1,
        }],
        ..Default::default()
    };
    let route = |service: &str, path: &str| RouteSpec {
        service: service.into(),
        paths: vec![path.into()],
        ..Default::default()
    };
    State {
        services: Arc::new(
            [
                ("web".to_string(), Entity::new("web", service(http))),
                ("ws".to_string(), Entity::new("ws", service(ws))),
            ]
            .into_iter()
            .collect(),
        ),
        routes: Arc::new(
            [
                ("web".to_string(), Entity::new("web", route("web", "/"))),
                ("ws".to_string(), Entity::new("ws", route("ws", "/ws"))),
            ]
            .into_iter()
            .collect(),
        ),
        certificates: Arc::new(
            certificates
                .iter()
                .map(|(name, spec)| (name.to_string(), Entity::new(name, (*spec).clone())))
                .collect(),
        ),
        applied_index: 1,
        ..State::default()
    }
}

struct Running {
    plain: SocketAddr,
    tls: SocketAddr,
    states: watch::Sender<Arc<State>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ProxyError>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn start(state: State, config: ProxyConfig) -> Running {
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (plain_addr, tls_addr) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
    let (states, rx) = watch::channel(Arc::new(state));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(
        Proxy::new(rx, config).serve_with_tls(plain, tls, async move {
            let _ = stopped.await;
        }),
    );
    Running {
        plain: plain_addr,
        tls: tls_addr,
        states,
        stop: Some(stop),
        task,
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// One HTTP/1.1 GET on an established connection: status, version and body text.
async fn http1_get<I>(io: I, host: &str, path: &str) -> (StatusCode, Version, String)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    answer(sender.send_request(request).await.unwrap()).await
}

/// One HTTP/2 GET of `uri` on an established connection.
async fn http2_get<I>(io: I, uri: &str) -> (StatusCode, Version, String)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
    answer(sender.send_request(request).await.unwrap()).await
}

async fn answer(response: Response<Incoming>) -> (StatusCode, Version, String) {
    let (status, version) = (response.status(), response.version());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, version, String::from_utf8_lossy(&body).into_owned())
}

/// Sends `raw` on a fresh connection and returns what comes back until the proxy closes it;
/// fails if it stays open for 5 s.
async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The proxy may close before reading everything; that is an answer too.
    let _ = stream.write_all(raw).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    });
    assert!(
        read.await.is_ok(),
        "the proxy neither answered nor closed for {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(200)])
    );
    answer
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn tls_is_terminated_with_the_certificate_of_each_sni_name() {
    let ca = Ca::new();
    let api = ca.issue(&["api.example.com"]);
    let wild = ca.issue(&["*.shop.example.com"]);
    let mut broken = ca.issue(&["broken.example.com"]);
    broken.key = ca.issue(&["other.example.com"]).key;
    let (http, ws) = (http_upstream().await, websocket_echo_upstream().await);
    let proxy = start(
        state(
            http,
            ws,
            &[("api", &api), ("wild", &wild), ("broken", &broken)],
        ),
        ProxyConfig::default(),
    )
    .await;
    let connector = ca.connector(&[b"http/1.1"]);

    let stream = tls_connect(&connector, proxy.tls, "api.example.com")
        .await
        .unwrap();
    assert_eq!(presented(&stream), leaf_of(&api));
    let (status, version, body) = http1_get(stream, "api.example.com", "/a?b=1").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_11));
    assert_eq!(body, "https /a?b=1");

    let stream = tls_connect(&connector, proxy.tls, "eu.shop.example.com")
        .await
        .unwrap();
    assert_eq!(presented(&stream), leaf_of(&wild));
    assert_eq!(
        http1_get(stream, "eu.shop.example.com", "/x").await.2,
        "https /x"
    );

    // No certificate for the name, one that did not load, or a wildcard two labels deep: the
    // handshake fails, and the proxy carries on.
    for sni in [
        "other.example.com",
        "broken.example.com",
        "a.eu.shop.example.com",
    ] {
        assert!(
            tls_connect(&connector, proxy.tls, sni).await.is_err(),
            "{sni} got a certificate"
        );
    }
    // The cleartext listener still says http.
    let stream = TcpStream::connect(proxy.plain).await.unwrap();
    assert_eq!(
        http1_get(stream, "api.example.com", "/p").await.2,
        "http /p"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn certificates_are_swapped_without_restart() {
    let ca = Ca::new();
    let first = ca.issue(&["api.example.com"]);
    let second = ca.issue(&["api.example.com", "new.example.com"]);
    let (http, ws) = (http_upstream().await, websocket_echo_upstream().await);
    let proxy = start(state(http, ws, &[("api", &first)]), ProxyConfig::default()).await;
    let connector = ca.connector(&[b"http/1.1"]);

    // A connection made before the swap, kept open across it.
    let before = tls_connect(&connector, proxy.tls, "api.example.com")
        .await
        .unwrap();
    assert_eq!(presented(&before), leaf_of(&first));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(before))
        .await
        .unwrap();
    tokio::spawn(connection);

    let swapped_at = Instant::now();
    proxy
        .states
        .send(Arc::new(state(http, ws, &[("api", &second)])))
        .unwrap();
    loop {
        let stream = tls_connect(&connector, proxy.tls, "api.example.com")
            .await
            .unwrap();
        if presented(&stream) == leaf_of(&second) {
            break;
        }
        assert!(
            swapped_at.elapsed() < Duration::from_secs(5),
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stream = tls_connect(&connector, proxy.tls, "new.example.com")
        .await
        .unwrap();
    assert_eq!(presented(&stream), leaf_of(&second));

    // The old connection still works.
    let request = Request::get("/still")
        .header("host", "api.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (status, _, body) = answer(sender.send_request(request).await.unwrap()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "https /still"));

    // Deleting the certificate stops serving the name.
    proxy.states.send(Arc::new(state(http, ws, &[]))).unwrap();
    let deleted_at = Instant::now();
    while tls_connect(&connector, proxy.tls, "api.example.com")
        .await
        .is_ok()
    {
        assert!(
            deleted_at.elapsed() < Duration::from_secs(5),
            "a deleted certificate is still served"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.stop().await;
}

#[tokio::test]
async fn alpn_chooses_http2_or_http11_over_tls() {
    let ca = Ca::new();
    let cert = ca.issue(&["api.example.com"]);
    let (http, ws) = (http_upstream().await, websocket_echo_upstream().await);
    let proxy = start(state(http, ws, &[("api", &cert)]), ProxyConfig::default()).await;

    let stream = tls_connect(
        &ca.connector(&[b"h2", b"http/1.1"]),
        proxy.tls,
        "api.example.com",
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, version, body) = http2_get(stream, "https://api.example.com/h2?q").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    assert_eq!(body, "https /h2?q");

    let stream = tls_connect(&ca.connector(&[b"http/1.1"]), proxy.tls, "api.example.com")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, version, _) = http1_get(stream, "api.example.com", "/h1").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_11));

    // A client without ALPN gets HTTP/1.1.
    let stream = tls_connect(&ca.connector(&[]), proxy.tls, "api.example.com")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    assert_eq!(
        http1_get(stream, "api.example.com", "/none").await.0,
        StatusCode::OK
    );
    proxy.stop().await;
}

/// Sends text and binary messages through `ws` and checks each comes back unchanged.
async fn echo_round_trips<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let messages = [
        Message::text("hello through the proxy"),
        Message::binary(big),
        Message::text("ünïcödé"),
    ];
    for message in messages {
        ws.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an echo within 5 s")
            .expect("the connection stays open")
            .unwrap();
        assert_eq!(echoed, message);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn websocket_passes_through_in_cleartext_and_over_tls() {
    let ca = Ca::new();
    let cert = ca.issue(&["ws.example.com"]);
    let (http, ws) = (http_upstream().await, websocket_echo_upstream().await);
    let proxy = start(state(http, ws, &[("ws", &cert)]), ProxyConfig::default()).await;

    let stream = TcpStream::connect(proxy.plain).await.unwrap();
    let (mut socket, response) =
        tokio_tungstenite::client_async("ws://ws.example.com/ws/echo", stream)
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(response.headers().contains_key("x-request-id"));
    echo_round_trips(&mut socket).await;

    let stream = tls_connect(&ca.connector(&[b"http/1.1"]), proxy.tls, "ws.example.com")
        .await
        .unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async("wss://ws.example.com/ws", stream)
        .await
        .unwrap();
    echo_round_trips(&mut socket).await;

    // An upgrade the upstream does not accept is an ordinary answer.
    let stream = TcpStream::connect(proxy.plain).await.unwrap();
    let refused = tokio_tungstenite::client_async("ws://ws.example.com/plain-http", stream).await;
    assert!(
        refused.is_err(),
        "the HTTP upstream cannot switch protocols"
    );
    // And plain HTTP still works next to tunnels.
    let stream = TcpStream::connect(proxy.plain).await.unwrap();
    assert_eq!(http1_get(stream, "x", "/after").await.0, StatusCode::OK);
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused() {
    let (http, ws) = (http_upstream().await, websocket_echo_upstream().await);
    let proxy = start(
        state(http, ws, &[]),
        ProxyConfig {
            max_headers: 20,
            max_header_bytes: 16 * 1024,
            max_body_bytes: Some(1000),
            ..ProxyConfig::default()
        },
    )
    .await;
    let many: String = (0..30).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    let long = format!("x-long: {}\r\n", "a".repeat(20 * 1024));
    for (head, why) in [(&many, "too many header lines"), (&long, "a too long head")] {
        let raw = format!("GET / HTTP/1.1\r\nhost: a\r\n{head}\r\n");
        let got = raw_exchange(proxy.plain, raw.as_bytes()).await;
        assert!(
            got.starts_with(b"HTTP/1.1 431"),
            "{why}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // Within limits: served.
    let some: String = (0..15).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    let fine = format!("GET /ok HTTP/1.1\r\nhost: a\r\nconnection: close\r\n{some}\r\n");
    let got = raw_exchange(proxy.plain, fine.as_bytes()).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // A declared body over the limit gets a 413 before anything is forwarded.
    let raw = b"POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 5000\r\n\r\n";
    let got = raw_exchange(proxy.plain, raw).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let body: ErrorBody = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body.error, "body_too_large");

    // Over HTTP/2, where hyper does not count header lines, the proxy does.
    let stream = TcpStream::connect(proxy.plain).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get("http://a/h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    for i in 0..30 {
        request.headers_mut().insert(
            format!("x-h{i}").parse::<http::HeaderName>().unwrap(),
            i.into(),
        );
    }
    let (status, _, body) = answer(sender.send_request(request).await.unwrap()).await;
    assert_eq!(
        status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "{body}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn chunked_bodies_over_the_limit_are_cut_off() {
    let (http, ws) = (http_upstream().await, websocket_echo_upstream().await);
    let proxy = start(
        state(http, ws, &[]),
        ProxyConfig {
            max_body_bytes: Some(64 * 1024),
            ..ProxyConfig::default()
        },
    )
    .await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let chunks = |n: usize| {
        StreamBody::new(futures_util::stream::iter((0..n).map(|_| {
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 16 * 1024])))
        })))
    };
    // 48 KiB without a declared length passes; 160 KiB does not.
    let request = Request::post(format!("http://{}/small", proxy.plain))
        .body(chunks(3))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "http /small 49152");
    let request = Request::post(format!("http://{}/big", proxy.plain))
        .body(chunks(10))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(body.error, "body_too_large");
    proxy.stop().await;
}

#[tokio::test]
async fn slow_and_aborting_clients_are_cut_off_cleanly() {
    let (http, ws) = (http_upstream().await, websocket_echo_upstream().await);
    let ca = Ca::new();
    let cert = ca.issue(&["api.example.com"]);
    let proxy = start(
        state(http, ws, &[("api", &cert)]),
        ProxyConfig {
            limits: Limits {
                header_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
            ..ProxyConfig::default()
        },
    )
    .await;

    // A client that starts a request head and never finishes it, and one that opens a TLS
    // connection and says nothing: both are closed after the header read timeout.
    for (addr, partial) in [
        (proxy.plain, &b"GET / HTTP/1.1\r\nhost: a\r\n"[..]),
        (proxy.tls, &b""[..]),
    ] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(partial).await.unwrap();
        let mut buf = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "slow client on {addr} never cut off");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "cut off too early: {:?}",
            started.elapsed()
        );
    }

    // A client that gives up while the upstream is still working: nothing breaks.
    let mut stream = TcpStream::connect(proxy.plain).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);
    // And one that aborts in the middle of its body.
    let mut stream = TcpStream::connect(proxy.plain).await.unwrap();
    stream
        .write_all(b"POST /body HTTP/1.1\r\nhost: a\r\ncontent-length: 100000\r\n\r\npartial")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);

    let stream = TcpStream::connect(proxy.plain).await.unwrap();
    assert_eq!(http1_get(stream, "a", "/after").await.2, "http /after");
    proxy.stop().await;
}

#[tokio::test]
async fn garbage_on_either_listener_never_breaks_the_proxy() {
    use rand::{Rng, SeedableRng};
    let ca = Ca::new();
    let cert = ca.issue(&["api.example.com"]);
    let (http, ws) = (http_upstream().await, websocket_echo_upstream().await);
    let proxy = start(
        state(http, ws, &[("api", &cert)]),
        ProxyConfig {
            limits: Limits {
                header_timeout: Duration::from_millis(500),
                ..Limits::default()
            },
            ..ProxyConfig::default()
        },
    )
    .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let prefixes: [&[u8]; 6] = [
        b"",
        b"GET / HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    ];
    for round in 0..60 {
        let mut raw = prefixes[round % prefixes.len()].to_vec();
        let len = rng.random_range(0..2048);
        raw.extend((0..len).map(|_| rng.random::<u8>()));
        let addr = if round % 2 == 0 {
            proxy.plain
        } else {
            proxy.tls
        };
        raw_exchange(addr, &raw).await;
    }
    let stream = TcpStream::connect(proxy.plain).await.unwrap();
    assert_eq!(http1_get(stream, "a", "/alive").await.0, StatusCode::OK);
    let stream = tls_connect(&ca.connector(&[b"h2"]), proxy.tls, "api.example.com")
        .await
        .unwrap();
    assert_eq!(
        http2_get(stream, "https://api.example.com/alive").await.0,
        StatusCode::OK
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_config_change_does_not_disturb_requests_in_flight() {
    let (http, ws) = (http_upstream().await, websocket_echo_upstream().await);
    let proxy = start(state(http, ws, &[]), ProxyConfig::default()).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();

    // An upload that has started, and a WebSocket tunnel that is open.
    // Room for one chunk: the second send returns once the client took the first, so the
    // request head is on its way.
    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let body = StreamBody::new(tokio_stream_from(body));
    let upload = tokio::spawn(
        client.request(
            Request::post(format!("http://{}/upload", proxy.plain))
                .body(body)
                .unwrap(),
        ),
    );
    let chunk = || Ok(Frame::data(Bytes::from(vec![b'u'; 10_000])));
    chunks.send(chunk()).await.unwrap();
    chunks.send(chunk()).await.unwrap();
    let stream = TcpStream::connect(proxy.plain).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async("ws://x/ws", stream)
        .await
        .unwrap();

    // Every route is deleted; new requests see it.
    let mut without_routes = state(http, ws, &[]);
    without_routes.routes = Arc::default();
    without_routes.applied_index = 2;
    proxy.states.send(Arc::new(without_routes)).unwrap();
    let changed_at = Instant::now();
    loop {
        let stream = TcpStream::connect(proxy.plain).await.unwrap();
        if http1_get(stream, "x", "/probe").await.0 == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            changed_at.elapsed() < Duration::from_secs(5),
            "routes never deleted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The upload finishes on its old route, and the tunnel still echoes.
    chunks.send(chunk()).await.unwrap();
    drop(chunks);
    let response = upload.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "http /upload 30000");
    echo_round_trips(&mut socket).await;
    proxy.stop().await;
}

/// The receiving end of a channel as a stream.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
