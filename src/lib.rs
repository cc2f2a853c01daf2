//! registry-image: a Concourse resource type for OCI registries.
//!
//! `check`, `get` (`in`) and `put` (`out`) are thin steps over shared parts:
//! the registry client, the image model, credentials and image references.

pub mod auth;
pub mod check;
pub mod cli;
pub mod concourse;
pub mod endpoint;
pub mod get;
pub mod image;
pub mod logging;
pub mod progress;
pub mod put;
pub mod reference;
pub mod registry;
pub mod semver;
pub mod source;
pub mod unpack;
