//! Manifest requests: HEAD-then-GET digest resolution (cheap on rate limits:
//! Docker Hub does not count HEADs) and raw manifest fetches that keep the
//! exact bytes, so digests are preserved.

use anyhow::{Context, bail};
use reqwest::{Method, Response, StatusCode, header};

use super::client::RegistryClient;
use super::error::{STORED, StatusError};
use crate::image::manifest::Descriptor;
use crate::image::tree::{
    self, MAX_MANIFEST_BYTES, ManifestReader, RawManifest, detect_media_type,
};
use crate::image::{Digest, Platform, media_type};
use crate::reference::{Repository, Target};

impl RegistryClient {
    /// The digest `target` resolves to, or `None` when the registry says it
    /// does not exist. A HEAD is tried first; a GET follows only when the
    /// HEAD was refused (404 or 405: Nexus and others fail manifest HEADs
    /// that a GET answers, registry-quirks.md §1.2 and §10) or carried no
    /// usable digest, and then the digest is the hash of the body. A GET's
    /// 404 is the one that says "absent": a missing tag costs one more
    /// round trip, except on Docker Hub, whose HEADs are faithful and whose
    /// manifest GETs count against the pull limit (a `check` waiting for a
    /// tag to appear must not spend it).
    pub async fn resolve_digest(
        &self,
        repo: &Repository,
        target: &Target,
    ) -> anyhow::Result<Option<Digest>> {
        let head = self.manifest_request(Method::HEAD, repo, target).await;
        match head {
            Ok(response)
                if response.status() == StatusCode::NOT_FOUND
                    && self.host() == crate::reference::docker_hub_api() =>
            {
                return Ok(None);
            }
            Ok(response) if response.status() == StatusCode::OK => {
                if let Some(digest) = header_digest(&response)
                    && matches_target(&digest, target)
                {
                    return Ok(Some(digest));
                }
                tracing::debug!(
                    "HEAD of {repo}:{target} gave no usable digest; falling back to GET"
                );
            }
            Ok(response) => {
                tracing::debug!(
                    "HEAD of {repo}:{target} answered {}; falling back to GET",
                    response.status()
                );
            }
            // Retries are used up on a failing registry: a GET would only
            // wait through them again.
            Err(e) if super::retry::classify(&e).is_some() => return Err(e),
            Err(e) => {
                tracing::debug!("HEAD of {repo}:{target} failed ({e:#}); falling back to GET")
            }
        }
        Ok(self.get_manifest(repo, target).await?.map(|m| m.digest))
    }

    /// Fetches a manifest or index, or `None` on 404. A by-digest fetch is
    /// verified against that digest. Request and body read are retried
    /// together.
    pub async fn get_manifest(
        &self,
        repo: &Repository,
        target: &Target,
    ) -> anyhow::Result<Option<RawManifest>> {
        let what = format!("GET manifest {repo}:{target}");
        self.retry()
            .run(&what, || self.get_manifest_once(repo, target))
            .await
    }

    async fn get_manifest_once(
        &self,
        repo: &Repository,
        target: &Target,
    ) -> anyhow::Result<Option<RawManifest>> {
        let url = self.manifest_url(repo, target).await?;
        let response = self
            .send_once(Method::GET, url, repo.path(), accept_manifests)
            .await?;
        let response =
            StatusError::expect(response, &[StatusCode::OK, StatusCode::NOT_FOUND]).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
        let bytes = super::http::read_limited(response, MAX_MANIFEST_BYTES)
            .await
            .with_context(|| format!("reading manifest {repo}:{target}"))?;
        let media_type = detect_media_type(content_type.as_deref(), &bytes);
        let manifest = RawManifest::new(bytes, media_type);
        if let Target::Digest(wanted) = target
            && !manifest.matches(wanted)
        {
            bail!(
                "manifest {repo}@{wanted} does not match its digest (the registry served content hashing to {})",
                manifest.digest
            );
        }
        Ok(Some(manifest))
    }

