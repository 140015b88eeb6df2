//! Model inference: gradient-boosted tree ensembles that turn a transaction's features into a
//! fraud probability and explain it per feature (by the decision path on every decision, with
//! exact TreeSHAP on demand), and an optional isolation forest that scores how unusual a
//! transaction is.
//!
//! A [`Model`] is a binary classifier: the sum of its trees' leaf values plus a base margin is
//! the log-odds of fraud ([`Model::margin`]), and [`Model::predict`] is its sigmoid. Models come
//! from XGBoost ([`Model::from_xgboost_json`]), from Ringfence's own format
//! ([`Model::from_json`], written by [`Model::to_json`]), or straight from our trainer
//! ([`Model::from_trees`]). All three go through one validation, so a hostile file gets an
//! error, never a panic or a hang.
//!
//! # Semantics
//! - A split sends `x` left iff `x < threshold`, compared in double precision, as the
//!   Ringfence trainer (forust-ml) learned it. A missing value (`NaN`) takes the split's default
//!   direction.
//! - XGBoost compares `(x as f32) < t` in single precision. On import each `t` becomes the f64
//!   boundary with exactly the same effect (values that round below `t` are those under the
//!   midpoint to the next f32 down, ties to even), so XGBoost models score here as they do in
//!   Python, and the model file records that boundary.
//! - Features are resolved by name against the catalog ([`crate::features`]) once, at load: a
//!   model reads `FeatureValues::num` directly (booleans as `0.0` / `1.0`). Text features and
//!   names the catalog does not know are load errors that name the feature.
//! - Contributions are path-dependent TreeSHAP (Lundberg et al. 2018, Algorithm 2), as
//!   XGBoost's `pred_contribs`: node covers weight the paths `x` does not take, and the bias is
//!   the base margin plus each tree's cover-weighted mean leaf value.
//!   [`Model::path_contributions`] is the cheap alternative, XGBoost's `approx_contribs`
//!   (Saabas): each split on the path `x` takes credits its feature with the change in the
//!   cover-weighted mean leaf value below it. Same bias, same additivity, the cost of scoring.
//! - From XGBoost we take `binary:logistic` models with `gbtree` or `dart` boosters (DART
//!   weights folded into the leaves) and any `num_parallel_tree`; every tree counts, as in
//!   `Booster.predict` (a `best_iteration` is only recorded in the notes). Multiclass,
//!   multi-target, categorical splits and `gblinear` are refused with a reason.
//!
//! # Ringfence's model format
//! One JSON object; this is what our trainer writes and [`Model::to_json`] produces:
//!
//! ```json
//! {
//! "format": "ringfence-model",
//! "version": 1,
//! "catalog_version": 2,
//! "source": "ringfence-gbdt",
//! "trained_at": "2024-06-01T12:00:00Z",
//! "notes": {"rows": 120000},
//! "objective": "binary:logistic",
//! "base_margin": -2.1,
//! "feature_names": ["tx.amount", "user.new_device"],
//! "feature_types": ["number", "bool"],
//! "trees": [
//! {"nodes": [{"feature": 0, "threshold": 250.0, "left": 1, "right": 2, "default_left": true, "cover": 90.5},
//!            {"leaf": -0.4, "cover": 80.0}, {"leaf": 0.7, "cover": 10.5}]}
//! ]
//! }
//! ```
//!
//! - `feature` indexes `feature_names`; `left` / `right` index the tree's `nodes`; node 0 is
//!   the root. A node is a split (`feature`, `threshold`, `left`, `right`, `default_left`,
//!   `cover`) or a leaf (`leaf`, `cover`); any other field is an error.
//! - `cover` is the training weight (sum of hessians) that reached the node. It does not change
//!   predictions; TreeSHAP needs it. Splits need a positive cover, leaves a non-negative one.
//! - `base_margin` is in log-odds; `trained_at` and `notes` (an object) are free-form.
//! - `feature_types` (`"number"` / `"bool"`, optional) records the catalog types the model was
//!   trained on. A model built for another `catalog_version` loads only if it has them and every
//!   feature still exists with the same type; the load adds a `catalog_note` to its notes.
//!   Without them, or if a feature is gone or changed type, it is an error: retrain.
//! - Limits: at most [`MAX_TREES`] trees, leaves at most [`MAX_DEPTH`] splits below the root,
//!   every node reachable from the root exactly once (no cycles, no shared subtrees). Nodes
//!   nothing reaches are dropped.
//!
//! ## The `anomaly` section
//! A model may carry an [`IsolationForest`] ([`Model::with_anomaly`], [`Model::anomaly`]) as
//! an optional last field, written like the trees, one line per tree:
//!
//! ```json
//! "anomaly": {
//! "method": "isolation-forest",
//! "sample_size": 256,
//! "feature_names": ["tx.amount", "card.count_1h"],
//! "feature_types": ["number", "number"],
//! "trees": [
//! {"nodes": [{"feature": 0, "threshold": 812.5, "left": 1, "right": 2}, {"size": 250}, {"size": 6}]}
//! ]
//! }
//! ```
//!
//! - `method` is `"isolation-forest"`; `sample_size` (2 to [`MAX_SAMPLE_SIZE`]) is the rows
//!   each tree grew on, which normalises the score.
//! - `feature_names` are the forest's own (they need not be the classifier's), checked against
//!   the catalog as the model's are, `feature_types` included.
//! - A node is a split (`feature`, `threshold`, `left`, `right`; `x` goes left iff
//!   `x < threshold`) or a leaf (`size`: the sampled rows that ended there, at least
//!   1). Each tree's leaf sizes add up to `sample_size`, and the tree limits above apply.
//! - No missing-value direction is stored: a missing value goes to the child whose leaves hold
//!   more rows (left on a tie), which is where fitting sent the training rows missing it.
//!
//! Files without the section load as before; builds that predate it refuse files that have it
//! (unknown field `anomaly`).
//!
//! # Layout
//! - `tree.rs`: the flat node arrays scoring walks, and their validation.
//! - `shap.rs`: TreeSHAP over those arrays.
//! - `path.rs`: path (Saabas) attributions over the same arrays.
//! - `iforest.rs`: the isolation forest: fitting, validation, scoring.
//! - `format.rs`: Ringfence's JSON format.
//! - `xgboost.rs`: the XGBoost JSON importer.

