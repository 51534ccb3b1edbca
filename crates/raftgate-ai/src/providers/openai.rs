//! OpenAI and every OpenAI-compatible server (Mistral, DeepSeek, Groq, Together, vLLM, Ollama,
//! LM Studio): the canonical API itself, so translation is only the model name, the bearer
//! credential and, for streams, asking for the usage chunk (`stream_options.include_usage`) so
//! accounting has the provider's own counts. Azure reuses these pieces with its own URLs.

use super::{Endpoint, Provider, Step, StreamTranslator, UpstreamRequest, error_text};
use crate::error::{ApiError, parse_json};
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, StreamOptions,
    Usage,
};
use crate::sse::SseEvent;

/// The OpenAI kind.
pub struct OpenAi;

const NAME: &str = "openai";

/// The body sent upstream: the client's request with the provider's model and, for a stream,
/// the usage chunk requested. `model` is `None` for Azure, whose URL names the deployment.
pub(crate) fn chat_body(req: &ChatRequest, model: Option<&str>) -> ChatRequest {
    let mut body = req.clone();
    if let Some(model) = model {
        body.model = model.to_string();
    }
    if body.is_stream() {
        body.stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
    } else {
        body.stream_options = None;
    }
    body
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        NAME
    }

    fn chat_request(&self, ep: &Endpoint, req: &ChatRequest) -> Result<UpstreamRequest, ApiError> {
        let upstream =
            UpstreamRequest::json(ep.url("chat/completions"), &chat_body(req, Some(ep.model)))?;
        upstream.bearer(ep.api_key)
    }

    fn chat_response(&self, body: &[u8]) -> Result<ChatResponse, ApiError> {
        parse_json(NAME, body)
    }

    fn stream_translator(&self) -> Box<dyn StreamTranslator> {
        Box::new(OpenAiStream::default())
    }

    fn embeddings_request(
        &self,
        ep: &Endpoint,
        req: &EmbeddingsRequest,
    ) -> Result<UpstreamRequest, ApiError> {
        let mut body = req.clone();
        body.model = ep.model.to_string();
        UpstreamRequest::json(ep.url("embeddings"), &body)?.bearer(ep.api_key)
    }

    fn embeddings_response(
        &self,
        body: &[u8],
        _model: &str,
    ) -> Result<EmbeddingsResponse, ApiError> {
        parse_json(NAME, body)
    }
}

/// Chunks pass through as they are; the translator watches for usage, errors and the end: a
/// stream is whole when it sent `[DONE]`, or when every choice it began got its
/// `finish_reason` (some compatible servers close without `[DONE]`); one that closes otherwise
/// was cut off, and must not look finished.
#[derive(Default)]
pub(crate) struct OpenAiStream {
    usage: Option<Usage>,
    done: bool,
    /// Choices begun, and those that got their finish_reason.
    begun: std::collections::BTreeSet<u32>,
    finished: std::collections::BTreeSet<u32>,
}

impl StreamTranslator for OpenAiStream {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Step, ApiError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Step::Done);
        }
        match serde_json::from_str::<ChatChunk>(data) {
            Ok(chunk) => {
                if chunk.usage.is_some() {
                    self.usage = chunk.usage;
                }
                for choice in &chunk.choices {
                    self.begun.insert(choice.index);
                    if choice.finish_reason.is_some() {
                        self.finished.insert(choice.index);
                    }
                }
                out.push(chunk);
                Ok(Step::More)
            }
            Err(e) => {
                let value: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                match value.get("error") {
                    Some(_) => Err(ApiError::bad_upstream(format!(
                        "the provider failed in mid-stream: {}",
                        error_text(data.as_bytes())
                    ))),
                    None => Err(ApiError::bad_upstream(format!(
                        "the provider sent a stream event that is not a chat.completion.chunk ({e})"
                    ))),
                }
            }
        }
    }

    fn finish(&mut self, _out: &mut Vec<ChatChunk>) -> Result<(), ApiError> {
        if self.done || (!self.begun.is_empty() && self.begun == self.finished) {
            return Ok(());
        }
        Err(ApiError::bad_upstream(
            "the openai provider closed the stream before its end (no finish_reason nor [DONE]); the answer is incomplete",
        ))
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{FinishReason, Message, Role};
    use serde_json::json;

    fn ep() -> Endpoint<'static> {
        Endpoint {
            base_url: "https://api.openai.com/v1",
            api_key: Some("sk-test"),
            model: "gpt-4o-2024-08-06",
            api_version: None,
        }
    }

    #[test]
    fn stream_request_asks_for_usage_and_names_the_provider_model() {
        let req = ChatRequest {
            model: "fast".into(),
            messages: vec![Message::text(Role::User, "hi")],
            stream: Some(true),
            ..ChatRequest::default()
        };
        let up = OpenAi.chat_request(&ep(), &req).unwrap();
        assert_eq!(up.url, "https://api.openai.com/v1/chat/completions");
        assert_eq!(up.headers["authorization"], "Bearer sk-test");
        let body: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["model"], "gpt-4o-2024-08-06");
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn keyless_compatible_servers_get_no_authorization() {
        let ollama = Endpoint {
            base_url: "http://127.0.0.1:11434/v1",
            api_key: None,
            model: "llama3.2",
            api_version: None,
        };
        let up = OpenAi
            .chat_request(&ollama, &ChatRequest::default())
            .unwrap();
        assert!(up.headers.get("authorization").is_none());
    }

    #[test]
    fn stream_passes_chunks_records_usage_and_ends_on_done() {
        let mut t = OpenAi.stream_translator();
        let mut out = Vec::new();
        let events = [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#,
        ];
        for data in events {
            let step = t
                .event(
                    &SseEvent {
                        event: None,
                        data: data.into(),
                    },
                    &mut out,
                )
                .unwrap();
            assert_eq!(step, Step::More);
        }
        let done = t
            .event(
                &SseEvent {
                    event: None,
                    data: "[DONE]".into(),
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(done, Step::Done);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].extra["system_fingerprint"], "fp");
        assert_eq!(out[2].choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(t.usage(), Some(Usage::new(9, 1)));
    }

    #[test]
    fn error_in_mid_stream_is_an_error() {
        let mut t = OpenAi.stream_translator();
        let err = t
            .event(
                &SseEvent {
                    event: None,
                    data: r#"{"error":{"message":"overloaded","type":"server_error"}}"#.into(),
                },
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(err.detail.message.contains("overloaded"));
    }
}
