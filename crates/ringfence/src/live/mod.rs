//! The live view of what this node stores: the hub the host feeds with every stored decision
//! (its own, those replicated from peer sites, and in shared-state mode those the other nodes
//! appended to the shared log) and label, and the ticker that turns them
//! into the dashboard's feed and per-second statistics.
//!
//! # Layout
//! - this module: [`LiveHub`]: feeding, the ticker, subscriptions, shutdown.
//! - [`row`]: a decided transaction as the feed shows it, its alert, a client's filter.
//! - [`batch`]: a tick's rows serialised once; sampling per client.
//! - [`stats`]: per-second aggregates and what the charts keep of them.
//!
//! # Why it cannot slow the decision path
//! Feeding is two short critical sections on a `std::sync::Mutex` (a request holds it for a
//! counter update and a push into a vector; nothing in it awaits, allocates beyond the row, or
//! does IO), taken after the record is durable and outside the engine lock. The rows kept per
//! tick are capped ([`APPROVED_PER_TICK`], [`FLAGGED_PER_TICK`]): past the cap a row is
//! counted and dropped, so memory is bounded whatever the rate. Everything else happens on
//! the ticker every [`TICK`]: rows are serialised once into a [`batch::Batch`] and sent
//! through a `broadcast` channel of small capacity; a client that falls behind skips batches
//! (the feed is a sample anyway), never holding the hub back. Alerts go out one by one on
//! their own channel, serialised only while someone listens.

pub mod batch;
pub mod row;
pub mod stats;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use ringfence_core::decision::{Action, Decision};
use ringfence_core::event::Transaction;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::sites::Site;
use crate::store::DecisionRecord;
use batch::Batch;
use row::{AlertOut, LiveRow};
use stats::{PeerLag, SecondAgg, SecondStats};

/// How often the feed and statistics go out.
pub const TICK: Duration = Duration::from_millis(250);
/// Seconds of statistics kept (ten minutes of charts).
pub const HISTORY_SECONDS: usize = 600;
/// Approved rows kept per tick (beyond it they are only counted).
pub const APPROVED_PER_TICK: usize = 500;
/// Rows above approve kept per tick: their own cap, so a flood of approvals cannot crowd
/// out the rows analysts look for.
pub const FLAGGED_PER_TICK: usize = 500;
/// Feed frames a client may fall behind by before it skips ahead.
const FRAME_CAPACITY: usize = 16;
/// Alerts a listener may fall behind by before it is closed (alerts are never skipped).
pub const ALERT_CAPACITY: usize = 1024;

/// What feed clients receive: a tick's rows, or a finished second.
#[derive(Clone)]
pub enum Frame {
    /// Rows stored in one tick.
    Tx(Arc<Batch>),
    /// `{"type":"stats",...}` of one second.
    Stats(Utf8Bytes),
}

/// A decision seen on its way to the store, fed to the hub once it is durable.
pub struct Observed {
    /// The feed's row, built only while a feed client listens: with nobody watching, a
    /// decision costs the feed three numbers, not a row of cloned strings.
    row: Option<LiveRow>,
    decision: Action,
    amount: f64,
    replicated: bool,
    /// The alert message, when the decision raises one and someone listens.
    alert: Option<Utf8Bytes>,
    /// This node's engine time, `None` for a record decided elsewhere.
    engine_us: Option<u64>,
    ladder: bool,
}

/// What feeding accumulates between two ticks.
struct Pending {
    rows: Vec<LiveRow>,
    /// Rows kept this tick: approved, and above approve.
    kept: [usize; 2],
    /// Rows not kept this tick.
    overflow: u64,
    /// Seconds being counted, oldest first (usually one, two around a second's turn).
    seconds: VecDeque<SecondAgg>,
    /// The oldest second not yet finished: later feeding never counts into an earlier one,
    /// so a count that races the ticker lands in the next second instead of being lost.
    open_from: u64,
}

/// The hub: fed by the host, read by the stream routes.
pub struct LiveHub {
    pending: Mutex<Pending>,
    history: Mutex<VecDeque<SecondStats>>,
    frames: broadcast::Sender<Frame>,
    alerts: broadcast::Sender<Utf8Bytes>,
    site: Option<Arc<Site>>,
    site_name: Option<Arc<str>>,
    closing: watch::Sender<bool>,
    feed_clients: AtomicUsize,
    alert_clients: AtomicUsize,
}

