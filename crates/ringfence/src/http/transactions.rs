//! `POST /transaction`, `POST /v1/transactions`, `POST /v1/transactions/batch` and
//! `GET /v1/transactions/{id}`.

pub mod multipart;

use axum::body::Bytes;
use axum::extract::multipart::Multipart;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ringfence_core::event::{FieldError, RawTransaction, MAX_ID_LEN};
use serde_json::value::RawValue;

use super::error::ApiError;
use super::ApiContext;
use crate::host::Parsed;

/// Turns a body rejection (e.g. over the size limit) into our JSON error.
pub fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge("the request body is larger than the server accepts".into())
        } else {
            ApiError::MalformedJson(r.body_text())
        }
    })
}

/// Parses one transaction, naming the field on error. Public for the fuzz targets (`fuzz/`).
pub fn parse_raw(bytes: &[u8]) -> Result<RawTransaction, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::MalformedJson("expected a JSON object".into()));
    }
    // Most bodies are valid: parse them plainly, and only parse a failing one again, tracking
    // the path, to name the field.
    if let Ok(raw) = serde_json::from_slice::<RawTransaction>(bytes) {
        return Ok(raw);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let raw: RawTransaction = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() && path != "." {
            ApiError::InvalidField(FieldError::new(
                path,
                describe_data_error(&inner.to_string()),
            ))
        } else if inner.is_data() {
            ApiError::MalformedJson("expected a JSON object".into())
        } else {
            ApiError::MalformedJson(inner.to_string())
        }
    })?;
    de.end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(raw)
}

/// Rewrites serde's "invalid type: integer `4111…`, expected a string" as "must be a string":
/// the offending value is never echoed (it could be a card number in the wrong field).
fn describe_data_error(msg: &str) -> String {
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        if let Some((_, expected)) = msg.rsplit_once(", expected ") {
            return format!("must be {expected}");
        }
        return "has an invalid value".into();
    }
    msg.to_owned()
}

/// `POST /v1/transactions` (and the legacy `POST /transaction`): decide one transaction, sent
/// as a JSON body (photo in base64) or as a `multipart/form-data` form (photo as a file part).
pub async fn create(State(cx): State<ApiContext>, req: Request) -> Result<Response, ApiError> {
    let parsed = if multipart::is_form(req.headers()) {
        parse_form(&cx, req).await
    } else {
        parse_json(&cx, req).await
    };
    let parsed = parsed.inspect_err(|e| {
        if e.status().is_client_error() {
            cx.rejected();
        }
    })?;
    let mut out = cx.host.submit(vec![parsed]).await?;
    match out.pop() {
        Some(s) => Ok(Json(s).into_response()),
        None => Err(ApiError::Internal("submit returned no decision".into())),
    }
}

/// A JSON body: parsed, then its base64 photo checked and stored.
async fn parse_json(cx: &ApiContext, req: Request) -> Result<Parsed, ApiError> {
    let body = body_or_error(Bytes::from_request(req, cx).await)?;
    let mut raw = parse_raw(&body)?;
    let photo = raw.photo.take();
    let mut parsed = cx.host.parse(raw)?;
    cx.host.check_photo(&mut parsed, photo).await??;
    Ok(parsed)
}

/// A form: every part read, the transaction parsed, then the photo part checked and stored,
/// so a refused part or field stores nothing.
async fn parse_form(cx: &ApiContext, req: Request) -> Result<Parsed, ApiError> {
    let form = Multipart::from_request(req, cx)
        .await
        .map_err(multipart::rejected)?;
    let form = multipart::read(form).await?;
    let raw = parse_raw(&form.transaction).map_err(multipart::name_the_part)?;
    if raw.photo.is_some() {
        return Err(FieldError::new(
            "photo",
            format!(
                "goes in the form's `{}` part, not inside `{}`",
                multipart::PHOTO_PART,
                multipart::TRANSACTION_PART
            ),
        )
        .into());
    }
    let mut parsed = cx.host.parse(raw)?;
    cx.host.check_photo_bytes(&mut parsed, form.photo).await??;
    Ok(parsed)
}

