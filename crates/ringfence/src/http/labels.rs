//! `POST /v1/labels`: confirmed fraud / not fraud for a transaction.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ringfence_core::event::FieldError;
use serde::Deserialize;

use super::error::ApiError;
use super::transactions::body_or_error;
use super::ApiContext;

/// A label as clients send it: `label` ("fraud" / "not_fraud") or `fraud` (bool).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    /// The labelled transaction.
    pub transaction_id: Option<String>,
    /// `fraud` or `not_fraud` (also `legit`).
    pub label: Option<String>,
    /// Alternative to `label`.
    pub fraud: Option<bool>,
    /// Who labels (analyst id, chargeback feed...).
    pub source: Option<String>,
    /// Free text, at most 2000 characters.
    pub note: Option<String>,
}

/// Stores the label and updates ring membership.
pub async fn create(
    State(cx): State<ApiContext>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = body_or_error(body)?;
    let req: LabelRequest = serde_json::from_slice(&body).map_err(|e| {
        let msg = e.to_string();
        if let Some(field) = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            ApiError::InvalidField(FieldError::new(field, "is not a label field"))
        } else {
            ApiError::MalformedJson(msg)
        }
    })?;
    let id = match req.transaction_id {
        Some(id) if !id.is_empty() && id.len() <= ringfence_core::event::MAX_ID_LEN => id,
        Some(_) => return Err(FieldError::new("transaction_id", "must be 1 to 128 bytes").into()),
        None => return Err(FieldError::new("transaction_id", "is required").into()),
    };
    let fraud = match (req.label.as_deref(), req.fraud) {
        (Some("fraud"), None) => true,
        (Some("not_fraud" | "legit"), None) => false,
        (Some(_), None) => {
            return Err(FieldError::new("label", "must be `fraud` or `not_fraud`").into())
        }
        (None, Some(f)) => f,
        (Some(_), Some(_)) => {
            return Err(FieldError::new("fraud", "give either `label` or `fraud`, not both").into())
        }
        (None, None) => {
            return Err(FieldError::new("label", "is required (`fraud` or `not_fraud`)").into())
        }
    };
    if req.note.as_ref().is_some_and(|n| n.chars().count() > 2000) {
        return Err(FieldError::new("note", "is longer than 2000 characters").into());
    }
    if req.source.as_ref().is_some_and(|s| s.len() > 128) {
        return Err(FieldError::new("source", "is longer than 128 bytes").into());
    }
    let record = cx.host.label(id, fraud, req.source, req.note).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(record).map_err(|e| ApiError::Internal(e.to_string()))?),
    ))
}
