//! The engine host: owns the one [`Engine`], orders its decisions with their durable writes,
//! and is the only place where time, ids and card-hash keys enter the pure core.
//!
//! Why a `std::sync::Mutex` around the engine and not an async one or an actor: scoring takes
//! microseconds and never awaits, so a plain mutex held for exactly that long is the cheapest
//! correct choice. The write for a decision is enqueued *while the lock is held*, which makes
//! the store's sequence order equal to the engine's apply order — the property that lets a
//! restart rebuild exactly the same state. The queue place is reserved before scoring, so a
//! full queue turns a request away before it changes any state.

pub mod cases;
mod photos;
mod reload;
mod rules_edit;
mod sites;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use ringfence_core::decision::Decision;
use ringfence_core::engine::Engine;
use ringfence_core::event::{
    CardHasher, EntityId, FieldError, ParseContext, RawTransaction, Timestamp, Transaction,
};
use ringfence_core::retail::ReturnConflict;
use ringfence_core::rules::RuleErrors;
use ringfence_core::state::EntityKind;
use serde::Serialize;

use crate::alerts::deliveries::AlertSinks;
use crate::alerts::AlertEvent;
use crate::config::Settings;
use crate::live::{LiveHub, Observed};
use crate::metrics::Metrics;
use crate::shared::log::{LogEntry, LogError, LogId, SharedLog};
use crate::shared::replica::{self, Applied, LogCursor, Prepared};
use crate::shared::snapshot::Snapshot;
use crate::store::cursor::SeqCursor;
use crate::store::{self as records, Records};
use crate::store::{DecisionRecord, HistoryItem, LabelRecord, StoreError, TxRecord, WriteOp};

/// The rules used when no rules file is configured.
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.toml");

pub use reload::{ModelsStatus, RulesStatus};
pub use rules_edit::{ActivateError, Activated};

/// Degraded transactions appended to the log in one go.
const OWED_CHUNK: usize = 1000;
/// How long appending a chunk of them may take (off the request path).
const OWED_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a node may hold the snapshot lease (encoding and saving a large state included).
const SNAPSHOT_LEASE: std::time::Duration = std::time::Duration::from_secs(120);

/// Applies one item of stored history to `engine`, as at start-up and after a storage
/// failure; returns whether it was a label.
fn apply_history(engine: &mut Engine, item: HistoryItem) -> bool {
    match item {
        HistoryItem::Tx { tx, alert, blocked } => {
            engine.apply_recorded(&tx, alert, blocked);
            // Found again on replay; stored (and alerted) when first found.
            engine.take_conflicts();
            false
        }
        HistoryItem::Label {
            tx,
            fraud,
            previous,
        } => {
            engine.apply_label(&tx, fraud, previous);
            true
        }
    }
}

/// Transaction ids remembered in memory to catch duplicates still on their way to disk.
const RECENT_IDS: usize = 1 << 18;

/// Why the host could not take a request.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The write queue is full: try again shortly.
    #[error("the server is at capacity; retry shortly")]
    Overloaded,
    /// Storage fails (a write failed, or the data directory is read-only or broken): nothing
    /// new is taken until it works again and the state is rebuilt from what is stored.
    #[error("storage is unavailable: {0}")]
    Storage(String),
    /// The disk holding the data directory is full: nothing new is taken until there is space.
    #[error("storage is full: {0}")]
    StorageFull(String),
    /// The shared state (Redis) is unreachable and the policy is to fail closed.
    #[error("the shared state is unreachable; retry shortly")]
    SharedUnavailable,
    /// The referenced record does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A store read failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A decided (or already decided) transaction.
#[derive(Clone, Debug, Serialize)]
pub struct Submitted {
    /// The decision.
    #[serde(flatten)]
    pub record: DecisionRecord,
    /// True when the transaction id had been decided before and this is the stored decision.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// A parsed transaction and whether its id was generated here.
#[derive(Debug)]
pub struct Parsed {
    /// The transaction.
    pub tx: Transaction,
    /// True when the client sent no id (so it cannot be a duplicate).
    pub generated_id: bool,
}

/// Ids decided recently, in insertion order, bounded.
#[derive(Default)]
struct RecentIds {
    set: HashSet<Box<str>>,
    order: VecDeque<Box<str>>,
}

impl RecentIds {
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Forgets an id that was never decided (its request failed before the decision).
    fn remove(&mut self, id: &str) {
        if self.set.remove(id) {
            self.order.retain(|o| &**o != id);
        }
    }

