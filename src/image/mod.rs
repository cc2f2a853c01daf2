//! The OCI image model: digests, media types, manifests, platforms.

pub mod compression;
pub mod digest;
pub mod entry_path;
pub mod manifest;
pub mod media_type;
pub mod platform;
pub mod raw_manifest;
pub mod tree;
pub mod tree_layer;

pub use digest::Digest;
pub use platform::Platform;