/// A batch body split into its transactions' JSON texts, and whether it was a JSON array (else
/// NDJSON: one transaction per non-empty line). Public for the fuzz targets (`fuzz/`).
pub fn batch_items(body: &[u8]) -> Result<(bool, Vec<&[u8]>), ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let is_array = first == Some(b'[');
    let items: Vec<&[u8]> = if is_array {
        let raws: Vec<&RawValue> = serde_json::from_slice(body)
            .map_err(|e| ApiError::MalformedJson(format!("batch array: {e}")))?;
        raws.into_iter().map(|r| r.get().as_bytes()).collect()
    } else {
        body.split(|b| *b == b'\n')
            .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
            .collect()
    };
    Ok((is_array, items))
}

/// `POST /v1/transactions/batch`: a JSON array or NDJSON of transactions; one result per
/// input, in order. Invalid entries are reported by index (0-based, counting non-empty
/// NDJSON lines) and the rest are decided.
pub async fn create_batch(
    State(cx): State<ApiContext>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_error(body)?;
    let (is_array, items) = batch_items(&body)?;
    let max = cx.host.settings().max_batch;
    if items.len() > max {
        return Err(ApiError::TooLarge(format!(
            "the batch has {} transactions; at most {max} are accepted per request",
            items.len()
        )));
    }

    let mut results: Vec<Option<Item>> = (0..items.len()).map(|_| None).collect();
    let mut valid: Vec<(usize, Parsed)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let parsed = match parse_raw(item) {
            Ok(mut raw) => {
                let photo = raw.photo.take();
                match cx.host.parse(raw) {
                    Ok(mut p) => match cx.host.check_photo(&mut p, photo).await? {
                        Ok(()) => Ok(p),
                        Err(e) => Err(ApiError::from(e)),
                    },
                    Err(e) => Err(ApiError::from(e)),
                }
            }
            Err(e) => Err(e),
        };
        match parsed {
            Ok(p) => valid.push((i, p)),
            Err(e) => {
                cx.rejected();
                results[i] = Some(Item::Error(
                    serde_json::json!({"index": i, "error": e.body()}),
                ));
            }
        }
    }
    let (indices, parsed): (Vec<usize>, Vec<Parsed>) = valid.into_iter().unzip();
    let decided = if parsed.is_empty() {
        Vec::new()
    } else {
        cx.host.submit(parsed).await?
    };
    for (i, s) in indices.into_iter().zip(decided) {
        results[i] = Some(Item::Decided(s));
    }
    // Each result is encoded straight into the body: no JSON tree per decision.
    let mut out = Vec::with_capacity(results.len() * 320 + 2);
    if is_array {
        out.push(b'[');
    }
    for (i, r) in results.iter().enumerate() {
        if is_array && i > 0 {
            out.push(b',');
        }
        let written = match r {
            Some(Item::Decided(s)) => serde_json::to_writer(&mut out, s),
            Some(Item::Error(e)) => serde_json::to_writer(&mut out, e),
            None => serde_json::to_writer(&mut out, &serde_json::Value::Null),
        };
        written.map_err(|e| ApiError::Internal(e.to_string()))?;
        if !is_array {
            out.push(b'\n');
        }
    }
    if is_array {
        out.push(b']');
    }
    let content_type = if is_array {
        "application/json"
    } else {
        "application/x-ndjson"
    };
    Ok(([(header::CONTENT_TYPE, content_type)], out).into_response())
}

/// One answer of a batch: a decision, or the error of an entry that was not decided.
enum Item {
    Decided(crate::host::Submitted),
    Error(serde_json::Value),
}

/// `GET /v1/transactions/{id}`: the stored event, its decision and its labels.
pub async fn get(
    State(cx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ApiError::BadParam {
            field: "id",
            message: format!("must be 1 to {MAX_ID_LEN} bytes"),
        });
    }
    match cx.host.store().transaction(id.clone()).await {
        Ok(Some(v)) => Ok(Json(v)),
        Ok(None) => Err(ApiError::NotFound(format!(
            "transaction `{id}` is not stored"
        ))),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}
