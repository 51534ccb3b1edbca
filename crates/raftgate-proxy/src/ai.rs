//! The AI gateway on the proxy port, which has two entrances:
//! - its own: requests for the unified API (`/v1/chat/completions`, `/v1/embeddings`,
//!   `/v1/models`, `/v1/messages`) and `POST`s to the paths of prompt APIs are answered by the
//!   node's [`raftgate_ai::Gateway`] before normal routing ([`serve`]). The caller is a
//!   consumer authenticated by one of its API keys, sent as `Authorization: Bearer` (what
//!   OpenAI clients send) or `x-api-key` (what Anthropic clients send), looked up in the policy
//!   engine's credentials snapshot;
//! - the route of an AI API version ([`AiVersion`]): the route's policies (the version's gate,
//!   IP rules, CORS, rate limits, ...) admitted the request and authenticated its caller, and
//!   [`serve_version`] answers it: under a model version's base path the same endpoints
//!   (`{base_path}/chat/completions`, ...) for that model alias only, at a prompt version's
//!   base path its prompt API.
//!
//! A model alias or prompt API that an API with subscriptions offers is refused at the own
//! entrance ([`AiGuards`]), or callers could go around the API's subscriptions and plans.
//!
//! The consumer's `ai_models` says which aliases it may use (empty: all). The request body is
//! read whole (the engine parses it) within the proxy's body limit.
//!
//! Budgets and token limits (`ai_limits` of the consumer and of the key) are enforced with the
//! node's cluster-wide counters, the same ones rate limits use and the node already replicates
//! in batches: before the provider call, the request's [`Reservation`] (the most it may be
//! billed: its input, images included, and every choice's output limit, priced at the dearest
//! deployment) is acquired against each limit — micro-dollars for the day and month budgets
//! (fixed UTC windows), tokens for the sliding minute — and settled with the call's actual cost
//! and tokens afterwards, or with 0 when no provider served it. A request whose reservation
//! alone passes a limit is answered 400: no wait would admit it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use raftgate_ai::api::{self, Access, Admission, AiBody, Denied, Route};
use raftgate_ai::prompt::PromptApi;
use raftgate_ai::{
    ApiError, CallTrace, Caller, Gateway, Operation, Reservation, Settle, UsageRecord,
};
use raftgate_model::State;
use raftgate_model::ai::{AiLimitKind, micro_usd};
use raftgate_model::catalog::{ApiVersionSpec, Backend, Lifecycle, SubscriptionMode, api_of};
use raftgate_policy::auth::{Identity, bearer};
use raftgate_policy::counter::now_ms;
use raftgate_policy::{Answer, Counters, Engine, Limit, Refusal};
use raftgate_trace::{AiParent, RequestSpan};

/// Largest AI request body read when the proxy itself sets no limit: the body is buffered, so
/// it needs a bound (a long chat with images fits).
const DEFAULT_BODY_LIMIT: u64 = 32 << 20;

/// What an AI request on the proxy port is for.
pub(crate) enum Target {
    /// An endpoint of the unified API.
    Api(Route),
    /// A prompt API.
    Prompt(Arc<PromptApi>),
}

impl Target {
    /// The request's target when the gateway's own entrance answers it: a unified API
    /// endpoint, or a `POST` to a prompt API's path; `None` for normal routing.
    pub(crate) fn of(gateway: &Gateway, method: &Method, path: &str) -> Option<Target> {
        if let Some(route) = Route::of(method, path) {
            return Some(Target::Api(route));
        }
        if method == Method::POST {
            return gateway.prompt(path).map(Target::Prompt);
        }
        None
    }

    /// The endpoint whose dialect its errors are answered in: prompt APIs answer errors as
    /// chat completions do.
    fn dialect(&self) -> Route {
        match self {
            Target::Api(route) => *route,
            Target::Prompt(_) => Route::ChatCompletions,
        }
    }
}

/// An AI API version as its route serves it.
#[derive(Debug)]
pub struct AiVersion {
    /// The version's base path: what follows it in a request's path names the endpoint.
    base_path: Box<str>,
    backend: AiBackend,
    /// The `service` label of the route's metrics: `ai_model:{alias}` or `prompt:{name}`.
    label: Arc<str>,
}

/// What an AI API version serves.
#[derive(Debug)]
enum AiBackend {
    /// A model alias, through the unified API's endpoints.
    Model(Box<str>),
    /// A prompt API.
    Prompt(Box<str>),
}

