//! The `bench` subcommand's HTTP load generator: a closed loop of workers posting simulated
//! transactions as fast as the server answers, with an HDR histogram of request latency.
//!
//! Closed loop (the default) means each worker waits for its answer before sending again, so
//! `concurrency` is the number of requests in flight and the measured rate is what the server
//! sustains at that depth. With `--rate R` the load is open: requests leave on a fixed schedule
//! (R transactions a second spread over the workers) and each latency counts from the moment
//! its request was *due*, not from when a busy worker got round to sending it, so a stall
//! shows in the percentiles instead of silently lowering the load (no coordinated omission).
//! `concurrency` then caps the requests in flight.
//!
//! Around the measured window the bench reads the server's `process_cpu_seconds_total` from
//! `/metrics` (a key with the `analyst` role or above can; an `ingest` key cannot, and the
//! report says so) and reports the server's CPU time per transaction.
//!
//! Requests started during the warm-up (connection set-up, cold caches) are sent but not
//! counted. The traffic is one simulated world's stream, generated before the clock starts
//! ([`crate::bench_pool`]) and dealt out to the workers in turn, without event timestamps so
//! the server stamps them with its own clock, and with run-unique transaction ids so a server
//! that deduplicates by id does real work.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::bench_pool::BodyPool;
use crate::client::{endpoint_url, ClientError, HttpClient};
use crate::simulate::{Generator, GeneratorConfig};

/// Most workers `--concurrency` accepts.
pub const MAX_CONCURRENCY: usize = 1024;
/// Most transactions per batch request `--batch` accepts.
pub const MAX_BATCH: usize = 10_000;
/// Customers in the benchmark's world: enough that the engine holds realistic state for many
/// accounts, not a few hot ones; shared by all workers.
const BENCH_CUSTOMERS: usize = 100_000;
/// Highest latency kept in the histogram (larger values are clamped), in µs: one minute.
const MAX_TRACKED_US: u64 = 60_000_000;

/// Command-line options of `ringfence bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Base URL of a running server (e.g. http://127.0.0.1:8080); without it the engine is
    /// benchmarked in-process.
    #[arg(long)]
    pub target: Option<String>,
    /// API key sent as `Authorization: Bearer` (with --target; a key with the `ingest` role).
    #[arg(long, env = "RINGFENCE_API_KEY", hide_env_values = true)]
    pub api_key: Option<crate::config::Secret>,
    /// PEM file of the certificate authority an `https://` target's certificate is checked
    /// against (a private CA); the system's trust store otherwise.
    #[arg(long, env = "RINGFENCE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Seconds of measurement after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Transactions per request: 0 posts them one by one, N posts batches of N.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// Workers, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seed of the simulated traffic (worker i plays seed + i).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Transactions to score in the engine-only benchmark.
    #[arg(long, default_value_t = 200_000)]
    pub count: usize,
    /// Transactions scored untimed before the engine-only measurement (warm entity state).
    #[arg(long, default_value_t = 1_000_000)]
    pub engine_warmup: usize,
    /// Engine mode: score with this model too, and time model inference on its own.
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// Seconds of warm-up excluded from the numbers.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Live-feed WebSockets (`/v1/stream/transactions`) kept open and read during the run, as
    /// dashboards watching the traffic would.
    #[arg(long, default_value_t = 0)]
    pub feed_sockets: usize,
    /// Offered load in transactions per second (open loop, latency from each request's due
    /// time); without it, a closed loop as fast as the server answers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Simulated transactions generated before the clock starts; requests copy theirs from
    /// this pool under run-unique ids, going round it again when a run is longer.
    #[arg(long, default_value_t = crate::bench_pool::DEFAULT_POOL)]
    pub pool: usize,
    /// Engine mode: measure the state's memory instead of speed (see `memory_bench`).
    #[arg(long)]
    pub memory: bool,
    /// With --memory: active cards (each with a user, device and IP shared by two cards).
    #[arg(long, default_value_t = 1_000_000)]
    pub cards: u64,
    /// With --memory: payments per card per day.
    #[arg(long, default_value_t = 4)]
    pub tx_per_card: u64,
    /// With --memory: simulated days of traffic from a churning population (0: one day, to
    /// measure bytes per entity).
    #[arg(long, default_value_t = 0)]
    pub days: u64,
    /// With --memory --days: share of the active cards replaced by new ones every day.
    #[arg(long, default_value_t = 0.2)]
    pub churn: f64,
    /// With --memory: idle entities are forgotten after this many days (default: the
    /// engine's own time to live).
    #[arg(long)]
    pub idle_ttl_days: Option<f64>,
    /// Kafka bootstrap servers: publish --count transactions to --topic and time their
    /// decisions on --decisions-topic (running `worker --kafka` members decide them).
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// With --kafka: the topic the workers consume.
    #[arg(long, default_value = "transactions")]
    pub topic: String,
    /// With --kafka: the topic the workers produce decisions to.
    #[arg(long, default_value = "decisions")]
    pub decisions_topic: String,
    /// With --kafka: first create --topic, --decisions-topic and `<topic>.dead-letter` with
    /// this many partitions where missing (with --count 0, only that).
    #[arg(long, value_name = "PARTITIONS")]
    pub create_topics: Option<i32>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            target: None,
            api_key: None,
            ca_cert: None,
            duration: 10.0,
            batch: 0,
            concurrency: 32,
            seed: 7,
            count: 200_000,
            engine_warmup: 1_000_000,
            model: None,
            warmup: 2.0,
            json: false,
            feed_sockets: 0,
            rate: None,
            pool: crate::bench_pool::DEFAULT_POOL,
            memory: false,
            cards: 1_000_000,
            tx_per_card: 4,
            days: 0,
            churn: 0.2,
            idle_ttl_days: None,
            kafka: None,
            topic: "transactions".into(),
            decisions_topic: "decisions".into(),
            create_topics: None,
        }
    }
}

