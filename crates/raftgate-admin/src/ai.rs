//! What the admin API adds to the AI gateway's resources beyond generic CRUD: a provider's
//! credential is sealed with the cluster's secrets key before anything is proposed (so the
//! Raft log, the WAL and snapshots only hold ciphertext, and it is refused when no key is
//! configured rather than stored in clear), and a provider is checked with the gateway's own
//! validation before it is written. (That a model's providers and a prompt API's model exist,
//! and that a prompt API's path is free, are the state machine's rules.) `GET /ai/usage`
//! reports the replicated usage.

use std::any::Any;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use raftgate_ai::GatewayConfig;
use raftgate_model::ai::{ProviderConfig, UsageQuery, UsageReport};

use crate::{AdminState, ApiError, Shared};

/// The route `GET /ai/usage`.
pub fn routes() -> Router<Shared> {
    Router::new().route("/ai/usage", get(usage))
}

/// `GET /ai/usage?consumer=&key=&model=&provider=&from=&to=&period=hour|day`: requests, tokens
/// and cost from this node's copy of the replicated usage (every node reports, so every node
/// has the sum).
pub(crate) async fn usage(
    State(s): State<Shared>,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<axum::Json<UsageReport>, ApiError> {
    let Query(query) = q.map_err(|e| ApiError::BadRequest {
        field: None,
        message: format!(
            "bad query string: {}; use consumer=, key=, model=, provider=, from= and to= (Unix milliseconds), period=hour or day",
            e.body_text()
        ),
    })?;
    Ok(axum::Json(UsageReport::of(
        &s.node.state().ai_usage,
        &query,
    )))
}

/// Seals a provider's credential and checks its base URL as the gateway will use it; other
/// specs pass. (Whether a model's providers and a prompt's model exist is the state machine's
/// rule.)
pub fn prepare(s: &AdminState, name: &str, spec: &mut (dyn Any + Send)) -> Result<(), ApiError> {
    let Some(provider) = spec.downcast_mut::<ProviderConfig>() else {
        return Ok(());
    };
    // Checked before sealing, while the credential is still the user's.
    raftgate_model::validate::ai_provider(provider)?;
    let mut config = GatewayConfig::default();
    config.providers.insert(name.to_string(), provider.clone());
    config.validate().map_err(|e| ApiError::BadRequest {
        field: Some("base_url".into()),
        message: e.to_string(),
    })?;
    seal(s, provider)
}

fn seal(s: &AdminState, provider: &mut ProviderConfig) -> Result<(), ApiError> {
    if let Some(plain) = provider.api_key.take() {
        provider.api_key = Some(crate::secrets::seal(s, "api_key", plain)?);
    }
    Ok(())
}
