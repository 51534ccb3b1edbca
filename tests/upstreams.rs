//! The data plane's upstream features through real `raftgate serve` processes: a self-registered
//! instance receives traffic on every node, and every node's view of its targets' health is
//! readable from any node's admin API.

mod support;

use std::time::Duration;

use raftgate_model::api::NodeUpstreams;
use raftgate_model::{ActiveCheck, HealthChecks, InstanceSpec, ServiceSpec, Target};
use support::{Cluster, ProxyClient, Upstream, eventually, free_ports, route};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_serve_everywhere_and_health_is_visible_cluster_wide() {
    let (cluster, _) = Cluster::start(&[1, 2, 3], None).await;
    let c = cluster.client(2);
    let live = Upstream::start("live").await;
    let dead_port = free_ports(1)[0];
    let spec = ServiceSpec {
        targets: vec![Target {
            url: format!("http://127.0.0.1:{dead_port}"),
            weight: 1,
        }],
        health_checks: HealthChecks {
            active: Some(ActiveCheck {
                path: "/".into(),
                interval_ms: 200,
                timeout_ms: 200,
                healthy_threshold: 1,
                unhealthy_threshold: 1,
            }),
            passive: None,
        },
        ..Default::default()
    };
    c.put("app", &spec, None).await.expect("PUT service");
    c.put("app", &route("app", "/app"), None)
        .await
        .expect("PUT route");

    // Register the live upstream as an instance through node 3.
    let live_instance = InstanceSpec {
        service: String::new(),
        url: live.url(),
        weight: 1,
        ttl_ms: 30_000,
    };
    cluster
        .client(3)
        .register_instance("app", "live-1", &live_instance)
        .await
        .expect("register");

    // Once the dead static target is found unhealthy, every proxy sends everything to the instance.
    let proxy = ProxyClient::new(Duration::from_secs(2));
    for id in [1, 2, 3] {
        let addr = cluster.node(id).addrs.proxy;
        let all_live = eventually(Duration::from_secs(10), || async {
            for _ in 0..10 {
                match proxy.get(addr, "/app/x").await {
                    Ok((status, body)) if status == 200 && body == "live" => {}
                    _ => return None,
                }
            }
            Some(())
        })
        .await;
        assert!(
            all_live.is_some(),
            "node {id} does not route /app to the registered instance only"
        );
    }

    // Any node reports every node's view: the static target down, the instance up.
    let views: Vec<NodeUpstreams> = c.cluster_upstream_health().await.expect("cluster health");
    assert_eq!(
        views.iter().map(|v| v.node_id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for view in &views {
        assert!(view.error.is_none(), "{view:?}");
        let app = view
            .services
            .iter()
            .find(|s| s.service == "app")
            .expect("service app");
        let dead = app
            .targets
            .iter()
            .find(|t| t.url.ends_with(&dead_port.to_string()))
            .expect("dead target listed");
        let alive = app
            .targets
            .iter()
            .find(|t| t.url == live.url())
            .expect("instance listed");
        assert!(!dead.healthy, "node {}: {dead:?}", view.node_id);
        assert!(alive.healthy, "node {}: {alive:?}", view.node_id);
    }
}
