//! Till photos uploaded as `multipart/form-data` (a `transaction` JSON part and a `photo` file
//! part) over HTTP: the same checks, outcomes and errors as base64 in JSON; every bad form
//! refused by the part or field it gets wrong with nothing stored; the stored photo served back
//! byte for byte by `GET /v1/photos/{sha256}`; the store's list of recent transactions.

mod helpers;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use helpers::{spawn_app_with, test_asset, TestApp};
use serde_json::{json, Value};

const BOUNDARY: &str = "ringfence-test-boundary-7MA4YWxkTrZu0gW";
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// One part of a form: its name, file name (for a file part) and bytes.
struct Part<'a> {
    name: &'a str,
    file: Option<&'a str>,
    bytes: Vec<u8>,
}

fn json_part(value: &Value) -> Part<'static> {
    Part {
        name: "transaction",
        file: None,
        bytes: value.to_string().into_bytes(),
    }
}

fn photo_part(bytes: Vec<u8>) -> Part<'static> {
    Part {
        name: "photo",
        file: Some("till.jpg"),
        bytes,
    }
}

/// A `multipart/form-data` body, as a browser's `FormData` sends it.
fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let disposition = match part.file {
            Some(file) => format!(
                "Content-Disposition: form-data; name=\"{}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n",
                part.name
            ),
            None => format!("Content-Disposition: form-data; name=\"{}\"\r\n", part.name),
        };
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&part.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn post_form(app: &TestApp, path: &str, parts: &[Part<'_>]) -> (u16, Value) {
    post_raw(
        app,
        path,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        form(parts),
    )
    .await
}

async fn post_raw(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r = app
        .client
        .post(&app.url(path), content_type, body)
        .await
        .expect("request");
    (r.status, r.json::<Value>().unwrap_or(Value::Null))
}

fn purchase(receipt: &str) -> Value {
    json!({
        "kind": "purchase", "timestamp": "2026-11-20T10:00:00Z",
        "store_id": "store-a", "terminal_id": "pos-a1", "receipt_id": receipt,
        "customer_id": "c-1", "amount": 39.99,
        "items": [{"sku": "shirt-blue-m", "price": 39.99}],
    })
}

fn ret(receipt: &str, minute: u32) -> Value {
    json!({
        "kind": "return", "timestamp": format!("2026-11-20T11:{minute:02}:00Z"),
        "store_id": "store-a", "terminal_id": "pos-a1", "receipt_id": receipt,
        "customer_id": "c-1", "amount": 39.99,
        "items": [{"sku": "shirt-blue-m", "price": 39.99}],
    })
}

fn rules(d: &Value) -> Vec<&str> {
    d["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["rule"].as_str()).collect())
        .unwrap_or_default()
}

/// The stored record's photo outcome and address.
async fn photo_of(app: &TestApp, decision: &Value) -> (String, Option<String>) {
    let id = decision["transaction_id"].as_str().expect("transaction id");
    let (status, stored) = app.get(&format!("/v1/transactions/{id}")).await;
    assert_eq!(status, 200, "{stored}");
    let retail = &stored["transaction"]["retail"];
    (
        retail["photo"].as_str().unwrap_or("").to_owned(),
        retail["photo_ref"].as_str().map(str::to_owned),
    )
}

fn stored_files(app: &TestApp) -> usize {
    let Ok(fans) = app.data.join("photos").read_dir() else {
        return 0;
    };
    fans.filter_map(Result::ok)
        .filter_map(|fan| fan.path().read_dir().ok())
        .map(|files| files.count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_with_an_uploaded_face_is_verified_and_the_photo_is_served_back() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let face = test_asset("astronaut.png");

    let (status, bought) = post_form(
        &app,
        "/v1/transactions",
        &[json_part(&purchase("r-1")), photo_part(face.clone())],
    )
    .await;
    assert_eq!(status, 200, "{bought}");
    assert_eq!(bought["decision"], "approve", "{bought}");
    // The legacy path takes forms too; the photo part may come first.
    let (status, returned) = post_form(
        &app,
        "/transaction",
        &[photo_part(face.clone()), json_part(&ret("r-1", 0))],
    )
    .await;
    assert_eq!(status, 200, "{returned}");
    assert_eq!(returned["decision"], "approve", "{returned}");
    assert!(
        !rules(&returned).contains(&"no_photo_verification"),
        "{returned}"
    );

    let (outcome, address) = photo_of(&app, &returned).await;
    assert_eq!(outcome, "verified");
    let address = address.expect("photo address");
    assert_eq!(photo_of(&app, &bought).await.1.as_deref(), Some(&*address));
    assert_eq!(stored_files(&app), 1, "one photo, stored once");

    // The same bytes as base64 in JSON land at the same address: one photo path, two doors.
    let mut json_return = ret("r-1", 30);
    json_return["photo"] = json!(STANDARD.encode(&face));
    let (status, again) = app.post_json("/v1/transactions", &json_return).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        photo_of(&app, &again).await,
        ("verified".into(), Some(address.clone()))
    );

    let served = app
        .client
        .get(&app.url(&format!("/v1/photos/{address}")))
        .await
        .expect("request");
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("image/png"));
    assert_eq!(served.header("x-content-type-options"), Some("nosniff"));
    assert!(
        served
            .header("cache-control")
            .is_some_and(|c| c.starts_with("private")),
        "a customer's photo is not for shared caches"
    );
    assert!(served.body == face, "served back byte for byte");

    // The till's list: newest first, with decisions and photo addresses.
    let (status, listed) = app
        .get("/v1/stores/store-a/transactions?terminal=pos-a1&limit=5")
        .await;
    assert_eq!(status, 200, "{listed}");
    let rows = listed["transactions"].as_array().expect("transactions");
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["transaction_id"].as_str())
        .collect();
    let expected: Vec<&str> = [&again, &returned, &bought]
        .iter()
        .filter_map(|d| d["transaction_id"].as_str())
        .collect();
    assert_eq!(ids, expected, "{listed}");
    assert_eq!(rows[2]["kind"], "purchase");
    assert_eq!(rows[2]["receipt_id"], "r-1");
    assert_eq!(rows[2]["photo"], "verified");
    assert_eq!(rows[2]["photo_ref"], json!(address));
    assert_eq!(rows[2]["items"][0]["sku"], "shirt-blue-m");
    let (_, other_store) = app.get("/v1/stores/store-b/transactions").await;
    assert_eq!(other_store["transactions"], json!([]), "{other_store}");
    let (status, bad) = app.get("/v1/stores/store-a/transactions?limit=x").await;
    assert_eq!((status, &bad["error"]["field"]), (400, &json!("query")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_photo_without_a_face_is_no_face_and_a_cut_off_one_unreadable() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let rocket = test_asset("rocket.jpg");

    let (status, bought) = post_form(
        &app,
        "/v1/transactions",
        &[json_part(&purchase("r-2")), photo_part(rocket.clone())],
    )
    .await;
    assert_eq!(status, 200, "{bought}");
    let (status, returned) = post_form(
        &app,
        "/v1/transactions",
        &[json_part(&ret("r-2", 0)), photo_part(rocket.clone())],
    )
    .await;
    assert_eq!(status, 200, "{returned}");
    assert!(
        rules(&returned).contains(&"no_photo_verification"),
        "{returned}"
    );
    let (outcome, address) = photo_of(&app, &returned).await;
    assert_eq!(outcome, "no_face");
    let address = address.expect("photo address");
    let served = app
        .client
        .get(&app.url(&format!("/v1/photos/{address}")))
        .await
        .expect("request");
    assert_eq!(served.header("content-type"), Some("image/jpeg"));
    assert!(served.body == rocket, "served back byte for byte");

    // A JPEG cut short is not refused: it is kept as what the till sent, and judged.
    let cut = rocket[..rocket.len() / 2].to_vec();
    let (status, d) = post_form(
        &app,
        "/v1/transactions",
        &[json_part(&ret("r-2", 5)), photo_part(cut)],
    )
    .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(photo_of(&app, &d).await.0, "unreadable");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forms_are_refused_by_part_or_field_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let face = test_asset("astronaut.png");
    let tx = || json_part(&purchase("r-3"));
    let mut with_base64 = purchase("r-3");
    with_base64["photo"] = json!(STANDARD.encode(&face));
    let mut oversized = PNG_MAGIC.to_vec();
    oversized.resize(8 * 1024 * 1024 + 1, 0);
    let payment = json!({"amount": 12.5, "card_id": "card-1"});

    let cases: Vec<(&str, Vec<Part<'_>>, &str, &str)> = vec![
        (
            "no transaction part",
            vec![photo_part(face.clone())],
            "transaction",
            "is missing",
        ),
        ("an empty form", vec![], "transaction", "is missing"),
        (
            "two transaction parts",
            vec![tx(), tx()],
            "transaction",
            "more than once",
        ),
        (
            "two photos",
            vec![tx(), photo_part(face.clone()), photo_part(face.clone())],
            "photo",
            "more than once",
        ),
        (
            "an unknown part",
            vec![
                tx(),
                Part {
                    name: "selfie",
                    file: Some("me.png"),
                    bytes: face.clone(),
                },
            ],
            "selfie",
            "not a part of this form",
        ),
        (
            "a transaction that is not JSON",
            vec![Part {
                name: "transaction",
                file: None,
                bytes: b"kind=purchase&amount=3".to_vec(),
            }],
            "transaction",
            "not a JSON transaction object",
        ),
        (
            "a bad field inside the transaction",
            vec![
                json_part(
                    &json!({"kind": "return", "store_id": "s", "amount": 1, "items": [{"sku": "x"}]}),
                ),
                photo_part(face.clone()),
            ],
            "items[0].price",
            "required",
        ),
        (
            "a base64 photo inside the transaction part",
            vec![json_part(&with_base64)],
            "photo",
            "goes in the form's `photo` part",
        ),
        (
            "garbage bytes for a photo",
            vec![
                tx(),
                photo_part(b"GIF89a definitely not a till photo".to_vec()),
            ],
            "photo",
            "not a JPEG or PNG",
        ),
        (
            "an empty photo",
            vec![tx(), photo_part(Vec::new())],
            "photo",
            "empty",
        ),
        (
            "a photo over 8 MiB",
            vec![tx(), photo_part(oversized)],
            "photo",
            "too large",
        ),
        (
            "a photo on a payment",
            vec![json_part(&payment), photo_part(face.clone())],
            "photo",
            "purchases and returns only",
        ),
    ];
    for (what, parts, field, says) in &cases {
        let (status, d) = post_form(&app, "/v1/transactions", parts).await;
        assert_eq!(status, 400, "{what}: {d}");
        assert_eq!(d["error"]["field"], *field, "{what}: {d}");
        let message = d["error"]["message"].as_str().unwrap_or("");
        assert!(message.starts_with(&format!("{field}: ")), "{what}: {d}");
        assert!(message.contains(says), "{what}: {d}");
    }

    // Not multipart at all, though it says so.
    let (status, d) = post_raw(
        &app,
        "/v1/transactions",
        "multipart/form-data",
        form(&[tx()]),
    )
    .await;
    assert_eq!((status, &d["error"]["field"]), (400, &json!("body")), "{d}");
    let (status, d) = post_raw(
        &app,
        "/v1/transactions",
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        b"--not-the-boundary\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!((status, &d["error"]["field"]), (400, &json!("body")), "{d}");

    let (_, stats) = app.get("/v1/stats").await;
    assert_eq!(stats["stored"]["transactions"], 0, "{stats}");
    assert_eq!(stored_files(&app), 0, "a refused form stores no photo");
    app.stop().await;
}

#[tokio::test]
async fn a_form_over_the_body_limit_is_413_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |args| args.max_body_bytes = Some(64 * 1024)).await;
    let mut big = PNG_MAGIC.to_vec();
    big.resize(100 * 1024, 7);
    let (status, d) = post_form(
        &app,
        "/v1/transactions",
        &[json_part(&purchase("r-4")), photo_part(big)],
    )
    .await;
    assert_eq!(status, 413, "{d}");
    assert_eq!(d["error"]["code"], "too_large", "{d}");
    let (_, stats) = app.get("/v1/stats").await;
    assert_eq!(stats["stored"]["transactions"], 0, "{stats}");
    assert_eq!(stored_files(&app), 0);
    app.stop().await;
}

#[tokio::test]
async fn photos_are_served_only_by_a_well_formed_stored_hash() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let unknown = "ab".repeat(32);
    for bad in [
        "xyz".to_owned(),
        unknown.to_uppercase(),
        format!("{unknown}0"),
        "..%2F..%2Fcard_hash.key".to_owned(),
    ] {
        let (status, d) = app.get(&format!("/v1/photos/{bad}")).await;
        assert_eq!(status, 400, "{bad}: {d}");
        assert_eq!(d["error"]["field"], "sha256", "{d}");
    }
    let (status, d) = app.get(&format!("/v1/photos/{unknown}")).await;
    assert_eq!(status, 404, "{d}");
    assert_eq!(d["error"]["code"], "not_found", "{d}");
    app.stop().await;
}
