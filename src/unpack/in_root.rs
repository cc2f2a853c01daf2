//! Directory handles resolved *inside* a root directory, as a chroot would
//! resolve them: a symlink's absolute target and `..` stop at the root, so
//! nothing a layer puts in the tree can lead a later operation out of it.
//!
//! The kernel does this for us: `openat2` with `RESOLVE_IN_ROOT` (Linux
//! 5.6+, what runc's libpathrs and containerd use). Two cases it cannot
//! serve are walked here one component at a time on `O_PATH | O_NOFOLLOW`
//! handles, never through a host path string:
//! - creating missing directories (`openat2` only opens), with symlinks
//!   followed inside the root as `mkdir -p` in a chroot would;
//! - kernels without `openat2` (ENOSYS, or EPERM from a seccomp filter) and
//!   paths longer than the kernel takes in one call.
//!
//! The walker trusts nothing it reads: it holds one directory handle at a
//! time, reads symlink targets itself, and climbs `..` by re-walking the
//! real (symlink-free) path from the root, so it never steps above the root.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Symlinks followed while resolving one path: the kernel's own limit.
const MAX_SYMLINKS: usize = 40;
/// `openat2` answers EAGAIN when a rename raced it; we are the only writer,
/// so a few retries are plenty before walking instead.
const OPENAT2_RETRIES: usize = 8;

/// The identity of a file: device and inode numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(stat: &rustix::fs::Stat) -> Self {
        FileId {
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }
}

/// An open directory inside the root, and its identity.
pub struct DirHandle {
    fd: OwnedFd,
    pub id: FileId,
}

impl DirHandle {
    /// A handle on an open directory.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let id = FileId::of(&rustix::fs::fstat(&fd)?);
        Ok(DirHandle { fd, id })
    }
}

impl AsFd for DirHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Told of each directory `RootDir::dir` creates: (its parent, its name).
pub type OnCreate<'a> = &'a mut dyn FnMut(FileId, &OsStr);

/// How `RootDir::dir` resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2(RESOLVE_IN_ROOT)`, walking only to create or where the
    /// kernel lacks it.
    Kernel,
    /// Always the component walker (tests compare the two).
    Walk,
}

/// The root every path is resolved in.
pub struct RootDir {
    root: DirHandle,
    resolver: Resolver,
}

