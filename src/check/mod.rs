//! The `check` step: report versions of a repository, oldest first.

mod regex;
mod resolve;
mod semver;
mod tag;

use anyhow::Context;

use crate::concourse::{CheckRequest, Version};
use crate::endpoint::Endpoint;
use crate::image::Platform;
use crate::reference::Repository;
use crate::registry::RegistryClient;
use crate::sign::Verdict;
use crate::source::CheckMode;

/// Runs a check and returns the versions to print. A Docker Hub
/// repository with a `registry_mirror` is checked there first; an error or
/// no versions there falls back to the origin.
pub async fn run(request: CheckRequest) -> anyhow::Result<Vec<Version>> {
    let source = &request.source;
    source.validate()?;
    let endpoint = Endpoint::connect_for_check(source).await?;
    let request = &request;
    let key = source.signature_policy()?;
    let key = key.as_ref();
    endpoint
        .mirror_first(
            "checking",
            |versions: &Vec<Version>| !versions.is_empty(),
            |client, repository| async move { check_on(&client, &repository, request, key).await },
        )
        .await
        .with_context(|| format!("checking origin {} failed", endpoint.name))
}

async fn check_on(
    client: &RegistryClient,
    repository: &Repository,
    request: &CheckRequest,
    key: Option<&crate::sign::SignaturePolicy>,
) -> anyhow::Result<Vec<Version>> {
    let source = &request.source;
    let versions = match source.check_mode() {
        CheckMode::Tag => {
            tag::check(client, repository, &source.tag, request.version.as_ref()).await
        }
        CheckMode::Regex => {
            let platform = source.created_at_sort.then(|| {
                source
                    .platform
                    .as_ref()
                    .map_or_else(Platform::host, |p| p.to_image_platform())
            });
            let regex = source.tag_regex()?.context("source.tag_regex is empty")?;
            regex::check(client, repository, &regex, platform.as_ref()).await
        }
        CheckMode::Semver => {
            semver::check(client, repository, source, request.version.as_ref()).await
        }
    }?;
    debug_assert!(versions.iter().all(|v| !v.digest.is_empty()));
    match key {
        Some(key) => signed_only(client, repository, versions, key).await,
        None => Ok(versions),
    }
}

/// The versions whose digest carries a signature that satisfies `key`;
/// the others are skipped with a note saying why. Verified a few at a time
/// (as digests are resolved), in order. A registry failure fails the check
/// (an unreachable signature is not an absent one).
async fn signed_only(
    client: &RegistryClient,
    repository: &Repository,
    versions: Vec<Version>,
    key: &crate::sign::SignaturePolicy,
) -> anyhow::Result<Vec<Version>> {
    use futures_util::{StreamExt, TryStreamExt, stream};
    let verdicts: Vec<(Version, Verdict)> = stream::iter(versions)
        .map(|version| async move {
            let digest: crate::image::Digest = version
                .digest
                .parse()
                .with_context(|| format!("the registry gave {:?} as a digest", version.digest))?;
            let verdict = crate::sign::verify_digest(client, repository, &digest, key)
                .await
                .with_context(|| format!("verifying the signature of {digest}"))?;
            anyhow::Ok((version, verdict))
        })
        .buffered(resolve::concurrency())
        .try_collect()
        .await?;
    let mut signed = Vec::with_capacity(verdicts.len());
    for (version, verdict) in verdicts {
        match verdict {
            Verdict::Signed(found) => {
                tracing::debug!("{}@{}: signed ({found})", version.tag, version.digest);
                signed.push(version);
            }
            Verdict::Unsigned(why) => tracing::info!("skipping {}: {why}", version.tag),
        }
    }
    Ok(signed)
}
