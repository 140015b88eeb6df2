//! Backtests: how candidate rules would have done over the last hours of stored history,
//! before an analyst puts them in force.
//!
//! A rule reads features such as `card.count_1m` that depend on every earlier event, so a
//! backtest cannot start at the window: it replays the whole stored history through a fresh
//! engine, from the first record, exactly as a restart rebuilds its state (each transaction
//! applied with the alert and block flags its stored decision carried, each label where it
//! was given). The feature values a rule sees inside the window are therefore the ones the
//! engine computed when those transactions were decided, whatever rules ran then. Inside the
//! window each transaction's features are computed once and both the candidate rules and the
//! rules in force are matched against them, so the two sets are compared on the same values.
//!
//! The window ends at the latest stored event time, not at the wall clock: history may be
//! replayed data from another year. Verdicts are the latest label of each transaction, given
//! at any time up to now (a chargeback that came in after the window still counts).
//!
//! A backtest is CPU work proportional to the whole history; it runs on a blocking thread,
//! one at a time per node, and refuses a history larger than [`MAX_HISTORY`] records (see
//! BENCHMARKS.md for its cost).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ringfence_core::decision::Action;
use ringfence_core::engine::{Engine, EngineConfig};
use ringfence_core::event::Timestamp;
use ringfence_core::rules::{Rule, RuleMode, RuleSet};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::store::{HistoryItem, Records, StoreError};

/// Window length when none is asked for, in hours.
pub const DEFAULT_HOURS: u32 = 24;
/// Longest window, in hours (30 days, the longest feature window).
pub const MAX_HOURS: u32 = 720;
/// Most stored records (transactions and labels) a backtest replays.
pub const MAX_HISTORY: u64 = 5_000_000;
/// Sample transaction ids kept per rule (the latest hits).
const SAMPLES: usize = 5;

/// Why a backtest did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// Another backtest is running on this node.
    #[error("a backtest is already running on this node; try again when it has finished")]
    Busy,
    /// The stored history is larger than a backtest replays.
    #[error(
        "the stored history holds {records} records; a backtest replays at most {MAX_HISTORY}"
    )]
    TooMuchHistory {
        /// Transactions and labels stored.
        records: u64,
    },
    /// Reading the history failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The blocking thread stopped before the backtest finished.
    #[error("the backtest stopped: {0}")]
    Stopped(String),
}

/// What one set of rules did with one rule in the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Transactions in the window the rule matched.
    pub hits: u64,
    /// Of those, transactions whose latest label is fraud.
    pub confirmed_fraud: u64,
    /// Of those, transactions whose latest label is not fraud.
    pub false_positives: u64,
    /// Of those, transactions without a label.
    pub unlabelled: u64,
    /// The ids of its latest hits, newest first (at most five).
    pub samples: Vec<String>,
}

/// One candidate rule's result, and that of the rule of the same name in force, if any.
#[derive(Clone, Debug, Serialize)]
pub struct RuleResult {
    /// The rule's name.
    pub name: String,
    /// Its category.
    pub category: String,
    /// Its mode in the candidate set.
    pub mode: RuleMode,
    /// Its condition.
    pub when: String,
    /// Score points it adds.
    pub score: f64,
    /// The action it forces, if any.
    pub action: Option<Action>,
    /// What it would have matched.
    #[serde(flatten)]
    pub tally: Tally,
    /// The rule of this name in force now, over the same transactions (`None`: a new rule).
    pub active: Option<ActiveResult>,
}

/// The rule in force of a candidate's name, for comparison.
#[derive(Clone, Debug, Serialize)]
pub struct ActiveResult {
    /// Its mode now.
    pub mode: RuleMode,
    /// Its condition now (to show what differs).
    pub when: String,
    /// What it matched.
    #[serde(flatten)]
    pub tally: Tally,
}

/// The window a backtest looked at: `from <= event time <= to`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Window {
    /// Its start (`to` minus the hours).
    pub from: Timestamp,
    /// The latest stored event time.
    pub to: Timestamp,
    /// Its length.
    pub hours: u32,
}

/// Labels of the transactions in the window, by verdict.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Labelled {
    /// Latest label fraud.
    pub fraud: u64,
    /// Latest label not fraud.
    pub not_fraud: u64,
}

