//! Spending profiles (running mean and deviation of amounts) and last-seen time and place.

use serde::{Deserialize, Serialize};

use crate::event::GeoPoint;

/// Running mean and variance of amounts (Welford's algorithm: numerically stable, O(1)).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct SpendProfile {
    n: u32,
    mean: f64,
    m2: f64,
}

impl SpendProfile {
    /// No amounts yet.
    pub const EMPTY: SpendProfile = SpendProfile {
        n: 0,
        mean: 0.0,
        m2: 0.0,
    };

    /// Number of amounts seen.
    pub fn count(&self) -> u32 {
        self.n
    }

    /// Mean amount, `NaN` before the first amount.
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.mean
        }
    }

    /// Sample standard deviation, `NaN` before the second amount.
    pub fn std(&self) -> f64 {
        if self.n < 2 {
            f64::NAN
        } else {
            (self.m2 / f64::from(self.n - 1)).sqrt()
        }
    }

    /// How many deviations `amount` lies above the mean. The deviation is floored at 5% of
    /// the mean (and 0.01) so that a customer who always pays the same amount does not turn
    /// every small change into an infinite z-score. `NaN` before the second amount.
    pub fn zscore(&self, amount: f64) -> f64 {
        if self.n < 2 {
            return f64::NAN;
        }
        let floor = (0.05 * self.mean.abs()).max(0.01);
        (amount - self.mean) / self.std().max(floor)
    }

    /// `amount / mean`, `NaN` when there is no positive mean yet.
    pub fn ratio(&self, amount: f64) -> f64 {
        if self.n == 0 || self.mean <= 0.0 {
            f64::NAN
        } else {
            amount / self.mean
        }
    }

    /// Adds one amount.
    pub fn add(&mut self, amount: f64) {
        self.n = self.n.saturating_add(1);
        let delta = amount - self.mean;
        self.mean += delta / f64::from(self.n);
        self.m2 += delta * (amount - self.mean);
    }
}

/// When and where an entity was last seen.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct LastSeen {
    /// Time of the newest transaction, if any.
    pub ts_ms: Option<i64>,
    /// Newest located transaction: time and place.
    pub located: Option<(i64, GeoPoint)>,
}

/// Shortest time span used for implied speed, so two transactions in the same second do
/// not imply an infinite speed.
const MIN_TRAVEL_MS: i64 = 60_000;

impl LastSeen {
    /// Never seen.
    pub const EMPTY: LastSeen = LastSeen {
        ts_ms: None,
        located: None,
    };

    /// Seconds since the newest transaction (never negative), `NaN` if none.
    pub fn secs_since(&self, ts_ms: i64) -> f64 {
        match self.ts_ms {
            Some(t) => ((ts_ms - t).max(0)) as f64 / 1000.0,
            None => f64::NAN,
        }
    }

    /// Distance (km) and implied speed (km/h) from the newest located transaction to
    /// `here` at `ts_ms`; `NaN`s when either side has no location.
    pub fn travel(&self, ts_ms: i64, here: Option<GeoPoint>) -> (f64, f64) {
        match (self.located, here) {
            (Some((t, there)), Some(here)) => {
                let km = there.distance_km(here);
                let hours = (ts_ms - t).max(MIN_TRAVEL_MS) as f64 / 3_600_000.0;
                (km, km / hours)
            }
            _ => (f64::NAN, f64::NAN),
        }
    }

    /// Records a transaction at `ts_ms`, located or not.
    pub fn update(&mut self, ts_ms: i64, here: Option<GeoPoint>) {
        self.ts_ms = Some(self.ts_ms.map_or(ts_ms, |t| t.max(ts_ms)));
        if let Some(p) = here {
            if self.located.is_none_or(|(t, _)| ts_ms >= t) {
                self.located = Some((ts_ms, p));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_matches_the_textbook_formulas() {
        let xs = [10.0, 12.0, 23.0, 23.0, 16.0, 23.0, 21.0, 16.0];
        let mut p = SpendProfile::default();
        for x in xs {
            p.add(x);
        }
        let mean = xs.iter().sum::<f64>() / 8.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 7.0;
        assert!((p.mean() - mean).abs() < 1e-12);
        assert!((p.std() - var.sqrt()).abs() < 1e-12);
        assert!((p.zscore(30.0) - (30.0 - mean) / var.sqrt()).abs() < 1e-12);
        assert!((p.ratio(36.0) - 36.0 / mean).abs() < 1e-12);
    }

    #[test]
    fn missing_before_enough_history() {
        let mut p = SpendProfile::default();
        assert!(p.mean().is_nan() && p.std().is_nan() && p.zscore(1.0).is_nan());
        assert!(p.ratio(1.0).is_nan());
        p.add(10.0);
        assert_eq!(p.mean(), 10.0);
        assert!(p.std().is_nan() && p.zscore(1.0).is_nan());
        assert_eq!(p.ratio(30.0), 3.0);
    }

    #[test]
    fn constant_spender_has_a_floored_deviation() {
        let mut p = SpendProfile::default();
        for _ in 0..10 {
            p.add(20.0);
        }
        assert_eq!(p.std(), 0.0);
        assert_eq!(p.zscore(21.0), 1.0, "floor is 5% of the mean = 1.0");
    }

    #[test]
    fn travel_uses_the_last_located_transaction() {
        let paris = GeoPoint {
            lat: 48.8566,
            lon: 2.3522,
        };
        let nyc = GeoPoint {
            lat: 40.7128,
            lon: -74.0060,
        };
        let mut l = LastSeen::default();
        assert!(l.secs_since(0).is_nan());
        l.update(0, Some(paris));
        l.update(60_000, None);
        assert_eq!(l.secs_since(120_000), 60.0);
        let (km, kmh) = l.travel(3_600_000, Some(nyc));
        assert!((km - 5837.0).abs() < 10.0, "{km}");
        assert!((kmh - km).abs() < 1e-9, "one hour apart");
        let (_, fast) = l.travel(1_000, Some(nyc));
        assert!((fast - km * 60.0).abs() < 1e-6, "floored at one minute");
        assert!(l.travel(0, None).0.is_nan());
    }
}
