//! Blob uploads (the distribution spec's push protocol):
//!
//! - `HEAD` first, so a blob the repository already has is never sent;
//! - a cross-repository mount (`POST ?mount=&from=`) when the blob is known
//!   to be in another repository of the same registry; a registry that
//!   declines opens a normal upload instead, which is then used;
//! - chunked `PATCH`es with `Content-Range`. A chunk is acknowledged by
//!   202 (the spec), 204, or 201 (AWS ECR answers every chunk so). The
//!   offset is tracked by what was sent, never by the `Range` an
//!   acknowledgement carries: ECR's stays at the first chunk's end although
//!   every chunk is stored (aws/containers-roadmap#2831). The digest the
//!   registry checks when the upload is committed is the proof. After a
//!   failed chunk, the upload's status (`GET <location>` → `Range`) says how
//!   much the registry committed; an answer outside the chunk being sent
//!   starts the blob over in a new session instead of re-sending on its word;
//! - a monolithic upload, one `PUT <location>?digest=` with the whole blob
//!   as its body (the spec's), on registries that refuse chunks (405, or
//!   another refusal of a `PATCH`; Google Artifact Registry takes no
//!   chunks), remembered for the rest of the run. A blob whose digest is
//!   only known once produced is produced twice: once to hash it, once to
//!   send it;
//! - after chunks, `PUT <location>?digest=` to commit; an abandoned upload
//!   is cancelled with `DELETE`.
//!
//! Bytes come from a [`BlobSource`], which hashes what it produces, so a
//! blob whose digest is only known once it has been produced (a layer
//! compressed on the way) is uploaded in the same pass.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::{Bytes, BytesMut};
use reqwest::{Method, Response, StatusCode, header};
use tokio::sync::mpsc;
use url::Url;

use super::client::RegistryClient;
use super::error::StatusError;
use super::retry::classify;
use crate::auth::{Access, repository_scope};
use crate::image::Digest;
use crate::reference::Repository;

/// Bytes per `PATCH`. Each upload holds two chunks (one being sent until it
/// is acknowledged, the next filling), so this times twice the upload
/// concurrency bounds memory (4 MiB keeps a put of the benchmark image
/// under 64 MiB RSS; 8 MiB and 16 MiB measured no faster).
pub const DEFAULT_CHUNK_BYTES: usize = 4 << 20;
/// A registry asking for larger chunks (`OCI-Chunk-Min-Length`) than this
/// gets the whole blob in one monolithic `PUT` instead: chunks are held in
/// memory until acknowledged.
const MAX_CHUNK_BYTES: usize = 64 << 20;
/// AWS ECR's smallest upload part, except the last: 5 MiB (tart#273, the
/// ECR quotas page). Its registries get at least this much per `PATCH`.
pub const ECR_MIN_CHUNK_BYTES: usize = 5 << 20;
/// Times one blob's upload starts over from its first byte.
const MAX_RESTARTS: u32 = 3;
const OCTET_STREAM: &str = "application/octet-stream";

/// How this client uploads; shared by its concurrent uploads.
#[derive(Debug)]
pub struct UploadSettings {
    chunk_bytes: AtomicUsize,
    /// Cleared once the registry has shown it does not take chunks.
    chunked: AtomicBool,
    /// The smallest chunk the registry's kind is known to take (ECR's).
    host_min_chunk: usize,
}

impl UploadSettings {
    /// The settings for a registry at `host` (`host[:port]`).
    pub fn for_host(host: &str) -> Self {
        UploadSettings {
            chunk_bytes: AtomicUsize::new(DEFAULT_CHUNK_BYTES),
            chunked: AtomicBool::new(true),
            host_min_chunk: if crate::auth::ecr::is_ecr_host(host) {
                ECR_MIN_CHUNK_BYTES
            } else {
                0
            },
        }
    }

    /// Bytes per chunk for a session whose registry asked for `session_min`.
    fn chunk_for(&self, session_min: usize) -> usize {
        self.chunk_bytes
            .load(Ordering::Relaxed)
            .max(self.host_min_chunk)
            .max(session_min)
    }
}

/// One message from a blob's producer.
#[derive(Debug)]
pub enum Piece {
    /// The next bytes.
    Data(Bytes),
    /// Everything was produced: the digest and size of what was sent.
    End {
        /// The digest of everything produced.
        digest: Digest,
        /// The number of bytes produced.
        size: u64,
    },
}

