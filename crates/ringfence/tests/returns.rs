//! Store purchases and returns on one engine, through the HTTP API: the till's photo is
//! checked for a face and stored by content; a return is matched to its receipt across
//! stores. The story: a purchase at store A with a face photo; at the same moment the
//! customer returns it at A with a photo and a fraudster at B without one: A approved, B
//! blocked, with reasons; then every indicator on its own, and bad input refused by field.

mod helpers;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use helpers::{spawn_app_with, test_asset, TestApp};
use serde_json::{json, Value};

fn face() -> String {
    STANDARD.encode(test_asset("astronaut.png"))
}

fn rules(d: &Value) -> Vec<String> {
    d["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn send(app: &TestApp, body: Value) -> Value {
    let (status, d) = app.post_json("/v1/transactions", &body).await;
    assert_eq!(status, 200, "{d}");
    d
}

fn purchase(receipt: &str, customer: &str, photo: Option<String>) -> Value {
    json!({
        "kind": "purchase", "timestamp": "2026-11-20T10:00:00Z",
        "store_id": "store-a", "terminal_id": "pos-a1", "receipt_id": receipt,
        "customer_id": customer, "amount": 79.98, "card_id": format!("card-{customer}"),
        "items": [{"sku": "shirt-blue-m", "price": 39.99, "quantity": 2}],
        "photo": photo,
    })
}

fn ret(
    store: &str,
    receipt: Option<&str>,
    customer: &str,
    minute: u32,
    photo: Option<String>,
) -> Value {
    json!({
        "kind": "return", "timestamp": format!("2026-11-20T11:{minute:02}:00Z"),
        "store_id": store, "terminal_id": format!("pos-{store}"), "receipt_id": receipt,
        "customer_id": customer, "amount": 39.99,
        "items": [{"sku": "shirt-blue-m", "price": 39.99}],
        "photo": photo,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_at_a_is_served_and_the_photo_less_claim_at_b_is_blocked() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;

    let bought = send(&app, purchase("r-1", "c-1", Some(face()))).await;
    assert_eq!(bought["decision"], "approve", "{bought}");
    let id = bought["transaction_id"].as_str().expect("id");
    let (_, stored) = app.get(&format!("/v1/transactions/{id}")).await;
    let retail = &stored["transaction"]["retail"];
    assert_eq!(retail["photo"], "verified", "{stored}");
    let address = retail["photo_ref"].as_str().expect("photo address");
    assert_eq!(address.len(), 64);
    assert!(
        !stored.to_string().contains(&face()[..64]),
        "the image itself is never in the record"
    );
    let file = dir
        .path()
        .join("photos")
        .join(&address[..2])
        .join(format!("{address}.png"));
    assert!(file.exists(), "{} stored", file.display());

    // At the same moment: the customer at A with a photo, someone at B without one.
    let (at_a, at_b) = tokio::join!(
        send(&app, ret("store-a", Some("r-1"), "c-1", 0, Some(face()))),
        send(&app, ret("store-b", Some("r-1"), "c-1", 0, None)),
    );
    assert_eq!(at_a["decision"], "approve", "{at_a}");
    assert_eq!(at_b["decision"], "block", "{at_b}");
    assert!(at_b["score"].as_f64().unwrap_or(0.0) >= 85.0, "{at_b}");
    let why = rules(&at_b);
    assert!(why.contains(&"no_photo_verification".to_owned()), "{at_b}");

    // The second unit may still be returned once; a third claim anywhere is a duplicate.
    let second = send(&app, ret("store-a", Some("r-1"), "c-1", 20, Some(face()))).await;
    assert_eq!(second["decision"], "approve", "{second}");
    let third = send(&app, ret("store-a", Some("r-1"), "c-1", 40, Some(face()))).await;
    assert_eq!(third["decision"], "block", "{third}");
    assert!(
        rules(&third).contains(&"duplicate_return".to_owned()),
        "{third}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_return_indicator_fires_with_its_reason() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    send(&app, purchase("r-2", "c-2", Some(face()))).await;
    send(&app, purchase("r-3", "c-3", None)).await;

    // Another customer than the buyer.
    let d = send(&app, ret("store-a", Some("r-2"), "c-9", 5, Some(face()))).await;
    assert!(rules(&d).contains(&"customer_mismatch".to_owned()), "{d}");
    // No receipt anywhere.
    let d = send(&app, ret("store-a", Some("r-404"), "c-2", 6, Some(face()))).await;
    assert!(
        rules(&d).contains(&"return_without_receipt".to_owned()),
        "{d}"
    );
    let d = send(&app, ret("store-a", None, "c-2", 7, Some(face()))).await;
    assert!(
        rules(&d).contains(&"return_without_receipt".to_owned()),
        "{d}"
    );
    // Returned a few minutes after the purchase (timing), at another store (the first
    // return of r-3's shirts happened at B a minute before: concurrent).
    let d = send(&app, ret("store-b", Some("r-3"), "c-3", 0, None)).await;
    assert!(
        rules(&d).contains(&"no_photo_verification".to_owned()),
        "{d}"
    );
    let d = send(&app, ret("store-a", Some("r-3"), "c-3", 1, None)).await;
    assert!(rules(&d).contains(&"concurrent_return".to_owned()), "{d}");
    assert_eq!(d["decision"], "block", "{d}");
    // More refunded than paid, and a high-value item not on the receipt.
    let mut pricey = ret("store-a", Some("r-2"), "c-2", 30, Some(face()));
    pricey["items"] = json!([{"sku": "watch-gold", "price": 900.0}]);
    pricey["amount"] = json!(900.0);
    let d = send(&app, pricey).await;
    let why = rules(&d);
    for rule in ["high_value_item", "return_exceeds_paid", "duplicate_return"] {
        assert!(why.contains(&rule.to_owned()), "{rule}: {d}");
    }
    // A burst of returns by one customer.
    for (n, r) in ["r-10", "r-11", "r-12", "r-13"].iter().enumerate() {
        send(&app, purchase(r, "c-4", Some(face()))).await;
        let d = send(
            &app,
            ret("store-a", Some(r), "c-4", 45 + n as u32, Some(face())),
        )
        .await;
        if n == 3 {
            assert!(rules(&d).contains(&"suspicious_timing".to_owned()), "{d}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_retail_input_is_refused_by_field_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let cases = [
        (
            json!({"kind": "return", "store_id": "s", "amount": 1, "items": [{"sku": "x"}]}),
            "items[0].price",
        ),
        (
            json!({"kind": "purchase", "store_id": "s", "amount": 1, "items": [{"sku": "x", "price": 1}]}),
            "receipt_id",
        ),
        (
            json!({"kind": "return", "amount": 1, "items": [{"sku": "x", "price": 1}]}),
            "store_id",
        ),
        (
            json!({"kind": "return", "store_id": "s", "amount": 1, "items": []}),
            "items",
        ),
        (
            json!({"kind": "return", "store_id": "s", "amount": 1, "items": [{"sku": "x", "price": 1, "serial": "a", "quantity": 2}]}),
            "items[0].quantity",
        ),
        (
            json!({"kind": "return", "store_id": "s", "amount": 1, "items": [{"sku": "x", "price": 1}], "photo": "not base64!"}),
            "photo",
        ),
        (
            json!({"kind": "return", "store_id": "s", "amount": 1, "items": [{"sku": "x", "price": 1}], "photo": STANDARD.encode(b"GIF89a not a jpeg")}),
            "photo",
        ),
        (json!({"amount": 1, "photo": face()}), "photo"),
        (
            json!({"amount": 1, "items": [{"sku": "x", "price": 1}]}),
            "items",
        ),
    ];
    for (body, field) in cases {
        let (status, d) = app.post_json("/v1/transactions", &body).await;
        assert_eq!(status, 400, "{body}: {d}");
        assert_eq!(d["error"]["field"], field, "{d}");
    }
    let (_, stats) = app.get("/v1/stats").await;
    assert_eq!(stats["stored"]["transactions"], 0, "{stats}");
    assert!(
        !dir.path()
            .join("photos")
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false),
        "a refused photo is not stored"
    );
    app.stop().await;
}
