//! Finding a valid cosign signature of a digest in its repository: the
//! `sha256-<hex>.sig` tag (cosign's classic form), then sigstore bundles
//! among the digest's referrers (cosign 3's form). One signature that
//! satisfies the policy (made with the key, or keyless by the identity
//! asked for) and names the digest is enough, as for `cosign verify`.
//!
//! Everything read is bounded: at most [`MAX_EXAMINED`] signatures per
//! form, each blob verified against its digest and size-capped by the
//! client.

use anyhow::bail;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::keyless::KeylessPolicy;
use super::keys::PublicKey;
use super::payload::{
    SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, check_bundle, check_simple_signing,
};
use crate::image::Digest;
use crate::image::manifest::parse_manifest;
use crate::reference::{Repository, Target};
use crate::registry::RegistryClient;
use crate::registry::referrers::fallback_tag;

/// Signatures examined per form; a registry serving more gets the first.
const MAX_EXAMINED: usize = 32;
/// A signature payload or bundle larger than this is not one (cosign's are
/// a few hundred bytes to a few KiB); it is neither fetched nor read past.
pub const MAX_SIGNATURE_BYTES: usize = 1 << 20;
pub use super::bundle::BUNDLE_TYPE_PREFIX;

/// What makes a signature count.
#[derive(Debug, Clone)]
pub enum SignaturePolicy {
    /// Made with this key (`source.cosign_public_key`).
    Key(PublicKey),
    /// Keyless, by an identity and issuer (`source.cosign_certificate_*`).
    Keyless(Box<KeylessPolicy>),
}

impl SignaturePolicy {
    /// What a refusal names as the policy.
    fn describe(&self) -> String {
        match self {
            SignaturePolicy::Key(_) => "that verifies with source.cosign_public_key".to_owned(),
            SignaturePolicy::Keyless(policy) => {
                format!("by {} through {}", policy.identity, policy.issuer)
            }
        }
    }

    /// Checks one `.sig` layer's signature of `payload`.
    fn check_layer(
        &self,
        annotations: &std::collections::BTreeMap<String, String>,
        payload: &[u8],
        signature: &[u8],
    ) -> anyhow::Result<()> {
        match self {
            SignaturePolicy::Key(key) => {
                if !key.verifies(payload, signature) {
                    bail!("the signature does not verify with the key");
                }
                Ok(())
            }
            SignaturePolicy::Keyless(policy) => {
                policy.verify_signature_layer(annotations, payload, signature)
            }
        }
    }

    /// Checks one bundle as a signature of `digest`.
    fn check_bundle(&self, bundle: &[u8], digest: &Digest) -> anyhow::Result<()> {
        match self {
            SignaturePolicy::Key(key) => check_bundle(bundle, key, digest),
            SignaturePolicy::Keyless(policy) => policy.verify_bundle(bundle, digest),
        }
    }
}

/// The tag holding `digest`'s classic cosign signatures.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}.sig", fallback_tag(digest))
}

/// What verifying a digest found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A valid signature, and where it was (for the log).
    Signed(String),
    /// None: what was looked at and why nothing counted.
    Unsigned(String),
}

impl Verdict {
    /// `Signed`'s place, or `Unsigned`'s reason as an error.
    pub fn require(self) -> anyhow::Result<String> {
        match self {
            Verdict::Signed(found) => Ok(found),
            Verdict::Unsigned(why) => bail!("{why}"),
        }
    }
}

/// Looks for a signature of `digest` that satisfies `policy`. Registry
/// failures are errors, never taken for "unsigned".
pub async fn verify_digest(
    client: &RegistryClient,
    repo: &Repository,
    digest: &Digest,
    policy: &SignaturePolicy,
) -> anyhow::Result<Verdict> {
    let mut seen = Vec::new();
    if let Some(found) = from_signature_tag(client, repo, digest, policy, &mut seen).await? {
        return Ok(Verdict::Signed(found));
    }
    if let Some(found) = from_bundles(client, repo, digest, policy, &mut seen).await? {
        return Ok(Verdict::Signed(found));
    }
    Ok(Verdict::Unsigned(if seen.is_empty() {
        format!(
            "{repo}@{digest} is not signed: no {} tag and no sigstore bundle among its referrers",
            signature_tag(digest)
        )
    } else {
        format!(
            "{repo}@{digest} has no signature {} ({})",
            policy.describe(),
            seen.join("; ")
        )
    }))
}

