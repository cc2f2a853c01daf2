//! Applies layer tar streams to a rootfs directory, as a container runtime
//! would: whiteouts and opaque whiteouts, replacement of files, directories
//! and links across layers, hard links, modes (setuid/setgid/sticky
//! included), mtimes, extended attributes, and ownership and device nodes
//! when running as root.
//!
//! A layer is applied while it streams, before its digest is known, so it
//! is treated as hostile: every operation is one name relative to a
//! directory handle that `RootDir` resolved inside the root (`*at` calls,
//! the last component never followed), never a host path string. Nothing a
//! layer does can touch anything outside the root, whatever later entries
//! do to the tree (see README, "Security").
//!
//! Hand-written over the `tar` parser because `tar::Entry::unpack` resolves
//! paths on the host, knows no whiteouts and creates no device nodes.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use tar::EntryType;

use super::header_budget::Budgeted;
pub use super::in_root::Resolver;
use super::in_root::{DirHandle, FileId, RootDir, file_type, lstat_at};
use crate::image::entry_path::entry_components;

/// Directory levels a whiteout or replacement removes below its target
/// (each level holds one open directory while it is emptied).
const MAX_REMOVE_DEPTH: usize = 256;

/// What a layer entry's base name says about whiteouts (matched on raw
/// bytes: names need not be UTF-8).
enum Marker<'a> {
    /// `.wh..wh..opq`: hide everything lower layers put in this directory.
    Opaque,
    /// `.wh.<name>`: hide `<name>` of lower layers.
    Hide(&'a OsStr),
    /// Other `.wh..wh.*` names: AUFS bookkeeping, not content.
    AufsMeta,
    /// An ordinary entry.
    None,
}

fn marker(base: &OsStr) -> anyhow::Result<Marker<'_>> {
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

/// The extended attributes an image may set. `trusted.*` and `security.*`
/// (SELinux labels, IMA/EVM) belong to the host, not to image content; file
/// capabilities are the exception images need (umoci and containerd filter
/// the same way).
fn xattr_allowed(name: &str) -> bool {
    !(name.starts_with("trusted.")
        || (name.starts_with("security.") && name != "security.capability"))
}

/// Final mode and mtime of a directory, applied once every layer is in
/// (creating children changes a directory's mtime; a read-only mode would
/// stop later entries).
struct DirFixup {
    /// The entry's name, re-resolved at the end: the directory is only
    /// touched if it is still the same inode.
    components: Vec<OsString>,
    mode: u32,
    mtime: i64,
}

/// What a step could not apply, told once at the end rather than per file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Device nodes not created: not root, or root in a user namespace.
    pub devices: usize,
    /// Entries whose owner the user namespace does not map (kept as ours).
    pub unmapped_owners: usize,
    /// Extended attributes refused by the filesystem or our privileges, or
    /// set on a kind of file that cannot carry them here.
    pub xattrs: usize,
    /// Extended attributes not applied by rule (`trusted.*`, `security.*`).
    pub filtered_xattrs: usize,
}

/// Entries (directory, name) a layer wrote, implicit parents included: an
/// opaque whiteout or a whiteout hides lower layers only.
type Written = HashSet<(FileId, OsString)>;

/// Writes layers, in order, into one rootfs.
pub struct RootfsWriter {
    root: RootDir,
    privileged: bool,
    directories: HashMap<FileId, DirFixup>,
    /// The last parent directory resolved, by entry components: layers list
    /// a directory's entries together, so most entries reuse it.
    parent: Option<(Vec<OsString>, DirHandle)>,
    skipped: Skipped,
    /// File data goes through this (see [`copy_through`]).
    copy_buffer: Vec<u8>,
}

