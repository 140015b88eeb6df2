//! `ringfence export`: stored records out of either store, as NDJSON or CSV, for a warehouse
//! load (`bq load`, or anything that reads newline-delimited JSON or RFC 4180 CSV).
//!
//! # What comes out
//! One record per line, each with a `kind` field (`event`, `decision`, `alert`, `label`), flat
//! snake_case keys and RFC 3339 UTC timestamps. Every record of a kind has the same keys in the
//! same order, absent values as `null` (NDJSON) or an empty cell (CSV). Reasons stay a JSON
//! array in NDJSON (a repeated record for BigQuery) and are a cell of JSON text in CSV. Card
//! numbers cannot appear: the stores only ever held card tokens.
//!
//! # Which records
//! The range is `[since, until)` on event time, the transaction's own timestamp, for events,
//! decisions and alerts. Labels are selected by `labeled_at`, the time the label was recorded,
//! which both stores keep; the labelled transaction's event time is exported with each label as
//! `transaction_timestamp` (null when that transaction is not stored). Kinds come out one after
//! another in the order given, each in sequence (engine) order, all read from one snapshot of
//! the store, so an export run while a server writes is consistent across kinds.
//!
//! # How it reads
//! - SQLite: the database file is opened directly, read-only, not through
//!   [`crate::store::sqlite::SqliteStore::open`], which creates the directory and schema and
//!   starts a writer thread. WAL mode lets this reader run beside a live server's writer; the
//!   rows are stepped through one at a time inside one read transaction.
//! - PostgreSQL: [`PostgresStore::export_records`], a cursor in a read-only repeatable-read
//!   transaction, on a session of its own (no migrations, no writer).
//!
//! Either way memory stays bounded (a row, or a chunk of rows, at a time) and output goes
//! through a [`BufWriter`]. A closed pipe (`ringfence export ... | head`) ends the export
//! quietly; `--out FILE` is written beside its target and renamed into place only when
//! complete, so a failed export never leaves half a file for a load to pick up.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use ringfence_core::event::{Timestamp, Transaction};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::Secret;
use crate::store::postgres::{redact_url, ExportRow, ExportTable, PostgresError, PostgresStore};
use crate::store::{AlertRow, DecisionRecord, LabelRecord};

/// Output buffer: large enough that a pipe write moves many records at once.
const OUT_BUFFER: usize = 64 * 1024;

/// Flags of `ringfence export`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// Start of the range, inclusive: RFC 3339 (`2026-03-01T10:00:00Z`) or a date
    /// (`2026-03-01`, UTC midnight).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Timestamp,
    /// End of the range, exclusive: RFC 3339 or a date (UTC midnight).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: Timestamp,
    /// `ndjson` (one JSON object per line) or `csv` (one header line, RFC 4180; needs exactly
    /// one kind, since kinds have different columns).
    #[arg(long, value_enum)]
    pub format: Format,
    /// Which records, comma-separated, in output order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "events,decisions,alerts,labels"
    )]
    pub kinds: Vec<Kind>,
    /// Data directory of the embedded SQLite store (default `./data`).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Read from PostgreSQL instead (URL or key-value string; the environment variable keeps
    /// a password out of the process list).
    #[arg(
        long,
        value_name = "URL",
        env = "RINGFENCE_POSTGRES",
        hide_env_values = true
    )]
    pub postgres: Option<Secret>,
    /// Write to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Newline-delimited JSON, one object per record.
    Ndjson,
    /// RFC 4180 CSV with a header line; one kind only.
    Csv,
}

/// A kind of record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Transactions as received (validated, card numbers tokenised).
    Events,
    /// The decision on each transaction, with its reasons.
    Decisions,
    /// The analyst queue: every decision above approve.
    Alerts,
    /// Fraud / not-fraud verdicts.
    Labels,
}

impl Kind {
    /// The plural name `--kinds` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Events => "events",
            Kind::Decisions => "decisions",
            Kind::Alerts => "alerts",
            Kind::Labels => "labels",
        }
    }

    /// The singular value of the `kind` field of this kind's records.
    pub fn record_kind(self) -> &'static str {
        match self {
            Kind::Events => "event",
            Kind::Decisions => "decision",
            Kind::Alerts => "alert",
            Kind::Labels => "label",
        }
    }

    /// The columns (NDJSON keys) of this kind's records, in order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Kind::Events => EVENT_COLUMNS,
            Kind::Decisions => DECISION_COLUMNS,
            Kind::Alerts => ALERT_COLUMNS,
            Kind::Labels => LABEL_COLUMNS,
        }
    }

    fn table(self) -> ExportTable {
        match self {
            Kind::Events | Kind::Decisions => ExportTable::Transactions,
            Kind::Alerts => ExportTable::Alerts,
            Kind::Labels => ExportTable::Labels,
        }
    }
}

