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
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use tar::EntryType;

pub use super::entry_meta::Skipped;
use super::entry_meta::{EntryMeta, chown, chown_at, gid, set_xattrs, timestamps, uid};
use super::file_data::{COPY_BUFFER_BYTES, copy_through, write_sparse};
use super::header_budget::Budgeted;
pub use super::in_root::Resolver;
use super::in_root::{DirHandle, FileId, RootDir, file_type, lstat_at};
use super::shown;
use super::whiteout::{Marker, marker, remove_children, remove_tree};
use crate::image::entry_path::entry_components;

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

/// What creating an entry made, to give its metadata to.
enum Made {
    /// A device node the user namespace may not create: nothing.
    Nothing,
    File(File),
    Directory,
    Symlink,
    /// A device node or a FIFO.
    Node,
    HardLink,
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
        let meta = EntryMeta::read(entry)?;
        let (key, parent) = self.take_parent(parents, written)?;
        let applied = self
            .create(entry, &meta, &parent, base, written)
            .and_then(|made| self.give_metadata(made, &meta, &parent, base, &components));
        // Replacing an entry of this directory cannot change what the
        // directory itself resolves to: keep it for the next entry.
        self.parent = Some((key, parent));
        applied
    }

    /// Creates the entry `base` in `parent` by its kind, replacing whatever
    /// is there (unless a directory meets a directory): only the object and
    /// its data, no metadata yet.
    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        meta: &EntryMeta,
        parent: &DirHandle,
        base: &OsStr,
        written: &mut Written,
    ) -> anyhow::Result<Made> {
        let kind = meta.kind;
        let mut merged = false;
        if let Some(existing) = lstat_at(parent, base)? {
            if file_type(&existing) == FileType::Directory && kind == EntryType::Directory {
                merged = true;
            } else {
                let fixups = &mut self.directories;
                let mut forget = |id: FileId| {
                    fixups.remove(&id);
                };
                remove_tree(parent, base, &|_, _| false, &mut forget, 0)?;
            }
        }
        written.insert((parent.id, base.to_owned()));
        let link_target = || OsStr::from_bytes(meta.link_name.as_deref().unwrap_or_default());
        Ok(match kind {
            EntryType::Directory => {
                if !merged {
                    rustix::fs::mkdirat(parent, base, Mode::from_raw_mode(0o755))
                        .context("creating the directory")?;
                }
                Made::Directory
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    parent,
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
                Made::File(file)
            }
            EntryType::Symlink => {
                rustix::fs::symlinkat(link_target(), parent, base)
                    .context("creating the symlink")?;
                Made::Symlink
            }
            EntryType::Link => {
                let target_name = link_target();
                let target = entry_components(Path::new(target_name))?;
                let Some((target_base, target_parents)) = target.split_last() else {
                    bail!("a hard link to the root directory");
                };
                let linking = || format!("linking to {}", shown(target_name));
                let target_dir = self.root.dir(target_parents, None).with_context(linking)?;
                // The target's last component is not followed: a link to a
                // symlink links the symlink itself.
                rustix::fs::linkat(&target_dir, target_base, parent, base, AtFlags::empty())
                    .with_context(linking)?;
                Made::HardLink
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                match rustix::fs::mknodat(
                    parent,
                    base,
                    file_type,
                    Mode::from_raw_mode(meta.mode),
                    meta.dev,
                ) {
                    // Root in a user namespace may not create devices.
                    Err(Errno::PERM | Errno::ACCESS) if kind != EntryType::Fifo => {
                        written.remove(&(parent.id, base.to_owned()));
                        self.skipped.devices += 1;
                        Made::Nothing
                    }
                    created => {
                        created.context("creating the node")?;
                        Made::Node
                    }
                }
            }
            other => bail!("unsupported entry type {other:?}"),
        })
    }

    /// Gives what [`RootfsWriter::create`] made the entry's metadata, in
    /// the one order that works: owner, mode, extended attributes, mtime.
    /// A directory's mode and mtime wait for [`RootfsWriter::finish`]; a
    /// symlink has no mode; a hard link shares its target's metadata.
    fn give_metadata(
        &mut self,
        made: Made,
        meta: &EntryMeta,
        parent: &DirHandle,
        base: &OsStr,
        components: &[OsString],
    ) -> anyhow::Result<()> {
        let (privileged, skipped) = (self.privileged, &mut self.skipped);
        let (owner, mode, times) = (
            meta.owner,
            Mode::from_raw_mode(meta.mode),
            meta.timestamps(),
        );
        match made {
            Made::Nothing | Made::HardLink => {}
            Made::File(file) => {
                if privileged {
                    chown(
                        rustix::fs::fchown(&file, uid(owner.0), gid(owner.1)),
                        skipped,
                    )?;
                }
                rustix::fs::fchmod(&file, mode).context("setting the mode")?;
                set_xattrs(&file, &meta.xattrs, skipped);
                rustix::fs::futimens(&file, &times).context("setting the mtime")?;
            }
            Made::Directory => {
                chown_at(parent, base, owner, privileged, skipped)?;
                let id = FileId::of(
                    &rustix::fs::statat(parent, base, AtFlags::SYMLINK_NOFOLLOW)
                        .context("inspecting the directory")?,
                );
                if !meta.xattrs.is_empty() {
                    let dir = rustix::fs::openat(
                        parent,
                        base,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .context("opening the directory")?;
                    set_xattrs(&dir, &meta.xattrs, skipped);
                }
                self.directories.insert(
                    id,
                    DirFixup {
                        components: components.to_vec(),
                        mode: meta.mode,
                        mtime: meta.mtime,
                    },
                );
            }
            Made::Symlink | Made::Node => {
                chown_at(parent, base, owner, privileged, skipped)?;
                if matches!(made, Made::Node) {
                    // Just created and not a symlink: the mode is set
                    // through the name (mknod applied the umask).
                    rustix::fs::chmodat(parent, base, mode, AtFlags::empty())
                        .context("setting the mode")?;
                }
                skipped.xattrs += meta.xattrs.len();
                rustix::fs::utimensat(parent, base, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .context("setting the mtime")?;
            }
        }
        Ok(())
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
        // A removed directory's inode may be reused: its fix-up must not
        // land on another.
        let mut forget = |id: FileId| {
            fixups.remove(&id);
        };
        match name {
            Some(name) => remove_tree(&dir, name, &keep, &mut forget, 0).map(drop),
            None => remove_children(&dir, &keep, &mut forget, 0).map(drop),
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
