//! `--postgres` over TLS against a real PostgreSQL that serves TLS with a certificate from a
//! private CA and accepts TCP sessions only over TLS (`hostssl`; plain ones are rejected by
//! pg_hba.conf): `sslmode=verify-full` with `--postgres-ca-cert` runs a node (ingest, read back,
//! a second node rebuilds from the records); a plain session is refused by the server; the
//! certificate is checked as each mode says (`verify-full` names the host, `verify-ca` only the
//! chain, `require` without a CA only encrypts); an unknown `sslmode` is refused without
//! quoting the password.

mod helpers;

use helpers::certs;
use helpers::services::PostgresServer;
use helpers::spawn_app_with;
use ringfence::config::Secret;
use ringfence::store::postgres::PostgresStore;
use ringfence::store::postgres_tls::{PgTls, SslMode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_on_postgres_over_verified_tls_and_plain_sessions_are_refused() {
    let certs_dir = tempfile::tempdir().expect("dir");
    // Valid for 127.0.0.1 only: `localhost` is a name the certificate does not carry.
    let pg = certs::make(certs_dir.path(), "pg", "IP:127.0.0.1");
    let other = certs::make(certs_dir.path(), "other", "IP:127.0.0.1");
    let server = PostgresServer::start_with_tls(Some((&pg.cert, &pg.key)));
    let plain_url = server.url();
    let url = format!("{plain_url}?sslmode=verify-full");

    // The server refuses a session without TLS.
    let refused = tokio_postgres::connect(&plain_url, tokio_postgres::NoTls)
        .await
        .err()
        .map(|e| format!("{e} {:?}", e.as_db_error().map(|d| d.message().to_owned())))
        .expect("a plain session is refused");
    assert!(
        refused.contains("pg_hba.conf") && refused.contains("no encryption"),
        "{refused}"
    );

    // A node over verify-full TLS: ingest, read back, label.
    let dir_a = tempfile::tempdir().expect("dir");
    let (u, ca) = (url.clone(), pg.ca.clone());
    let a = spawn_app_with(dir_a.path(), |args| {
        args.postgres = Some(Secret::new(u));
        args.postgres_ca_cert = Some(ca);
    })
    .await;
    let ring = |id: &str, user: &str| json!({"transaction_id": id, "user_id": user, "card_id": format!("card-{user}"), "device_id": "device-pg-tls", "amount": 150.0, "merchant": "Online Store"});
    assert_eq!(
        a.post_json("/transaction", &ring("pgtls-1", "u1")).await.0,
        200
    );
    let (status, second) = a.post_json("/transaction", &ring("pgtls-2", "u2")).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["decision"], "approve", "{second}");
    let (status, label) = a
        .post_json(
            "/v1/labels",
            &json!({"transaction_id": "pgtls-2", "fraud": true}),
        )
        .await;
    assert_eq!(status, 201, "{label}");
    a.stop().await;

    // The records are in PostgreSQL, read over our own TLS connector.
    let tls = PgTls::for_mode(SslMode::VerifyFull, Some(&pg.ca))
        .expect("tls")
        .expect("a connector");
    let (client, conn) = tokio_postgres::connect(&plain_url, tls)
        .await
        .expect("connect over TLS");
    tokio::spawn(conn);
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "this session is encrypted");
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM transactions WHERE id LIKE 'pgtls-%'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 2);

    // A second node on the same database, over TLS, rebuilds from the records.
    let dir_b = tempfile::tempdir().expect("dir");
    let (u, ca) = (url.clone(), pg.ca.clone());
    let b = spawn_app_with(dir_b.path(), |args| {
        args.postgres = Some(Secret::new(u));
        args.postgres_ca_cert = Some(ca);
    })
    .await;
    let (status, tx) = b.get("/v1/transactions/pgtls-2").await;
    assert_eq!(status, 200, "{tx}");
    assert_eq!(tx["decision"]["decision"], second["decision"], "{tx}");
    let (status, device) = b.get("/v1/entities/device/device-pg-tls").await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["features"]["device.users_24h"], 2.0, "{device}");
    b.stop().await;

    // What each mode checks, connecting the store directly.
    let with = |host: &str, mode: &str| {
        format!(
            "postgres://postgres:pw-s3cret@{host}:{}/postgres?sslmode={mode}",
            server.port
        )
    };
    let connect = |url: String, ca: Option<std::path::PathBuf>| async move {
        PostgresStore::connect_with(&url, ca.as_deref())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // The right CA and the host the certificate names.
    connect(with("127.0.0.1", "verify-full"), Some(pg.ca.clone()))
        .await
        .expect("verify-full");
    // A CA that did not sign it.
    let e = connect(with("127.0.0.1", "verify-full"), Some(other.ca.clone()))
        .await
        .expect_err("another CA");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    assert!(!e.contains("pw-s3cret"), "{e}");
    // The system's roots do not know the private CA.
    let e = connect(with("127.0.0.1", "verify-ca"), None)
        .await
        .expect_err("system roots");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // `localhost` is not in the certificate: verify-full refuses, verify-ca accepts.
    let e = connect(with("localhost", "verify-full"), Some(pg.ca.clone()))
        .await
        .expect_err("name mismatch");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    connect(with("localhost", "verify-ca"), Some(pg.ca.clone()))
        .await
        .expect("verify-ca ignores the name");
    // require without a CA encrypts without checking the issuer; with the wrong CA it checks.
    connect(with("127.0.0.1", "require"), None)
        .await
        .expect("require encrypts");
    connect(with("127.0.0.1", "require"), Some(other.ca.clone()))
        .await
        .expect_err("require with a CA checks it");
    // Without TLS the server says no (pg_hba), and the error hides the password.
    let e = connect(with("127.0.0.1", "disable"), None)
        .await
        .expect_err("plain");
    assert!(e.contains("no encryption"), "{e}");
    assert!(!e.contains("pw-s3cret"), "{e}");
    // An sslmode we do not support is named, the URL is not.
    let e = connect(with("127.0.0.1", "allow"), None)
        .await
        .expect_err("allow");
    assert!(e.contains("sslmode") && !e.contains("pw-s3cret"), "{e}");
}
