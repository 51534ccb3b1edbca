//! Service discovery: instances register under a service with a TTL and keep themselves alive
//! with heartbeats, as with Consul's TTL checks. The leader removes lapsed instances for the
//! whole cluster (see `raftgate_cluster::Node`), so every node drops them at the same log index.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, put};
use raftgate_model::{Command, Entity, InstanceSpec, Kind, validate};

use crate::auth::Caller;
use crate::extract::{ReadQuery, if_match, json_body};
use crate::resources::{List, delete_named, not_found, put_spec, state_for, stored};
use crate::{ApiError, Shared};

/// The instance routes under `/services/{service}/instances`.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/services/{service}/instances", get(list))
        .route(
            "/services/{service}/instances/{id}",
            put(register).delete(deregister),
        )
        .route(
            "/services/{service}/instances/{id}/heartbeat",
            put(heartbeat),
        )
}

fn no_service(service: &str) -> ApiError {
    ApiError::NotFound(format!(
        "service '{service}' does not exist; create it first"
    ))
}

/// Checks that instance `id` is registered under `service` on this node, for a caller who
/// may see it.
fn owned(s: &Shared, caller: &Caller, service: &str, id: &str) -> Result<(), ApiError> {
    let state = s.node.state();
    caller.may_read(&state, Kind::Instance, id, not_found::<InstanceSpec>(id))?;
    match state.instances.get(id) {
        Some(i) if i.spec.service == service => Ok(()),
        _ => Err(not_found::<InstanceSpec>(id)),
    }
}

async fn list(
    State(s): State<Shared>,
    caller: Caller,
    Path(service): Path<String>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<axum::Json<List<Entity<InstanceSpec>>>, ApiError> {
    let state = state_for(&s, q).await?;
    caller.may_read(&state, Kind::Service, &service, no_service(&service))?;
    Ok(axum::Json(List {
        data: state.instances_of_service(&service).cloned().collect(),
    }))
}

async fn register(
    State(s): State<Shared>,
    caller: Caller,
    Path((service, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut spec: InstanceSpec = json_body(body)?;
    if !spec.service.is_empty() && spec.service != service {
        return Err(ApiError::BadRequest {
            field: Some("service".into()),
            message: format!(
                "the body names service '{}' but the URL '{service}'; leave it out",
                spec.service
            ),
        });
    }
    validate::name("name", &id)?;
    let state = s.node.state();
    caller.may_read(&state, Kind::Service, &service, no_service(&service))?;
    spec.service = service;
    put_spec(&s, &caller, id, spec, if_match(&headers)?).await
}

async fn heartbeat(
    State(s): State<Shared>,
    caller: Caller,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    owned(&s, &caller, &service, &id)?;
    s.node
        .write(Command::Heartbeat {
            instance: id.clone(),
        })
        .await?;
    stored::<InstanceSpec>(&s, &id, StatusCode::OK)
}

async fn deregister(
    State(s): State<Shared>,
    caller: Caller,
    Path((service, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    owned(&s, &caller, &service, &id)?;
    delete_named(&s, &caller, Kind::Instance, id, if_match(&headers)?).await
}
