//! Transactions as the engine sees them: parsed, validated, card numbers already keyed-hashed.
//!
//! "Parse, don't validate": [`RawTransaction`] is what arrives on the wire; [`Transaction`] is
//! what survives [`Transaction::parse`]. A raw card number (PAN) only ever lives in
//! [`RawTransaction`]; past parsing it is a [`CardToken`], an HMAC under the operator's key, so
//! no later stage (state, storage, logs, responses) can even represent it.

use std::fmt;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sha2::Sha256;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Longest accepted entity id (user, card, device, ...), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Largest accepted amount; anything above is treated as a client error, not a transaction.
pub const MAX_AMOUNT: f64 = 1.0e9;

/// A validation failure that names the offending field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// The JSON field name as the client sent it.
    pub field: String,
    /// What is wrong, in words a client developer understands (never echoes a card number).
    pub problem: String,
}

impl FieldError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Event time: milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Earliest accepted event time: 1970-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp(0);
    /// Latest accepted event time: 9998-12-31T23:59:59.999Z (so every accepted time formats
    /// back to RFC 3339 and reads back identically).
    pub const MAX: Timestamp = Timestamp(253_370_764_799_999);

    /// Parses RFC 3339 (`2024-05-01T12:00:00Z`, offsets allowed) or the zone-less
    /// `2018-04-01 00:00:31` form that history exports use (read as UTC). Times outside
    /// [`Timestamp::MIN`]..=[`Timestamp::MAX`] are rejected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ms = if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            t.unix_timestamp_nanos() / 1_000_000
        } else {
            let naive =
                time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
            match time::PrimitiveDateTime::parse(s, naive) {
                Ok(t) => t.assume_utc().unix_timestamp_nanos() / 1_000_000,
                Err(_) => {
                    return Err(format!(
                        "`{}` is not an RFC 3339 timestamp (e.g. 2024-05-01T12:00:00Z)",
                        truncate_for_message(s)
                    ))
                }
            }
        };
        if ms < i128::from(Self::MIN.0) || ms > i128::from(Self::MAX.0) {
            return Err(format!(
                "`{}` is outside the accepted range 1970-01-01 to 9998-12-31",
                truncate_for_message(s)
            ));
        }
        Ok(Timestamp(ms as i64))
    }

    /// RFC 3339 text in UTC with millisecond precision.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => t.format(&Rfc3339).unwrap_or_else(|_| self.0.to_string()),
            Err(_) => self.0.to_string(),
        }
    }

    /// Hour of the day (0..24) in UTC.
    pub fn hour_of_day(self) -> u32 {
        (self.0.rem_euclid(86_400_000) / 3_600_000) as u32
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(de::Error::custom)
    }
}

/// What kind of event a transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TxKind {
    /// A card payment (the default).
    #[default]
    Payment,
    /// A store purchase.
    Purchase,
    /// A store return.
    Return,
    /// A refund to a card.
    Refund,
}

impl TxKind {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::Payment => "payment",
            TxKind::Purchase => "purchase",
            TxKind::Return => "return",
            TxKind::Refund => "refund",
        }
    }

    fn parse(s: &str) -> Result<Self, FieldError> {
        match s {
            "payment" => Ok(TxKind::Payment),
            "purchase" => Ok(TxKind::Purchase),
            "return" => Ok(TxKind::Return),
            "refund" => Ok(TxKind::Refund),
            other => Err(FieldError::new(
                "kind",
                format!(
                    "unknown kind `{}`; expected one of payment, purchase, return, refund",
                    truncate_for_message(other)
                ),
            )),
        }
    }
}

/// A validated, non-empty identifier of bounded length without control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntityId(Box<str>);

