//! Mock LLM providers on loopback, speaking the providers' real wire formats (feature `mock`).
//!
//! Paid providers cannot be called from tests or benchmarks, so these servers stand in for
//! them: OpenAI (also Azure's deployment URLs), Anthropic, Gemini and Cohere, complete and streamed, with
//! usage blocks, tool calls and error bodies shaped as the providers document them. They check
//! what the gateway sends (paths, credential headers, required fields, role alternation) and
//! answer a provider-style 400/401 when it is wrong, so a translation bug fails a test.
//!
//! Answers are deterministic: the reply is `echo: <last user text>`; when the request offers
//! tools and the last message is not a tool result, the model calls the first tool with
//! `{"city":"Paris"}`; after a tool result it answers `tool said: <result>`. Asked for JSON
//! (`response_format` `json_object` or `json_schema`), the OpenAI mock wraps its text reply as
//! `{"answer": "<reply>"}`. Usage is
//! `prompt = 10 + messages` (the OpenAI mock adds 85 per image, as OpenAI bills a low-detail
//! image), `completion = words of the reply` (1 for a tool call); the OpenAI mock answers `n`
//! choices and bills each, and bills embeddings by words of text or by token ids. A
//! [`Behavior`] adds latency, delays between chunks, or failures: an error status with the
//! provider's error body (and `Retry-After`), a dropped connection, an error in mid-stream, a
//! stream cut off without its end or stalled on keep-alive comments; or hostile answers: no
//! choices, text where JSON was asked, every choice as long as `max_tokens` allows, or a huge
//! answer sent slowly.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::providers::ProviderKind;
use crate::sse;

/// The credential every mock expects.
pub const MOCK_KEY: &str = "mock-key";

/// How a mock fails.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Answer this status with the provider's error body.
    Status(u16),
    /// Close the connection without answering.
    Disconnect,
    /// Stream this many of the provider's events, then its in-stream error.
    MidStream {
        /// Events sent before the error.
        after_events: usize,
    },
    /// Stream this many of the provider's events, then close the stream without its end.
    Truncate {
        /// Events sent before the stream is closed.
        after_events: usize,
    },
    /// Stream this many of the provider's events, then only `: ping` comments, every 50 ms,
    /// until the client goes away (0: a stream of comments only).
    Stall {
        /// Events sent before the stall.
        after_events: usize,
    },
}

/// How a mock behaves; change it at any time with [`MockProvider::set`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behavior {
    /// The failure, if any.
    pub failure: Option<Failure>,
    /// Fail only the next this-many requests (all while `None`).
    pub times: Option<u32>,
    /// Wait before answering.
    pub latency: Duration,
    /// Wait between streamed chunks (and between the pieces of a padded complete answer).
    pub chunk_delay: Duration,
    /// Sent as `Retry-After` (seconds) with error statuses.
    pub retry_after: Option<u64>,
    /// OpenAI: a complete answer with `"choices": []`.
    pub empty_choices: bool,
    /// OpenAI: answer plain text even when JSON was asked for.
    pub ignore_json_mode: bool,
    /// OpenAI: every choice is as long as `max_tokens` allows (one word a token), as a verbose
    /// model's is.
    pub fill_max_tokens: bool,
    /// OpenAI: pad a complete answer's text to about this many bytes, sent in 1 MiB pieces
    /// (with `chunk_delay` between them).
    pub answer_bytes: usize,
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub path: String,
    /// Headers.
    pub headers: HeaderMap,
    /// The JSON body.
    pub body: Value,
}

struct State {
    kind: ProviderKind,
    behavior: ArcSwap<Behavior>,
    failures_left: AtomicU32,
    hits: AtomicU64,
    received: Mutex<Vec<Received>>,
}

/// Requests kept for inspection (the oldest are dropped, so benchmarks do not grow memory).
const KEEP: usize = 64;

