//! The image tree: a top manifest or index, the manifests below it and the
//! blobs they name, read by one set of rules from any [`ManifestReader`] (a
//! registry repository or a local OCI layout).
//!
//! Every walk of an image (`in`'s OCI layout, a layout push, a copy and its
//! referrers, the signer, the platform choice) goes through this file, so
//! there is one raw manifest type, one nesting limit, one bound on what a
//! hostile source can make us hold, and one platform rule.

use std::collections::HashSet;
use std::future::Future;

use anyhow::{Context, bail};

use super::manifest::{Descriptor, parse_index, parse_manifest};
use super::platform::pick;
use super::{Digest, Platform, media_type};

/// Manifests larger than this are refused (the distribution spec asks
/// registries to accept at least 4 MiB; this leaves room without letting a
/// hostile source fill memory).
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;
/// Indexes nested deeper than this are refused (BuildKit nests one level;
/// nothing real nests more than two).
pub const MAX_DEPTH: usize = 8;
/// Manifests one walk may hold (referrers included).
pub const MAX_MANIFESTS: usize = 1000;
/// Manifest bytes one walk may hold: [`MAX_MANIFESTS`] of the largest
/// allowed size would be 16 GiB.
pub const MAX_TREE_BYTES: usize = 64 << 20;

pub use super::raw_manifest::{RawManifest, detect_media_type};

/// Whether an index entry names a manifest (walked) rather than content
/// that is copied as it is. An entry without a media type (lenient
/// documents) is read as a manifest and typed from its bytes.
pub fn names_manifest(entry: &Descriptor) -> bool {
    entry.media_type.is_empty()
        || media_type::is_index(&entry.media_type)
        || entry.media_type == media_type::OCI_MANIFEST
        || entry.media_type == media_type::DOCKER_MANIFEST
}

/// Where manifests are read from by digest.
pub trait ManifestReader {
    /// The manifest `entry` names, verified against its digest, typed by
    /// the entry (else by its source or its bytes).
    fn manifest(
        &self,
        entry: &Descriptor,
    ) -> impl Future<Output = anyhow::Result<RawManifest>> + Send;

    /// Names the source in errors ("the layout", "registry.example/app").
    fn describe(&self) -> String;
}

/// A top manifest and everything below it.
#[derive(Clone, Debug)]
pub struct ImageTree {
    /// The manifest or index the tree is of.
    pub top: RawManifest,
    /// Manifests below `top`, each once, each after its own children (the
    /// order they can be pushed in).
    pub children: Vec<RawManifest>,
    /// Every blob the manifests name (configs, layers, content an index
    /// lists that is not a manifest), each once, in the order first named.
    pub blobs: Vec<Descriptor>,
}

impl ImageTree {
    /// Reads every manifest below `top` from `reader`.
    pub async fn read(reader: &impl ManifestReader, top: RawManifest) -> anyhow::Result<Self> {
        let mut walker = TreeWalker::new(reader);
        walker.visit(&top).await?;
        Ok(ImageTree {
            children: walker.take_manifests(),
            blobs: walker.into_blobs(),
            top,
        })
    }

    /// `top`, then every manifest below it.
    pub fn manifests(&self) -> impl Iterator<Item = &RawManifest> {
        std::iter::once(&self.top).chain(&self.children)
    }

    /// The single image manifest the tree stands for on `wanted` (any, if
    /// the tree holds one image), by the rules of [`pick`].
    pub fn image_for(&self, wanted: Option<&Platform>) -> anyhow::Result<&RawManifest> {
        let mut manifest = &self.top;
        for _ in 0..=MAX_DEPTH {
            if !manifest.is_index() {
                return Ok(manifest);
            }
            let index = parse_index(&manifest.bytes)
                .with_context(|| format!("index {}", manifest.digest))?;
            let entry = pick(&index, wanted).map_err(|e| e.error(&manifest.digest, wanted))?;
            let digest = entry.digest()?;
            manifest = self
                .children
                .iter()
                .find(|m| m.digest == digest)
                .with_context(|| format!("manifest {digest} is missing"))?;
        }
        bail!("indexes nested too deep (more than {MAX_DEPTH})")
    }
}

