//! The push engine: blobs (bounded concurrency, each skipped, mounted or
//! uploaded), the manifests below a top one by digest (children first),
//! the top under every tag, and referrers. Each input's recipe (a layout,
//! a docker-save tarball, a package, an artifact, a copy) lives in its own
//! file, builds its top manifest with these methods, and never uploads by
//! itself.

use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::Value;

use super::blob_source::{BlobData, LocalBlob};
use super::recompress::LayerCompression;
use crate::image::digest::Algorithm;
use crate::image::tree::RawManifest;
use crate::image::{Digest, media_type};
use crate::progress::Progress;
use crate::reference::{Repository, Target};
use crate::registry::referrers::{self, fallback_index, fallback_tag};
use crate::registry::upload_source::Transfer;
use crate::registry::{RegistryClient, UploadOutcome, UploadRequest};

/// Blobs moving at once (layers compressed on the way included).
const UPLOAD_CONCURRENCY: usize = 4;
/// Manifests PUT at once.
const MANIFEST_CONCURRENCY: usize = 4;

pub struct Pusher<'a> {
    pub client: &'a RegistryClient,
    pub repo: &'a Repository,
    pub progress: &'a Progress,
    /// A repository of the same registry the input came from.
    pub mount_from: Option<String>,
    /// `params.compression`.
    pub compression: LayerCompression,
    /// `params.annotations`, set on the top manifest.
    pub annotations: super::annotations::Annotations,
}

/// One blob to get into the repository.
pub(super) struct Job {
    pub(super) expected: Option<(Digest, u64)>,
    pub(super) source: LocalBlob,
}

/// What a recipe pushed: the top manifest (not yet tagged) and the
/// manifests below it (in the repository by digest), which a signer signs.
#[derive(Debug)]
pub struct Pushed {
    pub top: RawManifest,
    pub children: Vec<RawManifest>,
}

impl Pushed {
    /// A single manifest with nothing below it.
    pub fn single(top: RawManifest) -> Self {
        Pushed {
            top,
            children: Vec::new(),
        }
    }
}

