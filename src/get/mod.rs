//! The `in` step: fetch one image by digest into the destination directory.
//!
//! Layers are downloaded concurrently (bounded) while one blocking thread
//! decompresses and applies them strictly in order; each blob is hashed as
//! it streams and counts as complete only once its digest matched. The
//! rootfs is built in a temp directory inside the destination and renamed
//! into place at the end, so a failed step leaves no partial `rootfs/`.

mod artifact;
mod inflate_stage;
mod layout;
mod metadata;
mod platforms;
mod staged;
mod tarball;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::Semaphore;

use self::staged::Staged;
use crate::auth::Access;
use crate::concourse::{InRequest, MetadataField, StepResponse};
use crate::endpoint::Endpoint;
use crate::image::manifest::{
    Descriptor, ImageConfig, ImageManifest, parse_config, parse_index, parse_manifest,
};
use crate::image::tree::RawManifest;
use crate::image::{Digest, Platform};
use crate::progress::Progress;
use crate::reference::{Repository, Target};
use crate::registry::RegistryClient;
use crate::registry::blob_reader::{self, BlobReader};
use crate::unpack::rootfs::{RootfsWriter, Skipped};

/// Layers downloading at once (the one being extracted included).
const LAYER_CONCURRENCY: usize = 3;
/// Bytes each layer download may hold ahead of its reader (see
/// `blob_reader`): bounds memory whatever the image size.
const BYTES_AHEAD_PER_LAYER: usize = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Rootfs,
    Oci,
    OciLayout,
    Artifact,
}

fn parse_format(format: &str) -> anyhow::Result<Format> {
    match format {
        "" | "rootfs" => Ok(Format::Rootfs),
        "oci" => Ok(Format::Oci),
        "oci-layout" => Ok(Format::OciLayout),
        "artifact" => Ok(Format::Artifact),
        other => bail!(
            "unknown format {other:?}: must be one of 'rootfs', 'oci', 'oci-layout', 'artifact'"
        ),
    }
}

