//! Keyless signatures: "signed by this identity, from this OIDC issuer",
//! checked offline against a Sigstore trusted root, as `cosign verify
//! --certificate-identity[-regexp] --certificate-oidc-issuer[-regexp]`
//! checks them.
//!
//! A signature counts when, in this order: its transparency-log entry is
//! signed by a log of the root (SET; the inclusion proof and its checkpoint
//! too when present, always for bundles from v0.2), which fixes the signing
//! time; the entry records this very signature, certificate and message;
//! the certificate chains to a Fulcio CA of the root valid at that time,
//! every certificate of the chain valid then, with an SCT from a CT log of
//! the root; it names the identity and the issuer asked for; its key signs
//! the payload; and the payload names the digest (the caller checks that).
//!
//! Regular expressions must match the whole value (cosign's are unanchored:
//! `--certificate-identity-regexp 'a@b.c'` accepts `xa@b.cz`; here a pattern
//! is anchored, so a prefix or a substring never counts).

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

use super::bundle::Bundle;
use super::certificate::{SigningCertificate, certificates_from_pem};
use super::payload::{IN_TOTO_PAYLOAD_TYPE, check_statement, pae};
use super::transparency::{LogEntry, LoggedSignature};
use super::trusted_root::TrustedRoot;
use crate::image::Digest;

/// cosign's annotation holding the signing certificate, PEM.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// cosign's annotation holding the certificate's chain, PEM.
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// cosign's annotation holding the Rekor entry (SET and body).
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// A compiled pattern larger than this is refused (the regex crate's
/// guard against patterns that blow up when compiled).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How one certificate field must read.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Exactly this string.
    Exact(String),
    /// The whole value matches (the pattern is anchored).
    Pattern(regex::Regex),
}

impl Matcher {
    /// From an exact value or a pattern, exactly one of them set; the
    /// names are the fields (or flags) they came from, for errors.
    pub fn new(exact: &str, pattern: &str, names: (&str, &str)) -> anyhow::Result<Self> {
        let (exact_name, pattern_name) = names;
        match (exact.is_empty(), pattern.is_empty()) {
            (false, true) => Ok(Matcher::Exact(exact.to_owned())),
            (true, false) => regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map(Matcher::Pattern)
                .map_err(|e| anyhow::anyhow!("{pattern_name}: invalid regex pattern: {e}")),
            (false, false) => bail!("set one of {exact_name} and {pattern_name}, not both"),
            (true, true) => bail!(
                "keyless verification needs {exact_name} or {pattern_name} (cosign requires both \
                 an identity and an issuer)"
            ),
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(exact) => exact == value,
            Matcher::Pattern(pattern) => pattern.is_match(value),
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Matcher::Exact(exact) => write!(f, "{exact:?}"),
            Matcher::Pattern(pattern) => write!(f, "/{}/", pattern.as_str()),
        }
    }
}

/// Who must have signed, and the roots that say so.
#[derive(Debug, Clone)]
pub struct KeylessPolicy {
    /// The certificate's SAN identity.
    pub identity: Matcher,
    /// The OIDC issuer Fulcio recorded.
    pub issuer: Matcher,
    /// The trusted root.
    pub root: TrustedRoot,
}

/// A certificate and the signature it must have made, gathered from either
/// storage form.
struct Signed<'a> {
    certificate: SigningCertificate,
    extra_intermediates: Vec<Vec<u8>>,
    entries: Vec<LogEntry>,
    require_proof: bool,
    /// What the log entry must record.
    expected: Expected<'a>,
}

enum Expected<'a> {
    /// A message signature: the message's SHA-256 and the signature.
    Hashed {
        sha256: Vec<u8>,
        signature: &'a [u8],
    },
    /// An envelope: its payload's SHA-256 and the signature.
    Envelope {
        payload_sha256: Vec<u8>,
        signature: &'a [u8],
    },
}

