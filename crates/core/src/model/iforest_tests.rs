//! Isolation-forest tests: outliers stand out on synthetic data, fitting is reproducible,
//! missing values follow the larger child, the `anomaly` section round-trips and every way a
//! file or a fit can be wrong is an error.

use serde_json::{json, Value};

use super::iforest::average_path_length;
use super::tests::{load, names, ringfence_doc, two_trees, values, Rng};
use super::*;
use crate::features::CATALOG_VERSION;

const FEATURES: [&str; 2] = ["tx.amount", "card.count_1h"];

/// A standard normal draw (Box-Muller).
fn gauss(rng: &mut Rng) -> f64 {
    let u = 1.0 - rng.unit(); // in (0, 1]
    let v = rng.unit();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// An ordinary transaction: amount about 100 +- 10, about 5 +- 1 card transactions an hour.
fn inlier(rng: &mut Rng) -> [f64; 2] {
    [100.0 + 10.0 * gauss(rng), 5.0 + gauss(rng)]
}

/// Far from the bulk: 8 to 20 standard deviations out on one feature or both.
fn outlier(rng: &mut Rng) -> [f64; 2] {
    let far =
        |rng: &mut Rng| (8.0 + 12.0 * rng.unit()) * if rng.below(2) == 0 { -1.0 } else { 1.0 };
    match rng.below(3) {
        0 => [100.0 + 10.0 * far(rng), 5.0 + gauss(rng)],
        1 => [100.0 + 10.0 * gauss(rng), 5.0 + far(rng)],
        _ => [100.0 + 10.0 * far(rng), 5.0 + far(rng)],
    }
}

fn point(x: [f64; 2]) -> FeatureValues<'static> {
    values(&[(FEATURES[0], x[0]), (FEATURES[1], x[1])])
}

/// 2,000 inliers with 40 outliers mixed in (2% contamination), and those two sets apart.
fn training_data(seed: u64) -> (Vec<f64>, Vec<[f64; 2]>, Vec<[f64; 2]>) {
    let mut rng = Rng(seed);
    let inliers: Vec<[f64; 2]> = (0..2000).map(|_| inlier(&mut rng)).collect();
    let outliers: Vec<[f64; 2]> = (0..40).map(|_| outlier(&mut rng)).collect();
    let mut rows = Vec::new();
    for (i, x) in inliers.iter().enumerate() {
        rows.extend_from_slice(x);
        if i % 50 == 0 {
            rows.extend_from_slice(&outliers[i / 50]);
        }
    }
    (rows, inliers, outliers)
}

fn params(seed: u64) -> IsolationParams {
    IsolationParams {
        seed,
        ..IsolationParams::default()
    }
}

fn fit(rows: &[f64], seed: u64) -> IsolationForest {
    IsolationForest::fit(rows, 2, names(&FEATURES), params(seed)).expect("valid fit")
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / n as f64
}

#[test]
fn outliers_score_clearly_higher_than_the_bulk() {
    let (rows, inliers, outliers) = training_data(1);
    let forest = fit(&rows, 42);
    assert_eq!(forest.n_trees(), 100);
    assert_eq!(forest.sample_size(), 256);
    assert_eq!(forest.feature_names(), names(&FEATURES));

    let inlier_scores: Vec<f64> = inliers.iter().map(|&x| forest.score(&point(x))).collect();
    let outlier_scores: Vec<f64> = outliers.iter().map(|&x| forest.score(&point(x))).collect();
    for s in inlier_scores.iter().chain(&outlier_scores) {
        assert!(*s > 0.0 && *s <= 1.0, "{s}");
    }
    let (mean_in, mean_out) = (
        mean(inlier_scores.iter().copied()),
        mean(outlier_scores.iter().copied()),
    );
    assert!(
        mean_out > mean_in + 0.15,
        "outliers {mean_out:.3}, inliers {mean_in:.3}"
    );
    // Not just on average: every outlier beats the median inlier.
    let mut sorted = inlier_scores.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        outlier_scores.iter().all(|&s| s > median),
        "median inlier {median:.3}, outliers {outlier_scores:?}"
    );
    // Fresh points, not in the training rows, behave the same.
    let mut rng = Rng(99);
    let fresh_in = mean((0..200).map(|_| forest.score(&point(inlier(&mut rng)))));
    let fresh_out = mean((0..200).map(|_| forest.score(&point(outlier(&mut rng)))));
    assert!(
        fresh_out > fresh_in + 0.15,
        "{fresh_out:.3} vs {fresh_in:.3}"
    );
}

