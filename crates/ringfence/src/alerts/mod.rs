//! Alerts leaving the engine: what an alert says ([`AlertEvent`]) and the sinks that carry it.
//!
//! An alert is written to the local store's outbox in the same commit as its decision, and
//! sinks deliver it from there: a sink never shows an alert the records do not have, and an
//! alert is not lost when the node stops (or crashes) before delivering it. Sinks run off the
//! request path, each from its own position in the outbox: a slow or unreachable receiver
//! delays its own alerts, never the decision or another sink.
//!
//! # Layout
//! - [`outbox`]: reading the outbox from a sink's durable position (shared by every sink).
//! - [`redis`]: the key layout and channels the fraud team's `redis-cli` already reads.
//! - [`webhook`]: POSTs to configured URLs, signed ([`sign`]), retried, dead-lettered.
//! - [`email`]: mails over SMTP, one per alert or one digest per interval.
//! - [`text`]: an alert in words (Slack text, mail subject and body).
//! - [`dead_letters`]: what could not be delivered, kept for a retry.
//! - [`deliveries`]: [`deliveries::AlertSinks`], every sink of a node together.
//! - [`settings`]: how webhooks and e-mail are configured.
//! - [`counters`]: delivery counters for `/metrics`.

pub mod counters;
pub mod dead_letters;
pub mod deliveries;
pub mod email;
pub mod outbox;
pub mod redis;
pub mod settings;
pub mod sign;
pub mod text;
pub mod webhook;

use ringfence_core::decision::{Action, Decision};
use ringfence_core::event::Transaction;
use ringfence_core::features::{FeatureValues, Num};
use serde::{Deserialize, Serialize};

/// One alert as the sinks publish it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The account the alert is about: the user, else the card (a token, never a card
    /// number), else `unknown`.
    pub sender_account_id: String,
    /// The account's transactions in the hour up to and including this one.
    pub velocity_count: u32,
    /// The account's alerts in the escalation window up to and including this one: the count
    /// the escalation ladder reads for the account's next transaction, and the value of
    /// `fraud:count:sender:<account>`.
    pub alert_count: u32,
    /// Amount of the transaction.
    pub amount: f64,
    /// Country of the transaction (ISO 3166), when known.
    pub region: Option<String>,
    /// Event time of the transaction, RFC 3339.
    pub alert_timestamp: String,
    /// The same instant in milliseconds since the Unix epoch.
    pub alert_time_ms: i64,
    /// Where the decision stands in the shared log (`<ms>-<seq>`, zero-padded so that text
    /// order is log order): the order the escalation ladder counted alerts in, which event
    /// times need not follow when nodes append concurrently. Absent for a decision made
    /// outside the log (degraded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_position: Option<String>,
    /// Kind of alert: the category of the strongest reason (`velocity`, `ring`, `model`,
    /// `return`, ...), `score` when only the total score decided.
    pub alert_type: String,
    /// The transaction.
    pub transaction_id: String,
    /// The decision taken.
    pub decision: Action,
    /// The score, 0..100.
    pub score: f64,
    /// Why, strongest first, in words.
    pub reasons: Vec<String>,
}

impl AlertEvent {
    /// The alert a decision raises, if it raises one (anything above approve), built from the
    /// features the decision was made on.
    pub fn of(tx: &Transaction, decision: &Decision, f: &FeatureValues<'_>) -> Option<AlertEvent> {
        if decision.decision <= Action::Approve {
            return None;
        }
        // The decision's account is the user, else the card: count the same entity.
        let hour_count = if tx.user_id.is_some() {
            f.get(Num::UserCount1h)
        } else {
            f.get(Num::CardCount1h)
        };
        let account = decision
            .account
            .clone()
            .unwrap_or_else(|| "unknown".to_owned());
        let velocity_count = if hour_count.is_finite() {
            hour_count as u32 + 1
        } else {
            1
        };
        let earlier_alerts = f.get(Num::AccountAlerts);
        let earlier_alerts = if earlier_alerts.is_finite() {
            earlier_alerts as u32
        } else {
            0
        };
        // An escalation-only decision is published but does not count (the ladder must not
        // feed itself), exactly as the engine counts it.
        let alert_count = earlier_alerts + u32::from(decision.alert);
        let alert_type = decision
            .reasons
            .first()
            .map_or_else(|| "score".to_owned(), |r| r.category.clone());
        Some(AlertEvent {
            sender_account_id: account,
            velocity_count,
            alert_count,
            amount: tx.amount,
            region: tx.country.clone(),
            alert_timestamp: tx.timestamp.to_rfc3339(),
            alert_time_ms: tx.timestamp.millis(),
            log_position: None,
            alert_type,
            transaction_id: decision.transaction_id.clone(),
            decision: decision.decision,
            score: decision.score,
            reasons: decision.reasons.iter().map(|r| r.detail.clone()).collect(),
        })
    }

    /// The alert of the decision at shared-log entry `ms-seq`.
    pub fn at_log_position(mut self, ms: u64, seq: u64) -> AlertEvent {
        self.log_position = Some(format!("{ms:020}-{seq:020}"));
        self
    }

    /// Channel-safe alert type: lower-case letters, digits, `_` and `-` only.
    pub fn channel_type(&self) -> String {
        let t: String = self
            .alert_type
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if t.is_empty() {
            "other".into()
        } else {
            t
        }
    }
}

/// An error with its causes, one after the other (`client error (Connect): tcp connect
/// error: Connection refused`). Neither hyper's nor lettre's errors carry URLs or
/// credentials, so this is safe to log and store.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
