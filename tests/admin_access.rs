//! Admin tokens with roles and the replicated audit log, on a real three-node cluster: a
//! read-only token reads but every write answers 403, a revoked token answers 401 on every node,
//! and every node shows the same audit entries, naming the token that made each write.

mod support;

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use raftgate_client::AdminClient;
use raftgate_model::access::{AuditOperation, BOOTSTRAP_ACTOR, TokenRole};
use raftgate_model::{Kind, NodeId, RouteSpec, ServiceSpec};
use support::{Cluster, api_error, eventually, route, service};

const ALL: [NodeId; 3] = [1, 2, 3];
const BOOTSTRAP: &str = "bootstrap-token-for-tests";

/// A client of node `id` authenticating with `token`.
fn as_token(cluster: &Cluster, id: NodeId, token: &str) -> AdminClient {
    AdminClient::new(
        &cluster.node(id).addrs.admin.to_string(),
        Some(token.to_owned()),
    )
    .expect("loopback admin address")
    .with_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_tokens_cannot_write_and_revoked_tokens_stop_working_everywhere() {
    let (cluster, leader) = Cluster::start(&ALL, Some(BOOTSTRAP)).await;
    let boot = cluster.client(leader);

    let viewer = boot
        .create_token("viewer", TokenRole::ReadOnly)
        .await
        .expect("the bootstrap token creates a read-only token");
    assert_eq!(viewer.role, TokenRole::ReadOnly);
    assert!(viewer.token.starts_with(&viewer.prefix) && viewer.token.len() > 40);
    let ops = boot
        .create_token("ops", TokenRole::Admin)
        .await
        .expect("the bootstrap token creates an admin token");

    // Listing shows names and roles, never secrets.
    let listed = boot.list_tokens().await.expect("list tokens");
    let roles: Vec<(&str, TokenRole)> = listed.iter().map(|t| (t.name.as_str(), t.role)).collect();
    assert_eq!(
        roles,
        [("ops", TokenRole::Admin), ("viewer", TokenRole::ReadOnly)]
    );
    let (_, _, raw) = boot
        .request(Method::GET, "/tokens", None, HeaderMap::new())
        .await
        .expect("raw token list");
    let raw = String::from_utf8_lossy(&raw);
    assert!(!raw.contains(&viewer.token) && !raw.contains(&ops.token) && !raw.contains("hash"));

    // A token made on one node works on every node, once replicated there.
    for id in ALL {
        let reader = as_token(&cluster, id, &viewer.token);
        let read = eventually(Duration::from_secs(5), || async {
            reader.list::<ServiceSpec>().await.ok()
        })
        .await;
        assert_eq!(read, Some(vec![]), "read-only token reads on node {id}");
        reader
            .audit(None, None)
            .await
            .expect("read-only reads the audit log");
        reader.list_tokens().await.expect("read-only lists tokens");
    }

    // Every kind of write is refused with 403 and a JSON body, cluster operations included.
    let reader = as_token(&cluster, leader, &viewer.token);
    let forbidden = api_error(
        reader
            .put("svc", &service("http://127.0.0.1:9"), None)
            .await,
        StatusCode::FORBIDDEN,
    );
    assert_eq!(forbidden.error, "forbidden");
    assert!(forbidden.message.contains("viewer"), "{forbidden:?}");
    api_error(
        reader.delete::<ServiceSpec>("svc", None).await,
        StatusCode::FORBIDDEN,
    );
    api_error(reader.trigger_snapshot().await, StatusCode::FORBIDDEN);
    api_error(reader.remove_member(3).await, StatusCode::FORBIDDEN);
    api_error(
        reader.add_member(&cluster.add_member_body(3)).await,
        StatusCode::FORBIDDEN,
    );
    api_error(
        reader.create_token("mine", TokenRole::Admin).await,
        StatusCode::FORBIDDEN,
    );
    api_error(reader.delete_token("ops").await, StatusCode::FORBIDDEN);
    api_error(reader.create_key("nobody").await, StatusCode::FORBIDDEN);
    assert!(
        boot.list::<ServiceSpec>().await.expect("list").is_empty(),
        "no refused write went through"
    );

    // The admin token writes, on any node, once replicated there (a 401 applied nothing, so
    // the write is tried again until the node knows the token).
    let writer = as_token(&cluster, ALL[(leader as usize) % 3], &ops.token);
    let written = eventually(Duration::from_secs(5), || async {
        match writer
            .put("svc", &service("http://127.0.0.1:9"), None)
            .await
        {
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => None,
            other => Some(other),
        }
    })
    .await
    .expect("the token reaches the node");
    written.expect("an admin token writes");

    // Bad and reserved names, unknown roles and duplicates are refused with the field named.
    for name in [BOOTSTRAP_ACTOR, "anonymous", "no/slash"] {
        let body = api_error(
            boot.create_token(name, TokenRole::Admin).await,
            StatusCode::BAD_REQUEST,
        );
        assert_eq!(
            body.field.as_deref(),
            Some("name"),
            "name {name:?}: {body:?}"
        );
    }
    let body = api_error(
        boot.create_token("ops", TokenRole::ReadOnly).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(body.field.as_deref(), Some("name"));
    let (status, _, bad_role) = boot
        .request(
            Method::POST,
            "/tokens",
            Some(br#"{"name":"x","role":"root"}"#.to_vec()),
            HeaderMap::new(),
        )
        .await
        .expect("raw create");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&bad_role).contains("\"field\":\"role\""));

    // A wrong token is 401, not 403.
    api_error(
        as_token(&cluster, leader, "rga_not-a-token")
            .list_tokens()
            .await,
        StatusCode::UNAUTHORIZED,
    );

    // Revoked on one node: 401 on every node.
    boot.delete_token("viewer").await.expect("revoke viewer");
    api_error(boot.delete_token("viewer").await, StatusCode::NOT_FOUND);
    for id in ALL {
        let reader = as_token(&cluster, id, &viewer.token);
        let refused = eventually(Duration::from_secs(5), || async {
            match reader.list::<ServiceSpec>().await {
                Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => Some(()),
                _ => None,
            }
        })
        .await;
        assert!(
            refused.is_some(),
            "revoked token still accepted on node {id}"
        );
    }
    // The other tokens are unaffected.
    writer
        .list::<ServiceSpec>()
        .await
        .expect("the admin token still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_has_the_same_audit_log_naming_the_actor() {
    let (mut cluster, leader) = Cluster::start(&ALL, Some(BOOTSTRAP)).await;
    let boot = cluster.client(leader).clone();
    let ops = boot
        .create_token("ops", TokenRole::Admin)
        .await
        .expect("create ops");
    let follower = ALL
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let writer = as_token(&cluster, follower, &ops.token);
    // The follower knows the token once it has applied its creation.
    eventually(Duration::from_secs(5), || async {
        writer.list::<ServiceSpec>().await.ok()
    })
    .await
    .expect("the follower accepts the new token");

    // Through a follower, so the actor travels with the forwarded write.
    writer
        .put("web", &service("http://127.0.0.1:9"), None)
        .await
        .expect("put web");
    // Refused by the state machine (no such service): recorded with the reason.
    api_error(
        writer
            .put::<RouteSpec>("r", &route("missing", "/"), None)
            .await,
        StatusCode::BAD_REQUEST,
    );
    writer
        .delete::<ServiceSpec>("web", None)
        .await
        .expect("delete web");
    writer.trigger_snapshot().await.expect("snapshot");

    let last_index = {
        let entries = writer.audit(None, None).await.expect("audit on the writer");
        entries.last().map(|e| e.index).expect("entries")
    };
    for id in ALL {
        let client = cluster.client(id);
        let entries = eventually(Duration::from_secs(5), || async {
            client
                .audit(None, None)
                .await
                .ok()
                .filter(|e| e.last().is_some_and(|e| e.index == last_index))
        })
        .await
        .unwrap_or_else(|| panic!("node {id} did not get the audit entries"));
        let seen: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    e.actor.as_str(),
                    e.operation,
                    e.kind,
                    e.name.as_deref(),
                    e.error.is_some(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    BOOTSTRAP_ACTOR,
                    AuditOperation::Put,
                    Some(Kind::Token),
                    Some("ops"),
                    false
                ),
                (
                    "ops",
                    AuditOperation::Put,
                    Some(Kind::Service),
                    Some("web"),
                    false
                ),
                (
                    "ops",
                    AuditOperation::Put,
                    Some(Kind::Route),
                    Some("r"),
                    true
                ),
                (
                    "ops",
                    AuditOperation::Delete,
                    Some(Kind::Service),
                    Some("web"),
                    false
                ),
                ("ops", AuditOperation::Snapshot, None, None, false),
            ],
            "audit log on node {id}"
        );
        assert!(
            entries
                .windows(2)
                .all(|w| w[0].index < w[1].index && w[0].at <= w[1].at),
            "entries in log order on node {id}: {entries:?}"
        );
        assert!(
            entries[2]
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("missing")
        );
    }

    // The log travels in snapshots: a node that joins after every log was purged has it too.
    for id in ALL {
        cluster
            .client(id)
            .trigger_snapshot()
            .await
            .unwrap_or_else(|e| panic!("snapshot on node {id}: {e}"));
    }
    let before_join = boot.audit(None, None).await.expect("audit before the join");
    cluster.spawn_joiner(4);
    cluster.wait_healthy(4).await;
    boot.add_member(&cluster.add_member_body(4))
        .await
        .expect("add node 4");
    let joined = eventually(Duration::from_secs(10), || async {
        let entries = cluster.client(4).audit(None, None).await.ok()?;
        (entries.len() > before_join.len()).then_some(entries)
    })
    .await
    .expect("node 4 has the audit log");
    assert_eq!(joined[..before_join.len()], before_join[..]);
    let last = joined.last().expect("entries");
    assert_eq!(
        (last.actor.as_str(), last.operation, last.name.as_deref()),
        (BOOTSTRAP_ACTOR, AuditOperation::AddMember, Some("4"))
    );

    // Paging: `since` is exclusive, `limit` caps; the newest entries without `since`.
    let all = boot.audit(None, None).await.expect("audit");
    let page = boot.audit(Some(2), Some(all[0].index)).await.expect("page");
    assert_eq!(page, all[1..3].to_vec());
    let newest = boot.audit(Some(1), None).await.expect("newest");
    assert_eq!(newest, all[all.len() - 1..].to_vec());
    api_error(boot.audit(Some(0), None).await, StatusCode::BAD_REQUEST);

    // The OpenAPI document describes the new endpoints and the 403 of writes.
    let (_, _, doc) = boot
        .request(Method::GET, "/openapi.json", None, HeaderMap::new())
        .await
        .expect("openapi");
    let doc: serde_json::Value = serde_json::from_slice(&doc).expect("openapi is JSON");
    for path in ["/tokens", "/tokens/{name}", "/audit"] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    assert!(doc["paths"]["/services/{name}"]["put"]["responses"]["403"].is_object());
    assert!(doc["paths"]["/services/{name}"]["get"]["responses"]["403"].is_null());
    assert!(doc["components"]["schemas"]["AuditEntry"].is_object());
}
