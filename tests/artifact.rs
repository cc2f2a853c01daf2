//! OCI artifacts: `out` with `params.artifact` pushes files (a VM disk and
//! its metadata), `in` with `format: artifact` writes them back, `check`
//! finds artifact tags, and the `oras` Python SDK (the interop referee)
//! pulls what we push and pushes what we fetch.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::{StepOutput, TestRegistry, run_step, run_step_env, versions};

const VM_TYPE: &str = "application/vnd.example.vm-image.v1";
const TITLE: &str = "org.opencontainers.image.title";

/// Runs `script` with the `oras` SDK in `dir`; its stdout.
fn oras(dir: &Path, script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import json, oras.client\nclient = oras.client.OrasClient(insecure=True)\n{script}"
        ))
        .current_dir(dir)
        .output()
        .expect("python3 runs (scripts/setup installs the oras SDK)");
    assert!(
        out.status.success(),
        "oras: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn push_artifact(src: &Path, repository: &str, tag: &str, artifact: Value) -> StepOutput {
    run_step_env(
        "out",
        &[src.to_str().unwrap()],
        // Small chunks: a multi-chunk upload, hashed on the way.
        &[("REGISTRY_IMAGE_UPLOAD_CHUNK_BYTES", "1048576")],
        &json!({"source": {"repository": repository, "tag": tag},
                "params": {"artifact": artifact}}),
    )
}

fn fetch_artifact(repository: &str, tag: &str, digest: &str, dest: &Path) -> StepOutput {
    run_step(
        "in",
        &[dest.to_str().unwrap()],
        &json!({"source": {"repository": repository},
                "version": {"tag": tag, "digest": digest},
                "params": {"format": "artifact"}}),
    )
}

/// A disk image (several upload chunks) and its metadata, with `mtime`.
fn make_vm(dir: &Path, mtime: i64) -> Vec<u8> {
    std::fs::create_dir_all(dir.join("disks")).unwrap();
    let mut disk = vec![0u8; 3 << 20];
    support::image::fill_random(&mut disk, &mut 7);
    std::fs::write(dir.join("disks/ubuntu.qcow2"), &disk).unwrap();
    std::fs::write(dir.join("README.txt"), "log in as ubuntu\n").unwrap();
    std::fs::write(
        dir.join("vm.json"),
        r#"{"name": "ubuntu", "memory": "2G", "cpus": 2}"#,
    )
    .unwrap();
    for name in ["disks/ubuntu.qcow2", "README.txt", "vm.json"] {
        let t = filetime::FileTime::from_unix_time(mtime, 0);
        filetime::set_file_times(dir.join(name), t, t).unwrap();
    }
    disk
}

