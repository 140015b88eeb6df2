//! Bucketed sliding windows: transaction count and amount sum over 1 min, 10 min, 1 h, 24 h
//! and 7 d, with O(1) amortised updates and a fixed memory footprint per entity.
//!
//! Each window is a ring of `B` buckets of width `len / B`. A read at time `t` counts the
//! buckets whose index lies in `(bucket(t) - B, bucket(t)]`, so it covers at least
//! `len - width` and at most `len` of history: a window never over-counts, it may forget up
//! to one bucket width at its far edge (5 s for the 1-minute window). Amounts are summed in
//! integer cents so totals are exact and replays reproduce them bit for bit.
//!
//! Events that arrive out of order land in their own bucket if it is still in the ring and
//! are dropped from that window if it has already slid past them. A late event reads the
//! window as of its own time: buckets newer than its own are not counted, so it never sees
//! events that happened after it (buckets already overwritten by newer ones are gone, so a
//! very late event may see less than was there).
//!
//! Sums use wrapping arithmetic: adding and later subtracting the same values is exact as long
//! as the true total fits in an `i64` (about 9 * 10^16 in major units), and hostile traffic
//! beyond that cannot panic the engine.

use serde::{Deserialize, Serialize};

/// A ring of `B` buckets holding counts and cent sums, plus running totals.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ring<const B: usize> {
    /// Bucket index (time / width) of the newest slot; `i64::MIN` when empty.
    head: i64,
    #[serde(with = "crate::snapshot::fixed_array")]
    counts: [u32; B],
    #[serde(with = "crate::snapshot::fixed_array")]
    cents: [i64; B],
    total_count: u32,
    total_cents: i64,
}

impl<const B: usize> Default for Ring<B> {
    fn default() -> Self {
        Self::EMPTY
    }
}

#[inline]
fn slot<const B: usize>(bucket: i64) -> usize {
    bucket.rem_euclid(B as i64) as usize
}

impl<const B: usize> Ring<B> {
    /// A ring with no events.
    pub const EMPTY: Ring<B> = Ring {
        head: i64::MIN,
        counts: [0; B],
        cents: [0; B],
        total_count: 0,
        total_cents: 0,
    };

    /// Count and cent sum of the window ending in bucket `now` (inclusive), without changing
    /// the ring. For a `now` older than the newest bucket only buckets up to `now` count.
    pub fn read(&self, now: i64) -> (u32, i64) {
        if self.head == i64::MIN {
            return (0, 0);
        }
        if now < self.head {
            let from = (now - B as i64 + 1).max(self.head - B as i64 + 1);
            let (mut count, mut cents) = (0u32, 0i64);
            for b in from..=now {
                let s = slot::<B>(b);
                count += self.counts[s];
                cents = cents.wrapping_add(self.cents[s]);
            }
            return (count, cents);
        }
        let gap = now - self.head;
        if gap >= B as i64 {
            return (0, 0);
        }
        // Buckets head-B+1 ..= now-B have slid out of the window since the last update.
        let (mut count, mut cents) = (self.total_count, self.total_cents);
        for b in (self.head - B as i64 + 1)..=(now - B as i64) {
            let s = slot::<B>(b);
            count -= self.counts[s];
            cents = cents.wrapping_sub(self.cents[s]);
        }
        (count, cents)
    }

    /// Adds one event of `cents` in bucket `at`.
    pub fn add(&mut self, at: i64, cents: i64) {
        if self.head == i64::MIN {
            self.head = at;
        } else if at > self.head {
            self.advance(at);
        } else if at <= self.head - B as i64 {
            return; // older than the whole ring: outside this window for every future read
        }
        let s = slot::<B>(at);
        // Counts cannot realistically overflow a u32 per bucket, but saturating on both keeps
        // `total_count >= sum(counts)` and the subtraction in `advance` safe regardless.
        if self.total_count == u32::MAX {
            return;
        }
        self.counts[s] += 1;
        self.cents[s] = self.cents[s].wrapping_add(cents);
        self.total_count += 1;
        self.total_cents = self.total_cents.wrapping_add(cents);
    }

