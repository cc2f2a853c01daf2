//! `source` and step `params`: the configuration a pipeline writes, with the
//! original resource's field names and defaults, and validation that runs
//! before any network use.

use std::fmt;

use anyhow::{Context, bail};
use regex::Regex;
use serde::{Deserialize, Deserializer};

use crate::auth::Credentials;
use crate::reference::{self, Repository};
use crate::registry::trust::parse_ca_certs;

/// A secret string, never shown by `Debug`. It reads a JSON string or a
/// JSON number (YAML users write `password: 12345` unquoted, and it arrives
/// as a number); any other type is refused without echoing the value, which
/// serde's own "invalid type" errors would do.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;

        impl serde::de::Visitor<'_> for SecretVisitor {
            type Value = Secret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(
                    "a secret must be a string or a number, not a boolean",
                ))
            }
        }

        deserializer.deserialize_any(SecretVisitor)
    }
}

impl Secret {
    /// The secret itself (never log it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

/// The `source` of a resource.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The repository, e.g. `registry.example.org/team/app` (Docker Hub when no registry is named).
    #[serde(default)]
    pub repository: String,
    /// A string or any JSON scalar: `42.1` means the tag `"42.1"`.
    #[serde(default, deserialize_with = "scalar_as_string")]
    pub tag: String,
    /// Tag mode by regex: every tag matching it.
    #[serde(default)]
    pub tag_regex: String,
    /// With `tag_regex`: order versions by the config's `created` time.
    #[serde(default)]
    pub created_at_sort: bool,
    /// Semver mode: only tags with this suffix (`1.2.3-<variant>`).
    #[serde(default)]
    pub variant: String,
    /// Semver mode: a Masterminds constraint versions must meet.
    #[serde(default)]
    pub semver_constraint: String,
    /// Semver mode: report pre-releases too.
    #[serde(default)]
    pub pre_releases: bool,
    /// Semver mode: pre-release prefixes accepted besides alpha, beta and rc.
    #[serde(default)]
    pub pre_release_prefixes: Vec<String>,

    /// The registry user name.
    #[serde(default)]
    pub username: String,
    /// The registry password or token.
    #[serde(default)]
    pub password: Secret,
    /// Allow plain HTTP (and send credentials over it).
    #[serde(default)]
    pub insecure: bool,
    /// PEM certificates to trust besides the system's.
    #[serde(default)]
    pub ca_certs: Vec<String>,
    /// A Docker Hub pull-through mirror.
    #[serde(default)]
    pub registry_mirror: Option<RegistryMirror>,

    /// The platform to pick from an index.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Config labels whose key matches become step metadata.
    #[serde(default)]
    pub label_regex: String,
    /// Manifest annotations whose key matches become step metadata.
    #[serde(default)]
    pub annotation_regex: String,
    /// Log every request.
    #[serde(default)]
    pub debug: bool,

    /// AWS access key id (ECR).
    #[serde(default)]
    pub aws_access_key_id: String,
    /// AWS secret access key (ECR).
    #[serde(default)]
    pub aws_secret_access_key: Secret,
    /// AWS session token (ECR).
    #[serde(default)]
    pub aws_session_token: Secret,
    /// AWS region: set for ECR.
    #[serde(default)]
    pub aws_region: String,
    /// A role to assume (ECR).
    #[serde(default)]
    pub aws_role_arn: String,
    /// A chain of roles to assume, in order (ECR).
    #[serde(default)]
    pub aws_role_arns: Vec<String>,
    /// The account whose registry to use (ECR).
    #[serde(default)]
    pub aws_account_id: String,
    /// Ignored (the original needed it).
    #[serde(default)]
    pub aws_ecr_registry_id: String,

    /// Azure ACR with a managed identity (see `auth::acr`).
    #[serde(default)]
    pub azure_acr: bool,
    /// Azure: a user-assigned identity's client id.
    #[serde(default)]
    pub azure_client_id: String,
    /// Azure: the tenant.
    #[serde(default)]
    pub azure_tenant_id: String,
    /// Azure: the cloud.
    #[serde(default)]
    pub azure_environment: String,
    /// Azure: hosts besides ACR's own (`*.azurecr.io` and the sovereign
    /// clouds') that may receive the managed identity's tokens: a
    /// registry's custom domain.
    #[serde(default)]
    pub azure_acr_hosts: Vec<String>,

