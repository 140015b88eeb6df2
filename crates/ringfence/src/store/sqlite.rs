//! The embedded records store: an append-only record log acknowledged on fsync, and SQLite
//! (WAL) built from it by an indexer thread, off the acknowledgement path.
//!
//! Why two threads and a log: a decision is acknowledged once durable, and the cheapest
//! durable write is one sequential append and one `fdatasync` per group of records (the
//! log-writer thread; see [`super::log`]). SQLite's B-tree inserts, WAL frames and
//! checkpoints are the expensive part; the indexer does them in large transactions with
//! `synchronous = NORMAL`, storing how far it got (`meta.log_indexed_seq`) in the same commit,
//! and deletes a log segment once a checkpoint has made its records durable in SQLite. At
//! open, the log's tail beyond that position is indexed before anything reads, so a crash
//! anywhere loses nothing acknowledged and replays exactly once.
//!
//! Reads use a small pool of separate connections (WAL lets them run alongside the indexer)
//! on tokio's blocking threads; each first waits (bounded) until the indexer has passed
//! everything acknowledged when the read began, so a caller reads its own writes.
//!
//! Duplicate ids are checked without a read per request: [`SqliteStore::may_hold`] answers
//! from a filter of every stored id's hash, and only a hit reads the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringfence_core::event::Transaction;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::log::{self, LogFiles};
pub use super::writer::{send, QueuedWrite, WritePermit, Writer};
use super::{
    AlertQuery, AlertRow, HistoryItem, LabelRecord, StoreCounts, StoreError, StoreSeen, TxRecord,
    TxSummary, WriteOp,
};
use ringfence_core::retail::ReturnConflict;

