//! registry-image: a Concourse resource type for OCI registries, and the
//! registry client it is built on.
//!
//! `check`, `get` (`in`) and `put` (`out`) are thin steps over shared parts:
//! the registry client ([`registry`]), the image model ([`image`]),
//! credentials ([`auth`]), image references ([`reference`](mod@reference)) and where a
//! repository's requests go ([`endpoint`]), and cosign signatures
//! ([`sign`]). Those parts are the library;
//! the steps and the command line are the binary's and are hidden here.
//!
//! # Example
//!
//! The tags of a repository and the digest one of them points at, with the
//! same credential chain as the resource (a `source`'s username and
//! password, else the docker config), the same retries and pagination:
//!
//! ```no_run
//! use registry_image::auth::Access;
//! use registry_image::endpoint::Endpoint;
//! use registry_image::reference::Target;
//! use registry_image::source::Source;
//!
//! # async fn example() -> anyhow::Result<()> {
//! let source = Source {
//!     repository: "registry.example.org/team/app".into(),
//!     ..Source::default()
//! };
//! let endpoint = Endpoint::connect(&source, Access::Pull).await?;
//! let tags = endpoint.client.list_tags(&endpoint.repository).await?;
//! let digest = endpoint
//!     .client
//!     .resolve_digest(&endpoint.repository, &Target::Tag("latest".into()))
//!     .await?;
//! println!("{} tags; latest is {digest:?}", tags.len());
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod auth;
pub mod endpoint;
pub mod image;
pub mod reference;
pub mod registry;
pub mod sign;
pub mod source;

// The binary's steps and helpers: public for it and for the tests, not a
// library interface.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod check;
#[doc(hidden)]
#[allow(missing_docs)]
pub mod cli;
#[doc(hidden)]
#[allow(missing_docs)]
pub mod concourse;
#[doc(hidden)]
#[allow(missing_docs)]
pub mod get;
#[doc(hidden)]
#[allow(missing_docs)]
pub mod logging;
#[doc(hidden)]
#[allow(missing_docs)]
pub mod progress;
#[doc(hidden)]
#[allow(missing_docs)]
pub mod put;
#[doc(hidden)]
#[allow(missing_docs)]
pub mod semver;
#[doc(hidden)]
#[allow(missing_docs)]
pub mod unpack;
