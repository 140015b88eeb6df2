//! Cases and the audit trail: an analyst's work on the alert queue.
//!
//! Every stored alert is a case, keyed by the alert's id. A case has no row until an analyst
//! acts on it (no row means `open`), so the write path of decisions never pays for cases.
//! States: `open` → `assigned` (to an analyst) → `closed` with a verdict (`fraud` or
//! `false_positive`), a note, who and when; a closed case can be reopened.
//!
//! # Layout
//! - this module: the types, the state machine ([`Case::next`]), the queue's order and its
//!   SQL (one text for both databases), and [`CaseBook`], which picks the backend.
//! - [`sqlite`]: the embedded store's tables (in the node's `ringfence.db`).
//! - [`postgres`]: production mode's tables (migration 3), shared by every node.
//!
//! Why optimistic versions and not locks: every change is computed from the case as read
//! (in Rust, one state machine for both databases) and written only if the case still has the
//! version it was read at, in the same atomic write as its audit row. Two analysts closing the
//! same case at once on two nodes: one write wins, the other finds a closed case on its
//! re-read and gets 409. Nothing is held open across a network round trip.
//!
//! Closing stores the verdict as a label through [`crate::host::EngineHost::label`] (see
//! `host/cases.rs`), which feeds training and ring features like `POST /v1/labels`.

pub mod chain;
pub mod postgres;
pub mod sqlite;

use ringfence_core::event::Timestamp;
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::store::{AlertRow, Records, StoreError};

/// Most cases one queue page returns.
pub const MAX_LIMIT: u32 = 500;
/// Most audit rows one page returns.
pub const MAX_AUDIT_LIMIT: u32 = 1000;
/// The priority and risk orders rank the newest this many alerts. A day of heavy traffic
/// holds millions of alerts; ranking all of them would be a full sort per refresh, while a
/// fraud team works the recent ones. Older alerts stay reachable by `sort=newest` paging, and
/// assigned or closed cases are listed from the cases table whatever their age.
pub const QUEUE_WINDOW: u32 = 10_000;
/// Longest note on a verdict, in characters.
pub const MAX_NOTE: usize = 2000;

/// Where a case is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Nobody has taken it (every alert starts here).
    Open,
    /// An analyst is working it.
    Assigned,
    /// Decided, with a verdict.
    Closed,
}

impl CaseStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Open => "open",
            CaseStatus::Assigned => "assigned",
            CaseStatus::Closed => "closed",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(s: &str) -> Option<CaseStatus> {
        [CaseStatus::Open, CaseStatus::Assigned, CaseStatus::Closed]
            .into_iter()
            .find(|c| c.as_str() == s)
    }

    /// Its place in the priority order: work not yet taken first, closed last.
    fn rank(self) -> u8 {
        match self {
            CaseStatus::Open => 0,
            CaseStatus::Assigned => 1,
            CaseStatus::Closed => 2,
        }
    }
}

/// An analyst's verdict on a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Confirmed fraud: the transaction is labelled fraud.
    Fraud,
    /// Not fraud: the transaction is labelled not fraud.
    FalsePositive,
}

impl Verdict {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Fraud => "fraud",
            Verdict::FalsePositive => "false_positive",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(s: &str) -> Option<Verdict> {
        match s {
            "fraud" => Some(Verdict::Fraud),
            "false_positive" => Some(Verdict::FalsePositive),
            _ => None,
        }
    }
}

/// A case's state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Case {
    /// The alert's id (the case's id).
    pub id: i64,
    /// The transaction that raised the alert.
    pub transaction_id: String,
    /// Where it is.
    pub status: CaseStatus,
    /// Who works it.
    pub assignee: Option<String>,
    /// The verdict, once closed.
    pub verdict: Option<Verdict>,
    /// The note given with the verdict.
    pub note: Option<String>,
    /// Who closed it.
    pub closed_by: Option<String>,
    /// When it was closed.
    pub closed_at: Option<Timestamp>,
    /// When it last changed (absent while nobody has acted on it).
    pub updated_at: Option<Timestamp>,
    /// Changes so far (0: untouched); a write succeeds only at the version it read.
    pub version: i64,
}

/// A change an analyst asks for.
#[derive(Clone, Debug)]
pub enum Change {
    /// Take the case (or take it over).
    Assign,
    /// Close it with a verdict.
    Close {
        /// The verdict.
        verdict: Verdict,
        /// Why, in the analyst's words.
        note: Option<String>,
    },
    /// Open a closed case again.
    Reopen,
    /// Take back a close whose label could not be stored (only from the version it made).
    UndoClose {
        /// The version the close wrote.
        version: i64,
        /// What failed.
        reason: String,
    },
}

