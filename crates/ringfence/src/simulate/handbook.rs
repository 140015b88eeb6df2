//! The handbook profile: the transaction simulator published in *Reproducible Machine Learning
//! for Credit Card Fraud Detection — Practical Handbook* (Le Borgne, Siblini, Lebichot,
//! Bontempi), chapter "Simulated dataset", so Ringfence can be measured on the dataset that the
//! book's models are measured on.
//!
//! The design is the book's, step for step:
//! 1. Customers and terminals sit uniformly on a 100 x 100 grid. A customer spends
//!    `N(mean_amount, mean_amount / 2)` (with `mean_amount ~ U(5, 100)`) about
//!    `mean_nb_tx_per_day ~ U(0, 4)` times a day, at terminals within radius 5 of home.
//! 2. Each day a customer makes `Poisson(mean_nb_tx_per_day)` payments at
//!    `N(43200, 20000)` seconds into the day (times outside the day are dropped, not clamped), at
//!    a terminal drawn uniformly from their neighbours. A negative amount is redrawn once from
//!    `U(0, 2 * mean_amount)`; amounts are rounded half-to-even to cents, like `np.round`.
//! 3. All payments are sorted by time and numbered from 0.
//! 4. Fraud is then laid on top, each scenario overriding the label of the one before:
//!    every amount above 220 (scenario 1); every payment at 2 terminals compromised each day,
//!    for that day and the 27 after (scenario 2); a third of the payments of 3 customers whose
//!    credentials leak each day, for that day and the 13 after, with their amount multiplied by
//!    5 (scenario 3). Like the book (`for day in range(TX_TIME_DAYS.max())`), compromises are
//!    drawn on every day but the last one that has payments, and a payment picked by two
//!    overlapping leaks of the same customer is multiplied twice.
//!
//! Randomness comes from [`SmallRng`] streams derived from the seed, so the numbers differ from
//! numpy's stream while the distributions match; the book's 1,754,155 payments (0.84% fraud)
//! come out as a slightly different count. The book seeds each stage on its own (profiles,
//! each customer's payments by customer id, each day's fraud draws by day); so does this, which
//! keeps the first days of a run unchanged when `--days` grows.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::distr::Distribution;
use rand::rngs::SmallRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_distr::{Poisson, StandardNormal};
use ringfence_core::event::Timestamp;

use super::world::mix64;
use super::{SimulateArgs, SimulateError};

/// The book's start of the simulated period, in the CSV's own `TX_DATETIME` form (UTC).
pub const HANDBOOK_START: &str = "2018-04-01 00:00:00";
/// [`HANDBOOK_START`] in milliseconds since the Unix epoch.
pub const HANDBOOK_START_MS: i64 = 1_522_540_800_000;
/// The header line of the CSV that [`write_csv`] writes, the book's column names and order.
pub const CSV_HEADER: &str = "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,\
                              TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO";

/// Side of the square that customers and terminals live on.
const GRID_SIZE: f64 = 100.0;
const DAY_SECONDS: u32 = 86_400;
/// Time of day of a payment: `N(DAY_SECONDS / 2, TIME_OF_DAY_STD)` seconds.
const TIME_OF_DAY_STD: f64 = 20_000.0;
/// Scenario 1: amounts strictly above 220.00 are fraud.
const HIGH_AMOUNT_CENTS: u64 = 22_000;
/// Scenario 2: terminals compromised per day, and for how many days (that day included).
const TERMINALS_COMPROMISED_PER_DAY: usize = 2;
const TERMINAL_COMPROMISE_DAYS: u32 = 28;
/// Scenario 3: customers whose credentials leak per day, for how many days, and the factor
/// their fraudulent amounts are multiplied by.
const CREDENTIALS_LEAKED_PER_DAY: usize = 3;
const CREDENTIAL_LEAK_DAYS: u32 = 14;
const LEAKED_AMOUNT_FACTOR: u64 = 5;

/// Largest `customers` accepted.
const MAX_CUSTOMERS: usize = 5_000_000;
/// Largest `terminals` accepted.
const MAX_TERMINALS: usize = 10_000_000;
/// Longest period accepted: ten years.
const MAX_DAYS: u32 = 3_660;
/// Most customer-days accepted: about 20 million rows (40 bytes each) at the book's mean of
/// two payments a day, eleven times the book's dataset. Keeps the row vector within memory.
const MAX_CUSTOMER_DAYS: u64 = 10_000_000;
/// Most grid cells per side of the neighbour index, whatever the radius.
const MAX_GRID_COLS: usize = 1024;

/// What to simulate; [`Default`] is the book's dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct HandbookConfig {
    /// Seed of every random draw; the same seed gives the same rows.
    pub seed: u64,
    /// Number of customers (book: 5,000).
    pub customers: usize,
    /// Number of terminals (book: 10,000).
    pub terminals: usize,
    /// Number of simulated days (book: 183).
    pub days: u32,
    /// Start of day 0, in whole seconds (book: [`HANDBOOK_START`]).
    pub start: Timestamp,
    /// A customer uses the terminals strictly closer than this (book: 5).
    pub radius: f64,
}