mod format;
mod iforest;
mod path;
mod shap;
mod tree;
mod xgboost;

#[cfg(test)]
mod iforest_tests;
#[cfg(test)]
mod tests;

pub use iforest::{IsolationForest, IsolationParams, MAX_SAMPLE_SIZE};

use crate::features::{self, FeatureDef, FeatureType, FeatureValues};
use tree::Forest;

/// Most trees a model may have.
pub const MAX_TREES: usize = 100_000;
/// Most splits on the path from a tree's root to any of its leaves.
pub const MAX_DEPTH: usize = 64;

/// A tree as a loader or trainer describes it, before validation.
#[derive(Clone, Debug, PartialEq)]
pub struct TreeSpec {
    /// The nodes; node 0 is the root.
    pub nodes: Vec<NodeSpec>,
}

/// One node of a [`TreeSpec`].
#[derive(Clone, Debug, PartialEq)]
pub enum NodeSpec {
    /// An internal node: `x` goes to `left` iff `x < threshold` (double precision).
    Split {
        /// Index into the model's feature names.
        feature: usize,
        /// Split point (see above).
        threshold: f64,
        /// Node index of the `< threshold` branch.
        left: usize,
        /// Node index of the `>= threshold` branch.
        right: usize,
        /// Where a missing value goes.
        default_left: bool,
        /// Training weight that reached this node (sum of hessians); must be positive.
        cover: f64,
    },
    /// A leaf with its contribution to the margin.
    Leaf {
        /// Log-odds contribution.
        value: f64,
        /// Training weight that reached this leaf; must be non-negative.
        cover: f64,
    },
}