impl Change {
    /// The audit action's name.
    pub fn action(&self) -> &'static str {
        match self {
            Change::Assign => "case.assign",
            Change::Close { .. } => "case.close",
            Change::Reopen => "case.reopen",
            Change::UndoClose { .. } => "case.close_undone",
        }
    }
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// No alert has that id.
    #[error("no alert {0}")]
    NotFound(i64),
    /// The case is not in a state the change applies to (e.g. closed twice).
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Case {
    /// An alert's case before anyone acted on it.
    pub fn untouched(id: i64, transaction_id: String) -> Case {
        Case {
            id,
            transaction_id,
            status: CaseStatus::Open,
            assignee: None,
            verdict: None,
            note: None,
            closed_by: None,
            closed_at: None,
            updated_at: None,
            version: 0,
        }
    }

    /// The case after `change` by `who` at `now`, with the audit detail to record, or why
    /// the change does not apply.
    pub fn next(
        &self,
        change: &Change,
        who: &Principal,
        now: Timestamp,
    ) -> Result<(Case, serde_json::Value), CaseError> {
        let mut next = self.clone();
        next.version = self.version + 1;
        next.updated_at = Some(now);
        let detail = match change {
            Change::Assign => {
                if self.status == CaseStatus::Closed {
                    return Err(CaseError::Conflict(format!(
                        "case {} is closed; reopen it first",
                        self.id
                    )));
                }
                next.status = CaseStatus::Assigned;
                next.assignee = Some(who.name.clone());
                serde_json::json!({ "assignee": who.name, "previous": self.assignee })
            }
            Change::Close { verdict, note } => {
                if self.status == CaseStatus::Closed {
                    return Err(CaseError::Conflict(format!(
                        "case {} is already closed as {} by {}",
                        self.id,
                        self.verdict.map_or("?", Verdict::as_str),
                        self.closed_by.as_deref().unwrap_or("?")
                    )));
                }
                next.status = CaseStatus::Closed;
                next.verdict = Some(*verdict);
                next.note = note.clone();
                next.closed_by = Some(who.name.clone());
                next.closed_at = Some(now);
                serde_json::json!({
                    "verdict": verdict.as_str(),
                    "note": note,
                    "transaction_id": self.transaction_id,
                })
            }
            Change::Reopen => {
                if self.status != CaseStatus::Closed {
                    return Err(CaseError::Conflict(format!(
                        "case {} is {}, not closed",
                        self.id,
                        self.status.as_str()
                    )));
                }
                next.status = reopened_status(self);
                next.verdict = None;
                next.note = None;
                next.closed_by = None;
                next.closed_at = None;
                serde_json::json!({ "previous_verdict": self.verdict.map(Verdict::as_str) })
            }
            Change::UndoClose { version, reason } => {
                if self.status != CaseStatus::Closed || self.version != *version {
                    return Err(CaseError::Conflict(format!(
                        "case {} changed since the close being undone",
                        self.id
                    )));
                }
                next.status = reopened_status(self);
                next.verdict = None;
                next.note = None;
                next.closed_by = None;
                next.closed_at = None;
                serde_json::json!({ "reason": reason })
            }
        };
        Ok((next, detail))
    }
}

/// A reopened case goes back to whoever had it, else to the open queue.
fn reopened_status(c: &Case) -> CaseStatus {
    if c.assignee.is_some() {
        CaseStatus::Assigned
    } else {
        CaseStatus::Open
    }
}

/// One row of the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Increasing id (the trail's order).
    pub id: i64,
    /// When.
    pub at: Timestamp,
    /// Who (a user name or `key:<id>`).
    pub actor: String,
    /// Their role at the time.
    pub role: String,
    /// What, as `<area>.<verb>` (`case.close`, `rule.activate`, ...).
    pub action: String,
    /// On what, as `<kind>:<id>` (`case:42`, `rule:velocity`, ...).
    pub target: String,
    /// The particulars.
    pub detail: serde_json::Value,
}

/// An audit row to append.
#[derive(Clone, Debug)]
pub struct NewAudit {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: String,
    /// Their role.
    pub role: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// The particulars.
    pub detail: serde_json::Value,
}

