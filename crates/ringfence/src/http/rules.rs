//! `GET /v1/rules`, `POST /v1/rules/reload` and `GET /v1/features` (what rules and models
//! can use).

use axum::extract::State;
use axum::Json;
use ringfence_core::features;

use super::error::ApiError;
use super::ApiContext;

/// The active rules with hit counts, and the status of the last load.
pub async fn list(State(cx): State<ApiContext>) -> Json<serde_json::Value> {
    Json(cx.host.rules_view())
}

/// Reloads the rules file now; a broken file keeps the running rules (422 with the errors).
/// With shared state the new rules go through the log, so every node switches at once (503
/// when the log is unreachable).
pub async fn reload(State(cx): State<ApiContext>) -> Result<Json<serde_json::Value>, ApiError> {
    match cx.host.reload_rules().await? {
        Ok(n) => Ok(Json(serde_json::json!({ "reloaded": true, "rules": n }))),
        Err(errors) => Err(ApiError::InvalidRules(errors)),
    }
}

/// The feature catalog.
pub async fn catalog() -> Json<serde_json::Value> {
    let list: Vec<_> = features::all()
        .map(|d| serde_json::json!({ "name": d.name, "type": d.ty.name(), "description": d.description }))
        .collect();
    Json(serde_json::json!({ "version": features::CATALOG_VERSION, "features": list }))
}
