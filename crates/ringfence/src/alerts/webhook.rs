//! Webhooks: every alert POSTed to each configured URL, signed, retried, and kept as a dead
//! letter when it cannot be delivered.
//!
//! Each webhook is a task of its own with its own outbox position (see [`super::outbox`]), so
//! a slow or dead receiver delays only its own alerts, never another webhook, the other sinks
//! or a decision. Within one webhook up to `concurrency` alerts are in flight at once, so one
//! alert waiting out its backoff does not hold back the ones after it; the saved position only
//! moves past an alert once it and everything before it are done (delivered or dead-lettered),
//! so a restart resumes without losing one. Delivery is at least once: a receiver deduplicates
//! by the `Ringfence-Delivery` id, which is the same for every try of the same alert to the
//! same webhook (restarts and dead-letter retries included).
//!
//! A try is delivered on any 2xx. A 4xx other than 408 and 429 means the receiver will never
//! take this request: it becomes a dead letter at once. Anything else (5xx, 408, 429, a
//! timeout, no connection) is tried again after an exponential backoff with jitter (half the
//! delay random, so many alerts failing together do not retry in lockstep; a `Retry-After`
//! in seconds is honoured up to the longest backoff), and becomes a dead letter after the
//! last try. At shutdown an alert waiting for its next try is left for the next start.
//!
//! Requests: `Content-Type: application/json`, `Ringfence-Event: alert`,
//! `Ringfence-Delivery: <id>`, and `Ringfence-Signature` (see [`super::sign`]) when the
//! webhook has a secret. The URL is never logged or stored (a Slack webhook's path is its
//! credential): logs, metrics and dead letters name the webhook.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::dead_letters::{DeadLetters, NewDeadLetter};
use super::outbox::{OutboxAlert, OutboxFeed};
use super::settings::{WebhookFormat, WebhookSettings};
use super::{sign, text, AlertEvent};
use crate::metrics::Metrics;

/// Alerts read from the outbox at a time.
const BATCH: usize = 256;
/// Most alerts between the saved position and the newest one started (finished ones behind
/// an unfinished one count): bounds memory and what a crash delivers again.
const MAX_TRACKED: usize = 4096;
/// How long a try in flight may go on once shutdown began.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Most of a response body read (for the error a dead letter keeps).
const MAX_RESPONSE: usize = 4096;
/// Most of a response body kept in an error message.
const ERROR_SNIPPET: usize = 200;

/// What one try came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver took it (a 2xx).
    Delivered(u16),
    /// Worth trying again: a 5xx, 408, 429, timeout or connection failure.
    Retry {
        /// The status, if a response came.
        status: Option<u16>,
        /// What went wrong, in words.
        error: String,
        /// The receiver's `Retry-After`, if it gave one.
        after: Option<Duration>,
    },
    /// Never worth trying again: any other 4xx.
    Permanent {
        /// The status.
        status: u16,
        /// What the receiver said.
        error: String,
    },
}

/// The HTTP client: plain and TLS (rustls with ring, the system's roots), pooled keep-alive.
type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One configured webhook and what it delivers with.
pub struct Webhook {
    settings: WebhookSettings,
    /// `webhook:<name>`: its label in metrics.
    sink: String,
    client: HttpsClient,
    metrics: Arc<Metrics>,
    dead_letters: DeadLetters,
}

/// Builds the HTTP client. Without any trusted root in the system (a bare container), plain
/// `http://` still works and `https://` fails each try with a certificate error.
fn https_client() -> HttpsClient {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(Arc::clone(&provider))
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no trusted root certificates found; https:// webhooks will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            match config {
                Ok(c) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(c),
                // ring supports the default versions; should it ever not, fall back to
                // rustls' own defaults rather than fail the node.
                Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ),
            }
        }
    };
    let connector = builder.https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

