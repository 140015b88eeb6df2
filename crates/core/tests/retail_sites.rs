//! Returns counted per store converge whatever order sites apply each other's events in, and
//! a receipt line over-claimed by returns accepted at two stores is reported as the same
//! conflict on every site.

use std::sync::Arc;

use ringfence_core::engine::{Engine, EngineConfig};
use ringfence_core::event::{CardHasher, ParseContext, RawTransaction, Timestamp, Transaction};
use ringfence_core::retail::ReturnConflict;
use ringfence_core::rules::RuleSet;
use serde_json::json;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn parse(v: serde_json::Value) -> Transaction {
    let raw: RawTransaction =
        serde_json::from_value(v).unwrap_or_else(|e| panic!("raw transaction: {e}"));
    let hasher = CardHasher::new(b"retail-sites-test-key");
    let cx = ParseContext {
        card_hasher: &hasher,
        now: Timestamp::from_millis(T0),
        latest: Timestamp::MAX,
        generated_id: &|| "generated".into(),
    };
    Transaction::parse(raw, &cx).unwrap_or_else(|e| panic!("test transaction: {e:?}"))
}

fn engine() -> Engine {
    let rules = RuleSet::from_toml("").unwrap_or_else(|e| panic!("rules: {e:?}"));
    Engine::new(EngineConfig::default(), Arc::new(rules))
}

fn at(secs: i64) -> String {
    Timestamp::from_millis(T0 + secs * 1000).to_rfc3339()
}

fn purchase(quantity: u32) -> Transaction {
    parse(json!({
        "transaction_id": "p1", "timestamp": at(0), "kind": "purchase", "amount": 80.0 * f64::from(quantity),
        "store_id": "store-a", "receipt_id": "r1", "customer_id": "c1",
        "items": [{"sku": "shirt", "price": 80.0, "quantity": quantity}]
    }))
}

fn ret(id: &str, store: &str, secs: i64) -> Transaction {
    parse(json!({
        "transaction_id": id, "timestamp": at(secs), "kind": "return", "amount": 80.0,
        "store_id": store, "receipt_id": "r1", "customer_id": "c1",
        "items": [{"sku": "shirt", "price": 80.0}]
    }))
}

/// Applies `txs` as accepted (not blocked) records, collecting the conflicts they raise.
fn apply_all(e: &mut Engine, txs: &[&Transaction]) -> Vec<ReturnConflict> {
    let mut out = Vec::new();
    for tx in txs {
        e.apply_recorded(tx, false, false);
        out.extend(e.take_conflicts());
    }
    out
}

#[test]
fn two_sites_accepting_the_same_return_converge_and_report_one_identical_conflict() {
    let p = purchase(1);
    let (ra, rb) = (ret("ra", "store-a", 600), ret("rb", "store-b", 601));
    let mut site_a = engine();
    let mut site_b = engine();
    // Each site applies its own return first, then the other's once the link heals.
    let at_a = apply_all(&mut site_a, &[&p, &ra, &rb]);
    let at_b = apply_all(&mut site_b, &[&p, &rb, &ra]);

    assert_eq!(at_a.len(), 1, "site A: {at_a:?}");
    assert_eq!(at_a, at_b, "both sites report the same conflict");
    let c = &at_a[0];
    assert_eq!(
        (c.receipt_id.as_str(), c.sku.as_str(), c.bought),
        ("r1", "shirt", 1)
    );
    let claims: Vec<(&str, &str)> = c
        .claims
        .iter()
        .map(|c| (c.transaction_id.as_str(), c.store_id.as_str()))
        .collect();
    assert_eq!(claims, [("ra", "store-a"), ("rb", "store-b")]);
    assert_eq!(at_a[0].key(), at_b[0].key());

    let receipt = |e: &Engine| {
        e.receipt(
            &ringfence_core::event::EntityId::parse("receipt_id", "r1")
                .unwrap_or_else(|e| panic!("{e:?}")),
        )
        .unwrap_or_else(|| panic!("receipt r1 is held"))
    };
    let (view_a, view_b) = (receipt(&site_a), receipt(&site_b));
    assert_eq!(view_a, view_b, "the per-store counters converged");
    let line = &view_a.lines[0];
    assert_eq!(line.returned, 2);
    assert_eq!(
        line.returned_by_store
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect::<Vec<_>>(),
        [("store-a", 1), ("store-b", 1)]
    );
}

#[test]
fn returns_within_what_was_bought_or_blocked_or_at_one_store_are_no_conflict() {
    // Two units bought, one returned at each store: no conflict; a third claim is one.
    let p = purchase(2);
    let mut e = engine();
    let within = apply_all(
        &mut e,
        &[&p, &ret("ra", "store-a", 600), &ret("rb", "store-b", 601)],
    );
    assert!(within.is_empty(), "{within:?}");
    let over = apply_all(&mut e, &[&ret("rb2", "store-b", 700)]);
    assert_eq!(over.len(), 1);
    assert_eq!(over[0].claims.len(), 3);

    // A blocked claim is not recorded, so it conflicts with nothing.
    let p = purchase(1);
    let mut e = engine();
    apply_all(&mut e, &[&p, &ret("ra", "store-a", 600)]);
    e.apply_recorded(&ret("rb", "store-b", 601), true, true);
    assert!(e.take_conflicts().is_empty());

    // Two accepted claims at the same store are a local duplicate, not a cross-site conflict.
    let mut e = engine();
    let same = apply_all(
        &mut e,
        &[&p, &ret("ra", "store-a", 600), &ret("ra2", "store-a", 601)],
    );
    assert!(same.is_empty(), "{same:?}");
}

#[test]
fn conflicts_nobody_takes_are_bounded_to_the_latest() {
    let mut e = engine();
    for i in 0..1100 {
        let receipt = format!("r{i}");
        let line = |id: String, kind: &str, store: &str, secs: i64| {
            parse(json!({
                "transaction_id": id, "timestamp": at(secs), "kind": kind, "amount": 80.0,
                "store_id": store, "receipt_id": receipt, "customer_id": "c1",
                "items": [{"sku": "shirt", "price": 80.0}]
            }))
        };
        for tx in [
            line(format!("p{i}"), "purchase", "store-a", 0),
            line(format!("a{i}"), "return", "store-a", 60),
            line(format!("b{i}"), "return", "store-b", 61),
        ] {
            e.apply_recorded(&tx, false, false);
        }
    }
    let pending = e.take_conflicts();
    assert_eq!(pending.len(), 1024);
    assert_eq!(pending.first().map(|c| c.receipt_id.as_str()), Some("r76"));
    assert_eq!(pending.last().map(|c| c.receipt_id.as_str()), Some("r1099"));
    assert!(e.take_conflicts().is_empty());
}
