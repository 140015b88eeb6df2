//! Alerts into Redis, in the layout the fraud team already queries with `redis-cli`:
//!
//! | key / channel | what |
//! |---|---|
//! | `fraud:alerts:accounts` (set) | every account that has raised an alert |
//! | `fraud:alerts:sender:<account>` (string) | the latest alert of the account, as JSON |
//! | `fraud:count:sender:<account>` (string) | how many alerts the account has raised |
//! | `fraud:alerts:<type>` (channel) | every alert of that type (`velocity`, `ring`, `model`, ...) |
//! | `fraud_alerts` (channel) | every alert |
//!
//! One alert is one atomic `MULTI` pipeline (SADD, SET, INCR, two PUBLISH); a burst of alerts
//! goes in one round trip. A background task owns the connection: while Redis is unreachable
//! it keeps the alerts queued and retries with backoff, so decisions never wait on Redis. The
//! URL's password never reaches a log or an error.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::AlertEvent;
use crate::config::Secret;
use crate::metrics::Metrics;

/// Alerts waiting for Redis before new ones are dropped (and counted).
const QUEUE: usize = 100_000;
/// Most alerts in one pipeline.
const BATCH: usize = 512;
/// Longest wait between two attempts while Redis is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Set of accounts with alerts.
pub const ACCOUNTS_KEY: &str = "fraud:alerts:accounts";
/// Channel every alert is published on.
pub const ALL_CHANNEL: &str = "fraud_alerts";

/// Why the Redis URL was refused.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisUrlError(String);

/// Parses a `redis://` or `rediss://` URL without connecting; the error never repeats the URL.
pub fn client(url: &Secret) -> Result<redis::Client, RedisUrlError> {
    let text = url.expose();
    if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
        return Err(RedisUrlError(
            "the URL must start with redis:// or rediss:// (TLS)".into(),
        ));
    }
    redis::Client::open(text).map_err(|e| {
        RedisUrlError(format!(
            "invalid URL ({})",
            // The kind only: a parse error's detail may quote the URL, password included.
            e.category()
        ))
    })
}

/// The handle the host keeps: hands alerts to the background writer.
#[derive(Clone)]
pub struct RedisAlerts {
    queue: mpsc::Sender<AlertEvent>,
    metrics: Arc<Metrics>,
}

impl RedisAlerts {
    /// Starts the writer task (on the current Tokio runtime). It connects lazily and ends
    /// once every handle is dropped and the queue is written.
    pub fn start(client: redis::Client, metrics: Arc<Metrics>) -> (RedisAlerts, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_loop(client, rx, metrics.clone()));
        (RedisAlerts { queue, metrics }, task)
    }

    /// Queues an alert; never waits. A full queue (Redis down for long) drops and counts it:
    /// the alert stays in the records store either way.
    pub fn publish(&self, alert: AlertEvent) {
        if self.queue.try_send(alert).is_err() {
            self.metrics
                .redis_alerts_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write_loop(
    client: redis::Client,
    mut rx: mpsc::Receiver<AlertEvent>,
    metrics: Arc<Metrics>,
) {
    let mut con: Option<redis::aio::MultiplexedConnection> = None;
    let mut batch: Vec<AlertEvent> = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return; // every sender gone and the queue empty
        }
        let pipe = pipeline(&batch);
        let mut backoff = Duration::from_millis(50);
        loop {
            let result = match con.as_mut() {
                Some(c) => pipe.query_async::<()>(c).await,
                None => match client.get_multiplexed_async_connection().await {
                    Ok(mut c) => {
                        let r = pipe.query_async::<()>(&mut c).await;
                        con = Some(c);
                        r
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    metrics
                        .redis_alerts_published
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    metrics
                        .redis_alerts_failures
                        .fetch_add(1, Ordering::Relaxed);
                    // The category only: never the URL or the server's words about auth.
                    tracing::warn!(
                        error = e.category(),
                        pending = batch.len(),
                        "writing alerts to redis failed; retrying"
                    );
                    con = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        batch.clear();
    }
}

/// The commands for a batch of alerts, each alert's five in one `MULTI`.
fn pipeline(alerts: &[AlertEvent]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for a in alerts {
        let json = serde_json::to_string(a).unwrap_or_else(|_| "{}".into());
        let account = &a.sender_account_id;
        pipe.cmd("SADD").arg(ACCOUNTS_KEY).arg(account).ignore();
        pipe.cmd("SET")
            .arg(format!("fraud:alerts:sender:{account}"))
            .arg(&json)
            .ignore();
        pipe.cmd("INCR")
            .arg(format!("fraud:count:sender:{account}"))
            .ignore();
        pipe.cmd("PUBLISH")
            .arg(format!("fraud:alerts:{}", a.channel_type()))
            .arg(&json)
            .ignore();
        pipe.cmd("PUBLISH").arg(ALL_CHANNEL).arg(&json).ignore();
    }
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_echoing_them() {
        let bad = client(&Secret::new("http://user:hunter2@host:6379")).err();
        let msg = bad.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("redis:// or rediss://"), "{msg}");
        assert!(!msg.contains("hunter2"));
        let bad = client(&Secret::new("redis://:hunter2@host:notaport")).err();
        let msg = bad.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.starts_with("redis: invalid URL"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(client(&Secret::new("redis://:pw@127.0.0.1:6379/2")).is_ok());
        assert!(client(&Secret::new("rediss://user:pw@127.0.0.1:6380")).is_ok());
    }
}
