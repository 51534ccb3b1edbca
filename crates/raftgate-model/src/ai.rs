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
    /// Exact-match caching of complete (non-streamed) chat answers; off when absent.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
}

/// Exact-match response cache of a model alias. Each node keeps its own cache in memory;
/// requests that differ in anything that affects the answer (messages, sampling parameters,
/// tools, response format) are different entries, whoever sends them. Streams bypass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CacheConfig {
    /// How long an answer is served from the cache, in seconds.
    pub ttl_s: u64,
    /// Most answers kept per node; the least useful are evicted first. At most one of
    /// `max_entries` and `max_bytes`; 1000 entries when neither is given.
    #[serde(default)]
    pub max_entries: Option<u64>,
    /// Most bytes of answers (their JSON size) kept per node.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// Milliseconds in an hour, the finest usage bucket.
pub const HOUR_MS: u64 = 3_600_000;
/// Milliseconds in a day, the coarse usage bucket.
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// How long hourly usage buckets are kept (daily ones outlive them).
pub const HOURLY_RETENTION_MS: u64 = 7 * DAY_MS;
/// How long daily usage buckets are kept.
pub const DAILY_RETENTION_MS: u64 = 400 * DAY_MS;

/// The length of a usage bucket.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// One hour, kept [`HOURLY_RETENTION_MS`].
    Hour,
    /// One UTC day, kept [`DAILY_RETENTION_MS`].
    Day,
}

impl Period {
    /// The bucket length in milliseconds.
    pub fn millis(self) -> u64 {
        match self {
            Period::Hour => HOUR_MS,
            Period::Day => DAY_MS,
        }
    }

    fn retention_ms(self) -> u64 {
        match self {
            Period::Hour => HOURLY_RETENTION_MS,
            Period::Day => DAILY_RETENTION_MS,
        }
    }
}

/// One usage bucket: a period starting at `start_ms`, for one consumer and model alias.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UsageBucket {
    /// Hour or day.
    pub period: Period,
    /// Start of the period, in Unix milliseconds (a multiple of its length).
    pub start_ms: u64,
    /// The consumer (empty for unauthenticated calls, which the gateway does not serve today).
    pub consumer: String,
    /// The model alias.
    pub model: String,
}

/// What was used in a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AiUsage {
    /// Calls.
    pub requests: u64,
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    pub completion_tokens: u64,
    /// Cost in USD at the deployments' prices.
    pub cost_usd: f64,
    /// Calls answered from the response cache (counted in `requests` too, with no tokens and
    /// no cost).
    #[serde(default)]
    pub cache_hits: u64,
}

impl AiUsage {
    /// Adds `other` to this.
    pub fn add(&mut self, other: &AiUsage) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_usd += other.cost_usd;
        self.cache_hits += other.cache_hits;
    }
}

/// A node's AI usage for one consumer, model and hour since its last report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiUsageDelta {
    /// Start of the hour, Unix milliseconds.
    pub hour_ms: u64,
    /// The consumer.
    pub consumer: String,
    /// The model alias.
    pub model: String,
    /// What was used.
    pub usage: AiUsage,
}

/// The replicated AI usage: hourly and daily buckets.
pub type UsageTable = imbl::OrdMap<UsageBucket, AiUsage>;

/// Adds a node's report to the hourly and daily buckets, and drops the buckets older than
/// their retention at `now_ms` (the proposal's time), so the table stays bounded.
pub fn apply_ai_usage(table: &mut UsageTable, deltas: &[AiUsageDelta], now_ms: u64) {
    for d in deltas {
        for period in [Period::Hour, Period::Day] {
            let bucket = UsageBucket {
                period,
                start_ms: d.hour_ms - d.hour_ms % period.millis(),
                consumer: d.consumer.clone(),
                model: d.model.clone(),
            };
            table.entry(bucket).or_default().add(&d.usage);
        }
    }
    let expired: Vec<UsageBucket> = table
        .keys()
        .filter(|b| b.start_ms + b.period.millis() + b.period.retention_ms() <= now_ms)
        .cloned()
        .collect();
    for bucket in expired {
        table.remove(&bucket);
    }
}

