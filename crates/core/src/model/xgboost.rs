//! The XGBoost importer: a `Booster.save_model("m.json")` file to a [`Model`].
//!
//! The JSON schema has shifted across XGBoost releases (`default_left` as booleans or 0/1,
//! `base_score` as `"5E-1"` or `"[5E-1]"`, parameters as strings), so the file is read as a
//! [`Value`] and picked apart with its path in every error, rather than bound to one schema.
//! Numbers are taken as XGBoost holds them, in `f32`, so scores match it bit for bit up to the
//! final summation.

use serde_json::Value;

use super::{Model, ModelError, ModelMeta, NodeSpec, TreeSpec, MAX_TREES};
use crate::features;

const OBJECTIVE: &str = "binary:logistic";

/// Reads an XGBoost JSON model.
pub(super) fn parse(src: &str) -> Result<Model, ModelError> {
    let doc: Value = serde_json::from_str(src).map_err(|e| {
        let mut err = ModelError::json(e);
        if let ModelError::MalformedJson { message, .. } = &mut err {
            if !src.trim_start().starts_with('{') {
                message
                    .push_str(" (save XGBoost models with a .json file name: UBJSON is not read)");
            }
        }
        err
    })?;
    let root = Json {
        value: &doc,
        path: String::new(),
    };
    let learner = root.get("learner")?;

    let objective = learner.get("objective")?.get("name")?.str()?;
    if objective != OBJECTIVE {
        return Err(ModelError::UnsupportedObjective(objective.to_owned()));
    }
    let params = learner.get("learner_model_param")?;
    for (key, what) in [("num_class", "classes"), ("num_target", "targets")] {
        if let Some(n) = params.opt(key).map(|v| v.int_param()).transpose()? {
            if n > 1 {
                return Err(ModelError::Unsupported(format!(
                    "a model with {n} {what}; Ringfence runs binary classifiers"
                )));
            }
        }
    }
    let base_score = base_score(&params.get("base_score")?)?;

    let feature_names = feature_names(&learner)?;

    let booster = learner.get("gradient_booster")?;
    let booster_name = booster.get("name")?.str()?;
    let (model, tree_weights) = match booster_name {
        "gbtree" => (booster.get("model")?, None),
        // DART keeps per-tree weights from its dropout; prediction scales each tree by them.
        "dart" => {
            let weights = booster.get("weight_drop")?.floats()?;
            (booster.get("gbtree")?.get("model")?, Some(weights))
        }
        other => {
            return Err(ModelError::Unsupported(format!(
                "booster `{other}`; Ringfence runs tree models (booster gbtree or dart)"
            )))
        }
    };

    let trees_json = model.get("trees")?;
    let tree_values = trees_json.array()?;
    if tree_values.len() > MAX_TREES {
        return Err(ModelError::Invalid(format!(
            "{} trees; at most {MAX_TREES} are allowed",
            tree_values.len()
        )));
    }
    if let Some(info_json) = model.opt("tree_info") {
        let info = info_json.ints()?;
        if info.len() != tree_values.len() {
            return Err(info_json.error(&format!(
                "has {} entries for {} trees",
                info.len(),
                tree_values.len()
            )));
        }
        if info.iter().any(|&group| group != 0) {
            return Err(ModelError::Unsupported(
                "trees for more than one output group (multiclass); Ringfence runs binary classifiers"
                    .to_owned(),
            ));
        }
    }
    if let Some(weights) = &tree_weights {
        if weights.len() != tree_values.len() {
            return Err(ModelError::Invalid(format!(
                "{} DART weights for {} trees",
                weights.len(),
                tree_values.len()
            )));
        }
    }
    let model_param = model.opt("gbtree_model_param");
    if let Some(declared) = model_param
        .as_ref()
        .and_then(|p| p.opt("num_trees"))
        .map(|v| v.int_param())
        .transpose()?
    {
        if declared != tree_values.len() as i64 {
            return Err(ModelError::Invalid(format!(
                "the model declares {declared} trees but holds {}",
                tree_values.len()
            )));
        }
    }
    let num_parallel_tree = model_param
        .as_ref()
        .and_then(|p| p.opt("num_parallel_tree"))
        .map(|v| v.int_param())
        .transpose()?
        .unwrap_or(1);

    let trees = (0..tree_values.len())
        .map(|t| {
            let weight = tree_weights.as_ref().map_or(1.0, |w| w[t] as f32);
            tree_spec(t, &trees_json.index(t), weight)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut notes = serde_json::Map::new();
    if let Some(version) = doc.get("version").and_then(Value::as_array) {
        let parts: Vec<String> = version.iter().map(|v| v.to_string()).collect();
        notes.insert("xgboost_version".to_owned(), parts.join(".").into());
    }
    notes.insert("booster".to_owned(), booster_name.into());
    notes.insert("base_score".to_owned(), f64::from(base_score).into());
    notes.insert("num_parallel_tree".to_owned(), num_parallel_tree.into());
    if let Some(best) = learner
        .opt("attributes")
        .and_then(|a| a.value.get("best_iteration").cloned())
    {
        // Recorded only: like Booster.predict, Ringfence scores with every tree.
        notes.insert("best_iteration".to_owned(), best);
    }
    let meta = ModelMeta {
        catalog_version: features::CATALOG_VERSION,
        source: "xgboost".to_owned(),
        trained_at: None,
        notes: Value::Object(notes),
    };
    Model::assemble(feature_names, &trees, base_margin(base_score), meta)
}

/// `learner.learner_model_param.base_score`: a probability for binary:logistic, written as
/// `"5E-1"` or (XGBoost 3) `"[5E-1]"`.
fn base_score(v: &Json<'_>) -> Result<f32, ModelError> {
    let text = match v.value {
        Value::String(s) => s.trim(),
        _ => return Err(v.error("is not a string")),
    };
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if inner.contains(',') {
        return Err(ModelError::Unsupported(format!(
            "a base score per output ({text}); Ringfence runs binary classifiers"
        )));
    }
    let p: f32 = inner
        .trim()
        .parse()
        .map_err(|_| v.error(&format!("`{text}` is not a number")))?;
    if !(p > 0.0 && p < 1.0) {
        return Err(v.error(&format!(
            "{p} is not a probability strictly between 0 and 1"
        )));
    }
    Ok(p)
}

/// The margin XGBoost starts every prediction from: `logit(base_score)`, in `f32` as it does.
fn base_margin(base_score: f32) -> f64 {
    f64::from(-(1.0f32 / base_score - 1.0f32).ln())
}

fn feature_names(learner: &Json<'_>) -> Result<Vec<String>, ModelError> {
    let Some(names) = learner.opt("feature_names") else {
        return Err(no_names());
    };
    let names = names
        .array()?
        .iter()
        .enumerate()
        .map(|(i, _)| names.index(i).str().map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()?;
    if names.is_empty() {
        return Err(no_names());
    }
    if let Some(types) = learner.opt("feature_types") {
        for (i, _) in types.array()?.iter().enumerate() {
            if types.index(i).str()? == "c" {
                let name = names.get(i).map_or("?", String::as_str);
                return Err(ModelError::Unsupported(format!(
                    "feature `{name}` is categorical; Ringfence models split on numbers"
                )));
            }
        }
    }
    Ok(names)
}

fn no_names() -> ModelError {
    ModelError::Invalid(
        "the XGBoost model has no feature names; train it on a DMatrix or DataFrame whose columns are catalog feature names"
            .to_owned(),
    )
}

/// One XGBoost tree: parallel arrays indexed by node id; a leaf has `left_children == -1` and
/// its value in `split_conditions`. `weight` is the tree's DART weight (1 otherwise).
fn tree_spec(t: usize, tree: &Json<'_>, weight: f32) -> Result<TreeSpec, ModelError> {
    if let Some(size) = tree
        .opt("tree_param")
        .and_then(|p| p.opt("size_leaf_vector"))
        .map(|v| v.int_param())
        .transpose()?
    {
        if size > 1 {
            return Err(ModelError::Unsupported(format!(
                "tree {t} has vector leaves (multi-target); Ringfence runs binary classifiers"
            )));
        }
    }
    let left = tree.get("left_children")?.ints()?;
    let n = left.len();
    let right = tree.get("right_children")?.ints()?;
    let split_indices = tree.get("split_indices")?.ints()?;
    let conditions = tree.get("split_conditions")?.floats()?;
    let default_left = tree.get("default_left")?.bools()?;
    let covers = tree.get("sum_hessian")?.floats()?;
    let split_type = match tree.opt("split_type") {
        Some(v) => v.ints()?,
        None => vec![0; n],
    };
    for (name, len) in [
        ("right_children", right.len()),
        ("split_indices", split_indices.len()),
        ("split_conditions", conditions.len()),
        ("default_left", default_left.len()),
        ("sum_hessian", covers.len()),
        ("split_type", split_type.len()),
    ] {
        if len != n {
            return Err(ModelError::InvalidTree {
                tree: t,
                node: 0,
                reason: format!("`{name}` has {len} entries, `left_children` has {n}"),
            });
        }
    }

    let bad = |node: usize, reason: String| ModelError::InvalidTree {
        tree: t,
        node,
        reason,
    };
    let index = |node: usize, what: &str, v: i64| {
        usize::try_from(v).map_err(|_| bad(node, format!("{what} {v} is negative")))
    };
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        // XGBoost holds covers, thresholds and leaf values as f32.
        let cover = f64::from(covers[i] as f32);
        if left[i] == -1 {
            nodes.push(NodeSpec::Leaf {
                value: f64::from(conditions[i] as f32 * weight),
                cover,
            });
            continue;
        }
        if split_type[i] != 0 {
            return Err(ModelError::Unsupported(format!(
                "tree {t}, node {i} is a categorical split; Ringfence models split on numbers"
            )));
        }
        nodes.push(NodeSpec::Split {
            feature: index(i, "split feature", split_indices[i])?,
            // XGBoost compares `(x as f32) < threshold` in single precision.
            threshold: super::tree::f32_split_boundary(conditions[i] as f32),
            left: index(i, "left child", left[i])?,
            right: index(i, "right child", right[i])?,
            default_left: default_left[i],
            cover,
        });
    }
    Ok(TreeSpec { nodes })
}

/// A JSON value and where it sits in the document, for errors that say where.
struct Json<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> Json<'a> {
    fn error(&self, what: &str) -> ModelError {
        ModelError::Invalid(format!("`{}` {what}", self.path))
    }

    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A member that may be absent.
    fn opt(&self, key: &str) -> Option<Json<'a>> {
        self.value.get(key).map(|value| Json {
            value,
            path: self.child(key),
        })
    }

    /// A member that must be present.
    fn get(&self, key: &str) -> Result<Json<'a>, ModelError> {
        self.opt(key)
            .ok_or_else(|| ModelError::Invalid(format!("`{}` is missing", self.child(key))))
    }

    /// Element `i` of an array already checked with [`Json::array`].
    fn index(&self, i: usize) -> Json<'a> {
        Json {
            value: &self.value[i],
            path: format!("{}[{i}]", self.path),
        }
    }

    fn str(&self) -> Result<&'a str, ModelError> {
        self.value
            .as_str()
            .ok_or_else(|| self.error("is not a string"))
    }

    fn array(&self) -> Result<&'a Vec<Value>, ModelError> {
        self.value
            .as_array()
            .ok_or_else(|| self.error("is not an array"))
    }

    fn ints(&self) -> Result<Vec<i64>, ModelError> {
        self.array()?
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| self.error("holds a non-integer")))
            .collect()
    }

    fn floats(&self) -> Result<Vec<f64>, ModelError> {
        self.array()?
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| self.error("holds a non-number")))
            .collect()
    }

    /// Booleans, which XGBoost writes as `true`/`false` or `0`/`1` depending on the release.
    fn bools(&self) -> Result<Vec<bool>, ModelError> {
        self.array()?
            .iter()
            .map(|v| match v {
                Value::Bool(b) => Ok(*b),
                _ => match v.as_i64() {
                    Some(0) => Ok(false),
                    Some(1) => Ok(true),
                    _ => Err(self.error("holds a value that is not a boolean or 0/1")),
                },
            })
            .collect()
    }

    /// A parameter, which XGBoost writes as a string (`"1"`) or, in places, a number.
    fn int_param(&self) -> Result<i64, ModelError> {
        match self.value {
            Value::String(s) => s.trim().parse().ok(),
            v => v.as_i64(),
        }
        .ok_or_else(|| self.error("is not an integer"))
    }
}
