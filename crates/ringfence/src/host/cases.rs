//! The host's side of cases (see [`crate::cases`]): analyst actions, the label a verdict
//! becomes, and the audit trail every part of the server appends to.

use serde_json::Value;

use super::{now, EngineHost, HostError};
use crate::auth::Principal;
use crate::cases::{AuditEntry, Case, CaseBook, CaseError, Change, NewAudit, Verdict};
use crate::store::LabelRecord;

/// Why a case action failed.
#[derive(Debug, thiserror::Error)]
pub enum CaseActionError {
    /// The case refused the change (not found, or in the wrong state).
    #[error(transparent)]
    Case(#[from] CaseError),
    /// Storing the verdict's label failed; the close was taken back.
    #[error(transparent)]
    Label(#[from] HostError),
}

impl EngineHost {
    /// The cases store.
    pub fn cases(&self) -> &CaseBook {
        &self.cases
    }

    /// Appends an action to the audit trail: `who` did `action` (`<area>.<verb>`, e.g.
    /// `rule.activate`) on `target` (`<kind>:<id>`), with `detail`. For every part of the
    /// server that records what people do (cases, rules, keys).
    pub async fn audit(
        &self,
        who: &Principal,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<AuditEntry, HostError> {
        Ok(self
            .cases
            .audit(NewAudit::by(who, now(), action, target, detail))
            .await?)
    }

    /// Assigns (or reopens) a case: the change and its audit row, written together.
    pub async fn change_case(
        &self,
        id: i64,
        change: Change,
        who: &Principal,
    ) -> Result<Case, CaseActionError> {
        Ok(self.cases.apply(id, &change, who, now()).await?)
    }

    /// Closes a case with `verdict` and stores it as the transaction's label (source
    /// `analyst:<name>`), which feeds training and the ring features.
    ///
    /// The close is written first, so of two analysts closing at once exactly one gets here
    /// (the other is refused with a conflict) and only one label is stored. If the label then
    /// cannot be stored, the close is taken back (audited as `case.close_undone`) and the
    /// error returned: a closed case always has its label.
    pub async fn close_case(
        &self,
        id: i64,
        verdict: Verdict,
        note: Option<String>,
        who: &Principal,
    ) -> Result<(Case, LabelRecord), CaseActionError> {
        let change = Change::Close {
            verdict,
            note: note.clone(),
        };
        let closed = self.cases.apply(id, &change, who, now()).await?;
        let labelled = self
            .label(
                closed.transaction_id.clone(),
                verdict == Verdict::Fraud,
                Some(format!("analyst:{}", who.name)),
                note,
            )
            .await;
        match labelled {
            Ok(label) => Ok((closed, label)),
            Err(e) => {
                let undo = Change::UndoClose {
                    version: closed.version,
                    reason: e.to_string(),
                };
                if let Err(undo_error) = self.cases.apply(id, &undo, who, now()).await {
                    tracing::error!(case = id, error = %undo_error, label_error = %e, "a close whose label failed could not be taken back");
                }
                Err(e.into())
            }
        }
    }
}