impl Default for HandbookConfig {
    fn default() -> Self {
        HandbookConfig {
            seed: 42,
            customers: 5_000,
            terminals: 10_000,
            days: 183,
            start: Timestamp::from_millis(HANDBOOK_START_MS),
            radius: 5.0,
        }
    }
}

impl HandbookConfig {
    /// Checks the sizes against the limits that keep a run within memory and time.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_CUSTOMERS).contains(&self.customers) {
            return Err(format!(
                "customers must be between 1 and {MAX_CUSTOMERS}, got {}",
                self.customers
            ));
        }
        if !(1..=MAX_TERMINALS).contains(&self.terminals) {
            return Err(format!(
                "terminals must be between 1 and {MAX_TERMINALS}, got {}",
                self.terminals
            ));
        }
        if !(1..=MAX_DAYS).contains(&self.days) {
            return Err(format!(
                "days must be between 1 and {MAX_DAYS}, got {}",
                self.days
            ));
        }
        let customer_days = self.customers as u64 * u64::from(self.days);
        if customer_days > MAX_CUSTOMER_DAYS {
            return Err(format!(
                "customers x days must be at most {MAX_CUSTOMER_DAYS}, got {customer_days}"
            ));
        }
        if !(self.radius.is_finite() && self.radius > 0.0) {
            return Err(format!("radius must be positive, got {}", self.radius));
        }
        let end_ms =
            (self.start_seconds() * 1000).saturating_add(i64::from(self.days) * 86_400_000);
        if self.start < Timestamp::MIN || end_ms > Timestamp::MAX.millis() {
            return Err("the simulated period must lie between 1970 and 9998".to_string());
        }
        Ok(())
    }

    /// Start of day 0 in whole seconds since the Unix epoch.
    fn start_seconds(&self) -> i64 {
        self.start.millis().div_euclid(1000)
    }
}

/// Why a transaction is fraudulent, with the book's `TX_FRAUD_SCENARIO` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandbookScenario {
    /// Not fraud (code 0).
    Genuine = 0,
    /// Amount above 220 (code 1).
    HighAmount = 1,
    /// Made at a terminal compromised in the last 28 days (code 2).
    CompromisedTerminal = 2,
    /// Made with credentials leaked in the last 14 days, amount x5 (code 3).
    LeakedCredentials = 3,
}

impl HandbookScenario {
    /// The book's `TX_FRAUD_SCENARIO` code.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// One simulated transaction: a row of the book's `transactions_df`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandbookTx {
    /// Position in time order, from 0.
    pub transaction_id: u32,
    /// When it happened (whole seconds).
    pub tx_datetime: Timestamp,
    /// The paying customer.
    pub customer_id: u32,
    /// Where they paid.
    pub terminal_id: u32,
    /// Amount in cents (the book rounds amounts to 2 decimals).
    pub amount_cents: u64,
    /// Seconds since the start of day 0.
    pub tx_time_seconds: u32,
    /// Day index from 0.
    pub tx_time_days: u32,
    /// Ground truth: genuine or which fraud scenario.
    pub scenario: HandbookScenario,
}

impl HandbookTx {
    /// Whether the transaction is fraud (`TX_FRAUD`).
    pub fn is_fraud(&self) -> bool {
        self.scenario != HandbookScenario::Genuine
    }

    /// Amount in currency units (`TX_AMOUNT`).
    pub fn amount(&self) -> f64 {
        self.amount_cents as f64 / 100.0
    }
}

/// A customer's habits (a row of the book's `customer_profiles_table`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerProfile {
    /// Home, horizontally.
    pub x: f64,
    /// Home, vertically.
    pub y: f64,
    /// Mean amount of a payment.
    pub mean_amount: f64,
    /// Standard deviation of an amount: half the mean.
    pub std_amount: f64,
    /// Mean payments per day.
    pub mean_nb_tx_per_day: f64,
}

/// Where a terminal stands (a row of the book's `terminal_profiles_table`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TerminalProfile {
    /// Position, horizontally.
    pub x: f64,
    /// Position, vertically.
    pub y: f64,
}

/// A terminal compromised on `day` (scenario 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalCompromise {
    /// First day of the 28 on which its payments are fraud.
    pub day: u32,
    /// The terminal.
    pub terminal_id: u32,
}

/// A customer whose credentials leaked on `day` (scenario 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialLeak {
    /// First day of the 14 on which a third of their payments are fraud.
    pub day: u32,
    /// The customer.
    pub customer_id: u32,
}

