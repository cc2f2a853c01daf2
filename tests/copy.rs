//! `out` with `params.copy`: promotion by digest. Same registry: blobs are
//! mounted, nothing downloaded. Across registries (basic auth → TLS):
//! blobs relayed. A whole index keeps every platform and its digest; with
//! `referrers: true`, signatures come along. skopeo reads the result.

mod support;

use serde_json::{Value, json};
use support::image::{OCI_INDEX, TestImage, index};
use support::{StepOutput, TestRegistry, run_step};

/// A two-platform index in `repo:tag` of `registry`; its digest.
fn push_index(registry: &TestRegistry, repo: &str, tag: &str) -> String {
    let image = |arch: &str| {
        use support::image::{Entry, tar};
        let layer = tar(&[Entry::file("seed", format!("{repo}-{arch}"))]);
        TestImage::new(vec![layer], json!({}), ("linux", arch))
    };
    let (amd, arm) = (image("amd64"), image("arm64"));
    registry.push(repo, &amd.digest(), &amd);
    registry.push(repo, &arm.digest(), &arm);
    let index = index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    registry.put_manifest(repo, tag, OCI_INDEX, &index)
}

fn copy(destination: Value, params: Value, dir: &std::path::Path) -> StepOutput {
    run_step(
        "out",
        &[dir.to_str().unwrap()],
        &json!({"source": destination, "params": params}),
    )
}

fn skopeo_raw(host: &str, reference: &str) -> Vec<u8> {
    support::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{host}/{reference}"),
    ])
}

#[test]
fn same_registry_promotion_mounts_every_blob_and_keeps_the_index() {
    let registry = TestRegistry::plain();
    let digest = push_index(&registry, "staging/app", "rc");
    let dir = tempfile::tempdir().unwrap();
    let out = copy(
        json!({"repository": registry.repo("prod/app"), "tag": "latest", "debug": true}),
        json!({"copy": {"from": format!("{}@{digest}", registry.repo("staging/app"))},
               "version": "1.0.0"}),
        dir.path(),
    );
    let response = out.json();
    assert_eq!(
        response["version"],
        json!({"tag": "latest", "digest": digest})
    );
    assert!(
        out.metadata().contains(&(
            "image".to_owned(),
            format!("{}@{digest}", registry.repo("prod/app"))
        )),
        "{:?}",
        out.metadata()
    );
    assert!(out.stderr.contains("mounted"), "{}", out.stderr);
    assert!(
        !out.stderr.contains(": uploaded"),
        "nothing uploaded: {}",
        out.stderr
    );
    for tag in ["latest", "1.0.0"] {
        assert_eq!(registry.digest_of("prod/app", tag), Some(digest.clone()));
    }
    // skopeo sees the same index bytes and both platforms' images.
    assert_eq!(
        skopeo_raw(&registry.host(), "prod/app:latest"),
        skopeo_raw(&registry.host(), "staging/app:rc")
    );
    for platform in ["amd64", "arm64"] {
        let config = support::skopeo(&[
            "inspect",
            "--config",
            "--tls-verify=false",
            &format!("--override-arch={platform}"),
            &format!("docker://{}/prod/app:latest", registry.host()),
        ]);
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["architecture"], platform);
    }
}

#[test]
fn cross_registry_promotion_relays_blobs_from_a_get_output() {
    let origin = TestRegistry::basic("stage", "stage-pass");
    let destination = TestRegistry::tls();
    let digest = push_index(&origin, "team/app", "candidate");
    // A get of the origin (no download) names what to promote.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("candidate")).unwrap();
    let got = run_step(
        "in",
        &[dir.path().join("candidate").to_str().unwrap()],
        &json!({"source": {"repository": origin.repo("team/app"),
                           "username": "stage", "password": "stage-pass"},
                "version": {"tag": "candidate", "digest": digest},
                "params": {"skip_download": true}}),
    );
    assert!(got.success, "{}", got.stderr);
    let out = copy(
        json!({"repository": destination.repo("prod/app"), "tag": "stable", "debug": true,
               "ca_certs": [destination.ca_pem()]}),
        json!({"copy": {"from_dir": "candidate",
                        "source": {"username": "stage", "password": "stage-pass"}}}),
        dir.path(),
    );
    assert_eq!(out.json()["version"]["digest"], digest.as_str());
    assert!(out.stderr.contains("uploaded"), "{}", out.stderr);
    assert!(!out.stderr.contains("stage-pass"), "no secret printed");
    assert_eq!(
        destination.digest_of("prod/app", "stable"),
        Some(digest.clone())
    );
    let raw = skopeo_raw(&destination.host(), "prod/app:stable");
    assert_eq!(support::image::sha256(&raw), digest);

    // Wrong origin credentials: one line, nothing tagged.
    let refused = copy(
        json!({"repository": destination.repo("prod/other"), "tag": "stable",
               "ca_certs": [destination.ca_pem()]}),
        json!({"copy": {"from": format!("{}@{digest}", origin.repo("team/app")),
                        "source": {"username": "stage", "password": "wrong"}}}),
        dir.path(),
    );
    let line = refused.error_line();
    assert!(line.contains("team/app"), "{line}");
    assert!(!refused.stderr.contains("wrong"), "{}", refused.stderr);
    assert_eq!(destination.digest_of("prod/other", "stable"), None);
}

