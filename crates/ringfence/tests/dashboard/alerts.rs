//! The alerts page in Chromium: an alert opened from the queue and confirmed as fraud; the
//! label and the audit trail are then checked through the API.

use serde_json::{json, Value};

use crate::browser;
use crate::helpers::spawn_app_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_opens_an_alert_from_the_queue_and_confirms_fraud() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    // A device shared by two users: the second transaction raises a shared-device alert.
    for (i, user) in ["ana", "ben"].iter().enumerate() {
        let (status, d) = app
            .post_json(
                "/v1/transactions",
                &json!({
                    "transaction_id": format!("ui-{i}"), "user_id": user,
                    "card_id": format!("ui-card-{i}"), "device_id": "ui-device",
                    "amount": 240.0, "merchant": "Online Store",
                }),
            )
            .await;
        assert_eq!(status, 200, "{d}");
    }
    let (_, alerts) = app.get("/v1/alerts").await;
    let id = alerts["alerts"][0]["id"].as_i64().expect("an alert");
    assert_eq!(alerts["alerts"][0]["transaction_id"], "ui-1");

    let password = app.create_user("alex", "analyst").await;
    let out: Value = browser::run(
        "alerts.mjs",
        &app.base,
        ("alex", &password),
        &[&id.to_string()],
    )
    .await;
    assert_eq!(out["status"], "closed", "{out}");
    assert!(out["hits"].to_string().contains("shared_device"), "{out}");

    // The label is stored: fraud, then not fraud, then fraud again, by the analyst.
    let (_, stored) = app.get("/v1/transactions/ui-1").await;
    let labels = stored["labels"].as_array().expect("labels");
    let verdicts: Vec<bool> = labels.iter().filter_map(|l| l["fraud"].as_bool()).collect();
    assert_eq!(verdicts, [true, false, true], "{stored}");
    assert!(
        labels.iter().all(|l| l["source"] == "analyst:alex"),
        "{stored}"
    );
    assert_eq!(labels[2]["note"], "confirmed after a call");
    // And the audit trail has every action, with who and when.
    let (_, audit) = app.get(&format!("/v1/audit?target=case:{id}")).await;
    let rows = audit["audit"].as_array().expect("audit");
    let actions: Vec<&str> = rows.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "case.close",
            "case.reopen",
            "case.close",
            "case.reopen",
            "case.close",
            "case.assign"
        ]
    );
    assert!(rows
        .iter()
        .all(|r| r["actor"] == "alex" && r["at"].is_string()));
    assert_eq!(
        rows[4]["detail"]["note"],
        "cardholder confirms it was not them"
    );
    app.stop().await;
}
