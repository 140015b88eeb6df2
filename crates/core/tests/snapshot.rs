//! Engine state snapshots: a node that restores another's snapshot taken mid-stream and then
//! applies the rest of the stream must decide every later event exactly as the node that
//! applied the whole stream itself. Damaged snapshots, other format versions and other state
//! configs are refused without touching the state.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ringfence_core::decision::{Action, Decision};
use ringfence_core::engine::{Engine, EngineConfig};
use ringfence_core::event::{CardHasher, ParseContext, RawTransaction, Timestamp, Transaction};
use ringfence_core::rules::RuleSet;
use ringfence_core::snapshot::{SnapshotError, FORMAT_VERSION};

/// The default rules of the server (whose file lives in the binary's crate) plus rules on the
/// label-driven and spike features, so that every part of the state can move a decision.
const RULES: &str = r#"
[[rule]]
name = "card_velocity"
category = "velocity"
when = "card.count_1m >= 3"
score = 60
reason = "card made {card.count_1m} transactions in the minute before this one"

[[rule]]
name = "user_velocity"
category = "velocity"
when = "user.count_1m >= 3"
score = 60
reason = "user made {user.count_1m} transactions in the minute before this one"

[[rule]]
name = "shared_device"
category = "ring"
when = "device.other_users_24h >= 1"
score = 55
reason = "device also used by {device.other_users_24h} other user(s) in the last 24 h"

[[rule]]
name = "large_ring"
category = "ring"
when = "ring.users >= 3"
score = 30
reason = "linked to a group of {ring.users} users and {ring.size} users, cards and devices"

[[rule]]
name = "ring_with_confirmed_fraud"
category = "ring"
when = "ring.has_fraud"
score = 70
reason = "linked group of {ring.size} contains confirmed fraud"

[[rule]]
name = "card_testing"
category = "card_testing"
when = "card.small_count_10m >= 3 && tx.is_small"
score = 75
reason = "{card.small_count_10m} small transactions on this card in 10 minutes, now {tx.amount}"

[[rule]]
name = "new_device_high_amount"
category = "account_takeover"
when = "user.new_device && user.tx_count >= 1 && user.amount_ratio >= 4"
score = 60
reason = "new device, amount {tx.amount} vs mean {user.amount_mean}"

[[rule]]
name = "impossible_travel"
category = "travel"
when = "user.speed_kmh > 900 && user.km_from_last > 300"
score = 70
reason = "{user.km_from_last} km from the user's previous transaction at {user.speed_kmh} km/h"

[[rule]]
name = "amount_far_above_profile"
category = "profile"
when = "user.tx_count >= 5 && user.amount_zscore > 4 && tx.amount > 100"
score = 40
reason = "amount {tx.amount} is {user.amount_zscore} deviations above the user's mean"

[[rule]]
name = "very_high_amount"
category = "amount"
when = "tx.amount >= 10000"
score = 40
reason = "amount {tx.amount} is at or above 10000"

[[rule]]
name = "ip_velocity"
category = "velocity"
when = "ip.count_10m >= 20"
score = 30
reason = "{ip.count_10m} transactions from this IP in 10 minutes"

[[rule]]
name = "terminal_fraud"
category = "labels"
when = "terminal.fraud_rate_7d > 0.02"
score = 35
reason = "terminal fraud rate {terminal.fraud_rate_7d} over 7 days"

[[rule]]
name = "merchant_fraud"
category = "labels"
when = "merchant.fraud_rate_30d > 0.02"
score = 20
reason = "merchant fraud rate {merchant.fraud_rate_30d} over 30 days"

[[rule]]
name = "compromised_card"
category = "labels"
when = "card.fraud_labels >= 1"
score = 50
reason = "card has {card.fraud_labels} confirmed frauds"

[[rule]]
name = "spiky_card"
category = "profile"
when = "card.spikes_7d >= 2"
score = 25
reason = "{card.spikes_7d} spending spikes this week"

[[rule]]
name = "shadow_everything"
when = "tx.amount >= 0"
score = 1
mode = "shadow"
"#;

const START_MS: i64 = 1_700_000_000_000;
const DAY_MS: i64 = 86_400_000;

/// A short idle TTL and label delay so that, within a two-week stream, entities really expire
/// and labels really reach features on both sides of the snapshot.
fn config() -> EngineConfig {
    EngineConfig {
        idle_ttl_ms: 4 * DAY_MS,
        label_delay_days: 1,
        ..EngineConfig::default()
    }
}

