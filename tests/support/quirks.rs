//! Cited behaviours of real registries that differ from distribution 2.8,
//! each a mode of the fault proxy ([`super::proxy::FaultProxy::quirk`]).
//! Every mode names the registry and the public source of the behaviour;
//! `shared/reference/registry-quirks.md` §15 has the list they come from.
//! The proxy applies [`before`] to a request (answer it, or rewrite it)
//! and [`after`] to the registry's answer.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::Response;

use super::image::{MANIFEST_ACCEPT, OCI_INDEX};

/// One registry's behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quirk {
    /// Manifest HEADs answered with this status although GET serves the
    /// manifest: 404 (Nexus 3.96 and later, sonatype/nexus-public#1059),
    /// 405 (registries without HEAD; concourse/registry-image-resource#249
    /// falls back to GET).
    ManifestHead(u16),
    /// A manifest HEAD whose `Accept` lacks the index types answers the
    /// linux/amd64 child's digest (Docker Hub; opencontainers/
    /// distribution-spec#207, distribution/distribution#2395).
    HeadAnswersChild,
    /// Manifests served with this `Content-Type` instead of their media
    /// type: `""` none (Nexus 3.22, containers/buildah#2266), generic JSON,
    /// or the type with a parameter.
    ManifestContentType(&'static str),
    /// A tag holding an index answers 404 unless `Accept` names the OCI
    /// index type (Google Artifact Registry; concourse/docker-image-
    /// resource#369).
    IndexNeedsAccept,
    /// 406 to blob and upload requests carrying an `Accept` other than
    /// `*/*` (Artifactory 7.41.14; dotnet/sdk-container-builds#382).
    AcceptOnlyForManifests,
    /// Upload `Location`s as a bare path (zot, distribution v3, ACR's
    /// relative links; registry-quirks.md §7, §13, §14).
    RelativeUploadLocation,
    /// Blob GETs answer 302 with a relative `Location` on the same host,
    /// served there without authentication (Artifact Registry's
    /// `/artifacts-downloads/`; ahmetb/serverless-registry-proxy#8).
    RelativeBlobRedirect,
    /// Cross-repository mounts answered with this status instead of 201:
    /// 202 with a fresh session (ECR unless a manifest in `from` references
    /// the blob, aws/containers-roadmap#2860), 401 (Harbor, goharbor/
    /// harbor#17097), 405 (Nexus and others, gardener/cc-utils#1665).
    MountRefused(u16),
    /// JSON `null` and digests among the tags (Nexus 3.58, containers/
    /// skopeo#2409; Artifactory, containers/skopeo#2346).
    TagListJunk,
    /// `PATCH` bodies over this many bytes answered 416 "the request body
    /// is too large" (GHCR's 4 MiB; ocx-sh/ocx#237).
    PatchCap(usize),
    /// `OCI-Chunk-Min-Length` on new upload sessions, and the commit
    /// refused (400) when a chunk but the last was smaller (OCI distribution
    /// spec 1.1; regclient reads the header).
    ChunkMinLength(usize),
    /// The referrers API path redirects to an HTML sign-in page (Artifact
    /// Registry; awslabs/soci-snapshotter docs/registry.md).
    ReferrersHtml,
    /// Manifest PUTs without a top-level `mediaType` answered 405
    /// `UNSUPPORTED` "Invalid JSON syntax" (ECR; containers/libpod#1719).
    MediaTypeRequired,
    /// Manifest PUTs with Docker media types answered 400
    /// `MANIFEST_INVALID` (zot without its `docker2s2` compat; project-zot/
    /// zot pkg/compat/compat.go).
    DockerTypesRefused,
    /// 401 answers to anything but `GET /v2/` carry no `WWW-Authenticate`
    /// (gcr.io; containers/image#211).
    ChallengeOnlyOnPing,
    /// The challenge's scheme in capitals, `BASIC realm=…` (Nexus;
    /// dotnet/sdk-container-builds#527).
    UpperCaseScheme,
    /// Tag listings paged (2 a page) by absolute `Link` URLs with an opaque
    /// cursor (Quay in 2016; TritonDataCenter/node-docker-registry-client#12).
    AbsoluteTagLinks,
    /// Tags are immutable: a manifest PUT to an existing tag answered 400
    /// `TAG_INVALID`, even for the digest it already names (ECR's
    /// immutable repositories; osscontainertools/kaniko#204,
    /// moby/buildkit#3776).
    ImmutableTags,
    /// Manifest PUTs whose body has a `subject` answered with this status
    /// (404: Docker Hub until about 2023, docker/hub-feedback#2307; 405:
    /// ECR for an index subject, aws/containers-roadmap#2783).
    SubjectRefused(u16),
    /// Docker Hub's pull limit: manifest GETs after this many answered 429
    /// `TOOMANYREQUESTS` without `Retry-After`, with `ratelimit-limit:
    /// 100;w=21600`, `ratelimit-remaining: 0;w=21600` and
    /// `docker-ratelimit-source`; HEADs are not counted (docs.docker.com/
    /// docker-hub/usage/pulls/, docker/docs#11707).
    PullLimit(usize),
}

