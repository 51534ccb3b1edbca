//! The one place where failures become HTTP answers: every admin error is an [`ApiError`], and
//! every [`ApiError`] becomes a JSON [`ErrorBody`] with the right status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use raftgate_cluster::WriteError;
use raftgate_import::ImportError;
use raftgate_model::api::ErrorBody;
use raftgate_model::{Rejection, ValidationError};

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or a parameter is not acceptable.
    #[error("{message}")]
    BadRequest {
        /// The field at fault, if any.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The body is larger than the admin API accepts.
    #[error("request body is larger than {0} bytes; send less")]
    TooLarge(usize),
    /// No such resource or endpoint.
    #[error("{0}")]
    NotFound(String),
    /// The method is not supported on this path.
    #[error("method not allowed on this path; see /openapi.json for the supported ones")]
    MethodNotAllowed,
    /// Missing or wrong admin token.
    #[error("missing or invalid admin token; send 'Authorization: Bearer <token>'")]
    Unauthorized,
    /// The token is valid but may not do this.
    #[error("admin token '{actor}' {reason}")]
    Forbidden {
        /// The token's name.
        actor: String,
        /// Why, and what would be allowed.
        reason: String,
    },
    /// The cluster could not carry out the request.
    #[error(transparent)]
    Cluster(#[from] WriteError),
    /// The request is well formed, but what it acts on is not in a state that allows it.
    #[error("{message}")]
    Conflict {
        /// The stable code of the error body.
        code: &'static str,
        /// What is wrong and what to do about it.
        message: String,
    },
    /// The metrics could not be written out as text (a bug: encoding into memory cannot fail
    /// otherwise).
    #[error("encoding the metrics failed ({0}); please report this as a bug")]
    Metrics(#[source] std::fmt::Error),
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::BadRequest {
            field: Some(e.field),
            message: e.message,
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Invalid(e) => e.into(),
            ImportError::NotAService { .. } => ApiError::Conflict {
                code: "backend_not_service",
                message: e.to_string(),
            },
            ImportError::NotText | ImportError::Syntax { .. } | ImportError::NotAMapping => {
                ApiError::BadRequest {
                    field: None,
                    message: e.to_string(),
                }
            }
        }
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, Option<String>) {
        match self {
            ApiError::BadRequest { field, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request", field.clone())
            }
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code, None),
            ApiError::Metrics(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics_failed", None),
            ApiError::Cluster(e) => match e {
                WriteError::Rejected(r) => match r {
                    Rejection::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found", None),
                    Rejection::VersionMismatch { .. } => {
                        (StatusCode::PRECONDITION_FAILED, "version_mismatch", None)
                    }
                    Rejection::InUse { .. } => (StatusCode::CONFLICT, "in_use", None),
                    Rejection::PathTaken { field, .. } => {
                        (StatusCode::CONFLICT, "path_taken", Some(field.clone()))
                    }
                    Rejection::MissingReference { field, .. } => (
                        StatusCode::BAD_REQUEST,
                        "missing_reference",
                        Some(field.clone()),
                    ),
                    Rejection::MissingSecret { field } | Rejection::Invalid { field, .. } => (
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        Some(field.clone()),
                    ),
                    Rejection::Forbidden { field, .. } => {
                        (StatusCode::FORBIDDEN, "forbidden", field.clone())
                    }
                    Rejection::Revoked { .. } => (StatusCode::UNAUTHORIZED, "unauthorized", None),
                    Rejection::NameTaken { .. } => (StatusCode::CONFLICT, "name_taken", None),
                    Rejection::OtherTeam { field, .. } => {
                        (StatusCode::BAD_REQUEST, "other_team", Some(field.clone()))
                    }
                    Rejection::IllegalTransition { .. } => {
                        (StatusCode::CONFLICT, "illegal_transition", None)
                    }
                    Rejection::NoSubscriptions { .. } => {
                        (StatusCode::CONFLICT, "no_subscriptions", None)
                    }
                    Rejection::AlreadySubscribed { .. } => {
                        (StatusCode::CONFLICT, "already_subscribed", None)
                    }
                    Rejection::NotPending { .. } => (StatusCode::CONFLICT, "not_pending", None),
                    Rejection::UnknownPlan { .. } => {
                        (StatusCode::BAD_REQUEST, "unknown_plan", Some("plan".into()))
                    }
                    Rejection::PlanInUse { .. } => {
                        (StatusCode::CONFLICT, "in_use", Some("plans".into()))
                    }
                },
                WriteError::NoLeader { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_leader", None),
                WriteError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout", None),
                WriteError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request", None),
                WriteError::BadMember { field, .. } => (
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some(field.clone()),
                ),
                WriteError::Unsafe(_) => (StatusCode::CONFLICT, "unsafe_membership_change", None),
                WriteError::NoQuorum(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_quorum", None),
                WriteError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", None),
                WriteError::Stopped(_) => (StatusCode::SERVICE_UNAVAILABLE, "node_stopped", None),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = self.parts();
        if status.is_server_error() {
            tracing::warn!(error = %self, "admin request failed");
        }
        let body = ErrorBody {
            error: code.to_string(),
            message: self.to_string(),
            field,
        };
        let mut response = (status, axum::Json(body)).into_response();
        match &self {
            ApiError::Cluster(
                WriteError::NoLeader { retry_after } | WriteError::Timeout { retry_after },
            ) => {
                let secs = retry_after.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            ApiError::Unauthorized
            | ApiError::Cluster(WriteError::Rejected(Rejection::Revoked { .. })) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"raftgate-admin\""),
                );
            }
            _ => {}
        }
        response
    }
}
