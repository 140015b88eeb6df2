//! Production mode's write path: a node acknowledges a decision once it is durable in its own
//! SQLite buffer (the embedded store, in the data directory), and this shipper copies the
//! buffer to PostgreSQL in sequence order, in batches, in the background.
//!
//! So PostgreSQL being slow or unreachable never stops decisions: the buffer grows and drains
//! when PostgreSQL is back. Nothing acknowledged is lost (it is in the buffer until shipped)
//! and nothing is stored twice: PostgreSQL's inserts are idempotent (transactions by id,
//! labels by transaction, time and verdict), so a batch shipped again after a crash between
//! its commit and the cursor update lands once.
//!
//! The cursor (the last sequence number known shipped) lives in a small file beside the
//! buffer. Losing it only means shipping again what is already there.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::cursor::SeqCursor;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{send, StoreError};

/// Records per shipped batch.
const BATCH: usize = 1000;
/// Pause between polls when the buffer is drained.
const IDLE: Duration = Duration::from_millis(25);
/// Longest pause between attempts while PostgreSQL is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Ships one node's buffer to PostgreSQL.
#[derive(Clone, Debug)]
pub struct Shipper {
    local: SqliteStore,
    shared: PostgresStore,
    cursor: SeqCursor,
    /// Last sequence number known to be in PostgreSQL.
    shipped: Arc<AtomicI64>,
}

impl Shipper {
    /// A shipper for the buffer in `data_dir`, starting from its saved cursor.
    pub fn new(local: SqliteStore, shared: PostgresStore, data_dir: &Path) -> Shipper {
        let cursor = SeqCursor::new(data_dir, "postgres-shipped-seq");
        let shipped = cursor.load();
        Shipper {
            local,
            shared,
            cursor,
            shipped: Arc::new(AtomicI64::new(shipped)),
        }
    }

    /// The last sequence number known shipped.
    pub fn shipped(&self) -> i64 {
        self.shipped.load(Ordering::Acquire)
    }

    /// Ships one batch; returns how many records it held (0: the buffer is drained).
    pub async fn ship_batch(&self) -> Result<usize, StoreError> {
        let after = self.shipped();
        let records = self.local.records_after(after, BATCH).await?;
        let Some(&(last, _)) = records.last() else {
            return Ok(0);
        };
        let n = records.len();
        let writer = self.shared.writer();
        let mut acks = Vec::with_capacity(n);
        for (_, op) in records {
            let permit = loop {
                if let Some(p) = writer.try_reserve() {
                    break p;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            acks.push(send(permit, op));
        }
        for ack in acks {
            match ack.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(StoreError::Postgres(e)),
                Err(_) => return Err(StoreError::Closed),
            }
        }
        self.shipped.store(last, Ordering::Release);
        self.cursor.save(last);
        Ok(n)
    }

    /// Ships until the buffer is drained (at start-up, before state is rebuilt from
    /// PostgreSQL, and at shutdown).
    pub async fn drain(&self) -> Result<u64, StoreError> {
        let mut total = 0u64;
        loop {
            match self.ship_batch().await? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    }

    /// Ships forever: polls the buffer, retries with backoff while PostgreSQL is unreachable.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.ship_batch().await {
                Ok(0) => tokio::time::sleep(IDLE).await,
                Ok(_) => backoff = Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!(error = %e, shipped = self.shipped(), "shipping records to postgres failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