impl RootfsWriter {
    /// A writer into `root` (created if missing; it must not be a symlink).
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        Self::with_resolver(root, Resolver::Kernel)
    }

    /// [`RootfsWriter::new`] with a choice of path resolver.
    pub fn with_resolver(root: &Path, resolver: Resolver) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        Ok(RootfsWriter {
            root: RootDir::open(root, resolver)
                .with_context(|| format!("opening {}", root.display()))?,
            privileged: rustix::process::geteuid().is_root(),
            directories: HashMap::new(),
            parent: None,
            skipped: Skipped::default(),
            copy_buffer: vec![0; COPY_BUFFER_BYTES],
        })
    }

    /// Applies one uncompressed layer. An error leaves the rootfs partly
    /// written (still confined to the root): discard it.
    pub fn apply_layer<R: Read>(&mut self, layer: R) -> anyhow::Result<()> {
        let (reader, budget) = Budgeted::new(layer);
        let mut archive = tar::Archive::new(reader);
        let mut entries = archive.entries().context("reading the layer")?;
        let mut written = Written::new();
        let mut previous: Option<PathBuf> = None;
        // A whiteout may remove the cached parent: start each layer afresh.
        self.parent = None;
        while let Some(entry) = budget.limit(|| entries.next()) {
            let mut entry = entry.with_context(|| match &previous {
                Some(name) => format!("reading the layer after entry {}", shown(name)),
                None => "reading the layer".to_owned(),
            })?;
            let name = entry.path().context("reading an entry name")?.into_owned();
            self.apply_entry(&mut entry, &name, &mut written)
                .with_context(|| format!("entry {}", shown(&name)))?;
            // What the entry did not use (a size on a directory, say) is
            // read here, outside the header budget.
            io::copy(&mut entry, &mut io::sink())
                .with_context(|| format!("reading entry {}", shown(&name)))?;
            previous = Some(name);
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &Path,
        written: &mut Written,
    ) -> anyhow::Result<()> {
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let components = entry_components(name)?;
        let Some((base, parents)) = components.split_last() else {
            return Ok(()); // the root itself is never retyped
        };
        match marker(base)? {
            Marker::Opaque => return self.whiteout(parents, None, written),
            Marker::Hide(hidden) => return self.whiteout(parents, Some(hidden), written),
            Marker::AufsMeta => return Ok(()),
            Marker::None => {}
        }
        match kind {
            EntryType::Directory
            | EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Fifo => {}
            EntryType::Char | EntryType::Block if self.privileged => {}
            // Not root: the original skips devices before anything else,
            // so what a lower layer had there stays.
            EntryType::Char | EntryType::Block => {
                self.skipped.devices += 1;
                return Ok(());
            }
            other => bail!("unsupported entry type {other:?}"),
        }
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header
            .mtime()
            .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX));
        let owner = (
            u32::try_from(header.uid().unwrap_or(0)).unwrap_or(u32::MAX),
            u32::try_from(header.gid().unwrap_or(0)).unwrap_or(u32::MAX),
        );
        let device = |n: io::Result<Option<u32>>| n.ok().flatten().unwrap_or(0);
        let dev = rustix::fs::makedev(device(header.device_major()), device(header.device_minor()));
        let link_name = match kind {
            EntryType::Symlink | EntryType::Link => Some(
                entry
                    .link_name_bytes()
                    .context("a link without a target")?
                    .into_owned(),
            ),
            _ => None,
        };
        let xattrs = xattrs(entry)?;

        let (key, parent) = self.take_parent(parents, written)?;
        let create = || -> anyhow::Result<()> {
            // Replace whatever is there, unless a directory meets a directory.
            let mut merged = false;
            if let Some(existing) = lstat_at(&parent, base)? {
                if file_type(&existing) == FileType::Directory && kind == EntryType::Directory {
                    merged = true;
                } else {
                    remove_tree(&parent, base, &|_, _| false, &mut self.directories, 0)?;
                }
            }
            written.insert((parent.id, base.clone()));
            let times = timestamps(mtime);
            let skipped = &mut self.skipped;
            let privileged = self.privileged;
            match kind {
                EntryType::Directory => {
                    if !merged {
                        rustix::fs::mkdirat(&parent, base, Mode::from_raw_mode(0o755))
                            .context("creating the directory")?;
                    }
                    chown_at(&parent, base, owner, privileged, skipped)?;
                    let id = FileId::of(
                        &rustix::fs::statat(&parent, base, AtFlags::SYMLINK_NOFOLLOW)
                            .context("inspecting the directory")?,
                    );
                    if !xattrs.is_empty() {
                        let dir = rustix::fs::openat(
                            &parent,
                            base,
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                        .context("opening the directory")?;
                        set_xattrs(&dir, &xattrs, skipped);
                    }
                    self.directories.insert(
                        id,
                        DirFixup {
                            components: components.clone(),
                            mode,
                            mtime,
                        },
                    );
                }
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    let fd = rustix::fs::openat(
                        &parent,
                        base,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                    .context("creating the file")?;
                    let mut file = File::from(fd);
                    if kind == EntryType::GNUSparse {
                        write_sparse(entry, &file)
                    } else {
                        copy_through(entry, &mut file, &mut self.copy_buffer)
                    }
                    .context("writing the file")?;
                    if privileged {
                        chown(
                            rustix::fs::fchown(&file, uid(owner.0), gid(owner.1)),
                            skipped,
                        )?;
                    }
                    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                        .context("setting the mode")?;
                    // After ownership: a chown clears security.capability.
                    set_xattrs(&file, &xattrs, skipped);
                    rustix::fs::futimens(&file, &times).context("setting the mtime")?;
                }
                EntryType::Symlink => {
                    let target = link_name.unwrap_or_default();
                    rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, base)
                        .context("creating the symlink")?;
                    chown_at(&parent, base, owner, privileged, skipped)?;
                    skipped.xattrs += xattrs.len();
                    rustix::fs::utimensat(&parent, base, &times, AtFlags::SYMLINK_NOFOLLOW)
                        .context("setting the mtime")?;
                }
                EntryType::Link => {
                    let target_name = link_name.unwrap_or_default();
                    let target = entry_components(Path::new(OsStr::from_bytes(&target_name)))?;
                    let Some((target_base, target_parents)) = target.split_last() else {
                        bail!("a hard link to the root directory");
                    };
                    let linking =
                        || format!("linking to {}", shown(OsStr::from_bytes(&target_name)));
                    let target_dir = self.root.dir(target_parents, None).with_context(linking)?;
                    // The target's last component is not followed: a link to a
                    // symlink links the symlink itself.
                    rustix::fs::linkat(&target_dir, target_base, &parent, base, AtFlags::empty())
                        .with_context(linking)?;
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => {
                    let file_type = match kind {
                        EntryType::Char => FileType::CharacterDevice,
                        EntryType::Block => FileType::BlockDevice,
                        _ => FileType::Fifo,
                    };
                    match rustix::fs::mknodat(
                        &parent,
                        base,
                        file_type,
                        Mode::from_raw_mode(mode),
                        dev,
                    ) {
                        // Root in a user namespace may not create devices.
                        Err(Errno::PERM | Errno::ACCESS) if kind != EntryType::Fifo => {
                            written.remove(&(parent.id, base.clone()));
                            skipped.devices += 1;
                            return Ok(());
                        }
                        created => created.context("creating the node")?,
                    }
                    chown_at(&parent, base, owner, privileged, skipped)?;
                    // Just created and not a symlink: the mode is set through
                    // the name (mknod applied the umask).
                    rustix::fs::chmodat(&parent, base, Mode::from_raw_mode(mode), AtFlags::empty())
                        .context("setting the mode")?;
                    skipped.xattrs += xattrs.len();
                    rustix::fs::utimensat(&parent, base, &times, AtFlags::SYMLINK_NOFOLLOW)
                        .context("setting the mtime")?;
                }
                other => bail!("unsupported entry type {other:?}"),
            }
            Ok(())
        };
        let created = create();
        // Replacing an entry of this directory cannot change what the
        // directory itself resolves to: keep it for the next entry.
        self.parent = Some((key, parent));
        created
    }

    /// The parent directory of an entry, created where missing (new
    /// directories count as written by this layer), with the components it
    /// was resolved from: the cached one when the last entry had the same.
    fn take_parent(
        &mut self,
        parents: &[OsString],
        written: &mut Written,
    ) -> anyhow::Result<(Vec<OsString>, DirHandle)> {
        if let Some((key, dir)) = self.parent.take()
            && key.as_slice() == parents
        {
            return Ok((key, dir));
        }
        let mut report = |dir: FileId, name: &OsStr| {
            written.insert((dir, name.to_owned()));
        };
        let dir = self
            .root
            .dir(parents, Some(&mut report))
            .context("resolving the parent directory")?;
        Ok((parents.to_vec(), dir))
    }

    /// A whiteout of `name` in `parents`, or (no name) an opaque whiteout of
    /// `parents`: what lower layers put there goes, what this layer wrote
    /// stays. A directory that does not exist is fine.
    fn whiteout(
        &mut self,
        parents: &[OsString],
        name: Option<&OsStr>,
        written: &Written,
    ) -> anyhow::Result<()> {
        // It may remove the cached parent directory.
        self.parent = None;
        let dir = match self.root.dir(parents, None) {
            Ok(dir) => dir,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e).context("resolving the whiteout's directory"),
        };
        let keep = |dir: FileId, name: &OsStr| written.contains(&(dir, name.to_owned()));
        let fixups = &mut self.directories;
        match name {
            Some(name) => remove_tree(&dir, name, &keep, fixups, 0).map(drop),
            None => remove_children(&dir, &keep, fixups, 0).map(drop),
        }
    }

    /// Applies directory modes and mtimes, deepest first, to the directories
    /// that are still the ones their entries made. Returns what could not
    /// be applied along the way.
    pub fn finish(mut self) -> anyhow::Result<Skipped> {
        self.parent = None;
        let mut dirs: Vec<(FileId, DirFixup)> = self.directories.drain().collect();
        dirs.sort_by_key(|(_, fix)| std::cmp::Reverse(fix.components.len()));
        for (id, fix) in dirs {
            let Some((base, parents)) = fix.components.split_last() else {
                continue;
            };
            // A later entry may have removed or replaced it, or turned an
            // ancestor into a symlink: then it is not this directory.
            let Ok(parent) = self.root.dir(parents, None) else {
                continue;
            };
            match lstat_at(&parent, base)? {
                Some(st) if file_type(&st) == FileType::Directory && FileId::of(&st) == id => {}
                _ => continue,
            }
            let name = || shown(fix.components.join(OsStr::new("/")));
            // Checked just above to be that directory (we are the only
            // writer), so following the name is safe.
            rustix::fs::chmodat(
                &parent,
                base,
                Mode::from_raw_mode(fix.mode),
                AtFlags::empty(),
            )
            .with_context(|| format!("setting the mode of {}", name()))?;
            rustix::fs::utimensat(
                &parent,
                base,
                &timestamps(fix.mtime),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .with_context(|| format!("setting the mtime of {}", name()))?;
        }
        Ok(self.skipped)
    }
}

