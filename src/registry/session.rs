//! The `/v2/` ping that opens a session with a registry host: which
//! scheme it speaks and how it wants to be authenticated.

use std::time::Instant;

use anyhow::{Context, bail};
use reqwest::{Response, StatusCode, header};
use url::Url;

use super::error::{StatusError, one_line};
use super::policy::{check_realm, is_certificate_failure};
use super::retry::RetryPolicy;
use crate::auth::{Challenge, HostGuard};

/// What the ping established.
#[derive(Debug)]
pub struct Session {
    pub base: Url,
    pub auth: AuthMode,
    /// Read from the cache of an earlier run, not pinged in this one.
    pub cached: bool,
}

#[derive(Debug)]
pub enum AuthMode {
    Anonymous,
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

/// How to open a session with one registry host.
pub struct Ping<'a> {
    pub http: &'a reqwest::Client,
    /// `host[:port]`.
    pub host: &'a str,
    /// Whether plain HTTP may be tried when HTTPS cannot be spoken.
    pub allow_http: bool,
    pub retry: &'a RetryPolicy,
    /// Where a token realm may be, for a cloud's credentials.
    pub realm_guard: Option<&'a HostGuard>,
}

impl Ping<'_> {
    /// `GET /v2/`: https first; plain http only where allowed and only when
    /// https could not be spoken at all (connection or TLS failure).
    pub async fn run(&self) -> anyhow::Result<Session> {
        let schemes: &[&str] = if self.allow_http {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut failures = Vec::new();
        for scheme in schemes {
            let base = Url::parse(&format!("{scheme}://{}/", self.host))
                .with_context(|| format!("invalid registry host {:?}", self.host))?;
            let attempt = self
                .retry
                .run(&format!("GET {scheme}://{}/v2/", self.host), || {
                    self.once(&base)
                })
                .await;
            match attempt {
                Ok(auth) => {
                    return Ok(Session {
                        base,
                        auth,
                        cached: false,
                    });
                }
                Err(e) => {
                    let text = one_line(&e);
                    // The host speaks TLS with a certificate we do not
                    // trust: plain HTTP would be pointless at best, an
                    // attacker's downgrade at worst.
                    if *scheme == "https" && is_certificate_failure(&text) {
                        bail!(
                            "cannot reach registry {}: {text} (if the registry's certificate \
                             is signed by a private CA, give that CA in source.ca_certs)",
                            self.host
                        );
                    }
                    failures.push(format!("{scheme}: {text}"));
                }
            }
        }
        bail!(
            "cannot reach registry {}: {}",
            self.host,
            failures.join("; ")
        )
    }

    /// One `GET /v2/`. Only 200 or 401 is a registry answering the API;
    /// anything else (e.g. "plain HTTP sent to an HTTPS server") fails this
    /// scheme, and is reported with the other scheme's failure.
    async fn once(&self, base: &Url) -> anyhow::Result<AuthMode> {
        let url = base.join("/v2/")?;
        let started = Instant::now();
        let response = super::http::send_and_wait(self.http.get(url.clone())).await?;
        tracing::debug!(
            "GET {url} -> {} ({} ms)",
            response.status().as_u16(),
            started.elapsed().as_millis()
        );
        if response.status() == StatusCode::OK {
            return Ok(AuthMode::Anonymous);
        }
        let response = StatusError::expect(response, &[StatusCode::UNAUTHORIZED]).await?;
        let header = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        match header.map(Challenge::parse).transpose()? {
            Some(Challenge::Bearer { realm, service, .. }) => Ok(AuthMode::Bearer {
                realm: check_realm(base, &realm, self.realm_guard)?,
                service,
            }),
            Some(Challenge::Basic) | None => Ok(AuthMode::Basic),
        }
    }
}

/// The scope a Bearer challenge on a 401 asks for, if any.
pub fn challenge_scope(response: &Response) -> Option<String> {
    let header = response
        .headers()
        .get(header::WWW_AUTHENTICATE)?
        .to_str()
        .ok()?;
    match Challenge::parse(header).ok()? {
        Challenge::Bearer { scope, .. } => scope,
        Challenge::Basic => None,
    }
}
