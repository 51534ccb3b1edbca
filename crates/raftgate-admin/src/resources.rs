//! CRUD for every replicated resource kind, written once over [`Resource`]. A team token sees
//! only what [`raftgate_model::access::authorize`] lets it read (its team's objects, public
//! APIs) and gets 404 for the rest; writes are authorized again by the state machine.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use raftgate_model::access::Action;
use raftgate_model::state::Resource;
use raftgate_model::{Command, Entity, Kind, validate};
use serde::Serialize;

use crate::auth::Caller;
use crate::extract::{ReadQuery, if_match, json_body, read_query};
use crate::{ApiError, Shared};

/// A list answer: `{"data": [...]}`.
#[derive(Serialize)]
pub struct List<T> {
    /// The items, by name.
    pub data: Vec<T>,
}

/// The routes of one kind: `/{kind}` and `/{kind}/{name}`.
pub fn routes<R: Resource>() -> Router<Shared> {
    let collection = format!("/{}", R::KIND.collection());
    let item = format!("{collection}/{{name}}");
    Router::new()
        .route(&collection, get(list::<R>))
        .route(&item, get(read::<R>).put(put::<R>).delete(delete::<R>))
}

/// The state to read from: local, or linearizable on request.
pub async fn state_for(
    s: &Shared,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<std::sync::Arc<raftgate_model::State>, ApiError> {
    if read_query(q)?.consistent {
        Ok(s.node.linearizable_state().await?)
    } else {
        Ok(s.node.state())
    }
}

async fn list<R: Resource>(
    State(s): State<Shared>,
    caller: Caller,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<axum::Json<List<Entity<R::View>>>, ApiError> {
    caller.may(Action::Read, R::KIND)?;
    let state = state_for(&s, q).await?;
    Ok(axum::Json(List {
        data: R::table(&state)
            .values()
            .filter(|e| caller.sees(&state, R::KIND, &e.name))
            .map(Entity::view)
            .collect(),
    }))
}

/// 404 for a missing resource of kind `R`.
pub fn not_found<R: Resource>(name: &str) -> ApiError {
    ApiError::NotFound(format!("{} '{name}' does not exist", R::KIND))
}

/// Answers with the admin view of `entity` (never its secrets) and its version as ETag.
fn with_etag<R: Resource>(status: StatusCode, entity: &Entity<R>) -> Response {
    let mut response = (status, axum::Json(entity.view())).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", entity.version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// Reads the stored object `name` of kind `R` as the caller may see it, with its version as
/// ETag.
pub async fn read_named<R: Resource>(
    s: &Shared,
    caller: &Caller,
    name: &str,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.may(Action::Read, R::KIND)?;
    let state = state_for(s, q).await?;
    caller.may_read(&state, R::KIND, name, not_found::<R>(name))?;
    let entity = R::table(&state)
        .get(name)
        .ok_or_else(|| not_found::<R>(name))?;
    Ok(with_etag(StatusCode::OK, entity))
}

async fn read<R: Resource>(
    State(s): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    read_named::<R>(&s, &caller, &name, q).await
}

async fn put<R: Resource>(
    State(s): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.may(Action::Write, R::KIND)?;
    validate::name("name", &name)?;
    let mut spec: R = json_body(body)?;
    crate::consumers::seal_secrets(&s, &mut spec).await?;
    crate::ai::prepare(&s, &name, &mut spec)?;
    put_spec(&s, &caller, name, spec, if_match(&headers)?).await
}

/// Validates and writes `spec` under `name` (already checked) for `caller`, as its team's when
/// it is a team token and the spec names none; answers 201 or 200 with the stored entity.
pub async fn put_spec<R: Resource>(
    s: &Shared,
    caller: &Caller,
    name: String,
    spec: R,
    if_version: Option<u64>,
) -> Result<Response, ApiError> {
    spec.validate()?;
    let mut spec = spec.into_spec();
    caller.fill_team(&mut spec);
    let outcome = s
        .node
        .write_as(
            &caller.name,
            Command::Put {
                name: name.clone(),
                spec: Box::new(spec),
                if_version,
            },
        )
        .await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    stored::<R>(s, &name, status)
}

/// Answers with the locally stored entity `name` (which the write just applied).
pub fn stored<R: Resource>(
    s: &Shared,
    name: &str,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let state = s.node.state();
    let entity = R::table(&state)
        .get(name)
        .ok_or_else(|| not_found::<R>(name))?;
    Ok(with_etag(status, entity))
}

async fn delete<R: Resource>(
    State(s): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    delete_named(&s, &caller, R::KIND, name, if_match(&headers)?).await
}

/// Deletes object `name` of `kind` for `caller` (the state machine answers 404 for what the
/// caller may not see).
pub async fn delete_named(
    s: &Shared,
    caller: &Caller,
    kind: Kind,
    name: String,
    if_version: Option<u64>,
) -> Result<StatusCode, ApiError> {
    caller.may(Action::Write, kind)?;
    s.node
        .write_as(
            &caller.name,
            Command::Delete {
                kind,
                name,
                if_version,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