/// Where a blob's bytes come from. Every `open` starts again at byte 0 (an
/// upload the registry lost is sent again from the start).
pub trait BlobSource: Send + Sync {
    /// A fresh stream of the blob's bytes, from the first.
    fn open(&self) -> mpsc::Receiver<anyhow::Result<Piece>>;
}

/// One blob to upload.
pub struct UploadRequest<'a> {
    /// Digest and size when known before reading: the blob is skipped if the
    /// repository has it, and what is read must match.
    pub expected: Option<(Digest, u64)>,
    /// Another repository of this registry known to hold the blob.
    pub mount_from: Option<&'a str>,
    /// Where the bytes come from.
    pub source: &'a dyn BlobSource,
}

/// How a blob got to the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// The repository had it.
    Existed,
    /// Mounted from another repository.
    Mounted,
    /// Sent.
    Uploaded,
}

/// How one blob got into the repository.
#[derive(Debug)]
pub struct UploadOutcome {
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    /// How it got there.
    pub transfer: Transfer,
}

/// Fills `buffer` up to `chunk_bytes` from the stream (starting with what
/// `carry` holds of the previous piece); the blob's digest and size once
/// the stream ended.
async fn fill_chunk(
    stream: &mut mpsc::Receiver<anyhow::Result<Piece>>,
    carry: &mut Bytes,
    buffer: &mut BytesMut,
    chunk_bytes: usize,
) -> Result<Option<(Digest, u64)>, Failure> {
    loop {
        if !carry.is_empty() {
            let take = carry.len().min(chunk_bytes - buffer.len());
            buffer.extend_from_slice(&carry.split_to(take));
        }
        if buffer.len() == chunk_bytes {
            return Ok(None);
        }
        match stream.recv().await {
            Some(Ok(Piece::Data(bytes))) => *carry = bytes,
            Some(Ok(Piece::End { digest, size })) => return Ok(Some((digest, size))),
            Some(Err(e)) => return Err(Failure::Fatal(e)),
            None => return Err(Failure::Fatal(anyhow!("the blob source stopped early"))),
        }
    }
}

/// Why an upload attempt stopped.
enum Failure {
    /// The registry lost or refused the upload session: start over.
    Restart(anyhow::Error),
    Fatal(anyhow::Error),
}

struct Session {
    location: Url,
    min_chunk: usize,
}

enum Opened {
    Mounted,
    Session(Session),
}

impl RegistryClient {
    /// Bytes per chunked `PATCH` (a registry's `OCI-Chunk-Min-Length` wins).
    pub fn set_upload_chunk_bytes(&self, bytes: usize) {
        self.uploads
            .chunk_bytes
            .store(bytes.clamp(1, MAX_CHUNK_BYTES), Ordering::Relaxed);
    }

    /// Whether the repository has a blob (`HEAD`).
    pub async fn blob_exists(&self, repo: &Repository, digest: &Digest) -> anyhow::Result<bool> {
        Ok(self.blob_size(repo, digest).await?.is_some())
    }

