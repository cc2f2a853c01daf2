//! `out` against a real registry: docker-save tarballs, OCI layouts and
//! layout tarballs, every tag rule, and the upload protocol's recoveries
//! (through the fault-injecting proxy). Spec §9.4 O1–O16 and P1–P21.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::image::{
    Entry, TestImage, gzip, random_bytes, sha256, tar, tar_dir, write_docker_save,
    write_index_layout, write_oci_layout, zstd,
};
use support::proxy::{Fault, FaultProxy};
use support::{StepOutput, TestRegistry, run_step, run_step_env, skopeo};

fn put(src: &Path, source: Value, params: Value) -> StepOutput {
    put_env(src, &[], source, params)
}

fn put_env(src: &Path, envs: &[(&str, &str)], source: Value, params: Value) -> StepOutput {
    run_step_env(
        "out",
        &[src.to_str().unwrap()],
        envs,
        &json!({"source": source, "params": params}),
    )
}

/// A random-ish image with a few layers of different sizes.
fn image(seed: &str, layer_bytes: usize) -> TestImage {
    // Incompressible, so gzip keeps its size.
    let big = random_bytes(layer_bytes, 0x9e37_79b9_7f4a_7c15 ^ seed.len() as u64);
    TestImage::new(
        vec![
            tar(&[Entry::file("seed", seed)]),
            tar(&[Entry::file("data.bin", &big)]),
        ],
        json!({"config": {"Labels": {"seed": seed}}}),
        ("linux", "amd64"),
    )
}

/// skopeo's view of a pushed image: its config digest.
fn skopeo_config_digest(registry: &TestRegistry, repo: &str, tag: &str) -> String {
    sha256(&skopeo(&[
        "inspect",
        "--raw",
        "--config",
        "--tls-verify=false",
        &format!("docker://{}/{repo}:{tag}", registry.host()),
    ]))
}

#[test]
fn docker_save_tarball_is_pushed_under_the_source_tag() {
    // O1, O2
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let img = image("o1", 300_000);
    write_docker_save(&src.path().join("image.tar"), &img, "whatever:latest");
    let out = put(
        src.path(),
        json!({"repository": registry.repo("put/o1"), "tag": "latest-1"}),
        json!({"image": "image.tar"}),
    );
    let response = out.json();
    let digest = response["version"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(response["version"]["tag"], "latest-1");
    assert_eq!(
        registry.digest_of("put/o1", "latest-1").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(
        out.metadata(),
        vec![
            ("repository".into(), registry.repo("put/o1")),
            ("tags".into(), "latest-1".into())
        ]
    );
    // The synthesised manifest: compact Docker schema 2, config verbatim.
    let (manifest, content_type) = registry.manifest("put/o1", "latest-1");
    assert_eq!(
        content_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let parsed: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(parsed["config"]["digest"], img.config_digest());
    assert_eq!(
        parsed["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(
        skopeo_config_digest(&registry, "put/o1", "latest-1"),
        img.config_digest()
    );

    // Pulled back by `in`: the same files.
    let dest = tempfile::tempdir().unwrap();
    let got = run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": {"repository": registry.repo("put/o1")},
                "version": {"tag": "latest-1", "digest": digest}}),
    );
    got.json();
    assert_eq!(
        std::fs::read(dest.path().join("rootfs/seed")).unwrap(),
        b"o1"
    );
    assert_eq!(
        std::fs::read(dest.path().join("rootfs/data.bin"))
            .unwrap()
            .len(),
        300_000
    );
}

#[test]
fn pushing_the_same_tarball_again_uploads_nothing_and_keeps_the_digest() {
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry);
    let src = tempfile::tempdir().unwrap();
    write_docker_save(
        &src.path().join("image.tar"),
        &image("again", 200_000),
        "x:y",
    );
    let source = json!({"repository": proxy.repo("put/again"), "tag": "t"});
    let first = put(src.path(), source.clone(), json!({"image": "image.tar"})).json();
    assert!(
        proxy.count("PATCH", "/blobs/uploads/") >= 3,
        "{:?}",
        proxy.requests()
    );
    proxy.clear_log();
    // A new tag next to the existing one: the gzip output is deterministic,
    // so the digest is the same, and nothing is uploaded.
    let second = put(
        src.path(),
        json!({"repository": proxy.repo("put/again"), "tag": "t"}),
        json!({"image": "image.tar", "version": "2.0.0"}),
    )
    .json();
    assert_eq!(first["version"]["digest"], second["version"]["digest"]);
    assert_eq!(
        proxy.count("POST", "/blobs/uploads/"),
        0,
        "{:?}",
        proxy.requests()
    );
    assert_eq!(proxy.count("PATCH", "/blobs/uploads/"), 0);
    assert_eq!(
        registry.digest_of("put/again", "2.0.0"),
        registry.digest_of("put/again", "t")
    );

    // A fresh repository gets the same digest: compression is deterministic.
    let third = put(
        src.path(),
        json!({"repository": proxy.repo("put/again-fresh"), "tag": "t"}),
        json!({"image": "image.tar"}),
    )
    .json();
    assert_eq!(first["version"]["digest"], third["version"]["digest"]);
}

