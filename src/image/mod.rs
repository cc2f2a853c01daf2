//! The OCI image model: digests and media types.

pub mod digest;
pub mod media_type;

pub use digest::Digest;
