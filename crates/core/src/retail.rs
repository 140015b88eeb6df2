//! Store purchases and returns: what a till sends beyond a payment (receipt, items, customer,
//! photo verification), and the receipt state that return-fraud features read.
//!
//! A purchase files its receipt: store, customer, the lines bought, and whether a face photo
//! was verified at the till. A return is matched to that receipt line by line (serial number
//! when the item has one, else SKU), and the features say what is wrong with it before it is
//! applied: no verified photo, another customer than the buyer, no receipt anywhere, units
//! already returned (at any store), the same receipt claimed at another store moments before,
//! a return right after the purchase or in a burst, a high-value item, more refunded than paid.
//!
//! Only a return that was not blocked is recorded against its receipt: a blocked fraudulent
//! claim must not make the real customer's return look like a duplicate. Like every other
//! state, receipts change in event order only, so replay reproduces the features exactly.
//!
//! # Returns counted per store, so sites converge
//! Stores at different sites apply each other's events in different orders. What a line has
//! had returned is therefore kept as every accepted claim with its store and units, never as
//! a running "units left" that each site would clamp differently: the claims form a grow-only
//! set per store (a G-counter per site), and the total is their sum in any order. When an
//! accepted claim takes a line past what was bought and the claims come from more than one
//! store, the line is in conflict: two sites each accepted a return the other had not seen
//! (a cut link, or a claim inside the replication delay). The conflict is queued for the host
//! ([`RetailState::take_conflicts`]) with every claim, sorted so that both sites raise the
//! very same alert.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::event::{EntityId, FieldError, TxKind, MAX_AMOUNT};
use crate::state::{entity_key, EntityKind};

/// Outcome of the photo check at the till (done by the binary before scoring).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhotoStatus {
    /// A face of good quality was found.
    Verified,
    /// The photo shows no face.
    NoFace,
    /// A face, but too small, blurred, dark or bright to rely on.
    PoorQuality,
    /// The file could not be decoded.
    Unreadable,
    /// No photo was sent.
    #[default]
    Missing,
}

impl PhotoStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PhotoStatus::Verified => "verified",
            PhotoStatus::NoFace => "no_face",
            PhotoStatus::PoorQuality => "poor_quality",
            PhotoStatus::Unreadable => "unreadable",
            PhotoStatus::Missing => "missing",
        }
    }
}

/// One line of a purchase or return as the till sends it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawItem {
    /// Stock-keeping unit.
    pub sku: Option<String>,
    /// Serial number of this very unit, when the item has one.
    pub serial: Option<String>,
    /// Unit price in major units.
    pub price: Option<serde_json::Number>,
    /// Units (default 1).
    pub quantity: Option<u32>,
}

/// One validated line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Stock-keeping unit.
    pub sku: EntityId,
    /// Serial number, when the item has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<EntityId>,
    /// Unit price.
    pub price: f64,
    /// Units, at least 1.
    pub quantity: u32,
}

/// What a purchase or return carries beyond a payment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Retail {
    /// The receipt (a return may come without one: allowed, but risky).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_id: Option<EntityId>,
    /// The customer at the till.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<EntityId>,
    /// Lines bought or returned.
    pub items: Vec<Item>,
    /// The photo check's outcome.
    #[serde(default)]
    pub photo: PhotoStatus,
    /// Content address (SHA-256) of the stored photo, never the image itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_ref: Option<String>,
}

/// Most lines in one purchase or return.
pub const MAX_ITEMS: usize = 200;
/// Most units in one line.
const MAX_QUANTITY: u32 = 10_000;

