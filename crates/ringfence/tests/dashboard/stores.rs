//! The stores page in Chromium: the two-store return story (a purchase at store A with a
//! face photo, its return at A with a photo, a claim at B without one) shown side by side,
//! the blocked return highlighted and the photo served.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::browser;
use crate::helpers::{spawn_app_with, test_asset, TestApp};

async fn send(app: &TestApp, body: Value) -> Value {
    let (status, d) = app.post_json("/v1/transactions", &body).await;
    assert_eq!(status, 200, "{d}");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_side_by_side_with_the_blocked_return_and_its_photos() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let face = STANDARD.encode(test_asset("astronaut.png"));
    let bought = send(
        &app,
        json!({
            "kind": "purchase", "timestamp": "2026-11-20T10:00:00Z",
            "store_id": "store-a", "terminal_id": "pos-a1", "receipt_id": "r-1",
            "customer_id": "c-1", "amount": 79.98, "card_id": "card-c-1",
            "items": [{"sku": "shirt-blue-m", "price": 39.99, "quantity": 2}],
            "photo": face,
        }),
    )
    .await;
    assert_eq!(bought["decision"], "approve", "{bought}");
    let honest = send(
        &app,
        json!({
            "kind": "return", "timestamp": "2026-11-20T11:00:00Z",
            "store_id": "store-a", "terminal_id": "pos-a1", "receipt_id": "r-1",
            "customer_id": "c-1", "amount": 39.99,
            "items": [{"sku": "shirt-blue-m", "price": 39.99}], "photo": face,
        }),
    )
    .await;
    assert_eq!(honest["decision"], "approve", "{honest}");
    let claim = send(
        &app,
        json!({
            "kind": "return", "timestamp": "2026-11-20T11:00:30Z",
            "store_id": "store-b", "terminal_id": "pos-b1", "receipt_id": "r-1",
            "customer_id": "c-2", "amount": 39.99,
            "items": [{"sku": "shirt-blue-m", "price": 39.99}],
        }),
    )
    .await;
    assert_eq!(claim["decision"], "block", "{claim}");
    let claim_id = claim["transaction_id"].as_str().expect("id");

    let password = app.create_user("analyst-1", "analyst").await;
    let out = browser::run(
        "stores.mjs",
        &app.base,
        ("analyst-1", &password),
        &[claim_id],
    )
    .await;
    assert_eq!(out["columns"], json!(["store-a", "store-b"]), "{out}");
    // What the page highlighted is the stored blocked return at store-b.
    let (_, stored) = app.get(&format!("/v1/transactions/{claim_id}")).await;
    assert_eq!(stored["decision"]["decision"], "block", "{stored}");
    assert_eq!(stored["transaction"]["kind"], "return");
    assert_eq!(stored["transaction"]["store_id"], "store-b");
    // The photo it showed is the purchase's, served as stored.
    let (_, purchase) = app
        .get(&format!(
            "/v1/transactions/{}",
            bought["transaction_id"].as_str().expect("id")
        ))
        .await;
    let address = purchase["transaction"]["retail"]["photo_ref"]
        .as_str()
        .expect("photo address");
    let src = out["photoSrc"].as_str().expect("src");
    let honest_ref = {
        let id = honest["transaction_id"].as_str().expect("id");
        let (_, t) = app.get(&format!("/v1/transactions/{id}")).await;
        t["transaction"]["retail"]["photo_ref"]
            .as_str()
            .expect("return photo")
            .to_owned()
    };
    assert!(
        src == format!("/v1/photos/{address}") || src == format!("/v1/photos/{honest_ref}"),
        "{src}"
    );
    let photo = app.client.get(&app.url(src)).await.expect("photo");
    assert_eq!(photo.status, 200);
    let outcomes = out["outcomes"].as_array().expect("outcomes");
    assert!(outcomes.contains(&json!("verified")), "{out}");
    assert!(outcomes.contains(&json!("missing")), "{out}");
    assert!(
        out["replication"]
            .as_str()
            .is_some_and(|t| t.contains("not a site")),
        "{out}"
    );
    app.stop().await;
}