    /// Google Artifact Registry / GCR with the worker's service account
    /// from the GCE metadata server (see `auth::google`).
    #[serde(default)]
    pub google_workload_identity: bool,
    /// Google: a service account to impersonate with the worker's.
    #[serde(default)]
    pub google_impersonate_service_account: String,
    /// Google: hosts besides Google's registries (`*-docker.pkg.dev`,
    /// `gcr.io`, `*.gcr.io`) that may receive the service account's token.
    #[serde(default)]
    pub google_registry_hosts: Vec<String>,

    /// Notary v1 signing; accepted so the error can say why it is refused.
    #[serde(default)]
    pub content_trust: Option<serde_json::Value>,

    /// A cosign public key (PEM, ECDSA P-256 or Ed25519): `check` reports
    /// only digests signed with it, `in` refuses others.
    #[serde(default)]
    pub cosign_public_key: String,
    /// Keyless verification: the signer's identity (the Fulcio
    /// certificate's email or URI), exactly.
    #[serde(default)]
    pub cosign_certificate_identity: String,
    /// Keyless verification: a pattern the whole identity matches.
    #[serde(default)]
    pub cosign_certificate_identity_regexp: String,
    /// Keyless verification: the OIDC issuer of the signer's token,
    /// exactly.
    #[serde(default)]
    pub cosign_certificate_oidc_issuer: String,
    /// Keyless verification: a pattern the whole issuer matches.
    #[serde(default)]
    pub cosign_certificate_oidc_issuer_regexp: String,
    /// Keyless verification: a Sigstore `trusted_root.json` (its content,
    /// as text or as an object) in place of the built-in public-good one.
    #[serde(default)]
    pub cosign_trusted_root: Option<serde_json::Value>,
}

/// `source.registry_mirror`: a pull-through mirror for Docker Hub.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryMirror {
    /// The mirror's host (and port).
    #[serde(default)]
    pub host: String,
    /// The mirror's user name.
    #[serde(default)]
    pub username: String,
    /// The mirror's password.
    #[serde(default)]
    pub password: Secret,
}

/// A platform to pick from an image index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// The CPU architecture (`arm64`, or `arm64/v8` with its variant).
    #[serde(default)]
    pub architecture: String,
    /// The operating system.
    #[serde(default)]
    pub os: String,
    /// The CPU variant.
    #[serde(default)]
    pub variant: String,
}

impl Platform {
    /// The platform to pick from an index; empty fields mean this binary's.
    pub fn to_image_platform(&self) -> crate::image::Platform {
        crate::image::Platform::new(&self.os, &self.architecture, &self.variant)
    }
}

/// `params` of a `get` step.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// `rootfs` (default), `oci`, `oci-layout` or `artifact`.
    #[serde(default)]
    pub format: String,
    /// Write only the version files.
    #[serde(default)]
    pub skip_download: bool,
    /// Replaces `source.platform`.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Several platforms, `os/architecture[/variant]` each, for
    /// `oci-layout` and `oci`.
    #[serde(default)]
    pub platforms: Vec<String>,
}

/// `params` of a `put` step.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutParams {
    /// A glob naming the image to push.
    #[serde(default)]
    pub image: String,
    /// A version to tag the image with (normalised).
    #[serde(default)]
    pub version: String,
    /// Also move `latest`, `<major>`, `<major>.<minor>`.
    #[serde(default)]
    pub bump_aliases: bool,
    /// A file of more tags.
    #[serde(default)]
    pub additional_tags: String,
    /// A prefix for the tags of `additional_tags`.
    #[serde(default)]
    pub tag_prefix: String,
    /// Pack files into a single-layer image instead of pushing `image`.
    #[serde(default)]
    pub package: Option<PackageParams>,
    /// Push files as an OCI artifact instead of pushing `image`.
    #[serde(default)]
    pub artifact: Option<ArtifactParams>,
    /// Delete tags (or the manifests under them) instead of pushing.
    #[serde(default)]
    pub delete: Option<DeleteParams>,
    /// Copy (promote) an image by digest from another repository.
    #[serde(default)]
    pub copy: Option<CopyParams>,
    /// `keep` (default), `gzip` or `zstd`: the layers' compression.
    #[serde(default)]
    pub compression: String,
    /// Sign every manifest pushed with a cosign key.
    #[serde(default)]
    pub sign: Option<SignParams>,
    /// Annotations for the pushed top manifest (build provenance); values
    /// may name Concourse's build variables.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// `params.sign`: cosign signatures of what a put pushed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignParams {
    /// The private key: a path under the put's directory (a glob), or the
    /// PEM itself (`((cosign.key))` from a credential manager).
    #[serde(default)]
    pub key: Secret,
    /// The key's password (cosign's encrypted keys).
    #[serde(default)]
    pub password: Secret,
    /// An environment variable holding the password (local use);
    /// `COSIGN_PASSWORD` is read when neither is set.
    #[serde(default)]
    pub password_env: String,
    /// `tag` (default): cosign's `sha256-<hex>.sig` tag; `bundle`: a
    /// sigstore bundle pushed as an OCI 1.1 referrer.
    #[serde(default)]
    pub format: String,
}

