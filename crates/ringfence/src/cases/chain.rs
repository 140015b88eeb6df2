//! The audit trail's hash chain: every row carries `hash = SHA-256(prev_hash || encoding(row))`,
//! so a row changed, removed or slipped in after the fact breaks the chain from that row on,
//! and `ringfence audit verify` finds the first broken row.
//!
//! # Canonical encoding (version 1)
//! The bytes hashed for a row, in this order:
//! - `id`: 8 bytes, big-endian two's complement;
//! - `at` (milliseconds since the epoch): 8 bytes, big-endian two's complement;
//! - `actor`, `role`, `action`, `target`, `detail`, each as its length in bytes (8 bytes,
//!   big-endian) followed by its UTF-8 bytes, exactly as stored (`detail` is the stored JSON
//!   text, not a re-serialisation).
//!
//! `prev_hash` is the previous row's hash (rows in `id` order), or 32 zero bytes for the
//! first row. Length prefixes make the encoding unambiguous (no two different rows encode to
//! the same bytes). PostgreSQL computes the same bytes in SQL (`audit_row_encoding`, with
//! `int8send` for the big-endian integers and `convert_to(.., 'UTF8')` for the text), so rows
//! written there are checked by the same code as rows written by SQLite.
//!
//! # The head
//! A one-row table `audit_chain (last_id, hash)` holds the end of the chain, written in the
//! same transaction as each row. Appends read and update it under the write lock (SQLite's
//! `BEGIN IMMEDIATE`; in PostgreSQL a `SELECT .. FOR UPDATE` on the head row inside the insert
//! trigger), so concurrent appends are serialised and the chain never forks; row ids are
//! `last_id + 1`, in chain order. The verifier also checks that the last row is the
//! head, so cutting rows off the end is caught.
//!
//! # What it proves, and what not
//! Anyone who can only change rows (an UPDATE with the append-only trigger dropped, a DELETE,
//! a forged INSERT with the trigger disabled) is caught. Someone with full write access could
//! recompute every hash after their change and rewrite the head: record the head hash that
//! `ringfence audit verify` prints somewhere else (a ticket, a log shipped off the machine) to
//! anchor the chain against that too.
//!
//! # Rows written before the chain existed
//! They are chained once, in `id` order, when a store of this version first opens the
//! database (SQLite at open, PostgreSQL in migration 4); from then on the chain covers them as
//! if they had been written with it.

use sha2::{Digest, Sha256};

/// The hash before the first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// The fields of a stored audit row that the chain covers, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRow {
    /// The row id.
    pub id: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// Their role.
    pub role: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// The stored JSON text of the particulars.
    pub detail: String,
}

/// The canonical encoding of a row (see the module docs).
pub fn encode(row: &ChainRow) -> Vec<u8> {
    let texts = [&row.actor, &row.role, &row.action, &row.target, &row.detail];
    let mut out = Vec::with_capacity(16 + texts.iter().map(|t| 8 + t.len()).sum::<usize>());
    out.extend_from_slice(&row.id.to_be_bytes());
    out.extend_from_slice(&row.at.to_be_bytes());
    for text in texts {
        out.extend_from_slice(&(text.len() as u64).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// The hash of `row` after a row hashed `prev`.
pub fn link(prev: &[u8; 32], row: &ChainRow) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(encode(row));
    h.finalize().into()
}

/// Lower-case hex of a hash, as reports show it.
pub fn hex(hash: &[u8]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the chain first breaks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Break {
    /// The first row that does not verify (for a cut-off end: the head's `last_id`).
    pub id: i64,
    /// What is wrong there.
    pub problem: String,
}

/// What a walk of the chain found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Rows checked (up to the first break).
    pub rows: u64,
    /// The id of the last row that verified, if any.
    pub last_id: Option<i64>,
    /// Hex of the last verified hash: record it elsewhere to anchor the chain.
    pub head: String,
    /// The first break, when there is one.
    pub broken: Option<Break>,
}

impl VerifyReport {
    /// The report for a person.
    pub fn to_text(&self) -> String {
        match &self.broken {
            None => format!(
                "audit trail intact: {} rows, last id {}, head {}",
                self.rows,
                self.last_id
                    .map_or_else(|| "-".to_owned(), |i| i.to_string()),
                self.head
            ),
            Some(b) => format!(
                "audit trail BROKEN at row {}: {} ({} rows verified before it)",
                b.id, b.problem, self.rows
            ),
        }
    }
}

/// Walks rows in `id` order; feed it every row, then the stored head, then [`finish`].
///
/// [`finish`]: ChainVerifier::finish
#[derive(Debug)]
pub struct ChainVerifier {
    prev: [u8; 32],
    last_id: Option<i64>,
    rows: u64,
    broken: Option<Break>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            prev: GENESIS,
            last_id: None,
            rows: 0,
            broken: None,
        }
    }
}

impl ChainVerifier {
    /// Whether a break was found (later rows need not be read).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Checks the next row (rows must come in increasing `id` order) and its stored hash.
    pub fn row(&mut self, row: &ChainRow, stored: Option<&[u8]>) {
        if self.broken.is_some() {
            return;
        }
        // Ids only need to increase (rows written before the chain may have gaps); a removed
        // row shows as the next row's hash not following from the row before it.
        let problem = if self.last_id.is_some_and(|last| row.id <= last) {
            Some(format!(
                "row ids out of order after row {}",
                self.last_id.unwrap_or_default()
            ))
        } else {
            let want = link(&self.prev, row);
            match stored {
                None => Some("the row has no hash".to_owned()),
                Some(h) if h == want => {
                    self.prev = want;
                    None
                }
                Some(h) => Some(format!(
                    "stored hash {} does not follow from the row's content and the previous \
                     row's hash (expected {}): this row was changed, inserted, or a row before \
                     it was removed",
                    hex(h),
                    hex(&want)
                )),
            }
        };
        match problem {
            Some(problem) => {
                self.broken = Some(Break {
                    id: row.id,
                    problem,
                })
            }
            None => {
                self.last_id = Some(row.id);
                self.rows += 1;
            }
        }
    }

