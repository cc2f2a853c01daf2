//! The files and metadata `in` writes besides the image: `metadata.json`,
//! `labels.json`, `tag`, `digest`, `repository`, and the Concourse metadata
//! fields (with `label_regex` / `annotation_regex` matches, sorted by key).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use regex::Regex;
use serde::Serialize;

use crate::concourse::MetadataField;
use crate::image::manifest::ImageConfig;

#[derive(Serialize)]
struct RunMetadata<'a> {
    cmd: &'a Option<Vec<String>>,
    entrypoint: &'a Option<Vec<String>>,
    env: &'a Option<Vec<String>>,
    user: &'a str,
}

/// `metadata.json`: the config's Cmd, Entrypoint, Env and User.
pub fn metadata_json(config: &ImageConfig) -> Vec<u8> {
    let none = None;
    let c = config.config.as_ref();
    let meta = RunMetadata {
        cmd: c.map_or(&none, |c| &c.cmd),
        entrypoint: c.map_or(&none, |c| &c.entrypoint),
        env: c.map_or(&none, |c| &c.env),
        user: c.and_then(|c| c.user.as_deref()).unwrap_or(""),
    };
    let mut out = serde_json::to_vec(&meta).unwrap_or_default();
    out.push(b'\n');
    out
}

/// `labels.json`: the config's labels, sorted, `<`, `>` and `&` escaped as
/// the original writes them.
pub fn labels_json(config: &ImageConfig) -> Vec<u8> {
    let empty = BTreeMap::new();
    let labels = config
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .unwrap_or(&empty);
    let text = serde_json::to_string(labels)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    format!("{text}\n").into_bytes()
}

/// Entries of `map` whose key matches `pattern`, sorted by key.
pub fn matching(map: &BTreeMap<String, String>, pattern: &Regex) -> Vec<MetadataField> {
    map.iter()
        .filter(|(k, _)| pattern.is_match(k))
        .map(|(k, v)| MetadataField::new(k, v))
        .collect()
}

/// Writes a small file whole, through a temp name, mode 0644.
pub fn write_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut tmp, contents)
        .with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ImageConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn metadata_file() {
        let c = config(
            r#"{"config":{"Cmd":["-c","echo hello world"],"Entrypoint":["/bin/sh"],"Env":["A=1"],"User":"someuser"}}"#,
        );
        assert_eq!(
            String::from_utf8(metadata_json(&c)).unwrap(),
            "{\"cmd\":[\"-c\",\"echo hello world\"],\"entrypoint\":[\"/bin/sh\"],\"env\":[\"A=1\"],\"user\":\"someuser\"}\n"
        );
        assert_eq!(
            String::from_utf8(metadata_json(&config("{}"))).unwrap(),
            "{\"cmd\":null,\"entrypoint\":null,\"env\":null,\"user\":\"\"}\n"
        );
    }

    #[test]
    fn labels_file_is_sorted_and_escaped() {
        let c = config(r#"{"config":{"Labels":{"z":"1","a":"<b>&"}}}"#);
        assert_eq!(
            String::from_utf8(labels_json(&c)).unwrap(),
            "{\"a\":\"\\u003cb\\u003e\\u0026\",\"z\":\"1\"}\n"
        );
        assert_eq!(labels_json(&config("{}")), b"{}\n");
    }
}
