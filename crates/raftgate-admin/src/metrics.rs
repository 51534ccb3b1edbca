//! `GET /metrics`: this node's metrics as Prometheus text.
//!
//! Like `/health`, it needs no token — as Kong serves `/metrics` on its status API, which has no
//! authentication — so that Prometheus can scrape every node without holding an admin
//! credential. It shows route, service, consumer, model and provider names and upstream
//! addresses, never keys or secrets; where those names must stay private, keep the admin port
//! off untrusted networks (as `--admin-addr` without `--admin-token` already forces).

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::{ApiError, Shared};

/// The route.
pub fn routes() -> Router<Shared> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(s): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let text = s.metrics.encode().map_err(ApiError::Metrics)?;
    Ok((
        [(header::CONTENT_TYPE, raftgate_metrics::CONTENT_TYPE)],
        text,
    ))
}
