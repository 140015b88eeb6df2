//! Rate limits per API key: a token bucket per key that holds at most `burst` requests and
//! refills at `per_second`; a request finding it empty is answered 429 with `Retry-After` (the
//! seconds until a token is back) and is not run.
//!
//! A key's limit is set when it is created (`POST /v1/keys` with `rate_per_second` and
//! `burst`), else the node's default (`--key-rate`, `--key-burst`), else there is none. The
//! administrator's `--admin-key` and dashboard sessions are not limited.
//!
//! Per node: each node keeps its own buckets in memory, so behind a balancer spreading a
//! client over N nodes the client gets up to N times its rate. Why not a shared bucket in
//! Redis: it would add a round trip to every authenticated request, on the path whose whole
//! budget is a few milliseconds, for a limit whose purpose (stopping one key from swamping
//! the engine) per-node buckets already serve.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Largest accepted rate, requests per second.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Largest accepted burst.
pub const MAX_BURST: u64 = 1_000_000;

/// A key's limit: a sustained rate and the burst allowed above it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests that may come at once after a quiet spell (the bucket's size).
    pub burst: u64,
}

impl RateLimit {
    /// A limit from stored or configured values: `burst` defaults to the rate rounded up
    /// (one second's worth, at least 1). `Err` names what is out of range.
    pub fn new(per_second: f64, burst: Option<u64>) -> Result<RateLimit, String> {
        if !per_second.is_finite() || per_second <= 0.0 || per_second > MAX_RATE {
            return Err(format!(
                "must be a number of requests per second above 0 and at most {MAX_RATE}"
            ));
        }
        let burst = burst.unwrap_or_else(|| per_second.ceil().max(1.0) as u64);
        if !(1..=MAX_BURST).contains(&burst) {
            return Err(format!("burst must be within 1..={MAX_BURST}"));
        }
        Ok(RateLimit { per_second, burst })
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Most buckets kept; past it, full (idle) buckets are dropped, which loses nothing.
const MAX_BUCKETS: usize = 100_000;

/// The buckets of every limited key on this node, by key id.
#[derive(Debug, Default)]
pub struct KeyBuckets {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl KeyBuckets {
    /// Takes one token from `key`'s bucket, or says how long until one is back.
    pub fn take(&self, key: &str, limit: RateLimit) -> Result<(), Duration> {
        self.take_at(key, limit, Instant::now())
    }

    fn take_at(&self, key: &str, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        let burst = limit.burst as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, b| b.tokens < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * limit.per_second;
        // A lowered limit applies at once: the bucket never holds more than the current burst.
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / limit.per_second,
            ))
        }
    }

    /// Forgets a key's bucket (it was revoked).
    pub fn forget(&self, key: &str) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_refills() {
        let b = KeyBuckets::default();
        let limit = RateLimit::new(2.0, Some(3)).expect("valid");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take_at("k", limit, t0).is_ok());
        }
        let wait = b.take_at("k", limit, t0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.take_at("other", limit, t0).is_ok(), "keys are separate");
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.take_at("k", limit, t1).is_ok());
        assert!(b.take_at("k", limit, t1).is_err());
        // A long quiet spell refills to the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take_at("k", limit, t2).is_ok());
        }
        assert!(b.take_at("k", limit, t2).is_err());
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(RateLimit::new(2.5, None).map(|l| l.burst), Ok(3));
        assert_eq!(RateLimit::new(0.1, None).map(|l| l.burst), Ok(1));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e6] {
            assert!(RateLimit::new(bad, None).is_err(), "{bad}");
        }
        assert!(RateLimit::new(1.0, Some(0)).is_err());
        assert!(RateLimit::new(1.0, Some(MAX_BURST + 1)).is_err());
    }
}
