//! Reading the alert outbox: what every sink (Redis, each webhook, e-mail) shares.
//!
//! Alerts are committed to the node's local `alert_outbox` with their decisions. Each sink
//! reads it in sequence order from its own durable position ([`SeqCursor`], one file per sink
//! in the data directory), so a sink that is slow or down only delays itself: the others and
//! the engine go on. The position is saved after delivery, so a crash delivers some alerts
//! again (at least once), never none.
//!
//! [`SinkHandle`] is what the host keeps per sink: `notify` when new alerts are durable (never
//! waits), `close` at shutdown (the sink delivers what it can, then ends).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::AlertEvent;
use crate::store::cursor::SeqCursor;
use crate::store::sqlite::SqliteStore;
use crate::store::StoreError;

/// How often the outbox is read when no new alert was signalled (a missed signal costs at
/// most this much delay).
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Shortest time between two cursor saves while alerts stream (each save is a file write
/// and rename; at most this much more is delivered again after a crash).
const SAVE_EVERY: Duration = Duration::from_millis(250);

/// The host's side of one sink.
#[derive(Clone)]
pub struct SinkHandle {
    wake: Arc<Notify>,
    closing: Arc<watch::Sender<bool>>,
}

impl SinkHandle {
    /// New alerts are in the outbox: deliver them now. Never waits.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Deliver what the outbox holds, then end.
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.wake.notify_one();
    }
}

/// An alert read from the outbox.
#[derive(Clone, Debug)]
pub struct OutboxAlert {
    /// Its sequence number (its transaction's) in the local store.
    pub seq: i64,
    /// The alert as stored (JSON).
    pub json: String,
    /// The alert.
    pub alert: AlertEvent,
}

/// One sink's reader of the outbox, with its durable position.
pub struct OutboxFeed {
    store: SqliteStore,
    cursor: SeqCursor,
    /// Last alert read (may be ahead of `delivered` while alerts are in flight).
    read: i64,
    /// Last alert delivered (everything at or before it is done).
    delivered: i64,
    saved: i64,
    last_save: Instant,
    wake: Arc<Notify>,
    closing: watch::Receiver<bool>,
}

impl OutboxFeed {
    /// A reader of `store`'s outbox from the position saved as `cursor_name` in `data_dir`,
    /// and the handle that wakes and closes it. A sink without a saved position (newly
    /// configured) starts after the alerts already in the outbox: a webhook added to a node
    /// that has run for a year gets the alerts from now on, not the year's. Runs at start,
    /// before requests (its read blocks).
    pub fn open(
        store: SqliteStore,
        data_dir: &Path,
        cursor_name: &str,
    ) -> Result<(OutboxFeed, SinkHandle), StoreError> {
        let cursor = SeqCursor::new(data_dir, cursor_name);
        if !cursor.exists() {
            std::fs::create_dir_all(data_dir)?;
            cursor.save(store.outbox_end()?);
        }
        let delivered = cursor.load();
        let (closing_tx, closing) = watch::channel(false);
        let handle = SinkHandle {
            wake: Arc::new(Notify::new()),
            closing: Arc::new(closing_tx),
        };
        let feed = OutboxFeed {
            store,
            cursor,
            read: delivered,
            delivered,
            saved: delivered,
            last_save: Instant::now(),
            wake: Arc::clone(&handle.wake),
            closing,
        };
        Ok((feed, handle))
    }

    /// Up to `limit` alerts after the last one read, in order (without waiting; empty when
    /// there are none). An alert that does not parse is logged and skipped.
    pub async fn read(&mut self, limit: usize) -> Result<Vec<OutboxAlert>, StoreError> {
        let rows = self.store.outbox_after(self.read, limit).await?;
        if let Some(&(last, _)) = rows.last() {
            self.read = last;
        }
        Ok(rows
            .into_iter()
            .filter_map(|(seq, json)| match serde_json::from_str(&json) {
                Ok(alert) => Some(OutboxAlert { seq, json, alert }),
                Err(e) => {
                    tracing::error!(seq, error = %e, "an outbox alert does not parse; skipped");
                    None
                }
            })
            .collect())
    }

    /// Waits until new alerts may be there (a signal, or the idle poll), or closing.
    pub async fn wait(&self) {
        let mut closing = self.closing.clone();
        tokio::select! {
            _ = tokio::time::timeout(IDLE_POLL, self.wake.notified()) => {}
            _ = closing.wait_for(|c| *c) => {}
        }
    }

    /// Whether the host asked this sink to finish.
    pub fn closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// A receiver that turns true when the host asks the sink to finish (for waits that
    /// must end early then, such as a retry's backoff).
    pub fn closing_signal(&self) -> watch::Receiver<bool> {
        self.closing.clone()
    }

    /// Everything up to `seq` is delivered; saved now or within [`SAVE_EVERY`].
    pub fn delivered(&mut self, seq: i64) {
        self.delivered = self.delivered.max(seq);
        if self.last_save.elapsed() >= SAVE_EVERY {
            self.flush();
        }
    }

    /// Also counts alerts read but not delivered as done (they were skipped), when nothing
    /// before them is still in flight.
    pub fn skip_to_read(&mut self) {
        self.delivered(self.read);
    }

    /// Saves the delivered position if it moved.
    pub fn flush(&mut self) {
        if self.saved != self.delivered {
            self.cursor.save(self.delivered);
            self.saved = self.delivered;
        }
        self.last_save = Instant::now();
    }

    /// Reads from the delivered position again (after a batch was given up, e.g. at close).
    pub fn rewind(&mut self) {
        self.read = self.delivered;
    }
}

impl Drop for OutboxFeed {
    fn drop(&mut self) {
        self.flush();
    }
}
