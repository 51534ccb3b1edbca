//! `GET /analytics` and `GET /analytics/top`: the cluster's traffic analytics, answered from
//! this node's copy of the replicated buckets (every node reports its traffic, so every node
//! has the sum). `GET /analytics/ai` is the AI gateway's usage, the same report as
//! `GET /ai/usage`, so that all analytics are reachable from one place.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use raftgate_model::analytics::{AnalyticsQuery, AnalyticsReport, TopQuery, TopReport};
use raftgate_policy::counter::now_ms;

use crate::{ApiError, Shared};

/// The analytics routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/analytics", get(report))
        .route("/analytics/top", get(top))
        .route("/analytics/ai", get(crate::ai::usage))
}

fn bad_query(e: &QueryRejection, expected: &str) -> ApiError {
    ApiError::BadRequest {
        field: None,
        message: format!("bad query string: {}; use {expected}", e.body_text()),
    }
}

const FILTERS: &str = "api=, version=, route=, service=, consumer=, from= and to= (Unix milliseconds), step=minute, hour or day";

/// `GET /analytics?api=&version=&route=&service=&consumer=&from=&to=&step=`.
async fn report(
    State(s): State<Shared>,
    q: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<axum::Json<AnalyticsReport>, ApiError> {
    let Query(query) = q.map_err(|e| bad_query(&e, FILTERS))?;
    Ok(axum::Json(s.node.state().traffic.report(&query, now_ms())))
}

/// `GET /analytics/top?by=consumer|route|service|api&metric=requests|errors|latency&limit=`,
/// with the filters of `GET /analytics`.
async fn top(
    State(s): State<Shared>,
    q: Result<Query<TopQuery>, QueryRejection>,
    filter: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<axum::Json<TopReport>, ApiError> {
    let expected = format!(
        "by=consumer, route, service or api, metric=requests, errors or latency, limit=, and {FILTERS}"
    );
    let Query(query) = q.map_err(|e| bad_query(&e, &expected))?;
    let Query(filter) = filter.map_err(|e| bad_query(&e, &expected))?;
    if query.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(ApiError::BadRequest {
            field: Some("limit".into()),
            message: "limit must be between 1 and 1000 rows".into(),
        });
    }
    Ok(axum::Json(s.node.state().traffic.top(
        &query,
        &filter,
        now_ms(),
    )))
}
