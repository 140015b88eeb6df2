//! The shell: served with its policy and ETags, and every page mounting in Chromium.

use serde_json::Value;

use crate::browser;
use crate::helpers::spawn_app_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_serves_its_files_with_etags_and_every_page_mounts_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_with(dir.path(), |_| {}).await;

    let shell = app.client.get(&app.url("/")).await.expect("shell");
    assert_eq!(shell.status, 200);
    let policy = shell.header("content-security-policy").unwrap_or_default();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(shell.text().contains("/ui/app.js"));

    let js = app
        .client
        .get(&app.url("/ui/app.js"))
        .await
        .expect("app.js");
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let etag = js.header("etag").expect("etag").to_owned();
    let again = app
        .client
        .send(
            hyper::Request::get(app.url("/ui/app.js"))
                .header("if-none-match", &etag)
                .body(bytes::Bytes::new())
                .expect("request"),
        )
        .await
        .expect("revalidate");
    assert_eq!(again.status, 304, "the same version is not sent twice");
    let (status, body) = app.get("/ui/nope.js").await;
    assert_eq!(status, 404, "{body}");

    let password = app.create_user("analyst-1", "analyst").await;
    let out: Value = browser::run("shell.mjs", &app.base, ("analyst-1", &password), &[]).await;
    let visited: Vec<&str> = out["visited"]
        .as_array()
        .expect("visited")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        visited,
        ["live", "alerts", "investigate", "stores", "rules"],
        "{out}"
    );
    app.stop().await;
}
