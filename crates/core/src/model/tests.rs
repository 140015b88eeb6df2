//! Unit tests: hand-built models with hand-computed scores, every load error, TreeSHAP
//! against brute-force Shapley values, and path attributions against both. The isolation
//! forest has its own file, `iforest_tests.rs`, which borrows the helpers here.

use serde_json::{json, Value};

use super::*;
use crate::features::{FeatureValues, CATALOG_VERSION};

fn split(
    feature: usize,
    threshold: f64,
    left: usize,
    right: usize,
    default_left: bool,
    cover: f64,
) -> NodeSpec {
    NodeSpec::Split {
        feature,
        threshold,
        left,
        right,
        default_left,
        cover,
    }
}

fn leaf(value: f64, cover: f64) -> NodeSpec {
    NodeSpec::Leaf { value, cover }
}

pub(super) fn meta() -> ModelMeta {
    ModelMeta {
        catalog_version: CATALOG_VERSION,
        source: "test".to_owned(),
        trained_at: Some("2024-06-01T12:00:00Z".to_owned()),
        notes: json!({"rows": 100}),
    }
}

pub(super) fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Feature values by catalog name; everything else missing.
pub(super) fn values(pairs: &[(&str, f64)]) -> FeatureValues<'static> {
    let mut f = FeatureValues::default();
    for (name, v) in pairs {
        f.num[features::lookup(name).expect("catalog name").index] = *v;
    }
    f
}

/// Tree 0: `tx.amount < 100` (missing goes right) -> -1.0 | 2.0.
/// Tree 1: `user.new_device < 0.5` (missing goes left) -> (`tx.amount < 0.1` -> 0.25 | 0.5) | 1.5.
pub(super) fn two_trees() -> Model {
    Model::from_trees(
        names(&["tx.amount", "user.new_device"]),
        vec![
            TreeSpec {
                nodes: vec![
                    split(0, 100.0, 1, 2, false, 100.0),
                    leaf(-1.0, 60.0),
                    leaf(2.0, 40.0),
                ],
            },
            TreeSpec {
                nodes: vec![
                    split(1, 0.5, 1, 4, true, 100.0),
                    split(0, 0.1, 2, 3, false, 70.0),
                    leaf(0.25, 30.0),
                    leaf(0.5, 40.0),
                    leaf(1.5, 30.0),
                ],
            },
        ],
        -0.5,
        meta(),
    )
    .expect("valid model")
}

fn sigmoid_ref(m: f64) -> f64 {
    1.0 / (1.0 + (-m).exp())
}

#[test]
fn two_tree_model_scores_by_hand() {
    let m = two_trees();
    assert_eq!(m.n_trees(), 2);
    assert_eq!(m.feature_names(), names(&["tx.amount", "user.new_device"]));
    assert_eq!(m.base_margin(), -0.5);
    let cases = [
        // amount, new_device, margin
        (50.0, 0.0, -0.5 - 1.0 + 0.5),
        (150.0, 1.0, -0.5 + 2.0 + 1.5),
        (0.05, 0.0, -0.5 - 1.0 + 0.25),
        (100.0, 0.0, -0.5 + 2.0 + 0.5), // exactly on the threshold goes right
    ];
    for (amount, device, margin) in cases {
        let f = values(&[("tx.amount", amount), ("user.new_device", device)]);
        assert_eq!(m.margin(&f), margin, "amount {amount} device {device}");
        assert!((m.predict(&f) - sigmoid_ref(margin)).abs() < 1e-15);
    }
}

#[test]
fn missing_values_follow_the_default_direction() {
    let m = two_trees();
    // Both missing: tree 0 defaults right (2.0), tree 1 defaults left, then right (0.5).
    assert_eq!(m.margin(&values(&[])), -0.5 + 2.0 + 0.5);
    // Only the device missing: tree 1 goes left and then reads the amount.
    assert_eq!(m.margin(&values(&[("tx.amount", 0.01)])), -0.5 - 1.0 + 0.25);
    // Only the amount missing.
    assert_eq!(
        m.margin(&values(&[("user.new_device", 1.0)])),
        -0.5 + 2.0 + 1.5
    );
}

#[test]
fn thresholds_compare_in_f32_like_xgboost() {
    let m = two_trees();
    let t1 = |amount: f64| {
        m.margin(&values(&[("tx.amount", amount), ("user.new_device", 0.0)])) + 0.5 + 1.0
    };
    // 0.1 is below f32(0.1) = 0.100000001490116... in f64, but rounds onto it in f32: right.
    assert!(0.1 < f64::from(0.1f32));
    assert_eq!(t1(0.1), 0.5);
    // So does a value just under f32(0.1) that still rounds to it.
    assert_eq!(t1(f64::from(0.1f32) - 1e-12), 0.5);
    // The next f32 down goes left.
    let below = f32::from_bits(0.1f32.to_bits() - 1);
    assert_eq!(t1(f64::from(below)), 0.25);
}

#[test]
fn huge_and_infinite_inputs_do_not_panic() {
    let m = two_trees();
    for x in [f64::INFINITY, f64::NEG_INFINITY, 1e300, -1e300, f64::MAX] {
        let p = m.predict(&values(&[("tx.amount", x), ("user.new_device", x)]));
        assert!((0.0..=1.0).contains(&p));
    }
}

