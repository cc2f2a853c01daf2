//! The crane-style command line, each verb against the test registries;
//! `cp` checked with skopeo's view of the result.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::image::{Entry, OCI_INDEX, TestImage, index, sha256, tar};
use support::{StepOutput, TestRegistry};

fn cli(args: &[&str]) -> StepOutput {
    cli_stdin(args, b"")
}

fn cli_stdin(args: &[&str], stdin: &[u8]) -> StepOutput {
    support::run_program(Path::new(env!("CARGO_BIN_EXE_registry-image")), args, stdin)
}

fn ok(out: StepOutput) -> String {
    assert!(out.success, "failed: {}", out.stderr);
    out.stdout
}

fn image(arch: &str) -> TestImage {
    TestImage::new(
        vec![tar(&[Entry::file("arch", arch)])],
        json!({}),
        ("linux", arch),
    )
}

/// `app:1.0` (an amd64 + arm64 index) and `app:2.0` (one image); the
/// index's digest and the arm64 image.
fn seed(registry: &TestRegistry) -> (String, TestImage) {
    let (amd, arm) = (image("amd64"), image("arm64"));
    registry.push("team/app", &amd.digest(), &amd);
    registry.push("team/app", &arm.digest(), &arm);
    let digest = registry.put_manifest(
        "team/app",
        "1.0",
        OCI_INDEX,
        &index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]),
    );
    registry.push("team/app", "2.0", &TestImage::seeded("two"));
    (digest, arm)
}

#[test]
fn reading_verbs_show_what_the_registry_serves() {
    let registry = TestRegistry::plain();
    let (digest, arm) = seed(&registry);
    let repo = registry.repo("team/app");

    let mut tags: Vec<String> = ok(cli(&["ls", &repo])).lines().map(str::to_owned).collect();
    tags.sort();
    assert!(
        tags.contains(&"1.0".to_owned()) && tags.contains(&"2.0".to_owned()),
        "{tags:?}"
    );

    assert_eq!(ok(cli(&["digest", &format!("{repo}:1.0")])).trim(), digest);

    let manifest = ok(cli(&["manifest", &format!("{repo}:1.0")]));
    assert_eq!(
        sha256(manifest.as_bytes()),
        digest,
        "the index's exact bytes"
    );
    let child = ok(cli(&[
        "manifest",
        &format!("{repo}:1.0"),
        "--platform",
        "linux/arm64",
    ]));
    assert_eq!(sha256(child.as_bytes()), arm.digest());

    let config: Value = serde_json::from_str(&ok(cli(&[
        "config",
        &format!("{repo}@{digest}"),
        "--platform",
        "linux/arm64",
    ])))
    .unwrap();
    assert_eq!(config["architecture"], "arm64");

    // A blob, verified; a corrupted one fails with one line.
    let layer = sha256(&arm.layers[0]);
    let blob = cli(&["blob", &format!("{repo}@{layer}")]);
    assert!(blob.success, "{}", blob.stderr);
    assert_eq!(blob.stdout.as_bytes(), arm.layers[0].as_slice());
    std::fs::write(registry.blob_path(&layer), vec![b'x'; arm.layers[0].len()]).unwrap();
    let corrupt = cli(&["blob", &format!("{repo}@{layer}")]);
    assert!(!corrupt.success);
    assert!(
        corrupt
            .stderr
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("error: "),
        "{}",
        corrupt.stderr
    );

    let repositories = ok(cli(&["catalog", &registry.host()]));
    assert!(
        repositories.lines().any(|l| l == "team/app"),
        "{repositories}"
    );

    let missing = cli(&["digest", &format!("{repo}:nope")]);
    assert!(!missing.success);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
}

