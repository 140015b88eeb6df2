//! Argon2id hashing of passwords and API keys (argon2 0.5: m = 19 MiB, t = 2, p = 1, the
//! OWASP baseline), off the async runtime and behind a small semaphore.
//!
//! Why the semaphore: one hash is tens of milliseconds of CPU and 19 MiB of memory. A flood of
//! logins (or of made-up API keys) must queue for a few hashing slots instead of taking every
//! blocking thread and every core from the engine; a caller that waits too long is told the
//! server is busy. Why `spawn_blocking`: a hash on a runtime worker would stall every request
//! that worker serves.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Memory cost in KiB (19 MiB).
const MEMORY_KIB: u32 = 19 * 1024;
/// Passes over the memory.
const TIME_COST: u32 = 2;
/// Lanes.
const LANES: u32 = 1;
/// Longest a caller waits for a hashing slot before being told the server is busy.
const QUEUE_WAIT: Duration = Duration::from_secs(10);

/// Why a hash could not be computed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every hashing slot stayed busy for [`QUEUE_WAIT`].
    #[error("too many sign-ins at once; retry shortly")]
    Busy,
    /// The hashing task failed (a bug, or the runtime is shutting down).
    #[error("hashing failed: {0}")]
    Failed(String),
}

/// Hashes and verifies secrets with Argon2id, a few at a time.
#[derive(Clone, Debug)]
pub struct Hasher {
    slots: Arc<Semaphore>,
}

impl Hasher {
    /// A hasher allowing `slots` hashes at once (at least one).
    pub fn new(slots: usize) -> Hasher {
        Hasher {
            slots: Arc::new(Semaphore::new(slots.max(1))),
        }
    }

    /// A hasher sized for this machine: half the cores (at least one), leaving the rest to
    /// deciding transactions.
    pub fn for_this_machine() -> Hasher {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Hasher::new(cores / 2)
    }

    /// The Argon2id PHC string of `secret` with a fresh random salt.
    pub async fn hash(&self, secret: String) -> Result<String, HashError> {
        self.run(move || hash_blocking(&secret)).await?
    }

    /// Whether `secret` matches the PHC string `phc` (false for a malformed `phc`).
    pub async fn verify(&self, secret: String, phc: String) -> Result<bool, HashError> {
        self.run(move || verify_blocking(&secret, &phc)).await
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(QUEUE_WAIT, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Failed("the hashing slots are closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))
    }
}

fn argon2() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(MEMORY_KIB, TIME_COST, LANES, None)
        .map_err(|e| HashError::Failed(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes on the current thread.
pub fn hash_blocking(secret: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| HashError::Failed(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Failed(e.to_string()))?;
    Ok(argon2()?
        .hash_password(secret.as_bytes(), &salt)
        .map_err(|e| HashError::Failed(e.to_string()))?
        .to_string())
}

/// Verifies on the current thread. The parameters come from `phc`, so hashes made with other
/// costs keep verifying after the costs change.
pub fn verify_blocking(secret: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    argon2().is_ok_and(|a| a.verify_password(secret.as_bytes(), &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify_only_the_secret() {
        let a = hash_blocking("correct horse battery").expect("hash");
        let b = hash_blocking("correct horse battery").expect("hash");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(!a.contains("correct horse"));
        assert!(verify_blocking("correct horse battery", &a));
        assert!(!verify_blocking("correct horse batterY", &a));
        assert!(!verify_blocking("correct horse battery", "not a hash"));
    }
}
