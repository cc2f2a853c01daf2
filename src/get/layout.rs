//! `format: oci-layout`: an OCI image layout in `dest/oci`, digest for digest
//! what the registry serves: an index is kept as its exact bytes (so the
//! layout's digest is the version's) with every child, of every platform.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::json;

use super::metadata::write_file;
use super::staged::Staged;
use super::{pipeline, write_blob};
use crate::image::manifest::{Descriptor, parse_index, parse_manifest};
use crate::image::{Digest, media_type};
use crate::progress::Progress;
use crate::reference::{Repository, Target};
use crate::registry::{Manifest, RegistryClient};

const LAYOUT_FILE: &[u8] = b"{\n    \"imageLayoutVersion\": \"1.0.0\"\n}";

/// Writes `dest/oci` for the manifest or index `top`.
pub async fn write(
    client: &Arc<RegistryClient>,
    repository: &Repository,
    progress: &Progress,
    top: &Manifest,
    dest: &Path,
) -> anyhow::Result<()> {
    let staged = Staged::new(dest, "oci").await?;
    let partial = staged.path();
    let built = async {
        let blobs = partial.join("blobs/sha256");
        tokio::fs::create_dir_all(&blobs).await?;
        write_file(&partial.join("oci-layout"), LAYOUT_FILE)?;
        let writer = LayoutWriter {
            client: client.clone(),
            repository: repository.clone(),
            progress: progress.clone(),
            blobs,
        };
        if media_type::is_index(&top.media_type) {
            write_file(&partial.join("index.json"), &top.bytes)?;
            writer.children(&top.bytes, 0).await?;
        } else {
            writer.manifest_blob(top)?;
            writer.image(top).await?;
            let manifest = parse_manifest(&top.bytes)?;
            let mut entry = json!({
                "mediaType": top.media_type,
                "size": top.bytes.len(),
                "digest": top.digest.to_string(),
                "artifactType": manifest.config.media_type,
            });
            if !manifest.annotations.is_empty() {
                entry["annotations"] = json!(manifest.annotations);
            }
            let index = json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": [entry]});
            write_file(&partial.join("index.json"), &serde_json::to_vec(&index)?)?;
            write_file(&partial.join("single-image-digest"), top.digest.to_string().as_bytes())?;
        }
        Ok(())
    }
    .await;
    staged.commit(built).await
}

struct LayoutWriter {
    client: Arc<RegistryClient>,
    repository: Repository,
    progress: Progress,
    blobs: PathBuf,
}

impl LayoutWriter {
    fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    fn manifest_blob(&self, manifest: &Manifest) -> anyhow::Result<()> {
        write_file(&self.path(&manifest.digest), &manifest.bytes)
    }

    /// Every child of an index, recursively.
    async fn children(&self, index: &[u8], depth: usize) -> anyhow::Result<()> {
        if depth > 4 {
            bail!("indexes nested too deep");
        }
        for child in parse_index(index)?.manifests {
            let digest = child.digest()?;
            let is_manifest = media_type::is_index(&child.media_type)
                || child.media_type == media_type::OCI_MANIFEST
                || child.media_type == media_type::DOCKER_MANIFEST;
            if !is_manifest {
                // Unknown content: copied as it is.
                self.raw(std::slice::from_ref(&child)).await?;
                continue;
            }
            let manifest = self
                .client
                .get_manifest(&self.repository, &Target::Digest(digest.clone()))
                .await?
                .with_context(|| format!("{}@{digest} not found", self.repository))?;
            self.manifest_blob(&manifest)?;
            if media_type::is_index(&manifest.media_type) {
                Box::pin(self.children(&manifest.bytes, depth + 1)).await?;
            } else {
                self.image(&manifest).await?;
            }
        }
        Ok(())
    }

    /// An image's config and layers.
    async fn image(&self, manifest: &Manifest) -> anyhow::Result<()> {
        let image = parse_manifest(&manifest.bytes)?;
        let config_digest = image.config.digest()?;
        let config = self
            .client
            .get_small_blob(&self.repository, &config_digest)
            .await?;
        write_file(&self.path(&config_digest), &config)?;
        self.raw(&image.layers).await
    }

    /// Streams blobs into the layout, skipping those already there.
    async fn raw(&self, blobs: &[Descriptor]) -> anyhow::Result<()> {
        let mut missing = Vec::new();
        for blob in blobs {
            let have =
                std::fs::metadata(self.path(&blob.digest()?)).is_ok_and(|m| m.len() == blob.size);
            if !have && !missing.iter().any(|m: &Descriptor| m.digest == blob.digest) {
                missing.push(blob.clone());
            }
        }
        let dir = self.blobs.clone();
        pipeline(
            &self.client,
            &self.repository,
            &self.progress,
            &missing,
            move |readers| {
                for (blob, mut reader) in readers {
                    let name = blob.digest()?.hex().to_owned();
                    write_blob(&dir, &name, &blob, &mut reader)?;
                }
                Ok(())
            },
        )
        .await
    }
}
