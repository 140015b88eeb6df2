//! TLS with rustls and the ring provider, for everything Ringfence serves or calls over a
//! network it does not trust:
//!
//! - [`server_config`] loads `--tls-cert` / `--tls-key` (PEM) for the HTTPS listener, and
//!   [`TlsListener`] serves it through `axum::serve` (so graceful shutdown, WebSockets and the
//!   peer address work as over plain TCP).
//! - [`client_config`] is the trust of every client: the system's roots, or only a private
//!   CA's certificate (`--ca-cert`, `--peer-ca-cert`, `--postgres-ca-cert`).
//!
//! Why handshakes run on tasks of their own and not inside `accept`: axum accepts one
//! connection at a time, so a client that opens a socket and never finishes its handshake
//! would otherwise stall every connection behind it. Each handshake has a deadline, and the
//! number in flight is bounded so a flood of half-open handshakes cannot take unbounded memory.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in flight at once; past that, accepting waits for one to end.
const MAX_HANDSHAKES: usize = 1024;
/// Finished handshakes waiting for the server to take them.
const READY_QUEUE: usize = 128;

/// A TLS file or setting that cannot be used, named precisely (never with key material).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing of the expected kind.
    #[error("{what} {path}: {reason}")]
    File {
        /// What the file was for (`certificate`, `private key`, `CA certificate`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS setup: {0}")]
    Config(String),
}

/// The crypto provider every config here uses: ring, as the rest of the binary.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (a chain: the leaf first, then intermediates).
pub fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM ({e})")))?;
    if certs.is_empty() {
        return Err(bad("no `BEGIN CERTIFICATE` block in it".into()));
    }
    Ok(certs)
}

/// The HTTPS server's configuration: the certificate chain and its private key (PKCS#8,
/// PKCS#1 or SEC1 PEM), HTTP/1.1 by ALPN (the only protocol the server speaks).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certificates(cert, "certificate")?;
    let bad_key = |reason: String| TlsError::File {
        what: "private key",
        path: key.to_owned(),
        reason,
    };
    let pem = std::fs::read(key).map_err(|e| bad_key(e.to_string()))?;
    // The parser's error names the PEM problem only, never the key's bytes.
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| bad_key(format!("no usable private key in it ({e})")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The system's trusted roots, read once per process (reading them costs milliseconds, and
/// clients are made often). Empty in a bare container: then only a given CA works.
fn native_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::debug!("no system root certificates: https:// needs a CA certificate file");
        }
        roots
    })
}

/// The roots a client trusts: only the certificates of `ca` (a private CA) when given, the
/// system's otherwise.
pub fn root_store(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let Some(path) = ca else {
        return Ok(native_roots().clone());
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path, "CA certificate")? {
        roots.add(cert).map_err(|e| TlsError::File {
            what: "CA certificate",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A client configuration checking servers against [`root_store`]`(ca)`.
pub fn client_config(ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let roots = root_store(ca)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// An HTTPS listener for `axum::serve`: TCP connections accepted and their TLS handshakes
/// done on a background task; `accept` hands out finished ones.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config` (on the current Tokio runtime).
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            ready,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    /// The server stopped taking connections (shutdown): stop accepting them.
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped; never reached.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts TCP connections and runs each handshake on its own task, bounded in time and in
/// number; a failed handshake (a scanner, a client that distrusts us, plain HTTP sent to the
/// TLS port) costs only that connection.
async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                // As axum does for plain TCP: per-connection errors are retried at once, others
                // (out of file descriptors) after a pause instead of spinning.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        // TLS writes a record per write: without this, Nagle's algorithm and delayed ACKs can
        // hold a small response back by tens of milliseconds.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let absent = dir.path().join("absent.pem");
        let e = server_config(&absent, &absent).expect_err("no file");
        assert!(e.to_string().contains("certificate"), "{e}");
        assert!(e.to_string().contains("absent.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = root_store(Some(&empty)).expect_err("no certificate");
        assert!(e.to_string().contains("BEGIN CERTIFICATE"), "{e}");
        assert!(e.to_string().contains("empty.pem"), "{e}");
    }
}
