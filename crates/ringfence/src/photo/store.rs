//! Photos on disk, content-addressed: `<data>/photos/<first 2 hex>/<sha256 hex>.<jpg|png>`.
//!
//! A photo is stored once however often it is sent, and a transaction refers to it by its
//! SHA-256 ([`PhotoRef`]), so the engine's state and records never carry image bytes. Writes go
//! to a temporary file in the same directory, are synced, then renamed into place and the
//! directory synced: a reader sees a whole photo or none, and a reference written into a durable
//! record after [`PhotoStore::put`] returns survives a crash. Two writers of the same photo race
//! harmlessly: both rename identical bytes onto the same name.
//!
//! The first two hex digits fan the files out over 256 directories so no directory grows past
//! what file systems list quickly.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::decode::{sniff, PhotoFormat};

/// A stored photo's name: the SHA-256 of its bytes, written as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhotoRef([u8; 32]);

impl PhotoRef {
    /// The reference of these bytes.
    pub fn of(bytes: &[u8]) -> PhotoRef {
        PhotoRef(Sha256::digest(bytes).into())
    }

    /// The raw digest.
    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PhotoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A string that is not a photo reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("photo reference must be 64 lowercase hex digits (a SHA-256)")]
pub struct InvalidPhotoRef;

impl FromStr for PhotoRef {
    type Err = InvalidPhotoRef;

    /// Accepts exactly 64 lowercase hex digits, so a reference can never name another path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(InvalidPhotoRef);
        }
        let mut digest = [0u8; 32];
        for (out, pair) in digest.iter_mut().zip(bytes.chunks_exact(2)) {
            *out = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Ok(PhotoRef(digest))
    }
}

fn hex_value(c: u8) -> Result<u8, InvalidPhotoRef> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(InvalidPhotoRef),
    }
}

impl Serialize for PhotoRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PhotoRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A photo read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPhoto {
    /// Its encoding, from the file name.
    pub format: PhotoFormat,
    /// The bytes exactly as they were sent.
    pub bytes: Vec<u8>,
}

