//! What the Kafka worker exports on `/metrics`: messages and decisions counted, transactions,
//! rebalances, throughput, and per partition the committed offset and the lag behind the end
//! of the partition.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One assigned partition's position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionPosition {
    /// The offset committed with the last transaction (the next message to decide).
    pub committed: Option<i64>,
    /// The end of the partition as the broker reported it (the last stable offset when
    /// reading committed messages only).
    pub end: Option<i64>,
    /// Messages between the committed offset and the end: from the offset this worker
    /// committed when it has committed one, else as librdkafka computes it from the offset
    /// committed when the partition was assigned.
    pub lag: Option<i64>,
}

/// Counters and gauges of one worker; all zero and hidden while no Kafka worker runs.
#[derive(Debug, Default)]
pub struct KafkaMetrics {
    active: AtomicBool,
    /// Messages received from the input topic.
    pub received: AtomicU64,
    /// Decisions produced (acknowledged by the broker).
    pub decided: AtomicU64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Outputs found already published (by a partition's previous owner, or by an attempt of
    /// this worker that failed part way), not sent again.
    pub already_published: AtomicU64,
    /// Offset commits (one per batch).
    pub commits: AtomicU64,
    /// Batches whose publishing failed and was tried again.
    pub retries: AtomicU64,
    /// Partition assignments received.
    pub rebalances: AtomicU64,
    /// Decisions per second over the last statistics interval (f64 bits).
    throughput: AtomicU64,
    last_rate: Mutex<Option<(Instant, u64)>>,
    partitions: Mutex<BTreeMap<(String, i32), PartitionPosition>>,
}

impl KafkaMetrics {
    /// Marks a worker as running, so the metrics are rendered.
    pub fn activate(&self) {
        self.active.store(true, Ordering::Relaxed);
    }

    fn partitions(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), PartitionPosition>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The partitions now assigned (others are forgotten).
    pub fn assigned(&self, topic: &str, partitions: &[i32]) {
        let mut map = self.partitions();
        map.retain(|(t, p), _| t == topic && partitions.contains(p));
        for p in partitions {
            map.entry((topic.to_owned(), *p)).or_default();
        }
    }

    /// Records an offset committed for a partition.
    pub fn committed(&self, topic: &str, partition: i32, offset: i64) {
        if let Some(pos) = self.partitions().get_mut(&(topic.to_owned(), partition)) {
            pos.committed = Some(offset);
            if let Some(end) = pos.end {
                pos.lag = Some((end - offset).max(0));
            }
        }
    }

    /// Records what the client's statistics say of a partition: its end and librdkafka's lag
    /// (negative values are librdkafka's "unknown"). librdkafka knows only the offsets the
    /// consumer committed itself, and this worker commits through its producers' transactions,
    /// so its lag counts from the assignment; the offset committed here, once there is one,
    /// is the truth.
    pub fn observed(&self, topic: &str, partition: i32, end: i64, lag: i64) {
        if let Some(pos) = self.partitions().get_mut(&(topic.to_owned(), partition)) {
            pos.end = (end >= 0).then_some(end);
            pos.lag = match (pos.end, pos.committed) {
                (Some(end), Some(committed)) => Some((end - committed).max(0)),
                _ => (lag >= 0).then_some(lag),
            };
        }
    }

    /// Updates the throughput gauge from the decisions counted since the last call.
    pub fn tick(&self, now: Instant) {
        let decided = self.decided.load(Ordering::Relaxed);
        let mut last = self.last_rate.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((then, before)) = *last {
            let secs = now.duration_since(then).as_secs_f64();
            if secs > 0.0 {
                let rate = decided.saturating_sub(before) as f64 / secs;
                self.throughput.store(rate.to_bits(), Ordering::Relaxed);
            }
        }
        *last = Some((now, decided));
    }

    /// Decisions per second over the last interval.
    pub fn throughput(&self) -> f64 {
        f64::from_bits(self.throughput.load(Ordering::Relaxed))
    }

    /// A partition's position (for tests and the status page).
    pub fn position(&self, topic: &str, partition: i32) -> Option<PartitionPosition> {
        self.partitions()
            .get(&(topic.to_owned(), partition))
            .copied()
    }

