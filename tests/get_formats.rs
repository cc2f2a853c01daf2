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

/// An index of three platforms and an attestation of the arm64 image, as
/// BuildKit pushes them.
fn three_platform_index(r: &TestRegistry, repo: &str) -> (String, [TestImage; 3], Value) {
    let images = [
        TestImage::new(
            vec![tar(&[Entry::file("amd", "a")])],
            json!({"config": {"Labels": {"arch": "amd64"}}}),
            ("linux", "amd64"),
        ),
        TestImage::new(
            vec![tar(&[Entry::file("arm", "b")])],
            json!({"config": {"Labels": {"arch": "arm64"}}}),
            ("linux", "arm64"),
        ),
        TestImage::new(
            vec![tar(&[Entry::file("s390x", "c")])],
            json!({}),
            ("linux", "s390x"),
        ),
    ];
    let attestation = TestImage::new(
        vec![tar(&[Entry::file("provenance.json", "{}")])],
        json!({}),
        ("unknown", "unknown"),
    );
    for i in images.iter().chain([&attestation]) {
        r.push(repo, &i.digest(), i);
    }
    let entry = |i: &TestImage, platform: Value| {
        json!({"mediaType": i.manifest_media_type, "digest": i.digest(),
               "size": i.manifest.len(), "platform": platform})
    };
    let mut attestation_entry = entry(
        &attestation,
        json!({"os": "unknown", "architecture": "unknown"}),
    );
    attestation_entry["annotations"] = json!({
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": images[1].digest(),
    });
    let index = json!({"schemaVersion": 2, "mediaType": image::OCI_INDEX,
    "annotations": {"org.opencontainers.image.source": "https://example.com/x"},
    "manifests": [
        entry(&images[0], json!({"os": "linux", "architecture": "amd64"})),
        entry(&images[1], json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
        entry(&images[2], json!({"os": "linux", "architecture": "s390x"})),
        attestation_entry,
    ]});
    let digest = r.put_manifest(
        repo,
        "multi",
        image::OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
    );
    (digest, images, index)
}

fn metadata_value(out: &support::StepOutput, name: &str) -> Option<String> {
    let response: Value = serde_json::from_str(&out.stdout).unwrap();
    response["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .map(|f| f["value"].as_str().unwrap().to_owned())
}

#[test]
fn oci_layout_of_chosen_platforms_is_a_new_index_named_in_the_metadata() {
    let r = TestRegistry::plain();
    let (digest, images, served) = three_platform_index(&r, "fmt/platforms");
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("fmt/platforms")}),
        json!({"tag": "multi", "digest": digest}),
        json!({"format": "oci-layout", "platforms": ["linux/amd64", "linux/arm64/v8"]}),
    );
    assert!(out.success, "{}", out.stderr);
    let layout = dest.path().join("oci");
    let index_json = std::fs::read(layout.join("index.json")).unwrap();
    let index: Value = serde_json::from_slice(&index_json).unwrap();
    let kept: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    let arm_attestation = served["manifests"][3]["digest"].as_str().unwrap();
    assert_eq!(
        kept,
        [
            images[0].digest().as_str(),
            images[1].digest().as_str(),
            arm_attestation
        ]
    );
    // Everything else as served; the new index named in the metadata.
    assert_eq!(index["annotations"], served["annotations"]);
    assert_eq!(index["manifests"][1], served["manifests"][1]);
    assert_eq!(
        metadata_value(&out, "new_index"),
        Some(image::sha256(&index_json))
    );
    assert_eq!(
        metadata_value(&out, "platforms").as_deref(),
        Some("linux/amd64, linux/arm64/v8")
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("digest")).unwrap(),
        digest,
        "the version stays the version"
    );
    assert_complete(&layout, &index_json);
    let s390x_layer = image::sha256(&images[2].layers[0]);
    assert!(
        !layout
            .join("blobs/sha256")
            .join(s390x_layer.trim_start_matches("sha256:"))
            .exists(),
        "the platform not asked for is left out"
    );

    // Every platform asked for: the index's own bytes, no new index.
    let all = tempfile::tempdir().unwrap();
    let out = get(
        all.path(),
        json!({"repository": r.repo("fmt/platforms")}),
        json!({"tag": "multi", "digest": digest}),
        json!({"format": "oci-layout", "platforms": ["linux/s390x", "linux/arm64", "linux/amd64"]}),
    );
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        image::sha256(&std::fs::read(all.path().join("oci/index.json")).unwrap()),
        digest
    );
    assert_eq!(metadata_value(&out, "new_index"), None);
}