/// Which stream a client is on.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// `GET /v1/stream/transactions`.
    Feed,
    /// `GET /v1/stream/alerts`.
    Alerts,
}

/// Counts an open stream while it lives.
pub struct ClientGuard {
    hub: Arc<LiveHub>,
    stream: Stream,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.hub.count(self.stream).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Open streams, for `GET /v1/live/stats`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Clients {
    /// Transaction feed sockets.
    pub transactions: usize,
    /// Alert sockets.
    pub alerts: usize,
}

fn now_ms() -> u64 {
    crate::host::now().millis().max(0) as u64
}

#[derive(Serialize)]
struct StatsFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    stats: &'a SecondStats,
}

impl LiveHub {
    /// A hub for this node (`site` when it runs as one: rows name it, charts show its links).
    pub fn new(site: Option<Arc<Site>>) -> LiveHub {
        let site_name = site.as_ref().map(|s| Arc::<str>::from(s.name.as_str()));
        LiveHub {
            pending: Mutex::new(Pending {
                rows: Vec::new(),
                kept: [0, 0],
                overflow: 0,
                seconds: VecDeque::new(),
                open_from: now_ms() / 1000,
            }),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_SECONDS)),
            frames: broadcast::Sender::new(FRAME_CAPACITY),
            alerts: broadcast::Sender::new(ALERT_CAPACITY),
            site,
            site_name,
            closing: watch::Sender::new(false),
            feed_clients: AtomicUsize::new(0),
            alert_clients: AtomicUsize::new(0),
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // Nothing panics while holding it; a poisoned guard still holds consistent counts.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn history_lock(&self) -> MutexGuard<'_, VecDeque<SecondStats>> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the feed keeps of `tx` decided as `d`, taken before the record goes to the writer.
    /// `origin` is the deciding site for a replicated record (`None`: decided here).
    pub fn observe(&self, tx: &Transaction, d: &DecisionRecord, origin: Option<&str>) -> Observed {
        let site = match origin {
            Some(o) => Some(Arc::<str>::from(o)),
            None => self.site_name.clone(),
        };
        let alert = if d.decision.decision > Action::Approve && self.alerts.receiver_count() > 0 {
            AlertOut::of(tx, d, site.as_deref())
                .and_then(|a| serde_json::to_string(&a).ok())
                .map(Utf8Bytes::from)
        } else {
            None
        };
        let replicated = origin.is_some();
        Observed {
            row: (self.frames.receiver_count() > 0).then(|| LiveRow::of(tx, d, site, replicated)),
            decision: d.decision.decision,
            amount: tx.amount,
            replicated,
            alert,
            engine_us: origin.is_none().then_some(d.processing_us),
            ladder: d.decision.alert,
        }
    }

    /// What the feed keeps of a transaction another node of the same shared state appended
    /// and stored, as this node's engine decided it when applying the shared log (every node
    /// decides alike). Its engine time was spent on that node: not counted here.
    pub fn observe_other_node(&self, tx: &Transaction, decision: &Decision) -> Observed {
        let record = DecisionRecord {
            decision: decision.clone(),
            processing_us: 0,
            timestamp: tx.timestamp,
            degraded: false,
            decided_at: None,
        };
        let mut o = self.observe(tx, &record, None);
        o.engine_us = None;
        o
    }

    /// Counts a decision now durable, keeps its row if this tick has room, and sends its alert.
    pub fn stored(&self, o: Observed) {
        self.stored_at(o, now_ms() / 1000);
    }

    /// [`LiveHub::stored`] at wall-clock second `now`.
    fn stored_at(&self, o: Observed, now: u64) {
        if let Some(alert) = o.alert {
            // No listener left: nothing to do.
            let _ = self.alerts.send(alert);
        }
        let mut p = self.pending();
        let p = &mut *p;
        second_at(&mut p.seconds, now.max(p.open_from)).decision(
            o.decision,
            o.amount,
            o.ladder,
            o.engine_us,
            o.replicated,
        );
        let Some(row) = o.row else {
            return;
        };
        let class = usize::from(o.decision > Action::Approve);
        let cap = [APPROVED_PER_TICK, FLAGGED_PER_TICK][class];
        if p.kept[class] < cap {
            p.kept[class] += 1;
            p.rows.push(row);
        } else {
            p.overflow += 1;
        }
    }

