//! `ringfence worker --kafka` against a real Kafka-protocol broker (Tansu, started privately):
//! messages are decided exactly as the same transactions over HTTP, decisions are produced to
//! the decisions topic keyed by transaction id, bad messages go to the dead-letter topic; and
//! in the production shape (Redis state, PostgreSQL records) two worker processes, one killed
//! mid-stream and restarted, leave exactly one decision per transaction in the decisions topic
//! and in PostgreSQL, each equal to a single node's over the shared log's order.

#![cfg(feature = "kafka")]

mod helpers;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use helpers::services::{free_port, PostgresServer, RedisServer, TansuServer};
use helpers::{spawn_app_with, spawn_kafka_worker_with, Proc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use ringfence::client::HttpClient;
use ringfence::ingest::kafka::{KafkaArgs, KafkaConfig};
use serde_json::Value;

/// Tansu's group joins take about half the session timeout.
const SESSION_TIMEOUT_MS: u32 = 6_000;

/// The worker's log (warnings and up, or `RUST_LOG`), shown with a failing test's output.
fn log_to_test_output() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A private broker with `transactions`, `decisions` and `transactions.dead-letter` of these
/// partition counts; its bootstrap servers.
async fn broker_with_topics(input: i32, decisions: i32, dead: i32) -> (TansuServer, String) {
    let broker = TansuServer::start();
    let brokers = broker.brokers();
    for (topic, partitions) in [
        ("transactions", input),
        ("decisions", decisions),
        ("transactions.dead-letter", dead),
    ] {
        ringfence::kafka_bench::create_topics(&brokers, &[topic], partitions)
            .await
            .expect("topic created");
    }
    (broker, brokers)
}

async fn produce(brokers: &str, topic: &str, messages: &[(Option<String>, Option<String>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for (key, value) in messages {
        let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic);
        if let Some(k) = key {
            record = record.key(k.as_str());
        }
        if let Some(v) = value {
            record = record.payload(v.as_str());
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("delivered");
    }
}

/// A message read back: key, value, headers.
#[derive(Debug, Clone)]
struct Read {
    key: String,
    value: Vec<u8>,
    headers: HashMap<String, String>,
}

/// Reads every committed message of `topic` from the start (no group: all partitions
/// assigned) until `until` holds of what was read, or panics after `within`.
fn read_topic(
    brokers: &str,
    topic: &str,
    within: Duration,
    until: impl Fn(&[Read]) -> bool,
) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", free_port()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("reader");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut list = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            list.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&list).expect("assign");
    let deadline = Instant::now() + within;
    let mut read = Vec::new();
    loop {
        if until(&read) {
            // A moment more, for anything that should not be there.
            let settle = Instant::now() + Duration::from_millis(500);
            while Instant::now() < settle {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    read.push(to_read(&m));
                }
            }
            return read;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: {} messages read, not enough",
            read.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            read.push(to_read(&m));
        }
    }
}

fn to_read(m: &rdkafka::message::BorrowedMessage<'_>) -> Read {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Read {
        key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
        value: m.payload().unwrap_or_default().to_vec(),
        headers,
    }
}

