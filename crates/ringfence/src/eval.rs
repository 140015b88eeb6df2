//! `ringfence eval`: the prequential protocol of the fraud-detection handbook (Le Borgne et
//! al., "Reproducible Machine Learning for Credit Card Fraud Detection"): for each fold, 7
//! days of training, 7 days of label delay, 7 days of test. Cards already known to be
//! compromised are removed from the test days: those with fraud in the training week, and
//! those whose fraud in the delay week has become visible by the test day. Reported: AUC ROC
//! and average precision over test transactions, and card precision@100 per day.
//!
//! Features are streaming only: one replay of the whole history, labels visible after the
//! delay, each transaction's features read before it is applied, exactly as live scoring.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use ringfence_core::event::CardHasher;
use ringfence_core::features::{self, FeatureValues};
use ringfence_core::model::ModelMeta;
use serde::Serialize;

use crate::metrics_eval::{auc_roc, average_precision, card_precision_at_k, CardScore};
use crate::replay;
use crate::train::{self, TrainError, TrainingSet};

const DAY_MS: i64 = 86_400_000;

/// Flags of `ringfence eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// History file (CSV or NDJSON), e.g. from `simulate --profile handbook`.
    #[arg(long)]
    pub data: PathBuf,
    /// Column mapping, as for `replay`; must map `label` and `card_id`.
    #[arg(
        long,
        default_value = "transaction_id=TRANSACTION_ID,timestamp=TX_DATETIME,card_id=CUSTOMER_ID,terminal_id=TERMINAL_ID,amount=TX_AMOUNT,label=TX_FRAUD"
    )]
    pub columns: String,
    /// First day of each test week.
    #[arg(long, default_value = "2018-08-08,2018-08-15,2018-08-22,2018-08-29")]
    pub test_starts: String,
    /// Days of training before the delay.
    #[arg(long, default_value_t = 7)]
    pub train_days: i64,
    /// Days of label delay between training and test (also the replay's label delay).
    #[arg(long, default_value_t = 7)]
    pub delay_days: i64,
    /// Days of test.
    #[arg(long, default_value_t = 7)]
    pub test_days: i64,
    /// Cards per day for card precision.
    #[arg(long, default_value_t = 100)]
    pub top_k: usize,
    /// Learner settings.
    #[command(flatten)]
    pub learner: train::LearnerArgs,
    /// Rules file used while replaying.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Writes every test prediction as CSV: `fold,transaction_id,card_id,score,label`.
    #[arg(long)]
    pub predictions_out: Option<PathBuf>,
}

/// The result of one fold.
#[derive(Debug, Serialize)]
pub struct FoldReport {
    /// First test day.
    pub test_start: String,
    /// Training transactions (and frauds among them).
    pub train_rows: usize,
    /// Frauds in training.
    pub train_frauds: usize,
    /// Test transactions after removing known compromised cards.
    pub test_rows: usize,
    /// Frauds among them.
    pub test_frauds: usize,
    /// Features the model uses.
    pub features: usize,
    /// Trees in the model.
    pub trees: usize,
    /// AUC ROC.
    pub auc_roc: f64,
    /// Average precision.
    pub average_precision: f64,
    /// Card precision@k.
    pub card_precision: f64,
}

/// The whole evaluation.
#[derive(Debug, Serialize)]
pub struct EvalReport {
    /// Per fold.
    pub folds: Vec<FoldReport>,
    /// Mean AUC ROC.
    pub auc_roc: f64,
    /// Mean average precision.
    pub average_precision: f64,
    /// Mean card precision@k.
    pub card_precision: f64,
    /// k of card precision.
    pub top_k: usize,
    /// Seconds taken.
    pub seconds: f64,
}

impl EvalReport {
    /// A Markdown table.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "| test week from | train rows (frauds) | test rows (frauds) | features | trees | AUC ROC | AP | CP@{} |\n|---|---|---|---|---|---|---|---|\n",
            self.top_k
        );
        for f in &self.folds {
            s.push_str(&format!(
                "| {} | {} ({}) | {} ({}) | {} | {} | {:.3} | {:.3} | {:.3} |\n",
                f.test_start,
                f.train_rows,
                f.train_frauds,
                f.test_rows,
                f.test_frauds,
                f.features,
                f.trees,
                f.auc_roc,
                f.average_precision,
                f.card_precision
            ));
        }
        s.push_str(&format!(
            "| **mean** | | | | | **{:.3}** | **{:.3}** | **{:.3}** |\n",
            self.auc_roc, self.average_precision, self.card_precision
        ));
        s
    }
}

/// One transaction inside the evaluation range.
struct Kept {
    id: String,
    ts: i64,
    card: String,
    label: bool,
}

