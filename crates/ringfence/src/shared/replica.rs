//! A node's place in the shared log: it applies every entry to the node's engine in log
//! order, scoring each transaction exactly as a single node would have at that point, and
//! keeps the results of entries until the requests that own them collect them.
//!
//! Rules and models changes are log entries too, so every node switches at the same place
//! in the order. They are compiled before the engine lock is taken ([`prepare`]): parsing a
//! model of a thousand trees takes milliseconds, which no transaction should wait for.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ringfence_core::decision::Decision;
use ringfence_core::engine::{Engine, Models, Scored};
use ringfence_core::event::Transaction;
use ringfence_core::rules::RuleSet;
use serde::{Deserialize, Serialize};

use super::log::{LogEntry, LogId};

/// Transaction ids remembered for deduplication: a retry that reaches the log twice (two
/// nodes, or a client retrying elsewhere) is applied once, by every node alike.
const SEEN_IDS: usize = 1 << 20;
/// Decisions of the latest entries, kept for a second copy of the same transaction: if the
/// node that appended the first copy died before storing its record, the node holding the
/// second copy answers (and stores) the decision every node computed for the first.
const RECENT_DECISIONS: usize = 1 << 16;
/// Transaction ids a snapshot carries (the latest): a retry older than that is caught by the
/// records store's lookup instead, long since written by then.
const SNAPSHOT_SEEN: usize = 1 << 17;
/// Decisions a snapshot carries (the latest), for a second copy of a transaction whose first
/// copy's node died before storing it.
const SNAPSHOT_DECISIONS: usize = 1 << 12;

/// What applying one log entry produced; `R` is what the caller keeps of a decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied<R> {
    /// A transaction scored and applied.
    Decided(R),
    /// A transaction whose id an earlier entry already carried: not applied again. Carries
    /// that entry's decision while it is among the latest remembered.
    Duplicate(Option<Decision>),
}

/// A rules or models entry, compiled.
#[derive(Debug)]
pub enum Change {
    /// The rules to score with.
    Rules(Arc<RuleSet>),
    /// The models to score with.
    Models(Models),
}

/// Changes compiled ahead of applying them, by log id.
pub type Prepared = HashMap<LogId, Change>;

/// Compiles one rules or models entry (`None` for any other entry).
pub fn compile(entry: &LogEntry) -> Option<Result<Change, String>> {
    match entry {
        LogEntry::Rules { source } => Some(
            RuleSet::from_toml(source)
                .map(|r| Change::Rules(Arc::new(r)))
                .map_err(|e| e.to_string()),
        ),
        LogEntry::Models {
            champion,
            challenger,
        } => {
            let parse = |text: &Option<String>| {
                text.as_deref()
                    .map(|t| crate::models::parse(t).map(Arc::new))
                    .transpose()
            };
            Some((|| {
                Ok(Change::Models(Models {
                    champion: parse(champion)?,
                    challenger: parse(challenger)?,
                }))
            })())
        }
        LogEntry::Tx { .. } | LogEntry::Label { .. } => None,
    }
}

/// Compiles the rules and models entries among `entries` (call it outside the engine lock).
/// An entry that does not compile is left out: [`LogCursor::apply`] then skips it, as every
/// node running this build does.
pub fn prepare(entries: &[(LogId, LogEntry)]) -> Prepared {
    entries
        .iter()
        .filter_map(|(id, e)| match compile(e)? {
            Ok(change) => Some((*id, change)),
            Err(error) => {
                tracing::error!(entry = %id, %error, "a rules or models entry in the shared log does not compile; skipping it");
                None
            }
        })
        .collect()
}

/// A champion's and a challenger's model text (`None`: no model).
pub type ModelTexts = (Option<Arc<str>>, Option<Arc<str>>);

/// The texts of the rules and models the log set last (what a snapshot must carry, and how
/// a starting node tells whether the log has chosen any).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sources {
    /// The rules' TOML, once a rules entry was applied.
    pub rules: Option<Arc<str>>,
    /// Champion and challenger texts, once a models entry was applied.
    pub models: Option<ModelTexts>,
}

/// A cursor as a snapshot carries it (JSON: small next to the engine's state).
#[derive(Serialize, Deserialize)]
pub struct CursorImage {
    applied: String,
    rules: Option<String>,
    models: Option<(Option<String>, Option<String>)>,
    seen: Vec<Box<str>>,
    decisions: Vec<(Box<str>, Decision)>,
}

impl CursorImage {
    /// The bytes a snapshot stores.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(self).map_err(|e| e.to_string())
    }
}

/// A snapshot's cursor with its rules and models compiled: everything but the engine state,
/// made ready outside the engine lock.
pub struct RestoredCursor {
    /// The cursor at the snapshot's position.
    pub cursor: LogCursor,
    /// The rules in force at that position, if the log had set any.
    pub rules: Option<Arc<RuleSet>>,
    /// The models in force at that position, if the log had set any.
    pub models: Option<Models>,
}

/// What applying entries did besides changing state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Entries applied (those at or before the cursor's position are skipped, not counted).
    pub applied: u64,
    /// A rules entry was applied.
    pub rules: bool,
    /// A models entry was applied.
    pub models: bool,
}

/// How far a node's engine has followed the log.
#[derive(Debug, Default)]
pub struct LogCursor {
    applied: LogId,
    sources: Sources,
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