impl KeylessPolicy {
    /// A policy for `identity` through `issuer`, under `root` or, when none
    /// is given, the built-in public-good root.
    pub fn new(
        identity: Matcher,
        issuer: Matcher,
        root: Option<TrustedRoot>,
    ) -> anyhow::Result<Self> {
        let root = match root {
            Some(root) => root,
            None => TrustedRoot::public_good()?,
        };
        Ok(KeylessPolicy {
            identity,
            issuer,
            root,
        })
    }

    /// Checks one `.sig` layer: `payload` (the layer's bytes), its
    /// signature and the layer's annotations. The caller then checks that
    /// the payload names the digest.
    pub fn verify_signature_layer(
        &self,
        annotations: &std::collections::BTreeMap<String, String>,
        payload: &[u8],
        signature: &[u8],
    ) -> anyhow::Result<()> {
        let pem = annotations.get(CERTIFICATE_ANNOTATION).context(
            "no certificate (a key-based signature; keyless verification is configured)",
        )?;
        let certificate = SigningCertificate::from_pem(pem)?;
        let extra_intermediates = match annotations.get(CHAIN_ANNOTATION) {
            // The chain's last certificate is a root: never trusted from
            // here, and not needed to build a path.
            Some(chain) => {
                let mut chain = certificates_from_pem(chain)?;
                chain.pop();
                chain
            }
            None => Vec::new(),
        };
        let rekor = annotations.get(REKOR_BUNDLE_ANNOTATION).context(
            "no transparency-log entry (dev.sigstore.cosign/bundle): the signing time cannot be \
             proven offline",
        )?;
        let entry = legacy_entry(rekor)?;
        let signed = Signed {
            certificate,
            extra_intermediates,
            entries: vec![entry],
            require_proof: false,
            expected: Expected::Hashed {
                sha256: Sha256::digest(payload).to_vec(),
                signature,
            },
        };
        let key = self.verify_signer(&signed)?;
        if !key.verifies(payload, signature) {
            bail!("the signature does not verify with the certificate's key");
        }
        Ok(())
    }