impl BenchArgs {
    /// The measurement window.
    pub fn duration(&self) -> Duration {
        secs(self.duration)
    }

    /// The warm-up.
    pub fn warmup(&self) -> Duration {
        secs(self.warmup)
    }
}

fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s.min(1e9))
    } else {
        Duration::ZERO
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// `run_http` needs a server.
    #[error("the HTTP benchmark needs --target URL")]
    NoTarget,
    /// The options are out of range.
    #[error("{0}")]
    InvalidArgs(String),
    /// The server cannot be reached (checked once before the run) or the URL is unusable.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The feed sockets could not be opened.
    #[error(transparent)]
    Feed(#[from] crate::bench_feed::FeedError),
    /// A worker task panicked.
    #[error("a benchmark worker failed: {0}")]
    Worker(String),
}

/// Raw numbers of a run, before rates and percentiles: what the workers collect and merge.
#[derive(Debug, Clone)]
pub struct Measurements {
    /// Requests answered with a 2xx status.
    pub requests: u64,
    /// Transactions the server decided on (items without an error in batch answers).
    pub transactions: u64,
    /// The measured time.
    pub elapsed: Duration,
    /// Latency of 2xx requests in µs.
    pub latency_us: Histogram<u64>,
    /// Failures by HTTP status (`"503"`), client failure kind (`"connect"`, `"timeout"`), or
    /// `"item"` for single entries a batch answer reported as errors.
    pub errors: BTreeMap<String, u64>,
}

impl Default for Measurements {
    fn default() -> Self {
        Self::new()
    }
}

impl Measurements {
    /// Nothing measured yet.
    pub fn new() -> Measurements {
        Measurements {
            requests: 0,
            transactions: 0,
            elapsed: Duration::ZERO,
            latency_us: latency_histogram(),
            errors: BTreeMap::new(),
        }
    }

    /// Records one latency in µs, clamped into the histogram's range.
    pub fn record_latency(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us
            .saturating_record(us.clamp(1, MAX_TRACKED_US));
    }

    /// Counts one failure under `key`.
    pub fn record_error(&mut self, key: impl Into<String>, n: u64) {
        *self.errors.entry(key.into()).or_default() += n;
    }

    /// Adds another worker's counts (elapsed time is not summed: workers run side by side).
    pub fn merge(&mut self, other: &Measurements) {
        self.requests += other.requests;
        self.transactions += other.transactions;
        // Both histograms have the same bounds, so adding cannot fail; a failure would
        // only mean lost latency samples, never wrong counts.
        let _ = self.latency_us.add(&other.latency_us);
        for (key, n) in &other.errors {
            self.record_error(key.clone(), *n);
        }
    }
}

fn latency_histogram() -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's limits, so this cannot fail.
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

/// Latency percentiles in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
    /// Slowest.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl LatencySummary {
    /// Percentiles of `h`; all zero when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// The result of a benchmark run, printable as text or JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// `http` (this module) or `engine` (in-process).
    pub mode: String,
    /// The server's base URL in HTTP mode.
    pub target: Option<String>,
    /// Workers / requests in flight.
    pub concurrency: usize,
    /// Transactions per request (0: single-transaction requests).
    pub batch: usize,
    /// Warm-up excluded from the numbers, in seconds.
    pub warmup_secs: f64,
    /// Measured time in seconds.
    pub elapsed_secs: f64,
    /// Requests answered with a 2xx status.
    pub requests: u64,
    /// Transactions decided.
    pub transactions: u64,
    /// `requests / elapsed_secs`.
    pub requests_per_sec: f64,
    /// `transactions / elapsed_secs`.
    pub tx_per_sec: f64,
    /// Request latency percentiles in µs.
    pub latency_us: LatencySummary,
    /// Failures by status or kind (see [`Measurements::errors`]).
    pub errors: BTreeMap<String, u64>,
    /// The live-feed sockets open during the run (`--feed-sockets`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed: Option<crate::bench_feed::FeedReport>,
    /// The offered load in transactions per second (`--rate`); absent for a closed loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_tx_per_sec: Option<f64>,
    /// The server's CPU time over the measured window, when its `/metrics` could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu: Option<ServerCpu>,
    /// Why the server's CPU time is not in the report, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_unavailable: Option<String>,
}

