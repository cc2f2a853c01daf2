//! OCI image layouts, as a directory or as a tarball: every manifest and
//! index is pushed as its exact bytes with its own media type, so the
//! remote digests equal the local ones.
//!
//! What is pushed under the tags: `index.json` (unwrapped while it holds a
//! single entry that is itself an index, as skopeo and BuildKit write
//! multi-platform layouts), or, when `single-image-digest` names one image
//! of it (as `in` writes for a single image), that image's manifest.

use std::collections::HashSet;

use anyhow::{Context, bail};
use bytes::Bytes;

use super::store::{FileSlice, Store};
use crate::image::manifest::{Descriptor, parse_index, parse_manifest};
use crate::image::{Digest, media_type};
use crate::registry::manifest::detect_media_type;

const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Indexes of indexes nested deeper than this are refused.
const MAX_DEPTH: usize = 8;

/// A manifest or index exactly as stored.
#[derive(Clone, Debug)]
pub struct RawManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

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
    /// Configs and layers, each once.
    pub blobs: Vec<LayoutBlob>,
    /// Manifests below the top, pushed by digest, children before parents.
    pub children: Vec<RawManifest>,
    /// Pushed under every tag.
    pub top: RawManifest,
}

pub fn read(store: &Store) -> anyhow::Result<LayoutImage> {
    let bytes = store
        .read_small("index.json", MAX_MANIFEST_BYTES)?
        .context("index.json not found: not an OCI image layout")?;
    // The top-level index is an index whatever its `mediaType` says.
    let declared = detect_media_type(None, &bytes);
    let media_type = if media_type::is_index(&declared) {
        declared
    } else {
        media_type::OCI_INDEX.to_owned()
    };
    let mut top = RawManifest {
        digest: Digest::sha256_of(&bytes),
        bytes: Bytes::from(bytes),
        media_type,
    };
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
    let mut walk = Walk {
        store,
        blobs: Vec::new(),
        seen: HashSet::new(),
        children: Vec::new(),
    };
    walk.visit(&top, 0)?;
    Ok(LayoutImage {
        blobs: walk.blobs,
        children: walk.children,
        top,
    })
}

struct Walk<'a> {
    store: &'a Store,
    blobs: Vec<LayoutBlob>,
    seen: HashSet<Digest>,
    children: Vec<RawManifest>,
}

impl Walk<'_> {
    /// Plans what `manifest` needs pushed before it.
    fn visit(&mut self, manifest: &RawManifest, depth: usize) -> anyhow::Result<()> {
        if depth > MAX_DEPTH {
            bail!("indexes nested too deep in the layout");
        }
        if media_type::is_index(&manifest.media_type) {
            let index = parse_index(&manifest.bytes)
                .with_context(|| format!("index {}", manifest.digest))?;
            for descriptor in &index.manifests {
                let child = read_manifest(self.store, descriptor)?;
                if !self.seen.insert(child.digest.clone()) {
                    continue;
                }
                self.visit(&child, depth + 1)?;
                self.children.push(child);
            }
            return Ok(());
        }
        let image = parse_manifest(&manifest.bytes)
            .with_context(|| format!("manifest {}", manifest.digest))?;
        for descriptor in std::iter::once(&image.config).chain(&image.layers) {
            self.blob(descriptor)?;
        }
        Ok(())
    }

    fn blob(&mut self, descriptor: &Descriptor) -> anyhow::Result<()> {
        let digest = descriptor.digest()?;
        if !self.seen.insert(digest.clone()) {
            return Ok(());
        }
        let Some(data) = self.store.slice(&blob_path(&digest))? else {
            // Non-distributable layers are fetched from their URLs by
            // whoever pulls; the layout need not hold them.
            if descriptor.media_type.contains("nondistributable")
                || descriptor.media_type.contains("foreign")
            {
                return Ok(());
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
        self.blobs.push(LayoutBlob {
            digest,
            size: descriptor.size,
            data,
        });
        Ok(())
    }
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().name(), digest.hex())
}

/// A manifest blob, verified against its descriptor's digest.
fn read_manifest(store: &Store, descriptor: &Descriptor) -> anyhow::Result<RawManifest> {
    let digest = descriptor.digest()?;
    let bytes = store
        .read_small(&blob_path(&digest), MAX_MANIFEST_BYTES)?
        .with_context(|| format!("the layout is missing manifest {digest}"))?;
    if !digest.matches(&bytes) {
        bail!("manifest {digest} in the layout does not match its digest");
    }
    let media_type = if descriptor.media_type.is_empty() {
        detect_media_type(None, &bytes)
    } else {
        descriptor.media_type.clone()
    };
    Ok(RawManifest {
        bytes: Bytes::from(bytes),
        media_type,
        digest,
    })
}