#[test]
fn a_vm_image_round_trips_and_oras_pulls_it() {
    let registry = TestRegistry::plain();
    let repository = registry.repo("vms/ubuntu");
    let src = tempfile::tempdir().unwrap();
    let disk = make_vm(src.path(), 1);
    let artifact = json!({
        "files": ["disks/*.qcow2", "README.txt"],
        "artifact_type": VM_TYPE,
        "metadata": "vm.json",
        "annotations": {"org.opencontainers.image.source": "https://example.com/vms"},
    });
    let pushed = push_artifact(src.path(), &repository, "24.04", artifact.clone());
    let digest = pushed.json()["version"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        pushed
            .metadata()
            .contains(&("image".to_owned(), format!("{repository}@{digest}"))),
        "{:?}",
        pushed.metadata()
    );

    // The manifest, as the registry serves it.
    let (bytes, content_type) = registry.manifest("vms/ubuntu", "24.04");
    assert_eq!(content_type, "application/vnd.oci.image.manifest.v1+json");
    let typed = oci_spec::image::ImageManifest::from_reader(bytes.as_slice())
        .expect("a valid OCI image manifest, as oci-spec reads it");
    assert_eq!(
        typed
            .artifact_type()
            .as_ref()
            .map(|t| t.to_string())
            .as_deref(),
        Some(VM_TYPE)
    );
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(manifest["artifactType"], VM_TYPE);
    assert_eq!(
        manifest["config"]["mediaType"], VM_TYPE,
        "the metadata is the config"
    );
    let titles: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["annotations"][TITLE].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["ubuntu.qcow2", "README.txt"]);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/octet-stream"
    );
    assert_eq!(manifest["layers"][0]["size"], disk.len());
    assert_eq!(
        manifest["layers"][0]["digest"],
        support::image::sha256(&disk)
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.source"],
        "https://example.com/vms"
    );

    // The same files from another checkout (other mtimes): the same digest.
    let other = tempfile::tempdir().unwrap();
    make_vm(other.path(), 1_900_000_000);
    let again = push_artifact(other.path(), &registry.repo("vms/copy"), "24.04", artifact);
    assert_eq!(again.json()["version"]["digest"], digest.as_str());

    // check finds the artifact tag.
    let checked = run_step(
        "check",
        &[],
        &json!({"source": {"repository": repository, "tag": "24.04"}}),
    );
    assert_eq!(versions(&checked), [("24.04".to_owned(), digest.clone())]);

    // Our in writes the files, the metadata and the annotations.
    let dest = tempfile::tempdir().unwrap();
    let fetched = fetch_artifact(&repository, "24.04", &digest, dest.path());
    assert!(
        fetched
            .metadata()
            .contains(&("artifact_type".to_owned(), VM_TYPE.to_owned())),
        "{:?}",
        fetched.metadata()
    );
    assert_eq!(
        std::fs::read(dest.path().join("files/ubuntu.qcow2")).unwrap(),
        disk
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("files/README.txt")).unwrap(),
        "log in as ubuntu\n"
    );
    assert_eq!(
        std::fs::read(dest.path().join("metadata.json")).unwrap(),
        std::fs::read(src.path().join("vm.json")).unwrap(),
        "the config, byte for byte"
    );
    let annotations: Value =
        serde_json::from_slice(&std::fs::read(dest.path().join("annotations.json")).unwrap())
            .unwrap();
    assert_eq!(
        annotations,
        json!({"org.opencontainers.image.source": "https://example.com/vms"})
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("digest")).unwrap(),
        digest
    );

    // The referee pulls what we pushed.
    let pulled = tempfile::tempdir().unwrap();
    oras(
        pulled.path(),
        &format!(
            "client.pull(target={:?}, outdir='out')",
            format!("{repository}:24.04")
        ),
    );
    assert_eq!(
        std::fs::read(pulled.path().join("out/ubuntu.qcow2")).unwrap(),
        disk
    );
    assert!(pulled.path().join("out/README.txt").exists());
}

#[test]
fn what_oras_pushes_we_fetch_and_check_lists() {
    let registry = TestRegistry::plain();
    let repository = registry.repo("oras/vm");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("disk.raw"), vec![5u8; 300_000]).unwrap();
    std::fs::write(work.path().join("metadata.json"), r#"{"os": "debian"}"#).unwrap();
    for tag in ["1.0.0", "1.2.0", "not-semver"] {
        oras(
            work.path(),
            &format!(
                "client.push(target={:?}, files=['disk.raw', 'metadata.json:application/json'], \
                 manifest_annotations={{'build': '{tag}'}})",
                format!("{repository}:{tag}")
            ),
        );
    }
    // Semver check over artifact tags, oldest first.
    let checked = run_step("check", &[], &json!({"source": {"repository": repository}}));
    let tags: Vec<String> = versions(&checked).into_iter().map(|(t, _)| t).collect();
    assert_eq!(tags, ["1.0.0", "1.2.0"]);
    let checked = run_step(
        "check",
        &[],
        &json!({"source": {"repository": repository, "tag_regex": "^not-"}}),
    );
    let (tag, digest) = versions(&checked).remove(0);
    assert_eq!(tag, "not-semver");

    let dest = tempfile::tempdir().unwrap();
    let fetched = fetch_artifact(&repository, &tag, &digest, dest.path());
    assert!(fetched.success, "{}", fetched.stderr);
    assert_eq!(
        std::fs::read(dest.path().join("files/disk.raw")).unwrap(),
        vec![5u8; 300_000]
    );
    // oras-py's metadata file is a titled layer; its config is `{}`.
    assert_eq!(
        std::fs::read_to_string(dest.path().join("files/metadata.json")).unwrap(),
        r#"{"os": "debian"}"#
    );
    let annotations: Value =
        serde_json::from_slice(&std::fs::read(dest.path().join("annotations.json")).unwrap())
            .unwrap();
    assert_eq!(annotations["build"], "not-semver");
}

