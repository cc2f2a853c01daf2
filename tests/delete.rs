//! `out` with `params.delete` on the CNCF registry with deletes enabled:
//! it deletes only by digest (by tag it answers 400), so a tag alone is
//! refused unless `manifests: true`, which deletes the manifest and every
//! tag on it, and says so.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::image::TestImage;
use support::{StepOutput, TestRegistry, run_step};

fn delete(registry: &TestRegistry, repo: &str, src: &Path, params: Value) -> StepOutput {
    run_step(
        "out",
        &[src.to_str().unwrap()],
        &json!({"source": {"repository": registry.repo(repo), "tag": "latest"},
                "params": {"delete": params}}),
    )
}

#[test]
fn a_tag_alone_is_refused_where_the_registry_deletes_only_manifests() {
    let registry = TestRegistry::plain();
    let digest = registry.push("app/preview", "pr-1", &TestImage::seeded("one"));
    registry.put_manifest(
        "app/preview",
        "keep",
        "application/vnd.oci.image.manifest.v1+json",
        &registry.manifest("app/preview", "pr-1").0,
    );
    let src = tempfile::tempdir().unwrap();
    let out = delete(
        &registry,
        "app/preview",
        src.path(),
        json!({"tags": ["pr-1"]}),
    );
    let line = out.error_line();
    assert!(line.contains("does not delete tag pr-1 alone"), "{line}");
    assert!(line.contains("manifests: true"), "{line}");
    assert!(line.contains(&digest), "{line}");
    assert_eq!(
        registry.tags("app/preview"),
        ["keep", "pr-1"],
        "nothing deleted"
    );
}

#[test]
fn manifests_true_deletes_the_manifest_and_says_which_tags_went() {
    let registry = TestRegistry::plain();
    let shared = registry.push("app/preview", "pr-1", &TestImage::seeded("one"));
    let (bytes, media_type) = registry.manifest("app/preview", "pr-1");
    registry.put_manifest("app/preview", "pr-1-alias", &media_type, &bytes);
    let other = registry.push("app/preview", "pr-2", &TestImage::seeded("two"));
    let third = registry.push("app/preview", "pr-3", &TestImage::seeded("three"));

    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("tags"), "pr-3\npr-404\n").unwrap();
    let out = delete(
        &registry,
        "app/preview",
        src.path(),
        json!({"tags": ["pr-1"], "tags_file": "tags", "manifests": true}),
    );
    let response = out.json();
    assert_eq!(
        response["version"],
        json!({"tag": "pr-1", "digest": shared}),
        "the version is the first deleted digest"
    );
    let metadata = out.metadata();
    assert!(
        metadata.contains(&("deleted".to_owned(), format!("pr-1@{shared} pr-3@{third}"))),
        "{metadata:?}"
    );
    assert!(
        metadata.contains(&("not_found".to_owned(), "pr-404".to_owned())),
        "{metadata:?}"
    );
    assert!(
        out.stderr.contains("removes every tag on it"),
        "{}",
        out.stderr
    );
    assert_eq!(registry.tags("app/preview"), ["pr-2"]);
    assert_eq!(registry.digest_of("app/preview", &shared), None);
    assert_eq!(registry.digest_of("app/preview", "pr-2"), Some(other));

    // Again: every tag is gone, which is not an error.
    let again = delete(
        &registry,
        "app/preview",
        src.path(),
        json!({"tags": ["pr-1"], "manifests": true}),
    );
    assert_eq!(
        again.json()["version"],
        json!({"tag": "pr-1", "digest": ""})
    );
}

#[test]
fn deleting_works_on_a_token_registry_and_prints_no_secret() {
    let registry = TestRegistry::token("ci", "s3cret");
    let digest = registry.push("app/tok", "old", &TestImage::seeded("tok"));
    let src = tempfile::tempdir().unwrap();
    let out = run_step(
        "out",
        &[src.path().to_str().unwrap()],
        &json!({"source": {"repository": registry.repo("app/tok"),
                           "username": "ci", "password": "s3cret"},
                "params": {"delete": {"tags": ["old"], "manifests": true}}}),
    );
    assert_eq!(out.json()["version"]["digest"], digest.as_str());
    assert!(!out.stderr.contains("s3cret"));
    assert_eq!(registry.digest_of("app/tok", "old"), None);
}

#[test]
fn bad_delete_params_fail_with_one_line() {
    let registry = TestRegistry::plain();
    registry.push("app/bad", "v1", &TestImage::seeded("bad"));
    let src = tempfile::tempdir().unwrap();
    let cases = [
        (json!({"delete": {}}), "names no tag"),
        (json!({"delete": {"tags": ["a/b"]}}), "tag \"a/b\""),
        (json!({"delete": {"tags_file": "missing"}}), "tags_file"),
        (
            json!({"delete": {"tags": ["v1"]}, "version": "1.0.0"}),
            "cannot be combined with params.version",
        ),
        (
            json!({"delete": {"tags": ["v1"]}, "image": "x"}),
            "cannot be combined",
        ),
        (json!({"delete": {"tag": "v1"}}), "unknown field"),
    ];
    for (params, expected) in cases {
        let out = run_step(
            "out",
            &[src.path().to_str().unwrap()],
            &json!({"source": {"repository": registry.repo("app/bad"), "tag": "latest"},
                    "params": params}),
        );
        let line = out.error_line();
        assert!(line.contains(expected), "{params}: {line}");
    }
    assert_eq!(registry.tags("app/bad"), ["v1"]);
}