    fn insert(&mut self, id: &str) {
        if self.set.insert(id.into()) {
            self.order.push_back(id.into());
            if self.order.len() > RECENT_IDS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

struct Locked {
    engine: Engine,
    /// How far the engine has followed the shared log (shared-state mode).
    cursor: LogCursor,
    /// Results of this node's log entries, until their requests collect them.
    log_results: HashMap<LogId, Applied<OwnDecision>>,
    recent: RecentIds,
    latency: Histogram<u64>,
    /// Transactions decided per wall-clock second, newest last (at most 60 entries).
    per_second: VecDeque<(u64, u64)>,
    /// Log entries applied since this node last saw to a snapshot.
    since_snapshot: u64,
    /// Sites mode: how far this site holds each peer site's records (durable in the store).
    site_offsets: HashMap<String, i64>,
}

/// What a request keeps of its own transaction's decision when the shared log applied it.
type OwnDecision = (Decision, Option<Box<AlertEvent>>, u64);

/// What the log cursor keeps of this node's own decisions: the decision, its alert (when
/// alerts are sent anywhere, stamped with its log position) and the engine time since `t0`
/// (the apply began).
fn own_decision(
    has_sinks: bool,
    t0: Instant,
) -> impl FnMut(LogId, &Transaction, ringfence_core::engine::Scored<'_>) -> OwnDecision {
    move |id, tx, scored| {
        let alert = if has_sinks {
            AlertEvent::of(tx, &scored.decision, &scored.features)
                .map(|a| Box::new(a.at_log_position(id.ms, id.seq)))
        } else {
            None
        };
        (scored.decision, alert, t0.elapsed().as_micros() as u64)
    }
}

/// Sends a decided transaction's record through its reserved place in the write queue (and
/// keeps what the live feed shows of it, fed to `live` once the record is durable).
#[allow(clippy::too_many_arguments)]
fn write_decision(
    live: &LiveHub,
    permit: records::writer::WritePermit<'_>,
    tx: Transaction,
    decision: Decision,
    processing_us: u64,
    degraded: bool,
    alert: Option<Box<AlertEvent>>,
    conflicts: Vec<ReturnConflict>,
) -> Outcome {
    let record = DecisionRecord {
        decision,
        processing_us,
        timestamp: tx.timestamp,
        degraded,
        decided_at: Some(now()),
    };
    // Into the outbox with the record, in one commit. Serialising an alert cannot fail (plain
    // strings and numbers); if it ever did, the record must still be written.
    let alert_event = alert.and_then(|a| serde_json::to_string(&a).ok());
    let raised = alert_event.is_some();
    let observed = Box::new(live.observe(&tx, &record, None));
    let ack = records::send(
        permit,
        WriteOp::Tx(Box::new(TxRecord {
            tx,
            decision: record.clone(),
            alert_event,
            conflicts,
            origin: None,
        })),
    );
    Outcome::Pending(ack, record, raised, observed)
}

/// What became of a transaction the engine decided (or another request or node did).
enum Outcome {
    /// Decided here; its record (and its alert, when `.2`) is being written; `.3` goes to
    /// the live feed once it is durable.
    Pending(
        tokio::sync::oneshot::Receiver<Result<i64, String>>,
        DecisionRecord,
        bool,
        Box<Observed>,
    ),
    /// Decided by another node or request: wait for that record.
    InFlight(String),
}

/// Shared-state mode: the log every node follows, and what to do when Redis is unreachable.
pub struct SharedState {
    /// The log.
    pub log: SharedLog,
    /// This node's id in log entries (random per process).
    pub node: u64,
    /// How long a request waits for Redis before the policy applies.
    pub budget: std::time::Duration,
    /// Refuse (503) instead of deciding on this node's own state when Redis is unreachable.
    pub fail_closed: bool,
    /// Log entries between two snapshots of the state.
    pub snapshot_every: u64,
}

/// The engine, its store and everything that orders them.
pub struct EngineHost {
    locked: Mutex<Locked>,
    store: Records,
    hasher: CardHasher,
    metrics: Arc<Metrics>,
    storage_failed: AtomicBool,
    /// Transactions scored since start; tells a request whether ids it looked up may have
    /// left `recent` before it took the lock.
    scored_total: AtomicU64,
    id_counter: AtomicU64,
    id_salt: u32,
    rules: Mutex<RulesStatus>,
    models: Mutex<ModelsStatus>,
    labels: tokio::sync::Mutex<()>,
    started: Instant,
    settings: Settings,
    /// Deliver alerts from the outbox (Redis, webhooks, e-mail), those configured.
    sinks: AlertSinks,
    /// Whether any alert sink was configured (alerts are built only then).
    has_alert_sinks: bool,
    /// Shared-state mode (`--redis`), if on.
    shared: Option<SharedState>,
    /// How far this node has appended to the shared log the transactions it decided while
    /// Redis was unreachable (they wait in the local store's outbox, durable).
    owed: SeqCursor,
    /// Whether the outbox may hold transactions owed to the log (saves reading an empty
    /// outbox every poll).
    owed_hint: AtomicBool,
    /// Held while this node reloads a snapshot after falling behind a trim of the log.
    catching_up: tokio::sync::Mutex<()>,
    /// Till photos, stored once by content in the data directory.
    photos: Arc<crate::photo::PhotoStore>,
    /// Photo checks running at once (one per core but one).
    photo_slots: tokio::sync::Semaphore,
    /// This node as one of several active-active sites (`--site`), if it is.
    site: Option<Arc<crate::sites::Site>>,
    /// Fingerprint of the card-hash key (sites check they share the key).
    key_fingerprint: String,
    /// Analysts' cases and the audit trail (beside the records, in the same database).
    cases: crate::cases::CaseBook,
    /// Held while the rules change (a reload, an activation, a mode flip): one at a time, so
    /// the file written, the rules in force and the status always agree.
    rules_edit: tokio::sync::Mutex<()>,
    /// One backtest at a time: each replays the whole history on a blocking thread.
    backtests: Arc<tokio::sync::Semaphore>,
    /// The dashboard's live feed and statistics, fed with every stored decision and label.
    live: Arc<LiveHub>,
}

/// Wall-clock time now.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // Falls back to time-derived bits if the OS has no randomness to give.
    if getrandom::fill(&mut b).is_err() {
        return now().millis() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    }
    u64::from_le_bytes(b)
}

/// Shortest accepted card-hash key, in bytes.
const MIN_KEY_LEN: usize = 16;

/// Loads the card-hash key from settings, or from (creating) `card_hash.key` in the data dir.
fn card_hash_key(settings: &Settings) -> Result<Vec<u8>, StartError> {
    if let Some(k) = &settings.card_hash_key {
        let key = k.expose().as_bytes().to_vec();
        if key.len() < MIN_KEY_LEN {
            return Err(StartError::WeakKey(key.len()));
        }
        return Ok(key);
    }
    std::fs::create_dir_all(&settings.data).map_err(StoreError::from)?;
    let path = settings.data.join("card_hash.key");
    match std::fs::read_to_string(&path) {
        Ok(hex) => {
            let key = hex.trim().as_bytes().to_vec();
            if key.len() < MIN_KEY_LEN {
                return Err(StartError::WeakKey(key.len()));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = format!(
                "{:016x}{:016x}{:016x}{:016x}",
                random_u64(),
                random_u64(),
                random_u64(),
                random_u64()
            );
            write_private(&path, key.as_bytes()).map_err(StoreError::from)?;
            tracing::info!(path = %path.display(), "generated a new card-hash key");
            Ok(key.into_bytes())
        }
        Err(e) => Err(StoreError::from(e).into()),
    }
}

/// Writes a new private file atomically: a crash leaves either no file or the whole file.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Errors of loading rules at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The rules file could not be read.
    #[error("cannot read rules file {path}: {source}")]
    RulesRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The rules file does not compile.
    #[error("rules file {path} has errors:\n{errors}")]
    Rules {
        /// The file.
        path: String,
        /// The errors.
        errors: RuleErrors,
    },
    /// The store could not be opened or read.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A model file could not be loaded.
    #[error("model: {0}")]
    Model(String),
    /// The card-hash key is too short to protect card numbers.
    #[error(
        "the card-hash key is {0} bytes; at least 16 are required (32 random bytes recommended)"
    )]
    WeakKey(usize),
    /// The photo store in the data directory could not be opened.
    #[error("photo store: {0}")]
    Photos(String),
    /// The shared log in Redis could not be read at start-up.
    #[error("shared state (redis): {0}")]
    Shared(String),
    /// The data was written under another card-hash key: its card tokens would not match.
    #[error("the card-hash key differs from the one this data directory was written with; card tokens would not match (restore the original key or start a new data directory)")]
    KeyMismatch,
}

impl EngineHost {
    /// Checks the store against the settings, loads the rules and rebuilds entity state from
    /// stored history. Runs at start-up, before any request: the rebuild's CPU work and
    /// SQLite's blocking reads hold this thread on purpose.
    pub async fn start(
        settings: Settings,
        store: Records,
        metrics: Arc<Metrics>,
        sinks: AlertSinks,
        shared: Option<SharedState>,
    ) -> Result<Arc<EngineHost>, StartError> {
        let hasher = CardHasher::new(&card_hash_key(&settings)?);
        // The token of a fixed probe identifies the key without revealing it.
        let key_fingerprint = hasher.token("0000000000000000");
        match store.meta("card_hash_key_fingerprint").await? {
            Some(stored) if stored != key_fingerprint.as_str() => {
                return Err(StartError::KeyMismatch)
            }
            Some(_) => {}
            None => {
                store
                    .set_meta("card_hash_key_fingerprint", key_fingerprint.as_str())
                    .await?
            }
        }
        let state_config = format!(
            "small_amount={} idle_ttl_ms={} alert_window_ms={} label_delay_days={}",
            settings.engine.small_amount,
            settings.engine.idle_ttl_ms,
            settings.engine.escalation.window_ms,
            settings.engine.label_delay_days
        );
        match store.meta("state_config").await? {
            Some(stored) if stored != state_config => {
                tracing::warn!(was = %stored, now = %state_config, "state settings changed since this data was written; the rebuilt state follows the new settings, so decisions may differ from those stored");
                store.set_meta("state_config", &state_config).await?;
            }
            Some(_) => {}
            None => store.set_meta("state_config", &state_config).await?,
        }
        let rules_path = reload::rules_path(settings.rules.as_deref(), &settings.data);
        let (rules, rules_source) = reload::load_rules(rules_path.as_deref())?;
        let rules_text: Arc<str> = rules_source.as_str().into();
        let mut engine = Engine::new(settings.engine, Arc::new(rules));
        let (models, model_texts) =
            reload::load_models(settings.model.as_deref(), settings.challenger.as_deref())
                .map_err(StartError::Model)?;
        engine.set_models(models);
        let began = Instant::now();
        let mut cursor = LogCursor::new();
        if let Some(shared) = &shared {
            // The log is the state: every node rebuilds from it, in its order, starting from
            // the latest snapshot when there is one.
            if let Some(snapshot) = shared
                .log
                .load_snapshot()
                .await
                .map_err(|e| StartError::Shared(e.to_string()))?
            {
                let restored =
                    LogCursor::from_image(&snapshot.cursor).map_err(StartError::Shared)?;
                cursor = LogCursor::install(restored, &mut engine, &snapshot.engine)
                    .map_err(|e| StartError::Shared(format!("the shared snapshot: {e}")))?;
                tracing::info!(position = %snapshot.position, bytes = snapshot.engine.len(), "entity state restored from the shared snapshot");
            }
            let mut applied = 0u64;
            let mut none = HashMap::<LogId, Applied<()>>::new();
            loop {
                let page = shared
                    .log
                    .read(cursor.position(), 10_000)
                    .await
                    .map_err(|e| StartError::Shared(e.to_string()))?;
                if page.is_empty() {
                    break;
                }
                applied += page.len() as u64;
                let mut prepared = replica::prepare(&page);
                cursor.apply(
                    &mut engine,
                    shared.node,
                    &page,
                    &mut prepared,
                    &mut none,
                    |_, _, _| (),
                );
            }
            tracing::info!(
                entries = applied,
                ms = began.elapsed().as_millis() as u64,
                "entity state rebuilt from the shared log"
            );
            reload::settle_in_log(shared, &mut engine, &mut cursor, rules_source, model_texts)
                .await?;
        } else {
            let mut labels = 0u64;
            let txs = store
                .for_each_history(|item| labels += u64::from(apply_history(&mut engine, item)))
                .await?;
            tracing::info!(
                transactions = txs,
                labels,
                ms = began.elapsed().as_millis() as u64,
                "entity state rebuilt from stored history"
            );
        }
        let (site, site_offsets) = match &settings.site {
            Some(name) => {
                let head = store.local().own_head().await?;
                let site = crate::sites::Site::new(name.clone(), head, &settings.peers);
                (Some(Arc::new(site)), store.local().site_offsets()?)
            }
            None => (None, HashMap::new()),
        };
        let owed = SeqCursor::new(&settings.data, "shared-log-appended-seq");
        let photos = Arc::new(
            crate::photo::PhotoStore::open(&settings.data)
                .map_err(|e| StartError::Photos(e.to_string()))?,
        );
        let cases = crate::cases::CaseBook::open(&store)?;
        let latency = Histogram::new_with_bounds(1, 60_000_000, 3)
            .unwrap_or_else(|_| unreachable!("static histogram bounds are valid"));
        Ok(Arc::new(EngineHost {
            locked: Mutex::new(Locked {
                engine,
                cursor,
                log_results: HashMap::new(),
                recent: RecentIds::default(),
                latency,
                per_second: VecDeque::new(),
                since_snapshot: 0,
                site_offsets,
            }),
            store,
            hasher,
            metrics,
            storage_failed: AtomicBool::new(false),
            scored_total: AtomicU64::new(0),
            id_counter: AtomicU64::new(0),
            id_salt: random_u64() as u32,
            rules: Mutex::new(RulesStatus {
                fingerprint: rules_path.as_deref().and_then(reload::fingerprint),
                path: rules_path,
                version: 1,
                loaded_at: now(),
                last_error: None,
                source: rules_text,
            }),
            models: Mutex::new(ModelsStatus {
                fingerprints: [
                    settings.model.as_deref().and_then(reload::fingerprint),
                    settings.challenger.as_deref().and_then(reload::fingerprint),
                ],
                champion: settings.model.clone(),
                challenger: settings.challenger.clone(),
                version: 1,
                loaded_at: now(),
                last_error: None,
            }),
            labels: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            settings,
            has_alert_sinks: !sinks.is_empty(),
            sinks,
            shared,
            owed,
            owed_hint: AtomicBool::new(true),
            catching_up: tokio::sync::Mutex::new(()),
            photos,
            // One core is left to deciding (and replicating) while photos are checked.
            photo_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get().saturating_sub(1).max(1)),
            ),
            live: Arc::new(LiveHub::new(site.clone())),
            site,
            key_fingerprint: key_fingerprint.as_str().to_owned(),
            cases,
            rules_edit: tokio::sync::Mutex::new(()),
            backtests: Arc::new(tokio::sync::Semaphore::new(1)),
        }))
    }

    /// Tells the sinks new alerts are durable in the outbox (never waits on them).
    fn alerts_written(&self) {
        self.sinks.notify();
    }

    /// Lets the sinks' writers deliver what the outbox holds and end (at shutdown, once no
    /// request is in flight and the store's writer is closed).
    pub fn close_alerts(&self) {
        self.sinks.close();
    }

    fn lock(&self) -> MutexGuard<'_, Locked> {
        // A panic while holding the lock cannot leave the engine half-updated in a way that
        // matters more than losing the node, and scoring does not panic: recover the guard.
        self.locked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The alert sinks and their dead letters.
    pub fn alert_sinks(&self) -> &AlertSinks {
        &self.sinks
    }

    /// The records store.
    pub fn store(&self) -> &Records {
        &self.store
    }

    /// The live feed and per-second statistics.
    pub fn live(&self) -> &Arc<LiveHub> {
        &self.live
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The resolved settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether the node can take work (storage healthy).
    pub fn ready(&self) -> bool {
        !self.storage_failed.load(Ordering::Relaxed)
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn next_id(&self, at: Timestamp) -> String {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "tx_{:011x}{:08x}{:06x}",
            at.millis(),
            self.id_salt,
            n & 0xff_ffff
        )
    }

    /// Validates a raw transaction (server time and a generated id fill what is absent).
    pub fn parse(&self, raw: RawTransaction) -> Result<Parsed, FieldError> {
        let generated_id = raw.transaction_id.is_none();
        let at = now();
        let gen = || self.next_id(at);
        let cx = ParseContext {
            card_hasher: &self.hasher,
            now: at,
            latest: Timestamp::from_millis(at.millis() + self.settings.max_clock_skew_ms),
            generated_id: &gen,
        };
        Transaction::parse(raw, &cx).map(|tx| Parsed { tx, generated_id })
    }

    /// Decides transactions in order, each durable before this returns. Ids decided before
    /// return their stored decision, marked `duplicate`.
    pub async fn submit(&self, batch: Vec<Parsed>) -> Result<Vec<Submitted>, HostError> {
        self.admit()?;
        let received = Instant::now();
        let scored_before = self.scored_total.load(Ordering::Acquire);
        // Only ids the store may hold are looked up: a fresh id costs no read.
        let lookups: Vec<String> = batch
            .iter()
            .filter(|p| !p.generated_id && self.store.may_hold(p.tx.transaction_id.as_str()))
            .map(|p| p.tx.transaction_id.as_str().to_owned())
            .collect();
        let stored = if lookups.is_empty() {
            Default::default()
        } else {
            self.store.decisions_of(lookups).await?
        };
        let fresh = batch
            .iter()
            .filter(|p| !stored.contains_key(p.tx.transaction_id.as_str()))
            .count();

        enum Slot {
            Decided(Outcome),
            Stored(String),
            /// Shared-state mode: waiting for the log to order it.
            Fresh,
        }
        let mut slots = Vec::with_capacity(batch.len());
        let mut ordered: Vec<(usize, Parsed, records::writer::WritePermit<'_>)> = Vec::new();
        {
            let mut permits = if fresh == 0 {
                None
            } else {
                match self.store.writer().try_reserve_many(fresh) {
                    Some(p) => Some(p),
                    None => {
                        self.metrics.overloaded.fetch_add(1, Ordering::Relaxed);
                        return Err(HostError::Overloaded);
                    }
                }
            };
            let mut guard = self.lock();
            // Checked again under the lock: once a write has failed nothing more is applied,
            // so the state rebuilt from what is stored (see `watch_storage`) misses nothing.
            if !self.ready() {
                return Err(self.refusal_error());
            }
            let locked = &mut *guard;
            let second = (now().millis() / 1000) as u64;
            // If so many transactions were scored since our store lookup that `recent` may
            // have dropped an id that became durable in between, look again, under the lock.
            // Rare (it takes RECENT_IDS decisions between lookup and lock), but it closes the
            // window in which a duplicate could be counted twice.
            let recent_may_have_evicted = self.scored_total.load(Ordering::Acquire) - scored_before
                >= (RECENT_IDS / 2) as u64;
            for p in batch {
                let id = p.tx.transaction_id.as_str();
                if let Some(decision) = stored.get(id) {
                    slots.push(Slot::Stored(decision.clone()));
                    continue;
                }
                if locked.recent.contains(id) {
                    slots.push(Slot::Decided(Outcome::InFlight(id.to_owned())));
                    continue;
                }
                if recent_may_have_evicted && !p.generated_id && self.store.may_hold(id) {
                    if let Some(decision) = self.store.decision_blocking(id)? {
                        slots.push(Slot::Stored(decision));
                        continue;
                    }
                }
                let Some(permit) = permits.as_mut().and_then(Iterator::next) else {
                    // Cannot happen (one place was reserved per fresh transaction); refuse
                    // rather than apply without a place to store it.
                    return Err(HostError::Overloaded);
                };
                if self.shared.is_some() {
                    // Ordered (and decided) by the shared log, below, outside the lock.
                    locked.recent.insert(id);
                    ordered.push((slots.len(), p, permit));
                    slots.push(Slot::Fresh);
                    continue;
                }
                let t0 = Instant::now();
                let scored = locked.engine.score(&p.tx);
                let us = t0.elapsed().as_micros() as u64;
                // Empty but for a return accepted against another store's claim.
                let conflicts = locked.engine.take_conflicts();
                let _ = locked.latency.record(us.max(1));
                self.metrics.engine_latency.observe_us(us);
                locked.recent.insert(id);
                self.scored_total.fetch_add(1, Ordering::Release);
                match locked.per_second.back_mut() {
                    Some((s, n)) if *s == second => *n += 1,
                    _ => {
                        locked.per_second.push_back((second, 1));
                        if locked.per_second.len() > 60 {
                            locked.per_second.pop_front();
                        }
                    }
                }
                let alert = if self.has_alert_sinks {
                    AlertEvent::of(&p.tx, &scored.decision, &scored.features).map(Box::new)
                } else {
                    None
                };
                let decision = scored.decision;
                let pending = write_decision(
                    &self.live, permit, p.tx, decision, us, false, alert, conflicts,
                );
                slots.push(Slot::Decided(pending));
            }
        }

        if let Some(shared) = self.shared.as_ref().filter(|_| !ordered.is_empty()) {
            for (index, outcome) in self.decide_through_log(shared, ordered).await? {
                slots[index] = Slot::Decided(outcome);
            }
        }

        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            match slot {
                Slot::Fresh => return Err(HostError::Overloaded),
                Slot::Decided(Outcome::Pending(ack, record, raised, observed)) => {
                    match ack.await {
                        Ok(Ok(seq)) => {
                            if let Some(site) = &self.site {
                                site.advance(seq);
                            }
                            self.live.stored(*observed);
                        }
                        Ok(Err(e)) => return Err(self.storage_failed(e)),
                        Err(_) => return Err(self.storage_failed("writer stopped".into())),
                    }
                    if raised {
                        self.alerts_written();
                    }
                    if record.degraded {
                        self.owed_hint.store(true, Ordering::Release);
                    }
                    self.metrics.decision(record.decision.decision);
                    if record.decision.decision > ringfence_core::decision::Action::Approve {
                        self.metrics.alerts.fetch_add(1, Ordering::Relaxed);
                    }
                    out.push(Submitted {
                        record,
                        duplicate: false,
                    });
                }
                Slot::Stored(json) => out.push(Submitted {
                    record: decode_decision(&json)?,
                    duplicate: true,
                }),
                Slot::Decided(Outcome::InFlight(id)) => {
                    let record = if let Some(prev) = out
                        .iter()
                        .rev()
                        .find(|s| s.record.decision.transaction_id == id)
                    {
                        prev.record.clone()
                    } else {
                        self.wait_stored(id).await?
                    };
                    out.push(Submitted {
                        record,
                        duplicate: true,
                    });
                }
            }
        }
        self.metrics
            .durable_latency
            .observe_us(received.elapsed().as_micros() as u64);
        Ok(out)
    }

    /// Shared-state mode: appends this request's fresh transactions to the log, applies every
    /// entry up to them in log order, and writes the records of those this node decided.
    /// Redis unreachable within the budget: fail closed, or decide on this node's state
    /// without changing it and queue the transactions for the log (the follower appends the
    /// queue, off the request path: a request never carries it, so a backlog cannot make
    /// requests slower and in turn grow itself).
    async fn decide_through_log<'p>(
        &self,
        shared: &SharedState,
        fresh: Vec<(usize, Parsed, records::writer::WritePermit<'p>)>,
    ) -> Result<Vec<(usize, Outcome)>, HostError> {
        let entries: Vec<LogEntry> = fresh
            .iter()
            .map(|(_, p, _)| LogEntry::Tx {
                tx: Box::new(p.tx.clone()),
                origin: shared.node,
            })
            .collect();
        let position = self.lock().cursor.position();
        let mut reply =
            tokio::time::timeout(shared.budget, shared.log.append(position, &entries)).await;
        if let Ok(Err(LogError::Behind(_))) = reply {
            // The log was trimmed past this node (it fell a whole snapshot behind): load the
            // snapshot, then try once more. Nothing of this request was appended.
            match self.catch_up(shared).await {
                Ok(()) => {
                    let position = self.lock().cursor.position();
                    reply =
                        tokio::time::timeout(shared.budget, shared.log.append(position, &entries))
                            .await;
                }
                Err(e) => tracing::error!(error = %e, "cannot catch up with the shared log"),
            }
        }
        let returned = match reply {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shared log unreachable");
                None
            }
            Err(_) => {
                tracing::warn!(
                    budget_ms = shared.budget.as_millis() as u64,
                    "shared log too slow"
                );
                None
            }
        };
        let mut out = Vec::with_capacity(fresh.len());
        let Some(returned) = returned else {
            // Unreachable, or too slow (an append that lands late is harmless: its entries
            // are applied once, as anything else in the log).
            if shared.fail_closed {
                let mut locked = self.lock();
                for (_, p, _) in &fresh {
                    locked.recent.remove(p.tx.transaction_id.as_str());
                }
                return Err(HostError::SharedUnavailable);
            }
            let locked = self.lock();
            for (index, p, permit) in fresh {
                let t0 = Instant::now();
                let scored = locked.engine.evaluate(&p.tx);
                let us = t0.elapsed().as_micros() as u64;
                let alert = if self.has_alert_sinks {
                    AlertEvent::of(&p.tx, &scored.decision, &scored.features).map(Box::new)
                } else {
                    None
                };
                let decision = scored.decision;
                out.push((
                    index,
                    write_decision(
                        &self.live,
                        permit,
                        p.tx,
                        decision,
                        us,
                        true,
                        alert,
                        Vec::new(),
                    ),
                ));
            }
            return Ok(out);
        };
        let ours: Vec<LogId> = returned[returned.len().saturating_sub(fresh.len())..]
            .iter()
            .map(|(id, _)| *id)
            .collect();
        self.apply_log(shared, &returned, replica::prepare(&returned));
        let mut locked = self.lock();
        for ((index, p, permit), id) in fresh.into_iter().zip(ours) {
            let (decision, alert, us) = match locked.log_results.remove(&id) {
                Some(Applied::Decided(own)) => own,
                // The same id is earlier in the log: every node decided that copy. Store its
                // decision here too (idempotent by id), so the record exists even if the node
                // that appended it died before writing it (a crashed worker's entry claimed
                // by another).
                Some(Applied::Duplicate(Some(decision))) => (decision, None, 0),
                // Too old to be remembered: wait for the stored record.
                _ => {
                    let id = p.tx.transaction_id.as_str().to_owned();
                    out.push((index, Outcome::InFlight(id)));
                    continue;
                }
            };
            out.push((
                index,
                write_decision(
                    &self.live,
                    permit,
                    p.tx,
                    decision,
                    us,
                    false,
                    alert,
                    Vec::new(),
                ),
            ));
        }
        Ok(out)
    }

    /// Shared-state mode: applies what other nodes append, so reads and the next decision
    /// start from current state even when this node gets no traffic. Runs until aborted.
    pub async fn follow_shared_log(self: Arc<Self>) {
        let Some(shared) = &self.shared else {
            return;
        };
        loop {
            // Requests apply most entries on a busy node, so count there, not only here.
            if self.lock().since_snapshot >= shared.snapshot_every {
                self.take_snapshot(shared).await;
            }
            self.append_owed(shared).await;
            let position = self.lock().cursor.position();
            match shared.log.read(position, 1000).await {
                Ok(entries) if !entries.is_empty() => {
                    self.apply_log(shared, &entries, replica::prepare(&entries))
                }
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Err(LogError::Behind(_)) => {
                    if let Err(e) = self.catch_up(shared).await {
                        tracing::error!(error = %e, "cannot catch up with the shared log");
                        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
                    }
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    }

    /// Applies log entries in order (their rules and models changes compiled in `prepared`),
    /// then records any switch of rules or models in their status.
    fn apply_log(
        &self,
        shared: &SharedState,
        entries: &[(LogId, LogEntry)],
        mut prepared: Prepared,
    ) {
        // Other nodes' transactions, for the live feed (fed once the lock is released).
        let mut foreign = Vec::new();
        let reconfigured = {
            let mut guard = self.lock();
            let locked = &mut *guard;
            let r = locked.cursor.apply_observing(
                &mut locked.engine,
                shared.node,
                entries,
                &mut prepared,
                &mut locked.log_results,
                own_decision(self.has_alert_sinks, Instant::now()),
                |tx, decision| foreign.push(self.live.observe_other_node(tx, decision)),
            );
            // One shared state is one site: returns at its stores see each other at once,
            // so cross-site conflicts belong to sites mode; drop what accumulated.
            locked.engine.take_conflicts();
            locked.since_snapshot += r.applied;
            r
        };
        for o in foreign {
            self.live.stored(o);
        }
        self.scored_total
            .fetch_add(reconfigured.applied, Ordering::Release);
        if reconfigured.rules {
            self.rules_switched();
        }
        if reconfigured.models {
            self.models_switched();
        }
    }

    /// Appends (a chunk of) the transactions decided while Redis was unreachable, from the
    /// local store's outbox, so every node's state gets them; on failure they wait for the
    /// next round (durably: a stop or crash in between does not lose them).
    async fn append_owed(&self, shared: &SharedState) {
        if !self.owed_hint.swap(false, Ordering::AcqRel) {
            return;
        }
        let after = self.owed.load();
        let rows = match self
            .store
            .local()
            .owed_to_log_after(after, OWED_CHUNK)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "reading the transactions owed to the shared log failed");
                self.owed_hint.store(true, Ordering::Release);
                return;
            }
        };
        let Some(&(last, _)) = rows.last() else {
            return;
        };
        let chunk: Vec<LogEntry> = rows
            .iter()
            .filter_map(|(seq, json)| match serde_json::from_str::<Transaction>(json) {
                Ok(tx) => Some(LogEntry::Tx {
                    tx: Box::new(tx),
                    origin: 0,
                }),
                Err(e) => {
                    tracing::error!(seq, error = %e, "a stored transaction does not parse; not appended");
                    None
                }
            })
            .collect();
        let position = self.lock().cursor.position();
        let append = shared.log.append(position, &chunk);
        match tokio::time::timeout(OWED_BUDGET, append).await {
            Ok(Ok(returned)) => {
                self.apply_log(shared, &returned, replica::prepare(&returned));
                self.owed.save(last);
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "owed transactions not appended yet"),
            Err(_) => tracing::debug!("appending owed transactions timed out"),
        }
        // More may wait (a full chunk, or a failure to retry).
        self.owed_hint.store(true, Ordering::Release);
    }

    /// Saves a snapshot of this node's state to the shared log if no other node is saving
    /// one, which trims the log behind the previous snapshot. The state is copied under the
    /// engine lock (a consistent cut at one log position) and encoded outside it; see
    /// BENCHMARKS.md for the cost of each.
    async fn take_snapshot(&self, shared: &SharedState) {
        self.lock().since_snapshot = 0;
        match shared.log.try_lease(shared.node, SNAPSHOT_LEASE).await {
            Ok(true) => {}
            Ok(false) => return, // another node is at it; count again from here
            Err(e) => {
                tracing::warn!(error = %e, "snapshot lease unavailable");
                return;
            }
        }
        // Copied under the engine lock (milliseconds), encoded off it and off the async
        // workers (the encoding of a large state takes hundreds of milliseconds).
        let began = Instant::now();
        let (position, state, cursor) = {
            let locked = self.lock();
            (
                locked.cursor.position(),
                locked.engine.state_copy(),
                locked.cursor.image(),
            )
        };
        let copy_ms = began.elapsed().as_millis() as u64;
        let encoded = tokio::task::spawn_blocking(move || {
            let engine = state.encode().map_err(|e| e.to_string())?;
            Ok::<_, String>(Snapshot {
                position,
                engine,
                cursor: cursor.to_bytes()?,
            })
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let encode_ms = began.elapsed().as_millis() as u64 - copy_ms;
        match encoded {
            Ok(snapshot) => match shared.log.save_snapshot(&snapshot).await {
                Ok(saved) => tracing::info!(
                    position = %snapshot.position,
                    bytes = snapshot.engine.len() + snapshot.cursor.len(),
                    copy_ms,
                    encode_ms,
                    saved,
                    "shared state snapshot"
                ),
                Err(e) => tracing::warn!(error = %e, "saving the snapshot failed"),
            },
            Err(e) => tracing::error!(error = %e, "encoding the snapshot failed"),
        }
        if let Err(e) = shared.log.release_lease(shared.node).await {
            tracing::warn!(error = %e, "releasing the snapshot lease failed");
        }
    }

    /// Reloads the latest snapshot after this node fell behind a trim of the log: entries it
    /// never applied are gone, and the snapshot holds their effect. One request (or the
    /// follower) loads it; the others wait and find the position moved.
    async fn catch_up(&self, shared: &SharedState) -> Result<(), String> {
        let _one = self.catching_up.lock().await;
        let snapshot = shared
            .log
            .load_snapshot()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the log was trimmed but holds no snapshot")?;
        if snapshot.position <= self.lock().cursor.position() {
            return Ok(()); // caught up by whoever held the lock before
        }
        let restored = LogCursor::from_image(&snapshot.cursor)?;
        let mut guard = self.lock();
        let locked = &mut *guard;
        locked.cursor = LogCursor::install(restored, &mut locked.engine, &snapshot.engine)?;
        locked.since_snapshot = 0;
        drop(guard);
        tracing::warn!(position = %snapshot.position, "fell behind the trimmed shared log; state reloaded from its snapshot");
        self.rules_switched();
        self.models_switched();
        Ok(())
    }

    /// Waits for a transaction decided by another request to become durable.
    async fn wait_stored(&self, id: String) -> Result<DecisionRecord, HostError> {
        for _ in 0..200 {
            if let Some(json) = self.store.decisions_of(vec![id.clone()]).await?.remove(&id) {
                return decode_decision(&json);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(HostError::Overloaded)
    }

    fn storage_failed(&self, e: String) -> HostError {
        self.storage_failed.store(true, Ordering::Relaxed);
        tracing::error!(error = %e, "write failed: refusing new work until storage works again and the state is rebuilt");
        match self.store.local().fault() {
            Some(f) if f.full => HostError::StorageFull(e),
            _ => HostError::Storage(e),
        }
    }

    /// Why new work is refused while the node is not ready.
    fn refusal_error(&self) -> HostError {
        match self.store.local().fault() {
            Some(f) if f.full => HostError::StorageFull(f.message),
            Some(f) => HostError::Storage(f.message),
            None => HostError::Storage(
                "an earlier write failed; the state is being rebuilt from what is stored".into(),
            ),
        }
    }

    /// Whether new work may be applied now: storage healthy and the indexer close enough
    /// behind the log. Checked before anything is applied.
    fn admit(&self) -> Result<(), HostError> {
        if !self.ready() {
            return Err(self.refusal_error());
        }
        match self.store.local().admit() {
            Ok(()) => Ok(()),
            Err(records::sqlite::Refusal::Lagging) => {
                self.metrics.overloaded.fetch_add(1, Ordering::Relaxed);
                Err(HostError::Overloaded)
            }
            Err(records::sqlite::Refusal::Fault(f)) if f.full => {
                Err(HostError::StorageFull(f.message))
            }
            Err(records::sqlite::Refusal::Fault(f)) => Err(HostError::Storage(f.message)),
        }
    }

    /// Brings the node back after storage failed, without a restart: repairs the record log
    /// once writing works again (space freed, the disk writable again), then, if the engine
    /// applied transactions whose records were not stored, rebuilds its state from what is
    /// stored, and takes work again. Runs until aborted (one per node).
    pub async fn watch_storage(self: Arc<Self>) {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            let local = self.store.local().clone();
            if local.fault().is_some() {
                let repaired = tokio::task::spawn_blocking(move || local.try_repair()).await;
                match repaired {
                    Ok(Ok(())) => tracing::info!("storage writes work again"),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "storage still failing");
                        continue;
                    }
                    Err(_) => continue,
                }
            }
            if !self.ready() && self.store.local().fault().is_none() {
                if let Err(e) = self.rebuild_after_failure().await {
                    tracing::error!(error = %e, "rebuilding the state after a storage failure failed; retrying");
                }
            }
        }
    }

    /// Replaces the engine's state with one rebuilt from stored history (the engine applied
    /// transactions whose writes failed). New work stays refused until it is done.
    async fn rebuild_after_failure(&self) -> Result<(), String> {
        if self.shared.is_some() {
            // The shared log, not this node's records, is the state there: nothing to undo.
            self.storage_failed.store(false, Ordering::Relaxed);
            return Ok(());
        }
        if matches!(self.store, Records::Postgres { .. }) {
            // The state comes from PostgreSQL there, which the buffer has not reached yet.
            return Err("production mode: restart the node to rebuild its state".into());
        }
        // Writes queued before the failure are written or refused first.
        while self.store.writer().backlog() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let store = self.store.local().clone();
        store.caught_up().await;
        if !store.is_caught_up() {
            return Err("the indexer is behind the log".into());
        }
        let (config, rules, models) = {
            let locked = self.lock();
            (
                *locked.engine.config(),
                locked.engine.rules().clone(),
                locked.engine.models().clone(),
            )
        };
        let began = Instant::now();
        let rebuilt = tokio::task::spawn_blocking(move || {
            let mut engine = Engine::new(config, rules);
            engine.set_models(models);
            let n = store
                .for_each_history(|item| {
                    apply_history(&mut engine, item);
                })
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((engine, n))
        })
        .await
        .map_err(|e| e.to_string())??;
        let (mut engine, n) = rebuilt;
        let mut locked = self.lock();
        // Rules or models switched meanwhile: the rebuilt engine takes those in force.
        engine.set_rules(locked.engine.rules().clone());
        engine.set_models(locked.engine.models().clone());
        locked.engine = engine;
        // Ids of failed writes were remembered as decided: forget them (stored ones are in
        // the store's id filter).
        locked.recent = RecentIds::default();
        self.storage_failed.store(false, Ordering::Relaxed);
        drop(locked);
        tracing::info!(
            transactions = n,
            ms = began.elapsed().as_millis() as u64,
            "state rebuilt from stored history after a storage failure; taking work again"
        );
        Ok(())
    }

    /// Records a verdict on a stored transaction and updates ring membership.
    pub async fn label(
        &self,
        transaction_id: String,
        fraud: bool,
        source: Option<String>,
        note: Option<String>,
    ) -> Result<LabelRecord, HostError> {
        self.admit()?;
        // Labels are rare: serialise them so "previous verdict" is never stale.
        let _one_at_a_time = self.labels.lock().await;
        let Some((tx, previous)) = self.store.event_and_label(transaction_id.clone()).await? else {
            return Err(HostError::NotFound(format!(
                "transaction `{transaction_id}` is not stored"
            )));
        };
        let record = LabelRecord {
            transaction_id,
            fraud,
            previous,
            source,
            note,
            labeled_at: now(),
        };
        let ack = {
            let Some(permit) = self.store.writer().try_reserve() else {
                self.metrics.overloaded.fetch_add(1, Ordering::Relaxed);
                return Err(HostError::Overloaded);
            };
            match &self.shared {
                None => {
                    let mut locked = self.lock();
                    if !self.ready() {
                        return Err(self.refusal_error());
                    }
                    locked.engine.apply_label(&tx, fraud, previous);
                }
                Some(shared) => {
                    // Every node applies the label at the same place in the log.
                    let position = self.lock().cursor.position();
                    let entry = LogEntry::Label {
                        tx: Box::new(tx.clone()),
                        fraud,
                        previous,
                    };
                    let returned = shared
                        .log
                        .append(position, std::slice::from_ref(&entry))
                        .await
                        .map_err(|e| {
                            tracing::warn!(error = %e, "shared log unreachable: label refused");
                            HostError::SharedUnavailable
                        })?;
                    self.apply_log(shared, &returned, replica::prepare(&returned));
                }
            }
            records::send(permit, WriteOp::Label(record.clone()))
        };
        match ack.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(self.storage_failed(e)),
            Err(_) => return Err(self.storage_failed("writer stopped".into())),
        }
        self.metrics.labels.fetch_add(1, Ordering::Relaxed);
        self.live.labelled(fraud);
        Ok(record)
    }

    /// The card token of a card number (for lookups by PAN; the PAN itself goes nowhere).
    pub fn card_token(&self, pan_digits: &str) -> String {
        self.hasher.token(pan_digits).as_str().to_owned()
    }

    /// Current features of an entity, if the engine holds state for it.
    pub fn entity_features(
        &self,
        kind: EntityKind,
        id: &EntityId,
    ) -> Option<Vec<(&'static str, serde_json::Value)>> {
        let locked = self.lock();
        let at = locked.engine.watermark().map_or(now(), |w| w.max(now()));
        locked.engine.entity_features(kind, id, at)
    }

    /// Tries `candidate` over the last `hours` of stored history (see [`crate::backtest`]),
    /// next to the rules in force; one at a time on this node.
    pub async fn backtest(
        &self,
        candidate: ringfence_core::rules::RuleSet,
        hours: u32,
    ) -> Result<crate::backtest::Report, crate::backtest::BacktestError> {
        let mut report = crate::backtest::run(
            &self.backtests,
            self.store.clone(),
            self.settings.engine,
            Arc::new(candidate),
            self.active_rules(),
            hours,
        )
        .await?;
        // Nodes sharing state in Redis each store only the transactions they decided.
        report.this_node_only = self.shared.is_some() && matches!(self.store, Records::Sqlite(_));
        Ok(report)
    }

    /// Engine-side statistics.
    pub fn engine_stats(&self) -> serde_json::Value {
        let locked = self.lock();
        let h = &locked.latency;
        let this_second = (now().millis() / 1000) as u64;
        // The last complete 10 seconds.
        let recent: u64 = locked
            .per_second
            .iter()
            .filter(|(s, _)| *s < this_second && *s + 10 >= this_second)
            .map(|(_, n)| n)
            .sum();
        serde_json::json!({
            "transactions_per_second": recent as f64 / 10.0,
            "engine_latency_us": {
                "count": h.len(),
                "p50": h.value_at_quantile(0.5),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
            },
            "state": locked.engine.state_counts(),
            "watermark": locked.engine.watermark(),
            "rules": locked.engine.rules().len(),
            "write_backlog": self.store.writer().backlog(),
            "log": self.store.local().log_stats(),
        })
    }
}

fn decode_decision(json: &str) -> Result<DecisionRecord, HostError> {
    serde_json::from_str(json).map_err(|e| HostError::Store(StoreError::Corrupt(e.to_string())))
}
