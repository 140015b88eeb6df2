//! How the outbound alert sinks are configured: `[[webhook]]` tables and one `[email]` table
//! in the TOML config file (plus `--webhook-url`/`--webhook-secret` for the simple case), read
//! as written ([`WebhookFile`], [`EmailFile`]) and checked into what the sinks run on
//! ([`WebhookSettings`], [`EmailSettings`]).
//!
//! Every problem is reported with the table and key it is in, before the server starts: a
//! typo in a receiver's URL must not surface as a silent dead letter hours later. Secrets
//! (webhook signing keys, the SMTP password) are [`Secret`]s, read from the file or from an
//! environment variable the file names, and never printed.

use std::time::Duration;

use ringfence_core::decision::Action;
use serde::Deserialize;

use super::AlertEvent;
use crate::config::{ConfigError, Secret};

/// Longest webhook name (it names a cursor file and the dead letters).
const MAX_NAME_LEN: usize = 64;

/// Which alerts a sink sends: by type (the category of the strongest reason: `velocity`,
/// `ring`, `model`, `return`, ...) and by decision (`review`, `challenge`, `block`). An empty
/// list means every value; an alert is sent when both lists let it through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Alert types sent (empty: all).
    pub types: Vec<String>,
    /// Decisions sent (empty: all).
    pub decisions: Vec<Action>,
}

impl AlertFilter {
    /// Checks the lists of the table `table`.
    fn parse(
        table: &str,
        types: Option<Vec<String>>,
        decisions: Option<Vec<String>>,
    ) -> Result<AlertFilter, ConfigError> {
        let types: Vec<String> = types
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        if let Some(bad) = types.iter().find(|t| {
            t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }) {
            return Err(ConfigError::Invalid(format!(
                "{table}.types: `{bad}` is not an alert type (letters, digits, `_`, `-`)"
            )));
        }
        let decisions = decisions
            .unwrap_or_default()
            .iter()
            .map(|d| match Action::parse(d.trim()) {
                Some(a) if a > Action::Approve => Ok(a),
                _ => Err(ConfigError::Invalid(format!(
                    "{table}.decisions: `{d}` must be review, challenge or block"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AlertFilter { types, decisions })
    }

    /// Whether this sink sends `alert`.
    pub fn matches(&self, alert: &AlertEvent) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| *t == alert.channel_type()))
            && (self.decisions.is_empty() || self.decisions.contains(&alert.decision))
    }
}

/// The body a webhook receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFormat {
    /// `{"event": "alert", "delivery_id", "alert": {...}, "url"?}`.
    Json,
    /// `{"text": "..."}`: what a Slack (or Mattermost, Teams-compatible) incoming webhook takes.
    Slack,
}

/// A `[[webhook]]` table as written in the config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// Name in logs, metrics, cursor files and dead letters (default `webhook-<n>`).
    pub name: Option<String>,
    /// Where alerts are POSTed: `http://` or `https://`.
    pub url: Option<Secret>,
    /// Signing key of the `Ringfence-Signature` header.
    pub secret: Option<Secret>,
    /// Environment variable holding the signing key instead.
    pub secret_env: Option<String>,
    /// `json` (default) or `slack`.
    pub format: Option<String>,
    /// Alert types sent (default all).
    pub types: Option<Vec<String>>,
    /// Decisions sent (default all).
    pub decisions: Option<Vec<String>>,
    /// Tries per alert before it becomes a dead letter (default 8).
    pub attempts: Option<u32>,
    /// Wait before the second try in milliseconds, doubled for each further try (default 1000).
    pub backoff_ms: Option<u64>,
    /// Longest wait between two tries in milliseconds (default 300000).
    pub max_backoff_ms: Option<u64>,
    /// Time one try may take in milliseconds (default 10000).
    pub timeout_ms: Option<u64>,
    /// Alerts in flight to this receiver at once (default 4).
    pub concurrency: Option<usize>,
}

/// A checked webhook.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Its name.
    pub name: String,
    /// Its URL (may carry a token, as Slack's do: never logged).
    pub url: Secret,
    /// Signing key, when set (required for the `json` format).
    pub secret: Option<Secret>,
    /// Body format.
    pub format: WebhookFormat,
    /// Which alerts it gets.
    pub filter: AlertFilter,
    /// Tries per alert.
    pub attempts: u32,
    /// First backoff.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Time one try may take.
    pub timeout: Duration,
    /// Alerts in flight at once.
    pub concurrency: usize,
}

