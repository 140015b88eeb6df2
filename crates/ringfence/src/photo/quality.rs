//! Is the photo good enough to recognise the person? Size, sharpness and exposure, measured on
//! the largest face (or on the whole picture when no face was found) and judged against fixed
//! thresholds.
//!
//! The measurements are resolution-independent: the face (or the picture) is first resampled to
//! a fixed size, so a 12 MP phone photo and a 640 x 480 webcam frame of the same scene give
//! about the same numbers, and a small face blown up to that size reads as blurry, which it is
//! for anyone comparing it with a person at the till.

use image::imageops::{self, FilterType};
use image::GrayImage;
use serde::{Deserialize, Serialize};

use super::face::FaceBox;

/// Shortest picture side (pixels) that can show a face well enough to verify: a face filling
/// half of a 120 px frame is 60 px across, about the least a person can compare.
pub const MIN_IMAGE_SHORT_SIDE: u32 = 120;

/// Narrowest face (pixels in the original) accepted: below 64 px, eyes and mouth are a few
/// pixels each.
pub const MIN_FACE_PIXELS: u32 = 64;

/// Smallest face width as a fraction of the picture's short side. At a till the customer stands
/// within a metre of the camera, so their face fills a fifth or more of the frame; a smaller
/// face is someone in the background or a photo held up from afar. The detector looks for
/// faces down to 1/8 of the short side (see [`super::face::DETECT_SHORT_SIDE`]): a face between
/// the two is found and reported too small, a smaller one is not found at all.
pub const MIN_FACE_RATIO: f32 = 0.15;

/// Side (pixels) the face is resampled to before it is measured.
pub const FACE_SAMPLE_SIDE: u32 = 128;

/// Short side (pixels) the whole picture is resampled to when no face was found.
pub const SCENE_SAMPLE_SIDE: u32 = 256;

/// Least variance of the Laplacian on the resampled face. The astronaut test portrait (a 100 px
/// face) measures about 210; a Gaussian blur of 1 px on the original brings it to about 26, still
/// recognisable; 1.5 px to about 10, where eyes and mouth smear. Low contrast lowers it too (a
/// face darkened to a fifth measures about 9): such a face also lacks the detail to compare.
pub const MIN_FACE_SHARPNESS: f32 = 15.0;

/// Least variance of the Laplacian on the resampled picture when no face was found: below this
/// the picture is blank, covered or badly out of focus, so "no face" cannot be claimed. Real
/// scenes measure in the hundreds (the rocket test photo about 320); a blank frame 0, the
/// astronaut under a 10 px blur under 3.
pub const MIN_SCENE_SHARPNESS: f32 = 20.0;

/// Darkest acceptable mean brightness (0-255) of the face: below it, skin is lost in shadow.
pub const MIN_FACE_BRIGHTNESS: f32 = 60.0;

/// Brightest acceptable mean brightness (0-255) of the face: above it, skin washes out.
pub const MAX_FACE_BRIGHTNESS: f32 = 215.0;

/// Most of the face (fraction of pixels) that may be crushed black: a quarter is half the face
/// in deep shadow.
pub const MAX_FACE_CLIPPED_DARK: f32 = 0.25;

/// Most of the face that may be blown white: a fifth is a forehead and cheeks lost to a flash
/// or backlight (a well-lit face has a few percent of specular highlights).
pub const MAX_FACE_CLIPPED_BRIGHT: f32 = 0.2;

/// Darkest acceptable mean brightness of the whole picture when no face was found.
pub const MIN_SCENE_BRIGHTNESS: f32 = 35.0;

/// Brightest acceptable mean brightness of the whole picture when no face was found.
pub const MAX_SCENE_BRIGHTNESS: f32 = 235.0;

/// Most of the whole picture that may be crushed black when no face was found: dark clothes and
/// backgrounds are common (the astronaut's body below the chin has a quarter).
pub const MAX_SCENE_CLIPPED_DARK: f32 = 0.6;

/// Most of the whole picture that may be blown white when no face was found: a washed-out
/// photo hides the face it may hold (the astronaut brightened until her face is lost has 0.4).
pub const MAX_SCENE_CLIPPED_BRIGHT: f32 = 0.25;

