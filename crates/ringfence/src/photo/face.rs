//! Face detection with SeetaFace's frontal detector (the `rustface` crate).
//!
//! The model (1.2 MB, BSD-2-Clause, see `assets/seeta_fd_frontal_v1.0.LICENSE`) is embedded in
//! the binary, so a fresh machine needs no model file, and parsed once on first use into a
//! shared [`Model`]. `rustface`'s detector keeps scratch buffers and is neither `Send` nor
//! `Sync`, so each call builds its own detector from a clone of the parsed model: the clone
//! costs about 0.6 ms against tens of milliseconds of detection, needs no pool or lock, and a
//! panic inside one call (the crate panics on images it considers illegal) cannot leave a
//! shared detector in a broken state.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::Instant;

use image::GrayImage;
use rustface::{ImageData, Model};
use serde::{Deserialize, Serialize};

use super::quality::resample;

/// SeetaFace frontal detector model, as shipped in the `rustface` 0.1.7 crate package.
const MODEL_BYTES: &[u8] = include_bytes!("../../assets/seeta_fd_frontal_v1.0.bin");

/// Short side of the picture the detector scans, in pixels: every photo is scaled to it (down or
/// up). The detector's window is 40 px and it always starts at the scan's full resolution, so
/// its time grows with the scan's pixel count (a 512 x 512 photo: about 52 ms scanned as it is,
/// 27 ms at 320 px), and a fixed scan size makes the cost about the same for a webcam frame and
/// a 12 MP phone photo. At 320 px every face from 1/8 of the short side up is found whatever
/// the photo's resolution; a face on a small photo is found too and then judged by its real
/// pixel size.
pub const DETECT_SHORT_SIDE: u32 = 320;

/// Longest side of the scan: bounds the cost for panoramas and strips, which are scaled so
/// this side fits (their short side then ends under [`DETECT_SHORT_SIDE`]).
pub const DETECT_MAX_LONG_SIDE: u32 = 1280;

/// Smallest side, of the photo and of its scan, the detector is run on: the 40 px window must fit
/// the scan with margin (`rustface` indexes out of range under two pixels a side), and a photo
/// smaller than this shows no face worth scaling up.
pub const MIN_SCAN_SIDE: u32 = 48;

/// Detection score below which a candidate is dropped. SeetaFace's own default; on the test
/// photos real faces score above 10 and nothing else reaches 2.
const SCORE_THRESHOLD: f64 = 3.85;

/// Step of the sliding window in pixels: SeetaFace's default; 2 finds the same faces at more
/// than twice the cost.
const WINDOW_STEP: u32 = 4;

/// Ratio between pyramid levels: SeetaFace's default.
const PYRAMID_SCALE: f32 = 0.8;

/// A face's square box in the coordinates of the picture that was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaceBox {
    /// Left edge (may be slightly negative for a face at the border).
    pub x: i32,
    /// Top edge (may be slightly negative for a face at the border).
    pub y: i32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl FaceBox {
    /// Pixel area of the box.
    pub fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// A detected face: where it is and how sure the detector is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectedFace {
    /// The box, in the full picture's coordinates.
    pub bbox: FaceBox,
    /// Detector score (higher is surer; kept faces score at least 3.85).
    pub score: f64,
}

/// All faces found in one picture, and what finding them cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Faces, largest first.
    pub faces: Vec<DetectedFace>,
    /// Wall time of scaling and detection, in milliseconds.
    pub millis: f64,
}

/// Why detection could not run (never a property of the photo: these are faults).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaceError {
    /// The embedded model did not parse (a broken build, not bad input).
    #[error("face model could not be loaded: {0}")]
    ModelUnavailable(String),
    /// The detector panicked on this picture; the panic was contained.
    #[error("face detector failed on this picture")]
    DetectorPanicked,
}

/// The parsed model, shared by every call (parsed once, about 1 ms).
fn model() -> Result<&'static Model, FaceError> {
    static MODEL: OnceLock<Result<Model, String>> = OnceLock::new();
    MODEL
        .get_or_init(|| rustface::read_model(MODEL_BYTES).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| FaceError::ModelUnavailable(e.clone()))
}

/// Parses the model now, so a server can fail at start rather than on its first photo.
pub fn preload() -> Result<(), FaceError> {
    model().map(|_| ())
}