impl AiVersion {
    /// The version stored as `spec`, if its backend is an AI one.
    pub(crate) fn of(spec: &ApiVersionSpec) -> Option<Arc<AiVersion>> {
        let (backend, label) = match &spec.backend {
            Backend::Service(_) => return None,
            Backend::AiModel(m) => (AiBackend::Model(m.as_str().into()), format!("ai_model:{m}")),
            Backend::Prompt(p) => (AiBackend::Prompt(p.as_str().into()), format!("prompt:{p}")),
        };
        Some(Arc::new(AiVersion {
            base_path: spec.base_path.as_str().into(),
            backend,
            label: label.into(),
        }))
    }

    /// The `service` label of the route's metrics.
    pub(crate) fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// The endpoint a request for `path` is for, whose dialect its errors are answered in.
    pub(crate) fn dialect(&self, path: &str) -> Route {
        match &self.backend {
            AiBackend::Model(_) => self
                .sub_path(path)
                .and_then(Route::named)
                .unwrap_or(Route::ChatCompletions),
            AiBackend::Prompt(_) => Route::ChatCompletions,
        }
    }

    /// What follows the base path in `path`.
    fn sub_path<'p>(&self, path: &'p str) -> Option<&'p str> {
        path.strip_prefix(&*self.base_path)
    }

    /// The target of a request, or the 404 naming what the version serves.
    fn target(&self, gateway: &Gateway, method: &Method, path: &str) -> Result<Target, ApiError> {
        let sub = self.sub_path(path).unwrap_or(path);
        let base = &self.base_path;
        match &self.backend {
            AiBackend::Model(_) => Route::at(method, sub).map(Target::Api).ok_or_else(|| {
                not_found(format!(
                    "no endpoint {method} {path}: this API serves POST {base}/chat/completions, POST {base}/embeddings, GET {base}/models and POST {base}/messages"
                ))
            }),
            AiBackend::Prompt(name) => {
                if !(method == Method::POST && sub.trim_end_matches('/').is_empty()) {
                    return Err(not_found(format!(
                        "no endpoint {method} {path}: this API serves POST {base}"
                    )));
                }
                gateway.prompt_named(name).map(Target::Prompt).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "api_error",
                        format!(
                            "the prompt API {name} that this API serves is not loaded on this node; retry, or an administrator must fix the prompt"
                        ),
                    )
                })
            }
        }
    }

    /// Whether the caller may use `model` here: only the version's alias (a prompt version's
    /// prompt calls its own model).
    fn admits(&self, model: &str) -> Result<(), Denied> {
        match &self.backend {
            AiBackend::Model(alias) if **alias != *model => {
                let mut e = not_found(format!(
                    "this API serves the model {alias} only; set model to {alias}"
                ));
                e.detail.param = Some("model".into());
                e.detail.code = Some("model_not_found".into());
                Err(Denied::Refused(e))
            }
            _ => Ok(()),
        }
    }
}

fn not_found(message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
}

/// The model aliases and prompt APIs that a version of an API with subscriptions offers
/// (published, deprecated or retired: a draft offers nothing yet). Their own entrance refuses
/// them, naming where to call them; compiled with the router, from the same catalog.
#[derive(Debug, Default)]
pub(crate) struct AiGuards {
    models: HashMap<Box<str>, Offer>,
    prompts: HashMap<Box<str>, Offer>,
}

/// Where an API offers a model alias or prompt API.
#[derive(Debug)]
struct Offer {
    /// The version's key, `{api}/{version}`.
    version: Box<str>,
    base_path: Box<str>,
    retired: bool,
}

impl AiGuards {
    /// Records what version `key` (stored as `spec`) offers, if its API takes subscriptions.
    /// When several versions offer one, a version still served is named before a retired one.
    pub(crate) fn offer(&mut self, state: &State, key: &str, spec: &ApiVersionSpec) {
        let subscribed = state
            .apis
            .get(api_of(key))
            .is_some_and(|a| a.spec.subscription != SubscriptionMode::None);
        if !subscribed || spec.state == Lifecycle::Draft {
            return;
        }
        let (offers, name) = match &spec.backend {
            Backend::Service(_) => return,
            Backend::AiModel(m) => (&mut self.models, m),
            Backend::Prompt(p) => (&mut self.prompts, p),
        };
        let offer = Offer {
            version: key.into(),
            base_path: spec.base_path.as_str().into(),
            retired: spec.state == Lifecycle::Retired,
        };
        match offers.entry(name.as_str().into()) {
            Entry::Vacant(e) => {
                e.insert(offer);
            }
            Entry::Occupied(mut e) if e.get().retired && !offer.retired => {
                e.insert(offer);
            }
            Entry::Occupied(_) => {}
        }
    }

