//! `docker save` tarballs: `manifest.json` names one image's config and
//! layer files. The config is pushed verbatim; compressed layers as they
//! are; uncompressed ones gzipped on the way. The manifest is synthesised
//! once the layers' digests are known, as compact Docker schema 2 JSON
//! (OCI when a layer is zstd, which a Docker manifest cannot label).

use std::collections::HashMap;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::blob_source::{BlobData, hash};
use super::push::Pusher;
use super::recompress::LayerCompression;
use super::store::{FileSlice, Store};
use crate::image::compression::Compression;
use crate::image::digest::Algorithm;
use crate::image::manifest::parse_manifest;
use crate::image::tree::RawManifest;
use crate::image::{Digest, media_type};
use crate::reference::Target;

const MAX_JSON_BYTES: u64 = 32 << 20;

#[derive(Deserialize)]
struct SaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
    /// Foreign layers (Docker ≥ 25), by diff ID: their descriptors are used
    /// verbatim and their data is not pushed.
    #[serde(rename = "LayerSources", default)]
    layer_sources: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigShape {
    #[serde(default)]
    rootfs: Option<RootFs>,
}

/// One image of a docker-save tarball.
#[derive(Debug)]
pub struct DockerSaveImage {
    pub config: Bytes,
    pub layers: Vec<SavedLayer>,
}

#[derive(Debug)]
pub enum SavedLayer {
    Data {
        data: FileSlice,
        compression: Compression,
    },
    /// A descriptor from `LayerSources`.
    Foreign(serde_json::Value),
}

impl DockerSaveImage {
    /// Whether any layer is compressed while pushing (its digest is known
    /// only then).
    pub fn compresses(&self) -> bool {
        self.layers.iter().any(|l| {
            matches!(
                l,
                SavedLayer::Data {
                    compression: Compression::None,
                    ..
                }
            )
        })
    }
}

/// Reads `manifest.json` and the config; layer data stays in the tarball.
pub fn read(store: &Store) -> anyhow::Result<DockerSaveImage> {
    let listing = store
        .read_small("manifest.json", MAX_JSON_BYTES)?
        .context("file manifest.json not found in tar")?;
    let mut entries: Vec<SaveEntry> =
        serde_json::from_slice(&listing).context("invalid manifest.json")?;
    if entries.len() != 1 {
        bail!(
            "tarball must contain only a single image (its manifest.json lists {})",
            entries.len()
        );
    }
    let entry = entries.remove(0);
    let config = store
        .read_small(&entry.config, MAX_JSON_BYTES)?
        .with_context(|| format!("config {} not found in the tarball", entry.config))?;
    let diff_ids = serde_json::from_slice::<ConfigShape>(&config)
        .context("invalid image config")?
        .rootfs
        .map(|r| r.diff_ids)
        .unwrap_or_default();
    let mut layers = Vec::with_capacity(entry.layers.len());
    for (i, name) in entry.layers.iter().enumerate() {
        if let Some(descriptor) = diff_ids.get(i).and_then(|d| entry.layer_sources.get(d)) {
            layers.push(SavedLayer::Foreign(descriptor.clone()));
            continue;
        }
        let data = store
            .slice(name)?
            .with_context(|| format!("layer {name} not found in the tarball"))?;
        let compression =
            Compression::sniff(&data.head(4).with_context(|| format!("reading {name}"))?);
        layers.push(SavedLayer::Data { data, compression });
    }
    Ok(DockerSaveImage {
        config: Bytes::from(config),
        layers,
    })
}

#[derive(Serialize)]
struct Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    size: u64,
    digest: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum LayerOut<'a> {
    Pushed(Descriptor<'a>),
    Verbatim(&'a serde_json::Value),
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<LayerOut<'a>>,
}

/// A pushed layer: its digest and size, and how it is compressed.
pub struct PushedLayer {
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
}

/// The manifest bytes and media type for a config and its layers, in order
/// (`None` for a foreign layer, taken from `image`).
pub fn manifest(
    image: &DockerSaveImage,
    config: (&Digest, u64),
    pushed: &[Option<PushedLayer>],
) -> anyhow::Result<(Vec<u8>, &'static str)> {
    let oci = pushed
        .iter()
        .flatten()
        .any(|l| l.compression == Compression::Zstd);
    let (manifest_type, config_type) = if oci {
        (media_type::OCI_MANIFEST, media_type::OCI_CONFIG)
    } else {
        (media_type::DOCKER_MANIFEST, media_type::DOCKER_CONFIG)
    };
    let mut layers = Vec::with_capacity(image.layers.len());
    for (layer, pushed) in image.layers.iter().zip(pushed) {
        layers.push(match (layer, pushed) {
            (SavedLayer::Foreign(value), _) => LayerOut::Verbatim(value),
            (SavedLayer::Data { .. }, Some(p)) => LayerOut::Pushed(Descriptor {
                media_type: match (oci, p.compression) {
                    (true, Compression::Zstd) => media_type::OCI_LAYER_ZSTD,
                    (true, _) => media_type::OCI_LAYER_GZIP,
                    (false, _) => media_type::DOCKER_LAYER_GZIP,
                },
                size: p.size,
                digest: p.digest.to_string(),
            }),
            (SavedLayer::Data { .. }, None) => bail!("internal error: a layer was not pushed"),
        });
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: manifest_type,
        config: Descriptor {
            media_type: config_type,
            size: config.1,
            digest: config.0.to_string(),
        },
        layers,
    };
    Ok((serde_json::to_vec(&manifest)?, manifest_type))
}

impl Pusher<'_> {
    /// A docker-save image: its config and layers (compressed on the way
    /// where they are stored uncompressed, or in another compression than
    /// asked for), then a new manifest naming them; nothing at all when
    /// one of `tags` already holds the same image.
    pub(super) async fn push_docker_save(
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
            manifest(image, (&config_digest, image.config.len() as u64), &pushed)?;
        Ok(RawManifest::new(bytes, media_type))
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
                return Ok(Some(remote));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_compact_docker_schema_2_in_field_order() {
        let image = DockerSaveImage {
            config: Bytes::from_static(b"{}"),
            layers: vec![SavedLayer::Foreign(
                serde_json::json!({"mediaType": "x", "size": 1, "digest": "sha256:ab", "urls": ["u"]}),
            )],
        };
        let config = Digest::sha256_of(b"{}");
        let (bytes, mt) = manifest(&image, (&config, 2), &[None]).unwrap();
        assert_eq!(mt, media_type::DOCKER_MANIFEST);
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"{config}"}},"layers":[{{"digest":"sha256:ab","mediaType":"x","size":1,"urls":["u"]}}]}}"#
            )
        );
    }
}
