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
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(60))
        .tls_certs_merge(extra_roots)
        .build()
        .context("cannot set up the HTTP client (are the ca_certs valid certificates?)")
}
