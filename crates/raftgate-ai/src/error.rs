//! The one error type of the AI gateway and its mapping to OpenAI-style error bodies.
//!
//! Whatever fails — the client's request, a provider's answer, the network — ends as an
//! [`ApiError`]: an HTTP status for the client and the `{"error": {...}}` body OpenAI's SDKs
//! parse. Provider statuses are mapped in one place ([`ApiError::from_provider`]) so that a
//! provider's 401 (the gateway's credentials are wrong) does not tell the client that *its* key
//! is wrong, and a 529 "overloaded" becomes a 503 clients know how to retry.

use http::StatusCode;

use crate::openai::{ErrorBody, ErrorDetail};

/// An error answered to the client, OpenAI style.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {}", detail.message)]
pub struct ApiError {
    /// The status to answer with.
    pub status: StatusCode,
    /// The body's `error` object.
    pub detail: ErrorDetail,
    /// Seconds after which a refused request may succeed, sent as `Retry-After`.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error with the given status, OpenAI error type and message.
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: ErrorDetail {
                message: message.into(),
                kind: kind.into(),
                param: None,
                code: None,
            },
            retry_after_s: None,
        }
    }

    /// The client's request is wrong; `param` names the field.
    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> ApiError {
        let mut err = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        err.detail.param = param.map(str::to_string);
        err
    }

    /// The client asked for something this provider kind cannot do.
    pub fn unsupported(kind: &str, what: &str) -> ApiError {
        ApiError::invalid_request(
            format!(
                "provider kind {kind} does not support {what}; route this model to a provider that does"
            ),
            None,
        )
    }

    /// The provider answered something the gateway cannot read.
    pub fn bad_upstream(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "api_error", message)
    }

    /// The provider did not answer in time.
    pub fn timeout(provider: &str) -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            format!(
                "provider {provider} did not answer in time; retry, or raise the provider's timeout"
            ),
        )
    }

    /// The provider could not be reached.
    pub fn unreachable(provider: &str, cause: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            format!("provider {provider} could not be reached ({cause}); check its base_url"),
        )
    }

    /// Maps a provider's error status and message to what the client is told.
    pub fn from_provider(provider: &str, status: StatusCode, message: &str) -> ApiError {
        let said = format!(
            "provider {provider} answered {}: {message}",
            status.as_u16()
        );
        let (status, kind, hint) = match status.as_u16() {
            400 | 413 | 422 => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "fix the request",
            ),
            401 | 403 => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                "the gateway's credentials for this provider were refused; an administrator must fix them",
            ),
            404 => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                "the provider does not know this deployment's model or URL; an administrator must fix the model alias",
            ),
            429 => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "retry later",
            ),
            408 | 504 => (StatusCode::GATEWAY_TIMEOUT, "api_error", "retry later"),
            503 | 529 => (StatusCode::SERVICE_UNAVAILABLE, "api_error", "retry later"),
            _ => (StatusCode::BAD_GATEWAY, "api_error", "retry later"),
        };
        ApiError::new(status, kind, format!("{said} ({hint})"))
    }

    /// The body to send.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.detail.clone(),
        }
    }

    /// The body as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body()).unwrap_or_default()
    }
}

/// Parses a provider's JSON answer, naming the provider kind when it is not what its API says.
pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(
    kind: &str,
    body: &'a [u8],
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_upstream(format!(
            "the {kind} provider sent an answer the gateway cannot read ({e}); is the provider's kind right?"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_statuses_map_to_what_the_client_can_act_on() {
        let cases = [
            (400, 400, "invalid_request_error"),
            (401, 502, "api_error"),
            (404, 502, "api_error"),
            (429, 429, "rate_limit_error"),
            (500, 502, "api_error"),
            (529, 503, "api_error"),
            (504, 504, "api_error"),
        ];
        for (from, to, kind) in cases {
            let err = ApiError::from_provider("p", StatusCode::from_u16(from).unwrap(), "boom");
            assert_eq!(err.status.as_u16(), to, "{from}");
            assert_eq!(err.detail.kind, kind);
            assert!(err.detail.message.contains("boom"));
        }
    }

    #[test]
    fn body_is_the_openai_envelope() {
        let err = ApiError::invalid_request("messages must not be empty", Some("messages"));
        let v: serde_json::Value = serde_json::from_slice(&err.to_json()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(v["error"]["code"], serde_json::Value::Null);
    }
}
