//! Configuration: one TOML file, `RINGFENCE_*` environment variables and CLI flags, in
//! increasing order of precedence. Every flag of `serve` has a config-file key of the same
//! name (dashes become underscores) and an environment variable `RINGFENCE_<NAME>`.
//! Secrets are wrapped in [`Secret`] so they never print.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ringfence_core::decision::{EscalationPolicy, Thresholds};
use ringfence_core::engine::EngineConfig;
use serde::Deserialize;

/// A value that must never be printed or logged.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Flags of `ringfence serve` (and the server part of `demo`). Every one is optional here so
/// that the config file can fill what the command line and environment leave unset.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML config file whose keys are these flags' names with underscores.
    #[arg(long, env = "RINGFENCE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "RINGFENCE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory (SQLite records, the card-hash key when generated).
    #[arg(long, env = "RINGFENCE_DATA")]
    pub data: Option<PathBuf>,
    /// Rules file (TOML); hot-reloaded on change. Built-in default rules when absent.
    #[arg(long, env = "RINGFENCE_RULES")]
    pub rules: Option<PathBuf>,
    /// Secret key for hashing card numbers (HMAC). Generated and kept in the data
    /// directory when absent.
    #[arg(long, env = "RINGFENCE_CARD_HASH_KEY", hide_env_values = true)]
    pub card_hash_key: Option<Secret>,
    /// Score at or above which a transaction is reviewed.
    #[arg(long, env = "RINGFENCE_REVIEW_THRESHOLD")]
    pub review_threshold: Option<f64>,
    /// Score at or above which a transaction is challenged (e.g. 3-D Secure).
    #[arg(long, env = "RINGFENCE_CHALLENGE_THRESHOLD")]
    pub challenge_threshold: Option<f64>,
    /// Score at or above which a transaction is blocked.
    #[arg(long, env = "RINGFENCE_BLOCK_THRESHOLD")]
    pub block_threshold: Option<f64>,
    /// Length of the per-account alert window of the escalation ladder, in seconds.
    #[arg(long, env = "RINGFENCE_ESCALATION_WINDOW_SECS")]
    pub escalation_window_secs: Option<i64>,
    /// More alerts than this in the window: at least review.
    #[arg(long, env = "RINGFENCE_ESCALATE_REVIEW_OVER")]
    pub escalate_review_over: Option<u32>,
    /// More alerts than this in the window: at least challenge.
    #[arg(long, env = "RINGFENCE_ESCALATE_CHALLENGE_OVER")]
    pub escalate_challenge_over: Option<u32>,
    /// More alerts than this in the window: block.
    #[arg(long, env = "RINGFENCE_ESCALATE_BLOCK_OVER")]
    pub escalate_block_over: Option<u32>,
    /// Amounts below this count as small (card testing).
    #[arg(long, env = "RINGFENCE_SMALL_AMOUNT")]
    pub small_amount: Option<f64>,
    /// Entities idle this many days are forgotten.
    #[arg(long, env = "RINGFENCE_IDLE_TTL_DAYS")]
    pub idle_ttl_days: Option<i64>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "RINGFENCE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most transactions in one batch request.
    #[arg(long, env = "RINGFENCE_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Most requests in progress at once; past it a request is turned away at once with 503
    /// and `Retry-After` rather than queued (health checks and metrics are exempt).
    #[arg(long, env = "RINGFENCE_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Most request-body bytes held at once by requests in progress (a request reserves its
    /// declared length, or the body limit when it declares none); past it, 503.
    #[arg(long, env = "RINGFENCE_MAX_BODY_IN_FLIGHT")]
    pub max_body_in_flight: Option<usize>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "RINGFENCE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// How far ahead of the server clock an event time may be, in seconds.
    #[arg(long, env = "RINGFENCE_MAX_CLOCK_SKEW_SECS")]
    pub max_clock_skew_secs: Option<i64>,
    /// Days until a transaction's fraud label is treated as known: label-driven features
    /// (terminal and merchant fraud rates) read only days at least this far back.
    #[arg(long, env = "RINGFENCE_LABEL_DELAY_DAYS")]
    pub label_delay_days: Option<i64>,
    /// Model file (Ringfence format or XGBoost JSON) whose probability joins the score;
    /// hot-swapped when the file changes.
    #[arg(long, env = "RINGFENCE_MODEL")]
    pub model: Option<PathBuf>,
    /// A second model scored in shadow: its probability is recorded, the decision ignores it.
    #[arg(long, env = "RINGFENCE_CHALLENGER")]
    pub challenger: Option<PathBuf>,
    /// Score points the model adds at probability 1 (score = rule points + this x probability).
    #[arg(long, env = "RINGFENCE_MODEL_POINTS")]
    pub model_points: Option<f64>,
    /// Redis URL, `redis://[user][:password@]host:port[/db]` or `rediss://` for TLS: alerts
    /// go to its keys and channels. The password is never printed.
    #[arg(long, env = "RINGFENCE_REDIS", hide_env_values = true)]
    pub redis: Option<Secret>,
    /// PostgreSQL URL (`postgres://user:password@host:port/db`): records go there instead of
    /// SQLite in the data directory, shared by every node. Needs `--card-hash-key` (every
    /// node must tokenise cards alike). The password is never printed.
    #[arg(long, env = "RINGFENCE_POSTGRES", hide_env_values = true)]
    pub postgres: Option<Secret>,
    /// With `--redis`: what a node does when Redis (the shared state) does not answer within
    /// `--redis-timeout-ms`: `degrade` (decide on its own state, mark the decision degraded,
    /// append the transaction to the shared log later) or `fail-closed` (503).
    #[arg(long, env = "RINGFENCE_REDIS_UNAVAILABLE")]
    pub redis_unavailable: Option<String>,
    /// Time budget for the shared state per request, in milliseconds (default 50).
    #[arg(long, env = "RINGFENCE_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// PEM file of the certificate authority a `rediss://` server's certificate is checked
    /// against (a private CA); the system's trust store otherwise.
    #[arg(long, env = "RINGFENCE_REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,
    /// Stream key of the shared log in Redis (default `ringfence:log`).
    #[arg(long, env = "RINGFENCE_REDIS_LOG_KEY")]
    pub redis_log_key: Option<String>,
    /// With `--redis`: log entries between two snapshots of the shared state (default
    /// 500000). A snapshot lets the log be trimmed and a node start without replaying it all.
    #[arg(long, env = "RINGFENCE_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// This node is the site of that name (e.g. `store-a`): it decides on its own embedded
    /// state and replicates its records with its `--peer` sites in both directions.
    #[arg(long, env = "RINGFENCE_SITE")]
    pub site: Option<String>,
    /// Base URL of a peer site (`http://host:port` or `https://host:port`, see
    /// `--peer-ca-cert`); repeat for several (the environment
    /// variable takes a comma-separated list). Needs `--site`.
    #[arg(long = "peer", env = "RINGFENCE_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// An API key this site sends to its `--peer` sites when it pulls their records (a key
    /// with the `analyst` role there). Needed once the peers check access, which they do.
    #[arg(long, env = "RINGFENCE_PEER_KEY", hide_env_values = true)]
    pub peer_key: Option<Secret>,
    /// An administrator's API key for automation and tests (at least 24 characters), accepted
    /// besides the keys stored by `POST /v1/keys`. Never printed.
    #[arg(long, env = "RINGFENCE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<Secret>,
    /// The password of the `admin` user created at the first start (when no user exists);
    /// a random one is made and printed once otherwise. At least 12 characters.
    #[arg(long, env = "RINGFENCE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<Secret>,
    /// Hours a dashboard session may stay unused before it ends (default 12).
    #[arg(long, env = "RINGFENCE_SESSION_IDLE_HOURS")]
    pub session_idle_hours: Option<u64>,
    /// Default rate limit of stored API keys, requests per second per key on this node (a key
    /// created with its own `rate_per_second` uses that); none by default. Over it: 429 with
    /// `Retry-After`.
    #[arg(long, env = "RINGFENCE_KEY_RATE")]
    pub key_rate: Option<f64>,
    /// Burst allowed above `--key-rate` (default: one second's worth).
    #[arg(long, env = "RINGFENCE_KEY_BURST")]
    pub key_burst: Option<u64>,
    /// The dashboard's address as people reach it (`https://ringfence.example`): alert mails
    /// link to their cases there; with `https://` the sign-in cookie is marked Secure, and its
    /// origin is accepted for signed-in changes besides the request's own host.
    #[arg(long, env = "RINGFENCE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A webhook every alert is POSTed to (JSON, signed with `--webhook-secret`); more
    /// webhooks, Slack format and filters go in the config file's `[[webhook]]` tables. The
    /// URL is never printed.
    #[arg(long, env = "RINGFENCE_WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<Secret>,
    /// Signing key of `--webhook-url`'s `Ringfence-Signature` header (at least 16 characters).
    #[arg(long, env = "RINGFENCE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,
    /// Serve HTTPS with this certificate chain (PEM, the leaf first); needs `--tls-key`.
    /// Plain HTTP without it.
    #[arg(long, env = "RINGFENCE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "RINGFENCE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM file of the certificate authority PostgreSQL's certificate is checked against
    /// under `sslmode=verify-ca`/`verify-full` (or `require`, which then verifies the CA);
    /// the system's trust store otherwise.
    #[arg(long, env = "RINGFENCE_POSTGRES_CA_CERT")]
    pub postgres_ca_cert: Option<PathBuf>,
    /// PEM file of the certificate authority `https://` peer sites' certificates are checked
    /// against; the system's trust store otherwise.
    #[arg(long, env = "RINGFENCE_PEER_CA_CERT")]
    pub peer_ca_cert: Option<PathBuf>,
}

