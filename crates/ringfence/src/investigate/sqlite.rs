//! Investigate's reads from the embedded store (through its reader pool).

use ringfence_core::event::Timestamp;
use rusqlite::{params, OptionalExtension};

use super::{parse_tx, EntityStats, EntityTx, COUNT_CAP, HISTORY_SQL, SEEN_SQL, STATS_SQL, TX_SQL};
use crate::store::sqlite::SqliteStore;
use crate::store::StoreError;

async fn read<T: Send + 'static>(
    store: &SqliteStore,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    // Reads see every acknowledged write (the indexer may be a few records behind the log).
    store.caught_up().await;
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.read_blocking(f))
        .await
        .map_err(|_| StoreError::Closed)?
}

/// See [`super::transaction_seen`].
pub async fn transaction_seen(
    store: &SqliteStore,
    id: String,
) -> Result<Option<Timestamp>, StoreError> {
    read(store, move |c| {
        Ok(c.prepare_cached(TX_SQL)?
            .query_row([id], |r| r.get::<_, i64>(0))
            .optional()?
            .map(Timestamp::from_millis))
    })
    .await
}

/// See [`super::entity_seen`].
pub async fn entity_seen(
    store: &SqliteStore,
    entity: String,
) -> Result<(i64, Option<Timestamp>), StoreError> {
    read(store, move |c| {
        Ok(c.prepare_cached(SEEN_SQL)?
            .query_row(params![entity, COUNT_CAP + 1], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?.map(Timestamp::from_millis),
                ))
            })?)
    })
    .await
}

/// See [`super::entity_stats`].
pub async fn entity_stats(store: &SqliteStore, entity: String) -> Result<EntityStats, StoreError> {
    read(store, move |c| {
        Ok(c.prepare_cached(STATS_SQL)?
            .query_row(params![entity, COUNT_CAP + 1], |r| {
                let n: i64 = r.get(0)?;
                Ok(EntityStats {
                    transactions: n.min(COUNT_CAP),
                    alerts: r.get(1)?,
                    labelled_fraud: r.get(2)?,
                    labelled_legit: r.get(3)?,
                    first_seen: r.get::<_, Option<i64>>(4)?.map(Timestamp::from_millis),
                    last_seen: r.get::<_, Option<i64>>(5)?.map(Timestamp::from_millis),
                    capped: n > COUNT_CAP,
                })
            })?)
    })
    .await
}

/// See [`super::entity_history`].
pub async fn entity_history(
    store: &SqliteStore,
    entity: String,
    limit: u32,
) -> Result<Vec<EntityTx>, StoreError> {
    read(store, move |c| {
        let mut stmt = c.prepare_cached(HISTORY_SQL)?;
        let rows = stmt.query_map(params![entity, limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, f64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<bool>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (transaction_id, ts, amount, decision, score, event, label) = row?;
            out.push(EntityTx {
                transaction_id,
                timestamp: Timestamp::from_millis(ts),
                amount,
                decision,
                score,
                label,
                tx: parse_tx(&event)?,
            });
        }
        Ok(out)
    })
    .await
}
