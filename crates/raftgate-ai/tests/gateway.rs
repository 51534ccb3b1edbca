//! The engine against mock providers on loopback that speak the real wire formats: every kind
//! complete and streamed, with tools and errors; fallback, retry and cooldown; an error in
//! mid-stream; embeddings; and the Anthropic-style `/v1/messages` served by another provider.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftgate_ai::engine::Operation;
use raftgate_ai::messages::{EventWriter, to_chat_request, to_messages_response};
use raftgate_ai::mock::{Behavior, Failure, MOCK_KEY, MockProvider, png_data_url};
use raftgate_ai::openai::{ChatChunk, ChatRequest, ChatResponse, EmbeddingsRequest, FinishReason};
use raftgate_ai::providers::ProviderKind;
use raftgate_ai::sse::{SseEvent, SseParser};
use raftgate_ai::{ApiError, Caller, ChatOutcome, ChatStream, Gateway, StreamItem, UsageRecord};
use raftgate_ai::{GatewayConfig, Settle, UsageSink};
use raftgate_model::ai::{AiCooldown, CooldownTable};
use serde_json::{Value, json};

#[derive(Default)]
struct Recorder(Mutex<Vec<UsageRecord>>, Mutex<Vec<AiCooldown>>);

impl UsageSink for Recorder {
    fn record(&self, record: UsageRecord) {
        self.0.lock().unwrap().push(record);
    }

    fn cooldown(&self, cooldown: AiCooldown) {
        self.1.lock().unwrap().push(cooldown);
    }
}

impl Recorder {
    fn all(&self) -> Vec<UsageRecord> {
        self.0.lock().unwrap().clone()
    }
}

/// A provider entry for `mock`, of `kind` (Azure is served by the OpenAI mock).
fn provider(kind: &str, mock: &MockProvider) -> Value {
    let base = mock.base_url();
    // Azure's base URL is the resource, without OpenAI's /v1.
    let base = if kind == "azure" {
        base.trim_end_matches("/v1")
    } else {
        &base
    };
    json!({"kind": kind, "base_url": base, "api_key": MOCK_KEY, "timeout_ms": 2000})
}

fn gateway(providers: Value, models: Value) -> (Gateway, Arc<Recorder>) {
    let config: GatewayConfig = serde_json::from_value(json!({
        "providers": providers, "models": models,
        "retry": {"retries": 1, "backoff_ms": 10},
        "cooldown": {"failures": 100, "cooldown_ms": 60000}
    }))
    .unwrap();
    let recorder = Arc::new(Recorder::default());
    let gw = Gateway::new(&config, recorder.clone()).unwrap();
    (gw, recorder)
}

fn chat(body: Value) -> ChatRequest {
    serde_json::from_value(body).unwrap()
}

fn caller() -> Caller {
    Caller {
        consumer: Some("team-a".into()),
        key: Some("key-1".into()),
        trace: None,
    }
}

async fn complete(gw: &Gateway, req: ChatRequest) -> Result<ChatResponse, ApiError> {
    match gw.chat(&caller(), req, None).await? {
        ChatOutcome::Complete(resp) => Ok(resp),
        ChatOutcome::Cached(_) => panic!("a cache hit, but these models have no cache"),
        ChatOutcome::Stream(_) => panic!("a stream for a non-streaming request"),
    }
}

async fn open(gw: &Gateway, req: ChatRequest) -> Result<ChatStream, ApiError> {
    match gw.chat(&caller(), req, None).await? {
        ChatOutcome::Stream(s) => Ok(*s),
        ChatOutcome::Complete(_) | ChatOutcome::Cached(_) => {
            panic!("a complete answer for a streaming request")
        }
    }
}

async fn collect(stream: &mut ChatStream) -> (Vec<ChatChunk>, Option<ApiError>) {
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            StreamItem::Chunk(c) => chunks.push(c),
            StreamItem::Error(e) => return (chunks, Some(e)),
        }
    }
    (chunks, None)
}

/// The Anthropic-style events `/v1/messages` writes for `stream`, as the API does: an error
/// event ends it, else its normal end.
async fn messages_events(stream: &mut ChatStream) -> Vec<SseEvent> {
    let mut writer = EventWriter::new();
    let mut out = Vec::new();
    loop {
        match stream.next().await {
            Some(StreamItem::Chunk(c)) => writer.chunk(&c, &mut out),
            Some(StreamItem::Error(e)) => {
                writer.error(&e, &mut out);
                break;
            }
            None => {
                writer.finish(None, &mut out);
                break;
            }
        }
    }
    let mut events = Vec::new();
    let mut parser = SseParser::new();
    for b in &out {
        parser.feed(b, &mut events).unwrap();
    }
    events
}

fn text(chunks: &[ChatChunk]) -> String {
    chunks
        .iter()
        .filter_map(|c| c.choices.first()?.delta.content.clone())
        .collect()
}

fn finish(chunks: &[ChatChunk]) -> Option<FinishReason> {
    chunks.iter().find_map(|c| c.choices.first()?.finish_reason)
}

/// (id, name, arguments) of the streamed tool call 0.
fn streamed_call(chunks: &[ChatChunk]) -> (String, String, String) {
    let mut id = String::new();
    let mut name = String::new();
    let mut args = String::new();
    for d in chunks
        .iter()
        .filter_map(|c| c.choices.first()?.delta.tool_calls.clone())
        .flatten()
    {
        assert_eq!(d.index, 0);
        if let Some(i) = d.id {
            id = i;
        }
        if let Some(f) = d.function {
            name.push_str(&f.name.unwrap_or_default());
            args.push_str(&f.arguments.unwrap_or_default());
        }
    }
    (id, name, args)
}

