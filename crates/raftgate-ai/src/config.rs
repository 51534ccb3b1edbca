//! The gateway's configuration: providers, model aliases and their deployments, retry and
//! cooldown policies.
//!
//! Plain serde structs with OpenAPI schemas, so they can become replicated resources
//! (`PUT /ai/providers/{name}`, `PUT /ai/models/{alias}`) without changing shape. A model alias
//! maps to deployments (a provider and its model name) ordered by `priority` (lower first) and,
//! within one priority, chosen by `weight`; the next deployment serves when one fails.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::pricing::Price;
use crate::providers::ProviderKind;

/// One LLM provider account.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderConfig {
    /// Which API it speaks.
    pub kind: ProviderKind,
    /// Base URL: `https://api.openai.com/v1` (OpenAI kinds include the version path),
    /// `https://api.anthropic.com`, `https://generativelanguage.googleapis.com`,
    /// `https://<resource>.openai.azure.com`.
    pub base_url: String,
    /// The credential; absent for keyless servers (Ollama, vLLM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Azure's `api-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// How long a complete answer may take; for streams, the longest wait for the first
    /// event and between two events.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    120_000
}

/// Debug output never shows the credential, so logging a configuration cannot leak it.
impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_version", &self.api_version)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// One place a model alias can be served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    /// The provider's name in [`GatewayConfig::providers`].
    pub provider: String,
    /// The model name the provider knows (Azure: the deployment name).
    pub model: String,
    /// Share of traffic among deployments of the same priority.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Lower is tried first; higher priorities are fallbacks.
    #[serde(default)]
    pub priority: u32,
    /// This deployment's price, overriding the model's and the shipped table's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
}

fn default_weight() -> u32 {
    1
}

/// A model alias clients send as `model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelConfig {
    /// Where it is served.
    pub deployments: Vec<Deployment>,
    /// Price for all its deployments, overriding the shipped table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// Context window in tokens, for clients and budget checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
}

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