/// The `[email]` table as written in the config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailFile {
    /// `smtp://host[:port]` (plain, for a local relay), `smtp+starttls://host[:port]` or
    /// `smtps://host[:port]` (TLS from the first byte).
    pub url: Option<String>,
    /// SMTP user name, when the relay wants one.
    pub username: Option<String>,
    /// SMTP password.
    pub password: Option<Secret>,
    /// Environment variable holding the password instead.
    pub password_env: Option<String>,
    /// Sender address.
    pub from: Option<String>,
    /// Recipients.
    pub to: Option<Vec<String>>,
    /// Alert types mailed (default all).
    pub types: Option<Vec<String>>,
    /// Decisions mailed (default `["block"]`: a mailbox is not an alert queue).
    pub decisions: Option<Vec<String>>,
    /// At most one mail per this many seconds; alerts in between go in one digest (default 60).
    pub interval_secs: Option<f64>,
    /// Alerts listed in one digest; the rest are counted (default 50).
    pub max_listed: Option<usize>,
    /// Time one SMTP session may take, in seconds (default 30).
    pub timeout_secs: Option<f64>,
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// None: for a relay on the same host or network (and tests).
    Plain,
    /// STARTTLS required after the greeting.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// Checked e-mail settings.
#[derive(Clone, Debug)]
pub struct EmailSettings {
    /// Relay host.
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Transport security.
    pub security: SmtpSecurity,
    /// User name and password, when set.
    pub credentials: Option<(String, Secret)>,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Which alerts are mailed.
    pub filter: AlertFilter,
    /// Shortest time between two mails.
    pub interval: Duration,
    /// Alerts listed in one digest.
    pub max_listed: usize,
    /// Time one SMTP session may take.
    pub timeout: Duration,
}

/// A secret given inline or through an environment variable the config names.
fn secret_from(
    table: &str,
    key: &str,
    inline: Option<Secret>,
    env: Option<&str>,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, env) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid(format!(
            "{table}: set {key} or {key}_env, not both"
        ))),
        (Some(s), None) => Ok(Some(s)),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
            _ => Err(ConfigError::Invalid(format!(
                "{table}.{key}_env: the environment variable `{var}` is not set"
            ))),
        },
        (None, None) => Ok(None),
    }
}

/// Checks a millisecond setting against its range.
fn millis(
    table: &str,
    key: &str,
    v: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if !range.contains(&v) {
        return Err(ConfigError::Invalid(format!(
            "{table}.{key} must be within {}..={}",
            range.start(),
            range.end()
        )));
    }
    Ok(Duration::from_millis(v))
}

/// Checks seconds given as a number (fractions allowed).
fn seconds(
    table: &str,
    key: &str,
    v: Option<f64>,
    default: f64,
    max: f64,
) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if !(v.is_finite() && (0.0..=max).contains(&v)) {
        return Err(ConfigError::Invalid(format!(
            "{table}.{key} must be within 0..={max} seconds"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Checks the webhooks of the config file plus the one of `--webhook-url` (named `cli`).
pub fn resolve_webhooks(
    file: Vec<WebhookFile>,
    flag_url: Option<Secret>,
    flag_secret: Option<Secret>,
) -> Result<Vec<WebhookSettings>, ConfigError> {
    let mut raw: Vec<(String, WebhookFile)> = file
        .into_iter()
        .enumerate()
        .map(|(i, w)| (format!("webhook[{i}]"), w))
        .collect();
    match (flag_url, flag_secret) {
        (Some(url), secret) => raw.push((
            "--webhook-url".into(),
            WebhookFile {
                name: Some("cli".into()),
                url: Some(url),
                secret,
                ..WebhookFile::default()
            },
        )),
        (None, Some(_)) => {
            return Err(ConfigError::Invalid(
                "--webhook-secret needs --webhook-url".into(),
            ))
        }
        (None, None) => {}
    }
    let mut out: Vec<WebhookSettings> = Vec::with_capacity(raw.len());
    for (i, (table, w)) in raw.into_iter().enumerate() {
        let name = w.name.unwrap_or_else(|| format!("webhook-{}", i + 1));
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(ConfigError::Invalid(format!(
                "{table}.name must be 1..={MAX_NAME_LEN} letters, digits, `-`, `_` or `.`"
            )));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(ConfigError::Invalid(format!(
                "{table}.name: `{name}` is used by another webhook"
            )));
        }
        let table = format!("{table} ({name})");
        let url = w
            .url
            .ok_or_else(|| ConfigError::Invalid(format!("{table}.url is missing")))?;
        check_http_url(&table, url.expose())?;
        let format = match w.format.as_deref().unwrap_or("json") {
            "json" => WebhookFormat::Json,
            "slack" => WebhookFormat::Slack,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "{table}.format: `{other}` must be `json` or `slack`"
                )))
            }
        };
        let secret = secret_from(&table, "secret", w.secret, w.secret_env.as_deref())?;
        if let Some(s) = &secret {
            if s.expose().len() < 16 {
                return Err(ConfigError::Invalid(format!(
                    "{table}.secret must be at least 16 characters"
                )));
            }
        } else if format == WebhookFormat::Json {
            return Err(ConfigError::Invalid(format!(
                "{table}.secret (or secret_env) is missing: receivers verify the Ringfence-Signature with it"
            )));
        }
        let attempts = w.attempts.unwrap_or(8);
        if !(1..=100).contains(&attempts) {
            return Err(ConfigError::Invalid(format!(
                "{table}.attempts must be within 1..=100"
            )));
        }
        let concurrency = w.concurrency.unwrap_or(4);
        if !(1..=64).contains(&concurrency) {
            return Err(ConfigError::Invalid(format!(
                "{table}.concurrency must be within 1..=64"
            )));
        }
        let backoff = millis(&table, "backoff_ms", w.backoff_ms, 1000, 1..=3_600_000)?;
        let max_backoff = millis(
            &table,
            "max_backoff_ms",
            w.max_backoff_ms,
            300_000,
            1..=86_400_000,
        )?;
        out.push(WebhookSettings {
            name,
            url,
            secret,
            format,
            filter: AlertFilter::parse(&table, w.types, w.decisions)?,
            attempts,
            backoff,
            max_backoff: max_backoff.max(backoff),
            timeout: millis(&table, "timeout_ms", w.timeout_ms, 10_000, 1..=300_000)?,
            concurrency,
        });
    }
    Ok(out)
}