#[test]
fn round_trips_through_ringfence_json() {
    let m = two_trees();
    let text = m.to_json();
    let back = Model::from_json(&text).expect("own output loads");
    assert_eq!(back.feature_names(), m.feature_names());
    assert_eq!(back.meta(), m.meta());
    assert_eq!(back.base_margin(), m.base_margin());
    assert_eq!(back.forest.tree_specs(), m.forest.tree_specs());
    assert_eq!(back.to_json(), text);
    let f = values(&[("tx.amount", 0.1), ("user.new_device", 0.0)]);
    assert_eq!(back.margin(&f), m.margin(&f));

    // The documented shape: one line per tree, leaves and splits as described.
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(doc["format"], "ringfence-model");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["catalog_version"], CATALOG_VERSION);
    assert_eq!(doc["objective"], "binary:logistic");
    assert_eq!(doc["feature_types"], json!(["number", "bool"]));
    assert_eq!(doc["notes"], json!({"rows": 100}));
    assert_eq!(
        doc["trees"][0]["nodes"],
        json!([
            {"feature": 0, "threshold": 100.0, "left": 1, "right": 2, "default_left": false, "cover": 100.0},
            {"leaf": -1.0, "cover": 60.0},
            {"leaf": 2.0, "cover": 40.0},
        ])
    );
    // The threshold is written as the f64 it is compared as.
    assert_eq!(doc["trees"][1]["nodes"][1]["threshold"], 0.1);
}

#[test]
fn round_trip_renumbers_in_preorder_and_drops_unreachable_nodes() {
    // Children before parents in the input, and a node (3) nothing reaches.
    let m = Model::from_trees(
        names(&["tx.amount"]),
        vec![TreeSpec {
            nodes: vec![
                split(0, 1.0, 2, 1, true, 2.0),
                leaf(5.0, 1.0),
                leaf(-5.0, 1.0),
                leaf(9.0, 1.0),
            ],
        }],
        0.0,
        meta(),
    )
    .expect("valid model");
    assert_eq!(
        m.forest.tree_specs(),
        vec![TreeSpec {
            nodes: vec![
                split(0, 1.0, 1, 2, true, 2.0),
                leaf(-5.0, 1.0),
                leaf(5.0, 1.0)
            ],
        }]
    );
    assert_eq!(m.margin(&values(&[("tx.amount", 0.0)])), -5.0);
    assert_eq!(m.margin(&values(&[("tx.amount", 2.0)])), 5.0);
}

#[test]
fn a_model_of_no_trees_is_its_base_margin() {
    let m = Model::from_trees(names(&["tx.amount"]), vec![], 0.25, meta()).expect("valid");
    assert_eq!(m.margin(&values(&[])), 0.25);
    let mut out = Vec::new();
    assert_eq!(m.contributions(&values(&[]), &mut out), 0.25);
    assert_eq!(out, vec![0.0]);
    let back = Model::from_json(&m.to_json()).expect("loads");
    assert_eq!(back.n_trees(), 0);
}

// ---- errors ----

fn build(feature_names: &[&str], nodes: Vec<NodeSpec>) -> Result<Model, ModelError> {
    Model::from_trees(names(feature_names), vec![TreeSpec { nodes }], 0.0, meta())
}

fn stump() -> Vec<NodeSpec> {
    vec![
        split(0, 1.0, 1, 2, true, 2.0),
        leaf(-1.0, 1.0),
        leaf(1.0, 1.0),
    ]
}

#[test]
fn unknown_feature_is_named() {
    let err = build(&["tx.amount", "card.nope"], stump()).unwrap_err();
    assert!(matches!(&err, ModelError::UnknownFeature { name, .. } if name == "card.nope"));
    assert_eq!(
        err.to_string(),
        format!("unknown feature `card.nope` (not in catalog v{CATALOG_VERSION})")
    );
}

#[test]
fn text_feature_is_refused() {
    let err = build(&["tx.amount", "tx.kind"], stump()).unwrap_err();
    assert!(
        matches!(&err, ModelError::TextFeature { name } if name == "tx.kind"),
        "{err}"
    );
    assert!(err.to_string().contains("`tx.kind` is text"));
}

#[test]
fn duplicate_feature_is_refused() {
    let err = build(&["tx.amount", "tx.amount"], stump()).unwrap_err();
    assert!(
        matches!(&err, ModelError::DuplicateFeature { name } if name == "tx.amount"),
        "{err}"
    );
}

fn tree_error(nodes: Vec<NodeSpec>) -> (usize, String) {
    match build(&["tx.amount"], nodes) {
        Err(ModelError::InvalidTree { node, reason, .. }) => (node, reason),
        other => panic!("expected an invalid tree, got {other:?}"),
    }
}

#[test]
fn bad_child_index_is_refused() {
    let (node, reason) = tree_error(vec![split(0, 1.0, 1, 7, true, 2.0), leaf(0.0, 1.0)]);
    assert_eq!(node, 0);
    assert_eq!(
        reason,
        "right child 7 is out of range (the tree has 2 nodes)"
    );
}

#[test]
fn cycles_and_shared_subtrees_are_refused() {
    // 1 points back at the root.
    let (node, reason) = tree_error(vec![
        split(0, 1.0, 1, 2, true, 2.0),
        split(0, 0.5, 0, 2, true, 1.0),
        leaf(0.0, 1.0),
    ]);
    assert_eq!(node, 1);
    assert!(reason.contains("reached twice"), "{reason}");
    // A self-loop.
    let (_, reason) = tree_error(vec![split(0, 1.0, 0, 1, true, 2.0), leaf(0.0, 1.0)]);
    assert!(reason.contains("reached twice"), "{reason}");
    // Two parents share a leaf.
    let (_, reason) = tree_error(vec![
        split(0, 1.0, 1, 2, true, 2.0),
        split(0, 0.5, 3, 4, true, 1.0),
        split(0, 2.0, 3, 4, true, 1.0),
        leaf(0.0, 1.0),
        leaf(1.0, 1.0),
    ]);
    assert!(reason.contains("reached twice"), "{reason}");
    // Both children the same node.
    let (_, reason) = tree_error(vec![split(0, 1.0, 1, 1, true, 2.0), leaf(0.0, 1.0)]);
    assert!(reason.contains("reached twice"), "{reason}");
}

