//! The seeded traffic generator: an endless, time-ordered stream of transactions, each labelled
//! with the ground truth (fraud or not, and which scenario).
//!
//! A simulated clock starts at `start_ms` and advances by exponential inter-arrival gaps (a
//! Poisson process). At each arrival the generator either emits an everyday payment or starts a
//! fraud scenario; a scenario's transactions are laid out in time up front and wait in a small
//! priority queue, so a card-testing run interleaves with the normal traffic around it.
//!
//! The share of fraud is held near `fraud_rate` by a light feedback: scenarios are started with
//! the probability that yields `fraud_rate` on average, paused while the stream is ahead of the
//! target by more than one average scenario, and favoured while it is behind by as much. Without
//! it a single 20-transaction card-testing run would swing the share of a short stream, and a
//! short run would miss the tails of scenarios that started near its end.
//!
//! Genuine customers pay at a human pace: at most about once per two minutes (a few draws skip
//! anyone cooling down) and never while a fraudster holds their card or account. That needs a
//! customer base that fits the rate; [`GeneratorConfig::customers_for_rate`] gives one.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;

use rand::distr::Distribution;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Exp, LogNormal};
use ringfence_core::event::Timestamp;
use serde::Serialize;

use super::world::{
    card_id, category_index, device_id, ip_in, jitter, Category, Customer, World, FAR_CITIES,
    PROXY_OCTETS, THROWAWAY_DOMAINS,
};

/// Every fraud scenario the generator plays, by the name put in [`LabeledTransaction::scenario`].
pub const SCENARIOS: [&str; 5] = [
    VELOCITY_BURST,
    CARD_TESTING,
    FRAUD_RING,
    ACCOUNT_TAKEOVER,
    IMPOSSIBLE_TRAVEL,
];

const VELOCITY_BURST: &str = "velocity_burst";
const CARD_TESTING: &str = "card_testing";
const FRAUD_RING: &str = "fraud_ring";
const ACCOUNT_TAKEOVER: &str = "account_takeover";
const IMPOSSIBLE_TRAVEL: &str = "impossible_travel";

/// Per scenario: how often it is picked, its mean number of fraudulent transactions, and its
/// mean number of genuine ones (the cardholder's own payment before impossible travel). The
/// weights give each scenario a similar share of fraudulent *transactions* (14-26%), so the
/// short ones are not drowned out by card testing.
const SCENARIO_TABLE: [(&str, f64, f64, f64); 5] = [
    (VELOCITY_BURST, 0.15, 6.5, 0.0),
    (CARD_TESTING, 0.07, 15.0, 0.0),
    (FRAUD_RING, 0.09, 9.0, 0.0),
    (ACCOUNT_TAKEOVER, 0.30, 2.0, 0.0),
    (IMPOSSIBLE_TRAVEL, 0.39, 1.5, 1.0),
];

/// Most transactions a scenario can schedule.
const MAX_SCENARIO_LEN: usize = 20;
/// Cap on scheduled-but-not-yet-emitted transactions; at absurd rates scenarios wait their turn
/// instead of growing the queue without bound.
const MAX_PENDING: usize = 16_384;

/// How to build a [`Generator`].
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// Seed of every random draw: the same config yields the same stream.
    pub seed: u64,
    /// Target share of fraudulent transactions, `0.0..=0.9`.
    pub fraud_rate: f64,
    /// Mean transactions per simulated second.
    pub tps: f64,
    /// Simulated time of the first arrival, in ms since the Unix epoch.
    pub start_ms: i64,
    /// Number of customers in the world (see [`GeneratorConfig::customers_for_rate`]).
    pub customers: usize,
    /// Number of merchants in the world's home cities.
    pub merchants: usize,
}

impl GeneratorConfig {
    /// A customer base that fits `tps`: about five minutes between a customer's payments on
    /// average (2,000 to 500,000 customers). With too few customers for the rate, genuine
    /// people would pay several times a minute and trip every velocity rule.
    pub fn customers_for_rate(tps: f64) -> usize {
        if tps.is_finite() && tps > 0.0 {
            (tps * 300.0).clamp(2_000.0, 500_000.0) as usize
        } else {
            2_000
        }
    }
}

/// 2026-01-01T00:00:00Z in ms since the Unix epoch.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            fraud_rate: 0.02,
            tps: 100.0,
            start_ms: DEFAULT_START_MS,
            customers: 2000,
            merchants: 300,
        }
    }
}

/// One transaction in the shape of the `POST /v1/transactions` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimTransaction {
    /// `sim-{seed}-{n}`, n counting from 0 in stream order.
    pub transaction_id: String,
    /// Event time; serialized as RFC 3339, omitted when `None` (the server then uses its clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    /// `payment` (online), `purchase` (at a terminal), `refund` or `return`.
    pub kind: &'static str,
    /// Amount in the card's currency, rounded to cents.
    pub amount: f64,
    /// ISO 4217 code of the card's currency.
    pub currency: &'static str,
    /// The account paying.
    pub user_id: String,
    /// The card used.
    pub card_id: String,
    /// Device fingerprint, for online payments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Client IP, for online payments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// E-mail given at checkout, for online payments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Merchant name.
    pub merchant: String,
    /// Merchant category, e.g. `grocery`.
    pub merchant_category: &'static str,
    /// Payment terminal, for card-present purchases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    /// Store, for card-present purchases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    /// ISO 3166 code of where the payment happened.
    pub country: &'static str,
    /// Latitude of the payment, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Longitude of the payment, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