/// Walks manifests, collecting what lies below them; every manifest and
/// blob is taken once over the walker's life, so a walk of several tops (a
/// copy's referrers) shares one set and one bound.
pub struct TreeWalker<'r, R> {
    reader: &'r R,
    seen: HashSet<Digest>,
    manifests: Vec<RawManifest>,
    blobs: Vec<Descriptor>,
    /// Manifests read and bytes held over the walker's life.
    count: usize,
    bytes: usize,
}

impl<'r, R: ManifestReader> TreeWalker<'r, R> {
    /// A walker reading from `reader`, with nothing seen yet.
    pub fn new(reader: &'r R) -> Self {
        TreeWalker {
            reader,
            seen: HashSet::new(),
            manifests: Vec::new(),
            blobs: Vec::new(),
            count: 0,
            bytes: 0,
        }
    }

    /// Where the walker reads.
    pub fn reader(&self) -> &'r R {
        self.reader
    }

    /// Reads everything below `top`: manifests not seen before are queued
    /// (see [`TreeWalker::take_manifests`]), blobs added.
    pub async fn visit(&mut self, top: &RawManifest) -> anyhow::Result<()> {
        self.seen.insert(top.digest.clone());
        self.count_in(top)?;
        self.visit_at(top, 0).await
    }

    /// The manifests found since the last call, each after its children.
    pub fn take_manifests(&mut self) -> Vec<RawManifest> {
        std::mem::take(&mut self.manifests)
    }

    /// Every blob found.
    pub fn into_blobs(self) -> Vec<Descriptor> {
        self.blobs
    }

    fn count_in(&mut self, manifest: &RawManifest) -> anyhow::Result<()> {
        self.count += 1;
        self.bytes += manifest.bytes.len();
        if self.count > MAX_MANIFESTS {
            bail!(
                "{} holds more than {MAX_MANIFESTS} manifests under one image",
                self.reader.describe()
            );
        }
        if self.bytes > MAX_TREE_BYTES {
            bail!(
                "{} holds more than {} MiB of manifests under one image",
                self.reader.describe(),
                MAX_TREE_BYTES >> 20
            );
        }
        Ok(())
    }

    async fn visit_at(&mut self, manifest: &RawManifest, depth: usize) -> anyhow::Result<()> {
        if !manifest.is_index() {
            let image = parse_manifest(&manifest.bytes)
                .with_context(|| format!("manifest {}", manifest.digest))?;
            for blob in std::iter::once(image.config).chain(image.layers) {
                self.blob(blob)?;
            }
            return Ok(());
        }
        if depth >= MAX_DEPTH {
            bail!(
                "indexes nested too deep in {} (more than {MAX_DEPTH})",
                self.reader.describe()
            );
        }
        let index =
            parse_index(&manifest.bytes).with_context(|| format!("index {}", manifest.digest))?;
        for entry in index.manifests {
            if !names_manifest(&entry) {
                self.blob(entry)?;
                continue;
            }
            if !self.seen.insert(entry.digest()?) {
                continue;
            }
            let child = self.reader.manifest(&entry).await?;
            self.count_in(&child)?;
            Box::pin(self.visit_at(&child, depth + 1)).await?;
            self.manifests.push(child);
        }
        Ok(())
    }

    fn blob(&mut self, blob: Descriptor) -> anyhow::Result<()> {
        if self.seen.insert(blob.digest()?) {
            self.blobs.push(blob);
        }
        Ok(())
    }
}

