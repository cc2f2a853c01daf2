//! Manifest requests: HEAD-then-GET digest resolution (cheap on rate limits:
//! Docker Hub does not count HEADs) and raw manifest fetches that keep the
//! exact bytes, so digests are preserved.

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, Response, StatusCode, header};

use super::client::RegistryClient;
use super::error::StatusError;
use crate::image::manifest::{Descriptor, parse_index};
use crate::image::{Digest, Platform, media_type, platform};
use crate::reference::{Repository, Target};

/// Manifests larger than this are refused (the distribution spec asks
/// registries to accept at least 4 MiB; this leaves room without letting a
/// hostile registry fill memory).
const MAX_MANIFEST_BYTES: usize = 16 << 20;

/// A manifest or index exactly as the registry served it.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The exact bytes served.
    pub bytes: Vec<u8>,
    /// The media type (from `Content-Type`, else the document).
    pub media_type: String,
    /// The sha256 of the bytes.
    pub digest: Digest,
}

impl Manifest {
    /// The manifest as `oci-spec`'s [`ImageManifest`](oci_spec::image::ImageManifest),
    /// parsed from the exact bytes served ([`Manifest::bytes`] stays the
    /// source of truth: never re-serialise it where its digest matters).
    ///
    /// oci-spec follows the image spec strictly: a descriptor without
    /// `mediaType`, a missing `layers` or `schemaVersion`, or a digest with
    /// upper-case hex is an error here, where the resource's own steps read
    /// such documents leniently, as the original resource did.
    ///
    /// ```no_run
    /// # async fn example(
    /// #     client: &registry_image::registry::RegistryClient,
    /// #     repo: &registry_image::reference::Repository,
    /// # ) -> anyhow::Result<()> {
    /// use registry_image::reference::Target;
    ///
    /// let served = client.get_manifest(repo, &Target::Tag("latest".into())).await?;
    /// if let Some(manifest) = served {
    ///     for layer in manifest.oci_image_manifest()?.layers() {
    ///         println!("{} {} bytes", layer.digest(), layer.size());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn oci_image_manifest(&self) -> anyhow::Result<oci_spec::image::ImageManifest> {
        oci_spec::image::ImageManifest::from_reader(self.bytes.as_slice())
            .with_context(|| format!("{} as an OCI image manifest", self.digest))
    }

    /// The index as `oci-spec`'s [`ImageIndex`](oci_spec::image::ImageIndex)
    /// (a Docker manifest list too); as strict as
    /// [`Manifest::oci_image_manifest`].
    pub fn oci_image_index(&self) -> anyhow::Result<oci_spec::image::ImageIndex> {
        oci_spec::image::ImageIndex::from_reader(self.bytes.as_slice())
            .with_context(|| format!("{} as an OCI image index", self.digest))
    }
}

