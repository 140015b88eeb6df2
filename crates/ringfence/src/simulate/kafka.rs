//! `ringfence simulate --kafka BROKERS --topic transactions`: publishes the simulated traffic
//! to a Kafka topic, paced like `--target`, each message keyed by card (so a partition holds
//! all of a card's transactions) and valued with the `POST /v1/transactions` JSON.

use std::future::Future;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::driver::Anchor;
use super::generator::Generator;
use super::{SimulateArgs, SimulateError};

/// What was published.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Messages handed to the producer.
    pub sent: u64,
    /// Of those, fraudulent.
    pub fraud: u64,
    /// Acknowledged by the broker.
    pub delivered: u64,
    /// Failed for good (after the producer's retries).
    pub failed: u64,
}

impl Published {
    /// One line for the terminal.
    pub fn summary(&self, topic: &str) -> String {
        format!(
            "published {} transactions ({} fraudulent) to {topic}: {} delivered, {} failed",
            self.sent, self.fraud, self.delivered, self.failed
        )
    }
}

/// Sends paced traffic until the duration, the count or `shutdown`, then waits for every
/// delivery report.
pub(crate) async fn publish(
    args: &SimulateArgs,
    brokers: &str,
    topic: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<Published, SimulateError> {
    let kafka = |e: KafkaError| SimulateError::Usage(format!("--kafka {brokers}: {e}"));
    // Idempotent: a retried send is written once.
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    for p in &args.kafka_properties {
        let (k, v) = crate::ingest::kafka::parse_property(p).map_err(SimulateError::Usage)?;
        config.set(k, v);
    }
    let producer: FutureProducer = config.create().map_err(kafka)?;
    // Fail fast, with the real reason, when no broker answers.
    let metadata_producer = producer.clone();
    let topic_owned = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        metadata_producer
            .client()
            .fetch_metadata(Some(&topic_owned), Duration::from_secs(10))
    })
    .await
    .map_err(|e| SimulateError::Task(e.to_string()))?
    .map_err(kafka)?;

    let anchor = Anchor::now();
    let generator =
        Generator::new(args.generator_config(anchor.epoch_ms)).with_run_tag(&anchor.run_tag());
    let duration = Duration::from_secs_f64(args.duration);
    let (reports, mut delivered) = tokio::sync::mpsc::channel(100_000);
    // Delivery reports, awaited in order beside the sending loop.
    let counter = tokio::spawn(async move {
        let mut totals = (0u64, 0u64);
        while let Some(report) = delivered.recv().await {
            let report: rdkafka::producer::DeliveryFuture = report;
            match report.await {
                Ok(Ok(_)) => totals.0 += 1,
                Ok(Err((e, _))) => {
                    tracing::warn!(error = %e, "simulate: a message was not delivered");
                    totals.1 += 1;
                }
                Err(_) => totals.1 += 1,
            }
        }
        totals
    });
    let mut out = Published::default();
    tokio::pin!(shutdown);
    for labeled in generator {
        if args.count.is_some_and(|max| out.sent >= max) {
            break;
        }
        let ts = labeled.tx.timestamp.map_or(anchor.epoch_ms, |t| t.millis());
        let offset = anchor.due(ts);
        if offset >= duration {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until((anchor.instant + offset).into()) => {}
            _ = &mut shutdown => break,
        }
        let payload =
            serde_json::to_vec(&labeled.tx).map_err(|e| SimulateError::Task(e.to_string()))?;
        let mut record = FutureRecord::to(topic)
            .key(labeled.tx.card_id.as_str())
            .payload(payload.as_slice());
        let future = loop {
            match producer.send_result(record) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(kafka(e)),
            }
        };
        if reports.send(future).await.is_err() {
            break;
        }
        out.sent += 1;
        out.fraud += u64::from(labeled.fraud);
    }
    drop(reports);
    let (ok, failed) = counter
        .await
        .map_err(|e| SimulateError::Task(e.to_string()))?;
    out.delivered = ok;
    out.failed = failed;
    Ok(out)
}
