//! Dashboard sessions: a random token in the `rf_session` cookie, stored as its SHA-256, ended
//! by signing out, by deleting the user (or changing their password), or after
//! `--session-idle-hours` without use.
//!
//! The cookie is `HttpOnly` (no script can read it), `SameSite=Strict` (no other site's page
//! sends it) and `Secure` when the server is reached over HTTPS. Like API keys, a session found
//! in the store is remembered in memory and re-read at most every [`RECHECK`]: a session ended
//! on another node (or its user deleted there) stops working here within that time, and the
//! session's last use is written at most once a minute.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use base64::Engine as _;

use super::keys::{digest, now_ms};
use super::store::AuthStore;
use super::Principal;
use crate::store::StoreError;

/// The cookie's name.
pub const COOKIE: &str = "rf_session";
/// How long a session found in the store is trusted before it is read again.
pub const RECHECK: Duration = Duration::from_secs(10);
/// How often a session's last use is written at most.
const TOUCH_EVERY_MS: i64 = 60_000;
/// Most sessions remembered at once.
const MAX_CACHED: usize = 10_000;

/// A new session token: 32 random bytes, base64url.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored of a token: its SHA-256 in hex.
pub fn token_hash(token: &str) -> String {
    digest(token).iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Set-Cookie` value that signs a browser in.
pub fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that signs a browser out.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The session token in a request's cookies, if any.
pub fn token_from(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

struct Cached {
    user: String,
    principal: Principal,
    checked: Instant,
}

/// Sessions found in the store, by token hash.
#[derive(Default)]
pub struct SessionCache {
    entries: RwLock<HashMap<String, Cached>>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionCache")
    }
}

impl SessionCache {
    /// Who holds session `token`, if it is live; `idle` is how long it may go unused.
    pub async fn principal(
        &self,
        token: &str,
        store: &AuthStore,
        idle: Duration,
    ) -> Result<Option<Principal>, StoreError> {
        let hash = token_hash(token);
        if let Some(c) = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            .filter(|c| c.checked.elapsed() < RECHECK)
        {
            return Ok(Some(c.principal.clone()));
        }
        let now = now_ms();
        let Some(row) = store.session(&hash).await? else {
            self.forget(&hash);
            return Ok(None);
        };
        if now.saturating_sub(row.last_seen) > idle.as_millis() as i64 {
            store.delete_session(&hash).await?;
            self.forget(&hash);
            return Ok(None);
        }
        if now - row.last_seen >= TOUCH_EVERY_MS {
            store.touch_session(&hash, now).await?;
        }
        let principal = Principal {
            name: row.user.clone(),
            role: row.role,
        };
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED && !entries.contains_key(&hash) {
            entries.retain(|_, c| c.checked.elapsed() < RECHECK);
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
        }
        entries.insert(
            hash,
            Cached {
                user: row.user,
                principal: principal.clone(),
                checked: Instant::now(),
            },
        );
        Ok(Some(principal))
    }

    /// Forgets one session on this node.
    pub fn forget(&self, hash: &str) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
    }

    /// Forgets every session of `user` on this node (deleted, or a new password).
    pub fn forget_user(&self, user: &str) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, c| c.user != user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_cookie_is_found_among_others_and_its_attributes_are_strict() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; rf_session=tok-en_1; b=2"),
        );
        assert_eq!(token_from(&h), Some("tok-en_1"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("rf_session="));
        assert_eq!(token_from(&h), None);
        let c = set_cookie("t", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/"));
        assert!(!c.contains("Secure"));
        assert!(set_cookie("t", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        let t = new_token().expect("random");
        assert_eq!(t.len(), 43);
        assert_eq!(token_hash(&t).len(), 64);
        assert_ne!(token_hash(&t), t);
    }
}
