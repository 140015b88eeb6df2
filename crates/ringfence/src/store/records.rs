//! [`Records`]: the store a node runs on, embedded SQLite or PostgreSQL, behind one set of
//! calls for the host and the API.
//!
//! In production mode a node writes to its local SQLite buffer (acknowledged once durable
//! there) and [`super::shipper`] copies it to PostgreSQL; reads of one record look in the
//! buffer first, then PostgreSQL; lists and counts come from PostgreSQL, the view of every
//! node, or from the buffer alone while PostgreSQL is unreachable. Every read is async (the
//! SQLite ones that block underneath run at start-up or hand off to its readers), except
//! [`Records::decision_blocking`], called under the engine lock in a rare path: on PostgreSQL
//! it needs the multi-threaded runtime the server runs on.

use std::collections::HashMap;

use ringfence_core::event::Transaction;

use super::postgres::{PostgresError, PostgresStore};
use super::sqlite::SqliteStore;
use super::{
    AlertQuery, AlertRow, HistoryItem, StoreCounts, StoreError, StoreSeen, TxSummary, Writer,
};

/// The records store of a node.
#[derive(Clone, Debug)]
pub enum Records {
    /// Embedded SQLite in the data directory.
    Sqlite(SqliteStore),
    /// PostgreSQL, shared by every node, fed from this node's local buffer.
    Postgres {
        /// This node's buffer (SQLite in its data directory).
        local: SqliteStore,
        /// The records of every node.
        shared: PostgresStore,
    },
}

impl From<PostgresError> for StoreError {
    fn from(e: PostgresError) -> Self {
        StoreError::Postgres(e.to_string())
    }
}

/// Runs a PostgreSQL read to completion from code that cannot await: possible only on a
/// multi-threaded runtime (the server's), where the other workers keep the connection going.
fn block_on<T>(
    f: impl std::future::Future<Output = Result<T, PostgresError>>,
) -> Result<T, StoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(f))?)
        }
        _ => Err(StoreError::Postgres(
            "a blocking PostgreSQL read needs the multi-threaded runtime".into(),
        )),
    }
}

impl Records {
    /// The write queue (in production mode, the local buffer's).
    pub fn writer(&self) -> &Writer {
        self.local().writer()
    }

    /// Whether a transaction id may be stored (false: certainly not, known without IO). In
    /// production mode other nodes store ids this node never sees: always true there.
    pub fn may_hold(&self, id: &str) -> bool {
        match self {
            Records::Sqlite(s) => s.may_hold(id),
            Records::Postgres { .. } => true,
        }
    }

    /// This node's own SQLite (the store, or in production mode the buffer): its outboxes.
    pub fn local(&self) -> &SqliteStore {
        match self {
            Records::Sqlite(s) | Records::Postgres { local: s, .. } => s,
        }
    }

