//! Sigstore's `trusted_root.json`: the Fulcio certificate authorities, the
//! transparency logs (Rekor) and the certificate-transparency logs a keyless
//! signature is checked against, each with the period it is trusted for.
//!
//! The public-good instance's root is built in (see [`PUBLIC_GOOD`]);
//! `source.cosign_trusted_root` replaces it (a private Sigstore, a mock in
//! tests, or a pinned copy). Every past instance is kept: an old signature is
//! checked against the authority of its time.

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::keys::PublicKey;

/// The public-good instance's trusted root, byte for byte as the
/// `sigstore` PyPI package 4.5.1 ships it
/// (`sigstore/_store/https%3A%2F%2Ftuf-repo-cdn.sigstore.dev/trusted_root.json`
/// in its wheel, SHA-256 `6494e21e…c0b66`, taken 2026-12-03). Its content is
/// Sigstore's root-signing `targets/trusted_root.json` as last changed on
/// 2025-09-22: Rekor `rekor.sigstore.dev` (ECDSA) and `log2025-1`
/// (Ed25519), Fulcio's 2021 CA (ended 2022) and 2022 CA, CT logs
/// `ctfe.sigstore.dev/test` (ended 2022) and `/2022`, the timestamp
/// authority.
pub const PUBLIC_GOOD: &str = include_str!("public_good_trusted_root.json");

/// A trusted root larger than this is not one (the public-good one is
/// 7 KB); it is refused before being parsed.
pub const MAX_TRUSTED_ROOT_BYTES: usize = 1 << 20;
/// Entries read per list.
const MAX_ENTRIES: usize = 64;
/// Certificates read per authority's chain.
const MAX_CHAIN: usize = 8;

/// A period of trust, in Unix seconds, both ends inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// The first second.
    pub start: i64,
    /// The last second, when it ended.
    pub end: Option<i64>,
}

impl Validity {
    /// Whether `time` lies inside.
    pub fn contains(&self, time: i64) -> bool {
        time >= self.start && self.end.is_none_or(|end| time <= end)
    }
}

/// A log's key: a Rekor instance or a CT log.
#[derive(Clone, Debug)]
pub struct LogKey {
    /// SHA-256 of the key's DER, which names the log in entries and SCTs.
    pub id: [u8; 32],
    /// The key.
    pub key: PublicKey,
    /// When its signatures count.
    pub valid: Validity,
}

/// A Fulcio certificate authority.
#[derive(Clone, Debug)]
pub struct CertificateAuthority {
    /// DER certificates, issuer side last: the last is the trust anchor, the
    /// others intermediates.
    pub chain: Vec<Vec<u8>>,
    /// When certificates it issued count.
    pub valid: Validity,
}

/// A parsed trusted root.
#[derive(Clone, Debug)]
pub struct TrustedRoot {
    /// Rekor instances.
    pub tlogs: Vec<LogKey>,
    /// CT logs Fulcio submits its certificates to.
    pub ctlogs: Vec<LogKey>,
    /// Fulcio instances.
    pub authorities: Vec<CertificateAuthority>,
}

impl TrustedRoot {
    /// The built-in public-good root.
    pub fn public_good() -> anyhow::Result<Self> {
        Self::parse(PUBLIC_GOOD.as_bytes()).context("the built-in public-good trusted root")
    }

