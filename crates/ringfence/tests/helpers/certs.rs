//! Certificates for TLS tests, made with the `openssl` CLI (Debian's `openssl`, which
//! `./scripts/test` installs): a private CA and a server certificate it signed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files [`make`] wrote.
pub struct Certificates {
    /// The CA's certificate (what clients trust).
    pub ca: PathBuf,
    /// The server's certificate, signed by the CA.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package `openssl`) is needed for the TLS tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<prefix>-ca.crt`) and a server certificate and key (`<prefix>.crt`, `<prefix>.key`)
/// in `dir`, the server's valid for `subject_alt_name` (e.g. `IP:127.0.0.1,DNS:localhost`).
pub fn make(dir: &Path, prefix: &str, subject_alt_name: &str) -> Certificates {
    let ext = format!("{prefix}.ext");
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={subject_alt_name}\nbasicConstraints=CA:FALSE\n"),
    )
    .expect("write extensions");
    let (ca_key, ca) = (format!("{prefix}-ca.key"), format!("{prefix}-ca.crt"));
    let (key, csr, cert) = (
        format!("{prefix}.key"),
        format!("{prefix}.csr"),
        format!("{prefix}.crt"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            "/CN=ringfence-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=ringfence-test-server",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    Certificates {
        ca: dir.join(ca),
        cert: dir.join(cert),
        key: dir.join(key),
    }
}
