//! The consumer group member and its producer (librdkafka through `rdkafka`).
//!
//! One loop: gather a batch from the consumer, decide it through the host (durable), produce
//! its decisions and dead letters with the idempotent producer and wait until the broker has
//! them all, then commit the offsets after the batch. Rebalances are served only while
//! gathering (they run inside the consumer's poll), so a partition is never revoked under a
//! batch being published; a batch gathered across a rebalance is dropped, since the new
//! assignment reads again from the committed offsets.
//!
//! What a previous owner published but did not commit is found in the output topics: the
//! decisions (and dead letters) of input partition `p` go to partition `p` of their topic,
//! written only by `p`'s owner, in input order, without gaps (idempotent producer with the
//! gapless guarantee). So the last message there names, in its `ringfence-source` header, the
//! last input offset already published; before publishing for a partition it has just been
//! given (or after a failed publish), the worker reads that tail and skips what is there.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use super::{parse_message, Coordinates, KafkaConfig};
use crate::host::{EngineHost, HostError, Parsed};
use crate::ingest::WorkerError;
use crate::metrics::Metrics;

/// Header naming where a produced message came from: `<topic>/<partition>/<offset>`.
pub const SOURCE_HEADER: &str = "ringfence-source";
/// Header of a dead letter: the error, as the JSON body HTTP would have answered.
pub const ERROR_HEADER: &str = "ringfence-error";
/// Messages read back from the end of an output partition to find the last one published.
const SCAN_TAIL: i64 = 100;
/// Longest wait for an output partition's tail.
const SCAN_TIMEOUT: Duration = Duration::from_secs(30);
/// A batch slower than this (decided, published, committed) is logged with its phases.
const SLOW_BATCH: Duration = Duration::from_millis(250);
/// Longest wait for metadata and offset commits.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer's callbacks: rebalances (counted, and remembered so a batch gathered across
/// one is dropped), statistics (lag) and librdkafka's log, routed to tracing.
struct Context {
    metrics: Arc<Metrics>,
    topic: String,
    /// Bumped at every assignment or revocation.
    epoch: AtomicU64,
}

/// librdkafka's log through tracing, for every client of the worker.
fn log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    // Chosen knowingly (see `producer`): not worth a warning at every start.
    if message.contains("enable.gapless.guarantee is experimental") {
        return tracing::debug!(facility = fac, "kafka: {message}");
    }
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "kafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "kafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(facility = fac, "kafka: {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(facility = fac, "kafka: {message}"),
    }
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let kafka = &self.metrics.kafka;
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, p) in &topic.partitions {
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                kafka.observed(&self.topic, *partition, end, p.consumer_lag);
            }
        }
        kafka.tick(Instant::now());
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, "kafka: {reason}");
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Rebalance::Revoke(list) = rebalance {
            tracing::info!(partitions = list.count(), "kafka: partitions revoked");
            self.metrics.kafka.assigned(&self.topic, &[]);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions: Vec<i32> = list
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(?partitions, "kafka: partitions assigned");
                self.metrics.kafka.assigned(&self.topic, &partitions);
                self.metrics
                    .kafka
                    .rebalances
                    .fetch_add(1, Ordering::Relaxed);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka: rebalance failed"),
        }
    }
}

/// The producer's and the tail reader's context: their log through tracing.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }
}

impl ConsumerContext for Quiet {}

/// `--kafka-property` over `defaults`; the caller then sets what the guarantees rest on.
fn client_config(config: &KafkaConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id);
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}

/// The consumer's defaults. A fetch waits at most 10 ms for data (librdkafka's 500 ms is for
/// brokers that answer as soon as there is any: Tansu waits the whole time, and at 500 ms a
/// worker decided a backlog twelve times slower; see BENCHMARKS.md).
const CONSUMER_DEFAULTS: [(&str, &str); 1] = [("fetch.wait.max.ms", "10")];

