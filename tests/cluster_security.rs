//! The cluster port's protection on real processes: with a cluster secret, a node started with
//! another secret or none never becomes a member nor gets the data while the cluster keeps
//! working; with mutual TLS, the cluster elects, replicates and forwards over TLS, and a node
//! whose certificate comes from another CA is refused.

mod support;

use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use raftgate_model::{Entity, NodeId, ServiceSpec};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use support::{Cluster, api_error, eventually, service};

const ALL: [NodeId; 3] = [1, 2, 3];
const SECRET: &str = "the-cluster-secret-of-this-test";

/// Starts nodes `ids` of a planned cluster and waits for their leader.
async fn start(cluster: &mut Cluster, ids: &[NodeId]) -> NodeId {
    for &id in ids {
        cluster.spawn(id);
    }
    for &id in ids {
        cluster.wait_healthy(id).await;
    }
    cluster.wait_for_leader(ids).await
}

/// Writes a service through a follower and reads it back linearizably on every node of `ids`.
async fn write_and_read_everywhere(cluster: &Cluster, ids: &[NodeId], leader: NodeId, name: &str) {
    let follower = ids
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("a follower");
    let written = cluster
        .client(follower)
        .put(name, &service("http://127.0.0.1:9"), None)
        .await
        .unwrap_or_else(|e| panic!("write {name} through follower {follower}: {e}"));
    for &id in ids {
        let read: Entity<ServiceSpec> = cluster
            .client(id)
            .get_consistent::<ServiceSpec>(name)
            .await
            .unwrap_or_else(|e| panic!("consistent read of {name} on node {id}: {e}"));
        assert_eq!(read, written, "{name} on node {id}");
    }
}

