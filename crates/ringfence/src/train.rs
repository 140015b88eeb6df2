//! `ringfence train`: a gradient-boosted tree model trained on exactly the feature values live
//! scoring produces. History is replayed from its start (so windows are warm) with labels
//! visible only after the label delay; the feature vectors of the transactions in the training
//! window become the training set. The learner is `forust-ml` (pure Rust histogram gradient
//! boosting with learned missing-value directions). `perpetual`, its hyperparameter-free
//! successor, needs a nightly compiler in every release, and this project builds on stable.
//! The learner's trees are converted into Ringfence's own model format, and the conversion is
//! checked against the learner's own predictions before the file is written.

use std::path::PathBuf;
use std::time::Instant;

use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};
use ringfence_core::engine::Engine;
use ringfence_core::event::{CardHasher, Timestamp};
use ringfence_core::features::{self, FeatureType, FeatureValues};
use ringfence_core::model::{
    IsolationForest, IsolationParams, Model, ModelMeta, NodeSpec, TreeSpec,
};

use crate::replay::{self, HistoryRow, ReplayError};

/// Flags of `ringfence train`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// History file (CSV or NDJSON), as for `replay`.
    #[arg(long)]
    pub data: PathBuf,
    /// Column mapping, as for `replay`; must map `label`.
    #[arg(long, default_value = "")]
    pub columns: String,
    /// First day of the training window (e.g. 2018-07-25).
    #[arg(long)]
    pub train_from: String,
    /// Length of the training window in days.
    #[arg(long, default_value_t = 7)]
    pub train_days: i64,
    /// Days after its transaction when a label becomes visible during the replay.
    #[arg(long, default_value_t = 7)]
    pub label_delay_days: i64,
    /// Where to write the model (Ringfence's JSON model format).
    #[arg(long)]
    pub out: PathBuf,
    /// Learner settings.
    #[command(flatten)]
    pub learner: LearnerArgs,
    /// Rules file used while replaying (its alerts feed `account.alerts`).
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

/// Settings of the gradient-boosting learner.
#[derive(clap::Args, Debug, Clone, Copy, serde::Serialize)]
pub struct LearnerArgs {
    /// Boosting rounds (trees).
    #[arg(long, default_value_t = 500)]
    pub trees: usize,
    /// Shrinkage per tree.
    #[arg(long, default_value_t = 0.02)]
    pub learning_rate: f32,
    /// Deepest split level.
    #[arg(long, default_value_t = 6)]
    pub max_depth: usize,
    /// Least hessian sum in a leaf.
    #[arg(long, default_value_t = 10.0)]
    pub min_leaf_weight: f32,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the history failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// A flag is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The learner failed.
    #[error("training: {0}")]
    Learner(String),
    /// The trained model could not be converted or written.
    #[error("model: {0}")]
    Model(String),
}

/// Feature vectors (every numeric and boolean catalog feature) and labels of a training set.
#[derive(Debug, Default)]
pub struct TrainingSet {
    /// Row-major feature values, `NUM_COUNT` per row; `NaN` when missing.
    pub values: Vec<f64>,
    /// Labels, one per row.
    pub labels: Vec<bool>,
}

impl TrainingSet {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Adds a row.
    pub fn push(&mut self, f: &FeatureValues<'_>, label: bool) {
        self.values.extend_from_slice(&f.num);
        self.labels.push(label);
    }

    /// The values of row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * features::NUM_COUNT..(i + 1) * features::NUM_COUNT]
    }
}

/// Numeric and boolean features worth learning from: not constant and not always missing in
/// `set`.
pub fn informative_features(set: &TrainingSet) -> Vec<usize> {
    (0..features::NUM_COUNT)
        .filter(|&j| {
            let mut first: Option<f64> = None;
            (0..set.len()).any(|i| {
                let v = set.row(i)[j];
                if v.is_nan() {
                    return false;
                }
                match first {
                    None => {
                        first = Some(v);
                        false
                    }
                    Some(f) => f != v,
                }
            })
        })
        .filter(|&j| features::NUM_FEATURES[j].ty != FeatureType::Text)
        .collect()
}

