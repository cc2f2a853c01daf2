//! One registry host: the `/v2/` ping that picks the scheme and the
//! authentication mode, then authenticated requests with one token per scope
//! per run and a single re-authentication when a token is refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use reqwest::{Certificate, Method, RequestBuilder, Response, StatusCode, header};
use tokio::sync::{Mutex, OnceCell};
use url::Url;

use super::error::StatusError;
use super::retry::{RetryPolicy, is_retryable_status};
use crate::auth::{Access, Challenge, Credentials, HostGuard, repository_scope, token};

/// How to reach and authenticate to a registry.
#[derive(Debug)]
pub struct ClientOptions {
    /// Credentials to answer the registry's challenges with.
    pub credentials: Option<Credentials>,
    /// `source.insecure`: allow falling back to plain HTTP.
    pub insecure: bool,
    /// Extra trust roots (`source.ca_certs`).
    pub ca_certs: Vec<Certificate>,
    /// What the tokens ask for.
    pub access: Access,
    /// For a cloud's credentials (ACR's refresh token): the hosts they may
    /// go to; a token realm elsewhere is refused.
    pub credential_hosts: Option<HostGuard>,
}

/// A client for one registry host.
pub struct RegistryClient {
    host: String,
    http: reqwest::Client,
    credentials: Option<Credentials>,
    allow_http: bool,
    /// `source.insecure`: plain HTTP accepted anywhere, credentials too.
    insecure: bool,
    access: Access,
    credential_hosts: Option<HostGuard>,
    session: OnceCell<Session>,
    tokens: Mutex<HashMap<String, String>>,
    retry: RetryPolicy,
    /// Blob upload settings (see `upload.rs`).
    pub(super) uploads: super::upload::UploadSettings,
}

/// What the ping established.
#[derive(Debug)]
struct Session {
    base: Url,
    auth: AuthMode,
}

#[derive(Debug)]
enum AuthMode {
    Anonymous,
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

impl RegistryClient {
    /// `host` is the API host, `host[:port]`.
    pub fn new(host: &str, options: ClientOptions) -> anyhow::Result<Self> {
        Ok(RegistryClient {
            host: host.to_owned(),
            http: super::http::build_client(options.ca_certs)?,
            credentials: options.credentials,
            allow_http: options.insecure || plain_http_allowed(host),
            insecure: options.insecure,
            access: options.access,
            credential_hosts: options.credential_hosts,
            session: OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
            retry: RetryPolicy::default(),
            uploads: super::upload::UploadSettings::for_host(host),
        })
    }

    /// This client with another retry policy.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The registry's host (and port).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The retry policy every request of this client follows.
    /// What this client's tokens ask for.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The retry policy every request goes through.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The URL of an API path such as `/v2/<name>/tags/list`.
    pub async fn url(&self, path: &str) -> anyhow::Result<Url> {
        let session = self.session().await?;
        session
            .base
            .join(path)
            .with_context(|| format!("invalid request path {path:?}"))
    }

    /// Sends a request for repository `repo_path`, authenticated as the
    /// registry asked, retrying transient failures (see [`RetryPolicy`]).
    /// `build` adds headers and body; it runs again for every retry and when
    /// a refused token is renewed. Statuses other than 401, 408, 429 and 5xx
    /// are returned to the caller.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        repo_path: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> anyhow::Result<Response> {
        let what = format!("{method} {}", url.path());
        self.retry
            .run(&what, || {
                self.send_once(method.clone(), url.clone(), repo_path, &build)
            })
            .await
    }

