//! Decisions: the action taken, the score behind it and the reasons that explain it.

use serde::{Deserialize, Serialize};

/// What the caller should do with the transaction. Ordered from least to most severe, so the
/// strictest of several candidate actions is their maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it through.
    Approve,
    /// Let it through but queue it for an analyst.
    Review,
    /// Step up authentication (e.g. 3-D Secure) before approving.
    Challenge,
    /// Decline it.
    Block,
}

impl Action {
    /// Every action, least severe first.
    pub const ALL: [Action; 4] = [
        Action::Approve,
        Action::Review,
        Action::Challenge,
        Action::Block,
    ];

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Review => "review",
            Action::Challenge => "challenge",
            Action::Block => "block",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Score thresholds that turn a 0..100 score into an action.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Scores at or above this are reviewed.
    pub review: f64,
    /// Scores at or above this are challenged.
    pub challenge: f64,
    /// Scores at or above this are blocked.
    pub block: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            review: 50.0,
            challenge: 70.0,
            block: 85.0,
        }
    }
}

impl Thresholds {
    /// The action a score maps to.
    pub fn action_for(&self, score: f64) -> Action {
        if score >= self.block {
            Action::Block
        } else if score >= self.challenge {
            Action::Challenge
        } else if score >= self.review {
            Action::Review
        } else {
            Action::Approve
        }
    }

    /// Checks that the thresholds are within 0..=100 and in increasing order.
    pub fn validate(&self) -> Result<(), String> {
        let ok = (0.0..=100.0).contains(&self.review)
            && self.review <= self.challenge
            && self.challenge <= self.block
            && self.block <= 100.0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "thresholds must satisfy 0 <= review ({}) <= challenge ({}) <= block ({}) <= 100",
                self.review, self.challenge, self.block
            ))
        }
    }
}

/// The per-account escalation ladder: the more alerts an account (user, else card) collected
/// in the window, the stricter the minimum action. Defaults follow the fraud team's current
/// deployment: more than 3 alerts -> review, more than 5 -> challenge (3-D Secure), more than
/// 10 -> block.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EscalationPolicy {
    /// Length of the alert-counting window in milliseconds.
    pub window_ms: i64,
    /// More alerts than this -> at least review.
    pub review_over: u32,
    /// More alerts than this -> at least challenge.
    pub challenge_over: u32,
    /// More alerts than this -> block.
    pub block_over: u32,
}

impl Default for EscalationPolicy {
    fn default() -> Self {
        EscalationPolicy {
            window_ms: 24 * 3_600_000,
            review_over: 3,
            challenge_over: 5,
            block_over: 10,
        }
    }
}

impl EscalationPolicy {
    /// The minimum action for an account with `alerts` alerts in the window.
    pub fn floor(&self, alerts: u32) -> Action {
        if alerts > self.block_over {
            Action::Block
        } else if alerts > self.challenge_over {
            Action::Challenge
        } else if alerts > self.review_over {
            Action::Review
        } else {
            Action::Approve
        }
    }
}

/// A feature that pushed the model's score, with its value and contribution (log-odds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    /// Catalog feature name.
    pub feature: String,
    /// Its value for this transaction (`null` when missing).
    pub value: Option<f64>,
    /// How much it moved the model's log-odds.
    pub contribution: f64,
    /// The value in words, e.g. "the amount is 4.2 times this card's average".
    pub says: String,
}

/// How the model's probability joins the rule weights in the 0..100 score:
/// `score = clamp(sum of active rule weights + points * probability, 0, 100)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelPolicy {
    /// Score points the model adds at probability 1.
    pub points: f64,
    /// A model reason is listed when the model adds at least this many points.
    pub min_reason_points: f64,
    /// Factors listed in a model reason.
    pub top_factors: usize,
}

impl Default for ModelPolicy {
    fn default() -> Self {
        ModelPolicy {
            points: 100.0,
            min_reason_points: 10.0,
            top_factors: 3,
        }
    }
}

/// One reason behind a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// The rule (or `escalation`) that produced it.
    pub rule: String,
    /// Alert category of the rule (`velocity`, `ring`, ...).
    pub category: String,
    /// The rendered explanation.
    pub detail: String,
    /// Score points it contributed.
    pub weight: f64,
    /// The action the rule forces, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// For the model's reason: the features that pushed its score up most.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub factors: Vec<Factor>,
}

/// The outcome of scoring one transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The transaction decided.
    pub transaction_id: String,
    /// What to do.
    pub decision: Action,
    /// 0..=100.
    pub score: f64,
    /// Why, strongest first; empty for a clean approve.
    pub reasons: Vec<Reason>,
    /// Rules in shadow mode that matched: recorded, but without effect on the decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<Reason>,
    /// Whether this decision raised an alert that counts on the account's escalation ladder
    /// (rules or score put it above approve; escalation alone does not count, so the ladder
    /// cannot feed itself).
    pub alert: bool,
    /// The account whose escalation ladder this decision used (user, else card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The champion model's fraud probability, when a model is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_score: Option<f64>,
    /// The challenger (shadow) model's probability: recorded, no effect on the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenger_score: Option<f64>,
    /// Isolation-forest anomaly score in (0, 1], when the model carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly_score: Option<f64>,
}