/// A transaction with its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledTransaction {
    /// The transaction as sent to the server.
    pub tx: SimTransaction,
    /// True when a fraudster made it.
    pub fraud: bool,
    /// The fraud scenario it belongs to (one of [`SCENARIOS`]); `None` for genuine traffic.
    pub scenario: Option<&'static str>,
}

/// A scheduled transaction waiting for its time.
#[derive(Debug)]
struct Pending {
    at_ms: i64,
    /// Scheduling order, so equal times come out in the order they were planned.
    seq: u64,
    item: LabeledTransaction,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

/// An endless, seeded stream of [`LabeledTransaction`]s with non-decreasing timestamps.
#[derive(Debug)]
pub struct Generator {
    seed: u64,
    /// `sim-{seed}`, or `sim-{seed}-{tag}` after [`Generator::with_run_tag`].
    id_prefix: String,
    fraud_rate: f64,
    rng: SmallRng,
    /// Shared by forks, so parallel streams pay in the same world.
    world: Arc<World>,
    start_ms: i64,
    /// Simulated time of the next arrival, in fractional ms.
    next_arrival: f64,
    gap: Exp<f64>,
    noise: LogNormal<f64>,
    /// Probability that an arrival starts a scenario, before feedback.
    scenario_probability: f64,
    /// Mean fraudulent transactions per scenario.
    mean_scenario_fraud: f64,
    queue: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    emitted: u64,
    emitted_fraud: u64,
    /// Number of the first account id a fraudster signs up with, past the world's customers.
    first_fresh_account: u64,
    fresh_accounts: u64,
    /// Per customer: second (since `start_ms`) of the last genuine payment, or until which a
    /// fraud scenario uses their card or account; [`NEVER`] when neither. Empty in forks.
    busy_until_s: Vec<u32>,
    /// Per customer: genuine payments so far in this stream (saturating). Empty in forks.
    payments: Vec<u16>,
    /// The most recent genuine payers, a ring of [`RECENT_PAYERS`].
    recent: Vec<u32>,
    recent_next: usize,
}

/// No payment yet.
const NEVER: u32 = u32::MAX;
/// A customer pays at most once per this many seconds: people do not buy four things a minute,
/// and a velocity rule that fires on genuine traffic measures the simulator, not the engine.
const COOLDOWN_S: u32 = 120;
/// How many recent payers account takeover picks its victim from.
const RECENT_PAYERS: usize = 512;
/// Picks of a customer before giving up on one who is not cooling down.
const PICK_TRIES: usize = 8;

impl Generator {
    /// A generator for `config`; out-of-range values are clamped (`fraud_rate` into
    /// `0.0..=0.9`, a non-positive `tps` to 1).
    pub fn new(config: GeneratorConfig) -> Generator {
        let fraud_rate = if config.fraud_rate.is_finite() {
            config.fraud_rate.clamp(0.0, 0.9)
        } else {
            0.0
        };
        let tps = if config.tps.is_finite() && config.tps > 0.0 {
            config.tps
        } else {
            1.0
        };
        let weight_sum: f64 = SCENARIO_TABLE.iter().map(|s| s.1).sum();
        let mean_fraud: f64 = SCENARIO_TABLE.iter().map(|s| s.1 * s.2).sum::<f64>() / weight_sum;
        let mean_genuine: f64 = SCENARIO_TABLE.iter().map(|s| s.1 * s.3).sum::<f64>() / weight_sum;
        // Per arrival: p * mean_fraud fraudulent out of (1 - p) + p * (mean_fraud + mean_genuine)
        // transactions; solve for the p that makes that share `fraud_rate`.
        let p = (fraud_rate / (mean_fraud + fraud_rate * (1.0 - mean_fraud - mean_genuine)))
            .clamp(0.0, 1.0);
        let tx_per_arrival = 1.0 - p + p * (mean_fraud + mean_genuine);
        let arrivals_per_ms = tps * 1e-3 / tx_per_arrival;
        let gap = Exp::new(arrivals_per_ms).unwrap_or_else(|_| unreachable!("rate is positive"));
        let world = World::generate(config.customers, config.merchants);
        let customers = world.customers.len();
        Generator {
            seed: config.seed,
            id_prefix: format!("sim-{}", config.seed),
            fraud_rate,
            rng: SmallRng::seed_from_u64(config.seed),
            first_fresh_account: customers as u64,
            world: Arc::new(world),
            start_ms: config.start_ms,
            next_arrival: config.start_ms as f64,
            gap,
            noise: LogNormal::new(0.0, 0.45).unwrap_or_else(|_| unreachable!("sigma > 0")),
            scenario_probability: p,
            mean_scenario_fraud: mean_fraud,
            queue: BinaryHeap::new(),
            seq: 0,
            emitted: 0,
            emitted_fraud: 0,
            fresh_accounts: 0,
            busy_until_s: vec![NEVER; customers],
            payments: vec![0; customers],
            recent: Vec::with_capacity(RECENT_PAYERS),
            recent_next: 0,
        }
    }

