//! Blob reads. Small blobs (image configs) are read whole and verified
//! against their digest.

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, StatusCode};
use url::Url;

use super::client::RegistryClient;
use super::error::StatusError;
use super::http::read_limited;
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

    /// Fetches a small blob whole, verifying its digest.
    pub async fn get_small_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> anyhow::Result<Vec<u8>> {
        let what = format!("GET blob {repo}@{digest}");
        self.retry()
            .run(&what, || async {
                let url = self.blob_url(repo, digest).await?;
                let response = self.send_once(Method::GET, url, repo.path(), |r| r).await?;
                if response.status() != StatusCode::OK {
                    return Err(anyhow!(
                        StatusError::from_response(Method::GET, response).await
                    ));
                }
                let bytes = read_limited(response, MAX_CONFIG_BYTES).await?;
                if !digest.matches(&bytes) {
                    bail!("blob {repo}@{digest} does not match its digest");
                }
                Ok(bytes)
            })
            .await
    }
}

/// One message from a blob download to its consumer.
#[derive(Debug)]
pub enum BlobChunk {
    Data(bytes::Bytes),
    /// Every byte arrived and the digest and size matched: the only way a
    /// download ends successfully.
    Verified,
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
        let mut hasher = Hasher::new(digest.algorithm());
        let url = self.blob_url(repo, digest).await?;
        let mut received: u64 = 0;
        let policy = self.retry();
        let mut attempts = super::retry::Attempts::new(policy);
        loop {
            let from = received;
            let response = self
                .send(Method::GET, url.clone(), repo.path(), move |r| {
                    if from > 0 {
                        r.header(reqwest::header::RANGE, format!("bytes={from}-"))
                    } else {
                        r
                    }
                })
                .await
                .with_context(|| format!("GET blob {digest}"))?;
            // Bytes of this answer already passed on (a registry that
            // ignored Range sends the blob from the start).
            let mut skip = match response.status() {
                StatusCode::OK => received,
                StatusCode::PARTIAL_CONTENT if from > 0 => 0,
                _ => {
                    return Err(anyhow!(
                        StatusError::from_response(Method::GET, response).await
                    ));
                }
            };
            let mut response = response;
            let interrupted = loop {
                match super::http::next_chunk(&mut response).await {
                    Ok(Some(mut chunk)) => {
                        if skip > 0 {
                            let n = skip.min(chunk.len() as u64) as usize;
                            let _ = chunk.split_to(n);
                            skip -= n as u64;
                        }
                        if chunk.is_empty() {
                            continue;
                        }
                        received += chunk.len() as u64;
                        if received > size {
                            bail!("blob {digest} is larger than its descriptor's {size} bytes");
                        }
                        hasher.update(&chunk);
                        if sink.send(BlobChunk::Data(chunk)).await.is_err() {
                            bail!("blob {digest}: the consumer stopped reading");
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            if received == size && interrupted.is_none() {
                break;
            }
            // A body cut short and a transient error are resumed; anything
            // else is final. Bytes received renew the attempts and budget:
            // a blob that took long (or waited on our own consumer) before
            // it broke resumes like any other.
            let resumable = interrupted
                .as_ref()
                .map_or(Some(super::retry::Transient { retry_after: None }), |e| {
                    super::retry::classify(e)
                });
            let error = interrupted.unwrap_or_else(|| {
                anyhow!("the connection closed after {received} of {size} bytes")
            });
            if received > from {
                attempts.progressed();
            }
            let attempt = attempts.attempt();
            let Some(delay) = resumable.and_then(|t| attempts.next_delay(&t)) else {
                return Err(error.context(format!(
                    "GET blob {digest}: giving up after {attempt} attempts"
                )));
            };
            tracing::warn!(
                "blob {digest}: {error:#} after {received} of {size} bytes; resuming in {} ms (attempt {attempt} of {})",
                delay.as_millis(),
                policy.max_attempts
            );
            tokio::time::sleep(delay).await;
        }
        let actual = hasher.finish();
        if actual != *digest {
            bail!("blob {digest} does not match its digest (got {actual})");
        }
        Ok(())
    }
}
