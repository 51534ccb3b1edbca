//! Cluster formation, replication, catch-up after a restart, and membership changes, each on its
//! own real three-node cluster.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use raftgate_model::api::{AddMember, Role};
use raftgate_model::{ConsumerSpec, Entity, NodeId, RouteSpec, ServiceSpec};
use support::{
    Cluster, Upstream, accepts_writes, api_error, eventually, free_ports, route, service,
};

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

const TOKEN: &str = "the-admin-token-of-this-test";

/// The voters and learners node `id` reports, each sorted.
async fn roles(cluster: &Cluster, id: NodeId) -> (Vec<NodeId>, Vec<NodeId>) {
    let status = cluster.status(id).await;
    let of = |role: Role| {
        let mut ids: Vec<NodeId> = status
            .members
            .iter()
            .filter(|m| m.role == role)
            .map(|m| m.id)
            .collect();
        ids.sort_unstable();
        ids
    };
    (of(Role::Voter), of(Role::Learner))
}

/// Asserts that node `via` reports exactly `voters` and no learners.
async fn assert_members(cluster: &Cluster, via: NodeId, voters: &[NodeId]) {
    let (got, learners) = roles(cluster, via).await;
    assert_eq!(
        (got.as_slice(), learners.as_slice()),
        (voters, &[][..]),
        "voters and learners as node {via} sees them"
    );
}

/// The probe of issue 16, exactly: on a one-node cluster, `POST /cluster/members` of "node 0"
/// at the node's own cluster address, then `DELETE /cluster/members/1`. Both used to take
/// effect (the second while answering 400) and stop every write for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_0_at_the_nodes_own_address_then_removing_node_1_leaves_the_cluster_writable() {
    let (mut cluster, _) = Cluster::start(&[1], Some(TOKEN)).await;
    let admin = cluster.client(1).clone();
    let zero = AddMember {
        id: 0,
        ..cluster.add_member_body(1)
    };
    let refused = api_error(admin.add_member(&zero).await, StatusCode::BAD_REQUEST);
    assert_eq!(refused.field.as_deref(), Some("id"), "{refused:?}");
    let refused = api_error(admin.remove_member(1).await, StatusCode::CONFLICT);
    assert!(
        refused.message.contains("no voter"),
        "removing the only voter: {refused:?}"
    );
    assert_members(&cluster, 1, &[1]).await;
    accepts_writes(&cluster, 1, "after-probe").await;

    // And so across a restart.
    cluster.kill(1);
    cluster.restart(1).await;
    cluster.wait_for_leader(&[1]).await;
    assert_members(&cluster, 1, &[1]).await;
    accepts_writes(&cluster, 1, "after-restart").await;
}