/// Runs the step; `dest` must exist.
pub async fn run(request: InRequest, dest: &Path) -> anyhow::Result<StepResponse> {
    let source = &request.source;
    source.validate()?;
    let params = request.params.unwrap_or_default();
    let version = request.version.unwrap_or_default();
    let format = parse_format(&params.format).context("params.format")?;
    if !dest.is_dir() {
        bail!("destination {} is not a directory", dest.display());
    }
    let digest: Digest = version
        .digest
        .parse()
        .with_context(|| format!("version.digest {:?} is not a digest", version.digest))?;
    let label_regex = source.label_regex()?;
    let annotation_regex = source.annotation_regex()?;
    let platforms = platforms::parse(&params.platforms)?;
    if !platforms.is_empty() {
        match format {
            Format::Oci | Format::OciLayout => {}
            Format::Rootfs => bail!(
                "params.platforms: a rootfs holds one platform; choose it with params.platform \
                 (or use format: oci-layout or oci for several)"
            ),
            Format::Artifact => bail!("params.platforms: an artifact has no platforms"),
        }
        if params.platform.is_some() {
            bail!("give params.platform or params.platforms, not both");
        }
    }
    // A step `platform` replaces the source's wholesale, as in the original;
    // with several, the first is the one whose labels the metadata shows.
    let platform = match platforms.first() {
        Some(first) => first.clone(),
        None => params
            .platform
            .as_ref()
            .or(source.platform.as_ref())
            .map_or_else(Platform::host, |p| p.to_image_platform()),
    };
    let endpoint = Endpoint::connect(source, Access::Pull).await?;
    // image.tar is named after the origin repository and tag, fully
    // qualified, whichever registry served it.
    let repo_tag = format!("{}:{}", endpoint.repository, version.tag);

    tracing::info!("fetching {}@{digest}", endpoint.name);
    let progress = Progress::new(source.debug);
    let (params, platform, progress_ref, digest_ref) = (&params, &platform, &progress, &digest);
    let platforms = &platforms;
    let (label_ref, annotation_ref, repo_tag) = (&label_regex, &annotation_regex, &repo_tag);
    let cosign_key = source.signature_policy()?;
    let cosign_key = &cosign_key;
    let attempt = |client: Arc<RegistryClient>, repository: Repository| async move {
        let (progress, digest) = (progress_ref, digest_ref);
        if let Some(key) = cosign_key {
            // Before anything of the image is read.
            let found = crate::sign::verify_digest(&client, &repository, digest, key)
                .await?
                .require()?;
            tracing::info!("signature verified: {found}");
        }
        let top = client
            .get_manifest(&repository, &Target::Digest(digest.clone()))
            .await?
            .with_context(|| format!("image {repository}@{digest} not found"))?;
        if format == Format::Artifact {
            if params.skip_download {
                return Ok(Fetched::default());
            }
            // Its annotations are the only metadata an artifact has.
            let manifest = artifact::write(&client, &repository, progress, &top, dest).await?;
            return Ok(Fetched {
                image: Some((manifest, ImageConfig::default())),
                new_index: None,
            });
        }
        let wants_metadata = label_ref.is_some() || annotation_ref.is_some();
        let writes_image = !params.skip_download && format != Format::OciLayout;
        let mut new_index = None;
        if !platforms.is_empty() && !params.skip_download {
            if top.is_index() {
                if let platforms::LayoutIndex::Subset(subset) = platforms::narrow(&top, platforms)?
                {
                    new_index = Some(subset);
                }
            } else {
                let image = parse_manifest(&top.bytes)?;
                let config = client
                    .get_small_blob(&repository, &image.config.digest()?)
                    .await
                    .context("fetching the image config")?;
                platforms::check_single(&top, &parse_config(&config)?, platforms)?;
            }
        }
        let mut new_index_digest = None;
        if format == Format::OciLayout && !params.skip_download {
            // Every platform, as served, unless some were chosen.
            let layout_top = new_index.as_ref().unwrap_or(&top);
            layout::write(&client, &repository, progress, layout_top, dest).await?;
            new_index_digest = new_index.map(|index| index.digest);
        }
        if !writes_image && !wants_metadata {
            return Ok(Fetched {
                image: None,
                new_index: new_index_digest,
            });
        }
        // The annotations of an index apply to the images it lists (a
        // multi-platform push annotates its index): the metadata shows the
        // image's own over the top index's.
        let index_annotations = match top.is_index() {
            true => parse_index(&top.bytes)?.annotations,
            false => Default::default(),
        };
        let mut image = parse_manifest(
            &client
                .image_for_platform(&repository, top.clone(), platform)
                .await?
                .bytes,
        )?;
        let own = std::mem::replace(&mut image.annotations, index_annotations);
        image.annotations.extend(own);
        let config_bytes = client
            .get_small_blob(&repository, &image.config.digest()?)
            .await
            .context("fetching the image config")?;
        let config = parse_config(&config_bytes)?;
        if writes_image {
            if format == Format::Rootfs {
                write_rootfs(&client, &repository, progress, &image, dest).await?;
                metadata::write_file(
                    &dest.join("metadata.json"),
                    &metadata::metadata_json(&config),
                )?;
            } else {
                let images = tar_images(
                    &client,
                    &repository,
                    &top,
                    platforms,
                    (&image, config_bytes),
                    repo_tag,
                )
                .await?;
                tarball::write(&client, &repository, progress, images, dest).await?;
            }
            metadata::write_file(&dest.join("labels.json"), &metadata::labels_json(&config))?;
        }
        Ok::<_, anyhow::Error>(Fetched {
            image: Some((image, config)),
            new_index: new_index_digest,
        })
    };
    // A Docker Hub mirror first; any failure there falls back to the origin
    // (the outputs are staged, so a failed attempt leaves nothing behind).
    let fetched = endpoint
        .mirror_first("fetching from", |_| true, attempt)
        .await;
    progress.finish();
    let fetched = fetched.context("download failed")?;

    for (name, value) in [
        ("tag", &version.tag),
        ("digest", &version.digest),
        ("repository", &endpoint.name),
    ] {
        metadata::write_file(&dest.join(name), value.as_bytes())
            .context("saving version info failed")?;
    }
    let mut fields = vec![
        MetadataField::new("repository", &endpoint.name),
        MetadataField::new("tag", &version.tag),
    ];
    if !platforms.is_empty() {
        let names: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        fields.push(MetadataField::new("platforms", names.join(", ")));
    }
    if let Some(index) = &fetched.new_index {
        // The layout's index.json is not the version's: say so.
        fields.push(MetadataField::new("new_index", index.to_string()));
    }
    if let Some((image, config)) = &fetched.image {
        if let Some(kind) = &image.artifact_type {
            fields.push(MetadataField::new("artifact_type", kind));
        }
        if let Some(re) = &label_regex {
            let labels = config
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            fields.extend(metadata::matching(&labels, re));
        }
        if let Some(re) = &annotation_regex {
            fields.extend(metadata::matching(&image.annotations, re));
        }
    }
    Ok(StepResponse {
        version,
        metadata: fields,
    })
}

