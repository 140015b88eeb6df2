//! `ringfence export` against real stores: records written by a real server (SQLite) or
//! through the PostgreSQL store's writer, exported through the library and the real binary,
//! and read back as NDJSON and as CSV (with a small RFC 4180 reader of its own).

mod helpers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use helpers::services::PostgresServer;
use helpers::spawn_app_with;
use ringfence::export::{self, ExportQuery, Format, Kind};
use ringfence::store::postgres::{self, PostgresStore};
use ringfence::store::{DecisionRecord, LabelRecord, TxRecord, WriteOp};
use ringfence_core::decision::{Action, Decision, Reason};
use ringfence_core::event::{Timestamp, Transaction};
use serde_json::{json, Value};

const ALL: [Kind; 4] = [Kind::Events, Kind::Decisions, Kind::Alerts, Kind::Labels];
/// The card number one transaction arrives with; it must never come out.
const PAN: &str = "4556737586899855";
/// A note that needs CSV quoting: a comma, quotes and a line break.
const NOTE: &str = "called the customer, \"not me\"\nsecond line";

fn t(s: &str) -> Timestamp {
    export::parse_time(s).expect("a valid time")
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    Timestamp::from_millis(i64::try_from(ms).expect("millis fit"))
}

/// The range most tests export: all of 2026-03-01.
fn march_first() -> (Timestamp, Timestamp) {
    (t("2026-03-01"), t("2026-03-02"))
}

/// What the SQLite fixture wrote, as the server answered.
struct Written {
    /// Decision of every transaction on 2026-03-01, by id.
    in_range: BTreeMap<String, Value>,
    /// Ids of transactions just outside the range.
    out_of_range: Vec<String>,
    /// The labelled transaction.
    labelled: String,
}

impl Written {
    fn ids(&self) -> BTreeSet<String> {
        self.in_range.keys().cloned().collect()
    }

