//! `GET /v1/alerts`: the alert queue, newest first.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;

use super::error::ApiError;
use super::ApiContext;
use crate::store::AlertQuery;

/// Alerts filtered by category, account or decision, paged with `before`.
pub async fn list(
    State(cx): State<ApiContext>,
    q: Result<Query<AlertQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    if let Some(d) = &q.decision {
        if ringfence_core::decision::Action::parse(d).is_none() {
            return Err(ApiError::BadParam {
                field: "decision",
                message: "expected approve, review, challenge or block".into(),
            });
        }
    }
    let alerts = cx
        .host
        .store()
        .alerts(q)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(serde_json::json!({ "alerts": alerts })))
}
