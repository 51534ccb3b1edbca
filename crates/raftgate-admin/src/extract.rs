//! Request parsing with errors that name the field at fault, shared by all handlers.

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{ApiError, MAX_BODY};

/// `?consistent=true` asks for a linearizable read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default)]
    pub consistent: bool,
}

/// Parses the read query, turning axum's plain-text rejection into a JSON error.
pub fn read_query(q: Result<Query<ReadQuery>, QueryRejection>) -> Result<ReadQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::BadRequest {
        field: Some("consistent".into()),
        message: format!(
            "bad query string: {}; use ?consistent=true or false",
            e.body_text()
        ),
    })
}

/// Parses a JSON body into `T`; errors name the JSON path of the bad field.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(MAX_BODY)
        } else {
            ApiError::BadRequest {
                field: None,
                message: format!("cannot read request body: {}", e.body_text()),
            }
        }
    })?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // serde reports unknown and missing fields at the enclosing object; name the field itself.
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        // serde_path_to_error writes "." for the root and "?" where it could not tell.
        let path = if path == "?" { ".".to_string() } else { path };
        let field = match (named, path.as_str()) {
            (Some(f), ".") => Some(f.to_string()),
            // An unknown field's path already ends with it; a missing one's stops at its parent.
            (Some(f), p) if p == f || p.ends_with(&format!(".{f}")) => Some(p.to_string()),
            (Some(f), p) => Some(format!("{p}.{f}")),
            (None, ".") => None,
            (None, p) => Some(p.to_string()),
        };
        ApiError::BadRequest {
            field,
            message: format!("invalid JSON body: {message}"),
        }
    })?;
    de.end().map_err(|e| ApiError::BadRequest {
        field: None,
        message: format!("invalid JSON body: {e}"),
    })?;
    Ok(parsed)
}

/// Reads `If-Match: <version>` (quotes allowed); `None` when absent.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest {
            field: Some("If-Match".into()),
            message:
                "If-Match must be a resource version, e.g. If-Match: \"42\" (0: must not exist yet)"
                    .into(),
        })
}

/// Answer for paths that do not exist.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see /openapi.json".into())
}

/// Answer for methods a path does not support.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::ServiceSpec;

    fn field_of(body: &str) -> Option<String> {
        match json_body::<ServiceSpec>(Ok(Bytes::from(body.to_string()))) {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(r#"{"targets":[],"colour":"red"}"#).as_deref(),
            Some("colour")
        );
        assert_eq!(
            field_of(r#"{"targets":[{"url":"http://a:1","weight":-1}]}"#).as_deref(),
            Some("targets[0].weight")
        );
        assert_eq!(
            field_of(r#"{"targets":[{"url":"http://a:1","wait":1}]}"#).as_deref(),
            Some("targets[0].wait")
        );
        assert_eq!(
            field_of(r#"{"targets":[{"weight":1}]}"#).as_deref(),
            Some("targets[0].url")
        );
        assert_eq!(field_of("{not json").as_deref(), None);
        assert_eq!(field_of(r#"{"targets":[]} trailing"#).as_deref(), None);
    }
}
