//! `serve --postgres`: records in a real PostgreSQL, readable from any node; a node started
//! later on the same database rebuilds its state from them and recognises their ids; while
//! PostgreSQL is down decisions keep flowing from the node's local buffer, which drains into
//! PostgreSQL, once each, when it is back.

mod helpers;

use helpers::services::PostgresServer;
use helpers::spawn_app_with;
use ringfence::config::{Secret, ServeArgs, Settings};
use serde_json::{json, Value};

const RING_1: &str = r#"{"transaction_id":"pg-ring-1","user_id":"user-ring-1","card_id":"card-ring-1","device_id":"device-shared-123","amount":150.00,"merchant":"Online Store"}"#;
const RING_2: &str = r#"{"transaction_id":"pg-ring-2","user_id":"user-ring-2","card_id":"card-ring-2","device_id":"device-shared-123","amount":150.00,"merchant":"Online Store"}"#;

#[tokio::test]
async fn records_live_in_postgres_and_a_second_node_sees_them() {
    let server = PostgresServer::start();
    let url = server.url();
    let dir_a = tempfile::tempdir().expect("dir");
    let a = spawn_app_with(dir_a.path(), |args| {
        args.postgres = Some(Secret::new(url.clone()))
    })
    .await;
    assert_eq!(a.post("/transaction", RING_1).await.status, 200);
    let second = a.post("/transaction", RING_2).await;
    assert_eq!(second.status, 200);
    let second: Value = second.json().expect("json");
    assert_ne!(second["decision"], "approve", "{second}");
    let (status, label) = a
        .post_json(
            "/v1/labels",
            &json!({"transaction_id": "pg-ring-2", "fraud": true}),
        )
        .await;
    assert_eq!(status, 201, "{label}");
    a.stop().await;

    // The records are in PostgreSQL.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!tables.is_empty(), "migrations created the schema");

    // Another node, its own (empty) data directory, the same database.
    let dir_b = tempfile::tempdir().expect("dir");
    let b = spawn_app_with(dir_b.path(), |args| {
        args.postgres = Some(Secret::new(url.clone()))
    })
    .await;
    let (status, tx) = b.get("/v1/transactions/pg-ring-2").await;
    assert_eq!(status, 200, "{tx}");
    assert_eq!(tx["decision"]["decision"], second["decision"], "{tx}");
    let (status, alerts) = b.get("/v1/alerts").await;
    assert_eq!(status, 200);
    assert_eq!(
        alerts["alerts"].as_array().map(Vec::len),
        Some(1),
        "{alerts}"
    );
    // Its state was rebuilt from the records: the device has two users and a fraud label.
    let (status, device) = b.get("/v1/entities/device/device-shared-123").await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["features"]["device.users_24h"], 2.0, "{device}");
    // And it recognises a retried id instead of deciding it again.
    let again = b.post("/transaction", RING_2).await;
    let again: Value = again.json().expect("json");
    assert_eq!(again["duplicate"], true, "{again}");
    b.stop().await;
}

async fn rows(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect("query").get(0)
}

#[tokio::test]
async fn decisions_flow_while_postgres_is_down_and_the_buffer_drains_once() {
    let mut server = PostgresServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().expect("dir");
    let node = spawn_app_with(dir.path(), |args| {
        args.postgres = Some(Secret::new(url.clone()))
    })
    .await;
    let post = |i: usize| {
        json!({"transaction_id": format!("down-{i}"), "user_id": format!("u{}", i % 4),
               "card_id": format!("c{}", i % 5), "amount": 20 + i, "merchant": "m"})
    };
    for i in 0..10 {
        let (status, d) = node.post_json("/v1/transactions", &post(i)).await;
        assert_eq!(status, 200, "{d}");
    }
    server.stop();
    // PostgreSQL is gone: every decision is still acknowledged (durable in the buffer).
    for i in 10..40 {
        let (status, d) = node.post_json("/v1/transactions", &post(i)).await;
        assert_eq!(status, 200, "{d}");
    }
    let (status, label) = node
        .post_json(
            "/v1/labels",
            &json!({"transaction_id": "down-12", "fraud": true}),
        )
        .await;
    assert_eq!(status, 201, "{label}");
    // A retried id while PostgreSQL is down is still recognised (it is in the buffer).
    let (_, again) = node.post_json("/v1/transactions", &post(15)).await;
    assert_eq!(again["duplicate"], true, "{again}");
    let (status, one) = node.get("/v1/transactions/down-20").await;
    assert_eq!(status, 200, "the node's own records stay readable: {one}");

    server.resume();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n = rows(&client, "SELECT count(*) FROM transactions").await;
        let l = rows(&client, "SELECT count(*) FROM labels").await;
        if n == 40 && l == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "drained {n} of 40, {l} labels"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Shipping again (as after a crash before the cursor was saved) stores nothing twice.
    node.stop().await;
    std::fs::remove_file(dir.path().join("postgres-shipped-seq")).expect("cursor file");
    let node = spawn_app_with(dir.path(), |args| {
        args.postgres = Some(Secret::new(url.clone()))
    })
    .await;
    assert_eq!(rows(&client, "SELECT count(*) FROM transactions").await, 40);
    assert_eq!(
        rows(&client, "SELECT count(DISTINCT id) FROM transactions").await,
        40
    );
    assert_eq!(rows(&client, "SELECT count(*) FROM labels").await, 1);
    let (_, alerts) = node.get("/v1/alerts").await;
    let listed = alerts["alerts"].as_array().map(Vec::len).unwrap_or(0) as i64;
    assert_eq!(listed, rows(&client, "SELECT count(*) FROM alerts").await);
    node.stop().await;
}

#[test]
fn postgres_needs_a_shared_card_hash_key() {
    let args = ServeArgs {
        postgres: Some(Secret::new("postgres://u:pw@127.0.0.1:1/db")),
        ..ServeArgs::default()
    };
    let err = Settings::resolve(&args).err().map(|e| e.to_string());
    let err = err.unwrap_or_default();
    assert!(err.contains("--card-hash-key"), "{err}");
    assert!(!err.contains("pw@"), "{err}");
}
