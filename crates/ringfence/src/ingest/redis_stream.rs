//! `ringfence worker`: scores the transactions of a Redis stream as a member of a consumer
//! group.
//!
//! Each round reads a batch with `XREADGROUP`, decides it through the same host as HTTP (so a
//! decision is durable in the records store before anything else happens), then, in one
//! `MULTI`, appends the decisions to the decisions stream and `XACK`s the entries. An entry is
//! acknowledged only after its decision is durable, so a crash at any point leaves it pending:
//! the same worker re-reads its own pending entries when it starts, and any worker claims
//! entries another has left idle too long (`XAUTOCLAIM`). Re-deciding is idempotent by
//! transaction id: the stored decision comes back (marked duplicate) and state is not touched
//! twice. The decisions stream is therefore at-least-once; a re-sent decision carries
//! `duplicate = 1`.
//!
//! An entry holds either one field `json` with the transaction as JSON, or the transaction's
//! fields flat (`XADD transactions * user_id u1 card_id c1 amount 12.50 merchant m1`; `amount`,
//! `lat` and `lon` are read as numbers). Without a `transaction_id` the entry's stream id is
//! used (`<stream>-<entry id>`), and without a `timestamp` the entry's time: a redelivered
//! entry is the same transaction. An entry that does not parse goes to the dead-letter stream
//! with the error, and is acknowledged: one bad entry never stops the worker.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};
use redis::Value as RedisValue;
use serde_json::{Map, Value};

use crate::host::{EngineHost, HostError, Parsed, Submitted};
use crate::http::error::ApiError;

/// How the worker reads its stream.
#[derive(clap::Args, Debug, Clone)]
pub struct StreamArgs {
    /// Stream to consume.
    #[arg(long, default_value = "transactions")]
    pub stream: String,
    /// Consumer group (a Redis stream's is created at the start of the stream if missing).
    /// Default: `scorers` on a Redis stream, `ringfence` on Kafka.
    #[arg(long)]
    pub group: Option<String>,
    /// This consumer's name in the group; keep it stable across restarts so the worker picks
    /// up its own pending entries first (on Kafka: the client id). Default: `<hostname>-<pid>`.
    #[arg(long)]
    pub consumer: Option<String>,
    /// Stream the decisions are appended to.
    #[arg(long, default_value = "decisions")]
    pub decisions_stream: String,
    /// Dead-letter stream for entries that do not parse. Default: `<stream>:dead`.
    #[arg(long)]
    pub dead_letter_stream: Option<String>,
    /// Entries per read.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Entries pending this long with another consumer are claimed (a crashed worker's).
    #[arg(long, default_value_t = 30_000)]
    pub claim_idle_ms: u64,
}

/// A resolved stream configuration.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    stream: String,
    group: String,
    consumer: String,
    decisions: String,
    dead: String,
    batch: usize,
    claim_idle_ms: u64,
}

impl StreamArgs {
    /// Fills the defaults.
    pub fn resolve(&self) -> StreamConfig {
        let consumer = self.consumer.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        });
        StreamConfig {
            dead: self
                .dead_letter_stream
                .clone()
                .unwrap_or_else(|| format!("{}:dead", self.stream)),
            stream: self.stream.clone(),
            group: self.group.clone().unwrap_or_else(|| "scorers".into()),
            consumer,
            decisions: self.decisions_stream.clone(),
            batch: self.batch.clamp(1, 10_000),
            claim_idle_ms: self.claim_idle_ms,
        }
    }
}

pub use super::WorkerError;

