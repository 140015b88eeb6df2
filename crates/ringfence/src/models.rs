//! Model files: Ringfence's own format or XGBoost JSON, told apart by content, loaded for
//! `serve` (champion and challenger, hot-swapped) and `replay`.

use std::path::Path;

use ringfence_core::model::Model;

/// Loads a model file; the error names the file and the problem.
pub fn load(path: &Path) -> Result<Model, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // XGBoost's JSON has a top-level "learner"; ours says "format": "ringfence-model".
    let is_xgboost = serde_json::from_str::<serde_json::Value>(&text)
        .map(|v| v.get("learner").is_some())
        .unwrap_or(false);
    let model = if is_xgboost {
        Model::from_xgboost_json(&text)
    } else {
        Model::from_json(&text)
    };
    model.map_err(|e| format!("{}: {e}", path.display()))
}

/// What the API shows about a loaded model.
pub fn describe(model: &Model) -> serde_json::Value {
    serde_json::json!({
        "source": model.meta().source,
        "catalog_version": model.meta().catalog_version,
        "trained_at": model.meta().trained_at,
        "trees": model.n_trees(),
        "features": model.feature_names(),
        "notes": model.meta().notes,
    })
}