#[test]
fn depth_is_limited() {
    // A chain of splits, each with a leaf on the right: depth = number of splits.
    let chain = |splits: usize| {
        let mut nodes = Vec::new();
        for i in 0..splits {
            let at = nodes.len();
            nodes.push(split(0, i as f64, at + 2, at + 1, true, 1.0));
            nodes.push(leaf(1.0, 0.5));
        }
        nodes.push(leaf(0.0, 0.5));
        nodes
    };
    let ok = build(&["tx.amount"], chain(MAX_DEPTH)).expect("64 levels are allowed");
    assert_eq!(ok.forest.max_depth, MAX_DEPTH);
    let mut out = Vec::new();
    let f = values(&[("tx.amount", 30.5)]);
    let bias = ok.contributions(&f, &mut out);
    assert!((bias + out[0] - ok.margin(&f)).abs() < 1e-9);
    let (_, reason) = tree_error(chain(MAX_DEPTH + 1));
    assert_eq!(reason, "the tree is deeper than 64 levels");
}

#[test]
fn tree_count_is_limited() {
    let trees = vec![
        TreeSpec {
            nodes: vec![leaf(0.0, 1.0)]
        };
        MAX_TREES + 1
    ];
    let err = Model::from_trees(names(&["tx.amount"]), trees, 0.0, meta()).unwrap_err();
    assert!(
        matches!(err, ModelError::Invalid(ref m) if m.contains("at most 100000")),
        "{err}"
    );
}

#[test]
fn f32_boundaries_reproduce_single_precision_comparisons() {
    use super::tree::f32_split_boundary;
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..20_000 {
        let t = f32::from_bits((next() as u32) & 0x7f7f_ffff)
            * if next() & 1 == 0 { 1.0 } else { -1.0 };
        if !t.is_finite() {
            continue;
        }
        let m = f32_split_boundary(t);
        // Values around the threshold, including the exact midpoints below and above it.
        let below = f64::from(t.next_down());
        let mid = (below + f64::from(t)) / 2.0;
        for x in [
            mid,
            mid.next_down(),
            mid.next_up(),
            f64::from(t),
            f64::from(t).next_down(),
            below,
        ] {
            assert_eq!((x as f32) < t, x < m, "t = {t:e}, x = {x:e}, m = {m:e}");
        }
    }
}

#[test]
fn bad_numbers_are_refused() {
    let (_, reason) = tree_error(vec![
        split(0, f64::NAN, 1, 2, true, 2.0),
        leaf(0.0, 1.0),
        leaf(0.0, 1.0),
    ]);
    assert!(reason.contains("is not finite"), "{reason}");
    let (_, reason) = tree_error(vec![
        split(0, f64::INFINITY, 1, 2, true, 2.0),
        leaf(0.0, 1.0),
        leaf(0.0, 1.0),
    ]);
    assert!(reason.contains("is not finite"), "{reason}");
    let (node, reason) = tree_error(vec![
        split(0, 1.0, 1, 2, true, 2.0),
        leaf(f64::INFINITY, 1.0),
        leaf(0.0, 1.0),
    ]);
    assert_eq!(node, 1);
    assert!(reason.contains("not finite"), "{reason}");
    let (_, reason) = tree_error(vec![
        split(0, 1.0, 1, 2, true, 0.0),
        leaf(0.0, 0.0),
        leaf(0.0, 0.0),
    ]);
    assert!(reason.contains("finite positive"), "{reason}");
    let (_, reason) = tree_error(vec![
        split(0, 1.0, 1, 2, true, 1.0),
        leaf(0.0, -1.0),
        leaf(0.0, 1.0),
    ]);
    assert!(reason.contains("non-negative"), "{reason}");
    let (_, reason) = tree_error(vec![
        split(3, 1.0, 1, 2, true, 1.0),
        leaf(0.0, 1.0),
        leaf(0.0, 1.0),
    ]);
    assert!(
        reason.contains("split feature 3 is out of range"),
        "{reason}"
    );
    let (_, reason) = tree_error(vec![]);
    assert_eq!(reason, "the tree has no nodes");
    let err = Model::from_trees(names(&["tx.amount"]), vec![], f64::NAN, meta()).unwrap_err();
    assert!(matches!(err, ModelError::Invalid(_)), "{err}");
}

#[test]
fn from_trees_needs_the_current_catalog_and_object_notes() {
    let mut old = meta();
    old.catalog_version = CATALOG_VERSION + 1;
    let err = Model::from_trees(names(&["tx.amount"]), vec![], 0.0, old).unwrap_err();
    assert!(matches!(err, ModelError::CatalogMismatch { .. }), "{err}");
    let mut bad_notes = meta();
    bad_notes.notes = json!([1, 2]);
    let err = Model::from_trees(names(&["tx.amount"]), vec![], 0.0, bad_notes).unwrap_err();
    assert!(
        err.to_string().contains("notes must be a JSON object"),
        "{err}"
    );
    let mut null_notes = meta();
    null_notes.notes = Value::Null;
    let m = Model::from_trees(names(&["tx.amount"]), vec![], 0.0, null_notes).expect("valid");
    assert_eq!(m.meta().notes, json!({}));
}

/// `two_trees()` as a Ringfence JSON document, to corrupt.
pub(super) fn ringfence_doc() -> Value {
    serde_json::from_str(&two_trees().to_json()).expect("valid JSON")
}

pub(super) fn load(doc: &Value) -> Result<Model, ModelError> {
    Model::from_json(&doc.to_string())
}

