//! A webhook receiver on loopback for tests: records every request (headers and body) and
//! answers with scripted statuses (the next ones queued, then a default).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: HashMap<String, String>,
    /// The body as text.
    pub body: String,
    /// The status the receiver answered with.
    pub answered: u16,
}

impl Received {
    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("webhook body is JSON")
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<u16>,
    default: u16,
    received: Vec<Received>,
}

/// A running receiver.
pub struct Receiver {
    /// Its URL (`http://127.0.0.1:<port>/hook`).
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

async fn take(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let mut g = inner.lock().expect("receiver lock");
    let status = g.script.pop_front().unwrap_or(g.default);
    g.received.push(Received {
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: status,
    });
    (
        StatusCode::from_u16(status).expect("status"),
        if status < 300 {
            "ok"
        } else {
            "receiver says no"
        },
    )
}

impl Receiver {
    /// Starts a receiver answering `default` unless scripted otherwise.
    pub async fn start(default: u16) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            default,
            ..Inner::default()
        }));
        let app = Router::new().fallback(take).with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, inner, task }
    }

    /// The next requests are answered with these statuses, in order, then the default.
    pub fn script(&self, statuses: &[u16]) {
        self.inner
            .lock()
            .expect("lock")
            .script
            .extend(statuses.iter().copied());
    }

    /// Changes the default answer.
    pub fn answer(&self, status: u16) {
        self.inner.lock().expect("lock").default = status;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("lock").received.clone()
    }

    /// Waits until `pred` holds for the requests so far (15 s at most), and returns them.
    pub async fn wait_until(
        &self,
        what: &str,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver: {what} never happened; got {} request(s): {:?}",
                got.len(),
                got.iter().map(|r| r.answered).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