/// `ringfence eval`.
pub fn run(args: &EvalArgs) -> Result<EvalReport, TrainError> {
    let started = Instant::now();
    if args.top_k == 0 || args.train_days < 1 || args.test_days < 1 {
        return Err(TrainError::Invalid(
            "--top-k, --train-days and --test-days must be at least 1".into(),
        ));
    }
    let starts = args
        .test_starts
        .split(',')
        .map(|s| train::parse_day(s.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let (Some(first), Some(last)) = (starts.iter().min(), starts.iter().max()) else {
        return Err(TrainError::Invalid("--test-starts is empty".into()));
    };
    let range_from = first.millis() - (args.delay_days + args.train_days) * DAY_MS;
    let range_until = last.millis() + args.test_days * DAY_MS;

    let rows = replay::load(
        &args.data,
        &args.columns,
        &CardHasher::new(b"ringfence-replay"),
    )?;
    let mut engine = replay::engine(args.rules.as_deref(), args.delay_days)?;
    let mut set = TrainingSet::default();
    let mut kept: Vec<Kept> = Vec::new();
    let mut missing_label = 0usize;
    replay::run(&rows, &mut engine, Some(args.delay_days), |i, s| {
        let ts = rows[i].tx.timestamp.millis();
        if ts < range_from || ts >= range_until {
            return;
        }
        let Some(label) = rows[i].label else {
            missing_label += 1;
            return;
        };
        set.push(&s.features, label);
        kept.push(Kept {
            id: rows[i].tx.transaction_id.as_str().to_owned(),
            ts,
            card: rows[i]
                .tx
                .card_id
                .as_ref()
                .map_or_else(String::new, |c| c.as_str().to_owned()),
            label,
        });
    });
    if missing_label > 0 {
        return Err(TrainError::Invalid(format!(
            "{missing_label} transactions in the evaluation range have no label; map `label` in --columns"
        )));
    }

    let mut predictions = String::new();
    let mut folds = Vec::new();
    for start in &starts {
        let test_from = start.millis();
        let train_from = test_from - (args.delay_days + args.train_days) * DAY_MS;
        let train_until = train_from + args.train_days * DAY_MS;
        let in_range = |k: &Kept, from: i64, until: i64| k.ts >= from && k.ts < until;

        let mut train_set = TrainingSet::default();
        let mut known: HashSet<&str> = HashSet::new();
        let mut f = FeatureValues::default();
        for (i, k) in kept.iter().enumerate() {
            if in_range(k, train_from, train_until) {
                f.num.copy_from_slice(set.row(i));
                train_set.push(&f, k.label);
                if k.label {
                    known.insert(&k.card);
                }
            }
        }
        let columns = train::informative_features(&train_set);
        let meta = ModelMeta {
            catalog_version: features::CATALOG_VERSION,
            source: "ringfence-gbdt (forust-ml)".into(),
            trained_at: None,
            notes: serde_json::json!({ "fold_test_start": start.to_rfc3339() }),
        };
        let (model, _) = train::fit(&train_set, &columns, &args.learner, meta)?;

        let (mut scores, mut labels, mut days) = (Vec::new(), Vec::new(), Vec::new());
        for day in 0..args.test_days {
            // Frauds of the delay-week days before this test day are known by now.
            let visible_until = train_until + day * DAY_MS;
            for k in kept
                .iter()
                .filter(|k| in_range(k, train_until, visible_until) && k.label)
            {
                known.insert(&k.card);
            }
            let (from, until) = (test_from + day * DAY_MS, test_from + (day + 1) * DAY_MS);
            let mut today = Vec::new();
            for (i, k) in kept.iter().enumerate() {
                if !in_range(k, from, until) || known.contains(k.card.as_str()) {
                    continue;
                }
                f.num.copy_from_slice(set.row(i));
                let p = model.predict(&f);
                if args.predictions_out.is_some() {
                    predictions.push_str(&format!(
                        "{},{},{},{p},{}\n",
                        folds.len(),
                        k.id,
                        k.card,
                        u8::from(k.label)
                    ));
                }
                scores.push(p);
                labels.push(k.label);
                today.push(CardScore {
                    card: k.card.clone(),
                    score: p,
                    fraud: k.label,
                });
            }
            days.push(today);
        }
        folds.push(FoldReport {
            test_start: start.to_rfc3339()[..10].to_owned(),
            train_rows: train_set.len(),
            train_frauds: train_set.labels.iter().filter(|l| **l).count(),
            test_rows: scores.len(),
            test_frauds: labels.iter().filter(|l| **l).count(),
            features: columns.len(),
            trees: model.n_trees(),
            auc_roc: auc_roc(&scores, &labels).unwrap_or(f64::NAN),
            average_precision: average_precision(&scores, &labels).unwrap_or(f64::NAN),
            card_precision: card_precision_at_k(&days, args.top_k),
        });
    }
    if let Some(path) = &args.predictions_out {
        std::fs::write(
            path,
            format!("fold,transaction_id,card_id,score,label\n{predictions}"),
        )
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
    }
    let mean =
        |g: fn(&FoldReport) -> f64| folds.iter().map(g).sum::<f64>() / folds.len().max(1) as f64;
    Ok(EvalReport {
        auc_roc: mean(|f| f.auc_roc),
        average_precision: mean(|f| f.average_precision),
        card_precision: mean(|f| f.card_precision),
        folds,
        top_k: args.top_k,
        seconds: started.elapsed().as_secs_f64(),
    })
}
