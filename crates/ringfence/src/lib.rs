//! Ringfence's binary as a library, so tests start the real server in-process.
//!
//! # Layout
//! - [`config`]: flags, environment and config file, resolved into [`config::Settings`].
//! - [`startup`]: [`startup::Application`]: build (bind, rebuild state), run, shut down.
//! - [`host`]: [`host::EngineHost`]: the engine, the order of decisions and durable writes.
//! - [`http`]: the API, one module per resource.
//! - [`alerts`]: alerts out of the engine: Redis keys and channels, signed webhooks (Slack
//!   too) with retries and dead letters, e-mail digests over SMTP.
//! - [`auth`]: who is calling: roles, sign-in, API keys.
//! - [`cases`]: analysts' cases on alerts (assign, close with a verdict, reopen) and the
//!   audit trail of what people did, hash-chained ([`cases::chain`]); [`audit`]: `ringfence
//!   audit verify`.
//! - [`investigate`]: search, entity risk profiles and the link graph, from stored records.
//! - [`live`]: the dashboard's live feed and per-second statistics of what this node stores.
//! - [`shared`]: several nodes as one: the shared log in Redis and each node's replica.
//! - [`sites`]: active-active sites: records replicated between stores' nodes, both ways.
//! - [`store`]: records (transactions, decisions, alerts, labels); [`store::sqlite`] embedded.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`metrics_eval`]: AUC ROC, average precision, card precision@k.
//! - [`train`]: gradient-boosted model training on replayed features; [`eval`]: the
//!   handbook's prequential protocol.
//! - [`models`]: model files (own format or XGBoost JSON) for serving and replay.
//! - [`export`]: stored records in a time range out as NDJSON or CSV, for warehouse loads.
//! - [`replay`]: history files through the engine in event-time order, labels after a delay.
//! - [`backtest`]: candidate rules tried over the last hours of stored history, replayed
//!   from the start so their features are those the engine computed then.
//! - [`simulate`]: synthetic traffic with ground truth, the simulator CLI and the demo feed.
//! - [`client`]: a small HTTP client (simulator, benchmarks, tests).
//! - [`tls`]: rustls (ring) for the HTTPS listener and for clients' trust (system or a
//!   private CA).
//! - [`bench`]: the HTTP load generator; [`engine_bench`]: the engine-only benchmark;
//!   [`memory_bench`]: bytes of entity state per entity, and its growth over a simulated week;
//!   [`bench_feed`]: live-feed sockets held open during a benchmark.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod backtest;
pub mod bench;
pub mod bench_feed;
pub mod bench_pool;
pub mod cases;
pub mod client;
pub mod config;
pub mod demo;
pub mod engine_bench;
pub mod eval;
pub mod export;
pub mod host;
pub mod http;
pub mod ingest;
pub mod investigate;
#[cfg(feature = "kafka")]
pub mod kafka_bench;
pub mod live;
pub mod memory_bench;
pub mod metrics;
pub mod metrics_eval;
pub mod models;
pub mod photo;
pub mod process;
pub mod replay;
pub mod shared;
pub mod simulate;
pub mod sites;
pub mod startup;
pub mod store;
pub mod tls;
pub mod train;
