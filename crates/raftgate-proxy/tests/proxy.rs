//! End-to-end tests: real upstream HTTP servers and the real proxy on loopback ephemeral ports,
//! driven by a real HTTP client, with the replicated state built in-process.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Either, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use raftgate_model::{Entity, RouteSpec, ServiceSpec, State, Target};
use raftgate_proxy::{ErrorBody, Proxy, ProxyConfig, ProxyError};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Upstreams

/// Starts an upstream HTTP/1.1 server named `name`. It answers:
/// - `/echo...`: streams the request body back as the response body;
/// - `/slow/{ms}...`: waits `ms` milliseconds, then answers like any other path;
/// - anything else: a JSON description of the request as received
///   (`{"upstream", "method", "uri", "headers": {name: [values]}}`).
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(name, req).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn answer(name: &str, req: Request<Incoming>) -> Response<Either<Incoming, Full<Bytes>>> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/echo") {
        return Response::new(Either::Left(req.into_body()));
    }
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|ms| ms.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = serde_json::json!({
        "upstream": name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
    });
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    response
        .headers_mut()
        .insert("x-upstream", http::HeaderValue::from_str(name).unwrap());
    response
}

/// A port on which nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// An upstream that reads the start of each request and then drops the connection.
async fn resetting_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 16];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// State

fn service(name: &str, targets: &[(String, u32)]) -> Entity<ServiceSpec> {
    Entity::new(
        name,
        ServiceSpec {
            targets: targets
                .iter()
                .map(|(url, weight)| Target {
                    url: url.clone(),
                    weight: *weight,
                })
                .collect(),
            ..Default::default()
        },
    )
}

struct R<'a> {
    name: &'a str,
    service: &'a str,
    hosts: &'a [&'a str],
    paths: &'a [&'a str],
    methods: &'a [&'a str],
    strip_path: bool,
}

impl R<'_> {
    fn build(&self) -> Entity<RouteSpec> {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        Entity::new(
            self.name,
            RouteSpec {
                service: self.service.into(),
                paths: v(self.paths),
                hosts: v(self.hosts),
                methods: v(self.methods),
                strip_path: self.strip_path,
                ..Default::default()
            },
        )
    }
}

