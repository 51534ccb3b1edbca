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
