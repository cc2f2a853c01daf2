//! `params.sign`: cosign signatures of every manifest a put pushed (the
//! top one and, for an index, each manifest below it), in cosign's classic
//! `sha256-<hex>.sig` tag form (the default) or as sigstore bundles pushed
//! as OCI 1.1 referrers (`format: bundle`).
//!
//! Both are idempotent: ECDSA signatures here are deterministic (RFC 6979)
//! and Ed25519's always are, so signing the same digest again with the same
//! key makes the same layer (left as it is) or the same bundle manifest.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};

use super::artifact::{EMPTY_JSON, empty_descriptor};
use super::paths::PathParam;
use super::push::{Pushed, Pusher};
use crate::image::tree::{ImageTree, RawManifest};
use crate::image::{Digest, media_type};
use crate::reference::Target;
use crate::sign::payload::{
    IN_TOTO_PAYLOAD_TYPE, SIGN_PREDICATE, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, pae,
    simple_signing, statement,
};
use crate::sign::{BUNDLE_MEDIA_TYPE, PrivateKey, signature_tag};
use crate::source::SignParams;

/// The password variable cosign reads.
const COSIGN_PASSWORD: &str = "COSIGN_PASSWORD";

/// Where signatures go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignFormat {
    /// `sha256-<hex>.sig`.
    Tag,
    /// A sigstore bundle referring to the manifest.
    Bundle,
}

/// A signing key and where its signatures go, read before anything is
/// pushed (a wrong password fails the step before the registry sees it).
#[derive(Debug)]
pub struct Signer {
    key: PrivateKey,
    format: SignFormat,
}

impl Signer {
    /// Reads `params.sign`; `key` is a PEM or a glob under `src`.
    pub fn load(params: &SignParams, src: &Path) -> anyhow::Result<Self> {
        let format = match params.format.as_str() {
            "" | "tag" => SignFormat::Tag,
            "bundle" => SignFormat::Bundle,
            other => bail!("params.sign.format {other:?}: must be 'tag' or 'bundle'"),
        };
        let key = params.key.expose().trim();
        if key.is_empty() {
            bail!(
                "params.sign.key is required (keyless signing needs Fulcio and Rekor, which this \
                 resource does not reach)"
            );
        }
        // The value is a key or a path, and may be a key in a form this
        // resource does not read: no message quotes it. A value with the
        // armour anywhere, or with a line break (which no path has), is a
        // key; anything else a path.
        let pem = if key.contains("-----BEGIN") || key.contains('\n') {
            key.to_owned()
        } else {
            let path = super::paths::locate(src, PathParam::secret("params.sign.key", key))?;
            std::fs::read_to_string(&path).map_err(|e| {
                anyhow!(
                    "params.sign.key: the file it names cannot be read as text ({})",
                    e.kind()
                )
            })?
        };
        let password = password(params)?;
        let key = PrivateKey::from_pem(&pem, password.as_bytes()).context("params.sign.key")?;
        Ok(Signer { key, format })
    }
}

/// The key's password: `password`, else the variable `password_env` names,
/// else `COSIGN_PASSWORD`, else empty (cosign's own order for the last two).
fn password(params: &SignParams) -> anyhow::Result<String> {
    let given = params.password.expose();
    match (given.is_empty(), params.password_env.is_empty()) {
        (false, false) => {
            bail!("params.sign.password and params.sign.password_env cannot both be set")
        }
        (false, true) => Ok(given.to_owned()),
        (true, false) => std::env::var(&params.password_env).with_context(|| {
            format!(
                "params.sign.password_env names {}, which is not set",
                params.password_env
            )
        }),
        (true, true) => Ok(std::env::var(COSIGN_PASSWORD).unwrap_or_default()),
    }
}

