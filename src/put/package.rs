//! `params.package`: a directory, or an archive's contents (see
//! `archive.rs`), packed into a reproducible single-layer image. The same files give the same digest whatever their mtimes, the
//! directory order, the umask or the machine: the layer is written by
//! `image::tree_layer` (sorted, 0:0, one mtime) and gzipped by the
//! deterministic `gzip`; the config's keys are sorted; the platform is
//! `linux/amd64` unless given (never this machine's); the one timestamp is
//! `SOURCE_DATE_EPOCH`, else 0.
//!
//! The layer is packed, compressed, hashed (twice: its `diff_id` and its
//! digest) and uploaded in one streaming pass; the config, which names the
//! `diff_id`, follows it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use bytes::Bytes;

use super::archive::{self, ArchiveKind};
use super::base::{self, BaseImage};
use super::blob_source::{BlobData, LocalBlob};
use super::push::{Job, Pusher};
use super::tree_blob::TreeBlob;
pub use super::tree_blob::gzip_tree;
use crate::image::digest::Algorithm;
use crate::image::tree::RawManifest;
use crate::image::tree_layer;
use crate::image::{Digest, media_type};
use crate::source::PackageParams;

/// A directory (or an archive's contents) to push as an image, checked and
/// measured.
#[derive(Debug)]
pub struct PackageImage {
    pub layer: Arc<TreeBlob>,
    config: Value,
    /// `params.package.base`: the image the layer goes on top of.
    pub base: Option<BaseImage>,
    /// Where an archive was unpacked; removed with the package.
    _unpacked: Option<tempfile::TempDir>,
}

impl PackageImage {
    /// Checks `params` against the directory at `path` (everything in it
    /// packable) and the base image at `base` (what `params.base` matched)
    /// before anything is sent.
    pub fn prepare(
        path: &Path,
        params: &PackageParams,
        base: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("params.package.path: reading {}", path.display()))?;
        let (unpacked, root) = if meta.is_dir() {
            (None, path.to_path_buf())
        } else if let Some(kind) = ArchiveKind::of(path) {
            let (dir, root) = archive::unpack(path, kind)
                .with_context(|| format!("params.package.path: unpacking {}", path.display()))?;
            (Some(dir), root)
        } else {
            bail!(
                "params.package.path: {} is not a directory or an archive \
                 (.zip, .tar, .tar.gz, .tgz, .tar.zst)",
                path.display()
            );
        };
        let path = root.as_path();
        let prefix = tree_layer::relative_prefix(Path::new(&params.prefix))
            .context("params.package.prefix")?;
        let stats = tree_layer::measure(path)
            .with_context(|| format!("params.package.path: {}", path.display()))?;
        let mtime = source_date_epoch()?;
        let base = if let Some(base_path) = base {
            let wanted = params.platform.as_ref().map(|p| p.to_image_platform());
            let base = BaseImage::load(base_path, wanted.as_ref())
                .with_context(|| format!("params.package.base: {}", base_path.display()))?;
            if let Some(wanted) = &wanted {
                let has = base::platform_of(base.config());
                if !wanted.matches(Some(&has)) {
                    bail!(
                        "params.package.platform is {wanted}, but the base image is {}",
                        crate::image::platform::describe_one(&has)
                    );
                }
            }
            Some(base)
        } else {
            None
        };
        let config = match &base {
            Some(base) => on_base(base.config(), params, mtime)?,
            None => config(params, mtime)?,
        };
        Ok(PackageImage {
            layer: Arc::new(TreeBlob::new(path.to_path_buf(), prefix, mtime, stats)),
            config,
            base,
            _unpacked: unpacked,
        })
    }

    /// The image config, naming the packed layer (after the base's).
    pub fn config_bytes(&self, diff_id: &Digest) -> Vec<u8> {
        let mut config = self.config.clone();
        let mut diff_ids = match config["rootfs"]["diff_ids"].take() {
            Value::Array(ids) => ids,
            _ => Vec::new(),
        };
        diff_ids.push(json!(diff_id.to_string()));
        config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        serde_json::to_vec(&config).unwrap_or_default()
    }

    /// The image manifest for a config and a layer, each (digest, size).
    pub fn manifest_bytes(config: (&Digest, u64), layer: (&Digest, u64)) -> Vec<u8> {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": {"mediaType": media_type::OCI_CONFIG, "digest": config.0.to_string(), "size": config.1},
            "layers": [{"mediaType": media_type::OCI_LAYER_GZIP, "digest": layer.0.to_string(), "size": layer.1}],
        });
        serde_json::to_vec(&manifest).unwrap_or_default()
    }
}

