//! `format: oci`: a docker-save tarball (`image.tar`) that `docker load`,
//! `podman load` and `skopeo … docker-archive:` read: the config, each
//! distinct layer as stored in the registry (still compressed), and
//! `manifest.json`, streamed straight from the registry into the tar.

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

/// Writes `dest/image.tar` for `image`, tagged `repo_tag`.
pub async fn write(
    client: &Arc<RegistryClient>,
    repository: &Repository,
    progress: &Progress,
    image: &ImageManifest,
    config: Vec<u8>,
    repo_tag: String,
    dest: &Path,
) -> anyhow::Result<()> {
    let config_name = format!("sha256:{}", image.config.digest()?.hex());
    let all_names = image
        .layers
        .iter()
        .map(layer_name)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut distinct: Vec<Descriptor> = Vec::new();
    for layer in &image.layers {
        if !distinct.iter().any(|d| d.digest == layer.digest) {
            distinct.push(layer.clone());
        }
    }
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name, "RepoTags": [repo_tag], "Layers": all_names,
    }]))?;
    let tmp = tempfile::NamedTempFile::new_in(dest).context("creating image.tar")?;
    let target = dest.join("image.tar");
    pipeline(client, repository, progress, &distinct, move |readers| {
        let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
        builder.append_data(
            &mut header(config.len() as u64),
            &config_name,
            config.as_slice(),
        )?;
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
