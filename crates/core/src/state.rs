//! Per-entity state and the two operations on it: [`EntityState::features`] reads the state as
//! it was *before* a transaction, [`EntityState::apply`] then records the transaction.
//!
//! Keeping the read and the write apart is what keeps features free of leakage: a
//! transaction never sees itself in its own counters, and since all time comes from event
//! timestamps, applying the same events in the same order always yields the same state.
//!
//! Windows read a late (out-of-order) event as of its own time. Distinct counts and the
//! new-device / new-merchant flags keep only the last time each key was seen, so a late event
//! reads those as of the newest event applied.
//!
//! Entities are keyed by a 64-bit SipHash (fixed key, so keys are stable across runs) of their
//! kind and id. Idle entities are swept once the event-time watermark has moved on by the
//! configured time to live; the sweep is driven by events, so it is deterministic too.

use std::collections::HashMap;
use std::hash::Hasher;

use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

use crate::distinct::RecentKeys;
use crate::event::{Transaction, TxKind};
use crate::features::{FeatureValues, Num, Text};
use crate::graph::{LinkGraph, NodeRef};
use crate::labels::{bucket_of, LabelBuckets, LabelSummary, BUCKETS_PER_DAY};
use crate::profile::{LastSeen, SpendProfile};
use crate::retail::{PhotoStatus, RetailState};
use crate::window::{Ring, Windows};

/// The kinds of entity the engine keeps state for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// A payment card (client card id or card token).
    Card,
    /// A customer account.
    User,
    /// A device fingerprint.
    Device,
    /// An IP address.
    Ip,
    /// A merchant.
    Merchant,
    /// A POS or ATM terminal.
    Terminal,
}

impl EntityKind {
    /// Every kind.
    pub const ALL: [EntityKind; 6] = [
        EntityKind::Card,
        EntityKind::User,
        EntityKind::Device,
        EntityKind::Ip,
        EntityKind::Merchant,
        EntityKind::Terminal,
    ];

    /// The lowercase name used in feature names and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Card => "card",
            EntityKind::User => "user",
            EntityKind::Device => "device",
            EntityKind::Ip => "ip",
            EntityKind::Merchant => "merchant",
            EntityKind::Terminal => "terminal",
        }
    }

    /// Parses a lowercase name.
    pub fn parse(s: &str) -> Option<EntityKind> {
        EntityKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// First window feature of this kind (count_1m); the ten window features follow it.
    fn window_base(self) -> Num {
        match self {
            EntityKind::Card => Num::CardCount1m,
            EntityKind::User => Num::UserCount1m,
            EntityKind::Device => Num::DeviceCount1m,
            EntityKind::Ip => Num::IpCount1m,
            EntityKind::Merchant => Num::MerchantCount1m,
            EntityKind::Terminal => Num::TerminalCount1m,
        }
    }
}

/// A map keyed by [`entity_key`]s.
///
/// The keys are already SipHash outputs, so hashing them again with SipHash (std's default)
/// cost about as much as the rest of a lookup, a dozen lookups per transaction. foldhash is a
/// multiply and a fold. It is seeded per process, not an identity: the entity-key SipHash key
/// is fixed and public, so ids crafted to collide in the low bits would pile into one bucket
/// of an identity-hashed table. Iteration order is not relied on (snapshots sort by key;
/// sweeps only filter), so a per-process seed does not touch determinism.
pub(crate) type KeyMap<V> = HashMap<u64, V, foldhash::fast::RandomState>;

/// The stable 64-bit key of an entity.
pub fn entity_key(kind: EntityKind, id: &str) -> u64 {
    let mut h = SipHasher13::new_with_keys(0x5269_6e67_6665_6e63, 0x6b65_7973_2d76_3031);
    h.write_u8(kind as u8);
    h.write(id.as_bytes());
    h.finish()
}

/// Tunables of the state that change feature values (and so must match between live scoring
/// and replay).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateConfig {
    /// Amounts strictly below this count as "small" for card testing.
    pub small_amount: f64,
    /// Entities idle for longer than this are forgotten (milliseconds).
    pub idle_ttl_ms: i64,
    /// Length of the per-account alert window of the escalation ladder (milliseconds).
    pub alert_window_ms: i64,
    /// Days between a transaction and the moment its label is assumed known; label-driven
    /// features read only days at least this far back.
    pub label_delay_days: i64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            small_amount: 2.0,
            // Longer than the label windows (30 days behind a 7-day delay), which expiry must
            // not cut short.
            idle_ttl_ms: 40 * 86_400_000,
            alert_window_ms: 86_400_000,
            label_delay_days: 7,
        }
    }
}

const DAY_MS: i64 = 86_400_000;
/// Distinct users / cards / devices remembered per entity over 24 h.
const DISTINCT_CAP: usize = 32;
/// Devices remembered per user for "new device".
const SEEN_DEVICES_CAP: usize = 16;
/// Merchants remembered per user for "new merchant".
const SEEN_MERCHANTS_CAP: usize = 32;
/// Buckets of the per-account alert window.
const ALERT_BUCKETS: usize = 24;
/// An amount at least this many times the card's mean is a spending spike.
const SPIKE_RATIO: f64 = 3.0;
/// A confirmed fraud under this many times its card's mean amount was ordinary spending.
const PLAIN_RATIO: f64 = 2.0;
/// Events between two checks for idle entities.
const SWEEP_EVERY: u32 = 4096;