/// What the proxy remembers for the quirks that span requests.
#[derive(Default)]
pub struct QuirkState {
    /// `PATCH` body sizes per upload session path, for
    /// [`Quirk::ChunkMinLength`].
    chunks: HashMap<String, Vec<usize>>,
    /// Manifest GETs counted by [`Quirk::PullLimit`].
    pulls: usize,
}

/// What [`after`] needs of the request.
pub struct Seen {
    pub path: String,
    pub accept: String,
}

fn is_manifest(path: &str) -> bool {
    path.starts_with("/v2/") && path.contains("/manifests/")
}

fn is_blob_get(method: &str, path: &str) -> bool {
    method == "GET"
        && path.starts_with("/v2/")
        && path.contains("/blobs/sha256:")
        && !path.contains("/uploads/")
}

fn error(status: u16, code: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(format!(
            r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#
        )))
        .unwrap()
}

/// Applies `quirks` to a request: `Err` is the answer to give without
/// forwarding, `Ok` the request to forward (maybe rewritten). `upstream`
/// fetches from the registry behind the proxy.
pub async fn before(
    quirks: &[Quirk],
    state: &std::sync::Mutex<QuirkState>,
    upstream: &(impl Fn(&str, &str) -> reqwest::RequestBuilder + Sync),
    mut request: Request,
) -> Result<Request, Response> {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let accept = header(&request, "accept");
    let length: usize = header(&request, "content-length").parse().unwrap_or(0);
    for quirk in quirks {
        match *quirk {
            Quirk::ManifestHead(status) if method == "HEAD" && is_manifest(&path) => {
                return Err(Response::builder()
                    .status(status)
                    .body(Body::empty())
                    .unwrap());
            }
            Quirk::HeadAnswersChild
                if method == "HEAD"
                    && is_manifest(&path)
                    && !accept.contains("index")
                    && !accept.contains("list") =>
            {
                return Err(child_answer(upstream, &path).await);
            }
            Quirk::AcceptOnlyForManifests
                if !is_manifest(&path)
                    && path != "/v2/"
                    && !path.contains("/referrers/")
                    && !accept.is_empty()
                    && accept != "*/*" =>
            {
                return Err(error(406, "UNSUPPORTED", "Not Acceptable"));
            }
            Quirk::RelativeBlobRedirect if is_blob_get(&method, &path) => {
                return Err(Response::builder()
                    .status(302)
                    .header("location", format!("/artifacts-downloads{path}"))
                    .body(Body::empty())
                    .unwrap());
            }
            Quirk::RelativeBlobRedirect if path.starts_with("/artifacts-downloads/v2/") => {
                let registry_path = path.trim_start_matches("/artifacts-downloads");
                *request.uri_mut() = registry_path.parse::<Uri>().unwrap();
                // The download needs no credentials; none reach the registry.
                request.headers_mut().remove("authorization");
            }
            Quirk::MountRefused(status)
                if method == "POST"
                    && path.ends_with("/blobs/uploads/")
                    && request.uri().query().unwrap_or("").contains("mount=") =>
            {
                match status {
                    // A session instead of the mount.
                    202 => *request.uri_mut() = path.parse::<Uri>().unwrap(),
                    401 => {
                        return Err(error(401, "UNAUTHORIZED", "project origin not found"));
                    }
                    _ => return Err(error(status, "UNSUPPORTED", "mount is not supported")),
                }
            }
            Quirk::PatchCap(cap) if method == "PATCH" && length > cap => {
                return Err(error(
                    416,
                    "REQUESTED_RANGE_NOT_SATISFIABLE",
                    "the request body is too large and exceeds the maximum permissible limit of 4.00MiB",
                ));
            }
            Quirk::ChunkMinLength(_) if method == "PATCH" => {
                state
                    .lock()
                    .unwrap()
                    .chunks
                    .entry(path.clone())
                    .or_default()
                    .push(length);
            }
            Quirk::ChunkMinLength(min) if method == "PUT" && path.contains("/blobs/uploads/") => {
                let chunks = state
                    .lock()
                    .unwrap()
                    .chunks
                    .remove(&path)
                    .unwrap_or_default();
                // The last chunk may be short: the PUT's body when it has
                // one, else the last PATCH.
                let held_to_the_minimum = match chunks.split_last() {
                    Some((_, all_but_last)) if length == 0 => all_but_last,
                    _ => &chunks[..],
                };
                if held_to_the_minimum.iter().any(|&c| c < min) {
                    return Err(error(
                        400,
                        "BLOB_UPLOAD_INVALID",
                        &format!("chunk smaller than the minimum: {chunks:?} then {length}"),
                    ));
                }
            }
            Quirk::PullLimit(allowed) if method == "GET" && is_manifest(&path) => {
                let mut state = state.lock().unwrap();
                state.pulls += 1;
                if state.pulls > allowed {
                    let mut answer = error(
                        429,
                        "TOOMANYREQUESTS",
                        "You have reached your unauthenticated pull rate limit. https://www.docker.com/increase-rate-limit",
                    );
                    for (name, value) in [
                        ("ratelimit-limit", "100;w=21600"),
                        ("ratelimit-remaining", "0;w=21600"),
                        ("docker-ratelimit-source", "192.0.2.1"),
                    ] {
                        answer
                            .headers_mut()
                            .insert(name, HeaderValue::from_static(value));
                    }
                    return Err(answer);
                }
            }
            Quirk::ReferrersHtml if method == "GET" && path.contains("/referrers/") => {
                return Err(Response::builder()
                    .status(302)
                    .header("location", "/signin?continue=referrers")
                    .body(Body::empty())
                    .unwrap());
            }
            Quirk::ReferrersHtml if path == "/signin" => {
                return Err(Response::builder()
                    .status(200)
                    .header("content-type", "text/html; charset=utf-8")
                    .body(Body::from("<!doctype html><title>Sign in</title>"))
                    .unwrap());
            }
            Quirk::ImmutableTags
                if method == "PUT"
                    && is_manifest(&path)
                    && !path.contains("/manifests/sha256:") =>
            {
                let existing = upstream("HEAD", &path)
                    .header("accept", MANIFEST_ACCEPT)
                    .send()
                    .await
                    .unwrap();
                if existing.status() == StatusCode::OK {
                    let tag = path.rsplit('/').next().unwrap_or_default();
                    return Err(error(
                        400,
                        "TAG_INVALID",
                        &format!(
                            "The image tag '{tag}' already exists and cannot be overwritten because the tag is immutable."
                        ),
                    ));
                }
            }
            Quirk::MediaTypeRequired | Quirk::DockerTypesRefused | Quirk::SubjectRefused(_)
                if method == "PUT" && is_manifest(&path) =>
            {
                let content_type = header(&request, "content-type");
                let (parts, body) = request.into_parts();
                let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
                let manifest: serde_json::Value =
                    serde_json::from_slice(&bytes).unwrap_or_default();
                if *quirk == Quirk::MediaTypeRequired && manifest.get("mediaType").is_none() {
                    return Err(error(
                        405,
                        "UNSUPPORTED",
                        "Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'",
                    ));
                }
                if *quirk == Quirk::DockerTypesRefused
                    && content_type.starts_with("application/vnd.docker.")
                {
                    return Err(error(400, "MANIFEST_INVALID", "manifest invalid"));
                }
                if let Quirk::SubjectRefused(status) = *quirk
                    && manifest.get("subject").is_some()
                {
                    return Err(error(status, "MANIFEST_INVALID", "manifest invalid"));
                }
                request = Request::from_parts(parts, Body::from(bytes));
            }
            _ => {}
        }
    }
    Ok(request)
}

