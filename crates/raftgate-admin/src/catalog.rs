//! The API catalog's endpoints beyond generic CRUD (APIs and teams have that): an API's
//! versions and their lifecycle transitions under `/apis/{name}/versions`, and its
//! subscriptions with their approval under `/apis/{name}/subscriptions`, and the import of a
//! version's routes from an OpenAPI document (`.../import`, see [`raftgate_import`]). Versions and
//! subscriptions are stored under `"{api}/{version}"` and `"{api}/{application}"`, which is
//! also their `name` in answers. Every rule (who may, what must exist, which moves are
//! allowed) is the state machine's; these handlers shape the input and read the answers.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use raftgate_cluster::WriteError;
use raftgate_model::access::Action;
use raftgate_model::api::{Subscribe, Transition};
use raftgate_model::catalog::{ApiSpec, ApiVersionSpec, SubscriptionSpec, api_of, key};
use raftgate_model::state::Resource;
use raftgate_model::{Command, Entity, Kind, Rejection, validate};

use crate::auth::Caller;
use crate::extract::{ReadQuery, body_bytes, if_match, json_body};
use crate::resources::{List, delete_named, not_found, put_spec, read_named, state_for, stored};
use crate::{ApiError, Shared};

/// The routes under `/apis/{name}`.
pub fn routes() -> Router<Shared> {
    let version = "/apis/{name}/versions/{version}";
    let subscription = "/apis/{name}/subscriptions/{application}";
    Router::new()
        .route("/apis/{name}/versions", get(list_under::<ApiVersionSpec>))
        .route(
            version,
            get(read_under::<ApiVersionSpec>)
                .put(put_version)
                .delete(delete_under::<ApiVersionSpec>),
        )
        .route(&format!("{version}/transition"), post(transition))
        .route(&format!("{version}/import"), post(import))
        .route(&format!("{version}/openapi"), get(read_openapi))
        .route(
            "/apis/{name}/subscriptions",
            get(list_under::<SubscriptionSpec>).post(subscribe),
        )
        .route(
            subscription,
            get(read_under::<SubscriptionSpec>).delete(delete_under::<SubscriptionSpec>),
        )
        .route(&format!("{subscription}/approve"), post(approve))
        .route(&format!("{subscription}/reject"), post(reject))
}

