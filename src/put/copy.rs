//! `params.copy`: promotion. An image, or a whole index with every
//! platform, is copied by digest from another repository into this one,
//! under the usual tags, its digest kept: manifests travel as their exact
//! bytes, children before parents.
//!
//! Blobs are never stored: on the same registry they are mounted (nothing
//! downloaded); across registries each is relayed from a verified,
//! resumable download into a chunked upload, a few at a time. With
//! `referrers: true`, the manifests that refer to what is copied
//! (signatures, attestations: the referrers API, else the `sha256-<hex>`
//! fallback tag, and cosign's `sha256-<hex>.sig`/`.att`/`.sbom` tags) are
//! copied too, with their blobs.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::Value;

use super::input::PathParam;
use super::layout::RawManifest;
use crate::auth::Access;
use crate::endpoint::Endpoint;
use crate::image::manifest::{parse_index, parse_manifest};
use crate::image::{Digest, media_type};
use crate::reference::{Reference, Repository, Target};
use crate::registry::RegistryClient;
use crate::registry::referrers::fallback_tag;
use crate::sign::verify_digest;
use crate::source::{CopyParams, Source};

/// Manifests one copy may hold (a bound on what an origin can make us walk).
const MAX_MANIFESTS: usize = 1000;
/// Indexes nested deeper than this are refused.
const MAX_DEPTH: usize = 8;
/// Referrers of referrers followed this deep.
const MAX_REFERRER_DEPTH: usize = 3;
/// cosign's tags next to the fallback tag.
const LEGACY_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

/// Everything one copy pushes, read from the origin.
pub struct RemoteImage {
    pub origin: Endpoint,
    /// The copied manifest or index.
    pub top: RawManifest,
    /// Manifests below `top`, each after its own children.
    pub children: Vec<RawManifest>,
    /// Every blob, each once.
    pub blobs: Vec<(Digest, u64)>,
    /// Referrer manifests (with their children), pushed by digest after
    /// `top`.
    pub referrers: Vec<RawManifest>,
    /// Per subject, the referrer descriptors to list in its fallback index.
    pub referrer_lists: Vec<(Digest, Vec<Value>)>,
    /// cosign's legacy tags and what they hold.
    pub legacy_tags: Vec<(String, RawManifest)>,
}

impl std::fmt::Debug for RemoteImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RemoteImage({}@{})",
            self.origin.repository, self.top.digest
        )
    }
}

/// What `from`/`from_dir` name: a repository and a digest.
pub fn origin_reference(params: &CopyParams, src: &Path) -> anyhow::Result<(String, Digest)> {
    let text = match (params.from.trim(), params.from_dir.trim()) {
        ("", "") => bail!("params.copy needs from (REPOSITORY@sha256:…) or from_dir"),
        (from, "") => from.to_owned(),
        ("", dir) => {
            let dir = super::input::locate(src, PathParam::new("params.copy.from_dir", dir))?;
            let read = |name: &str| {
                std::fs::read_to_string(dir.join(name))
                    .map(|t| t.trim().to_owned())
                    .with_context(|| {
                        format!(
                            "params.copy.from_dir: reading {} (a get of this resource writes it)",
                            dir.join(name).display()
                        )
                    })
            };
            format!("{}@{}", read("repository")?, read("digest")?)
        }
        _ => bail!("params.copy: from and from_dir cannot both be set"),
    };
    let Some((repository, digest)) = text.rsplit_once('@') else {
        bail!("params.copy.from {text:?} names no digest: promotion copies REPOSITORY@sha256:…");
    };
    let digest: Digest = digest
        .parse()
        .with_context(|| format!("params.copy.from {text:?}: {digest:?} is not a digest"))?;
    Repository::parse(repository)
        .with_context(|| format!("params.copy.from {text:?}: not a repository"))?;
    Ok((repository.to_owned(), digest))
}

