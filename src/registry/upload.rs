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
//! - a monolithic upload (`upload_whole.rs`) on registries that refuse
//!   chunks, remembered for the rest of the run;
//! - after chunks, `PUT <location>?digest=` to commit; an abandoned upload
//!   is cancelled with `DELETE`.
//!
//! Bytes come from a [`BlobSource`](super::BlobSource), which hashes what it produces, so a
//! blob whose digest is only known once it has been produced (a layer
//! compressed on the way) is uploaded in the same pass.

use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::{Bytes, BytesMut};
use reqwest::{Method, Response, StatusCode, header};
use tokio::sync::mpsc;
use url::Url;

use super::chunking::MAX_CHUNK_BYTES;
use super::client::RegistryClient;
use super::error::{STORED, StatusError};
use super::retry::classify;
use super::upload_source::{
    Piece, Transfer, UploadOutcome, UploadRequest, check_expected, fill_chunk,
};
use crate::auth::{Access, repository_scope};
use crate::image::Digest;
use crate::reference::Repository;

/// Times one blob's upload starts over from its first byte.
const MAX_RESTARTS: u32 = 3;
pub(super) const OCTET_STREAM: &str = "application/octet-stream";

/// Why an upload attempt stopped.
pub(super) enum Failure {
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
            .await;
        if mount.is_none() {
            let response = StatusError::expect(response?, &[StatusCode::ACCEPTED]).await?;
            let location = location_of(&url, &response)?
                .context("the registry opened an upload without a Location")?;
            return Ok(Opened::Session(Session {
                location,
                min_chunk: min_chunk_of(&response),
            }));
        }
        // A mount is a wish: registries refuse it with 202 and a session
        // (the spec; ECR when no manifest in `from` references the blob),
        // 202 without a `Location`, 401 or 400 (Harbor, for a `from` in
        // another project), 405 or another status (registry-quirks.md
        // §1.4). Only 201 mounted; anything else but a usable 202 is
        // answered with a plain upload.
        let refused = match response {
            Ok(response) if response.status() == StatusCode::CREATED => {
                return Ok(Opened::Mounted);
            }
            Ok(response) if response.status() == StatusCode::ACCEPTED => {
                match location_of(&url, &response) {
                    Ok(Some(location)) => {
                        return Ok(Opened::Session(Session {
                            location,
                            min_chunk: min_chunk_of(&response),
                        }));
                    }
                    _ => "202 without a Location".to_owned(),
                }
            }
            Ok(response) => StatusError::from_response(response).await.to_string(),
            // Retries are spent on a failing registry: a plain POST would
            // only wait through them again.
            Err(e) if super::retry::classify(&e).is_some() => return Err(e),
            Err(e) => super::error::one_line(&e),
        };
        tracing::info!(
            "{}: mount refused ({refused}); uploading instead",
            self.host()
        );
        Box::pin(self.open_upload(repo, None)).await
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
        let chunked = self.uploads.chunked() && chunk <= MAX_CHUNK_BYTES;
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
            let end = filled.map_err(Failure::Fatal)?;
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
                    let error = anyhow!(StatusError::from_response(response).await);
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
                            self.uploads.refuse_chunks();
                            Failure::Restart(error)
                        }
                        _ => Failure::Fatal(error),
                    });
                }
                Err(e) => e,
            };
            let transient = classify(&error);
            let what = format!("PATCH {} (bytes {from}-{})", location.path(), end - 1);
            let error = attempts
                .wait(
                    error,
                    transient,
                    &what,
                    "asking the registry where it stands",
                )
                .await
                .map_err(Failure::Fatal)?;
            // Where the registry stands decides what is sent next.
            let committed = self
                .upload_status(repo, location, start)
                .await
                .map_err(|lost| {
                    // The session is gone: say what broke it, too.
                    Failure::Restart(lost.context(super::error::one_line(&error)))
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
        let response =
            StatusError::expect(response, &[StatusCode::NO_CONTENT, StatusCode::OK]).await?;
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
        let Err(error) = StatusError::expect(response, STORED).await else {
            return Ok(());
        };
        if self.blob_exists(repo, digest).await.unwrap_or(false) {
            return Ok(());
        }
        Err(error.context(format!("committing blob {digest}")))
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

/// The smallest chunk the registry takes (`OCI-Chunk-Min-Length` on the
/// answer that opened the upload), or 0.
fn min_chunk_of(response: &reqwest::Response) -> usize {
    response
        .headers()
        .get("oci-chunk-min-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
}
