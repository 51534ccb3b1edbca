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
    /// How long a complete answer may take; for a stream, how long its first event may take
    /// (keep-alive comments do not count), after which the next deployment is tried.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The longest wait between two events of a stream once its first was passed on; past
    /// it the stream ends with an error event (keep-alive comments do not count).
    #[serde(default = "default_stream_idle_timeout_ms")]
    pub stream_idle_timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    120_000
}

/// A minute: long enough for a model that pauses to think, short enough that a stalled
/// provider does not hold a client (and its budget reservation) for long.
fn default_stream_idle_timeout_ms() -> u64 {
    60_000
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
            .field("stream_idle_timeout_ms", &self.stream_idle_timeout_ms)
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
    /// Request timeout (for a stream, its first event).
    pub timeout_ms: u64,
    /// Longest wait between two events of a stream.
    pub stream_idle_timeout_ms: u64,
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
            stream_idle_timeout_ms: self.stream_idle_timeout_ms,
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
    /// The owning team (see [`crate::access`]); filled in with the caller's team for a team
    /// token, absent for objects of the whole cluster.
    #[serde(default)]
    pub team: Option<String>,
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

/// Spending and token limits of a consumer or of one of its keys, enforced by the AI gateway
/// on every node with the cluster-wide counters (a request over one gets a 429 naming it).
/// A key's limits apply on top of its consumer's: both must admit a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiLimits {
    /// Most USD spent per UTC calendar day (at the deployments' prices).
    #[serde(default)]
    pub budget_usd_day: Option<f64>,
    /// Most USD spent per UTC calendar month.
    #[serde(default)]
    pub budget_usd_month: Option<f64>,
    /// Most tokens (prompt and completion) per minute, over a sliding minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

/// Largest budget accepted, in USD: keeps micro-dollar counters far from overflow.
pub const MAX_BUDGET_USD: f64 = 1e9;

impl AiLimits {
    /// Whether no limit is set (the gateway then counts nothing for it).
    pub fn is_empty(&self) -> bool {
        self.budget_usd_day.is_none()
            && self.budget_usd_month.is_none()
            && self.tokens_per_minute.is_none()
    }

    /// Checks the values; `prefix` is the JSON path of the limits, for the error's field.
    pub fn validate(&self, prefix: &str) -> Result<(), crate::ValidationError> {
        for (name, value) in [
            ("budget_usd_day", self.budget_usd_day),
            ("budget_usd_month", self.budget_usd_month),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && (0.0..=MAX_BUDGET_USD).contains(&v))
            {
                return Err(crate::ValidationError {
                    field: format!("{prefix}.{name}"),
                    message: format!("must be a number of USD from 0 to {MAX_BUDGET_USD}"),
                });
            }
        }
        Ok(())
    }

    /// The limits set, as counters count them: each kind with its limit in the kind's unit.
    pub fn counted(&self) -> impl Iterator<Item = (AiLimitKind, u64)> {
        [
            (AiLimitKind::UsdDay, self.budget_usd_day.map(micro_usd)),
            (AiLimitKind::UsdMonth, self.budget_usd_month.map(micro_usd)),
            (AiLimitKind::TokensPerMinute, self.tokens_per_minute),
        ]
        .into_iter()
        .filter_map(|(kind, limit)| Some((kind, limit?)))
    }
}

/// USD as the whole micro-dollars budgets count, rounded up so a tiny cost still counts (after
/// dropping binary noise below a thousandth of a micro-dollar: 0.014 is 14,000, not 14,001).
pub fn micro_usd(usd: f64) -> u64 {
    ((usd.max(0.0) * 1e9).round() / 1e3).ceil() as u64
}

/// One kind of AI limit: what it counts, over which window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiLimitKind {
    /// Micro-dollars per fixed UTC day.
    UsdDay,
    /// Micro-dollars per fixed UTC calendar month.
    UsdMonth,
    /// Tokens per sliding minute.
    TokensPerMinute,
}

