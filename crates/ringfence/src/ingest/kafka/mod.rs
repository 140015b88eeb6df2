//! `ringfence worker --kafka`: scores a Kafka topic as a member of a consumer group and
//! produces each decision to a decisions topic, keyed by transaction id.
//!
//! One decision per transaction in the decisions topic, with the idempotent producer and no
//! broker transactions:
//! - a batch is decided through the same host as HTTP, so every decision is durable in the
//!   records store (idempotent by transaction id) before anything reaches Kafka;
//! - its decisions and dead letters are produced, those of input partition `p` to partition
//!   `p` of their topic, by an idempotent producer with the gapless guarantee: each output
//!   partition holds, in input order, a prefix of what was sent to it;
//! - the offsets after the batch are committed only once the broker has acknowledged all of
//!   it;
//! - a worker given a partition (after a rebalance or a crash) reads the tail of the output
//!   partitions: the `ringfence-source` header of the last message there names the last input
//!   offset its predecessor published. Messages up to it are decided again (the store answers
//!   with the stored decision, state untouched) but not published again.
//!
//! What this cannot fence is a zombie: a worker that lost its group session without dying
//! (a long pause) and publishes after its successor read the tail. A worker whose assignment
//! librdkafka considers lost publishes nothing, but a pause between that check and the
//! broker's acknowledgement can still repeat a decision. Kafka transactions would fence it;
//! the broker the tests run on (Tansu 0.6) does not implement them (no `EndTxn`), so they
//! could not be built and tested here.
//!
//! A message's value is a transaction in the JSON of `POST /v1/transactions`. Without a
//! `transaction_id` the message's coordinates name it (`<topic>-<partition>-<offset>`), and
//! without a `timestamp` the message's timestamp is used: a redelivered message is the same
//! transaction. A message that does not parse goes to the dead-letter topic (the original key
//! and value, the error in the `ringfence-error` header) and the worker goes on.

use ringfence_core::event::{RawTransaction, Timestamp};

use crate::host::{EngineHost, Parsed};
use crate::http::error::ApiError;

mod metrics;
#[cfg(feature = "kafka")]
mod worker;

pub use metrics::KafkaMetrics;
#[cfg(feature = "kafka")]
pub use worker::run;

/// How the worker reads Kafka (beside `--group`, `--consumer` and `--batch`, shared with the
/// Redis stream worker).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (`host:port,...`): consume this cluster's `--topic` instead of a
    /// Redis stream.
    #[arg(long, value_name = "BROKERS", env = "RINGFENCE_KAFKA")]
    pub kafka: Option<String>,
    /// Topic of transactions to consume.
    #[arg(long, default_value = "transactions")]
    pub topic: String,
    /// Topic the decisions are produced to, keyed by transaction id.
    #[arg(long, default_value = "decisions")]
    pub decisions_topic: String,
    /// Topic for messages that do not parse. Default: `<topic>.dead-letter`.
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
    /// The consumer group's session timeout: a worker silent this long is replaced.
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: u32,
    /// Longest wait for more messages once a batch has begun.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Any other librdkafka property for the consumer and producers, `key=value` (repeatable).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
}

/// A resolved Kafka worker configuration.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Input topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// This member's client id.
    pub client_id: String,
    /// Output topic.
    pub decisions: String,
    /// Dead-letter topic.
    pub dead_letter: String,
    /// Most messages decided at once.
    pub batch: usize,
    /// Session timeout.
    pub session_timeout_ms: u32,
    /// Wait for more messages once a batch has begun.
    pub linger: std::time::Duration,
    /// Extra librdkafka properties.
    pub properties: Vec<(String, String)>,
}

/// Properties the worker sets itself: overriding them would break its guarantees.
const OWN_PROPERTIES: [&str; 10] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "acks",
    "message.timeout.ms",
    "transactional.id",
];

