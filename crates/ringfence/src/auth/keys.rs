//! API keys: `rf_<id>_<secret>`, stored as an Argon2id hash and looked up by id, verified once
//! and then remembered in memory so that ingest requests never pay Argon2 per request.
//!
//! Why a cache keyed by the SHA-256 of the whole key: a lookup must cost microseconds (the
//! engine takes 10k+ requests a second over HTTP), and a table of digests is as good as the
//! keys themselves only to someone who already holds the key. Why re-check after
//! [`RECHECK`]: a key revoked through another node must stop working here too; each cached key
//! re-reads its revoked flag with one cheap indexed lookup (no Argon2) at most that often, so
//! revocation takes effect everywhere within about ten seconds. That re-check also records the
//! key's last use, at most once a minute.
//!
//! A wrong key costs an Argon2 verification only when its id exists; the same wrong key is
//! then refused from memory for a while, so a misconfigured client retrying in a loop does not
//! keep a hashing slot busy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::password::{HashError, Hasher};
use super::rate::RateLimit;
use super::store::AuthStore;
use super::{Principal, Role};
use crate::store::StoreError;

/// How long a verified key is trusted before its revoked flag is read again.
pub const RECHECK: Duration = Duration::from_secs(10);
/// How often a key's last use is written at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// How long a refused key is refused from memory.
const REFUSED_FOR: Duration = Duration::from_secs(10);
/// Most keys remembered (verified, or refused) at once.
const MAX_CACHED: usize = 10_000;
/// Random bytes of a key's id and of its secret.
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// An API key: its public id and its whole text (which is the secret).
#[derive(Clone)]
pub struct ApiKey {
    id: String,
    text: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey(rf_{}_<redacted>)", self.id)
    }
}

impl ApiKey {
    /// A new random key: a 16-hex-digit id and 32 random bytes, base64url.
    pub fn generate() -> Result<ApiKey, getrandom::Error> {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut id)?;
        getrandom::fill(&mut secret)?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        Ok(ApiKey {
            text: format!("rf_{id}_{secret}"),
            id,
        })
    }

    /// Reads a key in the `rf_<id>_<secret>` form; `None` for anything else.
    pub fn parse(text: &str) -> Option<ApiKey> {
        let (id, secret) = text.strip_prefix("rf_")?.split_once('_')?;
        let id_ok = id.len() == ID_BYTES * 2
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let secret_ok = (43..=128).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (id_ok && secret_ok).then(|| ApiKey {
            id: id.to_owned(),
            text: text.to_owned(),
        })
    }

    /// The public id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The whole key; show it once, to its creator.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

/// SHA-256 of a secret's text: what the in-memory tables are keyed by.
pub fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Why a key could not be checked (as opposed to being wrong).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The access tables could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing is busy or failed.
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// A verified key in memory.
struct Verified {
    id: String,
    role: Role,
    /// The key's own rate limit, as last read from the store.
    limit: Option<RateLimit>,
    checked: Instant,
    touched: Instant,
    /// Set by the one request that re-reads the key; the others keep using this entry.
    refreshing: AtomicBool,
}

impl Verified {
    fn principal(&self) -> Principal {
        Principal {
            name: format!("key:{}", self.id),
            role: self.role,
        }
    }
}

/// Verified and refused keys, by digest.
#[derive(Default)]
pub struct KeyCache {
    verified: RwLock<HashMap<[u8; 32], Arc<Verified>>>,
    refused: Mutex<HashMap<[u8; 32], Instant>>,
    /// One Argon2 verification per key at a time: a client opening 32 connections at once
    /// with a new key pays for one, and the others find it cached.
    inflight: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCache")
    }
}

/// Takes a key's entry out of the in-flight map when its verification ends or is dropped.
struct InflightEntry<'a> {
    cache: &'a KeyCache,
    d: [u8; 32],
}

impl Drop for InflightEntry<'_> {
    fn drop(&mut self) {
        self.cache
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.d);
    }
}

