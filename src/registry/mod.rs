//! The registry client: a thin layer over one `reqwest::Client` that speaks
//! the OCI distribution API. It knows nothing of Concourse.
//!
//! Why not oci-client: its token flow swallows token-service errors, keeps the
//! first credentials per registry, never re-authenticates on 401, drops the
//! `Link` header of tag listings and panics on manifest PUTs without
//! `Location` (see shared/reference/crates.md §1). Every one of those is on a
//! path this resource needs, so the ~dozen endpoints are spoken here directly.

pub mod blob;
pub mod blob_reader;
pub mod chunking;
pub mod client;
pub mod error;
pub mod upload_source;
// HTTP plumbing shared with `auth/` (bounded reads, the client builder,
// timeouts): crate-internal, not a library interface.
pub(crate) mod http;
pub mod manifest;
pub mod policy;
pub mod rate_limit;
pub mod referrers;
pub mod retry;
mod session;
pub mod session_cache;
pub mod tags;
pub mod trust;
pub mod upload;
mod upload_whole;

pub use client::{ClientOptions, RegistryClient};
pub use error::StatusError;
pub use upload_source::{BlobSource, Piece, UploadOutcome, UploadRequest};