/// What a fetch attempt produced, for the metadata.
#[derive(Default)]
struct Fetched {
    /// The image (the first platform's) and its config, when read.
    image: Option<(ImageManifest, ImageConfig)>,
    /// The digest of the layout's index, when it is a new one (a subset of
    /// the version's platforms).
    new_index: Option<Digest>,
}

/// The images of `image.tar`: `first` (the first platform's, already read)
/// under `repo_tag`, or with several platforms, each platform's image
/// under `repo_tag` with the platform appended.
async fn tar_images(
    client: &Arc<RegistryClient>,
    repository: &Repository,
    top: &RawManifest,
    platforms: &[Platform],
    first: (&ImageManifest, Vec<u8>),
    repo_tag: &str,
) -> anyhow::Result<Vec<tarball::TarImage>> {
    if platforms.len() < 2 {
        return Ok(vec![tarball::TarImage {
            manifest: first.0.clone(),
            config: first.1,
            repo_tag: repo_tag.to_owned(),
        }]);
    }
    let mut images = Vec::with_capacity(platforms.len());
    images.push(tarball::TarImage {
        manifest: first.0.clone(),
        config: first.1,
        repo_tag: platforms::repo_tag_for(repo_tag, &platforms[0]),
    });
    for platform in &platforms[1..] {
        let manifest = parse_manifest(
            &client
                .image_for_platform(repository, top.clone(), platform)
                .await?
                .bytes,
        )?;
        let config = client
            .get_small_blob(repository, &manifest.config.digest()?)
            .await
            .with_context(|| format!("fetching the image config for {platform}"))?;
        images.push(tarball::TarImage {
            manifest,
            config,
            repo_tag: platforms::repo_tag_for(repo_tag, platform),
        });
    }
    Ok(images)
}

/// Downloads and applies every layer into `dest/rootfs`, built under a temp
/// name and renamed into place once complete.
async fn write_rootfs(
    client: &Arc<RegistryClient>,
    repository: &Repository,
    progress: &Progress,
    image: &ImageManifest,
    dest: &Path,
) -> anyhow::Result<()> {
    let staged = Staged::new(dest, "rootfs").await?;
    let root = staged.path().to_path_buf();
    let built = unpack_layers(client, repository, progress, &image.layers, root).await;
    staged.commit(built).await
}

/// Downloads `blobs` concurrently (bounded, in order) while `consume` reads
/// them one after another on a blocking thread. Each reader ends only once
/// its blob's digest matched. Memory stays bounded: each download buffers at
/// most [`BYTES_AHEAD_PER_LAYER`] ahead of the consumer.
async fn pipeline<T: Send + 'static>(
    client: &Arc<RegistryClient>,
    repository: &Repository,
    progress: &Progress,
    blobs: &[Descriptor],
    consume: impl FnOnce(Vec<(Descriptor, BlobReader)>) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let mut readers = Vec::with_capacity(blobs.len());
    let mut downloads = Vec::with_capacity(blobs.len());
    let permits = Arc::new(Semaphore::new(LAYER_CONCURRENCY));
    for blob in blobs {
        let (tx, rx) = blob_reader::budgeted_channel(BYTES_AHEAD_PER_LAYER);
        let bar = progress.blob(&blob.digest, blob.size);
        readers.push((blob.clone(), BlobReader::new(rx, bar)));
        let digest = blob.digest()?;
        let size = blob.size;
        let client = client.clone();
        let repository = repository.clone();
        // Spawned in order; the semaphore keeps later blobs waiting until an
        // earlier one is fully downloaded.
        let permit = permits.clone().acquire_owned();
        downloads.push(tokio::spawn(async move {
            let _permit = permit.await;
            client.download_blob(&repository, &digest, size, tx).await
        }));
    }
    let consumed = tokio::task::spawn_blocking(move || consume(readers))
        .await
        .context("the writing thread failed")?;
    let value = match consumed {
        Ok(value) => value,
        Err(e) => {
            for d in &downloads {
                d.abort();
            }
            return Err(e);
        }
    };
    for d in downloads {
        d.await.context("a download task failed")??;
    }
    Ok(value)
}

