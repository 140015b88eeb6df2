//! `ringfence audit verify`: walks the audit trail's hash chain ([`crate::cases::chain`]) in
//! the embedded SQLite store or in PostgreSQL and reports the first broken row.
//!
//! Read-only either way (SQLite opened read-only, PostgreSQL in a read-only transaction, no
//! migrations), so it can run beside live servers. Exit status: 0 when the chain is intact,
//! 1 when it is broken or cannot be read.

use std::path::PathBuf;

use crate::cases::chain::VerifyReport;
use crate::config::Secret;

/// `ringfence audit ...`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// What to do with the audit trail.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The `audit` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the hash chain: every row, in order, then the chain head.
    Verify(VerifyArgs),
}

/// Flags of `ringfence audit verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Data directory of the embedded SQLite store (default `./data`).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Verify the trail in PostgreSQL instead (URL or key-value string; the environment
    /// variable keeps a password out of the process list).
    #[arg(
        long,
        value_name = "URL",
        env = "RINGFENCE_POSTGRES",
        hide_env_values = true
    )]
    pub postgres: Option<Secret>,
    /// PEM file of the certificate authority the PostgreSQL server's certificate is checked
    /// against (`sslmode=verify-ca|verify-full` in the URL).
    #[arg(long, value_name = "PEM", env = "RINGFENCE_POSTGRES_CA_CERT")]
    pub postgres_ca_cert: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Why a verification could not run (a broken chain is a report, not an error).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Conflicting or missing flags.
    #[error("{0}")]
    Args(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Verifies the chain of the store the flags name.
pub async fn verify(args: &VerifyArgs) -> Result<VerifyReport, AuditError> {
    match (&args.data, &args.postgres) {
        (Some(_), Some(_)) => Err(AuditError::Args(
            "give either --data (the SQLite store) or --postgres (RINGFENCE_POSTGRES), not both"
                .into(),
        )),
        (None, Some(url)) => Ok(crate::cases::postgres::verify_chain(
            url.expose(),
            args.postgres_ca_cert.as_deref(),
        )
        .await?),
        (data, None) => {
            let dir = data.clone().unwrap_or_else(|| PathBuf::from("./data"));
            let path = dir.join("ringfence.db");
            if !path.is_file() {
                return Err(AuditError::Args(format!(
                    "no store at {} (give the server's --data directory)",
                    path.display()
                )));
            }
            let report =
                tokio::task::spawn_blocking(move || crate::cases::sqlite::verify_chain(&path))
                    .await
                    .map_err(|_| crate::store::StoreError::Closed)??;
            Ok(report)
        }
    }
}
