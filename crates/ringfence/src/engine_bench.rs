//! The engine-only benchmark: features, rules and decision per transaction on one core, with
//! no HTTP and no storage. Traffic comes from the simulator and is parsed before timing.

use std::sync::Arc;
use std::time::Instant;

use ringfence_core::engine::{Engine, EngineConfig};
use ringfence_core::event::{CardHasher, ParseContext, RawTransaction, Timestamp, Transaction};
use ringfence_core::rules::RuleSet;
use serde::Serialize;

use crate::host::DEFAULT_RULES;
use crate::simulate::generator::{Generator, GeneratorConfig};

/// Result of one engine benchmark run.
#[derive(Debug, Serialize)]
pub struct EngineReport {
    /// Transactions scored before timing, to warm entity state.
    pub warmup: usize,
    /// Transactions scored.
    pub transactions: usize,
    /// Rules active.
    pub rules: usize,
    /// Wall time of the scoring loop, seconds.
    pub seconds: f64,
    /// Transactions per second on one core.
    pub per_second: f64,
    /// Mean nanoseconds per transaction.
    pub mean_ns: f64,
    /// Decisions other than approve.
    pub flagged: usize,
    /// On-CPU time of the scoring loop per transaction (ns), from the thread's scheduler
    /// statistics: unlike `mean_ns`, it leaves out time spent waiting for a core, so it holds
    /// on a loaded machine. Linux only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<f64>,
    /// `1e9 / cpu_ns`: transactions per second of one core's CPU time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_per_second: Option<f64>,
    /// Decisions that listed the model as a reason (so computed its path attributions).
    pub model_reasons: usize,
    /// With a model: trees in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_trees: Option<usize>,
    /// With a model: mean nanoseconds of one prediction alone (feature values precomputed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_predict_ns: Option<f64>,
    /// With a model: on-CPU nanoseconds of one prediction alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_predict_cpu_ns: Option<f64>,
}

/// On-CPU time of the calling thread (ns), from `/proc/thread-self/schedstat` (Linux).
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

impl EngineReport {
    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        let model = match (self.model_trees, self.model_predict_ns) {
            (Some(trees), Some(ns)) => format!(
                "\nmodel: {trees} trees, {ns:.0} ns per prediction (inference alone{}), model reasons on {} decisions",
                self.model_predict_cpu_ns
                    .map_or(String::new(), |c| format!("; {c:.0} ns on-CPU")),
                self.model_reasons
            ),
            _ => String::new(),
        };
        let cpu = match (self.cpu_ns, self.cpu_per_second) {
            (Some(ns), Some(per_second)) => {
                format!("\non-CPU: {ns:.0} ns/tx -> {per_second:.0} tx/s per core of CPU time")
            }
            _ => String::new(),
        };
        let engine = format!(
            "engine-only: {} transactions after {} warm-up, {} rules, {:.3} s -> {:.0} tx/s per core ({:.0} ns/tx), {} flagged",
            self.transactions, self.warmup, self.rules, self.seconds, self.per_second, self.mean_ns, self.flagged
        );
        engine + &cpu + &model
    }
}

/// Error of the engine benchmark.
#[derive(Debug, thiserror::Error)]
pub enum EngineBenchError {
    /// A generated transaction did not parse (a simulator bug).
    #[error("generated transaction {0} is invalid: {1}")]
    Invalid(usize, String),
    /// The default rules failed to compile.
    #[error("default rules: {0}")]
    Rules(String),
    /// The model file could not be loaded.
    #[error("model: {0}")]
    Model(String),
    /// An option is out of range.
    #[error("{0}")]
    Args(String),
}

