//! Semver mode: every tag that reads as a version (after the variant suffix
//! is stripped, and the prerelease and constraint filters), one version per
//! image under its most specific tag, oldest first.
//!
//! Ordering rule for equal precedence (`1.0` vs `1.0.0`, `v1.2.3` vs
//! `1.2.3` on different images): the less specific tag (fewer dots) first,
//! then bytewise by tag. The original leaves this order to chance.

use std::cmp::Ordering;
use std::collections::HashMap;

use anyhow::Context;

use super::resolve;
use crate::concourse::Version as ResourceVersion;
use crate::image::Digest;
use crate::reference::{Repository, Target};
use crate::registry::RegistryClient;
use crate::semver::{Constraints, Version};
use crate::source::Source;

/// A tag that passed the filters.
#[derive(Clone, Debug)]
struct Candidate {
    tag: String,
    /// Parsed from the tag without its variant suffix.
    version: Version,
}

impl Candidate {
    /// More dots is more specific: `3.2.1` over `3.2` over `3`.
    fn specificity(&self) -> usize {
        self.version.original().matches('.').count()
    }
}

/// The filters of semver mode, from the source.
pub struct Filter<'a> {
    variant: &'a str,
    pre_releases: bool,
    prefixes: Vec<&'a str>,
    custom_prefixes: bool,
    constraint: Option<Constraints>,
}

impl<'a> Filter<'a> {
    pub fn new(source: &'a Source) -> anyhow::Result<Self> {
        let constraint = if source.semver_constraint.is_empty() {
            None
        } else {
            Some(
                source
                    .semver_constraint
                    .parse::<Constraints>()
                    .context("parse semver constraint")?,
            )
        };
        let mut prefixes = vec!["alpha", "beta", "rc"];
        prefixes.extend(source.pre_release_prefixes.iter().map(String::as_str));
        Ok(Filter {
            variant: &source.variant,
            pre_releases: source.pre_releases,
            prefixes,
            custom_prefixes: !source.pre_release_prefixes.is_empty(),
            constraint,
        })
    }

    /// The tag that stands for "newest" without a version: `latest`, or the
    /// bare variant.
    fn bare(&self) -> &str {
        if self.variant.is_empty() {
            "latest"
        } else {
            self.variant
        }
    }

    fn candidate(&self, tag: &str) -> Option<Candidate> {
        let text = if self.variant.is_empty() {
            tag
        } else {
            tag.strip_suffix(self.variant)?.strip_suffix('-')?
        };
        let version = Version::parse(text).ok()?;
        if let Some(c) = &self.constraint
            && !c.matches(&version)
        {
            return None;
        }
        if version.is_prerelease() {
            if !self.pre_releases {
                return None;
            }
            // Without custom prefixes, a `-` in the prerelease is taken as
            // another variant's suffix (`1.0.0-rc.1-bar`).
            if !self.custom_prefixes && version.pre.contains('-') {
                return None;
            }
            if !self.prefixes.iter().any(|p| version.pre.starts_with(p)) {
                return None;
            }
        }
        Some(Candidate {
            tag: tag.to_owned(),
            version,
        })
    }
}

