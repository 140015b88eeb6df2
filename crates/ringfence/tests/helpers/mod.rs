//! Test helpers: a real server on 127.0.0.1:0 with its own data directory.

#![allow(dead_code)]

pub mod certs;
pub mod receiver;
pub mod services;
pub mod smtp;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringfence::client::{HttpClient, HttpResponse};
use ringfence::config::{Secret, ServeArgs, Settings};
use ringfence::startup::Application;
use serde_json::Value;

/// A running server.
pub struct TestApp {
    pub base: String,
    pub client: HttpClient,
    pub data: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// Starts a server on `data` with `rules` (built-in defaults when `None`).
pub async fn spawn_app_at(data: &Path, rules: Option<PathBuf>) -> TestApp {
    spawn_app_with(data, |args| args.rules = rules).await
}

/// The administrator key every test server accepts (`--admin-key`); `TestApp.client` sends it.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";

/// The test defaults (port 0, `data`, a fixed card-hash key, [`ADMIN_KEY`]) with `configure`
/// applied.
fn settings_for(data: &Path, configure: impl FnOnce(&mut ServeArgs)) -> Settings {
    let mut args = ServeArgs {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        data: Some(data.to_owned()),
        card_hash_key: Some(Secret::new("test-card-hash-key-0123456789abcdef")),
        admin_key: Some(Secret::new(ADMIN_KEY)),
        ..ServeArgs::default()
    };
    configure(&mut args);
    Settings::resolve(&args).expect("settings")
}

/// Starts a server on `data`, with flags set by `configure` over the test defaults.
pub async fn spawn_app_with(data: &Path, configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    let app = Application::build(settings_for(data, configure))
        .await
        .expect("app builds");
    serve(app, data)
}

/// Starts a `ringfence worker` on `data`: the server plus a consumer of the Redis stream.
pub async fn spawn_worker_with(
    data: &Path,
    stream: ringfence::ingest::redis_stream::StreamConfig,
    configure: impl FnOnce(&mut ServeArgs),
) -> TestApp {
    let app = Application::build(settings_for(data, configure))
        .await
        .expect("app builds")
        .with_stream_worker(stream)
        .expect("worker");
    serve(app, data)
}

/// Starts a `ringfence worker --kafka` on `data`: the server plus a Kafka consumer group member.
pub async fn spawn_kafka_worker_with(
    data: &Path,
    kafka: ringfence::ingest::kafka::KafkaConfig,
    configure: impl FnOnce(&mut ServeArgs),
) -> TestApp {
    let app = Application::build(settings_for(data, configure))
        .await
        .expect("app builds")
        .with_kafka_worker(kafka)
        .expect("worker");
    serve(app, data)
}

fn serve(app: Application, data: &Path) -> TestApp {
    // `https://` when the test gave a certificate (its client then needs the CA).
    let base = app.base_url();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    TestApp {
        base,
        client: HttpClient::new()
            .with_timeout(Duration::from_secs(20))
            .with_bearer(ADMIN_KEY),
        data: data.to_owned(),
        stop: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The administrator key `client` sends.
    pub fn admin_key(&self) -> &'static str {
        ADMIN_KEY
    }

    /// Creates user `name` with `role` through the API; returns the password.
    pub async fn create_user(&self, name: &str, role: &str) -> String {
        let password = format!("pw-{name}-{role}-0123456789");
        let (status, body) = self
            .post_json(
                "/v1/users",
                &serde_json::json!({"name": name, "password": password, "role": role}),
            )
            .await;
        assert_eq!(status, 201, "creating user {name}: {body}");
        password
    }

    /// Creates an API key with `role` through the API; returns the key.
    pub async fn create_key(&self, name: &str, role: &str) -> String {
        let (status, body) = self
            .post_json("/v1/keys", &serde_json::json!({"name": name, "role": role}))
            .await;
        assert_eq!(status, 201, "creating key {name}: {body}");
        body["key"].as_str().expect("key").to_owned()
    }

    pub async fn post(&self, path: &str, body: &str) -> HttpResponse {
        self.client
            .post(&self.url(path), "application/json", body.to_owned())
            .await
            .expect("request")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.post(path, &body.to_string()).await;
        let v = r.json::<Value>().unwrap_or(Value::Null);
        (r.status, v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(&self.url(path)).await.expect("request");
        let v = r.json::<Value>().unwrap_or(Value::Null);
        (r.status, v)
    }

    /// A GET's body as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(&self.url(path))
            .await
            .expect("request")
            .text()
    }

    /// Stops the server and waits until it has let go of its data directory.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

/// The i-th transaction of a mixed stream (few users, cards, devices: velocity, shared-device
/// and ring rules fire), ids `<prefix>-<i>`, event times from `<hour>:00:00` on 2026-11-20.
pub fn mixed_tx(prefix: &str, hour: u32, i: usize) -> Value {
    serde_json::json!({
        "transaction_id": format!("{prefix}-{i}"),
        "timestamp": format!("2026-11-20T{hour:02}:{:02}:{:02}Z", (i / 60) % 60, i % 60),
        "user_id": format!("u{}", i % 7),
        "card_id": format!("c{}", i % 11),
        "device_id": format!("d{}", i % 4),
        "amount": 5 + (i * 53) % 600,
        "merchant": format!("m{}", i % 3),
    })
}

/// Posts `tx` to `/v1/transactions`: status, JSON body, `Retry-After`.
pub async fn post_tx(app: &TestApp, tx: &Value) -> (u16, Value, Option<String>) {
    let r = app.post("/v1/transactions", &tx.to_string()).await;
    let retry_after = r.header("retry-after").map(str::to_owned);
    let v = r.json::<Value>().unwrap_or(Value::Null);
    (r.status, v, retry_after)
}

/// Posts `n` transactions `mixed_tx(prefix, 12, *next)` and on, each of which must be
/// accepted; their ids are added to `acked`.
pub async fn post_accepted(
    app: &TestApp,
    prefix: &str,
    n: usize,
    acked: &mut Vec<String>,
    next: &mut usize,
) {
    for _ in 0..n {
        let tx = mixed_tx(prefix, 12, *next);
        *next += 1;
        let (status, body, _) = post_tx(app, &tx).await;
        assert_eq!(status, 200, "{body}");
        acked.push(tx["transaction_id"].as_str().expect("id").to_owned());
    }
}

/// Every id in `acked` reads back as a stored transaction.
pub async fn assert_all_stored(app: &TestApp, acked: &[String]) {
    for id in acked {
        let (status, stored) = app.get(&format!("/v1/transactions/{id}")).await;
        assert_eq!(status, 200, "acknowledged {id} is not stored: {stored}");
    }
}

/// A server started again on `data` holds exactly `transactions` stored transactions.
pub async fn assert_stored_after_restart(data: &Path, transactions: u64) {
    let app = spawn_app_at(data, None).await;
    let (_, stats) = app.get("/v1/stats").await;
    assert_eq!(stats["stored"]["transactions"], transactions, "{stats}");
    app.stop().await;
}

/// Posts `mixed_tx(prefix, 12, *next)` and on until one is refused with 503 `code` and a
/// `Retry-After` (within 60 s), and returns that refusal; the ids acknowledged meanwhile are
/// added to `acked`. A 503 `overloaded` on the way is waited out; any other answer fails.
pub async fn post_until_refused(
    app: &TestApp,
    prefix: &str,
    code: &str,
    acked: &mut Vec<String>,
    next: &mut usize,
) -> Value {
    let began = std::time::Instant::now();
    while began.elapsed() < Duration::from_secs(60) {
        let tx = mixed_tx(prefix, 12, *next);
        *next += 1;
        let (status, body, retry_after) = post_tx(app, &tx).await;
        match status {
            200 => acked.push(tx["transaction_id"].as_str().expect("id").to_owned()),
            503 if body["error"]["code"] == "overloaded" && code != "overloaded" => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            503 => {
                assert_eq!(body["error"]["code"], code, "{body}");
                assert!(retry_after.is_some(), "503 without Retry-After: {body}");
                return body;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    panic!("no 503 {code} within 60 s");
}

/// Posts `tx` until it is accepted: every answer before is a 503, for at most 30 s (`why`
/// says what should have ended the refusals).
pub async fn post_until_accepted_again(app: &TestApp, tx: &Value, why: &str) {
    let began = std::time::Instant::now();
    loop {
        let (status, body, _) = post_tx(app, tx).await;
        if status == 200 {
            return;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "still refused 30 s after {why}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fields two decisions of the same transaction must agree on.
pub fn decision_essence(d: &Value) -> Value {
    serde_json::json!([
        d["transaction_id"],
        d["decision"],
        d["score"],
        d["reasons"],
        d["alert"]
    ])
}

/// A photo fetched by `scripts/test-assets`; fails (never skips) when it is missing.
pub fn test_asset(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("RINGFENCE_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-assets"));
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "test photo {} is missing ({e}): run scripts/test-assets to fetch it",
            path.display()
        )
    })
}

/// Replays the shared log's `n` transactions, in its order, on a fresh single node (no Redis,
/// `card_hash_key`) and asserts each decision equals `answers[id]`; `body` gives a
/// transaction's JSON by id. Returns how many the single node flagged.
pub async fn assert_one_node_decides_alike(
    redis: &services::RedisServer,
    n: usize,
    card_hash_key: &str,
    answers: &std::collections::HashMap<String, Value>,
    body: impl Fn(&str) -> Value,
) -> usize {
    let order = redis.log_transaction_order().await;
    assert_eq!(order.len(), n, "each transaction applied once");
    let dir = tempfile::tempdir().expect("dir");
    let single = spawn_app_with(dir.path(), |a| {
        a.card_hash_key = Some(Secret::new(card_hash_key))
    })
    .await;
    let mut flagged = 0;
    for id in &order {
        let (status, d) = single.post_json("/v1/transactions", &body(id)).await;
        assert_eq!(status, 200, "{d}");
        assert_eq!(decision_essence(&answers[id]), decision_essence(&d), "{id}");
        flagged += usize::from(d["decision"] != "approve");
    }
    single.stop().await;
    flagged
}

/// A `ringfence` started as a separate process, and its base URL; killed when dropped.
pub struct Proc {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the `ringfence` binary with `args` plus `--listen` (a free port) and `--data`, the
/// shared card hash key and the admin key, and waits until it answers `/healthz`.
pub async fn start_process(args: &[&str], data: &Path, card_hash_key: &str) -> Proc {
    let port = services::free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ringfence"))
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(data)
        .env("RINGFENCE_CARD_HASH_KEY", card_hash_key)
        .env("RINGFENCE_ADMIN_KEY", ADMIN_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ringfence");
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, &format!("{args:?}")).await;
    Proc { child, base }
}

/// Waits (up to 60 s) until the server at `base` answers `GET /healthz` with 200; `what`
/// names it in the failure.
pub async fn wait_healthy(base: &str, what: &str) {
    let client = HttpClient::new().with_timeout(Duration::from_secs(2));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while client
        .get(&format!("{base}/healthz"))
        .await
        .map(|r| r.status)
        .ok()
        != Some(200)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rules for the alert sink tests (webhooks, e-mail): 1000 or more blocks (category `amount`),
/// 500 or more is reviewed (category `large`), less is approved.
pub const AMOUNT_RULES: &str = r#"
[[rule]]
name = "huge_amount"
description = "test: a huge amount"
category = "amount"
when = "tx.amount >= 1000"
score = 95
reason = "the amount {tx.amount} is 1000 or more"

[[rule]]
name = "large_amount"
description = "test: a large amount"
category = "large"
when = "tx.amount >= 500 && tx.amount < 1000"
score = 55
reason = "the amount {tx.amount} is 500 or more"
"#;
