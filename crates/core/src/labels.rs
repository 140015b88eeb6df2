//! Label-driven counters: how many of an entity's transactions were later confirmed as fraud,
//! per 4-hour bucket of *transaction* time. They feed features such as a terminal's fraud rate.
//!
//! Labels arrive late: in production through `POST /v1/labels` days or weeks after the
//! transaction, in replay after `--label-delay-days`. A label lands in its transaction's bucket
//! whenever it arrives, and features read windows that end one label delay before the
//! transaction being scored, at the last *complete* bucket: `[end - w, end)` with
//! `end = bucket(ts - delay)`. A bucket straddling `ts - delay` would count all its
//! transactions but only the labels of its earlier ones, so it is left out (at most 4 hours
//! of staleness, no bias). A read therefore sees exactly the labels already visible.

use serde::{Deserialize, Serialize};

/// Width of a bucket.
pub const BUCKET_MS: i64 = 4 * 3_600_000;
/// Buckets per day.
pub const BUCKETS_PER_DAY: i64 = 6;
/// Buckets kept per entity: 64 days, enough for a 30-day window behind a delay of up to 33
/// days.
pub const BUCKETS: usize = 64 * BUCKETS_PER_DAY as usize;

/// The bucket index of a time.
#[inline]
pub fn bucket_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(BUCKET_MS)
}

/// What [`LabelBuckets::summary`] reads: per window, transactions and confirmed frauds, and
/// the oldest and newest buckets with a fraud in the widest window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSummary<const N: usize> {
    /// Transactions per window.
    #[serde(with = "crate::snapshot::fixed_array")]
    pub tx: [u32; N],
    /// Confirmed frauds per window.
    #[serde(with = "crate::snapshot::fixed_array")]
    pub fraud: [u32; N],
    /// (oldest, newest) bucket holding a fraud in the widest window.
    pub span: Option<(i64, i64)>,
    /// Transactions and confirmed frauds from the oldest fraud bucket of the widest window to
    /// its end: is the fraud a streak (every transaction since) or an isolated case.
    pub since_first: (u32, u32),
    /// Confirmed frauds in the widest window whose amounts were ordinary for their cards.
    pub plain_fraud: u32,
}

impl<const N: usize> LabelSummary<N> {
    /// Share of window `i`'s transactions confirmed as fraud; `NaN` without transactions.
    pub fn rate(&self, i: usize) -> f64 {
        if self.tx[i] == 0 {
            f64::NAN
        } else {
            f64::from(self.fraud[i]) / f64::from(self.tx[i])
        }
    }
}

/// Transactions and confirmed frauds per 4-hour bucket of transaction time, for the last
/// [`BUCKETS`] buckets (64 days).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabelBuckets {
    /// Newest day held; `i64::MIN` when empty.
    head: i64,
    #[serde(with = "crate::snapshot::fixed_array")]
    tx: [u32; BUCKETS],
    #[serde(with = "crate::snapshot::fixed_array")]
    fraud: [u32; BUCKETS],
    #[serde(with = "crate::snapshot::fixed_array")]
    plain: [u16; BUCKETS],
}

impl Default for LabelBuckets {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl LabelBuckets {
    /// No history.
    pub const EMPTY: LabelBuckets = LabelBuckets {
        head: i64::MIN,
        tx: [0; BUCKETS],
        fraud: [0; BUCKETS],
        plain: [0; BUCKETS],
    };

    fn slot(day: i64) -> usize {
        day.rem_euclid(BUCKETS as i64) as usize
    }

    /// Whether bucket `day` is still held.
    fn holds(&self, day: i64) -> bool {
        self.head != i64::MIN && day <= self.head && day > self.head - BUCKETS as i64
    }