/// The origin's `source`: `copy.source` when given; else, on the same
/// registry, this resource's credentials and TLS settings; else anonymous
/// (the docker config still applies).
pub fn origin_source(
    params: &CopyParams,
    repository: &str,
    destination: &Source,
) -> anyhow::Result<Source> {
    let same_registry =
        Repository::parse(repository)?.registry() == destination.repository()?.registry();
    let mut source = match (&params.source, same_registry) {
        (Some(given), _) => {
            if !given.repository.is_empty() {
                bail!("params.copy.source.repository: name the origin in params.copy.from");
            }
            given.clone()
        }
        (None, true) => destination.connection(),
        (None, false) => Source::default(),
    };
    source.repository = repository.to_owned();
    source.validate().context("params.copy.source")?;
    Ok(source)
}

impl RemoteImage {
    /// Reads what copying `target` (a digest; the command line may name a
    /// tag) from `source` takes: manifests (kept as bytes), blob
    /// descriptors, and referrers when asked for.
    pub async fn read(source: &Source, target: &Target, referrers: bool) -> anyhow::Result<Self> {
        let origin = Endpoint::connect(source, Access::Pull).await?;
        // With the origin's cosign key, only a signed digest is copied, and
        // exactly the digest verified (a tag is resolved once).
        let verified;
        let target = match source.cosign_key()? {
            None => target,
            Some(key) => {
                let digest = match target {
                    Target::Digest(digest) => digest.clone(),
                    Target::Tag(_) => origin
                        .client
                        .resolve_digest(&origin.repository, target)
                        .await?
                        .with_context(|| format!("{}:{target} not found", origin.repository))?,
                };
                let found = verify_digest(&origin.client, &origin.repository, &digest, &key)
                    .await?
                    .require()?;
                tracing::info!("origin signature verified: {found}");
                verified = Target::Digest(digest);
                &verified
            }
        };
        let mut walk = Walk {
            client: origin.client.clone(),
            repository: origin.repository.clone(),
            blobs: Vec::new(),
            manifests: Vec::new(),
        };
        let top = walk.fetch_all(target).await?.with_context(|| {
            let reference = Reference {
                repository: origin.repository.clone(),
                target: target.clone(),
            };
            format!("{reference} not found")
        })?;
        let children = std::mem::take(&mut walk.manifests);
        let mut image = RemoteImage {
            top,
            children,
            blobs: Vec::new(),
            referrers: Vec::new(),
            referrer_lists: Vec::new(),
            legacy_tags: Vec::new(),
            origin,
        };
        if referrers {
            image.read_referrers(&mut walk).await?;
        }
        image.blobs = walk.blobs;
        Ok(image)
    }

    /// The manifests that refer to the copied ones (and to those, down to
    /// [`MAX_REFERRER_DEPTH`]), with their blobs, and cosign's legacy tags.
    async fn read_referrers(&mut self, walk: &mut Walk) -> anyhow::Result<()> {
        let mut subjects: Vec<Digest> = std::iter::once(&self.top)
            .chain(&self.children)
            .map(|m| m.digest.clone())
            .collect();
        for _ in 0..MAX_REFERRER_DEPTH {
            let mut next = Vec::new();
            for subject in subjects {
                let mut kept = Vec::new();
                for descriptor in walk.client.referrers(&walk.repository, &subject).await? {
                    let Some(digest) = descriptor["digest"]
                        .as_str()
                        .and_then(|d| d.parse::<Digest>().ok())
                    else {
                        continue;
                    };
                    if let Some(manifest) = walk.fetch_all(&Target::Digest(digest.clone())).await? {
                        self.referrers.append(&mut walk.manifests);
                        self.referrers.push(manifest);
                        kept.push(descriptor);
                        next.push(digest);
                    }
                }
                for suffix in LEGACY_SUFFIXES {
                    let tag = format!("{}{suffix}", fallback_tag(&subject));
                    if let Some(manifest) = walk.fetch_all(&Target::Tag(tag.clone())).await? {
                        self.referrers.append(&mut walk.manifests);
                        self.legacy_tags.push((tag, manifest));
                    }
                }
                if !kept.is_empty() {
                    self.referrer_lists.push((subject, kept));
                }
            }
            if next.is_empty() {
                break;
            }
            subjects = next;
        }
        Ok(())
    }
}

