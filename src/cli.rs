//! The crane-style command line: `ls`, `digest`, `manifest`, `config`,
//! `blob`, `cp`, `tag`, `rm`, `catalog`, and `verify` (cosign signatures), for people debugging a pipeline
//! against a registry. Each verb is a thin call into the same parts the
//! steps use (the registry client, the promotion engine, the delete rules),
//! with the same credential chain: `--username` and `--password-stdin`,
//! else the docker config.
//!
//! Output: raw bytes for manifests, configs and blobs (so their digests
//! can be checked), one name per line for listings, the digest for what
//! changes a registry.

use std::io::{Read, Write};

use anyhow::{Context, bail};

use crate::auth::Access;
use crate::endpoint::Endpoint;
use crate::image::Platform;
use crate::image::manifest::parse_manifest;
use crate::image::tree::RawManifest;
use crate::reference::{Reference, Repository, Target};
use crate::registry::blob_reader;
use crate::source::{Secret, Source};

/// Bytes the `blob` verb's download may be ahead of its output.
const BLOB_BYTES_AHEAD: usize = 4 << 20;

/// How to reach a registry: credentials and TLS.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    pub username: String,
    pub password: Secret,
    pub insecure: bool,
    /// PEM text of extra CA certificates.
    pub ca_certs: Vec<String>,
    pub debug: bool,
}

impl Connection {
    /// A `source` for `repository` with these settings.
    pub fn source(&self, repository: &str) -> anyhow::Result<Source> {
        let source = Source {
            repository: repository.to_owned(),
            username: self.username.clone(),
            password: self.password.clone(),
            insecure: self.insecure,
            ca_certs: self.ca_certs.clone(),
            debug: self.debug,
            ..Source::default()
        };
        source.validate()?;
        Ok(source)
    }

    async fn connect(&self, repository: &str, access: Access) -> anyhow::Result<Endpoint> {
        Endpoint::connect(&self.source(repository)?, access).await
    }
}

/// `REPOSITORY[:TAG|@DIGEST]`, split (see [`Reference::split`]): the
/// repository, checked, and what it names.
pub fn parse_reference(text: &str) -> anyhow::Result<(String, Option<Target>)> {
    let (repository, target) =
        Reference::split(text).with_context(|| format!("{text:?} is not a reference"))?;
    Repository::parse(repository).with_context(|| format!("{text:?} is not a reference"))?;
    Ok((repository.to_owned(), target))
}

/// A reference that must name a tag or digest (`:latest` when it names
/// neither, as docker does).
fn target_of(text: &str) -> anyhow::Result<(String, Target)> {
    let (repository, target) = parse_reference(text)?;
    Ok((repository, target.unwrap_or(Target::Tag("latest".into()))))
}

/// `os/architecture[/variant]`.
pub fn parse_platform(text: &str) -> anyhow::Result<Platform> {
    Platform::parse(text).with_context(|| {
        format!("--platform {text:?}: expected os/architecture[/variant], e.g. linux/arm64")
    })
}

/// `ls REPOSITORY`: every tag, one a line.
pub async fn ls(connection: &Connection, repository: &str) -> anyhow::Result<()> {
    let endpoint = connection.connect(repository, Access::Pull).await?;
    let tags = endpoint.client.list_tags(&endpoint.repository).await?;
    print_lines(&tags)
}

/// `catalog REGISTRY`: every repository the registry lists.
pub async fn catalog(connection: &Connection, registry: &str) -> anyhow::Result<()> {
    // The client is per registry; a repository name is needed only to
    // build it (and to look up the docker config's credentials).
    let endpoint = connection
        .connect(&format!("{registry}/catalog"), Access::Pull)
        .await?;
    let repositories = endpoint.client.catalog().await?;
    print_lines(&repositories)
}

/// `digest REFERENCE`: the digest the registry serves for it.
pub async fn digest(connection: &Connection, reference: &str) -> anyhow::Result<()> {
    let (_, digest) = resolve(connection, reference).await?;
    print_lines(&[digest.to_string()])
}

