//! Pre-generated request bodies for `ringfence bench`: the simulated transactions are
//! generated and encoded before the clock starts, so the load generator spends its share of
//! the two cores on HTTP rather than on simulating a world.
//!
//! Generating and encoding one simulated transaction costs about 3–4 µs of CPU; at the rates
//! the bench drives (tens of thousands a second on the same machine as the server) that alone
//! would take half a core from the server. So the bench generates a pool of transactions once
//! (`--pool`, default [`DEFAULT_POOL`]) and each request copies its transactions out of it.
//! Each transaction's id is written into its encoded JSON at a fixed-width slot, so a request
//! stamps a run-unique id with a copy of twelve digits, and a run longer than the pool goes
//! round it again under new ids: a server that deduplicates by id still does full work, and the
//! same customers come back as they would in a longer stream. No transaction carries a time;
//! the server stamps each with its own clock.

use crate::simulate::{Generator, LabeledTransaction};

/// Transactions generated before a run by default (about 400 bytes each encoded).
pub const DEFAULT_POOL: usize = 500_000;
/// Decimal digits of the per-run sequence number in each transaction id.
const ID_DIGITS: usize = 12;

/// Encoded transactions, each with the byte offset of its id's sequence digits.
#[derive(Debug)]
pub struct BodyPool {
    items: Vec<(Box<[u8]>, usize)>,
}

impl BodyPool {
    /// Generates `size` transactions from `generator`, with ids `{run}-{12 digits}`.
    pub fn generate(mut generator: Generator, size: usize, run: &str) -> BodyPool {
        let placeholder = format!("{run}-{}", "0".repeat(ID_DIGITS));
        let mut items = Vec::with_capacity(size);
        while items.len() < size {
            let Some(LabeledTransaction { mut tx, .. }) = generator.next() else {
                break;
            };
            tx.transaction_id.clone_from(&placeholder);
            tx.timestamp = None;
            // A SimTransaction is plain strings and numbers: encoding cannot fail, and the id
            // is the first field, so its slot is found before any free text.
            let Ok(json) = serde_json::to_vec(&tx) else {
                continue;
            };
            let Some(at) = find(&json, placeholder.as_bytes()) else {
                continue;
            };
            items.push((json.into_boxed_slice(), at + placeholder.len() - ID_DIGITS));
        }
        BodyPool { items }
    }

    /// Transactions in the pool.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the pool is empty (the generator ended at once).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends transaction number `seq` of the run to `out`: pool item `seq % len` with
    /// `seq` in its id.
    pub fn write_tx(&self, seq: u64, out: &mut Vec<u8>) {
        if self.items.is_empty() {
            return;
        }
        let (json, digits) = &self.items[(seq % self.items.len() as u64) as usize];
        let start = out.len();
        out.extend_from_slice(json);
        let mut n = seq;
        for b in out[start + digits..start + digits + ID_DIGITS]
            .iter_mut()
            .rev()
        {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }

    /// A request body: one transaction (`as_batch` false), or a JSON array of the run's
    /// transactions `seqs`. Returns the body and how many transactions it holds.
    pub fn body(&self, seqs: impl Iterator<Item = u64>, as_batch: bool) -> (Vec<u8>, u64) {
        let mut body = Vec::with_capacity(512);
        let mut n = 0;
        if as_batch {
            body.push(b'[');
        }
        for seq in seqs {
            if n > 0 {
                body.push(b',');
            }
            self.write_tx(seq, &mut body);
            n += 1;
        }
        if as_batch {
            body.push(b']');
        }
        (body, n)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::GeneratorConfig;

    #[test]
    fn ids_are_stamped_per_sequence_number_and_the_pool_wraps() {
        let pool = BodyPool::generate(Generator::new(GeneratorConfig::default()), 3, "bench-r1");
        assert_eq!(pool.len(), 3);
        let (single, n) = pool.body([7].into_iter(), false);
        assert_eq!(n, 1);
        let v: serde_json::Value = serde_json::from_slice(&single).unwrap();
        assert_eq!(v["transaction_id"], "bench-r1-000000000007");
        assert!(v.get("timestamp").is_none());
        assert!(v["amount"].as_f64().unwrap() > 0.0);

        let (batch, n) = pool.body(0..4, true);
        assert_eq!(n, 4);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&batch).unwrap();
        let ids: Vec<&str> = v
            .iter()
            .map(|t| t["transaction_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "bench-r1-000000000000",
                "bench-r1-000000000001",
                "bench-r1-000000000002",
                "bench-r1-000000000003"
            ]
        );
        // Transaction 3 is pool item 0 again, under its own id.
        assert_eq!(v[3]["card_id"], v[0]["card_id"]);
        assert_eq!(v[3]["amount"], v[0]["amount"]);
        assert_ne!(v[1]["transaction_id"], v[0]["transaction_id"]);
    }
}
