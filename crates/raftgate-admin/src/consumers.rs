//! What the admin API adds to consumers beyond generic CRUD: their HS256 JWT secrets are sealed
//! and their basic-auth password hashed here, before anything is proposed, so plaintext never
//! reaches the Raft log (answers show neither: see `ConsumerView`); and
//! `GET /consumers/{name}/usage` reports their rate-limit and quota counters.

use std::any::Any;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use raftgate_model::policy::{ConsumerUsage, JwtAlgorithm};
use raftgate_model::{ConsumerSpec, Kind};

use crate::auth::Caller;
use crate::extract::ReadQuery;
use crate::resources::state_for;
use crate::{AdminState, ApiError, Shared};

/// The routes under `/consumers/{name}/usage`.
pub fn routes() -> Router<Shared> {
    Router::new().route("/consumers/{name}/usage", get(usage))
}

/// Makes a consumer's secrets fit for the Raft log: its HS256 JWT secrets are sealed and its
/// basic-auth password replaced by its Argon2id hash; other specs pass unchanged. A secret left
/// out stays out (the state machine keeps the stored one); a value that already is an Argon2
/// hash is kept as it is.
pub async fn seal_secrets(s: &AdminState, spec: &mut (dyn Any + Send)) -> Result<(), ApiError> {
    let Some(consumer) = spec.downcast_mut::<ConsumerSpec>() else {
        return Ok(());
    };
    for (i, credential) in consumer.jwt.iter_mut().enumerate() {
        if credential.algorithm == JwtAlgorithm::HS256
            && let Some(secret) = credential.key.take()
        {
            if secret.is_empty() {
                return Err(ApiError::BadRequest {
                    field: Some(format!("jwt[{i}].key")),
                    message: "must not be empty; leave it out to keep the stored secret".into(),
                });
            }
            credential.key = Some(crate::secrets::seal(s, &format!("jwt[{i}].key"), secret)?);
        }
    }
    let Some(basic) = consumer.basic_auth.as_mut() else {
        return Ok(());
    };
    if basic.password.is_empty() || basic.password.starts_with("$argon2") {
        return Ok(());
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

/// 404 for consumer `name`, which does not exist (for the caller).
pub fn no_consumer(name: &str) -> ApiError {
    ApiError::NotFound(format!("consumer '{name}' does not exist; create it first"))
}

async fn usage(
    State(s): State<Shared>,
    caller: Caller,
    Path(consumer): Path<String>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<axum::Json<ConsumerUsage>, ApiError> {
    let state = state_for(&s, q).await?;
    caller.may_read(&state, Kind::Consumer, &consumer, no_consumer(&consumer))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(axum::Json(ConsumerUsage::of(&state, &consumer, now)))
}
