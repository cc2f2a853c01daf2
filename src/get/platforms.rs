//! `params.platforms`: several platforms of an index in one `get` (asked of
//! the original as upstream #334 and #313), for the formats that can hold
//! several: `oci-layout` keeps the index's own bytes when every platform is
//! kept and writes a new index of the chosen entries otherwise; `oci` puts
//! one image per platform in `image.tar`. `rootfs` is one platform.

use std::collections::HashSet;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::image::Platform;
use crate::image::manifest::{ImageConfig, parse_index};
use crate::image::platform::{describe_one, is_attestation, pick};
use crate::image::tree::RawManifest;

/// An index of real images holds a handful of platforms.
const MAX_PLATFORMS: usize = 32;
/// `os/architecture/variant` is short; longer text is not shown back.
const MAX_PLATFORM_TEXT: usize = 100;

/// The platforms `params.platforms` names, checked: each
/// `os/architecture[/variant]`, none twice, at most [`MAX_PLATFORMS`].
pub fn parse(list: &[String]) -> anyhow::Result<Vec<Platform>> {
    if list.len() > MAX_PLATFORMS {
        bail!(
            "params.platforms lists {} platforms; at most {MAX_PLATFORMS}",
            list.len()
        );
    }
    let mut platforms: Vec<Platform> = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        if text.len() > MAX_PLATFORM_TEXT {
            bail!("params.platforms[{i}] is not a platform (over {MAX_PLATFORM_TEXT} characters)");
        }
        let platform = Platform::parse(text).with_context(|| {
            format!("params.platforms[{i}] {text:?}: expected os/architecture[/variant], e.g. linux/arm64")
        })?;
        if platforms.iter().any(|p| p.same_as(&platform)) {
            bail!("params.platforms[{i}] {text:?} names a platform listed before it");
        }
        platforms.push(platform);
    }
    Ok(platforms)
}

/// What the layout's `index.json` is when `platforms` are chosen from `top`.
pub enum LayoutIndex {
    /// Every image of the index was chosen: the index as served.
    AsServed,
    /// A new index: the chosen entries (and the attestations that name
    /// them), every other field of the served index kept.
    Subset(RawManifest),
}

/// Narrows the index `top` to `platforms`; a platform it lacks is an error
/// naming the ones it has.
pub fn narrow(top: &RawManifest, platforms: &[Platform]) -> anyhow::Result<LayoutIndex> {
    let index = parse_index(&top.bytes).with_context(|| format!("index {}", top.digest))?;
    let mut chosen = HashSet::new();
    for platform in platforms {
        let entry = pick(&index, Some(platform))
            .map_err(|e| e.error(format_args!("index {}", top.digest), Some(platform)))?;
        chosen.insert(entry.digest.clone());
    }
    let every_image_kept = index
        .manifests
        .iter()
        .filter(|e| !is_attestation(e))
        .all(|e| chosen.contains(&e.digest));
    if every_image_kept {
        return Ok(LayoutIndex::AsServed);
    }
    // Edit the served document itself, so fields we do not model survive.
    let mut document: Value = serde_json::from_slice(&top.bytes)
        .with_context(|| format!("index {} is not JSON", top.digest))?;
    let kept: Vec<Value> = index
        .manifests
        .iter()
        .zip(document["manifests"].as_array().into_iter().flatten())
        .filter(|(entry, _)| {
            chosen.contains(&entry.digest)
                || (is_attestation(entry)
                    && entry
                        .annotations
                        .get("vnd.docker.reference.digest")
                        .is_some_and(|d| chosen.contains(d)))
        })
        .map(|(_, raw)| raw.clone())
        .collect();
    document["manifests"] = Value::Array(kept);
    let bytes = serde_json::to_vec(&document)?;
    Ok(LayoutIndex::Subset(RawManifest::new(
        bytes,
        top.media_type.clone(),
    )))
}