/// Everything the simulator drew: the profiles (indexed by id), the transactions in time order,
/// and the fraud draws that labelled them.
#[derive(Debug, Clone, PartialEq)]
pub struct HandbookDataset {
    /// Customer profiles; the index is `CUSTOMER_ID`.
    pub customers: Vec<CustomerProfile>,
    /// Terminal profiles; the index is `TERMINAL_ID`.
    pub terminals: Vec<TerminalProfile>,
    /// Transactions sorted by time; the index is `TRANSACTION_ID`.
    pub transactions: Vec<HandbookTx>,
    /// Scenario 2 draws, by day.
    pub compromised_terminals: Vec<TerminalCompromise>,
    /// Scenario 3 draws, by day.
    pub leaked_credentials: Vec<CredentialLeak>,
}

/// The independent random streams; the book seeds each of these stages separately too.
#[derive(Clone, Copy)]
enum Stream {
    Customers = 1,
    Terminals = 2,
    Payments = 3,
    CompromisedTerminals = 4,
    LeakedCredentials = 5,
}

/// The stream `stream` of `seed`, for item `index` (a customer or a day).
fn rng_for(seed: u64, stream: Stream, index: u64) -> SmallRng {
    SmallRng::seed_from_u64(mix64(mix64(seed ^ mix64(stream as u64)) ^ index))
}

/// Simulates the transactions of `config`, labelled, in time order.
pub fn generate(config: &HandbookConfig) -> Vec<HandbookTx> {
    generate_dataset(config).transactions
}

/// Simulates `config` and keeps the profiles and fraud draws next to the transactions.
pub fn generate_dataset(config: &HandbookConfig) -> HandbookDataset {
    let customers = customer_profiles(config);
    let terminals = terminal_profiles(config);
    let mut transactions = payments(config, &customers, &terminals);
    label_high_amounts(&mut transactions);
    let compromised_terminals = compromise_terminals(config, &mut transactions);
    let leaked_credentials = leak_credentials(config, &mut transactions);
    HandbookDataset {
        customers,
        terminals,
        transactions,
        compromised_terminals,
        leaked_credentials,
    }
}

fn customer_profiles(config: &HandbookConfig) -> Vec<CustomerProfile> {
    let mut rng = rng_for(config.seed, Stream::Customers, 0);
    (0..config.customers)
        .map(|_| {
            let x = rng.random_range(0.0..GRID_SIZE);
            let y = rng.random_range(0.0..GRID_SIZE);
            let mean_amount = rng.random_range(5.0..100.0);
            let mean_nb_tx_per_day = rng.random_range(0.0..4.0);
            CustomerProfile {
                x,
                y,
                mean_amount,
                std_amount: mean_amount / 2.0,
                mean_nb_tx_per_day,
            }
        })
        .collect()
}

fn terminal_profiles(config: &HandbookConfig) -> Vec<TerminalProfile> {
    let mut rng = rng_for(config.seed, Stream::Terminals, 0);
    (0..config.terminals)
        .map(|_| TerminalProfile {
            x: rng.random_range(0.0..GRID_SIZE),
            y: rng.random_range(0.0..GRID_SIZE),
        })
        .collect()
}

/// Terminals bucketed in square cells at least a radius wide, so a customer's neighbours are
/// found in the 3 x 3 cells around home instead of by measuring every terminal (the book's
/// brute force is 50 million distances for its default world).
struct TerminalGrid {
    cell: f64,
    cols: usize,
    /// Terminal ids of cell `c` are `ids[starts[c]..starts[c + 1]]`, in id order.
    starts: Vec<usize>,
    ids: Vec<u32>,
}

impl TerminalGrid {
    fn new(terminals: &[TerminalProfile], radius: f64) -> Self {
        let cell = radius.max(GRID_SIZE / MAX_GRID_COLS as f64);
        let cols = ((GRID_SIZE / cell).ceil() as usize).clamp(1, MAX_GRID_COLS);
        let mut grid = TerminalGrid {
            cell,
            cols,
            starts: vec![0; cols * cols + 1],
            ids: vec![0; terminals.len()],
        };
        for t in terminals {
            let c = grid.cell_of(t.x, t.y);
            grid.starts[c + 1] += 1;
        }
        for c in 0..cols * cols {
            grid.starts[c + 1] += grid.starts[c];
        }
        let mut next = grid.starts.clone();
        for (id, t) in terminals.iter().enumerate() {
            let c = grid.cell_of(t.x, t.y);
            grid.ids[next[c]] = id as u32;
            next[c] += 1;
        }
        grid
    }

    fn col(&self, v: f64) -> usize {
        ((v / self.cell) as usize).min(self.cols - 1)
    }

    fn cell_of(&self, x: f64, y: f64) -> usize {
        self.col(y) * self.cols + self.col(x)
    }

