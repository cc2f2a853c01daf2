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
use serde_json::Value;

use super::blob_source::{BlobData, RemoteBlob};
use super::paths::PathParam;
use super::push::{Pushed, Pusher};
use crate::auth::Access;
use crate::endpoint::Endpoint;
use crate::image::Digest;
use crate::image::tree::{RawManifest, TreeWalker};
use crate::reference::{Reference, Repository, Target};
use crate::registry::manifest::RepositoryManifests;
use crate::registry::referrers::fallback_tag;
use crate::sign::verify_digest;
use crate::source::{CopyParams, Source};

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
            let dir = super::paths::locate(src, PathParam::new("params.copy.from_dir", dir))?;
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
        let target = match source.signature_policy()? {
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
        let client = origin.client.clone();
        let repository = origin.repository.clone();
        let reader = client.manifests_of(&repository);
        let mut walk = TreeWalker::new(&reader);
        let top = fetch_all(&mut walk, target).await?.with_context(|| {
            let reference = Reference {
                repository: repository.clone(),
                target: target.clone(),
            };
            format!("{reference} not found")
        })?;
        let mut image = RemoteImage {
            top,
            children: walk.take_manifests(),
            blobs: Vec::new(),
            referrers: Vec::new(),
            referrer_lists: Vec::new(),
            legacy_tags: Vec::new(),
            origin,
        };
        if referrers {
            image.read_referrers(&mut walk).await?;
        }
        image.blobs = walk
            .into_blobs()
            .into_iter()
            .map(|blob| Ok((blob.digest()?, blob.size)))
            .collect::<anyhow::Result<_>>()?;
        Ok(image)
    }

    /// The manifests that refer to the copied ones (and to those, down to
    /// [`MAX_REFERRER_DEPTH`]), with their blobs, and cosign's legacy tags.
    async fn read_referrers(
        &mut self,
        walk: &mut TreeWalker<'_, RepositoryManifests<'_>>,
    ) -> anyhow::Result<()> {
        let client = self.origin.client.clone();
        let repository = &self.origin.repository;
        let mut subjects: Vec<Digest> = std::iter::once(&self.top)
            .chain(&self.children)
            .map(|m| m.digest.clone())
            .collect();
        for _ in 0..MAX_REFERRER_DEPTH {
            let mut next = Vec::new();
            for subject in subjects {
                let mut kept = Vec::new();
                for descriptor in client.referrers(repository, &subject).await? {
                    let Some(digest) = descriptor["digest"]
                        .as_str()
                        .and_then(|d| d.parse::<Digest>().ok())
                    else {
                        continue;
                    };
                    if let Some(manifest) = fetch_all(walk, &Target::Digest(digest.clone())).await?
                    {
                        self.referrers.append(&mut walk.take_manifests());
                        self.referrers.push(manifest);
                        kept.push(descriptor);
                        next.push(digest);
                    }
                }
                for suffix in LEGACY_SUFFIXES {
                    let tag = format!("{}{suffix}", fallback_tag(&subject));
                    if let Some(manifest) = fetch_all(walk, &Target::Tag(tag.clone())).await? {
                        self.referrers.append(&mut walk.take_manifests());
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

/// The manifest `target` names and everything under it (through the
/// walker); `None` when the registry has no such manifest.
async fn fetch_all(
    walk: &mut TreeWalker<'_, RepositoryManifests<'_>>,
    target: &Target,
) -> anyhow::Result<Option<RawManifest>> {
    let Some(manifest) = walk.reader().get(target).await? else {
        return Ok(None);
    };
    walk.visit(&manifest).await?;
    Ok(Some(manifest))
}

impl Pusher<'_> {
    /// A copy from another repository: every blob relayed (or mounted, or
    /// skipped), the manifests below the top, the top by digest, then the
    /// referrers and their fallback indexes and legacy tags.
    pub(super) async fn push_remote(&self, image: RemoteImage) -> anyhow::Result<Pushed> {
        let jobs = image
            .blobs
            .iter()
            .map(|(digest, size)| {
                let remote = RemoteBlob {
                    client: image.origin.client.clone(),
                    repository: image.origin.repository.clone(),
                    digest: digest.clone(),
                    size: *size,
                };
                self.job(
                    BlobData::Remote(Arc::new(remote)),
                    &digest.to_string(),
                    Some((digest.clone(), *size)),
                )
            })
            .collect();
        self.push_tree(jobs, &image.children).await?;
        self.put_by_digest(&image.top).await?;
        self.put_children(&image.referrers).await?;
        for (subject, descriptors) in &image.referrer_lists {
            self.add_referrers(subject, descriptors).await?;
        }
        for (tag, manifest) in &image.legacy_tags {
            self.client
                .put_manifest(self.repo, tag, &manifest.media_type, &manifest.bytes)
                .await?;
        }
        if !image.referrers.is_empty() || !image.legacy_tags.is_empty() {
            tracing::info!(
                "copied {} referrer manifests and {} legacy signature tags",
                image.referrers.len(),
                image.legacy_tags.len()
            );
        }
        Ok(Pushed {
            top: image.top,
            children: image.children,
        })
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