    /// Counts a stored label.
    pub fn labelled(&self, fraud: bool) {
        self.labelled_at(fraud, now_ms() / 1000);
    }

    /// [`LiveHub::labelled`] at wall-clock second `now`.
    fn labelled_at(&self, fraud: bool, now: u64) {
        let mut p = self.pending();
        let at = now.max(p.open_from);
        second_at(&mut p.seconds, at).label(fraud);
    }

    /// Feed frames from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.frames.subscribe()
    }

    /// Alerts from now on.
    pub fn subscribe_alerts(&self) -> broadcast::Receiver<Utf8Bytes> {
        self.alerts.subscribe()
    }

    /// Counts an open stream until the guard drops.
    pub fn client(self: &Arc<Self>, stream: Stream) -> ClientGuard {
        self.count(stream).fetch_add(1, Ordering::Relaxed);
        ClientGuard {
            hub: Arc::clone(self),
            stream,
        }
    }

    fn count(&self, stream: Stream) -> &AtomicUsize {
        match stream {
            Stream::Feed => &self.feed_clients,
            Stream::Alerts => &self.alert_clients,
        }
    }

    /// Streams open now.
    pub fn clients(&self) -> Clients {
        Clients {
            transactions: self.feed_clients.load(Ordering::Relaxed),
            alerts: self.alert_clients.load(Ordering::Relaxed),
        }
    }

    /// The last `n` finished seconds, oldest first.
    pub fn history(&self, n: usize) -> Vec<SecondStats> {
        let h = self.history_lock();
        h.iter().skip(h.len().saturating_sub(n)).cloned().collect()
    }

    /// Tells every stream and the ticker to end (at shutdown: open sockets would keep the
    /// server's graceful shutdown waiting forever).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Changes to `true` when the server shuts down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// The ticker: every [`TICK`], the rows kept since the last one go out as one batch and
    /// every second that ended goes out as statistics. Runs until [`LiveHub::close`].
    pub async fn run(self: Arc<Self>) {
        let mut closing = self.closing();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => self.tick(now_ms()),
                () = closed(&mut closing) => return,
            }
        }
    }

    /// One tick at wall-clock `now` (ms).
    fn tick(&self, now: u64) {
        let second = now / 1000;
        let (rows, overflow, ended, from) = {
            let mut p = self.pending();
            let rows = std::mem::take(&mut p.rows);
            let overflow = std::mem::take(&mut p.overflow);
            p.kept = [0, 0];
            let mut ended = Vec::new();
            while p.seconds.front().is_some_and(|s| s.second < second) {
                ended.extend(p.seconds.pop_front());
            }
            let from = p.open_from;
            p.open_from = p.open_from.max(second);
            (rows, overflow, ended, from)
        };
        // Serialised only for someone to read.
        if (!rows.is_empty() || overflow > 0) && self.frames.receiver_count() > 0 {
            let _ = self
                .frames
                .send(Frame::Tx(Arc::new(Batch::new(rows, overflow))));
        }
        if second <= from {
            return;
        }
        // Every second that ended goes out, empty ones too (charts move at a steady pace);
        // after a long stall only the last ten minutes.
        let lags = self.peer_lags();
        let mut ended = ended.into_iter().peekable();
        let first = from.max(second.saturating_sub(HISTORY_SECONDS as u64));
        for s in first..second {
            while ended.peek().is_some_and(|a| a.second < s) {
                ended.next();
            }
            let stats = match ended.next_if(|a| a.second == s) {
                Some(agg) => agg.finish(lags.clone()),
                None => SecondAgg::new(s).finish(lags.clone()),
            };
            self.finished(stats);
        }
    }

    /// Keeps a finished second and sends it to the feed's clients.
    fn finished(&self, stats: SecondStats) {
        if self.frames.receiver_count() > 0 {
            let frame = StatsFrame {
                kind: "stats",
                stats: &stats,
            };
            if let Ok(json) = serde_json::to_string(&frame) {
                let _ = self.frames.send(Frame::Stats(json.into()));
            }
        }
        let mut h = self.history_lock();
        if h.len() == HISTORY_SECONDS {
            h.pop_front();
        }
        h.push_back(stats);
    }

    /// Each replication link now (sites mode).
    fn peer_lags(&self) -> Vec<PeerLag> {
        let Some(site) = &self.site else {
            return Vec::new();
        };
        site.peers
            .iter()
            .map(|p| {
                let s = p.snapshot();
                PeerLag {
                    peer: s.site.clone().unwrap_or_else(|| p.url.clone()),
                    connected: s.connected,
                    lag_ms: s.last_lag_ms,
                    p99_ms: s.recent_p99_ms,
                    behind: (s.peer_head - s.applied).max(0),
                }
            })
            .collect()
    }
}

