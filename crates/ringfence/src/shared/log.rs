//! The shared log: a Redis stream of state changes, appended and read in one round trip.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use ringfence_core::event::Transaction;
use serde::{Deserialize, Serialize};

/// One state change, in the order every node applies it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LogEntry {
    /// A transaction to score and apply.
    Tx {
        /// The transaction (card numbers already tokenised at the edge).
        tx: Box<Transaction>,
        /// The node that answers it (0: none is waiting, e.g. an entry appended late).
        #[serde(default)]
        origin: u64,
    },
    /// A label on a transaction.
    Label {
        /// The labelled transaction.
        tx: Box<Transaction>,
        /// The verdict.
        fraud: bool,
        /// The verdict it replaces.
        previous: Option<bool>,
    },
    /// The rules every node scores with from here on: the rules file's text.
    Rules {
        /// TOML source, checked by the node that appended it.
        source: String,
    },
    /// The models every node scores with from here on: the model files' text (either
    /// format), `None` for no model.
    Models {
        /// The champion, whose probability joins the score.
        champion: Option<String>,
        /// The challenger, scored in shadow.
        challenger: Option<String>,
    },
}

/// A position in the log: a Redis stream id (`<ms>-<seq>`), ordered as Redis orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LogId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl LogId {
    /// Before every entry.
    pub const START: LogId = LogId { ms: 0, seq: 0 };
}

impl PartialOrd for LogId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LogId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ms, self.seq).cmp(&(other.ms, other.seq))
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for LogId {
    type Err = LogError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s
            .split_once('-')
            .ok_or_else(|| LogError::Corrupt(format!("log id {s:?}")))?;
        let parse = |p: &str| {
            p.parse::<u64>()
                .map_err(|_| LogError::Corrupt(format!("log id {s:?}")))
        };
        Ok(LogId {
            ms: parse(ms)?,
            seq: parse(seq)?,
        })
    }
}

/// Why the log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Redis failed or is unreachable (the category only: never the URL).
    #[error("redis: {0}")]
    Redis(String),
    /// The node's position is older than the log's start: entries it never applied were
    /// trimmed, so its state can no longer follow.
    #[error("the log was trimmed past this node's position {0}")]
    Behind(LogId),
    /// An entry could not be decoded.
    #[error("corrupt log entry: {0}")]
    Corrupt(String),
}

impl From<redis::RedisError> for LogError {
    fn from(e: redis::RedisError) -> Self {
        // The category and the server's error code (e.g. NOPERM) only: never the URL, nor the
        // server's words, which can quote a user name.
        LogError::Redis(match e.code() {
            Some(code) => format!("{} ({code})", e.category()),
            None => e.category().to_owned(),
        })
    }
}

/// The head of every script that reads the log after a node's position (ARGV[1]): refuses
/// with `BEHIND` when entries after that position were trimmed (the log then starts after
/// it), since the node would silently miss them. Entries up to the position may be trimmed.
macro_rules! behind_check {
    () => {
        r#"
local after = ARGV[1]
if after ~= '0-0' then
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if first[1] then
    local fms, fseq = string.match(first[1][1], '(%d+)-(%d+)')
    local ams, aseq = string.match(after, '(%d+)-(%d+)')
    fms, fseq, ams, aseq = tonumber(fms), tonumber(fseq), tonumber(ams), tonumber(aseq)
    if fms > ams or (fms == ams and fseq > aseq) then
      return redis.error_reply('BEHIND the log starts after ' .. after)
    end
  end
end
"#
    };
}

/// Appends entries (ARGV[2..]) after the position check and returns every entry after that
/// position up to the last appended, in log order. Runs atomically in Redis: no other append
/// can fall between the appends and the read.
const APPEND_AND_READ: &str = concat!(
    behind_check!(),
    r#"
local last = after
for i = 2, #ARGV do
  last = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
end
if last == after then
  return {}
end
return redis.call('XRANGE', KEYS[1], '(' .. after, last)
"#
);

