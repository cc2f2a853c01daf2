//! The manifests that refer to a manifest (signatures, attestations, SBOMs):
//! the OCI 1.1 referrers API, `GET /v2/<name>/referrers/<digest>`, and, on
//! registries without it (the CNCF registry 2.x and 3.x), the fallback tag
//! `<algorithm>-<hex>` holding an index of them.
//!
//! Descriptors are kept as JSON values: their `artifactType` and
//! annotations must survive a copy into another fallback index.

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, StatusCode, header};
use serde_json::Value;

use super::client::RegistryClient;
use super::error::StatusError;
use super::tags::{Pages, next_page};
use crate::image::{Digest, media_type};
use crate::reference::{Repository, Target};

/// Referrers larger than this, all pages together, are refused.
const MAX_REFERRERS_BYTES: usize = 4 << 20;
/// Pages of referrers followed at most.
const MAX_REFERRER_PAGES: usize = 100;

impl RegistryClient {
    /// The descriptors of the manifests whose `subject` is `digest`: from
    /// the referrers API when the registry has it, else from the fallback
    /// tag.
    pub async fn referrers(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> anyhow::Result<Vec<Value>> {
        if let Some(list) = self.referrers_api(repo, digest).await? {
            return Ok(list);
        }
        match self
            .get_manifest(repo, &Target::Tag(fallback_tag(digest)))
            .await?
        {
            Some(index) => descriptors(&index.bytes),
            None => Ok(Vec::new()),
        }
    }

    /// The referrers API's answer over all its pages (`Link: <…>;
    /// rel="next"`), or `None` when the registry has no such API (404
    /// without an index, 400, 405, 406, or another content type).
    pub async fn referrers_api(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> anyhow::Result<Option<Vec<Value>>> {
        let first = self
            .url(&format!("/v2/{}/referrers/{digest}", repo.path()))
            .await?;
        let what = format!("referrers of {repo}@{digest}");
        let mut pages = Pages::new(first, MAX_REFERRER_PAGES, &what);
        let mut listed = Vec::new();
        let mut bytes = 0;
        while let Some(url) = pages.next()? {
            let response = self
                .send(Method::GET, url.clone(), repo.path(), |r| {
                    r.header(header::ACCEPT, media_type::OCI_INDEX)
                })
                .await?;
            // What a registry without the API answers, besides 200 with
            // something other than an index.
            let response = StatusError::expect(
                response,
                &[
                    StatusCode::OK,
                    StatusCode::NOT_FOUND,
                    StatusCode::BAD_REQUEST,
                    StatusCode::METHOD_NOT_ALLOWED,
                    StatusCode::NOT_ACCEPTABLE,
                ],
            )
            .await?;
            let is_index = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(media_type::OCI_INDEX));
            if response.status() != StatusCode::OK || !is_index {
                if pages.taken() == 1 {
                    return Ok(None);
                }
                bail!(
                    "{what}: page {} is not an index ({})",
                    pages.taken(),
                    response.status()
                );
            }
            let next = next_page(&url, &response).context(what.clone())?;
            let body = super::http::read_limited(response, MAX_REFERRERS_BYTES - bytes)
                .await
                .with_context(|| format!("{what}: over {MAX_REFERRERS_BYTES} bytes"))?;
            bytes += body.len();
            listed.extend(descriptors(&body)?);
            pages.follow(next)?;
        }
        Ok(Some(listed))
    }
}

/// The fallback tag of a manifest's referrers: `sha256-<hex>`.
pub fn fallback_tag(digest: &Digest) -> String {
    digest.to_string().replacen(':', "-", 1)
}

/// An index's `manifests`, as JSON values.
pub fn descriptors(index: &[u8]) -> anyhow::Result<Vec<Value>> {
    let index: Value =
        serde_json::from_slice(index).map_err(|e| anyhow!("a referrers index is not JSON: {e}"))?;
    Ok(match index.get("manifests") {
        Some(Value::Array(list)) => list.clone(),
        _ => Vec::new(),
    })
}

/// A fallback index of `descriptors`.
pub fn fallback_index(descriptors: &[Value]) -> Vec<u8> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": descriptors,
    });
    serde_json::to_vec(&index).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tag_is_algorithm_dash_hex() {
        let digest = Digest::sha256_of(b"x");
        assert_eq!(fallback_tag(&digest), format!("sha256-{}", digest.hex()));
    }
}
