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
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
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
    /// Of that, from the decision's create time (stamped by the worker's producer) to its
    /// reading, µs (millisecond resolution).
    pub output_hop_us: LatencySummary,
}

impl KafkaBenchReport {
    /// The text form.
    pub fn to_text(&self) -> String {
        let l = &self.latency_us;
        format!(
            "kafka {}: {} messages{} published in {:.2} s; {} decisions read, {:.0} decisions/s end to end\n\
             produce -> decision latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms\n\
             of which decision produced -> read: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
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
            self.output_hop_us.p50 as f64 / 1e3,
            self.output_hop_us.p99 as f64 / 1e3,
            self.output_hop_us.max as f64 / 1e3,
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

/// Creates `topics` with `partitions` each, where missing.
pub async fn create_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
) -> Result<(), KafkaBenchError> {
    if !(1..=10_000).contains(&partitions) {
        return Err(KafkaBenchError::Usage(
            "--create-topics must be between 1 and 10000 partitions".into(),
        ));
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&new, &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaBenchError::Usage(format!(
                    "creating topic {topic}: {code}"
                )))
            }
        }
    }
    Ok(())
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

    // The producer first: an idempotent producer's first messages wait for its producer id
    // (half a second on Tansu), which is not the workers' latency. It warms up meanwhile.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()?;
    let warm = producer.clone();
    let topic_owned = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        warm.client()
            .fetch_metadata(Some(&topic_owned), Duration::from_secs(10))
    })
    .await
    .map_err(|e| KafkaBenchError::Usage(e.to_string()))??;
    let warm_until = Instant::now() + Duration::from_secs(2);
    // Latencies are measured from this instant on both sides.
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
            .set("fetch.error.backoff.ms", "10")
            .set("enable.partition.eof", "true")
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
        let partitions = list.count();
        let (index, sent_at, done) = (Arc::clone(&index), Arc::clone(&sent_at), Arc::clone(&done));
        let (caught_up, on_caught_up) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid histogram bounds"));
            let mut output_hop = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid histogram bounds"));
            let mut seen = vec![false; index.len()];
            let mut decided = 0usize;
            let mut last = start;
            // Earlier runs' decisions are read before the clock starts: the end of every
            // partition once, then the run.
            let mut at_end = std::collections::HashSet::new();
            while decided < index.len() && !done.load(Ordering::Relaxed) {
                let m = match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => m,
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        if at_end.insert(p) && at_end.len() == partitions {
                            let _ = caught_up.send(());
                        }
                        continue;
                    }
                    _ => continue,
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
                // The decision's own create time (the worker's clock, the same machine).
                if let Some(created) = m.timestamp().to_millis() {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0);
                    let _ = output_hop.record(((now_ms - created).max(0) as u64 * 1000).max(1));
                }
                let now = start.elapsed().as_micros() as u64;
                let sent = sent_at[*i].load(Ordering::Acquire);
                if sent != u64::MAX {
                    let _ = latency.record(now.saturating_sub(sent).max(1));
                }
                decided += 1;
                last = Instant::now();
            }
            (decided, last, latency, output_hop)
        });
        // Up to a minute for the history of the decisions topic.
        let _ =
            tokio::task::spawn_blocking(move || on_caught_up.recv_timeout(Duration::from_secs(60)))
                .await;
        reader
    };
    tokio::time::sleep_until(warm_until.into()).await;
    // The clock of the run: from the first message sent.
    let first_send = Instant::now();

    let mut deliveries = Vec::with_capacity(messages.len());
    for (i, (_, key, json)) in messages.iter().enumerate() {
        if let Some(rate) = args.rate {
            let due = first_send + Duration::from_secs_f64(i as f64 / rate);
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
    let publish_secs = first_send.elapsed().as_secs_f64();
    let stop_after = Instant::now() + DRAIN;
    let watchdog = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            tokio::time::sleep_until(stop_after.into()).await;
            done.store(true, Ordering::Relaxed);
        })
    };
    let (decided, last, latency, output_hop) = tokio::task::spawn_blocking(move || reader.join())
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
    let secs = last.duration_since(first_send).as_secs_f64().max(1e-9);
    Ok(KafkaBenchReport {
        mode: "kafka".into(),
        brokers: brokers.to_owned(),
        messages: messages.len(),
        rate: args.rate,
        publish_secs,
        decided,
        throughput: decided as f64 / secs,
        latency_us: LatencySummary::from_histogram(&latency),
        output_hop_us: LatencySummary::from_histogram(&output_hop),
    })
}