impl Pusher<'_> {
    /// Signs what a put pushed: the top manifest and every manifest
    /// below it; the digests signed. `served` is the digest the tag is
    /// served as: when the registry serves another than the one pushed,
    /// that one is read back and signed instead. `reference` is the
    /// repository the signatures name (cosign's `docker-reference`).
    pub async fn sign(
        &self,
        signer: &Signer,
        reference: &str,
        served: &Digest,
        pushed: &Pushed,
    ) -> anyhow::Result<Vec<Digest>> {
        let read_back;
        let manifests: Vec<&RawManifest> = if *served == pushed.top.digest {
            std::iter::once(&pushed.top)
                .chain(&pushed.children)
                .collect()
        } else {
            let top = self
                .client
                .get_manifest(self.repo, &Target::Digest(served.clone()))
                .await?
                .with_context(|| format!("{}@{served} was pushed but is not found", self.repo))?;
            read_back = ImageTree::read(&self.client.manifests_of(self.repo), top).await?;
            read_back.manifests().collect()
        };
        let mut signed = Vec::with_capacity(manifests.len());
        for manifest in manifests {
            let digest = manifest.digest.clone();
            match signer.format {
                SignFormat::Tag => self.sign_in_tag(signer, reference, &digest).await?,
                SignFormat::Bundle => {
                    let subject = json!({
                        "mediaType": manifest.media_type,
                        "digest": digest.to_string(),
                        "size": manifest.bytes.len(),
                    });
                    self.sign_as_bundle(signer, &digest, subject).await?
                }
            }
            signed.push(digest);
        }
        Ok(signed)
    }

    /// Adds a signature layer to `digest`'s `.sig` manifest (made when
    /// missing); an identical layer already there is left alone.
    async fn sign_in_tag(
        &self,
        signer: &Signer,
        reference: &str,
        digest: &Digest,
    ) -> anyhow::Result<()> {
        let payload = simple_signing(reference, digest);
        let signature = STANDARD.encode(signer.key.sign(&payload));
        let payload_digest = Digest::sha256_of(&payload);
        let tag = signature_tag(digest);
        let mut layers = match self
            .client
            .get_manifest(self.repo, &Target::Tag(tag.clone()))
            .await?
        {
            None => Vec::new(),
            Some(existing) => {
                let existing: Value = serde_json::from_slice(&existing.bytes)
                    .ok()
                    .filter(|m: &Value| m["layers"].is_array())
                    .with_context(|| {
                        format!(
                            "{}:{tag} exists but is not a signature manifest; not replacing it",
                            self.repo
                        )
                    })?;
                existing["layers"].as_array().cloned().unwrap_or_default()
            }
        };
        let present = layers.iter().any(|l| {
            l["digest"] == payload_digest.to_string()
                && l["annotations"][SIGNATURE_ANNOTATION] == signature.as_str()
        });
        if present {
            tracing::info!("{}:{tag} already holds this signature", self.repo);
            return Ok(());
        }
        layers.push(json!({
            "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
            "size": payload.len(),
            "digest": payload_digest.to_string(),
            "annotations": {SIGNATURE_ANNOTATION: signature},
        }));
        // An image config listing the layers, as cosign's `.sig` images have.
        let diff_ids: Vec<&Value> = layers.iter().map(|l| &l["digest"]).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {},
        }))?;
        let config_digest = Digest::sha256_of(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": {
                "mediaType": media_type::OCI_CONFIG,
                "size": config.len(),
                "digest": config_digest.to_string(),
            },
            "layers": layers,
        }))?;
        self.upload(vec![
            self.memory_job(Bytes::from(payload), &payload_digest, "signature payload"),
            self.memory_job(Bytes::from(config), &config_digest, "signature config"),
        ])
        .await?;
        self.client
            .put_manifest(
                self.repo,
                &tag,
                media_type::OCI_MANIFEST,
                &Bytes::from(manifest),
            )
            .await?;
        tracing::info!("signed {digest} ({}:{tag})", self.repo);
        Ok(())
    }

    /// Pushes a sigstore bundle signing `digest` as a referrer of it
    /// (`subject`), listed in the fallback index where the registry has no
    /// referrers API.
    async fn sign_as_bundle(
        &self,
        signer: &Signer,
        digest: &Digest,
        subject: Value,
    ) -> anyhow::Result<()> {
        let statement = statement(digest);
        let signature = signer.key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &statement));
        // The key's hint, as cosign writes it: base64 of the SHA-256 of its DER.
        let key_der = signer.key.public_key().der();
        let hint = STANDARD.encode(<sha2::Sha256 as sha2::Digest>::digest(&key_der));
        let bundle = serde_json::to_vec(&json!({
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": STANDARD.encode(&statement),
                "payloadType": IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": STANDARD.encode(signature), "keyid": ""}],
            },
        }))?;
        let bundle_digest = Digest::sha256_of(&bundle);
        let annotations = json!({
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": SIGN_PREDICATE,
        });
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "artifactType": BUNDLE_MEDIA_TYPE,
            "config": empty_descriptor(),
            "layers": [{
                "mediaType": BUNDLE_MEDIA_TYPE,
                "size": bundle.len(),
                "digest": bundle_digest.to_string(),
            }],
            "subject": subject,
            "annotations": annotations,
        }))?;
        let manifest_digest = Digest::sha256_of(&manifest);
        let bundle_len = bundle.len();
        self.upload(vec![
            self.memory_job(Bytes::from(bundle), &bundle_digest, "signature bundle"),
            self.memory_job(
                Bytes::from_static(EMPTY_JSON),
                &Digest::sha256_of(EMPTY_JSON),
                "empty config",
            ),
        ])
        .await?;
        let size = manifest.len();
        self.client
            .put_manifest(
                self.repo,
                &manifest_digest.to_string(),
                media_type::OCI_MANIFEST,
                &Bytes::from(manifest),
            )
            .await
            .map_err(|e| {
                // Registries without OCI 1.1 referrers may refuse any
                // manifest with a `subject` (Docker Hub until about 2023
                // with 404, ECR with 405 for an index subject;
                // registry-quirks.md §2, §4): say what to do instead.
                let refused = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<crate::registry::StatusError>())
                    .is_some_and(|s| s.status.is_client_error());
                if refused {
                    e.context(
                        "the registry refused the bundle's manifest, which names the image as its \
                         subject (an OCI 1.1 referrer); sign with params.sign.format: tag (the \
                         default) on this registry",
                    )
                } else {
                    e
                }
            })?;
        let descriptor = json!({
            "mediaType": media_type::OCI_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": size,
            "artifactType": BUNDLE_MEDIA_TYPE,
            "annotations": annotations,
        });
        self.add_referrers(digest, &[descriptor]).await?;
        tracing::info!("signed {digest} (bundle {manifest_digest}, {bundle_len} bytes)");
        Ok(())
    }
}
