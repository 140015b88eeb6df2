//! Dead letters: alerts a webhook (or a mail a relay) refused for good, or that still failed
//! after the last try. Each is kept with what was sent, how often it was tried and the last
//! answer, so an admin can see why and send it again (`POST
//! /v1/deliveries/dead-letters/{id}/retry`).
//!
//! Why a database file of its own (`deliveries.db` in the data directory) and not a table in
//! `ringfence.db`: the records database has one writer thread committing decisions in groups,
//! and a dead letter written beside it would queue behind (or hold up) that hot path. Dead
//! letters are rare and belong to this node's deliveries: each node delivers the alerts of its
//! own outbox, in production mode too, so each keeps its own.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ringfence_core::event::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::store::StoreError;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    alert TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT NOT NULL,
    at INTEGER NOT NULL,
    state TEXT NOT NULL,
    redelivered_at INTEGER
);
CREATE INDEX IF NOT EXISTS dead_letters_state ON dead_letters (state, id);
"#;

/// A dead letter to record.
#[derive(Clone, Debug)]
pub struct NewDeadLetter {
    /// `webhook` or `email`.
    pub kind: &'static str,
    /// The webhook's name, or `email`.
    pub target: String,
    /// The transaction of the alert (the first one of a digest).
    pub transaction_id: String,
    /// The alert (JSON; for a digest, the array of its alerts).
    pub alert: String,
    /// What was sent: the request body, or the mail as JSON (`to`, `subject`, `body`).
    pub payload: String,
    /// Tries made.
    pub attempts: u32,
    /// Last HTTP status or SMTP reply code, if an answer came.
    pub last_status: Option<u16>,
    /// Last error, in words (never a URL or secret).
    pub last_error: String,
}

/// A stored dead letter, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    /// Its id.
    pub id: i64,
    /// `webhook` or `email`.
    pub kind: String,
    /// The webhook's name, or `email`.
    pub target: String,
    /// The transaction of the alert.
    pub transaction_id: String,
    /// The alert.
    pub alert: serde_json::Value,
    /// What was sent.
    pub payload: String,
    /// Tries made (retries from here included).
    pub attempts: u32,
    /// Last HTTP status or SMTP reply code.
    pub last_status: Option<u16>,
    /// Last error.
    pub last_error: String,
    /// When it became a dead letter.
    pub at: Timestamp,
    /// `dead`, or `redelivered` once a retry got through.
    pub state: String,
    /// When a retry got through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redelivered_at: Option<Timestamp>,
}

/// Which dead letters to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    /// Not delivered yet.
    Dead,
    /// Delivered by a retry.
    Redelivered,
    /// Both.
    All,
}

/// The dead-letter table of this node.
#[derive(Clone)]
pub struct DeadLetters {
    conn: Arc<Mutex<Connection>>,
}

fn now_ms() -> i64 {
    crate::host::now().millis()
}

impl DeadLetters {
    /// Opens (creating) `deliveries.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<DeadLetters, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let conn = Connection::open(data_dir.join("deliveries.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(DeadLetters {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection on a blocking thread (SQLite calls block).
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&c)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Records a dead letter; its id.
    pub async fn insert(&self, d: NewDeadLetter) -> Result<i64, StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO dead_letters (kind, target, transaction_id, alert, payload, attempts,
                    last_status, last_error, at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'dead')",
                params![
                    d.kind,
                    d.target,
                    d.transaction_id,
                    d.alert,
                    d.payload,
                    d.attempts,
                    d.last_status,
                    d.last_error,
                    now_ms()
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// Dead letters, newest first: at most `limit`, with an id below `before` when given.
    pub async fn list(
        &self,
        state: StateFilter,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.with(move |c| {
            let state = match state {
                StateFilter::Dead => Some("dead"),
                StateFilter::Redelivered => Some("redelivered"),
                StateFilter::All => None,
            };
            let mut q = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM dead_letters
                 WHERE (?1 IS NULL OR state = ?1) AND id < ?2 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = q.query_map(
                params![state, before.unwrap_or(i64::MAX), limit],
                dead_letter_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// One dead letter.
    pub async fn get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        self.with(move |c| {
            Ok(
                c.prepare_cached(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = ?1"))?
                    .query_row([id], dead_letter_row)
                    .optional()?,
            )
        })
        .await
    }

    /// Records one more try of dead letter `id`: delivered (then `redelivered`), or its new
    /// last answer. The updated record.
    pub async fn record_retry(
        &self,
        id: i64,
        delivered: bool,
        status: Option<u16>,
        error: String,
    ) -> Result<Option<DeadLetter>, StoreError> {
        self.with(move |c| {
            if delivered {
                c.execute(
                    "UPDATE dead_letters SET attempts = attempts + 1, last_status = ?2,
                        last_error = '', state = 'redelivered', redelivered_at = ?3
                     WHERE id = ?1",
                    params![id, status, now_ms()],
                )?;
            } else {
                c.execute(
                    "UPDATE dead_letters SET attempts = attempts + 1, last_status = ?2,
                        last_error = ?3 WHERE id = ?1",
                    params![id, status, error],
                )?;
            }
            Ok(
                c.prepare_cached(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = ?1"))?
                    .query_row([id], dead_letter_row)
                    .optional()?,
            )
        })
        .await
    }

    /// Dead letters not delivered yet (a gauge in `/metrics`).
    pub async fn count_dead(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM dead_letters WHERE state = 'dead'",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
        .await
    }
}

const COLUMNS: &str = "id, kind, target, transaction_id, alert, payload, attempts, last_status,
    last_error, at, state, redelivered_at";

fn dead_letter_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    let alert: String = r.get(4)?;
    Ok(DeadLetter {
        id: r.get(0)?,
        kind: r.get(1)?,
        target: r.get(2)?,
        transaction_id: r.get(3)?,
        // Written by this module from serialised alerts; text if it ever is not JSON.
        alert: serde_json::from_str(&alert).unwrap_or(serde_json::Value::String(alert)),
        payload: r.get(5)?,
        attempts: r.get(6)?,
        last_status: r.get(7)?,
        last_error: r.get(8)?,
        at: Timestamp::from_millis(r.get(9)?),
        state: r.get(10)?,
        redelivered_at: r.get::<_, Option<i64>>(11)?.map(Timestamp::from_millis),
    })
}