/// Most writes appended (and fsynced) as one group.
const MAX_GROUP: usize = 2048;
/// Writes that may wait for the writer before submitters are turned away.
pub const WRITE_QUEUE: usize = 100_000;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS transactions (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts INTEGER NOT NULL,
    amount REAL NOT NULL,
    action TEXT NOT NULL,
    score REAL NOT NULL,
    alert INTEGER NOT NULL,
    event TEXT NOT NULL,
    decision TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tx_entities (
    entity TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (entity, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    transaction_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    account TEXT,
    action TEXT NOT NULL,
    score REAL NOT NULL,
    category TEXT NOT NULL,
    amount REAL NOT NULL,
    reasons TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_account ON alerts (account, id);
CREATE TABLE IF NOT EXISTS labels (
    seq INTEGER PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    fraud INTEGER NOT NULL,
    previous INTEGER,
    source TEXT,
    note TEXT,
    labeled_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_tx ON labels (transaction_id, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alert_outbox (seq INTEGER PRIMARY KEY, event TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log_outbox (seq INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS site_offsets (origin TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS site_conflicts (
    key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    conflict TEXT NOT NULL
);
"#;

/// Columns added after the first release, for data directories written before them:
/// (table, column, type).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // Sites: the site a replicated record was decided at, and its sequence number there
    // (both NULL for this site's own records).
    ("transactions", "origin", "TEXT"),
    ("transactions", "origin_seq", "INTEGER"),
];

/// Adds what [`ADDED_COLUMNS`] lists to a database that lacks it, then the indexes on them.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    for (table, column, ty) in ADDED_COLUMNS {
        let present = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
        }
    }
    // What a site serves its peers: its own records in order.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS transactions_own ON transactions (seq) WHERE origin IS NULL",
    )?;
    Ok(())
}

/// The embedded store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    path: PathBuf,
    readers: Arc<Mutex<Vec<Connection>>>,
    writer: Writer,
    log: Arc<LogState>,
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Reads are point lookups and short index scans: a page cache and mmap keep them off
    // the read() syscall path.
    conn.pragma_update(None, "cache_size", -16_384)?;
    conn.pragma_update(None, "mmap_size", 1_i64 << 30)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, indexes what its record log holds
    /// beyond SQLite, and starts the log-writer and indexer threads.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(data_dir, log::SEGMENT_BYTES)
    }

    /// [`SqliteStore::open`] with log segments of `segment_bytes` (tests use small ones).
    pub fn open_with(data_dir: &Path, segment_bytes: u64) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("ringfence.db");
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // The log holds every acknowledged record until a checkpoint has made SQLite's copy
        // durable, so SQLite's commits need not be synced one by one.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // SQLite's default 2 MB page cache makes every index insert re-read pages through
        // syscalls once the tables outgrow it; 64 MB keeps the hot index pages resident.
        conn.pragma_update(None, "cache_size", -65_536)?;
        // A checkpoint copies every page the WAL holds into the database file and syncs it.
        // The index pages are written at random places, so the same pages are dirtied again
        // and again: checkpointing every 64 MB of WAL instead of SQLite's 4 MB writes each of
        // them back once for many commits.
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let stored_max: i64 = conn.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM transactions), 0),
                        COALESCE((SELECT MAX(seq) FROM labels), 0))",
            [],
            |r| r.get(0),
        )?;
        let indexed: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'log_indexed_seq'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .and_then(|v| v.parse().ok())
            // A data directory from before the log: everything in it is indexed.
            .unwrap_or(stored_max);
        let log_dir = data_dir.join("log");
        let mut replayed = 0u64;
        let mut last_replayed = indexed;
        let (opened, closed) =
            LogFiles::open(&log_dir, segment_bytes, indexed, |bytes, offsets| {
                let Some(&last_at) = offsets.last() else {
                    return Ok(());
                };
                let t = conn.transaction()?;
                index_frames(&t, bytes, Some(offsets))?;
                let last = log::frame_at(bytes, last_at).map_or(last_replayed, |f| f.seq);
                set_indexed(&t, last)?;
                t.commit()?;
                replayed += offsets.len() as u64;
                last_replayed = last;
                Ok(())
            })?;
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                "indexed the record log's tail left by the last run"
            );
        }
        let mut files = opened.files;
        let log_last = opened.last_seq.unwrap_or(0);
        let last = stored_max.max(log_last).max(last_replayed);
        // Every segment but the current one is wholly indexed now: once SQLite has it on
        // disk, it goes.
        let closed: std::collections::VecDeque<(u64, i64)> = closed.into();
        let checkpointed = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map(|(busy, frames, done)| busy == 0 && done >= frames)
            .unwrap_or(false);
        let mut closed = closed;
        if checkpointed {
            while let Some(&(n, _)) = closed.front() {
                log::delete_segment(&log_dir, n)?;
                closed.pop_front();
            }
        }
        let ids = log::IdFilter::default();
        {
            let mut stmt = conn.prepare("SELECT id FROM transactions")?;
            let mut rows = stmt.query([])?;
            let mut chunk: Vec<String> = Vec::with_capacity(4096);
            while let Some(row) = rows.next()? {
                chunk.push(row.get(0)?);
                if chunk.len() == 4096 {
                    ids.insert(chunk.iter().map(String::as_str));
                    chunk.clear();
                }
            }
            ids.insert(chunk.iter().map(String::as_str));
        }
        let space = files
            .ensure_spare()
            .err()
            .map(|e| Fault::io("allocating the next log segment", &e));
        let log = Arc::new(LogState {
            dir: log_dir,
            files: Mutex::new(files),
            closed: Mutex::new(closed),
            ids,
            acked: AtomicI64::new(last),
            indexed: watch::Sender::new(last),
            acked_bytes: AtomicU64::new(0),
            indexed_bytes: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            grouped: AtomicU64::new(0),
            faulty: AtomicBool::new(false),
            faults: Mutex::new(Faults::default()),
            flush_wanted: AtomicBool::new(false),
        });
        if let Some(fault) = space {
            tracing::error!(error = %fault.message, "new work is refused until there is space");
            log.set_fault(|f| f.space = Some(fault));
        }
        let (queue, rx) = mpsc::channel(WRITE_QUEUE);
        let (index_tx, index_rx) = std::sync::mpsc::channel();
        let for_indexer = log.clone();
        std::thread::Builder::new()
            .name("sqlite-indexer".into())
            .spawn(move || {
                lower_priority();
                indexer_loop(conn, index_rx, for_indexer)
            })?;
        let for_writer = log.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || log_writer_loop(for_writer, rx, index_tx, last + 1))?;
        Ok(SqliteStore {
            path,
            readers: Arc::new(Mutex::new(Vec::new())),
            writer: Writer::new(queue),
            log,
        })
    }

    /// A value from the `meta` table (settings the data was written under).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read_blocking(|c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    /// Sets a `meta` value (at start only, before the writer takes traffic).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// The database file (modules with tables of their own, such as cases and access
    /// control, open it too).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The write side.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Runs `f` with a read connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.log.wait_indexed().await;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(f))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` with a read connection on the current thread.
    pub fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => open_reader(&self.path)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < 8 {
                pool.push(conn);
            }
        }
        out
    }

    /// The stored decision of each of `ids` that exists, as JSON text.
    pub async fn decisions_of(
        &self,
        ids: Vec<String>,
    ) -> Result<HashMap<String, String>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT decision FROM transactions WHERE id = ?1")?;
            let mut out = HashMap::new();
            for id in ids {
                if let Some(d) = stmt
                    .query_row([&id], |r| r.get::<_, String>(0))
                    .optional()?
                {
                    out.insert(id, d);
                }
            }
            Ok(out)
        })
        .await
    }

    /// The stored decision of one id, on the current thread.
    pub fn decision_blocking(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.log.wait_indexed_blocking();
        self.read_blocking(|c| {
            Ok(
                c.prepare_cached("SELECT decision FROM transactions WHERE id = ?1")?
                    .query_row([id], |r| r.get::<_, String>(0))
                    .optional()?,
            )
        })
    }

    /// A stored transaction with its decision and labels (and, when it was replicated from
    /// another site, that site as `origin`).
    pub async fn transaction(&self, id: String) -> Result<Option<serde_json::Value>, StoreError> {
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT seq, event, decision, origin FROM transactions WHERE id = ?1",
                    [&id],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<String>>(3)?,
                        ))
                    },
                )
                .optional()?;
            let Some((seq, event, decision, origin)) = row else {
                return Ok(None);
            };
            let labels = labels_of(c, &id)?;
            let mut out = serde_json::json!({
                "seq": seq,
                "transaction": parse_json(&event)?,
                "decision": parse_json(&decision)?,
                "labels": labels,
            });
            if let Some(origin) = origin {
                out["origin"] = serde_json::Value::String(origin);
            }
            Ok(Some(out))
        })
        .await
    }

    /// How far this store holds each other site's records (its offsets, by site).
    pub fn site_offsets(&self) -> Result<HashMap<String, i64>, StoreError> {
        self.read_blocking(|c| {
            let mut stmt = c.prepare("SELECT origin, seq FROM site_offsets")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Up to `limit` of this site's own records (not those replicated from others) after
    /// sequence number `after`, in order, as (seq, event JSON, decision JSON): what peers
    /// replicate.
    pub async fn own_records_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, event, decision FROM transactions
                 WHERE origin IS NULL AND seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// The sequence number of this site's newest own record (0 when none).
    pub async fn own_head(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM transactions WHERE origin IS NULL",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// The stored event of a transaction and its latest label.
    pub async fn event_and_label(
        &self,
        id: String,
    ) -> Result<Option<(Transaction, Option<bool>)>, StoreError> {
        self.read(move |c| {
            let event: Option<String> = c
                .query_row("SELECT event FROM transactions WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(event) = event else { return Ok(None) };
            let tx: Transaction =
                serde_json::from_str(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let latest: Option<bool> = c
                .query_row(
                    "SELECT fraud FROM labels WHERE transaction_id = ?1 ORDER BY seq DESC LIMIT 1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(Some((tx, latest)))
        })
        .await
    }

    /// Newest transactions of an entity (`kind:id`), newest first.
    pub async fn entity_transactions(
        &self,
        entity: String,
        limit: u32,
    ) -> Result<Vec<(TxSummary, Transaction)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT t.id, t.ts, t.amount, t.action, t.score, t.event
                 FROM tx_entities e JOIN transactions t ON t.seq = e.seq
                 WHERE e.entity = ?1 ORDER BY e.seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![entity, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, f64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, ts, amount, action, score, event) = row?;
                let tx: Transaction =
                    serde_json::from_str(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                out.push((
                    TxSummary {
                        transaction_id: id,
                        timestamp: ringfence_core::event::Timestamp::from_millis(ts),
                        amount,
                        decision: action,
                        score,
                        merchant: tx.merchant.as_ref().map(|m| m.as_str().to_owned()),
                    },
                    tx,
                ));
            }
            Ok(out)
        })
        .await
    }

    /// The stores of the latest `window` records, by name, with their counts. Reads the
    /// newest records by sequence (the primary key) and their events' store and kind, so its
    /// cost is bounded by `window` whatever the size of the history.
    pub async fn recent_stores(&self, window: u32) -> Result<Vec<StoreSeen>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT store, COUNT(*), SUM(kind = 'purchase'), SUM(kind = 'return'),
                        SUM(action <> 'approve'), SUM(action = 'block'), MAX(ts)
                 FROM (SELECT json_extract(event, '$.store_id') AS store,
                              json_extract(event, '$.kind') AS kind, action, ts
                       FROM transactions ORDER BY seq DESC LIMIT ?1)
                 WHERE store IS NOT NULL GROUP BY store ORDER BY store",
            )?;
            let rows = stmt.query_map(params![window], |r| {
                Ok(StoreSeen {
                    store_id: r.get(0)?,
                    transactions: r.get::<_, i64>(1)? as u64,
                    purchases: r.get::<_, i64>(2)? as u64,
                    returns: r.get::<_, i64>(3)? as u64,
                    flagged: r.get::<_, i64>(4)? as u64,
                    blocked: r.get::<_, i64>(5)? as u64,
                    last_at: ringfence_core::event::Timestamp::from_millis(r.get(6)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Alerts, newest first.
    pub async fn alerts(&self, q: AlertQuery) -> Result<Vec<AlertRow>, StoreError> {
        self.read(move |c| {
            let limit = q.limit.unwrap_or(100).clamp(1, 1000);
            let mut stmt = c.prepare_cached(
                "SELECT id, transaction_id, ts, account, action, score, category, amount, reasons
                 FROM alerts
                 WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR category = ?2)
                   AND (?3 IS NULL OR account = ?3) AND (?4 IS NULL OR action = ?4)
                 ORDER BY id DESC LIMIT ?5",
            )?;
            let rows = stmt.query_map(
                params![q.before, q.category, q.account, q.decision, limit],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, f64>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, f64>(7)?,
                        r.get::<_, String>(8)?,
                    ))
                },
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (id, transaction_id, ts, account, decision, score, category, amount, reasons) =
                    row?;
                out.push(AlertRow {
                    id,
                    transaction_id,
                    timestamp: ringfence_core::event::Timestamp::from_millis(ts),
                    account,
                    decision,
                    score,
                    category,
                    amount,
                    reasons: parse_json(&reasons)?,
                });
            }
            Ok(out)
        })
        .await
    }

    /// How many records the store holds.
    pub async fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.read(|c| {
            let count = |sql: &str| -> Result<u64, StoreError> {
                Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
            };
            Ok(StoreCounts {
                transactions: count("SELECT COUNT(*) FROM transactions")?,
                alerts: count("SELECT COUNT(*) FROM alerts")?,
                labels: count("SELECT COUNT(*) FROM labels")?,
            })
        })
        .await
    }

    /// The latest event time of a stored transaction (`None` when none is stored): where a
    /// backtest's window ends. A scan of the table (there is no index on event time).
    pub async fn latest_event_time(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            Ok(c.query_row("SELECT MAX(ts) FROM transactions", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?)
        })
        .await
    }

    /// Streams stored history (transactions and labels merged by sequence number) into `f`,
    /// on the current thread. Used once at start to rebuild entity state.
    pub fn for_each_history(&self, mut f: impl FnMut(HistoryItem)) -> Result<u64, StoreError> {
        self.read_blocking(|c| {
            let mut labels_stmt = c.prepare(
                "SELECT l.seq, l.fraud, l.previous, t.event
                 FROM labels l JOIN transactions t ON t.id = l.transaction_id ORDER BY l.seq",
            )?;
            let mut labels = labels_stmt.query([])?;
            let mut next_label = labels.next()?.map(label_row).transpose()?;
            let mut tx_stmt =
                c.prepare("SELECT seq, alert, event, action FROM transactions ORDER BY seq")?;
            let mut txs = tx_stmt.query([])?;
            let mut n = 0u64;
            while let Some(row) = txs.next()? {
                let seq: i64 = row.get(0)?;
                while let Some((lseq, item)) = next_label.take() {
                    if lseq > seq {
                        next_label = Some((lseq, item));
                        break;
                    }
                    f(item);
                    next_label = labels.next()?.map(label_row).transpose()?;
                }
                let alert: bool = row.get(1)?;
                let event: String = row.get(2)?;
                let tx = serde_json::from_str(&event)
                    .map_err(|e| StoreError::Corrupt(format!("transaction seq {seq}: {e}")))?;
                let action: String = row.get(3)?;
                f(HistoryItem::Tx {
                    tx,
                    alert,
                    blocked: action == ringfence_core::decision::Action::Block.as_str(),
                });
                n += 1;
            }
            while let Some((_, item)) = next_label.take() {
                f(item);
                next_label = labels.next()?.map(label_row).transpose()?;
            }
            Ok(n)
        })
    }
}

impl SqliteStore {
    /// The id of the alert a transaction raised, if it raised one (not a cross-site conflict
    /// alert it may also have brought): how an e-mail links to the case. Scans from the
    /// newest alert, so the recent alerts mails are about are found at once without an index
    /// the write path would pay for.
    pub async fn alert_id_of(&self, transaction_id: String) -> Result<Option<i64>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id FROM alerts WHERE transaction_id = ?1 AND category != ?2
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![transaction_id, CONFLICT_CATEGORY], |r| r.get(0))
            .optional()?)
        })
        .await
    }
}