/// An `http://` or `https://` URL with a host; the message never repeats the URL (a Slack
/// webhook's path is its credential).
fn check_http_url(table: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let Some(rest) = rest else {
        return Err(ConfigError::Invalid(format!(
            "{table}.url must start with http:// or https://"
        )));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(ConfigError::Invalid(format!(
            "{table}.url needs a host (and no user:password@)"
        )));
    }
    match url.parse::<hyper::Uri>() {
        Ok(u) if u.host().is_some() => Ok(()),
        _ => Err(ConfigError::Invalid(format!(
            "{table}.url is not a valid URL"
        ))),
    }
}

/// Checks the `[email]` table.
pub fn resolve_email(file: Option<EmailFile>) -> Result<Option<EmailSettings>, ConfigError> {
    let Some(e) = file else {
        return Ok(None);
    };
    let table = "email";
    let url = e
        .url
        .ok_or_else(|| ConfigError::Invalid("email.url is missing".into()))?;
    let (security, rest, default_port) = if let Some(r) = url.strip_prefix("smtp://") {
        (SmtpSecurity::Plain, r, 25)
    } else if let Some(r) = url.strip_prefix("smtp+starttls://") {
        (SmtpSecurity::StartTls, r, 587)
    } else if let Some(r) = url.strip_prefix("smtps://") {
        (SmtpSecurity::Tls, r, 465)
    } else {
        return Err(ConfigError::Invalid(
            "email.url must start with smtp://, smtp+starttls:// or smtps://".into(),
        ));
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '@', '?']) {
        return Err(ConfigError::Invalid(
            "email.url must be scheme://host[:port] (credentials go in username/password)".into(),
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port =
                p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    ConfigError::Invalid(format!("email.url: `{p}` is not a port"))
                })?;
            (h, port)
        }
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(ConfigError::Invalid("email.url needs a host".into()));
    }
    let password = secret_from(table, "password", e.password, e.password_env.as_deref())?;
    let credentials = match (e.username, password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Invalid(
                "email: username and password go together".into(),
            ))
        }
    };
    let from = e
        .from
        .ok_or_else(|| ConfigError::Invalid("email.from is missing".into()))?;
    check_address("email.from", &from)?;
    let to = e.to.unwrap_or_default();
    if to.is_empty() {
        return Err(ConfigError::Invalid(
            "email.to must list at least one address".into(),
        ));
    }
    for a in &to {
        check_address("email.to", a)?;
    }
    let decisions = e.decisions.or_else(|| Some(vec!["block".to_owned()]));
    let max_listed = e.max_listed.unwrap_or(50);
    if !(1..=1000).contains(&max_listed) {
        return Err(ConfigError::Invalid(
            "email.max_listed must be within 1..=1000".into(),
        ));
    }
    Ok(Some(EmailSettings {
        host: host.to_owned(),
        port,
        security,
        credentials,
        from,
        to,
        filter: AlertFilter::parse(table, e.types, decisions)?,
        interval: seconds(table, "interval_secs", e.interval_secs, 60.0, 86_400.0)?,
        max_listed,
        timeout: seconds(table, "timeout_secs", e.timeout_secs, 30.0, 600.0)?
            .max(Duration::from_millis(100)),
    }))
}

