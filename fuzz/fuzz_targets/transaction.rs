//! Fuzz target: a request body through the transaction parser, as `POST /v1/transactions` and
//! `POST /v1/transactions/batch` read it (JSON -> `RawTransaction` -> `Transaction::parse`),
//! including the JSON error bodies the server would answer with. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringfence::http::transactions::{batch_items, parse_raw};
use ringfence_core::event::{CardHasher, ParseContext, Timestamp, Transaction};

/// The server's largest allowed clock skew for live traffic, as in `host::parse`.
const SKEW_MS: i64 = 5 * 60 * 1000;

fn parse_one(hasher: &CardHasher, bytes: &[u8]) {
    let raw = match parse_raw(bytes) {
        Ok(raw) => raw,
        Err(e) => {
            // The error body is built from untrusted text: it must not panic either.
            let _ = e.body();
            return;
        }
    };
    let now = Timestamp::from_millis(1_700_000_000_000);
    let cx = ParseContext {
        card_hasher: hasher,
        now,
        latest: Timestamp::from_millis(now.millis() + SKEW_MS),
        generated_id: &|| "generated".to_owned(),
    };
    match Transaction::parse(raw, &cx) {
        Ok(tx) => {
            // Serialising what was parsed (as records and replies do) must work too.
            let _ = serde_json::to_string(&tx);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|body: &[u8]| {
    let hasher = CardHasher::new(b"fuzz");
    parse_one(&hasher, body);
    match batch_items(body) {
        Ok((_, items)) => {
            for item in items {
                parse_one(&hasher, item);
            }
        }
        Err(e) => {
            let _ = e.body();
        }
    }
});
