//! From the request's photo field to a grayscale picture: base64, limits, format, pixels.
//!
//! Every limit is checked before the work it protects: the encoded length before base64
//! decoding, the format from the first bytes before any decoder runs, and the dimensions from
//! the image header before pixels are allocated. A decompression bomb (a small file declaring a
//! huge picture) is refused from its header, and the `image` crate's own [`Limits`] cap what a
//! decoder may allocate in case a header lies.

use std::io::Cursor;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use image::{DynamicImage, GrayImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use serde::{Deserialize, Serialize};

/// Largest photo accepted, in decoded bytes: a till or phone JPEG is well under 1 MiB; 8 MiB
/// leaves room for an uncompressed PNG from a webcam without letting one request hold much
/// memory.
pub const MAX_PHOTO_BYTES: usize = 8 * 1024 * 1024;

/// Largest width or height accepted, in pixels (no camera at a till produces more).
pub const MAX_DIMENSION: u32 = 8000;

/// Largest picture accepted, in pixels: 16 megapixels holds a 12 MP phone photo (4032 x 3024);
/// decoding one costs at most `MAX_PIXELS * 8` bytes (16-bit RGBA), the cap given to the decoder.
pub const MAX_PIXELS: u64 = 16_000_000;

/// What a decoder may allocate at once: the largest picture in the widest pixel type (16-bit
/// RGBA, 8 bytes a pixel) and nothing more.
const MAX_DECODER_ALLOC: u64 = MAX_PIXELS * 8;

/// Longest base64 text that can decode to [`MAX_PHOTO_BYTES`], plus room for a `data:` prefix
/// and line breaks; anything longer is refused before decoding.
const MAX_ENCODED_CHARS: usize = MAX_PHOTO_BYTES.div_ceil(3) * 4 * 77 / 76 + 256;

/// Standard alphabet, padding optional: some clients strip the trailing `=`.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A photo the caller sent that is refused, with the reason it can be told.
///
/// [`super::verify`] returns every variant except [`PhotoError::Corrupt`] as a rejected upload
/// (a 4xx for the field). A corrupt picture is not refused: it is scored as the outcome
/// `unreadable`, because a broken photo from a till is itself a signal for the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhotoError {
    /// The field was present but held nothing.
    #[error("photo is empty; leave the field out when there is no photo")]
    Empty,
    /// More bytes than [`MAX_PHOTO_BYTES`].
    #[error("photo is too large: {bytes} bytes, the limit is {max} bytes")]
    TooLarge {
        /// Size sent (for base64, what it decodes to; estimated when refused before decoding).
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Not base64 text, or a `data:` URL that is not base64-encoded.
    #[error("photo is not valid base64: {0}")]
    NotBase64(String),
    /// The bytes are neither JPEG nor PNG.
    #[error("photo is not a JPEG or PNG image")]
    UnsupportedFormat,
    /// The picture declares more pixels than the limits allow.
    #[error(
        "photo dimensions are too large ({detail}); the limit is {MAX_DIMENSION} pixels a side \
         and {MAX_PIXELS} pixels in all"
    )]
    DimensionsTooLarge {
        /// The declared size, or the decoder's account of the limit it hit.
        detail: String,
    },
    /// A JPEG or PNG that cannot be decoded (truncated, bad checksum, invalid data).
    #[error("photo could not be decoded: {0}")]
    Corrupt(String),
}

impl PhotoError {
    /// A stable machine-readable code for the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            PhotoError::Empty => "photo_empty",
            PhotoError::TooLarge { .. } => "photo_too_large",
            PhotoError::NotBase64(_) => "photo_not_base64",
            PhotoError::UnsupportedFormat => "photo_unsupported_format",
            PhotoError::DimensionsTooLarge { .. } => "photo_dimensions_too_large",
            PhotoError::Corrupt(_) => "photo_corrupt",
        }
    }
}

/// The two accepted encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhotoFormat {
    /// JPEG (JFIF or EXIF).
    Jpeg,
    /// PNG.
    Png,
}

impl PhotoFormat {
    /// File extension used by the photo store.
    pub fn extension(self) -> &'static str {
        match self {
            PhotoFormat::Jpeg => "jpg",
            PhotoFormat::Png => "png",
        }
    }

    /// Media type for serving the stored bytes.
    pub fn media_type(self) -> &'static str {
        match self {
            PhotoFormat::Jpeg => "image/jpeg",
            PhotoFormat::Png => "image/png",
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            PhotoFormat::Jpeg => ImageFormat::Jpeg,
            PhotoFormat::Png => ImageFormat::Png,
        }
    }
}

/// A decoded photo: its format, its size and its pixels in grayscale (all the checks need).
#[derive(Debug, Clone)]
pub struct DecodedPhoto {
    /// Encoding of the original bytes.
    pub format: PhotoFormat,
    /// Pixels, luma only, upright (EXIF orientation applied).
    pub gray: GrayImage,
}

