//! Alerts by e-mail over SMTP (lettre on tokio; rustls with ring for `smtps://` and
//! `smtp+starttls://`): the chosen alert types and decisions, as plain-text mails.
//!
//! Rate: at most one mail per `interval`. The first alert after a quiet interval is mailed at
//! once on its own; alerts raised within the interval after a mail wait for its end and go
//! out together as one digest (the first `max_listed` in full, the rest counted), so a burst
//! of thousands of alerts is one mail, not thousands. An outage of the relay works the same
//! way: what was raised meanwhile becomes the digest sent once it answers again.
//!
//! Durability is the outbox's (see [`super::outbox`]): the mailer has its own position,
//! saved once a mail is accepted by the relay, so a restart sends what was not mailed yet (a
//! crash between the relay's acceptance and the save can send one mail twice). A relay that
//! cannot be reached, or answers 4xx, is tried again with backoff for as long as it takes; a
//! 5xx answer (the relay refuses this mail for good) makes the mail a dead letter.
//!
//! Each mail links its alerts to their cases in the dashboard (`<public-url>/#/alerts/<id>`)
//! when `--public-url` is set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::task::JoinHandle;

use super::dead_letters::{DeadLetters, NewDeadLetter};
use super::outbox::{OutboxAlert, OutboxFeed};
use super::settings::{EmailSettings, SmtpSecurity};
use super::{text, AlertEvent};
use crate::metrics::Metrics;
use crate::store::Records;

/// Label of the mailer in metrics and dead letters.
const SINK: &str = "email";
/// Alerts read from the outbox at a time.
const BATCH: usize = 512;
/// Alerts read in one round before a mail goes out (the rest go in the next mail).
const MAX_ROUND: usize = 100_000;
/// First wait after a failed send; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest a mail waits for its alerts to reach PostgreSQL (production mode) for their links.
const LINK_WAIT: Duration = Duration::from_secs(3);
/// Longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why a mail was not sent.
#[derive(Debug)]
pub struct SendError {
    /// The relay refused it for good (5xx), or the mail cannot be built.
    pub permanent: bool,
    /// The relay's reply code, if it answered.
    pub status: Option<u16>,
    /// What went wrong, in words (never the password).
    pub error: String,
}

/// A composed mail.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Mail {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// The mailer: its settings, the SMTP transport, and where its links point.
pub struct Mailer {
    settings: EmailSettings,
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    metrics: Arc<Metrics>,
    dead_letters: DeadLetters,
    records: Records,
    public_url: Option<String>,
}

