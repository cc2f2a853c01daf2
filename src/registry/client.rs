//! One registry host: a session (`session.rs`: the `/v2/` ping that picks
//! the scheme and the authentication mode), then authenticated requests with one token per scope
//! per run and a single re-authentication when a token is refused. With a
//! [`SessionCache`] (`check`), the session and the tokens come from the
//! previous runs while they are good; a cached session the registry no
//! longer agrees with is dropped and the ping made again, once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::sync::Mutex;
use url::Url;

use super::chunking::{Chunking, UploadSettings};
use super::error::StatusError;
use super::policy::check_realm;
use super::policy::{credentials_may_travel, plain_http_allowed, same_origin};
use super::retry::{RetryPolicy, is_retryable_status};
use super::session::{AuthMode, Ping, Session, challenge_scope};
use super::session_cache::{SessionCache, SessionKey, TokenKey, trust_fingerprint};
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
    /// Where sessions and tokens are kept between runs (`check` only).
    pub session_cache: Option<Arc<SessionCache>>,
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
    /// The session, once pinged or read from the cache; `None` again when
    /// a cached one is dropped.
    session: Mutex<Option<Arc<Session>>>,
    tokens: Mutex<HashMap<String, String>>,
    session_cache: Option<Arc<SessionCache>>,
    /// A fingerprint of `ca_certs`, part of the cached session's key.
    trust: String,
    retry: RetryPolicy,
    /// Blob upload settings (see `upload.rs`).
    pub(super) uploads: UploadSettings,
}

