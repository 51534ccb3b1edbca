//! `GET /upstreams/health`: how this node — or, with `?cluster=true`, every node — sees the
//! health of each service's targets. Health is local to each node (its own probes and its own
//! traffic), so the cluster view asks every member's admin API in turn.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use raftgate_client::AdminClient;
use raftgate_model::NodeId;
use raftgate_model::api::{NodeUpstreams, UpstreamHealth};
use serde::Deserialize;

use crate::{ApiError, Shared};

/// Where the admin API reads this node's upstream health from (the proxy).
pub type HealthSource = Arc<dyn Fn() -> Vec<UpstreamHealth> + Send + Sync>;

/// How long a member may take to answer for the cluster view.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthQuery {
    #[serde(default)]
    cluster: bool,
}

/// The route.
pub fn routes() -> Router<Shared> {
    Router::new().route("/upstreams/health", get(health))
}

fn local(s: &Shared) -> NodeUpstreams {
    NodeUpstreams {
        node_id: s.node.id(),
        services: s.health.as_ref().map(|h| h()).unwrap_or_default(),
        error: None,
    }
}

async fn health(
    State(s): State<Shared>,
    headers: HeaderMap,
    q: Result<Query<HealthQuery>, QueryRejection>,
) -> Result<axum::Json<Vec<NodeUpstreams>>, ApiError> {
    let q = q.map(|Query(q)| q).map_err(|e| ApiError::BadRequest {
        field: Some("cluster".into()),
        message: format!("bad query string: {}; use ?cluster=true", e.body_text()),
    })?;
    if !q.cluster {
        return Ok(axum::Json(vec![local(&s)]));
    }
    // The caller's token is valid on every node of the cluster.
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let status = s.node.status().await?;
    let mut views = Vec::with_capacity(status.members.len());
    for member in status.members {
        if member.id == s.node.id() {
            views.push(local(&s));
        } else {
            views.push(peer(member.id, &member.admin_addr, token.clone()).await);
        }
    }
    Ok(axum::Json(views))
}

async fn peer(node_id: NodeId, admin_addr: &str, token: Option<String>) -> NodeUpstreams {
    let unreachable = |error: String| NodeUpstreams {
        node_id,
        services: Vec::new(),
        error: Some(error),
    };
    let client = match AdminClient::new(admin_addr, token) {
        Ok(c) => c.with_timeout(PEER_TIMEOUT),
        Err(e) => return unreachable(e.to_string()),
    };
    match client.upstream_health().await {
        Ok(mut views) if views.len() == 1 => views.remove(0),
        Ok(_) => unreachable("the node answered with an unexpected body".into()),
        Err(e) => unreachable(e.to_string()),
    }
}
