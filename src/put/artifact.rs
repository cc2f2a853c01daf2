//! `params.artifact`: files pushed as an OCI 1.1 artifact, as ORAS pushes
//! them: a manifest with `artifactType`, one layer per file holding the
//! file's bytes as they are (no tar), titled with the file's base name
//! (`org.opencontainers.image.title`).
//!
//! The config: with `metadata`, that JSON file, typed as the artifact type
//! (so image-spec 1.0 readers, which look for the type in
//! `config.mediaType`, find it too); without, the empty descriptor. With no
//! files at all, the one layer is the empty descriptor, as the image spec
//! advises.
//!
//! Files are hashed while they are uploaded (chunked, resumable): a
//! multi-GB disk image is read once and never held in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use super::blob_source::BlobData;
use super::paths::{PathParam, locate_all};
use super::push::Pusher;
use super::store::FileSlice;
use crate::image::tree::RawManifest;
use crate::image::{Digest, media_type};
use crate::source::ArtifactParams;

/// The layer type of a file when none is given: the bytes are the file's,
/// not a tar (ORAS's default, `…layer.v1.tar`, would say otherwise).
const DEFAULT_FILE_TYPE: &str = "application/octet-stream";
/// The empty descriptor's blob.
pub const EMPTY_JSON: &[u8] = b"{}";
/// Files one artifact may hold (a bound on what a glob can pull in).
const MAX_FILES: usize = 1000;
/// The metadata JSON is a config: registries limit those (4 MiB is what
/// the distribution spec asks them to accept for manifests).
const MAX_METADATA_BYTES: u64 = 4 << 20;

/// An artifact checked and ready to push.
#[derive(Debug)]
pub struct ArtifactInput {
    pub files: Vec<ArtifactFile>,
    /// The config blob and its media type.
    pub config: (Bytes, String),
    artifact_type: String,
    layer_type: String,
    annotations: BTreeMap<String, String>,
}

/// One file: its layer's title and its bytes.
#[derive(Debug)]
pub struct ArtifactFile {
    pub title: String,
    pub data: FileSlice,
}

impl ArtifactInput {
    /// Resolves the globs under `src` and checks everything before the
    /// network is used.
    pub fn prepare(src: &Path, params: &ArtifactParams) -> anyhow::Result<Self> {
        let artifact_type = params.artifact_type.trim();
        if artifact_type.is_empty() {
            bail!(
                "params.artifact.artifact_type is required: the media type saying what the \
                 files are (e.g. application/vnd.example.vm-image.v1)"
            );
        }
        if !media_type::is_valid(artifact_type) {
            bail!(
                "params.artifact.artifact_type {artifact_type:?} is not a media type (type/subtype)"
            );
        }
        let layer_type = match params.media_type.trim() {
            "" => DEFAULT_FILE_TYPE,
            given if media_type::is_valid(given) => given,
            given => {
                bail!("params.artifact.media_type {given:?} is not a media type (type/subtype)")
            }
        };
        if let Some(key) = params.annotations.keys().find(|k| k.trim().is_empty()) {
            bail!("params.artifact.annotations: {key:?} is not an annotation key");
        }
        let mut files: Vec<ArtifactFile> = Vec::new();
        for pattern in &params.files {
            if pattern.trim().is_empty() {
                bail!("params.artifact.files: an empty glob");
            }
            for path in locate_all(
                src,
                PathParam::new("params.artifact.files", pattern),
                MAX_FILES,
            )? {
                let file = artifact_file(&path)
                    .with_context(|| format!("params.artifact.files: {pattern:?}"))?;
                if let Some(twin) = files.iter().find(|f| f.title == file.title) {
                    bail!(
                        "params.artifact.files: {} and {} would both be titled {:?} \
                         (a layer's title is its file's base name)",
                        twin.data.path.display(),
                        file.data.path.display(),
                        file.title
                    );
                }
                files.push(file);
                if files.len() > MAX_FILES {
                    bail!("params.artifact.files: more than {MAX_FILES} files");
                }
            }
        }
        let config = if params.metadata.is_empty() {
            (
                Bytes::from_static(EMPTY_JSON),
                media_type::OCI_EMPTY.to_owned(),
            )
        } else {
            let path = super::paths::locate(
                src,
                PathParam::new("params.artifact.metadata", &params.metadata),
            )?;
            (read_metadata(&path)?, artifact_type.to_owned())
        };
        Ok(ArtifactInput {
            files,
            config,
            artifact_type: artifact_type.to_owned(),
            layer_type: layer_type.to_owned(),
            annotations: params.annotations.clone(),
        })
    }

    /// The manifest for the pushed config and files (in `files` order),
    /// each (digest, size).
    pub fn manifest_bytes(&self, config: (&Digest, u64), files: &[(Digest, u64)]) -> Vec<u8> {
        let config_descriptor = if self.config.1 == media_type::OCI_EMPTY {
            empty_descriptor()
        } else {
            json!({"mediaType": self.config.1, "digest": config.0.to_string(), "size": config.1})
        };
        let layers: Vec<Value> = if self.files.is_empty() {
            vec![empty_descriptor()]
        } else {
            self.files
                .iter()
                .zip(files)
                .map(|(file, (digest, size))| {
                    json!({
                        "mediaType": self.layer_type,
                        "digest": digest.to_string(),
                        "size": size,
                        "annotations": {media_type::TITLE_ANNOTATION: file.title},
                    })
                })
                .collect()
        };
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "artifactType": self.artifact_type,
            "config": config_descriptor,
            "layers": layers,
        });
        if !self.annotations.is_empty() {
            manifest["annotations"] = json!(self.annotations);
        }
        serde_json::to_vec(&manifest).unwrap_or_default()
    }
}

