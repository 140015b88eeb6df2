//! Investigate's reads from PostgreSQL (production mode: every node's transactions).

use ringfence_core::event::Timestamp;

use super::{
    parse_tx, pg_sql, EntityStats, EntityTx, COUNT_CAP, HISTORY_SQL, SEEN_SQL, STATS_SQL, TX_SQL,
};
use crate::store::postgres::{PostgresError, PostgresStore, Session};
use crate::store::StoreError;

fn pg(e: tokio_postgres::Error) -> StoreError {
    PostgresError::from(e).into()
}

/// See [`super::transaction_seen`].
pub async fn transaction_seen(
    store: &PostgresStore,
    id: &str,
) -> Result<Option<Timestamp>, StoreError> {
    let c = store.session().await?;
    let row = Session::timed(c.query_opt(&pg_sql(TX_SQL), &[&id])).await?;
    row.map(|r| r.try_get::<_, i64>(0).map(Timestamp::from_millis))
        .transpose()
        .map_err(pg)
}

/// See [`super::entity_seen`].
pub async fn entity_seen(
    store: &PostgresStore,
    entity: &str,
) -> Result<(i64, Option<Timestamp>), StoreError> {
    let c = store.session().await?;
    let r = Session::timed(c.query_one(&pg_sql(SEEN_SQL), &[&entity, &(COUNT_CAP + 1)])).await?;
    Ok((
        r.try_get(0).map_err(pg)?,
        r.try_get::<_, Option<i64>>(1)
            .map_err(pg)?
            .map(Timestamp::from_millis),
    ))
}

/// See [`super::entity_stats`].
pub async fn entity_stats(store: &PostgresStore, entity: &str) -> Result<EntityStats, StoreError> {
    let c = store.session().await?;
    let r = Session::timed(c.query_one(&pg_sql(STATS_SQL), &[&entity, &(COUNT_CAP + 1)])).await?;
    let n: i64 = r.try_get(0).map_err(pg)?;
    Ok(EntityStats {
        transactions: n.min(COUNT_CAP),
        alerts: r.try_get(1).map_err(pg)?,
        labelled_fraud: r.try_get(2).map_err(pg)?,
        labelled_legit: r.try_get(3).map_err(pg)?,
        first_seen: r
            .try_get::<_, Option<i64>>(4)
            .map_err(pg)?
            .map(Timestamp::from_millis),
        last_seen: r
            .try_get::<_, Option<i64>>(5)
            .map_err(pg)?
            .map(Timestamp::from_millis),
        capped: n > COUNT_CAP,
    })
}

/// See [`super::entity_history`].
pub async fn entity_history(
    store: &PostgresStore,
    entity: &str,
    limit: u32,
) -> Result<Vec<EntityTx>, StoreError> {
    let c = store.session().await?;
    let rows = Session::timed(c.query(&pg_sql(HISTORY_SQL), &[&entity, &i64::from(limit)])).await?;
    rows.iter()
        .map(|r| {
            let event: String = r.try_get(5).map_err(pg)?;
            Ok(EntityTx {
                transaction_id: r.try_get(0).map_err(pg)?,
                timestamp: Timestamp::from_millis(r.try_get(1).map_err(pg)?),
                amount: r.try_get(2).map_err(pg)?,
                decision: r.try_get(3).map_err(pg)?,
                score: r.try_get(4).map_err(pg)?,
                label: r.try_get(6).map_err(pg)?,
                tx: parse_tx(&event)?,
            })
        })
        .collect()
}
