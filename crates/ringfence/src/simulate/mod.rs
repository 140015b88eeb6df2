//! Realistic, seeded synthetic traffic with ground truth: the `simulate` subcommand and the
//! demo feed.
//!
//! # Layout
//! - `world`: the cities, merchants and customers (with their cards, devices, habits) that
//!   traffic is drawn from.
//! - [`generator`]: the time-ordered stream of everyday payments and labelled fraud scenarios
//!   (velocity bursts, card testing, fraud rings, account takeover, impossible travel).
//! - `driver`: pacing that stream in real time to a server, or writing it to NDJSON.
//! - [`tally`]: counting the server's decisions against the ground truth.
//! - `feed`: the once-a-second status feed of `run_demo_feed`.
//! - [`handbook`]: `--profile handbook`, the published simulator of the *Fraud Detection
//!   Handbook* (customers, terminals, three fraud scenarios) written as the book's CSV.

mod driver;
mod feed;
pub mod generator;
pub mod handbook;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(test)]
pub(crate) mod stub;
pub mod tally;
mod world;

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringfence_core::event::Timestamp;

pub use feed::run_demo_feed;
pub use generator::{
    Generator, GeneratorConfig, LabeledTransaction, SimTransaction, DEFAULT_START_MS, SCENARIOS,
};
pub use tally::{Outcome, Tally, Totals};

use crate::client::{endpoint_url, ClientError, HttpClient};
use driver::{ctrl_c, lock, send_paced, write_ndjson, AckedLog, Anchor, Pacing};

/// What `ringfence simulate` simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SimulateProfile {
    /// Ringfence's own traffic: cities, cards, devices and five fraud scenarios, as NDJSON.
    #[default]
    Default,
    /// The Fraud Detection Handbook's dataset (5,000 customers, 10,000 terminals, 183 days) as
    /// its CSV; needs --out, ignores --tps, --fraud-rate, --duration and --concurrency.
    Handbook,
}

/// Command-line options of `ringfence simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// What to simulate: `default` (Ringfence traffic) or `handbook` (the Fraud Detection
    /// Handbook's dataset, as CSV).
    #[arg(long, value_enum, default_value_t = SimulateProfile::Default)]
    pub profile: SimulateProfile,
    /// Seed of the simulated world and traffic; the same seed gives the same stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Mean transactions per second.
    #[arg(long, default_value_t = 100.0)]
    pub tps: f64,
    /// Share of fraudulent transactions, 0 to 0.9.
    #[arg(long, default_value_t = 0.02)]
    pub fraud_rate: f64,
    /// Seconds of simulated traffic.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Stop after this many transactions.
    #[arg(long)]
    pub count: Option<u64>,
    /// Base URL of a running server (e.g. http://127.0.0.1:8080): send paced in real time.
    #[arg(long)]
    pub target: Option<String>,
    /// Write NDJSON with `label` and `scenario` fields to this file (`-` for stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Kafka bootstrap servers: publish to `--topic`, paced, keyed by card, each value the
    /// `POST /v1/transactions` JSON.
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// Topic to publish to (with --kafka).
    #[arg(long, default_value = "transactions")]
    pub topic: String,
    /// With --kafka: any librdkafka producer property, `key=value` (repeatable).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_properties: Vec<String>,
    /// With --target: append the id of every transaction whose decision was received to this
    /// file, one per line, as each arrives (for checking after a crash that each is stored).
    #[arg(long, value_name = "FILE")]
    pub acked_out: Option<PathBuf>,
    /// Most requests in flight at once (with --target).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// API key sent as `Authorization: Bearer` (with --target; a key with the `ingest` role).
    #[arg(long, env = "RINGFENCE_API_KEY", hide_env_values = true)]
    pub api_key: Option<crate::config::Secret>,
    /// PEM file of the certificate authority an `https://` target's certificate is checked
    /// against (a private CA); the system's trust store otherwise.
    #[arg(long, env = "RINGFENCE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Simulated start time for --out, RFC 3339 (--profile handbook: 2018-04-01 00:00:00
    /// unless given).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    pub start: String,
    /// Customers in the simulated world (default: enough for about five minutes between a
    /// customer's payments at --tps, at least 2000; --profile handbook: 5000).
    #[arg(long)]
    pub customers: Option<usize>,
    /// Terminals in the world (--profile handbook only; default 10000).
    #[arg(long)]
    pub terminals: Option<usize>,
    /// Simulated days (--profile handbook only; default 183).
    #[arg(long)]
    pub days: Option<u32>,
}

