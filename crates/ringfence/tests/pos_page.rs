//! The till page (`/pos`) in a real browser: Debian's headless Chromium, driven by playwright-core
//! (`tests/browser/pos.mjs`), with a fake camera that shows a video made here from the public-domain
//! `astronaut.png`, so the photo the page captures is a real face. The script tells the story on
//! the page (purchase at store-a with the camera's photo; its return at store-a; a second return
//! at store-b without a photo, blocked) and a no-face scenario with Chromium's default fake
//! camera; this test then checks every transaction through the API.
//!
//! `scripts/test` installs what it needs (`chromium`, `node`, `npm ci` in `tests/browser`); when
//! something is missing the test fails and says so, it never skips.

mod helpers;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use helpers::{spawn_app_with, test_asset, TestApp};
use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use serde_json::Value;

/// The fake camera's picture size (a common webcam mode).
const VIDEO_WIDTH: u32 = 640;
const VIDEO_HEIGHT: u32 = 480;
/// Longest the browser run may take before it is stopped and the test fails.
const BROWSER_DEADLINE: Duration = Duration::from_secs(240);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The browser and the driver, or a failure that says how to get them.
fn check_tools() -> PathBuf {
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
    chromium
}

/// A few seconds of Y4M video (the raw format Chromium's fake camera reads) showing the astronaut
/// portrait in front of a plain wall: 4:2:0, BT.601 studio range, as cameras deliver it.
fn write_face_video(path: &Path) {
    let portrait = image::load_from_memory(&test_asset("astronaut.png"))
        .expect("astronaut.png decodes")
        .to_rgb8();
    let side = VIDEO_HEIGHT;
    let portrait = imageops::resize(&portrait, side, side, FilterType::Triangle);
    let mut frame = RgbImage::from_pixel(VIDEO_WIDTH, VIDEO_HEIGHT, Rgb([176, 182, 190]));
    imageops::overlay(
        &mut frame,
        &portrait,
        i64::from((VIDEO_WIDTH - side) / 2),
        0,
    );
    let (y, u, v) = to_yuv420(&frame);

    let mut out = BufWriter::new(File::create(path).expect("video file"));
    let header = format!("YUV4MPEG2 W{VIDEO_WIDTH} H{VIDEO_HEIGHT} F30:1 Ip A1:1 C420jpeg\n");
    out.write_all(header.as_bytes()).expect("write video");
    // The same picture in every frame: the camera holds still. Chromium loops the file.
    for _ in 0..30 {
        out.write_all(b"FRAME\n").expect("write video");
        for plane in [&y, &u, &v] {
            out.write_all(plane).expect("write video");
        }
    }
    out.flush().expect("write video");
}

/// Planar Y, Cb, Cr with chroma averaged over 2 x 2 blocks.
fn to_yuv420(img: &RgbImage) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (w, h) = img.dimensions();
    let clamp = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    let mut y = Vec::with_capacity((w * h) as usize);
    for p in img.pixels() {
        let [r, g, b] = p.0.map(f32::from);
        y.push(clamp(
            16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0,
        ));
    }
    let mut u = Vec::with_capacity((w * h / 4) as usize);
    let mut v = Vec::with_capacity((w * h / 4) as usize);
    for by in (0..h).step_by(2) {
        for bx in (0..w).step_by(2) {
            let mut sum = [0f32; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = img.get_pixel(bx + dx, by + dy).0;
                for (s, c) in sum.iter_mut().zip(p) {
                    *s += f32::from(c) / 4.0;
                }
            }
            let [r, g, b] = sum;
            u.push(clamp(
                128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0,
            ));
            v.push(clamp(128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0));
        }
    }
    (y, u, v)
}

