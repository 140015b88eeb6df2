//! The production shape as separate processes: two `serve` nodes and two `worker`s on one
//! Redis and one PostgreSQL, traffic through HTTP and the stream at once, one worker killed
//! mid-stream. Every transaction is decided once, and every decision equals a single node's
//! over the same transactions in the shared log's order.

mod helpers;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use helpers::services::{PostgresServer, RedisServer};
use helpers::Proc;
use ringfence::client::HttpClient;
use serde_json::Value;

const KEY: &str = "multi-process-card-hash-key-0123456789";

async fn start(args: &[&str], redis: &str, postgres: &str, data: &std::path::Path) -> Proc {
    let mut all = args.to_vec();
    all.extend(["--redis", redis, "--postgres", postgres]);
    helpers::start_process(&all, data, KEY).await
}

fn tx(i: usize) -> Value {
    helpers::mixed_tx("mp", 11, i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_and_two_workers_act_as_one_node() {
    let redis = RedisServer::start_with(&["--appendonly", "yes"]);
    let postgres = PostgresServer::start();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (r, p) = (redis.url(), postgres.url());
    let serve_a = start(&["serve"], &r, &p, dirs[0].path()).await;
    let serve_b = start(&["serve"], &r, &p, dirs[1].path()).await;
    let worker_args = |name: &'static str| {
        [
            "worker",
            "--consumer",
            name,
            "--claim-idle-ms",
            "500",
            "--batch",
            "5",
        ]
    };
    let mut worker_1 = start(&worker_args("w1"), &r, &p, dirs[2].path()).await;
    let worker_2 = start(&worker_args("w2"), &r, &p, dirs[3].path()).await;

    let mut con = redis::Client::open(r.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let n = 240;
    // Even transactions through the stream, odd ones over HTTP to alternating servers.
    for i in (0..n).filter(|i| i % 2 == 0) {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("transactions")
            .arg("*")
            .arg("json")
            .arg(tx(i).to_string());
        let _: String = cmd.query_async(&mut con).await.expect("XADD");
    }
    let client = HttpClient::new()
        .with_timeout(Duration::from_secs(20))
        .with_bearer(helpers::ADMIN_KEY);
    let mut answers: HashMap<String, Value> = HashMap::new();
    let mut killed = false;
    for i in (0..n).filter(|i| i % 2 == 1) {
        let base = if i % 4 == 1 {
            &serve_a.base
        } else {
            &serve_b.base
        };
        let r = client
            .post(
                &format!("{base}/v1/transactions"),
                "application/json",
                tx(i).to_string(),
            )
            .await
            .expect("post");
        assert_eq!(r.status, 200, "{}", r.text());
        let d: Value = r.json().expect("json");
        answers.insert(format!("mp-{i}"), d);
        let decided: usize = redis::cmd("XLEN")
            .arg("decisions")
            .query_async(&mut con)
            .await
            .expect("XLEN");
        if !killed && decided >= 10 {
            // A worker dies mid-stream, pending entries and all.
            let _ = worker_1.child.kill();
            let _ = worker_1.child.wait();
            killed = true;
        }
    }
    assert!(killed, "the stream was consumed before the kill");

    // Every stream entry decided and acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stream_decisions = loop {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg("decisions")
            .arg("-")
            .arg("+")
            .query_async(&mut con)
            .await
            .expect("XRANGE");
        let by_id: HashMap<String, Value> = reply
            .ids
            .iter()
            .map(|e| {
                let d: Value = serde_json::from_str(&e.get::<String>("json").expect("json"))
                    .expect("decision");
                (
                    d["transaction_id"].as_str().unwrap_or_default().to_owned(),
                    d,
                )
            })
            .collect();
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg("transactions")
            .arg("scorers")
            .query_async(&mut con)
            .await
            .expect("XPENDING");
        let idle = matches!(pending.first(), Some(redis::Value::Int(0)));
        if by_id.len() == n / 2 && idle {
            break by_id;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} stream decisions",
            by_id.len(),
            n / 2
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    answers.extend(stream_decisions);
    assert_eq!(answers.len(), n);

    // A single node over the log's order decides exactly the same.
    let flagged = helpers::assert_one_node_decides_alike(&redis, n, KEY, &answers, |id| {
        tx(id["mp-".len()..].parse().expect("index"))
    })
    .await;
    assert!(flagged > 10, "{flagged} flagged");
    drop((serve_a, serve_b, worker_2));
}