fn kafka_config(brokers: &str, topic: &str, consumer: &str, batch: usize) -> KafkaConfig {
    KafkaArgs {
        kafka: Some(brokers.to_owned()),
        topic: topic.to_owned(),
        decisions_topic: "decisions".into(),
        session_timeout_ms: SESSION_TIMEOUT_MS,
        linger_ms: 5,
        ..KafkaArgs::default()
    }
    .resolve(Some("scorers"), Some(consumer), batch)
    .expect("valid")
    .expect("kafka")
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_decided_as_over_http_and_bad_ones_are_dead_lettered() {
    log_to_test_output();
    let (_broker, brokers) = broker_with_topics(1, 3, 1).await;
    let n = 40;
    let mut messages = Vec::new();
    for i in 0..n {
        let tx = helpers::mixed_tx("kf", 9, i);
        messages.push((
            Some(tx["card_id"].as_str().unwrap_or_default().to_owned()),
            Some(tx.to_string()),
        ));
        if i == 13 {
            // A bad amount, a value that is not JSON, and no value at all.
            messages.push((
                Some("c-bad".into()),
                Some(
                    r#"{"user_id":"u-bad","card_id":"c-bad","amount":"twelve","merchant":"m"}"#
                        .into(),
                ),
            ));
            messages.push((None, Some("{not json".into())));
            messages.push((Some("tombstone".into()), None));
        }
    }
    // One without an id or a time: named by its coordinates, timed by the message.
    messages.push((
        Some("c1".into()),
        Some(r#"{"user_id":"u1","card_id":"c1","amount":12.5,"merchant":"m1"}"#.into()),
    ));
    produce(&brokers, "transactions", &messages).await;

    let dir = tempfile::tempdir().expect("dir");
    let worker = spawn_kafka_worker_with(
        dir.path(),
        kafka_config(&brokers, "transactions", "w1", 7),
        |_| {},
    )
    .await;
    let decisions = read_topic(&brokers, "decisions", Duration::from_secs(60), |r| {
        r.len() > n
    });
    assert_eq!(decisions.len(), n + 1, "one decision per good message");
    let dead = read_topic(
        &brokers,
        "transactions.dead-letter",
        Duration::from_secs(10),
        |r| r.len() >= 3,
    );
    assert_eq!(dead.len(), 3);
    let errors: Vec<Value> = dead
        .iter()
        .map(|d| serde_json::from_str(&d.headers["ringfence-error"]).expect("error JSON"))
        .collect();
    assert_eq!(errors[0]["field"], "amount", "{errors:?}");
    assert_eq!(errors[1]["code"], "malformed_json", "{errors:?}");
    assert_eq!(errors[2]["code"], "malformed_json", "{errors:?}");
    assert_eq!(dead[0].key, "c-bad");
    assert!(String::from_utf8_lossy(&dead[0].value).contains("twelve"));
    assert!(dead[1].headers["ringfence-source"].starts_with("transactions/0/"));

    let by_id: HashMap<String, Value> = decisions
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_slice(&d.value).expect("decision JSON");
            assert_eq!(
                v["transaction_id"],
                d.key.as_str(),
                "keyed by transaction id"
            );
            (d.key.clone(), v)
        })
        .collect();
    // The unnamed one: `<topic>-<partition>-<offset>` (offset n + 3: after three bad ones).
    assert!(
        by_id.contains_key(&format!("transactions-0-{}", n + 3)),
        "{:?}",
        by_id
            .keys()
            .filter(|k| !k.starts_with("kf-"))
            .collect::<Vec<_>>()
    );
    let (_, stats) = worker.get("/v1/stats").await;
    assert_eq!(stats["stored"]["transactions"], n as u64 + 1, "{stats}");

    // The same transactions over HTTP to a fresh node, in the same order: same decisions.
    let http_dir = tempfile::tempdir().expect("dir");
    let single = spawn_app_with(http_dir.path(), |_| {}).await;
    let mut flagged = 0;
    for i in 0..n {
        let (status, over_http) = single
            .post_json("/v1/transactions", &helpers::mixed_tx("kf", 9, i))
            .await;
        assert_eq!(status, 200, "{over_http}");
        let id = format!("kf-{i}");
        assert_eq!(
            helpers::decision_essence(&by_id[&id]),
            helpers::decision_essence(&over_http),
            "{id}"
        );
        flagged += usize::from(over_http["decision"] != "approve");
    }
    assert!(
        flagged > 5,
        "the stream must exercise rules ({flagged} flagged)"
    );

    // Counted on /metrics: decisions, dead letters, the committed offset after the last one.
    let metrics = worker.get_text("/metrics").await;
    assert_eq!(
        metric(&metrics, "ringfence_kafka_decisions_total"),
        Some((n + 1) as f64),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "ringfence_kafka_dead_letters_total"),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "ringfence_kafka_committed_offset{topic=\"transactions\",partition=\"0\"}"
        ),
        Some(messages.len() as f64),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "ringfence_kafka_assigned_partitions"),
        Some(1.0)
    );
    worker.stop().await;
    single.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_crashed_owner_published_but_did_not_commit_is_not_published_again() {
    log_to_test_output();
    let (_broker, brokers) = broker_with_topics(1, 1, 1).await;
    // Offsets 0..=11; offset 5 does not parse.
    let mut messages = Vec::new();
    for i in 0..12 {
        let value = if i == 5 {
            "{not json".to_owned()
        } else {
            helpers::mixed_tx("pc", 8, i).to_string()
        };
        messages.push((Some(format!("c{i}")), Some(value)));
    }
    produce(&brokers, "transactions", &messages).await;
    // A previous owner got as far as offset 6 (decisions of 0..=4 and 6, the dead letter of
    // 5), then died before committing any offset.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    for i in [0, 1, 2, 3, 4, 6, 5] {
        let source = format!("transactions/0/{i}");
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "ringfence-source",
            value: Some(source.as_str()),
        });
        let (topic, key, value) = if i == 5 {
            (
                "transactions.dead-letter",
                "c5".to_owned(),
                "{not json".to_owned(),
            )
        } else {
            let id = format!("pc-{i}");
            let value =
                serde_json::json!({"transaction_id": id, "previous_owner": true}).to_string();
            ("decisions", id, value)
        };
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(0)
                    .key(key.as_str())
                    .payload(value.as_str())
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }

    let dir = tempfile::tempdir().expect("dir");
    let worker = spawn_kafka_worker_with(
        dir.path(),
        kafka_config(&brokers, "transactions", "w-next", 4),
        |_| {},
    )
    .await;
    // Every message decided and recorded (the store is this worker's own, so all of them are
    // new to it); the previous owner's outputs are not produced again.
    let decisions = read_topic(&brokers, "decisions", Duration::from_secs(60), |r| {
        r.len() >= 11
    });
    let ids: Vec<&str> = decisions.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(
        ids,
        [
            "pc-0", "pc-1", "pc-2", "pc-3", "pc-4", "pc-6", "pc-7", "pc-8", "pc-9", "pc-10",
            "pc-11"
        ]
    );
    for d in &decisions[6..] {
        let v: Value = serde_json::from_slice(&d.value).expect("decision");
        assert!(v["decision"].is_string(), "{v}");
    }
    let dead = read_topic(
        &brokers,
        "transactions.dead-letter",
        Duration::from_secs(10),
        |r| !r.is_empty(),
    );
    assert_eq!(dead.len(), 1, "the dead letter of offset 5 once");
    let (_, stats) = worker.get("/v1/stats").await;
    assert_eq!(stats["stored"]["transactions"], 11, "{stats}");
    let metrics = worker.get_text("/metrics").await;
    assert_eq!(
        metric(&metrics, "ringfence_kafka_already_published_total"),
        Some(7.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "ringfence_kafka_decisions_total"),
        Some(5.0)
    );
    worker.stop().await;
}

