//! Process metrics in the Prometheus text format, kept in atomics so recording never blocks.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use ringfence_core::decision::Action;

/// Upper bounds (µs) of the latency histogram buckets.
const LATENCY_BOUNDS_US: [u64; 14] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// A cumulative latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Records one observation in microseconds.
    pub fn observe_us(&self, us: u64) {
        if let Some(i) = LATENCY_BOUNDS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, bound) in self.buckets.iter().zip(LATENCY_BOUNDS_US) {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
                bound as f64 / 1e6
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// All counters of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    decisions: [AtomicU64; 4],
    /// Decisions above approve (each is queued as an alert).
    pub alerts: AtomicU64,
    /// Rejected transactions (validation errors).
    pub rejected: AtomicU64,
    /// Requests turned away at capacity (admission bounds or a full write queue).
    pub overloaded: AtomicU64,
    /// Labels received.
    pub labels: AtomicU64,
    /// Rule reloads that succeeded.
    pub rule_reloads: AtomicU64,
    /// Rule reloads that failed (old rules kept).
    pub rule_reload_failures: AtomicU64,
    /// Alerts written to Redis (keys and channels).
    pub redis_alerts_published: AtomicU64,
    /// Failed attempts to write alerts to Redis (each retried).
    pub redis_alerts_failures: AtomicU64,
    /// Records replicated from peer sites.
    pub replicated: AtomicU64,
    /// Receipt lines found over-claimed by returns accepted at two stores.
    pub site_conflicts: AtomicU64,
    /// Alert deliveries by sink (webhooks, e-mail) and outcome.
    pub deliveries: crate::alerts::counters::DeliveryCounters,
    /// The Kafka worker's counters, lag and throughput (rendered only when it runs).
    pub kafka: crate::ingest::kafka::KafkaMetrics,
    /// Engine time per transaction.
    pub engine_latency: LatencyHistogram,
    /// Time from request parsed to decision durable.
    pub durable_latency: LatencyHistogram,
    /// Responses by route, then status. Counting takes a read lock and an atomic add (every
    /// request counts here, from every worker thread); only a route's or status's first
    /// response takes the write lock.
    http: RwLock<BTreeMap<String, BTreeMap<u16, AtomicU64>>>,
}

impl Metrics {
    /// Counts a decision.
    pub fn decision(&self, a: Action) {
        self.decisions[a as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Decisions so far by action.
    pub fn decisions(&self) -> [(Action, u64); 4] {
        Action::ALL.map(|a| (a, self.decisions[a as usize].load(Ordering::Relaxed)))
    }

    /// Counts an HTTP response on a route.
    pub fn http(&self, route: &str, status: u16) {
        if let Ok(m) = self.http.read() {
            if let Some(n) = m.get(route).and_then(|by_status| by_status.get(&status)) {
                n.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if let Ok(mut m) = self.http.write() {
            m.entry(route.to_owned())
                .or_default()
                .entry(status)
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Renders everything, plus the gauges given by the caller.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP ringfence_decisions_total Decisions by action.");
        let _ = writeln!(out, "# TYPE ringfence_decisions_total counter");
        for (a, n) in self.decisions() {
            let _ = writeln!(
                out,
                "ringfence_decisions_total{{decision=\"{}\"}} {n}",
                a.as_str()
            );
        }
        for (name, help, v) in [
            (
                "ringfence_alerts_total",
                "Decisions that raised an alert.",
                &self.alerts,
            ),
            (
                "ringfence_rejected_total",
                "Transactions rejected as invalid.",
                &self.rejected,
            ),
            (
                "ringfence_overloaded_total",
                "Requests turned away with 503 at capacity (requests or body bytes in progress, or the write queue full).",
                &self.overloaded,
            ),
            ("ringfence_labels_total", "Labels received.", &self.labels),
            (
                "ringfence_rule_reloads_total",
                "Successful rule reloads.",
                &self.rule_reloads,
            ),
            (
                "ringfence_rule_reload_failures_total",
                "Failed rule reloads (old rules kept).",
                &self.rule_reload_failures,
            ),
            (
                "ringfence_redis_alerts_published_total",
                "Alerts written to Redis keys and channels.",
                &self.redis_alerts_published,
            ),
            (
                "ringfence_redis_alerts_failures_total",
                "Failed attempts to write alerts to Redis (retried).",
                &self.redis_alerts_failures,
            ),
            (
                "ringfence_site_replicated_total",
                "Records replicated from peer sites.",
                &self.replicated,
            ),
            (
                "ringfence_site_conflicts_total",
                "Returns accepted at two sites for the same units (duplicate_return_across_sites).",
                &self.site_conflicts,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        self.deliveries.render(&mut out);
        self.kafka.render(&mut out);
        self.engine_latency.render(
            &mut out,
            "ringfence_engine_seconds",
            "Engine time per transaction (features, rules, decision).",
            "",
        );
        self.durable_latency.render(
            &mut out,
            "ringfence_decision_durable_seconds",
            "Time from a parsed transaction to its durable decision.",
            "",
        );
        let _ = writeln!(
            out,
            "# HELP ringfence_http_responses_total HTTP responses by route and status."
        );
        let _ = writeln!(out, "# TYPE ringfence_http_responses_total counter");
        if let Ok(m) = self.http.read() {
            for (route, by_status) in m.iter() {
                for (status, n) in by_status {
                    let _ = writeln!(
                        out,
                        "ringfence_http_responses_total{{route=\"{route}\",status=\"{status}\"}} {}",
                        n.load(Ordering::Relaxed)
                    );
                }
            }
        }
        // The standard process metrics, which `ringfence bench` reads around a run.
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds."
        );
        let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
        let _ = writeln!(
            out,
            "process_cpu_seconds_total {:.6}",
            crate::process::cpu_seconds()
        );
        if let Some(rss) = crate::process::resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes."
            );
            let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
            let _ = writeln!(out, "process_resident_memory_bytes {rss}");
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.decision(Action::Block);
        m.decision(Action::Block);
        m.engine_latency.observe_us(7);
        m.engine_latency.observe_us(3_000);
        m.http("/v1/transactions", 200);
        let text = m.render(&[("ringfence_entities", "Entities held.", 3.0)]);
        assert!(text.contains("ringfence_decisions_total{decision=\"block\"} 2"));
        assert!(text.contains("ringfence_engine_seconds_bucket{le=\"0.00001\"} 1"));
        assert!(text.contains("ringfence_engine_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("ringfence_engine_seconds_count 2"));
        assert!(text.contains("route=\"/v1/transactions\",status=\"200\"} 1"));
        assert!(text.contains("ringfence_entities 3"));
        let cpu: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .expect("process CPU line")
            .parse()
            .expect("a number");
        assert!(cpu > 0.0, "{cpu}");
    }
}
