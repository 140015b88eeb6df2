//! `ringfence demo --stores`: two store sites in one process, each its own engine, data
//! directory and HTTP server, replicating with each other over loopback exactly as two
//! `ringfence serve --site` processes would; simulated tills at both send purchases and
//! returns, honest and fraudulent, and a line a second says what each store decided.
//!
//! The tills' traffic, by share of actions:
//! - purchases at either store, most with the customer's face photo;
//! - honest returns by the buyer, with a photo, at the store of purchase or the other one;
//! - the story: the buyer returns at one store with a photo while a fraudster claims
//!   the same receipt at the other store without one, at the same moment;
//! - a receipt already returned, claimed again at the other store (a duplicate);
//! - returns without any receipt of a high-value item, and returns by someone other than the
//!   buyer.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{DemoArgs, DemoError};
use crate::auth::keys::ApiKey;
use crate::auth::Role;
use crate::client::HttpClient;
use crate::config::{ServeArgs, Settings};
use crate::startup::{shutdown_signal, Application};

/// The face the tills photograph for honest customers (public domain; see assets/).
const FACE: &[u8] = include_bytes!("../../assets/demo-face.jpg");
const STORES: [&str; 2] = ["store-a", "store-b"];
/// Card-hash key both demo sites share (sites must tokenise cards alike).
const DEMO_KEY: &str = "ringfence-demo-stores-shared-card-key";

/// (sku, price, has a serial number)
const CATALOG: &[(&str, f64, bool)] = &[
    ("tshirt-basic", 14.99, false),
    ("jeans-slim", 59.0, false),
    ("sneakers-run", 89.5, false),
    ("jacket-rain", 129.0, false),
    ("headphones-nc", 249.0, true),
    ("phone-x12", 899.0, true),
    ("tablet-10", 449.0, true),
];

/// A purchase the tills remember, for returns.
struct Receipt {
    id: String,
    store: usize,
    customer: String,
    items: Vec<Value>,
    amount: f64,
    returned: bool,
}

/// What one store decided, for the line a second.
#[derive(Default, Clone, Copy)]
struct Tally {
    purchases: u64,
    returns_ok: u64,
    returns_flagged: u64,
    returns_blocked: u64,
}

/// A free port at `ip`, `preferred` if it is free.
fn port_near(ip: std::net::IpAddr, preferred: u16) -> Result<SocketAddr, DemoError> {
    if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, preferred)) {
        return Ok(l.local_addr()?);
    }
    Ok(TcpListener::bind(SocketAddr::new(ip, 0))?.local_addr()?)
}

async fn build_site(
    args: &DemoArgs,
    name: &str,
    listen: SocketAddr,
    peer: SocketAddr,
    peer_key: &ApiKey,
    data: &Path,
    rules: &Path,
) -> Result<Application, DemoError> {
    let serve = ServeArgs {
        peer_key: Some(crate::config::Secret::new(peer_key.expose())),
        admin_password: args.admin_password.clone(),
        listen: Some(listen),
        data: Some(data.join(name)),
        rules: Some(rules.to_owned()),
        card_hash_key: Some(crate::config::Secret::new(DEMO_KEY)),
        site: Some(name.to_owned()),
        peers: vec![format!("http://{peer}")],
        ..ServeArgs::default()
    };
    Ok(Application::build(Settings::resolve(&serve)?).await?)
}

