//! Moving generated traffic somewhere: paced in real time to a server, or as fast as possible
//! into an NDJSON file.
//!
//! Pacing anchors the simulated clock at wall-clock "now": a transaction stamped `t` is sent at
//! `t`, so the server sees event times that match its own clock. At most `concurrency`
//! requests are in flight (a semaphore); when the server is slower than the schedule, sending
//! falls behind rather than queueing without bound.

use std::future::Future;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::Semaphore;

use super::generator::{Generator, LabeledTransaction, SimTransaction};
use super::tally::{Outcome, Tally};
use crate::client::HttpClient;

/// Where and how fast to send.
#[derive(Debug, Clone)]
pub(crate) struct Pacing {
    /// Full URL of `POST /v1/transactions`.
    pub url: String,
    /// Most requests in flight at once (at least 1).
    pub concurrency: usize,
    /// Stop scheduling transactions this long after the start.
    pub duration: Option<Duration>,
    /// Stop after this many transactions.
    pub count: Option<u64>,
    /// Where the ids of decided transactions go (`--acked-out`).
    pub acked: Option<AckedLog>,
}

/// The `--acked-out` file: one transaction id per line for every decision received, written
/// through to the operating system as each decision arrives (a line write per id), so a crash
/// of the server, or of this process, never leaves an acknowledged id out. Appends to an
/// existing file, so several runs can share one.
#[derive(Debug, Clone)]
pub(crate) struct AckedLog(Arc<Mutex<io::LineWriter<std::fs::File>>>);

impl AckedLog {
    /// Opens `path` for appending, creating it if needed.
    pub fn open(path: &std::path::Path) -> io::Result<AckedLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AckedLog(Arc::new(Mutex::new(io::LineWriter::new(file)))))
    }

    /// Appends `id`. A failed write is reported once on stderr per failure and otherwise
    /// ignored: the file is a record for checking, and an id missing from it is never a false
    /// claim that a transaction was stored.
    fn append(&self, id: &str) {
        let mut out = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = writeln!(out, "{id}") {
            eprintln!("--acked-out: writing {id} failed: {e}");
        }
    }
}

/// The wall-clock instant the simulated clock is anchored at, and its value in epoch ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anchor {
    pub instant: Instant,
    pub epoch_ms: i64,
}

impl Anchor {
    /// Now.
    pub fn now() -> Anchor {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Anchor {
            instant: Instant::now(),
            epoch_ms,
        }
    }

    /// A short tag that tells this run's transaction ids from another run's.
    pub fn run_tag(&self) -> String {
        format!("{:x}", self.epoch_ms)
    }

    /// When a transaction stamped `ts_ms` is due.
    pub fn due(&self, ts_ms: i64) -> Duration {
        Duration::from_millis(u64::try_from(ts_ms - self.epoch_ms).unwrap_or(0))
    }
}

/// Locks the tally; a panic elsewhere while counting leaves counts that are still worth showing.
pub(crate) fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends `generator`'s transactions at their scheduled times until the duration or count is
/// reached or `shutdown` resolves, then waits for the requests in flight. Returns how many
/// were sent. Outcomes are counted into `tally` as they arrive.
pub(crate) async fn send_paced<F>(
    client: HttpClient,
    pacing: Pacing,
    generator: Generator,
    anchor: Anchor,
    tally: Arc<Mutex<Tally>>,
    shutdown: F,
) -> u64
where
    F: Future<Output = ()>,
{
    let concurrency = pacing
        .concurrency
        .clamp(1, Semaphore::MAX_PERMITS.min(1 << 16));
    let in_flight = Arc::new(Semaphore::new(concurrency));
    let url: Arc<str> = pacing.url.into();
    let mut sent = 0u64;
    tokio::pin!(shutdown);
    for labeled in generator {
        if pacing.count.is_some_and(|max| sent >= max) {
            break;
        }
        let ts = labeled.tx.timestamp.map_or(anchor.epoch_ms, |t| t.millis());
        let offset = anchor.due(ts);
        if pacing.duration.is_some_and(|d| offset >= d) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until((anchor.instant + offset).into()) => {}
            _ = &mut shutdown => break,
        }
        let permit = tokio::select! {
            permit = Arc::clone(&in_flight).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (client, url, tally) = (client.clone(), Arc::clone(&url), Arc::clone(&tally));
        let acked = pacing.acked.clone();
        tokio::spawn(async move {
            let result = client.post_json(&url, &labeled.tx).await;
            let outcome = Outcome::from_result(&result);
            if let (Some(acked), Outcome::Decided { .. }) = (&acked, &outcome) {
                acked.append(&labeled.tx.transaction_id);
            }
            lock(&tally).record(labeled.fraud, &outcome);
            drop(permit);
        });
        sent += 1;
    }
    // Every permit back means every request finished (each task holds one until it has counted).
    let _ = in_flight.acquire_many(concurrency as u32).await;
    sent
}

/// One line of the NDJSON file: the request body plus the ground truth.
#[derive(Serialize)]
struct FileRecord<'a> {
    #[serde(flatten)]
    tx: &'a SimTransaction,
    label: bool,
    scenario: Option<&'static str>,
}

/// What [`write_ndjson`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub transactions: u64,
    pub fraud: u64,
}

/// Writes `count` transactions as NDJSON lines with `label` and `scenario` fields.
pub(crate) fn write_ndjson(
    out: &mut impl Write,
    generator: impl Iterator<Item = LabeledTransaction>,
    count: u64,
) -> io::Result<Written> {
    let mut written = Written {
        transactions: 0,
        fraud: 0,
    };
    for labeled in generator.take(usize::try_from(count).unwrap_or(usize::MAX)) {
        let record = FileRecord {
            tx: &labeled.tx,
            label: labeled.fraud,
            scenario: labeled.scenario,
        };
        serde_json::to_writer(&mut *out, &record)?;
        out.write_all(b"\n")?;
        written.transactions += 1;
        written.fraud += u64::from(labeled.fraud);
    }
    out.flush()?;
    Ok(written)
}

/// Resolves on Ctrl-C; never, if the signal cannot be listened for.
pub(crate) async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
