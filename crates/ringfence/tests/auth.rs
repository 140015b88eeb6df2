//! Access control through the real server: every route of the API behind its role, sign-in
//! with the session cookie, API keys created, used and revoked, the same-origin rule for
//! signed-in changes, the sign-in throttle, what the tables hold, and PostgreSQL mode sharing
//! keys, users and sessions between nodes.

mod helpers;

use std::time::{Duration, Instant};

use bytes::Bytes;
use helpers::services::PostgresServer;
use helpers::{spawn_app_with, TestApp};
use hyper::Request;
use ringfence::auth::policy::{self, Access};
use ringfence::client::{HttpClient, HttpResponse};
use ringfence::config::Secret;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A client with no credentials of its own.
fn anonymous() -> HttpClient {
    HttpClient::new().with_timeout(Duration::from_secs(20))
}

/// Sends `method path` with `headers` and an optional JSON body, without credentials unless
/// the headers carry them.
async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> HttpResponse {
    let mut req = Request::builder().method(method).uri(app.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    anonymous()
        .send(req.body(body).expect("request"))
        .await
        .expect("send")
}

fn json_of(r: &HttpResponse) -> Value {
    r.json().unwrap_or(Value::Null)
}

/// Signs `user` in; returns the `rf_session=...` pair to send as a cookie, and the answer.
async fn login(app: &TestApp, user: &str, password: &str) -> (String, HttpResponse) {
    let r = send(
        app,
        "POST",
        "/v1/auth/login",
        &[],
        Some(&json!({"username": user, "password": password})),
    )
    .await;
    let cookie = r
        .header("set-cookie")
        .map(|c| c.split(';').next().unwrap_or("").to_owned())
        .unwrap_or_default();
    (cookie, r)
}

/// A concrete path for a route pattern: every `{param}` becomes `x`.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "x" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_that_is_not_public_answers_401_without_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let mut checked = 0;
    for (method, path) in ringfence::http::ROUTES {
        let pattern = if *path == "/ui/{file}" {
            "/ui/{*file}"
        } else {
            path
        };
        let url = concrete(path);
        let r = send(&app, &method.to_uppercase(), &url, &[], Some(&json!({}))).await;
        match policy::required(method, pattern) {
            Access::Public => assert_ne!(r.status, 401, "{method} {path} is public"),
            Access::Role(_) => {
                assert_eq!(r.status, 401, "{method} {url}: {}", r.text());
                let body = json_of(&r);
                assert_eq!(body["error"]["field"], "authorization", "{method} {url}");
                assert_eq!(body["error"]["code"], "unauthorized", "{method} {url}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 25, "only {checked} routes checked");
    // A route nobody wrote yet is closed too, and so is a wrong method on a public one.
    assert_eq!(
        send(&app, "GET", "/v1/not-yet", &[], None).await.status,
        401
    );
    assert_eq!(
        send(&app, "DELETE", "/healthz", &[], None).await.status,
        401
    );
    // A made-up key, a malformed header and an unknown scheme are refused alike.
    for header in [
        (
            "authorization",
            "Bearer rf_0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
        ("authorization", "Basic YWRtaW46YWRtaW4="),
        ("x-api-key", "not-a-key"),
        ("cookie", "rf_session=forged"),
    ] {
        let r = send(&app, "GET", "/v1/alerts", &[header], None).await;
        assert_eq!(r.status, 401, "{header:?}: {}", r.text());
    }
    app.stop().await;
}

#[tokio::test]
async fn roles_open_what_they_should_and_nothing_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let ingest = app.create_key("till 1", "ingest").await;
    let analyst = app.create_key("notebook", "analyst").await;
    let bearer = |k: &str| format!("Bearer {k}");

    let tx = json!({"transaction_id": "t-1", "user_id": "u", "amount": 10});
    let r = send(
        &app,
        "POST",
        "/v1/transactions",
        &[("authorization", &bearer(&ingest))],
        Some(&tx),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // x-api-key works the same.
    let r = send(
        &app,
        "GET",
        "/v1/transactions/t-1",
        &[("x-api-key", &ingest)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(&app, "GET", "/v1/alerts", &[("x-api-key", &ingest)], None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let body = json_of(&r);
    assert_eq!(body["error"]["field"], "authorization");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("analyst"),
        "{body}"
    );

    // An analyst reads and labels, and may send transactions too, but not change rules or keys.
    for path in [
        "/v1/alerts",
        "/v1/stats",
        "/metrics",
        "/v1/rules",
        "/v1/features",
    ] {
        let r = send(&app, "GET", path, &[("x-api-key", &analyst)], None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let r = send(
        &app,
        "POST",
        "/v1/labels",
        &[("x-api-key", &analyst)],
        Some(&json!({"transaction_id": "t-1", "fraud": true})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let tx2 = json!({"transaction_id": "t-2", "user_id": "u", "amount": 10});
    let r = send(
        &app,
        "POST",
        "/v1/transactions",
        &[("x-api-key", &analyst)],
        Some(&tx2),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for (method, path) in [
        ("POST", "/v1/rules/reload"),
        ("POST", "/v1/models/reload"),
        ("GET", "/v1/keys"),
        ("GET", "/v1/users"),
    ] {
        let r = send(
            &app,
            method,
            path,
            &[("x-api-key", &analyst)],
            Some(&json!({})),
        )
        .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
    }
    // The admin may do everything.
    let (status, _) = app.get("/v1/keys").await;
    assert_eq!(status, 200);
    let (status, me) = app.get("/v1/auth/me").await;
    assert_eq!(status, 200);
    assert_eq!(me, json!({"name": "admin-key", "role": "admin"}));
    let r = send(&app, "GET", "/v1/auth/me", &[("x-api-key", &ingest)], None).await;
    assert_eq!(json_of(&r)["role"], "ingest");
    assert!(json_of(&r)["name"]
        .as_str()
        .unwrap_or("")
        .starts_with("key:"));
    app.stop().await;
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_that_works_until_sign_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let password = app.create_user("ana", "analyst").await;

    // Wrong password and unknown user: the same answer, which says nothing of which.
    let (_, wrong) = login(&app, "ana", "not her password").await;
    let (_, unknown) = login(&app, "nobody", "not her password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(json_of(&wrong), json_of(&unknown));
    assert_eq!(json_of(&wrong)["error"]["code"], "invalid_credentials");
    assert!(wrong.header("set-cookie").is_none());
    // Bad input names its field.
    let r = send(
        &app,
        "POST",
        "/v1/auth/login",
        &[],
        Some(&json!({"username": "ana"})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(json_of(&r)["error"]["field"], "password");
    let r = send(
        &app,
        "POST",
        "/v1/auth/login",
        &[],
        Some(&json!({"username": 5, "password": "x"})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(json_of(&r)["error"]["field"], "username");

    let (cookie, ok) = login(&app, "ana", &password).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(json_of(&ok), json!({"name": "ana", "role": "analyst"}));
    let set = ok.header("set-cookie").expect("cookie").to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    assert!(cookie.starts_with("rf_session="), "{cookie}");

    let me = send(&app, "GET", "/v1/auth/me", &[("cookie", &cookie)], None).await;
    assert_eq!(json_of(&me), json!({"name": "ana", "role": "analyst"}));
    let alerts = send(&app, "GET", "/v1/alerts", &[("cookie", &cookie)], None).await;
    assert_eq!(alerts.status, 200);
    let keys = send(&app, "GET", "/v1/keys", &[("cookie", &cookie)], None).await;
    assert_eq!(keys.status, 403, "an analyst is no admin");

    let origin = app.base.clone();
    let out = send(
        &app,
        "POST",
        "/v1/auth/logout",
        &[("cookie", &cookie), ("origin", &origin)],
        None,
    )
    .await;
    assert_eq!(out.status, 204, "{}", out.text());
    assert!(out.header("set-cookie").unwrap_or("").contains("Max-Age=0"));
    let after = send(&app, "GET", "/v1/auth/me", &[("cookie", &cookie)], None).await;
    assert_eq!(after.status, 401, "the session ended");
    app.stop().await;

    // Behind HTTPS (a --public-url, or a proxy saying so) the cookie is Secure.
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |a| {
        a.public_url = Some("https://fraud.example.com".into())
    })
    .await;
    let password = app.create_user("ana", "analyst").await;
    let (_, ok) = login(&app, "ana", &password).await;
    assert!(ok.header("set-cookie").unwrap_or("").contains("; Secure"));
    app.stop().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let password = app.create_user("ana", "analyst").await;
    let r = send(
        &app,
        "POST",
        "/v1/auth/login",
        &[("x-forwarded-proto", "https")],
        Some(&json!({"username": "ana", "password": password})),
    )
    .await;
    assert!(r.header("set-cookie").unwrap_or("").contains("; Secure"));
    app.stop().await;
}

#[tokio::test]
async fn signed_in_changes_and_websockets_must_come_from_this_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let tx = json!({"transaction_id": "t-1", "user_id": "u", "amount": 10});
    assert_eq!(app.post_json("/v1/transactions", &tx).await.0, 200);
    let password = app.create_user("ana", "analyst").await;
    let (cookie, _) = login(&app, "ana", &password).await;
    let label = json!({"transaction_id": "t-1", "fraud": true});
    let own = app.base.clone();

    for origin in [None, Some("http://evil.example"), Some("null")] {
        let mut headers = vec![("cookie", cookie.as_str())];
        if let Some(o) = origin {
            headers.push(("origin", o));
        }
        let r = send(&app, "POST", "/v1/labels", &headers, Some(&label)).await;
        assert_eq!(r.status, 403, "{origin:?}: {}", r.text());
        let body = json_of(&r);
        assert_eq!(body["error"]["code"], "cross_origin");
        assert_eq!(body["error"]["field"], "origin");
    }
    // A WebSocket handshake from another site's page, riding on the cookie.
    let r = send(
        &app,
        "GET",
        "/v1/alerts",
        &[
            ("cookie", &cookie),
            ("origin", "http://evil.example"),
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Reads need no origin; this server's own page may change things.
    let r = send(&app, "GET", "/v1/alerts", &[("cookie", &cookie)], None).await;
    assert_eq!(r.status, 200);
    let r = send(
        &app,
        "POST",
        "/v1/labels",
        &[("cookie", &cookie), ("origin", &own)],
        Some(&label),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // API keys are exempt: no browser sends them on another site's behalf.
    let key = app.create_key("labeller", "analyst").await;
    let r = send(
        &app,
        "POST",
        "/v1/labels",
        &[("x-api-key", &key)],
        Some(&label),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Another site's page cannot sign a browser in either.
    let r = send(
        &app,
        "POST",
        "/v1/auth/login",
        &[("origin", "http://evil.example")],
        Some(&json!({"username": "ana", "password": password})),
    )
    .await;
    assert_eq!(r.status, 403);
    app.stop().await;
}

#[tokio::test]
async fn keys_are_created_once_listed_without_secrets_and_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let (status, created) = app
        .post_json(
            "/v1/keys",
            &json!({"name": "gateway eu-1", "role": "ingest"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(key.starts_with(&format!("rf_{id}_")), "{created}");
    assert_eq!(created["role"], "ingest");
    assert_eq!(created["created_by"], "admin-key");

    let tx = |i: u32| json!({"transaction_id": format!("k-{i}"), "user_id": "u", "amount": 10});
    for i in 0..3 {
        let r = send(
            &app,
            "POST",
            "/v1/transactions",
            &[("x-api-key", &key)],
            Some(&tx(i)),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (_, list) = app.get("/v1/keys").await;
    let text = list.to_string();
    assert!(
        !text.contains(&key[20..]),
        "the secret is shown only once: {text}"
    );
    assert!(!text.contains("argon2"), "{text}");
    let listed = &list["keys"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["name"], "gateway eu-1");
    assert!(
        listed["last_used"].is_string(),
        "first use recorded: {listed}"
    );
    assert!(listed.get("revoked_at").is_none());

    // Bad requests name the field.
    for (body, field) in [
        (json!({"role": "ingest"}), "name"),
        (json!({"name": "x", "role": "root"}), "role"),
        (json!({"name": "x"}), "role"),
        (
            json!({"name": "x", "role": "ingest", "admin": true}),
            "admin",
        ),
    ] {
        let (status, err) = app.post_json("/v1/keys", &body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }

    let r = app
        .client
        .send(
            Request::delete(app.url(&format!("/v1/keys/{id}")))
                .body(Bytes::new())
                .expect("req"),
        )
        .await
        .expect("delete");
    assert_eq!(r.status, 204);
    let r = send(
        &app,
        "POST",
        "/v1/transactions",
        &[("x-api-key", &key)],
        Some(&tx(9)),
    )
    .await;
    assert_eq!(
        r.status,
        401,
        "a revoked key stops at once on its node: {}",
        r.text()
    );
    let (_, list) = app.get("/v1/keys").await;
    assert!(list["keys"][0]["revoked_at"].is_string(), "{list}");
    let r = app
        .client
        .send(
            Request::delete(app.url("/v1/keys/0000000000000000"))
                .body(Bytes::new())
                .expect("req"),
        )
        .await
        .expect("delete");
    assert_eq!(r.status, 404);
    app.stop().await;
}

#[tokio::test]
async fn the_tables_hold_only_hashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let password = app.create_user("ana", "analyst").await;
    let key = app.create_key("k", "ingest").await;
    let (cookie, _) = login(&app, "ana", &password).await;
    let token = cookie.trim_start_matches("rf_session=").to_owned();
    app.stop().await;

    let db = rusqlite::Connection::open(dir.path().join("ringfence.db")).expect("db");
    let dump = |sql: &str| -> Vec<String> {
        let mut stmt = db.prepare(sql).expect("prepare");
        stmt.query_map([], |r| r.get::<_, String>(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    let users = dump("SELECT name || ' ' || role || ' ' || password_hash FROM auth_users");
    let keys = dump("SELECT id || ' ' || name || ' ' || key_hash FROM auth_keys");
    let sessions = dump("SELECT token_hash || ' ' || user_name FROM auth_sessions");
    let everything = [&users[..], &keys[..], &sessions[..]].concat().join("\n");
    for secret in [&password, &key, &token] {
        assert!(
            !everything.contains(secret.as_str()),
            "plaintext stored:\n{everything}"
        );
    }
    assert!(!everything.contains(&key[20..]));
    let ana = users.iter().find(|u| u.starts_with("ana ")).expect("ana");
    assert!(ana.contains(" $argon2id$v=19$m=19456,t=2,p=1$"), "{ana}");
    assert!(
        users
            .iter()
            .any(|u| u.starts_with("admin admin $argon2id$")),
        "{users:?}"
    );
    assert!(keys[0].contains(" $argon2id$"), "{keys:?}");
    let expected: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sessions, vec![format!("{expected} ana")]);
}

#[tokio::test]
async fn repeated_wrong_passwords_are_slowed_per_user_and_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let password = app.create_user("ana", "analyst").await;
    let bob = app.create_user("bob", "analyst").await;
    for i in 0..ringfence::auth::throttle::FREE_FAILURES {
        let (_, r) = login(&app, "ana", "guess").await;
        assert_eq!(r.status, 401, "failure {i} is answered normally");
    }
    let (_, r) = login(&app, "ana", &password).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let wait: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!((1..=5).contains(&wait), "{wait}");
    let body = json_of(&r);
    assert_eq!(body["error"]["code"], "too_many_attempts");
    // Someone else signing in from the same address is not held up.
    let (_, r) = login(&app, "bob", &bob).await;
    assert_eq!(r.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn users_are_managed_by_admins_and_deleting_one_ends_their_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    for (body, field) in [
        (
            json!({"password": "long enough password", "role": "analyst"}),
            "name",
        ),
        (
            json!({"name": "bad name!", "password": "long enough password", "role": "analyst"}),
            "name",
        ),
        (
            json!({"name": "ana", "password": "short", "role": "analyst"}),
            "password",
        ),
        (
            json!({"name": "ana", "password": "long enough password", "role": "boss"}),
            "role",
        ),
    ] {
        let (status, err) = app.post_json("/v1/users", &body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let password = app.create_user("ana", "analyst").await;
    let (status, err) = app
        .post_json(
            "/v1/users",
            &json!({"name": "ana", "password": "another long password", "role": "admin"}),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["field"], "name");
    let (_, users) = app.get("/v1/users").await;
    let names: Vec<&str> = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["admin", "ana"]);
    assert!(!users.to_string().contains("argon2"));

    // A new password ends the sessions of the old one.
    let (cookie, _) = login(&app, "ana", &password).await;
    let r = app
        .client
        .send(
            Request::put(app.url("/v1/users/ana/password"))
                .header("content-type", "application/json")
                .body(Bytes::from(
                    json!({"password": "a brand new password"}).to_string(),
                ))
                .expect("req"),
        )
        .await
        .expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        send(&app, "GET", "/v1/auth/me", &[("cookie", &cookie)], None)
            .await
            .status,
        401
    );
    let (_, old) = login(&app, "ana", &password).await;
    assert_eq!(old.status, 401);
    let (cookie, new) = login(&app, "ana", "a brand new password").await;
    assert_eq!(new.status, 200);

    let r = app
        .client
        .send(
            Request::delete(app.url("/v1/users/ana"))
                .body(Bytes::new())
                .expect("req"),
        )
        .await
        .expect("delete");
    assert_eq!(r.status, 204);
    assert_eq!(
        send(&app, "GET", "/v1/auth/me", &[("cookie", &cookie)], None)
            .await
            .status,
        401
    );
    let r = app
        .client
        .send(
            Request::delete(app.url("/v1/users/ana"))
                .body(Bytes::new())
                .expect("req"),
        )
        .await
        .expect("delete");
    assert_eq!(r.status, 404);
    app.stop().await;
}

#[tokio::test]
async fn the_first_start_creates_the_admin_once_and_idle_sessions_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |a| {
        a.admin_password = Some(Secret::new("first admin password"))
    })
    .await;
    let (cookie, r) = login(&app, "admin", "first admin password").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r), json!({"name": "admin", "role": "admin"}));
    app.stop().await;

    // The session was last used two days ago: past the 12 h idle limit.
    let db = rusqlite::Connection::open(dir.path().join("ringfence.db")).expect("db");
    let two_days_ago = ringfence::host::now().millis() - 48 * 3_600_000;
    db.execute("UPDATE auth_sessions SET last_seen = ?1", [two_days_ago])
        .expect("age");
    drop(db);
    // A second start keeps the users it has (another password does not replace the first).
    let app = spawn_app_with(dir.path(), |a| {
        a.admin_password = Some(Secret::new("some other password"))
    })
    .await;
    assert_eq!(
        send(&app, "GET", "/v1/auth/me", &[("cookie", &cookie)], None)
            .await
            .status,
        401
    );
    let (_, r) = login(&app, "admin", "some other password").await;
    assert_eq!(r.status, 401);
    let (_, r) = login(&app, "admin", "first admin password").await;
    assert_eq!(r.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn weak_bootstrap_secrets_are_refused() {
    let args = ringfence::config::ServeArgs {
        admin_key: Some(Secret::new("too-short")),
        ..Default::default()
    };
    let err = ringfence::config::Settings::resolve(&args).expect_err("short admin key");
    assert!(err.to_string().contains("admin_key"), "{err}");
    assert!(!err.to_string().contains("too-short"), "{err}");
    let args = ringfence::config::ServeArgs {
        admin_password: Some(Secret::new("short")),
        ..Default::default()
    };
    assert!(ringfence::config::Settings::resolve(&args).is_err());
}

#[tokio::test]
async fn nodes_on_one_postgres_share_keys_users_and_sessions_and_revocation() {
    let server = PostgresServer::start();
    let url = server.url();
    let dir_a = tempfile::tempdir().expect("dir");
    let dir_b = tempfile::tempdir().expect("dir");
    let a = spawn_app_with(dir_a.path(), |args| {
        args.postgres = Some(Secret::new(url.clone()))
    })
    .await;
    let b = spawn_app_with(dir_b.path(), |args| {
        args.postgres = Some(Secret::new(url.clone()))
    })
    .await;

    // A key created through A works on B.
    let key = a.create_key("gateway", "ingest").await;
    let tx = |id: &str| json!({"transaction_id": id, "user_id": "u", "amount": 10});
    let r = send(
        &b,
        "POST",
        "/v1/transactions",
        &[("x-api-key", &key)],
        Some(&tx("pg-1")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A user created through A signs in on B, and that session works on A.
    let password = a.create_user("ana", "analyst").await;
    let (cookie, r) = login(&b, "ana", &password).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let me = send(&a, "GET", "/v1/auth/me", &[("cookie", &cookie)], None).await;
    assert_eq!(json_of(&me)["name"], "ana", "{}", me.text());
    // One first administrator for both nodes.
    let (_, users) = b.get("/v1/users").await;
    let admins = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter(|u| u["name"] == "admin")
        .count();
    assert_eq!(admins, 1, "{users}");

    // Revoked through A: B stops accepting it within its re-check time.
    let (_, keys) = a.get("/v1/keys").await;
    let id = keys["keys"][0]["id"].as_str().expect("id").to_owned();
    let r = a
        .client
        .send(
            Request::delete(a.url(&format!("/v1/keys/{id}")))
                .body(Bytes::new())
                .expect("req"),
        )
        .await
        .expect("delete");
    assert_eq!(r.status, 204);
    let bound = ringfence::auth::keys::RECHECK + Duration::from_secs(10);
    let started = Instant::now();
    let mut i = 0;
    loop {
        i += 1;
        let r = send(
            &b,
            "POST",
            "/v1/transactions",
            &[("x-api-key", &key)],
            Some(&tx(&format!("pg-r{i}"))),
        )
        .await;
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            started.elapsed() < bound,
            "B still accepts a key revoked {:?} ago",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    a.stop().await;
    b.stop().await;
}
