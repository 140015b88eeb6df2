//! Raw card numbers reach no storage and no log. The real `ringfence` binary runs at
//! `RUST_LOG=debug`, embedded (SQLite) and in production mode (real PostgreSQL for records,
//! real Redis for shared state and alerts), and is fed card numbers through every way the API
//! takes one: `card_number` as a string with spaces, with dashes, as digits and as a JSON
//! integer, a card number sent as `card_id`, single, batch, the legacy `POST /transaction`,
//! multipart till forms (purchase and return), a request refused for another field, a retried
//! id, the search (`POST /v1/search`, `GET /v1/search?q=`) and the card pages
//! (`/v1/entities/card/{pan}`, `/v1/graph/card/{pan}`). Then every number, as digits and in
//! the grouped forms it was sent in, is looked for in: every file under the data directory
//! (byte scan: SQLite database, WAL, positions, anything else), the server's stdout and
//! stderr, every PostgreSQL table (each row as JSON) and the PostgreSQL data directory, every
//! Redis key and value (each type read out) and what a pub/sub subscriber to every channel
//! received, and every HTTP answer. None is found.
//!
//! Each scanner is first shown to find a number planted where it looks (a file of binary junk,
//! a Redis key, a PostgreSQL table), so a scan that finds nothing means something.

mod helpers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use helpers::services::{PostgresServer, RedisServer};
use ringfence::client::HttpClient;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ringfence");
const ADMIN_KEY: &str = "scan-test-admin-key-0123456789abcdef";
const BOUNDARY: &str = "ringfence-scan-boundary-4ZbQq";

/// `prefix` completed with its Luhn check digit: a number any PAN detector takes for a card.
fn luhn(prefix: &str) -> String {
    let sum: u32 = prefix
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    format!("{prefix}{}", (10 - sum % 10) % 10)
}

/// The card numbers of one run: distinct, valid, of 16 and 19 digits.
fn card_numbers() -> Vec<String> {
    let mut pans: Vec<String> = (0..10)
        .map(|i| luhn(&format!("45398012{:07}", 7_310_000 + i * 7919)))
        .collect();
    pans.push(luhn("623456789012345678"));
    pans
}

/// `pan` in groups of four joined by `sep`.
fn grouped(pan: &str, sep: &str) -> String {
    pan.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(sep)
}

/// Every form a number is looked for in: digits, and grouped by spaces and by dashes.
fn needles(pans: &[String]) -> Vec<String> {
    pans.iter()
        .flat_map(|p| [p.clone(), grouped(p, " "), grouped(p, "-")])
        .collect()
}

/// The needles found in `haystack`. Every needle is digits, spaces and dashes, so only the
/// runs of those bytes long enough to hold one are searched (one pass over megabytes of
/// database files, instead of a comparison per needle at every byte).
fn found_in(haystack: &[u8], needles: &[String]) -> Vec<String> {
    let shortest = needles.iter().map(String::len).min().unwrap_or(0);
    let mut found: Vec<&String> = Vec::new();
    for run in haystack
        .split(|b| !(b.is_ascii_digit() || *b == b' ' || *b == b'-'))
        .filter(|run| run.len() >= shortest)
    {
        for n in needles {
            if !found.contains(&n) && run.windows(n.len()).any(|w| w == n.as_bytes()) {
                found.push(n);
            }
        }
    }
    // In the needles' order, so a result compares equal to an expected list.
    needles
        .iter()
        .filter(|n| found.contains(n))
        .cloned()
        .collect()
}

/// Every file under `dir` (recursively) with the needles found in it.
fn scan_dir(dir: &Path, needles: &[String]) -> Vec<(PathBuf, Vec<String>)> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files += 1;
                let found = found_in(&bytes, needles);
                if !found.is_empty() {
                    hits.push((path, found));
                }
            }
        }
    }
    assert!(files > 0, "nothing to scan under {}", dir.display());
    hits
}