impl PackageImage {
    /// The base's manifest with the packed layer added and the new config,
    /// its media types following the base's (Docker or OCI).
    pub fn manifest_on_base(
        base: &[u8],
        base_type: &str,
        config: (&Digest, u64),
        layer: (&Digest, u64),
    ) -> anyhow::Result<Vec<u8>> {
        let mut manifest: Value =
            serde_json::from_slice(base).context("the base image's manifest")?;
        let layer_type = if base_type == media_type::DOCKER_MANIFEST {
            media_type::DOCKER_LAYER_GZIP
        } else {
            media_type::OCI_LAYER_GZIP
        };
        let Some(layers) = manifest["layers"].as_array_mut() else {
            bail!("the base image's manifest has no layers list");
        };
        layers
            .push(json!({"mediaType": layer_type, "digest": layer.0.to_string(), "size": layer.1}));
        manifest["config"]["digest"] = json!(config.0.to_string());
        manifest["config"]["size"] = json!(config.1);
        Ok(serde_json::to_vec(&manifest)?)
    }
}

/// `SOURCE_DATE_EPOCH` (a non-negative integer), else 0.
fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH {text:?} is not a Unix time")),
        Err(_) => Ok(0),
    }
}

/// The config without its `rootfs` (known once the layer is packed); keys
/// sorted, fields left out when not given.
fn config(params: &PackageParams, mtime: u64) -> anyhow::Result<Value> {
    let platform = params.platform.clone().unwrap_or_default();
    let (os, architecture) = (
        non_empty(&platform.os, "linux"),
        non_empty(&platform.architecture, "amd64"),
    );
    let created = tree_layer::rfc3339(mtime as i64)?;
    let mut config = json!({
        "architecture": architecture,
        "os": os,
        "created": created,
        "config": settings(params)?,
        "history": [history_entry(&created)],
    });
    if !platform.variant.is_empty() {
        config["variant"] = json!(platform.variant);
    }
    Ok(config)
}

/// The base's config with the package's settings over it: `Entrypoint`,
/// `Cmd`, `WorkingDir`, `User` replaced when given (a new entrypoint drops
/// the base's command, as a Dockerfile's `ENTRYPOINT` does), `Env` and
/// `Labels` merged by name; one more history entry; its own `created`.
/// The base's `rootfs` stays: the packed layer's `diff_id` is appended.
fn on_base(base: &Value, params: &PackageParams, mtime: u64) -> anyhow::Result<Value> {
    let mut config = base.clone();
    if !config.is_object() {
        bail!("the base image's config is not a JSON object");
    }
    let created = tree_layer::rfc3339(mtime as i64)?;
    let mut container = match config["config"].take() {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let given = settings(params)?;
    if given.contains_key("Entrypoint") && !given.contains_key("Cmd") {
        container.remove("Cmd");
    }
    for (key, value) in given {
        match (key.as_str(), container.get_mut(&key)) {
            ("Env", Some(Value::Array(existing))) => {
                for entry in value.as_array().into_iter().flatten() {
                    let name = entry
                        .as_str()
                        .and_then(|e| e.split_once('='))
                        .map(|(n, _)| n);
                    existing.retain(|old| {
                        old.as_str().and_then(|o| o.split_once('=')).map(|(n, _)| n) != name
                    });
                    existing.push(entry.clone());
                }
            }
            ("Labels", Some(Value::Object(existing))) => {
                if let Value::Object(labels) = value {
                    existing.extend(labels);
                }
            }
            _ => {
                container.insert(key, value);
            }
        }
    }
    config["config"] = Value::Object(container);
    config["created"] = json!(created);
    let mut history = match config["history"].take() {
        Value::Array(entries) => entries,
        _ => Vec::new(),
    };
    history.push(history_entry(&created));
    config["history"] = json!(history);
    Ok(config)
}

fn history_entry(created: &str) -> Value {
    json!({"created": created, "created_by": "registry-image out: params.package"})
}

/// The container settings `params` gives, by their config names.
fn settings(params: &PackageParams) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut settings = serde_json::Map::new();
    if let Some(entrypoint) = &params.entrypoint {
        settings.insert("Entrypoint".into(), json!(entrypoint));
    }
    if let Some(cmd) = &params.cmd {
        settings.insert("Cmd".into(), json!(cmd));
    }
    if !params.env.is_empty() {
        for name in params.env.keys() {
            if name.is_empty() || name.contains('=') {
                bail!("params.package.env: {name:?} is not a variable name");
            }
        }
        let env: Vec<String> = params.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        settings.insert("Env".into(), json!(env));
    }
    if !params.workdir.is_empty() {
        settings.insert("WorkingDir".into(), json!(params.workdir));
    }
    if !params.user.is_empty() {
        settings.insert("User".into(), json!(params.user));
    }
    if !params.labels.is_empty() {
        settings.insert("Labels".into(), json!(params.labels));
    }
    Ok(settings)
}

