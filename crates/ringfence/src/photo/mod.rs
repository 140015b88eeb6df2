//! Photo verification for purchases and returns: is there a usable photo of a face?
//!
//! A till sends a customer photo with a purchase or return (base64 JPEG or PNG in the JSON, or
//! raw bytes from a multipart upload). [`verify`] refuses a bad upload with a [`PhotoError`] the
//! API returns as a 4xx for the field, stores an accepted photo once in the [`PhotoStore`], and
//! judges it: the [`PhotoOutcome`] becomes a feature for the rules, the [`Measurements`] explain
//! it.
//!
//! # Layout
//! - [`decode`]: base64 and `data:` URLs, size and dimension limits, format sniffing, decoding
//!   to grayscale.
//! - [`face`]: the SeetaFace frontal detector (`rustface`) with its embedded model.
//! - [`quality`]: face size, sharpness and exposure against named thresholds.
//! - [`store`]: content-addressed files under the data directory, referenced by SHA-256.
//!
//! # Cost
//! Decoding and detection are CPU work (on one core, about 30 ms for a 512 x 512 photo and
//! 125 ms for a 12 MP one: BENCHMARKS.md) and storing does blocking file IO with an fsync, so an
//! async caller runs [`verify`] inside `tokio::task::spawn_blocking` and bounds how many run at
//! once (each holds the decoded picture and a copy of the 1.2 MB model).

pub mod decode;
pub mod face;
pub mod quality;
pub mod store;

use serde::{Deserialize, Serialize};

pub use decode::{PhotoError, PhotoFormat};
pub use face::{FaceBox, FaceError};
pub use quality::QualityIssue;
pub use store::{PhotoRef, PhotoStore, StoreError};

/// The verdict on one transaction's photo, a feature for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhotoOutcome {
    /// One or more faces, the largest of good size, sharpness and exposure.
    Verified,
    /// A usable picture without a face.
    NoFace,
    /// A face too small, blurry, dark or bright, or a picture too poor to tell.
    PoorQuality,
    /// A JPEG or PNG that could not be decoded.
    Unreadable,
    /// No photo was sent.
    Missing,
}

impl PhotoOutcome {
    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PhotoOutcome::Verified => "verified",
            PhotoOutcome::NoFace => "no_face",
            PhotoOutcome::PoorQuality => "poor_quality",
            PhotoOutcome::Unreadable => "unreadable",
            PhotoOutcome::Missing => "missing",
        }
    }
}

/// What was measured on a decoded photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// Encoding of the photo.
    pub format: PhotoFormat,
    /// Width in pixels (upright, after the EXIF orientation).
    pub width: u32,
    /// Height in pixels (upright, after the EXIF orientation).
    pub height: u32,
    /// Faces the detector found.
    pub faces_found: u32,
    /// The largest face's box, in the photo's pixels.
    pub face: Option<FaceBox>,
    /// The largest face's width over the photo's short side.
    pub face_ratio: Option<f32>,
    /// Variance of the Laplacian on the largest face resampled to 128 px, or on the whole
    /// picture resampled to a 256 px short side when no face was found.
    pub sharpness: f32,
    /// Mean brightness (0-255) of the same region.
    pub brightness: f32,
    /// Fraction of that region's pixels crushed black.
    pub clipped_dark: f32,
    /// Fraction of that region's pixels blown white.
    pub clipped_bright: f32,
    /// Time spent detecting faces, in milliseconds.
    pub detection_ms: f32,
}

/// The outcome for one photo with its reasons and numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// The verdict.
    pub outcome: PhotoOutcome,
    /// Why the photo is of poor quality (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<QualityIssue>,
    /// A sentence for analysts: why the outcome is not `verified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The numbers behind the outcome (absent for `missing` and `unreadable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurements: Option<Measurements>,
}

impl Verification {
    /// No photo was sent.
    pub fn missing() -> Verification {
        Verification {
            outcome: PhotoOutcome::Missing,
            issues: Vec::new(),
            detail: Some("no photo was sent".into()),
            measurements: None,
        }
    }

    fn unreadable(error: &PhotoError) -> Verification {
        Verification {
            outcome: PhotoOutcome::Unreadable,
            issues: Vec::new(),
            detail: Some(error.to_string()),
            measurements: None,
        }
    }
}

/// A checked photo: where it is stored (if one was sent) and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhotoCheck {
    /// The stored photo's reference; `None` when no photo was sent.
    pub photo: Option<PhotoRef>,
    /// The verdict and its numbers.
    pub verification: Verification,
}

