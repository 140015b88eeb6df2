//! The live streams over real WebSockets: `GET /v1/stream/transactions` (rows with the right
//! fields, exact per-second counts, server-side filters), `GET /v1/stream/alerts` (an alert
//! for a blocked transaction), a client that never reads (ingestion goes on, the client is
//! closed), shutdown with sockets open, `GET /v1/live/stats` and `GET /v1/stores`.

mod helpers;

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use helpers::{spawn_app_with, TestApp};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Longest a test waits for something to arrive before it fails (a bound on a hang, never an
/// assertion about speed).
const PATIENCE: Duration = Duration::from_secs(30);

/// Amounts decide: up to 500 approve, above it review, above 1000 block.
const RULES: &str = "[[rule]]\nname = \"big\"\ncategory = \"amount\"\nwhen = \"tx.amount > 1000\"\nscore = 90\nreason = \"amount {tx.amount} over 1000\"\n\n[[rule]]\nname = \"mid\"\ncategory = \"amount\"\nwhen = \"tx.amount > 500\"\nscore = 55\nreason = \"amount {tx.amount} over 500\"\n";

async fn start(dir: &Path) -> TestApp {
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, RULES).expect("rules");
    spawn_app_with(dir, |a| a.rules = Some(rules)).await
}

/// The handshake request for `path`, with the test admin key (every stream needs `analyst`).
fn ws_request(
    app: &TestApp,
    path: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{path}", app.base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().expect("websocket request");
    let bearer = format!("Bearer {}", app.admin_key());
    req.headers_mut()
        .insert("authorization", bearer.parse().expect("header value"));
    req
}

async fn connect(app: &TestApp, path: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(ws_request(app, path))
        .await
        .expect("websocket handshake");
    socket
}

/// A transaction at `store` with a fresh card and user (so only the amount rules fire).
fn tx(id: &str, store: &str, amount: f64) -> Value {
    json!({
        "transaction_id": id,
        "amount": amount,
        "currency": "EUR",
        "merchant": format!("m-{store}"),
        "store_id": store,
        "user_id": format!("u-{id}"),
        "card_id": format!("c-{id}"),
    })
}

async fn post_batch(app: &TestApp, txs: &[Value]) {
    let (status, v) = app
        .post_json("/v1/transactions/batch", &Value::Array(txs.to_vec()))
        .await;
    assert_eq!(status, 200, "{v}");
}

