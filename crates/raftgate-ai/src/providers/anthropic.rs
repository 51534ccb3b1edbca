//! Anthropic's Messages API (`POST /v1/messages`, `anthropic-version: 2023-06-01`).
//!
//! What differs from OpenAI and is translated here: system messages are lifted into the
//! top-level `system`; turns must alternate, so consecutive messages of one role are merged and
//! tool results travel as `tool_result` blocks of a user turn; tool calls are `tool_use` blocks
//! with parsed `input`; images are `image` blocks with a base64 or URL source; `max_tokens` is
//! required; there is no JSON mode, so `response_format` becomes a system instruction. Streams
//! are named events (`message_start`, `content_block_start/delta/stop`, `message_delta`,
//! `message_stop`, `ping`, `error`), each turned into chunks as it arrives.
//!
//! The wire types are public because the inbound `/v1/messages` API ([`crate::messages`])
//! speaks the same format to clients.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Endpoint, Provider, Step, StreamTranslator, UpstreamRequest};
use crate::error::{ApiError, parse_json};
use crate::openai::{
    self, AssistantMessage, ChatChunk, ChatRequest, ChatResponse, Choice, Content, ContentPart,
    Delta, Extra, FinishReason, ImageSource, Role, StreamMeta, ToolCall, ToolCallDelta, ToolMode,
    Usage,
};
use crate::sse::SseEvent;

/// The Anthropic kind.
pub struct Anthropic;

const NAME: &str = "anthropic";
/// The API version this translation follows.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` sent when the client gave none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A Messages API request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// The model.
    pub model: String,
    /// Alternating user and assistant turns.
    pub messages: Vec<TurnMessage>,
    /// The output limit (required).
    pub max_tokens: u32,
    /// The system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<TextOrBlocks>,
    /// Sequences that end the generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Sampling temperature (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stream named events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Tools the model may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDef>>,
    /// Whether and which tool to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceSpec>,
    /// `user_id` for abuse monitoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Other fields (top_k, thinking, ...), kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// An opaque end-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// A string or content blocks (system prompt, message content, tool result content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TextOrBlocks {
    /// Plain text.
    Text(String),
    /// Content blocks.
    Blocks(Vec<Block>),
}

impl TextOrBlocks {
    /// The text blocks joined.
    pub fn text(&self) -> String {
        match self {
            TextOrBlocks::Text(t) => t.clone(),
            TextOrBlocks::Blocks(blocks) => blocks
                .iter()
                .filter_map(|b| match b {
                    Block::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// One turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnMessage {
    /// `user` or `assistant`.
    pub role: TurnRole,
    /// Text or blocks.
    pub content: TextOrBlocks,
}

/// Who speaks in a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnRole {
    /// The user (also carries tool results).
    User,
    /// The model.
    Assistant,
}

/// A content block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image.
    Image {
        /// Where it is.
        source: ImageBlockSource,
    },
    /// A tool call by the model.
    ToolUse {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments as JSON.
        input: Value,
    },
    /// A tool's result, in a user turn.
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// The result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<TextOrBlocks>,
        /// Whether the tool failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    /// Blocks the gateway does not translate (thinking, documents, ...).
    #[serde(other)]
    Unsupported,
}

/// An image block's source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageBlockSource {
    /// Inline data.
    Base64 {
        /// e.g. `image/jpeg`.
        media_type: String,
        /// Base64 text.
        data: String,
    },
    /// A URL Anthropic fetches.
    Url {
        /// The URL.
        url: String,
    },
}

/// A tool definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of its input.
    pub input_schema: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoiceSpec {
    /// The model decides.
    Auto,
    /// Some tool must be used.
    Any,
    /// This tool must be used.
    Tool {
        /// Its name.
        name: String,
    },
    /// No tool may be used.
    None,
}

/// A complete Messages API answer (also the `message` of `message_start`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    /// Message id.
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always `assistant`.
    pub role: TurnRole,
    /// The model that answered.
    pub model: String,
    /// Text and tool_use blocks.
    pub content: Vec<Block>,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, ...
    pub stop_reason: Option<String>,
    /// The stop sequence that matched.
    pub stop_sequence: Option<String>,
    /// Token counts.
    pub usage: MessagesUsage,
}

