//! The independent cosign peer (`tests/cosign_peer.py`: Python
//! `cryptography` and PyNaCl following cosign's documented formats), for
//! every test that signs or verifies.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs the peer; its stdout, or `None` when it exited non-zero.
pub fn peer(args: &[&str]) -> Option<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cosign_peer.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (scripts/setup installs cryptography and PyNaCl)");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "the peer failed: {stderr}");
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fresh keys from the peer: `ec.key`/`ec.pub`, `ed.key`/`ed.pub`, and
/// `ec.enc.key`/`ed.enc.key` (cosign's encrypted format, password
/// `secret`).
pub fn peer_keys() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    peer(&["keygen", path.to_str().unwrap(), "secret"]).expect("keygen");
    (dir, path)
}
