//! OCI image layouts, as a directory or as a tarball: every manifest and
//! index is pushed as its exact bytes with its own media type, so the
//! remote digests equal the local ones.
//!
//! What is pushed under the tags: `index.json` (unwrapped while it holds a
//! single entry that is itself an index, as skopeo and BuildKit write
//! multi-platform layouts), or, when `single-image-digest` names one image
//! of it (as `in` writes for a single image), that image's manifest.

use std::collections::HashMap;

use anyhow::{Context, bail};
use futures_util::FutureExt;

use super::blob_source::BlobData;
use super::push::{Job, Pushed, Pusher};
use super::recompress::{self, LayerCompression, NewLayer};
use super::store::{FileSlice, Store};
use crate::image::compression::Compression;
use crate::image::manifest::{Descriptor, parse_index, parse_manifest};
use crate::image::tree::{
    ImageTree, MAX_DEPTH, MAX_MANIFEST_BYTES, ManifestReader, RawManifest, detect_media_type,
};
use crate::image::{Digest, media_type};

/// A blob of the layout to push.
#[derive(Clone, Debug)]
pub struct LayoutBlob {
    pub digest: Digest,
    pub size: u64,
    pub data: FileSlice,
}

/// Everything one put of a layout pushes.
#[derive(Debug)]
pub struct LayoutImage {
    /// The manifests (`top` is pushed under every tag, the children by
    /// digest).
    pub tree: ImageTree,
    /// Configs and layers, each once, where they lie in the layout.
    pub blobs: Vec<LayoutBlob>,
}

pub fn read(store: &Store) -> anyhow::Result<LayoutImage> {
    let bytes = store
        .read_small("index.json", MAX_MANIFEST_BYTES as u64)?
        .context("index.json not found: not an OCI image layout")?;
    // The top-level index is an index whatever its `mediaType` says.
    let declared = detect_media_type(None, &bytes);
    let media_type = if media_type::is_index(&declared) {
        declared
    } else {
        media_type::OCI_INDEX.to_owned()
    };
    let mut top = RawManifest::new(bytes, media_type);
    for _ in 0..MAX_DEPTH {
        let index = parse_index(&top.bytes).context("index.json")?;
        match index.manifests.as_slice() {
            [only] if media_type::is_index(&only.media_type) => {
                top = read_manifest(store, only)?;
            }
            _ => break,
        }
    }
    if let Some(text) = store.read_small("single-image-digest", 1024)? {
        let wanted: Digest = String::from_utf8_lossy(&text)
            .trim()
            .parse()
            .context("single-image-digest")?;
        let index = parse_index(&top.bytes)?;
        let descriptor = index
            .manifests
            .iter()
            .find(|d| d.digest == wanted.to_string())
            .with_context(|| {
                format!("single-image-digest names {wanted}, which is not in the layout's index")
            })?;
        top = read_manifest(store, descriptor)?;
    }
    // Reading a store never waits: the walk completes in one poll.
    let tree = ImageTree::read(store, top)
        .now_or_never()
        .context("internal error: reading a layout waited")??;
    let mut blobs = Vec::with_capacity(tree.blobs.len());
    for descriptor in &tree.blobs {
        if let Some(blob) = layout_blob(store, descriptor)? {
            blobs.push(blob);
        }
    }
    Ok(LayoutImage { tree, blobs })
}

