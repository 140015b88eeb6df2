//! The till page (`/pos?store=...`) and what it needs: the browser's camera, purchase and
//! return forms calling the API, and the decision with its reasons.

use axum::Router;

use super::ApiContext;

/// The till page's routes.
pub fn routes() -> Router<ApiContext> {
    Router::new()
}
