//! A misbehaving proxy in front of a real registry: paginates tag listings
//! with opaque `Link` cursors (as ECR and Quay do), injects 429/5xx answers
//! and connections dropped mid-body, strips headers, and counts requests.

use futures_util::StreamExt as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::quirks::{Quirk, QuirkState, Seen};
use super::registry::TestRegistry;
use super::runtime;

/// What to do to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds) without forwarding.
    Status(u16, Option<u64>),
    /// Forward, then cut the response body after `bytes` bytes.
    DropAfter(usize),
    /// Read the request body, forward only its first `bytes` bytes (none
    /// for 0; a `Content-Range` is narrowed to match), then drop the
    /// connection without an answer: an upload cut mid-way.
    CutUpload(usize),
    /// Forward as usual (to let the first matching requests through).
    Pass,
    /// Forward, and drop `Location` from the answer (ECR's manifest PUT).
    StripLocation,
    /// Answer with this status and a body of this many bytes (`a`s, in
    /// 1 MiB chunks, no `Content-Length`): a hostile server's flood.
    Flood(u16, u64),
    /// Answer 200 with this JSON body (e.g. a forged tag page).
    Json(std::sync::Arc<Vec<u8>>),
    /// Wait this long, then forward as usual (a slow first byte).
    Delay(std::time::Duration),
    /// Forward, send the first `bytes` of the body, then end it cleanly
    /// (the declared length kept): a truncated body.
    Truncate(usize),
    /// Forward, send the first `bytes` of the body, then fall silent for
    /// the duration (connection open), then drop: a stalled server.
    StallAfter(usize, std::time::Duration),
    /// Only for requests with a `Range`: forward asking for bytes from this
    /// offset instead of the one asked for, so the 206 answer (its
    /// `Content-Range` and bytes agreeing) is another part than asked for.
    /// `RangeFrom(0)` is a registry that answers every Range from the start.
    RangeFrom(RangeStart),
    /// Forward without the `Authorization` header: the registry's own 401
    /// and challenge, as a token that expired mid-run gets.
    Unauthorized,
}

/// Where a [`Fault::RangeFrom`] answer starts.
#[derive(Clone, Copy, Debug)]
pub enum RangeStart {
    /// Byte 0.
    Zero,
    /// This many bytes after the offset asked for.
    Later(u64),
}

impl Fault {
    /// Whether this fault takes a request with these headers (the others
    /// pass it by, still counted for no rule).
    fn takes(&self, headers: &axum::http::HeaderMap) -> bool {
        match self {
            Fault::RangeFrom(_) => headers.contains_key("range"),
            _ => true,
        }
    }
}

struct Rule {
    method: Option<String>,
    path_contains: String,
    fault: Fault,
    remaining: usize,
}

#[derive(Default)]
struct Settings {
    latency: std::time::Duration,
    /// A token realm to name in every challenge instead of the registry's.
    challenge_realm: Option<String>,
    page_size: Option<usize>,
    strip_head_digest: bool,
    ignore_range: bool,
    /// ECR: a chunk's `PATCH` answered 201 instead of 202.
    chunks_created: bool,
    /// ECR: every `Range` of an upload after its first `PATCH` is the
    /// first one's.
    stale_upload_range: bool,
    /// The first `Range` each upload session answered (by path).
    first_ranges: std::collections::HashMap<String, String>,
    rules: Vec<Rule>,
    log: Vec<(String, String)>,
    /// Requests that carried `Authorization`: (method, path?query, scheme).
    authorized: Vec<(String, String, String)>,
    /// The referrers API stand-in: the registry's storage root and the
    /// page size (see [`FaultProxy::serve_referrers`]).
    referrers: Option<(std::path::PathBuf, usize)>,
    /// Cited registry behaviours to reproduce (see [`FaultProxy::quirk`]).
    quirks: Vec<Quirk>,
}

struct ProxyState {
    upstream: String,
    /// Requests for `/token` go here instead (a registry's own token
    /// endpoint on its host, as ECR Public serves it).
    token_upstream: Option<String>,
    /// The scheme clients reach the proxy with.
    scheme: &'static str,
    http: reqwest::Client,
    settings: Mutex<Settings>,
    /// Response body bytes sent to clients, request body bytes received.
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    quirk_state: Mutex<QuirkState>,
}

