//! End-to-end tests of the HTTP API against a real server with a real SQLite store.

mod helpers;

use std::time::Duration;

use helpers::{spawn_app_at, TestApp};
use serde_json::{json, Value};

async fn app() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_at(dir.path(), None).await;
    (app, dir)
}

fn ts(secs: u32) -> String {
    format!("2026-03-01T10:00:{secs:02}Z")
}

#[tokio::test]
async fn the_fraud_teams_ring_requests_flag_the_second_user() {
    let (app, _dir) = app().await;
    let first = app
        .post(
            "/transaction",
            r#"{"user_id":"user-ring-1","card_id":"card-ring-1","device_id":"device-shared-123","amount":150.00,"merchant":"Online Store"}"#,
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first: Value = first.json().expect("json");
    assert_eq!(first["decision"], "approve");
    let second = app
        .post(
            "/transaction",
            r#"{"user_id":"user-ring-2","card_id":"card-ring-2","device_id":"device-shared-123","amount":150.00,"merchant":"Online Store"}"#,
        )
        .await;
    assert_eq!(second.status, 200);
    let second: Value = second.json().expect("json");
    assert_ne!(second["decision"], "approve", "{second}");
    let rules: Vec<&str> = second["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert!(rules.contains(&"shared_device"), "{second}");
    assert!(second["alert"].as_bool().unwrap_or(false));
    assert!(second["processing_us"].is_u64());

    // The alert is queryable and the device's profile shows both users.
    let (status, alerts) = app.get("/v1/alerts").await;
    assert_eq!(status, 200);
    let alerts = alerts["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["category"], "ring");
    assert_eq!(alerts[0]["account"], "user-ring-2");
    let (status, device) = app.get("/v1/entities/device/device-shared-123").await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["features"]["device.users_24h"], 2.0);
    assert_eq!(
        device["recent_transactions"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        device["linked"]["users"],
        json!(["user-ring-1", "user-ring-2"])
    );
    app.stop().await;
}

#[tokio::test]
async fn a_velocity_burst_is_flagged_by_the_fourth_transaction() {
    let (app, _dir) = app().await;
    let mut decisions = Vec::new();
    for i in 0..5u32 {
        let (status, d) = app
            .post_json(
                "/v1/transactions",
                &json!({"transaction_id": format!("hv-{i}"), "card_id": "card-hv", "amount": 25.0, "timestamp": ts(i * 3)}),
            )
            .await;
        assert_eq!(status, 200, "{d}");
        decisions.push(d);
    }
    let actions: Vec<&str> = decisions
        .iter()
        .map(|d| d["decision"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(&actions[..3], ["approve", "approve", "approve"]);
    assert_ne!(actions[3], "approve");
    assert_eq!(decisions[3]["reasons"][0]["rule"], "card_velocity");
    assert_eq!(
        decisions[3]["reasons"][0]["detail"],
        "card made 3 transactions in the minute before this one (limit 3)"
    );
    // Stored with its reasons.
    let (status, stored) = app.get("/v1/transactions/hv-3").await;
    assert_eq!(status, 200);
    assert_eq!(stored["decision"]["reasons"][0]["rule"], "card_velocity");
    assert_eq!(stored["transaction"]["card_id"], "card-hv");
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_field_and_stores_nothing() {
    let (app, _dir) = app().await;
    let long_id = "u".repeat(129);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "body"),
        (r#"{"user_id":"u1"}"#.into(), 400, "amount"),
        (r#"{"amount":-5}"#.into(), 400, "amount"),
        (r#"{"amount":"NaN"}"#.into(), 400, "amount"),
        (r#"{"amount":1e300}"#.into(), 400, "amount"),
        (
            format!(r#"{{"amount":1,"user_id":"{long_id}"}}"#),
            400,
            "user_id",
        ),
        (r#"{"amount":1,"kind":"chargeback"}"#.into(), 400, "kind"),
        (
            r#"{"amount":1,"timestamp":"yesterday"}"#.into(),
            400,
            "timestamp",
        ),
        (r#"{"amount":1,"user_id":42}"#.into(), 400, "user_id"),
        (r#"[1,2]"#.into(), 400, "body"),
        (r#"{"amount":1} trailing"#.into(), 400, "body"),
    ];
    for (body, status, field) in &cases {
        let r = app.post("/v1/transactions", body).await;
        assert_eq!(r.status, *status, "{body} -> {}", r.text());
        let v: Value = r.json().expect("json error body");
        assert_eq!(v["error"]["field"], *field, "{body} -> {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // A card number in a bad request is never echoed.
    let r = app
        .post(
            "/v1/transactions",
            r#"{"amount":1,"card_number":"4111-1111-xxxx-1111"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(!r.text().contains("4111"), "{}", r.text());
    // Over the body limit.
    let huge = format!(
        r#"{{"amount":1,"merchant":"{}"}}"#,
        "m".repeat(17 * 1024 * 1024)
    );
    let r = app.post("/v1/transactions", &huge).await;
    assert_eq!(r.status, 413, "{}", r.text());
    // Unknown routes and methods are JSON too.
    let (status, v) = app.get("/v2/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "not_found");
    let (status, v) = app.get("/v1/transactions").await;
    assert_eq!(status, 405);
    assert!(v["error"]["message"].is_string());

    let (_, stats) = app.get("/v1/stats").await;
    assert_eq!(stats["stored"]["transactions"], 0, "{stats}");
    app.stop().await;
}

#[tokio::test]
async fn batches_decide_in_order_and_report_bad_lines_by_index() {
    let (app, _dir) = app().await;
    let ndjson = [
        json!({"transaction_id": "b0", "card_id": "cb", "amount": 10, "timestamp": ts(0)})
            .to_string(),
        r#"{"transaction_id":"b1","amount":-1}"#.to_string(),
        String::new(),
        json!({"transaction_id": "b2", "card_id": "cb", "amount": 10, "timestamp": ts(1)})
            .to_string(),
        json!({"transaction_id": "b3", "card_id": "cb", "amount": 10, "timestamp": ts(2)})
            .to_string(),
        json!({"transaction_id": "b4", "card_id": "cb", "amount": 10, "timestamp": ts(3)})
            .to_string(),
    ]
    .join("\n");
    let r = app
        .client
        .post(
            &app.url("/v1/transactions/batch"),
            "application/x-ndjson",
            ndjson,
        )
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["transaction_id"], "b0");
    assert_eq!(lines[1]["index"], 1);
    assert_eq!(lines[1]["error"]["field"], "amount");
    assert_eq!(lines[2]["transaction_id"], "b2");
    assert_eq!(lines[4]["transaction_id"], "b4");
    assert_eq!(
        lines[4]["decision"], "review",
        "4th on the card within a minute"
    );
    assert_eq!(app.get("/v1/transactions/b1").await.0, 404);

    // JSON array form, with a duplicate id: the stored decision comes back, counted once.
    let array = json!([
        {"transaction_id": "b0", "card_id": "cb", "amount": 10, "timestamp": ts(0)},
        {"transaction_id": "b5", "card_id": "other", "amount": 10, "timestamp": ts(5)},
        {"transaction_id": "b5", "card_id": "other", "amount": 10, "timestamp": ts(5)}
    ]);
    let (status, v) = app.post_json("/v1/transactions/batch", &array).await;
    assert_eq!(status, 200, "{v}");
    let v = v.as_array().expect("array");
    assert_eq!(v[0]["duplicate"], true);
    assert_eq!(v[0]["decision"], lines[0]["decision"]);
    assert!(v[1].get("duplicate").is_none());
    assert_eq!(v[2]["duplicate"], true);
    let (_, stats) = app.get("/v1/stats").await;
    assert_eq!(stats["stored"]["transactions"], 5, "{stats}");
    let (_, card) = app.get("/v1/entities/card/other").await;
    assert_eq!(
        card["features"]["card.tx_count"], 1.0,
        "duplicate not counted: {card}"
    );

    // Too many.
    let too_many: Vec<Value> = (0..10_001).map(|_| json!({"amount": 1})).collect();
    let (status, v) = app
        .post_json("/v1/transactions/batch", &Value::Array(too_many))
        .await;
    assert_eq!(status, 413, "{v}");
    app.stop().await;
}

#[tokio::test]
async fn state_survives_a_restart_and_decisions_match_an_uninterrupted_run() {
    let restarted_dir = tempfile::tempdir().expect("tempdir");
    let straight_dir = tempfile::tempdir().expect("tempdir");
    let tx = |i: u32| {
        json!({
            "transaction_id": format!("r-{i}"),
            "user_id": format!("user-{}", i % 2),
            "card_id": "card-r",
            "device_id": format!("dev-{}", i % 3),
            "amount": 20 + i,
            "timestamp": ts(i * 4),
        })
    };
    let straight = spawn_app_at(straight_dir.path(), None).await;
    let mut expected = Vec::new();
    for i in 0..8 {
        let (status, d) = straight.post_json("/v1/transactions", &tx(i)).await;
        assert_eq!(status, 200);
        expected.push(d);
    }
    straight.stop().await;

    let mut got = Vec::new();
    let first = spawn_app_at(restarted_dir.path(), None).await;
    for i in 0..4 {
        got.push(first.post_json("/v1/transactions", &tx(i)).await.1);
    }
    first.stop().await;
    let second = spawn_app_at(restarted_dir.path(), None).await;
    for i in 4..8 {
        got.push(second.post_json("/v1/transactions", &tx(i)).await.1);
    }
    for (g, e) in got.iter().zip(&expected) {
        for key in ["transaction_id", "decision", "score", "reasons", "alert"] {
            assert_eq!(g[key], e[key], "{key}: {g} vs {e}");
        }
    }
    assert_ne!(
        expected[4]["decision"], "approve",
        "the restarted state still sees the burst"
    );
    second.stop().await;
}

#[tokio::test]
async fn labels_are_stored_and_mark_the_ring() {
    let (app, _dir) = app().await;
    let (_, a) = app
        .post_json("/v1/transactions", &json!({"transaction_id": "l-a", "user_id": "fraudster", "device_id": "dl", "amount": 50}))
        .await;
    assert_eq!(a["decision"], "approve");
    let (status, label) = app
        .post_json(
            "/v1/labels",
            &json!({"transaction_id": "l-a", "label": "fraud", "source": "analyst-7"}),
        )
        .await;
    assert_eq!(status, 201, "{label}");
    assert_eq!(label["fraud"], true);
    // A new card joining the labelled user's group is caught by ring_with_confirmed_fraud.
    let (_, b) = app
        .post_json("/v1/transactions", &json!({"transaction_id": "l-b", "user_id": "fraudster", "card_id": "fresh-card", "amount": 50}))
        .await;
    let rules: Vec<&str> = b["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert!(rules.contains(&"ring_with_confirmed_fraud"), "{b}");
    let (_, stored) = app.get("/v1/transactions/l-a").await;
    assert_eq!(stored["labels"][0]["source"], "analyst-7");
    // Errors name the field.
    let (status, v) = app
        .post_json(
            "/v1/labels",
            &json!({"transaction_id": "l-a", "label": "maybe"}),
        )
        .await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("label")));
    let (status, _) = app
        .post_json(
            "/v1/labels",
            &json!({"transaction_id": "nope", "fraud": true}),
        )
        .await;
    assert_eq!(status, 404);
    // Withdrawn: the ring is clean again.
    app.post_json(
        "/v1/labels",
        &json!({"transaction_id": "l-a", "label": "not_fraud"}),
    )
    .await;
    let (_, c) = app
        .post_json("/v1/transactions", &json!({"transaction_id": "l-c", "user_id": "fraudster", "card_id": "fresh-card-2", "amount": 50}))
        .await;
    assert!(!c.to_string().contains("ring_with_confirmed_fraud"), "{c}");
    app.stop().await;
}

#[tokio::test]
async fn rules_hot_reload_and_a_broken_file_keeps_the_old_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"big\"\nwhen = \"tx.amount > 1000\"\nscore = 90\nreason = \"amount {tx.amount}\"\n",
    )
    .expect("write");
    let app = spawn_app_at(&dir.path().join("data"), Some(rules.clone())).await;
    let decide = |amount: u32| {
        let app = &app;
        async move {
            app.post_json("/v1/transactions", &json!({"amount": amount}))
                .await
                .1["decision"]
                .clone()
        }
    };
    assert_eq!(decide(500).await, "approve");
    assert_eq!(decide(5000).await, "block");

    // Change the file: the watcher picks it up.
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"big\"\nwhen = \"tx.amount > 100\"\nscore = 90\nreason = \"amount {tx.amount}\"\n\n[[rule]]\nname = \"watch\"\nwhen = \"tx.amount > 1\"\nscore = 90\nmode = \"shadow\"\n",
    )
    .expect("write");
    let mut reloaded = false;
    for _ in 0..100 {
        let (_, v) = app.get("/v1/rules").await;
        if v["rules"].as_array().map(Vec::len) == Some(2) {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "rules file change was not picked up");
    assert_eq!(decide(500).await, "block");

    // A broken file: explicit reload reports rule, line and column; the old rules keep running.
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"big\"\nwhen = \"tx.amount > 100\"\nscore = 90\n\n[[rule]]\nname = \"typo\"\nwhen = \"card.cnt_1m >= 3\"\nscore = 10\n",
    )
    .expect("write");
    let r = app.post("/v1/rules/reload", "").await;
    assert_eq!(r.status, 422, "{}", r.text());
    let v: Value = r.json().expect("json");
    let e = &v["error"]["errors"][0];
    assert_eq!(e["rule"], "typo", "{v}");
    assert_eq!(e["line"], 8, "{v}");
    assert_eq!(e["column"], 9, "{v}");
    assert!(
        e["message"].as_str().unwrap_or("").contains("card.cnt_1m"),
        "{v}"
    );
    assert_eq!(decide(500).await, "block", "old rules still active");
    let (_, v) = app.get("/v1/rules").await;
    assert_eq!(v["rules"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["status"]["last_error"][0]["rule"], "typo");
    app.stop().await;
}

#[tokio::test]
async fn raw_card_numbers_never_reach_storage() {
    let (app, dir) = app().await;
    let pan = "4556737586899855";
    let (status, d) = app
        .post_json(
            "/v1/transactions",
            &json!({"transaction_id": "pan-1", "card_number": pan, "amount": 12.5}),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    let (_, stored) = app.get("/v1/transactions/pan-1").await;
    let token = stored["transaction"]["card_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert!(token.starts_with("ct_"));
    assert!(!stored.to_string().contains(pan));
    // The same card by PAN is the same entity.
    app.post_json(
        "/v1/transactions",
        &json!({"card_number": pan, "amount": 3}),
    )
    .await;
    let (_, card) = app.get(&format!("/v1/entities/card/{token}")).await;
    assert_eq!(card["features"]["card.tx_count"], 2.0, "{card}");
    app.stop().await;
    // Every file of the data directory, its subdirectories (photos) included.
    let mut dirs = vec![dir.path().to_owned()];
    let mut files = Vec::new();
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("data dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    for path in files {
        let bytes = std::fs::read(&path).expect("read");
        assert!(
            !bytes.windows(pan.len()).any(|w| w == pan.as_bytes()),
            "PAN found in {}",
            path.display()
        );
    }
}

#[tokio::test]
async fn operational_endpoints_answer() {
    let (app, _dir) = app().await;
    app.post_json("/v1/transactions", &json!({"amount": 3, "card_id": "ops"}))
        .await;
    assert_eq!(app.get("/healthz").await.0, 200);
    assert_eq!(app.get("/readyz").await.0, 200);
    let m = app.client.get(&app.url("/metrics")).await.expect("metrics");
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(
        text.contains("ringfence_decisions_total{decision=\"approve\"} 1"),
        "{text}"
    );
    assert!(text.contains("ringfence_engine_seconds_count 1"));
    assert!(m.header("x-request-id").is_some());
    let (status, stats) = app.get("/v1/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["decisions_since_start"]["approve"], 1);
    assert_eq!(stats["state"]["cards"], 1);
    let (_, features) = app.get("/v1/features").await;
    assert!(features["features"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x["name"] == "ring.size")));
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    for (method, path) in ringfence::http::ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from openapi.json"
        );
    }
    let (status, v) = app.get("/v1/entities/planet/x").await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("type")));
    assert_eq!(app.get("/v1/entities/card/never-seen").await.0, 404);
    app.stop().await;
}

#[tokio::test]
async fn impossible_travel_is_explained_for_users_and_for_bare_cards() {
    let (app, _dir) = app().await;
    let paris = json!({"transaction_id": "p1", "user_id": "traveller", "card_id": "tc", "amount": 40, "lat": 48.8566, "lon": 2.3522, "timestamp": "2026-03-01T10:00:00Z"});
    let nyc = json!({"transaction_id": "p2", "user_id": "traveller", "card_id": "tc", "amount": 40, "lat": 40.7128, "lon": -74.006, "timestamp": "2026-03-01T10:30:00Z"});
    app.post_json("/v1/transactions", &paris).await;
    let (_, d) = app.post_json("/v1/transactions", &nyc).await;
    let travel: Vec<&Value> = d["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter(|r| r["category"] == "travel")
        .collect();
    assert_eq!(travel.len(), 1, "{d}");
    assert_eq!(travel[0]["rule"], "impossible_travel");
    assert!(
        travel[0]["detail"]
            .as_str()
            .is_some_and(|s| s.contains("km/h") && !s.contains("n/a")),
        "{d}"
    );

    let a = json!({"transaction_id": "q1", "card_id": "bare", "amount": 40, "lat": 48.8566, "lon": 2.3522, "timestamp": "2026-03-01T10:00:00Z"});
    let b = json!({"transaction_id": "q2", "card_id": "bare", "amount": 40, "lat": 40.7128, "lon": -74.006, "timestamp": "2026-03-01T10:30:00Z"});
    app.post_json("/v1/transactions", &a).await;
    let (_, d) = app.post_json("/v1/transactions", &b).await;
    assert_eq!(d["reasons"][0]["rule"], "impossible_travel_card", "{d}");
    assert!(
        d["reasons"][0]["detail"]
            .as_str()
            .is_some_and(|s| !s.contains("n/a")),
        "{d}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_weak_or_changed_card_hash_key_is_refused() {
    use ringfence::config::{Secret, ServeArgs, Settings};
    use ringfence::host::StartError;
    use ringfence::startup::{AppError, Application};
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = |key: &str| {
        Settings::resolve(&ServeArgs {
            listen: Some("127.0.0.1:0".parse().expect("addr")),
            data: Some(dir.path().to_owned()),
            card_hash_key: Some(Secret::new(key)),
            ..ServeArgs::default()
        })
        .expect("settings")
    };
    let weak = Application::build(settings("short")).await;
    assert!(matches!(weak, Err(AppError::Start(StartError::WeakKey(5)))));
    let first = Application::build(settings("first-key-0123456789abcdef"))
        .await
        .expect("first start");
    drop(first);
    let changed = Application::build(settings("other-key-0123456789abcdef")).await;
    assert!(matches!(
        changed,
        Err(AppError::Start(StartError::KeyMismatch))
    ));
    let same = Application::build(settings("first-key-0123456789abcdef")).await;
    assert!(same.is_ok(), "the original key still opens the data");
}