async fn from_signature_tag(
    client: &RegistryClient,
    repo: &Repository,
    digest: &Digest,
    policy: &SignaturePolicy,
    seen: &mut Vec<String>,
) -> anyhow::Result<Option<String>> {
    let tag = signature_tag(digest);
    let Some(manifest) = client.get_manifest(repo, &Target::Tag(tag.clone())).await? else {
        return Ok(None);
    };
    let manifest = match parse_manifest(&manifest.bytes) {
        Ok(manifest) => manifest,
        Err(e) => {
            seen.push(format!("{tag}: {e:#}"));
            return Ok(None);
        }
    };
    for (i, layer) in manifest.layers.iter().take(MAX_EXAMINED).enumerate() {
        let what = format!("{tag} layer {}", i + 1);
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
            seen.push(format!("{what}: a {:?}, not a signature", layer.media_type));
            continue;
        }
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            seen.push(format!("{what}: no {SIGNATURE_ANNOTATION} annotation"));
            continue;
        };
        let Ok(signature) = STANDARD.decode(signature.trim()) else {
            seen.push(format!("{what}: the signature is not base64"));
            continue;
        };
        let Ok(payload_digest) = layer.digest() else {
            seen.push(format!("{what}: an invalid digest"));
            continue;
        };
        if layer.size > MAX_SIGNATURE_BYTES as u64 {
            seen.push(format!(
                "{what}: {} bytes, larger than a signature",
                layer.size
            ));
            continue;
        }
        let payload = client
            .get_blob_up_to(repo, &payload_digest, MAX_SIGNATURE_BYTES)
            .await?;
        if let Err(e) = policy.check_layer(&layer.annotations, &payload, &signature) {
            seen.push(format!("{what}: {e:#}"));
            continue;
        }
        match check_simple_signing(&payload, digest) {
            Ok(()) => return Ok(Some(what)),
            Err(e) => seen.push(format!("{what}: {e:#}")),
        }
    }
    Ok(None)
}

async fn from_bundles(
    client: &RegistryClient,
    repo: &Repository,
    digest: &Digest,
    policy: &SignaturePolicy,
    seen: &mut Vec<String>,
) -> anyhow::Result<Option<String>> {
    let referrers = client.referrers(repo, digest).await?;
    let bundles = referrers.iter().filter(|d| {
        d["artifactType"]
            .as_str()
            .is_some_and(|t| t.starts_with(BUNDLE_TYPE_PREFIX))
    });
    for descriptor in bundles.take(MAX_EXAMINED) {
        let Some(Ok(manifest_digest)) = descriptor["digest"].as_str().map(str::parse::<Digest>)
        else {
            seen.push("a referrer without a valid digest".to_owned());
            continue;
        };
        let what = format!("bundle {manifest_digest}");
        let Some(manifest) = client
            .get_manifest(repo, &Target::Digest(manifest_digest.clone()))
            .await?
        else {
            seen.push(format!("{what}: listed but not found"));
            continue;
        };
        let manifest = match parse_manifest(&manifest.bytes) {
            Ok(manifest) => manifest,
            Err(e) => {
                seen.push(format!("{what}: {e:#}"));
                continue;
            }
        };
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type.starts_with(BUNDLE_TYPE_PREFIX))
            .take(MAX_EXAMINED)
        {
            let Ok(bundle_digest) = layer.digest() else {
                seen.push(format!("{what}: a layer with an invalid digest"));
                continue;
            };
            if layer.size > MAX_SIGNATURE_BYTES as u64 {
                seen.push(format!(
                    "{what}: {} bytes, larger than a bundle",
                    layer.size
                ));
                continue;
            }
            let bundle = client
                .get_blob_up_to(repo, &bundle_digest, MAX_SIGNATURE_BYTES)
                .await?;
            match policy.check_bundle(&bundle, digest) {
                Ok(()) => return Ok(Some(what)),
                Err(e) => seen.push(format!("{what}: {e:#}")),
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::payload::simple_signing;

    /// A signature published by sigstore-rs as a fixture (see
    /// `tests/data/cosign/README.md`).
    const FIXTURE: &str = include_str!("../../tests/data/cosign/sigstore_rs_cosign_signature.json");

    #[test]
    fn a_published_cosign_signature_verifies_and_our_payload_matches_its_bytes() {
        let fixture: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture");
        let text = |key: &str| fixture[key].as_str().expect("a string field").to_owned();
        let key = PublicKey::from_pem(&text("public_key")).expect("key");
        let digest: Digest = text("digest").parse().expect("digest");
        let payload = text("payload").into_bytes();
        let signature = STANDARD.decode(text("signature")).expect("base64");
        assert!(key.verifies(&payload, &signature));
        check_simple_signing(&payload, &digest).expect("names its digest");
        assert_eq!(simple_signing(&text("docker_reference"), &digest), payload);
        let mut tampered = payload.clone();
        tampered[10] ^= 1;
        assert!(!key.verifies(&tampered, &signature));
    }
}