/// Token counts of a Messages answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesUsage {
    /// Uncached input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Input tokens read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

impl MessagesUsage {
    /// All input tokens, cached or not, as OpenAI counts `prompt_tokens`.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            + self.cache_creation_input_tokens.unwrap_or(0)
            + self.cache_read_input_tokens.unwrap_or(0)
    }
}

/// One streaming event (the `data` of an SSE event; its `type` repeats the event name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The message begins; content is empty, usage has the input tokens.
    MessageStart {
        /// The message so far.
        message: MessagesResponse,
    },
    /// A block begins.
    ContentBlockStart {
        /// Block index.
        index: u32,
        /// The block, with empty text or input.
        content_block: Block,
    },
    /// More of a block.
    ContentBlockDelta {
        /// Block index.
        index: u32,
        /// What is new.
        delta: BlockDelta,
    },
    /// A block ends.
    ContentBlockStop {
        /// Block index.
        index: u32,
    },
    /// Stop reason and cumulative output tokens.
    MessageDelta {
        /// Stop reason.
        delta: MessageDeltaBody,
        /// Cumulative usage.
        usage: DeltaUsage,
    },
    /// The last event.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// A failure in mid-stream.
    Error {
        /// What failed.
        error: ErrorObject,
    },
    /// Event types added after this translation was written; ignored as Anthropic advises.
    #[serde(other)]
    Unknown,
}

/// A block delta.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    /// More text.
    TextDelta {
        /// The text.
        text: String,
    },
    /// More tool input JSON text.
    InputJsonDelta {
        /// A piece of JSON text.
        partial_json: String,
    },
    /// thinking, signature and citation deltas, not translated.
    #[serde(other)]
    Other,
}

/// `message_delta.delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    /// Why the message ended.
    pub stop_reason: Option<String>,
    /// The stop sequence that matched.
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// `message_delta.usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaUsage {
    /// Cumulative output tokens.
    pub output_tokens: u64,
    /// Input tokens, when the API repeats them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
}

/// Anthropic's error object (`{"type":"error","error":{...}}` bodies and `error` events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// `invalid_request_error`, `overloaded_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