impl RegistryClient {
    /// `host` is the API host, `host[:port]`.
    pub fn new(host: &str, options: ClientOptions) -> anyhow::Result<Self> {
        let trust = match options.session_cache {
            Some(_) => trust_fingerprint(&options.ca_certs),
            None => String::new(),
        };
        Ok(RegistryClient {
            host: host.to_owned(),
            http: super::http::build_client(options.ca_certs)?,
            credentials: options.credentials,
            allow_http: options.insecure || plain_http_allowed(host),
            insecure: options.insecure,
            access: options.access,
            credential_hosts: options.credential_hosts,
            session: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            session_cache: options.session_cache,
            trust,
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
        let mut session = self.session().await?;
        let mut url = url;
        let scope = scopes.join(" ");
        let mut renewed = false;
        let mut pinged_again = false;
        loop {
            let same_host = same_origin(&url, &session.base);
            let mut request = build(self.http.request(method.clone(), url.clone()));
            // Credentials go only to the registry host itself, never to a
            // storage backend an upload or redirect points at.
            if same_host {
                request = self.authorize(request, &session, &scope).await?;
            }
            let started = Instant::now();
            // The answer is waited for within the read timeout once the
            // body (if any) was sent; the error carries no URL.
            let response = match super::http::send_and_wait(request).await {
                Ok(response) => response,
                Err(e) => {
                    // The registry may no longer speak as it did when the
                    // session was cached: the next attempt pings again.
                    if session.cached {
                        self.drop_session(&session).await;
                    }
                    return Err(e.context(format!("{method} {} failed", url.path())));
                }
            };
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
                if let (Some(cache), Some(key)) =
                    (&self.session_cache, self.token_key(&session, &scope))
                {
                    cache.forget_token(&key);
                }
                let token = self.fetch_token(&session, &scope, &wanted).await?;
                self.tokens.lock().await.insert(scope.clone(), token);
                renewed = true;
                continue;
            }
            if session.cached && !pinged_again {
                // A session from an earlier run that the registry refuses
                // (it asks for another kind of authentication now).
                tracing::debug!(
                    "{}: the cached session was refused; pinging again",
                    self.host
                );
                self.drop_session(&session).await;
                let fresh = self.session().await?;
                if !same_origin(&url, &fresh.base) && same_origin(&url, &session.base) {
                    let _ = url.set_scheme(fresh.base.scheme());
                }
                session = fresh;
                pinged_again = true;
                renewed = false;
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
                        let cached = self
                            .session_cache
                            .as_ref()
                            .and_then(|cache| cache.load_token(&self.token_key(session, scope)?));
                        let t = match cached {
                            Some(t) => t,
                            None => {
                                let scopes: Vec<String> =
                                    scope.split(' ').map(str::to_owned).collect();
                                self.fetch_token(session, scope, &scopes).await?
                            }
                        };
                        tokens.insert(scope.to_owned(), t.clone());
                        t
                    }
                };
                request.bearer_auth(token)
            }
        })
    }

    /// A fresh token for `scopes`, kept in the cache under `scope` (what
    /// this client's requests ask for).
    async fn fetch_token(
        &self,
        session: &Session,
        scope: &str,
        scopes: &[String],
    ) -> anyhow::Result<String> {
        let AuthMode::Bearer { realm, service } = &session.auth else {
            bail!("internal error: no token service for {}", self.host);
        };
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let token = token::fetch(
            &self.http,
            realm,
            service.as_deref(),
            &scopes,
            self.credentials.as_ref(),
        )
        .await
        .with_context(|| format!("authenticating to {}", self.host))?;
        if let (Some(cache), Some(key)) = (&self.session_cache, self.token_key(session, scope)) {
            cache.store_token(&key, &token.value, token.lifetime);
        }
        Ok(token.value)
    }

    /// What a token for `scope` is cached under.
    fn token_key<'a>(&'a self, session: &'a Session, scope: &'a str) -> Option<TokenKey<'a>> {
        let AuthMode::Bearer { realm, service } = &session.auth else {
            return None;
        };
        Some(TokenKey {
            host: &self.host,
            realm,
            service: service.as_deref(),
            scope,
            credentials: self
                .credentials
                .as_ref()
                .map(|c| (c.username.as_str(), c.password.as_str())),
        })
    }

    fn session_key(&self) -> SessionKey<'_> {
        SessionKey {
            host: &self.host,
            allow_http: self.allow_http,
            insecure: self.insecure,
            trust: &self.trust,
        }
    }

    /// A cloud's credentials go only to its hosts.
    fn realm_guard(&self) -> Option<&HostGuard> {
        self.credential_hosts
            .as_ref()
            .filter(|_| self.credentials.is_some())
    }

    /// The session: this run's, the cache's, or a fresh ping's.
    async fn session(&self) -> anyhow::Result<Arc<Session>> {
        // Held while pinging, so concurrent requests share one ping.
        let mut slot = self.session.lock().await;
        if let Some(session) = &*slot {
            return Ok(session.clone());
        }
        let cached = self.session_cache.as_ref().and_then(|cache| {
            cache.load_session(&self.session_key(), |base, auth| {
                self.accept_cached(base, auth)
            })
        });
        let session = match cached {
            Some(session) => session,
            None => {
                let ping = Ping {
                    http: &self.http,
                    host: &self.host,
                    allow_http: self.allow_http,
                    retry: &self.retry,
                    realm_guard: self.realm_guard(),
                };
                let session = ping.run().await?;
                if let Some(cache) = &self.session_cache {
                    cache.store_session(&self.session_key(), &session);
                }
                session
            }
        };
        let session = Arc::new(session);
        *slot = Some(session.clone());
        Ok(session)
    }

    /// A cached session, held to the rules a ping's answer meets: a scheme
    /// this source allows for this host, a token realm the realm rules
    /// accept.
    fn accept_cached(&self, base: Url, auth: AuthMode) -> anyhow::Result<Session> {
        let allowed = ["https"]
            .into_iter()
            .chain(self.allow_http.then_some("http"))
            .any(|scheme| base.as_str() == format!("{scheme}://{}/", self.host));
        if !allowed {
            bail!(
                "base {base} is not one this source allows for {}",
                self.host
            );
        }
        let auth = match auth {
            AuthMode::Bearer { realm, service } => AuthMode::Bearer {
                realm: check_realm(&base, realm.as_str(), self.realm_guard())?,
                service,
            },
            other => other,
        };
        Ok(Session {
            base,
            auth,
            cached: true,
        })
    }

    /// Forgets `failed` (a cached session), here and in the cache, with the
    /// tokens it led to; the next request pings again.
    async fn drop_session(&self, failed: &Arc<Session>) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, failed)) {
            *slot = None;
            self.tokens.lock().await.clear();
            if let Some(cache) = &self.session_cache {
                cache.forget_session(&self.session_key());
            }
        }
    }
}
