//! An entry's metadata, read once from its header, and the rules for
//! giving it to what was created: owner first, then the mode (a chown
//! clears set-id bits), then extended attributes (a chown clears
//! `security.capability`), the mtime last (anything else changes it).

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::AsFd;

use anyhow::Context;
use rustix::fs::{AtFlags, Timespec, Timestamps};
use rustix::io::Errno;
use tar::EntryType;

use super::in_root::DirHandle;

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

/// What a layer entry's header says of the file to make.
pub struct EntryMeta {
    pub kind: EntryType,
    /// Permission bits, set-id and sticky included.
    pub mode: u32,
    pub mtime: i64,
    /// (uid, gid).
    pub owner: (u32, u32),
    /// A device node's number.
    pub dev: rustix::fs::Dev,
    /// A link's target, as stored.
    pub link_name: Option<Vec<u8>>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl EntryMeta {
    /// Reads the header (and PAX extensions) of `entry`, once.
    pub fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> anyhow::Result<Self> {
        let header = entry.header();
        let kind = header.entry_type();
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
        Ok(EntryMeta {
            kind,
            mode,
            mtime,
            owner,
            dev,
            link_name,
            xattrs: xattrs(entry)?,
        })
    }

    /// The mtime as both timestamps.
    pub fn timestamps(&self) -> Timestamps {
        timestamps(self.mtime)
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

pub fn uid(id: u32) -> Option<rustix::fs::Uid> {
    Some(rustix::fs::Uid::from_raw(id))
}

pub fn gid(id: u32) -> Option<rustix::fs::Gid> {
    Some(rustix::fs::Gid::from_raw(id))
}

/// Gives `name` in `dir` (not followed) the entry's owner, when root.
pub fn chown_at(
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
pub fn chown(result: Result<(), Errno>, skipped: &mut Skipped) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(Errno::INVAL) => {
            skipped.unmapped_owners += 1;
            Ok(())
        }
        Err(e) => Err(e).context("changing the owner"),
    }
}

pub fn timestamps(mtime: i64) -> Timestamps {
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

pub fn set_xattrs(fd: impl AsFd, xattrs: &[(String, Vec<u8>)], skipped: &mut Skipped) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_rules() {
        assert!(xattr_allowed("security.capability"));
        assert!(xattr_allowed("user.mime_type"));
        assert!(!xattr_allowed("security.selinux"));
        assert!(!xattr_allowed("trusted.overlay.opaque"));
    }
}
