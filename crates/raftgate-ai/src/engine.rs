//! The gateway engine: picks a deployment for a model alias, calls the provider, falls back,
//! streams, and reports usage.
//!
//! For each request the alias's deployments are put in order — by priority, and within one
//! priority in a weighted random order; deployments in cooldown go last, as a last resort. Each
//! deployment gets the request; a 5xx, a timeout or a broken connection is retried on the same
//! deployment with exponential backoff (plus jitter) up to [`RetryPolicy::retries`] times, then
//! the next deployment is tried; a 429, or a provider refusing the gateway's credentials or not
//! knowing the model, moves on at once; a 400 is the client's fault and is answered as is.
//! A deployment failing [`CooldownPolicy::failures`] times in a row is cooled down (kept in
//! atomics inside the configuration snapshot, so the request path takes no lock); the
//! [`UsageSink`] is told, so that the node can replicate the cooldown, and cooldowns other nodes
//! replicated are honoured through [`Gateway::apply_cooldowns`].
//!
//! Budgets and token limits are the caller's: it reserves a call's [`Reservation`] before the
//! call and hands the engine a [`Settle`], which the engine settles with the call's actual
//! tokens and cost when its usage is reported (a call that fails before a provider served it
//! drops the handle, giving the reservation back).
//!
//! A stream is opened and read until its first chunk before the engine commits to a
//! deployment, so a failure before the first byte still falls back; the first event must come
//! within the provider's `timeout_ms` (keep-alive comments do not count), else the next
//! deployment is tried. After that, chunks are passed on one by one as they arrive; a failure,
//! a provider that sends no event for its `stream_idle_timeout_ms`, or a stream that closes
//! before the provider marked its end ends the stream with an error event, never with a
//! normal ending. A complete call runs in a task of its own, so a client that goes away does
//! not cancel it: its usage is recorded when the provider answers. A provider's `Retry-After`
//! on a 429 or 503 is passed on to the client and cools the deployment down that long.
//! Answers are read within the node's [`AnswerMemory`] budget (see [`crate::memory`]).
//! Every finished, failed or abandoned call reports a [`UsageRecord`] to the [`UsageSink`]:
//! the provider's token counts when it gave them, else an estimate (see [`crate::estimate`]).
//! A complete chat request to an alias with a response cache is looked up there first (see
//! [`crate::cache`]); a hit calls no provider and is reported as a cached call, and only an
//! answer the gateway accepts is stored (some choice, valid JSON when JSON was asked).
//!
//! [`RetryPolicy::retries`]: crate::config::RetryPolicy::retries
//! [`CooldownPolicy::failures`]: crate::config::CooldownPolicy::failures

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;

use crate::cache::{Lookup, ResponseCache};
use crate::estimate::{self, Prompt};
use crate::memory::{AnswerMemory, DEFAULT_ANSWER_MEMORY, Lease};
use raftgate_model::ai::{AiCooldown, CooldownTable};

use crate::config::{ConfigError, CooldownPolicy, GatewayConfig, ProviderConfig, RetryPolicy};
use crate::error::ApiError;
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingUsage, EmbeddingsRequest, EmbeddingsResponse,
    ModelEntry, ModelList, StreamMeta, Usage,
};
use crate::pricing::{Price, list_price};
use crate::prompt::{PromptApi, PromptApis};
use crate::providers::{Endpoint, Provider, StreamTranslator, UpstreamRequest};
use crate::sse::{self, SseEvent, SseParser};
use crate::tokens;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest complete answer read from a provider.
const RESPONSE_LIMIT: usize = 32 * 1024 * 1024;
/// Largest error body read from a provider.
const ERROR_LIMIT: usize = 64 * 1024;
/// Answers larger than this are parsed on a blocking thread, so that translating a huge answer
/// does not hold up the runtime's workers (and with them the node's Raft traffic).
const BLOCKING_PARSE: usize = 1024 * 1024;
/// Longest cooldown a provider's `Retry-After` starts.
const MAX_RETRY_AFTER_S: u64 = 24 * 3600;

/// Who made a call, copied into its usage record for accounting.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The consumer.
    pub consumer: Option<String>,
    /// The consumer's key id.
    pub key: Option<String>,
    /// Told of each provider call made for the caller, when the request is traced.
    pub trace: Option<Arc<dyn CallTrace>>,
}

/// Two callers are the same consumer and key (their traces do not matter for accounting).
impl PartialEq for Caller {
    fn eq(&self, other: &Caller) -> bool {
        self.consumer == other.consumer && self.key == other.key
    }
}

impl Eq for Caller {}

/// Where the spans of a traced request's provider calls go (the proxy's trace): told of each
/// call when it ends (a stream when it is read to the end), with when it started.
pub trait CallTrace: Send + Sync + std::fmt::Debug {
    /// A provider call that started at `started` ended now with `record`'s usage.
    fn provider_call(&self, record: &UsageRecord, started: std::time::SystemTime);
}

/// What kind of call a usage record is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A chat completion (or `/v1/messages`).
    Chat,
    /// Embeddings.
    Embeddings,
}

/// One call's usage, for accounting and budgets.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    /// Who called.
    pub caller: Caller,
    /// The model alias.
    pub model: String,
    /// The provider that served (the last one tried when all failed).
    pub provider: String,
    /// The provider's model name.
    pub provider_model: String,
    /// Chat or embeddings.
    pub operation: Operation,
    /// Whether it was streamed.
    pub stream: bool,
    /// Token counts.
    pub usage: Usage,
    /// The counts are the gateway's estimate, not the provider's.
    pub estimated: bool,
    /// Cost in USD from the deployment's price (0 when no price is known).
    pub cost_usd: f64,
    /// The call completed (a stream that failed or was abandoned midway did not).
    pub completed: bool,
    /// Answered from the response cache: no provider was called (`provider` is empty and
    /// usage and cost are 0).
    pub cached: bool,
}

/// The most a request may consume, reserved against budgets before the call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reservation {
    /// Input estimate plus output limit (of every choice).
    pub tokens: u64,
    /// The output limit's part of `tokens` (0 for embeddings): with it a refusal can name
    /// `max_tokens` as what to lower.
    pub output_tokens: u64,
    /// Those tokens at the dearest deployment's price.
    pub max_cost_usd: f64,
}

