//! The engine: one transaction in, one decision out, state updated.
//!
//! [`Engine::score`] reads the features of a transaction from the state before it, runs the
//! rules, turns rule weights into a 0..100 score and an action (thresholds, forced actions,
//! then the account's escalation ladder), and only then applies the transaction to the state.
//! [`Engine::apply_recorded`] re-applies a stored transaction with its stored alert flag (and
//! whether it was blocked), which is how a node rebuilds its state on start without
//! re-deciding history under today's rules.

use std::sync::Arc;

use crate::decision::{
    Action, Decision, EscalationPolicy, Factor, ModelPolicy, Reason, Thresholds,
};
use crate::event::{EntityId, Timestamp, Transaction, TxKind};
use crate::features::{self, FeatureValues, Num};
use crate::model::Model;
use crate::rules::{RuleMode, RuleSet};
use crate::snapshot::{self, SnapshotError};
use crate::state::{EntityKind, EntityState, StateConfig, StateCounts, TxKeys};

/// Everything that shapes decisions besides the rules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EngineConfig {
    /// Score thresholds.
    pub thresholds: Thresholds,
    /// The escalation ladder.
    pub escalation: EscalationPolicy,
    /// Amounts below this count as small (card testing).
    pub small_amount: f64,
    /// Idle entities are forgotten after this long (milliseconds).
    pub idle_ttl_ms: i64,
    /// Days after a transaction until its label is treated as known (label-driven features).
    pub label_delay_days: i64,
    /// How the model's probability joins the score.
    pub model: ModelPolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let s = StateConfig::default();
        EngineConfig {
            thresholds: Thresholds::default(),
            escalation: EscalationPolicy::default(),
            small_amount: s.small_amount,
            idle_ttl_ms: s.idle_ttl_ms,
            label_delay_days: s.label_delay_days,
            model: ModelPolicy::default(),
        }
    }
}

/// The models an engine scores with: a champion that counts and a challenger in shadow.
#[derive(Clone, Debug, Default)]
pub struct Models {
    /// Its probability joins the score.
    pub champion: Option<Arc<Model>>,
    /// Scored and recorded only.
    pub challenger: Option<Arc<Model>>,
}

/// The deterministic scoring engine. Not thread-safe by design: one owner applies events in
/// one order (see the binary's `EngineHost`), which is what makes replay exact.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    rules: Arc<RuleSet>,
    rule_hits: Vec<u64>,
    models: Models,
    state: EntityState,
}

/// A decision together with the feature values it was made from.
#[derive(Debug)]
pub struct Scored<'a> {
    /// The decision.
    pub decision: Decision,
    /// Features read from the state before the transaction.
    pub features: FeatureValues<'a>,
    /// Indices (into the rule set) of the rules that matched, active or shadow.
    pub matched: Vec<usize>,
}

