//! Cohere's Chat API v2 (`POST /v2/chat`, `POST /v2/embed`; bearer key).
//!
//! Close to OpenAI's shape — roles, tool definitions and tool calls are the same — with these
//! differences translated here: `top_p` is `p`, `stop` is `stop_sequences`, `tool_choice` is
//! `REQUIRED`/`NONE` (absent means auto; a named tool is narrowed by sending only that tool),
//! `response_format` carries the schema directly, answers are content blocks with an upper-case
//! `finish_reason` and billed usage, and a stream is typed events (`message-start`,
//! `content-delta`, `tool-call-start/delta`, `message-end`, ...). Errors are `{"message": ...}`.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Endpoint, Provider, Step, StreamTranslator, UpstreamRequest, error_text};
use crate::error::{ApiError, parse_json};
use crate::openai::{
    self, AssistantMessage, ChatChunk, ChatRequest, ChatResponse, Choice, Delta, EmbeddingsRequest,
    EmbeddingsResponse, Extra, FinishReason, Role, StreamMeta, ToolCall, ToolCallDelta, ToolMode,
    Usage,
};
use crate::sse::SseEvent;

/// The Cohere kind.
pub struct Cohere;

const NAME: &str = "cohere";

fn to_chat_body(req: &ChatRequest, model: &str) -> Result<Value, ApiError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(ApiError::unsupported(NAME, "n > 1"));
    }
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| {
            let mut msg = serde_json::to_value(m).unwrap_or_default();
            if m.role == Role::Developer {
                msg["role"] = "system".into();
            }
            if let Some(obj) = msg.as_object_mut() {
                obj.remove("name");
            }
            msg
        })
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert("messages".into(), messages.into());
    let mut tools = req.tools.clone();
    match req.tool_choice.as_ref().map(|c| c.resolve()) {
        Some(ToolMode::None) => {
            body.insert("tool_choice".into(), "NONE".into());
        }
        Some(ToolMode::Required) => {
            body.insert("tool_choice".into(), "REQUIRED".into());
        }
        Some(ToolMode::Named(name)) => {
            tools = tools.map(|t| t.into_iter().filter(|t| t.function.name == name).collect());
            body.insert("tool_choice".into(), "REQUIRED".into());
        }
        Some(ToolMode::Auto) | None => {}
    }
    if let Some(tools) = tools {
        body.insert(
            "tools".into(),
            serde_json::to_value(tools).unwrap_or_default(),
        );
    }
    let optional = [
        ("max_tokens", req.output_limit().map(Value::from)),
        ("temperature", req.temperature.map(Value::from)),
        ("p", req.top_p.map(Value::from)),
        ("stream", req.stream.map(Value::from)),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            body.insert(key.into(), v);
        }
    }
    let stop = req.stop_sequences();
    if !stop.is_empty() {
        body.insert("stop_sequences".into(), stop.into());
    }
    for key in ["seed", "frequency_penalty", "presence_penalty"] {
        if let Some(v) = req.extra.get(key) {
            body.insert(key.into(), v.clone());
        }
    }
    if let Some(format) = req.response_format.as_ref().filter(|f| f.is_json()) {
        let mut rf = json!({"type": "json_object"});
        if let Some(schema) = format.schema() {
            rf["json_schema"] = schema.clone();
        }
        body.insert("response_format".into(), rf);
    }
    Ok(Value::Object(body))
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "TOOL_CALL" => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

#[derive(Debug, Default, Deserialize)]
struct CohereUsage {
    #[serde(default)]
    billed_units: Option<Tokens>,
    #[serde(default)]
    tokens: Option<Tokens>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct Tokens {
    #[serde(default)]
    input_tokens: f64,
    #[serde(default)]
    output_tokens: f64,
}

impl CohereUsage {
    /// Billed units when given (what costs money), else the processed tokens.
    fn usage(&self) -> Option<Usage> {
        let t = self.billed_units.or(self.tokens)?;
        Some(Usage::new(t.input_tokens as u64, t.output_tokens as u64))
    }
}

#[derive(Debug, Deserialize)]
struct ChatAnswer {
    id: String,
    #[serde(default)]
    finish_reason: Option<String>,
    message: AnswerMessage,
    #[serde(default)]
    usage: Option<CohereUsage>,
}

#[derive(Debug, Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

impl Provider for Cohere {
    fn name(&self) -> &'static str {
        NAME
    }

