//! `GET /v1/models` and `POST /v1/models/reload`: the champion and challenger models.

use axum::extract::State;
use axum::Json;

use super::error::ApiError;
use super::ApiContext;

/// The champion and challenger models, the scoring policy and the last load's status.
pub async fn list(State(cx): State<ApiContext>) -> Json<serde_json::Value> {
    Json(cx.host.models_view())
}

/// Reloads the model files now; a broken file keeps the running models (422 with the error).
/// With shared state the new models go through the log, so every node switches at once (503
/// when the log is unreachable).
pub async fn reload(State(cx): State<ApiContext>) -> Result<Json<serde_json::Value>, ApiError> {
    match cx.host.reload_models().await? {
        Ok(version) => Ok(Json(
            serde_json::json!({ "reloaded": true, "version": version }),
        )),
        Err(message) => Err(ApiError::InvalidModel(message)),
    }
}
