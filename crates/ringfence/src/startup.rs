//! One way to start the server, used by `main` and by the tests: [`Application::build`] binds
//! the listener (port 0 in tests), rebuilds state, and [`Application::run_until`] serves until
//! a shutdown signal, then drains in-flight requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::alerts::deliveries::{AlertSinks, SinkError};
use crate::auth::{Auth, AuthError, OneTimeLogin};
use crate::config::Settings;
use crate::host::{EngineHost, SharedState, StartError};
use crate::http;
use crate::ingest::kafka::KafkaConfig;
use crate::ingest::redis_stream::{self as stream_worker, StreamConfig};
use crate::ingest::WorkerError;
use crate::metrics::Metrics;
use crate::shared::log::SharedLog;
use crate::store::postgres::PostgresStore;
use crate::store::shipper::Shipper;
use crate::store::sqlite::SqliteStore;
use crate::store::Records;

/// How often the rules file is checked for changes.
const RULES_POLL: Duration = Duration::from_millis(500);

/// A built, bound, not yet serving application.
pub struct Application {
    listener: TcpListener,
    host: Arc<EngineHost>,
    /// Access control (users, keys, sessions), shared by every request.
    auth: Arc<Auth>,
    /// The first administrator's login, when this start created it.
    first_login: Option<OneTimeLogin>,
    /// The alert sinks' tasks (Redis, webhooks, e-mail).
    alert_writers: Vec<tokio::task::JoinHandle<()>>,
    /// The stream consumer, for `ringfence worker`.
    worker: Option<Worker>,
    /// Production mode: the task shipping the local buffer to PostgreSQL.
    shipper: Option<(Shipper, tokio::task::JoinHandle<()>)>,
    /// HTTPS: the certificate and key loaded at build (plain HTTP when `None`).
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// What a `ringfence worker` consumes.
enum Worker {
    /// A Redis stream, as a member of its consumer group.
    Redis(redis::Client, StreamConfig),
    /// A Kafka topic, as a member of its consumer group.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    Kafka(KafkaConfig),
}

impl Worker {
    async fn run(
        self,
        host: Arc<EngineHost>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), WorkerError> {
        match self {
            Worker::Redis(client, config) => stream_worker::run(host, client, config, stop).await,
            #[cfg(feature = "kafka")]
            Worker::Kafka(config) => crate::ingest::kafka::run(host, config, stop).await,
            #[cfg(not(feature = "kafka"))]
            Worker::Kafka(_) => Err(WorkerError::Kafka(KAFKA_MISSING.into())),
        }
    }
}

/// Why `--kafka` fails in a build without the `kafka` feature.
#[cfg(not(feature = "kafka"))]
const KAFKA_MISSING: &str =
    "this ringfence was built without Kafka support (cargo feature `kafka`, on by default)";

/// How long shutdown tries to ship what is buffered (the rest ships at the next start).
const SHIP_DRAIN: Duration = Duration::from_secs(10);

/// How long shutdown waits for queued alerts to reach their sinks.
const ALERT_DRAIN: Duration = Duration::from_secs(5);

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Engine or store start failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Access control could not start.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The Redis URL is unusable (the message never repeats it).
    #[error("{0}")]
    Redis(String),
    /// An alert sink could not start.
    #[error("alert sinks: {0}")]
    Sinks(#[from] SinkError),
    /// The stream worker stopped on an error it cannot retry.
    #[error("stream worker: {0}")]
    Worker(String),
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
    /// The HTTPS certificate or key is unusable.
    #[error("https: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl Application {
    /// Opens the store, rebuilds state and binds the listener.
    pub async fn build(settings: Settings) -> Result<Application, AppError> {
        let addr = settings.listen;
        // Certificate problems show before anything binds or opens.
        let tls = match &settings.tls {
            Some(files) => Some(crate::tls::server_config(&files.cert, &files.key)?),
            None => None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind { addr, source })?;
        let metrics = Arc::new(Metrics::default());
        let local = SqliteStore::open(&settings.data).map_err(|e| AppError::Start(e.into()))?;
        let (store, shipper) = match &settings.postgres {
            Some(url) => {
                let shared =
                    PostgresStore::connect_with(url.expose(), settings.postgres_ca_cert.as_deref())
                        .await
                        .map_err(|e| AppError::Start(StartError::Store(e.into())))?;
                // What this node buffered last time and did not ship goes first, so the
                // state rebuilt from PostgreSQL includes it.
                let shipper = Shipper::new(local.clone(), shared.clone(), &settings.data);
                let shipped = shipper
                    .drain()
                    .await
                    .map_err(|e| AppError::Start(StartError::Store(e)))?;
                if shipped > 0 {
                    tracing::info!(
                        records = shipped,
                        "shipped the buffer left from the last run"
                    );
                }
                (Records::Postgres { local, shared }, Some(shipper))
            }
            None => (Records::Sqlite(local), None),
        };
        let shared = match &settings.redis {
            Some(url) => {
                let client = crate::alerts::redis::client(url, settings.redis_ca_cert.as_deref())
                    .map_err(|e| AppError::Redis(e.to_string()))?;
                Some(SharedState {
                    log: SharedLog::new(client, settings.redis_log_key.clone()),
                    node: node_id(),
                    budget: settings.redis_timeout,
                    fail_closed: settings.redis_fail_closed,
                    snapshot_every: settings.snapshot_every,
                })
            }
            None => None,
        };
        let (auth, first_login) = Auth::start(&settings, &store).await?;
        // Every sink reads this node's local outbox, from its own position.
        let (sinks, alert_writers) = AlertSinks::start(&settings, &store, &metrics)?;
        let host = EngineHost::start(settings, store, metrics, sinks, shared).await?;
        let shipper_task = shipper.clone().map(|s| tokio::spawn(s.run()));
        Ok(Application {
            listener,
            host,
            auth,
            first_login,
            alert_writers,
            worker: None,
            shipper: shipper.zip(shipper_task),
            tls,
        })
    }

    /// Also consumes a Redis stream as a member of its consumer group (`ringfence worker`);
    /// needs `--redis`.
    pub fn with_stream_worker(mut self, config: StreamConfig) -> Result<Application, AppError> {
        let url = self.host.settings().redis.clone().ok_or_else(|| {
            AppError::Redis("a worker needs --redis (the stream's server)".into())
        })?;
        let ca_cert = self.host.settings().redis_ca_cert.clone();
        let client = crate::alerts::redis::client(&url, ca_cert.as_deref())
            .map_err(|e| AppError::Redis(e.to_string()))?;
        self.worker = Some(Worker::Redis(client, config));
        Ok(self)
    }

    /// Also consumes a Kafka topic as a member of its consumer group (`ringfence worker
    /// --kafka`), producing decisions to the decisions topic in Kafka transactions.
    pub fn with_kafka_worker(self, config: KafkaConfig) -> Result<Application, AppError> {
        #[cfg(not(feature = "kafka"))]
        {
            let _ = config;
            Err(AppError::Worker(KAFKA_MISSING.into()))
        }
        #[cfg(feature = "kafka")]
        {
            let mut app = self;
            app.worker = Some(Worker::Kafka(config));
            Ok(app)
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The address clients use: `https://<addr>` when serving TLS, `http://<addr>` otherwise.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr())
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The engine host (for in-process inspection).
    pub fn host(&self) -> &Arc<EngineHost> {
        &self.host
    }

    /// Access control (the demo creates its own keys through it).
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// The first administrator's login, when this start created that user: show it once
    /// (to the terminal, never to the log), then it is gone.
    pub fn take_first_login(&mut self) -> Option<OneTimeLogin> {
        self.first_login.take()
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let watcher_host = Arc::clone(&self.host);
        let watcher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RULES_POLL);
            loop {
                tick.tick().await;
                watcher_host.reload_rules_if_changed().await;
                watcher_host.reload_models_if_changed().await;
            }
        });
        // The stream worker, if any, runs beside the HTTP server; if it fails (storage), the
        // whole node stops with its error.
        let (stop_worker, stop_rx) = tokio::sync::watch::channel(false);
        let (worker_failed, on_worker_failed) = tokio::sync::oneshot::channel::<String>();
        let worker = self.worker.take().map(|worker| {
            let host = Arc::clone(&self.host);
            tokio::spawn(async move {
                if let Err(e) = worker.run(host, stop_rx).await {
                    tracing::error!(error = %e, "stream worker stopped");
                    let _ = worker_failed.send(e.to_string());
                }
            })
        });
        let worker_error = Arc::new(std::sync::Mutex::new(None::<String>));
        let recorded = Arc::clone(&worker_error);
        let site = self.host.site().cloned();
        let live = Arc::clone(self.host.live());
        let ticker = tokio::spawn(Arc::clone(&live).run());
        let shutdown = async move {
            tokio::select! {
                _ = shutdown => {}
                Ok(e) = on_worker_failed => {
                    *recorded.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
            // Peers' held feed requests would keep the graceful shutdown waiting.
            if let Some(site) = site {
                site.close();
            }
            // So are open WebSocket streams, which never end by themselves.
            live.close();
        };
        let follower = tokio::spawn(Arc::clone(&self.host).follow_shared_log());
        // Brings the node back after a full disk or a failed write, without a restart.
        let storage_watch = tokio::spawn(Arc::clone(&self.host).watch_storage());
        // Sites: one task pulling each peer's records.
        let links: Vec<_> = self
            .host
            .site()
            .map(|site| {
                site.peers
                    .iter()
                    .map(|peer| {
                        tokio::spawn(crate::sites::follow(
                            Arc::clone(&self.host),
                            Arc::clone(peer),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let router = http::router(Arc::clone(&self.host), Arc::clone(&self.auth));
        // The peer address feeds the sign-in throttle (per user and address).
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let mut result = match self.tls.take() {
            None => axum::serve(self.listener, service)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(AppError::Serve),
            Some(config) => match crate::tls::TlsListener::new(self.listener, config) {
                // `tap_io` only so axum hands the peer address to handlers (`ConnectInfo`),
                // which it does for its own TCP listener and for tapped ones.
                Ok(listener) => axum::serve(listener.tap_io(|_| {}), service)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(AppError::Serve),
                Err(e) => Err(AppError::Serve(e)),
            },
        };
        watcher.abort();
        follower.abort();
        storage_watch.abort();
        ticker.abort();
        for link in links {
            link.abort();
        }
        let _ = stop_worker.send(true);
        if let Some(w) = worker {
            let _ = w.await;
        }
        if let Some(e) = worker_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            result = Err(AppError::Worker(e));
        }
        // In-flight requests are done: make every acknowledged write durable and close the
        // database cleanly before returning.
        if let Some((shipper, task)) = self.shipper.take() {
            task.abort();
            match tokio::time::timeout(SHIP_DRAIN, shipper.drain()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "postgres unreachable at shutdown: the buffer ships at the next start")
                }
                Err(_) => tracing::warn!("shipping to postgres timed out at shutdown: the buffer ships at the next start"),
            }
        }
        self.host.store().writer().close().await;
        // Alerts in the outbox not yet delivered get a few seconds to leave (together: the
        // sinks drain side by side); what stays goes at the next start.
        self.host.close_alerts();
        let writers = wait_all(self.alert_writers);
        if tokio::time::timeout(ALERT_DRAIN, writers).await.is_err() {
            tracing::warn!("a sink is unreachable at shutdown: its undelivered alerts stay in the outbox for the next start");
        }
        result
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> Result<(), AppError> {
        self.run_until(shutdown_signal()).await
    }
}

/// Waits for every task in turn (the caller bounds the total time).
async fn wait_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// A random, non-zero id for this process in the shared log.
fn node_id() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b).max(1)
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