    /// Ids of the in-range transactions decided above approve (the alert queue).
    fn alerted(&self) -> BTreeSet<String> {
        self.in_range
            .iter()
            .filter(|(_, d)| d["decision"] != "approve")
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// Posts the fixture to a running server: the fraud team's ring requests, a velocity burst,
/// a transaction with a raw card number, transactions on both edges of the range, a label.
async fn write_fixture(app: &helpers::TestApp) -> Written {
    let mut in_range = BTreeMap::new();
    let post = |body: Value| {
        let app = &app;
        async move {
            let (status, d) = app.post_json("/v1/transactions", &body).await;
            assert_eq!(status, 200, "{body} -> {d}");
            d
        }
    };
    let requests = [
        json!({"transaction_id": "edge-in", "timestamp": "2026-03-01T00:00:00Z", "user_id": "u-edge", "amount": 5.0}),
        json!({"transaction_id": "ring-1", "timestamp": "2026-03-01T09:00:00Z", "user_id": "user-ring-1", "card_id": "card-ring-1", "device_id": "device-shared-123", "amount": 150.00, "merchant": "Online Store"}),
        json!({"transaction_id": "ring-2", "timestamp": "2026-03-01T09:00:05Z", "user_id": "user-ring-2", "card_id": "card-ring-2", "device_id": "device-shared-123", "amount": 150.00, "merchant": "Online Store"}),
        json!({"transaction_id": "pan-1", "timestamp": "2026-03-01T11:00:00Z", "card_number": PAN, "amount": 12.5, "lat": 48.85, "lon": 2.35, "country": "fr"}),
    ];
    for body in requests {
        let id = body["transaction_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        in_range.insert(id, post(body).await);
    }
    for i in 0..5u32 {
        let id = format!("hv-{i}");
        let body = json!({"transaction_id": id, "card_id": "card-hv", "amount": 25.0, "timestamp": format!("2026-03-01T10:00:{:02}Z", i * 3)});
        in_range.insert(id, post(body).await);
    }
    let out_of_range = vec!["edge-before".to_owned(), "edge-until".to_owned()];
    for (id, ts) in [
        ("edge-before", "2026-02-28T23:59:59.999Z"),
        ("edge-until", "2026-03-02T00:00:00Z"),
    ] {
        post(json!({"transaction_id": id, "timestamp": ts, "user_id": "u-edge", "amount": 7.0}))
            .await;
    }
    assert_ne!(
        in_range["ring-2"]["decision"], "approve",
        "the ring is flagged"
    );
    assert_ne!(
        in_range["hv-3"]["decision"], "approve",
        "the burst is flagged"
    );
    let (status, label) = app
        .post_json(
            "/v1/labels",
            &json!({"transaction_id": "ring-2", "label": "fraud", "source": "analyst-7", "note": NOTE}),
        )
        .await;
    assert_eq!(status, 201, "{label}");
    Written {
        in_range,
        out_of_range,
        labelled: "ring-2".into(),
    }
}

/// Starts a server on a fresh directory, writes the fixture and stops it.
async fn sqlite_store() -> (tempfile::TempDir, Written) {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let written = write_fixture(&app).await;
    app.stop().await;
    (dir, written)
}

fn query(since: Timestamp, until: Timestamp, kinds: &[Kind], format: Format) -> ExportQuery {
    ExportQuery::new(since, until, kinds, format).expect("a valid query")
}

fn sqlite_export(dir: &Path, q: &ExportQuery) -> (String, export::ExportSummary) {
    let mut out = Vec::new();
    let summary = export::export_sqlite(dir, q, &mut out).expect("export");
    (String::from_utf8(out).expect("utf-8"), summary)
}

/// Parses NDJSON: every line one JSON object whose keys are exactly its kind's columns.
fn ndjson(text: &str) -> Vec<Value> {
    assert!(text.is_empty() || text.ends_with('\n'), "last line ends");
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let kind = match v["kind"].as_str() {
                Some("event") => Kind::Events,
                Some("decision") => Kind::Decisions,
                Some("alert") => Kind::Alerts,
                Some("label") => Kind::Labels,
                other => panic!("unknown kind {other:?} in {line}"),
            };
            let keys: Vec<&str> = v
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            let mut want: Vec<&str> = kind.columns().to_vec();
            want.sort_unstable();
            assert_eq!(keys, want, "keys of {line}");
            // Keys come in the documented order (the CSV column order).
            let positions: Vec<usize> = kind
                .columns()
                .iter()
                .map(|c| line.find(&format!("\"{c}\":")).expect("key in line"))
                .collect();
            assert!(
                positions.windows(2).all(|w| w[0] < w[1]),
                "key order of {line}"
            );
            v
        })
        .collect()
}

fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

/// The `transaction_id`s of `records`, asserting none repeats.
fn unique_ids(records: &[&Value]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for r in records {
        let id = r["transaction_id"]
            .as_str()
            .expect("transaction_id")
            .to_owned();
        assert!(ids.insert(id.clone()), "{id} exported twice");
    }
    ids
}

fn assert_utc_rfc3339(v: &Value, field: &str) {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"));
    assert!(s.ends_with('Z'), "{field} is UTC: {s}");
    assert!(
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok(),
        "{field} is RFC 3339: {s}"
    );
}

/// A small RFC 4180 reader: quoted fields with doubled quotes, commas and line breaks
/// inside quotes, CRLF record ends.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                assert!(field.is_empty(), "a quote inside an unquoted field: {text}");
                quoted = true;
            }
            ',' => record.push(std::mem::take(&mut field)),
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF");
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            '\n' => panic!("a bare LF ends a record: {text:?}"),
            c => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quote");
    assert!(
        field.is_empty() && record.is_empty(),
        "the last record ends with CRLF"
    );
    records
}

/// Header and rows as maps, checking every row has the header's width.
fn csv_rows(text: &str, kind: Kind) -> Vec<BTreeMap<String, String>> {
    let records = parse_csv(text);
    let (header, rows) = records.split_first().expect("a header line");
    assert_eq!(header, kind.columns(), "CSV header");
    rows.iter()
        .map(|r| {
            assert_eq!(r.len(), header.len(), "row width: {r:?}");
            header.iter().cloned().zip(r.iter().cloned()).collect()
        })
        .collect()
}

