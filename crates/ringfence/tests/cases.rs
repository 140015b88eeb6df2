//! Cases through the real server: the queue's order and paging, closing as fraud (the label
//! is stored and the ring features see it), false positives, bad verdicts, double closes,
//! reopening, the audit trail, and in production mode a case closed on one node seen closed
//! on another.

mod helpers;

use std::time::{Duration, Instant};

use helpers::services::PostgresServer;
use helpers::{mixed_tx, spawn_app_with, TestApp};
use ringfence::config::Secret;
use serde_json::{json, Value};

/// A device shared by two users: the second transaction raises a `shared_device` alert.
async fn ring(app: &TestApp, prefix: &str) -> (String, i64) {
    for (i, user) in ["u1", "u2"].iter().enumerate() {
        let (status, d) = app
            .post_json(
                "/v1/transactions",
                &json!({
                    "transaction_id": format!("{prefix}-{i}"),
                    "user_id": format!("{prefix}-{user}"),
                    "card_id": format!("{prefix}-card-{i}"),
                    "device_id": format!("{prefix}-device"),
                    "amount": 150.0,
                    "merchant": "Online Store",
                }),
            )
            .await;
        assert_eq!(status, 200, "{d}");
    }
    let tx = format!("{prefix}-1");
    // In production mode the alert is listed once shipped to PostgreSQL.
    let alerts = eventually(app, "/v1/alerts", |a| a.to_string().contains(&tx)).await;
    let id = alerts["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["transaction_id"] == tx.as_str())
        .and_then(|a| a["id"].as_i64())
        .unwrap_or_else(|| panic!("no alert for {tx}: {alerts}"));
    (tx, id)
}

fn rank(status: &str) -> u8 {
    match status {
        "open" => 0,
        "assigned" => 1,
        "closed" => 2,
        other => panic!("status {other}"),
    }
}

#[tokio::test]
async fn the_queue_puts_untaken_risky_work_first_and_pages_without_gaps() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    for i in 0..60 {
        let (status, d) = app
            .post_json("/v1/transactions", &mixed_tx("q", 10, i))
            .await;
        assert_eq!(status, 200, "{d}");
    }
    let (_, all) = app.get("/v1/cases?limit=500").await;
    let all = all["cases"].as_array().expect("cases").clone();
    assert!(
        all.len() >= 10,
        "the mixed stream raises alerts: {}",
        all.len()
    );
    let scores: std::collections::BTreeSet<i64> = all
        .iter()
        .map(|c| c["score"].as_f64().unwrap_or(0.0) as i64)
        .collect();
    assert!(scores.len() >= 2, "alerts of different scores: {scores:?}");

    // Take one case and close another: the closed one sinks to the bottom, the assigned one
    // comes after every open case.
    let low = all.last().expect("a case")["id"].as_i64().expect("id");
    let top = all[0]["id"].as_i64().expect("id");
    let (status, body) = app
        .post_json(&format!("/v1/cases/{low}/assign"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["case"]["status"], "assigned");
    assert_eq!(body["case"]["assignee"], "admin-key");
    let (status, body) = app
        .post_json(
            &format!("/v1/cases/{top}/close"),
            &json!({"verdict": "false_positive"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, page) = app.get("/v1/cases?limit=500").await;
    assert_eq!(status, 200, "{page}");
    let cases = page["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), all.len());
    let key = |c: &Value| {
        (
            rank(c["status"].as_str().expect("status")),
            -c["score"].as_f64().expect("score"),
            -c["id"].as_i64().expect("id"),
        )
    };
    for pair in cases.windows(2) {
        assert!(
            key(&pair[0]) < key(&pair[1]),
            "out of order: {} then {}",
            pair[0],
            pair[1]
        );
    }
    assert_eq!(cases.last().expect("last")["id"], top);
    assert_eq!(cases.last().expect("last")["status"], "closed");
    assert_eq!(cases.last().expect("last")["verdict"], "false_positive");
    let assigned_at = cases.iter().position(|c| c["id"] == low).expect("assigned");
    assert_eq!(cases[assigned_at - 1]["status"], "open");

    // Pages of 7 follow the same order without gaps or repeats.
    let mut paged: Vec<Value> = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(n) => format!("/v1/cases?limit=7&before={n}"),
            None => "/v1/cases?limit=7".into(),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(page["cases"].as_array().expect("cases").iter().cloned());
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_owned()),
            None => break,
        }
        assert!(paged.len() <= cases.len(), "paging does not end");
    }
    let ids = |v: &[Value]| v.iter().map(|c| c["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&paged), ids(cases));

    // Filters and the other orders.
    let (_, open) = app.get("/v1/cases?status=open&limit=500").await;
    let open = open["cases"].as_array().expect("cases");
    assert_eq!(open.len(), all.len() - 2);
    assert!(open.iter().all(|c| c["status"] == "open"));
    let (_, closed) = app.get("/v1/cases?status=closed").await;
    assert_eq!(
        ids(closed["cases"].as_array().expect("cases")),
        vec![json!(top)]
    );
    let (_, newest) = app.get("/v1/cases?sort=newest&limit=500").await;
    let newest: Vec<i64> = newest["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter_map(|c| c["id"].as_i64())
        .collect();
    assert!(newest.windows(2).all(|w| w[0] > w[1]), "{newest:?}");
    let (_, risk) = app.get("/v1/cases?sort=risk&limit=500").await;
    let risk: Vec<f64> = risk["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter_map(|c| c["score"].as_f64())
        .collect();
    assert!(risk.windows(2).all(|w| w[0] >= w[1]), "{risk:?}");

    for (path, field) in [
        ("/v1/cases?status=pending", "status"),
        ("/v1/cases?sort=oldest", "sort"),
        ("/v1/cases?limit=0", "limit"),
        ("/v1/cases?before=yesterday", "before"),
        ("/v1/audit?limit=x", "limit"),
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn closing_as_fraud_labels_the_transaction_feeds_the_ring_and_is_audited() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let (tx, id) = ring(&app, "cf").await;

    let (status, case) = app.get(&format!("/v1/cases/{id}")).await;
    assert_eq!(status, 200, "{case}");
    assert_eq!(case["case"]["status"], "open");
    assert_eq!(case["transaction"]["transaction_id"], tx.as_str());
    assert!(case["label"].is_null());
    let hits: Vec<&str> = case["why"]["rule_hits"]
        .as_array()
        .expect("rule hits")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert!(hits.contains(&"shared_device"), "{case}");
    let entities = case["entities"].as_array().expect("entities");
    assert!(
        entities.contains(&json!({"type": "device", "id": "cf-device"})),
        "{case}"
    );

    // Bad verdicts are refused, naming the field, and change nothing.
    for (body, field) in [
        (json!({"verdict": "maybe"}), "verdict"),
        (json!({}), "verdict"),
        (json!({"verdict": "fraud", "severity": 3}), "severity"),
        (json!({"verdict": "fraud", "note": 7}), "note"),
        (
            json!({"verdict": "fraud", "note": "x".repeat(2001)}),
            "note",
        ),
    ] {
        let (status, err) = app.post_json(&format!("/v1/cases/{id}/close"), &body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    let bad = app
        .post(&format!("/v1/cases/{id}/close"), "{not json")
        .await;
    assert_eq!(bad.status, 400);
    let (status, _) = app
        .post_json("/v1/cases/999999/close", &json!({"verdict": "fraud"}))
        .await;
    assert_eq!(status, 404);
    let (status, err) = app
        .post_json("/v1/cases/abc/close", &json!({"verdict": "fraud"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["field"], "id");
    let (_, unchanged) = app.get(&format!("/v1/transactions/{tx}")).await;
    assert_eq!(unchanged["labels"], json!([]), "{unchanged}");

    let (status, assigned) = app
        .post_json(&format!("/v1/cases/{id}/assign"), &json!({}))
        .await;
    assert_eq!(status, 200, "{assigned}");
    let (status, closed) = app
        .post_json(
            &format!("/v1/cases/{id}/close"),
            &json!({"verdict": "fraud", "note": "customer denies, device in a ring"}),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["case"]["status"], "closed");
    assert_eq!(closed["case"]["verdict"], "fraud");
    assert_eq!(closed["case"]["closed_by"], "admin-key");
    assert_eq!(closed["label"]["fraud"], true);

    // The label is stored with the transaction, from the analyst.
    let (status, stored) = app.get(&format!("/v1/transactions/{tx}")).await;
    assert_eq!(status, 200);
    let labels = stored["labels"].as_array().expect("labels");
    assert_eq!(labels.len(), 1, "{stored}");
    assert_eq!(labels[0]["fraud"], true);
    assert_eq!(labels[0]["source"], "analyst:admin-key");
    assert_eq!(labels[0]["note"], "customer denies, device in a ring");

    // The engine learned it: the card counts a fraud label, and a new card joining the
    // labelled user's group is caught by the ring rule.
    let (_, card) = app.get("/v1/entities/card/cf-card-1").await;
    assert_eq!(card["features"]["card.fraud_labels"], 1.0, "{card}");
    assert_eq!(card["profile"]["labelled_fraud"], 1, "{card}");
    let (status, joined) = app
        .post_json(
            "/v1/transactions",
            &json!({"transaction_id": "cf-2", "user_id": "cf-u2", "card_id": "cf-fresh", "amount": 40}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        joined.to_string().contains("ring_with_confirmed_fraud"),
        "{joined}"
    );

    // Closing again is a conflict, and stores no second label.
    let (status, again) = app
        .post_json(
            &format!("/v1/cases/{id}/close"),
            &json!({"verdict": "false_positive"}),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "conflict");
    let (status, _) = app
        .post_json(&format!("/v1/cases/{id}/assign"), &json!({}))
        .await;
    assert_eq!(status, 409);
    let (_, stored) = app.get(&format!("/v1/transactions/{tx}")).await;
    assert_eq!(stored["labels"].as_array().map(Vec::len), Some(1));

    // The case view shows the label and the trail; the audit route has the rows with actor,
    // role and time, newest first.
    let (_, case) = app.get(&format!("/v1/cases/{id}")).await;
    assert_eq!(case["label"], "fraud");
    let actions: Vec<&str> = case["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(actions, ["case.close", "case.assign"]);
    let (status, audit) = app.get(&format!("/v1/audit?target=case:{id}")).await;
    assert_eq!(status, 200, "{audit}");
    let rows = audit["audit"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["actor"], "admin-key");
    assert_eq!(rows[0]["role"], "admin");
    assert_eq!(rows[0]["action"], "case.close");
    assert_eq!(rows[0]["detail"]["verdict"], "fraud");
    assert_eq!(rows[0]["detail"]["transaction_id"], tx.as_str());
    assert!(
        rows[0]["at"].as_str().is_some_and(|t| t.starts_with("20")),
        "{audit}"
    );
    let (_, by_actor) = app.get("/v1/audit?actor=admin-key&limit=1").await;
    assert_eq!(by_actor["audit"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_actor["audit"][0]["id"], rows[0]["id"]);
    let (_, nobody) = app.get("/v1/audit?actor=nobody").await;
    assert_eq!(nobody["audit"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_false_positive_after_reopening_replaces_the_fraud_label() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let (tx, id) = ring(&app, "fp").await;

    let (status, _) = app
        .post_json(&format!("/v1/cases/{id}/reopen"), &json!({}))
        .await;
    assert_eq!(status, 409, "an open case cannot be reopened");
    let (status, _) = app
        .post_json(
            &format!("/v1/cases/{id}/close"),
            &json!({"verdict": "fraud"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, reopened) = app
        .post_json(&format!("/v1/cases/{id}/reopen"), &json!({}))
        .await;
    assert_eq!(status, 200, "{reopened}");
    assert_eq!(reopened["case"]["status"], "open");
    assert!(reopened["case"]["verdict"].is_null());
    let (_, queue) = app.get("/v1/cases?status=open").await;
    assert!(queue["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .any(|c| c["id"] == id));

    let (status, closed) = app
        .post_json(
            &format!("/v1/cases/{id}/close"),
            &json!({"verdict": "false_positive", "note": "family device"}),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["label"]["fraud"], false);
    assert_eq!(closed["label"]["previous"], true);
    let (_, stored) = app.get(&format!("/v1/transactions/{tx}")).await;
    let labels = stored["labels"].as_array().expect("labels");
    assert_eq!(labels.len(), 2);
    assert_eq!(labels[1]["fraud"], false);
    let (_, case) = app.get(&format!("/v1/cases/{id}")).await;
    assert_eq!(case["label"], "not_fraud");
    assert_eq!(case["case"]["verdict"], "false_positive");
    let actions: Vec<&str> = case["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(actions, ["case.close", "case.reopen", "case.close"]);
    let (_, card) = app.get("/v1/entities/card/fp-card-1").await;
    assert_eq!(card["features"]["card.fraud_labels"], 0.0, "{card}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_closes_exactly_one_wins() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let (tx, id) = ring(&app, "cc").await;
    let path = format!("/v1/cases/{id}/close");
    let bodies: Vec<Value> = (0..6)
        .map(|i| json!({ "verdict": if i % 2 == 0 { "fraud" } else { "false_positive" } }))
        .collect();
    let closes = bodies.iter().map(|body| app.post_json(&path, body));
    let results = futures_util::future::join_all(closes).await;
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        5,
        "{statuses:?}"
    );
    let (_, stored) = app.get(&format!("/v1/transactions/{tx}")).await;
    assert_eq!(
        stored["labels"].as_array().map(Vec::len),
        Some(1),
        "{stored}"
    );
    app.stop().await;
}

/// Waits until `check` holds for `GET path` on `app` (records ship to PostgreSQL in the
/// background); fails with the last answer after 30 s.
async fn eventually(app: &TestApp, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = app.get(path).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_production_mode_a_case_closed_on_one_node_is_closed_on_every_node() {
    let server = PostgresServer::start();
    let url = server.url();
    let dir_a = tempfile::tempdir().expect("dir");
    let dir_b = tempfile::tempdir().expect("dir");
    let a = spawn_app_with(dir_a.path(), |args| {
        args.postgres = Some(Secret::new(url.clone()))
    })
    .await;
    let b = spawn_app_with(dir_b.path(), |args| {
        args.postgres = Some(Secret::new(url.clone()))
    })
    .await;
    let (tx, _) = ring(&a, "pg").await;
    // The alert's id is PostgreSQL's, the same on both nodes once shipped.
    let queue = eventually(&b, "/v1/cases", |q| {
        q["cases"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["transaction_id"] == tx.as_str()))
    })
    .await;
    let id = queue["cases"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["transaction_id"] == tx.as_str()))
        .and_then(|c| c["id"].as_i64())
        .expect("case id");

    let (status, closed) = a
        .post_json(
            &format!("/v1/cases/{id}/close"),
            &json!({"verdict": "fraud", "note": "ring"}),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    let (status, seen) = b.get(&format!("/v1/cases/{id}")).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["case"]["status"], "closed");
    assert_eq!(seen["case"]["verdict"], "fraud");
    assert_eq!(seen["audit"][0]["action"], "case.close");
    let (status, again) = b
        .post_json(
            &format!("/v1/cases/{id}/close"),
            &json!({"verdict": "false_positive"}),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    let labelled = eventually(&b, &format!("/v1/transactions/{tx}"), |t| {
        t["labels"].as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    assert_eq!(labelled["labels"].as_array().map(Vec::len), Some(1));
    assert_eq!(labelled["labels"][0]["source"], "analyst:admin-key");

    // Reopened on B, closed concurrently on both: one wins.
    let (status, _) = b
        .post_json(&format!("/v1/cases/{id}/reopen"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let path = format!("/v1/cases/{id}/close");
    let body = json!({"verdict": "fraud"});
    let (ra, rb) = tokio::join!(a.post_json(&path, &body), b.post_json(&path, &body));
    let mut statuses = [ra.0, rb.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{ra:?} {rb:?}");
    let (_, trail) = a.get(&format!("/v1/audit?target=case:{id}")).await;
    let actions: Vec<&str> = trail["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(actions, ["case.close", "case.reopen", "case.close"]);
    a.stop().await;
    b.stop().await;
}