impl RootDir {
    /// Opens `path`, which must be a directory (a symlink there is refused).
    pub fn open(path: &Path, resolver: Resolver) -> io::Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(RootDir {
            root: DirHandle::from_fd(fd)?,
            resolver,
        })
    }

    /// The directory `components` name, every symlink on the way followed
    /// inside the root. With `create`, missing directories are made (mode
    /// 0755) and each new one is reported as `(parent, name)`; without it,
    /// a missing one is `NotFound`. A component that is not a directory is
    /// `NotADirectory`.
    pub fn dir(
        &mut self,
        components: &[OsString],
        create: Option<OnCreate<'_>>,
    ) -> io::Result<DirHandle> {
        if components.is_empty() {
            return DirHandle::from_fd(rustix::io::fcntl_dupfd_cloexec(&self.root, 0)?);
        }
        if self.resolver == Resolver::Kernel {
            match self.kernel_resolve(components) {
                Ok(dir) => return Ok(dir),
                Err(Errno::NOENT) if create.is_some() => {}
                Err(Errno::NOSYS | Errno::PERM) => {
                    // No openat2 here (old kernel, or a seccomp filter).
                    tracing::debug!("openat2 unavailable: resolving paths by walking");
                    self.resolver = Resolver::Walk;
                }
                Err(Errno::NAMETOOLONG | Errno::AGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.walk(components, create)
    }

    fn kernel_resolve(&self, components: &[OsString]) -> Result<DirHandle, Errno> {
        let mut path = Vec::new();
        for c in components {
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(c.as_bytes());
        }
        let mut last = Errno::AGAIN;
        for _ in 0..OPENAT2_RETRIES {
            match rustix::fs::openat2(
                &self.root,
                OsStr::from_bytes(&path),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => {
                    return DirHandle::from_fd(fd)
                        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO));
                }
                Err(Errno::AGAIN) => last = Errno::AGAIN,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// The component walker (see the module comment).
    fn walk(
        &self,
        components: &[OsString],
        mut create: Option<OnCreate<'_>>,
    ) -> io::Result<DirHandle> {
        let mut todo: VecDeque<OsString> = components.iter().cloned().collect();
        // The real path walked so far (directories only, no symlinks) and a
        // handle on its last directory (None: the root).
        let mut real: Vec<OsString> = Vec::new();
        let mut current: Option<DirHandle> = None;
        let mut links = 0;
        while let Some(part) = todo.pop_front() {
            if part.is_empty() || part == "." {
                continue;
            }
            if part == ".." {
                if real.pop().is_some() {
                    current = self.rewalk(&real)?;
                }
                continue;
            }
            let here = current.as_ref().unwrap_or(&self.root);
            let fd = match rustix::fs::openat(
                here,
                &part,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create.is_some() => {
                    rustix::fs::mkdirat(here, &part, Mode::from_raw_mode(0o755))?;
                    if let Some(report) = create.as_mut() {
                        report(here.id, &part);
                    }
                    todo.push_front(part);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let stat = rustix::fs::fstat(&fd)?;
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    real.push(part);
                    current = Some(DirHandle {
                        fd,
                        id: FileId::of(&stat),
                    });
                }
                FileType::Symlink => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::LOOP.into());
                    }
                    let target = rustix::fs::readlinkat(here, &part, Vec::new())?;
                    let target = target.as_bytes();
                    if target.first() == Some(&b'/') {
                        real.clear();
                        current = None;
                    }
                    for (i, c) in target
                        .split(|b| *b == b'/')
                        .filter(|c| !c.is_empty())
                        .enumerate()
                    {
                        todo.insert(i, OsStr::from_bytes(c).to_owned());
                    }
                }
                _ => return Err(Errno::NOTDIR.into()),
            }
        }
        match current {
            Some(dir) => Ok(dir),
            None => DirHandle::from_fd(rustix::io::fcntl_dupfd_cloexec(&self.root, 0)?),
        }
    }

    /// A handle on `real`, a path of directories only (no symlinks), walked
    /// from the root without following anything.
    fn rewalk(&self, real: &[OsString]) -> io::Result<Option<DirHandle>> {
        let mut current: Option<DirHandle> = None;
        for part in real {
            let here = current.as_ref().unwrap_or(&self.root);
            let fd = rustix::fs::openat(
                here,
                part,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            current = Some(DirHandle::from_fd(fd)?);
        }
        Ok(current)
    }
}

/// What is at `name` in `dir`, not following a symlink; `None` if nothing.
pub fn lstat_at(dir: impl AsFd, name: &OsStr) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The type of a stat result.
pub fn file_type(stat: &rustix::fs::Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn comps(s: &str) -> Vec<OsString> {
        s.split('/')
            .filter(|c| !c.is_empty())
            .map(OsString::from)
            .collect()
    }

    /// Where a handle points, as a path under the root (through /proc, for
    /// the test only).
    fn where_is(root: &Path, dir: &DirHandle) -> String {
        let path = std::fs::read_link(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd;
            dir.fd.as_raw_fd()
        }))
        .unwrap();
        let root = std::fs::canonicalize(root).unwrap();
        path.strip_prefix(&root)
            .unwrap_or_else(|_| panic!("{} is outside {}", path.display(), root.display()))
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn symlinks_are_followed_inside_the_root_by_both_resolvers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("/", root.join("up-abs")).unwrap();
        symlink("../../../..", root.join("up-rel")).unwrap();
        symlink(dir.path().join("etc"), root.join("host-etc")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        for resolver in [Resolver::Kernel, Resolver::Walk] {
            let mut r = RootDir::open(&root, resolver).unwrap();
            for (path, expected) in [
                ("lib", "usr/lib"),
                ("up-abs/usr", "usr"),
                ("up-rel/usr/lib", "usr/lib"),
                ("usr/../../../usr", "usr"),
                ("lib/../lib", "usr/lib"),
            ] {
                let d = r.dir(&comps(path), None).unwrap();
                assert_eq!(where_is(&root, &d), expected, "{resolver:?} {path}");
            }
            let err = |r: &mut RootDir, p: &str| r.dir(&comps(p), None).err().unwrap().kind();
            assert_eq!(
                err(&mut r, "host-etc"),
                io::ErrorKind::NotFound,
                "{resolver:?}"
            );
            assert_eq!(
                err(&mut r, "file"),
                io::ErrorKind::NotADirectory,
                "{resolver:?}"
            );
            assert!(r.dir(&comps("loop"), None).is_err(), "{resolver:?}");
        }
    }

    #[test]
    fn missing_directories_are_created_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(&root).unwrap();
        symlink(dir.path().join("outside"), root.join("dangling")).unwrap();
        for resolver in [Resolver::Kernel, Resolver::Walk] {
            let mut r = RootDir::open(&root, resolver).unwrap();
            let mut made = Vec::new();
            let mut report = |_: FileId, name: &OsStr| made.push(name.to_owned());
            let d = r.dir(&comps("dangling/x/y"), Some(&mut report)).unwrap();
            let expected = format!("{}/x/y", dir.path().join("outside").display());
            assert_eq!(where_is(&root, &d), expected.trim_start_matches('/'));
            assert!(!dir.path().join("outside").exists(), "{resolver:?}");
            if resolver == Resolver::Kernel {
                assert!(!made.is_empty());
            }
        }
    }
}
