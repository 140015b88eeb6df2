//! Tests of the real `ringfence` binary: configuration layering, serving, shutdown, demo.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringfence::client::HttpClient;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringfence");
/// `--admin-key` of the servers these tests start.
const ADMIN_KEY: &str = "binary-test-admin-key-0123456789";

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(client: &HttpClient, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(&format!("{base}/readyz")).await {
            if r.status == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} never became ready");
}

#[tokio::test]
async fn serve_reads_flags_env_and_config_file_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("ringfence.toml");
    // The file sets the listen address and thresholds; the environment overrides the data
    // directory; flags override the challenge and block thresholds.
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata = \"{}\"\nreview_threshold = 30\nblock_threshold = 99\n",
            dir.path().join("from-file").display()
        ),
    )
    .expect("config");
    let env_data = dir.path().join("from-env");
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--challenge-threshold", "50", "--block-threshold", "60"])
        .env("RINGFENCE_DATA", &env_data)
        .env(
            "RINGFENCE_CARD_HASH_KEY",
            "do-not-print-me-0123456789abcdef",
        )
        .env("RINGFENCE_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut child = Killed(child);
    // Stderr is read as it comes: the one-time login is needed while the server runs.
    let stderr = child.0.stderr.take().expect("stderr");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = HttpClient::new().with_bearer(ADMIN_KEY);
    wait_ready(&client, &base).await;

    // The first start created `admin` and showed its password once, on stderr.
    let password = {
        let log = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let line = log
            .lines()
            .find(|l| l.starts_with("One-time login"))
            .unwrap_or_else(|| panic!("no one-time login on stderr: {log}"))
            .to_owned();
        line.split("password `")
            .nth(1)
            .and_then(|r| r.split('`').next())
            .expect("password in the line")
            .to_owned()
    };
    let login = HttpClient::new()
        .post_json(
            &format!("{base}/v1/auth/login"),
            &serde_json::json!({"username": "admin", "password": password}),
        )
        .await
        .expect("login");
    assert_eq!(login.status, 200, "{}", login.text());
    let anonymous = HttpClient::new()
        .post(&format!("{base}/transaction"), "application/json", "{}")
        .await
        .expect("post");
    assert_eq!(anonymous.status, 401, "the binary checks access");

    // shared_device (55) lands between the flags' challenge (50) and block (60) thresholds...
    let r = client
        .post(
            &format!("{base}/transaction"),
            "application/json",
            r#"{"user_id":"a","device_id":"d","amount":10}"#,
        )
        .await
        .expect("post");
    assert_eq!(r.status, 200);
    let r = client
        .post(
            &format!("{base}/transaction"),
            "application/json",
            r#"{"user_id":"b","device_id":"d","amount":10}"#,
        )
        .await
        .expect("post");
    let v: Value = r.json().expect("json");
    assert_eq!(v["decision"], "challenge", "{v}");
    // ...and two ring rules together (55 + 30 for a third user) pass the flag's block at 60.
    let r = client
        .post(
            &format!("{base}/transaction"),
            "application/json",
            r#"{"user_id":"c","device_id":"d","amount":10}"#,
        )
        .await
        .expect("post");
    let v: Value = r.json().expect("json");
    assert_eq!(v["decision"], "block", "{v}");
    assert!(
        env_data.join("ringfence.db").exists(),
        "data dir from the environment"
    );
    assert!(!dir.path().join("from-file").exists(), "env beats the file");

    // SIGTERM: graceful stop, exit status 0, secret never logged.
    let pid = child.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.0.wait().expect("wait");
    assert!(exit.success(), "exit status {exit:?}");
    reader.join().expect("stderr reader");
    let log = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(log.contains("ringfence serving"), "{log}");
    for secret in ["do-not-print-me-0123456789abcdef", ADMIN_KEY] {
        assert!(!log.contains(secret), "secret in the log: {log}");
    }
    // The password is shown once, outside the log lines (which carry a level).
    let shown: Vec<&str> = log.lines().filter(|l| l.contains(&password)).collect();
    assert_eq!(shown.len(), 1, "{log}");
    assert!(
        !shown[0].contains("INFO") && !shown[0].contains("WARN"),
        "{log}"
    );
}

#[test]
fn serve_rejects_a_bad_config_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "review_threshold = 90\n").expect("config");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("review"), "{err}");
}

/// Runs `ringfence demo` on a free port with `args` for `secs` seconds in `data`, checks it
/// exits cleanly, and returns what it printed.
fn run_demo(args: &[&str], secs: u64, data: &std::path::Path) -> Vec<String> {
    let child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            &secs.to_string(),
        ])
        .args(args)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut child = Killed(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    let exit = child.0.wait().expect("wait");
    assert!(exit.success(), "{lines:?}");
    lines
}

#[test]
fn demo_serves_and_prints_a_line_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = run_demo(&["--tps", "100"], 4, dir.path());
    assert!(lines.iter().any(|l| l.contains("/v1/stats")), "{lines:?}");
    // The dashboard's address with the one-time login of the first administrator.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("dashboard") && l.contains("one-time password")),
        "{lines:?}"
    );
    let ticks: Vec<&String> = lines.iter().filter(|l| l.contains("tx/s |")).collect();
    assert!(ticks.len() >= 2, "{lines:?}");
    assert!(
        ticks.iter().any(|l| !l.contains(" 0 tx/s")),
        "traffic flowed: {lines:?}"
    );
    assert!(
        ticks[0].contains("approve") && ticks[0].contains("p99"),
        "{lines:?}"
    );
    assert!(dir.path().join("ringfence.db").exists());
}

#[test]
fn demo_stores_runs_two_replicating_sites_whose_tills_get_return_fraud_blocked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = run_demo(&["--stores", "--tps", "10"], 8, dir.path());
    assert!(
        lines.iter().any(|l| l.contains("/pos?store=store-b")),
        "{lines:?}"
    );
    let last = lines
        .iter()
        .rev()
        .find(|l| l.contains("store-a:") && l.contains("store-b:"))
        .unwrap_or_else(|| panic!("no tally line: {lines:?}"));
    // "store-a: N purchases, returns A ok / B flagged / C blocked, lag p99 X ms | store-b: ..."
    let numbers = |store: &str| -> Vec<u64> {
        let part = last
            .split(" | ")
            .find(|p| p.contains(store))
            .unwrap_or_else(|| panic!("{store} missing: {last}"));
        let part = part.split_once(store).map_or(part, |(_, rest)| rest);
        part.split(|c: char| !c.is_ascii_digit() && c != '.')
            .filter_map(|w| w.parse::<u64>().ok())
            .collect()
    };
    let (a, b) = (numbers("store-a:"), numbers("store-b:"));
    assert!(a[0] + b[0] > 0, "purchases at the tills: {last}");
    assert!(a[3] + b[3] > 0, "return fraud blocked: {last}");
    assert!(a[1] + b[1] > 0, "honest returns approved: {last}");
    assert!(
        !last.contains("lag p99 -"),
        "replication measured at both: {last}"
    );
    for store in ["store-a", "store-b"] {
        assert!(dir.path().join(store).join("ringfence.db").exists());
    }
}
