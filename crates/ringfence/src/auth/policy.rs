//! Which role each route needs: one table from (method, route path as the router matched it)
//! to [`Access`], checked by the access layer for every request.
//!
//! A route missing from the table needs `admin`: deny by default, so a route added without a
//! line here is closed, not open (and `every_route_has_a_line` fails until it gets one).
//! Roles are ordered: `admin` may do everything, `analyst` also what `ingest` may.

use super::Role;

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// A caller with at least this role.
    Role(Role),
}

use Access::Public;
const INGEST: Access = Access::Role(Role::Ingest);
const ANALYST: Access = Access::Role(Role::Analyst);
const ADMIN: Access = Access::Role(Role::Admin);

/// The table: `(method, path, access)`, paths as written in the router.
pub const POLICY: &[(&str, &str, Access)] = &[
    // The dashboard shell and its files, the till page's files, health and the API document.
    ("get", "/", Public),
    ("get", "/ui/{*file}", Public),
    ("get", "/pos", Public),
    ("get", "/pos/till.css", Public),
    ("get", "/pos/till.js", Public),
    ("get", "/healthz", Public),
    ("get", "/readyz", Public),
    ("get", "/openapi.json", Public),
    ("post", "/v1/auth/login", Public),
    // Who am I, and signing out: anyone signed in.
    ("get", "/v1/auth/me", INGEST),
    ("post", "/v1/auth/logout", INGEST),
    // Sending transactions, and what a till reads back.
    ("post", "/transaction", INGEST),
    ("post", "/v1/transactions", INGEST),
    ("post", "/v1/transactions/batch", INGEST),
    ("get", "/v1/transactions/{id}", INGEST),
    ("get", "/v1/stores/{store}/transactions", INGEST),
    ("get", "/v1/photos/{sha256}", INGEST),
    ("get", "/v1/receipts/{id}", INGEST),
    // Reading everything, and labelling.
    ("get", "/v1/entities/{type}/{id}", ANALYST),
    ("get", "/v1/alerts", ANALYST),
    ("post", "/v1/labels", ANALYST),
    ("get", "/v1/rules", ANALYST),
    ("get", "/v1/features", ANALYST),
    ("get", "/v1/models", ANALYST),
    ("get", "/v1/stats", ANALYST),
    ("get", "/metrics", ANALYST),
    ("get", "/v1/sites", ANALYST),
    ("get", "/v1/sites/feed", ANALYST),
    // The dashboard's pages (issue 6).
    ("get", "/v1/stream/transactions", ANALYST),
    ("get", "/v1/stream/alerts", ANALYST),
    ("get", "/v1/live/stats", ANALYST),
    ("get", "/v1/stores", ANALYST),
    ("get", "/v1/cases", ANALYST),
    ("get", "/v1/cases/{id}", ANALYST),
    ("post", "/v1/cases/{id}/assign", ANALYST),
    ("post", "/v1/cases/{id}/close", ANALYST),
    ("post", "/v1/cases/{id}/reopen", ANALYST),
    ("get", "/v1/audit", ANALYST),
    ("get", "/v1/search", ANALYST),
    ("post", "/v1/search", ANALYST),
    ("get", "/v1/graph/{type}/{id}", ANALYST),
    ("get", "/v1/rules/source", ANALYST),
    ("post", "/v1/rules/validate", ANALYST),
    ("post", "/v1/rules/backtest", ANALYST),
    // Changing how the engine decides, and who may do what.
    ("post", "/v1/rules/reload", ADMIN),
    ("put", "/v1/rules", ADMIN),
    ("post", "/v1/rules/{name}/mode", ADMIN),
    ("post", "/v1/models/reload", ADMIN),
    ("get", "/v1/deliveries/dead-letters", ADMIN),
    ("post", "/v1/deliveries/dead-letters/{id}/retry", ADMIN),
    ("get", "/v1/keys", ADMIN),
    ("post", "/v1/keys", ADMIN),
    ("delete", "/v1/keys/{id}", ADMIN),
    ("get", "/v1/users", ADMIN),
    ("post", "/v1/users", ADMIN),
    ("delete", "/v1/users/{name}", ADMIN),
    ("put", "/v1/users/{name}/password", ADMIN),
];

/// What `method` on the route `path` (as matched) needs. HEAD is treated as GET.
pub fn required(method: &str, path: &str) -> Access {
    let method = if method.eq_ignore_ascii_case("head") {
        "get"
    } else {
        method
    };
    POLICY
        .iter()
        .find(|(m, p, _)| m.eq_ignore_ascii_case(method) && *p == path)
        .map_or(ADMIN, |(_, _, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_routes_need_admin_and_roles_are_as_listed() {
        assert_eq!(required("GET", "/v1/secret-new-thing"), ADMIN);
        assert_eq!(required("DELETE", "/v1/alerts"), ADMIN);
        assert_eq!(required("GET", "/healthz"), Public);
        assert_eq!(required("HEAD", "/healthz"), Public);
        assert_eq!(required("POST", "/v1/transactions"), INGEST);
        assert_eq!(required("GET", "/metrics"), ANALYST);
        assert_eq!(required("POST", "/v1/rules/reload"), ADMIN);
    }

    #[test]
    fn every_route_has_a_line() {
        // The router's wildcard is written `{*file}`; ROUTES documents it as `{file}`.
        for (method, path) in crate::http::ROUTES {
            let path = if *path == "/ui/{file}" {
                "/ui/{*file}"
            } else {
                path
            };
            assert!(
                POLICY
                    .iter()
                    .any(|(m, p, _)| m.eq_ignore_ascii_case(method) && *p == path),
                "{method} {path} has no line in auth::policy::POLICY"
            );
        }
    }

    #[test]
    fn the_table_has_no_duplicates() {
        for (i, (m, p, _)) in POLICY.iter().enumerate() {
            assert!(
                !POLICY[i + 1..].iter().any(|(m2, p2, _)| m == m2 && p == p2),
                "{m} {p} listed twice"
            );
        }
    }
}
