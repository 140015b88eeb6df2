//! The consumer group member and its transactional producers (librdkafka through `rdkafka`).
//!
//! One loop: gather a batch from the consumer, decide it through the host (durable), then
//! publish each input partition's share in a Kafka transaction of that partition's producer,
//! with the offset after its last message. Rebalances are served only while gathering (they
//! run inside the consumer's poll), so a partition is never revoked under a batch being
//! published; a batch gathered across a rebalance is dropped, since the new assignment reads
//! again from the committed offsets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use super::{parse_message, Coordinates, KafkaConfig};
use crate::host::{EngineHost, HostError, Parsed};
use crate::ingest::WorkerError;
use crate::metrics::Metrics;

/// How long one transactional call (init, offsets, commit, abort) may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Header naming where a produced message came from: `<topic>/<partition>/<offset>`.
const SOURCE_HEADER: &str = "ringfence-source";
/// Header of a dead letter: the error, as the JSON body HTTP would have answered.
const ERROR_HEADER: &str = "ringfence-error";

type TxProducer = ThreadedProducer<DefaultProducerContext>;

/// The consumer's callbacks: rebalances (counted, and remembered so a batch gathered across
/// one is dropped), statistics (lag) and librdkafka's log, routed to tracing.
struct Context {
    metrics: Arc<Metrics>,
    topic: String,
    /// Bumped at every assignment or revocation.
    epoch: AtomicU64,
    /// The partitions of the topic assigned now.
    assigned: Mutex<HashSet<i32>>,
}

impl Context {
    fn assigned(&self) -> HashSet<i32> {
        self.assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let kafka = &self.metrics.kafka;
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, p) in &topic.partitions {
                // The last stable offset is the end a read-committed consumer can reach.
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

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, "kafka: {reason}");
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Rebalance::Revoke(list) = rebalance {
            tracing::info!(partitions = list.count(), "kafka: partitions revoked");
            self.assigned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
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
                *self.assigned.lock().unwrap_or_else(|p| p.into_inner()) =
                    partitions.iter().copied().collect();
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

fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id);
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}

