//! The production records store: PostgreSQL, with one writer task and group commit.
//!
//! The shape follows [`super::sqlite`] so the host can use either: writes are queued in
//! engine order through a bounded queue and acknowledged (with the record's sequence number)
//! only after the transaction that holds them has committed; reads have the same meaning as
//! the SQLite ones.
//!
//! Why one writer task and not a pool of writers: a batch of up to [`MAX_BATCH`] writes costs
//! one transaction and one WAL flush on the server, so a single connection that always writes
//! whatever queued up while the previous batch committed (group commit) keeps up with the
//! engine, and it keeps the sequence numbers of one node in the order the engine applied the
//! writes. Each batch is a handful of `INSERT ... SELECT FROM unnest(arrays)` statements, one
//! per table, so the statement count does not grow with the batch.
//!
//! Why a shared sequence (`ringfence_seq`) instead of per-table serials: history replays
//! transactions and labels merged in one order, so both tables draw their `seq` from one
//! sequence, allocated per batch in engine order.
//!
//! Labels are stored as given, as in SQLite: the caller reads the current verdict with
//! [`PostgresStore::event_and_label`] and submits the new label with it as `previous`; the
//! current verdict of a transaction is its label with the highest `seq`.
//!
//! Reads use a few connections of their own, opened lazily and reopened when the server
//! dropped them, so a restart of PostgreSQL costs the requests in flight but not the node.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringfence_core::decision::Action;
use ringfence_core::event::{Timestamp, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Config, IsolationLevel, NoTls, Statement};

use super::postgres_tls::{split_sslmode, PgTls};

use super::{
    AlertQuery, AlertRow, HistoryItem, LabelRecord, StoreCounts, StoreSeen, TxSummary, WriteOp,
};

pub use super::writer::{send, QueuedWrite, WritePermit, Writer};

/// Most writes committed in one PostgreSQL transaction.
pub const MAX_BATCH: usize = 2048;
/// Writes that may wait for the writer before submitters are turned away.
pub const WRITE_QUEUE: usize = 100_000;
/// Read connections kept open (each pipelines its queries).
const READ_CONNECTIONS: usize = 4;
/// How long to wait for a TCP connection and the startup handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a batch may take from BEGIN to COMMIT before the writer gives up on it. A server
/// that stopped answering must turn into an error for the waiting requests, not a hang.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows fetched per round trip when replaying history.
const HISTORY_CHUNK: i32 = 10_000;
/// Key of the advisory lock that serialises migrations between nodes starting at once.
const MIGRATION_LOCK: i64 = 0x7269_6e67_6665_6e63; // "ringfenc"

/// One versioned schema step. Steps are append-only: a released step is never edited, a
/// change is a new step.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// The schema, step by step. The logical schema is the SQLite one; the differences are
/// PostgreSQL types and `alerts.id` being the transaction's `seq` (one alert per transaction,
/// so the alert list is in engine order across nodes without a second sequence).
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "records",
        sql: r#"
CREATE SEQUENCE ringfence_seq;
CREATE TABLE transactions (
    seq BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts BIGINT NOT NULL,
    amount DOUBLE PRECISION NOT NULL,
    action TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    alert BOOLEAN NOT NULL,
    event TEXT NOT NULL,
    decision TEXT NOT NULL
);
CREATE TABLE tx_entities (
    entity TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (entity, seq)
);
CREATE TABLE alerts (
    id BIGINT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    account TEXT,
    action TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    category TEXT NOT NULL,
    amount DOUBLE PRECISION NOT NULL,
    reasons TEXT NOT NULL
);
CREATE INDEX alerts_account ON alerts (account, id);
CREATE INDEX alerts_category ON alerts (category, id);
CREATE TABLE labels (
    seq BIGINT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    fraud BOOLEAN NOT NULL,
    previous BOOLEAN,
    source TEXT,
    note TEXT,
    labeled_at BIGINT NOT NULL
);
CREATE INDEX labels_tx ON labels (transaction_id, seq);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"#,
    },
    Migration {
        version: 2,
        name: "idempotent labels",
        // Nodes ship their records from a local buffer and may ship one twice (after a crash
        // between the commit and the cursor update): the same label must land once.
        sql: r#"
CREATE UNIQUE INDEX labels_once ON labels (transaction_id, labeled_at, fraud, (COALESCE(previous::int, -1)));
"#,
    },
    Migration {
        version: 3,
        name: "cases and audit",
        // A case per alert (absent until an analyst acts: no row means open), and the audit
        // trail of analyst actions, which nothing may change once written.
        sql: r#"
CREATE TABLE cases (
    alert_id BIGINT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    status TEXT NOT NULL,
    assignee TEXT,
    verdict TEXT,
    note TEXT,
    closed_by TEXT,
    closed_at BIGINT,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX cases_status ON cases (status, alert_id);
CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_actor ON audit (actor, id);
CREATE INDEX audit_target ON audit (target, id);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only';
END
$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
"#,
    },
    Migration {
        version: 4,
        name: "audit hash chain",
        // Every audit row gets `hash = sha256(previous hash || encoding(row))`, computed here
        // by an insert trigger that locks the one-row chain head (so appends from every node
        // are serialised and the chain never forks) and numbers the row `last_id + 1`. The
        // encoding is the one `cases::chain` documents and verifies. Rows already written are
        // chained once, in id order, with the append-only trigger disabled for that.
        sql: AUDIT_CHAIN_MIGRATION,
    },
];