impl Retail {
    /// Validates the retail fields of a `kind` transaction. `None` for payments and refunds
    /// (which must not carry them), and for a purchase or return sent without any of them (a
    /// card purchase at a store, as clients sent before receipts existed). A purchase or
    /// return with them needs a store and at least one item; a purchase, a receipt too.
    pub fn parse(
        kind: TxKind,
        store: Option<&EntityId>,
        receipt_id: Option<String>,
        customer_id: Option<String>,
        items: Option<Vec<RawItem>>,
    ) -> Result<Option<Retail>, FieldError> {
        if !matches!(kind, TxKind::Purchase | TxKind::Return) {
            for (field, present) in [
                ("receipt_id", receipt_id.is_some()),
                ("items", items.is_some()),
            ] {
                if present {
                    return Err(FieldError::new(
                        field,
                        "belongs to purchases and returns only (set `kind`)",
                    ));
                }
            }
            return Ok(None);
        }
        if receipt_id.is_none() && customer_id.is_none() && items.is_none() {
            return Ok(None);
        }
        if store.is_none() {
            return Err(FieldError::new(
                "store_id",
                format!("is required for a {}", kind.as_str()),
            ));
        }
        let raw_items = items.unwrap_or_default();
        if raw_items.is_empty() {
            return Err(FieldError::new(
                "items",
                format!("a {} needs at least one item", kind.as_str()),
            ));
        }
        if raw_items.len() > MAX_ITEMS {
            return Err(FieldError::new(
                "items",
                format!("at most {MAX_ITEMS} lines are accepted"),
            ));
        }
        let items = raw_items
            .into_iter()
            .enumerate()
            .map(|(i, raw)| parse_item(i, raw))
            .collect::<Result<Vec<_>, _>>()?;
        if kind == TxKind::Purchase && receipt_id.is_none() {
            return Err(FieldError::new("receipt_id", "is required for a purchase"));
        }
        Ok(Some(Retail {
            receipt_id: receipt_id
                .map(|r| EntityId::parse("receipt_id", &r))
                .transpose()?,
            customer_id: customer_id
                .map(|c| EntityId::parse("customer_id", &c))
                .transpose()?,
            items,
            photo: PhotoStatus::Missing,
            photo_ref: None,
        }))
    }

    /// Value of the lines (price x quantity).
    pub fn value(&self) -> f64 {
        self.items
            .iter()
            .map(|i| i.price * f64::from(i.quantity))
            .sum()
    }
}

fn parse_item(i: usize, raw: RawItem) -> Result<Item, FieldError> {
    let field = |name: &str| format!("items[{i}].{name}");
    let sku = match raw.sku {
        Some(s) => EntityId::parse(&field("sku"), &s)?,
        None => return Err(FieldError::new(field("sku"), "is required")),
    };
    let serial = raw
        .serial
        .map(|s| EntityId::parse(&field("serial"), &s))
        .transpose()?;
    let price = match raw.price.as_ref().and_then(serde_json::Number::as_f64) {
        Some(p) if p.is_finite() && (0.0..=MAX_AMOUNT).contains(&p) => p,
        Some(_) => {
            return Err(FieldError::new(
                field("price"),
                format!("must be a number within 0..={MAX_AMOUNT}"),
            ))
        }
        None => return Err(FieldError::new(field("price"), "is required")),
    };
    let quantity = raw.quantity.unwrap_or(1);
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(FieldError::new(
            field("quantity"),
            format!("must be within 1..={MAX_QUANTITY}"),
        ));
    }
    if serial.is_some() && quantity != 1 {
        return Err(FieldError::new(
            field("quantity"),
            "must be 1 for an item with a serial number",
        ));
    }
    Ok(Item {
        sku,
        serial,
        price,
        quantity,
    })
}

/// An accepted return of some units of a receipt line, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ReturnMark {
    store: u64,
    at_ms: i64,
    units: u32,
    /// The return's transaction and store, for conflicts and the receipt view.
    tx: Box<str>,
    store_id: Box<str>,
}

/// One receipt line and what was returned of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Line {
    sku: u64,
    serial: Option<u64>,
    /// The SKU and serial as sent (for the receipt view and conflict alerts).
    sku_id: Box<str>,
    serial_id: Option<Box<str>>,
    price: f64,
    bought: u32,
    returns: Vec<ReturnMark>,
}

impl Line {
    fn returned(&self) -> u32 {
        self.returns.iter().map(|r| r.units).sum()
    }

    /// Whether accepted claims exceed what was bought and come from more than one store.
    fn in_conflict(&self) -> bool {
        self.returned() > self.bought
            && self
                .returns
                .iter()
                .any(|r| r.store != self.returns[0].store)
    }
}

/// One accepted return claim on a receipt line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The return transaction.
    pub transaction_id: String,
    /// The store it was accepted at.
    pub store_id: String,
    /// Units it claimed.
    pub units: u32,
    /// Its event time (ms).
    pub at_ms: i64,
}

/// A receipt line whose accepted returns, from more than one store, exceed what was bought.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReturnConflict {
    /// The receipt.
    pub receipt_id: String,
    /// The line's SKU.
    pub sku: String,
    /// The line's serial number, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Units bought on the line.
    pub bought: u32,
    /// Every accepted claim on the line, by event time then transaction id.
    pub claims: Vec<Claim>,
}