impl SqliteStore {
    /// The sequence number of the newest alert in the outbox (0 when empty), on the current
    /// thread.
    pub fn outbox_end(&self) -> Result<i64, StoreError> {
        self.read_blocking(|c| {
            Ok(
                c.query_row("SELECT COALESCE(MAX(seq), 0) FROM alert_outbox", [], |r| {
                    r.get(0)
                })?,
            )
        })
    }

    /// Up to `limit` alerts of the outbox after sequence number `after`, in order, as JSON.
    pub async fn outbox_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.pairs_after(
            "SELECT seq, event FROM alert_outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            after,
            limit,
        )
        .await
    }

    /// Up to `limit` transactions decided while the shared log was unreachable, after
    /// sequence number `after`, in order, as JSON: what the node still owes the log.
    pub async fn owed_to_log_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.pairs_after(
            "SELECT o.seq, t.event FROM log_outbox o JOIN transactions t ON t.seq = o.seq
             WHERE o.seq > ?1 ORDER BY o.seq LIMIT ?2",
            after,
            limit,
        )
        .await
    }

    /// Runs an outbox query (`?1` after, `?2` limit) yielding (seq, text) rows.
    async fn pairs_after(
        &self,
        sql: &'static str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.log.wait_indexed().await;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.read_blocking(|c| {
                let mut q = c.prepare_cached(sql)?;
                let rows = q.query_map(params![after, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Up to `limit` records with a sequence number above `after`, in sequence order, as the
    /// writes that made them: what a node ships to PostgreSQL from its local buffer.
    pub async fn records_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, WriteOp)>, StoreError> {
        self.log.wait_indexed().await;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.read_blocking(|c| {
                let limit = limit as i64;
                let mut out: Vec<(i64, WriteOp)> = Vec::new();
                let mut txs = c.prepare_cached(
                    "SELECT seq, event, decision FROM transactions WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = txs.query_map(params![after, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })?;
                for row in rows {
                    let (seq, event, decision) = row?;
                    let corrupt = |e: serde_json::Error| {
                        StoreError::Corrupt(format!("transaction seq {seq}: {e}"))
                    };
                    out.push((
                        seq,
                        WriteOp::Tx(Box::new(TxRecord {
                            tx: serde_json::from_str(&event).map_err(corrupt)?,
                            decision: serde_json::from_str(&decision).map_err(corrupt)?,
                            alert_event: None,
                            conflicts: Vec::new(),
                            origin: None,
                        })),
                    ));
                }
                let mut labels = c.prepare_cached(
                    "SELECT seq, transaction_id, fraud, previous, source, note, labeled_at
                     FROM labels WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = labels.query_map(params![after, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        LabelRecord {
                            transaction_id: r.get(1)?,
                            fraud: r.get(2)?,
                            previous: r.get(3)?,
                            source: r.get(4)?,
                            note: r.get(5)?,
                            labeled_at: ringfence_core::event::Timestamp::from_millis(r.get(6)?),
                        },
                    ))
                })?;
                for row in rows {
                    let (seq, label) = row?;
                    out.push((seq, WriteOp::Label(label)));
                }
                out.sort_by_key(|(seq, _)| *seq);
                out.truncate(limit as usize);
                Ok(out)
            })
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("reader task: {e}")))?
    }
}

