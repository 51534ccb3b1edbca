//! Upstream behaviour end to end: balancing, consistent hashing, timeouts, retries and their
//! budget, active and passive health checks, registered instances and DNS targets. Real
//! upstream servers (stoppable, counting their requests) and the real proxy run on loopback
//! ephemeral ports; the replicated state is built in-process.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use raftgate_model::api::UpstreamHealth;
use raftgate_model::{
    ActiveCheck, Entity, HashOn, HealthChecks, InstanceSpec, LbPolicy, PassiveCheck, RouteSpec,
    ServiceSpec, State, Target, Timeouts,
};
use raftgate_proxy::{ErrorBody, HealthView, Proxy, ProxyConfig};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------------------
// Upstreams

/// An upstream HTTP/1.1 server on a fixed loopback port that can be stopped (closing every
/// connection) and started again. Each request is counted, then answered with `status` after
/// `delay_ms`, with the server's name as the body; `/drip` streams ten chunks 100 ms apart.
struct Upstream {
    name: &'static str,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// Connections accepted.
    accepts: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Upstream {
    async fn start(name: &'static str) -> Arc<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Arc::new(Upstream {
            name,
            addr: listener.local_addr().unwrap(),
            hits: Arc::default(),
            accepts: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            delay_ms: Arc::default(),
            server: Mutex::default(),
        });
        upstream.serve(listener);
        upstream
    }

    fn serve(&self, listener: TcpListener) {
        let (name, hits, status, delay, accepts) = (
            self.name,
            self.hits.clone(),
            self.status.clone(),
            self.delay_ms.clone(),
            self.accepts.clone(),
        );
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) closes every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepts.fetch_add(1, Ordering::SeqCst);
                let (hits, status, delay) = (hits.clone(), status.clone(), delay.clone());
                connections.spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (hits, status, delay) = (hits.clone(), status.clone(), delay.clone());
                        async move {
                            Ok::<_, Infallible>(answer(name, req, &hits, &status, &delay).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *self.server.lock().unwrap() = Some(task);
    }

    /// Stops listening and closes all connections.
    async fn stop(&self) {
        let task = self.server.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    async fn restart(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(
    name: &'static str,
    req: Request<Incoming>,
    hits: &AtomicUsize,
    status: &AtomicU16,
    delay: &AtomicU64,
) -> Response<Body> {
    hits.fetch_add(1, Ordering::SeqCst);
    let delay = delay.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut response = if req.uri().path() == "/drip" {
        let chunks = futures_util::stream::unfold(0, |i| async move {
            if i == 10 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"drop "))),
                i + 1,
            ))
        });
        Response::new(BodyExt::boxed(StreamBody::new(chunks)))
    } else {
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        Response::new(Full::new(Bytes::from(format!("{name} {host}"))).boxed())
    };
    *response.status_mut() = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap();
    response
}

/// A loopback address that accepts no more connections: its accept queue is full, so a
/// connect attempt hangs until it times out.
async fn blackhole() -> (SocketAddr, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => held.push(stream),
            _ => {
                // Keep the listener open (never accepting) for the rest of the test.
                std::mem::forget(listener);
                return (addr, held);
            }
        }
    }
    panic!("the accept queue never filled up");
}

// ---------------------------------------------------------------------------------------------
// State and proxy

fn targets(upstreams: &[&Arc<Upstream>]) -> Vec<Target> {
    upstreams
        .iter()
        .map(|u| Target {
            url: u.url(),
            weight: 1,
        })
        .collect()
}

/// A state with one service `svc` and one route sending everything to it.
fn state(spec: ServiceSpec, instances: &[(&str, &str, u32)]) -> State {
    State {
        services: Arc::new(
            [("svc".to_string(), Entity::new("svc", spec))]
                .into_iter()
                .collect(),
        ),
        routes: Arc::new(
            [(
                "all".to_string(),
                Entity::new(
                    "all",
                    RouteSpec {
                        service: "svc".into(),
                        ..RouteSpec::default()
                    },
                ),
            )]
            .into_iter()
            .collect(),
        ),
        instances: Arc::new(
            instances
                .iter()
                .map(|&(id, url, weight)| {
                    let spec = InstanceSpec {
                        service: "svc".into(),
                        url: url.into(),
                        weight,
                        ttl_ms: 30_000,
                    };
                    (id.to_string(), Entity::new(id, spec))
                })
                .collect(),
        ),
        ..State::default()
    }
}

