//! One registry host: a session (`session.rs`: the `/v2/` ping that picks
//! the scheme and the authentication mode), then authenticated requests with one token per scope
//! per run and a single re-authentication when a token is refused.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::sync::{Mutex, OnceCell};
use url::Url;

use super::chunking::{Chunking, UploadSettings};
use super::error::StatusError;
use super::policy::{credentials_may_travel, plain_http_allowed, same_origin};
use super::retry::{RetryPolicy, is_retryable_status};
use super::session::{AuthMode, Ping, Session, challenge_scope};
use crate::auth::{Access, Credentials, HostGuard, repository_scope, token};

/// How to reach and authenticate to a registry.
#[derive(Debug)]
pub struct ClientOptions {
    /// Credentials to answer the registry's challenges with.
    pub credentials: Option<Credentials>,
    /// `source.insecure`: allow falling back to plain HTTP.
    pub insecure: bool,
    /// Extra trust roots (`source.ca_certs`).
    pub ca_certs: Vec<super::trust::CaCert>,
    /// What the tokens ask for.
    pub access: Access,
    /// For a cloud's credentials (ACR's refresh token): the hosts they may
    /// go to; a token realm elsewhere is refused.
    pub credential_hosts: Option<HostGuard>,
    /// How blobs are cut into upload chunks.
    pub chunking: Chunking,
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
    pub(super) uploads: UploadSettings,
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
            uploads: UploadSettings::new(options.chunking),
        })
    }

    /// This client with another retry policy.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The HTTP client, for requests that carry none of the registry's
    /// credentials (a storage URL the registry redirected to).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
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
        let same_host = same_origin(&url, &session.base);
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
                return Err(anyhow!(StatusError::from_response(response).await));
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
            let error = StatusError::from_response(response).await;
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
        let ping = Ping {
            http: &self.http,
            host: &self.host,
            allow_http: self.allow_http,
            retry: &self.retry,
            // A cloud's credentials go only to its hosts.
            realm_guard: self
                .credential_hosts
                .as_ref()
                .filter(|_| self.credentials.is_some()),
        };
        self.session.get_or_try_init(|| ping.run()).await
    }
}