/// Up to ARGV[2] entries after the position, with the same check.
const READ_AFTER: &str = concat!(
    behind_check!(),
    r#"
return redis.call('XRANGE', KEYS[1], '(' .. after, '+', 'COUNT', ARGV[2])
"#
);

/// The log in one Redis stream.
#[derive(Clone)]
pub struct SharedLog {
    pub(super) client: redis::Client,
    /// The connection, reopened after a failure (a multiplexed connection does not recover
    /// by itself once the server went away).
    con: Arc<Mutex<Option<MultiplexedConnection>>>,
    pub(super) key: String,
    script: redis::Script,
    read_script: redis::Script,
}

/// Entries as read from the log.
pub type Entries = Vec<(LogId, LogEntry)>;

impl SharedLog {
    /// The log at `key` on `client`'s server; connects on first use.
    pub fn new(client: redis::Client, key: impl Into<String>) -> SharedLog {
        SharedLog {
            client,
            con: Arc::new(Mutex::new(None)),
            key: key.into(),
            script: redis::Script::new(APPEND_AND_READ),
            read_script: redis::Script::new(READ_AFTER),
        }
    }

    pub(super) async fn connection(&self) -> Result<MultiplexedConnection, LogError> {
        if let Some(c) = self.con.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(c);
        }
        let c = self.client.get_multiplexed_async_connection().await?;
        *self.con.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection after an IO-level failure, so the next call reconnects.
    pub(super) fn failed(&self, e: &redis::RedisError) {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            *self.con.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Runs a script that reads the log after `after` (with its `BEHIND` check) and decodes
    /// the entries it returns.
    async fn run(
        &self,
        invocation: redis::ScriptInvocation<'_>,
        after: LogId,
    ) -> Result<Entries, LogError> {
        let mut con = self.connection().await?;
        let reply: Vec<(String, Vec<(String, String)>)> =
            match invocation.invoke_async(&mut con).await {
                Ok(r) => r,
                Err(e) if e.code() == Some("BEHIND") => return Err(LogError::Behind(after)),
                Err(e) => {
                    self.failed(&e);
                    return Err(e.into());
                }
            };
        decode(reply)
    }

    /// Appends `entries` and returns every entry after `after` up to the last appended, in
    /// one round trip (the script is sent by hash, and loaded once when Redis lacks it).
    pub async fn append(&self, after: LogId, entries: &[LogEntry]) -> Result<Entries, LogError> {
        let mut invocation = self.script.key(&self.key);
        invocation.arg(after.to_string());
        for e in entries {
            let json = serde_json::to_string(e).map_err(|e| LogError::Corrupt(e.to_string()))?;
            invocation.arg(json);
        }
        self.run(invocation, after).await
    }

    /// Up to `count` entries after `after` (catching up without appending); `Behind` when
    /// entries after `after` were trimmed.
    pub async fn read(&self, after: LogId, count: usize) -> Result<Entries, LogError> {
        let mut invocation = self.read_script.key(&self.key);
        invocation.arg(after.to_string()).arg(count);
        self.run(invocation, after).await
    }
}

fn decode(reply: Vec<(String, Vec<(String, String)>)>) -> Result<Entries, LogError> {
    reply
        .into_iter()
        .map(|(id, fields)| {
            let id: LogId = id.parse()?;
            let json = fields
                .into_iter()
                .find(|(k, _)| k == "e")
                .map(|(_, v)| v)
                .ok_or_else(|| LogError::Corrupt(format!("entry {id} has no payload")))?;
            let entry: LogEntry = serde_json::from_str(&json)
                .map_err(|e| LogError::Corrupt(format!("entry {id}: {e}")))?;
            Ok((id, entry))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ids_order_as_redis_does() {
        let a: LogId = "1700000000000-0".parse().expect("id");
        let b: LogId = "1700000000000-1".parse().expect("id");
        let c: LogId = "1700000000001-0".parse().expect("id");
        assert!(LogId::START < a && a < b && b < c);
        assert_eq!(c.to_string(), "1700000000001-0");
        assert!("17-x".parse::<LogId>().is_err());
        assert!("17".parse::<LogId>().is_err());
    }
}
