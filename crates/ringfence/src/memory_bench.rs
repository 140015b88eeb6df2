//! The engine's memory benchmark (`ringfence bench --memory`): bytes of entity state per active
//! entity at a given number of cards, and how the state grows over a simulated week in which
//! customers come and go (idle entities expire).
//!
//! Memory is measured as the growth of the process's resident set (`VmRSS` in
//! `/proc/self/status`) from an empty engine to the built state: everything the allocator
//! took from the system for the state, its hash tables' spare capacity and the allocator's
//! own overhead included, which is what a server pays. Transactions are made one at a time and
//! dropped after scoring, so nothing but the state stays resident. Linux only: elsewhere the
//! RSS fields are absent and only the entity counts are reported.

use std::sync::Arc;

use ringfence_core::engine::{Engine, EngineConfig};
use ringfence_core::event::{EntityId, Timestamp, Transaction, TxKind};
use ringfence_core::rules::RuleSet;
use ringfence_core::state::StateCounts;
use serde::Serialize;

use crate::engine_bench::EngineBenchError;
use crate::host::DEFAULT_RULES;

/// 2026-01-05T00:00:00Z, a Monday: the simulated traffic starts here.
const START_MS: i64 = 1_767_571_200_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Merchants and terminals the simulated cards pay at: shared by everyone, so they are a
/// fixed cost, not state per card.
const MERCHANTS: u64 = 5_000;
const TERMINALS: u64 = 20_000;
/// Cards per user and per IP address: two cards of one household share a user, a device and
/// an IP (a realistic mix, and it makes the link graph join nodes).
const CARDS_PER_USER: u64 = 2;

/// Result of a memory benchmark.
#[derive(Debug, Serialize)]
pub struct MemoryReport {
    /// Active cards simulated.
    pub cards: u64,
    /// Transactions each card made.
    pub tx_per_card: u64,
    /// Idle time after which an entity is forgotten (days).
    pub idle_ttl_days: f64,
    /// What the state holds after building it.
    pub state: StateCounts,
    /// Users + cards + devices + IPs + merchants + terminals.
    pub entities: usize,
    /// Resident set growth from the empty engine to the built state (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_bytes: Option<u64>,
    /// `state_bytes / entities`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_entity: Option<f64>,
    /// `state_bytes / cards`: the whole state's cost per active card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_card: Option<f64>,
    /// With `--days`: one sample per simulated half day.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<MemorySample>,
}

/// The state at one moment of the simulated week.
#[derive(Debug, Serialize)]
pub struct MemorySample {
    /// Simulated days since the start.
    pub day: f64,
    /// Transactions scored so far.
    pub transactions: u64,
    /// Distinct cards seen so far (held or expired).
    pub cards_seen: u64,
    /// What the state holds.
    pub state: StateCounts,
    /// Resident set growth since the empty engine (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_bytes: Option<u64>,
}

impl MemoryReport {
    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        let s = &self.state;
        let mut out = format!(
            "memory: {} active cards x {} transactions, idle TTL {} d\nstate: {} cards, {} users, {} devices, {} ips, {} merchants, {} terminals ({} entities), {} link-graph nodes",
            self.cards,
            self.tx_per_card,
            self.idle_ttl_days,
            s.cards,
            s.users,
            s.devices,
            s.ips,
            s.merchants,
            s.terminals,
            self.entities,
            s.graph_nodes
        );
        if let (Some(b), Some(e), Some(c)) =
            (self.state_bytes, self.bytes_per_entity, self.bytes_per_card)
        {
            out += &format!(
                "\nresident set growth: {:.1} MB -> {e:.0} bytes per entity, {c:.0} bytes per active card",
                b as f64 / 1e6
            );
        }
        if !self.timeline.is_empty() {
            out += "\nday  transactions  cards seen  cards held  users  devices  ips  graph nodes  state MB";
            for t in &self.timeline {
                out += &format!(
                    "\n{:>4.1} {:>13} {:>11} {:>11} {:>6} {:>8} {:>5} {:>12} {:>9}",
                    t.day,
                    t.transactions,
                    t.cards_seen,
                    t.state.cards,
                    t.state.users,
                    t.state.devices,
                    t.state.ips,
                    t.state.graph_nodes,
                    t.state_bytes
                        .map_or("-".to_owned(), |b| format!("{:.1}", b as f64 / 1e6))
                );
            }
        }
        out
    }
}

