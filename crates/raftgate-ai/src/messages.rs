//! The inbound Anthropic-style API (`POST /v1/messages`), served by any provider.
//!
//! A Messages request is translated to the canonical request, the gateway serves it like any
//! chat completion, and the answer is translated back: a complete answer with
//! [`to_messages_response`], a stream chunk by chunk with [`EventWriter`], which opens and
//! closes content blocks as text and tool calls arrive and holds `message_delta` back until the
//! usage is known at the end. Errors use Anthropic's `{"type":"error","error":{...}}` shape.
//! The wire types are the Anthropic provider's ([`crate::providers::anthropic`]).

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use crate::error::ApiError;
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, Extra, FinishReason, FunctionDef,
    ImageUrl, Message, NamedFunction, Role, Stop, StreamOptions, Tool, ToolCall, ToolChoice, Usage,
};
use crate::providers::anthropic::{
    Block, BlockDelta, DeltaUsage, ErrorObject, ImageBlockSource, MessageDeltaBody,
    MessagesRequest, MessagesResponse, MessagesUsage, StreamEvent, TextOrBlocks, ToolChoiceSpec,
    TurnRole, arguments_json, stop_reason,
};
use crate::sse;

/// Translates a Messages request into the canonical request.
pub fn to_chat_request(req: MessagesRequest) -> ChatRequest {
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        messages.push(Message::text(Role::System, system.text()));
    }
    for turn in req.messages {
        match (turn.role, turn.content) {
            (TurnRole::User, TextOrBlocks::Text(t)) => messages.push(Message::text(Role::User, t)),
            (TurnRole::Assistant, TextOrBlocks::Text(t)) => {
                messages.push(Message::text(Role::Assistant, t))
            }
            (TurnRole::User, TextOrBlocks::Blocks(blocks)) => user_blocks(blocks, &mut messages),
            (TurnRole::Assistant, TextOrBlocks::Blocks(blocks)) => {
                messages.push(assistant_blocks(blocks))
            }
        }
    }
    let stream = req.stream.unwrap_or(false);
    ChatRequest {
        model: req.model,
        messages,
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: Some(req.max_tokens),
        stop: req.stop_sequences.map(Stop::Many),
        stream: Some(stream),
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Extra::new(),
        }),
        tools: req.tools.map(|tools| {
            tools
                .into_iter()
                .map(|t| Tool {
                    kind: "function".into(),
                    function: FunctionDef {
                        name: t.name,
                        description: t.description,
                        parameters: Some(t.input_schema),
                        strict: None,
                    },
                })
                .collect()
        }),
        tool_choice: req.tool_choice.map(|c| match c {
            ToolChoiceSpec::Auto => ToolChoice::Mode("auto".into()),
            ToolChoiceSpec::Any => ToolChoice::Mode("required".into()),
            ToolChoiceSpec::None => ToolChoice::Mode("none".into()),
            ToolChoiceSpec::Tool { name } => ToolChoice::Function {
                kind: "function".into(),
                function: NamedFunction { name },
            },
        }),
        user: req.metadata.and_then(|m| m.user_id),
        ..ChatRequest::default()
    }
}

/// A user turn's blocks: tool results become tool messages (first, as OpenAI expects them right
/// after the calls), text and images one user message.
fn user_blocks(blocks: Vec<Block>, messages: &mut Vec<Message>) {
    let mut parts = Vec::new();
    for block in blocks {
        match block {
            Block::Text { text } => parts.push(ContentPart::Text { text }),
            Block::Image { source } => {
                let url = match source {
                    ImageBlockSource::Base64 { media_type, data } => {
                        format!("data:{media_type};base64,{data}")
                    }
                    ImageBlockSource::Url { url } => url,
                };
                parts.push(ContentPart::ImageUrl {
                    image_url: ImageUrl { url, detail: None },
                });
            }
            Block::ToolResult {
                tool_use_id,
                content,
                ..
            } => messages.push(Message {
                role: Role::Tool,
                content: Some(Content::Text(content.map(|c| c.text()).unwrap_or_default())),
                name: None,
                tool_calls: None,
                tool_call_id: Some(tool_use_id),
            }),
            Block::ToolUse { .. } | Block::Unsupported => {}
        }
    }
    if !parts.is_empty() {
        messages.push(Message {
            role: Role::User,
            content: Some(Content::Parts(parts)),
            name: None,
            tool_calls: None,
            tool_call_id: None,
        });
    }
}