impl Webhook {
    /// A webhook delivering with its own HTTP client.
    pub fn new(
        settings: WebhookSettings,
        metrics: Arc<Metrics>,
        dead_letters: DeadLetters,
    ) -> Arc<Webhook> {
        let sink = format!("webhook:{}", settings.name);
        metrics.deliveries.register(&sink);
        Arc::new(Webhook {
            settings,
            sink,
            client: https_client(),
            metrics,
            dead_letters,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Starts its delivery task on `feed` (its own outbox position).
    pub fn start(self: &Arc<Self>, feed: OutboxFeed) -> JoinHandle<()> {
        tokio::spawn(Arc::clone(self).run(feed))
    }

    /// The `Ringfence-Delivery` id of an alert to this webhook: the same for every try, so
    /// receivers can deduplicate; different per webhook, so two webhooks pointing at one
    /// receiver are not mistaken for one delivery.
    pub fn delivery_id(&self, transaction_id: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.settings.name.as_bytes());
        h.update([0]);
        h.update(transaction_id.as_bytes());
        let digest = h.finalize();
        format!("dlv_{}", sign::hex(&digest[..16]))
    }

    /// The request body for `alert`.
    pub fn body(&self, alert: &AlertEvent, delivery_id: &str) -> String {
        let value = match self.settings.format {
            WebhookFormat::Json => serde_json::json!({
                "event": "alert",
                "delivery_id": delivery_id,
                "alert": alert,
            }),
            WebhookFormat::Slack => serde_json::json!({ "text": text::slack(alert, None) }),
        };
        value.to_string()
    }

    /// One try: POSTs `body`, signed now.
    pub async fn attempt(&self, body: &str, delivery_id: &str) -> Attempt {
        let request = match self.request(body, delivery_id) {
            Ok(r) => r,
            Err(error) => {
                return Attempt::Permanent {
                    status: 0,
                    error: format!("the request cannot be built: {error}"),
                }
            }
        };
        let exchange = async {
            let res = self
                .client
                .request(request)
                .await
                .map_err(|e| super::error_chain(&e))?;
            let status = res.status().as_u16();
            let after = res
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            // Read (a bounded part of) the body so the connection can be reused, and to say
            // what the receiver objected to.
            let said = Limited::new(res.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map(|b| snippet(&b.to_bytes()))
                .unwrap_or_default();
            Ok::<_, String>((status, after, said))
        };
        match tokio::time::timeout(self.settings.timeout, exchange).await {
            Err(_) => Attempt::Retry {
                status: None,
                error: format!("timed out after {:?}", self.settings.timeout),
                after: None,
            },
            Ok(Err(error)) => Attempt::Retry {
                status: None,
                error,
                after: None,
            },
            Ok(Ok((status, after, said))) => classify(status, after, &said),
        }
    }

    fn request(&self, body: &str, delivery_id: &str) -> Result<Request<Full<Bytes>>, String> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.settings.url.expose())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("ringfence/", env!("CARGO_PKG_VERSION"), " (webhook)"),
            )
            .header("ringfence-event", "alert")
            .header("ringfence-delivery", delivery_id);
        if let Some(secret) = &self.settings.secret {
            let t = crate::host::now().millis() / 1000;
            let sig = sign::signature(secret.expose().as_bytes(), t, body.as_bytes());
            let value = HeaderValue::from_str(&sig).map_err(|e| e.to_string())?;
            req = req.header(sign::SIGNATURE_HEADER, value);
        }
        // The URL was checked at start; the builder's error names the part, not the URL.
        req.body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|e| e.to_string())
    }

    /// Wait before try `n + 1` after try `n` failed: the base doubled per try, capped, the
    /// upper half random.
    fn backoff(&self, n: u32) -> Duration {
        let base = self.settings.backoff.as_millis() as u64;
        let cap = self.settings.max_backoff.as_millis() as u64;
        let full = base
            .saturating_mul(1u64 << (n.saturating_sub(1)).min(40))
            .min(cap);
        let half = full / 2;
        let jitter = getrandom::u64().unwrap_or(0) % (full - half + 1);
        Duration::from_millis(half + jitter)
    }

    /// Delivers one alert with every retry; false when given up before an outcome (closing,
    /// or a dead letter that could not be stored), so the position must not pass it.
    async fn deliver(&self, item: OutboxAlert, mut closing: watch::Receiver<bool>) -> bool {
        let id = self.delivery_id(&item.alert.transaction_id);
        let body = self.body(&item.alert, &id);
        let mut tries = 0;
        loop {
            tries += 1;
            // A try still hanging some time after shutdown began is given up (the alert stays
            // owed), so a receiver that accepts and never answers cannot hold the node open.
            let mut closed = closing.clone();
            let attempt = tokio::select! {
                a = self.attempt(&body, &id) => a,
                _ = async {
                    let _ = closed.wait_for(|c| *c).await;
                    tokio::time::sleep(CLOSE_GRACE).await;
                } => return false,
            };
            let (status, error) = match attempt {
                Attempt::Delivered(_) => {
                    self.metrics.deliveries.add(&self.sink, "delivered", 1);
                    return true;
                }
                Attempt::Permanent { status, error } => {
                    return self
                        .dead_letter(&item, body, tries, Some(status), error)
                        .await;
                }
                Attempt::Retry {
                    status,
                    error,
                    after,
                } if tries < self.settings.attempts => {
                    self.metrics.deliveries.add(&self.sink, "failed_attempt", 1);
                    let wait = after
                        .map(|a| a.min(self.settings.max_backoff))
                        .unwrap_or_else(|| self.backoff(tries));
                    tracing::warn!(webhook = self.name(), transaction_id = %item.alert.transaction_id, tries, ?status, %error, retry_in_ms = wait.as_millis() as u64, "webhook delivery failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = closing.wait_for(|c| *c) => return false,
                    }
                    continue;
                }
                Attempt::Retry { status, error, .. } => (status, error),
            };
            return self.dead_letter(&item, body, tries, status, error).await;
        }
    }

    async fn dead_letter(
        &self,
        item: &OutboxAlert,
        payload: String,
        attempts: u32,
        last_status: Option<u16>,
        last_error: String,
    ) -> bool {
        tracing::warn!(webhook = self.name(), transaction_id = %item.alert.transaction_id, attempts, ?last_status, error = %last_error, "webhook delivery given up; kept as a dead letter");
        let stored = self
            .dead_letters
            .insert(NewDeadLetter {
                kind: "webhook",
                target: self.settings.name.clone(),
                transaction_id: item.alert.transaction_id.clone(),
                alert: item.json.clone(),
                payload,
                attempts,
                last_status,
                last_error,
            })
            .await;
        match stored {
            Ok(_) => {
                self.metrics.deliveries.add(&self.sink, "dead_letter", 1);
                true
            }
            Err(e) => {
                // Not stored: the alert stays owed and is tried again at the next start.
                tracing::error!(webhook = self.name(), error = %e, "storing a dead letter failed; this webhook pauses until restarted");
                false
            }
        }
    }

    /// One more try of a dead letter's payload (same delivery id, signed now).
    pub async fn retry(&self, transaction_id: &str, payload: &str) -> Attempt {
        let outcome = self
            .attempt(payload, &self.delivery_id(transaction_id))
            .await;
        if matches!(outcome, Attempt::Delivered(_)) {
            self.metrics.deliveries.add(&self.sink, "redelivered", 1);
        }
        outcome
    }

    /// The delivery loop: reads the outbox from this webhook's position, keeps up to
    /// `concurrency` alerts in flight, and moves the position over the finished prefix.
    async fn run(self: Arc<Self>, mut feed: OutboxFeed) {
        let concurrency = self.settings.concurrency;
        // Alerts started or skipped, in order, with whether each is finished.
        let mut order: VecDeque<(i64, bool)> = VecDeque::new();
        let mut pending: VecDeque<OutboxAlert> = VecDeque::new();
        let mut running: JoinSet<(i64, bool)> = JoinSet::new();
        // An alert was given up without an outcome (closing): start nothing more.
        let mut stalled = false;
        loop {
            if pending.is_empty() && !stalled && order.len() < MAX_TRACKED {
                match feed.read(BATCH).await {
                    Ok(batch) => pending.extend(batch),
                    Err(e) => {
                        if feed.closing() && running.is_empty() {
                            break; // the store is closed: the rest goes at the next start
                        }
                        tracing::warn!(webhook = self.name(), error = %e, "reading the alert outbox failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            while running.len() < concurrency && order.len() < MAX_TRACKED && !stalled {
                let Some(item) = pending.pop_front() else {
                    break;
                };
                if self.settings.filter.matches(&item.alert) {
                    order.push_back((item.seq, false));
                    let hook = Arc::clone(&self);
                    let closing = feed.closing_signal();
                    running.spawn(async move {
                        let seq = item.seq;
                        (seq, hook.deliver(item, closing).await)
                    });
                } else {
                    order.push_back((item.seq, true));
                }
            }
            let mut done_to = None;
            while let Some(&(seq, true)) = order.front() {
                order.pop_front();
                done_to = Some(seq);
            }
            if let Some(seq) = done_to {
                feed.delivered(seq);
            }
            if order.is_empty() && pending.is_empty() {
                // Rows read past without an alert (unparsable) are done too.
                feed.skip_to_read();
            }
            if running.is_empty() {
                if stalled || (pending.is_empty() && feed.closing()) {
                    break;
                }
                if pending.is_empty() {
                    feed.flush();
                    feed.wait().await;
                }
                continue;
            }
            // While closing, `wait` returns at once: only the running deliveries are waited for
            // (else this loop would spin, reading the outbox on every pass until they end).
            let room = !stalled
                && !feed.closing()
                && pending.is_empty()
                && running.len() < concurrency
                && order.len() < MAX_TRACKED;
            tokio::select! {
                finished = running.join_next() => match finished {
                    Some(Ok((seq, true))) => {
                        if let Ok(i) = order.binary_search_by_key(&seq, |(s, _)| *s) {
                            order[i].1 = true;
                        }
                    }
                    Some(Ok((_, false))) => stalled = true,
                    Some(Err(e)) => {
                        tracing::error!(webhook = self.name(), error = %e, "a webhook delivery task failed; the webhook pauses until restarted");
                        stalled = true;
                    }
                    None => {}
                },
                _ = feed.wait(), if room => {}
            }
        }
        feed.flush();
    }
}

/// A try's outcome by status.
fn classify(status: u16, after: Option<Duration>, said: &str) -> Attempt {
    let error = if said.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {said}")
    };
    match status {
        200..=299 => Attempt::Delivered(status),
        408 | 429 => Attempt::Retry {
            status: Some(status),
            error,
            after,
        },
        400..=499 => Attempt::Permanent { status, error },
        _ => Attempt::Retry {
            status: Some(status),
            error,
            after,
        },
    }
}

/// The start of a response body as one printable line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_SNIPPET)
        .collect();
    if text.chars().count() > ERROR_SNIPPET {
        s.push('…');
    }
    s.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_receivers_contract_says() {
        assert_eq!(classify(204, None, ""), Attempt::Delivered(204));
        assert!(matches!(
            classify(400, None, "bad"),
            Attempt::Permanent { status: 400, .. }
        ));
        assert!(matches!(classify(410, None, ""), Attempt::Permanent { .. }));
        for s in [408, 429, 500, 503, 302] {
            assert!(
                matches!(classify(s, None, ""), Attempt::Retry { .. }),
                "{s}"
            );
        }
        assert_eq!(snippet(b"line\none"), "line one");
    }
}
