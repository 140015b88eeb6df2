//! `ringfence replay`: a history file through the engine in event-time order, with fraud
//! labels that become visible only `--label-delay-days` after their transaction, as they do in
//! production. The same loop feeds training and evaluation, so the model sees exactly the
//! feature values live scoring would have produced.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ringfence_core::decision::Action;
use ringfence_core::engine::{Engine, EngineConfig, Scored};
use ringfence_core::event::{
    CardHasher, PanInput, ParseContext, RawTransaction, Timestamp, Transaction,
};
use ringfence_core::rules::RuleSet;

use crate::host::DEFAULT_RULES;

/// Flags of `ringfence replay`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// History file: CSV with a header row, or NDJSON (by extension `.ndjson`/`.jsonl`).
    #[arg(long)]
    pub data: PathBuf,
    /// Maps transaction fields to the file's columns, e.g.
    /// `transaction_id=TRANSACTION_ID,timestamp=TX_DATETIME,card_id=CUSTOMER_ID,terminal_id=TERMINAL_ID,amount=TX_AMOUNT,label=TX_FRAUD`.
    /// Unmapped fields are read from columns of the same name.
    #[arg(long, default_value = "")]
    pub columns: String,
    /// Days after its transaction when a label becomes visible to the engine; without it,
    /// labels are not fed back.
    #[arg(long)]
    pub label_delay_days: Option<i64>,
    /// Writes `transaction_id,score,model_score,decision` per transaction.
    #[arg(long)]
    pub scores_out: Option<PathBuf>,
    /// Rules file (built-in defaults when absent).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Model file whose probability joins the score (as for `serve`).
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// One transaction of history and its ground truth, if the file has one.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    /// The transaction.
    pub tx: Transaction,
    /// Confirmed fraud (`true`) or not, when labelled.
    pub label: Option<bool>,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--columns` is malformed or names an unknown field.
    #[error("--columns: {0}")]
    Columns(String),
    /// A row is invalid.
    #[error("{path}, line {line}: {message}")]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The rules file does not compile.
    #[error("rules: {0}")]
    Rules(String),
    /// The model file could not be loaded.
    #[error("model: {0}")]
    Model(String),
}

/// Transaction fields a column can map to (plus `label`).
const FIELDS: &[&str] = &[
    "transaction_id",
    "timestamp",
    "kind",
    "amount",
    "currency",
    "user_id",
    "card_id",
    "card_number",
    "device_id",
    "ip",
    "email",
    "merchant",
    "merchant_category",
    "terminal_id",
    "store_id",
    "country",
    "lat",
    "lon",
    "label",
];

/// Parses `field=COLUMN,...` into a field -> column map; unmapped fields map to themselves.
pub fn parse_columns(spec: &str) -> Result<HashMap<&'static str, String>, ReplayError> {
    let mut map: HashMap<&'static str, String> =
        FIELDS.iter().map(|f| (*f, (*f).to_owned())).collect();
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, column) = pair
            .split_once('=')
            .ok_or_else(|| ReplayError::Columns(format!("`{pair}` is not field=COLUMN")))?;
        let field = FIELDS.iter().find(|f| **f == field.trim()).ok_or_else(|| {
            ReplayError::Columns(format!(
                "unknown field `{}`; fields are {}",
                field.trim(),
                FIELDS.join(", ")
            ))
        })?;
        map.insert(field, column.trim().to_owned());
    }
    Ok(map)
}

/// Splits one CSV line into fields (RFC 4180 quoting; no embedded newlines).
fn split_csv(line: &str, out: &mut Vec<String>) {
    out.clear();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    out.push(field);
}

fn parse_label(v: &str) -> Option<Result<bool, String>> {
    match v.trim() {
        "" => None,
        "1" | "true" | "fraud" | "TRUE" | "True" => Some(Ok(true)),
        "0" | "false" | "not_fraud" | "legit" | "FALSE" | "False" => Some(Ok(false)),
        other => Some(Err(format!("label: `{other}` is not 0/1/true/false"))),
    }
}

/// Builds a raw transaction from `get(field)`.
fn raw_from(get: &dyn Fn(&str) -> Option<String>) -> Result<RawTransaction, String> {
    let num = |field: &str| -> Result<Option<f64>, String> {
        get(field)
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{field}: `{v}` is not a number"))
            })
            .transpose()
    };
    let amount = match num("amount")? {
        Some(a) => Some(
            serde_json::Number::from_f64(a)
                .ok_or_else(|| "amount: not a finite number".to_string())?,
        ),
        None => None,
    };
    Ok(RawTransaction {
        transaction_id: get("transaction_id"),
        timestamp: get("timestamp"),
        kind: get("kind"),
        amount,
        currency: get("currency"),
        user_id: get("user_id"),
        card_id: get("card_id"),
        card_number: get("card_number").map(PanInput::from_text),
        device_id: get("device_id"),
        ip: get("ip"),
        email: get("email"),
        merchant: get("merchant"),
        merchant_category: get("merchant_category"),
        terminal_id: get("terminal_id"),
        store_id: get("store_id"),
        country: get("country"),
        lat: num("lat")?,
        lon: num("lon")?,
        // A flat row has no item lines: purchases and returns come as NDJSON.
        receipt_id: get("receipt_id"),
        customer_id: get("customer_id"),
        items: None,
        photo: None,
    })
}

/// Reads a history file (CSV or NDJSON), validates every row like the API does, and sorts the
/// rows by event time (ties keep file order). Every row needs a timestamp.
pub fn load(
    path: &Path,
    columns: &str,
    hasher: &CardHasher,
) -> Result<Vec<HistoryRow>, ReplayError> {
    let map = parse_columns(columns)?;
    let io = |source| ReplayError::Io {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let row_err = |line: usize, message: String| ReplayError::Row {
        path: path.to_owned(),
        line,
        message,
    };
    let no_id = || String::new();
    let cx = ParseContext {
        card_hasher: hasher,
        now: Timestamp::MIN,
        latest: Timestamp::MAX,
        generated_id: &no_id,
    };
    let ndjson = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("ndjson" | "jsonl")
    );
    let mut rows = Vec::new();
    let mut finish =
        |line: usize, raw: RawTransaction, label: Option<String>| -> Result<(), ReplayError> {
            if raw.timestamp.is_none() {
                return Err(row_err(line, "timestamp: is required in history".into()));
            }
            let mut raw = raw;
            if raw.transaction_id.is_none() {
                raw.transaction_id = Some(format!("line-{line}"));
            }
            let tx = Transaction::parse(raw, &cx).map_err(|e| row_err(line, e.to_string()))?;
            let label = match label.as_deref().and_then(parse_label) {
                None => None,
                Some(Ok(l)) => Some(l),
                Some(Err(e)) => return Err(row_err(line, e)),
            };
            rows.push(HistoryRow { tx, label });
            Ok(())
        };
    if ndjson {
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
                .map_err(|e| row_err(i + 1, format!("malformed JSON: {e}")))?;
            let get = |field: &str| -> Option<String> {
                let column = map.get(field)?;
                match obj.get(column.as_str())? {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                }
            };
            let raw = raw_from(&get).map_err(|e| row_err(i + 1, e))?;
            finish(i + 1, raw, get("label"))?;
        }
    } else {
        let mut lines = text.lines().enumerate();
        let Some((_, header)) = lines.next() else {
            return Ok(Vec::new());
        };
        let mut cells = Vec::new();
        split_csv(header.trim_end_matches('\r'), &mut cells);
        let position: HashMap<&str, usize> = map
            .iter()
            .filter_map(|(field, column)| {
                cells
                    .iter()
                    .position(|c| c.trim() == column)
                    .map(|i| (*field, i))
            })
            .collect();
        for (field, column) in &map {
            if columns.contains(&format!("{field}=")) && !position.contains_key(field) {
                return Err(ReplayError::Columns(format!(
                    "column `{column}` (for {field}) is not in the header of {}",
                    path.display()
                )));
            }
        }
        for (i, line) in lines {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            split_csv(line, &mut cells);
            let get = |field: &str| -> Option<String> {
                let v = cells.get(*position.get(field)?)?;
                (!v.is_empty()).then(|| v.clone())
            };
            let raw = raw_from(&get).map_err(|e| row_err(i + 1, e))?;
            let label = get("label");
            finish(i + 1, raw, label)?;
        }
    }
    rows.sort_by_key(|r| r.tx.timestamp);
    Ok(rows)
}

/// Runs `rows` (sorted by event time) through `engine`. Each fraud label becomes visible
/// `delay_days` after its transaction (never, without a delay) and is applied before any
/// transaction at or after that moment is scored. `visit` sees every decision in order.
pub fn run(
    rows: &[HistoryRow],
    engine: &mut Engine,
    delay_days: Option<i64>,
    mut visit: impl FnMut(usize, &Scored<'_>),
) {
    let mut pending: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    for (i, row) in rows.iter().enumerate() {
        let now = row.tx.timestamp.millis();
        while let Some(&Reverse((visible, j))) = pending.peek() {
            if visible > now {
                break;
            }
            pending.pop();
            engine.apply_label(&rows[j].tx, true, None);
        }
        let scored = engine.score(&row.tx);
        visit(i, &scored);
        if let (Some(days), Some(true)) = (delay_days, row.label) {
            pending.push(Reverse((now + days * 86_400_000, i)));
        }
    }
}

/// The engine history runs through: the given rules file (or the built-in defaults) and the
/// label delay its label-driven features read behind. Shared by replay, training and evaluation.
pub fn engine(rules: Option<&Path>, label_delay_days: i64) -> Result<Engine, ReplayError> {
    check_delay(label_delay_days).map_err(ReplayError::Columns)?;
    let source = match rules {
        Some(p) => std::fs::read_to_string(p).map_err(|source| ReplayError::Io {
            path: p.to_owned(),
            source,
        })?,
        None => DEFAULT_RULES.to_owned(),
    };
    let rules = RuleSet::from_toml(&source).map_err(|e| ReplayError::Rules(e.to_string()))?;
    let config = EngineConfig {
        label_delay_days,
        ..EngineConfig::default()
    };
    Ok(Engine::new(config, Arc::new(rules)))
}

/// Checks a label delay: negative would show labels before their transaction (look-ahead);
/// the label counters hold 64 days, enough for 30-day windows behind at most 33 days.
pub fn check_delay(days: i64) -> Result<i64, String> {
    if (0..=33).contains(&days) {
        Ok(days)
    } else {
        Err(format!(
            "--label-delay-days must be within 0..=33, not {days}"
        ))
    }
}

/// `ringfence replay`.
pub fn main(args: &ReplayArgs) -> Result<(), ReplayError> {
    if let Some(d) = args.label_delay_days {
        check_delay(d).map_err(ReplayError::Columns)?;
    }
    let started = Instant::now();
    let hasher = CardHasher::new(b"ringfence-replay");
    let rows = load(&args.data, &args.columns, &hasher)?;
    let loaded = started.elapsed();
    let delay = args
        .label_delay_days
        .unwrap_or(EngineConfig::default().label_delay_days);
    let mut engine = engine(args.rules.as_deref(), delay)?;
    if let Some(path) = &args.model {
        let model = crate::models::load(path).map_err(ReplayError::Model)?;
        engine.set_models(ringfence_core::engine::Models {
            champion: Some(Arc::new(model)),
            challenger: None,
        });
    }
    let mut out = match &args.scores_out {
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|source| ReplayError::Io {
                path: p.clone(),
                source,
            })?;
            let mut w = BufWriter::new(f);
            writeln!(w, "transaction_id,score,model_score,decision").map_err(|source| {
                ReplayError::Io {
                    path: p.clone(),
                    source,
                }
            })?;
            Some((p.clone(), w))
        }
        None => None,
    };
    let mut by_action = [0u64; 4];
    let (mut frauds, mut caught, mut false_alarms) = (0u64, 0u64, 0u64);
    let mut write_error = None;
    let t0 = Instant::now();
    run(&rows, &mut engine, args.label_delay_days, |i, s| {
        let d = &s.decision;
        by_action[d.decision as usize] += 1;
        let flagged = d.decision > Action::Approve;
        match rows[i].label {
            Some(true) => {
                frauds += 1;
                caught += u64::from(flagged);
            }
            Some(false) => false_alarms += u64::from(flagged),
            None => {}
        }
        if let Some((_, w)) = out.as_mut() {
            let model_score = d.model_score.map_or_else(String::new, |p| p.to_string());
            if let Err(e) = writeln!(
                w,
                "{},{},{},{}",
                d.transaction_id,
                d.score,
                model_score,
                d.decision.as_str()
            ) {
                write_error.get_or_insert(e);
            }
        }
    });
    let scoring = t0.elapsed();
    if let Some((path, mut w)) = out {
        if let Some(e) = write_error.take().or_else(|| w.flush().err()) {
            return Err(ReplayError::Io { path, source: e });
        }
    }
    println!(
        "replayed {} transactions: loaded in {:.2} s, scored in {:.2} s ({:.0} tx/s)",
        rows.len(),
        loaded.as_secs_f64(),
        scoring.as_secs_f64(),
        rows.len() as f64 / scoring.as_secs_f64().max(1e-9)
    );
    println!(
        "decisions: approve {} review {} challenge {} block {}",
        by_action[0], by_action[1], by_action[2], by_action[3]
    );
    if frauds > 0 {
        println!(
            "labelled fraud: {frauds}, flagged {caught} ({:.1}%); false alarms {false_alarms}",
            100.0 * caught as f64 / frauds as f64
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    const HANDBOOK_HEADER: &str = "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO";
    const HANDBOOK_COLUMNS: &str = "transaction_id=TRANSACTION_ID,timestamp=TX_DATETIME,card_id=CUSTOMER_ID,terminal_id=TERMINAL_ID,amount=TX_AMOUNT,label=TX_FRAUD";

    #[test]
    fn reads_handbook_csv_sorted_by_time_with_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "h.csv",
            &format!("{HANDBOOK_HEADER}\n1,2018-04-01 00:10:00,7,3,57.16,600,0,0,0\n0,2018-04-01 00:00:31,0,5,123.5,31,0,1,1\n"),
        );
        let rows = load(&p, HANDBOOK_COLUMNS, &CardHasher::new(b"k")).expect("load");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].tx.transaction_id.as_str(), "0", "sorted by time");
        assert_eq!(rows[0].tx.timestamp.to_rfc3339(), "2018-04-01T00:00:31Z");
        assert_eq!(rows[0].tx.card_id.as_ref().map(|c| c.as_str()), Some("0"));
        assert_eq!(
            rows[0].tx.terminal_id.as_ref().map(|c| c.as_str()),
            Some("5")
        );
        assert_eq!(rows[0].tx.amount, 123.5);
        assert_eq!(rows[0].label, Some(true));
        assert_eq!(rows[1].label, Some(false));
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "bad.csv",
            &format!("{HANDBOOK_HEADER}\n0,2018-04-01 00:00:31,0,5,-3,31,0,0,0\n"),
        );
        let e = load(&p, HANDBOOK_COLUMNS, &CardHasher::new(b"k")).expect_err("negative");
        assert!(
            e.to_string().contains("line 2") && e.to_string().contains("amount"),
            "{e}"
        );
        let e = load(&p, "amount=NOPE", &CardHasher::new(b"k")).expect_err("column");
        assert!(e.to_string().contains("NOPE"), "{e}");
        let e = load(&p, "colour=TX_AMOUNT", &CardHasher::new(b"k")).expect_err("field");
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn reads_ndjson_with_the_same_mapping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "h.ndjson",
            "{\"id\":\"a\",\"t\":\"2024-01-01T00:00:00Z\",\"amount\":5,\"card\":\"c\",\"label\":true,\"lat\":null}\n\n",
        );
        let rows = load(
            &p,
            "transaction_id=id,timestamp=t,card_id=card",
            &CardHasher::new(b"k"),
        )
        .expect("load");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].tx.card_id.as_ref().map(|c| c.as_str()), Some("c"));
        assert_eq!(rows[0].label, Some(true));
    }

    #[test]
    fn labels_become_visible_only_after_the_delay() {
        use ringfence_core::features::Num;
        let hasher = CardHasher::new(b"k");
        let dir = tempfile::tempdir().expect("tempdir");
        // Day 0: a fraud at terminal 9. Days 3 and 8: probes at terminal 9.
        let p = write(
            dir.path(),
            "h.csv",
            &format!(
                "{HANDBOOK_HEADER}\n0,2018-04-01 10:00:00,1,9,10,0,0,1,2\n1,2018-04-04 10:00:00,2,9,10,0,3,0,0\n2,2018-04-09 10:00:00,3,9,10,0,8,0,0\n"
            ),
        );
        let rows = load(&p, HANDBOOK_COLUMNS, &hasher).expect("load");
        let config = EngineConfig {
            label_delay_days: 7,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, Arc::new(RuleSet::empty()));
        let mut rates = Vec::new();
        run(&rows, &mut engine, Some(7), |_, s| {
            rates.push(s.features.get(Num::TerminalFraudRate7d));
        });
        assert!(rates[0].is_nan());
        assert!(rates[1].is_nan(), "day 0 is inside the delay on day 3");
        assert_eq!(rates[2], 1.0, "by day 8 the day-0 label is visible");
    }
}