/// Migration 4: the audit trail's hash chain (see [`crate::cases::chain`]).
const AUDIT_CHAIN_MIGRATION: &str = r#"
ALTER TABLE audit ADD COLUMN hash BYTEA;
CREATE TABLE audit_chain (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    last_id BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
CREATE FUNCTION audit_row_encoding(id BIGINT, at BIGINT, actor TEXT, role TEXT, action TEXT,
                                   target TEXT, detail TEXT)
RETURNS BYTEA LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT int8send(id) || int8send(at)
        || int8send(octet_length(convert_to(actor, 'UTF8'))::BIGINT) || convert_to(actor, 'UTF8')
        || int8send(octet_length(convert_to(role, 'UTF8'))::BIGINT) || convert_to(role, 'UTF8')
        || int8send(octet_length(convert_to(action, 'UTF8'))::BIGINT) || convert_to(action, 'UTF8')
        || int8send(octet_length(convert_to(target, 'UTF8'))::BIGINT) || convert_to(target, 'UTF8')
        || int8send(octet_length(convert_to(detail, 'UTF8'))::BIGINT) || convert_to(detail, 'UTF8')
$$;
ALTER TABLE audit DISABLE TRIGGER audit_no_change;
DO $$
DECLARE
    r RECORD;
    prev BYTEA := decode(repeat('00', 32), 'hex');
    last BIGINT := 0;
BEGIN
    FOR r IN SELECT * FROM audit ORDER BY id LOOP
        prev := sha256(prev || audit_row_encoding(r.id, r.at, r.actor, r.role, r.action,
                                                  r.target, r.detail));
        UPDATE audit SET hash = prev WHERE id = r.id;
        last := r.id;
    END LOOP;
    INSERT INTO audit_chain (one, last_id, hash) VALUES (TRUE, last, prev);
END
$$;
ALTER TABLE audit ENABLE TRIGGER audit_no_change;
ALTER TABLE audit ALTER COLUMN hash SET NOT NULL;
CREATE FUNCTION audit_chain_append() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head RECORD;
BEGIN
    SELECT last_id, hash INTO head FROM audit_chain WHERE one FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the audit chain head is missing';
    END IF;
    NEW.id := head.last_id + 1;
    NEW.hash := sha256(head.hash || audit_row_encoding(NEW.id, NEW.at, NEW.actor, NEW.role,
                                                       NEW.action, NEW.target, NEW.detail));
    UPDATE audit_chain SET last_id = NEW.id, hash = NEW.hash WHERE one;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_chain_append BEFORE INSERT ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_chain_append();
CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
"#;

/// A failure of the PostgreSQL store. Messages never contain the password of the URL.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The URL could not be parsed. It is not shown: without knowing where its password
    /// ends, no part of it is safe to print.
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    /// The server could not be reached or refused the session.
    #[error("cannot connect to PostgreSQL at {url}: {detail}")]
    Connect {
        /// The URL with its password replaced by `***`.
        url: String,
        /// Why.
        detail: String,
    },
    /// A schema step failed; nothing of it was applied.
    #[error("migration {version} ({name}) failed: {detail}")]
    Migration {
        /// The step's version.
        version: i32,
        /// The step's name.
        name: &'static str,
        /// Why.
        detail: String,
    },
    /// A statement failed.
    #[error("postgres: {0}")]
    Query(String),
    /// The server did not answer in time; a write's outcome is then unknown.
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The writer task is gone or was closed.
    #[error("the store is closed")]
    Closed,
}

impl From<tokio_postgres::Error> for PostgresError {
    fn from(e: tokio_postgres::Error) -> Self {
        PostgresError::Query(describe(&e))
    }
}

/// `tokio_postgres::Error`'s own message is only its kind ("db error"); the useful part (the
/// server's message, the IO error) is in its source chain.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({}): {}", db.severity(), db.code().code(), db.message());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `url` with any password replaced by `***`, for logs and error messages. Handles the URL
/// form (`postgres://user:pw@host/db`, `?password=pw`) and the key-value form
/// (`host=h password=pw`). When in doubt it hides more, never less.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        // The last `@` ends the user info: an unencoded `@` in a password comes before it.
        if let Some(at) = out[rest_start..].rfind('@').map(|i| rest_start + i) {
            if let Some(colon) = out[rest_start..at].find(':').map(|i| rest_start + i) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    redact_password_params(&out)
}

/// Replaces the value of every `password=` parameter (query string or key-value form, quoted
/// or not) with `***`.
fn redact_password_params(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find("password").map(|i| search + i) {
        let mut i = found + "password".len();
        search = i;
        let starts_param =
            found == 0 || matches!(s.as_bytes()[found - 1], b'?' | b'&' | b' ' | b'\t' | b'\n');
        if !starts_param {
            continue;
        }
        let bytes = s.as_bytes();
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let value_start = i;
        let value_end = if i < bytes.len() && bytes[i] == b'\'' {
            // Quoted value: up to the closing quote that is not escaped by a backslash.
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(bytes.len())
        } else {
            let mut j = i;
            while j < bytes.len() && !matches!(bytes[j], b'&' | b' ' | b'\t' | b'\n') {
                j += 1;
            }
            j
        };
        out.push_str(&s[copied..value_start]);
        out.push_str("***");
        copied = value_end;
        search = value_end;
    }
    out.push_str(&s[copied..]);
    out
}

/// What was wrong with a connection string, if saying so cannot reveal the password. The
/// parser's messages can quote the string (an unknown option's name, the character it
/// stumbled on), and with an unquoted password that is a piece of the password; only the
/// message naming an option, whose names are fixed, is passed on.
fn parse_detail(e: &tokio_postgres::Error) -> String {
    let detail = describe(e);
    if detail.contains("invalid value for option `") {
        detail
    } else {
        "not a valid connection URL or key-value string (the parser's details are withheld: \
         they may quote the password)"
            .to_owned()
    }
}

/// `postgres://user:***@host:port/dbname` from a parsed config.
fn target(config: &Config) -> String {
    let user = config.get_user().unwrap_or("");
    let password = if config.get_password().is_some() {
        ":***"
    } else {
        ""
    };
    let at = if user.is_empty() && password.is_empty() {
        ""
    } else {
        "@"
    };
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let dbname = config.get_dbname().unwrap_or("");
    format!(
        "postgres://{user}{password}{at}{}/{dbname}",
        hosts.join(",")
    )
}

/// How to open a session: the parsed config, the URL to name in errors (already redacted)
/// and the TLS its `sslmode` asks for.
#[derive(Clone)]
struct Connector {
    config: Config,
    redacted: String,
    tls: Option<PgTls>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("url", &self.redacted)
            .finish()
    }
}