/// Collects manifests and blobs under a manifest.
struct Walk {
    client: Arc<RegistryClient>,
    repository: Repository,
    blobs: Vec<(Digest, u64)>,
    /// Manifests found below what was visited, each after its children.
    manifests: Vec<RawManifest>,
}

impl Walk {
    async fn fetch(&self, target: &Target) -> anyhow::Result<Option<RawManifest>> {
        Ok(self
            .client
            .get_manifest(&self.repository, target)
            .await?
            .map(|m| RawManifest {
                bytes: Bytes::from(m.bytes),
                media_type: m.media_type,
                digest: m.digest,
            }))
    }

    /// A manifest and everything under it (children into `manifests`,
    /// blobs into `blobs`); `None` when the registry has no such manifest.
    async fn fetch_all(&mut self, target: &Target) -> anyhow::Result<Option<RawManifest>> {
        let Some(manifest) = self.fetch(target).await? else {
            return Ok(None);
        };
        self.visit(&manifest, 0).await?;
        Ok(Some(manifest))
    }

    async fn visit(&mut self, manifest: &RawManifest, depth: usize) -> anyhow::Result<()> {
        if depth > MAX_DEPTH {
            bail!("indexes nested too deep in {}", self.repository);
        }
        if media_type::is_index(&manifest.media_type) {
            for child in parse_index(&manifest.bytes)?.manifests {
                let digest = child.digest()?;
                let is_manifest = media_type::is_index(&child.media_type)
                    || child.media_type == media_type::OCI_MANIFEST
                    || child.media_type == media_type::DOCKER_MANIFEST;
                if !is_manifest {
                    self.blob(digest, child.size);
                    continue;
                }
                if self.manifests.iter().any(|m| m.digest == digest) {
                    continue;
                }
                if self.manifests.len() >= MAX_MANIFESTS {
                    bail!(
                        "{} holds more than {MAX_MANIFESTS} manifests",
                        self.repository
                    );
                }
                let fetched = self
                    .fetch(&Target::Digest(digest.clone()))
                    .await?
                    .with_context(|| format!("{}@{digest} not found", self.repository))?;
                Box::pin(self.visit(&fetched, depth + 1)).await?;
                self.manifests.push(fetched);
            }
            return Ok(());
        }
        let image = parse_manifest(&manifest.bytes)
            .with_context(|| format!("manifest {}", manifest.digest))?;
        for descriptor in std::iter::once(&image.config).chain(&image.layers) {
            self.blob(descriptor.digest()?, descriptor.size);
        }
        Ok(())
    }

    fn blob(&mut self, digest: Digest, size: u64) {
        if !self.blobs.iter().any(|(d, _)| *d == digest) {
            self.blobs.push((digest, size));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_must_name_a_digest() {
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::sha256_of(b"x");
        let ok = CopyParams {
            from: format!("registry.example.org/a/b@{digest}"),
            ..Default::default()
        };
        assert_eq!(
            origin_reference(&ok, dir.path()).unwrap(),
            ("registry.example.org/a/b".to_owned(), digest.clone())
        );
        for bad in ["registry.example.org/a/b:latest", "a/b@sha256:short", ""] {
            let params = CopyParams {
                from: bad.into(),
                ..Default::default()
            };
            assert!(origin_reference(&params, dir.path()).is_err(), "{bad}");
        }
        std::fs::create_dir(dir.path().join("got")).unwrap();
        std::fs::write(dir.path().join("got/repository"), "example.org/x/y\n").unwrap();
        std::fs::write(dir.path().join("got/digest"), format!("{digest}\n")).unwrap();
        let from_dir = CopyParams {
            from_dir: "got".into(),
            ..Default::default()
        };
        assert_eq!(
            origin_reference(&from_dir, dir.path()).unwrap().0,
            "example.org/x/y"
        );
    }
}
