//! API keys of consumers. The secret is made here, shown once, and only its SHA-256 is
//! replicated; the id and a short prefix let users tell keys apart later.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use raftgate_model::api::{CreatedKey, KeyInfo};
use raftgate_model::{Command, Kind, Spec, StoredKey};

use crate::auth::{Caller, Secret, write_new};
use crate::extract::ReadQuery;
use crate::resources::{List, state_for};
use crate::{ApiError, Shared};

/// The key routes under `/consumers/{name}/keys`.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/consumers/{name}/keys", get(list).post(create))
        .route("/consumers/{name}/keys/{id}", delete(remove))
}

fn no_consumer(name: &str) -> ApiError {
    ApiError::NotFound(format!("consumer '{name}' does not exist; create it first"))
}

async fn create(
    State(s): State<Shared>,
    caller: Caller,
    Path(consumer): Path<String>,
) -> Result<(StatusCode, axum::Json<CreatedKey>), ApiError> {
    if !s.node.state().consumers.contains_key(&consumer) {
        return Err(no_consumer(&consumer));
    }
    let Secret {
        secret,
        prefix,
        hash,
    } = Secret::generate("rgk_");
    let id = hex::encode(rand::random::<[u8; 8]>());
    let stored = StoredKey {
        consumer: consumer.clone(),
        prefix: prefix.clone(),
        hash,
    };
    let version = write_new(&s, &caller, &id, Spec::Key(stored)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedKey {
            id,
            consumer,
            key: secret,
            prefix,
            version,
        }),
    ))
}

async fn list(
    State(s): State<Shared>,
    Path(consumer): Path<String>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<axum::Json<List<KeyInfo>>, ApiError> {
    let state = state_for(&s, q).await?;
    if !state.consumers.contains_key(&consumer) {
        return Err(no_consumer(&consumer));
    }
    let data = state
        .keys
        .values()
        .filter(|k| k.spec.consumer == consumer)
        .map(|k| KeyInfo {
            id: k.name.clone(),
            consumer: k.spec.consumer.clone(),
            prefix: k.spec.prefix.clone(),
            version: k.version,
            created_at: k.created_at,
        })
        .collect();
    Ok(axum::Json(List { data }))
}

async fn remove(
    State(s): State<Shared>,
    caller: Caller,
    Path((consumer, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let owned = s
        .node
        .state()
        .keys
        .get(&id)
        .is_some_and(|k| k.spec.consumer == consumer);
    if !owned {
        return Err(ApiError::NotFound(format!(
            "consumer '{consumer}' has no key '{id}'"
        )));
    }
    s.node
        .write_as(
            &caller.name,
            Command::Delete {
                kind: Kind::Key,
                name: id,
                if_version: None,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
