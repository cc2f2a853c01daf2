//! Tag mode: the digest one tag points at, plus the cursor's digest when it
//! still exists (so Concourse keeps its history): `[]`, `[current]` or
//! `[cursor, current]`.

use crate::concourse::Version;
use crate::image::Digest;
use crate::reference::{Repository, Target};
use crate::registry::RegistryClient;

pub async fn check(
    client: &RegistryClient,
    repository: &Repository,
    tag: &str,
    cursor: Option<&Version>,
) -> anyhow::Result<Vec<Version>> {
    let Some(current) = client
        .resolve_digest(repository, &Target::Tag(tag.to_owned()))
        .await?
    else {
        return Ok(Vec::new());
    };
    let mut versions = Vec::with_capacity(2);
    if let Some(cursor) = cursor
        && !cursor.digest.is_empty()
        && cursor.digest != current.to_string()
    {
        // A cursor digest that is not even a digest cannot exist remotely.
        if let Ok(previous) = cursor.digest.parse::<Digest>()
            && client
                .resolve_digest(repository, &Target::Digest(previous.clone()))
                .await?
                .is_some()
        {
            versions.push(Version {
                tag: tag.to_owned(),
                digest: previous.to_string(),
            });
        }
    }
    versions.push(Version {
        tag: tag.to_owned(),
        digest: current.to_string(),
    });
    Ok(versions)
}
