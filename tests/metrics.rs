//! `GET /metrics` of real `raftgate serve` processes: proxied traffic through a key-authenticated
//! route and a rate-limited one, to a real upstream, shows up by route, service, consumer and
//! status code, with latencies, rate-limit refusals, upstream health and the Raft gauges — and
//! Prometheus needs no admin token to scrape it.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode, header};
use raftgate_client::AdminClient;
use raftgate_model::policy::{AuthPolicy, KeyAuth, LimitScope, Policies};
use raftgate_model::{ConsumerSpec, NodeId, RouteSpec};
use support::{Cluster, ProxyClient, Upstream, eventually, per_minute, route, service};

const TOKEN: &str = "metrics-test-admin-token";

/// Every sample of a Prometheus text page, by series (name and labels as written).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A client of node `id`'s admin API without any token, as Prometheus scrapes it.
fn anonymous(cluster: &Cluster, id: NodeId) -> AdminClient {
    AdminClient::new(&cluster.node(id).addrs.admin.to_string(), None).expect("admin address")
}

fn keyed(path: &str, rate_limits: Vec<String>) -> RouteSpec {
    RouteSpec {
        policies: Policies {
            auth: Some(AuthPolicy {
                key_auth: Some(KeyAuth::default()),
                ..Default::default()
            }),
            rate_limits,
            ..Default::default()
        },
        ..route("svc", path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_traffic_limits_and_raft_show_in_metrics() {
    let (cluster, leader) = Cluster::start(&[1, 2, 3], Some(TOKEN)).await;
    let c = cluster.client(1);
    let upstream = Upstream::start("up").await;
    c.put("svc", &service(&upstream.url()), None)
        .await
        .expect("PUT service");
    let one_per_minute = per_minute(1, LimitScope::Consumer);
    c.put("one-per-minute", &one_per_minute, None)
        .await
        .expect("PUT rate limit");
    c.put("alice", &ConsumerSpec::default(), None)
        .await
        .expect("PUT consumer");
    c.put("keyed", &keyed("/keyed", vec![]), None)
        .await
        .expect("PUT keyed route");
    c.put(
        "limited",
        &keyed("/limited", vec!["one-per-minute".into()]),
        None,
    )
    .await
    .expect("PUT limited route");
    let key = c.create_key("alice").await.expect("alice's key").key;

    // Every answer node 1's proxy gives, by path and status, to compare with its metrics.
    let proxy_addr = cluster.node(1).addrs.proxy;
    let proxy = ProxyClient::new(Duration::from_secs(10));
    let mut answered: BTreeMap<(&str, StatusCode), u64> = BTreeMap::new();
    let with_key = [("apikey", key.as_str())];
    // The key is written last: once it works, node 1 routes both routes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = proxy
            .get_with_headers(proxy_addr, "/keyed", &with_key)
            .await
            .expect("the proxy answers");
        // Before the route exists the answer is a 404 counted under no route, not "/keyed".
        if status != StatusCode::NOT_FOUND {
            *answered.entry(("/keyed", status)).or_default() += 1;
        }
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 proxies /keyed with alice's key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let wrong_key = [("apikey", "rgk_not-a-key")];
    let requests: [(&str, &[(&str, &str)]); 7] = [
        ("/keyed", &with_key),
        ("/keyed", &with_key),
        ("/keyed", &[]),
        ("/keyed", &wrong_key),
        ("/limited", &with_key),
        ("/limited", &with_key),
        ("/limited", &with_key),
    ];
    for (path, headers) in requests {
        let (status, body) = proxy
            .get_with_headers(proxy_addr, path, headers)
            .await
            .expect("the proxy answers");
        if status == StatusCode::OK {
            assert_eq!(body, "up", "served by the real upstream");
        }
        *answered.entry((path, status)).or_default() += 1;
    }
    let count = |path: &str, status: StatusCode| {
        answered.get(&(path, status)).copied().unwrap_or_default() as f64
    };
    assert_eq!(count("/keyed", StatusCode::OK), 3.0, "{answered:?}");
    assert_eq!(
        count("/keyed", StatusCode::UNAUTHORIZED),
        2.0,
        "{answered:?}"
    );
    let limited_ok = count("/limited", StatusCode::OK);
    let refused = count("/limited", StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited_ok, 1.0, "one request a minute: {answered:?}");
    assert_eq!(refused, 2.0, "{answered:?}");

    // No token needed for /metrics, while the rest of the admin API still wants one.
    let scraper = anonymous(&cluster, 1);
    let (status, headers, body) = scraper
        .request(Method::GET, "/metrics", None, HeaderMap::new())
        .await
        .expect("GET /metrics");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let unauthorized = scraper.cluster_status().await;
    assert_eq!(
        unauthorized.err().and_then(|e| e.status()),
        Some(StatusCode::UNAUTHORIZED),
        "only /health and /metrics are open"
    );
    let text = String::from_utf8(body.to_vec()).expect("UTF-8 metrics");
    let m = samples(&text);
    let sample = |series: &str| {
        m.get(series)
            .copied()
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };

    let requests = |route: &str, consumer: &str, code: u16| {
        sample(&format!(
            "raftgate_http_requests_total{{route=\"{route}\",service=\"svc\",consumer=\"{consumer}\",code=\"{code}\"}}"
        ))
    };
    assert_eq!(requests("keyed", "alice", 200), 3.0);
    assert_eq!(requests("keyed", "", 401), 2.0);
    assert_eq!(requests("limited", "alice", 200), limited_ok);
    assert_eq!(requests("limited", "alice", 429), refused);
    assert_eq!(
        sample("raftgate_rate_limit_refusals_total{limit=\"one-per-minute\"}"),
        refused
    );
    assert_eq!(
        sample("raftgate_request_latency_seconds_count{route=\"keyed\",service=\"svc\"}"),
        5.0
    );
    assert_eq!(
        sample(
            "raftgate_request_latency_seconds_bucket{route=\"keyed\",service=\"svc\",le=\"+Inf\"}"
        ),
        5.0
    );
    assert!(sample("raftgate_request_latency_seconds_sum{route=\"keyed\",service=\"svc\"}") > 0.0);
    // Only the admitted requests went upstream.
    assert_eq!(
        sample("raftgate_upstream_latency_seconds_count{route=\"keyed\",service=\"svc\"}"),
        3.0
    );
    assert_eq!(
        sample("raftgate_upstream_latency_seconds_count{route=\"limited\",service=\"svc\"}"),
        limited_ok
    );
    let target = upstream.url();
    let address = upstream.addr;
    assert_eq!(
        sample(&format!(
            "raftgate_upstream_target_health{{service=\"svc\",target=\"{target}\",address=\"{address}\"}}"
        )),
        1.0
    );

    // Every node reports the same leader, and only the leader says it leads.
    for id in [1, 2, 3] {
        let scraper = anonymous(&cluster, id);
        let agreed = eventually(Duration::from_secs(5), || async {
            let m = samples(&scraper.metrics().await.ok()?);
            let get = |name: &str| m.get(name).copied();
            let is_leader = if id == leader { 1.0 } else { 0.0 };
            (get("raftgate_raft_leader_id")? == leader as f64
                && get("raftgate_raft_is_leader")? == is_leader
                && get("raftgate_raft_term")? >= 1.0
                && get("raftgate_raft_applied_index")? >= 6.0
                && get("raftgate_raft_last_log_index")? >= get("raftgate_raft_applied_index")?)
            .then_some(())
        })
        .await;
        assert!(
            agreed.is_some(),
            "node {id}'s Raft gauges name leader {leader}:\n{}",
            scraper.metrics().await.unwrap_or_default()
        );
    }

    // The endpoint is in the OpenAPI document.
    let (status, _, body) = c
        .request(Method::GET, "/openapi.json", None, HeaderMap::new())
        .await
        .expect("GET /openapi.json");
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("the document is JSON");
    assert!(
        doc["paths"]["/metrics"]["get"].is_object(),
        "GET /metrics is documented"
    );
}
