//! The HTTP API: one module per resource, a shared [`ApiContext`], one router.
//!
//! Every response to bad input is a 4xx with `{"error": {"code", "field", "message"}}`;
//! every request gets an `x-request-id` (the caller's, or a new one) that tags its log lines.

pub mod admission;
pub mod alerts;
pub mod cases;
pub mod deliveries;
pub mod entities;
pub mod error;
pub mod investigate;
pub mod labels;
pub mod models;
pub mod photos;
pub mod pos;
pub mod rules;
pub mod sites;
pub mod stats;
pub mod stores;
pub mod stream;
pub mod transactions;
pub mod ui;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tracing::Instrument;

use crate::host::EngineHost;
use error::ApiError;

/// What every route can reach.
#[derive(Clone)]
pub struct ApiContext {
    /// The engine host.
    pub host: Arc<EngineHost>,
    /// Access control: users, keys, sessions.
    pub auth: Arc<crate::auth::Auth>,
    /// The bounds on requests and body bytes in progress.
    pub admission: Arc<admission::Admission>,
}

impl ApiContext {
    /// Counts a rejected transaction.
    pub fn rejected(&self) {
        self.host.metrics().rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request turned away because the node is at capacity.
    pub fn overloaded(&self) {
        self.host
            .metrics()
            .overloaded
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Every route, as `(method, path)`, kept in step with the router and the OpenAPI document
/// (a test checks both).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/transaction"),
    ("post", "/v1/transactions"),
    ("post", "/v1/transactions/batch"),
    ("get", "/v1/transactions/{id}"),
    ("get", "/v1/entities/{type}/{id}"),
    ("get", "/v1/alerts"),
    ("post", "/v1/labels"),
    ("get", "/v1/rules"),
    ("post", "/v1/rules/reload"),
    ("put", "/v1/rules"),
    ("get", "/v1/rules/source"),
    ("post", "/v1/rules/validate"),
    ("post", "/v1/rules/backtest"),
    ("post", "/v1/rules/{name}/mode"),
    ("get", "/v1/features"),
    ("get", "/v1/models"),
    ("post", "/v1/models/reload"),
    ("get", "/v1/stats"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/v1/photos/{sha256}"),
    ("get", "/v1/stores/{store}/transactions"),
    ("get", "/pos"),
    ("get", "/pos/till.css"),
    ("get", "/pos/till.js"),
    ("get", "/v1/sites"),
    ("get", "/v1/sites/feed"),
    ("get", "/v1/receipts/{id}"),
    ("get", "/"),
    ("get", "/ui/{file}"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/logout"),
    ("get", "/v1/auth/me"),
    ("get", "/v1/cases"),
    ("get", "/v1/cases/{id}"),
    ("post", "/v1/cases/{id}/assign"),
    ("post", "/v1/cases/{id}/close"),
    ("post", "/v1/cases/{id}/reopen"),
    ("get", "/v1/audit"),
    ("get", "/v1/search"),
    ("post", "/v1/search"),
    ("get", "/v1/graph/{type}/{id}"),
    ("get", "/v1/deliveries/dead-letters"),
    ("post", "/v1/deliveries/dead-letters/{id}/retry"),
    ("get", "/v1/stores"),
    ("get", "/v1/stream/transactions"),
    ("get", "/v1/stream/alerts"),
    ("get", "/v1/live/stats"),
    ("get", "/v1/keys"),
    ("post", "/v1/keys"),
    ("delete", "/v1/keys/{id}"),
    ("get", "/v1/users"),
    ("post", "/v1/users"),
    ("delete", "/v1/users/{name}"),
    ("put", "/v1/users/{name}/password"),
];

/// The OpenAPI document.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Builds the router.
pub fn router(host: Arc<EngineHost>, auth: Arc<crate::auth::Auth>) -> Router {
    let settings = host.settings();
    let max_body = settings.max_body_bytes;
    let admission = admission::Admission::new(
        settings.max_in_flight,
        settings.max_body_in_flight,
        max_body,
    );
    let cx = ApiContext {
        host,
        auth,
        admission,
    };
    Router::new()
        .route("/transaction", post(transactions::create))
        .route("/v1/transactions", post(transactions::create))
        .route("/v1/transactions/batch", post(transactions::create_batch))
        .route("/v1/transactions/{id}", get(transactions::get))
        .route("/v1/entities/{type}/{id}", get(entities::get))
        .route("/v1/alerts", get(alerts::list))
        .route("/v1/labels", post(labels::create))
        .route("/v1/rules", get(rules::list))
        .route("/v1/rules/reload", post(rules::reload))
        .route("/v1/features", get(rules::catalog))
        .route("/v1/models", get(models::list))
        .route("/v1/models/reload", post(models::reload))
        .route("/v1/stats", get(stats::stats))
        .route("/healthz", get(stats::healthz))
        .route("/readyz", get(stats::readyz))
        .route("/metrics", get(stats::metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/photos/{sha256}", get(photos::get))
        .route("/v1/stores/{store}/transactions", get(stores::transactions))
        .merge(rules::routes())
        .route("/v1/stores", get(stores::list))
        .merge(pos::routes())
        .merge(ui::routes())
        .merge(crate::auth::routes())
        .merge(sites::routes())
        .merge(cases::routes())
        .merge(investigate::routes())
        .merge(deliveries::routes())
        .merge(stream::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            cx.clone(),
            crate::auth::layer,
        ))
        .layer(middleware::from_fn_with_state(cx.clone(), admission::admit))
        .layer(middleware::from_fn_with_state(cx.clone(), observe))
        .with_state(cx)
}

/// A bad query string as our JSON error.
pub fn query_error(r: axum::extract::rejection::QueryRejection) -> ApiError {
    let text = r.body_text();
    let message = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text)
        .to_owned();
    ApiError::BadParam {
        field: "query",
        message,
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /openapi.json".into())
}

async fn method_not_allowed() -> Response {
    let mut res = ApiError::NotFound("method not allowed on this route".into()).into_response();
    *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    res
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// Request id, span, per-route response counts.
async fn observe(State(cx): State<ApiContext>, req: Request, next: Next) -> Response {
    // A clone of the matched path is a reference count, not a copy of the string.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("r{:x}", REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)));
    let method = req.method().clone();
    let span = tracing::info_span!("request", %method, %route, request_id = %request_id);
    let started = Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    cx.host.metrics().http(route, status);
    span.in_scope(|| {
        let us = started.elapsed().as_micros() as u64;
        if status >= 500 {
            tracing::warn!(status, us, "request failed");
        } else {
            tracing::debug!(status, us, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}