const EVENT_COLUMNS: &[&str] = &[
    "kind",
    "seq",
    "transaction_id",
    "timestamp",
    "transaction_kind",
    "amount",
    "currency",
    "user_id",
    "card_id",
    "card_token",
    "device_id",
    "ip",
    "email",
    "merchant",
    "merchant_category",
    "terminal_id",
    "store_id",
    "country",
    "lat",
    "lon",
];

const DECISION_COLUMNS: &[&str] = &[
    "kind",
    "seq",
    "transaction_id",
    "timestamp",
    "decision",
    "score",
    "alert",
    "account",
    "category",
    "reasons",
    "shadow_reasons",
    "model_score",
    "challenger_score",
    "anomaly_score",
    "processing_us",
];

const ALERT_COLUMNS: &[&str] = &[
    "kind",
    "alert_id",
    "transaction_id",
    "timestamp",
    "account",
    "decision",
    "score",
    "category",
    "amount",
    "reasons",
];

const LABEL_COLUMNS: &[&str] = &[
    "kind",
    "seq",
    "transaction_id",
    "labeled_at",
    "label",
    "fraud",
    "previous",
    "source",
    "note",
    "transaction_timestamp",
];

/// What to export: a validated set of flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportQuery {
    since: Timestamp,
    until: Timestamp,
    kinds: Vec<Kind>,
    format: Format,
}

impl ExportQuery {
    /// Checks the range and the kinds: `since` before `until`, at least one kind (repeats are
    /// dropped), and exactly one kind for CSV.
    pub fn new(
        since: Timestamp,
        until: Timestamp,
        kinds: &[Kind],
        format: Format,
    ) -> Result<ExportQuery, ExportError> {
        if since >= until {
            return Err(ExportError::Args(format!(
                "--since ({}) must be before --until ({}); the range is [since, until)",
                since.to_rfc3339(),
                until.to_rfc3339()
            )));
        }
        let mut unique: Vec<Kind> = Vec::with_capacity(kinds.len());
        for k in kinds {
            if !unique.contains(k) {
                unique.push(*k);
            }
        }
        if unique.is_empty() {
            return Err(ExportError::Args(
                "--kinds names no kind; use events, decisions, alerts or labels".into(),
            ));
        }
        if format == Format::Csv && unique.len() != 1 {
            let names: Vec<&str> = unique.iter().map(|k| k.as_str()).collect();
            return Err(ExportError::Args(format!(
                "--format csv takes exactly one kind, since kinds have different columns \
                 (got {}); pass e.g. --kinds alerts, or use --format ndjson",
                names.join(",")
            )));
        }
        Ok(ExportQuery {
            since,
            until,
            kinds: unique,
            format,
        })
    }

    /// The query the flags of `ringfence export` describe.
    pub fn from_args(args: &ExportArgs) -> Result<ExportQuery, ExportError> {
        ExportQuery::new(args.since, args.until, &args.kinds, args.format)
    }

    /// The kinds, in output order.
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }
}

/// Records written, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Transaction events.
    pub events: u64,
    /// Decisions.
    pub decisions: u64,
    /// Alerts.
    pub alerts: u64,
    /// Labels.
    pub labels: u64,
}

impl ExportSummary {
    fn count(&mut self, kind: Kind) {
        match kind {
            Kind::Events => self.events += 1,
            Kind::Decisions => self.decisions += 1,
            Kind::Alerts => self.alerts += 1,
            Kind::Labels => self.labels += 1,
        }
    }

    /// All records written.
    pub fn total(&self) -> u64 {
        self.events + self.decisions + self.alerts + self.labels
    }
}

impl fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events, {} decisions, {} alerts, {} labels",
            self.events, self.decisions, self.alerts, self.labels
        )
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The flags do not describe an export.
    #[error("{0}")]
    Args(String),
    /// There is no SQLite store where `--data` points.
    #[error("no Ringfence records store at {0} (is --data the server's data directory?)")]
    NoStore(PathBuf),
    /// The SQLite store could not be read.
    #[error("reading {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The PostgreSQL store could not be read (messages never hold the URL's password).
    #[error("{0}")]
    Postgres(#[from] PostgresError),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The output could not be written.
    #[error("writing {target}: {source}")]
    Output {
        /// `stdout` or the file.
        target: String,
        /// Why.
        source: io::Error,
    },
}

