//! `format: oci`: a docker-save tarball (`image.tar`) that `docker load`,
//! `podman load` and `skopeo … docker-archive:` read: the configs, each
//! distinct layer as stored in the registry (still compressed), and
//! `manifest.json`, streamed straight from the registry into the tar. One
//! image, or one per platform of `params.platforms`.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;

use super::{pipeline, settle};
use crate::image::manifest::{Descriptor, ImageManifest};
use crate::progress::Progress;
use crate::reference::Repository;
use crate::registry::RegistryClient;

/// The file name of a layer in the tarball, by media type.
fn layer_name(layer: &Descriptor) -> anyhow::Result<String> {
    let hex = layer.digest()?.hex().to_owned();
    let ext = if layer.media_type.contains("zstd") {
        ".tar.zst"
    } else if layer.media_type.ends_with(".tar") || layer.media_type.ends_with("diff.tar") {
        ".tar"
    } else {
        ".tar.gz"
    };
    Ok(format!("{hex}{ext}"))
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// One image of the tarball: its manifest, its config's bytes and the
/// name `docker load` gives it.
pub struct TarImage {
    pub manifest: ImageManifest,
    pub config: Vec<u8>,
    pub repo_tag: String,
}

/// Writes `dest/image.tar` holding `images` (one per platform asked; one
/// in the common case): each config and each distinct layer once, then
/// `manifest.json` with an entry per image.
pub async fn write(
    client: &Arc<RegistryClient>,
    repository: &Repository,
    progress: &Progress,
    images: Vec<TarImage>,
    dest: &Path,
) -> anyhow::Result<()> {
    let mut entries = Vec::with_capacity(images.len());
    let mut configs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut distinct: Vec<Descriptor> = Vec::new();
    for image in images {
        let config_name = format!("sha256:{}", image.manifest.config.digest()?.hex());
        let layer_names = image
            .manifest
            .layers
            .iter()
            .map(layer_name)
            .collect::<anyhow::Result<Vec<_>>>()?;
        entries.push(json!({
            "Config": config_name, "RepoTags": [image.repo_tag], "Layers": layer_names,
        }));
        if !configs.iter().any(|(name, _)| *name == config_name) {
            configs.push((config_name, image.config));
        }
        for layer in &image.manifest.layers {
            if !distinct.iter().any(|d| d.digest == layer.digest) {
                distinct.push(layer.clone());
            }
        }
    }
    let manifest = serde_json::to_vec(&entries)?;
    let tmp = tempfile::NamedTempFile::new_in(dest).context("creating image.tar")?;
    let target = dest.join("image.tar");
    pipeline(client, repository, progress, &distinct, move |readers| {
        let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
        for (config_name, config) in &configs {
            builder.append_data(
                &mut header(config.len() as u64),
                config_name,
                config.as_slice(),
            )?;
        }
        for (layer, mut reader) in readers {
            let name = layer_name(&layer)?;
            let copied = builder
                .append_data(&mut header(layer.size), &name, &mut reader)
                .context("writing image.tar");
            settle(&layer.digest, &mut reader, copied)?;
        }
        builder.append_data(
            &mut header(manifest.len() as u64),
            "manifest.json",
            manifest.as_slice(),
        )?;
        builder.into_inner()?.flush()?;
        tmp.persist(&target).context("writing image.tar")?;
        Ok(())
    })
    .await
}