impl Engine {
    /// A fresh engine with empty state.
    pub fn new(config: EngineConfig, rules: Arc<RuleSet>) -> Self {
        let state = EntityState::new(StateConfig {
            small_amount: config.small_amount,
            idle_ttl_ms: config.idle_ttl_ms,
            alert_window_ms: config.escalation.window_ms,
            label_delay_days: config.label_delay_days,
        });
        Engine {
            rule_hits: vec![0; rules.len()],
            config,
            rules,
            models: Models::default(),
            state,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The active rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Replaces the rule set. A rule keeps its hit count when the old set had a rule of the
    /// same name, condition and mode (editing one rule must not wipe what the others showed);
    /// any other rule starts from zero, so a count always belongs to one condition in one mode.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        let old: std::collections::HashMap<&str, usize> = self
            .rules
            .rules()
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        let hits = rules
            .rules()
            .iter()
            .map(|r| match old.get(r.name.as_str()) {
                Some(&i) => {
                    let was = &self.rules.rules()[i];
                    if was.when == r.when && was.mode == r.mode {
                        self.rule_hits.get(i).copied().unwrap_or(0)
                    } else {
                        0
                    }
                }
                None => 0,
            })
            .collect();
        self.rule_hits = hits;
        self.rules = rules;
    }

    /// Replaces the models.
    pub fn set_models(&mut self, models: Models) {
        self.models = models;
    }

    /// The models in use.
    pub fn models(&self) -> &Models {
        &self.models
    }

    /// How often each rule of the current set matched (same order as the rules).
    pub fn rule_hits(&self) -> &[u64] {
        &self.rule_hits
    }

    /// Decides `tx` and applies it to the state.
    pub fn score<'a>(&mut self, tx: &'a Transaction) -> Scored<'a> {
        let keys = TxKeys::of(tx);
        let scored = self.decide(tx, &keys);
        for &i in &scored.matched {
            self.rule_hits[i] += 1;
        }
        let blocked = scored.decision.decision == Action::Block;
        self.state.apply(tx, &keys, scored.decision.alert, blocked);
        scored
    }

    /// Decides `tx` without changing any state (dry runs, rule previews).
    pub fn evaluate<'a>(&self, tx: &'a Transaction) -> Scored<'a> {
        let keys = TxKeys::of(tx);
        self.decide(tx, &keys)
    }

    fn decide<'a>(&self, tx: &'a Transaction, keys: &TxKeys) -> Scored<'a> {
        let mut f = FeatureValues::default();
        self.state.features(tx, keys, &mut f);

        let mut reasons = Vec::new();
        let mut shadow = Vec::new();
        let mut weight = 0.0_f64;
        let mut forced = Action::Approve;
        let mut matched = Vec::new();
        for (i, rule) in self.rules.rules().iter().enumerate() {
            if !rule.matches(&f) {
                continue;
            }
            matched.push(i);
            let reason = Reason {
                rule: rule.name.clone(),
                category: rule.category.clone(),
                detail: rule.render_reason(&f),
                weight: rule.weight,
                action: rule.action,
                factors: Vec::new(),
            };
            match rule.mode {
                RuleMode::Shadow => shadow.push(reason),
                RuleMode::Active => {
                    weight += rule.weight;
                    if let Some(a) = rule.action {
                        forced = forced.max(a);
                    }
                    reasons.push(reason);
                }
            }
        }
        let (mut model_score, mut anomaly_score, mut challenger_score) = (None, None, None);
        if let Some(model) = &self.models.champion {
            let p = model.predict(&f);
            let policy = &self.config.model;
            let points = policy.points * p;
            weight += points;
            model_score = Some(p);
            anomaly_score = model.anomaly().map(|a| a.score(&f));
            if points >= policy.min_reason_points {
                reasons.push(model_reason(model, &f, p, points, policy.top_factors));
            }
        }
        if let Some(challenger) = &self.models.challenger {
            challenger_score = Some(challenger.predict(&f));
        }
        let score = weight.clamp(0.0, 100.0);
        let mut action = self.config.thresholds.action_for(score).max(forced);
        let alert = action > Action::Approve;

        let account = keys.account().and_then(|(kind, _)| match kind {
            EntityKind::User => tx.user_id.as_ref(),
            _ => tx.card_id.as_ref(),
        });
        let alerts = f.get(Num::AccountAlerts);
        if !alerts.is_nan() {
            let ladder = &self.config.escalation;
            let floor = ladder.floor(alerts as u32);
            if floor > action {
                action = floor;
                reasons.push(Reason {
                    rule: "escalation".into(),
                    category: "escalation".into(),
                    detail: format!(
                        "account {} has {} alerts in the last {}; ladder: more than {} review, more than {} challenge, more than {} block",
                        account.map_or("", EntityId::as_str),
                        alerts,
                        human_duration(ladder.window_ms),
                        ladder.review_over,
                        ladder.challenge_over,
                        ladder.block_over
                    ),
                    weight: 0.0,
                    action: Some(floor),
                    factors: Vec::new(),
                });
            }
        }
        reasons.sort_by(|a, b| b.weight.total_cmp(&a.weight));

        Scored {
            decision: Decision {
                transaction_id: tx.transaction_id.as_str().to_owned(),
                decision: action,
                score,
                reasons,
                shadow,
                alert,
                account: account.map(|a| a.as_str().to_owned()),
                model_score,
                challenger_score,
                anomaly_score,
            },
            features: f,
            matched,
        }
    }

    /// Applies a stored transaction with the alert flag its stored decision carried and
    /// whether it was blocked.
    pub fn apply_recorded(&mut self, tx: &Transaction, alert: bool, blocked: bool) {
        let keys = TxKeys::of(tx);
        self.state.apply(tx, &keys, alert, blocked);
    }

    /// Receipt lines put in conflict by the transactions applied since the last call (see
    /// [`crate::retail`]): two stores accepted returns of the same units.
    pub fn take_conflicts(&mut self) -> Vec<crate::retail::ReturnConflict> {
        self.state.retail_mut().take_conflicts()
    }

    /// A receipt as the state holds it, with its returns per store.
    pub fn receipt(&self, receipt_id: &EntityId) -> Option<crate::retail::ReceiptView> {
        self.state.retail().receipt(receipt_id)
    }

    /// Applies a label on `tx`: `fraud` is the new verdict, `previous` the verdict it replaces
    /// (if any). Confirmed fraud flags the transaction's user, card and device in the link
    /// graph; a later "not fraud" withdraws that flag.
    pub fn apply_label(&mut self, tx: &Transaction, fraud: bool, previous: Option<bool>) {
        let keys = TxKeys::of(tx);
        match (previous, fraud) {
            (Some(true), true) | (Some(false) | None, false) => {}
            (Some(false) | None, true) => self.state.label(tx, &keys, true),
            (Some(true), false) => self.state.label(tx, &keys, false),
        }
    }

    /// Current features of one entity as of `at` (its windows, profile, links), by name.
    /// `None` if the engine holds no state for it.
    pub fn entity_features(
        &self,
        kind: EntityKind,
        id: &EntityId,
        at: Timestamp,
    ) -> Option<Vec<(&'static str, serde_json::Value)>> {
        let key = crate::state::entity_key(kind, id.as_str());
        if !self.state.contains(kind, key) {
            return None;
        }
        let mut probe = Transaction {
            transaction_id: id.clone(),
            timestamp: at,
            kind: TxKind::Payment,
            amount: 0.0,
            currency: None,
            user_id: None,
            card_id: None,
            card_token: None,
            device_id: None,
            ip: None,
            email: None,
            merchant: None,
            merchant_category: None,
            terminal_id: None,
            store_id: None,
            country: None,
            location: None,
            retail: None,
        };
        let slot = match kind {
            EntityKind::Card => &mut probe.card_id,
            EntityKind::User => &mut probe.user_id,
            EntityKind::Device => &mut probe.device_id,
            EntityKind::Ip => &mut probe.ip,
            EntityKind::Merchant => &mut probe.merchant,
            EntityKind::Terminal => &mut probe.terminal_id,
        };
        *slot = Some(id.clone());
        let keys = TxKeys::of(&probe);
        let mut f = FeatureValues::default();
        self.state.features(&probe, &keys, &mut f);
        let prefix = format!("{}.", kind.as_str());
        // Amount-relative features (z-score, ratio, new device...) describe a transaction,
        // not an entity: leave them out of the profile.
        let relative = [
            "amount_zscore",
            "amount_ratio",
            "km_from_last",
            "speed_kmh",
            "new_device",
            "new_merchant",
        ];
        let mut out: Vec<_> = features::NUM_FEATURES
            .iter()
            .filter(|d| d.name.starts_with(&prefix))
            .filter(|d| !relative.iter().any(|r| d.name.ends_with(r)))
            .map(|d| (d.name, f.json_value(d)))
            .collect();
        if matches!(
            kind,
            EntityKind::Card | EntityKind::User | EntityKind::Device
        ) {
            for n in [Num::RingSize, Num::RingUsers, Num::RingHasFraud] {
                let d = &features::NUM_FEATURES[n as usize];
                out.push((d.name, f.json_value(d)));
            }
        }
        Some(out)
    }

    /// Newest event time applied so far.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.state.watermark().map(Timestamp::from_millis)
    }

    /// How much state the engine holds.
    pub fn state_counts(&self) -> StateCounts {
        self.state.counts()
    }

    /// The whole entity state (with the state config it depends on) as bytes, for another
    /// node to [`restore`](Engine::restore). Rules, models and rule hit counts are not
    /// included: they are configuration, not history. The caller records the log position
    /// the snapshot was taken at next to it.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        snapshot::encode(&self.state)
    }

    /// A copy of the entity state to encode later, elsewhere ([`StateCopy::encode`]): the
    /// engine is needed only for the copy.
    pub fn state_copy(&self) -> snapshot::StateCopy {
        snapshot::StateCopy(self.state.clone())
    }

    /// Replaces the entity state with a snapshot's, after which this engine decides every
    /// following event exactly as the engine that took the snapshot would. A snapshot of
    /// another format version, taken with another state config, or damaged is refused and
    /// the state is left as it was. Rules, models and rule hit counts are kept.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.state = snapshot::decode(bytes, self.state.config())?;
        Ok(())
    }
}