impl ExportError {
    /// Whether the reader of the output went away (`| head`): the end of the export, not a
    /// failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ExportError::Output { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Parses `--since`/`--until`: RFC 3339 (any offset, converted to UTC) or `YYYY-MM-DD` (UTC
/// midnight).
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    let date = time::macros::format_description!("[year]-[month]-[day]");
    let nanos = if let Ok(d) = time::Date::parse(s, date) {
        d.midnight().assume_utc().unix_timestamp_nanos()
    } else if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        t.unix_timestamp_nanos()
    } else {
        return Err(format!(
            "`{s}` is neither RFC 3339 (2026-03-01T10:00:00Z) nor a date (2026-03-01)"
        ));
    };
    // Milliseconds, rounded down, as the stores keep them.
    let ms = nanos.div_euclid(1_000_000);
    i64::try_from(ms)
        .map(Timestamp::from_millis)
        .map_err(|_| format!("`{s}` is out of range"))
}

/// Writes records of one export in its format.
struct RecordWriter<W: Write> {
    out: BufWriter<W>,
    format: Format,
    target: String,
    summary: ExportSummary,
    /// Reused per record so a long export does not allocate a line each time.
    line: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    fn new(out: W, format: Format, target: String) -> Self {
        RecordWriter {
            out: BufWriter::with_capacity(OUT_BUFFER, out),
            format,
            target,
            summary: ExportSummary::default(),
            line: Vec::with_capacity(1024),
        }
    }

    fn io(&self, source: io::Error) -> ExportError {
        ExportError::Output {
            target: self.target.clone(),
            source,
        }
    }

    fn header(&mut self, kind: Kind) -> Result<(), ExportError> {
        if self.format != Format::Csv {
            return Ok(());
        }
        self.line.clear();
        for (i, c) in kind.columns().iter().enumerate() {
            if i > 0 {
                self.line.push(b',');
            }
            csv_field(&mut self.line, c);
        }
        self.line.extend_from_slice(b"\r\n");
        self.out.write_all(&self.line).map_err(|e| self.io(e))
    }

    /// Writes one record of `kind` whose values are in the order of `kind.columns()`.
    fn record(&mut self, kind: Kind, values: &[Value]) -> Result<(), ExportError> {
        let columns = kind.columns();
        debug_assert_eq!(columns.len(), values.len(), "{kind:?} record shape");
        self.line.clear();
        match self.format {
            Format::Ndjson => {
                self.line.push(b'{');
                for (i, (c, v)) in columns.iter().zip(values).enumerate() {
                    if i > 0 {
                        self.line.push(b',');
                    }
                    // Writing JSON into a Vec cannot fail but for a value serde cannot
                    // represent, and a `Value` has none.
                    serde_json::to_writer(&mut self.line, c)
                        .and_then(|()| {
                            self.line.push(b':');
                            serde_json::to_writer(&mut self.line, v)
                        })
                        .map_err(|e| ExportError::Corrupt(e.to_string()))?;
                }
                self.line.extend_from_slice(b"}\n");
            }
            Format::Csv => {
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        self.line.push(b',');
                    }
                    match v {
                        Value::Null => {}
                        Value::String(s) => csv_field(&mut self.line, s),
                        // Numbers and booleans as JSON writes them; reasons as their JSON
                        // text in one cell.
                        other => csv_field(&mut self.line, &other.to_string()),
                    }
                }
                self.line.extend_from_slice(b"\r\n");
            }
        }
        self.out.write_all(&self.line).map_err(|e| self.io(e))?;
        self.summary.count(kind);
        Ok(())
    }

    /// Writes one stored row as a record of `kind`.
    fn row(&mut self, kind: Kind, row: ExportRow) -> Result<(), ExportError> {
        let values = match (kind, row) {
            (Kind::Events, ExportRow::Transaction { seq, event, .. }) => {
                let tx: Transaction = serde_json::from_str(&event)
                    .map_err(|e| ExportError::Corrupt(format!("transaction seq {seq}: {e}")))?;
                event_values(seq, &tx)
            }
            (Kind::Decisions, ExportRow::Transaction { seq, decision, .. }) => {
                let d: DecisionRecord = serde_json::from_str(&decision)
                    .map_err(|e| ExportError::Corrupt(format!("decision seq {seq}: {e}")))?;
                decision_values(seq, &d)
            }
            (Kind::Alerts, ExportRow::Alert(a)) => alert_values(&a),
            (
                Kind::Labels,
                ExportRow::Label {
                    seq,
                    label,
                    transaction_time,
                },
            ) => label_values(seq, &label, transaction_time),
            (kind, _) => {
                return Err(ExportError::Corrupt(format!(
                    "a row of another table came back for {}",
                    kind.as_str()
                )))
            }
        };
        self.record(kind, &values)
    }

    fn finish(mut self) -> Result<(ExportSummary, W), ExportError> {
        self.out.flush().map_err(|e| self.io(e))?;
        let summary = self.summary;
        let target = self.target;
        let out = self.out.into_inner().map_err(|e| ExportError::Output {
            target,
            source: e.into_error(),
        })?;
        Ok((summary, out))
    }
}

