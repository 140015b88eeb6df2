//! Active-active sites: `GET /v1/sites` (this site and the state of each link: connected,
//! records behind, replication delay), `GET /v1/sites/feed` (this site's own records, which
//! peers pull), and `GET /v1/receipts/{id}` (a receipt with its returns per store, the
//! counters sites converge on).

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ringfence_core::event::EntityId;
use serde::Deserialize;

use super::error::ApiError;
use super::ApiContext;
use crate::sites::{FEED_PAGE, MAX_FEED_PAGE, MAX_FEED_WAIT_MS};

/// The routes of this module.
pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/v1/sites", get(status))
        .route("/v1/sites/feed", get(feed))
        .route("/v1/receipts/{id}", get(receipt))
}

fn not_a_site() -> ApiError {
    ApiError::NotFound("this node is not a site (start it with --site NAME)".into())
}

/// This site, its newest own record, and each peer link's state.
async fn status(State(cx): State<ApiContext>) -> Result<Json<serde_json::Value>, ApiError> {
    let site = cx.host.site().ok_or_else(not_a_site)?;
    Ok(Json(site.status()))
}

/// Query of `GET /v1/sites/feed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    /// Records after this sequence number (default 0).
    after: Option<i64>,
    /// At most this many (default 500, at most 1000; 0 answers at once with none).
    limit: Option<usize>,
    /// Wait up to this long for a record when there is none yet (default 0, at most 30000).
    wait_ms: Option<u64>,
}

/// This site's own records after `after`, held open up to `wait_ms` until there is one.
async fn feed(
    State(cx): State<ApiContext>,
    q: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    let site = cx.host.site().ok_or_else(not_a_site)?;
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::BadParam {
            field: "after",
            message: "must be >= 0".into(),
        });
    }
    let limit = q.limit.unwrap_or(FEED_PAGE);
    if limit > MAX_FEED_PAGE {
        return Err(ApiError::BadParam {
            field: "limit",
            message: format!("must be within 0..={MAX_FEED_PAGE}"),
        });
    }
    let wait_ms = q.wait_ms.unwrap_or(0);
    if wait_ms > MAX_FEED_WAIT_MS {
        return Err(ApiError::BadParam {
            field: "wait_ms",
            message: format!("must be within 0..={MAX_FEED_WAIT_MS}"),
        });
    }
    let page = cx
        .host
        .feed(site, after, limit, Duration::from_millis(wait_ms))
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], page).into_response())
}

/// A receipt as this node's engine holds it, with its returns per store.
async fn receipt(
    State(cx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = EntityId::parse("id", &id).map_err(|e| ApiError::BadParam {
        field: "id",
        message: e.to_string(),
    })?;
    let view = cx
        .host
        .receipt(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no receipt `{}` is held", id.as_str())))?;
    Ok(Json(serde_json::json!({
        "receipt_id": id.as_str(),
        "receipt": view,
    })))
}
