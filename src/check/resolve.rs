//! Concurrent digest resolution for the listing modes: HEAD-then-GET per
//! tag, a bounded number at a time, over one client (one token, kept-alive
//! connections).

use futures_util::{StreamExt, TryStreamExt, stream};

use crate::image::Digest;
use crate::reference::{Repository, Target};
use crate::registry::RegistryClient;

/// The default number of tags resolved at once.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// `REGISTRY_IMAGE_CHECK_CONCURRENCY` (1 to 64) for tuning, else the default.
pub fn concurrency() -> usize {
    std::env::var("REGISTRY_IMAGE_CHECK_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(DEFAULT_CONCURRENCY, |n| n.clamp(1, 64))
}

/// The digest of each tag, in the order given (`None` where it is gone).
pub async fn digests(
    client: &RegistryClient,
    repository: &Repository,
    tags: &[String],
) -> anyhow::Result<Vec<Option<Digest>>> {
    stream::iter(tags)
        .map(|tag| async move {
            client
                .resolve_digest(repository, &Target::Tag(tag.clone()))
                .await
        })
        .buffered(concurrency())
        .try_collect()
        .await
}
