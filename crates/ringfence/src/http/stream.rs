//! The live streams and statistics: `GET /v1/stream/transactions` (WebSocket: the feed of
//! stored decisions, sampled, with a statistics frame every second), `GET /v1/stream/alerts`
//! (WebSocket: every alert as it is stored, never sampled) and `GET /v1/live/stats` (the
//! per-second history, so charts are full when a page opens).
//!
//! A socket's task owns nothing but its receivers, so it costs the hub nothing when it is
//! slow: the feed skips batches it fell behind on; an alert listener that falls behind (or
//! whose socket accepts nothing for [`SEND_TIMEOUT`]) is closed with 1013 and a reason, since
//! a gap in alerts must be noticed. Every [`PING_EVERY`] the server pings; a client silent
//! for [`IDLE_LIMIT`] is gone and its task ends. At shutdown every socket is closed with 1001
//! (the server's graceful shutdown would otherwise wait for them forever). At each ping the
//! socket's credentials are checked again: a revoked key, a signed-out session or a deleted
//! user ends it with 1008 (policy) within a ping.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use ringfence_core::decision::Action;
use ringfence_core::event::EntityId;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio::time::{timeout, Instant};

use super::error::ApiError;
use super::ApiContext;
use crate::auth::Role;
use crate::live::row::LiveFilter;
use crate::live::{ClientGuard, Frame, LiveHub, Stream, HISTORY_SECONDS};

/// How often the server pings an open socket.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// A client that sent nothing (not even a pong) for this long is gone.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Longest one message may wait for the client to take it.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a closing message may wait (a client that takes nothing gets the TCP close).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// What tungstenite may buffer for a socket before a send waits: a slow client is noticed
/// by its own buffer filling, not by the server's memory.
const WRITE_BUFFER: usize = 256 * 1024;

/// The routes of this module.
pub fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/v1/stream/transactions", get(transactions))
        .route("/v1/stream/alerts", get(alerts))
        .route("/v1/live/stats", get(stats))
}

/// Query of `GET /v1/stream/transactions`. Values are read as text so that a bad one is
/// refused naming its field; an empty one (an untouched form field) counts as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    /// Decisions to show, comma-separated (`block` or `review,challenge,block`).
    decision: Option<String>,
    /// Only this store.
    store: Option<String>,
    /// Only amounts at or above.
    min_amount: Option<String>,
    /// Only amounts at or below.
    max_amount: Option<String>,
}

fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn amount(field: &'static str, v: &Option<String>) -> Result<Option<f64>, ApiError> {
    let Some(text) = present(v) else {
        return Ok(None);
    };
    match text.parse::<f64>() {
        Ok(a) if a.is_finite() && a >= 0.0 => Ok(Some(a)),
        _ => Err(ApiError::BadParam {
            field,
            message: format!("expected a non-negative amount, got `{text}`"),
        }),
    }
}

impl FeedQuery {
    fn filter(&self) -> Result<LiveFilter, ApiError> {
        let decisions = match present(&self.decision) {
            None => None,
            Some(list) => {
                let mut wanted = [false; 4];
                for name in list.split(',').map(str::trim) {
                    let action = Action::parse(name).ok_or_else(|| ApiError::BadParam {
                        field: "decision",
                        message: format!(
                            "`{name}` is not a decision; expected approve, review, challenge or block (comma-separated)"
                        ),
                    })?;
                    wanted[action as usize] = true;
                }
                Some(wanted)
            }
        };
        let store = present(&self.store)
            .map(|s| EntityId::parse("store", s).map(|id| id.as_str().to_owned()))
            .transpose()?;
        let min_amount = amount("min_amount", &self.min_amount)?;
        let max_amount = amount("max_amount", &self.max_amount)?;
        if let (Some(lo), Some(hi)) = (min_amount, max_amount) {
            if lo > hi {
                return Err(ApiError::BadParam {
                    field: "max_amount",
                    message: format!("must not be below min_amount ({lo})"),
                });
            }
        }
        Ok(LiveFilter {
            decisions,
            store,
            min_amount,
            max_amount,
        })
    }
}

