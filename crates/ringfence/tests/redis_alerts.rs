//! Alerts reach a real Redis in the fraud team's layout: the accounts set, the latest alert
//! per account as JSON, the per-account count, and the pub/sub channels; with a password or
//! an ACL user; and alerts raised while Redis is down arrive once it is back.

mod helpers;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use helpers::services::RedisServer;
use helpers::spawn_app_with;
use ringfence::config::Secret;
use serde_json::Value;

const RING_1: &str = r#"{"user_id":"user-ring-1","card_id":"card-ring-1","device_id":"device-shared-123","amount":150.00,"merchant":"Online Store","country":"GB"}"#;
const RING_2: &str = r#"{"user_id":"user-ring-2","card_id":"card-ring-2","device_id":"device-shared-123","amount":150.00,"merchant":"Online Store","country":"GB"}"#;

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Polls `GET key` until it holds a value (alerts are written off the request path).
async fn wait_get(con: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(con)
            .await
            .expect("GET");
        if let Some(v) = v {
            return v;
        }
        assert!(Instant::now() < deadline, "{key} never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn alerts_land_in_the_fraud_teams_keys_and_channels() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pass"]);
    let url = format!("redis://:s3cret-pass@127.0.0.1:{}", server.port);
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |a| a.redis = Some(Secret::new(url.clone()))).await;

    // A subscriber on both the pattern and the all-alerts channel, as the fraud team runs.
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub
        .psubscribe("fraud:alerts:*")
        .await
        .expect("psubscribe");
    pubsub.subscribe("fraud_alerts").await.expect("subscribe");

    assert_eq!(app.post("/transaction", RING_1).await.status, 200);
    let second = app.post("/transaction", RING_2).await;
    assert_eq!(second.status, 200);
    let decision: Value = second.json().expect("json");
    assert_ne!(decision["decision"], "approve", "{decision}");

    let mut con = connect(&url).await;
    let latest: Value =
        serde_json::from_str(&wait_get(&mut con, "fraud:alerts:sender:user-ring-2").await)
            .expect("alert JSON");
    assert_eq!(latest["sender_account_id"], "user-ring-2");
    assert_eq!(latest["velocity_count"], 1);
    assert_eq!(latest["amount"], 150.0);
    assert_eq!(latest["region"], "GB");
    assert_eq!(latest["alert_type"], "ring");
    assert_eq!(latest["transaction_id"], decision["transaction_id"]);
    assert!(latest["alert_timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let count: String = wait_get(&mut con, "fraud:count:sender:user-ring-2").await;
    assert_eq!(count, "1");
    let members: i64 = redis::cmd("SCARD")
        .arg("fraud:alerts:accounts")
        .query_async(&mut con)
        .await
        .expect("SCARD");
    assert_eq!(members, 1, "the approved first user raised no alert");

    // Both subscriptions saw it: once on the typed channel, once on `fraud_alerts`.
    let mut channels = Vec::new();
    let mut stream = pubsub.on_message();
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a message within 10 s")
            .expect("stream open");
        let body: Value = serde_json::from_str(&msg.get_payload::<String>().expect("payload"))
            .expect("JSON payload");
        assert_eq!(body["sender_account_id"], "user-ring-2");
        channels.push(msg.get_channel_name().to_owned());
    }
    channels.sort();
    assert_eq!(channels, ["fraud:alerts:ring", "fraud_alerts"]);

    // A third user on the same device: the second alert for a new account; the count of an
    // account grows with its own alerts.
    let third = RING_2.replace("user-ring-2", "user-ring-3");
    assert_eq!(app.post("/transaction", &third).await.status, 200);
    wait_get(&mut con, "fraud:alerts:sender:user-ring-3").await;
    let again = RING_2.replace("card-ring-2", "card-ring-2b");
    assert_eq!(app.post("/transaction", &again).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n: String = wait_get(&mut con, "fraud:count:sender:user-ring-2").await;
        if n == "2" {
            break;
        }
        assert!(Instant::now() < deadline, "count stayed {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let members: i64 = redis::cmd("SCARD")
        .arg("fraud:alerts:accounts")
        .query_async(&mut con)
        .await
        .expect("SCARD");
    assert_eq!(members, 2);

    // The password never reaches the metrics page, the stats or the server's answers.
    for path in ["/metrics", "/v1/stats"] {
        let r = app.client.get(&app.url(path)).await.expect("request");
        assert!(
            !r.text().contains("s3cret-pass"),
            "{path} leaks the password"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_acl_user_works_and_alerts_wait_for_redis_to_come_back() {
    let mut server = RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "ringfence",
        "on",
        ">acl-pass-42",
        "~fraud:*",
        "~ringfence:*",
        "&fraud*",
        "+@all",
    ]);
    let url = format!("redis://ringfence:acl-pass-42@127.0.0.1:{}", server.port);
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |a| a.redis = Some(Secret::new(url.clone()))).await;
    assert_eq!(app.post("/transaction", RING_1).await.status, 200);
    assert_eq!(app.post("/transaction", RING_2).await.status, 200);
    let mut con = connect(&url).await;
    wait_get(&mut con, "fraud:alerts:sender:user-ring-2").await;

    // Redis goes away: decisions keep flowing without waiting for it.
    server.stop();
    let third = RING_2.replace("user-ring-2", "user-ring-3");
    let r = app.post("/transaction", &third).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Back (empty: persistence is off in tests): the queued alert is written.
    server.resume();
    let mut con = connect(&url).await;
    let latest: Value =
        serde_json::from_str(&wait_get(&mut con, "fraud:alerts:sender:user-ring-3").await)
            .expect("JSON");
    assert_eq!(latest["sender_account_id"], "user-ring-3");
    let text = app
        .client
        .get(&app.url("/metrics"))
        .await
        .expect("metrics")
        .text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("ringfence_redis_alerts_failures_total ") && !l.ends_with(" 0")),
        "the failed attempts are counted"
    );
    assert!(!text.contains("acl-pass-42"));
    app.stop().await;
}