    /// Fills `out` with the ids of the terminals strictly within `radius` of (x, y), ascending
    /// (the book's `np.where(dist < r)`).
    fn within(
        &self,
        terminals: &[TerminalProfile],
        (x, y): (f64, f64),
        radius: f64,
        out: &mut Vec<u32>,
    ) {
        out.clear();
        let (cx, cy) = (self.col(x), self.col(y));
        for gy in cy.saturating_sub(1)..=(cy + 1).min(self.cols - 1) {
            for gx in cx.saturating_sub(1)..=(cx + 1).min(self.cols - 1) {
                let c = gy * self.cols + gx;
                for &id in &self.ids[self.starts[c]..self.starts[c + 1]] {
                    let t = terminals[id as usize];
                    if ((t.x - x).powi(2) + (t.y - y).powi(2)).sqrt() < radius {
                        out.push(id);
                    }
                }
            }
        }
        out.sort_unstable();
    }
}

/// Every customer's genuine payments over the period, sorted by time and numbered.
fn payments(
    config: &HandbookConfig,
    customers: &[CustomerProfile],
    terminals: &[TerminalProfile],
) -> Vec<HandbookTx> {
    let grid = TerminalGrid::new(terminals, config.radius);
    let start = config.start_seconds();
    let time_mean = f64::from(DAY_SECONDS / 2);
    let mut nearby = Vec::new();
    let mut rows = Vec::with_capacity(expected_rows(config, customers));
    for (customer_id, customer) in customers.iter().enumerate() {
        grid.within(
            terminals,
            (customer.x, customer.y),
            config.radius,
            &mut nearby,
        );
        // The book draws and drops this customer's payments; nothing of it reaches the table.
        if nearby.is_empty() {
            continue;
        }
        // U(0, 4) can draw exactly 0, which `Poisson` rejects: no payments, as numpy gives.
        let Ok(per_day) = Poisson::new(customer.mean_nb_tx_per_day) else {
            continue;
        };
        let mut rng = rng_for(config.seed, Stream::Payments, customer_id as u64);
        for day in 0..config.days {
            let count = per_day.sample(&mut rng) as u64;
            for _ in 0..count {
                let z: f64 = rng.sample(StandardNormal);
                // `int()` in the book: truncation toward zero, then out-of-day times dropped.
                let time_of_day = (time_mean + TIME_OF_DAY_STD * z) as i64;
                if !(0 < time_of_day && time_of_day < i64::from(DAY_SECONDS)) {
                    continue;
                }
                let z: f64 = rng.sample(StandardNormal);
                let mut amount = customer.mean_amount + customer.std_amount * z;
                if amount < 0.0 {
                    amount = rng.random_range(0.0..customer.mean_amount * 2.0);
                }
                let terminal_id = nearby[rng.random_range(0..nearby.len())];
                let tx_time_seconds = day * DAY_SECONDS + time_of_day as u32;
                rows.push(HandbookTx {
                    transaction_id: 0,
                    tx_datetime: Timestamp::from_millis(
                        (start + i64::from(tx_time_seconds)) * 1000,
                    ),
                    customer_id: customer_id as u32,
                    terminal_id,
                    amount_cents: (amount * 100.0).round_ties_even() as u64,
                    tx_time_seconds,
                    tx_time_days: day,
                    scenario: HandbookScenario::Genuine,
                });
            }
        }
    }
    // Stable: payments in the same second keep customer order, so a seed gives one order.
    rows.sort_by_key(|tx| tx.tx_time_seconds);
    for (id, tx) in rows.iter_mut().enumerate() {
        // At most 10 million customer-days: far below u32::MAX payments.
        tx.transaction_id = id as u32;
    }
    rows
}

/// Capacity for the row vector: the mean count, plus a margin so it rarely grows.
fn expected_rows(config: &HandbookConfig, customers: &[CustomerProfile]) -> usize {
    let per_day: f64 = customers.iter().map(|c| c.mean_nb_tx_per_day).sum();
    (per_day * f64::from(config.days) * 1.01) as usize
}

/// Scenario 1: every amount above 220 is fraud.
fn label_high_amounts(rows: &mut [HandbookTx]) {
    for tx in rows
        .iter_mut()
        .filter(|tx| tx.amount_cents > HIGH_AMOUNT_CENTS)
    {
        tx.scenario = HandbookScenario::HighAmount;
    }
}

/// The days on which the book draws compromises: `range(TX_TIME_DAYS.max())`.
fn fraud_days(rows: &[HandbookTx]) -> std::ops::Range<u32> {
    0..rows.last().map_or(0, |tx| tx.tx_time_days)
}