/// Runs the two-store demo until Ctrl-C or `--duration`.
pub async fn run(args: DemoArgs, data: &Path, rules: &Path) -> Result<(), DemoError> {
    let ip = args.listen.ip();
    let addr_a = port_near(ip, args.listen.port())?;
    let addr_b = port_near(ip, addr_a.port().wrapping_add(1).max(1024))?;
    // Each site keeps its own users and keys, so the demo makes its two keys itself and gives
    // both sites each: the one the sites' followers send to each other's feed, and the one
    // its tills (and its status line, which reads /v1/sites) use.
    let random = |e: getrandom::Error| DemoError::Access(e.to_string());
    let peer_key = ApiKey::generate().map_err(random)?;
    let tills_key = ApiKey::generate().map_err(random)?;
    let mut site_a = build_site(&args, STORES[0], addr_a, addr_b, &peer_key, data, rules).await?;
    let mut site_b = build_site(&args, STORES[1], addr_b, addr_a, &peer_key, data, rules).await?;
    let mut logins = Vec::new();
    for site in [&mut site_a, &mut site_b] {
        for (key, name) in [(&peer_key, "demo peer site"), (&tills_key, "demo tills")] {
            site.auth()
                .register_key(key, name, Role::Analyst, "demo")
                .await
                .map_err(|e| DemoError::Access(e.to_string()))?;
        }
        logins.push(super::sign_in_line(site.take_first_login()));
    }
    let bases = [
        format!("http://{}", site_a.local_addr()),
        format!("http://{}", site_b.local_addr()),
    ];
    println!("Ringfence demo --stores: two store sites replicating with each other, simulated tills at both");
    for ((store, base), login) in STORES.iter().zip(&bases).zip(&logins) {
        println!("  {store}   till page {base}/pos?store={store}   links {base}/v1/sites   alerts {base}/v1/alerts");
        println!("           dashboard {base}/   {login}");
    }
    println!(
        "  rules      {} (both sites; hot-reloaded)",
        rules.display()
    );
    println!("  data dir   {}", data.display());
    println!(
        "Traffic: {} till actions/s across both stores. One line a second; Ctrl-C to stop.",
        args.tps.unwrap_or(5.0)
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for app in [site_a, site_b] {
        let mut rx = stop_rx.clone();
        servers.push(tokio::spawn(app.run_until(async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    let duration = args.duration.map(Duration::from_secs);
    let result = tokio::select! {
        r = tills(&bases, tills_key.expose(), args.seed, args.tps.unwrap_or(5.0), duration) => r,
        _ = shutdown_signal() => Ok(()),
    };
    let _ = stop_tx.send(true);
    for s in servers {
        if let Ok(Err(e)) = s.await {
            return Err(e.into());
        }
    }
    result
}

/// The simulated tills: actions at `tps` for `duration` (or forever), a line a second.
async fn tills(
    bases: &[String; 2],
    key: &str,
    seed: u64,
    tps: f64,
    duration: Option<Duration>,
) -> Result<(), DemoError> {
    if !(tps.is_finite() && tps > 0.0 && tps <= 1000.0) {
        return Err(DemoError::Feed("--tps must be within 0..=1000".into()));
    }
    let client = HttpClient::new()
        .with_timeout(Duration::from_secs(10))
        .with_bearer(key);
    let face = Arc::new(STANDARD.encode(FACE));
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut receipts: Vec<Receipt> = Vec::new();
    let mut tally = [Tally::default(); 2];
    let mut next = 0u64;
    let began = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / tps));
    let mut report = tokio::time::interval(Duration::from_secs(1));
    report.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = report.tick() => {
                print_line(&client, bases, &tally, began).await;
                continue;
            }
        }
        if duration.is_some_and(|d| began.elapsed() >= d) {
            print_line(&client, bases, &tally, began).await;
            return Ok(());
        }
        next += 2; // a story sends two returns: ids n and n + 1
        let roll: f64 = rng.random();
        let open: Vec<usize> = (0..receipts.len())
            .filter(|&i| !receipts[i].returned)
            .collect();
        let done: Vec<usize> = (0..receipts.len())
            .filter(|&i| receipts[i].returned)
            .collect();
        let sends: Vec<(usize, Value)> = if roll < 0.5 || open.len() < 5 {
            let store = rng.random_range(0..2);
            let r = new_receipt(&mut rng, next, store);
            let body = json!({
                "kind": "purchase", "store_id": STORES[store],
                "terminal_id": format!("{}-till-{}", STORES[store], rng.random_range(1..4)),
                "receipt_id": r.id, "customer_id": r.customer,
                "card_id": format!("card-{}", r.customer), "amount": r.amount,
                "items": r.items,
                "photo": rng.random_bool(0.85).then(|| face.as_str()),
            });
            receipts.push(r);
            if receipts.len() > 2000 {
                receipts.drain(..1000);
            }
            vec![(store, body)]
        } else if roll < 0.75 {
            // An honest return by the buyer, with a photo, often at the store of purchase.
            let i = open[rng.random_range(0..open.len())];
            let r = &mut receipts[i];
            r.returned = true;
            let store = if rng.random_bool(0.7) {
                r.store
            } else {
                1 - r.store
            };
            vec![(store, return_body(r, store, &r.customer, Some(&face), next))]
        } else if roll < 0.85 {
            // The story: buyer at one store with a photo, fraudster at the other without.
            let i = open[rng.random_range(0..open.len())];
            let r = &mut receipts[i];
            r.returned = true;
            let honest = r.store;
            vec![
                (
                    honest,
                    return_body(r, honest, &r.customer, Some(&face), next),
                ),
                (
                    1 - honest,
                    return_body(r, 1 - honest, &r.customer, None, next + 1),
                ),
            ]
        } else if roll < 0.92 && !done.is_empty() {
            // A receipt already returned, claimed again at the other store.
            let r = &receipts[done[rng.random_range(0..done.len())]];
            let store = 1 - r.store;
            vec![(store, return_body(r, store, &r.customer, None, next))]
        } else if roll < 0.96 {
            // No receipt at all, a high-value item, no photo.
            let store = rng.random_range(0..2);
            vec![(
                store,
                json!({
                    "transaction_id": format!("ret-{next}-{}", STORES[store]),
                    "kind": "return", "store_id": STORES[store],
                    "terminal_id": format!("{}-till-9", STORES[store]),
                    "customer_id": format!("walk-in-{}", rng.random_range(0..50)),
                    "amount": 899.0,
                    "items": [{"sku": "phone-x12", "serial": format!("sn-unknown-{next}"), "price": 899.0}],
                }),
            )]
        } else {
            // Someone other than the buyer, with a photo.
            let i = open[rng.random_range(0..open.len())];
            let r = &mut receipts[i];
            r.returned = true;
            let store = rng.random_range(0..2);
            let other = format!("cust-{}", rng.random_range(1000..2000));
            vec![(store, return_body(r, store, &other, Some(&face), next))]
        };
        // Sent at the same moment when there are two (the story).
        let posts = sends.into_iter().map(|(store, body)| {
            let client = client.clone();
            let url = format!("{}/v1/transactions", bases[store]);
            async move { (store, client.post_json(&url, &body).await) }
        });
        for (store, res) in futures_join(posts).await {
            let Ok(res) = res else { continue };
            let Ok(d) = res.json::<Value>() else { continue };
            let kind = d["transaction_id"].as_str().unwrap_or("");
            let t = &mut tally[store];
            match (kind.starts_with("ret-"), d["decision"].as_str()) {
                (false, _) => t.purchases += 1,
                (true, Some("approve")) => t.returns_ok += 1,
                (true, Some("block")) => t.returns_blocked += 1,
                (true, _) => t.returns_flagged += 1,
            }
        }
    }
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

fn new_receipt(rng: &mut SmallRng, n: u64, store: usize) -> Receipt {
    let lines = rng.random_range(1..=3);
    let mut items = Vec::with_capacity(lines);
    let mut amount = 0.0;
    for l in 0..lines {
        let (sku, price, serial) = CATALOG[rng.random_range(0..CATALOG.len())];
        amount += price;
        items.push(if serial {
            json!({"sku": sku, "serial": format!("sn-{n}-{l}"), "price": price})
        } else {
            json!({"sku": sku, "price": price})
        });
    }
    Receipt {
        id: format!("{}-rcpt-{n}", STORES[store]),
        store,
        customer: format!("cust-{}", rng.random_range(0..400)),
        items,
        amount: (amount * 100.0_f64).round() / 100.0,
        returned: false,
    }
}

fn return_body(r: &Receipt, store: usize, customer: &str, photo: Option<&str>, n: u64) -> Value {
    json!({
        "transaction_id": format!("ret-{n}-{}", STORES[store]),
        "kind": "return", "store_id": STORES[store],
        "terminal_id": format!("{}-till-{}", STORES[store], 1 + n % 3),
        "receipt_id": r.id, "customer_id": customer, "amount": r.amount,
        "items": r.items, "photo": photo,
    })
}

async fn print_line(client: &HttpClient, bases: &[String; 2], tally: &[Tally; 2], began: Instant) {
    let mut parts = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        let t = tally[i];
        let link = match client.get(&format!("{base}/v1/sites")).await {
            Ok(r) => r.json::<Value>().unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let peer = &link["peers"][0];
        let lag = peer["lag_ms"]["p99"]
            .as_f64()
            .map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        parts.push(format!(
            "{}: {} purchases, returns {} ok / {} flagged / {} blocked, lag p99 {lag}{}",
            STORES[i],
            t.purchases,
            t.returns_ok,
            t.returns_flagged,
            t.returns_blocked,
            if peer["connected"] == true {
                ""
            } else {
                " (link down)"
            }
        ));
    }
    println!("[{:>4}s] {}", began.elapsed().as_secs(), parts.join(" | "));
}