fn ringfence(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringfence"))
        .arg("export")
        .args(args)
        .env_remove("RINGFENCE_POSTGRES")
        .output()
        .expect("run ringfence")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn ndjson_from_sqlite_has_every_record_in_range_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let written = write_fixture(&app).await;
    let (since, until) = march_first();
    let q = query(since, until, &ALL, Format::Ndjson);

    // While the server runs: a read-only reader beside its writer.
    let (live, live_summary) = sqlite_export(dir.path(), &q);
    app.stop().await;
    let (text, summary) = sqlite_export(dir.path(), &q);
    assert_eq!(
        text, live,
        "the same export with the server running and stopped"
    );
    assert_eq!(summary, live_summary);

    let records = ndjson(&text);
    assert!(!text.contains(PAN), "a card number came out");
    let events = of_kind(&records, "event");
    let decisions = of_kind(&records, "decision");
    let alerts = of_kind(&records, "alert");
    assert_eq!(unique_ids(&events), written.ids());
    assert_eq!(unique_ids(&decisions), written.ids());
    assert_eq!(unique_ids(&alerts), written.alerted());
    assert!(written.alerted().contains("ring-2") && written.alerted().contains("hv-3"));
    for id in &written.out_of_range {
        assert!(!text.contains(id.as_str()), "{id} is outside the range");
    }
    // The label was recorded now, not on 2026-03-01.
    assert!(
        of_kind(&records, "label").is_empty(),
        "labels go by labeled_at"
    );
    assert_eq!(
        (
            summary.events,
            summary.decisions,
            summary.alerts,
            summary.labels
        ),
        (9, 9, written.alerted().len() as u64, 0)
    );
    // Kinds come out one after another, in the order asked for.
    let order: Vec<&str> = records.iter().filter_map(|r| r["kind"].as_str()).collect();
    let mut grouped = order.clone();
    grouped.dedup();
    assert_eq!(grouped, ["event", "decision", "alert"]);

    for e in &events {
        assert_utc_rfc3339(e, "timestamp");
    }
    let ev = |id: &str| {
        *events
            .iter()
            .find(|e| e["transaction_id"] == id)
            .expect("event")
    };
    assert_eq!(ev("edge-in")["timestamp"], "2026-03-01T00:00:00Z");
    assert_eq!(ev("ring-2")["device_id"], "device-shared-123");
    assert_eq!(ev("ring-2")["amount"], 150.0);
    assert_eq!(ev("ring-2")["transaction_kind"], "payment");
    assert_eq!(ev("ring-2")["card_token"], Value::Null);
    let pan = ev("pan-1");
    assert!(
        pan["card_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("ct_")),
        "{pan}"
    );
    assert_eq!(
        (
            pan["lat"].clone(),
            pan["lon"].clone(),
            pan["country"].clone()
        ),
        (json!(48.85), json!(2.35), json!("FR"))
    );

    for d in &decisions {
        let id = d["transaction_id"].as_str().unwrap_or_default();
        let answered = &written.in_range[id];
        assert_eq!(d["decision"], answered["decision"], "{id}");
        assert_eq!(d["score"], answered["score"], "{id}");
        assert_eq!(d["alert"], answered["alert"], "{id}");
        assert_eq!(d["reasons"], answered["reasons"], "{id}");
        assert_eq!(d["timestamp"], answered["timestamp"], "{id}");
        assert!(d["processing_us"].is_u64());
    }
    let hv3 = decisions
        .iter()
        .find(|d| d["transaction_id"] == "hv-3")
        .expect("hv-3");
    assert_eq!(hv3["category"], "velocity");
    assert_eq!(hv3["reasons"][0]["rule"], "card_velocity");

    let ring = alerts
        .iter()
        .find(|a| a["transaction_id"] == "ring-2")
        .expect("ring alert");
    assert_eq!(ring["category"], "ring");
    assert_eq!(ring["account"], "user-ring-2");
    assert_eq!(ring["timestamp"], "2026-03-01T09:00:05Z");
    assert!(ring["reasons"]
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x["rule"] == "shared_device")));
    assert!(ring["alert_id"].is_i64());
}