/// Scenario 2: each day, 2 terminals are compromised; their payments that day and the 27 after
/// are fraud.
fn compromise_terminals(
    config: &HandbookConfig,
    rows: &mut [HandbookTx],
) -> Vec<TerminalCompromise> {
    let draws = TERMINALS_COMPROMISED_PER_DAY.min(config.terminals);
    let compromised: Vec<TerminalCompromise> = fraud_days(rows)
        .flat_map(|day| {
            let mut rng = rng_for(config.seed, Stream::CompromisedTerminals, u64::from(day));
            index::sample(&mut rng, config.terminals, draws)
                .into_iter()
                .map(move |t| TerminalCompromise {
                    day,
                    terminal_id: t as u32,
                })
        })
        .collect();
    let mut by_terminal: Vec<(u32, u32)> =
        compromised.iter().map(|c| (c.terminal_id, c.day)).collect();
    by_terminal.sort_unstable();
    for tx in rows.iter_mut() {
        let first = by_terminal.partition_point(|&(t, _)| t < tx.terminal_id);
        let in_window = by_terminal[first..]
            .iter()
            .take_while(|&&(t, _)| t == tx.terminal_id)
            .any(|&(_, day)| (day..day + TERMINAL_COMPROMISE_DAYS).contains(&tx.tx_time_days));
        if in_window {
            tx.scenario = HandbookScenario::CompromisedTerminal;
        }
    }
    compromised
}

/// Scenario 3: each day, 3 customers' credentials leak; over that day and the 13 after, a third
/// of their payments (drawn without replacement) are fraud and 5 times the amount.
fn leak_credentials(config: &HandbookConfig, rows: &mut [HandbookTx]) -> Vec<CredentialLeak> {
    let draws = CREDENTIALS_LEAKED_PER_DAY.min(config.customers);
    let mut leaks = Vec::new();
    let mut exposed = Vec::new();
    for day in fraud_days(rows) {
        let mut rng = rng_for(config.seed, Stream::LeakedCredentials, u64::from(day));
        let victims: Vec<u32> = index::sample(&mut rng, config.customers, draws)
            .into_iter()
            .map(|c| c as u32)
            .collect();
        leaks.extend(
            victims
                .iter()
                .map(|&customer_id| CredentialLeak { day, customer_id }),
        );
        // Rows are in time order, so the window is one contiguous slice.
        let from = rows.partition_point(|tx| tx.tx_time_days < day);
        let to = rows.partition_point(|tx| tx.tx_time_days < day + CREDENTIAL_LEAK_DAYS);
        exposed.clear();
        exposed.extend((from..to).filter(|&i| victims.contains(&rows[i].customer_id)));
        for pick in index::sample(&mut rng, exposed.len(), exposed.len() / 3) {
            let tx = &mut rows[exposed[pick]];
            tx.amount_cents = tx.amount_cents.saturating_mul(LEAKED_AMOUNT_FACTOR);
            tx.scenario = HandbookScenario::LeakedCredentials;
        }
    }
    leaks
}

/// Transactions per `TX_FRAUD_SCENARIO` code (index 0 counts the genuine ones).
pub fn scenario_counts(rows: &[HandbookTx]) -> [usize; 4] {
    let mut counts = [0; 4];
    for tx in rows {
        counts[usize::from(tx.scenario.code())] += 1;
    }
    counts
}

/// Writes `rows` as the book's CSV (header [`CSV_HEADER`], `TX_DATETIME` as
/// `2018-04-01 00:00:31` in UTC, amounts with 2 decimals), buffered.
pub fn write_csv(rows: &[HandbookTx], writer: impl Write) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, writer);
    writeln!(out, "{CSV_HEADER}")?;
    // Rows come in time order: the date changes once a day, so format it once a day.
    let mut date_of: Option<(i64, String)> = None;
    for tx in rows {
        let seconds = tx.tx_datetime.millis().div_euclid(1000);
        let (unix_day, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let date = match &date_of {
            Some((day, date)) if *day == unix_day => date,
            _ => &date_of.insert((unix_day, civil_date(unix_day)?)).1,
        };
        writeln!(
            out,
            "{},{date} {:02}:{:02}:{:02},{},{},{}.{:02},{},{},{},{}",
            tx.transaction_id,
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
            tx.customer_id,
            tx.terminal_id,
            tx.amount_cents / 100,
            tx.amount_cents % 100,
            tx.tx_time_seconds,
            tx.tx_time_days,
            u8::from(tx.is_fraud()),
            tx.scenario.code(),
        )?;
    }
    out.flush()
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01.
fn civil_date(unix_day: i64) -> io::Result<String> {
    const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;
    i32::try_from(unix_day + UNIX_EPOCH_JULIAN_DAY)
        .ok()
        .and_then(|julian| time::Date::from_julian_day(julian).ok())
        .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "date out of range"))
}

