//! `in` with `format: oci` (docker-save tarball) and `format: oci-layout`,
//! read back by skopeo.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::image::{self, Entry, TestImage, tar};
use support::{TestRegistry, run_step, skopeo};

fn get(dest: &Path, source: Value, version: Value, params: Value) -> support::StepOutput {
    run_step(
        "in",
        &[dest.to_str().unwrap()],
        &json!({"source": source, "version": version, "params": params}),
    )
}

fn two_layer_image() -> TestImage {
    let l1 = tar(&[Entry::file("one", "1")]);
    let l2 = tar(&[Entry::file("two", "2")]);
    TestImage::from_blobs(
        vec![
            (l1.clone(), image::gzip(&l1), image::OCI_LAYER_GZIP),
            (
                l2.clone(),
                image::zstd(&l2),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        ],
        json!({"config": {"Labels": {"k": "v"}}}),
        ("linux", "amd64"),
    )
}

#[test]
fn oci_format_writes_a_docker_save_tarball() {
    let r = TestRegistry::plain();
    let img = two_layer_image();
    let digest = r.push("fmt/tarball", "v1", &img);
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("fmt/tarball")}),
        json!({"tag": "v1", "digest": digest}),
        json!({"format": "oci"}),
    );
    assert!(out.success, "{}", out.stderr);
    let tarball = dest.path().join("image.tar");
    let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(&tarball).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    let hex = |d: String| d.trim_start_matches("sha256:").to_owned();
    assert_eq!(
        names.remove(0),
        format!("sha256:{}", hex(img.config_digest()))
    );
    assert_eq!(
        names,
        [
            format!("{}.tar.gz", hex(image::sha256(&img.layers[0]))),
            format!("{}.tar.zst", hex(image::sha256(&img.layers[1]))),
            "manifest.json".to_owned(),
        ]
    );
    let archive = format!("docker-archive:{}", tarball.display());
    let config = skopeo(&["inspect", "--raw", "--config", &archive]);
    assert_eq!(image::sha256(&config), img.config_digest());
    // Addressed by its tag, skopeo finds the image only if RepoTags names it.
    let tagged = format!("{archive}:{}:v1", r.repo("fmt/tarball"));
    assert_eq!(
        image::sha256(&skopeo(&["inspect", "--raw", "--config", &tagged])),
        img.config_digest()
    );
    let mut archive_reader = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
    let manifest: Value = archive_reader
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
        .map(|e| serde_json::from_reader(e).unwrap())
        .unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        json!([format!("{}:v1", r.repo("fmt/tarball"))])
    );
    assert!(!dest.path().join("rootfs").exists() && !dest.path().join("metadata.json").exists());
    assert_eq!(
        std::fs::read_to_string(dest.path().join("labels.json")).unwrap(),
        "{\"k\":\"v\"}\n"
    );
}

/// Every blob a layout's index reaches is present and hashes to its name.
fn assert_complete(layout: &Path, index: &[u8]) {
    let parsed: Value = serde_json::from_slice(index).unwrap();
    for child in parsed["manifests"].as_array().unwrap() {
        let digest = child["digest"].as_str().unwrap();
        let bytes = std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap();
        assert_eq!(image::sha256(&bytes), digest);
        let manifest: Value = serde_json::from_slice(&bytes).unwrap();
        if manifest.get("manifests").is_some() {
            assert_complete(layout, &bytes);
            continue;
        }
        for d in std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap())
        {
            let digest = d["digest"].as_str().unwrap();
            let blob = std::fs::read(
                layout
                    .join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
            )
            .unwrap();
            assert_eq!(image::sha256(&blob), digest);
        }
    }
}

#[test]
fn oci_layout_keeps_the_index_and_every_platform() {
    let r = TestRegistry::plain();
    let amd = two_layer_image();
    let arm = TestImage::new(
        vec![tar(&[Entry::file("arm", "a")])],
        json!({}),
        ("linux", "arm64"),
    );
    for i in [&amd, &arm] {
        r.push("fmt/layout", &i.digest(), i);
    }
    let index = image::index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    let digest = r.put_manifest("fmt/layout", "latest", image::OCI_INDEX, &index);
    let dest = tempfile::tempdir().unwrap();
    // A platform nothing matches is irrelevant: the layout has them all.
    let out = get(
        dest.path(),
        json!({"repository": r.repo("fmt/layout"), "platform": {"os": "plan9", "architecture": "mips"}}),
        json!({"tag": "latest", "digest": digest}),
        json!({"format": "oci-layout"}),
    );
    assert!(out.success, "{}", out.stderr);
    let layout = dest.path().join("oci");
    let index_json = std::fs::read(layout.join("index.json")).unwrap();
    assert_eq!(image::sha256(&index_json), digest);
    assert_eq!(
        std::fs::read_to_string(layout.join("oci-layout")).unwrap(),
        "{\n    \"imageLayoutVersion\": \"1.0.0\"\n}"
    );
    assert!(!layout.join("single-image-digest").exists());
    // skopeo 1.9 cannot address an unnamed child of a layout; check the
    // layout's completeness and digests directly.
    assert_complete(&layout, &index_json);
}

#[test]
fn oci_layout_of_a_single_image() {
    let r = TestRegistry::plain();
    let img = two_layer_image().with_annotations(json!({"org.example": "x"}));
    let digest = r.push("fmt/single", "v1", &img);
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("fmt/single")}),
        json!({"tag": "v1", "digest": digest}),
        json!({"format": "oci-layout"}),
    );
    assert!(out.success, "{}", out.stderr);
    let layout = dest.path().join("oci");
    assert_eq!(
        std::fs::read_to_string(layout.join("single-image-digest")).unwrap(),
        digest
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], json!(digest));
    assert_eq!(
        index["manifests"][0]["annotations"],
        json!({"org.example": "x"})
    );
    assert_complete(&layout, &std::fs::read(layout.join("index.json")).unwrap());
    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}", layout.display())]);
    assert_eq!(image::sha256(&raw), digest);
}
