//! The AI gateway on the proxy port: requests for the unified API (`/v1/chat/completions`,
//! `/v1/embeddings`, `/v1/models`, `/v1/messages`) and `POST`s to the paths of prompt APIs
//! are answered by the node's [`raftgate_ai::Gateway`] before normal routing.
//!
//! The caller is a consumer authenticated by one of its API keys, sent as
//! `Authorization: Bearer` (what OpenAI clients send) or `x-api-key` (what Anthropic clients
//! send), looked up in the policy engine's credentials snapshot. The consumer's `ai_models`
//! says which aliases it may use (empty: all). The request body is read whole (the engine
//! parses it) within the proxy's body limit.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use raftgate_ai::api::{self, Access, AiBody, Route};
use raftgate_ai::prompt::PromptApi;
use raftgate_ai::{ApiError, Caller, Gateway};
use raftgate_policy::Engine;
use raftgate_policy::auth::bearer;

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
    let Some(consumer) = key.and_then(|k| policies.credentials().by_key(k).ok()) else {
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
    let models = &consumer.ai_models;
    let allowed = |m: &str| models.is_empty() || models.iter().any(|a| a == m);
    let access = Access {
        caller: Caller {
            consumer: Some(consumer.name.to_string()),
            key: None,
        },
        allowed: &allowed,
    };
    match target {
        Target::Api(route) => api::handle(gateway, route, &access, body).await,
        Target::Prompt(prompt) => prompt.serve(gateway, &access, &body).await,
    }
}