impl Pusher<'_> {
    /// Puts `pushed`'s top manifest under `tags`; the digest the registry
    /// serves for the first tag. With `exact` (a copy), it must be served
    /// as the pushed digest: a difference fails the push instead of only
    /// being reported.
    pub async fn tag(
        &self,
        pushed: &Pushed,
        tags: &[String],
        exact: bool,
    ) -> anyhow::Result<Digest> {
        let top = &pushed.top;
        stream::iter(tags)
            .map(|tag| self.put_tag(tag, top))
            .buffer_unordered(MANIFEST_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        let first = first_tag(tags)?;
        let served = self
            .client
            .resolve_digest(self.repo, &Target::Tag(first.to_owned()))
            .await?
            .with_context(|| format!("{}:{first} is missing right after its push", self.repo))?;
        if served != top.digest && exact {
            bail!(
                "the copy is served as {served}, not as the origin's {}",
                top.digest
            );
        }
        if served != top.digest {
            tracing::warn!(
                "{}:{first} is served as {served}, not as the pushed {}",
                self.repo,
                top.digest
            );
        }
        Ok(served)
    }

    /// Puts `top` under `tag`. A refusal is no failure when the tag
    /// already names `top`: ECR's immutable tags refuse every PUT to an
    /// existing tag, even of the same digest (400 `TAG_INVALID`,
    /// registry-quirks.md §2), and a re-run `put` of the same image must
    /// pass. Only a refusal costs the extra lookup.
    async fn put_tag(&self, tag: &str, top: &RawManifest) -> anyhow::Result<()> {
        let refused = match self
            .client
            .put_manifest(self.repo, tag, &top.media_type, &top.bytes)
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let served = self
            .client
            .resolve_digest(self.repo, &Target::Tag(tag.to_owned()))
            .await;
        match served {
            Ok(Some(served)) if served == top.digest => {
                tracing::info!(
                    "{}:{tag} already names {served}; the registry refused to write it again ({})",
                    self.repo,
                    crate::registry::error::one_line(&refused)
                );
                Ok(())
            }
            _ => Err(refused),
        }
    }

    /// Uploads a tree's blobs (`jobs`), then the manifests below its top
    /// (a layout push and a copy).
    pub(super) async fn push_tree(
        &self,
        jobs: Vec<Job>,
        children: &[RawManifest],
    ) -> anyhow::Result<Vec<UploadOutcome>> {
        let outcomes = self.upload(jobs).await?;
        self.put_children(children).await?;
        Ok(outcomes)
    }

    /// A job for `data`, labelled `label` in progress and errors;
    /// `expected` (digest, size) when known before reading.
    pub(super) fn job(&self, data: BlobData, label: &str, expected: Option<(Digest, u64)>) -> Job {
        let algorithm = expected
            .as_ref()
            .map_or(Algorithm::Sha256, |(digest, _)| digest.algorithm());
        Job {
            source: LocalBlob::new(data, algorithm, label, self.progress),
            expected,
        }
    }

    /// A blob held in memory (a config) whose digest the caller computed.
    pub(super) fn memory_job(&self, bytes: Bytes, digest: &Digest, label: &str) -> Job {
        let expected = Some((digest.clone(), bytes.len() as u64));
        self.job(BlobData::Memory(bytes), label, expected)
    }

    /// Manifests below a top one, by digest: images first, all at once;
    /// then indexes, in order (each after its children).
    pub(super) async fn put_children(&self, children: &[RawManifest]) -> anyhow::Result<()> {
        let (indexes, images): (Vec<_>, Vec<_>) = children
            .iter()
            .partition(|m| media_type::is_index(&m.media_type));
        stream::iter(images)
            .map(|m| self.put_by_digest(m))
            .buffer_unordered(MANIFEST_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        for index in indexes {
            self.put_by_digest(index).await?;
        }
        Ok(())
    }

    /// Lists `descriptors` as referrers of `subject` on a registry without
    /// the referrers API: merged into its `sha256-<hex>` fallback index.
    pub(super) async fn add_referrers(
        &self,
        subject: &Digest,
        descriptors: &[Value],
    ) -> anyhow::Result<()> {
        if self
            .client
            .referrers_api(self.repo, subject)
            .await?
            .is_some()
        {
            // The registry indexes `subject` fields itself.
            return Ok(());
        }
        let tag = fallback_tag(subject);
        let mut listed = match self
            .client
            .get_manifest(self.repo, &Target::Tag(tag.clone()))
            .await?
        {
            Some(index) => referrers::descriptors(&index.bytes)?,
            None => Vec::new(),
        };
        let before = listed.len();
        for descriptor in descriptors {
            if !listed.iter().any(|d| d["digest"] == descriptor["digest"]) {
                listed.push(descriptor.clone());
            }
        }
        if listed.len() == before {
            return Ok(());
        }
        let bytes = Bytes::from(fallback_index(&listed));
        self.client
            .put_manifest(self.repo, &tag, media_type::OCI_INDEX, &bytes)
            .await
    }

    pub(super) async fn put_by_digest(&self, manifest: &RawManifest) -> anyhow::Result<()> {
        self.client
            .put_manifest(
                self.repo,
                &manifest.digest.to_string(),
                &manifest.media_type,
                &manifest.bytes,
            )
            .await
    }

    /// Uploads every job, a few at a time; outcomes in job order.
    pub(super) async fn upload(&self, jobs: Vec<Job>) -> anyhow::Result<Vec<UploadOutcome>> {
        let log_lines = self.progress.is_lines();
        stream::iter(jobs)
            .map(|job| async move {
                let started = Instant::now();
                let outcome = self
                    .client
                    .upload_blob(
                        self.repo,
                        &UploadRequest {
                            expected: job.expected.clone(),
                            mount_from: self.mount_from.as_deref(),
                            source: &job.source,
                        },
                    )
                    .await
                    .with_context(|| format!("pushing {}", job.source.label()))?;
                job.source.finish_bar();
                if log_lines {
                    let how = match outcome.transfer {
                        Transfer::Existed => "already present",
                        Transfer::Mounted => "mounted",
                        Transfer::Uploaded => "uploaded",
                    };
                    tracing::info!(
                        "{} {}: {how} ({} bytes, {} ms)",
                        job.source.label(),
                        outcome.digest,
                        outcome.size,
                        started.elapsed().as_millis()
                    );
                }
                Ok::<_, anyhow::Error>(outcome)
            })
            .buffered(UPLOAD_CONCURRENCY)
            .try_collect()
            .await
    }
}

/// Refuses an empty tag list (the tag rules make one impossible).
pub fn first_tag(tags: &[String]) -> anyhow::Result<&str> {
    match tags.first() {
        Some(t) => Ok(t),
        None => bail!("no tag specified - need either 'version:' in params or 'tag:' in source"),
    }
}