    /// A parallel stream in the same world and at the same rates, seeded with `seed + lane`:
    /// its own traffic, transaction ids and fraudster accounts, starting at `start_ms`. Built
    /// for load generation: it does not keep the per-customer pacing (a cooldown between a
    /// customer's payments), so a thousand forks of a large world stay small.
    pub fn fork(&self, lane: u32, start_ms: i64) -> Generator {
        let seed = self.seed.wrapping_add(u64::from(lane));
        Generator {
            seed,
            id_prefix: format!("sim-{seed}"),
            fraud_rate: self.fraud_rate,
            rng: SmallRng::seed_from_u64(seed),
            world: Arc::clone(&self.world),
            start_ms,
            next_arrival: start_ms as f64,
            gap: self.gap,
            noise: self.noise,
            scenario_probability: self.scenario_probability,
            mean_scenario_fraud: self.mean_scenario_fraud,
            queue: BinaryHeap::new(),
            seq: 0,
            emitted: 0,
            emitted_fraud: 0,
            first_fresh_account: self.first_fresh_account + u64::from(lane) * 10_000_000,
            fresh_accounts: 0,
            busy_until_s: Vec::new(),
            payments: Vec::new(),
            recent: Vec::with_capacity(RECENT_PAYERS),
            recent_next: 0,
        }
    }

    /// The same stream with transaction ids `sim-{seed}-{tag}-{n}`: a server that deduplicates
    /// by id must not mistake a second live run with the same seed for replays.
    pub fn with_run_tag(mut self, tag: &str) -> Generator {
        self.id_prefix = format!("sim-{}-{tag}", self.seed);
        self
    }

    /// How many transactions have been emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Seconds since the start of the stream, as kept per customer.
    fn stream_secs(&self, at_ms: i64) -> u32 {
        u32::try_from((at_ms - self.start_ms).max(0) / 1000).unwrap_or(NEVER - 1)
    }

    fn available(&self, c: usize, now_s: u32) -> bool {
        match self.busy_until_s.get(c).copied().unwrap_or(NEVER) {
            NEVER => true,
            last => now_s >= last.saturating_add(COOLDOWN_S),
        }
    }

    /// A customer drawn by how often people pay, skipping those who paid in the last
    /// [`COOLDOWN_S`] or whose card a fraudster is using (when a few draws allow).
    fn customer(&mut self, at_ms: i64) -> usize {
        let now_s = self.stream_secs(at_ms);
        let mut c = 0;
        for _ in 0..PICK_TRIES {
            c = self.world.customer_picker.sample(&mut self.rng);
            if self.available(c, now_s) {
                break;
            }
        }
        c
    }

    /// An established account for a takeover: of the recent payers, the one with the most
    /// history in this stream (the engine has seen them; the attacker picked a live account).
    fn established_customer(&mut self, at_ms: i64) -> usize {
        let now_s = self.stream_secs(at_ms);
        let best = self
            .recent
            .iter()
            .map(|&c| c as usize)
            // Paying a moment ago is fine (the attacker logs in whenever); being in another
            // scenario's hands is not.
            .filter(|&c| self.busy_until_s.get(c).is_none_or(|&busy| busy <= now_s))
            .max_by_key(|&c| self.payments.get(c).copied().unwrap_or(0));
        match best {
            Some(c) => c,
            None => self.customer(at_ms),
        }
    }

    fn note_payment(&mut self, c: usize, at_ms: i64) {
        self.hold(c, at_ms);
        if let Some(n) = self.payments.get_mut(c) {
            *n = n.saturating_add(1);
        }
        let c = u32::try_from(c).unwrap_or(0);
        if self.recent.len() < RECENT_PAYERS {
            self.recent.push(c);
        } else {
            self.recent[self.recent_next] = c;
            self.recent_next = (self.recent_next + 1) % RECENT_PAYERS;
        }
    }

    /// Keeps customer `c` out of everyday traffic until `until_ms` (plus the cooldown): their
    /// card or account is in a fraudster's hands, and a genuine payment in the middle would
    /// blur which transaction is which.
    fn hold(&mut self, c: usize, until_ms: i64) {
        let until_s = self.stream_secs(until_ms);
        if let Some(busy) = self.busy_until_s.get_mut(c) {
            *busy = match *busy {
                NEVER => until_s,
                last => last.max(until_s),
            };
        }
    }

    fn emit(&mut self, at_ms: i64, mut item: LabeledTransaction) -> LabeledTransaction {
        item.tx.transaction_id = format!("{}-{}", self.id_prefix, self.emitted);
        item.tx.timestamp = Some(Timestamp::from_millis(at_ms));
        self.emitted += 1;
        self.emitted_fraud += u64::from(item.fraud);
        item
    }

    fn schedule(&mut self, at_ms: i64, item: LabeledTransaction) {
        self.seq += 1;
        self.queue.push(Reverse(Pending {
            at_ms,
            seq: self.seq,
            item,
        }));
    }