/// The config that `simulate --profile handbook` asks for, and where the CSV goes.
fn plan(args: &SimulateArgs) -> Result<(HandbookConfig, PathBuf), SimulateError> {
    let usage = |m: &str| SimulateError::Usage(m.to_string());
    if args.target.is_some() || args.kafka.is_some() {
        return Err(usage(
            "--target and --kafka do not apply to --profile handbook: it writes a CSV dataset, give --out FILE",
        ));
    }
    if args.count.is_some() {
        return Err(usage(
            "--count does not apply to --profile handbook: size it with --customers, --terminals and --days",
        ));
    }
    let Some(out) = args.out.clone() else {
        return Err(usage(
            "--profile handbook writes a CSV dataset: give --out FILE (`-` for stdout)",
        ));
    };
    let book = HandbookConfig::default();
    // `--start` always has a value; left at the default profile's, it means the book's start.
    let start = if args.start == SimulateArgs::default().start {
        book.start
    } else {
        Timestamp::parse(&args.start)
            .map_err(|problem| SimulateError::Usage(format!("--start: {problem}")))?
    };
    let config = HandbookConfig {
        seed: args.seed,
        customers: args.customers.unwrap_or(book.customers),
        terminals: args.terminals.unwrap_or(book.terminals),
        days: args.days.unwrap_or(book.days),
        start,
        ..book
    };
    config
        .validate()
        .map_err(|problem| SimulateError::Usage(format!("--profile handbook: {problem}")))?;
    Ok((config, out))
}

/// Runs `simulate --profile handbook`: simulates, writes the CSV and returns a one-line
/// summary.
pub(super) fn run(args: &SimulateArgs) -> Result<String, SimulateError> {
    let (config, path) = plan(args)?;
    let began = Instant::now();
    let rows = generate(&config);
    write_to(&rows, &path)?;
    let seconds = began.elapsed().as_secs_f64();
    let [genuine, high_amount, terminal, credentials] = scenario_counts(&rows);
    let fraud = rows.len() - genuine;
    let share = if rows.is_empty() {
        0.0
    } else {
        100.0 * fraud as f64 / rows.len() as f64
    };
    Ok(format!(
        "wrote {} handbook transactions to {}: {fraud} fraudulent ({share:.2}%; scenario 1 \
         {high_amount}, scenario 2 {terminal}, scenario 3 {credentials}) in {seconds:.2} s",
        rows.len(),
        path.display(),
    ))
}