fn consumer(config: &KafkaConfig, context: Context) -> KafkaResult<StreamConsumer<Context>> {
    let heartbeat = (config.session_timeout_ms / 3).clamp(100, 3_000);
    let mut c = client_config(config, &CONSUMER_DEFAULTS);
    c.set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", heartbeat.to_string())
        .set("statistics.interval.ms", "1000");
    c.create_with_context(context)
}

/// The idempotent producer: no duplicates from its retries, and a fatal error rather than a
/// gap, so each output partition holds a prefix of what was sent to it. Messages never time
/// out (the gapless guarantee does not cover a timeout): while the broker is away the worker
/// waits, commits nothing, and resumes where it was.
fn producer(config: &KafkaConfig) -> KafkaResult<FutureProducer<Quiet>> {
    let mut c = client_config(config, &[]);
    c.set("enable.idempotence", "true")
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "0")
        .set("linger.ms", "1");
    c.create_with_context(Quiet)
}

/// A consumer outside the group that reads output partitions' tails.
fn tail_reader(config: &KafkaConfig) -> KafkaResult<BaseConsumer<Quiet>> {
    let mut c = client_config(config, &CONSUMER_DEFAULTS);
    c.set("group.id", format!("{}.tail-reader", config.group))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true");
    c.create_with_context(Quiet)
}

/// What one message comes to on the output side.
enum Output {
    /// The decision's JSON, keyed by transaction id.
    Decision { id: String, json: Vec<u8> },
    /// The message as it came, with the error.
    Dead { error: String },
}

/// One input partition's share of a batch: (message, output) in offset order.
struct Share {
    partition: i32,
    items: Vec<(OwnedMessage, Output)>,
}

impl Share {
    fn next_offset(&self) -> i64 {
        self.items.last().map_or(0, |(m, _)| m.offset() + 1)
    }
}

/// The last input offsets of one partition already in the output topics (-1: none).
#[derive(Debug, Clone, Copy)]
struct Published {
    decisions: i64,
    dead: i64,
}

