//! `params.annotations` (issue: build provenance on push): the map lands
//! on the pushed top manifest (an image's manifest, a multi-platform
//! push's index), values expanded from the build variables Concourse sets
//! for a `put`; skopeo, a tool nobody here wrote, reads them back from the
//! registry. Bad maps fail in one line and push nothing.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::cosign_peer::peer_keys;
use support::image::{
    Entry, TestImage, tar, write_docker_save, write_index_layout, write_oci_layout,
};
use support::{StepOutput, TestRegistry, run_step_env, skopeo};

/// What Concourse sets for a put (the subset the tests name).
const BUILD_ENV: &[(&str, &str)] = &[
    ("ATC_EXTERNAL_URL", "https://ci.example.com"),
    ("BUILD_TEAM_NAME", "main"),
    ("BUILD_PIPELINE_NAME", "app"),
    ("BUILD_JOB_NAME", "build"),
    ("BUILD_NAME", "42"),
    ("BUILD_URL", "https://ci.example.com/builds/1234"),
];

fn image(seed: &str, arch: &str) -> TestImage {
    let layer = tar(&[Entry::file("etc/seed", format!("{seed} {arch}"))]);
    TestImage::new(vec![layer], json!({"Env": ["A=1"]}), ("linux", arch))
}

fn annotations() -> Value {
    json!({
        "org.opencontainers.image.source": "$ATC_EXTERNAL_URL/teams/$BUILD_TEAM_NAME/pipelines/${BUILD_PIPELINE_NAME}",
        "org.opencontainers.image.url": "$BUILD_URL",
        "com.example.build": "${BUILD_JOB_NAME} #$BUILD_NAME costs $$0",
    })
}

fn expected() -> Value {
    json!({
        "org.opencontainers.image.source": "https://ci.example.com/teams/main/pipelines/app",
        "org.opencontainers.image.url": "https://ci.example.com/builds/1234",
        "com.example.build": "build #42 costs $0",
    })
}

fn put(dir: &Path, source: Value, params: Value) -> StepOutput {
    run_step_env(
        "out",
        &[dir.to_str().unwrap()],
        BUILD_ENV,
        &json!({"source": source, "params": params}),
    )
}

/// The annotations skopeo reads from the registry's manifest for `reference`.
fn served_annotations(registry: &TestRegistry, reference: &str) -> Value {
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", registry.repo(reference)),
    ]);
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    manifest["annotations"].clone()
}

#[test]
fn annotations_land_on_the_top_manifest_of_every_push() {
    let registry = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let source = |repo: &str| json!({"repository": registry.repo(repo), "tag": "latest"});

    // An OCI layout of one image: its manifest is annotated, so its digest
    // is not the layout's.
    let single = image("single", "amd64");
    write_oci_layout(&work.path().join("single"), "latest", &single);
    let out = put(
        work.path(),
        source("p/single"),
        json!({"image": "single", "annotations": annotations()}),
    );
    let digest = out.json()["version"]["digest"].as_str().unwrap().to_owned();
    assert_ne!(digest, single.digest());
    assert_eq!(served_annotations(&registry, "p/single:latest"), expected());

    // A multi-platform layout: the index is annotated; its children are
    // the layout's own, untouched.
    let (amd64, arm64) = (image("multi", "amd64"), image("multi", "arm64"));
    let index = write_index_layout(
        &work.path().join("multi"),
        &[(&amd64, "linux", "amd64"), (&arm64, "linux", "arm64")],
    );
    let out = put(
        work.path(),
        source("p/multi"),
        json!({"image": "multi", "annotations": annotations()}),
    );
    let digest = out.json()["version"]["digest"].as_str().unwrap().to_owned();
    assert_ne!(digest, index);
    assert_eq!(served_annotations(&registry, "p/multi:latest"), expected());
    let (bytes, _) = registry.manifest("p/multi", "latest");
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    let children: Vec<&str> = served["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(children, [amd64.digest(), arm64.digest()]);

    // A docker-save tarball, signed: the signature is over the annotated
    // digest, and `check` with the key finds it.
    write_docker_save(
        &work.path().join("image.tar"),
        &image("saved", "amd64"),
        "x:y",
    );
    let (_keys_dir, keys) = peer_keys();
    let key = |name: &str| std::fs::read_to_string(keys.join(name)).unwrap();
    let out = put(
        work.path(),
        source("p/saved"),
        json!({"image": "image.tar", "annotations": annotations(),
               "sign": {"key": key("ec.key")}}),
    );
    let digest = out.json()["version"]["digest"].clone();
    assert_eq!(served_annotations(&registry, "p/saved:latest"), expected());
    let mut verified = source("p/saved");
    verified["cosign_public_key"] = json!(key("ec.pub"));
    let checked = run_step_env(
        "check",
        &[work.path().to_str().unwrap()],
        &[],
        &json!({ "source": verified }),
    );
    assert_eq!(checked.json()[0]["digest"], digest);

    // `in` shows them with annotation_regex.
    let dest = tempfile::tempdir().unwrap();
    let mut shown = source("p/single");
    shown["annotation_regex"] = json!("^org\\.opencontainers");
    let got = run_step_env(
        "in",
        &[dest.path().to_str().unwrap()],
        &[],
        &json!({"source": shown, "version": {"tag": "latest", "digest": served_digest(&registry, "p/single")}}),
    );
    let metadata = got.metadata();
    assert!(
        metadata.contains(&(
            "org.opencontainers.image.url".to_owned(),
            "https://ci.example.com/builds/1234".to_owned()
        )),
        "{metadata:?} {}",
        got.stderr
    );
}

fn served_digest(registry: &TestRegistry, repo: &str) -> String {
    registry.digest_of(repo, "latest").unwrap()
}

#[test]
fn bad_annotations_fail_in_one_line_and_push_nothing() {
    let registry = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    write_oci_layout(
        &work.path().join("layout"),
        "latest",
        &image("bad", "amd64"),
    );
    let origin = registry.push("p/origin", "latest", &image("origin", "amd64"));
    let source = json!({"repository": registry.repo("p/bad"), "tag": "latest"});
    for (params, says) in [
        (
            json!({"image": "layout", "annotations": {"a": "$HOME"}}),
            "params.annotations.a: $HOME is not a build variable",
        ),
        (
            json!({"image": "layout", "annotations": {"a": "${BUILD_ID}"}}),
            "params.annotations.a: $BUILD_ID is not set",
        ),
        (
            json!({"image": "layout", "annotations": {"a": 5}}),
            "params.annotations",
        ),
        (
            json!({"copy": {"from": format!("{}@{origin}", registry.repo("p/origin"))},
                   "annotations": {"a": "b"}}),
            "a copy keeps its origin's digest",
        ),
    ] {
        let out = put(work.path(), source.clone(), params);
        let line = out.error_line();
        assert!(line.contains(says), "{says}: {line}");
    }
    assert!(registry.tags("p/bad").is_empty());
}