/// A running mock provider; stops when dropped.
pub struct MockProvider {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockProvider {
    /// Starts a mock of `kind` on an ephemeral loopback port (Azure is served by the OpenAI
    /// mock, which also answers deployment URLs).
    pub async fn start(kind: ProviderKind) -> std::io::Result<MockProvider> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            kind,
            behavior: ArcSwap::from_pointee(Behavior::default()),
            failures_left: AtomicU32::new(0),
            hits: AtomicU64::new(0),
            received: Mutex::new(Vec::new()),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Streamed events are small writes: without this, Nagle's algorithm and the
                // client's delayed ACK hold each one back for up to 40 ms.
                let _ = stream.set_nodelay(true);
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { state.handle(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(MockProvider { addr, state, task })
    }

    /// The base URL to configure for this mock's kind.
    pub fn base_url(&self) -> String {
        match self.state.kind {
            ProviderKind::Openai => format!("http://{}/v1", self.addr),
            _ => format!("http://{}", self.addr),
        }
    }

    /// Changes the behavior.
    pub fn set(&self, behavior: Behavior) {
        self.state
            .failures_left
            .store(behavior.times.unwrap_or(0), Ordering::SeqCst);
        self.state.behavior.store(Arc::new(behavior));
    }

    /// Requests answered so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// The last requests received, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

/// A PNG of `width` × `height` pixels as a `data:` URL: only its signature and header chunk,
/// which carry its size (what the gateway reads to count an image's tokens).
pub fn png_data_url(width: u32, height: u32) -> String {
    use base64::Engine;
    let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("data:image/png;base64,{data}")
}

/// A response body fed from a channel, so chunks go out as they are produced.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

type MockResponse = Response<ChannelBody>;

fn respond(status: StatusCode, content_type: &str, body: Bytes) -> MockResponse {
    let (tx, rx) = mpsc::channel(1);
    // The capacity is 1 and nothing was sent yet, so this cannot fail.
    let _ = tx.try_send(body);
    let mut resp = Response::new(ChannelBody(rx));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn json_response(status: StatusCode, body: &Value) -> MockResponse {
    respond(status, "application/json", Bytes::from(body.to_string()))
}

/// A 200 JSON answer sent in 1 MiB pieces, `delay` apart, as a huge answer arrives.
fn in_pieces(body: Vec<u8>, delay: Duration) -> MockResponse {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for piece in body.chunks(1 << 20) {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(ChannelBody(rx));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// What the conversation asks of the mock model.
struct Turn {
    reply: String,
    call: Option<String>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Turn {
    fn new(
        last_user: String,
        tool: Option<String>,
        tool_result: Option<String>,
        msgs: usize,
    ) -> Turn {
        let (reply, call) = match (tool, tool_result) {
            (_, Some(result)) => (format!("tool said: {result}"), None),
            (Some(tool), None) => (String::new(), Some(tool)),
            (None, None) => (format!("echo: {last_user}"), None),
        };
        let completion_tokens = if call.is_some() {
            1
        } else {
            reply.split_whitespace().count() as u64
        };
        Turn {
            reply,
            call,
            prompt_tokens: 10 + msgs as u64,
            completion_tokens,
        }
    }

    fn words(&self) -> Vec<String> {
        let mut words: Vec<String> = Vec::new();
        for (i, w) in self.reply.split(' ').enumerate() {
            words.push(if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            });
        }
        words
    }
}

impl Turn {
    /// The text reply as a JSON object `{"answer": <reply>}`, as a model in JSON mode answers.
    fn as_json(&mut self) {
        if self.call.is_none() {
            self.reply = json!({ "answer": self.reply }).to_string();
            self.completion_tokens = self.reply.split_whitespace().count() as u64;
        }
    }

    /// `tool` when the model calls a tool, else `text` (finish reasons and the like).
    fn pick<'a>(&self, tool: &'a str, text: &'a str) -> &'a str {
        if self.call.is_some() { tool } else { text }
    }
}

/// The text of the last user message of an OpenAI-, Anthropic- or Cohere-style history.
fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default()
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

impl State {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<MockResponse, String> {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let headers = req.headers().clone();
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        self.hits.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut received) = self.received.lock() {
            if received.len() >= KEEP {
                received.remove(0);
            }
            received.push(Received {
                path: path.clone(),
                headers: headers.clone(),
                body: body.clone(),
            });
        }
        let behavior = self.behavior.load_full();
        if !behavior.latency.is_zero() {
            tokio::time::sleep(behavior.latency).await;
        }
        let failure = behavior.failure.clone().filter(|_| match behavior.times {
            None => true,
            Some(_) => self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok(),
        });
        match failure {
            Some(Failure::Disconnect) => return Err("mock disconnect".into()),
            Some(Failure::Status(status)) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut resp = self.error(status, "mock failure");
                if let Some(seconds) = behavior.retry_after {
                    resp.headers_mut()
                        .insert(http::header::RETRY_AFTER, seconds.into());
                }
                return Ok(resp);
            }
            _ => {}
        }
        let mid_stream = match failure {
            Some(
                f @ (Failure::MidStream { .. } | Failure::Truncate { .. } | Failure::Stall { .. }),
            ) => Some(f),
            _ => None,
        };
        let answer = match self.kind {
            ProviderKind::Openai | ProviderKind::Azure => {
                self.openai(&path, &headers, &body, &behavior, mid_stream)
            }
            ProviderKind::Anthropic => {
                self.anthropic(&path, &headers, &body, &behavior, mid_stream)
            }
            ProviderKind::Gemini => self.gemini(&path, &headers, &body, &behavior, mid_stream),
            ProviderKind::Cohere => self.cohere(&path, &headers, &body, &behavior, mid_stream),
        };
        Ok(answer.unwrap_or_else(|(status, message)| self.error(status, &message)))
    }

    /// The provider's error body for `status`.
    fn error(&self, status: StatusCode, message: &str) -> MockResponse {
        let body = match self.kind {
            ProviderKind::Openai | ProviderKind::Azure => {
                let kind = match status.as_u16() {
                    400 => "invalid_request_error",
                    401 => "authentication_error",
                    429 => "rate_limit_error",
                    _ => "server_error",
                };
                json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
            }
            ProviderKind::Anthropic => {
                let kind = match status.as_u16() {
                    400 => "invalid_request_error",
                    401 => "authentication_error",
                    404 => "not_found_error",
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    _ => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
            ProviderKind::Gemini => {
                let kind = match status.as_u16() {
                    400 => "INVALID_ARGUMENT",
                    401 | 403 => "PERMISSION_DENIED",
                    404 => "NOT_FOUND",
                    429 => "RESOURCE_EXHAUSTED",
                    503 => "UNAVAILABLE",
                    _ => "INTERNAL",
                };
                json!({"error": {"code": status.as_u16(), "message": message, "status": kind}})
            }
            ProviderKind::Cohere => json!({"id": "mock-error", "message": message}),
        };
        json_response(status, &body)
    }

    fn openai(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &Value,
        behavior: &Behavior,
        mid_stream: Option<Failure>,
    ) -> Result<MockResponse, (StatusCode, String)> {
        let azure = path.starts_with("/openai/deployments/");
        let authorized = if azure {
            headers.get("api-key").is_some_and(|v| v == MOCK_KEY) && path.contains("api-version=")
        } else {
            headers
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == format!("Bearer {MOCK_KEY}").as_bytes())
        };
        if !authorized {
            return Err((
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.".into(),
            ));
        }
        let operation = path.split('?').next().unwrap_or_default();
        let model = body["model"]
            .as_str()
            .unwrap_or("azure-deployment")
            .to_string();
        if operation.ends_with("/embeddings") {
            // A string, a list of strings, a list of token ids or a list of such lists.
            let inputs: Vec<Value> = match &body["input"] {
                Value::Array(items) if !items.iter().all(Value::is_number) => items.clone(),
                Value::Null => return Err((StatusCode::BAD_REQUEST, "'input' is required".into())),
                one => vec![one.clone()],
            };
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(i, _)| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}))
                .collect();
            // Billed by words of text (one at least) or by token ids.
            let n: usize = inputs
                .iter()
                .map(|input| match input {
                    Value::String(s) => s.split_whitespace().count().max(1),
                    Value::Array(ids) => ids.len(),
                    _ => 1,
                })
                .sum();
            return Ok(json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": data, "model": model,
                        "usage": {"prompt_tokens": n, "total_tokens": n}}),
            ));
        }
        if !operation.ends_with("/chat/completions") {
            return Err((StatusCode::NOT_FOUND, format!("Unknown path {path}")));
        }
        let messages = body["messages"]
            .as_array()
            .filter(|m| !m.is_empty())
            .ok_or((
                StatusCode::BAD_REQUEST,
                "'messages' must be a non-empty array".to_string(),
            ))?;
        let last = messages.last().cloned().unwrap_or_default();
        let tool = body["tools"][0]["function"]["name"]
            .as_str()
            .map(str::to_string);
        let tool_result = (last["role"] == "tool").then(|| text_of(&last["content"]));
        let last_user = last_user_text(messages);
        let mut turn = Turn::new(last_user, tool, tool_result, messages.len());
        let images = messages
            .iter()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .filter(|p| p["type"] == "image_url")
            .count() as u64;
        turn.prompt_tokens += 85 * images;
        let max_tokens = body["max_completion_tokens"]
            .as_u64()
            .or(body["max_tokens"].as_u64());
        if let (true, Some(limit)) = (behavior.fill_max_tokens, max_tokens) {
            turn.reply = vec!["word"; limit as usize].join(" ");
            turn.completion_tokens = limit;
        } else if !behavior.ignore_json_mode
            && matches!(
                body["response_format"]["type"].as_str(),
                Some("json_object" | "json_schema")
            )
        {
            turn.as_json();
        }
        if behavior.answer_bytes > turn.reply.len() {
            let pad = behavior.answer_bytes - turn.reply.len();
            turn.reply.push_str(&" ".repeat(pad));
        }
        let choices = body["n"].as_u64().unwrap_or(1).max(1);
        let completion = turn.completion_tokens * choices;
        let usage = json!({"prompt_tokens": turn.prompt_tokens, "completion_tokens": completion,
                           "total_tokens": turn.prompt_tokens + completion});
        let finish = turn.pick("tool_calls", "stop");
        if body["stream"] != json!(true) {
            let message = match &turn.call {
                Some(name) => {
                    json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": "call_mock1", "type": "function", "function": {"name": name, "arguments": "{\"city\":\"Paris\"}"}}]})
                }
                None => json!({"role": "assistant", "content": turn.reply, "refusal": null}),
            };
            let choices: Vec<Value> = if behavior.empty_choices {
                Vec::new()
            } else {
                (0..choices)
                    .map(|index| json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish}))
                    .collect()
            };
            let answer = json!({"id": "chatcmpl-mock1", "object": "chat.completion", "created": 1_700_000_000u64,
                    "model": model, "system_fingerprint": "fp_mock", "choices": choices, "usage": usage});
            if behavior.answer_bytes > 0 {
                return Ok(in_pieces(
                    answer.to_string().into_bytes(),
                    behavior.chunk_delay,
                ));
            }
            return Ok(json_response(StatusCode::OK, &answer));
        }
        let include_usage = body["stream_options"]["include_usage"] == json!(true);
        let chunk = |delta: Value, finish: Value| {
            let mut c = json!({"id": "chatcmpl-mock1", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                "model": model, "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
            if include_usage {
                c["usage"] = Value::Null;
            }
            c
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        )];
        match &turn.call {
            Some(name) => {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_mock1", "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                ));
                for piece in ["{\"city\":", "\"Paris\"}"] {
                    events.push(chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ));
                }
            }
            None => {
                for w in turn.words() {
                    events.push(chunk(json!({"content": w}), Value::Null));
                }
            }
        }
        events.push(chunk(json!({}), json!(finish)));
        if include_usage {
            events.push(json!({"id": "chatcmpl-mock1", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                "model": model, "system_fingerprint": "fp_mock", "choices": [], "usage": usage}));
        }
        let mut out: Vec<Bytes> = events
            .iter()
            .map(|e| sse::encode(None, &e.to_string()))
            .collect();
        out.push(sse::done());
        let error = sse::encode(
            None,
            &json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}}).to_string(),
        );
        Ok(stream(out, behavior, mid_stream.map(|f| (f, error))))
    }

    fn anthropic(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &Value,
        behavior: &Behavior,
        mid_stream: Option<Failure>,
    ) -> Result<MockResponse, (StatusCode, String)> {
        if path != "/v1/messages" {
            return Err((StatusCode::NOT_FOUND, format!("Unknown path {path}")));
        }
        if headers.get("x-api-key").is_none_or(|v| v != MOCK_KEY) {
            return Err((StatusCode::UNAUTHORIZED, "invalid x-api-key".into()));
        }
        if headers.get("anthropic-version").is_none() {
            return Err((
                StatusCode::BAD_REQUEST,
                "anthropic-version: header is required".into(),
            ));
        }
        if !body["max_tokens"].is_u64() {
            return Err((StatusCode::BAD_REQUEST, "max_tokens: Field required".into()));
        }
        let messages = body["messages"]
            .as_array()
            .filter(|m| !m.is_empty())
            .ok_or((
                StatusCode::BAD_REQUEST,
                "messages: Field required".to_string(),
            ))?;
        for (i, pair) in messages.windows(2).enumerate() {
            if pair[0]["role"] == pair[1]["role"] {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!(
                        "messages.{}: roles must alternate between \"user\" and \"assistant\"",
                        i + 1
                    ),
                ));
            }
        }
        if let Some(bad) = messages
            .iter()
            .find(|m| m["role"] != "user" && m["role"] != "assistant")
        {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("messages: Unexpected role {}", bad["role"]),
            ));
        }
        let last = messages.last().cloned().unwrap_or_default();
        let tool_result = last["content"].as_array().and_then(|blocks| {
            blocks
                .iter()
                .find(|b| b["type"] == "tool_result")
                .map(|b| text_of(&b["content"]))
        });
        let last_user = last_user_text(messages);
        let tool = body["tools"][0]["name"].as_str().map(str::to_string);
        let turn = Turn::new(last_user, tool, tool_result, messages.len());
        let model = body["model"].as_str().unwrap_or_default().to_string();
        let stop = turn.pick("tool_use", "end_turn");
        if body["stream"] != json!(true) {
            let content = match &turn.call {
                Some(name) => {
                    json!([{"type": "tool_use", "id": "toolu_mock1", "name": name, "input": {"city": "Paris"}}])
                }
                None => json!([{"type": "text", "text": turn.reply}]),
            };
            return Ok(json_response(
                StatusCode::OK,
                &json!({"id": "msg_mock1", "type": "message", "role": "assistant", "model": model,
                        "content": content, "stop_reason": stop, "stop_sequence": null,
                        "usage": {"input_tokens": turn.prompt_tokens, "output_tokens": turn.completion_tokens}}),
            ));
        }
        let ev = |name: &str, data: Value| sse::encode(Some(name), &data.to_string());
        let mut out = vec![ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock1", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": turn.prompt_tokens, "output_tokens": 1}}}),
        )];
        match &turn.call {
            Some(name) => {
                out.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": name, "input": {}}})));
                for piece in ["{\"city\":", " \"Paris\"}"] {
                    out.push(ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ));
                }
            }
            None => {
                out.push(ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ));
                out.push(ev("ping", json!({"type": "ping"})));
                for w in turn.words() {
                    out.push(ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": w}}),
                    ));
                }
            }
        }
        out.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        out.push(ev(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": turn.completion_tokens}}),
        ));
        out.push(ev("message_stop", json!({"type": "message_stop"})));
        let error = ev(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        );
        Ok(stream(out, behavior, mid_stream.map(|f| (f, error))))
    }

    fn gemini(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &Value,
        behavior: &Behavior,
        mid_stream: Option<Failure>,
    ) -> Result<MockResponse, (StatusCode, String)> {
        if headers.get("x-goog-api-key").is_none_or(|v| v != MOCK_KEY) {
            return Err((
                StatusCode::FORBIDDEN,
                "Method doesn't allow unregistered callers. Please use an API Key.".into(),
            ));
        }
        let Some((model, method)) = path
            .strip_prefix("/v1beta/models/")
            .and_then(|rest| rest.split_once(':'))
        else {
            return Err((StatusCode::NOT_FOUND, format!("Unknown path {path}")));
        };
        let model = model.to_string();
        if method == "batchEmbedContents" {
            let requests = body["requests"].as_array().cloned().unwrap_or_default();
            if requests
                .iter()
                .any(|r| r["model"] != json!(format!("models/{model}")))
            {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "requests[].model must match the URL's model".into(),
                ));
            }
            let embeddings: Vec<Value> = requests
                .iter()
                .map(|_| json!({"values": [0.5, 0.25]}))
                .collect();
            return Ok(json_response(
                StatusCode::OK,
                &json!({"embeddings": embeddings}),
            ));
        }
        let streaming = match method {
            "generateContent" => false,
            "streamGenerateContent?alt=sse" => true,
            _ => return Err((StatusCode::NOT_FOUND, format!("Unknown method {method}"))),
        };
        let contents = body["contents"]
            .as_array()
            .filter(|c| !c.is_empty())
            .ok_or((
                StatusCode::BAD_REQUEST,
                "* GenerateContentRequest.contents: contents is not specified".to_string(),
            ))?;
        if let Some(bad) = contents
            .iter()
            .find(|c| c["role"] != "user" && c["role"] != "model")
        {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("Please use a valid role: user, model. Got {}", bad["role"]),
            ));
        }
        let parts_text = |c: &Value| -> String {
            c["parts"]
                .as_array()
                .map(|p| p.iter().filter_map(|p| p["text"].as_str()).collect())
                .unwrap_or_default()
        };
        let last = contents.last().cloned().unwrap_or_default();
        let tool_result = last["parts"].as_array().and_then(|parts| {
            parts.iter().find_map(|p| p.get("functionResponse")).map(
                |r| match &r["response"]["result"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            )
        });
        let last_user = contents
            .iter()
            .rev()
            .find(|c| c["role"] == "user")
            .map(parts_text)
            .unwrap_or_default();
        let tool = body["tools"][0]["functionDeclarations"][0]["name"]
            .as_str()
            .map(str::to_string);
        let turn = Turn::new(last_user, tool, tool_result, contents.len());
        let usage = json!({"promptTokenCount": turn.prompt_tokens, "candidatesTokenCount": turn.completion_tokens,
                           "totalTokenCount": turn.prompt_tokens + turn.completion_tokens});
        let candidate = |parts: Value, finish: Option<&str>| {
            let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
            if let Some(f) = finish {
                c["finishReason"] = json!(f);
            }
            c
        };
        if !streaming {
            let parts = match &turn.call {
                Some(name) => json!([{"functionCall": {"name": name, "args": {"city": "Paris"}}}]),
                None => json!([{"text": turn.reply}]),
            };
            return Ok(json_response(
                StatusCode::OK,
                &json!({"candidates": [candidate(parts, Some("STOP"))], "usageMetadata": usage,
                        "modelVersion": model, "responseId": "mock-response-1"}),
            ));
        }
        let response = |cand: Value, usage: Value| json!({"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": "mock-response-1"});
        let partial_usage =
            json!({"promptTokenCount": turn.prompt_tokens, "totalTokenCount": turn.prompt_tokens});
        let mut events = Vec::new();
        match &turn.call {
            Some(name) => events.push(response(
                candidate(
                    json!([{"functionCall": {"name": name, "args": {"city": "Paris"}}}]),
                    Some("STOP"),
                ),
                usage.clone(),
            )),
            None => {
                let words = turn.words();
                let n = words.len();
                for (i, w) in words.into_iter().enumerate() {
                    let last = i + 1 == n;
                    events.push(response(
                        candidate(json!([{"text": w}]), last.then_some("STOP")),
                        if last {
                            usage.clone()
                        } else {
                            partial_usage.clone()
                        },
                    ));
                }
            }
        }
        let out: Vec<Bytes> = events
            .iter()
            .map(|e| sse::encode(None, &e.to_string()))
            .collect();
        let error = sse::encode(None, &json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}).to_string());
        Ok(stream(out, behavior, mid_stream.map(|f| (f, error))))
    }
}