#[test]
fn trees_respect_the_paper_shape() {
    let (rows, ..) = training_data(2);
    let forest = fit(&rows, 3);
    // Height limit ceil(log2(256)) = 8.
    assert!(
        forest.forest().max_depth <= 8,
        "{}",
        forest.forest().max_depth
    );
    for nodes in forest.tree_nodes() {
        let leaves: usize = nodes
            .iter()
            .map(|n| match n {
                iforest::IsolationNode::Leaf { size } => *size,
                iforest::IsolationNode::Split { .. } => 0,
            })
            .sum();
        assert_eq!(leaves, 256);
    }
    // The sample is capped at the rows available, and so is the height limit.
    let small =
        IsolationForest::fit(&rows[..2 * 100], 2, names(&FEATURES), params(3)).expect("valid fit");
    assert_eq!(small.sample_size(), 100);
    assert!(small.forest().max_depth <= 7);
}

#[test]
fn same_seed_same_forest() {
    let (rows, inliers, _) = training_data(3);
    let a = fit(&rows, 7);
    let b = fit(&rows, 7);
    let c = fit(&rows, 8);
    assert_eq!(a.tree_nodes(), b.tree_nodes());
    assert_ne!(a.tree_nodes(), c.tree_nodes());
    for &x in inliers.iter().take(100) {
        assert_eq!(a.score(&point(x)), b.score(&point(x)));
    }
}

#[test]
fn score_by_hand() {
    assert_eq!(average_path_length(1), 0.0);
    assert_eq!(average_path_length(2), 1.0);
    // c(256) = 2 (ln 255 + gamma) - 2 * 255 / 256, as scikit-learn computes it.
    assert!((average_path_length(256) - 10.244_770_920_119_917).abs() < 1e-12);

    // One tree on 4 rows: amount < 10 -> a leaf of 3 | a leaf of 1.
    let m = with_anomaly(anomaly_doc(
        4,
        json!([[
            {"feature": 0, "threshold": 10.0, "left": 1, "right": 2},
            {"size": 3}, {"size": 1}
        ]]),
    ))
    .expect("valid");
    let forest = m.anomaly().expect("an anomaly section");
    let c4 = average_path_length(4);
    let left = (-(1.0 + average_path_length(3)) / c4).exp2();
    let right = (-1.0 / c4).exp2();
    let score = |amount: f64| forest.score(&values(&[("tx.amount", amount)]));
    assert_eq!(score(5.0), left);
    assert_eq!(score(10.0), right); // on the threshold goes right
    assert_eq!(score(f64::INFINITY), right);
    assert_eq!(score(f64::NEG_INFINITY), left);
    // Missing goes to the larger child: the left leaf of 3.
    assert_eq!(score(f64::NAN), left);
}

#[test]
fn missing_values_follow_the_larger_child_when_scoring() {
    let one_split = |left: usize, right: usize| {
        let m = with_anomaly(anomaly_doc(
            left + right,
            json!([[
                {"feature": 0, "threshold": 10.0, "left": 1, "right": 2},
                {"size": left}, {"size": right}
            ]]),
        ))
        .expect("valid");
        let forest = m.anomaly().expect("an anomaly section").clone();
        let missing = forest.score(&values(&[]));
        let (went_left, went_right) = (
            forest.score(&values(&[("tx.amount", 0.0)])),
            forest.score(&values(&[("tx.amount", 20.0)])),
        );
        (missing, went_left, went_right)
    };
    let (missing, left, _) = one_split(3, 1);
    assert_eq!(missing, left);
    let (missing, _, right) = one_split(1, 3);
    assert_eq!(missing, right);
    let m = with_anomaly(anomaly_doc(
        6,
        json!([[
            {"feature": 0, "threshold": 10.0, "left": 1, "right": 2},
            {"size": 3},
            {"feature": 0, "threshold": 20.0, "left": 3, "right": 4},
            {"size": 2}, {"size": 1}
        ]]),
    ))
    .expect("valid");
    let forest = m.anomaly().expect("an anomaly section");
    // A leaf of 3 (h = 1 + c(3)) against a split into 2 + 1 (h = 3 or 2): a tie of sizes at
    // the root, so missing goes left.
    assert_eq!(
        forest.score(&values(&[])),
        forest.score(&values(&[("tx.amount", 0.0)]))
    );
    assert_ne!(
        forest.score(&values(&[])),
        forest.score(&values(&[("tx.amount", 15.0)]))
    );
}

