//! Bad input and attack, through the real server and real stores: the size limits answer 4xx
//! JSON naming the field, rule complexity limits answer with line and column, API keys are
//! rate-limited per key (429 with `Retry-After`), and the audit trail's hash chain catches a
//! changed, removed or forged row in SQLite and in a private PostgreSQL server, with
//! concurrent appends from two nodes never forking it.

mod helpers;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use helpers::services::PostgresServer;
use helpers::{spawn_app_with, TestApp};
use hyper::Request;
use ringfence::cases::chain::VerifyReport;
use ringfence::cases::postgres::PostgresCases;
use ringfence::cases::sqlite::{self as sqlite_cases, SqliteCases};
use ringfence::cases::NewAudit;
use ringfence::client::{HttpClient, HttpResponse};
use ringfence::store::postgres::PostgresStore;
use ringfence::store::sqlite::SqliteStore;
use ringfence_core::event::{Timestamp, MAX_ID_LEN};
use serde_json::{json, Value};

/// Sends `method path` with `key` as the bearer key and an optional JSON body.
async fn send_with_key(app: &TestApp, method: &str, path: &str, key: &str) -> HttpResponse {
    let req = Request::builder()
        .method(method)
        .uri(app.url(path))
        .header("authorization", format!("Bearer {key}"));
    HttpClient::new()
        .with_timeout(Duration::from_secs(20))
        .send(req.body(Bytes::new()).expect("request"))
        .await
        .expect("send")
}

fn json_of(r: &HttpResponse) -> Value {
    r.json().unwrap_or(Value::Null)
}