/// Completes once `closing` (from [`LiveHub::closing`]) turns `true`, or its hub is gone.
pub async fn closed(closing: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across a caller's await.
    let _ = closing.wait_for(|c| *c).await;
}

/// The aggregate of `second`, created in order (the newest when the clock stepped back).
fn second_at(seconds: &mut VecDeque<SecondAgg>, second: u64) -> &mut SecondAgg {
    let newest = seconds.back().map(|s| s.second);
    match newest {
        Some(n) if n >= second => {
            let i = seconds
                .iter()
                .position(|s| s.second == second)
                .unwrap_or(seconds.len() - 1);
            &mut seconds[i]
        }
        _ => {
            seconds.push_back(SecondAgg::new(second));
            let last = seconds.len() - 1;
            &mut seconds[last]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DecisionRecord;
    use ringfence_core::decision::Decision;
    use ringfence_core::event::Timestamp;

    fn decided(action: Action) -> (Transaction, DecisionRecord) {
        let tx: Transaction = serde_json::from_value(serde_json::json!({
            "transaction_id": "t1", "timestamp": "2026-01-01T00:00:00Z", "kind": "payment",
            "amount": 12.5, "card_id": "tok_abc", "store_id": "s1",
        }))
        .expect("transaction");
        let d = DecisionRecord {
            decision: Decision {
                transaction_id: "t1".into(),
                decision: action,
                score: 80.0,
                reasons: Vec::new(),
                shadow: Vec::new(),
                alert: action > Action::Approve,
                account: None,
                model_score: None,
                challenger_score: None,
                anomaly_score: None,
            },
            processing_us: 42,
            timestamp: Timestamp::from_millis(0),
            degraded: false,
            decided_at: None,
        };
        (tx, d)
    }

    #[test]
    fn ticks_count_every_decision_once_and_cap_rows() {
        let hub = LiveHub::new(None);
        let start = hub.pending().open_from;
        let mut frames = hub.subscribe();
        let (tx, d) = decided(Action::Approve);
        for _ in 0..APPROVED_PER_TICK + 7 {
            hub.stored_at(hub.observe(&tx, &d, None), start);
        }
        let (tx, b) = decided(Action::Block);
        hub.stored_at(hub.observe(&tx, &b, Some("other")), start);
        hub.labelled_at(true, start);
        // The second ends: its rows go out, then its statistics.
        hub.tick((start + 1) * 1000 + 10);
        let Ok(Frame::Tx(batch)) = frames.try_recv() else {
            panic!("a batch first");
        };
        let m: serde_json::Value = serde_json::from_str(
            batch
                .message_for(&row::LiveFilter::default())
                .expect("message")
                .as_str(),
        )
        .expect("json");
        assert_eq!(
            m["omitted"],
            (APPROVED_PER_TICK + 8 - batch::ROWS_PER_MESSAGE) as u64
        );
        let h = hub.history(600);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].transactions, APPROVED_PER_TICK as u64 + 8);
        assert_eq!(h[0].decisions.block, 1);
        assert_eq!(h[0].replicated, 1);
        assert_eq!(h[0].value_blocked, 12.5);
        assert_eq!(h[0].confirmed_fraud, 1);
        assert!(matches!(frames.try_recv(), Ok(Frame::Stats(_))));
        // Quiet seconds still go out; nothing is counted twice.
        hub.tick((start + 4) * 1000);
        let h = hub.history(600);
        assert_eq!(h.len(), 4);
        assert!(h[1..].iter().all(|s| s.transactions == 0));
    }

    #[test]
    fn a_count_that_races_the_ticker_lands_in_a_later_second() {
        let hub = LiveHub::new(None);
        let start = hub.pending().open_from;
        // The ticker finished seconds up to start+4 before this decision took the lock.
        hub.tick((start + 5) * 1000);
        let (tx, d) = decided(Action::Approve);
        hub.stored_at(hub.observe(&tx, &d, None), start + 2);
        hub.tick((start + 6) * 1000);
        let h = hub.history(600);
        assert_eq!(h.last().map(|s| s.transactions), Some(1));
    }
}