fn engine(config: EngineConfig) -> Engine {
    let rules = RuleSet::from_toml(RULES).unwrap_or_else(|e| panic!("rules: {e:?}"));
    Engine::new(config, Arc::new(rules))
}

/// One step of the stream.
enum Event {
    /// A transaction to score.
    Tx(Box<Transaction>),
    /// A label on the transaction at this index of the stream: (index, fraud, previous).
    Label(usize, bool, Option<bool>),
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn parse(raw: RawTransaction) -> Transaction {
    let hasher = CardHasher::new(b"snapshot-test");
    let cx = ParseContext {
        card_hasher: &hasher,
        now: Timestamp::from_millis(START_MS),
        latest: Timestamp::MAX,
        generated_id: &|| "generated".into(),
    };
    Transaction::parse(raw, &cx).unwrap_or_else(|e| panic!("test transaction: {e:?}"))
}

fn amount(cents: u64) -> Option<serde_json::Number> {
    serde_json::Number::from_f64(cents as f64 / 100.0)
}

/// A varied deterministic stream over about two weeks: a user population that turns over
/// (so idle entities are swept), shared devices forming rings, card-testing bursts of small
/// amounts, spending spikes, impossible travel, a few late events, purchases and refunds,
/// and fraud labels (some withdrawn) arriving a while after their transactions.
fn stream(transactions: usize) -> Vec<Event> {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut events = Vec::with_capacity(transactions * 11 / 10);
    let mut tx_at: Vec<usize> = Vec::new(); // stream index of each transaction
    let mut labelled: Vec<usize> = Vec::new();
    let mut now = START_MS;
    let mut burst: Option<(String, u32)> = None;
    let cities = [(48.8566, 2.3522), (40.7128, -74.006), (35.6762, 139.6503)];
    for n in 0..transactions {
        // Card-testing bursts come seconds apart, ordinary traffic every minute or two.
        now += if burst.is_some() {
            3_000 + rng.below(12_000) as i64
        } else {
            20_000 + rng.below(160_000) as i64
        };
        let day = (now - START_MS) / DAY_MS;
        // Each day brings new users; a user stays active for about three days.
        let user = day * 12 + rng.below(36) as i64;
        let mut raw = RawTransaction {
            transaction_id: Some(format!("t{n}")),
            user_id: Some(format!("u{user}")),
            card_id: Some(format!("c{user}-{}", rng.below(2))),
            device_id: Some(format!("d{user}")),
            ip: Some(format!("10.0.{}.{}", user % 7, rng.below(12))),
            merchant: Some(format!("m{}", rng.below(25))),
            merchant_category: Some(format!("mcc{}", rng.below(5))),
            terminal_id: Some(format!("T{}", rng.below(30))),
            amount: amount(500 + rng.below(15_000)),
            ..RawTransaction::default()
        };
        let mut at = now;
        match rng.below(100) {
            // Ring: one user in ten sometimes uses one of a handful of shared devices.
            0..=29 if user % 10 == 0 => {
                raw.device_id = Some(format!("ring-device-{}", rng.below(4)));
            }
            // Card testing: a burst of small amounts on one card, a minute or so apart.
            8..=10 => burst = Some((format!("tested-{n}"), 6)),
            // Spending spike.
            11..=13 => raw.amount = amount(40_000 + rng.below(200_000)),
            // A very large amount.
            14 => raw.amount = amount(1_200_000),
            // Card-only (no user): the card is the account.
            15..=18 => {
                raw.user_id = None;
                raw.device_id = None;
            }
            // A late event, up to two hours behind.
            19..=21 => at = now - rng.below(2 * 3_600_000) as i64,
            // Refunds and purchases do not feed spending profiles.
            22..=24 => raw.kind = Some(if rng.chance(50) { "refund" } else { "purchase" }.into()),
            _ => {}
        }
        if rng.chance(30) {
            let (lat, lon) = cities[(user as usize + usize::from(rng.chance(10))) % cities.len()];
            raw.lat = Some(lat);
            raw.lon = Some(lon);
        }
        if let Some((card, left)) = burst.as_mut() {
            // A tester's own card and device, no account.
            raw.card_id = Some(card.clone());
            raw.device_id = Some(format!("tester-device-{card}"));
            // Testers favour one weak online shop and its payment terminal.
            raw.merchant = Some("m0".into());
            raw.terminal_id = Some("T0".into());
            raw.user_id = None;
            raw.amount = amount(50 + rng.below(150));
            *left -= 1;
            if *left == 0 {
                burst = None;
            }
        }
        raw.timestamp = Some(Timestamp::from_millis(at).to_rfc3339());
        tx_at.push(events.len());
        events.push(Event::Tx(Box::new(parse(raw))));

        // Labels arrive for transactions from hours to two days back, mostly on ring and
        // card-testing traffic; some are withdrawn later.
        if n > 200 && rng.chance(10) {
            let back = 20 + rng.below(800) as usize;
            let target = tx_at[n.saturating_sub(back)];
            let Event::Tx(tx) = &events[target] else {
                unreachable!("tx_at holds transactions only");
            };
            let suspect = tx
                .device_id
                .as_ref()
                .is_some_and(|d| d.as_str().starts_with("ring"))
                || tx
                    .card_id
                    .as_ref()
                    .is_some_and(|c| c.as_str().starts_with("tested"));
            if suspect || rng.chance(5) {
                events.push(Event::Label(target, true, None));
                labelled.push(target);
            }
        }
        if !labelled.is_empty() && rng.below(1000) < 3 {
            let i = rng.below(labelled.len() as u64) as usize;
            events.push(Event::Label(labelled.swap_remove(i), false, Some(true)));
        }
    }
    events
}

/// What one event produced: the decision and the exact bits of every numeric feature.
type Outcome = (Decision, Vec<u64>, Vec<Option<String>>);

fn apply(engine: &mut Engine, events: &[Event], i: usize) -> Option<Outcome> {
    match &events[i] {
        Event::Tx(tx) => {
            let s = engine.score(tx);
            let bits = s.features.num.iter().map(|v| v.to_bits()).collect();
            let text = s
                .features
                .text
                .iter()
                .map(|t| t.map(str::to_owned))
                .collect();
            Some((s.decision, bits, text))
        }
        Event::Label(target, fraud, previous) => {
            let Event::Tx(tx) = &events[*target] else {
                panic!("label {i} points at a label");
            };
            engine.apply_label(tx, *fraud, *previous);
            None
        }
    }
}

fn snapshot(engine: &Engine) -> Vec<u8> {
    engine
        .snapshot()
        .unwrap_or_else(|e| panic!("snapshot: {e}"))
}

/// Asserts two snapshots are byte for byte equal, naming the first difference instead of
/// printing half a megabyte.
fn assert_same(a: &[u8], b: &[u8], what: &str) {
    let first_difference = a.iter().zip(b).position(|(x, y)| x != y);
    assert!(
        a == b,
        "{what}: {} vs {} bytes, first difference at {first_difference:?}",
        a.len(),
        b.len()
    );
}

#[test]
fn a_restored_engine_decides_the_rest_of_the_stream_exactly_like_the_original() {
    let events = stream(12_000);
    let middle = events.len() / 2;
    let mut original = engine(config());
    for i in 0..middle {
        apply(&mut original, &events, i);
    }
    let bytes = snapshot(&original);

    // The restoring node had state of its own, which the snapshot replaces entirely.
    let mut restored = engine(config());
    for i in middle..middle + 100 {
        apply(&mut restored, &events, i);
    }
    restored
        .restore(&bytes)
        .unwrap_or_else(|e| panic!("restore: {e}"));
    assert_eq!(restored.state_counts(), original.state_counts());
    assert_eq!(restored.watermark(), original.watermark());
    assert!(original.state_counts().terminals > 0 && original.state_counts().graph_nodes > 0);

    let mut compared = 0;
    let mut rules_hit: BTreeMap<String, usize> = BTreeMap::new();
    let mut actions: HashSet<Action> = HashSet::new();
    let mut swept = 0;
    for i in middle..events.len() {
        let held = original.state_counts().cards;
        let a = apply(&mut original, &events, i);
        let b = apply(&mut restored, &events, i);
        // Only the idle sweep ever forgets an entity.
        swept += held.saturating_sub(original.state_counts().cards);
        assert_eq!(a, b, "event {i} after a snapshot at event {middle}");
        if let Some((decision, _, _)) = a {
            compared += 1;
            actions.insert(decision.decision);
            for r in &decision.reasons {
                *rules_hit.entry(r.rule.clone()).or_default() += 1;
            }
        }
    }
    assert_same(
        &snapshot(&original),
        &snapshot(&restored),
        "the final states are identical",
    );

    // The comparison covered what the state is made of, not a stream of clean approvals.
    eprintln!("after the snapshot: {compared} decisions, rules hit: {rules_hit:?}");
    assert!(compared > 5000);
    for rule in [
        "card_velocity",
        "shared_device",
        "large_ring",
        "ring_with_confirmed_fraud",
        "card_testing",
        "terminal_fraud",
        "merchant_fraud",
        "compromised_card",
        "spiky_card",
        "impossible_travel",
        "escalation",
    ] {
        assert!(rules_hit.contains_key(rule), "no decision used {rule}");
    }
    assert!(actions.contains(&Action::Block) && actions.contains(&Action::Approve));
    // The stream spans more than the idle TTL: entities were swept after the snapshot.
    let last = original.watermark().map_or(0, |t| t.millis());
    assert!(last - START_MS > 8 * DAY_MS, "stream spans over 8 days");
    assert!(swept > 0, "no idle card was swept after the snapshot");
}

#[test]
fn snapshot_restore_snapshot_gives_identical_bytes() {
    let events = stream(3_000);
    let mut original = engine(config());
    for i in 0..events.len() {
        apply(&mut original, &events, i);
    }
    let first = snapshot(&original);
    assert_same(&first, &snapshot(&original), "snapshots are deterministic");
    let mut restored = engine(config());
    restored
        .restore(&first)
        .unwrap_or_else(|e| panic!("restore: {e}"));
    assert_same(
        &snapshot(&restored),
        &first,
        "restored, then snapshot again",
    );

    let empty = snapshot(&engine(config()));
    let mut fresh = engine(config());
    fresh
        .restore(&empty)
        .unwrap_or_else(|e| panic!("restore empty: {e}"));
    assert_same(&snapshot(&fresh), &empty, "an empty state round-trips too");
}

/// A populated engine to restore into, and its snapshot to check it was left alone.
fn populated() -> (Engine, Vec<u8>) {
    let events = stream(500);
    let mut e = engine(config());
    for i in 0..events.len() {
        apply(&mut e, &events, i);
    }
    let before = snapshot(&e);
    (e, before)
}

#[test]
fn restore_refuses_a_snapshot_taken_with_another_state_config() {
    let events = stream(300);
    let base = config();
    let others = [
        (
            "idle_ttl_ms",
            EngineConfig {
                idle_ttl_ms: base.idle_ttl_ms + 1,
                ..base
            },
        ),
        (
            "small_amount",
            EngineConfig {
                small_amount: 5.0,
                ..base
            },
        ),
        (
            "label_delay_days",
            EngineConfig {
                label_delay_days: 7,
                ..base
            },
        ),
        ("alert_window_ms", {
            let mut c = base;
            c.escalation.window_ms *= 2;
            c
        }),
    ];
    for (field, other) in others {
        let mut theirs = engine(other);
        for i in 0..events.len() {
            apply(&mut theirs, &events, i);
        }
        let (mut ours, before) = populated();
        let err = ours
            .restore(&snapshot(&theirs))
            .expect_err("another config is refused");
        assert!(
            matches!(err, SnapshotError::ConfigMismatch { .. }),
            "{field}: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(field), "{field} not named in: {message}");
        assert_same(
            &snapshot(&ours),
            &before,
            &format!("{field}: state untouched"),
        );
    }

    // Settings outside the state (thresholds, the ladder's steps) do not matter.
    let mut different_thresholds = base;
    different_thresholds.thresholds.review = 10.0;
    different_thresholds.escalation.review_over += 1;
    let mut theirs = engine(different_thresholds);
    for i in 0..events.len() {
        apply(&mut theirs, &events, i);
    }
    let (mut ours, _) = populated();
    ours.restore(&snapshot(&theirs))
        .unwrap_or_else(|e| panic!("thresholds are not state: {e}"));
}

#[test]
fn restore_refuses_damaged_bytes_and_other_versions_without_touching_the_state() {
    let (source, _) = populated();
    let good = snapshot(&source);
    let (mut target, before) = populated();

    let mut damaged: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("json".into(), br#"{"cards":{}}"#.to_vec()),
        ("header only".into(), good[..12].to_vec()),
        ("no checksum".into(), good[..good.len() - 8].to_vec()),
    ];
    for len in [13, 20, good.len() / 2, good.len() - 1] {
        damaged.push((format!("truncated to {len}"), good[..len].to_vec()));
    }
    let mut longer = good.clone();
    longer.push(0);
    damaged.push(("one byte appended".into(), longer));
    let mut rng = Rng(99);
    for _ in 0..40 {
        let mut b = good.clone();
        let at = 12 + rng.below(good.len() as u64 - 12) as usize;
        b[at] ^= 1 << rng.below(8);
        damaged.push((format!("bit flipped at {at}"), b));
    }
    for (what, bytes) in &damaged {
        let err = target.restore(bytes).expect_err(what);
        assert!(
            matches!(
                err,
                SnapshotError::NotASnapshot | SnapshotError::Checksum { .. }
            ),
            "{what}: {err:?}"
        );
        assert_same(
            &snapshot(&target),
            &before,
            &format!("{what}: state untouched"),
        );
    }

    let mut future = good.clone();
    future[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = target.restore(&future).expect_err("another version");
    assert!(
        matches!(err, SnapshotError::Version { found, expected }
            if found == FORMAT_VERSION + 1 && expected == FORMAT_VERSION),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains(&format!("version {}", FORMAT_VERSION + 1)));
    assert_same(
        &snapshot(&target),
        &before,
        "other version: state untouched",
    );

    target
        .restore(&good)
        .unwrap_or_else(|e| panic!("the undamaged one restores: {e}"));
    assert_same(&snapshot(&target), &good, "restored from the undamaged one");
}

/// Puts entity number `i` of one kind on a transaction.
type SetId = fn(&mut RawTransaction, i64);

/// Not a check: prints what a snapshot costs per entity, for the record
/// (`cargo test -p ringfence-core --test snapshot -- --nocapture`).
#[test]
fn snapshot_size_per_entity() {
    let empty = snapshot(&engine(config())).len();
    eprintln!("empty state: {empty} bytes");
    // One kind at a time: 1000 entities with three transactions each, a minute apart.
    let kinds: [(&str, SetId); 6] = [
        ("card", |r, i| r.card_id = Some(format!("card-{i}"))),
        ("user", |r, i| r.user_id = Some(format!("user-{i}"))),
        ("device", |r, i| r.device_id = Some(format!("device-{i}"))),
        ("ip", |r, i| {
            r.ip = Some(format!("10.1.{}.{}", i / 256, i % 256))
        }),
        ("merchant", |r, i| {
            r.merchant = Some(format!("merchant-{i}"))
        }),
        ("terminal", |r, i| {
            r.terminal_id = Some(format!("terminal-{i}"))
        }),
    ];
    for (kind, set) in kinds {
        let mut e = engine(config());
        let n = 1000;
        for i in 0..n {
            for j in 0..3 {
                let mut raw = RawTransaction {
                    amount: amount(1234 + 100 * j),
                    timestamp: Some(
                        Timestamp::from_millis(START_MS + i * 1000 + j as i64 * 60_000)
                            .to_rfc3339(),
                    ),
                    ..RawTransaction::default()
                };
                set(&mut raw, i);
                e.score(&parse(raw));
            }
        }
        let counts = e.state_counts();
        let held = counts.cards
            + counts.users
            + counts.devices
            + counts.ips
            + counts.merchants
            + counts.terminals;
        let size = snapshot(&e).len();
        eprintln!(
            "{kind}: {held} held, {:.0} bytes each",
            (size - empty) as f64 / held as f64
        );
    }

    let events = stream(12_000);
    let mut e = engine(config());
    for i in 0..events.len() {
        apply(&mut e, &events, i);
    }
    let c = e.state_counts();
    let size = snapshot(&e).len();
    let entities = c.cards + c.users + c.devices + c.ips + c.merchants + c.terminals;
    eprintln!(
        "mixed stream: {size} bytes for {entities} entities and {} graph nodes ({c:?}): \
         {:.0} bytes per entity",
        c.graph_nodes,
        size as f64 / entities as f64
    );
}

#[test]
fn a_copy_encodes_to_the_snapshot_of_the_moment_it_was_taken() {
    let (mut engine, at_copy) = populated();
    let copy = engine.state_copy();
    // The engine moves on; the copy does not.
    let events = stream(300);
    for i in 0..events.len() {
        apply(&mut engine, &events, i);
    }
    let later = snapshot(&engine);
    let encoded = copy.encode().expect("encode");
    assert_same(&encoded, &at_copy, "copy vs snapshot at the copy");
    assert_ne!(encoded, later, "the engine changed after the copy");
}
