//! What the admin API adds to consumers beyond generic CRUD: their basic-auth password is
//! hashed here, before anything is proposed, so plaintext never reaches the Raft log; and
//! `GET /consumers/{name}/usage` reports their rate-limit and quota counters.

use std::any::Any;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use raftgate_model::ConsumerSpec;
use raftgate_model::policy::ConsumerUsage;

use crate::extract::ReadQuery;
use crate::resources::state_for;
use crate::{ApiError, Shared};

/// The routes under `/consumers/{name}/usage`.
pub fn routes() -> Router<Shared> {
    Router::new().route("/consumers/{name}/usage", get(usage))
}

/// Replaces a consumer's plaintext basic-auth password by its Argon2id hash; other specs pass
/// unchanged. A value that already is an Argon2 hash (a consumer read back and written again)
/// is kept.
pub async fn hash_secrets(spec: &mut (dyn Any + Send)) -> Result<(), ApiError> {
    let Some(basic) = spec
        .downcast_mut::<ConsumerSpec>()
        .and_then(|c| c.basic_auth.as_mut())
    else {
        return Ok(());
    };
    if basic.password.starts_with("$argon2") {
        return Ok(());
    }
    if basic.password.is_empty() {
        return Err(ApiError::BadRequest {
            field: Some("basic_auth.password".into()),
            message: "must not be empty".into(),
        });
    }
    let password = std::mem::take(&mut basic.password);
    // Argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    let hashed = tokio::task::spawn_blocking(move || {
        raftgate_policy::hash_password(&password).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    basic.password = hashed.map_err(|e| ApiError::BadRequest {
        field: Some("basic_auth.password".into()),
        message: format!("cannot be hashed ({e}); try a shorter password"),
    })?;
    Ok(())
}

async fn usage(
    State(s): State<Shared>,
    Path(consumer): Path<String>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<axum::Json<ConsumerUsage>, ApiError> {
    let state = state_for(&s, q).await?;
    if !state.consumers.contains_key(&consumer) {
        return Err(ApiError::NotFound(format!(
            "consumer '{consumer}' does not exist; create it first"
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(axum::Json(ConsumerUsage::of(&state, &consumer, now)))
}
