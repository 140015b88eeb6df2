//! A durable position in the local store's sequence: the last record a background task (the
//! PostgreSQL shipper, the Redis alert outbox) has delivered, kept in a small file in the data
//! directory so the task resumes there after a restart.
//!
//! The file is written after the delivery it records, so a crash in between delivers some
//! records twice, never none: each consumer is idempotent for that reason.

use std::path::{Path, PathBuf};

/// The last delivered sequence number of one consumer, in `<data>/<name>`.
#[derive(Clone, Debug)]
pub struct SeqCursor {
    file: PathBuf,
}

impl SeqCursor {
    /// The cursor named `name` in `data_dir`.
    pub fn new(data_dir: &Path, name: &str) -> SeqCursor {
        SeqCursor {
            file: data_dir.join(name),
        }
    }

    /// Whether a position was ever saved.
    pub fn exists(&self) -> bool {
        self.file.exists()
    }

    /// The saved position; 0 (before every record) when there is none yet.
    pub fn load(&self) -> i64 {
        std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0)
    }

    /// Saves `seq`. Written whole and renamed into place, so a crash leaves the old or the
    /// new value; a failure only means records are delivered again (logged, not fatal).
    pub fn save(&self, seq: i64) {
        let tmp = self.file.with_extension("tmp");
        let saved =
            std::fs::write(&tmp, seq.to_string()).and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = saved {
            tracing::warn!(error = %e, file = %self.file.display(), "could not save a delivery cursor; records may be delivered again (harmless)");
        }
    }
}
