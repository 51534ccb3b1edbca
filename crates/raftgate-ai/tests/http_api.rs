//! The unified HTTP API (`raftgate_ai::api`) in front of mock providers on loopback: status
//! codes, content types and bodies as the OpenAI and Anthropic clients read them.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use raftgate_ai::api::{Access, AiBody, Denied, Route, handle};
use raftgate_ai::mock::{Behavior, Failure, MOCK_KEY, MockProvider};
use raftgate_ai::openai::ChatChunk;
use raftgate_ai::providers::ProviderKind;
use raftgate_ai::sse::{SseEvent, SseParser};
use raftgate_ai::{Caller, Gateway, GatewayConfig, UsageRecord, UsageSink};
use serde_json::{Value, json};

struct Discard;

impl UsageSink for Discard {
    fn record(&self, _: UsageRecord) {}
}

struct Setup {
    gw: Gateway,
    anthropic: MockProvider,
    _openai: MockProvider,
}

async fn setup() -> Setup {
    let openai = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let anthropic = MockProvider::start(ProviderKind::Anthropic).await.unwrap();
    let config: GatewayConfig = serde_json::from_value(json!({
        "providers": {
            "o": {"kind": "openai", "base_url": openai.base_url(), "api_key": MOCK_KEY},
            "a": {"kind": "anthropic", "base_url": anthropic.base_url(), "api_key": MOCK_KEY}},
        "models": {
            "gpt": {"deployments": [{"provider": "o", "model": "gpt-4o-mini"}]},
            "claude": {"deployments": [{"provider": "a", "model": "claude-3-5-haiku-latest"}]},
            "secret": {"deployments": [{"provider": "o", "model": "gpt-4o"}]}},
        "retry": {"retries": 0}
    }))
    .unwrap();
    let gw = Gateway::new(&config, Arc::new(Discard)).unwrap();
    Setup {
        gw,
        anthropic,
        _openai: openai,
    }
}

async fn call(gw: &Gateway, method: Method, path: &str, body: Value) -> Response<AiBody> {
    let route = Route::of(&method, path).unwrap();
    let access = Access {
        caller: Caller::default(),
        allowed: &|m: &str| Denied::unless(m != "secret"),
        admission: None,
    };
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    handle(gw, route, &access, body).await
}

async fn body_of(resp: Response<AiBody>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

async fn events_of(resp: Response<AiBody>) -> Vec<SseEvent> {
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut events = Vec::new();
    let mut parser = SseParser::new();
    parser.feed(&body_of(resp).await, &mut events).unwrap();
    events
}

#[tokio::test]
async fn chat_complete_and_streamed() {
    let s = setup().await;
    let resp = call(
        &s.gw,
        Method::POST,
        "/v1/chat/completions",
        json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = serde_json::from_slice(&body_of(resp).await).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hi");

    let resp = call(
        &s.gw,
        Method::POST,
        "/v1/chat/completions",
        json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let events = events_of(resp).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<ChatChunk>(&e.data).unwrap())
        .filter_map(|c| c.choices.first()?.delta.content.clone())
        .collect();
    assert_eq!(text, "echo: hi");
}

#[tokio::test]
async fn models_and_access() {
    let s = setup().await;
    let resp = call(&s.gw, Method::GET, "/v1/models", Value::Null).await;
    let v: Value = serde_json::from_slice(&body_of(resp).await).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["claude", "gpt"]);
    let resp = call(
        &s.gw,
        Method::POST,
        "/v1/chat/completions",
        json!({"model": "secret", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_slice(&body_of(resp).await).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn bad_bodies_are_400_naming_the_field() {
    let s = setup().await;
    let resp = call(
        &s.gw,
        Method::POST,
        "/v1/chat/completions",
        json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&body_of(resp).await).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "temperature");

    let resp = call(
        &s.gw,
        Method::POST,
        "/v1/messages",
        json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&body_of(resp).await).unwrap();
    assert_eq!(v["type"], "error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
}

#[tokio::test]
async fn messages_streamed_from_openai_and_errors_in_anthropic_shape() {
    let s = setup().await;
    let resp = call(
        &s.gw,
        Method::POST,
        "/v1/messages",
        json!({"model": "gpt", "max_tokens": 20, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let events = events_of(resp).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );

    s.anthropic.set(Behavior {
        failure: Some(Failure::Status(529)),
        ..Behavior::default()
    });
    let resp = call(
        &s.gw,
        Method::POST,
        "/v1/messages",
        json!({"model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_slice(&body_of(resp).await).unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");
}