/// The same keys as read from the config file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    rules: Option<PathBuf>,
    card_hash_key: Option<Secret>,
    review_threshold: Option<f64>,
    challenge_threshold: Option<f64>,
    block_threshold: Option<f64>,
    escalation_window_secs: Option<i64>,
    escalate_review_over: Option<u32>,
    escalate_challenge_over: Option<u32>,
    escalate_block_over: Option<u32>,
    small_amount: Option<f64>,
    idle_ttl_days: Option<i64>,
    max_body_bytes: Option<usize>,
    max_batch: Option<usize>,
    max_in_flight: Option<usize>,
    max_body_in_flight: Option<usize>,
    log_format: Option<String>,
    max_clock_skew_secs: Option<i64>,
    label_delay_days: Option<i64>,
    model: Option<PathBuf>,
    challenger: Option<PathBuf>,
    model_points: Option<f64>,
    redis: Option<Secret>,
    postgres: Option<Secret>,
    redis_unavailable: Option<String>,
    redis_timeout_ms: Option<u64>,
    redis_ca_cert: Option<PathBuf>,
    redis_log_key: Option<String>,
    snapshot_every: Option<u64>,
    site: Option<String>,
    peers: Option<Vec<String>>,
    peer_key: Option<Secret>,
    admin_key: Option<Secret>,
    admin_password: Option<Secret>,
    session_idle_hours: Option<u64>,
    key_rate: Option<f64>,
    key_burst: Option<u64>,
    public_url: Option<String>,
    webhook_url: Option<Secret>,
    webhook_secret: Option<Secret>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    postgres_ca_cert: Option<PathBuf>,
    peer_ca_cert: Option<PathBuf>,
    /// `[[webhook]]` tables.
    webhook: Option<Vec<crate::alerts::settings::WebhookFile>>,
    /// The `[email]` table.
    email: Option<crate::alerts::settings::EmailFile>,
}