/// State of an entity that only has windows (ip, merchant, terminal).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Plain {
    windows: Windows,
    last_ms: i64,
}

/// State of a terminal or merchant: windows plus label-driven counts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct PointOfSale {
    windows: Windows,
    labels: LabelBuckets,
    /// The label windows as read for the window end `.0`. A transaction's own bucket is always
    /// newer than the windows it reads, so only a label or a very late event changes them;
    /// computing them once per window position keeps the ring scan off most transactions.
    summary: Option<(i64, LabelSummary<3>)>,
    last_ms: i64,
}

/// Label windows read for terminals and merchants: 1, 7 and 30 days.
const LABEL_WINDOWS: [i64; 3] = [BUCKETS_PER_DAY, 7 * BUCKETS_PER_DAY, 30 * BUCKETS_PER_DAY];

impl PointOfSale {
    /// The label windows ending at bucket `seen`, from the cache when it is current.
    fn label_summary(&self, seen: i64) -> LabelSummary<3> {
        match self.summary {
            Some((at, s)) if at == seen => s,
            _ => self.labels.summary(seen, LABEL_WINDOWS),
        }
    }
}

/// State of a card.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CardState {
    windows: Windows,
    small_10m: Ring<10>,
    profile: SpendProfile,
    seen: LastSeen,
    alerts: Ring<ALERT_BUCKETS>,
    /// Spending spikes (amount >= SPIKE_RATIO x the mean at the time), 14 x 12 h buckets.
    spikes: Ring<14>,
    fraud_labels: u32,
    last_ms: i64,
}

/// State of a user.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct UserState {
    windows: Windows,
    profile: SpendProfile,
    seen: LastSeen,
    devices: RecentKeys,
    merchants: RecentKeys,
    devices_24h: RecentKeys,
    cards_24h: RecentKeys,
    alerts: Ring<ALERT_BUCKETS>,
    last_ms: i64,
}

/// Read-only stand-ins for entities without state, so a read never builds one.
static EMPTY_CARD: CardState = CardState {
    windows: Windows::EMPTY,
    small_10m: Ring::EMPTY,
    profile: SpendProfile::EMPTY,
    seen: LastSeen::EMPTY,
    alerts: Ring::EMPTY,
    spikes: Ring::EMPTY,
    fraud_labels: 0,
    last_ms: 0,
};
static EMPTY_POS: PointOfSale = PointOfSale {
    windows: Windows::EMPTY,
    labels: LabelBuckets::EMPTY,
    summary: None,
    last_ms: 0,
};
static EMPTY_USER: UserState = UserState {
    windows: Windows::EMPTY,
    profile: SpendProfile::EMPTY,
    seen: LastSeen::EMPTY,
    devices: RecentKeys::EMPTY,
    merchants: RecentKeys::EMPTY,
    devices_24h: RecentKeys::EMPTY,
    cards_24h: RecentKeys::EMPTY,
    alerts: Ring::EMPTY,
    last_ms: 0,
};
static EMPTY_DEVICE: DeviceState = DeviceState {
    windows: Windows::EMPTY,
    users_24h: RecentKeys::EMPTY,
    cards_24h: RecentKeys::EMPTY,
    last_ms: 0,
};

/// State of a device.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DeviceState {
    windows: Windows,
    users_24h: RecentKeys,
    cards_24h: RecentKeys,
    last_ms: i64,
}

/// The keys of the entities one transaction touches, computed once per transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxKeys {
    /// Card key.
    pub card: Option<u64>,
    /// User key.
    pub user: Option<u64>,
    /// Device key.
    pub device: Option<u64>,
    /// IP key.
    pub ip: Option<u64>,
    /// Merchant key.
    pub merchant: Option<u64>,
    /// Terminal key.
    pub terminal: Option<u64>,
}

impl TxKeys {
    /// Keys of `tx`'s entities.
    pub fn of(tx: &Transaction) -> TxKeys {
        let k = |kind, id: &Option<crate::event::EntityId>| {
            id.as_ref().map(|id| entity_key(kind, id.as_str()))
        };
        TxKeys {
            card: k(EntityKind::Card, &tx.card_id),
            user: k(EntityKind::User, &tx.user_id),
            device: k(EntityKind::Device, &tx.device_id),
            ip: k(EntityKind::Ip, &tx.ip),
            merchant: k(EntityKind::Merchant, &tx.merchant),
            terminal: k(EntityKind::Terminal, &tx.terminal_id),
        }
    }

    /// The account whose alerts drive escalation: the user, else the card.
    pub fn account(&self) -> Option<(EntityKind, u64)> {
        self.user
            .map(|k| (EntityKind::User, k))
            .or(self.card.map(|k| (EntityKind::Card, k)))
    }

