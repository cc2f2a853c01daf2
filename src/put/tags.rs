//! Which tags a put pushes, in order: the source `tag`, the `version` tag
//! (+ `-variant`), the `bump_aliases` it earns against the repository's
//! existing tags, then the `additional_tags` (each with `tag_prefix`).
//! Every tag is checked against the tag grammar before anything is pushed,
//! and duplicates are pushed (and reported) once.

use anyhow::{Context, bail};

use std::path::Path;

use super::tag_list::TagList;
use crate::semver::Version;

/// What the tags are computed from.
#[derive(Debug, Default)]
pub struct TagRequest<'a> {
    pub source_tag: &'a str,
    pub version: &'a str,
    pub variant: &'a str,
    pub bump_aliases: bool,
    /// The words of the `additional_tags` file (see [`read_additional`]),
    /// if the param is set.
    pub additional: Option<&'a [String]>,
    pub tag_prefix: &'a str,
}

impl TagRequest<'_> {
    /// The version, if any; `invalid semantic version` for anything else.
    pub fn parsed_version(&self) -> anyhow::Result<Option<Version>> {
        if self.version.is_empty() {
            return Ok(None);
        }
        // Its error reads `invalid semantic version: "<v>"`, as the original's.
        let version = Version::parse(self.version).context("params.version")?;
        if !version.meta.is_empty() {
            bail!(
                "version {:?} has build metadata (+{}), which a tag cannot hold: drop it from params.version",
                self.version,
                version.meta
            );
        }
        Ok(Some(version))
    }

    /// Whether aliases must be computed (and so the existing tags listed).
    pub fn wants_aliases(&self) -> anyhow::Result<bool> {
        Ok(self.bump_aliases && self.parsed_version()?.is_some_and(|v| !v.is_prerelease()))
    }

    /// The tags to push, in order. `existing` is the repository's tag list
    /// (only read when aliases are wanted).
    pub fn tags(&self, existing: &[String]) -> anyhow::Result<Vec<String>> {
        let mut tags = TagList::new("params.additional_tags");
        if !self.source_tag.is_empty() {
            tags.push(self.source_tag.to_owned())?;
        }
        if let Some(version) = self.parsed_version()? {
            tags.push(with_variant(&version.canonical(), self.variant))?;
            if self.wants_aliases()? {
                for alias in aliases(&version, self.variant, existing) {
                    tags.push(alias)?;
                }
            }
        }
        let additional = self.additional.unwrap_or_default();
        if additional.is_empty() && !self.tag_prefix.is_empty() {
            bail!("tag_prefix can only be used when additional_tags are specified");
        }
        for tag in additional {
            tags.push(tag.clone())?;
        }
        if tags.is_empty() {
            bail!("no tag specified - need either 'version:' in params or 'tag:' in source");
        }
        Ok(tags.into_vec())
    }
}

/// The words of the `additional_tags` file at `path`, each behind
/// `prefix`: read once, checked, each once, at most 1,000 (`tag_list::MAX_TAGS`).
pub fn read_additional(path: &Path, prefix: &str) -> anyhow::Result<Vec<String>> {
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "could not parse additional tags: failed to read file at {:?}",
            path.display().to_string()
        )
    })?;
    let mut words = TagList::new("params.additional_tags");
    words.read(file, prefix)?;
    Ok(words.into_vec())
}

fn with_variant(tag: &str, variant: &str) -> String {
    if variant.is_empty() {
        tag.to_owned()
    } else {
        format!("{tag}-{variant}")
    }
}