    /// Appends the Prometheus text, when a worker runs.
    pub fn render(&self, out: &mut String) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        for (name, help, v) in [
            (
                "ringfence_kafka_messages_total",
                "Messages received from the input topic.",
                &self.received,
            ),
            (
                "ringfence_kafka_decisions_total",
                "Decisions produced to the decisions topic (acknowledged by the broker).",
                &self.decided,
            ),
            (
                "ringfence_kafka_dead_letters_total",
                "Messages that did not parse, sent to the dead-letter topic.",
                &self.dead_lettered,
            ),
            (
                "ringfence_kafka_already_published_total",
                "Outputs found already in the output topics (published by a partition's previous owner, or by a failed attempt) and not sent again.",
                &self.already_published,
            ),
            (
                "ringfence_kafka_commits_total",
                "Offset commits, each after a batch's outputs were acknowledged.",
                &self.commits,
            ),
            (
                "ringfence_kafka_publish_retries_total",
                "Batches whose publishing failed and was tried again.",
                &self.retries,
            ),
            (
                "ringfence_kafka_rebalances_total",
                "Partition assignments received by this group member.",
                &self.rebalances,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP ringfence_kafka_throughput Decisions per second over the last second."
        );
        let _ = writeln!(out, "# TYPE ringfence_kafka_throughput gauge");
        let _ = writeln!(out, "ringfence_kafka_throughput {}", self.throughput());
        let partitions = self.partitions().clone();
        let _ = writeln!(
            out,
            "# HELP ringfence_kafka_assigned_partitions Input partitions assigned to this group member."
        );
        let _ = writeln!(out, "# TYPE ringfence_kafka_assigned_partitions gauge");
        let _ = writeln!(
            out,
            "ringfence_kafka_assigned_partitions {}",
            partitions.len()
        );
        for (name, help, pick) in [
            (
                "ringfence_kafka_consumer_lag",
                "Messages of an assigned partition not yet decided and committed.",
                (|p: &PartitionPosition| p.lag) as fn(&PartitionPosition) -> Option<i64>,
            ),
            (
                "ringfence_kafka_committed_offset",
                "Offset committed for an assigned partition (the next message to decide).",
                |p: &PartitionPosition| p.committed,
            ),
            (
                "ringfence_kafka_end_offset",
                "End of an assigned partition as the broker reports it (last stable offset).",
                |p: &PartitionPosition| p.end,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for ((topic, partition), pos) in &partitions {
                if let Some(v) = pick(pos) {
                    let _ = writeln!(
                        out,
                        "{name}{{topic=\"{topic}\",partition=\"{partition}\"}} {v}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_only_when_active_and_only_assigned_partitions() {
        let m = KafkaMetrics::default();
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.is_empty());
        m.activate();
        m.assigned("tx", &[0, 2]);
        m.committed("tx", 0, 41);
        m.committed("tx", 1, 7); // not assigned: ignored
        m.observed("tx", 0, 50, 30); // librdkafka's lag, from the assignment: not used
        m.observed("tx", 2, -1, -1);
        m.decided.fetch_add(3, Ordering::Relaxed);
        m.render(&mut out);
        assert!(out.contains("ringfence_kafka_decisions_total 3\n"), "{out}");
        assert!(out.contains("ringfence_kafka_consumer_lag{topic=\"tx\",partition=\"0\"} 9\n"));
        assert!(out.contains("ringfence_kafka_committed_offset{topic=\"tx\",partition=\"0\"} 41\n"));
        assert!(!out.contains("partition=\"1\""), "{out}");
        assert!(
            out.contains("ringfence_kafka_assigned_partitions 2\n"),
            "{out}"
        );
        assert!(!out.contains("partition=\"2\"} -1"), "{out}");
        m.observed("tx", 2, 12, 4);
        assert_eq!(m.position("tx", 2).and_then(|p| p.lag), Some(4));
        m.committed("tx", 2, 10);
        assert_eq!(m.position("tx", 2).and_then(|p| p.lag), Some(2));
        m.assigned("tx", &[2]);
        assert_eq!(m.position("tx", 0), None);
        assert_eq!(m.position("tx", 2).and_then(|p| p.committed), Some(10));
    }

    #[test]
    fn throughput_is_decisions_over_the_interval() {
        let m = KafkaMetrics::default();
        let t0 = Instant::now();
        m.tick(t0);
        m.decided.fetch_add(500, Ordering::Relaxed);
        m.tick(t0 + std::time::Duration::from_millis(250));
        assert!((m.throughput() - 2000.0).abs() < 1e-6, "{}", m.throughput());
    }
}