    /// Checks a sigstore bundle (v0.1 to v0.3) as a signature of `digest`:
    /// a DSSE envelope holding cosign's signing statement about it, or a
    /// message signature over it.
    pub fn verify_bundle(&self, bytes: &[u8], digest: &Digest) -> anyhow::Result<()> {
        let bundle = Bundle::parse(bytes)?;
        let der = bundle.certificate()?.context(
            "no certificate (a key-based signature; keyless verification is configured)",
        )?;
        let certificate = SigningCertificate::from_der(&der)?;
        let entries = bundle.log_entries()?;
        let require_proof = bundle.requires_inclusion_proof();
        if let Some(envelope) = &bundle.dsse_envelope {
            if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
                bail!("the envelope's payload type is {:?}", envelope.payload_type);
            }
            let payload = STANDARD
                .decode(&envelope.payload)
                .map_err(|_| anyhow::anyhow!("the envelope's payload is not base64"))?;
            let [signature] = envelope.signatures.as_slice() else {
                bail!(
                    "the envelope holds {} signatures (a keyless bundle holds one)",
                    envelope.signatures.len()
                );
            };
            let signature = STANDARD
                .decode(&signature.sig)
                .map_err(|_| anyhow::anyhow!("the envelope's signature is not base64"))?;
            let signed = Signed {
                certificate,
                extra_intermediates: Vec::new(),
                entries,
                require_proof,
                expected: Expected::Envelope {
                    payload_sha256: Sha256::digest(&payload).to_vec(),
                    signature: &signature,
                },
            };
            let key = self.verify_signer(&signed)?;
            if !key.verifies(&pae(&envelope.payload_type, &payload), &signature) {
                bail!("the envelope's signature does not verify with the certificate's key");
            }
            return check_statement(&payload, digest);
        }
        let message = bundle
            .message_signature
            .as_ref()
            .context("the bundle holds neither a DSSE envelope nor a message signature")?;
        let named = message
            .message_digest
            .as_ref()
            .context("the message signature names no digest")?;
        let named_digest = STANDARD
            .decode(&named.digest)
            .map_err(|_| anyhow::anyhow!("the message digest is not base64"))?;
        if named.algorithm != "SHA2_256" || hex::encode(&named_digest) != digest.hex() {
            bail!("the bundle signs another digest than {digest}");
        }
        let signature = STANDARD
            .decode(&message.signature)
            .map_err(|_| anyhow::anyhow!("the message signature is not base64"))?;
        let signed = Signed {
            certificate,
            extra_intermediates: Vec::new(),
            entries,
            require_proof,
            expected: Expected::Hashed {
                sha256: named_digest.clone(),
                signature: &signature,
            },
        };
        let key = self.verify_signer(&signed)?;
        if !key.verifies_sha256(&named_digest, &signature) {
            bail!("the message signature does not verify with the certificate's key");
        }
        Ok(())
    }

    /// Everything but the signature itself: the log entry, the certificate
    /// at the logged time, and the identity. Returns the certificate's key.
    fn verify_signer(&self, signed: &Signed<'_>) -> anyhow::Result<super::PublicKey> {
        if signed.entries.is_empty() {
            bail!("no transparency-log entry: the signing time cannot be proven offline");
        }
        let mut refusals = Vec::new();
        let mut time = None;
        for entry in &signed.entries {
            match self.verify_entry(entry, signed) {
                Ok(t) => {
                    time = Some(t);
                    break;
                }
                Err(e) => refusals.push(format!("{e:#}")),
            }
        }
        let Some(time) = time else {
            bail!("{}", refusals.join("; "));
        };
        let certificate = &signed.certificate;
        let (not_before, not_after) = certificate.validity();
        if time < not_before || time > not_after {
            bail!(
                "the certificate was not valid when the signature was logged (logged at {time}, \
                 valid {not_before} to {not_after})"
            );
        }
        certificate.verify(&self.root, time, &signed.extra_intermediates)?;
        let issuer = certificate.oidc_issuer()?;
        if !self.issuer.matches(&issuer) {
            bail!(
                "signed through the OIDC issuer {issuer:?}, not {}",
                self.issuer
            );
        }
        let identities = certificate.identities()?;
        if !identities.iter().any(|id| self.identity.matches(id)) {
            bail!(
                "signed by {}, not {}",
                if identities.is_empty() {
                    "no identity".to_owned()
                } else {
                    identities.join(", ")
                },
                self.identity
            );
        }
        certificate.public_key()
    }

    /// One log entry: its proofs, then that it records this signature.
    fn verify_entry(&self, entry: &LogEntry, signed: &Signed<'_>) -> anyhow::Result<i64> {
        if signed.require_proof && entry.proof.is_none() {
            bail!("the log entry has no inclusion proof (required from bundle v0.2)");
        }
        let time = entry.verify(&self.root)?;
        let logged = entry.logged_signature()?;
        let same_certificate = |pem: &str| {
            SigningCertificate::from_pem(pem).is_ok_and(|c| c.der() == signed.certificate.der())
        };
        let recorded = match (&logged, &signed.expected) {
            (
                LoggedSignature::Hashed {
                    sha256,
                    signature,
                    certificate,
                },
                Expected::Hashed {
                    sha256: expected,
                    signature: made,
                },
            ) => sha256 == expected && signature == made && same_certificate(certificate),
            (
                LoggedSignature::Envelope {
                    payload_sha256,
                    signatures,
                },
                Expected::Envelope {
                    payload_sha256: expected,
                    signature: made,
                },
            ) => {
                payload_sha256 == expected
                    && signatures
                        .iter()
                        .any(|(signature, pem)| signature == made && same_certificate(pem))
            }
            _ => false,
        };
        if !recorded {
            bail!("the log entry records another signature, certificate or message");
        }
        Ok(time)
    }
}

