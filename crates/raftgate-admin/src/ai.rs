//! What the admin API adds to the AI gateway's resources beyond generic CRUD: a provider's
//! credential is sealed with the cluster's secrets key before anything is proposed (so the
//! Raft log, the WAL and snapshots only hold ciphertext, and it is refused when no key is
//! configured rather than stored in clear), and providers and models are checked with the
//! gateway's own validation before they are written; a prompt API must call a model that
//! exists (the state machine refuses a path another prompt API or a route serves). `GET /ai/usage` reports the
//! replicated usage.

use std::any::Any;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use raftgate_ai::GatewayConfig;
use raftgate_ai::config::ConfigError;
use raftgate_model::ai::{ModelConfig, ProviderConfig, UsageQuery, UsageReport};
use raftgate_model::prompt::PromptSpec;

use crate::{AdminState, ApiError, Shared};

/// The route `GET /ai/usage`.
pub fn routes() -> Router<Shared> {
    Router::new().route("/ai/usage", get(usage))
}

/// `GET /ai/usage?consumer=&key=&model=&provider=&from=&to=&period=hour|day`: requests, tokens
/// and cost from this node's copy of the replicated usage (every node reports, so every node
/// has the sum).
async fn usage(
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

/// Seals a provider's credential and validates providers, models and prompts against the
/// others; other specs pass.
pub fn prepare(s: &AdminState, name: &str, spec: &mut (dyn Any + Send)) -> Result<(), ApiError> {
    if let Some(prompt) = spec.downcast_ref::<PromptSpec>() {
        return check_prompt(s, prompt);
    }
    let mut config = GatewayConfig::default();
    if let Some(provider) = spec.downcast_mut::<ProviderConfig>() {
        // Checked before sealing, while the credential is still the user's.
        raftgate_model::validate::ai_provider(provider)?;
        seal(s, provider)?;
        config.providers.insert(name.to_string(), provider.clone());
    } else if let Some(model) = spec.downcast_ref::<ModelConfig>() {
        // Only this model is checked, against the providers that exist now, so a model broken
        // by an earlier provider deletion does not block unrelated writes.
        let state = s.node.state();
        config.providers = state
            .ai_providers
            .iter()
            .map(|(n, e)| (n.clone(), e.spec.clone()))
            .collect();
        config.models.insert(name.to_string(), model.clone());
    } else {
        return Ok(());
    }
    config.validate().map_err(|e| {
        let field = match e {
            ConfigError::BadBaseUrl { .. } => "base_url",
            _ => "deployments",
        };
        ApiError::BadRequest {
            field: Some(field.into()),
            message: e.to_string(),
        }
    })
}

/// A prompt must be valid on its own and its model exist (whether its path is free of other
/// prompt APIs and routes is the state machine's rule).
fn check_prompt(s: &AdminState, prompt: &PromptSpec) -> Result<(), ApiError> {
    raftgate_model::prompt::validate(prompt)?;
    let state = s.node.state();
    if !state.ai_models.contains_key(&prompt.model) {
        return Err(ApiError::BadRequest {
            field: Some("model".into()),
            message: format!(
                "model {} does not exist; create it with PUT /ai/models/{} first or fix the name",
                prompt.model, prompt.model
            ),
        });
    }
    Ok(())
}

fn seal(s: &AdminState, provider: &mut ProviderConfig) -> Result<(), ApiError> {
    if let Some(plain) = provider.api_key.take() {
        provider.api_key = Some(crate::secrets::seal(s, "api_key", plain)?);
    }
    Ok(())
}
