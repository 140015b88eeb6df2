//! `ringfence demo`: the engine on its embedded default with live simulated traffic, in one
//! command, printing a line a second and where to look. `--stores` runs two store sites with
//! simulated tills instead ([`stores`]).

mod stores;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ServeArgs, Settings};
use crate::host::DEFAULT_RULES;
use crate::startup::{shutdown_signal, AppError, Application};

/// Flags of `ringfence demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Address to serve on (another free port is used if this one is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Data directory (default: a fresh directory under the system temp dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Simulated transactions per second (default 200; with `--stores`, till actions per
    /// second, default 5: each photo check takes tens of milliseconds of CPU).
    #[arg(long)]
    pub tps: Option<f64>,
    /// Share of fraudulent transactions in the simulated traffic.
    #[arg(long, default_value_t = 0.03)]
    pub fraud_rate: f64,
    /// Seed of the simulated world.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Two store sites replicating with each other, with simulated tills (purchases and
    /// returns with photos, and return-fraud attempts), instead of card traffic.
    #[arg(long)]
    pub stores: bool,
    /// The password of the first administrator (`admin`), when this start creates it (a
    /// fresh data directory); a random one is made and printed otherwise.
    #[arg(long, env = "RINGFENCE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<crate::config::Secret>,
    /// Serve the demo over HTTPS with this certificate chain (PEM); needs `--tls-key`. Not
    /// with `--stores`.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) the demo's traffic trusts for its own HTTPS server (default: the
    /// certificates of `--tls-cert`, enough for a self-signed one).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The server failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// Settings were invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data directory could not be prepared.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The traffic feed failed.
    #[error("traffic: {0}")]
    Feed(String),
    /// The demo's own API key could not be created.
    #[error("access: {0}")]
    Access(String),
}

/// How to sign in to the dashboard: the one-time login when this start created the first
/// administrator, otherwise a reminder that the data directory already has users.
fn sign_in_line(login: Option<crate::auth::OneTimeLogin>) -> String {
    match login {
        Some(l) if l.generated => format!(
            "sign in as `{}` with the one-time password `{}` (shown only now)",
            l.user,
            l.password.expose()
        ),
        Some(l) => format!("sign in as `{}` with RINGFENCE_ADMIN_PASSWORD", l.user),
        None => {
            "sign in with an account of this data directory (its users were created before)".into()
        }
    }
}

/// Creates an API key named `name` with `role` for the demo's own clients.
async fn demo_key(
    app: &Application,
    name: &str,
    role: crate::auth::Role,
) -> Result<String, DemoError> {
    let (_, key) = app
        .auth()
        .create_key(name, role, "demo")
        .await
        .map_err(|e| DemoError::Access(e.to_string()))?;
    Ok(key.expose().to_owned())
}

/// Runs the demo until Ctrl-C or `--duration`.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let data = match &args.data {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("ringfence-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data)?;
    let rules = data.join("rules.toml");
    if !rules.exists() {
        std::fs::write(&rules, DEFAULT_RULES)?;
    }
    if args.stores {
        if args.tls_cert.is_some() || args.tls_key.is_some() {
            return Err(DemoError::Feed(
                "--tls-cert applies to the card demo, not to --stores".into(),
            ));
        }
        return stores::run(args, &data, &rules).await;
    }
    let tps = args.tps.unwrap_or(200.0);
    let mut serve = ServeArgs {
        listen: Some(args.listen),
        data: Some(data.clone()),
        rules: Some(rules.clone()),
        admin_password: args.admin_password.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        ..ServeArgs::default()
    };
    let mut app = match Application::build(Settings::resolve(&serve)?).await {
        Ok(app) => app,
        Err(AppError::Bind { addr, .. }) => {
            println!("{addr} is taken; using a free port instead");
            serve.listen = Some(SocketAddr::new(args.listen.ip(), 0));
            Application::build(Settings::resolve(&serve)?).await?
        }
        Err(e) => return Err(e.into()),
    };
    let base = app.base_url();
    let login = sign_in_line(app.take_first_login());
    // The traffic generator is a client like any other: an ingest key of its own.
    let key = demo_key(&app, "demo traffic", crate::auth::Role::Ingest).await?;
    println!(
        "Ringfence demo: engine on its embedded default (SQLite + memory), live simulated traffic"
    );
    println!("  dashboard   {base}/   {login}");
    println!("  live stats  {base}/v1/stats");
    println!("  alerts      {base}/v1/alerts");
    println!(
        "  rules       {base}/v1/rules   (edit {} : hot-reloaded)",
        rules.display()
    );
    println!("  metrics     {base}/metrics");
    println!("  try         curl -s {base}/transaction -H 'Authorization: Bearer {key}' -d '{{\"user_id\":\"user-ring-1\",\"card_id\":\"card-ring-1\",\"device_id\":\"device-shared-123\",\"amount\":150.00,\"merchant\":\"Online Store\"}}'");
    println!("  data dir    {}", data.display());
    println!(
        "Traffic: {} tx/s, {:.0}% fraud (seed {}). One line a second; Ctrl-C to stop.",
        tps,
        args.fraud_rate * 100.0,
        args.seed
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stop_rx.await;
    }));
    let duration = args.duration.map(Duration::from_secs);
    let trust = args.ca_cert.as_ref().or(args.tls_cert.as_ref());
    let feed = crate::simulate::run_demo_feed(
        base,
        Some(&key),
        trust.map(PathBuf::as_path),
        args.seed,
        tps,
        args.fraud_rate,
        duration,
    );
    let result = tokio::select! {
        r = feed => r.map_err(|e| DemoError::Feed(e.to_string())),
        _ = shutdown_signal() => Ok(()),
    };
    let _ = stop_tx.send(());
    if let Ok(Err(e)) = server.await {
        return Err(e.into());
    }
    result
}