/// Applies `quirks` to the registry's answer to `seen`.
pub async fn after(quirks: &[Quirk], seen: &Seen, mut response: Response) -> Response {
    let ok = response.status() == StatusCode::OK;
    for quirk in quirks {
        match *quirk {
            Quirk::ManifestContentType(served) if ok && is_manifest(&seen.path) => {
                if served.is_empty() {
                    response.headers_mut().remove("content-type");
                } else if served.starts_with(';') {
                    let typed = response.headers().get("content-type").cloned();
                    if let Some(typed) = typed {
                        let with = format!("{}{served}", typed.to_str().unwrap());
                        response
                            .headers_mut()
                            .insert("content-type", HeaderValue::from_str(&with).unwrap());
                    }
                } else {
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static(served));
                }
            }
            Quirk::IndexNeedsAccept
                if ok
                    && is_manifest(&seen.path)
                    && !seen.accept.contains(OCI_INDEX)
                    && response
                        .headers()
                        .get("content-type")
                        .is_some_and(|t| t.to_str().unwrap_or("").contains("index")) =>
            {
                return error(
                    404,
                    "MANIFEST_UNKNOWN",
                    "Failed to fetch: client doesn't include application/vnd.oci.image.index.v1+json in Accept header",
                );
            }
            Quirk::RelativeUploadLocation if seen.path.contains("/blobs/uploads/") => {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url::Url::parse(l).ok());
                if let Some(location) = location {
                    let relative = match location.query() {
                        Some(query) => format!("{}?{query}", location.path()),
                        None => location.path().to_owned(),
                    };
                    response
                        .headers_mut()
                        .insert("location", HeaderValue::from_str(&relative).unwrap());
                }
            }
            Quirk::ChunkMinLength(min)
                if response.status() == StatusCode::ACCEPTED
                    && seen.path.ends_with("/blobs/uploads/") =>
            {
                response
                    .headers_mut()
                    .insert("oci-chunk-min-length", HeaderValue::from(min));
            }
            Quirk::TagListJunk if ok && seen.path.ends_with("/tags/list") => {
                let (mut parts, body) = response.into_parts();
                let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
                let mut listing: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                if let Some(tags) = listing["tags"].as_array_mut() {
                    tags.insert(0, serde_json::Value::Null);
                    tags.push(format!("sha256:{}", "ab".repeat(32)).into());
                }
                parts.headers.remove("content-length");
                response =
                    Response::from_parts(parts, Body::from(serde_json::to_vec(&listing).unwrap()));
            }
            Quirk::ChallengeOnlyOnPing
                if response.status() == StatusCode::UNAUTHORIZED && seen.path != "/v2/" =>
            {
                response.headers_mut().remove("www-authenticate");
            }
            Quirk::UpperCaseScheme => {
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|c| c.to_str().ok())
                    .map(str::to_owned);
                if let Some(challenge) = challenge
                    && let Some((scheme, rest)) = challenge.split_once(' ')
                {
                    let upper = format!("{} {rest}", scheme.to_uppercase());
                    response
                        .headers_mut()
                        .insert("www-authenticate", HeaderValue::from_str(&upper).unwrap());
                }
            }
            _ => {}
        }
    }
    response
}

fn header(request: &Request, name: &str) -> String {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Docker Hub's answer to a HEAD that does not accept indexes: the
/// linux/amd64 child's digest when the tag holds an index.
async fn child_answer(
    upstream: &(impl Fn(&str, &str) -> reqwest::RequestBuilder + Sync),
    path: &str,
) -> Response {
    let answer = upstream("GET", path)
        .header("accept", MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let body = answer.bytes().await.unwrap();
    let listing: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let child = listing["manifests"].as_array().and_then(|children| {
        children
            .iter()
            .find(|c| c["platform"]["os"] == "linux" && c["platform"]["architecture"] == "amd64")
    });
    let mut builder = Response::builder().status(status);
    match child {
        Some(child) => {
            builder = builder
                .header("docker-content-digest", child["digest"].as_str().unwrap())
                .header("content-type", child["mediaType"].as_str().unwrap())
                .header("content-length", child["size"].to_string());
        }
        None => {
            for (name, value) in &headers {
                if name.as_str() != "transfer-encoding" {
                    builder = builder.header(name, value);
                }
            }
        }
    }
    builder.body(Body::empty()).unwrap()
}
