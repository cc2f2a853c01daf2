//! A Fulcio signing certificate: who it names (the SAN identity and the
//! OIDC issuer of Fulcio's extensions), its key, its chain to a certificate
//! authority of the trusted root, and the certificate-transparency log's
//! promise (the embedded SCT) that it was published.
//!
//! Certificates are read with RustCrypto's `x509-cert`; the chain is built
//! and checked by rustls' `webpki` (signatures, validity of every certificate
//! at the given time, CA constraints, the codeSigning key purpose). The SCT
//! (RFC 6962 §3.2) is a few fixed-width fields that no maintained crate
//! verifies against a precertificate, so they are read here.

use anyhow::{Context, bail};
use rustls::pki_types::{CertificateDer, UnixTime};
use sha2::{Digest as _, Sha256};
use x509_cert::Certificate;
use x509_cert::der::asn1::{Any, Ia5String, ObjectIdentifier, OctetString, Utf8StringRef};
use x509_cert::der::{Decode, Encode, Tag, TagNumber, Tagged};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use super::keys::PublicKey;
use super::trusted_root::{CertificateAuthority, TrustedRoot};

/// Fulcio's OIDC issuer extension, first form: the issuer's bytes as the
/// extension's value.
const ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Fulcio's OIDC issuer extension, second form: a DER UTF8String.
const ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// The SAN OtherName Fulcio uses for identities that are neither an email
/// nor a URI (a username), a UTF8String.
const OTHER_NAME_IDENTITY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.7");
/// The embedded SCT list (RFC 6962 §3.3).
const SCT_LIST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2");
/// The codeSigning key purpose (1.3.6.1.5.5.7.3.3), as DER contents.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// SCTs read from one certificate.
const MAX_SCTS: usize = 16;
/// Certificates read from one PEM text (a chain is two or three).
pub const MAX_PEM_CERTIFICATES: usize = 8;

/// Signature algorithms of certificate chains: Fulcio's are ECDSA (P-384
/// CAs over P-256 or P-384 leaves); Ed25519 for private instances.
static CHAIN_ALGORITHMS: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

/// A signing certificate, parsed.
pub struct SigningCertificate {
    der: Vec<u8>,
    certificate: Certificate,
}

impl SigningCertificate {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> anyhow::Result<Self> {
        let certificate = Certificate::from_der(der)
            .map_err(|e| anyhow::anyhow!("the signing certificate is not X.509 DER ({e})"))?;
        Ok(SigningCertificate {
            der: der.to_vec(),
            certificate,
        })
    }