/// A backtest's result.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The window (`None` when no transaction is stored).
    pub window: Option<Window>,
    /// Stored transactions replayed (the whole history, to rebuild the features).
    pub history_transactions: u64,
    /// Stored labels replayed.
    pub history_labels: u64,
    /// Transactions inside the window.
    pub events_in_window: u64,
    /// Transactions inside the window whose latest label is fraud.
    pub fraud_labels_in_window: u64,
    /// Transactions inside the window by latest label.
    pub labelled_in_window: Labelled,
    /// Per candidate rule, in file order.
    pub rules: Vec<RuleResult>,
    /// Wall time the backtest took, reading included.
    pub elapsed_ms: u64,
    /// True when the history read is this node's records only: with shared state in Redis
    /// and records in each node's own SQLite, the other nodes' transactions (and so their
    /// share of every feature) are missing. Records in PostgreSQL are every node's.
    pub this_node_only: bool,
}

/// A backtest fed one history item at a time (the store streams them in apply order).
pub struct Backtest {
    engine: Engine,
    candidate: Arc<RuleSet>,
    active: Arc<RuleSet>,
    window: Option<Window>,
    /// Per window transaction that matched anything: its id and the rules it matched
    /// (candidate indices, then active ones offset by the candidate count).
    hits: Vec<(Box<str>, Box<[u16]>)>,
    /// Latest verdict of each window transaction that has one.
    labels: HashMap<Box<str>, bool>,
    transactions: u64,
    labels_seen: u64,
    in_window: u64,
    /// Scratch for one transaction's matches.
    matched: Vec<u16>,
}

impl Backtest {
    /// A backtest of `candidate` against `active` over `window`, on a fresh engine with the
    /// node's configuration (no models: rules read features only).
    pub fn new(
        config: EngineConfig,
        candidate: Arc<RuleSet>,
        active: Arc<RuleSet>,
        window: Option<Window>,
    ) -> Backtest {
        Backtest {
            engine: Engine::new(config, Arc::new(RuleSet::empty())),
            candidate,
            active,
            window,
            hits: Vec::new(),
            labels: HashMap::new(),
            transactions: 0,
            labels_seen: 0,
            in_window: 0,
            matched: Vec::new(),
        }
    }

    fn inside(&self, at: Timestamp) -> bool {
        self.window.is_some_and(|w| w.from <= at && at <= w.to)
    }

    /// Applies one stored record, matching both rule sets first when it is a transaction in
    /// the window.
    pub fn feed(&mut self, item: HistoryItem) {
        match item {
            HistoryItem::Tx { tx, alert, blocked } => {
                self.transactions += 1;
                if self.inside(tx.timestamp) {
                    self.in_window += 1;
                    // Features before the transaction, as when it was decided.
                    let scored = self.engine.evaluate(&tx);
                    self.matched.clear();
                    let sets = [&self.candidate, &self.active];
                    let mut offset = 0;
                    for set in sets {
                        for (i, rule) in set.rules().iter().enumerate() {
                            if rule.matches(&scored.features) {
                                // At most 1000 rules per set: both fit a u16.
                                self.matched.push((offset + i) as u16);
                            }
                        }
                        offset += set.len();
                    }
                    if !self.matched.is_empty() {
                        let id: Box<str> = tx.transaction_id.as_str().into();
                        self.hits.push((id, self.matched.as_slice().into()));
                    }
                }
                self.engine.apply_recorded(&tx, alert, blocked);
                // Conflicts were stored and alerted when first found.
                self.engine.take_conflicts();
            }
            HistoryItem::Label {
                tx,
                fraud,
                previous,
            } => {
                self.labels_seen += 1;
                if self.inside(tx.timestamp) {
                    self.labels.insert(tx.transaction_id.as_str().into(), fraud);
                }
                self.engine.apply_label(&tx, fraud, previous);
            }
        }
    }

    /// Records fed so far.
    pub fn records(&self) -> u64 {
        self.transactions + self.labels_seen
    }

