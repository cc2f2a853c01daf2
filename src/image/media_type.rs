//! Media types of manifests and indexes, and the `Accept` header that asks a
//! registry for any of them.

/// An OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// A gzip-compressed OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// A zstd-compressed OCI layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// An uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// A Docker schema 2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// A gzip-compressed Docker layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker's uncompressed layer type (rare, but some tools write it).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// A Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The OCI 1.1 empty descriptor's type: a config or layer standing for
/// nothing (its blob is `{}`).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The annotation naming a file stored as a layer (ORAS, OCI).
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// Every manifest type we understand. The full list must always be sent: the
/// CNCF registry answers 404 for an OCI manifest when the OCI type is missing,
/// and answers a Docker list with one child's manifest when only the Docker v2
/// type is present (so the digest would not be the tag's).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Whether a manifest media type is an index (multi-platform list).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether `text` is a media type, `type/subtype` with RFC 6838's
/// restricted-name characters (no parameters).
pub fn is_valid(text: &str) -> bool {
    let name = |part: &str| {
        !part.is_empty()
            && part.len() <= 127
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    matches!(text.split_once('/'), Some((kind, sub)) if name(kind) && name(sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_grammar() {
        for good in [
            OCI_EMPTY,
            "application/vnd.example.vm-image.v1+qcow2",
            "text/plain",
        ] {
            assert!(is_valid(good), "{good}");
        }
        for bad in [
            "",
            "application",
            "application/",
            "/x",
            "a/b/c",
            "a/b; charset=x",
            "a b/c",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn accept_lists_every_manifest_type() {
        for mt in [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
        ] {
            assert!(MANIFEST_ACCEPT.contains(mt), "{mt}");
        }
        assert!(is_index(OCI_INDEX) && is_index(DOCKER_MANIFEST_LIST));
        assert!(!is_index(OCI_MANIFEST));
    }
}