#[tokio::test]
async fn limits_answer_4xx_json_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |a| {
        a.max_body_bytes = Some(64 * 1024);
        a.max_batch = Some(10);
    })
    .await;

    let huge = json!({"amount": 1, "merchant": "m".repeat(65 * 1024)});
    let (status, v) = app.post_json("/v1/transactions", &huge).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["code"], "too_large", "{v}");
    assert_eq!(v["error"]["field"], "body", "{v}");

    let batch: Vec<Value> = (0..11).map(|_| json!({"amount": 1})).collect();
    let (status, v) = app
        .post_json("/v1/transactions/batch", &Value::Array(batch))
        .await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["field"], "body", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("11 transactions") && message.contains("at most 10"),
        "{v}"
    );

    let long_id = "x".repeat(MAX_ID_LEN + 1);
    for field in ["transaction_id", "user_id", "card_id", "merchant"] {
        let (status, v) = app
            .post_json("/v1/transactions", &json!({"amount": 1, field: long_id}))
            .await;
        assert_eq!(status, 400, "{field}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }

    // Rule complexity: a file over 1 MiB and a condition with too many nodes, each located.
    let big = "#".repeat(1024 * 1024 + 1);
    let (status, v) = app
        .post_json("/v1/rules/validate", &json!({"source": big}))
        .await;
    // The body limit of this server comes first (64 KiB).
    assert_eq!(status, 413, "{v}");
    let wide = vec!["tx.amount > 1"; 200].join(" || ");
    let source = format!("[[rule]]\nname = \"wide\"\nscore = 1\nwhen = \"{wide}\"\n");
    let (status, v) = app
        .post_json("/v1/rules/validate", &json!({"source": source}))
        .await;
    assert_eq!(status, 422, "{v}");
    let error = &v["error"]["errors"][0];
    assert_eq!(error["rule"], "wide", "{v}");
    assert_eq!(error["line"], 4, "{v}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("condition is too complex"),
        "{v}"
    );
    let deep = format!("{}true{}", "(".repeat(5000), ")".repeat(5000));
    let source = format!("[[rule]]\nname = \"deep\"\nscore = 1\nwhen = \"{deep}\"\n");
    let (status, v) = app
        .post_json("/v1/rules/validate", &json!({"source": source}))
        .await;
    assert_eq!(status, 422, "{v}");
    app.stop().await;
}

#[tokio::test]
async fn api_keys_are_rate_limited_per_key_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;

    // Bad limits are refused, naming the field.
    for (body, field) in [
        (
            json!({"name": "k", "role": "ingest", "rate_per_second": -1}),
            "rate_per_second",
        ),
        (
            json!({"name": "k", "role": "ingest", "rate_per_second": "fast"}),
            "rate_per_second",
        ),
        (json!({"name": "k", "role": "ingest", "burst": 5}), "burst"),
        (
            json!({"name": "k", "role": "ingest", "rate_per_second": 1, "burst": 0}),
            "burst",
        ),
    ] {
        let (status, v) = app.post_json("/v1/keys", &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }

    // One token per 100 s and a burst of 3: three requests pass, the fourth waits ~100 s.
    let (status, created) = app
        .post_json(
            "/v1/keys",
            &json!({"name": "till", "role": "analyst", "rate_per_second": 0.01, "burst": 3}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["rate_per_second"], 0.01);
    assert_eq!(created["burst"], 3);
    let limited = created["key"].as_str().expect("key").to_owned();
    let unlimited = app.create_key("notebook", "analyst").await;

    for i in 0..3 {
        let r = send_with_key(&app, "GET", "/v1/auth/me", &limited).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let r = send_with_key(&app, "GET", "/v1/alerts", &limited).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((90..=100).contains(&retry), "Retry-After {retry}");
    let v = json_of(&r);
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    assert_eq!(v["error"]["burst"], 3, "{v}");

    // Another key is not held up, nor is the administrator.
    for _ in 0..10 {
        let r = send_with_key(&app, "GET", "/v1/auth/me", &unlimited).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (status, keys) = app.get("/v1/keys").await;
    assert_eq!(status, 200);
    let listed = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == "till")
        .cloned()
        .expect("listed");
    assert_eq!(listed["rate_per_second"], 0.01, "{listed}");
    app.stop().await;

    // The limit is stored: after a restart the key is still limited (a fresh bucket).
    let app = spawn_app_with(dir.path(), |_| {}).await;
    for _ in 0..3 {
        assert_eq!(
            send_with_key(&app, "GET", "/v1/auth/me", &limited)
                .await
                .status,
            200
        );
    }
    assert_eq!(
        send_with_key(&app, "GET", "/v1/auth/me", &limited)
            .await
            .status,
        429
    );
    app.stop().await;
}

#[tokio::test]
async fn the_node_default_limits_keys_without_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |a| {
        a.key_rate = Some(0.01);
        a.key_burst = Some(2);
    })
    .await;
    let key = app.create_key("gateway", "ingest").await;
    let (status, own) = app
        .post_json(
            "/v1/keys",
            &json!({"name": "bulk", "role": "ingest", "rate_per_second": 0.01, "burst": 5}),
        )
        .await;
    assert_eq!(status, 201, "{own}");
    let own = own["key"].as_str().expect("key").to_owned();
    for _ in 0..2 {
        assert_eq!(
            send_with_key(&app, "GET", "/v1/auth/me", &key).await.status,
            200
        );
    }
    let r = send_with_key(&app, "GET", "/v1/auth/me", &key).await;
    assert_eq!(r.status, 429, "{}", r.text());
    // A key's own limit wins over the default.
    for _ in 0..5 {
        assert_eq!(
            send_with_key(&app, "GET", "/v1/auth/me", &own).await.status,
            200
        );
    }
    assert_eq!(
        send_with_key(&app, "GET", "/v1/auth/me", &own).await.status,
        429
    );
    // The administrator's key is not limited.
    for _ in 0..5 {
        assert_eq!(app.get("/v1/auth/me").await.0, 200);
    }
    app.stop().await;
}

fn entry(i: usize) -> NewAudit {
    NewAudit {
        at: Timestamp::from_millis(1_700_000_000_000 + i as i64),
        actor: format!("analyst-{}", i % 3),
        role: "analyst".into(),
        action: "case.close".into(),
        target: format!("case:{i}"),
        // Non-ASCII text: both stores must hash the same UTF-8 bytes.
        detail: json!({"note": format!("vérifié n° {i}"), "verdict": "fraud"}),
    }
}

/// A data directory whose audit trail holds `n` rows appended through the case book.
async fn sqlite_trail(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("store");
    let cases = SqliteCases::open(&store).expect("cases");
    for i in 0..n {
        cases.audit(entry(i)).await.expect("append");
    }
    dir
}

fn verify_sqlite(dir: &Path) -> VerifyReport {
    sqlite_cases::verify_chain(&dir.join("ringfence.db")).expect("verify")
}

fn tamper_sqlite(dir: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join("ringfence.db")).expect("open");
    conn.execute_batch(sql).expect("tamper");
}