impl Connector {
    /// `ca` is the `--postgres-ca-cert` file, for the `sslmode`s that check certificates.
    fn parse(url: &str, ca: Option<&std::path::Path>) -> Result<Connector, PostgresError> {
        let (url, mode) = split_sslmode(url).map_err(PostgresError::Url)?;
        let mut config: Config = url
            .parse()
            .map_err(|e| PostgresError::Url(parse_detail(&e)))?;
        let tls = match mode {
            Some(mode) => {
                config.ssl_mode(mode.driver_mode());
                PgTls::for_mode(mode, ca).map_err(|e| PostgresError::Url(e.to_string()))?
            }
            // No sslmode: plain, as before TLS support (tokio-postgres' default `prefer`
            // never upgrades without a TLS connector).
            None => None,
        };
        // Errors name the server from the parsed config, not from the string: whatever the
        // string's form and quoting, the password is not in what we print.
        let redacted = redact_url(&target(&config));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("ringfence");
        }
        Ok(Connector {
            config,
            redacted,
            tls,
        })
    }

    /// Opens a session and runs its connection on a task of its own.
    async fn connect(&self) -> Result<Client, PostgresError> {
        let failed = |e: tokio_postgres::Error| PostgresError::Connect {
            url: self.redacted.clone(),
            detail: describe(&e),
        };
        // The connection's stream type differs with TLS, so each runs on its own task here.
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %describe(&e), "a PostgreSQL connection ended");
                    }
                });
                Ok(client)
            }
            Some(tls) => {
                let (client, connection) =
                    self.config.connect(tls.clone()).await.map_err(failed)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %describe(&e), "a PostgreSQL connection ended");
                    }
                });
                Ok(client)
            }
        }
    }
}

/// Applies the steps of [`MIGRATIONS`] the database does not have yet, in one transaction.
/// The transaction-scoped advisory lock makes a second node that starts at the same time wait
/// and then find every step applied, instead of racing on `CREATE TABLE`.
async fn migrate(client: &mut Client) -> Result<(), PostgresError> {
    let t = client.transaction().await?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    t.batch_execute(
        "CREATE TABLE IF NOT EXISTS ringfence_migrations (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: HashSet<i32> = t
        .query("SELECT version FROM ringfence_migrations", &[])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    for m in MIGRATIONS {
        if applied.contains(&m.version) {
            continue;
        }
        let failed = |e: tokio_postgres::Error| PostgresError::Migration {
            version: m.version,
            name: m.name,
            detail: describe(&e),
        };
        t.batch_execute(m.sql).await.map_err(failed)?;
        t.execute(
            "INSERT INTO ringfence_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(failed)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied schema migration"
        );
    }
    let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(newer) = applied.iter().copied().filter(|v| *v > known).max() {
        // A newer node migrated this database. Steps only add, so this build can still run
        // (a rolling upgrade passes through this state); say so in case it cannot.
        tracing::warn!(
            database = newer,
            this_build = known,
            "the database schema is newer than this build"
        );
    }
    t.commit().await?;
    Ok(())
}

/// The PostgreSQL store. Cheap to clone; clones share the writer and the read connections.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    readers: Arc<ReadPool>,
    writer: Writer,
}

