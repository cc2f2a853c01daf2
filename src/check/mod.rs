//! The `check` step: report versions of a repository, oldest first.

mod tag;

use anyhow::{Context, bail};

use crate::auth::Access;
use crate::concourse::{CheckRequest, Version};
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
            bail!("source.tag_regex: regex mode is not implemented in this version yet")
        }
        CheckMode::Semver => bail!(
            "semver mode (no source.tag) is not implemented in this version yet: set source.tag"
        ),
    }
    .with_context(|| format!("checking origin {} failed", source.repository))?;
    debug_assert!(versions.iter().all(|v| !v.digest.is_empty()));
    Ok(versions)
}