/// Consumes until `stop` turns true. Kafka errors are retried; nothing is committed for a
/// batch until its decisions are durable in the store and acknowledged by the broker.
pub async fn run(
    host: Arc<EngineHost>,
    config: KafkaConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let setup = |e: KafkaError| WorkerError::Kafka(e.to_string());
    let metrics = Arc::clone(host.metrics());
    metrics.kafka.activate();
    let context = Context {
        metrics: Arc::clone(&metrics),
        topic: config.topic.clone(),
        epoch: AtomicU64::new(0),
    };
    let consumer = Arc::new(consumer(&config, context).map_err(setup)?);
    let reader = Arc::new(Mutex::new(tail_reader(&config).map_err(setup)?));
    let config = Arc::new(config);
    // The output topics must be able to take partition p's messages in partition p.
    loop {
        let (c, r) = (Arc::clone(&config), Arc::clone(&reader));
        let checked = tokio::task::spawn_blocking(move || check_topics(&c, &r))
            .await
            .map_err(|e| WorkerError::Kafka(e.to_string()))?;
        match checked {
            Ok(()) => break,
            Err(Check::Fatal(message)) => return Err(WorkerError::Kafka(message)),
            Err(Check::Retry(message)) => {
                tracing::warn!("kafka: {message}; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
        }
    }
    consumer.subscribe(&[&config.topic]).map_err(setup)?;
    tracing::info!(
        brokers = %config.brokers,
        topic = %config.topic,
        group = %config.group,
        "kafka worker consuming"
    );
    let mut producer = producer(&config).map_err(setup)?;
    // Per input partition, what a previous owner left published; read once per assignment.
    let mut published: HashMap<i32, Published> = HashMap::new();
    let mut epoch = consumer.context().epoch.load(Ordering::Acquire);
    'consume: loop {
        if *stop.borrow() {
            break;
        }
        let gathered = tokio::select! {
            g = gather(&consumer, &config) => g,
            _ = stop.changed() => break,
        };
        let now = consumer.context().epoch.load(Ordering::Acquire);
        if now != epoch {
            // New owners may have written since: read the tails again.
            published.clear();
            epoch = now;
        }
        let batch = match gathered {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "kafka: consume failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        metrics
            .kafka
            .received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let started = Instant::now();
        let messages = batch.len();
        let Some(shares) = decide(&host, &config, batch, &mut stop).await else {
            break;
        };
        if consumer.assignment_lost() {
            // The group moved on (a session lost in a long pause): the partitions' new owners
            // decide this batch again and publish it.
            tracing::warn!("kafka: assignment lost; the batch is left to the new owners");
            continue;
        }
        let decided = started.elapsed();
        let mut backoff = Duration::from_millis(50);
        loop {
            let published_now = tokio::select! {
                p = publish(&config, &metrics, &producer, &reader, &mut published, &shares) => p,
                // Nothing is committed: the next owner reads the tails and goes on.
                _ = stop.changed() => break 'consume,
            };
            match published_now {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "kafka: publishing failed; reading the output tails and retrying");
                    metrics.kafka.retries.fetch_add(1, Ordering::Relaxed);
                    // The broker has some prefix of what was sent: read it again.
                    published.clear();
                    if producer.client().fatal_error().is_some() {
                        match self::producer(&config) {
                            Ok(p) => {
                                // Dropping purges and flushes (up to half a second).
                                let old = std::mem::replace(&mut producer, p);
                                tokio::task::spawn_blocking(move || drop(old));
                            }
                            Err(e) => tracing::warn!(error = %e, "kafka: producer"),
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break 'consume,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        let published_at = started.elapsed();
        commit(&consumer, &config, &metrics, &shares).await;
        let total = started.elapsed();
        if total > SLOW_BATCH {
            tracing::info!(
                messages,
                decide_ms = decided.as_millis() as u64,
                publish_ms = (published_at - decided).as_millis() as u64,
                commit_ms = (total - published_at).as_millis() as u64,
                "kafka: slow batch"
            );
        }
    }
    tracing::info!("kafka worker stopping");
    let _ = tokio::task::spawn_blocking(move || {
        let _ = producer.flush(CALL_TIMEOUT);
        consumer.unsubscribe();
        drop(consumer);
        drop(reader);
    })
    .await;
    Ok(())
}

/// Why the topics cannot be used.
enum Check {
    /// A topic is missing or too small: the operator must act.
    Fatal(String),
    /// The broker did not answer.
    Retry(String),
}

/// The input topic exists, and the decisions and dead-letter topics have at least as many
/// partitions.
fn check_topics(config: &KafkaConfig, reader: &Mutex<BaseConsumer<Quiet>>) -> Result<(), Check> {
    let reader = reader.lock().unwrap_or_else(|p| p.into_inner());
    let mut counts = Vec::new();
    for topic in [&config.topic, &config.decisions, &config.dead_letter] {
        let metadata = reader
            .fetch_metadata(Some(topic), CALL_TIMEOUT)
            .map_err(|e| Check::Retry(format!("metadata of {topic}: {e}")))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic.as_str())
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err(Check::Fatal(format!(
                "topic {topic} does not exist: create it (the worker creates no topics)"
            )));
        }
        counts.push(partitions);
    }
    for (topic, n) in [
        (&config.decisions, counts[1]),
        (&config.dead_letter, counts[2]),
    ] {
        if n < counts[0] {
            return Err(Check::Fatal(format!(
                "topic {topic} has {n} partitions, fewer than {} ({}): the output of input partition p goes to partition p",
                config.topic, counts[0]
            )));
        }
    }
    Ok(())
}

/// Waits for a message, then takes what else arrives within the linger, up to the batch size.
/// Empty when a rebalance happened meanwhile (the new assignment reads from the committed
/// offsets again).
async fn gather(
    consumer: &StreamConsumer<Context>,
    config: &KafkaConfig,
) -> KafkaResult<Vec<OwnedMessage>> {
    let first = consumer.recv().await?.detach();
    let epoch = consumer.context().epoch.load(Ordering::Acquire);
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + config.linger;
    while batch.len() < config.batch {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "kafka: consume error");
                break;
            }
            Err(_) => break,
        }
    }
    if consumer.context().epoch.load(Ordering::Acquire) != epoch {
        tracing::info!(
            messages = batch.len(),
            "kafka: a rebalance while gathering; the batch is read again from the committed offsets"
        );
        return Ok(Vec::new());
    }
    Ok(batch)
}

