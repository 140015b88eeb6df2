//! Where users, API keys and sessions are kept: three tables beside the records, in the node's
//! own SQLite or, in production mode, in PostgreSQL so that every node accepts the same keys,
//! users and sessions (a key created through node A works on node B).
//!
//! Only hashes are stored: passwords and API keys as Argon2id PHC strings, session tokens as
//! the SHA-256 of the token. Nothing here can be replayed from a copy of the database.
//!
//! Why a connection of its own and not the records' writer queue: access changes are rare and
//! small (a login, a new key), they must not wait behind a group commit of ten thousand
//! transactions, and a key check must never queue behind ingest. On SQLite one mutex-guarded
//! connection on a blocking thread is plenty (WAL lets it share the file with the records'
//! writer); on PostgreSQL the store's pooled connections, one statement at a time (a change
//! that must be atomic is one statement, a data-modifying `WITH`).
//!
//! Why the tables are created here with `IF NOT EXISTS` and not as a records migration step:
//! they belong to access control, which may be switched to another store later, and nodes of
//! different builds can then still share the database (an advisory lock orders nodes that
//! start at once).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::rate::RateLimit;
use super::Role;
use crate::store::postgres::{PostgresError, PostgresStore, Session};
use crate::store::{Records, StoreError};

/// The three tables (the same text works on SQLite and PostgreSQL).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS auth_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    last_used BIGINT,
    rate_per_second DOUBLE PRECISION,
    burst BIGINT
);
CREATE TABLE IF NOT EXISTS auth_sessions (
    token_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_sessions_user ON auth_sessions (user_name);
";

/// Key of the advisory lock that orders nodes creating the tables at once.
const SCHEMA_LOCK: i64 = 0x7266_6175_7468; // "rfauth"

/// Longest a PostgreSQL statement may take before the caller gets an error.
const PG_TIMEOUT: Duration = Duration::from_secs(10);

// Statements shared by both backends. Parameters are `$n` and appear in increasing order:
// SQLite reads `$1` as a named parameter and numbers parameters by first appearance.
const USER_COUNT: &str = "SELECT COUNT(*) FROM auth_users";
const INSERT_USER: &str =
    "INSERT INTO auth_users (name, role, password_hash, created_by, created_at)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING";
const USER: &str =
    "SELECT name, role, password_hash, created_by, created_at FROM auth_users WHERE name = $1";
const USERS: &str =
    "SELECT name, role, password_hash, created_by, created_at FROM auth_users ORDER BY name";
const DELETE_USER_SESSIONS: &str = "DELETE FROM auth_sessions WHERE user_name = $1";
const DELETE_USER: &str = "DELETE FROM auth_users WHERE name = $1";
const SET_PASSWORD: &str = "UPDATE auth_users SET password_hash = $1 WHERE name = $2";
// PostgreSQL: one statement each (the connection is shared by concurrent callers, so a
// BEGIN ... COMMIT on it could take in their statements); SQLite runs the two in a transaction.
const PG_DELETE_USER: &str = "WITH ended AS (DELETE FROM auth_sessions WHERE user_name = $1)
     DELETE FROM auth_users WHERE name = $1";
const PG_SET_PASSWORD: &str = "WITH ended AS (DELETE FROM auth_sessions WHERE user_name = $2)
     UPDATE auth_users SET password_hash = $1 WHERE name = $2";
const INSERT_KEY: &str = "INSERT INTO auth_keys (id, name, role, key_hash, created_by, created_at,
     rate_per_second, burst) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const KEY: &str = "SELECT id, name, role, key_hash, created_by, created_at, revoked_at, last_used,
     rate_per_second, burst FROM auth_keys WHERE id = $1";
const KEYS: &str = "SELECT id, name, role, key_hash, created_by, created_at, revoked_at, last_used,
     rate_per_second, burst FROM auth_keys ORDER BY created_at, id";
const REVOKE_KEY: &str = "UPDATE auth_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2";
const TOUCH_KEY: &str = "UPDATE auth_keys SET last_used = $1 WHERE id = $2";
const KEY_STATUS: &str =
    "SELECT role, revoked_at, rate_per_second, burst FROM auth_keys WHERE id = $1";