impl AiLimitKind {
    /// The limit's name in counter keys (`{name}/consumer:{c}` or `{name}/key:{id}`) and in
    /// `GET /consumers/{name}/usage`; the `:` keeps it apart from rate-limit names.
    pub fn counter_name(self) -> &'static str {
        match self {
            AiLimitKind::UsdDay => "ai:budget_usd_day",
            AiLimitKind::UsdMonth => "ai:budget_usd_month",
            AiLimitKind::TokensPerMinute => "ai:tokens_per_minute",
        }
    }

    /// The kind a counter name stands for.
    pub fn from_counter_name(name: &str) -> Option<AiLimitKind> {
        [
            AiLimitKind::UsdDay,
            AiLimitKind::UsdMonth,
            AiLimitKind::TokensPerMinute,
        ]
        .into_iter()
        .find(|k| k.counter_name() == name)
    }

    /// The window counted over.
    pub fn window(self) -> crate::RateWindow {
        match self {
            AiLimitKind::UsdDay => crate::RateWindow::Day,
            AiLimitKind::UsdMonth => crate::RateWindow::Month,
            AiLimitKind::TokensPerMinute => crate::RateWindow::Minute,
        }
    }

    /// Budgets are fixed calendar windows (a day's budget resets at midnight UTC); the token
    /// rate slides.
    pub fn fixed(self) -> bool {
        self != AiLimitKind::TokensPerMinute
    }
}

/// A deployment taken out of rotation by the node that saw it fail, replicated so that every
/// node skips it until `until_ms` without failing on it first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiCooldown {
    /// The provider's name.
    pub provider: String,
    /// The provider's model name.
    pub model: String,
    /// End of the cooldown, Unix milliseconds (set by the proposing node).
    pub until_ms: u64,
}

/// Replicated cooldowns: end (Unix ms) by provider and provider model.
pub type CooldownTable = imbl::OrdMap<(String, String), u64>;