impl Default for SimulateArgs {
    fn default() -> Self {
        SimulateArgs {
            profile: SimulateProfile::Default,
            seed: 42,
            tps: 100.0,
            fraud_rate: 0.02,
            duration: 30.0,
            count: None,
            target: None,
            out: None,
            kafka: None,
            topic: "transactions".to_string(),
            kafka_properties: Vec::new(),
            acked_out: None,
            concurrency: 16,
            api_key: None,
            ca_cert: None,
            start: "2026-01-01T00:00:00Z".to_string(),
            customers: None,
            terminals: None,
            days: None,
        }
    }
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The options do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// The target URL is unusable.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Writing the output file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A background task panicked or was cancelled.
    #[error("simulation task failed: {0}")]
    Task(String),
}

/// Most requests in flight that `--concurrency` accepts.
const MAX_CONCURRENCY: usize = 4096;
/// Largest world `--customers` accepts (about 120 bytes each).
const MAX_CUSTOMERS: usize = 5_000_000;

/// Checks a rate and a fraud share given on the command line.
fn check_rates(tps: f64, fraud_rate: f64) -> Result<(), SimulateError> {
    if !(tps.is_finite() && tps > 0.0 && tps <= 1e6) {
        return Err(SimulateError::Usage(format!(
            "--tps must be above 0 and at most 1000000, got {tps}"
        )));
    }
    if !(0.0..=0.9).contains(&fraud_rate) {
        return Err(SimulateError::Usage(format!(
            "--fraud-rate must be between 0 and 0.9, got {fraud_rate}"
        )));
    }
    Ok(())
}

/// Where the traffic goes, once the options are checked.
enum Destination {
    /// Base URL and the full `POST /v1/transactions` URL.
    Target {
        base: String,
        url: String,
    },
    File(PathBuf),
    /// Bootstrap servers and topic.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    Kafka {
        brokers: String,
        topic: String,
    },
}

impl SimulateArgs {
    fn check(&self) -> Result<Destination, SimulateError> {
        check_rates(self.tps, self.fraud_rate)?;
        if !(self.duration.is_finite() && self.duration > 0.0) {
            return Err(SimulateError::Usage(format!(
                "--duration must be a positive number of seconds, got {}",
                self.duration
            )));
        }
        if self
            .customers
            .is_some_and(|c| !(1..=MAX_CUSTOMERS).contains(&c))
        {
            return Err(SimulateError::Usage(format!(
                "--customers must be between 1 and {MAX_CUSTOMERS}"
            )));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(SimulateError::Usage(format!(
                "--concurrency must be between 1 and {MAX_CONCURRENCY}, got {}",
                self.concurrency
            )));
        }
        if self.acked_out.is_some() && self.target.is_none() {
            return Err(SimulateError::Usage(
                "--acked-out records decisions received from a server: it needs --target URL"
                    .to_string(),
            ));
        }
        match (&self.target, &self.out, &self.kafka) {
            (Some(target), None, None) => Ok(Destination::Target {
                base: target.clone(),
                url: endpoint_url(target, "/v1/transactions")?,
            }),
            (None, Some(path), None) => Ok(Destination::File(path.clone())),
            (None, None, Some(brokers)) if !brokers.trim().is_empty() => Ok(Destination::Kafka {
                brokers: brokers.trim().to_string(),
                topic: self.topic.clone(),
            }),
            (None, None, Some(_)) => Err(SimulateError::Usage(
                "--kafka: give the bootstrap servers, e.g. localhost:9092".to_string(),
            )),
            (None, None, None) => Err(SimulateError::Usage(
                "say where the traffic goes: --target URL (send to a server), --out FILE (write NDJSON) or --kafka BROKERS (publish to --topic)"
                    .to_string(),
            )),
            _ => Err(SimulateError::Usage(
                "give one of --target URL (send to a server), --out FILE (write NDJSON) or --kafka BROKERS, not both"
                    .to_string(),
            )),
        }
    }