impl PostgresStore {
    /// Connects to `url`, applies pending migrations and starts the writer task. Must be
    /// called inside a tokio runtime. Fails when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<PostgresStore, PostgresError> {
        Self::connect_with(url, None).await
    }

    /// [`PostgresStore::connect`], with `ca` (PEM) as the authority the server's certificate
    /// must chain to under the URL's `sslmode` (see [`super::postgres_tls`]).
    pub async fn connect_with(
        url: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<PostgresStore, PostgresError> {
        let connector = Connector::parse(url, ca)?;
        let mut client = connector.connect().await?;
        migrate(&mut client).await?;
        let first = WriteConn::prepare(client).await?;
        let (queue, rx) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(writer_loop(connector.clone(), Some(first), rx));
        Ok(PostgresStore {
            readers: Arc::new(ReadPool {
                slots: (0..READ_CONNECTIONS)
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect(),
                next: AtomicUsize::new(0),
                connector,
            }),
            writer: Writer::new(queue),
        })
    }

    /// The write side. What an acknowledgement means here: `Ok(seq)` only after the batch's
    /// COMMIT succeeded. A duplicate transaction id is acknowledged too (the first record
    /// stands, as in SQLite) with a sequence number that holds no record. `Err` means the
    /// write was not confirmed: usually not stored, but if the connection broke during COMMIT
    /// the server may have committed it, so a retry must go through the id check (which the
    /// host does).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// A session of its own on `url` (TLS by its `sslmode`, checked against `ca` when given),
    /// without migrations or a writer, for tools that only read (`ringfence audit verify`).
    pub async fn connect_reader(
        url: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Client, PostgresError> {
        Connector::parse(url, ca)?.connect().await
    }

    /// A connection of the read pool for modules that keep their own statements (cases,
    /// audit, investigate). It is shared and pipelined: send single statements (a write that
    /// must be atomic is one statement, e.g. a data-modifying `WITH`), never `BEGIN`.
    pub async fn session(&self) -> Result<Session, PostgresError> {
        Ok(Session(self.readers.get().await?))
    }

    /// A value from the `meta` table (settings the data was written under).
    pub async fn meta(&self, key: &str) -> Result<Option<String>, PostgresError> {
        let c = self.readers.get().await?;
        let row = read(c.client.query_opt(&c.meta, &[&key])).await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    /// Sets a `meta` value.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), PostgresError> {
        let c = self.readers.get().await?;
        read(c.client.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        ))
        .await?;
        Ok(())
    }

    /// The stored decision of each of `ids` that exists, as JSON text.
    pub async fn decisions_of(
        &self,
        ids: Vec<String>,
    ) -> Result<HashMap<String, String>, PostgresError> {
        let c = self.readers.get().await?;
        let rows = read(c.client.query(&c.decisions, &[&ids])).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The stored decision of one id. (The SQLite store's `decision_blocking`: there is no
    /// blocking read here, a caller under a lock must look up before taking it.)
    pub async fn decision(&self, id: &str) -> Result<Option<String>, PostgresError> {
        let c = self.readers.get().await?;
        let row = read(c.client.query_opt(&c.decision, &[&id])).await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    /// The id of the alert a transaction raised, if it raised one (here an alert's id is
    /// its transaction's sequence number): how an e-mail links to the case.
    pub async fn alert_id_of(&self, transaction_id: &str) -> Result<Option<i64>, PostgresError> {
        let c = self.readers.get().await?;
        let row = read(c.client.query_opt(
            "SELECT a.id FROM transactions t JOIN alerts a ON a.id = t.seq WHERE t.id = $1",
            &[&transaction_id],
        ))
        .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    /// A stored transaction with its decision and labels.
    pub async fn transaction(
        &self,
        id: String,
    ) -> Result<Option<serde_json::Value>, PostgresError> {
        let c = self.readers.get().await?;
        let Some(row) = read(c.client.query_opt(&c.transaction, &[&id])).await? else {
            return Ok(None);
        };
        let seq: i64 = row.try_get(0)?;
        let event: String = row.try_get(1)?;
        let decision: String = row.try_get(2)?;
        let labels = read(c.client.query(&c.labels_of, &[&id]))
            .await?
            .iter()
            .map(|r| {
                Ok(LabelRecord {
                    transaction_id: id.clone(),
                    fraud: r.try_get(0)?,
                    previous: r.try_get(1)?,
                    source: r.try_get(2)?,
                    note: r.try_get(3)?,
                    labeled_at: Timestamp::from_millis(r.try_get(4)?),
                })
            })
            .collect::<Result<Vec<_>, PostgresError>>()?;
        Ok(Some(serde_json::json!({
            "seq": seq,
            "transaction": parse_json(&event)?,
            "decision": parse_json(&decision)?,
            "labels": labels,
        })))
    }

    /// The stored event of a transaction and its latest label.
    pub async fn event_and_label(
        &self,
        id: String,
    ) -> Result<Option<(Transaction, Option<bool>)>, PostgresError> {
        let c = self.readers.get().await?;
        let Some(row) = read(c.client.query_opt(&c.event_and_label, &[&id])).await? else {
            return Ok(None);
        };
        let event: String = row.try_get(0)?;
        let tx: Transaction =
            serde_json::from_str(&event).map_err(|e| PostgresError::Corrupt(e.to_string()))?;
        Ok(Some((tx, row.try_get(1)?)))
    }

    /// Newest transactions of an entity (`kind:id`), newest first.
    pub async fn entity_transactions(
        &self,
        entity: String,
        limit: u32,
    ) -> Result<Vec<(TxSummary, Transaction)>, PostgresError> {
        let c = self.readers.get().await?;
        let rows = read(
            c.client
                .query(&c.entity_transactions, &[&entity, &i64::from(limit)]),
        )
        .await?;
        rows.iter()
            .map(|r| {
                let event: String = r.try_get(5)?;
                let tx: Transaction = serde_json::from_str(&event)
                    .map_err(|e| PostgresError::Corrupt(e.to_string()))?;
                Ok((
                    TxSummary {
                        transaction_id: r.try_get(0)?,
                        timestamp: Timestamp::from_millis(r.try_get(1)?),
                        amount: r.try_get(2)?,
                        decision: r.try_get(3)?,
                        score: r.try_get(4)?,
                        merchant: tx.merchant.as_ref().map(|m| m.as_str().to_owned()),
                    },
                    tx,
                ))
            })
            .collect()
    }

    /// The stores of the latest `window` records of every node, by name, with their counts
    /// (see [`crate::store::sqlite::SqliteStore::recent_stores`]).
    pub async fn recent_stores(&self, window: u32) -> Result<Vec<StoreSeen>, PostgresError> {
        let c = self.readers.get().await?;
        let rows = read(c.client.query(
            "SELECT store, COUNT(*), SUM(CASE WHEN kind = 'purchase' THEN 1 ELSE 0 END)::BIGINT,
                    SUM(CASE WHEN kind = 'return' THEN 1 ELSE 0 END)::BIGINT,
                    SUM(CASE WHEN action <> 'approve' THEN 1 ELSE 0 END)::BIGINT,
                    SUM(CASE WHEN action = 'block' THEN 1 ELSE 0 END)::BIGINT, MAX(ts)
             FROM (SELECT event::json ->> 'store_id' AS store, event::json ->> 'kind' AS kind,
                          action, ts
                   FROM transactions ORDER BY seq DESC LIMIT $1) recent
             WHERE store IS NOT NULL GROUP BY store ORDER BY store",
            &[&i64::from(window)],
        ))
        .await?;
        rows.iter()
            .map(|r| {
                let n = |i: usize| r.try_get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(StoreSeen {
                    store_id: r.try_get(0)?,
                    transactions: n(1)?,
                    purchases: n(2)?,
                    returns: n(3)?,
                    flagged: n(4)?,
                    blocked: n(5)?,
                    last_at: Timestamp::from_millis(r.try_get(6)?),
                })
            })
            .collect()
    }

    /// Alerts, newest first: at most `limit` (default 100, clamped to 1..=1000), filtered by
    /// every field of `q` that is set.
    pub async fn alerts(&self, q: AlertQuery) -> Result<Vec<AlertRow>, PostgresError> {
        let c = self.readers.get().await?;
        let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
        let rows = read(c.client.query(
            &c.alerts,
            &[&q.before, &q.category, &q.account, &q.decision, &limit],
        ))
        .await?;
        rows.iter()
            .map(|r| {
                let reasons: String = r.try_get(8)?;
                Ok(AlertRow {
                    id: r.try_get(0)?,
                    transaction_id: r.try_get(1)?,
                    timestamp: Timestamp::from_millis(r.try_get(2)?),
                    account: r.try_get(3)?,
                    decision: r.try_get(4)?,
                    score: r.try_get(5)?,
                    category: r.try_get(6)?,
                    amount: r.try_get(7)?,
                    reasons: parse_json(&reasons)?,
                })
            })
            .collect()
    }

    /// How many records the store holds (exact counts: a full scan on large tables).
    pub async fn counts(&self) -> Result<StoreCounts, PostgresError> {
        let c = self.readers.get().await?;
        let row = read(c.client.query_one(&c.counts, &[])).await?;
        let count = |i: usize| -> Result<u64, PostgresError> {
            Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0))
        };
        Ok(StoreCounts {
            transactions: count(0)?,
            alerts: count(1)?,
            labels: count(2)?,
        })
    }

    /// The latest event time of a stored transaction, on any node (`None` when none is
    /// stored): where a backtest's window ends. A scan (there is no index on event time).
    pub async fn latest_event_time(&self) -> Result<Option<i64>, PostgresError> {
        let c = self.readers.get().await?;
        let row = read(c.client.query_one("SELECT MAX(ts) FROM transactions", &[])).await?;
        Ok(row.try_get(0)?)
    }

    /// Streams stored history (transactions and labels merged by sequence number) into `f`
    /// and returns the number of transactions. Used once at start to rebuild entity state.
    ///
    /// Reads through a cursor in a read-only repeatable-read transaction on a connection of
    /// its own: memory stays bounded by one chunk however long the history, and writes that
    /// commit meanwhile are not half-seen.
    pub async fn for_each_history(
        &self,
        mut f: impl FnMut(HistoryItem),
    ) -> Result<u64, PostgresError> {
        let mut client = self.readers.connector.connect().await?;
        let t = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        // A label on a transaction that is not stored is skipped, as in the SQLite store.
        let portal = t
            .bind(
                "SELECT seq, TRUE, alert, NULL::boolean, NULL::boolean, event, action = 'block'
                 FROM transactions
                 UNION ALL
                 SELECT l.seq, FALSE, NULL::boolean, l.fraud, l.previous, t.event, FALSE
                 FROM labels l JOIN transactions t ON t.id = l.transaction_id
                 ORDER BY 1",
                &[],
            )
            .await?;
        let mut n = 0u64;
        loop {
            let rows = read(t.query_portal(&portal, HISTORY_CHUNK)).await?;
            for row in &rows {
                let seq: i64 = row.try_get(0)?;
                let is_tx: bool = row.try_get(1)?;
                let event: String = row.try_get(5)?;
                let what = if is_tx { "transaction" } else { "label" };
                let tx: Transaction = serde_json::from_str(&event)
                    .map_err(|e| PostgresError::Corrupt(format!("{what} seq {seq}: {e}")))?;
                if is_tx {
                    let alert: Option<bool> = row.try_get(2)?;
                    let blocked: Option<bool> = row.try_get(6)?;
                    f(HistoryItem::Tx {
                        tx,
                        alert: alert.unwrap_or(false),
                        blocked: blocked.unwrap_or(false),
                    });
                    n += 1;
                } else {
                    let fraud: Option<bool> = row.try_get(3)?;
                    let fraud = fraud.ok_or_else(|| {
                        PostgresError::Corrupt(format!("label seq {seq}: no verdict"))
                    })?;
                    f(HistoryItem::Label {
                        tx,
                        fraud,
                        previous: row.try_get(4)?,
                    });
                }
            }
            if rows.len() < HISTORY_CHUNK as usize {
                break;
            }
        }
        t.commit().await?;
        Ok(n)
    }
}

/// Which stored records [`PostgresStore::export_records`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportTable {
    /// Transactions with their decisions, by event time.
    Transactions,
    /// Alerts, by the event time of the transaction that raised them.
    Alerts,
    /// Labels, by the time they were recorded (`labeled_at`).
    Labels,
}

/// One stored record as a bulk export reads it. The SQLite reader of `ringfence export`
/// yields the same shape, so both stores format through one path.
#[derive(Clone, Debug)]
pub enum ExportRow {
    /// A transaction: its event and its decision, as the JSON text they are stored as.
    Transaction {
        /// Sequence number (engine order).
        seq: i64,
        /// The validated transaction (JSON of [`Transaction`]).
        event: String,
        /// The decision (JSON of [`super::DecisionRecord`]).
        decision: String,
    },
    /// An alert.
    Alert(AlertRow),
    /// A label and the event time of its transaction, when that transaction is stored.
    Label {
        /// Sequence number (engine order).
        seq: i64,
        /// The label.
        label: LabelRecord,
        /// Event time of the labelled transaction.
        transaction_time: Option<Timestamp>,
    },
}

/// Rows fetched per round trip by an export: bounds the memory an export holds.
const EXPORT_CHUNK: i32 = 1_000;

impl PostgresStore {
    /// Streams the records of each of `tables` whose time is in `[since, until)` into `emit`
    /// with the index of their table in `tables`, table after table, each in sequence
    /// (engine) order. A table may be listed twice (one pass each). Returns the first error
    /// of `emit` or of the database.
    ///
    /// Opens a session of its own and nothing else: no migrations and no writer, since an
    /// export only reads and may run against a database that live nodes are writing to.
    /// Every table is read in one read-only repeatable-read transaction, so records that
    /// commit during the export are all left out rather than half-seen (an alert without its
    /// transaction), and through a cursor of [`EXPORT_CHUNK`] rows, so memory stays bounded
    /// however large the range.
    pub async fn export_records<E: From<PostgresError>>(
        url: &str,
        tables: &[ExportTable],
        since: Timestamp,
        until: Timestamp,
        mut emit: impl FnMut(usize, ExportRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let connector = Connector::parse(url, None)?;
        let mut client = connector.connect().await?;
        let t = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(PostgresError::from)?;
        let range: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&since.millis(), &until.millis()];
        for (pass, table) in tables.iter().enumerate() {
            let sql = match table {
                ExportTable::Transactions => {
                    "SELECT seq, event, decision FROM transactions
                     WHERE ts >= $1 AND ts < $2 ORDER BY seq"
                }
                ExportTable::Alerts => {
                    "SELECT id, transaction_id, ts, account, action, score, category, amount,
                            reasons
                     FROM alerts WHERE ts >= $1 AND ts < $2 ORDER BY id"
                }
                // A label whose transaction is not stored is still exported (the verdict was
                // given), with no transaction time.
                ExportTable::Labels => {
                    "SELECT l.seq, l.transaction_id, l.fraud, l.previous, l.source, l.note,
                            l.labeled_at, t.ts
                     FROM labels l LEFT JOIN transactions t ON t.id = l.transaction_id
                     WHERE l.labeled_at >= $1 AND l.labeled_at < $2 ORDER BY l.seq"
                }
            };
            let portal = read(t.bind(sql, &range)).await?;
            loop {
                let rows = read(t.query_portal(&portal, EXPORT_CHUNK)).await?;
                for row in &rows {
                    emit(pass, export_row(*table, row)?)?;
                }
                if rows.len() < EXPORT_CHUNK as usize {
                    break;
                }
            }
        }
        read(t.commit()).await?;
        Ok(())
    }
}

/// Decodes one row of an export query of `table`.
fn export_row(table: ExportTable, r: &tokio_postgres::Row) -> Result<ExportRow, PostgresError> {
    Ok(match table {
        ExportTable::Transactions => ExportRow::Transaction {
            seq: r.try_get(0)?,
            event: r.try_get(1)?,
            decision: r.try_get(2)?,
        },
        ExportTable::Alerts => {
            let reasons: String = r.try_get(8)?;
            ExportRow::Alert(AlertRow {
                id: r.try_get(0)?,
                transaction_id: r.try_get(1)?,
                timestamp: Timestamp::from_millis(r.try_get(2)?),
                account: r.try_get(3)?,
                decision: r.try_get(4)?,
                score: r.try_get(5)?,
                category: r.try_get(6)?,
                amount: r.try_get(7)?,
                reasons: parse_json(&reasons)?,
            })
        }
        ExportTable::Labels => ExportRow::Label {
            seq: r.try_get(0)?,
            label: LabelRecord {
                transaction_id: r.try_get(1)?,
                fraud: r.try_get(2)?,
                previous: r.try_get(3)?,
                source: r.try_get(4)?,
                note: r.try_get(5)?,
                labeled_at: Timestamp::from_millis(r.try_get(6)?),
            },
            transaction_time: r.try_get::<_, Option<i64>>(7)?.map(Timestamp::from_millis),
        },
    })
}

fn parse_json(s: &str) -> Result<serde_json::Value, PostgresError> {
    serde_json::from_str(s).map_err(|e| PostgresError::Corrupt(e.to_string()))
}

/// Runs a read with [`READ_TIMEOUT`].
async fn read<T>(
    fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PostgresError> {
    match tokio::time::timeout(READ_TIMEOUT, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(PostgresError::Timeout(READ_TIMEOUT)),
    }
}

/// A pooled connection lent by [`PostgresStore::session`]; derefs to the client.
pub struct Session(Arc<ReadConn>);

impl std::ops::Deref for Session {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.0.client
    }
}

impl Session {
    /// Runs a statement's future with the store's read timeout.
    pub async fn timed<T>(
        fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, PostgresError> {
        read(fut).await
    }
}

/// A few read connections, handed out round-robin. Each is a pipelining client, so sharing
/// one between requests is fine; several spread the work over server backends.
#[derive(Debug)]
struct ReadPool {
    slots: Vec<tokio::sync::Mutex<Option<Arc<ReadConn>>>>,
    next: AtomicUsize,
    connector: Connector,
}

impl ReadPool {
    /// A live read connection, reopened if the server dropped the old one.
    async fn get(&self) -> Result<Arc<ReadConn>, PostgresError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.client.is_closed() {
                return Ok(c.clone());
            }
        }
        *slot = None;
        let conn = Arc::new(ReadConn::open(&self.connector).await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

/// A read connection with its statements prepared once.
struct ReadConn {
    client: Client,
    meta: Statement,
    decisions: Statement,
    decision: Statement,
    transaction: Statement,
    labels_of: Statement,
    event_and_label: Statement,
    entity_transactions: Statement,
    alerts: Statement,
    counts: Statement,
}

impl fmt::Debug for ReadConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadConn")
            .field("closed", &self.client.is_closed())
            .finish_non_exhaustive()
    }
}

impl ReadConn {
    async fn open(connector: &Connector) -> Result<ReadConn, PostgresError> {
        let client = connector.connect().await?;
        read(ReadConn::prepare(client)).await
    }

    async fn prepare(client: Client) -> Result<ReadConn, tokio_postgres::Error> {
        Ok(ReadConn {
            meta: client
                .prepare("SELECT value FROM meta WHERE key = $1")
                .await?,
            decisions: client
                .prepare("SELECT id, decision FROM transactions WHERE id = ANY($1::text[])")
                .await?,
            decision: client
                .prepare("SELECT decision FROM transactions WHERE id = $1")
                .await?,
            transaction: client
                .prepare("SELECT seq, event, decision FROM transactions WHERE id = $1")
                .await?,
            labels_of: client
                .prepare(
                    "SELECT fraud, previous, source, note, labeled_at FROM labels
                     WHERE transaction_id = $1 ORDER BY seq",
                )
                .await?,
            event_and_label: client
                .prepare(
                    "SELECT t.event,
                        (SELECT l.fraud FROM labels l WHERE l.transaction_id = t.id
                         ORDER BY l.seq DESC LIMIT 1)
                     FROM transactions t WHERE t.id = $1",
                )
                .await?,
            entity_transactions: client
                .prepare(
                    "SELECT t.id, t.ts, t.amount, t.action, t.score, t.event
                     FROM tx_entities e JOIN transactions t ON t.seq = e.seq
                     WHERE e.entity = $1 ORDER BY e.seq DESC LIMIT $2",
                )
                .await?,
            alerts: client
                .prepare(
                    "SELECT id, transaction_id, ts, account, action, score, category, amount,
                            reasons
                     FROM alerts
                     WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR category = $2)
                       AND ($3::text IS NULL OR account = $3) AND ($4::text IS NULL OR action = $4)
                     ORDER BY id DESC LIMIT $5",
                )
                .await?,
            counts: client
                .prepare(
                    "SELECT (SELECT COUNT(*) FROM transactions),
                            (SELECT COUNT(*) FROM alerts),
                            (SELECT COUNT(*) FROM labels)",
                )
                .await?,
            client,
        })
    }
}

