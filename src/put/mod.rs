//! The `out` step: push a docker-save tarball, an OCI layout directory or
//! an OCI layout tarball under the source tag, the version (with its
//! aliases) and the additional tags.
//!
//! Everything local is checked before the network is used: the tags
//! (grammar, version, tag_prefix), the glob, and the input's structure.

mod annotations;
mod archive;
mod artifact;
mod base;
mod blob_source;
pub mod copy;
pub mod delete;
mod docker_save;
pub mod gzip;
mod layout;
mod local_image;
pub mod package;
mod paths;
mod push;
mod recompress;
mod sign;
mod store;
mod tag_list;
pub mod tags;
mod tree_blob;

use std::path::Path;

use anyhow::{Context, bail};

use self::artifact::ArtifactInput;
use self::copy::RemoteImage;
use self::docker_save::DockerSaveImage;
use self::layout::LayoutImage;
use self::local_image::LocalImage;
use self::package::PackageImage;
use self::paths::PathParam;
use self::push::{Pushed, Pusher, first_tag};
use self::tags::TagRequest;
use crate::auth::Access;
use crate::concourse::{MetadataField, OutRequest, StepResponse, Version};
use crate::endpoint::Endpoint;
use crate::image::Digest;
use crate::progress::Progress;
use crate::registry::RegistryClient;

