//! The `ringfence` command: `serve`, `demo`, `simulate`, `bench`.

use clap::{Parser, Subcommand};

use ringfence::bench::BenchArgs;
use ringfence::config::{ServeArgs, Settings};
use ringfence::demo::DemoArgs;
use ringfence::simulate::SimulateArgs;
use ringfence::startup::Application;
use tracing_subscriber::EnvFilter;

/// See the `mimalloc` entry of Cargo.toml: the request path allocates often and small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ringfence: real-time fraud detection.
#[derive(Parser, Debug)]
#[command(name = "ringfence", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the engine: HTTP API, rules, embedded storage.
    Serve(Box<ServeArgs>),
    /// Run the engine and score a Redis stream or a Kafka topic (`--kafka`) as a member of a
    /// consumer group (plus the HTTP API, as `serve`).
    Worker(Box<WorkerArgs>),
    /// Run the engine with live simulated traffic and print what it catches.
    Demo(DemoArgs),
    /// Generate simulated traffic with ground-truth labels (to a server or a file).
    Simulate(SimulateArgs),
    /// Measure the engine alone, or a running server over HTTP (--target).
    Bench(BenchArgs),
    /// Run a history file through the engine in event-time order, labels after a delay.
    Replay(ringfence::replay::ReplayArgs),
    /// Train a gradient-boosted model on replayed history.
    Train(ringfence::train::TrainArgs),
    /// Evaluate with the handbook's prequential protocol (AUC, AP, card precision@100).
    Eval(ringfence::eval::EvalArgs),
    /// Stream stored records in a time range out as NDJSON or CSV (for a warehouse load).
    Export(Box<ringfence::export::ExportArgs>),
    /// Check the audit trail: `ringfence audit verify [--data DIR | --postgres URL]`.
    Audit(ringfence::audit::AuditArgs),
}

/// Flags of `ringfence worker`: those of `serve` and those of the stream.
#[derive(clap::Args, Debug)]
struct WorkerArgs {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    stream: ringfence::ingest::redis_stream::StreamArgs,
    #[command(flatten)]
    kafka: ringfence::ingest::kafka::KafkaArgs,
}

fn init_logging(default: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Shows the first administrator's login once, on stderr and never through the log (whose
/// lines may be shipped and kept): the only place the generated password ever appears.
fn print_first_login(app: &mut Application) {
    if let Some(login) = app.take_first_login() {
        if login.generated {
            eprintln!(
                "One-time login (shown only now): user `{}`, password `{}` at {}/ ; create the analysts' own accounts, then change this password.",
                login.user,
                login.password.expose(),
                app.base_url()
            );
        } else {
            eprintln!(
                "Created user `{}` with the password from RINGFENCE_ADMIN_PASSWORD.",
                login.user
            );
        }
    }
}

/// Prints a benchmark report as JSON or as its text form.
fn print_report(report: &impl serde::Serialize, json: bool, text: String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        println!("{text}");
    }
}

