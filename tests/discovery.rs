//! Service discovery and certificates on a real three-node cluster: instances registered on one
//! node expire on every node when their heartbeats stop, heartbeats keep them, and a certificate's
//! private key never comes back out of the admin API.

mod support;

use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};
use raftgate_client::ClientError;
use raftgate_model::{Entity, InstanceSpec, ServiceSpec};
use support::{Cluster, eventually};

fn instance(url: &str, ttl_ms: u64) -> InstanceSpec {
    InstanceSpec {
        service: String::new(),
        url: url.into(),
        weight: 1,
        ttl_ms,
    }
}

async fn instances(cluster: &Cluster, node: u64) -> Vec<String> {
    let list = cluster
        .client(node)
        .list_instances("disc")
        .await
        .expect("list instances");
    list.into_iter().map(|e| e.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_instances_expire_everywhere_and_heartbeats_keep_them() {
    let (cluster, leader) = Cluster::start(&[1, 2, 3], None).await;
    let follower = [1, 2, 3]
        .into_iter()
        .find(|&n| n != leader)
        .expect("a follower");
    let c = cluster.client(follower);
    c.put("disc", &ServiceSpec::default(), None)
        .await
        .expect("PUT service without targets");

    for (id, port) in [("alive", 9001), ("lapsing", 9002)] {
        let stored = c
            .register_instance(
                "disc",
                id,
                &instance(&format!("http://127.0.0.1:{port}"), 1_500),
            )
            .await
            .expect("register");
        assert_eq!(
            stored.spec.service, "disc",
            "the service comes from the URL"
        );
    }
    for node in [1, 2, 3] {
        let seen = eventually(Duration::from_secs(5), || async {
            (instances(&cluster, node).await.len() == 2).then_some(())
        })
        .await;
        assert!(seen.is_some(), "node {node} never saw both instances");
    }

    // Heartbeat `alive` through different nodes; let `lapsing` lapse.
    let started = Instant::now();
    let mut expired_after = None;
    while started.elapsed() < Duration::from_secs(6) {
        let node = 1 + (started.elapsed().as_millis() / 500 % 3) as u64;
        cluster
            .client(node)
            .heartbeat_instance("disc", "alive")
            .await
            .expect("heartbeat");
        if expired_after.is_none() && instances(&cluster, follower).await == ["alive"] {
            expired_after = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let expired_after = expired_after.expect("the instance without heartbeats never expired");
    eprintln!("instance with a 1.5 s TTL removed after {expired_after:?}");
    assert!(
        expired_after >= Duration::from_millis(1_000),
        "expired too early: {expired_after:?}"
    );
    for node in [1, 2, 3] {
        assert_eq!(instances(&cluster, node).await, ["alive"], "node {node}");
    }

    // A lapsed instance cannot heartbeat: it must register again.
    let status = |r: Result<Entity<InstanceSpec>, ClientError>| r.err().and_then(|e| e.status());
    assert_eq!(
        status(c.heartbeat_instance("disc", "lapsing").await),
        Some(StatusCode::NOT_FOUND)
    );
    // Instances of an unknown service are refused; a body naming another service too.
    let x = instance("http://127.0.0.1:1", 5_000);
    assert_eq!(
        status(c.register_instance("nope", "x", &x).await),
        Some(StatusCode::NOT_FOUND)
    );
    let other = InstanceSpec {
        service: "other".into(),
        ..x
    };
    assert_eq!(
        status(c.register_instance("disc", "x", &other).await),
        Some(StatusCode::BAD_REQUEST)
    );

    // Deleting the service takes its instances along.
    c.delete::<ServiceSpec>("disc", None)
        .await
        .expect("DELETE service");
    assert_eq!(
        c.list_instances("disc")
            .await
            .err()
            .and_then(|e| e.status()),
        Some(StatusCode::NOT_FOUND)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_keys_are_never_returned() {
    let (cluster, _) = Cluster::start(&[1], None).await;
    let c = cluster.client(1);
    let cert = include_str!("fixtures/test-cert.pem");
    let key = include_str!("fixtures/test-key.pem");
    let body = serde_json::json!({ "cert": cert, "key": key, "snis": ["test.raftgate.local"] });
    let (status, _, answer) = c
        .request(
            Method::PUT,
            "/certificates/test",
            Some(body.to_string().into_bytes()),
            HeaderMap::new(),
        )
        .await
        .expect("PUT certificate");
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    for path in ["/certificates/test", "/certificates"] {
        let (status, _, answer) = c
            .request(Method::GET, path, None, HeaderMap::new())
            .await
            .expect("GET");
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("BEGIN CERTIFICATE"), "{path}: {text}");
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("\"key\""),
            "{path} leaks the key: {text}"
        );
    }
    // A key that is not PEM is refused, naming the field.
    let bad = serde_json::json!({ "cert": cert, "key": "not a key", "snis": ["a.example.com"] });
    let (status, _, answer) = c
        .request(
            Method::PUT,
            "/certificates/bad",
            Some(bad.to_string().into_bytes()),
            HeaderMap::new(),
        )
        .await
        .expect("PUT certificate");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let err: raftgate_model::api::ErrorBody = serde_json::from_slice(&answer).expect("error body");
    assert_eq!(err.field.as_deref(), Some("key"));
}
