//! Active-active sites as real processes on loopback: two `ringfence serve --site` nodes, each
//! reaching the other through a TCP link this test can cut (every connection reset, new ones
//! refused) and restore.
//!
//! - The story with the link up: a purchase at A with a face photo reaches B; a
//!   return at A with a photo and, at the same moment, one at B without: A approves, B blocks,
//!   and both sites show both transactions. A later return anywhere is a duplicate, blocked.
//! - A partition: the same item returned at both sites while the link is cut is accepted at
//!   both; when the link heals both sites raise `duplicate_return_across_sites` naming both
//!   transactions, and their per-store counters agree.
//! - Restarts: a site killed mid-stream resumes from its durable offset and holds every record
//!   of its peer exactly once.

mod helpers;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use helpers::services::free_port;
use helpers::test_asset;
use ringfence::client::HttpClient;
use serde_json::{json, Value};

const KEY: &str = "sites-test-card-hash-key-0123456789abcdef";

/// A TCP forwarder standing for the network between two sites.
struct Link {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Link {
    /// Forwards a new loopback port to `target`.
    fn to(target: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind link");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, s, o) = (Arc::clone(&cut), Arc::clone(&stop), Arc::clone(&open));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                if c.load(Ordering::Relaxed) {
                    let _ = client.shutdown(Shutdown::Both); // the cable is out
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = server.set_nodelay(true);
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    let mut o = o.lock().unwrap_or_else(|p| p.into_inner());
                    o.push(c2);
                    o.push(s2);
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Link {
            port,
            cut,
            open,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Resets every connection through the link and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        for s in self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

/// Copies `from` into `to` on a thread until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// One site process.
struct SiteProc {
    child: Child,
    base: String,
    port: u16,
    name: &'static str,
    data: std::path::PathBuf,
    peer: String,
}

impl SiteProc {
    async fn start(name: &'static str, port: u16, peer: &str, data: &std::path::Path) -> SiteProc {
        let child = Command::new(env!("CARGO_BIN_EXE_ringfence"))
            .args(["serve", "--site", name, "--peer", peer])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(data)
            .env("RINGFENCE_CARD_HASH_KEY", KEY)
            // Both sites accept the test admin key, and each sends it to its peer's feed.
            .env("RINGFENCE_ADMIN_KEY", helpers::ADMIN_KEY)
            .env("RINGFENCE_PEER_KEY", helpers::ADMIN_KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ringfence");
        let base = format!("http://127.0.0.1:{port}");
        helpers::wait_healthy(&base, &format!("site {name}")).await;
        SiteProc {
            child,
            base,
            port,
            name,
            data: data.to_owned(),
            peer: peer.to_owned(),
        }
    }

    /// SIGKILL: no chance to finish anything.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(mut self) -> SiteProc {
        self.kill();
        let (name, port, peer, data) = (self.name, self.port, self.peer.clone(), self.data.clone());
        drop(self);
        SiteProc::start(name, port, &peer, &data).await
    }

    async fn post(&self, body: &Value) -> Value {
        let res = HttpClient::new()
            .with_bearer(helpers::ADMIN_KEY)
            .post_json(&format!("{}/v1/transactions", self.base), body)
            .await
            .expect("post");
        assert_eq!(res.status, 200, "{}", res.text());
        res.json().expect("json")
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let res = HttpClient::new()
            .with_bearer(helpers::ADMIN_KEY)
            .get(&format!("{}{path}", self.base))
            .await
            .expect("get");
        (res.status, res.json().unwrap_or(Value::Null))
    }

    /// Waits until `GET path` answers 200 with a body `ok` accepts; returns the body.
    async fn wait_for(&self, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && ok(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "site {}: {what} (last: {status} {body})",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_tx(&self, id: &str) -> Value {
        self.wait_for(
            &format!("/v1/transactions/{id}"),
            &format!("has {id}"),
            |_| true,
        )
        .await
    }

    async fn link_state(&self) -> Value {
        self.get("/v1/sites").await.1["peers"][0].clone()
    }
}

impl Drop for SiteProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn face() -> String {
    STANDARD.encode(test_asset("astronaut.png"))
}

fn purchase(id: &str, receipt: &str, photo: Option<String>) -> Value {
    json!({
        "transaction_id": id, "kind": "purchase", "store_id": "store-a",
        "terminal_id": "pos-a1", "receipt_id": receipt, "customer_id": "cust-1",
        "card_id": "card-1", "amount": 49.0,
        "items": [{"sku": "shirt-m", "serial": format!("sn-{receipt}"), "price": 49.0}],
        "photo": photo,
    })
}

fn ret(id: &str, store: &str, receipt: &str, photo: Option<String>) -> Value {
    json!({
        "transaction_id": id, "kind": "return", "store_id": store,
        "terminal_id": format!("pos-{store}"), "receipt_id": receipt, "customer_id": "cust-1",
        "amount": 49.0,
        "items": [{"sku": "shirt-m", "serial": format!("sn-{receipt}"), "price": 49.0}],
        "photo": photo,
    })
}

fn rules(d: &Value) -> Vec<String> {
    d["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["rule"].as_str().map(str::to_owned))
        .collect()
}

/// Two sites on loopback, each reaching the other through its own cuttable link.
async fn two_sites(dirs: &[tempfile::TempDir; 2]) -> (SiteProc, SiteProc, Link, Link) {
    let (port_a, port_b) = (free_port(), free_port());
    let to_a = Link::to(port_a);
    let to_b = Link::to(port_b);
    let a = SiteProc::start("store-a", port_a, &to_b.url(), dirs[0].path()).await;
    let b = SiteProc::start("store-b", port_b, &to_a.url(), dirs[1].path()).await;
    for s in [&a, &b] {
        s.wait_for("/v1/sites", "link up", |v| {
            v["peers"][0]["connected"] == true
        })
        .await;
    }
    (a, b, to_a, to_b)
}

fn dirs() -> [tempfile::TempDir; 2] {
    [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_link_up_the_fraudulent_return_at_the_other_store_is_blocked() {
    let dirs = dirs();
    let (a, b, _to_a, _to_b) = two_sites(&dirs).await;

    let p = a.post(&purchase("p-1", "r-1", Some(face()))).await;
    assert_eq!(p["decision"], "approve", "{p}");
    let at_b = b.wait_for_tx("p-1").await;
    assert_eq!(at_b["origin"], "store-a", "{at_b}");
    assert_eq!(at_b["transaction"]["retail"]["photo"], "verified");
    assert_eq!(at_b["decision"]["decision"], "approve");

    // The customer at A with a photo, the fraudster at B without, at the same moment.
    let (ret_a, ret_b) = (
        ret("ret-a", "store-a", "r-1", Some(face())),
        ret("ret-b", "store-b", "r-1", None),
    );
    let (ra, rb) = tokio::join!(a.post(&ret_a), b.post(&ret_b));
    assert_eq!(ra["decision"], "approve", "{ra}");
    assert_eq!(rb["decision"], "block", "{rb}");
    assert!(rb["score"].as_f64().unwrap_or(0.0) >= 85.0, "{rb}");
    assert!(
        rules(&rb).contains(&"no_photo_verification".to_owned()),
        "{rb}"
    );

    // Both transactions with their decisions on both sites.
    for site in [&a, &b] {
        for (id, decision) in [("ret-a", "approve"), ("ret-b", "block")] {
            let t = site.wait_for_tx(id).await;
            assert_eq!(
                t["decision"]["decision"], decision,
                "{} {id}: {t}",
                site.name
            );
        }
    }
    let (_, ret_b_at_a) = a.get("/v1/transactions/ret-b").await;
    assert_eq!(ret_b_at_a["origin"], "store-b");

    // A second return of the item anywhere, even with a face photo, is a duplicate.
    let again = b.post(&ret("ret-b2", "store-b", "r-1", Some(face()))).await;
    assert_eq!(again["decision"], "block", "{again}");
    assert!(again["score"].as_f64().unwrap_or(0.0) >= 85.0);
    assert!(
        rules(&again).contains(&"duplicate_return".to_owned()),
        "{again}"
    );

    // The blocked claims were never accepted: no conflict, one unit returned, at store A.
    for site in [&a, &b] {
        site.wait_for_tx("ret-b2").await;
        let (_, alerts) = site
            .get("/v1/alerts?category=duplicate_return_across_sites")
            .await;
        assert_eq!(
            alerts["alerts"].as_array().map(Vec::len),
            Some(0),
            "{alerts}"
        );
        let (_, r) = site.get("/v1/receipts/r-1").await;
        assert_eq!(
            r["receipt"]["lines"][0]["returned_by_store"],
            json!({"store-a": 1})
        );
    }

    // Replication delay is measured per peer, in the API and in /metrics.
    let link = b.link_state().await;
    assert_eq!(link["site"], "store-a");
    assert!(link["records"].as_u64().unwrap_or(0) >= 2, "{link}");
    assert!(link["lag_ms"]["p99"].as_f64().is_some(), "{link}");
    assert_eq!(link["behind"], 0, "{link}");
    let metrics = HttpClient::new()
        .with_bearer(helpers::ADMIN_KEY)
        .get(&format!("{}/metrics", b.base))
        .await
        .expect("metrics")
        .text();
    assert!(
        metrics.contains("ringfence_site_replication_lag_seconds{peer=\"store-a\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("ringfence_site_peer_connected{peer=\"store-a\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_accepted_at_both_sides_of_a_cut_raise_one_conflict_on_both_when_it_heals() {
    let dirs = dirs();
    let (a, b, to_a, to_b) = two_sites(&dirs).await;
    a.post(&purchase("p-2", "r-2", Some(face()))).await;
    b.wait_for_tx("p-2").await;

    to_a.cut();
    to_b.cut();
    for s in [&a, &b] {
        s.wait_for("/v1/sites", "link down", |v| {
            v["peers"][0]["connected"] == false
        })
        .await;
    }
    // Each site only knows its own return: both look legitimate and are accepted.
    let ra = a.post(&ret("cut-a", "store-a", "r-2", Some(face()))).await;
    let rb = b.post(&ret("cut-b", "store-b", "r-2", Some(face()))).await;
    assert_eq!(ra["decision"], "approve", "{ra}");
    assert_eq!(rb["decision"], "approve", "{rb}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = a.get("/v1/transactions/cut-b").await;
    assert_eq!(status, 404, "the cut link carried a record");

    to_a.heal();
    to_b.heal();
    let mut conflicts = Vec::new();
    for site in [&a, &b] {
        let alerts = site
            .wait_for(
                "/v1/alerts?category=duplicate_return_across_sites",
                "conflict alert",
                |v| v["alerts"].as_array().is_some_and(|a| !a.is_empty()),
            )
            .await;
        let list = alerts["alerts"].as_array().cloned().unwrap_or_default();
        assert_eq!(list.len(), 1, "{}: {alerts}", site.name);
        let reason = &list[0]["reasons"][0];
        assert_eq!(reason["rule"], "duplicate_return_across_sites");
        assert_eq!(
            reason["transactions"],
            json!(["cut-a", "cut-b"]),
            "{reason}"
        );
        conflicts.push(reason["conflict"].clone());
    }
    assert_eq!(
        conflicts[0], conflicts[1],
        "both sites report the same conflict"
    );

    // The counters converged: one unit returned at each store, on both sites.
    let (_, at_a) = a.get("/v1/receipts/r-2").await;
    let (_, at_b) = b.get("/v1/receipts/r-2").await;
    assert_eq!(at_a, at_b);
    let line = &at_a["receipt"]["lines"][0];
    assert_eq!(
        line["returned_by_store"],
        json!({"store-a": 1, "store-b": 1})
    );
    assert_eq!(line["returned"], 2);

    // A restart re-reads history: the conflict is neither lost nor raised again.
    let a = a.restart().await;
    let (_, alerts) = a
        .get("/v1/alerts?category=duplicate_return_across_sites")
        .await;
    assert_eq!(
        alerts["alerts"].as_array().map(Vec::len),
        Some(1),
        "{alerts}"
    );
    let (_, again) = a.get("/v1/receipts/r-2").await;
    assert_eq!(again, at_b, "the rebuilt state holds the same counters");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_killed_mid_stream_resumes_from_its_offset_and_holds_each_record_once() {
    let dirs = dirs();
    let (a, b, _to_a, _to_b) = two_sites(&dirs).await;
    let purchases = |from: usize, to: usize| {
        (from..to).map(|i| {
            let mut p = purchase(&format!("k-{i}"), &format!("rk-{i}"), None);
            p["card_id"] = json!(format!("card-{}", i % 7));
            p
        })
    };
    // B is killed (SIGKILL) while A's purchases stream in, and A keeps taking more.
    let mut b = b;
    for (n, p) in purchases(0, 150).enumerate() {
        a.post(&p).await;
        if n == 60 {
            b.kill();
        }
    }
    // And B's own traffic while it is back, replicated the other way.
    let b = b.restart().await;
    for i in 0..20 {
        b.post(&ret(
            &format!("kb-{i}"),
            "store-b",
            &format!("rk-{i}"),
            None,
        ))
        .await;
    }
    for p in purchases(150, 200) {
        a.post(&p).await;
    }
    let head_a = a.get("/v1/sites").await.1["head"].as_i64().unwrap_or(-1);
    b.wait_for("/v1/sites", "caught up with A", |v| {
        v["peers"][0]["applied"].as_i64() == Some(head_a)
    })
    .await;
    let head_b = b.get("/v1/sites").await.1["head"].as_i64().unwrap_or(-1);
    a.wait_for("/v1/sites", "caught up with B", |v| {
        v["peers"][0]["applied"].as_i64() == Some(head_b)
    })
    .await;

    // Exactly one record per transaction on each site: 200 purchases + 20 returns.
    for site in [&a, &b] {
        let (_, stats) = site.get("/v1/stats").await;
        assert_eq!(
            stats["stored"]["transactions"], 220,
            "{}: {stats}",
            site.name
        );
    }
    // The card states agree: every purchase counted once on both sides.
    for card in 0..7 {
        let path = format!("/v1/entities/card/card-{card}");
        let (_, fa) = a.get(&path).await;
        let (_, fb) = b.get(&path).await;
        assert!(
            fa["features"]["card.tx_count"].as_f64().unwrap_or(0.0) > 0.0,
            "{fa}"
        );
        assert_eq!(
            fa["features"]["card.tx_count"], fb["features"]["card.tx_count"],
            "card-{card}"
        );
    }
    let link = b.link_state().await;
    assert_eq!(link["duplicates"], 0, "{link}");
}