    fn generator_config(&self, start_ms: i64) -> GeneratorConfig {
        GeneratorConfig {
            seed: self.seed,
            fraud_rate: self.fraud_rate,
            tps: self.tps,
            start_ms,
            customers: self
                .customers
                .unwrap_or_else(|| GeneratorConfig::customers_for_rate(self.tps)),
            ..GeneratorConfig::default()
        }
    }
}

/// Runs `ringfence simulate`: writes NDJSON (`--out`) or sends paced traffic (`--target`) and
/// prints a summary.
pub async fn run(args: SimulateArgs) -> Result<(), SimulateError> {
    if args.profile == SimulateProfile::Handbook {
        let summary = tokio::task::spawn_blocking(move || handbook::run(&args))
            .await
            .map_err(|e| SimulateError::Task(e.to_string()))??;
        eprintln!("{summary}");
        return Ok(());
    }
    if args.terminals.is_some() || args.days.is_some() {
        return Err(SimulateError::Usage(
            "--terminals and --days apply only to --profile handbook".to_string(),
        ));
    }
    match args.check()? {
        Destination::File(path) => {
            let written = tokio::task::spawn_blocking(move || write_file(&args, &path))
                .await
                .map_err(|e| SimulateError::Task(e.to_string()))??;
            eprintln!("{written}");
            Ok(())
        }
        Destination::Target { base, url } => {
            // Fail fast, with the real reason, when nothing listens there.
            let client = HttpClient::new().with_optional_ca_cert(args.ca_cert.as_deref())?;
            client
                .clone()
                .with_timeout(Duration::from_secs(10))
                .ping(&base)
                .await?;
            eprintln!(
                "sending ~{} tx/s to {url} for {} s (Ctrl-C stops early)",
                args.tps, args.duration
            );
            let totals = send_to_target(&args, client, url, ctrl_c()).await?;
            println!("{}", totals.summary());
            Ok(())
        }
        #[cfg(feature = "kafka")]
        Destination::Kafka { brokers, topic } => {
            eprintln!(
                "publishing ~{} tx/s to Kafka topic {topic} at {brokers} for {} s (Ctrl-C stops early)",
                args.tps, args.duration
            );
            let published = kafka::publish(&args, &brokers, &topic, ctrl_c()).await?;
            println!("{}", published.summary(&topic));
            if published.failed > 0 {
                return Err(SimulateError::Usage(format!(
                    "{} messages were not delivered",
                    published.failed
                )));
            }
            Ok(())
        }
        #[cfg(not(feature = "kafka"))]
        Destination::Kafka { .. } => Err(SimulateError::Usage(
            "this ringfence was built without Kafka support (cargo feature `kafka`, on by default)"
                .to_string(),
        )),
    }
}

/// File mode: no pacing, `tps * duration` transactions unless `--count`. Returns a one-line
/// report.
fn write_file(args: &SimulateArgs, path: &std::path::Path) -> Result<String, SimulateError> {
    let start = Timestamp::parse(&args.start)
        .map_err(|problem| SimulateError::Usage(format!("--start: {problem}")))?;
    let count = args
        .count
        .unwrap_or_else(|| (args.tps * args.duration).round() as u64);
    let generator = Generator::new(args.generator_config(start.millis()));
    let name = path.display().to_string();
    let io_error = |source| SimulateError::Io {
        path: name.clone(),
        source,
    };
    let written = if name == "-" {
        let mut out = BufWriter::new(io::stdout().lock());
        write_ndjson(&mut out, generator, count).map_err(io_error)?
    } else {
        let file = File::create(path).map_err(io_error)?;
        let mut out = BufWriter::new(file);
        write_ndjson(&mut out, generator, count).map_err(io_error)?
    };
    Ok(format!(
        "wrote {} transactions ({} fraudulent) to {name}",
        written.transactions, written.fraud
    ))
}

