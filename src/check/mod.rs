//! The `check` step: report versions of a repository, oldest first.

mod regex;
mod resolve;
mod semver;
mod tag;

use anyhow::Context;

use crate::auth::Access;
use crate::concourse::{CheckRequest, Version};
use crate::image::Platform;
use crate::registry::RegistryClient;
use crate::source::CheckMode;

/// Runs a check and returns the versions to print.
pub async fn run(request: CheckRequest) -> anyhow::Result<Vec<Version>> {
    let source = &request.source;
    source.validate()?;
    let repository = source.repository()?;
    let client = RegistryClient::new(repository.api_host(), source.client_options(Access::Pull)?)?;
    let versions = match source.check_mode() {
        CheckMode::Tag => {
            tag::check(&client, &repository, &source.tag, request.version.as_ref()).await
        }
        CheckMode::Regex => {
            let platform = source.created_at_sort.then(|| {
                source
                    .platform
                    .as_ref()
                    .map_or_else(Platform::host, |p| p.to_image_platform())
            });
            let regex = source.tag_regex()?.context("source.tag_regex is empty")?;
            regex::check(&client, &repository, &regex, platform.as_ref()).await
        }
        CheckMode::Semver => {
            semver::check(&client, &repository, source, request.version.as_ref()).await
        }
    }
    .with_context(|| format!("checking origin {} failed", source.repository))?;
    debug_assert!(versions.iter().all(|v| !v.digest.is_empty()));
    Ok(versions)
}
