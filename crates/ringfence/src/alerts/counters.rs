//! Delivery counters for `/metrics`: `ringfence_alert_deliveries_total{sink, outcome}`, one
//! series per sink (`webhook:<name>`, `email`) and outcome:
//!
//! | outcome | counts |
//! |---|---|
//! | `delivered` | alerts the sink took (a 2xx; an alert in a sent mail) |
//! | `failed_attempt` | tries that failed and will be tried again |
//! | `dead_letter` | alerts (or mails) given up on, now dead letters |
//! | `redelivered` | dead letters a retry got through |
//! | `mail` | mails sent (one per single alert or digest) |
//!
//! A mutex over a small map, not atomics: there are few sinks, the counts move per delivery
//! (off the request path), and the labels are only known from the configuration.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Counts per (sink, outcome).
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    counts: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl DeliveryCounters {
    /// Adds `n` to `sink`'s `outcome`.
    pub fn add(&self, sink: &str, outcome: &'static str, n: u64) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((sink.to_owned(), outcome)).or_default() += n;
    }

    /// Makes `sink`'s series appear at 0 before anything happens (so a dashboard sees it).
    pub fn register(&self, sink: &str) {
        for outcome in ["delivered", "failed_attempt", "dead_letter"] {
            self.add(sink, outcome, 0);
        }
    }

    /// The count of `sink`'s `outcome`.
    pub fn get(&self, sink: &str, outcome: &'static str) -> u64 {
        let m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(sink.to_owned(), outcome)).copied().unwrap_or(0)
    }

    /// Appends the Prometheus text (nothing when no sink is configured).
    pub fn render(&self, out: &mut String) {
        let m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if m.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP ringfence_alert_deliveries_total Alert deliveries by sink and outcome."
        );
        let _ = writeln!(out, "# TYPE ringfence_alert_deliveries_total counter");
        for ((sink, outcome), n) in m.iter() {
            let _ = writeln!(
                out,
                "ringfence_alert_deliveries_total{{sink=\"{sink}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
}
