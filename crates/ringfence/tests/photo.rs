//! Photo verification end to end: generated images for every way a photo can be bad, and a real
//! face (scikit-image's public-domain `astronaut.png`, fetched by `scripts/test-assets`).

mod helpers;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use image::{imageops, DynamicImage, GrayImage, ImageFormat, Luma, RgbImage};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringfence::photo::{
    self, assess, verify, PhotoError, PhotoFormat, PhotoOutcome, PhotoStore, QualityIssue,
    Verification, VerifyError,
};

use helpers::test_asset as asset;

fn astronaut() -> DynamicImage {
    image::load_from_memory(&asset("astronaut.png")).unwrap()
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn png(img: impl Into<DynamicImage>) -> Vec<u8> {
    encode(&img.into(), ImageFormat::Png)
}

fn jpeg(img: impl Into<DynamicImage>) -> Vec<u8> {
    let img: DynamicImage = img.into();
    encode(&DynamicImage::from(img.to_rgb8()), ImageFormat::Jpeg)
}

fn judged(bytes: &[u8]) -> Verification {
    assess(bytes).unwrap_or_else(|e| panic!("photo refused: {e}"))
}

fn rejected(bytes: &[u8]) -> PhotoError {
    match assess(bytes) {
        Err(VerifyError::Rejected(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// CRC-32 (IEEE) as PNG chunks use it, to forge valid headers.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid tiny PNG whose header is rewritten (with a correct CRC) to declare `width x height`.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(GrayImage::new(1, 1));
    // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// A valid small JPEG whose frame header (SOF0) is rewritten to declare `width x height`.
fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg(GrayImage::from_pixel(16, 16, Luma([128])));
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline JPEG has a SOF0 marker");
    // Marker (2), length (2), precision (1), then height and width.
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

fn noise(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = SmallRng::seed_from_u64(seed);
    RgbImage::from_fn(width, height, |_, _| image::Rgb(rng.random()))
}

fn darken(img: &DynamicImage, factor: f32) -> DynamicImage {
    let mut rgb = img.to_rgb8();
    for p in rgb.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = (f32::from(*c) * factor) as u8;
        }
    }
    rgb.into()
}

#[test]
fn astronaut_is_verified_with_one_face_around_her_head() {
    let v = judged(&asset("astronaut.png"));
    assert_eq!(v.outcome, PhotoOutcome::Verified, "{v:?}");
    assert!(v.issues.is_empty() && v.detail.is_none(), "{v:?}");
    let m = v.measurements.unwrap();
    assert_eq!((m.format, m.width, m.height), (PhotoFormat::Png, 512, 512));
    assert_eq!(m.faces_found, 1, "{m:?}");
    // Her face spans roughly x 175-275, y 70-180 in the 512 x 512 portrait.
    let face = m.face.unwrap();
    let (cx, cy) = (
        face.x + face.width as i32 / 2,
        face.y + face.height as i32 / 2,
    );
    assert!(
        (200..250).contains(&cx) && (95..150).contains(&cy),
        "{face:?}"
    );
    assert!((70..150).contains(&face.width), "{face:?}");
    assert!((0.14..0.3).contains(&m.face_ratio.unwrap()), "{m:?}");
    assert!(m.detection_ms > 0.0);
}

#[test]
fn astronaut_as_jpeg_and_as_data_url_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = PhotoStore::open(dir.path()).unwrap();
    let bytes = jpeg(astronaut());
    let field = format!("data:image/jpeg;base64,{}", STANDARD.encode(&bytes));
    let check = verify(&store, Some(&field)).unwrap();
    assert_eq!(
        check.verification.outcome,
        PhotoOutcome::Verified,
        "{check:?}"
    );
    let m = check.verification.measurements.as_ref().unwrap();
    assert_eq!(m.format, PhotoFormat::Jpeg);
    let stored = store
        .get(&check.photo.unwrap().to_string())
        .unwrap()
        .unwrap();
    assert_eq!((stored.format, stored.bytes), (PhotoFormat::Jpeg, bytes));
}

#[test]
fn same_photo_stored_twice_is_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = PhotoStore::open(dir.path()).unwrap();
    let field = STANDARD.encode(asset("astronaut.png"));
    let first = verify(&store, Some(&field)).unwrap();
    let second = verify(&store, Some(&format!("data:image/png;base64,{field}"))).unwrap();
    let reference = first.photo.unwrap();
    assert_eq!(second.photo, Some(reference));
    assert_eq!(first.verification.outcome, second.verification.outcome);

    let files: Vec<PathBuf> = walk(&dir.path().join("photos"));
    assert_eq!(files.len(), 1, "{files:?}");
    let name = format!("{reference}.png");
    assert_eq!(files[0].file_name().unwrap().to_str(), Some(name.as_str()));
    assert_eq!(
        files[0].parent().unwrap().file_name().unwrap().to_str(),
        Some(&name[..2])
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), asset("astronaut.png"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn astronaut_downscaled_is_poor_quality() {
    for side in [160, 90] {
        let small = astronaut().resize_exact(side, side, imageops::FilterType::Triangle);
        let v = judged(&png(small));
        assert_eq!(v.outcome, PhotoOutcome::PoorQuality, "{side}: {v:?}");
        assert!(
            v.issues.contains(&QualityIssue::LowResolution),
            "{side}: {v:?}"
        );
    }
}

#[test]
fn astronaut_blurred_is_poor_quality() {
    for sigma in [2.5, 6.0] {
        let v = judged(&png(astronaut().blur(sigma)));
        assert_eq!(v.outcome, PhotoOutcome::PoorQuality, "sigma {sigma}: {v:?}");
        assert!(
            v.issues.contains(&QualityIssue::Blurry),
            "sigma {sigma}: {v:?}"
        );
    }
}

#[test]
fn astronaut_darkened_or_blown_out_is_poor_quality() {
    // Darkened to a fifth: the face is still found, too dark (and too flat to be sharp).
    let v = judged(&jpeg(darken(&astronaut(), 0.2)));
    assert_eq!(v.outcome, PhotoOutcome::PoorQuality, "{v:?}");
    assert!(v.issues.contains(&QualityIssue::TooDark), "{v:?}");
    assert_eq!(v.measurements.unwrap().faces_found, 1);

    // Brightened until the face washes out: found and too bright, then lost in a picture too
    // bright to say there is no face.
    for (amount, faces) in [(60, 1), (120, 0)] {
        let v = judged(&png(astronaut().brighten(amount)));
        assert_eq!(v.outcome, PhotoOutcome::PoorQuality, "+{amount}: {v:?}");
        assert_eq!(v.issues, [QualityIssue::TooBright], "+{amount}: {v:?}");
        assert_eq!(v.measurements.unwrap().faces_found, faces, "+{amount}");
    }

    // Mild changes keep her verified: a little darker, a little blur.
    for img in [darken(&astronaut(), 0.6), astronaut().blur(0.8)] {
        let v = judged(&png(img));
        assert_eq!(v.outcome, PhotoOutcome::Verified, "{v:?}");
    }
}

#[test]
fn astronaut_with_the_face_cropped_away_is_no_face() {
    // Everything below her chin: suit, badge, helmet.
    let body = astronaut().crop_imm(0, 230, 512, 282);
    let v = judged(&jpeg(body));
    assert_eq!(v.outcome, PhotoOutcome::NoFace, "{v:?}");
    let m = v.measurements.unwrap();
    assert_eq!((m.faces_found, m.face, m.face_ratio), (0, None, None));
}

#[test]
fn a_real_photo_without_a_face_is_no_face() {
    let v = judged(&asset("rocket.jpg"));
    assert_eq!(v.outcome, PhotoOutcome::NoFace, "{v:?}");
    assert_eq!(v.measurements.unwrap().format, PhotoFormat::Jpeg);
}

#[test]
fn generated_scenes_without_faces_are_no_face() {
    let v = judged(&png(noise(400, 300, 7)));
    assert_eq!(v.outcome, PhotoOutcome::NoFace, "noise: {v:?}");
    let stripes = GrayImage::from_fn(640, 480, |x, y| {
        Luma([(((x / 9 + y / 23) % 5) * 50 + (x * y) % 7) as u8])
    });
    let v = judged(&jpeg(stripes));
    assert_eq!(v.outcome, PhotoOutcome::NoFace, "stripes: {v:?}");
}

#[test]
fn blank_dark_and_tiny_pictures_are_poor_quality_not_no_face() {
    let gray = GrayImage::from_pixel(640, 480, Luma([128]));
    let v = judged(&png(gray));
    assert_eq!(
        (v.outcome, v.issues.as_slice()),
        (PhotoOutcome::PoorQuality, &[QualityIssue::Blurry][..])
    );

    let white = GrayImage::from_pixel(640, 480, Luma([255]));
    let v = judged(&jpeg(white));
    assert_eq!(v.outcome, PhotoOutcome::PoorQuality);
    assert!(v.issues.contains(&QualityIssue::TooBright), "{v:?}");

    let black = GrayImage::new(640, 480);
    let v = judged(&png(black));
    assert_eq!(v.outcome, PhotoOutcome::PoorQuality);
    assert!(v.issues.contains(&QualityIssue::TooDark), "{v:?}");

    for (w, h) in [(1, 1), (16, 16), (100, 80)] {
        let v = judged(&png(noise(w, h, 1)));
        assert_eq!(v.outcome, PhotoOutcome::PoorQuality, "{w}x{h}: {v:?}");
        assert!(
            v.issues.contains(&QualityIssue::LowResolution),
            "{w}x{h}: {v:?}"
        );
    }
}

#[test]
fn decompression_bombs_are_refused_from_their_header() {
    // Over the per-side limit, and under it but over the pixel count; tiny files all.
    for (w, h) in [(100_000, 100_000), (9000, 10), (7000, 7000)] {
        let bytes = png_declaring(w, h);
        assert!(bytes.len() < 100);
        let e = rejected(&bytes);
        assert!(
            matches!(e, PhotoError::DimensionsTooLarge { .. }),
            "{w}x{h}: {e:?}"
        );
        assert!(e.to_string().contains("too large"), "{e}");
    }
    for (w, h) in [(65_000, 65_000), (5000, 5000)] {
        let e = rejected(&jpeg_declaring(w, h));
        assert!(
            matches!(e, PhotoError::DimensionsTooLarge { .. }),
            "{w}x{h}: {e:?}"
        );
    }
    // Within the limits the forged header is accepted, and the missing data is corrupt.
    let v = judged(&png_declaring(3000, 2000));
    assert_eq!(v.outcome, PhotoOutcome::Unreadable, "{v:?}");
}

#[test]
fn corrupt_photos_are_unreadable() {
    let mut bad_crc = png(noise(64, 64, 3));
    let idat = bad_crc.windows(4).position(|w| w == b"IDAT").unwrap();
    bad_crc[idat + 10] ^= 0xFF;
    let v = judged(&bad_crc);
    assert_eq!(v.outcome, PhotoOutcome::Unreadable, "{v:?}");
    assert!(v.detail.unwrap().contains("could not be decoded"));
    assert!(v.measurements.is_none());

    let whole = jpeg(astronaut());
    for cut in [4, 20, 200] {
        let v = judged(&whole[..cut]);
        assert_eq!(v.outcome, PhotoOutcome::Unreadable, "cut at {cut}: {v:?}");
    }
    let truncated_png = png(noise(200, 200, 4));
    let v = judged(&truncated_png[..truncated_png.len() / 2]);
    assert_eq!(v.outcome, PhotoOutcome::Unreadable, "{v:?}");
}

#[test]
fn truncated_jpeg_is_unreadable_even_when_the_face_survives() {
    // The face is in the top third of the portrait: the decoder alone would return it (and gray
    // below) as a good photo.
    let whole = jpeg(astronaut());
    for cut in [whole.len() / 3, whole.len() / 2, whole.len() - 2] {
        let v = judged(&whole[..cut]);
        assert_eq!(v.outcome, PhotoOutcome::Unreadable, "cut at {cut}: {v:?}");
        assert!(v.detail.unwrap().contains("truncated"));
    }
}

#[test]
fn random_and_foreign_bytes_are_refused_or_unreadable() {
    let mut rng = SmallRng::seed_from_u64(11);
    for len in [1, 7, 1000, 100_000] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if photo::decode::sniff(&bytes).is_none() {
            assert_eq!(
                rejected(&bytes),
                PhotoError::UnsupportedFormat,
                "{len} bytes"
            );
        }
    }
    for fake in [
        &b"GIF89a\x01\x00\x01\x00"[..],
        b"BM\x00\x00",
        b"<svg/>",
        b"%PDF-1.7",
    ] {
        assert_eq!(rejected(fake), PhotoError::UnsupportedFormat);
    }
    // Right magic, random rest: decoded as far as it goes, never a panic, never verified.
    for seed in 0..20u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        for magic in [&b"\xFF\xD8\xFF"[..], b"\x89PNG\r\n\x1a\n"] {
            let mut bytes = magic.to_vec();
            bytes.extend((0..2000).map(|_| rng.random::<u8>()));
            match assess(&bytes) {
                Ok(v) => assert_ne!(v.outcome, PhotoOutcome::Verified),
                Err(VerifyError::Rejected(_)) => {}
                Err(e) => panic!("server fault on random bytes: {e}"),
            }
        }
    }
    assert_eq!(rejected(b""), PhotoError::Empty);
}

#[test]
fn bad_fields_are_refused_with_clear_errors_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = PhotoStore::open(dir.path()).unwrap();
    let cases: [(&str, &str); 4] = [
        ("not base64 at all!", "photo_not_base64"),
        ("data:image/png,iVBORw0KGgo=", "photo_not_base64"),
        ("", "photo_empty"),
        ("SGVsbG8gd29ybGQ=", "photo_unsupported_format"),
    ];
    for (field, code) in cases {
        match verify(&store, Some(field)) {
            Err(VerifyError::Rejected(e)) => assert_eq!(e.code(), code, "{field:?}: {e}"),
            other => panic!("{field:?}: expected a refusal, got {other:?}"),
        }
    }
    let huge = STANDARD.encode(vec![0xFFu8; photo::decode::MAX_PHOTO_BYTES + 1]);
    match verify(&store, Some(&huge)) {
        Err(VerifyError::Rejected(e @ PhotoError::TooLarge { .. })) => {
            assert!(e.to_string().contains("too large"), "{e}")
        }
        other => panic!("expected too large, got {other:?}"),
    }
    assert!(walk(store.root()).is_empty());

    // A corrupt photo is judged, not refused, and kept as evidence.
    let corrupt = STANDARD.encode(&jpeg(astronaut())[..20]);
    let check = verify(&store, Some(&corrupt)).unwrap();
    assert_eq!(check.verification.outcome, PhotoOutcome::Unreadable);
    assert!(check.photo.is_some());
    assert_eq!(walk(store.root()).len(), 1);
}