/// Resident set size of this process in bytes, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One card's payment: the card, its household's user, device and IP, a merchant and a
/// terminal picked from the card number and the transaction's sequence, an amount that varies.
fn payment(card: u64, seq: u64, at_ms: i64) -> Result<Transaction, EngineBenchError> {
    let id = |field: &str, v: String| {
        EntityId::parse(field, &v)
            .map_err(|e| EngineBenchError::Invalid(seq as usize, e.to_string()))
    };
    let household = card / CARDS_PER_USER;
    let mix = card.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_mul(0xD1B5_4A32_D192_ED03);
    Ok(Transaction {
        transaction_id: id("transaction_id", format!("m{card}-{seq}"))?,
        timestamp: Timestamp::from_millis(at_ms),
        kind: TxKind::Payment,
        amount: 5.0 + (mix % 20_000) as f64 / 100.0,
        currency: None,
        user_id: Some(id("user_id", format!("user-{household}"))?),
        card_id: Some(id("card_id", format!("card-{card}"))?),
        card_token: None,
        device_id: Some(id("device_id", format!("device-{household}"))?),
        ip: Some(id("ip", format!("ip-{household}"))?),
        email: None,
        merchant: Some(id(
            "merchant",
            format!("merchant-{}", (mix >> 20) % MERCHANTS),
        )?),
        merchant_category: None,
        terminal_id: Some(id(
            "terminal_id",
            format!("terminal-{}", (mix >> 40) % TERMINALS),
        )?),
        store_id: None,
        country: None,
        location: None,
        retail: None,
    })
}

fn engine(idle_ttl_days: f64) -> Result<Engine, EngineBenchError> {
    let rules =
        RuleSet::from_toml(DEFAULT_RULES).map_err(|e| EngineBenchError::Rules(e.to_string()))?;
    let config = EngineConfig {
        idle_ttl_ms: (idle_ttl_days * DAY_MS as f64) as i64,
        ..EngineConfig::default()
    };
    Ok(Engine::new(config, Arc::new(rules)))
}

fn entities(s: &StateCounts) -> usize {
    s.cards + s.users + s.devices + s.ips + s.merchants + s.terminals
}

/// Bytes per entity at `cards` active cards: each card pays `tx_per_card` times, spread
/// evenly over one day, in time order.
pub fn run(
    cards: u64,
    tx_per_card: u64,
    idle_ttl_days: Option<f64>,
) -> Result<MemoryReport, EngineBenchError> {
    let ttl = idle_ttl_days.unwrap_or(EngineConfig::default().idle_ttl_ms as f64 / DAY_MS as f64);
    let mut engine = engine(ttl)?;
    let before = resident_bytes();
    let rounds = tx_per_card.max(1);
    let step = DAY_MS / rounds as i64;
    let mut seq = 0;
    for round in 0..rounds {
        for card in 0..cards {
            let at = START_MS + round as i64 * step + (card as i64 * step) / cards.max(1) as i64;
            let tx = payment(card, seq, at)?;
            engine.score(&tx);
            seq += 1;
        }
    }
    let state = engine.state_counts();
    let state_bytes = before
        .zip(resident_bytes())
        .map(|(b, a)| a.saturating_sub(b));
    let n = entities(&state);
    Ok(MemoryReport {
        cards,
        tx_per_card: rounds,
        idle_ttl_days: ttl,
        state,
        entities: n,
        state_bytes,
        bytes_per_entity: state_bytes.map(|b| b as f64 / n.max(1) as f64),
        bytes_per_card: state_bytes.map(|b| b as f64 / cards.max(1) as f64),
        timeline: Vec::new(),
    })
}