/// `ringfence audit verify --data DIR`'s exit status and output.
fn verify_command(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringfence"))
        .args(["audit", "verify", "--data"])
        .arg(dir)
        .env_remove("RINGFENCE_POSTGRES")
        .output()
        .expect("run ringfence audit verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_sqlite_audit_chain_catches_changed_removed_and_forged_rows() {
    let intact = sqlite_trail(5).await;
    let report = verify_sqlite(intact.path());
    assert_eq!(report.broken, None, "{}", report.to_text());
    assert_eq!((report.rows, report.last_id), (5, Some(5)));
    let (ok, text) = verify_command(intact.path());
    assert!(ok, "{text}");
    assert!(text.contains("intact: 5 rows"), "{text}");

    // The append-only trigger stands in the way of a casual UPDATE.
    let conn = rusqlite::Connection::open(intact.path().join("ringfence.db")).expect("open");
    assert!(conn
        .execute("UPDATE audit SET actor = 'mallory' WHERE id = 2", [])
        .is_err());
    drop(conn);

    // Changed: the trigger dropped, one row's detail rewritten.
    let changed = sqlite_trail(5).await;
    tamper_sqlite(
        changed.path(),
        "DROP TRIGGER audit_no_update;
         UPDATE audit SET detail = '{\"verdict\":\"not_fraud\"}' WHERE id = 3;",
    );
    let report = verify_sqlite(changed.path());
    assert_eq!(
        report.broken.as_ref().map(|b| b.id),
        Some(3),
        "{}",
        report.to_text()
    );
    assert_eq!(report.rows, 2);
    let (ok, text) = verify_command(changed.path());
    assert!(!ok, "a broken chain must fail the command: {text}");
    assert!(text.contains("BROKEN at row 3"), "{text}");

    // Removed: a row in the middle, then the last row.
    let removed = sqlite_trail(5).await;
    tamper_sqlite(
        removed.path(),
        "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE id = 2;",
    );
    assert_eq!(verify_sqlite(removed.path()).broken.map(|b| b.id), Some(3));
    let cut = sqlite_trail(5).await;
    tamper_sqlite(
        cut.path(),
        "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE id = 5;",
    );
    assert_eq!(verify_sqlite(cut.path()).broken.map(|b| b.id), Some(5));

    // Forged: a row slipped in at the end with a made-up hash, and one copied from another
    // row's hash.
    let forged = sqlite_trail(3).await;
    tamper_sqlite(
        forged.path(),
        "INSERT INTO audit (id, at, actor, role, action, target, detail, hash)
         VALUES (4, 1, 'mallory', 'admin', 'case.close', 'case:9', '{}', zeroblob(32));
         UPDATE audit_chain SET last_id = 4;",
    );
    assert_eq!(verify_sqlite(forged.path()).broken.map(|b| b.id), Some(4));
    let copied = sqlite_trail(3).await;
    tamper_sqlite(
        copied.path(),
        "INSERT INTO audit (id, at, actor, role, action, target, detail, hash)
         SELECT 4, at, 'mallory', role, action, target, detail, hash FROM audit WHERE id = 3;",
    );
    let report = verify_sqlite(copied.path());
    assert_eq!(report.broken.map(|b| b.id), Some(4));
}

#[tokio::test]
async fn sqlite_rows_written_before_the_chain_are_chained_once_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // The audit table as the previous release created it, with rows in it.
        let conn = rusqlite::Connection::open(dir.path().join("ringfence.db")).expect("open");
        conn.execute_batch(
            "CREATE TABLE audit (
                 id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,
                 actor TEXT NOT NULL, role TEXT NOT NULL, action TEXT NOT NULL,
                 target TEXT NOT NULL, detail TEXT NOT NULL);
             INSERT INTO audit (at, actor, role, action, target, detail) VALUES
                 (1, 'ana', 'analyst', 'case.assign', 'case:1', '{}'),
                 (2, 'ana', 'analyst', 'case.close', 'case:1', '{\"note\":\"ok ✓\"}');",
        )
        .expect("old schema");
    }
    let store = SqliteStore::open(dir.path()).expect("store");
    let cases = SqliteCases::open(&store).expect("cases migrate");
    let report = verify_sqlite(dir.path());
    assert_eq!(report.broken, None, "{}", report.to_text());
    assert_eq!(report.rows, 2);
    let appended = cases.audit(entry(7)).await.expect("append");
    assert_eq!(appended.id, 3);
    drop(cases);
    // Opening again does not chain twice.
    let cases = SqliteCases::open(&store).expect("reopen");
    cases.audit(entry(8)).await.expect("append");
    let report = verify_sqlite(dir.path());
    assert_eq!(report.broken, None, "{}", report.to_text());
    assert_eq!((report.rows, report.last_id), (4, Some(4)));
}