/// The model's reason: its probability and the features that pushed it up most (fast path
/// attribution; exact TreeSHAP is for on-demand explanations).
///
/// Attributions are computed here, only for the decisions that list the model as a reason
/// (see [`ModelPolicy::min_reason_points`]): scoring walks the trees once for the probability,
/// and this walks them again with the attributions. Most traffic is far below the threshold,
/// so one walk per transaction is the common case.
fn model_reason(model: &Model, f: &FeatureValues<'_>, p: f64, points: f64, top: usize) -> Reason {
    let names = model.feature_names();
    // A model's features are distinct catalog features, so they fit in a catalog-sized buffer.
    let mut buf = [0.0; features::NUM_COUNT];
    let contrib = &mut buf[..names.len()];
    let again = model.predict_with_path(f, contrib);
    debug_assert_eq!(again.to_bits(), p.to_bits(), "one walk, one probability");
    let mut order: Vec<usize> = (0..names.len()).filter(|&i| contrib[i] > 0.0).collect();
    order.sort_by(|&a, &b| contrib[b].total_cmp(&contrib[a]));
    let factors: Vec<Factor> = order
        .into_iter()
        .take(top)
        .map(|i| {
            let def = model.features()[i];
            let raw = f.num[def.index];
            Factor {
                feature: names[i].clone(),
                value: Some(raw).filter(|v| !v.is_nan()),
                contribution: contrib[i],
                says: def.describe(raw),
            }
        })
        .collect();
    let listed: Vec<&str> = factors.iter().map(|x| x.says.as_str()).collect();
    Reason {
        rule: "model".into(),
        category: "model".into(),
        detail: if listed.is_empty() {
            format!("model fraud probability {p:.2}")
        } else {
            format!(
                "model fraud probability {p:.2}, driven by: {}",
                listed.join("; ")
            )
        },
        weight: points,
        action: None,
        factors,
    }
}