    /// Whether a request for `target` at `path` is left to the router: a prompt API's path
    /// that is also the base path of the version offering it.
    pub(crate) fn routed(&self, target: &Target, path: &str) -> bool {
        match target {
            Target::Api(_) => false,
            Target::Prompt(prompt) => self
                .prompts
                .get(prompt.name())
                .is_some_and(|offer| *offer.base_path == *path.trim_end_matches('/')),
        }
    }

    /// The refusal of model alias `model` at `/v1`, if an API offers it.
    pub(crate) fn model(&self, model: &str) -> Result<(), Denied> {
        match self.models.get(model) {
            Some(offer) => Err(Denied::Refused(offer.refusal("model", model))),
            None => Ok(()),
        }
    }

    /// The refusal of prompt API `name` at its own path, if an API offers it.
    pub(crate) fn prompt(&self, name: &str) -> Result<(), Denied> {
        match self.prompts.get(name) {
            Some(offer) => Err(Denied::Refused(offer.refusal("prompt API", name))),
            None => Ok(()),
        }
    }
}

impl Offer {
    /// The 403 of a call to `what` `name` around the API offering it.
    fn refusal(&self, what: &str, name: &str) -> ApiError {
        let (api, version) = self.version.split_once('/').unwrap_or((&self.version, ""));
        let base = &self.base_path;
        let mut e = ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            format!(
                "the {what} {name} is offered as version {version} of API {api}, which takes subscriptions: call it under {base} (an OpenAI client's base_url ending in {base}) with the key of an application subscribed to {api}"
            ),
        );
        e.detail.code = Some("offered_by_api".into());
        if what == "model" {
            e.detail.param = Some("model".into());
        }
        e
    }
}

/// Answers one request at the gateway's own entrance (`/v1/...` or a prompt API's path).
pub(crate) async fn serve(
    gateway: &Gateway,
    policies: &Engine,
    guards: &AiGuards,
    target: Target,
    request: Request<Incoming>,
    max_body_bytes: Option<u64>,
    trace: Option<Arc<dyn CallTrace>>,
) -> Response<AiBody> {
    let (parts, body) = request.into_parts();
    let key = bearer(&parts.headers).or_else(|| {
        parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty())
    });
    let Some(identity) = key.and_then(|k| policies.credentials().by_key(k).ok()) else {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing or invalid API key: send a consumer key as 'Authorization: Bearer <key>' or 'x-api-key: <key>' (keys are made with POST /consumers/{name}/keys on the admin API)",
        );
        e.detail.code = Some("invalid_api_key".into());
        return api::error(target.dialect(), &e);
    };
    // What an API offers is called through the API.
    let offered = |model: &str| match &target {
        Target::Api(_) => guards.model(model),
        Target::Prompt(prompt) => guards.prompt(prompt.name()),
    };
    let call = Call {
        counters: policies.counters(),
        identity: &identity,
        max_body_bytes,
        allowed: &offered,
        trace,
    };
    call.answer(gateway, &target, body).await
}

/// Answers a request that the route of AI API `version` admitted, from the caller its
/// policies authenticated (`None`: they authenticate nobody, and an AI call needs a caller).
pub(crate) async fn serve_version(
    gateway: &Gateway,
    counters: &Counters,
    version: &AiVersion,
    identity: Option<&Identity>,
    request: Request<Incoming>,
    max_body_bytes: Option<u64>,
    trace: Option<Arc<dyn CallTrace>>,
) -> Response<AiBody> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let dialect = version.dialect(path);
    let Some(identity) = identity else {
        let e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "this API's policies authenticate no caller; an AI call needs one: give the version's policies an auth",
        );
        return api::error(dialect, &e);
    };
    let target = match version.target(gateway, &parts.method, path) {
        Ok(target) => target,
        Err(e) => return api::error(dialect, &e),
    };
    let only = |model: &str| version.admits(model);
    let call = Call {
        counters,
        identity,
        max_body_bytes,
        allowed: &only,
        trace,
    };
    call.answer(gateway, &target, body).await
}