    /// One attempt of [`send`](Self::send), for callers whose retry unit
    /// also covers reading the body.
    pub async fn send_once(
        &self,
        method: Method,
        url: Url,
        repo_path: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> anyhow::Result<Response> {
        let scopes = [repository_scope(repo_path, self.access)];
        self.send_once_scoped(method, url, &scopes, build).await
    }

    /// [`send_once`](Self::send_once) with a token for several scopes, e.g.
    /// a cross-repository mount, which needs pull access to the source
    /// repository as well as push access to the target.
    pub async fn send_once_scoped(
        &self,
        method: Method,
        url: Url,
        scopes: &[String],
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> anyhow::Result<Response> {
        let session = self.session().await?;
        let scope = scopes.join(" ");
        // Same origin: scheme, host and port.
        let same_host = url.scheme() == session.base.scheme()
            && url.host_str() == session.base.host_str()
            && url.port_or_known_default() == session.base.port_or_known_default();
        let mut renewed = false;
        loop {
            let mut request = build(self.http.request(method.clone(), url.clone()));
            // Credentials go only to the registry host itself, never to a
            // storage backend an upload or redirect points at.
            if same_host {
                request = self.authorize(request, session, &scope).await?;
            }
            let started = Instant::now();
            // The answer is waited for within the read timeout once the
            // body (if any) was sent; the error carries no URL.
            let response = super::http::send_and_wait(request)
                .await
                .with_context(|| format!("{method} {} failed", url.path()))?;
            tracing::debug!(
                "{method} {} -> {} ({} ms)",
                url.path(),
                response.status().as_u16(),
                started.elapsed().as_millis()
            );
            if is_retryable_status(response.status()) {
                return Err(anyhow!(
                    StatusError::from_response(method.clone(), response).await
                ));
            }
            if response.status() != StatusCode::UNAUTHORIZED || !same_host {
                return Ok(response);
            }
            if let (AuthMode::Bearer { .. }, false) = (&session.auth, renewed) {
                // The token may have expired or lack a scope the registry
                // names in its challenge: fetch a fresh one, once.
                let mut wanted: Vec<String> = challenge_scope(&response).into_iter().collect();
                wanted.extend(scopes.iter().cloned());
                self.tokens.lock().await.remove(&scope);
                let token = self.fetch_token(session, &wanted).await?;
                self.tokens.lock().await.insert(scope.clone(), token);
                renewed = true;
                continue;
            }
            let error = StatusError::from_response(method.clone(), response).await;
            return Err(anyhow!(error).context(self.unauthorized_hint()));
        }
    }

    fn unauthorized_hint(&self) -> String {
        match self.credentials {
            Some(_) => format!(
                "{} refused the credentials (check username and password)",
                self.host
            ),
            None => format!(
                "{} requires authentication (set username and password)",
                self.host
            ),
        }
    }

    async fn authorize(
        &self,
        request: RequestBuilder,
        session: &Session,
        scope: &str,
    ) -> anyhow::Result<RequestBuilder> {
        if self.credentials.is_some()
            && !matches!(session.auth, AuthMode::Anonymous)
            && !credentials_may_travel(&session.base, self.insecure)
        {
            bail!(
                "refusing to send credentials to {} over plain HTTP (it does not answer HTTPS): \
                 set insecure: true to allow it",
                self.host
            );
        }
        Ok(match &session.auth {
            AuthMode::Anonymous => request,
            AuthMode::Basic => match &self.credentials {
                Some(c) => request.basic_auth(&c.username, Some(&c.password)),
                None => request,
            },
            AuthMode::Bearer { .. } => {
                // Holding the lock while fetching makes concurrent requests
                // for one scope share a single token request.
                let mut tokens = self.tokens.lock().await;
                let token = match tokens.get(scope) {
                    Some(t) => t.clone(),
                    None => {
                        let scopes: Vec<String> = scope.split(' ').map(str::to_owned).collect();
                        let t = self.fetch_token(session, &scopes).await?;
                        tokens.insert(scope.to_owned(), t.clone());
                        t
                    }
                };
                request.bearer_auth(token)
            }
        })
    }

    async fn fetch_token(&self, session: &Session, scopes: &[String]) -> anyhow::Result<String> {
        let AuthMode::Bearer { realm, service } = &session.auth else {
            bail!("internal error: no token service for {}", self.host);
        };
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        token::fetch(
            &self.http,
            realm,
            service.as_deref(),
            &scopes,
            self.credentials.as_ref(),
        )
        .await
        .with_context(|| format!("authenticating to {}", self.host))
    }

    async fn session(&self) -> anyhow::Result<&Session> {
        self.session.get_or_try_init(|| self.ping()).await
    }

    /// `GET /v2/`: https first; plain http only where allowed and only when
    /// https could not be spoken at all (connection or TLS failure).
    async fn ping(&self) -> anyhow::Result<Session> {
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
                    self.ping_once(&base)
                })
                .await;
            match attempt {
                Ok(auth) => return Ok(Session { base, auth }),
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
    async fn ping_once(&self, base: &Url) -> anyhow::Result<AuthMode> {
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
        if response.status() != StatusCode::UNAUTHORIZED {
            return Err(anyhow!(
                StatusError::from_response(Method::GET, response).await
            ));
        }
        let header = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        match header.map(Challenge::parse).transpose()? {
            Some(Challenge::Bearer { realm, service, .. }) => Ok(AuthMode::Bearer {
                realm: self.check_realm(base, &realm)?,
                service,
            }),
            Some(Challenge::Basic) | None => Ok(AuthMode::Basic),
        }
    }

    /// A token realm must be https (http only if the registry itself is), and
    /// may point at a private or loopback address only when the registry is
    /// on that same address: credentials are sent there.
    fn check_realm(&self, base: &Url, realm: &str) -> anyhow::Result<Url> {
        let url = Url::parse(realm).with_context(|| format!("invalid token realm {realm:?}"))?;
        match url.scheme() {
            "https" => {}
            "http" if base.scheme() == "http" => {}
            other => bail!(
                "refusing token realm {realm:?}: scheme {other} is not allowed for a registry on {}",
                base.scheme()
            ),
        }
        if let (Some(guard), Some(_)) = (&self.credential_hosts, &self.credentials) {
            // `host[:port]`, as registries are named.
            let host = &url[url::Position::BeforeHost..url::Position::AfterPort];
            if !guard.allows(host) {
                bail!(
                    "refusing token realm {realm:?}: the {} credentials go only to {} or to \
                     hosts named in {}",
                    guard.cloud,
                    guard.own_hosts,
                    guard.field
                );
            }
        }
        if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host() {
            let ip: IpAddr = url
                .host_str()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .parse()
                .with_context(|| format!("invalid token realm {realm:?}"))?;
            if is_internal(ip) && url.host_str() != base.host_str() {
                bail!(
                    "refusing token realm {realm:?}: internal address differs from the registry's"
                );
            }
        }
        Ok(url)
    }
}

/// The scope a Bearer challenge on a 401 asks for, if any.
fn challenge_scope(response: &Response) -> Option<String> {
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

/// Hosts where plain HTTP is allowed without `insecure` (as Docker does):
/// localhost, loopback and RFC 1918 addresses.
fn plain_http_allowed(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    is_loopback_host(name)
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|v4| v4.is_private())
}

/// Whether credentials may be sent to a registry at `base`: over HTTPS,
/// to loopback over plain HTTP, or anywhere with `insecure`.
fn credentials_may_travel(base: &Url, insecure: bool) -> bool {
    base.scheme() == "https" || insecure || base.host_str().is_some_and(is_loopback_host)
}

/// `localhost`, a `.localhost` name or a loopback address (IPv6 with or
/// without brackets).
fn is_loopback_host(name: &str) -> bool {
    let name = name.trim_matches(['[', ']']);
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A TLS failure that says the certificate was checked and refused (as
/// opposed to a server that does not speak TLS at all).
fn is_certificate_failure(error: &str) -> bool {
    error.contains("invalid peer certificate") || error.contains("certificate verify failed")
}

fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xfe00) == 0xfc00
        }
    }
}