/// A request that is not a WebSocket handshake, as our JSON error.
fn not_upgradable(r: WebSocketUpgradeRejection) -> ApiError {
    ApiError::BadParam {
        field: "upgrade",
        message: format!("this route speaks WebSocket only: {}", r.body_text()),
    }
}

/// `GET /v1/stream/transactions`: the filter is checked before the upgrade (a bad one is a
/// 400 naming its field), then the socket gets the feed.
async fn transactions(
    State(cx): State<ApiContext>,
    headers: HeaderMap,
    q: Result<Query<FeedQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    let filter = q.filter()?;
    let ws = ws.map_err(not_upgradable)?;
    let hub = cx.host.live();
    let listener = Listener::new(hub, Stream::Feed, hub.subscribe());
    let holder = Holder::of(&cx, &headers);
    Ok(ws
        .max_write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| feed(socket, listener, filter, holder)))
}

/// `GET /v1/stream/alerts`: every alert stored from now on, as JSON like a row of
/// `GET /v1/alerts` (without its id).
async fn alerts(
    State(cx): State<ApiContext>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(not_upgradable)?;
    let hub = cx.host.live();
    let listener = Listener::new(hub, Stream::Alerts, hub.subscribe_alerts());
    let holder = Holder::of(&cx, &headers);
    Ok(ws
        .max_write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| alert_stream(socket, listener, holder)))
}

/// A socket's subscription, taken before its handshake is answered: a client whose handshake
/// completed misses nothing published after that, and is counted among the open streams
/// (the upgrade callback runs only after the answer is sent). Dropped with the callback if
/// the upgrade fails.
struct Listener<T> {
    _open: ClientGuard,
    items: broadcast::Receiver<T>,
    closing: watch::Receiver<bool>,
}

impl<T> Listener<T> {
    fn new(hub: &std::sync::Arc<LiveHub>, stream: Stream, items: broadcast::Receiver<T>) -> Self {
        Listener {
            _open: hub.client(stream),
            items,
            closing: hub.closing(),
        }
    }
}

/// The credentials a socket was opened with, checked again at every ping: access is checked
/// at the upgrade, and without this a socket would go on streaming after its key was revoked,
/// its session signed out or its user deleted.
struct Holder {
    auth: std::sync::Arc<crate::auth::Auth>,
    /// Only the headers that carry credentials.
    headers: HeaderMap,
}

impl Holder {
    fn of(cx: &ApiContext, headers: &HeaderMap) -> Holder {
        let mut kept = HeaderMap::new();
        for name in [header::AUTHORIZATION, header::COOKIE] {
            for v in headers.get_all(&name) {
                kept.append(name.clone(), v.clone());
            }
        }
        if let Some(v) = headers.get("x-api-key") {
            kept.insert("x-api-key", v.clone());
        }
        Holder {
            auth: std::sync::Arc::clone(&cx.auth),
            headers: kept,
        }
    }

    /// Ends the socket when its credentials no longer give `analyst` (an unreachable store
    /// ends nothing).
    async fn check(&self) -> Result<(), End> {
        match self.auth.still_allowed(&self.headers, Role::Analyst).await {
            Some(false) => Err(End::Close(
                close_code::POLICY,
                "the credentials of this socket were revoked or have ended",
            )),
            Some(true) | None => Ok(()),
        }
    }
}

/// What ended a socket's loop.
enum End {
    /// The client closed or vanished: nothing more to send.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// Sends one message unless the client has taken nothing for [`SEND_TIMEOUT`].
async fn send(socket: &mut WebSocket, msg: Message) -> Result<(), End> {
    match timeout(SEND_TIMEOUT, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Close(
            close_code::AGAIN,
            "the client did not read for too long",
        )),
    }
}

/// Ends a socket: a close frame when there is someone to read it.
async fn finish(mut socket: WebSocket, end: End) {
    if let End::Close(code, reason) = end {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
    }
}

