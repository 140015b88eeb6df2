//! Open live-feed sockets during `ringfence bench --feed-sockets N`: each is a WebSocket to
//! `/v1/stream/transactions` that reads everything the server sends and throws it away, so
//! the benchmark measures what watching dashboards cost the engine.
//!
//! The handshake is written by hand (a WebSocket client library is a test-only dependency):
//! the request, a `101` answer, then raw bytes read and counted. Frames need no parsing to be
//! consumed; the server's pings go unanswered, which is fine for a run shorter than its
//! 60-second idle limit (longer runs see the sockets closed and counted as ended).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Sockets open while the benchmark runs, and what they received.
pub struct FeedSockets {
    tasks: JoinSet<()>,
    bytes: Arc<AtomicU64>,
    ended: Arc<AtomicU64>,
}

/// What the sockets saw.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct FeedReport {
    /// Sockets opened.
    pub sockets: usize,
    /// Bytes they received after the handshake, together.
    pub bytes: u64,
    /// Sockets the server ended before the benchmark did.
    pub ended_early: u64,
}

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The target is not `http://host:port`.
    #[error("--feed-sockets needs an http://host:port target, got {0}")]
    Target(String),
    /// Connecting or the handshake failed.
    #[error("feed socket: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not switch protocols.
    #[error("feed socket: the server answered {0}")]
    Refused(String),
}

/// Opens `n` feed sockets to the server at `base` (`http://host:port`).
pub async fn open(base: &str, n: usize) -> Result<FeedSockets, FeedError> {
    let authority = base
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| FeedError::Target(base.to_owned()))?
        .to_owned();
    let bytes = Arc::new(AtomicU64::new(0));
    let ended = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let mut stream = handshake(&authority).await?;
        let (bytes, ended) = (Arc::clone(&bytes), Arc::clone(&ended));
        tasks.spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => {
                        bytes.fetch_add(k as u64, Ordering::Relaxed);
                    }
                }
            }
            ended.fetch_add(1, Ordering::Relaxed);
        });
    }
    Ok(FeedSockets {
        tasks,
        bytes,
        ended,
    })
}

async fn handshake(authority: &str) -> Result<TcpStream, FeedError> {
    let mut stream = TcpStream::connect(authority).await?;
    let mut key = [0u8; 16];
    // Any value serves as the key; it only has to differ between connections in principle.
    let _ = getrandom::fill(&mut key);
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let request = format!(
        "GET /v1/stream/transactions HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    // Read the answer's head one byte at a time: what follows it is the feed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if stream.read(&mut b).await? == 0 || head.len() > 8192 {
            return Err(FeedError::Refused("nothing usable".into()));
        }
        head.push(b[0]);
    }
    let status = String::from_utf8_lossy(&head);
    let first = status.lines().next().unwrap_or_default().to_owned();
    if !first.contains(" 101 ") {
        return Err(FeedError::Refused(first));
    }
    Ok(stream)
}

impl FeedSockets {
    /// Closes the sockets and says what they received.
    pub fn finish(mut self) -> FeedReport {
        let sockets = self.tasks.len();
        let ended = self.ended.load(Ordering::Relaxed);
        self.tasks.abort_all();
        FeedReport {
            sockets,
            bytes: self.bytes.load(Ordering::Relaxed),
            ended_early: ended,
        }
    }
}
