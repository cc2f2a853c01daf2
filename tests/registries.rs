//! The registries users have, beyond distribution on a filesystem: here,
//! distribution with its S3 storage driver (moto as the S3), whose blob
//! GETs answer 307 with presigned URLs to another host, as Docker Hub, ECR,
//! GAR and GHCR do (shared/reference/registry-quirks.md §1.1). Every step
//! runs through those redirects; the storage host is a recording proxy, so
//! the tests assert that no credential of ours ever reaches it, and it
//! cuts and refuses downloads as real storage does.
//!
//! And the OCI 1.1 referrers API, which no registry installable here serves:
//! the referrer paths (signing in bundle form, `check` with a key, a copy
//! with its referrers) run against the proxy's stand-in of the API (paged by
//! `Link`) and against a registry without it (the fallback tag), in one
//! matrix.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::cosign_peer::peer_keys;
use support::image::{Entry, TestImage, tar, write_docker_save, write_oci_layout};
use support::proxy::{Fault, FaultProxy};
use support::s3::S3Storage;
use support::{Auth, StepOutput, TestRegistry, run_program, run_step};

const USER: &str = "s3-user";
const PASSWORD: &str = "s3-password-canary";

fn source(registry: &TestRegistry, repo: &str) -> Value {
    json!({"repository": registry.repo(repo), "tag": "latest",
           "username": USER, "password": PASSWORD})
}

fn step(name: &str, dir: &Path, request: Value) -> StepOutput {
    run_step(name, &[dir.to_str().unwrap()], &request)
}

