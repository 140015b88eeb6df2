//! Admission under overload: past the bound on requests in progress, or on request-body bytes
//! held, a request is answered at once with 503, a JSON `overloaded` error and `Retry-After`,
//! while health checks still answer; when the load goes, requests are accepted again.
//!
//! Requests are held "in progress" deterministically: a raw connection sends a request's
//! headers, declaring a body, and then holds the body back, so the server has admitted the
//! request and waits for its body. No timing is asserted.

mod helpers;

use std::time::Duration;

use helpers::{spawn_app_with, ADMIN_KEY};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Opens a connection and sends the headers of a transaction POST declaring `length` body
/// bytes, then nothing more: the request stays in progress until the stream is dropped.
async fn held_request(base: &str, length: usize) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/transactions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("send headers");
    s.flush().await.expect("flush");
    s
}

fn tx(id: &str) -> Value {
    json!({"transaction_id": id, "user_id": "u1", "card_id": "c1", "amount": 12.5, "merchant": "m1"})
}

/// Posts `id` until it is decided (200) or `tries` run out; returns the last status.
async fn post_until_accepted(app: &helpers::TestApp, id: &str, tries: usize) -> u16 {
    let mut status = 0;
    for _ in 0..tries {
        let (s, _) = app.post_json("/v1/transactions", &tx(id)).await;
        status = s;
        if s == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    status
}

/// Waits (up to 30 s) until the server reports `n` requests in progress: the held requests
/// have been admitted and wait for their bodies.
async fn wait_in_flight(app: &helpers::TestApp, n: usize) {
    let want = format!("ringfence_requests_in_flight {n}\n");
    for _ in 0..3000 {
        let r = app.client.get(&app.url("/metrics")).await.expect("metrics");
        if r.text().contains(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never had {n} requests in progress");
}

async fn assert_refused(app: &helpers::TestApp, id: &str) {
    let r = app
        .client
        .post(
            &app.url("/v1/transactions"),
            "application/json",
            tx(id).to_string(),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.retry_after().is_some(), "503 without Retry-After");
    let body: Value = r.json().expect("a JSON error");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_request_bound_requests_are_refused_at_once_and_accepted_again_after() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |a| a.max_in_flight = Some(4)).await;
    assert_eq!(post_until_accepted(&app, "before", 1).await, 200);

    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(held_request(&app.base, 100).await);
    }
    // The held requests reach the server in their own time: wait until they are all in.
    wait_in_flight(&app, 4).await;
    assert_refused(&app, "during").await;
    // Health and metrics are exempt; metrics count the refusals and show the four in flight.
    let health = app.get("/healthz").await;
    assert_eq!(health.0, 200);
    let metrics = app.client.get(&app.url("/metrics")).await.expect("metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(text.contains("ringfence_requests_in_flight 4"), "{text}");
    let overloaded: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ringfence_overloaded_total "))
        .and_then(|v| v.parse().ok())
        .expect("overloaded counter");
    assert!(overloaded >= 1.0, "{overloaded}");

    drop(held);
    assert_eq!(post_until_accepted(&app, "after", 200).await, 200);
    // Nothing refused was stored.
    assert_eq!(app.get("/v1/transactions/during").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_body_byte_bound_requests_with_bodies_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |a| {
        a.max_body_bytes = Some(32 * 1024);
        a.max_body_in_flight = Some(64 * 1024);
    })
    .await;
    // Two held requests declare 32 KiB each: all the body budget.
    let held = vec![
        held_request(&app.base, 32 * 1024).await,
        held_request(&app.base, 32 * 1024).await,
    ];
    wait_in_flight(&app, 2).await;
    assert_refused(&app, "during").await;
    // A request without a body holds no body bytes: still admitted.
    assert_eq!(app.get("/v1/rules").await.0, 200);
    drop(held);
    assert_eq!(post_until_accepted(&app, "after", 200).await, 200);
}

#[test]
fn a_body_budget_below_the_body_limit_is_a_config_error() {
    let args = ringfence::config::ServeArgs {
        max_body_bytes: Some(1 << 20),
        max_body_in_flight: Some(1 << 10),
        ..Default::default()
    };
    let e = ringfence::config::Settings::resolve(&args).expect_err("refused");
    assert!(e.to_string().contains("max_body_in_flight"), "{e}");
}
