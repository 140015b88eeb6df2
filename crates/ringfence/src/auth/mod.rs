//! Access: who is calling and what they may do.
//!
//! Every request passes [`layer`], which looks up what its route needs in [`policy`] (a route
//! missing there needs `admin`), works out the caller ([`Principal`]) from an API key or the
//! dashboard's session cookie, refuses with 401 (no or bad credentials) or 403 (a role too low,
//! or a signed-in change from another site's page), and puts the caller in the request's
//! extensions; routes that need to know who acted (cases, audit, keys) take it as an extractor.
//!
//! Roles: `ingest` sends transactions, `analyst` reads and works cases, `admin` changes rules,
//! models, keys and users (and may do everything the others may).
//!
//! # Layout
//! - [`policy`]: the table of what each route needs.
//! - [`password`]: Argon2id hashing, off the runtime, a few at a time.
//! - [`keys`]: API keys `rf_<id>_<secret>` and their in-memory cache.
//! - [`sessions`]: the `rf_session` cookie and its cache.
//! - [`throttle`]: slowing password guessing per user and address.
//! - [`rate`]: rate limits per API key (token buckets, per node).
//! - [`origin`]: the same-origin check for cookie-authenticated changes and WebSockets.
//! - [`store`]: users, keys and sessions in SQLite or PostgreSQL.
//! - [`http`]: sign-in, sign-out, `me`, and the admin routes for keys and users.

pub mod http;
pub mod keys;
pub mod origin;
pub mod password;
pub mod policy;
pub mod rate;
pub mod sessions;
pub mod store;
pub mod throttle;

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::config::{AccessSettings, Secret, Settings};
use crate::http::error::ApiError;
use crate::http::ApiContext;
use crate::store::{Records, StoreError};
use keys::{digest, ApiKey, CheckError, KeyCache};
use password::{HashError, Hasher};
use policy::Access;
use rate::{KeyBuckets, RateLimit};
use sessions::SessionCache;
use store::{AuthStore, KeyRow, UserRow};
use throttle::LoginThrottle;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sends transactions (tills, payment gateways).
    Ingest,
    /// Reads everything, works alerts and cases, labels transactions.
    Analyst,
    /// Rules, models, keys and users; everything else too.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    /// A role by name.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "ingest" => Some(Role::Ingest),
            "analyst" => Some(Role::Analyst),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether this role may do what `needed` may (roles are ordered).
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

/// The caller of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The user's name, `key:<id>` for an API key, or `admin-key` for `--admin-key`.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("no principal on an authenticated route".into()))
    }
}

/// The caller, and whether the session cookie said so (which makes the origin check apply).
struct Caller {
    principal: Principal,
    by_cookie: bool,
    /// A stored API key's id and its own rate limit (`None` for sessions and `--admin-key`).
    key: Option<(String, Option<RateLimit>)>,
}

/// The first administrator, created at a start with no users.
#[derive(Debug)]
pub struct OneTimeLogin {
    /// The user's name (`admin`).
    pub user: String,
    /// The password: generated (show it once), or the configured one.
    pub password: Secret,
    /// True when the password was generated here (false: it came from the configuration).
    pub generated: bool,
}

/// Name of the first administrator.
pub const FIRST_ADMIN: &str = "admin";

/// Access control of a node: the stores, the caches, the hashing slots.
pub struct Auth {
    store: AuthStore,
    hasher: Hasher,
    keys: KeyCache,
    sessions: SessionCache,
    throttle: LoginThrottle,
    /// Rate-limit buckets of API keys on this node.
    buckets: KeyBuckets,
    /// SHA-256 of `--admin-key`.
    admin_key: Option<[u8; 32]>,
    settings: AccessSettings,
    /// The origin (`scheme://host[:port]`) of `--public-url`, accepted for signed-in changes
    /// besides the request's own host (behind a proxy that rewrites `Host`).
    public_origin: Option<String>,
    /// Served over TLS, or `--public-url` is `https://`: cookies are Secure.
    public_https: bool,
    /// A hash to verify unknown users' passwords against, so that a sign-in with an unknown
    /// name takes as long as one with a wrong password.
    decoy: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Why access control could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The access tables could not be opened or written.
    #[error("access tables: {0}")]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// No randomness.
    #[error("random numbers: {0}")]
    Random(String),
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => ApiError::Overloaded,
            HashError::Failed(m) => ApiError::Internal(m),
        }
    }
}

