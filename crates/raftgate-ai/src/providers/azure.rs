//! Azure OpenAI: OpenAI's bodies and streams at per-deployment URLs
//! (`{base}/openai/deployments/{deployment}/chat/completions?api-version=...`) with the key in an
//! `api-key` header. The deployment name is the endpoint's model; bodies, streams and errors are
//! OpenAI's, so they are read by the OpenAI kind's code.

use super::openai::{OpenAi, OpenAiStream, chat_body};
use super::{Endpoint, Provider, StreamTranslator, UpstreamRequest};
use crate::error::ApiError;
use crate::openai::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};

/// The Azure OpenAI kind.
pub struct Azure;

/// The `api-version` used when a provider names none: the latest generally available one.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

fn deployment_url(ep: &Endpoint, operation: &str) -> String {
    ep.url(&format!(
        "openai/deployments/{}/{operation}?api-version={}",
        ep.model,
        ep.api_version.unwrap_or(DEFAULT_API_VERSION)
    ))
}

impl Provider for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn chat_request(&self, ep: &Endpoint, req: &ChatRequest) -> Result<UpstreamRequest, ApiError> {
        let up = UpstreamRequest::json(
            deployment_url(ep, "chat/completions"),
            &chat_body(req, None),
        )?;
        up.credential("api-key", ep.api_key)
    }

    fn chat_response(&self, body: &[u8]) -> Result<ChatResponse, ApiError> {
        OpenAi.chat_response(body)
    }

    fn stream_translator(&self) -> Box<dyn StreamTranslator> {
        Box::new(OpenAiStream::default())
    }

    fn embeddings_request(
        &self,
        ep: &Endpoint,
        req: &EmbeddingsRequest,
    ) -> Result<UpstreamRequest, ApiError> {
        UpstreamRequest::json(deployment_url(ep, "embeddings"), req)?
            .credential("api-key", ep.api_key)
    }

    fn embeddings_response(
        &self,
        body: &[u8],
        model: &str,
    ) -> Result<EmbeddingsResponse, ApiError> {
        OpenAi.embeddings_response(body, model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{Message, Role};

    #[test]
    fn deployment_url_version_and_key_header() {
        let ep = Endpoint {
            base_url: "https://contoso.openai.azure.com/",
            api_key: Some("azkey"),
            model: "gpt4o-prod",
            api_version: Some("2024-06-01"),
        };
        let req = ChatRequest {
            model: "smart".into(),
            messages: vec![Message::text(Role::User, "hi")],
            stream: Some(true),
            ..ChatRequest::default()
        };
        let up = Azure.chat_request(&ep, &req).unwrap();
        assert_eq!(
            up.url,
            "https://contoso.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-06-01"
        );
        assert_eq!(up.headers["api-key"], "azkey");
        assert!(up.headers.get("authorization").is_none());
        let body: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn default_api_version_is_used_when_none_is_configured() {
        let ep = Endpoint {
            base_url: "https://x.openai.azure.com",
            api_key: None,
            model: "emb",
            api_version: None,
        };
        let req: EmbeddingsRequest =
            serde_json::from_value(serde_json::json!({"model": "e", "input": "hi"})).unwrap();
        let up = Azure.embeddings_request(&ep, &req).unwrap();
        assert!(
            up.url
                .ends_with("/openai/deployments/emb/embeddings?api-version=2024-10-21")
        );
    }
}