/// The digest a successful `out` reports.
fn pushed(dir: &Path, request: Value) -> String {
    step("out", dir, request).json()["version"]["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A registry on S3 with basic auth.
fn s3_registry(storage: &S3Storage) -> TestRegistry {
    TestRegistry::on_s3(
        Auth::Basic {
            username: USER.into(),
            password: PASSWORD.into(),
        },
        storage,
    )
}

/// What reached the storage host: presigned downloads only, none of them
/// with our credentials (the registry's own S3 calls are AWS-signed).
fn assert_storage_saw_no_credentials(storage: &S3Storage) {
    for (method, path, scheme) in storage.proxy.authorized() {
        assert_eq!(
            scheme, "AWS4-HMAC-SHA256",
            "{method} {path} reached the storage host with our {scheme} credentials"
        );
        assert!(
            !path.contains("X-Amz-Signature="),
            "a presigned download carried Authorization: {method} {path}"
        );
    }
}

fn image(seed: &str, bytes: usize) -> TestImage {
    let data = support::image::random_bytes(bytes, seed.len() as u64 + 7);
    let layer = tar(&[
        Entry::file("etc/seed", seed),
        Entry::file("data.bin", &data),
    ]);
    TestImage::new(vec![layer], json!({"Env": ["SEED=1"]}), ("linux", "amd64"))
}

#[test]
fn every_step_works_through_storage_redirects_and_no_credential_reaches_storage() {
    let storage = S3Storage::start();
    let registry = s3_registry(&storage);
    let work = tempfile::tempdir().unwrap();

    // out: a docker-save tarball and an OCI layout.
    let img = image("s3-docker-save", 600_000);
    write_docker_save(&work.path().join("image.tar"), &img, "app:latest");
    let digest = pushed(
        work.path(),
        json!({"source": source(&registry, "s3/app"), "params": {"image": "image.tar"}}),
    );
    let layout_img = image("s3-layout", 300_000);
    write_oci_layout(&work.path().join("layout"), "latest", &layout_img);
    step(
        "out",
        work.path(),
        json!({"source": source(&registry, "s3/layout"), "params": {"image": "layout"}}),
    )
    .json();

    // check.
    let checked = step(
        "check",
        work.path(),
        json!({"source": source(&registry, "s3/app")}),
    )
    .json();
    assert_eq!(checked[0]["digest"], digest, "{checked}");

    // in, every image format, each blob through a presigned URL.
    for format in ["rootfs", "oci", "oci-layout"] {
        let dest = tempfile::tempdir().unwrap();
        let before = storage.presigned_gets().len();
        let got = step(
            "in",
            dest.path(),
            json!({"source": source(&registry, "s3/app"),
                   "version": {"tag": "latest", "digest": digest},
                   "params": {"format": format}}),
        );
        assert!(got.success, "{format}: {}", got.stderr);
        assert!(
            storage.presigned_gets().len() > before,
            "{format}: no download went through the storage host"
        );
        match format {
            "rootfs" => assert_eq!(
                std::fs::read(dest.path().join("rootfs/etc/seed")).unwrap(),
                b"s3-docker-save"
            ),
            "oci" => assert!(dest.path().join("image.tar").is_file()),
            _ => assert!(dest.path().join("oci/index.json").is_file()),
        }
    }

    // A copy to another registry: every blob relayed from the storage URLs.
    let plain = TestRegistry::plain();
    let before = storage.presigned_gets().len();
    let copied = step(
        "out",
        work.path(),
        json!({"source": {"repository": plain.repo("copied/app"), "tag": "latest"},
               "params": {"copy": {"from": format!("{}@{digest}", registry.repo("s3/app")),
                                   "source": {"username": USER, "password": PASSWORD}}}}),
    );
    assert_eq!(copied.json()["version"]["digest"], digest);
    assert!(storage.presigned_gets().len() >= before + 2);
    assert_eq!(
        plain.digest_of("copied/app", "latest"),
        Some(digest.clone())
    );

    // An artifact, pushed and fetched.
    std::fs::write(work.path().join("disk.img"), vec![3u8; 200_000]).unwrap();
    let artifact_digest = pushed(
        work.path(),
        json!({"source": source(&registry, "s3/artifact"),
               "params": {"artifact": {"files": ["disk.img"],
                                       "artifact_type": "application/vnd.example.disk"}}}),
    );
    let dest = tempfile::tempdir().unwrap();
    let fetched = step(
        "in",
        dest.path(),
        json!({"source": source(&registry, "s3/artifact"),
               "version": {"tag": "latest", "digest": artifact_digest},
               "params": {"format": "artifact"}}),
    );
    assert!(fetched.success, "{}", fetched.stderr);
    assert_eq!(
        std::fs::read(dest.path().join("files/disk.img")).unwrap(),
        vec![3u8; 200_000]
    );

    // The command line's blob verb.
    let (manifest, _) = registry.manifest("s3/app", "latest");
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let blob = run_program(
        Path::new(env!("CARGO_BIN_EXE_registry-image")),
        &[
            "blob",
            "--username",
            USER,
            "--password-stdin",
            &format!("{}@{layer}", registry.repo("s3/app")),
            "-o",
            work.path().join("layer.out").to_str().unwrap(),
        ],
        PASSWORD.as_bytes(),
    );
    assert!(blob.success, "{}", blob.stderr);
    assert_eq!(
        support::image::sha256(&std::fs::read(work.path().join("layer.out")).unwrap()),
        layer
    );

    assert!(!storage.presigned_gets().is_empty());
    assert_storage_saw_no_credentials(&storage);
}

#[test]
fn a_download_cut_at_the_storage_host_resumes_and_a_refused_url_is_renewed() {
    let storage = S3Storage::start();
    let registry = s3_registry(&storage);
    let work = tempfile::tempdir().unwrap();
    let img = image("s3-resume", 3 << 20);
    write_oci_layout(&work.path().join("layout"), "latest", &img);
    let digest = pushed(
        work.path(),
        json!({"source": source(&registry, "s3/resume"), "params": {"image": "layout"}}),
    );
    let layer = support::image::sha256(&img.layers[0]);
    let hex = layer.trim_start_matches("sha256:");
    // A proxy in front of the registry counts its blob GETs (it passes the
    // redirects on).
    let front = FaultProxy::start(&registry);
    let presigned = format!("{hex}/data?X-Amz-");
    let layer_gets = || {
        let registry_gets = front.count("GET", &format!("/blobs/{layer}"));
        let storage_gets = storage
            .presigned_gets()
            .into_iter()
            .filter(|(_, path)| path.contains(hex))
            .count();
        (registry_gets, storage_gets)
    };
    let get = |expect_in_log: &[&str]| {
        let dest = tempfile::tempdir().unwrap();
        let got = step(
            "in",
            dest.path(),
            json!({"source": source(&registry, "s3/resume").as_object().cloned().map(|mut s| {
                       s.insert("repository".into(), front.repo("s3/resume").into());
                       Value::Object(s)
                   }).unwrap(),
                   "version": {"tag": "latest", "digest": digest}}),
        );
        assert!(got.success, "{}", got.stderr);
        for part in expect_in_log {
            assert!(got.stderr.contains(part), "{part}: {}", got.stderr);
        }
        assert_eq!(
            std::fs::read(dest.path().join("rootfs/etc/seed")).unwrap(),
            b"s3-resume"
        );
        assert_eq!(storage.proxy.pending_faults(), 0);
    };
    // Cut after 1 MB at the storage host: the rest comes from the same
    // storage URL, still valid (one registry trip, two storage GETs).
    storage
        .proxy
        .inject(Some("GET"), &presigned, Fault::DropAfter(1_000_000), 1);
    get(&["resuming"]);
    assert_eq!(layer_gets(), (1, 2));
    // Cut, then the storage URL refused as an expired presigned URL is
    // (403): the registry is asked for a fresh one, which serves the rest
    // with a Range (two registry trips, three storage GETs).
    storage
        .proxy
        .inject(Some("GET"), &presigned, Fault::DropAfter(1_000_000), 1);
    storage
        .proxy
        .inject(Some("GET"), &presigned, Fault::Status(403, None), 1);
    get(&["resuming", "fresh URL"]);
    assert_eq!(layer_gets(), (1 + 2, 2 + 3));
    assert_storage_saw_no_credentials(&storage);
}

/// How the registry lists a manifest's referrers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Referrers {
    /// No referrers API (distribution 2.8): the `sha256-<hex>` fallback tag.
    FallbackTag,
    /// The OCI 1.1 API (the proxy's stand-in), this many a page.
    Api { page_size: usize },
}

#[test]
fn referrer_paths_work_with_the_referrers_api_and_without_it() {
    let (_keys, keys) = peer_keys();
    let key = |name: &str| std::fs::read_to_string(keys.join(name)).unwrap();
    for mode in [Referrers::FallbackTag, Referrers::Api { page_size: 1 }] {
        let registry = TestRegistry::plain();
        let proxy = FaultProxy::start(&registry);
        if let Referrers::Api { page_size } = mode {
            proxy.serve_referrers(registry.storage_root(), page_size);
        }
        let work = tempfile::tempdir().unwrap();
        write_oci_layout(
            &work.path().join("layout"),
            "latest",
            &image("referred", 1000),
        );
        // Two sigstore bundles (referrers of the image): one per key.
        for private in ["ec.key", "ed.key"] {
            let out = step(
                "out",
                work.path(),
                json!({"source": {"repository": proxy.repo("ref/app"), "tag": "latest"},
                       "params": {"image": "layout",
                                  "sign": {"key": key(private), "format": "bundle"}}}),
            );
            assert!(out.success, "{mode:?}: {}", out.stderr);
        }
        let digest = registry.digest_of("ref/app", "latest").unwrap();
        let fallback = digest.replacen(':', "-", 1);
        // `check` finds either bundle: with one a page, one of them is
        // only on the second page.
        let signed = |repo: &str| {
            for public in ["ec.pub", "ed.pub"] {
                let versions = step(
                    "check",
                    work.path(),
                    json!({"source": {"repository": proxy.repo(repo), "tag": "latest",
                                      "cosign_public_key": key(public)}}),
                )
                .json();
                assert_eq!(versions[0]["digest"], digest, "{mode:?} {repo} {public}");
            }
        };
        signed("ref/app");
        // A copy with its referrers: both bundles come along.
        let copied = step(
            "out",
            work.path(),
            json!({"source": {"repository": proxy.repo("ref/copy"), "tag": "latest"},
                   "params": {"copy": {"from": format!("{}@{digest}", proxy.repo("ref/app")),
                                       "referrers": true}}}),
        );
        assert!(copied.success, "{mode:?}: {}", copied.stderr);
        signed("ref/copy");
        // The fallback tag exists only where there is no API.
        for repo in ["ref/app", "ref/copy"] {
            let tags = registry.tags(repo);
            assert_eq!(
                tags.contains(&fallback),
                mode == Referrers::FallbackTag,
                "{mode:?} {repo}: {tags:?}"
            );
        }
        let second_pages = proxy
            .requests()
            .iter()
            .filter(|(_, path)| path.contains("/referrers/") && path.contains("page=1"))
            .count();
        match mode {
            Referrers::FallbackTag => assert_eq!(second_pages, 0),
            Referrers::Api { .. } => assert!(second_pages > 0, "{:?}", proxy.requests()),
        }
    }
}

#[test]
fn an_ipv6_literal_registry_works_in_every_field_that_takes_a_reference() {
    let registry = TestRegistry::plain_ipv6();
    let host = registry.host();
    assert!(host.starts_with("[::1]:"), "{host}");
    let work = tempfile::tempdir().unwrap();
    let img = image("ipv6", 2000);
    write_oci_layout(&work.path().join("layout"), "latest", &img);
    let plain = |repo: &str| json!({"repository": registry.repo(repo), "tag": "latest"});
    // source.repository: out, check, in.
    let digest = pushed(
        work.path(),
        json!({"source": plain("v6/app"), "params": {"image": "layout", "version": "1.0.0"}}),
    );
    let versions = step("check", work.path(), json!({"source": plain("v6/app")})).json();
    assert_eq!(versions[0]["digest"], digest);
    let dest = tempfile::tempdir().unwrap();
    let got = step(
        "in",
        dest.path(),
        json!({"source": plain("v6/app"), "version": {"tag": "latest", "digest": digest}}),
    );
    assert!(got.success, "{}", got.stderr);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("repository")).unwrap(),
        registry.repo("v6/app")
    );
    // params.copy.from (same registry: mounted), and from_dir (the files
    // `in` just wrote).
    let copied = pushed(
        work.path(),
        json!({"source": plain("v6/copy"),
               "params": {"copy": {"from": format!("{}@{digest}", registry.repo("v6/app"))}}}),
    );
    assert_eq!(copied, digest);
    std::fs::rename(dest.path(), work.path().join("got")).unwrap();
    let from_dir = pushed(
        work.path(),
        json!({"source": plain("v6/from-dir"), "params": {"copy": {"from_dir": "got"}}}),
    );
    assert_eq!(from_dir, digest);
    // The command line's references.
    let cli =
        |args: &[&str]| run_program(Path::new(env!("CARGO_BIN_EXE_registry-image")), args, b"");
    let resolved = cli(&["digest", &format!("{}:1.0.0", registry.repo("v6/app"))]);
    assert!(resolved.success, "{}", resolved.stderr);
    assert_eq!(resolved.stdout.trim(), digest);
    let tagged = cli(&[
        "cp",
        &format!("{}@{digest}", registry.repo("v6/app")),
        &format!("{}:cli", registry.repo("v6/cli")),
    ]);
    assert!(tagged.success, "{}", tagged.stderr);
    assert_eq!(registry.digest_of("v6/cli", "cli"), Some(digest.clone()));

    // A token realm on an IPv6 literal: out and check with credentials.
    let tokened = TestRegistry::token_ipv6(USER, PASSWORD);
    let realm = tokened.token_server.as_ref().unwrap().realm();
    assert!(realm.starts_with("http://[::1]:"), "{realm}");
    let source = json!({"repository": tokened.repo("v6/tokened"), "tag": "latest",
                        "username": USER, "password": PASSWORD});
    let digest = pushed(
        work.path(),
        json!({"source": source, "params": {"image": "layout"}}),
    );
    let versions = step("check", work.path(), json!({ "source": source })).json();
    assert_eq!(versions[0]["digest"], digest);
    assert!(tokened.token_server.as_ref().unwrap().request_count() >= 2);
}
