//! `GET /v1/photos/{sha256}`: a till photo by its content address, as the transaction record
//! names it (`retail.photo_ref`), for analysts and the till page to look at.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::ApiContext;
use crate::photo::PhotoRef;

/// A stored photo never changes (its name is its hash), but it is a picture of a person: a
/// browser may keep it, shared caches may not.
const CACHE: &str = "private, max-age=31536000, immutable";

/// The photo's bytes exactly as the till sent them, as `image/jpeg` or `image/png`.
pub async fn get(
    State(cx): State<ApiContext>,
    sha256: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let bad = || ApiError::BadParam {
        field: "sha256",
        message: "must be 64 lowercase hex digits (the photo's SHA-256, as in `photo_ref`)".into(),
    };
    let Path(sha256) = sha256.map_err(|_| bad())?;
    let photo: PhotoRef = sha256.parse().map_err(|_| bad())?;
    let Some(stored) = cx.host.stored_photo(photo).await? else {
        return Err(ApiError::NotFound(format!("no photo {photo} is stored")));
    };
    let mut res = stored.bytes.into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(stored.format.media_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{photo}\"")) {
        headers.insert(header::ETAG, etag);
    }
    Ok(res)
}