/// The HTTP status Anthropic uses for an error type (for errors that arrive in a stream).
pub fn error_status(kind: &str) -> StatusCode {
    match kind {
        "invalid_request_error" => StatusCode::BAD_REQUEST,
        "authentication_error" => StatusCode::UNAUTHORIZED,
        "permission_error" => StatusCode::FORBIDDEN,
        "not_found_error" => StatusCode::NOT_FOUND,
        "request_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "rate_limit_error" => StatusCode::TOO_MANY_REQUESTS,
        "overloaded_error" => StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Anthropic's stop reason as OpenAI's finish reason.
pub fn finish_reason(stop_reason: Option<&str>) -> Option<FinishReason> {
    Some(match stop_reason? {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    })
}

/// OpenAI's finish reason as Anthropic's stop reason.
pub fn stop_reason(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls | FinishReason::FunctionCall => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// Translates a canonical request into a Messages request for `model`.
pub fn to_messages_request(req: &ChatRequest, model: &str) -> Result<MessagesRequest, ApiError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(ApiError::unsupported(NAME, "n > 1"));
    }
    let mut system = Vec::new();
    let mut turns: Vec<TurnMessage> = Vec::new();
    for (i, msg) in req.messages.iter().enumerate() {
        let (role, blocks) = match msg.role {
            Role::System | Role::Developer => {
                system.push(msg.text_content());
                continue;
            }
            Role::User => (TurnRole::User, content_blocks(msg.content.as_ref())),
            Role::Assistant => {
                let mut blocks = content_blocks(msg.content.as_ref());
                for (j, call) in msg.tool_calls.iter().flatten().enumerate() {
                    blocks.push(Block::ToolUse {
                        id: call.id.clone(),
                        name: call.function.name.clone(),
                        input: arguments_json(&call.function.arguments).ok_or_else(|| {
                            ApiError::invalid_request(
                                format!("messages[{i}].tool_calls[{j}].function.arguments is not a JSON object"),
                                Some("messages"),
                            )
                        })?,
                    });
                }
                (TurnRole::Assistant, blocks)
            }
            Role::Tool => {
                let id = msg.tool_call_id.clone().ok_or_else(|| {
                    ApiError::invalid_request(
                        format!("messages[{i}] is a tool message without tool_call_id"),
                        Some("messages"),
                    )
                })?;
                let result = Block::ToolResult {
                    tool_use_id: id,
                    content: Some(TextOrBlocks::Text(msg.text_content())),
                    is_error: None,
                };
                (TurnRole::User, vec![result])
            }
        };
        match turns.last_mut() {
            Some(TurnMessage {
                role: last,
                content: TextOrBlocks::Blocks(existing),
            }) if *last == role => existing.extend(blocks),
            _ => turns.push(TurnMessage {
                role,
                content: TextOrBlocks::Blocks(blocks),
            }),
        }
    }
    if turns.is_empty() {
        return Err(ApiError::invalid_request(
            "messages must hold at least one user message",
            Some("messages"),
        ));
    }
    if let Some(format) = req.response_format.as_ref().filter(|f| f.is_json()) {
        system.push(json_instruction(format.schema()));
    }
    let tools: Option<Vec<ToolDef>> = req.tools.as_ref().map(|tools| {
        tools
            .iter()
            .map(|t| ToolDef {
                name: t.function.name.clone(),
                description: t.function.description.clone(),
                input_schema: t
                    .function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
            })
            .collect()
    });
    let tool_choice = req.tool_choice.as_ref().map(|c| match c.resolve() {
        ToolMode::None => ToolChoiceSpec::None,
        ToolMode::Auto => ToolChoiceSpec::Auto,
        ToolMode::Required => ToolChoiceSpec::Any,
        ToolMode::Named(name) => ToolChoiceSpec::Tool { name: name.into() },
    });
    let stop = req.stop_sequences();
    Ok(MessagesRequest {
        model: model.to_string(),
        messages: turns,
        max_tokens: req.output_limit().unwrap_or(DEFAULT_MAX_TOKENS),
        system: (!system.is_empty()).then(|| TextOrBlocks::Text(system.join("\n\n"))),
        stop_sequences: (!stop.is_empty()).then_some(stop),
        temperature: req.temperature,
        top_p: req.top_p,
        stream: req.stream,
        tools,
        tool_choice,
        metadata: req.user.as_ref().map(|u| Metadata {
            user_id: Some(u.clone()),
        }),
        extra: Extra::new(),
    })
}

/// The system instruction that stands in for a JSON mode.
pub(crate) fn json_instruction(schema: Option<&Value>) -> String {
    match schema {
        Some(schema) => format!(
            "Respond with a single valid JSON object and nothing else. It must conform to this JSON schema: {schema}"
        ),
        None => "Respond with a single valid JSON object and nothing else.".into(),
    }
}

/// Tool call arguments as a JSON value; an empty string is an empty object.
pub(crate) fn arguments_json(arguments: &str) -> Option<Value> {
    if arguments.trim().is_empty() {
        return Some(Value::Object(Default::default()));
    }
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
}

fn content_blocks(content: Option<&Content>) -> Vec<Block> {
    match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![Block::Text { text: t.clone() }],
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => Block::Text { text: text.clone() },
                ContentPart::ImageUrl { image_url } => Block::Image {
                    source: match image_url.source() {
                        ImageSource::Base64 { media_type, data } => ImageBlockSource::Base64 {
                            media_type: media_type.into(),
                            data: data.into(),
                        },
                        ImageSource::Url(url) => ImageBlockSource::Url { url: url.into() },
                    },
                },
            })
            .collect(),
    }
}