/// Runs the step; `params.image` and `params.additional_tags` are relative
/// to `src`.
pub async fn run(request: OutRequest, src: &Path) -> anyhow::Result<StepResponse> {
    let source = &request.source;
    source.validate()?;
    let params = request.params.unwrap_or_default();
    let chosen: Vec<&str> = [
        ("image", !params.image.is_empty()),
        ("package", params.package.is_some()),
        ("artifact", params.artifact.is_some()),
        ("delete", params.delete.is_some()),
        ("copy", params.copy.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if chosen.len() > 1 {
        bail!(
            "params.{} cannot be combined: a put pushes an image, packs one, pushes an artifact, copies one or deletes",
            chosen.join(" and params.")
        );
    }
    let compression = recompress::LayerCompression::parse(&params.compression)?;
    if compression != recompress::LayerCompression::Keep
        && (params.package.is_some()
            || params.artifact.is_some()
            || params.copy.is_some()
            || params.delete.is_some())
    {
        bail!(
            "params.compression applies to params.image only (packages are gzipped; artifacts, \
             copies and deletes keep their bytes)"
        );
    }
    if !params.annotations.is_empty() && (params.copy.is_some() || params.delete.is_some()) {
        bail!(
            "params.annotations cannot be combined with params.copy or params.delete: a copy \
             keeps its origin's digest and a delete pushes nothing (annotate the build instead)"
        );
    }
    let annotations =
        annotations::Annotations::expand(&params.annotations, |name| std::env::var(name).ok())?;
    if let Some(delete) = &params.delete {
        if params.sign.is_some() {
            bail!(
                "params.sign cannot be combined with params.delete: a delete pushes nothing to sign"
            );
        }
        return delete::run(source, &params, delete, src).await;
    }
    // The key is read (and its password checked) before anything is pushed.
    let signer = match &params.sign {
        Some(sign) => {
            let (sign, dir) = (sign.clone(), src.to_path_buf());
            Some(
                tokio::task::spawn_blocking(move || sign::Signer::load(&sign, &dir))
                    .await
                    .context("the key reading thread failed")??,
            )
        }
        None => None,
    };

    // Read once: the tags are checked now and assembled again with the
    // aliases once the repository's tags are known.
    let additional = match params.additional_tags.as_str() {
        "" => None,
        path => Some(tags::read_additional(
            &paths::contained(src, PathParam::new("params.additional_tags", path))?,
            &params.tag_prefix,
        )?),
    };
    let tag_request = TagRequest {
        source_tag: &source.tag,
        version: &params.version,
        variant: &source.variant,
        bump_aliases: params.bump_aliases,
        additional: additional.as_deref(),
        tag_prefix: &params.tag_prefix,
    };
    // Every rule but the aliases, before anything else.
    tag_request.tags(&[])?;

    // What is pushed, and where blobs a `get` of this resource fetched
    // may be mounted from (see `origin_repository`).
    let (what, origin_of, input) = match (&params.copy, &params.package, &params.artifact) {
        (Some(copy), _, _) => {
            let (repository, digest) = copy::origin_reference(copy, src)?;
            let origin = copy::origin_source(copy, &repository, source)?;
            let target = crate::reference::Target::Digest(digest.clone());
            let image = copy::RemoteImage::read(&origin, &target, copy.referrers)
                .await
                .with_context(|| format!("reading {repository}@{digest}"))?;
            let what = format!("{repository}@{digest}");
            (what, None, Input::Remote(Box::new(image)))
        }
        (None, Some(package), _) => {
            let path = paths::locate(src, PathParam::new("params.package.path", &package.path))?;
            let base = match package.base.as_str() {
                "" => None,
                glob => Some(paths::locate(
                    src,
                    PathParam::new("params.package.base", glob),
                )?),
            };
            let (preparing, package, base_path) = (path.clone(), package.clone(), base.clone());
            let image = tokio::task::spawn_blocking(move || {
                package::PackageImage::prepare(&preparing, &package, base_path.as_deref())
            })
            .await
            .context("the package reading thread failed")??;
            (path.display().to_string(), base, Input::Package(image))
        }
        (None, None, Some(artifact)) => {
            let (params, dir) = (artifact.clone(), src.to_path_buf());
            let input = tokio::task::spawn_blocking(move || {
                artifact::ArtifactInput::prepare(&dir, &params)
            })
            .await
            .context("the artifact reading thread failed")??;
            let what = format!("an artifact of {} files", input.files.len());
            (what, None, Input::Artifact(input))
        }
        (None, None, None) => {
            let path = paths::locate_image(src, &params.image)?;
            let loading = path.clone();
            let image = tokio::task::spawn_blocking(move || LocalImage::load(&loading))
                .await
                .context("the image reading thread failed")??;
            (path.display().to_string(), Some(path), Input::from(image))
        }
    };
    // What a later step (or a human) needs to pull exactly this build.
    let names_digest = matches!(
        input,
        Input::Package(_) | Input::Artifact(_) | Input::Remote(_)
    );

    let endpoint = Endpoint::connect(source, Access::Push).await?;
    let (client, repository) = (&endpoint.client, &endpoint.repository);
    let mount_from = mount_source(&input, origin_of.as_deref(), repository);
    let existing = if tag_request.wants_aliases()? {
        existing_tags(client, repository)
            .await
            .context("determine aliases")?
    } else {
        Vec::new()
    };
    let tags = tag_request.tags(&existing)?;
    let first = first_tag(&tags)?.to_owned();

    tracing::info!("pushing {} to {} as {}", what, repository, tags.join(", "));
    let progress = Progress::new(source.debug);
    let pusher = Pusher {
        client,
        repo: repository,
        progress: &progress,
        mount_from,
        compression,
        annotations,
    };
    let pushed = pusher.push(input, &tags).await;
    progress.finish();
    let (pushed, digest) = pushed.context("pushing image failed")?;
    tracing::info!("pushed {}@{digest}", endpoint.name);
    let mut metadata = vec![
        MetadataField::new("repository", &endpoint.name),
        MetadataField::new("tags", tags.join(" ")),
    ];
    if let Some(signer) = &signer {
        let signed = pusher
            .sign(signer, &repository.to_string(), &digest, &pushed)
            .await
            .with_context(|| format!("signing {}@{digest} (it was pushed)", endpoint.name))?;
        metadata.push(MetadataField::new("signed", signed.len().to_string()));
    }
    if names_digest {
        metadata.push(MetadataField::new("digest", digest.to_string()));
        metadata.push(MetadataField::new(
            "image",
            format!("{}@{digest}", endpoint.name),
        ));
    }
    Ok(StepResponse {
        version: Version {
            tag: first,
            digest: digest.to_string(),
        },
        metadata,
    })
}

/// Copies `target` from `origin` into `destination` under `tags` (the
/// promotion engine, for the command line); the digest it is served as,
/// the origin's (see `Pusher::push`).
pub async fn promote(
    origin: &crate::source::Source,
    target: &crate::reference::Target,
    destination: &crate::source::Source,
    tags: &[String],
    referrers: bool,
) -> anyhow::Result<Digest> {
    let image = copy::RemoteImage::read(origin, target, referrers).await?;
    let endpoint = Endpoint::connect(destination, Access::Push).await?;
    let input = Input::Remote(Box::new(image));
    let progress = Progress::new(destination.debug);
    let pusher = Pusher {
        client: &endpoint.client,
        repo: &endpoint.repository,
        progress: &progress,
        mount_from: mount_source(&input, None, &endpoint.repository),
        compression: recompress::LayerCompression::Keep,
        annotations: annotations::Annotations::default(),
    };
    let pushed = pusher.push(input, tags).await;
    progress.finish();
    Ok(pushed?.1)
}

/// An image to push.
#[derive(Debug)]
enum Input {
    Layout(LayoutImage),
    DockerSave(DockerSaveImage),
    /// `params.package`: a directory packed into an image on the way.
    Package(PackageImage),
    /// `params.artifact`: files pushed as an OCI artifact.
    Artifact(ArtifactInput),
    /// `params.copy`: an image of another repository.
    Remote(Box<RemoteImage>),
}

impl From<LocalImage> for Input {
    fn from(image: LocalImage) -> Self {
        match image {
            LocalImage::Layout(layout) => Input::Layout(layout),
            LocalImage::DockerSave(image) => Input::DockerSave(image),
        }
    }
}

impl Pusher<'_> {
    /// Pushes `input` by its recipe, then tags it: what was pushed, and
    /// the digest the registry serves for the first tag. A copy must be
    /// served as the origin's digest.
    async fn push(&self, input: Input, tags: &[String]) -> anyhow::Result<(Pushed, Digest)> {
        let exact = matches!(input, Input::Remote(_));
        let pushed = match input {
            Input::Layout(layout) => self.push_layout(layout).await?,
            Input::DockerSave(image) => Pushed::single(self.push_docker_save(&image, tags).await?),
            Input::Package(package) => Pushed::single(self.push_package(package).await?),
            Input::Artifact(artifact) => Pushed::single(self.push_artifact(artifact).await?),
            Input::Remote(remote) => self.push_remote(*remote).await?,
        };
        // The children are pushed; the top is put under the tags next, so
        // it is annotated now (a copy never is: it keeps its digest).
        let pushed = match self.annotations.is_empty() || exact {
            true => pushed,
            false => Pushed {
                top: self.annotations.apply(&pushed.top)?,
                children: pushed.children,
            },
        };
        let served = self.tag(&pushed, tags, exact).await?;
        Ok((pushed, served))
    }
}

/// A repository of `destination`'s registry the input's blobs may be
/// mounted from: a copy's origin, or the repository a `get` of this
/// resource fetched `origin_path` from.
fn mount_source(
    input: &Input,
    origin_path: Option<&Path>,
    destination: &crate::reference::Repository,
) -> Option<String> {
    let origin = match input {
        Input::Remote(image) => Some(image.origin.repository.clone()),
        _ => origin_path.and_then(paths::origin_repository),
    };
    origin
        .filter(|origin| origin.api_host() == destination.api_host())
        .map(|origin| origin.path().to_owned())
}

/// The repository's tags; none when it does not exist yet.
async fn existing_tags(
    client: &RegistryClient,
    repository: &crate::reference::Repository,
) -> anyhow::Result<Vec<String>> {
    match client.list_tags(repository).await {
        Ok(tags) => Ok(tags),
        Err(e) if crate::registry::error::is_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}