/// The next JSON text message, `None` when the socket ended (close, EOF or error).
async fn next_json(socket: &mut Socket, deadline: Instant) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a message before the deadline");
        match msg {
            Some(Ok(Message::Text(t))) => {
                return Some(serde_json::from_str(t.as_str()).expect("JSON message"))
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads feed messages until `done` says enough, returning the rows and stats seen.
async fn read_feed(
    socket: &mut Socket,
    mut done: impl FnMut(&[Value], &[Value]) -> bool,
) -> (Vec<Value>, Vec<Value>) {
    let deadline = Instant::now() + PATIENCE;
    let (mut rows, mut stats) = (Vec::new(), Vec::new());
    while !done(&rows, &stats) {
        let m = next_json(socket, deadline)
            .await
            .expect("the feed stays open");
        match m["type"].as_str() {
            Some("tx") => {
                rows.extend(m["items"].as_array().expect("items").iter().cloned());
                assert!(m["omitted"].is_u64(), "{m}");
            }
            Some("stats") => stats.push(m),
            other => panic!("unexpected message type {other:?}: {m}"),
        }
    }
    (rows, stats)
}

fn sum(stats: &[Value], path: &[&str]) -> u64 {
    stats
        .iter()
        .map(|s| path.iter().fold(s, |v, k| &v[*k]).as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_transactions_arrive_on_the_feed_with_their_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(dir.path()).await;
    let mut feed = connect(&app, "/v1/stream/transactions").await;
    let pan = "4556737586899855";
    let mut paid = tx("feed-1", "s1", 20.0);
    paid["card_number"] = json!(pan);
    paid.as_object_mut().expect("object").remove("card_id");
    post_batch(
        &app,
        &[paid, tx("feed-2", "s1", 700.0), tx("feed-3", "s2", 1500.0)],
    )
    .await;
    let (rows, _) = read_feed(&mut feed, |rows, _| rows.len() >= 3).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let by_id = |id: &str| {
        rows.iter()
            .find(|r| r["transaction_id"] == id)
            .unwrap_or_else(|| panic!("{id} on the feed: {rows:?}"))
    };
    let (a, r, b) = (by_id("feed-1"), by_id("feed-2"), by_id("feed-3"));
    assert_eq!(a["decision"], "approve");
    assert_eq!(r["decision"], "review");
    assert_eq!(b["decision"], "block");
    assert_eq!(b["amount"], 1500.0);
    assert_eq!(b["store_id"], "s2");
    assert_eq!(b["merchant"], "m-s2");
    assert_eq!(b["kind"], "payment");
    assert_eq!(b["card"], "c-feed-3");
    assert_eq!(b["score"], 100.0, "both rules: 90 + 55, capped");
    assert_eq!(b["rule"], "big");
    assert_eq!(b["reason"], "amount 1500 over 1000");
    assert!(b["processing_us"].is_u64());
    assert!(b["timestamp"].is_string() && b["decided_at"].is_string());
    // The card number went in; only its token comes out, and it is the stored one.
    let card = a["card"].as_str().expect("card token");
    assert!(!card.contains(pan));
    assert!(!serde_json::to_string(&rows).expect("json").contains(pan));
    let (_, stored) = app.get("/v1/transactions/feed-1").await;
    assert_eq!(stored["transaction"]["card_id"], card, "{stored}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_frames_count_every_transaction_and_decision_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(dir.path()).await;
    let mut feed = connect(&app, "/v1/stream/transactions").await;
    // 300 per batch, three batches: more rows than one message carries, so the feed samples.
    let mut expected = [0u64; 3];
    for batch in 0..3 {
        let txs: Vec<Value> = (0..300)
            .map(|i| {
                let amount = [20.0, 700.0, 1500.0][i % 3];
                expected[i % 3] += 1;
                tx(&format!("n-{batch}-{i}"), "s1", amount)
            })
            .collect();
        post_batch(&app, &txs).await;
    }
    let (rows, stats) = read_feed(&mut feed, |_, s| sum(s, &["transactions"]) >= 900).await;
    // Two more seconds: nothing is counted twice or late.
    let (_, more) = read_feed(&mut feed, |_, s| s.len() >= 2).await;
    let stats: Vec<Value> = stats.into_iter().chain(more).collect();
    assert_eq!(sum(&stats, &["transactions"]), 900);
    assert_eq!(sum(&stats, &["decisions", "approve"]), expected[0]);
    assert_eq!(sum(&stats, &["decisions", "review"]), expected[1]);
    assert_eq!(sum(&stats, &["decisions", "block"]), expected[2]);
    assert_eq!(sum(&stats, &["alerts"]), expected[1] + expected[2]);
    let blocked: f64 = stats
        .iter()
        .filter_map(|s| s["value_blocked"].as_f64())
        .sum();
    assert_eq!(blocked, 1500.0 * expected[2] as f64);
    let busy = stats
        .iter()
        .find(|s| s["transactions"].as_u64() > Some(0))
        .expect("a busy second");
    let latency = &busy["latency_us"];
    assert!(latency["p50"].as_u64() > Some(0), "{busy}");
    assert!(latency["p99"].as_u64() >= latency["p50"].as_u64(), "{busy}");
    assert!(busy["alert_rate"].as_f64() > Some(0.0), "{busy}");
    // Sampled: fewer rows than transactions, and what was left out is said.
    assert!(rows.len() < 900, "{} rows", rows.len());
    // The history has the same counts, so charts are full at page load.
    let (status, h) = app.get("/v1/live/stats?seconds=600").await;
    assert_eq!(status, 200, "{h}");
    let seconds = h["seconds"].as_array().expect("seconds");
    assert_eq!(sum(seconds, &["transactions"]), 900);
    assert_eq!(sum(seconds, &["decisions", "block"]), expected[2]);
    assert_eq!(h["streams"]["transactions"], 1);
    for bad in ["0", "601", "ten"] {
        let (status, v) = app.get(&format!("/v1/live/stats?seconds={bad}")).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["field"], "seconds", "{v}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_filters_on_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(dir.path()).await;
    let mut blocks_at_s1 = connect(
        &app,
        "/v1/stream/transactions?decision=block&store=s1&min_amount=1200&max_amount=5000",
    )
    .await;
    let mut flagged = connect(&app, "/v1/stream/transactions?decision=review,block").await;
    post_batch(
        &app,
        &[
            tx("f-approve-s1", "s1", 20.0),
            tx("f-review-s1", "s1", 700.0),
            tx("f-block-s2", "s2", 1500.0),
            tx("f-small-block-s1", "s1", 1100.0),
            tx("f-huge-block-s1", "s1", 9000.0),
            tx("f-block-s1", "s1", 1500.0),
        ],
    )
    .await;
    let (rows, _) = read_feed(&mut blocks_at_s1, |rows, _| {
        rows.iter().any(|r| r["transaction_id"] == "f-block-s1")
    })
    .await;
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["transaction_id"].as_str())
        .collect();
    assert_eq!(ids, ["f-block-s1"]);
    let (rows, _) = read_feed(&mut flagged, |rows, _| {
        rows.iter().any(|r| r["transaction_id"] == "f-block-s1")
    })
    .await;
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["transaction_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "f-review-s1",
            "f-block-s2",
            "f-small-block-s1",
            "f-huge-block-s1",
            "f-block-s1"
        ]
    );
    // Bad filters are refused before the upgrade, naming the field.
    for (query, field) in [
        ("decision=maybe", "decision"),
        ("decision=block,", "decision"),
        ("min_amount=-1", "min_amount"),
        ("max_amount=lots", "max_amount"),
        ("min_amount=10&max_amount=5", "max_amount"),
        ("store=bad%01id", "store"),
        ("colour=red", "query"),
    ] {
        let (status, v) = app.get(&format!("/v1/stream/transactions?{query}")).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert_eq!(v["error"]["field"], field, "{query}: {v}");
    }
    // A good filter without a WebSocket handshake.
    let (status, v) = app.get("/v1/stream/transactions?decision=block").await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "upgrade", "{v}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_socket_gets_an_alert_for_a_blocked_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(dir.path()).await;
    let mut alerts = connect(&app, "/v1/stream/alerts").await;
    post_batch(&app, &[tx("a-ok", "s1", 20.0), tx("a-block", "s1", 2500.0)]).await;
    let alert = next_json(&mut alerts, Instant::now() + PATIENCE)
        .await
        .expect("an alert");
    assert_eq!(alert["transaction_id"], "a-block");
    assert_eq!(alert["decision"], "block");
    assert_eq!(alert["score"], 100.0);
    assert_eq!(alert["amount"], 2500.0);
    assert_eq!(alert["category"], "amount");
    assert_eq!(alert["store_id"], "s1");
    assert_eq!(alert["reasons"][0]["rule"], "big");
    // The same as the stored alert row, but its id.
    let (_, stored) = app.get("/v1/alerts").await;
    let row = &stored["alerts"][0];
    for field in [
        "transaction_id",
        "timestamp",
        "account",
        "decision",
        "score",
        "category",
        "amount",
        "reasons",
    ] {
        assert_eq!(alert[field], row[field], "{field}: {alert} vs {row}");
    }
    app.stop().await;
}

/// A WebSocket whose client takes almost nothing: a tiny receive buffer, never read.
async fn connect_stuck(
    app: &TestApp,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let addr: std::net::SocketAddr = app
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("small buffer");
    let stream = tcp.connect(addr).await.expect("connect");
    let (socket, _) = tokio_tungstenite::client_async(ws_request(app, path), stream)
        .await
        .expect("handshake");
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_hold_up_ingestion_and_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(dir.path()).await;
    let mut stuck_alerts = connect_stuck(&app, "/v1/stream/alerts").await;
    let _stuck_feed = connect_stuck(&app, "/v1/stream/transactions").await;
    let (_, h) = app.get("/v1/live/stats?seconds=1").await;
    assert_eq!(h["streams"], json!({"transactions": 1, "alerts": 1}), "{h}");
    // Every one of these raises an alert: more than the socket's buffers (a few MB) and the
    // 1024 alerts a listener may fall behind by.
    let total = 20_000;
    for batch in 0..(total / 1000) {
        let txs: Vec<Value> = (0..1000)
            .map(|i| tx(&format!("x-{batch}-{i}"), "s1", 2000.0))
            .collect();
        post_batch(&app, &txs).await;
    }
    let (_, counts) = app.get("/v1/stats").await;
    assert_eq!(
        counts["stored"]["transactions"].as_u64(),
        Some(total as u64),
        "every transaction was decided and stored: {counts}"
    );
    // The server gives up on the listener (it fell behind, or took nothing for 10 s), well
    // before its first keepalive ping (20 s after it connected) would have found it stuck.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, h) = app.get("/v1/live/stats?seconds=1").await;
        if h["streams"]["alerts"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stuck listener is still open: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What it did receive ends early: a 1013 close, or the connection simply dropped.
    let mut received = 0;
    let mut close_code = None;
    let deadline = Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stuck_alerts.next())
            .await
            .expect("the stream ends")
        {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert!(received < total, "it was cut off ({received} of {total})");
    assert!(
        close_code.is_none() || close_code == Some(1013),
        "{close_code:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_sockets_open_completes_and_closes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(dir.path()).await;
    let mut feed = connect(&app, "/v1/stream/transactions").await;
    let mut alerts = connect(&app, "/v1/stream/alerts").await;
    post_batch(&app, &[tx("s-1", "s1", 20.0)]).await;
    let (rows, _) = read_feed(&mut feed, |rows, _| !rows.is_empty()).await;
    assert_eq!(rows[0]["transaction_id"], "s-1");
    tokio::time::timeout(PATIENCE, app.stop())
        .await
        .expect("the server stops with sockets open");
    for socket in [&mut feed, &mut alerts] {
        let code = loop {
            match tokio::time::timeout(PATIENCE, socket.next())
                .await
                .expect("closed")
            {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break None,
            }
        };
        assert_eq!(code, Some(1001), "closed as going away");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_lists_the_stores_of_the_latest_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(dir.path()).await;
    let (status, v) = app.get("/v1/stores").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stores"], json!([]));
    post_batch(
        &app,
        &[
            tx("st-1", "north", 20.0),
            tx("st-2", "north", 1500.0),
            tx("st-3", "south", 700.0),
            json!({"transaction_id": "st-4", "amount": 5.0, "user_id": "nobody"}),
        ],
    )
    .await;
    let (status, v) = app.get("/v1/stores").await;
    assert_eq!(status, 200, "{v}");
    let stores = v["stores"].as_array().expect("stores");
    assert_eq!(stores.len(), 2, "{v}");
    assert_eq!(stores[0]["store_id"], "north");
    assert_eq!(stores[0]["transactions"], 2);
    assert_eq!(stores[0]["blocked"], 1);
    assert_eq!(stores[0]["flagged"], 1);
    assert_eq!(stores[1]["store_id"], "south");
    assert_eq!(stores[1]["flagged"], 1);
    assert_eq!(stores[1]["blocked"], 0);
    // Only the latest record: the south store's.
    let (_, v) = app.get("/v1/stores?window=2").await;
    assert_eq!(v["stores"].as_array().map(Vec::len), Some(1), "{v}");
    for bad in ["0", "50001", "x"] {
        let (status, v) = app.get(&format!("/v1/stores?window={bad}")).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["field"], "window", "{v}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_are_listed_from_postgresql_with_every_nodes_records() {
    let server = helpers::services::PostgresServer::start();
    let url = server.url();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut nodes = Vec::new();
    for dir in [dir_a.path(), dir_b.path()] {
        let rules = dir.join("rules.toml");
        std::fs::write(&rules, RULES).expect("rules");
        let url = url.clone();
        nodes.push(
            spawn_app_with(dir, move |a| {
                a.rules = Some(rules);
                a.postgres = Some(ringfence::config::Secret::new(url));
            })
            .await,
        );
    }
    let (b, a) = (nodes.pop().expect("b"), nodes.pop().expect("a"));
    post_batch(
        &a,
        &[tx("pg-1", "north", 20.0), tx("pg-2", "north", 1500.0)],
    )
    .await;
    post_batch(&b, &[tx("pg-3", "south", 700.0)]).await;
    // Each node ships its buffer to PostgreSQL; either node lists both stores.
    let deadline = Instant::now() + PATIENCE;
    let stores = loop {
        let (status, v) = b.get("/v1/stores").await;
        assert_eq!(status, 200, "{v}");
        if v["stores"].as_array().map(Vec::len) == Some(2) {
            break v["stores"].clone();
        }
        assert!(Instant::now() < deadline, "both stores listed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stores[0]["store_id"], "north");
    assert_eq!(stores[0]["transactions"], 2);
    assert_eq!(stores[0]["blocked"], 1);
    assert_eq!(stores[1]["store_id"], "south");
    assert_eq!(stores[1]["flagged"], 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_shared_state_mode_a_nodes_feed_shows_the_other_nodes_decisions() {
    let redis = helpers::services::RedisServer::start();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut nodes = Vec::new();
    for dir in [dir_a.path(), dir_b.path()] {
        let rules = dir.join("rules.toml");
        std::fs::write(&rules, RULES).expect("rules");
        let url = redis.url();
        nodes.push(
            spawn_app_with(dir, move |a| {
                a.rules = Some(rules);
                a.redis = Some(ringfence::config::Secret::new(url));
            })
            .await,
        );
    }
    let (b, a) = (nodes.pop().expect("b"), nodes.pop().expect("a"));
    let mut feed_b = connect(&b, "/v1/stream/transactions").await;
    post_batch(&a, &[tx("ss-1", "s1", 20.0), tx("ss-2", "s1", 1500.0)]).await;
    // B follows the shared log: A's transactions reach B's feed with A's decisions.
    let (rows, stats) = read_feed(&mut feed_b, |rows, s| {
        rows.len() >= 2 && sum(s, &["transactions"]) >= 2
    })
    .await;
    let decided: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["transaction_id"].as_str().unwrap_or(""),
                r["decision"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(decided, [("ss-1", "approve"), ("ss-2", "block")]);
    assert_eq!(sum(&stats, &["transactions"]), 2, "each counted once");
    assert_eq!(sum(&stats, &["decisions", "block"]), 1);
    assert_eq!(sum(&stats, &["replicated"]), 0, "not from another site");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_feed_shows_records_replicated_from_its_peer_and_the_links_lag() {
    let ports = [
        helpers::services::free_port(),
        helpers::services::free_port(),
    ];
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let mut sites = Vec::new();
    for (i, name) in ["store-a", "store-b"].into_iter().enumerate() {
        let rules = dirs[i].path().join("rules.toml");
        std::fs::write(&rules, RULES).expect("rules");
        let (listen, peer) = (ports[i], ports[1 - i]);
        sites.push(
            spawn_app_with(dirs[i].path(), move |a| {
                a.rules = Some(rules);
                a.listen = Some(([127, 0, 0, 1], listen).into());
                a.site = Some(name.into());
                a.peers = vec![format!("http://127.0.0.1:{peer}")];
                // Both sites take the test admin key: each reads the other's feed with it.
                a.peer_key = Some(ringfence::config::Secret::new(helpers::ADMIN_KEY));
            })
            .await,
        );
    }
    let (b, a) = (sites.pop().expect("b"), sites.pop().expect("a"));
    let mut feed_b = connect(&b, "/v1/stream/transactions").await;
    post_batch(&a, &[tx("site-1", "store-a", 1500.0)]).await;
    post_batch(&b, &[tx("site-2", "store-b", 20.0)]).await;
    let (rows, stats) = read_feed(&mut feed_b, |rows, s| {
        rows.len() >= 2
            && sum(s, &["transactions"]) >= 2
            && s.last()
                .is_some_and(|l| l["replication"][0]["lag_ms"].is_number())
    })
    .await;
    let find = |id: &str| {
        rows.iter()
            .find(|r| r["transaction_id"] == id)
            .unwrap_or_else(|| panic!("{id}: {rows:?}"))
    };
    let (remote, own) = (find("site-1"), find("site-2"));
    assert_eq!(remote["site"], "store-a");
    assert_eq!(remote["replicated"], true);
    assert_eq!(remote["decision"], "block", "as store-a decided it");
    assert_eq!(own["site"], "store-b");
    assert!(own.get("replicated").is_none(), "{own}");
    assert_eq!(sum(&stats, &["replicated"]), 1);
    let link = &stats.last().expect("stats")["replication"][0];
    assert_eq!(link["peer"], "store-a", "{link}");
    assert_eq!(link["connected"], true, "{link}");
    a.stop().await;
    b.stop().await;
}

/// A handshake request for `path` carrying only `headers` (no test admin key).
fn ws_request_with(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{path}", app.base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().expect("websocket request");
    for (name, value) in headers {
        req.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    req
}

/// The close code a socket ends with, waiting at most `within`.
async fn close_code_of(socket: &mut Socket, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
            Err(_) => panic!("the socket was still open after {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_ends_when_its_key_is_revoked_or_its_session_signed_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(dir.path()).await;

    // A signed-in analyst's page, and a tool with an analyst key.
    let password = app.create_user("ana", "analyst").await;
    let r = app
        .client
        .post(
            &app.url("/v1/auth/login"),
            "application/json",
            json!({"username": "ana", "password": password}).to_string(),
        )
        .await
        .expect("login");
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_owned();
    let own = app.base.clone();
    let key = app.create_key("tool", "analyst").await;
    let key_id = key
        .strip_prefix("rf_")
        .and_then(|k| k.split('_').next())
        .expect("key id")
        .to_owned();

    // Another site's page cannot ride on the cookie.
    let refused = tokio_tungstenite::connect_async(ws_request_with(
        &app,
        "/v1/stream/alerts",
        &[("cookie", &cookie), ("origin", "http://evil.example")],
    ))
    .await;
    assert!(refused.is_err(), "a cross-site handshake was accepted");

    let (mut page, _) = tokio_tungstenite::connect_async(ws_request_with(
        &app,
        "/v1/stream/transactions",
        &[("cookie", &cookie), ("origin", &own)],
    ))
    .await
    .expect("the page's socket");
    let bearer = format!("Bearer {key}");
    let (mut tool, _) = tokio_tungstenite::connect_async(ws_request_with(
        &app,
        "/v1/stream/alerts",
        &[("authorization", &bearer)],
    ))
    .await
    .expect("the tool's socket");

    // Sign the page out (from the page's origin) and revoke the tool's key.
    let logout = app
        .client
        .send(
            hyper::Request::post(app.url("/v1/auth/logout"))
                .header("cookie", &cookie)
                .header("origin", &own)
                .body(bytes::Bytes::new())
                .expect("request"),
        )
        .await
        .expect("logout");
    assert!(logout.status < 300, "{}", logout.text());
    let revoke = app
        .client
        .send(
            hyper::Request::delete(app.url(&format!("/v1/keys/{key_id}")))
                .body(bytes::Bytes::new())
                .expect("request"),
        )
        .await
        .expect("revoke");
    assert!(revoke.status < 300, "{}", revoke.text());

    // Both end with 1008 (policy) at the next ping rather than streaming on.
    let within = ringfence::http::stream::PING_EVERY + Duration::from_secs(15);
    assert_eq!(close_code_of(&mut page, within).await, Some(1008));
    assert_eq!(close_code_of(&mut tool, within).await, Some(1008));
    app.stop().await;
}