/// Translates a Messages answer into a canonical one.
pub fn from_messages_response(resp: MessagesResponse) -> ChatResponse {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in resp.content {
        match block {
            Block::Text { text: t } => text.push_str(&t),
            Block::ToolUse { id, name, input } => {
                calls.push(ToolCall::function(id, name, input.to_string()))
            }
            _ => {}
        }
    }
    ChatResponse {
        id: resp.id,
        object: "chat.completion".into(),
        created: openai::now_unix(),
        model: resp.model,
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: Role::Assistant,
                content: (!text.is_empty() || calls.is_empty()).then_some(text),
                tool_calls: (!calls.is_empty()).then_some(calls),
                extra: Extra::new(),
            },
            finish_reason: finish_reason(resp.stop_reason.as_deref()),
            extra: Extra::new(),
        }],
        usage: Some(Usage::new(
            resp.usage.prompt_tokens(),
            resp.usage.output_tokens,
        )),
        extra: Extra::new(),
    }
}

impl Provider for Anthropic {
    fn name(&self) -> &'static str {
        NAME
    }

    fn chat_request(&self, ep: &Endpoint, req: &ChatRequest) -> Result<UpstreamRequest, ApiError> {
        let body = to_messages_request(req, ep.model)?;
        let up = UpstreamRequest::json(ep.url("v1/messages"), &body)?
            .header("anthropic-version", API_VERSION)?;
        up.credential("x-api-key", ep.api_key)
    }

    fn chat_response(&self, body: &[u8]) -> Result<ChatResponse, ApiError> {
        Ok(from_messages_response(parse_json(NAME, body)?))
    }

    fn stream_translator(&self) -> Box<dyn StreamTranslator> {
        Box::new(AnthropicStream::default())
    }
}

/// The stream translation's state.
#[derive(Default)]
struct AnthropicStream {
    meta: StreamMeta,
    usage: MessagesUsage,
    /// Tool call index of each tool_use block index.
    tool_index: Vec<(u32, u32)>,
    next_tool: u32,
    done: bool,
}

impl StreamTranslator for AnthropicStream {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Step, ApiError> {
        let parsed: StreamEvent = parse_json(NAME, event.data.as_bytes())?;
        match parsed {
            StreamEvent::MessageStart { message } => {
                self.meta = StreamMeta {
                    id: message.id,
                    created: openai::now_unix(),
                    model: message.model,
                };
                self.usage = message.usage;
                out.push(ChatChunk::delta(&self.meta, Delta::start(), None));
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                Block::Text { text } if !text.is_empty() => {
                    out.push(ChatChunk::delta(&self.meta, Delta::text(text), None))
                }
                Block::ToolUse { id, name, .. } => {
                    let call = self.next_tool;
                    self.next_tool += 1;
                    self.tool_index.push((index, call));
                    let delta = ToolCallDelta::start(call, id, name, String::new());
                    out.push(ChatChunk::delta(&self.meta, Delta::tool_call(delta), None));
                }
                _ => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => {
                    out.push(ChatChunk::delta(&self.meta, Delta::text(text), None))
                }
                BlockDelta::InputJsonDelta { partial_json } => {
                    let call = self
                        .tool_index
                        .iter()
                        .find(|(block, _)| *block == index)
                        .map(|(_, call)| *call)
                        .ok_or_else(|| {
                            ApiError::bad_upstream(format!(
                                "the anthropic provider sent tool input for block {index}, which is no tool_use block"
                            ))
                        })?;
                    let delta = ToolCallDelta::arguments(call, partial_json);
                    out.push(ChatChunk::delta(&self.meta, Delta::tool_call(delta), None));
                }
                BlockDelta::Other => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                self.usage.output_tokens = usage.output_tokens;
                if let Some(input) = usage.input_tokens {
                    self.usage.input_tokens = input;
                }
                let finish = finish_reason(delta.stop_reason.as_deref());
                out.push(ChatChunk::delta(&self.meta, Delta::default(), finish));
            }
            StreamEvent::MessageStop => {
                self.done = true;
                if let Some(usage) = self.usage() {
                    out.push(ChatChunk::usage(&self.meta, usage));
                }
                return Ok(Step::Done);
            }
            StreamEvent::Error { error } => {
                return Err(ApiError::from_provider(
                    NAME,
                    error_status(&error.kind),
                    &format!("{} (in mid-stream)", error.message),
                ));
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping | StreamEvent::Unknown => {}
        }
        Ok(Step::More)
    }