    /// Whether this arrival starts a fraud scenario.
    fn starts_scenario(&mut self) -> bool {
        if self.fraud_rate <= 0.0 || self.queue.len() + MAX_SCENARIO_LEN > MAX_PENDING {
            return false;
        }
        // Fraud the stream is owed so far (negative: ahead of target). Counting what was
        // emitted, not what is planned, keeps short runs on target even though a scenario's
        // tail lands minutes after it starts.
        let owed = self.fraud_rate * self.emitted as f64 - self.emitted_fraud as f64;
        let p = if owed < -self.mean_scenario_fraud {
            0.0
        } else if owed > self.mean_scenario_fraud {
            (3.0 * self.scenario_probability).min(1.0)
        } else {
            self.scenario_probability
        };
        self.rng.random_bool(p)
    }

    fn pick_scenario(&mut self) -> &'static str {
        let total: f64 = SCENARIO_TABLE.iter().map(|s| s.1).sum();
        let mut x = self.rng.random_range(0.0..total);
        for (name, weight, _, _) in SCENARIO_TABLE {
            if x < weight {
                return name;
            }
            x -= weight;
        }
        IMPOSSIBLE_TRAVEL
    }

    fn plan_scenario(&mut self, at_ms: i64) {
        let name = self.pick_scenario();
        let planned = match name {
            VELOCITY_BURST => self.velocity_burst(at_ms),
            CARD_TESTING => self.card_testing(),
            FRAUD_RING => self.fraud_ring(at_ms),
            ACCOUNT_TAKEOVER => self.account_takeover(at_ms),
            _ => self.impossible_travel(at_ms),
        };
        for (offset_ms, tx, fraud) in planned.into_iter().take(MAX_SCENARIO_LEN) {
            let item = LabeledTransaction {
                tx,
                fraud,
                scenario: fraud.then_some(name),
            };
            self.schedule(at_ms + offset_ms, item);
        }
    }

    // ----- everyday traffic -------------------------------------------------------------------

    fn amount_around(&mut self, mean: f64) -> f64 {
        cents((mean * self.noise.sample(&mut self.rng)).max(0.5))
    }

    /// A genuine payment by customer `c`: mostly at their regular places, sometimes elsewhere
    /// in town or online in their own country. `in_store` forces a card-present purchase.
    fn everyday_payment(&mut self, c: usize, in_store: bool) -> SimTransaction {
        let home_index = self.world.customers[c].home_index();
        let mut merchant = if self.rng.random_bool(0.7) {
            self.world.customers[c]
                .regulars()
                .choose(&mut self.rng)
                .map(|&m| m as usize)
        } else {
            let category = self.world.pick_category(&mut self.rng);
            self.local_merchant(home_index, category)
        }
        .unwrap_or(0);
        if in_store && self.world.merchants[merchant].category.online_share() >= 1.0 {
            merchant = self
                .local_merchant(home_index, Category::Grocery)
                .unwrap_or(0);
        }
        let category = self.world.merchants[merchant].category;
        let online = !in_store && self.rng.random_bool(category.online_share());
        let refund = !in_store && self.rng.random_bool(0.01);
        let amount =
            self.amount_around(self.world.customers[c].mean_amount * category.amount_factor());
        let customer = &self.world.customers[c];
        let card = customer.card(mostly_first(&mut self.rng, customer.card_count()));
        let m = &self.world.merchants[merchant];
        if online {
            let device = customer.device(mostly_first(&mut self.rng, customer.device_count()));
            let (lat, lon) = jitter(&mut self.rng, customer.lat, customer.lon, 0.01);
            SimTransaction {
                kind: if refund { "refund" } else { "payment" },
                device_id: Some(device),
                ip: Some(customer.ip()),
                email: Some(customer.email()),
                lat: Some(lat),
                lon: Some(lon),
                ..base_tx(customer, card, m.name.clone(), category, amount)
            }
        } else {
            let terminal = self.rng.random_range(1..=m.terminals);
            SimTransaction {
                kind: if refund { "return" } else { "purchase" },
                terminal_id: Some(format!("term-{merchant:04}-{terminal}")),
                store_id: Some(format!("store-{merchant:04}")),
                lat: Some(m.lat),
                lon: Some(m.lon),
                country: m.city.country,
                ..base_tx(customer, card, m.name.clone(), category, amount)
            }
        }
    }

    /// A merchant of `category` in home city `home_index` (anywhere if none there).
    fn local_merchant(&mut self, home_index: usize, category: Category) -> Option<usize> {
        let local = self.world.local_merchants(home_index, category);
        match local.choose(&mut self.rng) {
            Some(&m) => Some(m),
            None => self.world.merchant_of(&mut self.rng, category),
        }
    }

    /// An online merchant of one of `categories` in `country` when there is one.
    fn online_merchant(&mut self, categories: &[Category], country: &str) -> usize {
        let category = categories
            .choose(&mut self.rng)
            .copied()
            .unwrap_or(Category::DigitalGoods);
        let same_country: Vec<usize> = self.world.merchants_by_category[category_index(category)]
            .iter()
            .copied()
            .filter(|&m| self.world.merchants[m].city.country == country)
            .collect();
        match same_country.choose(&mut self.rng) {
            Some(&m) => m,
            None => self.world.merchant_of(&mut self.rng, category).unwrap_or(0),
        }
    }