impl ReturnConflict {
    /// The same on every site for the same claims: the receipt, the line and the claiming
    /// transactions.
    pub fn key(&self) -> String {
        let mut k = format!(
            "{}|{}|{}",
            self.receipt_id,
            self.sku,
            self.serial.as_deref().unwrap_or("")
        );
        for c in &self.claims {
            k.push('|');
            k.push_str(&c.transaction_id);
        }
        k
    }
}

/// A receipt as the state holds it, for analysts and for checking that sites converged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReceiptView {
    /// Store of the purchase.
    pub store_id: String,
    /// Event time of the purchase (ms).
    pub purchased_at_ms: i64,
    /// Whether the purchase had a verified face photo.
    pub photo_verified: bool,
    /// The lines.
    pub lines: Vec<LineView>,
}

/// One line of a [`ReceiptView`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LineView {
    /// SKU.
    pub sku: String,
    /// Serial number, when the item has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Unit price.
    pub price: f64,
    /// Units bought.
    pub bought: u32,
    /// Units returned (accepted claims), per store: the per-site counters.
    pub returned_by_store: BTreeMap<String, u32>,
    /// Their sum (may exceed `bought` when sites accepted returns while cut off).
    pub returned: u32,
    /// The accepted claims.
    pub claims: Vec<Claim>,
}

/// A purchase's receipt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    store: u64,
    store_id: Box<str>,
    customer: Option<u64>,
    at_ms: i64,
    photo_verified: bool,
    lines: Vec<Line>,
}

/// Receipts are kept this long after the purchase (longer than any return policy).
const RECEIPT_TTL_MS: i64 = 180 * 86_400_000;
/// Another store's return of the same receipt line this recently is a concurrent claim.
pub const CONCURRENT_MS: i64 = 10 * 60_000;
/// Return times remembered per customer and per terminal (for bursts).
const RECENT_RETURNS: usize = 64;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Conflicts kept until taken. The host takes them after every apply; a caller that never
/// does (a replay, a benchmark) must not grow memory without bound, so the oldest go.
const MAX_PENDING_CONFLICTS: usize = 1024;
/// Receipts checked for expiry per applied retail event (amortised sweep).
const SWEEP_EVERY: u32 = 4096;

/// The receipt state of an engine.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RetailState {
    #[serde(with = "crate::snapshot::sorted_map")]
    receipts: HashMap<u64, Receipt>,
    #[serde(with = "crate::snapshot::sorted_map")]
    customer_returns: HashMap<u64, VecDeque<i64>>,
    #[serde(with = "crate::snapshot::sorted_map")]
    terminal_returns: HashMap<u64, VecDeque<i64>>,
    watermark: i64,
    since_sweep: u32,
    /// Conflicts found by the latest applies, until the host takes them (not state: replay
    /// finds them again).
    #[serde(skip)]
    conflicts: Vec<ReturnConflict>,
}

/// What the state says about a return, before it is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReturnFacts {
    /// A receipt with this id was bought (at any store).
    pub receipt_found: bool,
    /// The buyer on the receipt differs from the returning customer (`None`: either unknown).
    pub customer_mismatch: Option<bool>,
    /// The purchase had a verified face photo.
    pub purchase_photo_verified: Option<bool>,
    /// Units claimed beyond what is left to return on the matched lines, or not on the
    /// receipt at all.
    pub already_returned: u32,
    /// Returns of the same receipt lines at another store within [`CONCURRENT_MS`] before.
    pub other_store_recent: u32,
    /// Minutes from the purchase to this return.
    pub mins_since_purchase: Option<f64>,
    /// Returns by this customer in the 24 hours before.
    pub customer_returns_24h: Option<u32>,
    /// Returns at this terminal in the hour before.
    pub terminal_returns_1h: Option<u32>,
    /// Highest unit price among the returned items.
    pub max_item_price: f64,
    /// Refund amount beyond what was paid for the matched units (0 when within).
    pub excess_value: Option<f64>,
}

fn key(kind: EntityKind, id: &EntityId) -> u64 {
    entity_key(kind, id.as_str())
}

/// Key of a SKU or serial (its own key space: entity kinds do not cover items).
fn item_key(prefix: u8, id: &EntityId) -> u64 {
    let mut s = String::with_capacity(id.as_str().len() + 2);
    s.push(char::from(prefix));
    s.push(':');
    s.push_str(id.as_str());
    entity_key(EntityKind::Merchant, &s)
}

