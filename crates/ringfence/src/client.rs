//! A small HTTP/1.1 client for talking to a Ringfence server: the simulator, the load
//! generator and the integration tests all use it.
//!
//! It wraps hyper-util's legacy `Client`, which keeps a pool of keep-alive connections per
//! host, so a closed-loop benchmark does not pay a TCP handshake per request. Every request has
//! a deadline covering connect, send and reading the whole body, and response bodies are capped
//! so a misbehaving server cannot make the caller buffer without bound. `http://` and
//! `https://` (rustls with ring): servers are checked against the system's roots, or only
//! against a private CA given with [`HttpClient::with_ca_cert`] (`--ca-cert`).

use std::error::Error as StdError;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long a request may take, end to end, unless [`HttpClient::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read unless [`HttpClient::with_max_body_bytes`] says otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Why a request produced no usable response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL cannot be requested (malformed, not `http://` or `https://`, no host).
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made (refused, unreachable, DNS failure).
    #[error("could not connect to {url}: {reason}")]
    Connect {
        /// The URL requested.
        url: String,
        /// The underlying cause, with its chain.
        reason: String,
    },
    /// The connection broke while sending the request or reading the response head.
    #[error("request to {url} failed: {reason}")]
    Transport {
        /// The URL requested.
        url: String,
        /// The underlying cause, with its chain.
        reason: String,
    },
    /// The request did not complete within the client's timeout.
    #[error("request to {url} timed out after {timeout:?}")]
    Timeout {
        /// The URL requested.
        url: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The response body could not be read in full (broken connection or over the size cap).
    #[error("reading the response body from {url} failed: {reason}")]
    Body {
        /// The URL requested.
        url: String,
        /// The underlying cause.
        reason: String,
    },
    /// The trusted CA certificate could not be loaded.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A request value could not be encoded as JSON.
    #[error("could not encode the request body as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    /// A response body is not the JSON the caller expected.
    #[error("response with status {status} is not the expected JSON: {source}")]
    Decode {
        /// The response status.
        status: u16,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// A short stable name of the failure class, for counting errors in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::InvalidUrl { .. } => "invalid_url",
            ClientError::Connect { .. } => "connect",
            ClientError::Transport { .. } => "transport",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Body { .. } => "body",
            ClientError::Tls(_) => "tls",
            ClientError::Encode(_) => "encode",
            ClientError::Decode { .. } => "decode",
        }
    }
}