    /// Reads the first certificate of a PEM text (cosign's
    /// `dev.sigstore.cosign/certificate` annotation, a Rekor entry's key).
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let der = certificates_from_pem(pem)?
            .into_iter()
            .next()
            .context("the signing certificate is not a PEM CERTIFICATE")?;
        Self::from_der(&der)
    }

    /// The certificate's DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certified key.
    pub fn public_key(&self) -> anyhow::Result<PublicKey> {
        let spki = self
            .certificate
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .context("re-encoding the certificate's key")?;
        PublicKey::from_der(&spki).context("the signing certificate's key")
    }

    /// Every identity of the subject alternative name: emails, URIs,
    /// Fulcio's OtherName usernames (DNS names and IP addresses are not
    /// identities Fulcio issues for).
    pub fn identities(&self) -> anyhow::Result<Vec<String>> {
        let san = self
            .certificate
            .tbs_certificate()
            .get_extension::<SubjectAltName>()
            .map_err(|e| anyhow::anyhow!("the certificate's subject alternative name: {e}"))?;
        let Some((_, SubjectAltName(names))) = san else {
            return Ok(Vec::new());
        };
        let text = |s: &Ia5String| s.as_str().to_owned();
        Ok(names
            .iter()
            .filter_map(|name| match name {
                GeneralName::Rfc822Name(email) => Some(text(email)),
                GeneralName::UniformResourceIdentifier(uri) => Some(text(uri)),
                GeneralName::OtherName(other) if other.type_id == OTHER_NAME_IDENTITY => other
                    .value
                    .decode_as::<Utf8StringRef<'_>>()
                    .ok()
                    .map(|s| s.as_str().to_owned()),
                _ => None,
            })
            .collect())
    }

    /// The OIDC issuer Fulcio recorded. Both of its extensions are read;
    /// when both are present they must agree (Fulcio writes the same value
    /// in each).
    pub fn oidc_issuer(&self) -> anyhow::Result<String> {
        let mut v1 = None;
        let mut v2 = None;
        for extension in self.extensions() {
            if extension.extn_id == ISSUER_V1 {
                v1 = Some(
                    String::from_utf8(extension.extn_value.as_bytes().to_vec())
                        .context("Fulcio's issuer extension (1.1) is not UTF-8")?,
                );
            } else if extension.extn_id == ISSUER_V2 {
                let value =
                    Utf8StringRef::from_der(extension.extn_value.as_bytes()).map_err(|_| {
                        anyhow::anyhow!("Fulcio's issuer extension (1.8) is not a UTF8String")
                    })?;
                v2 = Some(value.as_str().to_owned());
            }
        }
        match (v1, v2) {
            (Some(a), Some(b)) if a != b => {
                bail!("the certificate names two OIDC issuers ({a:?} and {b:?})")
            }
            (_, Some(issuer)) | (Some(issuer), None) => Ok(issuer),
            (None, None) => bail!("the certificate names no OIDC issuer (not Fulcio's)"),
        }
    }

    /// The validity period, Unix seconds.
    pub fn validity(&self) -> (i64, i64) {
        let validity = self.certificate.tbs_certificate().validity();
        let seconds = |t: x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
        (seconds(validity.not_before), seconds(validity.not_after))
    }

    fn extensions(&self) -> &[Extension] {
        self.certificate
            .tbs_certificate()
            .extensions()
            .map_or(&[], |e| e.as_slice())
    }

    /// Checks the certificate against the trusted root at `time` (the
    /// transparency log's time of the signature): a chain to one of its
    /// certificate authorities valid then, every certificate of the chain
    /// valid then, the codeSigning purpose, and an SCT from a CT log of the
    /// root. `extra_intermediates` (cosign's `chain` annotation) only help
    /// build a path; they are never trusted on their own.
    pub fn verify(
        &self,
        root: &TrustedRoot,
        time: i64,
        extra_intermediates: &[Vec<u8>],
    ) -> anyhow::Result<()> {
        let Ok(unsigned) = u64::try_from(time) else {
            bail!("a signing time before 1970");
        };
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(unsigned));
        let leaf = CertificateDer::from(self.der.as_slice());
        let leaf = webpki::EndEntityCert::try_from(&leaf)
            .map_err(|e| anyhow::anyhow!("the signing certificate: {e}"))?;
        let mut last_error = None;
        let mut issuer = None;
        for authority in root.authorities.iter().filter(|ca| ca.valid.contains(time)) {
            match chain_to(&leaf, authority, at, extra_intermediates) {
                Ok(()) => {
                    issuer = Some(authority);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let Some(authority) = issuer else {
            return Err(match last_error {
                Some(e) => anyhow::anyhow!(
                    "the signing certificate does not chain to a certificate authority of the \
                     trusted root at the signing time ({e})"
                ),
                None => anyhow::anyhow!(
                    "the trusted root has no certificate authority valid at the signing time"
                ),
            });
        };
        self.verify_sct(root, authority)
    }

    /// Checks that one embedded SCT is signed by a CT log of the root over
    /// this certificate's precertificate (RFC 6962 §3.2: the TBS without
    /// the SCT list, and the SHA-256 of the issuer's key).
    fn verify_sct(
        &self,
        root: &TrustedRoot,
        authority: &CertificateAuthority,
    ) -> anyhow::Result<()> {
        let Some(extension) = self.extensions().iter().find(|e| e.extn_id == SCT_LIST) else {
            bail!("the signing certificate holds no SCT (it was not published to a CT log)");
        };
        let list = OctetString::from_der(extension.extn_value.as_bytes())
            .map_err(|_| anyhow::anyhow!("the certificate's SCT list is not an OCTET STRING"))?;
        let scts = parse_sct_list(list.as_bytes())?;
        let issuer_key_hash = self.issuer_key_hash(authority)?;
        let tbs = self.precertificate_tbs()?;
        let mut seen = Vec::new();
        for sct in &scts {
            let Some(log) = root.ctlog(&sct.log_id) else {
                seen.push("an SCT from a CT log the trusted root does not name");
                continue;
            };
            let seconds = (sct.timestamp_ms / 1000) as i64;
            if !log.valid.contains(seconds) {
                seen.push("an SCT from a CT log outside its validity");
                continue;
            }
            let signed = sct.signed_data(&issuer_key_hash, &tbs)?;
            if log.key.verifies(&signed, &sct.signature) {
                return Ok(());
            }
            seen.push("an SCT whose signature does not verify with its CT log's key");
        }
        bail!(
            "no SCT of the signing certificate verifies ({})",
            if seen.is_empty() {
                "the list is empty".to_owned()
            } else {
                seen.join("; ")
            }
        )
    }

    /// SHA-256 of the issuing certificate's key: the authority's
    /// certificate whose subject is this certificate's issuer.
    fn issuer_key_hash(&self, authority: &CertificateAuthority) -> anyhow::Result<[u8; 32]> {
        let wanted = self.certificate.tbs_certificate().issuer();
        for der in &authority.chain {
            let Ok(candidate) = Certificate::from_der(der) else {
                continue;
            };
            if candidate.tbs_certificate().subject() == wanted {
                let spki = candidate
                    .tbs_certificate()
                    .subject_public_key_info()
                    .to_der()
                    .context("re-encoding the issuer's key")?;
                return Ok(Sha256::digest(&spki).into());
            }
        }
        bail!("the certificate's issuer is not among its authority's certificates")
    }

    /// The TBS certificate without the SCT list extension, DER.
    fn precertificate_tbs(&self) -> anyhow::Result<Vec<u8>> {
        let tbs = self
            .certificate
            .tbs_certificate()
            .to_der()
            .context("re-encoding the certificate")?;
        let mut fields: Vec<Any> =
            Vec::from_der(&tbs).map_err(|e| anyhow::anyhow!("the certificate's TBS: {e}"))?;
        let extensions_tag = Tag::ContextSpecific {
            constructed: true,
            number: TagNumber(3),
        };
        for field in fields.iter_mut().filter(|f| f.tag() == extensions_tag) {
            let extensions: Vec<Extension> = Vec::from_der(field.value())
                .map_err(|e| anyhow::anyhow!("the certificate's extensions: {e}"))?;
            let kept: Vec<Extension> = extensions
                .into_iter()
                .filter(|e| e.extn_id != SCT_LIST)
                .collect();
            let encoded = kept.to_der().context("re-encoding the extensions")?;
            *field = Any::new(extensions_tag, encoded).context("re-encoding the extensions")?;
        }
        fields.to_der().context("re-encoding the precertificate")
    }
}

/// The DER of every `CERTIFICATE` block of a PEM text, in order (at most
/// [`MAX_PEM_CERTIFICATES`]), read by rustls' PEM reader as `ca_certs`
/// are (`registry::trust::parse_ca_certs`). It is lenient about line
/// width, which matters: cosign wraps the base64 at 64 columns,
/// sigstore-js (in Rekor entries) not at all.
pub fn certificates_from_pem(text: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls::pki_types::pem::PemObject as _;
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(text.as_bytes()) {
        if out.len() == MAX_PEM_CERTIFICATES {
            bail!("more than {MAX_PEM_CERTIFICATES} certificates in one PEM text");
        }
        let cert = cert.map_err(|_| anyhow::anyhow!("a PEM certificate that is not valid PEM"))?;
        out.push(cert.as_ref().to_vec());
    }
    Ok(out)
}

fn chain_to(
    leaf: &webpki::EndEntityCert<'_>,
    authority: &CertificateAuthority,
    at: UnixTime,
    extra_intermediates: &[Vec<u8>],
) -> anyhow::Result<()> {
    let (anchor, intermediates) = authority
        .chain
        .split_last()
        .context("an authority without certificates")?;
    let anchor = CertificateDer::from(anchor.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&anchor)
        .map_err(|e| anyhow::anyhow!("the trusted root's certificate: {e}"))?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .chain(extra_intermediates)
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    leaf.verify_for_usage(
        CHAIN_ALGORITHMS,
        &[anchor],
        &intermediates,
        at,
        webpki::KeyUsage::required(CODE_SIGNING),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// One signed certificate timestamp (RFC 6962 §3.2, version 1).
struct Sct {
    log_id: [u8; 32],
    timestamp_ms: u64,
    extensions: Vec<u8>,
    signature: Vec<u8>,
}

impl Sct {
    /// The bytes the log signed for a precertificate entry.
    fn signed_data(&self, issuer_key_hash: &[u8; 32], tbs: &[u8]) -> anyhow::Result<Vec<u8>> {
        if tbs.len() >= 1 << 24 || self.extensions.len() >= 1 << 16 {
            bail!("an SCT too large to verify");
        }
        let mut data = Vec::with_capacity(tbs.len() + 64);
        data.push(0); // v1
        data.push(0); // certificate_timestamp
        data.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        data.extend_from_slice(&1u16.to_be_bytes()); // precert_entry
        data.extend_from_slice(issuer_key_hash);
        data.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]);
        data.extend_from_slice(tbs);
        data.extend_from_slice(&(self.extensions.len() as u16).to_be_bytes());
        data.extend_from_slice(&self.extensions);
        Ok(data)
    }
}

/// A reader of TLS-encoded fields that refuses to run past its input.
struct TlsReader<'a>(&'a [u8]);

