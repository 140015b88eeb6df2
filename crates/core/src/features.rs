//! The feature catalog: every value a rule (and later a model) can read, by name and type.
//!
//! The catalog is the single source of truth: live scoring, replay and training all fill the
//! same [`FeatureValues`] through [`crate::state::EntityState::features`], and rules bind to
//! features by their dotted names at compile time. Numbers and booleans live in one `f64`
//! array (booleans as `0.0` / `1.0`); a missing value (absent entity, no history yet) is `NaN`.
//! Text values are borrowed from the transaction.

/// Bumped whenever a feature is added, removed or changes meaning; recorded by trained models.
pub const CATALOG_VERSION: u32 = 3;

/// The type a feature has in the rule language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureType {
    /// A real number; missing is `NaN`.
    Number,
    /// True or false; stored as `1.0` / `0.0`, missing is `NaN`.
    Bool,
    /// Text from the transaction; missing is `None`.
    Text,
}

impl FeatureType {
    /// The type's name as the rule language reports it.
    pub fn name(self) -> &'static str {
        match self {
            FeatureType::Number => "number",
            FeatureType::Bool => "bool",
            FeatureType::Text => "string",
        }
    }
}

/// One entry in the catalog.
#[derive(Clone, Copy, Debug)]
pub struct FeatureDef {
    /// Dotted name, e.g. `card.count_1m`.
    pub name: &'static str,
    /// Its type.
    pub ty: FeatureType,
    /// Index into [`FeatureValues::num`] (Number, Bool) or [`FeatureValues::text`] (Text).
    pub index: usize,
    /// What it measures, for analysts.
    pub description: &'static str,
    /// How a value reads in a decision's reasons: `{}` stands for the number, `{%}` for it
    /// as a percentage; a boolean has the true and the false wording around a `|`. Empty for
    /// text features.
    pub says: &'static str,
}

impl FeatureDef {
    /// The value `v` in words an analyst reads, e.g. "the amount is 4.2 times this card's
    /// average"; a missing value (`NaN`) says so.
    pub fn describe(&self, v: f64) -> String {
        if v.is_nan() || self.says.is_empty() {
            let what = self.description.trim_end_matches('.');
            return format!("{what}: not known yet");
        }
        if self.ty == FeatureType::Bool {
            let (yes, no) = self.says.split_once('|').unwrap_or((self.says, self.says));
            return if v != 0.0 { yes } else { no }.to_owned();
        }
        if self.says.contains("{%}") {
            let pct = crate::rules::format_number((v * 1000.0).round() / 10.0);
            self.says.replace("{%}", &format!("{pct}%"))
        } else {
            self.says.replace("{}", &crate::rules::format_number(v))
        }
    }
}

macro_rules! numeric_features {
    ($( $variant:ident => $name:literal, $ty:ident, $says:literal, $desc:literal; )*) => {
        /// Numeric and boolean features, in catalog order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Num { $( #[doc = $desc] $variant ),* }

        /// Definitions of the numeric and boolean features, indexed by [`Num`].
        pub const NUM_FEATURES: &[FeatureDef] = &[
            $( FeatureDef { name: $name, ty: FeatureType::$ty, index: Num::$variant as usize, description: $desc, says: $says } ),*
        ];
    };
}

macro_rules! text_features {
    ($( $variant:ident => $name:literal, $desc:literal; )*) => {
        /// Text features, in catalog order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Text { $( #[doc = $desc] $variant ),* }

        /// Definitions of the text features, indexed by [`Text`].
        pub const TEXT_FEATURES: &[FeatureDef] = &[
            $( FeatureDef { name: $name, ty: FeatureType::Text, index: Text::$variant as usize, description: $desc, says: "" } ),*
        ];
    };
}

