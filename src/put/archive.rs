//! `params.package.path` naming an archive (`.zip`, `.tar`, `.tar.gz`,
//! `.tgz`, `.tar.zst`): unpacked into a temporary directory, then packed
//! exactly like a directory, so an archive and the tree it holds give the
//! same digest.
//!
//! Every name in an archive is hostile: the unpacking is the rootfs writer
//! `in` applies layers with (in-root resolution, no link followed, `..`
//! refused). A zip also has its names checked up front (absolute or climbing
//! names refused) and its symlinks too: one pointing outside the package
//! would point at the host's files in the image.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

use crate::image::entry_path::entry_components;
use crate::unpack::rootfs::RootfsWriter;

/// What kind of archive a path names, by its extension; `None` for other
/// files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    Zip,
    /// A tar, plain or compressed (gzip and zstd are recognised by content).
    Tar,
}

impl ArchiveKind {
    pub fn of(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".zip") {
            Some(ArchiveKind::Zip)
        } else if [".tar", ".tar.gz", ".tgz", ".tar.zst"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            Some(ArchiveKind::Tar)
        } else {
            None
        }
    }
}

/// Longest zip symlink target read (a path, not data).
const MAX_LINK_TARGET: u64 = 4096;

/// Unpacks `path` into a new temporary directory; its `root` subdirectory
/// holds the files. The directory goes with the returned guard.
pub fn unpack(path: &Path, kind: ArchiveKind) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("registry-image-package-")
        .tempdir()
        .context("creating a temporary directory to unpack the archive")?;
    let root = dir.path().join("root");
    std::fs::create_dir(&root)?;
    let mut writer = RootfsWriter::new(&root)?;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    match kind {
        ArchiveKind::Tar => {
            let stream =
                crate::image::compression::decompress(BufReader::with_capacity(256 << 10, file))?;
            writer.apply_layer(stream)?;
        }
        ArchiveKind::Zip => {
            // The zip's entries, as a tar stream the rootfs writer applies.
            let (reader, pipe) = io::pipe()?;
            std::thread::scope(|scope| -> anyhow::Result<()> {
                let converter = scope.spawn(move || zip_to_tar(file, pipe));
                let applied = writer.apply_layer(reader);
                let converted = converter
                    .join()
                    .map_err(|_| anyhow::anyhow!("the zip reading thread failed"))?;
                // The zip's own error is the cause; the tar side only saw
                // its stream end.
                converted?;
                applied
            })?;
        }
    }
    writer.finish()?;
    if kind == ArchiveKind::Zip {
        check_links_in_tree(&root)?;
    }
    Ok((dir, root))
}

/// Symbolic links followed while resolving one link before it counts as a
/// loop (Linux's own limit).
const MAX_LINK_HOPS: usize = 40;

/// Every symlink of the unpacked zip, resolved through the tree as the
/// writer built it (where each really sits, following the links its target
/// passes through), must stay inside the package. The per-entry check in
/// [`check_link`] reads names alone, which a chain defeats: `a/up -> ..`
/// then `a/up/esc -> ../../x` is written by the in-root writer as `esc`
/// at the top, pointing two levels above it.
fn check_links_in_tree(root: &Path) -> anyhow::Result<()> {
    for (name, target) in crate::image::tree_layer::symlinks(root)? {
        if !resolves_inside(root, &name, &target) {
            bail!(
                "zip symlink {:?} points outside the package ({:?}, through the links on its way)",
                name.display().to_string(),
                target.display().to_string()
            );
        }
    }
    Ok(())
}

/// Whether `target`, read from the link at `name` (relative to `root`),
/// stays under `root` when followed through the tree: an absolute target,
/// a `..` above the top, or more than [`MAX_LINK_HOPS`] links is "no". A
/// part that does not exist ends the walk inside (a dangling link in the
/// package points at nothing outside it).
fn resolves_inside(root: &Path, name: &Path, target: &Path) -> bool {
    // Where the walk stands: names below `root`, real directories until a
    // part is missing (below which nothing exists, so no link either).
    let mut at: Vec<std::ffi::OsString> = name
        .parent()
        .map(|p| p.iter().map(|c| c.to_os_string()).collect())
        .unwrap_or_default();
    let mut missing = false;
    // What is left to walk, next first.
    let mut queue: std::collections::VecDeque<Part> = parts(target).collect();
    let mut hops = 0;
    while let Some(part) = queue.pop_front() {
        match part {
            Part::Root => return false,
            Part::Up => {
                if at.pop().is_none() {
                    return false;
                }
            }
            Part::Name(step) => {
                at.push(step);
                if missing {
                    continue;
                }
                let host = root.join(at.iter().collect::<PathBuf>());
                match std::fs::symlink_metadata(&host) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        hops += 1;
                        let next = match std::fs::read_link(&host) {
                            Ok(next) if hops <= MAX_LINK_HOPS => next,
                            _ => return false,
                        };
                        at.pop();
                        for part in parts(&next).rev() {
                            queue.push_front(part);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => missing = true,
                }
            }
        }
    }
    true
}

/// One step of a link target.
enum Part {
    /// An absolute start.
    Root,
    /// `..`.
    Up,
    /// A name (`.` is no step).
    Name(std::ffi::OsString),
}