/// The server's own CPU time during the measured window (`process_cpu_seconds_total` read
/// before and after it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerCpu {
    /// CPU seconds (user + system, all threads) the server used in the window.
    pub seconds: f64,
    /// Those seconds per measured transaction, in µs.
    pub us_per_tx: f64,
    /// Cores busy on average: `seconds / elapsed`.
    pub cores: f64,
}

impl BenchReport {
    /// The report of measurements `m` taken with `args` in `mode`.
    pub fn from_measurements(mode: &str, args: &BenchArgs, m: &Measurements) -> BenchReport {
        let elapsed = m.elapsed.as_secs_f64();
        let per_sec = |n: u64| {
            if elapsed > 0.0 {
                n as f64 / elapsed
            } else {
                0.0
            }
        };
        BenchReport {
            mode: mode.to_string(),
            target: args.target.clone(),
            concurrency: args.concurrency,
            batch: args.batch,
            warmup_secs: args.warmup().as_secs_f64(),
            elapsed_secs: elapsed,
            requests: m.requests,
            transactions: m.transactions,
            requests_per_sec: per_sec(m.requests),
            tx_per_sec: per_sec(m.transactions),
            latency_us: LatencySummary::from_histogram(&m.latency_us),
            errors: m.errors.clone(),
            feed: None,
            offered_tx_per_sec: args.rate,
            server_cpu: None,
            server_cpu_unavailable: None,
        }
    }

    /// A few aligned lines for a terminal or `BENCHMARKS.md`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let requests = if self.batch == 0 {
            "single-transaction requests".to_string()
        } else {
            format!("batches of {}", self.batch)
        };
        let _ = writeln!(
            out,
            "ringfence bench ({}{}): {requests}, concurrency {}, {:.1} s measured after {:.1} s warm-up",
            self.mode,
            self.target.as_deref().map(|t| format!(" {t}")).unwrap_or_default(),
            self.concurrency,
            self.elapsed_secs,
            self.warmup_secs,
        );
        if let Some(rate) = self.offered_tx_per_sec {
            let _ = writeln!(
                out,
                "  offered      {:>10}  {rate:>12.1} tx/s (open loop; latency from due time)",
                ""
            );
        }
        let _ = writeln!(
            out,
            "  transactions {:>10}  {:>12.1} tx/s",
            self.transactions, self.tx_per_sec
        );
        let _ = writeln!(
            out,
            "  requests     {:>10}  {:>12.1} req/s",
            self.requests, self.requests_per_sec
        );
        let l = &self.latency_us;
        let _ = writeln!(
            out,
            "  latency µs   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.1})",
            l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
        );
        if self.errors.is_empty() {
            out.push_str("  errors       none");
        } else {
            let parts: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let total: u64 = self.errors.values().sum();
            let _ = write!(out, "  errors       {total} ({})", parts.join(", "));
        }
        match (&self.server_cpu, &self.server_cpu_unavailable) {
            (Some(c), _) => {
                let _ = write!(
                    out,
                    "\n  server CPU   {:.2} s in the window: {:.1} µs per transaction, {:.2} cores busy",
                    c.seconds, c.us_per_tx, c.cores
                );
            }
            (None, Some(why)) => {
                let _ = write!(out, "\n  server CPU   not measured: {why}");
            }
            (None, None) => {}
        }
        if let Some(f) = &self.feed {
            let _ = write!(
                out,
                "\n  feed         {} sockets open, {} bytes read, {} ended early",
                f.sockets, f.bytes, f.ended_early
            );
        }
        out
    }
}