/// The bytes of a base64 photo field: standard alphabet, padding optional, line breaks allowed,
/// optionally behind a `data:<type>;base64,` prefix (the stated type is ignored: the bytes are
/// sniffed later).
pub fn decode_base64(field: &str) -> Result<Vec<u8>, PhotoError> {
    if field.len() > MAX_ENCODED_CHARS {
        return Err(PhotoError::TooLarge {
            bytes: field.len() / 4 * 3,
            max: MAX_PHOTO_BYTES,
        });
    }
    let payload = strip_data_url(field.trim())?;
    let bytes = if payload.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: Vec<u8> = payload
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        BASE64.decode(compact)
    } else {
        BASE64.decode(payload)
    }
    .map_err(|e| PhotoError::NotBase64(e.to_string()))?;
    check_size(&bytes)?;
    Ok(bytes)
}

/// Refuses an empty or oversized photo (for raw uploads, which skip base64).
pub fn check_size(bytes: &[u8]) -> Result<(), PhotoError> {
    if bytes.is_empty() {
        return Err(PhotoError::Empty);
    }
    if bytes.len() > MAX_PHOTO_BYTES {
        return Err(PhotoError::TooLarge {
            bytes: bytes.len(),
            max: MAX_PHOTO_BYTES,
        });
    }
    Ok(())
}

/// The part of a `data:` URL after the comma, or the whole field when it is not one.
fn strip_data_url(field: &str) -> Result<&str, PhotoError> {
    let Some(rest) = field.strip_prefix("data:") else {
        return Ok(field);
    };
    let Some((header, payload)) = rest.split_once(',') else {
        return Err(PhotoError::NotBase64(
            "data URL has no comma before its data".into(),
        ));
    };
    if !header.ends_with(";base64") {
        return Err(PhotoError::NotBase64(
            "data URL is not base64-encoded (no ;base64)".into(),
        ));
    }
    Ok(payload)
}

/// The format named by the first bytes (magic numbers), or `None` for anything else.
pub fn sniff(bytes: &[u8]) -> Option<PhotoFormat> {
    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
    // SOI followed by the first marker's 0xFF: every JPEG (JFIF, EXIF, raw) starts this way.
    const JPEG_MAGIC: &[u8] = b"\xFF\xD8\xFF";
    if bytes.starts_with(PNG_MAGIC) {
        Some(PhotoFormat::Png)
    } else if bytes.starts_with(JPEG_MAGIC) {
        Some(PhotoFormat::Jpeg)
    } else {
        None
    }
}

/// Decodes a JPEG or PNG into upright grayscale pixels, within the limits above.
///
/// Refused: an empty or oversized input, anything but JPEG or PNG, declared dimensions over the
/// limits. Corrupt data gives [`PhotoError::Corrupt`]. Never panics on any input.
pub fn decode(bytes: &[u8]) -> Result<DecodedPhoto, PhotoError> {
    check_size(bytes)?;
    let format = sniff(bytes).ok_or(PhotoError::UnsupportedFormat)?;
    if format == PhotoFormat::Jpeg && !jpeg_has_end(bytes) {
        // The JPEG decoder fills a cut-off scan with gray and reports success; an upload cut
        // short is corrupt, whatever part of the picture survived.
        return Err(PhotoError::Corrupt(
            "JPEG ends before its end-of-image marker (truncated)".into(),
        ));
    }

    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
    reader.limits(limits);
    // Reads the header only: no pixel buffer exists yet.
    let mut decoder = reader.into_decoder().map_err(decode_error)?;

    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(PhotoError::Corrupt(format!(
            "image declares {width} x {height} pixels"
        )));
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PhotoError::DimensionsTooLarge {
            detail: format!("{width} x {height} pixels"),
        });
    }

    // A phone stores a portrait photo sideways with an EXIF tag; the face detector only finds
    // upright faces. An unreadable tag is ignored: the pixels are still usable.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let picture = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    let mut gray = DynamicImage::ImageLuma8(picture.into_luma8());
    gray.apply_orientation(orientation);
    Ok(DecodedPhoto {
        format,
        gray: gray.into_luma8(),
    })
}

/// Whether a JPEG has an end-of-image marker after its first scan. Walks the marker segments
/// from the start (skipping their contents, which may hold an EXIF thumbnail with its own
/// markers) to the first start-of-scan; after it, entropy-coded data escapes every 0xFF, so
/// the next 0xFF 0xD9 is the end of the image. Bytes after it (phone trailers) are allowed.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    const SOS: u8 = 0xDA;
    const EOI: u8 = 0xD9;
    let mut i = 2; // after SOI
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        let marker = bytes[i + 1];
        match marker {
            // Fill byte before a marker.
            0xFF => i += 1,
            SOS => return bytes[i..].windows(2).any(|w| w == [0xFF, EOI]),
            EOI => return false,
            // Markers without a length: TEM and the restart markers.
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(len) = bytes.get(i + 2..i + 4) else {
                    return false;
                };
                i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
        }
    }
    false
}

