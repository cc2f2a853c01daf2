//! Semantic versions as the original resource reads tags (Masterminds semver
//! v3's loose parsing, precedence and constraint syntax).
//!
//! Written by hand: the `semver` crate is strict (no `v1`, `1.2`, leading
//! zeros), orders build metadata and has Cargo's constraint semantics; no
//! crate implements the Masterminds grammar (`||`, space-AND, `!=`, hyphen
//! ranges, its prerelease rule). See shared/reference/crates.md §6.

mod constraint;
mod version;

pub use constraint::Constraints;
pub use version::Version;
