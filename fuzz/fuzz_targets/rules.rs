//! Fuzz target: the rule language. The input goes through the whole pipeline three ways (a rule
//! file, a lone condition as the editor checks it, and a condition inside a rule file), and
//! every rule that compiles is evaluated on missing, zero and input-derived feature values and
//! scored by the engine on sample transactions. Any panic (a stack overflow included) is a bug.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringfence_core::engine::{Engine, EngineConfig};
use ringfence_core::event::{CardHasher, ParseContext, RawTransaction, Timestamp, Transaction};
use ringfence_core::features::FeatureValues;
use ringfence_core::rules::{check_expression, RuleSet};

/// Sample transactions the engine scores with the fuzzed rules.
const SAMPLES: [&str; 3] = [
    r#"{"transaction_id":"t1","amount":120.5,"currency":"USD","user_id":"u1","card_id":"c1",
        "merchant":"m1","country":"US","ip":"10.0.0.1","timestamp":"2023-11-14T22:13:20Z"}"#,
    r#"{"transaction_id":"t2","kind":"return","amount":0,"store_id":"s1","user_id":"u1",
        "receipt_id":"r1","timestamp":"2023-11-14T22:14:20Z"}"#,
    r#"{"transaction_id":"t3","amount":999999,"card_id":"c1","device_id":"d9",
        "timestamp":"2023-11-14T22:14:21Z"}"#,
];

fn samples() -> Vec<Transaction> {
    let hasher = CardHasher::new(b"fuzz");
    let cx = ParseContext {
        card_hasher: &hasher,
        now: Timestamp::from_millis(1_700_000_000_000),
        latest: Timestamp::MAX,
        generated_id: &|| "generated".to_owned(),
    };
    SAMPLES
        .iter()
        .filter_map(|json| serde_json::from_str::<RawTransaction>(json).ok())
        .filter_map(|raw| Transaction::parse(raw, &cx).ok())
        .collect()
}

fn exercise(rules: RuleSet, data: &[u8]) {
    let mut zero = FeatureValues::default();
    zero.num.iter_mut().for_each(|v| *v = 0.0);
    zero.text.iter_mut().for_each(|t| *t = Some(""));
    let text = String::from_utf8_lossy(data);
    let mut derived = FeatureValues::default();
    for (i, v) in derived.num.iter_mut().enumerate() {
        let b = data.get(i % data.len().max(1)).copied().unwrap_or(0);
        *v = match b % 5 {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => -f64::from(b),
            3 => 1e308,
            _ => f64::from(b) / 7.0,
        };
    }
    derived.text.iter_mut().for_each(|t| *t = Some(&text));
    for rule in rules.rules() {
        for values in [&FeatureValues::default(), &zero, &derived] {
            let _ = rule.matches(values);
            let _ = rule.render_reason(values);
        }
    }
    let mut engine = Engine::new(EngineConfig::default(), Arc::new(rules));
    for tx in samples() {
        let _ = engine.score(&tx);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    match RuleSet::from_toml(source) {
        Ok(rules) => exercise(rules, data),
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
    let _ = check_expression(source);
    // The same text as the condition of a rule, through TOML's string escapes.
    let quoted = serde_json::to_string(source).unwrap_or_default();
    let file = format!("[[rule]]\nname = \"fuzzed\"\nscore = 10\nreason = \"{{tx.amount}} {{card.count_1m}}\"\nwhen = {quoted}\n");
    match RuleSet::from_toml(&file) {
        Ok(rules) => exercise(rules, data),
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
});
