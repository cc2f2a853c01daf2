//! A sigstore bundle (protobuf-specs `Bundle`, JSON, versions 0.1 to 0.3):
//! what was signed (a DSSE envelope or a message signature), who signed it
//! (a key hint, a certificate or a certificate chain) and the
//! transparency-log entries. Read by the key-based check (the envelope) and
//! by the keyless one (everything).

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::payload::Envelope;
use super::transparency::{InclusionProof, LogEntry, MAX_PROOF_HASHES};

/// The media type prefix of every bundle version.
pub const BUNDLE_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// Log entries read from one bundle.
const MAX_LOG_ENTRIES: usize = 8;

/// A bundle, parsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// Its version, as a media type.
    #[serde(default)]
    pub media_type: String,
    /// The signer and the log entries.
    #[serde(default)]
    pub verification_material: Material,
    /// A DSSE envelope (cosign 3's image signatures, attestations).
    pub dsse_envelope: Option<Envelope>,
    /// Or a signature over an artifact's digest.
    pub message_signature: Option<MessageSignature>,
}

/// `verificationMaterial`.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Material {
    /// The leaf certificate (v0.3).
    pub certificate: Option<RawBytes>,
    /// The chain, leaf first (v0.1, v0.2).
    pub x509_certificate_chain: Option<Chain>,
    /// Transparency-log entries.
    #[serde(default)]
    pub tlog_entries: Vec<RawLogEntry>,
}

/// `{"rawBytes": base64}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawBytes {
    /// Base64.
    pub raw_bytes: String,
}

/// `x509CertificateChain`.
#[derive(Deserialize)]
pub struct Chain {
    /// Leaf first.
    #[serde(default)]
    pub certificates: Vec<RawBytes>,
}

/// `messageSignature`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSignature {
    /// The signed artifact's digest.
    pub message_digest: Option<MessageDigest>,
    /// The signature, base64.
    pub signature: String,
}

/// `messageDigest`.
#[derive(Deserialize)]
pub struct MessageDigest {
    /// `SHA2_256`.
    pub algorithm: String,
    /// Base64.
    pub digest: String,
}

/// One `tlogEntries` item (int64 fields are decimal strings in protobuf
/// JSON; numbers are accepted too).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawLogEntry {
    #[serde(default)]
    log_index: Number,
    log_id: KeyId,
    integrated_time: Number,
    inclusion_promise: Option<Promise>,
    inclusion_proof: Option<RawProof>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Promise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProof {
    #[serde(default)]
    log_index: Number,
    root_hash: String,
    tree_size: Number,
    #[serde(default)]
    hashes: Vec<String>,
    checkpoint: RawCheckpoint,
}

#[derive(Deserialize)]
struct RawCheckpoint {
    envelope: String,
}

/// An int64 of protobuf JSON: a decimal string (or a number), absent when
/// zero (proto3 leaves default values out).
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Text(String),
    Int(i64),
}

impl Default for Number {
    fn default() -> Self {
        Number::Int(0)
    }
}

impl Number {
    fn value(&self, what: &str) -> anyhow::Result<i64> {
        match self {
            Number::Int(n) => Ok(*n),
            Number::Text(s) => s
                .parse()
                .with_context(|| format!("the log entry's {what} is not a number")),
        }
    }
}

fn base64(text: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    STANDARD
        .decode(text)
        .map_err(|_| anyhow::anyhow!("the bundle's {what} is not base64"))
}

impl Bundle {
    /// Parses a bundle; anything else (another media type) is refused.
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        let bundle: Bundle = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("the bundle is not a sigstore bundle ({e})"))?;
        if !bundle.media_type.starts_with(BUNDLE_TYPE_PREFIX) {
            bail!("not a sigstore bundle (mediaType {:?})", bundle.media_type);
        }
        Ok(bundle)
    }

    /// Whether this bundle's version requires an inclusion proof (0.2 on).
    pub fn requires_inclusion_proof(&self) -> bool {
        !self.media_type.contains("0.1")
    }

    /// The signing certificate's DER, when the signer has one.
    pub fn certificate(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let material = &self.verification_material;
        let raw = match (&material.certificate, &material.x509_certificate_chain) {
            (Some(leaf), _) => leaf,
            (None, Some(chain)) => match chain.certificates.first() {
                Some(leaf) => leaf,
                None => bail!("the bundle's certificate chain is empty"),
            },
            (None, None) => return Ok(None),
        };
        base64(&raw.raw_bytes, "certificate").map(Some)
    }

    /// The transparency-log entries.
    pub fn log_entries(&self) -> anyhow::Result<Vec<LogEntry>> {
        let entries = &self.verification_material.tlog_entries;
        if entries.len() > MAX_LOG_ENTRIES {
            bail!("the bundle holds {} log entries", entries.len());
        }
        entries.iter().map(RawLogEntry::entry).collect()
    }
}

impl RawLogEntry {
    fn entry(&self) -> anyhow::Result<LogEntry> {
        let proof = match &self.inclusion_proof {
            None => None,
            Some(proof) => {
                if proof.hashes.len() > MAX_PROOF_HASHES {
                    bail!("an inclusion proof of {} hashes", proof.hashes.len());
                }
                Some(InclusionProof {
                    index: u64::try_from(proof.log_index.value("proof index")?)
                        .context("a negative proof index")?,
                    tree_size: u64::try_from(proof.tree_size.value("tree size")?)
                        .context("a negative tree size")?,
                    root_hash: base64(&proof.root_hash, "root hash")?,
                    hashes: proof
                        .hashes
                        .iter()
                        .map(|h| base64(h, "proof hash"))
                        .collect::<anyhow::Result<_>>()?,
                    checkpoint: proof.checkpoint.envelope.clone(),
                })
            }
        };
        Ok(LogEntry {
            body_base64: self.canonicalized_body.clone(),
            integrated_time: self.integrated_time.value("integrated time")?,
            log_index: self.log_index.value("index")?,
            log_id: base64(&self.log_id.key_id, "log ID")?,
            set: self
                .inclusion_promise
                .as_ref()
                .map(|p| base64(&p.signed_entry_timestamp, "signed entry timestamp"))
                .transpose()?,
            proof,
        })
    }
}
