//! Pushing an input image: its blobs (bounded concurrency, each skipped,
//! mounted or uploaded), then the manifests below the top by digest, then
//! the top manifest under every tag.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::Value;

use super::artifact::ArtifactInput;
use super::base::BaseImage;
use super::blob_source::{BlobData, LocalBlob, RemoteBlob, hash};
use super::copy::RemoteImage;
use super::docker_save::{self, DockerSaveImage, PushedLayer, SavedLayer};
use super::input::Input;
use super::layout::{LayoutBlob, LayoutImage, RawManifest};
use super::package::PackageImage;
use super::recompress::{self, LayerCompression, NewLayer};
use crate::image::compression::Compression;
use crate::image::digest::Algorithm;
use crate::image::manifest::parse_manifest;
use crate::image::{Digest, media_type};
use crate::progress::Progress;
use crate::reference::{Repository, Target};
use crate::registry::referrers::{self, fallback_index, fallback_tag};
use crate::registry::upload::Transfer;
use crate::registry::{RegistryClient, UploadOutcome, UploadRequest};

/// Blobs moving at once (layers compressed on the way included).
const UPLOAD_CONCURRENCY: usize = 4;
/// Manifest PUTs at once.
const MANIFEST_CONCURRENCY: usize = 4;

pub struct Pusher<'a> {
    pub client: &'a RegistryClient,
    pub repo: &'a Repository,
    pub progress: &'a Progress,
    /// A repository of the same registry the input came from.
    pub mount_from: Option<String>,
    /// `params.compression`.
    pub compression: LayerCompression,
}

/// One blob to get into the repository.
pub(super) struct Job {
    expected: Option<(Digest, u64)>,
    source: LocalBlob,
}

