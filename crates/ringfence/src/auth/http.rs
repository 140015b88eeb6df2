//! The access routes: `POST /v1/auth/login`, `POST /v1/auth/logout`, `GET /v1/auth/me`, and
//! for administrators `GET/POST /v1/keys`, `DELETE /v1/keys/{id}`, `GET/POST /v1/users`,
//! `DELETE /v1/users/{name}`, `PUT /v1/users/{name}/password`.
//!
//! A key is shown whole once, in the answer that creates it; lists show ids, names and roles.
//! A failed sign-in says only that the name or the password was wrong, never which.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use ringfence_core::event::{FieldError, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::keys::now_ms;
use super::rate::RateLimit;
use super::store::{KeyRow, UserRow};
use super::{origin, sessions, store_error, Principal, Role};
use crate::config::MIN_PASSWORD_LEN;
use crate::http::error::ApiError;
use crate::http::transactions::body_or_error;
use crate::http::ApiContext;

/// Longest user or key name.
const MAX_NAME: usize = 64;
/// Longest password (Argon2 takes any length; this bounds the work a request can ask for).
const MAX_PASSWORD: usize = 1024;

/// The access routes.
pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/me", get(me))
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}", delete(revoke_key))
        .route("/v1/users", get(list_users).post(create_user))
        .route("/v1/users/{name}", delete(delete_user))
        .route("/v1/users/{name}/password", put(set_password))
}

/// Parses a JSON body, naming the field at fault.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body_or_error(body)?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        if let Some(field) = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            ApiError::InvalidField(FieldError::new(field, "is not a field of this request"))
        } else if inner.is_data() && path != "." {
            ApiError::InvalidField(FieldError::new(path, msg))
        } else {
            ApiError::MalformedJson(msg)
        }
    })
}

/// A required text field, 1..=`max` characters.
fn required<'a>(
    value: &'a Option<String>,
    field: &'static str,
    max: usize,
) -> Result<&'a str, ApiError> {
    match value.as_deref() {
        None | Some("") => Err(FieldError::new(field, "is required").into()),
        Some(v) if v.chars().count() > max => {
            Err(FieldError::new(field, format!("is longer than {max} characters")).into())
        }
        Some(v) => Ok(v),
    }
}

/// A user name: 1..=64 letters, digits, `.`, `_`, `-` or `@`.
fn user_name(value: &Option<String>, field: &'static str) -> Result<String, ApiError> {
    let name = required(value, field, MAX_NAME)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(FieldError::new(
            field,
            "may hold only letters, digits, `.`, `_`, `-` and `@`",
        )
        .into());
    }
    Ok(name.to_owned())
}

/// A new password: 12..=1024 characters.
fn new_password(value: &Option<String>) -> Result<String, ApiError> {
    let password = required(value, "password", MAX_PASSWORD)?;
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(FieldError::new(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        )
        .into());
    }
    Ok(password.to_owned())
}

fn role(value: &Option<String>) -> Result<Role, ApiError> {
    let text = required(value, "role", 16)?;
    Role::parse(text)
        .ok_or_else(|| FieldError::new("role", "must be `ingest`, `analyst` or `admin`").into())
}

/// The address a request came from (unspecified when the server was not started with
/// connection info, as in router-only tests).
struct PeerIp(IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        ))
    }
}

/// The `{name, role}` the dashboard shows.
#[derive(Serialize)]
struct Me {
    name: String,
    role: Role,
}

/// `POST /v1/auth/login` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: Option<String>,
    password: Option<String>,
}