/// The single image manifest `top` stands for on `platform`: itself, or
/// the matching child of an index (through nested indexes), read from
/// `reader`.
pub async fn image_for_platform(
    reader: &impl ManifestReader,
    mut manifest: RawManifest,
    platform: &Platform,
) -> anyhow::Result<RawManifest> {
    for _ in 0..=MAX_DEPTH {
        if !manifest.is_index() {
            return Ok(manifest);
        }
        let index =
            parse_index(&manifest.bytes).with_context(|| format!("index {}", manifest.digest))?;
        let entry = pick(&index, Some(platform)).map_err(|e| {
            e.error(
                format_args!("{}@{}", reader.describe(), manifest.digest),
                Some(platform),
            )
        })?;
        manifest = reader.manifest(entry).await?;
    }
    bail!(
        "{}: indexes nested too deep (more than {MAX_DEPTH})",
        reader.describe()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    /// Manifests in memory, by digest.
    struct Memory(HashMap<Digest, RawManifest>);

    impl ManifestReader for Memory {
        async fn manifest(&self, entry: &Descriptor) -> anyhow::Result<RawManifest> {
            self.0
                .get(&entry.digest()?)
                .cloned()
                .with_context(|| format!("{} not found", entry.digest))
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    fn image(layer: &str) -> RawManifest {
        let config = Digest::sha256_of(b"config");
        let layer = Digest::sha256_of(layer.as_bytes());
        let doc = json!({"schemaVersion": 2, "mediaType": media_type::OCI_MANIFEST,
            "config": {"mediaType": media_type::OCI_CONFIG, "digest": config.to_string(), "size": 6},
            "layers": [{"mediaType": media_type::OCI_LAYER_GZIP, "digest": layer.to_string(), "size": 1}]});
        RawManifest::new(serde_json::to_vec(&doc).unwrap(), media_type::OCI_MANIFEST)
    }

    fn index(entries: &[(&RawManifest, Option<(&str, &str)>)]) -> RawManifest {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(m, platform)| {
                let mut e = json!({"mediaType": m.media_type, "digest": m.digest.to_string(),
                    "size": m.bytes.len()});
                if let Some((os, arch)) = platform {
                    e["platform"] = json!({"os": os, "architecture": arch});
                }
                e
            })
            .collect();
        let doc =
            json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": manifests});
        RawManifest::new(serde_json::to_vec(&doc).unwrap(), media_type::OCI_INDEX)
    }

    fn store(manifests: &[&RawManifest]) -> Memory {
        Memory(
            manifests
                .iter()
                .map(|m| (m.digest.clone(), (*m).clone()))
                .collect(),
        )
    }

    #[tokio::test]
    async fn walks_children_first_each_once_and_picks_through_nested_indexes() {
        let amd = image("amd");
        let arm = image("arm");
        let attestation = image("attestation");
        let inner = index(&[
            (&amd, Some(("linux", "amd64"))),
            (&arm, Some(("linux", "arm64"))),
            (&attestation, Some(("unknown", "unknown"))),
            (&amd, Some(("linux", "amd64"))),
        ]);
        let top = index(&[(&inner, None)]);
        let reader = store(&[&amd, &arm, &attestation, &inner]);
        let tree = ImageTree::read(&reader, top.clone()).await.unwrap();
        let order: Vec<_> = tree.children.iter().map(|m| m.digest.clone()).collect();
        assert_eq!(
            order,
            [&amd, &arm, &attestation, &inner].map(|m| m.digest.clone())
        );
        // One config shared by all three, and one layer each.
        assert_eq!(tree.blobs.len(), 4);
        let arm64 = Platform::new("linux", "arm64", "");
        assert_eq!(tree.image_for(Some(&arm64)).unwrap().digest, arm.digest);
        let err = tree.image_for(None).unwrap_err().to_string();
        assert!(
            err.contains("holds 2 images (linux/amd64, linux/arm64)"),
            "{err}"
        );
        let fetched = image_for_platform(&reader, top.clone(), &arm64)
            .await
            .unwrap();
        assert_eq!(fetched.digest, arm.digest);
        let s390 = Platform::new("linux", "s390x", "");
        let err = format!(
            "{:#}",
            image_for_platform(&reader, top, &s390).await.unwrap_err()
        );
        assert!(
            err.contains("no image for platform linux/s390x")
                && err.contains("it has: linux/amd64, linux/arm64")
                && !err.contains("unknown"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn nesting_count_and_size_are_bounded() {
        let mut top = image("bottom");
        let mut all = vec![top.clone()];
        for _ in 0..=MAX_DEPTH {
            top = index(&[(&top, None)]);
            all.push(top.clone());
        }
        let reader = store(&all.iter().collect::<Vec<_>>());
        let err = ImageTree::read(&reader, top).await.unwrap_err().to_string();
        assert!(err.contains("nested too deep"), "{err}");

        let images: Vec<RawManifest> = (0..=MAX_MANIFESTS).map(|i| image(&i.to_string())).collect();
        let wide = index(&images.iter().map(|m| (m, None)).collect::<Vec<_>>());
        let reader = store(&images.iter().collect::<Vec<_>>());
        let err = ImageTree::read(&reader, wide)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 1000 manifests"), "{err}");
    }
}