/// The repository's endpoint and the digest `reference` resolves to.
async fn resolve(
    connection: &Connection,
    reference: &str,
) -> anyhow::Result<(Endpoint, crate::image::Digest)> {
    let (repository, target) = target_of(reference)?;
    let endpoint = connection.connect(&repository, Access::Pull).await?;
    let digest = endpoint
        .client
        .resolve_digest(&endpoint.repository, &target)
        .await?
        .with_context(|| format!("{reference} not found"))?;
    Ok((endpoint, digest))
}

/// `verify`'s keyless flags, named as cosign's.
#[derive(Debug, Default, clap::Args)]
pub struct KeylessArgs {
    /// Keyless: the signer's identity (the certificate's email or URI), exactly.
    #[arg(long)]
    pub certificate_identity: Option<String>,
    /// Keyless: a pattern the whole identity matches.
    #[arg(long)]
    pub certificate_identity_regexp: Option<String>,
    /// Keyless: the OIDC issuer of the signer's token, exactly.
    #[arg(long)]
    pub certificate_oidc_issuer: Option<String>,
    /// Keyless: a pattern the whole issuer matches.
    #[arg(long)]
    pub certificate_oidc_issuer_regexp: Option<String>,
    /// Keyless: a Sigstore trusted_root.json in place of the built-in public-good one.
    #[arg(long)]
    pub trusted_root: Option<std::path::PathBuf>,
}

impl KeylessArgs {
    fn is_empty(&self) -> bool {
        self.certificate_identity.is_none()
            && self.certificate_identity_regexp.is_none()
            && self.certificate_oidc_issuer.is_none()
            && self.certificate_oidc_issuer_regexp.is_none()
            && self.trusted_root.is_none()
    }

    fn policy(&self) -> anyhow::Result<crate::sign::SignaturePolicy> {
        use crate::sign::{KeylessPolicy, Matcher, SignaturePolicy, TrustedRoot};
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let identity = Matcher::new(
            &text(&self.certificate_identity),
            &text(&self.certificate_identity_regexp),
            ("--certificate-identity", "--certificate-identity-regexp"),
        )?;
        let issuer = Matcher::new(
            &text(&self.certificate_oidc_issuer),
            &text(&self.certificate_oidc_issuer_regexp),
            (
                "--certificate-oidc-issuer",
                "--certificate-oidc-issuer-regexp",
            ),
        )?;
        let root = match &self.trusted_root {
            None => None,
            Some(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("--trusted-root: reading {}", path.display()))?;
                Some(
                    TrustedRoot::parse(&bytes)
                        .with_context(|| format!("--trusted-root {}", path.display()))?,
                )
            }
        };
        let policy = KeylessPolicy::new(identity, issuer, root)?;
        Ok(SignaturePolicy::Keyless(Box::new(policy)))
    }
}

/// `verify REFERENCE --key FILE` or keyless flags: the digest and where
/// its signature is, or an error saying what was found (the same check as
/// `check` and `in` with `source.cosign_public_key` or
/// `source.cosign_certificate_*`).
pub async fn verify(
    connection: &Connection,
    reference: &str,
    key_file: Option<&std::path::Path>,
    keyless: &KeylessArgs,
) -> anyhow::Result<()> {
    let key = match (key_file, keyless.is_empty()) {
        (Some(_), false) => bail!("--key and the keyless flags (--certificate-*) are exclusive"),
        (None, true) => bail!(
            "say whose signature counts: --key FILE, or --certificate-identity[-regexp] with \
             --certificate-oidc-issuer[-regexp]"
        ),
        (None, false) => keyless.policy()?,
        (Some(key_file), true) => {
            let pem = std::fs::read_to_string(key_file)
                .with_context(|| format!("--key: reading {}", key_file.display()))?;
            crate::sign::PublicKey::from_pem(&pem)
                .map(crate::sign::SignaturePolicy::Key)
                .with_context(|| format!("--key {}", key_file.display()))?
        }
    };
    let (endpoint, digest) = resolve(connection, reference).await?;
    let found = crate::sign::verify_digest(&endpoint.client, &endpoint.repository, &digest, &key)
        .await?
        .require()?;
    print_lines(&[format!("{digest} signed: {found}")])
}

