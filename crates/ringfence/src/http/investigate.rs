//! Investigate (role `analyst`): `GET /v1/search?q=` (or `POST` with the text in the body) and
//! `GET /v1/graph/{type}/{id}`.
//!
//! A query that looks like a card number (13 to 19 digits, spaces or dashes allowed, with a
//! valid check digit) is turned into the card's token with the node's card-hash key before
//! anything is looked up: the number itself is never stored, logged (the request log names
//! the route, never the query string) or sent back; the answer says it was hashed and shows
//! the token.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::ApiContext;
use crate::investigate::{self, GRAPH_TRANSACTIONS, MAX_GRAPH_NODES, PAGE_KINDS};

/// The routes of this module.
pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/v1/search", get(search).post(search_body))
        .route("/v1/graph/{type}/{id}", get(graph))
}

/// `q`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// What to look for.
    pub q: Option<String>,
}

/// The digits of `q` when it looks like a card number (spaces and dashes allowed).
pub fn card_number(q: &str) -> Option<String> {
    if !q
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
    {
        return None;
    }
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    ringfence_core::event::looks_like_pan(&digits).then_some(digits)
}

/// `GET /v1/search?q=`: `{query, hashed, results: [{type, id, transactions, last_seen}]}`.
async fn search(
    State(cx): State<ApiContext>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    search_for(&cx, &q.q.unwrap_or_default()).await
}

/// `POST /v1/search` with `{"q": "..."}`: the same search with the text in the body, which is
/// how the dashboard sends a card number, so the number is in no URL (browser history, proxy
/// logs); the answer's `query` is its token, which the page shows and links to instead.
async fn search_body(
    State(cx): State<ApiContext>,
    body: Result<Json<SearchQuery>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(q) = body.map_err(|r| ApiError::MalformedJson(r.body_text()))?;
    search_for(&cx, &q.q.unwrap_or_default()).await
}

/// One search: a card number by its token only, anything else by its text.
async fn search_for(cx: &ApiContext, q: &str) -> Result<Json<Value>, ApiError> {
    let q = q.trim();
    if q.is_empty() || q.len() > ringfence_core::event::MAX_ID_LEN {
        return Err(ApiError::BadParam {
            field: "q",
            message: "give 1 to 128 bytes to search for".into(),
        });
    }
    let records = cx.host.store();
    let map = |e: crate::store::StoreError| ApiError::Internal(e.to_string());
    if let Some(pan) = card_number(q) {
        let token = cx.host.card_token(&pan);
        drop(pan);
        let hits = investigate::search_kind(records, "card", &token)
            .await
            .map_err(map)?;
        return Ok(Json(json!({
            "query": token,
            "hashed": true,
            "note": "a card number was given: it was hashed with this node's card key and only its token was looked up",
            "results": hits.into_iter().collect::<Vec<_>>(),
        })));
    }
    let hits = investigate::search(records, q).await.map_err(map)?;
    Ok(Json(
        json!({ "query": q, "hashed": false, "results": hits }),
    ))
}

/// `limit` of the graph.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    /// Most nodes (default 100, at most 300).
    pub limit: Option<String>,
}

/// `GET /v1/graph/{type}/{id}?limit=`: the entity's 1-hop neighbourhood from its stored
/// transactions: `{center, nodes: [{id, type, label, fraud, alerts, transactions}], edges:
/// [{source, target, transactions}], truncated}`.
async fn graph(
    State(cx): State<ApiContext>,
    Path((kind, id)): Path<(String, String)>,
    q: Result<Query<GraphQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    let (kind, id) = entity_param(&cx, &kind, id)?;
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_GRAPH_NODES).contains(n))
            .ok_or_else(|| ApiError::BadParam {
                field: "limit",
                message: format!("must be a whole number from 1 to {MAX_GRAPH_NODES}"),
            })?,
    };
    let history =
        investigate::entity_history(cx.host.store(), &format!("{kind}:{id}"), GRAPH_TRANSACTIONS)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    if history.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no stored transaction names {kind} `{id}`"
        )));
    }
    let g = investigate::graph(kind, &id, &history, GRAPH_TRANSACTIONS as usize, limit);
    Ok(Json(
        serde_json::to_value(g).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

/// Checks an entity page's `{type}` and `{id}`; a card given by its number becomes its token.
pub fn entity_param(
    cx: &ApiContext,
    kind: &str,
    id: String,
) -> Result<(&'static str, String), ApiError> {
    let Some(kind) = PAGE_KINDS.iter().find(|k| **k == kind).copied() else {
        return Err(ApiError::BadParam {
            field: "type",
            message: format!(
                "unknown entity type `{}`; expected one of {}",
                kind.chars().take(40).collect::<String>(),
                PAGE_KINDS.join(", ")
            ),
        });
    };
    let id = match (kind, card_number(&id)) {
        ("card", Some(pan)) => cx.host.card_token(&pan),
        _ => id,
    };
    let id = ringfence_core::event::EntityId::parse("id", &id)?;
    Ok((kind, id.as_str().to_owned()))
}