/// The writer's connection with its statements prepared once.
struct WriteConn {
    client: Client,
    next_seqs: Statement,
    insert_transactions: Statement,
    insert_entities: Statement,
    insert_alerts: Statement,
    insert_labels: Statement,
}

impl WriteConn {
    async fn prepare(client: Client) -> Result<WriteConn, PostgresError> {
        let next_seqs = client
            .prepare("SELECT nextval('ringfence_seq') FROM generate_series(1, $1::bigint)")
            .await?;
        let insert_transactions = client
            .prepare(
                "INSERT INTO transactions (seq, id, ts, amount, action, score, alert, event, decision)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::float8[],
                                      $5::text[], $6::float8[], $7::boolean[], $8::text[],
                                      $9::text[])
                 ON CONFLICT (id) DO NOTHING
                 RETURNING seq",
            )
            .await?;
        let insert_entities = client
            .prepare(
                "INSERT INTO tx_entities (entity, seq)
                 SELECT * FROM unnest($1::text[], $2::bigint[])
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        let insert_alerts = client
            .prepare(
                "INSERT INTO alerts (id, transaction_id, ts, account, action, score, category,
                                     amount, reasons)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],
                                      $5::text[], $6::float8[], $7::text[], $8::float8[],
                                      $9::text[])",
            )
            .await?;
        let insert_labels = client
            .prepare(
                "INSERT INTO labels (seq, transaction_id, fraud, previous, source, note,
                                     labeled_at)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::boolean[], $4::boolean[],
                                      $5::text[], $6::text[], $7::bigint[])
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        Ok(WriteConn {
            client,
            next_seqs,
            insert_transactions,
            insert_entities,
            insert_alerts,
            insert_labels,
        })
    }

    /// Writes `batch` in one transaction and returns the sequence number given to each op.
    async fn write(&mut self, batch: &[QueuedWrite]) -> Result<Vec<i64>, PostgresError> {
        let t = self.client.transaction().await?;
        let mut seqs: Vec<i64> = t
            .query(&self.next_seqs, &[&(batch.len() as i64)])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        // Values of one `nextval` call are increasing; sorting makes the engine order of the
        // batch the sequence order without relying on the order rows come back in.
        seqs.sort_unstable();
        if seqs.len() != batch.len() {
            return Err(PostgresError::Query(format!(
                "asked for {} sequence numbers, got {}",
                batch.len(),
                seqs.len()
            )));
        }
        let mut txs = TxColumns::default();
        let mut labels = LabelColumns::default();
        for ((op, _), &seq) in batch.iter().zip(&seqs) {
            match op {
                WriteOp::Tx(rec) => txs.push(seq, rec)?,
                WriteOp::Label(l) => labels.push(seq, l),
                WriteOp::Close | WriteOp::SiteOffset(_) => {}
            }
        }
        if !txs.seq.is_empty() {
            let inserted: HashSet<i64> = t
                .query(
                    &self.insert_transactions,
                    &[
                        &txs.seq,
                        &txs.id,
                        &txs.ts,
                        &txs.amount,
                        &txs.action,
                        &txs.score,
                        &txs.alert,
                        &txs.event,
                        &txs.decision,
                    ],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            let (entities, alerts) = txs.dependents(&inserted);
            if !entities.entity.is_empty() {
                t.execute(&self.insert_entities, &[&entities.entity, &entities.seq])
                    .await?;
            }
            if !alerts.id.is_empty() {
                t.execute(
                    &self.insert_alerts,
                    &[
                        &alerts.id,
                        &alerts.transaction_id,
                        &alerts.ts,
                        &alerts.account,
                        &alerts.action,
                        &alerts.score,
                        &alerts.category,
                        &alerts.amount,
                        &alerts.reasons,
                    ],
                )
                .await?;
            }
        }
        if !labels.seq.is_empty() {
            t.execute(
                &self.insert_labels,
                &[
                    &labels.seq,
                    &labels.transaction_id,
                    &labels.fraud,
                    &labels.previous,
                    &labels.source,
                    &labels.note,
                    &labels.labeled_at,
                ],
            )
            .await?;
        }
        t.commit().await?;
        Ok(seqs)
    }
}