/// cosign's `dev.sigstore.cosign/bundle` annotation: the SET and the
/// entry, with capitalised field names.
fn legacy_entry(json: &str) -> anyhow::Result<LogEntry> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Annotation {
        signed_entry_timestamp: String,
        payload: Payload,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Payload {
        body: String,
        integrated_time: i64,
        log_index: i64,
        #[serde(rename = "logID")]
        log_id: String,
    }
    let annotation: Annotation = serde_json::from_str(json)
        .map_err(|e| anyhow::anyhow!("the dev.sigstore.cosign/bundle annotation: {e}"))?;
    let payload = annotation.payload;
    Ok(LogEntry {
        body_base64: payload.body,
        integrated_time: payload.integrated_time,
        log_index: payload.log_index,
        log_id: hex::decode(&payload.log_id)
            .map_err(|_| anyhow::anyhow!("the Rekor entry's logID is not hex"))?,
        set: Some(
            STANDARD
                .decode(&annotation.signed_entry_timestamp)
                .map_err(|_| anyhow::anyhow!("the signed entry timestamp is not base64"))?,
        ),
        proof: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real cosign 3 signature of kubewarden-controller v1.34.0 (see
    /// `tests/data/sigstore/README.md`), verified with the built-in root.
    const KUBEWARDEN: &str =
        include_str!("../../tests/data/sigstore/kubewarden-controller-v1.34.0.sigstore.json");
    const KUBEWARDEN_DIGEST: &str =
        "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
    const KUBEWARDEN_IDENTITY: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
    const GITHUB_ACTIONS: &str = "https://token.actions.githubusercontent.com";

    fn policy(identity: &str, identity_re: &str, issuer: &str) -> KeylessPolicy {
        KeylessPolicy {
            identity: Matcher::new(identity, identity_re, ("identity", "identity_regexp"))
                .expect("identity"),
            issuer: Matcher::new(issuer, "", ("issuer", "issuer_regexp")).expect("issuer"),
            root: TrustedRoot::public_good().expect("root"),
        }
    }

    fn refusal(policy: &KeylessPolicy, bundle: &str, digest: &str) -> String {
        let digest: Digest = digest.parse().expect("digest");
        format!(
            "{:#}",
            policy
                .verify_bundle(bundle.as_bytes(), &digest)
                .expect_err("refused")
        )
    }

    #[test]
    fn a_real_production_signature_verifies_offline_with_the_built_in_root() {
        let digest: Digest = KUBEWARDEN_DIGEST.parse().expect("digest");
        policy(KUBEWARDEN_IDENTITY, "", GITHUB_ACTIONS)
            .verify_bundle(KUBEWARDEN.as_bytes(), &digest)
            .expect("verifies");
        policy(
            "",
            r"https://github\.com/kubewarden/.*/release\.yml@refs/tags/v.*",
            GITHUB_ACTIONS,
        )
        .verify_bundle(KUBEWARDEN.as_bytes(), &digest)
        .expect("a pattern matching the whole identity");
    }

    #[test]
    fn the_real_signature_is_refused_for_anything_else() {
        let good = policy(KUBEWARDEN_IDENTITY, "", GITHUB_ACTIONS);
        let err = refusal(
            &policy("https://github.com/evil/x", "", GITHUB_ACTIONS),
            KUBEWARDEN,
            KUBEWARDEN_DIGEST,
        );
        assert!(err.contains("not \"https://github.com/evil/x\""), "{err}");
        let err = refusal(
            &policy(KUBEWARDEN_IDENTITY, "", "https://accounts.google.com"),
            KUBEWARDEN,
            KUBEWARDEN_DIGEST,
        );
        assert!(err.contains("OIDC issuer"), "{err}");
        // A pattern matching only a prefix does not count.
        let err = refusal(
            &policy("", r"https://github\.com/kubewarden/", GITHUB_ACTIONS),
            KUBEWARDEN,
            KUBEWARDEN_DIGEST,
        );
        assert!(err.contains("signed by"), "{err}");
        // Another digest.
        let other = format!("sha256:{}", "0".repeat(64));
        let err = refusal(&good, KUBEWARDEN, &other);
        assert!(err.contains("subject is not"), "{err}");
        // A root whose CT logs are not the one that logged the certificate.
        let mut no_ct = good.clone();
        no_ct.root.ctlogs.retain(|log| log.valid.end.is_some());
        let err = refusal(&no_ct, KUBEWARDEN, KUBEWARDEN_DIGEST);
        assert!(
            err.contains("no SCT of the signing certificate verifies"),
            "{err}"
        );
        // Another trusted root (a CA it never saw).
        let mut foreign = good.clone();
        foreign.root.authorities.retain(|ca| ca.valid.end.is_some());
        let err = refusal(&foreign, KUBEWARDEN, KUBEWARDEN_DIGEST);
        assert!(err.contains("certificate authority"), "{err}");
    }

    /// The fixture with the value at `pointer` replaced (`None`: removed).
    fn edited(pointer: &str, value: Option<serde_json::Value>) -> String {
        let mut json: serde_json::Value = serde_json::from_str(KUBEWARDEN).expect("json");
        match value {
            Some(value) => *json.pointer_mut(pointer).expect("the fixture has it") = value,
            None => {
                let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
                json.pointer_mut(parent)
                    .and_then(|p| p.as_object_mut())
                    .and_then(|p| p.remove(key))
                    .expect("the fixture has it");
            }
        }
        json.to_string()
    }

    #[test]
    fn forged_log_proofs_and_times_are_refused() {
        let good = policy(KUBEWARDEN_IDENTITY, "", GITHUB_ACTIONS);
        let entry = "/verificationMaterial/tlogEntries/0";
        let at = |path: &str| format!("{entry}/{path}");
        let other_statement = STANDARD.encode(
            br#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"x"}"#,
        );
        let cases: Vec<(&str, String)> = vec![
            (
                "signed entry timestamp does not verify",
                edited(&at("integratedTime"), Some("1775719410".into())),
            ),
            (
                "no signed entry timestamp",
                edited(&at("inclusionPromise"), None),
            ),
            ("no inclusion proof", edited(&at("inclusionProof"), None)),
            (
                "does not lead from the entry",
                edited(&at("inclusionProof/logIndex"), Some("1139201544".into())),
            ),
            (
                "does not lead from the entry",
                edited(
                    &at("inclusionProof/hashes/3"),
                    Some(STANDARD.encode([7u8; 32]).into()),
                ),
            ),
            (
                "does not fit its tree",
                edited(&at("inclusionProof/treeSize"), Some("1".into())),
            ),
            (
                "transparency log the trusted root does not name",
                edited(&at("logId/keyId"), Some(STANDARD.encode([9u8; 32]).into())),
            ),
            (
                // Another statement: its hash no longer matches the log's.
                "records another signature",
                edited("/dsseEnvelope/payload", Some(other_statement.into())),
            ),
            (
                "key-based signature",
                edited("/verificationMaterial/certificate", None),
            ),
        ];
        for (want, bundle) in cases {
            let err = refusal(&good, &bundle, KUBEWARDEN_DIGEST);
            assert!(err.contains(want), "want {want:?}, got {err}");
        }
    }

    #[test]
    fn a_pattern_is_anchored_and_exactly_one_form_is_set() {
        let names = ("identity", "identity_regexp");
        let m = Matcher::new("", "a@b\\.c", names).expect("pattern");
        assert!(m.matches("a@b.c"));
        assert!(!m.matches("xa@b.cz"));
        assert!(!m.matches("a@b.c\n"));
        let alt = Matcher::new("", "a|b", names).expect("pattern");
        assert!(alt.matches("a") && alt.matches("b") && !alt.matches("ab"));
        assert!(Matcher::new("x", "y", names).is_err());
        assert!(Matcher::new("", "", names).is_err());
        assert!(Matcher::new("", "(", names).is_err());
    }
}
