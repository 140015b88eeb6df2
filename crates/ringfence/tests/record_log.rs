//! The durable write path: records acknowledged once in the record log, SQLite indexed from
//! it. Start-up indexes what the log holds beyond SQLite; reads see acknowledged writes;
//! duplicate ids stay exact across restarts without a read per request; a full disk gets a
//! clear 503 (nothing acknowledged is lost) and the node takes work again once space returns
//! (a read-only data directory: `tests/read_only.rs`).

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;

use helpers::{
    assert_all_stored, assert_stored_after_restart, mixed_tx, post_accepted, post_tx,
    post_until_accepted_again, post_until_refused, spawn_app_at,
};
use ringfence::store::sqlite::SqliteStore;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_decision_reads_back_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_at(dir.path(), None).await;
    // Many clients at once: each reads its own transaction right after its acknowledgement,
    // while the indexer is still behind the log for some of them.
    let mut tasks = Vec::new();
    let app = std::sync::Arc::new(app);
    for client in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let tx = mixed_tx(&format!("ryw{client}"), 10, i);
                let (status, body, _) = post_tx(&app, &tx).await;
                assert_eq!(status, 200, "{body}");
                let id = tx["transaction_id"].as_str().expect("id");
                let (status, stored) = app.get(&format!("/v1/transactions/{id}")).await;
                assert_eq!(status, 200, "acknowledged {id} is not readable: {stored}");
                assert_eq!(stored["decision"]["decision"], body["decision"]);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let (_, stats) = app.get("/v1/stats").await;
    assert_eq!(stats["stored"]["transactions"], 320, "{stats}");
    let log = &stats["log"];
    assert_eq!(log["lag_records"], 0, "{stats}");
    assert!(log["fsync_records"].as_u64().unwrap_or(0) >= 320, "{stats}");
    let metrics = app
        .client
        .get(&app.url("/metrics"))
        .await
        .expect("metrics")
        .text();
    assert!(metrics.contains("ringfence_log_lag_records"), "{metrics}");
    assert!(metrics.contains("ringfence_log_fsync_groups"), "{metrics}");
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("app still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_exact_across_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_at(dir.path(), None).await;
    let mut first = Vec::new();
    for i in 0..30 {
        let (status, body, _) = post_tx(&app, &mixed_tx("dup", 9, i)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("duplicate").is_none(), "{body}");
        first.push(body);
    }
    app.stop().await;
    let app = spawn_app_at(dir.path(), None).await;
    // Each stored id answers its stored decision, marked duplicate; a fresh one is decided.
    for (i, earlier) in first.iter().enumerate() {
        let (status, body, _) = post_tx(&app, &mixed_tx("dup", 9, i)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["duplicate"], true, "{body}");
        assert_eq!(
            helpers::decision_essence(&body),
            helpers::decision_essence(earlier)
        );
    }
    let batch = json!([
        mixed_tx("dup", 9, 3),
        mixed_tx("dup-new", 9, 0),
        mixed_tx("dup-new", 9, 0)
    ]);
    let (status, v) = app.post_json("/v1/transactions/batch", &batch).await;
    assert_eq!(status, 200, "{v}");
    let results = v.as_array().expect("results");
    assert_eq!(results.len(), 3, "{v}");
    assert_eq!(results[0]["duplicate"], true, "{v}");
    assert!(results[1].get("duplicate").is_none(), "{v}");
    assert_eq!(results[2]["duplicate"], true, "{v}");
    let (_, stats) = app.get("/v1/stats").await;
    assert_eq!(stats["stored"]["transactions"], 31, "{stats}");
    assert_eq!(stats["log"]["ids_held"], 31, "{stats}");
    app.stop().await;
}

