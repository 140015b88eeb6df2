//! Counting what the server said about simulated traffic, against the ground truth: the run
//! summary of `simulate --target` and the once-a-second line of the demo feed.
//!
//! Plain structs fed with [`Outcome`]s, so the arithmetic is tested without a server.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::{ClientError, HttpResponse};

/// The decisions the engine makes, in escalating order.
pub const DECISIONS: [&str; 4] = ["approve", "review", "challenge", "block"];

/// Highest engine time kept in the latency histogram (values above are clamped), in µs.
const MAX_TRACKED_US: u64 = 60_000_000;

/// What became of one transaction sent to the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The engine decided; `processing_us` is its own time when it reported one.
    Decided {
        /// `approve`, `review`, `challenge`, `block` (or whatever a newer server says).
        decision: String,
        /// Engine time in µs.
        processing_us: Option<u64>,
    },
    /// The server answered with a non-2xx status.
    Rejected {
        /// The HTTP status.
        status: u16,
    },
    /// No usable answer: connection, timeout or an unreadable body.
    Failed {
        /// [`ClientError::kind`] of the failure.
        kind: &'static str,
    },
}

#[derive(Deserialize)]
struct DecisionBody {
    decision: String,
    #[serde(default)]
    processing_us: Option<f64>,
}

impl Outcome {
    /// Classifies the result of a `POST /v1/transactions`.
    pub fn from_result(result: &Result<HttpResponse, ClientError>) -> Outcome {
        match result {
            Err(e) => Outcome::Failed { kind: e.kind() },
            Ok(r) if !r.is_success() => Outcome::Rejected { status: r.status },
            Ok(r) => match r.json::<DecisionBody>() {
                Ok(body) => Outcome::Decided {
                    decision: body.decision,
                    processing_us: body
                        .processing_us
                        .filter(|us| us.is_finite() && *us >= 0.0)
                        .map(|us| us.round() as u64),
                },
                Err(e) => Outcome::Failed { kind: e.kind() },
            },
        }
    }

    /// The key this outcome is counted under in an error breakdown, `None` for a decision.
    fn error_key(&self) -> Option<String> {
        match self {
            Outcome::Decided { .. } => None,
            Outcome::Rejected { status } => Some(status.to_string()),
            Outcome::Failed { kind } => Some((*kind).to_string()),
        }
    }
}

/// Cumulative counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Transactions whose request completed, one way or another.
    pub sent: u64,
    /// Transactions the engine decided on.
    pub accepted: u64,
    /// Failures by HTTP status (`"503"`) or client failure kind (`"connect"`, `"timeout"`).
    pub errors: BTreeMap<String, u64>,
    /// Decisions by kind.
    pub decisions: BTreeMap<String, u64>,
    /// Fraudulent transactions not approved.
    pub fraud_caught: u64,
    /// Fraudulent transactions approved.
    pub fraud_missed: u64,
    /// Genuine transactions not approved.
    pub false_alarms: u64,
    /// Genuine transactions approved.
    pub legit_approved: u64,
}

impl Totals {
    /// Share of decided fraud that was caught, when any fraud was decided.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.fraud_caught, self.fraud_caught + self.fraud_missed)
    }

    /// Share of decided genuine transactions that raised an alarm, when any were decided.
    pub fn false_alarm_rate(&self) -> Option<f64> {
        ratio(self.false_alarms, self.false_alarms + self.legit_approved)
    }

    /// A few lines for the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let errors: u64 = self.errors.values().sum();
        let _ = write!(
            out,
            "sent {}  accepted {}  errors {}",
            self.sent, self.accepted, errors
        );
        if errors > 0 {
            let detail: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = write!(out, " ({})", detail.join(", "));
        }
        out.push_str("\ndecisions");
        for kind in DECISIONS {
            let _ = write!(
                out,
                "  {kind} {}",
                self.decisions.get(kind).copied().unwrap_or(0)
            );
        }
        for (kind, n) in &self.decisions {
            if !DECISIONS.contains(&kind.as_str()) {
                let _ = write!(out, "  {kind} {n}");
            }
        }
        let _ = write!(
            out,
            "\nfraud caught {}  missed {}  (recall {})",
            self.fraud_caught,
            self.fraud_missed,
            percent(self.recall())
        );
        let _ = write!(
            out,
            "\nfalse alarms {}  ({} of {} genuine)",
            self.false_alarms,
            percent(self.false_alarm_rate()),
            self.false_alarms + self.legit_approved
        );
        out
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn percent(share: Option<f64>) -> String {
    match share {
        Some(s) => format!("{:.1}%", s * 100.0),
        None => "n/a".to_string(),
    }
}