/// Where a model came from, carried with it for audits.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelMeta {
    /// The feature catalog version the model was trained against.
    pub catalog_version: u32,
    /// Who produced it: `"xgboost"`, `"ringfence-gbdt"`, ...
    pub source: String,
    /// When it was trained (free-form, RFC 3339 by convention).
    pub trained_at: Option<String>,
    /// Free-form facts about the training run (a JSON object).
    pub notes: serde_json::Value,
}

/// Why a model could not be loaded or built.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The input is not JSON, or not JSON of the expected shape.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    MalformedJson {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// A feature name the catalog does not have.
    #[error("unknown feature `{name}` (not in catalog v{catalog_version})")]
    UnknownFeature {
        /// The name as the model spells it.
        name: String,
        /// The catalog version it was looked up in.
        catalog_version: u32,
    },
    /// A text feature: trees split on numbers, so text cannot be a model input.
    #[error("feature `{name}` is text and cannot be a model input (models use number and bool features)")]
    TextFeature {
        /// The feature's name.
        name: String,
    },
    /// The same feature named twice.
    #[error("feature `{name}` is listed twice")]
    DuplicateFeature {
        /// The feature's name.
        name: String,
    },
    /// Anything but a binary logistic classifier.
    #[error(
        "unsupported objective `{0}`: Ringfence models are binary classifiers (binary:logistic)"
    )]
    UnsupportedObjective(String),
    /// A model built for another feature catalog whose features cannot be shown to still match.
    #[error("catalog version mismatch: the model was built for feature catalog v{model}, this build has v{current}; {reason}")]
    CatalogMismatch {
        /// The model's catalog version.
        model: u32,
        /// This build's [`features::CATALOG_VERSION`].
        current: u32,
        /// Which check failed.
        reason: String,
    },
    /// A valid model of a kind Ringfence does not run (multiclass, categorical splits, ...).
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A tree that is not a finite, acyclic binary tree with sane numbers.
    #[error("invalid tree {tree}, node {node}: {reason}")]
    InvalidTree {
        /// Tree index.
        tree: usize,
        /// Node index within the tree, as the input numbers it.
        node: usize,
        /// What is wrong.
        reason: String,
    },
    /// A tree of the anomaly section that is not a valid isolation tree.
    #[error("invalid anomaly tree {tree}, node {node}: {reason}")]
    InvalidIsolationTree {
        /// Tree index within the anomaly section.
        tree: usize,
        /// Node index within the tree, as the input numbers it.
        node: usize,
        /// What is wrong.
        reason: String,
    },
    /// A model-level inconsistency (array lengths, limits, ...).
    #[error("invalid model: {0}")]
    Invalid(String),
}

impl ModelError {
    fn json(e: serde_json::Error) -> ModelError {
        // serde_json appends " at line L column C"; we report those as fields.
        let text = e.to_string();
        let message = match text.rsplit_once(" at line ") {
            Some((message, _)) => message.to_owned(),
            None => text,
        };
        ModelError::MalformedJson {
            line: e.line(),
            column: e.column(),
            message,
        }
    }
}

/// A binary classifier over catalog features: a tree ensemble whose summed leaves are log-odds.
///
/// Scoring ([`Model::margin`], [`Model::predict`]) walks flat arrays and allocates nothing.
/// A model is immutable once built; share it behind an `Arc` and swap the `Arc` to reload.
#[derive(Clone)]
pub struct Model {
    feature_names: Vec<String>,
    /// Catalog entry of each model feature, parallel to `feature_names`.
    features: Vec<&'static FeatureDef>,
    base_margin: f64,
    /// `base_margin` plus every tree's expected value: the TreeSHAP bias.
    bias: f64,
    forest: Forest,
    meta: ModelMeta,
    /// The unsupervised anomaly detector carried with the classifier, if any.
    anomaly: Option<IsolationForest>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("feature_names", &self.feature_names)
            .field("trees", &self.n_trees())
            .field("base_margin", &self.base_margin)
            .field("meta", &self.meta)
            .field("anomaly", &self.anomaly)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads an XGBoost model saved as JSON (`Booster.save_model("m.json")`).
    ///
    /// The objective must be `binary:logistic` and the training columns named after catalog
    /// number / bool features.
    pub fn from_xgboost_json(src: &str) -> Result<Model, ModelError> {
        xgboost::parse(src)
    }

