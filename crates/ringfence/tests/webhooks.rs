//! Webhooks through the real server to a receiver on loopback: the signature verifies
//! (computed here independently), only the chosen alerts go, a receiver failing twice gets
//! the alert once with one delivery id, one that always fails leaves a dead letter that a
//! retry delivers, a 400 is not retried, the Slack format, a stuck receiver holds up nothing
//! else, and delivery resumes after a restart without losing an alert.

mod helpers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use helpers::receiver::{Received, Receiver};
use helpers::{spawn_app_with, TestApp};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "whsec_0123456789abcdef";

/// Writes the rules and a config file with `webhooks` (TOML) into `dir`.
fn setup(dir: &Path, webhooks: &str) -> (PathBuf, PathBuf) {
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, helpers::AMOUNT_RULES).expect("rules");
    let config = dir.join("ringfence.toml");
    std::fs::write(&config, webhooks).expect("config");
    (rules, config)
}

async fn start(dir: &Path, webhooks: &str) -> TestApp {
    let (rules, config) = setup(dir, webhooks);
    spawn_app_with(&dir.join("data"), |a| {
        a.rules = Some(rules);
        a.config = Some(config);
    })
    .await
}

/// A transaction of its own user and card (so no velocity or escalation mixes in).
async fn pay(app: &TestApp, id: &str, amount: f64) -> Value {
    let (status, d) = app
        .post_json(
            "/v1/transactions",
            &json!({
                "transaction_id": id,
                "user_id": format!("user-{id}"),
                "card_number": "4111111111111111",
                "amount": amount,
                "merchant": "Online Store",
                "country": "GB",
            }),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    d
}

fn hook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[webhook]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nbackoff_ms = 10\nmax_backoff_ms = 50\n{extra}\n"
    )
}

/// The alert transaction a request carries.
fn tx_of(r: &Received) -> String {
    let v = r.json();
    v["alert"]["transaction_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no alert in {v}"))
        .to_owned()
}

fn delivered(got: &[Received], tx: &str) -> usize {
    got.iter()
        .filter(|r| r.answered < 300 && tx_of(r) == tx)
        .count()
}

/// Checks the `Ringfence-Signature` as a receiver would: HMAC-SHA256 over "<t>.<body>".
fn assert_signed(r: &Received) {
    let header = r.header("ringfence-signature");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("bad signature header `{header}`"));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.{}", r.body).as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "signature does not verify");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let t: i64 = t.parse().expect("t is a number");
    assert!((now - t).abs() < 300, "signed at {t}, now {now}");
}

async fn metric(app: &TestApp, line_start: &str) -> f64 {
    let r = app.client.get(&app.url("/metrics")).await.expect("metrics");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn dead_letters(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, v) = app
        .get(&format!("/v1/deliveries/dead-letters{query}"))
        .await;
    assert_eq!(status, 200, "{v}");
    v["dead_letters"].as_array().cloned().unwrap_or_default()
}

