//! cosign's keys: PEM public keys (`source.cosign_public_key`) and private
//! keys, plain PKCS#8 or in cosign's encrypted format (`params.sign.key`),
//! ECDSA P-256 or Ed25519.
//!
//! The curves are RustCrypto's (`p256`, `ed25519-dalek`), the KDF and cipher
//! of encrypted keys too (`scrypt`, `crypto_secretbox`). What is written here
//! is only the envelope of cosign's encrypted key (a JSON document naming
//! those two), which no crate reads short of the whole `sigstore` crate (156
//! more crates, measured).

use anyhow::{anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_secretbox::aead::{Aead, KeyInit};
use ed25519_dalek::Signer as _;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::der::pem;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use serde::Deserialize;

/// PEM labels of cosign's encrypted private keys (the second is older).
const ENCRYPTED_LABELS: [&str; 2] = [
    "ENCRYPTED SIGSTORE PRIVATE KEY",
    "ENCRYPTED COSIGN PRIVATE KEY",
];
/// PEM labels a message may name: fixed strings that say what kind of
/// block was given and nothing of its content.
const WELL_KNOWN_LABELS: [&str; 8] = [
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
    "OPENSSH PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "PUBLIC KEY",
    "RSA PUBLIC KEY",
    "CERTIFICATE",
    "PGP PRIVATE KEY BLOCK",
];
/// scrypt work factors cosign's Go code accepts; anything else is refused
/// (a hostile key file could otherwise ask for gigabytes of memory).
const SCRYPT_N: [u64; 3] = [32768, 65536, 131072];

/// A key signatures are verified with.
#[derive(Clone, Debug)]
pub enum PublicKey {
    /// ECDSA over P-256 with SHA-256, signatures ASN.1 DER.
    EcdsaP256(p256::ecdsa::VerifyingKey),
    /// Ed25519 over the message itself.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (PKIX) of either kind.
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let pem = pem.trim();
        let (label, _) =
            pem::decode_vec(pem.as_bytes()).map_err(|e| anyhow!("not a PEM document ({e})"))?;
        if label != "PUBLIC KEY" {
            bail!("a PEM {label:?} is not a public key (want \"PUBLIC KEY\", as cosign.pub holds)");
        }
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(PublicKey::EcdsaP256(key));
        }
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(PublicKey::Ed25519(key));
        }
        bail!(
            "the public key is neither ECDSA P-256 nor Ed25519 (RSA and other curves are not supported)"
        )
    }

    /// Reads a PKIX `SubjectPublicKeyInfo` (DER) of either kind: a
    /// certificate's key, a transparency log's or a CT log's.
    pub fn from_der(der: &[u8]) -> anyhow::Result<Self> {
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::EcdsaP256(key));
        }
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::Ed25519(key));
        }
        bail!("the key is neither ECDSA P-256 nor Ed25519")
    }

    /// Whether `signature` signs a message whose SHA-256 is `digest` (a
    /// sigstore bundle's message signature, made over the artifact's
    /// digest). Ed25519 signs messages, never digests: always false.
    pub fn verifies_sha256(&self, digest: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        match self {
            PublicKey::EcdsaP256(key) => {
                digest.len() == 32
                    && p256::ecdsa::DerSignature::from_bytes(signature)
                        .is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok())
            }
            PublicKey::Ed25519(_) => false,
        }
    }

    /// Whether `signature` (raw bytes, base64 decoded) signs `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::EcdsaP256(key) => p256::ecdsa::DerSignature::from_bytes(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            PublicKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
        }
    }

    /// The key's PKIX DER.
    pub fn der(&self) -> Vec<u8> {
        let der = match self {
            PublicKey::EcdsaP256(key) => key.to_public_key_der(),
            PublicKey::Ed25519(key) => key.to_public_key_der(),
        };
        der.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }
}

/// A key signatures are made with.
pub enum PrivateKey {
    /// ECDSA over P-256 (deterministic, RFC 6979).
    EcdsaP256(p256::ecdsa::SigningKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrivateKey::EcdsaP256(_) => "PrivateKey::EcdsaP256(<redacted>)",
            PrivateKey::Ed25519(_) => "PrivateKey::Ed25519(<redacted>)",
        })
    }
}

/// The JSON inside cosign's encrypted PEM.
#[derive(Deserialize)]
struct Encrypted {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "UPPERCASE")]
struct KdfParams {
    n: u64,
    #[serde(rename = "r")]
    r: u32,
    #[serde(rename = "p")]
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

impl PrivateKey {
    /// Reads a PEM private key: cosign's encrypted format (decrypted with
    /// `password`, which may be empty) or an unencrypted PKCS#8 `PRIVATE
    /// KEY`.
    ///
    /// Its messages never quote the key: a field that holds a private key
    /// may hold anything a user pasted (`params.sign.key`). Only labels
    /// from a fixed list of well-known ones are named.
    pub fn from_pem(pem: &str, password: &[u8]) -> anyhow::Result<Self> {
        // Whatever precedes the armour (a label line pasted with the key)
        // is skipped, as OpenSSL does.
        let armoured = pem.find("-----BEGIN").map_or(pem, |start| &pem[start..]);
        let (label, body) = pem::decode_vec(armoured.trim().as_bytes()).map_err(|_| {
            anyhow!(
                "not a PEM private key (want the lines from -----BEGIN … PRIVATE KEY----- to \
                 -----END … PRIVATE KEY-----, as cosign generate-key-pair writes them)"
            )
        })?;
        let der = if ENCRYPTED_LABELS.contains(&label) {
            decrypt(&body, password)?
        } else if label == "PRIVATE KEY" {
            body
        } else {
            let named = WELL_KNOWN_LABELS
                .iter()
                .find(|known| **known == label)
                .map_or("a PEM block".to_owned(), |known| format!("a PEM {known:?}"));
            bail!(
                "{named} is not a key this resource reads: use cosign's key \
                 (\"ENCRYPTED SIGSTORE PRIVATE KEY\") or PKCS#8 (\"PRIVATE KEY\"; \
                 `openssl pkcs8 -topk8 -nocrypt` converts others)"
            );
        };
        if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_der(&der) {
            return Ok(PrivateKey::EcdsaP256(key));
        }
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_der(&der) {
            return Ok(PrivateKey::Ed25519(key));
        }
        bail!(
            "the private key is neither ECDSA P-256 nor Ed25519 (RSA and other curves are not supported)"
        )
    }