/// `params.copy`: an image (or a whole index) copied by digest from
/// another repository, of this registry or another.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyParams {
    /// `REGISTRY/REPOSITORY@sha256:…`.
    #[serde(default)]
    pub from: String,
    /// A glob naming a `get` output directory: its `repository` and
    /// `digest` files say what to copy.
    #[serde(default)]
    pub from_dir: String,
    /// Credentials and TLS settings for the origin (the fields of a
    /// `source`, without `repository`). When left out, an origin on this
    /// registry is read with this resource's credentials.
    #[serde(default)]
    pub source: Option<Source>,
    /// Also copy the manifests that refer to it (signatures, attestations).
    #[serde(default)]
    pub referrers: bool,
}

/// `params.artifact`: files pushed as an OCI 1.1 artifact, one layer each.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactParams {
    /// Globs (under the put's directory), each matching one or more
    /// regular files; a file's layer is titled with its base name. None:
    /// an artifact of metadata and annotations only.
    #[serde(default)]
    pub files: Vec<String>,
    /// The manifest's `artifactType` (a media type).
    #[serde(default)]
    pub artifact_type: String,
    /// A JSON file stored as the manifest's config.
    #[serde(default)]
    pub metadata: String,
    /// The manifest's annotations.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The files' layer media type; `application/octet-stream` when empty.
    #[serde(default)]
    pub media_type: String,
}

/// `params.delete`: tags to delete.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// The tags to delete.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A file (under the put's directory) of tags separated by whitespace.
    #[serde(default)]
    pub tags_file: String,
    /// Where the registry cannot delete a tag alone, delete the manifest it
    /// points to, which removes every tag on it.
    #[serde(default)]
    pub manifests: bool,
}

/// `params.package`: files packed into a reproducible single-layer image.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageParams {
    /// A glob (under the put's directory) naming one directory or archive
    /// (`.zip`, `.tar`, `.tar.gz`, `.tgz`, `.tar.zst`).
    pub path: String,
    /// Where the files go in the image (`/` when empty).
    #[serde(default)]
    pub prefix: String,
    /// A glob naming an OCI layout or a docker-save tarball: the image the
    /// layer is added on top of (its platform and config kept).
    #[serde(default)]
    pub base: String,
    /// The image's platform; `linux/amd64` when not given (never this
    /// machine's: the same files must give the same digest anywhere).
    #[serde(default)]
    pub platform: Option<Platform>,
    /// The image's `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// The image's `Cmd`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Environment variables, written sorted by name.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// The image's working directory.
    #[serde(default)]
    pub workdir: String,
    /// The user the image runs as.
    #[serde(default)]
    pub user: String,
    /// The image's labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// How `check` finds versions.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckMode {
    /// `tag` is set: the digest of that one tag.
    Tag,
    /// `tag_regex` is set: every matching tag.
    Regex,
    /// Neither: semantic-version tags.
    Semver,
}

