//! Access: who is calling and what they may do.
//!
//! Every request passes [`layer`], which works out the caller ([`Principal`]) and puts it in
//! the request's extensions; routes that need to know who acted (cases, audit, keys) take it
//! as an extractor.
//!
//! Roles: `ingest` sends transactions, `analyst` reads and works cases, `admin` changes rules,
//! models and keys (and may do everything the others may).

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::http::error::ApiError;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sends transactions (tills, payment gateways).
    Ingest,
    /// Reads everything, works alerts and cases, labels transactions.
    Analyst,
    /// Rules, models, keys and users; everything else too.
    Admin,
}

/// The caller of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The user's name, or `key:<id>` for an API key.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("no principal on an authenticated route".into()))
    }
}

/// Works out the caller of a request.
///
/// PLACEHOLDER until sign-in and API keys land (issue 6, in progress this session): every
/// caller is the administrator `dev`.
pub async fn layer(mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(Principal {
        name: "dev".into(),
        role: Role::Admin,
    });
    next.run(req).await
}

/// The sign-in routes.
pub fn routes() -> axum::Router<crate::http::ApiContext> {
    axum::Router::new().route("/v1/auth/me", axum::routing::get(me))
}

/// `GET /v1/auth/me`: the caller.
async fn me(who: Principal) -> axum::Json<Principal> {
    axum::Json(who)
}