fn parts(path: &Path) -> impl DoubleEndedIterator<Item = Part> + '_ {
    path.components().filter_map(|c| match c {
        Component::RootDir | Component::Prefix(_) => Some(Part::Root),
        Component::ParentDir => Some(Part::Up),
        Component::Normal(name) => Some(Part::Name(name.to_os_string())),
        Component::CurDir => None,
    })
}

/// Writes a zip's entries to `out` as a tar, checking every name and link.
fn zip_to_tar(file: File, out: impl io::Write) -> anyhow::Result<()> {
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).context("reading the zip")?;
    let mut tar = tar::Builder::new(out);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).context("reading the zip")?;
        let name = entry
            .name()
            .context("reading the zip: an entry name")?
            .into_owned();
        check_name(&name)?;
        let mode = entry.unix_mode();
        let is_link = mode.is_some_and(|m| m & 0o170000 == 0o120000);
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if entry.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(mode.map_or(0o755, |m| m & 0o7777));
            header.set_size(0);
            tar.append_data(&mut header, &name, io::empty())?;
        } else if is_link {
            let mut target = String::new();
            entry
                .by_ref()
                .take(MAX_LINK_TARGET + 1)
                .read_to_string(&mut target)
                .with_context(|| format!("zip entry {name:?}: reading its link target"))?;
            if target.len() as u64 > MAX_LINK_TARGET {
                bail!("zip entry {name:?}: link target longer than {MAX_LINK_TARGET} bytes");
            }
            check_link(&name, &target)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, &name, &target)?;
        } else {
            let size = entry.size();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(mode.map_or(0o644, |m| m & 0o7777));
            header.set_size(size);
            // Exactly the declared size: more is a lie, less a broken zip.
            let mut data = entry.by_ref().take(size);
            tar.append_data(&mut header, &name, &mut data)
                .with_context(|| format!("zip entry {name:?}"))?;
            let mut probe = [0u8; 1];
            if data.limit() != 0 || entry.read(&mut probe)? != 0 {
                bail!("zip entry {name:?} does not hold the {size} bytes it declares");
            }
        }
    }
    tar.into_inner().context("unpacking the zip")?;
    Ok(())
}

/// A zip entry name must stay inside the package: no absolute path, no `..`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let path = Path::new(name);
    let escapes = path.is_absolute()
        || name.contains('\\')
        || path.components().any(|c| matches!(c, Component::ParentDir));
    if escapes || name.contains('\0') {
        bail!("zip entry {name:?} would land outside the package");
    }
    Ok(())
}

/// A zip symlink must point inside the package: relative, and not climbing
/// above the root from where it sits (resolved lexically, as entry names
/// are).
fn check_link(name: &str, target: &str) -> anyhow::Result<()> {
    let from = Path::new(name.trim_end_matches('/'))
        .parent()
        .unwrap_or(Path::new(""));
    if target.starts_with('/')
        || target.contains('\0')
        || entry_components(&from.join(target)).is_err()
    {
        bail!("zip symlink {name:?} points outside the package ({target:?})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_resolved_through_the_tree() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        symlink("..", root.join("a/up")).unwrap();
        // Where the in-root writer puts `a/up/esc`: at the top.
        symlink("../../etc/shadow", root.join("esc")).unwrap();
        symlink("a/up/a/up/a", root.join("loopy")).unwrap();
        symlink("up/a/b", root.join("a/fine")).unwrap();
        symlink("a/up/..", root.join("sneaky")).unwrap();
        symlink("missing/../../../x", root.join("a/dangling-out")).unwrap();
        symlink("missing/x", root.join("a/dangling-in")).unwrap();
        symlink("self", root.join("self")).unwrap();
        let inside = |name: &str| {
            let target = std::fs::read_link(root.join(name)).unwrap();
            resolves_inside(&root, Path::new(name), &target)
        };
        assert!(inside("a/up"));
        assert!(!inside("esc"));
        assert!(inside("loopy"));
        assert!(inside("a/fine"));
        assert!(!inside("sneaky"));
        assert!(!inside("a/dangling-out"));
        assert!(inside("a/dangling-in"));
        assert!(!inside("self"), "a loop is refused");
        assert!(check_links_in_tree(&root).is_err());
    }

    #[test]
    fn names_and_links_must_stay_inside() {
        for ok in ["a", "a/b/c.txt", "dir/", "./x"] {
            check_name(ok).unwrap();
        }
        for bad in ["/etc/passwd", "../x", "a/../../x", "a\\..\\x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        check_link("a/b/link", "../c").unwrap();
        check_link("a/link", "b/../c").unwrap();
        check_link("link", "a/b").unwrap();
        for (name, target) in [
            ("link", "../x"),
            ("a/link", "../../x"),
            ("a/link", "/etc/passwd"),
            ("a/link", "b/../../../x"),
            ("./link", "../x"),
        ] {
            assert!(check_link(name, target).is_err(), "{name} -> {target}");
        }
        assert_eq!(
            ArchiveKind::of(Path::new("x/app.ZIP")),
            Some(ArchiveKind::Zip)
        );
        assert_eq!(
            ArchiveKind::of(Path::new("app.tgz")),
            Some(ArchiveKind::Tar)
        );
        assert_eq!(
            ArchiveKind::of(Path::new("app.tar.zst")),
            Some(ArchiveKind::Tar)
        );
        assert_eq!(ArchiveKind::of(Path::new("app.txt")), None);
    }
}
