//! `GET /v1/entities/{type}/{id}`: an entity's risk profile (role `analyst`): counts (its
//! transactions, alerts, labelled fraud and not fraud, first and last seen), the engine's
//! current feature values, recent history with decisions and labels, its alerts and the
//! users, cards, devices and ips it is linked to.
//!
//! Types: the engine's (card, user, device, ip, merchant, terminal), which have feature
//! values, and stores and receipts, which are found through their transactions only.

use std::collections::BTreeSet;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use ringfence_core::event::EntityId;
use ringfence_core::state::EntityKind;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::investigate::entity_param;
use super::ApiContext;
use crate::investigate;
use crate::store::AlertQuery;

/// Query parameters.
#[derive(Debug, Deserialize)]
pub struct EntityQuery {
    /// Recent transactions to include (default 20, at most 200).
    pub limit: Option<u32>,
}

/// The profile, features, history, alerts and links of one entity.
pub async fn get(
    State(cx): State<ApiContext>,
    Path((kind, id)): Path<(String, String)>,
    q: Result<Query<EntityQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    let (kind_name, id) = entity_param(&cx, &kind, id)?;
    let engine_kind = EntityKind::parse(kind_name);
    let entity_id = EntityId::parse("id", &id)?;
    let limit = q.limit.unwrap_or(20).clamp(1, 200);
    let features = engine_kind.and_then(|k| cx.host.entity_features(k, &entity_id));
    let key = format!("{kind_name}:{id}");
    let internal = |e: crate::store::StoreError| ApiError::Internal(e.to_string());
    let recent = investigate::entity_history(cx.host.store(), &key, limit)
        .await
        .map_err(internal)?;
    if features.is_none() && recent.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no {kind_name} `{id}` has been seen"
        )));
    }
    let profile = investigate::entity_stats(cx.host.store(), &key)
        .await
        .map_err(internal)?;
    let mut users = BTreeSet::new();
    let mut cards = BTreeSet::new();
    let mut devices = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for t in &recent {
        for (set, v, own) in [
            (&mut users, &t.tx.user_id, kind_name == "user"),
            (&mut cards, &t.tx.card_id, kind_name == "card"),
            (&mut devices, &t.tx.device_id, kind_name == "device"),
            (&mut ips, &t.tx.ip, kind_name == "ip"),
        ] {
            if let Some(v) = v {
                if !(own && v == &entity_id) {
                    set.insert(v.as_str().to_owned());
                }
            }
        }
    }
    let alerts = if matches!(kind_name, "user" | "card") {
        cx.host
            .store()
            .alerts(AlertQuery {
                limit: Some(limit),
                account: Some(id.clone()),
                ..AlertQuery::default()
            })
            .await
            .map_err(internal)?
    } else {
        Vec::new()
    };
    let features: serde_json::Map<String, serde_json::Value> = features
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Ok(Json(json!({
        "type": kind_name,
        "id": id,
        "profile": profile,
        "features": features,
        "recent_transactions": recent.iter().map(investigate::EntityTx::summary).collect::<Vec<_>>(),
        "alerts": alerts,
        "linked": { "users": users, "cards": cards, "devices": devices, "ips": ips },
    })))
}