/// The receipt line an item claims: the same serial when it has one, else the first line of
/// the same SKU with units left (else the first of that SKU).
fn match_line(lines: &[Line], item: &Item) -> Option<usize> {
    if let Some(serial) = &item.serial {
        let s = item_key(b's', serial);
        if let Some(i) = lines.iter().position(|l| l.serial == Some(s)) {
            return Some(i);
        }
    }
    let sku = item_key(b'k', &item.sku);
    lines
        .iter()
        .position(|l| l.sku == sku && l.returned() < l.bought)
        .or_else(|| lines.iter().position(|l| l.sku == sku))
}

fn count_since(times: Option<&VecDeque<i64>>, from: i64, to: i64) -> u32 {
    times.map_or(0, |t| {
        t.iter().filter(|&&at| at > from && at <= to).count() as u32
    })
}

impl RetailState {
    /// Facts about a return (`store`, `terminal`, the customer and items in `retail`) at
    /// `at_ms` with refund `amount`, from the state before it.
    pub fn return_facts(
        &self,
        retail: &Retail,
        store: Option<&EntityId>,
        terminal: Option<&EntityId>,
        at_ms: i64,
        amount: f64,
    ) -> ReturnFacts {
        let customer = retail
            .customer_id
            .as_ref()
            .map(|c| key(EntityKind::User, c));
        let store = store.map(|s| key(EntityKind::Merchant, s));
        let mut facts = ReturnFacts {
            max_item_price: retail.items.iter().map(|i| i.price).fold(0.0, f64::max),
            customer_returns_24h: customer
                .map(|c| count_since(self.customer_returns.get(&c), at_ms - DAY_MS, at_ms)),
            terminal_returns_1h: terminal.map(|t| {
                count_since(
                    self.terminal_returns.get(&key(EntityKind::Terminal, t)),
                    at_ms - HOUR_MS,
                    at_ms,
                )
            }),
            ..ReturnFacts::default()
        };
        let receipt = retail
            .receipt_id
            .as_ref()
            .and_then(|r| self.receipts.get(&key(EntityKind::Merchant, r)));
        let Some(receipt) = receipt else {
            return facts;
        };
        facts.receipt_found = true;
        facts.customer_mismatch = match (receipt.customer, customer) {
            (Some(bought), Some(returning)) => Some(bought != returning),
            _ => None,
        };
        facts.purchase_photo_verified = Some(receipt.photo_verified);
        facts.mins_since_purchase = Some((at_ms - receipt.at_ms) as f64 / 60_000.0);
        let mut left: Vec<u32> = receipt
            .lines
            .iter()
            .map(|l| l.bought.saturating_sub(l.returned()))
            .collect();
        let mut paid = 0.0;
        for item in &retail.items {
            let Some(i) = match_line(&receipt.lines, item) else {
                facts.already_returned += item.quantity;
                continue;
            };
            let line = &receipt.lines[i];
            let take = item.quantity.min(left[i]);
            left[i] -= take;
            facts.already_returned += item.quantity - take;
            paid += line.price * f64::from(take);
            facts.other_store_recent += line
                .returns
                .iter()
                .filter(|r| {
                    Some(r.store) != store && r.at_ms > at_ms - CONCURRENT_MS && r.at_ms <= at_ms
                })
                .count() as u32;
        }
        facts.excess_value = Some((amount - paid).max(0.0));
        facts
    }

