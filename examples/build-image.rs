//! Assembles the resource type's own image, with no Docker and no base
//! image: an OCI image layout whose `index.json` holds one multi-platform
//! index, one image per static binary given. Run by `scripts/build-image`.
//!
//! Each image is one layer: `/opt/resource/registry-image` and its `check`,
//! `in`, `out` links, the CA bundle and its copyright file, and `/tmp`
//! (1777). Everything is reproducible: the layer is packed by
//! `image::tree_layer` (sorted, 0:0, every mtime the epoch) and gzipped by
//! the deterministic `put::gzip`; JSON is written with sorted keys.
//! The digest of the index is printed on stdout.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

use registry_image::image::digest::{Algorithm, Hasher, HashingWriter};
use registry_image::image::media_type::{OCI_INDEX, OCI_MANIFEST};
use registry_image::image::tree_layer::rfc3339;
use registry_image::put::package::{PackageImage, gzip_tree};

const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Parser)]
#[command(about = "Assemble the registry-image resource type image as an OCI layout")]
struct Args {
    /// The layout to write (replaced whole).
    #[arg(long)]
    out: PathBuf,
    /// `os/arch[/variant]=static binary`, once per platform, in index order.
    #[arg(long = "platform", required = true)]
    platforms: Vec<String>,
    /// Every timestamp in the image (SOURCE_DATE_EPOCH).
    #[arg(long)]
    epoch: i64,
    #[arg(long)]
    version: String,
    #[arg(long)]
    revision: String,
    /// `org.opencontainers.image.source`; left out when empty.
    #[arg(long, default_value = "")]
    source: String,
    #[arg(long)]
    licenses: String,
    /// The CA bundle to install (Debian's ca-certificates).
    #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    ca_bundle: PathBuf,
    /// Its copyright and licence file, kept beside it in the image.
    #[arg(long, default_value = "/usr/share/doc/ca-certificates/copyright")]
    ca_copyright: PathBuf,
    /// `org.opencontainers.image.ref.name` of the index in `index.json`.
    #[arg(long, default_value = "latest")]
    tag: String,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let parent = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    // Built beside the destination, renamed into place when complete.
    let work = tempfile::Builder::new()
        .prefix(".build-image-")
        .tempdir_in(parent)?;
    let layout = work.path().join("layout");
    fs::create_dir_all(layout.join("blobs/sha256"))?;
    let mut manifests = Vec::new();
    for spec in &args.platforms {
        let (platform, binary) = spec
            .split_once('=')
            .with_context(|| format!("--platform {spec:?}: expected os/arch[/variant]=binary"))?;
        let platform = parse_platform(platform)?;
        let root = work.path().join(format!("root-{}", manifests.len()));
        stage_root(&root, Path::new(binary), &args)?;
        let manifest = build_image(&layout, &root, &platform, &args)?;
        manifests.push(json!({
            "mediaType": OCI_MANIFEST, "digest": manifest.0, "size": manifest.1,
            "platform": platform,
        }));
    }
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
        "annotations": labels(&args),
    });
    let (digest, size) = put_blob(&layout, &to_bytes(&index))?;
    let top = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_INDEX, "digest": digest, "size": size,
                       "annotations": {"org.opencontainers.image.ref.name": args.tag}}],
    });
    fs::write(layout.join("index.json"), to_bytes(&top))?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    if args.out.exists() {
        fs::remove_dir_all(&args.out)
            .with_context(|| format!("replacing {}", args.out.display()))?;
    }
    fs::rename(&layout, &args.out)?;
    println!("{digest}");
    Ok(())
}

/// `linux/arm64/v8` as an OCI platform object.
fn parse_platform(text: &str) -> anyhow::Result<Value> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts[..] {
        [os, arch] => Ok(json!({"os": os, "architecture": arch})),
        [os, arch, variant] => Ok(json!({"os": os, "architecture": arch, "variant": variant})),
        _ => bail!("platform {text:?}: expected os/arch[/variant]"),
    }
}

/// The image's files under `root`, with explicit modes (the umask decides
/// nothing).
fn stage_root(root: &Path, binary: &Path, args: &Args) -> anyhow::Result<()> {
    let dir = |path: &str, mode: u32| -> anyhow::Result<()> {
        let path = root.join(path);
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let file = |from: &Path, to: &str, mode: u32| -> anyhow::Result<()> {
        let to = root.join(to);
        fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    for path in [
        "",
        "etc",
        "etc/ssl",
        "etc/ssl/certs",
        "opt",
        "opt/resource",
        "usr",
        "usr/share",
        "usr/share/doc",
        "usr/share/doc/ca-certificates",
    ] {
        dir(path, 0o755)?;
    }
    dir("tmp", 0o1777)?;
    file(binary, "opt/resource/registry-image", 0o755)?;
    for step in ["check", "in", "out"] {
        symlink("registry-image", root.join("opt/resource").join(step))?;
    }
    file(&args.ca_bundle, CA_BUNDLE, 0o644)?;
    file(
        &args.ca_copyright,
        "usr/share/doc/ca-certificates/copyright",
        0o644,
    )?;
    Ok(())
}

/// Packs `root` into a layer and writes the image's blobs; returns the
/// manifest's digest and size.
fn build_image(
    layout: &Path,
    root: &Path,
    platform: &Value,
    args: &Args,
) -> anyhow::Result<(String, usize)> {
    let staged = layout.join("blobs/sha256/.layer");
    let mut layer = HashingWriter::new(fs::File::create(&staged)?, Algorithm::Sha256);
    let diff_id = gzip_tree(root, Path::new(""), args.epoch as u64, &mut layer, |_| {})?;
    let (_, layer_digest, layer_size) = layer.finish()?;
    fs::rename(
        &staged,
        layout.join("blobs/sha256").join(layer_digest.hex()),
    )?;
    let created = rfc3339(args.epoch).context("--epoch")?;
    let mut config = json!({
        "created": created,
        "config": {
            "Env": [format!("PATH={PATH}"), format!("SSL_CERT_FILE=/{CA_BUNDLE}")],
            "WorkingDir": "/",
            "Labels": labels(args),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created": created, "created_by": "scripts/build-image"}],
    });
    for (key, value) in platform.as_object().into_iter().flatten() {
        config[key] = value.clone();
    }
    let (config_digest, config_size) = put_blob(layout, &to_bytes(&config))?;
    let manifest = PackageImage::manifest_bytes(
        (&config_digest.parse()?, config_size as u64),
        (&layer_digest, layer_size),
    );
    put_blob(layout, &manifest)
}

fn labels(args: &Args) -> Value {
    let mut labels = json!({
        "org.opencontainers.image.title": "registry-image",
        "org.opencontainers.image.description":
            "Concourse CI registry-image resource: check, in and out for OCI registries",
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.revision": args.revision,
        "org.opencontainers.image.licenses": args.licenses,
    });
    if !args.source.is_empty() {
        labels["org.opencontainers.image.source"] = args.source.clone().into();
    }
    labels
}

/// JSON as written to blobs: compact, keys sorted (serde_json's map is a
/// BTreeMap here), so the same values give the same bytes.
fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialise")
}

fn put_blob(layout: &Path, bytes: &[u8]) -> anyhow::Result<(String, usize)> {
    let mut hasher = Hasher::new(Algorithm::Sha256);
    hasher.update(bytes);
    let digest = hasher.finish().to_string();
    fs::write(layout.join("blobs/sha256").join(&digest[7..]), bytes)?;
    Ok((digest, bytes.len()))
}