/// A configuration problem, named precisely.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// Fully resolved settings of a server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data: PathBuf,
    /// Rules file, if any.
    pub rules: Option<PathBuf>,
    /// Card hash key, if configured (else generated in the data directory).
    pub card_hash_key: Option<Secret>,
    /// Engine configuration.
    pub engine: EngineConfig,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// Batch size limit.
    pub max_batch: usize,
    /// Most requests in progress at once (see [`ServeArgs::max_in_flight`]).
    pub max_in_flight: usize,
    /// Most request-body bytes held at once (see [`ServeArgs::max_body_in_flight`]).
    pub max_body_in_flight: usize,
    /// `text` or `json`.
    pub log_format: String,
    /// Largest accepted lead of an event time over the server clock, in milliseconds.
    pub max_clock_skew_ms: i64,
    /// Champion model file.
    pub model: Option<PathBuf>,
    /// Challenger model file.
    pub challenger: Option<PathBuf>,
    /// Redis URL (alerts), checked but not yet connected.
    pub redis: Option<Secret>,
    /// PostgreSQL URL (records), when not embedded.
    pub postgres: Option<Secret>,
    /// Fail closed (503) rather than degrade when Redis does not answer in time.
    pub redis_fail_closed: bool,
    /// Time budget for the shared state per request.
    pub redis_timeout: std::time::Duration,
    /// CA certificate (PEM) for `rediss://`, when not the system's trust store.
    pub redis_ca_cert: Option<PathBuf>,
    /// Stream key of the shared log.
    pub redis_log_key: String,
    /// Log entries between two snapshots of the shared state.
    pub snapshot_every: u64,
    /// This node's site name, when it runs as one of several active-active sites.
    pub site: Option<String>,
    /// Base URLs of the peer sites it replicates with.
    pub peers: Vec<String>,
    /// The API key sent to peer sites.
    pub peer_key: Option<Secret>,
    /// Access: the bootstrap administrator key, the first admin's password and how long
    /// sessions last.
    pub access: AccessSettings,
    /// The dashboard's address as people reach it, without a trailing `/`.
    pub public_url: Option<String>,
    /// Webhooks alerts are POSTed to.
    pub webhooks: Vec<crate::alerts::settings::WebhookSettings>,
    /// Alert mails, when configured.
    pub email: Option<crate::alerts::settings::EmailSettings>,
    /// The HTTPS certificate and key, when serving TLS.
    pub tls: Option<TlsFiles>,
    /// CA certificate (PEM) for PostgreSQL's TLS, when not the system's trust store.
    pub postgres_ca_cert: Option<PathBuf>,
    /// CA certificate (PEM) for `https://` peer sites, when not the system's trust store.
    pub peer_ca_cert: Option<PathBuf>,
}