    /// The tallies, per candidate rule with its rule in force.
    pub fn finish(self, elapsed_ms: u64) -> Report {
        let n = self.candidate.len();
        let mut tallies = vec![Tally::default(); n + self.active.len()];
        // Newest first, so the samples are the latest hits.
        for (id, matched) in self.hits.iter().rev() {
            let label = self.labels.get(id).copied();
            for &i in matched.iter() {
                let Some(t) = tallies.get_mut(usize::from(i)) else {
                    continue;
                };
                t.hits += 1;
                match label {
                    Some(true) => t.confirmed_fraud += 1,
                    Some(false) => t.false_positives += 1,
                    None => t.unlabelled += 1,
                }
                if t.samples.len() < SAMPLES {
                    t.samples.push(id.to_string());
                }
            }
        }
        let mut labelled = Labelled::default();
        for &fraud in self.labels.values() {
            if fraud {
                labelled.fraud += 1;
            } else {
                labelled.not_fraud += 1;
            }
        }
        let active_index: HashMap<&str, usize> = self
            .active
            .rules()
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        let rules = self
            .candidate
            .rules()
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let active = active_index.get(rule.name.as_str()).map(|&j| {
                    let r: &Rule = &self.active.rules()[j];
                    ActiveResult {
                        mode: r.mode,
                        when: r.when.clone(),
                        tally: std::mem::take(&mut tallies[n + j]),
                    }
                });
                RuleResult {
                    name: rule.name.clone(),
                    category: rule.category.clone(),
                    mode: rule.mode,
                    when: rule.when.clone(),
                    score: rule.weight,
                    action: rule.action,
                    tally: std::mem::take(&mut tallies[i]),
                    active,
                }
            })
            .collect();
        Report {
            window: self.window,
            history_transactions: self.transactions,
            history_labels: self.labels_seen,
            events_in_window: self.in_window,
            fraud_labels_in_window: labelled.fraud,
            labelled_in_window: labelled,
            rules,
            elapsed_ms,
            this_node_only: false,
        }
    }
}