#[test]
fn compressed_docker_save_layers_keep_their_digests() {
    let registry = TestRegistry::plain();
    let raw = tar(&[Entry::file("a", "gzip layer")]);
    let raw2 = tar(&[Entry::file("b", "zstd layer")]);
    let gz = gzip(&raw);
    let zs = zstd(&raw2);
    // gzip only: Docker schema 2, byte for byte as the original writes it.
    let img = TestImage::from_blobs(
        vec![(raw.clone(), gz.clone(), "x")],
        json!({}),
        ("linux", "amd64"),
    );
    let src = tempfile::tempdir().unwrap();
    write_docker_save(&src.path().join("gz.tar"), &img, "x:y");
    let out = put(
        src.path(),
        json!({"repository": registry.repo("put/gz"), "tag": "t"}),
        json!({"image": "gz.tar"}),
    );
    let expected = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":{},"digest":"{}"}}]}}"#,
        img.config.len(),
        img.config_digest(),
        gz.len(),
        sha256(&gz)
    );
    assert_eq!(out.json()["version"]["digest"], sha256(expected.as_bytes()));
    assert_eq!(registry.manifest("put/gz", "t").0, expected.as_bytes());

    // A zstd layer: an OCI manifest, which can say so.
    let img = TestImage::from_blobs(
        vec![(raw, gz, "x"), (raw2, zs.clone(), "x")],
        json!({}),
        ("linux", "amd64"),
    );
    write_docker_save(&src.path().join("zstd.tar"), &img, "x:y");
    put(
        src.path(),
        json!({"repository": registry.repo("put/zstd"), "tag": "t"}),
        json!({"image": "zstd.tar"}),
    )
    .json();
    let (manifest, content_type) = registry.manifest("put/zstd", "t");
    assert_eq!(content_type, "application/vnd.oci.image.manifest.v1+json");
    let parsed: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        parsed["layers"][1]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(parsed["layers"][1]["digest"], sha256(&zs));
}