/// An error with all its causes on one line, without the repeats reqwest's
/// chain carries (it hides the useful part, such as "invalid peer
/// certificate", deep in its source chain).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_local_hosts() {
        for host in [
            "localhost",
            "localhost:5000",
            "foo.localhost:1",
            "127.0.0.1",
            "127.0.0.1:5000",
            "[::1]:5000",
            "10.1.2.3",
            "172.16.0.1:443",
            "192.168.1.1:80",
        ] {
            assert!(plain_http_allowed(host), "{host}");
        }
        for host in [
            "registry-1.docker.io",
            "ghcr.io:443",
            "8.8.8.8",
            "172.32.0.1",
            "localhost.example.com",
        ] {
            assert!(!plain_http_allowed(host), "{host}");
        }
    }

    #[test]
    fn credentials_travel_over_https_to_loopback_or_when_insecure() {
        let url = |u: &str| Url::parse(u).unwrap();
        assert!(credentials_may_travel(&url("https://10.0.0.5/"), false));
        assert!(credentials_may_travel(
            &url("http://127.0.0.1:5000/"),
            false
        ));
        assert!(credentials_may_travel(&url("http://[::1]:5000/"), false));
        assert!(credentials_may_travel(
            &url("http://localhost:5000/"),
            false
        ));
        assert!(!credentials_may_travel(
            &url("http://10.0.0.5:5000/"),
            false
        ));
        assert!(!credentials_may_travel(&url("http://192.168.1.1/"), false));
        assert!(!credentials_may_travel(
            &url("http://registry.example.com/"),
            false
        ));
        assert!(credentials_may_travel(&url("http://10.0.0.5:5000/"), true));
        assert!(is_certificate_failure(
            "error sending request: invalid peer certificate: UnknownIssuer"
        ));
        assert!(!is_certificate_failure(
            "received corrupt message of type InvalidContentType"
        ));
    }

    #[test]
    fn realm_rules() {
        let client = RegistryClient::new(
            "127.0.0.1:5000",
            ClientOptions {
                credentials: None,
                insecure: false,
                ca_certs: vec![],
                access: Access::Pull,
                credential_hosts: None,
            },
        )
        .unwrap();
        let http_base = Url::parse("http://127.0.0.1:5000/").unwrap();
        let https_base = Url::parse("https://registry.example.com/").unwrap();
        // Same loopback IP, other port: fine.
        client
            .check_realm(&http_base, "http://127.0.0.1:6000/token")
            .unwrap();
        // A public registry pointing its realm at an internal address: refused.
        assert!(
            client
                .check_realm(&https_base, "https://10.0.0.1/token")
                .is_err()
        );
        // http realm for an https registry: refused.
        assert!(
            client
                .check_realm(&https_base, "http://auth.example.com/token")
                .is_err()
        );
        client
            .check_realm(&https_base, "https://auth.example.com/token")
            .unwrap();
    }
}