/// A signature-like artifact whose subject is `subject` (digest, size).
fn push_signature(registry: &TestRegistry, repo: &str, subject: (&str, usize)) -> (String, Value) {
    let empty = registry.put_blob(repo, b"{}");
    let payload = registry.put_blob(repo, format!("signed {}", subject.0).as_bytes());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": payload,
                    "size": format!("signed {}", subject.0).len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": subject.0, "size": subject.1},
    });
    let bytes = manifest.to_string();
    let digest = support::image::sha256(bytes.as_bytes());
    registry.put_manifest(
        repo,
        &digest,
        "application/vnd.oci.image.manifest.v1+json",
        bytes.as_bytes(),
    );
    let descriptor = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": digest, "size": bytes.len(),
                            "artifactType": "application/vnd.example.signature.v1"});
    (digest, descriptor)
}

#[test]
fn referrers_and_legacy_signature_tags_come_along_when_asked() {
    let registry = TestRegistry::plain();
    let image = TestImage::seeded("signed");
    let digest = registry.push("staging/signed", "rc", &image);
    let (signature, descriptor) =
        push_signature(&registry, "staging/signed", (&digest, image.manifest.len()));
    // The registry has no referrers API: the fallback tag lists it, as
    // oras and cosign write it.
    let fallback = format!("sha256-{}", &digest["sha256:".len()..]);
    let fallback_index =
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]});
    registry.put_manifest(
        "staging/signed",
        &fallback,
        OCI_INDEX,
        fallback_index.to_string().as_bytes(),
    );
    // cosign's legacy tag.
    let legacy = TestImage::seeded("cosign-signature");
    let legacy_digest = registry.push("staging/signed", &format!("{fallback}.sig"), &legacy);

    let dir = tempfile::tempdir().unwrap();
    let from = format!("{}@{digest}", registry.repo("staging/signed"));
    let without = copy(
        json!({"repository": registry.repo("prod/plain"), "tag": "latest"}),
        json!({"copy": {"from": from}}),
        dir.path(),
    );
    assert!(without.success, "{}", without.stderr);
    assert_eq!(
        registry.tags("prod/plain"),
        ["latest"],
        "no referrers unless asked"
    );

    let with = copy(
        json!({"repository": registry.repo("prod/signed"), "tag": "latest"}),
        json!({"copy": {"from": from, "referrers": true}}),
        dir.path(),
    );
    assert!(with.success, "{}", with.stderr);
    assert_eq!(
        registry.digest_of("prod/signed", &signature),
        Some(signature.clone())
    );
    let (bytes, _) = registry.manifest("prod/signed", &fallback);
    let copied_index: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(copied_index["manifests"][0]["digest"], signature.as_str());
    assert_eq!(
        copied_index["manifests"][0]["artifactType"],
        "application/vnd.example.signature.v1"
    );
    assert_eq!(
        registry.digest_of("prod/signed", &format!("{fallback}.sig")),
        Some(legacy_digest)
    );
    // skopeo reads the copied signature's payload layer.
    let raw = skopeo_raw(&registry.host(), &format!("prod/signed@{signature}"));
    assert_eq!(support::image::sha256(&raw), signature);
}

#[test]
fn bad_copy_params_fail_with_one_line_and_tag_nothing() {
    let registry = TestRegistry::plain();
    let digest = registry.push("staging/x", "rc", &TestImage::seeded("x"));
    let missing = format!("sha256:{}", "0".repeat(64));
    let dir = tempfile::tempdir().unwrap();
    let repo = registry.repo("staging/x");
    let cases = [
        (json!({"copy": {}}), "needs from"),
        (
            json!({"copy": {"from": format!("{repo}:rc")}}),
            "names no digest",
        ),
        (
            json!({"copy": {"from": format!("{repo}@{digest}"), "from_dir": "x"}}),
            "cannot both be set",
        ),
        (
            json!({"copy": {"from": format!("{repo}@{missing}")}}),
            "not found",
        ),
        (
            json!({"copy": {"from": format!("{repo}@{digest}")}, "image": "x"}),
            "cannot be combined",
        ),
        (
            json!({"copy": {"from": format!("{repo}@{digest}"),
                            "source": {"repository": "other/repo"}}}),
            "name the origin in params.copy.from",
        ),
    ];
    for (params, expected) in cases {
        let out = copy(
            json!({"repository": registry.repo("prod/x"), "tag": "latest"}),
            params.clone(),
            dir.path(),
        );
        let line = out.error_line();
        assert!(line.contains(expected), "{params}: {line}");
    }
    assert_eq!(registry.digest_of("prod/x", "latest"), None);
}