#[test]
fn version_and_bump_aliases_tag_the_same_image() {
    // O3
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    write_docker_save(&src.path().join("image.tar"), &image("o3", 1000), "x:y");
    let out = put(
        src.path(),
        json!({"repository": registry.repo("put/o3"), "tag": "latest-3"}),
        json!({"image": "image.tar", "version": "v1.0", "bump_aliases": true}),
    );
    let digest = out.json()["version"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(out.json()["version"]["tag"], "latest-3");
    assert_eq!(
        out.metadata()[1].1,
        "latest-3 1.0.0 latest 1 1.0",
        "tags in push order"
    );
    for tag in ["1.0.0", "1.0", "1", "latest", "latest-3"] {
        assert_eq!(
            registry.digest_of("put/o3", tag).as_deref(),
            Some(digest.as_str()),
            "{tag}"
        );
    }
}

#[test]
fn image_globs() {
    // O4, O5, O6
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let glob_img = image("glob", 100);
    write_docker_save(&src.path().join("image.tar"), &image("plain", 100), "x:y");
    write_docker_save(&src.path().join("image-glob.tar"), &glob_img, "x:y");
    let source = json!({"repository": registry.repo("put/glob"), "tag": "t"});
    put(src.path(), source.clone(), json!({"image": "image-*.tar"})).json();
    let (manifest, _) = registry.manifest("put/glob", "t");
    let parsed: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(parsed["config"]["digest"], glob_img.config_digest());

    let many = put(src.path(), source.clone(), json!({"image": "imag*.tar"}));
    assert!(
        many.error_line()
            .contains("too many files/directories match glob 'imag*.tar'"),
        "{}",
        many.stderr
    );
    let none = put(src.path(), source.clone(), json!({"image": "nomatch.tar"}));
    assert!(
        none.error_line()
            .contains("no files match glob 'nomatch.tar'"),
        "{}",
        none.stderr
    );
    let empty = put(src.path(), source.clone(), json!({}));
    assert!(empty.error_line().contains("params.image is required"));
    let bad = put(src.path(), source, json!({"image": "[unclosed"}));
    assert!(
        bad.error_line().contains("failed to glob path '[unclosed'"),
        "{}",
        bad.stderr
    );
    assert_eq!(registry.tags("put/glob"), vec!["t"]);
}

#[test]
fn additional_tags_and_tag_prefix() {
    // O7, O8, O9
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    write_docker_save(&src.path().join("image.tar"), &image("o7", 100), "x:y");
    std::fs::write(
        src.path().join("tags"),
        "additional-7\ntags-7\n\n additional-7 ",
    )
    .unwrap();
    let out = put(
        src.path(),
        json!({"repository": registry.repo("put/o7"), "tag": "latest-7"}),
        json!({"image": "image.tar", "additional_tags": "tags"}),
    );
    assert_eq!(out.metadata()[1].1, "latest-7 additional-7 tags-7");
    assert_eq!(
        registry.tags("put/o7"),
        vec!["additional-7", "latest-7", "tags-7"]
    );

    let out = put(
        src.path(),
        json!({"repository": registry.repo("put/o8"), "tag": "latest-8"}),
        json!({"image": "image.tar", "additional_tags": "tags", "tag_prefix": "dev-"}),
    );
    assert_eq!(out.metadata()[1].1, "latest-8 dev-additional-7 dev-tags-7");
    assert_eq!(
        registry.tags("put/o8"),
        vec!["dev-additional-7", "dev-tags-7", "latest-8"]
    );

    let no_file = put(
        src.path(),
        json!({"repository": registry.repo("put/o9"), "tag": "latest-9"}),
        json!({"image": "image.tar", "tag_prefix": "dev-"}),
    );
    assert!(
        no_file
            .error_line()
            .contains("tag_prefix can only be used when additional_tags are specified")
    );
    let missing = put(
        src.path(),
        json!({"repository": registry.repo("put/o9"), "tag": "latest-9"}),
        json!({"image": "image.tar", "additional_tags": "nope"}),
    );
    assert!(
        missing
            .error_line()
            .contains("could not parse additional tags: failed to read file at"),
        "{}",
        missing.stderr
    );
    std::fs::write(src.path().join("bad-tags"), "ok bad/tag").unwrap();
    let bad = put(
        src.path(),
        json!({"repository": registry.repo("put/o9"), "tag": "latest-9"}),
        json!({"image": "image.tar", "additional_tags": "bad-tags"}),
    );
    assert!(bad.error_line().contains("bad/tag"), "{}", bad.stderr);
    // Nothing was pushed by the failed puts.
    assert!(registry.tags("put/o9").is_empty());
}

#[test]
fn multi_arch_layout_keeps_the_index_digest() {
    // O10, O11, O12
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let amd = image("amd64", 50_000);
    let arm = image("arm64", 60_000);
    let index_digest = write_index_layout(
        &src.path().join("multi-arch"),
        &[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")],
    );
    let out = put(
        src.path(),
        json!({"repository": registry.repo("put/multi"), "tag": "latest-10"}),
        json!({"image": "multi-arch", "version": "1.0.0", "bump_aliases": true}),
    );
    assert_eq!(out.json()["version"]["digest"], index_digest.as_str());
    assert_eq!(
        out.metadata(),
        vec![
            ("repository".into(), registry.repo("put/multi")),
            ("tags".into(), "latest-10 1.0.0 latest 1 1.0".into())
        ]
    );
    for tag in ["latest-10", "1.0.0", "1.0", "1", "latest"] {
        assert_eq!(
            registry.digest_of("put/multi", tag).as_deref(),
            Some(index_digest.as_str())
        );
    }
    for child in [&amd, &arm] {
        assert_eq!(
            registry.digest_of("put/multi", &child.digest()),
            Some(child.digest())
        );
    }
    // The platform children pull back.
    let dest = tempfile::tempdir().unwrap();
    run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": {"repository": registry.repo("put/multi"),
                           "platform": {"os": "linux", "architecture": "arm64"}},
                "version": {"tag": "1", "digest": index_digest}}),
    )
    .json();
    assert_eq!(
        std::fs::read(dest.path().join("rootfs/seed")).unwrap(),
        b"arm64"
    );
}