/// The transactions of a batch, column by column (what `unnest` takes), with the entity and
/// alert rows each would add if it is not a duplicate.
#[derive(Default)]
struct TxColumns {
    seq: Vec<i64>,
    id: Vec<String>,
    ts: Vec<i64>,
    amount: Vec<f64>,
    action: Vec<&'static str>,
    score: Vec<f64>,
    alert: Vec<bool>,
    event: Vec<String>,
    decision: Vec<String>,
    entities: Vec<Vec<String>>,
    alert_rows: Vec<Option<PendingAlert>>,
}

/// An alert row waiting to learn whether its transaction was new.
struct PendingAlert {
    account: Option<String>,
    category: String,
    reasons: String,
}

#[derive(Default)]
struct EntityColumns {
    entity: Vec<String>,
    seq: Vec<i64>,
}

#[derive(Default)]
struct AlertColumns {
    id: Vec<i64>,
    transaction_id: Vec<String>,
    ts: Vec<i64>,
    account: Vec<Option<String>>,
    action: Vec<&'static str>,
    score: Vec<f64>,
    category: Vec<String>,
    amount: Vec<f64>,
    reasons: Vec<String>,
}

impl TxColumns {
    fn push(&mut self, seq: i64, rec: &super::TxRecord) -> Result<(), PostgresError> {
        let tx = &rec.tx;
        let d = &rec.decision.decision;
        let event = serde_json::to_string(tx).map_err(|e| PostgresError::Corrupt(e.to_string()))?;
        let decision = serde_json::to_string(&rec.decision)
            .map_err(|e| PostgresError::Corrupt(e.to_string()))?;
        self.seq.push(seq);
        self.id.push(tx.transaction_id.as_str().to_owned());
        self.ts.push(tx.timestamp.millis());
        self.amount.push(tx.amount);
        self.action.push(d.decision.as_str());
        self.score.push(d.score);
        self.alert.push(d.alert);
        self.event.push(event);
        self.decision.push(decision);
        self.entities.push(super::entity_keys(tx));
        // Every decision above approve is queued for analysts, escalations included; `alert`
        // (the ladder's count) is stored with the transaction. Same rule as the SQLite store.
        let alert_row = if d.decision > Action::Approve {
            Some(PendingAlert {
                account: d.account.clone(),
                category: d
                    .reasons
                    .first()
                    .map_or("score", |r| r.category.as_str())
                    .to_owned(),
                reasons: serde_json::to_string(&d.reasons)
                    .map_err(|e| PostgresError::Corrupt(e.to_string()))?,
            })
        } else {
            None
        };
        self.alert_rows.push(alert_row);
        Ok(())
    }