impl KafkaArgs {
    /// Fills the defaults; `None` without `--kafka`. `group`, `consumer` and `batch` come from
    /// the flags shared with the Redis stream worker.
    pub fn resolve(
        &self,
        group: Option<&str>,
        consumer: Option<&str>,
        batch: usize,
    ) -> Result<Option<KafkaConfig>, String> {
        let Some(brokers) = &self.kafka else {
            return Ok(None);
        };
        if brokers.trim().is_empty() {
            return Err("--kafka: give the bootstrap servers, e.g. localhost:9092".into());
        }
        for (flag, topic) in [
            ("--topic", self.topic.as_str()),
            ("--decisions-topic", self.decisions_topic.as_str()),
        ] {
            check_topic(flag, topic)?;
        }
        let dead_letter = self
            .dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dead-letter", self.topic));
        check_topic("--dead-letter-topic", &dead_letter)?;
        if self.topic == self.decisions_topic || self.topic == dead_letter {
            return Err(
                "--topic must differ from --decisions-topic and --dead-letter-topic".into(),
            );
        }
        let mut properties = Vec::with_capacity(self.properties.len());
        for p in &self.properties {
            let (k, v) = parse_property(p)?;
            if OWN_PROPERTIES.contains(&k.as_str()) {
                return Err(format!(
                    "--kafka-property {k}: set by the worker itself (its guarantees depend on it)"
                ));
            }
            properties.push((k, v));
        }
        if !(1_000..=3_600_000).contains(&self.session_timeout_ms) {
            return Err("--session-timeout-ms must be between 1000 and 3600000".into());
        }
        Ok(Some(KafkaConfig {
            brokers: brokers.trim().to_owned(),
            topic: self.topic.clone(),
            group: group.unwrap_or("ringfence").to_owned(),
            client_id: consumer.map_or_else(default_client_id, str::to_owned),
            decisions: self.decisions_topic.clone(),
            dead_letter,
            batch: batch.clamp(1, 10_000),
            session_timeout_ms: self.session_timeout_ms,
            linger: std::time::Duration::from_millis(self.linger_ms.min(1_000)),
            properties,
        }))
    }
}

/// One `--kafka-property key=value`, trimmed.
pub fn parse_property(p: &str) -> Result<(String, String), String> {
    match p.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("--kafka-property {p:?}: expected key=value")),
    }
}

fn default_client_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into());
    format!("ringfence-{host}-{}", std::process::id())
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic(flag: &str, topic: &str) -> Result<(), String> {
    let legal = topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if topic.is_empty() || topic.len() > 249 || !legal || topic == "." || topic == ".." {
        return Err(format!(
            "{flag} {topic:?}: a topic name is 1 to 249 letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// Where a message sits: its name when it carries no transaction id, and its time when it
/// carries no timestamp.
#[derive(Debug, Clone, Copy)]
pub struct Coordinates<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The message's timestamp (create or log-append time), when it has one.
    pub timestamp_ms: Option<i64>,
}

/// One message's value as a parsed transaction, or the error a client would get over HTTP.
pub fn parse_message(
    host: &EngineHost,
    at: Coordinates<'_>,
    value: Option<&[u8]>,
) -> Result<Parsed, ApiError> {
    let Some(bytes) = value else {
        return Err(ApiError::MalformedJson(
            "the message has no value (expected a transaction as a JSON object)".into(),
        ));
    };
    let mut raw: RawTransaction = crate::http::transactions::parse_raw(bytes)?;
    if raw.transaction_id.is_none() {
        raw.transaction_id = Some(format!("{}-{}-{}", at.topic, at.partition, at.offset));
    }
    if raw.timestamp.is_none() {
        if let Some(ms) = at.timestamp_ms.filter(|ms| *ms >= 0) {
            raw.timestamp = Some(Timestamp::from_millis(ms).to_rfc3339());
        }
    }
    host.parse(raw).map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(brokers: &str) -> KafkaArgs {
        KafkaArgs {
            kafka: Some(brokers.into()),
            topic: "transactions".into(),
            decisions_topic: "decisions".into(),
            session_timeout_ms: 10_000,
            linger_ms: 5,
            ..KafkaArgs::default()
        }
    }

    #[test]
    fn resolves_defaults_and_refuses_what_would_break_the_guarantees() {
        assert!(KafkaArgs::default()
            .resolve(None, None, 500)
            .expect("no kafka")
            .is_none());
        let c = args("localhost:9092")
            .resolve(None, Some("w1"), 0)
            .expect("valid")
            .expect("kafka");
        assert_eq!(c.group, "ringfence");
        assert_eq!(c.client_id, "w1");
        assert_eq!(c.dead_letter, "transactions.dead-letter");
        assert_eq!(c.batch, 1);

        let err = |a: KafkaArgs| a.resolve(Some("g"), None, 10).expect_err("refused");
        assert!(err(args(" ")).contains("--kafka"));
        let mut a = args("b:1");
        a.topic = "bad topic".into();
        assert!(err(a).contains("--topic"));
        let mut a = args("b:1");
        a.decisions_topic = "transactions".into();
        assert!(err(a).contains("must differ"));
        let mut a = args("b:1");
        a.properties = vec!["enable.auto.commit=true".into()];
        assert!(err(a).contains("set by the worker"));
        let mut a = args("b:1");
        a.properties = vec!["fetch.wait.max.ms".into()];
        assert!(err(a).contains("key=value"));
        let mut a = args("b:1");
        a.properties = vec![" fetch.wait.max.ms = 10 ".into()];
        let c = a.resolve(Some("g"), None, 10).expect("ok").expect("kafka");
        assert_eq!(
            c.properties,
            vec![("fetch.wait.max.ms".to_owned(), "10".to_owned())]
        );
    }
}