#[test]
fn oci_tarball_of_several_platforms_holds_an_image_each() {
    let r = TestRegistry::plain();
    let (digest, images, _) = three_platform_index(&r, "fmt/platforms-tar");
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("fmt/platforms-tar"), "label_regex": "arch"}),
        json!({"tag": "multi", "digest": digest}),
        json!({"format": "oci", "platforms": ["linux/arm64", "linux/amd64"]}),
    );
    assert!(out.success, "{}", out.stderr);
    // The first platform's labels are the metadata's.
    assert_eq!(metadata_value(&out, "arch").as_deref(), Some("arm64"));
    let archive = format!("docker-archive:{}", dest.path().join("image.tar").display());
    let repo = r.repo("fmt/platforms-tar");
    for (n, (image, suffix)) in [(&images[1], "linux-arm64"), (&images[0], "linux-amd64")]
        .into_iter()
        .enumerate()
    {
        // skopeo reads each, by its place and by its name.
        for reference in [
            format!("{archive}:@{n}"),
            format!("{archive}:{repo}:multi-{suffix}"),
        ] {
            let config = skopeo(&["inspect", "--raw", "--config", &reference]);
            assert_eq!(image::sha256(&config), image.config_digest(), "{reference}");
        }
    }
    // And copies both out whole, layers verified.
    let copied = tempfile::tempdir().unwrap();
    for n in 0..2 {
        skopeo(&[
            "copy",
            &format!("{archive}:@{n}"),
            &format!("oci:{}:image{n}", copied.path().display()),
        ]);
    }
}

#[test]
fn platforms_are_refused_where_they_cannot_apply() {
    let r = TestRegistry::plain();
    let (digest, _, _) = three_platform_index(&r, "fmt/platforms-refused");
    let single = r.push("fmt/platforms-refused", "single", &two_layer_image());
    let version = |d: &str| json!({"tag": "multi", "digest": d});
    let source = json!({"repository": r.repo("fmt/platforms-refused")});
    for (params, digest, says) in [
        (
            json!({"platforms": ["linux/amd64"]}),
            &digest,
            "a rootfs holds one platform",
        ),
        (
            json!({"format": "oci", "platforms": ["linux/amd64"], "platform": {"architecture": "arm64"}}),
            &digest,
            "not both",
        ),
        (
            json!({"format": "oci", "platforms": ["linux"]}),
            &digest,
            "params.platforms[0] \"linux\": expected os/architecture[/variant]",
        ),
        (
            json!({"format": "oci-layout", "platforms": ["linux/amd64", "windows/amd64"]}),
            &digest,
            "no image for platform windows/amd64 in index",
        ),
        (
            json!({"format": "oci", "platforms": ["linux/arm64"]}),
            &single,
            "it is a single image for linux/amd64",
        ),
    ] {
        let dest = tempfile::tempdir().unwrap();
        let out = get(dest.path(), source.clone(), version(digest), params.clone());
        assert!(!out.success, "{params}: {}", out.stdout);
        assert!(out.stderr.contains(says), "{params}: {}", out.stderr);
        if says.starts_with("no image") {
            assert!(
                out.stderr
                    .contains("linux/amd64, linux/arm64/v8, linux/s390x"),
                "names what the index has: {}",
                out.stderr
            );
        }
        assert!(
            std::fs::read_dir(dest.path()).unwrap().next().is_none(),
            "{params}: nothing written"
        );
    }
    // A single image and its own platform: fine.
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        source.clone(),
        version(&single),
        json!({"format": "oci-layout", "platforms": ["linux/amd64"]}),
    );
    assert!(out.success, "{}", out.stderr);
    assert!(dest.path().join("oci/single-image-digest").exists());
}
