//! Records: every transaction with its decision, alerts and labels, durably stored.
//!
//! # Layout
//! - this module: the record types shared by every backend.
//! - [`sqlite`]: the embedded default: the record log acknowledged on fsync, SQLite (WAL)
//!   indexed from it off the acknowledgement path.
//! - [`log`]: the record log's segment files, entry framing and payload encoding.
//! - [`postgres`]: production (batched multi-row inserts, migrations on start);
//!   [`postgres_tls`]: its TLS, by the URL's `sslmode`.
//! - [`records`]: [`Records`], whichever of the two a node runs on.
//! - [`shipper`]: production mode's write path, local buffer to PostgreSQL.
//! - [`writer`]: the write queue both share.
//!
//! A decision is acknowledged to the caller only after its record is durable; records carry a
//! sequence number in the order the engine applied them, which is the order a restart replays
//! them in.

pub mod cursor;
pub mod log;
pub mod postgres;
pub mod postgres_tls;
pub mod records;
pub mod shipper;
pub mod sqlite;
pub mod writer;

pub use records::Records;
pub use writer::{send, Writer};

use ringfence_core::decision::Decision;
use ringfence_core::event::{Timestamp, Transaction};
use ringfence_core::retail::ReturnConflict;
use serde::{Deserialize, Serialize};

/// A decision as returned to the caller and stored with its transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The decision itself.
    #[serde(flatten)]
    pub decision: Decision,
    /// Time the engine spent (features, rules, decision), in microseconds.
    pub processing_us: u64,
    /// Event time of the transaction.
    pub timestamp: Timestamp,
    /// Decided on this node's own state because the shared state (Redis) was unreachable
    /// within its time budget.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    /// Wall-clock time the decision was made (absent on records written before it was kept):
    /// how replication between sites measures its delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Timestamp>,
}

/// A transaction and its decision, as written.
#[derive(Clone, Debug)]
pub struct TxRecord {
    /// The validated transaction (no raw card number can be in it).
    pub tx: Transaction,
    /// Its decision.
    pub decision: DecisionRecord,
    /// The alert it raises for external sinks (JSON), if any: written to the local outbox in
    /// the same commit as the record, delivered from there by every sink (see `alerts::outbox`).
    pub alert_event: Option<String>,
    /// Receipt lines its return put in conflict with a return accepted at another store:
    /// each is stored once (by its key) and raised as a `duplicate_return_across_sites` alert.
    pub conflicts: Vec<ReturnConflict>,
    /// Set when the transaction was decided at another site and replicated here.
    pub origin: Option<Origin>,
}

/// Where a replicated record was decided: the site and its sequence number there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The site's name (`--site`).
    pub site: String,
    /// The record's sequence number at that site: this site's offset for it once stored.
    pub seq: i64,
}

/// An analyst's (or a chargeback feed's) verdict on a transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelRecord {
    /// The labelled transaction.
    pub transaction_id: String,
    /// Confirmed fraud (`true`) or not fraud (`false`).
    pub fraud: bool,
    /// The verdict this one replaces, if there was one.
    pub previous: Option<bool>,
    /// Who or what gave the label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Free-text note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When the label was received.
    pub labeled_at: Timestamp,
}

/// The entity keys (`kind:id`) a transaction is indexed under, for entity pages, search and
/// the link graph. Both stores write the same keys; a receipt is an entity too, so a search
/// for a receipt finds its purchase and returns.
pub fn entity_keys(tx: &Transaction) -> Vec<String> {
    let receipt = tx.retail.as_ref().and_then(|r| r.receipt_id.as_ref());
    [
        ("card", tx.card_id.as_ref()),
        ("user", tx.user_id.as_ref()),
        ("device", tx.device_id.as_ref()),
        ("ip", tx.ip.as_ref()),
        ("merchant", tx.merchant.as_ref()),
        ("terminal", tx.terminal_id.as_ref()),
        ("store", tx.store_id.as_ref()),
        ("receipt", receipt),
    ]
    .into_iter()
    .filter_map(|(kind, id)| id.map(|id| format!("{kind}:{}", id.as_str())))
    .collect()
}

/// One write, in engine order.
#[derive(Debug)]
pub enum WriteOp {
    /// A decided transaction.
    Tx(Box<TxRecord>),
    /// A label.
    Label(LabelRecord),
    /// A replicated record this site already held (by transaction id): only the offset
    /// moves past it.
    SiteOffset(Origin),
    /// Write everything queued before this, close the database, then acknowledge.
    Close,
}

/// One item of stored history, in the order the engine applied it.
#[derive(Debug)]
pub enum HistoryItem {
    /// A transaction and whether its decision raised an alert.
    Tx {
        /// The transaction.
        tx: Transaction,
        /// Its stored alert flag.
        alert: bool,
        /// Whether its decision was block (a blocked return does not count as returned).
        blocked: bool,
    },
    /// A label on a transaction.
    Label {
        /// The labelled transaction.
        tx: Transaction,
        /// The verdict.
        fraud: bool,
        /// The verdict it replaced.
        previous: Option<bool>,
    },
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error (the URL's password is never in it).
    #[error("postgres: {0}")]
    Postgres(String),
    /// A filesystem operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The writer thread is gone.
    #[error("the store is closed")]
    Closed,
}

/// A compact view of a stored transaction for lists.
#[derive(Clone, Debug, Serialize)]
pub struct TxSummary {
    /// Its id.
    pub transaction_id: String,
    /// Event time.
    pub timestamp: Timestamp,
    /// Amount.
    pub amount: f64,
    /// Decision taken.
    pub decision: String,
    /// Score.
    pub score: f64,
    /// Merchant, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
}

/// A stored alert.
#[derive(Clone, Debug, Serialize)]
pub struct AlertRow {
    /// Alert id (increasing).
    pub id: i64,
    /// The transaction that raised it.
    pub transaction_id: String,
    /// Event time of that transaction.
    pub timestamp: Timestamp,
    /// The account (user, else card).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Decision taken.
    pub decision: String,
    /// Score.
    pub score: f64,
    /// Category of the strongest reason (`velocity`, `ring`, ...).
    pub category: String,
    /// Amount of the transaction.
    pub amount: f64,
    /// All reasons.
    pub reasons: serde_json::Value,
}

/// Filters for listing alerts.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AlertQuery {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only alerts with an id below this (paging, newest first).
    pub before: Option<i64>,
    /// Only this category.
    pub category: Option<String>,
    /// Only this account.
    pub account: Option<String>,
    /// Only this decision.
    pub decision: Option<String>,
}

/// A store seen in the latest records, with what happened there (`GET /v1/stores`).
#[derive(Clone, Debug, Serialize)]
pub struct StoreSeen {
    /// The store.
    pub store_id: String,
    /// Its transactions among the latest records.
    pub transactions: u64,
    /// Of those, purchases.
    pub purchases: u64,
    /// Of those, returns.
    pub returns: u64,
    /// Of those, decided above approve.
    pub flagged: u64,
    /// Of those, blocked.
    pub blocked: u64,
    /// Event time of its newest transaction.
    pub last_at: Timestamp,
}

/// Record counts.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StoreCounts {
    /// Stored transactions.
    pub transactions: u64,
    /// Stored alerts.
    pub alerts: u64,
    /// Stored labels.
    pub labels: u64,
}