/// A policy refusal (or CORS preflight answer) on the route of an AI API version, in the AI
/// API's error format (the dialect of `route`) with the refusal's headers.
pub(crate) fn refusal(route: Route, answer: Answer) -> Response<AiBody> {
    let mut response = match answer.error {
        Some((code, message)) => {
            let kind = match answer.status {
                StatusCode::UNAUTHORIZED => "authentication_error",
                StatusCode::FORBIDDEN => "permission_error",
                StatusCode::NOT_FOUND => "not_found_error",
                StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
                _ => "invalid_request_error",
            };
            let mut e = ApiError::new(answer.status, kind, message);
            e.detail.code = Some(code.into());
            api::error(route, &e)
        }
        None => {
            let mut response = Response::new(http_body_util::Empty::<Bytes>::new().boxed_unsync());
            *response.status_mut() = answer.status;
            response
        }
    };
    response.headers_mut().extend(answer.headers);
    response
}

/// One AI call: who makes it, within which body limit, and which model aliases the entrance
/// lets it use besides the consumer's own `ai_models`.
struct Call<'a> {
    counters: &'a Counters,
    identity: &'a Identity,
    max_body_bytes: Option<u64>,
    allowed: &'a (dyn Fn(&str) -> Result<(), Denied> + Sync),
    /// The request's trace, when it is traced.
    trace: Option<Arc<dyn CallTrace>>,
}

/// Gives each provider call of a traced request its `gen_ai` span, a child of the request's.
#[derive(Debug)]
pub(crate) struct AiTrace(AiParent);

impl AiTrace {
    /// The provider calls' trace of the request `span` is about; `None` when it is not
    /// recorded.
    pub(crate) fn of(span: &RequestSpan) -> Option<Arc<dyn CallTrace>> {
        span.ai_parent()
            .map(|parent| Arc::new(AiTrace(parent)) as Arc<dyn CallTrace>)
    }
}

impl CallTrace for AiTrace {
    fn provider_call(&self, record: &UsageRecord, started: SystemTime) {
        let operation = match record.operation {
            Operation::Chat => "chat",
            Operation::Embeddings => "embeddings",
        };
        self.0
            .ai_call_at(operation, &record.model, &record.provider, started)
            .finish(
                Some(&record.provider_model),
                record.usage.prompt_tokens,
                record.usage.completion_tokens,
                (!record.completed).then_some("incomplete"),
            );
    }
}

impl Call<'_> {
    /// Reads the body and answers the request for `target`.
    async fn answer(&self, gateway: &Gateway, target: &Target, body: Incoming) -> Response<AiBody> {
        let dialect = target.dialect();
        let limit = self.max_body_bytes.unwrap_or(DEFAULT_BODY_LIMIT);
        let body: Bytes = match Limited::new(body, limit as usize).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let e = ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    format!(
                        "the request body is larger than this gateway accepts ({limit} bytes); send less"
                    ),
                );
                return api::error(dialect, &e);
            }
            Err(e) => {
                let e = ApiError::invalid_request(
                    format!("the request body could not be read: {e}"),
                    None,
                );
                return api::error(dialect, &e);
            }
        };
        let consumer = self.identity.consumer();
        let models = &consumer.ai_models;
        let allowed = |m: &str| {
            Denied::unless(models.is_empty() || models.iter().any(|a| a == m))?;
            (self.allowed)(m)
        };
        let key = self.identity.key();
        let limited =
            !(consumer.ai_limits.is_empty() && key.is_none_or(|k| k.ai_limits.is_empty()));
        let limits = AiLimits {
            counters: self.counters,
            identity: self.identity,
        };
        let access = Access {
            caller: Caller {
                consumer: Some(consumer.name.to_string()),
                key: key.map(|k| k.id.to_string()),
                trace: self.trace.clone(),
            },
            allowed: &allowed,
            admission: limited.then_some(&limits as &dyn Admission),
        };
        match target {
            Target::Api(route) => api::handle(gateway, *route, &access, body).await,
            Target::Prompt(prompt) => prompt.serve(gateway, &access, &body).await,
        }
    }
}

/// Whose limit a counter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Consumer,
    Key,
}

/// The AI limits of a call made by `identity`: its consumer's and, when it used a key, the
/// key's own.
struct AiLimits<'a> {
    counters: &'a Counters,
    identity: &'a Identity,
}