async fn wait_dead_letters(app: &TestApp, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = dead_letters(app, "").await;
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} dead letter(s), got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn alerts_arrive_signed_and_each_webhook_gets_only_what_it_chose() {
    let all = Receiver::start(200).await;
    let blocks = Receiver::start(200).await;
    let dir = tempfile::tempdir().expect("dir");
    let app = start(
        dir.path(),
        &format!(
            "{}{}",
            hook("all", &all.url, ""),
            hook(
                "blocks",
                &blocks.url,
                "decisions = [\"block\"]\ntypes = [\"amount\"]"
            )
        ),
    )
    .await;

    let big = pay(&app, "w-big", 1500.0).await;
    assert_eq!(big["decision"], "block", "{big}");
    let mid = pay(&app, "w-mid", 600.0).await;
    assert_eq!(mid["decision"], "review", "{mid}");
    let small = pay(&app, "w-small", 10.0).await;
    assert_eq!(small["decision"], "approve", "{small}");
    // A later block: once `blocks` has it, it has had everything before it.
    pay(&app, "w-big-2", 2000.0).await;

    let got = all
        .wait_until("both alerts and the later block", |g| g.len() >= 3)
        .await;
    let txs: Vec<String> = got.iter().map(tx_of).collect();
    assert_eq!(txs.len(), 3, "{txs:?}");
    for t in ["w-big", "w-mid", "w-big-2"] {
        assert!(txs.contains(&t.to_owned()), "{t} missing from {txs:?}");
    }
    assert!(!txs.contains(&"w-small".to_owned()), "an approval was sent");

    let got_blocks = blocks.wait_until("the two blocks", |g| g.len() >= 2).await;
    let block_txs: Vec<String> = got_blocks.iter().map(tx_of).collect();
    assert_eq!(block_txs.len(), 2, "{block_txs:?}");
    assert!(block_txs.contains(&"w-big".to_owned()) && block_txs.contains(&"w-big-2".to_owned()));

    let r = got.iter().find(|r| tx_of(r) == "w-big").expect("w-big");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("ringfence-event"), "alert");
    assert_signed(r);
    let body = r.json();
    assert_eq!(body["event"], "alert");
    assert_eq!(body["delivery_id"], r.header("ringfence-delivery"));
    assert!(r.header("ringfence-delivery").starts_with("dlv_"));
    assert_eq!(body["alert"]["decision"], "block");
    assert_eq!(body["alert"]["alert_type"], "amount");
    assert_eq!(body["alert"]["sender_account_id"], "user-w-big");
    assert_eq!(body["alert"]["amount"], 1500.0);
    assert!(
        body["alert"]["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("1000 or more"),
        "{body}"
    );
    for r in &got {
        assert!(!r.body.contains("4111111111111111"), "raw card number sent");
    }
    // The same alert to two webhooks: two delivery ids (a receiver behind both keeps both).
    let other = got_blocks
        .iter()
        .find(|r| tx_of(r) == "w-big")
        .expect("w-big to blocks");
    assert_ne!(
        other.header("ringfence-delivery"),
        r.header("ringfence-delivery")
    );
    assert_eq!(
        metric(
            &app,
            "ringfence_alert_deliveries_total{sink=\"webhook:all\",outcome=\"delivered\"}"
        )
        .await,
        3.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_alert_once_with_one_delivery_id() {
    let rx = Receiver::start(200).await;
    rx.script(&[503, 429]);
    let dir = tempfile::tempdir().expect("dir");
    let app = start(
        dir.path(),
        &hook("flaky", &rx.url, "attempts = 5\nconcurrency = 1"),
    )
    .await;
    pay(&app, "f-1", 1500.0).await;
    // With one in flight, the next alert goes only after the first is done.
    pay(&app, "f-2", 1500.0).await;
    let got = rx
        .wait_until("f-2 delivered", |g| delivered(g, "f-2") == 1)
        .await;
    let tries: Vec<&Received> = got.iter().filter(|r| tx_of(r) == "f-1").collect();
    assert_eq!(
        tries.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![503, 429, 200],
        "f-1 tries"
    );
    let id = tries[0].header("ringfence-delivery");
    assert!(tries.iter().all(|r| r.header("ringfence-delivery") == id));
    assert!(
        tries.iter().all(|r| r.body == tries[0].body),
        "the body changed between tries"
    );
    for r in &tries {
        assert_signed(r);
    }
    assert_eq!(delivered(&got, "f-1"), 1);
    assert!(dead_letters(&app, "").await.is_empty());
    assert_eq!(
        metric(
            &app,
            "ringfence_alert_deliveries_total{sink=\"webhook:flaky\",outcome=\"failed_attempt\"}"
        )
        .await,
        2.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_always_fails_leaves_a_dead_letter_that_a_retry_delivers() {
    let rx = Receiver::start(500).await;
    let dir = tempfile::tempdir().expect("dir");
    let app = start(dir.path(), &hook("down", &rx.url, "attempts = 3")).await;
    pay(&app, "d-1", 1500.0).await;

    let dl = wait_dead_letters(&app, 1).await;
    assert_eq!(dl.len(), 1, "{dl:?}");
    let d = &dl[0];
    assert_eq!(d["kind"], "webhook");
    assert_eq!(d["target"], "down");
    assert_eq!(d["transaction_id"], "d-1");
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["last_status"], 500);
    assert_eq!(d["state"], "dead");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap_or("")
            .starts_with("HTTP 500"),
        "{d}"
    );
    assert_eq!(d["alert"]["transaction_id"], "d-1");
    let payload: Value =
        serde_json::from_str(d["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(payload["alert"]["transaction_id"], "d-1");
    // The dead letter is written after the last try: exactly three.
    assert_eq!(rx.received().len(), 3);
    assert_eq!(metric(&app, "ringfence_alert_dead_letters ").await, 1.0);
    assert_eq!(
        metric(
            &app,
            "ringfence_alert_deliveries_total{sink=\"webhook:down\",outcome=\"dead_letter\"}"
        )
        .await,
        1.0
    );

    // Still failing: the retry says so and the record keeps the new answer.
    let id = d["id"].as_i64().expect("id");
    let (status, v) = app
        .post_json(
            &format!("/v1/deliveries/dead-letters/{id}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["delivered"], false);
    assert_eq!(v["dead_letter"]["attempts"], 4);
    assert_eq!(v["dead_letter"]["state"], "dead");

    // The receiver is back: the retry delivers it with the same delivery id, signed afresh.
    rx.answer(200);
    let (status, v) = app
        .post_json(
            &format!("/v1/deliveries/dead-letters/{id}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["delivered"], true, "{v}");
    assert_eq!(v["dead_letter"]["state"], "redelivered");
    assert_eq!(v["dead_letter"]["attempts"], 5);
    assert!(v["dead_letter"]["redelivered_at"].is_string());
    let got = rx.received();
    assert_eq!(got.len(), 5);
    let last = &got[4];
    assert_eq!(last.answered, 200);
    assert_eq!(
        last.header("ringfence-delivery"),
        got[0].header("ringfence-delivery")
    );
    assert_eq!(last.body, got[0].body);
    assert_signed(last);

    // Retrying a redelivered one sends nothing more.
    let (status, v) = app
        .post_json(
            &format!("/v1/deliveries/dead-letters/{id}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!((status, v["delivered"].clone()), (200, json!(true)));
    assert_eq!(rx.received().len(), 5);
    assert!(dead_letters(&app, "").await.is_empty());
    assert_eq!(dead_letters(&app, "?state=redelivered").await.len(), 1);
    assert_eq!(dead_letters(&app, "?state=all").await.len(), 1);
    assert_eq!(metric(&app, "ringfence_alert_dead_letters ").await, 0.0);

    // Bad input names its field.
    for (path, field) in [
        ("/v1/deliveries/dead-letters?state=gone", "state"),
        ("/v1/deliveries/dead-letters?limit=0", "limit"),
    ] {
        let (status, v) = app.get(path).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let (status, v) = app
        .post_json("/v1/deliveries/dead-letters/abc/retry", &json!({}))
        .await;
    assert_eq!(
        (status, v["error"]["field"].clone()),
        (400, json!("id")),
        "{v}"
    );
    let (status, v) = app
        .post_json("/v1/deliveries/dead-letters/9999/retry", &json!({}))
        .await;
    assert_eq!(status, 404, "{v}");
    app.stop().await;
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let rx = Receiver::start(200).await;
    rx.script(&[400]);
    let dir = tempfile::tempdir().expect("dir");
    let app = start(
        dir.path(),
        &hook("strict", &rx.url, "attempts = 5\nconcurrency = 1"),
    )
    .await;
    pay(&app, "b-1", 1500.0).await;
    pay(&app, "b-2", 1500.0).await;
    let got = rx
        .wait_until("b-2 delivered", |g| delivered(g, "b-2") == 1)
        .await;
    let tries: Vec<u16> = got
        .iter()
        .filter(|r| tx_of(r) == "b-1")
        .map(|r| r.answered)
        .collect();
    assert_eq!(tries, vec![400], "a 400 was tried again");
    let dl = wait_dead_letters(&app, 1).await;
    assert_eq!(dl[0]["transaction_id"], "b-1");
    assert_eq!(dl[0]["attempts"], 1);
    assert_eq!(dl[0]["last_status"], 400);
    assert!(dl[0]["last_error"]
        .as_str()
        .unwrap_or("")
        .contains("receiver says no"));
    app.stop().await;
}

#[tokio::test]
async fn the_slack_format_is_one_text_with_the_summary_and_reasons() {
    let rx = Receiver::start(200).await;
    let dir = tempfile::tempdir().expect("dir");
    let config = format!(
        "[[webhook]]\nname = \"slack\"\nurl = \"{}\"\nformat = \"slack\"\n",
        rx.url
    );
    let app = start(dir.path(), &config).await;
    pay(&app, "s-1", 1500.0).await;
    let got = rx.wait_until("the slack message", |g| !g.is_empty()).await;
    let body = got[0].json();
    let obj = body.as_object().expect("object");
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["text"], "{body}");
    let text = body["text"].as_str().expect("text");
    assert!(
        text.starts_with("*Ringfence block: amount alert on user-s-1 (score 95)*"),
        "{text}"
    );
    assert!(text.contains("1500.00 (GB)"), "{text}");
    assert!(text.contains("`s-1`"), "{text}");
    assert!(
        text.contains("Reasons: the amount 1500 is 1000 or more"),
        "{text}"
    );
    // No secret configured: no signature, still an event and a delivery id.
    assert_eq!(got[0].header("ringfence-signature"), "");
    assert_eq!(got[0].header("ringfence-event"), "alert");
    app.stop().await;
}

#[tokio::test]
async fn a_stuck_receiver_holds_up_neither_the_others_nor_decisions() {
    // Accepts connections and never answers.
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stuck_url = format!("http://{}/hook", stuck.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = stuck.accept().await {
            open.push(s);
        }
    });
    let fast = Receiver::start(200).await;
    let dir = tempfile::tempdir().expect("dir");
    let app = start(
        dir.path(),
        &format!(
            "{}{}",
            hook("stuck", &stuck_url, "timeout_ms = 60000\nconcurrency = 2"),
            hook("fast", &fast.url, "")
        ),
    )
    .await;
    for i in 0..6 {
        let d = pay(&app, &format!("k-{i}"), 1500.0).await;
        assert_eq!(d["decision"], "block");
    }
    let got = fast.wait_until("all six", |g| g.len() >= 6).await;
    for i in 0..6 {
        assert_eq!(delivered(&got, &format!("k-{i}")), 1);
    }
    // Shutdown gives up the hanging tries (they stay owed) instead of waiting for them.
    app.stop().await;
    held.abort();
}

#[tokio::test]
async fn delivery_resumes_after_a_restart_without_losing_an_alert() {
    let rx = Receiver::start(500).await;
    let dir = tempfile::tempdir().expect("dir");
    let config = hook("resume", &rx.url, "attempts = 100");
    let app = start(dir.path(), &config).await;
    for id in ["r-1", "r-2", "r-3"] {
        pay(&app, id, 1500.0).await;
    }
    rx.wait_until("tries of all three", |g| {
        ["r-1", "r-2", "r-3"]
            .iter()
            .all(|t| g.iter().any(|r| tx_of(r) == *t))
    })
    .await;
    app.stop().await;
    let before_restart = rx.received().len();
    assert!(
        rx.received().iter().all(|r| r.answered == 500),
        "nothing was delivered before the restart"
    );

    rx.answer(200);
    let app = start(dir.path(), &config).await;
    pay(&app, "r-4", 1500.0).await;
    let got = rx
        .wait_until("all four delivered", |g| {
            ["r-1", "r-2", "r-3", "r-4"]
                .iter()
                .all(|t| delivered(g, t) >= 1)
        })
        .await;
    for t in ["r-1", "r-2", "r-3", "r-4"] {
        assert_eq!(delivered(&got, t), 1, "{t} delivered more than once");
        let ids: std::collections::HashSet<&str> = got
            .iter()
            .filter(|r| tx_of(r) == t)
            .map(|r| r.header("ringfence-delivery"))
            .collect();
        assert_eq!(ids.len(), 1, "{t}: one delivery id across the restart");
    }
    assert!(got.len() > before_restart);
    assert!(dead_letters(&app, "?state=all").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn https_goes_through_tls_and_a_failed_handshake_is_retried_then_dead_lettered() {
    // A plain-HTTP receiver behind an https:// URL: the TLS handshake fails (no trusted
    // certificate, not TLS at all), which is a failure worth retrying, never a crash.
    let rx = Receiver::start(200).await;
    let url = rx.url.replace("http://", "https://");
    let dir = tempfile::tempdir().expect("dir");
    let app = start(dir.path(), &hook("tls", &url, "attempts = 2")).await;
    pay(&app, "t-1", 1500.0).await;
    let dl = wait_dead_letters(&app, 1).await;
    assert_eq!(dl[0]["attempts"], 2);
    assert!(dl[0]["last_status"].is_null(), "{}", dl[0]);
    let error = dl[0]["last_error"].as_str().unwrap_or("");
    assert!(!error.is_empty());
    assert!(
        !error.contains("/hook"),
        "the URL leaked into the error: {error}"
    );
    // It never reached the receiver as HTTP.
    assert!(rx.received().is_empty());
    eprintln!("tls failure: {error}");
    app.stop().await;
}