    /// The signature of `message`, as cosign stores it (before base64).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            PrivateKey::EcdsaP256(key) => {
                let signature: p256::ecdsa::Signature =
                    p256::ecdsa::signature::Signer::sign(key, message);
                signature.to_der().as_bytes().to_vec()
            }
            PrivateKey::Ed25519(key) => key.sign(message).to_bytes().to_vec(),
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            PrivateKey::EcdsaP256(key) => PublicKey::EcdsaP256(*key.verifying_key()),
            PrivateKey::Ed25519(key) => PublicKey::Ed25519(key.verifying_key()),
        }
    }
}

/// The PKCS#8 DER inside cosign's encrypted key: scrypt(password, salt)
/// is the key of a NaCl secretbox.
fn decrypt(body: &[u8], password: &[u8]) -> anyhow::Result<Vec<u8>> {
    let encrypted: Encrypted = serde_json::from_slice(body)
        .map_err(|_| anyhow!("the encrypted key is not cosign's JSON"))?;
    if encrypted.kdf.name != "scrypt" || encrypted.cipher.name != "nacl/secretbox" {
        bail!("the encrypted key does not use scrypt with nacl/secretbox, as cosign's keys do");
    }
    let params = &encrypted.kdf.params;
    if !SCRYPT_N.contains(&params.n) || params.r != 8 || !(1..=4).contains(&params.p) {
        bail!(
            "the encrypted key asks for scrypt parameters cosign does not use (N of 32768 to \
             131072, r=8, p of 1 to 4)"
        );
    }
    let salt = STANDARD
        .decode(&encrypted.kdf.salt)
        .map_err(|_| anyhow!("the key's salt is not base64"))?;
    let nonce = STANDARD
        .decode(&encrypted.cipher.nonce)
        .map_err(|_| anyhow!("the key's nonce is not base64"))?;
    let ciphertext = STANDARD
        .decode(&encrypted.ciphertext)
        .map_err(|_| anyhow!("the key's ciphertext is not base64"))?;
    if nonce.len() != 24 {
        bail!("the key's nonce is not 24 bytes long, as secretbox's are");
    }
    let log_n = params.n.trailing_zeros() as u8;
    let scrypt_params = scrypt::Params::new(log_n, params.r, params.p)
        .map_err(|_| anyhow!("the key's scrypt parameters are not usable"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, &salt, &scrypt_params, &mut key)
        .map_err(|_| anyhow!("scrypt failed on the key's parameters"))?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    let nonce = crypto_secretbox::Nonce::clone_from_slice(&nonce);
    cipher
        .decrypt(&nonce, ciphertext.as_slice())
        .map_err(|_| anyhow!("the key does not decrypt: wrong password, or a damaged key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PKCS#8 P-256 key and its public key, made with Python's
    /// `cryptography` (independent of the crates used here).
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgh+HjIimhAjTGMqAF
8AZMZOqdYgLV2X+y7D+UioaotLWhRANCAASpB84g2zsn0JsI4pG654fuIOXsKecI
xjQaolJgKgsfG4NrmiAAwJlamyYGRClLgiWZ6BosSEucUrZCs4ByUdf9
-----END PRIVATE KEY-----";

    #[test]
    fn a_plain_p256_key_signs_what_its_public_key_verifies() {
        let key = PrivateKey::from_pem(EC_PRIVATE, b"").expect("key");
        let public = key.public_key();
        let signature = key.sign(b"payload");
        assert!(public.verifies(b"payload", &signature));
        assert!(!public.verifies(b"payloaD", &signature));
        let pem =
            pem::encode_string("PUBLIC KEY", pem::LineEnding::LF, &public.der()).expect("pem");
        assert!(
            PublicKey::from_pem(&pem)
                .expect("public")
                .verifies(b"payload", &signature)
        );
    }

    #[test]
    fn refuses_what_is_not_a_key() {
        let err = |pem: &str| format!("{:#}", PublicKey::from_pem(pem).expect_err("refused"));
        assert!(err("hello").contains("not a PEM"));
        assert!(err(EC_PRIVATE).contains("not a public key"));
        let err = format!(
            "{:#}",
            PrivateKey::from_pem(
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----",
                b""
            )
            .expect_err("refused")
        );
        assert!(err.contains("pkcs8"), "{err}");
    }
}