/// Parses and decides a batch (durably), retrying while the node cannot take it. `None` when
/// stopped meanwhile.
async fn decide(
    host: &EngineHost,
    config: &KafkaConfig,
    batch: Vec<OwnedMessage>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Vec<Share>> {
    let mut backoff = Duration::from_millis(20);
    loop {
        let mut parsed: Vec<Parsed> = Vec::new();
        let mut errors: Vec<Option<String>> = Vec::with_capacity(batch.len());
        for m in &batch {
            let at = Coordinates {
                topic: &config.topic,
                partition: m.partition(),
                offset: m.offset(),
                timestamp_ms: m.timestamp().to_millis(),
            };
            match parse_message(host, at, m.payload()) {
                Ok(p) => {
                    parsed.push(p);
                    errors.push(None);
                }
                Err(e) => errors.push(Some(e.body().to_string())),
            }
        }
        let decided = if parsed.is_empty() {
            Ok(Vec::new())
        } else {
            host.submit(parsed).await
        };
        match decided {
            Ok(decided) => {
                let mut decided = decided.into_iter();
                let mut shares: BTreeMap<i32, Share> = BTreeMap::new();
                for (m, error) in batch.into_iter().zip(errors) {
                    let output = match error {
                        Some(error) => Output::Dead { error },
                        None => match decided.next() {
                            Some(s) => Output::Decision {
                                id: s.record.decision.transaction_id.to_string(),
                                json: serde_json::to_vec(&s.record).unwrap_or_default(),
                            },
                            // The host answers every parsed transaction; never seen.
                            None => Output::Dead {
                                error: r#"{"code":"internal","message":"no decision came back"}"#
                                    .into(),
                            },
                        },
                    };
                    let partition = m.partition();
                    shares
                        .entry(partition)
                        .or_insert_with(|| Share {
                            partition,
                            items: Vec::new(),
                        })
                        .items
                        .push((m, output));
                }
                return Some(shares.into_values().collect());
            }
            Err(e) => {
                // Nothing is committed: the batch is decided again once the node can take it.
                if !matches!(e, HostError::Overloaded) {
                    tracing::warn!(error = %e, "kafka: cannot decide the batch yet");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return None,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Produces every share's decisions and dead letters that are not out already, and waits
/// until the broker has them all.
async fn publish(
    config: &Arc<KafkaConfig>,
    metrics: &Metrics,
    producer: &FutureProducer<Quiet>,
    reader: &Arc<Mutex<BaseConsumer<Quiet>>>,
    published: &mut HashMap<i32, Published>,
    shares: &[Share],
) -> KafkaResult<()> {
    for share in shares {
        if let std::collections::hash_map::Entry::Vacant(entry) = published.entry(share.partition) {
            let (c, r, p) = (Arc::clone(config), Arc::clone(reader), share.partition);
            let found = tokio::task::spawn_blocking(move || read_published(&c, &r, p))
                .await
                .map_err(|_| KafkaError::Canceled)??;
            entry.insert(found);
        }
    }
    let mut deliveries: Vec<DeliveryFuture> = Vec::new();
    let (mut decided, mut dead, mut skipped) = (0u64, 0u64, 0u64);
    for share in shares {
        let done = published
            .get(&share.partition)
            .copied()
            .unwrap_or(Published {
                decisions: -1,
                dead: -1,
            });
        for (m, output) in &share.items {
            let source = format!("{}/{}/{}", config.topic, m.partition(), m.offset());
            let headers = OwnedHeaders::new().insert(Header {
                key: SOURCE_HEADER,
                value: Some(source.as_bytes()),
            });
            let (topic, headers, key, payload, already) = match output {
                Output::Decision { id, json } => (
                    &config.decisions,
                    headers,
                    Some(id.as_bytes()),
                    Some(json.as_slice()),
                    m.offset() <= done.decisions,
                ),
                Output::Dead { error } => (
                    &config.dead_letter,
                    headers.insert(Header {
                        key: ERROR_HEADER,
                        value: Some(error.as_bytes()),
                    }),
                    m.key(),
                    m.payload(),
                    m.offset() <= done.dead,
                ),
            };
            if already {
                skipped += 1;
                continue;
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                .partition(m.partition())
                .headers(headers);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(payload) = payload {
                record = record.payload(payload);
            }
            deliveries.push(send(producer, record).await?);
            match output {
                Output::Decision { .. } => decided += 1,
                Output::Dead { .. } => dead += 1,
            }
        }
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e),
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    let k = &metrics.kafka;
    k.decided.fetch_add(decided, Ordering::Relaxed);
    k.dead_lettered.fetch_add(dead, Ordering::Relaxed);
    k.already_published.fetch_add(skipped, Ordering::Relaxed);
    Ok(())
}

/// Enqueues a record, waiting while librdkafka's queue is full.
async fn send<'a>(
    producer: &FutureProducer<Quiet>,
    mut record: FutureRecord<'a, [u8], [u8]>,
) -> KafkaResult<DeliveryFuture> {
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// The last input offsets of `partition` in the decisions and dead-letter topics.
fn read_published(
    config: &KafkaConfig,
    reader: &Mutex<BaseConsumer<Quiet>>,
    partition: i32,
) -> KafkaResult<Published> {
    let reader = reader.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Published {
        decisions: last_source(config, &reader, &config.decisions, partition)?,
        dead: last_source(config, &reader, &config.dead_letter, partition)?,
    })
}

/// Reads the tail of `topic`'s partition `partition` up to its end; the highest input offset
/// of `partition` named by a `ringfence-source` header there (-1: none).
fn last_source(
    config: &KafkaConfig,
    reader: &BaseConsumer<Quiet>,
    topic: &str,
    partition: i32,
) -> KafkaResult<i64> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::OffsetTail(SCAN_TAIL))?;
    reader.assign(&list)?;
    let prefix = format!("{}/{partition}/", config.topic);
    let deadline = Instant::now() + SCAN_TIMEOUT;
    let mut last = -1;
    let result = loop {
        if Instant::now() > deadline {
            break Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => break Ok(last),
            Some(Err(e)) => break Err(e),
            Some(Ok(m)) => {
                let source = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == SOURCE_HEADER)
                        .and_then(|h| h.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.strip_prefix(prefix.as_str()))
                        .and_then(|o| o.parse::<i64>().ok())
                });
                if let Some(offset) = source {
                    last = last.max(offset);
                }
            }
        }
    };
    let _ = reader.unassign();
    if let Ok(last) = result {
        tracing::debug!(topic, partition, last, "kafka: output tail read");
    }
    result
}

/// Commits the offsets after the batch. A failure is logged, not retried: the decisions are
/// out, and whoever reads the partition next skips them by the output tails.
async fn commit(
    consumer: &Arc<StreamConsumer<Context>>,
    config: &Arc<KafkaConfig>,
    metrics: &Arc<Metrics>,
    shares: &[Share],
) {
    let mut list = TopicPartitionList::new();
    for share in shares {
        if let Err(e) = list.add_partition_offset(
            &config.topic,
            share.partition,
            Offset::Offset(share.next_offset()),
        ) {
            tracing::warn!(error = %e, "kafka: offset list");
            return;
        }
    }
    let offsets: Vec<(i32, i64)> = shares
        .iter()
        .map(|s| (s.partition, s.next_offset()))
        .collect();
    let c = Arc::clone(consumer);
    let committed = tokio::task::spawn_blocking(move || c.commit(&list, CommitMode::Sync)).await;
    match committed {
        Ok(Ok(())) => {
            metrics.kafka.commits.fetch_add(1, Ordering::Relaxed);
            for (partition, offset) in offsets {
                metrics.kafka.committed(&config.topic, partition, offset);
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "kafka: offset commit failed"),
        Err(e) => tracing::warn!(error = %e, "kafka: offset commit task"),
    }
}