    // ----- fraud scenarios --------------------------------------------------------------------

    /// A new account id past the world's customers, as a fraudster signing up would get.
    fn fresh_account(&mut self) -> String {
        let id = format!("user-{:06}", self.first_fresh_account + self.fresh_accounts);
        self.fresh_accounts += 1;
        id
    }

    fn throwaway_email(&mut self) -> String {
        let domain = THROWAWAY_DOMAINS
            .choose(&mut self.rng)
            .copied()
            .unwrap_or("mailinator.com");
        let letters: String = (0..8)
            .map(|_| char::from(b'a' + self.rng.random_range(0..26u8)))
            .collect();
        format!("{letters}{}@{domain}", self.rng.random_range(10..1000))
    }

    fn proxy_ip(&mut self) -> String {
        let octet = PROXY_OCTETS.choose(&mut self.rng).copied().unwrap_or(185);
        ip_in(&mut self.rng, octet)
    }

    /// Sorted offsets in `0..=span_ms`, the first at 0.
    fn offsets(&mut self, n: usize, span_ms: i64) -> Vec<i64> {
        let mut offsets: Vec<i64> = (0..n)
            .map(|i| {
                if i == 0 {
                    0
                } else {
                    self.rng.random_range(0..=span_ms)
                }
            })
            .collect();
        offsets.sort_unstable();
        offsets
    }

    /// An online payment by a fraudster: their device and IP, no location, a throwaway e-mail.
    fn online_fraud(
        &mut self,
        merchant: usize,
        payer: &Payer,
        session: &Session,
        amount: f64,
    ) -> SimTransaction {
        let email = self.throwaway_email();
        let m = &self.world.merchants[merchant];
        SimTransaction {
            transaction_id: String::new(),
            timestamp: None,
            kind: "payment",
            amount: cents(amount),
            currency: payer.currency,
            user_id: payer.user_id.clone(),
            card_id: payer.card.clone(),
            device_id: Some(session.device.clone()),
            ip: Some(session.ip.clone()),
            email: Some(email),
            merchant: m.name.clone(),
            merchant_category: m.category.as_str(),
            terminal_id: None,
            store_id: None,
            country: m.city.country,
            lat: None,
            lon: None,
        }
    }

    /// A fraudster's device with an IP from a proxy range.
    fn fraud_session(&mut self) -> Session {
        Session {
            device: device_id(&mut self.rng),
            ip: self.proxy_ip(),
        }
    }

    /// A stolen card used online 5-8 times within a minute, each amount higher than the last.
    fn velocity_burst(&mut self, at_ms: i64) -> Vec<(i64, SimTransaction, bool)> {
        let c = self.customer(at_ms);
        let victim = self.world.customers[c].clone();
        let payer = Payer {
            user_id: victim.user_id(),
            card: victim.card(0),
            currency: victim.home().currency,
        };
        let session = self.fraud_session();
        let n = self.rng.random_range(5..=8);
        let offsets = self.offsets(n, 60_000);
        self.hold(c, at_ms + 60_000);
        let mut amount = self.rng.random_range(20.0..80.0);
        let categories = [
            Category::Electronics,
            Category::DigitalGoods,
            Category::Fashion,
        ];
        let mut out = Vec::with_capacity(n);
        for offset in offsets {
            let merchant = self.online_merchant(&categories, victim.home().country);
            let tx = self.online_fraud(merchant, &payer, &session, amount);
            out.push((offset, tx, true));
            amount *= self.rng.random_range(1.2..1.7);
        }
        out
    }

    /// Card numbers from a dump checked with 10-20 tiny payments at digital-goods shops within
    /// a few minutes.
    fn card_testing(&mut self) -> Vec<(i64, SimTransaction, bool)> {
        let card = card_id(&mut self.rng);
        let account = self.fresh_account();
        let session = self.fraud_session();
        let n = self.rng.random_range(10..=20);
        let span = self.rng.random_range(60_000..=240_000);
        let offsets = self.offsets(n, span);
        let shops = [
            self.online_merchant(&[Category::DigitalGoods], "US"),
            self.online_merchant(&[Category::DigitalGoods], "GB"),
        ];
        let mut out = Vec::with_capacity(n);
        for offset in offsets {
            let merchant = shops[usize::from(self.rng.random_bool(0.3))];
            let currency = self.world.merchants[merchant].city.currency;
            let amount = if self.rng.random_bool(0.3) {
                1.0
            } else {
                self.rng.random_range(0.5..1.99)
            };
            let payer = Payer {
                user_id: account.clone(),
                card: card.clone(),
                currency,
            };
            let tx = self.online_fraud(merchant, &payer, &session, amount);
            out.push((offset, tx, true));
        }
        out
    }

