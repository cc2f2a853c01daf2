//! A Rekor transparency-log entry and the proofs that it was logged: the
//! signed entry timestamp (SET, the log's promise to include the entry at
//! its integrated time), and the inclusion proof (an RFC 6962 Merkle path
//! to a root hash, that root signed by the log in a checkpoint).
//!
//! Offline by design: nothing here asks Rekor; what the signature carries
//! is checked with the log keys of the trusted root. The integrated time is
//! trusted only once the SET verifies: it is the time the certificate's
//! chain and validity are checked at.
//!
//! RFC 6962's path check is a dozen lines and the signed note a line
//! format; no maintained crate does either without the whole `sigstore`
//! crate, so they are written here, after RFC 9162 §2.1.3.2 and the
//! signed-note format of transparency-dev.

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::trusted_root::TrustedRoot;

/// Hashes in an inclusion proof (a tree of 2^64 leaves needs 64).
pub const MAX_PROOF_HASHES: usize = 64;
/// A log entry body larger than this is not a signature's (Rekor's are a
/// few KiB).
const MAX_BODY_BYTES: usize = 256 << 10;

/// One transparency-log entry, as a bundle or cosign's annotation holds it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// The entry as Rekor stores it (canonical JSON), base64 as given.
    pub body_base64: String,
    /// The time the log says it integrated the entry, Unix seconds.
    pub integrated_time: i64,
    /// The entry's global index.
    pub log_index: i64,
    /// SHA-256 of the log's key.
    pub log_id: Vec<u8>,
    /// The signed entry timestamp.
    pub set: Option<Vec<u8>>,
    /// The inclusion proof, when the entry carries one.
    pub proof: Option<InclusionProof>,
}

/// An RFC 6962 inclusion proof and the checkpoint that signs its root.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    /// The leaf's index in the log's tree (a shard's, not the global one).
    pub index: u64,
    /// The tree's size.
    pub tree_size: u64,
    /// The tree's root hash.
    pub root_hash: Vec<u8>,
    /// The audit path, leaf side first.
    pub hashes: Vec<Vec<u8>>,
    /// The signed note naming the tree's size and root.
    pub checkpoint: String,
}

/// What a Rekor entry body says was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggedSignature {
    /// `hashedrekord` 0.0.1: a signature over a message of this SHA-256.
    Hashed {
        /// SHA-256 of the signed message.
        sha256: Vec<u8>,
        /// The signature.
        signature: Vec<u8>,
        /// The signer's certificate, PEM.
        certificate: String,
    },
    /// `dsse` 0.0.1: an envelope whose payload has this SHA-256, and the
    /// signatures (with their certificates) it carried.
    Envelope {
        /// SHA-256 of the envelope's payload.
        payload_sha256: Vec<u8>,
        /// Each signature and its certificate, PEM.
        signatures: Vec<(Vec<u8>, String)>,
    },
}

impl LogEntry {
    /// The body's bytes.
    pub fn body(&self) -> anyhow::Result<Vec<u8>> {
        if self.body_base64.len() > MAX_BODY_BYTES * 4 / 3 + 4 {
            bail!("the log entry's body is larger than a signature's");
        }
        STANDARD
            .decode(&self.body_base64)
            .map_err(|_| anyhow::anyhow!("the log entry's body is not base64"))
    }

    /// Checks the entry against the trusted root and returns the time it
    /// proves: the SET with the key of the log the entry names (valid at
    /// the integrated time), and the inclusion proof when there is one.
    pub fn verify(&self, root: &TrustedRoot) -> anyhow::Result<i64> {
        let log = root.tlog(&self.log_id).with_context(|| {
            format!(
                "the entry is in a transparency log the trusted root does not name ({})",
                hex::encode(&self.log_id)
            )
        })?;
        if !log.valid.contains(self.integrated_time) {
            bail!("the transparency log's key was not valid at the entry's integrated time");
        }
        let Some(set) = &self.set else {
            bail!(
                "the entry has no signed entry timestamp (its time cannot be trusted without one; \
                 RFC 3161 timestamps are not read yet)"
            );
        };
        let payload = serde_json::json!({
            "body": self.body_base64,
            "integratedTime": self.integrated_time,
            "logID": hex::encode(&self.log_id),
            "logIndex": self.log_index,
        });
        // serde_json's map is ordered by key and compact: RFC 8785's form
        // for these four ASCII fields.
        let canonical = serde_json::to_vec(&payload).context("encoding the SET payload")?;
        if !log.key.verifies(&canonical, set) {
            bail!("the signed entry timestamp does not verify with the transparency log's key");
        }
        if let Some(proof) = &self.proof {
            let leaf = leaf_hash(&self.body()?);
            proof.verify(&leaf, &self.log_id, root)?;
        }
        Ok(self.integrated_time)
    }