numeric_features! {
    TxAmount => "tx.amount", Number, "the amount is {}", "Amount of this transaction.";
    TxHour => "tx.hour", Number, "made at {} h (UTC)", "Hour of the day (UTC, 0-23) of this transaction.";
    TxHasCardNumber => "tx.has_card_number", Bool, "the client sent a raw card number|no raw card number sent", "The client sent a raw card number (tokenised at the edge).";
    TxHasLocation => "tx.has_location", Bool, "the transaction carries a location|the transaction carries no location", "The transaction carries lat/lon.";
    TxIsSmall => "tx.is_small", Bool, "a small amount, as used to test stolen cards|not a small amount", "The amount is below the configured small-amount threshold (card testing).";
    CardCount1m => "card.count_1m", Number, "{} transactions by this card in the minute before", "Transactions of this card in the last minute, before this one.";
    CardSum1m => "card.sum_1m", Number, "{} spent by this card in the minute before", "Amount spent by this card in the last minute, before this one.";
    CardCount10m => "card.count_10m", Number, "{} transactions by this card in the 10 minutes before", "Transactions of this card in the last 10 minutes, before this one.";
    CardSum10m => "card.sum_10m", Number, "{} spent by this card in the 10 minutes before", "Amount spent by this card in the last 10 minutes, before this one.";
    CardCount1h => "card.count_1h", Number, "{} transactions by this card in the hour before", "Transactions of this card in the last hour, before this one.";
    CardSum1h => "card.sum_1h", Number, "{} spent by this card in the hour before", "Amount spent by this card in the last hour, before this one.";
    CardCount24h => "card.count_24h", Number, "{} transactions by this card in the 24 hours before", "Transactions of this card in the last 24 hours, before this one.";
    CardSum24h => "card.sum_24h", Number, "{} spent by this card in the 24 hours before", "Amount spent by this card in the last 24 hours, before this one.";
    CardCount7d => "card.count_7d", Number, "{} transactions by this card in the 7 days before", "Transactions of this card in the last 7 days, before this one.";
    CardSum7d => "card.sum_7d", Number, "{} spent by this card in the 7 days before", "Amount spent by this card in the last 7 days, before this one.";
    UserCount1m => "user.count_1m", Number, "{} transactions by this user in the minute before", "Transactions of this user in the last minute, before this one.";
    UserSum1m => "user.sum_1m", Number, "{} spent by this user in the minute before", "Amount spent by this user in the last minute, before this one.";
    UserCount10m => "user.count_10m", Number, "{} transactions by this user in the 10 minutes before", "Transactions of this user in the last 10 minutes, before this one.";
    UserSum10m => "user.sum_10m", Number, "{} spent by this user in the 10 minutes before", "Amount spent by this user in the last 10 minutes, before this one.";
    UserCount1h => "user.count_1h", Number, "{} transactions by this user in the hour before", "Transactions of this user in the last hour, before this one.";
    UserSum1h => "user.sum_1h", Number, "{} spent by this user in the hour before", "Amount spent by this user in the last hour, before this one.";
    UserCount24h => "user.count_24h", Number, "{} transactions by this user in the 24 hours before", "Transactions of this user in the last 24 hours, before this one.";
    UserSum24h => "user.sum_24h", Number, "{} spent by this user in the 24 hours before", "Amount spent by this user in the last 24 hours, before this one.";
    UserCount7d => "user.count_7d", Number, "{} transactions by this user in the 7 days before", "Transactions of this user in the last 7 days, before this one.";
    UserSum7d => "user.sum_7d", Number, "{} spent by this user in the 7 days before", "Amount spent by this user in the last 7 days, before this one.";
    DeviceCount1m => "device.count_1m", Number, "{} transactions by this device in the minute before", "Transactions of this device in the last minute, before this one.";
    DeviceSum1m => "device.sum_1m", Number, "{} spent by this device in the minute before", "Amount spent by this device in the last minute, before this one.";
    DeviceCount10m => "device.count_10m", Number, "{} transactions by this device in the 10 minutes before", "Transactions of this device in the last 10 minutes, before this one.";
    DeviceSum10m => "device.sum_10m", Number, "{} spent by this device in the 10 minutes before", "Amount spent by this device in the last 10 minutes, before this one.";
    DeviceCount1h => "device.count_1h", Number, "{} transactions by this device in the hour before", "Transactions of this device in the last hour, before this one.";
    DeviceSum1h => "device.sum_1h", Number, "{} spent by this device in the hour before", "Amount spent by this device in the last hour, before this one.";
    DeviceCount24h => "device.count_24h", Number, "{} transactions by this device in the 24 hours before", "Transactions of this device in the last 24 hours, before this one.";
    DeviceSum24h => "device.sum_24h", Number, "{} spent by this device in the 24 hours before", "Amount spent by this device in the last 24 hours, before this one.";
    DeviceCount7d => "device.count_7d", Number, "{} transactions by this device in the 7 days before", "Transactions of this device in the last 7 days, before this one.";
    DeviceSum7d => "device.sum_7d", Number, "{} spent by this device in the 7 days before", "Amount spent by this device in the last 7 days, before this one.";
    IpCount1m => "ip.count_1m", Number, "{} transactions by this IP address in the minute before", "Transactions of this ip in the last minute, before this one.";
    IpSum1m => "ip.sum_1m", Number, "{} spent by this IP address in the minute before", "Amount spent by this ip in the last minute, before this one.";
    IpCount10m => "ip.count_10m", Number, "{} transactions by this IP address in the 10 minutes before", "Transactions of this ip in the last 10 minutes, before this one.";
    IpSum10m => "ip.sum_10m", Number, "{} spent by this IP address in the 10 minutes before", "Amount spent by this ip in the last 10 minutes, before this one.";
    IpCount1h => "ip.count_1h", Number, "{} transactions by this IP address in the hour before", "Transactions of this ip in the last hour, before this one.";
    IpSum1h => "ip.sum_1h", Number, "{} spent by this IP address in the hour before", "Amount spent by this ip in the last hour, before this one.";
    IpCount24h => "ip.count_24h", Number, "{} transactions by this IP address in the 24 hours before", "Transactions of this ip in the last 24 hours, before this one.";
    IpSum24h => "ip.sum_24h", Number, "{} spent by this IP address in the 24 hours before", "Amount spent by this ip in the last 24 hours, before this one.";
    IpCount7d => "ip.count_7d", Number, "{} transactions by this IP address in the 7 days before", "Transactions of this ip in the last 7 days, before this one.";
    IpSum7d => "ip.sum_7d", Number, "{} spent by this IP address in the 7 days before", "Amount spent by this ip in the last 7 days, before this one.";
    MerchantCount1m => "merchant.count_1m", Number, "{} transactions by this merchant in the minute before", "Transactions of this merchant in the last minute, before this one.";
    MerchantSum1m => "merchant.sum_1m", Number, "{} taken by this merchant in the minute before", "Amount spent by this merchant in the last minute, before this one.";
    MerchantCount10m => "merchant.count_10m", Number, "{} transactions by this merchant in the 10 minutes before", "Transactions of this merchant in the last 10 minutes, before this one.";
    MerchantSum10m => "merchant.sum_10m", Number, "{} taken by this merchant in the 10 minutes before", "Amount spent by this merchant in the last 10 minutes, before this one.";
    MerchantCount1h => "merchant.count_1h", Number, "{} transactions by this merchant in the hour before", "Transactions of this merchant in the last hour, before this one.";
    MerchantSum1h => "merchant.sum_1h", Number, "{} taken by this merchant in the hour before", "Amount spent by this merchant in the last hour, before this one.";
    MerchantCount24h => "merchant.count_24h", Number, "{} transactions by this merchant in the 24 hours before", "Transactions of this merchant in the last 24 hours, before this one.";
    MerchantSum24h => "merchant.sum_24h", Number, "{} taken by this merchant in the 24 hours before", "Amount spent by this merchant in the last 24 hours, before this one.";
    MerchantCount7d => "merchant.count_7d", Number, "{} transactions by this merchant in the 7 days before", "Transactions of this merchant in the last 7 days, before this one.";
    MerchantSum7d => "merchant.sum_7d", Number, "{} taken by this merchant in the 7 days before", "Amount spent by this merchant in the last 7 days, before this one.";
    TerminalCount1m => "terminal.count_1m", Number, "{} transactions by this terminal in the minute before", "Transactions of this terminal in the last minute, before this one.";
    TerminalSum1m => "terminal.sum_1m", Number, "{} taken by this terminal in the minute before", "Amount spent by this terminal in the last minute, before this one.";
    TerminalCount10m => "terminal.count_10m", Number, "{} transactions by this terminal in the 10 minutes before", "Transactions of this terminal in the last 10 minutes, before this one.";
    TerminalSum10m => "terminal.sum_10m", Number, "{} taken by this terminal in the 10 minutes before", "Amount spent by this terminal in the last 10 minutes, before this one.";
    TerminalCount1h => "terminal.count_1h", Number, "{} transactions by this terminal in the hour before", "Transactions of this terminal in the last hour, before this one.";
    TerminalSum1h => "terminal.sum_1h", Number, "{} taken by this terminal in the hour before", "Amount spent by this terminal in the last hour, before this one.";
    TerminalCount24h => "terminal.count_24h", Number, "{} transactions by this terminal in the 24 hours before", "Transactions of this terminal in the last 24 hours, before this one.";
    TerminalSum24h => "terminal.sum_24h", Number, "{} taken by this terminal in the 24 hours before", "Amount spent by this terminal in the last 24 hours, before this one.";
    TerminalCount7d => "terminal.count_7d", Number, "{} transactions by this terminal in the 7 days before", "Transactions of this terminal in the last 7 days, before this one.";
    TerminalSum7d => "terminal.sum_7d", Number, "{} taken by this terminal in the 7 days before", "Amount spent by this terminal in the last 7 days, before this one.";
    CardSmallCount10m => "card.small_count_10m", Number, "{} small test-sized payments by this card in the 10 minutes before", "Transactions of this card under the small-amount threshold in the last 10 minutes, before this one.";
    CardTxCount => "card.tx_count", Number, "this card has {} earlier transactions", "Transactions of this card seen so far (within the idle expiry).";
    CardAmountMean => "card.amount_mean", Number, "this card's average amount is {}", "Mean amount of this card's earlier transactions (spikes above 3x the mean enter capped at 3x).";
    CardAmountStd => "card.amount_std", Number, "this card's amounts usually vary by {}", "Standard deviation of this card's earlier amounts.";
    CardAmountZscore => "card.amount_zscore", Number, "the amount is {} standard deviations above this card's average", "How many standard deviations this amount is above the card's mean.";
    CardAmountRatio => "card.amount_ratio", Number, "the amount is {} times this card's average", "This amount divided by the card's mean amount.";
    CardSecsSinceLast => "card.secs_since_last", Number, "{} seconds since this card's previous transaction", "Seconds since this card's previous transaction.";
    CardKmFromLast => "card.km_from_last", Number, "{} km from this card's previous located transaction", "Kilometres from this card's previous located transaction.";
    CardSpeedKmh => "card.speed_kmh", Number, "travel at {} km/h would be needed since this card's previous transaction", "Implied travel speed (km/h) from this card's previous located transaction.";
    UserTxCount => "user.tx_count", Number, "this user has {} earlier transactions", "Transactions of this user seen so far (within the idle expiry).";
    UserAmountMean => "user.amount_mean", Number, "this user's average amount is {}", "Mean amount of this user's earlier transactions (spikes above 3x the mean enter capped at 3x).";
    UserAmountStd => "user.amount_std", Number, "this user's amounts usually vary by {}", "Standard deviation of this user's earlier amounts.";
    UserAmountZscore => "user.amount_zscore", Number, "the amount is {} standard deviations above this user's average", "How many standard deviations this amount is above the user's mean.";
    UserAmountRatio => "user.amount_ratio", Number, "the amount is {} times this user's average", "This amount divided by the user's mean amount.";
    UserSecsSinceLast => "user.secs_since_last", Number, "{} seconds since this user's previous transaction", "Seconds since this user's previous transaction.";
    UserKmFromLast => "user.km_from_last", Number, "{} km from this user's previous located transaction", "Kilometres from this user's previous located transaction.";
    UserSpeedKmh => "user.speed_kmh", Number, "travel at {} km/h would be needed since this user's previous transaction", "Implied travel speed (km/h) from this user's previous located transaction.";
    UserNewDevice => "user.new_device", Bool, "a device this user has not used before|a device this user has used before", "This user has not used this device before (in the remembered history).";
    UserNewMerchant => "user.new_merchant", Bool, "a merchant this user has not paid before|a merchant this user has paid before", "This user has not paid this merchant before (in the remembered history).";
    UserDevices24h => "user.devices_24h", Number, "this user used {} devices in the 24 hours before", "Distinct devices this user used in the last 24 hours, before this transaction.";
    UserCards24h => "user.cards_24h", Number, "this user used {} cards in the 24 hours before", "Distinct cards this user used in the last 24 hours, before this transaction.";
    DeviceUsers24h => "device.users_24h", Number, "{} users on this device in the 24 hours before", "Distinct users on this device in the last 24 hours, before this transaction.";
    DeviceCards24h => "device.cards_24h", Number, "{} cards on this device in the 24 hours before", "Distinct cards on this device in the last 24 hours, before this transaction.";
    DeviceOtherUsers24h => "device.other_users_24h", Number, "{} other users on this device in the 24 hours before", "Distinct users other than this one on this device in the last 24 hours.";
    DeviceOtherCards24h => "device.other_cards_24h", Number, "{} other cards on this device in the 24 hours before", "Distinct cards other than this one on this device in the last 24 hours.";
    RingSize => "ring.size", Number, "linked by shared use to a group of {} users, cards and devices", "Users, cards and devices linked (by shared use) to this transaction's user, card and device, counting them.";
    RingUsers => "ring.users", Number, "{} users in the group linked by shared devices and cards", "Distinct users in that linked group, counting this transaction's user.";
    RingHasFraud => "ring.has_fraud", Bool, "a linked user, card or device has confirmed fraud|no confirmed fraud in the linked group", "A member of that linked group carries a confirmed-fraud label.";
    AccountAlerts => "account.alerts", Number, "{} earlier alerts on this account in the escalation window", "Alerts raised for this account (user, else card) in the escalation window, before this transaction.";
    CardAmountRatio24h => "card.amount_ratio_24h", Number, "the amount is {} times this card's average over the 24 hours before", "This amount divided by the card's mean amount over the 24 hours before it.";
    CardAmountRatio7d => "card.amount_ratio_7d", Number, "the amount is {} times this card's average over the 7 days before", "This amount divided by the card's mean amount over the 7 days before it.";
    CardSpikes7d => "card.spikes_7d", Number, "{} spending spikes (3x its average or more) on this card in the 7 days before", "Transactions of this card in the 7 days before this one at 3x its mean amount or more (sudden spending spikes).";
    CardFraudLabels => "card.fraud_labels", Number, "{} of this card's transactions confirmed as fraud so far", "Confirmed-fraud labels received so far on this card's transactions (known compromised).";
    TerminalFraudRate1d => "terminal.fraud_rate_1d", Number, "{%} of this terminal's transactions were confirmed fraud over the latest day with labels", "Share of this terminal's transactions confirmed as fraud, over the day that ends one label delay ago.";
    TerminalFraudRate7d => "terminal.fraud_rate_7d", Number, "{%} of this terminal's transactions were confirmed fraud over the latest 7 days with labels", "Share of this terminal's transactions confirmed as fraud, over the 7 days that end one label delay ago.";
    TerminalFraudRate30d => "terminal.fraud_rate_30d", Number, "{%} of this terminal's transactions were confirmed fraud over the latest 30 days with labels", "Share of this terminal's transactions confirmed as fraud, over the 30 days that end one label delay ago.";
    TerminalFraudFirstAge => "terminal.fraud_first_age_days", Number, "this terminal first showed confirmed fraud {} days ago", "Days since the terminal's oldest confirmed fraud in the 30 visible days (how long it has shown fraud).";
    TerminalFraudLastAge => "terminal.fraud_last_age_days", Number, "this terminal last showed confirmed fraud {} days ago", "Days since the terminal's newest visible confirmed fraud (is it still going on).";
    TerminalFraudStreak => "terminal.fraud_streak", Number, "{%} of this terminal's transactions since its first confirmed fraud were fraud too", "Share of this terminal's visible transactions confirmed as fraud since its oldest visible fraud (1 when every one since was fraud: a compromised terminal).";
    TerminalPlainFrauds30d => "terminal.plain_frauds_30d", Number, "{} confirmed frauds at this terminal with ordinary amounts for their cards (a compromised terminal)", "Confirmed frauds on this terminal over the visible 30 days whose amounts were ordinary for their cards (the terminal, not the card's spending, is the common factor).";
    TerminalFrauds30d => "terminal.frauds_30d", Number, "{} confirmed frauds at this terminal over the latest 30 days with labels", "Confirmed frauds on this terminal over the 30 days that end one label delay ago.";
    MerchantFraudRate7d => "merchant.fraud_rate_7d", Number, "{%} of this merchant's transactions were confirmed fraud over the latest 7 days with labels", "Share of this merchant's transactions confirmed as fraud, over the 7 days that end one label delay ago.";
    MerchantFraudRate30d => "merchant.fraud_rate_30d", Number, "{%} of this merchant's transactions were confirmed fraud over the latest 30 days with labels", "Share of this merchant's transactions confirmed as fraud, over the 30 days that end one label delay ago.";
    ReturnPhotoVerified => "return.photo_verified", Bool, "a verified face photo of the customer at the till|no verified face photo of the customer at the till", "This return (or purchase) came with a face photo that passed the check at the till.";
    ReturnReceiptFound => "return.receipt_found", Bool, "the receipt was found|no purchase with this receipt at any store", "A purchase with this return's receipt id is on record (at any store).";
    ReturnCustomerMismatch => "return.customer_mismatch", Bool, "the customer returning is not the one who bought|the customer returning is the one who bought", "The returning customer differs from the buyer on the receipt.";
    ReturnPurchasePhotoVerified => "return.purchase_photo_verified", Bool, "the purchase was photo-verified|the purchase had no verified photo", "The purchase on the receipt came with a verified face photo.";
    ReturnAlreadyReturned => "return.already_returned", Number, "{} units claimed were already returned (at any store) or were never on the receipt", "Units in this return beyond what is left to return on the receipt (already returned at any store, or never bought on it).";
    ReturnOtherStoreRecent => "return.other_store_recent", Number, "{} returns of the same receipt items at another store in the 10 minutes before", "Returns of this receipt's items at another store in the 10 minutes before this one (a concurrent claim).";
    ReturnMinsSincePurchase => "return.mins_since_purchase", Number, "returned {} minutes after the purchase", "Minutes from the purchase on the receipt to this return.";
    ReturnCustomerReturns24h => "return.customer_returns_24h", Number, "this customer made {} returns in the 24 hours before", "Accepted returns by this customer in the 24 hours before this one.";
    ReturnTerminalReturns1h => "return.terminal_returns_1h", Number, "{} returns at this till in the hour before", "Accepted returns at this POS terminal in the hour before this one.";
    ReturnMaxItemPrice => "return.max_item_price", Number, "an item priced {}", "Highest unit price among the items of this return.";
    ReturnExcessValue => "return.excess_value", Number, "{} more refunded than was paid for these items", "Refund amount beyond what was paid for the matched receipt units (0 when within).";
}