/// Sorts the `image` crate's errors into limits (refused) and everything else (corrupt).
fn decode_error(error: ImageError) -> PhotoError {
    match error {
        ImageError::Limits(limit) => PhotoError::DimensionsTooLarge {
            detail: limit.to_string(),
        },
        other => PhotoError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn png_bytes(width: u32, height: u32) -> Vec<u8> {
        let img = GrayImage::from_fn(width, height, |x, y| {
            image::Luma([((x * 7 + y * 3) % 256) as u8])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn base64_with_and_without_data_url_prefix_and_padding() {
        let png = png_bytes(4, 3);
        let plain = STANDARD.encode(&png);
        assert_eq!(decode_base64(&plain).unwrap(), png);
        let url = format!("data:image/png;base64,{plain}");
        assert_eq!(decode_base64(&url).unwrap(), png);
        let unpadded = plain.trim_end_matches('=');
        assert_ne!(unpadded.len(), plain.len(), "fixture should need padding");
        assert_eq!(decode_base64(unpadded).unwrap(), png);
        let wrapped: String = plain
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
            .collect();
        assert_eq!(decode_base64(&wrapped).unwrap(), png);
    }

    #[test]
    fn base64_errors_are_typed() {
        assert!(matches!(
            decode_base64("not base64!"),
            Err(PhotoError::NotBase64(_))
        ));
        assert!(matches!(
            decode_base64("data:image/png,iVBORw0K"),
            Err(PhotoError::NotBase64(m)) if m.contains(";base64")
        ));
        assert!(matches!(
            decode_base64("data:image/png;base64"),
            Err(PhotoError::NotBase64(_))
        ));
        assert_eq!(decode_base64(""), Err(PhotoError::Empty));
        assert_eq!(
            decode_base64("data:image/png;base64,"),
            Err(PhotoError::Empty)
        );
    }

    #[test]
    fn oversized_base64_is_refused_before_decoding() {
        let huge = "A".repeat(MAX_ENCODED_CHARS + 1);
        assert!(matches!(
            decode_base64(&huge),
            Err(PhotoError::TooLarge { .. })
        ));
        // Just over the decoded limit but short enough to decode: refused on the exact size.
        let bytes = vec![0u8; MAX_PHOTO_BYTES + 3];
        let text = STANDARD.encode(&bytes);
        assert!(text.len() <= MAX_ENCODED_CHARS);
        assert_eq!(
            decode_base64(&text),
            Err(PhotoError::TooLarge {
                bytes: MAX_PHOTO_BYTES + 3,
                max: MAX_PHOTO_BYTES
            })
        );
    }

    #[test]
    fn sniffs_only_jpeg_and_png() {
        assert_eq!(sniff(&png_bytes(2, 2)), Some(PhotoFormat::Png));
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some(PhotoFormat::Jpeg));
        assert_eq!(sniff(b"GIF89a......"), None);
        assert_eq!(sniff(b"\xFF\xD8"), None);
        assert_eq!(sniff(b""), None);
        assert_eq!(
            decode(b"GIF89a\x01\x00\x01\x00").unwrap_err(),
            PhotoError::UnsupportedFormat
        );
    }

    #[test]
    fn decodes_png_to_gray_with_its_size() {
        let decoded = decode(&png_bytes(40, 30)).unwrap();
        assert_eq!(decoded.format, PhotoFormat::Png);
        assert_eq!(decoded.gray.dimensions(), (40, 30));
        assert_eq!(decoded.gray.get_pixel(1, 2).0[0], 13);
    }

    #[test]
    fn jpeg_end_marker_is_required_after_the_scan() {
        let img = GrayImage::from_fn(32, 32, |x, y| image::Luma([(x * y) as u8]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        let jpeg = out.into_inner();
        assert!(jpeg_has_end(&jpeg));
        let mut trailer = jpeg.clone();
        trailer.extend_from_slice(b"phone trailer");
        assert!(jpeg_has_end(&trailer));
        assert!(decode(&trailer).is_ok());
        for cut in [3, 10, jpeg.len() / 2, jpeg.len() - 1] {
            assert!(!jpeg_has_end(&jpeg[..cut]), "cut at {cut}");
            assert!(
                matches!(decode(&jpeg[..cut]), Err(PhotoError::Corrupt(_))),
                "cut at {cut}"
            );
        }
        // A segment whose length runs past the end, and garbage where a marker should be.
        assert!(!jpeg_has_end(b"\xFF\xD8\xFF\xE0\xFF\xFF"));
        assert!(!jpeg_has_end(b"\xFF\xD8\xFF\xE0\x00\x02garbage\xFF\xD9"));
    }

    #[test]
    fn every_error_has_a_distinct_code() {
        let all = [
            PhotoError::Empty,
            PhotoError::TooLarge { bytes: 1, max: 1 },
            PhotoError::NotBase64(String::new()),
            PhotoError::UnsupportedFormat,
            PhotoError::DimensionsTooLarge {
                detail: String::new(),
            },
            PhotoError::Corrupt(String::new()),
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(PhotoError::code).collect();
        assert_eq!(codes.len(), all.len());
    }
}