    /// What the entry says was signed.
    pub fn logged_signature(&self) -> anyhow::Result<LoggedSignature> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            kind: String,
            api_version: String,
            spec: serde_json::Value,
        }
        let body: Body = serde_json::from_slice(&self.body()?)
            .map_err(|_| anyhow::anyhow!("the log entry's body is not a Rekor entry"))?;
        let spec = &body.spec;
        let text = |v: &serde_json::Value, what: &str| -> anyhow::Result<String> {
            v.as_str()
                .map(str::to_owned)
                .with_context(|| format!("the log entry has no {what}"))
        };
        let base64 = |v: &serde_json::Value, what: &str| -> anyhow::Result<Vec<u8>> {
            STANDARD
                .decode(text(v, what)?)
                .map_err(|_| anyhow::anyhow!("the log entry's {what} is not base64"))
        };
        let sha256 = |v: &serde_json::Value, what: &str| -> anyhow::Result<Vec<u8>> {
            if v["algorithm"].as_str() != Some("sha256") {
                bail!("the log entry's {what} is not a SHA-256");
            }
            hex::decode(text(&v["value"], what)?)
                .map_err(|_| anyhow::anyhow!("the log entry's {what} is not hex"))
        };
        let pem = |bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the log entry's key is not PEM"))
        };
        match (body.kind.as_str(), body.api_version.as_str()) {
            ("hashedrekord", "0.0.1") => Ok(LoggedSignature::Hashed {
                sha256: sha256(&spec["data"]["hash"], "data hash")?,
                signature: base64(&spec["signature"]["content"], "signature")?,
                certificate: pem(base64(
                    &spec["signature"]["publicKey"]["content"],
                    "public key",
                )?)?,
            }),
            ("dsse", "0.0.1") => {
                let list = spec["signatures"]
                    .as_array()
                    .context("the log entry has no signatures")?;
                let mut signatures = Vec::new();
                for s in list.iter().take(16) {
                    signatures.push((
                        base64(&s["signature"], "signature")?,
                        pem(base64(&s["verifier"], "verifier")?)?,
                    ));
                }
                Ok(LoggedSignature::Envelope {
                    payload_sha256: sha256(&spec["payloadHash"], "payload hash")?,
                    signatures,
                })
            }
            (kind, version) => {
                bail!("a {kind:?} {version} log entry (hashedrekord 0.0.1 and dsse 0.0.1 are read)")
            }
        }
    }
}

/// RFC 6962's hash of a leaf.
pub fn leaf_hash(body: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(body);
    hasher.finalize().to_vec()
}

fn node_hash(left: &[u8], right: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().to_vec()
}

impl InclusionProof {
    /// Checks that `leaf` is in the tree the proof names, and that the log
    /// `log_id` signed that tree's checkpoint.
    pub fn verify(&self, leaf: &[u8], log_id: &[u8], root: &TrustedRoot) -> anyhow::Result<()> {
        if self.hashes.len() > MAX_PROOF_HASHES {
            bail!("an inclusion proof of {} hashes", self.hashes.len());
        }
        let computed = root_from_path(self.index, self.tree_size, leaf, &self.hashes)
            .context("the inclusion proof does not fit its tree")?;
        if computed != self.root_hash {
            bail!("the inclusion proof does not lead from the entry to the tree's root");
        }
        let note = Checkpoint::parse(&self.checkpoint)?;
        if note.tree_size != self.tree_size || note.root_hash != self.root_hash {
            bail!("the checkpoint names another tree than the inclusion proof");
        }
        let log = root
            .tlog(log_id)
            .context("the checkpoint's log is not in the trusted root")?;
        let signed = note.signatures.iter().any(|(hint, signature)| {
            log_id.starts_with(hint) && log.key.verifies(note.body.as_bytes(), signature)
        });
        if !signed {
            bail!("the checkpoint is not signed by the transparency log's key");
        }
        Ok(())
    }
}

