//! Storing signatures the way cosign stores them, for tests that sign with
//! an independent peer: `.sig` manifests of simple-signing layers (with any
//! annotations: key-based or keyless) and sigstore bundles as referrers
//! (through the fallback tag: the CNCF registry has no referrers API).

use serde_json::{Value, json};

use super::TestRegistry;
use super::image::sha256;

pub const SIG_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIG_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The tag of `digest`'s `.sig` manifest.
pub fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// cosign's simple-signing payload for `digest`.
pub fn payload(reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"critical": {"identity": {"docker-reference": reference},
        "image": {"docker-manifest-digest": digest},
        "type": "cosign container image signature"}, "optional": null}),
    )
    .unwrap()
}

/// Stores a `.sig` manifest for `digest` holding `layers` of (payload,
/// annotations).
pub fn push_sig_layers(
    registry: &TestRegistry,
    repo: &str,
    digest: &str,
    layers: &[(Vec<u8>, Value)],
) {
    let mut descriptors = Vec::new();
    for (payload, annotations) in layers {
        let blob = registry.put_blob(repo, payload);
        descriptors.push(json!({
            "mediaType": SIG_LAYER, "size": payload.len(), "digest": blob,
            "annotations": annotations,
        }));
    }
    let config = serde_json::to_vec(&json!({"architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": []}}))
    .unwrap();
    let config_digest = registry.put_blob(repo, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "size": config.len(), "digest": config_digest},
        "layers": descriptors,
    }))
    .unwrap();
    registry.put_manifest(repo, &sig_tag(digest), OCI_MANIFEST, &manifest);
}

/// Stores `bundle` as a referrer of `digest`: a manifest whose subject is
/// `digest`, listed in the fallback tag's index (replacing the list).
pub fn push_bundle_referrer(registry: &TestRegistry, repo: &str, digest: &str, bundle: &[u8]) {
    let bundle_digest = registry.put_blob(repo, bundle);
    let empty = registry.put_blob(repo, b"{}");
    let (subject, subject_type) = registry.manifest(repo, digest);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": empty},
        "layers": [{"mediaType": BUNDLE, "size": bundle.len(), "digest": bundle_digest}],
        "subject": {"mediaType": subject_type, "size": subject.len(), "digest": digest},
    }))
    .unwrap();
    let manifest_digest = registry.put_manifest(repo, &sha256(&manifest), OCI_MANIFEST, &manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "size": manifest.len(),
                       "digest": manifest_digest, "artifactType": BUNDLE}],
    }))
    .unwrap();
    registry.put_manifest(repo, &digest.replacen(':', "-", 1), OCI_INDEX, &index);
}
