//! A reproducible layer from a directory tree: the same files give the same
//! tar bytes whatever their mtimes, owners, the directory order, the umask
//! or the machine. Entries are sorted by name (bytes), each directory before
//! its contents; owners are 0:0 without names; every mtime is the one given
//! (`SOURCE_DATE_EPOCH` by convention); permission bits are kept (executable,
//! setuid, sticky); symlinks are kept as links, never followed; hard links
//! become separate files. Devices, FIFOs and sockets are refused: a package
//! or an image root has no use for them, and copying them is a privilege.
//!
//! Why by hand: the tar crate's `HeaderMode::Deterministic` also normalises
//! modes to 0644/0755 (a `/tmp` of 1777 would lose its sticky bit) and
//! `append_dir_all` walks in directory order.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What a tree became.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    /// Entries in the tree (files, directories, links).
    pub entries: u64,
    /// Bytes of regular files' contents.
    pub file_bytes: u64,
}

/// One entry of a tree, in the order it is packed.
struct Item {
    /// Where it is on this machine.
    host: PathBuf,
    /// Its name in the layer.
    name: PathBuf,
    meta: fs::Metadata,
}

/// Visits the tree under `root` in packing order (sorted names, each
/// directory before its contents), refusing what cannot be packed.
fn walk(
    root: &Path,
    prefix: &Path,
    mut visit: impl FnMut(&Item) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut pending: Vec<(PathBuf, PathBuf)> = sorted_children(root, prefix)?;
    pending.reverse();
    while let Some((host, name)) = pending.pop() {
        let meta =
            fs::symlink_metadata(&host).with_context(|| format!("reading {}", host.display()))?;
        let kind = meta.file_type();
        if !(kind.is_dir() || kind.is_symlink() || kind.is_file()) {
            bail!(
                "{} is not a file, directory or symlink (devices, FIFOs and sockets are not packed)",
                host.display()
            );
        }
        if kind.is_dir() {
            let mut children = sorted_children(&host, &name)?;
            children.reverse();
            pending.extend(children);
        }
        visit(&Item { host, name, meta })?;
    }
    Ok(())
}

/// What [`write_tree`] would pack, from metadata alone (no file is read):
/// for progress, and to refuse an unpackable tree before anything is sent.
pub fn measure(root: &Path) -> anyhow::Result<TreeStats> {
    let mut stats = TreeStats::default();
    walk(root, Path::new(""), |item| {
        stats.entries += 1;
        if item.meta.is_file() {
            stats.file_bytes += item.meta.size();
        }
        Ok(())
    })?;
    Ok(stats)
}

/// Every symbolic link under `root`: its path relative to `root` (where the
/// tree really holds it: no link is followed on the way) and its target.
pub fn symlinks(root: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let mut links = Vec::new();
    walk(root, Path::new(""), |item| {
        if item.meta.file_type().is_symlink() {
            let target = fs::read_link(&item.host)
                .with_context(|| format!("reading {}", item.host.display()))?;
            links.push((item.name.clone(), target));
        }
        Ok(())
    })?;
    Ok(links)
}

/// Writes the tree under `root` as an uncompressed tar to `out`, every entry
/// under `prefix` (relative, e.g. `app` or empty; its own directories come
/// first, mode 0755). `root` itself is not an entry.
pub fn write_tree(
    root: &Path,
    prefix: &Path,
    mtime: u64,
    out: impl Write,
) -> anyhow::Result<TreeStats> {
    let prefix = relative_prefix(prefix)?;
    let mut tar = tar::Builder::new(out);
    let mut stats = TreeStats::default();
    let mut inside = PathBuf::new();
    for component in prefix.components() {
        inside.push(component);
        append_dir(&mut tar, &inside, 0o755, mtime)?;
        stats.entries += 1;
    }
    walk(root, &inside, |Item { host, name, meta }| {
        let mode = meta.permissions().mode() & 0o7777;
        let kind = meta.file_type();
        if kind.is_dir() {
            append_dir(&mut tar, name, mode, mtime)?;
        } else if kind.is_symlink() {
            let target =
                fs::read_link(host).with_context(|| format!("reading {}", host.display()))?;
            let mut header = header(tar::EntryType::Symlink, 0o777, mtime);
            tar.append_link(&mut header, name, &target)
                .with_context(|| format!("adding {}", name.display()))?;
        } else {
            let file = File::open(host).with_context(|| format!("opening {}", host.display()))?;
            let mut header = header(tar::EntryType::Regular, mode, mtime);
            header.set_size(meta.size());
            // The size is the one read now; a file that changes while it is
            // packed fails the step rather than writing a torn entry.
            let mut reader = ExactSize::new(file, meta.size(), host);
            tar.append_data(&mut header, name, &mut reader)
                .with_context(|| format!("adding {}", name.display()))?;
            reader.finish()?;
            stats.file_bytes += meta.size();
        }
        stats.entries += 1;
        Ok(())
    })?;
    tar.into_inner().context("finishing the layer")?;
    Ok(stats)
}

