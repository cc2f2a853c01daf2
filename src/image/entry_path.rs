//! Names of tar entries (layers, docker-save and OCI tarballs) as paths
//! relative to their root.

use std::ffi::OsString;
use std::path::{Component, Path};

use anyhow::bail;

/// The components of an entry name, relative to the root: a leading `/` is
/// dropped and `.` skipped; `..` steps back lexically, and a `..` above the
/// root is refused (no legitimate layer has one).
pub fn entry_components(name: &Path) -> anyhow::Result<Vec<OsString>> {
    let mut parts: Vec<OsString> = Vec::new();
    for component in name.components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    bail!("entry {} points outside the rootfs", name.display());
                }
            }
            Component::Normal(part) => parts.push(part.to_owned()),
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Vec<OsString> {
        entry_components(Path::new(s)).unwrap()
    }

    #[test]
    fn entry_names() {
        assert_eq!(comps("./a/b"), ["a", "b"]);
        assert_eq!(comps("/etc/passwd"), ["etc", "passwd"]);
        assert_eq!(comps("a/../b"), ["b"]);
        assert_eq!(comps("a//b/./"), ["a", "b"]);
        assert!(comps(".").is_empty());
        assert!(entry_components(Path::new("../x")).is_err());
        assert!(entry_components(Path::new("a/../../x")).is_err());
    }
}