#[test]
fn cp_tag_and_rm_change_the_registry() {
    let registry = TestRegistry::plain();
    let (digest, _) = seed(&registry);
    let repo = registry.repo("team/app");

    // cp: the whole index by digest, the tag taken from the source.
    let copied = ok(cli(&[
        "cp",
        &format!("{repo}:1.0"),
        &registry.repo("prod/app"),
    ]));
    assert_eq!(copied.trim(), digest);
    assert_eq!(registry.digest_of("prod/app", "1.0"), Some(digest.clone()));
    let theirs = support::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/prod/app:1.0", registry.host()),
    ]);
    assert_eq!(sha256(&theirs), digest, "skopeo reads the same index");

    // cp to another registry, with credentials from stdin.
    let other = TestRegistry::basic("ci", "pa55word");
    let crossed = cli_stdin(
        &[
            "cp",
            &format!("{repo}@{digest}"),
            &other.repo("mirror/app:stable"),
            "--username",
            "ci",
            "--password-stdin",
        ],
        b"pa55word\n",
    );
    // One set of credentials serves both ends here: the origin is
    // anonymous-readable, the destination needs them.
    assert_eq!(ok(crossed).trim(), digest);
    assert_eq!(
        other.digest_of("mirror/app", "stable"),
        Some(digest.clone())
    );

    // tag: more names, same digest.
    ok(cli(&["tag", &format!("{repo}:1.0"), "stable", "blue"]));
    assert_eq!(
        registry.digest_of("team/app", "stable"),
        Some(digest.clone())
    );
    assert_eq!(registry.digest_of("team/app", "blue"), Some(digest.clone()));

    // rm: this registry deletes manifests only.
    let refused = cli(&["rm", &format!("{repo}:stable")]);
    assert!(!refused.success);
    assert!(refused.stderr.contains("--manifest"), "{}", refused.stderr);
    let removed = ok(cli(&["rm", &format!("{repo}:stable"), "--manifest"]));
    assert_eq!(removed.trim(), digest);
    assert_eq!(
        registry.digest_of("team/app", "1.0"),
        None,
        "every tag on it went"
    );
    let two = registry.digest_of("team/app", "2.0").unwrap();
    ok(cli(&["rm", &format!("{repo}@{two}")]));
    assert_eq!(registry.digest_of("team/app", "2.0"), None);
}

#[test]
fn every_verb_has_help_with_an_example() {
    for verb in [
        "ls", "digest", "manifest", "config", "blob", "cp", "tag", "rm", "catalog", "verify",
    ] {
        let help = ok(cli(&[verb, "--help"]));
        assert!(help.contains("Example:"), "{verb}: {help}");
    }
    let bad = cli(&["manifest", "example.org/a:1", "--platform", "linux"]);
    assert!(!bad.success);
    assert!(bad.stderr.contains("os/architecture"), "{}", bad.stderr);
}

#[test]
fn a_blob_that_fails_its_digest_is_never_delivered_whole() {
    let registry = TestRegistry::plain();
    let proxy = support::proxy::FaultProxy::start(&registry);
    let mut data = vec![0u8; 300_000];
    support::image::fill_random(&mut data, &mut 11);
    let layer = support::image::gzip(&tar(&[Entry::file("data.bin", &data)]));
    let digest = registry.put_blob("team/blob", &layer);
    let reference = format!("{}@{digest}", proxy.repo("team/blob"));

    // stdout's raw bytes (StepOutput decodes them as text).
    let raw_stdout = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_registry-image"))
            .args(args)
            .env_clear()
            .output()
            .unwrap()
    };
    // Verified: stdout gets every byte; -o writes the file.
    let verified = raw_stdout(&["blob", &reference]);
    assert!(verified.status.success());
    assert_eq!(verified.stdout, layer);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("layer.tar.gz");
    ok(cli(&["blob", &reference, "-o", file.to_str().unwrap()]));
    assert_eq!(std::fs::read(&file).unwrap(), layer);
    std::fs::remove_file(&file).unwrap();

    // The same length with one byte changed, however often it is asked.
    let mut forged = layer.clone();
    forged[layer.len() / 2] ^= 1;
    proxy.inject(
        Some("GET"),
        &format!("/blobs/{digest}"),
        support::proxy::Fault::Json(std::sync::Arc::new(forged)),
        1000,
    );
    let out = raw_stdout(&["blob", &reference]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    // The last buffer was held back: the forged blob never arrives whole.
    assert!(
        out.stdout.len() < layer.len(),
        "{} of {} bytes delivered",
        out.stdout.len(),
        layer.len()
    );
    let out = cli(&["blob", &reference, "-o", file.to_str().unwrap()]);
    assert!(!out.success);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}

#[test]
fn a_failing_verb_prints_one_error_line_and_nothing_else() {
    let registry = TestRegistry::plain();
    registry.push("team/app", "2.0", &TestImage::seeded("one-line"));
    let repo = registry.repo("team/app");
    for args in [
        vec!["rm".to_owned(), format!("{repo}:missing")],
        vec!["digest".to_owned(), format!("{repo}:missing")],
        vec!["tag".to_owned(), format!("{repo}:missing"), "x".to_owned()],
        vec![
            "blob".to_owned(),
            format!("{repo}@sha256:{}", "0".repeat(64)),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cli(&args);
        assert!(!out.success, "{args:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {:?}", out.stderr);
        assert!(
            out.stderr.starts_with("error: "),
            "{args:?}: {:?}",
            out.stderr
        );
        assert!(
            out.stderr.contains("not found"),
            "{args:?}: {:?}",
            out.stderr
        );
    }
    // With --debug the log is there too, and the error line still last.
    let out = cli(&["rm", &format!("{repo}:missing"), "--debug"]);
    assert!(out.stderr.lines().count() > 1, "{}", out.stderr);
    assert!(out.stderr.lines().last().unwrap().starts_with("error: "));
}
