//! Blob reads. Small blobs (image configs) are read whole and verified
//! against their digest.

use anyhow::{anyhow, bail};
use reqwest::{Method, StatusCode};

use super::client::RegistryClient;
use super::error::StatusError;
use super::manifest::read_limited;
use crate::image::Digest;
use crate::reference::Repository;

/// Image configs are small; anything beyond this is refused.
const MAX_CONFIG_BYTES: usize = 32 << 20;

impl RegistryClient {
    /// Fetches a small blob whole, verifying its digest.
    pub async fn get_small_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> anyhow::Result<Vec<u8>> {
        let what = format!("GET blob {repo}@{digest}");
        self.retry()
            .run(&what, || async {
                let url = self
                    .url(&format!("/v2/{}/blobs/{digest}", repo.path()))
                    .await?;
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