    /// Records a purchase's receipt or an accepted return (transaction `tx_id`); `accepted`
    /// is false for a return the engine blocked, which is not recorded against its receipt.
    /// An accepted return that puts a line in conflict queues a [`ReturnConflict`].
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        kind: TxKind,
        retail: &Retail,
        store: Option<&EntityId>,
        terminal: Option<&EntityId>,
        tx_id: &str,
        at_ms: i64,
        accepted: bool,
    ) {
        self.watermark = self.watermark.max(at_ms);
        let store_id: Box<str> = store.map_or("", |s| s.as_str()).into();
        let store = store.map_or(0, |s| key(EntityKind::Merchant, s));
        let customer = retail
            .customer_id
            .as_ref()
            .map(|c| key(EntityKind::User, c));
        match kind {
            TxKind::Purchase => {
                if let Some(r) = &retail.receipt_id {
                    let lines = retail
                        .items
                        .iter()
                        .map(|i| Line {
                            sku: item_key(b'k', &i.sku),
                            serial: i.serial.as_ref().map(|s| item_key(b's', s)),
                            sku_id: i.sku.as_str().into(),
                            serial_id: i.serial.as_ref().map(|s| s.as_str().into()),
                            price: i.price,
                            bought: i.quantity,
                            returns: Vec::new(),
                        })
                        .collect();
                    // A receipt id seen again replaces the old receipt (a till re-used it).
                    self.receipts.insert(
                        key(EntityKind::Merchant, r),
                        Receipt {
                            store,
                            store_id,
                            customer,
                            at_ms,
                            photo_verified: retail.photo == PhotoStatus::Verified,
                            lines,
                        },
                    );
                }
            }
            TxKind::Return if accepted => {
                let remember = |map: &mut HashMap<u64, VecDeque<i64>>, k: u64| {
                    let times = map.entry(k).or_default();
                    times.push_back(at_ms);
                    if times.len() > RECENT_RETURNS {
                        times.pop_front();
                    }
                };
                if let Some(c) = customer {
                    remember(&mut self.customer_returns, c);
                }
                if let Some(t) = terminal {
                    remember(&mut self.terminal_returns, key(EntityKind::Terminal, t));
                }
                let receipt_id = retail.receipt_id.as_ref();
                let receipt =
                    receipt_id.and_then(|r| self.receipts.get_mut(&key(EntityKind::Merchant, r)));
                if let (Some(receipt), Some(receipt_id)) = (receipt, receipt_id) {
                    for item in &retail.items {
                        let Some(i) = match_line(&receipt.lines, item) else {
                            continue;
                        };
                        let line = &mut receipt.lines[i];
                        // The whole claim is recorded, even beyond what is left: clamping
                        // would depend on the order claims arrive in, and sites must agree.
                        line.returns.push(ReturnMark {
                            store,
                            at_ms,
                            units: item.quantity.min(line.bought),
                            tx: tx_id.into(),
                            store_id: store_id.clone(),
                        });
                        if line.in_conflict() {
                            if self.conflicts.len() == MAX_PENDING_CONFLICTS {
                                self.conflicts.remove(0);
                            }
                            self.conflicts.push(ReturnConflict {
                                receipt_id: receipt_id.as_str().to_owned(),
                                sku: line.sku_id.to_string(),
                                serial: line.serial_id.as_deref().map(str::to_owned),
                                bought: line.bought,
                                claims: claims(line),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.sweep();
        }
    }

    /// Forgets receipts past their time to live and return times older than a day.
    fn sweep(&mut self) {
        let now = self.watermark;
        self.receipts.retain(|_, r| r.at_ms > now - RECEIPT_TTL_MS);
        for map in [&mut self.customer_returns, &mut self.terminal_returns] {
            map.retain(|_, times| times.back().is_some_and(|&t| t > now - DAY_MS));
        }
    }

    /// Receipts held.
    pub fn receipts(&self) -> usize {
        self.receipts.len()
    }

    /// Conflicts found since the last call, oldest first.
    pub fn take_conflicts(&mut self) -> Vec<ReturnConflict> {
        std::mem::take(&mut self.conflicts)
    }

    /// The receipt `receipt_id` as held, with its returns per store.
    pub fn receipt(&self, receipt_id: &EntityId) -> Option<ReceiptView> {
        let r = self.receipts.get(&key(EntityKind::Merchant, receipt_id))?;
        Some(ReceiptView {
            store_id: r.store_id.to_string(),
            purchased_at_ms: r.at_ms,
            photo_verified: r.photo_verified,
            lines: r
                .lines
                .iter()
                .map(|l| {
                    let mut by_store = BTreeMap::new();
                    for m in &l.returns {
                        *by_store.entry(m.store_id.to_string()).or_insert(0) += m.units;
                    }
                    LineView {
                        sku: l.sku_id.to_string(),
                        serial: l.serial_id.as_deref().map(str::to_owned),
                        price: l.price,
                        bought: l.bought,
                        returned: l.returned(),
                        returned_by_store: by_store,
                        claims: claims(l),
                    }
                })
                .collect(),
        })
    }
}

/// A line's claims in the order every site agrees on: event time, then transaction id.
fn claims(line: &Line) -> Vec<Claim> {
    let mut out: Vec<Claim> = line
        .returns
        .iter()
        .map(|m| Claim {
            transaction_id: m.tx.to_string(),
            store_id: m.store_id.to_string(),
            units: m.units,
            at_ms: m.at_ms,
        })
        .collect();
    out.sort_by(|a, b| (a.at_ms, &a.transaction_id).cmp(&(b.at_ms, &b.transaction_id)));
    out
}