/// Receives usage records; the caller of the engine decides how to aggregate and replicate.
pub trait UsageSink: Send + Sync {
    /// Records one call. Called on the request path: must not block.
    fn record(&self, record: UsageRecord);

    /// A deployment was cooled down on this node after repeated failures; a clustered sink
    /// replicates it so that the other nodes skip it too. Rare; must not block. Ignored by
    /// default.
    fn cooldown(&self, _cooldown: AiCooldown) {}
}

/// What a call reserved against budgets and token limits before it was made (see
/// [`Gateway::reservation`]). The engine settles it with what the call really used; dropping it
/// unsettled (the call failed before any provider served it) must give the reservation back.
pub trait Settle: Send {
    /// Replaces the reservation by the call's actual tokens (prompt and completion) and cost.
    fn settle(self: Box<Self>, tokens: u64, cost_usd: f64);
}

/// Consecutive failures and cooldown of one deployment.
#[derive(Debug, Default)]
struct Health {
    failures: AtomicU32,
    cooled_until_ms: AtomicU64,
}

impl Health {
    fn cooled(&self, now_ms: u64) -> bool {
        now_ms < self.cooled_until_ms.load(Ordering::Relaxed)
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failure; returns true when it starts a cooldown.
    fn failure(&self, policy: &CooldownPolicy, now_ms: u64) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= policy.failures.max(1) {
            self.failures.store(0, Ordering::Relaxed);
            self.cooled_until_ms
                .store(now_ms + policy.cooldown_ms, Ordering::Relaxed);
            return true;
        }
        false
    }
}

struct ProviderEntry {
    name: String,
    config: ProviderConfig,
    adapter: &'static dyn Provider,
    timeout: Duration,
    /// Longest wait between two events of a stream.
    idle: Duration,
}

impl ProviderEntry {
    fn endpoint<'a>(&'a self, model: &'a str) -> Endpoint<'a> {
        Endpoint {
            base_url: &self.config.base_url,
            api_key: self.config.api_key.as_deref(),
            model,
            api_version: self.config.api_version.as_deref(),
        }
    }
}

/// One deployment, ready to call.
struct Target {
    provider: Arc<ProviderEntry>,
    model: String,
    weight: u32,
    priority: u32,
    price: Option<Price>,
    health: Arc<Health>,
}

/// The configuration compiled for the request path.
struct Compiled {
    /// Deployments of each alias, sorted by priority.
    models: HashMap<String, Vec<Arc<Target>>>,
    retry: RetryPolicy,
    cooldown: CooldownPolicy,
}

fn compile(config: &GatewayConfig, previous: &Compiled) -> Result<Compiled, ConfigError> {
    config.validate()?;
    let health: HashMap<(&str, &str), &Arc<Health>> = previous
        .models
        .values()
        .flatten()
        .map(|t| ((t.provider.name.as_str(), t.model.as_str()), &t.health))
        .collect();
    let providers: HashMap<&str, Arc<ProviderEntry>> = config
        .providers
        .iter()
        .map(|(name, p)| {
            let entry = ProviderEntry {
                name: name.clone(),
                config: p.clone(),
                adapter: crate::providers::adapter(p.kind),
                timeout: Duration::from_millis(p.timeout_ms.max(1)),
                idle: Duration::from_millis(p.stream_idle_timeout_ms.max(1)),
            };
            (name.as_str(), Arc::new(entry))
        })
        .collect();
    let mut models = HashMap::new();
    for (alias, m) in &config.models {
        let mut targets: Vec<Arc<Target>> = Vec::new();
        for d in &m.deployments {
            // validate() checked that the provider exists.
            let Some(provider) = providers.get(d.provider.as_str()) else {
                continue;
            };
            targets.push(Arc::new(Target {
                provider: provider.clone(),
                model: d.model.clone(),
                weight: d.weight,
                priority: d.priority,
                price: d.price.or(m.price).or_else(|| list_price(&d.model)),
                health: health
                    .get(&(d.provider.as_str(), d.model.as_str()))
                    .map(|h| Arc::clone(h))
                    .unwrap_or_default(),
            }));
        }
        targets.sort_by_key(|t| t.priority);
        models.insert(alias.clone(), targets);
    }
    Ok(Compiled {
        models,
        retry: config.retry,
        cooldown: config.cooldown,
    })
}

/// What went wrong with one attempt, and what to do next.
struct Failure {
    error: ApiError,
    next: Next,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Retry this deployment after a backoff, then fall back.
    Retry,
    /// Fall back to the next deployment now.
    Fallback,
    /// Answer the error (the request itself is at fault).
    Stop,
}

impl Failure {
    fn stop(error: ApiError) -> Failure {
        Failure {
            error,
            next: Next::Stop,
        }
    }

    /// Classified by the status the provider answered (or the mapped status of a stream error).
    fn from_status(status: StatusCode, error: ApiError) -> Failure {
        let next = match status.as_u16() {
            429 | 401 | 403 | 404 => Next::Fallback,
            408 => Next::Retry,
            s if s >= 500 => Next::Retry,
            _ => Next::Stop,
        };
        Failure { error, next }
    }
}

/// The answer to a chat request.
pub enum ChatOutcome {
    /// A complete `chat.completion`.
    Complete(ChatResponse),
    /// A stream of chunks (boxed: it holds the connection and parser state).
    Stream(Box<ChatStream>),
    /// A complete answer from the alias's response cache (see [`crate::cache`]).
    Cached(ChatResponse),
}

/// The AI gateway: configuration snapshot, HTTP client, usage sink, response cache and prompt
/// APIs.
pub struct Gateway {
    core: Arc<Core>,
    cache: ResponseCache,
    prompts: PromptApis,
}

/// What a call needs, shared with the task a complete call runs in (which outlives its
/// client's request when the client goes away).
struct Core {
    compiled: ArcSwap<Compiled>,
    client: HttpClient,
    sink: Arc<dyn UsageSink>,
    memory: Arc<AnswerMemory>,
}

