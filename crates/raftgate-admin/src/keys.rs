//! API keys of consumers. The secret is made here, shown once, and only its SHA-256 is
//! replicated; the id and a short prefix let users tell keys apart later. A key's settings
//! (its AI limits) are given at creation or replaced later, keeping the secret.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use raftgate_model::api::{CreatedKey, KeyInfo, KeySettings};
use raftgate_model::{Command, Entity, Kind, Spec, StoredKey};

use crate::auth::{Caller, Secret, write_new};
use crate::consumers::no_consumer;
use crate::extract::{ReadQuery, json_body};
use crate::resources::{List, delete_named, state_for};
use crate::{ApiError, Shared};

/// The key routes under `/consumers/{name}/keys`.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/consumers/{name}/keys", get(list).post(create))
        .route("/consumers/{name}/keys/{id}", put(update).delete(remove))
}

/// Parses and checks a key's settings. At creation an empty body means the defaults; a
/// replacement must say what it replaces them with (as the OpenAPI document states).
fn settings(body: Result<Bytes, BytesRejection>, required: bool) -> Result<KeySettings, ApiError> {
    if body
        .as_ref()
        .is_ok_and(|b| b.iter().all(u8::is_ascii_whitespace))
    {
        if required {
            return Err(ApiError::BadRequest {
                field: None,
                message: "send the key's settings as a JSON body, e.g. {\"ai_limits\":{}}".into(),
            });
        }
        return Ok(KeySettings::default());
    }
    let settings: KeySettings = json_body(body)?;
    settings.ai_limits.validate("ai_limits")?;
    Ok(settings)
}

fn info(k: &Entity<StoredKey>) -> KeyInfo {
    KeyInfo {
        id: k.name.clone(),
        consumer: k.spec.consumer.clone(),
        prefix: k.spec.prefix.clone(),
        version: k.version,
        created_at: k.created_at,
        ai_limits: k.spec.ai_limits,
    }
}

async fn create(
    State(s): State<Shared>,
    caller: Caller,
    Path(consumer): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, axum::Json<CreatedKey>), ApiError> {
    let settings = settings(body, false)?;
    caller.may_read(
        &s.node.state(),
        Kind::Consumer,
        &consumer,
        no_consumer(&consumer),
    )?;
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
        ai_limits: settings.ai_limits,
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
    caller: Caller,
    Path(consumer): Path<String>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<axum::Json<List<KeyInfo>>, ApiError> {
    let state = state_for(&s, q).await?;
    caller.may_read(&state, Kind::Consumer, &consumer, no_consumer(&consumer))?;
    let data = state
        .keys
        .values()
        .filter(|k| k.spec.consumer == consumer)
        .map(info)
        .collect();
    Ok(axum::Json(List { data }))
}

/// `PUT /consumers/{name}/keys/{id}`: replaces the key's settings; the secret stays.
async fn update(
    State(s): State<Shared>,
    caller: Caller,
    Path((consumer, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<KeyInfo>, ApiError> {
    let settings = settings(body, true)?;
    let current = owned_key(&s, &caller, &consumer, &id)?;
    let stored = StoredKey {
        ai_limits: settings.ai_limits,
        ..current.spec.clone()
    };
    // Guarded by the version read, so a concurrent revocation is not undone.
    let outcome = s
        .node
        .write_as(
            &caller.name,
            Command::Put {
                name: id,
                spec: Box::new(Spec::Key(stored)),
                if_version: Some(current.version),
            },
        )
        .await?;
    Ok(axum::Json(KeyInfo {
        version: outcome.index,
        ai_limits: settings.ai_limits,
        ..info(&current)
    }))
}

/// Key `id` of `consumer`, if the caller may see it.
fn owned_key(
    s: &Shared,
    caller: &Caller,
    consumer: &str,
    id: &str,
) -> Result<Entity<StoredKey>, ApiError> {
    let missing = || {
        ApiError::NotFound(format!(
            "consumer '{consumer}' has no key '{id}'; list its keys with GET /consumers/{consumer}/keys"
        ))
    };
    let state = s.node.state();
    caller.may_read(&state, Kind::Key, id, missing())?;
    state
        .keys
        .get(id)
        .filter(|k| k.spec.consumer == consumer)
        .cloned()
        .ok_or_else(missing)
}

async fn remove(
    State(s): State<Shared>,
    caller: Caller,
    Path((consumer, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    owned_key(&s, &caller, &consumer, &id)?;
    delete_named(&s, &caller, Kind::Key, id, None).await
}
