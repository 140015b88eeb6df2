//! A stand-in for the Ringfence API in unit tests: decides by amount, answers 503 on every
//! `reject_every`-th request, and counts what it received.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the stub saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub requests: AtomicU64,
    pub transactions: AtomicU64,
    pub with_timestamp: AtomicU64,
    /// Ids of the single transactions answered with a decision.
    pub accepted_ids: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Stub {
    seen: Arc<Seen>,
    reject_every: u64,
}

fn decide(stub: &Stub, tx: &Value) -> Value {
    stub.seen.transactions.fetch_add(1, Ordering::Relaxed);
    if tx.get("timestamp").is_some() {
        stub.seen.with_timestamp.fetch_add(1, Ordering::Relaxed);
    }
    let amount = tx.get("amount").and_then(Value::as_f64).unwrap_or(0.0);
    let decision = if !(2.0..=400.0).contains(&amount) {
        "block"
    } else if amount > 250.0 {
        "review"
    } else {
        "approve"
    };
    json!({
        "transaction_id": tx.get("transaction_id").cloned().unwrap_or(Value::Null),
        "decision": decision,
        "score": 10.0,
        "reasons": [],
        "alert": decision == "block",
        "processing_us": 5,
    })
}

fn rejected(stub: &Stub) -> bool {
    let n = stub.seen.requests.fetch_add(1, Ordering::Relaxed) + 1;
    stub.reject_every > 0 && n % stub.reject_every == 0
}

async fn single(State(stub): State<Stub>, Json(tx): Json<Value>) -> (StatusCode, Json<Value>) {
    if rejected(&stub) {
        let body = json!({"error": {"code": "overloaded", "message": "busy"}});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    if let (Some(id), Ok(mut ids)) = (
        tx.get("transaction_id").and_then(Value::as_str),
        stub.seen.accepted_ids.lock(),
    ) {
        ids.push(id.to_owned());
    }
    (StatusCode::OK, Json(decide(&stub, &tx)))
}

async fn batch(State(stub): State<Stub>, Json(txs): Json<Vec<Value>>) -> (StatusCode, Json<Value>) {
    if rejected(&stub) {
        let body = json!({"error": {"code": "overloaded", "message": "busy"}});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    let out: Vec<Value> = txs
        .iter()
        .enumerate()
        .map(|(i, tx)| {
            if tx.get("amount").is_some() {
                decide(&stub, tx)
            } else {
                json!({"index": i, "error": {"code": "invalid", "field": "amount", "message": "is required"}})
            }
        })
        .collect();
    (StatusCode::OK, Json(Value::Array(out)))
}

/// Starts the stub on `127.0.0.1:0`; returns its base URL and its counters.
pub(crate) async fn spawn(reject_every: u64) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/v1/transactions", post(single))
        .route("/v1/transactions/batch", post(batch))
        .with_state(Stub {
            seen: Arc::clone(&seen),
            reject_every,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}
