//! Bounded distinct counts: which keys (users, cards, devices, merchants) an entity has seen
//! and when last.
//!
//! A small vector of `(key, last_seen)` pairs, capped at `cap` entries: when full, the entry
//! seen longest ago is evicted (ties broken by key, so eviction is deterministic). Counts are
//! exact up to the cap and saturate at it. Keys are 64-bit hashes of entity ids.

use serde::{Deserialize, Serialize};

/// Recently seen keys with their last-seen time, at most `cap` of them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RecentKeys {
    entries: Vec<(u64, i64)>,
}

impl RecentKeys {
    /// No keys.
    pub const EMPTY: RecentKeys = RecentKeys {
        entries: Vec::new(),
    };

    /// Distinct keys seen at or after `since_ms`.
    pub fn count_since(&self, since_ms: i64) -> usize {
        self.entries.iter().filter(|(_, t)| *t >= since_ms).count()
    }

    /// Distinct keys other than `except` seen at or after `since_ms`.
    pub fn count_since_except(&self, since_ms: i64, except: Option<u64>) -> usize {
        self.entries
            .iter()
            .filter(|(k, t)| *t >= since_ms && Some(*k) != except)
            .count()
    }

    /// Whether `key` has been seen (and not evicted).
    pub fn contains(&self, key: u64) -> bool {
        self.entries.iter().any(|(k, _)| *k == key)
    }

    /// Records `key` as seen at `ts_ms`, dropping entries last seen before `forget_before` and
    /// evicting the oldest one if more than `cap` remain.
    pub fn touch(&mut self, key: u64, ts_ms: i64, forget_before: i64, cap: usize) {
        if let Some(e) = self.entries.iter_mut().find(|(k, _)| *k == key) {
            e.1 = e.1.max(ts_ms);
        } else {
            self.entries.push((key, ts_ms));
        }
        self.entries.retain(|(_, t)| *t >= forget_before);
        while self.entries.len() > cap {
            if let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, (k, t))| (*t, *k))
                .map(|(i, _)| i)
            {
                self.entries.swap_remove(oldest);
            }
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn counts_distinct_keys_within_the_window() {
        let mut r = RecentKeys::default();
        r.touch(1, 0, i64::MIN, 8);
        r.touch(2, 1000, i64::MIN, 8);
        r.touch(1, 2000, i64::MIN, 8);
        assert_eq!(r.count_since(0), 2);
        assert_eq!(r.count_since(1500), 1, "only key 1 was seen after 1.5 s");
        assert_eq!(r.count_since_except(0, Some(1)), 1);
        assert_eq!(r.count_since_except(0, None), 2);
        assert!(r.contains(2));
        assert!(!r.contains(3));
    }

    #[test]
    fn old_entries_are_forgotten() {
        let mut r = RecentKeys::default();
        r.touch(1, 0, i64::MIN, 8);
        r.touch(2, 2 * DAY, 2 * DAY - DAY, 8);
        assert_eq!(r.len(), 1);
        assert!(!r.contains(1));
    }

    #[test]
    fn saturates_at_cap_evicting_the_oldest() {
        let mut r = RecentKeys::default();
        for k in 0..10u64 {
            r.touch(k, k as i64, i64::MIN, 4);
        }
        assert_eq!(r.len(), 4);
        assert!(r.contains(9) && r.contains(6));
        assert!(!r.contains(5));
        assert_eq!(r.count_since(0), 4);
    }

    #[test]
    fn eviction_ties_break_by_key() {
        let mut a = RecentKeys::default();
        for k in [5u64, 3, 9] {
            a.touch(k, 0, i64::MIN, 2);
        }
        assert!(!a.contains(3), "smallest key among the oldest goes first");
        assert!(a.contains(5) && a.contains(9));
    }
}