impl<'a> TlsReader<'a> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        if self.0.len() < n {
            bail!("a truncated SCT list");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn number(&mut self, width: usize) -> anyhow::Result<u64> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0u64, |n, b| (n << 8) | u64::from(*b)))
    }

    /// A field prefixed by its length in `width` bytes.
    fn vector(&mut self, width: usize) -> anyhow::Result<&'a [u8]> {
        let len = self.number(width)? as usize;
        self.take(len)
    }
}

fn parse_sct_list(bytes: &[u8]) -> anyhow::Result<Vec<Sct>> {
    let mut outer = TlsReader(bytes);
    let mut list = TlsReader(outer.vector(2)?);
    let mut scts = Vec::new();
    while !list.0.is_empty() {
        if scts.len() == MAX_SCTS {
            bail!("more than {MAX_SCTS} SCTs in one certificate");
        }
        let mut sct = TlsReader(list.vector(2)?);
        if sct.number(1)? != 0 {
            // A later version: not one this resource can check.
            continue;
        }
        let log_id: [u8; 32] = sct.take(32)?.try_into().context("an SCT's log ID")?;
        let timestamp_ms = sct.number(8)?;
        let extensions = sct.vector(2)?.to_vec();
        let _hash_algorithm = sct.number(1)?;
        let _signature_algorithm = sct.number(1)?;
        let signature = sct.vector(2)?.to_vec();
        scts.push(Sct {
            log_id,
            timestamp_ms,
            extensions,
            signature,
        });
    }
    Ok(scts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sct_list_is_read_within_its_bounds() {
        // One SCT: version 0, log ID of 0x11s, time 1000 ms, no extensions,
        // SHA-256/ECDSA, a 3-byte signature.
        let mut sct = vec![0u8];
        sct.extend([0x11; 32]);
        sct.extend(1000u64.to_be_bytes());
        sct.extend([0, 0, 4, 3, 0, 3, 1, 2, 3]);
        let mut list = (sct.len() as u16).to_be_bytes().to_vec();
        list.extend(&sct);
        let mut bytes = (list.len() as u16).to_be_bytes().to_vec();
        bytes.extend(&list);
        let scts = parse_sct_list(&bytes).expect("parses");
        assert_eq!(scts.len(), 1);
        assert_eq!(scts[0].timestamp_ms, 1000);
        assert_eq!(scts[0].signature, [1, 2, 3]);
        let truncated = &bytes[..bytes.len() - 1];
        assert!(parse_sct_list(truncated).is_err());
        // A length claiming more than there is.
        assert!(parse_sct_list(&[0xff, 0xff, 0]).is_err());
    }
}