    fn ring_nodes(&self, out: &mut [NodeRef; 3]) -> usize {
        let mut n = 0;
        for (key, is_user) in [(self.user, true), (self.card, false), (self.device, false)] {
            if let Some(key) = key {
                out[n] = NodeRef { key, is_user };
                n += 1;
            }
        }
        n
    }
}

/// Counts of what the state holds, for stats and memory accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    /// Cards held.
    pub cards: usize,
    /// Users held.
    pub users: usize,
    /// Devices held.
    pub devices: usize,
    /// IPs held.
    pub ips: usize,
    /// Merchants held.
    pub merchants: usize,
    /// Terminals held.
    pub terminals: usize,
    /// Nodes of the link graph.
    pub graph_nodes: usize,
}

/// All entity state of one engine. Serializable as a whole, sweep counters included, so a
/// restored copy continues exactly like the original (see [`crate::snapshot`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EntityState {
    config: StateConfig,
    // Each entity's state is boxed: a hash map that grows moves every entry it holds, under
    // the engine's lock. Inline, a card's 1.7 KB made each doubling of a map of 60,000 cards
    // move 100 MB and stall every request for tens of milliseconds (p99 30-60 ms in an open
    // loop at a quarter of peak); boxed, it moves 16-byte slots. Spare capacity, between an
    // eighth and a half of every table, then costs 16 bytes a slot instead of a whole state.
    #[serde(with = "crate::snapshot::sorted_map")]
    cards: KeyMap<Box<CardState>>,
    #[serde(with = "crate::snapshot::sorted_map")]
    users: KeyMap<Box<UserState>>,
    #[serde(with = "crate::snapshot::sorted_map")]
    devices: KeyMap<Box<DeviceState>>,
    #[serde(with = "crate::snapshot::sorted_map")]
    ips: KeyMap<Box<Plain>>,
    #[serde(with = "crate::snapshot::sorted_map")]
    merchants: KeyMap<Box<PointOfSale>>,
    #[serde(with = "crate::snapshot::sorted_map")]
    terminals: KeyMap<Box<PointOfSale>>,
    graph: LinkGraph,
    /// Receipts and return history (purchases and returns).
    retail: RetailState,
    watermark: i64,
    last_sweep: i64,
    since_sweep: u32,
}

/// Writes the eight profile features that follow `base` in the catalog (tx_count, amount
/// mean, std, z-score, ratio, secs since last, km from last, speed), as laid out for both
/// cards and users.
fn profile_into(
    base: Num,
    p: &SpendProfile,
    seen: &LastSeen,
    tx: &Transaction,
    f: &mut FeatureValues<'_>,
) {
    let ts = tx.timestamp.millis();
    let (km, kmh) = seen.travel(ts, tx.location);
    let values = [
        f64::from(p.count()),
        p.mean(),
        p.std(),
        p.zscore(tx.amount),
        p.ratio(tx.amount),
        seen.secs_since(ts),
        km,
        kmh,
    ];
    f.num[base as usize..base as usize + values.len()].copy_from_slice(&values);
}

impl EntityState {
    /// The last complete label bucket before `ts - delay` (see `labels`): label windows end
    /// there.
    fn label_window_end(&self, ts: i64) -> i64 {
        bucket_of(ts - self.config.label_delay_days * 86_400_000) - 1
    }
}

fn bucket(ts: i64, window_ms: i64, buckets: usize) -> i64 {
    ts.div_euclid((window_ms / buckets as i64).max(1))
}

impl Default for EntityState {
    fn default() -> Self {
        EntityState::new(StateConfig::default())
    }
}