fn label_row(r: &rusqlite::Row<'_>) -> Result<(i64, HistoryItem), StoreError> {
    let seq: i64 = r.get(0)?;
    let event: String = r.get(3)?;
    let tx = serde_json::from_str(&event)
        .map_err(|e| StoreError::Corrupt(format!("label seq {seq}: {e}")))?;
    Ok((
        seq,
        HistoryItem::Label {
            tx,
            fraud: r.get(1)?,
            previous: r.get(2)?,
        },
    ))
}

fn labels_of(c: &Connection, id: &str) -> Result<Vec<LabelRecord>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT fraud, previous, source, note, labeled_at FROM labels
         WHERE transaction_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok(LabelRecord {
            transaction_id: id.to_owned(),
            fraud: r.get(0)?,
            previous: r.get(1)?,
            source: r.get(2)?,
            note: r.get(3)?,
            labeled_at: ringfence_core::event::Timestamp::from_millis(r.get(4)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn parse_json(s: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

type Ack = oneshot::Sender<Result<i64, String>>;

/// Most records the indexer writes in one SQLite transaction (by log bytes).
const INDEX_BATCH_BYTES: usize = 16 << 20;
/// How long the indexer lets acknowledged records gather before it writes them (unless a
/// read waits for them or the batch is full). A commit costs a WAL frame for every page it
/// dirtied, and the entity and id indexes are written at random places: a commit per fsync
/// group (tens of records under single-transaction load) wrote most of a page per index row,
/// and took half of the server's CPU. Gathering for this long bounds the extra delay of a
/// read that does not ask (`flush_wanted`) and the records re-indexed after a crash.
const INDEX_GATHER: Duration = Duration::from_millis(100);
/// How often a gathering indexer looks whether a read asks for its records.
const INDEX_POLL: Duration = Duration::from_millis(2);
/// Most records acknowledged but not yet indexed: past it, ingest is refused (503 with
/// Retry-After) before anything is applied, so the lag (and the replay after a crash, and the
/// wait of a read) stays bounded.
pub const MAX_LAG_RECORDS: i64 = 100_000;
/// Most log bytes acknowledged but not yet indexed.
pub const MAX_LAG_BYTES: u64 = 128 << 20;
/// Longest a read waits for the indexer to pass what was acknowledged when it began.
const READ_WAIT: Duration = Duration::from_secs(2);

/// Why the store cannot take a write right now.
#[derive(Clone, Debug)]
pub struct Fault {
    /// The disk (or quota) is full.
    pub full: bool,
    /// What failed.
    pub message: String,
}

impl Fault {
    fn io(what: &str, e: &std::io::Error) -> Fault {
        Fault {
            full: log::is_full(e),
            message: format!("{what}: {e}"),
        }
    }

    fn sqlite(e: &StoreError) -> Fault {
        let full = match e {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::DiskFull
            }
            StoreError::Io(io) => log::is_full(io),
            _ => false,
        };
        Fault {
            full,
            message: format!("indexing records: {e}"),
        }
    }
}

/// Why [`SqliteStore::admit`] turned work away.
#[derive(Clone, Debug)]
pub enum Refusal {
    /// The indexer is too far behind the log: retry shortly.
    Lagging,
    /// Storage fails: full (`fault.full`) or otherwise unavailable.
    Fault(Fault),
}

#[derive(Debug, Default)]
struct Faults {
    /// An append or its fdatasync failed: appends are refused until repaired.
    write: Option<Fault>,
    /// The next segment could not be allocated.
    space: Option<Fault>,
    /// The indexer cannot write to SQLite (it retries on its own).
    index: Option<Fault>,
}

/// The record log's shared state: positions, counters, faults, the id filter.
#[derive(Debug)]
pub struct LogState {
    dir: PathBuf,
    files: Mutex<LogFiles>,
    closed: log::ClosedSegments,
    ids: log::IdFilter,
    /// Last sequence number acknowledged (durable in the log).
    acked: AtomicI64,
    /// Last sequence number indexed into SQLite.
    indexed: watch::Sender<i64>,
    acked_bytes: AtomicU64,
    indexed_bytes: AtomicU64,
    groups: AtomicU64,
    grouped: AtomicU64,
    faulty: AtomicBool,
    faults: Mutex<Faults>,
    /// A read waits for the indexer: it writes what it holds now instead of gathering more.
    flush_wanted: AtomicBool,
}

impl LogState {
    fn set_fault(&self, f: impl FnOnce(&mut Faults)) {
        if let Ok(mut faults) = self.faults.lock() {
            f(&mut faults);
            let any = faults.write.is_some() || faults.space.is_some() || faults.index.is_some();
            self.faulty.store(any, Ordering::Release);
        }
    }

    fn fault(&self) -> Option<Fault> {
        if !self.faulty.load(Ordering::Acquire) {
            return None;
        }
        let faults = self.faults.lock().ok()?;
        faults
            .write
            .clone()
            .or_else(|| faults.space.clone())
            .or_else(|| faults.index.clone())
    }

    /// Encodes `batch` as entries from `first_seq` and appends them with one write and one
    /// fdatasync. Returns the frames (for the indexer).
    fn append_group(&self, batch: &[QueuedWrite], first_seq: i64) -> Result<Vec<u8>, String> {
        let mut frames = Vec::with_capacity(batch.len() * 1024);
        for (i, (op, _)) in batch.iter().enumerate() {
            log::append_entry(&mut frames, first_seq + i as i64, op).map_err(|e| e.to_string())?;
        }
        let last = first_seq + batch.len() as i64 - 1;
        let mut files = self
            .files
            .lock()
            .map_err(|_| "log lock poisoned".to_string())?;
        if let Some(f) = self.faults.lock().ok().and_then(|f| f.write.clone()) {
            return Err(f.message);
        }
        match files.append(&frames, last) {
            Ok(closed) => {
                if let Some(c) = closed {
                    if let Ok(mut q) = self.closed.lock() {
                        q.push_back(c);
                    }
                    // The next segment is allocated now, ahead of need: no space for it is
                    // found while this one still holds room for what is accepted.
                    match files.ensure_spare() {
                        Ok(()) => self.set_fault(|f| f.space = None),
                        Err(e) => {
                            let fault = Fault::io("allocating the next log segment", &e);
                            tracing::error!(error = %fault.message, "new work is refused until there is space");
                            self.set_fault(|f| f.space = Some(fault));
                        }
                    }
                }
                Ok(frames)
            }
            Err(e) => {
                let fault = Fault::io("appending to the record log", &e);
                let msg = fault.message.clone();
                self.set_fault(|f| f.write = Some(fault));
                Err(msg)
            }
        }
    }

    /// Waits (at most [`READ_WAIT`]) until the indexer has passed what was acknowledged
    /// when this was called.
    async fn wait_indexed(&self) {
        let target = self.acked.load(Ordering::Acquire);
        if *self.indexed.borrow() >= target {
            return;
        }
        self.flush_wanted.store(true, Ordering::Release);
        let mut rx = self.indexed.subscribe();
        if tokio::time::timeout(READ_WAIT, rx.wait_for(|&i| i >= target))
            .await
            .is_err()
        {
            tracing::warn!(
                target,
                indexed = *self.indexed.borrow(),
                "read waited for the indexer in vain; it may miss the newest records"
            );
        }
    }

    /// [`LogState::wait_indexed`] for a thread that cannot await.
    fn wait_indexed_blocking(&self) {
        let target = self.acked.load(Ordering::Acquire);
        let began = Instant::now();
        if *self.indexed.borrow() < target {
            self.flush_wanted.store(true, Ordering::Release);
        }
        while *self.indexed.borrow() < target && began.elapsed() < READ_WAIT {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The record log's numbers, for `/metrics` and `/v1/stats`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LogStats {
    /// Last sequence number acknowledged (durable in the log).
    pub acked_seq: i64,
    /// Last sequence number indexed into SQLite.
    pub indexed_seq: i64,
    /// Records acknowledged but not indexed.
    pub lag_records: i64,
    /// Log bytes acknowledged but not indexed.
    pub lag_bytes: u64,
    /// Groups appended (one write and one fdatasync each) since start.
    pub fsync_groups: u64,
    /// Records in those groups.
    pub fsync_records: u64,
    /// Stored ids held by the duplicate filter.
    pub ids_held: usize,
}

impl SqliteStore {
    /// Whether new work can be taken: `Err` when the indexer is too far behind or storage
    /// fails. Checked before the engine applies anything.
    pub fn admit(&self) -> Result<(), Refusal> {
        if let Some(f) = self.log.fault() {
            return Err(Refusal::Fault(f));
        }
        let lag = self.log.acked.load(Ordering::Acquire) - *self.log.indexed.borrow();
        let lag_bytes = self
            .log
            .acked_bytes
            .load(Ordering::Acquire)
            .saturating_sub(self.log.indexed_bytes.load(Ordering::Acquire));
        if lag > MAX_LAG_RECORDS || lag_bytes > MAX_LAG_BYTES {
            return Err(Refusal::Lagging);
        }
        Ok(())
    }

    /// The current storage fault, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.log.fault()
    }

    /// After a failed append or a full disk: zeroes what a failed append may have left,
    /// allocates the next segment, and clears the fault when both work (blocking IO).
    pub fn try_repair(&self) -> Result<(), String> {
        let mut files = self
            .log
            .files
            .lock()
            .map_err(|_| "log lock poisoned".to_string())?;
        match files.repair() {
            Ok(()) => {
                self.log.set_fault(|f| {
                    f.write = None;
                    f.space = None;
                });
                Ok(())
            }
            Err(e) => Err(Fault::io("repairing the record log", &e).message),
        }
    }

    /// Whether `id` may be stored (false: certainly not; no IO).
    pub fn may_hold(&self, id: &str) -> bool {
        self.log.ids.may_contain(id)
    }

    /// Waits until everything acknowledged so far is indexed (bounded).
    pub async fn caught_up(&self) {
        self.log.wait_indexed().await
    }

    /// Whether everything acknowledged is indexed.
    pub fn is_caught_up(&self) -> bool {
        *self.log.indexed.borrow() >= self.log.acked.load(Ordering::Acquire)
    }

    /// The record log's numbers.
    pub fn log_stats(&self) -> LogStats {
        let acked = self.log.acked.load(Ordering::Acquire);
        let indexed = *self.log.indexed.borrow();
        LogStats {
            acked_seq: acked,
            indexed_seq: indexed,
            lag_records: (acked - indexed).max(0),
            lag_bytes: self
                .log
                .acked_bytes
                .load(Ordering::Acquire)
                .saturating_sub(self.log.indexed_bytes.load(Ordering::Acquire)),
            fsync_groups: self.log.groups.load(Ordering::Relaxed),
            fsync_records: self.log.grouped.load(Ordering::Relaxed),
            ids_held: self.log.ids.len(),
        }
    }

    /// The directory of the record log.
    pub fn log_dir(&self) -> &Path {
        &self.log.dir
    }
}

/// What the log writer hands the indexer.
enum IndexMsg {
    /// Frames appended (and acknowledged), the last with this sequence number.
    Group { last_seq: i64, frames: Vec<u8> },
    /// Index what is pending, close the database, then acknowledge.
    Close(Ack),
}

/// The log writer: takes groups off the queue, appends each with one write and one
/// fdatasync, acknowledges each record with its sequence number, and hands the group to
/// the indexer.
fn log_writer_loop(
    log: Arc<LogState>,
    mut rx: mpsc::Receiver<QueuedWrite>,
    index: std::sync::mpsc::Sender<IndexMsg>,
    mut next_seq: i64,
) {
    let mut batch: Vec<QueuedWrite> = Vec::with_capacity(MAX_GROUP);
    let mut closing: Option<Ack> = None;
    let mut closed = false;
    while let Some(first) = rx.blocking_recv() {
        match first {
            (WriteOp::Close, ack) => closing = Some(ack),
            op => batch.push(op),
        }
        while closing.is_none() && batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok((WriteOp::Close, ack)) => closing = Some(ack),
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let result = if closed {
                Err(StoreError::Closed.to_string())
            } else {
                log.append_group(&batch, next_seq)
            };
            match result {
                Ok(frames) => {
                    let n = batch.len() as i64;
                    let last = next_seq + n - 1;
                    // Known stored before anyone hears it is: the duplicate check relies on it.
                    log.ids.insert(batch.iter().filter_map(|(op, _)| match op {
                        WriteOp::Tx(r) => Some(r.tx.transaction_id.as_str()),
                        _ => None,
                    }));
                    log.acked_bytes
                        .fetch_add(frames.len() as u64, Ordering::AcqRel);
                    log.groups.fetch_add(1, Ordering::Relaxed);
                    log.grouped.fetch_add(n as u64, Ordering::Relaxed);
                    // To the indexer before `acked` moves: a read that waits for what was
                    // acknowledged finds it there when it asks the indexer to write.
                    let _ = index.send(IndexMsg::Group {
                        last_seq: last,
                        frames,
                    });
                    log.acked.store(last, Ordering::Release);
                    for (i, (_, ack)) in batch.drain(..).enumerate() {
                        let _ = ack.send(Ok(next_seq + i as i64));
                    }
                    next_seq = last + 1;
                }
                Err(msg) => {
                    tracing::error!(error = %msg, writes = batch.len(), "append to the record log failed");
                    for (_, ack) in batch.drain(..) {
                        let _ = ack.send(Err(msg.clone()));
                    }
                }
            }
        }
        if let Some(ack) = closing.take() {
            closed = true;
            if let Err(std::sync::mpsc::SendError(IndexMsg::Close(ack))) =
                index.send(IndexMsg::Close(ack))
            {
                let _ = ack.send(Ok(next_seq));
            }
        }
    }
}

/// Lowers the calling thread's scheduling priority (nice 10). The indexer's work can wait:
/// what it writes is already durable in the log, and its large commits, run at the same
/// priority, took the cores from requests in bursts. Under sustained overload its lag grows
/// until ingest is refused (`MAX_LAG_RECORDS`), so it is never starved for good.
fn lower_priority() {
    // SAFETY: plain syscalls on this thread's own id; a failure only leaves the priority be.
    let tid = unsafe { libc::gettid() };
    // SAFETY: as above.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) } != 0 {
        tracing::debug!("could not lower the indexer's priority");
    }
}

/// The indexer: writes the log's entries into SQLite in large transactions (the indexed
/// sequence number in the same commit), publishes how far it got, and deletes segments once
/// SQLite holds them durably. A failure (a full disk) is retried: the entries stay in the
/// log, and ingest is refused meanwhile.
fn indexer_loop(mut conn: Connection, rx: std::sync::mpsc::Receiver<IndexMsg>, log: Arc<LogState>) {
    let mut pending: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut close: Option<Ack> = None;
    let mut disconnected = false;
    let mut failures = 0u32;
    // Takes one message; returns the log bytes it added to `pending`.
    let take = |m: IndexMsg, pending: &mut Vec<(i64, Vec<u8>)>, close: &mut Option<Ack>| match m {
        IndexMsg::Group { last_seq, frames } => {
            let n = frames.len();
            pending.push((last_seq, frames));
            n
        }
        IndexMsg::Close(ack) => {
            *close = Some(ack);
            0
        }
    };
    loop {
        if pending.is_empty() {
            if close.is_some() || disconnected {
                break;
            }
            match rx.recv() {
                Ok(m) => {
                    take(m, &mut pending, &mut close);
                }
                Err(_) => disconnected = true,
            }
            continue;
        }
        let mut bytes: usize = pending.iter().map(|(_, f)| f.len()).sum();
        // After a failure the batch is retried as it is: gathering is for fresh batches.
        let gather_until = Instant::now()
            + if failures == 0 {
                INDEX_GATHER
            } else {
                Duration::ZERO
            };
        while bytes < INDEX_BATCH_BYTES && close.is_none() && !disconnected {
            if log.flush_wanted.swap(false, Ordering::AcqRel) {
                // Whatever arrived meanwhile goes in too; then write.
                while let Ok(m) = rx.try_recv() {
                    bytes += take(m, &mut pending, &mut close);
                }
                break;
            }
            let left = gather_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left.min(INDEX_POLL)) {
                Ok(m) => bytes += take(m, &mut pending, &mut close),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => disconnected = true,
            }
        }
        match index_groups(&mut conn, &pending) {
            Ok(last) => {
                pending.clear();
                failures = 0;
                log.indexed_bytes.fetch_add(bytes as u64, Ordering::AcqRel);
                log.indexed.send_replace(last);
                if log.faulty.load(Ordering::Acquire) {
                    log.set_fault(|f| f.index = None);
                }
                retire_segments(&conn, &log, last);
            }
            Err(e) => {
                failures += 1;
                let fault = Fault::sqlite(&e);
                if failures == 1 {
                    tracing::error!(error = %fault.message, "indexing failed; the records are safe in the log, retrying");
                }
                log.set_fault(|f| f.index = Some(fault));
                if (close.is_some() || disconnected) && failures >= 3 {
                    // Shutting down: what is left stays in the log and is indexed at the
                    // next start.
                    break;
                }
                std::thread::sleep(Duration::from_millis(50 * u64::from(failures.min(20))));
            }
        }
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    let indexed = *log.indexed.borrow();
    if let Err((_, e)) = conn.close() {
        tracing::error!(error = %e, "closing the database failed");
    }
    if let Some(ack) = close {
        let _ = ack.send(Ok(indexed + 1));
    }
}

/// Deletes the closed segments wholly indexed, once a checkpoint has put everything in the
/// WAL into the database file (durable: `synchronous = NORMAL` syncs at checkpoints).
fn retire_segments(conn: &Connection, log: &LogState, indexed: i64) {
    let ready = log
        .closed
        .lock()
        .ok()
        .and_then(|q| q.front().map(|&(_, last)| last <= indexed))
        .unwrap_or(false);
    if !ready {
        return;
    }
    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match checkpoint {
        Ok((0, frames, done)) if done >= frames => {}
        Ok(_) => return, // readers hold part of the WAL: next time
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint failed; log segments kept");
            return;
        }
    }
    let Ok(mut q) = log.closed.lock() else { return };
    while let Some(&(n, last)) = q.front() {
        if last > indexed {
            break;
        }
        if let Err(e) = log::delete_segment(&log.dir, n) {
            tracing::warn!(segment = n, error = %e, "deleting an indexed log segment failed");
            break;
        }
        q.pop_front();
    }
}

/// Indexes groups of frames in one transaction; returns the last sequence number.
fn index_groups(conn: &mut Connection, groups: &[(i64, Vec<u8>)]) -> Result<i64, StoreError> {
    let t = conn.transaction()?;
    let mut last = 0;
    for (last_seq, frames) in groups {
        index_frames(&t, frames, None)?;
        last = *last_seq;
    }
    set_indexed(&t, last)?;
    t.commit()?;
    Ok(last)
}

fn set_indexed(conn: &Connection, seq: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('log_indexed_seq', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([seq.to_string()])?;
    Ok(())
}

/// Indexes the frames of `buf` (those at `offsets`, or all of them in order).
fn index_frames(
    conn: &Connection,
    buf: &[u8],
    offsets: Option<&[usize]>,
) -> Result<(), StoreError> {
    let each = |pos: usize| -> Result<Option<usize>, StoreError> {
        let Some(f) = log::frame_at(buf, pos) else {
            return Ok(None);
        };
        index_entry(conn, f.seq, log::decode(f.payload)?)?;
        Ok(Some(f.next))
    };
    match offsets {
        Some(offsets) => {
            for &o in offsets {
                if each(o)?.is_none() {
                    return Err(StoreError::Corrupt(format!(
                        "log frame at {o} does not check"
                    )));
                }
            }
        }
        None => {
            let mut pos = 0;
            while let Some(next) = each(pos)? {
                pos = next;
            }
        }
    }
    Ok(())
}

/// Writes one log entry's rows: the same tables and statements every reader uses.
fn index_entry(conn: &Connection, seq: i64, op: log::IndexOp<'_>) -> Result<(), StoreError> {
    match op {
        log::IndexOp::Tx(tx) => {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO transactions (seq, id, ts, amount, action, score, alert, event, decision, origin, origin_seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    seq,
                    tx.id,
                    tx.ts,
                    tx.amount,
                    tx.action,
                    tx.score,
                    tx.alert,
                    tx.event,
                    tx.decision,
                    tx.origin.map(|o| o.0),
                    tx.origin.map(|o| o.1),
                ])?;
            // Replicated: the offset moves in the same commit as the record, so a restart
            // resumes exactly after what is stored.
            if let Some((site, origin_seq)) = tx.origin {
                set_site_offset(conn, site, origin_seq)?;
            }
            if inserted == 0 {
                // The host checks ids before scoring, so this means a duplicate got past it:
                // the first record stands, and the breach is loud.
                tracing::error!(
                    transaction_id = tx.id,
                    "duplicate transaction id reached the writer; the first record stands"
                );
                return Ok(());
            }
            let mut ins_entity = conn.prepare_cached(
                "INSERT OR IGNORE INTO tx_entities (entity, seq) VALUES (?1, ?2)",
            )?;
            for entity in &tx.entities {
                ins_entity.execute(params![entity, seq])?;
            }
            if let Some(event) = tx.alert_event {
                conn.prepare_cached("INSERT INTO alert_outbox (seq, event) VALUES (?1, ?2)")?
                    .execute(params![seq, event])?;
            }
            // Decided while the shared log was unreachable: owed to the log.
            if tx.degraded {
                conn.prepare_cached("INSERT INTO log_outbox (seq) VALUES (?1)")?
                    .execute(params![seq])?;
            }
            let insert_alert = "INSERT INTO alerts (seq, transaction_id, ts, account, action, score, category, amount, reasons)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
            for (key, json, reasons) in &tx.conflicts {
                // Both sites find the same conflict; each raises it once.
                let new = conn
                    .prepare_cached(
                        "INSERT INTO site_conflicts (key, seq, conflict) VALUES (?1, ?2, ?3)
                         ON CONFLICT (key) DO NOTHING",
                    )?
                    .execute(params![key, seq, json])?;
                if new == 1 {
                    conn.prepare_cached(insert_alert)?.execute(params![
                        seq,
                        tx.id,
                        tx.ts,
                        None::<&str>,
                        "review",
                        100.0,
                        CONFLICT_CATEGORY,
                        tx.amount,
                        reasons
                    ])?;
                }
            }
            // Every decision above approve is queued for analysts, escalations included;
            // `alert` (the ladder's count) is stored with the transaction.
            if let Some((account, category, reasons)) = tx.alert_row {
                conn.prepare_cached(insert_alert)?.execute(params![
                    seq, tx.id, tx.ts, account, tx.action, tx.score, category, tx.amount, reasons
                ])?;
            }
        }
        log::IndexOp::SiteOffset { site, seq: at } => set_site_offset(conn, site, at)?,
        log::IndexOp::Label {
            transaction_id,
            fraud,
            previous,
            source,
            note,
            labeled_at,
        } => {
            conn.prepare_cached(
                "INSERT INTO labels (seq, transaction_id, fraud, previous, source, note, labeled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![seq, transaction_id, fraud, previous, source, note, labeled_at])?;
        }
    }
    Ok(())
}

fn set_site_offset(conn: &Connection, site: &str, seq: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO site_offsets (origin, seq) VALUES (?1, ?2)
         ON CONFLICT (origin) DO UPDATE SET seq = MAX(seq, excluded.seq)",
    )?
    .execute(params![site, seq])?;
    Ok(())
}

/// Alert category (and rule name) of a receipt line over-claimed by returns accepted at two
/// stores.
pub const CONFLICT_CATEGORY: &str = "duplicate_return_across_sites";

/// The alert reason of a conflict: its claims in words, and the claiming transactions and the
/// whole conflict as data.
pub(crate) fn conflict_reason(c: &ReturnConflict) -> serde_json::Value {
    let item = match &c.serial {
        Some(serial) => format!("{} (serial {serial})", c.sku),
        None => c.sku.clone(),
    };
    let claims: Vec<String> = c
        .claims
        .iter()
        .map(|k| {
            format!(
                "{} at {} ({} unit(s))",
                k.transaction_id, k.store_id, k.units
            )
        })
        .collect();
    let returned: u32 = c.claims.iter().map(|k| k.units).sum();
    serde_json::json!({
        "rule": CONFLICT_CATEGORY,
        "category": CONFLICT_CATEGORY,
        "detail": format!(
            "receipt {} item {item}: {} bought, {returned} returned by returns accepted at different stores: {}",
            c.receipt_id,
            c.bought,
            claims.join(", ")
        ),
        "weight": 100.0,
        "transactions": c.claims.iter().map(|k| k.transaction_id.as_str()).collect::<Vec<_>>(),
        "conflict": c,
    })
}