fn consumer(config: &KafkaConfig, context: Context) -> KafkaResult<StreamConsumer<Context>> {
    let heartbeat = (config.session_timeout_ms / 3).clamp(100, 3_000);
    let mut c = client_config(config);
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

/// A producer for one input partition's transactions, its previous incarnation fenced.
fn producer(config: &KafkaConfig, partition: i32) -> KafkaResult<TxProducer> {
    let mut c = client_config(config);
    c.set(
        "transactional.id",
        format!("{}.{}.{partition}", config.group, config.topic),
    )
    .set("enable.idempotence", "true")
    .set("linger.ms", "1");
    let p: TxProducer = c.create()?;
    p.init_transactions(TXN_TIMEOUT)?;
    Ok(p)
}

/// What one message comes to on the output side.
enum Output {
    /// The decision's JSON, keyed by transaction id.
    Decision { id: String, json: Vec<u8> },
    /// The message as it came, with the error.
    Dead { error: String },
}

/// One partition's share of a batch.
struct Share {
    partition: i32,
    /// (message, output) in offset order.
    items: Vec<(OwnedMessage, Output)>,
}

impl Share {
    fn first_offset(&self) -> i64 {
        self.items.first().map_or(0, |(m, _)| m.offset())
    }

    fn next_offset(&self) -> i64 {
        self.items.last().map_or(0, |(m, _)| m.offset() + 1)
    }
}

/// How publishing a share ended.
enum Published {
    Committed,
    /// Another producer took the transactional id: the partition has moved on.
    Fenced,
}

/// Consumes until `stop` turns true. Kafka errors are retried; nothing is committed for a
/// batch until its decisions are durable and produced.
pub async fn run(
    host: Arc<EngineHost>,
    config: KafkaConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let metrics = Arc::clone(host.metrics());
    metrics.kafka.activate();
    let context = Context {
        metrics: Arc::clone(&metrics),
        topic: config.topic.clone(),
        epoch: AtomicU64::new(0),
        assigned: Mutex::new(HashSet::new()),
    };
    let consumer =
        Arc::new(consumer(&config, context).map_err(|e| WorkerError::Kafka(e.to_string()))?);
    consumer
        .subscribe(&[&config.topic])
        .map_err(|e| WorkerError::Kafka(e.to_string()))?;
    tracing::info!(
        brokers = %config.brokers,
        topic = %config.topic,
        group = %config.group,
        "kafka worker consuming"
    );
    let config = Arc::new(config);
    let mut producers: HashMap<i32, Arc<TxProducer>> = HashMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let gathered = tokio::select! {
            g = gather(&consumer, &config) => g,
            _ = stop.changed() => break,
        };
        let batch = match gathered {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "kafka: consume failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Producers of partitions no longer ours close (off the async threads: they flush).
        let assigned = consumer.context().assigned();
        let gone: Vec<Arc<TxProducer>> = producers
            .extract_if(|p, _| !assigned.contains(p))
            .map(|(_, p)| p)
            .collect();
        if !gone.is_empty() {
            tokio::task::spawn_blocking(move || drop(gone));
        }
        if batch.is_empty() {
            continue;
        }
        metrics
            .kafka
            .received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let Some(shares) = decide(&host, &config, batch, &mut stop).await else {
            break;
        };
        let Some(group) = consumer.group_metadata() else {
            tracing::warn!("kafka: no group metadata yet; the batch is read again");
            rewind(&consumer, &config, &shares);
            continue;
        };
        if publish(
            &config,
            &metrics,
            &mut producers,
            group,
            shares,
            &consumer,
            &mut stop,
        )
        .await
        .is_none()
        {
            break;
        }
    }
    tracing::info!("kafka worker stopping");
    let closing: Vec<_> = producers.into_values().collect();
    let _ = tokio::task::spawn_blocking(move || drop(closing)).await;
    let _ = tokio::task::spawn_blocking(move || {
        consumer.unsubscribe();
        drop(consumer)
    })
    .await;
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
                match &e {
                    HostError::Overloaded => {}
                    other => tracing::warn!(error = %other, "kafka: cannot decide the batch yet"),
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

/// Publishes every share in its partition's transaction, the partitions in parallel. Retries
/// failed transactions until they commit, the partition is fenced (then the consumer goes
/// back to the share's first message) or the worker stops (`None`).
async fn publish(
    config: &Arc<KafkaConfig>,
    metrics: &Arc<Metrics>,
    producers: &mut HashMap<i32, Arc<TxProducer>>,
    group: ConsumerGroupMetadata,
    shares: Vec<Share>,
    consumer: &StreamConsumer<Context>,
    stop: &mut watch::Receiver<bool>,
) -> Option<()> {
    let group = Arc::new(group);
    let mut pending: Vec<Share> = shares;
    let mut backoff = Duration::from_millis(50);
    while !pending.is_empty() {
        let mut tasks = Vec::with_capacity(pending.len());
        for share in pending.drain(..) {
            let existing = producers.get(&share.partition).cloned();
            let (config, group, metrics) =
                (Arc::clone(config), Arc::clone(&group), Arc::clone(metrics));
            tasks.push(tokio::task::spawn_blocking(move || {
                let producer = match existing {
                    Some(p) => p,
                    None => match producer(&config, share.partition) {
                        Ok(p) => Arc::new(p),
                        Err(e) => return (share, None, Err(e)),
                    },
                };
                let result = transact(&config, &metrics, &producer, &group, &share);
                (share, Some(producer), result)
            }));
        }
        for task in tasks {
            let Ok((share, producer, result)) = task.await else {
                // A panicked task: its share cannot be retried from here; rewinding reads it again.
                continue;
            };
            match result {
                Ok(Published::Committed) => {
                    if let Some(p) = producer {
                        producers.insert(share.partition, p);
                    }
                    metrics
                        .kafka
                        .committed(&config.topic, share.partition, share.next_offset());
                }
                Ok(Published::Fenced) => {
                    tracing::warn!(
                        partition = share.partition,
                        "kafka: fenced by a newer owner of the partition; its batch is left to it"
                    );
                    producers.remove(&share.partition);
                    rewind(consumer, config, std::slice::from_ref(&share));
                }
                Err(e) => {
                    tracing::warn!(partition = share.partition, error = %e, "kafka: transaction failed; retrying");
                    if let Some(p) = producer {
                        producers.insert(share.partition, p);
                    }
                    pending.push(share);
                }
            }
        }
        if !pending.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return None,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
    Some(())
}

/// Sends the consumer back to the first message of each share (read again, decided again
/// idempotently).
fn rewind(consumer: &StreamConsumer<Context>, config: &KafkaConfig, shares: &[Share]) {
    for share in shares {
        if let Err(e) = consumer.seek(
            &config.topic,
            share.partition,
            Offset::Offset(share.first_offset()),
            Duration::from_secs(5),
        ) {
            tracing::debug!(partition = share.partition, error = %e, "kafka: seek back failed");
        }
    }
}

/// One share in one transaction: its decisions and dead letters, and the offset after its
/// last message. An abortable failure is aborted and reported (the caller retries).
fn transact(
    config: &KafkaConfig,
    metrics: &Metrics,
    producer: &TxProducer,
    group: &ConsumerGroupMetadata,
    share: &Share,
) -> KafkaResult<Published> {
    let result = (|| {
        producer.begin_transaction()?;
        for (m, output) in &share.items {
            let source = format!("{}/{}/{}", config.topic, m.partition(), m.offset());
            let source_header = Header {
                key: SOURCE_HEADER,
                value: Some(source.as_bytes()),
            };
            match output {
                Output::Decision { id, json } => {
                    let headers = OwnedHeaders::new().insert(source_header);
                    let record = BaseRecord::to(&config.decisions)
                        .key(id.as_bytes())
                        .payload(json.as_slice())
                        .headers(headers);
                    send(producer, record)?;
                }
                Output::Dead { error } => {
                    let headers = OwnedHeaders::new().insert(source_header).insert(Header {
                        key: ERROR_HEADER,
                        value: Some(error.as_bytes()),
                    });
                    let mut record: BaseRecord<'_, [u8], [u8]> =
                        BaseRecord::to(&config.dead_letter).headers(headers);
                    if let Some(key) = m.key() {
                        record = record.key(key);
                    }
                    if let Some(payload) = m.payload() {
                        record = record.payload(payload);
                    }
                    send(producer, record)?;
                }
            }
        }
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(
            &config.topic,
            share.partition,
            Offset::Offset(share.next_offset()),
        )?;
        producer.send_offsets_to_transaction(&offsets, group, TXN_TIMEOUT)?;
        commit(producer)
    })();
    match result {
        Ok(()) => {
            let dead = share
                .items
                .iter()
                .filter(|(_, o)| matches!(o, Output::Dead { .. }))
                .count() as u64;
            metrics.kafka.transactions.fetch_add(1, Ordering::Relaxed);
            metrics
                .kafka
                .decided
                .fetch_add(share.items.len() as u64 - dead, Ordering::Relaxed);
            metrics
                .kafka
                .dead_lettered
                .fetch_add(dead, Ordering::Relaxed);
            Ok(Published::Committed)
        }
        Err(e) if fenced(&e) => Ok(Published::Fenced),
        Err(e) => {
            metrics.kafka.aborted.fetch_add(1, Ordering::Relaxed);
            if let Err(abort) = producer.abort_transaction(TXN_TIMEOUT) {
                if fenced(&abort) {
                    return Ok(Published::Fenced);
                }
                tracing::debug!(error = %abort, "kafka: abort failed");
            }
            Err(e)
        }
    }
}

/// Commits, retrying what librdkafka calls retriable (a timeout: the outcome is unknown until
/// a retry answers).
fn commit(producer: &TxProducer) -> KafkaResult<()> {
    let mut tries = 0;
    loop {
        match producer.commit_transaction(TXN_TIMEOUT) {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < 3 => tries += 1,
            other => return other,
        }
    }
}

/// Enqueues a record, waiting while librdkafka's queue is full.
fn send(producer: &TxProducer, mut record: BaseRecord<'_, [u8], [u8]>) -> KafkaResult<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Whether an error means a newer producer owns the transactional id (or this one is dead).
fn fenced(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => {
            t.is_fatal()
                || matches!(
                    t.code(),
                    RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
                )
        }
        other => matches!(
            other.rdkafka_error_code(),
            Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fatal)
        ),
    }
}
