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
    /// The disk holding the node's data is full.
    #[error("storage is full")]
    StorageFull,
    /// The shared state is unreachable and the node fails closed.
    #[error("the shared state is unreachable; retry shortly")]
    SharedUnavailable,
    /// A rules file failed to compile.
    #[error("the rules have errors")]
    InvalidRules(RuleErrors),
    /// A model file failed to load.
    #[error("the model could not be loaded")]
    InvalidModel(String),
    /// No credentials, or credentials that are not valid (the message says which).
    #[error("{0}")]
    Unauthorized(String),
    /// A sign-in with a wrong user name or password (it does not say which).
    #[error("wrong user name or password")]
    InvalidCredentials,
    /// The caller may not do this.
    #[error("{message}")]
    Forbidden {
        /// Machine-readable reason (`forbidden`, `cross_origin`).
        code: &'static str,
        /// What was refused (`authorization`, `origin`).
        field: &'static str,
        /// The reason in words.
        message: String,
    },
    /// Too many failed sign-ins: wait this many seconds.
    #[error("too many failed sign-ins; retry in {0} s")]
    TooManyAttempts(u64),
    /// An API key sent more requests than its rate limit allows: retry after this many
    /// seconds.
    #[error("this API key is over its rate limit of {} requests per second (burst {}); retry in {retry_after} s", limit.per_second, limit.burst)]
    RateLimited {
        /// Whole seconds until a request would pass.
        retry_after: u64,
        /// The limit that applies.
        limit: crate::auth::rate::RateLimit,
    },
    /// The thing to create exists already (the field names what collides).
    #[error("{message}")]
    AlreadyExists {
        /// The field that collides.
        field: &'static str,
        /// The problem.
        message: String,
    },
    /// As many requests of this kind as the node runs at once are running: retry later.
    #[error("{0}")]
    Busy(String),
    /// The rules file could not be written (the cause is logged). `in_force`: the new rules
    /// run anyway, but a restart would bring the old file back.
    #[error("the rules file could not be written")]
    RulesNotSaved {
        /// Whether the new rules are in force regardless.
        in_force: bool,
    },
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
            HostError::StorageFull(cause) => {
                tracing::error!(%cause, "storage full");
                ApiError::StorageFull
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
            ApiError::Overloaded
            | ApiError::StorageUnavailable
            | ApiError::StorageFull
            | ApiError::SharedUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InvalidRules(_) | ApiError::InvalidModel(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unauthorized(_) | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::TooManyAttempts(_) | ApiError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::AlreadyExists { .. } => StatusCode::CONFLICT,
            ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) | ApiError::RulesNotSaved { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
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
            ApiError::StorageFull => {
                json!({"code": "storage_full", "message": "the disk holding the records is full: decisions cannot be stored until space is freed; nothing was recorded"})
            }
            ApiError::InvalidRules(errors) => json!({
                "code": "invalid_rules",
                "field": "source",
                "message": format!("the rules have {} error(s); the running rules are unchanged", errors.0.len()),
                "errors": errors.0,
            }),
            ApiError::Busy(m) => json!({"code": "busy", "message": m}),
            ApiError::RulesNotSaved { in_force: true } => json!({
                "code": "rules_not_saved",
                "message": "the new rules are in force, but the rules file could not be written (see the server log): a restart would bring the old rules back",
            }),
            ApiError::RulesNotSaved { in_force: false } => json!({
                "code": "rules_not_saved",
                "message": "the rules file could not be written (see the server log); the running rules are unchanged",
            }),
            ApiError::InvalidModel(m) => json!({
                "code": "invalid_model",
                "message": format!("{m}; the running models are unchanged"),
            }),
            ApiError::Unauthorized(m) => {
                json!({"code": "unauthorized", "field": "authorization", "message": m})
            }
            ApiError::InvalidCredentials => {
                json!({"code": "invalid_credentials", "field": "credentials", "message": self.to_string()})
            }
            ApiError::Forbidden {
                code,
                field,
                message,
            } => json!({"code": code, "field": field, "message": message}),
            ApiError::TooManyAttempts(_) => {
                json!({"code": "too_many_attempts", "field": "credentials", "message": self.to_string()})
            }
            ApiError::RateLimited { retry_after, limit } => json!({
                "code": "rate_limited",
                "field": "authorization",
                "message": self.to_string(),
                "retry_after": retry_after,
                "rate_per_second": limit.per_second,
                "burst": limit.burst,
            }),
            ApiError::AlreadyExists { field, message } => {
                json!({"code": "conflict", "field": field, "message": message})
            }
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
            ApiError::Busy(_) => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::StorageUnavailable | ApiError::StorageFull => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::TooManyAttempts(secs)
            | ApiError::RateLimited {
                retry_after: secs, ..
            } => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            ApiError::Unauthorized(_) => {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"ringfence\""),
                );
            }
            _ => {}
        }
        res
    }
}
