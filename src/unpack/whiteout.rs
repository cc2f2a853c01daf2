//! Whiteouts (`.wh.<name>`, `.wh..wh..opq`) and the removal of what they
//! hide: names matched on raw bytes, trees removed through directory
//! handles, never following a symlink, keeping what the current layer
//! wrote.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use anyhow::{Context, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::in_root::{DirHandle, FileId, file_type, lstat_at};
use super::shown;

/// Directory levels a whiteout or replacement removes below its target
/// (each level holds one open directory while it is emptied).
const MAX_REMOVE_DEPTH: usize = 256;

/// What a layer entry's base name says about whiteouts (matched on raw
/// bytes: names need not be UTF-8).
pub enum Marker<'a> {
    /// `.wh..wh..opq`: hide everything lower layers put in this directory.
    Opaque,
    /// `.wh.<name>`: hide `<name>` of lower layers.
    Hide(&'a OsStr),
    /// Other `.wh..wh.*` names: AUFS bookkeeping, not content.
    AufsMeta,
    /// An ordinary entry.
    None,
}

pub fn marker(base: &OsStr) -> anyhow::Result<Marker<'_>> {
    let bytes = base.as_bytes();
    if bytes == b".wh..wh..opq" {
        return Ok(Marker::Opaque);
    }
    if bytes.starts_with(b".wh..wh.") {
        return Ok(Marker::AufsMeta);
    }
    match bytes.strip_prefix(b".wh.") {
        Some(b"" | b"." | b"..") => {
            bail!("whiteout {base:?} names no file (empty, '.' or '..'): refused")
        }
        Some(hidden) => Ok(Marker::Hide(OsStr::from_bytes(hidden))),
        None => Ok(Marker::None),
    }
}

/// Removes `name` in `dir` and everything under it, except what `keep`
/// names (then the directories holding it stay too). Returns whether
/// anything was kept. Symlinks are removed, never followed.
pub fn remove_tree(
    dir: &DirHandle,
    name: &OsStr,
    keep: &dyn Fn(FileId, &OsStr) -> bool,
    removed_dir: &mut dyn FnMut(FileId),
    depth: usize,
) -> anyhow::Result<bool> {
    let Some(stat) = lstat_at(dir, name)? else {
        return Ok(false);
    };
    let kept_self = keep(dir.id, name);
    if file_type(&stat) != FileType::Directory {
        if !kept_self {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .with_context(|| format!("removing {}", shown(name)))?;
        }
        return Ok(kept_self);
    }
    if depth >= MAX_REMOVE_DEPTH {
        bail!("removing a directory tree nested deeper than {MAX_REMOVE_DEPTH} levels: refused");
    }
    let child = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", shown(name)))?;
    let child = DirHandle::from_fd(child)?;
    let kept_inside = remove_children(&child, keep, removed_dir, depth + 1)?;
    if !kept_self && !kept_inside {
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
            .with_context(|| format!("removing {}", shown(name)))?;
        // Its inode may be reused: whatever was pending for it must not
        // land on another.
        removed_dir(child.id);
    }
    Ok(kept_self || kept_inside)
}

/// [`remove_tree`] for every entry of `dir`; `dir` itself stays.
pub fn remove_children(
    dir: &DirHandle,
    keep: &dyn Fn(FileId, &OsStr) -> bool,
    removed_dir: &mut dyn FnMut(FileId),
    depth: usize,
) -> anyhow::Result<bool> {
    // Names first, then removals: a directory is not changed while read.
    let mut names = Vec::new();
    // Handles from the resolver are O_PATH, which cannot list: reopen.
    let listing = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .context("opening a directory")?;
    for item in rustix::fs::Dir::new(listing).context("reading a directory")? {
        let item = item.context("reading a directory")?;
        let name = item.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    let mut kept = false;
    for name in names {
        kept |= remove_tree(dir, &name, keep, removed_dir, depth)?;
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names_on_raw_bytes() {
        fn m(b: &[u8]) -> anyhow::Result<Marker<'_>> {
            marker(OsStr::from_bytes(b))
        }
        assert!(matches!(m(b".wh..wh..opq"), Ok(Marker::Opaque)));
        assert!(matches!(m(b".wh..wh.plnk"), Ok(Marker::AufsMeta)));
        assert!(matches!(m(b".wh.caf\xe9"), Ok(Marker::Hide(h)) if h.as_bytes() == b"caf\xe9"));
        assert!(matches!(m(b"plain"), Ok(Marker::None)));
        for bad in [&b".wh."[..], b".wh..", b".wh..."] {
            let err = m(bad).err().unwrap().to_string();
            assert!(err.contains("names no file"), "{err}");
        }
    }
}