    /// The single image manifest `manifest` stands for on `platform`:
    /// itself, or the matching child of an index (through BuildKit's nested
    /// indexes), as served; the rules are [`crate::image::platform::pick`]'s.
    pub async fn image_for_platform(
        &self,
        repository: &Repository,
        manifest: RawManifest,
        platform: &Platform,
    ) -> anyhow::Result<RawManifest> {
        tree::image_for_platform(&self.manifests_of(repository), manifest, platform).await
    }

    /// `repository`'s manifests, as a [`ManifestReader`] for the image tree.
    pub fn manifests_of<'a>(&'a self, repository: &'a Repository) -> RepositoryManifests<'a> {
        RepositoryManifests {
            client: self,
            repository,
        }
    }

    /// Deletes the manifest `reference` (a tag or a digest) names: `Ok(true)`
    /// when the registry accepted, `Ok(false)` when it says there is no such
    /// manifest, and a [`StatusError`] when it refused (e.g. 400 or 405
    /// from a registry that deletes only by digest, or not at all).
    pub async fn delete_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> anyhow::Result<bool> {
        let url = self
            .url(&format!("/v2/{}/manifests/{reference}", repo.path()))
            .await?;
        let response = self
            .send(Method::DELETE, url, repo.path(), |r| r)
            .await
            .with_context(|| format!("deleting {repo}:{reference}"))?;
        let deleted = [StatusCode::OK, StatusCode::ACCEPTED, StatusCode::NO_CONTENT];
        let response =
            StatusError::expect(response, &[&deleted[..], &[StatusCode::NOT_FOUND]].concat())
                .await?;
        Ok(response.status() != StatusCode::NOT_FOUND)
    }

    /// Stores a manifest's exact bytes under `reference` (a tag or a
    /// digest) with its media type, so its digest is kept. Works whether or
    /// not the registry answers with a `Location` (ECR does not).
    pub async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &bytes::Bytes,
    ) -> anyhow::Result<()> {
        let url = self
            .url(&format!("/v2/{}/manifests/{reference}", repo.path()))
            .await?;
        let response = self
            .send(Method::PUT, url, repo.path(), |r| {
                r.header(header::CONTENT_TYPE, media_type)
                    .body(bytes.clone())
            })
            .await
            .with_context(|| format!("pushing manifest {repo}:{reference}"))?;
        StatusError::expect(response, STORED)
            .await
            .with_context(|| format!("pushing manifest {repo}:{reference}"))?;
        Ok(())
    }

    async fn manifest_request(
        &self,
        method: Method,
        repo: &Repository,
        target: &Target,
    ) -> anyhow::Result<Response> {
        let url = self.manifest_url(repo, target).await?;
        self.send(method, url, repo.path(), accept_manifests).await
    }

    async fn manifest_url(&self, repo: &Repository, target: &Target) -> anyhow::Result<url::Url> {
        self.url(&format!("/v2/{}/manifests/{target}", repo.path()))
            .await
    }
}

/// A repository's manifests, read by digest (verified) for the image tree.
pub struct RepositoryManifests<'a> {
    client: &'a RegistryClient,
    repository: &'a Repository,
}

impl RepositoryManifests<'_> {
    /// The manifest `target` names, or `None` on 404.
    pub async fn get(&self, target: &Target) -> anyhow::Result<Option<RawManifest>> {
        self.client.get_manifest(self.repository, target).await
    }
}

impl ManifestReader for RepositoryManifests<'_> {
    async fn manifest(&self, entry: &Descriptor) -> anyhow::Result<RawManifest> {
        let digest = entry.digest()?;
        // Typed as served: the registry's Content-Type is what it stores.
        self.client
            .get_manifest(self.repository, &Target::Digest(digest.clone()))
            .await?
            .with_context(|| format!("{}@{digest} not found", self.repository))
    }

    fn describe(&self) -> String {
        self.repository.to_string()
    }
}

fn accept_manifests(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request.header(header::ACCEPT, media_type::MANIFEST_ACCEPT)
}

fn header_digest(response: &Response) -> Option<Digest> {
    response
        .headers()
        .get("docker-content-digest")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn matches_target(digest: &Digest, target: &Target) -> bool {
    match target {
        Target::Digest(wanted) => wanted == digest,
        Target::Tag(_) => true,
    }
}
