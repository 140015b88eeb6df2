//! Model files: Ringfence's own format or XGBoost JSON, told apart by content, loaded for
//! `serve` (champion and challenger, hot-swapped) and `replay`.

use std::path::Path;

use ringfence_core::model::Model;

/// Loads a model file; the error names the file and the problem.
pub fn load(path: &Path) -> Result<Model, String> {
    load_text(path).map(|(model, _)| model)
}

/// Loads a model file and returns its text too (what the shared log carries).
pub fn load_text(path: &Path) -> Result<(Model, String), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let model = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((model, text))
}

/// Parses a model file's text, in either format.
pub fn parse(text: &str) -> Result<Model, String> {
    // XGBoost's JSON has a top-level "learner"; ours says "format": "ringfence-model".
    let is_xgboost = serde_json::from_str::<serde_json::Value>(text)
        .map(|v| v.get("learner").is_some())
        .unwrap_or(false);
    let model = if is_xgboost {
        Model::from_xgboost_json(text)
    } else {
        Model::from_json(text)
    };
    model.map_err(|e| e.to_string())
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