#[test]
fn oci_layout_tarball() {
    let registry = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let amd = image("tar-amd64", 10_000);
    let arm = image("tar-arm64", 10_000);
    let index_digest = write_index_layout(
        &work.path().join("layout"),
        &[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")],
    );
    let src = tempfile::tempdir().unwrap();
    tar_dir(
        &work.path().join("layout"),
        &src.path().join("image.oci.tar"),
    );
    let out = put(
        src.path(),
        json!({"repository": registry.repo("put/ocitar"), "tag": "t"}),
        json!({"image": "*.oci.tar"}),
    );
    assert_eq!(out.json()["version"]["digest"], index_digest.as_str());
    assert_eq!(
        skopeo_config_digest(&registry, "put/ocitar", "t"),
        amd.config_digest(),
        "skopeo picks linux/amd64 from the index"
    );
}

#[test]
fn single_image_layout_pushes_the_image_manifest() {
    // O13
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let img = image("o13", 10_000);
    let layout = src.path().join("oci");
    write_oci_layout(&layout, "latest", &img);
    std::fs::write(layout.join("single-image-digest"), img.digest()).unwrap();
    let out = put(
        src.path(),
        json!({"repository": registry.repo("put/single"), "tag": "t"}),
        json!({"image": "oci"}),
    );
    assert_eq!(out.json()["version"]["digest"], img.digest().as_str());
    assert_eq!(registry.manifest("put/single", "t").0, img.manifest);
}

#[test]
fn skopeo_written_inputs_are_pushed_with_the_same_config() {
    let registry = TestRegistry::plain();
    let img = image("skopeo", 100_000);
    registry.push("put/origin", "v1", &img);
    let src = tempfile::tempdir().unwrap();
    let from = format!("docker://{}/put/origin:v1", registry.host());
    for (name, dest) in [
        (
            "layout",
            format!("oci:{}:v1", src.path().join("layout").display()),
        ),
        (
            "archive.tar",
            format!(
                "docker-archive:{}:x/y:v1",
                src.path().join("archive.tar").display()
            ),
        ),
        (
            "oci-archive.tar",
            format!(
                "oci-archive:{}:v1",
                src.path().join("oci-archive.tar").display()
            ),
        ),
    ] {
        skopeo(&["copy", "--quiet", "--src-tls-verify=false", &from, &dest]);
        let repo = format!("put/from-{}", name.replace('.', "-"));
        put(
            src.path(),
            json!({"repository": registry.repo(&repo), "tag": "t"}),
            json!({"image": name}),
        )
        .json();
        assert_eq!(
            skopeo_config_digest(&registry, &repo, "t"),
            img.config_digest(),
            "{name}"
        );
    }
}

#[test]
fn a_layout_fetched_by_in_is_mounted_from_its_repository() {
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry);
    let img = image("mount", 100_000);
    let digest = registry.push("put/base", "v1", &img);
    let work = tempfile::tempdir().unwrap();
    run_step(
        "in",
        &[work.path().to_str().unwrap()],
        &json!({"source": {"repository": proxy.repo("put/base")},
                "version": {"tag": "v1", "digest": digest},
                "params": {"format": "oci-layout"}}),
    )
    .json();
    proxy.clear_log();
    let out = put(
        work.path(),
        json!({"repository": proxy.repo("put/promoted"), "tag": "prod"}),
        json!({"image": "oci"}),
    );
    assert_eq!(out.json()["version"]["digest"], digest.as_str());
    assert_eq!(proxy.count("POST", "mount="), 3, "{:?}", proxy.requests());
    assert_eq!(proxy.count("PATCH", "/blobs/uploads/"), 0);
}

#[test]
fn layout_errors_are_clear_and_push_nothing() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let img = image("broken", 10_000);
    let source = json!({"repository": registry.repo("put/broken"), "tag": "t"});

    let missing = src.path().join("missing");
    write_oci_layout(&missing, "latest", &img);
    let layer = img.layers[1].clone();
    std::fs::remove_file(
        missing
            .join("blobs/sha256")
            .join(&sha256(&layer)["sha256:".len()..]),
    )
    .unwrap();
    let out = put(src.path(), source.clone(), json!({"image": "missing"}));
    let line = out.error_line();
    assert!(
        line.contains("could not load image from path") && line.contains("missing blob"),
        "{line}"
    );

    let corrupt = src.path().join("corrupt");
    write_oci_layout(&corrupt, "latest", &img);
    let path = corrupt
        .join("blobs/sha256")
        .join(&sha256(&layer)["sha256:".len()..]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[700] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let out = put(src.path(), source.clone(), json!({"image": "corrupt"}));
    assert!(
        out.error_line().contains("does not match its digest"),
        "{}",
        out.stderr
    );

    std::fs::write(src.path().join("notatar"), "hello").unwrap();
    let out = put(src.path(), source, json!({"image": "notatar"}));
    assert!(
        out.error_line().contains("could not load image from path"),
        "{}",
        out.stderr
    );
    assert!(registry.tags("put/broken").is_empty());
}

/// (name, existing tags, variant, version, bump_aliases, pushed tags or error)
type BumpCase<'a> = (
    &'a str,
    &'a [&'a str],
    &'a str,
    &'a str,
    bool,
    Result<&'a [&'a str], &'a str>,
);