fn human_duration(ms: i64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{} d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms => format!("{} s", ms / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
[[rule]]
name = "card_velocity"
category = "velocity"
when = "card.count_1m >= 3"
score = 60
reason = "card made {card.count_1m} transactions in the minute before this one"

[[rule]]
name = "shared_device"
category = "ring"
when = "device.other_users_24h >= 1"
score = 55
reason = "device used by {device.other_users_24h} other users in 24 h"

[[rule]]
name = "big"
when = "tx.amount > 1000"
score = 10
action = "block"

[[rule]]
name = "shadowy"
when = "tx.amount > 0"
score = 100
mode = "shadow"
"#;

    fn engine() -> Engine {
        let rules = RuleSet::from_toml(RULES).expect("rules compile");
        Engine::new(EngineConfig::default(), Arc::new(rules))
    }

    use crate::event::test_tx as tx;

    #[test]
    fn fourth_card_transaction_in_a_minute_is_flagged() {
        let mut e = engine();
        let mut actions = Vec::new();
        for i in 0..4 {
            let t = tx(&format!(
                r#"{{"transaction_id":"t{i}","card_id":"card-hv","amount":20,"timestamp":"2024-01-01T00:00:{:02}Z"}}"#,
                i * 5
            ));
            let s = e.score(&t);
            actions.push(s.decision.decision);
            if i == 3 {
                assert_eq!(s.decision.reasons[0].rule, "card_velocity");
                assert_eq!(
                    s.decision.reasons[0].detail,
                    "card made 3 transactions in the minute before this one"
                );
                assert!(s.decision.alert);
            }
        }
        assert_eq!(
            actions,
            [
                Action::Approve,
                Action::Approve,
                Action::Approve,
                Action::Review
            ]
        );
        assert_eq!(e.rule_hits()[0], 1);
    }

    #[test]
    fn second_user_on_a_device_is_flagged_as_a_ring() {
        let mut e = engine();
        let a = tx(
            r#"{"user_id":"user-ring-1","card_id":"card-ring-1","device_id":"device-shared-123","amount":150.00,"merchant":"Online Store"}"#,
        );
        let b = tx(
            r#"{"user_id":"user-ring-2","card_id":"card-ring-2","device_id":"device-shared-123","amount":150.00,"merchant":"Online Store"}"#,
        );
        assert_eq!(e.score(&a).decision.decision, Action::Approve);
        let s = e.score(&b);
        assert_eq!(s.decision.decision, Action::Review);
        assert_eq!(s.decision.reasons[0].rule, "shared_device");
        assert_eq!(
            s.features.get(Num::RingSize),
            5.0,
            "3 linked before + new user + new card"
        );
        assert_eq!(s.features.get(Num::RingUsers), 2.0);
    }

    #[test]
    fn forced_actions_and_shadow_rules() {
        let mut e = engine();
        let big = tx(r#"{"amount":5000}"#);
        let s = e.score(&big);
        assert_eq!(s.decision.decision, Action::Block);
        assert_eq!(s.decision.score, 10.0);
        assert_eq!(s.decision.shadow.len(), 1, "shadow rule recorded");
        assert!(s.decision.reasons.iter().all(|r| r.rule != "shadowy"));
        let small = tx(r#"{"amount":5}"#);
        let s = e.score(&small);
        assert_eq!(
            s.decision.decision,
            Action::Approve,
            "shadow weight ignored"
        );
    }

    #[test]
    fn a_new_rule_set_keeps_the_counts_of_unchanged_rules_only() {
        let mut e = engine();
        for i in 0..3 {
            e.score(&tx(&format!(
                r#"{{"transaction_id":"h{i}","amount":5000}}"#
            )));
        }
        assert_eq!(e.rule_hits(), [0, 0, 3, 3]);
        // `big` unchanged but moved, `shadowy` now active, a new rule: only `big` keeps its 3.
        let edited = RuleSet::from_toml(
            r#"
[[rule]]
name = "fresh"
when = "tx.amount > 0"
score = 1

[[rule]]
name = "shadowy"
when = "tx.amount > 0"
score = 100

[[rule]]
name = "big"
when = "tx.amount > 1000"
score = 20
action = "block"
"#,
        )
        .expect("rules");
        e.set_rules(Arc::new(edited));
        assert_eq!(e.rule_hits(), [0, 0, 3]);
    }

    #[test]
    fn absent_entities_have_missing_features_not_zeros() {
        let e = engine();
        let t = tx(r#"{"amount":5,"card_id":"c"}"#);
        let s = e.evaluate(&t);
        assert_eq!(s.features.get(Num::CardCount1m), 0.0);
        assert!(s.features.get(Num::UserCount1m).is_nan());
        assert!(s.features.get(Num::DeviceUsers24h).is_nan());
    }

    #[test]
    fn escalation_ladder_raises_the_floor_without_feeding_itself() {
        let rules = RuleSet::from_toml(
            r#"
[[rule]]
name = "flag_big"
when = "tx.amount >= 100"
score = 50
"#,
        )
        .expect("rules");
        let mut e = Engine::new(EngineConfig::default(), Arc::new(rules));
        let at = |i: i64, amount: u32| {
            tx(&format!(
                r#"{{"transaction_id":"x{i}","user_id":"acct","amount":{amount},"timestamp":"{}"}}"#,
                Timestamp::from_millis(1_700_000_000_000 + i * 600_000).to_rfc3339()
            ))
        };
        // Four alerts (score 50 = review)...
        for i in 0..4 {
            assert!(e.score(&at(i, 100)).decision.alert);
        }
        // ...so a clean transaction is now reviewed by escalation, which is not itself an alert.
        let d = e.score(&at(4, 1)).decision;
        assert_eq!(d.decision, Action::Review);
        assert!(!d.alert);
        assert_eq!(d.reasons[0].rule, "escalation");
        let d = e.score(&at(5, 1)).decision;
        assert_eq!(d.decision, Action::Review, "escalation did not add alerts");
        for i in 6..8 {
            e.score(&at(i, 100));
        }
        assert_eq!(
            e.score(&at(8, 1)).decision.decision,
            Action::Challenge,
            "6 alerts"
        );
        for i in 9..14 {
            e.score(&at(i, 100));
        }
        assert_eq!(
            e.score(&at(14, 1)).decision.decision,
            Action::Block,
            "11 alerts"
        );
        // A day later the window has emptied.
        let later = tx(&format!(
            r#"{{"transaction_id":"late","user_id":"acct","amount":1,"timestamp":"{}"}}"#,
            Timestamp::from_millis(1_700_000_000_000 + 14 * 600_000 + 25 * 3_600_000).to_rfc3339()
        ));
        assert_eq!(e.score(&later).decision.decision, Action::Approve);
    }

    #[test]
    fn recorded_replay_reproduces_state() {
        let mut live = engine();
        let mut rebuilt = engine();
        let txs: Vec<_> = (0..50)
            .map(|i| {
                tx(&format!(
                    r#"{{"transaction_id":"r{i}","user_id":"u{}","card_id":"c{}","device_id":"d{}","amount":{},"timestamp":"{}"}}"#,
                    i % 3,
                    i % 4,
                    i % 2,
                    10 + i,
                    Timestamp::from_millis(1_700_000_000_000 + i * 7_000).to_rfc3339()
                ))
            })
            .collect();
        let mut decisions = Vec::new();
        for t in &txs[..40] {
            let d = live.score(t).decision;
            rebuilt.apply_recorded(t, d.alert, d.decision == Action::Block);
            decisions.push(d);
        }
        for t in &txs[40..] {
            assert_eq!(live.score(t).decision, rebuilt.score(t).decision);
        }
    }

    #[test]
    fn labels_mark_the_ring_and_can_be_withdrawn() {
        let mut e = engine();
        let a = tx(r#"{"transaction_id":"a","user_id":"u1","device_id":"d1","amount":5}"#);
        e.score(&a);
        e.apply_label(&a, true, None);
        let b = tx(r#"{"transaction_id":"b","user_id":"u2","device_id":"d1","amount":5}"#);
        assert_eq!(e.evaluate(&b).features.get(Num::RingHasFraud), 1.0);
        e.apply_label(&a, true, Some(true));
        e.apply_label(&a, false, Some(true));
        assert_eq!(e.evaluate(&b).features.get(Num::RingHasFraud), 0.0);
    }

    #[test]
    fn entity_features_describe_the_entity() {
        let mut e = engine();
        e.score(&tx(
            r#"{"card_id":"c1","amount":40,"timestamp":"2024-01-01T00:00:00Z"}"#,
        ));
        let id = EntityId::parse("id", "c1").expect("id");
        let f = e
            .entity_features(
                EntityKind::Card,
                &id,
                Timestamp::parse("2024-01-01T00:00:10Z").expect("ts"),
            )
            .expect("known card");
        let get = |n: &str| f.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get("card.count_1m"), Some(serde_json::json!(1.0)));
        assert_eq!(get("card.amount_mean"), Some(serde_json::json!(40.0)));
        assert!(get("card.amount_zscore").is_none());
        assert!(e
            .entity_features(EntityKind::User, &id, Timestamp::from_millis(0))
            .is_none());
    }
}

#[cfg(test)]
mod label_feature_tests {
    use super::*;
    use crate::event::test_tx as tx;

    /// A transaction `day` days and `hours` hours after 2023-11-15T01:46:40Z.
    fn at_hour(day: i64, hours: i64, id: &str, terminal: &str) -> Transaction {
        tx(&format!(
            r#"{{"transaction_id":"{id}","card_id":"c-{id}","terminal_id":"{terminal}","amount":10,"timestamp":"{}"}}"#,
            Timestamp::from_millis(1_700_012_800_000 + day * 86_400_000 + hours * 3_600_000)
                .to_rfc3339()
        ))
    }

    fn at(day: i64, id: &str, terminal: &str) -> Transaction {
        at_hour(day, 0, id, terminal)
    }

    #[test]
    fn terminal_fraud_rate_only_counts_days_behind_the_label_delay() {
        let mut e = Engine::new(EngineConfig::default(), Arc::new(RuleSet::empty()));
        // Day 0: four transactions at T1, one of them later confirmed as fraud.
        let txs: Vec<_> = (0..4).map(|i| at(0, &format!("a{i}"), "T1")).collect();
        for t in &txs {
            e.score(t);
        }
        e.apply_label(&txs[0], true, None);
        // Probes at midday: the 4-hour bucket of the day-0 transactions (early morning) is
        // complete and visible from the morning of day 7.
        let rate = |e: &Engine, day| {
            e.evaluate(&at_hour(day, 10, "probe", "T1"))
                .features
                .get(Num::TerminalFraudRate7d)
        };
        // With the default 7-day delay, day 0 is visible from day 7 to day 13.
        assert!(rate(&e, 6).is_nan(), "day 0 is still inside the delay");
        assert_eq!(rate(&e, 7), 0.25);
        assert_eq!(rate(&e, 13), 0.25);
        assert!(rate(&e, 14).is_nan(), "out of the 7-day window");
        let probe = at(20, "probe", "T1");
        let f = e.evaluate(&probe).features;
        assert_eq!(f.get(Num::TerminalFraudRate30d), 0.25);
        assert_eq!(f.get(Num::TerminalFrauds30d), 1.0);
        // The card of the labelled transaction is known compromised.
        let again = tx(r#"{"card_id":"c-a0","amount":1}"#);
        assert_eq!(e.evaluate(&again).features.get(Num::CardFraudLabels), 1.0);
        // Withdrawing the label withdraws the count.
        e.apply_label(&txs[0], false, Some(true));
        assert_eq!(rate(&e, 7), 0.0);
    }

    #[test]
    fn terminal_fraud_streak_and_ordinary_frauds() {
        let mut e = Engine::new(EngineConfig::default(), Arc::new(RuleSet::empty()));
        let pay = |hours: i64, id: &str, card: &str, terminal: &str, amount: f64| {
            tx(&format!(
                r#"{{"transaction_id":"{id}","card_id":"{card}","terminal_id":"{terminal}","amount":{amount},"timestamp":"{}"}}"#,
                Timestamp::from_millis(1_700_012_800_000 + hours * 3_600_000).to_rfc3339()
            ))
        };
        // Three cards that usually spend 10, three days before.
        for (i, card) in ["x", "y", "z"].iter().enumerate() {
            for j in 0..3 {
                e.score(&pay(-72 + j, &format!("h{i}{j}"), card, "home", 10.0));
            }
        }
        // At T on day 0: a genuine payment, then a fraud of an ordinary amount, then a fraud
        // ten times the card's usual spending, then a genuine payment again.
        let genuine = pay(0, "t0", "x", "T", 10.0);
        let plain = pay(5, "t1", "y", "T", 11.0);
        let spike = pay(10, "t2", "z", "T", 100.0);
        let after = pay(15, "t3", "x", "T", 9.0);
        for t in [&genuine, &plain, &spike, &after] {
            e.score(t);
        }
        e.apply_label(&plain, true, None);
        e.apply_label(&spike, true, None);
        let probe_tx = pay(8 * 24, "probe", "w", "T", 10.0);
        let probe = |e: &Engine| e.evaluate(&probe_tx).features.num;
        let get = |f: &[f64; crate::features::NUM_COUNT], n: Num| f[n as usize];
        let f = probe(&e);
        assert_eq!(get(&f, Num::TerminalFrauds30d), 2.0);
        assert_eq!(
            get(&f, Num::TerminalPlainFrauds30d),
            1.0,
            "the spike is explained by the card's own spending"
        );
        // Since the oldest fraud (hour 5): the two frauds and one genuine payment.
        assert!((get(&f, Num::TerminalFraudStreak) - 2.0 / 3.0).abs() < 1e-12);
        e.apply_label(&plain, false, Some(true));
        let f = probe(&e);
        assert_eq!(get(&f, Num::TerminalPlainFrauds30d), 0.0);
        assert_eq!(get(&f, Num::TerminalFraudStreak), 0.5, "from the spike on");
        e.apply_label(&spike, false, Some(true));
        assert!(
            get(&probe(&e), Num::TerminalFraudStreak).is_nan(),
            "no fraud left"
        );
    }
}