    /// Moves the head to `to`, clearing the buckets that slide out.
    fn advance(&mut self, to: i64) {
        if to - self.head >= B as i64 {
            *self = Ring {
                head: to,
                ..Ring::default()
            };
            return;
        }
        for b in (self.head + 1)..=to {
            let s = slot::<B>(b);
            self.total_count -= self.counts[s];
            self.total_cents = self.total_cents.wrapping_sub(self.cents[s]);
            self.counts[s] = 0;
            self.cents[s] = 0;
        }
        self.head = to;
    }
}

/// Converts an amount to integer cents for exact summing.
#[inline]
pub fn to_cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

/// Bucket width of each standard window, in milliseconds.
pub const WIDTH_1M: i64 = 5_000;
/// See [`WIDTH_1M`].
pub const WIDTH_10M: i64 = 60_000;
/// See [`WIDTH_1M`].
pub const WIDTH_1H: i64 = 300_000;
/// See [`WIDTH_1M`].
pub const WIDTH_24H: i64 = 3_600_000;
/// See [`WIDTH_1M`].
pub const WIDTH_7D: i64 = 43_200_000;

/// The five standard windows of one entity: 1 min (12 x 5 s), 10 min (10 x 1 min),
/// 1 h (12 x 5 min), 24 h (24 x 1 h), 7 d (14 x 12 h).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Windows {
    w1m: Ring<12>,
    w10m: Ring<10>,
    w1h: Ring<12>,
    w24h: Ring<24>,
    w7d: Ring<14>,
}

impl Default for Windows {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl Windows {
    /// Windows with no events.
    pub const EMPTY: Windows = Windows {
        w1m: Ring::EMPTY,
        w10m: Ring::EMPTY,
        w1h: Ring::EMPTY,
        w24h: Ring::EMPTY,
        w7d: Ring::EMPTY,
    };

    /// Writes `count, sum` for 1m, 10m, 1h, 24h, 7d (ten values, sums in major units) into
    /// `out`, as of time `ts_ms`.
    pub fn read_into(&self, ts_ms: i64, out: &mut [f64]) {
        let reads = [
            self.w1m.read(ts_ms.div_euclid(WIDTH_1M)),
            self.w10m.read(ts_ms.div_euclid(WIDTH_10M)),
            self.w1h.read(ts_ms.div_euclid(WIDTH_1H)),
            self.w24h.read(ts_ms.div_euclid(WIDTH_24H)),
            self.w7d.read(ts_ms.div_euclid(WIDTH_7D)),
        ];
        for (i, (count, cents)) in reads.into_iter().enumerate() {
            out[2 * i] = f64::from(count);
            out[2 * i + 1] = cents as f64 / 100.0;
        }
    }

