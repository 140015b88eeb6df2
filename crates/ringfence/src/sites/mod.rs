//! Active-active sites: every store's node decides on its own embedded state and replicates
//! its records with its peers in both directions, so each site keeps deciding when the link
//! is cut and catches up when it heals.
//!
//! # How records travel
//! A site serves its *own* records (those it decided, not those it replicated) in its store's
//! sequence order at `GET /v1/sites/feed?after=N`, holding the request open until there is
//! something newer (long poll: a record leaves within a round trip of becoming durable, and an
//! idle link costs one request per wait). Each peer runs one [`follow`] task per site it pulls
//! from. What it pulls is applied to its engine as recorded (the origin's decision stands) and
//! written with the origin and the origin's sequence number, in the same commit as the new
//! offset. Hence:
//! - **in order per origin**: one follower per origin, applying pages in sequence order;
//! - **resumable**: after a restart of either side the follower asks from the stored offset;
//! - **idempotent**: a page seen twice is skipped below the offset, and a transaction id the
//!   site already holds only moves the offset.
//!
//! Every site pulls from every peer directly (a full mesh): records are not relayed, so a
//! site's peers must include every other site.
//!
//! # Counters and conflicts
//! Returns are kept as per-store claims that add up in any order (see
//! `ringfence_core::retail`), so two sites that applied the same records in different orders
//! hold the same counts. When a cut link let two sites accept a return of the same units, the
//! record that brings the second claim raises a `duplicate_return_across_sites` alert on each
//! side, naming both transactions.

mod follow;

pub use follow::follow;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use ringfence_core::event::{Timestamp, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::store::DecisionRecord;

/// Records in one feed page unless the peer asks for fewer.
pub const FEED_PAGE: usize = 500;
/// Most records in one feed page.
pub const MAX_FEED_PAGE: usize = 1000;
/// Longest a feed request may be held open.
pub const MAX_FEED_WAIT_MS: u64 = 30_000;
/// Lag samples kept for the recent percentiles (the p99 of the latest records, which moves
/// when the link does; the since-start histogram keeps everything).
const RECENT_LAGS: usize = 4096;

/// This node as a site: its name, the newest own record peers can pull, and its links.
pub struct Site {
    /// The site's name (`--site`).
    pub name: String,
    /// Sequence number of the newest own record that is durable.
    head: tokio::sync::watch::Sender<i64>,
    /// One link per `--peer`.
    pub peers: Vec<Arc<Peer>>,
    /// Set at shutdown: held feed requests answer at once so the server can stop.
    closing: std::sync::atomic::AtomicBool,
}

impl Site {
    /// A site named `name` whose newest own record is `head`, pulling from `peers`.
    pub fn new(name: String, head: i64, peers: &[String]) -> Site {
        Site {
            name,
            head: tokio::sync::watch::Sender::new(head),
            peers: peers.iter().map(|url| Arc::new(Peer::new(url))).collect(),
            closing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ends held feed requests (at shutdown, which waits for open requests).
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.head.send_modify(|_| {});
    }

    /// Whether the node is shutting down.
    pub fn closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Tells waiting feed requests that own records up to `seq` are durable.
    pub fn advance(&self, seq: i64) {
        self.head.send_if_modified(|h| {
            let newer = seq > *h;
            if newer {
                *h = seq;
            }
            newer
        });
    }

    /// The newest durable own record.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// A receiver that changes when [`Site::advance`] moves the head.
    pub fn watch_head(&self) -> tokio::sync::watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// Status of every link, for `GET /v1/sites`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "site": self.name,
            "head": self.head(),
            "peers": self.peers.iter().map(|p| p.status()).collect::<Vec<_>>(),
        })
    }

    /// The links' gauges in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let peers: Vec<(String, PeerStatus)> = self
            .peers
            .iter()
            .map(|p| {
                let s = p.snapshot();
                (s.site.clone().unwrap_or_else(|| p.url.clone()), s)
            })
            .collect();
        let families: [Family; 5] = [
            (
                "ringfence_site_peer_connected",
                "gauge",
                "1 while the last request to the peer site succeeded.",
                |s| f64::from(u8::from(s.connected)),
            ),
            (
                "ringfence_site_replication_lag_seconds",
                "gauge",
                "Decision at the peer to this site's engine, for the newest replicated record.",
                |s| s.last_lag_ms.unwrap_or(0.0) / 1000.0,
            ),
            (
                "ringfence_site_replication_lag_p99_seconds",
                "gauge",
                "99th percentile of the replication delay over the latest records.",
                |s| s.recent_p99_ms.unwrap_or(0.0) / 1000.0,
            ),
            (
                "ringfence_site_replication_behind_records",
                "gauge",
                "Peer records not yet replicated here, as of the peer's last answer.",
                |s| (s.peer_head - s.applied).max(0) as f64,
            ),
            (
                "ringfence_site_replicated_records_total",
                "counter",
                "Records replicated from the peer site since start.",
                |s| s.records as f64,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (peer, s) in &peers {
                let _ = writeln!(out, "{name}{{peer=\"{}\"}} {}", escape(peer), value(s));
            }
        }
    }
}

/// A metric family of the links: name, type, help, and its value for one link.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PeerStatus) -> f64,
);

/// Escapes a Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One link to a peer site and what it has measured.
pub struct Peer {
    /// The peer's base URL.
    pub url: String,
    state: Mutex<PeerStatus>,
}