    /// The entity and alert rows of the transactions that were `inserted` (not duplicates).
    fn dependents(&mut self, inserted: &HashSet<i64>) -> (EntityColumns, AlertColumns) {
        let mut entities = EntityColumns::default();
        let mut alerts = AlertColumns::default();
        for i in 0..self.seq.len() {
            let seq = self.seq[i];
            if !inserted.contains(&seq) {
                // The host checks ids before scoring, so this means a duplicate got past it
                // (or another node stored it first): the first record stands, loudly.
                tracing::error!(
                    transaction_id = self.id[i].as_str(),
                    "duplicate transaction id reached the writer; the first record stands"
                );
                continue;
            }
            for entity in std::mem::take(&mut self.entities[i]) {
                entities.entity.push(entity);
                entities.seq.push(seq);
            }
            if let Some(a) = self.alert_rows[i].take() {
                alerts.id.push(seq);
                alerts.transaction_id.push(self.id[i].clone());
                alerts.ts.push(self.ts[i]);
                alerts.account.push(a.account);
                alerts.action.push(self.action[i]);
                alerts.score.push(self.score[i]);
                alerts.category.push(a.category);
                alerts.amount.push(self.amount[i]);
                alerts.reasons.push(a.reasons);
            }
        }
        (entities, alerts)
    }
}

