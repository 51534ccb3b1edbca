//! The AI gateway's replicated resources: LLM providers (`/ai/providers/{name}`) and model
//! aliases (`/ai/models/{alias}`).
//!
//! They live here, not in `raftgate-ai`, because the admin API, the CLI and the client need
//! them without the gateway's HTTP stack; `raftgate-ai` re-exports them as its configuration.
//! Every field is always encoded (no `skip_serializing_if`): the binary codec is not
//! self-describing, so a skipped field would make stored data unreadable.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI and every OpenAI-compatible server (Mistral, DeepSeek, Groq, Together, vLLM,
    /// Ollama, LM Studio): only the base URL differs.
    Openai,
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key` header.
    Azure,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google Gemini (`generateContent`).
    Gemini,
    /// Cohere's Chat API v2.
    Cohere,
}

impl ProviderKind {
    /// The kind's name as configured.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Cohere => "cohere",
        }
    }
}

/// USD per million input and output tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Price {
    /// USD per million input (prompt) tokens.
    pub input_per_million: f64,
    /// USD per million output (completion) tokens.
    pub output_per_million: f64,
}

/// One LLM provider account.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderConfig {
    /// Which API it speaks.
    pub kind: ProviderKind,
    /// Base URL: `https://api.openai.com/v1` (OpenAI kinds include the version path),
    /// `https://api.anthropic.com`, `https://generativelanguage.googleapis.com`,
    /// `https://<resource>.openai.azure.com`.
    pub base_url: String,
    /// The credential; absent for keyless servers (Ollama, vLLM). As replicated, it is sealed
    /// with the cluster's secrets key (see the admin API); the admin API never returns it.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Azure's `api-version`.
    #[serde(default)]
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

/// What the admin API shows of a provider: everything but the credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderView {
    /// Which API it speaks.
    pub kind: ProviderKind,
    /// Base URL.
    pub base_url: String,
    /// Whether a credential is stored (it is never shown).
    pub api_key_set: bool,
    /// Azure's `api-version`.
    pub api_version: Option<String>,
    /// Request timeout.
    pub timeout_ms: u64,
}

impl ProviderConfig {
    /// The admin view: the credential replaced by whether one is set.
    pub fn view(&self) -> ProviderView {
        ProviderView {
            kind: self.kind,
            base_url: self.base_url.clone(),
            api_key_set: self.api_key.is_some(),
            api_version: self.api_version.clone(),
            timeout_ms: self.timeout_ms,
        }
    }
}

/// One place a model alias can be served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    /// The provider's name (an `/ai/providers/{name}`).
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
    #[serde(default)]
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
    #[serde(default)]
    pub price: Option<Price>,
    /// Context window in tokens, for clients and budget checks.
    #[serde(default)]
    pub context_window: Option<u32>,
}