/// Shows the served aliases only: the configuration holds credentials.
impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("models", &self.core.compiled.load().models.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway serving `config`, reporting usage to `sink`, with the default answer memory
    /// budget ([`DEFAULT_ANSWER_MEMORY`]).
    pub fn new(config: &GatewayConfig, sink: Arc<dyn UsageSink>) -> Result<Gateway, ConfigError> {
        let empty = Compiled {
            models: HashMap::new(),
            retry: RetryPolicy::default(),
            cooldown: CooldownPolicy::default(),
        };
        let compiled = compile(config, &empty)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| ConfigError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        let gateway = Gateway {
            core: Arc::new(Core {
                compiled: ArcSwap::from_pointee(compiled),
                client,
                sink,
                memory: AnswerMemory::new(DEFAULT_ANSWER_MEMORY),
            }),
            cache: ResponseCache::default(),
            prompts: PromptApis::default(),
        };
        gateway.cache.update(config);
        gateway.prompts.update(&config.prompts);
        Ok(gateway)
    }

    /// The same gateway with a budget of `bytes` for the AI answers the node holds at once
    /// (see [`crate::memory`]); set before serving.
    pub fn with_answer_memory(self, bytes: usize) -> Gateway {
        let core = Core {
            compiled: ArcSwap::new(self.core.compiled.load_full()),
            client: self.core.client.clone(),
            sink: Arc::clone(&self.core.sink),
            memory: AnswerMemory::new(bytes),
        };
        Gateway {
            core: Arc::new(core),
            ..self
        }
    }

    /// Replaces the configuration; deployments that stay keep their failure counts and cooldowns.
    pub fn update(&self, config: &GatewayConfig) -> Result<(), ConfigError> {
        let compiled = compile(config, &self.core.compiled.load())?;
        self.core.compiled.store(Arc::new(compiled));
        self.cache.update(config);
        self.prompts.update(&config.prompts);
        Ok(())
    }

    /// The prompt API served at `path`, if any.
    pub fn prompt(&self, path: &str) -> Option<Arc<PromptApi>> {
        self.prompts.get(path)
    }

    /// The prompt API `name`, if it is served: an AI API version's backend.
    pub fn prompt_named(&self, name: &str) -> Option<Arc<PromptApi>> {
        self.prompts.named(name)
    }

    /// Honours the cluster's replicated cooldowns: each deployment listed stays out of rotation
    /// until its end, as if it had failed here (a cooldown already longer is kept).
    pub fn apply_cooldowns(&self, cooldowns: &CooldownTable) {
        if cooldowns.is_empty() {
            return;
        }
        let compiled = self.core.compiled.load();
        for target in compiled.models.values().flatten() {
            for ((provider, model), until) in cooldowns.iter() {
                if *provider == target.provider.name && *model == target.model {
                    target
                        .health
                        .cooled_until_ms
                        .fetch_max(*until, Ordering::Relaxed);
                }
            }
        }
    }

    /// `GET /v1/models`: the aliases `allowed` lets the caller use.
    pub fn models(&self, allowed: impl Fn(&str) -> bool) -> ModelList {
        let compiled = self.core.compiled.load();
        let mut data: Vec<ModelEntry> = compiled
            .models
            .keys()
            .filter(|alias| allowed(alias))
            .map(|alias| ModelEntry {
                id: alias.clone(),
                object: "model".into(),
                created: 0,
                owned_by: "raftgate".into(),
            })
            .collect();
        data.sort_by(|a, b| a.id.cmp(&b.id));
        ModelList {
            object: "list".into(),
            data,
        }
    }

    /// What a chat request may consume at most, for budgets and token limits to reserve before
    /// the call (and settle with the [`UsageRecord`] after): its input as each deployment's
    /// provider bills it (images included) plus every choice's output limit, the most of any
    /// deployment, priced at the dearest (see [`crate::estimate`]). `None` for an unknown alias.
    pub fn reservation(&self, req: &ChatRequest) -> Option<Reservation> {
        let prompt = Prompt::of(req);
        let output = estimate::output_tokens(req);
        self.reserve(&req.model, |t| {
            Usage::new(prompt.tokens(t.provider.config.kind, &t.model), output)
        })
    }

    /// What an embeddings request may consume at most: its input tokens (texts estimated, token
    /// ids counted) at the dearest deployment's price. `None` for an unknown alias.
    pub fn embeddings_reservation(&self, req: &EmbeddingsRequest) -> Option<Reservation> {
        let usage = Usage::new(estimate::embedding_tokens(req), 0);
        self.reserve(&req.model, |_| usage)
    }

    /// The most of `usage` over the deployments of alias `model`, tokens and cost apart.
    fn reserve(&self, model: &str, usage: impl Fn(&Target) -> Usage) -> Option<Reservation> {
        let compiled = self.core.compiled.load();
        let targets = compiled.models.get(model)?;
        let mut most = Reservation {
            tokens: 0,
            output_tokens: 0,
            max_cost_usd: 0.0,
        };
        for target in targets {
            let usage = usage(target);
            most.tokens = most.tokens.max(usage.total_tokens);
            most.output_tokens = most.output_tokens.max(usage.completion_tokens);
            if let Some(price) = target.price {
                most.max_cost_usd = most.max_cost_usd.max(crate::pricing::cost(&price, &usage));
            }
        }
        Some(most)
    }

    /// `POST /v1/chat/completions`: a complete answer, or a stream when `req.stream`; `budget`
    /// is settled with the usage once the call is over.
    pub async fn chat(
        &self,
        caller: &Caller,
        req: ChatRequest,
        budget: Option<Box<dyn Settle>>,
    ) -> Result<ChatOutcome, ApiError> {
        if req.messages.is_empty() {
            return Err(ApiError::invalid_request(
                "messages must not be empty",
                Some("messages"),
            ));
        }
        let compiled = self.core.compiled.load_full();
        let prompt = Prompt::of(&req);
        if req.is_stream() {
            let core = &self.core;
            let (opened, target) = core
                .route(&compiled, &req.model, |t| core.open_stream(t, &req))
                .await?;
            return Ok(ChatOutcome::Stream(Box::new(ChatStream {
                upstream: opened.upstream,
                pending: opened.pending,
                include_usage: req.wants_stream_usage(),
                completion_text: String::new(),
                meta: None,
                ended: false,
                failure: None,
                done_sent: false,
                report: Some(Report::new(
                    &self.core, caller, req.model, target, &prompt, budget,
                )),
            })));
        }
        let cached = self.cache.lookup(&req);
        if let Some(hit) = cached.as_ref().and_then(Lookup::get) {
            // A hit costs nothing: dropping the reservation gives it back.
            drop(budget);
            self.core.sink.record(UsageRecord {
                caller: caller.clone(),
                model: req.model,
                provider: String::new(),
                provider_model: hit.model.clone(),
                operation: Operation::Chat,
                stream: false,
                usage: Usage::default(),
                estimated: false,
                cost_usd: 0.0,
                completed: true,
                cached: true,
            });
            return Ok(ChatOutcome::Cached(hit));
        }
        let core = Arc::clone(&self.core);
        let caller = caller.clone();
        let call = tokio::spawn(async move {
            core.complete_call(&compiled, caller, req, prompt, budget, cached)
                .await
        });
        Ok(ChatOutcome::Complete(call.await.map_err(task_failed)??))
    }

    /// `POST /v1/embeddings`; `budget` is settled with the usage once the call is over (also
    /// when the client went away meanwhile: the call runs in a task of its own).
    pub async fn embeddings(
        &self,
        caller: &Caller,
        req: EmbeddingsRequest,
        budget: Option<Box<dyn Settle>>,
    ) -> Result<EmbeddingsResponse, ApiError> {
        let core = Arc::clone(&self.core);
        let caller = caller.clone();
        let call = tokio::spawn(async move { core.embeddings_call(caller, req, budget).await });
        call.await.map_err(task_failed)?
    }
}