/// `manifest REFERENCE [--platform]`: the manifest or index as served, or
/// with a platform the image of that platform.
pub async fn manifest(
    connection: &Connection,
    reference: &str,
    platform: Option<&Platform>,
) -> anyhow::Result<()> {
    let (endpoint, top) = fetch_manifest(connection, reference, Access::Pull).await?;
    let manifest = match platform {
        Some(platform) => {
            endpoint
                .client
                .image_for_platform(&endpoint.repository, top, platform)
                .await?
        }
        None => top,
    };
    write_stdout(&manifest.bytes)
}

/// `config REFERENCE [--platform]`: the image's config (of `platform`, or
/// this machine's, for an index).
pub async fn config(
    connection: &Connection,
    reference: &str,
    platform: Option<&Platform>,
) -> anyhow::Result<()> {
    let (endpoint, top) = fetch_manifest(connection, reference, Access::Pull).await?;
    let platform = platform.cloned().unwrap_or_else(Platform::host);
    let image = endpoint
        .client
        .image_for_platform(&endpoint.repository, top, &platform)
        .await?;
    let config = endpoint
        .client
        .get_small_blob(
            &endpoint.repository,
            &parse_manifest(&image.bytes)?.config.digest()?,
        )
        .await?;
    write_stdout(&config)
}

/// `blob REPOSITORY@DIGEST [-o FILE]`: the blob's bytes, verified while
/// they stream. On stdout the last buffer is held back until the digest
/// checks out, so a blob that fails verification is never delivered whole
/// (and the command fails); with `-o` the bytes go to a temporary file
/// beside `FILE`, renamed to `FILE` only once verified.
pub async fn blob(
    connection: &Connection,
    reference: &str,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (repository, target) = parse_reference(reference)?;
    let Some(Target::Digest(digest)) = target else {
        bail!("blob needs REPOSITORY@DIGEST, not {reference:?}");
    };
    let endpoint = connection.connect(&repository, Access::Pull).await?;
    let size = endpoint
        .client
        .blob_size(&endpoint.repository, &digest)
        .await?
        .with_context(|| format!("{reference} not found"))?;
    let mut reader = blob_reader::open(
        endpoint.client.clone(),
        endpoint.repository.clone(),
        digest,
        size,
        BLOB_BYTES_AHEAD,
        None,
    );
    let output = output.map(std::path::Path::to_path_buf);
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut sink = BlobSink::open(output.as_deref())?;
        // The newest bytes (`held[..kept]`), written only when more follow
        // or the digest checked out (the reader's end of data); the two
        // buffers trade places instead of copying.
        let (mut held, mut buffer) = (vec![0u8; 256 << 10], vec![0u8; 256 << 10]);
        let mut kept = 0;
        loop {
            let n = reader.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            sink.write(&held[..kept])?;
            std::mem::swap(&mut held, &mut buffer);
            kept = n;
        }
        sink.write(&held[..kept])?;
        sink.finish()
    })
    .await
    .context("the writing thread failed")?
}