    fn chat_request(&self, ep: &Endpoint, req: &ChatRequest) -> Result<UpstreamRequest, ApiError> {
        let body = to_chat_body(req, ep.model)?;
        UpstreamRequest::json(ep.url("v2/chat"), &body)?.bearer(ep.api_key)
    }

    fn chat_response(&self, body: &[u8]) -> Result<ChatResponse, ApiError> {
        let answer: ChatAnswer = parse_json(NAME, body)?;
        let text: String = answer
            .message
            .content
            .iter()
            .filter(|c| c["type"] == "text")
            .filter_map(|c| c["text"].as_str())
            .collect();
        let calls = answer.message.tool_calls.filter(|c| !c.is_empty());
        Ok(ChatResponse {
            id: answer.id,
            object: "chat.completion".into(),
            created: openai::now_unix(),
            model: String::new(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: Role::Assistant,
                    content: (!text.is_empty() || calls.is_none()).then_some(text),
                    tool_calls: calls,
                    extra: Extra::new(),
                },
                finish_reason: answer.finish_reason.as_deref().map(finish_reason),
                extra: Extra::new(),
            }],
            usage: answer.usage.and_then(|u| u.usage()),
            extra: Extra::new(),
        })
    }

    fn stream_translator(&self) -> Box<dyn StreamTranslator> {
        Box::new(CohereStream::default())
    }

    /// Cohere's errors are `{"message": ...}`.
    fn error_message(&self, body: &[u8]) -> String {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| error_text(body))
    }

    fn embeddings_request(
        &self,
        ep: &Endpoint,
        req: &EmbeddingsRequest,
    ) -> Result<UpstreamRequest, ApiError> {
        let texts = super::embedding_texts(NAME, req)?;
        let mut body = json!({"model": ep.model, "texts": texts,
                              "input_type": "search_document", "embedding_types": ["float"]});
        if let Some(d) = req.dimensions {
            body["output_dimension"] = d.into();
        }
        UpstreamRequest::json(ep.url("v2/embed"), &body)?.bearer(ep.api_key)
    }

    fn embeddings_response(
        &self,
        body: &[u8],
        model: &str,
    ) -> Result<EmbeddingsResponse, ApiError> {
        let v: Value = parse_json(NAME, body)?;
        let vectors = v["embeddings"]["float"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let input = v["meta"]["billed_units"]["input_tokens"].as_f64();
        Ok(EmbeddingsResponse::from_vectors(
            model,
            vectors,
            input.map(|n| n as u64),
        ))
    }
}

#[derive(Default)]
struct CohereStream {
    meta: StreamMeta,
    usage: Option<Usage>,
    done: bool,
}

