//! The unified API on loopback in front of the mock providers, for checking it with the
//! official `openai` and `anthropic` SDKs (`tests/sdk/check.py`) until the data plane serves it.
//!
//! `cargo run -p raftgate-ai --features mock --example mock_gateway -- 127.0.0.1:18080`
//! Aliases: `gpt` (OpenAI mock), `claude` (Anthropic mock), `gemini` (Gemini mock), `command`
//! (Cohere mock), `emb`
//! (OpenAI embeddings), `fallback` (a failing Anthropic mock, then the OpenAI mock), `broken`
//! (always 503), `midstream` (fails after its first chunks), `secret` (exists, but the consumer may not use it, so it looks unknown).
//! The consumer key is `sk-consumer`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use raftgate_ai::api::{Access, AiBody, Denied, Route, handle};
use raftgate_ai::mock::{Behavior, Failure, MOCK_KEY, MockProvider};
use raftgate_ai::providers::ProviderKind;
use raftgate_ai::{ApiError, Caller, Gateway, GatewayConfig, UsageRecord, UsageSink};
use serde_json::json;
use tokio::net::TcpListener;

const CONSUMER_KEY: &str = "sk-consumer";

/// Logs each call's usage, as the data plane's accounting would receive it.
struct LogUsage;

impl UsageSink for LogUsage {
    fn record(&self, r: UsageRecord) {
        tracing::info!(
            model = %r.model, provider = %r.provider, prompt = r.usage.prompt_tokens,
            completion = r.usage.completion_tokens, cost_usd = r.cost_usd,
            estimated = r.estimated, completed = r.completed, "usage"
        );
    }
}

fn error(status: StatusCode, message: &str) -> Response<AiBody> {
    let body = ApiError::new(status, "invalid_request_error", message).to_json();
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *resp.status_mut() = status;
    resp
}

async fn serve(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
) -> Result<Response<AiBody>, std::convert::Infallible> {
    let Some(route) = Route::of(req.method(), req.uri().path()) else {
        return Ok(error(StatusCode::NOT_FOUND, "no such endpoint"));
    };
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let key = bearer.or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()));
    if key != Some(CONSUMER_KEY) {
        return Ok(error(
            StatusCode::UNAUTHORIZED,
            "send your consumer key as Authorization: Bearer",
        ));
    }
    let body = match Limited::new(req.into_body(), 16 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is over 16 MiB",
            ));
        }
    };
    let access = Access {
        caller: Caller {
            consumer: Some("demo".into()),
            key: Some("sk-consumer".into()),
            trace: None,
        },
        allowed: &|model: &str| Denied::unless(model != "secret"),
        admission: None,
    };
    Ok(handle(&gw, route, &access, body).await)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber_init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".into());
    let openai = MockProvider::start(ProviderKind::Openai).await?;
    let anthropic = MockProvider::start(ProviderKind::Anthropic).await?;
    let gemini = MockProvider::start(ProviderKind::Gemini).await?;
    let cohere = MockProvider::start(ProviderKind::Cohere).await?;
    let breaking = MockProvider::start(ProviderKind::Openai).await?;
    breaking.set(Behavior {
        failure: Some(Failure::MidStream { after_events: 2 }),
        ..Behavior::default()
    });
    let failing = MockProvider::start(ProviderKind::Anthropic).await?;
    failing.set(Behavior {
        failure: Some(Failure::Status(529)),
        ..Behavior::default()
    });
    let p = |kind: &str, m: &MockProvider| json!({"kind": kind, "base_url": m.base_url(), "api_key": MOCK_KEY});
    let config: GatewayConfig = serde_json::from_value(json!({
        "providers": {"openai": p("openai", &openai), "anthropic": p("anthropic", &anthropic),
                      "gemini": p("gemini", &gemini), "cohere": p("cohere", &cohere), "breaking": p("openai", &breaking), "failing": p("anthropic", &failing)},
        "models": {
            "gpt": {"deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]},
            "claude": {"deployments": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]},
            "gemini": {"deployments": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
            "command": {"deployments": [{"provider": "cohere", "model": "command-r-08-2024"}]},
            "midstream": {"deployments": [{"provider": "breaking", "model": "gpt-4o-mini"}]},
            "emb": {"deployments": [{"provider": "openai", "model": "text-embedding-3-small"}]},
            "fallback": {"deployments": [{"provider": "failing", "model": "claude-3-5-haiku-latest"},
                                         {"provider": "openai", "model": "gpt-4o-mini", "priority": 1}]},
            "broken": {"deployments": [{"provider": "failing", "model": "claude-3-5-haiku-latest"}]},
            "secret": {"deployments": [{"provider": "openai", "model": "gpt-4o"}]}
        },
        "retry": {"retries": 0}
    }))?;
    let gw = Arc::new(Gateway::new(&config, Arc::new(LogUsage))?);
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let gw = gw.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| serve(gw.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn tracing_subscriber_init() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
}