/// Spec §9.4 P1–P21: the tags a put pushes for each existing tag set.
#[test]
fn bump_aliases_table() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    write_docker_save(&src.path().join("image.tar"), &image("bump", 100), "x:y");
    let existing_image = TestImage::seeded("existing");
    #[rustfmt::skip]
    let cases: &[BumpCase] = &[
        ("p1", &[], "", "1.2.3", false, Ok(&["1.2.3"])),
        ("p2", &[], "ubuntu", "1.2.3", false, Ok(&["1.2.3-ubuntu"])),
        ("p3", &[], "", "hoogily-boogily", false, Err(r#"invalid semantic version: "hoogily-boogily""#)),
        ("p4", &[], "", "", false, Err("no tag specified")),
        ("p5", &[], "", "1.2.3", true, Ok(&["1.2.3", "1.2", "1", "latest"])),
        ("p6", &[], "", "1.2.3", true, Ok(&["1.2.3", "1.2", "1", "latest"])),
        ("p7", &[], "", "1.2.3-alpha.1", true, Ok(&["1.2.3-alpha.1"])),
        ("p8", &["1.2.2"], "", "1.2.3", true, Ok(&["1.2.3", "1.2", "1", "latest"])),
        ("p9", &["1.2.4"], "", "1.2.3", true, Ok(&["1.2.3"])),
        ("p10", &["1.3.0"], "", "1.2.3", true, Ok(&["1.2.3", "1.2"])),
        ("p11", &["2.0.0"], "", "1.2.3", true, Ok(&["1.2.3", "1.2", "1"])),
        ("p12", &["1.3.0"], "lts", "1.2.3", true, Ok(&["1.2.3-lts", "1.2-lts", "1-lts", "lts"])),
        ("p13", &["2.0.0-rc.1"], "", "1.2.3", true, Ok(&["1.2.3", "1.2", "1", "latest"])),
        ("p14", &["2.0.0-goodbye"], "hello", "1.2.3", true, Ok(&["1.2.3-hello", "1.2-hello", "1-hello", "hello"])),
        ("p15", &[], "hello", "1.2.3", true, Ok(&["1.2.3-hello", "1.2-hello", "1-hello", "hello"])),
        ("p16", &[], "hello", "1.2.3", true, Ok(&["1.2.3-hello", "1.2-hello", "1-hello", "hello"])),
        ("p17", &["2.0.0-hello"], "hello", "1.2.3", true, Ok(&["1.2.3-hello", "1.2-hello", "1-hello"])),
        ("p19", &["1.2.2-hello"], "hello", "1.2.3", true, Ok(&["1.2.3-hello", "1.2-hello", "1-hello", "hello"])),
        ("p20", &["1.2.4-hello"], "hello", "1.2.3", true, Ok(&["1.2.3-hello"])),
        ("p21", &["1.3.0-hello"], "hello", "1.2.3", true, Ok(&["1.2.3-hello", "1.2-hello"])),
    ];
    for (name, existing, variant, version, bump, expected) in cases {
        let repo = format!("put/{name}");
        if matches!(*name, "p6" | "p16") {
            // A repository that exists but has no tags: only a blob.
            registry.put_blob(&repo, b"not an image");
        }
        for tag in *existing {
            registry.push(&repo, tag, &existing_image);
        }
        let out = put(
            src.path(),
            json!({"repository": registry.repo(&repo), "variant": variant}),
            json!({"image": "image.tar", "version": version, "bump_aliases": bump}),
        );
        match expected {
            Ok(tags) => {
                let response = out.json();
                let digest = response["version"]["digest"].as_str().unwrap();
                assert_eq!(response["version"]["tag"], tags[0], "{name}");
                let mut pushed: Vec<String> = registry
                    .tags(&repo)
                    .into_iter()
                    .filter(|t| !existing.contains(&t.as_str()))
                    .collect();
                pushed.sort();
                let mut want: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
                want.sort();
                assert_eq!(pushed, want, "{name}");
                for tag in *tags {
                    assert_eq!(
                        registry.digest_of(&repo, tag).as_deref(),
                        Some(digest),
                        "{name} {tag}"
                    );
                }
            }
            Err(message) => {
                assert!(out.error_line().contains(message), "{name}: {}", out.stderr);
                assert!(registry.tags(&repo).is_empty(), "{name} pushed something");
            }
        }
    }
    // P18 repeats P17 in the original's source.
}

#[test]
fn build_metadata_in_a_version_is_refused() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    write_docker_save(&src.path().join("image.tar"), &image("meta", 100), "x:y");
    let out = put(
        src.path(),
        json!({"repository": registry.repo("put/meta")}),
        json!({"image": "image.tar", "version": "1.2.3+build.5"}),
    );
    assert!(
        out.error_line().contains("build metadata"),
        "{}",
        out.stderr
    );
    assert!(registry.tags("put/meta").is_empty());
}

const SMALL_CHUNKS: (&str, &str) = ("REGISTRY_IMAGE_UPLOAD_CHUNK_BYTES", "65536");