/// A name from a layer fit for the one error line: control bytes (a NUL,
/// an escape sequence) are escaped, not printed. Every name in an error of
/// this module goes through here.
fn shown(name: impl AsRef<OsStr>) -> String {
    String::from_utf8_lossy(name.as_ref().as_bytes())
        .escape_debug()
        .to_string()
}

fn uid(id: u32) -> Option<rustix::fs::Uid> {
    Some(rustix::fs::Uid::from_raw(id))
}

fn gid(id: u32) -> Option<rustix::fs::Gid> {
    Some(rustix::fs::Gid::from_raw(id))
}

/// Gives `name` in `dir` (not followed) the entry's owner, when root.
fn chown_at(
    dir: &DirHandle,
    name: &OsStr,
    owner: (u32, u32),
    privileged: bool,
    skipped: &mut Skipped,
) -> anyhow::Result<()> {
    if !privileged {
        return Ok(());
    }
    chown(
        rustix::fs::chownat(
            dir,
            name,
            uid(owner.0),
            gid(owner.1),
            AtFlags::SYMLINK_NOFOLLOW,
        ),
        skipped,
    )
}

/// A chown's result: an id the user namespace does not map (EINVAL) is
/// counted and skipped, as unprivileged Concourse containers need.
fn chown(result: Result<(), Errno>, skipped: &mut Skipped) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(Errno::INVAL) => {
            skipped.unmapped_owners += 1;
            Ok(())
        }
        Err(e) => Err(e).context("changing the owner"),
    }
}

