//! Rules changed through the API: a new rule file validated, written and put in force; one
//! rule flipped between active and shadow by editing its `mode` line in the text in force.
//!
//! The file is the record of what runs, so a change is written to it before anyone could
//! restart into the old rules: the text goes to a temporary file beside it (synced), the rules
//! are put in force through the same path as a reload (with shared state, a log entry every
//! node switches at), and only then is the temporary file renamed over the old one. A crash
//! leaves the old file or the new one, never half of one. A node started without `--rules`
//! writes `<data>/rules.toml` and starts from it from then on (see `reload::rules_path`).
//!
//! Every change holds the host's rules-change lock, which the file watcher takes too: the
//! watcher never loads a file this module is in the middle of writing, nor loads it again.

use std::io::Write;
use std::path::{Path, PathBuf};

use ringfence_core::rules::{set_mode, EditError, RuleErrors, RuleMode, RuleSet};
use serde::Serialize;

use super::reload::{fingerprint, saved_rules_path};
use super::{EngineHost, HostError};

/// A rule set put in force through the API.
#[derive(Clone, Debug, Serialize)]
pub struct Activated {
    /// The rules version now in force.
    pub version: u64,
    /// How many rules it has.
    pub rules: usize,
    /// False when the text asked for was already in force (nothing was written).
    pub changed: bool,
}

/// Why a change of the rules was not made (or not saved).
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The rules do not compile; nothing changed.
    #[error("the rules have errors")]
    Invalid(RuleErrors),
    /// No rule in force has this name.
    #[error("no rule named `{0}` is in force")]
    NoSuchRule(String),
    /// The rule's text cannot be edited in place (an inline table).
    #[error("rule `{0}` cannot be edited in place")]
    NotEditable(String),
    /// The rules file could not be written. `in_force`: the rules run anyway (the rename
    /// failed after they were put in force) but a restart would bring the old file back.
    #[error("the rules file {path} could not be written: {cause}")]
    NotSaved {
        /// The file.
        path: PathBuf,
        /// The filesystem's error.
        cause: std::io::Error,
        /// Whether the new rules are in force regardless.
        in_force: bool,
    },
    /// The host could not put them in force (the shared log unreachable); nothing changed.
    #[error(transparent)]
    Host(#[from] HostError),
}

impl From<EditError> for ActivateError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::Invalid(errors) => ActivateError::Invalid(errors),
            EditError::NoSuchRule(name) => ActivateError::NoSuchRule(name),
            EditError::NotEditable(name) => ActivateError::NotEditable(name),
        }
    }
}

impl EngineHost {
    /// Validates `source` and puts it in force, written to the rules file. With
    /// `new_rules_mode`, rules that are not in force now (by name) get that mode first (an
    /// analyst trying new rules in shadow). Unchanged text is not written again.
    pub async fn activate_rules(
        &self,
        source: String,
        new_rules_mode: Option<RuleMode>,
    ) -> Result<Activated, ActivateError> {
        let _one_change_at_a_time = self.rules_edit.lock().await;
        let mut source = source;
        if let Some(mode) = new_rules_mode {
            let compiled = RuleSet::from_toml(&source).map_err(ActivateError::Invalid)?;
            let active = self.active_rules();
            for rule in compiled.rules() {
                if active.get(&rule.name).is_none() {
                    source = set_mode(&source, &rule.name, mode)?;
                }
            }
        }
        self.activate_locked(source).await
    }

    /// Sets one rule in force to `mode` by editing its `mode` line in the text in force
    /// (comments and layout kept), then activates that text.
    pub async fn set_rule_mode(
        &self,
        name: &str,
        mode: RuleMode,
    ) -> Result<Activated, ActivateError> {
        let _one_change_at_a_time = self.rules_edit.lock().await;
        let current = self.rules_source();
        if self.active_rules().get(name).is_none() {
            return Err(ActivateError::NoSuchRule(name.to_owned()));
        }
        let edited = set_mode(&current, name, mode)?;
        self.activate_locked(edited).await
    }

    /// Compiles, stages, puts in force, then commits the file; the caller holds the lock.
    async fn activate_locked(&self, source: String) -> Result<Activated, ActivateError> {
        let rules = RuleSet::from_toml(&source).map_err(ActivateError::Invalid)?;
        let n = rules.len();
        if *self.rules_source() == *source {
            let version = self.rules_status().version;
            return Ok(Activated {
                version,
                rules: n,
                changed: false,
            });
        }
        let path = self
            .rules_status()
            .path
            .clone()
            .unwrap_or_else(|| saved_rules_path(&self.settings.data));
        let not_saved = |cause, in_force| ActivateError::NotSaved {
            path: path.clone(),
            cause,
            in_force,
        };
        let staged = stage(&path, &source).map_err(|e| not_saved(e, false))?;
        if let Err(e) = self.put_rules_in_force(rules, source).await {
            let _ = std::fs::remove_file(&staged);
            return Err(e.into());
        }
        commit(&staged, &path).map_err(|e| not_saved(e, true))?;
        let mut status = self.rules_status();
        status.fingerprint = fingerprint(&path);
        status.path = Some(path);
        Ok(Activated {
            version: status.version,
            rules: n,
            changed: true,
        })
    }
}

/// Writes `text` to a temporary file beside `path` (with `path`'s permissions when it
/// exists) and syncs it; returns the temporary file.
fn stage(path: &Path, text: &str) -> std::io::Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map_or_else(|| "rules.toml".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    if let Ok(meta) = std::fs::metadata(path) {
        file.set_permissions(meta.permissions())?;
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(tmp)
}

/// Renames the staged file over `path` and syncs the directory, so the rename itself
/// survives a power cut.
fn commit(staged: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(staged, path)?;
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Best effort: some filesystems refuse to sync a directory, and the file is there.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_then_committing_replaces_the_file_and_keeps_its_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rules.toml");
        std::fs::write(&path, "old").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        }
        let staged = stage(&path, "new").expect("stage");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "old");
        commit(&staged, &path).expect("commit");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        assert!(!staged.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o640);
        }
    }

    #[test]
    fn staging_creates_the_directory_of_a_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data/rules.toml");
        let staged = stage(&path, "x").expect("stage");
        commit(&staged, &path).expect("commit");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "x");
    }
}
