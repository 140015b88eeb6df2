//! Cases (role `analyst`): the alert queue, one case with everything that explains it, the
//! analyst's actions on it, and the audit trail.
//!
//! - `GET /v1/cases?status=&sort=&limit=&before=`: the queue. The default order
//!   (`sort=priority`) is what a fraud team works down: cases nobody has taken first, then
//!   assigned ones, then closed; within each the riskiest (highest score) first, then the
//!   newest (closed cases alone, `status=closed`, newest first). `newest` and `risk` are the
//!   other orders. `before` takes the `next` cursor of the
//!   previous page (or, for `newest`, an alert id).
//! - `GET /v1/cases/{id}`: the alert, its transaction, the full decision (reasons, rule
//!   hits, the model's contributions), the photo check, the current label, links to its
//!   entities and the case's audit trail.
//! - `POST /v1/cases/{id}/assign` (to the caller), `/close` `{verdict, note}`, `/reopen`.
//! - `GET /v1/audit?actor=&target=&limit=&before=`: the audit trail, newest first.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use ringfence_core::event::FieldError;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::transactions::body_or_error;
use super::ApiContext;
use crate::auth::Principal;
use crate::cases::{
    self, AuditQuery, CaseError, CaseStatus, Change, Cursor, QueueQuery, QueueSort, Verdict,
};
use crate::host::cases::CaseActionError;

/// The routes of this module.
pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/v1/cases", get(list))
        .route("/v1/cases/{id}", get(one))
        .route("/v1/cases/{id}/assign", post(assign))
        .route("/v1/cases/{id}/close", post(close))
        .route("/v1/cases/{id}/reopen", post(reopen))
        .route("/v1/audit", get(audit))
}

impl From<CaseError> for ApiError {
    fn from(e: CaseError) -> Self {
        match e {
            CaseError::NotFound(id) => ApiError::NotFound(format!("no alert {id}")),
            CaseError::Conflict(m) => ApiError::Conflict(m),
            CaseError::Store(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<CaseActionError> for ApiError {
    fn from(e: CaseActionError) -> Self {
        match e {
            CaseActionError::Case(e) => e.into(),
            CaseActionError::Label(e) => e.into(),
        }
    }
}

/// The queue's query parameters (strings, so a bad one is named in the error).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `open`, `assigned` or `closed`.
    pub status: Option<String>,
    /// `priority` (default), `newest` or `risk`.
    pub sort: Option<String>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<String>,
    /// The previous page's `next`.
    pub before: Option<String>,
}

fn parse_limit(v: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::BadParam {
                field: "limit",
                message: format!("must be a whole number from 1 to {max}"),
            }),
    }
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::BadParam {
            field: "id",
            message: "a case id is a positive whole number (the alert's id)".into(),
        })
}

/// `GET /v1/cases`.
async fn list(
    State(cx): State<ApiContext>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    let status = match q.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => Some(CaseStatus::parse(s).ok_or_else(|| ApiError::BadParam {
            field: "status",
            message: "expected open, assigned or closed".into(),
        })?),
    };
    let sort = match q.sort.as_deref() {
        None | Some("") => QueueSort::Priority,
        Some(s) => QueueSort::parse(s).ok_or_else(|| ApiError::BadParam {
            field: "sort",
            message: "expected priority, newest or risk".into(),
        })?,
    };
    let limit = parse_limit(q.limit.as_deref(), 50, cases::MAX_LIMIT)?;
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Cursor::parse(s).ok_or_else(|| ApiError::BadParam {
            field: "before",
            message: "expected the `next` value of the previous page, or an alert id".into(),
        })?),
    };
    let items = cx
        .host
        .cases()
        .queue(QueueQuery {
            status,
            sort,
            limit,
            before,
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(cases::Cursor::after))
        .flatten();
    Ok(Json(json!({ "cases": items, "next": next })))
}