pub struct FaultProxy {
    pub port: u16,
    address: std::net::Ipv4Addr,
    state: Arc<ProxyState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultProxy {
    /// A proxy in front of a plain-HTTP registry.
    pub fn start(upstream: &TestRegistry) -> Self {
        assert!(
            upstream.tls.is_none(),
            "the proxy forwards to plain HTTP registries"
        );
        Self::in_front_of(&format!("http://{}", upstream.host()))
    }

    /// A proxy in front of any plain-HTTP server (`http://host:port`).
    /// Redirects are passed on, never followed.
    pub fn in_front_of(upstream: &str) -> Self {
        Self::in_front_of_at(upstream, std::net::Ipv4Addr::LOCALHOST)
    }

    /// [`FaultProxy::in_front_of`], listening on another loopback address
    /// (127.0.0.2: a host of its own, not only another port).
    pub fn in_front_of_at(upstream: &str, address: std::net::Ipv4Addr) -> Self {
        Self::launch(upstream, None, address, "http", |app| {
            super::serve_on(app, (address, 0).into())
        })
    }

    /// A registry's HTTPS front on `address`:443 (inside a private network
    /// namespace, where the test's `/etc/hosts` names it): `/token` goes to
    /// `token_upstream`, the rest to `upstream`, both plain HTTP. The
    /// registry must build its URLs from the request (relative `Location`s
    /// or the forwarded `Host`), which distribution does.
    pub fn tls_front(
        upstream: &str,
        token_upstream: &str,
        address: std::net::Ipv4Addr,
        tls: &super::tls::TlsMaterial,
    ) -> Self {
        Self::launch(upstream, Some(token_upstream), address, "https", |app| {
            super::serve_tls(app, (address, 443).into(), tls)
        })
    }

    fn launch(
        upstream: &str,
        token_upstream: Option<&str>,
        address: std::net::Ipv4Addr,
        scheme: &'static str,
        serve: impl FnOnce(axum::Router) -> (u16, tokio::sync::oneshot::Sender<()>),
    ) -> Self {
        super::install_crypto();
        let state = Arc::new(ProxyState {
            upstream: upstream.to_owned(),
            token_upstream: token_upstream.map(str::to_owned),
            scheme,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            settings: Mutex::new(Settings::default()),
            bytes_down: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            quirk_state: Mutex::new(QuirkState::default()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let (port, tx) = serve(app);
        FaultProxy {
            port,
            address,
            state,
            shutdown: Some(tx),
        }
    }

    pub fn host(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    pub fn repo(&self, path: &str) -> String {
        format!("{}/{path}", self.host())
    }

    /// Serve tag listings `n` at a time with opaque `next_page` cursors.
    pub fn paginate(&self, n: usize) {
        self.state.settings.lock().unwrap().page_size = Some(n);
    }

    /// Delay every answer by `latency`, as a remote registry's round trip.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.state.settings.lock().unwrap().latency = latency;
    }

    /// Drop `Range` from requests, as registries that do not support it
    /// behave: they answer 200 with the whole blob.
    pub fn ignore_range(&self) {
        self.state.settings.lock().unwrap().ignore_range = true;
    }

    /// Answer chunk uploads as AWS ECR does (aws/containers-roadmap#2831,
    /// jdx/mise#11376, crashappsec/chalk#682): with `created`, every
    /// `PATCH` the registry acknowledged with 202 is answered 201; with
    /// `stale_range`, every `Range` an upload session answers (its
    /// `PATCH`es, and the status `GET`, which is stricter than reported)
    /// after the first `PATCH` is that first answer's, although the
    /// registry stores every chunk.
    pub fn answer_uploads_like_ecr(&self, created: bool, stale_range: bool) {
        let mut settings = self.state.settings.lock().unwrap();
        settings.chunks_created = created;
        settings.stale_upload_range = stale_range;
    }

    /// Answer the OCI 1.1 referrers API (`GET /v2/<name>/referrers/<digest>`),
    /// which distribution 2.8 lacks, as the distribution spec 1.1 describes
    /// it and ECR, GHCR, ACR and Docker Hub serve it: an OCI index of the
    /// repository's manifests whose `subject` is that digest, read from the
    /// registry itself (every manifest of the repository, as its storage
    /// under `storage_root` lists them), each descriptor with its
    /// `artifactType` (the manifest's, else its config's media type) and
    /// annotations; `?artifactType=` filters (and says so in
    /// `OCI-Filters-Applied`); `page_size` descriptors a page, the next one
    /// named by `Link: <…>; rel="next"`.
    pub fn serve_referrers(&self, storage_root: std::path::PathBuf, page_size: usize) {
        self.state.settings.lock().unwrap().referrers = Some((storage_root, page_size.max(1)));
    }

    /// Behave as a real registry does where it differs from distribution
    /// 2.8 (each [`Quirk`] names which and its source).
    /// [`Quirk::AbsoluteTagLinks`] pages tag listings 2 at a time.
    pub fn quirk(&self, quirk: Quirk) {
        let mut settings = self.state.settings.lock().unwrap();
        if quirk == Quirk::AbsoluteTagLinks {
            settings.page_size = Some(2);
        }
        settings.quirks.push(quirk);
    }

    /// Drop `Docker-Content-Digest` from HEAD answers (some registries do).
    /// Every `WWW-Authenticate` challenge names `realm` from now on (a
    /// registry, or an attacker in its place, sending tokens elsewhere).
    pub fn rewrite_challenge_realm(&self, realm: &str) {
        self.state.settings.lock().unwrap().challenge_realm = Some(realm.to_owned());
    }

    pub fn strip_head_digest(&self) {
        self.state.settings.lock().unwrap().strip_head_digest = true;
    }

    /// Apply `fault` to the next `times` requests matching method and path.
    pub fn inject(&self, method: Option<&str>, path_contains: &str, fault: Fault, times: usize) {
        self.state.settings.lock().unwrap().rules.push(Rule {
            method: method.map(str::to_owned),
            path_contains: path_contains.to_owned(),
            fault,
            remaining: times,
        });
    }

    /// Faults not yet used up.
    pub fn pending_faults(&self) -> usize {
        self.state
            .settings
            .lock()
            .unwrap()
            .rules
            .iter()
            .map(|r| r.remaining)
            .sum()
    }

    /// Requests seen, as (method, path?query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.settings.lock().unwrap().log.clone()
    }

    /// Requests that carried an `Authorization` header, as (method,
    /// path?query, scheme: `Basic`, `Bearer`, `AWS4-HMAC-SHA256`…).
    pub fn authorized(&self) -> Vec<(String, String, String)> {
        self.state.settings.lock().unwrap().authorized.clone()
    }

    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p)| m == method && p.contains(path_contains))
            .count()
    }