#[test]
fn a_connection_cut_mid_upload_resumes() {
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry);
    let src = tempfile::tempdir().unwrap();
    let img = image("cut", 400_000);
    write_oci_layout(&src.path().join("oci"), "latest", &img);
    let index_digest = sha256(&std::fs::read(src.path().join("oci/index.json")).unwrap());
    // With 64 KiB chunks the config and the small layer take one PATCH
    // each and the big layer seven: the fifth PATCH is the big layer's,
    // mid-blob. Its connection drops before the registry sees it: the
    // upload's status says where to go on from.
    proxy.inject(Some("PATCH"), "/blobs/uploads/", Fault::Pass, 4);
    proxy.inject(Some("PATCH"), "/blobs/uploads/", Fault::CutUpload(0), 1);
    let out = put_env(
        src.path(),
        &[SMALL_CHUNKS],
        json!({"repository": proxy.repo("put/cut"), "tag": "t", "debug": true}),
        json!({"image": "oci"}),
    );
    let response = out.json();
    assert_eq!(
        response["version"]["digest"],
        index_digest.as_str(),
        "{}",
        out.stderr
    );
    assert_eq!(proxy.pending_faults(), 0, "{}", out.stderr);
    assert!(
        proxy
            .requests()
            .iter()
            .any(|(m, p)| m == "GET" && p.contains("/blobs/uploads/")),
        "the upload status was asked: {:?}",
        proxy.requests()
    );
    // Cut with part of the body reaching the registry (which then holds
    // bytes the client never heard of).
    proxy.inject(Some("PATCH"), "/blobs/uploads/", Fault::Pass, 4);
    proxy.inject(Some("PATCH"), "/blobs/uploads/", Fault::CutUpload(1000), 1);
    let out = put_env(
        src.path(),
        &[SMALL_CHUNKS],
        json!({"repository": proxy.repo("put/cut-partial"), "tag": "t", "debug": true}),
        json!({"image": "oci"}),
    );
    assert_eq!(
        out.json()["version"]["digest"],
        index_digest.as_str(),
        "{}",
        out.stderr
    );
    assert_eq!(proxy.pending_faults(), 0);
    assert!(
        out.stderr.contains("starting it again"),
        "distribution drops an upload that grew behind the client's back: {}",
        out.stderr
    );
    // Both pull back intact.
    for repo in ["put/cut", "put/cut-partial"] {
        let dest = tempfile::tempdir().unwrap();
        run_step(
            "in",
            &[dest.path().to_str().unwrap()],
            &json!({"source": {"repository": registry.repo(repo)},
                    "version": {"tag": "t", "digest": index_digest}}),
        )
        .json();
        assert_eq!(
            std::fs::read(dest.path().join("rootfs/data.bin"))
                .unwrap()
                .len(),
            400_000
        );
    }
}

/// Every kind of upload `out` does, through `proxy` into `repo-*`: a
/// docker-save image (its layer 1 MB, so ~16 chunks of 64 KiB), a package
/// (a blob whose digest is known only once gzipped), an artifact, a copy
/// from the registry behind (blobs relayed: the proxy's registry is another
/// host), and cosign signatures. Each result is read back from the registry.
fn push_every_way(registry: &TestRegistry, proxy: &FaultProxy, repo: &str, envs: &[(&str, &str)]) {
    let src = tempfile::tempdir().unwrap();
    let img = image(repo, 1_000_000);
    write_docker_save(&src.path().join("image.tar"), &img, "x:y");
    let big = random_bytes(700_000, 7);
    std::fs::create_dir_all(src.path().join("app")).unwrap();
    std::fs::write(src.path().join("app/data.bin"), &big).unwrap();
    std::fs::write(src.path().join("notes.bin"), &big[..300_000]).unwrap();
    let key = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cosign/cosign_generated_encrypted_empty_private.key");
    std::fs::copy(key, src.path().join("cosign.key")).unwrap();
    let sign = json!({"key": "cosign.key"});
    let pushed = |name: &str, params: Value| -> String {
        let out = put_env(
            src.path(),
            envs,
            json!({"repository": proxy.repo(&format!("{repo}-{name}")), "tag": "t"}),
            params,
        );
        let digest = out.json()["version"]["digest"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {}", out.stderr))
            .to_owned();
        assert_eq!(
            registry
                .digest_of(&format!("{repo}-{name}"), "t")
                .as_deref(),
            Some(digest.as_str()),
            "{name}"
        );
        digest
    };
    pushed("image", json!({"image": "image.tar", "sign": sign}));
    assert_eq!(
        skopeo_config_digest(registry, &format!("{repo}-image"), "t"),
        img.config_digest()
    );
    pushed("package", json!({"package": {"path": "app"}, "sign": sign}));
    pushed(
        "artifact",
        json!({"artifact": {"files": ["notes.bin"], "artifact_type": "application/x-test"}}),
    );
    let origin = registry.push(&format!("{repo}-origin"), "o", &img);
    let copied = pushed(
        "copy",
        json!({"copy": {"from": format!("{}@{origin}", registry.repo(&format!("{repo}-origin")))}}),
    );
    assert_eq!(copied, origin);
    // Pulled back whole.
    let dest = tempfile::tempdir().unwrap();
    run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": {"repository": registry.repo(&format!("{repo}-package"))},
                "version": {"tag": "t", "digest": registry.digest_of(&format!("{repo}-package"), "t")}}),
    )
    .json();
    assert_eq!(
        std::fs::read(dest.path().join("rootfs/data.bin")).unwrap(),
        big
    );
}