impl EntityState {
    /// Empty state with `config`.
    pub fn new(config: StateConfig) -> Self {
        EntityState {
            config,
            cards: KeyMap::default(),
            users: KeyMap::default(),
            devices: KeyMap::default(),
            ips: KeyMap::default(),
            merchants: KeyMap::default(),
            terminals: KeyMap::default(),
            graph: LinkGraph::default(),
            watermark: i64::MIN,
            last_sweep: i64::MIN,
            retail: RetailState::default(),
            since_sweep: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    /// Fills `f` with the features of `tx` from the state before `tx`.
    pub fn features<'a>(&self, tx: &'a Transaction, keys: &TxKeys, f: &mut FeatureValues<'a>) {
        let ts = tx.timestamp.millis();
        f.set(Num::TxAmount, tx.amount);
        f.set(Num::TxHour, f64::from(tx.timestamp.hour_of_day()));
        f.set_bool(Num::TxHasCardNumber, tx.card_token.is_some());
        f.set_bool(Num::TxHasLocation, tx.location.is_some());
        f.set_bool(Num::TxIsSmall, tx.amount < self.config.small_amount);
        let t = &mut f.text;
        t[Text::TxKind as usize] = Some(tx.kind.as_str());
        t[Text::TxCurrency as usize] = tx.currency.as_deref();
        t[Text::TxCountry as usize] = tx.country.as_deref();
        t[Text::TxMerchant as usize] = tx.merchant.as_ref().map(|e| e.as_str());
        t[Text::TxMerchantCategory as usize] = tx.merchant_category.as_ref().map(|e| e.as_str());
        t[Text::TxUserId as usize] = tx.user_id.as_ref().map(|e| e.as_str());
        t[Text::TxCardId as usize] = tx.card_id.as_ref().map(|e| e.as_str());
        t[Text::TxDeviceId as usize] = tx.device_id.as_ref().map(|e| e.as_str());
        t[Text::TxIp as usize] = tx.ip.as_ref().map(|e| e.as_str());
        t[Text::TxTerminalId as usize] = tx.terminal_id.as_ref().map(|e| e.as_str());
        t[Text::TxStoreId as usize] = tx.store_id.as_ref().map(|e| e.as_str());
        if let Some(retail) = tx.retail.as_deref() {
            t[Text::TxPhoto as usize] = Some(retail.photo.as_str());
            t[Text::TxReceiptId as usize] = retail.receipt_id.as_ref().map(|e| e.as_str());
            t[Text::TxCustomerId as usize] = retail.customer_id.as_ref().map(|e| e.as_str());
            f.set_bool(
                Num::ReturnPhotoVerified,
                retail.photo == PhotoStatus::Verified,
            );
            if tx.kind == TxKind::Return {
                let r = self.retail.return_facts(
                    retail,
                    tx.store_id.as_ref(),
                    tx.terminal_id.as_ref(),
                    ts,
                    tx.amount,
                );
                f.set_bool(Num::ReturnReceiptFound, r.receipt_found);
                if let Some(m) = r.customer_mismatch {
                    f.set_bool(Num::ReturnCustomerMismatch, m);
                }
                if let Some(v) = r.purchase_photo_verified {
                    f.set_bool(Num::ReturnPurchasePhotoVerified, v);
                }
                f.set(Num::ReturnAlreadyReturned, f64::from(r.already_returned));
                f.set(Num::ReturnOtherStoreRecent, f64::from(r.other_store_recent));
                if let Some(m) = r.mins_since_purchase {
                    f.set(Num::ReturnMinsSincePurchase, m);
                }
                if let Some(n) = r.customer_returns_24h {
                    f.set(Num::ReturnCustomerReturns24h, f64::from(n));
                }
                if let Some(n) = r.terminal_returns_1h {
                    f.set(Num::ReturnTerminalReturns1h, f64::from(n));
                }
                f.set(Num::ReturnMaxItemPrice, r.max_item_price);
                if let Some(x) = r.excess_value {
                    f.set(Num::ReturnExcessValue, x);
                }
            }
        }

        let since_24h = ts - DAY_MS;

        if let Some(k) = keys.card {
            let card = self.cards.get(&k).map(|b| &**b);
            self.windows_into(EntityKind::Card, card.map(|c| &c.windows), ts, f);
            let c = card.unwrap_or(&EMPTY_CARD);
            f.set(
                Num::CardSmallCount10m,
                f64::from(c.small_10m.read(ts.div_euclid(60_000)).0),
            );
            profile_into(Num::CardTxCount, &c.profile, &c.seen, tx, f);
            f.set(Num::CardFraudLabels, f64::from(c.fraud_labels));
            f.set(
                Num::CardSpikes7d,
                f64::from(c.spikes.read(ts.div_euclid(crate::window::WIDTH_7D)).0),
            );
            // Amount against the card's recent average (the windows were just read above).
            let recent = |count: Num, sum: Num| {
                let (n, total) = (f.get(count), f.get(sum));
                if n > 0.0 && total > 0.0 {
                    tx.amount / (total / n)
                } else {
                    f64::NAN
                }
            };
            let r24 = recent(Num::CardCount24h, Num::CardSum24h);
            let r7 = recent(Num::CardCount7d, Num::CardSum7d);
            f.set(Num::CardAmountRatio24h, r24);
            f.set(Num::CardAmountRatio7d, r7);
        }
        if let Some(k) = keys.user {
            let user = self.users.get(&k).map(|b| &**b);
            self.windows_into(EntityKind::User, user.map(|u| &u.windows), ts, f);
            let u = user.unwrap_or(&EMPTY_USER);
            profile_into(Num::UserTxCount, &u.profile, &u.seen, tx, f);
            if let Some(d) = keys.device {
                f.set_bool(Num::UserNewDevice, !u.devices.contains(d));
            }
            if let Some(m) = keys.merchant {
                f.set_bool(Num::UserNewMerchant, !u.merchants.contains(m));
            }
            f.set(
                Num::UserDevices24h,
                u.devices_24h.count_since(since_24h) as f64,
            );
            f.set(Num::UserCards24h, u.cards_24h.count_since(since_24h) as f64);
        }
        if let Some(k) = keys.device {
            let device = self.devices.get(&k).map(|b| &**b);
            self.windows_into(EntityKind::Device, device.map(|d| &d.windows), ts, f);
            let d = device.unwrap_or(&EMPTY_DEVICE);
            f.set(
                Num::DeviceUsers24h,
                d.users_24h.count_since(since_24h) as f64,
            );
            f.set(
                Num::DeviceCards24h,
                d.cards_24h.count_since(since_24h) as f64,
            );
            f.set(
                Num::DeviceOtherUsers24h,
                d.users_24h.count_since_except(since_24h, keys.user) as f64,
            );
            f.set(
                Num::DeviceOtherCards24h,
                d.cards_24h.count_since_except(since_24h, keys.card) as f64,
            );
        }
        if let Some(k) = keys.ip {
            let ip = self.ips.get(&k).map(|p| &p.windows);
            self.windows_into(EntityKind::Ip, ip, ts, f);
        }
        let seen = self.label_window_end(ts);
        if let Some(k) = keys.terminal {
            let t = self.terminals.get(&k).map(|b| &**b);
            self.windows_into(EntityKind::Terminal, t.map(|t| &t.windows), ts, f);
            let t = t.unwrap_or(&EMPTY_POS);
            let l = t.label_summary(seen);
            f.set(Num::TerminalFraudRate1d, l.rate(0));
            f.set(Num::TerminalFraudRate7d, l.rate(1));
            f.set(Num::TerminalFraudRate30d, l.rate(2));
            f.set(Num::TerminalFrauds30d, f64::from(l.fraud[2]));
            f.set(Num::TerminalPlainFrauds30d, f64::from(l.plain_fraud));
            let (since_tx, since_fraud) = l.since_first;
            f.set(
                Num::TerminalFraudStreak,
                if since_tx == 0 {
                    f64::NAN
                } else {
                    f64::from(since_fraud) / f64::from(since_tx)
                },
            );
            let now_bucket = bucket_of(ts);
            let age = |b: i64| (now_bucket - b) as f64 / BUCKETS_PER_DAY as f64;
            f.set(
                Num::TerminalFraudFirstAge,
                l.span.map_or(f64::NAN, |(first, _)| age(first)),
            );
            f.set(
                Num::TerminalFraudLastAge,
                l.span.map_or(f64::NAN, |(_, last)| age(last)),
            );
        }
        if let Some(k) = keys.merchant {
            let m = self.merchants.get(&k).map(|b| &**b);
            self.windows_into(EntityKind::Merchant, m.map(|m| &m.windows), ts, f);
            let m = m.unwrap_or(&EMPTY_POS);
            let l = m.label_summary(seen);
            f.set(Num::MerchantFraudRate7d, l.rate(1));
            f.set(Num::MerchantFraudRate30d, l.rate(2));
        }

        let mut nodes = [NodeRef {
            key: 0,
            is_user: false,
        }; 3];
        let n = keys.ring_nodes(&mut nodes);
        if n > 0 {
            let ring = self.graph.preview(&nodes[..n]);
            f.set(Num::RingSize, f64::from(ring.size));
            f.set(Num::RingUsers, f64::from(ring.users));
            f.set_bool(Num::RingHasFraud, ring.fraud_members > 0);
        }

        if let Some((kind, k)) = keys.account() {
            let alerts = match kind {
                EntityKind::User => self.users.get(&k).map(|u| &u.alerts),
                _ => self.cards.get(&k).map(|c| &c.alerts),
            };
            let now = bucket(ts, self.config.alert_window_ms, ALERT_BUCKETS);
            f.set(
                Num::AccountAlerts,
                f64::from(alerts.map_or(0, |r| r.read(now).0)),
            );
        }
    }

    fn windows_into(
        &self,
        kind: EntityKind,
        w: Option<&Windows>,
        ts: i64,
        f: &mut FeatureValues<'_>,
    ) {
        let base = kind.window_base() as usize;
        let out = &mut f.num[base..base + 10];
        match w {
            Some(w) => w.read_into(ts, out),
            None => out.fill(0.0),
        }
    }

    /// Records `tx` (whether its decision raised an alert, and whether it was blocked: a
    /// blocked return is not recorded against its receipt) into the state.
    pub fn apply(&mut self, tx: &Transaction, keys: &TxKeys, alert: bool, blocked: bool) {
        let ts = tx.timestamp.millis();
        if let Some(retail) = tx.retail.as_deref() {
            self.retail.apply(
                tx.kind,
                retail,
                tx.store_id.as_ref(),
                tx.terminal_id.as_ref(),
                tx.transaction_id.as_str(),
                ts,
                !blocked,
            );
        }
        let amount = tx.amount;
        let spends = matches!(tx.kind, TxKind::Payment | TxKind::Purchase);
        let forget_24h = ts - DAY_MS;
        let alert_bucket = bucket(ts, self.config.alert_window_ms, ALERT_BUCKETS);
        let account = keys.account();

        if let Some(k) = keys.card {
            let c = self.cards.entry(k).or_default();
            c.windows.add(ts, amount);
            if amount < self.config.small_amount {
                c.small_10m.add(ts.div_euclid(60_000), 0);
            }
            if spends {
                let spike = c.profile.count() >= 2 && c.profile.ratio(amount) >= SPIKE_RATIO;
                if spike {
                    c.spikes.add(ts.div_euclid(crate::window::WIDTH_7D), 0);
                }
                // A spike enters the profile capped at SPIKE_RATIO x the mean, so a burst of
                // fraudulent amounts cannot drag the card's normal spending up to its level.
                let capped = if spike {
                    SPIKE_RATIO * c.profile.mean()
                } else {
                    amount
                };
                c.profile.add(capped);
            }
            c.seen.update(ts, tx.location);
            if alert && matches!(account, Some((EntityKind::Card, _))) {
                c.alerts.add(alert_bucket, 0);
            }
            c.last_ms = c.last_ms.max(ts);
        }
        if let Some(k) = keys.user {
            let u = self.users.entry(k).or_default();
            u.windows.add(ts, amount);
            if spends {
                // Same robust profile as cards: spikes enter capped.
                let spike = u.profile.count() >= 2 && u.profile.ratio(amount) >= SPIKE_RATIO;
                u.profile.add(if spike {
                    SPIKE_RATIO * u.profile.mean()
                } else {
                    amount
                });
            }
            u.seen.update(ts, tx.location);
            if let Some(d) = keys.device {
                u.devices.touch(d, ts, i64::MIN, SEEN_DEVICES_CAP);
                u.devices_24h.touch(d, ts, forget_24h, DISTINCT_CAP);
            }
            if let Some(m) = keys.merchant {
                u.merchants.touch(m, ts, i64::MIN, SEEN_MERCHANTS_CAP);
            }
            if let Some(c) = keys.card {
                u.cards_24h.touch(c, ts, forget_24h, DISTINCT_CAP);
            }
            if alert {
                u.alerts.add(alert_bucket, 0);
            }
            u.last_ms = u.last_ms.max(ts);
        }
        if let Some(k) = keys.device {
            let d = self.devices.entry(k).or_default();
            d.windows.add(ts, amount);
            if let Some(u) = keys.user {
                d.users_24h.touch(u, ts, forget_24h, DISTINCT_CAP);
            }
            if let Some(c) = keys.card {
                d.cards_24h.touch(c, ts, forget_24h, DISTINCT_CAP);
            }
            d.last_ms = d.last_ms.max(ts);
        }
        if let Some(k) = keys.ip {
            let p = self.ips.entry(k).or_default();
            p.windows.add(ts, amount);
            p.last_ms = p.last_ms.max(ts);
        }
        let seen = self.label_window_end(ts);
        for (key, map) in [
            (keys.merchant, &mut self.merchants),
            (keys.terminal, &mut self.terminals),
        ] {
            if let Some(k) = key {
                let p = map.entry(k).or_default();
                p.windows.add(ts, amount);
                let at = bucket_of(ts);
                p.labels.add_tx(at);
                match p.summary {
                    // A transaction this late lands inside the cached windows.
                    Some((end, _)) if at <= end => p.summary = None,
                    Some((end, _)) if end == seen => {}
                    _ => p.summary = Some((seen, p.labels.summary(seen, LABEL_WINDOWS))),
                }
                p.last_ms = p.last_ms.max(ts);
            }
        }

        let mut nodes = [NodeRef {
            key: 0,
            is_user: false,
        }; 3];
        let n = keys.ring_nodes(&mut nodes);
        if n > 1 {
            self.graph.link(&nodes[..n], ts);
        }

        self.watermark = self.watermark.max(ts);
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.sweep_idle();
        }
    }