/// One row of `GET /ai/usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageRow {
    /// Hour or day.
    pub period: Period,
    /// Start of the period, Unix milliseconds.
    pub start_ms: u64,
    /// The consumer.
    pub consumer: String,
    /// The model alias.
    pub model: String,
    /// What was used.
    #[serde(flatten)]
    pub usage: AiUsage,
}

/// The answer of `GET /ai/usage`: the matching buckets and their sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// Matching buckets, oldest first.
    pub data: Vec<UsageRow>,
    /// Their sum.
    pub total: AiUsage,
}

/// Which buckets a usage report covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageQuery {
    /// Only this consumer.
    pub consumer: Option<String>,
    /// Only this model alias.
    pub model: Option<String>,
    /// Buckets starting at or after this Unix millisecond.
    pub from: Option<u64>,
    /// Buckets starting before this Unix millisecond.
    pub to: Option<u64>,
    /// Hourly or daily buckets (daily by default).
    pub period: Option<Period>,
}

impl UsageReport {
    /// The buckets of `table` that `query` selects.
    pub fn of(table: &UsageTable, query: &UsageQuery) -> UsageReport {
        let period = query.period.unwrap_or(Period::Day);
        let data: Vec<UsageRow> = table
            .iter()
            .filter(|(b, _)| {
                b.period == period
                    && query.consumer.as_ref().is_none_or(|c| *c == b.consumer)
                    && query.model.as_ref().is_none_or(|m| *m == b.model)
                    && query.from.is_none_or(|f| b.start_ms >= f)
                    && query.to.is_none_or(|t| b.start_ms < t)
            })
            .map(|(b, u)| UsageRow {
                period: b.period,
                start_ms: b.start_ms,
                consumer: b.consumer.clone(),
                model: b.model.clone(),
                usage: *u,
            })
            .collect();
        let mut total = AiUsage::default();
        for row in &data {
            total.add(&row.usage);
        }
        let mut data = data;
        data.sort_by(|a, b| {
            (a.start_ms, &a.consumer, &a.model).cmp(&(b.start_ms, &b.consumer, &b.model))
        });
        UsageReport { data, total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_rolls_up_by_hour_and_day_and_expires() {
        let mut table = UsageTable::new();
        let delta = |hour_ms, requests| AiUsageDelta {
            hour_ms,
            consumer: "app".into(),
            model: "gpt".into(),
            usage: AiUsage {
                requests,
                prompt_tokens: 10 * requests,
                completion_tokens: requests,
                cost_usd: 0.5 * requests as f64,
                cache_hits: 1,
            },
        };
        let day = 20_000 * DAY_MS;
        apply_ai_usage(
            &mut table,
            &[delta(day, 1), delta(day + HOUR_MS, 2)],
            day + HOUR_MS,
        );
        let hourly = UsageReport::of(
            &table,
            &UsageQuery {
                period: Some(Period::Hour),
                ..UsageQuery::default()
            },
        );
        assert_eq!(hourly.data.len(), 2);
        assert_eq!(hourly.total.requests, 3);
        let daily = UsageReport::of(&table, &UsageQuery::default());
        assert_eq!(daily.data.len(), 1);
        assert_eq!(daily.data[0].start_ms, day);
        assert_eq!((daily.total.prompt_tokens, daily.total.cost_usd), (30, 1.5));
        assert_eq!(daily.total.cache_hits, 2);
        let other = UsageQuery {
            consumer: Some("other".into()),
            ..UsageQuery::default()
        };
        assert!(UsageReport::of(&table, &other).data.is_empty());

        // Eight days later the hourly buckets are gone, the daily one stays.
        apply_ai_usage(&mut table, &[], day + 8 * DAY_MS);
        assert_eq!(table.len(), 1);
        apply_ai_usage(&mut table, &[], day + 402 * DAY_MS);
        assert!(table.is_empty());
    }
}