/// Appends `s` as one CSV field, quoted (RFC 4180) when it holds a comma, a quote or a line
/// break, or starts or ends with a space that a reader might trim.
fn csv_field(line: &mut Vec<u8>, s: &str) {
    let needs_quotes = s.contains([',', '"', '\r', '\n']) || s.starts_with(' ') || s.ends_with(' ');
    if needs_quotes {
        line.push(b'"');
        for part in s.split('"').enumerate() {
            if part.0 > 0 {
                line.extend_from_slice(b"\"\"");
            }
            line.extend_from_slice(part.1.as_bytes());
        }
        line.push(b'"');
    } else {
        line.extend_from_slice(s.as_bytes());
    }
}

fn time_value(t: Timestamp) -> Value {
    Value::String(t.to_rfc3339())
}

fn id_value<T: AsRef<str>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, |s| Value::String(s.as_ref().to_owned()))
}

/// An event's values, in [`EVENT_COLUMNS`] order.
fn event_values(seq: i64, tx: &Transaction) -> Vec<Value> {
    let id = |v: &Option<ringfence_core::event::EntityId>| id_value(v.as_ref().map(|e| e.as_str()));
    vec![
        json!("event"),
        json!(seq),
        json!(tx.transaction_id.as_str()),
        time_value(tx.timestamp),
        json!(tx.kind.as_str()),
        json!(tx.amount),
        id_value(tx.currency.as_deref()),
        id(&tx.user_id),
        id(&tx.card_id),
        id_value(tx.card_token.as_ref().map(|t| t.as_str())),
        id(&tx.device_id),
        id(&tx.ip),
        id(&tx.email),
        id(&tx.merchant),
        id(&tx.merchant_category),
        id(&tx.terminal_id),
        id(&tx.store_id),
        id_value(tx.country.as_deref()),
        tx.location.map_or(Value::Null, |p| json!(p.lat)),
        tx.location.map_or(Value::Null, |p| json!(p.lon)),
    ]
}

/// A decision's values, in [`DECISION_COLUMNS`] order.
fn decision_values(seq: i64, r: &DecisionRecord) -> Vec<Value> {
    let d = &r.decision;
    vec![
        json!("decision"),
        json!(seq),
        json!(d.transaction_id),
        time_value(r.timestamp),
        json!(d.decision.as_str()),
        json!(d.score),
        json!(d.alert),
        id_value(d.account.as_deref()),
        // Same rule as the alert queue's category: the strongest reason's.
        id_value(d.reasons.first().map(|r| r.category.as_str())),
        json!(d.reasons),
        json!(d.shadow),
        json!(d.model_score),
        json!(d.challenger_score),
        json!(d.anomaly_score),
        json!(r.processing_us),
    ]
}

/// An alert's values, in [`ALERT_COLUMNS`] order.
fn alert_values(a: &AlertRow) -> Vec<Value> {
    vec![
        json!("alert"),
        json!(a.id),
        json!(a.transaction_id),
        time_value(a.timestamp),
        id_value(a.account.as_deref()),
        json!(a.decision),
        json!(a.score),
        json!(a.category),
        json!(a.amount),
        a.reasons.clone(),
    ]
}

