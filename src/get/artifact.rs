//! `format: artifact`: each layer of a manifest written as a file in
//! `dest/files`, named by its title (`org.opencontainers.image.title`, as
//! ORAS pushes files) or, untitled, `<algorithm>-<hex>`; the config as
//! `metadata.json` when it is JSON of at most 4 MiB (not the empty
//! descriptor); the
//! manifest's annotations as `annotations.json`.
//!
//! Works on any manifest, a container image's included (its layers are
//! then written as the compressed blobs they are). Titles are names from
//! the registry, so hostile: only a plain file name is accepted, never a
//! path. Every blob is verified against its digest while it streams; the
//! config is fetched and verified before any file is, and `files/` is built
//! under a temp name and moved into place only once complete, so nothing
//! of an artifact appears in the destination unless all of it checked out.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::metadata::write_file;
use super::staged::Staged;
use super::{pipeline, write_blob};
use crate::image::manifest::{Descriptor, ImageManifest, parse_manifest};
use crate::image::media_type;
use crate::image::tree::RawManifest;
use crate::progress::Progress;
use crate::reference::Repository;
use crate::registry::RegistryClient;

/// A config bigger than this is not metadata: it is not fetched.
const MAX_METADATA_BYTES: u64 = 4 << 20;
/// Longest file name most filesystems hold.
const MAX_NAME_BYTES: usize = 255;

/// Writes the artifact `top` into `dest`; its parsed manifest.
pub async fn write(
    client: &Arc<RegistryClient>,
    repository: &Repository,
    progress: &Progress,
    top: &RawManifest,
    dest: &Path,
) -> anyhow::Result<ImageManifest> {
    if media_type::is_index(&top.media_type) {
        bail!(
            "{repository}@{} is an index, not a manifest: format: artifact fetches the files \
             of one manifest (use format: oci-layout for a whole index)",
            top.digest
        );
    }
    let manifest = parse_manifest(&top.bytes)?;
    let files = file_names(&manifest.layers)?;
    // The config is fetched (and verified) first: nothing of the artifact
    // appears in `dest` until every blob it needs checked out.
    let metadata = metadata_json(client, repository, &manifest).await?;

    let staged = Staged::new(dest, "files").await?;
    let dir = staged.path().to_path_buf();
    let built = async {
        tokio::fs::create_dir_all(&dir).await?;
        let blobs: Vec<Descriptor> = files.iter().map(|(_, d)| d.clone()).collect();
        let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        let target = dir.clone();
        pipeline(client, repository, progress, &blobs, move |readers| {
            for ((blob, mut reader), name) in readers.into_iter().zip(names) {
                write_blob(&target, &name, &blob, &mut reader)?;
            }
            Ok(())
        })
        .await
    }
    .await;
    staged.commit(built).await?;

    if let Some(config) = metadata {
        write_file(&dest.join("metadata.json"), &config)?;
    }
    let mut annotations = serde_json::to_vec_pretty(&manifest.annotations)?;
    annotations.push(b'\n');
    write_file(&dest.join("annotations.json"), &annotations)?;
    Ok(manifest)
}

/// The config, when it is metadata: JSON of at most 4 MiB, not the empty
/// descriptor. Fetched through the verified small-blob reader.
async fn metadata_json(
    client: &RegistryClient,
    repository: &Repository,
    manifest: &ImageManifest,
) -> anyhow::Result<Option<Vec<u8>>> {
    if manifest.config.size > MAX_METADATA_BYTES {
        tracing::info!(
            "the config ({} bytes) is too big for metadata.json: not written",
            manifest.config.size
        );
        return Ok(None);
    }
    if manifest.config.media_type == media_type::OCI_EMPTY {
        return Ok(None);
    }
    let config = client
        .get_small_blob(repository, &manifest.config.digest()?)
        .await
        .context("fetching the artifact's config")?;
    Ok(serde_json::from_slice::<serde_json::Value>(&config)
        .is_ok()
        .then(|| config.to_vec()))
}

/// Each layer to write, with its file name: its title, or `<alg>-<hex>`.
/// Empty-descriptor layers (placeholders of a file-less artifact) are
/// left out, and a blob listed twice under one name is written once.
fn file_names(layers: &[Descriptor]) -> anyhow::Result<Vec<(String, Descriptor)>> {
    let mut files: Vec<(String, Descriptor)> = Vec::new();
    for layer in layers {
        if layer.media_type == media_type::OCI_EMPTY {
            continue;
        }
        let digest = layer.digest()?;
        let name = match layer.annotations.get(media_type::TITLE_ANNOTATION) {
            Some(title) => {
                check_title(title)?;
                title.clone()
            }
            None => digest.to_string().replacen(':', "-", 1),
        };
        match files.iter().find(|(n, _)| *n == name) {
            Some((_, twin)) if twin.digest == layer.digest => continue,
            Some(_) => bail!("two layers of different content are both titled {name:?}"),
            None => files.push((name, layer.clone())),
        }
    }
    Ok(files)
}

/// A title must be a plain file name: one path component that stays in
/// `files/`.
fn check_title(title: &str) -> anyhow::Result<()> {
    let plain = !title.is_empty()
        && title != "."
        && title != ".."
        && title.len() <= MAX_NAME_BYTES
        && !title.contains(['/', '\\', '\0'])
        && !title.chars().any(char::is_control);
    if !plain {
        bail!(
            "a layer is titled {:?}, which is not a plain file name: refusing to write it",
            title.escape_debug().to_string()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(digest_byte: u8, title: Option<&str>) -> Descriptor {
        let mut json = serde_json::json!({
            "mediaType": "application/octet-stream",
            "digest": format!("sha256:{}", format!("{digest_byte:02x}").repeat(32)),
            "size": 1,
        });
        if let Some(title) = title {
            json["annotations"] = serde_json::json!({media_type::TITLE_ANNOTATION: title});
        }
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn titles_name_files_and_untitled_layers_are_named_by_digest() {
        let names = file_names(&[layer(1, Some("disk.qcow2")), layer(2, None)]).unwrap();
        assert_eq!(names[0].0, "disk.qcow2");
        assert_eq!(names[1].0, format!("sha256-{}", "02".repeat(32)));
    }

    #[test]
    fn hostile_titles_are_refused() {
        for title in [
            "../x",
            "/etc/passwd",
            "a/b",
            "..",
            ".",
            "",
            "a\0b",
            "a\nb",
            "a\\b",
        ] {
            let err = file_names(&[layer(1, Some(title))]).unwrap_err();
            assert!(
                format!("{err:#}").contains("not a plain file name"),
                "{title:?}"
            );
        }
        let long = "x".repeat(256);
        assert!(file_names(&[layer(1, Some(&long))]).is_err());
    }

    #[test]
    fn one_title_for_two_contents_is_refused() {
        assert!(file_names(&[layer(1, Some("a")), layer(2, Some("a"))]).is_err());
        assert_eq!(
            file_names(&[layer(1, Some("a")), layer(1, Some("a"))])
                .unwrap()
                .len(),
            1
        );
    }
}