impl Source {
    /// The connection part of this source: every field that says how to
    /// reach and authenticate to its registry (credentials of every kind,
    /// TLS, the mirror, debug), and nothing of what to look for. A copy
    /// within one registry connects to its origin with it.
    ///
    /// Every field is named below, so a field added to `Source` fails to
    /// compile until it is sorted into one part or the other.
    pub fn connection(&self) -> Source {
        let Source {
            // What to look for: not part of a connection.
            repository: _,
            tag: _,
            tag_regex: _,
            created_at_sort: _,
            variant: _,
            semver_constraint: _,
            pre_releases: _,
            pre_release_prefixes: _,
            platform: _,
            label_regex: _,
            annotation_regex: _,
            content_trust: _,
            cosign_public_key: _,
            cosign_certificate_identity: _,
            cosign_certificate_identity_regexp: _,
            cosign_certificate_oidc_issuer: _,
            cosign_certificate_oidc_issuer_regexp: _,
            cosign_trusted_root: _,
            // How to connect.
            username,
            password,
            insecure,
            ca_certs,
            registry_mirror,
            debug,
            aws_access_key_id,
            aws_secret_access_key,
            aws_session_token,
            aws_region,
            aws_role_arn,
            aws_role_arns,
            aws_account_id,
            aws_ecr_registry_id,
            azure_acr,
            azure_client_id,
            azure_tenant_id,
            azure_environment,
            azure_acr_hosts,
            google_workload_identity,
            google_impersonate_service_account,
            google_registry_hosts,
        } = self.clone();
        Source {
            username,
            password,
            insecure,
            ca_certs,
            registry_mirror,
            debug,
            aws_access_key_id,
            aws_secret_access_key,
            aws_session_token,
            aws_region,
            aws_role_arn,
            aws_role_arns,
            aws_account_id,
            aws_ecr_registry_id,
            azure_acr,
            azure_client_id,
            azure_tenant_id,
            azure_environment,
            azure_acr_hosts,
            google_workload_identity,
            google_impersonate_service_account,
            google_registry_hosts,
            ..Source::default()
        }
    }