fn assistant_blocks(blocks: Vec<Block>) -> Message {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block {
            Block::Text { text: t } => text.push_str(&t),
            Block::ToolUse { id, name, input } => {
                calls.push(ToolCall::function(id, name, input.to_string()))
            }
            _ => {}
        }
    }
    Message {
        role: Role::Assistant,
        content: (!text.is_empty()).then_some(Content::Text(text)),
        name: None,
        tool_calls: (!calls.is_empty()).then_some(calls),
        tool_call_id: None,
    }
}

/// Translates a complete canonical answer into a Messages answer (first choice).
pub fn to_messages_response(resp: ChatResponse) -> MessagesResponse {
    let usage = resp.usage.unwrap_or_default();
    let mut content = Vec::new();
    let mut finish = None;
    if let Some(choice) = resp.choices.into_iter().next() {
        finish = choice.finish_reason;
        if let Some(text) = choice.message.content.filter(|t| !t.is_empty()) {
            content.push(Block::Text { text });
        }
        for call in choice.message.tool_calls.into_iter().flatten() {
            content.push(Block::ToolUse {
                id: call.id,
                name: call.function.name,
                input: tool_input(&call.function.arguments),
            });
        }
    }
    MessagesResponse {
        id: resp.id,
        kind: "message".into(),
        role: TurnRole::Assistant,
        model: resp.model,
        content,
        stop_reason: Some(stop_reason(finish.unwrap_or(FinishReason::Stop)).into()),
        stop_sequence: None,
        usage: MessagesUsage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            ..MessagesUsage::default()
        },
    }
}

/// A call's arguments as the `input` object Anthropic clients expect (`{}` if not an object).
fn tool_input(arguments: &str) -> Value {
    arguments_json(arguments).unwrap_or_else(|| Value::Object(Default::default()))
}

/// Anthropic's error type for a status.
fn error_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An error in Anthropic's shape: `{"type":"error","error":{"type":...,"message":...}}`.
pub fn error_body(err: &ApiError) -> Value {
    serde_json::to_value(StreamEvent::Error {
        error: ErrorObject {
            kind: error_kind(err.status).into(),
            message: err.detail.message.clone(),
        },
    })
    .unwrap_or_default()
}

/// Which content block is open in the stream being written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OpenBlock {
    Text(u32),
    Tool { block: u32, call: u32 },
}

/// Writes a canonical chunk stream as Anthropic stream events.
#[derive(Debug, Default)]
pub struct EventWriter {
    started: bool,
    open: Option<OpenBlock>,
    /// Block index of each tool call index.
    tool_blocks: Vec<(u32, u32)>,
    next_block: u32,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

fn event(out: &mut Vec<Bytes>, ev: &StreamEvent) {
    let name = match ev {
        StreamEvent::MessageStart { .. } => "message_start",
        StreamEvent::ContentBlockStart { .. } => "content_block_start",
        StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
        StreamEvent::ContentBlockStop { .. } => "content_block_stop",
        StreamEvent::MessageDelta { .. } => "message_delta",
        StreamEvent::MessageStop => "message_stop",
        StreamEvent::Ping => "ping",
        StreamEvent::Error { .. } | StreamEvent::Unknown => "error",
    };
    let data = serde_json::to_string(ev).unwrap_or_default();
    out.push(sse::encode(Some(name), &data));
}

impl EventWriter {
    /// A writer for one stream.
    pub fn new() -> EventWriter {
        EventWriter::default()
    }

