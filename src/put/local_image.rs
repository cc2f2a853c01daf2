//! What an image path holds: an OCI layout directory, a docker-save
//! tarball, or an OCI layout tarball (`params.image`, and a package's
//! base).

use std::path::Path;

use anyhow::Context;

use super::docker_save::{self, DockerSaveImage};
use super::layout::{self, LayoutImage};
use super::store::Store;

/// An image read from a local path.
#[derive(Debug)]
pub enum LocalImage {
    Layout(LayoutImage),
    DockerSave(DockerSaveImage),
}

impl LocalImage {
    /// Reads the image's structure (manifests, configs, where each blob's
    /// bytes are); blob data is read only while pushing.
    pub fn load(path: &Path) -> anyhow::Result<LocalImage> {
        let load = || -> anyhow::Result<LocalImage> {
            if path.is_dir() {
                return Ok(LocalImage::Layout(layout::read(&Store::Dir(
                    path.to_path_buf(),
                ))?));
            }
            let store = Store::tar(path)?;
            if store.has("manifest.json") || !store.has("index.json") {
                Ok(LocalImage::DockerSave(docker_save::read(&store)?))
            } else {
                Ok(LocalImage::Layout(layout::read(&store)?))
            }
        };
        load().with_context(|| format!("could not load image from path '{}'", path.display()))
    }
}