impl NewAudit {
    /// An action by `who` at `at`.
    pub fn by(
        who: &Principal,
        at: Timestamp,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> NewAudit {
        NewAudit {
            at,
            actor: who.name.clone(),
            role: role_name(who),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
        }
    }
}

fn role_name(who: &Principal) -> String {
    serde_json::to_value(who.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", who.role).to_lowercase())
}

/// Filters of the audit trail, newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// At most this many.
    pub limit: u32,
    /// Only rows with an id below this (paging).
    pub before: Option<i64>,
}

/// The case target name of an alert id in the audit trail.
pub fn target(id: i64) -> String {
    format!("case:{id}")
}

/// The queue's orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum QueueSort {
    /// The default, what a fraud team works down: untaken cases first, then assigned, then
    /// closed; within each, the riskiest (highest score) first, then the newest. Closed cases
    /// alone (`status=closed`) are listed newest first.
    #[default]
    Priority,
    /// Newest alert first.
    Newest,
    /// Highest score first, then newest.
    Risk,
}

impl QueueSort {
    /// Parses `priority`, `newest` or `risk`.
    pub fn parse(s: &str) -> Option<QueueSort> {
        match s {
            "priority" => Some(QueueSort::Priority),
            "newest" => Some(QueueSort::Newest),
            "risk" => Some(QueueSort::Risk),
            _ => None,
        }
    }
}

/// Where the next page starts: the last row's sort key, sent back as `before`
/// (`<rank>:<score>:<id>`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cursor {
    rank: u8,
    score: f64,
    id: i64,
}

impl Cursor {
    /// Parses a cursor, or a plain alert id (newest-first paging, as `GET /v1/alerts`).
    pub fn parse(s: &str) -> Option<Cursor> {
        if let Ok(id) = s.parse::<i64>() {
            return Some(Cursor {
                rank: 0,
                score: f64::INFINITY,
                id,
            });
        }
        let mut parts = s.splitn(3, ':');
        let rank = parts.next()?.parse::<u8>().ok().filter(|r| *r <= 2)?;
        let score = parts
            .next()?
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())?;
        let id = parts.next()?.parse::<i64>().ok()?;
        Some(Cursor { rank, score, id })
    }

    /// The cursor after `item`.
    pub fn after(item: &QueueItem) -> String {
        format!(
            "{}:{}:{}",
            item.status.rank(),
            item.alert.score,
            item.alert.id
        )
    }
}

/// A page of the queue.
#[derive(Clone, Debug, Default)]
pub struct QueueQuery {
    /// Only cases in this state.
    pub status: Option<CaseStatus>,
    /// The order.
    pub sort: QueueSort,
    /// At most this many.
    pub limit: u32,
    /// After this cursor.
    pub before: Option<Cursor>,
}

/// One case in the queue: its alert and state.
#[derive(Clone, Debug, Serialize)]
pub struct QueueItem {
    /// The alert.
    #[serde(flatten)]
    pub alert: AlertRow,
    /// The case's state.
    pub status: CaseStatus,
    /// Who works it.
    pub assignee: Option<String>,
    /// The verdict, once closed.
    pub verdict: Option<Verdict>,
}

/// A bound value of a generated statement.
#[derive(Clone, Debug)]
pub enum Param {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// A float.
    Real(f64),
}

/// The columns every queue statement selects, in this order.
pub const QUEUE_COLUMNS: &str = "a.id, a.transaction_id, a.ts, a.account, a.action, a.score, \
     a.category, a.amount, a.reasons, COALESCE(c.status, 'open'), c.assignee, c.verdict";