fn check(args: &BenchArgs) -> Result<(), BenchError> {
    let invalid = |m: String| Err(BenchError::InvalidArgs(m));
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return invalid(format!(
            "--duration must be a positive number of seconds, got {}",
            args.duration
        ));
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        return invalid(format!(
            "--warmup must be zero or more seconds, got {}",
            args.warmup
        ));
    }
    if !(1..=MAX_CONCURRENCY).contains(&args.concurrency) {
        return invalid(format!(
            "--concurrency must be between 1 and {MAX_CONCURRENCY}, got {}",
            args.concurrency
        ));
    }
    if args.feed_sockets > MAX_CONCURRENCY {
        return invalid(format!(
            "--feed-sockets must be at most {MAX_CONCURRENCY}, got {}",
            args.feed_sockets
        ));
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0 && rate <= 1e8) {
            return invalid(format!(
                "--rate must be a positive number of transactions per second, got {rate}"
            ));
        }
    }
    if !(1..=50_000_000).contains(&args.pool) {
        return invalid(format!(
            "--pool must be between 1 and 50000000 transactions, got {}",
            args.pool
        ));
    }
    if args.batch > MAX_BATCH {
        return invalid(format!(
            "--batch must be at most {MAX_BATCH}, got {}",
            args.batch
        ));
    }
    Ok(())
}

/// Runs the closed-loop HTTP benchmark against `args.target`.
pub async fn run_http(args: &BenchArgs) -> Result<BenchReport, BenchError> {
    let base = args.target.as_deref().ok_or(BenchError::NoTarget)?;
    check(args)?;
    let path = if args.batch == 0 {
        "/v1/transactions"
    } else {
        "/v1/transactions/batch"
    };
    let url = endpoint_url(base, path)?;
    let mut client = HttpClient::new().with_optional_ca_cert(args.ca_cert.as_deref())?;
    if let Some(key) = &args.api_key {
        client = client.with_bearer(key.expose());
    }
    // Fail fast, with the real reason, when nothing listens there.
    client.ping(base).await?;
    let feed = if args.feed_sockets > 0 {
        Some(crate::bench_feed::open(base, args.feed_sockets).await?)
    } else {
        None
    };

    let now_ms = epoch_ms();
    // Run-unique ids: a server that deduplicates by transaction id must not see a rerun of the
    // benchmark as replays.
    let run = format!("bench-{now_ms:x}");
    let generator = Generator::new(GeneratorConfig {
        seed: args.seed,
        start_ms: now_ms,
        customers: BENCH_CUSTOMERS,
        ..GeneratorConfig::default()
    });
    let size = args.pool;
    let pool = tokio::task::spawn_blocking(move || BodyPool::generate(generator, size, &run))
        .await
        .map_err(|e| BenchError::Worker(e.to_string()))?;
    let pool = std::sync::Arc::new(pool);

    let start = Instant::now();
    let measure_from = start + args.warmup();
    let end = measure_from + args.duration();
    let metrics_url = endpoint_url(base, "/metrics")?;
    let cpu_before = {
        let (client, url) = (client.clone(), metrics_url.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            server_cpu_seconds(&client, &url).await
        })
    };
    // Open loop: request k of lane i is due at start + (k * lanes + i) / requests-per-second.
    let request_rate = args.rate.map(|r| r / args.batch.max(1) as f64);
    let mut workers = JoinSet::new();
    for lane in 0..args.concurrency {
        let worker = Worker {
            client: client.clone(),
            url: url.clone(),
            batch: args.batch,
            pool: std::sync::Arc::clone(&pool),
            lane: lane as u64,
            lanes: args.concurrency as u64,
            schedule: request_rate.map(|r| Schedule {
                next: start + Duration::from_secs_f64(lane as f64 / r),
                every: Duration::from_secs_f64(args.concurrency as f64 / r),
            }),
            measure_from,
            end,
        };
        workers.spawn(worker.run());
    }
    let mut total = Measurements::new();
    while let Some(joined) = workers.join_next().await {
        let m = joined.map_err(|e| BenchError::Worker(e.to_string()))?;
        total.merge(&m);
    }
    total.elapsed = Instant::now().saturating_duration_since(measure_from);
    let cpu_after = server_cpu_seconds(&client, &metrics_url).await;
    let cpu_before = cpu_before
        .await
        .map_err(|e| BenchError::Worker(e.to_string()))?;
    let mut report = BenchReport::from_measurements("http", args, &total);
    match (cpu_before, cpu_after) {
        (Ok(before), Ok(after)) => {
            let seconds = (after - before).max(0.0);
            report.server_cpu = Some(ServerCpu {
                seconds,
                us_per_tx: seconds * 1e6 / total.transactions.max(1) as f64,
                cores: seconds / total.elapsed.as_secs_f64().max(1e-9),
            });
        }
        (Err(why), _) | (_, Err(why)) => report.server_cpu_unavailable = Some(why),
    }
    report.feed = feed.map(crate::bench_feed::FeedSockets::finish);
    Ok(report)
}