    /// Appends the events for one chunk to `out`.
    pub fn chunk(&mut self, chunk: &ChatChunk, out: &mut Vec<Bytes>) {
        if !self.started {
            self.started = true;
            let message = MessagesResponse {
                id: chunk.id.clone(),
                kind: "message".into(),
                role: TurnRole::Assistant,
                model: chunk.model.clone(),
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage: MessagesUsage::default(),
            };
            event(out, &StreamEvent::MessageStart { message });
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return;
        };
        if let Some(text) = choice.delta.content.as_ref().filter(|t| !t.is_empty()) {
            let block = match self.open {
                Some(OpenBlock::Text(block)) => block,
                _ => {
                    let block = self.open_block(
                        out,
                        Block::Text {
                            text: String::new(),
                        },
                    );
                    self.open = Some(OpenBlock::Text(block));
                    block
                }
            };
            let delta = BlockDelta::TextDelta { text: text.clone() };
            event(
                out,
                &StreamEvent::ContentBlockDelta {
                    index: block,
                    delta,
                },
            );
        }
        for call in choice.delta.tool_calls.iter().flatten() {
            let function = call.function.as_ref();
            if let Some(id) = &call.id {
                let name = function.and_then(|f| f.name.clone()).unwrap_or_default();
                let block = self.open_block(
                    out,
                    Block::ToolUse {
                        id: id.clone(),
                        name,
                        input: Value::Object(Default::default()),
                    },
                );
                self.open = Some(OpenBlock::Tool {
                    block,
                    call: call.index,
                });
                self.tool_blocks.push((call.index, block));
            }
            let args = function.and_then(|f| f.arguments.as_ref());
            let block = self
                .tool_blocks
                .iter()
                .find(|(c, _)| *c == call.index)
                .map(|(_, b)| *b);
            if let (Some(args), Some(block)) = (args.filter(|a| !a.is_empty()), block) {
                let delta = BlockDelta::InputJsonDelta {
                    partial_json: args.clone(),
                };
                event(
                    out,
                    &StreamEvent::ContentBlockDelta {
                        index: block,
                        delta,
                    },
                );
            }
        }
        if choice.finish_reason.is_some() {
            self.finish = choice.finish_reason;
        }
    }

    fn open_block(&mut self, out: &mut Vec<Bytes>, content_block: Block) -> u32 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        event(
            out,
            &StreamEvent::ContentBlockStart {
                index,
                content_block,
            },
        );
        index
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if let Some(open) = self.open.take() {
            let index = match open {
                OpenBlock::Text(b) | OpenBlock::Tool { block: b, .. } => b,
            };
            event(out, &StreamEvent::ContentBlockStop { index });
        }
    }

    /// The stream ended well: close the open block, send stop reason and usage, then
    /// `message_stop`. `usage` is the gateway's count when the chunks carried none.
    pub fn finish(&mut self, usage: Option<Usage>, out: &mut Vec<Bytes>) {
        self.close_block(out);
        let usage = self.usage.or(usage).unwrap_or_default();
        let delta = MessageDeltaBody {
            stop_reason: Some(stop_reason(self.finish.unwrap_or(FinishReason::Stop)).into()),
            stop_sequence: None,
        };
        let usage = DeltaUsage {
            output_tokens: usage.completion_tokens,
            input_tokens: Some(usage.prompt_tokens),
        };
        event(out, &StreamEvent::MessageDelta { delta, usage });
        event(out, &StreamEvent::MessageStop);
    }

