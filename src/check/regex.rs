//! Regex mode: every tag matching `tag_regex` (unanchored), in the
//! registry's listing order, or oldest first by the image config's `created`
//! with `created_at_sort`. The cursor is not used (as in the original).

use std::collections::HashMap;

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt, stream};
use regex::Regex;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::resolve;
use crate::concourse::Version;
use crate::image::manifest::{parse_config, parse_manifest};
use crate::image::{Digest, Platform};
use crate::reference::{Repository, Target};
use crate::registry::RegistryClient;

pub async fn check(
    client: &RegistryClient,
    repository: &Repository,
    regex: &Regex,
    created_at_sort: Option<&Platform>,
) -> anyhow::Result<Vec<Version>> {
    let tags: Vec<String> = client
        .list_tags(repository)
        .await
        .context("list repository tags")?
        .into_iter()
        .filter(|t| regex.is_match(t))
        .collect();
    let resolved = resolve::digests(client, repository, &tags)
        .await
        .context("get tag digest")?;
    let mut versions: Vec<Version> = tags
        .into_iter()
        .zip(resolved)
        .filter_map(|(tag, digest)| {
            digest.map(|d| Version {
                tag,
                digest: d.to_string(),
            })
        })
        .collect();
    if let Some(platform) = created_at_sort {
        let created = creation_times(client, repository, &versions, platform).await?;
        // Stable: equal times keep the listing order.
        versions.sort_by_key(|v| {
            created
                .get(&v.digest)
                .copied()
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        });
    }
    Ok(versions)
}

/// The `created` time of each distinct image, configs read concurrently and
/// each once.
async fn creation_times(
    client: &RegistryClient,
    repository: &Repository,
    versions: &[Version],
    platform: &Platform,
) -> anyhow::Result<HashMap<String, OffsetDateTime>> {
    let mut digests: Vec<&str> = versions.iter().map(|v| v.digest.as_str()).collect();
    digests.sort_unstable();
    digests.dedup();
    stream::iter(digests)
        .map(|digest| async move {
            let parsed: Digest = digest.parse()?;
            let time = created(client, repository, &parsed, platform).await?;
            Ok::<_, anyhow::Error>((digest.to_owned(), time))
        })
        .buffer_unordered(resolve::concurrency())
        .try_collect()
        .await
}

async fn created(
    client: &RegistryClient,
    repository: &Repository,
    digest: &Digest,
    platform: &Platform,
) -> anyhow::Result<OffsetDateTime> {
    let top = client
        .get_manifest(repository, &Target::Digest(digest.clone()))
        .await
        .context("get remote image")?
        .with_context(|| format!("get remote image: {repository}@{digest} is gone"))?;
    let manifest = client
        .image_for_platform(repository, top, platform)
        .await
        .context("get remote image")?;
    let config_digest = parse_manifest(&manifest.bytes)?.config.digest()?;
    let config = client
        .get_small_blob(repository, &config_digest)
        .await
        .context("get remote image config file")?;
    let created = parse_config(&config)?.created;
    // A missing or unreadable time sorts as the oldest, as in the original.
    Ok(created
        .and_then(|c| OffsetDateTime::parse(&c, &Rfc3339).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH))
}