/// The queue's statement for `q`, with placeholders from `ph` (`?1` or `$1`), and its values.
/// One text serves both databases, so both order the queue the same way.
pub fn queue_sql(q: &QueueQuery, ph: fn(usize) -> String) -> (String, Vec<Param>) {
    let mut params: Vec<Param> = Vec::new();
    let mut bind = |p: Param| {
        params.push(p);
        ph(params.len())
    };
    let rank =
        "(CASE COALESCE(c.status, 'open') WHEN 'open' THEN 0 WHEN 'assigned' THEN 1 ELSE 2 END)";
    let mut wheres: Vec<String> = Vec::new();
    // Closed cases pile up for as long as the team works: ranking them all by score would
    // sort every one of them per page, and a rank within "closed" means nothing. Under the
    // default order they are listed newest first (an index walk).
    let sort = match (q.sort, q.status) {
        (QueueSort::Priority, Some(CaseStatus::Closed)) => QueueSort::Newest,
        (sort, _) => sort,
    };
    // The cases table's key orders the cases-table lists (its status index holds it).
    let id_col = match q.status {
        Some(CaseStatus::Assigned | CaseStatus::Closed) => "c.alert_id",
        _ => "a.id",
    };
    let from = match q.status {
        // Taken or decided cases are few next to alerts: list them from the cases table.
        Some(s @ (CaseStatus::Assigned | CaseStatus::Closed)) => {
            wheres.push(format!(
                "c.status = {}",
                bind(Param::Text(s.as_str().into()))
            ));
            "cases c JOIN alerts a ON a.id = c.alert_id".to_owned()
        }
        _ => {
            if q.status == Some(CaseStatus::Open) {
                wheres.push("(c.status IS NULL OR c.status = 'open')".into());
            }
            match sort {
                QueueSort::Newest => "alerts a LEFT JOIN cases c ON c.alert_id = a.id".to_owned(),
                _ => format!(
                    "(SELECT * FROM alerts ORDER BY id DESC LIMIT {QUEUE_WINDOW}) a \
                     LEFT JOIN cases c ON c.alert_id = a.id"
                ),
            }
        }
    };
    let order = match sort {
        QueueSort::Priority => format!("{rank}, a.score DESC, {id_col} DESC"),
        QueueSort::Newest => format!("{id_col} DESC"),
        QueueSort::Risk => format!("a.score DESC, {id_col} DESC"),
    };
    if let Some(c) = q.before {
        let id = bind(Param::Int(c.id));
        match sort {
            QueueSort::Newest => wheres.push(format!("{id_col} < {id}")),
            QueueSort::Risk | QueueSort::Priority if c.score.is_infinite() => {
                wheres.push(format!("{id_col} < {id}"))
            }
            QueueSort::Risk => {
                let s1 = bind(Param::Real(c.score));
                let s2 = bind(Param::Real(c.score));
                wheres.push(format!(
                    "(a.score < {s1} OR (a.score = {s2} AND {id_col} < {id}))"
                ));
            }
            QueueSort::Priority => {
                let s1 = bind(Param::Real(c.score));
                let s2 = bind(Param::Real(c.score));
                // The rank is a parsed number (0..=2), written as a literal.
                let r = c.rank;
                wheres.push(format!(
                    "({rank} > {r} OR ({rank} = {r} AND (a.score < {s1} OR (a.score = {s2} AND {id_col} < {id}))))"
                ));
            }
        }
    }
    let limit = bind(Param::Int(i64::from(q.limit.clamp(1, MAX_LIMIT))));
    let filter = if wheres.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", wheres.join(" AND "))
    };
    (
        format!("SELECT {QUEUE_COLUMNS} FROM {from} {filter} ORDER BY {order} LIMIT {limit}"),
        params,
    )
}

/// The audit statement for `q`, with placeholders from `ph`, and its values.
pub fn audit_sql(q: &AuditQuery, ph: fn(usize) -> String) -> (String, Vec<Param>) {
    let mut params: Vec<Param> = Vec::new();
    let mut bind = |p: Param| {
        params.push(p);
        ph(params.len())
    };
    let mut wheres = Vec::new();
    if let Some(a) = &q.actor {
        wheres.push(format!("actor = {}", bind(Param::Text(a.clone()))));
    }
    if let Some(t) = &q.target {
        wheres.push(format!("target = {}", bind(Param::Text(t.clone()))));
    }
    if let Some(b) = q.before {
        wheres.push(format!("id < {}", bind(Param::Int(b))));
    }
    let limit = bind(Param::Int(i64::from(q.limit.clamp(1, MAX_AUDIT_LIMIT))));
    let filter = if wheres.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", wheres.join(" AND "))
    };
    (
        format!(
            "SELECT id, at, actor, role, action, target, detail FROM audit {filter} \
             ORDER BY id DESC LIMIT {limit}"
        ),
        params,
    )
}

/// The cases store of a node: its SQLite, or in production mode PostgreSQL (every node
/// sees the same cases).
#[derive(Clone, Debug)]
pub enum CaseBook {
    /// The node's `ringfence.db`.
    Sqlite(sqlite::SqliteCases),
    /// The shared database.
    Postgres(postgres::PostgresCases),
}

impl CaseBook {
    /// The case book of `records` (SQLite: creates its tables; PostgreSQL: migration 3
    /// already did).
    pub fn open(records: &Records) -> Result<CaseBook, StoreError> {
        Ok(match records {
            Records::Sqlite(s) => CaseBook::Sqlite(sqlite::SqliteCases::open(s)?),
            Records::Postgres { shared, .. } => {
                CaseBook::Postgres(postgres::PostgresCases::new(shared.clone()))
            }
        })
    }

    /// An alert and its case (untouched when nobody acted on it), or `None` when no alert
    /// has that id.
    pub async fn get(&self, id: i64) -> Result<Option<(AlertRow, Case)>, StoreError> {
        match self {
            CaseBook::Sqlite(s) => s.get(id).await,
            CaseBook::Postgres(p) => p.get(id).await,
        }
    }

