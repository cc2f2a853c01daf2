//! `params.package.base`: the image a package's layer goes on top of, read
//! from an OCI layout (a `get` with `format: oci-layout` writes one) or a
//! docker-save tarball. One image is taken: a multi-platform layout's
//! `platform` child, or its only one. Its config is kept (platform, env,
//! history) and extended; see `package.rs`.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::docker_save::DockerSaveImage;
use super::layout::LayoutBlob;
use super::local_image::LocalImage;
use crate::image::Platform;
use crate::image::manifest::{PlatformSpec, parse_manifest};
use crate::image::tree::RawManifest;

/// Configs larger than this are refused (they are held in memory).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The base image, with what must be pushed for it.
#[derive(Debug)]
pub enum BaseImage {
    /// One image of a layout: its manifest and its blobs (config, layers).
    Layout {
        manifest: RawManifest,
        blobs: Vec<LayoutBlob>,
        config: Value,
    },
    /// A docker-save image, pushed as `out` pushes one.
    DockerSave {
        image: DockerSaveImage,
        config: Value,
    },
}

impl BaseImage {
    /// Reads the base at `path`; `wanted` picks one image of an index.
    pub fn load(path: &Path, wanted: Option<&Platform>) -> anyhow::Result<Self> {
        match LocalImage::load(path)? {
            LocalImage::DockerSave(image) => {
                let config = serde_json::from_slice(&image.config)
                    .context("the base image's config is not JSON")?;
                Ok(BaseImage::DockerSave { image, config })
            }
            LocalImage::Layout(layout) => {
                let manifest = layout
                    .tree
                    .image_for(wanted)
                    .with_context(|| match wanted {
                        None => "the base (set params.package.platform to pick an image)",
                        Some(_) => "the base",
                    })?
                    .clone();
                let image = parse_manifest(&manifest.bytes)
                    .with_context(|| format!("the base's manifest {}", manifest.digest))?;
                let mut blobs = Vec::with_capacity(image.layers.len() + 1);
                for descriptor in std::iter::once(&image.config).chain(&image.layers) {
                    let digest = descriptor.digest()?;
                    let blob = layout
                        .blobs
                        .iter()
                        .find(|b| b.digest == digest)
                        .with_context(|| format!("the base layout is missing blob {digest}"))?;
                    blobs.push(blob.clone());
                }
                let config_bytes = blobs[0]
                    .data
                    .read_all(MAX_CONFIG_BYTES)
                    .context("reading the base image's config")?;
                let config = serde_json::from_slice(&config_bytes)
                    .context("the base image's config is not JSON")?;
                Ok(BaseImage::Layout {
                    manifest,
                    blobs,
                    config,
                })
            }
        }
    }

    pub fn config(&self) -> &Value {
        match self {
            BaseImage::Layout { config, .. } | BaseImage::DockerSave { config, .. } => config,
        }
    }
}

/// The base's platform, as its config states it.
pub fn platform_of(config: &Value) -> PlatformSpec {
    let field = |name: &str| config[name].as_str().unwrap_or_default().to_owned();
    PlatformSpec {
        os: field("os"),
        architecture: field("architecture"),
        variant: field("variant"),
    }
}
