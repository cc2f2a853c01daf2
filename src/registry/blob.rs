//! Blob reads. Small blobs (image configs) are read whole and verified
//! against their digest.

use anyhow::{anyhow, bail};
use reqwest::{Method, StatusCode, header};
use url::Url;

use super::client::RegistryClient;
use super::error::StatusError;
use super::http::read_limited;
use super::policy::same_origin;
use super::retry::Transient;
use crate::image::Digest;
use crate::image::digest::{Algorithm, Hasher};
use crate::reference::Repository;

/// Image configs are small; anything beyond this is refused.
const MAX_CONFIG_BYTES: usize = 32 << 20;

impl RegistryClient {
    /// `/v2/<name>/blobs/<digest>` on this registry.
    pub(super) async fn blob_url(&self, repo: &Repository, digest: &Digest) -> anyhow::Result<Url> {
        self.url(&format!("/v2/{}/blobs/{digest}", repo.path()))
            .await
    }

    /// Fetches a small blob whole (an image config: at most 32 MiB),
    /// verifying its digest.
    pub async fn get_small_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> anyhow::Result<Vec<u8>> {
        self.get_blob_up_to(repo, digest, MAX_CONFIG_BYTES).await
    }

    /// Fetches a blob whole, verifying its digest; one served larger than
    /// `limit` bytes is refused before more is read.
    pub async fn get_blob_up_to(
        &self,
        repo: &Repository,
        digest: &Digest,
        limit: usize,
    ) -> anyhow::Result<Vec<u8>> {
        let what = format!("GET blob {repo}@{digest}");
        self.retry()
            .run(&what, || async {
                let url = self.blob_url(repo, digest).await?;
                let response = self.send_once(Method::GET, url, repo.path(), |r| r).await?;
                let response = StatusError::expect(response, &[StatusCode::OK]).await?;
                let bytes = read_limited(response, limit).await?;
                if !digest.matches(&bytes) {
                    bail!("blob {repo}@{digest} does not match its digest");
                }
                Ok(bytes)
            })
            .await
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
        let response =
            StatusError::expect(response, &[StatusCode::OK, StatusCode::NOT_FOUND]).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(
            response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
        ))
    }
}

/// One message from a blob download to its consumer.
#[derive(Debug)]
pub enum BlobChunk {
    /// The next bytes of the blob.
    Data(bytes::Bytes),
    /// Every byte arrived and the digest and size matched: the only way a
    /// download ends successfully.
    Verified,
    /// The download failed, for this reason.
    Failed(String),
}

impl RegistryClient {
    /// Streams a blob into `sink`, verifying its size and digest on the way.
    /// A transient failure mid-blob resumes from the byte where it stopped
    /// (HTTP Range), keeping the running hash; a registry that ignores Range
    /// is handled by skipping the bytes already passed on. The result is
    /// also sent down `sink` (`Verified` or `Failed`).
    pub async fn download_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        sink: tokio::sync::mpsc::Sender<BlobChunk>,
    ) -> anyhow::Result<()> {
        let result = self.download_into(repo, digest, size, &sink).await;
        let message = match &result {
            Ok(()) => BlobChunk::Verified,
            Err(e) => BlobChunk::Failed(format!("{e:#}")),
        };
        let _ = sink.send(message).await;
        result
    }

    async fn download_into(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        sink: &tokio::sync::mpsc::Sender<BlobChunk>,
    ) -> anyhow::Result<()> {
        if digest.algorithm() != Algorithm::Sha256 {
            bail!("blob {digest}: only sha256 layer digests are supported");
        }
        let url = self.blob_url(repo, digest).await?;
        let mut blob = Passing {
            digest,
            size,
            received: 0,
            hasher: Hasher::new(digest.algorithm()),
            sink,
        };
        // Cleared when the registry answers a Range with other bytes than
        // asked for: later resumes fetch the whole blob and skip.
        let mut ranges_trusted = true;
        // The storage URL the registry last redirected to (another
        // origin): a resume asks it for the rest directly, without a
        // registry round trip and without our credentials, while it serves;
        // once it refuses or fails, the registry is asked for a fresh one.
        let mut storage: Option<Url> = None;
        let policy = self.retry();
        let mut attempts = super::retry::Attempts::new(policy);
        loop {
            let from = blob.received;
            let ask_range = from > 0 && ranges_trusted;
            let range = move |r: reqwest::RequestBuilder| {
                if ask_range {
                    r.header(reqwest::header::RANGE, format!("bytes={from}-"))
                } else {
                    r
                }
            };
            let response = match storage.take() {
                Some(at) => match super::http::send_and_wait(range(self.http().get(at))).await {
                    Ok(response) => response,
                    Err(e) => {
                        let what = format!("GET blob {digest} from its storage URL");
                        let transient = Some(Transient { retry_after: None });
                        attempts
                            .wait(e, transient, &what, "asking the registry for a fresh URL")
                            .await?;
                        continue;
                    }
                },
                None => {
                    self.send(Method::GET, url.clone(), repo.path(), range)
                        .await?
                }
            };
            let redirected = !same_origin(&url, response.url());
            let content_range = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // Bytes of this answer already passed on (a registry that
            // ignored Range sends the blob from the start).
            let skip = match response.status() {
                StatusCode::OK => Some(from),
                StatusCode::PARTIAL_CONTENT if ask_range => {
                    match partial_start(content_range.as_deref(), size) {
                        Some(start) if start <= from => Some(from - start),
                        _ => None,
                    }
                }
                // A storage URL the registry redirected to, refused: a
                // presigned URL that expired (GHCR's last about 300 s,
                // stargz-snapshotter#167) or was cut short. The next request
                // to the registry gets a fresh one.
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED if redirected => {
                    let error = anyhow!(StatusError::from_response(response).await)
                        .context("the storage URL the registry redirected to was refused");
                    let what = format!("GET blob {digest}");
                    let transient = Some(Transient { retry_after: None });
                    attempts
                        .wait(
                            error,
                            transient,
                            &what,
                            "asking the registry for a fresh URL",
                        )
                        .await?;
                    continue;
                }
                _ => {
                    return Err(anyhow!(StatusError::from_response(response).await));
                }
            };
            if redirected && ranges_trusted {
                storage = Some(response.url().clone());
            }
            // Why this answer stopped short, and whether to go on: a body
            // cut short and a transient error are resumed, and so is a 206
            // with other bytes than asked for (asked again, for all of it).
            let (error, resumable) = match skip {
                Some(skip) => match blob.pass_on(response, skip).await? {
                    // Every byte is here (an error after the last one does
                    // not matter: the digest decides).
                    _ if blob.received == size => break,
                    None => (
                        anyhow!(
                            "the connection closed after {} of {size} bytes",
                            blob.received
                        ),
                        Some(Transient { retry_after: None }),
                    ),
                    Some(e) => {
                        let transient = super::retry::classify(&e);
                        (e, transient)
                    }
                },
                None => {
                    ranges_trusted = false;
                    let wrong = anyhow!(
                        "the registry answered a request for bytes {from}- with Content-Range {:?}",
                        content_range.unwrap_or_default()
                    );
                    (wrong, Some(Transient { retry_after: None }))
                }
            };
            // Bytes received renew the attempts and budget: a blob that took
            // long (or waited on our own consumer) before it broke resumes
            // like any other.
            if blob.received > from {
                attempts.progressed();
            }
            let what = format!(
                "GET blob {digest} ({} of {size} bytes received)",
                blob.received
            );
            attempts.wait(error, resumable, &what, "resuming").await?;
        }
        let actual = blob.hasher.finish();
        if actual != *digest {
            bail!("blob {digest} does not match its digest (got {actual})");
        }
        Ok(())
    }
}