pub async fn check(
    client: &RegistryClient,
    repository: &Repository,
    source: &Source,
    cursor: Option<&ResourceVersion>,
) -> anyhow::Result<Vec<ResourceVersion>> {
    let filter = Filter::new(source)?;
    let tags = client
        .list_tags(repository)
        .await
        .context("list repository tags")?;
    let bare_listed = tags.iter().any(|t| t == filter.bare());
    let candidates: Vec<Candidate> = tags.iter().filter_map(|t| filter.candidate(t)).collect();

    // A cursor whose tag still points at its digest lets everything at or
    // below its version go unresolved: Concourse already has those.
    let mut digests: HashMap<String, Digest> = HashMap::new();
    let mut floor: Option<Version> = None;
    if let Some(cursor) = cursor
        && let Some(c) = candidates.iter().find(|c| c.tag == cursor.tag)
        && let Some(d) = client
            .resolve_digest(repository, &Target::Tag(c.tag.clone()))
            .await
            .context("get tag digest")?
    {
        if d.to_string() == cursor.digest {
            floor = Some(c.version.clone());
        }
        digests.insert(c.tag.clone(), d);
    }
    let (wanted, below): (Vec<&Candidate>, Vec<&Candidate>) = candidates.iter().partition(|c| {
        digests.contains_key(&c.tag)
            || floor
                .as_ref()
                .is_none_or(|f| c.version.precedence(f) == Ordering::Greater)
    });

    // The bare tag only matters when it can be reported: not with a constraint.
    let mut to_resolve: Vec<String> = wanted
        .iter()
        .filter(|c| !digests.contains_key(&c.tag))
        .map(|c| c.tag.clone())
        .collect();
    let want_bare = bare_listed && filter.constraint.is_none();
    if want_bare {
        to_resolve.push(filter.bare().to_owned());
    }
    let resolved = resolve::digests(client, repository, &to_resolve)
        .await
        .context("get tag digest")?;
    for (tag, digest) in to_resolve.into_iter().zip(resolved) {
        if let Some(d) = digest {
            digests.insert(tag, d);
        }
    }

    // One version per image: its most specific tag, a final release over a
    // prerelease; ties go to the bytewise-smaller tag (deterministic).
    let mut chosen: HashMap<&Digest, &Candidate> = HashMap::new();
    for candidate in &wanted {
        let Some(digest) = digests.get(&candidate.tag) else {
            continue;
        };
        chosen
            .entry(digest)
            .and_modify(|current| {
                if better(candidate, current) {
                    *current = candidate;
                }
            })
            .or_insert(candidate);
    }
    let mut entries: Vec<(&Digest, &Candidate)> = chosen.into_iter().collect();
    entries.sort_by(|(_, a), (_, b)| {
        a.version
            .precedence(&b.version)
            .then_with(|| a.specificity().cmp(&b.specificity()))
            .then_with(|| a.tag.cmp(&b.tag))
    });
    let mut versions: Vec<ResourceVersion> = entries
        .iter()
        .map(|(digest, c)| ResourceVersion {
            tag: c.tag.clone(),
            digest: digest.to_string(),
        })
        .collect();

    if want_bare
        && let Some(bare_digest) = digests.get(filter.bare())
        && !versions.iter().any(|v| v.digest == bare_digest.to_string())
        && !points_at_older_version(client, repository, &below, bare_digest).await?
    {
        versions.push(ResourceVersion {
            tag: filter.bare().to_owned(),
            digest: bare_digest.to_string(),
        });
    }
    Ok(versions)
}

/// Whether `candidate` should replace `current` as the tag of one image.
fn better(candidate: &Candidate, current: &Candidate) -> bool {
    match (
        current.version.is_prerelease(),
        candidate.version.is_prerelease(),
    ) {
        (false, true) => false,
        (true, false) => true,
        _ => {
            candidate
                .specificity()
                .cmp(&current.specificity())
                .then_with(|| current.tag.cmp(&candidate.tag))
                == Ordering::Greater
        }
    }
}