/// A call's task panicked or was stopped (the runtime shutting down).
fn task_failed(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "api_error",
        format!("the AI call failed inside the gateway ({e}); retry, and report it if it persists"),
    )
}

/// Wall-clock time, Unix milliseconds: cooldowns are compared with the ends other nodes
/// replicate.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The deployments of `targets` in the order to try them.
fn plan(targets: &[Arc<Target>]) -> Vec<Arc<Target>> {
    let now = now_ms();
    let mut rng = rand::rng();
    let mut order = Vec::with_capacity(targets.len());
    for tier in targets.chunk_by(|a, b| a.priority == b.priority) {
        let mut pool: Vec<&Arc<Target>> = tier.iter().filter(|t| t.weight > 0).collect();
        while !pool.is_empty() {
            let total: u64 = pool.iter().map(|t| u64::from(t.weight)).sum();
            let mut pick = rng.random_range(0..total);
            let mut i = 0;
            while pick >= u64::from(pool[i].weight) {
                pick -= u64::from(pool[i].weight);
                i += 1;
            }
            order.push(Arc::clone(pool.swap_remove(i)));
        }
    }
    let (mut healthy, cooled): (Vec<_>, Vec<_>) =
        order.into_iter().partition(|t| !t.health.cooled(now));
    healthy.extend(cooled);
    healthy
}

/// Whether a complete answer may be cached: it has a choice and, when the request asked for
/// JSON, every choice's text is JSON (what the gateway refused must not be served again).
fn cacheable(req: &ChatRequest, resp: &ChatResponse) -> bool {
    let json = req.response_format.as_ref().is_some_and(|f| f.is_json());
    !resp.choices.is_empty()
        && (!json
            || resp.choices.iter().all(|c| {
                c.message
                    .content
                    .as_deref()
                    .is_some_and(|t| crate::openai::json_in(t).is_ok())
            }))
}

impl Core {
    /// A complete chat call, from the first deployment tried to its usage report.
    async fn complete_call(
        &self,
        compiled: &Compiled,
        caller: Caller,
        req: ChatRequest,
        prompt: Prompt,
        budget: Option<Box<dyn Settle>>,
        cached: Option<Lookup>,
    ) -> Result<ChatResponse, ApiError> {
        let (resp, target) = self
            .route(compiled, &req.model, |t| self.complete(t, &req))
            .await?;
        if let Some(lookup) = cached.filter(|_| cacheable(&req, &resp)) {
            lookup.store(&resp);
        }
        let report = Report::new(self, &caller, req.model, target, &prompt, budget);
        let (usage, estimated) = match resp.usage {
            Some(u) => (u, false),
            None => {
                let text: String = resp
                    .choices
                    .iter()
                    .filter_map(|c| c.message.content.as_deref())
                    .collect();
                let prompt = report.prompt_estimate;
                (Usage::new(prompt, tokens::count_text(&text)), true)
            }
        };
        report.send(Operation::Chat, false, usage, estimated, true);
        Ok(resp)
    }

    /// An embeddings call, from the first deployment tried to its usage report.
    async fn embeddings_call(
        &self,
        caller: Caller,
        req: EmbeddingsRequest,
        budget: Option<Box<dyn Settle>>,
    ) -> Result<EmbeddingsResponse, ApiError> {
        let started = std::time::SystemTime::now();
        let compiled = self.compiled.load_full();
        let (mut resp, target) = self
            .route(&compiled, &req.model, |t| self.embed(t, &req))
            .await?;
        let estimated = resp.usage.is_none();
        let prompt = match resp.usage {
            Some(u) => u.prompt_tokens,
            None => estimate::embedding_tokens(&req),
        };
        resp.usage.get_or_insert(EmbeddingUsage {
            prompt_tokens: prompt,
            total_tokens: prompt,
        });
        let report = Report {
            sink: self.sink.clone(),
            caller,
            model: req.model,
            target,
            prompt_estimate: prompt,
            budget,
            started,
        };
        report.send(
            Operation::Embeddings,
            false,
            Usage::new(prompt, 0),
            estimated,
            true,
        );
        Ok(resp)
    }