/// Running counts: cumulative [`Totals`] plus the current one-second window of the demo feed.
#[derive(Debug)]
pub struct Tally {
    totals: Totals,
    window_completed: u64,
    window_decisions: [u64; DECISIONS.len()],
    window_other_decisions: u64,
    window_errors: u64,
    window_engine_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            totals: Totals::default(),
            window_completed: 0,
            window_decisions: [0; DECISIONS.len()],
            window_other_decisions: 0,
            window_errors: 0,
            window_engine_us: engine_histogram(),
        }
    }

    /// Counts one completed request for a transaction whose ground truth is `fraud`.
    pub fn record(&mut self, fraud: bool, outcome: &Outcome) {
        self.totals.sent += 1;
        self.window_completed += 1;
        let Outcome::Decided {
            decision,
            processing_us,
        } = outcome
        else {
            if let Some(key) = outcome.error_key() {
                *self.totals.errors.entry(key).or_default() += 1;
            }
            self.window_errors += 1;
            return;
        };
        self.totals.accepted += 1;
        *self.totals.decisions.entry(decision.clone()).or_default() += 1;
        match DECISIONS.iter().position(|d| d == decision) {
            Some(i) => self.window_decisions[i] += 1,
            None => self.window_other_decisions += 1,
        }
        let approved = decision == "approve";
        match (fraud, approved) {
            (true, false) => self.totals.fraud_caught += 1,
            (true, true) => self.totals.fraud_missed += 1,
            (false, false) => self.totals.false_alarms += 1,
            (false, true) => self.totals.legit_approved += 1,
        }
        if let Some(us) = processing_us {
            self.window_engine_us
                .saturating_record((*us).min(MAX_TRACKED_US));
        }
    }

    /// The cumulative counts.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// The demo feed's line for the second ending `elapsed_secs` into the run; starts a new
    /// window.
    pub fn second_line(&mut self, elapsed_secs: u64) -> String {
        let mut line = format!("[{elapsed_secs:>4}s] {} tx/s |", self.window_completed);
        for (kind, n) in DECISIONS.iter().zip(self.window_decisions) {
            let sep = if *kind == DECISIONS[0] { " " } else { "  " };
            let _ = write!(line, "{sep}{kind} {n}");
        }
        if self.window_other_decisions > 0 {
            let _ = write!(line, "  other {}", self.window_other_decisions);
        }
        let t = &self.totals;
        let _ = write!(
            line,
            " | fraud caught {} missed {} | false alarms {} | engine ",
            t.fraud_caught, t.fraud_missed, t.false_alarms
        );
        if self.window_engine_us.is_empty() {
            line.push_str("p50 - p99 -");
        } else {
            let _ = write!(
                line,
                "p50 {}µs p99 {}µs",
                self.window_engine_us.value_at_quantile(0.50),
                self.window_engine_us.value_at_quantile(0.99)
            );
        }
        if self.window_errors > 0 {
            let _ = write!(line, " | errors {}", self.window_errors);
        }
        self.window_completed = 0;
        self.window_decisions = [0; DECISIONS.len()];
        self.window_other_decisions = 0;
        self.window_errors = 0;
        self.window_engine_us.reset();
        line
    }
}

