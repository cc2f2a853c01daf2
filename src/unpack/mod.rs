//! Applying layers to a directory as a container runtime would, with every
//! name, link and size from the tar stream treated as hostile: the rootfs
//! writer (`in`), also used to unpack archives that `out` packs.

mod header_budget;
mod in_root;
pub mod rootfs;
