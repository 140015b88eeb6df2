//! `ringfence worker` on a real Redis: stream entries are decided exactly as the same
//! transactions over HTTP, decisions land on the decisions stream, bad entries in the
//! dead-letter stream, and a crashed consumer's pending entries are claimed and decided once.

mod helpers;

use std::time::{Duration, Instant};

use helpers::services::RedisServer;
use helpers::{spawn_app_with, spawn_worker_with, TestApp};
use ringfence::config::Secret;
use ringfence::ingest::redis_stream::StreamArgs;
use serde_json::Value;

fn stream_args(consumer: &str, claim_idle_ms: u64) -> StreamArgs {
    StreamArgs {
        stream: "transactions".into(),
        group: Some("scorers".into()),
        consumer: Some(consumer.into()),
        decisions_stream: "decisions".into(),
        dead_letter_stream: None,
        batch: 7,
        claim_idle_ms,
    }
}

/// The i-th test transaction: three users sharing cards and a device, amounts that trip
/// velocity and ring rules along the way.
fn fields(i: usize) -> Vec<(String, String)> {
    vec![
        ("transaction_id".into(), format!("st-{i}")),
        (
            "timestamp".into(),
            format!("2026-11-20T10:{:02}:{:02}Z", i / 60, i % 60),
        ),
        ("user_id".into(), format!("u{}", i % 3)),
        ("card_id".into(), format!("c{}", i % 4)),
        ("device_id".into(), "shared-device".into()),
        ("amount".into(), format!("{}.50", 10 + (i * 37) % 400)),
        ("merchant".into(), format!("m{}", i % 5)),
    ]
}

/// The i-th transaction as an HTTP client sends it (the amount a JSON number).
fn http_body(i: usize) -> Value {
    let body: serde_json::Map<String, Value> = fields(i)
        .into_iter()
        .map(|(k, v)| {
            let value = if k == "amount" {
                Value::from(v.parse::<f64>().expect("amount"))
            } else {
                Value::String(v)
            };
            (k, value)
        })
        .collect();
    Value::Object(body)
}