#[test]
fn uploads_answered_as_ecr_does_work_on_every_path() {
    // ECR answers a chunk's PATCH with 201, and after the first PATCH of a
    // session its Range stays at the first chunk's end although every chunk
    // is stored: each alone, then both.
    let registry = TestRegistry::plain();
    for (created, stale) in [(true, false), (false, true), (true, true)] {
        let proxy = FaultProxy::start(&registry);
        proxy.answer_uploads_like_ecr(created, stale);
        let repo = format!("ecr-{created}-{stale}");
        push_every_way(&registry, &proxy, &repo, &[SMALL_CHUNKS]);
        let patches = proxy.count("PATCH", "/blobs/uploads/");
        assert!(patches > 30, "the blobs went in chunks: {patches} PATCHes");
        assert_eq!(
            proxy.count("PUT", "/blobs/uploads/"),
            proxy.count("POST", "/blobs/uploads/"),
            "one session per blob, none started over: {:?}",
            proxy.requests()
        );
    }
}

#[test]
fn a_cut_chunk_on_a_registry_with_a_stale_range_starts_over_instead_of_trusting_it() {
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry);
    proxy.answer_uploads_like_ecr(true, true);
    let src = tempfile::tempdir().unwrap();
    let img = image("ecr-cut", 400_000);
    write_docker_save(&src.path().join("image.tar"), &img, "x:y");
    // The fifth PATCH is mid-layer (see a_connection_cut_mid_upload_resumes):
    // cut after 1000 bytes reached the registry. The status then says the
    // first chunk's end, behind the chunk being sent: the blob starts over.
    proxy.inject(Some("PATCH"), "/blobs/uploads/", Fault::Pass, 4);
    proxy.inject(Some("PATCH"), "/blobs/uploads/", Fault::CutUpload(1000), 1);
    let out = put_env(
        src.path(),
        &[SMALL_CHUNKS],
        json!({"repository": proxy.repo("put/ecr-cut"), "tag": "t"}),
        json!({"image": "image.tar"}),
    );
    let digest = out.json()["version"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(proxy.pending_faults(), 0);
    assert!(out.stderr.contains("starting it again"), "{}", out.stderr);
    assert_eq!(
        registry.digest_of("put/ecr-cut", "t").as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(
        skopeo_config_digest(&registry, "put/ecr-cut", "t"),
        img.config_digest()
    );
}

#[test]
fn a_registry_refusing_chunks_gets_monolithic_puts() {
    // As Google Artifact Registry: no chunked uploads. The first PATCH is
    // refused with 405; from then on every blob is one PUT ?digest= with
    // its body, on every path (a package's layer, whose digest is known
    // only once gzipped, included).
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry);
    proxy.inject(
        Some("PATCH"),
        "/blobs/uploads/",
        Fault::Status(405, None),
        1000,
    );
    push_every_way(&registry, &proxy, "mono", &[SMALL_CHUNKS]);
    // Each step learns it once per upload under way when the refusal
    // came (up to four at once), and cancels refused sessions (best
    // effort: a cancel is not waited for beyond 5 s).
    let patches = proxy.count("PATCH", "/blobs/uploads/");
    assert!(
        (4..=16).contains(&patches),
        "chunks tried at most once per upload under way, per step: {patches}"
    );
    assert!(
        proxy.count("DELETE", "/blobs/uploads/") > 0,
        "refused sessions are cancelled"
    );
    assert!(
        proxy.count("PUT", "/blobs/uploads/") >= 10,
        "the blobs went in PUTs with their digest"
    );
    let (_, up) = proxy.bytes_moved();
    assert!(
        up > 2_000_000,
        "the blobs went up in PUT bodies: {up} bytes"
    );
}