    /// Counts one transaction in bucket `day`.
    pub fn add_tx(&mut self, day: i64) {
        if self.head == i64::MIN {
            self.head = day;
        } else if day > self.head {
            if day - self.head >= BUCKETS as i64 {
                self.tx = [0; BUCKETS];
                self.fraud = [0; BUCKETS];
                self.plain = [0; BUCKETS];
            } else {
                for d in (self.head + 1)..=day {
                    self.tx[Self::slot(d)] = 0;
                    self.fraud[Self::slot(d)] = 0;
                    self.plain[Self::slot(d)] = 0;
                }
            }
            self.head = day;
        } else if !self.holds(day) {
            return;
        }
        let s = Self::slot(day);
        self.tx[s] = self.tx[s].saturating_add(1);
    }

    /// Adds (`+1`) or withdraws (`-1`) a confirmed fraud on a transaction of bucket `day`;
    /// `plain` when its amount was ordinary for its card. Buckets no longer held are ignored.
    pub fn add_fraud(&mut self, day: i64, delta: i32, plain: bool) {
        if !self.holds(day) {
            return;
        }
        let s = Self::slot(day);
        self.fraud[s] = self.fraud[s].saturating_add_signed(delta);
        if plain {
            self.plain[s] = self.plain[s].saturating_add_signed(delta as i16);
        }
    }

    /// Transactions and confirmed frauds over the buckets `(to - w, to]` (`w` in buckets).
    pub fn read(&self, to: i64, w: i64) -> (u32, u32) {
        if self.head == i64::MIN {
            return (0, 0);
        }
        let (mut tx, mut fraud) = (0u32, 0u32);
        let from = (to - w + 1).max(self.head - BUCKETS as i64 + 1);
        for d in from..=to.min(self.head) {
            let s = Self::slot(d);
            tx += self.tx[s];
            fraud += self.fraud[s];
        }
        (tx, fraud)
    }

    /// Transactions and confirmed frauds over the windows of `widths[i]` buckets that all end
    /// at bucket `to` (`(to - widths[i], to]`), and the oldest and newest buckets holding a
    /// fraud within the widest one. One pass over the ring, stepping the slot instead of
    /// dividing per bucket: this runs for every transaction with a terminal or merchant.
    pub fn summary<const N: usize>(&self, to: i64, widths: [i64; N]) -> LabelSummary<N> {
        let mut out = LabelSummary {
            tx: [0; N],
            fraud: [0; N],
            span: None,
            since_first: (0, 0),
            plain_fraud: 0,
        };
        if self.head == i64::MIN {
            return out;
        }
        let widest = widths.iter().copied().max().unwrap_or(0);
        let from = (to - widest + 1).max(self.head - BUCKETS as i64 + 1);
        let last = to.min(self.head);
        if last < from {
            return out;
        }
        let mut slot = Self::slot(last);
        let (mut newer_tx, mut newer_fraud) = (0u32, 0u32);
        for b in (from..=last).rev() {
            let (tx, fraud) = (self.tx[slot], self.fraud[slot]);
            newer_tx += tx;
            newer_fraud += fraud;
            // A withdrawn label is judged "ordinary" again when it is withdrawn, so a bucket's
            // plain count could outlive its frauds; it never counts above them.
            out.plain_fraud += u32::from(self.plain[slot]).min(fraud);
            let age = to - b; // 0 for the bucket that ends the windows
            for ((sum_tx, sum_fraud), width) in
                out.tx.iter_mut().zip(out.fraud.iter_mut()).zip(widths)
            {
                if age < width {
                    *sum_tx += tx;
                    *sum_fraud += fraud;
                }
            }
            if fraud > 0 {
                out.span = Some(out.span.map_or((b, b), |(_, newest)| (b, newest)));
                out.since_first = (newer_tx, newer_fraud);
            }
            slot = if slot == 0 { BUCKETS - 1 } else { slot - 1 };
        }
        out
    }

