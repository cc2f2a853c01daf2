//! A directory around a destination, with canaries a hostile layer would
//! like to reach, and snapshots that show whether anything outside the
//! rootfs changed. Shared by the hostile-layer corpus, the layer fuzzer
//! (property tests) and the cargo-fuzz target.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// Canaries: `canary/` (mode 0750, with `file`, `sub/inner`, `q/`),
    /// `canary-file`, `canary-link` (symlink), `hard-a`/`hard-b` (one inode),
    /// and `dest/keep-me` (a file of the user's in the destination).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        // Whatever the umask: unprivileged runs must reach `dest/`.
        std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mk = |p: &str| std::fs::create_dir_all(s.join(p)).unwrap();
        mk("canary/sub");
        mk("canary/q");
        mk("dest");
        std::fs::write(s.join("canary/file"), "secret").unwrap();
        std::fs::write(s.join("canary/sub/inner"), "inner").unwrap();
        std::fs::write(s.join("canary-file"), "canary").unwrap();
        std::fs::write(s.join("hard-a"), "linked").unwrap();
        std::fs::hard_link(s.join("hard-a"), s.join("hard-b")).unwrap();
        std::os::unix::fs::symlink(s.join("canary/file"), s.join("canary-link")).unwrap();
        std::fs::write(s.join("dest/keep-me"), "the user's file").unwrap();
        for (p, mode) in [
            ("canary", 0o750),
            ("canary/q", 0o711),
            ("canary/file", 0o640),
        ] {
            std::fs::set_permissions(s.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
        for p in [
            "canary",
            "canary/sub",
            "canary/q",
            "canary/file",
            "canary-file",
            "dest",
        ] {
            filetime::set_file_times(s.join(p), old, old).unwrap();
        }
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An absolute path in the sandbox, as a layer would name it.
    pub fn abs(&self, p: &str) -> String {
        format!("{}/{p}", self.path().display())
    }

    pub fn dest(&self) -> PathBuf {
        self.path().join("dest")
    }

    /// Everything in the sandbox but `dest/rootfs` and `dest/root-*`: path
    /// → what it is, its mode, owner, links and mtime.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        snapshot(self.path(), self.path(), &mut found);
        found
    }
}

fn snapshot(base: &Path, dir: &Path, found: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
        if rel == "dest/rootfs" || rel.starts_with("dest/root-") {
            continue;
        }
        let m = std::fs::symlink_metadata(&p).unwrap();
        // The destination's own mtime and link count change when outputs
        // are written.
        let (mtime, links) = if rel == "dest" {
            (String::new(), 0)
        } else {
            (format!("{}.{}", m.mtime(), m.mtime_nsec()), m.nlink())
        };
        found.insert(
            rel,
            format!(
                "{} mode={:o} owner={}:{} links={links} mtime={mtime}",
                describe(&p, &m),
                m.mode(),
                m.uid(),
                m.gid(),
            ),
        );
        if m.is_dir() {
            snapshot(base, &p, found);
        }
    }
}

fn describe(p: &Path, m: &std::fs::Metadata) -> String {
    let t = m.file_type();
    if t.is_symlink() {
        format!(
            "link {}",
            std::fs::read_link(p)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .escape_ascii()
        )
    } else if t.is_dir() {
        "dir".to_owned()
    } else if t.is_fifo() {
        "fifo".to_owned()
    } else if t.is_char_device() || t.is_block_device() {
        format!("device {}", m.rdev())
    } else {
        format!(
            "file {}",
            hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
        )
    }
}

/// What changed between two snapshots, one line per path.
pub fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", before.get(k), after.get(k)))
        .collect()
}

/// Every path under `root` (names escaped, so non-UTF-8 names stay
/// distinct) with its type, mode, owner and link target or contents.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    tree_into(root, root, &mut found);
    found
}

fn tree_into(base: &Path, dir: &Path, found: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p
            .strip_prefix(base)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .escape_ascii()
            .to_string();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let what = describe(&p, &m);
        let what = if m.file_type().is_symlink() {
            what
        } else {
            format!("{what} {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid())
        };
        found.insert(rel, what);
        if m.is_dir() {
            tree_into(base, &p, found);
        }
    }
}
