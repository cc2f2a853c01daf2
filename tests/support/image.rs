//! Test images built byte by byte: layers with exact tar entries, an OCI
//! config and manifest, multi-platform indexes, and OCI layouts on disk.

use std::path::Path;

use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Every manifest type, as a client must ask (distribution answers 404 to
/// an OCI manifest not asked for).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One tar entry of a layer, written byte for byte (names are not checked,
/// so layers can hold `../x` or absolute paths on purpose).
#[derive(Clone)]
pub struct Entry {
    name: String,
    kind: tar::EntryType,
    contents: Vec<u8>,
    link: String,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    device: (u32, u32),
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    fn new(name: &str, kind: tar::EntryType, mode: u32) -> Self {
        Entry {
            name: name.into(),
            kind,
            contents: Vec::new(),
            link: String::new(),
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            device: (0, 0),
            xattrs: Vec::new(),
        }
    }
    pub fn file(path: &str, contents: impl AsRef<[u8]>) -> Self {
        let mut e = Self::new(path, tar::EntryType::Regular, 0o644);
        e.contents = contents.as_ref().to_vec();
        e
    }
    pub fn dir(path: &str) -> Self {
        Self::new(path, tar::EntryType::Directory, 0o755)
    }
    pub fn symlink(path: &str, target: &str) -> Self {
        let mut e = Self::new(path, tar::EntryType::Symlink, 0o777);
        e.link = target.into();
        e
    }
    pub fn hardlink(path: &str, target: &str) -> Self {
        let mut e = Self::new(path, tar::EntryType::Link, 0o644);
        e.link = target.into();
        e
    }
    pub fn char_device(path: &str, major: u32, minor: u32) -> Self {
        let mut e = Self::new(path, tar::EntryType::Char, 0o666);
        e.device = (major, minor);
        e
    }
    pub fn fifo(path: &str) -> Self {
        Self::new(path, tar::EntryType::Fifo, 0o600)
    }
    /// An extended attribute, carried in a PAX header as `SCHILY.xattr.<name>`.
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Self {
        self.xattrs.push((name.into(), value.to_vec()));
        self
    }
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }
}

/// Builds a tar archive from entries, in order.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.xattrs.is_empty() {
            let mut records = Vec::new();
            for (name, value) in &e.xattrs {
                let body = [
                    format!(" SCHILY.xattr.{name}=").into_bytes(),
                    value.clone(),
                    b"\n".to_vec(),
                ]
                .concat();
                // The record length counts its own digits.
                let mut len = body.len() + 1;
                while len.to_string().len() + body.len() != len {
                    len += 1;
                }
                records.extend(len.to_string().into_bytes());
                records.extend(body);
            }
            let mut pax = tar::Header::new_ustar();
            pax.set_path("PaxHeaders/entry").unwrap();
            pax.set_entry_type(tar::EntryType::XHeader);
            pax.set_size(records.len() as u64);
            pax.set_mode(0o644);
            pax.set_cksum();
            builder.append(&pax, records.as_slice()).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        assert!(
            e.name.len() < 100 && e.link.len() < 100,
            "test entry names are short"
        );
        header.as_old_mut().name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        header.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_uid(e.uid);
        header.set_gid(e.gid);
        header.set_mtime(e.mtime);
        header.set_size(e.contents.len() as u64);
        if e.kind == tar::EntryType::Char {
            header.set_device_major(e.device.0).unwrap();
            header.set_device_minor(e.device.1).unwrap();
        }
        header.set_cksum();
        builder.append(&header, e.contents.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap()
}

pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

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
        let layers = layers
            .into_iter()
            .map(|l| (l.clone(), l, OCI_LAYER_TAR))
            .collect();
        Self::from_blobs(layers, config_extra, platform)
    }

    /// An image from `(uncompressed, blob, media type)` layers.
    pub fn from_blobs(
        layers: Vec<(Vec<u8>, Vec<u8>, &str)>,
        config_extra: serde_json::Value,
        platform: (&str, &str),
    ) -> Self {
        let diff_ids: Vec<String> = layers.iter().map(|(raw, _, _)| sha256(raw)).collect();
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
            "layers": layers.iter().map(|(_, blob, mt)| json!({
                "mediaType": mt, "digest": sha256(blob), "size": blob.len(),
            })).collect::<Vec<_>>(),
        });
        TestImage {
            config,
            layers: layers.into_iter().map(|(_, blob, _)| blob).collect(),
            manifest: serde_json::to_vec(&manifest).unwrap(),
            manifest_media_type: OCI_MANIFEST.to_owned(),
        }
    }

    /// The same image with these manifest annotations.
    pub fn with_annotations(mut self, annotations: serde_json::Value) -> Self {
        let mut m: serde_json::Value = serde_json::from_slice(&self.manifest).unwrap();
        m["annotations"] = annotations;
        self.manifest = serde_json::to_vec(&m).unwrap();
        self
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

/// The `oci-layout` marker and every blob of `images`, manifests included.
fn write_layout_blobs(dir: &Path, images: &[&TestImage]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for image in images {
        for blob in image
            .blobs()
            .chain(std::iter::once(image.manifest.as_slice()))
        {
            let digest = sha256(blob);
            std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), blob).unwrap();
        }
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Writes `image` as an OCI image layout with one tagged manifest.
pub fn write_oci_layout(dir: &Path, tag: &str, image: &TestImage) {
    write_layout_blobs(dir, &[image]);
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

/// Writes `image` as a `docker save` tarball: `manifest.json`, the config
/// as `<hex>.json`, and each layer blob as `<n>/layer.tar` (as stored in the
/// image: uncompressed for [`TestImage::new`]).
pub fn write_docker_save(path: &Path, image: &TestImage, repo_tag: &str) {
    let config_name = format!("{}.json", &image.config_digest()["sha256:".len()..]);
    let layer_names: Vec<String> = (0..image.layers.len())
        .map(|i| format!("layer{i}/layer.tar"))
        .collect();
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": [repo_tag],
        "Layers": layer_names,
    }]);
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, data).unwrap();
    };
    add(&config_name, &image.config);
    for (name, layer) in layer_names.iter().zip(&image.layers) {
        add(name, layer);
    }
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    builder.finish().unwrap();
}

/// Writes a multi-platform OCI layout whose `index.json` is the index of
/// `children` (its digest is the layout's index digest); returns it.
pub fn write_index_layout(dir: &Path, children: &[(&TestImage, &str, &str)]) -> String {
    let images: Vec<&TestImage> = children.iter().map(|(image, _, _)| *image).collect();
    write_layout_blobs(dir, &images);
    let index = index(children);
    std::fs::write(dir.join("index.json"), &index).unwrap();
    sha256(&index)
}

/// A tar of a directory's contents (an OCI layout tarball, as
/// `skopeo copy … oci-archive:` writes).
pub fn tar_dir(dir: &Path, path: &Path) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    builder.append_dir_all(".", dir).unwrap();
    builder.finish().unwrap();
}

/// Deterministic incompressible bytes (xorshift64*).
pub fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_random(&mut out, &mut seed);
    out
}

/// Fills `buf` with xorshift64* output, advancing `seed`: the same seed
/// gives the same bytes, a block at a time for data too big to hold.
pub fn fill_random(buf: &mut [u8], seed: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        let word = seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}