impl Admission for AiLimits<'_> {
    fn admit(&self, reservation: &Reservation) -> Result<Option<Box<dyn Settle>>, ApiError> {
        let now = now_ms();
        let mut held = Held(Vec::new());
        let consumer = self.identity.consumer();
        let key = self.identity.key();
        let owners = [
            Some((Owner::Consumer, &consumer.ai_limits)),
            key.map(|k| (Owner::Key, &k.ai_limits)),
        ];
        for (owner, limits) in owners.into_iter().flatten() {
            for (kind, limit) in limits.counted() {
                let subject = match (owner, key) {
                    (Owner::Key, Some(k)) => format!("key:{}", k.id),
                    _ => format!("consumer:{}", consumer.name),
                };
                let counter = format!("{}/{subject}", kind.counter_name());
                let check = Limit {
                    key: &counter,
                    window: kind.window(),
                    limit,
                    fixed: kind.fixed(),
                    fail_open: false,
                };
                let amount = amount(kind, reservation.tokens, reservation.max_cost_usd);
                if amount > limit {
                    // No wait would make it fit: say so instead of a Retry-After.
                    return Err(self.too_large(owner, kind, limit, amount, reservation));
                }
                match self.counters.acquire(&check, amount, now) {
                    Ok(r) => held.0.push((kind, r)),
                    // `held` gives back what the earlier limits reserved.
                    Err(refusal) => return Err(self.refused(owner, kind, limit, &refusal)),
                }
            }
        }
        Ok(Some(Box::new(held)))
    }
}

impl AiLimits<'_> {
    /// Whose limit it is, for messages.
    fn whose(&self, owner: Owner) -> String {
        let consumer = &self.identity.consumer().name;
        match (owner, self.identity.key()) {
            (Owner::Key, Some(k)) => format!("key '{}' of consumer '{consumer}'", k.id),
            _ => format!("consumer '{consumer}'"),
        }
    }

    /// The 400 for a request that alone needs more than a limit allows: no wait helps.
    fn too_large(
        &self,
        owner: Owner,
        kind: AiLimitKind,
        limit: u64,
        amount: u64,
        reservation: &Reservation,
    ) -> ApiError {
        let (what, code) = describe(kind, limit);
        let needs = match kind {
            AiLimitKind::TokensPerMinute => format!("{amount} tokens"),
            AiLimitKind::UsdDay | AiLimitKind::UsdMonth => {
                format!("up to {} USD", amount as f64 / 1e6)
            }
        };
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!(
                "this request alone may use {needs} (its input, and max_tokens for each of its n choices), more than the AI {what} of {}: it would never be admitted; ask for less (a lower max_tokens or n, a shorter input, fewer or smaller images), or have an administrator raise ai_limits",
                self.whose(owner)
            ),
        );
        e.detail.code = Some(code.into());
        let param = if reservation.output_tokens > 0 {
            "max_tokens"
        } else {
            "input"
        };
        e.detail.param = Some(param.into());
        e
    }

    /// The 429 naming the limit: whose, which, and how much.
    fn refused(&self, owner: Owner, kind: AiLimitKind, limit: u64, r: &Refusal) -> ApiError {
        let whose = self.whose(owner);
        let (what, code) = describe(kind, limit);
        let message = if r.stale {
            format!(
                "the AI {what} of {whose} cannot be checked: this node lost touch with the cluster; retry later or on another node"
            )
        } else {
            format!(
                "this request would exceed the AI {what} of {whose}; retry after {} s, ask for less (max_tokens), or have an administrator raise ai_limits",
                r.retry_after_s
            )
        };
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        e.detail.code = Some(code.into());
        e.retry_after_s = Some(r.retry_after_s);
        e
    }
}

/// A limit of `kind` in words, and the error code of its refusals.
fn describe(kind: AiLimitKind, limit: u64) -> (String, &'static str) {
    match kind {
        AiLimitKind::UsdDay => (
            format!("budget of {} USD per day (UTC)", limit as f64 / 1e6),
            "budget_exceeded",
        ),
        AiLimitKind::UsdMonth => (
            format!("budget of {} USD per month (UTC)", limit as f64 / 1e6),
            "budget_exceeded",
        ),
        AiLimitKind::TokensPerMinute => (
            format!("limit of {limit} tokens per minute"),
            "tokens_per_minute_exceeded",
        ),
    }
}

/// What a call counts against a limit of `kind`: tokens, or micro-dollars.
fn amount(kind: AiLimitKind, tokens: u64, cost_usd: f64) -> u64 {
    match kind {
        AiLimitKind::TokensPerMinute => tokens,
        AiLimitKind::UsdDay | AiLimitKind::UsdMonth => micro_usd(cost_usd),
    }
}

/// The reservations of one call; given back (settled at 0) if dropped unsettled.
struct Held(Vec<(AiLimitKind, raftgate_policy::Reservation)>);

