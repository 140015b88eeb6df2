//! Cases and the audit trail in PostgreSQL (production mode), shared by every node: a case
//! closed on one node is closed on all of them.
//!
//! The tables come from the records store's migration 3. Statements run on the records
//! store's pooled connections ([`PostgresStore::session`]), which are shared and pipelined,
//! so a write that must be atomic (the case and its audit row) is one statement: a
//! data-modifying `WITH`.

use ringfence_core::event::Timestamp;
use tokio_postgres::types::ToSql;
use tokio_postgres::IsolationLevel;

use super::chain::{ChainRow, ChainVerifier, VerifyReport};
use super::{
    audit_sql, case_from_columns, detail_value, queue_sql, AuditEntry, AuditQuery, Case,
    CaseStatus, NewAudit, Param, QueueItem, QueueQuery, Verdict,
};
use crate::store::postgres::{PostgresError, PostgresStore, Session};
use crate::store::{AlertRow, StoreError};

/// Audit rows read per round trip while verifying the chain.
const VERIFY_PAGE: i64 = 10_000;

/// The case book of the shared database.
#[derive(Clone, Debug)]
pub struct PostgresCases {
    store: PostgresStore,
}

fn placeholder(n: usize) -> String {
    format!("${n}")
}

fn boxed(p: &Param) -> Box<dyn ToSql + Sync + Send> {
    match p {
        Param::Text(s) => Box::new(s.clone()),
        Param::Int(i) => Box::new(*i),
        Param::Real(f) => Box::new(*f),
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    PostgresError::from(e).into()
}

fn alert_row(r: &tokio_postgres::Row) -> Result<AlertRow, StoreError> {
    let reasons: String = r.try_get(8).map_err(pg)?;
    Ok(AlertRow {
        id: r.try_get(0).map_err(pg)?,
        transaction_id: r.try_get(1).map_err(pg)?,
        timestamp: Timestamp::from_millis(r.try_get(2).map_err(pg)?),
        account: r.try_get(3).map_err(pg)?,
        decision: r.try_get(4).map_err(pg)?,
        score: r.try_get(5).map_err(pg)?,
        category: r.try_get(6).map_err(pg)?,
        amount: r.try_get(7).map_err(pg)?,
        reasons: serde_json::from_str(&reasons).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

fn audit_row(r: &tokio_postgres::Row) -> Result<AuditEntry, StoreError> {
    let detail: String = r.try_get(6).map_err(pg)?;
    Ok(AuditEntry {
        id: r.try_get(0).map_err(pg)?,
        at: Timestamp::from_millis(r.try_get(1).map_err(pg)?),
        actor: r.try_get(2).map_err(pg)?,
        role: r.try_get(3).map_err(pg)?,
        action: r.try_get(4).map_err(pg)?,
        target: r.try_get(5).map_err(pg)?,
        detail: detail_value(&detail),
    })
}

impl PostgresCases {
    /// The case book on `store`'s database.
    pub fn new(store: PostgresStore) -> PostgresCases {
        PostgresCases { store }
    }

    async fn session(&self) -> Result<Session, StoreError> {
        Ok(self.store.session().await?)
    }

    /// An alert and its case.
    pub async fn get(&self, id: i64) -> Result<Option<(AlertRow, Case)>, StoreError> {
        let c = self.session().await?;
        let row = Session::timed(c.query_opt(
            "SELECT a.id, a.transaction_id, a.ts, a.account, a.action, a.score, a.category,
                    a.amount, a.reasons,
                    c.status, c.assignee, c.verdict, c.note, c.closed_by, c.closed_at,
                    c.updated_at, c.version
             FROM alerts a LEFT JOIN cases c ON c.alert_id = a.id WHERE a.id = $1",
            &[&id],
        ))
        .await?;
        let Some(r) = row else { return Ok(None) };
        let alert = alert_row(&r)?;
        let status: Option<String> = r.try_get(9).map_err(pg)?;
        let case = match status {
            None => Case::untouched(id, alert.transaction_id.clone()),
            Some(status) => case_from_columns(
                id,
                alert.transaction_id.clone(),
                &status,
                r.try_get(10).map_err(pg)?,
                r.try_get(11).map_err(pg)?,
                r.try_get(12).map_err(pg)?,
                r.try_get(13).map_err(pg)?,
                r.try_get(14).map_err(pg)?,
                r.try_get(15).map_err(pg)?,
                r.try_get(16).map_err(pg)?,
            )?,
        };
        Ok(Some((alert, case)))
    }

    /// A page of the queue.
    pub async fn queue(&self, q: QueueQuery) -> Result<Vec<QueueItem>, StoreError> {
        let (sql, params) = queue_sql(&q, placeholder);
        let params: Vec<Box<dyn ToSql + Sync + Send>> = params.iter().map(boxed).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let c = self.session().await?;
        let rows = Session::timed(c.query(&sql, &refs)).await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get(9).map_err(pg)?;
                let verdict: Option<String> = r.try_get(11).map_err(pg)?;
                Ok(QueueItem {
                    alert: alert_row(r)?,
                    status: CaseStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt(format!("case status `{status}`")))?,
                    assignee: r.try_get(10).map_err(pg)?,
                    verdict: verdict.as_deref().and_then(Verdict::parse),
                })
            })
            .collect()
    }

    /// Writes `case` if the stored case still has version `expected` (0: no row), with its
    /// audit row, in one statement. `false` when the case changed meanwhile (a concurrent
    /// first write conflicts on the key and updates nothing: stored versions start at 1).
    pub async fn write_if(
        &self,
        case: &Case,
        expected: i64,
        audit: NewAudit,
    ) -> Result<bool, StoreError> {
        let c = self.session().await?;
        let detail = audit.detail.to_string();
        let row = Session::timed(c.query_one(
            "WITH up AS (
                INSERT INTO cases (alert_id, transaction_id, status, assignee, verdict, note,
                                   closed_by, closed_at, updated_at, version)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                ON CONFLICT (alert_id) DO UPDATE SET
                    status = excluded.status, assignee = excluded.assignee,
                    verdict = excluded.verdict, note = excluded.note,
                    closed_by = excluded.closed_by, closed_at = excluded.closed_at,
                    updated_at = excluded.updated_at, version = excluded.version
                WHERE cases.version = $11
                RETURNING alert_id
             ), logged AS (
                INSERT INTO audit (at, actor, role, action, target, detail)
                SELECT $12, $13, $14, $15, $16, $17 FROM up
                RETURNING id
             )
             SELECT COUNT(*) FROM logged",
            &[
                &case.id,
                &case.transaction_id,
                &case.status.as_str(),
                &case.assignee,
                &case.verdict.map(Verdict::as_str),
                &case.note,
                &case.closed_by,
                &case.closed_at.map(Timestamp::millis),
                &case.updated_at.map_or(0, Timestamp::millis),
                &case.version,
                &expected,
                &audit.at.millis(),
                &audit.actor,
                &audit.role,
                &audit.action,
                &audit.target,
                &detail,
            ],
        ))
        .await?;
        let written: i64 = row.try_get(0).map_err(pg)?;
        Ok(written == 1)
    }

    /// Appends one audit row.
    pub async fn audit(&self, a: NewAudit) -> Result<AuditEntry, StoreError> {
        let c = self.session().await?;
        let detail = a.detail.to_string();
        let row = Session::timed(c.query_one(
            "INSERT INTO audit (at, actor, role, action, target, detail)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[
                &a.at.millis(),
                &a.actor,
                &a.role,
                &a.action,
                &a.target,
                &detail,
            ],
        ))
        .await?;
        Ok(AuditEntry {
            id: row.try_get(0).map_err(pg)?,
            at: a.at,
            actor: a.actor,
            role: a.role,
            action: a.action,
            target: a.target,
            detail: a.detail,
        })
    }

    /// Audit rows, newest first.
    pub async fn audit_trail(&self, q: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let (sql, params) = audit_sql(&q, placeholder);
        let params: Vec<Box<dyn ToSql + Sync + Send>> = params.iter().map(boxed).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let c = self.session().await?;
        let rows = Session::timed(c.query(&sql, &refs)).await?;
        rows.iter().map(audit_row).collect()
    }
}