text_features! {
    TxKind => "tx.kind", "Kind of transaction: payment, purchase, return or refund.";
    TxCurrency => "tx.currency", "ISO 4217 currency code.";
    TxCountry => "tx.country", "ISO 3166 country code.";
    TxMerchant => "tx.merchant", "Merchant of this transaction.";
    TxMerchantCategory => "tx.merchant_category", "Merchant category of this transaction.";
    TxUserId => "tx.user_id", "User id of this transaction.";
    TxCardId => "tx.card_id", "Card id (or card token) of this transaction.";
    TxDeviceId => "tx.device_id", "Device id of this transaction.";
    TxIp => "tx.ip", "IP address of this transaction.";
    TxTerminalId => "tx.terminal_id", "Terminal id of this transaction.";
    TxStoreId => "tx.store_id", "Store id of this transaction.";
    TxPhoto => "tx.photo", "Photo check of a purchase or return: verified, no_face, poor_quality, unreadable or missing.";
    TxReceiptId => "tx.receipt_id", "Receipt id of a purchase or return.";
    TxCustomerId => "tx.customer_id", "Customer at the till for a purchase or return.";
}

/// Number of numeric and boolean features.
pub const NUM_COUNT: usize = NUM_FEATURES.len();
/// Number of text features.
pub const TEXT_COUNT: usize = TEXT_FEATURES.len();

