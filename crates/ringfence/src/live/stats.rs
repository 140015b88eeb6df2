//! Per-second statistics of what this node stored: the aggregate a second builds up while
//! decisions arrive ([`SecondAgg`]) and what is kept of it for the charts ([`SecondStats`]).
//!
//! Counts are exact (every stored decision is counted, whether or not the feed shows its
//! row). Engine latency is a histogram per second (hdrhistogram, two significant digits:
//! ~19 KB, one allocation a second), of this node's own decisions only: a replicated record's
//! time was spent at another site.

use hdrhistogram::Histogram;
use ringfence_core::decision::Action;
use ringfence_core::event::Timestamp;
use serde::Serialize;

/// The longest engine time a second's histogram holds (µs); longer ones count as this.
const MAX_LATENCY_US: u64 = 60_000_000;

/// One second being counted.
pub struct SecondAgg {
    /// Unix second.
    pub second: u64,
    transactions: u64,
    decisions: [u64; 4],
    ladder_alerts: u64,
    value_blocked: f64,
    replicated: u64,
    labels: u64,
    confirmed_fraud: u64,
    latency: Option<Histogram<u64>>,
}

impl SecondAgg {
    /// An empty second.
    pub fn new(second: u64) -> SecondAgg {
        SecondAgg {
            second,
            transactions: 0,
            decisions: [0; 4],
            ladder_alerts: 0,
            value_blocked: 0.0,
            replicated: 0,
            labels: 0,
            confirmed_fraud: 0,
            latency: None,
        }
    }

    /// Counts one stored decision. `engine_us` is this node's engine time (`None` when the
    /// record was decided elsewhere); `replicated` when it was decided at another site.
    pub fn decision(
        &mut self,
        action: Action,
        amount: f64,
        ladder: bool,
        engine_us: Option<u64>,
        replicated: bool,
    ) {
        self.transactions += 1;
        self.decisions[action as usize] += 1;
        self.ladder_alerts += u64::from(ladder);
        if action == Action::Block {
            self.value_blocked += amount;
        }
        self.replicated += u64::from(replicated);
        if let Some(us) = engine_us {
            let h = self.latency.get_or_insert_with(|| {
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
                    .unwrap_or_else(|_| unreachable!("static histogram bounds are valid"))
            });
            h.saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
    }

    /// Counts one label stored.
    pub fn label(&mut self, fraud: bool) {
        self.labels += 1;
        self.confirmed_fraud += u64::from(fraud);
    }

    /// The finished second, with the replication links as sampled now.
    pub fn finish(&self, replication: Vec<PeerLag>) -> SecondStats {
        let n = self.transactions;
        let rate = |k: u64| if n == 0 { 0.0 } else { k as f64 / n as f64 };
        let alerts = n - self.decisions[Action::Approve as usize];
        let blocks = self.decisions[Action::Block as usize];
        SecondStats {
            second: self.second,
            at: Timestamp::from_millis(self.second as i64 * 1000),
            transactions: n,
            decisions: Decisions {
                approve: self.decisions[0],
                review: self.decisions[1],
                challenge: self.decisions[2],
                block: self.decisions[3],
            },
            alerts,
            ladder_alerts: self.ladder_alerts,
            alert_rate: rate(alerts),
            block_rate: rate(blocks),
            value_blocked: (self.value_blocked * 100.0).round() / 100.0,
            replicated: self.replicated,
            labels: self.labels,
            confirmed_fraud: self.confirmed_fraud,
            latency_us: self.latency.as_ref().map(|h| Latency {
                count: h.len(),
                p50: h.value_at_quantile(0.5),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
            }),
            replication,
        }
    }
}

/// Decisions of one second by kind.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Decisions {
    /// Approved.
    pub approve: u64,
    /// Queued for review.
    pub review: u64,
    /// Stepped up.
    pub challenge: u64,
    /// Declined.
    pub block: u64,
}

/// Engine latency of one second (µs, two significant digits).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latency {
    /// Decisions measured (this node's own).
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest.
    pub max: u64,
}

/// One replication link as sampled at the end of a second.
#[derive(Clone, Debug, Serialize)]
pub struct PeerLag {
    /// The peer site's name (its URL until it first answered).
    pub peer: String,
    /// Whether its last request succeeded.
    pub connected: bool,
    /// Delay of the newest record replicated from it (ms).
    pub lag_ms: Option<f64>,
    /// 99th percentile of the delay over its latest records (ms).
    pub p99_ms: Option<f64>,
    /// Its records not yet here, as of its last answer.
    pub behind: i64,
}

/// One finished second, as the charts draw it.
#[derive(Clone, Debug, Serialize)]
pub struct SecondStats {
    /// Unix second.
    pub second: u64,
    /// The same, as a time.
    pub at: Timestamp,
    /// Decisions stored (this node's, replicated ones, and in shared-state mode those the
    /// other nodes stored).
    pub transactions: u64,
    /// By kind.
    pub decisions: Decisions,
    /// Decisions above approve (what the alert queue gets).
    pub alerts: u64,
    /// Of those, the ones counting on an account's escalation ladder.
    pub ladder_alerts: u64,
    /// `alerts / transactions` (0 in an empty second).
    pub alert_rate: f64,
    /// Blocks per transaction.
    pub block_rate: f64,
    /// Amount blocked, summed over currencies as sent.
    pub value_blocked: f64,
    /// Records decided at other sites and stored here.
    pub replicated: u64,
    /// Labels stored.
    pub labels: u64,
    /// Of those, confirmed fraud.
    pub confirmed_fraud: u64,
    /// Engine latency of this node's own decisions, absent when it made none.
    pub latency_us: Option<Latency>,
    /// Each replication link (sites mode; empty otherwise).
    pub replication: Vec<PeerLag>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_counts_decisions_value_and_latency() {
        let mut s = SecondAgg::new(7);
        s.decision(Action::Approve, 10.0, false, Some(40), false);
        s.decision(Action::Block, 99.5, true, Some(400), false);
        s.decision(Action::Review, 5.0, true, None, true);
        s.label(true);
        let done = s.finish(Vec::new());
        assert_eq!(done.transactions, 3);
        assert_eq!(done.decisions.block, 1);
        assert_eq!(done.alerts, 2);
        assert_eq!(done.ladder_alerts, 2);
        assert_eq!(done.value_blocked, 99.5);
        assert_eq!(done.replicated, 1);
        assert_eq!(done.confirmed_fraud, 1);
        let l = done.latency_us.expect("two own decisions");
        assert_eq!(l.count, 2);
        assert!((39..=41).contains(&l.p50), "{l:?}");
        assert!((396..=404).contains(&l.p99), "{l:?}");
        assert!((done.block_rate - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn an_empty_second_has_no_rates_or_latency() {
        let done = SecondAgg::new(1).finish(Vec::new());
        assert_eq!(done.transactions, 0);
        assert_eq!(done.alert_rate, 0.0);
        assert!(done.latency_us.is_none());
    }
}
