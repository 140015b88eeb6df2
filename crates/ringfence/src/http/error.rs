//! The API's error type: each variant maps itself to a status code and a JSON body that
//! names the field and the problem. Internal causes are logged, never sent to the caller.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ringfence_core::event::FieldError;
use ringfence_core::rules::RuleErrors;
use serde_json::json;

use crate::host::HostError;

/// Everything a route can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing or has a bad value.
    #[error("{0}")]
    InvalidField(#[from] FieldError),
    /// The body is not valid JSON (or NDJSON).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body or batch is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// A query or path parameter is invalid.
    #[error("{field}: {message}")]
    BadParam {
        /// The parameter.
        field: &'static str,
        /// The problem.
        message: String,
    },
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. closing a closed case).
    #[error("{0}")]
    Conflict(String),
    /// The server is at capacity.
    #[error("the server is at capacity; retry shortly")]
    Overloaded,
    /// The node cannot store decisions.
    #[error("storage is unavailable")]
    StorageUnavailable,
    /// The shared state is unreachable and the node fails closed.
    #[error("the shared state is unreachable; retry shortly")]
    SharedUnavailable,
    /// A rules file failed to compile.
    #[error("the rules have errors")]
    InvalidRules(RuleErrors),
    /// A model file failed to load.
    #[error("the model could not be loaded")]
    InvalidModel(String),
    /// Anything else; the cause is logged.
    #[error("internal error")]
    Internal(String),
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Overloaded => ApiError::Overloaded,
            HostError::Storage(cause) => {
                tracing::error!(%cause, "storage unavailable");
                ApiError::StorageUnavailable
            }
            HostError::NotFound(m) => ApiError::NotFound(m),
            HostError::SharedUnavailable => ApiError::SharedUnavailable,
            HostError::Store(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl ApiError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidField(_) | ApiError::MalformedJson(_) | ApiError::BadParam { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Overloaded | ApiError::StorageUnavailable | ApiError::SharedUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::InvalidRules(_) | ApiError::InvalidModel(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `{"code", "field"?, "message"}` object (also used per line in batch responses).
    pub fn body(&self) -> serde_json::Value {
        match self {
            ApiError::InvalidField(e) => {
                json!({"code": "invalid_field", "field": e.field, "message": format!("{}: {}", e.field, e.problem)})
            }
            ApiError::MalformedJson(m) => {
                json!({"code": "malformed_json", "field": "body", "message": format!("malformed JSON: {m}")})
            }
            ApiError::TooLarge(m) => json!({"code": "too_large", "field": "body", "message": m}),
            ApiError::BadParam { field, message } => {
                json!({"code": "invalid_parameter", "field": field, "message": format!("{field}: {message}")})
            }
            ApiError::NotFound(m) => json!({"code": "not_found", "message": m}),
            ApiError::Conflict(m) => json!({"code": "conflict", "message": m}),
            ApiError::Overloaded => json!({"code": "overloaded", "message": self.to_string()}),
            ApiError::SharedUnavailable => {
                json!({"code": "shared_state_unavailable", "message": "the shared state (redis) is unreachable and this node fails closed; nothing was recorded"})
            }
            ApiError::StorageUnavailable => {
                json!({"code": "storage_unavailable", "message": "decisions cannot be stored right now; nothing was recorded"})
            }
            ApiError::InvalidRules(errors) => json!({
                "code": "invalid_rules",
                "message": format!("the rules have {} error(s); the running rules are unchanged", errors.0.len()),
                "errors": errors.0,
            }),
            ApiError::InvalidModel(m) => json!({
                "code": "invalid_model",
                "message": format!("{m}; the running models are unchanged"),
            }),
            ApiError::Internal(_) => json!({"code": "internal", "message": "internal error"}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let status = self.status();
        let mut res = (status, Json(json!({ "error": self.body() }))).into_response();
        match self {
            ApiError::Overloaded | ApiError::SharedUnavailable => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::StorageUnavailable => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        res
    }
}