    /// Tries the alias's deployments in order until one succeeds.
    async fn route<T, F, Fut>(
        &self,
        compiled: &Compiled,
        alias: &str,
        mut attempt: F,
    ) -> Result<(T, Arc<Target>), ApiError>
    where
        F: FnMut(Arc<Target>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let targets = compiled.models.get(alias).ok_or_else(|| {
            let mut err = ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "the model {alias} does not exist or you have no access to it; GET /v1/models lists the models you may use"
                ),
            );
            err.detail.param = Some("model".into());
            err.detail.code = Some("model_not_found".into());
            err
        })?;
        let mut last = None;
        for target in plan(targets) {
            for attempt_no in 0..=compiled.retry.retries {
                let failure = match attempt(Arc::clone(&target)).await {
                    Ok(value) => {
                        target.health.success();
                        return Ok((value, target));
                    }
                    Err(failure) => failure,
                };
                tracing::warn!(
                    model = alias,
                    provider = %target.provider.name,
                    provider_model = %target.model,
                    error = %failure.error,
                    "AI deployment failed"
                );
                if failure.next == Next::Stop {
                    return Err(failure.error);
                }
                let now = now_ms();
                if target.health.failure(&compiled.cooldown, now) {
                    tracing::warn!(
                        provider = %target.provider.name,
                        provider_model = %target.model,
                        cooldown_ms = compiled.cooldown.cooldown_ms,
                        "AI deployment cooled down after repeated failures"
                    );
                    self.sink.cooldown(AiCooldown {
                        provider: target.provider.name.clone(),
                        model: target.model.clone(),
                        until_ms: now + compiled.cooldown.cooldown_ms,
                    });
                }
                if let Some(until_ms) = asked_to_wait(&failure.error, now) {
                    // The provider said when it takes traffic again: every node skips the
                    // deployment until then.
                    target
                        .health
                        .cooled_until_ms
                        .fetch_max(until_ms, Ordering::Relaxed);
                    self.sink.cooldown(AiCooldown {
                        provider: target.provider.name.clone(),
                        model: target.model.clone(),
                        until_ms,
                    });
                    last = Some(failure.error);
                    break;
                }
                last = Some(failure.error);
                if failure.next == Next::Fallback || attempt_no == compiled.retry.retries {
                    break;
                }
                tokio::time::sleep(backoff(&compiled.retry, attempt_no)).await;
            }
        }
        Err(last.unwrap_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                format!("the model {alias} has no deployment that can take traffic"),
            )
        }))
    }

    /// Sends a request; a non-2xx answer becomes a classified failure with the provider's
    /// message (and its `Retry-After`).
    async fn send(
        &self,
        p: &ProviderEntry,
        up: UpstreamRequest,
    ) -> Result<http::Response<Incoming>, Failure> {
        let mut req = Request::post(&up.url)
            .body(Full::new(up.body))
            .map_err(|e| {
                Failure::stop(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "api_error",
                    format!(
                        "the URL {} built for provider {} is invalid ({e}); an administrator must fix its base_url",
                        up.url, p.name
                    ),
                ))
            })?;
        *req.headers_mut() = up.headers;
        let resp = match tokio::time::timeout(p.timeout, self.client.request(req)).await {
            Err(_) => {
                return Err(Failure {
                    error: ApiError::timeout(&p.name),
                    next: Next::Retry,
                });
            }
            Ok(Err(e)) => {
                return Err(Failure {
                    error: ApiError::unreachable(&p.name, &error_chain(&e)),
                    next: Next::Retry,
                });
            }
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = retry_after(resp.headers());
        let body = read_body(resp.into_body(), p.timeout, ERROR_LIMIT)
            .await
            .unwrap_or_default();
        let message = p.adapter.error_message(&body);
        let mut error = ApiError::from_provider(&p.name, status, &message);
        error.retry_after_s = retry_after;
        Err(Failure::from_status(status, error))
    }

    /// Sends a request and reads the whole answer within the provider's timeout and the
    /// node's answer memory; the lease holds the answer's bytes until it is translated.
    async fn fetch(
        &self,
        p: &ProviderEntry,
        up: UpstreamRequest,
    ) -> Result<(Bytes, Lease), Failure> {
        let deadline = tokio::time::Instant::now() + p.timeout;
        let resp = self.send(p, up).await?;
        let mut lease = self.memory.lease();
        match read_answer(resp, deadline, &mut lease).await {
            Ok(body) => Ok((body, lease)),
            Err(ReadError::Memory(error)) => Err(Failure::stop(error)),
            Err(error) => Err(Failure {
                next: Next::Retry,
                error: error.for_provider(&p.name),
            }),
        }
    }

    async fn complete(&self, t: Arc<Target>, req: &ChatRequest) -> Result<ChatResponse, Failure> {
        let p = &t.provider;
        let up = p
            .adapter
            .chat_request(&p.endpoint(&t.model), req)
            .map_err(Failure::stop)?;
        let (body, mut lease) = self.fetch(p, up).await?;
        // While it is parsed, the answer is held twice: as read and as parsed.
        lease
            .resize(body.len().saturating_mul(2))
            .map_err(Failure::stop)?;
        let adapter = p.adapter;
        let parsed = if body.len() > BLOCKING_PARSE {
            tokio::task::spawn_blocking(move || adapter.chat_response(&body))
                .await
                .map_err(|e| Failure::stop(task_failed(e)))?
        } else {
            adapter.chat_response(&body)
        };
        drop(lease);
        let mut resp = parsed.map_err(|e| Failure::from_status(e.status, e))?;
        if resp.choices.is_empty() {
            return Err(Failure {
                error: ApiError::bad_upstream(format!(
                    "provider {} answered without any choice",
                    p.name
                )),
                next: Next::Fallback,
            });
        }
        if resp.model.is_empty() {
            resp.model = t.model.clone();
        }
        Ok(resp)
    }

    async fn embed(
        &self,
        t: Arc<Target>,
        req: &EmbeddingsRequest,
    ) -> Result<EmbeddingsResponse, Failure> {
        let p = &t.provider;
        let up = p
            .adapter
            .embeddings_request(&p.endpoint(&t.model), req)
            .map_err(Failure::stop)?;
        let (body, _lease) = self.fetch(p, up).await?;
        p.adapter
            .embeddings_response(&body, &req.model)
            .map_err(|e| Failure::from_status(e.status, e))
    }

    /// Opens a stream and reads it up to its first chunk, which must come within the
    /// provider's timeout (keep-alive comments and events that translate to nothing do not
    /// count); past it the next deployment is tried.
    async fn open_stream(&self, t: Arc<Target>, req: &ChatRequest) -> Result<Opened, Failure> {
        let p = &t.provider;
        let up = p
            .adapter
            .chat_request(&p.endpoint(&t.model), req)
            .map_err(Failure::stop)?;
        let first_by = tokio::time::Instant::now() + p.timeout;
        let resp = self.send(p, up).await?;
        let mut upstream = Upstream {
            provider: p.name.clone(),
            body: resp.into_body(),
            parser: SseParser::new(),
            translator: p.adapter.stream_translator(),
            idle: p.idle,
            deadline: first_by,
            opening: true,
            events: Vec::new(),
            chunks: Vec::new(),
            lease: self.memory.lease(),
        };
        let mut pending = VecDeque::new();
        while pending.is_empty() {
            match upstream.pull(&mut pending).await {
                Ok(true) => {}
                Ok(false) if pending.is_empty() => {
                    return Err(Failure {
                        error: ApiError::bad_upstream(format!(
                            "provider {} ended the stream without sending anything",
                            p.name
                        )),
                        next: Next::Fallback,
                    });
                }
                Ok(false) => break,
                Err(e) if crate::memory::is_exhausted(&e) => return Err(Failure::stop(e)),
                Err(e) if upstream.stalled() => {
                    return Err(Failure {
                        error: e,
                        next: Next::Fallback,
                    });
                }
                Err(e) => return Err(Failure::from_status(e.status, e)),
            }
        }
        upstream.opening = false;
        upstream.deadline = tokio::time::Instant::now() + upstream.idle;
        Ok(Opened { upstream, pending })
    }
}

