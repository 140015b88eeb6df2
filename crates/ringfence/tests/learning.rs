//! The learning loop end to end: serving with a model (reasons, hot swap, challenger) and
//! training + evaluation on handbook-style simulated history.

mod helpers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringfence::config::{Secret, ServeArgs, Settings};
use ringfence::startup::Application;
use serde_json::{json, Value};

/// A one-split model in Ringfence's format: above `threshold` on tx.amount -> `high` log-odds.
fn model_file(dir: &Path, name: &str, threshold: f64, high: f64) -> PathBuf {
    let model = json!({
        "format": "ringfence-model", "version": 1, "catalog_version": ringfence_core::features::CATALOG_VERSION,
        "source": "test", "trained_at": null, "notes": {}, "objective": "binary:logistic",
        "base_margin": 0.0, "feature_names": ["tx.amount"], "feature_types": ["number"],
        "trees": [{"nodes": [
            {"feature": 0, "threshold": threshold, "left": 1, "right": 2, "default_left": true, "cover": 10.0},
            {"leaf": -4.0, "cover": 9.0},
            {"leaf": high, "cover": 1.0}
        ]}]
    });
    let path = dir.join(name);
    std::fs::write(&path, model.to_string()).expect("write model");
    path
}

/// The administrator key the server accepts and the client sends.
const ADMIN_KEY: &str = "learning-admin-key-0123456789";

struct Server {
    base: String,
    client: ringfence::client::HttpClient,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

async fn serve(data: &Path, model: &Path, challenger: &Path) -> Server {
    let settings = Settings::resolve(&ServeArgs {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        data: Some(data.to_owned()),
        card_hash_key: Some(Secret::new("learning-test-key-0123456789")),
        admin_key: Some(Secret::new(ADMIN_KEY)),
        model: Some(model.to_owned()),
        challenger: Some(challenger.to_owned()),
        ..ServeArgs::default()
    })
    .expect("settings");
    let app = Application::build(settings).await.expect("app");
    let base = format!("http://{}", app.local_addr());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let _ = app
            .run_until(async {
                let _ = rx.await;
            })
            .await;
    });
    Server {
        base,
        client: ringfence::client::HttpClient::new().with_bearer(ADMIN_KEY),
        stop,
        handle,
    }
}

impl Server {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post_json(&format!("{}{path}", self.base), body)
            .await
            .expect("post");
        (r.status, r.json().unwrap_or(Value::Null))
    }
    async fn get(&self, path: &str) -> Value {
        self.client
            .get(&format!("{}{path}", self.base))
            .await
            .expect("get")
            .json()
            .unwrap_or(Value::Null)
    }
}

