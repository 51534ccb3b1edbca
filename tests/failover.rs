//! Killing the leader: a new one is elected fast, writes resume through a survivor, and the
//! proxies of the survivors never stop serving. Alone in its test binary so that its timing is
//! not disturbed by other clusters.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raftgate_model::resource::ConsumerView;
use raftgate_model::{ConsumerSpec, Entity, NodeId};
use support::{Cluster, ProxyClient, Upstream, eventually, route, service};

/// The bound on how long writes may be unavailable after the leader dies.
const FAILOVER_BOUND: Duration = Duration::from_secs(2);

/// Outcome of one stream of proxy requests.
struct Traffic {
    ok: usize,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_crash_fails_over_within_two_seconds_while_survivors_keep_proxying() {
    let upstream = Upstream::start("upstream-a").await;
    let (mut cluster, leader) = Cluster::start(&[1, 2, 3], None).await;
    let admin = cluster.client(leader);
    admin
        .put("svc", &service(&upstream.url()), None)
        .await
        .expect("PUT service");
    admin
        .put("api", &route("svc", "/api"), None)
        .await
        .expect("PUT route");

    let proxy = ProxyClient::new(Duration::from_secs(2));
    for id in [1, 2, 3] {
        let addr = cluster.node(id).addrs.proxy;
        let served = eventually(Duration::from_secs(10), || async {
            let (status, body) = proxy.get(addr, "/api/hello").await.ok()?;
            (status == 200 && body == upstream.name).then_some(())
        })
        .await;
        assert!(
            served.is_some(),
            "proxy of node {id} does not serve /api: last answer {:?}",
            proxy.get(addr, "/api/hello").await
        );
    }

    let survivors: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let streams: Vec<_> = survivors
        .iter()
        .map(|&id| {
            let addr = cluster.node(id).addrs.proxy;
            let (proxy, stop, expected) = (proxy.clone(), stop.clone(), upstream.name.clone());
            tokio::spawn(async move {
                let mut traffic = Traffic {
                    ok: 0,
                    failures: Vec::new(),
                };
                while !stop.load(Ordering::Relaxed) {
                    match proxy.get(addr, "/api/during-failover").await {
                        Ok((status, body)) if status == 200 && body == expected => traffic.ok += 1,
                        other => traffic.failures.push(format!("{other:?}")),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (id, traffic)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let writer = cluster
        .client(survivors[0])
        .clone()
        .with_timeout(Duration::from_millis(1500));
    let killed_at = Instant::now();
    cluster.kill(leader);
    let mut attempts = Vec::new();
    let written: Entity<ConsumerView> = loop {
        match writer
            .put("after-failover", &ConsumerSpec::default(), None)
            .await
        {
            Ok(entity) => break entity,
            Err(e) => {
                attempts.push(format!("{:?}: {e}", killed_at.elapsed()));
                assert!(
                    killed_at.elapsed() < Duration::from_secs(15),
                    "no write succeeded through node {} after the leader died: {attempts:#?}",
                    survivors[0]
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let failover = killed_at.elapsed();
    println!(
        "failover: write through node {} succeeded {failover:?} after killing leader {leader} \
         ({} failed attempts before)",
        survivors[0],
        attempts.len()
    );

    let new_leader = cluster.wait_for_leader(&survivors).await;
    assert_ne!(new_leader, leader);
    // Keep the traffic going a little after the new leader took over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for stream in streams {
        let (id, traffic) = stream.await.expect("traffic task");
        println!(
            "proxy of node {id}: {} requests served during the failover, {} failed",
            traffic.ok,
            traffic.failures.len()
        );
        assert!(
            traffic.failures.is_empty(),
            "proxy of surviving node {id} failed {} of {} requests during the failover: {:?}",
            traffic.failures.len(),
            traffic.ok + traffic.failures.len(),
            traffic.failures
        );
        assert!(
            traffic.ok >= 20,
            "proxy of node {id} served only {} requests",
            traffic.ok
        );
    }

    assert!(
        failover < FAILOVER_BOUND,
        "writes resumed {failover:?} after the leader was killed, bound is {FAILOVER_BOUND:?}; \
         failed attempts: {attempts:#?}"
    );
    let read: Entity<ConsumerView> = cluster
        .client(survivors[1])
        .get_consistent::<ConsumerSpec>("after-failover")
        .await
        .expect("consistent read of the write on the other survivor");
    assert_eq!(read, written);
}
