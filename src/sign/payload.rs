//! What a cosign signature signs, in its two forms:
//! - the "simple signing" payload of the `sha256-<hex>.sig` tag, signed as
//!   it is stored;
//! - the in-toto statement inside a DSSE envelope of a sigstore bundle,
//!   signed through DSSE's pre-authentication encoding (PAE).
//!
//! Both name the signed manifest's digest; a signature counts only when
//! that digest is the one being verified (a valid signature of another
//! image, replayed, does not).

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::keys::PublicKey;
use crate::image::Digest;

/// The `type` of a simple-signing payload.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";
/// The media type of a `.sig` layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a `.sig` layer's base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The statement type cosign writes.
pub const IN_TOTO_STATEMENT: &str = "https://in-toto.io/Statement/v1";
/// The predicate type of a cosign image signature (an attestation of
/// another type, made with the same key, is not a signature).
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// The simple-signing payload for `digest` pushed to `reference` (the
/// repository, without tag), compact and in cosign's field order.
pub fn simple_signing(reference: &str, digest: &Digest) -> Vec<u8> {
    // serde_json keeps insertion order only with preserve_order; written
    // out by hand so the bytes match cosign's.
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":{}}},"image":{{"docker-manifest-digest":{}}},"type":{}}},"optional":null}}"#,
        Value::from(reference),
        Value::from(digest.to_string()),
        Value::from(SIMPLE_SIGNING_TYPE),
    )
    .into_bytes()
}

/// Checks that a simple-signing payload names `digest` (cosign checks only
/// that claim: the reference may differ after a promotion).
pub fn check_simple_signing(payload: &[u8], digest: &Digest) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Payload {
        critical: Critical,
    }
    #[derive(Deserialize)]
    struct Critical {
        image: Image,
    }
    #[derive(Deserialize)]
    struct Image {
        #[serde(rename = "docker-manifest-digest")]
        digest: String,
    }
    let payload: Payload =
        serde_json::from_slice(payload).context("the payload is not a simple-signing document")?;
    if payload.critical.image.digest != digest.to_string() {
        bail!(
            "the payload signs {}, not {digest}",
            payload.critical.image.digest
        );
    }
    Ok(())
}

/// DSSE's pre-authentication encoding: what a DSSE signature signs.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The in-toto statement cosign signs for `digest`.
pub fn statement(digest: &Digest) -> Vec<u8> {
    let statement = json!({
        "_type": IN_TOTO_STATEMENT,
        "subject": [{"name": "", "digest": {digest.algorithm().name(): digest.hex()}}],
        "predicateType": SIGN_PREDICATE,
        "predicate": {},
    });
    serde_json::to_vec(&statement).unwrap_or_default()
}

/// A DSSE envelope as a sigstore bundle carries it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// The statement, base64.
    pub payload: String,
    /// Its type.
    pub payload_type: String,
    /// Signatures over the PAE.
    #[serde(default)]
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Debug, Deserialize)]
pub struct EnvelopeSignature {
    /// The signature, base64.
    pub sig: String,
}

/// Checks a sigstore bundle (JSON) against `key` and `digest`: its DSSE
/// envelope must be signed by `key` and hold a cosign signing statement
/// whose subject is `digest`. Transparency-log entries are not checked
/// (there is no Rekor to ask offline), as `cosign verify
/// --insecure-ignore-tlog` does.
pub fn check_bundle(bundle: &[u8], key: &PublicKey, digest: &Digest) -> anyhow::Result<()> {
    let bundle = super::bundle::Bundle::parse(bundle)?;
    let envelope = bundle.dsse_envelope.context(
        "the bundle holds no DSSE envelope (a message signature signs a blob, not an image)",
    )?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        bail!("the envelope's payload type is {:?}", envelope.payload_type);
    }
    let payload = STANDARD
        .decode(&envelope.payload)
        .context("the envelope's payload is not base64")?;
    let signed = pae(&envelope.payload_type, &payload);
    let verified = envelope.signatures.iter().any(|s| {
        STANDARD
            .decode(&s.sig)
            .is_ok_and(|sig| key.verifies(&signed, &sig))
    });
    if !verified {
        bail!("no signature of the envelope verifies with the key");
    }
    check_statement(&payload, digest)
}

/// Checks that an in-toto statement is cosign's signing statement about
/// `digest`.
pub(super) fn check_statement(statement: &[u8], digest: &Digest) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Statement {
        #[serde(rename = "_type")]
        kind: String,
        #[serde(default)]
        subject: Vec<Subject>,
        #[serde(default)]
        predicate_type: String,
    }
    #[derive(Deserialize)]
    struct Subject {
        #[serde(default)]
        digest: std::collections::BTreeMap<String, String>,
    }
    let statement: Statement =
        serde_json::from_slice(statement).context("the envelope's payload is not a statement")?;
    if statement.kind != IN_TOTO_STATEMENT {
        bail!("the statement's type is {:?}", statement.kind);
    }
    if statement.predicate_type != SIGN_PREDICATE {
        bail!(
            "the statement is an attestation ({:?}), not a signature",
            statement.predicate_type
        );
    }
    let algorithm = digest.algorithm().name();
    if !statement
        .subject
        .iter()
        .any(|s| s.digest.get(algorithm).map(String::as_str) == Some(digest.hex()))
    {
        bail!("the statement's subject is not {digest}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simple_signing_payload_has_cosigns_bytes() {
        let digest: Digest = format!("sha256:{}", "a".repeat(64))
            .parse()
            .expect("digest");
        let payload = simple_signing("registry.example/app", &digest);
        assert_eq!(
            String::from_utf8(payload.clone()).expect("utf-8"),
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"registry.example/app"}},"image":{{"docker-manifest-digest":"sha256:{}"}},"type":"cosign container image signature"}},"optional":null}}"#,
                "a".repeat(64)
            )
        );
        check_simple_signing(&payload, &digest).expect("names the digest");
        let other: Digest = format!("sha256:{}", "b".repeat(64))
            .parse()
            .expect("digest");
        assert!(check_simple_signing(&payload, &other).is_err());
    }

    #[test]
    fn pae_follows_the_dsse_spec() {
        // The example of the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn a_statement_names_its_subject_and_predicate() {
        let digest = Digest::sha256_of(b"x");
        check_statement(&statement(&digest), &digest).expect("own statement");
        assert!(check_statement(&statement(&digest), &Digest::sha256_of(b"y")).is_err());
        let attestation = serde_json::to_vec(&json!({
            "_type": IN_TOTO_STATEMENT,
            "subject": [{"digest": {"sha256": digest.hex()}}],
            "predicateType": "https://slsa.dev/provenance/v1",
        }))
        .expect("json");
        let err = format!(
            "{:#}",
            check_statement(&attestation, &digest).expect_err("refused")
        );
        assert!(err.contains("attestation"), "{err}");
    }
}