/// `GET /v1/cases/{id}`.
async fn one(
    State(cx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let Some((alert, case)) = cx
        .host
        .cases()
        .get(id)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    else {
        return Err(ApiError::NotFound(format!("no alert {id}")));
    };
    let stored = cx
        .host
        .store()
        .transaction(alert.transaction_id.clone())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .unwrap_or(Value::Null);
    let trail = cx
        .host
        .cases()
        .audit_trail(AuditQuery {
            target: Some(cases::target(id)),
            limit: 200,
            ..AuditQuery::default()
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let transaction = stored.get("transaction").cloned().unwrap_or(Value::Null);
    let decision = stored.get("decision").cloned().unwrap_or(Value::Null);
    let labels = stored.get("labels").cloned().unwrap_or(json!([]));
    let label = labels
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l.get("fraud"))
        .and_then(Value::as_bool)
        .map(|f| if f { "fraud" } else { "not_fraud" });
    let entities: Vec<Value> = serde_json::from_value(transaction.clone())
        .ok()
        .map(|tx| crate::investigate::entities_of(&tx))
        .unwrap_or_default()
        .into_iter()
        .map(|(kind, id)| json!({ "type": kind, "id": id }))
        .collect();
    let photo = transaction.get("retail").map(|r| {
        let reference = r.get("photo_ref").and_then(Value::as_str);
        json!({
            "status": r.get("photo").cloned().unwrap_or(Value::Null),
            "ref": reference,
            "url": reference.map(|s| format!("/v1/photos/{s}")),
        })
    });
    Ok(Json(json!({
        "case": case,
        "alert": alert,
        "transaction": transaction,
        "decision": decision,
        "why": why(&decision),
        "labels": labels,
        "label": label,
        "photo": photo,
        "entities": entities,
        "audit": trail,
    })))
}

/// The decision taken apart for the case view: each rule that hit with its points, and the
/// model's probability with the features that pushed it (its contributions).
fn why(decision: &Value) -> Value {
    let reasons = decision.get("reasons").and_then(Value::as_array);
    let rule_hits: Vec<Value> = reasons
        .into_iter()
        .flatten()
        .map(|r| {
            json!({
                "rule": r.get("rule"),
                "category": r.get("category"),
                "weight": r.get("weight"),
                "action": r.get("action"),
                "detail": r.get("detail"),
            })
        })
        .collect();
    let factors: Vec<Value> = reasons
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("factors").and_then(Value::as_array))
        .flatten()
        .cloned()
        .collect();
    json!({
        "score": decision.get("score"),
        "decision": decision.get("decision"),
        "rule_hits": rule_hits,
        "shadow": decision.get("shadow").cloned().unwrap_or(json!([])),
        "model": {
            "score": decision.get("model_score"),
            "challenger_score": decision.get("challenger_score"),
            "anomaly_score": decision.get("anomaly_score"),
            "contributions": factors,
        },
    })
}

/// `POST /v1/cases/{id}/assign`: the caller takes the case.
async fn assign(
    State(cx): State<ApiContext>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let case = cx.host.change_case(id, Change::Assign, &who).await?;
    Ok(Json(json!({ "case": case })))
}

/// `POST /v1/cases/{id}/reopen`.
async fn reopen(
    State(cx): State<ApiContext>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let case = cx.host.change_case(id, Change::Reopen, &who).await?;
    Ok(Json(json!({ "case": case })))
}

/// `POST /v1/cases/{id}/close` with `{"verdict": "fraud" | "false_positive", "note": "..."}`:
/// closes the case and stores the verdict as the transaction's label.
async fn close(
    State(cx): State<ApiContext>,
    who: Principal,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let body = body_or_error(body)?;
    let req: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let Some(fields) = req.as_object() else {
        return Err(ApiError::MalformedJson(
            "expected an object with `verdict` and optional `note`".into(),
        ));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["verdict", "note"].contains(&k.as_str()))
    {
        let name: String = unknown.chars().take(64).collect();
        return Err(FieldError::new(name, "is not a field of a verdict").into());
    }
    let verdict = match fields.get("verdict") {
        None | Some(Value::Null) => {
            return Err(
                FieldError::new("verdict", "is required (`fraud` or `false_positive`)").into(),
            )
        }
        Some(v) => v
            .as_str()
            .and_then(Verdict::parse)
            .ok_or_else(|| FieldError::new("verdict", "must be `fraud` or `false_positive`"))?,
    };
    let note = match fields.get("note") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() > cases::MAX_NOTE => {
            return Err(FieldError::new("note", "is longer than 2000 characters").into())
        }
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(FieldError::new("note", "must be a string").into()),
    };
    let (case, label) = cx.host.close_case(id, verdict, note, &who).await?;
    Ok(Json(json!({ "case": case, "label": label })))
}

/// The audit trail's query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this target (`case:42`, ...).
    pub target: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<String>,
    /// Only rows with an id below this (the previous page's `next`).
    pub before: Option<String>,
}

/// `GET /v1/audit`.
async fn audit(
    State(cx): State<ApiContext>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    let limit = parse_limit(q.limit.as_deref(), 100, cases::MAX_AUDIT_LIMIT)?;
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<i64>().map_err(|_| ApiError::BadParam {
            field: "before",
            message: "expected an audit row id".into(),
        })?),
    };
    for (field, v) in [("actor", &q.actor), ("target", &q.target)] {
        if v.as_ref().is_some_and(|v| v.len() > 256) {
            return Err(ApiError::BadParam {
                field,
                message: "is longer than 256 bytes".into(),
            });
        }
    }
    let rows = cx
        .host
        .cases()
        .audit_trail(AuditQuery {
            actor: q.actor.filter(|s| !s.is_empty()),
            target: q.target.filter(|s| !s.is_empty()),
            limit,
            before,
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(json!({ "audit": rows, "next": next })))
}