impl RegistryClient {
    /// The digest `target` resolves to, or `None` when the registry says it
    /// does not exist. A HEAD is tried first; a GET follows only when the
    /// HEAD was refused (e.g. 405) or carried no usable digest, and then the
    /// digest is the hash of the body.
    pub async fn resolve_digest(
        &self,
        repo: &Repository,
        target: &Target,
    ) -> anyhow::Result<Option<Digest>> {
        let head = self.manifest_request(Method::HEAD, repo, target).await;
        match head {
            Ok(response) if response.status() == StatusCode::NOT_FOUND => return Ok(None),
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
    ) -> anyhow::Result<Option<Manifest>> {
        let what = format!("GET manifest {repo}:{target}");
        self.retry()
            .run(&what, || self.get_manifest_once(repo, target))
            .await
    }

    async fn get_manifest_once(
        &self,
        repo: &Repository,
        target: &Target,
    ) -> anyhow::Result<Option<Manifest>> {
        let url = self.manifest_url(repo, target).await?;
        let response = self
            .send_once(Method::GET, url, repo.path(), accept_manifests)
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => {
                return Err(anyhow!(
                    StatusError::from_response(Method::GET, response).await
                ));
            }
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
        let bytes = super::http::read_limited(response, MAX_MANIFEST_BYTES)
            .await
            .with_context(|| format!("reading manifest {repo}:{target}"))?;
        let digest = Digest::sha256_of(&bytes);
        if let Target::Digest(wanted) = target
            && !wanted.matches(&bytes)
        {
            bail!(
                "manifest {repo}@{wanted} does not match its digest (the registry served content hashing to {digest})"
            );
        }
        let media_type = detect_media_type(content_type.as_deref(), &bytes);
        Ok(Some(Manifest {
            bytes,
            media_type,
            digest,
        }))
    }

    /// The single image manifest `manifest` stands for on `platform`:
    /// itself, or the matching child of an index (through BuildKit's nested
    /// indexes), as served.
    pub async fn image_for_platform(
        &self,
        repository: &Repository,
        mut manifest: Manifest,
        platform: &Platform,
    ) -> anyhow::Result<Manifest> {
        for _ in 0..4 {
            if !media_type::is_index(&manifest.media_type) {
                return Ok(manifest);
            }
            let index = parse_index(&manifest.bytes)?;
            // A nested index (BuildKit) has one child without a platform.
            let child: &Descriptor = match platform.select(&index.manifests) {
                Some(c) => c,
                None if index.manifests.len() == 1
                    && media_type::is_index(&index.manifests[0].media_type) =>
                {
                    &index.manifests[0]
                }
                None => bail!(
                    "no image for platform {platform} in {repository}@{} (it has: {})",
                    manifest.digest,
                    platform::describe(&index.manifests)
                ),
            };
            let child_digest = child.digest()?;
            manifest = self
                .get_manifest(repository, &Target::Digest(child_digest.clone()))
                .await?
                .with_context(|| format!("{repository}@{child_digest} not found"))?;
        }
        bail!("{repository}: indexes nested too deep")
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
        match response.status() {
            StatusCode::OK | StatusCode::ACCEPTED | StatusCode::NO_CONTENT => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(anyhow!(
                StatusError::from_response(Method::DELETE, response).await
            )),
        }
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
        if !matches!(
            response.status(),
            StatusCode::OK | StatusCode::CREATED | StatusCode::ACCEPTED | StatusCode::NO_CONTENT
        ) {
            return Err(anyhow!(
                StatusError::from_response(Method::PUT, response).await
            ))
            .with_context(|| format!("pushing manifest {repo}:{reference}"));
        }
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

/// The media type from `Content-Type` when it names a manifest type, else
/// from the body's `mediaType` field (optional in OCI; skopeo omits it), else
/// guessed from its shape.
pub fn detect_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    if let Some(ct) = content_type
        && ct.starts_with("application/vnd.")
    {
        return ct.to_owned();
    }
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Shape>(body) {
        Ok(Shape {
            media_type: Some(mt),
            ..
        }) => mt,
        Ok(Shape {
            manifests: Some(_), ..
        }) => media_type::OCI_INDEX.to_owned(),
        _ => media_type::OCI_MANIFEST.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(bytes: &[u8], media_type: &str) -> Manifest {
        Manifest {
            bytes: bytes.to_vec(),
            media_type: media_type.to_owned(),
            digest: Digest::sha256_of(bytes),
        }
    }

    #[test]
    fn offers_oci_spec_types_and_says_where_they_are_stricter() {
        let digest = Digest::sha256_of(b"x");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","size":7,"digest":"{digest}","platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#,
            media_type::DOCKER_MANIFEST_LIST,
            media_type::DOCKER_MANIFEST
        );
        let typed = served(index.as_bytes(), media_type::DOCKER_MANIFEST_LIST)
            .oci_image_index()
            .expect("a Docker manifest list");
        let child = &typed.manifests()[0];
        assert_eq!(Digest::try_from(child.digest()).expect("ours"), digest);
        assert_eq!(
            child
                .platform()
                .as_ref()
                .and_then(|p| p.variant().clone())
                .as_deref(),
            Some("v7")
        );
        // An entry without mediaType: the steps read it, oci-spec refuses it.
        let lenient =
            format!(r#"{{"schemaVersion":2,"manifests":[{{"size":7,"digest":"{digest}"}}]}}"#);
        assert!(parse_index(lenient.as_bytes()).is_ok());
        let err = served(lenient.as_bytes(), media_type::OCI_INDEX)
            .oci_image_index()
            .expect_err("strict");
        assert!(format!("{err:#}").contains("mediaType"), "{err:#}");
    }

    #[test]
    fn media_type_detection() {
        assert_eq!(
            detect_media_type(Some(media_type::DOCKER_MANIFEST), b"{}"),
            media_type::DOCKER_MANIFEST
        );
        assert_eq!(
            detect_media_type(
                Some("application/json"),
                br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#
            ),
            media_type::OCI_INDEX
        );
        assert_eq!(
            detect_media_type(None, br#"{"manifests":[]}"#),
            media_type::OCI_INDEX
        );
        assert_eq!(
            detect_media_type(Some("text/plain"), br#"{"layers":[]}"#),
            media_type::OCI_MANIFEST
        );
    }
}
