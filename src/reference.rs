//! Image references: which registry a `source.repository` names, the path on
//! it, and tags or digests within it.
//!
//! The rules follow the Docker convention (and go-containerregistry's, which
//! the original resource uses): the first path component is a registry host
//! only when the name has a `/` and that component is `localhost` or contains
//! `.` or `:`; everything else is on Docker Hub, where a one-component path
//! gains the implicit `library/` namespace.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};

use crate::image::Digest;

/// The name Docker Hub repositories are reported under (metadata, RepoTags).
pub const DOCKER_HUB: &str = "index.docker.io";
/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A repository on a registry, e.g. `index.docker.io/library/alpine`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    registry: String,
    path: String,
}

impl Repository {
    /// Parses a repository name as written in `source.repository`.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        if name.is_empty() {
            bail!("repository is empty");
        }
        if let Some(at) = name.find('@') {
            bail!(
                "repository {name:?} contains a digest ({}); put the digest in the version, not the repository",
                &name[at..]
            );
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if first == "localhost" || first.contains(['.', ':']) => {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = match registry.as_str() {
            "docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
            _ => registry,
        };
        validate_registry(&registry).with_context(|| format!("invalid repository {name:?}"))?;
        if let Some(colon) = path.rfind(':') {
            bail!(
                "repository {name:?} contains a tag ({}); use `tag` in source instead",
                &path[colon + 1..]
            );
        }
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        validate_path(&path).with_context(|| format!("invalid repository {name:?}"))?;
        Ok(Repository { registry, path })
    }

    /// The registry as named in references (`index.docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) to send API requests to.
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() {
            docker_hub_api()
        } else {
            &self.registry
        }
    }

    /// The repository path on the registry, e.g. `library/alpine`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether this is a Docker Hub repository.
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }

    /// The same repository path on another registry (used for mirrors).
    pub fn on_registry(&self, registry: &str) -> anyhow::Result<Self> {
        validate_registry(registry)?;
        Ok(Repository {
            registry: registry.to_owned(),
            path: self.path.clone(),
        })
    }
}

/// Docker Hub's API host. `REGISTRY_IMAGE_DOCKER_HUB_HOST` replaces it: the
/// tests route Docker Hub names to a local registry this way (the network
/// they may use is loopback only).
pub fn docker_hub_api() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("REGISTRY_IMAGE_DOCKER_HUB_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DOCKER_HUB_API.to_owned())
    })
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

/// What a reference points at inside a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A tag.
    Tag(String),
    /// A digest.
    Digest(Digest),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tag(t) => f.write_str(t),
            Target::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// A full image reference: `registry/path:tag` or `registry/path@digest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The repository.
    pub repository: Repository,
    /// What in it.
    pub target: Target,
}

impl Reference {
    /// Splits `name[:tag][@digest]` into the name as written and what it
    /// names, `None` when neither a tag nor a digest is given; a digest
    /// wins over a tag when both are (as Docker does). The tag is checked
    /// against the grammar, the name is not parsed.
    pub fn split(s: &str) -> anyhow::Result<(&str, Option<Target>)> {
        let (name, digest) = match s.split_once('@') {
            Some((name, digest)) => (name, Some(digest.parse::<Digest>()?)),
            None => (s, None),
        };
        // A `:` after the last `/` separates a tag; one before it is a port.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        let target = match (digest, tag) {
            (Some(d), _) => Some(Target::Digest(d)),
            (None, Some(t)) => {
                validate_tag(t)?;
                Some(Target::Tag(t.to_owned()))
            }
            (None, None) => None,
        };
        Ok((name, target))
    }
}

impl FromStr for Reference {
    type Err = anyhow::Error;

    /// Parses `name[:tag][@digest]` (see [`Reference::split`]); a missing
    /// tag means `latest`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (name, target) = Reference::split(s)?;
        Ok(Reference {
            repository: Repository::parse(name)?,
            target: target.unwrap_or_else(|| Target::Tag("latest".to_owned())),
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Tag(t) => write!(f, "{}:{t}", self.repository),
            Target::Digest(d) => write!(f, "{}@{d}", self.repository),
        }
    }
}

/// The longest tag the grammar allows, in bytes (tags are ASCII).
pub const MAX_TAG_BYTES: usize = 128;

