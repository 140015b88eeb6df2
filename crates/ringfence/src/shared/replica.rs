//! A node's replica of the engine, kept in step with the shared log: it applies every entry
//! in log order, scoring each transaction exactly as a single node would have at that point,
//! and keeps the decisions of the transactions this node is waiting to answer.

use std::collections::{HashMap, HashSet, VecDeque};

use ringfence_core::decision::Decision;
use ringfence_core::engine::Engine;

use super::log::{LogEntry, LogId};

/// Transaction ids remembered for deduplication: a retry that reaches the log twice (two
/// nodes, or a client retrying elsewhere) is applied once, by every replica alike.
const SEEN_IDS: usize = 1 << 20;

/// What applying one log entry produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// A transaction scored and applied.
    Decided(Decision),
    /// A transaction whose id an earlier entry already carried: not applied again.
    Duplicate,
    /// A label applied.
    Labelled,
}

/// The engine and its position in the log.
pub struct Replica {
    engine: Engine,
    applied: LogId,
    seen: HashSet<Box<str>>,
    seen_order: VecDeque<Box<str>>,
}

impl Replica {
    /// A replica that has applied nothing.
    pub fn new(engine: Engine) -> Replica {
        Replica {
            engine,
            applied: LogId::START,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// The last entry applied.
    pub fn position(&self) -> LogId {
        self.applied
    }

    /// The engine (for reads: entity features, stats).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Applies, in order, the entries after this replica's position, and records what each
    /// produced in `results` by log id: a node's concurrent requests each get a reply that
    /// ends with their own entries, and whichever applies an entry first leaves its result
    /// there for the request that owns it. Entries at or before the position are skipped.
    pub fn apply(&mut self, entries: &[(LogId, LogEntry)], results: &mut HashMap<LogId, Applied>) {
        for (id, entry) in entries {
            if *id <= self.applied {
                continue;
            }
            let result = match entry {
                LogEntry::Tx { tx } => {
                    let key = tx.transaction_id.as_str();
                    if self.seen.contains(key) {
                        Applied::Duplicate
                    } else {
                        self.remember(key);
                        Applied::Decided(self.engine.score(tx).decision)
                    }
                }
                LogEntry::Label {
                    tx,
                    fraud,
                    previous,
                } => {
                    self.engine.apply_label(tx, *fraud, *previous);
                    Applied::Labelled
                }
            };
            results.insert(*id, result);
            self.applied = *id;
        }
    }

    fn remember(&mut self, id: &str) {
        self.seen.insert(id.into());
        self.seen_order.push_back(id.into());
        if self.seen_order.len() > SEEN_IDS {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}