#[tokio::test]
async fn labels_are_exported_by_the_time_they_were_recorded() {
    let (dir, written) = sqlite_store().await;
    let now = now().millis();
    let day = 86_400_000;
    let q = query(
        Timestamp::from_millis(now - day),
        Timestamp::from_millis(now + day),
        &ALL,
        Format::Ndjson,
    );
    let (text, summary) = sqlite_export(dir.path(), &q);
    let records = ndjson(&text);
    // The transactions happened on 2026-03-01: only the label is in today's range.
    assert_eq!(records.len(), 1, "{text}");
    assert_eq!(summary.labels, 1);
    let l = &records[0];
    assert_eq!(l["kind"], "label");
    assert_eq!(l["transaction_id"], written.labelled.as_str());
    assert_eq!(
        (l["label"].clone(), l["fraud"].clone()),
        (json!("fraud"), json!(true))
    );
    assert_eq!(l["previous"], Value::Null);
    assert_eq!(l["source"], "analyst-7");
    assert_eq!(l["note"], NOTE);
    assert_eq!(l["transaction_timestamp"], "2026-03-01T09:00:05Z");
    assert_utc_rfc3339(l, "labeled_at");
    let at = t(l["labeled_at"].as_str().unwrap_or_default()).millis();
    assert!(
        (now - day..now).contains(&at),
        "labeled_at is when it was posted"
    );

    // And as CSV through the binary, to a file: the note survives quoting.
    let out = dir.path().join("labels.csv");
    let o = ringfence(&[
        "--data",
        dir.path().to_str().expect("utf-8"),
        "--since",
        &Timestamp::from_millis(now - day).to_rfc3339(),
        "--until",
        &Timestamp::from_millis(now + day).to_rfc3339(),
        "--format",
        "csv",
        "--kinds",
        "labels",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "--out keeps stdout empty");
    assert!(
        stderr(&o).contains("exported 0 events, 0 decisions, 0 alerts, 1 labels"),
        "{}",
        stderr(&o)
    );
    let rows = csv_rows(
        &std::fs::read_to_string(&out).expect("the file"),
        Kind::Labels,
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["note"], NOTE);
    assert_eq!(rows[0]["fraud"], "true");
    assert_eq!(rows[0]["previous"], "", "null is an empty cell");
    assert_eq!(rows[0]["transaction_id"], written.labelled);
    assert!(
        !dir.path().join("labels.csv.partial").exists(),
        "the temp file is renamed"
    );
}

#[tokio::test]
async fn the_binary_writes_alerts_as_csv_to_stdout() {
    let (dir, written) = sqlite_store().await;
    let data = dir.path().to_str().expect("utf-8");
    let o = ringfence(&[
        "--data",
        data,
        "--since",
        "2026-03-01",
        "--until",
        "2026-03-02T00:00:00+00:00",
        "--format",
        "csv",
        "--kinds",
        "alerts",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).expect("utf-8");
    let rows = csv_rows(&text, Kind::Alerts);
    let ids: Vec<String> = rows.iter().map(|r| r["transaction_id"].clone()).collect();
    assert_eq!(
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        written.alerted()
    );
    assert_eq!(ids.len(), written.alerted().len(), "each alert once");
    for r in &rows {
        assert_eq!(r["kind"], "alert");
        assert!(r["timestamp"].starts_with("2026-03-01T") && r["timestamp"].ends_with('Z'));
        let reasons: Value = serde_json::from_str(&r["reasons"]).expect("reasons are JSON");
        assert!(
            reasons.as_array().is_some_and(|a| !a.is_empty()),
            "{reasons}"
        );
        let answered = &written.in_range[&r["transaction_id"]];
        assert_eq!(
            r["decision"],
            answered["decision"].as_str().unwrap_or_default()
        );
    }
    let ring = rows
        .iter()
        .find(|r| r["transaction_id"] == "ring-2")
        .expect("ring-2");
    assert_eq!(
        (ring["category"].as_str(), ring["account"].as_str()),
        ("ring", "user-ring-2")
    );

    // NDJSON of everything through the binary matches the library's output byte for byte.
    let o = ringfence(&[
        "--data",
        data,
        "--since",
        "2026-03-01",
        "--until",
        "2026-03-02",
        "--format",
        "ndjson",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (library, _) = sqlite_export(
        dir.path(),
        &query(march_first().0, march_first().1, &ALL, Format::Ndjson),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), library);
}

#[tokio::test]
async fn a_closed_pipe_ends_the_export_quietly() {
    let (dir, _) = sqlite_store().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringfence"))
        .args(["export", "--data"])
        .arg(dir.path())
        .args([
            "--since",
            "2026-03-01",
            "--until",
            "2026-03-02",
            "--format",
            "ndjson",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // The reader goes away before the export writes anything (as `| head -0` would).
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("error"), "{}", stderr(&o));
}

#[test]
fn bad_arguments_fail_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let range = ["--since", "2026-03-01", "--until", "2026-03-02"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--format", "csv"], "exactly one kind"),
        (
            vec!["--format", "csv", "--kinds", "alerts,labels"],
            "exactly one kind",
        ),
        (vec!["--format", "xml"], "xml"),
        (
            vec!["--format", "ndjson", "--kinds", "alerts,cards"],
            "cards",
        ),
        (
            vec!["--format", "ndjson", "--data", data],
            "no Ringfence records store",
        ),
        (
            vec![
                "--format",
                "ndjson",
                "--data",
                data,
                "--postgres",
                "postgres://u@127.0.0.1:1/db",
            ],
            "not both",
        ),
    ];
    for (args, want) in cases {
        let mut all = range.to_vec();
        all.extend(&args);
        let o = ringfence(&all);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?} wrote to stdout");
    }
    let times: Vec<([&str; 4], &str)> = vec![
        (
            ["--since", "2026-03-02", "--until", "2026-03-01"],
            "must be before",
        ),
        (
            ["--since", "2026-03-01", "--until", "2026-03-01"],
            "must be before",
        ),
        (["--since", "yesterday", "--until", "2026-03-01"], "--since"),
        (
            ["--since", "2026-03-01", "--until", "2026-03-01 10:00"],
            "--until",
        ),
    ];
    for (args, want) in times {
        let mut all = args.to_vec();
        all.extend(["--format", "ndjson", "--data", data]);
        let o = ringfence(&all);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    // An unreachable server: the error names it without the password.
    let mut all = range.to_vec();
    all.extend([
        "--format",
        "ndjson",
        "--postgres",
        "postgres://ringfence:s3cretpw@127.0.0.1:1/records",
    ]);
    let o = ringfence(&all);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("127.0.0.1"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("s3cretpw"), "{}", stderr(&o));
}

#[test]
fn times_are_rfc3339_or_dates_at_utc_midnight() {
    assert_eq!(t("2026-03-01").millis(), 1_772_323_200_000);
    assert_eq!(t("2026-03-01T00:00:00Z"), t("2026-03-01"));
    assert_eq!(t("2026-03-01T01:00:00+01:00"), t("2026-03-01"));
    assert_eq!(t("2026-03-01T00:00:00.250Z").millis(), 1_772_323_200_250);
    for bad in ["2026-3-1", "2026-03-01 00:00:00", "1772323200", ""] {
        assert!(export::parse_time(bad).is_err(), "{bad} parsed");
    }
}

/// Event times of the PostgreSQL fixture: 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;

fn decided(id: &str, at: i64, action: Action, category: Option<&str>) -> WriteOp {
    let tx: Transaction = serde_json::from_value(json!({
        "transaction_id": id,
        "timestamp": Timestamp::from_millis(T0 + at),
        "kind": "payment",
        "amount": 40.5,
        "user_id": format!("user-{id}"),
        "card_id": "ct_0123456789abcdef0123456789abcdef",
        "merchant": "coffee, corner",
    }))
    .expect("a valid transaction");
    let reasons = category
        .map(|c| {
            vec![Reason {
                rule: format!("{c}_rule"),
                category: c.to_owned(),
                detail: format!("{c} looked \"odd\""),
                weight: 40.0,
                action: None,
                factors: Vec::new(),
            }]
        })
        .unwrap_or_default();
    WriteOp::Tx(Box::new(TxRecord {
        alert_event: None,
        conflicts: Vec::new(),
        origin: None,
        decision: DecisionRecord {
            decision: Decision {
                transaction_id: id.to_owned(),
                decision: action,
                score: if action == Action::Approve { 5.0 } else { 80.0 },
                reasons,
                shadow: Vec::new(),
                alert: action > Action::Approve,
                account: Some(format!("user-{id}")),
                model_score: Some(0.25),
                challenger_score: None,
                anomaly_score: None,
            },
            processing_us: 42,
            degraded: false,
            decided_at: None,
            timestamp: tx.timestamp,
        },
        tx,
    }))
}

fn label(id: &str, at: i64, fraud: bool) -> WriteOp {
    WriteOp::Label(LabelRecord {
        transaction_id: id.to_owned(),
        fraud,
        previous: None,
        source: Some("chargebacks".into()),
        note: Some(NOTE.into()),
        labeled_at: Timestamp::from_millis(T0 + at),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_exports_the_same_records_as_ndjson_and_csv() {
    let server = PostgresServer::start();
    let store = PostgresStore::connect(&server.url())
        .await
        .expect("connect");
    let hour = 3_600_000;
    let ops = vec![
        decided("pg-before", -1, Action::Approve, None),
        decided("pg-a", 0, Action::Approve, None),
        decided("pg-b", hour, Action::Review, Some("velocity")),
        decided("pg-c", 2 * hour, Action::Block, Some("ring")),
        decided("pg-until", 24 * hour, Action::Block, Some("ring")),
        // Labels go by when they were recorded: one in range on an out-of-range
        // transaction, one after the range on an in-range one, one on no stored transaction.
        label("pg-before", 3 * hour, true),
        label("pg-b", 25 * hour, false),
        label("pg-unknown", 4 * hour, true),
    ];
    let permits = store
        .writer()
        .try_reserve_many(ops.len())
        .expect("queue room");
    let acks: Vec<_> = permits
        .zip(ops)
        .map(|(p, op)| postgres::send(p, op))
        .collect();
    for ack in acks {
        ack.await.expect("answered").expect("written");
    }
    let (since, until) = (
        Timestamp::from_millis(T0),
        Timestamp::from_millis(T0 + 24 * hour),
    );

    let mut out = Vec::new();
    let summary = export::export_postgres(
        &server.url(),
        &query(since, until, &ALL, Format::Ndjson),
        &mut out,
    )
    .await
    .expect("export");
    let text = String::from_utf8(out).expect("utf-8");
    let records = ndjson(&text);
    let ids = |kind| unique_ids(&of_kind(&records, kind));
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(ids("event"), set(&["pg-a", "pg-b", "pg-c"]));
    assert_eq!(ids("decision"), set(&["pg-a", "pg-b", "pg-c"]));
    assert_eq!(ids("alert"), set(&["pg-b", "pg-c"]));
    assert_eq!(ids("label"), set(&["pg-before", "pg-unknown"]));
    assert_eq!(
        (
            summary.events,
            summary.decisions,
            summary.alerts,
            summary.labels
        ),
        (3, 3, 2, 2)
    );

    let find = |kind: &str, id: &str| {
        (*of_kind(&records, kind)
            .iter()
            .find(|r| r["transaction_id"] == id)
            .expect("record"))
        .clone()
    };
    let b = find("decision", "pg-b");
    assert_eq!(
        (b["decision"].clone(), b["category"].clone()),
        (json!("review"), json!("velocity"))
    );
    assert_eq!(b["model_score"], 0.25);
    assert_eq!(b["timestamp"], "2024-01-01T01:00:00Z");
    assert_eq!(find("event", "pg-b")["merchant"], "coffee, corner");
    let c = find("alert", "pg-c");
    assert_eq!(
        (c["decision"].clone(), c["category"].clone()),
        (json!("block"), json!("ring"))
    );
    assert_eq!(c["reasons"][0]["detail"], "ring looked \"odd\"");
    let l = find("label", "pg-before");
    assert_eq!(l["labeled_at"], "2024-01-01T03:00:00Z");
    assert_eq!(l["transaction_timestamp"], "2023-12-31T23:59:59.999Z");
    assert_eq!(
        find("label", "pg-unknown")["transaction_timestamp"],
        Value::Null
    );

    // CSV of the alerts through the library.
    let mut out = Vec::new();
    export::export_postgres(
        &server.url(),
        &query(since, until, &[Kind::Alerts], Format::Csv),
        &mut out,
    )
    .await
    .expect("csv export");
    let rows = csv_rows(&String::from_utf8(out).expect("utf-8"), Kind::Alerts);
    let csv_ids: Vec<&str> = rows.iter().map(|r| r["transaction_id"].as_str()).collect();
    assert_eq!(csv_ids, ["pg-b", "pg-c"], "in engine order");
    let reasons: Value = serde_json::from_str(&rows[1]["reasons"]).expect("JSON reasons");
    assert_eq!(reasons[0]["detail"], "ring looked \"odd\"");

    // And events as CSV through the binary, with a password in the URL that the summary hides
    // (the test server trusts loopback, so any password connects).
    let url = format!(
        "postgres://postgres:hunter2pw@127.0.0.1:{}/postgres",
        server.port
    );
    let o = Command::new(env!("CARGO_BIN_EXE_ringfence"))
        .args([
            "export",
            "--format",
            "csv",
            "--kinds",
            "events",
            "--since",
            "2024-01-01",
            "--until",
            "2024-01-02",
        ])
        .env("RINGFENCE_POSTGRES", &url)
        .output()
        .expect("run ringfence");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("3 events"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hunter2pw"), "{}", stderr(&o));
    let rows = csv_rows(&String::from_utf8(o.stdout).expect("utf-8"), Kind::Events);
    let csv_ids: Vec<&str> = rows.iter().map(|r| r["transaction_id"].as_str()).collect();
    assert_eq!(csv_ids, ["pg-a", "pg-b", "pg-c"]);
    assert_eq!(rows[0]["merchant"], "coffee, corner");
    assert_eq!(rows[0]["amount"], "40.5");
    store.writer().close().await;
}