    /// A blob's size as the registry states it (`HEAD`), `None` when the
    /// repository does not have it.
    pub async fn blob_size(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> anyhow::Result<Option<u64>> {
        let url = self.blob_url(repo, digest).await?;
        let response = self.send(Method::HEAD, url, repo.path(), |r| r).await?;
        match response.status() {
            StatusCode::OK => Ok(Some(
                response
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(anyhow!(
                StatusError::from_response(Method::HEAD, response).await
            )),
        }
    }

    /// Gets one blob into `repo`: skipped if present, mounted if possible,
    /// else uploaded (see the module documentation).
    pub async fn upload_blob(
        &self,
        repo: &Repository,
        request: &UploadRequest<'_>,
    ) -> anyhow::Result<UploadOutcome> {
        if let Some((digest, size)) = &request.expected
            && self.blob_exists(repo, digest).await?
        {
            return Ok(UploadOutcome {
                digest: digest.clone(),
                size: *size,
                transfer: Transfer::Existed,
            });
        }
        let mut mount = request
            .expected
            .as_ref()
            .zip(request.mount_from)
            .filter(|(_, from)| *from != repo.path());
        let mut restarts = 0;
        loop {
            let session = match self.open_upload(repo, mount.take()).await? {
                Opened::Mounted => {
                    let (digest, size) =
                        request.expected.clone().context("mount without digest")?;
                    return Ok(UploadOutcome {
                        digest,
                        size,
                        transfer: Transfer::Mounted,
                    });
                }
                Opened::Session(session) => session,
            };
            match self.send_blob(repo, session, request).await {
                Ok(outcome) => return Ok(outcome),
                Err(Failure::Restart(e)) if restarts < MAX_RESTARTS => {
                    restarts += 1;
                    tracing::warn!("blob upload to {repo}: {e:#}; starting it again");
                }
                Err(Failure::Restart(e)) => {
                    return Err(e.context(format!(
                        "blob upload to {repo} started over {MAX_RESTARTS} times"
                    )));
                }
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
    }

    /// `POST /v2/<name>/blobs/uploads/`, with a mount request if given.
    async fn open_upload(
        &self,
        repo: &Repository,
        mount: Option<(&(Digest, u64), &str)>,
    ) -> anyhow::Result<Opened> {
        let mut url = self
            .url(&format!("/v2/{}/blobs/uploads/", repo.path()))
            .await?;
        let mut scopes = vec![repository_scope(repo.path(), Access::Push)];
        if let Some(((digest, _), from)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", from);
            scopes.push(repository_scope(from, Access::Pull));
        }
        let what = format!("POST {}", url.path());
        let response = self
            .retry()
            .run(&what, || {
                self.send_once_scoped(Method::POST, url.clone(), &scopes, |r| {
                    r.header(header::CONTENT_LENGTH, 0)
                })
            })
            .await?;
        match response.status() {
            StatusCode::CREATED if mount.is_some() => Ok(Opened::Mounted),
            StatusCode::ACCEPTED => {
                let min_chunk = response
                    .headers()
                    .get("oci-chunk-min-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let location = location_of(&url, &response)?
                    .context("the registry opened an upload without a Location")?;
                Ok(Opened::Session(Session {
                    location,
                    min_chunk,
                }))
            }
            _ => Err(anyhow!(
                StatusError::from_response(Method::POST, response).await
            )),
        }
    }

    /// Sends the source's bytes into an open upload and commits it.
    async fn send_blob(
        &self,
        repo: &Repository,
        session: Session,
        request: &UploadRequest<'_>,
    ) -> Result<UploadOutcome, Failure> {
        let mut location = session.location;
        let chunk = self.uploads.chunk_for(session.min_chunk);
        let chunked = self.uploads.chunked.load(Ordering::Relaxed) && chunk <= MAX_CHUNK_BYTES;
        if !chunked {
            let sent = self.send_monolithic(repo, &location, request).await;
            if sent.is_err() {
                self.cancel_upload(repo, &location).await;
            }
            return sent;
        }
        let (digest, size) = match self
            .send_chunks(repo, &mut location, request.source.open(), chunk)
            .await
        {
            Ok(end) => end,
            Err(failure) => {
                self.cancel_upload(repo, &location).await;
                return Err(failure);
            }
        };
        if let Err(mismatch) = check_expected(request, &digest, size) {
            self.cancel_upload(repo, &location).await;
            return Err(Failure::Fatal(mismatch));
        }
        self.commit_upload(repo, &location, &digest)
            .await
            .map_err(Failure::Restart)?;
        Ok(UploadOutcome {
            digest,
            size,
            transfer: Transfer::Uploaded,
        })
    }

    /// Sends the stream in chunks. The next chunk fills while the previous
    /// one is being sent (two chunks of memory per upload), so reading the
    /// source and sending overlap instead of taking turns.
    async fn send_chunks(
        &self,
        repo: &Repository,
        location: &mut Url,
        mut stream: mpsc::Receiver<anyhow::Result<Piece>>,
        chunk_bytes: usize,
    ) -> Result<(Digest, u64), Failure> {
        let mut offset = 0u64;
        // The part of a piece beyond the previous chunk's end.
        let mut carry = Bytes::new();
        // The chunk being sent while the next one fills.
        let mut sending: Option<Bytes> = None;
        loop {
            let mut buffer = BytesMut::with_capacity(chunk_bytes);
            let send = async {
                match &sending {
                    Some(chunk) => self.patch_chunk(repo, location, offset, chunk).await,
                    None => Ok(()),
                }
            };
            let fill = fill_chunk(&mut stream, &mut carry, &mut buffer, chunk_bytes);
            let (sent, filled) = tokio::join!(send, fill);
            sent?;
            if let Some(chunk) = sending.take() {
                offset += chunk.len() as u64;
            }
            let end = filled?;
            if buffer.is_empty() {
                match end {
                    Some(end) => return Ok(end),
                    None => continue,
                }
            }
            let chunk = buffer.freeze();
            if let Some(end) = end {
                self.patch_chunk(repo, location, offset, &chunk).await?;
                return Ok(end);
            }
            sending = Some(chunk);
        }
    }

    /// One chunk, resumed from the registry's committed offset after a
    /// transient failure.
    async fn patch_chunk(
        &self,
        repo: &Repository,
        location: &mut Url,
        start: u64,
        chunk: &Bytes,
    ) -> Result<(), Failure> {
        let end = start + chunk.len() as u64;
        let policy = self.retry().clone();
        let mut attempts = super::retry::Attempts::new(&policy);
        let mut from = start;
        loop {
            let body = chunk.slice((from - start) as usize..);
            let range = format!("{from}-{}", end - 1);
            let result = self
                .send_once(Method::PATCH, location.clone(), repo.path(), |r| {
                    r.header(header::CONTENT_TYPE, OCTET_STREAM)
                        .header(header::CONTENT_RANGE, &range)
                        .header(header::CONTENT_LENGTH, body.len())
                        .body(body.clone())
                })
                .await;
            let error = match result {
                Ok(response) => {
                    let status = response.status();
                    // 201 on a chunk is ECR's acknowledgement. Its `Range`
                    // is not read: the offset is what was sent.
                    if matches!(
                        status,
                        StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED
                    ) {
                        if let Some(next) =
                            location_of(location, &response).map_err(Failure::Fatal)?
                        {
                            *location = next;
                        }
                        return Ok(());
                    }
                    let error = anyhow!(StatusError::from_response(Method::PATCH, response).await);
                    return Err(match status.as_u16() {
                        401 | 403 => Failure::Fatal(error),
                        // Lost or out of step: a fresh upload.
                        404 | 416 => Failure::Restart(error),
                        // 405 or another refusal of a chunk: this registry
                        // takes whole blobs only.
                        400..=499 => {
                            tracing::info!(
                                "{}: chunked upload refused ({error:#}); sending whole blobs",
                                self.host()
                            );
                            self.uploads.chunked.store(false, Ordering::Relaxed);
                            Failure::Restart(error)
                        }
                        _ => Failure::Fatal(error),
                    });
                }
                Err(e) => e,
            };
            let Some(transient) = classify(&error) else {
                return Err(Failure::Fatal(error));
            };
            let attempt = attempts.attempt();
            let Some(delay) = attempts.next_delay(&transient) else {
                return Err(Failure::Fatal(error.context(format!(
                    "PATCH {}: giving up after {attempt} attempts",
                    location.path()
                ))));
            };
            tracing::warn!(
                "upload chunk {from}-{} to {repo}: {error:#}; asking the registry where it stands",
                end - 1
            );
            tokio::time::sleep(delay).await;
            let committed = self
                .upload_status(repo, location, start)
                .await
                .map_err(|lost| {
                    // The session is gone: say what broke it, too.
                    Failure::Restart(lost.context(super::client::one_line(&error)))
                })?;
            if committed == end {
                return Ok(());
            }
            if committed < start || committed > end {
                return Err(Failure::Restart(anyhow!(
                    "the registry holds {committed} bytes of the upload, outside the chunk \
                     being sent ({start}-{end})"
                )));
            }
            if committed > from {
                attempts.progressed();
            }
            from = committed;
        }
    }

    /// How many bytes of the upload the registry holds (`Range: 0-<last>`).
    async fn upload_status(
        &self,
        repo: &Repository,
        location: &mut Url,
        chunk_start: u64,
    ) -> anyhow::Result<u64> {
        let response = self
            .send(Method::GET, location.clone(), repo.path(), |r| r)
            .await?;
        if !matches!(response.status(), StatusCode::NO_CONTENT | StatusCode::OK) {
            return Err(anyhow!(
                StatusError::from_response(Method::GET, response).await
            ));
        }
        if let Some(next) = location_of(location, &response)? {
            *location = next;
        }
        let last = response
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().trim_start_matches("bytes=").split_once('-'))
            .and_then(|(_, last)| last.trim().parse::<u64>().ok());
        // `0-0` stands for both an empty upload and one byte.
        Ok(match last {
            None => 0,
            Some(0) => chunk_start.min(1),
            Some(last) => last + 1,
        })
    }

    /// The spec's monolithic upload: one `PUT <location>?digest=` with the
    /// whole blob as its body, streamed from the source with its length.
    /// The digest goes in the URL, so a blob not known in advance is
    /// produced once to hash it (nothing is kept), then again to send it.
    async fn send_monolithic(
        &self,
        repo: &Repository,
        location: &Url,
        request: &UploadRequest<'_>,
    ) -> Result<UploadOutcome, Failure> {
        let (digest, size) = match &request.expected {
            Some(known) => known.clone(),
            None => drain(request.source.open()).await.map_err(Failure::Fatal)?,
        };
        let (pieces, end) = body_stream(request.source.open());
        let body = Mutex::new(Some(reqwest::Body::wrap_stream(pieces)));
        let mut url = location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let result = self
            .send_once(Method::PUT, url, repo.path(), |r| {
                let r = r.header(header::CONTENT_TYPE, OCTET_STREAM);
                // The stream can be sent once; a repeat (a renewed token)
                // sends an empty body, which the registry refuses, and the
                // blob starts over in a new session.
                match body.lock().ok().and_then(|mut b| b.take()) {
                    Some(b) => r.header(header::CONTENT_LENGTH, size).body(b),
                    None => r.header(header::CONTENT_LENGTH, 0),
                }
            })
            .await;
        // The stream records its end before it yields its last bytes, so a
        // body sent whole has its verdict here.
        // What was sent must be what the URL names: the expected blob, or
        // what the hashing pass produced.
        match end.lock().ok().and_then(|mut e| e.take()) {
            Some(Err(e)) => return Err(Failure::Fatal(e)),
            Some(Ok((produced, produced_size))) if produced != digest || produced_size != size => {
                let error = check_expected(request, &produced, produced_size)
                    .err()
                    .unwrap_or_else(|| {
                        anyhow!(
                            "the blob's source gave other bytes when read again ({produced}, \
                             not {digest}): it must be deterministic"
                        )
                    });
                return Err(Failure::Fatal(error));
            }
            Some(Ok(_)) | None => {}
        }
        let response = match result {
            Ok(r) => r,
            Err(e) if classify(&e).is_some() => return Err(Failure::Restart(e)),
            Err(e) => return Err(Failure::Fatal(e)),
        };
        let status = response.status();
        if !matches!(
            status,
            StatusCode::CREATED | StatusCode::OK | StatusCode::NO_CONTENT | StatusCode::ACCEPTED
        ) {
            let error = anyhow!(StatusError::from_response(Method::PUT, response).await)
                .context(format!("uploading blob {digest} whole"));
            return Err(match status.as_u16() {
                // The session was lost, or the bytes did not hash to the
                // digest (a source that changed between its two passes is
                // caught here by the registry): a fresh session.
                400 | 404 | 416 => Failure::Restart(error),
                _ => Failure::Fatal(error),
            });
        }
        Ok(UploadOutcome {
            digest,
            size,
            transfer: Transfer::Uploaded,
        })
    }

    /// `PUT <location>?digest=`. If the answer was lost and the retry finds
    /// the upload gone, the blob being there is success.
    async fn commit_upload(
        &self,
        repo: &Repository,
        location: &Url,
        digest: &Digest,
    ) -> anyhow::Result<()> {
        let mut url = location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let response = self
            .send(Method::PUT, url, repo.path(), |r| {
                r.header(header::CONTENT_LENGTH, 0)
            })
            .await?;
        if matches!(
            response.status(),
            StatusCode::CREATED | StatusCode::OK | StatusCode::NO_CONTENT | StatusCode::ACCEPTED
        ) {
            return Ok(());
        }
        let error = StatusError::from_response(Method::PUT, response).await;
        if self.blob_exists(repo, digest).await.unwrap_or(false) {
            return Ok(());
        }
        Err(anyhow!(error).context(format!("committing blob {digest}")))
    }

    /// Best effort: the registry would expire it anyway.
    async fn cancel_upload(&self, repo: &Repository, location: &Url) {
        let cancel = self.send_once(Method::DELETE, location.clone(), repo.path(), |r| r);
        match tokio::time::timeout(Duration::from_secs(5), cancel).await {
            Ok(Ok(_)) => tracing::debug!("cancelled upload {}", location.path()),
            _ => tracing::debug!("could not cancel upload {}", location.path()),
        }
    }
}

/// Where a streamed body records how its source ended: the digest and size
/// produced, or why it failed.
type BodyEnd = Arc<Mutex<Option<anyhow::Result<(Digest, u64)>>>>;

/// A request body streaming a source's pieces. It holds one piece back
/// until it knows what follows, so the source's end is recorded before the
/// last bytes go out: an HTTP client that stops polling once the declared
/// length was sent still leaves the verdict.
fn body_stream(
    source: mpsc::Receiver<anyhow::Result<Piece>>,
) -> (
    impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    BodyEnd,
) {
    struct State {
        source: Option<mpsc::Receiver<anyhow::Result<Piece>>>,
        held: Option<Bytes>,
        end: BodyEnd,
    }
    let end: BodyEnd = Arc::default();
    let state = State {
        source: Some(source),
        held: None,
        end: end.clone(),
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            let source = state.source.as_mut()?;
            let verdict = match source.recv().await {
                Some(Ok(Piece::Data(bytes))) => {
                    if bytes.is_empty() {
                        continue;
                    }
                    match state.held.replace(bytes) {
                        Some(previous) => return Some((Ok(previous), state)),
                        None => continue,
                    }
                }
                Some(Ok(Piece::End { digest, size })) => Ok((digest, size)),
                Some(Err(e)) => Err(e),
                None => Err(anyhow!("the blob source stopped early")),
            };
            state.source = None;
            let failed = verdict.is_err();
            if let Ok(mut slot) = state.end.lock() {
                *slot = Some(verdict);
            }
            if failed {
                let error = std::io::Error::other("the blob source failed");
                return Some((Err(error), state));
            }
            return state.held.take().map(|last| (Ok(last), state));
        }
    });
    (stream, end)
}

/// Reads a source to its end, keeping nothing: the digest and size of what
/// it produces.
async fn drain(mut stream: mpsc::Receiver<anyhow::Result<Piece>>) -> anyhow::Result<(Digest, u64)> {
    loop {
        match stream.recv().await {
            Some(Ok(Piece::Data(_))) => {}
            Some(Ok(Piece::End { digest, size })) => return Ok((digest, size)),
            Some(Err(e)) => return Err(e),
            None => bail!("the blob source stopped early"),
        }
    }
}

/// What was produced must be what the request said it would be.
fn check_expected(request: &UploadRequest<'_>, digest: &Digest, size: u64) -> anyhow::Result<()> {
    match &request.expected {
        Some((want, want_size)) if want != digest || *want_size != size => Err(anyhow!(
            "blob {want} ({want_size} bytes): the local data does not match its digest \
             (read {size} bytes hashing to {digest})"
        )),
        _ => Ok(()),
    }
}

/// The `Location` of an upload answer, resolved against the request URL
/// (registries may answer with a relative one).
fn location_of(request: &Url, response: &Response) -> anyhow::Result<Option<Url>> {
    response
        .headers()
        .get(header::LOCATION)
        .map(|v| {
            let text = v.to_str().context("non-ASCII Location header")?;
            request
                .join(text)
                .with_context(|| format!("invalid Location {text:?}"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_registries_get_chunks_of_at_least_five_mib() {
        let ecr = UploadSettings::for_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        assert_eq!(ecr.chunk_for(0), ECR_MIN_CHUNK_BYTES);
        ecr.chunk_bytes.store(64 << 10, Ordering::Relaxed);
        assert_eq!(ecr.chunk_for(0), ECR_MIN_CHUNK_BYTES);
        assert_eq!(ecr.chunk_for(8 << 20), 8 << 20);
        let other = UploadSettings::for_host("127.0.0.1:5000");
        assert_eq!(other.chunk_for(0), DEFAULT_CHUNK_BYTES);
        other.chunk_bytes.store(64 << 10, Ordering::Relaxed);
        assert_eq!(other.chunk_for(0), 64 << 10);
    }
}