/// A failure of the photo store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The reference string is not a SHA-256 in hex.
    #[error(transparent)]
    InvalidRef(#[from] InvalidPhotoRef),
    /// Only JPEG and PNG bytes are stored.
    #[error("only JPEG and PNG photos are stored")]
    NotAPhoto,
    /// A stored file no longer matches its name (disk corruption or tampering).
    #[error("stored photo {0} does not match its hash")]
    Corrupted(PhotoRef),
    /// The file system failed.
    #[error("photo store {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Content-addressed photo files under a data directory.
#[derive(Debug, Clone)]
pub struct PhotoStore {
    root: PathBuf,
}

impl PhotoStore {
    /// Opens (creating if needed) the store in `<data_dir>/photos`.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<PhotoStore, StoreError> {
        let root = data_dir.as_ref().join("photos");
        fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(PhotoStore { root })
    }

    /// The directory holding the photos.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores a JPEG or PNG once and returns its reference; storing the same bytes again writes
    /// nothing. Blocking file IO with an fsync: call it off the async runtime.
    pub fn put(&self, bytes: &[u8]) -> Result<PhotoRef, StoreError> {
        let format = sniff(bytes).ok_or(StoreError::NotAPhoto)?;
        let photo = PhotoRef::of(bytes);
        let path = self.path_of(&photo, format);
        if path.is_file() {
            return Ok(photo);
        }
        let dir = self.root.join(fan_out(&photo));
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        write_atomically(&dir, &path, bytes)?;
        Ok(photo)
    }

    /// Reads a photo by its reference string, checking that the string is a SHA-256 (no other
    /// path can be named) and that the bytes still hash to it. `Ok(None)` if it is not stored.
    pub fn get(&self, reference: &str) -> Result<Option<StoredPhoto>, StoreError> {
        let photo: PhotoRef = reference.parse()?;
        for format in [PhotoFormat::Jpeg, PhotoFormat::Png] {
            let path = self.path_of(&photo, format);
            match fs::read(&path) {
                Ok(bytes) => {
                    if PhotoRef::of(&bytes) != photo {
                        return Err(StoreError::Corrupted(photo));
                    }
                    return Ok(Some(StoredPhoto { format, bytes }));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(StoreError::Io { path, source }),
            }
        }
        Ok(None)
    }

    /// Where a photo with this reference and format lives.
    pub fn path_of(&self, photo: &PhotoRef, format: PhotoFormat) -> PathBuf {
        self.root
            .join(fan_out(photo))
            .join(format!("{photo}.{}", format.extension()))
    }
}

/// The fan-out directory: the first two hex digits.
fn fan_out(photo: &PhotoRef) -> String {
    format!("{:02x}", photo.0[0])
}

/// Temp file in the target's directory (so the rename stays on one file system), synced, renamed
/// over the target, then the directory synced so the rename itself is durable.
fn write_atomically(dir: &Path, target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    // Unique per process and call; a crash can leave one behind, never a partial photo.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_err(&temp)(e));
    }
    if let Err(e) = fs::rename(&temp, target) {
        let _ = fs::remove_file(&temp);
        return Err(io_err(target)(e));
    }
    sync_dir(dir).map_err(io_err(dir))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened for syncing here; the rename is as durable as the platform
    // makes it.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really a png but sniffed as one";

    #[test]
    fn reference_round_trips_and_refuses_other_strings() {
        let photo = PhotoRef::of(b"abc");
        let text = photo.to_string();
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(text.parse::<PhotoRef>(), Ok(photo));
        for bad in [
            "",
            "../../etc/passwd",
            &text[..63],
            &format!("{text}0"),
            &text.to_uppercase(),
            &format!("../{}", &text[3..]),
            &format!("{}/{}", &text[..2], &text[3..]),
        ] {
            assert_eq!(bad.parse::<PhotoRef>(), Err(InvalidPhotoRef), "{bad:?}");
        }
        let json = serde_json::to_string(&photo).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<PhotoRef>(&json).unwrap(), photo);
        assert!(serde_json::from_str::<PhotoRef>("\"../x\"").is_err());
    }

    #[test]
    fn put_is_idempotent_and_get_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = PhotoStore::open(dir.path()).unwrap();
        let first = store.put(PNG).unwrap();
        let second = store.put(PNG).unwrap();
        assert_eq!(first, second);
        let path = store.path_of(&first, PhotoFormat::Png);
        assert!(path.starts_with(dir.path().join("photos").join(&first.to_string()[..2])));
        assert_eq!(fs::read(&path).unwrap(), PNG);
        let back = store.get(&first.to_string()).unwrap().unwrap();
        assert_eq!(
            back,
            StoredPhoto {
                format: PhotoFormat::Png,
                bytes: PNG.to_vec()
            }
        );
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn get_refuses_bad_references_and_reports_absent_and_corrupted() {
        let dir = tempfile::tempdir().unwrap();
        let store = PhotoStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.get("../secret"),
            Err(StoreError::InvalidRef(_))
        ));
        let absent = PhotoRef::of(b"never stored").to_string();
        assert!(store.get(&absent).unwrap().is_none());

        let photo = store.put(PNG).unwrap();
        fs::write(
            store.path_of(&photo, PhotoFormat::Png),
            b"\x89PNG\r\n\x1a\ntampered",
        )
        .unwrap();
        assert!(
            matches!(store.get(&photo.to_string()), Err(StoreError::Corrupted(p)) if p == photo)
        );
    }

    #[test]
    fn put_refuses_non_photos() {
        let dir = tempfile::tempdir().unwrap();
        let store = PhotoStore::open(dir.path()).unwrap();
        assert!(matches!(store.put(b"GIF89a"), Err(StoreError::NotAPhoto)));
        assert!(fs::read_dir(store.root()).unwrap().next().is_none());
    }
}
