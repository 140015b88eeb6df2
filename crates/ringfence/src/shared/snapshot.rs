//! Snapshots of the shared state in Redis, so the log does not grow forever and a node can
//! start (or catch up after falling behind a trim) without replaying all history.
//!
//! A snapshot is the engine state of some node at a log position, the node's cursor (rules
//! and models in force, the latest transaction ids for deduplication) and that position, in
//! one hash next to the log (`<log key>:snapshot`). Saving is a script: it keeps the newer of
//! two snapshots, and trims the log up to the *previous* snapshot's position, so the log
//! always reaches back one snapshot further than the newest one — a node that is a little
//! behind keeps following entries instead of reloading a snapshot.
//!
//! One node at a time takes a snapshot: a lease key with a time limit elects it, so nodes do
//! not all serialise the same state at once.

use std::time::Duration;

use super::log::{LogError, LogId, SharedLog};

/// Keeps the newer snapshot and trims the log up to the one it replaces.
///
/// KEYS: log stream, snapshot hash. ARGV: position, engine state, cursor. Returns 1 when
/// saved, 0 when a snapshot at or after the position is already there.
const SAVE: &str = r#"
local function parse(id)
  local ms, seq = string.match(id, '(%d+)-(%d+)')
  return tonumber(ms), tonumber(seq)
end
local prev = redis.call('HGET', KEYS[2], 'position')
if prev then
  local pms, pseq = parse(prev)
  local nms, nseq = parse(ARGV[1])
  if pms > nms or (pms == nms and pseq >= nseq) then
    return 0
  end
end
redis.call('HSET', KEYS[2], 'position', ARGV[1], 'engine', ARGV[2], 'cursor', ARGV[3])
if prev then
  redis.call('XTRIM', KEYS[1], 'MINID', prev)
end
return 1
"#;

/// Deletes the lease only if this node still holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// The shared state at one log position.
pub struct Snapshot {
    /// The last log entry the state includes.
    pub position: LogId,
    /// The engine's entity state (`Engine::snapshot`).
    pub engine: Vec<u8>,
    /// The cursor's image (`LogCursor::image`).
    pub cursor: Vec<u8>,
}

impl SharedLog {
    /// A connection of its own: tens of megabytes on the shared multiplexed connection would
    /// queue every request's append behind them.
    async fn bulk_connection(&self) -> Result<redis::aio::MultiplexedConnection, LogError> {
        Ok(self.client.get_multiplexed_async_connection().await?)
    }

    fn snapshot_key(&self) -> String {
        format!("{}:snapshot", self.key)
    }

    fn lease_key(&self) -> String {
        format!("{}:snapshot:lease", self.key)
    }

    /// The latest snapshot, if any was saved.
    pub async fn load_snapshot(&self) -> Result<Option<Snapshot>, LogError> {
        let mut con = self.bulk_connection().await?;
        let (position, engine, cursor): (Option<String>, Option<Vec<u8>>, Option<Vec<u8>>) =
            redis::cmd("HMGET")
                .arg(self.snapshot_key())
                .arg("position")
                .arg("engine")
                .arg("cursor")
                .query_async(&mut con)
                .await?;
        match (position, engine, cursor) {
            (Some(position), Some(engine), Some(cursor)) => Ok(Some(Snapshot {
                position: position.parse()?,
                engine,
                cursor,
            })),
            (None, None, None) => Ok(None),
            _ => Err(LogError::Corrupt("the snapshot lacks a field".into())),
        }
    }

    /// Takes the snapshot lease for `ttl` if no node holds it.
    pub async fn try_lease(&self, node: u64, ttl: Duration) -> Result<bool, LogError> {
        let mut con = self.connection().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.lease_key())
            .arg(node)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut con)
            .await
            .inspect_err(|e| self.failed(e))?;
        Ok(set.is_some())
    }

    /// Gives the lease back (if this node still holds it).
    pub async fn release_lease(&self, node: u64) -> Result<(), LogError> {
        let mut con = self.connection().await?;
        redis::Script::new(RELEASE)
            .key(self.lease_key())
            .arg(node)
            .invoke_async::<i64>(&mut con)
            .await
            .inspect_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Saves `snapshot` unless a newer one is there, trimming the log up to the snapshot it
    /// replaces. True when saved.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<bool, LogError> {
        let mut con = self.bulk_connection().await?;
        let saved: i64 = redis::Script::new(SAVE)
            .key(&self.key)
            .key(self.snapshot_key())
            .arg(snapshot.position.to_string())
            .arg(&snapshot.engine[..])
            .arg(&snapshot.cursor[..])
            .invoke_async(&mut con)
            .await?;
        Ok(saved == 1)
    }
}