/// A label's values, in [`LABEL_COLUMNS`] order.
fn label_values(seq: i64, l: &LabelRecord, transaction_time: Option<Timestamp>) -> Vec<Value> {
    vec![
        json!("label"),
        json!(seq),
        json!(l.transaction_id),
        time_value(l.labeled_at),
        json!(if l.fraud { "fraud" } else { "not_fraud" }),
        json!(l.fraud),
        json!(l.previous),
        id_value(l.source.as_deref()),
        id_value(l.note.as_deref()),
        transaction_time.map_or(Value::Null, time_value),
    ]
}

/// Exports from the SQLite store in `data_dir` into `out` (buffered here) and returns what
/// was written. Reads the database file directly and read-only (see the module docs), so a
/// server may be running on the same directory.
pub fn export_sqlite<W: Write>(
    data_dir: &Path,
    query: &ExportQuery,
    out: W,
) -> Result<ExportSummary, ExportError> {
    export_sqlite_to(data_dir, query, out, "the output").map(|(s, _)| s)
}

fn export_sqlite_to<W: Write>(
    data_dir: &Path,
    query: &ExportQuery,
    out: W,
    target: &str,
) -> Result<(ExportSummary, W), ExportError> {
    let path = data_dir.join("ringfence.db");
    if !path.is_file() {
        return Err(ExportError::NoStore(path));
    }
    let failed = |source| ExportError::Sqlite {
        path: path.clone(),
        source,
    };
    let mut conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(failed)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(failed)?;
    // One read transaction: in WAL mode every statement in it sees the snapshot of its first
    // read, so kinds read one after another agree with each other.
    let t = conn.transaction().map_err(failed)?;
    let mut w = RecordWriter::new(out, query.format, target.to_owned());
    let range = rusqlite::params![query.since.millis(), query.until.millis()];
    for &kind in &query.kinds {
        w.header(kind)?;
        // No index on time: a range export scans the table once in `seq` order (the rowid),
        // which needs no sort and so no temporary storage however large the table.
        let sql = match kind.table() {
            ExportTable::Transactions => {
                "SELECT seq, event, decision FROM transactions
                 WHERE ts >= ?1 AND ts < ?2 ORDER BY seq"
            }
            ExportTable::Alerts => {
                "SELECT id, transaction_id, ts, account, action, score, category, amount, reasons
                 FROM alerts WHERE ts >= ?1 AND ts < ?2 ORDER BY id"
            }
            ExportTable::Labels => {
                "SELECT l.seq, l.transaction_id, l.fraud, l.previous, l.source, l.note,
                        l.labeled_at, t.ts
                 FROM labels l LEFT JOIN transactions t ON t.id = l.transaction_id
                 WHERE l.labeled_at >= ?1 AND l.labeled_at < ?2 ORDER BY l.seq"
            }
        };
        let mut stmt = t.prepare(sql).map_err(failed)?;
        let mut rows = stmt.query(range).map_err(failed)?;
        while let Some(r) = rows.next().map_err(failed)? {
            let row = sqlite_row(kind.table(), r).map_err(|e| match e {
                SqliteRowError::Sqlite(e) => failed(e),
                SqliteRowError::Corrupt(m) => ExportError::Corrupt(m),
            })?;
            w.row(kind, row)?;
        }
    }
    let done = w.finish()?;
    t.finish().map_err(failed)?;
    Ok(done)
}

enum SqliteRowError {
    Sqlite(rusqlite::Error),
    Corrupt(String),
}

impl From<rusqlite::Error> for SqliteRowError {
    fn from(e: rusqlite::Error) -> Self {
        SqliteRowError::Sqlite(e)
    }
}

/// Decodes one row of an export query of `table` (the columns of the SQL above).
fn sqlite_row(table: ExportTable, r: &rusqlite::Row<'_>) -> Result<ExportRow, SqliteRowError> {
    Ok(match table {
        ExportTable::Transactions => ExportRow::Transaction {
            seq: r.get(0)?,
            event: r.get(1)?,
            decision: r.get(2)?,
        },
        ExportTable::Alerts => {
            let id: i64 = r.get(0)?;
            let reasons: String = r.get(8)?;
            ExportRow::Alert(AlertRow {
                id,
                transaction_id: r.get(1)?,
                timestamp: Timestamp::from_millis(r.get(2)?),
                account: r.get(3)?,
                decision: r.get(4)?,
                score: r.get(5)?,
                category: r.get(6)?,
                amount: r.get(7)?,
                reasons: serde_json::from_str(&reasons)
                    .map_err(|e| SqliteRowError::Corrupt(format!("reasons of alert {id}: {e}")))?,
            })
        }
        ExportTable::Labels => ExportRow::Label {
            seq: r.get(0)?,
            label: LabelRecord {
                transaction_id: r.get(1)?,
                fraud: r.get(2)?,
                previous: r.get(3)?,
                source: r.get(4)?,
                note: r.get(5)?,
                labeled_at: Timestamp::from_millis(r.get(6)?),
            },
            transaction_time: r.get::<_, Option<i64>>(7)?.map(Timestamp::from_millis),
        },
    })
}

