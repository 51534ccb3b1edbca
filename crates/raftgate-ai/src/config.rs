//! The gateway's configuration: providers, model aliases and their deployments, retry and
//! cooldown policies.
//!
//! Providers and model aliases are replicated resources (`PUT /ai/providers/{name}`,
//! `PUT /ai/models/{alias}`), defined in `raftgate_model::ai` and re-exported here. A model alias
//! maps to deployments (a provider and its model name) ordered by `priority` (lower first) and,
//! within one priority, chosen by `weight`; the next deployment serves when one fails. Prompt
//! APIs (`PUT /ai/prompts/{name}`) are templates over a model alias served at their own paths.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use raftgate_model::State;
pub use raftgate_model::ai::{Deployment, ModelConfig, ProviderConfig};
pub use raftgate_model::prompt::PromptSpec;

use raftgate_secrets::SecretsKey;

/// Retries of one deployment before falling back to the next.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetryPolicy {
    /// Extra attempts on the same deployment after a retryable failure.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff; it doubles each retry, with jitter.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Longest backoff.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

fn default_retries() -> u32 {
    1
}
fn default_backoff_ms() -> u64 {
    100
}
fn default_max_backoff_ms() -> u64 {
    2_000
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: default_retries(),
            backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}

/// When a failing deployment is taken out of rotation, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CooldownPolicy {
    /// Consecutive failures that cool a deployment down.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long it stays out (it is still tried when nothing else is left).
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
}

fn default_failures() -> u32 {
    3
}
fn default_cooldown_ms() -> u64 {
    30_000
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        CooldownPolicy {
            failures: default_failures(),
            cooldown_ms: default_cooldown_ms(),
        }
    }
}

/// Everything the gateway engine needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayConfig {
    /// Providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Model aliases by name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Retries per deployment.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Cooldown of failing deployments.
    #[serde(default)]
    pub cooldown: CooldownPolicy,
    /// Prompt APIs by name.
    #[serde(default)]
    pub prompts: BTreeMap<String, PromptSpec>,
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A deployment names a provider that is not configured.
    #[error(
        "model {model} has a deployment on provider {provider}, which does not exist; add the provider or fix the name"
    )]
    UnknownProvider {
        /// The alias.
        model: String,
        /// The missing provider.
        provider: String,
    },
    /// An alias has no deployment that can take traffic.
    #[error("model {0} has no deployment with a weight above 0; give it at least one deployment")]
    NoDeployment(String),
    /// A base URL is not an absolute http(s) URL.
    #[error(
        "provider {provider} has base_url {url:?}, which is not an absolute http:// or https:// URL"
    )]
    BadBaseUrl {
        /// The provider.
        provider: String,
        /// What was configured.
        url: String,
    },
    /// The HTTPS client could not be built.
    #[error("the TLS client for providers could not be set up: {0}")]
    Tls(String),
}

impl GatewayConfig {
    /// The configuration the replicated state describes, with credentials opened by `key`.
    ///
    /// One bad entry must not take the others down: a provider whose credential cannot be
    /// opened (no key on this node, or another key sealed it) is left out, deployments on
    /// providers that do not exist are dropped, and a model left without deployments is left
    /// out; each with a warning saying what to fix.
    pub fn from_state(state: &State, key: Option<&SecretsKey>) -> GatewayConfig {
        let mut config = GatewayConfig::default();
        for (name, entity) in state.ai_providers.iter() {
            let mut provider = entity.spec.clone();
            if let Some(sealed) = &provider.api_key {
                let opened = key
                    .ok_or_else(|| {
                        "this node has no secrets key (--cluster-secret or --secrets-key-file)"
                            .to_string()
                    })
                    .and_then(|k| k.open(sealed).map_err(|e| e.to_string()));
                match opened {
                    Ok(plain) => provider.api_key = Some(plain),
                    Err(why) => {
                        tracing::warn!(provider = %name, "AI provider left out: {why}");
                        continue;
                    }
                }
            }
            config.providers.insert(name.clone(), provider);
        }
        for (alias, entity) in state.ai_models.iter() {
            let mut model = entity.spec.clone();
            model.deployments.retain(|d| {
                let known = config.providers.contains_key(&d.provider);
                if !known {
                    tracing::warn!(model = %alias, provider = %d.provider,
                        "AI model deployment left out: its provider does not exist or cannot be used");
                }
                known
            });
            if model.deployments.iter().any(|d| d.weight > 0) {
                config.models.insert(alias.clone(), model);
            } else {
                tracing::warn!(model = %alias, "AI model left out: none of its deployments can take traffic");
            }
        }
        // A prompt whose model is missing is kept: calling it says what an administrator must fix.
        config.prompts = state
            .ai_prompts
            .iter()
            .map(|(name, e)| (name.clone(), e.spec.clone()))
            .collect();
        config
    }

    /// Checks references and URLs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, p) in &self.providers {
            let ok = (p.base_url.starts_with("http://") || p.base_url.starts_with("https://"))
                && p.base_url.parse::<http::Uri>().is_ok();
            if !ok {
                return Err(ConfigError::BadBaseUrl {
                    provider: name.clone(),
                    url: p.base_url.clone(),
                });
            }
        }
        for (alias, m) in &self.models {
            if let Some(d) = m
                .deployments
                .iter()
                .find(|d| !self.providers.contains_key(&d.provider))
            {
                return Err(ConfigError::UnknownProvider {
                    model: alias.clone(),
                    provider: d.provider.clone(),
                });
            }
            if m.deployments.iter().all(|d| d.weight == 0) {
                return Err(ConfigError::NoDeployment(alias.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_validation() {
        let config: GatewayConfig = serde_json::from_value(json!({
            "providers": {"oa": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key": "k"}},
            "models": {"fast": {"deployments": [{"provider": "oa", "model": "gpt-4o-mini"}]}}
        }))
        .unwrap();
        assert_eq!(config.providers["oa"].timeout_ms, 120_000);
        assert_eq!(config.models["fast"].deployments[0].weight, 1);
        assert_eq!(config.retry, RetryPolicy::default());
        assert!(config.validate().is_ok());
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("\"k\"") && shown.contains("<redacted>"),
            "{shown}"
        );

        let mut bad = config.clone();
        bad.models.get_mut("fast").unwrap().deployments[0].provider = "nope".into();
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::UnknownProvider { .. })
        ));
        let mut bad = config.clone();
        bad.providers.get_mut("oa").unwrap().base_url = "api.openai.com".into();
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::BadBaseUrl { .. })
        ));
        let mut bad = config;
        bad.models.get_mut("fast").unwrap().deployments[0].weight = 0;
        assert!(matches!(bad.validate(), Err(ConfigError::NoDeployment(_))));
    }
}
