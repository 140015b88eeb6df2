//! HTTPS with `--tls-cert`/`--tls-key`, over real TLS with a private CA made for the test: the
//! API, a WebSocket alert stream (wss://), the sign-in cookie marked Secure and a graceful
//! shutdown with connections open; clients trusting the CA (`--ca-cert`: the HTTP client, the
//! simulator and the load generator) get through, a client that does not trust it and a
//! plain-HTTP client are refused; sites replicate over https:// with `--peer-ca-cert`; a
//! missing key or a certificate without its key stops the start with a clear error.

mod helpers;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use helpers::certs::{self, Certificates};
use helpers::{spawn_app_with, TestApp, ADMIN_KEY};
use ringfence::client::HttpClient;
use ringfence::config::{Secret, ServeArgs, Settings};
use ringfence::startup::Application;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A server for 127.0.0.1 and localhost, its CA, in `dir`.
fn certificates(dir: &std::path::Path) -> Certificates {
    certs::make(dir, "https", "IP:127.0.0.1,DNS:localhost")
}

/// A node serving HTTPS with `certs`; its client trusts their CA.
async fn spawn_https(data: &std::path::Path, certs: &Certificates) -> TestApp {
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    let mut app = spawn_app_with(data, |a| {
        a.tls_cert = Some(cert);
        a.tls_key = Some(key);
    })
    .await;
    app.client = HttpClient::new()
        .with_ca_cert(&certs.ca)
        .expect("CA")
        .with_timeout(Duration::from_secs(20))
        .with_bearer(ADMIN_KEY);
    app
}