/// When a provider that refused with 429 or 503 said to come back (its `Retry-After`), as
/// the Unix millisecond to cool the deployment down until.
fn asked_to_wait(error: &ApiError, now_ms: u64) -> Option<u64> {
    let limited = matches!(error.status.as_u16(), 429 | 503);
    let seconds = error.retry_after_s.filter(|s| limited && *s > 0)?;
    Some(now_ms + seconds.min(MAX_RETRY_AFTER_S) * 1000)
}

/// A `Retry-After` header in seconds: a number of seconds or an HTTP date.
fn retry_after(headers: &http::HeaderMap) -> Option<u64> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.min(MAX_RETRY_AFTER_S));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at.duration_since(std::time::SystemTime::now()).ok()?;
    Some(wait.as_secs().clamp(1, MAX_RETRY_AFTER_S))
}

fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let base = policy
        .backoff_ms
        .saturating_mul(1u64 << attempt.min(16))
        .min(policy.max_backoff_ms);
    let jittered = base / 2 + rand::rng().random_range(0..=base / 2);
    Duration::from_millis(jittered)
}

/// An error and its causes in one line (hyper's top-level errors say little).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why a body could not be read.
enum ReadError {
    Timeout,
    Broken(String),
    /// The node's answer memory is full.
    Memory(ApiError),
}

impl ReadError {
    fn for_provider(self, provider: &str) -> ApiError {
        match self {
            ReadError::Timeout => ApiError::timeout(provider),
            ReadError::Broken(cause) => ApiError::bad_upstream(format!(
                "the answer of provider {provider} could not be read ({cause})"
            )),
            ReadError::Memory(error) => error,
        }
    }
}

