//! Choosing one image of an index by platform: the one rule ([`pick`]) of
//! every step. Beyond the original, a CPU variant can be asked for, in its
//! own field or as users write it (`arm64/v8`, `arm/v7`).

use std::collections::HashSet;
use std::fmt;

use super::manifest::{Descriptor, ImageIndex, PlatformSpec};
use super::media_type;

/// The platform wanted from an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// The operating system, e.g. `linux`.
    pub os: String,
    /// The CPU architecture, e.g. `arm64`.
    pub architecture: String,
    /// Empty means any variant.
    pub variant: String,
}

impl Platform {
    /// `os`/`architecture`/`variant` as configured; empty fields default to
    /// this binary's platform (as the original does), and an architecture
    /// written `arm64/v8` carries its variant.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Self {
        let host = Platform::host();
        let (architecture, inline_variant) = match architecture.split_once('/') {
            Some((a, v)) => (a, v),
            None => (architecture, ""),
        };
        let variant = if variant.is_empty() {
            inline_variant
        } else {
            variant
        };
        Platform {
            os: if os.is_empty() {
                host.os
            } else {
                os.to_owned()
            },
            architecture: if architecture.is_empty() {
                host.architecture
            } else {
                architecture.to_owned()
            },
            variant: variant.to_owned(),
        }
    }

    /// `os/architecture[/variant]`, each part non-empty (no host
    /// defaults: the text names the whole platform).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(os), Some(arch), variant, None)
                if !os.is_empty() && !arch.is_empty() && variant != Some("") =>
            {
                Some(Platform::new(os, arch, variant.unwrap_or_default()))
            }
            _ => None,
        }
    }

    /// Whether `self` and `other` name the same platform (`arm64` and
    /// `arm64/v8` do).
    pub fn same_as(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && normalise_variant(&self.architecture, &self.variant)
                == normalise_variant(&other.architecture, &other.variant)
    }

    /// The platform this binary runs on, in OCI terms.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: String::new(),
        }
    }

    /// Whether an image of platform `spec` (none: linux/amd64) is one of
    /// this platform.
    pub fn matches(&self, spec: Option<&PlatformSpec>) -> bool {
        // A child without a platform is taken to be linux/amd64.
        let default = PlatformSpec {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: String::new(),
        };
        let spec = spec.unwrap_or(&default);
        spec.os == self.os
            && spec.architecture == self.architecture
            && (self.variant.is_empty()
                || normalise_variant(&spec.architecture, &spec.variant)
                    == normalise_variant(&self.architecture, &self.variant))
    }
}

/// arm64 images usually omit their (only) variant `v8`.
fn normalise_variant<'a>(architecture: &str, variant: &'a str) -> &'a str {
    match (architecture, variant) {
        ("arm64", "") => "v8",
        _ => variant,
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// One image's platform, for error messages.
pub fn describe_one(p: &PlatformSpec) -> String {
    if p.variant.is_empty() {
        format!("{}/{}", p.os, p.architecture)
    } else {
        format!("{}/{}/{}", p.os, p.architecture, p.variant)
    }
}

/// The platforms an index offers, for error messages.
pub fn describe<'a>(children: impl IntoIterator<Item = &'a Descriptor>) -> String {
    children
        .into_iter()
        .map(|d| match &d.platform {
            Some(p) => describe_one(p),
            None => "(no platform)".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why [`pick`] found no single entry.
#[derive(Debug)]
pub enum NoPick {
    /// Nothing matches the platform; the platforms there are.
    Missing(String),
    /// No platform was asked for and several images are there.
    Several(usize, String),
}

impl NoPick {
    /// The error for the index `what` (its name or digest).
    pub fn error(&self, what: impl std::fmt::Display, wanted: Option<&Platform>) -> anyhow::Error {
        match (self, wanted) {
            (NoPick::Missing(has), Some(platform)) => {
                anyhow::anyhow!("no image for platform {platform} in {what} (it has: {has})")
            }
            (NoPick::Missing(has), None) => anyhow::anyhow!("no image in {what} (it has: {has})"),
            (NoPick::Several(n, has), _) => {
                anyhow::anyhow!("{what} holds {n} images ({has}): a platform must be chosen")
            }
        }
    }
}

/// BuildKit's attestation entries (`unknown/unknown`, a reference-type
/// annotation) are never an image to run.
pub fn is_attestation(entry: &Descriptor) -> bool {
    entry
        .annotations
        .get("vnd.docker.reference.type")
        .is_some_and(|t| t == "attestation-manifest")
        || entry
            .platform
            .as_ref()
            .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// The entry of `index` that stands for `wanted` (with `None`: the index's
/// only image): the first image entry of that platform (an entry without a
/// platform is linux/amd64, as Docker reads it), else the index's only
/// nested index (BuildKit writes one without a platform), which the caller
/// descends into. Attestation entries are never chosen.
pub fn pick<'a>(
    index: &'a ImageIndex,
    wanted: Option<&Platform>,
) -> Result<&'a Descriptor, NoPick> {
    let entries: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|e| !is_attestation(e))
        .collect();
    // An image listed twice is one image.
    let mut listed = HashSet::new();
    let images: Vec<&Descriptor> = entries
        .iter()
        .copied()
        .filter(|e| !media_type::is_index(&e.media_type) && listed.insert(e.digest.as_str()))
        .collect();
    let chosen = match wanted {
        Some(platform) => images
            .iter()
            .copied()
            .find(|e| platform.matches(e.platform.as_ref())),
        None => match images.as_slice() {
            [only] => Some(*only),
            [] => None,
            several => {
                return Err(NoPick::Several(
                    several.len(),
                    describe(several.iter().copied()),
                ));
            }
        },
    };
    match (chosen, entries.as_slice()) {
        (Some(entry), _) => Ok(entry),
        (None, [only]) if media_type::is_index(&only.media_type) => Ok(only),
        (None, _) => Err(NoPick::Missing(describe(entries.iter().copied()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(os: &str, arch: &str, variant: &str) -> Descriptor {
        serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", "0".repeat(64)), "size": 1,
            "platform": {"os": os, "architecture": arch, "variant": variant},
        }))
        .unwrap()
    }

    #[test]
    fn selection_with_variants() {
        let children = [
            child("linux", "arm", "v6"),
            child("linux", "arm", "v7"),
            child("linux", "arm64", ""),
            child("linux", "amd64", ""),
        ];
        let pick = |p: Platform| {
            children
                .iter()
                .find(|d| p.matches(d.platform.as_ref()))
                .map(|d| d.platform.clone().unwrap())
        };
        assert_eq!(
            pick(Platform::new("linux", "arm/v7", "")).unwrap().variant,
            "v7"
        );
        assert_eq!(
            pick(Platform::new("linux", "arm", "v6")).unwrap().variant,
            "v6"
        );
        assert_eq!(
            pick(Platform::new("linux", "arm", "")).unwrap().variant,
            "v6"
        );
        assert_eq!(
            pick(Platform::new("linux", "arm64/v8", ""))
                .unwrap()
                .architecture,
            "arm64"
        );
        assert!(pick(Platform::new("linux", "arm/v5", "")).is_none());
        assert!(pick(Platform::new("windows", "amd64", "")).is_none());
        assert_eq!(
            describe(&children),
            "linux/arm/v6, linux/arm/v7, linux/arm64, linux/amd64"
        );
    }

    #[test]
    fn defaults_to_the_host() {
        let p = Platform::new("", "", "");
        assert_eq!(p, Platform::host());
        assert_eq!(Platform::new("", "", "").os, "linux");
    }
}