/// Trains a model on `set` using the catalog features at `columns`, and checks that the
/// converted model predicts what the learner predicts. Returns the model and the largest
/// margin difference seen in that check.
pub fn fit(
    set: &TrainingSet,
    columns: &[usize],
    learner: &LearnerArgs,
    meta: ModelMeta,
) -> Result<(Model, f64), TrainError> {
    if set.is_empty() {
        return Err(TrainError::Invalid(
            "the training window holds no transactions".into(),
        ));
    }
    let positives = set.labels.iter().filter(|l| **l).count();
    if positives == 0 || positives == set.len() {
        return Err(TrainError::Invalid(format!(
            "the training window needs both classes; it has {positives} frauds in {} transactions",
            set.len()
        )));
    }
    let rows = set.len();
    // forust's Matrix is column-major.
    let mut data = Vec::with_capacity(rows * columns.len());
    for &j in columns {
        data.extend((0..rows).map(|i| set.row(i)[j]));
    }
    let matrix = Matrix::new(&data, rows, columns.len());
    let y: Vec<f64> = set.labels.iter().map(|l| f64::from(u8::from(*l))).collect();
    let mut booster = GradientBooster::default()
        .set_objective_type(ObjectiveType::LogLoss)
        .set_iterations(learner.trees)
        .set_learning_rate(learner.learning_rate)
        .set_max_depth(learner.max_depth)
        .set_min_leaf_weight(learner.min_leaf_weight)
        .set_parallel(true);
    let weights = vec![1.0; rows];
    booster
        .fit(&matrix, &y, &weights, None)
        .map_err(|e| TrainError::Learner(e.to_string()))?;

    let mut trees = Vec::with_capacity(booster.trees.len());
    // No early stopping is configured, so every tree predicts.
    for tree in &booster.trees {
        // Node numbers are positions in forust's vector; map them in case they ever differ.
        let position: std::collections::HashMap<usize, usize> = tree
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.num, i))
            .collect();
        let at = |num: usize| {
            position.get(&num).copied().ok_or_else(|| {
                TrainError::Model(format!("forust tree refers to a missing node {num}"))
            })
        };
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for node in &tree.nodes {
            if node.is_leaf {
                nodes.push(NodeSpec::Leaf {
                    value: f64::from(node.weight_value),
                    cover: f64::from(node.hessian_sum),
                });
            } else {
                if node.missing_node != node.left_child && node.missing_node != node.right_child {
                    return Err(TrainError::Model(
                        "the learner grew a separate missing-value branch; not supported".into(),
                    ));
                }
                nodes.push(NodeSpec::Split {
                    feature: node.split_feature,
                    threshold: node.split_value,
                    left: at(node.left_child)?,
                    right: at(node.right_child)?,
                    default_left: node.missing_node == node.left_child,
                    cover: f64::from(node.hessian_sum),
                });
            }
        }
        trees.push(TreeSpec { nodes });
    }
    let names = columns
        .iter()
        .map(|&j| features::NUM_FEATURES[j].name.to_owned())
        .collect();
    let model = Model::from_trees(names, trees, booster.base_score, meta)
        .map_err(|e| TrainError::Model(e.to_string()))?;
    // The anomaly score: an isolation forest on the same features of the same rows.
    let row_major: Vec<f64> = (0..rows)
        .flat_map(|i| columns.iter().map(move |&j| (i, j)))
        .map(|(i, j)| set.row(i)[j])
        .collect();
    let forest = IsolationForest::fit(
        &row_major,
        columns.len(),
        model.feature_names().to_vec(),
        IsolationParams::default(),
    )
    .map_err(|e| TrainError::Model(format!("isolation forest: {e}")))?;
    let model = model.with_anomaly(forest);

    // The served model must predict what the learner learned.
    let check = rows.min(20_000);
    let check_matrix_data: Vec<f64> = columns
        .iter()
        .flat_map(|&j| (0..check).map(move |i| (i, j)))
        .map(|(i, j)| set.row(i)[j])
        .collect();
    let learner = booster.predict(
        &Matrix::new(&check_matrix_data, check, columns.len()),
        false,
    );
    let mut max_diff: f64 = 0.0;
    let mut f = FeatureValues::default();
    for (i, expected) in learner.iter().enumerate() {
        f.num.copy_from_slice(set.row(i));
        max_diff = max_diff.max((model.margin(&f) - expected).abs());
    }
    // The served model must reproduce the learner exactly; refuse to write one that does not.
    if max_diff > 1e-6 {
        return Err(TrainError::Model(format!(
            "the converted model differs from the learner by up to {max_diff:.3e} in log-odds on the training rows"
        )));
    }
    Ok((model, max_diff))
}

/// Parses a `YYYY-MM-DD` day (UTC midnight).
pub fn parse_day(s: &str) -> Result<Timestamp, TrainError> {
    Timestamp::parse(&format!("{s} 00:00:00"))
        .map_err(|e| TrainError::Invalid(format!("`{s}` is not a day like 2018-07-25: {e}")))
}

/// Replays `rows` and collects the training rows with event time in `[from, until)`.
pub fn collect(
    rows: &[HistoryRow],
    engine: &mut Engine,
    label_delay_days: i64,
    from: Timestamp,
    until: Timestamp,
) -> TrainingSet {
    let mut set = TrainingSet::default();
    replay::run(rows, engine, Some(label_delay_days), |i, s| {
        let row = &rows[i];
        if row.tx.timestamp >= from && row.tx.timestamp < until {
            if let Some(label) = row.label {
                set.push(&s.features, label);
            }
        }
    });
    set
}

/// `ringfence train`.
pub fn main(args: &TrainArgs) -> Result<(), TrainError> {
    let started = Instant::now();
    let from = parse_day(&args.train_from)?;
    let until = Timestamp::from_millis(from.millis() + args.train_days * 86_400_000);
    let hasher = CardHasher::new(b"ringfence-replay");
    let rows = replay::load(&args.data, &args.columns, &hasher)?;
    let mut engine = replay::engine(args.rules.as_deref(), args.label_delay_days)?;
    let set = collect(&rows, &mut engine, args.label_delay_days, from, until);
    let columns = informative_features(&set);
    let frauds = set.labels.iter().filter(|l| **l).count();
    let meta = ModelMeta {
        catalog_version: features::CATALOG_VERSION,
        source: "ringfence-gbdt (forust-ml)".into(),
        trained_at: Some(crate::host::now().to_rfc3339()),
        notes: serde_json::json!({
            "data": args.data.display().to_string(),
            "train_from": args.train_from,
            "train_days": args.train_days,
            "label_delay_days": args.label_delay_days,
            "rows": set.len(),
            "frauds": frauds,
            "learner": args.learner,
        }),
    };
    let (model, max_diff) = fit(&set, &columns, &args.learner, meta)?;
    std::fs::write(&args.out, model.to_json())
        .map_err(|e| TrainError::Model(format!("{}: {e}", args.out.display())))?;
    println!(
        "trained on {} transactions ({} frauds) with {} features: {} trees; written to {} in {:.1} s (largest margin difference from the learner: {:.2e})",
        set.len(),
        frauds,
        columns.len(),
        model.n_trees(),
        args.out.display(),
        started.elapsed().as_secs_f64(),
        max_diff
    );
    Ok(())
}