fn non_empty<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

impl Pusher<'_> {
    /// A packed directory: the base image's blobs (if any) and the layer
    /// (packed, gzipped, hashed and uploaded in one pass), then the config
    /// that names its `diff_id`, then a manifest: the base's with one more
    /// layer, or a new one.
    pub(super) async fn push_package(&self, package: PackageImage) -> anyhow::Result<RawManifest> {
        let base_manifest = match &package.base {
            None => None,
            Some(base) => Some(self.push_base(base).await?),
        };
        let layer = self
            .upload(vec![Job {
                expected: None,
                source: LocalBlob::new(
                    BlobData::Tree(package.layer.clone()),
                    Algorithm::Sha256,
                    "package layer",
                    self.progress,
                ),
            }])
            .await?
            .remove(0);
        let diff_id = package
            .layer
            .diff_id()
            .context("the layer was uploaded without being packed")?;
        let config = Bytes::from(package.config_bytes(&diff_id));
        let config_digest = Digest::sha256_of(&config);
        let config_size = config.len() as u64;
        self.upload(vec![self.memory_job(config, &config_digest, "config")])
            .await?;
        let (bytes, manifest_type) = match base_manifest {
            None => (
                PackageImage::manifest_bytes(
                    (&config_digest, config_size),
                    (&layer.digest, layer.size),
                ),
                media_type::OCI_MANIFEST.to_owned(),
            ),
            Some(base) => {
                let bytes = PackageImage::manifest_on_base(
                    &base.bytes,
                    &base.media_type,
                    (&config_digest, config_size),
                    (&layer.digest, layer.size),
                )?;
                (bytes, base.media_type)
            }
        };
        Ok(RawManifest::new(bytes, manifest_type))
    }

    /// Gets a package's base image into the repository: its manifest
    /// (not pushed itself).
    async fn push_base(&self, base: &BaseImage) -> anyhow::Result<RawManifest> {
        match base {
            BaseImage::Layout {
                manifest, blobs, ..
            } => {
                let total = blobs.len() - 1;
                let jobs = blobs
                    .iter()
                    .enumerate()
                    .map(|(i, blob)| {
                        let label = match i {
                            0 => "base config".to_owned(),
                            _ => format!("base layer {i}/{total}"),
                        };
                        self.layout_job(blob, &label)
                    })
                    .collect();
                self.upload(jobs).await?;
                Ok(manifest.clone())
            }
            BaseImage::DockerSave { image, .. } => self.push_docker_save(image, &[]).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_sorted_and_leaves_out_what_is_not_given() {
        let bare = config(&PackageParams::default(), 0).unwrap();
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"architecture":"amd64","config":{},"created":"1970-01-01T00:00:00Z","history":[{"created":"1970-01-01T00:00:00Z","created_by":"registry-image out: params.package"}],"os":"linux"}"#
        );
        let params = PackageParams {
            env: [
                ("B".to_owned(), "2".to_owned()),
                ("A".to_owned(), "1".to_owned()),
            ]
            .into(),
            cmd: Some(vec!["/app/run".into()]),
            ..Default::default()
        };
        let full = config(&params, 0).unwrap();
        assert_eq!(full["config"]["Env"], json!(["A=1", "B=2"]));
        assert_eq!(full["config"]["Cmd"], json!(["/app/run"]));
        let bad = PackageParams {
            env: [("A=B".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        };
        assert!(config(&bad, 0).is_err());
    }
}