#[test]
fn a_container_image_fetched_as_an_artifact_gives_its_blobs() {
    let registry = TestRegistry::plain();
    let image = support::image::TestImage::seeded("artifact-view");
    let digest = registry.push("img/plain", "latest", &image);
    let dest = tempfile::tempdir().unwrap();
    let fetched = fetch_artifact(&registry.repo("img/plain"), "latest", &digest, dest.path());
    assert!(fetched.success, "{}", fetched.stderr);
    let (bytes, _) = registry.manifest("img/plain", "latest");
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let name = layer["digest"].as_str().unwrap().replacen(':', "-", 1);
        let data = std::fs::read(dest.path().join("files").join(&name)).unwrap();
        assert_eq!(
            support::image::sha256(&data),
            layer["digest"].as_str().unwrap()
        );
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(dest.path().join("metadata.json")).unwrap()).unwrap();
    assert!(config["rootfs"].is_object(), "{config}");
}

/// An artifact pushed by hand with `layers` (titles and blobs of ours).
fn push_raw_artifact(registry: &TestRegistry, repo: &str, layers: &[(&str, &[u8])]) -> String {
    let empty = registry.put_blob(repo, b"{}");
    let layers: Vec<Value> = layers
        .iter()
        .map(|(title, data)| {
            let digest = registry.put_blob(repo, data);
            json!({"mediaType": "application/octet-stream", "digest": digest, "size": data.len(),
                   "annotations": {TITLE: title}})
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": VM_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": layers,
    });
    registry.put_manifest(
        repo,
        "latest",
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    )
}

#[test]
fn hostile_titles_and_corrupt_blobs_leave_nothing_behind() {
    let registry = TestRegistry::plain();
    for (i, title) in ["../escape", "/etc/passwd", "a/b", ".."].iter().enumerate() {
        let repo = format!("hostile/t{i}");
        let digest = push_raw_artifact(&registry, &repo, &[("ok.txt", b"fine"), (title, b"evil")]);
        let dest = tempfile::tempdir().unwrap();
        let inner = dest.path().join("dest");
        std::fs::create_dir(&inner).unwrap();
        let fetched = fetch_artifact(&registry.repo(&repo), "latest", &digest, &inner);
        let line = fetched.error_line();
        assert!(line.contains("not a plain file name"), "{title}: {line}");
        let left: Vec<_> = std::fs::read_dir(dest.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["dest"], "{title}: nothing next to the destination");
        assert_eq!(
            std::fs::read_dir(&inner).unwrap().count(),
            0,
            "{title}: nothing written"
        );
    }

    // A blob whose stored bytes no longer match its digest.
    let digest = push_raw_artifact(&registry, "hostile/corrupt", &[("disk.raw", &[1u8; 4096])]);
    let blob = registry.blob_path(&support::image::sha256(&[1u8; 4096]));
    std::fs::write(&blob, [2u8; 4096]).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let fetched = fetch_artifact(
        &registry.repo("hostile/corrupt"),
        "latest",
        &digest,
        dest.path(),
    );
    let line = fetched.error_line();
    assert!(line.contains("digest"), "{line}");
    assert!(!dest.path().join("files").exists());
    assert!(
        std::fs::read_dir(dest.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("files")),
        "no partial files directory"
    );
}