/// Runs a backtest of `candidate` against `active` over the last `hours` of `store`'s
/// history, on a blocking thread (the history is read and replayed there; on PostgreSQL its
/// reads are driven from that thread). `slot` admits one at a time: its permit goes with the
/// replay, so a caller that hangs up does not let a second one start beside it.
pub async fn run(
    slot: &Arc<Semaphore>,
    store: Records,
    config: EngineConfig,
    candidate: Arc<RuleSet>,
    active: Arc<RuleSet>,
    hours: u32,
) -> Result<Report, BacktestError> {
    let permit = slot
        .clone()
        .try_acquire_owned()
        .map_err(|_| BacktestError::Busy)?;
    let began = Instant::now();
    let counts = store.counts().await?;
    let records = counts.transactions + counts.labels;
    if records > MAX_HISTORY {
        return Err(BacktestError::TooMuchHistory { records });
    }
    let window = store.latest_event_time().await?.map(|to| Window {
        from: Timestamp::from_millis(to.saturating_sub(i64::from(hours) * 3_600_000)),
        to: Timestamp::from_millis(to),
        hours,
    });
    let runtime = tokio::runtime::Handle::current();
    let replay = tokio::task::spawn_blocking(move || {
        let _slot = permit;
        let mut backtest = Backtest::new(config, candidate, active, window);
        runtime.block_on(store.for_each_history(|item| {
            // Records stored after the count are beyond the window's end anyway; the bound
            // keeps a history growing fast during the backtest from running it long.
            if backtest.records() < MAX_HISTORY {
                backtest.feed(item);
            }
        }))?;
        Ok::<_, BacktestError>(backtest)
    });
    let backtest = replay
        .await
        .map_err(|e| BacktestError::Stopped(e.to_string()))??;
    Ok(backtest.finish(began.elapsed().as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringfence_core::event::{CardHasher, ParseContext, RawTransaction, Transaction};

    fn tx(id: &str, second: i64, card: &str, amount: f64) -> Transaction {
        let raw: RawTransaction = serde_json::from_value(serde_json::json!({
            "transaction_id": id,
            "timestamp": Timestamp::from_millis(1_700_000_000_000 + second * 1000).to_rfc3339(),
            "card_id": card,
            "amount": amount,
        }))
        .expect("raw");
        let hasher = CardHasher::new(b"test-key-0123456789");
        let no_id = String::new;
        let cx = ParseContext {
            card_hasher: &hasher,
            now: Timestamp::MIN,
            latest: Timestamp::MAX,
            generated_id: &no_id,
        };
        Transaction::parse(raw, &cx).expect("tx")
    }

    fn rules(text: &str) -> Arc<RuleSet> {
        Arc::new(RuleSet::from_toml(text).expect("rules"))
    }

    #[test]
    fn counts_hits_by_latest_label_with_features_from_before_the_window() {
        let candidate = rules(
            "[[rule]]\nname = \"burst\"\nwhen = \"card.count_1m >= 2\"\nscore = 50\n\n[[rule]]\nname = \"new\"\nwhen = \"tx.amount > 100\"\nscore = 10\nmode = \"shadow\"\n",
        );
        let active =
            rules("[[rule]]\nname = \"burst\"\nwhen = \"card.count_1m >= 1\"\nscore = 50\n");
        // Window: seconds 100..=200. Card a: two before the window, one just inside it (its
        // count_1m is 2 only because of the two before).
        let window = Window {
            from: Timestamp::from_millis(1_700_000_000_000 + 100_000),
            to: Timestamp::from_millis(1_700_000_000_000 + 200_000),
            hours: 1,
        };
        let mut b = Backtest::new(EngineConfig::default(), candidate, active, Some(window));
        let history = [
            tx("a1", 70, "a", 5.0),
            tx("a2", 80, "a", 5.0),
            tx("a3", 110, "a", 500.0),
            tx("b1", 150, "b", 5.0),
            tx("b2", 160, "b", 5.0),
            tx("c1", 170, "c", 900.0),
        ];
        for t in &history {
            b.feed(HistoryItem::Tx {
                tx: t.clone(),
                alert: false,
                blocked: false,
            });
        }
        let label = |t: &Transaction, fraud, previous| HistoryItem::Label {
            tx: t.clone(),
            fraud,
            previous,
        };
        b.feed(label(&history[2], true, None));
        b.feed(label(&history[5], true, None));
        b.feed(label(&history[5], false, Some(true)));
        b.feed(label(&history[0], true, None)); // outside the window
        let report = b.finish(0);
        assert_eq!(report.events_in_window, 4);
        assert_eq!(report.history_transactions, 6);
        assert_eq!(report.history_labels, 4);
        assert_eq!(report.fraud_labels_in_window, 1);
        assert_eq!(report.labelled_in_window.not_fraud, 1);
        let burst = &report.rules[0];
        assert_eq!(
            (
                burst.tally.hits,
                burst.tally.confirmed_fraud,
                burst.tally.unlabelled
            ),
            (1, 1, 0)
        );
        assert_eq!(burst.tally.samples, ["a3"]);
        let was = burst.active.as_ref().expect("in force");
        // a3 (2 before) and b2 (1 before).
        assert_eq!(
            (
                was.tally.hits,
                was.tally.confirmed_fraud,
                was.tally.unlabelled
            ),
            (2, 1, 1)
        );
        assert_eq!(was.tally.samples, ["b2", "a3"]);
        let new = &report.rules[1];
        assert!(new.active.is_none());
        assert_eq!(
            (
                new.tally.hits,
                new.tally.confirmed_fraud,
                new.tally.false_positives
            ),
            (2, 1, 1)
        );
    }

    #[tokio::test]
    async fn one_backtest_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Records::Sqlite(crate::store::sqlite::SqliteStore::open(dir.path()).expect("store"));
        let slot = Arc::new(Semaphore::new(1));
        let run_one = || {
            run(
                &slot,
                store.clone(),
                EngineConfig::default(),
                rules(""),
                rules(""),
                24,
            )
        };
        let held = slot.clone().try_acquire_owned().expect("free");
        assert!(matches!(run_one().await, Err(BacktestError::Busy)));
        drop(held);
        let report = run_one().await.expect("runs once the other is done");
        assert!(report.window.is_none());
        assert_eq!(slot.available_permits(), 1, "the slot is given back");
    }

    #[test]
    fn no_window_without_history() {
        let b = Backtest::new(EngineConfig::default(), rules(""), rules(""), None);
        let report = b.finish(3);
        assert_eq!(report.events_in_window, 0);
        assert!(report.window.is_none());
        assert_eq!(report.elapsed_ms, 3);
    }
}
