//! `rediss://` against a real Redis serving TLS with a private certificate authority: a node
//! given the CA (`--redis-ca-cert`) runs in shared mode over TLS, with a password (shared log,
//! alerts, and a `ringfence worker` consuming the transactions stream); a node
//! without it refuses the server's certificate at start, and neither error repeats the
//! password.

mod helpers;

use std::path::Path;
use std::process::Command;

use helpers::services::{free_port, RedisServer};
use helpers::{spawn_app_with, spawn_worker_with};
use ringfence::config::{Secret, ServeArgs, Settings};
use ringfence::startup::Application;
use serde_json::Value;

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the `openssl` CLI.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian package `openssl`) is needed for the TLS test");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=ringfence-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_runs_over_tls_and_checks_the_servers_certificate() {
    let certs = tempfile::tempdir().expect("dir");
    certificates(certs.path());
    let file = |name: &str| certs.path().join(name).to_string_lossy().into_owned();
    let tls_port = free_port().to_string();
    let server = RedisServer::start_with(&[
        "--requirepass",
        "tls-s3cret",
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &file("server.crt"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://:tls-s3cret@127.0.0.1:{tls_port}");

    // With the CA: the node decides through the shared log over TLS and its alerts land.
    let dir = tempfile::tempdir().expect("dir");
    let ca = certs.path().join("ca.crt");
    let app = spawn_app_with(dir.path(), |a| {
        a.redis = Some(Secret::new(url.clone()));
        a.redis_ca_cert = Some(ca.clone());
    })
    .await;
    let ring = |user: &str, card: &str| serde_json::json!({"user_id": user, "card_id": card, "device_id": "dev-tls", "amount": 150.0, "merchant": "Online Store"});
    assert_eq!(
        app.post_json("/transaction", &ring("tls-1", "c1")).await.0,
        200
    );
    let (status, d) = app.post_json("/transaction", &ring("tls-2", "c2")).await;
    assert_eq!(status, 200, "{d}");
    assert_ne!(d["decision"], "approve", "{d}");
    assert!(
        d.get("degraded").is_none(),
        "decided through the shared log: {d}"
    );

    // The same server's plain port shows what went over TLS.
    let mut con = redis::Client::open(format!("redis://:tls-s3cret@127.0.0.1:{}", server.port))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let logged: usize = redis::cmd("XLEN")
        .arg("ringfence:log")
        .query_async(&mut con)
        .await
        .expect("XLEN");
    assert_eq!(logged, 4, "rules, models and the two transactions");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let alert: Option<String> = redis::cmd("GET")
            .arg("fraud:alerts:sender:tls-2")
            .query_async(&mut con)
            .await
            .expect("GET");
        if let Some(alert) = alert {
            let alert: Value = serde_json::from_str(&alert).expect("json");
            assert_eq!(alert["alert_type"], "ring");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the alert never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.stop().await;

    // Streams too: a `ringfence worker` consumes the transactions stream over TLS and writes
    // its decision to the decisions stream.
    let worker_dir = tempfile::tempdir().expect("dir");
    let stream = ringfence::ingest::redis_stream::StreamArgs {
        stream: "transactions".into(),
        group: Some("scorers".into()),
        consumer: Some("tls-worker".into()),
        decisions_stream: "decisions".into(),
        dead_letter_stream: None,
        batch: 10,
        claim_idle_ms: 30_000,
    };
    let (u, c) = (url.clone(), ca.clone());
    let worker = spawn_worker_with(worker_dir.path(), stream.resolve(), |a| {
        a.redis = Some(Secret::new(u));
        a.redis_ca_cert = Some(c);
    })
    .await;
    let _: String = redis::cmd("XADD")
        .arg("transactions")
        .arg("*")
        .arg("transaction_id")
        .arg("tls-stream-1")
        .arg("user_id")
        .arg("tls-3")
        .arg("amount")
        .arg("12.50")
        .query_async(&mut con)
        .await
        .expect("XADD");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let decided: usize = redis::cmd("XLEN")
            .arg("decisions")
            .query_async(&mut con)
            .await
            .expect("XLEN");
        if decided == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never decided the stream entry over TLS"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, stored) = worker.get("/v1/transactions/tls-stream-1").await;
    assert_eq!(status, 200, "{stored}");
    worker.stop().await;

    // Without the CA the server's certificate is not trusted: the node does not start, and
    // the error does not quote the password.
    let other = tempfile::tempdir().expect("dir");
    let args = ServeArgs {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        data: Some(other.path().to_owned()),
        card_hash_key: Some(Secret::new("test-card-hash-key-0123456789abcdef")),
        redis: Some(Secret::new(url.clone())),
        ..ServeArgs::default()
    };
    let settings = Settings::resolve(&args).expect("settings");
    let refused = match Application::build(settings).await {
        Ok(_) => panic!("a node trusted a certificate from an unknown CA"),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("redis"), "{refused}");
    assert!(!refused.contains("tls-s3cret"), "{refused}");

    // A CA file for a plain redis:// URL is a configuration error, said as such.
    let args = ServeArgs {
        redis: Some(Secret::new("redis://:tls-s3cret@127.0.0.1:6379")),
        redis_ca_cert: Some(ca),
        ..ServeArgs::default()
    };
    let e = Settings::resolve(&args).err().map(|e| e.to_string());
    let e = e.unwrap_or_default();
    assert!(e.contains("rediss://"), "{e}");
    assert!(!e.contains("tls-s3cret"), "{e}");
}