/// Looks a feature up by its dotted name.
pub fn lookup(name: &str) -> Option<&'static FeatureDef> {
    NUM_FEATURES
        .iter()
        .chain(TEXT_FEATURES.iter())
        .find(|d| d.name == name)
}

/// Every feature in the catalog: numeric and boolean first, then text.
pub fn all() -> impl Iterator<Item = &'static FeatureDef> {
    NUM_FEATURES.iter().chain(TEXT_FEATURES.iter())
}

/// The feature values of one transaction, read from the state before it was applied.
#[derive(Clone, Debug)]
pub struct FeatureValues<'a> {
    /// Numbers and booleans by [`Num`]; `NaN` when missing.
    pub num: [f64; NUM_COUNT],
    /// Text by [`Text`]; `None` when missing.
    pub text: [Option<&'a str>; TEXT_COUNT],
}

impl Default for FeatureValues<'_> {
    fn default() -> Self {
        FeatureValues {
            num: [f64::NAN; NUM_COUNT],
            text: [None; TEXT_COUNT],
        }
    }
}

impl<'a> FeatureValues<'a> {
    /// A numeric or boolean value (`NaN` when missing).
    #[inline]
    pub fn get(&self, n: Num) -> f64 {
        self.num[n as usize]
    }

    /// Sets a numeric value.
    #[inline]
    pub fn set(&mut self, n: Num, v: f64) {
        self.num[n as usize] = v;
    }

