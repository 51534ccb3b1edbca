//! Cluster status and membership: `GET /cluster`, adding and removing members, snapshots, and
//! the node's liveness (`/health`) and readiness (`/ready`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use raftgate_cluster::WriteError;
use raftgate_model::access::AuditOperation;
use raftgate_model::api::{AddMember, ClusterStatus, Health, Ready};
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