#[test]
fn missing_values_when_fitting() {
    let (mut rows, inliers, outliers) = training_data(4);
    // One row in ten misses its amount.
    for row in rows.chunks_exact_mut(2).step_by(10) {
        row[0] = f64::NAN;
    }
    let forest = fit(&rows, 5);
    let mean_in = mean(inliers.iter().map(|&x| forest.score(&point(x))));
    let mean_out = mean(outliers.iter().map(|&x| forest.score(&point(x))));
    assert!(mean_out > mean_in + 0.15, "{mean_out:.3} vs {mean_in:.3}");
    // A missing amount is grouped with the bulk, not isolated for being missing.
    let missing = forest.score(&point([f64::NAN, 5.0]));
    assert!(missing < mean_in + 0.05, "{missing:.3} vs {mean_in:.3}");
    // Missing everything: still a score, and an unremarkable one.
    let nothing = forest.score(&values(&[]));
    assert!(nothing > 0.0 && nothing < mean_out, "{nothing}");

    // A column that is always missing is never split on.
    let mut rng = Rng(6);
    let rows: Vec<f64> = (0..500)
        .flat_map(|_| [100.0 + 10.0 * gauss(&mut rng), f64::NAN])
        .collect();
    let forest = fit(&rows, 1);
    for nodes in forest.tree_nodes() {
        for node in nodes {
            if let iforest::IsolationNode::Split { feature, .. } = node {
                assert_eq!(feature, 0);
            }
        }
    }
    // Nothing to split on at all: every tree is one leaf, every score 0.5.
    let rows = [f64::NAN, 1.0, f64::NAN, 1.0, f64::NAN, 1.0];
    let forest = fit(&rows, 1);
    assert!(forest.tree_nodes().iter().all(|nodes| nodes.len() == 1));
    assert!((forest.score(&point([3.0, 4.0])) - 0.5).abs() < 1e-15);
}

#[test]
fn infinite_and_huge_values_fit_and_score() {
    let (mut rows, inliers, _) = training_data(5);
    rows[0] = f64::INFINITY;
    rows[3] = f64::NEG_INFINITY;
    rows[4] = 1e300; // beyond f32
    rows[6] = -f64::MAX;
    let forest = fit(&rows, 2);
    for x in [
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e300,
        f64::MAX,
        f64::MIN_POSITIVE,
    ] {
        let s = forest.score(&point([x, x]));
        assert!(s > 0.0 && s <= 1.0, "{s}");
    }
    let s = forest.score(&point(inliers[0]));
    assert!(s > 0.0 && s <= 1.0, "{s}");
    // Values that differ only beyond f32 precision are one value to the forest.
    let rows = [1.0, 1.0 + 1e-12, 1.0 + 2e-12, 1.0];
    let forest = IsolationForest::fit(&rows, 1, names(&["tx.amount"]), params(0)).expect("fits");
    assert!(forest.tree_nodes().iter().all(|nodes| nodes.len() == 1));
}

// ---- the `anomaly` section ----

/// An `anomaly` section over `tx.amount`, with `trees` as lists of nodes.
fn anomaly_doc(sample_size: usize, trees: Value) -> Value {
    let trees: Vec<Value> = trees
        .as_array()
        .expect("a list of trees")
        .iter()
        .map(|nodes| json!({ "nodes": nodes }))
        .collect();
    json!({
        "method": "isolation-forest",
        "sample_size": sample_size,
        "feature_names": ["tx.amount"],
        "feature_types": ["number"],
        "trees": trees,
    })
}