const KEY: &str = "kafka-test-card-hash-key-0123456789abc";

async fn start_worker(
    name: &str,
    brokers: &str,
    redis: &str,
    postgres: &str,
    data: &std::path::Path,
) -> Proc {
    let session = SESSION_TIMEOUT_MS.to_string();
    let args = [
        "worker",
        "--kafka",
        brokers,
        "--topic",
        "transactions",
        "--group",
        "scorers",
        "--consumer",
        name,
        "--batch",
        "8",
        "--session-timeout-ms",
        &session,
        "--redis",
        redis,
        "--postgres",
        postgres,
    ];
    helpers::start_process(&args, data, KEY).await
}

async fn metrics_of(client: &HttpClient, base: &str) -> String {
    match client.get(&format!("{base}/metrics")).await {
        Ok(r) => r.text(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_one_killed_mid_stream_leave_one_decision_per_transaction() {
    let (_broker, brokers) = broker_with_topics(4, 4, 4).await;
    let redis = RedisServer::start_with(&["--appendonly", "yes"]);
    let postgres = PostgresServer::start();
    let (r, p) = (redis.url(), postgres.url());
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut w1 = start_worker("w1", &brokers, &r, &p, dirs[0].path()).await;
    let w2 = start_worker("w2", &brokers, &r, &p, dirs[1].path()).await;
    let client = HttpClient::new()
        .with_timeout(Duration::from_secs(5))
        .with_bearer(helpers::ADMIN_KEY);
    // Both in the group with partitions of their own before traffic starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (m1, m2) = (
            metrics_of(&client, &w1.base).await,
            metrics_of(&client, &w2.base).await,
        );
        let assigned = |m: &str| metric(m, "ringfence_kafka_assigned_partitions").unwrap_or(0.0);
        if assigned(&m1) >= 1.0 && assigned(&m2) >= 1.0 && assigned(&m1) + assigned(&m2) == 4.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never settled:\n{m1}\n{m2}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A simulated stream published by `ringfence simulate --kafka` over about a second, faster
    // than the workers decide it: they are busy when w1 dies.
    let n = 600;
    let simulate = Command::new(env!("CARGO_BIN_EXE_ringfence"))
        .args(["simulate", "--kafka", &brokers, "--topic", "transactions"])
        .args([
            "--tps",
            "600",
            "--count",
            &n.to_string(),
            "--duration",
            "60",
        ])
        .args(["--fraud-rate", "0.2", "--seed", "7"])
        // Tansu serves a fetch correctly only from the first offset of a record batch: one
        // message a batch makes every committed offset one.
        .args(["--kafka-property", "batch.num.messages=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn simulate");
    // w1 dies mid-stream, once it has committed some decisions, and comes back a moment later.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let decided = metric(
            &metrics_of(&client, &w1.base).await,
            "ringfence_kafka_decisions_total",
        )
        .unwrap_or(0.0);
        if decided >= 30.0 {
            break;
        }
        assert!(Instant::now() < deadline, "w1 decided {decided}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = w1.child.kill();
    let _ = w1.child.wait();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let w1_again = start_worker("w1", &brokers, &r, &p, dirs[0].path()).await;
    let output = tokio::task::spawn_blocking(move || simulate.wait_with_output())
        .await
        .expect("join")
        .expect("simulate ran");
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{summary}");
    assert!(
        summary.contains(&format!("published {n} transactions"))
            && summary.contains(&format!("{n} delivered")),
        "{summary}"
    );

    // Exactly one committed decision per transaction in the decisions topic.
    let decisions = read_topic(&brokers, "decisions", Duration::from_secs(120), |r| {
        r.len() >= n
    });
    let mut by_id: HashMap<String, Value> = HashMap::new();
    for d in &decisions {
        let v: Value = serde_json::from_slice(&d.value).expect("decision JSON");
        assert_eq!(v["transaction_id"], d.key.as_str());
        assert!(
            by_id.insert(d.key.clone(), v).is_none(),
            "{} decided twice in the topic",
            d.key
        );
    }
    assert_eq!(by_id.len(), n);
    let (m2, m1) = (
        metrics_of(&client, &w2.base).await,
        metrics_of(&client, &w1_again.base).await,
    );
    assert!(
        metric(&m2, "ringfence_kafka_decisions_total").unwrap_or(0.0) > 0.0,
        "the survivor took part:\n{m2}"
    );
    eprintln!(
        "outputs a previous owner had published, skipped: w2 {:?}, w1 restarted {:?}",
        metric(&m2, "ringfence_kafka_already_published_total"),
        metric(&m1, "ringfence_kafka_already_published_total")
    );

    // And one record per transaction in PostgreSQL, with the decision the topic holds.
    let (pg, connection) = tokio_postgres::connect(&p, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = pg
            .query("SELECT id, action, score FROM transactions", &[])
            .await
            .expect("select");
        if rows.len() >= n {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} records in PostgreSQL",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows.len(), n, "one record per transaction");
    for row in &rows {
        let id: String = row.get(0);
        let d = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("{id} stored, not in the topic"));
        assert_eq!(
            d["decision"].as_str(),
            Some(row.get::<_, String>(1).as_str()),
            "{id}"
        );
        let score: f64 = row.get(2);
        assert!(
            (d["score"].as_f64().unwrap_or(-1.0) - score).abs() < 1e-9,
            "{id}"
        );
    }

    // A single node over the shared log's order decides exactly the same.
    let bodies: HashMap<String, Value> =
        read_topic(&brokers, "transactions", Duration::from_secs(30), |r| {
            r.len() >= n
        })
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(&m.value).expect("transaction JSON");
            (
                v["transaction_id"].as_str().unwrap_or_default().to_owned(),
                v,
            )
        })
        .collect();
    assert_eq!(bodies.len(), n);
    let flagged =
        helpers::assert_one_node_decides_alike(&redis, n, KEY, &by_id, |id| bodies[id].clone())
            .await;
    assert!(flagged > 10, "{flagged} flagged");
    drop((w2, w1_again, m1));
}