/// `days` of traffic from a churning population: on any day `cards` cards are active, and each
/// day `churn` of them (a fraction) are replaced by cards never seen before (new customers in,
/// lapsed ones out). Every active card pays `tx_per_card` times a day. Without expiry the state
/// would grow by `churn x cards` cards (and their users, devices and IPs) every day; with it,
/// it levels off at about `cards x (1 + churn x idle_ttl_days)`.
pub fn run_week(
    cards: u64,
    tx_per_card: u64,
    days: u64,
    churn: f64,
    idle_ttl_days: f64,
) -> Result<MemoryReport, EngineBenchError> {
    let mut engine = engine(idle_ttl_days)?;
    let before = resident_bytes();
    // Cards active on day d: [d x new_per_day, d x new_per_day + cards). Households follow.
    let new_per_day =
        ((cards as f64 * churn.clamp(0.0, 1.0)) as u64 / CARDS_PER_USER) * CARDS_PER_USER;
    let rounds = tx_per_card.max(1);
    // Half-day slices, so the timeline has two samples a day.
    let slices_per_day = 2 * rounds;
    let slice_ms = DAY_MS / slices_per_day as i64;
    let cards_per_slice = cards.div_ceil(2);
    let mut timeline = Vec::new();
    let mut seq = 0u64;
    for day in 0..days {
        let first = day * new_per_day;
        for slice in 0..slices_per_day {
            // Each card pays once per round (two slices): half of them in each slice.
            let half = slice % 2;
            let from = half * cards_per_slice;
            let to = (from + cards_per_slice).min(cards);
            let t0 = START_MS + day as i64 * DAY_MS + slice as i64 * slice_ms;
            let span = (to - from).max(1) as i64;
            for i in from..to {
                let at = t0 + ((i - from) as i64 * slice_ms) / span;
                let tx = payment(first + i, seq, at)?;
                engine.score(&tx);
                seq += 1;
            }
            if slice % rounds == rounds - 1 {
                timeline.push(MemorySample {
                    day: day as f64 + (slice + 1) as f64 / slices_per_day as f64,
                    transactions: seq,
                    cards_seen: first + cards,
                    state: engine.state_counts(),
                    state_bytes: before
                        .zip(resident_bytes())
                        .map(|(b, a)| a.saturating_sub(b)),
                });
            }
        }
    }
    let state = engine.state_counts();
    let state_bytes = before
        .zip(resident_bytes())
        .map(|(b, a)| a.saturating_sub(b));
    let n = entities(&state);
    Ok(MemoryReport {
        cards,
        tx_per_card: rounds,
        idle_ttl_days,
        state,
        entities: n,
        state_bytes,
        bytes_per_entity: state_bytes.map(|b| b as f64 / n.max(1) as f64),
        bytes_per_card: state_bytes.map(|b| b as f64 / state.cards.max(1) as f64),
        timeline,
    })
}

/// Runs the memory benchmark the bench options ask for: the week of churning traffic with
/// `--days`, else bytes per entity at `--cards`.
pub fn run_args(args: &crate::bench::BenchArgs) -> Result<MemoryReport, EngineBenchError> {
    if args.cards == 0 || args.cards > 100_000_000 {
        return Err(EngineBenchError::Args(format!(
            "--cards must be 1 to 100000000, not {}",
            args.cards
        )));
    }
    if args.tx_per_card == 0 || args.tx_per_card > 1_000 {
        return Err(EngineBenchError::Args(format!(
            "--tx-per-card must be 1 to 1000, not {}",
            args.tx_per_card
        )));
    }
    if let Some(ttl) = args.idle_ttl_days {
        if !(ttl.is_finite() && ttl > 0.0 && ttl <= 3650.0) {
            return Err(EngineBenchError::Args(format!(
                "--idle-ttl-days must be above 0 and at most 3650, not {ttl}"
            )));
        }
    }
    if args.days == 0 {
        return run(args.cards, args.tx_per_card, args.idle_ttl_days);
    }
    if !(args.churn.is_finite() && (0.0..=1.0).contains(&args.churn)) {
        return Err(EngineBenchError::Args(format!(
            "--churn must be between 0 and 1, not {}",
            args.churn
        )));
    }
    if args.days > 366 {
        return Err(EngineBenchError::Args(format!(
            "--days must be at most 366, not {}",
            args.days
        )));
    }
    let ttl = args
        .idle_ttl_days
        .unwrap_or(EngineConfig::default().idle_ttl_ms as f64 / DAY_MS as f64);
    run_week(args.cards, args.tx_per_card, args.days, args.churn, ttl)
}