    /// 3-5 fresh accounts on one shared device rotating a handful of stolen cards.
    fn fraud_ring(&mut self, at_ms: i64) -> Vec<(i64, SimTransaction, bool)> {
        let members: Vec<String> = (0..self.rng.random_range(3..=5))
            .map(|_| self.fresh_account())
            .collect();
        let span = self.rng.random_range(120_000..=600_000);
        let card_count = self.rng.random_range(2..=4);
        let mut cards = Vec::with_capacity(card_count);
        for _ in 0..card_count {
            let c = self.customer(at_ms);
            self.hold(c, at_ms + span);
            let victim = &self.world.customers[c];
            let home = victim.home();
            cards.push((victim.card(0), home.currency, home.country));
        }
        let device = device_id(&mut self.rng);
        let sessions = [
            Session {
                device: device.clone(),
                ip: self.proxy_ip(),
            },
            Session {
                device,
                ip: self.proxy_ip(),
            },
        ];
        let n = self.rng.random_range(6..=12);
        let offsets = self.offsets(n, span);
        let categories = [Category::Electronics, Category::Travel, Category::Gambling];
        let mut out = Vec::with_capacity(n);
        for (i, offset) in offsets.into_iter().enumerate() {
            let (card, currency, country) = cards[i % cards.len()].clone();
            let payer = Payer {
                user_id: members.choose(&mut self.rng).cloned().unwrap_or_default(),
                card,
                currency,
            };
            let merchant = self.online_merchant(&categories, country);
            let amount = self.rng.random_range(80.0..600.0);
            let tx = self.online_fraud(merchant, &payer, &sessions[i % sessions.len()], amount);
            out.push((offset, tx, true));
        }
        out
    }

    /// A customer's account used from a new device and a foreign IP for 1-3 payments of several
    /// times their usual spend.
    fn account_takeover(&mut self, at_ms: i64) -> Vec<(i64, SimTransaction, bool)> {
        let c = self.established_customer(at_ms);
        let victim = self.world.customers[c].clone();
        let home = victim.home();
        let far = FAR_CITIES
            .choose(&mut self.rng)
            .copied()
            .unwrap_or(FAR_CITIES[0]);
        let session = Session {
            device: device_id(&mut self.rng),
            ip: ip_in(&mut self.rng, far.ip_octet),
        };
        let payer = Payer {
            user_id: victim.user_id(),
            card: victim.card(0),
            currency: home.currency,
        };
        let n = self.rng.random_range(1..=3);
        let offsets = self.offsets(n, 600_000);
        self.hold(c, at_ms + 600_000);
        let categories = [
            Category::Electronics,
            Category::Travel,
            Category::DigitalGoods,
        ];
        let mut out = Vec::with_capacity(n);
        for offset in offsets {
            let merchant = self.online_merchant(&categories, home.country);
            let amount = victim.mean_amount.max(20.0) * self.rng.random_range(4.0..10.0);
            let mut tx = self.online_fraud(merchant, &payer, &session, amount);
            // The attacker is logged in as the victim: checkout carries the account's e-mail.
            tx.email = Some(victim.email());
            out.push((offset, tx, true));
        }
        out
    }

    /// A genuine in-store purchase at home, then the same card (cloned) in a far city minutes
    /// later. Only the far-away payments are fraud.
    fn impossible_travel(&mut self, at_ms: i64) -> Vec<(i64, SimTransaction, bool)> {
        let c = self.customer(at_ms);
        let mut home_tx = self.everyday_payment(c, true);
        self.note_payment(c, at_ms);
        let victim = self.world.customers[c].clone();
        let card = home_tx.card_id.clone();
        home_tx.kind = "purchase";
        let mut out = vec![(0, home_tx, false)];
        let Some((far, _)) = self.world.far_merchant(&mut self.rng) else {
            return out;
        };
        let n = self.rng.random_range(1..=2);
        let mut offset = self.rng.random_range(45_000..=180_000);
        let far_index = FAR_CITIES
            .iter()
            .position(|f| f.name == far.name)
            .unwrap_or(0);
        for _ in 0..n {
            let merchant = self.world.far_merchants[far_index]
                .choose(&mut self.rng)
                .copied()
                .unwrap_or(0);
            let m = &self.world.merchants[merchant];
            let terminal = self.rng.random_range(1..=m.terminals);
            let amount = cents(victim.mean_amount * self.rng.random_range(1.5..4.0));
            let m = &self.world.merchants[merchant];
            let tx = SimTransaction {
                kind: "purchase",
                terminal_id: Some(format!("term-{merchant:04}-{terminal}")),
                store_id: Some(format!("store-{merchant:04}")),
                lat: Some(m.lat),
                lon: Some(m.lon),
                country: far.country,
                ..base_tx(&victim, card.clone(), m.name.clone(), m.category, amount)
            };
            out.push((offset, tx, true));
            self.hold(c, at_ms + offset);
            offset += self.rng.random_range(30_000..=120_000);
        }
        out
    }
}

/// Who pays in a fraudulent transaction: the account, the card and its currency.
struct Payer {
    user_id: String,
    card: String,
    currency: &'static str,
}

/// Where a fraudster connects from.
struct Session {
    device: String,
    ip: String,
}

fn base_tx(
    customer: &Customer,
    card: String,
    merchant: String,
    category: Category,
    amount: f64,
) -> SimTransaction {
    SimTransaction {
        transaction_id: String::new(),
        timestamp: None,
        kind: "payment",
        amount,
        currency: customer.home().currency,
        user_id: customer.user_id(),
        card_id: card,
        device_id: None,
        ip: None,
        email: None,
        merchant,
        merchant_category: category.as_str(),
        terminal_id: None,
        store_id: None,
        country: customer.home().country,
        lat: None,
        lon: None,
    }
}