/// What a link knows, copied out for reports.
#[derive(Clone, Debug, Default)]
pub struct PeerStatus {
    /// The peer's site name, once it answered.
    pub site: Option<String>,
    /// Whether the last request succeeded.
    pub connected: bool,
    /// The last failure, if the link is down.
    pub last_error: Option<String>,
    /// The peer's newest own record as of its last answer.
    pub peer_head: i64,
    /// This site's offset for the peer: its records up to here are stored here.
    pub applied: i64,
    /// Records replicated since start.
    pub records: u64,
    /// Delay of the newest replicated record (ms).
    pub last_lag_ms: Option<f64>,
    /// Percentiles over the latest records (ms).
    pub recent_p50_ms: Option<f64>,
    /// See `recent_p50_ms`.
    pub recent_p99_ms: Option<f64>,
    /// Percentiles over every record replicated since start (ms): p50, p99, p99.9, max.
    pub total_ms: Option<[f64; 4]>,
    /// Wall-clock time of the last answer from the peer.
    pub last_contact: Option<Timestamp>,
    /// Replicated records whose transaction id this site already held.
    pub duplicates: u64,
    /// Conflicts raised by records from this peer.
    pub conflicts: u64,
}

impl Peer {
    fn new(url: &str) -> Peer {
        Peer {
            url: url.to_owned(),
            state: Mutex::new(PeerStatus::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PeerStatus> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the link's status.
    pub fn snapshot(&self) -> PeerStatus {
        self.lock().clone()
    }

    fn status(&self) -> serde_json::Value {
        let s = self.snapshot();
        serde_json::json!({
            "url": self.url,
            "site": s.site,
            "connected": s.connected,
            "last_error": s.last_error,
            "last_contact": s.last_contact,
            "peer_head": s.peer_head,
            "applied": s.applied,
            "behind": (s.peer_head - s.applied).max(0),
            "records": s.records,
            "duplicates": s.duplicates,
            "conflicts": s.conflicts,
            "lag_ms": {
                "last": s.last_lag_ms,
                "p50": s.recent_p50_ms,
                "p99": s.recent_p99_ms,
                "since_start": s.total_ms.map(|[p50, p99, p999, max]| serde_json::json!({
                    "p50": p50, "p99": p99, "p999": p999, "max": max,
                })),
            },
        })
    }

    fn update(&self, f: impl FnOnce(&mut PeerStatus)) {
        f(&mut self.lock());
    }
}

/// Records the delay of each replicated record (decided at the peer → in this site's engine,
/// where its decisions see it) into the link's status.
struct LagMeter {
    /// Since start, in microseconds.
    all: Histogram<u64>,
    /// The latest samples (µs), for percentiles that move when the link does.
    recent: VecDeque<u64>,
}

impl LagMeter {
    fn new() -> LagMeter {
        LagMeter {
            all: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| unreachable!("static histogram bounds are valid")),
            recent: VecDeque::with_capacity(RECENT_LAGS),
        }
    }

    fn record(&mut self, us: u64) {
        let us = us.max(1);
        let _ = self.all.record(us);
        if self.recent.len() == RECENT_LAGS {
            self.recent.pop_front();
        }
        self.recent.push_back(us);
    }

    /// p50, p99, p99.9 and max since start, in ms.
    fn total(&self) -> Option<[f64; 4]> {
        let h = &self.all;
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some([
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
        ])
    }

    /// (p50, p99) of the recent samples, in ms.
    fn recent(&self) -> Option<(f64, f64)> {
        if self.recent.is_empty() {
            return None;
        }
        let mut v: Vec<u64> = self.recent.iter().copied().collect();
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        Some((at(0.5), at(0.99)))
    }
}

/// One page of a site's own records as served (stored JSON passed through untouched).
#[derive(Serialize)]
pub struct FeedPageOut<'a> {
    /// The serving site's name.
    pub site: &'a str,
    /// Fingerprint of its card-hash key: sites must tokenise cards alike.
    pub key_fingerprint: &'a str,
    /// Its newest own record.
    pub head: i64,
    /// Records after the requested offset, in order.
    pub records: Vec<FeedRecordOut>,
}

/// One record as served.
#[derive(Serialize)]
pub struct FeedRecordOut {
    /// Sequence number at the serving site.
    pub seq: i64,
    /// The transaction.
    pub event: Box<RawValue>,
    /// Its decision.
    pub decision: Box<RawValue>,
}

/// One page of a peer's records as pulled.
#[derive(Deserialize)]
pub struct FeedPage {
    /// The peer's site name.
    pub site: String,
    /// Fingerprint of its card-hash key.
    pub key_fingerprint: String,
    /// Its newest own record.
    pub head: i64,
    /// Records, in order.
    pub records: Vec<FeedRecord>,
}

/// One record as pulled.
#[derive(Deserialize)]
pub struct FeedRecord {
    /// Sequence number at the peer.
    pub seq: i64,
    /// The transaction.
    pub event: Transaction,
    /// The peer's decision.
    pub decision: DecisionRecord,
}

/// What applying one page did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Applied {
    /// Records applied and stored.
    pub records: u64,
    /// Records skipped because this site already held their transaction id.
    pub duplicates: u64,
    /// Conflicts they raised.
    pub conflicts: u64,
    /// The offset now stored for the peer.
    pub offset: i64,
    /// Wall-clock time (µs since the epoch) the records entered the engine: from then on
    /// this site's decisions see them (they are durable a group commit later).
    pub applied_at_us: i64,
}
