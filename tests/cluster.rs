//! Cluster formation, replication, catch-up after a restart, and membership changes, each on its
//! own real three-node cluster.

mod support;

use std::time::Duration;

use raftgate_model::api::Role;
use raftgate_model::{ConsumerSpec, Entity, NodeId, RouteSpec, ServiceSpec};
use support::{Cluster, Upstream, eventually, route, service};

const ALL: [NodeId; 3] = [1, 2, 3];

fn follower_of(leader: NodeId) -> NodeId {
    ALL.into_iter()
        .find(|&id| id != leader)
        .expect("three nodes have a follower")
}

fn consumer(tag: &str) -> ConsumerSpec {
    ConsumerSpec {
        custom_id: Some(tag.to_owned()),
        tags: vec![tag.to_owned()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_bootstrap_in_any_order_and_a_follower_write_is_readable_everywhere() {
    let mut cluster = Cluster::new(&ALL, None);
    // The node that initializes the cluster (lowest id) comes up last.
    for id in [3, 2, 1] {
        cluster.spawn(id);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for id in ALL {
        cluster.wait_healthy(id).await;
    }
    let leader = cluster.wait_for_leader(&ALL).await;

    let status = cluster.status(leader).await;
    let mut voters: Vec<NodeId> = status
        .members
        .iter()
        .filter(|m| m.role == Role::Voter)
        .map(|m| m.id)
        .collect();
    voters.sort_unstable();
    assert_eq!(voters, ALL, "members as seen by the leader: {status:?}");
    for m in &status.members {
        let planned = &cluster.node(m.id).addrs;
        assert_eq!(m.admin_addr, planned.admin.to_string(), "member {m:?}");
        assert_eq!(m.proxy_addr, planned.proxy.to_string(), "member {m:?}");
        assert_eq!(m.cluster_addr, planned.cluster.to_string(), "member {m:?}");
    }

    let follower = follower_of(leader);
    let spec = service("http://127.0.0.1:9000");
    let written = cluster
        .client(follower)
        .put("svc", &spec, None)
        .await
        .unwrap_or_else(|e| panic!("PUT /services/svc on follower {follower}: {e}"));
    assert_eq!(written.name, "svc");
    assert_eq!(written.spec, spec);
    assert!(written.version > 0, "version of a write is its log index");

    for id in ALL {
        let read: Entity<ServiceSpec> = cluster
            .client(id)
            .get_consistent::<ServiceSpec>("svc")
            .await
            .unwrap_or_else(|e| panic!("consistent GET on node {id}: {e}"));
        assert_eq!(read, written, "consistent read on node {id}");
    }
    for id in ALL {
        let local = eventually(Duration::from_secs(5), || async {
            cluster
                .client(id)
                .get::<ServiceSpec>("svc")
                .await
                .ok()
                .filter(|e| e.version == written.version)
        })
        .await;
        assert_eq!(local.as_ref(), Some(&written), "local read on node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_catches_up_on_writes_made_while_it_was_down() {
    let (mut cluster, leader) = Cluster::start(&ALL, None).await;
    let down = follower_of(leader);
    let up: Vec<NodeId> = ALL.into_iter().filter(|&id| id != down).collect();

    let before = cluster
        .client(leader)
        .put("before", &consumer("before"), None)
        .await
        .expect("write before the kill");
    // Make sure the victim has it on disk before it dies, so the restart exercises both its own
    // log and catching up.
    eventually(Duration::from_secs(5), || async {
        cluster
            .client(down)
            .get::<ConsumerSpec>("before")
            .await
            .ok()
            .filter(|e| e.version == before.version)
    })
    .await
    .expect("the follower applied the first write");

    cluster.kill(down);
    let mut written = vec![before];
    for i in 0..20 {
        let via = up[i % up.len()];
        let name = format!("while-down-{i}");
        let entity = cluster
            .client(via)
            .put(&name, &consumer(&name), None)
            .await
            .unwrap_or_else(|e| panic!("PUT {name} via node {via} with node {down} down: {e}"));
        written.push(entity);
    }

    written.sort_by(|a, b| a.name.cmp(&b.name));

    cluster.restart(down).await;
    let restarted = cluster.client(down);
    let caught_up = eventually(Duration::from_secs(10), || async {
        let local = restarted.list::<ConsumerSpec>().await.ok()?;
        (local == written).then_some(())
    })
    .await;
    let local = restarted.list::<ConsumerSpec>().await;
    assert!(
        caught_up.is_some(),
        "node {down} after restart has {local:?}, expected {written:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_from_a_snapshot_and_leaves() {
    let (mut cluster, leader) = Cluster::start(&ALL, None).await;
    let upstream = Upstream::start("joined").await;
    let admin = cluster.client(follower_of(leader)).clone();
    let svc = admin
        .put("svc", &service(&upstream.url()), None)
        .await
        .expect("PUT service");
    let rt = admin
        .put("api", &route("svc", "/api"), None)
        .await
        .expect("PUT route");
    let mut consumers = Vec::new();
    for i in 0..30 {
        let name = format!("c{i}");
        consumers.push(
            admin
                .put(&name, &consumer(&name), None)
                .await
                .expect("PUT consumer"),
        );
    }
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    // Everything so far goes into a snapshot and out of every log: node 4 can only get it from a
    // snapshot.
    for id in ALL {
        cluster
            .client(id)
            .trigger_snapshot()
            .await
            .unwrap_or_else(|e| panic!("POST /cluster/snapshot on node {id}: {e}"));
    }

    cluster.spawn_joiner(4);
    cluster.wait_healthy(4).await;
    let alone = cluster.status(4).await;
    assert_ne!(
        alone.leader_id,
        Some(4),
        "node 4 must not make itself a leader of its own cluster: {alone:?}"
    );

    let added = admin
        .add_member(&cluster.add_member_body(4))
        .await
        .expect("POST /cluster/members for node 4");
    assert!(
        added.members.iter().any(|m| m.id == 4),
        "POST /cluster/members answer lists node 4: {added:?}"
    );

    let joined = cluster.client(4);
    let synced = eventually(Duration::from_secs(15), || async {
        let got_consumers = joined.list::<ConsumerSpec>().await.ok()?;
        let got_svc = joined.get::<ServiceSpec>("svc").await.ok()?;
        let got_rt = joined.get::<RouteSpec>("api").await.ok()?;
        (got_consumers == consumers && got_svc == svc && got_rt == rt).then_some(())
    })
    .await;
    assert!(
        synced.is_some(),
        "node 4 local state after joining: consumers {:?}, svc {:?}, route {:?}",
        joined.list::<ConsumerSpec>().await,
        joined.get::<ServiceSpec>("svc").await,
        joined.get::<RouteSpec>("api").await,
    );
    // And it keeps receiving new writes.
    let later = admin
        .put("after-join", &consumer("after-join"), None)
        .await
        .expect("write after the join");
    let got = eventually(Duration::from_secs(5), || async {
        joined.get::<ConsumerSpec>("after-join").await.ok()
    })
    .await;
    assert_eq!(
        got,
        Some(later),
        "node 4 receives writes made after it joined"
    );

    let removed = admin
        .remove_member(4)
        .await
        .expect("DELETE /cluster/members/4");
    assert!(
        removed.members.iter().all(|m| m.id != 4),
        "DELETE /cluster/members/4 answer still lists node 4: {removed:?}"
    );
    for id in ALL {
        let gone = eventually(Duration::from_secs(5), || async {
            let s = cluster.client(id).cluster_status().await.ok()?;
            s.members.iter().all(|m| m.id != 4).then_some(s)
        })
        .await;
        assert!(
            gone.is_some(),
            "GET /cluster on node {id} still lists node 4: {:?}",
            cluster.client(id).cluster_status().await
        );
    }
    // The three remaining nodes still form a working cluster.
    admin
        .put("after-leave", &consumer("after-leave"), None)
        .await
        .expect("write after node 4 left");
}