/// Reads a (small) error body.
async fn read_body(body: Incoming, timeout: Duration, limit: usize) -> Result<Bytes, ReadError> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ReadError::Timeout),
        Ok(Err(e)) => Err(ReadError::Broken(e.to_string())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Reads a whole answer by `deadline`, within [`RESPONSE_LIMIT`] and the lease's budget,
/// which counts the buffer's capacity (what the answer holds): its `Content-Length` when
/// given, else grown by a quarter at a time so little of the budget is held unused.
async fn read_answer(
    resp: http::Response<Incoming>,
    deadline: tokio::time::Instant,
    lease: &mut Lease,
) -> Result<Bytes, ReadError> {
    let length = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .filter(|n| *n <= RESPONSE_LIMIT);
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    if let Some(length) = length {
        lease.resize(length).map_err(ReadError::Memory)?;
        buf.reserve_exact(length);
    }
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(None) => return Ok(Bytes::from(buf)),
            Ok(Some(Err(e))) => return Err(ReadError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > RESPONSE_LIMIT {
            return Err(ReadError::Broken(format!(
                "it is larger than {RESPONSE_LIMIT} bytes"
            )));
        }
        let needed = buf.len() + data.len();
        if needed > buf.capacity() {
            let capacity = (needed + (needed / 4).max(64 * 1024)).min(RESPONSE_LIMIT);
            lease.resize(capacity).map_err(ReadError::Memory)?;
            buf.reserve_exact(capacity - buf.len());
        }
        buf.extend_from_slice(&data);
    }
}

/// A stream read up to its first chunk.
struct Opened {
    upstream: Upstream,
    pending: VecDeque<ChatChunk>,
}

/// The provider's side of a stream: body, SSE parser and translator, and when the next event
/// is due.
struct Upstream {
    provider: String,
    body: Incoming,
    parser: SseParser,
    translator: Box<dyn StreamTranslator>,
    /// Longest wait between two events once the stream was opened.
    idle: Duration,
    /// When the next event is due: the first event's deadline while opening, then the last
    /// event's time plus `idle`.
    deadline: tokio::time::Instant,
    /// Still waiting for the first chunk: events do not move the deadline.
    opening: bool,
    events: Vec<SseEvent>,
    chunks: Vec<ChatChunk>,
    /// The bytes the parser holds for the event in progress.
    lease: Lease,
}

impl Upstream {
    /// Whether the provider missed the deadline of its next event.
    fn stalled(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }

    /// Reads one frame and translates what it completes into `out`; `Ok(false)` once the
    /// stream is over.
    async fn pull(&mut self, out: &mut VecDeque<ChatChunk>) -> Result<bool, ApiError> {
        let frame = match tokio::time::timeout_at(self.deadline, self.body.frame()).await {
            Err(_) => {
                let waited = if self.opening {
                    "within its timeout_ms (keep-alive comments do not count)".to_string()
                } else {
                    format!(
                        "for {} ms in mid-stream; raise its stream_idle_timeout_ms if its model pauses longer",
                        self.idle.as_millis()
                    )
                };
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "api_error",
                    format!("provider {} sent no stream event {waited}", self.provider),
                ));
            }
            Ok(None) => None,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_upstream(format!(
                    "the connection to provider {} broke in mid-stream ({})",
                    self.provider,
                    error_chain(&e)
                )));
            }
            Ok(Some(Ok(frame))) => Some(frame),
        };
        let Some(frame) = frame else {
            self.parser.finish(&mut self.events);
            let ended = self.translate()?;
            if !ended {
                self.translator.finish(&mut self.chunks)?;
            }
            out.extend(self.chunks.drain(..));
            return Ok(false);
        };
        if let Ok(data) = frame.into_data() {
            self.parser
                .feed(&data, &mut self.events)
                .map_err(|e| ApiError::bad_upstream(format!("provider {}: {e}", self.provider)))?;
            self.lease.resize(self.parser.buffered())?;
        }
        if !self.events.is_empty() && !self.opening {
            self.deadline = tokio::time::Instant::now() + self.idle;
        }
        let ended = self.translate();
        out.extend(self.chunks.drain(..));
        Ok(!ended?)
    }

    /// Translates the parsed events; true when the provider marked the end.
    fn translate(&mut self) -> Result<bool, ApiError> {
        for event in self.events.drain(..) {
            if self.translator.event(&event, &mut self.chunks)? == crate::providers::Step::Done {
                self.translator.finish(&mut self.chunks)?;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// What a call's usage report needs, kept until the call ends.
struct Report {
    sink: Arc<dyn UsageSink>,
    caller: Caller,
    model: String,
    target: Arc<Target>,
    prompt_estimate: u64,
    /// What the call reserved, settled here with what it used.
    budget: Option<Box<dyn Settle>>,
    /// When the call started, for its trace span.
    started: std::time::SystemTime,
}

impl Report {
    /// The report of a chat call `target` serves, its prompt estimated as that deployment's
    /// provider bills it.
    fn new(
        core: &Core,
        caller: &Caller,
        model: String,
        target: Arc<Target>,
        prompt: &Prompt,
        budget: Option<Box<dyn Settle>>,
    ) -> Report {
        let prompt_estimate = prompt.tokens(target.provider.config.kind, &target.model);
        Report {
            sink: Arc::clone(&core.sink),
            caller: caller.clone(),
            model,
            target,
            prompt_estimate,
            budget,
            started: std::time::SystemTime::now(),
        }
    }

    fn send(self, operation: Operation, stream: bool, usage: Usage, estimated: bool, done: bool) {
        let cost_usd = self
            .target
            .price
            .map_or(0.0, |p| crate::pricing::cost(&p, &usage));
        if let Some(budget) = self.budget {
            budget.settle(usage.total_tokens, cost_usd);
        }
        let record = UsageRecord {
            caller: self.caller,
            model: self.model,
            provider: self.target.provider.name.clone(),
            provider_model: self.target.model.clone(),
            operation,
            stream,
            usage,
            estimated,
            cost_usd,
            completed: done,
            cached: false,
        };
        if let Some(trace) = &record.caller.trace {
            trace.provider_call(&record, self.started);
        }
        self.sink.record(record);
    }
}

/// One item of a chat stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// The next chunk.
    Chunk(ChatChunk),
    /// The stream failed; nothing follows.
    Error(ApiError),
}

/// A streamed chat answer, read chunk by chunk as the provider sends it.
pub struct ChatStream {
    upstream: Upstream,
    pending: VecDeque<ChatChunk>,
    include_usage: bool,
    completion_text: String,
    meta: Option<StreamMeta>,
    ended: bool,
    failure: Option<ApiError>,
    done_sent: bool,
    report: Option<Report>,
}

impl ChatStream {
    /// The next chunk, an error (after which the stream is over), or `None` at the end.
    /// The usage chunk is included only when the client asked (`stream_options.include_usage`);
    /// if the provider sent none, the gateway's estimate is sent instead.
    pub async fn next(&mut self) -> Option<StreamItem> {
        loop {
            if let Some(mut chunk) = self.pending.pop_front() {
                if let (true, Some(report)) = (chunk.model.is_empty(), &self.report) {
                    chunk.model = report.target.model.clone();
                }
                self.observe(&chunk);
                if !self.include_usage {
                    chunk.usage = None;
                    if chunk.choices.is_empty() {
                        continue;
                    }
                }
                return Some(StreamItem::Chunk(chunk));
            }
            if let Some(error) = self.failure.take() {
                self.abandon();
                return Some(StreamItem::Error(error));
            }
            if self.ended {
                let report = self.report.take()?;
                let (usage, estimated) = self.usage(report.prompt_estimate);
                report.send(Operation::Chat, true, usage, estimated, true);
                return match (&self.meta, self.include_usage && estimated) {
                    (Some(meta), true) => Some(StreamItem::Chunk(ChatChunk::usage(meta, usage))),
                    _ => None,
                };
            }
            match self.upstream.pull(&mut self.pending).await {
                Ok(true) => {}
                Ok(false) => self.ended = true,
                Err(error) => {
                    tracing::warn!(provider = %self.upstream.provider, %error, "AI stream failed in mid-stream");
                    self.ended = true;
                    self.failure = Some(error);
                }
            }
        }
    }

    /// The next piece of an OpenAI SSE body: `data: {chunk}`, `data: {"error": ...}` after a
    /// failure, and `data: [DONE]` last.
    pub async fn next_sse(&mut self) -> Option<Bytes> {
        if self.done_sent {
            return None;
        }
        let data = match self.next().await {
            Some(StreamItem::Chunk(chunk)) => serde_json::to_string(&chunk),
            Some(StreamItem::Error(error)) => serde_json::to_string(&error.body()),
            None => {
                self.done_sent = true;
                return Some(sse::done());
            }
        };
        Some(sse::encode(None, &data.unwrap_or_default()))
    }

    fn observe(&mut self, chunk: &ChatChunk) {
        if self.meta.is_none() {
            self.meta = Some(StreamMeta {
                id: chunk.id.clone(),
                created: chunk.created,
                model: chunk.model.clone(),
            });
        }
        for choice in &chunk.choices {
            if let Some(text) = &choice.delta.content {
                self.completion_text.push_str(text);
            }
            for call in choice.delta.tool_calls.iter().flatten() {
                if let Some(f) = &call.function {
                    self.completion_text
                        .push_str(f.name.as_deref().unwrap_or_default());
                    self.completion_text
                        .push_str(f.arguments.as_deref().unwrap_or_default());
                }
            }
        }
    }

    fn usage(&self, prompt_estimate: u64) -> (Usage, bool) {
        match self.upstream.translator.usage() {
            Some(u) if u.total_tokens > 0 => (u, false),
            _ => (
                Usage::new(prompt_estimate, tokens::count_text(&self.completion_text)),
                true,
            ),
        }
    }

    /// Reports the usage of a stream that did not complete.
    fn abandon(&mut self) {
        if let Some(report) = self.report.take() {
            let (usage, estimated) = self.usage(report.prompt_estimate);
            report.send(Operation::Chat, true, usage, estimated, false);
        }
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Discard;
    impl UsageSink for Discard {
        fn record(&self, _: UsageRecord) {}
    }

    fn gateway() -> Gateway {
        let config: GatewayConfig = serde_json::from_value(json!({
            "providers": {
                "a": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"},
                "b": {"kind": "anthropic", "base_url": "http://127.0.0.1:1"},
                "c": {"kind": "gemini", "base_url": "http://127.0.0.1:1"}
            },
            "models": {"m": {"deployments": [
                {"provider": "c", "model": "backup", "priority": 1},
                {"provider": "a", "model": "heavy", "weight": 3},
                {"provider": "b", "model": "light", "weight": 1}
            ]}},
            "cooldown": {"failures": 2, "cooldown_ms": 60000}
        }))
        .unwrap();
        Gateway::new(&config, Arc::new(Discard)).unwrap()
    }

    fn first_models(gw: &Gateway, rounds: usize) -> HashMap<String, usize> {
        let compiled = gw.core.compiled.load();
        let mut counts = HashMap::new();
        for _ in 0..rounds {
            let plan = plan(&compiled.models["m"]);
            assert_eq!(plan.len(), 3);
            *counts.entry(plan[0].model.clone()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn plan_orders_by_priority_then_weight() {
        let gw = gateway();
        let counts = first_models(&gw, 4000);
        assert!(!counts.contains_key("backup"), "priority 1 is never first");
        let heavy = counts["heavy"] as f64 / 4000.0;
        assert!((0.70..0.80).contains(&heavy), "weight 3 of 4 first {heavy}");
        let compiled = gw.core.compiled.load();
        let plan = plan(&compiled.models["m"]);
        assert_eq!(plan[2].model, "backup");
    }

    #[test]
    fn cooled_deployments_go_last_and_survive_updates() {
        let gw = gateway();
        let compiled = gw.core.compiled.load_full();
        let heavy = compiled.models["m"]
            .iter()
            .find(|t| t.model == "heavy")
            .unwrap();
        let policy = compiled.cooldown;
        assert!(!heavy.health.failure(&policy, now_ms()));
        assert!(heavy.health.failure(&policy, now_ms()));
        for _ in 0..50 {
            let plan = plan(&compiled.models["m"]);
            assert_eq!(plan.last().unwrap().model, "heavy");
        }
        let config: GatewayConfig = serde_json::from_value(json!({
            "providers": {"a": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
            "models": {"m": {"deployments": [{"provider": "a", "model": "heavy"}]},
                       "n": {"deployments": [{"provider": "a", "model": "other"}]}}
        }))
        .unwrap();
        gw.update(&config).unwrap();
        let compiled = gw.core.compiled.load();
        assert!(compiled.models["m"][0].health.cooled(now_ms()));
        assert!(!compiled.models["n"][0].health.cooled(now_ms()));
        let ids: Vec<_> = gw
            .models(|m| m != "n")
            .data
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec!["m".to_string()]);
    }

    #[test]
    fn reservation_prices_the_output_limit_at_the_dearest_deployment() {
        let config: GatewayConfig = serde_json::from_value(json!({
            "providers": {"a": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
            "models": {"m": {"deployments": [
                {"provider": "a", "model": "gpt-4o-mini"},
                {"provider": "a", "model": "custom", "price": {"input_per_million": 10.0, "output_per_million": 100.0}}
            ]}}
        }))
        .unwrap();
        let gw = Gateway::new(&config, Arc::new(Discard)).unwrap();
        let mut req = ChatRequest {
            model: "m".into(),
            messages: vec![crate::openai::Message::text(
                crate::openai::Role::User,
                "hello there",
            )],
            max_tokens: Some(1000),
            ..ChatRequest::default()
        };
        let r = gw.reservation(&req).unwrap();
        let prompt = tokens::count_request(&req);
        assert_eq!(r.tokens, prompt + 1000);
        let expected = (prompt as f64 * 10.0 + 1000.0 * 100.0) / 1e6;
        assert!((r.max_cost_usd - expected).abs() < 1e-12);
        req.model = "unknown".into();
        assert!(gw.reservation(&req).is_none());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = RetryPolicy {
            retries: 5,
            backoff_ms: 100,
            max_backoff_ms: 300,
        };
        for _ in 0..100 {
            let first = backoff(&policy, 0).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let second = backoff(&policy, 1).as_millis();
            assert!((100..=200).contains(&second), "{second}");
            let capped = backoff(&policy, 10).as_millis();
            assert!((150..=300).contains(&capped), "{capped}");
        }
    }

    #[test]
    fn unknown_model_is_404_with_openai_code() {
        let gw = gateway();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let req = ChatRequest {
            model: "nope".into(),
            messages: vec![crate::openai::Message::text(
                crate::openai::Role::User,
                "hi",
            )],
            ..ChatRequest::default()
        };
        let Err(err) = rt.block_on(gw.chat(&Caller::default(), req, None)) else {
            panic!("unknown model served")
        };
        assert_eq!(err.status, StatusCode::NOT_FOUND);
        assert_eq!(err.detail.code.as_deref(), Some("model_not_found"));
    }
}