/// Columns added after the first release: (column, SQL type). Added to older tables at open,
/// with no value (no limit of the key's own).
const ADDED_KEY_COLUMNS: [(&str, &str); 2] =
    [("rate_per_second", "DOUBLE PRECISION"), ("burst", "BIGINT")];
const INSERT_SESSION: &str =
    "INSERT INTO auth_sessions (token_hash, user_name, created_at, last_seen) VALUES ($1, $2, $3, $3)";
const SESSION: &str = "SELECT s.user_name, u.role, s.last_seen
     FROM auth_sessions s JOIN auth_users u ON u.name = s.user_name WHERE s.token_hash = $1";
const TOUCH_SESSION: &str = "UPDATE auth_sessions SET last_seen = $1 WHERE token_hash = $2";
const DELETE_SESSION: &str = "DELETE FROM auth_sessions WHERE token_hash = $1";
const PURGE_SESSIONS: &str = "DELETE FROM auth_sessions WHERE last_seen < $1";

/// A stored user.
#[derive(Clone, Debug)]
pub struct UserRow {
    /// The sign-in name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// Argon2id PHC string of the password.
    pub password_hash: String,
    /// Who created the user (`None` for the first administrator).
    pub created_by: Option<String>,
    /// When, in milliseconds since the epoch.
    pub created_at: i64,
}

/// A stored API key.
#[derive(Clone, Debug)]
pub struct KeyRow {
    /// The key's public id (the part after `rf_`).
    pub id: String,
    /// What it is for, as its creator named it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Argon2id PHC string of the whole key.
    pub key_hash: String,
    /// Who created it.
    pub created_by: String,
    /// When, in milliseconds since the epoch.
    pub created_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// When it was last used (coarse: written at most once a minute).
    pub last_used: Option<i64>,
    /// Its own rate limit (`None`: the node's default, if any).
    pub limit: Option<RateLimit>,
}

/// A live session as its lookup finds it: the user (with their current role) and when the
/// session was last used.
#[derive(Clone, Debug)]
pub struct SessionRow {
    /// The user's name.
    pub user: String,
    /// The user's role now.
    pub role: Role,
    /// Last use, in milliseconds since the epoch (coarse).
    pub last_seen: i64,
}

/// The access tables of a node.
#[derive(Clone)]
pub enum AuthStore {
    /// The node's own SQLite file.
    Sqlite(Arc<Mutex<Connection>>),
    /// PostgreSQL, shared by every node.
    Postgres(Arc<PgAuth>),
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthStore::Sqlite(_) => "AuthStore::Sqlite",
            AuthStore::Postgres(_) => "AuthStore::Postgres",
        })
    }
}

/// PostgreSQL backend: statements on the store's pooled, pipelined connections.
pub struct PgAuth {
    store: PostgresStore,
}

impl PgAuth {
    async fn client(&self) -> Result<Session, StoreError> {
        Ok(self.store.session().await?)
    }
}

/// Runs a PostgreSQL call with [`PG_TIMEOUT`].
async fn pg<T>(
    fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(PG_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| StoreError::from(PostgresError::from(e))),
        Err(_) => Err(StoreError::from(PostgresError::Timeout(PG_TIMEOUT))),
    }
}

fn role_of(text: &str) -> Result<Role, StoreError> {
    Role::parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown role `{text}`")))
}

fn user_of_sqlite(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, String, Option<String>, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn user_row(
    (name, role, password_hash, created_by, created_at): (
        String,
        String,
        String,
        Option<String>,
        i64,
    ),
) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        name,
        role: role_of(&role)?,
        password_hash,
        created_by,
        created_at,
    })
}

type KeyTuple = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Option<i64>,
);

fn key_of_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyTuple> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

fn key_of_pg(r: &tokio_postgres::Row) -> Result<KeyTuple, tokio_postgres::Error> {
    Ok((
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
        r.try_get(6)?,
        r.try_get(7)?,
        r.try_get(8)?,
        r.try_get(9)?,
    ))
}

