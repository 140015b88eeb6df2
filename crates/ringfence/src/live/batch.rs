//! A quarter second of feed rows, serialised once ([`Batch`]), and the message each client
//! gets from it: everything, or what its filter lets through, sampled down to
//! [`ROWS_PER_MESSAGE`] rows with a count of those left out.
//!
//! Sampling keeps every row above approve before any approved one (the rows an analyst
//! watches for), and spreads what it keeps evenly over the quarter second; the rows sent stay
//! in the order they were stored.

use axum::extract::ws::Utf8Bytes;
use ringfence_core::decision::Action;

use super::row::{LiveFilter, LiveRow};

/// Most rows in one feed message (four messages a second).
pub const ROWS_PER_MESSAGE: usize = 50;

/// One row, serialised, with what filters look at.
pub struct SentRow {
    decision: Action,
    store: Option<String>,
    amount: f64,
    json: String,
}

/// The rows of one tick, serialised once for every client.
pub struct Batch {
    rows: Vec<SentRow>,
    /// Rows stored in the tick but not kept by the hub (above its per-tick cap).
    overflow: u64,
    /// The message for clients without a filter.
    unfiltered: Utf8Bytes,
}

impl Batch {
    /// Serialises the tick's rows (`overflow` more were stored but not kept).
    pub fn new(rows: Vec<LiveRow>, overflow: u64) -> Batch {
        let rows: Vec<SentRow> = rows
            .into_iter()
            .filter_map(|r| {
                // A row is plain strings and numbers; if one ever failed, it is left out.
                let json = serde_json::to_string(&r).ok()?;
                Some(SentRow {
                    decision: r.decision,
                    store: r.store_id,
                    amount: r.amount,
                    json,
                })
            })
            .collect();
        let all: Vec<usize> = (0..rows.len()).collect();
        let unfiltered = message(&rows, &all, overflow).into();
        Batch {
            rows,
            overflow,
            unfiltered,
        }
    }

    /// The message for a client with `filter`, or `None` when nothing of this tick concerns
    /// it.
    pub fn message_for(&self, filter: &LiveFilter) -> Option<Utf8Bytes> {
        if filter.is_empty() {
            if self.rows.is_empty() && self.overflow == 0 {
                return None;
            }
            return Some(self.unfiltered.clone());
        }
        let matching: Vec<usize> = (0..self.rows.len())
            .filter(|&i| {
                let r = &self.rows[i];
                filter.matches(r.decision, r.store.as_deref(), r.amount)
            })
            .collect();
        if matching.is_empty() {
            return None;
        }
        Some(message(&self.rows, &matching, 0).into())
    }
}

/// `{"type":"tx","items":[...],"omitted":n}` of the sampled `matching` rows; `omitted`
/// counts the matching rows left out plus `unkept`.
fn message(rows: &[SentRow], matching: &[usize], unkept: u64) -> String {
    let chosen = sample(rows, matching, ROWS_PER_MESSAGE);
    let omitted = (matching.len() - chosen.len()) as u64 + unkept;
    let mut out = String::with_capacity(
        48 + chosen
            .iter()
            .map(|&i| rows[i].json.len() + 1)
            .sum::<usize>(),
    );
    out.push_str(r#"{"type":"tx","items":["#);
    for (n, &i) in chosen.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&rows[i].json);
    }
    out.push_str(r#"],"omitted":"#);
    out.push_str(&omitted.to_string());
    out.push('}');
    out
}

/// At most `cap` of `matching` (indexes into `rows`, ascending): rows above approve first,
/// each kind spread evenly, in ascending order.
fn sample(rows: &[SentRow], matching: &[usize], cap: usize) -> Vec<usize> {
    if matching.len() <= cap {
        return matching.to_vec();
    }
    let (flagged, approved): (Vec<usize>, Vec<usize>) = matching
        .iter()
        .partition(|&&i| rows[i].decision > Action::Approve);
    let mut chosen = spread(&flagged, cap);
    chosen.extend(spread(&approved, cap - chosen.len()));
    chosen.sort_unstable();
    chosen
}

/// `m` of `items`, evenly spaced (all of them when there are no more than `m`).
fn spread(items: &[usize], m: usize) -> Vec<usize> {
    let n = items.len();
    if n <= m {
        return items.to_vec();
    }
    (0..m).map(|k| items[k * n / m]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn row(i: usize, decision: Action, store: &str) -> LiveRow {
        LiveRow {
            transaction_id: format!("t{i}"),
            timestamp: ringfence_core::event::Timestamp::from_millis(0),
            decided_at: None,
            kind: "payment",
            amount: i as f64,
            currency: None,
            merchant: None,
            store_id: Some(store.into()),
            terminal_id: None,
            user_id: None,
            card: None,
            decision,
            score: 0.0,
            reason: None,
            rule: None,
            processing_us: 1,
            site: None,
            replicated: false,
            degraded: false,
        }
    }

    fn parse(m: &Utf8Bytes) -> Value {
        serde_json::from_str(m.as_str()).expect("json")
    }

    #[test]
    fn a_busy_tick_is_sampled_keeping_flagged_rows_and_counting_the_rest() {
        let rows: Vec<LiveRow> = (0..400)
            .map(|i| {
                row(
                    i,
                    if i % 100 == 7 {
                        Action::Block
                    } else {
                        Action::Approve
                    },
                    "a",
                )
            })
            .collect();
        let b = Batch::new(rows, 25);
        let m = parse(&b.message_for(&LiveFilter::default()).expect("message"));
        let items = m["items"].as_array().expect("items");
        assert_eq!(items.len(), ROWS_PER_MESSAGE);
        assert_eq!(m["omitted"], 400 - ROWS_PER_MESSAGE as u64 + 25);
        let blocks = items.iter().filter(|r| r["decision"] == "block").count();
        assert_eq!(blocks, 4, "every block is kept");
        let ids: Vec<f64> = items
            .iter()
            .map(|r| r["amount"].as_f64().expect("amount"))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in stored order");
    }

    #[test]
    fn a_filter_gets_only_its_rows_or_nothing() {
        let b = Batch::new(
            vec![row(1, Action::Approve, "a"), row(2, Action::Block, "b")],
            0,
        );
        let blocks = LiveFilter {
            decisions: Some([false, false, false, true]),
            ..LiveFilter::default()
        };
        let m = parse(&b.message_for(&blocks).expect("one block"));
        assert_eq!(m["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(m["items"][0]["transaction_id"], "t2");
        assert_eq!(m["omitted"], 0);
        let store_c = LiveFilter {
            store: Some("c".into()),
            ..LiveFilter::default()
        };
        assert!(b.message_for(&store_c).is_none());
        assert!(Batch::new(Vec::new(), 0)
            .message_for(&LiveFilter::default())
            .is_none());
    }
}
