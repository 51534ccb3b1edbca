//! The cluster's traffic analytics on real `raftgate serve` processes: traffic sent through
//! nodes 1 and 2 is counted, exactly, in `GET /analytics` on node 3 — by route, API version and
//! consumer, with status classes, bytes and percentiles within a histogram bucket of what the
//! client measured — the minute, hour and day buckets agree, `GET /analytics/top` ranks, and
//! 10,000 busy routes stay within the series bound with every request counted.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use raftgate_model::analytics::{
    AnalyticsQuery, AnalyticsReport, OTHER, Resolution, TopBy, TopMetric, TopQuery, latency_bucket,
};
use raftgate_model::catalog::{ApiSpec, ApiVersionRef, ApiVersionSpec, Backend, Lifecycle};
use raftgate_model::policy::{AuthPolicy, KeyAuth, Policies};
use raftgate_model::{ConsumerSpec, RouteSpec};
use support::{Cluster, ProxyClient, Upstream, eventually, route, service};

const TOKEN: &str = "analytics-test-admin-token";
/// Reports every 200 ms (a divisor of a minute), so counts arrive quickly.
const ARGS: &[&str] = &["--analytics-interval-ms", "200"];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `q` quantile of `sorted` durations.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn bucket_of_ms(ms: f64) -> usize {
    latency_bucket((ms * 1e6) as u64)
}