impl Mailer {
    /// A mailer for `settings`; the error names what is wrong (never the password).
    pub fn new(
        settings: EmailSettings,
        metrics: Arc<Metrics>,
        dead_letters: DeadLetters,
        records: Records,
        public_url: Option<String>,
    ) -> Result<Arc<Mailer>, String> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| format!("email.from: {e}"))?;
        let to = settings
            .to
            .iter()
            .map(|a| a.parse::<Mailbox>().map_err(|e| format!("email.to: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let host = settings.host.as_str();
        let builder = match settings.security {
            SmtpSecurity::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| format!("email: TLS setup failed: {e}"))?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| format!("email: TLS setup failed: {e}"))?,
        };
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        if let Some((user, password)) = &settings.credentials {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        metrics.deliveries.register(SINK);
        Ok(Arc::new(Mailer {
            transport: builder.build(),
            from,
            to,
            settings,
            metrics,
            dead_letters,
            records,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
        }))
    }

    /// Starts the mailing task on `feed` (its own outbox position).
    pub fn start(self: &Arc<Self>, feed: OutboxFeed) -> JoinHandle<()> {
        tokio::spawn(Arc::clone(self).run(feed))
    }

    /// Sends one mail to every recipient.
    pub async fn send(&self, mail: &Mail) -> Result<(), SendError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let message = builder.body(mail.body.clone()).map_err(|e| SendError {
            permanent: true,
            status: None,
            error: format!("the mail cannot be built: {e}"),
        })?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => Err(SendError {
                permanent: e.is_permanent(),
                status: e.status().and_then(|c| c.to_string().parse().ok()),
                error: super::error_chain(&e),
            }),
        }
    }

    /// Sends a dead letter's mail again.
    pub async fn retry(&self, payload: &str) -> Result<(), SendError> {
        let mail: Mail = serde_json::from_str(payload).map_err(|e| SendError {
            permanent: true,
            status: None,
            error: format!("the stored mail does not parse: {e}"),
        })?;
        self.send(&mail).await?;
        self.metrics.deliveries.add(SINK, "redelivered", 1);
        Ok(())
    }

    /// The mail for `listed` alerts (plus `omitted` more raised but not listed; all of them
    /// counted by decision in `by_decision`).
    async fn compose(
        &self,
        listed: &[OutboxAlert],
        omitted: usize,
        by_decision: [usize; 4],
    ) -> Mail {
        let deadline = Instant::now() + LINK_WAIT;
        let mut with_links: Vec<(AlertEvent, Option<String>)> = Vec::with_capacity(listed.len());
        for a in listed {
            let link = self.link(&a.alert.transaction_id, deadline).await;
            with_links.push((a.alert.clone(), link));
        }
        let subject = match (listed, omitted) {
            ([one], 0) => text::subject(&one.alert),
            _ => text::digest_subject(by_decision),
        };
        Mail {
            subject,
            body: text::mail_body(&with_links, omitted),
        }
    }

    /// The dashboard address of the alert a transaction raised, when the dashboard's base
    /// address is configured and the alert is found. In production mode the dashboard shows
    /// PostgreSQL's alert ids, and the record may still be on its way there from this node's
    /// buffer: the lookup is repeated until `deadline` (shared by a mail's alerts).
    async fn link(&self, transaction_id: &str, deadline: Instant) -> Option<String> {
        let base = self.public_url.as_deref()?;
        loop {
            match self.records.alert_id_of(transaction_id).await {
                Ok(Some(id)) => return Some(format!("{base}/#/alerts/{id}")),
                Ok(None) if matches!(self.records, Records::Postgres { .. }) => {}
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "looking up an alert for its link failed; mailed without it");
                    return None;
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The mailing loop (see the module notes).
    async fn run(self: Arc<Self>, mut feed: OutboxFeed) {
        let mut listed: Vec<OutboxAlert> = Vec::new();
        let mut omitted = 0usize;
        let mut by_decision = [0usize; 4];
        let mut last_sent: Option<Instant> = None;
        let mut backoff = FIRST_BACKOFF;
        let mut closing = feed.closing_signal();
        loop {
            // Read what is there (bounded per round) into the next mail.
            let mut round = 0;
            loop {
                match feed.read(BATCH).await {
                    Ok(batch) if batch.is_empty() => break,
                    Ok(batch) => {
                        round += batch.len();
                        for a in batch {
                            if !self.settings.filter.matches(&a.alert) {
                                continue;
                            }
                            by_decision[a.alert.decision as usize] += 1;
                            if listed.len() < self.settings.max_listed {
                                listed.push(a);
                            } else {
                                omitted += 1;
                            }
                        }
                        if round >= MAX_ROUND {
                            break;
                        }
                    }
                    Err(e) => {
                        if feed.closing() {
                            return; // the store is closed: the rest goes at the next start
                        }
                        tracing::warn!(error = %e, "reading the alert outbox failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
            if listed.is_empty() {
                // Everything read was for other sinks only.
                feed.skip_to_read();
                if feed.closing() {
                    return;
                }
                feed.flush();
                feed.wait().await;
                continue;
            }
            // At most one mail per interval; at shutdown, what is waiting goes now.
            if let Some(at) = last_sent {
                let due = at + self.settings.interval;
                if Instant::now() < due && !feed.closing() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due.into()) => {}
                        _ = closing.wait_for(|c| *c) => {}
                    }
                    continue; // gather what came meanwhile into the same mail
                }
            }
            let mail = self.compose(&listed, omitted, by_decision).await;
            let count = (listed.len() + omitted) as u64;
            match self.send(&mail).await {
                Ok(()) => {
                    self.metrics.deliveries.add(SINK, "delivered", count);
                    self.metrics.deliveries.add(SINK, "mail", 1);
                }
                Err(e) if e.permanent => {
                    tracing::warn!(status = ?e.status, error = %e.error, alerts = count, "the relay refused an alert mail; kept as a dead letter");
                    if !self.dead_letter(&listed, &mail, e).await {
                        return; // not stored: sent again at the next start
                    }
                    self.metrics.deliveries.add(SINK, "dead_letter", 1);
                }
                Err(e) => {
                    self.metrics.deliveries.add(SINK, "failed_attempt", 1);
                    if feed.closing() {
                        return; // unsent: the next start sends it
                    }
                    tracing::warn!(status = ?e.status, error = %e.error, retry_in_ms = backoff.as_millis() as u64, "sending an alert mail failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = closing.wait_for(|c| *c) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            // Everything read so far was mailed (or is not for mail).
            listed.clear();
            omitted = 0;
            by_decision = [0; 4];
            backoff = FIRST_BACKOFF;
            last_sent = Some(Instant::now());
            feed.skip_to_read();
            feed.flush();
        }
    }

    async fn dead_letter(&self, listed: &[OutboxAlert], mail: &Mail, e: SendError) -> bool {
        let alerts: Vec<serde_json::Value> = listed
            .iter()
            .map(|a| serde_json::from_str(&a.json).unwrap_or(serde_json::Value::Null))
            .collect();
        let stored = self
            .dead_letters
            .insert(NewDeadLetter {
                kind: "email",
                target: SINK.to_owned(),
                transaction_id: listed
                    .first()
                    .map(|a| a.alert.transaction_id.clone())
                    .unwrap_or_default(),
                alert: serde_json::Value::Array(alerts).to_string(),
                payload: serde_json::to_string(mail).unwrap_or_default(),
                attempts: 1,
                last_status: e.status,
                last_error: e.error,
            })
            .await;
        if let Err(e) = stored {
            tracing::error!(error = %e, "storing a dead letter failed; the mailer pauses until restarted");
            return false;
        }
        true
    }
}
