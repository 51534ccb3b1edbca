//! The node's AI gateway: one [`Gateway`] per node, its configuration rebuilt from the
//! replicated providers and models on every state change, and the secrets key their
//! credentials are sealed with.

use std::path::Path;
use std::sync::Arc;

use raftgate_ai::secrets::SecretsKey;
use raftgate_ai::{Gateway, GatewayConfig, UsageRecord, UsageSink};
use raftgate_model::State;
use tokio::sync::watch;

use crate::CliError;

/// Usage records go to the log until usage is replicated: one debug line per call.
pub struct LogUsage;

impl UsageSink for LogUsage {
    fn record(&self, r: UsageRecord) {
        tracing::debug!(consumer = ?r.caller.consumer, model = %r.model, provider = %r.provider,
            prompt = r.usage.prompt_tokens, completion = r.usage.completion_tokens,
            cost_usd = r.cost_usd, completed = r.completed, "AI usage");
    }
}

/// The key provider credentials are sealed with: from `--secrets-key-file` when given, else
/// derived from the cluster secret; without either, none (and the admin API refuses provider
/// credentials, which this says once at startup).
pub fn secrets_key(
    file: Option<&Path>,
    cluster_secret: Option<&str>,
) -> Result<Option<Arc<SecretsKey>>, CliError> {
    let secret = match file {
        Some(path) => {
            let text = std::fs::read(path).map_err(CliError::io(format!(
                "reading the secrets key file {}",
                path.display()
            )))?;
            let text = String::from_utf8_lossy(&text).trim().to_string();
            if text.len() < 16 {
                return Err(CliError::Config(format!(
                    "the secrets key in {} must be at least 16 characters; generate one with `openssl rand -hex 32`",
                    path.display()
                )));
            }
            text
        }
        None => match cluster_secret {
            Some(s) => s.to_string(),
            None => {
                tracing::warn!(
                    "no secrets key: AI provider credentials cannot be stored (the admin API refuses them); start every node with --cluster-secret or --secrets-key-file"
                );
                return Ok(None);
            }
        },
    };
    Ok(Some(Arc::new(SecretsKey::derive(secret.as_bytes()))))
}

/// Keeps `gateway` serving what the replicated state says, until the state channel closes.
/// A configuration the gateway refuses leaves the previous one in place, with an error logged.
pub async fn follow(
    mut states: watch::Receiver<Arc<State>>,
    gateway: Arc<Gateway>,
    key: Option<Arc<SecretsKey>>,
) {
    let mut last = None;
    loop {
        let state = states.borrow_and_update().clone();
        let tables = (state.ai_providers.clone(), state.ai_models.clone());
        let changed = last
            .as_ref()
            .is_none_or(|(p, m)| !Arc::ptr_eq(p, &tables.0) || !Arc::ptr_eq(m, &tables.1));
        if changed {
            let config = GatewayConfig::from_state(&state, key.as_deref());
            match gateway.update(&config) {
                Ok(()) => tracing::debug!(
                    providers = config.providers.len(),
                    models = config.models.len(),
                    "AI gateway configuration updated"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "AI gateway configuration refused; keeping the previous one")
                }
            }
            last = Some(tables);
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}