/// A Unix time as RFC 3339 in UTC (`1970-01-01T00:00:00Z`), as image
/// configs carry their `created` time.
pub fn rfc3339(epoch: i64) -> anyhow::Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch)
        .with_context(|| format!("timestamp {epoch} is out of range"))?;
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// `prefix` as relative normal components: `/app/` and `app` are the same;
/// `..` is refused.
pub fn relative_prefix(prefix: &Path) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for component in prefix.components() {
        match component {
            std::path::Component::Normal(name) => out.push(name),
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            _ => bail!("prefix {} climbs out of the image root", prefix.display()),
        }
    }
    Ok(out)
}

/// The children of `dir`, sorted by name bytes, as (host path, tar path).
fn sorted_children(dir: &Path, name: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names
        .into_iter()
        .map(|n| (dir.join(&n), name.join(&n)))
        .collect())
}

fn header(kind: tar::EntryType, mode: u32, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(0);
    header
}

fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &Path,
    mode: u32,
    mtime: u64,
) -> anyhow::Result<()> {
    let mut header = header(tar::EntryType::Directory, mode, mtime);
    // Directories carry a trailing slash, as tar and Docker write them.
    let mut with_slash = name.as_os_str().to_owned();
    with_slash.push("/");
    tar.append_data(&mut header, Path::new(&with_slash), io::empty())
        .with_context(|| format!("adding {}", name.display()))
}

/// A file read for exactly the size its header announced.
struct ExactSize<'a> {
    file: File,
    left: u64,
    path: &'a Path,
}

impl<'a> ExactSize<'a> {
    fn new(file: File, size: u64, path: &'a Path) -> Self {
        ExactSize {
            file,
            left: size,
            path,
        }
    }

    /// Fails if the file grew while it was read.
    fn finish(mut self) -> anyhow::Result<()> {
        let mut probe = [0u8; 1];
        if io::Read::read(&mut self.file, &mut probe)? != 0 {
            bail!("{} changed while it was packed", self.path.display());
        }
        Ok(())
    }
}

impl io::Read for ExactSize<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was packed", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, u32, u64, u64, String)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.display().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The same content made two ways (other creation order, mtimes, umask
    /// effects) packs to the same bytes; order, modes, owners, mtime and
    /// links are as documented.
    #[test]
    fn the_same_files_give_the_same_bytes() {
        let make = |order: &[&str], mtime: i64| {
            let dir = tempfile::tempdir().unwrap();
            for name in order {
                match *name {
                    "bin" => {
                        fs::create_dir(dir.path().join("bin")).unwrap();
                        fs::write(dir.path().join("bin/tool"), "#!/bin/sh\n").unwrap();
                        fs::set_permissions(
                            dir.path().join("bin/tool"),
                            fs::Permissions::from_mode(0o755),
                        )
                        .unwrap();
                    }
                    "tmp" => {
                        fs::create_dir(dir.path().join("tmp")).unwrap();
                        fs::set_permissions(
                            dir.path().join("tmp"),
                            fs::Permissions::from_mode(0o1777),
                        )
                        .unwrap();
                    }
                    "link" => symlink("bin/tool", dir.path().join("link")).unwrap(),
                    other => fs::write(dir.path().join(other), other).unwrap(),
                }
            }
            for path in ["a", "b", "bin/tool"] {
                let t = filetime::FileTime::from_unix_time(mtime, 0);
                filetime::set_symlink_file_times(dir.path().join(path), t, t).unwrap();
            }
            let mut bytes = Vec::new();
            let stats =
                write_tree(dir.path(), Path::new("/app/"), 1_700_000_000, &mut bytes).unwrap();
            (bytes, stats)
        };
        let (one, stats) = make(&["b", "a", "bin", "tmp", "link"], 1);
        let (two, _) = make(&["link", "tmp", "a", "bin", "b"], 999_999);
        assert_eq!(one, two);
        assert_eq!(stats.entries, 7);
        assert_eq!(stats.file_bytes, 1 + 1 + 10);
        let listed = entries(&one);
        let names: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "app/",
                "app/a",
                "app/b",
                "app/bin/",
                "app/bin/tool",
                "app/link",
                "app/tmp/"
            ]
        );
        for (name, mode, uid, mtime, link) in &listed {
            assert_eq!((*uid, *mtime), (0, 1_700_000_000), "{name}");
            match name.as_str() {
                "app/bin/tool" => assert_eq!(*mode, 0o755),
                "app/tmp/" => assert_eq!(*mode, 0o1777),
                "app/link" => assert_eq!(link, "bin/tool"),
                _ => {}
            }
        }
    }

    #[test]
    fn long_names_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let deep = "d".repeat(120);
        fs::create_dir(dir.path().join(&deep)).unwrap();
        fs::write(dir.path().join(&deep).join("f".repeat(150)), "x").unwrap();
        let mut bytes = Vec::new();
        write_tree(dir.path(), Path::new(""), 0, &mut bytes).unwrap();
        let names: Vec<String> = entries(&bytes).into_iter().map(|e| e.0).collect();
        assert_eq!(names[1], format!("{deep}/{}", "f".repeat(150)));

        assert!(write_tree(dir.path(), Path::new("../x"), 0, io::sink()).is_err());
        assert_eq!(
            relative_prefix(Path::new("/app/")).unwrap(),
            PathBuf::from("app")
        );
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let error = write_tree(dir.path(), Path::new(""), 0, io::sink()).unwrap_err();
        assert!(format!("{error:#}").contains("FIFOs"), "{error:#}");
        assert!(measure(dir.path()).is_err());
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
    }
}