/// Checks a tag against the distribution grammar `[\w][\w.-]{0,127}`, so that
/// a bad tag fails before any network use instead of as a registry error (or
/// worse, as a different URL path).
pub fn validate_tag(tag: &str) -> anyhow::Result<()> {
    let valid = !tag.is_empty()
        && tag.len() <= MAX_TAG_BYTES
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !tag.starts_with(['.', '-']);
    if !valid {
        bail!(
            "invalid tag {tag:?}: a tag is 1 to 128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        );
    }
    Ok(())
}

/// Path components are lower-case alphanumerics separated by `.`, `_`, `__`
/// or runs of `-`, joined by `/` (the distribution name grammar).
fn validate_path(path: &str) -> anyhow::Result<()> {
    if path.len() < 2 || path.len() > 255 {
        bail!("the repository path must be 2 to 255 characters long");
    }
    for component in path.split('/') {
        let bytes = component.as_bytes();
        let ok = !bytes.is_empty()
            && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
            && bytes[bytes.len() - 1].is_ascii_lowercase()
                | bytes[bytes.len() - 1].is_ascii_digit()
            && bytes.iter().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && !component.contains("..")
            && !component.contains("___");
        if !ok {
            bail!(
                "path component {component:?} must be lower-case letters and digits, separated by '.', '_' or '-'"
            );
        }
    }
    Ok(())
}

/// A registry is `host[:port]`; the host is a DNS name, an IPv4 address or a
/// bracketed IPv6 address.
fn validate_registry(registry: &str) -> anyhow::Result<()> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .with_context(|| format!("registry {registry:?} has an unclosed '['"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            bail!("registry {registry:?} is not a valid IPv6 address");
        }
        (host, after.strip_prefix(':'))
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        bail!("registry {registry:?} has an invalid port {port:?}");
    }
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
    {
        bail!("registry host {host:?} is not a valid host name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> (String, String) {
        let r = Repository::parse(s).unwrap();
        (r.registry().to_owned(), r.path().to_owned())
    }

    #[test]
    fn docker_hub_defaults() {
        assert_eq!(
            repo("alpine"),
            ("index.docker.io".into(), "library/alpine".into())
        );
        assert_eq!(
            repo("concourse/test"),
            ("index.docker.io".into(), "concourse/test".into())
        );
        assert_eq!(
            repo("docker.io/alpine"),
            ("index.docker.io".into(), "library/alpine".into())
        );
        assert_eq!(
            repo("index.docker.io/library/busybox"),
            ("index.docker.io".into(), "library/busybox".into())
        );
        let r = Repository::parse("alpine").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!(r.is_docker_hub());
        assert_eq!(r.to_string(), "index.docker.io/library/alpine");
    }

    #[test]
    fn explicit_registries() {
        assert_eq!(repo("localhost/foo"), ("localhost".into(), "foo".into()));
        assert_eq!(
            repo("localhost:5000/a/b"),
            ("localhost:5000".into(), "a/b".into())
        );
        assert_eq!(
            repo("127.0.0.1:5000/some/fake-image"),
            ("127.0.0.1:5000".into(), "some/fake-image".into())
        );
        assert_eq!(
            repo("gcr.io/project/img"),
            ("gcr.io".into(), "project/img".into())
        );
        assert_eq!(repo("[::1]:5000/img"), ("[::1]:5000".into(), "img".into()));
        let r = Repository::parse("ghcr.io/a/b").unwrap();
        assert_eq!(r.api_host(), "ghcr.io");
        assert!(!r.is_docker_hub());
        // Without a dot, colon or `localhost` the first component is a namespace.
        assert_eq!(
            repo("myhost/img"),
            ("index.docker.io".into(), "myhost/img".into())
        );
    }

    #[test]
    fn rejects_bad_repositories() {
        for bad in [
            "",
            "Alpine",
            "x.io/a",
            "alpine:3.18",
            "host:5000/img:tag",
            "a//b",
            "a@sha256:00",
            "host:99999/img",
            "-bad",
            "bad-",
            "host.io/",
        ] {
            assert!(
                Repository::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let err = Repository::parse("alpine:3.18").unwrap_err().to_string();
        assert!(err.contains("use `tag` in source"), "{err}");
    }

    #[test]
    fn references_with_tags_and_digests() {
        let r: Reference = "alpine".parse().unwrap();
        assert_eq!(r.to_string(), "index.docker.io/library/alpine:latest");
        let r: Reference = "localhost:5000/a/b:v1.2".parse().unwrap();
        assert_eq!(r.repository.registry(), "localhost:5000");
        assert_eq!(r.target, Target::Tag("v1.2".into()));
        let d = format!("sha256:{}", "0".repeat(64));
        let r: Reference = format!("localhost:5000/a/b:v1@{d}").parse().unwrap();
        assert_eq!(r.target, Target::Digest(d.parse().unwrap()));
        assert_eq!(r.to_string(), format!("localhost:5000/a/b@{d}"));
        assert!("alpine:bad/tag".parse::<Reference>().is_err());
        assert!("alpine@sha256:short".parse::<Reference>().is_err());
    }

    #[test]
    fn tag_grammar() {
        for ok in [
            "latest",
            "1.2.3",
            "v1",
            "42.1",
            "_x",
            "A-b_c.D",
            &"a".repeat(128),
        ] {
            validate_tag(ok).unwrap();
        }
        for bad in [
            "",
            ".x",
            "-x",
            "a/b",
            "a:b",
            "a b",
            "1.0.0+build",
            &"a".repeat(129),
        ] {
            assert!(validate_tag(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
