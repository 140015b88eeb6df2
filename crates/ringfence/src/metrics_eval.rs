//! Detection-quality metrics as the fraud-detection handbook (Le Borgne et al.) defines them:
//! AUC ROC and average precision over transactions, and card precision@k over days.

use std::collections::{HashMap, HashSet};

/// Area under the ROC curve (ties count one half). `None` without both classes.
pub fn auc_roc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Mann-Whitney U with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Average precision (scikit-learn's definition: sum over thresholds of
/// `(recall_n - recall_{n-1}) * precision_n`, tied scores forming one threshold). `None`
/// without positives.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|l| **l).count() as f64;
    if positives == 0.0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut seen, mut ap, mut last_recall) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            seen += 1.0;
            if labels[k] {
                tp += 1.0;
            }
        }
        let recall = tp / positives;
        ap += (recall - last_recall) * (tp / seen);
        last_recall = recall;
        i = j + 1;
    }
    Some(ap)
}

/// One scored transaction of a test day, for card precision.
#[derive(Clone, Debug)]
pub struct CardScore {
    /// The card (customer).
    pub card: String,
    /// Model score.
    pub score: f64,
    /// Ground truth.
    pub fraud: bool,
}

/// Card precision@k (handbook): for each day, each card's highest score, the `k` top cards,
/// and the share of them that are compromised that day; cards found compromised on an
/// earlier day are left out of later days. The mean over days.
pub fn card_precision_at_k(days: &[Vec<CardScore>], k: usize) -> f64 {
    let mut detected: HashSet<String> = HashSet::new();
    let mut per_day = Vec::with_capacity(days.len());
    for day in days {
        let mut cards: HashMap<&str, (f64, bool)> = HashMap::new();
        for t in day.iter().filter(|t| !detected.contains(&t.card)) {
            let e = cards.entry(&t.card).or_insert((f64::NEG_INFINITY, false));
            e.0 = e.0.max(t.score);
            e.1 |= t.fraud;
        }
        let mut ranked: Vec<(&str, f64, bool)> =
            cards.into_iter().map(|(c, (s, f))| (c, s, f)).collect();
        // Highest score first; ties by card id so results do not depend on hash order.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let top: Vec<_> = ranked.into_iter().take(k).collect();
        let hits: Vec<String> = top.iter().filter(|t| t.2).map(|t| t.0.to_owned()).collect();
        per_day.push(hits.len() as f64 / k as f64);
        detected.extend(hits);
    }
    if per_day.is_empty() {
        0.0
    } else {
        per_day.iter().sum::<f64>() / per_day.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_computed_values() {
        assert_eq!(
            auc_roc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(auc_roc(&[1.0, 2.0], &[false, true]), Some(1.0));
        assert_eq!(
            auc_roc(&[0.5, 0.5], &[false, true]),
            Some(0.5),
            "a tie counts one half"
        );
        assert_eq!(auc_roc(&[0.5, 0.6], &[true, true]), None);
    }

    #[test]
    fn average_precision_matches_scikit_learn() {
        // sklearn.metrics.average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333...
        let ap =
            average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).expect("ap");
        assert!((ap - 0.833_333_333).abs() < 1e-6, "{ap}");
        assert_eq!(average_precision(&[0.3, 0.2], &[true, false]), Some(1.0));
        assert_eq!(average_precision(&[0.3, 0.2], &[false, false]), None);
        // All tied: precision equals the base rate.
        let tied = average_precision(&[0.5; 4], &[true, false, false, false]).expect("ap");
        assert!((tied - 0.25).abs() < 1e-12);
    }

    #[test]
    fn card_precision_takes_max_per_card_and_drops_cards_already_caught() {
        let t = |card: &str, score: f64, fraud: bool| CardScore {
            card: card.into(),
            score,
            fraud,
        };
        let day1 = vec![
            t("a", 0.9, true),
            t("a", 0.1, true),
            t("b", 0.8, false),
            t("c", 0.2, true),
        ];
        let day2 = vec![t("a", 0.99, true), t("c", 0.7, true), t("b", 0.6, false)];
        // Day 1 top 2: a (fraud), b -> 0.5. Day 2 without a: c (fraud), b -> 0.5.
        assert_eq!(card_precision_at_k(&[day1.clone(), day2], 2), 0.5);
        assert_eq!(card_precision_at_k(&[day1], 1), 1.0);
        assert_eq!(card_precision_at_k(&[], 100), 0.0);
    }
}
