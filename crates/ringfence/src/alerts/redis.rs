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
//! alert, when the ladder's count has fallen to zero too.
//!
//! Delivery is from the node's local outbox (alerts committed with their decisions), in
//! sequence order, with the delivered position saved in the data directory: a background task
//! owns the connection, retries with backoff while Redis is unreachable (decisions never wait
//! on Redis), and resumes after a restart or crash where it stopped. At least once: a batch
//! cut short by a crash is written again, which the script makes harmless for the keys (the
//! channels may see such an alert twice). The URL's password never reaches a log or an error.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::outbox::OutboxFeed;
use super::AlertEvent;
use crate::config::Secret;
use crate::metrics::Metrics;

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

/// Starts the writer task (on the current Tokio runtime), delivering the alerts of `feed`
/// (the node's outbox from this sink's saved position). It connects lazily and ends after
/// the feed's [`super::outbox::SinkHandle::close`] once the outbox is delivered. `window_ms`
/// is the escalation window (how long a count key lives).
pub fn start(
    client: redis::Client,
    metrics: Arc<Metrics>,
    window_ms: i64,
    feed: OutboxFeed,
) -> JoinHandle<()> {
    let writer = Writer {
        client,
        metrics,
        window_ms: window_ms.max(1),
        feed,
    };
    tokio::spawn(writer.run())
}

/// The background writer: outbox to Redis, in sequence order.
struct Writer {
    client: redis::Client,
    metrics: Arc<Metrics>,
    window_ms: i64,
    feed: OutboxFeed,
}

impl Writer {
    async fn run(mut self) {
        let script = redis::Script::new(WRITE_ALERT);
        let mut con: Option<redis::aio::MultiplexedConnection> = None;
        loop {
            let batch = match self.feed.read(BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    if self.feed.closing() {
                        return; // the store is closed: what is left goes at the next start
                    }
                    tracing::warn!(error = %e, "reading the alert outbox failed; retrying");
                    tokio::time::sleep(MAX_BACKOFF).await;
                    continue;
                }
            };
            let Some(last) = batch.last().map(|a| a.seq) else {
                // Nothing (or only alerts that do not parse, now passed over).
                self.feed.skip_to_read();
                if self.feed.closing() {
                    return;
                }
                self.feed.flush();
                self.feed.wait().await;
                continue;
            };
            let alerts: Vec<(AlertEvent, &str)> = batch
                .iter()
                .map(|a| (a.alert.clone(), a.json.as_str()))
                .collect();
            let pipe = pipeline(&script, &alerts, self.window_ms);
            self.deliver(&script, &pipe, &mut con, alerts.len()).await;
            self.feed.delivered(last);
        }
    }

    /// Sends one pipeline, retrying with backoff until Redis takes it.
    async fn deliver(
        &self,
        script: &redis::Script,
        pipe: &redis::Pipeline,
        con: &mut Option<redis::aio::MultiplexedConnection>,
        n: usize,
    ) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let result = match con.as_mut() {
                Some(c) => pipe.query_async::<()>(c).await,
                // A fresh connection (first use, or after a failure, which may have been a
                // restarted Redis without the script) loads the script first: a pipeline
                // sends it by hash only.
                None => match self.client.get_multiplexed_async_connection().await {
                    Ok(mut c) => match script.prepare_invoke().load_async(&mut c).await {
                        Ok(_) => {
                            let r = pipe.query_async::<()>(&mut c).await;
                            *con = Some(c);
                            r
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    self.metrics
                        .redis_alerts_published
                        .fetch_add(n as u64, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    self.metrics
                        .redis_alerts_failures
                        .fetch_add(1, Ordering::Relaxed);
                    // The category only: never the URL or the server's words about auth.
                    tracing::warn!(
                        error = e.category(),
                        pending = n,
                        "writing alerts to redis failed; retrying"
                    );
                    *con = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Writes one alert: adds the account to the set, publishes the alert on its channels, and
/// sets the latest alert and the count unless a newer alert of the account is already there:
/// later in the shared log when both were decided through it (the order the ladder counted
/// them in; event times need not follow it when nodes append concurrently), else later by
/// event time, on a tie the higher count. Two nodes can finish alerts of one account in
/// either order; this keeps the keys at the latest, so the count stays the ladder's.
///
/// KEYS: accounts set, latest-alert key, count key. ARGV: account, alert JSON, event time
/// (ms), count, window (ms), typed channel, all-alerts channel, log position (or empty).
const WRITE_ALERT: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
local latest = true
local current = redis.call('GET', KEYS[2])
if current then
  local ok, prev = pcall(cjson.decode, current)
  if ok and type(prev) == 'table' and type(prev.log_position) == 'string' and ARGV[8] ~= '' then
    -- Both decided through the shared log: the later entry is the ladder's latest count.
    if prev.log_position > ARGV[8] then
      latest = false
    end
  elseif ok and type(prev) == 'table' and type(prev.alert_time_ms) == 'number' then
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
fn pipeline(
    script: &redis::Script,
    alerts: &[(AlertEvent, &str)],
    window_ms: i64,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for (a, json) in alerts {
        let account = &a.sender_account_id;
        let mut call = script.prepare_invoke();
        call.key(ACCOUNTS_KEY)
            .key(format!("fraud:alerts:sender:{account}"))
            .key(format!("fraud:count:sender:{account}"))
            .arg(account)
            .arg(*json)
            .arg(a.alert_time_ms)
            .arg(a.alert_count)
            .arg(window_ms)
            .arg(format!("fraud:alerts:{}", a.channel_type()))
            .arg(ALL_CHANNEL)
            .arg(a.log_position.as_deref().unwrap_or(""));
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
