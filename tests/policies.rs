//! Route policies through real `raftgate serve` processes: every authentication mode's success
//! and failure paths, ACLs, validation of policies on write, a rate limit enforced across three
//! nodes receiving traffic, and a quota that survives a restart of the whole cluster.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use raftgate_client::{AdminClient, ClientError};
use raftgate_model::policy::{
    AllowDeny, AuthPolicy, BasicAuth, BasicCredential, CorsPolicy, JwtAlgorithm, JwtAuth,
    JwtCredential, KeyAuth, LimitScope, Policies,
};
use raftgate_model::{ConsumerSpec, NodeId, RateLimitSpec, RateWindow, RouteSpec};
use support::{Cluster, Echo, eventually, route, service};

/// What came back from the proxy.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: serde_json::Value,
}

impl Reply {
    /// What the echo upstream received: `uri`, or the first value of a header (`-` when it
    /// got none).
    fn seen(&self, field: &str) -> &str {
        if field == "uri" {
            return self.body["uri"].as_str().unwrap_or("<missing>");
        }
        self.body["headers"][field][0].as_str().unwrap_or("-")
    }
}

#[derive(Clone)]
struct Proxy {
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Proxy {
    fn new() -> Proxy {
        Proxy {
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(
        &self,
        proxy: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{proxy}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::default()).expect("request");
        let response = tokio::time::timeout(Duration::from_secs(10), self.http.request(req))
            .await
            .expect("the proxy answers within 10 s")
            .expect("the proxy answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, proxy: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(proxy, Method::GET, path, headers).await
    }

    /// Waits until the proxy routes `path` (it reloads its routes just after the write).
    async fn wait_route(&self, proxy: SocketAddr, path: &str) {
        let routed = eventually(Duration::from_secs(5), || async {
            (self.get(proxy, path, &[]).await.status != StatusCode::NOT_FOUND).then_some(())
        })
        .await;
        assert!(routed.is_some(), "{proxy} routes {path}");
    }
}

fn with_policies(service: &str, path: &str, policies: Policies) -> RouteSpec {
    RouteSpec {
        policies,
        ..route(service, path)
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn api_status<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (StatusCode, Option<String>) {
    match r {
        Err(ClientError::Api { status, body }) => (status, body.field),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_mode_acl_and_policy_validation() {
    // A cluster secret, so that HS256 secrets can be sealed at rest.
    let mut cluster = Cluster::new(&[1], None);
    cluster.set_args(
        1,
        vec![
            "--cluster-secret".into(),
            "the-cluster-secret-of-the-policy-test".into(),
        ],
    );
    cluster.spawn(1);
    cluster.wait_healthy(1).await;
    cluster.wait_for_leader(&[1]).await;
    let c = cluster.client(1);
    let proxy_addr = cluster.node(1).addrs.proxy;
    let proxy = Proxy::new();
    let echo = Echo::start().await;
    c.put("svc", &service(&format!("http://{}", echo.addr)), None)
        .await
        .expect("PUT service");

    // Consumers: alice is in the gold group; bob is not.
    let hs_secret = "alice-hs256-secret";
    let es_key = rcgen::KeyPair::generate().expect("an ECDSA P-256 key");
    let alice = ConsumerSpec {
        groups: vec!["gold".into()],
        jwt: vec![JwtCredential {
            issuer: "alice-app".into(),
            algorithm: JwtAlgorithm::HS256,
            key: Some(hs_secret.into()),
            jwks: None,
        }],
        ..Default::default()
    };
    c.put("alice", &alice, None).await.expect("PUT alice");
    let carol = ConsumerSpec {
        jwt: vec![JwtCredential {
            issuer: "carol-app".into(),
            algorithm: JwtAlgorithm::ES256,
            key: Some(es_key.public_key_pem()),
            jwks: None,
        }],
        ..Default::default()
    };
    c.put("carol", &carol, None).await.expect("PUT carol");
    c.put("bob", &ConsumerSpec::default(), None)
        .await
        .expect("PUT bob");
    let dave = ConsumerSpec {
        basic_auth: Some(BasicCredential {
            username: "dave".into(),
            password: "correct horse".into(),
        }),
        ..Default::default()
    };
    let stored = c.put("dave", &dave, None).await.expect("PUT dave");
    let basic = stored.spec.basic_auth.as_ref().expect("basic credential");
    // Neither the password nor its hash is shown (tests/hostile.rs checks the data at rest).
    assert!(basic.username == "dave" && basic.password_set, "{basic:?}");

    let key_auth = AuthPolicy {
        key_auth: Some(KeyAuth {
            query_param: Some("apikey".into()),
            ..KeyAuth::default()
        }),
        ..Default::default()
    };
    c.put(
        "keyed",
        &with_policies(
            "svc",
            "/key",
            Policies {
                auth: Some(key_auth),
                acl: Some(AllowDeny {
                    allow: vec!["gold".into()],
                    deny: vec![],
                }),
                ..Default::default()
            },
        ),
        None,
    )
    .await
    .expect("PUT keyed route");
    c.put(
        "jwt",
        &with_policies(
            "svc",
            "/jwt",
            Policies {
                auth: Some(AuthPolicy {
                    jwt: Some(JwtAuth {
                        audiences: vec!["orders".into()],
                        ..JwtAuth::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        None,
    )
    .await
    .expect("PUT jwt route");
    c.put(
        "basic",
        &with_policies(
            "svc",
            "/basic",
            Policies {
                auth: Some(AuthPolicy {
                    basic: Some(BasicAuth {
                        realm: "shop".into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        None,
    )
    .await
    .expect("PUT basic route");

    let k1 = c.create_key("alice").await.expect("alice's first key").key;
    let k2 = c.create_key("alice").await.expect("alice's second key");
    let kb = c.create_key("bob").await.expect("bob's key").key;

    for path in ["/key", "/jwt", "/basic"] {
        proxy.wait_route(proxy_addr, path).await;
    }

    // --- key-auth ---
    let r = proxy.get(proxy_addr, "/key", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no key: {r:?}");
    assert!(r.headers.contains_key("www-authenticate"));
    assert_eq!(r.body["error"], "unauthorized");
    let r = proxy
        .get(proxy_addr, "/key", &[("apikey", "rgk_wrong")])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "wrong key: {r:?}");
    let r = proxy
        .get(
            proxy_addr,
            "/key",
            &[("apikey", &k1), ("x-consumer-name", "mallory")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "alice's key in the header: {r:?}");
    assert_eq!(
        r.seen("x-consumer-name"),
        "alice",
        "the upstream learns the consumer, not a spoof"
    );
    assert_eq!(r.seen("apikey"), "-", "the key is hidden from the upstream");
    // Rotation: both keys work at once.
    let r = proxy
        .get(
            proxy_addr,
            "/key",
            &[("authorization", &format!("Bearer {}", k2.key))],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "alice's second key as a bearer: {r:?}"
    );
    assert_eq!(r.seen("authorization"), "-");
    let r = proxy
        .get(proxy_addr, &format!("/key/x?a=1&apikey={k1}"), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "key in the query: {r:?}");
    assert_eq!(
        r.seen("uri"),
        "/key/x?a=1",
        "the query parameter is removed"
    );
    // ACL: bob's key is valid, but bob is not in the gold group.
    let r = proxy.get(proxy_addr, "/key", &[("apikey", &kb)]).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "bob is refused by the ACL: {r:?}"
    );
    assert_eq!(r.body["error"], "forbidden");
    // Revoking the first key leaves the second working.
    let first_id = c
        .list_keys("alice")
        .await
        .expect("alice's keys")
        .into_iter()
        .find(|k| k.id != k2.id)
        .expect("the first key")
        .id;
    c.delete_key("alice", &first_id).await.expect("revoke");
    let r = proxy.get(proxy_addr, "/key", &[("apikey", &k1)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "revoked key: {r:?}");
    let r = proxy.get(proxy_addr, "/key", &[("apikey", &k2.key)]).await;
    assert_eq!(r.status, StatusCode::OK, "the rotated-in key: {r:?}");

    // --- JWT ---
    let hs = |claims: serde_json::Value, secret: &str| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign HS256")
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let now = now_s();
    let good =
        serde_json::json!({"iss": "alice-app", "aud": "orders", "exp": now + 300, "sub": "u1"});
    let r = proxy
        .get(
            proxy_addr,
            "/jwt",
            &[("authorization", &bearer(&hs(good.clone(), hs_secret)))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "valid HS256 token: {r:?}");
    assert_eq!(r.seen("x-consumer-name"), "alice");
    let es = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &serde_json::json!({"iss": "carol-app", "aud": "orders", "exp": now + 300}),
        &EncodingKey::from_ec_pem(es_key.serialize_pem().as_bytes()).expect("EC key"),
    )
    .expect("sign ES256");
    let r = proxy
        .get(proxy_addr, "/jwt", &[("authorization", &bearer(&es))])
        .await;
    assert_eq!(r.status, StatusCode::OK, "valid ES256 token: {r:?}");
    assert_eq!(r.seen("x-consumer-name"), "carol");
    let refused = [
        ("missing", None),
        (
            "signed with the wrong key",
            Some(hs(good, "not-the-secret")),
        ),
        (
            "expired",
            Some(hs(
                serde_json::json!({"iss": "alice-app", "aud": "orders", "exp": now - 120}),
                hs_secret,
            )),
        ),
        (
            "wrong audience",
            Some(hs(
                serde_json::json!({"iss": "alice-app", "aud": "billing", "exp": now + 300}),
                hs_secret,
            )),
        ),
        (
            "not yet valid",
            Some(hs(
                serde_json::json!({"iss": "alice-app", "aud": "orders", "exp": now + 900, "nbf": now + 600}),
                hs_secret,
            )),
        ),
        (
            "unknown issuer",
            Some(hs(
                serde_json::json!({"iss": "eve", "aud": "orders", "exp": now + 300}),
                hs_secret,
            )),
        ),
    ];
    for (case, token) in refused {
        let auth = token.map(|t| bearer(&t));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = proxy.get(proxy_addr, "/jwt", &headers).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{case}: {r:?}");
        assert!(r.headers.contains_key("www-authenticate"), "{case}");
    }

    // --- HTTP basic ---
    use base64::Engine as _;
    let basic = |user: &str, pw: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    };
    let r = proxy
        .get(
            proxy_addr,
            "/basic",
            &[("authorization", &basic("dave", "correct horse"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "right password: {r:?}");
    assert_eq!(r.seen("x-consumer-name"), "dave");
    assert_eq!(
        r.seen("authorization"),
        "-",
        "the password is hidden from the upstream"
    );
    let r = proxy
        .get(
            proxy_addr,
            "/basic",
            &[("authorization", &basic("dave", "wrong"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "wrong password: {r:?}");
    let challenge = r.headers.get("www-authenticate").expect("challenge");
    assert_eq!(challenge, "Basic realm=\"shop\", charset=\"UTF-8\"");
    let r = proxy.get(proxy_addr, "/basic", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no credentials: {r:?}");

    // --- IP rules and CORS ---
    c.put(
        "walled",
        &with_policies(
            "svc",
            "/walled",
            Policies {
                ip: Some(AllowDeny {
                    allow: vec![],
                    deny: vec!["127.0.0.0/8".into()],
                }),
                ..Default::default()
            },
        ),
        None,
    )
    .await
    .expect("PUT walled route");
    proxy.wait_route(proxy_addr, "/walled").await;
    let r = proxy.get(proxy_addr, "/walled", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "loopback is denied: {r:?}");
    // The route lists its methods, without OPTIONS: a preflight still reaches its CORS policy.
    let mut web = with_policies(
        "svc",
        "/web",
        Policies {
            cors: Some(CorsPolicy {
                origins: vec!["https://app.example".into()],
                max_age_s: 600,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    web.methods = vec!["GET".into(), "PUT".into()];
    c.put("web", &web, None).await.expect("PUT web route");
    proxy.wait_route(proxy_addr, "/web").await;
    let preflight = async |method: &'static str| {
        proxy
            .send(
                proxy_addr,
                Method::OPTIONS,
                "/web",
                &[
                    ("origin", "https://app.example"),
                    ("access-control-request-method", method),
                ],
            )
            .await
    };
    let r = preflight("PUT").await;
    assert_eq!(
        r.status,
        StatusCode::NO_CONTENT,
        "preflight answered by the proxy: {r:?}"
    );
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers["access-control-allow-methods"], "PUT");
    let r = preflight("DELETE").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "no route takes DELETE, so none answers its preflight: {r:?}"
    );
    let r = proxy
        .get(proxy_addr, "/web", &[("origin", "https://app.example")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );

    // --- validation on write: 400 naming the field ---
    let bad_ip = with_policies(
        "svc",
        "/x",
        Policies {
            ip: Some(AllowDeny {
                allow: vec!["10.0.0.0/99".into()],
                deny: vec![],
            }),
            ..Default::default()
        },
    );
    assert_eq!(
        api_status(c.put("bad", &bad_ip, None).await),
        (StatusCode::BAD_REQUEST, Some("policies.ip.allow[0]".into()))
    );
    let missing_limit = with_policies(
        "svc",
        "/x",
        Policies {
            rate_limits: vec!["nope".into()],
            ..Default::default()
        },
    );
    assert_eq!(
        api_status(c.put("bad", &missing_limit, None).await),
        (
            StatusCode::BAD_REQUEST,
            Some("policies.rate_limits[0]".into())
        )
    );
    let acl_without_auth = with_policies(
        "svc",
        "/x",
        Policies {
            acl: Some(AllowDeny::default()),
            ..Default::default()
        },
    );
    assert_eq!(
        api_status(c.put("bad", &acl_without_auth, None).await),
        (StatusCode::BAD_REQUEST, Some("policies.acl".into()))
    );
    let bad_jwt = ConsumerSpec {
        jwt: vec![JwtCredential {
            issuer: "x".into(),
            algorithm: JwtAlgorithm::HS256,
            key: None,
            jwks: None,
        }],
        ..Default::default()
    };
    assert_eq!(
        api_status(c.put("erin", &bad_jwt, None).await),
        (StatusCode::BAD_REQUEST, Some("jwt[0].key".into()))
    );
}

/// A key-authenticated route limited per consumer, and the consumer's key.
async fn limited_route(c: &AdminClient, upstream: &str, limit: RateLimitSpec) -> String {
    c.put("svc", &service(upstream), None)
        .await
        .expect("PUT service");
    c.put("lim", &limit, None).await.expect("PUT rate limit");
    c.put("alice", &ConsumerSpec::default(), None)
        .await
        .expect("PUT consumer");
    c.put(
        "limited",
        &with_policies(
            "svc",
            "/limited",
            Policies {
                auth: Some(AuthPolicy {
                    key_auth: Some(KeyAuth::default()),
                    ..Default::default()
                }),
                rate_limits: vec!["lim".into()],
                ..Default::default()
            },
        ),
        None,
    )
    .await
    .expect("PUT route");
    c.create_key("alice").await.expect("key").key
}

/// Waits until node `id` has applied alice's key (and so the route and limit before it).
async fn wait_for_key(cluster: &Cluster, id: NodeId) {
    let applied = eventually(Duration::from_secs(5), || async {
        let keys = cluster.client(id).list_keys("alice").await.ok()?;
        (!keys.is_empty()).then_some(())
    })
    .await;
    assert!(applied.is_some(), "node {id} has alice's key");
}

const ALL: [NodeId; 3] = [1, 2, 3];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_holds_across_three_nodes() {
    const LIMIT: u64 = 96;
    let (cluster, _) = Cluster::start(&ALL, None).await;
    let echo = Echo::start().await;
    let spec = RateLimitSpec {
        limit: LIMIT,
        window: RateWindow::Minute,
        scope: LimitScope::Consumer,
        fixed: false,
        fail_open: false,
        team: None,
    };
    let key = limited_route(cluster.client(1), &format!("http://{}", echo.addr), spec).await;
    let proxies: Vec<SocketAddr> = ALL.iter().map(|id| cluster.node(*id).addrs.proxy).collect();
    let proxy = Proxy::new();
    // Every node has the route and the key before traffic starts.
    for id in ALL {
        wait_for_key(&cluster, id).await;
    }

    // Three times the limit, spread evenly over the three nodes, over about three seconds
    // (about a dozen sync intervals), four requests in flight per node.
    let mut tasks = Vec::new();
    for (n, p) in proxies.iter().enumerate() {
        for worker in 0..4 {
            let (proxy, key, p) = (proxy.clone(), key.clone(), *p);
            tasks.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut last_429 = None;
                for i in 0..(3 * LIMIT as usize / 12) {
                    tokio::time::sleep(Duration::from_millis(
                        ((n * 4 + worker + i) % 7) as u64 * 20 + 100,
                    ))
                    .await;
                    let r = proxy.get(p, "/limited", &[("apikey", &key)]).await;
                    statuses.push(r.status);
                    if r.status == StatusCode::TOO_MANY_REQUESTS {
                        last_429 = Some(r);
                    }
                }
                (statuses, last_429)
            }));
        }
    }
    let mut admitted = 0u64;
    let mut refused = 0u64;
    let mut example = None;
    for t in tasks {
        let (statuses, last) = t.await.expect("traffic task");
        admitted += statuses.iter().filter(|s| **s == StatusCode::OK).count() as u64;
        refused += statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count() as u64;
        example = example.or(last);
    }
    eprintln!("limit {LIMIT}/min across 3 nodes: admitted {admitted}, refused {refused}");
    assert_eq!(
        admitted + refused,
        3 * LIMIT,
        "every request was admitted or refused"
    );
    assert!(
        (LIMIT * 95 / 100..=LIMIT * 105 / 100).contains(&admitted),
        "admitted {admitted} of a limit of {LIMIT}"
    );
    let r = example.expect("some requests were refused");
    assert_eq!(r.body["error"], "rate_limited");
    assert!(r.headers.contains_key("retry-after"), "{r:?}");
    assert_eq!(r.headers["ratelimit-limit"], LIMIT.to_string().as_str());
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    assert!(r.headers.contains_key("ratelimit-reset"));

    // The usage is readable from any node, and matches what was admitted.
    let used = eventually(Duration::from_secs(5), || async {
        let usage = cluster.client(3).consumer_usage("alice").await.ok()?;
        let entry = usage.counters.iter().find(|e| e.rate_limit == "lim")?;
        (entry.used + entry.previous == admitted).then_some(entry.clone())
    })
    .await
    .expect("the replicated usage reaches what was admitted");
    assert_eq!(used.scope, "consumer:alice");
    assert_eq!(used.limit, Some(LIMIT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_survives_a_full_cluster_restart() {
    let (mut cluster, _) = Cluster::start(&ALL, None).await;
    let echo = Echo::start().await;
    let spec = RateLimitSpec {
        limit: 5,
        window: RateWindow::Day,
        scope: LimitScope::Consumer,
        fixed: true,
        fail_open: false,
        team: None,
    };
    let key = limited_route(cluster.client(1), &format!("http://{}", echo.addr), spec).await;
    let proxy = Proxy::new();
    let p2 = cluster.node(2).addrs.proxy;
    wait_for_key(&cluster, 2).await;
    for i in 0..5 {
        let r = proxy.get(p2, "/limited", &[("apikey", &key)]).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "request {i} within the quota: {r:?}"
        );
    }
    let r = proxy.get(p2, "/limited", &[("apikey", &key)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "the sixth: {r:?}");
    let synced = eventually(Duration::from_secs(5), || async {
        let usage = cluster.client(1).consumer_usage("alice").await.ok()?;
        usage.counters.iter().any(|e| e.used == 5).then_some(())
    })
    .await;
    assert!(synced.is_some(), "the usage reached the replicated state");

    cluster.kill_all();
    for id in ALL {
        cluster.restart(id).await;
    }
    cluster.wait_for_leader(&ALL).await;

    for id in ALL {
        // A restarted follower applies the log again once the new leader tells it what is
        // committed, so its local copy may take a moment.
        let entry = eventually(Duration::from_secs(10), || async {
            let usage = cluster.client(id).consumer_usage("alice").await.ok()?;
            usage
                .counters
                .into_iter()
                .find(|e| e.rate_limit == "lim" && e.used > 0)
        })
        .await
        .expect("the quota counter survived");
        assert_eq!((entry.used, entry.limit), (5, Some(5)), "node {id}");
    }
    let mut statuses = BTreeMap::new();
    for id in ALL {
        let r = proxy
            .get(
                cluster.node(id).addrs.proxy,
                "/limited",
                &[("apikey", &key)],
            )
            .await;
        statuses.insert(id, r.status);
    }
    assert!(
        statuses
            .values()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "the quota is still used up on every node: {statuses:?}"
    );
}