    /// Adds (`fraud = true`) or withdraws a confirmed-fraud label on a transaction: ring
    /// membership of its user, card and device, the card's label count, and the daily fraud
    /// counts of its terminal and merchant.
    pub fn label(&mut self, tx: &Transaction, keys: &TxKeys, fraud: bool) {
        let mut nodes = [NodeRef {
            key: 0,
            is_user: false,
        }; 3];
        let n = keys.ring_nodes(&mut nodes);
        for node in &nodes[..n] {
            self.graph.label(*node, fraud, tx.timestamp.millis());
        }
        let delta = if fraud { 1 } else { -1 };
        let mut plain = false;
        if let Some(c) = keys.card.and_then(|k| self.cards.get_mut(&k)) {
            c.fraud_labels = c.fraud_labels.saturating_add_signed(delta);
            plain = c.profile.count() >= 2 && c.profile.ratio(tx.amount) < PLAIN_RATIO;
        }
        let bucket = bucket_of(tx.timestamp.millis());
        for (key, map) in [
            (keys.terminal, &mut self.terminals),
            (keys.merchant, &mut self.merchants),
        ] {
            if let Some(p) = key.and_then(|k| map.get_mut(&k)) {
                p.labels.add_fraud(bucket, delta, plain);
                p.summary = None;
            }
        }
    }

