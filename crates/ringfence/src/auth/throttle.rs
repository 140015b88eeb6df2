//! Slowing password guessing: after [`FREE_FAILURES`] wrong passwords for one user from one
//! address, that pair must wait before its next try (5 s, then doubling, at most 15 minutes),
//! and a try during the wait is answered 429 with `Retry-After` without checking the password
//! (so it costs no Argon2 either). A right password clears the pair's count.
//!
//! Per user and address, not per user alone: someone guessing at an analyst's password from
//! elsewhere must not lock the analyst out. Kept in the node's memory: with several nodes
//! behind a balancer a guesser gets at most that many times the rate, still a few tries a
//! minute.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords allowed before waits begin.
pub const FREE_FAILURES: u32 = 5;
/// The first wait; each further failure doubles it.
const FIRST_WAIT: Duration = Duration::from_secs(5);
/// The longest wait.
const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
/// A pair with no failure for this long starts again from zero.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Most pairs tracked at once.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
struct Failures {
    count: u32,
    last: Instant,
    wait_until: Option<Instant>,
}

/// Failed sign-ins by (user, address).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    pairs: Mutex<HashMap<(String, IpAddr), Failures>>,
}

impl LoginThrottle {
    /// `Err(wait)` when this pair must wait before trying again.
    pub fn check(&self, user: &str, ip: IpAddr) -> Result<(), Duration> {
        let pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        match pairs
            .get(&(user.to_lowercase(), ip))
            .and_then(|f| f.wait_until)
        {
            Some(until) if until > Instant::now() => Err(until - Instant::now()),
            _ => Ok(()),
        }
    }

    /// Counts a wrong password; returns the wait it starts, if any.
    pub fn failed(&self, user: &str, ip: IpAddr) -> Option<Duration> {
        let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        if pairs.len() >= MAX_TRACKED {
            pairs.retain(|_, f| f.last.elapsed() < FORGET_AFTER);
            if pairs.len() >= MAX_TRACKED {
                tracing::warn!("too many sign-in failures tracked; starting over");
                pairs.clear();
            }
        }
        let now = Instant::now();
        let f = pairs.entry((user.to_lowercase(), ip)).or_insert(Failures {
            count: 0,
            last: now,
            wait_until: None,
        });
        if f.last.elapsed() >= FORGET_AFTER {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        if f.count < FREE_FAILURES {
            return None;
        }
        let doublings = (f.count - FREE_FAILURES).min(16);
        let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(LONGEST_WAIT);
        f.wait_until = Some(now + wait);
        Some(wait)
    }

    /// Clears a pair after a right password.
    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        self.pairs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(user.to_lowercase(), ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_after_the_free_failures_and_double() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 1..FREE_FAILURES {
            assert_eq!(t.failed("Ana", ip), None);
            assert!(t.check("ana", ip).is_ok());
        }
        assert_eq!(t.failed("ana", ip), Some(Duration::from_secs(5)));
        assert!(
            t.check("ANA", ip).is_err(),
            "names are compared without case"
        );
        assert!(
            t.check("ana", other).is_ok(),
            "another address is not held up"
        );
        assert!(t.check("bob", ip).is_ok(), "another user is not held up");
        assert_eq!(t.failed("ana", ip), Some(Duration::from_secs(10)));
        t.succeeded("ana", ip);
        assert!(t.check("ana", ip).is_ok());
    }
}
