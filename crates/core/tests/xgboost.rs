//! Ringfence's XGBoost import against XGBoost itself: `scripts/xgboost_fixture.py` trains
//! models (gbtree, DART, boosted random forest) on columns named after catalog features and
//! records xgboost's own `predict` and `pred_contribs` for 500 rows each (with missing values,
//! and values sitting exactly on split thresholds); every one must match.
//!
//! Needs python3 with numpy and xgboost. Without them this test fails, never skips:
//! `./scripts/test` installs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ringfence_core::features::{self, FeatureValues};
use ringfence_core::model::Model;
use serde_json::Value;

const HOW_TO_FIX: &str =
    "this test needs python3 with numpy and xgboost: run ./scripts/test, which installs them";

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("ringfence-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs the fixture script into `dir`, failing the test with instructions if it cannot.
fn make_fixture(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/xgboost_fixture.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}\n{HOW_TO_FIX}"));
    assert!(
        output.status.success(),
        "{} failed ({}):\n{}\n{HOW_TO_FIX}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn model_matches_xgboost_predictions_and_contributions() {
    let dir = TempDir::new("xgboost-fixture");
    make_fixture(&dir.0);
    // The gbtree model is the one the brief fixes: 50 trees of depth 6.
    assert_eq!(check(&dir.0, ""), 50);
    check(&dir.0, "dart_");
    check(&dir.0, "forest_");
}

/// Loads `{prefix}model.json` and checks it against `{prefix}cases.json`; returns its trees.
fn check(dir: &Path, prefix: &str) -> usize {
    let model = Model::from_xgboost_json(&read(&dir.join(format!("{prefix}model.json"))))
        .unwrap_or_else(|e| panic!("xgboost's {prefix}model.json does not load: {e}"));
    let fixture: Value = serde_json::from_str(&read(&dir.join(format!("{prefix}cases.json"))))
        .expect("cases are JSON");
    let version = fixture["xgboost_version"].as_str().unwrap_or("?");

    let names: Vec<&str> = fixture["feature_names"]
        .as_array()
        .expect("feature_names")
        .iter()
        .map(|n| n.as_str().expect("a name"))
        .collect();
    assert_eq!(model.feature_names(), names.as_slice());
    assert_eq!(Some(model.n_trees() as u64), fixture["n_trees"].as_u64());
    assert_eq!(model.meta().source, "xgboost");

    let cases = fixture["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 500);
    let (mut worst_p, mut worst_c, mut missing) = (0.0f64, 0.0f64, 0);
    let mut contributions = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let mut f = FeatureValues::default();
        for (name, value) in case["features"].as_object().expect("features") {
            let def = features::lookup(name).expect("a catalog feature");
            match value.as_f64() {
                Some(v) => f.num[def.index] = v,
                None => missing += 1,
            }
        }

        let expected = case["prediction"].as_f64().expect("prediction");
        let ours = model.predict(&f);
        worst_p = worst_p.max((ours - expected).abs());
        assert!(
            (ours - expected).abs() <= 1e-6,
            "{prefix}model, case {i}: predict {ours} vs xgboost {version} {expected}"
        );

        let theirs: Vec<f64> = case["contributions"]
            .as_array()
            .expect("contributions")
            .iter()
            .map(|c| c.as_f64().expect("a number"))
            .collect();
        assert_eq!(theirs.len(), names.len() + 1, "features plus bias");
        let bias = model.contributions(&f, &mut contributions);
        let ours_all = contributions.iter().copied().chain([bias]);
        for (j, (o, t)) in ours_all.zip(&theirs).enumerate() {
            worst_c = worst_c.max((o - t).abs());
            let what = names.get(j).copied().unwrap_or("bias");
            assert!(
                (o - t).abs() <= 1e-5,
                "{prefix}model, case {i}: contribution of {what}: {o} vs xgboost {version} {t}"
            );
        }
        let total = bias + contributions.iter().sum::<f64>();
        assert!(
            (total - model.margin(&f)).abs() <= 1e-9,
            "{prefix}model, case {i}: contributions do not add up to the margin"
        );
    }
    assert!(missing > 0, "the fixture should exercise missing values");
    eprintln!(
        "{prefix}model.json, xgboost {version}: {} trees, {} cases, worst |dp| {worst_p:.2e}, \
         worst |dcontrib| {worst_c:.2e}",
        model.n_trees(),
        cases.len()
    );
    model.n_trees()
}