/// A window around the test's traffic, at `step`.
fn window(from: u64, step: Resolution) -> AnalyticsQuery {
    AnalyticsQuery {
        from: Some(from),
        to: Some(now_ms() + 60_000),
        step: Some(step),
        ..AnalyticsQuery::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_through_two_nodes_is_counted_exactly_on_the_third() {
    let (cluster, _) = Cluster::start_with(&[1, 2, 3], Some(TOKEN), ARGS).await;
    let c = cluster.client(1);
    // 15 ms an answer: both the client's and the proxy's times fall in the 10-25 ms bucket, so
    // the percentile check is not at the mercy of a loaded machine's scheduling.
    let upstream = Upstream::start_with_delay("up", Duration::from_millis(15)).await;
    c.put("svc", &service(&upstream.url()), None)
        .await
        .expect("PUT service");
    c.put(
        "orders",
        &ApiSpec {
            title: "Orders".into(),
            ..ApiSpec::default()
        },
        None,
    )
    .await
    .expect("PUT api");
    c.put_version(
        "orders",
        "v2",
        &ApiVersionSpec::new("/orders/v2", Backend::Service("svc".into())),
        None,
    )
    .await
    .expect("PUT version");
    c.transition("orders", "v2", Lifecycle::Published)
        .await
        .expect("publish");
    let keyed = RouteSpec {
        api_version: Some(ApiVersionRef {
            api: "orders".into(),
            version: "v2".into(),
        }),
        policies: Policies {
            auth: Some(AuthPolicy {
                key_auth: Some(KeyAuth::default()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..route("svc", "/orders/v2")
    };
    c.put("orders-v2", &keyed, None).await.expect("PUT route");
    c.put("plain", &route("svc", "/plain"), None)
        .await
        .expect("PUT plain route");
    c.put("alice", &ConsumerSpec::default(), None)
        .await
        .expect("PUT consumer");
    let key = c.create_key("alice").await.expect("alice's key").key;
    let with_key = [("apikey", key.as_str())];

    let proxy = ProxyClient::new(Duration::from_secs(10));
    let (p1, p2) = (cluster.node(1).addrs.proxy, cluster.node(2).addrs.proxy);
    // Both proxies serve both routes before anything is counted.
    for p in [p1, p2] {
        eventually(Duration::from_secs(10), || async {
            let keyed = proxy.get_with_headers(p, "/orders/v2/x", &with_key).await;
            let plain = proxy.get(p, "/plain").await;
            (matches!(keyed, Ok((StatusCode::OK, _))) && matches!(plain, Ok((StatusCode::OK, _))))
                .then_some(())
        })
        .await
        .expect("both proxies route");
    }
    // What came before (the warm-up above) is reported and then left out of the window.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = |q: AnalyticsQuery| {
        let c = cluster.client(3).clone();
        async move { c.analytics(&q).await.expect("GET /analytics") }
    };
    let route_q = |route: &str, from| AnalyticsQuery {
        route: Some(route.into()),
        ..window(from, Resolution::Minute)
    };
    let start = now_ms() - 120_000;
    let base_keyed = before(route_q("orders-v2", start)).await.total.requests;
    let base_plain = before(route_q("plain", start)).await.total.requests;
    let base_unauthorized = before(route_q("orders-v2", start))
        .await
        .total
        .status
        .client_error;

    // Node 1: 120 keyed calls by alice; node 2: 80 plain calls, 7 keyed without a key (401).
    let mut keyed_latency = Vec::new();
    for _ in 0..120 {
        let sent = Instant::now();
        let (status, body) = proxy
            .get_with_headers(p1, "/orders/v2/x", &with_key)
            .await
            .expect("node 1 answers");
        keyed_latency.push(sent.elapsed());
        assert_eq!((status, body.as_str()), (StatusCode::OK, "up"));
    }
    for _ in 0..80 {
        let (status, _) = proxy.get(p2, "/plain").await.expect("node 2 answers");
        assert_eq!(status, StatusCode::OK);
    }
    for _ in 0..7 {
        let (status, _) = proxy.get(p2, "/orders/v2/x").await.expect("node 2 answers");
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    // Node 3 served none of it, and has all of it once the reports are applied.
    let n3 = cluster.client(3);
    let keyed_report: AnalyticsReport = eventually(Duration::from_secs(10), || async {
        let r = n3
            .analytics(&route_q("orders-v2", start))
            .await
            .expect("GET /analytics");
        (r.total.requests == base_keyed + 127).then_some(r)
    })
    .await
    .expect("node 3 counts every keyed call (120 by alice, 7 refused)");
    assert_eq!(
        keyed_report.total.status.client_error,
        base_unauthorized + 7,
        "the 401s are client errors"
    );
    let plain = eventually(Duration::from_secs(10), || async {
        let r = n3
            .analytics(&route_q("plain", start))
            .await
            .expect("GET /analytics");
        (r.total.requests == base_plain + 80).then_some(r)
    })
    .await
    .expect("node 3 counts node 2's plain calls");
    assert_eq!(plain.total.errors, 0);
    assert_eq!(
        plain.total.bytes_out,
        2 * (base_plain + 80),
        "'up' is 2 bytes"
    );

    // By API version and consumer: alice's calls only (the refused ones had no consumer).
    let alice = n3
        .analytics(&AnalyticsQuery {
            api: Some("orders".into()),
            version: Some("v2".into()),
            consumer: Some("alice".into()),
            ..window(start, Resolution::Minute)
        })
        .await
        .expect("GET /analytics by API and consumer");
    let alice_before = base_keyed - base_unauthorized;
    assert_eq!(alice.total.requests, alice_before + 120);
    assert_eq!(alice.total.status.success, alice_before + 120);

    // Percentiles within one histogram bucket of the client's own measurement: the client's
    // time includes the proxy's, so only the warm-up calls (also alice's) can widen it.
    keyed_latency.sort();
    for (q, server) in [
        (0.5, alice.total.latency_ms.p50),
        (0.99, alice.total.latency_ms.p99),
    ] {
        let server = server.expect("a percentile with traffic");
        let client = quantile(&keyed_latency, q);
        let (sb, cb) = (
            bucket_of_ms(server),
            latency_bucket(client.as_nanos() as u64),
        );
        assert!(
            sb.abs_diff(cb) <= 1,
            "p{}: server {server:.3} ms (bucket {sb}), client {client:?} (bucket {cb})",
            q * 100.0
        );
    }

    // The hour and day buckets hold the same traffic as the minutes.
    for step in [Resolution::Hour, Resolution::Day] {
        let coarse = n3
            .analytics(&AnalyticsQuery {
                route: Some("orders-v2".into()),
                ..window(Resolution::Day.start(start), step)
            })
            .await
            .expect("GET /analytics by hour or day");
        let all_minutes = n3
            .analytics(&AnalyticsQuery {
                route: Some("orders-v2".into()),
                ..window(now_ms() - 23 * 3_600_000, Resolution::Minute)
            })
            .await
            .expect("every minute");
        assert_eq!(
            coarse.total.requests, all_minutes.total.requests,
            "{step:?}"
        );
    }

    // Top consumers and routes.
    let top = n3
        .analytics_top(
            &TopQuery {
                by: TopBy::Route,
                metric: TopMetric::Requests,
                limit: Some(2),
            },
            &window(start, Resolution::Minute),
        )
        .await
        .expect("GET /analytics/top");
    let names: Vec<&str> = top.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["orders-v2", "plain"], "{top:?}");
    let by_api = n3
        .analytics_top(
            &TopQuery {
                by: TopBy::Api,
                ..TopQuery::default()
            },
            &window(start, Resolution::Minute),
        )
        .await
        .expect("GET /analytics/top?by=api");
    assert_eq!(by_api.rows[0].name, "orders/v2");
    assert_eq!(by_api.rows[0].value, keyed_report.total.requests as f64);

    // A bad query is a 400 with a JSON error, not a panic.
    let bad = reqwest_like_get(&cluster, 3, "/analytics?step=fortnight").await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
    assert!(bad.1.contains("step="), "{}", bad.1);
}

/// `GET path` on node `id`'s admin API with the admin token: status and body.
async fn reqwest_like_get(cluster: &Cluster, id: u64, path: &str) -> (StatusCode, String) {
    let proxy = ProxyClient::new(Duration::from_secs(5));
    proxy
        .get_with_headers(
            cluster.node(id).addrs.admin,
            path,
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await
        .expect("the admin API answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_busy_routes_stay_within_the_series_bound() {
    const ROUTES: usize = 10_000;
    let (cluster, _) = Cluster::start_with(&[1, 2, 3], Some(TOKEN), ARGS).await;
    let upstream = Upstream::start("up").await;
    let c = cluster.client(1).clone();
    c.put("svc", &service(&upstream.url()), None)
        .await
        .expect("PUT service");
    let started = Instant::now();
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in (w..ROUTES).step_by(32) {
                    c.put(&format!("r{i}"), &route("svc", &format!("/r{i}")), None)
                        .await
                        .expect("PUT route");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    eprintln!("{ROUTES} routes written in {:?}", started.elapsed());
    let p1 = cluster.node(1).addrs.proxy;
    let proxy = ProxyClient::new(Duration::from_secs(10));
    let last = format!("/r{}", ROUTES - 1);
    eventually(Duration::from_secs(30), || async {
        matches!(proxy.get(p1, &last).await, Ok((StatusCode::OK, _))).then_some(())
    })
    .await
    .expect("node 1 routes the last route");
    let from = now_ms() - 120_000;
    let n3 = cluster.client(3);
    // The warm-up's calls are reported first and counted as the base.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let base = n3
        .analytics(&window(from, Resolution::Minute))
        .await
        .expect("GET /analytics")
        .total
        .requests;
    let index_before = cluster.status(1).await.applied_index;

    // One request to each route but the warmed one, through node 1, 16 at a time.
    let sent = Instant::now();
    let senders: Vec<_> = (0..16)
        .map(|w| {
            let proxy = ProxyClient::new(Duration::from_secs(10));
            tokio::spawn(async move {
                for i in (w..ROUTES - 1).step_by(16) {
                    let (status, _) = proxy
                        .get(p1, &format!("/r{i}"))
                        .await
                        .expect("the proxy answers");
                    assert_eq!(status, StatusCode::OK);
                }
            })
        })
        .collect();
    for s in senders {
        s.await.expect("sender");
    }
    let took = sent.elapsed();
    let expected = base + ROUTES as u64 - 1;
    let report = eventually(Duration::from_secs(15), || async {
        let r = n3
            .analytics(&window(from, Resolution::Minute))
            .await
            .expect("GET /analytics");
        (r.total.requests >= expected).then_some(r)
    })
    .await
    .expect("every request is counted on node 3");
    assert_eq!(report.total.requests, expected, "exactly");
    let index_after = cluster.status(1).await.applied_index;

    // At most the bound of series per minute, the rest in `~other`; totals exact.
    let top = n3
        .analytics_top(
            &TopQuery {
                by: TopBy::Route,
                metric: TopMetric::Requests,
                limit: Some(1000),
            },
            &window(from, Resolution::Minute),
        )
        .await
        .expect("GET /analytics/top");
    let minutes = report.points.len() as u32;
    assert!(
        top.rows.len() as u32 <= minutes * (Resolution::Minute.max_series() + 1),
        "{} series in {minutes} minute(s)",
        top.rows.len()
    );
    let other = top.rows.iter().find(|r| r.name == OTHER).expect("~other");
    let named: f64 = top
        .rows
        .iter()
        .filter(|r| r.name != OTHER)
        .map(|r| r.value)
        .sum();
    assert_eq!(named + other.value, expected as f64);
    eprintln!(
        "{ROUTES} requests in {took:?}; {} series kept; {} Raft entries applied meanwhile",
        top.rows.len(),
        index_after.saturating_sub(index_before)
    );
}