/// The root hash an audit path leads to (RFC 9162 §2.1.3.2), or `None`
/// when the path does not fit a tree of `size` leaves.
fn root_from_path(index: u64, size: u64, leaf: &[u8], path: &[Vec<u8>]) -> Option<Vec<u8>> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut hash = leaf.to_vec();
    for sibling in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            hash = node_hash(sibling, &hash);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(hash)
}

/// A signed note: the body (origin, tree size, base64 root hash, optional
/// lines) and its signature lines `— <name> <base64(key hint ‖ signature)>`.
struct Checkpoint {
    body: String,
    tree_size: u64,
    root_hash: Vec<u8>,
    signatures: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Checkpoint {
    fn parse(text: &str) -> anyhow::Result<Self> {
        if text.len() > 64 << 10 {
            bail!("a checkpoint larger than a signed note");
        }
        let split = text
            .find("\n\n")
            .context("the checkpoint is not a signed note (no blank line)")?;
        let body = &text[..=split];
        let mut lines = body.lines();
        let _origin = lines.next().context("the checkpoint has no origin")?;
        let tree_size = lines
            .next()
            .and_then(|l| l.parse().ok())
            .context("the checkpoint has no tree size")?;
        let root_hash = lines
            .next()
            .and_then(|l| STANDARD.decode(l).ok())
            .context("the checkpoint has no root hash")?;
        let signatures = text[split + 2..]
            .lines()
            .take(16)
            .filter_map(|line| {
                let rest = line.strip_prefix("\u{2014} ")?;
                let (_name, signature) = rest.rsplit_once(' ')?;
                let bytes = STANDARD.decode(signature).ok()?;
                (bytes.len() > 4).then(|| (bytes[..4].to_vec(), bytes[4..].to_vec()))
            })
            .collect();
        Ok(Checkpoint {
            body: body.to_owned(),
            tree_size,
            root_hash,
            signatures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 §2.1: the largest power of two below `n`.
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn tree_root(leaves: &[Vec<u8>]) -> Vec<u8> {
        if leaves.len() == 1 {
            return leaves[0].clone();
        }
        let k = split(leaves.len());
        node_hash(&tree_root(&leaves[..k]), &tree_root(&leaves[k..]))
    }

    fn path(leaves: &[Vec<u8>], index: usize) -> Vec<Vec<u8>> {
        if leaves.len() == 1 {
            return Vec::new();
        }
        let k = split(leaves.len());
        if index < k {
            let mut p = path(&leaves[..k], index);
            p.push(tree_root(&leaves[k..]));
            p
        } else {
            let mut p = path(&leaves[k..], index - k);
            p.push(tree_root(&leaves[..k]));
            p
        }
    }

    #[test]
    fn every_leaf_of_trees_of_every_size_up_to_33_is_proven_and_no_other() {
        for size in 1..=33usize {
            let leaves: Vec<Vec<u8>> = (0..size).map(|i| leaf_hash(&[i as u8])).collect();
            let root = tree_root(&leaves);
            for index in 0..size {
                let proof = path(&leaves, index);
                let got = root_from_path(index as u64, size as u64, &leaves[index], &proof);
                assert_eq!(got.as_ref(), Some(&root), "size {size} index {index}");
                // Another leaf at the same place does not reach the root.
                let other = leaf_hash(b"other");
                assert_ne!(
                    root_from_path(index as u64, size as u64, &other, &proof).as_ref(),
                    Some(&root)
                );
                // Nor does the proof at another index.
                if size > 1 {
                    let moved = (index + 1) % size;
                    assert_ne!(
                        root_from_path(moved as u64, size as u64, &leaves[index], &proof).as_ref(),
                        Some(&root),
                        "size {size} index {index} moved to {moved}"
                    );
                }
            }
        }
        assert_eq!(root_from_path(3, 3, &[0; 32], &[]), None);
    }

    #[test]
    fn a_checkpoint_is_read_as_a_signed_note() {
        let text = "rekor.sigstore.dev - 1\n12\nAAAA\n\n\u{2014} rekor.sigstore.dev AQIDBAUG\n";
        let note = Checkpoint::parse(text).expect("parses");
        assert_eq!(note.body, "rekor.sigstore.dev - 1\n12\nAAAA\n");
        assert_eq!(note.tree_size, 12);
        assert_eq!(note.signatures, vec![(vec![1, 2, 3, 4], vec![5, 6])]);
        assert!(Checkpoint::parse("no blank line").is_err());
    }
}
