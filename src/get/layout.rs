//! `format: oci-layout`: an OCI image layout in `dest/oci`, digest for digest
//! what the registry serves: an index is kept as its exact bytes (so the
//! layout's digest is the version's) with every child, of every platform.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::metadata::write_file;
use super::staged::Staged;
use super::{pipeline, write_blob};
use crate::image::manifest::parse_manifest;
use crate::image::media_type;
use crate::image::tree::{ImageTree, RawManifest};
use crate::progress::Progress;
use crate::reference::Repository;
use crate::registry::RegistryClient;

const LAYOUT_FILE: &[u8] = b"{\n    \"imageLayoutVersion\": \"1.0.0\"\n}";

/// Writes `dest/oci` for the manifest or index `top`.
pub async fn write(
    client: &Arc<RegistryClient>,
    repository: &Repository,
    progress: &Progress,
    top: &RawManifest,
    dest: &Path,
) -> anyhow::Result<()> {
    let tree = ImageTree::read(&client.manifests_of(repository), top.clone()).await?;
    let staged = Staged::new(dest, "oci").await?;
    let partial = staged.path();
    let built = async {
        let blobs = partial.join("blobs/sha256");
        tokio::fs::create_dir_all(&blobs).await?;
        write_file(&partial.join("oci-layout"), LAYOUT_FILE)?;
        for child in &tree.children {
            write_file(&blobs.join(child.digest.hex()), &child.bytes)?;
        }
        if top.is_index() {
            write_file(&partial.join("index.json"), &top.bytes)?;
        } else {
            write_file(&blobs.join(top.digest.hex()), &top.bytes)?;
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
        // Configs, layers and unknown content an index lists, each once,
        // streamed and verified.
        let dir = blobs.clone();
        pipeline(client, repository, progress, &tree.blobs, move |readers| {
            for (blob, mut reader) in readers {
                let name = blob.digest()?.hex().to_owned();
                write_blob(&dir, &name, &blob, &mut reader)?;
            }
            Ok(())
        })
        .await
    }
    .await;
    staged.commit(built).await
}