/// A blob on its way to the consumer: what was passed on so far, hashed.
struct Passing<'a> {
    digest: &'a Digest,
    size: u64,
    received: u64,
    hasher: Hasher,
    sink: &'a tokio::sync::mpsc::Sender<BlobChunk>,
}

impl Passing<'_> {
    /// Passes on one answer's body, its first `skip` bytes dropped (held
    /// already). `Ok(Some(e))`: the body broke off with `e`; `Err`: final
    /// (more bytes than the descriptor's, or the consumer is gone).
    async fn pass_on(
        &mut self,
        mut response: reqwest::Response,
        mut skip: u64,
    ) -> anyhow::Result<Option<anyhow::Error>> {
        let (digest, size) = (self.digest, self.size);
        loop {
            let mut chunk = match super::http::next_chunk(&mut response).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(None),
                Err(e) => return Ok(Some(e)),
            };
            if skip > 0 {
                let n = skip.min(chunk.len() as u64) as usize;
                let _ = chunk.split_to(n);
                skip -= n as u64;
            }
            if chunk.is_empty() {
                continue;
            }
            self.received += chunk.len() as u64;
            if self.received > size {
                bail!("blob {digest} is larger than its descriptor's {size} bytes");
            }
            self.hasher.update(&chunk);
            if self.sink.send(BlobChunk::Data(chunk)).await.is_err() {
                bail!("blob {digest}: the consumer stopped reading");
            }
        }
    }
}

/// Where a 206 answer's bytes start, from `Content-Range: bytes
/// <first>-<last>/<total>`; `None` when the header is missing, malformed, or
/// describes another size of blob (the answer is then not used).
fn partial_start(content_range: Option<&str>, size: u64) -> Option<u64> {
    let value = content_range?;
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last): (u64, u64) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    let total_fits = total.trim() == "*" || total.trim().parse::<u64>().ok() == Some(size);
    (first <= last && last < size && total_fits).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::partial_start;

    #[test]
    fn content_range_must_describe_this_blob() {
        assert_eq!(partial_start(Some("bytes 100-999/1000"), 1000), Some(100));
        assert_eq!(partial_start(Some("bytes 100-999/*"), 1000), Some(100));
        assert_eq!(partial_start(Some(" bytes 0-0/1000 "), 1000), Some(0));
        for wrong in [
            "bytes 100-999/2000",
            "bytes 100-1000/1000",
            "bytes 999-100/1000",
            "bytes=100-999/1000",
            "bytes 100-/1000",
            "items 100-999/1000",
            "bytes -5-999/1000",
        ] {
            assert_eq!(partial_start(Some(wrong), 1000), None, "{wrong}");
        }
        assert_eq!(partial_start(None, 1000), None);
    }
}
