//! `GET /v1/stores/{store}/transactions`: a store's latest purchases and returns, or one
//! till's, with their decisions and photo outcomes; what the till page lists. `GET
//! /v1/stores`: the stores of the latest records with their counts (the dashboard's Stores
//! page).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use ringfence_core::event::EntityId;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::ApiContext;

/// Query parameters.
#[derive(Debug, Deserialize)]
pub struct StoreQuery {
    /// Only this terminal's transactions (at this store).
    pub terminal: Option<String>,
    /// Most transactions to list (default 20, at most 100).
    pub limit: Option<u32>,
}

/// Records `GET /v1/stores` looks at unless asked otherwise.
const STORES_WINDOW: u32 = 5000;
/// Most records it may look at.
const MAX_STORES_WINDOW: u32 = 50_000;

/// Query of `GET /v1/stores`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoresQuery {
    /// How many of the latest records to look at (default 5000, at most 50000).
    pub window: Option<String>,
}

/// The stores seen in the latest records, by name, with their transactions, purchases,
/// returns, flagged and blocked counts and the time of their newest transaction.
pub async fn list(
    State(cx): State<ApiContext>,
    q: Result<Query<StoresQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    let window = match q.window.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
        None => STORES_WINDOW,
        Some(w) => match w.parse::<u32>() {
            Ok(n) if (1..=MAX_STORES_WINDOW).contains(&n) => n,
            _ => {
                return Err(ApiError::BadParam {
                    field: "window",
                    message: format!("expected a whole number within 1..={MAX_STORES_WINDOW}"),
                })
            }
        },
    };
    let stores = cx
        .host
        .store()
        .recent_stores(window)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({ "window": window, "stores": stores })))
}

/// Newest first: id, time, kind, amount, decision, score, terminal, receipt, customer, items,
/// the photo's outcome and its address (`/v1/photos/{photo_ref}`).
pub async fn transactions(
    State(cx): State<ApiContext>,
    store: Result<Path<String>, PathRejection>,
    q: Result<Query<StoreQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(store) = store.map_err(|e| ApiError::BadParam {
        field: "store",
        message: e.body_text(),
    })?;
    let Query(q) = q.map_err(super::query_error)?;
    let store = EntityId::parse("store", &store)?;
    let terminal = q
        .terminal
        .as_deref()
        .map(|t| EntityId::parse("terminal", t))
        .transpose()?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    // A terminal's list is the smaller one; the store filter drops a terminal id that another
    // store uses too.
    let entity = match &terminal {
        Some(t) => format!("terminal:{}", t.as_str()),
        None => format!("store:{}", store.as_str()),
    };
    let recent = cx
        .host
        .store()
        .entity_transactions(entity, limit)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let listed: Vec<serde_json::Value> = recent
        .into_iter()
        .filter(|(_, tx)| tx.store_id.as_ref() == Some(&store))
        .map(|(summary, tx)| {
            let retail = tx.retail.as_deref();
            json!({
                "transaction_id": summary.transaction_id,
                "timestamp": summary.timestamp,
                "kind": tx.kind.as_str(),
                "amount": summary.amount,
                "decision": summary.decision,
                "score": summary.score,
                "terminal_id": tx.terminal_id.as_ref().map(EntityId::as_str),
                "receipt_id": retail.and_then(|r| r.receipt_id.as_ref()).map(EntityId::as_str),
                "customer_id": retail.and_then(|r| r.customer_id.as_ref()).map(EntityId::as_str),
                "items": retail.map(|r| &r.items),
                "photo": retail.map(|r| r.photo),
                "photo_ref": retail.and_then(|r| r.photo_ref.as_deref()),
            })
        })
        .collect();
    Ok(Json(json!({
        "store_id": store.as_str(),
        "terminal_id": terminal.as_ref().map(EntityId::as_str),
        "transactions": listed,
    })))
}