impl State {
    fn cohere(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &Value,
        behavior: &Behavior,
        mid_stream: Option<Failure>,
    ) -> Result<MockResponse, (StatusCode, String)> {
        let bearer = format!("Bearer {MOCK_KEY}");
        if headers
            .get("authorization")
            .is_none_or(|v| v.as_bytes() != bearer.as_bytes())
        {
            return Err((StatusCode::UNAUTHORIZED, "invalid api token".into()));
        }
        if path == "/v2/embed" {
            let texts = body["texts"].as_array().cloned().unwrap_or_default();
            let vectors: Vec<Value> = texts.iter().map(|_| json!([0.75])).collect();
            return Ok(json_response(
                StatusCode::OK,
                &json!({"id": "mock-embed-1", "texts": texts, "embeddings": {"float": vectors},
                        "meta": {"billed_units": {"input_tokens": texts.len() * 3}}}),
            ));
        }
        if path != "/v2/chat" {
            return Err((StatusCode::NOT_FOUND, format!("Unknown path {path}")));
        }
        if let Some(field) = ["top_p", "stop", "stream_options", "max_completion_tokens"]
            .into_iter()
            .find(|f| body.get(*f).is_some())
        {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("invalid request: unknown field {field}"),
            ));
        }
        let messages = body["messages"]
            .as_array()
            .filter(|m| !m.is_empty())
            .ok_or((
                StatusCode::BAD_REQUEST,
                "invalid request: messages must not be empty".to_string(),
            ))?;
        if let Some(bad) = messages.iter().find(|m| {
            !["system", "user", "assistant", "tool"]
                .contains(&m["role"].as_str().unwrap_or_default())
        }) {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("invalid request: role {} is not valid", bad["role"]),
            ));
        }
        let last = messages.last().cloned().unwrap_or_default();
        let tool_result = (last["role"] == "tool").then(|| text_of(&last["content"]));
        let last_user = last_user_text(messages);
        let tool = body["tools"][0]["function"]["name"]
            .as_str()
            .map(str::to_string);
        let turn = Turn::new(last_user, tool, tool_result, messages.len());
        let tokens =
            json!({"input_tokens": turn.prompt_tokens, "output_tokens": turn.completion_tokens});
        let usage = json!({"billed_units": tokens, "tokens": tokens});
        let finish = turn.pick("TOOL_CALL", "COMPLETE");
        let call = |name: &str| {
            json!({"id": "get_weather_mock1", "type": "function",
                                       "function": {"name": name, "arguments": "{\"city\":\"Paris\"}"}})
        };
        if body["stream"] != json!(true) {
            let message = match &turn.call {
                Some(name) => {
                    json!({"role": "assistant", "tool_plan": "I will call the tool.", "tool_calls": [call(name)]})
                }
                None => {
                    json!({"role": "assistant", "content": [{"type": "text", "text": turn.reply}]})
                }
            };
            return Ok(json_response(
                StatusCode::OK,
                &json!({"id": "mock-cohere-1", "finish_reason": finish, "message": message, "usage": usage}),
            ));
        }
        let ev = |data: Value| {
            let name = data["type"].as_str().unwrap_or_default().to_string();
            sse::encode(Some(&name), &data.to_string())
        };
        let mut out = vec![ev(json!({"type": "message-start", "id": "mock-cohere-1",
                                     "delta": {"message": {"role": "assistant"}}}))];
        match &turn.call {
            Some(name) => {
                out.push(ev(json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will call the tool."}}})));
                out.push(ev(json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
                    "id": "get_weather_mock1", "type": "function", "function": {"name": name, "arguments": ""}}}}})));
                for piece in ["{\"city\":", "\"Paris\"}"] {
                    out.push(ev(json!({"type": "tool-call-delta", "index": 0,
                                       "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}})));
                }
                out.push(ev(json!({"type": "tool-call-end", "index": 0})));
            }
            None => {
                out.push(ev(json!({"type": "content-start", "index": 0,
                                   "delta": {"message": {"content": {"type": "text", "text": ""}}}})));
                for w in turn.words() {
                    out.push(ev(json!({"type": "content-delta", "index": 0,
                                       "delta": {"message": {"content": {"text": w}}}})));
                }
                out.push(ev(json!({"type": "content-end", "index": 0})));
            }
        }
        out.push(ev(
            json!({"type": "message-end", "delta": {"finish_reason": finish, "usage": usage}}),
        ));
        let error = ev(json!({"type": "message-end", "delta": {"finish_reason": "ERROR"}}));
        Ok(stream(out, behavior, mid_stream.map(|f| (f, error))))
    }
}

/// An SSE response that sends `events` one by one (with the behavior's delay); with
/// `fail = (failure, error)` it sends the first events the failure names and then `error`
/// ([`Failure::MidStream`]), nothing more ([`Failure::Truncate`]) or keep-alive comments
/// ([`Failure::Stall`]).
fn stream(events: Vec<Bytes>, behavior: &Behavior, fail: Option<(Failure, Bytes)>) -> MockResponse {
    let (tx, rx) = mpsc::channel(4);
    let delay = behavior.chunk_delay;
    tokio::spawn(async move {
        let (events, error, stall) = match fail {
            Some((Failure::MidStream { after_events }, error)) => (
                events.into_iter().take(after_events).collect(),
                Some(error),
                false,
            ),
            Some((Failure::Truncate { after_events }, _)) => {
                (events.into_iter().take(after_events).collect(), None, false)
            }
            Some((Failure::Stall { after_events }, _)) => {
                (events.into_iter().take(after_events).collect(), None, true)
            }
            _ => (events, None, false),
        };
        for event in events.into_iter().chain(error) {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if stall {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if tx.send(Bytes::from_static(b": ping\n\n")).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut resp = Response::new(ChannelBody(rx));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    resp
}
