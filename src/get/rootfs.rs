//! Applies layer tar streams to a rootfs directory, as a container runtime
//! would: whiteouts and opaque whiteouts, replacement of files, directories
//! and links across layers, hard links, modes (setuid/setgid/sticky
//! included), mtimes, and ownership and device nodes when running as root.
//!
//! Hand-written over the `tar` parser because `tar::Entry::unpack` follows
//! symlinks in parent paths out of the destination and knows no whiteouts.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use filetime::FileTime;
use tar::EntryType;

use super::safe_path::{entry_components, resolve};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// Writes layers, in order, into one rootfs.
pub struct RootfsWriter {
    root: PathBuf,
    privileged: bool,
    /// Final mode and mtime of directories, applied once every layer is in
    /// (creating children changes a directory's mtime).
    directories: HashMap<PathBuf, (u32, FileTime)>,
    skipped_devices: usize,
    /// Extended attributes the filesystem or our privileges refused.
    skipped_xattrs: usize,
}

impl RootfsWriter {
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        Ok(RootfsWriter {
            root: root.to_path_buf(),
            privileged: rustix::process::geteuid().is_root(),
            directories: HashMap::new(),
            skipped_devices: 0,
            skipped_xattrs: 0,
        })
    }

    /// Applies one uncompressed layer.
    pub fn apply_layer<R: Read>(&mut self, layer: R) -> anyhow::Result<()> {
        let mut archive = tar::Archive::new(layer);
        // Paths this layer wrote: an opaque whiteout hides lower layers only.
        let mut written: HashSet<PathBuf> = HashSet::new();
        for entry in archive.entries().context("reading the layer")? {
            let mut entry = entry.context("reading the layer")?;
            let name = entry.path().context("reading an entry name")?.into_owned();
            self.apply_entry(&mut entry, &name, &mut written)
                .with_context(|| format!("entry {}", name.display()))?;
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &Path,
        written: &mut HashSet<PathBuf>,
    ) -> anyhow::Result<()> {
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let xattrs = xattrs(entry)?;
        let components = entry_components(name)?;
        let Some((base, parents)) = components.split_last() else {
            return Ok(()); // the root itself
        };
        let base_str = base.to_string_lossy();
        if base_str == OPAQUE_WHITEOUT {
            let dir = resolve(&self.root, parents, true)?;
            return opaque(&dir, written);
        }
        if let Some(hidden) = base_str.strip_prefix(WHITEOUT_PREFIX) {
            let dir = resolve(&self.root, parents, true)?;
            return remove_any(&dir.join(hidden));
        }
        let path = resolve(&self.root, &components, false)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        // Replace whatever is there, unless a directory meets a directory.
        match fs::symlink_metadata(&path) {
            Ok(existing) if existing.is_dir() && kind == EntryType::Directory => {}
            Ok(_) => remove_any(&path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
        }
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = FileTime::from_unix_time(header.mtime().unwrap_or(0) as i64, 0);
        let owner = (
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        );
        match kind {
            EntryType::Directory => {
                if !path.is_dir() {
                    fs::create_dir(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                }
                self.chown(&path, owner)?;
                self.directories.insert(path.clone(), (mode, mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                io::copy(entry, &mut file)
                    .with_context(|| format!("writing {}", path.display()))?;
                drop(file);
                self.chown(&path, owner)?;
                set_mode(&path, mode)?;
                filetime::set_symlink_file_times(&path, mtime, mtime)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .with_context(|| "symlink without a target")?
                    .into_owned();
                std::os::unix::fs::symlink(&target, &path)
                    .with_context(|| format!("creating link {}", path.display()))?;
                self.chown(&path, owner)?;
                filetime::set_symlink_file_times(&path, mtime, mtime)?;
            }
            EntryType::Link => {
                let target_name = entry
                    .link_name()?
                    .with_context(|| "hard link without a target")?
                    .into_owned();
                let target = resolve(&self.root, &entry_components(&target_name)?, false)?;
                fs::hard_link(&target, &path).with_context(|| {
                    format!("linking {} to {}", path.display(), target_name.display())
                })?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match kind {
                    EntryType::Char => rustix::fs::FileType::CharacterDevice,
                    EntryType::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                if kind != EntryType::Fifo && !self.privileged {
                    self.skipped_devices += 1;
                    return Ok(());
                }
                // FIFOs carry no device numbers (often empty fields).
                let number = |n: std::io::Result<Option<u32>>| n.ok().flatten().unwrap_or(0);
                let dev = rustix::fs::makedev(
                    number(header.device_major()),
                    number(header.device_minor()),
                );
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    file_type,
                    rustix::fs::Mode::from_raw_mode(mode),
                    dev,
                )
                .with_context(|| format!("creating device {}", path.display()))?;
                self.chown(&path, owner)?;
                set_mode(&path, mode)?;
                filetime::set_symlink_file_times(&path, mtime, mtime)?;
            }
            other => bail!("unsupported entry type {other:?}"),
        }
        // After ownership: a chown clears security.capability.
        if !matches!(kind, EntryType::Symlink | EntryType::Link) {
            for (key, value) in &xattrs {
                if rustix::fs::lsetxattr(
                    &path,
                    key.as_str(),
                    value,
                    rustix::fs::XattrFlags::empty(),
                )
                .is_err()
                {
                    self.skipped_xattrs += 1;
                }
            }
        }
        written.insert(path);
        Ok(())
    }

    fn chown(&self, path: &Path, (uid, gid): (u32, u32)) -> anyhow::Result<()> {
        if self.privileged {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .with_context(|| format!("changing the owner of {}", path.display()))?;
        }
        Ok(())
    }

    /// Applies directory modes and mtimes, deepest first. Returns how many
    /// device nodes were skipped for lack of privileges.
    pub fn finish(self) -> anyhow::Result<usize> {
        if self.skipped_xattrs > 0 {
            tracing::warn!(
                "{} extended attributes could not be set (unsupported by the filesystem, or needing root)",
                self.skipped_xattrs
            );
        }
        let mut dirs: Vec<(PathBuf, (u32, FileTime))> = self.directories.into_iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (path, (mode, mtime)) in dirs {
            // A later layer may have removed or replaced it.
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    set_mode(&path, mode)?;
                    filetime::set_symlink_file_times(&path, mtime, mtime)?;
                }
                _ => continue,
            }
        }
        Ok(self.skipped_devices)
    }
}

/// The extended attributes a PAX header gives an entry (`SCHILY.xattr.*`,
/// e.g. `security.capability` for file capabilities).
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut found = Vec::new();
    if let Some(extensions) = entry.pax_extensions().context("reading PAX headers")? {
        for extension in extensions {
            let extension = extension.context("reading PAX headers")?;
            if let Ok(key) = extension.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                found.push((name.to_owned(), extension.value_bytes().to_vec()));
            }
        }
    }
    Ok(found)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Removes a file, link or directory tree; a missing path is fine.
fn remove_any(path: &Path) -> anyhow::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.with_context(|| format!("removing {}", path.display()))
}

/// An opaque whiteout: everything lower layers put under `dir` goes; what
/// this layer wrote stays; a directory that does not exist is fine.
fn opaque(dir: &Path, written: &HashSet<PathBuf>) -> anyhow::Result<()> {
    let children = match fs::read_dir(dir) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for child in children {
        let path = child?.path();
        if !written.contains(&path) {
            remove_any(&path)?;
        } else if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            // A directory this layer declares again was merged with the
            // lower one; what the lower layer put inside it is hidden too.
            opaque(&path, written)?;
        }
    }
    Ok(())
}