    /// The oldest and newest buckets in `(to - w, to]` holding a confirmed fraud.
    pub fn fraud_span(&self, to: i64, w: i64) -> Option<(i64, i64)> {
        if self.head == i64::MIN {
            return None;
        }
        let from = (to - w + 1).max(self.head - BUCKETS as i64 + 1);
        let mut span: Option<(i64, i64)> = None;
        for b in from..=to.min(self.head) {
            if self.fraud[Self::slot(b)] > 0 {
                span = Some(span.map_or((b, b), |(first, _)| (first, b)));
            }
        }
        span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_day_and_reads_windows() {
        let mut d = LabelBuckets::default();
        for day in [10, 10, 11, 15] {
            d.add_tx(day);
        }
        d.add_fraud(10, 1, false);
        d.add_fraud(15, 1, false);
        assert_eq!(d.read(15, 1), (1, 1));
        assert_eq!(d.read(11, 2), (3, 1));
        assert_eq!(d.read(15, 30), (4, 2));
        assert_eq!(d.read(9, 30), (0, 0));
        d.add_fraud(10, -1, false);
        assert_eq!(d.read(15, 30), (4, 1));
    }

    #[test]
    fn fraud_span_finds_the_oldest_and_newest_fraud() {
        let mut d = LabelBuckets::default();
        for b in [3, 5, 8, 9] {
            d.add_tx(b);
        }
        assert_eq!(d.fraud_span(9, 10), None);
        d.add_fraud(5, 1, false);
        d.add_fraud(8, 1, false);
        assert_eq!(d.fraud_span(9, 10), Some((5, 8)));
        assert_eq!(d.fraud_span(7, 10), Some((5, 5)));
        assert_eq!(d.fraud_span(9, 2), Some((8, 8)));
    }

    #[test]
    fn summary_matches_separate_reads() {
        let mut d = LabelBuckets::default();
        let mut x = 7u64;
        for b in 0..500i64 {
            for _ in 0..(b % 3) {
                d.add_tx(b);
            }
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            if x >> 61 == 0 {
                d.add_fraud(b, 1, false);
            }
        }
        for to in [100, 300, 450, 499, 520] {
            let s = d.summary(to, [1, 6, 42, 180]);
            for (i, w) in [1, 6, 42, 180].into_iter().enumerate() {
                assert_eq!((s.tx[i], s.fraud[i]), d.read(to, w), "to {to}, w {w}");
            }
            assert_eq!(s.span, d.fraud_span(to, 180), "to {to}");
        }
        assert_eq!(LabelBuckets::default().summary(5, [1, 2]).tx, [0, 0]);
    }

    #[test]
    fn summary_reads_the_streak_since_the_oldest_fraud_and_ordinary_frauds() {
        let mut d = LabelBuckets::default();
        for b in [1, 2, 2, 4, 6, 9] {
            d.add_tx(b);
        }
        d.add_fraud(2, 1, true);
        d.add_fraud(4, 1, false);
        let s = d.summary(9, [8]);
        // Buckets 2..=9 hold five transactions, two of them fraud.
        assert_eq!(s.since_first, (5, 2));
        assert_eq!(s.plain_fraud, 1);
        assert_eq!(d.summary(9, [6]).since_first, (3, 1), "bucket 2 is out");
        // Withdrawn, but judged not ordinary at withdrawal: the plain count stays under the
        // frauds it belongs to.
        d.add_fraud(2, -1, false);
        assert_eq!(d.summary(9, [8]).plain_fraud, 0);
    }

    #[test]
    fn old_days_slide_out() {
        let mut d = LabelBuckets::default();
        d.add_tx(0);
        d.add_fraud(0, 1, false);
        d.add_tx(BUCKETS as i64);
        assert_eq!(
            d.read(BUCKETS as i64, BUCKETS as i64 + 10),
            (1, 0),
            "day 0 is gone"
        );
        d.add_fraud(0, 1, false);
        assert_eq!(
            d.read(BUCKETS as i64, 1000),
            (1, 0),
            "a label for a forgotten day is ignored"
        );
        d.add_tx(10_000);
        assert_eq!(d.read(10_000, 1), (1, 0));
    }

    #[test]
    fn late_transactions_within_range_count() {
        let mut d = LabelBuckets::default();
        d.add_tx(20);
        d.add_tx(18);
        assert_eq!(d.read(20, 3), (2, 0));
        d.add_fraud(18, 1, false);
        assert_eq!(d.read(18, 1), (1, 1));
    }
}