/// `POST /v1/auth/login`: checks the password, starts a session, sets the cookie.
async fn login(
    State(cx): State<ApiContext>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let auth = &cx.auth;
    // A page of another site must not sign a browser in as someone else (login CSRF).
    if headers.contains_key(header::ORIGIN)
        && !origin::is_same_origin(&headers, auth.public_origin.as_deref())
    {
        return Err(ApiError::Forbidden {
            code: "cross_origin",
            field: "origin",
            message: "sign in from this server's own page".into(),
        });
    }
    let req: Login = parse(body)?;
    let username = required(&req.username, "username", MAX_NAME)?.to_owned();
    let password = required(&req.password, "password", MAX_PASSWORD)?.to_owned();
    if let Err(wait) = auth.throttle.check(&username, ip) {
        return Err(ApiError::TooManyAttempts(wait.as_secs_f64().ceil() as u64));
    }
    let user = auth.store.user(&username).await.map_err(store_error)?;
    let ok = match &user {
        Some(u) => {
            auth.hasher
                .verify(password, u.password_hash.clone())
                .await?
        }
        None => {
            // The same work as a wrong password, so timing does not tell which names exist.
            let decoy = auth
                .decoy
                .get_or_try_init(|| auth.hasher.hash("not a password of anyone".into()))
                .await?;
            auth.hasher.verify(password, decoy.clone()).await?;
            false
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        if let Some(wait) = auth.throttle.failed(&username, ip) {
            tracing::warn!(user = %username, %ip, wait_s = wait.as_secs(), "repeated failed sign-ins");
        }
        return Err(ApiError::InvalidCredentials);
    };
    auth.throttle.succeeded(&username, ip);
    let now = now_ms();
    // Sessions left idle past their time go now and then; this is a rare enough moment.
    let idle_ms = auth.settings.session_idle.as_millis() as i64;
    if let Err(e) = auth.store.purge_sessions(now - idle_ms).await {
        tracing::warn!(error = %e, "could not purge idle sessions");
    }
    let token = sessions::new_token().map_err(|e| ApiError::Internal(e.to_string()))?;
    auth.store
        .insert_session(sessions::token_hash(&token), user.name.clone(), now)
        .await
        .map_err(store_error)?;
    tracing::info!(user = %user.name, %ip, "signed in");
    let cookie = sessions::set_cookie(&token, auth.secure(&headers));
    let mut res = Json(Me {
        name: user.name,
        role: user.role,
    })
    .into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// `POST /v1/auth/logout`: ends the session of the cookie (if any) and clears the cookie.
async fn logout(State(cx): State<ApiContext>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = sessions::token_from(&headers) {
        let hash = sessions::token_hash(token);
        cx.auth
            .store
            .delete_session(&hash)
            .await
            .map_err(store_error)?;
        cx.auth.sessions.forget(&hash);
    }
    let cookie = sessions::clear_cookie(cx.auth.secure(&headers));
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(res)
}

/// `GET /v1/auth/me`: the caller.
async fn me(who: Principal) -> Json<Principal> {
    Json(who)
}

/// A key as lists show it (never its hash).
#[derive(Serialize)]
struct KeyView {
    id: String,
    name: String,
    role: Role,
    created_by: String,
    created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used: Option<Timestamp>,
    /// The key's own rate limit, requests per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_per_second: Option<f64>,
    /// Its burst.
    #[serde(skip_serializing_if = "Option::is_none")]
    burst: Option<u64>,
}

impl From<KeyRow> for KeyView {
    fn from(k: KeyRow) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            role: k.role,
            created_by: k.created_by,
            created_at: Timestamp::from_millis(k.created_at),
            revoked_at: k.revoked_at.map(Timestamp::from_millis),
            last_used: k.last_used.map(Timestamp::from_millis),
            rate_per_second: k.limit.map(|l| l.per_second),
            burst: k.limit.map(|l| l.burst),
        }
    }
}

/// `GET /v1/keys`: every key, revoked ones included.
async fn list_keys(State(cx): State<ApiContext>) -> Result<Json<serde_json::Value>, ApiError> {
    let keys: Vec<KeyView> = cx
        .auth
        .store
        .keys()
        .await
        .map_err(store_error)?
        .into_iter()
        .map(KeyView::from)
        .collect();
    Ok(Json(serde_json::json!({ "keys": keys })))
}

/// `POST /v1/keys` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: Option<String>,
    role: Option<String>,
    /// The key's own rate limit, requests per second (else the node's default).
    rate_per_second: Option<f64>,
    /// Burst above the rate (default: one second's worth); needs `rate_per_second`.
    burst: Option<u64>,
}