/// `two_trees()` as a document with `anomaly` as its anomaly section, loaded.
fn with_anomaly(anomaly: Value) -> Result<Model, ModelError> {
    let mut doc = ringfence_doc();
    doc["anomaly"] = anomaly;
    load(&doc)
}

#[test]
fn round_trips_inside_the_model_file() {
    let (rows, inliers, outliers) = training_data(6);
    let forest = fit(&rows, 9);
    let model = two_trees().with_anomaly(forest.clone());
    let text = model.to_json();
    let back = Model::from_json(&text).expect("own output loads");
    assert_eq!(back.to_json(), text);
    let loaded = back.anomaly().expect("the anomaly section");
    assert_eq!(loaded.tree_nodes(), forest.tree_nodes());
    assert_eq!(loaded.sample_size(), forest.sample_size());
    assert_eq!(loaded.feature_names(), forest.feature_names());
    let mut rng = Rng(10);
    for x in inliers.iter().chain(&outliers).copied().chain([
        [f64::NAN, 5.0],
        [100.0, f64::NAN],
        [f64::NAN, f64::NAN],
        [f64::INFINITY, -1.0],
    ]) {
        assert_eq!(loaded.score(&point(x)), forest.score(&point(x)));
    }
    for _ in 0..1000 {
        let x = [1000.0 * rng.unit() - 500.0, 40.0 * rng.unit() - 20.0];
        assert_eq!(
            loaded.score(&point(x)).to_bits(),
            forest.score(&point(x)).to_bits()
        );
    }
    // The classifier is untouched by the section.
    let f = values(&[("tx.amount", 0.1), ("user.new_device", 0.0)]);
    assert_eq!(back.margin(&f), two_trees().margin(&f));

    // The documented shape: the section last, one line per tree.
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(doc["anomaly"]["method"], "isolation-forest");
    assert_eq!(doc["anomaly"]["sample_size"], 256);
    assert_eq!(
        doc["anomaly"]["feature_names"],
        json!(["tx.amount", "card.count_1h"])
    );
    assert_eq!(doc["anomaly"]["feature_types"], json!(["number", "number"]));
    assert_eq!(doc["anomaly"]["trees"].as_array().map(Vec::len), Some(100));
    let root = &doc["anomaly"]["trees"][0]["nodes"][0];
    let mut keys: Vec<String> = root.as_object().expect("a node").keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, names(&["feature", "left", "right", "threshold"]));
    assert!(text.ends_with("]\n}\n}\n"), "{}", &text[text.len() - 20..]);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("{\"nodes\"")).count(),
        102
    );

    // Without a section, nothing is written and nothing is read.
    assert!(!two_trees().to_json().contains("anomaly"));
    assert!(Model::from_json(&two_trees().to_json())
        .expect("loads")
        .anomaly()
        .is_none());
    // Replacing a section.
    let other = fit(&rows, 10);
    let replaced = model.with_anomaly(other.clone());
    assert_eq!(
        replaced.anomaly().map(IsolationForest::tree_nodes),
        Some(other.tree_nodes())
    );
}

#[test]
fn fit_errors() {
    let rows = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let fit_err = |rows: &[f64], n: usize, names_: &[&str], p: IsolationParams| {
        IsolationForest::fit(rows, n, names(names_), p).unwrap_err()
    };
    let expect = |err: ModelError, needle: &str| {
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
    };
    expect(
        fit_err(&rows, 0, &[], params(0)),
        "needs at least one feature",
    );
    expect(
        fit_err(&rows, 2, &["tx.amount"], params(0)),
        "1 feature names for 2 features",
    );
    expect(
        fit_err(&rows[..5], 2, &FEATURES, params(0)),
        "5 values are not whole rows of 2 features",
    );
    expect(
        fit_err(&rows[..2], 2, &FEATURES, params(0)),
        "1 rows; fitting needs at least 2",
    );
    let no_trees = IsolationParams {
        trees: 0,
        ..params(0)
    };
    expect(fit_err(&rows, 2, &FEATURES, no_trees), "0 trees");
    let tiny = IsolationParams {
        sample_size: 1,
        ..params(0)
    };
    expect(fit_err(&rows, 2, &FEATURES, tiny), "sample size 1");
    let huge = IsolationParams {
        sample_size: MAX_SAMPLE_SIZE + 1,
        ..params(0)
    };
    expect(fit_err(&rows, 2, &FEATURES, huge), "is not between 2 and");
    assert!(matches!(
        fit_err(&rows, 2, &["tx.amount", "card.nope"], params(0)),
        ModelError::UnknownFeature { ref name, .. } if name == "card.nope"
    ));
    assert!(matches!(
        fit_err(&rows, 2, &["tx.amount", "tx.kind"], params(0)),
        ModelError::TextFeature { .. }
    ));
    assert!(matches!(
        fit_err(&rows, 2, &["tx.amount", "tx.amount"], params(0)),
        ModelError::DuplicateFeature { .. }
    ));
}

