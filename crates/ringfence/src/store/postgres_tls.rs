//! PostgreSQL over TLS (rustls with ring), chosen by the URL's `sslmode` as libpq does:
//!
//! | `sslmode` | encrypted | server certificate |
//! |---|---|---|
//! | absent, `disable` | no | - |
//! | `prefer` | if the server offers it | as `require` |
//! | `require` | yes, or no session | not checked, unless a CA is given: then as `verify-ca` |
//! | `verify-ca` | yes | must chain to the CA (`--postgres-ca-cert`, else the system's roots) |
//! | `verify-full` | yes | as `verify-ca`, and must name the host connected to |
//!
//! tokio-postgres itself knows only `disable`/`prefer`/`require`, so [`split_sslmode`] takes
//! the parameter out of the URL and [`PgTls`] carries what it asks for.
//!
//! Why our own `MakeTlsConnect` and not the `tokio-postgres-rustls` crate: that crate pulls
//! a second SHA-2 and an X.509 parser for SCRAM channel binding. Without channel binding the
//! password exchange is still SCRAM (the password never crosses the wire), and under
//! `verify-full` the certificate check already ties the session to the right server.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_rustls::TlsConnector;

use crate::tls::{provider, root_store, TlsError};

/// What the URL's `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it.
    Prefer,
    /// TLS or nothing; the certificate is checked only when a CA is given.
    Require,
    /// TLS, the certificate chaining to a trusted CA.
    VerifyCa,
    /// TLS, the certificate chaining to a trusted CA and naming the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // `allow` (plain first, TLS as a fallback) gives no protection worth a mode.
            other => {
                return Err(format!(
                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            ))
            }
        })
    }

    /// What tokio-postgres is told: whether TLS may be skipped.
    pub fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// Takes `sslmode` out of a PostgreSQL URL (`postgres://...?sslmode=verify-full`) or
/// key-value string (`host=db sslmode=verify-full`): the rest, and the mode if one was given.
/// An error never quotes the URL (it may hold a password), only the mode's value.
pub fn split_sslmode(url: &str) -> Result<(String, Option<SslMode>), String> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let mut mode = None;
    let rest = if is_url {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.strip_prefix("sslmode=") {
                Some(value) => mode = Some(SslMode::parse(value)?),
                None => kept.push(pair),
            }
        }
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.strip_prefix("sslmode=") {
                Some(value) => mode = Some(SslMode::parse(value.trim_matches('\''))?),
                None => kept.push(word),
            }
        }
        // A quoted value with spaces (a password) is split and joined again by single
        // spaces, which is how the parser reads it anyway unless it held double spaces; only
        // rebuild the string when there was something to take out.
        if mode.is_some() {
            kept.join(" ")
        } else {
            url.to_owned()
        }
    };
    Ok((rest, mode))
}

/// A rustls `MakeTlsConnect` for tokio-postgres, configured for one [`SslMode`].
#[derive(Clone)]
pub struct PgTls {
    connector: TlsConnector,
}

impl PgTls {
    /// The connector `mode` needs (`None` for [`SslMode::Disable`]); `ca` is the
    /// `--postgres-ca-cert` file.
    pub fn for_mode(mode: SslMode, ca: Option<&Path>) -> Result<Option<PgTls>, TlsError> {
        let provider = provider();
        let check_chain = || -> Result<Arc<WebPkiServerVerifier>, TlsError> {
            WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(ca)?),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))
        };
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Disable => return Ok(None),
            SslMode::Prefer | SslMode::Require if ca.is_none() => {
                Arc::new(EncryptionOnly(Arc::clone(&provider)))
            }
            SslMode::Prefer | SslMode::Require | SslMode::VerifyCa => {
                Arc::new(ChainOnly(check_chain()?))
            }
            SslMode::VerifyFull => check_chain()?,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(PgTls {
            connector: TlsConnector::from(Arc::new(config)),
        }))
    }
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgHandshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgHandshake, io::Error> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(PgHandshake {
            connector: self.connector.clone(),
            name,
        })
    }
}

/// One session's TLS handshake.
pub struct PgHandshake {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for PgHandshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            self.connector
                .connect(self.name, stream)
                .await
                .map(PgTlsStream)
        })
    }
}

/// A TLS session to PostgreSQL.
pub struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// `sslmode=require` without a CA, as libpq: the session is encrypted and the server proves
/// it holds its certificate's key (handshake signatures are checked), but who issued the
/// certificate is not.
#[derive(Debug)]
struct EncryptionOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the full WebPKI check except that the certificate names the host
/// (rustls checks the name only after the chain, so a name error means the chain held).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_comes_out_of_both_url_forms() {
        let (rest, mode) =
            split_sslmode("postgres://u:pw@db:5432/records?sslmode=verify-full").expect("ok");
        assert_eq!(rest, "postgres://u:pw@db:5432/records");
        assert_eq!(mode, Some(SslMode::VerifyFull));
        let (rest, mode) =
            split_sslmode("postgres://u@db/r?connect_timeout=3&sslmode=require&application_name=x")
                .expect("ok");
        assert_eq!(
            rest,
            "postgres://u@db/r?connect_timeout=3&application_name=x"
        );
        assert_eq!(mode, Some(SslMode::Require));
        let (rest, mode) = split_sslmode("host=db user=u sslmode=verify-ca").expect("ok");
        assert_eq!(rest, "host=db user=u");
        assert_eq!(mode, Some(SslMode::VerifyCa));
        let plain = "postgres://u:p w@db/r";
        assert_eq!(split_sslmode(plain).expect("ok"), (plain.to_owned(), None));
        let e = split_sslmode("postgres://u:hunter2@db/r?sslmode=allow").expect_err("allow");
        assert!(e.contains("allow") && !e.contains("hunter2"), "{e}");
    }
}
