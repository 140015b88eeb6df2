//! Cases and the audit trail in the node's embedded SQLite (`ringfence.db`, beside the
//! records, so the queue joins alerts to cases in one statement).
//!
//! Why a connection of its own for writes, behind a mutex: the records' writer thread owns
//! the other write connection and batches engine writes; analyst actions are rare and must
//! not wait in that queue behind a burst of transactions. SQLite serialises the two writers
//! (each `BEGIN IMMEDIATE`, with a busy timeout), and a case write holds the lock for one
//! small transaction. Reads go through the records' reader pool.

use std::sync::{Arc, Mutex};

use ringfence_core::event::Timestamp;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use super::chain::{self, ChainRow, ChainVerifier, VerifyReport};
use super::{
    audit_sql, case_from_columns, detail_value, queue_sql, AuditEntry, AuditQuery, Case,
    CaseStatus, NewAudit, Param, QueueItem, QueueQuery, Verdict,
};
use crate::store::sqlite::SqliteStore;
use crate::store::{AlertRow, StoreError};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS cases (
    alert_id INTEGER PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    status TEXT NOT NULL,
    assignee TEXT,
    verdict TEXT,
    note TEXT,
    closed_by TEXT,
    closed_at INTEGER,
    updated_at INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_status ON cases (status, alert_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    hash BLOB
);
CREATE TABLE IF NOT EXISTS audit_chain (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    last_id INTEGER NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor, id);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target, id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_chain_no_delete BEFORE DELETE ON audit_chain
BEGIN SELECT RAISE(ABORT, 'the audit chain head cannot be removed'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"#;

/// The case book of an embedded store.
#[derive(Clone, Debug)]
pub struct SqliteCases {
    records: SqliteStore,
    writer: Arc<Mutex<Connection>>,
}

fn placeholder(n: usize) -> String {
    format!("?{n}")
}

fn to_sql(p: &Param) -> rusqlite::types::Value {
    match p {
        Param::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Param::Int(i) => rusqlite::types::Value::Integer(*i),
        Param::Real(f) => rusqlite::types::Value::Real(*f),
    }
}

const CASE_COLUMNS: &str = "alert_id, transaction_id, status, assignee, verdict, note, \
     closed_by, closed_at, updated_at, version";

fn case_row(r: &rusqlite::Row<'_>) -> Result<Case, StoreError> {
    let status: String = r.get(2)?;
    case_from_columns(
        r.get(0)?,
        r.get(1)?,
        &status,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    )
}

fn alert_row(r: &rusqlite::Row<'_>) -> Result<AlertRow, StoreError> {
    let reasons: String = r.get(8)?;
    Ok(AlertRow {
        id: r.get(0)?,
        transaction_id: r.get(1)?,
        timestamp: Timestamp::from_millis(r.get(2)?),
        account: r.get(3)?,
        decision: r.get(4)?,
        score: r.get(5)?,
        category: r.get(6)?,
        amount: r.get(7)?,
        reasons: serde_json::from_str(&reasons).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

fn audit_row(r: &rusqlite::Row<'_>) -> Result<AuditEntry, StoreError> {
    let detail: String = r.get(6)?;
    Ok(AuditEntry {
        id: r.get(0)?,
        at: Timestamp::from_millis(r.get(1)?),
        actor: r.get(2)?,
        role: r.get(3)?,
        action: r.get(4)?,
        target: r.get(5)?,
        detail: detail_value(&detail),
    })
}

impl SqliteCases {
    /// Creates the tables if needed and opens the write connection.
    pub fn open(records: &SqliteStore) -> Result<SqliteCases, StoreError> {
        let mut conn = Connection::open(records.path())?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // An older data directory's `audit` has no `hash` column: add it before the schema's
        // indexes and triggers, then chain the rows it already holds.
        add_hash_column(&conn)?;
        conn.execute_batch(SCHEMA)?;
        chain_existing_rows(&mut conn)?;
        Ok(SqliteCases {
            records: records.clone(),
            writer: Arc::new(Mutex::new(conn)),
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        // Cases join the records: read them once every acknowledged write is indexed.
        self.records.caught_up().await;
        let store = self.records.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(f))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in another write cannot leave the connection mid-transaction (the
            // transaction rolls back when dropped): recover the guard.
            let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            let t = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&t)?;
            t.commit()?;
            Ok(out)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// An alert and its case.
    pub async fn get(&self, id: i64) -> Result<Option<(AlertRow, Case)>, StoreError> {
        self.read(move |c| {
            let alert = c
                .prepare_cached(
                    "SELECT id, transaction_id, ts, account, action, score, category, amount,
                            reasons FROM alerts WHERE id = ?1",
                )?
                .query_row([id], |r| Ok(alert_row(r)))
                .optional()?
                .transpose()?;
            let Some(alert) = alert else { return Ok(None) };
            let case = c
                .prepare_cached(&format!(
                    "SELECT {CASE_COLUMNS} FROM cases WHERE alert_id = ?1"
                ))?
                .query_row([id], |r| Ok(case_row(r)))
                .optional()?
                .transpose()?
                .unwrap_or_else(|| Case::untouched(id, alert.transaction_id.clone()));
            Ok(Some((alert, case)))
        })
        .await
    }

    /// A page of the queue.
    pub async fn queue(&self, q: QueueQuery) -> Result<Vec<QueueItem>, StoreError> {
        self.read(move |c| {
            let (sql, params) = queue_sql(&q, placeholder);
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params.iter().map(to_sql)), |r| {
                let status: String = r.get(9)?;
                let verdict: Option<String> = r.get(11)?;
                Ok((
                    alert_row(r),
                    status,
                    r.get::<_, Option<String>>(10)?,
                    verdict,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (alert, status, assignee, verdict) = row?;
                out.push(QueueItem {
                    alert: alert?,
                    status: CaseStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt(format!("case status `{status}`")))?,
                    assignee,
                    verdict: verdict.as_deref().and_then(Verdict::parse),
                });
            }
            Ok(out)
        })
        .await
    }

    /// Writes `case` if the stored case still has version `expected` (0: no row), with its
    /// audit row, in one transaction. `false` when the case changed meanwhile.
    pub async fn write_if(
        &self,
        case: &Case,
        expected: i64,
        audit: NewAudit,
    ) -> Result<bool, StoreError> {
        let case = case.clone();
        self.write(move |t| {
            let changed = t
                .prepare_cached(&format!(
                "INSERT INTO cases ({CASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (alert_id) DO UPDATE SET
                    status = excluded.status, assignee = excluded.assignee,
                    verdict = excluded.verdict, note = excluded.note,
                    closed_by = excluded.closed_by, closed_at = excluded.closed_at,
                    updated_at = excluded.updated_at, version = excluded.version
                 WHERE cases.version = ?11"
            ))?
                .execute(params![
                    case.id,
                    case.transaction_id,
                    case.status.as_str(),
                    case.assignee,
                    case.verdict.map(Verdict::as_str),
                    case.note,
                    case.closed_by,
                    case.closed_at.map(Timestamp::millis),
                    case.updated_at.map_or(0, Timestamp::millis),
                    case.version,
                    expected,
                ])?;
            // A first write (expected 0) that met a row inserted meanwhile updates nothing:
            // stored versions start at 1.
            if changed != 1 {
                return Ok(false);
            }
            insert_audit(t, &audit)?;
            Ok(true)
        })
        .await
    }

    /// Appends one audit row.
    pub async fn audit(&self, entry: NewAudit) -> Result<AuditEntry, StoreError> {
        self.write(move |t| insert_audit(t, &entry)).await
    }

    /// Audit rows, newest first.
    pub async fn audit_trail(&self, q: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(move |c| {
            let (sql, params) = audit_sql(&q, placeholder);
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params.iter().map(to_sql)), |r| {
                Ok(audit_row(r))
            })?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            Ok(out)
        })
        .await
    }
}

/// Adds the `hash` column to an `audit` table created before the chain (no-op otherwise).
fn add_hash_column(conn: &Connection) -> Result<(), StoreError> {
    let has_table = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit'")?
        .exists([])?;
    let has_hash = conn
        .prepare("SELECT 1 FROM pragma_table_info('audit') WHERE name = 'hash'")?
        .exists([])?;
    if has_table && !has_hash {
        conn.execute_batch("ALTER TABLE audit ADD COLUMN hash BLOB")?;
    }
    Ok(())
}

/// Chains the rows of a trail that has no chain head yet (written before the chain existed),
/// once, in id order, in one transaction: the append-only trigger is dropped for the writes
/// and created again before the commit.
fn chain_existing_rows(conn: &mut Connection) -> Result<(), StoreError> {
    let t = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if t.prepare("SELECT 1 FROM audit_chain")?.exists([])? {
        return Ok(());
    }
    let rows: Vec<ChainRow> = t
        .prepare("SELECT id, at, actor, role, action, target, detail FROM audit ORDER BY id")?
        .query_map([], chain_row)?
        .collect::<Result<_, _>>()?;
    if !rows.is_empty() {
        tracing::info!(
            rows = rows.len(),
            "chaining the audit rows written before the hash chain"
        );
    }
    t.execute_batch("DROP TRIGGER IF EXISTS audit_no_update")?;
    let mut prev = chain::GENESIS;
    let mut last_id = 0;
    {
        let mut update = t.prepare("UPDATE audit SET hash = ?1 WHERE id = ?2")?;
        for row in &rows {
            prev = chain::link(&prev, row);
            last_id = row.id;
            update.execute(params![&prev[..], row.id])?;
        }
    }
    t.execute(
        "INSERT INTO audit_chain (one, last_id, hash) VALUES (1, ?1, ?2)",
        params![last_id, &prev[..]],
    )?;
    t.execute_batch(
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
         BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;",
    )?;
    t.commit()?;
    Ok(())
}

fn chain_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChainRow> {
    Ok(ChainRow {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        role: r.get(3)?,
        action: r.get(4)?,
        target: r.get(5)?,
        detail: r.get(6)?,
    })
}

/// Appends a row at the end of the chain: id `last_id + 1`, hash linked to the head's, head
/// moved, all in the caller's write transaction (which holds SQLite's write lock, so no other
/// append, from this process or another, can interleave and fork the chain).
fn insert_audit(t: &rusqlite::Transaction<'_>, a: &NewAudit) -> Result<AuditEntry, StoreError> {
    let detail = a.detail.to_string();
    let (last_id, prev): (i64, Vec<u8>) = t
        .prepare_cached("SELECT last_id, hash FROM audit_chain WHERE one = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| StoreError::Corrupt("the audit chain head is missing".into()))?;
    let prev: [u8; 32] = prev
        .try_into()
        .map_err(|_| StoreError::Corrupt("the audit chain head's hash is not 32 bytes".into()))?;
    let row = ChainRow {
        id: last_id + 1,
        at: a.at.millis(),
        actor: a.actor.clone(),
        role: a.role.clone(),
        action: a.action.clone(),
        target: a.target.clone(),
        detail,
    };
    let hash = chain::link(&prev, &row);
    t.prepare_cached(
        "INSERT INTO audit (id, at, actor, role, action, target, detail, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        row.id,
        row.at,
        row.actor,
        row.role,
        row.action,
        row.target,
        row.detail,
        &hash[..]
    ])?;
    t.prepare_cached("UPDATE audit_chain SET last_id = ?1, hash = ?2 WHERE one = 1")?
        .execute(params![row.id, &hash[..]])?;
    Ok(AuditEntry {
        id: row.id,
        at: a.at,
        actor: a.actor.clone(),
        role: a.role.clone(),
        action: a.action.clone(),
        target: a.target.clone(),
        detail: a.detail.clone(),
    })
}

/// Walks the audit chain of the SQLite database at `path` (opened read-only, so it can run
/// beside a live server) inside one read transaction, and reports the first broken row.
pub fn verify_chain(path: &std::path::Path) -> Result<VerifyReport, StoreError> {
    let mut conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let t = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let has_hash = t
        .prepare("SELECT 1 FROM pragma_table_info('audit') WHERE name = 'hash'")?
        .exists([])?;
    if !has_hash {
        return Err(StoreError::Corrupt(
            "this audit trail has no hash chain yet: start `ringfence serve` on it once to \
             chain it"
                .into(),
        ));
    }
    // The head first: rows appended after it (by a live server) are past its `last_id`.
    let head: Option<(i64, Vec<u8>)> = t
        .prepare("SELECT last_id, hash FROM audit_chain WHERE one = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let mut verifier = ChainVerifier::default();
    let mut stmt = t.prepare(
        "SELECT id, at, actor, role, action, target, detail, hash FROM audit ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let row = chain_row(r)?;
        let hash: Option<Vec<u8>> = r.get(7)?;
        verifier.row(&row, hash.as_deref());
        if verifier.is_broken() {
            break;
        }
    }
    Ok(verifier.finish(head))
}
