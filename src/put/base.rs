//! `params.package.base`: the image a package's layer goes on top of, read
//! from an OCI layout (a `get` with `format: oci-layout` writes one) or a
//! docker-save tarball. One image is taken: a multi-platform layout's
//! `platform` child, or its only one. Its config is kept (platform, env,
//! history) and extended; see `package.rs`.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use super::docker_save::DockerSaveImage;
use super::input::Input;
use super::layout::{LayoutBlob, RawManifest};
use crate::image::manifest::{PlatformSpec, parse_index, parse_manifest};
use crate::image::{Platform, media_type, platform};

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
        match Input::load(path)? {
            Input::DockerSave(image) => {
                let config = serde_json::from_slice(&image.config)
                    .context("the base image's config is not JSON")?;
                Ok(BaseImage::DockerSave { image, config })
            }
            Input::Layout(layout) => {
                let manifest = if media_type::is_index(&layout.top.media_type) {
                    let index = parse_index(&layout.top.bytes)?;
                    let images: Vec<_> = index
                        .manifests
                        .iter()
                        .filter(|d| !media_type::is_index(&d.media_type))
                        .cloned()
                        .collect();
                    let chosen = match (wanted, images.as_slice()) {
                        (Some(platform), _) => platform.select(&images).with_context(|| {
                            format!(
                                "the base has no image for platform {platform} (it has: {})",
                                platform::describe(&images)
                            )
                        })?,
                        (None, [only]) => only,
                        (None, _) => bail!(
                            "the base holds {} images ({}): set params.package.platform to pick one",
                            images.len(),
                            platform::describe(&images)
                        ),
                    };
                    let digest = chosen.digest()?;
                    layout
                        .children
                        .iter()
                        .find(|m| m.digest == digest)
                        .cloned()
                        .with_context(|| format!("the base layout is missing manifest {digest}"))?
                } else {
                    layout.top
                };
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
            Input::Package(_) | Input::Artifact(_) | Input::Remote(_) => {
                bail!("internal error: a base image loaded as a package")
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
