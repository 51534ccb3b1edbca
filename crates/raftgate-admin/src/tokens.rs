//! Admin tokens besides the bootstrap `--admin-token`: made here (the secret is shown once),
//! replicated as a SHA-256 digest, and revoked cluster-wide by deleting them. Their names are the
//! actors of the audit log. A team's owners manage the team's tokens (and see only those); the
//! cluster's tokens are a cluster admin's.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use raftgate_model::access::{ANONYMOUS_ACTOR, Action, BOOTSTRAP_ACTOR, StoredToken};
use raftgate_model::api::{CreateToken, CreatedToken, TokenInfo};
use raftgate_model::{Kind, Spec, validate};

use crate::auth::{Caller, Secret, write_new};
use crate::extract::{ReadQuery, json_body};
use crate::resources::{List, delete_named, state_for};
use crate::{ApiError, Shared};

/// The token routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{name}", delete(remove))
}

async fn create(
    State(s): State<Shared>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    caller.may(Action::Write, Kind::Token)?;
    let CreateToken { name, role, team } = json_body(body)?;
    validate::name("name", &name)?;
    // A team owner's token makes its own team's tokens unless it says otherwise.
    let team = team.or_else(|| {
        caller
            .scope
            .team()
            .filter(|_| role.is_team_role())
            .map(str::to_string)
    });
    validate::token_team(role, team.as_deref())?;
    if name == BOOTSTRAP_ACTOR || name == ANONYMOUS_ACTOR {
        return Err(ApiError::BadRequest {
            field: Some("name".into()),
            message: format!("'{name}' is reserved for the audit log; choose another name"),
        });
    }
    if s.node.state().tokens.contains_key(&name) {
        return Err(ApiError::BadRequest {
            field: Some("name".into()),
            message: format!(
                "token '{name}' already exists; delete it first or choose another name"
            ),
        });
    }
    let Secret {
        secret,
        prefix,
        hash,
    } = Secret::generate("rga_");
    let stored = StoredToken {
        role,
        team: team.clone(),
        prefix: prefix.clone(),
        hash,
    };
    // Two concurrent creations of one name: the second fails rather than replaces.
    let version = write_new(&s, &caller, &name, Spec::Token(stored)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            name,
            role,
            team,
            token: secret,
            prefix,
            version,
        }),
    ))
}

async fn list(
    State(s): State<Shared>,
    caller: Caller,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<axum::Json<List<TokenInfo>>, ApiError> {
    caller.may(Action::Read, Kind::Token)?;
    let state = state_for(&s, q).await?;
    let data = state
        .tokens
        .values()
        .filter(|t| caller.sees(&state, Kind::Token, &t.name))
        .map(|t| TokenInfo {
            name: t.name.clone(),
            role: t.spec.role,
            team: t.spec.team.clone(),
            prefix: t.spec.prefix.clone(),
            version: t.version,
            created_at: t.created_at,
        })
        .collect();
    Ok(axum::Json(List { data }))
}

async fn remove(
    State(s): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_named(&s, &caller, Kind::Token, name, None).await
}