fn engine_histogram() -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's limits, so this cannot fail.
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hyper::HeaderMap;

    fn decided(decision: &str, us: u64) -> Outcome {
        Outcome::Decided {
            decision: decision.to_string(),
            processing_us: Some(us),
        }
    }

    fn response(status: u16, body: &str) -> Result<HttpResponse, ClientError> {
        Ok(HttpResponse {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        })
    }

    #[test]
    fn responses_become_outcomes() {
        let ok = response(
            200,
            r#"{"transaction_id":"t","decision":"block","score":80.0,"reasons":[],"alert":true,"processing_us":7}"#,
        );
        assert_eq!(Outcome::from_result(&ok), decided("block", 7));
        let no_time = response(200, r#"{"decision":"approve"}"#);
        assert_eq!(
            Outcome::from_result(&no_time),
            Outcome::Decided {
                decision: "approve".into(),
                processing_us: None
            }
        );
        let busy = response(503, r#"{"error":{"code":"overloaded","message":"busy"}}"#);
        assert_eq!(
            Outcome::from_result(&busy),
            Outcome::Rejected { status: 503 }
        );
        let garbage = response(200, "not json");
        assert_eq!(
            Outcome::from_result(&garbage),
            Outcome::Failed { kind: "decode" }
        );
        let timeout = Err(ClientError::Timeout {
            url: "http://x/".into(),
            timeout: std::time::Duration::from_secs(1),
        });
        assert_eq!(
            Outcome::from_result(&timeout),
            Outcome::Failed { kind: "timeout" }
        );
    }

    #[test]
    fn second_line_counts_the_window_and_the_run() {
        let mut tally = Tally::new();
        for _ in 0..180 {
            tally.record(false, &decided("approve", 6));
        }
        for _ in 0..2 {
            tally.record(true, &decided("approve", 6));
        }
        for _ in 0..4 {
            tally.record(false, &decided("review", 6));
        }
        for _ in 0..6 {
            tally.record(true, &decided("review", 6));
        }
        for _ in 0..3 {
            tally.record(true, &decided("challenge", 31));
        }
        tally.record(false, &decided("block", 31));
        tally.record(false, &decided("block", 31));
        tally.record(false, &decided("block", 31));
        tally.record(false, &decided("block", 31));
        tally.record(true, &decided("block", 31));
        // 180 + 2 + 4 + 6 + 3 + 5 = 200 transactions; the 1% slowest are 31µs.
        assert_eq!(
            tally.second_line(12),
            "[  12s] 200 tx/s | approve 182  review 10  challenge 3  block 5 \
             | fraud caught 10 missed 2 | false alarms 8 | engine p50 6µs p99 31µs"
        );
        // A new window: per-second counts restart, the run's counts stay.
        tally.record(false, &Outcome::Rejected { status: 503 });
        assert_eq!(
            tally.second_line(13),
            "[  13s] 1 tx/s | approve 0  review 0  challenge 0  block 0 \
             | fraud caught 10 missed 2 | false alarms 8 | engine p50 - p99 - | errors 1"
        );
    }

    #[test]
    fn summary_reports_errors_decisions_and_ground_truth() {
        let mut tally = Tally::new();
        tally.record(true, &decided("block", 5));
        tally.record(true, &decided("approve", 5));
        tally.record(true, &decided("challenge", 5));
        tally.record(false, &decided("approve", 5));
        tally.record(false, &decided("approve", 5));
        tally.record(false, &decided("approve", 5));
        tally.record(false, &decided("review", 5));
        tally.record(false, &decided("escalate", 5));
        tally.record(false, &Outcome::Rejected { status: 503 });
        tally.record(true, &Outcome::Failed { kind: "connect" });
        let t = tally.totals();
        assert_eq!((t.sent, t.accepted), (10, 8));
        assert_eq!((t.fraud_caught, t.fraud_missed), (2, 1));
        assert_eq!((t.false_alarms, t.legit_approved), (2, 3));
        assert_eq!(
            t.summary(),
            "sent 10  accepted 8  errors 2 (503: 1, connect: 1)\n\
             decisions  approve 4  review 1  challenge 1  block 1  escalate 1\n\
             fraud caught 2  missed 1  (recall 66.7%)\n\
             false alarms 2  (40.0% of 5 genuine)"
        );
        assert_eq!(
            Tally::new().totals().summary().lines().nth(2),
            Some("fraud caught 0  missed 0  (recall n/a)")
        );
    }
}