    /// The rules and models texts the log set last.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The cursor as a snapshot carries it: position, rules and models texts, and the latest
    /// transaction ids and decisions (for deduplication after a restore). A copy: encode it
    /// with [`CursorImage::to_bytes`] away from the engine lock.
    pub fn image(&self) -> CursorImage {
        let text = |t: &Option<Arc<str>>| t.as_deref().map(str::to_owned);
        let seen_from = self.seen_order.len().saturating_sub(SNAPSHOT_SEEN);
        let decided_from = self
            .decisions_order
            .len()
            .saturating_sub(SNAPSHOT_DECISIONS);
        let image = CursorImage {
            applied: self.applied.to_string(),
            rules: text(&self.sources.rules),
            models: self
                .sources
                .models
                .as_ref()
                .map(|(c, ch)| (text(c), text(ch))),
            seen: self.seen_order.iter().skip(seen_from).cloned().collect(),
            decisions: self
                .decisions_order
                .iter()
                .skip(decided_from)
                .filter_map(|id| Some((id.clone(), self.decisions.get(id)?.clone())))
                .collect(),
        };
        image
    }

    /// Reads a cursor image back and compiles its rules and models.
    pub fn from_image(bytes: &[u8]) -> Result<RestoredCursor, String> {
        let image: CursorImage =
            serde_json::from_slice(bytes).map_err(|e| format!("snapshot cursor: {e}"))?;
        let mut cursor = LogCursor {
            applied: image
                .applied
                .parse()
                .map_err(|e: super::log::LogError| e.to_string())?,
            ..LogCursor::default()
        };
        for id in &image.seen {
            cursor.remember(id);
        }
        for (id, decision) in &image.decisions {
            cursor.keep_decision(id, decision);
        }
        let rules = match &image.rules {
            Some(source) => match compile(&LogEntry::Rules {
                source: source.clone(),
            }) {
                Some(Ok(Change::Rules(r))) => Some(r),
                _ => return Err("the snapshot's rules do not compile".into()),
            },
            None => None,
        };
        let models = match &image.models {
            Some((champion, challenger)) => match compile(&LogEntry::Models {
                champion: champion.clone(),
                challenger: challenger.clone(),
            }) {
                Some(Ok(Change::Models(m))) => Some(m),
                _ => return Err("the snapshot's models do not load".into()),
            },
            None => None,
        };
        cursor.sources = Sources {
            rules: image.rules.as_deref().map(Arc::from),
            models: image
                .models
                .as_ref()
                .map(|(c, ch)| (c.as_deref().map(Arc::from), ch.as_deref().map(Arc::from))),
        };
        Ok(RestoredCursor {
            cursor,
            rules,
            models,
        })
    }

    /// Applies to `engine`, in order, the entries after this cursor's position and records
    /// what each entry of node `me` produced in `results` by log id (`keep` turns a scored
    /// transaction, with its log id, into what is kept of it). A node's concurrent requests each get a reply
    /// that ends with their own entries; whichever applies an entry first leaves its result
    /// for the request that owns it. Entries at or before the position are skipped. Rules
    /// and models entries take their compiled form from `prepared` (compiled here if absent).
    pub fn apply<R>(
        &mut self,
        engine: &mut Engine,
        me: u64,
        entries: &[(LogId, LogEntry)],
        prepared: &mut Prepared,
        results: &mut HashMap<LogId, Applied<R>>,
        keep: impl FnMut(LogId, &Transaction, Scored<'_>) -> R,
    ) -> Reconfigured {
        self.apply_observing(engine, me, entries, prepared, results, keep, |_, _| {})
    }

    /// [`LogCursor::apply`], also showing `foreign` every transaction another node appended
    /// with the decision this engine reached for it (the one its node stored: every node
    /// decides alike), for the live feed.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_observing<R>(
        &mut self,
        engine: &mut Engine,
        me: u64,
        entries: &[(LogId, LogEntry)],
        prepared: &mut Prepared,
        results: &mut HashMap<LogId, Applied<R>>,
        mut keep: impl FnMut(LogId, &Transaction, Scored<'_>) -> R,
        mut foreign: impl FnMut(&Transaction, &Decision),
    ) -> Reconfigured {
        let mut reconfigured = Reconfigured::default();
        for (id, entry) in entries {
            if *id <= self.applied {
                continue;
            }
            self.applied = *id;
            reconfigured.applied += 1;
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
                            foreign(tx, &scored.decision);
                            continue;
                        }
                        Applied::Decided(keep(*id, tx, scored))
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
                LogEntry::Rules { .. } | LogEntry::Models { .. } => {
                    let change = match prepared.remove(id) {
                        Some(c) => c,
                        None => match compile(entry) {
                            Some(Ok(c)) => c,
                            _ => continue,
                        },
                    };
                    match (change, entry) {
                        (Change::Rules(rules), LogEntry::Rules { source }) => {
                            engine.set_rules(rules);
                            self.sources.rules = Some(source.as_str().into());
                            reconfigured.rules = true;
                        }
                        (
                            Change::Models(models),
                            LogEntry::Models {
                                champion,
                                challenger,
                            },
                        ) => {
                            engine.set_models(models);
                            let text = |t: &Option<String>| t.as_deref().map(Arc::<str>::from);
                            self.sources.models = Some((text(champion), text(challenger)));
                            reconfigured.models = true;
                        }
                        // A prepared change filed under another entry's id: cannot happen
                        // with `prepare`; skip rather than apply the wrong thing.
                        _ => {}
                    }
                }
            }
        }
        reconfigured
    }

    /// Puts a restored cursor in force on `engine`: its rules, its models, and the snapshot's
    /// entity state (`state`, from [`Engine::snapshot`]). On error nothing changed.
    pub fn install(
        restored: RestoredCursor,
        engine: &mut Engine,
        state: &[u8],
    ) -> Result<LogCursor, String> {
        engine.restore(state).map_err(|e| e.to_string())?;
        if let Some(rules) = restored.rules {
            engine.set_rules(rules);
        }
        if let Some(models) = restored.models {
            engine.set_models(models);
        }
        Ok(restored.cursor)
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
