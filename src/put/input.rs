//! `params.image`: a shell-style glob under the put's working directory
//! that must match exactly one path, and what that path holds: an OCI
//! layout directory, a docker-save tarball, or an OCI layout tarball.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

use super::docker_save::{self, DockerSaveImage};
use super::layout::{self, LayoutImage};
use super::store::Store;
use crate::reference::Repository;

/// An image to push.
#[derive(Debug)]
pub enum Input {
    Layout(LayoutImage),
    DockerSave(DockerSaveImage),
    /// `params.package`: a directory packed into an image on the way.
    Package(super::package::PackageImage),
    /// `params.artifact`: files pushed as an OCI artifact.
    Artifact(super::artifact::ArtifactInput),
    /// `params.copy`: an image of another repository.
    Remote(Box<super::copy::RemoteImage>),
}

/// The one path `pattern` (relative to `src`; a leading `/` is still under
/// `src`) matches.
pub fn locate(src: &Path, pattern: &str) -> anyhow::Result<PathBuf> {
    if pattern.is_empty() {
        bail!(
            "params.image is required: the path of the image to push, relative to {}",
            src.display()
        );
    }
    let mut matches = locate_all(src, pattern, 20)?;
    match matches.len() {
        1 => Ok(matches.remove(0)),
        _ => bail!(
            "too many files/directories match glob '{pattern}': [{}]",
            matches
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Every path `pattern` matches under `src` (at least one, sorted), up to
/// `limit` and one more.
pub fn locate_all(src: &Path, pattern: &str, limit: usize) -> anyhow::Result<Vec<PathBuf>> {
    let relative: PathBuf = Path::new(pattern)
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    let full = format!(
        "{}/{}",
        glob::Pattern::escape(&src.to_string_lossy()),
        relative.to_string_lossy()
    );
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut matches = Vec::new();
    for entry in glob::glob_with(&full, options)
        .with_context(|| format!("failed to glob path '{pattern}'"))?
    {
        matches.push(entry.with_context(|| format!("failed to glob path '{pattern}'"))?);
        if matches.len() > limit {
            break;
        }
    }
    if matches.is_empty() {
        bail!("no files match glob '{pattern}'");
    }
    Ok(matches)
}

impl Input {
    /// Reads the image's structure (manifests, configs, where each blob's
    /// bytes are); blob data is read only while pushing.
    pub fn load(path: &Path) -> anyhow::Result<Input> {
        let load = || -> anyhow::Result<Input> {
            if path.is_dir() {
                return Ok(Input::Layout(layout::read(&Store::Dir(
                    path.to_path_buf(),
                ))?));
            }
            let store = Store::tar(path)?;
            if store.has("manifest.json") || !store.has("index.json") {
                Ok(Input::DockerSave(docker_save::read(&store)?))
            } else {
                Ok(Input::Layout(layout::read(&store)?))
            }
        };
        load().with_context(|| format!("could not load image from path '{}'", path.display()))
    }
}

/// The repository an input was fetched from, when a `get` of this resource
/// wrote it (the `repository` file next to `image.tar` or `oci/`): blobs
/// can be mounted from there instead of uploaded.
pub fn origin_repository(path: &Path) -> Option<Repository> {
    let file = path.parent()?.join("repository");
    let text = std::fs::read_to_string(file).ok()?;
    Repository::parse(text.trim()).ok()
}
