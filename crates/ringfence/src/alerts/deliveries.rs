//! [`AlertSinks`]: every sink a node delivers its alerts to (Redis, webhooks, e-mail),
//! started together from the settings, woken together when alerts are durable, closed
//! together at shutdown; and the dead letters they leave, with their retry.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::dead_letters::{DeadLetter, DeadLetters};
use super::email::Mailer;
use super::outbox::{OutboxFeed, SinkHandle};
use super::webhook::{Attempt, Webhook};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::store::{Records, StoreError};

/// The sinks of a node.
pub struct AlertSinks {
    handles: Vec<SinkHandle>,
    dead_letters: DeadLetters,
    webhooks: Vec<Arc<Webhook>>,
    mailer: Option<Arc<Mailer>>,
    /// One retry at a time: two admins retrying the same dead letter send it once.
    retrying: tokio::sync::Mutex<()>,
}

/// Why the sinks could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The Redis URL is unusable (the message never repeats it).
    #[error("{0}")]
    Redis(String),
    /// The e-mail settings are unusable.
    #[error("{0}")]
    Email(String),
    /// The outbox or the dead-letter table could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a dead letter's retry came to.
#[derive(Debug)]
pub enum RetryOutcome {
    /// Delivered now (or already before); the updated record.
    Delivered(DeadLetter),
    /// Failed again; the updated record with the new answer.
    Failed(DeadLetter),
}

/// Why a dead letter could not be retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// No dead letter has this id.
    #[error("no dead letter {0}")]
    NotFound(i64),
    /// Its webhook (or e-mail) is no longer configured.
    #[error("`{0}` is no longer configured on this node")]
    Unconfigured(String),
    /// The table could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AlertSinks {
    /// Starts every sink the settings configure, reading `records`' local outbox, and returns
    /// their tasks (they end after [`AlertSinks::close`] once delivered).
    pub fn start(
        settings: &Settings,
        records: &Records,
        metrics: &Arc<Metrics>,
    ) -> Result<(AlertSinks, Vec<JoinHandle<()>>), SinkError> {
        let local = records.local();
        let dead_letters = DeadLetters::open(&settings.data)?;
        let mut handles = Vec::new();
        let mut tasks = Vec::new();
        if let Some(url) = &settings.redis {
            let client = super::redis::client(url, settings.redis_ca_cert.as_deref())
                .map_err(|e| SinkError::Redis(e.to_string()))?;
            let (feed, handle) =
                OutboxFeed::open(local.clone(), &settings.data, "redis-alerts-delivered-seq")?;
            tasks.push(super::redis::start(
                client,
                Arc::clone(metrics),
                settings.engine.escalation.window_ms,
                feed,
            ));
            handles.push(handle);
        }
        let mut webhooks = Vec::new();
        for w in &settings.webhooks {
            let cursor = format!("webhook-{}-delivered-seq", w.name);
            let (feed, handle) = OutboxFeed::open(local.clone(), &settings.data, &cursor)?;
            let hook = Webhook::new(w.clone(), Arc::clone(metrics), dead_letters.clone());
            tasks.push(hook.start(feed));
            handles.push(handle);
            webhooks.push(hook);
        }
        let mailer = match &settings.email {
            Some(e) => {
                let mailer = Mailer::new(
                    e.clone(),
                    Arc::clone(metrics),
                    dead_letters.clone(),
                    records.clone(),
                    settings.public_url.clone(),
                )
                .map_err(SinkError::Email)?;
                let (feed, handle) =
                    OutboxFeed::open(local.clone(), &settings.data, "email-delivered-seq")?;
                tasks.push(mailer.start(feed));
                handles.push(handle);
                Some(mailer)
            }
            None => None,
        };
        Ok((
            AlertSinks {
                handles,
                dead_letters,
                webhooks,
                mailer,
                retrying: tokio::sync::Mutex::new(()),
            },
            tasks,
        ))
    }

    /// Whether any sink is configured (alerts are built and queued only then).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// New alerts are durable in the outbox: every sink delivers them now. Never waits.
    pub fn notify(&self) {
        for h in &self.handles {
            h.notify();
        }
    }

    /// Every sink delivers what the outbox holds, then ends.
    pub fn close(&self) {
        for h in &self.handles {
            h.close();
        }
    }

    /// This node's dead letters.
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }

    /// Tries dead letter `id` once more, now: a webhook's payload signed afresh with the same
    /// delivery id, or the mail as it was. A dead letter already redelivered is not sent again.
    pub async fn retry(&self, id: i64) -> Result<RetryOutcome, RetryError> {
        let _one_at_a_time = self.retrying.lock().await;
        let dl = self
            .dead_letters
            .get(id)
            .await?
            .ok_or(RetryError::NotFound(id))?;
        if dl.state == "redelivered" {
            return Ok(RetryOutcome::Delivered(dl));
        }
        let (delivered, status, error) = match dl.kind.as_str() {
            "webhook" => {
                let hook = self
                    .webhooks
                    .iter()
                    .find(|w| w.name() == dl.target)
                    .ok_or_else(|| RetryError::Unconfigured(format!("webhook {}", dl.target)))?;
                match hook.retry(&dl.transaction_id, &dl.payload).await {
                    Attempt::Delivered(s) => (true, Some(s), String::new()),
                    Attempt::Retry { status, error, .. } => (false, status, error),
                    Attempt::Permanent { status, error } => (false, Some(status), error),
                }
            }
            _ => {
                let mailer = self
                    .mailer
                    .as_ref()
                    .ok_or_else(|| RetryError::Unconfigured("email".into()))?;
                match mailer.retry(&dl.payload).await {
                    Ok(()) => (true, None, String::new()),
                    Err(e) => (false, e.status, e.error),
                }
            }
        };
        let updated = self
            .dead_letters
            .record_retry(id, delivered, status, error)
            .await?
            .ok_or(RetryError::NotFound(id))?;
        Ok(if delivered {
            RetryOutcome::Delivered(updated)
        } else {
            RetryOutcome::Failed(updated)
        })
    }
}