/// What the client sent: `Err` when it closed or vanished.
fn heard(msg: Option<Result<Message, axum::Error>>) -> Result<(), End> {
    match msg {
        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Err(End::Gone),
        // Pongs, pings (answered by the library) and anything else: the client is alive.
        Some(Ok(_)) => Ok(()),
    }
}

const SHUTTING_DOWN: End = End::Close(close_code::AWAY, "the server is shutting down");

/// One feed client until it leaves, stops reading, or the server shuts down.
async fn feed(
    mut socket: WebSocket,
    mut listener: Listener<Frame>,
    filter: LiveFilter,
    holder: Holder,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut last_heard = Instant::now();
    let end = loop {
        let step = tokio::select! {
            () = crate::live::closed(&mut listener.closing) => Err(SHUTTING_DOWN),
            msg = socket.recv() => heard(msg).map(|()| last_heard = Instant::now()),
            frame = listener.items.recv() => match frame {
                Ok(Frame::Tx(batch)) => match batch.message_for(&filter) {
                    Some(text) => send(&mut socket, Message::Text(text)).await,
                    None => Ok(()),
                },
                Ok(Frame::Stats(text)) => send(&mut socket, Message::Text(text)).await,
                // Fell behind: the feed is a sample, go on with the newest.
                Err(RecvError::Lagged(_)) => Ok(()),
                Err(RecvError::Closed) => Err(SHUTTING_DOWN),
            },
            _ = ping.tick() => match holder.check().await {
                Ok(()) => keepalive(&mut socket, last_heard).await,
                Err(end) => Err(end),
            },
        };
        if let Err(end) = step {
            break end;
        }
    };
    finish(socket, end).await;
}

/// One alert listener until it leaves, falls behind, or the server shuts down.
async fn alert_stream(mut socket: WebSocket, mut listener: Listener<Utf8Bytes>, holder: Holder) {
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut last_heard = Instant::now();
    let end = loop {
        let step = tokio::select! {
            () = crate::live::closed(&mut listener.closing) => Err(SHUTTING_DOWN),
            msg = socket.recv() => heard(msg).map(|()| last_heard = Instant::now()),
            alert = listener.items.recv() => match alert {
                Ok(text) => send(&mut socket, Message::Text(text)).await,
                Err(RecvError::Lagged(_)) => Err(End::Close(
                    close_code::AGAIN,
                    "too slow: alerts were missed; reconnect and read GET /v1/alerts for them",
                )),
                Err(RecvError::Closed) => Err(SHUTTING_DOWN),
            },
            _ = ping.tick() => match holder.check().await {
                Ok(()) => keepalive(&mut socket, last_heard).await,
                Err(end) => Err(end),
            },
        };
        if let Err(end) = step {
            break end;
        }
    };
    finish(socket, end).await;
}

/// Pings the client, or gives up on it when it has been silent too long.
async fn keepalive(socket: &mut WebSocket, last_heard: Instant) -> Result<(), End> {
    if last_heard.elapsed() > IDLE_LIMIT {
        return Err(End::Close(close_code::AWAY, "no answer to pings"));
    }
    send(socket, Message::Ping(bytes::Bytes::from_static(b"rf"))).await
}

/// Query of `GET /v1/live/stats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    /// How many of the latest seconds (default and most: 600).
    seconds: Option<String>,
}

/// `GET /v1/live/stats?seconds=N`: the latest finished seconds, oldest first, and the streams
/// open now.
async fn stats(
    State(cx): State<ApiContext>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(super::query_error)?;
    let n = match present(&q.seconds) {
        None => HISTORY_SECONDS,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=HISTORY_SECONDS).contains(&n) => n,
            _ => {
                return Err(ApiError::BadParam {
                    field: "seconds",
                    message: format!("expected a whole number within 1..={HISTORY_SECONDS}"),
                })
            }
        },
    };
    let live = cx.host.live();
    Ok(Json(serde_json::json!({
        "seconds": live.history(n),
        "streams": live.clients(),
        "site": cx.host.site().map(|s| s.name.as_str()),
    })))
}