/// The labels of a batch, column by column.
#[derive(Default)]
struct LabelColumns {
    seq: Vec<i64>,
    transaction_id: Vec<String>,
    fraud: Vec<bool>,
    previous: Vec<Option<bool>>,
    source: Vec<Option<String>>,
    note: Vec<Option<String>>,
    labeled_at: Vec<i64>,
}

impl LabelColumns {
    fn push(&mut self, seq: i64, l: &LabelRecord) {
        self.seq.push(seq);
        self.transaction_id.push(l.transaction_id.clone());
        self.fraud.push(l.fraud);
        self.previous.push(l.previous);
        self.source.push(l.source.clone());
        self.note.push(l.note.clone());
        self.labeled_at.push(l.labeled_at.millis());
    }
}

type Ack = oneshot::Sender<Result<i64, String>>;

/// Takes what queued up, writes it as one transaction, acknowledges each write after COMMIT
/// (or tells each why it failed), and repeats. A failed batch drops the connection: the next
/// batch reconnects, so the store recovers when the server comes back, and no write is ever
/// acknowledged that was not committed.
async fn writer_loop(
    connector: Connector,
    mut conn: Option<WriteConn>,
    mut rx: mpsc::Receiver<QueuedWrite>,
) {
    let mut batch: Vec<QueuedWrite> = Vec::with_capacity(MAX_BATCH);
    let mut closing: Option<Ack> = None;
    let mut closed = false;
    let mut last_seq = 0i64;
    while let Some(first) = rx.recv().await {
        match first {
            (WriteOp::Close, ack) => closing = Some(ack),
            op => batch.push(op),
        }
        while closing.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((WriteOp::Close, ack)) => closing = Some(ack),
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = if batch.is_empty() {
            Ok(Vec::new())
        } else if closed {
            Err(PostgresError::Closed)
        } else {
            write_batch(&connector, &mut conn, &batch).await
        };
        match result {
            Ok(seqs) => {
                for ((_, ack), seq) in batch.drain(..).zip(seqs) {
                    last_seq = seq;
                    let _ = ack.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "group commit failed");
                conn = None;
                let msg = e.to_string();
                for (_, ack) in batch.drain(..) {
                    let _ = ack.send(Err(msg.clone()));
                }
            }
        }
        if let Some(ack) = closing.take() {
            // Dropping the client ends the session; the server sees a clean terminate.
            conn = None;
            closed = true;
            let _ = ack.send(Ok(last_seq));
        }
    }
}

/// Writes one batch, reconnecting first if there is no live connection.
async fn write_batch(
    connector: &Connector,
    conn: &mut Option<WriteConn>,
    batch: &[QueuedWrite],
) -> Result<Vec<i64>, PostgresError> {
    let attempt = async {
        if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            *conn = None;
            *conn = Some(WriteConn::prepare(connector.connect().await?).await?);
        }
        match conn.as_mut() {
            Some(c) => c.write(batch).await,
            None => Err(PostgresError::Closed),
        }
    };
    // On timeout the future (and with it any open transaction) is dropped and the caller
    // drops the connection, so the server rolls back whatever had not committed.
    match tokio::time::timeout(WRITE_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(PostgresError::Timeout(WRITE_TIMEOUT)),
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_url, Connector};

    #[test]
    fn unparsable_urls_do_not_quote_the_password() {
        // An unquoted password with a space: the parser would name `secretpart` as an
        // unknown option.
        for url in [
            "host=db password=abc secretpart=x",
            "postgres://u:secretpart@host:notaport/db",
            "host=db password='secretpart",
        ] {
            let err = match Connector::parse(url, None) {
                Ok(_) => panic!("{url} parsed"),
                Err(e) => e,
            };
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("secretpart"), "leaked from {url}: {shown}");
        }
    }

    #[test]
    fn passwords_never_survive_redaction() {
        let cases = [
            (
                "postgres://ringfence:s3cret@db.internal:5432/records",
                "postgres://ringfence:***@db.internal:5432/records",
            ),
            (
                "postgresql://u:p%40ss:w@rd@host/db?sslmode=disable",
                "postgresql://u:***@host/db?sslmode=disable",
            ),
            (
                "postgres://u@host/db?password=s3cret&application_name=x",
                "postgres://u@host/db?password=***&application_name=x",
            ),
            (
                "host=db user=u password=s3cret dbname=records",
                "host=db user=u password=*** dbname=records",
            ),
            (
                "host=db password = 'se cr\\'et' dbname=records",
                "host=db password = *** dbname=records",
            ),
            ("postgres://u@host/db", "postgres://u@host/db"),
            ("postgres://host:5432/db", "postgres://host:5432/db"),
        ];
        for (url, want) in cases {
            let got = redact_url(url);
            assert_eq!(got, want, "redacting {url}");
            for secret in ["s3cret", "p%40ss", "w@rd", "se cr"] {
                assert!(!got.contains(secret), "{secret} leaked from {url}: {got}");
            }
        }
    }
}