/// The OCI 1.1 empty descriptor, its two bytes inline.
pub(super) fn empty_descriptor() -> Value {
    json!({
        "mediaType": media_type::OCI_EMPTY,
        "digest": Digest::sha256_of(EMPTY_JSON).to_string(),
        "size": EMPTY_JSON.len(),
        "data": "e30=",
    })
}

/// A regular file (symlinks followed) and its title, its base name.
fn artifact_file(path: &Path) -> anyhow::Result<ArtifactFile> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file (pack a directory with params.package, or archive it first)",
            path.display()
        );
    }
    let title = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no UTF-8 file name to title it with", path.display()))?
        .to_owned();
    Ok(ArtifactFile {
        title,
        data: FileSlice {
            path: Arc::new(PathBuf::from(path)),
            offset: 0,
            len: meta.len(),
        },
    })
}

/// The metadata file's bytes, as they are, once they parsed as JSON.
fn read_metadata(path: &Path) -> anyhow::Result<Bytes> {
    let slice = FileSlice {
        path: Arc::new(path.to_path_buf()),
        offset: 0,
        len: std::fs::metadata(path)
            .with_context(|| format!("params.artifact.metadata: reading {}", path.display()))?
            .len(),
    };
    let bytes = slice
        .read_all(MAX_METADATA_BYTES)
        .with_context(|| format!("params.artifact.metadata: reading {}", path.display()))?;
    serde_json::from_slice::<Value>(&bytes)
        .with_context(|| format!("params.artifact.metadata: {} is not JSON", path.display()))?;
    Ok(Bytes::from(bytes))
}

impl Pusher<'_> {
    /// An artifact: the config and the files, each file hashed while it
    /// is uploaded; then the manifest naming them.
    pub(super) async fn push_artifact(
        &self,
        artifact: ArtifactInput,
    ) -> anyhow::Result<RawManifest> {
        let (config, _) = &artifact.config;
        let config_digest = Digest::sha256_of(config);
        let config_size = config.len() as u64;
        let total = artifact.files.len();
        let mut jobs = vec![self.memory_job(config.clone(), &config_digest, "config")];
        // No files: the one layer is the empty descriptor, whose `{}`
        // must be in the repository too.
        if artifact.files.is_empty() && config.as_ref() != EMPTY_JSON {
            let empty = Bytes::from_static(EMPTY_JSON);
            let digest = Digest::sha256_of(&empty);
            jobs.push(self.memory_job(empty, &digest, "empty layer"));
        }
        let first_file = jobs.len();
        for (i, file) in artifact.files.iter().enumerate() {
            let label = format!("file {}/{total} {}", i + 1, file.title);
            jobs.push(self.job(BlobData::Slice(file.data.clone()), &label, None));
        }
        let outcomes = self.upload(jobs).await?;
        let files: Vec<(Digest, u64)> = outcomes[first_file..]
            .iter()
            .map(|o| (o.digest.clone(), o.size))
            .collect();
        let bytes = artifact.manifest_bytes((&config_digest, config_size), &files);
        Ok(RawManifest::new(bytes, media_type::OCI_MANIFEST))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(files: &[&str]) -> ArtifactParams {
        ArtifactParams {
            files: files.iter().map(|f| f.to_string()).collect(),
            artifact_type: "application/vnd.example.disk.v1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn files_are_titled_by_base_name_and_twins_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("a/disk.raw"), b"x").unwrap();
        std::fs::write(dir.path().join("b/disk.raw"), b"y").unwrap();
        let one = ArtifactInput::prepare(dir.path(), &params(&["a/*.raw"])).unwrap();
        assert_eq!(one.files[0].title, "disk.raw");
        let err = ArtifactInput::prepare(dir.path(), &params(&["*/disk.raw"])).unwrap_err();
        assert!(format!("{err:#}").contains("both be titled"), "{err:#}");
        let err = ArtifactInput::prepare(dir.path(), &params(&["a"])).unwrap_err();
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
    }

    #[test]
    fn manifest_names_type_titles_and_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("disk.qcow2"), b"disk").unwrap();
        let input = ArtifactInput::prepare(dir.path(), &params(&["disk.qcow2"])).unwrap();
        let digest = Digest::sha256_of(b"disk");
        let bytes =
            input.manifest_bytes((&Digest::sha256_of(EMPTY_JSON), 2), &[(digest.clone(), 4)]);
        let manifest: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(manifest["artifactType"], "application/vnd.example.disk.v1");
        assert_eq!(manifest["config"]["mediaType"], media_type::OCI_EMPTY);
        assert_eq!(
            manifest["layers"][0]["annotations"][media_type::TITLE_ANNOTATION],
            "disk.qcow2"
        );
        assert_eq!(manifest["layers"][0]["digest"], digest.to_string());
        assert!(manifest.get("annotations").is_none());
    }

    #[test]
    fn bad_types_and_metadata_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meta.json"), b"{not json").unwrap();
        let mut bad = params(&[]);
        bad.artifact_type = "vm image".into();
        assert!(ArtifactInput::prepare(dir.path(), &bad).is_err());
        let mut bad = params(&[]);
        bad.artifact_type.clear();
        assert!(ArtifactInput::prepare(dir.path(), &bad).is_err());
        let mut bad = params(&[]);
        bad.metadata = "meta.json".into();
        let err = ArtifactInput::prepare(dir.path(), &bad).unwrap_err();
        assert!(format!("{err:#}").contains("is not JSON"), "{err:#}");
    }
}
