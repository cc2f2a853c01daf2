//! The independent keyless signer: Sigstore's own JavaScript clients
//! (`tests/sigstore_peer/peer.mjs`: `@sigstore/sign` signing through
//! `@sigstore/mock`'s Fulcio, CT log and Rekor, served on loopback inside
//! the script). `scripts/setup` installs them (`npm ci`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The peer's directory.
fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigstore_peer")
}

/// What one signing run made: files named after the jobs, and the mock
/// instance's `trusted_root.json`.
pub struct Signed {
    pub dir: tempfile::TempDir,
}

impl Signed {
    /// A file the run wrote.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap_or_else(|e| panic!("the peer wrote no {name}: {e}"))
    }

    /// The `.sig` layer annotations and payload a `sig:NAME:` job made:
    /// (signature, certificate, chain, bundle) as cosign's annotations.
    pub fn annotations(&self, name: &str) -> serde_json::Value {
        let made: serde_json::Value =
            serde_json::from_str(&self.read(&format!("{name}.json"))).unwrap();
        serde_json::json!({
            "dev.cosignproject.cosign/signature": made["signature"],
            "dev.sigstore.cosign/certificate": made["certificate"],
            "dev.sigstore.cosign/chain": made["chain"],
            "dev.sigstore.cosign/bundle": made["bundle"],
        })
    }

    /// The trusted root of the run's mock instance.
    pub fn trusted_root(&self) -> String {
        self.read("trusted_root.json")
    }
}

/// One signature to make: `kind` is `sig` (a `.sig` payload), `msg` (a
/// message signature over the bytes) or `dsse` (an envelope of the bytes,
/// an in-toto statement), made as `identity` through `issuer`.
pub struct Job<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub bytes: &'a [u8],
    pub identity: &'a str,
    pub issuer: &'a str,
}

/// Makes every job's signature with one mock instance (one trusted root).
/// `flags`: `--expired` (certificates expired when logged).
pub fn sign(jobs: &[Job<'_>], flags: &[&str]) -> Signed {
    let out = tempfile::tempdir().unwrap();
    let mut list = Vec::new();
    for job in jobs {
        let input = out.path().join(format!("{}.input", job.name));
        std::fs::write(&input, job.bytes).unwrap();
        list.push(serde_json::json!({"kind": job.kind, "name": job.name,
            "file": input, "identity": job.identity, "issuer": job.issuer}));
    }
    let jobs_file = out.path().join("jobs.json");
    std::fs::write(&jobs_file, serde_json::to_vec(&list).unwrap()).unwrap();
    let output = Command::new("node")
        .current_dir(dir())
        .arg("peer.mjs")
        .arg("sign")
        .arg(out.path())
        .arg(&jobs_file)
        .args(flags)
        .output()
        .expect("node runs (scripts/setup installs Node.js and the peer's packages)");
    assert!(
        output.status.success(),
        "the sigstore-js peer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Signed { dir: out }
}
