//! Rules and models: loading them at start, hot reloads, and what the API shows of them.
//!
//! On one node a reload swaps the engine's rules or models between two transactions. With
//! shared state a reload is a log entry carrying the file's text instead: every node switches
//! at the same place in the log order, so each transaction is scored under the same rules on
//! every node, which is what deciding "as one node would" requires. At start the log's latest
//! rules and models win over a node's own files (the first node to start puts its own in the
//! log); a node's file counts again when it changes, and the node then appends it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ringfence_core::engine::{Engine, Models};
use ringfence_core::event::Timestamp;
use ringfence_core::rules::{RuleError, RuleErrors, RuleMode, RuleSet};
use serde::Serialize;

use super::{now, EngineHost, HostError, SharedState, StartError, DEFAULT_RULES};
use crate::shared::log::{LogEntry, LogId};
use crate::shared::replica::{self, Applied, Change, LogCursor};

/// How long a reload waits for the shared log before giving up (reloads are rare and not on
/// any transaction's path, so this is far above the per-request budget).
const RELOAD_BUDGET: Duration = Duration::from_secs(5);

/// The state of the rules: where they come from and how the last load went.
#[derive(Clone, Debug, Serialize)]
pub struct RulesStatus {
    /// Rules file, if any (built-in defaults otherwise).
    pub path: Option<PathBuf>,
    /// Increments every time a rule set is put in force (with shared state: by any node).
    pub version: u64,
    /// When the active rules were put in force.
    pub loaded_at: Timestamp,
    /// The errors of the last failed load, if the last load failed.
    pub last_error: Option<RuleErrors>,
    #[serde(skip)]
    pub(super) fingerprint: Option<(SystemTime, u64)>,
    /// The text of the rules in force on this node (with shared state, the log's is used).
    #[serde(skip)]
    pub(super) source: Arc<str>,
}

/// The state of the models: which files, how the last load went.
#[derive(Clone, Debug, Serialize)]
pub struct ModelsStatus {
    /// Champion model file.
    pub champion: Option<PathBuf>,
    /// Challenger model file.
    pub challenger: Option<PathBuf>,
    /// Increments every time models are put in force (with shared state: by any node).
    pub version: u64,
    /// When the active models were put in force.
    pub loaded_at: Timestamp,
    /// The error of the last failed load, if the last load failed.
    pub last_error: Option<String>,
    #[serde(skip)]
    pub(super) fingerprints: [Option<(SystemTime, u64)>; 2],
}

/// Champion and challenger file texts.
pub(super) type ModelTexts = (Option<String>, Option<String>);

/// Loads the configured champion and challenger, with their texts.
pub(super) fn load_models(
    champion: Option<&Path>,
    challenger: Option<&Path>,
) -> Result<(Models, ModelTexts), String> {
    let load = |p: Option<&Path>| -> Result<(Option<Arc<_>>, Option<String>), String> {
        match p {
            None => Ok((None, None)),
            Some(p) => crate::models::load_text(p).map(|(m, t)| (Some(Arc::new(m)), Some(t))),
        }
    };
    let (champion, champion_text) = load(champion)?;
    let (challenger, challenger_text) = load(challenger)?;
    Ok((
        Models {
            champion,
            challenger,
        },
        (champion_text, challenger_text),
    ))
}

/// Modification time and length: enough to notice an edited or replaced file.
pub(super) fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Where a node without `--rules` keeps the rules activated through the API: in its data
/// directory, read at the next start instead of the built-in defaults.
pub(super) fn saved_rules_path(data: &Path) -> PathBuf {
    data.join("rules.toml")
}

/// The rules file a node starts from: `--rules`, else the one saved in the data directory by
/// an earlier activation, else none (the built-in defaults).
pub(super) fn rules_path(configured: Option<&Path>, data: &Path) -> Option<PathBuf> {
    configured
        .map(Path::to_path_buf)
        .or_else(|| Some(saved_rules_path(data)).filter(|p| p.is_file()))
}