    /// The stream failed: an `error` event, as Anthropic sends one in mid-stream.
    pub fn error(&mut self, err: &ApiError, out: &mut Vec<Bytes>) {
        let data = error_body(err).to_string();
        out.push(sse::encode(Some("error"), &data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{Delta, StreamMeta, ToolCallDelta};
    use crate::sse::{SseEvent, SseParser};
    use serde_json::json;

    #[test]
    fn request_with_system_images_tools_and_results_becomes_canonical() {
        let req: MessagesRequest = serde_json::from_value(json!({
            "model": "claude-alias", "max_tokens": 256,
            "system": [{"type": "text", "text": "Be kind."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is here?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"zoom": 2}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a cat"}]},
                    {"type": "text", "text": "and?"}
                ]}
            ],
            "tools": [{"name": "look", "description": "zoom in", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "stop_sequences": ["STOP"], "temperature": 0.1, "stream": true,
            "metadata": {"user_id": "u9"}
        }))
        .unwrap();
        let chat = to_chat_request(req);
        assert_eq!(chat.messages[0].role, Role::System);
        assert_eq!(chat.messages[0].text_content(), "Be kind.");
        let Some(Content::Parts(parts)) = &chat.messages[1].content else {
            panic!("parts")
        };
        assert_eq!(
            parts[1],
            ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: "data:image/png;base64,iVBOR".into(),
                    detail: None
                }
            }
        );
        let calls = chat.messages[2].tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.arguments, r#"{"zoom":2}"#);
        assert_eq!(chat.messages[3].role, Role::Tool);
        assert_eq!(chat.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(chat.messages[3].text_content(), "a cat");
        assert_eq!(chat.messages[4].text_content(), "and?");
        assert_eq!(chat.max_tokens, Some(256));
        assert_eq!(chat.stop_sequences(), vec!["STOP".to_string()]);
        assert_eq!(chat.tool_choice, Some(ToolChoice::Mode("required".into())));
        assert!(chat.wants_stream_usage());
        assert_eq!(chat.user.as_deref(), Some("u9"));
    }

    #[test]
    fn response_becomes_a_message() {
        let resp: ChatResponse = serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "content": "Let me look.", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "look", "arguments": "{\"zoom\":2}"}}]}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
        }))
        .unwrap();
        let msg = serde_json::to_value(to_messages_response(resp)).unwrap();
        assert_eq!(msg["type"], "message");
        assert_eq!(msg["stop_reason"], "tool_use");
        assert_eq!(
            msg["content"][0],
            json!({"type": "text", "text": "Let me look."})
        );
        assert_eq!(
            msg["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "look", "input": {"zoom": 2}})
        );
        assert_eq!(msg["usage"]["input_tokens"], 11);
        assert_eq!(msg["usage"]["output_tokens"], 4);
    }

    fn parse(bytes: &[Bytes]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for b in bytes {
            parser.feed(b, &mut events).unwrap();
        }
        events
    }

    #[test]
    fn chunks_become_the_anthropic_event_sequence() {
        let meta = StreamMeta {
            id: "chatcmpl-9".into(),
            created: 1,
            model: "gemini-2.5-flash".into(),
        };
        let chunks = [
            ChatChunk::delta(&meta, Delta::start(), None),
            ChatChunk::delta(&meta, Delta::text("Hi"), None),
            ChatChunk::delta(&meta, Delta::text(" there"), None),
            ChatChunk::delta(
                &meta,
                Delta::tool_call(ToolCallDelta::start(
                    0,
                    "call_1".into(),
                    "look".into(),
                    String::new(),
                )),
                None,
            ),
            ChatChunk::delta(
                &meta,
                Delta::tool_call(ToolCallDelta::arguments(0, "{\"zoom\":".into())),
                None,
            ),
            ChatChunk::delta(
                &meta,
                Delta::tool_call(ToolCallDelta::arguments(0, "2}".into())),
                None,
            ),
            ChatChunk::delta(&meta, Delta::default(), Some(FinishReason::ToolCalls)),
            ChatChunk::usage(&meta, Usage::new(7, 9)),
        ];
        let mut writer = EventWriter::new();
        let mut out = Vec::new();
        for c in &chunks {
            writer.chunk(c, &mut out);
        }
        writer.finish(None, &mut out);
        let events = parse(&out);
        let names: Vec<_> = events.iter().map(|e| e.event.clone().unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let data: Vec<Value> = events
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        assert_eq!(data[0]["message"]["model"], "gemini-2.5-flash");
        assert_eq!(data[5]["index"], 1);
        assert_eq!(data[5]["content_block"]["type"], "tool_use");
        assert_eq!(data[5]["content_block"]["id"], "call_1");
        assert_eq!(
            data[7]["delta"],
            json!({"type": "input_json_delta", "partial_json": "2}"})
        );
        assert_eq!(data[9]["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            data[9]["usage"],
            json!({"output_tokens": 9, "input_tokens": 7})
        );
    }

    #[test]
    fn error_event_has_anthropic_shape() {
        let mut out = Vec::new();
        let err = ApiError::from_provider("p", StatusCode::from_u16(529).unwrap(), "busy");
        EventWriter::new().error(&err, &mut out);
        let events = parse(&out);
        assert_eq!(events[0].event.as_deref(), Some("error"));
        let v: Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "overloaded_error");
    }
}