/// Clears a cached key's `refreshing` flag when its re-check ends or is dropped.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl KeyCache {
    /// Who `text` is, if it is a valid, unrevoked key; `Ok(None)` when it is not.
    pub async fn principal(
        &self,
        text: &str,
        store: &AuthStore,
        hasher: &Hasher,
    ) -> Result<Option<Principal>, CheckError> {
        let d = digest(text);
        if let Some(hit) = self.lookup(&d) {
            if hit.checked.elapsed() < RECHECK || hit.refreshing.swap(true, Ordering::AcqRel) {
                return Ok(Some(hit.principal()));
            }
            return self.recheck(d, &hit, store).await;
        }
        if self.is_refused(&d) {
            return Ok(None);
        }
        let Some(key) = ApiKey::parse(text) else {
            return Ok(None);
        };
        let gate = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(inflight.entry(d).or_default())
        };
        // Removed however this ends, also when the request is dropped mid-verification (a
        // client gone, a timeout): otherwise the map would keep the entry forever.
        let _entry = InflightEntry { cache: self, d };
        let _turn = gate.lock().await;
        self.verify(d, &key, store, hasher).await
    }

    fn lookup(&self, d: &[u8; 32]) -> Option<Arc<Verified>> {
        self.verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            .cloned()
    }

    fn is_refused(&self, d: &[u8; 32]) -> bool {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            .is_some_and(|at| at.elapsed() < REFUSED_FOR)
    }

    fn refuse(&self, d: [u8; 32]) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.len() >= MAX_CACHED {
            refused.retain(|_, at| at.elapsed() < REFUSED_FOR);
            if refused.len() >= MAX_CACHED {
                refused.clear();
            }
        }
        refused.insert(d, Instant::now());
    }

    fn remember(&self, d: [u8; 32], v: Verified) {
        let mut verified = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= MAX_CACHED && !verified.contains_key(&d) {
            // Bounded: drop what was not used for a while (its next use verifies again).
            verified.retain(|_, e| e.checked.elapsed() < RECHECK * 6);
            if verified.len() >= MAX_CACHED {
                verified.clear();
            }
        }
        verified.insert(d, Arc::new(v));
    }

    /// The first use of a key on this node: look it up by id, verify with Argon2.
    async fn verify(
        &self,
        d: [u8; 32],
        key: &ApiKey,
        store: &AuthStore,
        hasher: &Hasher,
    ) -> Result<Option<Principal>, CheckError> {
        // Another request may have verified it while this one waited its turn.
        if let Some(hit) = self.lookup(&d) {
            return Ok(Some(hit.principal()));
        }
        if self.is_refused(&d) {
            return Ok(None);
        }
        let row = match store.key(key.id()).await? {
            Some(row) if row.revoked_at.is_none() => row,
            _ => {
                self.refuse(d);
                return Ok(None);
            }
        };
        if !hasher
            .verify(key.expose().to_owned(), row.key_hash.clone())
            .await?
        {
            self.refuse(d);
            return Ok(None);
        }
        // Its first use here is its last use.
        let (role, limit) = match store.key_status(key.id(), Some(now_ms())).await? {
            Some((role, false, limit)) => (role, limit),
            _ => {
                self.refuse(d);
                return Ok(None);
            }
        };
        let now = Instant::now();
        let v = Verified {
            id: row.id,
            role,
            limit,
            checked: now,
            touched: now,
            refreshing: AtomicBool::new(false),
        };
        let principal = v.principal();
        self.remember(d, v);
        Ok(Some(principal))
    }

    /// The periodic re-read of a cached key's revoked flag (and its role).
    async fn recheck(
        &self,
        d: [u8; 32],
        hit: &Verified,
        store: &AuthStore,
    ) -> Result<Option<Principal>, CheckError> {
        // Cleared however this ends, also when the request is dropped while the store is read:
        // a flag left set would make every later request take the cached answer, and a key
        // revoked on another node would never be re-read here.
        let _refresh = ClearOnDrop(&hit.refreshing);
        let touch = hit.touched.elapsed() >= TOUCH_EVERY;
        match store.key_status(&hit.id, touch.then(now_ms)).await {
            Ok(Some((role, false, limit))) => {
                let v = Verified {
                    id: hit.id.clone(),
                    role,
                    limit,
                    checked: Instant::now(),
                    touched: if touch { Instant::now() } else { hit.touched },
                    refreshing: AtomicBool::new(false),
                };
                let principal = v.principal();
                self.remember(d, v);
                Ok(Some(principal))
            }
            Ok(_) => {
                self.forget_id(&hit.id);
                self.refuse(d);
                Ok(None)
            }
            Err(e) => {
                // The store is unreachable: a key verified here keeps working (ingest goes on
                // through a database outage); the next request tries the re-check again.
                tracing::warn!(error = %e, key = %hit.id, "cannot re-check an API key; trusting the verified key meanwhile");
                Ok(Some(hit.principal()))
            }
        }
    }

    /// The id and own rate limit of a key this cache verified (`None` for any other text).
    pub fn limit_of(&self, text: &str) -> Option<(String, Option<RateLimit>)> {
        self.lookup(&digest(text)).map(|v| (v.id.clone(), v.limit))
    }

    /// Forgets a key on this node at once (it was revoked here).
    pub fn forget_id(&self, id: &str) {
        self.verified
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, e| e.id != id);
    }
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> i64 {
    crate::host::now().millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_form_and_parse_back() {
        let k = ApiKey::generate().expect("random");
        let text = k.expose().to_owned();
        assert!(text.starts_with(&format!("rf_{}_", k.id())), "{text}");
        assert_eq!(k.id().len(), 16);
        assert!(text.len() >= 3 + 16 + 1 + 43, "{text}");
        let back = ApiKey::parse(&text).expect("parses");
        assert_eq!(back.id(), k.id());
        assert!(
            !format!("{k:?}").contains(&text[20..]),
            "debug hides the secret"
        );
        for bad in [
            "",
            "rf_",
            "rf_0123456789abcdef",
            "rf_0123456789abcdef_short",
            "rf_0123456789ABCDEF_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "xx_0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "rf_0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa a",
        ] {
            assert!(ApiKey::parse(bad).is_none(), "{bad}");
        }
    }
}
