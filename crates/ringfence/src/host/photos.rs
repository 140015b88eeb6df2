//! The till's photo on a purchase or return: checked (decode, face, quality) and stored
//! content-addressed before the transaction is decided, so the engine sees only the outcome
//! and the address, never image bytes.
//!
//! A photo arrives as base64 in the JSON body or as raw bytes from a multipart upload; both
//! take the same path from there. Stored photos are read back here too, for the API to serve.
//!
//! The check is CPU work of tens of milliseconds: it runs on the blocking pool, on at most one
//! core fewer than the machine has (at least one), so a burst of photos queues instead of
//! starving the async workers that decide everything else (and replicate, between sites).

use std::sync::Arc;

use bytes::Bytes;
use ringfence_core::event::{FieldError, TxKind};
use ringfence_core::retail::{PhotoStatus, Retail};

use super::{EngineHost, HostError, Parsed};
use crate::photo::store::StoredPhoto;
use crate::photo::{self, PhotoOutcome, PhotoRef, VerifyError};

fn status(outcome: PhotoOutcome) -> PhotoStatus {
    match outcome {
        PhotoOutcome::Verified => PhotoStatus::Verified,
        PhotoOutcome::NoFace => PhotoStatus::NoFace,
        PhotoOutcome::PoorQuality => PhotoStatus::PoorQuality,
        PhotoOutcome::Unreadable => PhotoStatus::Unreadable,
        PhotoOutcome::Missing => PhotoStatus::Missing,
    }
}

/// A till photo as the request carried it.
enum Upload {
    /// The JSON body's `photo` field: base64, optionally a `data:` URL.
    Base64(String),
    /// A multipart file part: the JPEG or PNG bytes themselves.
    Raw(Bytes),
}

impl EngineHost {
    /// Checks `photo` (base64, from the request) for the purchase or return in `parsed` and
    /// records its outcome and content address there. `Ok(Err(..))`: the photo is refused
    /// (too large, not JPEG or PNG, ...), a client error naming the `photo` field. A photo on
    /// a payment or refund is refused too: nothing would read it.
    pub async fn check_photo(
        &self,
        parsed: &mut Parsed,
        photo: Option<String>,
    ) -> Result<Result<(), FieldError>, HostError> {
        self.check_upload(parsed, photo.map(Upload::Base64)).await
    }

    /// As [`EngineHost::check_photo`] for a photo uploaded as raw JPEG or PNG bytes (a multipart
    /// file part): the same limits, outcomes and errors, without a detour through base64.
    pub async fn check_photo_bytes(
        &self,
        parsed: &mut Parsed,
        photo: Option<Bytes>,
    ) -> Result<Result<(), FieldError>, HostError> {
        self.check_upload(parsed, photo.map(Upload::Raw)).await
    }

    /// A stored photo by its content address, `None` if none is stored under it. The file is
    /// read (and its hash checked) on the blocking pool.
    pub async fn stored_photo(&self, photo: PhotoRef) -> Result<Option<StoredPhoto>, HostError> {
        let store = Arc::clone(&self.photos);
        tokio::task::spawn_blocking(move || store.get(&photo.to_string()))
            .await
            .map_err(|e| HostError::Storage(format!("photo read stopped: {e}")))?
            .map_err(|e| HostError::Storage(format!("photo {photo}: {e}")))
    }

    async fn check_upload(
        &self,
        parsed: &mut Parsed,
        photo: Option<Upload>,
    ) -> Result<Result<(), FieldError>, HostError> {
        let tx = &mut parsed.tx;
        if !matches!(tx.kind, TxKind::Purchase | TxKind::Return) {
            return Ok(match photo {
                Some(_) => Err(FieldError::new(
                    "photo",
                    "belongs to purchases and returns only (set `kind`)",
                )),
                None => Ok(()),
            });
        }
        let Some(photo) = photo else {
            return Ok(Ok(())); // outcome stays `missing`
        };
        let _slot = self
            .photo_slots
            .acquire()
            .await
            .map_err(|_| HostError::Overloaded)?;
        let store = Arc::clone(&self.photos);
        let checked = tokio::task::spawn_blocking(move || match photo {
            Upload::Base64(text) => photo::verify(&store, Some(&text)),
            Upload::Raw(bytes) => photo::verify_bytes(&store, &bytes),
        })
        .await
        .map_err(|e| HostError::Storage(format!("photo check stopped: {e}")))?;
        let check = match checked {
            Ok(c) => c,
            Err(VerifyError::Rejected(e)) => {
                // The error names the field once ("photo: is not valid base64 ...").
                let message = e.to_string();
                let message = message
                    .strip_prefix("photo ")
                    .unwrap_or(&message)
                    .to_owned();
                return Ok(Err(FieldError::new("photo", message)));
            }
            Err(e) => return Err(HostError::Storage(format!("photo: {e}"))),
        };
        let retail = tx.retail.get_or_insert_with(|| Box::new(Retail::default()));
        retail.photo = status(check.verification.outcome);
        retail.photo_ref = check.photo.map(|r| r.to_string());
        Ok(Ok(()))
    }
}