/// Where `blob` writes: stdout, or a temporary file renamed into place.
enum BlobSink {
    Stdout(std::io::StdoutLock<'static>),
    File {
        temporary: tempfile::NamedTempFile,
        path: std::path::PathBuf,
    },
}

impl BlobSink {
    fn open(output: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let Some(path) = output else {
            return Ok(BlobSink::Stdout(std::io::stdout().lock()));
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => std::path::Path::new("."),
        };
        let temporary = tempfile::Builder::new()
            .prefix(".registry-image-blob-")
            .tempfile_in(dir)
            .with_context(|| format!("-o: cannot create a file in {}", dir.display()))?;
        Ok(BlobSink::File {
            temporary,
            path: path.to_path_buf(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            BlobSink::Stdout(out) => out.write_all(bytes).context("writing to stdout"),
            BlobSink::File { temporary, path } => temporary
                .write_all(bytes)
                .with_context(|| format!("writing {}", path.display())),
        }
    }

    /// Flushes stdout, or puts the verified file in place.
    fn finish(self) -> anyhow::Result<()> {
        match self {
            BlobSink::Stdout(mut out) => out.flush().context("writing to stdout"),
            BlobSink::File { temporary, path } => {
                temporary
                    .as_file()
                    .sync_all()
                    .with_context(|| format!("writing {}", path.display()))?;
                temporary
                    .persist(&path)
                    .map_err(|e| e.error)
                    .with_context(|| format!("-o: renaming into {}", path.display()))?;
                Ok(())
            }
        }
    }
}

/// `cp SOURCE DESTINATION [--all]`: promotion by digest (see
/// `put::copy`); `--all` also copies referrers. The destination's tag
/// defaults to the source's.
pub async fn cp(connection: &Connection, from: &str, to: &str, all: bool) -> anyhow::Result<()> {
    let (from_repository, from_target) = target_of(from)?;
    let (to_repository, to_target) = parse_reference(to)?;
    let tag = match (to_target, &from_target) {
        (Some(Target::Tag(tag)), _) => tag,
        (None, Target::Tag(tag)) => tag.clone(),
        (Some(Target::Digest(_)), _) => {
            bail!("cp: the destination {to:?} names a digest, not a tag")
        }
        (None, Target::Digest(_)) => bail!("cp: name a tag for the destination ({to}:TAG)"),
    };
    let served = crate::put::promote(
        &connection.source(&from_repository)?,
        &from_target,
        &connection.source(&to_repository)?,
        std::slice::from_ref(&tag),
        all,
    )
    .await?;
    print_lines(&[served.to_string()])
}

/// `tag REFERENCE NEWTAG…`: the same manifest under more tags, its bytes
/// (and so its digest) kept.
pub async fn tag(connection: &Connection, reference: &str, tags: &[String]) -> anyhow::Result<()> {
    if tags.is_empty() {
        bail!("tag: name at least one new tag");
    }
    for tag in tags {
        crate::reference::validate_tag(tag).with_context(|| format!("tag {tag:?}"))?;
    }
    let (endpoint, top) = fetch_manifest(connection, reference, Access::Push).await?;
    let bytes = top.bytes;
    for tag in tags {
        endpoint
            .client
            .put_manifest(&endpoint.repository, tag, &top.media_type, &bytes)
            .await?;
    }
    print_lines(&[top.digest.to_string()])
}

/// `rm REFERENCE [--manifest]`: deletes a tag (or, by digest, a manifest and
/// every tag on it); see `put::delete` for what registries allow.
pub async fn rm(connection: &Connection, reference: &str, manifests: bool) -> anyhow::Result<()> {
    let (repository, target) = target_of(reference)?;
    let endpoint = connection.connect(&repository, Access::Delete).await?;
    let deleted = match target {
        Target::Digest(digest) => {
            if !endpoint
                .client
                .delete_manifest(&endpoint.repository, &digest.to_string())
                .await?
            {
                bail!("{reference} not found");
            }
            digest.to_string()
        }
        Target::Tag(tag) => {
            crate::put::delete::delete_tag(&endpoint.client, &endpoint.repository, &tag, manifests)
                .await?
                .with_context(|| format!("{reference} not found"))?
        }
    };
    print_lines(&[deleted])
}

/// The manifest `reference` names, and the endpoint it came from (with
/// `access`, for what comes next).
async fn fetch_manifest(
    connection: &Connection,
    reference: &str,
    access: Access,
) -> anyhow::Result<(Endpoint, RawManifest)> {
    let (repository, target) = target_of(reference)?;
    let endpoint = connection.connect(&repository, access).await?;
    let manifest = endpoint
        .client
        .get_manifest(&endpoint.repository, &target)
        .await?
        .with_context(|| format!("{reference} not found"))?;
    Ok((endpoint, manifest))
}

fn print_lines(lines: &[String]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        writeln!(stdout, "{line}").context("writing to stdout")?;
    }
    stdout.flush().context("writing to stdout")
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).context("writing to stdout")?;
    stdout.flush().context("writing to stdout")
}
