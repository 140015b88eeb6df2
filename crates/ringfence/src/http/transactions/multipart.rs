//! The multipart form of `POST /v1/transactions`: a till sends the customer's photo as a file
//! part beside the transaction, not as base64 inside it (a third smaller, and a browser's
//! camera capture is a `Blob` already).
//!
//! The form has exactly two parts: `transaction`, the same JSON object as a JSON body but
//! without `photo`, and optionally `photo`, the JPEG or PNG bytes. Anything else (a part
//! missing, sent twice, or not one of these) is refused with the part's name as the field, so
//! a till's developer sees which part to fix. The request body limit covers the whole form,
//! and the photo's own limits are those of the JSON path (checked by the photo module).

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::http::{header, HeaderMap, StatusCode};
use ringfence_core::event::FieldError;

use crate::http::error::ApiError;

/// The part holding the transaction's JSON.
pub const TRANSACTION_PART: &str = "transaction";
/// The part holding the photo's bytes.
pub const PHOTO_PART: &str = "photo";

/// Longest part name echoed back in an error (the name is the caller's text).
const MAX_NAME_ECHO: usize = 64;

/// A transaction uploaded as a form, its parts read but not yet parsed.
#[derive(Debug)]
pub struct TransactionForm {
    /// The `transaction` part: a JSON object.
    pub transaction: Bytes,
    /// The `photo` part: JPEG or PNG bytes, when one was sent.
    pub photo: Option<Bytes>,
}

/// True when the request says it is `multipart/form-data` (any parameters, any case).
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// Reads every part of the form, refusing a missing, repeated, unnamed or unknown part.
///
/// A refused form is still read to its end (within the body limit) before the answer goes
/// out: a request body left unread makes the server close the connection, and a client that
/// pooled it would see its next request fail on a dead connection.
pub async fn read(mut form: Multipart) -> Result<TransactionForm, ApiError> {
    let result = read_parts(&mut form).await;
    if result.is_err() {
        while let Ok(Some(mut rest)) = form.next_field().await {
            while let Ok(Some(_)) = rest.chunk().await {}
        }
    }
    result
}

async fn read_parts(form: &mut Multipart) -> Result<TransactionForm, ApiError> {
    let mut transaction = None;
    let mut photo = None;
    while let Some(part) = form.next_field().await.map_err(malformed)? {
        let Some(name) = part.name().map(str::to_owned) else {
            return Err(FieldError::new(
                "body",
                format!(
                    "a form part has no name; send the parts `{TRANSACTION_PART}` and \
                     `{PHOTO_PART}`"
                ),
            )
            .into());
        };
        let slot = match name.as_str() {
            TRANSACTION_PART => &mut transaction,
            PHOTO_PART => &mut photo,
            _ => {
                return Err(FieldError::new(
                    name.chars().take(MAX_NAME_ECHO).collect::<String>(),
                    format!(
                        "is not a part of this form; send `{TRANSACTION_PART}` (the JSON \
                         transaction) and optionally `{PHOTO_PART}` (a JPEG or PNG)"
                    ),
                )
                .into())
            }
        };
        if slot.is_some() {
            return Err(
                FieldError::new(name, "is sent more than once; send each part once").into(),
            );
        }
        *slot = Some(part.bytes().await.map_err(malformed)?);
    }
    let transaction = transaction.ok_or_else(|| {
        FieldError::new(
            TRANSACTION_PART,
            format!("is missing: send the transaction's JSON object in a part named `{TRANSACTION_PART}`"),
        )
    })?;
    Ok(TransactionForm { transaction, photo })
}

/// A form that cannot be read: over the body limit, or not valid multipart.
fn malformed(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge("the request body is larger than the server accepts".into())
    } else {
        FieldError::new(
            "body",
            format!("is not valid multipart/form-data: {}", e.body_text()),
        )
        .into()
    }
}

/// A `multipart/form-data` request the extractor refuses (no boundary).
pub fn rejected(r: MultipartRejection) -> ApiError {
    FieldError::new(
        "body",
        format!("is not valid multipart/form-data: {}", r.body_text()),
    )
    .into()
}

/// Turns the `transaction` part's JSON error into one naming the part: the body is fine, the
/// part is not. Errors naming one of the transaction's own fields pass through.
pub fn name_the_part(e: ApiError) -> ApiError {
    match e {
        ApiError::MalformedJson(m) => FieldError::new(
            TRANSACTION_PART,
            format!("is not a JSON transaction object: {m}"),
        )
        .into(),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_form_data_is_a_form() {
        let mut headers = HeaderMap::new();
        assert!(!is_form(&headers));
        for (value, form) in [
            ("multipart/form-data; boundary=x", true),
            ("Multipart/Form-Data;boundary=\"x\"", true),
            ("multipart/form-data", true),
            ("multipart/mixed; boundary=x", false),
            ("application/json", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_form(&headers), form, "{value}");
        }
    }

    #[test]
    fn a_malformed_part_names_the_part_and_field_errors_pass() {
        let e = name_the_part(ApiError::MalformedJson("expected a JSON object".into()));
        assert_eq!(e.body()["field"], "transaction");
        assert_eq!(
            e.body()["message"],
            "transaction: is not a JSON transaction object: expected a JSON object"
        );
        let e = name_the_part(FieldError::new("items[0].price", "is required").into());
        assert_eq!(e.body()["field"], "items[0].price");
    }
}
