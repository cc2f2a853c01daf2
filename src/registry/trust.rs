//! Trust roots loaded at the first TLS handshake, not when the client is
//! built: a check of a plain-HTTP registry, or one that never connects,
//! does not pay for reading the system bundle (~140 roots) and making trust
//! anchors of them. Concourse runs `check` every minute for every resource.
//! Measured with the resource image's environment (`SSL_CERT_FILE` only),
//! release build, medians of 120 alternating runs: a tag-mode check of a
//! plain-HTTP registry 4.9 → 3.5 ms of CPU; over TLS 5.1 → 4.9 ms (noise).
//! With `SSL_CERT_DIR` set the platform verifier is used as before, which
//! reads every file of that directory when the client is built (~8 ms).
//!
//! The roots are the system bundle (`SSL_CERT_FILE`, or the file OpenSSL
//! would use) plus the source's `ca_certs`; the verification is rustls'
//! own `WebPkiServerVerifier`, built once, to which every call is handed.
//! Only the loading is deferred: nothing is verified by hand here.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A `source.ca_certs` certificate, checked to be a usable trust anchor.
pub type CaCert = CertificateDer<'static>;

/// A server certificate verifier whose roots are read on first use.
#[derive(Debug)]
pub struct LazyRoots {
    bundle: PathBuf,
    extra: Vec<CaCert>,
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl LazyRoots {
    /// Roots from the PEM `bundle` file and `extra`, read when first needed.
    pub fn new(bundle: PathBuf, extra: Vec<CaCert>, provider: Arc<CryptoProvider>) -> Self {
        LazyRoots {
            bundle,
            extra,
            provider,
            verifier: OnceLock::new(),
        }
    }

    /// A rustls client configuration verifying with these roots, offering
    /// HTTP/2 and HTTP/1.1 (as reqwest's own configuration does).
    pub fn client_config(self) -> Result<rustls::ClientConfig, rustls::Error> {
        let provider = self.provider.clone();
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(self))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    fn verifier(&self) -> Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        self.verifier
            .get_or_init(|| self.load())
            .as_ref()
            .map_err(|e| rustls::Error::General(e.clone()))
    }

    fn load(&self) -> Result<Arc<WebPkiServerVerifier>, String> {
        let mut roots = RootCertStore::empty();
        let system = std::fs::read(&self.bundle)
            .map_err(|e| format!("cannot read the CA bundle {}: {e}", self.bundle.display()))?;
        let system: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&system)
            .filter_map(Result::ok)
            .collect();
        // A system bundle may hold certificates webpki cannot use; those
        // are skipped, as reqwest does.
        roots.add_parsable_certificates(system);
        for cert in &self.extra {
            roots
                .add(cert.clone())
                .map_err(|e| format!("a certificate of ca_certs is not a usable root: {e}"))?;
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| format!("no usable trust roots: {e}"))
    }
}

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificates of `ca_certs` entries (PEM, one or more each), each
/// checked to be a usable trust anchor now, so a bad entry is a clear error
/// before anything is sent.
pub fn parse_ca_certs(pems: &[String]) -> anyhow::Result<Vec<CaCert>> {
    let mut certs = Vec::new();
    for (i, pem) in pems.iter().enumerate() {
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|_| anyhow::anyhow!("ca_certs[{i}] is not valid PEM"))?;
            RootCertStore::empty().add(cert.clone()).map_err(|_| {
                anyhow::anyhow!("ca_certs[{i}] is not a certificate that can be a trust root")
            })?;
            certs.push(cert);
            found += 1;
        }
        if found == 0 {
            anyhow::bail!("ca_certs[{i}] contains no PEM certificate");
        }
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_certs_are_checked_when_parsed() {
        assert!(
            parse_ca_certs(&["no pem here".into()])
                .unwrap_err()
                .to_string()
                .contains("contains no PEM certificate")
        );
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(
            parse_ca_certs(&[junk.into()])
                .unwrap_err()
                .to_string()
                .contains("ca_certs[0] is not a certificate that can be a trust root")
        );
    }

    #[test]
    fn nothing_is_read_until_a_handshake_needs_it() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = LazyRoots::new(
            PathBuf::from("/nonexistent/bundle.pem"),
            Vec::new(),
            provider,
        );
        // Building a client configuration reads nothing.
        let roots = Arc::new(roots);
        assert!(roots.verifier.get().is_none());
        // The first verification does, and reports the missing bundle.
        let error = roots.verifier().unwrap_err().to_string();
        assert!(error.contains("cannot read the CA bundle"), "{error}");
    }
}