/// For a single image (no index): every platform asked must be the
/// image's own, as its config says.
pub fn check_single(
    top: &RawManifest,
    config: &ImageConfig,
    platforms: &[Platform],
) -> anyhow::Result<()> {
    let own = &config.platform;
    match platforms.iter().find(|p| !p.matches(Some(own))) {
        Some(missing) => bail!(
            "no image for platform {missing} in {}: it is a single image for {}",
            top.digest,
            describe_one(own)
        ),
        None => Ok(()),
    }
}

/// `repo:tag` for the image of `platform` in a tarball of several: the tag
/// with the platform appended (`repo:tag-linux-arm64-v8`), since one name
/// cannot tag several images in `docker load`.
pub fn repo_tag_for(repo_tag: &str, platform: &Platform) -> String {
    let suffix = platform.to_string().replace('/', "-");
    format!("{repo_tag}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn platforms_are_parsed_and_checked() {
        let parsed = parse(&strings(&["linux/amd64", "linux/arm64/v8"])).unwrap();
        assert_eq!(parsed[1].to_string(), "linux/arm64/v8");
        for (bad, says) in [
            (vec!["linux"], "expected os/architecture"),
            (vec!["linux/"], "expected os/architecture"),
            (vec!["linux/arm/"], "expected os/architecture"),
            (vec!["a/b/c/d"], "expected os/architecture"),
            (vec!["linux/arm64", "linux/arm64/v8"], "listed before"),
        ] {
            let e = parse(&strings(&bad)).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let long = "x".repeat(200);
        assert!(
            !parse(std::slice::from_ref(&long))
                .unwrap_err()
                .to_string()
                .contains(&long)
        );
        let many: Vec<String> = (0..40).map(|i| format!("linux/arch{i}")).collect();
        assert!(parse(&many).unwrap_err().to_string().contains("at most"));
    }

    fn index(entries: serde_json::Value) -> RawManifest {
        RawManifest::new(
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": entries,
                "annotations": {"org.example": "kept"},
            }))
            .unwrap(),
            "application/vnd.oci.image.index.v1+json",
        )
    }

    fn entry(digit: char, platform: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", digit.to_string().repeat(64)),
            "size": 10, "platform": platform, "x-unknown": digit.to_string(),
        })
    }

    #[test]
    fn an_index_is_narrowed_with_its_attestations() {
        let mut attestation = entry(
            'c',
            serde_json::json!({"os": "unknown", "architecture": "unknown"}),
        );
        attestation["annotations"] = serde_json::json!({
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": format!("sha256:{}", "b".repeat(64)),
        });
        let top = index(serde_json::json!([
            entry(
                'a',
                serde_json::json!({"os": "linux", "architecture": "amd64"})
            ),
            entry(
                'b',
                serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"})
            ),
            attestation,
        ]));
        let both = parse(&strings(&["linux/amd64", "linux/arm64"])).unwrap();
        assert!(matches!(
            narrow(&top, &both).unwrap(),
            LayoutIndex::AsServed
        ));
        let arm = parse(&strings(&["linux/arm64/v8"])).unwrap();
        let LayoutIndex::Subset(subset) = narrow(&top, &arm).unwrap() else {
            panic!("a subset")
        };
        let doc: Value = serde_json::from_slice(&subset.bytes).unwrap();
        let kept: Vec<&str> = doc["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["x-unknown"].as_str().unwrap())
            .collect();
        assert_eq!(kept, ["b", "c"], "the image and its attestation");
        assert_eq!(doc["annotations"]["org.example"], "kept");
        assert_eq!(subset.media_type, top.media_type);
        let missing = parse(&strings(&["linux/s390x"])).unwrap();
        let e = narrow(&top, &missing).err().unwrap().to_string();
        assert!(
            e.contains("linux/s390x") && e.contains("linux/amd64, linux/arm64/v8"),
            "{e}"
        );
    }

    #[test]
    fn tarball_names_carry_the_platform() {
        let p = parse(&strings(&["linux/arm64/v8"])).unwrap();
        assert_eq!(repo_tag_for("r/x:1", &p[0]), "r/x:1-linux-arm64-v8");
    }
}