/// A pixel at or below this value counts as crushed black.
const CLIP_LOW: u8 = 8;

/// A pixel at or above this value counts as blown white.
const CLIP_HIGH: u8 = 247;

/// One reason a photo is of poor quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityIssue {
    /// The picture or the face has too few pixels.
    LowResolution,
    /// The face is small in the frame.
    FaceTooSmall,
    /// Too little fine detail: out of focus, motion blur, or a blank or covered lens.
    Blurry,
    /// Underexposed.
    TooDark,
    /// Overexposed.
    TooBright,
}

impl QualityIssue {
    /// A short sentence for reasons shown to analysts.
    pub fn describe(self) -> &'static str {
        match self {
            QualityIssue::LowResolution => "too few pixels to see a face",
            QualityIssue::FaceTooSmall => "face is small in the frame",
            QualityIssue::Blurry => "picture lacks sharp detail",
            QualityIssue::TooDark => "picture is too dark",
            QualityIssue::TooBright => "picture is too bright",
        }
    }
}

/// Sharpness and exposure of one region.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionQuality {
    /// Variance of the 4-neighbour Laplacian on the resampled region.
    pub sharpness: f32,
    /// Mean brightness, 0-255.
    pub brightness: f32,
    /// Fraction of pixels crushed black (at most 8 of 255).
    pub clipped_dark: f32,
    /// Fraction of pixels blown white (at least 247 of 255).
    pub clipped_bright: f32,
}

/// Exposure limits for one kind of region.
struct ExposureLimits {
    min_brightness: f32,
    max_brightness: f32,
    max_clipped_dark: f32,
    max_clipped_bright: f32,
}

/// Measures the face inside `gray` (its box clamped to the picture), resampled to
/// [`FACE_SAMPLE_SIDE`] square. `None` if the box lies outside the picture.
pub fn measure_face(gray: &GrayImage, face: &FaceBox) -> Option<RegionQuality> {
    let (width, height) = gray.dimensions();
    let x0 = face.x.clamp(0, width as i32) as u32;
    let y0 = face.y.clamp(0, height as i32) as u32;
    let x1 = (i64::from(face.x) + i64::from(face.width)).clamp(0, i64::from(width)) as u32;
    let y1 = (i64::from(face.y) + i64::from(face.height)).clamp(0, i64::from(height)) as u32;
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let crop = imageops::crop_imm(gray, x0, y0, x1 - x0, y1 - y0).to_image();
    Some(measure(&resample(
        &crop,
        FACE_SAMPLE_SIDE,
        FACE_SAMPLE_SIDE,
    )))
}

/// Measures the whole picture, resampled so its short side is [`SCENE_SAMPLE_SIDE`].
pub fn measure_scene(gray: &GrayImage) -> RegionQuality {
    let (width, height) = gray.dimensions();
    let short = width.min(height).max(1);
    let scale = f64::from(SCENE_SAMPLE_SIDE) / f64::from(short);
    let w = ((f64::from(width) * scale).round() as u32).max(1);
    let h = ((f64::from(height) * scale).round() as u32).max(1);
    measure(&resample(gray, w, h))
}

/// Problems with the largest face, given the picture's size; empty when the face is good.
pub fn face_issues(
    picture: (u32, u32),
    face: &FaceBox,
    quality: &RegionQuality,
) -> Vec<QualityIssue> {
    let mut issues = Vec::new();
    if picture.0.min(picture.1) < MIN_IMAGE_SHORT_SIDE || face.width < MIN_FACE_PIXELS {
        issues.push(QualityIssue::LowResolution);
    }
    if face_ratio(picture, face) < MIN_FACE_RATIO {
        issues.push(QualityIssue::FaceTooSmall);
    }
    if quality.sharpness < MIN_FACE_SHARPNESS {
        issues.push(QualityIssue::Blurry);
    }
    exposure_issues(
        quality,
        &ExposureLimits {
            min_brightness: MIN_FACE_BRIGHTNESS,
            max_brightness: MAX_FACE_BRIGHTNESS,
            max_clipped_dark: MAX_FACE_CLIPPED_DARK,
            max_clipped_bright: MAX_FACE_CLIPPED_BRIGHT,
        },
        &mut issues,
    );
    issues
}