impl StreamTranslator for CohereStream {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Step, ApiError> {
        let v: Value = parse_json(NAME, event.data.as_bytes())?;
        let message = &v["delta"]["message"];
        let index = v["index"].as_u64().unwrap_or(0) as u32;
        match v["type"].as_str().unwrap_or_default() {
            "message-start" => {
                self.meta = StreamMeta {
                    id: v["id"]
                        .as_str()
                        .map_or_else(openai::completion_id, str::to_string),
                    created: openai::now_unix(),
                    model: String::new(),
                };
                out.push(ChatChunk::delta(&self.meta, Delta::start(), None));
            }
            "content-delta" => {
                if let Some(text) = message["content"]["text"].as_str() {
                    out.push(ChatChunk::delta(&self.meta, Delta::text(text), None));
                }
            }
            "tool-call-start" => {
                let call = &message["tool_calls"];
                let delta = ToolCallDelta::start(
                    index,
                    call["id"].as_str().unwrap_or_default().to_string(),
                    call["function"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    call["function"]["arguments"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
                out.push(ChatChunk::delta(&self.meta, Delta::tool_call(delta), None));
            }
            "tool-call-delta" => {
                if let Some(args) = message["tool_calls"]["function"]["arguments"].as_str() {
                    let delta = ToolCallDelta::arguments(index, args.to_string());
                    out.push(ChatChunk::delta(&self.meta, Delta::tool_call(delta), None));
                }
            }
            "message-end" => {
                let delta = &v["delta"];
                let reason = delta["finish_reason"].as_str().unwrap_or("COMPLETE");
                if reason == "ERROR" || reason == "TIMEOUT" {
                    return Err(ApiError::bad_upstream(format!(
                        "the cohere provider ended the stream with {reason} (in mid-stream)"
                    )));
                }
                self.usage = serde_json::from_value::<CohereUsage>(delta["usage"].clone())
                    .ok()
                    .and_then(|u| u.usage());
                out.push(ChatChunk::delta(
                    &self.meta,
                    Delta::default(),
                    Some(finish_reason(reason)),
                ));
                if let Some(usage) = self.usage {
                    out.push(ChatChunk::usage(&self.meta, usage));
                }
                self.done = true;
                return Ok(Step::Done);
            }
            _ => {}
        }
        Ok(Step::More)
    }

    fn finish(&mut self, _out: &mut Vec<ChatChunk>) -> Result<(), ApiError> {
        if self.done {
            Ok(())
        } else {
            Err(ApiError::bad_upstream(
                "the cohere provider closed the stream before message-end",
            ))
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint<'static> {
        Endpoint {
            base_url: "https://api.cohere.com",
            api_key: Some("co-key"),
            model: "command-a-03-2025",
            api_version: None,
        }
    }

    #[test]
    fn request_renames_fields_and_narrows_a_named_tool() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "c", "messages": [{"role": "developer", "content": "Be brief."},
                                       {"role": "user", "content": "hi", "name": "ann"}],
            "top_p": 0.5, "stop": "END", "max_completion_tokens": 9, "seed": 3,
            "tools": [{"type": "function", "function": {"name": "a"}},
                      {"type": "function", "function": {"name": "b"}}],
            "tool_choice": {"type": "function", "function": {"name": "b"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
        }))
        .unwrap();
        let up = Cohere.chat_request(&ep(), &req).unwrap();
        assert_eq!(up.url, "https://api.cohere.com/v2/chat");
        assert_eq!(up.headers["authorization"], "Bearer co-key");
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["messages"][0]["role"], "system");
        assert!(body["messages"][1].get("name").is_none());
        assert_eq!(body["p"], 0.5);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["max_tokens"], 9);
        assert_eq!(body["seed"], 3);
        assert_eq!(body["tool_choice"], "REQUIRED");
        assert_eq!(body["tools"].as_array().unwrap().len(), 1);
        assert_eq!(body["tools"][0]["function"]["name"], "b");
        assert_eq!(
            body["response_format"],
            json!({"type": "json_object", "json_schema": {"type": "object"}})
        );
    }

    #[test]
    fn response_with_tool_call_and_billed_usage() {
        let body = json!({"id": "c1", "finish_reason": "TOOL_CALL",
            "message": {"role": "assistant", "tool_plan": "I will look.", "tool_calls": [
                {"id": "get_weather_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 7}, "tokens": {"input_tokens": 50, "output_tokens": 7}}});
        let resp = Cohere.chat_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(resp.choices[0].message.content, None);
        assert_eq!(
            resp.choices[0].message.tool_calls.as_ref().unwrap()[0].id,
            "get_weather_1"
        );
        assert_eq!(resp.usage, Some(Usage::new(5, 7)));
        assert_eq!(
            Cohere.error_message(br#"{"message":"invalid api token"}"#),
            "invalid api token"
        );
    }

    #[test]
    fn stream_events_become_chunks() {
        let mut t = Cohere.stream_translator();
        let mut out = Vec::new();
        let events = [
            json!({"type": "message-start", "id": "m1", "delta": {"message": {"role": "assistant"}}}),
            json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
            json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi"}}}}),
            json!({"type": "content-end", "index": 0}),
            json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}}}}),
            json!({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": "{}"}}}}}),
            json!({"type": "tool-call-end", "index": 0}),
            json!({"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": {"billed_units": {"input_tokens": 3, "output_tokens": 4}}}}),
        ];
        let mut last = Step::More;
        for e in events {
            let ev = SseEvent {
                event: None,
                data: e.to_string(),
            };
            last = t.event(&ev, &mut out).unwrap();
        }
        assert_eq!(last, Step::Done);
        assert_eq!(out[0].id, "m1");
        assert_eq!(out[1].choices[0].delta.content.as_deref(), Some("Hi"));
        let start = &out[2].choices[0].delta.tool_calls.as_ref().unwrap()[0];
        assert_eq!(start.id.as_deref(), Some("t1"));
        assert_eq!(
            out[4].choices[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
        assert_eq!(out[5].usage, Some(Usage::new(3, 4)));
        t.finish(&mut out).unwrap();
    }
}