    /// Forgets entities idle for longer than the time to live, and link-graph rings all of
    /// whose members are, at most once per hour of event time.
    fn sweep_idle(&mut self) {
        if self.watermark.saturating_sub(self.last_sweep) < 3_600_000 {
            return;
        }
        self.last_sweep = self.watermark;
        let cutoff = self.watermark.saturating_sub(self.config.idle_ttl_ms);
        self.cards.retain(|_, e| e.last_ms >= cutoff);
        self.users.retain(|_, e| e.last_ms >= cutoff);
        self.devices.retain(|_, e| e.last_ms >= cutoff);
        self.ips.retain(|_, e| e.last_ms >= cutoff);
        self.merchants.retain(|_, e| e.last_ms >= cutoff);
        self.terminals.retain(|_, e| e.last_ms >= cutoff);
        // Rings go when all their members have been idle as long (see `graph`).
        self.graph.expire(cutoff);
    }

    /// Newest event time applied so far, if any.
    pub fn watermark(&self) -> Option<i64> {
        (self.watermark != i64::MIN).then_some(self.watermark)
    }

    /// The receipt state (store purchases and returns).
    pub fn retail(&self) -> &RetailState {
        &self.retail
    }

    /// The receipt state, to take the conflicts its applies found.
    pub fn retail_mut(&mut self) -> &mut RetailState {
        &mut self.retail
    }

