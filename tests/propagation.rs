//! Propagation delay of the data plane: a route written through any node's admin API serves on
//! every node's proxy. On a real three-node cluster, 50 routes are written one at a time (through
//! nodes 1, 2, 3 in turn) while all three proxies are polled for each; the delay from sending
//! the write to the route answering on a proxy is measured, and its p50/p99 printed.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use raftgate_model::NodeId;
use support::{Cluster, ProxyClient, Upstream, route, service};

const NODES: [NodeId; 3] = [1, 2, 3];
const ROUTES: usize = 50;
/// A route not served everywhere within this is a failure, not a slow sample.
const GIVE_UP: Duration = Duration::from_secs(10);
/// Pause between two polls of one proxy.
const POLL_EVERY: Duration = Duration::from_millis(1);

/// Polls `proxy` until `path` answers with the upstream's name; the time since `written`.
async fn served_after(
    client: ProxyClient,
    proxy: SocketAddr,
    path: String,
    expected: String,
    written: Instant,
) -> Duration {
    loop {
        if let Ok((StatusCode::OK, body)) = client.get(proxy, &path).await
            && body == expected
        {
            return written.elapsed();
        }
        assert!(
            written.elapsed() < GIVE_UP,
            "{path} not served by the proxy at {proxy} after {GIVE_UP:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_written_on_any_node_serves_on_every_proxy_quickly() {
    let (cluster, _leader) = Cluster::start(&NODES, None).await;
    let upstream = Upstream::start("propagated").await;
    cluster
        .client(1)
        .put("prop", &service(&upstream.url()), None)
        .await
        .expect("PUT the service");
    let client = ProxyClient::new(Duration::from_secs(2));
    let proxies: Vec<SocketAddr> = NODES
        .iter()
        .map(|&id| cluster.node(id).addrs.proxy)
        .collect();

    // Per route: the delay until all proxies serve it, and until the write was acknowledged.
    let mut everywhere = Vec::with_capacity(ROUTES);
    let mut each_proxy = Vec::with_capacity(ROUTES * proxies.len());
    let mut acknowledged = Vec::with_capacity(ROUTES);
    for i in 0..ROUTES {
        let path = format!("/prop-{i}");
        let writer = NODES[i % NODES.len()];
        let written = Instant::now();
        let polls: Vec<_> = proxies
            .iter()
            .map(|&proxy| {
                tokio::spawn(served_after(
                    client.clone(),
                    proxy,
                    path.clone(),
                    upstream.name.clone(),
                    written,
                ))
            })
            .collect();
        cluster
            .client(writer)
            .put(&format!("prop-{i}"), &route("prop", &path), None)
            .await
            .unwrap_or_else(|e| panic!("PUT route {i} through node {writer}: {e}"));
        acknowledged.push(written.elapsed());
        let mut slowest = Duration::ZERO;
        for poll in polls {
            let delay = poll.await.expect("poll task");
            slowest = slowest.max(delay);
            each_proxy.push(delay);
        }
        everywhere.push(slowest);
    }

    for samples in [&mut everywhere, &mut each_proxy, &mut acknowledged] {
        samples.sort_unstable();
    }
    let report = |what: &str, samples: &[Duration]| {
        eprintln!(
            "propagation: {what:<34} n={:<4} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            samples.len(),
            ms(percentile(samples, 0.50)),
            ms(percentile(samples, 0.99)),
            ms(percentile(samples, 1.0)),
        );
    };
    report("write acknowledged", &acknowledged);
    report("served by one proxy", &each_proxy);
    report("served by all three proxies", &everywhere);
    let p99 = percentile(&everywhere, 0.99);
    assert!(
        p99 < Duration::from_secs(1),
        "p99 propagation to all proxies is {p99:?}, above 1 s"
    );
}
