//! Test images built byte by byte: layers with exact tar entries, an OCI
//! config and manifest, multi-platform indexes, and OCI layouts on disk.

use std::path::Path;

use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One tar entry of a layer.
pub enum Entry {
    File {
        path: String,
        contents: Vec<u8>,
        mode: u32,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Entry {
    pub fn file(path: &str, contents: impl AsRef<[u8]>) -> Self {
        Entry::File {
            path: path.into(),
            contents: contents.as_ref().to_vec(),
            mode: 0o644,
        }
    }
}

/// Builds a tar archive from entries, in order.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::File {
                path,
                contents,
                mode,
            } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(contents.len() as u64);
                builder
                    .append_data(&mut header, path, contents.as_slice())
                    .unwrap();
            }
            Entry::Dir { path, mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .unwrap();
            }
            Entry::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// A complete single-platform image.
#[derive(Clone)]
pub struct TestImage {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
}

impl TestImage {
    /// An image with uncompressed layers and a config describing them.
    pub fn new(
        layers: Vec<Vec<u8>>,
        config_extra: serde_json::Value,
        platform: (&str, &str),
    ) -> Self {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let mut config = json!({
            "architecture": platform.1,
            "os": platform.0,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {},
        });
        if let (Some(base), Some(extra)) = (config.as_object_mut(), config_extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": OCI_LAYER_TAR, "digest": sha256(l), "size": l.len(),
            })).collect::<Vec<_>>(),
        });
        TestImage {
            config,
            layers,
            manifest: serde_json::to_vec(&manifest).unwrap(),
            manifest_media_type: OCI_MANIFEST.to_owned(),
        }
    }

    /// A one-layer linux/amd64 image whose only file holds `seed`, so
    /// different seeds give different digests.
    pub fn seeded(seed: &str) -> Self {
        Self::new(
            vec![tar(&[Entry::file("seed", seed)])],
            json!({}),
            ("linux", "amd64"),
        )
    }

    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    pub fn config_digest(&self) -> String {
        sha256(&self.config)
    }

    pub fn blobs(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.config.as_slice()).chain(self.layers.iter().map(Vec::as_slice))
    }
}

/// An OCI index over `(image, os, architecture)` children.
pub fn index(children: &[(&TestImage, &str, &str)]) -> Vec<u8> {
    let manifests: Vec<_> = children
        .iter()
        .map(|(image, os, arch)| {
            json!({
                "mediaType": image.manifest_media_type,
                "digest": image.digest(),
                "size": image.manifest.len(),
                "platform": {"os": os, "architecture": arch},
            })
        })
        .collect();
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
        .unwrap()
}

/// Writes `image` as an OCI image layout with one tagged manifest.
pub fn write_oci_layout(dir: &Path, tag: &str, image: &TestImage) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for blob in image
        .blobs()
        .chain(std::iter::once(image.manifest.as_slice()))
    {
        let digest = sha256(blob);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), blob).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": image.manifest_media_type,
            "digest": image.digest(),
            "size": image.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}