#[test]
fn anomaly_section_errors() {
    let stump = || {
        json!([[
            {"feature": 0, "threshold": 10.0, "left": 1, "right": 2},
            {"size": 3}, {"size": 1}
        ]])
    };
    let expect = |anomaly: Value, needle: &str| {
        let err = with_anomaly(anomaly).unwrap_err();
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
        err
    };
    assert!(with_anomaly(anomaly_doc(4, stump())).is_ok());

    let mut doc = anomaly_doc(4, stump());
    doc["method"] = json!("one-class-svm");
    let err = expect(doc, "anomaly method `one-class-svm`");
    assert!(matches!(err, ModelError::Unsupported(_)));

    expect(anomaly_doc(1, json!([[{"size": 1}]])), "sample size 1");
    expect(
        anomaly_doc(MAX_SAMPLE_SIZE + 1, stump()),
        "is not between 2 and",
    );
    expect(anomaly_doc(4, json!([])), "anomaly: 0 trees");

    let err = expect(
        anomaly_doc(5, stump()),
        "invalid anomaly tree 0, node 0: its leaves hold 4 rows in all, not the sample size 5",
    );
    assert!(matches!(err, ModelError::InvalidIsolationTree { .. }));
    expect(
        anomaly_doc(
            4,
            json!([[{"feature": 0, "threshold": 1.0, "left": 1, "right": 2}, {"size": 0}, {"size": 4}]]),
        ),
        "invalid anomaly tree 0, node 1: leaf size 0 is not between 1 and the sample size 4",
    );
    expect(
        anomaly_doc(4, json!([[{"size": 4}], [{"size": 9}]])),
        "invalid anomaly tree 1, node 0: leaf size 9",
    );
    expect(
        anomaly_doc(
            4,
            json!([[{"feature": 1, "threshold": 1.0, "left": 1, "right": 2}, {"size": 3}, {"size": 1}]]),
        ),
        "invalid anomaly tree 0, node 0: split feature 1 is out of range",
    );
    expect(
        anomaly_doc(
            4,
            json!([[{"feature": 0, "threshold": 1.0, "left": 1, "right": 0}, {"size": 4}]]),
        ),
        "reached twice",
    );
    expect(
        anomaly_doc(
            4,
            json!([[{"feature": 0, "threshold": 1.0, "left": 1, "right": 7}, {"size": 4}]]),
        ),
        "right child 7 is out of range (the tree has 2 nodes)",
    );
    expect(anomaly_doc(4, json!([[]])), "the tree has no nodes");
    expect(
        anomaly_doc(
            4,
            json!([[{"feature": 0, "threshold": 1.0, "left": 1, "size": 4}, {"size": 3}, {"size": 1}]]),
        ),
        "a leaf or a split, not both",
    );
    expect(
        anomaly_doc(
            4,
            json!([[{"feature": 0, "left": 1, "right": 2}, {"size": 3}, {"size": 1}]]),
        ),
        "invalid anomaly tree 0, node 0: a split lacks `threshold`",
    );
    expect(
        anomaly_doc(4, json!([[{}]])),
        "a node needs `size`, or `feature`, `threshold`, `left` and `right`",
    );
    let err = expect(
        anomaly_doc(4, json!([[{"size": 4, "cover": 4.0}]])),
        "unknown field `cover`",
    );
    assert!(matches!(err, ModelError::MalformedJson { .. }));
    let err = expect(anomaly_doc(4, json!([[{"size": -4}]])), "");
    assert!(matches!(err, ModelError::MalformedJson { .. }));

    // Deeper than the tree limit: a chain of splits, each with a leaf of 1 on the left.
    let chain = |splits: usize| {
        let mut nodes = Vec::new();
        for i in 0..splits {
            let at = nodes.len();
            nodes.push(
                json!({"feature": 0, "threshold": i as f64, "left": at + 1, "right": at + 2}),
            );
            nodes.push(json!({"size": 1}));
        }
        nodes.push(json!({"size": 1}));
        (splits + 1, json!([nodes]))
    };
    let (n, trees) = chain(MAX_DEPTH);
    assert!(with_anomaly(anomaly_doc(n, trees)).is_ok());
    let (n, trees) = chain(MAX_DEPTH + 1);
    expect(anomaly_doc(n, trees), "deeper than 64 levels");

    // Features are checked like the model's.
    let mut doc = anomaly_doc(4, stump());
    doc["feature_names"] = json!(["tx.amountt"]);
    assert!(matches!(
        with_anomaly(doc).unwrap_err(),
        ModelError::UnknownFeature { ref name, .. } if name == "tx.amountt"
    ));
    let mut doc = anomaly_doc(4, stump());
    doc["feature_names"] = json!(["tx.kind"]);
    doc["feature_types"] = json!(["string"]);
    assert!(matches!(
        with_anomaly(doc).unwrap_err(),
        ModelError::TextFeature { .. }
    ));
    let mut doc = anomaly_doc(4, stump());
    doc["feature_names"] = json!([]);
    doc["feature_types"] = json!([]);
    expect(doc, "needs at least one feature");
    let mut doc = anomaly_doc(4, stump());
    doc["feature_types"] = json!(["bool"]);
    expect(doc, "`tx.amount` was a bool and is now a number");

    // Another catalog version: the section needs its feature types too.
    let mut model = ringfence_doc();
    model["catalog_version"] = json!(CATALOG_VERSION + 1);
    model["anomaly"] = anomaly_doc(4, stump());
    assert!(load(&model).expect("types recorded").anomaly().is_some());
    model["anomaly"]
        .as_object_mut()
        .expect("object")
        .remove("feature_types");
    assert!(matches!(
        load(&model).unwrap_err(),
        ModelError::CatalogMismatch { .. }
    ));
}