/// Consumes the stream until `stop` completes. Redis errors are retried (entries stay
/// pending); a storage failure ends the worker, since nothing could be acknowledged.
pub async fn run(
    host: Arc<EngineHost>,
    client: redis::Client,
    config: StreamConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let mut backoff = Duration::from_millis(50);
    // Own pending entries first (a restart after a crash), then new ones.
    let mut own_pending_done = false;
    let mut last_claim = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let stopping = stop.clone();
        let round = async {
            let mut con = client.get_multiplexed_async_connection().await?;
            ensure_group(&mut con, &config).await?;
            loop {
                if *stopping.borrow() {
                    return Ok::<(), Failure>(());
                }
                let claim_due =
                    last_claim.elapsed() >= Duration::from_millis(config.claim_idle_ms.max(100));
                let entries = if !own_pending_done {
                    let e = read(&mut con, &config, "0", None).await?;
                    if e.is_empty() {
                        own_pending_done = true;
                    }
                    e
                } else if claim_due {
                    last_claim = std::time::Instant::now();
                    claim(&mut con, &config).await?
                } else {
                    read(&mut con, &config, ">", Some(1000)).await?
                };
                if !entries.is_empty() {
                    process(&host, &mut con, &config, entries).await?;
                }
            }
        };
        let result = tokio::select! {
            r = round => r,
            _ = stop.changed() => Ok(()),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(Failure::Storage(e)) => return Err(WorkerError::Storage(e)),
            Err(Failure::Redis(e)) => {
                tracing::warn!(error = e.category(), "redis stream: retrying");
                own_pending_done = false;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(Failure::Busy) => {
                // The batch stays in this consumer's pending list: read it again from there.
                own_pending_done = false;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

enum Failure {
    Redis(redis::RedisError),
    Storage(String),
    /// The write queue is full: the entries stay pending and are read again.
    Busy,
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Self {
        Failure::Redis(e)
    }
}

async fn ensure_group(con: &mut MultiplexedConnection, c: &StreamConfig) -> Result<(), Failure> {
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&c.stream)
        .arg(&c.group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(con)
        .await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn read(
    con: &mut MultiplexedConnection,
    c: &StreamConfig,
    from: &str,
    block_ms: Option<usize>,
) -> Result<Vec<StreamId>, Failure> {
    let mut opts = StreamReadOptions::default()
        .group(&c.group, &c.consumer)
        .count(c.batch);
    if let Some(ms) = block_ms {
        opts = opts.block(ms);
    }
    let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
        .arg(&opts)
        .arg("STREAMS")
        .arg(&c.stream)
        .arg(from)
        .query_async(con)
        .await?;
    Ok(reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default())
}

async fn claim(
    con: &mut MultiplexedConnection,
    c: &StreamConfig,
) -> Result<Vec<StreamId>, Failure> {
    let mut out = Vec::new();
    let mut cursor = "0-0".to_owned();
    // A bounded number of pages per claim round keeps the loop responsive.
    for _ in 0..10 {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&c.stream)
            .arg(&c.group)
            .arg(&c.consumer)
            .arg(c.claim_idle_ms)
            .arg(&cursor)
            .arg("COUNT")
            .arg(c.batch)
            .query_async(con)
            .await?;
        let done = reply.next_stream_id == "0-0";
        out.extend(reply.claimed);
        cursor = reply.next_stream_id;
        if done || out.len() >= c.batch {
            break;
        }
    }
    if !out.is_empty() {
        tracing::info!(
            entries = out.len(),
            "claimed entries idle with other consumers"
        );
    }
    Ok(out)
}

/// What became of one entry.
enum Outcome {
    Decided(usize),
    Dead(Value),
}

async fn process(
    host: &EngineHost,
    con: &mut MultiplexedConnection,
    c: &StreamConfig,
    entries: Vec<StreamId>,
) -> Result<(), Failure> {
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut batch: Vec<Parsed> = Vec::new();
    for e in &entries {
        match parse_entry(host, &c.stream, e) {
            Ok(p) => {
                outcomes.push(Outcome::Decided(batch.len()));
                batch.push(p);
            }
            Err(err) => outcomes.push(Outcome::Dead(err.body())),
        }
    }
    let decided: Vec<Submitted> = if batch.is_empty() {
        Vec::new()
    } else {
        match host.submit(batch).await {
            Ok(d) => d,
            // A full disk clears when space returns: retry, as when at capacity.
            Err(HostError::Overloaded | HostError::StorageFull(_)) => return Err(Failure::Busy),
            Err(e) => return Err(Failure::Storage(e.to_string())),
        }
    };
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (e, outcome) in entries.iter().zip(&outcomes) {
        match outcome {
            Outcome::Decided(i) => {
                let Some(s) = decided.get(*i) else { continue };
                let json = serde_json::to_string(s).unwrap_or_else(|_| "{}".into());
                pipe.cmd("XADD")
                    .arg(&c.decisions)
                    .arg("*")
                    .arg("transaction_id")
                    .arg(&s.record.decision.transaction_id)
                    .arg("decision")
                    .arg(s.record.decision.decision.as_str())
                    .arg("score")
                    .arg(s.record.decision.score)
                    .arg("duplicate")
                    .arg(u8::from(s.duplicate))
                    .arg("json")
                    .arg(json)
                    .ignore();
            }
            Outcome::Dead(error) => {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&c.dead)
                    .arg("*")
                    .arg("source_id")
                    .arg(&e.id)
                    .arg("error")
                    .arg(error.to_string());
                for (k, v) in &e.map {
                    if let Some(text) = value_text(v) {
                        cmd.arg(format!("field:{k}")).arg(text);
                    }
                }
                pipe.add_command(cmd).ignore();
            }
        }
    }
    let mut ack = redis::cmd("XACK");
    ack.arg(&c.stream).arg(&c.group);
    for e in &entries {
        ack.arg(&e.id);
    }
    pipe.add_command(ack).ignore();
    pipe.query_async::<()>(con).await?;
    Ok(())
}

fn value_text(v: &RedisValue) -> Option<String> {
    match v {
        RedisValue::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        RedisValue::SimpleString(s) => Some(s.clone()),
        RedisValue::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Fields read as numbers in the flat form.
const NUMERIC_FIELDS: [&str; 3] = ["amount", "lat", "lon"];

/// One stream entry as a parsed transaction, or the error a client would get over HTTP.
fn parse_entry(host: &EngineHost, stream: &str, e: &StreamId) -> Result<Parsed, ApiError> {
    let mut object = match e.map.get("json") {
        Some(v) => {
            let text = value_text(v).unwrap_or_default();
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(ApiError::MalformedJson("expected a JSON object".into())),
                Err(err) => return Err(ApiError::MalformedJson(err.to_string())),
            }
        }
        None => {
            let mut m = Map::new();
            for (k, v) in &e.map {
                let Some(text) = value_text(v) else { continue };
                let value = match text.parse::<f64>() {
                    Ok(n) if NUMERIC_FIELDS.contains(&k.as_str()) => {
                        serde_json::Number::from_f64(n).map_or(Value::String(text), Value::Number)
                    }
                    _ => Value::String(text),
                };
                m.insert(k.clone(), value);
            }
            m
        }
    };
    // A redelivered entry must be the same transaction: its id and time come from the entry.
    object
        .entry("transaction_id")
        .or_insert_with(|| Value::String(format!("{stream}-{}", e.id)));
    if !object.contains_key("timestamp") {
        if let Some(ms) = e.id.split('-').next().and_then(|m| m.parse::<i64>().ok()) {
            let ts = ringfence_core::event::Timestamp::from_millis(ms);
            object.insert("timestamp".into(), Value::String(ts.to_rfc3339()));
        }
    }
    let bytes = serde_json::to_vec(&Value::Object(object))
        .map_err(|err| ApiError::MalformedJson(err.to_string()))?;
    let raw = crate::http::transactions::parse_raw(&bytes)?;
    host.parse(raw).map_err(ApiError::from)
}
