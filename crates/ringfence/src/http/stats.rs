//! `GET /v1/stats`, `GET /healthz`, `GET /readyz` and `GET /metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::ApiContext;

/// Throughput, decisions, latency, state and record counts.
pub async fn stats(State(cx): State<ApiContext>) -> Result<Json<serde_json::Value>, ApiError> {
    let counts = cx
        .host
        .store()
        .counts()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let decisions: serde_json::Map<String, serde_json::Value> = cx
        .host
        .metrics()
        .decisions()
        .into_iter()
        .map(|(a, n)| (a.as_str().to_owned(), json!(n)))
        .collect();
    let mut engine = cx.host.engine_stats();
    if let Some(obj) = engine.as_object_mut() {
        obj.insert("uptime_secs".into(), json!(cx.host.uptime_secs()));
        obj.insert("decisions_since_start".into(), json!(decisions));
        obj.insert("stored".into(), json!(counts));
        obj.insert("ready".into(), json!(cx.host.ready()));
        if let Some(site) = cx.host.site() {
            obj.insert("site".into(), site.status());
        }
    }
    Ok(Json(engine))
}

/// Liveness: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the node can store decisions.
pub async fn readyz(State(cx): State<ApiContext>) -> impl IntoResponse {
    if cx.host.ready() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "not_ready", "reason": "storage failed; the node takes work again once storage works and its state is rebuilt" }),
            ),
        )
    }
}

/// Prometheus text format.
pub async fn metrics(State(cx): State<ApiContext>) -> impl IntoResponse {
    let engine = cx.host.engine_stats();
    let state = &engine["state"];
    let g = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let gauges = [
        (
            "ringfence_entities_cards",
            "Cards held in memory.",
            g(&state["cards"]),
        ),
        (
            "ringfence_entities_users",
            "Users held in memory.",
            g(&state["users"]),
        ),
        (
            "ringfence_entities_devices",
            "Devices held in memory.",
            g(&state["devices"]),
        ),
        (
            "ringfence_graph_nodes",
            "Nodes of the link graph.",
            g(&state["graph_nodes"]),
        ),
        (
            "ringfence_write_backlog",
            "Writes waiting for the store.",
            g(&engine["write_backlog"]),
        ),
        ("ringfence_rules", "Active rules.", g(&engine["rules"])),
        (
            "ringfence_log_lag_records",
            "Records acknowledged (durable in the record log) but not yet indexed into SQLite.",
            g(&engine["log"]["lag_records"]),
        ),
        (
            "ringfence_log_lag_bytes",
            "Record log bytes acknowledged but not yet indexed into SQLite.",
            g(&engine["log"]["lag_bytes"]),
        ),
        (
            "ringfence_log_fsync_groups",
            "Groups appended to the record log since start (one write and one fdatasync each).",
            g(&engine["log"]["fsync_groups"]),
        ),
        (
            "ringfence_log_fsync_records",
            "Records in those groups (records / groups = the mean fsync group size).",
            g(&engine["log"]["fsync_records"]),
        ),
        (
            "ringfence_ready",
            "1 when the node can store decisions.",
            if cx.host.ready() { 1.0 } else { 0.0 },
        ),
        (
            "ringfence_requests_in_flight",
            "Requests in progress (admission; this scrape is exempt and not counted).",
            cx.admission.in_flight(cx.host.settings().max_in_flight) as f64,
        ),
    ];
    let mut text = cx.host.metrics().render(&gauges);
    if let Some(site) = cx.host.site() {
        site.render_metrics(&mut text);
    }
    crate::http::deliveries::render_metrics(&cx, &mut text).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
