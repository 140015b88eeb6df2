//! Alerts into Redis, in the layout the fraud team already queries with `redis-cli`:
//!
//! | key / channel | what |
//! |---|---|
//! | `fraud:alerts:accounts` (set) | every account that has raised an alert |
//! | `fraud:alerts:sender:<account>` (string) | the latest alert of the account, as JSON |
//! | `fraud:count:sender:<account>` (string) | the account's alerts in the escalation window, as of its latest alert (expires a window after it) |
//! | `fraud:alerts:<type>` (channel) | every alert of that type (`velocity`, `ring`, `model`, ...) |
//! | `fraud_alerts` (channel) | every alert |
//!
//! One alert is one atomic script call (SADD, SET, SET, two PUBLISH); a burst of alerts goes
//! in one pipelined round trip.
//!
//! The count is the very number the escalation ladder reads: the engine counts an account's
//! alerts over the escalation window, in event time and log order, and the count key is set
//! to that number (not incremented), so a retried pipeline or a second node writing the same
//! alert cannot make Redis disagree with the ladder. It expires one window after the latest
//! alert, when the ladder's count has fallen to zero too. A background task owns the connection: while Redis is unreachable
//! it keeps the alerts queued and retries with backoff, so decisions never wait on Redis. The
//! URL's password never reaches a log or an error.

use std::path::Path;
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
/// `ca_cert` (PEM) is the authority a `rediss://` server's certificate must chain to, for
/// servers with a private CA; without it the system's trust store is used.
pub fn client(url: &Secret, ca_cert: Option<&Path>) -> Result<redis::Client, RedisUrlError> {
    let text = url.expose();
    if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
        return Err(RedisUrlError(
            "the URL must start with redis:// or rediss:// (TLS)".into(),
        ));
    }
    // The kind only: a parse error's detail may quote the URL, password included.
    let invalid = |e: redis::RedisError| RedisUrlError(format!("invalid URL ({})", e.category()));
    match ca_cert {
        None => redis::Client::open(text).map_err(invalid),
        Some(_) if !text.starts_with("rediss://") => Err(RedisUrlError(
            "a CA certificate applies to rediss:// (TLS) URLs only".into(),
        )),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                RedisUrlError(format!(
                    "cannot read CA certificate {}: {e}",
                    path.display()
                ))
            })?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(text, certs).map_err(|e| {
                RedisUrlError(format!(
                    "TLS setup with {} failed ({})",
                    path.display(),
                    e.category()
                ))
            })
        }
    }
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
    /// `window_ms` is the escalation window (how long a count key lives).
    pub fn start(
        client: redis::Client,
        metrics: Arc<Metrics>,
        window_ms: i64,
    ) -> (RedisAlerts, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_loop(client, rx, metrics.clone(), window_ms.max(1)));
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
    window_ms: i64,
) {
    let mut con: Option<redis::aio::MultiplexedConnection> = None;
    let script = redis::Script::new(WRITE_ALERT);
    let mut batch: Vec<AlertEvent> = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return; // every sender gone and the queue empty
        }
        let pipe = pipeline(&script, &batch, window_ms);
        let mut backoff = Duration::from_millis(50);
        loop {
            let result = match con.as_mut() {
                Some(c) => pipe.query_async::<()>(c).await,
                // A fresh connection (first use, or after a failure, which may have been a
                // restarted Redis without the script) loads the script first: a pipeline
                // sends it by hash only.
                None => match client.get_multiplexed_async_connection().await {
                    Ok(mut c) => match script.prepare_invoke().load_async(&mut c).await {
                        Ok(_) => {
                            let r = pipe.query_async::<()>(&mut c).await;
                            con = Some(c);
                            r
                        }
                        Err(e) => Err(e),
                    },
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

/// Writes one alert: adds the account to the set, publishes the alert on its channels, and
/// sets the latest alert and the count unless a newer alert of the account (by event time;
/// on a tie, the higher count) is already there. Two nodes can finish alerts of one account
/// in either order; this keeps the keys at the latest, so the count stays the ladder's.
///
/// KEYS: accounts set, latest-alert key, count key. ARGV: account, alert JSON, event time
/// (ms), count, window (ms), typed channel, all-alerts channel.
const WRITE_ALERT: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
local latest = true
local current = redis.call('GET', KEYS[2])
if current then
  local ok, prev = pcall(cjson.decode, current)
  if ok and type(prev) == 'table' and type(prev.alert_time_ms) == 'number' then
    local at = tonumber(ARGV[3])
    if prev.alert_time_ms > at then
      latest = false
    elseif prev.alert_time_ms == at then
      local n = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
      if n > tonumber(ARGV[4]) then
        latest = false
      end
    end
  end
end
if latest then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
end
redis.call('PUBLISH', ARGV[6], ARGV[2])
redis.call('PUBLISH', ARGV[7], ARGV[2])
return 0
"#;

/// The commands for a batch of alerts: one script call each, in one round trip. Each call is
/// atomic; a retried batch repeats only idempotent writes (and the publications).
fn pipeline(script: &redis::Script, alerts: &[AlertEvent], window_ms: i64) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for a in alerts {
        let json = serde_json::to_string(a).unwrap_or_else(|_| "{}".into());
        let account = &a.sender_account_id;
        let mut call = script.prepare_invoke();
        call.key(ACCOUNTS_KEY)
            .key(format!("fraud:alerts:sender:{account}"))
            .key(format!("fraud:count:sender:{account}"))
            .arg(account)
            .arg(&json)
            .arg(a.alert_time_ms)
            .arg(a.alert_count)
            .arg(window_ms)
            .arg(format!("fraud:alerts:{}", a.channel_type()))
            .arg(ALL_CHANNEL);
        pipe.invoke_script(&call).ignore();
    }
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_echoing_them() {
        let bad = client(&Secret::new("http://user:hunter2@host:6379"), None).err();
        let msg = bad.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("redis:// or rediss://"), "{msg}");
        assert!(!msg.contains("hunter2"));
        let bad = client(&Secret::new("redis://:hunter2@host:notaport"), None).err();
        let msg = bad.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.starts_with("redis: invalid URL"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(client(&Secret::new("redis://:pw@127.0.0.1:6379/2"), None).is_ok());
        assert!(client(&Secret::new("rediss://user:pw@127.0.0.1:6380"), None).is_ok());
    }
}
