//! A node's place in the shared log: it applies every entry to the node's engine in log
//! order, scoring each transaction exactly as a single node would have at that point, and
//! keeps the results of entries until the requests that own them collect them.

use std::collections::{HashMap, HashSet, VecDeque};

use ringfence_core::decision::Decision;
use ringfence_core::engine::{Engine, Scored};
use ringfence_core::event::Transaction;

use super::log::{LogEntry, LogId};

/// Transaction ids remembered for deduplication: a retry that reaches the log twice (two
/// nodes, or a client retrying elsewhere) is applied once, by every node alike.
const SEEN_IDS: usize = 1 << 20;
/// Decisions of the latest entries, kept for a second copy of the same transaction: if the
/// node that appended the first copy died before storing its record, the node holding the
/// second copy answers (and stores) the decision every node computed for the first.
const RECENT_DECISIONS: usize = 1 << 16;

/// What applying one log entry produced; `R` is what the caller keeps of a decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied<R> {
    /// A transaction scored and applied.
    Decided(R),
    /// A transaction whose id an earlier entry already carried: not applied again. Carries
    /// that entry's decision while it is among the latest remembered.
    Duplicate(Option<Decision>),
}

/// How far a node's engine has followed the log.
#[derive(Debug, Default)]
pub struct LogCursor {
    applied: LogId,
    seen: HashSet<Box<str>>,
    seen_order: VecDeque<Box<str>>,
    decisions: HashMap<Box<str>, Decision>,
    decisions_order: VecDeque<Box<str>>,
}

impl LogCursor {
    /// At the start of the log.
    pub fn new() -> LogCursor {
        LogCursor::default()
    }

    /// The last entry applied.
    pub fn position(&self) -> LogId {
        self.applied
    }

    /// Applies to `engine`, in order, the entries after this cursor's position and records
    /// what each entry of node `me` produced in `results` by log id (`keep` turns a scored
    /// transaction into what is kept of it). A node's concurrent requests each get a reply
    /// that ends with their own entries; whichever applies an entry first leaves its result
    /// for the request that owns it. Entries at or before the position are skipped.
    pub fn apply<R>(
        &mut self,
        engine: &mut Engine,
        me: u64,
        entries: &[(LogId, LogEntry)],
        results: &mut HashMap<LogId, Applied<R>>,
        mut keep: impl FnMut(&Transaction, Scored<'_>) -> R,
    ) {
        for (id, entry) in entries {
            if *id <= self.applied {
                continue;
            }
            self.applied = *id;
            match entry {
                LogEntry::Tx { tx, origin } => {
                    let key = tx.transaction_id.as_str();
                    let result = if self.seen.contains(key) {
                        Applied::Duplicate(self.decisions.get(key).cloned())
                    } else {
                        self.remember(key);
                        let scored = engine.score(tx);
                        self.keep_decision(key, &scored.decision);
                        if *origin != me {
                            continue;
                        }
                        Applied::Decided(keep(tx, scored))
                    };
                    if *origin == me {
                        results.insert(*id, result);
                    }
                }
                LogEntry::Label {
                    tx,
                    fraud,
                    previous,
                } => engine.apply_label(tx, *fraud, *previous),
            }
        }
    }

    fn keep_decision(&mut self, id: &str, decision: &Decision) {
        self.decisions.insert(id.into(), decision.clone());
        self.decisions_order.push_back(id.into());
        if self.decisions_order.len() > RECENT_DECISIONS {
            if let Some(old) = self.decisions_order.pop_front() {
                self.decisions.remove(&old);
            }
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