fn timestamps(mtime: i64) -> Timestamps {
    let at = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}

/// The extended attributes a PAX header gives an entry (`SCHILY.xattr.*`,
/// e.g. `security.capability` for file capabilities), as filtered by
/// [`xattr_allowed`].
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

fn set_xattrs(fd: impl AsFd, xattrs: &[(String, Vec<u8>)], skipped: &mut Skipped) {
    for (key, value) in xattrs {
        if !xattr_allowed(key) {
            skipped.filtered_xattrs += 1;
        } else if rustix::fs::fsetxattr(&fd, key.as_str(), value, rustix::fs::XattrFlags::empty())
            .is_err()
        {
            skipped.xattrs += 1;
        }
    }
}

/// Bytes per `write` of file data.
const COPY_BUFFER_BYTES: usize = 256 << 10;

/// Copies an entry's data into its file in writes of up to
/// [`COPY_BUFFER_BYTES`]: `io::copy` from a plain reader goes 8 KiB at a
/// time, one `write` each, so a large file took 32 times the syscalls.
fn copy_through(data: &mut impl Read, file: &mut File, buffer: &mut [u8]) -> io::Result<()> {
    loop {
        match data.read(buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => io::Write::write_all(file, &buffer[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes a GNU sparse entry with holes where it has none of its data (the
/// parser gives the holes as zeros): its apparent size costs no disk.
fn write_sparse(data: &mut impl Read, file: &File) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0u64;
    loop {
        let n = data.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if chunk.iter().any(|b| *b != 0) {
            file.write_all_at(chunk, at)?;
        }
        at += n as u64;
    }
    file.set_len(at)
}

/// Removes `name` in `dir` and everything under it, except what `keep`
/// names (then the directories holding it stay too). Returns whether
/// anything was kept. Symlinks are removed, never followed.
fn remove_tree(
    dir: &DirHandle,
    name: &OsStr,
    keep: &dyn Fn(FileId, &OsStr) -> bool,
    fixups: &mut HashMap<FileId, DirFixup>,
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
    let kept_inside = remove_children(&child, keep, fixups, depth + 1)?;
    if !kept_self && !kept_inside {
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
            .with_context(|| format!("removing {}", shown(name)))?;
        // Its inode may be reused: its fix-up must not land on another.
        fixups.remove(&child.id);
    }
    Ok(kept_self || kept_inside)
}

/// [`remove_tree`] for every entry of `dir`; `dir` itself stays.
fn remove_children(
    dir: &DirHandle,
    keep: &dyn Fn(FileId, &OsStr) -> bool,
    fixups: &mut HashMap<FileId, DirFixup>,
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
        kept |= remove_tree(dir, &name, keep, fixups, depth)?;
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

    #[test]
    fn xattr_rules() {
        assert!(xattr_allowed("security.capability"));
        assert!(xattr_allowed("user.mime_type"));
        assert!(!xattr_allowed("security.selinux"));
        assert!(!xattr_allowed("trusted.overlay.opaque"));
    }
}
