//! Alert mails through the real server to an SMTP sink on loopback: only the chosen alerts
//! are mailed, with the subject, body and case link people read; a burst becomes one digest;
//! a relay that is down gets the mail once it is up; a permanent refusal is a dead letter a
//! retry sends.

mod helpers;

use std::path::Path;
use std::time::Duration;

use helpers::services::{free_port, PostgresServer};
use helpers::smtp::SmtpSink;
use helpers::{spawn_app_with, TestApp};
use serde_json::{json, Value};

async fn start(dir: &Path, port: u16, extra: &str) -> TestApp {
    start_with(dir, port, extra, None).await
}

async fn start_with(dir: &Path, port: u16, extra: &str, postgres: Option<String>) -> TestApp {
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, helpers::AMOUNT_RULES).expect("rules");
    let config = dir.join("ringfence.toml");
    std::fs::write(
        &config,
        format!(
            "public_url = \"https://rf.example/\"\n[email]\nurl = \"smtp://127.0.0.1:{port}\"\nfrom = \"Ringfence <ringfence@rf.example>\"\nto = [\"soc@rf.example\", \"lead@rf.example\"]\n{extra}\n"
        ),
    )
    .expect("config");
    spawn_app_with(&dir.join("data"), |a| {
        a.rules = Some(rules);
        a.config = Some(config);
        a.postgres = postgres.map(ringfence::config::Secret::new);
    })
    .await
}

fn tx(id: &str, amount: f64) -> Value {
    json!({
        "transaction_id": id,
        "user_id": format!("user-{id}"),
        "card_number": "4111111111111111",
        "amount": amount,
        "merchant": "Online Store",
        "country": "GB",
    })
}

async fn pay(app: &TestApp, id: &str, amount: f64) -> Value {
    let (status, d) = app.post_json("/v1/transactions", &tx(id, amount)).await;
    assert_eq!(status, 200, "{d}");
    d
}