impl Pusher<'_> {
    /// An OCI layout: every blob as stored (or recompressed, with
    /// `params.compression`), then the manifests below the top by digest
    /// (rewritten where a layer changed), each exactly as stored otherwise.
    pub(super) async fn push_layout(&self, layout: LayoutImage) -> anyhow::Result<Pushed> {
        let (to, convert) = match self.compression {
            LayerCompression::To(to) => (to, layers_to_convert(&layout, to)?),
            // Nothing to convert: `to` is never used.
            LayerCompression::Keep => (Compression::None, Vec::new()),
        };
        let jobs: Vec<Job> = layout
            .blobs
            .iter()
            .map(|blob| {
                let label = blob.digest.to_string();
                if convert.contains(&blob.digest) {
                    self.job(BlobData::Recompress(blob.data.clone(), to), &label, None)
                } else {
                    self.layout_job(blob, &label)
                }
            })
            .collect();
        if convert.is_empty() {
            self.push_tree(jobs, &layout.tree.children).await?;
            let ImageTree { top, children, .. } = layout.tree;
            return Ok(Pushed { top, children });
        }
        let outcomes = self.upload(jobs).await?;
        let layers: HashMap<Digest, NewLayer> = layout
            .blobs
            .iter()
            .zip(&outcomes)
            .filter(|(blob, _)| convert.contains(&blob.digest))
            .map(|(blob, outcome)| {
                let new = NewLayer {
                    digest: outcome.digest.clone(),
                    size: outcome.size,
                    compression: to,
                };
                (blob.digest.clone(), new)
            })
            .collect();
        // Manifests rewritten children first, each index with its new
        // children.
        let mut renamed: HashMap<Digest, (Digest, u64, String)> = HashMap::new();
        let mut rewrite = |manifest: &RawManifest| -> anyhow::Result<RawManifest> {
            let (bytes, media_type) = if media_type::is_index(&manifest.media_type) {
                match recompress::rewrite_index(&manifest.bytes, &renamed)? {
                    Some(bytes) => (bytes, manifest.media_type.clone()),
                    None => return Ok(manifest.clone()),
                }
            } else {
                match recompress::rewrite_image(&manifest.bytes, &manifest.media_type, &layers)? {
                    Some(new) => (new.bytes, new.media_type),
                    None => return Ok(manifest.clone()),
                }
            };
            let new = RawManifest::new(bytes, media_type);
            renamed.insert(
                manifest.digest.clone(),
                (
                    new.digest.clone(),
                    new.bytes.len() as u64,
                    new.media_type.clone(),
                ),
            );
            Ok(new)
        };
        let mut children = Vec::with_capacity(layout.tree.children.len());
        for child in &layout.tree.children {
            children.push(rewrite(child)?);
        }
        let top = rewrite(&layout.tree.top)?;
        self.put_children(&children).await?;
        Ok(Pushed { top, children })
    }

    /// A blob of an OCI layout, pushed as it is stored.
    pub(super) fn layout_job(&self, blob: &LayoutBlob, label: &str) -> Job {
        let expected = Some((blob.digest.clone(), blob.size));
        self.job(BlobData::Slice(blob.data.clone()), label, expected)
    }
}

/// The tar layers of `layout`'s images stored otherwise than `to`, each
/// once.
fn layers_to_convert(layout: &LayoutImage, to: Compression) -> anyhow::Result<Vec<Digest>> {
    let mut convert: Vec<Digest> = Vec::new();
    for manifest in layout.tree.manifests() {
        if manifest.is_index() {
            continue;
        }
        for layer in parse_manifest(&manifest.bytes)?.layers {
            if !recompress::is_tar_layer(&layer.media_type) {
                continue;
            }
            let digest = layer.digest()?;
            let Some(blob) = layout.blobs.iter().find(|b| b.digest == digest) else {
                continue;
            };
            if Compression::sniff(&blob.data.head(4)?) != to && !convert.contains(&digest) {
                convert.push(digest);
            }
        }
    }
    Ok(convert)
}

/// Where `descriptor`'s blob lies in the layout; `None` for a
/// non-distributable layer the layout need not hold.
fn layout_blob(store: &Store, descriptor: &Descriptor) -> anyhow::Result<Option<LayoutBlob>> {
    let digest = descriptor.digest()?;
    let Some(data) = store.slice(&blob_path(&digest))? else {
        // Non-distributable layers are fetched from their URLs by whoever
        // pulls; the layout need not hold them.
        if descriptor.media_type.contains("nondistributable")
            || descriptor.media_type.contains("foreign")
        {
            return Ok(None);
        }
        bail!("the layout is missing blob {digest}");
    };
    if data.len != descriptor.size {
        bail!(
            "blob {digest} in the layout is {} bytes, but its descriptor says {}",
            data.len,
            descriptor.size
        );
    }
    Ok(Some(LayoutBlob {
        digest,
        size: descriptor.size,
        data,
    }))
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().name(), digest.hex())
}

/// A manifest blob, verified against its descriptor's digest.
fn read_manifest(store: &Store, descriptor: &Descriptor) -> anyhow::Result<RawManifest> {
    let digest = descriptor.digest()?;
    let bytes = store
        .read_small(&blob_path(&digest), MAX_MANIFEST_BYTES as u64)?
        .with_context(|| format!("the layout is missing manifest {digest}"))?;
    let media_type = if descriptor.media_type.is_empty() {
        detect_media_type(None, &bytes)
    } else {
        descriptor.media_type.clone()
    };
    let manifest = RawManifest::new(bytes, media_type);
    if !manifest.matches(&digest) {
        bail!("manifest {digest} in the layout does not match its digest");
    }
    Ok(manifest)
}

impl ManifestReader for Store {
    async fn manifest(&self, entry: &Descriptor) -> anyhow::Result<RawManifest> {
        read_manifest(self, entry)
    }

    fn describe(&self) -> String {
        "the layout".into()
    }
}