struct Running {
    addr: SocketAddr,
    states: watch::Sender<Arc<State>>,
    health: HealthView,
    stop: Option<oneshot::Sender<()>>,
    client: Client<HttpConnector, Body>,
}

impl Running {
    async fn start(state: State) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (states, rx) = watch::channel(Arc::new(state));
        let (stop, stopped) = oneshot::channel::<()>();
        let proxy = Proxy::new(rx, ProxyConfig::default());
        let health = proxy.health();
        tokio::spawn(proxy.serve(listener, async move {
            let _ = stopped.await;
        }));
        // The services appear once the proxy has read the state.
        while health.all().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Running {
            addr,
            states,
            health,
            stop: Some(stop),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    fn set(&self, state: State) {
        self.states.send(Arc::new(state)).unwrap();
    }

    async fn send(&self, method: Method, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}/", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Empty::new().boxed()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer { status, body }
    }

    async fn get(&self) -> Answer {
        self.send(Method::GET, &[]).await
    }

    /// Which upstream answered each of `n` GETs, by name (or the proxy's error code).
    async fn tally(&self, n: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            *counts.entry(self.get().await.who()).or_insert(0) += 1;
        }
        counts
    }

    fn health(&self) -> UpstreamHealth {
        self.health
            .service("svc")
            .expect("service svc in the health view")
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
    }
}

struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl Answer {
    /// The upstream's name, or the proxy's error code.
    fn who(&self) -> String {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(error) => error.error,
            Err(_) => self.text().split(' ').next().unwrap_or_default().to_owned(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn error(&self) -> ErrorBody {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not an error body ({e}): {}", self.text()))
    }
}

/// Polls `check` every 20 ms until it holds, for at most `within`.
async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

// ---------------------------------------------------------------------------------------------
// Balancing

#[tokio::test]
async fn upstream_connections_are_reused_and_stale_ones_cost_no_error() {
    let up = Upstream::start("up").await;
    let proxy = Running::start(state(
        ServiceSpec {
            targets: targets(&[&up]),
            ..Default::default()
        },
        &[],
    ))
    .await;
    for _ in 0..20 {
        assert_eq!(proxy.get().await.status, StatusCode::OK);
    }
    assert_eq!(up.hits(), 20);
    assert_eq!(
        up.accepts.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );

    // The upstream closes its idle connections (as on a restart or a keep-alive timeout):
    // a non-idempotent request, which is never retried, still gets through.
    up.stop().await;
    up.restart().await;
    let answer = proxy.send(Method::POST, &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(up.accepts.load(Ordering::SeqCst), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn least_connections_favours_fast_and_heavy_targets() {
    let (slow, fast) = (Upstream::start("slow").await, Upstream::start("fast").await);
    slow.delay_ms.store(200, Ordering::SeqCst);
    let proxy = Running::start(state(
        ServiceSpec {
            targets: targets(&[&slow, &fast]),
            lb: LbPolicy::LeastConnections,
            ..Default::default()
        },
        &[],
    ))
    .await;
    let proxy = Arc::new(proxy);
    // 8 clients in a loop for 1 s: the slow target keeps requests in flight, so it gets few.
    let mut clients = JoinSet::new();
    for _ in 0..8 {
        let proxy = proxy.clone();
        clients.spawn(async move {
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                assert_eq!(proxy.get().await.status, StatusCode::OK);
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = proxy.health();
    let in_flight: u64 = seen.targets.iter().map(|t| t.in_flight).sum();
    assert!(in_flight > 0, "{seen:?}");
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let (s, f) = (slow.hits(), fast.hits());
    assert!(s >= 1 && f > 10 * s, "slow {s}, fast {f}");
    assert!(proxy.health().targets.iter().all(|t| t.in_flight == 0));

    // Equally slow targets with weights 1 and 3: in-flight requests split 1:3.
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    for u in [&a, &b] {
        u.delay_ms.store(50, Ordering::SeqCst);
    }
    proxy.set(state(
        ServiceSpec {
            targets: vec![
                Target {
                    url: a.url(),
                    weight: 1,
                },
                Target {
                    url: b.url(),
                    weight: 3,
                },
            ],
            lb: LbPolicy::LeastConnections,
            ..Default::default()
        },
        &[],
    ));
    eventually(
        Duration::from_secs(5),
        "the new targets serve",
        async || proxy.get().await.who() != "fast",
    )
    .await;
    let before = (a.hits(), b.hits());
    let mut clients = JoinSet::new();
    for _ in 0..8 {
        let proxy = proxy.clone();
        clients.spawn(async move {
            for _ in 0..15 {
                assert_eq!(proxy.get().await.status, StatusCode::OK);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let (na, nb) = (a.hits() - before.0, b.hits() - before.1);
    let share = na as f64 / (na + nb) as f64;
    assert!((0.15..0.35).contains(&share), "a {na}, b {nb}");
}

#[tokio::test]
async fn consistent_hashing_is_sticky_and_moves_only_the_removed_share() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
        Upstream::start("d").await,
    ];
    let hashed = |ups: &[&Arc<Upstream>], on: HashOn| ServiceSpec {
        targets: targets(ups),
        lb: LbPolicy::ConsistentHash,
        hash_on: Some(on),
        ..Default::default()
    };
    let all: Vec<&Arc<Upstream>> = ups.iter().collect();
    let proxy = Running::start(state(hashed(&all, HashOn::Header("x-user".into())), &[])).await;
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let mut placed = HashMap::new();
    for user in &users {
        let first = proxy.send(Method::GET, &[("x-user", user)]).await.who();
        for _ in 0..2 {
            assert_eq!(
                proxy.send(Method::GET, &[("x-user", user)]).await.who(),
                first,
                "{user} moved"
            );
        }
        placed.insert(user.clone(), first);
    }
    for u in &ups {
        let share = placed.values().filter(|n| *n == u.name).count();
        assert!(share >= 20, "{} got {share} of 200 keys", u.name);
    }
    // Without the key, requests are spread round-robin.
    assert_eq!(proxy.tally(8).await.len(), 4);

    // Remove c: only its keys move.
    let without_c: Vec<&Arc<Upstream>> = ups.iter().filter(|u| u.name != "c").collect();
    proxy.set(state(
        hashed(&without_c, HashOn::Header("x-user".into())),
        &[],
    ));
    let on_c = placed.iter().find(|(_, n)| *n == "c").unwrap().0.clone();
    eventually(Duration::from_secs(5), "c left the ring", async || {
        proxy.send(Method::GET, &[("x-user", &on_c)]).await.who() != "c"
    })
    .await;
    let mut moved = 0;
    for user in &users {
        let now = proxy.send(Method::GET, &[("x-user", user)]).await.who();
        if placed[user] == "c" {
            assert_ne!(now, "c");
            moved += 1;
        } else {
            assert_eq!(now, placed[user], "{user} moved although its target stayed");
        }
    }
    assert_eq!(moved, placed.values().filter(|n| *n == "c").count());

    // Cookies and client addresses hash too.
    proxy.set(state(hashed(&all, HashOn::Cookie("session".into())), &[]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for s in ["s1", "s2", "s3"] {
        let cookie = format!("theme=dark; session={s}");
        let first = proxy.send(Method::GET, &[("cookie", &cookie)]).await.who();
        for _ in 0..5 {
            let again = proxy.send(Method::GET, &[("cookie", &cookie)]).await.who();
            assert_eq!(again, first);
        }
    }
    proxy.set(state(hashed(&all, HashOn::ClientIp), &[]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(proxy.tally(10).await.len(), 1, "one client, one target");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Timeouts and retries

#[tokio::test]
async fn connect_read_and_total_timeouts_answer_504() {
    let up = Upstream::start("up").await;
    let (hole, _held) = blackhole().await;
    let with = |url: String, timeouts: Timeouts| ServiceSpec {
        targets: vec![Target { url, weight: 1 }],
        timeouts,
        ..Default::default()
    };

    // Connect.
    let proxy = Running::start(state(
        with(
            format!("http://{hole}"),
            Timeouts {
                connect_ms: 200,
                ..Timeouts::default()
            },
        ),
        &[],
    ))
    .await;
    let started = Instant::now();
    let answer = proxy.get().await;
    let took = started.elapsed();
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.text()
    );
    let error = answer.error();
    assert_eq!(error.error, "upstream_timeout");
    assert!(
        error.message.contains("accept a connection within 200ms"),
        "{}",
        error.message
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // Read: the response head is late.
    up.delay_ms.store(2_000, Ordering::SeqCst);
    proxy.set(state(
        with(
            up.url(),
            Timeouts {
                read_ms: 300,
                ..Timeouts::default()
            },
        ),
        &[],
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let answer = proxy.get().await;
    let took = started.elapsed();
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.text()
    );
    assert!(answer.error().message.contains("answer within 300ms"));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // Total, before the head: 504 at the total limit although the read limit is longer.
    proxy.set(state(
        with(
            up.url(),
            Timeouts {
                read_ms: 5_000,
                total_ms: 400,
                ..Timeouts::default()
            },
        ),
        &[],
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let answer = proxy.get().await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        answer
            .error()
            .message
            .contains("complete the exchange within 400ms")
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // Total, while the body streams: the stream is cut.
    up.delay_ms.store(0, Ordering::SeqCst);
    let req = Request::get(format!("http://{}/drip", proxy.addr))
        .body(Empty::new().boxed())
        .unwrap();
    let started = Instant::now();
    let resp = proxy.client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.into_body().collect().await.is_err(),
        "the body was not cut"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(900),
        "{took:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_another_target() {
    let (bad, good) = (Upstream::start("bad").await, Upstream::start("good").await);
    let refused = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let spec = |urls: Vec<String>| ServiceSpec {
        targets: urls
            .into_iter()
            .map(|url| Target { url, weight: 1 })
            .collect(),
        retries: 1,
        ..Default::default()
    };
    // One request in five first goes to a port that refuses connections (the retry budget
    // allows retrying 20% of requests).
    let mut one_in_five = spec(vec![format!("http://{refused}"), good.url()]);
    one_in_five.targets[1].weight = 4;
    let proxy = Running::start(state(one_in_five, &[])).await;
    // Every GET ends on the good target.
    assert_eq!(proxy.tally(20).await, counts(&[("good", 20)]));
    // A POST is never retried.
    let mut posts = BTreeMap::new();
    for _ in 0..20 {
        *posts
            .entry(proxy.send(Method::POST, &[]).await.who())
            .or_insert(0) += 1;
    }
    assert_eq!(posts, counts(&[("good", 16), ("upstream_unreachable", 4)]));

    // A 503 answer is retried for GET, PUT and DELETE, and passed on for POST.
    bad.status.store(503, Ordering::SeqCst);
    proxy.set(state(spec(vec![bad.url(), good.url()]), &[]));
    eventually(
        Duration::from_secs(5),
        "the bad target is in use",
        async || {
            proxy.get().await;
            bad.hits() > 0
        },
    )
    .await;
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        for _ in 0..4 {
            let answer = proxy.send(method.clone(), &[]).await;
            assert_eq!(
                (answer.status, answer.who()),
                (StatusCode::OK, "good".into()),
                "{method}"
            );
        }
    }
    let posts: Vec<StatusCode> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(proxy.send(Method::POST, &[]).await.status);
        }
        v
    };
    assert_eq!(
        posts
            .iter()
            .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
            .count(),
        2
    );
    // No retries configured: the 503 goes to the client.
    proxy.set(state(
        ServiceSpec {
            retries: 0,
            ..spec(vec![bad.url(), good.url()])
        },
        &[],
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(proxy.tally(4).await, counts(&[("bad", 2), ("good", 2)]));
    proxy.stop().await;
}

#[tokio::test]
async fn retry_budget_caps_amplification() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ];
    for u in &ups {
        u.status.store(503, Ordering::SeqCst);
    }
    let proxy = Running::start(state(
        ServiceSpec {
            targets: targets(&ups.iter().collect::<Vec<_>>()),
            retries: 2,
            ..Default::default()
        },
        &[],
    ))
    .await;
    const REQUESTS: usize = 300;
    for _ in 0..REQUESTS {
        assert_eq!(proxy.get().await.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let hits: usize = ups.iter().map(|u| u.hits()).sum();
    // Without a budget: 900 upstream requests. With it: the 10 saved up plus 20%.
    assert!(hits > REQUESTS + 10, "no retries at all: {hits}");
    assert!(
        hits <= REQUESTS + 10 + REQUESTS / 5,
        "retries amplified the outage: {hits}"
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Health

#[tokio::test]
async fn active_checks_take_a_stopped_target_out_and_back() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let proxy = Running::start(state(
        ServiceSpec {
            targets: targets(&[&a, &b]),
            health_checks: HealthChecks {
                active: Some(ActiveCheck {
                    path: "/health".into(),
                    interval_ms: 100,
                    timeout_ms: 200,
                    healthy_threshold: 2,
                    unhealthy_threshold: 2,
                }),
                passive: None,
            },
            ..Default::default()
        },
        &[],
    ))
    .await;
    assert_eq!(proxy.tally(4).await, counts(&[("a", 2), ("b", 2)]));
    let probed = a.hits();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(a.hits() >= probed + 2, "no probes reached a");

    a.stop().await;
    eventually(Duration::from_secs(3), "a is unhealthy", async || {
        !proxy.health().targets[0].healthy
    })
    .await;
    let view = proxy.health();
    assert_eq!(
        view.targets[0].address.as_deref(),
        Some(&*a.addr.to_string())
    );
    assert!(!view.targets[0].available);
    assert!(view.targets[0].failed_probes >= 2);
    assert!(
        view.targets[1].healthy && view.targets[1].available,
        "{view:?}"
    );
    assert_eq!(proxy.tally(10).await, counts(&[("b", 10)]));

    b.stop().await;
    eventually(Duration::from_secs(3), "b is unhealthy", async || {
        !proxy.health().targets[1].healthy
    })
    .await;
    let answer = proxy.get().await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.error().error, "no_healthy_upstream");

    a.restart().await;
    b.restart().await;
    eventually(
        Duration::from_secs(3),
        "both are healthy again",
        async || proxy.health().targets.iter().all(|t| t.healthy),
    )
    .await;
    assert_eq!(proxy.tally(4).await, counts(&[("a", 2), ("b", 2)]));
    proxy.stop().await;
}

#[tokio::test]
async fn passive_checks_eject_a_failing_target_for_a_while() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.status.store(500, Ordering::SeqCst);
    let spec = |retries| ServiceSpec {
        targets: targets(&[&a, &b]),
        retries,
        health_checks: HealthChecks {
            active: None,
            passive: Some(PassiveCheck {
                consecutive_failures: 3,
                ejection_ms: 1_000,
            }),
        },
        ..Default::default()
    };
    let proxy = Running::start(state(spec(0), &[])).await;
    // Round-robin: a fails 3 times in a row (its answers are passed on), then is ejected.
    assert_eq!(
        proxy.tally(6).await,
        counts(&[("a", 3), ("b", 3)]),
        "500s are passed on"
    );
    let view = proxy.health();
    assert!(view.targets[0].ejected_until.is_some() && !view.targets[0].available);
    assert!(view.targets[0].healthy, "no active checks: healthy");
    assert_eq!(proxy.tally(10).await, counts(&[("b", 10)]));

    // A recompile (the service changed, a's URL did not) keeps a ejected.
    proxy.set(state(spec(1), &[]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(proxy.health().targets[0].ejected_until.is_some());
    assert_eq!(proxy.tally(4).await, counts(&[("b", 4)]));

    // After the ejection a is tried again.
    a.status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(proxy.tally(4).await, counts(&[("a", 2), ("b", 2)]));
    assert!(proxy.health().targets[0].available);
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Discovery

#[tokio::test]
async fn registered_instances_are_balanced_with_the_targets() {
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let spec = || ServiceSpec::default();
    let proxy = Running::start(state(spec(), &[])).await;
    let answer = proxy.get().await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.error().error, "no_upstream");

    proxy.set(state(spec(), &[("i-1", &a.url(), 1)]));
    eventually(Duration::from_secs(5), "the instance serves", async || {
        proxy.get().await.who() == "a"
    })
    .await;
    proxy.set(state(
        ServiceSpec {
            targets: targets(&[&c]),
            ..spec()
        },
        &[("i-1", &a.url(), 1), ("i-2", &b.url(), 2)],
    ));
    eventually(
        Duration::from_secs(5),
        "the second instance serves",
        async || proxy.get().await.who() == "b",
    )
    .await;
    let view = proxy.health();
    let urls: Vec<&str> = view.targets.iter().map(|t| t.url.as_str()).collect();
    assert_eq!(urls, [c.url(), a.url(), b.url()]);
    let tally = proxy.tally(40).await;
    assert_eq!(tally, counts(&[("a", 10), ("b", 20), ("c", 10)]));

    // The instance lapses (the leader deletes it): it leaves the rotation.
    proxy.set(state(spec(), &[("i-2", &b.url(), 2)]));
    eventually(
        Duration::from_secs(5),
        "the lapsed instance is gone",
        async || proxy.tally(4).await == counts(&[("b", 4)]),
    )
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn dns_names_are_resolved_and_balanced_per_address() {
    let up = Upstream::start("up").await;
    let port = up.addr.port();
    // Should `localhost` also resolve to ::1, serve there too.
    let v6 = match TcpListener::bind(("::1", port)).await {
        Ok(listener) => {
            let v6 = Arc::new(Upstream {
                name: "up",
                addr: listener.local_addr().unwrap(),
                hits: up.hits.clone(),
                accepts: up.accepts.clone(),
                status: up.status.clone(),
                delay_ms: up.delay_ms.clone(),
                server: Mutex::default(),
            });
            v6.serve(listener);
            Some(v6)
        }
        Err(_) => None,
    };
    let url = format!("http://localhost:{port}");
    let proxy = Running::start(state(
        ServiceSpec {
            targets: vec![Target {
                url: url.clone(),
                weight: 1,
            }],
            dns_refresh_ms: 200,
            ..Default::default()
        },
        &[],
    ))
    .await;
    eventually(Duration::from_secs(5), "localhost resolved", async || {
        proxy.health().targets.iter().all(|t| t.address.is_some())
    })
    .await;
    let view = proxy.health();
    let addresses: Vec<&str> = view
        .targets
        .iter()
        .filter_map(|t| t.address.as_deref())
        .collect();
    assert!(
        addresses.contains(&&*format!("127.0.0.1:{port}")),
        "{addresses:?}"
    );
    assert!(view.targets.iter().all(|t| t.url == url));
    for _ in 0..6 {
        let answer = proxy.get().await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        // The target's name, not the address, is the Host upstream.
        assert_eq!(answer.text(), format!("up localhost:{port}"));
    }
    drop(v6);
    proxy.stop().await;
}

/// A hand-written HTTP/1.1 upstream answering by path with framings a library server would
/// not produce: a body delimited by closing the connection, chunks with extensions and
/// trailers, a 204, bytes that are not HTTP, and an answer sent before the upload is read.
/// Returns its address and how many connections it accepted.
async fn scripted_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let counter = accepts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request head at a time.
                    let end = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|l| l.trim().parse().ok())
                        .unwrap_or(0);
                    if path == "/early" {
                        let answer =
                            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nnope";
                        let _ = stream.write_all(answer).await;
                        // Then read (and drop) the upload, as a server that answered early does.
                        let mut sink = [0u8; 65536];
                        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                        return;
                    }
                    while buf.len() < length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..length);
                    let answer: &[u8] = match path.as_str() {
                        "/close" => b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
                        "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;x=y\r\nwiki\r\n5\r\npedia\r\n0\r\nx-trailer: 1\r\n\r\n",
                        "/nothing" => b"HTTP/1.1 204 No Content\r\nx-empty: yes\r\n\r\n",
                        _ => b"SSH-2.0-NotHttp\r\n\r\n",
                    };
                    if stream.write_all(answer).await.is_err() || path == "/close" {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepts)
}

#[tokio::test]
async fn upstream_answers_are_framed_as_http11_says() {
    let (addr, accepts) = scripted_upstream().await;
    let proxy = Running::start(state(
        ServiceSpec {
            targets: vec![Target {
                url: format!("http://{addr}"),
                weight: 1,
            }],
            ..Default::default()
        },
        &[],
    ))
    .await;
    let send = async |method: Method, path: &str, body: Body| {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", proxy.addr))
            .body(body)
            .unwrap();
        let resp = proxy.client.request(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    };

    // Chunks (with an extension and a trailer) and a 204 keep the connection for the next.
    for _ in 0..2 {
        let (status, _, body) = send(Method::GET, "/chunked", Empty::new().boxed()).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"wikipedia"[..]));
        let (status, headers, body) = send(Method::GET, "/nothing", Empty::new().boxed()).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(headers["x-empty"], "yes");
        assert!(body.is_empty());
    }
    assert_eq!(
        accepts.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );

    // A body that ends when the upstream closes: complete, and the connection is not kept.
    let (status, _, body) = send(Method::GET, "/close", Empty::new().boxed()).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"until the end"[..]));
    let (status, _, _) = send(Method::GET, "/chunked", Empty::new().boxed()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        accepts.load(Ordering::SeqCst) >= 2,
        "a closed connection is not reused"
    );

    // Not HTTP at all: a 502 naming the failure, and the proxy goes on.
    let (status, _, body) = send(Method::GET, "/garbage", Empty::new().boxed()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let error: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(error.error, "upstream_error");

    // An answer sent before the upload was read reaches the client while it still uploads.
    let chunks = futures_util::stream::iter(
        (0..64).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![7u8; 128 * 1024])))),
    );
    let upload = BodyExt::boxed(StreamBody::new(chunks));
    let (status, _, body) = send(Method::POST, "/early", upload).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::PAYLOAD_TOO_LARGE, &b"nope"[..])
    );

    let (status, _, body) = send(Method::GET, "/chunked", Empty::new().boxed()).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"wikipedia"[..]));
    proxy.stop().await;
}
