//! [`Records`]: the store a node runs on, embedded SQLite or PostgreSQL, behind one set of
//! calls for the host and the API.
//!
//! Both stores share the write queue ([`super::writer`]), and every read is async here (the
//! SQLite ones that are blocking underneath run at start-up only, or hand off to its readers).
//! The one exception is [`Records::decision_blocking`], called under the engine lock in a
//! rare path: on PostgreSQL it needs the multi-threaded runtime the server runs on.

use std::collections::HashMap;

use ringfence_core::event::Transaction;

use super::postgres::{PostgresError, PostgresStore};
use super::sqlite::SqliteStore;
use super::{AlertQuery, AlertRow, HistoryItem, StoreCounts, StoreError, TxSummary, Writer};

/// The records store of a node.
#[derive(Clone, Debug)]
pub enum Records {
    /// Embedded SQLite in the data directory.
    Sqlite(SqliteStore),
    /// PostgreSQL, shared by every node.
    Postgres(PostgresStore),
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
    /// The write queue.
    pub fn writer(&self) -> &Writer {
        match self {
            Records::Sqlite(s) => s.writer(),
            Records::Postgres(p) => p.writer(),
        }
    }

    /// A meta value.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Records::Sqlite(s) => s.meta(key),
            Records::Postgres(p) => Ok(p.meta(key).await?),
        }
    }

    /// Sets a meta value.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        match self {
            Records::Sqlite(s) => s.set_meta(key, value),
            Records::Postgres(p) => Ok(p.set_meta(key, value).await?),
        }
    }

    /// Every stored transaction and label in sequence order (start-up: SQLite reads block).
    pub async fn for_each_history(&self, f: impl FnMut(HistoryItem)) -> Result<u64, StoreError> {
        match self {
            Records::Sqlite(s) => s.for_each_history(f),
            Records::Postgres(p) => Ok(p.for_each_history(f).await?),
        }
    }

    /// Stored decisions (as JSON) of those ids that have one.
    pub async fn decisions_of(
        &self,
        ids: Vec<String>,
    ) -> Result<HashMap<String, String>, StoreError> {
        match self {
            Records::Sqlite(s) => s.decisions_of(ids).await,
            Records::Postgres(p) => Ok(p.decisions_of(ids).await?),
        }
    }

    /// One stored decision, from code that cannot await (see the module notes).
    pub fn decision_blocking(&self, id: &str) -> Result<Option<String>, StoreError> {
        match self {
            Records::Sqlite(s) => s.decision_blocking(id),
            Records::Postgres(p) => block_on(p.decision(id)),
        }
    }

    /// A stored transaction with its decision and label, as the API shows it.
    pub async fn transaction(&self, id: String) -> Result<Option<serde_json::Value>, StoreError> {
        match self {
            Records::Sqlite(s) => s.transaction(id).await,
            Records::Postgres(p) => Ok(p.transaction(id).await?),
        }
    }

    /// A stored transaction and its current label.
    pub async fn event_and_label(
        &self,
        id: String,
    ) -> Result<Option<(Transaction, Option<bool>)>, StoreError> {
        match self {
            Records::Sqlite(s) => s.event_and_label(id).await,
            Records::Postgres(p) => Ok(p.event_and_label(id).await?),
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
            Records::Postgres(p) => Ok(p.entity_transactions(entity, limit).await?),
        }
    }

    /// Alerts matching `q`, newest first.
    pub async fn alerts(&self, q: AlertQuery) -> Result<Vec<AlertRow>, StoreError> {
        match self {
            Records::Sqlite(s) => s.alerts(q).await,
            Records::Postgres(p) => Ok(p.alerts(q).await?),
        }
    }

    /// Record counts.
    pub async fn counts(&self) -> Result<StoreCounts, StoreError> {
        match self {
            Records::Sqlite(s) => s.counts().await,
            Records::Postgres(p) => Ok(p.counts().await?),
        }
    }
}
