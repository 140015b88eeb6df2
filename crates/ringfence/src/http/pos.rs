//! The till page (`/pos?store=...&terminal=...`) and what it needs: the browser's camera, purchase
//! and return forms calling the API, and the decision with its reasons.
//!
//! The page is three static files built into the binary (`pos/till.html`, `till.css`,
//! `till.js`): no build step, no CDN, nothing fetched from elsewhere, so a till works on a store
//! network cut off from the internet. Everything it shows comes from the public API
//! (`POST /v1/transactions` as a multipart form with the captured photo,
//! `GET /v1/transactions/{id}`, `GET /v1/stores/{store}/transactions`, `GET /v1/photos/{sha256}`),
//! so the page is a client like any other and holds no state of its own.
//!
//! The camera (`getUserMedia`) works only in a secure context: `localhost`, `127.0.0.1`, or
//! HTTPS. A till reaching Ringfence by a LAN address needs a TLS-terminating proxy in front.
//! Scripts and styles are separate files so the page's Content-Security-Policy can forbid
//! inline script: a customer id or a reason shown on the page can never run as code.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::ApiContext;

/// The page: its layout and the two views (choose a store; the till itself).
const PAGE: &str = include_str!("pos/till.html");
/// The page's styles.
const STYLES: &str = include_str!("pos/till.css");
/// The page's behaviour: camera, capture, forms, results, recent list.
const SCRIPT: &str = include_str!("pos/till.js");

/// Only this origin's files; the camera's stream and captured photos are `blob:`/`mediastream:`
/// URLs; stored photos come from `/v1/photos`.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; media-src 'self' blob: mediastream:; connect-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The till page's routes.
pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/pos", get(page))
        .route("/pos/till.css", get(styles))
        .route("/pos/till.js", get(script))
}

/// `GET /pos`: the page. The store and terminal are read from the query by the script (a missing
/// store shows a form to choose one), so the HTML is the same for every till.
async fn page() -> Response {
    let mut res = asset(PAGE, "text/html; charset=utf-8");
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(self), microphone=()"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// `GET /pos/till.css`.
async fn styles() -> Response {
    asset(STYLES, "text/css; charset=utf-8")
}

/// `GET /pos/till.js`.
async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// A built-in file. Revalidated on every load (`no-cache`), so a till picks up a new version of
/// the page as soon as the server is upgraded.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
