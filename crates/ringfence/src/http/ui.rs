//! The analyst dashboard at `/`: a page shell and its scripts, styles and vendored libraries,
//! all built into the binary.
//!
//! Nothing is fetched from elsewhere and nothing needs node to build: the two libraries (uPlot
//! for charts, Cytoscape.js for the link graph) are vendored minified files from npm at pinned
//! versions (`ui/vendor/SOURCES` lists them with their checksums and licenses). Each page of the
//! dashboard is one script (`ui/live.js`, `ui/alerts.js`, ...) registering itself with the shell
//! (`ui/app.js`), which signs in, routes between pages and gives them the API.
//!
//! Every file is served with a strong ETag (its SHA-256, computed once) and `no-cache`, so a
//! browser revalidates with a 304 and picks up a new version as soon as the server is upgraded.
//! The Content-Security-Policy allows only this origin's scripts: a merchant name or a reason
//! shown on a page can never run as code.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::ApiContext;

/// One built-in file: its name under `/ui/`, type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the dashboard but the shell.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        content_type: CSS,
        body: include_bytes!("ui/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_bytes!("ui/app.js"),
    },
    Asset {
        name: "live.js",
        content_type: JS,
        body: include_bytes!("ui/live.js"),
    },
    Asset {
        name: "alerts.js",
        content_type: JS,
        body: include_bytes!("ui/alerts.js"),
    },
    Asset {
        name: "investigate.js",
        content_type: JS,
        body: include_bytes!("ui/investigate.js"),
    },
    Asset {
        name: "stores.js",
        content_type: JS,
        body: include_bytes!("ui/stores.js"),
    },
    Asset {
        name: "rules.js",
        content_type: JS,
        body: include_bytes!("ui/rules.js"),
    },
    Asset {
        name: "vendor/uplot-1.6.32.min.js",
        content_type: JS,
        body: include_bytes!("ui/vendor/uplot-1.6.32.min.js"),
    },
    Asset {
        name: "vendor/uplot-1.6.32.min.css",
        content_type: CSS,
        body: include_bytes!("ui/vendor/uplot-1.6.32.min.css"),
    },
    Asset {
        name: "vendor/cytoscape-3.34.4.min.js",
        content_type: JS,
        body: include_bytes!("ui/vendor/cytoscape-3.34.4.min.js"),
    },
];

/// The shell: navigation, sign-in, and the element each page draws into.
const SHELL: &[u8] = include_bytes!("ui/index.html");

/// Only this origin's scripts, styles, images and connections (WebSocket included). Styles
/// set from script (charts, the graph) go through the CSSOM, which the policy allows.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The strong ETag of each file, by index in [`ASSETS`], and the shell's last.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| a.body)
        .chain(std::iter::once(SHELL))
        .map(|body| {
            let digest = Sha256::digest(body);
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

/// The dashboard's routes.
pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/", get(shell))
        .route("/ui/{*file}", get(file))
}

/// `GET /`: the shell; every page of the dashboard is drawn in it.
async fn shell(headers: HeaderMap) -> Response {
    let etag = &ETAGS[ASSETS.len()];
    let mut res = serve(&headers, etag, SHELL, "text/html; charset=utf-8");
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// `GET /ui/{file}`: a built-in file, or 404.
async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => {
            let a = &ASSETS[i];
            serve(&headers, &ETAGS[i], a.body, a.content_type)
        }
        None => ApiError::NotFound(format!("no dashboard file `{name}`")).into_response(),
    }
}

/// The file, or 304 when the browser already holds this version.
fn serve(req: &HeaderMap, etag: &str, body: &'static [u8], content_type: &'static str) -> Response {
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let etag = HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"\""));
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let mut res = (common, body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}
