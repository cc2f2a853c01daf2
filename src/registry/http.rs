//! The one HTTP client every registry request goes through, with the trust
//! roots a source configures.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Certificate;

const USER_AGENT: &str = concat!("registry-image/", env!("CARGO_PKG_VERSION"));

/// Parses `ca_certs` entries (PEM, one or more certificates each).
pub fn parse_ca_certs(pems: &[String]) -> anyhow::Result<Vec<Certificate>> {
    let mut certs = Vec::new();
    for (i, pem) in pems.iter().enumerate() {
        let found = Certificate::from_pem_bundle(pem.as_bytes())
            .with_context(|| format!("ca_certs[{i}] is not valid PEM"))?;
        if found.is_empty() {
            bail!("ca_certs[{i}] contains no PEM certificate");
        }
        certs.extend(found);
    }
    Ok(certs)
}

/// Builds the HTTP client: the system trust roots plus `extra_roots`.
pub fn build_client(extra_roots: Vec<Certificate>) -> anyhow::Result<reqwest::Client> {
    // ring, not aws-lc: aws-lc seeds its RNG with CPU jitter entropy on first
    // use, ~50 ms of CPU per process, which would dominate a check. Installing
    // fails only when a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .pool_idle_timeout(Duration::from_secs(60));
    let builder = match system_bundle() {
        Some(system) => builder.tls_certs_only(system.into_iter().chain(extra_roots)),
        None => builder.tls_certs_merge(extra_roots),
    };
    builder
        .build()
        .context("cannot set up the HTTP client (are the ca_certs valid certificates?)")
}

/// The system CA bundle (`SSL_CERT_FILE`, or the file OpenSSL would use).
///
/// The platform verifier reads that bundle *and* each of the ~300 files of
/// `/etc/ssl/certs`, which hold the same roots: ~8 ms of CPU in every
/// process, most of a tag-mode check. Without a bundle, or when the user
/// points `SSL_CERT_DIR` somewhere, the platform verifier is used instead.
fn system_bundle() -> Option<Vec<Certificate>> {
    if std::env::var_os("SSL_CERT_DIR").is_some() {
        return None;
    }
    let path = openssl_probe::probe().cert_file?;
    let pem = std::fs::read(path).ok()?;
    let certs = Certificate::from_pem_bundle(&pem).ok()?;
    (!certs.is_empty()).then_some(certs)
}
