//! Running one browser script: tools checked, a deadline, its `RESULT` line parsed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest one browser script may run before it is stopped and the test fails.
const DEADLINE: Duration = Duration::from_secs(240);

/// The browser scripts' directory.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Where screenshots go: `target/screenshots/dashboard` (a few are copied to `docs/`).
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots/dashboard")
}

/// Fails, saying how to get them, when Chromium, node or playwright-core is missing.
fn check_tools() {
    let chromium = std::env::var_os("RINGFENCE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.is_file(),
        "{} is missing: run scripts/test (it installs Debian's chromium)",
        chromium.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing ({node:?}): run scripts/test (it installs nodejs)"
    );
    let driver = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        driver.is_file(),
        "{} is missing: run scripts/test (it runs npm ci in crates/ringfence/tests/browser)",
        driver.display()
    );
}

/// Runs `tests/browser/<script>` against `base`, signed in as `user`, with `args` after the
/// base URL and screenshot directory; returns its `RESULT` value. Panics with the script's
/// whole output when it fails, prints no result, or overruns its deadline. The script runs on
/// a blocking thread, so the server under test keeps serving on the test's runtime.
pub async fn run(script: &str, base: &str, user: (&str, &str), args: &[&str]) -> Value {
    let script = script.to_owned();
    let base = base.to_owned();
    let user = (user.0.to_owned(), user.1.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || run_blocking(&script, &base, (&user.0, &user.1), &args))
        .await
        .expect("browser script thread")
}

fn run_blocking(script: &str, base: &str, user: (&str, &str), args: &[String]) -> Value {
    check_tools();
    let shots = screenshot_dir();
    let mut child = Command::new("node")
        .arg(browser_dir().join(script))
        .arg(base)
        .arg(&shots)
        .args(args)
        .env("RF_USER", user.0)
        .env("RF_PASSWORD", user.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let started = Instant::now();
    loop {
        match child.try_wait().expect("wait for node") {
            Some(_) => break,
            None if started.elapsed() > DEADLINE => {
                let _ = child.kill();
                break;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let out = child.wait_with_output().expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({:?}, {:?} elapsed):\n{stdout}\n{stderr}",
        out.status,
        started.elapsed()
    );
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("{script} printed no RESULT line:\n{stdout}\n{stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script}: bad RESULT ({e}): {line}"))
}
