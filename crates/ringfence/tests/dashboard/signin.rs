//! Signing in to the dashboard in Chromium, then checking through the API that the session the
//! browser held was real and is gone after signing out.

use serde_json::{json, Value};

use crate::browser;
use crate::helpers::spawn_app_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_shown_the_right_one_signs_in_and_sign_out_ends_the_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;
    let password = app.create_user("ana", "analyst").await;

    let out: Value = browser::run("signin.mjs", &app.base, ("ana", &password), &[]).await;
    assert_eq!(
        out["shown"],
        json!({"name": "ana", "role": "analyst"}),
        "{out}"
    );
    assert!(
        out["cookieAfterSignOut"].is_null() || out["cookieAfterSignOut"] == "",
        "the browser dropped the cookie: {out}"
    );
    // The session the browser held no longer opens anything.
    let token = out["session"].as_str().expect("session value");
    let anonymous = ringfence::client::HttpClient::new();
    let me = anonymous
        .send(
            hyper::Request::get(app.url("/v1/auth/me"))
                .header("cookie", format!("rf_session={token}"))
                .body(bytes::Bytes::new())
                .expect("request"),
        )
        .await
        .expect("me");
    assert_eq!(me.status, 401, "signed out: {}", me.text());
    app.stop().await;
}
