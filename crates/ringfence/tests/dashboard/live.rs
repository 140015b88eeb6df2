//! The live page in Chromium while transactions flow: the feed moves, Pause holds it, the
//! decision filter shows only blocks, the counters and charts show the traffic; what the page
//! showed is what the server stored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringfence::client::HttpClient;
use serde_json::{json, Value};

use crate::browser;
use crate::helpers::spawn_app_with;

/// Amounts decide: up to 500 approve, above it review, above 1000 block.
const RULES: &str = "[[rule]]\nname = \"big\"\ncategory = \"amount\"\nwhen = \"tx.amount > 1000\"\nscore = 90\nreason = \"amount {tx.amount} over 1000\"\n\n[[rule]]\nname = \"mid\"\ncategory = \"amount\"\nwhen = \"tx.amount > 500\"\nscore = 55\nreason = \"amount {tx.amount} over 500\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_moves_pauses_and_filters_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).expect("rules");
    let app = spawn_app_with(dir.path(), |a| a.rules = Some(rules)).await;

    // Traffic for as long as the browser runs: 8 transactions every 200 ms, one in four
    // blocked, at two stores.
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let running = Arc::clone(&running);
        let url = app.url("/v1/transactions/batch");
        tokio::spawn(async move {
            let client = HttpClient::new()
                .with_timeout(Duration::from_secs(20))
                .with_bearer(crate::helpers::ADMIN_KEY);
            let mut n = 0usize;
            while running.load(Ordering::Relaxed) {
                let batch: Vec<Value> = (0..8)
                    .map(|_| {
                        n += 1;
                        let amount = [25.0, 120.0, 700.0, 1800.0][n % 4];
                        let store = ["north", "south"][n % 2];
                        json!({
                            "transaction_id": format!("live-{n}"),
                            "amount": amount,
                            "store_id": store,
                            "merchant": "m-1",
                            "card_id": format!("card-{n}"),
                            "user_id": format!("user-{n}"),
                        })
                    })
                    .collect();
                let r = client
                    .post(&url, "application/json", Value::Array(batch).to_string())
                    .await
                    .expect("post");
                assert_eq!(r.status, 200);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            n
        })
    };

    let password = app.create_user("analyst-1", "analyst").await;
    let out = browser::run("live.mjs", &app.base, ("analyst-1", &password), &[]).await;
    running.store(false, Ordering::Relaxed);
    let posted = traffic.await.expect("traffic");

    // Every row the filtered feed showed is a stored block.
    let blocks = out["blocks"].as_array().expect("blocks");
    assert!(blocks.len() >= 3, "{out}");
    for row in blocks {
        let id = row["id"].as_str().expect("id");
        let (status, stored) = app.get(&format!("/v1/transactions/{id}")).await;
        assert_eq!(status, 200, "{id}: {stored}");
        assert_eq!(stored["decision"]["decision"], "block", "{id}: {stored}");
    }
    for key in ["first", "moved", "pausedTop"] {
        let id = out[key].as_str().expect("row id");
        let (status, _) = app.get(&format!("/v1/transactions/{id}")).await;
        assert_eq!(status, 200, "{key} {id} is stored");
    }
    assert_ne!(out["first"], out["moved"], "the feed moved");
    assert!(
        out["filterError"]
            .as_str()
            .is_some_and(|e| e.contains("min_amount")),
        "{out}"
    );
    // The counters the page showed came from what the server counted.
    let (_, h) = app.get("/v1/live/stats").await;
    let counted: u64 = h["seconds"]
        .as_array()
        .expect("seconds")
        .iter()
        .filter_map(|s| s["transactions"].as_u64())
        .sum();
    assert!(
        counted > 0 && counted <= posted as u64,
        "{counted} of {posted}"
    );
    app.stop().await;
}