fn route<'a>(name: &'a str, service: &'a str, paths: &'a [&'a str]) -> R<'a> {
    R {
        name,
        service,
        hosts: &[],
        paths,
        methods: &[],
        strip_path: false,
    }
}

fn state(services: Vec<Entity<ServiceSpec>>, routes: Vec<R<'_>>, index: u64) -> State {
    State {
        services: Arc::new(services.into_iter().map(|s| (s.name.clone(), s)).collect()),
        routes: Arc::new(
            routes
                .iter()
                .map(|r| (r.name.to_owned(), r.build()))
                .collect(),
        ),
        applied_index: index,
        ..State::default()
    }
}

fn url(addr: SocketAddr, base: &str) -> String {
    format!("http://{addr}{base}")
}

// ---------------------------------------------------------------------------------------------
// Proxy and client

struct Running {
    addr: SocketAddr,
    states: watch::Sender<Arc<State>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ProxyError>>,
}

impl Running {
    async fn stop(mut self) -> Result<(), ProxyError> {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap()
    }
}

/// An upstream and a proxy with one catch-all route to it.
async fn one_route_proxy() -> (SocketAddr, Running) {
    let up = upstream("up").await;
    let proxy = start_proxy(
        state(
            vec![service("svc", &[(url(up, ""), 1)])],
            vec![route("r", "svc", &[])],
            1,
        ),
        ProxyConfig::default(),
    )
    .await;
    (up, proxy)
}

async fn start_proxy(state: State, config: ProxyConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (states, rx) = watch::channel(Arc::new(state));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(Proxy::new(rx, config).serve(listener, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        states,
        stop: Some(stop),
        task,
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

fn empty() -> Body {
    Empty::new().boxed()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// One header as the upstream received it (first value).
    fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name][0].as_str().map(str::to_owned)
    }

    /// How many `name` lines the upstream received.
    fn upstream_lines(&self, name: &str) -> usize {
        self.json()["headers"][name].as_array().map_or(0, Vec::len)
    }

    fn error(&self) -> ErrorBody {
        assert_eq!(self.headers["content-type"], "application/json");
        let body: ErrorBody = serde_json::from_slice(&self.body).unwrap();
        assert_eq!(body.request_id, self.headers["x-request-id"]);
        body
    }
}

async fn send(
    client: &Client<HttpConnector, Body>,
    method: Method,
    proxy: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(client: &Client<HttpConnector, Body>, proxy: SocketAddr, path: &str) -> Answer {
    send(client, Method::GET, proxy, path, &[]).await
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn routes_by_host_path_and_method_with_precedence() {
    let up = upstream("up").await;
    // Each service prepends its own base path, so the upstream URI tells which route matched.
    let services = ["root", "api", "api-get", "exact", "wild"]
        .iter()
        .map(|s| service(s, &[(url(up, &format!("/{s}")), 1)]))
        .collect();
    let routes = vec![
        route("root", "root", &["/"]),
        route("api", "api", &["/api"]),
        R {
            methods: &["GET"],
            ..route("api-get", "api-get", &["/api"])
        },
        R {
            hosts: &["api.example.com"],
            ..route("exact", "exact", &["/"])
        },
        R {
            hosts: &["*.example.com"],
            ..route("wild", "wild", &[])
        },
    ];
    let proxy = start_proxy(state(services, routes, 1), ProxyConfig::default()).await;
    let c = client();
    let cases: [(Method, &str, Option<&str>, &str); 7] = [
        (Method::GET, "/api/x?q=1", None, "/api-get/api/x?q=1"),
        (Method::POST, "/api/x", None, "/api/api/x"),
        (Method::GET, "/apix", None, "/root/apix"),
        (
            Method::GET,
            "/api",
            Some("API.example.com:8080"),
            "/exact/api",
        ),
        (Method::GET, "/api", Some("x.example.com"), "/wild/api"),
        (Method::GET, "/api", Some("example.com"), "/api-get/api"),
        (Method::DELETE, "/", Some("a.b.example.com"), "/wild/"),
    ];
    for (method, path, host, expected) in cases {
        let headers: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
        let answer = send(&c, method.clone(), proxy.addr, path, &headers).await;
        assert_eq!(answer.status, StatusCode::OK, "{method} {path} {host:?}");
        let got = answer.json();
        assert_eq!(got["uri"], expected, "{method} {path} {host:?}");
        assert_eq!(got["method"], method.as_str());
    }
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn exact_regex_header_matchers_rewrites_and_header_ops() {
    let up = upstream("up").await;
    let services: Vec<Entity<ServiceSpec>> = ["exact", "regex", "prefix", "canary"]
        .iter()
        .map(|s| service(s, &[(url(up, &format!("/{s}")), 1)]))
        .collect();
    let spec = |service: &str, paths: &[&str]| RouteSpec {
        service: service.into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    };
    let routes = [
        ("exact", spec("exact", &["=/users/me"])),
        (
            "regex",
            RouteSpec {
                rewrite: Some("/profiles/${1}".into()),
                ..spec("regex", &["~^/users/([0-9]+)$"])
            },
        ),
        (
            "prefix",
            RouteSpec {
                rewrite: Some("/people".into()),
                request_headers: raftgate_model::HeaderOps {
                    remove: vec!["x-drop".into()],
                    set: BTreeMap::from([("x-set".into(), "by-route".into())]),
                    add: BTreeMap::from([("x-add".into(), "added".into())]),
                },
                response_headers: raftgate_model::HeaderOps {
                    remove: vec!["x-upstream".into()],
                    set: BTreeMap::from([("cache-control".into(), "no-store".into())]),
                    add: BTreeMap::new(),
                },
                ..spec("prefix", &["/users"])
            },
        ),
        (
            "canary",
            RouteSpec {
                headers: BTreeMap::from([("X-Canary".into(), vec!["yes".into()])]),
                ..spec("canary", &["/users"])
            },
        ),
    ];
    let state = State {
        services: Arc::new(services.into_iter().map(|s| (s.name.clone(), s)).collect()),
        routes: Arc::new(
            routes
                .into_iter()
                .map(|(name, spec)| (name.to_owned(), Entity::new(name, spec)))
                .collect(),
        ),
        applied_index: 1,
        ..State::default()
    };
    let proxy = start_proxy(state, ProxyConfig::default()).await;
    let c = client();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        ("/users/me", &[], "/exact/users/me"),
        ("/users/42?full=1", &[], "/regex/profiles/42?full=1"),
        ("/users/42/posts", &[], "/prefix/people/42/posts"),
        ("/users", &[], "/prefix/people"),
        ("/users/x", &[("x-canary", "yes")], "/canary/users/x"),
        ("/users/x", &[("x-canary", "no")], "/prefix/people/x"),
    ];
    for (path, headers, expected) in cases {
        let answer = send(&c, Method::GET, proxy.addr, path, headers).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.json()["uri"], expected, "{path} {headers:?}");
    }

    let answer = send(
        &c,
        Method::GET,
        proxy.addr,
        "/users/x",
        &[
            ("x-drop", "1"),
            ("x-set", "from-client"),
            ("x-add", "from-client"),
        ],
    )
    .await;
    let sent = answer.json();
    assert_eq!(sent["headers"].get("x-drop"), None);
    assert_eq!(sent["headers"]["x-set"], serde_json::json!(["by-route"]));
    assert_eq!(
        sent["headers"]["x-add"],
        serde_json::json!(["from-client", "added"])
    );
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert!(answer.headers.get("x-upstream").is_none());
    // Routes without response changes pass the upstream's headers through.
    let answer = get(&c, proxy.addr, "/users/me").await;
    assert_eq!(answer.headers["x-upstream"], "up");
    assert!(answer.headers.get("cache-control").is_none());
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn strip_path_and_target_base_path() {
    let up = upstream("up").await;
    let services = vec![
        service("plain", &[(url(up, ""), 1)]),
        service("based", &[(url(up, "/v2/"), 1)]),
    ];
    let routes = vec![
        R {
            strip_path: true,
            ..route("strip", "plain", &["/api"])
        },
        R {
            strip_path: true,
            ..route("strip-based", "based", &["/b/"])
        },
        route("keep", "based", &["/keep"]),
    ];
    let proxy = start_proxy(state(services, routes, 1), ProxyConfig::default()).await;
    let c = client();
    for (path, expected) in [
        ("/api/users?x=1", "/users?x=1"),
        ("/api", "/"),
        ("/api/", "/"),
        ("/b/users", "/v2/users"),
        ("/keep/x", "/v2/keep/x"),
    ] {
        let answer = get(&c, proxy.addr, path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.json()["uri"], expected, "{path}");
    }
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn weighted_round_robin_across_two_upstreams() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let services = vec![service("svc", &[(url(a, ""), 3), (url(b, ""), 1)])];
    let proxy = start_proxy(
        state(services, vec![route("r", "svc", &[])], 1),
        ProxyConfig::default(),
    )
    .await;
    let c = client();
    let mut counts = BTreeMap::new();
    let mut order = String::new();
    for _ in 0..40 {
        let answer = get(&c, proxy.addr, "/").await;
        let name = answer.json()["upstream"].as_str().unwrap().to_owned();
        order.push_str(&name);
        *counts.entry(name).or_insert(0) += 1;
    }
    assert_eq!(counts, BTreeMap::from([("a".into(), 30), ("b".into(), 10)]));
    // Smooth: the heavy target's turns are spread, never four in a row.
    assert!(!order.contains("aaaa"), "{order}");
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn failures_answer_with_json_errors() {
    let up = upstream("up").await;
    let services = vec![
        service("ok", &[(url(up, ""), 1)]),
        service("down", &[(url(closed_port().await, ""), 1)]),
        service("reset", &[(url(resetting_upstream().await, ""), 1)]),
    ];
    let routes = vec![
        route("ok", "ok", &["/ok"]),
        route("down", "down", &["/down"]),
        route("reset", "reset", &["/reset"]),
    ];
    let proxy = start_proxy(state(services, routes, 1), ProxyConfig::default()).await;
    let c = client();

    let answer = get(&c, proxy.addr, "/nothing/here").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error().error, "no_route");

    let answer = get(&c, proxy.addr, "/down").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let error = answer.error();
    assert_eq!(error.error, "upstream_unreachable");
    assert!(error.message.contains("'down'"), "{}", error.message);
    assert!(
        !error.message.contains("127.0.0.1"),
        "leaks an address: {}",
        error.message
    );

    let answer = get(&c, proxy.addr, "/reset").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.error().error, "upstream_error");

    let answer = get(&c, proxy.addr, "/ok/x").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["uri"], "/ok/x");
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn slow_upstream_times_out_with_504() {
    let up = upstream("up").await;
    let mut svc = service("svc", &[(url(up, ""), 1)]);
    svc.spec.timeouts.read_ms = 300;
    let proxy = start_proxy(
        state(vec![svc], vec![route("slow", "svc", &["/slow"])], 1),
        ProxyConfig::default(),
    )
    .await;
    let c = client();
    let started = Instant::now();
    let answer = send(
        &c,
        Method::GET,
        proxy.addr,
        "/slow/5000",
        &[("x-request-id", "client-42")],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    let error = answer.error();
    assert_eq!(error.error, "upstream_timeout");
    assert_eq!(error.request_id, "client-42");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // A slow upstream within the timeout is fine.
    assert_eq!(get(&c, proxy.addr, "/slow/50").await.status, StatusCode::OK);
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn forwarded_headers_request_id_and_hop_by_hop() {
    let (up, proxy) = one_route_proxy().await;
    let c = client();

    let answer = send(
        &c,
        Method::GET,
        proxy.addr,
        "/h",
        &[
            ("host", "Shop.Example.com:8080"),
            ("x-forwarded-proto", "https"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "hidden"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eA=="),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 25, "{id}");
    assert_eq!(
        answer.upstream_header("x-request-id").as_deref(),
        Some(&*id)
    );
    assert_eq!(
        answer.upstream_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        answer.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        answer.upstream_header("x-forwarded-host").as_deref(),
        Some("Shop.Example.com:8080")
    );
    assert_eq!(
        answer.upstream_header("host").as_deref(),
        Some(&*up.to_string())
    );
    assert_eq!(answer.upstream_header("x-kept").as_deref(), Some("yes"));
    assert_eq!(
        answer.upstream_header("via").as_deref(),
        Some("1.1 raftgate")
    );
    assert_eq!(answer.headers["via"], "1.1 raftgate");
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "connection",
    ] {
        assert_eq!(answer.upstream_header(gone), None, "{gone} was forwarded");
    }

    // A second request gets another id; a client id and prior proxies are kept.
    let answer = send(
        &c,
        Method::GET,
        proxy.addr,
        "/h",
        &[
            ("x-request-id", "abc-123"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-host", "spoofed.example"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    // The proxy's lines replace the client's: each arrives once.
    for name in [
        "host",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    ] {
        assert_eq!(answer.upstream_lines(name), 1, "{name}");
    }
    assert_ne!(
        answer.upstream_header("x-forwarded-host").as_deref(),
        Some("spoofed.example")
    );
    assert_eq!(answer.headers["x-request-id"], "abc-123");
    assert_eq!(
        answer.upstream_header("x-request-id").as_deref(),
        Some("abc-123")
    );
    assert_eq!(
        answer.upstream_header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    let other = get(&c, proxy.addr, "/h").await;
    assert_ne!(other.headers["x-request-id"], id.as_str());
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn config_change_takes_effect() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let services = || {
        vec![
            service("a", &[(url(a, ""), 1)]),
            service("b", &[(url(b, ""), 1)]),
        ]
    };
    let proxy = start_proxy(
        state(services(), vec![route("r", "a", &["/"])], 1),
        ProxyConfig::default(),
    )
    .await;
    let c = client();
    assert_eq!(get(&c, proxy.addr, "/x").await.json()["upstream"], "a");

    proxy
        .states
        .send(Arc::new(state(
            services(),
            vec![route("r", "b", &["/"])],
            2,
        )))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if get(&c, proxy.addr, "/x").await.json()["upstream"] == "b" {
            break;
        }
        assert!(Instant::now() < deadline, "new route never took effect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    proxy
        .states
        .send(Arc::new(state(services(), vec![], 3)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&c, proxy.addr, "/x").await.status != StatusCode::NOT_FOUND {
        assert!(Instant::now() < deadline, "deleted route still served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    const CHUNKS: usize = 64;
    let up = upstream("up").await;
    let proxy = start_proxy(
        state(
            vec![service("svc", &[(url(up, ""), 1)])],
            vec![route("echo", "svc", &["/echo"])],
            1,
        ),
        ProxyConfig::default(),
    )
    .await;

    // 64 MiB in 1 MiB chunks, chunk i filled with byte i, made only as the client sends it.
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let chunks = futures_util::stream::iter(0..CHUNKS).map(move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Infallible>(Frame::data(Bytes::from(vec![i as u8; MIB])))
    });
    let req = Request::post(format!("http://{}/echo", proxy.addr))
        .body(BodyExt::boxed(StreamBody::new(chunks)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let mut body = resp.into_body();
    let mut received = 0usize;
    let mut sent_at_first_byte = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        sent_at_first_byte.get_or_insert_with(|| sent.load(Ordering::SeqCst));
        let mut rest = &data[..];
        while !rest.is_empty() {
            let run = rest.len().min(MIB - received % MIB);
            let expected = (received / MIB) as u8;
            assert!(
                rest[..run].iter().all(|&b| b == expected),
                "corrupt data near byte {received}"
            );
            received += run;
            rest = &rest[run..];
        }
    }
    assert_eq!(received, CHUNKS * MIB);
    let first = sent_at_first_byte.unwrap();
    // Had the proxy buffered either body, nothing would come back before all was sent.
    assert!(
        first < CHUNKS,
        "first response byte only after {first} of {CHUNKS} chunks were sent"
    );
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    let up = upstream("up").await;
    let proxy = start_proxy(
        state(
            vec![service("svc", &[(url(up, ""), 1)])],
            vec![R {
                hosts: &["h2.example.com"],
                ..route("r", "svc", &["/v"])
            }],
            1,
        ),
        ProxyConfig::default(),
    )
    .await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    // Over HTTP/2 the host travels as the :authority pseudo-header, not as `Host`.
    for (uri, status) in [
        ("http://h2.example.com/v/x", StatusCode::OK),
        ("http://other.example.com/v/x", StatusCode::NOT_FOUND),
    ] {
        let resp = sender
            .send_request(Request::get(uri).body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), status, "{uri}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        if status == StatusCode::OK {
            assert_eq!(body["uri"], "/v/x");
            assert_eq!(body["headers"]["x-forwarded-host"][0], "h2.example.com");
            assert_eq!(body["headers"]["host"][0], up.to_string());
        } else {
            assert_eq!(body["error"], "no_route");
        }
    }
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    use tokio::io::AsyncWriteExt;
    let (_, proxy) = one_route_proxy().await;
    let addr = proxy.addr;
    // An idle keep-alive connection, after one answered request.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let in_flight = tokio::spawn(async move { get(&client(), addr, "/slow/400").await.status });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    proxy.stop().await.unwrap();
    // The idle connection was told to close at once, not left to the 10 s drain timeout.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(in_flight.await.unwrap(), StatusCode::OK);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(1), idle.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok_and(|r| r.is_ok()),
        "idle connection still open"
    );
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Sends `raw` on a fresh connection and returns everything the proxy answers until it closes.
async fn raw_exchange(proxy: SocketAddr, raw: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    if read.await.is_err() {
        panic!(
            "the proxy neither answered nor closed for {:?}; got {:?}",
            String::from_utf8_lossy(raw),
            String::from_utf8_lossy(&answer)
        );
    }
    answer
}

#[tokio::test]
async fn odd_requests_get_an_answer_and_never_break_the_proxy() {
    let up = upstream("up").await;
    let proxy = start_proxy(
        state(
            vec![service("svc", &[(url(up, ""), 1)])],
            vec![
                R {
                    hosts: &["abs.example.com"],
                    ..route("abs", "svc", &["/abs"])
                },
                R {
                    strip_path: true,
                    ..route("strip", "svc", &["/s"])
                },
            ],
            1,
        ),
        ProxyConfig::default(),
    )
    .await;
    let cases: [&[u8]; 10] = [
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"CONNECT abs.example.com:443 HTTP/1.1\r\nHost: abs.example.com:443\r\nConnection: close\r\n\r\n",
        b"GET http://abs.example.com/abs/x HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
        b"GET /s HTTP/1.1\r\nHost: \xff\xfe\r\nConnection: close\r\n\r\n",
        b"GET /s/%ZZ/../x?a=%00 HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n",
        b"GET /s HTTP/1.1\r\nHost: :::\r\nConnection: close\r\nConnection: ,,\xff, \r\nX-Request-Id: \xff\r\n\r\n",
        b"GET /s HTTP/1.0\r\n\r\n",
        b"GET /s HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        b"POST /s HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        b"GARBAGE\r\n\r\n",
    ];
    for raw in cases {
        let answer = raw_exchange(proxy.addr, raw).await;
        let shown = String::from_utf8_lossy(raw);
        assert!(
            answer.starts_with(b"HTTP/1."),
            "no HTTP answer to {shown:?}: {:?}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            !answer.starts_with(b"HTTP/1.1 5") && !answer.starts_with(b"HTTP/1.0 5"),
            "server error for {shown:?}: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    let absolute = raw_exchange(proxy.addr, cases[2]).await;
    assert!(
        absolute.starts_with(b"HTTP/1.1 200"),
        "absolute-form URI host is used"
    );
    // Still serving normally.
    assert_eq!(get(&client(), proxy.addr, "/s/x").await.json()["uri"], "/x");
    proxy.stop().await.unwrap();
}
