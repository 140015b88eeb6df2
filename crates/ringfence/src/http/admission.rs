//! Admission: a bounded number of requests in progress and of request-body bytes held, so an
//! overloaded node turns work away at the door instead of queueing it without bound.
//!
//! Past either bound a request is answered at once with 503, a JSON `overloaded` error and
//! `Retry-After`; nothing of it is read or applied. Why refuse instead of wait: a request
//! queued behind hundreds of others is answered late anyway, and a payment authorisation that
//! arrives late is as good as lost, while a prompt 503 lets the client retry elsewhere or fall
//! back to its own rules. What is accepted keeps the latency the node can give it, memory
//! stays bounded (requests × their bodies), and the write queue behind (see
//! [`crate::store::Writer`]) only absorbs bursts.
//!
//! A request reserves its declared `Content-Length`, or the body limit when it declares none
//! (chunked), in units of 1 KiB, before its body is read. Health checks and metrics are exempt,
//! so monitoring sees an overloaded node as up and can tell why it refuses.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::ApiContext;

/// Body bytes are counted in these units (a semaphore holds at most `u32::MAX` permits).
const UNIT: usize = 1024;

/// The two bounds, shared by every connection.
#[derive(Debug)]
pub struct Admission {
    requests: Semaphore,
    body_units: Semaphore,
    max_body_units: u32,
}

impl Admission {
    /// At most `max_requests` in progress holding at most `max_body_bytes` of bodies, where
    /// a request without a declared length may send up to `body_limit` bytes.
    pub fn new(max_requests: usize, max_body_bytes: usize, body_limit: usize) -> Arc<Admission> {
        let units = |bytes: usize| u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        let max_body_units = units(body_limit).max(1);
        Arc::new(Admission {
            requests: Semaphore::new(max_requests.min(Semaphore::MAX_PERMITS)),
            body_units: Semaphore::new(
                (units(max_body_bytes).max(max_body_units) as usize).min(Semaphore::MAX_PERMITS),
            ),
            max_body_units,
        })
    }

    /// Requests in progress now.
    pub fn in_flight(&self, max_requests: usize) -> usize {
        max_requests.saturating_sub(self.requests.available_permits())
    }
}

/// Whether a route is exempt: health checks and metrics must answer under overload.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The middleware: admits the request or answers 503 at once.
pub async fn admit(State(cx): State<ApiContext>, req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let admission = &cx.admission;
    let Ok(_request) = admission.requests.try_acquire() else {
        return refuse(&cx, "too many requests in progress");
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let has_body =
        declared.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    let _body = if has_body {
        // A declared length over the body limit is refused later with 413; reserve no more
        // than the limit for it.
        let units = declared.map_or(admission.max_body_units, |n| {
            u32::try_from(n.div_ceil(UNIT))
                .unwrap_or(u32::MAX)
                .min(admission.max_body_units)
        });
        match admission.body_units.try_acquire_many(units.max(1)) {
            Ok(permit) => Some(permit),
            Err(_) => return refuse(&cx, "too many request bytes in progress"),
        }
    } else {
        None
    };
    next.run(req).await
}

fn refuse(cx: &ApiContext, why: &str) -> Response {
    cx.overloaded();
    tracing::debug!(why, "request refused at admission");
    ApiError::Overloaded.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_permits() {
        let a = Admission::new(2, 10 * 1024, 4 * 1024);
        assert_eq!(a.max_body_units, 4);
        let one = a.requests.try_acquire().expect("first");
        let _two = a.requests.try_acquire().expect("second");
        assert!(a.requests.try_acquire().is_err(), "a third is refused");
        assert_eq!(a.in_flight(2), 2);
        drop(one);
        assert_eq!(a.in_flight(2), 1);
        // Body units: 10 KiB in all; two 4 KiB requests fit, a third does not.
        let _b1 = a.body_units.try_acquire_many(4).expect("4 KiB");
        let _b2 = a.body_units.try_acquire_many(4).expect("4 KiB");
        assert!(a.body_units.try_acquire_many(4).is_err());
    }

    #[test]
    fn a_largest_request_always_fits_an_idle_node() {
        // Total below the body limit is raised to it, or a largest body could never enter.
        let a = Admission::new(1, 1024, 8 * 1024);
        assert!(a.body_units.try_acquire_many(a.max_body_units).is_ok());
    }
}