/// A fully read HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl HttpResponse {
    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Decodes the body as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|source| ClientError::Decode {
            status: self.status,
            source,
        })
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of a header as text, when present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Retry-After` delay in whole seconds, when the server sent one in that form.
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    }
}

/// An HTTP/1.1 client with a keep-alive connection pool; cheap to clone (clones share the pool).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    max_body_bytes: usize,
    /// `Authorization: Bearer <key>` sent with every request, when set.
    bearer: Option<HeaderValue>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client with [`DEFAULT_TIMEOUT`] and [`DEFAULT_MAX_BODY_BYTES`], trusting the
    /// system's root certificates for `https://`.
    pub fn new() -> Self {
        let tls = crate::tls::client_config(None).unwrap_or_else(|e| {
            // ring supports the default protocol versions, so this is not expected; should it
            // happen, plain http:// still works and https:// fails per request.
            tracing::warn!(error = %e, "TLS client setup failed; https:// requests will fail");
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        HttpClient {
            inner: pooled_client(tls),
            timeout: DEFAULT_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            bearer: None,
        }
    }

    /// The same settings with a new pool whose `https://` connections trust only the
    /// certificate authority in `ca` (PEM): a server with a private CA.
    pub fn with_ca_cert(mut self, ca: &Path) -> Result<Self, ClientError> {
        self.inner = pooled_client(crate::tls::client_config(Some(ca))?);
        Ok(self)
    }

    /// [`HttpClient::with_ca_cert`] when `ca` is given, the same client otherwise.
    pub fn with_optional_ca_cert(self, ca: Option<&Path>) -> Result<Self, ClientError> {
        match ca {
            Some(ca) => self.with_ca_cert(ca),
            None => Ok(self),
        }
    }

    /// The same client (and pool) sending `Authorization: Bearer <key>` with every request
    /// that does not carry its own. A key that is not a valid header value is not sent (the
    /// server then answers 401, which says what is wrong).
    pub fn with_bearer(mut self, key: &str) -> Self {
        self.bearer = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
            .ok()
            .map(|mut v| {
                // Kept out of hyper's debug output and header compression tables.
                v.set_sensitive(true);
                v
            });
        self
    }

    /// The same client (and pool) with a different end-to-end timeout per request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client (and pool) with a different cap on response body size.
    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// `GET {base}/` and its status: proves something answers HTTP at `base` (any status will
    /// do) before a long run fails request by request.
    pub async fn ping(&self, base: &str) -> Result<u16, ClientError> {
        let url = endpoint_url(base, "/")?;
        Ok(self.get(&url).await?.status)
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<HttpResponse, ClientError> {
        self.execute(Method::GET, url, None, Bytes::new()).await
    }

    /// `POST url` with `body` sent as `content_type`.
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse, ClientError> {
        self.execute(Method::POST, url, Some(content_type), body.into())
            .await
    }

    /// `POST url` with `value` encoded as a JSON body.
    pub async fn post_json<T: Serialize + ?Sized>(
        &self,
        url: &str,
        value: &T,
    ) -> Result<HttpResponse, ClientError> {
        let body = serde_json::to_vec(value).map_err(ClientError::Encode)?;
        self.post(url, "application/json", body).await
    }

    /// Sends any request (other methods, extra headers) and reads the whole response.
    pub async fn send(&self, request: Request<Bytes>) -> Result<HttpResponse, ClientError> {
        let url = request.uri().to_string();
        check_uri(&url, request.uri())?;
        let request = request.map(Full::new);
        self.run(url, request).await
    }

    async fn execute(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<HttpResponse, ClientError> {
        let uri = parse_url(url)?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        if let Some(ct) = content_type {
            let value = HeaderValue::from_str(ct).map_err(|_| ClientError::InvalidUrl {
                url: url.to_string(),
                reason: format!("content type `{ct}` is not a valid header value"),
            })?;
            request.headers_mut().insert(CONTENT_TYPE, value);
        }
        self.run(url.to_string(), request).await
    }

    async fn run(
        &self,
        url: String,
        mut request: Request<Full<Bytes>>,
    ) -> Result<HttpResponse, ClientError> {
        if let Some(bearer) = &self.bearer {
            if !request.headers().contains_key(AUTHORIZATION) {
                request.headers_mut().insert(AUTHORIZATION, bearer.clone());
            }
        }
        let max_body = self.max_body_bytes;
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| {
                let reason = error_chain(&e);
                if e.is_connect() {
                    ClientError::Connect {
                        url: url.clone(),
                        reason,
                    }
                } else {
                    ClientError::Transport {
                        url: url.clone(),
                        reason,
                    }
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| ClientError::Body {
                    url: url.clone(),
                    reason: error_chain(&*e),
                })?
                .to_bytes();
            Ok(HttpResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                url,
                timeout: self.timeout,
            }),
        }
    }
}

/// hyper's pooled client over TCP, with TLS for `https://` URLs.
fn pooled_client(tls: rustls::ClientConfig) -> Client<HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    // Requests are small and latency-sensitive: do not let Nagle hold them back.
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    // The TLS layer above decides by the scheme; this one only opens the TCP connection.
    connector.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// `base` (like `http://127.0.0.1:8080/`) joined with `path` (like `/v1/transactions`), checked
/// to be a URL this client can request.
pub fn endpoint_url(base: &str, path: &str) -> Result<String, ClientError> {
    let url = format!(
        "{}/{}",
        base.trim().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    parse_url(&url)?;
    Ok(url)
}

fn parse_url(url: &str) -> Result<Uri, ClientError> {
    let uri: Uri = url.parse().map_err(|e| ClientError::InvalidUrl {
        url: url.to_string(),
        reason: format!("{e}"),
    })?;
    check_uri(url, &uri)?;
    Ok(uri)
}

fn check_uri(url: &str, uri: &Uri) -> Result<(), ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err(invalid("only http:// and https:// URLs are supported")),
        None => return Err(invalid("missing scheme; expected http://host:port/path")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("missing host"));
    }
    Ok(())
}

/// An error and its causes on one line: hyper's own messages are terse ("client error
/// (Connect)"), the useful part ("Connection refused") is further down the chain.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use axum::Router;
    use serde::Deserialize;

    async fn spawn_stub() -> String {
        let app = Router::new()
            .route("/hello", get(|| async { "hi there" }))
            .route(
                "/echo",
                post(|headers: HeaderMap, body: Bytes| async move {
                    let ct = headers
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    ([("x-content-type", ct), ("retry-after", "3".into())], body)
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/big", get(|| async { "x".repeat(10_000) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Probe {
        name: String,
        amount: f64,
    }

    #[tokio::test]
    async fn get_post_and_json_round_trip() {
        let base = spawn_stub().await;
        let client = HttpClient::new();
        let r = client.get(&format!("{base}/hello")).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.is_success());
        assert_eq!(r.text(), "hi there");

        let probe = Probe {
            name: "a".into(),
            amount: 1.5,
        };
        let r = client
            .post_json(&format!("{base}/echo"), &probe)
            .await
            .unwrap();
        assert_eq!(r.header("x-content-type"), Some("application/json"));
        assert_eq!(r.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(r.json::<Probe>().unwrap(), probe);

        let r = client
            .post(&format!("{base}/echo"), "application/x-ndjson", "{}\n{}\n")
            .await
            .unwrap();
        assert_eq!(r.header("x-content-type"), Some("application/x-ndjson"));
        assert!(matches!(
            r.json::<Probe>(),
            Err(ClientError::Decode { status: 200, .. })
        ));

        let r = client.get(&format!("{base}/missing")).await.unwrap();
        assert_eq!(r.status, 404);
        assert!(!r.is_success());
        assert_eq!(client.ping(&base).await.unwrap(), 404);
    }

    #[tokio::test]
    async fn timeouts_caps_and_bad_urls_are_errors() {
        let base = spawn_stub().await;
        let client = HttpClient::new().with_timeout(Duration::from_millis(100));
        let e = client.get(&format!("{base}/slow")).await.unwrap_err();
        assert_eq!(e.kind(), "timeout");

        let small = HttpClient::new().with_max_body_bytes(100);
        let e = small.get(&format!("{base}/big")).await.unwrap_err();
        assert_eq!(e.kind(), "body");

        for bad in ["not a url", "ftp://x/", "/relative"] {
            let e = client.get(bad).await.unwrap_err();
            assert_eq!(e.kind(), "invalid_url", "{bad}");
        }
    }

    #[tokio::test]
    async fn connection_refused_is_a_connect_error() {
        // Bind then drop to get a port nobody listens on.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = HttpClient::new()
            .get(&format!("http://{addr}/"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "connect");
        assert!(e.to_string().contains(&addr.to_string()));
    }

    #[test]
    fn endpoint_urls_join_and_check() {
        assert_eq!(
            endpoint_url("http://127.0.0.1:8080/", "/v1/transactions").unwrap(),
            "http://127.0.0.1:8080/v1/transactions"
        );
        assert_eq!(
            endpoint_url(" http://h:1", "v1/x").unwrap(),
            "http://h:1/v1/x"
        );
        assert_eq!(
            endpoint_url("127.0.0.1:8080", "/v1").unwrap_err().kind(),
            "invalid_url"
        );
    }

    #[tokio::test]
    async fn a_bearer_key_goes_with_every_request_unless_one_is_given() {
        let app = Router::new().route(
            "/auth",
            get(|headers: HeaderMap| async move {
                headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_string()
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url = format!("http://{addr}/auth");
        assert_eq!(HttpClient::new().get(&url).await.unwrap().text(), "none");
        let keyed = HttpClient::new().with_bearer("rf_k");
        assert_eq!(keyed.get(&url).await.unwrap().text(), "Bearer rf_k");
        let own = Request::get(&url)
            .header(AUTHORIZATION, "Bearer other")
            .body(Bytes::new())
            .unwrap();
        assert_eq!(keyed.send(own).await.unwrap().text(), "Bearer other");
    }

    #[tokio::test]
    async fn send_takes_arbitrary_requests() {
        let base = spawn_stub().await;
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{base}/echo"))
            .header(CONTENT_TYPE, "text/plain")
            .body(Bytes::from_static(b"raw"))
            .unwrap();
        let r = HttpClient::new().send(request).await.unwrap();
        assert_eq!(r.text(), "raw");
        assert_eq!(r.header("x-content-type"), Some("text/plain"));
    }
}