/// Asserts that adding node `id` is refused, that it is not a member afterwards, and that it
/// has none of the data.
async fn refused_to_join(cluster: &Cluster, leader: NodeId, id: NodeId, data: &str) {
    let body = api_error(
        cluster
            .client(leader)
            .add_member(&cluster.add_member_body(id))
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(
        body.message.contains("credentials check"),
        "adding node {id}: {body:?}"
    );
    let status = cluster.status(leader).await;
    assert!(
        status.members.iter().all(|m| m.id != id),
        "node {id} became a member: {status:?}"
    );
    // Give replication a moment it would have used, then check the node has nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    api_error(
        cluster.client(id).get::<ServiceSpec>(data).await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(
        cluster.status(id).await.leader_id,
        None,
        "node {id} knows a leader"
    );
}

/// Adds node `id`, which must then have the data.
async fn joins(cluster: &Cluster, leader: NodeId, id: NodeId, data: &str) {
    cluster
        .client(leader)
        .add_member(&cluster.add_member_body(id))
        .await
        .unwrap_or_else(|e| panic!("adding node {id}: {e}"));
    let got = eventually(Duration::from_secs(10), || async {
        cluster.client(id).get::<ServiceSpec>(data).await.ok()
    })
    .await;
    assert!(got.is_some(), "node {id} joined but did not get {data}");
}

fn secret_args(secret: &str) -> Vec<String> {
    vec!["--cluster-secret".into(), secret.into()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_cluster_secret_cannot_join() {
    let mut cluster = Cluster::new(&ALL, None);
    // One node reads the secret from a file, the others from the flag.
    let file = cluster.dir().join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).expect("write the secret file");
    cluster.set_args(
        1,
        vec!["--cluster-secret-file".into(), file.display().to_string()],
    );
    for id in [2, 3] {
        cluster.set_args(id, secret_args(SECRET));
    }
    let leader = start(&mut cluster, &ALL).await;
    write_and_read_everywhere(&cluster, &ALL, leader, "before").await;

    // Another secret, then none at all.
    cluster.plan_joiner(4);
    cluster.set_args(4, secret_args("a-different-secret-entirely"));
    cluster.spawn(4);
    cluster.wait_healthy(4).await;
    refused_to_join(&cluster, leader, 4, "before").await;
    assert!(
        cluster.log_text(4).contains("refused a cluster RPC"),
        "node 4 logs why it refused the leader"
    );
    cluster.plan_joiner(5);
    cluster.spawn(5);
    cluster.wait_healthy(5).await;
    refused_to_join(&cluster, leader, 5, "before").await;

    // The cluster keeps working, and a node with the secret joins.
    write_and_read_everywhere(&cluster, &ALL, leader, "after").await;
    cluster.plan_joiner(6);
    cluster.set_args(6, secret_args(SECRET));
    cluster.spawn(6);
    cluster.wait_healthy(6).await;
    joins(&cluster, leader, 6, "after").await;
    api_error(
        cluster.client(4).get::<ServiceSpec>("after").await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_peer_without_the_secret_is_sent_nothing() {
    // Node 3 is in everyone's peer list from the start, but was given no secret: it would
    // accept anything, so the others must not send it the log.
    let mut cluster = Cluster::new(&ALL, None);
    for id in [1, 2] {
        cluster.set_args(id, secret_args(SECRET));
    }
    for id in ALL {
        cluster.spawn(id);
    }
    for id in ALL {
        cluster.wait_healthy(id).await;
    }
    let leader = cluster.wait_for_leader(&[1, 2]).await;
    write_and_read_everywhere(&cluster, &[1, 2], leader, "secret-data").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    api_error(
        cluster.client(3).get::<ServiceSpec>("secret-data").await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(
        cluster.status(3).await.leader_id,
        None,
        "node 3 knows a leader"
    );
    assert!(
        cluster
            .log_text(leader)
            .contains("not sending Raft messages to node 3"),
        "the leader logs why node 3 gets nothing"
    );
    // Its elections do not disturb the others: they refuse its votes.
    write_and_read_everywhere(&cluster, &[1, 2], leader, "still-working").await;
    assert_eq!(cluster.status(1).await.leader_id, Some(leader));
}

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA"),
        }
    }

    /// Writes this CA, and a loopback certificate and key it signed, under `dir` as
    /// `{prefix}-ca.pem`, `{prefix}-cert.pem`, `{prefix}-key.pem`; returns the serve flags.
    fn node_files(&self, dir: &Path, prefix: &str) -> Vec<String> {
        let key = KeyPair::generate().expect("node key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
            .expect("node params")
            .signed_by(&key, &self.issuer)
            .expect("sign the node certificate");
        let mut args = Vec::new();
        for (flag, what, pem) in [
            ("--cluster-ca", "ca", self.issuer.pem()),
            ("--cluster-cert", "cert", cert.pem()),
            ("--cluster-key", "key", key.serialize_pem()),
        ] {
            let path = dir.join(format!("{prefix}-{what}.pem"));
            std::fs::write(&path, pem).expect("write a PEM file");
            args.push(flag.to_string());
            args.push(path.display().to_string());
        }
        args
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_runs_over_mutual_tls_and_refuses_another_ca() {
    let mut cluster = Cluster::new(&ALL, None);
    let ca = Ca::new("raftgate test cluster CA");
    for id in ALL {
        let files = ca.node_files(cluster.dir(), &format!("node-{id}"));
        cluster.set_args(id, files);
    }
    // Election, replication and forwarding all go over TLS.
    let leader = start(&mut cluster, &ALL).await;
    write_and_read_everywhere(&cluster, &ALL, leader, "over-tls").await;

    // A node whose CA and certificate come from elsewhere is refused.
    let other = Ca::new("someone else's CA");
    cluster.plan_joiner(4);
    let files = other.node_files(cluster.dir(), "node-4");
    cluster.set_args(4, files);
    cluster.spawn(4);
    cluster.wait_healthy(4).await;
    refused_to_join(&cluster, leader, 4, "over-tls").await;

    // One with a certificate from the cluster CA joins.
    cluster.plan_joiner(5);
    let files = ca.node_files(cluster.dir(), "node-5");
    cluster.set_args(5, files);
    cluster.spawn(5);
    cluster.wait_healthy(5).await;
    joins(&cluster, leader, 5, "over-tls").await;
    write_and_read_everywhere(&cluster, &[1, 2, 3, 5], leader, "after-join").await;
}
