//! The parts of manifests, indexes and configs this resource reads. Parsed
//! for reading only: the raw bytes are what gets stored and pushed, so
//! digests never change.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Deserialize;

use super::Digest;

/// A content descriptor.
#[derive(Clone, Debug, Deserialize)]
pub struct Descriptor {
    /// The target's media type (empty when the document left it out).
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The target's digest, as written (see [`Descriptor::digest`]).
    pub digest: String,
    /// The target's size in bytes.
    #[serde(default)]
    pub size: u64,
    /// For an index entry: the image's platform.
    #[serde(default)]
    pub platform: Option<PlatformSpec>,
    /// The descriptor's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The digest, parsed (an error names what is wrong with it).
    pub fn digest(&self) -> anyhow::Result<Digest> {
        self.digest
            .parse()
            .context("invalid digest in a descriptor")
    }
}

/// A platform as an index describes a child.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PlatformSpec {
    /// The CPU architecture, e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// The operating system, e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// The CPU variant, e.g. `v7` (empty when not given).
    #[serde(default)]
    pub variant: String,
}

/// An image manifest (OCI or Docker v2).
#[derive(Clone, Debug, Deserialize)]
pub struct ImageManifest {
    /// OCI 1.1: what an artifact is (absent on images).
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, lowest first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI index or Docker manifest list).
#[derive(Clone, Debug, Deserialize)]
pub struct ImageIndex {
    /// The manifests the index lists.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// The index's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// What `check` and `in` read from an image config.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfig {
    /// When the image was built (RFC 3339), if it says.
    #[serde(default)]
    pub created: Option<String>,
    /// How a container of the image runs.
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    /// The platform the image is for (`os`, `architecture`, `variant`).
    #[serde(flatten)]
    pub platform: PlatformSpec,
}

/// The run configuration inside an image config (Docker's capitalised keys).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ContainerConfig {
    /// `Cmd`.
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// `Entrypoint`.
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Env`, `NAME=value` each.
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    /// `User`.
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    /// `Labels`.
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Parses an image manifest (OCI or Docker schema 2).
pub fn parse_manifest(bytes: &[u8]) -> anyhow::Result<ImageManifest> {
    serde_json::from_slice(bytes).context("invalid image manifest")
}

/// Parses an index (OCI index or Docker manifest list).
pub fn parse_index(bytes: &[u8]) -> anyhow::Result<ImageIndex> {
    serde_json::from_slice(bytes).context("invalid image index")
}

/// Parses the parts of an image config `check` and `in` read.
pub fn parse_config(bytes: &[u8]) -> anyhow::Result<ImageConfig> {
    serde_json::from_slice(bytes).context("invalid image config")
}