#[test]
fn verification_serializes_with_snake_case_outcome_and_numbers() {
    let v = judged(&asset("astronaut.png"));
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["outcome"], "verified");
    assert_eq!(json["measurements"]["faces_found"], 1);
    assert_eq!(json["measurements"]["format"], "png");
    assert!(json["measurements"]["sharpness"].as_f64().unwrap() > 0.0);
    assert!(json.get("issues").is_none());
    let back: Verification = serde_json::from_value(json).unwrap();
    assert_eq!(back, v);

    let missing = serde_json::to_value(
        verify(
            &PhotoStore::open(tempfile::tempdir().unwrap().path()).unwrap(),
            None,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(missing["photo"], serde_json::Value::Null);
    assert_eq!(missing["verification"]["outcome"], "missing");
}

#[test]
fn concurrent_checks_agree() {
    let bytes = asset("astronaut.png");
    let expected = judged(&bytes).measurements.unwrap().face;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| judged(&bytes))).collect();
        for h in handles {
            let v = h.join().unwrap();
            assert_eq!(v.outcome, PhotoOutcome::Verified);
            assert_eq!(v.measurements.unwrap().face, expected);
        }
    });
}

/// Not a test: the detection time behind BENCHMARKS.md ("Photo verification").
/// `cargo test --release -p ringfence --test photo -- --ignored --nocapture photo_timing`
#[test]
#[ignore]
fn photo_timing() {
    let png_bytes = asset("astronaut.png");
    let jpeg_bytes = jpeg(astronaut());
    let big = jpeg(astronaut().resize_exact(4032, 3024, imageops::FilterType::Triangle));
    photo::face::preload().unwrap();
    for (name, bytes) in [
        ("astronaut.png 512x512", &png_bytes),
        ("astronaut.jpg 512x512", &jpeg_bytes),
        ("astronaut.jpg 4032x3024", &big),
    ] {
        let decoded = photo::decode::decode(bytes).unwrap();
        let runs = 20;
        let (mut detect_ms, mut total_ms) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let started = std::time::Instant::now();
            let v = judged(bytes);
            total_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            detect_ms.push(f64::from(v.measurements.unwrap().detection_ms));
        }
        let started = std::time::Instant::now();
        for _ in 0..runs {
            photo::decode::decode(bytes).unwrap();
        }
        let decode_ms = started.elapsed().as_secs_f64() * 1000.0 / runs as f64;
        detect_ms.sort_by(f64::total_cmp);
        total_ms.sort_by(f64::total_cmp);
        println!(
            "{name} ({} bytes, gray {:?}): decode {decode_ms:.1} ms; detection median {:.1} ms \
             (min {:.1}); whole check median {:.1} ms (min {:.1}); {runs} runs",
            bytes.len(),
            decoded.gray.dimensions(),
            detect_ms[runs / 2],
            detect_ms[0],
            total_ms[runs / 2],
            total_ms[0],
        );
    }

    // For comparison: the same detector on the astronaut at full resolution (no 320 px scan).
    let model =
        rustface::read_model(&include_bytes!("../assets/seeta_fd_frontal_v1.0.bin")[..]).unwrap();
    let gray = astronaut().to_luma8();
    let mut runs_ms = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let mut detector = rustface::create_detector_with_model(model.clone());
        let faces = detector.detect(&rustface::ImageData::new(gray.as_raw(), 512, 512));
        runs_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(faces.len(), 1);
    }
    runs_ms.sort_by(f64::total_cmp);
    println!(
        "astronaut 512x512 scanned at full resolution: detection median {:.1} ms; 5 runs",
        runs_ms[2]
    );
}
