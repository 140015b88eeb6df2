//! Several `serve` nodes on one Redis act as one: their decisions equal a single node's over
//! the same transactions in the shared log's order, whether the traffic alternates between
//! them or hits both at once. When Redis is unreachable a node degrades (decides on its own
//! state, marks the decision, appends the transaction to the log later) or fails closed.

mod helpers;

use helpers::services::RedisServer;
use helpers::{spawn_app_with, TestApp};
use ringfence::config::Secret;
use serde_json::Value;

fn tx(i: usize) -> Value {
    helpers::mixed_tx("mn", 10, i)
}

async fn node(dir: &std::path::Path, redis: Option<String>) -> TestApp {
    spawn_app_with(dir, |a| a.redis = redis.map(Secret::new)).await
}

/// An entity's features without the ones measured against the wall clock at read time.
fn state(entity: &Value) -> Value {
    let mut f = entity["features"].clone();
    if let Some(m) = f.as_object_mut() {
        m.retain(|k, _| !k.ends_with("secs_since_last"));
    }
    f
}

fn essence(d: &Value) -> Value {
    helpers::decision_essence(d)
}

async fn log_order(server: &RedisServer) -> Vec<String> {
    server
        .log_entries()
        .await
        .iter()
        // Rules and models entries carry no transaction.
        .filter_map(|entry| entry["tx"]["transaction_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_decide_as_one_node() {
    let server = RedisServer::start_with(&["--appendonly", "yes"]);
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = node(da.path(), Some(server.url())).await;
    let b = node(db.path(), Some(server.url())).await;

    // Alternating, one at a time, then both at once.
    let mut answers = std::collections::HashMap::new();
    for i in 0..80 {
        let target = if i % 2 == 0 { &a } else { &b };
        let (status, d) = target.post_json("/v1/transactions", &tx(i)).await;
        assert_eq!(status, 200, "{d}");
        answers.insert(format!("mn-{i}"), d);
    }
    let (ra, rb) = tokio::join!(
        async {
            let mut out = Vec::new();
            for i in (80..200).filter(|i| i % 2 == 0) {
                out.push(a.post_json("/v1/transactions", &tx(i)).await);
            }
            out
        },
        async {
            let mut out = Vec::new();
            for i in (80..200).filter(|i| i % 2 == 1) {
                out.push(b.post_json("/v1/transactions", &tx(i)).await);
            }
            out
        }
    );
    for (status, d) in ra.into_iter().chain(rb) {
        assert_eq!(status, 200, "{d}");
        answers.insert(d["transaction_id"].as_str().expect("id").to_owned(), d);
    }

    // One node, no Redis, the same transactions in the log's order.
    let order = log_order(&server).await;
    assert_eq!(order.len(), 200);
    let ds = tempfile::tempdir().expect("dir");
    let single = node(ds.path(), None).await;
    let mut flagged = 0;
    for id in &order {
        let i: usize = id["mn-".len()..].parse().expect("index");
        let (status, d) = single.post_json("/v1/transactions", &tx(i)).await;
        assert_eq!(status, 200);
        assert_eq!(essence(&answers[id]), essence(&d), "{id}");
        flagged += usize::from(d["decision"] != "approve");
    }
    assert!(
        flagged > 10,
        "the traffic must exercise the rules ({flagged} flagged)"
    );
    // Both nodes follow the log: an entity read on either comes to match the single node
    // (each applies the other's last entries within a poll of the log).
    let (_, there) = single.get("/v1/entities/user/u3").await;
    for app in [&a, &b] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (_, here) = app.get("/v1/entities/user/u3").await;
            if state(&here) == state(&there) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} vs {}",
                state(&here),
                state(&there)
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // The escalation ladder's counts are the ones in Redis: for every account, the count key
    // holds its alerts (all in one escalation window here), as the ladder counts them.
    let mut con = redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut accounts_checked = 0;
    for user in 0..7 {
        let account = format!("u{user}");
        let alerts = answers
            .values()
            .filter(|d| d["account"] == account.as_str() && d["alert"] == true)
            .count();
        if alerts == 0 {
            continue;
        }
        accounts_checked += 1;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let count: Option<usize> = redis::cmd("GET")
                .arg(format!("fraud:count:sender:{account}"))
                .query_async(&mut con)
                .await
                .expect("GET");
            if count == Some(alerts) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{account}: redis says {count:?}, the ladder counted {alerts}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    assert!(
        accounts_checked >= 3,
        "{accounts_checked} accounts with alerts"
    );

    // A node started later rebuilds from the log and agrees at once.
    let dc = tempfile::tempdir().expect("dir");
    let c = node(dc.path(), Some(server.url())).await;
    let (_, late) = c.get("/v1/entities/device/d1").await;
    let (_, there) = single.get("/v1/entities/device/d1").await;
    assert_eq!(state(&late), state(&there));
    for app in [a, b, c, single] {
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_node_degrades_or_fails_closed() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes"]);
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let degrading = node(da.path(), Some(server.url())).await;
    let url = server.url();
    let closed = spawn_app_with(db.path(), |a| {
        a.redis = Some(Secret::new(url.clone()));
        a.redis_unavailable = Some("fail-closed".into());
    })
    .await;
    let (status, d) = degrading.post_json("/v1/transactions", &tx(0)).await;
    assert_eq!(status, 200, "{d}");
    assert!(d.get("degraded").is_none(), "{d}");

    server.stop();
    let (status, d) = degrading.post_json("/v1/transactions", &tx(1)).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["degraded"], true, "{d}");
    let (status, d) = closed.post_json("/v1/transactions", &tx(2)).await;
    assert_eq!(status, 503, "{d}");
    assert_eq!(d["error"]["code"], "shared_state_unavailable", "{d}");
    // Nothing was recorded for the refused one: it can be sent again later.
    let (status, _) = closed.get("/v1/transactions/mn-2").await;
    assert_eq!(status, 404);

    server.resume();
    // The node appends the degraded transaction once Redis is back, off the request path.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log_order(&server).await != ["mn-0", "mn-1"] {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            log_order(&server).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, d) = degrading.post_json("/v1/transactions", &tx(3)).await;
    assert_eq!(status, 200, "{d}");
    assert!(d.get("degraded").is_none(), "{d}");
    assert_eq!(log_order(&server).await, ["mn-0", "mn-1", "mn-3"]);
    let (status, d) = closed.post_json("/v1/transactions", &tx(2)).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(log_order(&server).await, ["mn-0", "mn-1", "mn-3", "mn-2"]);
    degrading.stop().await;
    closed.stop().await;
}

/// Rules reloaded on one node are in force on every node from the same place in the log; a
/// node started later with other rules follows the log's, until its own file changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reloads_reach_every_node_through_the_log() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let rules = dir.path().join("rules.toml");
    let big = |over: u32| {
        format!(
            "[[rule]]\nname = \"big\"\nwhen = \"tx.amount > {over}\"\nscore = 90\nreason = \"amount {{tx.amount}}\"\n"
        )
    };
    std::fs::write(&rules, big(1000)).expect("write");
    let (da, db, dc) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let url = server.url();
    let a = spawn_app_with(da.path(), |s| {
        s.redis = Some(Secret::new(url.clone()));
        s.rules = Some(rules.clone());
    })
    .await;
    // `b` has no rules file of its own (the built-in defaults), yet follows the log's.
    let b = node(db.path(), Some(url.clone())).await;
    let (_, v) = b.get("/v1/rules").await;
    assert_eq!(v["rules"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(decide(&b, "r1", 500).await["decision"], "approve");
    assert_eq!(decide(&b, "r2", 5000).await["decision"], "block");

    // The file changes on `a`; an explicit reload puts it in force everywhere, at once.
    std::fs::write(&rules, big(100)).expect("write");
    let r = a.post("/v1/rules/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(decide(&b, "r3", 500).await["decision"], "block");
    assert_eq!(decide(&a, "r4", 500).await["decision"], "block");
    let (_, v) = b.get("/v1/rules").await;
    assert_eq!(
        v["rules"][0]["when"], "tx.amount > 100",
        "b reports the rules in force: {v}"
    );

    // A node started now, with the defaults, scores with the log's rules.
    let c = node(dc.path(), Some(url.clone())).await;
    let (_, v) = c.get("/v1/rules").await;
    assert_eq!(v["rules"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(decide(&c, "r5", 500).await["decision"], "block");

    // A broken file is refused where it is reloaded and reaches no node.
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"broken\"\nwhen = \"tx.amount >\"\nscore = 1\n",
    )
    .expect("write");
    let r = a.post("/v1/rules/reload", "").await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(decide(&c, "r6", 500).await["decision"], "block");

    for app in [a, b, c] {
        app.stop().await;
    }
}

async fn decide(app: &TestApp, id: &str, amount: u32) -> Value {
    let body = serde_json::json!({"transaction_id": id, "user_id": format!("user-{id}"), "amount": amount});
    app.post_json("/v1/transactions", &body).await.1
}