/// Loads the rules at start, with their text.
pub(super) fn load_rules(path: Option<&Path>) -> Result<(RuleSet, String), StartError> {
    let (name, source) = match path {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|source| StartError::RulesRead {
                path: p.to_owned(),
                source,
            })?,
        ),
        None => (
            "<built-in default rules>".to_string(),
            DEFAULT_RULES.to_string(),
        ),
    };
    let rules =
        RuleSet::from_toml(&source).map_err(|errors| StartError::Rules { path: name, errors })?;
    Ok((rules, source))
}

/// Shared-state mode at start, once the engine has followed the whole log: adopts the rules
/// and models the log chose last, or, when it chose none yet (the first node ever), appends
/// this node's own so that every node scores with the same.
pub(super) async fn settle_in_log(
    shared: &SharedState,
    engine: &mut Engine,
    cursor: &mut LogCursor,
    rules_source: String,
    model_texts: ModelTexts,
) -> Result<(), StartError> {
    let mut entries = Vec::new();
    match &cursor.sources().rules {
        None => entries.push(LogEntry::Rules {
            source: rules_source,
        }),
        Some(log) if **log != *rules_source => tracing::warn!(
            "this node's rules differ from those in force in the shared log; following the log until the rules file changes"
        ),
        Some(_) => {}
    }
    match &cursor.sources().models {
        None => entries.push(LogEntry::Models {
            champion: model_texts.0,
            challenger: model_texts.1,
        }),
        Some((champion, challenger))
            if champion.as_deref() != model_texts.0.as_deref()
                || challenger.as_deref() != model_texts.1.as_deref() =>
        {
            tracing::warn!(
                "this node's model files differ from the models in force in the shared log; following the log until a model file changes"
            )
        }
        Some(_) => {}
    }
    if entries.is_empty() {
        return Ok(());
    }
    let returned = shared
        .log
        .append(cursor.position(), &entries)
        .await
        .map_err(|e| StartError::Shared(e.to_string()))?;
    let mut prepared = replica::prepare(&returned);
    let mut none = HashMap::<LogId, Applied<()>>::new();
    cursor.apply(
        engine,
        shared.node,
        &returned,
        &mut prepared,
        &mut none,
        |_, _, _| (),
    );
    Ok(())
}