/// An alert is committed with its decision, in the node's outbox: a node stopped while Redis
/// is down delivers it when it runs again, nothing lost; so is a transaction it decided on its
/// own state meanwhile, owed to the shared log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_raised_while_redis_is_down_survive_a_restart_of_the_node() {
    let mut server = RedisServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(dir.path(), |a| a.redis = Some(Secret::new(url.clone()))).await;
    assert_eq!(app.post("/transaction", RING_1).await.status, 200);

    server.stop();
    let r = app.post("/transaction", RING_2).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let decision: Value = r.json().expect("json");
    assert_ne!(decision["decision"], "approve", "{decision}");
    app.stop().await; // the alert cannot leave: Redis is down

    server.resume();
    let mut con = connect(&url).await;
    let none: Option<String> = redis::cmd("GET")
        .arg("fraud:alerts:sender:user-ring-2")
        .query_async(&mut con)
        .await
        .expect("GET");
    assert!(none.is_none(), "not delivered before the node runs again");
    let again = spawn_app_with(dir.path(), |a| a.redis = Some(Secret::new(url.clone()))).await;
    let latest: Value =
        serde_json::from_str(&wait_get(&mut con, "fraud:alerts:sender:user-ring-2").await)
            .expect("JSON");
    assert_eq!(latest["transaction_id"], decision["transaction_id"]);
    assert_eq!(
        wait_get(&mut con, "fraud:count:sender:user-ring-2").await,
        "1"
    );
    // The transaction decided while the log was unreachable is owed to it, durably: the node
    // appends it after the restart, so every node's state gets it.
    let id = decision["transaction_id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if server
            .log_entries()
            .await
            .iter()
            .any(|e| e["tx"]["transaction_id"] == id.as_str())
        {
            break;
        }
        assert!(Instant::now() < deadline, "{id} never reached the log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    again.stop().await;
}