/// Every key of the Redis server and its value, read out by type, as text.
async fn dump_redis(con: &mut redis::aio::MultiplexedConnection) -> String {
    let mut out = String::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await
            .expect("SCAN");
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(con)
                .await
                .expect("TYPE");
            let value: redis::Value = match kind.as_str() {
                "string" => redis::cmd("GET").arg(&key).query_async(con).await,
                "list" => {
                    redis::cmd("LRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .query_async(con)
                        .await
                }
                "set" => redis::cmd("SMEMBERS").arg(&key).query_async(con).await,
                "zset" => {
                    redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query_async(con)
                        .await
                }
                "hash" => redis::cmd("HGETALL").arg(&key).query_async(con).await,
                "stream" => {
                    redis::cmd("XRANGE")
                        .arg(&key)
                        .arg("-")
                        .arg("+")
                        .query_async(con)
                        .await
                }
                other => panic!("a Redis key of type {other} the scan cannot read"),
            }
            .expect("read a value");
            out.push_str(&String::from_utf8_lossy(&key));
            out.push_str(" = ");
            append_value(&mut out, &value);
            out.push('\n');
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    out
}

fn append_value(out: &mut String, value: &redis::Value) {
    match value {
        redis::Value::BulkString(b) => out.push_str(&String::from_utf8_lossy(b)),
        redis::Value::SimpleString(s) => out.push_str(s),
        redis::Value::Int(i) => out.push_str(&i.to_string()),
        redis::Value::Double(d) => out.push_str(&d.to_string()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for item in items {
                append_value(out, item);
                out.push(' ');
            }
        }
        redis::Value::Map(pairs) => {
            for (k, v) in pairs {
                append_value(out, k);
                out.push(' ');
                append_value(out, v);
                out.push(' ');
            }
        }
        other => out.push_str(&format!("{other:?}")),
    }
}

/// Every row of every table of every user schema, as JSON text.
async fn dump_postgres(client: &tokio_postgres::Client) -> String {
    let tables = client
        .query(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)
             FROM information_schema.tables
             WHERE table_type = 'BASE TABLE'
               AND table_schema NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .expect("tables");
    assert!(!tables.is_empty(), "no tables to dump");
    let mut out = String::new();
    for row in tables {
        let table: String = row.get(0);
        let rows = client
            .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
            .await
            .expect("dump a table");
        for r in rows {
            out.push_str(&table);
            out.push(' ');
            out.push_str(&r.get::<_, String>(0));
            out.push('\n');
        }
    }
    out
}

/// A `ringfence serve` process with stdout and stderr going to files.
struct Server {
    child: Child,
    base: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Server {
    fn start(logs: &Path, args: &[String]) -> Server {
        let port = helpers::services::free_port();
        let (stdout, stderr) = (logs.join("stdout.log"), logs.join("stderr.log"));
        let child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RINGFENCE_ADMIN_KEY", ADMIN_KEY)
            .env(
                "RINGFENCE_CARD_HASH_KEY",
                "scan-test-card-hash-key-0123456789",
            )
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(
                std::fs::File::create(&stdout).expect("stdout file"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(&stderr).expect("stderr file"),
            ))
            .spawn()
            .expect("spawn ringfence");
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stdout,
            stderr,
        }
    }

    /// SIGTERM, waits for a clean exit (everything flushed and closed), and returns both
    /// logs.
    fn stop(mut self) -> Vec<u8> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "ringfence exited with {status}");
                return self.logs();
            }
            assert!(Instant::now() < deadline, "ringfence did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Both logs, concatenated.
    fn logs(&self) -> Vec<u8> {
        let mut all = std::fs::read(&self.stdout).unwrap_or_default();
        all.extend(std::fs::read(&self.stderr).unwrap_or_default());
        all
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(client: &HttpClient, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(&format!("{base}/readyz")).await {
            if r.status == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server at {base} never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `multipart/form-data` body with one `transaction` part.
fn form(tx: &Value) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"transaction\"\r\n\r\n{tx}\r\n--{BOUNDARY}--\r\n"
    )
    .into_bytes()
}

/// Sends the run's card numbers through every way in; returns every answer's body.
async fn feed(client: &HttpClient, base: &str, pans: &[String]) -> Vec<u8> {
    let mut answers = Vec::new();
    let post = |path: &'static str, content_type: &'static str, body: Vec<u8>| {
        let url = format!("{base}{path}");
        let client = client.clone();
        async move {
            let r = client
                .post(&url, content_type, body)
                .await
                .expect("request");
            (r.status, r.body)
        }
    };
    // Payments sharing one device across users, so ring and velocity alerts fire and go to
    // every sink.
    let tx = |i: usize, card: Value| {
        let mut t = json!({
            "transaction_id": format!("scan-{i}"),
            "user_id": format!("scan-user-{i}"),
            "device_id": "scan-device",
            "amount": 150.0 + i as f64,
            "merchant": "Online Store",
        });
        if let (Some(t), Some(card)) = (t.as_object_mut(), card.as_object()) {
            t.extend(card.clone());
        }
        t
    };
    let p = pans;
    let mut expect = |what: &str, (status, body): (u16, bytes::Bytes), want: u16| {
        assert_eq!(status, want, "{what}: {}", String::from_utf8_lossy(&body));
        answers.extend_from_slice(&body);
        answers.push(b'\n');
    };
    let json_ct = "application/json";
    let r = post(
        "/v1/transactions",
        json_ct,
        tx(0, json!({"card_number": grouped(&p[0], " ")}))
            .to_string()
            .into_bytes(),
    )
    .await;
    expect("spaces", r, 200);
    let integer = format!(
        r#"{{"transaction_id":"scan-1","user_id":"scan-user-1","device_id":"scan-device","amount":151,"merchant":"Online Store","card_number":{}}}"#,
        p[1]
    );
    let r = post("/v1/transactions", json_ct, integer.into_bytes()).await;
    expect("a JSON integer", r, 200);
    let r = post(
        "/transaction",
        json_ct,
        tx(2, json!({"card_number": grouped(&p[2], "-")}))
            .to_string()
            .into_bytes(),
    )
    .await;
    expect("dashes, legacy path", r, 200);
    let r = post(
        "/transaction",
        json_ct,
        tx(3, json!({"card_id": p[3]})).to_string().into_bytes(),
    )
    .await;
    expect("card_id, legacy path", r, 200);
    let batch = json!([
        tx(4, json!({"card_number": p[4]})),
        tx(5, json!({"card_id": p[5]})),
        tx(10, json!({"card_number": p[10]})),
    ]);
    let r = post(
        "/v1/transactions/batch",
        json_ct,
        batch.to_string().into_bytes(),
    )
    .await;
    expect("batch", r, 200);
    // Till forms: a purchase paid by card and its return, multipart.
    let purchase = json!({
        "transaction_id": "scan-6", "kind": "purchase", "store_id": "store-scan",
        "terminal_id": "pos-1", "receipt_id": "rcpt-scan", "customer_id": "cust-scan",
        "amount": 39.99, "items": [{"sku": "shirt", "price": 39.99}],
        "card_number": grouped(&p[6], " "),
    });
    let multipart = "multipart/form-data; boundary=ringfence-scan-boundary-4ZbQq";
    let r = post("/v1/transactions", multipart, form(&purchase)).await;
    expect("multipart purchase", r, 200);
    let ret = json!({
        "transaction_id": "scan-7", "kind": "return", "store_id": "store-scan",
        "terminal_id": "pos-1", "receipt_id": "rcpt-scan", "customer_id": "cust-scan",
        "amount": 39.99, "items": [{"sku": "shirt", "price": 39.99}],
        "card_id": p[7],
    });
    let r = post("/transaction", multipart, form(&ret)).await;
    expect("multipart return", r, 200);
    // Refused for another field: the number is neither echoed nor kept.
    let mut bad = tx(8, json!({"card_number": p[8]}));
    bad["amount"] = json!(-5);
    let r = post("/v1/transactions", json_ct, bad.to_string().into_bytes()).await;
    expect("a bad amount", r, 400);
    // A retry of a stored id, with its number again.
    let r = post(
        "/v1/transactions",
        json_ct,
        tx(0, json!({"card_number": grouped(&p[0], " ")}))
            .to_string()
            .into_bytes(),
    )
    .await;
    expect("a retried id", r, 200);
    let r = post(
        "/v1/labels",
        json_ct,
        json!({"transaction_id": "scan-0", "fraud": true})
            .to_string()
            .into_bytes(),
    )
    .await;
    expect("a label", r, 201);
    // Looking a card up by its number.
    let r = post(
        "/v1/search",
        json_ct,
        json!({"q": grouped(&p[0], " ")}).to_string().into_bytes(),
    )
    .await;
    expect("POST search", r, 200);
    for (what, path) in [
        ("GET search", format!("/v1/search?q={}", p[1])),
        ("card page", format!("/v1/entities/card/{}", p[2])),
        (
            "card graph",
            format!("/v1/graph/card/{}", grouped(&p[3], "-")),
        ),
    ] {
        let r = client.get(&format!("{base}{path}")).await.expect("request");
        expect(what, (r.status, r.body), 200);
    }
    answers
}

/// What the scan found, for the failure message; empty when clean.
fn report(place: &str, found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!("{place}: {found:?}\n")
    }
}

#[test]
fn the_scanners_find_a_planted_number() {
    let pans = card_numbers();
    let needles = needles(&pans);
    let dir = tempfile::tempdir().expect("dir");
    let mut junk: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    junk.splice(1000..1000, grouped(&pans[9], "-").into_bytes());
    std::fs::create_dir(dir.path().join("deep")).expect("mkdir");
    std::fs::write(dir.path().join("deep").join("segment.bin"), &junk).expect("write");
    std::fs::write(dir.path().join("clean.bin"), b"ct_0123 4539 nothing").expect("write");
    let hits = scan_dir(dir.path(), &needles);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].0.ends_with("deep/segment.bin"));
    assert_eq!(hits[0].1, vec![grouped(&pans[9], "-")]);
    // Every number is a card number to the server's own detector, and all are distinct.
    for p in &pans {
        assert!(ringfence_core::event::looks_like_pan(p), "{p}");
    }
    let mut unique = pans.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), pans.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_keeps_no_card_number() {
    let pans = card_numbers();
    let needles = needles(&pans);
    let root = tempfile::tempdir().expect("dir");
    let data = root.path().join("data");
    let logs = root.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let server = Server::start(&logs, &["--data".into(), data.display().to_string()]);
    let client = HttpClient::new()
        .with_bearer(ADMIN_KEY)
        .with_timeout(Duration::from_secs(30));
    wait_ready(&client, &server.base).await;
    let answers = feed(&client, &server.base, &pans).await;
    // While it runs (the WAL holds the newest pages) and after a clean stop.
    let mut findings = String::new();
    for (path, found) in scan_dir(&data, &needles) {
        findings.push_str(&report(&format!("running: {}", path.display()), &found));
    }
    let all_logs = server.stop();
    for (path, found) in scan_dir(&data, &needles) {
        findings.push_str(&report(&format!("stopped: {}", path.display()), &found));
    }
    // The logs are at debug level and saw the traffic, so their silence means something.
    let text = String::from_utf8_lossy(&all_logs);
    assert!(
        text.contains("DEBUG") && text.contains("/v1/transactions"),
        "the server logged no request at debug level:\n{text}"
    );
    findings.push_str(&report("logs", &found_in(&all_logs, &needles)));
    findings.push_str(&report("HTTP answers", &found_in(&answers, &needles)));
    assert!(findings.is_empty(), "raw card numbers found:\n{findings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_mode_keeps_no_card_number_in_postgres_redis_or_logs() {
    let pans = card_numbers();
    let needles = needles(&pans);
    let postgres = PostgresServer::start();
    let redis = RedisServer::start();
    let root = tempfile::tempdir().expect("dir");
    let data = root.path().join("data");
    let logs = root.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");

    // A subscriber to every channel, from before the first transaction.
    let received = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut pubsub = redis::Client::open(redis.url())
        .expect("client")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    pubsub.psubscribe("*").await.expect("PSUBSCRIBE");
    let listener = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(m) = messages.next().await {
                let mut r = received.lock().unwrap_or_else(|p| p.into_inner());
                r.extend_from_slice(m.get_channel_name().as_bytes());
                r.push(b' ');
                r.extend_from_slice(m.get_payload_bytes());
                r.push(b'\n');
            }
        })
    };

    let server = Server::start(
        &logs,
        &[
            "--data".into(),
            data.display().to_string(),
            "--postgres".into(),
            postgres.url(),
            "--redis".into(),
            redis.url(),
        ],
    );
    let client = HttpClient::new()
        .with_bearer(ADMIN_KEY)
        .with_timeout(Duration::from_secs(30));
    wait_ready(&client, &server.base).await;
    let answers = feed(&client, &server.base, &pans).await;
    // The alerts reach Redis (and its channels) before anything is scanned.
    let mut con = redis.connect().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let accounts: Vec<String> = redis::cmd("SMEMBERS")
            .arg("fraud:alerts:accounts")
            .query_async(&mut con)
            .await
            .expect("SMEMBERS");
        if !accounts.is_empty()
            && !received
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no alert reached Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_logs = server.stop();
    // A moment for the last publications to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    listener.abort();

    let mut findings = String::new();
    // Redis: the scan finds a planted number, then every key and value.
    let planted = grouped(&pans[0], " ");
    redis::cmd("SET")
        .arg("planted:probe")
        .arg(&planted)
        .query_async::<()>(&mut con)
        .await
        .expect("SET");
    let dump = dump_redis(&mut con).await;
    assert_eq!(found_in(dump.as_bytes(), &needles), vec![planted.clone()]);
    redis::cmd("DEL")
        .arg("planted:probe")
        .query_async::<()>(&mut con)
        .await
        .expect("DEL");
    let dump = dump_redis(&mut con).await;
    assert!(
        dump.contains("fraud:alerts:sender:") && dump.contains("ringfence:log"),
        "the alerts and the shared log are in Redis: {dump}"
    );
    findings.push_str(&report("Redis keys", &found_in(dump.as_bytes(), &needles)));
    let heard = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        String::from_utf8_lossy(&heard).contains("fraud_alerts"),
        "the subscriber heard the alerts"
    );
    findings.push_str(&report("Redis pub/sub", &found_in(&heard, &needles)));
    for (path, found) in scan_dir(redis.dir(), &needles) {
        findings.push_str(&report(&format!("redis dir: {}", path.display()), &found));
    }

    // PostgreSQL: a planted row is found, then every row of every table.
    let (pg, conn) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let dump = dump_postgres(&pg).await;
    assert!(dump.contains("scan-10"), "the records are in PostgreSQL");
    findings.push_str(&report(
        "PostgreSQL rows",
        &found_in(dump.as_bytes(), &needles),
    ));
    // Its files too (heap, WAL, server log), once written out; only a second look, as TOAST
    // may compress long values, which the row dump above reads uncompressed.
    pg.batch_execute("CHECKPOINT").await.expect("checkpoint");
    for (path, found) in scan_dir(postgres.dir(), &needles) {
        findings.push_str(&report(
            &format!("postgres dir: {}", path.display()),
            &found,
        ));
    }
    // And the row dump finds a planted number (after the file scan, which it would spoil).
    pg.batch_execute(&format!(
        "CREATE TABLE planted_probe (x TEXT); INSERT INTO planted_probe VALUES ('{}')",
        pans[1]
    ))
    .await
    .expect("plant");
    let dump = dump_postgres(&pg).await;
    assert_eq!(found_in(dump.as_bytes(), &needles), vec![pans[1].clone()]);
    drop(pg);

    // The node's own files (its local buffer) and its logs.
    for (path, found) in scan_dir(&data, &needles) {
        findings.push_str(&report(&path.display().to_string(), &found));
    }
    let text = String::from_utf8_lossy(&all_logs);
    assert!(
        text.contains("DEBUG") && text.contains("/v1/transactions"),
        "the server logged no request at debug level:\n{text}"
    );
    findings.push_str(&report("logs", &found_in(&all_logs, &needles)));
    findings.push_str(&report("HTTP answers", &found_in(&answers, &needles)));
    assert!(findings.is_empty(), "raw card numbers found:\n{findings}");
}
