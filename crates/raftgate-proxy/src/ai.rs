//! The AI gateway on the proxy port: requests for the unified API (`/v1/chat/completions`,
//! `/v1/embeddings`, `/v1/models`, `/v1/messages`) and `POST`s to the paths of prompt APIs
//! are answered by the node's [`raftgate_ai::Gateway`] before normal routing.
//!
//! The caller is a consumer authenticated by one of its API keys, sent as
//! `Authorization: Bearer` (what OpenAI clients send) or `x-api-key` (what Anthropic clients
//! send), looked up in the policy engine's credentials snapshot. The consumer's `ai_models`
//! says which aliases it may use (empty: all). The request body is read whole (the engine
//! parses it) within the proxy's body limit.
//!
//! Budgets and token limits (`ai_limits` of the consumer and of the key) are enforced with the
//! node's cluster-wide counters, the same ones rate limits use and the node already replicates
//! in batches: before the provider call, the request's [`Reservation`] (the most it may be
//! billed: its input, images included, and every choice's output limit, priced at the dearest
//! deployment) is acquired against each limit — micro-dollars for the day and month budgets
//! (fixed UTC windows), tokens for the sliding minute — and settled with the call's actual cost
//! and tokens afterwards, or with 0 when no provider served it. A request whose reservation
//! alone passes a limit is answered 400: no wait would admit it.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use raftgate_ai::api::{self, Access, Admission, AiBody, Route};
use raftgate_ai::prompt::PromptApi;
use raftgate_ai::{ApiError, Caller, Gateway, Reservation, Settle};
use raftgate_model::ai::{AiLimitKind, micro_usd};
use raftgate_policy::auth::{ApiKey, bearer};
use raftgate_policy::counter::now_ms;
use raftgate_policy::{Counters, Engine, Limit, Refusal};

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
    /// The request's target when the gateway answers it: a unified API endpoint, or a `POST`
    /// to a prompt API's path; `None` for normal routing.
    pub(crate) fn of(gateway: &Gateway, method: &http::Method, path: &str) -> Option<Target> {
        if let Some(route) = Route::of(method, path) {
            return Some(Target::Api(route));
        }
        if method == http::Method::POST {
            return gateway.prompt(path).map(Target::Prompt);
        }
        None
    }
}

/// Answers one request of the unified API or of a prompt API.
pub(crate) async fn serve(
    gateway: &Gateway,
    policies: &Engine,
    target: Target,
    request: Request<Incoming>,
    max_body_bytes: Option<u64>,
) -> Response<AiBody> {
    // Prompt APIs answer errors as chat completions do.
    let route = match &target {
        Target::Api(route) => *route,
        Target::Prompt(_) => Route::ChatCompletions,
    };
    let (parts, body) = request.into_parts();
    let key = bearer(&parts.headers).or_else(|| {
        parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty())
    });
    let Some(key) = key.and_then(|k| policies.credentials().key(k).ok().cloned()) else {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing or invalid API key: send a consumer key as 'Authorization: Bearer <key>' or 'x-api-key: <key>' (keys are made with POST /consumers/{name}/keys on the admin API)",
        );
        e.detail.code = Some("invalid_api_key".into());
        return api::error(route, &e);
    };
    let limit = max_body_bytes.unwrap_or(DEFAULT_BODY_LIMIT);
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
            return api::error(route, &e);
        }
        Err(e) => {
            let e =
                ApiError::invalid_request(format!("the request body could not be read: {e}"), None);
            return api::error(route, &e);
        }
    };
    let models = &key.consumer.ai_models;
    let allowed = |m: &str| models.is_empty() || models.iter().any(|a| a == m);
    let limited = !(key.consumer.ai_limits.is_empty() && key.ai_limits.is_empty());
    let limits = AiLimits {
        counters: policies.counters(),
        key: &key,
    };
    let access = Access {
        caller: Caller {
            consumer: Some(key.consumer.name.to_string()),
            key: Some(key.id.to_string()),
        },
        allowed: &allowed,
        admission: limited.then_some(&limits as &dyn Admission),
    };
    match target {
        Target::Api(route) => api::handle(gateway, route, &access, body).await,
        Target::Prompt(prompt) => prompt.serve(gateway, &access, &body).await,
    }
}

/// Whose limit a counter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Consumer,
    Key,
}

/// The AI limits of a call made with `key`: its consumer's and its own.
struct AiLimits<'a> {
    counters: &'a Counters,
    key: &'a ApiKey,
}

impl Admission for AiLimits<'_> {
    fn admit(&self, reservation: &Reservation) -> Result<Option<Box<dyn Settle>>, ApiError> {
        let now = now_ms();
        let mut held = Held(Vec::new());
        for (owner, limits) in [
            (Owner::Consumer, &self.key.consumer.ai_limits),
            (Owner::Key, &self.key.ai_limits),
        ] {
            for (kind, limit) in limits.counted() {
                let subject = match owner {
                    Owner::Consumer => format!("consumer:{}", self.key.consumer.name),
                    Owner::Key => format!("key:{}", self.key.id),
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
        match owner {
            Owner::Consumer => format!("consumer '{}'", self.key.consumer.name),
            Owner::Key => format!(
                "key '{}' of consumer '{}'",
                self.key.id, self.key.consumer.name
            ),
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
    use raftgate_policy::auth::Consumer;

    use super::*;

    fn key(consumer: Configured, key: Configured) -> ApiKey {
        ApiKey {
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
        }
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
            key: &key,
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
            key: &key,
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