#[tokio::test]
async fn a_model_scores_explains_hot_swaps_and_shadows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let champion = model_file(dir.path(), "champion.json", 1000.0, 4.0);
    let challenger = model_file(dir.path(), "challenger.json", 100.0, 4.0);
    let s = serve(&dir.path().join("data"), &champion, &challenger).await;

    let (status, d) = s.post("/v1/transactions", &json!({"amount": 5000})).await;
    assert_eq!(status, 200, "{d}");
    let p = d["model_score"].as_f64().expect("model score");
    assert!((p - 1.0 / (1.0 + (-4.0f64).exp())).abs() < 1e-9, "{d}");
    assert_eq!(d["decision"], "block", "98 model points: {d}");
    let model_reason = d["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .find(|r| r["rule"] == "model")
        .cloned()
        .expect("model reason");
    assert_eq!(model_reason["factors"][0]["feature"], "tx.amount");
    assert_eq!(model_reason["factors"][0]["value"], 5000.0);
    assert_eq!(model_reason["factors"][0]["says"], "the amount is 5000");
    assert!(
        model_reason["detail"]
            .as_str()
            .is_some_and(|t| t.ends_with("driven by: the amount is 5000")),
        "{model_reason}"
    );

    // The challenger is recorded but does not decide: 500 is above its split, not the champion's.
    let (_, d) = s.post("/v1/transactions", &json!({"amount": 500})).await;
    assert_eq!(d["decision"], "approve", "{d}");
    assert!(d["challenger_score"].as_f64().expect("challenger") > 0.9);
    assert!(d["model_score"].as_f64().expect("champion") < 0.1);

    // Swap the champion's file: picked up without a restart.
    model_file(dir.path(), "champion.json", 100.0, 4.0);
    let mut swapped = false;
    for _ in 0..100 {
        if s.get("/v1/models").await["status"]["version"].as_u64() == Some(2) {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(swapped, "the model file change was not picked up");
    let (_, d) = s.post("/v1/transactions", &json!({"amount": 500})).await;
    assert_eq!(d["decision"], "block", "{d}");

    // A broken file is refused and the running model stays.
    std::fs::write(&champion, "{\"format\": \"ringfence-model\"").expect("write");
    let r = s
        .client
        .post(
            &format!("{}/v1/models/reload", s.base),
            "application/json",
            "",
        )
        .await
        .expect("reload");
    assert_eq!(r.status, 422, "{}", r.text());
    let (_, d) = s.post("/v1/transactions", &json!({"amount": 500})).await;
    assert_eq!(d["decision"], "block", "old model still scoring: {d}");
    let models = s.get("/v1/models").await;
    assert!(
        models["status"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("champion.json")),
        "{models}"
    );
    assert_eq!(models["champion"]["trees"], 1);

    // Each file reloads on its own: a broken challenger does not hold back a champion swap.
    model_file(dir.path(), "champion.json", 2000.0, 4.0);
    std::fs::write(&challenger, "not json").expect("write");
    let r = s
        .client
        .post(
            &format!("{}/v1/models/reload", s.base),
            "application/json",
            "",
        )
        .await
        .expect("reload");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("challenger.json"), "{}", r.text());
    let (_, d) = s.post("/v1/transactions", &json!({"amount": 1500})).await;
    assert_eq!(
        d["decision"], "approve",
        "the new champion (split at 2000) decides: {d}"
    );
    assert!(
        d["challenger_score"]
            .as_f64()
            .expect("old challenger still scores")
            > 0.9
    );

    let _ = s.stop.send(());
    let _ = s.handle.await;
}

#[test]
fn training_and_evaluation_on_handbook_history() {
    use ringfence::simulate::handbook::{generate, write_csv, HandbookConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("history.csv");
    let rows = generate(&HandbookConfig {
        customers: 1000,
        terminals: 2000,
        days: 60,
        ..HandbookConfig::default()
    });
    write_csv(&rows, std::fs::File::create(&csv).expect("create")).expect("csv");
    let columns = "transaction_id=TRANSACTION_ID,timestamp=TX_DATETIME,card_id=CUSTOMER_ID,terminal_id=TERMINAL_ID,amount=TX_AMOUNT,label=TX_FRAUD";
    let learner = ringfence::train::LearnerArgs {
        trees: 60,
        learning_rate: 0.1,
        max_depth: 4,
        min_leaf_weight: 5.0,
    };

    // Train on days 30..37 and load the file like `serve` does.
    let out = dir.path().join("model.json");
    ringfence::train::main(&ringfence::train::TrainArgs {
        data: csv.clone(),
        columns: columns.into(),
        train_from: "2018-05-01".into(),
        train_days: 7,
        label_delay_days: 7,
        out: out.clone(),
        learner,
        rules: None,
    })
    .expect("train");
    let model = ringfence::models::load(&out).expect("load trained model");
    assert_eq!(model.n_trees(), 60);
    assert!(model.feature_names().iter().any(|f| f == "tx.amount"));
    assert!(model
        .feature_names()
        .iter()
        .all(|f| ringfence_core::features::lookup(f).is_some()));

    // The handbook protocol on one fold: the model must rank fraud well above chance.
    let report = ringfence::eval::run(&ringfence::eval::EvalArgs {
        data: csv,
        columns: columns.into(),
        test_starts: "2018-05-16".into(),
        train_days: 7,
        delay_days: 7,
        test_days: 7,
        top_k: 20,
        learner,
        rules: None,
        json: false,
        predictions_out: None,
    })
    .expect("eval");
    let fold = &report.folds[0];
    assert!(fold.train_frauds > 0 && fold.test_frauds > 0, "{fold:?}");
    assert!(fold.auc_roc > 0.75, "{fold:?}");
    let base_rate = fold.test_frauds as f64 / fold.test_rows as f64;
    assert!(fold.average_precision > 3.0 * base_rate, "{fold:?}");
    assert!(report.to_text().contains("| **mean** |"));
}