    fn finish(&mut self, _out: &mut Vec<ChatChunk>) -> Result<(), ApiError> {
        if self.done {
            Ok(())
        } else {
            Err(ApiError::bad_upstream(
                "the anthropic provider closed the stream before message_stop",
            ))
        }
    }

    fn usage(&self) -> Option<Usage> {
        (!self.meta.id.is_empty())
            .then(|| Usage::new(self.usage.prompt_tokens(), self.usage.output_tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{FunctionDef, ResponseFormat, Tool, ToolChoice};
    use serde_json::json;

    fn chat(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn request_lifts_system_merges_turns_and_translates_tools_and_images() {
        let req = chat(json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather where this photo is?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "noon"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "stop": ["\n\nHuman:"],
            "temperature": 0.5,
            "user": "u-1"
        }));
        let out = to_messages_request(&req, "claude-sonnet-4-20250514").unwrap();
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(v["system"], "You are terse.");
        assert_eq!(v["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(v["stop_sequences"], json!(["\n\nHuman:"]));
        assert_eq!(v["tool_choice"], json!({"type": "any"}));
        assert_eq!(v["metadata"], json!({"user_id": "u-1"}));
        assert_eq!(
            v["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(
            msgs.len(),
            3,
            "tool results and the next user text share one turn"
        );
        assert_eq!(
            msgs[0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"})
        );
        assert_eq!(
            msgs[0]["content"][2]["source"],
            json!({"type": "url", "url": "https://example.com/a.png"})
        );
        assert_eq!(msgs[1]["role"], "assistant");
        assert_eq!(
            msgs[1]["content"][0],
            json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}})
        );
        assert_eq!(msgs[1]["content"][1]["input"], json!({}));
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(
            msgs[2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"})
        );
        assert_eq!(
            msgs[2]["content"][2],
            json!({"type": "text", "text": "thanks"})
        );
    }

    #[test]
    fn json_mode_becomes_an_instruction_and_limits_pass() {
        let mut req = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                  "max_completion_tokens": 50}),
        );
        req.response_format = Some(ResponseFormat {
            kind: "json_object".into(),
            json_schema: None,
        });
        let out = to_messages_request(&req, "m").unwrap();
        assert_eq!(out.max_tokens, 50);
        assert!(out.system.unwrap().text().contains("valid JSON object"));
    }

    #[test]
    fn bad_tool_arguments_and_empty_conversations_are_400() {
        let req = chat(json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}));
        assert_eq!(
            to_messages_request(&req, "m").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let req = chat(json!({"model": "m", "messages": [
            {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1"}}]}
        ]}));
        let err = to_messages_request(&req, "m").unwrap_err();
        assert!(err.detail.message.contains("tool_calls[0]"));
    }

    #[test]
    fn named_tool_choice() {
        let mut req = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        req.tools = Some(vec![Tool {
            kind: "function".into(),
            function: FunctionDef {
                name: "f".into(),
                description: None,
                parameters: None,
                strict: None,
            },
        }]);
        req.tool_choice = Some(ToolChoice::Function {
            kind: "function".into(),
            function: openai::NamedFunction { name: "f".into() },
        });
        let out = to_messages_request(&req, "m").unwrap();
        assert_eq!(
            out.tool_choice,
            Some(ToolChoiceSpec::Tool { name: "f".into() })
        );
    }

    #[test]
    fn response_with_text_and_tool_use() {
        let body = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 5}
        });
        let resp = Anthropic
            .chat_response(body.to_string().as_bytes())
            .unwrap();
        let choice = &resp.choices[0];
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(choice.message.content.as_deref(), Some("Checking."));
        let call = &choice.message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.id, "toolu_01");
        assert_eq!(
            serde_json::from_str::<Value>(&call.function.arguments).unwrap(),
            json!({"city": "Paris"})
        );
        assert_eq!(resp.usage, Some(Usage::new(25, 7)));
    }

    fn feed(t: &mut dyn StreamTranslator, events: &[(&str, Value)]) -> (Vec<ChatChunk>, Step) {
        let mut out = Vec::new();
        let mut last = Step::More;
        for (name, data) in events {
            last = t
                .event(
                    &SseEvent {
                        event: Some(name.to_string()),
                        data: data.to_string(),
                    },
                    &mut out,
                )
                .unwrap();
        }
        (out, last)
    }

    #[test]
    fn stream_of_text_and_tool_use_becomes_chunks() {
        let mut t = Anthropic.stream_translator();
        let (out, step) = feed(
            t.as_mut(),
            &[
                (
                    "message_start",
                    json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ),
                ("ping", json!({"type": "ping"})),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
                ),
                (
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
                ),
                (
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 1}),
                ),
                (
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 30}}),
                ),
                ("message_stop", json!({"type": "message_stop"})),
            ],
        );
        assert_eq!(step, Step::Done);
        assert_eq!(out[0].choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(out[0].id, "msg_1");
        let text: String = out
            .iter()
            .filter_map(|c| c.choices.first()?.delta.content.clone())
            .collect();
        assert_eq!(text, "Hello");
        let args: String = out
            .iter()
            .filter_map(|c| c.choices.first()?.delta.tool_calls.as_ref())
            .flatten()
            .filter_map(|d| d.function.as_ref()?.arguments.clone())
            .collect();
        assert_eq!(args, "{\"city\": \"Paris\"}");
        let first_call = out
            .iter()
            .find_map(|c| c.choices.first()?.delta.tool_calls.as_ref())
            .unwrap();
        assert_eq!(first_call[0].id.as_deref(), Some("toolu_9"));
        assert_eq!(first_call[0].index, 0);
        let finish = &out[out.len() - 2];
        assert_eq!(
            finish.choices[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
        let last = out.last().unwrap();
        assert!(last.choices.is_empty());
        assert_eq!(last.usage, Some(Usage::new(12, 30)));
        assert!(t.finish(&mut Vec::new()).is_ok());
    }

    #[test]
    fn error_event_and_truncated_stream_are_errors() {
        let mut t = Anthropic.stream_translator();
        let err = t
            .event(
                &SseEvent {
                    event: Some("error".into()),
                    data: json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).to_string(),
                },
                &mut Vec::new(),
            )
            .unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.detail.message.contains("Overloaded"));
        let mut t = Anthropic.stream_translator();
        assert!(t.finish(&mut Vec::new()).is_err());
    }

    #[test]
    fn request_headers() {
        let ep = Endpoint {
            base_url: "https://api.anthropic.com",
            api_key: Some("sk-ant"),
            model: "claude-3-5-haiku-latest",
            api_version: None,
        };
        let req = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let up = Anthropic.chat_request(&ep, &req).unwrap();
        assert_eq!(up.url, "https://api.anthropic.com/v1/messages");
        assert_eq!(up.headers["x-api-key"], "sk-ant");
        assert_eq!(up.headers["anthropic-version"], API_VERSION);
    }
}