fn key_row(
    (id, name, role, key_hash, created_by, created_at, revoked_at, last_used, rate, burst): KeyTuple,
) -> Result<KeyRow, StoreError> {
    let (role, _, limit) = key_status((role, revoked_at, rate, burst))?;
    Ok(KeyRow {
        id,
        name,
        role,
        limit,
        key_hash,
        created_by,
        created_at,
        revoked_at,
        last_used,
    })
}

/// What a key's re-check reads: its role, whether it is revoked, its own rate limit.
pub type KeyStatus = (Role, bool, Option<RateLimit>);

fn key_status(
    (role, revoked, rate, burst): (String, Option<i64>, Option<f64>, Option<i64>),
) -> Result<KeyStatus, StoreError> {
    // A stored limit out of range (edited by hand) is refused loudly, not ignored.
    let limit = match rate {
        None => None,
        Some(rate) => Some(
            RateLimit::new(rate, burst.map(|b| b.max(0) as u64))
                .map_err(|e| StoreError::Corrupt(format!("a key's rate limit {e}")))?,
        ),
    };
    Ok((role_of(&role)?, revoked.is_some(), limit))
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::from(PostgresError::from(e))
}

impl AuthStore {
    /// Opens the access tables of `records`' store, creating them when missing.
    pub async fn open(records: &Records) -> Result<AuthStore, StoreError> {
        match records {
            Records::Sqlite(local) => {
                let path = local.path().to_owned();
                let conn =
                    tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
                        let conn = Connection::open(path)?;
                        conn.busy_timeout(Duration::from_secs(5))?;
                        conn.execute_batch(SCHEMA)?;
                        for (column, kind) in ADDED_KEY_COLUMNS {
                            let present = conn
                                .prepare(
                                    "SELECT 1 FROM pragma_table_info('auth_keys') WHERE name = ?1",
                                )?
                                .exists([column])?;
                            if !present {
                                conn.execute_batch(&format!(
                                    "ALTER TABLE auth_keys ADD COLUMN {column} {kind}"
                                ))?;
                            }
                        }
                        Ok(conn)
                    })
                    .await
                    .map_err(|_| StoreError::Closed)??;
                Ok(AuthStore::Sqlite(Arc::new(Mutex::new(conn))))
            }
            Records::Postgres { shared, .. } => {
                let auth = PgAuth {
                    store: shared.clone(),
                };
                let client = auth.client().await?;
                let added: String = ADDED_KEY_COLUMNS
                    .iter()
                    .map(|(column, kind)| {
                        format!("ALTER TABLE auth_keys ADD COLUMN IF NOT EXISTS {column} {kind};")
                    })
                    .collect();
                pg(client.batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA} {added} COMMIT;"
                )))
                .await?;
                Ok(AuthStore::Postgres(Arc::new(auth)))
            }
        }
    }

    /// Runs `f` on the SQLite connection on a blocking thread.
    async fn sqlite<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(conn);
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// How many users exist.
    pub async fn user_count(&self) -> Result<u64, StoreError> {
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, |c| {
                    Ok(c.query_row(USER_COUNT, [], |r| r.get::<_, i64>(0))? as u64)
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                let row = pg(c.query_one(USER_COUNT, &[])).await?;
                Ok(row.try_get::<_, i64>(0).map_err(pg_err)? as u64)
            }
        }
    }

    /// Adds a user; false when the name is taken.
    pub async fn insert_user(&self, u: UserRow) -> Result<bool, StoreError> {
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    Ok(c.execute(
                        INSERT_USER,
                        params![
                            u.name,
                            u.role.as_str(),
                            u.password_hash,
                            u.created_by,
                            u.created_at
                        ],
                    )? == 1)
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                let n = pg(c.execute(
                    INSERT_USER,
                    &[
                        &u.name,
                        &u.role.as_str(),
                        &u.password_hash,
                        &u.created_by,
                        &u.created_at,
                    ],
                ))
                .await?;
                Ok(n == 1)
            }
        }
    }

    /// One user.
    pub async fn user(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        let name = name.to_owned();
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    c.query_row(USER, [&name], user_of_sqlite)
                        .optional()?
                        .map(user_row)
                        .transpose()
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                let Some(r) = pg(c.query_opt(USER, &[&name])).await? else {
                    return Ok(None);
                };
                let t = (|| -> Result<_, tokio_postgres::Error> {
                    Ok((
                        r.try_get(0)?,
                        r.try_get(1)?,
                        r.try_get(2)?,
                        r.try_get(3)?,
                        r.try_get(4)?,
                    ))
                })()
                .map_err(pg_err)?;
                user_row(t).map(Some)
            }
        }
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, |c| {
                    let mut stmt = c.prepare(USERS)?;
                    let rows = stmt.query_map([], user_of_sqlite)?;
                    rows.map(|r| user_row(r?)).collect()
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                pg(c.query(USERS, &[]))
                    .await?
                    .iter()
                    .map(|r| {
                        let t = (|| -> Result<_, tokio_postgres::Error> {
                            Ok((
                                r.try_get(0)?,
                                r.try_get(1)?,
                                r.try_get(2)?,
                                r.try_get(3)?,
                                r.try_get(4)?,
                            ))
                        })()
                        .map_err(pg_err)?;
                        user_row(t)
                    })
                    .collect()
            }
        }
    }

    /// Deletes a user and ends their sessions, in one transaction; false when unknown.
    pub async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    let t = c.transaction()?;
                    t.execute(DELETE_USER_SESSIONS, [&name])?;
                    let n = t.execute(DELETE_USER, [&name])?;
                    t.commit()?;
                    Ok(n == 1)
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                Ok(pg(c.execute(PG_DELETE_USER, &[&name])).await? == 1)
            }
        }
    }

    /// Sets a user's password hash and ends their sessions; false when unknown.
    pub async fn set_password(&self, name: &str, hash: String) -> Result<bool, StoreError> {
        let name = name.to_owned();
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    let t = c.transaction()?;
                    let n = t.execute(SET_PASSWORD, params![hash, name])?;
                    t.execute(DELETE_USER_SESSIONS, [&name])?;
                    t.commit()?;
                    Ok(n == 1)
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                Ok(pg(c.execute(PG_SET_PASSWORD, &[&hash, &name])).await? == 1)
            }
        }
    }

    /// Stores a new key.
    pub async fn insert_key(&self, k: KeyRow) -> Result<(), StoreError> {
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    c.execute(
                        INSERT_KEY,
                        params![
                            k.id,
                            k.name,
                            k.role.as_str(),
                            k.key_hash,
                            k.created_by,
                            k.created_at,
                            k.limit.map(|l| l.per_second),
                            k.limit.map(|l| l.burst as i64),
                        ],
                    )?;
                    Ok(())
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                let rate = k.limit.map(|l| l.per_second);
                let burst = k.limit.map(|l| l.burst as i64);
                pg(c.execute(
                    INSERT_KEY,
                    &[
                        &k.id,
                        &k.name,
                        &k.role.as_str(),
                        &k.key_hash,
                        &k.created_by,
                        &k.created_at,
                        &rate,
                        &burst,
                    ],
                ))
                .await?;
                Ok(())
            }
        }
    }

    /// One key by id.
    pub async fn key(&self, id: &str) -> Result<Option<KeyRow>, StoreError> {
        let id = id.to_owned();
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    c.query_row(KEY, [&id], key_of_sqlite)
                        .optional()?
                        .map(key_row)
                        .transpose()
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                match pg(c.query_opt(KEY, &[&id])).await? {
                    Some(r) => key_row(key_of_pg(&r).map_err(pg_err)?).map(Some),
                    None => Ok(None),
                }
            }
        }
    }

    /// Every key, oldest first.
    pub async fn keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, |c| {
                    let mut stmt = c.prepare(KEYS)?;
                    let rows = stmt.query_map([], key_of_sqlite)?;
                    rows.map(|r| key_row(r?)).collect()
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                pg(c.query(KEYS, &[]))
                    .await?
                    .iter()
                    .map(|r| key_row(key_of_pg(r).map_err(pg_err)?))
                    .collect()
            }
        }
    }

    /// Marks a key revoked at `now` (the first revocation's time stays); false when unknown.
    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let id = id.to_owned();
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(
                    c,
                    move |c| Ok(c.execute(REVOKE_KEY, params![now, id])? == 1),
                )
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                Ok(pg(c.execute(REVOKE_KEY, &[&now, &id])).await? == 1)
            }
        }
    }

    /// The cheap re-check of a cached key: its role, whether it is revoked, and its own rate
    /// limit (`None` when it no longer exists); with `touch`, records that time as its last
    /// use first.
    pub async fn key_status(
        &self,
        id: &str,
        touch: Option<i64>,
    ) -> Result<Option<KeyStatus>, StoreError> {
        let id = id.to_owned();
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    if let Some(at) = touch {
                        c.execute(TOUCH_KEY, params![at, id])?;
                    }
                    c.query_row(KEY_STATUS, [&id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?
                    .map(key_status)
                    .transpose()
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                if let Some(at) = touch {
                    pg(c.execute(TOUCH_KEY, &[&at, &id])).await?;
                }
                match pg(c.query_opt(KEY_STATUS, &[&id])).await? {
                    Some(r) => key_status((
                        r.try_get(0).map_err(pg_err)?,
                        r.try_get(1).map_err(pg_err)?,
                        r.try_get(2).map_err(pg_err)?,
                        r.try_get(3).map_err(pg_err)?,
                    ))
                    .map(Some),
                    None => Ok(None),
                }
            }
        }
    }

    /// Stores a new session (by its token's hash).
    pub async fn insert_session(
        &self,
        token_hash: String,
        user: String,
        now: i64,
    ) -> Result<(), StoreError> {
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    c.execute(INSERT_SESSION, params![token_hash, user, now])?;
                    Ok(())
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                pg(c.execute(INSERT_SESSION, &[&token_hash, &user, &now])).await?;
                Ok(())
            }
        }
    }

    /// A session with its user's current role; `None` when unknown (or its user is gone).
    pub async fn session(&self, token_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        let token_hash = token_hash.to_owned();
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    c.query_row(SESSION, [&token_hash], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .optional()?
                    .map(|(user, role, last_seen)| {
                        Ok(SessionRow {
                            user,
                            role: role_of(&role)?,
                            last_seen,
                        })
                    })
                    .transpose()
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                match pg(c.query_opt(SESSION, &[&token_hash])).await? {
                    Some(r) => {
                        let role: String = r.try_get(1).map_err(pg_err)?;
                        Ok(Some(SessionRow {
                            user: r.try_get(0).map_err(pg_err)?,
                            role: role_of(&role)?,
                            last_seen: r.try_get(2).map_err(pg_err)?,
                        }))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    /// Records a session's use at `now`.
    pub async fn touch_session(&self, token_hash: &str, now: i64) -> Result<(), StoreError> {
        let token_hash = token_hash.to_owned();
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    c.execute(TOUCH_SESSION, params![now, token_hash])?;
                    Ok(())
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                pg(c.execute(TOUCH_SESSION, &[&now, &token_hash])).await?;
                Ok(())
            }
        }
    }

    /// Ends one session.
    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let token_hash = token_hash.to_owned();
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    c.execute(DELETE_SESSION, [&token_hash])?;
                    Ok(())
                })
                .await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                pg(c.execute(DELETE_SESSION, &[&token_hash])).await?;
                Ok(())
            }
        }
    }

    /// Deletes sessions unused since `before`; returns how many.
    pub async fn purge_sessions(&self, before: i64) -> Result<u64, StoreError> {
        match self {
            AuthStore::Sqlite(c) => {
                Self::sqlite(c, move |c| Ok(c.execute(PURGE_SESSIONS, [before])? as u64)).await
            }
            AuthStore::Postgres(p) => {
                let c = p.client().await?;
                pg(c.execute(PURGE_SESSIONS, &[&before])).await
            }
        }
    }
}
