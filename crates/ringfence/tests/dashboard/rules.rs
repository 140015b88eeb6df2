//! The rules page: an error reported at its line, fixed, backtested against stored history,
//! activated, flipped to shadow and back; the API then confirms the rule is in force.

use serde_json::{json, Value};

use crate::browser;
use crate::helpers::spawn_app_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_is_fixed_backtested_and_activated_from_the_rules_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;

    // History for the backtest: three amounts over 9000 (one labelled fraud, one not), two
    // under, all within a day.
    for (i, amount) in [9500, 120, 9600, 40, 9700].into_iter().enumerate() {
        let tx = json!({
            "transaction_id": format!("ui-{i}"),
            "timestamp": format!("2025-03-01T10:{:02}:00Z", i * 7),
            "user_id": format!("user-{i}"),
            "amount": amount,
        });
        let (status, d) = app.post_json("/v1/transactions", &tx).await;
        assert_eq!(status, 200, "{d}");
    }
    for (id, fraud) in [("ui-0", true), ("ui-2", false)] {
        let (status, v) = app
            .post_json("/v1/labels", &json!({"transaction_id": id, "fraud": fraud}))
            .await;
        assert_eq!(status, 201, "{v}");
    }

    // The page appends the new rule after the text in force and a blank line: its `when` is
    // four lines below the blank, the feature right after `when = "`.
    let (_, source) = app.get("/v1/rules/source").await;
    let in_force = source["source"].as_str().expect("source").trim_end();
    let line = in_force.lines().count() + 5;
    let (line, column) = (line.to_string(), "9".to_owned());

    let password = app.create_user("rita", "admin").await;
    let out: Value = browser::run(
        "rules.mjs",
        &app.base,
        ("rita", &password),
        &[&line, &column, "3", "1", "1"],
    )
    .await;
    assert_eq!(out["error"]["line"].as_u64(), line.parse().ok(), "{out}");
    assert_eq!(
        out["backtest"],
        json!({"hits": 3, "fraud": 1, "fp": 1}),
        "{out}"
    );

    // The API agrees: the rule is in force, active, saved, and decides.
    let (_, view) = app.get("/v1/rules").await;
    let rule = view["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "huge_amount"))
        .unwrap_or_else(|| panic!("huge_amount not in force: {view}"));
    assert_eq!(rule["mode"], "active", "{view}");
    assert_eq!(rule["when"], "tx.amount > 9000", "{view}");
    assert_eq!(
        view["rules"].as_array().map(Vec::len),
        out["rules"].as_u64().map(|n| n as usize)
    );
    let saved = std::fs::read_to_string(dir.path().join("rules.toml")).expect("saved");
    assert!(
        saved.contains("name = \"huge_amount\"\nmode = \"active\"\n"),
        "{saved}"
    );
    let (_, d) = app
        .post_json(
            "/v1/transactions",
            &json!({"transaction_id": "ui-after", "user_id": "user-after", "amount": 9999}),
        )
        .await;
    assert_eq!(d["decision"], "block", "{d}");
    app.stop().await;
}