impl EntityId {
    /// Validates `value` as the id in `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        if value.is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        if value.len() > MAX_ID_LEN {
            return Err(FieldError::new(
                field,
                format!(
                    "is {} bytes long; at most {MAX_ID_LEN} are allowed",
                    value.len()
                ),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(EntityId(value.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A keyed hash of a card number: `ct_` and 32 hex digits. The PAN cannot be recovered from it
/// without the key, and the same PAN always maps to the same token under one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CardToken(String);

impl CardToken {
    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Turns card numbers into [`CardToken`]s with HMAC-SHA256 under a secret key.
#[derive(Clone)]
pub struct CardHasher {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for CardHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardHasher(<secret key>)")
    }
}

impl CardHasher {
    /// A hasher keyed with `key` (any length; 32 random bytes recommended).
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        CardHasher { mac }
    }

    /// The token of a card number given as its digits.
    pub fn token(&self, pan_digits: &str) -> CardToken {
        let mut mac = self.mac.clone();
        mac.update(pan_digits.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut s = String::with_capacity(3 + 32);
        s.push_str("ct_");
        for b in &out[..16] {
            s.push_str(&format!("{b:02x}"));
        }
        CardToken(s)
    }
}

/// A raw card number as it arrives: a string or a JSON integer. Its `Debug` never shows it, and
/// a malformed one is rejected without echoing the value.
pub struct PanInput(String);

impl fmt::Debug for PanInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PanInput(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for PanInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PanVisitor;
        impl Visitor<'_> for PanVisitor {
            type Value = PanInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a card number as a string of 12 to 19 digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PanInput, E> {
                Ok(PanInput(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PanInput, E> {
                Ok(PanInput(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<PanInput, E> {
                Err(E::custom("must be a string of 12 to 19 digits"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<PanInput, E> {
                Err(E::custom("must be a string of 12 to 19 digits"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<PanInput, E> {
                Err(E::custom("must be a string of 12 to 19 digits"))
            }
        }
        d.deserialize_any(PanVisitor)
    }
}

impl PanInput {
    /// Wraps a card number read from a history file.
    pub fn from_text(s: String) -> Self {
        PanInput(s)
    }

    /// The digits of the card number, spaces and dashes removed.
    fn digits(&self) -> Result<String, FieldError> {
        let digits: String = self.0.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldError::new(
                "card_number",
                "must contain only digits, spaces and dashes",
            ));
        }
        if !(12..=19).contains(&digits.len()) {
            return Err(FieldError::new(
                "card_number",
                format!("has {} digits; a card number has 12 to 19", digits.len()),
            ));
        }
        Ok(digits)
    }
}

/// A point on the globe in degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Latitude, -90..=90.
    pub lat: f64,
    /// Longitude, -180..=180.
    pub lon: f64,
}

impl GeoPoint {
    /// Great-circle distance in kilometres (haversine).
    pub fn distance_km(self, other: GeoPoint) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0088;
        let (la1, la2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = la2 - la1;
        let dlon = (other.lon - self.lon).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

/// A transaction exactly as clients send it. Every field is optional here so that a missing
/// field is reported by [`Transaction::parse`] with its name, not as a generic JSON error.
/// Unknown fields are ignored so existing clients keep working as they add their own.
#[derive(Debug, Default, Deserialize)]
pub struct RawTransaction {
    /// Client-chosen id; generated when absent.
    pub transaction_id: Option<String>,
    /// Event time (RFC 3339); server time when absent.
    pub timestamp: Option<String>,
    /// `payment` (default), `purchase`, `return`, `refund`.
    pub kind: Option<String>,
    /// The amount in major units (e.g. 150.00). Required.
    pub amount: Option<serde_json::Number>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    /// Customer / account id.
    pub user_id: Option<String>,
    /// Card id chosen by the client (already tokenised by them).
    pub card_id: Option<String>,
    /// Raw card number (PAN): keyed-hashed on parse, never kept.
    pub card_number: Option<PanInput>,
    /// Device fingerprint.
    pub device_id: Option<String>,
    /// Client IP address.
    pub ip: Option<String>,
    /// E-mail address of the customer.
    pub email: Option<String>,
    /// Merchant name or id.
    pub merchant: Option<String>,
    /// Merchant category (e.g. MCC or a label).
    pub merchant_category: Option<String>,
    /// Terminal id (POS or ATM).
    pub terminal_id: Option<String>,
    /// Store id.
    pub store_id: Option<String>,
    /// ISO 3166 country code.
    pub country: Option<String>,
    /// Latitude of the transaction.
    pub lat: Option<f64>,
    /// Longitude of the transaction.
    pub lon: Option<f64>,
    /// Purchases and returns: the receipt.
    pub receipt_id: Option<String>,
    /// Purchases and returns: the customer at the till.
    pub customer_id: Option<String>,
    /// Purchases and returns: the lines bought or returned.
    pub items: Option<Vec<crate::retail::RawItem>>,
    /// Purchases and returns: the customer's photo from the till, base64 JPEG or PNG. The
    /// server checks and stores it before parsing and only its outcome and content address
    /// reach the transaction; [`Transaction::parse`] ignores this field.
    pub photo: Option<String>,
}

/// A validated transaction. Entity ids that were absent are `None` (their features are
/// missing values, not zeros).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// Unique id.
    pub transaction_id: EntityId,
    /// Event time.
    pub timestamp: Timestamp,
    /// What kind of event.
    pub kind: TxKind,
    /// Amount in major units, finite and within `0..=MAX_AMOUNT`.
    pub amount: f64,
    /// ISO 4217 code, upper case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Customer / account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<EntityId>,
    /// The card entity: the client's `card_id`, or the card token when only a PAN was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_id: Option<EntityId>,
    /// Keyed hash of the card number, when one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_token: Option<CardToken>,
    /// Device fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<EntityId>,
    /// Client IP address, normalised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<EntityId>,
    /// E-mail, lower case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EntityId>,
    /// Merchant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<EntityId>,
    /// Merchant category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_category: Option<EntityId>,
    /// Terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<EntityId>,
    /// Store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<EntityId>,
    /// Country code, upper case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Where it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<GeoPoint>,
    /// Purchases and returns: receipt, customer, items and the photo check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retail: Option<Box<crate::retail::Retail>>,
}

/// What [`Transaction::parse`] needs from its surroundings: the clock and id source stay
/// outside the core.
pub struct ParseContext<'a> {
    /// The keyed hasher for card numbers.
    pub card_hasher: &'a CardHasher,
    /// Event time to use when the transaction has none (the server's clock).
    pub now: Timestamp,
    /// Latest event time accepted: the server's clock plus the allowed clock skew for live
    /// traffic, [`Timestamp::MAX`] for history. A future timestamp would otherwise move every
    /// window and the idle-expiry clock forward for good.
    pub latest: Timestamp,
    /// Id to use when the transaction has none.
    pub generated_id: &'a dyn Fn() -> String,
}

fn opt_id(field: &str, v: Option<String>) -> Result<Option<EntityId>, FieldError> {
    v.map(|s| EntityId::parse(field, &s)).transpose()
}

fn code(field: &str, v: Option<String>, len: usize) -> Result<Option<String>, FieldError> {
    match v {
        None => Ok(None),
        Some(s) if s.len() == len && s.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Ok(Some(s.to_ascii_uppercase()))
        }
        Some(_) => Err(FieldError::new(
            field,
            format!("must be a {len}-letter code"),
        )),
    }
}

/// Whether `s` is 13 to 19 digits that pass the Luhn check: a card number, whatever field it
/// arrived in.
pub fn looks_like_pan(s: &str) -> bool {
    let b = s.as_bytes();
    if !(13..=19).contains(&b.len()) || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// Shortens untrusted text before it goes into an error message.
fn truncate_for_message(s: &str) -> String {
    let mut out: String = s.chars().take(40).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

impl Transaction {
    /// Validates a raw transaction. Every rejection names the field and the problem.
    pub fn parse(raw: RawTransaction, cx: &ParseContext<'_>) -> Result<Transaction, FieldError> {
        let amount = match raw.amount {
            None => return Err(FieldError::new("amount", "is required")),
            Some(n) => n
                .as_f64()
                .ok_or_else(|| FieldError::new("amount", "is not a representable number"))?,
        };
        if !amount.is_finite() {
            return Err(FieldError::new("amount", "must be a finite number"));
        }
        if amount < 0.0 {
            return Err(FieldError::new("amount", "must not be negative"));
        }
        if amount > MAX_AMOUNT {
            return Err(FieldError::new(
                "amount",
                format!("{amount} is above the limit of {MAX_AMOUNT}"),
            ));
        }
        let transaction_id = match raw.transaction_id {
            Some(id) => EntityId::parse("transaction_id", &id)?,
            None => EntityId::parse("transaction_id", &(cx.generated_id)())?,
        };
        let timestamp = match raw.timestamp {
            Some(t) => Timestamp::parse(&t).map_err(|p| FieldError::new("timestamp", p))?,
            None => cx.now,
        };
        if timestamp > cx.latest {
            return Err(FieldError::new(
                "timestamp",
                format!(
                    "is {} s ahead of the server clock ({}); check the client's clock",
                    (timestamp.0 - cx.now.0) / 1000,
                    cx.now.to_rfc3339()
                ),
            ));
        }
        let kind = match raw.kind {
            Some(k) => TxKind::parse(&k)?,
            None => TxKind::Payment,
        };
        let card_token = raw
            .card_number
            .map(|pan| pan.digits().map(|d| cx.card_hasher.token(&d)))
            .transpose()?;
        // A card number sent as `card_id` is hashed like `card_number`: it must not be stored.
        let (card_id, card_token) = match (opt_id("card_id", raw.card_id)?, card_token) {
            (Some(id), token) if looks_like_pan(id.as_str()) => {
                let t = cx.card_hasher.token(id.as_str());
                (Some(EntityId(t.as_str().into())), token.or(Some(t)))
            }
            (Some(id), token) => (Some(id), token),
            (None, Some(token)) => (Some(EntityId(token.as_str().into())), Some(token)),
            (None, None) => (None, None),
        };
        let ip = match raw.ip {
            None => None,
            Some(s) => {
                let addr: IpAddr = s
                    .trim()
                    .parse()
                    .map_err(|_| FieldError::new("ip", "is not a valid IPv4 or IPv6 address"))?;
                Some(EntityId(addr.to_string().into()))
            }
        };
        let email = match raw.email {
            None => None,
            Some(s) => {
                let e = EntityId::parse("email", s.trim())?;
                if !e.as_str().contains('@') {
                    return Err(FieldError::new("email", "is not an e-mail address"));
                }
                Some(EntityId(e.as_str().to_lowercase().into()))
            }
        };
        let location = match (raw.lat, raw.lon) {
            (None, None) => None,
            (Some(lat), Some(lon)) => {
                if !(-90.0..=90.0).contains(&lat) {
                    return Err(FieldError::new("lat", "must be between -90 and 90"));
                }
                if !(-180.0..=180.0).contains(&lon) {
                    return Err(FieldError::new("lon", "must be between -180 and 180"));
                }
                Some(GeoPoint { lat, lon })
            }
            (Some(_), None) => return Err(FieldError::new("lon", "is required when lat is given")),
            (None, Some(_)) => return Err(FieldError::new("lat", "is required when lon is given")),
        };
        let store_id = opt_id("store_id", raw.store_id)?;
        let retail = crate::retail::Retail::parse(
            kind,
            store_id.as_ref(),
            raw.receipt_id,
            raw.customer_id,
            raw.items,
        )?
        .map(Box::new);
        Ok(Transaction {
            transaction_id,
            timestamp,
            kind,
            amount,
            currency: code("currency", raw.currency, 3)?,
            user_id: opt_id("user_id", raw.user_id)?,
            card_id,
            card_token,
            device_id: opt_id("device_id", raw.device_id)?,
            ip,
            email,
            merchant: opt_id("merchant", raw.merchant)?,
            merchant_category: opt_id("merchant_category", raw.merchant_category)?,
            terminal_id: opt_id("terminal_id", raw.terminal_id)?,
            store_id,
            country: code("country", raw.country, 2)?,
            location,
            retail,
        })
    }
}

/// Parses a transaction from JSON for tests: fixed key, clock at 2023-11-14, no future limit.
#[cfg(test)]
pub(crate) fn test_tx(json: &str) -> Transaction {
    let hasher = CardHasher::new(b"k");
    let cx = ParseContext {
        card_hasher: &hasher,
        now: Timestamp::from_millis(1_700_000_000_000),
        latest: Timestamp::MAX,
        generated_id: &|| "id".into(),
    };
    let raw: RawTransaction = serde_json::from_str(json).expect("test json");
    Transaction::parse(raw, &cx).expect("valid test transaction")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx_parse(json: &str) -> Result<Transaction, FieldError> {
        let hasher = CardHasher::new(b"test-key");
        let cx = ParseContext {
            card_hasher: &hasher,
            now: Timestamp::from_millis(1_800_000_000_000),
            latest: Timestamp::from_millis(1_800_000_300_000),
            generated_id: &|| "gen-1".to_string(),
        };
        let raw: RawTransaction = serde_json::from_str(json).expect("valid json");
        Transaction::parse(raw, &cx)
    }

    #[test]
    fn legacy_payload_parses_as_is() {
        let tx = cx_parse(r#"{"user_id":"user-ring-1","card_id":"card-ring-1","device_id":"device-shared-123","amount":150.00,"merchant":"Online Store"}"#).unwrap();
        assert_eq!(tx.amount, 150.0);
        assert_eq!(tx.user_id.unwrap().as_str(), "user-ring-1");
        assert_eq!(tx.transaction_id.as_str(), "gen-1");
        assert_eq!(tx.kind, TxKind::Payment);
        assert_eq!(tx.timestamp.millis(), 1_800_000_000_000);
    }

    #[test]
    fn amount_errors_name_the_field() {
        assert_eq!(cx_parse(r#"{}"#).unwrap_err().field, "amount");
        assert_eq!(cx_parse(r#"{"amount":-1}"#).unwrap_err().field, "amount");
        assert_eq!(cx_parse(r#"{"amount":1e12}"#).unwrap_err().field, "amount");
        assert!(cx_parse(r#"{"amount":0}"#).is_ok());
    }

    #[test]
    fn ids_are_bounded_and_non_empty() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        let e = cx_parse(&format!(r#"{{"amount":1,"user_id":"{long}"}}"#)).unwrap_err();
        assert_eq!(e.field, "user_id");
        assert_eq!(
            cx_parse(r#"{"amount":1,"card_id":""}"#).unwrap_err().field,
            "card_id"
        );
    }

    #[test]
    fn card_number_becomes_a_keyed_token_and_is_never_echoed() {
        let tx = cx_parse(r#"{"amount":5,"card_number":"4111 1111 1111 1111"}"#).unwrap();
        let token = tx.card_token.clone().unwrap();
        assert!(token.as_str().starts_with("ct_"));
        assert_eq!(tx.card_id.as_ref().unwrap().as_str(), token.as_str());
        let stored = serde_json::to_string(&tx).unwrap();
        assert!(!stored.contains("4111"));
        let same = cx_parse(r#"{"amount":5,"card_number":4111111111111111}"#).unwrap();
        assert_eq!(same.card_token.unwrap(), token);
        let other_key = CardHasher::new(b"another").token("4111111111111111");
        assert_ne!(other_key, token);
        let e = cx_parse(r#"{"amount":5,"card_number":"4111-abcd-1111"}"#).unwrap_err();
        assert_eq!(e.field, "card_number");
        assert!(!e.problem.contains("4111"));
    }

    #[test]
    fn kind_timestamp_location_and_codes_are_checked() {
        assert_eq!(
            cx_parse(r#"{"amount":1,"kind":"steal"}"#)
                .unwrap_err()
                .field,
            "kind"
        );
        assert_eq!(
            cx_parse(r#"{"amount":1,"timestamp":"yesterday"}"#)
                .unwrap_err()
                .field,
            "timestamp"
        );
        assert_eq!(
            cx_parse(r#"{"amount":1,"lat":91,"lon":0}"#)
                .unwrap_err()
                .field,
            "lat"
        );
        assert_eq!(
            cx_parse(r#"{"amount":1,"lat":10}"#).unwrap_err().field,
            "lon"
        );
        assert_eq!(
            cx_parse(r#"{"amount":1,"ip":"999.1.1.1"}"#)
                .unwrap_err()
                .field,
            "ip"
        );
        assert_eq!(
            cx_parse(r#"{"amount":1,"currency":"EURO"}"#)
                .unwrap_err()
                .field,
            "currency"
        );
        let tx =
            cx_parse(r#"{"amount":1,"timestamp":"2018-04-01 00:00:31","currency":"eur"}"#).unwrap();
        assert_eq!(tx.timestamp.to_rfc3339(), "2018-04-01T00:00:31Z");
        assert_eq!(tx.currency.as_deref(), Some("EUR"));
    }

    #[test]
    fn absurd_timestamps_are_rejected() {
        for t in [
            "0000-01-01T00:00:00+01:00",
            "9999-12-31T23:30:00-01:00",
            "1969-12-31T23:59:59Z",
        ] {
            let e = cx_parse(&format!(r#"{{"amount":1,"timestamp":"{t}"}}"#)).unwrap_err();
            assert_eq!(e.field, "timestamp", "{t}");
        }
        let e = cx_parse(r#"{"amount":1,"timestamp":"2031-01-01T00:00:00Z"}"#).unwrap_err();
        assert_eq!(e.field, "timestamp");
        assert!(
            e.problem.contains("ahead of the server clock"),
            "{}",
            e.problem
        );
        // Both ends of the range format and read back identically.
        for ts in [Timestamp::MIN, Timestamp::MAX] {
            assert_eq!(Timestamp::parse(&ts.to_rfc3339()), Ok(ts));
        }
    }

    #[test]
    fn a_card_number_in_card_id_is_hashed_too() {
        assert!(looks_like_pan("4556737586899855"));
        assert!(!looks_like_pan("4556737586899856"), "Luhn");
        assert!(!looks_like_pan("card-123"));
        let tx = cx_parse(r#"{"amount":1,"card_id":"4556737586899855"}"#).unwrap();
        let id = tx.card_id.unwrap();
        assert!(id.as_str().starts_with("ct_"));
        let same = cx_parse(r#"{"amount":1,"card_number":"4556 7375 8689 9855"}"#).unwrap();
        assert_eq!(same.card_id.unwrap(), id);
    }

    #[test]
    fn stored_form_round_trips() {
        let tx = cx_parse(r#"{"amount":12.5,"user_id":"u","lat":1.5,"lon":2.5,"timestamp":"2024-01-02T03:04:05.678Z"}"#).unwrap();
        let json = serde_json::to_string(&tx).unwrap();
        let back: Transaction = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tx);
    }

    #[test]
    fn haversine_is_sane() {
        let paris = GeoPoint {
            lat: 48.8566,
            lon: 2.3522,
        };
        let london = GeoPoint {
            lat: 51.5074,
            lon: -0.1278,
        };
        let d = paris.distance_km(london);
        assert!((d - 343.5).abs() < 2.0, "{d}");
    }
}