#[test]
fn a_429_on_every_request_type_is_survived() {
    // O14
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry);
    let src = tempfile::tempdir().unwrap();
    write_docker_save(&src.path().join("image.tar"), &image("o14", 200_000), "x:y");
    let once =
        |method: &str, path: &str| proxy.inject(Some(method), path, Fault::Status(429, Some(0)), 1);
    once("GET", "/v2/");
    once("GET", "/tags/list");
    once("GET", "/manifests/");
    once("HEAD", "/blobs/");
    once("POST", "/blobs/uploads/");
    once("PATCH", "/blobs/uploads/");
    once("PUT", "/blobs/uploads/");
    once("PUT", "/manifests/");
    once("HEAD", "/manifests/");
    let out = put_env(
        src.path(),
        &[SMALL_CHUNKS],
        json!({"repository": proxy.repo("put/o14"), "tag": "t"}),
        json!({"image": "image.tar", "version": "1.0.0", "bump_aliases": true}),
    );
    out.json();
    assert_eq!(proxy.pending_faults(), 0, "{:?}", proxy.requests());
    assert_eq!(
        registry.tags("put/o14"),
        vec!["1", "1.0", "1.0.0", "latest", "t"]
    );
}

#[test]
fn manifest_puts_without_location_work() {
    // ECR answers manifest PUTs without `Location`; index children are
    // pushed by digest (where oci-client panics).
    let registry = TestRegistry::plain();
    let proxy = FaultProxy::start(&registry);
    let src = tempfile::tempdir().unwrap();
    let (a, b) = (image("loc-a", 100), image("loc-b", 100));
    let index_digest = write_index_layout(
        &src.path().join("layout"),
        &[(&a, "linux", "amd64"), (&b, "linux", "arm64")],
    );
    proxy.inject(Some("PUT"), "/manifests/", Fault::StripLocation, 10);
    let out = put(
        src.path(),
        json!({"repository": proxy.repo("put/noloc"), "tag": "t"}),
        json!({"image": "layout", "additional_tags": ""}),
    );
    assert_eq!(out.json()["version"]["digest"], index_digest.as_str());
    assert_eq!(
        proxy.pending_faults(),
        7,
        "three manifest PUTs had no Location"
    );
}

#[test]
fn tls_registry_needs_its_ca() {
    // O15, O16
    let registry = TestRegistry::tls();
    let src = tempfile::tempdir().unwrap();
    write_docker_save(&src.path().join("image.tar"), &image("tls", 1000), "x:y");
    let out = put(
        src.path(),
        json!({"repository": registry.repo("put/tls"), "tag": "t", "ca_certs": [registry.ca_pem()]}),
        json!({"image": "image.tar"}),
    );
    out.json();
    let out = put(
        src.path(),
        json!({"repository": registry.repo("put/tls2"), "tag": "t"}),
        json!({"image": "image.tar"}),
    );
    assert!(
        out.error_line().contains("pushing image failed")
            || out.error_line().contains("certificate"),
        "{}",
        out.stderr
    );
}

#[test]
fn token_auth_registry_push_and_cross_repository_mount() {
    let registry = TestRegistry::token("pusher", "s3cret-token-pw");
    let src = tempfile::tempdir().unwrap();
    let raw = image("token", 20_000).layers;
    let img = TestImage::from_blobs(
        raw.iter()
            .map(|l| (l.clone(), gzip(l), support::image::OCI_LAYER_GZIP))
            .collect(),
        json!({}),
        ("linux", "amd64"),
    );
    let digest = registry.push("put/token-base", "v1", &img);
    let work = tempfile::tempdir().unwrap();
    let source = |repo: &str| {
        json!({"repository": registry.repo(repo), "tag": "t",
               "username": "pusher", "password": "s3cret-token-pw"})
    };
    run_step(
        "in",
        &[work.path().to_str().unwrap()],
        &json!({"source": source("put/token-base"), "version": {"tag": "v1", "digest": digest},
                "params": {"format": "oci"}}),
    )
    .json();
    let mut debug = source("put/token-copy");
    debug["debug"] = json!(true);
    // `in` left a `repository` file next to image.tar: the blobs are
    // mounted from there, with a token for both repositories.
    let out = put(work.path(), debug, json!({"image": "image.tar"}));
    assert!(!out.stderr.contains("s3cret-token-pw") && !out.stdout.contains("s3cret-token-pw"));
    out.json();
    assert_eq!(
        out.stderr.matches(": mounted (").count(),
        3,
        "{}",
        out.stderr
    );
    assert_eq!(
        registry.digest_of("put/token-copy", "t").as_deref(),
        out.json()["version"]["digest"].as_str()
    );
    let _ = src;
    let wrong = put(
        work.path(),
        json!({"repository": registry.repo("put/token-copy"), "tag": "t",
               "username": "pusher", "password": "wrong-canary-pw"}),
        json!({"image": "image.tar"}),
    );
    assert!(!wrong.stderr.contains("wrong-canary-pw"));
    wrong.error_line();
}