/// Exports from the PostgreSQL store at `url` into `out` (buffered here) and returns what
/// was written.
pub async fn export_postgres<W: Write>(
    url: &str,
    query: &ExportQuery,
    out: W,
) -> Result<ExportSummary, ExportError> {
    export_postgres_to(url, query, out, "the output")
        .await
        .map(|(s, _)| s)
}

async fn export_postgres_to<W: Write>(
    url: &str,
    query: &ExportQuery,
    out: W,
    target: &str,
) -> Result<(ExportSummary, W), ExportError> {
    let mut w = RecordWriter::new(out, query.format, target.to_owned());
    // CSV has exactly one kind, so its one header goes before every row.
    for &kind in &query.kinds {
        w.header(kind)?;
    }
    // One table pass per kind (events and decisions each read `transactions`), so each kind's
    // records come out together, in the order the kinds were given.
    let tables: Vec<ExportTable> = query.kinds.iter().map(|k| k.table()).collect();
    PostgresStore::export_records(url, &tables, query.since, query.until, |pass, row| {
        w.row(query.kinds[pass], row)
    })
    .await?;
    w.finish()
}

/// Runs `ringfence export` with its flags: to stdout or `--out`, then a one-line summary on
/// stderr. A reader that closed the pipe early ends the export without an error.
pub async fn run(args: &ExportArgs) -> Result<(), ExportError> {
    let query = ExportQuery::from_args(args)?;
    let source = match (&args.data, &args.postgres) {
        (Some(_), Some(_)) => {
            return Err(ExportError::Args(
                "give either --data (the SQLite store) or --postgres (RINGFENCE_POSTGRES), \
                 not both"
                    .into(),
            ))
        }
        (None, Some(url)) => Source::Postgres(url.expose().to_owned()),
        (data, None) => Source::Sqlite(data.clone().unwrap_or_else(|| PathBuf::from("./data"))),
    };
    let result = match &args.out {
        None => export_to(&source, &query, io::stdout(), "stdout".into())
            .await
            .map(|(summary, _)| summary),
        Some(path) => export_to_file(&source, &query, path).await,
    };
    match result {
        Ok(summary) => {
            eprintln!(
                "exported {summary} in [{}, {}) from {source}",
                query.since.to_rfc3339(),
                query.until.to_rfc3339()
            );
            Ok(())
        }
        Err(e) if e.is_broken_pipe() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Where records are read from.
enum Source {
    Sqlite(PathBuf),
    Postgres(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Sqlite(dir) => write!(f, "SQLite store {}", dir.display()),
            Source::Postgres(url) => write!(f, "PostgreSQL {}", redact_url(url)),
        }
    }
}

async fn export_to<W: Write + Send + 'static>(
    source: &Source,
    query: &ExportQuery,
    out: W,
    target: String,
) -> Result<(ExportSummary, W), ExportError> {
    match source {
        Source::Sqlite(dir) => {
            // SQLite reads block: they run on a blocking thread, not on the runtime's.
            let (dir, query) = (dir.clone(), query.clone());
            let task_target = target.clone();
            tokio::task::spawn_blocking(move || export_sqlite_to(&dir, &query, out, &task_target))
                .await
                .map_err(|e| ExportError::Output {
                    target,
                    source: io::Error::other(format!("the export thread failed: {e}")),
                })?
        }
        Source::Postgres(url) => export_postgres_to(url, query, out, &target).await,
    }
}