    /// A meta value (shared by every node in production mode).
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Records::Sqlite(s) => s.meta(key),
            Records::Postgres { shared, .. } => Ok(shared.meta(key).await?),
        }
    }

    /// Sets a meta value.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        match self {
            Records::Sqlite(s) => s.set_meta(key, value),
            Records::Postgres { shared, .. } => Ok(shared.set_meta(key, value).await?),
        }
    }

    /// Every stored transaction and label in sequence order (start-up: SQLite reads block;
    /// in production mode, every node's records, after this node's buffer was shipped).
    pub async fn for_each_history(&self, f: impl FnMut(HistoryItem)) -> Result<u64, StoreError> {
        match self {
            Records::Sqlite(s) => s.for_each_history(f),
            Records::Postgres { shared, .. } => Ok(shared.for_each_history(f).await?),
        }
    }

    /// The latest event time of a stored transaction, as [`Records::for_each_history`] sees
    /// the history (in production mode, PostgreSQL's).
    pub async fn latest_event_time(&self) -> Result<Option<i64>, StoreError> {
        match self {
            Records::Sqlite(s) => s.latest_event_time().await,
            Records::Postgres { shared, .. } => Ok(shared.latest_event_time().await?),
        }
    }

    /// Stored decisions (as JSON) of those ids that have one, on any node. While PostgreSQL
    /// is unreachable only this node's are known (logged).
    pub async fn decisions_of(
        &self,
        ids: Vec<String>,
    ) -> Result<HashMap<String, String>, StoreError> {
        match self {
            Records::Sqlite(s) => s.decisions_of(ids).await,
            Records::Postgres { local, shared } => {
                let mut found = local.decisions_of(ids.clone()).await?;
                let rest: Vec<String> =
                    ids.into_iter().filter(|i| !found.contains_key(i)).collect();
                if !rest.is_empty() {
                    match shared.decisions_of(rest).await {
                        Ok(more) => found.extend(more),
                        Err(e) => {
                            tracing::warn!(error = %e, "postgres unreachable: duplicate ids are checked against this node's records only")
                        }
                    }
                }
                Ok(found)
            }
        }
    }

    /// One stored decision, from code that cannot await (see the module notes).
    pub fn decision_blocking(&self, id: &str) -> Result<Option<String>, StoreError> {
        match self {
            Records::Sqlite(s) => s.decision_blocking(id),
            Records::Postgres { local, shared } => match local.decision_blocking(id)? {
                Some(d) => Ok(Some(d)),
                None => block_on(shared.decision(id)),
            },
        }
    }

    /// A stored transaction with its decision and label, as the API shows it.
    pub async fn transaction(&self, id: String) -> Result<Option<serde_json::Value>, StoreError> {
        match self {
            Records::Sqlite(s) => s.transaction(id).await,
            Records::Postgres { local, shared } => match local.transaction(id.clone()).await? {
                // Labels given on other nodes are in PostgreSQL only: prefer its view.
                Some(local_view) => Ok(shared
                    .transaction(id)
                    .await
                    .ok()
                    .flatten()
                    .or(Some(local_view))),
                None => Ok(shared.transaction(id).await?),
            },
        }
    }

    /// A stored transaction and its current label.
    pub async fn event_and_label(
        &self,
        id: String,
    ) -> Result<Option<(Transaction, Option<bool>)>, StoreError> {
        match self {
            Records::Sqlite(s) => s.event_and_label(id).await,
            Records::Postgres { local, shared } => match shared.event_and_label(id.clone()).await {
                Ok(Some(found)) => Ok(Some(found)),
                // Not shipped yet, or PostgreSQL unreachable: this node's own view.
                Ok(None) | Err(_) => local.event_and_label(id).await,
            },
        }
    }

    /// The latest transactions of an entity (`kind:id`), newest first.
    pub async fn entity_transactions(
        &self,
        entity: String,
        limit: u32,
    ) -> Result<Vec<(TxSummary, Transaction)>, StoreError> {
        match self {
            Records::Sqlite(s) => s.entity_transactions(entity, limit).await,
            Records::Postgres { local, shared } => {
                match shared.entity_transactions(entity.clone(), limit).await {
                    Ok(v) => Ok(v),
                    Err(_) => local.entity_transactions(entity, limit).await,
                }
            }
        }
    }

    /// Alerts matching `q`, newest first.
    pub async fn alerts(&self, q: AlertQuery) -> Result<Vec<AlertRow>, StoreError> {
        match self {
            Records::Sqlite(s) => s.alerts(q).await,
            Records::Postgres { local, shared } => match shared.alerts(q.clone()).await {
                Ok(v) => Ok(v),
                Err(_) => local.alerts(q).await,
            },
        }
    }

    /// The id of the alert a transaction raised, as the dashboard knows it (on PostgreSQL,
    /// once shipped there; `None` before).
    pub async fn alert_id_of(&self, transaction_id: &str) -> Result<Option<i64>, StoreError> {
        match self {
            Records::Sqlite(s) => s.alert_id_of(transaction_id.to_owned()).await,
            Records::Postgres { shared, .. } => Ok(shared.alert_id_of(transaction_id).await?),
        }
    }

    /// The stores of the latest `window` records with their counts (every node's in
    /// production mode; this node's buffer while PostgreSQL is unreachable).
    pub async fn recent_stores(&self, window: u32) -> Result<Vec<StoreSeen>, StoreError> {
        match self {
            Records::Sqlite(s) => s.recent_stores(window).await,
            Records::Postgres { local, shared } => match shared.recent_stores(window).await {
                Ok(v) => Ok(v),
                Err(_) => local.recent_stores(window).await,
            },
        }
    }

    /// Record counts.
    pub async fn counts(&self) -> Result<StoreCounts, StoreError> {
        match self {
            Records::Sqlite(s) => s.counts().await,
            Records::Postgres { local, shared } => match shared.counts().await {
                Ok(c) => Ok(c),
                Err(_) => local.counts().await,
            },
        }
    }
}
