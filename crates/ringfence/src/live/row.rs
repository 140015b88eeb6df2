//! One decided transaction as the live feed shows it ([`LiveRow`]), the alert the alert
//! stream carries for it, and what a feed client filters on ([`LiveFilter`]).
//!
//! A row is built from the transaction and its decision before the record goes to the
//! writer (the transaction moves there), so it holds copies of the few fields a feed shows:
//! ids, times, kind, amount, merchant and store, the decision with its top reason, the
//! engine's time and the deciding site. The card appears only as the card entity, which is
//! the client's card id or the keyed token of the card number (parsing never lets a card
//! number through).

use std::sync::Arc;

use ringfence_core::decision::{Action, Reason};
use ringfence_core::event::{EntityId, Timestamp, Transaction};
use serde::Serialize;

use crate::store::DecisionRecord;

/// A decided transaction in the live feed.
#[derive(Clone, Debug, Serialize)]
pub struct LiveRow {
    /// The transaction.
    pub transaction_id: String,
    /// Event time.
    pub timestamp: Timestamp,
    /// Wall-clock time of the decision (at the deciding site).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Timestamp>,
    /// `payment`, `purchase`, `return` or `refund`.
    pub kind: &'static str,
    /// Amount in major units.
    pub amount: f64,
    /// ISO 4217 code, when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Merchant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// Store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// Till.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    /// Customer account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The card entity: a client's card id or the card number's keyed token, never a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
    /// The decision.
    pub decision: Action,
    /// 0..=100.
    pub score: f64,
    /// The strongest reason, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The rule behind the strongest reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Engine time of the decision, microseconds (at the deciding site).
    pub processing_us: u64,
    /// The site that decided it (sites mode).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "shared_text"
    )]
    pub site: Option<Arc<str>>,
    /// Decided at another site and replicated here.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replicated: bool,
    /// Decided on this node's own state while the shared state was unreachable.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

/// Serialises a shared name (serde's `rc` feature is not on: one name needs no more).
fn shared_text<S: serde::Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(t) => s.serialize_str(t),
        None => s.serialize_none(),
    }
}

fn text(id: &Option<EntityId>) -> Option<String> {
    id.as_ref().map(|i| i.as_str().to_owned())
}

impl LiveRow {
    /// The row of `tx` decided as `d`, at `site` (`replicated` when it was decided elsewhere).
    pub fn of(
        tx: &Transaction,
        d: &DecisionRecord,
        site: Option<Arc<str>>,
        replicated: bool,
    ) -> LiveRow {
        let top = d.decision.reasons.first();
        LiveRow {
            transaction_id: tx.transaction_id.as_str().to_owned(),
            timestamp: tx.timestamp,
            decided_at: d.decided_at,
            kind: tx.kind.as_str(),
            amount: tx.amount,
            currency: tx.currency.clone(),
            merchant: text(&tx.merchant),
            store_id: text(&tx.store_id),
            terminal_id: text(&tx.terminal_id),
            user_id: text(&tx.user_id),
            card: text(&tx.card_id),
            decision: d.decision.decision,
            score: d.decision.score,
            reason: top.map(|r| r.detail.clone()),
            rule: top.map(|r| r.rule.clone()),
            processing_us: d.processing_us,
            site,
            replicated,
            degraded: d.degraded,
        }
    }
}

/// An alert as `GET /v1/stream/alerts` sends it: the fields of a stored alert row (`GET
/// /v1/alerts`) but its id, which the store assigns later, plus where it happened.
#[derive(Serialize)]
pub struct AlertOut<'a> {
    /// The transaction that raised it.
    pub transaction_id: &'a str,
    /// Its event time.
    pub timestamp: Timestamp,
    /// The account (user, else card).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<&'a str>,
    /// The decision.
    pub decision: Action,
    /// The score.
    pub score: f64,
    /// Category of the strongest reason (`score` when only the total decided).
    pub category: &'a str,
    /// Amount.
    pub amount: f64,
    /// Every reason, strongest first.
    pub reasons: &'a [Reason],
    /// `payment`, `purchase`, `return` or `refund`.
    pub kind: &'static str,
    /// Merchant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant: Option<&'a str>,
    /// Store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<&'a str>,
    /// The site that decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<&'a str>,
    /// Wall-clock time of the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Timestamp>,
}

impl<'a> AlertOut<'a> {
    /// The alert of `tx` decided as `d`, if the decision raises one (anything above approve:
    /// what the store queues for analysts).
    pub fn of(tx: &'a Transaction, d: &'a DecisionRecord, site: Option<&'a str>) -> Option<Self> {
        let dec = &d.decision;
        if dec.decision <= Action::Approve {
            return None;
        }
        Some(AlertOut {
            transaction_id: tx.transaction_id.as_str(),
            timestamp: tx.timestamp,
            account: dec.account.as_deref(),
            decision: dec.decision,
            score: dec.score,
            category: dec.reasons.first().map_or("score", |r| r.category.as_str()),
            amount: tx.amount,
            reasons: &dec.reasons,
            kind: tx.kind.as_str(),
            merchant: tx.merchant.as_ref().map(EntityId::as_str),
            store_id: tx.store_id.as_ref().map(EntityId::as_str),
            site,
            decided_at: d.decided_at,
        })
    }
}

/// What a feed client asked to see (the query of `GET /v1/stream/transactions`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveFilter {
    /// Only these decisions (indexed as [`Action::ALL`]); `None` for all.
    pub decisions: Option<[bool; 4]>,
    /// Only this store.
    pub store: Option<String>,
    /// Only amounts at or above.
    pub min_amount: Option<f64>,
    /// Only amounts at or below.
    pub max_amount: Option<f64>,
}

impl LiveFilter {
    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        *self == LiveFilter::default()
    }

    /// Whether a row with these fields passes.
    pub fn matches(&self, decision: Action, store: Option<&str>, amount: f64) -> bool {
        if let Some(d) = &self.decisions {
            if !d[decision as usize] {
                return false;
            }
        }
        if let Some(s) = &self.store {
            if store != Some(s.as_str()) {
                return false;
            }
        }
        self.min_amount.is_none_or(|m| amount >= m) && self.max_amount.is_none_or(|m| amount <= m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_checks_each_field_it_has() {
        let all = LiveFilter::default();
        assert!(all.is_empty());
        assert!(all.matches(Action::Approve, None, 5.0));
        let blocks_at_a = LiveFilter {
            decisions: Some([false, false, false, true]),
            store: Some("a".into()),
            min_amount: Some(10.0),
            max_amount: Some(100.0),
        };
        assert!(blocks_at_a.matches(Action::Block, Some("a"), 10.0));
        assert!(blocks_at_a.matches(Action::Block, Some("a"), 100.0));
        assert!(!blocks_at_a.matches(Action::Approve, Some("a"), 50.0));
        assert!(!blocks_at_a.matches(Action::Block, Some("b"), 50.0));
        assert!(!blocks_at_a.matches(Action::Block, None, 50.0));
        assert!(!blocks_at_a.matches(Action::Block, Some("a"), 9.99));
        assert!(!blocks_at_a.matches(Action::Block, Some("a"), 100.01));
    }
}
