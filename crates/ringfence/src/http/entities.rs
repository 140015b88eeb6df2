//! `GET /v1/entities/{type}/{id}`: an entity's risk profile.

use std::collections::BTreeSet;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use ringfence_core::event::EntityId;
use ringfence_core::state::EntityKind;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::ApiContext;
use crate::store::AlertQuery;

/// Query parameters.
#[derive(Debug, Deserialize)]
pub struct EntityQuery {
    /// Recent transactions to include (default 20, at most 200).
    pub limit: Option<u32>,
}

/// Current feature values, link-graph group, recent transactions, alerts and linked entities.
pub async fn get(
    State(cx): State<ApiContext>,
    Path((kind, id)): Path<(String, String)>,
    q: Result<Query<EntityQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    let kind = EntityKind::parse(&kind).ok_or_else(|| ApiError::BadParam {
        field: "type",
        message: format!(
            "unknown entity type `{}`; expected one of card, user, device, ip, merchant, terminal",
            kind.chars().take(40).collect::<String>()
        ),
    })?;
    // A card looked up by its number is looked up by its token: the number goes no further.
    let id = if kind == EntityKind::Card && ringfence_core::event::looks_like_pan(&id) {
        cx.host.card_token(&id)
    } else {
        id
    };
    let id = EntityId::parse("id", &id)?;
    let limit = q.limit.unwrap_or(20).clamp(1, 200);
    let features = cx.host.entity_features(kind, &id);
    let recent = cx
        .host
        .store()
        .entity_transactions(format!("{}:{}", kind.as_str(), id.as_str()), limit)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if features.is_none() && recent.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no {} `{}` has been seen",
            kind.as_str(),
            id.as_str()
        )));
    }
    let mut users = BTreeSet::new();
    let mut cards = BTreeSet::new();
    let mut devices = BTreeSet::new();
    for (_, tx) in &recent {
        for (set, v, own) in [
            (&mut users, &tx.user_id, kind == EntityKind::User),
            (&mut cards, &tx.card_id, kind == EntityKind::Card),
            (&mut devices, &tx.device_id, kind == EntityKind::Device),
        ] {
            if let Some(v) = v {
                if !(own && v == &id) {
                    set.insert(v.as_str().to_owned());
                }
            }
        }
    }
    let alerts = if matches!(kind, EntityKind::User | EntityKind::Card) {
        cx.host
            .store()
            .alerts(AlertQuery {
                limit: Some(limit),
                account: Some(id.as_str().to_owned()),
                ..AlertQuery::default()
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
    } else {
        Vec::new()
    };
    let features: serde_json::Map<String, serde_json::Value> = features
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Ok(Json(json!({
        "type": kind.as_str(),
        "id": id.as_str(),
        "features": features,
        "recent_transactions": recent.into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
        "alerts": alerts,
        "linked": { "users": users, "cards": cards, "devices": devices },
    })))
}