/// The HTTPS listener's certificate chain and private key (PEM files, read at start).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, the leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// What access control needs from the configuration.
#[derive(Debug, Clone)]
pub struct AccessSettings {
    /// An administrator's API key (at least 24 characters), compared in constant time.
    pub admin_key: Option<Secret>,
    /// The first `admin` user's password (random when absent).
    pub admin_password: Option<Secret>,
    /// How long a session may stay unused.
    pub session_idle: std::time::Duration,
    /// Rate limit of stored API keys without one of their own.
    pub key_limit: Option<crate::auth::rate::RateLimit>,
}

/// Shortest accepted `--admin-key`.
pub const MIN_ADMIN_KEY_LEN: usize = 24;
/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Checks and resolves the access settings.
fn access_settings(
    admin_key: Option<Secret>,
    admin_password: Option<Secret>,
    session_idle_hours: u64,
) -> Result<AccessSettings, ConfigError> {
    if admin_key
        .as_ref()
        .is_some_and(|k| k.expose().chars().count() < MIN_ADMIN_KEY_LEN)
    {
        return Err(ConfigError::Invalid(format!(
            "admin_key must be at least {MIN_ADMIN_KEY_LEN} characters"
        )));
    }
    if admin_password
        .as_ref()
        .is_some_and(|p| p.expose().chars().count() < MIN_PASSWORD_LEN)
    {
        return Err(ConfigError::Invalid(format!(
            "admin_password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if !(1..=24 * 30).contains(&session_idle_hours) {
        return Err(ConfigError::Invalid(
            "session_idle_hours must be within 1..=720".into(),
        ));
    }
    Ok(AccessSettings {
        admin_key,
        admin_password,
        session_idle: std::time::Duration::from_secs(session_idle_hours * 3600),
        key_limit: None,
    })
}

/// Longest site name.
const MAX_SITE_LEN: usize = 64;

/// Checks the site name and peer URLs: a site decides on its embedded state (Redis and
/// PostgreSQL make several nodes one site instead), and a peer is an `http://` or `https://`
/// base URL.
fn check_sites(
    site: Option<&str>,
    peers: &[String],
    redis: bool,
    postgres: bool,
) -> Result<(), ConfigError> {
    let Some(site) = site else {
        if peers.is_empty() {
            return Ok(());
        }
        return Err(ConfigError::Invalid(
            "--peer needs --site (the name of this site)".into(),
        ));
    };
    let name_ok = !site.is_empty()
        && site.len() <= MAX_SITE_LEN
        && site
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(ConfigError::Invalid(format!(
            "site must be 1..={MAX_SITE_LEN} letters, digits, `-`, `_` or `.`"
        )));
    }
    if redis || postgres {
        return Err(ConfigError::Invalid(
            "--site runs on the embedded store; it cannot be combined with --redis or --postgres"
                .into(),
        ));
    }
    for peer in peers {
        let rest = peer
            .strip_prefix("http://")
            .or_else(|| peer.strip_prefix("https://"))
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "peer `{peer}` must be an http:// or https:// base URL"
                ))
            })?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(ConfigError::Invalid(format!(
                "peer `{peer}` must be a base URL such as http://10.0.0.2:8080 (no path)"
            )));
        }
    }
    Ok(())
}