/// The server's `process_cpu_seconds_total`, or why it could not be read.
async fn server_cpu_seconds(client: &HttpClient, metrics_url: &str) -> Result<f64, String> {
    let response = client
        .get(metrics_url)
        .await
        .map_err(|e| format!("GET /metrics failed: {e}"))?;
    if !response.is_success() {
        return Err(format!(
            "GET /metrics answered {} (it needs a key with the analyst role or above)",
            response.status
        ));
    }
    parse_cpu_seconds(&response.text())
        .ok_or_else(|| "the server's /metrics has no process_cpu_seconds_total".to_string())
}

/// The value of `process_cpu_seconds_total` in a Prometheus text page.
fn parse_cpu_seconds(page: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An entry of a batch answer; only whether it is an error matters here.
#[derive(Deserialize)]
struct BatchEntry {
    #[serde(default)]
    error: Option<IgnoredAny>,
}

/// How late tokio's timer may wake a sleeper through no fault of the server: it fires on
/// millisecond ticks.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// Where an open-loop request's latency starts: its due time, except that a worker which slept
/// until then (it was ahead of schedule) counts from when the timer woke it, by at most
/// [`TIMER_SLACK`] later. Counting the timer's tick against the server added up to a
/// millisecond to every request. A worker behind schedule (its previous answer came late)
/// always counts from the due time, so the server's delays are never hidden (no coordinated
/// omission), and neither is a generator starved of CPU for longer than a tick.
fn latency_origin(due: Instant, woke: Instant, slept: bool) -> Instant {
    if slept {
        woke.clamp(due, due + TIMER_SLACK)
    } else {
        due
    }
}

/// One closed-loop worker.
struct Worker {
    client: HttpClient,
    url: String,
    batch: usize,
    pool: std::sync::Arc<BodyPool>,
    /// This worker's place among `lanes`: its k-th request carries the run's transactions
    /// from `(k * lanes + lane) * per_request` on.
    lane: u64,
    lanes: u64,
    /// Open loop: when this worker's requests are due.
    schedule: Option<Schedule>,
    measure_from: Instant,
    end: Instant,
}

/// A worker's fixed schedule in an open-loop run.
struct Schedule {
    /// When its next request is due.
    next: Instant,
    /// Time between its requests.
    every: Duration,
}

impl Worker {
    async fn run(mut self) -> Measurements {
        let mut m = Measurements::new();
        let per_request = self.batch.max(1) as u64;
        for k in 0u64.. {
            let first = (k * self.lanes + self.lane) * per_request;
            let (body, n) = self.pool.body(first..first + per_request, self.batch > 0);
            // Closed loop: now. Open loop: the due time, waited for if it is ahead; if it is
            // behind (the server or this worker was slow), the request leaves at once and its
            // latency still counts from when it was due.
            let sent_at = match self.schedule.as_mut() {
                Some(schedule) => {
                    let due = schedule.next;
                    schedule.next += schedule.every;
                    if due >= self.end {
                        break;
                    }
                    let slept = Instant::now() < due;
                    if slept {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    latency_origin(due, Instant::now(), slept)
                }
                None => Instant::now(),
            };
            if sent_at >= self.end {
                break;
            }
            let result = self.client.post(&self.url, "application/json", body).await;
            let latency = sent_at.elapsed();
            let counted = sent_at >= self.measure_from;
            let backoff = match result {
                Ok(response) if response.is_success() => {
                    if counted {
                        m.requests += 1;
                        m.record_latency(latency);
                        if self.batch == 0 {
                            m.transactions += n;
                        } else {
                            match response.json::<Vec<BatchEntry>>() {
                                Ok(entries) => {
                                    let failed =
                                        entries.iter().filter(|e| e.error.is_some()).count() as u64;
                                    m.transactions += entries.len() as u64 - failed;
                                    if failed > 0 {
                                        m.record_error("item", failed);
                                    }
                                }
                                Err(e) => m.record_error(e.kind(), 1),
                            }
                        }
                    }
                    None
                }
                Ok(response) => {
                    if counted {
                        m.record_error(response.status.to_string(), 1);
                    }
                    // An overloaded server asked for room: give it some, briefly.
                    let asked = response.retry_after().unwrap_or(Duration::from_millis(10));
                    Some(asked.min(Duration::from_secs(1)))
                }
                Err(e) => {
                    if counted {
                        m.record_error(e.kind(), 1);
                    }
                    // Do not spin on a refused connection.
                    Some(Duration::from_millis(10))
                }
            };
            if let Some(pause) = backoff {
                tokio::time::sleep_until((Instant::now() + pause).min(self.end).into()).await;
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::stub;
    use std::sync::atomic::Ordering;

    #[test]
    fn report_math_on_a_synthetic_histogram() {
        let mut m = Measurements::new();
        for us in 1..=1000u64 {
            m.record_latency(Duration::from_micros(us));
        }
        m.requests = 1000;
        m.transactions = 5000;
        m.elapsed = Duration::from_secs(2);
        m.record_error("503", 3);
        m.record_error("connect", 1);
        let args = BenchArgs {
            target: Some("http://127.0.0.1:8080".into()),
            batch: 5,
            concurrency: 4,
            warmup: 1.0,
            ..BenchArgs::default()
        };
        let r = BenchReport::from_measurements("http", &args, &m);
        assert_eq!(r.requests_per_sec, 500.0);
        assert_eq!(r.tx_per_sec, 2500.0);
        assert_eq!(r.elapsed_secs, 2.0);
        assert_eq!(r.warmup_secs, 1.0);
        let l = r.latency_us;
        assert!((499..=501).contains(&l.p50), "{l:?}");
        assert!((899..=901).contains(&l.p90), "{l:?}");
        assert!((989..=991).contains(&l.p99), "{l:?}");
        assert!((998..=1000).contains(&l.p99_9), "{l:?}");
        assert_eq!(l.max, 1000);
        assert!((l.mean - 500.5).abs() < 1.0, "{l:?}");

        let text = r.to_text();
        assert!(text.contains("batches of 5, concurrency 4"), "{text}");
        assert!(text.contains("2500.0 tx/s"), "{text}");
        assert!(text.contains("500.0 req/s"), "{text}");
        assert!(
            text.contains("errors       4 (503: 3, connect: 1)"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["latency_us"]["max"], 1000);
        assert!(json["latency_us"]["p99.9"].is_u64());
        assert_eq!(json["errors"]["503"], 3);
    }

    #[test]
    fn merging_adds_counts_and_latencies() {
        let mut a = Measurements::new();
        a.requests = 2;
        a.record_latency(Duration::from_micros(10));
        a.record_error("503", 1);
        let mut b = Measurements::new();
        b.requests = 3;
        b.record_latency(Duration::from_micros(30));
        b.record_error("503", 2);
        a.merge(&b);
        assert_eq!(a.requests, 5);
        assert_eq!(a.latency_us.len(), 2);
        assert_eq!(a.errors["503"], 3);
        let empty =
            BenchReport::from_measurements("http", &BenchArgs::default(), &Measurements::new());
        assert_eq!(empty.tx_per_sec, 0.0);
        assert_eq!(empty.latency_us, LatencySummary::default());
        assert!(empty.to_text().ends_with("errors       none"));
    }

    #[tokio::test]
    async fn args_are_checked() {
        assert!(matches!(
            run_http(&BenchArgs::default()).await,
            Err(BenchError::NoTarget)
        ));
        let zero = BenchArgs {
            target: Some("http://127.0.0.1:1".into()),
            concurrency: 0,
            ..BenchArgs::default()
        };
        assert!(matches!(
            run_http(&zero).await,
            Err(BenchError::InvalidArgs(_))
        ));
        // Nobody listens on port 1: the ping fails before any worker starts.
        let down = BenchArgs {
            target: Some("http://127.0.0.1:1".into()),
            ..BenchArgs::default()
        };
        assert!(matches!(run_http(&down).await, Err(BenchError::Client(_))));
    }

    #[tokio::test]
    async fn closed_loop_against_a_stub_counts_requests_and_batches() {
        let (base, seen) = stub::spawn(0).await;
        let args = BenchArgs {
            target: Some(base.clone()),
            pool: 1000,
            duration: 0.4,
            warmup: 0.1,
            concurrency: 3,
            ..BenchArgs::default()
        };
        let r = run_http(&args).await.unwrap();
        assert!(r.requests > 0);
        assert_eq!(r.transactions, r.requests);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.latency_us.max >= r.latency_us.p50);
        // Warm-up requests reached the server but are not in the report.
        assert!(seen.requests.load(Ordering::Relaxed) > r.requests);
        assert_eq!(seen.with_timestamp.load(Ordering::Relaxed), 0);

        let batched = BenchArgs { batch: 4, ..args };
        let r = run_http(&batched).await.unwrap();
        assert!(r.requests > 0);
        assert_eq!(r.transactions, r.requests * 4);
        // The stub has no /metrics: the report says why the server's CPU is missing.
        assert!(r.server_cpu.is_none());
        let why = r.server_cpu_unavailable.expect("a reason");
        assert!(why.contains("404"), "{why}");
    }

    #[tokio::test]
    async fn open_loop_sends_on_schedule() {
        let (base, _) = stub::spawn(0).await;
        // 400 tx/s in batches of 2 is 200 requests a second over 4 workers: in the 0.5 s
        // measured, 100 requests are due (each lane's due times are a fixed grid, so ±1 per
        // lane), however fast the stub answers; a closed loop would send thousands.
        let args = BenchArgs {
            target: Some(base),
            pool: 1000,
            duration: 0.5,
            warmup: 0.1,
            concurrency: 4,
            batch: 2,
            rate: Some(400.0),
            ..BenchArgs::default()
        };
        let r = run_http(&args).await.unwrap();
        assert!((96..=104).contains(&r.requests), "{r:?}");
        assert_eq!(r.transactions, r.requests * 2);
        assert_eq!(r.offered_tx_per_sec, Some(400.0));
        assert!(r.to_text().contains("offered"), "{}", r.to_text());
        let bad = BenchArgs {
            rate: Some(-1.0),
            ..args
        };
        assert!(matches!(
            run_http(&bad).await,
            Err(BenchError::InvalidArgs(m)) if m.contains("--rate")
        ));
    }

    #[test]
    fn open_loop_latency_forgives_the_timer_tick_and_nothing_else() {
        let due = Instant::now();
        let us = Duration::from_micros;
        // Slept and woke within the tick: counted from the wake-up.
        assert_eq!(latency_origin(due, due + us(300), true), due + us(300));
        // Slept and woke late: at most the tick is forgiven.
        assert_eq!(
            latency_origin(due, due + us(5_000), true),
            due + TIMER_SLACK
        );
        // Behind schedule: from the due time, however late it is sent.
        assert_eq!(latency_origin(due, due + us(5_000), false), due);
    }

    #[test]
    fn cpu_seconds_are_read_from_a_metrics_page() {
        let page = "# HELP x y\nprocess_cpu_seconds_total 12.5\nprocess_cpu_seconds_total_x 1\n";
        assert_eq!(parse_cpu_seconds(page), Some(12.5));
        assert_eq!(parse_cpu_seconds("ringfence_rules 3\n"), None);
        let m = Measurements {
            requests: 10,
            transactions: 1000,
            elapsed: Duration::from_secs(2),
            ..Measurements::new()
        };
        let mut r = BenchReport::from_measurements("http", &BenchArgs::default(), &m);
        r.server_cpu = Some(ServerCpu {
            seconds: 0.5,
            us_per_tx: 500.0,
            cores: 0.25,
        });
        assert!(
            r.to_text()
                .contains("server CPU   0.50 s in the window: 500.0 µs per transaction"),
            "{}",
            r.to_text()
        );
    }
}