impl Pusher<'_> {
    /// Pushes `input` under `tags`; the digest the registry serves for the
    /// first tag.
    /// A copy (`Input::Remote`) must be served as the origin's digest: a
    /// difference fails the push instead of only being reported.
    pub async fn push(&self, input: Input, tags: &[String]) -> anyhow::Result<Digest> {
        let exact = matches!(input, Input::Remote(_));
        let top = match input {
            Input::Layout(layout) => self.push_layout(layout).await?,
            Input::DockerSave(image) => self.push_docker_save(&image, tags).await?,
            Input::Package(package) => self.push_package(package).await?,
            Input::Artifact(artifact) => self.push_artifact(artifact).await?,
            Input::Remote(remote) => self.push_remote(&remote).await?,
        };
        stream::iter(tags)
            .map(|tag| {
                self.client
                    .put_manifest(self.repo, tag, &top.media_type, &top.bytes)
            })
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

    async fn push_layout(&self, layout: LayoutImage) -> anyhow::Result<RawManifest> {
        let (to, convert) = match self.compression {
            LayerCompression::To(to) => (to, layers_to_convert(&layout, to)?),
            // Nothing to convert: `to` is never used.
            LayerCompression::Keep => (Compression::None, Vec::new()),
        };
        let jobs: Vec<Job> = layout
            .blobs
            .iter()
            .map(|blob| {
                let label = blob.digest.to_string();
                if convert.contains(&blob.digest) {
                    self.job(BlobData::Recompress(blob.data.clone(), to), &label, None)
                } else {
                    self.layout_job(blob, &label)
                }
            })
            .collect();
        let outcomes = self.upload(jobs).await?;
        if convert.is_empty() {
            self.put_children(&layout.children).await?;
            return Ok(layout.top);
        }
        let layers: HashMap<Digest, NewLayer> = layout
            .blobs
            .iter()
            .zip(&outcomes)
            .filter(|(blob, _)| convert.contains(&blob.digest))
            .map(|(blob, outcome)| {
                let new = NewLayer {
                    digest: outcome.digest.clone(),
                    size: outcome.size,
                    compression: to,
                };
                (blob.digest.clone(), new)
            })
            .collect();
        // Manifests rewritten children first, each index with its new
        // children.
        let mut renamed: HashMap<Digest, (Digest, u64, String)> = HashMap::new();
        let mut rewrite = |manifest: &RawManifest| -> anyhow::Result<RawManifest> {
            let (bytes, media_type) = if media_type::is_index(&manifest.media_type) {
                match recompress::rewrite_index(&manifest.bytes, &renamed)? {
                    Some(bytes) => (bytes, manifest.media_type.clone()),
                    None => return Ok(manifest.clone()),
                }
            } else {
                match recompress::rewrite_image(&manifest.bytes, &manifest.media_type, &layers)? {
                    Some(new) => (new.bytes, new.media_type),
                    None => return Ok(manifest.clone()),
                }
            };
            let new = RawManifest {
                digest: Digest::sha256_of(&bytes),
                bytes: Bytes::from(bytes),
                media_type,
            };
            renamed.insert(
                manifest.digest.clone(),
                (
                    new.digest.clone(),
                    new.bytes.len() as u64,
                    new.media_type.clone(),
                ),
            );
            Ok(new)
        };
        let mut children = Vec::with_capacity(layout.children.len());
        for child in &layout.children {
            children.push(rewrite(child)?);
        }
        let top = rewrite(&layout.top)?;
        self.put_children(&children).await?;
        Ok(top)
    }

    /// A job for `data`, labelled `label` in progress and errors;
    /// `expected` (digest, size) when known before reading.
    fn job(&self, data: BlobData, label: &str, expected: Option<(Digest, u64)>) -> Job {
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

    /// A blob of an OCI layout, pushed as it is stored.
    fn layout_job(&self, blob: &LayoutBlob, label: &str) -> Job {
        let expected = Some((blob.digest.clone(), blob.size));
        self.job(BlobData::Slice(blob.data.clone()), label, expected)
    }

    /// Manifests below a top one, by digest: images first, all at once;
    /// then indexes, in order (each after its children).
    async fn put_children(&self, children: &[RawManifest]) -> anyhow::Result<()> {
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

    /// A copy from another repository: every blob relayed (or mounted, or
    /// skipped), the manifests below the top, the top by digest, then the
    /// referrers and their fallback indexes and legacy tags.
    async fn push_remote(&self, image: &RemoteImage) -> anyhow::Result<RawManifest> {
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
        self.upload(jobs).await?;
        self.put_children(&image.children).await?;
        self.put_by_digest(&image.top).await?;
        if image.referrers.is_empty() && image.legacy_tags.is_empty() {
            return Ok(image.top.clone());
        }
        self.put_children(&image.referrers).await?;
        for (subject, descriptors) in &image.referrer_lists {
            self.add_referrers(subject, descriptors).await?;
        }
        for (tag, manifest) in &image.legacy_tags {
            self.client
                .put_manifest(self.repo, tag, &manifest.media_type, &manifest.bytes)
                .await?;
        }
        tracing::info!(
            "copied {} referrer manifests and {} legacy signature tags",
            image.referrers.len(),
            image.legacy_tags.len()
        );
        Ok(image.top.clone())
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

    async fn put_by_digest(&self, manifest: &RawManifest) -> anyhow::Result<()> {
        self.client
            .put_manifest(
                self.repo,
                &manifest.digest.to_string(),
                &manifest.media_type,
                &manifest.bytes,
            )
            .await
    }

    async fn push_docker_save(
        &self,
        image: &DockerSaveImage,
        tags: &[String],
    ) -> anyhow::Result<RawManifest> {
        let config_digest = Digest::sha256_of(&image.config);
        // What each stored compression becomes: kept, except uncompressed
        // layers, gzipped, unless `params.compression` says otherwise.
        let becomes = |stored: Compression| match (self.compression, stored) {
            (LayerCompression::To(to), _) => to,
            (LayerCompression::Keep, Compression::None) => Compression::Gzip,
            (LayerCompression::Keep, kept) => kept,
        };
        if image.compresses()
            && self.compression == LayerCompression::Keep
            && let Some(existing) = self
                .existing_image(tags, &config_digest, image.layers.len())
                .await?
        {
            tracing::info!(
                "{} already holds this image as {}: nothing to upload",
                self.repo,
                existing.digest
            );
            return Ok(existing);
        }
        // Layers stored compressed are pushed as they are; their digests
        // are needed first to skip the ones the repository has.
        let mut hashes = Vec::with_capacity(image.layers.len());
        for layer in &image.layers {
            hashes.push(match layer {
                SavedLayer::Data { data, compression }
                    if *compression != Compression::None
                        && becomes(*compression) == *compression =>
                {
                    let data = data.clone();
                    Some(tokio::task::spawn_blocking(move || {
                        let size = data.len;
                        hash(&data, Algorithm::Sha256).map(|d| (d, size))
                    }))
                }
                _ => None,
            });
        }
        let total = image.layers.len();
        let mut jobs = vec![self.memory_job(image.config.clone(), &config_digest, "config")];
        let mut positions = Vec::with_capacity(total);
        for (i, (layer, hashed)) in image.layers.iter().zip(hashes).enumerate() {
            let SavedLayer::Data { data, compression } = layer else {
                positions.push(None);
                continue;
            };
            let label = format!("layer {}/{total}", i + 1);
            let (data, expected) = match hashed {
                Some(task) => (
                    BlobData::Slice(data.clone()),
                    Some(
                        task.await
                            .context("hashing a layer")?
                            .context("hashing a layer")?,
                    ),
                ),
                // Compressed on the way (an uncompressed layer gzipped, or
                // another compression asked for).
                None => (
                    BlobData::Recompress(data.clone(), becomes(*compression)),
                    None,
                ),
            };
            positions.push(Some((jobs.len(), becomes(*compression))));
            jobs.push(self.job(data, &label, expected));
        }
        let outcomes = self.upload(jobs).await?;
        let pushed: Vec<Option<PushedLayer>> = positions
            .into_iter()
            .map(|p| {
                p.map(|(job, compression)| PushedLayer {
                    digest: outcomes[job].digest.clone(),
                    size: outcomes[job].size,
                    compression,
                })
            })
            .collect();
        let (bytes, media_type) =
            docker_save::manifest(image, (&config_digest, image.config.len() as u64), &pushed)?;
        Ok(RawManifest {
            digest: Digest::sha256_of(&bytes),
            bytes: Bytes::from(bytes),
            media_type: media_type.to_owned(),
        })
    }

    /// A packed directory: the base image's blobs (if any) and the layer
    /// (packed, gzipped, hashed and uploaded in one pass), then the config
    /// that names its `diff_id`, then a manifest: the base's with one more
    /// layer, or a new one.
    async fn push_package(&self, package: PackageImage) -> anyhow::Result<RawManifest> {
        let base_manifest = match &package.base {
            None => None,
            Some(base) => Some(self.push_base(base).await?),
        };
        let layer = self
            .upload(vec![Job {
                expected: None,
                source: LocalBlob::new(
                    BlobData::Tree(package.layer.clone()),
                    Algorithm::Sha256,
                    "package layer",
                    self.progress,
                ),
            }])
            .await?
            .remove(0);
        let diff_id = package
            .layer
            .diff_id()
            .context("the layer was uploaded without being packed")?;
        let config = Bytes::from(package.config_bytes(&diff_id));
        let config_digest = Digest::sha256_of(&config);
        let config_size = config.len() as u64;
        self.upload(vec![self.memory_job(config, &config_digest, "config")])
            .await?;
        let (bytes, manifest_type) = match base_manifest {
            None => (
                PackageImage::manifest_bytes(
                    (&config_digest, config_size),
                    (&layer.digest, layer.size),
                ),
                media_type::OCI_MANIFEST.to_owned(),
            ),
            Some(base) => {
                let bytes = PackageImage::manifest_on_base(
                    &base.bytes,
                    &base.media_type,
                    (&config_digest, config_size),
                    (&layer.digest, layer.size),
                )?;
                (bytes, base.media_type)
            }
        };
        Ok(RawManifest {
            digest: Digest::sha256_of(&bytes),
            bytes: Bytes::from(bytes),
            media_type: manifest_type,
        })
    }

    /// Gets a package's base image into the repository: its manifest
    /// (not pushed itself).
    async fn push_base(&self, base: &BaseImage) -> anyhow::Result<RawManifest> {
        match base {
            BaseImage::Layout {
                manifest, blobs, ..
            } => {
                let total = blobs.len() - 1;
                let jobs = blobs
                    .iter()
                    .enumerate()
                    .map(|(i, blob)| {
                        let label = match i {
                            0 => "base config".to_owned(),
                            _ => format!("base layer {i}/{total}"),
                        };
                        self.layout_job(blob, &label)
                    })
                    .collect();
                self.upload(jobs).await?;
                Ok(manifest.clone())
            }
            BaseImage::DockerSave { image, .. } => self.push_docker_save(image, &[]).await,
        }
    }

    /// An artifact: the config and the files, each file hashed while it
    /// is uploaded; then the manifest naming them.
    async fn push_artifact(&self, artifact: ArtifactInput) -> anyhow::Result<RawManifest> {
        let (config, _) = &artifact.config;
        let config_digest = Digest::sha256_of(config);
        let config_size = config.len() as u64;
        let total = artifact.files.len();
        let mut jobs = vec![self.memory_job(config.clone(), &config_digest, "config")];
        // No files: the one layer is the empty descriptor, whose `{}`
        // must be in the repository too.
        if artifact.files.is_empty() && config.as_ref() != super::artifact::EMPTY_JSON {
            let empty = Bytes::from_static(super::artifact::EMPTY_JSON);
            let digest = Digest::sha256_of(&empty);
            jobs.push(self.memory_job(empty, &digest, "empty layer"));
        }
        let first_file = jobs.len();
        for (i, file) in artifact.files.iter().enumerate() {
            let label = format!("file {}/{total} {}", i + 1, file.title);
            jobs.push(self.job(BlobData::Slice(file.data.clone()), &label, None));
        }
        let outcomes = self.upload(jobs).await?;
        let files: Vec<(Digest, u64)> = outcomes[first_file..]
            .iter()
            .map(|o| (o.digest.clone(), o.size))
            .collect();
        let bytes = artifact.manifest_bytes((&config_digest, config_size), &files);
        Ok(RawManifest {
            digest: Digest::sha256_of(&bytes),
            bytes: Bytes::from(bytes),
            media_type: media_type::OCI_MANIFEST.to_owned(),
        })
    }

    /// An image already under one of `tags` with this config (so the same
    /// layers) whose blobs are all present: pushing it again would only
    /// compress and upload what is there. Re-running a put of the same
    /// tarball thus uploads nothing and keeps the digest.
    async fn existing_image(
        &self,
        tags: &[String],
        config: &Digest,
        layers: usize,
    ) -> anyhow::Result<Option<RawManifest>> {
        for tag in tags {
            let Some(remote) = self
                .client
                .get_manifest(self.repo, &Target::Tag(tag.clone()))
                .await?
            else {
                continue;
            };
            if media_type::is_index(&remote.media_type) {
                continue;
            }
            let Ok(manifest) = parse_manifest(&remote.bytes) else {
                continue;
            };
            if manifest.config.digest != config.to_string() || manifest.layers.len() != layers {
                continue;
            }
            let mut complete = true;
            for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
                if !self
                    .client
                    .blob_exists(self.repo, &descriptor.digest()?)
                    .await?
                {
                    complete = false;
                    break;
                }
            }
            if complete {
                return Ok(Some(RawManifest {
                    bytes: Bytes::from(remote.bytes),
                    media_type: remote.media_type,
                    digest: remote.digest,
                }));
            }
        }
        Ok(None)
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

/// The tar layers of `layout`'s images stored otherwise than `to`, each
/// once.
fn layers_to_convert(layout: &LayoutImage, to: Compression) -> anyhow::Result<Vec<Digest>> {
    let mut convert: Vec<Digest> = Vec::new();
    for manifest in layout.children.iter().chain(std::iter::once(&layout.top)) {
        if media_type::is_index(&manifest.media_type) {
            continue;
        }
        for layer in parse_manifest(&manifest.bytes)?.layers {
            if !recompress::is_tar_layer(&layer.media_type) {
                continue;
            }
            let digest = layer.digest()?;
            let Some(blob) = layout.blobs.iter().find(|b| b.digest == digest) else {
                continue;
            };
            if Compression::sniff(&blob.data.head(4)?) != to && !convert.contains(&digest) {
                convert.push(digest);
            }
        }
    }
    Ok(convert)
}

/// Refuses an empty tag list (the tag rules make one impossible).
pub fn first_tag(tags: &[String]) -> anyhow::Result<&str> {
    match tags.first() {
        Some(t) => Ok(t),
        None => bail!("no tag specified - need either 'version:' in params or 'tag:' in source"),
    }
}