/// A failed read or write of the access tables as an API error: PostgreSQL out of reach is a
/// 503 the caller may retry, anything else an internal error.
pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Postgres(cause) => {
            tracing::error!(%cause, "access tables unreachable");
            ApiError::StorageUnavailable
        }
        other => ApiError::Internal(other.to_string()),
    }
}

impl From<CheckError> for ApiError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Store(e) => store_error(e),
            CheckError::Hash(e) => e.into(),
        }
    }
}

/// Constant-time equality of two digests.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// Opens the access tables of `records` and, when no user exists, creates the first
    /// administrator (returned so the caller can show its password once).
    pub async fn start(
        settings: &Settings,
        records: &Records,
    ) -> Result<(Arc<Auth>, Option<OneTimeLogin>), AuthError> {
        let auth = Auth {
            store: AuthStore::open(records).await?,
            hasher: Hasher::for_this_machine(),
            keys: KeyCache::default(),
            sessions: SessionCache::default(),
            throttle: LoginThrottle::default(),
            buckets: KeyBuckets::default(),
            admin_key: settings
                .access
                .admin_key
                .as_ref()
                .map(|k| digest(k.expose())),
            settings: settings.access.clone(),
            public_origin: settings.public_url.as_deref().map(origin_of),
            // Served over TLS itself, or behind a proxy that people reach by https://.
            public_https: settings.tls.is_some()
                || settings
                    .public_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://")),
            decoy: tokio::sync::OnceCell::new(),
        };
        let first = auth.create_first_admin().await?;
        Ok((Arc::new(auth), first))
    }

    async fn create_first_admin(&self) -> Result<Option<OneTimeLogin>, AuthError> {
        if self.store.user_count().await? > 0 {
            return Ok(None);
        }
        let (password, generated) = match &self.settings.admin_password {
            Some(p) => (p.clone(), false),
            None => (
                Secret::new(sessions::new_token().map_err(|e| AuthError::Random(e.to_string()))?),
                true,
            ),
        };
        let hash = self.hasher.hash(password.expose().to_owned()).await?;
        let created = self
            .store
            .insert_user(UserRow {
                name: FIRST_ADMIN.into(),
                role: Role::Admin,
                password_hash: hash,
                created_by: None,
                created_at: keys::now_ms(),
            })
            .await?;
        // Several nodes starting at once on one PostgreSQL: only the one that created the user
        // shows its password.
        Ok(created.then(|| OneTimeLogin {
            user: FIRST_ADMIN.into(),
            password,
            generated,
        }))
    }

    /// The access tables.
    pub fn store(&self) -> &AuthStore {
        &self.store
    }

    /// Creates an API key with `role` named `name`; returns its stored row and the key
    /// (shown once).
    pub async fn create_key(
        &self,
        name: &str,
        role: Role,
        created_by: &str,
    ) -> Result<(KeyRow, ApiKey), ApiError> {
        self.create_limited_key(name, role, created_by, None).await
    }

    /// As [`Auth::create_key`], with the key's own rate limit (`None`: the node's default).
    pub async fn create_limited_key(
        &self,
        name: &str,
        role: Role,
        created_by: &str,
        limit: Option<RateLimit>,
    ) -> Result<(KeyRow, ApiKey), ApiError> {
        let key = ApiKey::generate().map_err(|e| ApiError::Internal(e.to_string()))?;
        let row = self
            .register_limited_key(&key, name, role, created_by, limit)
            .await?;
        Ok((row, key))
    }

    /// Stores a key made elsewhere (`demo --stores` gives each site the key its peer sends).
    pub async fn register_key(
        &self,
        key: &ApiKey,
        name: &str,
        role: Role,
        created_by: &str,
    ) -> Result<KeyRow, ApiError> {
        self.register_limited_key(key, name, role, created_by, None)
            .await
    }

    /// As [`Auth::register_key`], with the key's own rate limit.
    async fn register_limited_key(
        &self,
        key: &ApiKey,
        name: &str,
        role: Role,
        created_by: &str,
        limit: Option<RateLimit>,
    ) -> Result<KeyRow, ApiError> {
        let key_hash = self.hasher.hash(key.expose().to_owned()).await?;
        let row = KeyRow {
            id: key.id().to_owned(),
            name: name.to_owned(),
            role,
            key_hash,
            created_by: created_by.to_owned(),
            created_at: keys::now_ms(),
            revoked_at: None,
            last_used: None,
            limit,
        };
        self.store
            .insert_key(row.clone())
            .await
            .map_err(store_error)?;
        Ok(row)
    }

    /// Who sent `headers`, or why not.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if let Some(key) = presented_key(headers)? {
            if let Some(admin) = &self.admin_key {
                if same_digest(&digest(key), admin) {
                    return Ok(Caller {
                        principal: Principal {
                            name: "admin-key".into(),
                            role: Role::Admin,
                        },
                        by_cookie: false,
                        key: None,
                    });
                }
            }
            return match self.keys.principal(key, &self.store, &self.hasher).await? {
                Some(principal) => Ok(Caller {
                    principal,
                    by_cookie: false,
                    key: self.keys.limit_of(key),
                }),
                None => Err(ApiError::Unauthorized(
                    "the API key is not valid, or was revoked".into(),
                )),
            };
        }
        if let Some(token) = sessions::token_from(headers) {
            return match self
                .sessions
                .principal(token, &self.store, self.settings.session_idle)
                .await
                .map_err(store_error)?
            {
                Some(principal) => Ok(Caller {
                    principal,
                    by_cookie: true,
                    key: None,
                }),
                None => Err(ApiError::Unauthorized(
                    "your session has ended; sign in again".into(),
                )),
            };
        }
        Err(ApiError::Unauthorized(
            "sign in, or send an API key as `Authorization: Bearer <key>`".into(),
        ))
    }

    /// Whether the credentials in `headers` still let their holder do what needs `needed`:
    /// `Some(false)` when they were revoked, signed out, expired or lost the role; `None` when
    /// that cannot be told now (the store unreachable), which a caller keeps going on, as a
    /// verified key does through a database outage.
    pub async fn still_allowed(&self, headers: &HeaderMap, needed: Role) -> Option<bool> {
        match self.authenticate(headers).await {
            Ok(caller) => Some(caller.principal.role.allows(needed)),
            Err(ApiError::Unauthorized(_)) => Some(false),
            Err(_) => None,
        }
    }

    /// Whether cookies should be `Secure` for this request.
    fn secure(&self, headers: &HeaderMap) -> bool {
        self.public_https
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https"))
    }
}