    /// Body bytes the proxy sent to clients (answers) and received from
    /// them (uploads), faults included.
    pub fn bytes_moved(&self) -> (u64, u64) {
        (
            self.state.bytes_down.load(Ordering::Relaxed),
            self.state.bytes_up.load(Ordering::Relaxed),
        )
    }

    pub fn clear_log(&self) {
        self.state.settings.lock().unwrap().log.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn handle(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let response = respond(state.clone(), request).await;
    // Count what the client is sent.
    let (parts, body) = response.into_parts();
    let counted = body.into_data_stream().inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            state
                .bytes_down
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    Response::from_parts(parts, Body::from_stream(counted))
}

async fn respond(state: Arc<ProxyState>, request: Request) -> Response {
    let method = request.method().to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    if method == "GET"
        && let Some(answer) = referrers_stand_in(&state, &path_and_query).await
    {
        state
            .settings
            .lock()
            .unwrap()
            .log
            .push((method.clone(), path_and_query.clone()));
        return answer;
    }
    let (fault, page_size, strip_digest, latency, ecr) = {
        let mut s = state.settings.lock().unwrap();
        s.log.push((method.clone(), path_and_query.clone()));
        if let Some(value) = request.headers().get("authorization") {
            let scheme = value
                .to_str()
                .unwrap_or_default()
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_owned();
            s.authorized
                .push((method.clone(), path_and_query.clone(), scheme));
        }
        let fault = s
            .rules
            .iter_mut()
            .find(|r| {
                r.remaining > 0
                    && r.method.as_deref().is_none_or(|m| m == method)
                    && path_and_query.contains(&r.path_contains)
                    && r.fault.takes(request.headers())
            })
            .map(|r| {
                r.remaining -= 1;
                r.fault.clone()
            });
        (
            fault,
            s.page_size,
            s.strip_head_digest,
            s.latency,
            (s.chunks_created, s.stale_upload_range),
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(Fault::Status(code, retry_after)) = fault {
        let mut response = (
            StatusCode::from_u16(code).unwrap(),
            format!(r#"{{"errors":[{{"code":"INJECTED","message":"injected {code}"}}]}}"#),
        )
            .into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(
                "retry-after",
                HeaderValue::from_str(&secs.to_string()).unwrap(),
            );
        }
        return response;
    }
    if let Some(Fault::Flood(code, bytes)) = fault {
        return Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(super::flood_body(bytes, b'a'))
            .unwrap();
    }
    if let Some(Fault::Delay(pause)) = fault {
        tokio::time::sleep(pause).await;
    }
    if let Some(Fault::Json(body)) = fault {
        return Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(body.as_ref().clone()))
            .unwrap();
    }
    if let Some(Fault::CutUpload(keep)) = fault {
        cut_upload(&state, request, keep).await;
        // Dropping the connection mid-request: the connection task ends
        // without an answer (resume_unwind skips the panic message).
        std::panic::resume_unwind(Box::new("injected upload cut"));
    }
    let path = request.uri().path().to_owned();
    let quirks = state.settings.lock().unwrap().quirks.clone();
    let seen = Seen {
        path: path.clone(),
        accept: request
            .headers()
            .get_all("accept")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let upstream = |method: &str, path: &str| {
        state
            .http
            .request(method.parse().unwrap(), format!("{}{path}", state.upstream))
    };
    let request = match super::quirks::before(&quirks, &state.quirk_state, &upstream, request).await
    {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    if let (Some(n), true, "GET") = (page_size, path.ends_with("/tags/list"), method.as_str()) {
        let absolute = quirks.contains(&Quirk::AbsoluteTagLinks);
        let answer = paginated(&state, request, &path, n, fault, absolute).await;
        return super::quirks::after(&quirks, &seen, answer).await;
    }
    let strip_location = matches!(fault, Some(Fault::StripLocation));
    let mut request = request;
    if matches!(fault, Some(Fault::Unauthorized)) {
        request.headers_mut().remove("authorization");
    }
    if let Some(Fault::RangeFrom(start)) = fault {
        move_range(&mut request, start);
    }
    let response = forward(&state, request).await;
    let mut response = cut(response, fault).await;
    if strip_location {
        response.headers_mut().remove("location");
    }
    if strip_digest && method == "HEAD" {
        response.headers_mut().remove("docker-content-digest");
    }
    if path.contains("/blobs/uploads/") && matches!(method.as_str(), "PATCH" | "GET") {
        answer_like_ecr(&state, &method, &path, &mut response, ecr);
    }
    super::quirks::after(&quirks, &seen, response).await
}

/// See [`FaultProxy::serve_referrers`]: `None` when it is off or the
/// request is not a referrers listing.
async fn referrers_stand_in(state: &ProxyState, path_and_query: &str) -> Option<Response> {
    let (root, page_size) = state.settings.lock().unwrap().referrers.clone()?;
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let (name, subject) = path.strip_prefix("/v2/")?.rsplit_once("/referrers/")?;
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    let revisions = root
        .join("docker/registry/v2/repositories")
        .join(name)
        .join("_manifests/revisions/sha256");
    let mut digests: Vec<String> = std::fs::read_dir(&revisions)
        .map(|entries| {
            entries
                .filter_map(|e| Some(format!("sha256:{}", e.ok()?.file_name().to_str()?)))
                .collect()
        })
        .unwrap_or_default();
    digests.sort();
    let mut found = Vec::new();
    for digest in digests {
        let answer = state
            .http
            .get(format!("{}/v2/{name}/manifests/{digest}", state.upstream))
            .header("accept", super::image::MANIFEST_ACCEPT)
            .send()
            .await
            .ok()?;
        if answer.status() != 200 {
            continue;
        }
        let served_type = answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = answer.bytes().await.ok()?;
        let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        if manifest["subject"]["digest"].as_str() != Some(subject) {
            continue;
        }
        let mut descriptor = serde_json::json!({
            "mediaType": manifest["mediaType"].as_str().unwrap_or(&served_type),
            "digest": digest, "size": body.len(),
        });
        let artifact_type = manifest["artifactType"]
            .as_str()
            .or(manifest["config"]["mediaType"].as_str());
        if let Some(artifact_type) = artifact_type {
            descriptor["artifactType"] = artifact_type.into();
        }
        if let Some(annotations) = manifest.get("annotations") {
            descriptor["annotations"] = annotations.clone();
        }
        found.push(descriptor);
    }
    let filter = params.get("artifactType");
    if let Some(wanted) = filter {
        found.retain(|d| d["artifactType"].as_str() == Some(wanted));
    }
    let page: usize = params.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let items: Vec<_> = found
        .chunks(page_size)
        .nth(page)
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": super::image::OCI_INDEX,
                                    "manifests": items});
    let mut response = Response::builder()
        .status(200)
        .header("content-type", super::image::OCI_INDEX);
    if filter.is_some() {
        response = response.header("oci-filters-applied", "artifactType");
    }
    if (page + 1) * page_size < found.len() {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        next.append_pair("page", &(page + 1).to_string());
        if let Some(wanted) = filter {
            next.append_pair("artifactType", wanted);
        }
        response = response.header("link", format!("<{path}?{}>; rel=\"next\"", next.finish()));
    }
    Some(
        response
            .body(Body::from(serde_json::to_vec(&index).unwrap()))
            .unwrap(),
    )
}

/// See [`FaultProxy::answer_uploads_like_ecr`].
fn answer_like_ecr(
    state: &ProxyState,
    method: &str,
    path: &str,
    response: &mut Response,
    (created, stale_range): (bool, bool),
) {
    if created && method == "PATCH" && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::CREATED;
    }
    if !stale_range {
        return;
    }
    let mut settings = state.settings.lock().unwrap();
    let first = settings.first_ranges.get(path).cloned();
    match (first, response.headers().get("range").cloned()) {
        (Some(first), _) => {
            response
                .headers_mut()
                .insert("range", HeaderValue::from_str(&first).unwrap());
        }
        (None, Some(range)) if method == "PATCH" => {
            settings
                .first_ranges
                .insert(path.to_owned(), range.to_str().unwrap().to_owned());
        }
        (None, _) => {}
    }
}

/// The same method and path, sent to the registry behind the proxy.
fn upstream_request(
    state: &ProxyState,
    parts: &axum::http::request::Parts,
) -> reqwest::RequestBuilder {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let upstream = match &state.token_upstream {
        Some(tokens) if parts.uri.path() == "/token" => tokens,
        _ => &state.upstream,
    };
    let url = format!("{upstream}{path}");
    state.http.request(parts.method.clone(), url)
}

async fn cut_upload(state: &ProxyState, request: Request, keep: usize) {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    state
        .bytes_up
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    if keep == 0 {
        return;
    }
    let kept = bytes.slice(..keep.min(bytes.len()));
    let mut upstream = upstream_request(state, &parts);
    for (name, value) in parts.headers.iter() {
        match name.as_str() {
            "host" | "connection" | "content-length" | "transfer-encoding" => {}
            "content-range" => {
                let start: u64 = value
                    .to_str()
                    .unwrap()
                    .split('-')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                upstream = upstream.header(
                    "content-range",
                    format!("{start}-{}", start + kept.len() as u64 - 1),
                );
            }
            _ => upstream = upstream.header(name, value),
        }
    }
    let _ = upstream.body(kept).send().await;
}

async fn forward(state: &ProxyState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut upstream = upstream_request(state, &parts);
    let ignore_range = state.settings.lock().unwrap().ignore_range;
    for (name, value) in parts.headers.iter() {
        if ignore_range && name.as_str() == "range" {
            continue;
        }
        if !matches!(
            name.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            upstream = upstream.header(name, value);
        }
    }
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    state
        .bytes_up
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let answer = upstream.body(body).send().await.expect("upstream registry");
    let mut response = Response::builder().status(answer.status().as_u16());
    let own = format!("{}://{}", state.scheme, own_host(&parts.headers));
    let challenge_realm = state.settings.lock().unwrap().challenge_realm.clone();
    for (name, value) in answer.headers() {
        if matches!(name.as_str(), "connection" | "transfer-encoding") {
            continue;
        }
        if let (Some(realm), "www-authenticate") = (&challenge_realm, name.as_str()) {
            let text = value.to_str().unwrap_or_default();
            let rewritten = with_realm(text, realm);
            response = response.header(name, rewritten);
            continue;
        }
        // Upload locations name the registry; point them at the proxy.
        if name.as_str() == "location" {
            let rewritten = value
                .to_str()
                .unwrap_or_default()
                .replace(&state.upstream, &own);
            response = response.header(name, rewritten);
            continue;
        }
        response = response.header(name, value);
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap()
}

/// `challenge` with its `realm="…"` parameter naming `realm`.
fn with_realm(challenge: &str, realm: &str) -> String {
    match challenge.find("realm=\"") {
        Some(start) => {
            let value = start + "realm=\"".len();
            let end = challenge[value..]
                .find('"')
                .map_or(challenge.len(), |e| value + e);
            format!("{}{realm}{}", &challenge[..value], &challenge[end..])
        }
        None => challenge.to_owned(),
    }
}

/// Rewrites a request's `Range: bytes=<from>-` to start elsewhere.
fn move_range(request: &mut Request, start: RangeStart) {
    let from: Option<u64> = request
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse().ok());
    let moved = match (start, from) {
        (RangeStart::Zero, _) => 0,
        (RangeStart::Later(n), Some(from)) => from + n,
        (RangeStart::Later(_), None) => return,
    };
    request.headers_mut().insert(
        "range",
        HeaderValue::from_str(&format!("bytes={moved}-")).unwrap(),
    );
}

/// Applies a `DropAfter`, `StallAfter` or `Truncate` fault, streaming (a
/// blob of gigabytes is never held): the body stops after that many bytes,
/// then ends cleanly (truncated) or, after the stall if any, with a reset.
/// The declared length is kept, so the client sees a short message.
async fn cut(response: Response, fault: Option<Fault>) -> Response {
    let (limit, stall, reset) = match fault {
        Some(Fault::DropAfter(limit)) => (limit, None, true),
        Some(Fault::StallAfter(limit, stall)) => (limit, Some(stall), true),
        Some(Fault::Truncate(limit)) => (limit, None, false),
        _ => return response,
    };
    let (parts, body) = response.into_parts();
    let head = futures_util::stream::unfold(
        (body.into_data_stream(), limit),
        |(mut inner, left)| async move {
            if left == 0 {
                return None;
            }
            let mut chunk = inner.next().await?.ok()?;
            chunk.truncate(left);
            let left = left - chunk.len();
            Some((Ok::<_, std::io::Error>(chunk), (inner, left)))
        },
    );
    let tail = futures_util::stream::once(async move {
        if let Some(stall) = stall {
            tokio::time::sleep(stall).await;
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected drop",
        ))
    })
    .filter(move |_| std::future::ready(reset));
    Response::from_parts(parts, Body::from_stream(head.chain(tail)))
}

async fn paginated(
    state: &ProxyState,
    request: Request,
    path: &str,
    n: usize,
    fault: Option<Fault>,
    absolute: bool,
) -> Response {
    let offset = request
        .uri()
        .query()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "next_page"))
        .and_then(|(_, v)| URL_SAFE_NO_PAD.decode(v.as_bytes()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.strip_prefix("opaque-cursor-")
                .and_then(|o| o.parse::<usize>().ok())
        })
        .unwrap_or(0);
    let full = state
        .http
        .get(format!("{}{path}", state.upstream))
        .headers(
            request
                .headers()
                .iter()
                .filter(|(k, _)| k.as_str() == "authorization")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
        .send()
        .await
        .unwrap();
    if !full.status().is_success() {
        let status = full.status().as_u16();
        return (
            StatusCode::from_u16(status).unwrap(),
            full.bytes().await.unwrap(),
        )
            .into_response();
    }
    let listing: serde_json::Value = serde_json::from_slice(&full.bytes().await.unwrap()).unwrap();
    let tags: Vec<String> = serde_json::from_value(listing["tags"].clone()).unwrap_or_default();
    let page: Vec<&String> = tags.iter().skip(offset).take(n).collect();
    let body = serde_json::json!({"name": listing["name"], "tags": page}).to_string();
    let mut response = Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-length", body.len());
    if offset + n < tags.len() {
        let token = URL_SAFE_NO_PAD.encode(format!("opaque-cursor-{}", offset + n));
        let origin = match absolute {
            true => format!("http://{}", own_host(request.headers())),
            false => String::new(),
        };
        response = response.header(
            "link",
            format!(r#"<{origin}{path}?n={n}&next_page={token}>; rel="next""#),
        );
    }
    let response = response.body(Body::from(body)).unwrap();
    cut(response, fault).await
}

/// The proxy's own `host:port`, as the client named it.
fn own_host(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
