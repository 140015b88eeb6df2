//! Cross-site request forgery and cross-site WebSocket hijacking: a request authenticated by
//! the session cookie that changes something (any method but GET/HEAD/OPTIONS) or opens a
//! WebSocket must come from a page of this server.
//!
//! Browsers send `Origin` on every such request (and on every WebSocket handshake) and a page
//! cannot forge it, so it is compared with the `Host` the request was sent to, or with
//! `--public-url` behind a proxy that rewrites `Host`. A missing `Origin` is refused: the
//! browsers the dashboard supports always send it, and API clients use keys, which are exempt
//! (another site's page cannot make a browser send a key it does not have).

use axum::http::{header, HeaderMap, Method};

/// Whether a cookie-authenticated request of this kind needs the origin check.
pub fn needs_check(method: &Method, headers: &HeaderMap) -> bool {
    let changes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    changes || websocket
}

/// Whether the request's `Origin` is this server: its `Host`, or `public_url`.
pub fn is_same_origin(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if public_url.is_some_and(|p| origin.eq_ignore_ascii_case(p)) {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| !authority.is_empty() && authority.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn only_this_servers_pages_pass() {
        assert!(is_same_origin(
            &headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"),
            None
        ));
        assert!(!is_same_origin(
            &headers(Some("http://evil.example"), "127.0.0.1:8080"),
            None
        ));
        assert!(!is_same_origin(
            &headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8080"),
            None
        ));
        assert!(!is_same_origin(
            &headers(Some("null"), "127.0.0.1:8080"),
            None
        ));
        assert!(!is_same_origin(&headers(None, "127.0.0.1:8080"), None));
        let proxied = headers(Some("https://fraud.example.com"), "10.0.0.5:8080");
        assert!(is_same_origin(&proxied, Some("https://fraud.example.com")));
        assert!(!is_same_origin(&proxied, None));
    }

    #[test]
    fn changes_and_websockets_are_checked_reads_are_not() {
        let h = HeaderMap::new();
        assert!(!needs_check(&Method::GET, &h));
        assert!(needs_check(&Method::POST, &h));
        assert!(needs_check(&Method::DELETE, &h));
        let mut ws = HeaderMap::new();
        ws.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(needs_check(&Method::GET, &ws));
    }
}
