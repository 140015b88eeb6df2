//! The shared log does not grow forever: nodes save snapshots of the state to Redis and the
//! log is trimmed behind them. A node started after the trim rebuilds from the snapshot and
//! the rest of the log and agrees with a single node over the whole history; a replica that
//! fell behind the trim is told so (never silently skips entries) and resumes from the
//! snapshot, deciding exactly as the node that answered live.

mod helpers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use helpers::services::RedisServer;
use helpers::{spawn_app_with, TestApp};
use ringfence::config::Secret;
use ringfence::host::DEFAULT_RULES;
use ringfence::shared::log::{LogEntry, LogError, LogId, SharedLog};
use ringfence::shared::replica::{Applied, LogCursor};
use ringfence_core::decision::Decision;
use ringfence_core::engine::{Engine, EngineConfig};
use ringfence_core::rules::RuleSet;
use serde_json::Value;

const EVERY: u64 = 50;

fn tx(i: usize) -> Value {
    helpers::mixed_tx("sn", 11, i)
}

async fn node(dir: &std::path::Path, url: &str) -> TestApp {
    spawn_app_with(dir, |a| {
        a.redis = Some(Secret::new(url.to_owned()));
        a.snapshot_every = Some(EVERY);
    })
    .await
}

async fn log_len(con: &mut redis::aio::MultiplexedConnection) -> usize {
    redis::cmd("XLEN")
        .arg("ringfence:log")
        .query_async(con)
        .await
        .expect("XLEN")
}

/// Waits until the log holds fewer than `below` entries (trimmed behind a snapshot).
async fn wait_trimmed(con: &mut redis::aio::MultiplexedConnection, below: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = log_len(con).await;
        if n < below {
            return n;
        }
        assert!(Instant::now() < deadline, "the log still holds {n} entries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An entity's features without the ones measured against the wall clock at read time.
fn state(entity: &Value) -> Value {
    let mut f = entity["features"].clone();
    if let Some(m) = f.as_object_mut() {
        m.retain(|k, _| !k.ends_with("secs_since_last"));
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_after_the_trim_rebuilds_from_the_snapshot() {
    let server = RedisServer::start();
    let url = server.url();
    let (da, dc, ds) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = node(da.path(), &url).await;
    let single = spawn_app_with(ds.path(), |_| {}).await;
    for i in 0..400 {
        let (status, d) = a.post_json("/v1/transactions", &tx(i)).await;
        assert_eq!(status, 200, "{d}");
        let (_, s) = single.post_json("/v1/transactions", &tx(i)).await;
        assert_eq!(helpers::decision_essence(&d), helpers::decision_essence(&s));
    }
    let mut con = server.connect().await;
    // 400 transactions and the first rules and models entries; trimmed behind the snapshot
    // before the latest, which is at most a couple of snapshot intervals back.
    let left = wait_trimmed(&mut con, 200).await;
    let snapshot: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
        .arg("ringfence:log:snapshot")
        .query_async(&mut con)
        .await
        .expect("HGETALL");
    assert!(snapshot.contains_key("engine") && snapshot.contains_key("cursor"));

    // Every entity's state depends on the earliest transactions (all within one hour), which
    // the log no longer holds: only the snapshot can give them to a new node.
    let c = node(dc.path(), &url).await;
    for entity in ["user/u3", "card/c7", "device/d1", "merchant/m2"] {
        let path = format!("/v1/entities/{entity}");
        let (_, here) = c.get(&path).await;
        let (_, there) = single.get(&path).await;
        assert_eq!(
            state(&here),
            state(&there),
            "{entity} ({left} log entries left)"
        );
    }
    // And it goes on deciding as the single node does.
    for i in 400..460 {
        let target = if i % 2 == 0 { &a } else { &c };
        let (status, d) = target.post_json("/v1/transactions", &tx(i)).await;
        assert_eq!(status, 200, "{d}");
        let (_, s) = single.post_json("/v1/transactions", &tx(i)).await;
        assert_eq!(
            helpers::decision_essence(&d),
            helpers::decision_essence(&s),
            "sn-{i}"
        );
    }
    for app in [a, c, single] {
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_trim_resumes_from_the_snapshot() {
    let server = RedisServer::start();
    let url = server.url();
    let da = tempfile::tempdir().expect("dir");
    let a = node(da.path(), &url).await;
    let mut answers = HashMap::new();
    for i in 0..20 {
        let (_, d) = a.post_json("/v1/transactions", &tx(i)).await;
        answers.insert(format!("sn-{i}"), d);
    }

    // A replica that applies the first entries, then stops following for a while.
    let log = SharedLog::new(
        redis::Client::open(url.as_str()).expect("client"),
        "ringfence:log",
    );
    let rules = RuleSet::from_toml(DEFAULT_RULES).expect("rules");
    let mut engine = Engine::new(EngineConfig::default(), Arc::new(rules));
    let mut cursor = LogCursor::new();
    let first = log.read(LogId::START, 10).await.expect("read");
    let origin = first
        .iter()
        .find_map(|(_, e)| match e {
            LogEntry::Tx { origin, .. } => Some(*origin),
            _ => None,
        })
        .expect("a transaction entry");
    let mut results = HashMap::<LogId, Applied<Decision>>::new();
    cursor.apply(
        &mut engine,
        origin,
        &first,
        &mut Default::default(),
        &mut results,
        |_, _, s| s.decision,
    );

    for i in 20..400 {
        let (_, d) = a.post_json("/v1/transactions", &tx(i)).await;
        answers.insert(format!("sn-{i}"), d);
    }
    let mut con = server.connect().await;
    wait_trimmed(&mut con, 200).await;

    // The replica is told it fell behind, rather than skipping the trimmed entries.
    match log.read(cursor.position(), 1000).await {
        Err(LogError::Behind(at)) => assert_eq!(at, cursor.position()),
        other => panic!("expected Behind, got {:?}", other.map(|e| e.len())),
    }
    let position = cursor.position();
    let appended = log
        .append(position, &[])
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(appended.contains("trimmed"), "{appended}");

    // It resumes from the snapshot and decides every later entry as `a` answered it.
    let snapshot = log
        .load_snapshot()
        .await
        .expect("load")
        .expect("a snapshot");
    assert!(snapshot.position > position);
    let restored = LogCursor::from_image(&snapshot.cursor).expect("cursor image");
    let mut cursor = LogCursor::install(restored, &mut engine, &snapshot.engine).expect("install");
    assert_eq!(cursor.position(), snapshot.position);
    // More traffic meanwhile (fewer than a snapshot interval, so the log keeps everything
    // after the snapshot just loaded).
    for i in 400..430 {
        let (_, d) = a.post_json("/v1/transactions", &tx(i)).await;
        answers.insert(format!("sn-{i}"), d);
    }
    let mut checked = 0;
    loop {
        let page = log.read(cursor.position(), 100).await.expect("read");
        if page.is_empty() {
            break;
        }
        results.clear();
        cursor.apply(
            &mut engine,
            origin,
            &page,
            &mut Default::default(),
            &mut results,
            |_, _, s| s.decision,
        );
        for (id, entry) in &page {
            let (LogEntry::Tx { tx, .. }, Some(Applied::Decided(d))) = (entry, results.get(id))
            else {
                continue;
            };
            let live = &answers[tx.transaction_id.as_str()];
            assert_eq!(
                live["decision"],
                serde_json::to_value(d.decision).expect("action")
            );
            assert_eq!(
                live["score"].as_f64(),
                Some(d.score),
                "{}",
                tx.transaction_id
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} decisions compared");
    a.stop().await;
}