    /// Checks the stored head (`None`: no head row) against the last row, and reports.
    pub fn finish(mut self, head: Option<(i64, Vec<u8>)>) -> VerifyReport {
        if self.broken.is_none() {
            let rows_last = self.last_id.unwrap_or(0);
            let problem = match head {
                None if self.last_id.is_none() => None,
                None => Some((rows_last, "the chain head is missing".to_owned())),
                Some((last, _)) if last != rows_last => Some((
                    last.max(rows_last),
                    format!(
                        "the chain head says the last row is {last}, but the last row is \
                         {rows_last}: rows were removed from the end, or added outside the chain"
                    ),
                )),
                Some((_, hash)) if hash[..] != self.prev => Some((
                    rows_last,
                    "the chain head's hash does not match the last row".to_owned(),
                )),
                Some(_) => None,
            };
            if let Some((id, problem)) = problem {
                self.broken = Some(Break { id, problem });
            }
        }
        VerifyReport {
            rows: self.rows,
            last_id: self.last_id,
            head: hex(&self.prev),
            broken: self.broken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, detail: &str) -> ChainRow {
        ChainRow {
            id,
            at: 1_700_000_000_000 + id,
            actor: "ana".into(),
            role: "analyst".into(),
            action: "case.close".into(),
            target: format!("case:{id}"),
            detail: detail.into(),
        }
    }

    fn chain(rows: &[ChainRow]) -> Vec<[u8; 32]> {
        let mut prev = GENESIS;
        rows.iter()
            .map(|r| {
                prev = link(&prev, r);
                prev
            })
            .collect()
    }

    fn verify(
        rows: &[ChainRow],
        hashes: &[[u8; 32]],
        head: Option<(i64, Vec<u8>)>,
    ) -> VerifyReport {
        let mut v = ChainVerifier::default();
        for (r, h) in rows.iter().zip(hashes) {
            v.row(r, Some(h));
        }
        v.finish(head)
    }

    #[test]
    fn the_encoding_is_length_prefixed_big_endian() {
        let r = ChainRow {
            id: 1,
            at: -2,
            actor: "a".into(),
            role: "".into(),
            action: "é".into(),
            target: "t".into(),
            detail: "{}".into(),
        };
        let mut want = vec![0, 0, 0, 0, 0, 0, 0, 1];
        want.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        for text in ["a", "", "é", "t", "{}"] {
            want.extend((text.len() as u64).to_be_bytes());
            want.extend(text.as_bytes());
        }
        assert_eq!(encode(&r), want);
        // Moving a byte from one field to the next changes the encoding.
        let mut shifted = r.clone();
        shifted.actor = "".into();
        shifted.role = "a".into();
        assert_ne!(encode(&shifted), encode(&r));
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let rows: Vec<_> = (1..=3).map(|i| row(i, "{}")).collect();
        let hashes = chain(&rows);
        let report = verify(&rows, &hashes, Some((3, hashes[2].to_vec())));
        assert_eq!(report.broken, None, "{}", report.to_text());
        assert_eq!((report.rows, report.last_id), (3, Some(3)));
        assert_eq!(report.head, hex(&hashes[2]));
        assert!(verify(&[], &[], None).broken.is_none());
        assert!(verify(&[], &[], Some((0, GENESIS.to_vec())))
            .broken
            .is_none());
    }

    #[test]
    fn a_changed_row_breaks_the_chain_at_that_row() {
        let mut rows: Vec<_> = (1..=3).map(|i| row(i, "{}")).collect();
        let hashes = chain(&rows);
        rows[1].detail = r#"{"verdict":"not_fraud"}"#.into();
        let report = verify(&rows, &hashes, Some((3, hashes[2].to_vec())));
        assert_eq!(report.broken.map(|b| b.id), Some(2));
        assert_eq!(report.rows, 1);
    }

    #[test]
    fn a_removed_row_breaks_the_chain_at_the_next_row() {
        let rows: Vec<_> = (1..=3).map(|i| row(i, "{}")).collect();
        let hashes = chain(&rows);
        let report = verify(
            &[rows[0].clone(), rows[2].clone()],
            &[hashes[0], hashes[2]],
            Some((3, hashes[2].to_vec())),
        );
        assert_eq!(report.broken.map(|b| b.id), Some(3));
    }

    #[test]
    fn a_cut_off_end_is_caught_by_the_head() {
        let rows: Vec<_> = (1..=3).map(|i| row(i, "{}")).collect();
        let hashes = chain(&rows);
        let report = verify(&rows[..2], &hashes[..2], Some((3, hashes[2].to_vec())));
        assert_eq!(report.broken.map(|b| b.id), Some(3));
        let report = verify(&rows, &hashes, None);
        assert!(report.broken.is_some());
    }

    #[test]
    fn a_forged_row_with_a_made_up_hash_is_caught() {
        let rows: Vec<_> = (1..=2).map(|i| row(i, "{}")).collect();
        let mut hashes = chain(&rows);
        let forged = row(3, r#"{"note":"forged"}"#);
        hashes.push([7; 32]);
        let all = [rows[0].clone(), rows[1].clone(), forged];
        let report = verify(&all, &hashes, Some((3, vec![7; 32])));
        assert_eq!(report.broken.map(|b| b.id), Some(3));
    }
}
