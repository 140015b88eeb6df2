//! The embedded records store: SQLite in WAL mode with one writer thread and group commit.
//!
//! Why one writer thread: SQLite allows a single writer at a time anyway, and a dedicated
//! thread turns many concurrent requests into one transaction and one fsync (group commit),
//! which is what makes durable acknowledgements cheap. `synchronous = FULL` makes each commit
//! durable before the writer acknowledges it. Reads use a small pool of separate connections
//! (WAL lets them run alongside the writer) on tokio's blocking threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ringfence_core::event::Transaction;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

pub use super::writer::{send, QueuedWrite, WritePermit, Writer};
use super::{
    AlertQuery, AlertRow, HistoryItem, LabelRecord, StoreCounts, StoreError, StoreSeen, TxRecord,
    TxSummary, WriteOp,
};
use ringfence_core::retail::ReturnConflict;

/// Most writes committed in one SQLite transaction.
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
    /// Opens (creating if needed) the store in `data_dir` and starts its writer thread.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("ringfence.db");
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // SQLite's default 2 MB page cache makes every index insert re-read pages through
        // syscalls once the tables outgrow it; 64 MB keeps the hot index pages resident.
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let next_seq: i64 = conn.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM transactions), 0),
                        COALESCE((SELECT MAX(seq) FROM labels), 0)) + 1",
            [],
            |r| r.get(0),
        )?;
        let (queue, rx) = mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, next_seq))?;
        Ok(SqliteStore {
            path,
            readers: Arc::new(Mutex::new(Vec::new())),
            writer: Writer::new(queue),
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

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<QueuedWrite>, mut next_seq: i64) {
    let mut conn = Some(conn);
    let mut batch: Vec<QueuedWrite> = Vec::with_capacity(MAX_GROUP);
    let mut closing: Option<Ack> = None;
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
        let result = match conn.as_mut() {
            Some(c) if !batch.is_empty() => write_group(c, &batch, next_seq),
            Some(_) => Ok(()),
            None => Err(StoreError::Closed),
        };
        match result {
            Ok(()) => {
                for (_, ack) in batch.drain(..) {
                    let _ = ack.send(Ok(next_seq));
                    next_seq += 1;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "group commit failed");
                let msg = e.to_string();
                for (_, ack) in batch.drain(..) {
                    let _ = ack.send(Err(msg.clone()));
                }
            }
        }
        if let Some(ack) = closing.take() {
            if let Some(c) = conn.take() {
                if let Err((_, e)) = c.close() {
                    tracing::error!(error = %e, "closing the database failed");
                }
            }
            let _ = ack.send(Ok(next_seq));
        }
    }
}

fn write_group(
    conn: &mut Connection,
    batch: &[(WriteOp, Ack)],
    first_seq: i64,
) -> Result<(), StoreError> {
    let t = conn.transaction()?;
    {
        let mut ins_tx = t.prepare_cached(
            "INSERT INTO transactions (seq, id, ts, amount, action, score, alert, event, decision, origin, origin_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (id) DO NOTHING",
        )?;
        let mut set_offset = t.prepare_cached(
            "INSERT INTO site_offsets (origin, seq) VALUES (?1, ?2)
             ON CONFLICT (origin) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        )?;
        let mut ins_conflict = t.prepare_cached(
            "INSERT INTO site_conflicts (key, seq, conflict) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO NOTHING",
        )?;
        let mut ins_entity =
            t.prepare_cached("INSERT OR IGNORE INTO tx_entities (entity, seq) VALUES (?1, ?2)")?;
        let mut ins_alert = t.prepare_cached(
            "INSERT INTO alerts (seq, transaction_id, ts, account, action, score, category, amount, reasons)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut ins_outbox =
            t.prepare_cached("INSERT INTO alert_outbox (seq, event) VALUES (?1, ?2)")?;
        let mut ins_log_outbox = t.prepare_cached("INSERT INTO log_outbox (seq) VALUES (?1)")?;
        let mut ins_label = t.prepare_cached(
            "INSERT INTO labels (seq, transaction_id, fraud, previous, source, note, labeled_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (i, (op, _)) in batch.iter().enumerate() {
            let seq = first_seq + i as i64;
            match op {
                WriteOp::Tx(rec) => {
                    let tx = &rec.tx;
                    let d = &rec.decision.decision;
                    let event = serde_json::to_string(tx)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let decision = serde_json::to_string(&rec.decision)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let inserted = ins_tx.execute(params![
                        seq,
                        tx.transaction_id.as_str(),
                        tx.timestamp.millis(),
                        tx.amount,
                        d.decision.as_str(),
                        d.score,
                        d.alert,
                        event,
                        decision,
                        rec.origin.as_ref().map(|o| o.site.as_str()),
                        rec.origin.as_ref().map(|o| o.seq),
                    ])?;
                    // Replicated: the offset moves in the same commit as the record, so a
                    // restart resumes exactly after what is stored.
                    if let Some(o) = &rec.origin {
                        set_offset.execute(params![o.site, o.seq])?;
                    }
                    if inserted == 0 {
                        // The host checks ids before scoring, so this means a duplicate got
                        // past it: the first record stands, and the breach is loud.
                        tracing::error!(
                            transaction_id = tx.transaction_id.as_str(),
                            "duplicate transaction id reached the writer; the first record stands"
                        );
                        continue;
                    }
                    for entity in super::entity_keys(tx) {
                        ins_entity.execute(params![entity, seq])?;
                    }
                    if let Some(event) = &rec.alert_event {
                        ins_outbox.execute(params![seq, event])?;
                    }
                    // Decided while the shared log was unreachable: owed to the log.
                    if rec.decision.degraded {
                        ins_log_outbox.execute(params![seq])?;
                    }
                    for c in &rec.conflicts {
                        let json = serde_json::to_string(c)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        // Both sites find the same conflict; each raises it once.
                        if ins_conflict.execute(params![c.key(), seq, json])? == 1 {
                            let reasons = serde_json::to_string(&[conflict_reason(c)])
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                            ins_alert.execute(params![
                                seq,
                                tx.transaction_id.as_str(),
                                tx.timestamp.millis(),
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
                    if d.decision > ringfence_core::decision::Action::Approve {
                        let category = d.reasons.first().map_or("score", |r| r.category.as_str());
                        let reasons = serde_json::to_string(&d.reasons)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        ins_alert.execute(params![
                            seq,
                            tx.transaction_id.as_str(),
                            tx.timestamp.millis(),
                            d.account,
                            d.decision.as_str(),
                            d.score,
                            category,
                            tx.amount,
                            reasons
                        ])?;
                    }
                }
                WriteOp::Close => {}
                WriteOp::SiteOffset(o) => {
                    set_offset.execute(params![o.site, o.seq])?;
                }
                WriteOp::Label(l) => {
                    ins_label.execute(params![
                        seq,
                        l.transaction_id,
                        l.fraud,
                        l.previous,
                        l.source,
                        l.note,
                        l.labeled_at.millis()
                    ])?;
                }
            }
        }
    }
    t.commit()?;
    Ok(())
}

/// Alert category (and rule name) of a receipt line over-claimed by returns accepted at two
/// stores.
pub const CONFLICT_CATEGORY: &str = "duplicate_return_across_sites";

/// The alert reason of a conflict: its claims in words, and the claiming transactions and the
/// whole conflict as data.
fn conflict_reason(c: &ReturnConflict) -> serde_json::Value {
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