const WEATHER_TOOL: &str = r#"[{"type": "function", "function": {"name": "get_weather",
    "description": "Current weather", "parameters": {"type": "object", "additionalProperties": false,
    "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#;

/// Every behavior one provider kind must show through the gateway.
async fn exercise(kind: ProviderKind, kind_name: &str, provider_model: &str) {
    let mock = MockProvider::start(kind).await.unwrap();
    let (gw, recorder) = gateway(
        json!({"p": provider(kind_name, &mock)}),
        json!({"m": {"deployments": [{"provider": "p", "model": provider_model}]}}),
    );
    let tools: Value = serde_json::from_str(WEATHER_TOOL).unwrap();
    let hello = json!([{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "hello world"}]);

    // Complete.
    let resp = complete(
        &gw,
        chat(json!({"model": "m", "messages": hello, "max_tokens": 20})),
    )
    .await
    .unwrap();
    assert_eq!(
        resp.choices[0].message.content.as_deref(),
        Some("echo: hello world"),
        "{kind_name}"
    );
    assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::Stop));
    assert!(!resp.model.is_empty(), "{kind_name}: the model is named");
    let prompt = resp.usage.unwrap().prompt_tokens;
    assert!(prompt == 11 || prompt == 12, "{kind_name}: {prompt}");
    assert_eq!(resp.usage.unwrap().completion_tokens, 3);
    let rec = recorder.all().pop().unwrap();
    assert_eq!(rec.provider, "p");
    assert_eq!(rec.provider_model, provider_model);
    assert_eq!(rec.model, "m");
    assert_eq!(rec.caller, caller());
    assert!(!rec.estimated && rec.completed && !rec.stream);
    assert_eq!(rec.usage.completion_tokens, 3);
    assert_eq!(rec.operation, Operation::Chat);

    // Streamed, with the usage chunk asked for.
    let mut stream = open(
        &gw,
        chat(json!({"model": "m", "messages": hello, "stream": true,
                    "stream_options": {"include_usage": true}})),
    )
    .await
    .unwrap();
    let (chunks, err) = collect(&mut stream).await;
    assert!(err.is_none(), "{kind_name}: {err:?}");
    assert_eq!(text(&chunks), "echo: hello world", "{kind_name}");
    assert_eq!(finish(&chunks), Some(FinishReason::Stop));
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    assert_eq!(last.usage.unwrap().completion_tokens, 3);
    assert!(
        chunks
            .iter()
            .all(|c| c.object == "chat.completion.chunk" && !c.model.is_empty())
    );
    drop(stream);
    let rec = recorder.all().pop().unwrap();
    assert!(
        rec.stream && rec.completed && !rec.estimated,
        "{kind_name}: {rec:?}"
    );

    // Streamed without the usage chunk: none is sent, usage is still recorded; SSE ends in [DONE].
    let mut stream = open(
        &gw,
        chat(json!({"model": "m", "messages": hello, "stream": true})),
    )
    .await
    .unwrap();
    let mut body = Vec::new();
    while let Some(bytes) = stream.next_sse().await {
        body.extend_from_slice(&bytes);
    }
    let mut events = Vec::new();
    let mut parser = SseParser::new();
    parser.feed(&body, &mut events).unwrap();
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<ChatChunk> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c.usage.is_none() && !c.choices.is_empty())
    );
    assert_eq!(text(&chunks), "echo: hello world");
    drop(stream);
    assert_eq!(recorder.all().pop().unwrap().usage.completion_tokens, 3);

    // Tools, complete: the call, then the result round trip.
    let ask = json!({"role": "user", "content": "weather in Paris?"});
    let resp = complete(
        &gw,
        chat(json!({"model": "m", "messages": [ask], "tools": tools,
                                         "tool_choice": "auto"})),
    )
    .await
    .unwrap();
    let choice = &resp.choices[0];
    assert_eq!(
        choice.finish_reason,
        Some(FinishReason::ToolCalls),
        "{kind_name}"
    );
    let call = &choice.message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.function.name, "get_weather");
    let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let assistant = serde_json::to_value(&choice.message).unwrap();
    let result = json!({"role": "tool", "tool_call_id": call.id, "content": "sunny"});
    let resp = complete(
        &gw,
        chat(json!({"model": "m", "messages": [ask, assistant, result], "tools": tools})),
    )
    .await
    .unwrap();
    assert_eq!(
        resp.choices[0].message.content.as_deref(),
        Some("tool said: sunny"),
        "{kind_name}"
    );

    // Tools, streamed.
    let mut stream = open(
        &gw,
        chat(json!({"model": "m", "messages": [ask], "tools": tools, "stream": true})),
    )
    .await
    .unwrap();
    let (chunks, err) = collect(&mut stream).await;
    assert!(err.is_none());
    let (id, name, args) = streamed_call(&chunks);
    assert!(!id.is_empty());
    assert_eq!(name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(
        finish(&chunks),
        Some(FinishReason::ToolCalls),
        "{kind_name}"
    );
    drop(stream);

    // A provider 400 is the client's: answered with the provider's message, not retried.
    mock.set(Behavior {
        failure: Some(Failure::Status(400)),
        ..Behavior::default()
    });
    let hits = mock.hits();
    let err = complete(&gw, chat(json!({"model": "m", "messages": hello})))
        .await
        .unwrap_err();
    assert_eq!(err.status.as_u16(), 400);
    assert_eq!(err.detail.kind, "invalid_request_error");
    assert!(
        err.detail.message.contains("mock failure"),
        "{}",
        err.detail.message
    );
    assert_eq!(mock.hits(), hits + 1);

    // A provider 401 means the gateway's credentials are wrong: 502, not the client's 401.
    mock.set(Behavior {
        failure: Some(Failure::Status(401)),
        ..Behavior::default()
    });
    let err = complete(&gw, chat(json!({"model": "m", "messages": hello})))
        .await
        .unwrap_err();
    assert_eq!(err.status.as_u16(), 502);
}

#[tokio::test]
async fn openai_complete_stream_tools_errors() {
    exercise(ProviderKind::Openai, "openai", "gpt-4o-mini").await;
}

#[tokio::test]
async fn azure_complete_stream_tools_errors() {
    exercise(ProviderKind::Openai, "azure", "gpt4o-deployment").await;
}

#[tokio::test]
async fn anthropic_complete_stream_tools_errors() {
    exercise(
        ProviderKind::Anthropic,
        "anthropic",
        "claude-3-5-haiku-20241022",
    )
    .await;
}

#[tokio::test]
async fn gemini_complete_stream_tools_errors() {
    exercise(ProviderKind::Gemini, "gemini", "gemini-2.5-flash").await;
}

#[tokio::test]
async fn cohere_complete_stream_tools_errors() {
    exercise(ProviderKind::Cohere, "cohere", "command-r-08-2024").await;
}

