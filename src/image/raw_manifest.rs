//! A manifest or index as bytes: the one raw manifest type of every step,
//! whose digest is computed once, and how its media type is told.

use anyhow::Context;
use bytes::Bytes;

use super::{Digest, media_type};

/// A manifest or index exactly as stored or served: its bytes are what is
/// pushed and written, so digests never change.
#[derive(Clone, Debug)]
pub struct RawManifest {
    /// The exact bytes.
    pub bytes: Bytes,
    /// The media type (as served or declared, else from the document).
    pub media_type: String,
    /// The sha256 of the bytes.
    pub digest: Digest,
}

impl RawManifest {
    /// `bytes` with `media_type`; the digest is computed here, once.
    pub fn new(bytes: impl Into<Bytes>, media_type: impl Into<String>) -> Self {
        let bytes = bytes.into();
        RawManifest {
            digest: Digest::sha256_of(&bytes),
            bytes,
            media_type: media_type.into(),
        }
    }

    /// Whether these are the bytes `wanted` names (another algorithm than
    /// the sha256 already computed is hashed again).
    pub fn matches(&self, wanted: &Digest) -> bool {
        *wanted == self.digest || wanted.matches(&self.bytes)
    }

    /// Whether this is an index (OCI index or Docker manifest list).
    pub fn is_index(&self) -> bool {
        media_type::is_index(&self.media_type)
    }

    /// The manifest as `oci-spec`'s [`ImageManifest`](oci_spec::image::ImageManifest),
    /// parsed from the exact bytes ([`RawManifest::bytes`] stays the source
    /// of truth: never re-serialise it where its digest matters).
    ///
    /// oci-spec follows the image spec strictly: a descriptor without
    /// `mediaType`, a missing `layers` or `schemaVersion`, or a digest with
    /// upper-case hex is an error here, where the resource's own steps read
    /// such documents leniently, as the original resource did.
    ///
    /// ```no_run
    /// # async fn example(
    /// #     client: &registry_image::registry::RegistryClient,
    /// #     repo: &registry_image::reference::Repository,
    /// # ) -> anyhow::Result<()> {
    /// use registry_image::reference::Target;
    ///
    /// let served = client.get_manifest(repo, &Target::Tag("latest".into())).await?;
    /// if let Some(manifest) = served {
    ///     for layer in manifest.oci_image_manifest()?.layers() {
    ///         println!("{} {} bytes", layer.digest(), layer.size());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn oci_image_manifest(&self) -> anyhow::Result<oci_spec::image::ImageManifest> {
        oci_spec::image::ImageManifest::from_reader(self.bytes.as_ref())
            .with_context(|| format!("{} as an OCI image manifest", self.digest))
    }

    /// The index as `oci-spec`'s [`ImageIndex`](oci_spec::image::ImageIndex)
    /// (a Docker manifest list too); as strict as
    /// [`RawManifest::oci_image_manifest`].
    pub fn oci_image_index(&self) -> anyhow::Result<oci_spec::image::ImageIndex> {
        oci_spec::image::ImageIndex::from_reader(self.bytes.as_ref())
            .with_context(|| format!("{} as an OCI image index", self.digest))
    }
}

/// The media type from `Content-Type` when it names a manifest type, else
/// from the body's `mediaType` field (optional in OCI; skopeo omits it), else
/// guessed from its shape.
pub fn detect_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    if let Some(ct) = content_type
        && ct.starts_with("application/vnd.")
    {
        return ct.to_owned();
    }
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Shape>(body) {
        Ok(Shape {
            media_type: Some(mt),
            ..
        }) => mt,
        Ok(Shape {
            manifests: Some(_), ..
        }) => media_type::OCI_INDEX.to_owned(),
        _ => media_type::OCI_MANIFEST.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::parse_index;

    fn served(bytes: &[u8], media_type: &str) -> RawManifest {
        RawManifest::new(bytes.to_vec(), media_type)
    }

    #[test]
    fn offers_oci_spec_types_and_says_where_they_are_stricter() {
        let digest = Digest::sha256_of(b"x");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","size":7,"digest":"{digest}","platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#,
            media_type::DOCKER_MANIFEST_LIST,
            media_type::DOCKER_MANIFEST
        );
        let typed = served(index.as_bytes(), media_type::DOCKER_MANIFEST_LIST)
            .oci_image_index()
            .expect("a Docker manifest list");
        let child = &typed.manifests()[0];
        assert_eq!(Digest::try_from(child.digest()).expect("ours"), digest);
        assert_eq!(
            child
                .platform()
                .as_ref()
                .and_then(|p| p.variant().clone())
                .as_deref(),
            Some("v7")
        );
        // An entry without mediaType: the steps read it, oci-spec refuses it.
        let lenient =
            format!(r#"{{"schemaVersion":2,"manifests":[{{"size":7,"digest":"{digest}"}}]}}"#);
        assert!(parse_index(lenient.as_bytes()).is_ok());
        let err = served(lenient.as_bytes(), media_type::OCI_INDEX)
            .oci_image_index()
            .expect_err("strict");
        assert!(format!("{err:#}").contains("mediaType"), "{err:#}");
    }

    #[test]
    fn media_type_detection() {
        assert_eq!(
            detect_media_type(Some(media_type::DOCKER_MANIFEST), b"{}"),
            media_type::DOCKER_MANIFEST
        );
        assert_eq!(
            detect_media_type(
                Some("application/json"),
                br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#
            ),
            media_type::OCI_INDEX
        );
        assert_eq!(
            detect_media_type(None, br#"{"manifests":[]}"#),
            media_type::OCI_INDEX
        );
        assert_eq!(
            detect_media_type(Some("text/plain"), br#"{"layers":[]}"#),
            media_type::OCI_MANIFEST
        );
    }
}