    /// Loads a model in Ringfence's own format (see the module docs).
    pub fn from_json(src: &str) -> Result<Model, ModelError> {
        format::parse(src)
    }

    /// Writes the model in Ringfence's own format: one line per tree, readable by
    /// [`Model::from_json`].
    pub fn to_json(&self) -> String {
        format::write(self)
    }

    /// Builds a model from trees our trainer grew against the current catalog.
    ///
    /// `meta.catalog_version` must be [`features::CATALOG_VERSION`]; `meta.notes` must be a
    /// JSON object (or `null`, read as empty).
    pub fn from_trees(
        feature_names: Vec<String>,
        trees: Vec<TreeSpec>,
        base_margin: f64,
        meta: ModelMeta,
    ) -> Result<Model, ModelError> {
        if meta.catalog_version != features::CATALOG_VERSION {
            return Err(ModelError::CatalogMismatch {
                model: meta.catalog_version,
                current: features::CATALOG_VERSION,
                reason: "a model built in this process must use the current catalog".to_owned(),
            });
        }
        Model::assemble(feature_names, &trees, base_margin, meta)
    }

    /// The one constructor every loader ends in: resolves features, validates and flattens.
    fn assemble(
        feature_names: Vec<String>,
        trees: &[TreeSpec],
        base_margin: f64,
        mut meta: ModelMeta,
    ) -> Result<Model, ModelError> {
        if !base_margin.is_finite() {
            return Err(ModelError::Invalid(format!(
                "base margin {base_margin} is not a finite number"
            )));
        }
        match meta.notes {
            serde_json::Value::Object(_) => {}
            serde_json::Value::Null => meta.notes = serde_json::Value::Object(Default::default()),
            _ => {
                return Err(ModelError::Invalid(
                    "notes must be a JSON object".to_owned(),
                ))
            }
        }
        let features = resolve_features(&feature_names)?;
        let num_index: Vec<u16> = features.iter().map(|d| d.index as u16).collect();
        let forest = Forest::build(trees, &num_index)?;
        let bias = base_margin + forest.expected_value();
        Ok(Model {
            feature_names,
            features,
            base_margin,
            bias,
            forest,
            meta,
            anomaly: None,
        })
    }

    /// The raw score: base margin plus every tree's leaf, in log-odds.
    #[inline]
    pub fn margin(&self, f: &FeatureValues<'_>) -> f64 {
        self.base_margin + self.forest.sum(&f.num)
    }

    /// The probability of fraud: `sigmoid(margin)`.
    #[inline]
    pub fn predict(&self, f: &FeatureValues<'_>) -> f64 {
        sigmoid(self.margin(f))
    }

    /// Exact TreeSHAP contributions of each model feature to the margin, written to `out`
    /// (resized to `feature_names().len()`); returns the bias (the expected margin), so that
    /// `bias + out.iter().sum()` equals [`Model::margin`].
    ///
    /// Costs far more than scoring (TreeSHAP is O(leaves x depth²) per tree: about a
    /// millisecond for 300 trees of depth 6), so explain on demand, not on every decision.
    /// Allocates one scratch path per call (1 KB at depth 6, 70 KB at the depth limit).
    pub fn contributions(&self, f: &FeatureValues<'_>, out: &mut Vec<f64>) -> f64 {
        out.clear();
        out.resize(self.feature_names.len(), 0.0);
        self.forest.contributions(&f.num, out);
        self.bias
    }

