//! `out` with `params.compression`: layers recompressed on the way (zstd or
//! gzip), deterministically, manifests and indexes rewritten; skopeo copies
//! the result (verifying every digest) and our `in` unpacks it.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::image::{
    Entry, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, TestImage, gzip, tar, write_docker_save,
    write_index_layout, zstd,
};
use support::{StepOutput, TestRegistry, run_step};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn push(
    registry: &TestRegistry,
    src: &Path,
    repo: &str,
    image: &str,
    compression: &str,
) -> StepOutput {
    run_step(
        "out",
        &[src.to_str().unwrap()],
        &json!({"source": {"repository": registry.repo(repo), "tag": "latest"},
                "params": {"image": image, "compression": compression}}),
    )
}

fn manifest(registry: &TestRegistry, repo: &str, reference: &str) -> Value {
    serde_json::from_slice(&registry.manifest(repo, reference).0).unwrap()
}

/// skopeo copies the image out of the registry (checking every digest and
/// decompressing every layer into its own layout).
fn skopeo_reads(registry: &TestRegistry, repo: &str) {
    let dir = tempfile::tempdir().unwrap();
    support::skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/{repo}:latest", registry.host()),
        &format!("oci:{}:copy", dir.path().join("oci").display()),
    ]);
}

fn files(layers: &[(&str, &str)]) -> Vec<u8> {
    tar(&layers
        .iter()
        .map(|(name, body)| Entry::file(name, *body))
        .collect::<Vec<_>>())
}

#[test]
fn a_docker_save_tarball_is_pushed_with_zstd_layers_reproducibly() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let image = TestImage::new(
        vec![
            files(&[("etc/one", "1")]),
            files(&[("usr/two", &"2".repeat(100_000))]),
        ],
        json!({}),
        ("linux", "amd64"),
    );
    write_docker_save(&src.path().join("image.tar"), &image, "app:latest");
    let first = push(&registry, src.path(), "zstd/app", "image.tar", "zstd");
    let digest = first.json()["version"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = push(&registry, src.path(), "zstd/again", "image.tar", "zstd");
    assert_eq!(
        again.json()["version"]["digest"],
        digest.as_str(),
        "deterministic"
    );

    let pushed = manifest(&registry, "zstd/app", "latest");
    assert_eq!(
        pushed["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        pushed["config"]["digest"],
        image.config_digest(),
        "config untouched"
    );
    for layer in pushed["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], OCI_LAYER_ZSTD);
        let blob = std::fs::read(registry.blob_path(layer["digest"].as_str().unwrap())).unwrap();
        assert_eq!(blob[..4], ZSTD_MAGIC);
    }
    skopeo_reads(&registry, "zstd/app");

    let dest = tempfile::tempdir().unwrap();
    let fetched = run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": {"repository": registry.repo("zstd/app")},
                "version": {"tag": "latest", "digest": digest}}),
    );
    assert!(fetched.success, "{}", fetched.stderr);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("rootfs/usr/two")).unwrap(),
        "2".repeat(100_000)
    );
}

#[test]
fn a_multi_platform_layout_is_recompressed_both_ways() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let image = |arch: &str| {
        let raw = files(&[("arch", arch)]);
        let gz = gzip(&raw);
        TestImage::from_blobs(vec![(raw, gz, OCI_LAYER_GZIP)], json!({}), ("linux", arch))
    };
    let (amd, arm) = (image("amd64"), image("arm64"));
    let local = write_index_layout(
        &src.path().join("oci"),
        &[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")],
    );
    let out = push(&registry, src.path(), "multi/app", "oci", "zstd");
    let digest = out.json()["version"]["digest"].as_str().unwrap().to_owned();
    assert_ne!(digest, local, "a recompressed index is a new index");
    let index = manifest(&registry, "multi/app", "latest");
    let children = index["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    for child in children {
        let image = manifest(&registry, "multi/app", child["digest"].as_str().unwrap());
        assert_eq!(image["layers"][0]["mediaType"], OCI_LAYER_ZSTD);
    }
    assert_eq!(
        children[1]["platform"]["architecture"], "arm64",
        "platforms kept"
    );
    skopeo_reads(&registry, "multi/app");
    let dest = tempfile::tempdir().unwrap();
    let fetched = run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": {"repository": registry.repo("multi/app")},
                "version": {"tag": "latest", "digest": digest},
                "params": {"platform": {"os": "linux", "architecture": "arm64"}}}),
    );
    assert!(fetched.success, "{}", fetched.stderr);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("rootfs/arch")).unwrap(),
        "arm64"
    );

    // And back: a zstd layout pushed as gzip.
    let zsrc = tempfile::tempdir().unwrap();
    let raw = files(&[("z", "zstd layer")]);
    let z = TestImage::from_blobs(
        vec![(raw.clone(), zstd(&raw), OCI_LAYER_ZSTD)],
        json!({}),
        ("linux", "amd64"),
    );
    support::image::write_oci_layout(&zsrc.path().join("oci"), "latest", &z);
    let back = push(&registry, zsrc.path(), "multi/gz", "oci", "gzip");
    assert!(back.success, "{}", back.stderr);
    // index.json is pushed as the index it is: its one child is the image.
    let index = manifest(&registry, "multi/gz", "latest");
    let child = index["manifests"][0]["digest"].as_str().unwrap();
    let pushed = manifest(&registry, "multi/gz", child);
    assert_eq!(pushed["layers"][0]["mediaType"], OCI_LAYER_GZIP);
    let blob =
        std::fs::read(registry.blob_path(pushed["layers"][0]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(blob[..2], [0x1f, 0x8b], "gzip bytes");
    skopeo_reads(&registry, "multi/gz");

    // keep (the default) pushes the layout's own digest.
    let kept = push(&registry, src.path(), "multi/kept", "oci", "keep");
    assert_eq!(kept.json()["version"]["digest"], local.as_str());
}

#[test]
fn compression_is_refused_where_it_does_not_apply() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("app")).unwrap();
    let bad = push(&registry, src.path(), "bad/app", "app", "brotli");
    assert!(
        bad.error_line().contains("keep, gzip, zstd"),
        "{}",
        bad.stderr
    );
    let package = run_step(
        "out",
        &[src.path().to_str().unwrap()],
        &json!({"source": {"repository": registry.repo("bad/app"), "tag": "latest"},
                "params": {"package": {"path": "app"}, "compression": "zstd"}}),
    );
    assert!(
        package
            .error_line()
            .contains("applies to params.image only"),
        "{}",
        package.stderr
    );
}