/// Why [`verify`] gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The caller's photo is refused (answer 4xx with the message and [`PhotoError::code`]).
    #[error(transparent)]
    Rejected(#[from] PhotoError),
    /// Storing the photo failed (a server fault: 5xx).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The face detector could not run (a server fault: 5xx).
    #[error(transparent)]
    Detector(#[from] FaceError),
}

/// Checks a transaction's photo field (base64, optionally a `data:` URL): `None` is `missing`;
/// otherwise as [`verify_bytes`]. Blocking (CPU and file IO): run it in `spawn_blocking`.
pub fn verify(store: &PhotoStore, field: Option<&str>) -> Result<PhotoCheck, VerifyError> {
    let Some(field) = field else {
        return Ok(PhotoCheck {
            photo: None,
            verification: Verification::missing(),
        });
    };
    let bytes = decode::decode_base64(field)?;
    verify_bytes(store, &bytes)
}

/// Checks raw JPEG or PNG bytes (a multipart upload): refuses an empty, oversized, non-JPEG/PNG
/// or too-large-dimension photo; stores any other, including a corrupt one, which is kept as
/// evidence of what the till sent and judged `unreadable`. Blocking: run it in `spawn_blocking`.
pub fn verify_bytes(store: &PhotoStore, bytes: &[u8]) -> Result<PhotoCheck, VerifyError> {
    let verification = assess(bytes)?;
    let photo = store.put(bytes)?;
    Ok(PhotoCheck {
        photo: Some(photo),
        verification,
    })
}

/// Judges raw JPEG or PNG bytes without storing them. Refusals as in [`verify_bytes`]; a corrupt
/// picture is `Ok` with the outcome `unreadable`.
pub fn assess(bytes: &[u8]) -> Result<Verification, VerifyError> {
    let decoded = match decode::decode(bytes) {
        Ok(decoded) => decoded,
        Err(error @ PhotoError::Corrupt(_)) => return Ok(Verification::unreadable(&error)),
        Err(refused) => return Err(refused.into()),
    };
    let gray = &decoded.gray;
    let picture = gray.dimensions();
    let detection = face::detect(gray)?;

    // The largest face is the customer at the till; others are people behind them.
    let largest = detection.faces.first().and_then(|face| {
        quality::measure_face(gray, &face.bbox).map(|measured| (face.bbox, measured))
    });
    let (outcome, issues, region, face_box) = match largest {
        Some((bbox, measured)) => {
            let issues = quality::face_issues(picture, &bbox, &measured);
            let outcome = if issues.is_empty() {
                PhotoOutcome::Verified
            } else {
                PhotoOutcome::PoorQuality
            };
            (outcome, issues, measured, Some(bbox))
        }
        None => {
            let measured = quality::measure_scene(gray);
            let issues = quality::scene_issues(picture, &measured);
            // A blank, dark or tiny picture hides faces: that is poor quality, not "no face".
            let outcome = if issues.is_empty() {
                PhotoOutcome::NoFace
            } else {
                PhotoOutcome::PoorQuality
            };
            (outcome, issues, measured, None)
        }
    };

    let detail = match outcome {
        PhotoOutcome::Verified => None,
        PhotoOutcome::NoFace => Some("no face found in the photo".to_string()),
        _ => Some(
            issues
                .iter()
                .map(|issue| issue.describe())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    Ok(Verification {
        outcome,
        issues,
        detail,
        measurements: Some(Measurements {
            format: decoded.format,
            width: picture.0,
            height: picture.1,
            faces_found: u32::try_from(detection.faces.len()).unwrap_or(u32::MAX),
            face: face_box,
            face_ratio: face_box.map(|bbox| quality::face_ratio(picture, &bbox)),
            sharpness: region.sharpness,
            brightness: region.brightness,
            clipped_dark: region.clipped_dark,
            clipped_bright: region.clipped_bright,
            detection_ms: detection.millis as f32,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_match_json() {
        for outcome in [
            PhotoOutcome::Verified,
            PhotoOutcome::NoFace,
            PhotoOutcome::PoorQuality,
            PhotoOutcome::Unreadable,
            PhotoOutcome::Missing,
        ] {
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(json, format!("\"{}\"", outcome.as_str()));
        }
    }

    #[test]
    fn no_field_is_missing_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = PhotoStore::open(dir.path()).unwrap();
        let check = verify(&store, None).unwrap();
        assert_eq!(check.photo, None);
        assert_eq!(check.verification.outcome, PhotoOutcome::Missing);
        assert!(std::fs::read_dir(store.root()).unwrap().next().is_none());
    }

    #[test]
    fn refused_photos_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = PhotoStore::open(dir.path()).unwrap();
        let err = verify(&store, Some("R0lGODlhAQABAAAAACw=")).unwrap_err();
        assert!(matches!(
            err,
            VerifyError::Rejected(PhotoError::UnsupportedFormat)
        ));
        assert!(std::fs::read_dir(store.root()).unwrap().next().is_none());
    }
}