    /// Path attributions (Saabas; XGBoost's `approx_contribs`) of each model feature to the
    /// margin, written to `out`; returns the bias, so that `bias + out.iter().sum()` equals
    /// [`Model::margin`] (to rounding).
    ///
    /// `out` must have one slot per model feature (`feature_names().len()`), in that order; it
    /// is zeroed first. Each split on the path `x` takes adds the change in the cover-weighted
    /// mean leaf value, `E[child taken] - E[node]`, to its feature; the bias is the same as
    /// [`Model::contributions`]'. Allocates nothing and costs about what [`Model::margin`]
    /// does, so it can explain every decision; for one tree of depth 1 it equals TreeSHAP, in
    /// general it over-credits features split on near the root.
    ///
    /// # Panics
    /// If `out.len()` is not `feature_names().len()`.
    pub fn path_contributions(&self, f: &FeatureValues<'_>, out: &mut [f64]) -> f64 {
        assert_eq!(
            out.len(),
            self.feature_names.len(),
            "path_contributions needs one slot per model feature"
        );
        self.predict_with_path(f, out);
        self.bias
    }

    /// [`Model::predict`] and [`Model::path_contributions`] in one walk of the trees: returns
    /// exactly what `predict` returns and writes exactly what `path_contributions` writes to
    /// `out` (zeroed first; one slot per model feature), for little more than the cost of
    /// `predict` alone. The bias is [`Model::path_contributions`]'.
    ///
    /// # Panics
    /// If `out.len()` is not `feature_names().len()`.
    pub fn predict_with_path(&self, f: &FeatureValues<'_>, out: &mut [f64]) -> f64 {
        assert_eq!(
            out.len(),
            self.feature_names.len(),
            "path contributions need one slot per model feature"
        );
        let mut by_num = [0.0; features::NUM_COUNT];
        let sum = self.forest.sum_with_path(&f.num, &mut by_num);
        // Model features are distinct catalog features (checked at load), so each slot takes
        // the credits of exactly one catalog index, added in the same order as before.
        for (slot, def) in out.iter_mut().zip(&self.features) {
            *slot = by_num[def.index];
        }
        sigmoid(self.base_margin + sum)
    }

    /// The anomaly detector carried with the model, if any.
    pub fn anomaly(&self) -> Option<&IsolationForest> {
        self.anomaly.as_ref()
    }

    /// The model with `forest` as its anomaly detector (replacing any it had); written to and
    /// read from the model file's `anomaly` section.
    pub fn with_anomaly(mut self, forest: IsolationForest) -> Model {
        self.anomaly = Some(forest);
        self
    }

    /// The catalog entries of the model's features, in the model's order.
    pub fn features(&self) -> &[&'static FeatureDef] {
        &self.features
    }

    /// The model's input features, by catalog name; [`Model::contributions`] follows this order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Where the model came from.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.forest.n_trees()
    }

    /// The margin before any tree (log-odds), e.g. `logit(base_score)` for XGBoost.
    pub fn base_margin(&self) -> f64 {
        self.base_margin
    }
}

/// `1 / (1 + e^-m)`, without overflow for large negative margins.
fn sigmoid(m: f64) -> f64 {
    if m >= 0.0 {
        1.0 / (1.0 + (-m).exp())
    } else {
        let e = m.exp();
        e / (1.0 + e)
    }
}

/// Looks every model feature up in the catalog: number and bool only, each at most once.
fn resolve_features(names: &[String]) -> Result<Vec<&'static FeatureDef>, ModelError> {
    let mut defs: Vec<&'static FeatureDef> = Vec::with_capacity(names.len());
    for name in names {
        let def = features::lookup(name).ok_or_else(|| ModelError::UnknownFeature {
            name: name.clone(),
            catalog_version: features::CATALOG_VERSION,
        })?;
        if def.ty == FeatureType::Text {
            return Err(ModelError::TextFeature { name: name.clone() });
        }
        if defs.iter().any(|d| d.name == def.name) {
            return Err(ModelError::DuplicateFeature { name: name.clone() });
        }
        defs.push(def);
    }
    Ok(defs)
}
