//! `params.annotations`: build provenance on what `out` pushes. The map is
//! set on the pushed top manifest (the image's manifest, or the index of a
//! multi-platform push), so a registry's UI, `skopeo inspect` and `in`'s
//! `annotation_regex` show where an image was built. Values may name the
//! build's own variables, which Concourse sets in a `put` step's
//! environment (`$BUILD_URL`, `${BUILD_PIPELINE_NAME}`…); `$$` is a
//! dollar sign. Opt-in: annotating changes the digest of what was built,
//! so a copy (which keeps its origin's digest) refuses it.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::image::raw_manifest::RawManifest;

/// The variables a value may name: the build metadata Concourse sets for a
/// `put` (concourse-docs "Implementing a Resource Type", metadata).
pub const BUILD_VARIABLES: &[&str] = &[
    "ATC_EXTERNAL_URL",
    "BUILD_CREATED_BY",
    "BUILD_ID",
    "BUILD_JOB_NAME",
    "BUILD_NAME",
    "BUILD_PIPELINE_INSTANCE_VARS",
    "BUILD_PIPELINE_NAME",
    "BUILD_TEAM_NAME",
    "BUILD_URL",
];

/// Bounds on what a user's map may add to a manifest (a manifest must stay
/// far below the registries' 4 MiB).
const MAX_ANNOTATIONS: usize = 64;
const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 4096;

/// Annotations to set, their values expanded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations(BTreeMap<String, String>);

impl Annotations {
    /// `params.annotations`, each value's variables expanded from `env`.
    pub fn expand(
        params: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        if params.len() > MAX_ANNOTATIONS {
            bail!(
                "params.annotations has {} entries; at most {MAX_ANNOTATIONS} are allowed",
                params.len()
            );
        }
        let mut expanded = BTreeMap::new();
        for (key, value) in params {
            if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
                bail!(
                    "params.annotations: a key must be 1 to {MAX_KEY_BYTES} bytes without control characters"
                );
            }
            let field = format!("params.annotations.{key}");
            let value = expand_value(value, &env).context(field.clone())?;
            if value.len() > MAX_VALUE_BYTES {
                bail!("{field}: longer than {MAX_VALUE_BYTES} bytes once expanded");
            }
            expanded.insert(key.clone(), value);
        }
        Ok(Annotations(expanded))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `manifest` with these annotations set (one it had under the same
    /// key is replaced, the others kept).
    pub fn apply(&self, manifest: &RawManifest) -> anyhow::Result<RawManifest> {
        let mut document: Value = serde_json::from_slice(&manifest.bytes)
            .context("annotating the pushed manifest: it is not JSON")?;
        let Some(object) = document.as_object_mut() else {
            bail!("annotating the pushed manifest: it is not a JSON object");
        };
        let annotations = object
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        let Some(annotations) = annotations.as_object_mut() else {
            bail!("annotating the pushed manifest: its annotations are not an object");
        };
        for (key, value) in &self.0 {
            annotations.insert(key.clone(), Value::String(value.clone()));
        }
        let bytes = serde_json::to_vec(&document).context("annotating the pushed manifest")?;
        Ok(RawManifest::new(bytes, manifest.media_type.clone()))
    }
}

/// `value` with `$NAME` and `${NAME}` replaced by the build variable's
/// value and `$$` by `$`. Any other `$` is an error, as is a variable that
/// is not a build variable or not set.
fn expand_value(value: &str, env: &impl Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        } else if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .context("an unclosed ${ (write $$ for a dollar sign)")?;
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            bail!("a lone $ (write $$ for a dollar sign)");
        }
        if !BUILD_VARIABLES.contains(&name) {
            bail!(
                "${name} is not a build variable (one of: {})",
                BUILD_VARIABLES.join(", ")
            );
        }
        let found = env(name)
            .with_context(|| format!("${name} is not set (Concourse sets it in put steps)"))?;
        out.push_str(&found);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "BUILD_URL" => Some("https://ci.example/builds/42".into()),
            "BUILD_PIPELINE_NAME" => Some("app".into()),
            "BUILD_NAME" => Some("7".into()),
            _ => None,
        }
    }

    fn one(value: &str) -> anyhow::Result<String> {
        let params = BTreeMap::from([("k".to_owned(), value.to_owned())]);
        Ok(Annotations::expand(&params, env)?.0["k"].clone())
    }

    #[test]
    fn build_variables_are_expanded_in_both_forms() {
        assert_eq!(one("$BUILD_URL").unwrap(), "https://ci.example/builds/42");
        assert_eq!(
            one("${BUILD_PIPELINE_NAME}/${BUILD_NAME}-x $$5 $BUILD_NAME.").unwrap(),
            "app/7-x $5 7."
        );
        assert_eq!(one("no variables").unwrap(), "no variables");
    }

    #[test]
    fn other_dollars_are_refused_with_the_key_named() {
        for (value, says) in [
            ("$HOME", "$HOME is not a build variable"),
            ("${AWS_SECRET_ACCESS_KEY}", "is not a build variable"),
            ("$BUILD_ID", "$BUILD_ID is not set"),
            ("cost $", "a lone $"),
            ("${BUILD_URL", "an unclosed ${"),
        ] {
            let params = BTreeMap::from([("org.x".to_owned(), value.to_owned())]);
            let error = format!("{:#}", Annotations::expand(&params, env).unwrap_err());
            assert!(error.starts_with("params.annotations.org.x: "), "{error}");
            assert!(error.contains(says), "{value}: {error}");
        }
    }

    #[test]
    fn bounds_hold() {
        let many: BTreeMap<String, String> =
            (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(Annotations::expand(&many, env).is_err());
        let long = BTreeMap::from([("k".to_owned(), "x".repeat(4097))]);
        assert!(Annotations::expand(&long, env).is_err());
        let bad_key = BTreeMap::from([("a\nb".to_owned(), "v".to_owned())]);
        assert!(Annotations::expand(&bad_key, env).is_err());
    }

    #[test]
    fn apply_sets_and_replaces_keeping_the_rest() {
        let manifest = RawManifest::new(
            br#"{"schemaVersion":2,"annotations":{"a":"old","b":"kept"}}"#.to_vec(),
            "application/vnd.oci.image.manifest.v1+json",
        );
        let params = BTreeMap::from([("a".to_owned(), "new".to_owned())]);
        let annotated = Annotations::expand(&params, env)
            .unwrap()
            .apply(&manifest)
            .unwrap();
        let document: Value = serde_json::from_slice(&annotated.bytes).unwrap();
        assert_eq!(document["annotations"]["a"], "new");
        assert_eq!(document["annotations"]["b"], "kept");
        assert_eq!(document["schemaVersion"], 2);
        assert_ne!(annotated.digest, manifest.digest);
        assert_eq!(annotated.media_type, manifest.media_type);
    }
}