#[tokio::test]
async fn the_postgres_audit_chain_serialises_nodes_and_catches_tampering() {
    let pg = PostgresServer::start();
    let url = pg.url();
    let node_a = PostgresCases::new(PostgresStore::connect(&url).await.expect("node a"));
    let node_b = PostgresCases::new(PostgresStore::connect(&url).await.expect("node b"));

    // Forty appends at once from two nodes: one chain, ids 1..=40, nothing forked.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let cases = if i % 2 == 0 {
            node_a.clone()
        } else {
            node_b.clone()
        };
        tasks.push(tokio::spawn(async move { cases.audit(entry(i)).await }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task").expect("append").id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=40).collect::<Vec<i64>>());
    let report = ringfence::cases::postgres::verify_chain(&url, None)
        .await
        .expect("verify");
    assert_eq!(report.broken, None, "{}", report.to_text());
    assert_eq!((report.rows, report.last_id), (40, Some(40)));

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let verify = || async {
        ringfence::cases::postgres::verify_chain(&url, None)
            .await
            .expect("verify")
    };

    // A row inserted the ordinary way is chained by the trigger, whatever id it asks for.
    client
        .batch_execute(
            "INSERT INTO audit (id, at, actor, role, action, target, detail)
             VALUES (7, 5, 'psql', 'admin', 'note', 'x', '{}')",
        )
        .await
        .expect("insert");
    let report = verify().await;
    assert_eq!(report.broken, None, "{}", report.to_text());
    assert_eq!(report.last_id, Some(41));

    // Changed, then put back.
    let actor: String = client
        .query_one("SELECT actor FROM audit WHERE id = 17", &[])
        .await
        .expect("row 17")
        .get(0);
    client
        .batch_execute(
            "ALTER TABLE audit DISABLE TRIGGER audit_no_change;
             UPDATE audit SET actor = 'mallory' WHERE id = 17;
             ALTER TABLE audit ENABLE TRIGGER audit_no_change;",
        )
        .await
        .expect("tamper");
    assert_eq!(verify().await.broken.map(|b| b.id), Some(17));
    client
        .batch_execute(&format!(
            "ALTER TABLE audit DISABLE TRIGGER audit_no_change;
             UPDATE audit SET actor = '{actor}' WHERE id = 17;
             ALTER TABLE audit ENABLE TRIGGER audit_no_change;"
        ))
        .await
        .expect("undo");
    assert_eq!(
        verify().await.broken,
        None,
        "the original row verifies again"
    );

    // Removed.
    client
        .batch_execute(
            "ALTER TABLE audit DISABLE TRIGGER audit_no_change;
             DELETE FROM audit WHERE id = 30;
             ALTER TABLE audit ENABLE TRIGGER audit_no_change;",
        )
        .await
        .expect("tamper");
    assert_eq!(verify().await.broken.map(|b| b.id), Some(31));

    // Forged, past the trigger that would have chained it.
    client
        .batch_execute(
            "ALTER TABLE audit DISABLE TRIGGER audit_chain_append;
             INSERT INTO audit (id, at, actor, role, action, target, detail, hash)
             VALUES (30, 1, 'mallory', 'admin', 'case.close', 'case:1', '{}', '\\x00');
             ALTER TABLE audit ENABLE TRIGGER audit_chain_append;",
        )
        .await
        .expect("forge");
    assert_eq!(verify().await.broken.map(|b| b.id), Some(30));
}

#[tokio::test]
async fn postgres_rows_written_before_the_chain_are_chained_by_the_migration() {
    let pg = PostgresServer::start();
    let url = pg.url();
    let store = PostgresStore::connect(&url).await.expect("migrate");
    drop(store);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    // Back to the schema before migration 4, with rows (and a gap in their ids).
    client
        .batch_execute(
            "DROP TRIGGER audit_chain_append ON audit;
             DROP TABLE audit_chain;
             DROP FUNCTION audit_chain_append();
             DROP FUNCTION audit_row_encoding(BIGINT, BIGINT, TEXT, TEXT, TEXT, TEXT, TEXT);
             ALTER TABLE audit DROP COLUMN hash;
             DELETE FROM ringfence_migrations WHERE version = 4;
             INSERT INTO audit (id, at, actor, role, action, target, detail) VALUES
                 (1, 1, 'ana', 'analyst', 'case.assign', 'case:1', '{}'),
                 (2, -2, 'ana', 'analyst', 'case.close', 'case:1', '{\"note\":\"vérifié ✓\"}'),
                 (5, 3, 'bo', 'admin', 'rule.activate', 'rule:x', '{}');",
        )
        .await
        .expect("old schema");
    let cases = PostgresCases::new(PostgresStore::connect(&url).await.expect("migrate 4"));
    let report = ringfence::cases::postgres::verify_chain(&url, None)
        .await
        .expect("verify");
    assert_eq!(report.broken, None, "{}", report.to_text());
    assert_eq!((report.rows, report.last_id), (3, Some(5)));
    // The hashes the database computed are the ones Rust computes (the verifier is Rust).
    let appended = cases.audit(entry(1)).await.expect("append");
    assert_eq!(appended.id, 6);
    let report = ringfence::cases::postgres::verify_chain(&url, None)
        .await
        .expect("verify");
    assert_eq!(report.broken, None, "{}", report.to_text());
    assert_eq!(report.rows, 4);
}