/// `POST /v1/keys`: a new key; the answer is the only time it is shown.
async fn create_key(
    State(cx): State<ApiContext>,
    who: Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let req: NewKey = parse(body)?;
    let name = required(&req.name, "name", MAX_NAME)?;
    if name.chars().any(char::is_control) {
        return Err(FieldError::new("name", "may not hold control characters").into());
    }
    let role = role(&req.role)?;
    let limit = match (req.rate_per_second, req.burst) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(FieldError::new("burst", "needs `rate_per_second`").into());
        }
        (Some(rate), burst) => Some(RateLimit::new(rate, burst).map_err(|e| {
            let field = if e.starts_with("burst") {
                "burst"
            } else {
                "rate_per_second"
            };
            FieldError::new(field, e)
        })?),
    };
    let (row, key) = cx
        .auth
        .create_limited_key(name, role, &who.name, limit)
        .await?;
    tracing::info!(key = %row.id, role = role.as_str(), by = %who.name, "API key created");
    let mut view =
        serde_json::to_value(KeyView::from(row)).map_err(|e| ApiError::Internal(e.to_string()))?;
    view["key"] = serde_json::Value::String(key.expose().to_owned());
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /v1/keys/{id}`: revokes a key (it stays listed, with `revoked_at`). This node
/// refuses it at once, other nodes within their re-check time.
async fn revoke_key(
    State(cx): State<ApiContext>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !cx
        .auth
        .store
        .revoke_key(&id, now_ms())
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::NotFound(format!("no API key `{id}`")));
    }
    cx.auth.keys.forget_id(&id);
    cx.auth.buckets.forget(&id);
    tracing::info!(key = %id, by = %who.name, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// A user as lists show it (never the hash).
#[derive(Serialize)]
struct UserView {
    name: String,
    role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    created_at: Timestamp,
}

impl From<UserRow> for UserView {
    fn from(u: UserRow) -> Self {
        UserView {
            name: u.name,
            role: u.role,
            created_by: u.created_by,
            created_at: Timestamp::from_millis(u.created_at),
        }
    }
}

/// `GET /v1/users`.
async fn list_users(State(cx): State<ApiContext>) -> Result<Json<serde_json::Value>, ApiError> {
    let users: Vec<UserView> = cx
        .auth
        .store
        .users()
        .await
        .map_err(store_error)?
        .into_iter()
        .map(UserView::from)
        .collect();
    Ok(Json(serde_json::json!({ "users": users })))
}

/// `POST /v1/users` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: Option<String>,
    password: Option<String>,
    role: Option<String>,
}

/// `POST /v1/users`: a new user who signs in with `password`.
async fn create_user(
    State(cx): State<ApiContext>,
    who: Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let req: NewUser = parse(body)?;
    let name = user_name(&req.name, "name")?;
    let password = new_password(&req.password)?;
    let role = role(&req.role)?;
    if cx
        .auth
        .store
        .user(&name)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Err(ApiError::AlreadyExists {
            field: "name",
            message: format!("a user `{name}` exists already"),
        });
    }
    let row = UserRow {
        name: name.clone(),
        role,
        password_hash: cx.auth.hasher.hash(password).await?,
        created_by: Some(who.name.clone()),
        created_at: now_ms(),
    };
    if !cx
        .auth
        .store
        .insert_user(row.clone())
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::AlreadyExists {
            field: "name",
            message: format!("a user `{name}` exists already"),
        });
    }
    tracing::info!(user = %name, role = role.as_str(), by = %who.name, "user created");
    Ok((StatusCode::CREATED, Json(UserView::from(row))))
}

/// `DELETE /v1/users/{name}`: deletes a user and ends their sessions.
async fn delete_user(
    State(cx): State<ApiContext>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !cx
        .auth
        .store
        .delete_user(&name)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::NotFound(format!("no user `{name}`")));
    }
    cx.auth.sessions.forget_user(&name);
    tracing::info!(user = %name, by = %who.name, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/users/{name}/password` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: Option<String>,
}

/// `PUT /v1/users/{name}/password`: sets a new password and ends the user's sessions.
async fn set_password(
    State(cx): State<ApiContext>,
    who: Principal,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let req: NewPassword = parse(body)?;
    let password = new_password(&req.password)?;
    if cx
        .auth
        .store
        .user(&name)
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Err(ApiError::NotFound(format!("no user `{name}`")));
    }
    let hash = cx.auth.hasher.hash(password).await?;
    if !cx
        .auth
        .store
        .set_password(&name, hash)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::NotFound(format!("no user `{name}`")));
    }
    cx.auth.sessions.forget_user(&name);
    tracing::info!(user = %name, by = %who.name, "password changed");
    Ok(StatusCode::NO_CONTENT)
}