#[test]
fn bad_artifact_params_fail_with_one_line_and_push_nothing() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    make_vm(src.path(), 1);
    std::fs::write(src.path().join("bad.json"), "{oops").unwrap();
    let cases = [
        (
            json!({"files": ["README.txt"]}),
            "artifact_type is required",
        ),
        (
            json!({"files": ["README.txt"], "artifact_type": "not a type"}),
            "is not a media type",
        ),
        (
            json!({"files": ["missing.*"], "artifact_type": VM_TYPE}),
            "no files match glob",
        ),
        (
            json!({"files": ["disks"], "artifact_type": VM_TYPE}),
            "not a regular file",
        ),
        (
            json!({"files": ["README.txt"], "artifact_type": VM_TYPE, "metadata": "bad.json"}),
            "is not JSON",
        ),
        (
            json!({"artifact_type": VM_TYPE, "paths": []}),
            "unknown field",
        ),
    ];
    for (artifact, expected) in cases {
        let out = push_artifact(
            src.path(),
            &registry.repo("bad/art"),
            "latest",
            artifact.clone(),
        );
        let line = out.error_line();
        assert!(line.contains(expected), "{artifact}: {line}");
    }
    let both = run_step(
        "out",
        &[src.path().to_str().unwrap()],
        &json!({"source": {"repository": registry.repo("bad/art"), "tag": "latest"},
                "params": {"image": "x", "artifact": {"files": ["README.txt"], "artifact_type": VM_TYPE}}}),
    );
    assert!(
        both.error_line().contains("cannot be combined"),
        "{}",
        both.stderr
    );
    assert_eq!(registry.digest_of("bad/art", "latest"), None);
}

#[test]
fn an_index_is_refused_as_an_artifact() {
    let registry = TestRegistry::plain();
    let image = support::image::TestImage::seeded("in-an-index");
    registry.push("idx/app", &image.digest(), &image);
    let index = support::image::index(&[(&image, "linux", "amd64")]);
    let digest = registry.put_manifest("idx/app", "latest", support::image::OCI_INDEX, &index);
    let dest = tempfile::tempdir().unwrap();
    let fetched = fetch_artifact(&registry.repo("idx/app"), "latest", &digest, dest.path());
    let line = fetched.error_line();
    assert!(line.contains("is an index"), "{line}");
    assert!(line.contains("oci-layout"), "{line}");
    assert!(!dest.path().join("files").exists());
}

#[test]
fn an_artifact_of_metadata_alone_round_trips() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("release.json"), r#"{"version": "1.2.3"}"#).unwrap();
    let repository = registry.repo("meta/only");
    let pushed = push_artifact(
        src.path(),
        &repository,
        "1.2.3",
        json!({"artifact_type": "application/vnd.example.release.v1", "metadata": "release.json"}),
    );
    let digest = pushed.json()["version"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let manifest: Value =
        serde_json::from_slice(&registry.manifest("meta/only", "1.2.3").0).unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"], "application/vnd.oci.empty.v1+json",
        "no files: the empty descriptor as the one layer"
    );
    let dest = tempfile::tempdir().unwrap();
    let fetched = fetch_artifact(&repository, "1.2.3", &digest, dest.path());
    assert!(fetched.success, "{}", fetched.stderr);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("metadata.json")).unwrap(),
        r#"{"version": "1.2.3"}"#
    );
    assert_eq!(
        std::fs::read_dir(dest.path().join("files"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_config_that_fails_its_digest_leaves_no_files_behind() {
    // The registry behind a proxy that serves other bytes for the config:
    // `in` fails, and nothing of the artifact (not `files/`, not the
    // metadata) is in the destination.
    let registry = TestRegistry::plain();
    let proxy = support::proxy::FaultProxy::start(&registry);
    let src = tempfile::tempdir().unwrap();
    make_vm(src.path(), 1);
    let artifact =
        json!({"files": ["README.txt"], "artifact_type": VM_TYPE, "metadata": "vm.json"});
    let pushed = push_artifact(src.path(), &registry.repo("vms/bad-config"), "t", artifact);
    let digest = pushed.json()["version"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let (bytes, _) = registry.manifest("vms/bad-config", "t");
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    proxy.inject(
        Some("GET"),
        &format!("/blobs/{config}"),
        support::proxy::Fault::Json(std::sync::Arc::new(br#"{"name": "forged"}"#.to_vec())),
        100,
    );
    let dest = tempfile::tempdir().unwrap();
    let out = fetch_artifact(&proxy.repo("vms/bad-config"), "t", &digest, dest.path());
    let line = out.error_line();
    assert!(line.contains("fetching the artifact's config"), "{line}");
    let left: Vec<String> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.iter().any(|n| n == "files" || n == "metadata.json"),
        "left behind: {left:?}"
    );
}
