//! `docker save` tarballs: `manifest.json` names one image's config and
//! layer files. The config is pushed verbatim; compressed layers as they
//! are; uncompressed ones gzipped on the way. The manifest is synthesised
//! once the layers' digests are known, as compact Docker schema 2 JSON
//! (OCI when a layer is zstd, which a Docker manifest cannot label).

use std::collections::HashMap;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::store::{FileSlice, Store};
use crate::image::compression::Compression;
use crate::image::{Digest, media_type};

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
