//! Crash durability: every write the cluster acknowledged survives SIGKILLing all nodes at once.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftgate_model::{NodeId, ServiceSpec};
use support::{Cluster, service};

const ALL: [NodeId; 3] = [1, 2, 3];
const WRITERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_killing_all_nodes_at_once() {
    let (mut cluster, _) = Cluster::start(&ALL, None).await;

    // name -> the target URL written; only writes answered with success are recorded.
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            // Spread the writers over all nodes: followers forward to the leader.
            let client = cluster
                .client(ALL[w % ALL.len()])
                .clone()
                .with_timeout(Duration::from_secs(3));
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{w}-{i}");
                    let url = format!("http://127.0.0.1:{}/{name}", 1000 + i % 60000);
                    if let Ok(entity) = client.put(&name, &service(&url), None).await {
                        assert_eq!(entity.spec.targets[0].url, url, "echoed spec of {name}");
                        acknowledged
                            .lock()
                            .expect("no writer panicked holding the lock")
                            .insert(name, url);
                    }
                    i += 1;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Crash in the middle of the stream, then let the writers see their connections die.
    cluster.kill_all();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer task");
    }
    let acknowledged = acknowledged.lock().expect("writers are done").clone();
    println!(
        "durability: {} writes acknowledged before the crash",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() >= 20,
        "only {} writes were acknowledged in 1.5 s; the test needs a real stream of writes",
        acknowledged.len()
    );

    for id in ALL {
        cluster.spawn(id);
    }
    for id in ALL {
        cluster.wait_healthy(id).await;
    }
    let leader = cluster.wait_for_leader(&ALL).await;
    let stored: BTreeMap<String, String> = cluster
        .client(leader)
        .list_consistent::<ServiceSpec>()
        .await
        .expect("consistent list after the restart")
        .into_iter()
        .map(|e| (e.name, e.spec.targets[0].url.clone()))
        .collect();
    let lost: Vec<(&String, &String, Option<&String>)> = acknowledged
        .iter()
        .filter(|(name, url)| stored.get(*name) != Some(url))
        .map(|(name, url)| (name, url, stored.get(name)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes are missing or different after the crash \
         (name, written, stored): {lost:?}",
        lost.len(),
        acknowledged.len()
    );
}

/// A few hundred large batched entries never reach the snapshot's entry count, yet hold a copy
/// of every write in memory: the nodes compact once the log outgrows the state, and after a
/// restart of every node the state comes back from the snapshot and what is left of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_outgrows_the_state_is_compacted() {
    let (mut cluster, _) = Cluster::start(&ALL, None).await;
    // 600 services of 48 targets each: about 2.5 MB encoded, more than the 1 MiB floor.
    let spec = |w: usize, i: usize| {
        let mut spec = service(&format!("http://127.0.0.1:1/{w}/{i}"));
        spec.targets = (0..48)
            .map(|t| raftgate_model::Target {
                url: format!(
                    "http://127.0.0.1:{}/compaction/writer-{w}/item-{i}",
                    20_000 + t
                ),
                weight: 1,
            })
            .collect();
        spec
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = cluster.client(ALL[w % ALL.len()]).clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    client
                        .put(&format!("c{w}-{i}"), &spec(w, i), None)
                        .await
                        .expect("write a large service");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task");
    }
    for id in ALL {
        let compacted = support::eventually(Duration::from_secs(10), || async {
            cluster
                .log_text(id)
                .contains("built snapshot")
                .then_some(())
        })
        .await;
        assert!(
            compacted.is_some(),
            "node {id} built no snapshot although its log outgrew the state"
        );
    }
    cluster.kill_all();
    for id in ALL {
        cluster.restart(id).await;
    }
    let leader = cluster.wait_for_leader(&ALL).await;
    let stored = cluster
        .client(leader)
        .list_consistent::<ServiceSpec>()
        .await
        .expect("consistent list after the restart");
    assert_eq!(
        stored.len(),
        WRITERS * 100,
        "every service after the restart"
    );
    assert!(stored.iter().all(|s| s.spec.targets.len() == 48));
}
