//! `GET /audit`: the replicated log of admin writes — who (token name), what, when, outcome —
//! readable on any node, by admin and read-only tokens alike.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use raftgate_model::access::{self, AUDIT_CAPACITY, AuditEntry};
use serde::Deserialize;

use crate::resources::List;
use crate::{ApiError, Shared};

/// Entries answered when the query names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// At most this many entries.
    #[serde(default)]
    limit: Option<usize>,
    /// Only entries after this log index (to page forward); the newest entries without it.
    #[serde(default)]
    since: Option<u64>,
    /// Linearizable read through the leader.
    #[serde(default)]
    consistent: bool,
}

/// The route.
pub fn routes() -> Router<Shared> {
    Router::new().route("/audit", get(read))
}

async fn read(
    State(s): State<Shared>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<axum::Json<List<AuditEntry>>, ApiError> {
    let q = q.map(|Query(q)| q).map_err(|e| ApiError::BadRequest {
        field: None,
        message: format!(
            "bad query string: {}; use ?limit=N&since=INDEX&consistent=true",
            e.body_text()
        ),
    })?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > AUDIT_CAPACITY {
        return Err(ApiError::BadRequest {
            field: Some("limit".into()),
            message: format!("must be 1 to {AUDIT_CAPACITY}"),
        });
    }
    let state = if q.consistent {
        s.node.linearizable_state().await?
    } else {
        s.node.state()
    };
    Ok(axum::Json(List {
        data: access::select(&state.audit, q.since, limit),
    }))
}