/// Adds cooldowns to the table (the later end wins) and drops those over at `now_ms` (the
/// proposal's time), so the table holds only live ones.
pub fn apply_cooldowns(table: &mut CooldownTable, cooldowns: &[AiCooldown], now_ms: u64) {
    for c in cooldowns {
        let until = table
            .entry((c.provider.clone(), c.model.clone()))
            .or_insert(0);
        *until = (*until).max(c.until_ms);
    }
    let over: Vec<(String, String)> = table
        .iter()
        .filter(|(_, until)| **until <= now_ms)
        .map(|(k, _)| k.clone())
        .collect();
    for k in over {
        table.remove(&k);
    }
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

/// One usage bucket: a period starting at `start_ms`, for one consumer, key, model alias and
/// provider.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UsageBucket {
    /// Hour or day.
    pub period: Period,
    /// Start of the period, in Unix milliseconds (a multiple of its length).
    pub start_ms: u64,
    /// The consumer (empty for unauthenticated calls, which the gateway does not serve today).
    pub consumer: String,
    /// The consumer's key id the calls were made with (empty when not made with a key).
    pub key: String,
    /// The model alias.
    pub model: String,
    /// The provider that served (the last one tried when all failed).
    pub provider: String,
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

/// A node's AI usage for one consumer, key, model, provider and hour since its last report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiUsageDelta {
    /// Start of the hour, Unix milliseconds.
    pub hour_ms: u64,
    /// The consumer.
    pub consumer: String,
    /// The consumer's key id (empty when none).
    pub key: String,
    /// The model alias.
    pub model: String,
    /// The provider that served.
    pub provider: String,
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
                key: d.key.clone(),
                model: d.model.clone(),
                provider: d.provider.clone(),
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
    /// The consumer's key id the calls were made with (empty when none).
    pub key: String,
    /// The model alias.
    pub model: String,
    /// The provider that served.
    pub provider: String,
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
    /// Only this key id.
    pub key: Option<String>,
    /// Only this model alias.
    pub model: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
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
                    && query.key.as_ref().is_none_or(|k| *k == b.key)
                    && query.model.as_ref().is_none_or(|m| *m == b.model)
                    && query.provider.as_ref().is_none_or(|p| *p == b.provider)
                    && query.from.is_none_or(|f| b.start_ms >= f)
                    && query.to.is_none_or(|t| b.start_ms < t)
            })
            .map(|(b, u)| UsageRow {
                period: b.period,
                start_ms: b.start_ms,
                consumer: b.consumer.clone(),
                key: b.key.clone(),
                model: b.model.clone(),
                provider: b.provider.clone(),
                usage: *u,
            })
            .collect();
        let mut total = AiUsage::default();
        for row in &data {
            total.add(&row.usage);
        }
        let mut data = data;
        data.sort_by(|a, b| {
            (a.start_ms, &a.consumer, &a.key, &a.model, &a.provider).cmp(&(
                b.start_ms,
                &b.consumer,
                &b.key,
                &b.model,
                &b.provider,
            ))
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
            key: "k1".into(),
            model: "gpt".into(),
            provider: "openai".into(),
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

    #[test]
    fn usage_is_kept_and_filtered_per_key_and_provider() {
        let mut table = UsageTable::new();
        let delta = |key: &str, provider: &str| AiUsageDelta {
            hour_ms: 20_000 * DAY_MS,
            consumer: "app".into(),
            key: key.into(),
            model: "gpt".into(),
            provider: provider.into(),
            usage: AiUsage {
                requests: 1,
                ..AiUsage::default()
            },
        };
        let deltas = [
            delta("k1", "openai"),
            delta("k2", "openai"),
            delta("k1", "azure"),
        ];
        apply_ai_usage(&mut table, &deltas, 20_000 * DAY_MS);
        let query = |key: Option<&str>, provider: Option<&str>| UsageQuery {
            key: key.map(str::to_string),
            provider: provider.map(str::to_string),
            ..UsageQuery::default()
        };
        let k1 = UsageReport::of(&table, &query(Some("k1"), None));
        assert_eq!(k1.total.requests, 2);
        assert!(k1.data.iter().all(|r| r.key == "k1" && r.consumer == "app"));
        assert_eq!(
            UsageReport::of(&table, &query(None, Some("openai")))
                .total
                .requests,
            2
        );
        assert_eq!(
            UsageReport::of(&table, &query(Some("k2"), Some("azure"))).data,
            vec![]
        );
    }

    #[test]
    fn ai_limits_validate_and_count_in_micro_dollars_and_tokens() {
        let limits: AiLimits = serde_json::from_str(
            r#"{"budget_usd_day": 1.5, "budget_usd_month": 0.0000001, "tokens_per_minute": 900}"#,
        )
        .unwrap();
        assert!(limits.validate("ai_limits").is_ok());
        assert_eq!(
            (micro_usd(0.014), micro_usd(0.03), micro_usd(1e-9)),
            (14_000, 30_000, 1)
        );
        let counted: Vec<_> = limits.counted().collect();
        assert_eq!(
            counted,
            vec![
                (AiLimitKind::UsdDay, 1_500_000),
                (AiLimitKind::UsdMonth, 1),
                (AiLimitKind::TokensPerMinute, 900)
            ]
        );
        for kind in [
            AiLimitKind::UsdDay,
            AiLimitKind::UsdMonth,
            AiLimitKind::TokensPerMinute,
        ] {
            assert_eq!(
                AiLimitKind::from_counter_name(kind.counter_name()),
                Some(kind)
            );
        }
        assert!(AiLimitKind::UsdMonth.fixed() && !AiLimitKind::TokensPerMinute.fixed());
        let bad = AiLimits {
            budget_usd_month: Some(-1.0),
            ..AiLimits::default()
        };
        let e = bad.validate("ai_limits").unwrap_err();
        assert_eq!(e.field, "ai_limits.budget_usd_month");
        assert!(serde_json::from_str::<AiLimits>(r#"{"budget_usd_week": 1}"#).is_err());
        assert!(AiLimits::default().is_empty() && AiLimits::default().counted().next().is_none());
    }
}
