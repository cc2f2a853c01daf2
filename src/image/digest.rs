//! Content digests (`sha256:<hex>`), parsed strictly so that a digest from
//! user input or a registry header can be put into a URL without escaping.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};
use sha2::{Digest as _, Sha256};

/// A validated content digest such as `sha256:0123…`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// The digest algorithms the OCI image spec registers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Algorithm {
    /// `sha256`.
    Sha256,
    /// `sha512`.
    Sha512,
}

impl Algorithm {
    /// As digests and layout paths spell it (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// Whether `bytes` hash to this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        let mut hasher = Hasher::new(self.algorithm);
        hasher.update(bytes);
        hasher.finish() == *self
    }

    /// The digest's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lower-case hex part, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl TryFrom<&Digest> for oci_spec::image::Digest {
    type Error = anyhow::Error;

    /// The same digest as `oci-spec`'s type (for library users on the
    /// ecosystem's model); a digest valid here is valid there.
    fn try_from(digest: &Digest) -> anyhow::Result<Self> {
        oci_spec::image::Digest::from_str(&digest.to_string())
            .with_context(|| format!("{digest} as an oci-spec digest"))
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = anyhow::Error;

    /// `oci-spec`'s digest, if its algorithm is one this crate hashes.
    fn try_from(digest: &oci_spec::image::Digest) -> anyhow::Result<Self> {
        digest.to_string().parse()
    }
}

/// A running hash in one digest algorithm, for bytes that stream past.
#[derive(Clone)]
pub enum Hasher {
    /// Hashing with sha256.
    Sha256(Sha256),
    /// Hashing with sha512.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Hashes more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of every byte hashed.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// So a hash can be fed with `io::copy`.
impl std::io::Write for Hasher {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that hashes and counts what it passes on: a blob's digest and
/// size in the same pass that writes it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    bytes: u64,
}

impl<W: std::io::Write> HashingWriter<W> {
    /// Hashes what is written through to `inner`.
    pub fn new(inner: W, algorithm: Algorithm) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(algorithm),
            bytes: 0,
        }
    }

    /// Flushes, and gives back the writer, the digest and the size.
    pub fn finish(mut self) -> std::io::Result<(W, Digest, u64)> {
        self.inner.flush()?;
        Ok((self.inner, self.hasher.finish(), self.bytes))
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl FromStr for Digest {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (algorithm, hex) = s
            .split_once(':')
            .with_context(|| format!("invalid digest {s:?}: expected <algorithm>:<hex>"))?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => bail!("invalid digest {s:?}: unsupported algorithm {other:?}"),
        };
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            bail!(
                "invalid digest {s:?}: expected {} lower-case hex characters",
                algorithm.hex_len()
            );
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_and_from_oci_spec() {
        let ours = Digest::sha256_of(b"x");
        let theirs = oci_spec::image::Digest::try_from(&ours).expect("valid there");
        assert_eq!(theirs.to_string(), ours.to_string());
        assert_eq!(Digest::try_from(&theirs).expect("back"), ours);
    }

    #[test]
    fn parses_and_prints_sha256() {
        let s = format!("sha256:{}", "ab".repeat(32));
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d.hex(), "ab".repeat(32));
    }

    #[test]
    fn rejects_malformed_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            "md5:0123",
            &format!("sha256:{}", "AB".repeat(32)),
            &format!("sha256:{}/x", "ab".repeat(31)),
            "bogus",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn streaming_hash_matches_whole_hash() {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"{\"fake\":");
        h.update(b"\"manifest\"}");
        assert_eq!(h.finish(), Digest::sha256_of(br#"{"fake":"manifest"}"#));
    }

    #[test]
    fn hashes_bytes() {
        // sha256 of {"fake":"manifest"}, as used by the upstream test suite.
        let d = Digest::sha256_of(br#"{"fake":"manifest"}"#);
        assert_eq!(
            d.to_string(),
            "sha256:c4c25c2cd70e3071f08cf124c4b5c656c061dd38247d166d97098d58eeea8aa6"
        );
        assert!(d.matches(br#"{"fake":"manifest"}"#));
        assert!(!d.matches(b"other"));
    }
}