/// Exports into a temporary file beside `path` and renames it into place once complete and
/// synced, so `path` only ever holds a whole export.
async fn export_to_file(
    source: &Source,
    query: &ExportQuery,
    path: &Path,
) -> Result<ExportSummary, ExportError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let target = path.display().to_string();
    let io_err = |source| ExportError::Output {
        target: target.clone(),
        source,
    };
    let file = std::fs::File::create(&partial).map_err(io_err)?;
    let written = export_to(source, query, file, target.clone())
        .await
        .and_then(|(summary, file)| {
            file.sync_all().map_err(io_err)?;
            std::fs::rename(&partial, path).map_err(io_err)?;
            Ok(summary)
        });
    if written.is_err() {
        // Best effort: the error being reported matters more than a leftover temp file.
        let _ = std::fs::remove_file(&partial);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str) -> String {
        let mut line = Vec::new();
        csv_field(&mut line, s);
        String::from_utf8(line).unwrap_or_default()
    }

    #[test]
    fn csv_fields_are_quoted_only_when_rfc_4180_needs_it() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field(""), "");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("cr\r"), "\"cr\r\"");
        assert_eq!(field(" padded"), "\" padded\"");
    }

    #[test]
    fn every_kind_has_as_many_values_as_columns() {
        let tx: Transaction = serde_json::from_value(json!({
            "transaction_id": "t1", "timestamp": "2026-03-01T10:00:00Z", "kind": "refund",
            "amount": 9.5, "user_id": "u1", "location": {"lat": 1.0, "lon": 2.0},
        }))
        .unwrap_or_else(|e| panic!("transaction: {e}"));
        let decision: DecisionRecord = serde_json::from_value(json!({
            "transaction_id": "t1", "decision": "review", "score": 60.0, "alert": true,
            "reasons": [{"rule": "r", "category": "velocity", "detail": "d", "weight": 60.0}],
            "processing_us": 3, "timestamp": "2026-03-01T10:00:00Z",
        }))
        .unwrap_or_else(|e| panic!("decision: {e}"));
        let alert = AlertRow {
            id: 1,
            transaction_id: "t1".into(),
            timestamp: tx.timestamp,
            account: None,
            decision: "review".into(),
            score: 60.0,
            category: "velocity".into(),
            amount: 9.5,
            reasons: json!([]),
        };
        let label = LabelRecord {
            transaction_id: "t1".into(),
            fraud: false,
            previous: Some(true),
            source: None,
            note: None,
            labeled_at: tx.timestamp,
        };
        let shapes = [
            (Kind::Events, event_values(1, &tx)),
            (Kind::Decisions, decision_values(1, &decision)),
            (Kind::Alerts, alert_values(&alert)),
            (Kind::Labels, label_values(2, &label, None)),
        ];
        for (kind, values) in shapes {
            assert_eq!(values.len(), kind.columns().len(), "{kind:?}");
            assert_eq!(kind.columns()[0], "kind");
            assert_eq!(values[0], json!(kind.record_kind()));
        }
        let event = event_values(1, &tx);
        let at = |c: &str| {
            EVENT_COLUMNS
                .iter()
                .position(|x| *x == c)
                .unwrap_or(usize::MAX)
        };
        assert_eq!(event[at("transaction_kind")], json!("refund"));
        assert_eq!(event[at("lon")], json!(2.0));
        let d = decision_values(1, &decision);
        let at = |c: &str| {
            DECISION_COLUMNS
                .iter()
                .position(|x| *x == c)
                .unwrap_or(usize::MAX)
        };
        assert_eq!(d[at("category")], json!("velocity"));
        assert_eq!(d[at("processing_us")], json!(3));
        let l = label_values(2, &label, None);
        let at = |c: &str| {
            LABEL_COLUMNS
                .iter()
                .position(|x| *x == c)
                .unwrap_or(usize::MAX)
        };
        assert_eq!(l[at("label")], json!("not_fraud"));
        assert_eq!(l[at("previous")], json!(true));
        assert_eq!(l[at("transaction_timestamp")], Value::Null);
    }

    #[test]
    fn queries_check_the_range_and_the_kinds() {
        let (a, b) = (Timestamp::from_millis(0), Timestamp::from_millis(1));
        assert!(ExportQuery::new(b, a, &[Kind::Events], Format::Ndjson).is_err());
        assert!(ExportQuery::new(a, a, &[Kind::Events], Format::Ndjson).is_err());
        assert!(ExportQuery::new(a, b, &[], Format::Ndjson).is_err());
        assert!(ExportQuery::new(a, b, &[Kind::Events, Kind::Alerts], Format::Csv).is_err());
        let q = ExportQuery::new(a, b, &[Kind::Alerts, Kind::Alerts], Format::Csv)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.kinds(), [Kind::Alerts]);
    }
}
