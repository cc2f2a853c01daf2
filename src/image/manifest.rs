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
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<PlatformSpec>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn digest(&self) -> anyhow::Result<Digest> {
        self.digest
            .parse()
            .context("invalid digest in a descriptor")
    }
}

/// A platform as an index describes a child.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PlatformSpec {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: String,
}

/// An image manifest (OCI or Docker v2).
#[derive(Clone, Debug, Deserialize)]
pub struct ImageManifest {
    /// OCI 1.1: what an artifact is (absent on images).
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI index or Docker manifest list).
#[derive(Clone, Debug, Deserialize)]
pub struct ImageIndex {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// What `check` and `in` read from an image config.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
}

/// The run configuration inside an image config (Docker's capitalised keys).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

pub fn parse_manifest(bytes: &[u8]) -> anyhow::Result<ImageManifest> {
    serde_json::from_slice(bytes).context("invalid image manifest")
}

pub fn parse_index(bytes: &[u8]) -> anyhow::Result<ImageIndex> {
    serde_json::from_slice(bytes).context("invalid image index")
}

pub fn parse_config(bytes: &[u8]) -> anyhow::Result<ImageConfig> {
    serde_json::from_slice(bytes).context("invalid image config")
}