#[test]
fn ringfence_format_errors() {
    let mut doc = ringfence_doc();
    doc["objective"] = json!("multi:softprob");
    let err = load(&doc).unwrap_err();
    assert!(
        matches!(&err, ModelError::UnsupportedObjective(o) if o == "multi:softprob"),
        "{err}"
    );

    let mut doc = ringfence_doc();
    doc["feature_names"][1] = json!("tx.currency");
    doc["feature_types"][1] = json!("string");
    assert!(matches!(
        load(&doc).unwrap_err(),
        ModelError::TextFeature { .. }
    ));

    let mut doc = ringfence_doc();
    doc["feature_names"][0] = json!("tx.amountt");
    let err = load(&doc).unwrap_err();
    assert!(
        matches!(&err, ModelError::UnknownFeature { name, .. } if name == "tx.amountt"),
        "{err}"
    );

    let mut doc = ringfence_doc();
    doc["trees"][1]["nodes"][1]["right"] = json!(42);
    let err = load(&doc).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid tree 1, node 1: right child 42 is out of range (the tree has 5 nodes)"
    );

    let mut doc = ringfence_doc();
    doc["trees"][1]["nodes"][1]["left"] = json!(0);
    assert!(load(&doc)
        .unwrap_err()
        .to_string()
        .contains("reached twice"));

    let mut doc = ringfence_doc();
    doc["trees"][0]["nodes"][1]["feature"] = json!(0);
    let err = load(&doc).unwrap_err();
    assert!(
        err.to_string().contains("a leaf or a split, not both"),
        "{err}"
    );

    let mut doc = ringfence_doc();
    doc["trees"][0]["nodes"][0]
        .as_object_mut()
        .expect("object")
        .remove("threshold");
    let err = load(&doc).unwrap_err();
    assert!(
        err.to_string().contains("a split lacks `threshold`"),
        "{err}"
    );

    let mut doc = ringfence_doc();
    doc["trees"][0]["nodes"][0]["thresold"] = json!(1.0);
    let err = load(&doc).unwrap_err();
    assert!(
        matches!(&err, ModelError::MalformedJson { message, .. } if message.contains("unknown field `thresold`")),
        "{err}"
    );

    let mut doc = ringfence_doc();
    doc["version"] = json!(2);
    assert!(load(&doc)
        .unwrap_err()
        .to_string()
        .contains("format version 2"));

    let mut doc = ringfence_doc();
    doc.as_object_mut().expect("object").remove("format");
    assert!(load(&doc)
        .unwrap_err()
        .to_string()
        .contains("not a Ringfence model"));

    let mut doc = ringfence_doc();
    doc["notes"] = json!("free text");
    assert!(load(&doc)
        .unwrap_err()
        .to_string()
        .contains("notes must be a JSON object"));

    let mut doc = ringfence_doc();
    doc["trees"][0]["nodes"][0]["left"] = json!(-1);
    assert!(matches!(
        load(&doc).unwrap_err(),
        ModelError::MalformedJson { .. }
    ));
}

