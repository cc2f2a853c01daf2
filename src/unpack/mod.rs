//! Applying layers to a directory as a container runtime would, with every
//! name, link and size from the tar stream treated as hostile: the rootfs
//! writer (`in`), also used to unpack archives that `out` packs.

mod entry_meta;
mod file_data;
mod header_budget;
mod in_root;
pub mod rootfs;
mod whiteout;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// A name from a layer fit for the one error line: control bytes (a NUL,
/// an escape sequence) are escaped, not printed. Every name in an error of
/// this module goes through here.
fn shown(name: impl AsRef<OsStr>) -> String {
    String::from_utf8_lossy(name.as_ref().as_bytes())
        .escape_debug()
        .to_string()
}
