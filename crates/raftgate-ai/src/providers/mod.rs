//! Provider kinds: how each provider's API is spoken, one file per kind.
//!
//! A [`Provider`] turns a canonical (OpenAI) request into the provider's HTTP request, the
//! provider's answer back into canonical form, its event stream into `chat.completion.chunk`s
//! (through a stateful [`StreamTranslator`] fed one event at a time, so nothing is buffered),
//! and its error bodies into [`ApiError`]s. Adding a kind is a new file here, a variant of
//! [`ProviderKind`] (in `raftgate-model`) and its arm in [`adapter`].

pub mod anthropic;
pub mod azure;
pub mod cohere;
pub mod gemini;
pub mod openai;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Serialize;

use crate::error::ApiError;
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, Usage,
};
use crate::sse::SseEvent;

pub use raftgate_model::ai::ProviderKind;

/// The translation for a provider kind (the kind itself is a replicated setting in
/// `raftgate-model`; how it is spoken lives here).
pub fn adapter(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::Openai => &openai::OpenAi,
        ProviderKind::Azure => &azure::Azure,
        ProviderKind::Anthropic => &anthropic::Anthropic,
        ProviderKind::Gemini => &gemini::Gemini,
        ProviderKind::Cohere => &cohere::Cohere,
    }
}

/// Where and as whom one deployment is called.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// The provider's base URL (for OpenAI kinds including `/v1`).
    pub base_url: &'a str,
    /// The credential, if the provider needs one.
    pub api_key: Option<&'a str>,
    /// The provider's model name (Azure: the deployment name).
    pub model: &'a str,
    /// Azure's `api-version`; ignored by other kinds.
    pub api_version: Option<&'a str>,
}

impl Endpoint<'_> {
    /// `base_url` joined with `path` by exactly one slash.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.base_url.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }
}

/// An HTTP request to send to a provider.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Absolute URL.
    pub url: String,
    /// Headers, credentials included.
    pub headers: HeaderMap,
    /// JSON body (always a POST).
    pub body: Bytes,
}

impl UpstreamRequest {
    /// A JSON POST to `url` with the serialized `body`.
    pub fn json(url: String, body: &impl Serialize) -> Result<UpstreamRequest, ApiError> {
        let body = serde_json::to_vec(body).map_err(|e| {
            ApiError::invalid_request(format!("the request cannot be encoded: {e}"), None)
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(UpstreamRequest {
            url,
            headers,
            body: body.into(),
        })
    }

    /// Adds a credential or version header; a value with bytes HTTP forbids is refused.
    pub fn header(mut self, name: &'static str, value: &str) -> Result<Self, ApiError> {
        let value = HeaderValue::from_str(value).map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                format!(
                    "the provider's {name} contains characters not allowed in a header; an administrator must fix it"
                ),
            )
        })?;
        self.headers.insert(HeaderName::from_static(name), value);
        Ok(self)
    }

    /// Adds `Authorization: Bearer <key>` when the provider has a key.
    pub fn bearer(self, key: Option<&str>) -> Result<Self, ApiError> {
        let value = key.map(|key| format!("Bearer {key}"));
        self.credential("authorization", value.as_deref())
    }

    /// Adds the credential header when the provider has a key (keyless servers get none).
    pub fn credential(self, name: &'static str, key: Option<&str>) -> Result<Self, ApiError> {
        match key {
            Some(key) => self.header(name, key),
            None => Ok(self),
        }
    }
}

/// One provider kind's translation.
pub trait Provider: Send + Sync {
    /// The kind's name, for messages.
    fn name(&self) -> &'static str;

    /// The HTTP request for a chat completion (streaming when `req.stream`).
    fn chat_request(&self, ep: &Endpoint, req: &ChatRequest) -> Result<UpstreamRequest, ApiError>;

    /// A complete (non-streaming) answer in canonical form.
    fn chat_response(&self, body: &[u8]) -> Result<ChatResponse, ApiError>;

    /// A fresh translator for one streamed answer.
    fn stream_translator(&self) -> Box<dyn StreamTranslator>;

    /// The message inside the provider's error body (the body itself when unreadable); the
    /// common `{"error": {"message": ...}}` shape unless a kind says otherwise.
    fn error_message(&self, body: &[u8]) -> String {
        error_text(body)
    }

    /// The HTTP request for embeddings.
    fn embeddings_request(
        &self,
        _ep: &Endpoint,
        _req: &EmbeddingsRequest,
    ) -> Result<UpstreamRequest, ApiError> {
        Err(ApiError::unsupported(self.name(), "embeddings"))
    }

    /// Embeddings in canonical form; `model` is what the client asked for.
    fn embeddings_response(
        &self,
        _body: &[u8],
        _model: &str,
    ) -> Result<EmbeddingsResponse, ApiError> {
        Err(ApiError::unsupported(self.name(), "embeddings"))
    }
}

/// Turns one provider's stream events into chunks, one event at a time.
pub trait StreamTranslator: Send {
    /// Translates one event into zero or more chunks appended to `out`. A usage-only chunk
    /// (no choices) is produced whenever the provider reports final usage; the gateway drops it
    /// for clients that did not ask for it. A provider error event is returned as `Err`.
    fn event(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Step, ApiError>;

    /// The provider closed the stream; emit what was held back (e.g. the usage chunk).
    fn finish(&mut self, out: &mut Vec<ChatChunk>) -> Result<(), ApiError>;

    /// The usage reported so far, if any.
    fn usage(&self) -> Option<Usage>;
}

/// Whether a stream goes on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More events follow.
    More,
    /// The provider said this was the last event.
    Done,
}

/// The texts of an embeddings request, for kinds that cannot embed token arrays.
pub(crate) fn embedding_texts<'a>(
    kind: &str,
    req: &'a EmbeddingsRequest,
) -> Result<Vec<&'a str>, ApiError> {
    req.input.texts().ok_or_else(|| {
        ApiError::invalid_request(
            format!(
                "the {kind} provider embeds text only; send input as a string or a list of strings"
            ),
            Some("input"),
        )
    })
}

/// Provider error text: `error.message` of the common `{"error": {"message": ...}}` shape, else
/// the body as text (cut short), so the client sees what the provider said.
pub(crate) fn error_text(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(msg) = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
    {
        return msg.to_string();
    }
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(500);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_joins_with_one_slash() {
        let ep = Endpoint {
            base_url: "http://h/v1/",
            api_key: None,
            model: "m",
            api_version: None,
        };
        assert_eq!(ep.url("/chat/completions"), "http://h/v1/chat/completions");
    }

    #[test]
    fn error_text_reads_the_common_envelope_or_falls_back_to_text() {
        assert_eq!(
            error_text(br#"{"error":{"message":"bad key","type":"x"}}"#),
            "bad key"
        );
        assert_eq!(
            error_text(b"upstream connect error"),
            "upstream connect error"
        );
    }

    #[test]
    fn header_values_with_newlines_are_refused() {
        let req = UpstreamRequest::json("http://h".into(), &serde_json::json!({})).unwrap();
        assert!(req.header("x-api-key", "a\nb").is_err());
    }
}
