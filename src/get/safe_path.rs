//! Paths of tar entries resolved inside the rootfs, so no entry can write or
//! link outside it.
//!
//! Symlinks in the tree are followed as the container would see them: an
//! absolute target and `..` both stop at the rootfs root (merged-/usr images
//! write `lib/x` through `lib -> usr/lib`). Resolution is done here, one
//! component at a time, rather than with openat2(RESOLVE_IN_ROOT), which
//! kernels before 5.6 lack.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

/// Symlinks followed while resolving one path, as the kernel's limit.
const MAX_SYMLINKS: usize = 40;

/// The components of an entry name, relative to the root: a leading `/` is
/// dropped and `.` skipped; `..` steps back, and a `..` above the root is
/// refused (no legitimate layer has one).
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

/// The real path of `components` under `root`, following symlinks in every
/// component but the last (and the last too with `follow_last`), never
/// leaving `root`.
pub fn resolve(root: &Path, components: &[OsString], follow_last: bool) -> anyhow::Result<PathBuf> {
    let mut todo: VecDeque<OsString> = components.iter().cloned().collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == OsStr::new(".") || part.is_empty() {
            continue;
        }
        if part == OsStr::new("..") {
            resolved.pop();
            continue;
        }
        if todo.is_empty() && !follow_last {
            resolved.push(part);
            break;
        }
        let candidate = join(root, &resolved).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    bail!(
                        "too many levels of symbolic links at {}",
                        candidate.display()
                    );
                }
                let target = std::fs::read_link(&candidate)
                    .with_context(|| format!("reading link {}", candidate.display()))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, c) in target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(p) => Some(p.to_owned()),
                        Component::ParentDir => Some(OsString::from("..")),
                        _ => None,
                    })
                    .enumerate()
                {
                    todo.insert(i, c);
                }
            }
            _ => resolved.push(part),
        }
    }
    Ok(join(root, &resolved))
}

fn join(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn comps(s: &str) -> Vec<OsString> {
        entry_components(Path::new(s)).unwrap()
    }

    #[test]
    fn entry_names() {
        assert_eq!(comps("./a/b"), ["a", "b"]);
        assert_eq!(comps("/etc/passwd"), ["etc", "passwd"]);
        assert_eq!(comps("a/../b"), ["b"]);
        assert!(comps(".").is_empty());
        assert!(entry_components(Path::new("../x")).is_err());
        assert!(entry_components(Path::new("a/../../x")).is_err());
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("/", root.join("up-abs")).unwrap();
        symlink("../../../..", root.join("up-rel")).unwrap();
        symlink("/etc", root.join("etc-link")).unwrap();
        assert_eq!(
            resolve(&root, &comps("lib/x.so"), false).unwrap(),
            root.join("usr/lib/x.so")
        );
        assert_eq!(
            resolve(&root, &comps("up-abs/escape"), false).unwrap(),
            root.join("escape")
        );
        assert_eq!(
            resolve(&root, &comps("up-rel/escape"), false).unwrap(),
            root.join("escape")
        );
        assert_eq!(
            resolve(&root, &comps("etc-link/passwd"), false).unwrap(),
            root.join("etc/passwd")
        );
        // The last component is not followed unless asked.
        assert_eq!(
            resolve(&root, &comps("etc-link"), false).unwrap(),
            root.join("etc-link")
        );
        assert_eq!(
            resolve(&root, &comps("etc-link"), true).unwrap(),
            root.join("etc")
        );
        symlink("loop", root.join("loop")).unwrap();
        assert!(resolve(&root, &comps("loop/x"), false).is_err());
    }
}
