//! Cluster status and membership: `GET /cluster`, adding and removing members, snapshots.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use raftgate_model::NodeId;
use raftgate_model::api::{AddMember, ClusterStatus, Health};
use serde::Serialize;

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

async fn status(State(s): State<Shared>) -> Result<axum::Json<ClusterStatus>, ApiError> {
    Ok(axum::Json(s.node.status().await?))
}

async fn add(
    State(s): State<Shared>,
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
    Ok(axum::Json(s.node.add_member(member).await?))
}

async fn remove(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<ClusterStatus>, ApiError> {
    let id: NodeId = id.parse().map_err(|_| ApiError::BadRequest {
        field: Some("id".into()),
        message: format!("'{id}' is not a node id (a positive integer)"),
    })?;
    Ok(axum::Json(s.node.remove_member(id).await?))
}

async fn snapshot(State(s): State<Shared>) -> Result<axum::Json<SnapshotTaken>, ApiError> {
    Ok(axum::Json(SnapshotTaken {
        snapshot_index: s.node.snapshot().await?,
    }))
}