/// Runs the browser script to completion (or the deadline), its output in files under `work`.
fn run_browser(
    base: &str,
    user: (&str, &str),
    video: &Path,
    shots: &Path,
    work: &Path,
) -> (bool, String) {
    let stdout_path = work.join("browser.out");
    let stderr_path = work.join("browser.err");
    let mut child = Command::new("node")
        .arg(browser_dir().join("pos.mjs"))
        .arg(base)
        .arg(video)
        .arg(shots)
        .current_dir(browser_dir())
        .env("RF_USER", user.0)
        .env("RF_PASSWORD", user.1)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("node starts");
    let started = Instant::now();
    let status = loop {
        match child.try_wait().expect("wait for node") {
            Some(status) => break Some(status),
            None if started.elapsed() > BROWSER_DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let output = format!(
        "{}{}",
        std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    match status {
        Some(status) => (status.success(), output),
        None => (
            false,
            format!("stopped after {BROWSER_DEADLINE:?}\n{output}"),
        ),
    }
}

/// The stored transaction: its decision, rules fired, photo outcome and address.
async fn stored(app: &TestApp, id: &str) -> (String, Vec<String>, String, Option<String>) {
    let (status, v) = app.get(&format!("/v1/transactions/{id}")).await;
    assert_eq!(status, 200, "{id}: {v}");
    let rules = v["decision"]["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let retail = &v["transaction"]["retail"];
    (
        v["decision"]["decision"].as_str().unwrap_or("").to_owned(),
        rules,
        retail["photo"].as_str().unwrap_or("").to_owned(),
        retail["photo_ref"].as_str().map(str::to_owned),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_till_page_tells_the_story_in_headless_chromium() {
    check_tools();
    let dir = tempfile::tempdir().expect("dir");
    let app = spawn_app_with(&dir.path().join("data"), |_| {}).await;
    let video = dir.path().join("face.y4m");
    write_face_video(&video);
    let shots = workspace().join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");

    // The tills sign in with an account of their own, which may only send and read back.
    let password = app.create_user("till-clerk", "ingest").await;
    let (base, work) = (app.base.clone(), dir.path().to_owned());
    let (ok, output) = tokio::task::spawn_blocking(move || {
        run_browser(&base, ("till-clerk", &password), &video, &shots, &work)
    })
    .await
    .expect("browser run");
    println!("{output}");
    assert!(ok, "the browser story failed:\n{output}");
    let result = output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{output}"));
    let ids: Value = serde_json::from_str(result).expect("RESULT is JSON");
    let id = |name: &str| {
        ids[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {ids}"))
            .to_owned()
    };

    // Each of the three tills opened signed out, sent the clerk to the dashboard's sign-in and
    // came back signed in.
    assert_eq!(ids["sign_ins"], 3, "{ids}");

    // What the page showed is what the API stored.
    let (decision, _, photo, purchase_photo) = stored(&app, &id("purchase")).await;
    assert_eq!((decision.as_str(), photo.as_str()), ("approve", "verified"));
    let (decision, rules, photo, _) = stored(&app, &id("return_a")).await;
    assert_eq!((decision.as_str(), photo.as_str()), ("approve", "verified"));
    assert!(
        !rules.contains(&"no_photo_verification".into()),
        "{rules:?}"
    );
    let (decision, rules, photo, photo_ref) = stored(&app, &id("return_b")).await;
    assert_eq!((decision.as_str(), photo.as_str()), ("block", "missing"));
    assert_eq!(photo_ref, None);
    for rule in ["duplicate_return", "no_photo_verification"] {
        assert!(rules.contains(&rule.into()), "{rule}: {rules:?}");
    }
    let (_, rules, photo, photo_ref) = stored(&app, &id("default_return")).await;
    assert!(
        ["no_face", "poor_quality"].contains(&photo.as_str()),
        "Chromium's default fake camera shows no face: {photo}"
    );
    assert_eq!(ids["default_return_photo"], photo.as_str());
    assert!(photo_ref.is_some());
    assert!(rules.contains(&"no_photo_verification".into()), "{rules:?}");

    // The photo the page captured is a JPEG, stored and served back.
    let purchase_photo = purchase_photo.expect("the purchase's photo is stored");
    let served = app
        .client
        .get(&app.url(&format!("/v1/photos/{purchase_photo}")))
        .await
        .expect("request");
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("image/jpeg"));
    let captured = image::load_from_memory(&served.body).expect("the captured photo decodes");
    assert_eq!(
        (captured.width(), captured.height()),
        (VIDEO_WIDTH, VIDEO_HEIGHT)
    );
    app.stop().await;
}