/// Target mode: paced sending with `client` (its trust already set) until the duration, the
/// count or `shutdown`.
async fn send_to_target(
    args: &SimulateArgs,
    client: HttpClient,
    url: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Totals, SimulateError> {
    let anchor = Anchor::now();
    let tally = Arc::new(Mutex::new(Tally::new()));
    let acked = match &args.acked_out {
        Some(path) => Some(AckedLog::open(path).map_err(|source| SimulateError::Io {
            path: path.display().to_string(),
            source,
        })?),
        None => None,
    };
    let pacing = Pacing {
        url,
        concurrency: args.concurrency,
        duration: Some(Duration::from_secs_f64(args.duration)),
        count: args.count,
        acked,
    };
    let mut client = client.with_timeout(Duration::from_secs(10));
    if let Some(key) = &args.api_key {
        client = client.with_bearer(key.expose());
    }
    send_paced(
        client,
        pacing,
        Generator::new(args.generator_config(anchor.epoch_ms)).with_run_tag(&anchor.run_tag()),
        anchor,
        Arc::clone(&tally),
        shutdown,
    )
    .await;
    let totals = lock(&tally).totals().clone();
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringfence_core::event::{CardHasher, ParseContext, RawTransaction, Transaction};
    use std::io::BufRead;
    use std::sync::atomic::Ordering;

    fn usage_error(args: SimulateArgs) -> String {
        match args.check() {
            Err(SimulateError::Usage(m)) => m,
            Err(e) => panic!("not a usage error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn exactly_one_destination() {
        assert!(usage_error(SimulateArgs::default()).contains("--target URL"));
        let both = SimulateArgs {
            target: Some("http://127.0.0.1:1".into()),
            out: Some("x.ndjson".into()),
            ..SimulateArgs::default()
        };
        assert!(usage_error(both).contains("not both"));
        let kafka_and_file = SimulateArgs {
            kafka: Some("127.0.0.1:9092".into()),
            out: Some("x.ndjson".into()),
            ..SimulateArgs::default()
        };
        assert!(usage_error(kafka_and_file).contains("not both"));
        let blank_kafka = SimulateArgs {
            kafka: Some(" ".into()),
            ..SimulateArgs::default()
        };
        assert!(usage_error(blank_kafka).contains("bootstrap servers"));
        let bad_rate = SimulateArgs {
            out: Some("x.ndjson".into()),
            fraud_rate: 1.5,
            ..SimulateArgs::default()
        };
        assert!(usage_error(bad_rate).contains("--fraud-rate"));
        let bad_url = SimulateArgs {
            target: Some("localhost:8080".into()),
            ..SimulateArgs::default()
        };
        assert!(matches!(bad_url.check(), Err(SimulateError::Client(_))));
    }

    #[test]
    fn file_mode_writes_labelled_ndjson_that_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traffic.ndjson");
        let args = SimulateArgs {
            out: Some(path.clone()),
            tps: 50.0,
            duration: 20.0,
            fraud_rate: 0.1,
            start: "2025-06-01T12:00:00Z".into(),
            ..SimulateArgs::default()
        };
        let report = write_file(&args, &path).unwrap();
        assert!(report.starts_with("wrote 1000 transactions"), "{report}");

        let hasher = CardHasher::new(b"k");
        let cx = ParseContext {
            card_hasher: &hasher,
            now: Timestamp::from_millis(0),
            latest: Timestamp::MAX,
            generated_id: &|| "unused".to_string(),
        };
        let file = std::io::BufReader::new(File::open(&path).unwrap());
        let mut lines = 0;
        let mut fraud = 0;
        for line in file.lines() {
            let line = line.unwrap();
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            let label = value["label"].as_bool().unwrap();
            assert_eq!(label, value["scenario"].is_string());
            fraud += usize::from(label);
            let raw: RawTransaction = serde_json::from_str(&line).unwrap();
            let tx = Transaction::parse(raw, &cx).unwrap();
            if lines == 0 {
                assert_eq!(tx.timestamp.to_rfc3339(), "2025-06-01T12:00:00Z");
            }
            lines += 1;
        }
        assert_eq!(lines, 1000);
        assert!(fraud > 0);

        let capped = SimulateArgs {
            count: Some(7),
            ..args
        };
        assert!(write_file(&capped, &path).unwrap().starts_with("wrote 7 "));
    }

    #[tokio::test]
    async fn target_mode_sends_paced_traffic_and_counts_against_truth() {
        let (base, seen) = stub::spawn(10).await;
        let args = SimulateArgs {
            target: Some(base),
            tps: 400.0,
            duration: 5.0,
            count: Some(120),
            fraud_rate: 0.2,
            concurrency: 4,
            ..SimulateArgs::default()
        };
        let Ok(Destination::Target { url, .. }) = args.check() else {
            panic!("target expected");
        };
        let totals = send_to_target(&args, HttpClient::new(), url, std::future::pending())
            .await
            .unwrap();
        assert_eq!(totals.sent, 120);
        assert_eq!(seen.requests.load(Ordering::Relaxed), 120);
        assert_eq!(totals.errors.get("503"), Some(&12));
        assert_eq!(totals.accepted, 108);
        assert_eq!(
            totals.fraud_caught + totals.fraud_missed + totals.false_alarms + totals.legit_approved,
            108
        );
        assert!(totals.fraud_caught + totals.fraud_missed > 0);
        assert_eq!(seen.with_timestamp.load(Ordering::Relaxed), 108);
    }

    #[tokio::test]
    async fn acked_out_lists_exactly_the_decided_ids() {
        // The stub refuses every 5th request with 503: those ids must not be listed.
        let (base, seen) = stub::spawn(5).await;
        let dir = tempfile::tempdir().unwrap();
        let acked = dir.path().join("acked.txt");
        std::fs::write(&acked, "earlier-run-1\n").unwrap();
        let args = SimulateArgs {
            target: Some(base),
            tps: 500.0,
            duration: 5.0,
            count: Some(50),
            concurrency: 4,
            acked_out: Some(acked.clone()),
            ..SimulateArgs::default()
        };
        let Ok(Destination::Target { url, .. }) = args.check() else {
            panic!("target expected");
        };
        let totals = send_to_target(&args, HttpClient::new(), url, std::future::pending())
            .await
            .unwrap();
        assert_eq!(totals.accepted, 40);
        let text = std::fs::read_to_string(&acked).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Appended after what was there, one line per decision received, no repeats.
        assert_eq!(lines[0], "earlier-run-1");
        let ids: std::collections::HashSet<&str> = lines[1..].iter().copied().collect();
        assert_eq!(ids.len(), 40);
        assert_eq!(lines.len(), 41);
        let accepted = seen.accepted_ids.lock().unwrap().clone();
        assert_eq!(
            ids,
            accepted.iter().map(String::as_str).collect(),
            "the listed ids are exactly those the server answered with a decision"
        );
        let no_target = SimulateArgs {
            out: Some(dir.path().join("x.ndjson")),
            acked_out: Some(acked),
            ..SimulateArgs::default()
        };
        assert!(usage_error(no_target).contains("--acked-out"));
    }

    #[tokio::test]
    async fn demo_feed_prints_a_line_per_second_and_stops() {
        let (base, _seen) = stub::spawn(0).await;
        let config = GeneratorConfig {
            tps: 200.0,
            fraud_rate: 0.1,
            ..GeneratorConfig::default()
        };
        let mut lines = Vec::new();
        let totals = feed::feed(
            &base,
            config,
            None,
            None,
            Some(Duration::from_millis(2_300)),
            std::future::pending(),
            |line| lines.push(line.to_string()),
        )
        .await
        .unwrap();
        assert!(lines.len() >= 2, "{lines:?}");
        assert!(lines[0].starts_with("[   1s] "), "{}", lines[0]);
        assert!(lines[0].contains(" tx/s | approve "), "{}", lines[0]);
        assert!(lines[0].contains("engine p50 5µs p99 5µs"), "{}", lines[0]);
        assert!(totals.sent > 100);
        assert_eq!(totals.accepted, totals.sent);
    }

    #[tokio::test]
    async fn target_mode_fails_fast_when_nothing_listens() {
        let args = SimulateArgs {
            target: Some("http://127.0.0.1:1".into()),
            ..SimulateArgs::default()
        };
        match run(args).await {
            Err(SimulateError::Client(e)) => assert_eq!(e.kind(), "connect"),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn demo_feed_stops_on_shutdown() {
        let (base, _seen) = stub::spawn(0).await;
        let shutdown = tokio::time::sleep(Duration::from_millis(300));
        let totals = feed::feed(
            &base,
            GeneratorConfig::default(),
            None,
            None,
            None,
            shutdown,
            |_| {},
        )
        .await
        .unwrap();
        assert!(totals.sent > 0);
    }
}
