//! cosign-compatible signatures, key-based: verifying them
//! (`source.cosign_public_key` on `check` and `in`) and the documents `out`
//! signs (`params.sign`, pushed by `put::sign`).
//!
//! Two storage forms are read, as `cosign verify --key` reads them: the
//! `sha256-<hex>.sig` tag of simple-signing payloads, and sigstore bundles
//! (DSSE envelopes) among the digest's OCI 1.1 referrers. Keyless
//! signatures (Fulcio certificates, Rekor entries) need public services
//! this resource does not reach and are refused where configured.

mod keys;
pub mod payload;
mod verify;

pub use keys::{PrivateKey, PublicKey};
pub use verify::{BUNDLE_TYPE_PREFIX, Verdict, signature_tag, verify_digest};

/// The media type of the bundles `out` writes.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