/// Problems with a picture in which no face was found; empty when it is good enough that the
/// absence of a face is meaningful.
pub fn scene_issues(picture: (u32, u32), quality: &RegionQuality) -> Vec<QualityIssue> {
    let mut issues = Vec::new();
    if picture.0.min(picture.1) < MIN_IMAGE_SHORT_SIDE {
        issues.push(QualityIssue::LowResolution);
    }
    if quality.sharpness < MIN_SCENE_SHARPNESS {
        issues.push(QualityIssue::Blurry);
    }
    exposure_issues(
        quality,
        &ExposureLimits {
            min_brightness: MIN_SCENE_BRIGHTNESS,
            max_brightness: MAX_SCENE_BRIGHTNESS,
            max_clipped_dark: MAX_SCENE_CLIPPED_DARK,
            max_clipped_bright: MAX_SCENE_CLIPPED_BRIGHT,
        },
        &mut issues,
    );
    issues
}

/// Face width over the picture's short side.
pub fn face_ratio(picture: (u32, u32), face: &FaceBox) -> f32 {
    face.width as f32 / picture.0.min(picture.1).max(1) as f32
}

fn exposure_issues(
    quality: &RegionQuality,
    limits: &ExposureLimits,
    issues: &mut Vec<QualityIssue>,
) {
    if quality.brightness < limits.min_brightness || quality.clipped_dark > limits.max_clipped_dark
    {
        issues.push(QualityIssue::TooDark);
    }
    if quality.brightness > limits.max_brightness
        || quality.clipped_bright > limits.max_clipped_bright
    {
        issues.push(QualityIssue::TooBright);
    }
}

/// `gray` resampled to `width x height`: box-averaging when shrinking to half or less (a 12 MP
/// photo shrinks in a few milliseconds instead of tens), a linear filter otherwise (box
/// averaging aliases near the original size).
pub fn resample(gray: &GrayImage, width: u32, height: u32) -> GrayImage {
    if width.saturating_mul(2) <= gray.width() && height.saturating_mul(2) <= gray.height() {
        imageops::thumbnail(gray, width, height)
    } else {
        imageops::resize(gray, width, height, FilterType::Triangle)
    }
}

/// Sharpness (variance of the Laplacian), mean brightness and clipped fraction of `gray`.
fn measure(gray: &GrayImage) -> RegionQuality {
    let (width, height) = gray.dimensions();
    let pixels = gray.as_raw();
    let count = pixels.len().max(1) as f64;
    let sum: u64 = pixels.iter().map(|&p| u64::from(p)).sum();
    let dark = pixels.iter().filter(|&&p| p <= CLIP_LOW).count();
    let bright = pixels.iter().filter(|&&p| p >= CLIP_HIGH).count();
    RegionQuality {
        sharpness: laplacian_variance(pixels, width as usize, height as usize) as f32,
        brightness: (sum as f64 / count) as f32,
        clipped_dark: (dark as f64 / count) as f32,
        clipped_bright: (bright as f64 / count) as f32,
    }
}