/// Walks the audit chain of the database at `url` in one read-only repeatable-read
/// transaction (one snapshot: the head and the rows agree even while nodes append), a page of
/// rows at a time, and reports the first broken row. Applies no migrations.
pub async fn verify_chain(
    url: &str,
    ca: Option<&std::path::Path>,
) -> Result<VerifyReport, StoreError> {
    let mut client = PostgresStore::connect_reader(url, ca).await?;
    let t = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)?;
    let chained = t
        .query_opt(
            "SELECT 1 FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name = 'audit_chain'",
            &[],
        )
        .await
        .map_err(pg)?
        .is_some();
    if !chained {
        return Err(StoreError::Corrupt(
            "this database's audit trail has no hash chain yet: start `ringfence serve` on it \
             once to migrate it"
                .into(),
        ));
    }
    let head = match t
        .query_opt("SELECT last_id, hash FROM audit_chain WHERE one", &[])
        .await
        .map_err(pg)?
    {
        Some(r) => Some((
            r.try_get::<_, i64>(0).map_err(pg)?,
            r.try_get::<_, Vec<u8>>(1).map_err(pg)?,
        )),
        None => None,
    };
    let mut verifier = ChainVerifier::default();
    let mut after = i64::MIN;
    loop {
        let rows = t
            .query(
                "SELECT id, at, actor, role, action, target, detail, hash FROM audit
                 WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &VERIFY_PAGE],
            )
            .await
            .map_err(pg)?;
        for r in &rows {
            let row = ChainRow {
                id: r.try_get(0).map_err(pg)?,
                at: r.try_get(1).map_err(pg)?,
                actor: r.try_get(2).map_err(pg)?,
                role: r.try_get(3).map_err(pg)?,
                action: r.try_get(4).map_err(pg)?,
                target: r.try_get(5).map_err(pg)?,
                detail: r.try_get(6).map_err(pg)?,
            };
            let hash: Option<Vec<u8>> = r.try_get(7).map_err(pg)?;
            verifier.row(&row, hash.as_deref());
            after = row.id;
            if verifier.is_broken() {
                return Ok(verifier.finish(head));
            }
        }
        if (rows.len() as i64) < VERIFY_PAGE {
            break;
        }
    }
    Ok(verifier.finish(head))
}