async fn xadd(con: &mut redis::aio::MultiplexedConnection, f: &[(String, String)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg("transactions").arg("*");
    for (k, v) in f {
        cmd.arg(k).arg(v);
    }
    cmd.query_async(con).await.expect("XADD")
}

async fn xlen(con: &mut redis::aio::MultiplexedConnection, key: &str) -> usize {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(con)
        .await
        .expect("XLEN")
}

async fn pending(con: &mut redis::aio::MultiplexedConnection) -> usize {
    let summary: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg("transactions")
        .arg("scorers")
        .query_async(con)
        .await
        .expect("XPENDING");
    match summary.first() {
        Some(redis::Value::Int(n)) => *n as usize,
        _ => 0,
    }
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every decision on the decisions stream, by transaction id (duplicates marked).
async fn decisions(con: &mut redis::aio::MultiplexedConnection) -> Vec<(String, Value, bool)> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("decisions")
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .expect("XRANGE");
    reply
        .ids
        .iter()
        .map(|e| {
            let get = |k: &str| e.get::<String>(k).unwrap_or_default();
            let json: Value = serde_json::from_str(&get("json")).expect("decision JSON");
            (get("transaction_id"), json, get("duplicate") == "1")
        })
        .collect()
}

async fn stored(app: &TestApp) -> u64 {
    let (_, stats) = app.get("/v1/stats").await;
    stats["stored"]["transactions"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn stream_entries_are_decided_as_over_http_and_bad_ones_are_dead_lettered() {
    let server = RedisServer::start();
    let mut con = server.connect().await;
    let n = 30;
    for i in 0..n {
        if i == 11 {
            // One entry in the JSON form, one with a bad amount, one that is not JSON at all.
            xadd(&mut con, &[("json".into(), http_body(i).to_string())]).await;
            xadd(
                &mut con,
                &[
                    ("user_id".into(), "u-bad".into()),
                    ("amount".into(), "twelve".into()),
                ],
            )
            .await;
            xadd(&mut con, &[("json".into(), "{not json".into())]).await;
        } else {
            xadd(&mut con, &fields(i)).await;
        }
    }
    let dir = tempfile::tempdir().expect("dir");
    let url = server.url();
    let worker = spawn_worker_with(dir.path(), stream_args("w1", 30_000).resolve(), |a| {
        a.redis = Some(Secret::new(url.clone()))
    })
    .await;
    wait_until("every entry acknowledged", || {
        let mut con = con.clone();
        async move { xlen(&mut con, "decisions").await == n && pending(&mut con).await == 0 }
    })
    .await;
    assert_eq!(xlen(&mut con, "transactions:dead").await, 2);
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("transactions:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("XRANGE");
    let errors: Vec<Value> = dead
        .ids
        .iter()
        .map(|e| serde_json::from_str(&e.get::<String>("error").expect("error")).expect("JSON"))
        .collect();
    assert_eq!(errors[0]["field"], "amount", "{errors:?}");
    assert_eq!(errors[1]["code"], "malformed_json", "{errors:?}");
    assert_eq!(
        dead.ids[0].get::<String>("field:user_id").as_deref(),
        Some("u-bad")
    );
    assert_eq!(stored(&worker).await, n as u64);

    // The same transactions over HTTP to a fresh node, in the same order: same decisions.
    let http_dir = tempfile::tempdir().expect("dir");
    let single = spawn_app_with(http_dir.path(), |_| {}).await;
    let from_stream = decisions(&mut con).await;
    let mut flagged = 0;
    for (i, (id, d, duplicate)) in from_stream.iter().enumerate() {
        assert_eq!(id, &format!("st-{i}"));
        assert!(!duplicate);
        let body = http_body(i);
        let (status, over_http) = single.post_json("/v1/transactions", &body).await;
        assert_eq!(status, 200, "{over_http}");
        for key in ["decision", "score", "reasons", "alert"] {
            assert_eq!(d[key], over_http[key], "{id}: {key}");
        }
        flagged += usize::from(d["decision"] != "approve");
    }
    assert!(
        flagged > 0,
        "the stream must exercise rules, not only approvals"
    );
    worker.stop().await;
    single.stop().await;
}

#[tokio::test]
async fn a_crashed_consumers_entries_are_claimed_and_decided_once() {
    let server = RedisServer::start();
    let mut con = server.connect().await;
    let n = 12;
    for i in 0..n {
        xadd(&mut con, &fields(i)).await;
    }
    // A consumer reads everything and dies before acknowledging anything.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("transactions")
        .arg("scorers")
        .arg("0")
        .query_async(&mut con)
        .await
        .expect("XGROUP");
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("scorers")
        .arg("crashed")
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg("transactions")
        .arg(">")
        .query_async(&mut con)
        .await
        .expect("XREADGROUP");
    assert_eq!(pending(&mut con).await, n);

    let dir = tempfile::tempdir().expect("dir");
    let url = server.url();
    let worker = spawn_worker_with(dir.path(), stream_args("w2", 200).resolve(), |a| {
        a.redis = Some(Secret::new(url.clone()))
    })
    .await;
    // Meanwhile three of the same transactions also arrive over HTTP (a client retrying on
    // another path): whichever comes first decides, the other gets the stored decision.
    for i in [0, 5, 9] {
        let body = http_body(i);
        let (status, _) = worker.post_json("/v1/transactions", &body).await;
        assert_eq!(status, 200);
    }
    wait_until(
        "the crashed consumer's entries claimed and acknowledged",
        || {
            let mut con = con.clone();
            async move { pending(&mut con).await == 0 && xlen(&mut con, "decisions").await >= n }
        },
    )
    .await;
    assert_eq!(
        stored(&worker).await,
        n as u64,
        "each transaction stored once"
    );
    // State counted each transaction once: card c0 has ids 0, 4, 8.
    let (_, card) = worker.get("/v1/entities/card/c0").await;
    assert_eq!(card["features"]["card.tx_count"], 3.0, "{card}");
    let ids: std::collections::BTreeSet<String> = decisions(&mut con)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(
        ids.len(),
        n,
        "every transaction has a decision on the stream"
    );
    worker.stop().await;
}