    /// Validates everything that can be validated without the network, so a
    /// bad configuration fails fast with a clear message.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.repository.is_empty() {
            bail!("source.repository is required");
        }
        self.repository().context("source.repository")?;
        if !self.tag.is_empty() {
            reference::validate_tag(&self.tag).context("source.tag")?;
        }
        self.tag_regex()?;
        if !self.semver_constraint.is_empty() {
            self.semver_constraint
                .parse::<crate::semver::Constraints>()
                .context("source.semver_constraint: parse semver constraint")?;
        }
        self.label_regex()?;
        self.annotation_regex()?;
        parse_ca_certs(&self.ca_certs).context("source.ca_certs")?;
        self.signature_policy()?;
        if !self.aws_role_arn.is_empty() && !self.aws_role_arns.is_empty() {
            bail!("source.aws_role_arn cannot be set at the same time as source.aws_role_arns");
        }
        self.validate_google()?;
        self.refuse_unsupported()
    }

    /// The Google fields: one login at a time, an account that fits a URL.
    fn validate_google(&self) -> anyhow::Result<()> {
        let google = self.google_workload_identity;
        if !google
            && (!self.google_impersonate_service_account.is_empty()
                || !self.google_registry_hosts.is_empty())
        {
            bail!(
                "source.google_impersonate_service_account and source.google_registry_hosts \
                 need source.google_workload_identity: true"
            );
        }
        if google && (!self.username.is_empty() || self.azure_acr || !self.aws_region.is_empty()) {
            bail!(
                "source.google_workload_identity cannot be combined with username, azure_acr or \
                 aws_region: one login at a time"
            );
        }
        let account = &self.google_impersonate_service_account;
        if !account.is_empty() && !crate::auth::google::is_service_account(account) {
            bail!(
                "source.google_impersonate_service_account {account:?}: not a service account \
                 address (name@project.iam.gserviceaccount.com)"
            );
        }
        Ok(())
    }

    /// Fields of the original resource this version does not implement yet
    /// fail loudly rather than being ignored.
    fn refuse_unsupported(&self) -> anyhow::Result<()> {
        if self.content_trust.is_some() {
            bail!(
                "source.content_trust is refused: Notary v1 is retired (registries dropped it, and \
                 Docker Content Trust ends on 2026-12-08); sign and verify with cosign \
                 instead (params.sign on put, source.cosign_public_key on check and get)"
            );
        }
        Ok(())
    }

    /// What makes a signature count (`None` when nothing is asked): the
    /// key of `cosign_public_key`, or the keyless identity and issuer of
    /// `cosign_certificate_*` with the trusted root.
    pub fn signature_policy(&self) -> anyhow::Result<Option<crate::sign::SignaturePolicy>> {
        use crate::sign::{KeylessPolicy, Matcher, SignaturePolicy, TrustedRoot};
        let keyless = [
            &self.cosign_certificate_identity,
            &self.cosign_certificate_identity_regexp,
            &self.cosign_certificate_oidc_issuer,
            &self.cosign_certificate_oidc_issuer_regexp,
        ]
        .iter()
        .any(|field| !field.is_empty());
        let has_key = !self.cosign_public_key.trim().is_empty();
        if has_key && keyless {
            bail!(
                "source.cosign_public_key and keyless verification \
                 (source.cosign_certificate_*) are exclusive: a signature is either made with a \
                 key or keyless"
            );
        }
        if has_key {
            return crate::sign::PublicKey::from_pem(&self.cosign_public_key)
                .map(|key| Some(SignaturePolicy::Key(key)))
                .context("source.cosign_public_key");
        }
        if !keyless {
            if self.cosign_trusted_root.is_some() {
                bail!(
                    "source.cosign_trusted_root is set without source.cosign_certificate_identity \
                     and source.cosign_certificate_oidc_issuer (the root says whom to trust, \
                     they say who must have signed)"
                );
            }
            return Ok(None);
        }
        let identity = Matcher::new(
            &self.cosign_certificate_identity,
            &self.cosign_certificate_identity_regexp,
            (
                "source.cosign_certificate_identity",
                "source.cosign_certificate_identity_regexp",
            ),
        )?;
        let issuer = Matcher::new(
            &self.cosign_certificate_oidc_issuer,
            &self.cosign_certificate_oidc_issuer_regexp,
            (
                "source.cosign_certificate_oidc_issuer",
                "source.cosign_certificate_oidc_issuer_regexp",
            ),
        )?;
        let root = match &self.cosign_trusted_root {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) => {
                Some(TrustedRoot::parse(text.as_bytes()).context("source.cosign_trusted_root")?)
            }
            Some(object @ serde_json::Value::Object(_)) => Some(
                TrustedRoot::parse(object.to_string().as_bytes())
                    .context("source.cosign_trusted_root")?,
            ),
            Some(_) => {
                bail!("source.cosign_trusted_root: a trusted_root.json's content (text or object)")
            }
        };
        let policy = KeylessPolicy::new(identity, issuer, root)?;
        Ok(Some(SignaturePolicy::Keyless(Box::new(policy))))
    }

    /// The repository, parsed.
    pub fn repository(&self) -> anyhow::Result<Repository> {
        Repository::parse(&self.repository)
    }

    /// `tag_regex`, compiled (`None` when unset).
    pub fn tag_regex(&self) -> anyhow::Result<Option<Regex>> {
        compile_regex("source.tag_regex", &self.tag_regex)
    }

    /// `label_regex`, compiled (`None` when unset).
    pub fn label_regex(&self) -> anyhow::Result<Option<Regex>> {
        compile_regex("source.label_regex", &self.label_regex)
    }

    /// `annotation_regex`, compiled (`None` when unset).
    pub fn annotation_regex(&self) -> anyhow::Result<Option<Regex>> {
        compile_regex("source.annotation_regex", &self.annotation_regex)
    }

    /// The username and password, when both are set.
    pub fn credentials(&self) -> Option<Credentials> {
        Credentials::from_parts(&self.username, self.password.expose())
    }

    /// Which of check's modes the source asks for.
    pub fn check_mode(&self) -> CheckMode {
        if !self.tag.is_empty() {
            CheckMode::Tag
        } else if !self.tag_regex.is_empty() {
            CheckMode::Regex
        } else {
            CheckMode::Semver
        }
    }
}

fn compile_regex(field: &str, pattern: &str) -> anyhow::Result<Option<Regex>> {
    if pattern.is_empty() {
        return Ok(None);
    }
    Regex::new(pattern)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{field}: invalid regex pattern: {e}"))
}

