//! cosign-compatible signatures: verifying them (`check`, `in`, the copy's
//! origin, the `verify` verb) and the documents `out` signs (`params.sign`,
//! pushed by `put::sign`).
//!
//! Two storage forms are read, as `cosign verify` reads them: the
//! `sha256-<hex>.sig` tag of simple-signing payloads, and sigstore bundles
//! among the digest's OCI 1.1 referrers. Two policies: a key
//! (`source.cosign_public_key`), or keyless, an identity and an OIDC issuer
//! in a Fulcio certificate checked offline against a Sigstore trusted root
//! (`source.cosign_certificate_*`, [`KeylessPolicy`]).

mod bundle;
mod certificate;
mod keyless;
mod keys;
pub mod payload;
mod transparency;
pub mod trusted_root;
mod verify;

pub use keyless::{KeylessPolicy, Matcher};
pub use keys::{PrivateKey, PublicKey};
pub use trusted_root::TrustedRoot;
pub use verify::{BUNDLE_TYPE_PREFIX, SignaturePolicy, Verdict, signature_tag, verify_digest};

/// The media type of the bundles `out` writes.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