/// Whether the bare tag points at an image some version below the cursor
/// has. The original never resolves those and so reports such a `latest` as
/// a new version after the cursor; here they are resolved, but only in this
/// rare case (the bare tag matched no reported version).
async fn points_at_older_version(
    client: &RegistryClient,
    repository: &Repository,
    below: &[&Candidate],
    digest: &Digest,
) -> anyhow::Result<bool> {
    if below.is_empty() {
        return Ok(false);
    }
    let tags: Vec<String> = below.iter().map(|c| c.tag.clone()).collect();
    let resolved = resolve::digests(client, repository, &tags)
        .await
        .context("get tag digest")?;
    Ok(resolved.iter().flatten().any(|d| d == digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concourse::{CheckRequest, parse_request};

    fn source(json: &str) -> Source {
        parse_request::<CheckRequest>(&format!(r#"{{"source":{json}}}"#))
            .unwrap()
            .source
    }

    fn accepted(source_json: &str, tags: &[&str]) -> Vec<String> {
        let s = source(source_json);
        let f = Filter::new(&s).unwrap();
        tags.iter()
            .filter_map(|t| f.candidate(t))
            .map(|c| c.tag)
            .collect()
    }

    #[test]
    fn prerelease_filters() {
        let tags = [
            "1.0.0-alpha.1",
            "1.0.0-beta.1",
            "1.0.0-rc.1",
            "1.0.0-foo.1",
            "1.0.0",
            "1.0.0-rc.1-bar",
            "1.0.0-build.1",
        ];
        assert_eq!(accepted(r#"{"repository":"a/b"}"#, &tags), ["1.0.0"]);
        assert_eq!(
            accepted(r#"{"repository":"a/b","pre_releases":true}"#, &tags),
            ["1.0.0-alpha.1", "1.0.0-beta.1", "1.0.0-rc.1", "1.0.0"]
        );
        assert_eq!(
            accepted(
                r#"{"repository":"a/b","pre_releases":true,"pre_release_prefixes":["build"]}"#,
                &tags
            ),
            [
                "1.0.0-alpha.1",
                "1.0.0-beta.1",
                "1.0.0-rc.1",
                "1.0.0",
                "1.0.0-rc.1-bar",
                "1.0.0-build.1"
            ]
        );
        // Prefixes are plain string prefixes.
        assert_eq!(
            accepted(
                r#"{"repository":"a/b","pre_releases":true}"#,
                &["1.0.0-alphabet", "1.0.0-rcfoo", "1.0.0-rc1"]
            ),
            ["1.0.0-alphabet", "1.0.0-rcfoo", "1.0.0-rc1"]
        );
    }

    #[test]
    fn variants_and_constraints() {
        let tags = [
            "1.0.0",
            "1.0.0-foo",
            "0.9.0-foo",
            "foo",
            "1.0.0-bar",
            "latest",
            "x-foo",
        ];
        assert_eq!(
            accepted(r#"{"repository":"a/b","variant":"foo"}"#, &tags),
            ["1.0.0-foo", "0.9.0-foo"]
        );
        assert_eq!(accepted(r#"{"repository":"a/b"}"#, &tags), ["1.0.0"]);
        assert_eq!(
            accepted(
                r#"{"repository":"a/b","semver_constraint":"1.2.x"}"#,
                &["1.0.0", "1.2.1", "v1.2.3", "1.2.3-rc.1", "2.0.0"]
            ),
            ["1.2.1", "v1.2.3"]
        );
        let bad = source(r#"{"repository":"a/b","semver_constraint":"nope"}"#);
        let e = Filter::new(&bad).err().unwrap();
        assert!(
            format!("{e:#}").starts_with("parse semver constraint: improper constraint"),
            "{e:#}"
        );
    }

    #[test]
    fn specificity_rule() {
        let c = |t: &str| Candidate {
            tag: t.into(),
            version: Version::parse(t).unwrap(),
        };
        assert!(better(&c("3.2.1"), &c("3.2")));
        assert!(!better(&c("3"), &c("3.2")));
        assert!(better(&c("1.0.0"), &c("1.0.0-rc.1")));
        assert!(!better(&c("1.0.0-rc.2"), &c("1.0.0")));
        assert!(better(&c("1.0.0-rc.2"), &c("1.0.0-rc")));
        // Equal specificity: the bytewise-smaller tag wins, whatever the order seen.
        assert!(better(&c("1.2.3"), &c("v1.2.3")));
        assert!(!better(&c("v1.2.3"), &c("1.2.3")));
    }
}