impl EngineHost {
    pub(super) fn rules_status(&self) -> std::sync::MutexGuard<'_, RulesStatus> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn models_status(&self) -> std::sync::MutexGuard<'_, ModelsStatus> {
        self.models.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that a rule set was put in force (here, or by another node through the log).
    pub(super) fn rules_switched(&self) {
        let n = self.lock().engine.rules().len();
        let mut status = self.rules_status();
        status.version += 1;
        status.loaded_at = now();
        status.last_error = None;
        self.metrics.rule_reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(rules = n, version = status.version, "rules in force");
    }

    /// Records that models were put in force (here, or by another node through the log).
    pub(super) fn models_switched(&self) {
        let mut status = self.models_status();
        status.version += 1;
        status.loaded_at = now();
        status.last_error = None;
        tracing::info!(version = status.version, "models in force");
    }

    /// The rules status as it is now.
    pub fn rules_status_snapshot(&self) -> RulesStatus {
        self.rules_status().clone()
    }

    /// The text of the rules in force (with shared state, the one the log put in force).
    pub fn rules_source(&self) -> Arc<str> {
        if self.shared.is_some() {
            if let Some(source) = self.lock().cursor.sources().rules.clone() {
                return source;
            }
        }
        self.rules_status().source.clone()
    }

    /// The rules in force.
    pub fn active_rules(&self) -> Arc<RuleSet> {
        self.lock().engine.rules().clone()
    }

    /// Puts compiled rules in force: here, or with shared state on every node through the
    /// log (`Err` when the log is unreachable: nothing changed).
    pub(super) async fn put_rules_in_force(
        &self,
        rules: RuleSet,
        source: String,
    ) -> Result<(), HostError> {
        let rules = Arc::new(rules);
        match &self.shared {
            None => {
                self.lock().engine.set_rules(rules);
                self.rules_status().source = source.into();
                self.rules_switched();
            }
            Some(shared) => {
                self.append_change(shared, LogEntry::Rules { source }, Change::Rules(rules))
                    .await?
            }
        }
        Ok(())
    }

    /// Shared-state mode: appends one rules or models entry (already compiled as `change`)
    /// and applies the log up to it.
    async fn append_change(
        &self,
        shared: &SharedState,
        entry: LogEntry,
        change: Change,
    ) -> Result<(), HostError> {
        let position = self.lock().cursor.position();
        let append = shared.log.append(position, std::slice::from_ref(&entry));
        let returned = match tokio::time::timeout(RELOAD_BUDGET, append).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shared log unreachable: reload not applied");
                return Err(HostError::SharedUnavailable);
            }
            Err(_) => {
                tracing::warn!("shared log too slow: reload not applied");
                return Err(HostError::SharedUnavailable);
            }
        };
        let ours = returned.len().saturating_sub(1);
        let mut prepared = replica::prepare(&returned[..ours]);
        if let Some((id, _)) = returned.last() {
            prepared.insert(*id, change);
        }
        self.apply_log(shared, &returned, prepared);
        Ok(())
    }

    /// Re-reads the rules file and puts it in force (with shared state, on every node through
    /// the log). `Ok(Err(errors))`: the file does not compile; the running rules stay and the
    /// errors are kept for `GET /v1/rules`.
    pub async fn reload_rules(&self) -> Result<Result<usize, RuleErrors>, HostError> {
        let _one_change_at_a_time = self.rules_edit.lock().await;
        self.reload_rules_locked().await
    }

    /// [`Self::reload_rules`], with the rules-change lock held by the caller.
    async fn reload_rules_locked(&self) -> Result<Result<usize, RuleErrors>, HostError> {
        let path = self.rules_status().path.clone();
        let source = match &path {
            None => Ok(DEFAULT_RULES.to_owned()),
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                RuleErrors(vec![RuleError {
                    rule: None,
                    line: 0,
                    column: 0,
                    message: format!("cannot read {}: {e}", p.display()),
                }])
            }),
        };
        let compiled = source.and_then(|s| RuleSet::from_toml(&s).map(|r| (r, s)));
        self.rules_status().fingerprint = path.as_deref().and_then(fingerprint);
        let (rules, source) = match compiled {
            Ok(r) => r,
            Err(errors) => {
                self.metrics
                    .rule_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(errors = %errors, "rules reload failed; keeping the running rules");
                self.rules_status().last_error = Some(errors.clone());
                return Ok(Err(errors));
            }
        };
        let n = rules.len();
        self.put_rules_in_force(rules, source).await?;
        Ok(Ok(n))
    }

    /// Reloads the rules if the file changed since the last load (called periodically). The
    /// check is made under the rules-change lock, so a file the API has just written and put
    /// in force is not loaded a second time.
    pub async fn reload_rules_if_changed(&self) {
        let _one_change_at_a_time = self.rules_edit.lock().await;
        let changed = {
            let status = self.rules_status();
            match &status.path {
                Some(p) => fingerprint(p) != status.fingerprint,
                None => false,
            }
        };
        if changed {
            let _ = self.reload_rules_locked().await;
        }
    }

    /// Re-reads the model files, each on its own, and puts them in force (with shared state,
    /// on every node through the log). A file that fails to load keeps its running model and
    /// its error is returned as `Ok(Err(..))`; the other file is still swapped. Files are
    /// read and parsed off the async workers and outside every lock.
    pub async fn reload_models(&self) -> Result<Result<u64, String>, HostError> {
        let (champion_path, challenger_path) = {
            let s = self.models_status();
            (s.champion.clone(), s.challenger.clone())
        };
        let fingerprints = [
            champion_path.as_deref().and_then(fingerprint),
            challenger_path.as_deref().and_then(fingerprint),
        ];
        let loaded = tokio::task::spawn_blocking(move || {
            let load = |p: &Option<PathBuf>| p.as_deref().map(crate::models::load_text);
            (load(&champion_path), load(&challenger_path))
        })
        .await;
        let (champion, challenger) = match loaded {
            Ok(pair) => pair,
            Err(e) => return Ok(Err(format!("model loading stopped: {e}"))),
        };
        let (mut models, mut texts) = {
            let locked = self.lock();
            let texts = locked.cursor.sources().models.clone().unwrap_or_default();
            (locked.engine.models().clone(), texts)
        };
        let mut errors = Vec::new();
        let mut loaded_any = false;
        for (result, model, text) in [
            (champion, &mut models.champion, &mut texts.0),
            (challenger, &mut models.challenger, &mut texts.1),
        ] {
            match result {
                Some(Ok((m, t))) => {
                    *model = Some(Arc::new(m));
                    *text = Some(t.into());
                    loaded_any = true;
                }
                Some(Err(e)) => errors.push(e),
                None => {}
            }
        }
        self.models_status().fingerprints = fingerprints;
        if loaded_any || errors.is_empty() {
            match &self.shared {
                None => {
                    self.lock().engine.set_models(models);
                    self.models_switched();
                }
                Some(shared) => {
                    let text = |t: Option<Arc<str>>| t.map(|t| t.to_string());
                    let entry = LogEntry::Models {
                        champion: text(texts.0),
                        challenger: text(texts.1),
                    };
                    self.append_change(shared, entry, Change::Models(models))
                        .await?;
                }
            }
        }
        let mut status = self.models_status();
        if errors.is_empty() {
            Ok(Ok(status.version))
        } else {
            let e = errors.join("; ");
            tracing::error!(error = %e, "model reload failed for a file; its running model stays");
            status.last_error = Some(e.clone());
            Ok(Err(e))
        }
    }

    /// Reloads the models if a model file changed since the last load (called periodically).
    pub async fn reload_models_if_changed(&self) {
        let changed = {
            let s = self.models_status();
            let now = [
                s.champion.as_deref().and_then(fingerprint),
                s.challenger.as_deref().and_then(fingerprint),
            ];
            (s.champion.is_some() || s.challenger.is_some()) && now != s.fingerprints
        };
        if changed {
            let _ = self.reload_models().await;
        }
    }

    /// The models status and a description of each loaded model.
    pub fn models_view(&self) -> serde_json::Value {
        let status = self.models_status().clone();
        let locked = self.lock();
        let models = locked.engine.models();
        serde_json::json!({
            "status": status,
            "policy": locked.engine.config().model,
            "champion": models.champion.as_deref().map(crate::models::describe),
            "challenger": models.challenger.as_deref().map(crate::models::describe),
        })
    }

    /// The rules status and the active rules with their hit counts, and those counts summed
    /// by mode: shadow hits are matches that changed no decision, shown apart so nobody reads
    /// them as alerts raised.
    pub fn rules_view(&self) -> serde_json::Value {
        let status = self.rules_status().clone();
        let locked = self.lock();
        let mut totals = [0u64; 2];
        for (r, hits) in locked
            .engine
            .rules()
            .rules()
            .iter()
            .zip(locked.engine.rule_hits())
        {
            totals[usize::from(r.mode == RuleMode::Shadow)] += hits;
        }
        let rules: Vec<_> = locked
            .engine
            .rules()
            .rules()
            .iter()
            .zip(locked.engine.rule_hits())
            .map(|(r, hits)| {
                serde_json::json!({
                    "name": r.name,
                    "description": r.description,
                    "category": r.category,
                    "when": r.when,
                    "score": r.weight,
                    "action": r.action,
                    "reason": r.reason,
                    "mode": r.mode,
                    "features": r.features(),
                    "hits": hits,
                })
            })
            .collect();
        serde_json::json!({
            "status": status,
            "rules": rules,
            "hits": { "active": totals[0], "shadow": totals[1] },
        })
    }
}