async fn metric(app: &TestApp, line_start: &str) -> f64 {
    let r = app.client.get(&app.url("/metrics")).await.expect("metrics");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The id of the stored alert of transaction `tx` (what the dashboard opens).
async fn alert_id(app: &TestApp, tx: &str) -> i64 {
    let (_, v) = app.get("/v1/alerts?limit=1000").await;
    v["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["transaction_id"] == tx))
        .and_then(|x| x["id"].as_i64())
        .unwrap_or_else(|| panic!("no alert for {tx} in {v}"))
}

#[tokio::test]
async fn chosen_alerts_are_mailed_with_subject_body_and_a_link_to_the_case() {
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let app = start(dir.path(), sink.port, "interval_secs = 0").await;

    assert_eq!(pay(&app, "m-1", 1500.0).await["decision"], "block");
    let mails = sink.wait_for(1).await;
    let m = &mails[0];
    assert_eq!(m.from, "ringfence@rf.example");
    assert_eq!(m.to, vec!["soc@rf.example", "lead@rf.example"]);
    assert_eq!(
        m.header("Subject"),
        "[Ringfence] block: amount alert on user-m-1 (score 95)"
    );
    assert!(
        m.header("To").contains("soc@rf.example") && m.header("To").contains("lead@rf.example")
    );
    let body = m.body();
    let id = alert_id(&app, "m-1").await;
    for want in [
        "Transaction: m-1",
        "Amount:      1500.00 (GB)",
        "Account:     user-m-1",
        "- the amount 1500 is 1000 or more",
        &format!("Case:        https://rf.example/#/alerts/{id}"),
    ] {
        assert!(body.contains(want), "`{want}` missing from:\n{body}");
    }
    assert!(
        !m.data.contains("4111111111111111"),
        "raw card number mailed"
    );

    // A review (not chosen: the default is blocks only) and an approval are not mailed; the
    // block after them is, alone.
    assert_eq!(pay(&app, "m-2", 600.0).await["decision"], "review");
    assert_eq!(pay(&app, "m-3", 10.0).await["decision"], "approve");
    assert_eq!(pay(&app, "m-4", 2500.0).await["decision"], "block");
    let mails = sink.wait_for(2).await;
    assert_eq!(mails.len(), 2);
    assert_eq!(
        mails[1].header("Subject"),
        "[Ringfence] block: amount alert on user-m-4 (score 95)"
    );
    assert!(!mails[1].body().contains("m-2"), "a review was mailed");
    assert_eq!(
        metric(
            &app,
            "ringfence_alert_deliveries_total{sink=\"email\",outcome=\"mail\"}"
        )
        .await,
        2.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_alerts_becomes_one_digest() {
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().expect("dir");
    // Reviews too; a 5 s interval: the burst lands well within it.
    let app = start(
        dir.path(),
        sink.port,
        "interval_secs = 5\nmax_listed = 10\ndecisions = [\"review\", \"block\"]",
    )
    .await;
    pay(&app, "first", 1500.0).await;
    let mails = sink.wait_for(1).await;
    assert!(mails[0].header("Subject").contains("user-first"));

    // 30 alerts in one batch request, within the interval after the first mail.
    let body: String = (0..30)
        .map(|i| {
            tx(
                &format!("burst-{i}"),
                if i % 3 == 0 { 700.0 } else { 1500.0 },
            )
            .to_string()
                + "\n"
        })
        .collect();
    let r = app
        .client
        .post(
            &app.url("/v1/transactions/batch"),
            "application/x-ndjson",
            body,
        )
        .await
        .expect("batch");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let mails = sink.wait_for(2).await;
    assert_eq!(mails.len(), 2, "the burst was not one mail");
    let digest = &mails[1];
    assert_eq!(
        digest.header("Subject"),
        "[Ringfence] 30 alerts: 20 block, 10 review"
    );
    let text = digest.body();
    assert!(
        text.starts_with("Ringfence raised 30 alerts since its last mail"),
        "{text}"
    );
    assert_eq!(text.matches("Transaction: burst-").count(), 10, "{text}");
    assert!(
        text.contains("... and 20 more alert(s) not listed here"),
        "{text}"
    );
    assert_eq!(
        metric(
            &app,
            "ringfence_alert_deliveries_total{sink=\"email\",outcome=\"delivered\"}"
        )
        .await,
        31.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_relay_that_is_down_gets_the_mail_once_it_is_up() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("dir");
    let app = start(dir.path(), port, "interval_secs = 0").await;
    pay(&app, "late-1", 1500.0).await;
    // Wait until a send has failed (nothing listens yet).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while metric(
        &app,
        "ringfence_alert_deliveries_total{sink=\"email\",outcome=\"failed_attempt\"}",
    )
    .await
        < 1.0
    {
        assert!(std::time::Instant::now() < deadline, "no failed send seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sink = SmtpSink::start_on(port).await;
    let mails = sink.wait_for(1).await;
    assert_eq!(
        mails[0].header("Subject"),
        "[Ringfence] block: amount alert on user-late-1 (score 95)"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_refused_mail_is_a_dead_letter_that_a_retry_sends() {
    let sink = SmtpSink::start().await;
    sink.refuse_recipients(true);
    let dir = tempfile::tempdir().expect("dir");
    let app = start(dir.path(), sink.port, "interval_secs = 0").await;
    pay(&app, "refused-1", 1500.0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let dl = loop {
        let (_, v) = app.get("/v1/deliveries/dead-letters").await;
        let items = v["dead_letters"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() {
            break items;
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dl[0]["kind"], "email");
    assert_eq!(dl[0]["transaction_id"], "refused-1");
    assert_eq!(dl[0]["last_status"], 550);
    assert!(sink.mails().is_empty());

    sink.refuse_recipients(false);
    let id = dl[0]["id"].as_i64().expect("id");
    let (status, v) = app
        .post_json(
            &format!("/v1/deliveries/dead-letters/{id}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["delivered"], true, "{v}");
    let mails = sink.wait_for(1).await;
    assert!(mails[0].header("Subject").contains("user-refused-1"));
    app.stop().await;
}

#[tokio::test]
async fn in_production_mode_the_link_is_the_alert_every_node_shows() {
    let pg = PostgresServer::start();
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let app = start_with(dir.path(), sink.port, "interval_secs = 0", Some(pg.url())).await;
    // Approvals first: PostgreSQL's alert id (the transaction's sequence number there) then
    // differs from the id this node's buffer gave the alert (1).
    for i in 0..3 {
        pay(&app, &format!("pg-ok-{i}"), 10.0).await;
    }
    pay(&app, "pg-mail-1", 1500.0).await;
    let mails = sink.wait_for(1).await;
    // The id the dashboard lists (from PostgreSQL), not this node's buffer's.
    let id = alert_id(&app, "pg-mail-1").await;
    assert_ne!(id, 1, "the test cannot tell the two ids apart");
    let body = mails[0].body();
    assert!(
        body.contains(&format!(
            "Case:        https://rf.example/#/alerts/{id}\r\n"
        )),
        "{body}"
    );
    app.stop().await;
}