    /// Whether the state holds `key` of `kind`.
    pub fn contains(&self, kind: EntityKind, key: u64) -> bool {
        match kind {
            EntityKind::Card => self.cards.contains_key(&key),
            EntityKind::User => self.users.contains_key(&key),
            EntityKind::Device => self.devices.contains_key(&key),
            EntityKind::Ip => self.ips.contains_key(&key),
            EntityKind::Merchant => self.merchants.contains_key(&key),
            EntityKind::Terminal => self.terminals.contains_key(&key),
        }
    }

    /// The link-graph component of an entity (users, cards and devices only).
    pub fn ring_of(&self, key: u64) -> Option<crate::graph::Component> {
        self.graph.component_of(key)
    }

    /// Checks the invariants that reads rely on and that a decoded state could break (see
    /// [`LinkGraph::check_consistency`]).
    pub(crate) fn check_consistency(&self) -> Result<(), String> {
        self.graph.check_consistency()
    }

    /// How much the state holds.
    pub fn counts(&self) -> StateCounts {
        StateCounts {
            cards: self.cards.len(),
            users: self.users.len(),
            devices: self.devices.len(),
            ips: self.ips.len(),
            merchants: self.merchants.len(),
            terminals: self.terminals.len(),
            graph_nodes: self.graph.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;

    use crate::event::test_tx as tx;

    fn read<'a>(s: &EntityState, t: &'a Transaction) -> FeatureValues<'a> {
        let mut f = FeatureValues::default();
        s.features(t, &TxKeys::of(t), &mut f);
        f
    }

    fn apply(s: &mut EntityState, t: &Transaction) {
        s.apply(t, &TxKeys::of(t), false, false);
    }

    #[test]
    fn a_transaction_never_sees_itself() {
        let mut s = EntityState::new(StateConfig::default());
        let t = tx(
            r#"{"user_id":"u","card_id":"c","device_id":"d","ip":"10.0.0.1","merchant":"m","terminal_id":"t","amount":10}"#,
        );
        let before = read(&s, &t);
        for n in [
            Num::CardCount1m,
            Num::UserCount7d,
            Num::DeviceCount1h,
            Num::IpCount24h,
            Num::MerchantCount10m,
            Num::TerminalCount1m,
        ] {
            assert_eq!(before.get(n), 0.0, "{n:?}");
        }
        assert_eq!(before.get(Num::CardTxCount), 0.0);
        assert!(before.get(Num::CardAmountMean).is_nan());
        apply(&mut s, &t);
        let again = read(&s, &t);
        assert_eq!(again.get(Num::CardCount1m), 1.0);
        assert_eq!(again.get(Num::MerchantSum1m), 10.0);
        assert_eq!(again.get(Num::CardAmountMean), 10.0);
    }