/// An address lettre accepts (`name@domain` or `Name <name@domain>`).
fn check_address(key: &str, a: &str) -> Result<(), ConfigError> {
    a.parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| ConfigError::Invalid(format!("{key}: `{a}` is not an e-mail address ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> WebhookFile {
        WebhookFile {
            url: Some(Secret::new(url)),
            secret: Some(Secret::new("0123456789abcdef")),
            ..WebhookFile::default()
        }
    }

    #[test]
    fn webhooks_are_checked_by_table_and_key() {
        let ok =
            resolve_webhooks(vec![hook("https://hooks.example/x")], None, None).expect("valid");
        assert_eq!(ok[0].name, "webhook-1");
        assert_eq!(ok[0].attempts, 8);
        let err = |w: WebhookFile| {
            resolve_webhooks(vec![w], None, None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = err(hook("ftp://x/T0K3N"));
        assert!(e.contains("webhook[0]") && e.contains("url"), "{e}");
        assert!(!e.contains("T0K3N"), "URL repeated: {e}");
        let e = err(WebhookFile {
            secret: None,
            ..hook("http://127.0.0.1:9/")
        });
        assert!(e.contains("secret"), "{e}");
        let e = err(WebhookFile {
            decisions: Some(vec!["approve".into()]),
            ..hook("http://127.0.0.1:9/")
        });
        assert!(e.contains("decisions"), "{e}");
        let e = err(WebhookFile {
            format: Some("xml".into()),
            ..hook("http://127.0.0.1:9/")
        });
        assert!(e.contains("format"), "{e}");
        // Slack needs no secret.
        let slack = WebhookFile {
            secret: None,
            format: Some("slack".into()),
            ..hook("https://hooks.slack.example/services/T/B/X")
        };
        assert!(resolve_webhooks(vec![slack], None, None).is_ok());
        let dup = resolve_webhooks(
            vec![
                WebhookFile {
                    name: Some("a".into()),
                    ..hook("http://h/")
                },
                WebhookFile {
                    name: Some("a".into()),
                    ..hook("http://h/")
                },
            ],
            None,
            None,
        );
        assert!(dup.is_err());
    }

    #[test]
    fn the_flag_webhook_is_named_cli_and_nothing_secret_prints() {
        let hooks = resolve_webhooks(
            vec![],
            Some(Secret::new("https://hooks.example/T0K3N-in-path")),
            Some(Secret::new("hunter2-hunter2-hunter2")),
        )
        .expect("valid");
        assert_eq!(hooks[0].name, "cli");
        assert_eq!(hooks[0].format, WebhookFormat::Json);
        let printed = format!("{hooks:?}");
        assert!(
            !printed.contains("T0K3N") && !printed.contains("hunter2"),
            "{printed}"
        );
        assert!(resolve_webhooks(vec![], None, Some(Secret::new("x"))).is_err());
    }

    #[test]
    fn email_urls_and_addresses_are_checked() {
        let base = EmailFile {
            url: Some("smtp://127.0.0.1:2525".into()),
            from: Some("ringfence@example.test".into()),
            to: Some(vec!["soc@example.test".into()]),
            ..EmailFile::default()
        };
        let e = resolve_email(Some(base.clone()))
            .expect("valid")
            .expect("some");
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 2525));
        assert_eq!(e.security, SmtpSecurity::Plain);
        assert_eq!(e.filter.decisions, vec![Action::Block]);
        let tls = resolve_email(Some(EmailFile {
            url: Some("smtps://mail.example.test".into()),
            ..base.clone()
        }))
        .expect("valid")
        .expect("some");
        assert_eq!((tls.port, tls.security), (465, SmtpSecurity::Tls));
        for bad in [
            EmailFile {
                url: Some("http://x".into()),
                ..base.clone()
            },
            EmailFile {
                to: Some(vec!["not an address".into()]),
                ..base.clone()
            },
            EmailFile {
                username: Some("u".into()),
                ..base.clone()
            },
            EmailFile {
                url: Some("smtp://h:99999".into()),
                ..base.clone()
            },
        ] {
            assert!(resolve_email(Some(bad)).is_err());
        }
    }
}
