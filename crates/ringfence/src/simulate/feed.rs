//! The demo feed: paced simulated traffic against a running server, with one status line per
//! second on stdout (throughput, decisions, fraud caught and missed, engine latency).

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::driver::{ctrl_c, lock, send_paced, Anchor, Pacing};
use super::generator::{Generator, GeneratorConfig};
use super::tally::{Tally, Totals};
use super::SimulateError;
use crate::client::{endpoint_url, HttpClient};

/// Requests in flight at most; far above what a demo rate needs, low enough to stay polite.
const DEMO_CONCURRENCY: usize = 64;

/// Sends paced simulated traffic to `base_url` (with `api_key` as a bearer key, when given;
/// trusting only the CA in `ca_cert` for `https://`, when given) until `duration` passes or
/// Ctrl-C, printing a status line every second and a summary at the end.
#[allow(clippy::too_many_arguments)]
pub async fn run_demo_feed(
    base_url: String,
    api_key: Option<&str>,
    ca_cert: Option<&Path>,
    seed: u64,
    tps: f64,
    fraud_rate: f64,
    duration: Option<Duration>,
) -> Result<(), SimulateError> {
    let config = GeneratorConfig {
        seed,
        tps,
        fraud_rate,
        customers: GeneratorConfig::customers_for_rate(tps),
        ..GeneratorConfig::default()
    };
    let totals = feed(
        &base_url,
        config,
        api_key,
        ca_cert,
        duration,
        ctrl_c(),
        |line| {
            // A closed stdout (piped into `head`) must not kill the feed.
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        },
    )
    .await?;
    let _ = writeln!(std::io::stdout().lock(), "{}", totals.summary());
    Ok(())
}

/// The feed with its output and its stop signal passed in; returns the run's totals.
pub(crate) async fn feed<F>(
    base_url: &str,
    mut config: GeneratorConfig,
    api_key: Option<&str>,
    ca_cert: Option<&Path>,
    duration: Option<Duration>,
    shutdown: F,
    mut print: impl FnMut(&str),
) -> Result<Totals, SimulateError>
where
    F: Future<Output = ()> + Send + 'static,
{
    super::check_rates(config.tps, config.fraud_rate)?;
    let url = endpoint_url(base_url, "/v1/transactions")?;
    let anchor = Anchor::now();
    config.start_ms = anchor.epoch_ms;
    let tally = Arc::new(Mutex::new(Tally::new()));
    let pacing = Pacing {
        url,
        concurrency: DEMO_CONCURRENCY,
        duration,
        count: None,
        acked: None,
    };
    let mut client = HttpClient::new()
        .with_optional_ca_cert(ca_cert)?
        .with_timeout(Duration::from_secs(10));
    if let Some(key) = api_key {
        client = client.with_bearer(key);
    }
    let mut sender = tokio::spawn(send_paced(
        client,
        pacing,
        Generator::new(config).with_run_tag(&anchor.run_tag()),
        anchor,
        Arc::clone(&tally),
        shutdown,
    ));
    let second = Duration::from_secs(1);
    let mut ticker = tokio::time::interval_at((anchor.instant + second).into(), second);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let elapsed = anchor.instant.elapsed().as_secs();
                let line = lock(&tally).second_line(elapsed);
                print(&line);
            }
            joined = &mut sender => {
                joined.map_err(|e| SimulateError::Task(e.to_string()))?;
                break;
            }
        }
    }
    let totals = lock(&tally).totals().clone();
    Ok(totals)
}
