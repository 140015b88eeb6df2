//! `ringfence bench --kafka BROKERS`: measures running `worker --kafka` members end to end.
//!
//! Publishes `--count` simulated transactions to `--topic` (at `--rate` per second, or as fast
//! as the producer takes them), keyed by card, and reads `--decisions-topic` (committed
//! messages only) until every one of them has its decision. Latency is from the moment a
//! message was handed to the producer to the moment its decision was read back; throughput is
//! decisions over the time from the first message sent to the last decision read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::bench::{BenchArgs, LatencySummary};
use crate::simulate::generator::{Generator, GeneratorConfig};

/// How long the run waits for decisions after the last message was sent.
const DRAIN: Duration = Duration::from_secs(120);

/// The result of a Kafka run.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaBenchReport {
    /// Always `kafka`.
    pub mode: String,
    /// Bootstrap servers.
    pub brokers: String,
    /// Messages published.
    pub messages: usize,
    /// Offered rate, when paced.
    pub rate: Option<f64>,
    /// Seconds spent publishing.
    pub publish_secs: f64,
    /// Decisions read back.
    pub decided: usize,
    /// Decisions per second, from the first message sent to the last decision read.
    pub throughput: f64,
    /// Produce-to-decision latency, µs.
    pub latency_us: LatencySummary,
}

impl KafkaBenchReport {
    /// The text form.
    pub fn to_text(&self) -> String {
        let l = &self.latency_us;
        format!(
            "kafka {}: {} messages{} published in {:.2} s; {} decisions read, {:.0} decisions/s end to end\n\
             produce -> decision latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.brokers,
            self.messages,
            self.rate.map(|r| format!(" at {r:.0}/s")).unwrap_or_default(),
            self.publish_secs,
            self.decided,
            self.throughput,
            l.p50 as f64 / 1e3,
            l.p90 as f64 / 1e3,
            l.p99 as f64 / 1e3,
            l.p99_9 as f64 / 1e3,
            l.max as f64 / 1e3,
        )
    }
}

/// Why the run failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaBenchError {
    /// The options do not make sense.
    #[error("{0}")]
    Usage(String),
    /// The client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Not every decision came back in time.
    #[error("{decided} of {sent} decisions read within {secs} s of the last message sent")]
    Incomplete {
        /// Read.
        decided: usize,
        /// Sent.
        sent: usize,
        /// The wait.
        secs: u64,
    },
}

/// Runs the benchmark against `brokers` (workers must be consuming `topic`).
pub async fn run(
    args: &BenchArgs,
    brokers: &str,
    topic: &str,
    decisions_topic: &str,
) -> Result<KafkaBenchReport, KafkaBenchError> {
    if args.count == 0 || args.count > 10_000_000 {
        return Err(KafkaBenchError::Usage(
            "--count must be between 1 and 10000000 with --kafka".into(),
        ));
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(KafkaBenchError::Usage("--rate must be above 0".into()));
        }
    }
    // The messages, made before the clock starts: ids unique to this run.
    let tag = format!(
        "kb{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
    .unwrap_or(0);
    let tps = args.rate.unwrap_or(10_000.0);
    let generator = Generator::new(GeneratorConfig {
        seed: args.seed,
        tps,
        start_ms: now_ms,
        customers: GeneratorConfig::customers_for_rate(tps),
        ..GeneratorConfig::default()
    })
    .with_run_tag(&tag);
    let messages: Vec<(String, String, Vec<u8>)> = generator
        .take(args.count)
        .map(|l| {
            let json = serde_json::to_vec(&l.tx).unwrap_or_default();
            (l.tx.transaction_id, l.tx.card_id, json)
        })
        .collect();
    let index: Arc<HashMap<String, usize>> = Arc::new(
        messages
            .iter()
            .enumerate()
            .map(|(i, (id, _, _))| (id.clone(), i))
            .collect(),
    );

    let start = Instant::now();
    let sent_at: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
        (0..messages.len())
            .map(|_| std::sync::atomic::AtomicU64::new(u64::MAX))
            .collect(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("ringfence-bench-{tag}"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(decisions_topic), Duration::from_secs(10))?;
        let mut list = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                // From the start: some brokers report the end wrongly; other runs' are skipped.
                list.add_partition_offset(decisions_topic, p.id(), Offset::Beginning)?;
            }
        }
        if list.count() == 0 {
            return Err(KafkaBenchError::Usage(format!(
                "topic {decisions_topic} has no partitions (create it first)"
            )));
        }
        consumer.assign(&list)?;
        let (index, sent_at, done) = (Arc::clone(&index), Arc::clone(&sent_at), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid histogram bounds"));
            let mut seen = vec![false; index.len()];
            let mut decided = 0usize;
            let mut last = start;
            while decided < index.len() && !done.load(Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let Some(i) = m
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(|k| index.get(k))
                else {
                    continue;
                };
                if std::mem::replace(&mut seen[*i], true) {
                    continue;
                }
                let now = start.elapsed().as_micros() as u64;
                let sent = sent_at[*i].load(Ordering::Acquire);
                if sent != u64::MAX {
                    let _ = latency.record(now.saturating_sub(sent).max(1));
                }
                decided += 1;
                last = Instant::now();
            }
            (decided, last, latency)
        })
    };

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()?;
    let mut deliveries = Vec::with_capacity(messages.len());
    for (i, (_, key, json)) in messages.iter().enumerate() {
        if let Some(rate) = args.rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut record = FutureRecord::to(topic)
            .key(key.as_str())
            .payload(json.as_slice());
        sent_at[i].store(start.elapsed().as_micros() as u64, Ordering::Release);
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    deliveries.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    for d in deliveries {
        if let Ok(Err((e, _))) = d.await {
            return Err(e.into());
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let stop_after = Instant::now() + DRAIN;
    let watchdog = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            tokio::time::sleep_until(stop_after.into()).await;
            done.store(true, Ordering::Relaxed);
        })
    };
    let (decided, last, latency) = tokio::task::spawn_blocking(move || reader.join())
        .await
        .map_err(|e| KafkaBenchError::Usage(e.to_string()))?
        .map_err(|_| KafkaBenchError::Usage("the reader thread panicked".into()))?;
    watchdog.abort();
    if decided < messages.len() {
        return Err(KafkaBenchError::Incomplete {
            decided,
            sent: messages.len(),
            secs: DRAIN.as_secs(),
        });
    }
    let secs = last.duration_since(start).as_secs_f64().max(1e-9);
    Ok(KafkaBenchReport {
        mode: "kafka".into(),
        brokers: brokers.to_owned(),
        messages: messages.len(),
        rate: args.rate,
        publish_secs,
        decided,
        throughput: decided as f64 / secs,
        latency_us: LatencySummary::from_histogram(&latency),
    })
}