    /// Sets a boolean value.
    #[inline]
    pub fn set_bool(&mut self, n: Num, v: bool) {
        self.num[n as usize] = if v { 1.0 } else { 0.0 };
    }

    /// A text value.
    #[inline]
    pub fn text(&self, t: Text) -> Option<&'a str> {
        self.text[t as usize]
    }

    /// The value of any feature as JSON (`null` when missing), for APIs and explanations.
    pub fn json_value(&self, def: &FeatureDef) -> serde_json::Value {
        match def.ty {
            FeatureType::Text => self.text[def.index]
                .map(|s| serde_json::Value::String(s.to_owned()))
                .unwrap_or(serde_json::Value::Null),
            FeatureType::Bool => {
                let v = self.num[def.index];
                if v.is_nan() {
                    serde_json::Value::Null
                } else {
                    serde_json::Value::Bool(v != 0.0)
                }
            }
            FeatureType::Number => serde_json::Number::from_f64(self.num[def.index])
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indices_match_order() {
        let mut names: Vec<_> = all().map(|d| d.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "duplicate feature name");
        for (i, d) in NUM_FEATURES.iter().enumerate() {
            assert_eq!(d.index, i, "{}", d.name);
        }
        for (i, d) in TEXT_FEATURES.iter().enumerate() {
            assert_eq!(d.index, i, "{}", d.name);
        }
    }

    #[test]
    fn window_features_are_laid_out_count_sum_per_window() {
        // EntityState writes windows as base + 2 * window + {0: count, 1: sum}.
        for (base, prefix) in [
            (Num::CardCount1m, "card"),
            (Num::UserCount1m, "user"),
            (Num::DeviceCount1m, "device"),
            (Num::IpCount1m, "ip"),
            (Num::MerchantCount1m, "merchant"),
            (Num::TerminalCount1m, "terminal"),
        ] {
            for (w, label) in ["1m", "10m", "1h", "24h", "7d"].iter().enumerate() {
                let count = &NUM_FEATURES[base as usize + 2 * w];
                let sum = &NUM_FEATURES[base as usize + 2 * w + 1];
                assert_eq!(count.name, format!("{prefix}.count_{label}"));
                assert_eq!(sum.name, format!("{prefix}.sum_{label}"));
            }
        }
    }

    #[test]
    fn profile_features_are_laid_out_alike_for_cards_and_users() {
        // EntityState writes the profile as eight consecutive values from `<kind>.tx_count`.
        let suffixes = [
            "tx_count",
            "amount_mean",
            "amount_std",
            "amount_zscore",
            "amount_ratio",
            "secs_since_last",
            "km_from_last",
            "speed_kmh",
        ];
        for (base, prefix) in [(Num::CardTxCount, "card"), (Num::UserTxCount, "user")] {
            for (i, suffix) in suffixes.iter().enumerate() {
                assert_eq!(
                    NUM_FEATURES[base as usize + i].name,
                    format!("{prefix}.{suffix}")
                );
            }
        }
    }

    #[test]
    fn every_number_and_flag_reads_in_words() {
        for def in NUM_FEATURES {
            match def.ty {
                FeatureType::Bool => assert!(
                    def.says
                        .split_once('|')
                        .is_some_and(|(y, n)| !y.is_empty() && !n.is_empty()),
                    "{}: needs a true|false wording",
                    def.name
                ),
                _ => assert_eq!(
                    usize::from(def.says.contains("{}")) + usize::from(def.says.contains("{%}")),
                    1,
                    "{}: needs exactly one placeholder",
                    def.name
                ),
            }
        }
        let ratio = &NUM_FEATURES[Num::CardAmountRatio as usize];
        assert_eq!(
            ratio.describe(4.25),
            "the amount is 4.25 times this card's average"
        );
        let rate = &NUM_FEATURES[Num::TerminalFraudRate7d as usize];
        assert_eq!(
            rate.describe(1.0 / 3.0),
            "33.3% of this terminal's transactions were confirmed fraud over the latest 7 days with labels"
        );
        let new_device = &NUM_FEATURES[Num::UserNewDevice as usize];
        assert_eq!(
            new_device.describe(1.0),
            "a device this user has not used before"
        );
        assert_eq!(
            new_device.describe(0.0),
            "a device this user has used before"
        );
        assert_eq!(
            NUM_FEATURES[Num::CardCount1h as usize].describe(3.0),
            "3 transactions by this card in the hour before"
        );
        assert_eq!(
            rate.describe(f64::NAN),
            "Share of this terminal's transactions confirmed as fraud, over the 7 days that end one label delay ago: not known yet"
        );
    }

    #[test]
    fn lookup_finds_both_kinds() {
        assert_eq!(lookup("card.count_1m").unwrap().ty, FeatureType::Number);
        assert_eq!(lookup("tx.kind").unwrap().ty, FeatureType::Text);
        assert_eq!(lookup("ring.has_fraud").unwrap().ty, FeatureType::Bool);
        assert!(lookup("card.nope").is_none());
    }
}