fn write_to(rows: &[HandbookTx], path: &Path) -> Result<(), SimulateError> {
    let name = path.display().to_string();
    let written = if name == "-" {
        write_csv(rows, io::stdout().lock())
    } else {
        std::fs::File::create(path).and_then(|file| write_csv(rows, file))
    };
    written.map_err(|source| SimulateError::Io { path: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// Book proportions at a smaller scale: with fewer terminals or customers, 2 terminals and
    /// 3 customers a day would compromise a large part of the world.
    fn small_config() -> HandbookConfig {
        HandbookConfig {
            seed: 7,
            customers: 1_000,
            terminals: 5_000,
            days: 30,
            ..HandbookConfig::default()
        }
    }

    fn small() -> &'static HandbookDataset {
        static DATASET: OnceLock<HandbookDataset> = OnceLock::new();
        DATASET.get_or_init(|| generate_dataset(&small_config()))
    }

    #[test]
    fn the_same_seed_gives_the_same_rows() {
        let config = HandbookConfig {
            customers: 200,
            terminals: 400,
            days: 20,
            ..small_config()
        };
        let rows = generate(&config);
        assert!(!rows.is_empty());
        assert_eq!(rows, generate(&config));
        assert_ne!(rows, generate(&HandbookConfig { seed: 8, ..config }));
    }

    #[test]
    fn rows_are_in_time_order_and_numbered_from_zero() {
        let rows = &small().transactions;
        assert!(rows.len() > 10_000, "{}", rows.len());
        for (i, tx) in rows.iter().enumerate() {
            assert_eq!(tx.transaction_id as usize, i);
            assert_eq!(tx.tx_time_days, tx.tx_time_seconds / DAY_SECONDS);
            assert_ne!(tx.tx_time_seconds % DAY_SECONDS, 0);
            assert_eq!(
                tx.tx_datetime.millis(),
                HANDBOOK_START_MS + i64::from(tx.tx_time_seconds) * 1000
            );
        }
        assert!(rows
            .windows(2)
            .all(|w| w[0].tx_time_seconds <= w[1].tx_time_seconds));
    }

    #[test]
    fn every_amount_above_220_is_fraud() {
        let rows = &small().transactions;
        let high: Vec<_> = rows
            .iter()
            .filter(|tx| tx.amount_cents > HIGH_AMOUNT_CENTS)
            .collect();
        assert!(high
            .iter()
            .any(|tx| tx.scenario == HandbookScenario::HighAmount));
        assert!(high.iter().all(|tx| tx.is_fraud()));
        assert!(rows
            .iter()
            .filter(|tx| tx.scenario == HandbookScenario::HighAmount)
            .all(|tx| tx.amount_cents > HIGH_AMOUNT_CENTS));
    }

    #[test]
    fn compromised_terminal_frauds_are_exactly_the_28_day_windows() {
        let data = small();
        let last_day = data.transactions.last().map(|tx| tx.tx_time_days).unwrap();
        assert_eq!(
            data.compromised_terminals.len(),
            last_day as usize * TERMINALS_COMPROMISED_PER_DAY
        );
        let compromised_when = |tx: &HandbookTx| {
            data.compromised_terminals.iter().any(|c| {
                c.terminal_id == tx.terminal_id
                    && c.day <= tx.tx_time_days
                    && tx.tx_time_days <= c.day + 27
            })
        };
        let mut hits = 0;
        for tx in &data.transactions {
            if tx.scenario == HandbookScenario::CompromisedTerminal {
                assert!(compromised_when(tx), "{tx:?}");
                hits += 1;
            } else if compromised_when(tx) {
                // Only scenario 3, applied later, may relabel it.
                assert_eq!(tx.scenario, HandbookScenario::LeakedCredentials, "{tx:?}");
            }
        }
        assert!(hits > 0);
    }

    #[test]
    fn leaked_credential_frauds_fall_in_a_14_day_window_and_take_about_a_third() {
        let data = small();
        let leaked_when = |tx: &HandbookTx| {
            data.leaked_credentials.iter().any(|l| {
                l.customer_id == tx.customer_id
                    && l.day <= tx.tx_time_days
                    && tx.tx_time_days <= l.day + 13
            })
        };
        let mut exposed = 0;
        let mut taken = 0;
        for tx in &data.transactions {
            if leaked_when(tx) {
                exposed += 1;
                taken += usize::from(tx.scenario == HandbookScenario::LeakedCredentials);
            } else {
                assert_ne!(tx.scenario, HandbookScenario::LeakedCredentials, "{tx:?}");
            }
        }
        assert!(taken > 0);
        // Overlapping leaks of one customer draw their thirds independently: a bit above 1/3.
        let share = taken as f64 / exposed as f64;
        assert!((0.25..0.5).contains(&share), "{share}");
    }

    #[test]
    fn customers_pay_only_at_terminals_within_the_radius() {
        let data = small();
        for tx in &data.transactions {
            let c = data.customers[tx.customer_id as usize];
            let t = data.terminals[tx.terminal_id as usize];
            assert!(((c.x - t.x).powi(2) + (c.y - t.y).powi(2)).sqrt() < 5.0);
        }
    }

    #[test]
    fn the_grid_finds_the_same_terminals_as_the_book_brute_force() {
        let data = small();
        let grid = TerminalGrid::new(&data.terminals, 5.0);
        let mut found = Vec::new();
        for c in data.customers.iter().take(200) {
            grid.within(&data.terminals, (c.x, c.y), 5.0, &mut found);
            let brute: Vec<u32> = (0..data.terminals.len() as u32)
                .filter(|&id| {
                    let t = data.terminals[id as usize];
                    ((t.x - c.x).powi(2) + (t.y - c.y).powi(2)).sqrt() < 5.0
                })
                .collect();
            assert_eq!(found, brute);
        }
    }

    #[test]
    fn profiles_follow_the_book_ranges() {
        let data = small();
        for c in &data.customers {
            assert!((0.0..100.0).contains(&c.x) && (0.0..100.0).contains(&c.y));
            assert!((5.0..100.0).contains(&c.mean_amount));
            assert_eq!(c.std_amount, c.mean_amount / 2.0);
            assert!((0.0..4.0).contains(&c.mean_nb_tx_per_day));
        }
    }

    #[test]
    fn csv_has_the_book_header_and_rows_that_read_back() {
        let rows = &small().transactions;
        let mut bytes = Vec::new();
        write_csv(rows, &mut bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,\
                 TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO"
            )
        );
        let mut count = 0;
        for (line, tx) in lines.zip(rows) {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 9, "{line}");
            assert_eq!(fields[0].parse::<u32>().unwrap(), tx.transaction_id);
            assert_eq!(fields[1].len(), "2018-04-01 00:00:31".len(), "{line}");
            assert_eq!(Timestamp::parse(fields[1]).unwrap(), tx.tx_datetime);
            assert_eq!(fields[2].parse::<u32>().unwrap(), tx.customer_id);
            assert_eq!(fields[3].parse::<u32>().unwrap(), tx.terminal_id);
            let (units, cents) = fields[4].split_once('.').unwrap();
            assert_eq!(cents.len(), 2, "{line}");
            assert_eq!(
                units.parse::<u64>().unwrap() * 100 + cents.parse::<u64>().unwrap(),
                tx.amount_cents
            );
            assert_eq!(fields[5].parse::<u32>().unwrap(), tx.tx_time_seconds);
            assert_eq!(fields[6].parse::<u32>().unwrap(), tx.tx_time_days);
            assert_eq!(fields[7], if tx.is_fraud() { "1" } else { "0" });
            assert_eq!(fields[8].parse::<u8>().unwrap(), tx.scenario.code());
            count += 1;
        }
        assert_eq!(count, rows.len());

        let one = HandbookTx {
            transaction_id: 3,
            tx_datetime: Timestamp::from_millis(HANDBOOK_START_MS + 86_431_000),
            customer_id: 12,
            terminal_id: 345,
            amount_cents: 5_705,
            tx_time_seconds: 86_431,
            tx_time_days: 1,
            scenario: HandbookScenario::CompromisedTerminal,
        };
        let mut bytes = Vec::new();
        write_csv(&[one], &mut bytes).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap().lines().nth(1),
            Some("3,2018-04-02 00:00:31,12,345,57.05,86431,1,1,2")
        );
    }

    #[test]
    fn fraud_share_is_plausible() {
        let rows = &small().transactions;
        let [genuine, high_amount, terminal, credentials] = scenario_counts(rows);
        assert!(high_amount > 0 && terminal > 0 && credentials > 0);
        let share = (rows.len() - genuine) as f64 / rows.len() as f64;
        assert!((0.002..0.05).contains(&share), "{share}");
    }

    #[test]
    fn tiny_worlds_do_not_panic() {
        let lonely = HandbookConfig {
            customers: 1,
            terminals: 1,
            days: 40,
            radius: 200.0,
            ..small_config()
        };
        let data = generate_dataset(&lonely);
        assert!(data.transactions.iter().all(|tx| tx.terminal_id == 0));
        assert!(data.leaked_credentials.iter().all(|l| l.customer_id == 0));
        let empty = generate(&HandbookConfig {
            customers: 5,
            terminals: 0,
            ..small_config()
        });
        assert!(empty.is_empty());
        let mut bytes = Vec::new();
        write_csv(&empty, &mut bytes).unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), format!("{CSV_HEADER}\n"));
    }

    #[test]
    fn the_default_is_the_book_dataset() {
        let book = HandbookConfig::default();
        assert_eq!(
            Timestamp::parse(HANDBOOK_START).unwrap(),
            Timestamp::from_millis(HANDBOOK_START_MS)
        );
        assert_eq!(
            (book.customers, book.terminals, book.days, book.radius),
            (5_000, 10_000, 183, 5.0)
        );
        assert_eq!(book.start.millis(), HANDBOOK_START_MS);
        assert!(book.validate().is_ok());
        let too_big = HandbookConfig {
            customers: 1_000_000,
            days: 100,
            ..book
        };
        assert!(too_big.validate().unwrap_err().contains("customers x days"));
    }

    fn usage_error(args: &SimulateArgs) -> String {
        match plan(args) {
            Err(SimulateError::Usage(m)) => m,
            Err(e) => panic!("not a usage error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn the_command_line_wants_a_file_and_defaults_to_the_book() {
        let handbook = SimulateArgs {
            profile: super::super::SimulateProfile::Handbook,
            ..SimulateArgs::default()
        };
        assert!(usage_error(&handbook).contains("--out FILE"));
        let with_target = SimulateArgs {
            target: Some("http://127.0.0.1:1".into()),
            out: Some("x.csv".into()),
            ..handbook.clone()
        };
        assert!(usage_error(&with_target).contains("do not apply"));

        let to_file = SimulateArgs {
            out: Some("x.csv".into()),
            seed: 9,
            ..handbook
        };
        let (config, path) = plan(&to_file).unwrap();
        assert_eq!(path, PathBuf::from("x.csv"));
        assert_eq!(
            config,
            HandbookConfig {
                seed: 9,
                ..HandbookConfig::default()
            }
        );

        let resized = SimulateArgs {
            customers: Some(300),
            terminals: Some(700),
            days: Some(10),
            start: "2020-01-01 00:00:00".into(),
            ..to_file.clone()
        };
        let (config, _) = plan(&resized).unwrap();
        assert_eq!(
            (config.customers, config.terminals, config.days),
            (300, 700, 10)
        );
        assert_eq!(
            config.start,
            Timestamp::parse("2020-01-01T00:00:00Z").unwrap()
        );

        let zero_days = SimulateArgs {
            days: Some(0),
            ..to_file
        };
        assert!(usage_error(&zero_days).contains("days must be"));
    }

    #[test]
    fn run_writes_the_csv_and_summarises_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handbook.csv");
        let args = SimulateArgs {
            profile: super::super::SimulateProfile::Handbook,
            out: Some(path.clone()),
            customers: Some(300),
            terminals: Some(1_000),
            days: Some(10),
            ..SimulateArgs::default()
        };
        let summary = run(&args).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let rows = text.lines().count() - 1;
        assert!(rows > 0);
        assert!(
            summary.starts_with(&format!("wrote {rows} handbook transactions to ")),
            "{summary}"
        );
        assert!(summary.contains("scenario 3"), "{summary}");
        assert!(text.lines().nth(1).unwrap().starts_with("0,2018-04-01 "));
    }
}