/// Streams a blob into `dir/name` through a temp file that takes the name
/// only once the blob's digest matched.
fn write_blob(
    dir: &Path,
    name: &str,
    blob: &Descriptor,
    reader: &mut BlobReader,
) -> anyhow::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    let copied = std::io::copy(reader, &mut tmp)
        .map(|_| ())
        .map_err(anyhow::Error::from);
    settle(&blob.digest, reader, copied)?;
    tmp.persist(dir.join(name))
        .with_context(|| format!("writing {name}"))?;
    Ok(())
}

/// Reads a blob to its end, reporting a digest mismatch over whatever error
/// `used` (the work done on its data) had: a corrupted blob usually breaks
/// the stream's format before its end, and the mismatch is the cause.
fn settle(digest: &str, reader: &mut BlobReader, used: anyhow::Result<()>) -> anyhow::Result<()> {
    let verified = reader.finish();
    match (used, verified) {
        (_, Err(e)) => Err(anyhow::Error::new(e).context(format!("blob {digest}"))),
        (Err(e), Ok(())) => Err(e.context(format!("blob {digest}"))),
        (Ok(()), Ok(())) => Ok(()),
    }
}

async fn unpack_layers(
    client: &Arc<RegistryClient>,
    repository: &Repository,
    progress: &Progress,
    layers: &[Descriptor],
    root: PathBuf,
) -> anyhow::Result<()> {
    let log_lines = progress.is_lines();
    let skipped = pipeline(client, repository, progress, layers, move |readers| {
        let total = readers.len();
        let mut writer = RootfsWriter::new(&root)?;
        // `REGISTRY_IMAGE_TEST_EXTRACT_DELAY_MS`: a pause before each
        // layer, so tests can make our own consumer slower than the read
        // timeout (the downloads behind it then wait on us).
        let test_delay =
            crate::registry::http::millis_from_env("REGISTRY_IMAGE_TEST_EXTRACT_DELAY_MS");
        let digests: Vec<String> = readers.iter().map(|(l, _)| l.digest.clone()).collect();
        let readers = readers
            .into_iter()
            .map(|(layer, reader)| (layer.digest, reader))
            .collect();
        std::thread::scope(|scope| {
            let mut inflated = inflate_stage::start(scope, readers);
            for (i, digest) in digests.iter().enumerate() {
                if let Some(delay) = test_delay {
                    std::thread::sleep(delay);
                }
                let started = std::time::Instant::now();
                let mut stream = inflated.next_layer();
                let applied = writer
                    .apply_layer(&mut stream)
                    .with_context(|| format!("blob {digest}"));
                stream.finish(applied)?;
                if log_lines {
                    tracing::info!(
                        "layer {}/{total} {digest}: unpacked in {} ms",
                        i + 1,
                        started.elapsed().as_millis()
                    );
                }
            }
            anyhow::Ok(())
        })?;
        writer.finish()
    })
    .await?;
    report_skipped(&skipped);
    Ok(())
}

/// One note per kind of thing the rootfs could not hold, not one per file.
fn report_skipped(skipped: &Skipped) {
    if skipped.devices > 0 {
        tracing::info!(
            "skipped {} device nodes (creating them needs root outside a user namespace)",
            skipped.devices
        );
    }
    if skipped.unmapped_owners > 0 {
        tracing::info!(
            "kept our own owner on {} entries whose owner this user namespace does not map",
            skipped.unmapped_owners
        );
    }
    if skipped.xattrs > 0 {
        tracing::warn!(
            "{} extended attributes could not be set (unsupported by the filesystem or the file type, or needing root)",
            skipped.xattrs
        );
    }
    if skipped.filtered_xattrs > 0 {
        tracing::info!(
            "did not apply {} trusted.* or security.* extended attributes (only security.capability is taken from images)",
            skipped.filtered_xattrs
        );
    }
}