/// Finds frontal faces in a grayscale picture, scanning a copy scaled to [`DETECT_SHORT_SIDE`].
/// CPU-bound (tens of milliseconds): call it off the async runtime. A picture, or its scan (for a
/// thin strip), under [`MIN_SCAN_SIDE`] gives no faces.
pub fn detect(gray: &GrayImage) -> Result<Detection, FaceError> {
    let started = Instant::now();
    let (width, height) = gray.dimensions();
    let (short, long) = (width.min(height).max(1), width.max(height).max(1));
    let scale = (f64::from(DETECT_SHORT_SIDE) / f64::from(short))
        .min(f64::from(DETECT_MAX_LONG_SIDE) / f64::from(long));
    let (scan_w, scan_h) = (scaled_side(width, scale), scaled_side(height, scale));
    if short < MIN_SCAN_SIDE || scan_w.min(scan_h) < MIN_SCAN_SIDE {
        return Ok(Detection {
            faces: Vec::new(),
            millis: elapsed_ms(started),
        });
    }
    let model = model()?.clone();
    let scaled;
    let scan = if (scan_w, scan_h) == (width, height) {
        gray
    } else {
        scaled = resample(gray, scan_w, scan_h);
        &scaled
    };

    let found = catch_unwind(AssertUnwindSafe(|| {
        let mut detector = rustface::create_detector_with_model(model);
        detector.set_score_thresh(SCORE_THRESHOLD);
        detector.set_slide_window_step(WINDOW_STEP, WINDOW_STEP);
        detector.set_pyramid_scale_factor(PYRAMID_SCALE);
        detector.detect(&ImageData::new(scan.as_raw(), scan.width(), scan.height()))
    }))
    .map_err(|_| FaceError::DetectorPanicked)?;

    let mut faces: Vec<DetectedFace> = found
        .iter()
        .map(|face| {
            let b = face.bbox();
            DetectedFace {
                bbox: FaceBox {
                    x: unscale_coord(b.x(), scale),
                    y: unscale_coord(b.y(), scale),
                    width: unscale_len(b.width(), scale),
                    height: unscale_len(b.height(), scale),
                },
                score: face.score(),
            }
        })
        .collect();
    faces.sort_by_key(|face| std::cmp::Reverse(face.bbox.area()));
    Ok(Detection {
        faces,
        millis: elapsed_ms(started),
    })
}

fn scaled_side(side: u32, scale: f64) -> u32 {
    ((f64::from(side) * scale).round() as u32).max(1)
}

fn unscale_coord(v: i32, scale: f64) -> i32 {
    (f64::from(v) / scale).round() as i32
}

fn unscale_len(v: u32, scale: f64) -> u32 {
    (f64::from(v) / scale).round() as u32
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_model_parses() {
        assert!(preload().is_ok());
        assert!(model().unwrap().get_hierarchy_count() > 0);
    }

    #[test]
    fn tiny_and_flat_pictures_have_no_faces() {
        for (w, h) in [(1, 1), (1, 500), (5000, 100), (300, 2), (20, 20)] {
            let img = GrayImage::new(w, h);
            assert!(detect(&img).unwrap().faces.is_empty(), "{w}x{h}");
        }
        let gray = GrayImage::from_pixel(200, 150, image::Luma([128]));
        assert!(detect(&gray).unwrap().faces.is_empty());
    }

    #[test]
    fn odd_shapes_of_noise_are_scanned_without_fault() {
        // Strips near the scan limits, where the pyramid and window arithmetic are at edges.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for (w, h) in [
            (48, 48),
            (48, 1280),
            (49, 3000),
            (3000, 49),
            (1281, 320),
            (321, 50),
        ] {
            let img = GrayImage::from_fn(w, h, |_, _| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                image::Luma([(state >> 56) as u8])
            });
            let detection = detect(&img).unwrap();
            for face in detection.faces {
                assert!(face.score >= SCORE_THRESHOLD, "{w}x{h}: {face:?}");
            }
        }
    }

    #[test]
    fn boxes_are_mapped_back_to_full_resolution() {
        assert_eq!(unscale_coord(10, 0.5), 20);
        assert_eq!(unscale_len(99, 0.25), 396);
        assert_eq!(scaled_side(1000, 0.32), 320);
    }
}