/// The same two calls on a three-node cluster: node 0 is refused; removing node 1 is a
/// legitimate change there (two reachable voters remain), and it answers what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_on_three_nodes_removes_node_1_and_says_so() {
    let (cluster, _) = Cluster::start(&ALL, Some(TOKEN)).await;
    let admin = cluster.client(1).clone();
    let zero = AddMember {
        id: 0,
        ..cluster.add_member_body(1)
    };
    api_error(admin.add_member(&zero).await, StatusCode::BAD_REQUEST);
    assert_members(&cluster, 2, &ALL).await;

    let answer = admin
        .remove_member(1)
        .await
        .expect("DELETE /cluster/members/1 with nodes 2 and 3 up");
    assert!(
        answer.members.iter().all(|m| m.id != 1),
        "the answer still lists node 1: {answer:?}"
    );
    for id in [2, 3] {
        let gone = eventually(Duration::from_secs(10), || async {
            let (voters, learners) = roles(&cluster, id).await;
            (voters == [2, 3] && learners.is_empty()).then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "node {id} sees {:?}",
            cluster.status(id).await
        );
    }
    let leader = cluster.wait_for_leader(&[2, 3]).await;
    for id in [2, 3] {
        accepts_writes(&cluster, id, &format!("after-removal-{id}-{leader}")).await;
    }
    // Node 1 is no member any more: alive, but not ready.
    cluster.client(1).health().await.expect("node 1 is alive");
    api_error(
        cluster.client(1).ready().await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_are_validated_before_they_are_made() {
    let (mut cluster, leader) = Cluster::start(&ALL, None).await;
    cluster.spawn_joiner(4);
    cluster.wait_healthy(4).await;
    let admin = cluster.client(leader).clone();
    let four = cluster.add_member_body(4);
    let started = Instant::now();

    // An id in use by a voter.
    let taken = AddMember {
        id: 2,
        ..four.clone()
    };
    let refused = api_error(admin.add_member(&taken).await, StatusCode::BAD_REQUEST);
    assert!(refused.message.contains("already"), "{refused:?}");
    // Another member's cluster address under a new id.
    let borrowed = AddMember {
        cluster_addr: cluster.node(2).addrs.cluster.to_string(),
        ..four.clone()
    };
    let refused = api_error(admin.add_member(&borrowed).await, StatusCode::BAD_REQUEST);
    assert!(refused.message.contains("node 2"), "{refused:?}");
    assert_eq!(
        refused.field.as_deref(),
        Some("cluster_addr"),
        "{refused:?}"
    );
    // A running node under another id than its own.
    let renamed = AddMember {
        id: 5,
        ..four.clone()
    };
    let refused = api_error(admin.add_member(&renamed).await, StatusCode::BAD_REQUEST);
    assert!(refused.message.contains("node 4"), "{refused:?}");
    // Nothing listening there.
    let nowhere = format!("127.0.0.1:{}", free_ports(1)[0]);
    let absent = AddMember {
        id: 6,
        cluster_addr: nowhere,
        ..four.clone()
    };
    let refused = api_error(admin.add_member(&absent).await, StatusCode::BAD_REQUEST);
    assert!(refused.message.contains("node 6"), "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "refusals took {:?}",
        started.elapsed()
    );
    for id in ALL {
        assert_members(&cluster, id, &ALL).await;
    }
    // Removing what is not a member.
    let refused = api_error(admin.remove_member(9).await, StatusCode::BAD_REQUEST);
    assert!(refused.message.contains("not a member"), "{refused:?}");

    // A removal that would leave the remaining voters without a reachable majority: with one
    // follower down, removing the other would leave the leader and the dead node.
    let followers: Vec<NodeId> = ALL.into_iter().filter(|&id| id != leader).collect();
    let (dead, alive) = (followers[0], followers[1]);
    cluster.kill(dead);
    let refused = api_error(admin.remove_member(alive).await, StatusCode::CONFLICT);
    assert!(refused.message.contains("majority"), "{refused:?}");
    assert_members(&cluster, leader, &ALL).await;
    accepts_writes(&cluster, alive, "one-down").await;
    // Removing the dead node is fine: both remaining voters answer.
    let answer = admin
        .remove_member(dead)
        .await
        .expect("remove the dead node");
    assert!(answer.members.iter().all(|m| m.id != dead), "{answer:?}");
    let mut two = vec![leader, alive];
    two.sort_unstable();
    assert_members(&cluster, leader, &two).await;
    accepts_writes(&cluster, alive, "two-voters").await;

    // With one of two voters down the cluster cannot commit; adding a voter is refused at once
    // rather than left half-done, and leaves no learner behind.
    cluster.kill(alive);
    let refused = api_error(
        admin.add_member(&four).await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert_eq!(refused.error, "no_quorum", "{refused:?}");
    let (voters, learners) = roles(&cluster, leader).await;
    assert_eq!((voters, learners), (two.clone(), vec![]));

    // Back to two live voters: node 4 joins.
    cluster.restart(alive).await;
    eventually(Duration::from_secs(10), || async {
        cluster.client(alive).ready().await.ok()
    })
    .await
    .expect("node back and ready");
    admin.add_member(&four).await.expect("add node 4");
    let mut three = vec![leader, alive, 4];
    three.sort_unstable();
    assert_members(&cluster, leader, &three).await;
    accepts_writes(&cluster, 4, "with-node-4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reports_a_node_that_cannot_commit() {
    let (mut cluster, leader) = Cluster::start(&ALL, None).await;
    for id in ALL {
        let ready = eventually(Duration::from_secs(10), || async {
            cluster.client(id).ready().await.ok()
        })
        .await
        .unwrap_or_else(|| panic!("node {id} never ready"));
        assert_eq!((ready.node_id, ready.leader_id), (id, leader));
    }
    let followers: Vec<NodeId> = ALL.into_iter().filter(|&id| id != leader).collect();
    for &id in &followers {
        cluster.kill(id);
    }
    // Alive, still leader in its own eyes, but it cannot commit: not ready.
    let body = api_error(
        cluster.client(leader).ready().await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert_eq!(body.error, "not_ready", "{body:?}");
    cluster.client(leader).health().await.expect("alive");

    cluster.restart(followers[0]).await;
    for id in [leader, followers[0]] {
        eventually(Duration::from_secs(15), || async {
            cluster.client(id).ready().await.ok()
        })
        .await
        .unwrap_or_else(|| panic!("node {id} not ready again with a quorum back"));
    }
}