#[test]
fn a_relay_cut_on_both_sides_resumes_and_keeps_the_digest() {
    use support::proxy::{Fault, FaultProxy};
    let origin = TestRegistry::plain();
    let destination = TestRegistry::plain();
    let big = support::image::random_bytes(6 << 20, 42);
    let image = TestImage::new(
        vec![support::image::tar(&[support::image::Entry::file(
            "big", &big,
        )])],
        json!({}),
        ("linux", "amd64"),
    );
    let digest = origin.push("team/big", "rc", &image);
    let layer = support::image::sha256(&image.layers[0]);
    let (from_proxy, to_proxy) = (FaultProxy::start(&origin), FaultProxy::start(&destination));
    // The origin's layer cut 1 MiB in; the destination's first chunk cut.
    from_proxy.inject(
        Some("GET"),
        &format!("/blobs/{layer}"),
        Fault::DropAfter(1 << 20),
        1,
    );
    to_proxy.inject(
        Some("PATCH"),
        "/blobs/uploads/",
        Fault::CutUpload(1 << 20),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let out = copy(
        json!({"repository": to_proxy.repo("prod/big"), "tag": "latest"}),
        json!({"copy": {"from": format!("{}@{digest}", from_proxy.repo("team/big"))}}),
        dir.path(),
    );
    assert_eq!(
        out.json()["version"]["digest"],
        digest.as_str(),
        "{}",
        out.stderr
    );
    assert_eq!(from_proxy.pending_faults(), 0, "the download was cut");
    assert_eq!(to_proxy.pending_faults(), 0, "the upload was cut");
    assert_eq!(destination.digest_of("prod/big", "latest"), Some(digest));
}

/// An index of `children` (digest, size) OCI manifests or indexes.
fn index_of(children: &[(String, usize, &str)]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(digest, size, media_type)| json!({"mediaType": media_type, "digest": digest, "size": size}))
        .collect();
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
        .unwrap()
}

#[test]
fn a_hostile_origin_is_refused_within_bounds_and_nothing_is_tagged() {
    use support::proxy::{Fault, FaultProxy};
    let registry = TestRegistry::plain();
    let dir = tempfile::tempdir().unwrap();
    let destination = json!({"repository": registry.repo("prod/app"), "tag": "release"});
    let from = |reference: &str| format!("{}@{reference}", registry.repo("evil/app"));

    // Indexes nested ten deep (the walk stops past eight).
    let image = TestImage::seeded("nested");
    let mut digest = registry.push("evil/app", "base", &image);
    let (mut size, mut media_type) = (image.manifest.len(), image.manifest_media_type.clone());
    for _ in 0..10 {
        let index = index_of(&[(digest, size, &media_type)]);
        digest = registry.put_manifest(
            "evil/app",
            &support::image::sha256(&index),
            OCI_INDEX,
            &index,
        );
        (size, media_type) = (index.len(), OCI_INDEX.to_owned());
    }
    let out = copy(
        destination.clone(),
        json!({"copy": {"from": from(&digest)}}),
        dir.path(),
    );
    assert!(
        out.error_line().contains("nested too deep"),
        "{}",
        out.error_line()
    );

    // An index of 1,001 distinct manifests (the walk stops at 1,000).
    let config = registry.put_blob("evil/app", b"{}");
    let mut children = Vec::new();
    for i in 0..1001 {
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": config},
            "layers": [], "annotations": {"n": i.to_string()},
        }))
        .unwrap();
        let digest = support::image::sha256(&manifest);
        registry.put_manifest(
            "evil/app",
            &digest,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        );
        children.push((
            digest,
            manifest.len(),
            "application/vnd.oci.image.manifest.v1+json",
        ));
    }
    let wide = index_of(&children);
    let wide_digest = registry.put_manifest("evil/app", "wide", OCI_INDEX, &wide);
    let out = copy(
        destination.clone(),
        json!({"copy": {"from": from(&wide_digest)}}),
        dir.path(),
    );
    assert!(
        out.error_line().contains("more than 1000 manifests"),
        "{}",
        out.error_line()
    );

    // A referrers fallback index that is not JSON, then one of 20 MiB.
    let signed = registry.push("evil/app", "signed", &TestImage::seeded("signed"));
    let proxy = FaultProxy::start(&registry);
    let fallback = signed.replacen(':', "-", 1);
    let via_proxy = format!("{}@{signed}", proxy.repo("evil/app"));
    proxy.inject(
        Some("GET"),
        &format!("/manifests/{fallback}"),
        Fault::Json(std::sync::Arc::new(b"<html>".to_vec())),
        1,
    );
    let params = json!({"copy": {"from": via_proxy, "referrers": true}});
    let out = copy(destination.clone(), params.clone(), dir.path());
    assert!(
        out.error_line().contains("not JSON"),
        "{}",
        out.error_line()
    );
    proxy.inject(
        Some("GET"),
        &format!("/manifests/{fallback}"),
        Fault::Flood(200, 20 << 20),
        1,
    );
    let out = copy(destination.clone(), params, dir.path());
    let line = out.error_line();
    assert!(line.contains(&fallback), "{line}");
    assert!(
        registry.tags("prod/app").is_empty(),
        "a refused copy tagged something"
    );
}