/// Variance of the 4-neighbour Laplacian over the interior pixels; 0 for pictures under 3 x 3.
fn laplacian_variance(pixels: &[u8], width: usize, height: usize) -> f64 {
    if width < 3 || height < 3 {
        return 0.0;
    }
    let (mut sum, mut sum_sq, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for y in 1..height - 1 {
        let row = y * width;
        for x in 1..width - 1 {
            let i = row + x;
            let lap = i32::from(pixels[i - 1])
                + i32::from(pixels[i + 1])
                + i32::from(pixels[i - width])
                + i32::from(pixels[i + width])
                - 4 * i32::from(pixels[i]);
            let lap = f64::from(lap);
            sum += lap;
            sum_sq += lap * lap;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum_sq / n - mean * mean).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    fn checkerboard(side: u32, cell: u32) -> GrayImage {
        GrayImage::from_fn(side, side, |x, y| {
            Luma([if (x / cell + y / cell) % 2 == 0 {
                40
            } else {
                200
            }])
        })
    }

    #[test]
    fn laplacian_variance_is_zero_on_flat_and_high_on_edges() {
        let flat = GrayImage::from_pixel(50, 50, Luma([90]));
        assert_eq!(laplacian_variance(flat.as_raw(), 50, 50), 0.0);
        let edges = checkerboard(50, 1);
        assert!(laplacian_variance(edges.as_raw(), 50, 50) > 100_000.0);
        assert_eq!(laplacian_variance(&[1, 2, 3, 4], 2, 2), 0.0);
    }

    #[test]
    fn blur_lowers_sharpness() {
        let sharp = measure(&checkerboard(128, 4));
        let soft = measure(&imageops::blur(&checkerboard(128, 4), 3.0));
        assert!(
            sharp.sharpness > 10.0 * soft.sharpness,
            "{sharp:?} {soft:?}"
        );
        assert!((sharp.brightness - 120.0).abs() < 1.0);
    }

    #[test]
    fn exposure_counts_clipped_pixels_on_both_ends() {
        let half = GrayImage::from_fn(10, 10, |x, _| Luma([if x < 5 { 0 } else { 255 }]));
        let q = measure(&half);
        assert_eq!((q.clipped_dark, q.clipped_bright), (0.5, 0.5));
        assert!((q.brightness - 127.5).abs() < 0.01);
        let mid = measure(&GrayImage::from_pixel(10, 10, Luma([100])));
        assert_eq!((mid.clipped_dark, mid.clipped_bright), (0.0, 0.0));
    }

    #[test]
    fn face_box_outside_the_picture_measures_nothing() {
        let img = checkerboard(100, 4);
        let outside = FaceBox {
            x: 200,
            y: 0,
            width: 50,
            height: 50,
        };
        assert_eq!(measure_face(&img, &outside), None);
        let partly = FaceBox {
            x: -10,
            y: 80,
            width: 50,
            height: 50,
        };
        assert!(measure_face(&img, &partly).is_some());
    }

    #[test]
    fn face_issues_name_each_failed_threshold() {
        let good = RegionQuality {
            sharpness: 200.0,
            brightness: 130.0,
            clipped_dark: 0.01,
            clipped_bright: 0.02,
        };
        let face = FaceBox {
            x: 100,
            y: 100,
            width: 120,
            height: 120,
        };
        assert!(face_issues((512, 512), &face, &good).is_empty());

        let small = FaceBox {
            width: 60,
            height: 60,
            ..face
        };
        assert_eq!(
            face_issues((512, 512), &small, &good),
            [QualityIssue::LowResolution, QualityIssue::FaceTooSmall]
        );
        let dark = RegionQuality {
            brightness: 30.0,
            ..good
        };
        assert_eq!(
            face_issues((512, 512), &face, &dark),
            [QualityIssue::TooDark]
        );
        let blown = RegionQuality {
            brightness: 200.0,
            clipped_bright: 0.3,
            ..good
        };
        assert_eq!(
            face_issues((512, 512), &face, &blown),
            [QualityIssue::TooBright]
        );
        let half_shadow = RegionQuality {
            clipped_dark: 0.3,
            ..good
        };
        assert_eq!(
            face_issues((512, 512), &face, &half_shadow),
            [QualityIssue::TooDark]
        );
        let soft = RegionQuality {
            sharpness: 10.0,
            ..good
        };
        assert_eq!(
            face_issues((512, 512), &face, &soft),
            [QualityIssue::Blurry]
        );
    }

    #[test]
    fn scene_issues_flag_blank_and_tiny_pictures() {
        let blank = measure_scene(&GrayImage::from_pixel(300, 200, Luma([128])));
        assert_eq!(scene_issues((300, 200), &blank), [QualityIssue::Blurry]);
        let busy = measure_scene(&checkerboard(300, 3));
        assert!(scene_issues((300, 300), &busy).is_empty(), "{busy:?}");
        assert_eq!(
            scene_issues((100, 300), &busy),
            [QualityIssue::LowResolution]
        );
    }
}