#[test]
fn hostile_anomaly_sections_are_errors_not_panics() {
    // Corrupt a fitted section's numbers at random: every load must return.
    let (rows, ..) = training_data(7);
    let small = IsolationParams {
        trees: 5,
        sample_size: 32,
        seed: 1,
    };
    let forest = IsolationForest::fit(&rows, 2, names(&FEATURES), small).expect("fits");
    let doc: Value =
        serde_json::from_str(&two_trees().with_anomaly(forest).to_json()).expect("valid JSON");
    let mut rng = Rng(8);
    let mut loaded = 0;
    for _ in 0..2000 {
        let mut doc = doc.clone();
        for _ in 0..1 + rng.below(3) {
            let tree = rng.below(5);
            let nodes = doc["anomaly"]["trees"][tree]["nodes"]
                .as_array_mut()
                .expect("nodes");
            let at = rng.below(nodes.len());
            let node = nodes[at].as_object_mut().expect("a node");
            let key = ["feature", "threshold", "left", "right", "size"][rng.below(5)];
            let value = match rng.below(4) {
                0 => json!(rng.below(70)),
                1 => json!(0),
                2 => json!(u64::MAX),
                _ => json!(rng.unit() * 1e40 - 5e39),
            };
            node.insert(key.to_owned(), value);
        }
        if let Ok(model) = load(&doc) {
            loaded += 1;
            let s = model
                .anomaly()
                .expect("section")
                .score(&point([100.0, 5.0]));
            assert!(s > 0.0 && s <= 1.0, "{s}");
        }
    }
    assert!(loaded < 2000, "some corruptions must be refused");
}