/// Accepts a string, `null` (empty) or any other JSON scalar as its literal
/// text, so `tag: 42.1` in a pipeline means the tag `42.1`, not `42.10000`.
fn scalar_as_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).map_err(D::Error::custom),
        Some(b'{' | b'[') => Err(D::Error::custom("expected a string or a number")),
        _ if text == "null" => Ok(String::new()),
        _ => Ok(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concourse::{CheckRequest, parse_request};

    fn source(json: &str) -> anyhow::Result<Source> {
        let r: CheckRequest = parse_request(&format!(r#"{{"source":{json}}}"#))?;
        Ok(r.source)
    }

    #[test]
    fn tag_accepts_json_scalars_as_text() {
        for (json, tag) in [
            ("42.1", "42.1"),
            ("42", "42"),
            ("\"foo\"", "foo"),
            ("1e3", "1e3"),
            ("true", "true"),
            ("null", ""),
            ("\"0\"", "0"),
        ] {
            let s = source(&format!(r#"{{"repository":"a/b","tag":{json}}}"#)).unwrap();
            assert_eq!(s.tag, tag, "{json}");
        }
        assert!(source(r#"{"repository":"a/b","tag":[1]}"#).is_err());
    }

    #[test]
    fn validation_before_network() {
        let err = |json: &str| source(json).unwrap().validate().unwrap_err().to_string();
        assert_eq!(err("{}"), "source.repository is required");
        assert!(err(r#"{"repository":"Bad Name"}"#).starts_with("source.repository"));
        assert!(err(r#"{"repository":"a/b","tag":"bad/tag"}"#).starts_with("source.tag"));
        let e = err(r#"{"repository":"a/b","tag_regex":"(unclosed"}"#);
        assert!(
            e.starts_with("source.tag_regex: invalid regex pattern"),
            "{e}"
        );
        assert!(
            err(r#"{"repository":"a/b","ca_certs":["not a pem"]}"#).starts_with("source.ca_certs")
        );
        assert!(
            err(r#"{"repository":"a/b","aws_role_arn":"x","aws_role_arns":["y"]}"#)
                .contains("cannot be set at the same time")
        );
        assert!(err(r#"{"repository":"a/b","content_trust":{}}"#).contains("Notary v1 is retired"));
        source(r#"{"repository":"a/b","tag":"latest","tag_regex":"^v"}"#)
            .unwrap()
            .validate()
            .unwrap();
    }

    #[test]
    fn check_mode_selection() {
        assert_eq!(
            source(r#"{"repository":"a/b","tag":"x","tag_regex":"y"}"#)
                .unwrap()
                .check_mode(),
            CheckMode::Tag
        );
        assert_eq!(
            source(r#"{"repository":"a/b","tag_regex":"y"}"#)
                .unwrap()
                .check_mode(),
            CheckMode::Regex
        );
        assert_eq!(
            source(r#"{"repository":"a/b"}"#).unwrap().check_mode(),
            CheckMode::Semver
        );
    }

    #[test]
    fn secrets_read_numbers_and_never_echo_a_wrong_type() {
        let s = source(r#"{"repository":"a/b","username":"u","password":918273645}"#).unwrap();
        assert_eq!(s.password.expose(), "918273645");
        let s = source(r#"{"repository":"a/b","aws_secret_access_key":-12.5}"#).unwrap();
        assert_eq!(s.aws_secret_access_key.expose(), "-12.5");
        for wrong in [r#"["arr-canary"]"#, r#"{"k":"obj-canary"}"#, "true"] {
            for field in ["password", "aws_secret_access_key", "aws_session_token"] {
                let err = format!(
                    "{:#}",
                    source(&format!(r#"{{"repository":"a/b","{field}":{wrong}}}"#)).unwrap_err()
                );
                assert!(err.contains(field), "{err}");
                assert!(!err.contains("canary") && !err.contains("true"), "{err}");
            }
            let err = format!(
                "{:#}",
                source(&format!(
                    r#"{{"repository":"a/b","registry_mirror":{{"host":"m","password":{wrong}}}}}"#
                ))
                .unwrap_err()
            );
            assert!(err.contains("password") && !err.contains("canary"), "{err}");
        }
    }

    #[test]
    fn secrets_are_not_printed_by_debug() {
        let s = source(
            r#"{"repository":"a/b","username":"u","password":"pw-canary","aws_secret_access_key":"aws-canary",
                "aws_session_token":"sess-canary","registry_mirror":{"host":"m","password":"mirror-canary"}}"#,
        )
        .unwrap();
        let shown = format!("{s:?}");
        for canary in ["pw-canary", "aws-canary", "sess-canary", "mirror-canary"] {
            assert!(!shown.contains(canary), "{canary} leaked: {shown}");
        }
        assert_eq!(s.credentials().unwrap().password, "pw-canary");
    }
}