/// Two transactions of one device shared by two users: the second raises a `ring` alert.
fn ring(user: &str, card: &str) -> Value {
    json!({"user_id": user, "card_id": card, "device_id": "dev-https", "amount": 150.0, "merchant": "Online Store"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_streams_and_sign_in_work_over_https_and_untrusting_clients_are_refused() {
    let certs_dir = tempfile::tempdir().expect("dir");
    let certs = certificates(certs_dir.path());
    let data = tempfile::tempdir().expect("dir");
    let app = spawn_https(data.path(), &certs).await;
    assert!(app.base.starts_with("https://127.0.0.1:"), "{}", app.base);

    let (status, health) = app.get("/healthz").await;
    assert_eq!(status, 200, "{health}");

    // wss://: the alert stream, through a TLS session that trusts the CA.
    let addr = app.base.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("tcp");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(
        ringfence::tls::client_config(Some(&certs.ca)).expect("client config"),
    ))
    .connect(
        rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name"),
        tcp,
    )
    .await
    .expect("TLS handshake");
    let mut request = format!("wss://{addr}/v1/stream/alerts")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_KEY}").parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("websocket handshake over TLS");

    assert_eq!(
        app.post_json("/transaction", &ring("h-1", "c-1")).await.0,
        200
    );
    let (status, d) = app.post_json("/transaction", &ring("h-2", "c-2")).await;
    assert_eq!(status, 200, "{d}");
    assert_ne!(d["decision"], "approve", "{d}");
    let alert = loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an alert within 10 s")
            .expect("stream open")
            .expect("frame");
        if let Message::Text(text) = frame {
            break serde_json::from_str::<Value>(&text).expect("json");
        }
    };
    assert_eq!(alert["transaction_id"], d["transaction_id"], "{alert}");

    // Served over TLS, the session cookie is Secure without --public-url.
    let password = app.create_user("ana", "analyst").await;
    let login = app
        .client
        .post(
            &app.url("/v1/auth/login"),
            "application/json",
            json!({"username": "ana", "password": password}).to_string(),
        )
        .await
        .expect("login");
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login.header("set-cookie").expect("a session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");

    // A client with only the system's roots does not trust the private CA.
    let untrusting = HttpClient::new().with_timeout(Duration::from_secs(10));
    let e = untrusting
        .get(&app.url("/healthz"))
        .await
        .expect_err("an unknown CA is refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = app.base.replacen("https://", "http://", 1);
    let e = untrusting
        .get(&format!("{plain}/healthz"))
        .await
        .expect_err("plain HTTP is not served");
    assert!(matches!(e.kind(), "transport" | "body"), "{e}");
    // The server still serves after those failed handshakes.
    assert_eq!(app.get("/healthz").await.0, 200);

    // The simulator sends to an https:// target with --ca-cert.
    let sim = ringfence::simulate::SimulateArgs {
        target: Some(app.base.clone()),
        ca_cert: Some(certs.ca.clone()),
        api_key: Some(Secret::new(ADMIN_KEY)),
        count: Some(20),
        tps: 200.0,
        ..ringfence::simulate::SimulateArgs::default()
    };
    ringfence::simulate::run(sim)
        .await
        .expect("simulate over https");
    let (_, stats) = app.get("/v1/stats").await;
    let stored = stats["stored"]["transactions"].as_u64().unwrap_or(0);
    assert!(
        stored >= 22,
        "the simulator's 20 and the two above: {stats}"
    );

    // The load generator too.
    let bench = ringfence::bench::BenchArgs {
        target: Some(app.base.clone()),
        ca_cert: Some(certs.ca.clone()),
        api_key: Some(Secret::new(ADMIN_KEY)),
        duration: 0.5,
        warmup: 0.0,
        concurrency: 2,
        ..ringfence::bench::BenchArgs::default()
    };
    let report = ringfence::bench::run_http(&bench)
        .await
        .expect("bench over https");
    assert!(report.requests > 0, "{}", report.to_text());
    assert!(report.errors.is_empty(), "{}", report.to_text());

    // Graceful shutdown with the socket open: the server closes it and stops.
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("shutdown within 20 s with a wss:// client connected");
    let _ = socket.close(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_replicate_over_https_with_the_peers_ca() {
    let certs_dir = tempfile::tempdir().expect("dir");
    let certs = certificates(certs_dir.path());
    // Site b first, so a can name it as its peer; b pulls nothing (no peers).
    let b_dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    let mut b = spawn_app_with(b_dir.path(), |a| {
        a.site = Some("store-b".into());
        a.tls_cert = Some(cert);
        a.tls_key = Some(key);
    })
    .await;
    b.client = HttpClient::new()
        .with_ca_cert(&certs.ca)
        .expect("CA")
        .with_bearer(ADMIN_KEY);
    let a_dir = tempfile::tempdir().expect("dir");
    let (peer, ca) = (b.base.clone(), certs.ca.clone());
    let a = spawn_app_with(a_dir.path(), |args| {
        args.site = Some("store-a".into());
        args.peers = vec![peer];
        args.peer_key = Some(Secret::new(ADMIN_KEY));
        args.peer_ca_cert = Some(ca);
    })
    .await;
    let (status, d) = b
        .post_json(
            "/v1/transactions",
            &json!({"transaction_id": "over-tls-1", "amount": 12.5, "user_id": "u-tls", "card_id": "c-tls"}),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = a.get("/v1/transactions/over-tls-1").await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "site a never received b's record over https"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn unusable_certificate_settings_stop_the_start() {
    let certs_dir = tempfile::tempdir().expect("dir");
    let certs = certificates(certs_dir.path());
    let data = tempfile::tempdir().expect("dir");
    let base = || ServeArgs {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        data: Some(data.path().to_owned()),
        card_hash_key: Some(Secret::new("test-card-hash-key-0123456789abcdef")),
        ..ServeArgs::default()
    };
    // A certificate without its key.
    let e = Settings::resolve(&ServeArgs {
        tls_cert: Some(certs.cert.clone()),
        ..base()
    })
    .expect_err("cert without key");
    assert!(e.to_string().contains("tls_key"), "{e}");
    // The CA's key is not the server certificate's key.
    let ca_key = certs_dir.path().join("https-ca.key");
    let settings = Settings::resolve(&ServeArgs {
        tls_cert: Some(certs.cert.clone()),
        tls_key: Some(ca_key),
        ..base()
    })
    .expect("settings");
    let e = match Application::build(settings).await {
        Ok(_) => panic!("started with a key that does not match the certificate"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("https"), "{e}");
    // A key file that is not there is named.
    let settings = Settings::resolve(&ServeArgs {
        tls_cert: Some(certs.cert.clone()),
        tls_key: Some(certs_dir.path().join("nowhere.key")),
        ..base()
    })
    .expect("settings");
    let e = match Application::build(settings).await {
        Ok(_) => panic!("started without a key"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("nowhere.key"), "{e}");
}

#[test]
fn the_demo_serves_https_and_its_traffic_trusts_the_ca() {
    let certs_dir = tempfile::tempdir().expect("dir");
    let certs = certificates(certs_dir.path());
    let data = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringfence"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "3",
            "--tps",
            "50",
        ])
        .arg("--tls-cert")
        .arg(&certs.cert)
        .arg("--tls-key")
        .arg(&certs.key)
        .arg("--ca-cert")
        .arg(&certs.ca)
        .arg("--data")
        .arg(data.path())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("dashboard   https://127.0.0.1:"),
        "{stdout}"
    );
    let ticks: Vec<&str> = stdout.lines().filter(|l| l.contains("tx/s |")).collect();
    assert!(
        ticks.iter().any(|l| !l.contains(" 0 tx/s")),
        "traffic flowed over https: {stdout}"
    );
}