#[tokio::test]
async fn what_the_providers_receive() {
    let anthropic = MockProvider::start(ProviderKind::Anthropic).await.unwrap();
    let gemini = MockProvider::start(ProviderKind::Gemini).await.unwrap();
    let (gw, _) = gateway(
        json!({"a": provider("anthropic", &anthropic), "g": provider("gemini", &gemini)}),
        json!({"claude": {"deployments": [{"provider": "a", "model": "claude-sonnet-4-20250514"}]},
               "gem": {"deployments": [{"provider": "g", "model": "gemini-2.5-flash"}]}}),
    );
    let body = json!({"model": "set below", "messages": [
        {"role": "system", "content": "Only JSON."},
        {"role": "user", "content": [{"type": "text", "text": "describe"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}],
        "response_format": {"type": "json_object"}, "stop": ["END"], "temperature": 0.3, "top_p": 0.8});
    let mut req = chat(body.clone());
    req.model = "claude".into();
    complete(&gw, req).await.unwrap();
    let sent = &anthropic.received()[0];
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.body["model"], "claude-sonnet-4-20250514");
    assert_eq!(sent.body["max_tokens"], 4096);
    assert!(
        sent.body["system"]
            .as_str()
            .unwrap()
            .starts_with("Only JSON.")
    );
    assert_eq!(sent.body["stop_sequences"], json!(["END"]));
    assert_eq!(sent.body["temperature"], 0.3);
    assert_eq!(
        sent.body["messages"][0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
    );

    let mut req = chat(body);
    req.model = "gem".into();
    complete(&gw, req).await.unwrap();
    let sent = &gemini.received()[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(
        sent.body["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(sent.body["generationConfig"]["topP"], 0.8);
    assert_eq!(
        sent.body["systemInstruction"],
        json!({"parts": [{"text": "Only JSON."}]})
    );
}

/// A failing first deployment, a healthy fallback of another kind.
async fn fallback_setup(failure: Failure) -> (MockProvider, MockProvider, Gateway, Arc<Recorder>) {
    let bad = MockProvider::start(ProviderKind::Anthropic).await.unwrap();
    bad.set(Behavior {
        failure: Some(failure),
        ..Behavior::default()
    });
    let good = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let (gw, recorder) = gateway(
        json!({"bad": provider("anthropic", &bad), "good": provider("openai", &good)}),
        json!({"m": {"deployments": [
            {"provider": "bad", "model": "claude-3-5-haiku-latest", "priority": 0},
            {"provider": "good", "model": "gpt-4o-mini", "priority": 1}]}}),
    );
    (bad, good, gw, recorder)
}

fn hello() -> ChatRequest {
    chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
}

fn streamed_hello() -> ChatRequest {
    ChatRequest {
        stream: Some(true),
        ..hello()
    }
}

#[tokio::test]
async fn a_5xx_is_retried_then_falls_back() {
    let (bad, good, gw, recorder) = fallback_setup(Failure::Status(529)).await;
    let resp = complete(&gw, hello()).await.unwrap();
    assert_eq!(resp.choices[0].message.content.as_deref(), Some("echo: hi"));
    assert_eq!(bad.hits(), 2, "one attempt and one retry");
    assert_eq!(good.hits(), 1);
    let rec = recorder.all().pop().unwrap();
    assert_eq!(rec.provider, "good");
    // gpt-4o-mini's list price: 0.15 and 0.60 USD per million.
    let expected = (11.0 * 0.15 + 2.0 * 0.60) / 1e6;
    assert!((rec.cost_usd - expected).abs() < 1e-15, "{}", rec.cost_usd);
}

#[tokio::test]
async fn a_429_falls_back_at_once() {
    let (bad, good, gw, _) = fallback_setup(Failure::Status(429)).await;
    complete(&gw, hello()).await.unwrap();
    assert_eq!(bad.hits(), 1);
    assert_eq!(good.hits(), 1);
}

#[tokio::test]
async fn a_dropped_connection_falls_back() {
    let (bad, good, gw, _) = fallback_setup(Failure::Disconnect).await;
    complete(&gw, hello()).await.unwrap();
    assert_eq!(bad.hits(), 2);
    assert_eq!(good.hits(), 1);
}

#[tokio::test]
async fn an_unreachable_provider_falls_back() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let good = MockProvider::start(ProviderKind::Gemini).await.unwrap();
    let (gw, _) = gateway(
        json!({"gone": {"kind": "openai", "base_url": format!("http://127.0.0.1:{port}/v1")},
               "good": provider("gemini", &good)}),
        json!({"m": {"deployments": [{"provider": "gone", "model": "x"},
                                     {"provider": "good", "model": "gemini-2.0-flash", "priority": 1}]}}),
    );
    let resp = complete(&gw, hello()).await.unwrap();
    assert_eq!(resp.choices[0].message.content.as_deref(), Some("echo: hi"));
}

#[tokio::test]
async fn a_slow_provider_times_out_and_falls_back() {
    let slow = MockProvider::start(ProviderKind::Openai).await.unwrap();
    slow.set(Behavior {
        latency: Duration::from_millis(800),
        ..Behavior::default()
    });
    let good = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let mut slow_entry = provider("openai", &slow);
    slow_entry["timeout_ms"] = json!(100);
    let (gw, _) = gateway(
        json!({"slow": slow_entry, "good": provider("openai", &good)}),
        json!({"m": {"deployments": [{"provider": "slow", "model": "a"},
                                     {"provider": "good", "model": "b", "priority": 1}]}}),
    );
    let started = std::time::Instant::now();
    complete(&gw, hello()).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(700));
    assert_eq!(good.hits(), 1);
}

#[tokio::test]
async fn all_deployments_failing_answers_the_last_error() {
    let (bad, good, gw, _) = fallback_setup(Failure::Status(529)).await;
    good.set(Behavior {
        failure: Some(Failure::Status(503)),
        ..Behavior::default()
    });
    let err = complete(&gw, hello()).await.unwrap_err();
    assert_eq!(err.status.as_u16(), 503);
    assert!(
        err.detail.message.contains("provider good"),
        "{}",
        err.detail.message
    );
    assert_eq!(bad.hits() + good.hits(), 4);
}

#[tokio::test]
async fn a_transient_failure_is_retried_on_the_same_deployment() {
    let (bad, good, gw, _) = fallback_setup(Failure::Status(500)).await;
    bad.set(Behavior {
        failure: Some(Failure::Status(500)),
        times: Some(1),
        ..Behavior::default()
    });
    let resp = complete(&gw, hello()).await.unwrap();
    assert_eq!(resp.choices[0].message.content.as_deref(), Some("echo: hi"));
    assert_eq!(bad.hits(), 2);
    assert_eq!(good.hits(), 0);
}

#[tokio::test]
async fn a_stream_failing_before_its_first_chunk_falls_back() {
    let (bad, good, gw, _) = fallback_setup(Failure::MidStream { after_events: 0 }).await;
    let mut req = hello();
    req.stream = Some(true);
    let mut stream = open(&gw, req).await.unwrap();
    let (chunks, err) = collect(&mut stream).await;
    assert!(err.is_none());
    assert_eq!(text(&chunks), "echo: hi");
    assert_eq!(bad.hits(), 2);
    assert_eq!(good.hits(), 1);
}

#[tokio::test]
async fn a_failure_in_mid_stream_ends_with_an_error_event_and_done() {
    for (kind, name, after) in [
        (ProviderKind::Anthropic, "anthropic", 4),
        (ProviderKind::Openai, "openai", 2),
        (ProviderKind::Gemini, "gemini", 1),
        (ProviderKind::Cohere, "cohere", 3),
    ] {
        let mock = MockProvider::start(kind).await.unwrap();
        mock.set(Behavior {
            failure: Some(Failure::MidStream {
                after_events: after,
            }),
            chunk_delay: Duration::from_millis(5),
            ..Behavior::default()
        });
        let (gw, recorder) = gateway(
            json!({"p": provider(name, &mock)}),
            json!({"m": {"deployments": [{"provider": "p", "model": "x"}]}}),
        );
        let req = chat(json!({"model": "m", "stream": true,
                              "messages": [{"role": "user", "content": "one two three four"}]}));
        let mut stream = open(&gw, req).await.unwrap();
        let mut events = Vec::new();
        let mut parser = SseParser::new();
        while let Some(bytes) = stream.next_sse().await {
            parser.feed(&bytes, &mut events).unwrap();
        }
        let n = events.len();
        assert!(n >= 3, "{name}: {events:?}");
        assert_eq!(events[n - 1].data, "[DONE]");
        let error: Value = serde_json::from_str(&events[n - 2].data).unwrap();
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("mid-stream"),
            "{name}: {error}"
        );
        let first: ChatChunk = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(first.object, "chat.completion.chunk");
        assert_eq!(mock.hits(), 1, "{name}: no fallback after the first chunk");
        drop(stream);
        let rec = recorder.all().pop().unwrap();
        assert!(!rec.completed, "{name}");
    }
}

#[tokio::test]
async fn a_client_leaving_mid_stream_records_partial_usage() {
    let mock = MockProvider::start(ProviderKind::Anthropic).await.unwrap();
    mock.set(Behavior {
        chunk_delay: Duration::from_millis(20),
        ..Behavior::default()
    });
    let (gw, recorder) = gateway(
        json!({"p": provider("anthropic", &mock)}),
        json!({"m": {"deployments": [{"provider": "p", "model": "claude-3-5-haiku-latest"}]}}),
    );
    let req = chat(json!({"model": "m", "stream": true,
                          "messages": [{"role": "user", "content": "a b c d e f g h"}]}));
    let mut stream = open(&gw, req).await.unwrap();
    let Some(StreamItem::Chunk(first)) = stream.next().await else {
        panic!("no first chunk")
    };
    assert_eq!(
        first.choices[0].delta.role,
        Some(raftgate_ai::openai::Role::Assistant)
    );
    assert!(
        recorder.all().is_empty(),
        "nothing recorded while streaming"
    );
    drop(stream);
    let rec = recorder.all().pop().unwrap();
    assert!(rec.stream && !rec.completed);
    assert_eq!(rec.usage.prompt_tokens, 11, "message_start's input tokens");
}

#[tokio::test]
async fn a_failing_deployment_is_cooled_down() {
    let bad = MockProvider::start(ProviderKind::Openai).await.unwrap();
    bad.set(Behavior {
        failure: Some(Failure::Status(503)),
        ..Behavior::default()
    });
    let good = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let config: GatewayConfig = serde_json::from_value(json!({
        "providers": {"bad": provider("openai", &bad), "good": provider("openai", &good)},
        "models": {"m": {"deployments": [{"provider": "bad", "model": "a"},
                                         {"provider": "good", "model": "b", "priority": 1}]}},
        "retry": {"retries": 0, "backoff_ms": 1},
        "cooldown": {"failures": 2, "cooldown_ms": 60000}
    }))
    .unwrap();
    let recorder = Arc::new(Recorder::default());
    let gw = Gateway::new(&config, recorder.clone()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for _ in 0..5 {
        complete(&gw, hello()).await.unwrap();
    }
    assert_eq!(bad.hits(), 2, "cooled down after two failures");
    assert_eq!(good.hits(), 5);
    // The sink hears of it once, to replicate it.
    let cooldowns = recorder.1.lock().unwrap().clone();
    assert_eq!(cooldowns.len(), 1, "{cooldowns:?}");
    assert_eq!(
        (&*cooldowns[0].provider, &*cooldowns[0].model),
        ("bad", "a")
    );
    let until = cooldowns[0].until_ms;
    assert!((now + 60_000..now + 70_000).contains(&until), "{until}");

    // Another gateway honours the replicated cooldown without trying the deployment first.
    let other = Gateway::new(&config, Arc::new(Recorder::default())).unwrap();
    let mut table = CooldownTable::new();
    table.insert(("bad".into(), "a".into()), until);
    table.insert(("bad".into(), "unused".into()), until);
    other.apply_cooldowns(&table);
    complete(&other, hello()).await.unwrap();
    assert_eq!(bad.hits(), 2, "skipped on the other gateway");
}

/// One budget handle's fate: settled with (tokens, USD), or dropped unsettled (`None`).
type Entry = Option<(u64, f64)>;

/// What happened to each call's budget handle.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<Vec<Entry>>>);

struct Hold {
    ledger: Ledger,
    settled: bool,
}

impl Settle for Hold {
    fn settle(mut self: Box<Self>, tokens: u64, cost_usd: f64) {
        self.settled = true;
        self.ledger.0.lock().unwrap().push(Some((tokens, cost_usd)));
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.settled {
            self.ledger.0.lock().unwrap().push(None);
        }
    }
}

impl Ledger {
    fn hold(&self) -> Option<Box<dyn Settle>> {
        Some(Box::new(Hold {
            ledger: self.clone(),
            settled: false,
        }))
    }

    fn take(&self) -> Vec<Entry> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn budgets_are_settled_with_actual_usage_or_given_back() {
    let mock = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let (gw, _) = gateway(
        json!({"p": provider("openai", &mock)}),
        json!({"m": {"deployments": [{"provider": "p", "model": "x",
                     "price": {"input_per_million": 1000.0, "output_per_million": 2000.0}}]}}),
    );
    let ledger = Ledger::default();
    // Complete: 11 prompt and 3 completion tokens.
    let req = chat(json!({"model": "m", "max_tokens": 50,
                          "messages": [{"role": "user", "content": "hello world"}]}));
    let reserved = gw.reservation(&req).unwrap();
    assert_eq!(reserved.tokens, 9 + 50);
    match gw
        .chat(&caller(), req.clone(), ledger.hold())
        .await
        .unwrap()
    {
        ChatOutcome::Complete(_) => {}
        ChatOutcome::Cached(_) => panic!("a cache hit"),
        ChatOutcome::Stream(_) => panic!("a stream"),
    }
    let settled = ledger.take();
    assert_eq!(settled.len(), 1);
    let (tokens, cost) = settled[0].unwrap();
    assert_eq!(tokens, 14);
    assert!(
        (cost - (11.0 * 1000.0 + 3.0 * 2000.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert!(cost < reserved.max_cost_usd);

    // Streamed: settled when the stream ends, not before.
    let mut stream_req = req.clone();
    stream_req.stream = Some(true);
    let ChatOutcome::Stream(mut stream) =
        gw.chat(&caller(), stream_req, ledger.hold()).await.unwrap()
    else {
        panic!("not a stream")
    };
    assert!(ledger.take().is_empty(), "nothing settled while streaming");
    let (_, err) = collect(&mut stream).await;
    assert!(err.is_none());
    assert_eq!(ledger.take().len(), 1);
    drop(stream);
    assert!(ledger.take().is_empty(), "settled once");

    // No provider served: the handle is dropped unsettled, giving the reservation back.
    mock.set(Behavior {
        failure: Some(Failure::Status(500)),
        ..Behavior::default()
    });
    assert!(gw.chat(&caller(), req, ledger.hold()).await.is_err());
    assert_eq!(ledger.take(), vec![None]);

    // Embeddings: reserved at their input estimate, settled with their input tokens.
    mock.set(Behavior::default());
    let emb: EmbeddingsRequest =
        serde_json::from_value(json!({"model": "m", "input": "hello world"})).unwrap();
    assert_eq!(gw.embeddings_reservation(&emb).unwrap().tokens, 3);
    gw.embeddings(&caller(), emb, ledger.hold()).await.unwrap();
    assert!(matches!(ledger.take()[..], [Some((t, _))] if t > 0));
}

#[tokio::test]
async fn weights_split_traffic() {
    let a = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let b = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let (gw, _) = gateway(
        json!({"a": provider("openai", &a), "b": provider("openai", &b)}),
        json!({"m": {"deployments": [{"provider": "a", "model": "x", "weight": 4},
                                     {"provider": "b", "model": "x", "weight": 1}]}}),
    );
    for _ in 0..200 {
        complete(&gw, hello()).await.unwrap();
    }
    assert_eq!(a.hits() + b.hits(), 200);
    assert!((130..=190).contains(&a.hits()), "a served {}", a.hits());
}

#[tokio::test]
async fn embeddings_openai_gemini_cohere() {
    let openai = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let gemini = MockProvider::start(ProviderKind::Gemini).await.unwrap();
    let anthropic = MockProvider::start(ProviderKind::Anthropic).await.unwrap();
    let cohere = MockProvider::start(ProviderKind::Cohere).await.unwrap();
    let (gw, recorder) = gateway(
        json!({"o": provider("openai", &openai), "g": provider("gemini", &gemini),
               "a": provider("anthropic", &anthropic), "c": provider("cohere", &cohere)}),
        json!({"emb": {"deployments": [{"provider": "o", "model": "text-embedding-3-small"}]},
               "gemb": {"deployments": [{"provider": "g", "model": "text-embedding-004"}]},
               "aemb": {"deployments": [{"provider": "a", "model": "claude"}]},
               "cemb": {"deployments": [{"provider": "c", "model": "embed-v4.0"}]}}),
    );
    let req: EmbeddingsRequest =
        serde_json::from_value(json!({"model": "emb", "input": ["a b", "c"]})).unwrap();
    let resp = gw.embeddings(&caller(), req, None).await.unwrap();
    assert_eq!(resp.data.len(), 2);
    assert_eq!(resp.data[0].embedding, json!([0.1, 0.2, 0.3]));
    assert_eq!(resp.usage.unwrap().prompt_tokens, 3, "words of the inputs");
    let rec = recorder.all().pop().unwrap();
    assert_eq!(rec.operation, Operation::Embeddings);
    assert!(!rec.estimated);

    let req: EmbeddingsRequest =
        serde_json::from_value(json!({"model": "gemb", "input": "hello there"})).unwrap();
    let resp = gw.embeddings(&caller(), req, None).await.unwrap();
    assert_eq!(resp.object, "list");
    assert_eq!(resp.model, "gemb");
    assert_eq!(resp.data[0].embedding, json!([0.5, 0.25]));
    assert_eq!(resp.usage.unwrap().prompt_tokens, 3);
    assert!(recorder.all().pop().unwrap().estimated);

    let req: EmbeddingsRequest =
        serde_json::from_value(json!({"model": "cemb", "input": ["x", "y"]})).unwrap();
    let resp = gw.embeddings(&caller(), req, None).await.unwrap();
    assert_eq!(resp.data[1].embedding, json!([0.75]));
    assert_eq!(resp.usage.unwrap().prompt_tokens, 6);
    assert_eq!(cohere.received()[0].body["texts"], json!(["x", "y"]));

    let req: EmbeddingsRequest =
        serde_json::from_value(json!({"model": "aemb", "input": "x"})).unwrap();
    let err = gw.embeddings(&caller(), req, None).await.unwrap_err();
    assert_eq!(err.status.as_u16(), 400);
    assert!(
        err.detail
            .message
            .contains("anthropic does not support embeddings")
    );
    assert_eq!(anthropic.hits(), 0);
}

#[tokio::test]
async fn messages_api_is_served_by_gemini() {
    let gemini = MockProvider::start(ProviderKind::Gemini).await.unwrap();
    let (gw, _) = gateway(
        json!({"g": provider("gemini", &gemini)}),
        json!({"claude-like": {"deployments": [{"provider": "g", "model": "gemini-2.5-flash"}]}}),
    );
    let inbound = json!({"model": "claude-like", "max_tokens": 100, "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]});
    let req = to_chat_request(serde_json::from_value(inbound.clone()).unwrap());
    let resp = complete(&gw, req).await.unwrap();
    let msg = serde_json::to_value(to_messages_response(resp)).unwrap();
    assert_eq!(msg["type"], "message");
    assert_eq!(
        msg["content"],
        json!([{"type": "text", "text": "echo: hi there"}])
    );
    assert_eq!(msg["stop_reason"], "end_turn");
    assert_eq!(msg["usage"]["output_tokens"], 3);

    let mut streamed = inbound;
    streamed["stream"] = json!(true);
    let req = to_chat_request(serde_json::from_value(streamed).unwrap());
    let mut stream = open(&gw, req).await.unwrap();
    let events = messages_events(&mut stream).await;
    let names: Vec<_> = events.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            v["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "echo: hi there");
    let delta: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(
        delta["usage"],
        json!({"output_tokens": 3, "input_tokens": 11})
    );
}

#[tokio::test]
async fn a_cache_hit_calls_no_provider_and_is_reported_as_cached() {
    let mock = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let (gw, recorder) = gateway(
        json!({"o": provider("openai", &mock)}),
        json!({"m": {"deployments": [{"provider": "o", "model": "gpt-4o-mini"}],
                     "cache": {"ttl_s": 60}}}),
    );
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let first = gw.chat(&caller(), chat(body.clone()), None).await.unwrap();
    assert!(matches!(first, ChatOutcome::Complete(_)), "a miss first");
    let Ok(ChatOutcome::Cached(hit)) = gw.chat(&caller(), chat(body), None).await else {
        panic!("the second identical request is a hit")
    };
    assert_eq!(hit.choices[0].message.content.as_deref(), Some("echo: hi"));
    assert_eq!(mock.hits(), 1, "the provider was called once");
    let records = recorder.all();
    assert_eq!(records.len(), 2);
    assert!(!records[0].cached && records[0].usage.total_tokens > 0);
    let cached = &records[1];
    assert!(cached.cached && cached.completed);
    assert_eq!((cached.usage.total_tokens, cached.cost_usd), (0, 0.0));
    assert_eq!(cached.model, "m");
}

/// A chat with `images` image parts of `url` and the given output limit.
fn with_images(model: &str, url: &str, images: usize, detail: Option<&str>) -> ChatRequest {
    let mut parts = vec![json!({"type": "text", "text": "what is in these?"})];
    let mut image = json!({"type": "image_url", "image_url": {"url": url}});
    if let Some(d) = detail {
        image["image_url"]["detail"] = json!(d);
    }
    parts.extend(std::iter::repeat_n(image, images));
    chat(json!({"model": model, "max_tokens": 10,
                "messages": [{"role": "user", "content": parts}]}))
}

#[tokio::test]
async fn reservations_count_images_choices_and_embedding_inputs() {
    let mock = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let (gw, _) = gateway(
        json!({"o": provider("openai", &mock), "a": provider("anthropic", &mock),
               "g": provider("gemini", &mock)}),
        json!({"gpt": {"deployments": [{"provider": "o", "model": "gpt-4o"}]},
               "mini": {"deployments": [{"provider": "o", "model": "gpt-4o-mini"}]},
               "claude": {"deployments": [{"provider": "a", "model": "claude-sonnet-4"}]},
               "gem": {"deployments": [{"provider": "g", "model": "gemini-2.5-flash"}]},
               "both": {"deployments": [{"provider": "o", "model": "gpt-4o"},
                                        {"provider": "a", "model": "claude-sonnet-4", "priority": 1}]}}),
    );
    let text_only = gw
        .reservation(&with_images("gpt", "", 0, None))
        .unwrap()
        .tokens;
    let images = |model: &str, url: &str, n: usize, detail: Option<&str>| {
        gw.reservation(&with_images(model, url, n, detail))
            .unwrap()
            .tokens
            - text_only
    };
    // OpenAI's tiles: 85 a low-detail image; in high detail 85 + 170 per 512 px tile of the
    // image scaled into 2048 px and its short side to 768 px.
    let tiny = png_data_url(1, 1);
    assert_eq!(images("gpt", &tiny, 1000, Some("low")), 1000 * 85);
    assert_eq!(images("gpt", &tiny, 1, None), 85 + 170);
    assert_eq!(
        images("gpt", &png_data_url(1024, 1024), 1, Some("high")),
        765
    );
    assert_eq!(images("gpt", &png_data_url(2048, 4096), 1, None), 1105);
    // gpt-4o-mini bills an image as 33 times as many tokens (the same price as gpt-4o's).
    assert_eq!(
        images("mini", &png_data_url(1024, 1024), 1, None),
        2833 + 4 * 5667
    );
    // An image of unknown size is counted at the most it can cost.
    assert_eq!(
        images("gpt", "https://example.com/cat.png", 1, None),
        85 + 8 * 170
    );
    assert_eq!(
        images("gpt", "data:image/png;base64,!!!", 1, None),
        85 + 8 * 170
    );
    // Anthropic: width × height / 750, after scaling into 1568 px and 1.15 megapixels.
    assert_eq!(images("claude", &png_data_url(1000, 750), 1, None), 1000);
    assert_eq!(images("claude", "https://example.com/x.jpg", 1, None), 1600);
    // Gemini: 258 up to 384 px a side, else 258 per 768 px tile.
    assert_eq!(images("gem", &png_data_url(300, 300), 1, None), 258);
    assert_eq!(images("gem", &png_data_url(1000, 750), 1, None), 2 * 258);
    // An alias reserves what its dearest deployment would count.
    assert_eq!(images("both", &png_data_url(1000, 750), 1, None), 1000);

    // Audio and file parts are not taken at all (400 naming the field), so none can ride
    // along uncounted.
    for part in [
        json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
        json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA"}}),
    ] {
        let body = json!({"model": "gpt", "messages": [{"role": "user", "content": [part]}]});
        assert!(
            serde_json::from_value::<ChatRequest>(body).is_err(),
            "{part}"
        );
    }

    // `n` choices each may use the whole output limit.
    let n = chat(json!({"model": "gpt", "n": 50, "max_tokens": 100,
                        "messages": [{"role": "user", "content": "hi"}]}));
    let prompt = gw.reservation(&n).unwrap().tokens - 50 * 100;
    assert!(prompt > 0 && prompt < 20, "{prompt}");

    // Embeddings of token ids reserve one token an id; other shapes are refused.
    let emb = |input: Value| {
        serde_json::from_value::<EmbeddingsRequest>(json!({"model": "gpt", "input": input}))
    };
    let ids = emb(json!([[1, 2, 3], [4, 5]])).unwrap();
    assert_eq!(gw.embeddings_reservation(&ids).unwrap().tokens, 5);
    let one = emb(json!([7, 8, 9, 10])).unwrap();
    assert_eq!(gw.embeddings_reservation(&one).unwrap().tokens, 4);
    for bad in [json!({"a": 1}), json!([[[1]]]), json!([1, "a"]), json!(3)] {
        assert!(
            emb(bad.clone()).is_err(),
            "{bad} is not an embeddings input"
        );
    }
}

/// Two OpenAI deployments: `bad` (priority 0, timeout `timeout_ms`, 300 ms between events)
/// stalling on keep-alive comments after `after_events` events, and a healthy fallback.
async fn stall_then_fallback(
    after_events: usize,
    timeout_ms: u64,
) -> (MockProvider, MockProvider, Gateway, Arc<Recorder>) {
    let bad = MockProvider::start(ProviderKind::Openai).await.unwrap();
    bad.set(Behavior {
        failure: Some(Failure::Stall { after_events }),
        ..Behavior::default()
    });
    let good = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let mut bad_entry = provider("openai", &bad);
    bad_entry["timeout_ms"] = json!(timeout_ms);
    bad_entry["stream_idle_timeout_ms"] = json!(300);
    let (gw, recorder) = gateway(
        json!({"bad": bad_entry, "good": provider("openai", &good)}),
        json!({"m": {"deployments": [{"provider": "bad", "model": "a"},
                                     {"provider": "good", "model": "b", "priority": 1}]}}),
    );
    (bad, good, gw, recorder)
}

#[tokio::test]
async fn a_stream_of_comments_only_times_out_and_falls_back() {
    let (bad, good, gw, _) = stall_then_fallback(0, 500).await;
    let started = std::time::Instant::now();
    let opened = tokio::time::timeout(Duration::from_secs(10), open(&gw, streamed_hello())).await;
    let elapsed = started.elapsed();
    let mut stream = opened
        .expect("the comment-only stream must time out, not hang")
        .unwrap();
    let (chunks, err) = collect(&mut stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text(&chunks), "echo: hi", "the fallback answered");
    assert_eq!(
        (bad.hits(), good.hits()),
        (1, 1),
        "not retried: it fell back"
    );
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(900),
        "fallback after {elapsed:?} (timeout 500 ms)"
    );
}

#[tokio::test]
async fn a_stream_stalled_after_its_first_events_ends_with_an_error() {
    let (_bad, good, gw, recorder) = stall_then_fallback(2, 2000).await;
    let mut stream = open(&gw, streamed_hello()).await.unwrap();
    let started = std::time::Instant::now();
    let collected = tokio::time::timeout(Duration::from_secs(10), collect(&mut stream)).await;
    let (chunks, err) = collected.expect("a stalled stream must end, not hang");
    let elapsed = started.elapsed();
    assert!(!chunks.is_empty(), "the first events were passed on");
    let err = err.expect("an error ends the stalled stream");
    assert_eq!(err.status.as_u16(), 504, "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1500),
        "ended after {elapsed:?} (idle timeout 300 ms)"
    );
    assert_eq!(good.hits(), 0, "no fallback after the first chunk");
    drop(stream);
    assert!(!recorder.all().pop().unwrap().completed);
}

#[tokio::test]
async fn a_stream_cut_off_before_its_end_ends_with_an_error() {
    // Role, "echo:", " hi": no finish_reason, no [DONE].
    let truncated = Behavior {
        failure: Some(Failure::Truncate { after_events: 3 }),
        ..Behavior::default()
    };
    let (mock, gw, recorder) = one_deployment(ProviderKind::Openai, "openai", truncated).await;
    let mut stream = open(&gw, streamed_hello()).await.unwrap();
    let (chunks, err) = collect(&mut stream).await;
    assert_eq!(text(&chunks), "echo: hi");
    let err = err.expect("a truncated stream is not a complete answer");
    assert!(
        err.detail.message.contains("before its end"),
        "{}",
        err.detail.message
    );
    drop(stream);
    assert!(!recorder.all().pop().unwrap().completed);
    // On /v1/messages the Anthropic events end with an error, not end_turn and message_stop.
    let mut stream = open(&gw, streamed_hello()).await.unwrap();
    let events = messages_events(&mut stream).await;
    let names: Vec<_> = events.iter().filter_map(|e| e.event.clone()).collect();
    assert_eq!(names.last().map(String::as_str), Some("error"), "{names:?}");
    assert!(!names.iter().any(|n| n == "message_stop"), "{names:?}");

    // With its finish_reason but without [DONE] the answer is whole.
    mock.set(Behavior {
        failure: Some(Failure::Truncate { after_events: 4 }),
        ..Behavior::default()
    });
    let mut stream = open(&gw, streamed_hello()).await.unwrap();
    let (chunks, err) = collect(&mut stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(finish(&chunks), Some(FinishReason::Stop));
}

/// A mock of `kind` behaving as `behavior`, serving model `m` as its one deployment (model
/// `x`, priced 0.001 USD a token in and out).
async fn one_deployment(
    kind: ProviderKind,
    kind_name: &str,
    behavior: Behavior,
) -> (MockProvider, Gateway, Arc<Recorder>) {
    let mock = MockProvider::start(kind).await.unwrap();
    mock.set(behavior);
    let (gw, recorder) = gateway(
        json!({"p": provider(kind_name, &mock)}),
        json!({"m": {"deployments": [{"provider": "p", "model": "x",
                     "price": {"input_per_million": 1000.0, "output_per_million": 1000.0}}]}}),
    );
    (mock, gw, recorder)
}

#[tokio::test]
async fn a_complete_call_whose_client_left_is_still_counted() {
    let slow = Behavior {
        latency: Duration::from_millis(400),
        ..Behavior::default()
    };
    let (mock, gw, recorder) = one_deployment(ProviderKind::Openai, "openai", slow).await;
    let gw = Arc::new(gw);
    let ledger = Ledger::default();
    let call = {
        let (gw, hold) = (gw.clone(), ledger.hold());
        tokio::spawn(async move { gw.chat(&caller(), hello(), hold).await.map(|_| ()) })
    };
    // The client goes away while the provider works: the request's future is dropped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    let settled = async {
        loop {
            if let [entry] = ledger.take()[..] {
                return entry;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let entry = tokio::time::timeout(Duration::from_secs(5), settled)
        .await
        .expect("the call is settled although its client left");
    assert_eq!(
        entry,
        Some((13, 0.013)),
        "settled with the provider's usage"
    );
    let rec = recorder.all().pop().expect("the call is recorded");
    assert!(rec.completed && !rec.estimated, "{rec:?}");
    assert_eq!(rec.usage.total_tokens, 13);
    assert_eq!(mock.hits(), 1);
}

#[tokio::test]
async fn a_providers_retry_after_is_passed_on_and_cools_the_deployment_down() {
    let limited = Behavior {
        failure: Some(Failure::Status(429)),
        retry_after: Some(7),
        ..Behavior::default()
    };
    let (_mock, gw, recorder) = one_deployment(ProviderKind::Anthropic, "anthropic", limited).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let err = complete(&gw, hello()).await.unwrap_err();
    assert_eq!((err.status.as_u16(), err.retry_after_s), (429, Some(7)));
    let Err(err) = open(&gw, streamed_hello()).await else {
        panic!("a stream from a provider answering 429")
    };
    assert_eq!((err.status.as_u16(), err.retry_after_s), (429, Some(7)));
    let cooldowns = recorder.1.lock().unwrap().clone();
    let until = cooldowns
        .first()
        .expect("the deployment is cooled down")
        .until_ms;
    assert!(
        (now + 6_000..now + 9_000).contains(&until),
        "cooled down for the provider's 7 s: {until} - {now}"
    );
}

#[tokio::test]
async fn an_answer_without_choices_falls_back() {
    let bad = MockProvider::start(ProviderKind::Openai).await.unwrap();
    bad.set(Behavior {
        empty_choices: true,
        ..Behavior::default()
    });
    let good = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let (gw, _) = gateway(
        json!({"bad": provider("openai", &bad), "good": provider("openai", &good)}),
        json!({"m": {"deployments": [{"provider": "bad", "model": "a"},
                                     {"provider": "good", "model": "b", "priority": 1}]}}),
    );
    let resp = complete(&gw, hello()).await.unwrap();
    assert_eq!(resp.choices[0].message.content.as_deref(), Some("echo: hi"));
    assert_eq!((bad.hits(), good.hits()), (1, 1));
}

#[tokio::test]
async fn a_json_answer_the_gateway_rejected_is_not_cached() {
    use raftgate_ai::api::Access;
    let mock = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let config: GatewayConfig = serde_json::from_value(json!({
        "providers": {"o": provider("openai", &mock)},
        "models": {"m": {"deployments": [{"provider": "o", "model": "gpt-4o-mini"}],
                         "cache": {"ttl_s": 60}}},
        "prompts": {"extract": {"path": "/apis/extract", "model": "m", "response_format": "json",
                     "messages": [{"role": "user", "content": "City in: {{s}}"}]}}
    }))
    .unwrap();
    let gw = Gateway::new(&config, Arc::new(Recorder::default())).unwrap();
    let access = Access {
        caller: caller(),
        allowed: &|_: &str| Ok(()),
        admission: None,
    };
    let api = gw.prompt("/apis/extract").expect("the prompt is served");
    let body = br#"{"s": "I live in Paris"}"#;
    mock.set(Behavior {
        ignore_json_mode: true,
        ..Behavior::default()
    });
    let refused = api.serve(&gw, &access, body).await;
    assert_eq!(refused.status().as_u16(), 502);
    // The advised retry reaches the provider, which now answers JSON.
    mock.set(Behavior::default());
    let retried = api.serve(&gw, &access, body).await;
    assert_eq!(retried.status().as_u16(), 200);
    assert_eq!(retried.headers()["x-cache"], "MISS");
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn changing_a_provider_clears_the_cache_of_its_models() {
    let first = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let second = MockProvider::start(ProviderKind::Openai).await.unwrap();
    let config = |mock: &MockProvider| -> GatewayConfig {
        serde_json::from_value(json!({
            "providers": {"o": provider("openai", mock)},
            "models": {"m": {"deployments": [{"provider": "o", "model": "gpt-4o-mini"}],
                             "cache": {"ttl_s": 60}}}
        }))
        .unwrap()
    };
    let gw = Gateway::new(&config(&first), Arc::new(Recorder::default())).unwrap();
    assert!(matches!(
        gw.chat(&caller(), hello(), None).await.unwrap(),
        ChatOutcome::Complete(_)
    ));
    assert!(matches!(
        gw.chat(&caller(), hello(), None).await.unwrap(),
        ChatOutcome::Cached(_)
    ));
    // The provider's base_url changed: its models' answers are fetched again.
    gw.update(&config(&second)).unwrap();
    assert!(matches!(
        gw.chat(&caller(), hello(), None).await.unwrap(),
        ChatOutcome::Complete(_)
    ));
    assert_eq!((first.hits(), second.hits()), (1, 1));
    // Its credential removed (a key this node cannot open): likewise.
    let mut keyless = config(&second);
    keyless.providers.get_mut("o").unwrap().api_key = None;
    gw.update(&keyless).unwrap();
    assert!(
        gw.chat(&caller(), hello(), None).await.is_err(),
        "not served from the cache"
    );
}

#[tokio::test]
async fn answers_beyond_the_nodes_answer_memory_are_refused() {
    // 2 MiB answers arriving in two pieces 300 ms apart; the node may hold 5 MiB: one answer
    // read (2.5 MiB at most) and parsed (twice its size), not two.
    let huge = Behavior {
        answer_bytes: 2 << 20,
        chunk_delay: Duration::from_millis(300),
        ..Behavior::default()
    };
    let (mock, gw, _) = one_deployment(ProviderKind::Openai, "openai", huge).await;
    let gw = gw.with_answer_memory(5 << 20);
    let (a, b) = tokio::join!(complete(&gw, hello()), complete(&gw, hello()));
    let (ok, refused) = match (a, b) {
        (Ok(ok), Err(e)) | (Err(e), Ok(ok)) => (ok, e),
        other => panic!("one answer fits, the other does not: {other:?}"),
    };
    assert!(ok.choices[0].message.content.as_ref().unwrap().len() >= 2 << 20);
    assert_eq!(refused.status.as_u16(), 503, "{refused:?}");
    assert!(refused.retry_after_s.is_some());
    assert!(
        refused.detail.message.contains("memory"),
        "{}",
        refused.detail.message
    );
    assert_eq!(
        mock.hits(),
        2,
        "no fallback or retry for a node-local limit"
    );
    // Once the first answer is done, its memory is free again.
    complete(&gw, hello()).await.unwrap();
}