/// `latest` (or the variant), `<major>` and `<major>.<minor>` (with
/// `-variant`), each only if no existing final release of the same variant
/// outranks `version` at that level.
pub fn aliases(version: &Version, variant: &str, existing: &[String]) -> Vec<String> {
    let (mut latest, mut major, mut minor) = (true, true, true);
    for tag in existing {
        let text = if variant.is_empty() {
            tag.as_str()
        } else {
            match tag.strip_suffix(variant).and_then(|t| t.strip_suffix('-')) {
                Some(t) => t,
                None => continue,
            }
        };
        let Ok(other) = Version::parse(text) else {
            continue;
        };
        // Pre-releases never hold an alias (and other variants' tags, such as
        // `2.0.0-goodbye` without a variant, read as pre-releases).
        if other.is_prerelease() {
            continue;
        }
        if other.precedence(version).is_gt() {
            latest = false;
        }
        if other.major == version.major && other.minor > version.minor {
            major = false;
        }
        if other.major == version.major
            && other.minor == version.minor
            && other.patch > version.patch
        {
            minor = false;
            major = false;
        }
    }
    let mut out = Vec::new();
    if latest {
        out.push(if variant.is_empty() {
            "latest".to_owned()
        } else {
            variant.to_owned()
        });
    }
    if major {
        out.push(with_variant(&version.major.to_string(), variant));
    }
    if minor {
        out.push(with_variant(
            &format!("{}.{}", version.major, version.minor),
            variant,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(
        existing: &[&str],
        variant: &str,
        version: &str,
        bump: bool,
    ) -> anyhow::Result<Vec<String>> {
        let existing: Vec<String> = existing.iter().map(|s| s.to_string()).collect();
        TagRequest {
            version,
            variant,
            bump_aliases: bump,
            ..Default::default()
        }
        .tags(&existing)
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    /// name, existing tags, variant, version, bump_aliases, pushed tags.
    type Case<'a> = (
        &'a str,
        &'a [&'a str],
        &'a str,
        &'a str,
        bool,
        &'a [&'a str],
    );

    /// The original's push table (spec §9.4, P1–P21), as sets of tags.
    #[test]
    fn bump_aliases_table() {
        let cases: &[Case] = &[
            ("P1", &[], "", "1.2.3", false, &["1.2.3"]),
            ("P2", &[], "ubuntu", "1.2.3", false, &["1.2.3-ubuntu"]),
            (
                "P5/P6",
                &[],
                "",
                "1.2.3",
                true,
                &["1.2.3", "1.2", "1", "latest"],
            ),
            ("P7", &[], "", "1.2.3-alpha.1", true, &["1.2.3-alpha.1"]),
            (
                "P8",
                &["1.2.2"],
                "",
                "1.2.3",
                true,
                &["1.2.3", "1.2", "1", "latest"],
            ),
            ("P9", &["1.2.4"], "", "1.2.3", true, &["1.2.3"]),
            ("P10", &["1.3.0"], "", "1.2.3", true, &["1.2.3", "1.2"]),
            ("P11", &["2.0.0"], "", "1.2.3", true, &["1.2.3", "1.2", "1"]),
            (
                "P12",
                &["1.3.0"],
                "lts",
                "1.2.3",
                true,
                &["1.2.3-lts", "1.2-lts", "1-lts", "lts"],
            ),
            (
                "P13",
                &["2.0.0-rc.1"],
                "",
                "1.2.3",
                true,
                &["1.2.3", "1.2", "1", "latest"],
            ),
            (
                "P14",
                &["2.0.0-goodbye"],
                "hello",
                "1.2.3",
                true,
                &["1.2.3-hello", "1.2-hello", "1-hello", "hello"],
            ),
            (
                "P15/P16",
                &[],
                "hello",
                "1.2.3",
                true,
                &["1.2.3-hello", "1.2-hello", "1-hello", "hello"],
            ),
            (
                "P17/P18",
                &["2.0.0-hello", "2.0.0-hello"],
                "hello",
                "1.2.3",
                true,
                &["1.2.3-hello", "1.2-hello", "1-hello"],
            ),
            (
                "P19",
                &["1.2.2-hello"],
                "hello",
                "1.2.3",
                true,
                &["1.2.3-hello", "1.2-hello", "1-hello", "hello"],
            ),
            (
                "P20",
                &["1.2.4-hello"],
                "hello",
                "1.2.3",
                true,
                &["1.2.3-hello"],
            ),
            (
                "P21",
                &["1.3.0-hello"],
                "hello",
                "1.2.3",
                true,
                &["1.2.3-hello", "1.2-hello"],
            ),
        ];
        for (name, existing, variant, version, bump, expected) in cases {
            let got = pushed(existing, variant, version, *bump)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            assert_eq!(sorted(got), sorted(want), "{name}");
        }
        let e = pushed(&[], "", "hoogily-boogily", false).unwrap_err();
        assert!(
            format!("{e:#}").contains("invalid semantic version: \"hoogily-boogily\""),
            "P3: {e:#}"
        );
        let e = pushed(&[], "", "", false).unwrap_err();
        assert!(e.to_string().contains("no tag specified"), "P4: {e}");
    }

    #[test]
    fn order_prefixes_normalisation_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let file = |text: &str, prefix: &str| {
            let path = dir.path().join(format!("tags-{}", text.len()));
            std::fs::write(&path, text).unwrap();
            read_additional(&path, prefix)
        };
        let words = file("additional-7\ntags-7 \n additional-7", "dev-").unwrap();
        let request = TagRequest {
            source_tag: "latest-7",
            version: "v1.2",
            bump_aliases: true,
            additional: Some(&words),
            tag_prefix: "dev-",
            ..Default::default()
        };
        assert_eq!(
            request.tags(&["1.3.0".to_owned()]).unwrap(),
            ["latest-7", "1.2.0", "1.2", "dev-additional-7", "dev-tags-7"]
        );
        let e = TagRequest {
            source_tag: "x",
            tag_prefix: "dev-",
            ..Default::default()
        }
        .tags(&[])
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("tag_prefix can only be used when additional_tags are specified")
        );
        let blank = file(" \n", "dev-").unwrap();
        let e = TagRequest {
            source_tag: "x",
            additional: Some(&blank),
            tag_prefix: "dev-",
            ..Default::default()
        }
        .tags(&[])
        .unwrap_err();
        assert!(e.to_string().contains("tag_prefix can only be used"));
        let e = TagRequest {
            version: "1.2.3+build.5",
            ..Default::default()
        }
        .tags(&[])
        .unwrap_err();
        assert!(e.to_string().contains("build metadata"), "{e}");
        let e = file("bad/tag", "").unwrap_err();
        assert!(e.to_string().contains("invalid tag"), "{e}");
        // A prefixed word equal to another tag is still a word of the file.
        let same = file("x", "dev-").unwrap();
        let request = TagRequest {
            source_tag: "dev-x",
            additional: Some(&same),
            tag_prefix: "dev-",
            ..Default::default()
        };
        assert_eq!(request.tags(&[]).unwrap(), ["dev-x"]);
        let e = TagRequest {
            version: "1.0.0-rc.01",
            ..Default::default()
        }
        .tags(&[])
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("version segment starts with 0"),
            "{e:#}"
        );
    }
}
