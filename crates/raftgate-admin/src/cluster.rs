//! Cluster status and membership: `GET /cluster`, every member's health (`GET /cluster/nodes`),
//! adding and removing members, snapshots, and the node's liveness (`/health`) and readiness
//! (`/ready`).

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use raftgate_client::{AdminClient, ClientError};
use raftgate_cluster::WriteError;
use raftgate_cluster::node::READY_WAIT;
use raftgate_model::access::AuditOperation;
use raftgate_model::api::{
    AddMember, ClusterNodes, ClusterStatus, Health, Member, NodeHealth, NodeState, Ready,
};
use raftgate_model::{Command, NodeId};
use serde::Serialize;

use crate::auth::Caller;
use crate::extract::json_body;
use crate::{ApiError, Shared};

/// `POST /cluster/snapshot`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SnapshotTaken {
    /// Last log index the snapshot covers; the log up to it was purged.
    pub snapshot_index: u64,
}

/// The cluster routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/cluster", get(status))
        .route("/cluster/nodes", get(nodes))
        .route("/cluster/members", post(add))
        .route("/cluster/members/{id}", delete(remove))
        .route("/cluster/snapshot", post(snapshot))
}

/// Liveness of this node's admin API.
pub async fn health(State(s): State<Shared>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        node_id: s.node.id(),
    })
}

/// Whether this node can have writes committed now (see `Node::ready`); 503 `not_ready` with
/// the reason when it cannot.
pub async fn ready(State(s): State<Shared>) -> Result<axum::Json<Ready>, ApiError> {
    Ok(axum::Json(s.node.ready().await?))
}

async fn status(State(s): State<Shared>) -> Result<axum::Json<ClusterStatus>, ApiError> {
    Ok(axum::Json(s.node.status().await?))
}

/// How long a member may take to answer its readiness check: a node takes up to
/// [`READY_WAIT`] to have a leader confirm itself, and a second more covers the connection.
const PROBE_TIMEOUT: Duration = READY_WAIT.saturating_add(Duration::from_secs(1));

/// Every member with its health: what `GET /cluster` knows of it, and how it answers its own
/// `GET /ready` (asked of all members at once). A member that does not answer is reported
/// `down`, so one dead node never turns the answer into an error.
async fn nodes(State(s): State<Shared>) -> Result<axum::Json<ClusterNodes>, ApiError> {
    let status = s.node.status().await?;
    let probes = status.members.iter().map(|m| probe(&s, m));
    let states = futures_util::future::join_all(probes).await;
    let leader_applied = status
        .members
        .iter()
        .find(|m| Some(m.id) == status.leader_id)
        .and_then(|m| m.applied_index);
    let reference =
        leader_applied.or_else(|| status.members.iter().filter_map(|m| m.applied_index).max());
    let nodes = status
        .members
        .into_iter()
        .zip(states)
        .map(|(m, (state, message))| NodeHealth {
            leader: Some(m.id) == status.leader_id,
            lag: reference
                .zip(m.applied_index)
                .map(|(r, a)| r.saturating_sub(a)),
            id: m.id,
            role: m.role,
            cluster_addr: m.cluster_addr,
            admin_addr: m.admin_addr,
            proxy_addr: m.proxy_addr,
            applied_index: m.applied_index,
            state,
            message,
        })
        .collect();
    Ok(axum::Json(ClusterNodes {
        node_id: status.node_id,
        leader_id: status.leader_id,
        term: status.term,
        nodes,
    }))
}

/// Asks `member` whether it is ready: this node directly, the others through their admin API's
/// `GET /ready`, which needs no token.
async fn probe(s: &Shared, member: &Member) -> (NodeState, Option<String>) {
    if member.id == s.node.id() {
        return match s.node.ready().await {
            Ok(_) => (NodeState::Ready, None),
            Err(e) => (NodeState::NotReady, Some(e.to_string())),
        };
    }
    // Members named by `--peer` are known by their cluster address only, until they answer
    // there with the rest.
    if member.admin_addr.is_empty() {
        return (
            NodeState::Down,
            Some(format!(
                "no answer at its cluster address {}",
                member.cluster_addr
            )),
        );
    }
    let client = match AdminClient::new(&member.admin_addr, None) {
        Ok(c) => c.with_timeout(PROBE_TIMEOUT),
        Err(e) => return (NodeState::Down, Some(e.to_string())),
    };
    match client.ready().await {
        Ok(_) => (NodeState::Ready, None),
        Err(ClientError::Api { body, .. }) => (NodeState::NotReady, Some(body.message)),
        Err(e) => (NodeState::Down, Some(e.to_string())),
    }
}

/// Records a cluster operation in the replicated audit log. The operation is over by now, so a
/// failure to record it is logged rather than answered; operations that failed for want of a
/// leader or a quorum are not recorded (the record could not be committed either).
async fn record<T>(
    s: &Shared,
    caller: &Caller,
    operation: AuditOperation,
    name: Option<String>,
    result: &Result<T, WriteError>,
) {
    // Without a leader the record could not be written either; do not make the caller wait twice.
    if let Err(WriteError::NoLeader { .. } | WriteError::NoQuorum(_) | WriteError::Stopped(_)) =
        result
    {
        return;
    }
    let error = result.as_ref().err().map(ToString::to_string);
    let command = Command::Record {
        operation,
        name,
        error,
    };
    if let Err(e) = s.node.write_as(&caller.name, command).await {
        tracing::warn!(actor = %caller.name, ?operation, error = %e, "cannot record a cluster operation in the audit log");
    }
}

async fn add(
    State(s): State<Shared>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<ClusterStatus>, ApiError> {
    let member: AddMember = json_body(body)?;
    for (field, addr) in [
        ("cluster_addr", &member.cluster_addr),
        ("admin_addr", &member.admin_addr),
        ("proxy_addr", &member.proxy_addr),
    ] {
        let ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(ApiError::BadRequest {
                field: Some(field.into()),
                message: format!("'{addr}' is not a host:port address"),
            });
        }
    }
    let id = member.id;
    let result = s.node.add_member(member).await;
    record(
        &s,
        &caller,
        AuditOperation::AddMember,
        Some(id.to_string()),
        &result,
    )
    .await;
    Ok(axum::Json(result?))
}

async fn remove(
    State(s): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<ClusterStatus>, ApiError> {
    let id: NodeId = id.parse().map_err(|_| ApiError::BadRequest {
        field: Some("id".into()),
        message: format!("'{id}' is not a node id (a positive integer)"),
    })?;
    let result = s.node.remove_member(id).await;
    record(
        &s,
        &caller,
        AuditOperation::RemoveMember,
        Some(id.to_string()),
        &result,
    )
    .await;
    Ok(axum::Json(result?))
}

async fn snapshot(
    State(s): State<Shared>,
    caller: Caller,
) -> Result<axum::Json<SnapshotTaken>, ApiError> {
    let result = s.node.snapshot().await;
    record(&s, &caller, AuditOperation::Snapshot, None, &result).await;
    Ok(axum::Json(SnapshotTaken {
        snapshot_index: result?,
    }))
}