/// Rows of `table` in the database of `data`.
fn count(data: &Path, table: &str) -> i64 {
    let c = rusqlite::Connection::open(data.join("ringfence.db")).expect("db");
    c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_indexes_what_the_log_holds_beyond_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_at(dir.path(), None).await;
    let mut decided = Vec::new();
    for i in 0..50 {
        let (status, body, _) = post_tx(&app, &mixed_tx("tail", 11, i)).await;
        assert_eq!(status, 200, "{body}");
        decided.push(body);
    }
    let (status, label) = app
        .post_json(
            "/v1/labels",
            &json!({"transaction_id": "tail-7", "label": "fraud"}),
        )
        .await;
    assert_eq!(status, 201, "{label}");
    app.stop().await;
    let alerts_before = count(dir.path(), "alerts");
    assert!(alerts_before > 0, "the mixed stream raises alerts");
    // As if the indexer had committed only the first 20 records when the process died: the
    // rest is in the log alone.
    {
        let c = rusqlite::Connection::open(dir.path().join("ringfence.db")).expect("db");
        c.execute_batch(
            "DELETE FROM tx_entities WHERE seq > 20; DELETE FROM alerts WHERE seq > 20;
             DELETE FROM alert_outbox WHERE seq > 20; DELETE FROM labels WHERE seq > 20;
             DELETE FROM transactions WHERE seq > 20;
             UPDATE meta SET value = '20' WHERE key = 'log_indexed_seq';",
        )
        .expect("rewind");
    }
    assert_eq!(count(dir.path(), "transactions"), 20);
    let app = spawn_app_at(dir.path(), None).await;
    assert_eq!(count(dir.path(), "transactions"), 50);
    assert_eq!(count(dir.path(), "labels"), 1);
    assert_eq!(count(dir.path(), "alerts"), alerts_before);
    for (i, earlier) in decided.iter().enumerate() {
        let (status, stored) = app.get(&format!("/v1/transactions/tail-{i}")).await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(stored["decision"]["score"], earlier["score"]);
    }
    let (_, stored) = app.get("/v1/transactions/tail-7").await;
    assert_eq!(stored["labels"][0]["fraud"], true, "{stored}");
    // The state rebuilt from the re-indexed history decides the next one as an
    // uninterrupted run would: a duplicate is still known as one.
    let (status, body, _) = post_tx(&app, &mixed_tx("tail", 11, 49)).await;
    assert_eq!(status, 200);
    assert_eq!(body["duplicate"], true, "{body}");
    app.stop().await;
}

#[test]
fn a_store_opened_twice_in_a_row_replays_nothing_twice() {
    let dir = tempfile::tempdir().expect("dir");
    for round in 0..3 {
        let store = SqliteStore::open(dir.path()).expect("open");
        let stats = store.log_stats();
        assert_eq!(stats.lag_records, 0, "round {round}");
        drop(store);
    }
    let store = SqliteStore::open(dir.path()).expect("open");
    assert_eq!(store.log_stats().acked_seq, 0);
}

// ---- a full disk ----------------------------------------------------------------------------

/// A tmpfs mounted for one test, unmounted when dropped (whatever the test's outcome).
struct Mounted {
    at: PathBuf,
}

impl Mounted {
    fn tmpfs(at: &Path, size: &str) -> Mounted {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs as the data directory and needs root (it runs as root in CI): mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted { at: at.to_owned() }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// Writes a file until the disk is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xa5u8; 1 << 20];
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_refused_clearly_and_the_node_recovers_when_space_returns() {
    let outer = tempfile::tempdir().expect("dir");
    let mount = Mounted::tmpfs(&outer.path().join("disk"), "192m");
    let data = mount.at.join("data");
    let app = spawn_app_at(&data, None).await;
    let mut acked: Vec<String> = Vec::new();
    let mut next = 0usize;
    post_accepted(&app, "full", 20, &mut acked, &mut next).await;
    fill(&mount.at.join("filler"));
    // Keep sending: what is acknowledged must be stored; the refusal must be a clear 503.
    let refused = post_until_refused(&app, "full", "storage_full", &mut acked, &mut next).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("full"),
        "{refused}"
    );
    // Still refused while full (nothing is applied or acknowledged meanwhile).
    let (status, body, _) = post_tx(&app, &mixed_tx("full-refused", 12, 0)).await;
    assert_eq!(status, 503, "{body}");
    let (status, _) = app.get("/v1/transactions/full-refused-0").await;
    assert_eq!(status, 404);
    // Space returns: the node takes work again without a restart.
    std::fs::remove_file(mount.at.join("filler")).expect("free space");
    post_until_accepted_again(&app, &mixed_tx("full-after", 12, 0), "space returned").await;
    assert_all_stored(&app, &acked).await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    app.stop().await;
    // And after a restart, everything acknowledged is still there.
    assert_stored_after_restart(&data, acked.len() as u64 + 1).await;
    drop(mount);
}