    /// A page of the queue.
    pub async fn queue(&self, q: QueueQuery) -> Result<Vec<QueueItem>, StoreError> {
        match self {
            CaseBook::Sqlite(s) => s.queue(q).await,
            CaseBook::Postgres(p) => p.queue(q).await,
        }
    }

    /// Applies `change` by `who`, with its audit row in the same write. Retries on a
    /// concurrent change, so the refusal (409) reflects the case as it now is.
    pub async fn apply(
        &self,
        id: i64,
        change: &Change,
        who: &Principal,
        now: Timestamp,
    ) -> Result<Case, CaseError> {
        for _ in 0..5 {
            let Some((_, case)) = self.get(id).await? else {
                return Err(CaseError::NotFound(id));
            };
            let (next, detail) = case.next(change, who, now)?;
            let audit = NewAudit::by(who, now, change.action(), &target(id), detail);
            let written = match self {
                CaseBook::Sqlite(s) => s.write_if(&next, case.version, audit).await?,
                CaseBook::Postgres(p) => p.write_if(&next, case.version, audit).await?,
            };
            if written {
                return Ok(next);
            }
        }
        Err(CaseError::Conflict(format!(
            "case {id} keeps changing under concurrent updates; retry"
        )))
    }

    /// Appends one row to the audit trail.
    pub async fn audit(&self, entry: NewAudit) -> Result<AuditEntry, StoreError> {
        match self {
            CaseBook::Sqlite(s) => s.audit(entry).await,
            CaseBook::Postgres(p) => p.audit(entry).await,
        }
    }

    /// Audit rows matching `q`, newest first.
    pub async fn audit_trail(&self, q: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        match self {
            CaseBook::Sqlite(s) => s.audit_trail(q).await,
            CaseBook::Postgres(p) => p.audit_trail(q).await,
        }
    }
}

/// Builds a case from stored columns (shared by both backends' row readers).
#[allow(clippy::too_many_arguments)]
pub(crate) fn case_from_columns(
    id: i64,
    transaction_id: String,
    status: &str,
    assignee: Option<String>,
    verdict: Option<String>,
    note: Option<String>,
    closed_by: Option<String>,
    closed_at: Option<i64>,
    updated_at: i64,
    version: i64,
) -> Result<Case, StoreError> {
    Ok(Case {
        id,
        transaction_id,
        status: CaseStatus::parse(status)
            .ok_or_else(|| StoreError::Corrupt(format!("case {id}: status `{status}`")))?,
        assignee,
        verdict: match verdict {
            Some(v) => Some(
                Verdict::parse(&v)
                    .ok_or_else(|| StoreError::Corrupt(format!("case {id}: verdict `{v}`")))?,
            ),
            None => None,
        },
        note,
        closed_by,
        closed_at: closed_at.map(Timestamp::from_millis),
        updated_at: Some(Timestamp::from_millis(updated_at)),
        version,
    })
}

/// Parses a stored audit detail (corrupt text is shown as text, never dropped).
pub(crate) fn detail_value(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn ana() -> Principal {
        Principal {
            name: "ana".into(),
            role: Role::Analyst,
        }
    }

    #[test]
    fn a_case_closes_once_and_reopens_to_its_assignee() {
        let at = Timestamp::from_millis(1_000);
        let open = Case::untouched(7, "t-7".into());
        let (assigned, _) = open.next(&Change::Assign, &ana(), at).expect("assign");
        assert_eq!(assigned.status, CaseStatus::Assigned);
        let close = Change::Close {
            verdict: Verdict::Fraud,
            note: None,
        };
        let (closed, detail) = assigned.next(&close, &ana(), at).expect("close");
        assert_eq!(closed.verdict, Some(Verdict::Fraud));
        assert_eq!(detail["verdict"], "fraud");
        assert!(matches!(
            closed.next(&close, &ana(), at),
            Err(CaseError::Conflict(_))
        ));
        let (reopened, _) = closed.next(&Change::Reopen, &ana(), at).expect("reopen");
        assert_eq!(reopened.status, CaseStatus::Assigned);
        assert_eq!(reopened.verdict, None);
        assert_eq!(reopened.version, 3);
    }

    #[test]
    fn cursors_parse_ids_and_sort_keys_only() {
        assert!(Cursor::parse("42").is_some());
        assert!(Cursor::parse("1:87.5:42").is_some());
        assert!(Cursor::parse("3:1:1").is_none());
        assert!(Cursor::parse("0:NaN:1").is_none());
        assert!(Cursor::parse("x").is_none());
    }
}