/// Largest batch a client may send.
pub const DEFAULT_MAX_BATCH: usize = 10_000;
/// Default request body limit: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Default most requests in progress. At a few thousand decisions a second per node, 512
/// requests waiting is already about a tenth of a second of queue: more would only make the
/// accepted ones late.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// Default most body bytes held by requests in progress: 256 MiB.
pub const DEFAULT_MAX_BODY_IN_FLIGHT: usize = 256 * 1024 * 1024;

impl Settings {
    /// Resolves flags (already merged with the environment by clap) over the config file over
    /// the defaults, and validates the result.
    pub fn resolve(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        macro_rules! pick {
            ($name:ident, $default:expr) => {
                args.$name
                    .clone()
                    .or(file.$name.clone())
                    .unwrap_or($default)
            };
        }
        let defaults = EngineConfig::default();
        let thresholds = Thresholds {
            review: pick!(review_threshold, defaults.thresholds.review),
            challenge: pick!(challenge_threshold, defaults.thresholds.challenge),
            block: pick!(block_threshold, defaults.thresholds.block),
        };
        thresholds.validate().map_err(ConfigError::Invalid)?;
        let escalation_window_secs =
            pick!(escalation_window_secs, defaults.escalation.window_ms / 1000);
        if !(60..=31_536_000).contains(&escalation_window_secs) {
            return Err(ConfigError::Invalid(
                "escalation_window_secs must be within 60..=31536000".into(),
            ));
        }
        let escalation = EscalationPolicy {
            window_ms: escalation_window_secs * 1000,
            review_over: pick!(escalate_review_over, defaults.escalation.review_over),
            challenge_over: pick!(escalate_challenge_over, defaults.escalation.challenge_over),
            block_over: pick!(escalate_block_over, defaults.escalation.block_over),
        };
        let small_amount = pick!(small_amount, defaults.small_amount);
        if !(small_amount.is_finite() && small_amount >= 0.0) {
            return Err(ConfigError::Invalid("small_amount must be >= 0".into()));
        }
        let idle_ttl_days = pick!(idle_ttl_days, defaults.idle_ttl_ms / 86_400_000);
        if !(8..=36_500).contains(&idle_ttl_days) {
            return Err(ConfigError::Invalid(
                "idle_ttl_days must be within 8..=36500 (longer than the 7-day window)".into(),
            ));
        }
        let max_clock_skew_secs = pick!(max_clock_skew_secs, 300);
        if !(0..=86_400).contains(&max_clock_skew_secs) {
            return Err(ConfigError::Invalid(
                "max_clock_skew_secs must be within 0..=86400".into(),
            ));
        }
        let label_delay_days = pick!(label_delay_days, defaults.label_delay_days);
        if !(0..=33).contains(&label_delay_days) {
            return Err(ConfigError::Invalid(
                "label_delay_days must be within 0..=33".into(),
            ));
        }
        let model_points = pick!(model_points, defaults.model.points);
        if !(0.0..=100.0).contains(&model_points) {
            return Err(ConfigError::Invalid(
                "model_points must be within 0..=100".into(),
            ));
        }
        if idle_ttl_days < label_delay_days + 31 {
            return Err(ConfigError::Invalid(format!(
                "idle_ttl_days ({idle_ttl_days}) must be at least label_delay_days + 31 ({}) so expiry keeps the label windows",
                label_delay_days + 31
            )));
        }
        let max_batch = pick!(max_batch, DEFAULT_MAX_BATCH);
        if max_batch == 0 || max_batch > 100_000 {
            return Err(ConfigError::Invalid(
                "max_batch must be within 1..=100000".into(),
            ));
        }
        let max_body_bytes = pick!(max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        let max_in_flight = pick!(max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        if !(1..=1_000_000).contains(&max_in_flight) {
            return Err(ConfigError::Invalid(
                "max_in_flight must be within 1..=1000000".into(),
            ));
        }
        let max_body_in_flight = pick!(
            max_body_in_flight,
            DEFAULT_MAX_BODY_IN_FLIGHT.max(max_body_bytes)
        );
        if max_body_in_flight < max_body_bytes {
            return Err(ConfigError::Invalid(format!(
                "max_body_in_flight ({max_body_in_flight}) must be at least max_body_bytes ({max_body_bytes}), or a largest request could never be admitted"
            )));
        }
        let log_format = pick!(log_format, "text".to_string());
        if log_format != "text" && log_format != "json" {
            return Err(ConfigError::Invalid(
                "log_format must be `text` or `json`".into(),
            ));
        }
        let redis = args.redis.clone().or(file.redis);
        let redis_ca_cert = args.redis_ca_cert.clone().or(file.redis_ca_cert);
        if let Some(url) = &redis {
            crate::alerts::redis::client(url, redis_ca_cert.as_deref())
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let postgres = args.postgres.clone().or(file.postgres);
        let redis_fail_closed = match pick!(redis_unavailable, "degrade".to_string()).as_str() {
            "degrade" => false,
            "fail-closed" => true,
            _ => {
                return Err(ConfigError::Invalid(
                    "redis_unavailable must be `degrade` or `fail-closed`".into(),
                ))
            }
        };
        let redis_timeout_ms = pick!(redis_timeout_ms, 50);
        if !(1..=60_000).contains(&redis_timeout_ms) {
            return Err(ConfigError::Invalid(
                "redis_timeout_ms must be within 1..=60000".into(),
            ));
        }
        let redis_log_key = pick!(redis_log_key, "ringfence:log".to_string());
        let snapshot_every = pick!(snapshot_every, 500_000);
        if !(10..=1_000_000_000).contains(&snapshot_every) {
            return Err(ConfigError::Invalid(
                "snapshot_every must be within 10..=1000000000".into(),
            ));
        }
        let card_hash_key = args.card_hash_key.clone().or(file.card_hash_key);
        if postgres.is_some() && card_hash_key.is_none() {
            return Err(ConfigError::Invalid(
                "--postgres needs --card-hash-key (RINGFENCE_CARD_HASH_KEY): every node sharing the records must tokenise card numbers with the same key".into(),
            ));
        }
        let site = args.site.clone().or(file.site);
        let peers: Vec<String> = if args.peers.is_empty() {
            file.peers.unwrap_or_default()
        } else {
            args.peers.clone()
        };
        let peers: Vec<String> = peers
            .iter()
            .map(|p| p.trim().trim_end_matches('/').to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        check_sites(site.as_deref(), &peers, redis.is_some(), postgres.is_some())?;
        let mut access = access_settings(
            args.admin_key.clone().or(file.admin_key),
            args.admin_password.clone().or(file.admin_password),
            pick!(session_idle_hours, 12),
        )?;
        access.key_limit = match (
            args.key_rate.or(file.key_rate),
            args.key_burst.or(file.key_burst),
        ) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::Invalid("key_burst needs key_rate".into()));
            }
            (Some(rate), burst) => Some(
                crate::auth::rate::RateLimit::new(rate, burst)
                    .map_err(|e| ConfigError::Invalid(format!("key_rate {e}")))?,
            ),
        };
        let public_url = match args.public_url.clone().or(file.public_url) {
            Some(u) => {
                let u = u.trim().trim_end_matches('/').to_owned();
                let host = u
                    .strip_prefix("http://")
                    .or_else(|| u.strip_prefix("https://"));
                if host.is_none_or(str::is_empty) {
                    return Err(ConfigError::Invalid(
                        "public_url must be an http:// or https:// address".into(),
                    ));
                }
                Some(u)
            }
            None => None,
        };
        let webhooks = crate::alerts::settings::resolve_webhooks(
            file.webhook.unwrap_or_default(),
            args.webhook_url.clone().or(file.webhook_url),
            args.webhook_secret.clone().or(file.webhook_secret),
        )?;
        let email = crate::alerts::settings::resolve_email(file.email)?;
        let tls = match (
            args.tls_cert.clone().or(file.tls_cert),
            args.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert and tls_key go together: give both to serve HTTPS".into(),
                ))
            }
        };
        let postgres_ca_cert = args.postgres_ca_cert.clone().or(file.postgres_ca_cert);
        if postgres_ca_cert.is_some() && postgres.is_none() {
            return Err(ConfigError::Invalid(
                "postgres_ca_cert applies with --postgres only".into(),
            ));
        }
        let peer_ca_cert = args.peer_ca_cert.clone().or(file.peer_ca_cert);
        if let Some(ca) = &peer_ca_cert {
            crate::tls::root_store(Some(ca))
                .map_err(|e| ConfigError::Invalid(format!("peer_ca_cert: {e}")))?;
        }
        Ok(Settings {
            listen: pick!(listen, SocketAddr::from(([127, 0, 0, 1], 8080))),
            data: pick!(data, PathBuf::from("./data")),
            rules: args.rules.clone().or(file.rules),
            card_hash_key,
            engine: EngineConfig {
                thresholds,
                escalation,
                small_amount,
                idle_ttl_ms: idle_ttl_days * 86_400_000,
                label_delay_days,
                model: ringfence_core::decision::ModelPolicy {
                    points: model_points,
                    ..defaults.model
                },
            },
            max_body_bytes,
            max_batch,
            max_in_flight,
            max_body_in_flight,
            log_format,
            max_clock_skew_ms: max_clock_skew_secs * 1000,
            model: args.model.clone().or(file.model),
            challenger: args.challenger.clone().or(file.challenger),
            redis,
            postgres,
            redis_fail_closed,
            redis_timeout: std::time::Duration::from_millis(redis_timeout_ms),
            redis_ca_cert,
            redis_log_key,
            snapshot_every,
            site,
            peers,
            peer_key: args.peer_key.clone().or(file.peer_key),
            access,
            public_url,
            webhooks,
            email,
            tls,
            postgres_ca_cert,
            peer_ca_cert,
        })
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ringfence.toml");
        std::fs::write(
            &path,
            "review_threshold = 40\nblock_threshold = 90\ncard_hash_key = \"hunter2\"\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(path),
            block_threshold: Some(95.0),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(&args).expect("valid");
        assert_eq!(s.engine.thresholds.review, 40.0);
        assert_eq!(s.engine.thresholds.block, 95.0);
        assert_eq!(s.engine.thresholds.challenge, 70.0);
        assert!(!format!("{s:?}").contains("hunter2"), "secret printed");
        assert_eq!(
            s.card_hash_key.as_ref().map(Secret::expose),
            Some("hunter2")
        );
    }

    #[test]
    fn bad_values_and_unknown_keys_are_rejected() {
        let args = ServeArgs {
            review_threshold: Some(90.0),
            ..ServeArgs::default()
        };
        assert!(matches!(
            Settings::resolve(&args),
            Err(ConfigError::Invalid(_))
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").expect("write");
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let err = Settings::resolve(&args).expect_err("unknown key");
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
