//! Dead letters of the alert sinks (admin): `GET /v1/deliveries/dead-letters` lists them,
//! `POST /v1/deliveries/dead-letters/{id}/retry` sends one again now.
//!
//! A retry is one try, made while the request waits, so the admin sees the receiver's answer:
//! `200 {"delivered": true|false, "dead_letter": {...}}` (a receiver still failing is not a
//! failed request; the record shows its new answer). A dead letter already redelivered is
//! not sent again. Dead letters are this node's (each node delivers its own outbox).

use std::fmt::Write;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::ApiError;
use super::ApiContext;
use crate::alerts::dead_letters::StateFilter;
use crate::alerts::deliveries::{RetryError, RetryOutcome};
use crate::auth::Principal;

/// The routes.
pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/v1/deliveries/dead-letters", get(list))
        .route("/v1/deliveries/dead-letters/{id}/retry", post(retry))
}

/// Query of the list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `dead` (default), `redelivered` or `all`.
    pub state: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only ids below this (paging, newest first).
    pub before: Option<i64>,
}

/// `GET /v1/deliveries/dead-letters`: newest first.
async fn list(
    State(cx): State<ApiContext>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    let state = match q.state.as_deref().unwrap_or("dead") {
        "dead" => StateFilter::Dead,
        "redelivered" => StateFilter::Redelivered,
        "all" => StateFilter::All,
        _ => {
            return Err(ApiError::BadParam {
                field: "state",
                message: "expected dead, redelivered or all".into(),
            })
        }
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadParam {
            field: "limit",
            message: "must be within 1..=1000".into(),
        });
    }
    let items = cx
        .host
        .alert_sinks()
        .dead_letters()
        .list(state, limit, q.before)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(serde_json::json!({ "dead_letters": items })))
}

/// `POST /v1/deliveries/dead-letters/{id}/retry`.
async fn retry(
    State(cx): State<ApiContext>,
    who: Principal,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::BadParam {
        field: "id",
        message: "must be a dead letter's id (an integer)".into(),
    })?;
    let outcome = cx.host.alert_sinks().retry(id).await.map_err(|e| match e {
        RetryError::NotFound(_) | RetryError::Unconfigured(_) => ApiError::NotFound(e.to_string()),
        RetryError::Store(e) => ApiError::Internal(e.to_string()),
    })?;
    let (delivered, record) = match outcome {
        RetryOutcome::Delivered(r) => (true, r),
        RetryOutcome::Failed(r) => (false, r),
    };
    tracing::info!(by = %who.name, id, target = %record.target, delivered, "dead letter retried");
    Ok(Json(
        serde_json::json!({ "delivered": delivered, "dead_letter": record }),
    ))
}

/// Appends the dead letters not yet delivered, as a gauge.
pub async fn render_metrics(cx: &ApiContext, out: &mut String) {
    match cx.host.alert_sinks().dead_letters().count_dead().await {
        Ok(n) => {
            let _ = writeln!(
                out,
                "# HELP ringfence_alert_dead_letters Dead letters not delivered yet (this node)."
            );
            let _ = writeln!(out, "# TYPE ringfence_alert_dead_letters gauge");
            let _ = writeln!(out, "ringfence_alert_dead_letters {n}");
        }
        Err(e) => tracing::warn!(error = %e, "counting dead letters failed"),
    }
}