    /// Reads a `trusted_root.json` (media type
    /// `application/vnd.dev.sigstore.trustedroot+json;version=0.1` or 0.2).
    /// Keys this resource cannot use (RSA) are skipped; a root left with no
    /// authority or no transparency log is refused.
    pub fn parse(json: &[u8]) -> anyhow::Result<Self> {
        if json.len() > MAX_TRUSTED_ROOT_BYTES {
            bail!(
                "{} bytes, larger than a trusted root ({MAX_TRUSTED_ROOT_BYTES})",
                json.len()
            );
        }
        let raw: RawRoot = serde_json::from_slice(json)
            .map_err(|e| anyhow::anyhow!("not a Sigstore trusted_root.json ({e})"))?;
        if !raw
            .media_type
            .starts_with("application/vnd.dev.sigstore.trustedroot")
        {
            bail!(
                "not a Sigstore trusted root (mediaType {:?})",
                raw.media_type
            );
        }
        for (what, len) in [
            ("tlogs", raw.tlogs.len()),
            ("ctlogs", raw.ctlogs.len()),
            ("certificateAuthorities", raw.certificate_authorities.len()),
        ] {
            if len > MAX_ENTRIES {
                bail!("{len} {what}, more than a trusted root holds ({MAX_ENTRIES})");
            }
        }
        let logs = |list: Vec<RawLog>, what: &str| -> anyhow::Result<Vec<LogKey>> {
            let mut keys = Vec::new();
            for (i, log) in list.into_iter().enumerate() {
                let der = decode(&log.public_key.raw_bytes)
                    .with_context(|| format!("{what}[{i}].publicKey.rawBytes"))?;
                let Ok(key) = PublicKey::from_der(&der) else {
                    continue;
                };
                let valid = log
                    .public_key
                    .valid_for
                    .validity()
                    .with_context(|| format!("{what}[{i}].publicKey.validFor"))?;
                keys.push(LogKey {
                    id: Sha256::digest(&der).into(),
                    key,
                    valid,
                });
            }
            Ok(keys)
        };
        let tlogs = logs(raw.tlogs, "tlogs")?;
        let ctlogs = logs(raw.ctlogs, "ctlogs")?;
        let mut authorities = Vec::new();
        for (i, ca) in raw.certificate_authorities.into_iter().enumerate() {
            let what = || format!("certificateAuthorities[{i}]");
            let certificates = ca.cert_chain.certificates;
            if certificates.is_empty() || certificates.len() > MAX_CHAIN {
                bail!(
                    "{}: a chain of {} certificates (1 to {MAX_CHAIN})",
                    what(),
                    certificates.len()
                );
            }
            let chain = certificates
                .iter()
                .map(|c| decode(&c.raw_bytes))
                .collect::<anyhow::Result<Vec<_>>>()
                .with_context(what)?;
            let valid = ca.valid_for.validity().with_context(what)?;
            authorities.push(CertificateAuthority { chain, valid });
        }
        if authorities.is_empty() {
            bail!("the trusted root names no certificate authority");
        }
        if tlogs.is_empty() {
            bail!("the trusted root names no transparency log with a usable key");
        }
        Ok(TrustedRoot {
            tlogs,
            ctlogs,
            authorities,
        })
    }

    /// The transparency log named `id` (SHA-256 of its key).
    pub fn tlog(&self, id: &[u8]) -> Option<&LogKey> {
        self.tlogs.iter().find(|log| log.id == id)
    }

    /// The CT log named `id`.
    pub fn ctlog(&self, id: &[u8]) -> Option<&LogKey> {
        self.ctlogs.iter().find(|log| log.id == id)
    }
}

fn decode(text: &str) -> anyhow::Result<Vec<u8>> {
    STANDARD
        .decode(text.trim())
        .map_err(|_| anyhow::anyhow!("not base64"))
}

/// An RFC 3339 time as Unix seconds.
pub fn unix_seconds(text: &str) -> anyhow::Result<i64> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| anyhow::anyhow!("{text:?} is not an RFC 3339 time"))?;
    Ok(time.unix_timestamp())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    ctlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawAuthority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    public_key: RawPublicKey,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPublicKey {
    raw_bytes: String,
    #[serde(default)]
    valid_for: RawValidity,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuthority {
    cert_chain: RawChain,
    #[serde(default)]
    valid_for: RawValidity,
}

#[derive(Deserialize)]
struct RawChain {
    #[serde(default)]
    certificates: Vec<RawCertificate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCertificate {
    raw_bytes: String,
}

#[derive(Default, Deserialize)]
struct RawValidity {
    start: Option<String>,
    end: Option<String>,
}

impl RawValidity {
    fn validity(&self) -> anyhow::Result<Validity> {
        let start = self
            .start
            .as_deref()
            .context("no start: a trusted root states when each key begins")?;
        Ok(Validity {
            start: unix_seconds(start)?,
            end: self.end.as_deref().map(unix_seconds).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_root_holds_the_public_good_instance() {
        let root = TrustedRoot::public_good().expect("parses");
        assert_eq!(root.authorities.len(), 2);
        assert_eq!(root.ctlogs.len(), 2);
        // rekor.sigstore.dev (ECDSA) and log2025-1 (Ed25519).
        assert_eq!(root.tlogs.len(), 2);
        let rekor = STANDARD
            .decode("wNI9atQGlz+VWfO6LRygH4QUfY/8W4RFwiT5i5WRgB0=")
            .expect("b64");
        let log = root.tlog(&rekor).expect("rekor.sigstore.dev by its log ID");
        assert_eq!(log.valid.end, None);
        assert!(log.valid.contains(1_700_000_000));
        assert!(!log.valid.contains(1_600_000_000));
        // The 2021 CA ended with 2022.
        assert!(root.authorities[0].valid.end.is_some());
    }

    #[test]
    fn refuses_what_is_not_a_trusted_root() {
        let err = |json: &str| format!("{:#}", TrustedRoot::parse(json.as_bytes()).unwrap_err());
        assert!(err("7").contains("not a Sigstore trusted_root.json"));
        assert!(err(r#"{"mediaType":"x"}"#).contains("mediaType"));
        assert!(
            err(r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#)
                .contains("no certificate authority")
        );
        let big = " ".repeat(MAX_TRUSTED_ROOT_BYTES + 1);
        assert!(err(&big).contains("larger than a trusted root"));
    }
}
