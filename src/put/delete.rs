//! `params.delete`: delete tags after use (preview images per pull request,
//! expired builds).
//!
//! Each tag is deleted by tag first, the one request that leaves the
//! manifest and its other tags alone. Many registries refuse that (the CNCF
//! registry 2.x answers 400, Docker Hub 405); then, only with
//! `manifests: true`, the manifest the tag points to is deleted by digest,
//! which removes every tag on it, and the step says which. A tag that does
//! not exist is not an error: deleting is done when the tag is gone.

use std::path::Path;

use anyhow::{Context, bail};

use super::paths::PathParam;
use super::tag_list::TagList;
use crate::auth::Access;
use crate::concourse::{MetadataField, StepResponse, Version};
use crate::endpoint::Endpoint;
use crate::reference::{Repository, Target};
use crate::registry::RegistryClient;
use crate::registry::error::StatusError;
use crate::source::{DeleteParams, PutParams, Source};

/// Runs the delete; the version is the first tag with the digest deleted
/// under it (empty when no tag existed).
pub async fn run(
    source: &Source,
    params: &PutParams,
    delete: &DeleteParams,
    src: &Path,
) -> anyhow::Result<StepResponse> {
    let pushing: Vec<&str> = [
        ("version", !params.version.is_empty()),
        ("bump_aliases", params.bump_aliases),
        ("additional_tags", !params.additional_tags.is_empty()),
        ("tag_prefix", !params.tag_prefix.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if !pushing.is_empty() {
        bail!(
            "params.delete cannot be combined with params.{}: those name tags to push",
            pushing.join(", params.")
        );
    }
    let tags = tags(delete, src)?;
    let endpoint = Endpoint::connect(source, Access::Delete).await?;
    let (client, repository) = (&endpoint.client, &endpoint.repository);

    let mut deleted: Vec<(String, String)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for tag in &tags {
        match delete_tag(client, repository, tag, delete.manifests).await? {
            Some(digest) => deleted.push((tag.clone(), digest)),
            None => missing.push(tag.clone()),
        }
    }
    let (first_tag, first_digest) = deleted
        .first()
        .cloned()
        .unwrap_or_else(|| (tags[0].clone(), String::new()));
    let mut metadata = vec![MetadataField::new("repository", &endpoint.name)];
    if !deleted.is_empty() {
        let list: Vec<String> = deleted.iter().map(|(t, d)| format!("{t}@{d}")).collect();
        metadata.push(MetadataField::new("deleted", list.join(" ")));
    }
    if !missing.is_empty() {
        metadata.push(MetadataField::new("not_found", missing.join(" ")));
    }
    Ok(StepResponse {
        version: Version {
            tag: first_tag,
            digest: first_digest,
        },
        metadata,
    })
}

/// The tags to delete, checked: `tags`, then those of `tags_file`, in
/// order, each once.
fn tags(delete: &DeleteParams, src: &Path) -> anyhow::Result<Vec<String>> {
    let mut list = TagList::new("params.delete");
    for tag in &delete.tags {
        list.push(tag.clone())?;
    }
    if !delete.tags_file.is_empty() {
        let path = super::paths::contained(
            src,
            PathParam::new("params.delete.tags_file", &delete.tags_file),
        )?;
        let file = std::fs::File::open(&path)
            .with_context(|| format!("params.delete.tags_file: cannot open {}", path.display()))?;
        list.read(file, "")?;
    }
    if list.is_empty() {
        bail!("params.delete names no tag: set tags or tags_file");
    }
    Ok(list.into_vec())
}

/// Deletes one tag: the digest it pointed to, or `None` when it did not
/// exist.
pub async fn delete_tag(
    client: &RegistryClient,
    repository: &Repository,
    tag: &str,
    manifests: bool,
) -> anyhow::Result<Option<String>> {
    let Some(digest) = client
        .resolve_digest(repository, &Target::Tag(tag.to_owned()))
        .await?
    else {
        tracing::info!("{repository}:{tag} does not exist: nothing to delete");
        return Ok(None);
    };
    let refusal = match client.delete_manifest(repository, tag).await {
        Ok(_) => {
            tracing::info!("deleted tag {repository}:{tag} (it was {digest})");
            return Ok(Some(digest.to_string()));
        }
        Err(e) => match e.downcast::<StatusError>() {
            Ok(refusal) if refuses_tag_delete(&refusal) => refusal,
            Ok(other) => {
                return Err(anyhow::Error::new(other))
                    .with_context(|| format!("deleting {repository}:{tag}"));
            }
            Err(e) => return Err(e),
        },
    };
    if !manifests {
        bail!(
            "the registry does not delete tag {tag} alone ({refusal}); set params.delete.manifests: true (--manifest on the command line) \
             to delete manifest {digest} instead, which removes every tag on it"
        );
    }
    match client
        .delete_manifest(repository, &digest.to_string())
        .await
    {
        Ok(true) => tracing::info!(
            "the registry does not delete a tag alone: deleted manifest {repository}@{digest}, \
             which removes every tag on it, {tag} included"
        ),
        Ok(false) => tracing::info!("{repository}@{digest} was already gone"),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "deleting manifest {repository}@{digest} (of tag {tag}); \
                     is deleting enabled on the registry?"
                )
            });
        }
    }
    Ok(Some(digest.to_string()))
}

/// Whether a refusal of a by-tag DELETE means "not by tag" (so by digest
/// may work), not "not you" (401/403) or a failure.
fn refuses_tag_delete(refusal: &StatusError) -> bool {
    use reqwest::StatusCode;
    matches!(
        refusal.status,
        StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_come_from_the_list_then_the_file_once_each() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tags"), "pr-2\n pr-3 pr-1\n").unwrap();
        let delete = DeleteParams {
            tags: vec!["pr-1".into()],
            tags_file: "tags".into(),
            manifests: false,
        };
        assert_eq!(tags(&delete, dir.path()).unwrap(), ["pr-1", "pr-2", "pr-3"]);
        let none = DeleteParams::default();
        assert!(tags(&none, dir.path()).is_err());
        let bad = DeleteParams {
            tags: vec!["no/slash".into()],
            ..Default::default()
        };
        assert!(tags(&bad, dir.path()).is_err());
    }
}