/// Slot 0 85% of the time, else any of `count` (people have a main card and a main phone).
fn mostly_first(rng: &mut SmallRng, count: usize) -> usize {
    if count > 1 && rng.random_bool(0.15) {
        rng.random_range(0..count)
    } else {
        0
    }
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Iterator for Generator {
    type Item = LabeledTransaction;

    fn next(&mut self) -> Option<LabeledTransaction> {
        loop {
            let arrival_ms = self.next_arrival.floor() as i64;
            let due = self
                .queue
                .peek()
                .is_some_and(|Reverse(head)| head.at_ms <= arrival_ms);
            if due {
                if let Some(Reverse(p)) = self.queue.pop() {
                    return Some(self.emit(p.at_ms, p.item));
                }
            }
            self.next_arrival += self.gap.sample(&mut self.rng);
            if self.starts_scenario() {
                // Its first transaction is due at `arrival_ms`; the loop emits it next.
                self.plan_scenario(arrival_ms);
                continue;
            }
            let c = self.customer(arrival_ms);
            let tx = self.everyday_payment(c, false);
            self.note_payment(c, arrival_ms);
            let item = LabeledTransaction {
                tx,
                fraud: false,
                scenario: None,
            };
            return Some(self.emit(arrival_ms, item));
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringfence_core::event::{CardHasher, ParseContext, RawTransaction, Transaction};
    use std::collections::BTreeMap;

    fn generator(seed: u64, fraud_rate: f64) -> Generator {
        Generator::new(GeneratorConfig {
            seed,
            fraud_rate,
            ..GeneratorConfig::default()
        })
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a: Vec<_> = generator(7, 0.05).take(3000).collect();
        let b: Vec<_> = generator(7, 0.05).take(3000).collect();
        assert_eq!(a, b);
        let c: Vec<_> = generator(8, 0.05).take(3000).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn timestamps_never_go_back_and_ids_count_up() {
        let mut last = i64::MIN;
        for (n, lt) in generator(1, 0.1).take(20_000).enumerate() {
            let ts = lt.tx.timestamp.map(Timestamp::millis).unwrap_or(i64::MIN);
            assert!(ts >= last, "transaction {n} goes back in time");
            assert!(ts >= DEFAULT_START_MS);
            last = ts;
            assert_eq!(lt.tx.transaction_id, format!("sim-1-{n}"));
        }
    }

    #[test]
    fn forks_share_the_world_but_not_the_traffic() {
        let base = generator(100, 0.1);
        let a: Vec<_> = base.fork(1, DEFAULT_START_MS).take(2000).collect();
        let b: Vec<_> = base.fork(2, DEFAULT_START_MS).take(2000).collect();
        assert_ne!(a, b);
        assert_eq!(a[0].tx.transaction_id, "sim-101-0");
        assert_eq!(
            a,
            generator(100, 0.1)
                .fork(1, DEFAULT_START_MS)
                .take(2000)
                .collect::<Vec<_>>()
        );
        let accounts = |v: &[LabeledTransaction]| -> std::collections::BTreeSet<String> {
            v.iter()
                .filter(|lt| lt.fraud)
                .map(|lt| lt.tx.user_id.clone())
                .collect()
        };
        let fresh_a: Vec<_> = accounts(&a).into_iter().filter(|u| u.len() > 10).collect();
        assert!(fresh_a.iter().all(|u| !accounts(&b).contains(u)));
    }

    #[test]
    fn genuine_customers_pay_at_a_human_pace() {
        let tps = 100.0;
        let txs: Vec<_> = Generator::new(GeneratorConfig {
            tps,
            fraud_rate: 0.05,
            customers: GeneratorConfig::customers_for_rate(tps),
            ..GeneratorConfig::default()
        })
        .take(30_000)
        .collect();
        let mut last: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        let (mut genuine, mut too_soon) = (0, 0);
        for lt in txs.iter().filter(|lt| !lt.fraud) {
            let ts = lt.tx.timestamp.map(Timestamp::millis).unwrap_or(0);
            let times = last.entry(&lt.tx.user_id).or_default();
            if times.last().is_some_and(|&t| ts - t < 120_000) {
                too_soon += 1;
            }
            let in_last_minute = times.iter().filter(|&&t| ts - t < 60_000).count();
            assert!(in_last_minute < 3, "{} pays too fast", lt.tx.user_id);
            times.push(ts);
            genuine += 1;
        }
        assert!(
            too_soon * 100 < genuine,
            "{too_soon} of {genuine} within the cooldown"
        );
    }

    #[test]
    fn takeovers_hit_accounts_with_history() {
        let txs: Vec<_> = Generator::new(GeneratorConfig {
            fraud_rate: 0.05,
            customers: 30_000,
            ..GeneratorConfig::default()
        })
        .take(30_000)
        .collect();
        let mut paid: BTreeMap<&str, u32> = BTreeMap::new();
        let (mut takeovers, mut with_history) = (0, 0);
        for lt in &txs {
            if lt.scenario == Some(ACCOUNT_TAKEOVER) {
                takeovers += 1;
                with_history += usize::from(paid.contains_key(lt.tx.user_id.as_str()));
            } else if !lt.fraud {
                *paid.entry(&lt.tx.user_id).or_default() += 1;
            }
        }
        assert!(takeovers > 10);
        assert!(
            with_history * 10 >= takeovers * 9,
            "{with_history} of {takeovers}"
        );
    }

    #[test]
    fn run_tags_change_ids_only() {
        let plain: Vec<_> = generator(4, 0.1).take(50).collect();
        let tagged: Vec<_> = generator(4, 0.1).with_run_tag("r1").take(50).collect();
        for (n, (a, b)) in plain.iter().zip(&tagged).enumerate() {
            assert_eq!(b.tx.transaction_id, format!("sim-4-r1-{n}"));
            let mut b = b.clone();
            b.tx.transaction_id = a.tx.transaction_id.clone();
            assert_eq!(a, &b);
        }
    }

    #[test]
    fn rate_follows_tps() {
        let txs: Vec<_> = Generator::new(GeneratorConfig {
            tps: 50.0,
            ..GeneratorConfig::default()
        })
        .take(20_000)
        .collect();
        let span_ms = txs[txs.len() - 1]
            .tx
            .timestamp
            .map(Timestamp::millis)
            .unwrap_or(0)
            - DEFAULT_START_MS;
        let expected_ms = 20_000.0 / 50.0 * 1000.0;
        let ratio = span_ms as f64 / expected_ms;
        assert!((0.9..1.1).contains(&ratio), "span ratio {ratio}");
    }

    #[test]
    fn every_transaction_parses() {
        let hasher = CardHasher::new(b"k");
        let cx = ParseContext {
            card_hasher: &hasher,
            now: Timestamp::from_millis(DEFAULT_START_MS),
            latest: Timestamp::MAX,
            generated_id: &|| "unused".to_string(),
        };
        for lt in generator(3, 0.2).take(10_000) {
            let json = serde_json::to_string(&lt.tx).unwrap();
            let raw: RawTransaction = serde_json::from_str(&json).unwrap();
            let tx = Transaction::parse(raw, &cx).unwrap_or_else(|e| panic!("{e}: {json}"));
            assert_eq!(tx.transaction_id.as_str(), lt.tx.transaction_id);
            assert_eq!(Some(tx.timestamp), lt.tx.timestamp);
            assert!(tx.amount > 0.0);
            assert_eq!(tx.amount, (tx.amount * 100.0).round() / 100.0);
        }
    }

    #[test]
    fn every_scenario_appears_and_only_fraud_has_one() {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for lt in generator(11, 0.05).take(20_000) {
            assert_eq!(lt.fraud, lt.scenario.is_some());
            if let Some(s) = lt.scenario {
                *seen.entry(s).or_default() += 1;
            }
        }
        for s in SCENARIOS {
            assert!(
                seen.get(s).copied().unwrap_or(0) > 0,
                "{s} never played: {seen:?}"
            );
        }
    }

    #[test]
    fn fraud_share_tracks_the_target() {
        for (seed, rate) in [(42, 0.02), (5, 0.01), (9, 0.1)] {
            let fraud = generator(seed, rate)
                .take(20_000)
                .filter(|lt| lt.fraud)
                .count();
            let share = fraud as f64 / 20_000.0;
            assert!(
                (share - rate).abs() <= rate * 0.25,
                "seed {seed}: share {share} vs target {rate}"
            );
        }
        assert_eq!(
            generator(1, 0.0).take(5_000).filter(|lt| lt.fraud).count(),
            0
        );
    }

    #[test]
    fn scenarios_look_like_their_names() {
        let txs: Vec<_> = generator(21, 0.1).take(20_000).collect();
        let of = |name: &str| -> Vec<&SimTransaction> {
            txs.iter()
                .filter(|lt| lt.scenario == Some(name))
                .map(|lt| &lt.tx)
                .collect()
        };
        for tx in of(CARD_TESTING) {
            assert!(tx.amount < 2.0);
            assert_eq!(tx.merchant_category, "digital_goods");
        }
        for tx in of(IMPOSSIBLE_TRAVEL) {
            assert!(FAR_CITIES.iter().any(|c| c.country == tx.country));
            assert!(tx.terminal_id.is_some());
        }
        for tx in of(ACCOUNT_TAKEOVER) {
            assert!(tx.device_id.is_some() && tx.ip.is_some());
        }
        // A ring's shared device is seen with several accounts.
        let mut accounts_per_device: BTreeMap<&str, std::collections::BTreeSet<&str>> =
            BTreeMap::new();
        for tx in of(FRAUD_RING) {
            if let Some(d) = tx.device_id.as_deref() {
                accounts_per_device
                    .entry(d)
                    .or_default()
                    .insert(&tx.user_id);
            }
        }
        assert!(accounts_per_device.values().any(|users| users.len() >= 3));
        // Velocity bursts: amounts rise along one card.
        let mut by_card: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for tx in of(VELOCITY_BURST) {
            by_card.entry(&tx.card_id).or_default().push(tx.amount);
        }
        assert!(by_card
            .values()
            .any(|amounts| amounts.len() >= 5 && amounts.windows(2).all(|w| w[0] < w[1])));
    }
}
