//! The findings of a hostile probe (issue 16), each driven through real `raftgate serve`
//! processes, real upstreams and raw client bytes: dot-segment path tricks against route
//! policies, JWT audiences, secrets in admin answers and at rest, identity headers spoofed by
//! clients, connections that never time out, malformed upstream answers, header hygiene, and
//! names that clients cannot read back.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use raftgate_model::ConsumerSpec;
use raftgate_model::access::TokenRole;
use raftgate_model::policy::{AuthPolicy, JwtAlgorithm, JwtCredential, KeyAuth, Policies};
use serde_json::{Value, json};
use support::{Cluster, Echo, eventually, route, service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "the-cluster-secret-of-the-hostile-test";

/// A one-node cluster with a cluster secret (so secrets can be sealed) and `args`.
async fn node(token: Option<&str>, args: &[&str]) -> Cluster {
    let mut cluster = Cluster::new(&[1], token);
    let mut all = vec!["--cluster-secret".to_string(), SECRET.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    cluster.set_args(1, all);
    cluster.spawn(1);
    cluster.wait_healthy(1).await;
    cluster.wait_for_leader(&[1]).await;
    cluster
}

/// An answer read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// What the echo upstream says it received as the request target.
    fn upstream_uri(&self) -> String {
        self.json()["uri"]
            .as_str()
            .unwrap_or("<not the upstream>")
            .to_string()
    }

    /// The values of header `name` the echo upstream received.
    fn upstream_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Writes `request` as is to `addr` and reads the answer until the server closes or 5 s pass;
/// the request should carry `Connection: close`.
async fn raw(addr: SocketAddr, request: &str) -> Raw {
    raw_bytes(addr, request.as_bytes()).await
}

async fn raw_bytes(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // A chunked body: keep only the data of the first chunk (enough for the JSON answers here).
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split_once("\r\n")
            .map_or(body, |(_, rest)| rest.split("\r\n").next().unwrap_or(""))
    } else {
        body
    };
    Raw {
        status,
        body: body.to_string(),
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
}

/// An echo upstream behind service `svc` and route `open` (prefix `/open`, no policies) on
/// node 1, once its proxy serves the route; the upstream stops when the answer is dropped.
async fn open_route(cluster: &Cluster) -> Echo {
    let echo = Echo::start().await;
    let c = cluster.client(1);
    c.put("svc", &service(&echo.url()), None)
        .await
        .expect("PUT service");
    c.put("open", &route("svc", "/open"), None)
        .await
        .expect("PUT /open");
    wait_routed(cluster.node(1).addrs.proxy, "/open").await;
    echo
}

/// Waits until the proxy routes `path` to an upstream (it reloads just after a write).
async fn wait_routed(proxy: SocketAddr, path: &str) {
    let routed = eventually(Duration::from_secs(10), || async {
        (raw(proxy, &get(path)).await.status != 404).then_some(())
    })
    .await;
    assert!(routed.is_some(), "{proxy} routes {path}");
}

fn key_auth() -> Policies {
    Policies {
        auth: Some(AuthPolicy {
            key_auth: Some(KeyAuth::default()),
            ..AuthPolicy::default()
        }),
        ..Policies::default()
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

// ---------------------------------------------------------------------------------------------
// Finding 1: dot-segments

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_and_encoded_slashes_cannot_bypass_route_policies() {
    let cluster = node(None, &[]).await;
    let c = cluster.client(1);
    let proxy = cluster.node(1).addrs.proxy;
    let echo = Echo::start().await;
    c.put("files", &service(&echo.url()), None)
        .await
        .expect("PUT service");
    c.put("pub", &route("files", "/pub"), None)
        .await
        .expect("PUT /pub");
    let mut private = route("files", "/priv");
    private.policies = key_auth();
    c.put("priv", &private, None).await.expect("PUT /priv");
    wait_routed(proxy, "/priv/secret.txt").await;

    assert_eq!(raw(proxy, &get("/priv/secret.txt")).await.status, 401);
    assert_eq!(raw(proxy, &get("/pub/secret.txt")).await.status, 200);
    // Every spelling of "up one segment" lands on /priv, where the key is required.
    for path in [
        "/pub/../priv/secret.txt",
        "/pub/%2e%2e/priv/secret.txt",
        "/pub/%2E%2e/priv/secret.txt",
        "/pub/.%2e/priv/secret.txt",
        "/pub/./../priv/secret.txt",
        "/pub//..//priv/secret.txt",
        "/pub/x/../../priv/secret.txt",
    ] {
        let r = raw(proxy, &get(path)).await;
        assert_eq!(
            r.status, 401,
            "{path} must be judged as /priv/secret.txt: {r:?}"
        );
    }
    // What cannot be normalised safely is refused.
    for path in [
        "/pub/..%2fpriv/secret.txt",
        "/pub/..%2Fpriv/secret.txt",
        "/pub/..%5cpriv/secret.txt",
        "/pub/..\\priv/secret.txt",
        "/pub/../../priv/secret.txt",
        "/..",
        "/pub/%00",
        "/pub/%zz",
    ] {
        let r = raw(proxy, &get(path)).await;
        assert_eq!(r.status, 400, "{path} is refused: {r:?}");
        assert_eq!(r.json()["error"], "bad_path", "{path}: {r:?}");
    }
    // The upstream receives the path that was matched, the query untouched.
    for (sent, forwarded) in [
        ("/pub/./a/b/../c", "/pub/a/c"),
        ("//pub///a", "/pub/a"),
        ("/pub/%7euser/%41", "/pub/~user/A"),
        ("/pub/a%2fb", "<refused>"),
        ("/pub/sp%20ace/%3f", "/pub/sp%20ace/%3F"),
        (
            "/pub/x/.?q=/../../etc&r=%2e%2e",
            "/pub/x/?q=/../../etc&r=%2e%2e",
        ),
        ("/pub/.well-known/x", "/pub/.well-known/x"),
    ] {
        let r = raw(proxy, &get(sent)).await;
        if forwarded == "<refused>" {
            assert_eq!(r.status, 400, "{sent}: {r:?}");
        } else {
            assert_eq!(r.status, 200, "{sent}: {r:?}");
            assert_eq!(r.upstream_uri(), forwarded, "{sent}");
        }
    }
    // HTTP/2 (prior knowledge) is normalised the same way.
    let stream = TcpStream::connect(proxy).await.expect("connect h2c");
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    let request = Request::get(format!("http://{proxy}/pub/%2e%2e/priv/secret.txt"))
        .body(Full::<Bytes>::default())
        .expect("request");
    let answer = h2.send_request(request).await.expect("h2 answer");
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    // The AI gateway's paths are found after normalisation too: this is its 401, not the
    // upstream's 200 through /pub.
    let r = raw(proxy, &get("/pub/../v1/models")).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.upstream_uri().starts_with('<'), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Findings 3, 4, 10: JWT audiences, secrets in answers and at rest, the JWT forwarded

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign HS256")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_audiences_are_required_and_secrets_never_leave_the_cluster() {
    let cluster = node(Some("hostile-admin-token"), &[]).await;
    let c = cluster.client(1);
    let proxy = cluster.node(1).addrs.proxy;
    let echo = Echo::start().await;
    let hs_secret = "an-hs256-secret-nobody-may-read-back";
    let password = "a-basic-password-nobody-may-read-back";
    c.put("svc", &service(&echo.url()), None)
        .await
        .expect("PUT service");
    let alice = ConsumerSpec {
        jwt: vec![JwtCredential {
            issuer: "alice-app".into(),
            algorithm: JwtAlgorithm::HS256,
            key: Some(hs_secret.into()),
            jwks: None,
        }],
        basic_auth: Some(raftgate_model::policy::BasicCredential {
            username: "alice".into(),
            password: password.into(),
        }),
        ..ConsumerSpec::default()
    };
    c.put("alice", &alice, None).await.expect("PUT alice");
    let jwt_route = |hide: bool| {
        json!({"service": "svc", "paths": ["/jwt"], "policies": {"auth": {"jwt": {
            "audiences": ["orders"], "hide_credentials": hide}}}})
    };
    let (status, _, body) = c
        .request(
            Method::PUT,
            "/routes/jwt",
            Some(
                json!({"service": "svc", "paths": ["/jwt"], "policies": {"auth": {"jwt": {
                    "audiences": ["orders"]}}}})
                .to_string()
                .into_bytes(),
            ),
            HeaderMap::new(),
        )
        .await
        .expect("PUT /routes/jwt");
    assert!(status.is_success(), "{status} {body:?}");
    wait_routed(proxy, "/jwt").await;

    let now = now_s();
    let bearer = |claims: Value| {
        format!(
            "GET /jwt HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            hs256(&claims, hs_secret)
        )
    };
    let good = raw(
        proxy,
        &bearer(json!({"iss": "alice-app", "aud": "orders", "exp": now + 300})),
    )
    .await;
    assert_eq!(good.status, 200, "{good:?}");
    // Finding 3: a token without `aud` on a route that lists audiences.
    let no_aud = raw(
        proxy,
        &bearer(json!({"iss": "alice-app", "exp": now + 300})),
    )
    .await;
    assert_eq!(no_aud.status, 401, "a token without aud: {no_aud:?}");
    let wrong_aud = raw(
        proxy,
        &bearer(json!({"iss": "alice-app", "aud": "x", "exp": now + 300})),
    )
    .await;
    assert_eq!(wrong_aud.status, 401, "{wrong_aud:?}");
    // Finding 10: `alg: none` gets a plain message, not the JWT library's internals.
    let none = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(
            json!({"iss": "alice-app", "aud": "orders", "exp": now + 300})
                .to_string()
                .as_bytes()
        )
    );
    let r = raw(
        proxy,
        &format!("GET /jwt HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {none}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    let message = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("unsupported algorithm"), "{message}");
    assert!(!message.contains("variant"), "{message}");
    // Finding 10: the JWT is forwarded unless the route hides it.
    assert_eq!(good.upstream_header("authorization").len(), 1, "{good:?}");
    let (status, _, _) = c
        .request(
            Method::PUT,
            "/routes/jwt",
            Some(jwt_route(true).to_string().into_bytes()),
            HeaderMap::new(),
        )
        .await
        .expect("PUT /routes/jwt hiding the token");
    assert!(status.is_success());
    let hidden = eventually(Duration::from_secs(5), || async {
        let r = raw(
            proxy,
            &bearer(json!({"iss": "alice-app", "aud": "orders", "exp": now + 300})),
        )
        .await;
        (r.status == 200 && r.upstream_header("authorization").is_empty()).then_some(r)
    })
    .await;
    assert!(hidden.is_some(), "hide_credentials strips the JWT");

    // Finding 4: neither the HS256 secret nor the password hash comes back, to any token.
    let reader = c
        .create_token("reader", TokenRole::ReadOnly)
        .await
        .expect("read-only token");
    let read_only =
        raftgate_client::AdminClient::new(c.base(), Some(reader.token)).expect("client");
    for client in [c, &read_only] {
        for path in ["/consumers", "/consumers/alice"] {
            let (status, _, body) = client
                .request(Method::GET, path, None, HeaderMap::new())
                .await
                .expect("GET consumers");
            assert_eq!(status, StatusCode::OK);
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains(hs_secret),
                "{path} shows the HS256 secret: {text}"
            );
            assert!(
                !text.contains("sealed:"),
                "{path} shows the sealed secret: {text}"
            );
            assert!(
                !text.contains("$argon2"),
                "{path} shows the password hash: {text}"
            );
            assert!(text.contains(r#""key_set":true"#), "{path}: {text}");
            assert!(text.contains(r#""password_set":true"#), "{path}: {text}");
        }
    }
    // A consumer read back and written again keeps its secrets (they are write-only).
    let (_, _, body) = c
        .request(Method::GET, "/consumers/alice", None, HeaderMap::new())
        .await
        .expect("GET alice");
    let mut shown: Value = serde_json::from_slice(&body).expect("consumer JSON");
    shown["spec"]["groups"] = json!(["gold"]);
    // The view's `*_set` flags are not part of a write.
    for credential in shown["spec"]["jwt"]
        .as_array_mut()
        .expect("jwt credentials")
    {
        credential.as_object_mut().map(|c| c.remove("key_set"));
    }
    shown["spec"]["basic_auth"]
        .as_object_mut()
        .map(|b| b.remove("password_set"));
    let (status, _, body) = c
        .request(
            Method::PUT,
            "/consumers/alice",
            Some(shown["spec"].to_string().into_bytes()),
            HeaderMap::new(),
        )
        .await
        .expect("PUT alice back");
    assert!(
        status.is_success(),
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    let still = eventually(Duration::from_secs(5), || async {
        let r = raw(
            proxy,
            &bearer(json!({"iss": "alice-app", "aud": "orders", "exp": now + 300})),
        )
        .await;
        (r.status == 200).then_some(())
    })
    .await;
    assert!(
        still.is_some(),
        "the stored HS256 secret still verifies tokens"
    );
    // At rest: the Raft log and the snapshots hold only the sealed secret.
    c.trigger_snapshot().await.expect("snapshot");
    let mut files = vec![cluster.data_dir(1).to_path_buf()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read data dir").flatten() {
                files.push(entry.path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            scanned += bytes.len();
            assert!(
                !bytes
                    .windows(hs_secret.len())
                    .any(|w| w == hs_secret.as_bytes()),
                "{} holds the HS256 secret in clear",
                path.display()
            );
            assert!(
                !bytes
                    .windows(password.len())
                    .any(|w| w == password.as_bytes()),
                "{} holds the password in clear",
                path.display()
            );
        }
    }
    assert!(scanned > 0, "the data directory holds the node's state");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// Findings 5 and 8: identity headers and header hygiene

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_and_framing_headers_never_reach_upstreams() {
    let cluster = node(None, &[]).await;
    let c = cluster.client(1);
    let proxy = cluster.node(1).addrs.proxy;
    let _echo = open_route(&cluster).await;

    // Finding 5: on a route without authentication, a client's X-Consumer-Name is dropped.
    let r = raw(
        proxy,
        "GET /open HTTP/1.1\r\nHost: gw\r\nX-Consumer-Name: admin\r\nX_Consumer_Name: admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.upstream_header("x-consumer-name").is_empty(), "{r:?}");
    assert!(r.upstream_header("x_consumer_name").is_empty(), "{r:?}");
    // Finding 8: underscore twins of framing headers are dropped; other underscores pass.
    let r = raw(
        proxy,
        "GET /open HTTP/1.1\r\nHost: gw\r\nContent_Length: 5\r\nTransfer_Encoding: chunked\r\nX_Custom: kept\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.upstream_header("content_length").is_empty(), "{r:?}");
    assert!(r.upstream_header("transfer_encoding").is_empty(), "{r:?}");
    assert_eq!(r.upstream_header("x_custom"), ["kept"], "{r:?}");
    // An h2c upgrade is never passed on: the request is answered over HTTP/1.1.
    let r = raw(
        proxy,
        "GET /open HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.upstream_header("upgrade").is_empty(), "{r:?}");
    assert!(r.upstream_header("http2-settings").is_empty(), "{r:?}");
    // Other upgrades reach only routes that allow them.
    let (status, _, _) = c
        .request(
            Method::PUT,
            "/routes/closed",
            Some(
                json!({"service": "svc", "paths": ["/closed"], "upgrades": []})
                    .to_string()
                    .into_bytes(),
            ),
            HeaderMap::new(),
        )
        .await
        .expect("PUT /closed");
    assert!(status.is_success(), "a route may refuse upgrades: {status}");
    wait_routed(proxy, "/closed").await;
    let websocket = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    let r = raw(proxy, &websocket("/open")).await;
    assert_eq!(r.upstream_header("upgrade"), ["websocket"], "{r:?}");
    let r = raw(proxy, &websocket("/closed")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.upstream_header("upgrade").is_empty(), "{r:?}");
    // RFC 9112 §3.2: an HTTP/1.1 request without Host, or with two, is a 400.
    let r = raw(proxy, "GET /open HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 400, "no Host: {r:?}");
    let r = raw(
        proxy,
        "GET /open HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "two Hosts: {r:?}");
    let r = raw(proxy, "GET /open HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200, "HTTP/1.0 needs no Host: {r:?}");
    // Userinfo of an absolute-form target never reaches X-Forwarded-Host.
    let r = raw(
        proxy,
        "GET http://user:pass@gw.test/open HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upstream_header("x-forwarded-host"), ["gw.test"], "{r:?}");
    // CONNECT is not proxied.
    let r = raw(
        proxy,
        "CONNECT gw.test:443 HTTP/1.1\r\nHost: gw.test:443\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Finding 7: malformed upstream answers

/// The raw answer the scripted upstream gives to `path`.
fn scripted_answer(path: &str) -> Vec<u8> {
    match path {
        "/both" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        "/chunked-lengths" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1, 2\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        "/switch" => b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n".to_vec(),
        "/big-head" => {
            let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec();
            for i in 0..1000 {
                a.extend_from_slice(format!("X-Filler-{i:04}: {}\r\n", "x".repeat(80)).as_bytes());
            }
            a.extend_from_slice(b"\r\nok");
            a
        }
        "/stall" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-a-part".to_vec(),
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    }
}

/// An upstream that answers each request with the raw bytes [`scripted_answer`] gives for its
/// path; after anything but `/ok` it holds the connection open without another word.
async fn scripted_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind scripted upstream");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let path = text.split(' ').nth(1).unwrap_or("/").to_string();
                    let answer = scripted_answer(&path);
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                    if path != "/ok" {
                        // Hold the connection open: the proxy must not wait for the close.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_answers_become_502_and_stalled_bodies_end() {
    let cluster = node(None, &[]).await;
    let c = cluster.client(1);
    let proxy = cluster.node(1).addrs.proxy;
    let upstream = scripted_upstream().await;
    let mut svc = service(&format!("http://{upstream}"));
    svc.timeouts.read_ms = 500;
    svc.retries = 0;
    c.put("raw", &svc, None).await.expect("PUT service");
    c.put("all", &route("raw", "/"), None)
        .await
        .expect("PUT route");
    wait_routed(proxy, "/ok").await;
    assert_eq!(raw(proxy, &get("/ok")).await.body, "ok");
    for path in ["/both", "/chunked-lengths", "/switch", "/big-head"] {
        let r = raw(proxy, &get(path)).await;
        assert_eq!(r.status, 502, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "upstream_error", "{path}: {r:?}");
    }
    // A body that stalls is cut off after the service's read timeout, not held open.
    let started = Instant::now();
    let r = raw(proxy, &get("/stall")).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.starts_with("only-a-part") && r.body.len() < 100,
        "{r:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the stalled body ended after {took:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 6: connections that never time out

/// Whether the server closed `stream` within `within` (reads return EOF or an error).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_and_connections_are_bounded() {
    let cluster = node(
        None,
        &[
            "--header-timeout-ms",
            "700",
            "--idle-timeout-ms",
            "700",
            "--max-connections",
            "20",
        ],
    )
    .await;
    let c = cluster.client(1);
    let proxy = cluster.node(1).addrs.proxy;
    let admin = cluster.node(1).addrs.admin;
    let _echo = open_route(&cluster).await;

    // A connection that never sends a byte, on the proxy and on the admin API.
    for addr in [proxy, admin] {
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        assert!(
            closed_within(&mut silent, Duration::from_secs(3)).await,
            "{addr}: silent connection closed"
        );
    }
    // A request head sent one byte at a time, slower than the header timeout allows.
    for addr in [proxy, admin] {
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        let mut cut = false;
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" {
            if slow.write_all(&[*byte]).await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if started.elapsed() > Duration::from_secs(4) {
                break;
            }
        }
        assert!(
            cut || closed_within(&mut slow, Duration::from_secs(1)).await,
            "{addr}: slow head cut off"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{addr}: cut after {:?}",
            started.elapsed()
        );
    }
    // An h2c connection idle after its preface and SETTINGS.
    let mut h2 = TcpStream::connect(proxy).await.expect("connect");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    assert!(
        closed_within(&mut h2, Duration::from_secs(3)).await,
        "idle h2c connection closed"
    );
    // A keep-alive HTTP/1.1 connection idle after its answer.
    let mut idle = TcpStream::connect(proxy).await.expect("connect");
    idle.write_all(b"GET /open HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("request");
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)).await,
        "idle keep-alive closed"
    );

    // At most 20 connections per listener: the 21st is closed at once and counted.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(proxy).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(proxy).await.expect("connect");
    assert!(
        closed_within(&mut extra, Duration::from_millis(500)).await,
        "the 21st connection is refused"
    );
    let metrics = c.metrics().await.expect("metrics");
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("raftgate_connections_refused_total{listener=\"proxy\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "refusals are counted:\n{metrics}");
    drop(held);
    // Once they are gone, new connections are served again.
    let served = eventually(Duration::from_secs(5), || async {
        (raw(proxy, &get("/open")).await.status == 200).then_some(())
    })
    .await;
    assert!(served.is_some());
}

// ---------------------------------------------------------------------------------------------
// Finding 10: names a client cannot read back

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_paths_normalise_away_are_refused() {
    let cluster = node(None, &[]).await;
    let c = cluster.client(1);
    for name in [".", "..", "~", "%2e", "%2E%2E"] {
        let (status, _, body) = c
            .request(
                Method::PUT,
                &format!("/services/{name}"),
                Some(
                    json!({"targets": [{"url": "http://127.0.0.1:9", "weight": 1}]})
                        .to_string()
                        .into_bytes(),
                ),
                HeaderMap::new(),
            )
            .await
            .expect("PUT");
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let (status, _, body) = c
        .request(Method::GET, "/services", None, HeaderMap::new())
        .await
        .expect("GET /services");
    assert_eq!(status, StatusCode::OK);
    let list: Value = serde_json::from_slice(&body).expect("list");
    assert_eq!(list["data"], json!([]), "nothing was stored");
}