    /// Records one event at `ts_ms` of `amount`.
    pub fn add(&mut self, ts_ms: i64, amount: f64) {
        let cents = to_cents(amount);
        self.w1m.add(ts_ms.div_euclid(WIDTH_1M), cents);
        self.w10m.add(ts_ms.div_euclid(WIDTH_10M), cents);
        self.w1h.add(ts_ms.div_euclid(WIDTH_1H), cents);
        self.w24h.add(ts_ms.div_euclid(WIDTH_24H), cents);
        self.w7d.add(ts_ms.div_euclid(WIDTH_7D), cents);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn read(w: &Windows, ts: i64) -> [f64; 10] {
        let mut out = [0.0; 10];
        w.read_into(ts, &mut out);
        out
    }

    #[test]
    fn empty_reads_zero() {
        let w = Windows::default();
        assert_eq!(read(&w, 123 * S), [0.0; 10]);
    }

    #[test]
    fn counts_and_sums_accumulate_across_windows() {
        let mut w = Windows::default();
        w.add(0, 10.0);
        w.add(10 * S, 2.5);
        w.add(30 * S, 0.1);
        let r = read(&w, 30 * S);
        for i in 0..5 {
            assert_eq!(r[2 * i], 3.0);
            assert!((r[2 * i + 1] - 12.6).abs() < 1e-9);
        }
    }

    #[test]
    fn one_minute_edge_is_exact_for_bucket_aligned_events() {
        let mut w = Windows::default();
        w.add(0, 1.0);
        assert_eq!(
            read(&w, 59_999)[0],
            1.0,
            "59.999 s later: still in the minute"
        );
        assert_eq!(read(&w, 60 * S)[0], 0.0, "60 s later: out of the minute");
        assert_eq!(read(&w, 60 * S)[2], 1.0, "but still in the 10 minutes");
    }

    #[test]
    fn far_edge_may_forget_up_to_one_bucket_but_never_over_counts() {
        let mut w = Windows::default();
        w.add(4 * S, 1.0); // bucket 0 of the 1m ring (0..5 s)
                           // 60.5 s after the event: bucket 12, the event's bucket 0 has slid out.
        assert_eq!(read(&w, 64_500)[0], 0.0);
        // Never counted beyond 60 s.
        for t in (60 * S + 4 * S..200 * S).step_by(500) {
            assert_eq!(read(&w, t)[0], 0.0, "at {t}");
        }
    }

    #[test]
    fn expiry_after_long_idle_resets_each_window() {
        let mut w = Windows::default();
        w.add(0, 5.0);
        let day = 86_400 * S;
        let r = read(&w, day + 1);
        assert_eq!(r[6], 0.0, "24h window expired");
        assert_eq!(r[8], 1.0, "7d window still holds it");
        let r = read(&w, 8 * day);
        assert_eq!(r[8], 0.0, "7d window expired");
        w.add(8 * day, 1.0);
        assert_eq!(read(&w, 8 * day)[8], 1.0);
        assert_eq!(read(&w, 8 * day)[9], 1.0);
    }

    #[test]
    fn out_of_order_events_land_in_their_bucket_or_are_dropped() {
        let mut w = Windows::default();
        w.add(100 * S, 1.0);
        w.add(90 * S, 2.0); // late but within the minute ring: counted
        let r = read(&w, 100 * S);
        assert_eq!(r[0], 2.0);
        assert!((r[1] - 3.0).abs() < 1e-9);
        w.add(10 * S, 4.0); // 90 s late: outside the 1m ring, inside the others
        let r = read(&w, 100 * S);
        assert_eq!(r[0], 2.0);
        assert_eq!(r[2], 3.0);
        // A late read counts only what happened up to its own time.
        assert_eq!(
            read(&w, 95 * S)[0],
            1.0,
            "the t=90 event, not the t=100 one"
        );
        assert_eq!(read(&w, 50 * S)[0], 0.0);
        assert_eq!(
            read(&w, 50 * S)[2],
            1.0,
            "the t=10 event in the 10-minute window"
        );
    }

    #[test]
    fn advancing_clears_exactly_the_slid_buckets() {
        let mut r: Ring<4> = Ring::default();
        r.add(0, 1);
        r.add(1, 10);
        r.add(2, 100);
        r.add(3, 1000);
        assert_eq!(r.read(3), (4, 1111));
        assert_eq!(r.read(4), (3, 1110));
        assert_eq!(r.read(5), (2, 1100));
        r.add(5, 5);
        assert_eq!(r.read(5), (3, 1105));
        assert_eq!(r.read(9), (0, 0));
        r.add(20, 7);
        assert_eq!(r.read(20), (1, 7));
    }

    #[test]
    fn negative_timestamps_work() {
        let mut w = Windows::default();
        w.add(-30 * S, 1.0);
        assert_eq!(read(&w, -1)[0], 1.0);
        assert_eq!(read(&w, 40 * S)[0], 0.0);
    }

    #[test]
    fn huge_sums_never_panic() {
        let mut r: Ring<4> = Ring::default();
        for _ in 0..4 {
            r.add(0, i64::MAX / 2);
        }
        let _ = r.read(0);
        r.add(10, 1);
        assert_eq!(
            r.read(10),
            (1, 1),
            "sliding past wrapped buckets is exact again"
        );
    }

    #[test]
    fn cents_are_exact() {
        let mut w = Windows::default();
        for _ in 0..1000 {
            w.add(0, 0.1);
        }
        assert_eq!(read(&w, 0)[1], 100.0);
    }
}