/// `scheme://authority` of a URL (what a browser sends as `Origin`), without its path.
fn origin_of(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => url[..after_scheme + slash].to_owned(),
        None => url.to_owned(),
    }
}

/// The API key of a request: `Authorization: Bearer <key>` or `x-api-key: <key>`. Another
/// authorization scheme is refused rather than ignored.
fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the authorization header is not text".into()))?;
        let (scheme, key) = v.trim().split_once(' ').unwrap_or((v, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
            return Err(ApiError::Unauthorized(
                "send an API key as `Authorization: Bearer <key>`".into(),
            ));
        }
        return Ok(Some(key.trim()));
    }
    match headers.get("x-api-key") {
        Some(v) => v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(Some)
            .ok_or_else(|| ApiError::Unauthorized("the x-api-key header is empty".into())),
        None => Ok(None),
    }
}

/// Checks every request against [`policy`]: 401 without valid credentials, 403 for a role too
/// low or a cross-site change; otherwise the caller goes into the request's extensions.
pub async fn layer(State(cx): State<ApiContext>, mut req: Request, next: Next) -> Response {
    let access = match req.extensions().get::<MatchedPath>() {
        Some(path) => policy::required(req.method().as_str(), path.as_str()),
        // No route matched: the fallback can only say 404, but only to a caller.
        None => Access::Role(Role::Ingest),
    };
    let Access::Role(needed) = access else {
        return next.run(req).await;
    };
    let auth = &cx.auth;
    let caller = match auth.authenticate(req.headers()).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if caller.by_cookie
        && origin::needs_check(req.method(), req.headers())
        && !origin::is_same_origin(req.headers(), auth.public_origin.as_deref())
    {
        return ApiError::Forbidden {
            code: "cross_origin",
            field: "origin",
            message: "a signed-in change must come from this server's own pages".into(),
        }
        .into_response();
    }
    if !caller.principal.role.allows(needed) {
        return ApiError::Forbidden {
            code: "forbidden",
            field: "authorization",
            message: format!(
                "this needs the {} role; {} has {}",
                needed.as_str(),
                caller.principal.name,
                caller.principal.role.as_str()
            ),
        }
        .into_response();
    }
    if let Some((id, own)) = &caller.key {
        if let Some(limit) = own.or(auth.settings.key_limit) {
            if let Err(wait) = auth.buckets.take(id, limit) {
                return ApiError::RateLimited {
                    retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
                    limit,
                }
                .into_response();
            }
        }
    }
    req.extensions_mut().insert(caller.principal);
    next.run(req).await
}

/// The sign-in routes and the admin routes for keys and users.
pub fn routes() -> axum::Router<ApiContext> {
    http::routes()
}