#[test]
fn malformed_json_reports_where() {
    let text = two_trees()
        .to_json()
        .replacen("\"source\": \"test\",", "\"source\": \"test\"", 1);
    let err = Model::from_json(&text).unwrap_err();
    match &err {
        ModelError::MalformedJson {
            line,
            column,
            message,
        } => {
            assert_eq!((*line, *column), (6, 1), "{message}");
            assert!(message.starts_with("expected `,` or `}`"), "{message}");
        }
        other => panic!("expected malformed JSON, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("malformed JSON at line 6, column 1: "),
        "{err}"
    );
    for bad in ["", "{", "[1,2]", "null", "{\"format\": 3}", "{\"a\":"] {
        assert!(Model::from_json(bad).is_err(), "{bad:?}");
        assert!(Model::from_xgboost_json(bad).is_err(), "{bad:?}");
    }
    // Deep nesting is an error from the parser's recursion limit, not a stack overflow.
    let deep = "[".repeat(100_000);
    assert!(matches!(
        Model::from_json(&deep),
        Err(ModelError::MalformedJson { .. })
    ));
    assert!(matches!(
        Model::from_xgboost_json(&deep),
        Err(ModelError::MalformedJson { .. })
    ));
}

#[test]
fn catalog_version_mismatch() {
    let other = CATALOG_VERSION + 1;
    // Recorded types that still match: loads, with a note.
    let mut doc = ringfence_doc();
    doc["catalog_version"] = json!(other);
    let m = load(&doc).expect("features unchanged");
    assert_eq!(m.meta().catalog_version, other);
    let note = m.meta().notes["catalog_note"].as_str().expect("a note");
    assert!(
        note.contains(&format!("v{other}")) && note.contains("same types"),
        "{note}"
    );
    assert_eq!(m.meta().notes["rows"], 100);

    // Without recorded types it cannot be checked.
    let mut doc = ringfence_doc();
    doc["catalog_version"] = json!(other);
    doc.as_object_mut().expect("object").remove("feature_types");
    let err = load(&doc).unwrap_err();
    assert!(matches!(err, ModelError::CatalogMismatch { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!(
        "catalog version mismatch: the model was built for feature catalog v{other}, this build has v{CATALOG_VERSION}"
    )));

    // A feature that changed type.
    let mut doc = ringfence_doc();
    doc["catalog_version"] = json!(other);
    doc["feature_types"][1] = json!("number");
    let err = load(&doc).unwrap_err();
    assert!(
        err.to_string()
            .contains("`user.new_device` was a number and is now a bool"),
        "{err}"
    );

    // A feature that is gone.
    let mut doc = ringfence_doc();
    doc["catalog_version"] = json!(other);
    doc["feature_names"][0] = json!("tx.retired_feature");
    let err = load(&doc).unwrap_err();
    assert!(matches!(err, ModelError::CatalogMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("`tx.retired_feature` no longer exists"),
        "{err}"
    );

    // Same version: types are optional, and checked when present.
    let mut doc = ringfence_doc();
    doc.as_object_mut().expect("object").remove("feature_types");
    assert!(load(&doc).is_ok());
    let mut doc = ringfence_doc();
    doc["feature_types"][0] = json!("bool");
    assert!(matches!(load(&doc).unwrap_err(), ModelError::Invalid(_)));
}

// ---- XGBoost import ----

/// A minimal XGBoost 3 document: one stump on `tx.amount`, leaves -0.5 | 0.75.
fn xgb_doc() -> Value {
    json!({
        "learner": {
            "attributes": {},
            "feature_names": ["tx.amount", "user.new_device"],
            "feature_types": ["float", "int"],
            "gradient_booster": {
                "name": "gbtree",
                "model": {
                    "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": "1"},
                    "iteration_indptr": [0, 1],
                    "tree_info": [0],
                    "trees": [{
                        "base_weights": [0.0, -1.0, 1.5],
                        "default_left": [1, 0, 0],
                        "id": 0,
                        "left_children": [1, -1, -1],
                        "right_children": [2, -1, -1],
                        "loss_changes": [3.0, 0.0, 0.0],
                        "parents": [2147483647, 0, 0],
                        "split_conditions": [100.0, -0.5, 0.75],
                        "split_indices": [0, 0, 0],
                        "split_type": [0, 0, 0],
                        "sum_hessian": [10.0, 6.0, 4.0],
                        "categories": [], "categories_nodes": [],
                        "categories_segments": [], "categories_sizes": [],
                        "tree_param": {"num_deleted": "0", "num_feature": "2", "num_nodes": "3", "size_leaf_vector": "1"}
                    }]
                }
            },
            "learner_model_param": {"base_score": "[5E-1]", "boost_from_average": "1", "num_class": "0", "num_feature": "2", "num_target": "1"},
            "objective": {"name": "binary:logistic", "reg_loss_param": {"scale_pos_weight": "1"}}
        },
        "version": [3, 2, 0]
    })
}

fn xgb(doc: &Value) -> Result<Model, ModelError> {
    Model::from_xgboost_json(&doc.to_string())
}

#[test]
fn xgboost_stump_loads_and_scores() {
    let m = xgb(&xgb_doc()).expect("valid");
    assert_eq!(m.n_trees(), 1);
    assert_eq!(m.base_margin(), 0.0);
    assert_eq!(m.meta().source, "xgboost");
    assert_eq!(m.meta().catalog_version, CATALOG_VERSION);
    assert_eq!(m.meta().notes["xgboost_version"], "3.2.0");
    assert_eq!(m.margin(&values(&[("tx.amount", 10.0)])), -0.5);
    assert_eq!(m.margin(&values(&[("tx.amount", 100.0)])), 0.75);
    assert_eq!(m.margin(&values(&[])), -0.5); // default_left = 1
                                              // Converts to our format and back unchanged.
    let back = Model::from_json(&m.to_json()).expect("loads");
    assert_eq!(back.forest.tree_specs(), m.forest.tree_specs());
}

#[test]
fn xgboost_older_spellings_load() {
    let mut doc = xgb_doc();
    doc["learner"]["learner_model_param"]["base_score"] = json!("2.5E-1");
    doc["learner"]["gradient_booster"]["model"]["trees"][0]["default_left"] =
        json!([false, false, false]);
    doc["learner"]["gradient_booster"]["model"]["trees"][0]
        .as_object_mut()
        .expect("object")
        .remove("split_type");
    let m = xgb(&doc).expect("valid");
    assert!((m.base_margin() - (1.0f64 / 3.0).ln()).abs() < 1e-7);
    assert_eq!(m.margin(&values(&[])), m.base_margin() + 0.75); // default right now
}

#[test]
fn xgboost_dart_weights_scale_trees() {
    let mut doc = xgb_doc();
    let model = doc["learner"]["gradient_booster"]["model"].take();
    doc["learner"]["gradient_booster"] = json!({
        "name": "dart",
        "gbtree": {"name": "gbtree", "model": model},
        "weight_drop": [0.5]
    });
    let m = xgb(&doc).expect("valid");
    assert_eq!(m.margin(&values(&[("tx.amount", 200.0)])), 0.375);
}

#[test]
fn xgboost_errors() {
    let expect = |doc: &Value, needle: &str| {
        let err = xgb(doc).unwrap_err();
        assert!(
            err.to_string().contains(needle),
            "{err} does not contain {needle:?}"
        );
        err
    };

    let mut doc = xgb_doc();
    doc["learner"]["objective"]["name"] = json!("reg:squarederror");
    let err = expect(&doc, "unsupported objective `reg:squarederror`");
    assert!(matches!(err, ModelError::UnsupportedObjective(_)));

    let mut doc = xgb_doc();
    doc["learner"]["learner_model_param"]["num_class"] = json!("3");
    expect(&doc, "3 classes");

    let mut doc = xgb_doc();
    doc["learner"]["gradient_booster"]["model"]["tree_info"] = json!([1]);
    expect(&doc, "multiclass");

    let mut doc = xgb_doc();
    doc["learner"]["learner_model_param"]["base_score"] = json!("[5E-1,5E-1]");
    expect(&doc, "base score per output");

    let mut doc = xgb_doc();
    doc["learner"]["learner_model_param"]["base_score"] = json!("1");
    expect(&doc, "strictly between 0 and 1");

    let mut doc = xgb_doc();
    doc["learner"]["gradient_booster"] = json!({"name": "gblinear", "model": {"weights": [0.0]}});
    expect(&doc, "booster `gblinear`");

    let mut doc = xgb_doc();
    doc["learner"]["gradient_booster"]["model"]["trees"][0]["split_type"] = json!([1, 0, 0]);
    expect(&doc, "categorical split");

    let mut doc = xgb_doc();
    doc["learner"]["feature_types"] = json!(["float", "c"]);
    expect(&doc, "`user.new_device` is categorical");

    let mut doc = xgb_doc();
    doc["learner"]["feature_names"] = json!(["tx.amount", "f1"]);
    let err = expect(&doc, "unknown feature `f1`");
    assert!(matches!(err, ModelError::UnknownFeature { .. }));

    let mut doc = xgb_doc();
    doc["learner"]["feature_names"] = json!(["tx.amount", "tx.country"]);
    assert!(matches!(
        xgb(&doc).unwrap_err(),
        ModelError::TextFeature { .. }
    ));

    let mut doc = xgb_doc();
    doc["learner"]
        .as_object_mut()
        .expect("object")
        .remove("feature_names");
    expect(&doc, "no feature names");

    let mut doc = xgb_doc();
    doc["learner"]["gradient_booster"]["model"]["trees"][0]["right_children"] = json!([-5, -1, -1]);
    expect(&doc, "invalid tree 0, node 0: right child -5 is negative");

    let mut doc = xgb_doc();
    doc["learner"]["gradient_booster"]["model"]["trees"][0]["right_children"] = json!([1, -1, -1]);
    expect(&doc, "reached twice");

    let mut doc = xgb_doc();
    doc["learner"]["gradient_booster"]["model"]["trees"][0]["sum_hessian"] = json!([10.0, 6.0]);
    expect(&doc, "`sum_hessian` has 2 entries");

    let mut doc = xgb_doc();
    doc["learner"]["gradient_booster"]["model"]["trees"][0]["split_indices"] = json!([0, "a", 0]);
    expect(
        &doc,
        "`learner.gradient_booster.model.trees[0].split_indices` holds a non-integer",
    );

    let mut doc = xgb_doc();
    doc["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] = json!("2");
    expect(&doc, "declares 2 trees but holds 1");

    let mut doc = xgb_doc();
    doc["learner"]["gradient_booster"]["model"]["trees"][0]["tree_param"]["size_leaf_vector"] =
        json!("2");
    expect(&doc, "vector leaves");

    let mut doc = xgb_doc();
    doc["learner"]["gradient_booster"]["model"]
        .as_object_mut()
        .expect("object")
        .remove("trees");
    expect(&doc, "`learner.gradient_booster.model.trees` is missing");

    // UBJSON gets a hint.
    let err = Model::from_xgboost_json("\u{7b}").unwrap_err();
    assert!(matches!(err, ModelError::MalformedJson { .. }));
    let err = Model::from_xgboost_json("[$U#i\u{3}").unwrap_err();
    assert!(err.to_string().contains("UBJSON is not read"), "{err}");
}

// ---- TreeSHAP ----

#[test]
fn shap_of_a_single_split_by_hand() {
    // x < 0.5 -> 1.0 (cover 3) | -1.0 (cover 1): expected value (3 - 1) / 4 = 0.5.
    let m = Model::from_trees(
        names(&["card.count_1m"]),
        vec![TreeSpec {
            nodes: vec![
                split(0, 0.5, 1, 2, false, 4.0),
                leaf(1.0, 3.0),
                leaf(-1.0, 1.0),
            ],
        }],
        0.25,
        meta(),
    )
    .expect("valid");
    let mut out = Vec::new();
    let bias = m.contributions(&values(&[("card.count_1m", 0.0)]), &mut out);
    assert_eq!(bias, 0.25 + 0.5);
    assert_eq!(out, vec![1.0 - 0.5]);
    let bias = m.contributions(&values(&[("card.count_1m", 2.0)]), &mut out);
    assert_eq!(bias, 0.75);
    assert_eq!(out, vec![-1.0 - 0.5]);
    // Missing follows the default (right) and is explained like any value that goes there.
    m.contributions(&values(&[]), &mut out);
    assert_eq!(out, vec![-1.5]);
}

#[test]
fn shap_of_two_features_by_hand() {
    // Tree 1 of `two_trees` alone. With device = 0 and amount = 0.05 (leaf 0.25):
    // E = (30*0.25 + 40*0.5 + 30*1.5) / 100 = 0.725.
    // v({}) = 0.725, v({d}) = (30*0.25 + 40*0.5) / 70 = 0.392857..,
    // v({a}) = 0.7 * 0.25 + 0.3 * 1.5 = 0.625, v({a, d}) = 0.25.
    // phi_d = ((v(d) - v()) + (v(a,d) - v(a))) / 2, phi_a likewise.
    let m = Model::from_trees(
        names(&["tx.amount", "user.new_device"]),
        vec![two_trees().forest.tree_specs().remove(1)],
        0.0,
        meta(),
    )
    .expect("valid");
    let (e, vd, va, vad) = (0.725, 27.5 / 70.0, 0.625, 0.25);
    let phi_d = ((vd - e) + (vad - va)) / 2.0;
    let phi_a = ((va - e) + (vad - vd)) / 2.0;
    let mut out = Vec::new();
    let bias = m.contributions(
        &values(&[("tx.amount", 0.05), ("user.new_device", 0.0)]),
        &mut out,
    );
    assert!((bias - e).abs() < 1e-12);
    assert!((out[0] - phi_a).abs() < 1e-12, "{out:?}");
    assert!((out[1] - phi_d).abs() < 1e-12, "{out:?}");
}

/// splitmix64: a tiny deterministic generator for the random trees below.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A random tree over `n_features`, splits reusing features (so paths repeat them), covers
/// that add up, and now and then a leaf no training row reached.
fn random_tree(rng: &mut Rng, n_features: usize, max_depth: usize) -> TreeSpec {
    fn grow(
        rng: &mut Rng,
        nodes: &mut Vec<NodeSpec>,
        n_features: usize,
        depth: usize,
    ) -> (usize, f64) {
        let at = nodes.len();
        if depth == 0 || rng.below(4) == 0 {
            let cover = if rng.below(10) == 0 {
                0.0
            } else {
                0.5 + 10.0 * rng.unit()
            };
            nodes.push(leaf(rng.unit() * 4.0 - 2.0, cover));
            return (at, cover);
        }
        nodes.push(leaf(0.0, 0.0)); // placeholder until the children exist
        let (left, lc) = grow(rng, nodes, n_features, depth - 1);
        let (right, rc) = grow(rng, nodes, n_features, depth - 1);
        let cover = (lc + rc).max(0.25);
        nodes[at] = split(
            rng.below(n_features),
            (rng.below(8) as f64) / 8.0,
            left,
            right,
            rng.below(2) == 0,
            cover,
        );
        (at, cover)
    }
    let mut nodes = Vec::new();
    grow(rng, &mut nodes, n_features, max_depth);
    TreeSpec { nodes }
}

/// v(S): the tree's expectation when only the features in `known` are known, unknown ones
/// averaged over the training covers (the path-dependent definition TreeSHAP uses).
fn expectation(tree: &TreeSpec, node: usize, x: &[f64], known: u32) -> f64 {
    match tree.nodes[node] {
        NodeSpec::Leaf { value, .. } => value,
        NodeSpec::Split {
            feature,
            threshold,
            left,
            right,
            default_left,
            cover,
        } => {
            if known & (1 << feature) != 0 {
                let v = x[feature];
                let go_left = if v.is_nan() {
                    default_left
                } else {
                    (v as f32) < threshold as f32
                };
                expectation(tree, if go_left { left } else { right }, x, known)
            } else {
                let cover_of = |n: usize| match tree.nodes[n] {
                    NodeSpec::Leaf { cover, .. } | NodeSpec::Split { cover, .. } => cover,
                };
                (cover_of(left) * expectation(tree, left, x, known)
                    + cover_of(right) * expectation(tree, right, x, known))
                    / cover
            }
        }
    }
}

/// Shapley values by their definition: a weighted sum over every subset of the other features.
fn brute_force_shap(trees: &[TreeSpec], x: &[f64]) -> Vec<f64> {
    let m = x.len();
    let v = |known: u32| {
        trees
            .iter()
            .map(|t| expectation(t, 0, x, known))
            .sum::<f64>()
    };
    let fact = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
    (0..m)
        .map(|i| {
            (0..1u32 << m)
                .filter(|s| s & (1 << i) == 0)
                .map(|s| {
                    let size = s.count_ones() as usize;
                    let weight = fact(size) * fact(m - size - 1) / fact(m);
                    weight * (v(s | 1 << i) - v(s))
                })
                .sum()
        })
        .collect()
}

const SHAP_FEATURES: [&str; 5] = [
    "tx.amount",
    "card.count_1m",
    "card.amount_zscore",
    "user.new_device",
    "ring.has_fraud",
];

fn random_x(rng: &mut Rng) -> Vec<f64> {
    SHAP_FEATURES
        .iter()
        .map(|_| match rng.below(6) {
            0 => f64::NAN,
            // On a threshold now and then.
            1 => (rng.below(8) as f64) / 8.0,
            _ => rng.unit(),
        })
        .collect()
}

fn feature_values(x: &[f64]) -> FeatureValues<'static> {
    let pairs: Vec<(&str, f64)> = SHAP_FEATURES
        .iter()
        .copied()
        .zip(x.iter().copied())
        .collect();
    values(&pairs)
}

#[test]
fn shap_is_additive_on_random_models() {
    let mut rng = Rng(7);
    let mut out = Vec::new();
    for _ in 0..40 {
        let trees: Vec<TreeSpec> = (0..1 + rng.below(20))
            .map(|_| {
                let depth = 1 + rng.below(8);
                random_tree(&mut rng, SHAP_FEATURES.len(), depth)
            })
            .collect();
        let base = rng.unit() - 0.5;
        let m = Model::from_trees(names(&SHAP_FEATURES), trees, base, meta()).expect("valid");
        for _ in 0..25 {
            let f = feature_values(&random_x(&mut rng));
            let bias = m.contributions(&f, &mut out);
            assert_eq!(out.len(), SHAP_FEATURES.len());
            let total = bias + out.iter().sum::<f64>();
            assert!(
                (total - m.margin(&f)).abs() <= 1e-9,
                "{total} vs {}",
                m.margin(&f)
            );
        }
    }
}

#[test]
fn shap_matches_brute_force_shapley_values() {
    let mut rng = Rng(2024);
    let mut out = Vec::new();
    for _ in 0..30 {
        let trees: Vec<TreeSpec> = (0..1 + rng.below(4))
            .map(|_| {
                let depth = 1 + rng.below(6);
                random_tree(&mut rng, SHAP_FEATURES.len(), depth)
            })
            .collect();
        let m =
            Model::from_trees(names(&SHAP_FEATURES), trees.clone(), 0.0, meta()).expect("valid");
        for _ in 0..10 {
            let x = random_x(&mut rng);
            let expected = brute_force_shap(&trees, &x);
            let bias = m.contributions(&feature_values(&x), &mut out);
            let v_empty: f64 = trees.iter().map(|t| expectation(t, 0, &x, 0)).sum();
            assert!((bias - v_empty).abs() < 1e-9);
            for (ours, theirs) in out.iter().zip(&expected) {
                assert!((ours - theirs).abs() < 1e-9, "{out:?} vs {expected:?}");
            }
        }
    }
}

// ---- path attributions ----

#[test]
fn path_contributions_by_hand() {
    // `two_trees()` at amount 0.05, device 0, margin -0.5 - 1.0 + 0.25:
    // tree 0: E = (60 * -1 + 40 * 2) / 100 = 0.2; the amount split leads to -1: -1.2 to amount.
    // tree 1: E = 0.725; the device split leads left, E = (30 * 0.25 + 40 * 0.5) / 70:
    //         that change goes to the device; the amount split then leads to 0.25.
    let m = two_trees();
    let mut out = [f64::NAN; 2]; // zeroed by the call
    let f = values(&[("tx.amount", 0.05), ("user.new_device", 0.0)]);
    let bias = m.path_contributions(&f, &mut out);
    let left = 27.5 / 70.0;
    assert!((bias - (-0.5 + 0.2 + 0.725)).abs() < 1e-12, "{bias}");
    assert!((out[0] - (-1.2 + (0.25 - left))).abs() < 1e-12, "{out:?}");
    assert!((out[1] - (left - 0.725)).abs() < 1e-12, "{out:?}");
    assert!((bias + out.iter().sum::<f64>() - m.margin(&f)).abs() < 1e-12);

    // Everything missing: tree 0 defaults right (2.0), tree 1 left, then right (0.5).
    let f = values(&[]);
    let bias = m.path_contributions(&f, &mut out);
    assert!(
        (out[0] - ((2.0 - 0.2) + (0.5 - left))).abs() < 1e-12,
        "{out:?}"
    );
    assert!((out[1] - (left - 0.725)).abs() < 1e-12, "{out:?}");
    assert!((bias + out.iter().sum::<f64>() - m.margin(&f)).abs() < 1e-12);

    // The same bias as TreeSHAP.
    let mut shap = Vec::new();
    assert_eq!(m.contributions(&f, &mut shap), bias);

    // No trees: nothing to credit, the bias is the base margin.
    let m = Model::from_trees(names(&["tx.amount"]), vec![], 0.25, meta()).expect("valid");
    let mut out = [7.0];
    assert_eq!(m.path_contributions(&values(&[]), &mut out), 0.25);
    assert_eq!(out, [0.0]);
}

#[test]
fn path_contributions_are_additive_on_random_models() {
    let mut rng = Rng(11);
    let mut out = [0.0; SHAP_FEATURES.len()];
    for _ in 0..40 {
        let trees: Vec<TreeSpec> = (0..1 + rng.below(30))
            .map(|_| {
                let depth = 1 + rng.below(10);
                random_tree(&mut rng, SHAP_FEATURES.len(), depth)
            })
            .collect();
        let base = rng.unit() - 0.5;
        let m = Model::from_trees(names(&SHAP_FEATURES), trees, base, meta()).expect("valid");
        for _ in 0..25 {
            let f = feature_values(&random_x(&mut rng));
            let bias = m.path_contributions(&f, &mut out);
            let total = bias + out.iter().sum::<f64>();
            assert!(
                (total - m.margin(&f)).abs() <= 1e-9,
                "{total} vs {}",
                m.margin(&f)
            );
        }
    }
}

#[test]
fn path_contributions_equal_treeshap_on_depth_one_trees() {
    let mut rng = Rng(5);
    let mut path = [0.0; SHAP_FEATURES.len()];
    let mut shap = Vec::new();
    for _ in 0..40 {
        // Stumps (and now and then a lone leaf), several per model, features repeating.
        let trees: Vec<TreeSpec> = (0..1 + rng.below(12))
            .map(|_| random_tree(&mut rng, SHAP_FEATURES.len(), 1))
            .collect();
        let m = Model::from_trees(names(&SHAP_FEATURES), trees, 0.1, meta()).expect("valid");
        for _ in 0..25 {
            let f = feature_values(&random_x(&mut rng));
            let bias = m.path_contributions(&f, &mut path);
            assert_eq!(bias, m.contributions(&f, &mut shap));
            for (p, s) in path.iter().zip(&shap) {
                assert!((p - s).abs() < 1e-12, "{path:?} vs {shap:?}");
            }
        }
    }
}

#[test]
#[should_panic(expected = "one slot per model feature")]
fn path_contributions_need_one_slot_per_feature() {
    two_trees().path_contributions(&values(&[]), &mut [0.0; 3]);
}

/// Path attributions computed straight from the specs, by recursion: an oracle independent
/// of the flat layout and its walk.
fn reference_path(trees: &[TreeSpec], x: &[f64], out: &mut [f64]) -> f64 {
    fn expected(nodes: &[NodeSpec], i: usize) -> (f64, f64) {
        match nodes[i] {
            NodeSpec::Leaf { value, cover } => (value, cover),
            NodeSpec::Split {
                left, right, cover, ..
            } => {
                let (l, lc) = expected(nodes, left);
                let (r, rc) = expected(nodes, right);
                ((l * lc + r * rc) / cover, cover)
            }
        }
    }
    out.fill(0.0);
    let mut sum = 0.0;
    for tree in trees {
        let mut at = 0;
        while let NodeSpec::Split {
            feature,
            threshold,
            left,
            right,
            default_left,
            ..
        } = tree.nodes[at]
        {
            let v = x[feature];
            let next = if v.is_nan() {
                if default_left {
                    left
                } else {
                    right
                }
            } else if v < threshold {
                left
            } else {
                right
            };
            out[feature] += expected(&tree.nodes, next).0 - expected(&tree.nodes, at).0;
            at = next;
        }
        sum += expected(&tree.nodes, at).0;
    }
    sum
}

#[test]
fn predict_with_path_is_predict_plus_path_attributions_in_one_walk() {
    let mut rng = Rng(23);
    let mut fused = [0.0; SHAP_FEATURES.len()];
    let mut alone = [0.0; SHAP_FEATURES.len()];
    let mut oracle = [0.0; SHAP_FEATURES.len()];
    for _ in 0..40 {
        // More than one lane group of trees, and a remainder, at mixed depths.
        let trees: Vec<TreeSpec> = (0..1 + rng.below(40))
            .map(|_| {
                let depth = 1 + rng.below(9);
                random_tree(&mut rng, SHAP_FEATURES.len(), depth)
            })
            .collect();
        let base = rng.unit() - 0.5;
        let m =
            Model::from_trees(names(&SHAP_FEATURES), trees.clone(), base, meta()).expect("valid");
        for _ in 0..25 {
            let x = random_x(&mut rng);
            let f = feature_values(&x);
            let p = m.predict_with_path(&f, &mut fused);
            assert_eq!(p.to_bits(), m.predict(&f).to_bits(), "the same probability");
            m.path_contributions(&f, &mut alone);
            assert_eq!(fused, alone, "the same attributions");
            let sum = reference_path(&trees, &x, &mut oracle);
            assert!((m.margin(&f) - base - sum).abs() < 1e-9);
            for (a, b) in fused.iter().zip(&oracle) {
                assert!((a - b).abs() < 1e-9, "{fused:?} vs {oracle:?}");
            }
        }
    }
}