    #[test]
    fn distinct_counts_relate_to_the_current_transaction() {
        let mut s = EntityState::new(StateConfig::default());
        apply(
            &mut s,
            &tx(
                r#"{"user_id":"u1","card_id":"c1","device_id":"d","amount":1,"timestamp":"2024-01-01T00:00:00Z"}"#,
            ),
        );
        apply(
            &mut s,
            &tx(
                r#"{"user_id":"u1","card_id":"c2","device_id":"d","amount":1,"timestamp":"2024-01-01T00:01:00Z"}"#,
            ),
        );
        let same_user = tx(
            r#"{"user_id":"u1","card_id":"c1","device_id":"d","amount":1,"timestamp":"2024-01-01T00:02:00Z"}"#,
        );
        let f = read(&s, &same_user);
        assert_eq!(f.get(Num::DeviceUsers24h), 1.0);
        assert_eq!(
            f.get(Num::DeviceOtherUsers24h),
            0.0,
            "the same user is not 'other'"
        );
        assert_eq!(f.get(Num::DeviceCards24h), 2.0);
        assert_eq!(f.get(Num::DeviceOtherCards24h), 1.0);
        assert_eq!(f.get(Num::UserCards24h), 2.0);
        assert_eq!(f.get(Num::UserDevices24h), 1.0);
        let other_user =
            tx(r#"{"user_id":"u2","device_id":"d","amount":1,"timestamp":"2024-01-01T00:02:00Z"}"#);
        assert_eq!(read(&s, &other_user).get(Num::DeviceOtherUsers24h), 1.0);
        let next_day =
            tx(r#"{"user_id":"u2","device_id":"d","amount":1,"timestamp":"2024-01-02T00:03:00Z"}"#);
        assert_eq!(
            read(&s, &next_day).get(Num::DeviceOtherUsers24h),
            0.0,
            "24 h later"
        );
    }

    #[test]
    fn new_device_merchant_and_travel() {
        let mut s = EntityState::new(StateConfig::default());
        apply(
            &mut s,
            &tx(
                r#"{"user_id":"u","device_id":"d1","merchant":"m1","amount":1,"lat":48.8566,"lon":2.3522,"timestamp":"2024-01-01T00:00:00Z"}"#,
            ),
        );
        let t = tx(
            r#"{"user_id":"u","device_id":"d2","merchant":"m1","amount":1,"lat":40.7128,"lon":-74.006,"timestamp":"2024-01-01T01:00:00Z"}"#,
        );
        let f = read(&s, &t);
        assert_eq!(f.get(Num::UserNewDevice), 1.0);
        assert_eq!(f.get(Num::UserNewMerchant), 0.0);
        assert!((f.get(Num::UserKmFromLast) - 5837.0).abs() < 10.0);
        assert!(f.get(Num::UserSpeedKmh) > 5000.0);
        assert_eq!(f.get(Num::UserSecsSinceLast), 3600.0);
        assert!(
            f.get(Num::CardSpeedKmh).is_nan(),
            "no card on the transaction"
        );
        let no_device = tx(r#"{"user_id":"u","amount":1}"#);
        assert!(read(&s, &no_device).get(Num::UserNewDevice).is_nan());
    }

    #[test]
    fn spikes_are_counted_and_enter_the_profile_capped() {
        let mut s = EntityState::new(StateConfig::default());
        for (i, amount) in [10, 10, 10, 100].iter().enumerate() {
            apply(
                &mut s,
                &tx(&format!(
                    r#"{{"card_id":"c","amount":{amount},"timestamp":"2024-01-01T00:0{i}:00Z"}}"#
                )),
            );
        }
        let next = tx(r#"{"card_id":"c","amount":10,"timestamp":"2024-01-01T00:05:00Z"}"#);
        let f = read(&s, &next);
        assert_eq!(f.get(Num::CardSpikes7d), 1.0);
        // 10, 10, 10 and the spike capped at 3 x 10 = 30: mean 15, not 32.5.
        assert_eq!(f.get(Num::CardAmountMean), 15.0);
        assert_eq!(f.get(Num::CardTxCount), 4.0);
    }

    #[test]
    fn idle_entities_expire_and_active_ones_stay() {
        let mut s = EntityState::new(StateConfig {
            idle_ttl_ms: 10 * DAY_MS,
            ..StateConfig::default()
        });
        apply(
            &mut s,
            &tx(
                r#"{"card_id":"idle","user_id":"idle-user","device_id":"idle-device","amount":1,"timestamp":"2024-01-01T00:00:00Z"}"#,
            ),
        );
        assert_eq!(s.counts().graph_nodes, 3, "the idle ring is linked");
        // Eleven days of traffic on another card, enough events to trigger sweeps.
        let start = Timestamp::parse("2024-01-01T00:00:00Z")
            .expect("ts")
            .millis();
        for i in 0..(2 * SWEEP_EVERY as i64) {
            let at = Timestamp::from_millis(start + 11 * DAY_MS * i / (2 * SWEEP_EVERY as i64 - 1));
            apply(
                &mut s,
                &tx(&format!(
                    r#"{{"card_id":"busy","amount":1,"timestamp":"{}"}}"#,
                    at.to_rfc3339()
                )),
            );
        }
        assert!(!s.contains(EntityKind::Card, entity_key(EntityKind::Card, "idle")));
        assert!(s.contains(EntityKind::Card, entity_key(EntityKind::Card, "busy")));
        assert_eq!(s.counts().cards, 1);
        assert_eq!(s.counts().users, 0);
        assert_eq!(s.counts().graph_nodes, 0, "its ring went with it");
        let again = tx(
            r#"{"card_id":"idle","user_id":"idle-user","amount":1,"timestamp":"2024-01-12T00:00:00Z"}"#,
        );
        assert_eq!(
            read(&s, &again).get(Num::RingSize),
            2.0,
            "a returning card starts afresh"
        );
    }

    #[test]
    fn replaying_the_same_events_gives_the_same_features() {
        let events: Vec<Transaction> = (0..200)
            .map(|i| {
                tx(&format!(
                    r#"{{"user_id":"u{}","card_id":"c{}","device_id":"d{}","amount":{},"timestamp":"{}"}}"#,
                    i % 7,
                    i % 5,
                    i % 3,
                    1 + i,
                    Timestamp::from_millis(1_700_000_000_000 + i * 13_000).to_rfc3339()
                ))
            })
            .collect();
        let (mut a, mut b) = (EntityState::default(), EntityState::default());
        for e in &events {
            let (fa, fb) = (read(&a, e), read(&b, e));
            assert_eq!(format!("{:?}", fa.num), format!("{:?}", fb.num));
            apply(&mut a, e);
            apply(&mut b, e);
        }
    }
}