impl Settle for Held {
    fn settle(mut self: Box<Self>, tokens: u64, cost_usd: f64) {
        for (kind, r) in self.0.drain(..) {
            r.settle(amount(kind, tokens, cost_usd));
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for (_, r) in self.0.drain(..) {
            r.settle(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use raftgate_model::ai::AiLimits as Configured;
    use raftgate_policy::auth::{ApiKey, Consumer};

    use super::*;

    fn key(consumer: Configured, key: Configured) -> Identity {
        Identity::Key(Arc::new(ApiKey {
            id: "k1".into(),
            consumer: Arc::new(Consumer {
                name: "app".into(),
                groups: Box::default(),
                limits: Default::default(),
                ai_models: Box::default(),
                ai_limits: consumer,
                team: None,
            }),
            ai_limits: key,
        }))
    }

    fn reservation(tokens: u64, max_cost_usd: f64) -> Reservation {
        Reservation {
            tokens,
            output_tokens: tokens / 2,
            max_cost_usd,
        }
    }

    #[test]
    fn reserves_settles_and_names_the_budget_refused() {
        let counters = Counters::new(0, Duration::from_millis(250), u32::MAX);
        let key = key(
            Configured {
                budget_usd_day: Some(1.0),
                ..Configured::default()
            },
            Configured {
                tokens_per_minute: Some(100),
                ..Configured::default()
            },
        );
        let limits = AiLimits {
            counters: &counters,
            identity: &key,
        };
        // 0.6 USD and 60 tokens reserved, 0.5 USD and 50 tokens used.
        let held = limits.admit(&reservation(60, 0.6)).unwrap().unwrap();
        held.settle(50, 0.5);
        // Another 0.6 USD does not fit the consumer's day.
        let e = limits.admit(&reservation(10, 0.6)).err().unwrap();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.detail.code.as_deref(), Some("budget_exceeded"));
        assert!(
            e.detail.message.contains("consumer 'app'")
                && e.detail.message.contains("1 USD per day"),
            "{}",
            e.detail.message
        );
        assert!(e.retry_after_s.is_some());
        // 60 more tokens do not fit the key's minute; the day's reservation is given back.
        let e = limits.admit(&reservation(60, 0.1)).err().unwrap();
        assert_eq!(e.detail.code.as_deref(), Some("tokens_per_minute_exceeded"));
        assert!(
            e.detail.message.contains("key 'k1' of consumer 'app'")
                && e.detail.message.contains("100 tokens per minute"),
            "{}",
            e.detail.message
        );
        // Dropped unsettled (the call failed): nothing counted.
        drop(limits.admit(&reservation(50, 0.5)).unwrap());
        let held = limits.admit(&reservation(50, 0.5)).unwrap().unwrap();
        held.settle(0, 0.0);
        assert!(limits.admit(&reservation(50, 0.5)).is_ok());
    }

    #[test]
    fn a_request_larger_than_a_limit_is_told_so_not_to_wait() {
        let counters = Counters::new(0, Duration::from_millis(250), u32::MAX);
        let key = key(
            Configured {
                tokens_per_minute: Some(1000),
                budget_usd_day: Some(1.0),
                ..Configured::default()
            },
            Configured::default(),
        );
        let limits = AiLimits {
            counters: &counters,
            identity: &key,
        };
        for (reservation, code, limit) in [
            (
                reservation(1001, 0.5),
                "tokens_per_minute_exceeded",
                "1000 tokens per minute",
            ),
            (reservation(10, 1.5), "budget_exceeded", "1 USD per day"),
        ] {
            let e = limits.admit(&reservation).err().unwrap();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
            assert_eq!(e.detail.code.as_deref(), Some(code));
            assert_eq!(e.detail.param.as_deref(), Some("max_tokens"));
            assert_eq!(e.retry_after_s, None, "waiting does not help");
            assert!(
                e.detail.message.contains(limit) && e.detail.message.contains("never"),
                "{}",
                e.detail.message
            );
        }
        // Nothing was held by the refused requests.
        assert!(limits.admit(&reservation(1000, 1.0)).is_ok());
    }

    #[test]
    fn amounts_are_tokens_or_micro_dollars() {
        assert_eq!(amount(AiLimitKind::TokensPerMinute, 42, 1.0), 42);
        assert_eq!(amount(AiLimitKind::UsdDay, 42, 0.25), 250_000);
        assert_eq!(amount(AiLimitKind::UsdMonth, 42, 0.0), 0);
    }
}