/// Generates `warmup + count` simulated transactions, scores the first `warmup` untimed (so
/// entity state is warm, as in a long-running server) and times scoring the next `count` with
/// the default rules.
pub fn run(
    count: usize,
    warmup: usize,
    seed: u64,
    model: Option<&std::path::Path>,
) -> Result<EngineReport, EngineBenchError> {
    let hasher = CardHasher::new(b"bench");
    let gen_id = || String::from("unused");
    let cx = ParseContext {
        card_hasher: &hasher,
        now: Timestamp::from_millis(0),
        latest: Timestamp::MAX,
        generated_id: &gen_id,
    };
    let tps = 500.0;
    let generator = Generator::new(GeneratorConfig {
        seed,
        tps,
        customers: GeneratorConfig::customers_for_rate(tps),
        ..GeneratorConfig::default()
    });
    let mut txs: Vec<Transaction> = Vec::with_capacity(warmup + count);
    for (i, l) in generator.take(warmup + count).enumerate() {
        let json =
            serde_json::to_vec(&l.tx).map_err(|e| EngineBenchError::Invalid(i, e.to_string()))?;
        let raw: RawTransaction = serde_json::from_slice(&json)
            .map_err(|e| EngineBenchError::Invalid(i, e.to_string()))?;
        txs.push(
            Transaction::parse(raw, &cx)
                .map_err(|e| EngineBenchError::Invalid(i, e.to_string()))?,
        );
    }
    let rules =
        RuleSet::from_toml(DEFAULT_RULES).map_err(|e| EngineBenchError::Rules(e.to_string()))?;
    let n_rules = rules.len();
    let mut engine = Engine::new(EngineConfig::default(), Arc::new(rules));
    let model = model
        .map(|p| crate::models::load(p).map(Arc::new))
        .transpose()
        .map_err(EngineBenchError::Model)?;
    engine.set_models(ringfence_core::engine::Models {
        champion: model.clone(),
        challenger: None,
    });
    for tx in &txs[..warmup] {
        engine.score(tx);
    }
    let timed = &txs[warmup..];
    let (mut flagged, mut model_reasons) = (0, 0);
    let cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    for tx in timed {
        let scored = engine.score(tx);
        if scored.decision.decision > ringfence_core::decision::Action::Approve {
            flagged += 1;
        }
        if scored.decision.reasons.iter().any(|r| r.rule == "model") {
            model_reasons += 1;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_ns = cpu0
        .zip(thread_cpu_ns())
        .map(|(a, b)| b.saturating_sub(a) as f64 / timed.len().max(1) as f64);
    // Inference alone: feature vectors of the timed transactions, read without applying.
    let model_predict_ns = model.as_ref().map(|m| {
        let vectors: Vec<_> = timed
            .iter()
            .take(50_000)
            .map(|t| engine.evaluate(t).features.num)
            .collect();
        let mut f = ringfence_core::features::FeatureValues::default();
        let mut sink = 0.0;
        let cpu0 = thread_cpu_ns();
        let t0 = Instant::now();
        for v in &vectors {
            f.num = *v;
            sink += m.predict(&f);
        }
        let n = vectors.len().max(1) as f64;
        let ns = t0.elapsed().as_secs_f64() * 1e9 / n;
        let cpu = cpu0
            .zip(thread_cpu_ns())
            .map(|(a, b)| b.saturating_sub(a) as f64 / n);
        std::hint::black_box(sink);
        (ns, cpu)
    });
    Ok(EngineReport {
        model_trees: model.as_ref().map(|m| m.n_trees()),
        model_predict_ns: model_predict_ns.map(|(ns, _)| ns),
        model_predict_cpu_ns: model_predict_ns.and_then(|(_, cpu)| cpu),
        cpu_ns,
        cpu_per_second: cpu_ns.filter(|&ns| ns > 0.0).map(|ns| 1e9 / ns),
        model_reasons,
        warmup,
        transactions: timed.len(),
        rules: n_rules,
        seconds,
        per_second: timed.len() as f64 / seconds,
        mean_ns: seconds * 1e9 / timed.len().max(1) as f64,
        flagged,
    })
}