/// `ringfence worker`: the engine, its HTTP API, and a consumer of Kafka (with `--kafka`) or
/// of a Redis stream.
async fn run_worker(
    settings: Settings,
    stream: ringfence::ingest::redis_stream::StreamConfig,
    kafka: Option<ringfence::ingest::kafka::KafkaConfig>,
) -> Result<(), String> {
    let built = Application::build(settings)
        .await
        .and_then(|app| match kafka {
            Some(kafka) => app.with_kafka_worker(kafka),
            None => app.with_stream_worker(stream),
        });
    match built {
        Err(e) => Err(e.to_string()),
        Ok(mut app) => {
            print_first_login(&mut app);
            tracing::info!(address = %app.local_addr(), "ringfence worker serving");
            app.run_until_stopped().await.map_err(|e| e.to_string())
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.command {
        Command::Serve(args) => match Settings::resolve(&args) {
            Err(e) => Err(e.to_string()),
            Ok(settings) => {
                init_logging("info", settings.log_format == "json");
                match Application::build(settings).await {
                    Err(e) => Err(e.to_string()),
                    Ok(mut app) => {
                        print_first_login(&mut app);
                        tracing::info!(address = %app.local_addr(), "ringfence serving");
                        app.run_until_stopped().await.map_err(|e| e.to_string())
                    }
                }
            }
        },
        Command::Worker(args) => match Settings::resolve(&args.serve) {
            Err(e) => Err(e.to_string()),
            Ok(settings) => {
                init_logging("info", settings.log_format == "json");
                let kafka = args.kafka.resolve(
                    args.stream.group.as_deref(),
                    args.stream.consumer.as_deref(),
                    args.stream.batch,
                );
                match kafka {
                    Err(e) => Err(e),
                    Ok(kafka) => run_worker(settings, args.stream.resolve(), kafka).await,
                }
            }
        },
        Command::Demo(args) => {
            init_logging("warn", false);
            ringfence::demo::run(args).await.map_err(|e| e.to_string())
        }
        Command::Simulate(args) => {
            init_logging("warn", false);
            ringfence::simulate::run(args)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Replay(args) => {
            init_logging("warn", false);
            ringfence::replay::main(&args).map_err(|e| e.to_string())
        }
        Command::Train(args) => {
            init_logging("warn", false);
            ringfence::train::main(&args).map_err(|e| e.to_string())
        }
        Command::Eval(args) => {
            init_logging("warn", false);
            ringfence::eval::run(&args)
                .map(|r| print_report(&r, args.json, r.to_text()))
                .map_err(|e| e.to_string())
        }
        Command::Export(args) => {
            init_logging("warn", false);
            ringfence::export::run(&args)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Audit(args) => {
            init_logging("warn", false);
            match &args.command {
                ringfence::audit::AuditCommand::Verify(v) => {
                    match ringfence::audit::verify(v).await {
                        Err(e) => Err(e.to_string()),
                        Ok(report) => {
                            print_report(&report, v.json, report.to_text());
                            match &report.broken {
                                None => Ok(()),
                                Some(b) => {
                                    Err(format!("the audit trail is broken at row {}", b.id))
                                }
                            }
                        }
                    }
                }
            }
        }
        Command::Bench(args) => {
            init_logging("warn", false);
            if let Some(brokers) = &args.kafka {
                return exit(run_kafka_bench(&args, brokers).await);
            }
            match &args.target {
                Some(_) => ringfence::bench::run_http(&args)
                    .await
                    .map(|r| print_report(&r, args.json, r.to_text()))
                    .map_err(|e| e.to_string()),
                None if args.memory => ringfence::memory_bench::run_args(&args)
                    .map(|r| print_report(&r, args.json, r.to_text()))
                    .map_err(|e| e.to_string()),
                None => ringfence::engine_bench::run(
                    args.count,
                    args.engine_warmup,
                    args.seed,
                    args.model.as_deref(),
                )
                .map(|r| print_report(&r, args.json, r.to_text()))
                .map_err(|e| e.to_string()),
            }
        }
    };
    exit(result)
}

fn exit(result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `ringfence bench --kafka`: end to end through running Kafka workers.
#[cfg(feature = "kafka")]
async fn run_kafka_bench(args: &BenchArgs, brokers: &str) -> Result<(), String> {
    use ringfence::kafka_bench;
    let (topic, decisions) = (args.topic.as_str(), args.decisions_topic.as_str());
    if let Some(partitions) = args.create_topics {
        let dead = format!("{topic}.dead-letter");
        kafka_bench::create_topics(brokers, &[topic, decisions, &dead], partitions)
            .await
            .map_err(|e| e.to_string())?;
        if args.count == 0 {
            eprintln!("topics ready");
            return Ok(());
        }
    }
    kafka_bench::run(args, brokers, topic, decisions)
        .await
        .map(|r| print_report(&r, args.json, r.to_text()))
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "kafka"))]
async fn run_kafka_bench(_: &BenchArgs, _: &str) -> Result<(), String> {
    Err(
        "this ringfence was built without Kafka support (cargo feature `kafka`, on by default)"
            .into(),
    )
}