/// `GET /apis/{name}/versions` or `.../subscriptions`: the entries of `R` under the API that
/// the caller sees, once it sees the API.
async fn list_under<R: Resource>(
    State(s): State<Shared>,
    caller: Caller,
    Path(api): Path<String>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<axum::Json<List<Entity<R::View>>>, ApiError> {
    caller.may(Action::Read, R::KIND)?;
    let state = state_for(&s, q).await?;
    caller.may_read(&state, Kind::Api, &api, not_found::<ApiSpec>(&api))?;
    let data = R::table(&state)
        .values()
        .filter(|e| api_of(&e.name) == api && caller.sees(&state, R::KIND, &e.name))
        .map(Entity::view)
        .collect();
    Ok(axum::Json(List { data }))
}

/// `GET /apis/{name}/versions/{version}` or `.../subscriptions/{application}`.
async fn read_under<R: Resource>(
    State(s): State<Shared>,
    caller: Caller,
    Path((api, name)): Path<(String, String)>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    read_named::<R>(&s, &caller, &key(&api, &name), q).await
}

/// `DELETE /apis/{name}/versions/{version}` (its routes go with it) or
/// `.../subscriptions/{application}` (revoked).
async fn delete_under<R: Resource>(
    State(s): State<Shared>,
    caller: Caller,
    Path((api, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let name = key(&api, &name);
    delete_named(&s, &caller, R::KIND, name, if_match(&headers)?).await
}

/// The key of `{api}/{part}` from a URL, both parts valid names (so the key splits back).
fn checked_key(api: &str, field: &str, part: &str) -> Result<String, ApiError> {
    validate::name("name", api)?;
    validate::name(field, part)?;
    Ok(key(api, part))
}

async fn put_version(
    State(s): State<Shared>,
    caller: Caller,
    Path((api, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.may(Action::Write, Kind::ApiVersion)?;
    let name = checked_key(&api, "version", &version)?;
    let spec: ApiVersionSpec = json_body(body)?;
    put_spec(&s, &caller, name, spec, if_match(&headers)?).await
}

async fn transition(
    State(s): State<Shared>,
    caller: Caller,
    Path((api, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.may(Action::Write, Kind::ApiVersion)?;
    let Transition { to } = json_body(body)?;
    let if_version = if_match(&headers)?;
    let name = key(&api, &version);
    let command = Command::Transition {
        api,
        version,
        to,
        if_version,
    };
    s.node.write_as(&caller.name, command).await?;
    stored::<ApiVersionSpec>(&s, &name, StatusCode::OK)
}

async fn subscribe(
    State(s): State<Shared>,
    caller: Caller,
    Path(api): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.may(Action::Write, Kind::Subscription)?;
    let Subscribe { application, plan } = json_body(body)?;
    let name = checked_key(&api, "application", &application)?;
    if let Some(plan) = &plan {
        validate::name("plan", plan)?;
    }
    let command = Command::Subscribe {
        api,
        application,
        plan,
    };
    let outcome = s.node.write_as(&caller.name, command).await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    stored::<SubscriptionSpec>(&s, &name, status)
}

/// `POST .../versions/{version}/import`: replaces the version's routes with those made from
/// the OpenAPI document in the body, in one command. They are made from the version as a
/// linearizable read finds it, and the command applies only if it is still at that version
/// (412 otherwise), so a base path or backend changed meanwhile never gets stale routes.
async fn import(
    State(s): State<Shared>,
    caller: Caller,
    Path((api, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<List<Entity<raftgate_model::RouteSpec>>>, ApiError> {
    caller.may(Action::Write, Kind::ApiVersion)?;
    let name = checked_key(&api, "version", &version)?;
    let expected = if_match(&headers)?;
    let body = body_bytes(body)?;
    let state = s.node.linearizable_state().await?;
    let missing = || not_found::<ApiVersionSpec>(&name);
    caller.may_read(&state, Kind::ApiVersion, &name, missing())?;
    let stored = state.api_versions.get(&name).ok_or_else(missing)?;
    if let Some(expected) = expected
        && expected != stored.version
    {
        return Err(WriteError::Rejected(Rejection::VersionMismatch {
            kind: Kind::ApiVersion,
            name,
            expected,
            actual: stored.version,
        })
        .into());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let imported = raftgate_import::import(&api, &version, &stored.spec, &body, content_type)?;
    let (operations, routes): (Vec<String>, Vec<_>) = imported
        .routes
        .into_iter()
        .map(|r| (r.operation, (r.name, r.spec)))
        .unzip();
    let names: Vec<String> = routes.iter().map(|(n, _)| n.clone()).collect();
    let command = Command::ReplaceVersionRoutes {
        api,
        version,
        routes,
        openapi: Some(imported.document),
        if_version: Some(stored.version),
    };
    s.node
        .write_as(&caller.name, command)
        .await
        .map_err(|e| at_operation(e, &operations))?;
    let state = s.node.state();
    let data = names
        .iter()
        .filter_map(|n| state.routes.get(n))
        .map(Entity::view)
        .collect();
    Ok(axum::Json(List { data }))
}

/// The rejection of imported routes with `routes[i]` in its field replaced by where in the
/// document route `i` comes from (`paths./users/{id}.get`).
fn at_operation(mut e: WriteError, operations: &[String]) -> WriteError {
    if let WriteError::Rejected(rejection) = &mut e
        && let Some(field) = rejection.field_mut()
        && let Some((i, rest)) = field
            .strip_prefix("routes[")
            .and_then(|f| f.split_once(']'))
        && let Some(operation) = i.parse::<usize>().ok().and_then(|i| operations.get(i))
    {
        *field = format!("{operation}{rest}");
    }
    e
}

/// `GET .../versions/{version}/openapi`: the version's OpenAPI document as it was imported,
/// as JSON or YAML as it was written.
async fn read_openapi(
    State(s): State<Shared>,
    caller: Caller,
    Path((api, version)): Path<(String, String)>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.may(Action::Read, Kind::ApiVersion)?;
    let name = key(&api, &version);
    let state = state_for(&s, q).await?;
    let missing = || not_found::<ApiVersionSpec>(&name);
    caller.may_read(&state, Kind::ApiVersion, &name, missing())?;
    let stored = state.api_versions.get(&name).ok_or_else(missing)?;
    let Some(document) = &stored.spec.openapi else {
        return Err(ApiError::NotFound(format!(
            "API version '{name}' has no OpenAPI document; import one with POST /apis/{api}/versions/{version}/import"
        )));
    };
    let format = raftgate_import::Format::of_stored(document);
    Ok((
        [(header::CONTENT_TYPE, format.media_type())],
        document.clone(),
    )
        .into_response())
}

/// Approves or rejects a pending subscription.
async fn decide(
    s: &Shared,
    caller: &Caller,
    (api, application): (String, String),
    approve: bool,
) -> Result<Response, ApiError> {
    caller.may(Action::Approve, Kind::Subscription)?;
    let name = key(&api, &application);
    let command = Command::Decide {
        api,
        application,
        approve,
    };
    s.node.write_as(&caller.name, command).await?;
    stored::<SubscriptionSpec>(s, &name, StatusCode::OK)
}

async fn approve(
    State(s): State<Shared>,
    caller: Caller,
    Path(names): Path<(String, String)>,
) -> Result<Response, ApiError> {
    decide(&s, &caller, names, true).await
}

async fn reject(
    State(s): State<Shared>,
    caller: Caller,
    Path(names): Path<(String, String)>,
) -> Result<Response, ApiError> {
    decide(&s, &caller, names, false).await
}
