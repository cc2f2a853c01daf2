//! cosign signatures, key-based, against the real registry: `out` with
//! `params.sign` signs what it pushed (the `.sig` tag form and the bundle
//! referrer form), `check` reports only digests signed with
//! `source.cosign_public_key`, and `in` refuses the others before reading
//! any layer. The other side of every exchange is an independent peer
//! (`tests/cosign_peer.py`: Python `cryptography` and PyNaCl following
//! cosign's documented formats) and a key made by cosign itself (published
//! by sigstore-rs, see `tests/data/cosign/README.md`).

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::cosign_peer::{peer, peer_keys};
use support::image::{TestImage, sha256, write_index_layout, write_oci_layout};
use support::proxy::FaultProxy;
use support::signatures::{
    BUNDLE, SIG_ANNOTATION, SIG_LAYER, payload, push_bundle_referrer, push_sig_layers, sig_tag,
};
use support::{StepOutput, TestRegistry, run_step, run_step_env, versions};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Stores a `.sig` manifest holding `layers` of (payload, base64 signature).
fn push_sig(registry: &TestRegistry, repo: &str, digest: &str, layers: &[(Vec<u8>, String)]) {
    let layers: Vec<(Vec<u8>, Value)> = layers
        .iter()
        .map(|(payload, signature)| (payload.clone(), json!({SIG_ANNOTATION: signature})))
        .collect();
    push_sig_layers(registry, repo, digest, &layers);
}

/// The peer's signature of `bytes` with `key`.
fn peer_sign(key: &Path, bytes: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    peer(&["sign", key.to_str().unwrap(), file.path().to_str().unwrap()])
        .expect("sign")
        .trim()
        .to_owned()
}

/// Whether the peer accepts `signature` of `bytes` under `public`.
fn peer_verifies(public: &Path, bytes: &[u8], signature: &str) -> bool {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    peer(&[
        "verify",
        public.to_str().unwrap(),
        file.path().to_str().unwrap(),
        signature,
    ])
    .is_some()
}

/// Signs `digest` the way cosign does, with the peer and `key`.
fn peer_signs_tag(registry: &TestRegistry, repo: &str, digest: &str, key: &Path) {
    let payload = payload(&registry.repo(repo), digest);
    let signature = peer_sign(key, &payload);
    push_sig(registry, repo, digest, &[(payload, signature)]);
}

/// Pushes the peer's bundle for `digest` as a referrer.
fn peer_signs_bundle(registry: &TestRegistry, repo: &str, digest: &str, key: &Path) {
    let bundle = peer(&["bundle", key.to_str().unwrap(), digest]).expect("bundle");
    push_bundle_referrer(registry, repo, digest, bundle.trim().as_bytes());
}

fn check(repository: &str, extra: Value) -> StepOutput {
    let mut source = json!({"repository": repository});
    source
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    run_step("check", &[], &json!({"source": source}))
}

fn get(repository: &str, public: &str, tag: &str, digest: &str, dest: &Path) -> StepOutput {
    run_step(
        "in",
        &[dest.to_str().unwrap()],
        &json!({"source": {"repository": repository, "cosign_public_key": public},
                "version": {"tag": tag, "digest": digest}}),
    )
}

fn put(src: &Path, envs: &[(&str, &str)], source: Value, params: Value) -> StepOutput {
    run_step_env(
        "out",
        &[src.to_str().unwrap()],
        envs,
        &json!({"source": source, "params": params}),
    )
}

/// The `.sig` layers of `digest`: (payload, signature).
fn sig_layers(registry: &TestRegistry, repo: &str, digest: &str) -> Vec<(Vec<u8>, String)> {
    let (bytes, _) = registry.manifest(repo, &sig_tag(digest));
    // oci-spec, the ecosystem's model, is the referee of what we write.
    oci_spec::image::ImageManifest::from_reader(bytes.as_slice()).expect("a valid OCI manifest");
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            assert_eq!(layer["mediaType"], SIG_LAYER);
            let blob =
                std::fs::read(registry.blob_path(layer["digest"].as_str().unwrap())).unwrap();
            (
                blob,
                layer["annotations"][SIG_ANNOTATION]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn out_signs_every_manifest_of_an_index_and_the_peer_verifies_each() {
    let registry = TestRegistry::plain();
    let (_keys, keys) = peer_keys();
    let src = tempfile::tempdir().unwrap();
    let (amd, arm) = (TestImage::seeded("sign-amd"), TestImage::seeded("sign-arm"));
    let index = write_index_layout(
        &src.path().join("multi"),
        &[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")],
    );
    std::fs::copy(keys.join("ec.enc.key"), src.path().join("cosign.key")).unwrap();
    let repository = registry.repo("signed/app");
    let params = json!({"image": "multi",
        "sign": {"key": "cosign.key", "password": "secret"}});
    let out = put(
        src.path(),
        &[],
        json!({"repository": repository, "tag": "v1"}),
        params.clone(),
    );
    assert_eq!(out.json()["version"]["digest"], index.as_str());
    assert!(
        out.metadata()
            .contains(&("signed".to_owned(), "3".to_owned()))
    );

    for digest in [index.clone(), amd.digest(), arm.digest()] {
        let layers = sig_layers(&registry, "signed/app", &digest);
        assert_eq!(layers.len(), 1, "{digest}");
        let (payload, signature) = &layers[0];
        assert!(
            peer_verifies(&keys.join("ec.pub"), payload, signature),
            "{digest}"
        );
        let claims: Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(
            claims["critical"]["image"]["docker-manifest-digest"],
            digest.as_str()
        );
        assert_eq!(
            claims["critical"]["identity"]["docker-reference"],
            repository.as_str()
        );
        assert_eq!(
            claims["critical"]["type"],
            "cosign container image signature"
        );
    }
    // skopeo still reads the signed image (the .sig tags are extra tags).
    support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{repository}:v1"),
    ]);

    // Signing again with the same key adds nothing; another key appends.
    put(
        src.path(),
        &[],
        json!({"repository": repository, "tag": "v1"}),
        params,
    )
    .json();
    assert_eq!(sig_layers(&registry, "signed/app", &index).len(), 1);
    let other = json!({"image": "multi", "sign": {"key": read(&keys.join("ed.key"))}});
    put(
        src.path(),
        &[],
        json!({"repository": repository, "tag": "v1"}),
        other,
    )
    .json();
    let layers = sig_layers(&registry, "signed/app", &index);
    assert_eq!(layers.len(), 2);
    assert!(peer_verifies(
        &keys.join("ed.pub"),
        &layers[1].0,
        &layers[1].1
    ));

    // The command line's verify agrees: either key, and not a third.
    let verify = |public: &Path| {
        support::run_program(
            Path::new(env!("CARGO_BIN_EXE_registry-image")),
            &[
                "verify",
                &format!("{repository}:v1"),
                "--key",
                public.to_str().unwrap(),
            ],
            b"",
        )
    };
    let verified = verify(&keys.join("ed.pub"));
    assert!(verified.success, "{}", verified.stderr);
    assert!(
        verified.stdout.starts_with(&format!("{index} signed: ")),
        "{}",
        verified.stdout
    );
    let (_third, third) = peer_keys();
    let refused = verify(&third.join("ec.pub"));
    assert!(
        refused.error_line().contains("no signature that verifies"),
        "{}",
        refused.stderr
    );

    // Either key is accepted by check and get.
    for public in ["ec.pub", "ed.pub"] {
        let public = read(&keys.join(public));
        let found = versions(&check(
            &repository,
            json!({"tag": "v1", "cosign_public_key": public}),
        ));
        assert_eq!(found, vec![("v1".to_owned(), index.clone())]);
        let dest = tempfile::tempdir().unwrap();
        get(&repository, &public, "v1", &index, dest.path()).json();
        assert!(dest.path().join("rootfs").is_dir());
    }
}

#[test]
fn a_key_made_by_cosign_signs_and_the_peer_decrypts_it_to_verify() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let image = TestImage::seeded("cosign-made");
    write_oci_layout(&src.path().join("image"), "latest", &image);
    let key = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cosign/cosign_generated_encrypted_empty_private.key");
    std::fs::copy(&key, src.path().join("cosign.key")).unwrap();
    let repository = registry.repo("signed/cosign-made");
    // An empty password: COSIGN_PASSWORD unset, nothing in params.
    let out = put(
        src.path(),
        &[],
        json!({"repository": repository, "tag": "latest"}),
        json!({"image": "image", "sign": {"key": "cosign.key"}}),
    );
    let digest = out.json()["version"]["digest"].as_str().unwrap().to_owned();
    let public =
        peer(&["public", key.to_str().unwrap(), ""]).expect("the peer decrypts cosign's key");
    let public_file = src.path().join("cosign.pub");
    std::fs::write(&public_file, &public).unwrap();
    let layers = sig_layers(&registry, "signed/cosign-made", &digest);
    assert!(peer_verifies(&public_file, &layers[0].0, &layers[0].1));
    let found = versions(&check(
        &repository,
        json!({"tag": "latest", "cosign_public_key": public}),
    ));
    assert_eq!(found, vec![("latest".to_owned(), digest)]);
}

#[test]
fn check_reports_only_digests_signed_with_the_key_and_get_refuses_the_rest_before_any_layer() {
    let registry = TestRegistry::plain();
    let (_keys, keys) = peer_keys();
    let (_other_keys, other_keys) = peer_keys();
    let repo = "verify/app";
    let repository = registry.repo(repo);
    let mut digests = std::collections::BTreeMap::new();
    for tag in [
        "1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.7.0",
    ] {
        let image = TestImage::seeded(&format!("verify-{tag}"));
        digests.insert(tag, registry.push(repo, tag, &image));
    }
    // 1.0.0: signed by the peer with the key (tag form).
    peer_signs_tag(&registry, repo, &digests["1.0.0"], &keys.join("ec.key"));
    // 1.1.0: unsigned.
    // 1.2.0: signed with another key.
    peer_signs_tag(
        &registry,
        repo,
        &digests["1.2.0"],
        &other_keys.join("ec.key"),
    );
    // 1.3.0: 1.0.0's valid signature replayed under 1.3.0's tag.
    let replayed = sig_layers(&registry, repo, &digests["1.0.0"]);
    push_sig(&registry, repo, &digests["1.3.0"], &replayed);
    // 1.4.0: a payload changed after signing.
    let signed = payload(&repository, &digests["1.4.0"]);
    let signature = peer_sign(&keys.join("ec.key"), &signed);
    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("cosign container", "cosign Container");
    push_sig(
        &registry,
        repo,
        &digests["1.4.0"],
        &[(tampered.into_bytes(), signature)],
    );
    // 1.5.0: a bundle referrer made by the peer (Ed25519 key).
    peer_signs_bundle(&registry, repo, &digests["1.5.0"], &keys.join("ed.key"));
    // 1.6.0: a bad signature first, then a good one: one good one is enough.
    let good = payload(&repository, &digests["1.6.0"]);
    let good_sig = peer_sign(&keys.join("ec.key"), &good);
    let bad_sig = peer_sign(&other_keys.join("ec.key"), &good);
    push_sig(
        &registry,
        repo,
        &digests["1.6.0"],
        &[(good.clone(), bad_sig), (good, good_sig)],
    );

    // 1.7.0: a "payload" of 2 MiB (a signature is a few hundred bytes):
    // skipped without being fetched.
    let oversized = vec![b' '; 2 << 20];
    let oversized_sig = peer_sign(&keys.join("ec.key"), &oversized);
    push_sig(
        &registry,
        repo,
        &digests["1.7.0"],
        &[(oversized.clone(), oversized_sig)],
    );

    // Two keys can't both be given, so the bundle (Ed25519) is checked
    // with its own key below.
    let ec_public = read(&keys.join("ec.pub"));
    let out = check(&repository, json!({"cosign_public_key": ec_public}));
    let found: Vec<String> = versions(&out).into_iter().map(|(tag, _)| tag).collect();
    assert_eq!(found, ["1.0.0", "1.6.0"]);
    for skipped in ["1.1.0:", "1.2.0:", "1.3.0:", "1.4.0:", "1.5.0:", "1.7.0:"] {
        assert!(
            out.stderr.contains(&format!("skipping {skipped}")),
            "{skipped}: {}",
            out.stderr
        );
    }
    let ed_public = read(&keys.join("ed.pub"));
    let found = versions(&check(&repository, json!({"cosign_public_key": ed_public})));
    assert_eq!(found, vec![("1.5.0".to_owned(), digests["1.5.0"].clone())]);
    let dest = tempfile::tempdir().unwrap();
    get(
        &repository,
        &ed_public,
        "1.5.0",
        &digests["1.5.0"],
        dest.path(),
    )
    .json();

    let expected = [
        ("1.1.0", "is not signed"),
        ("1.2.0", "does not verify with the key"),
        (
            "1.3.0",
            &*format!("the payload signs {}, not", digests["1.0.0"]),
        ),
        ("1.4.0", "does not verify with the key"),
        ("1.7.0", "larger than a signature"),
    ];
    // Through a proxy that records every request.
    let proxy = FaultProxy::start(&registry);
    for (tag, reason) in expected {
        proxy.clear_log();
        let dest = tempfile::tempdir().unwrap();
        let layer = TestImage::seeded(&format!("verify-{tag}")).layers[0].clone();
        let err = get(
            &proxy.repo(repo),
            &ec_public,
            tag,
            &digests[tag],
            dest.path(),
        );
        let line = err.error_line();
        assert!(line.contains(reason), "{tag}: {line}");
        assert!(line.contains(&digests[tag]), "{tag}: {line}");
        assert_eq!(
            std::fs::read_dir(dest.path()).unwrap().count(),
            0,
            "{tag} wrote files"
        );
        assert!(
            proxy.count("GET", &sig_tag(&digests[tag])) > 0,
            "{tag}: the .sig tag was not read"
        );
        // Neither the image's manifest nor its layer was asked for.
        assert_eq!(proxy.count("GET", &sha256(&layer)), 0, "{tag} read a layer");
        assert_eq!(
            proxy.count("GET", &format!("/manifests/{}", digests[tag])),
            0,
            "{tag} read the manifest"
        );
        let oversized_reads = proxy.count("GET", &sha256(&oversized));
        assert_eq!(oversized_reads, 0, "{tag} read the oversized payload");
    }
}

#[test]
fn out_writes_bundles_the_peer_verifies_and_check_reads() {
    let registry = TestRegistry::plain();
    let (_keys, keys) = peer_keys();
    let src = tempfile::tempdir().unwrap();
    let image = TestImage::seeded("bundle");
    write_oci_layout(&src.path().join("image"), "latest", &image);
    let repository = registry.repo("bundles/app");
    let out = put(
        src.path(),
        &[("SIGNING_PASSWORD", "secret")],
        json!({"repository": repository, "tag": "latest"}),
        json!({"image": "image", "sign": {"key": read(&keys.join("ed.enc.key")),
               "password_env": "SIGNING_PASSWORD", "format": "bundle"}}),
    );
    let digest = out.json()["version"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        registry.digest_of("bundles/app", &sig_tag(&digest)),
        None,
        "no .sig tag"
    );
    let (index, _) = registry.manifest("bundles/app", &digest.replacen(':', "-", 1));
    let index: Value = serde_json::from_slice(&index).unwrap();
    let listed = &index["manifests"][0];
    assert_eq!(listed["artifactType"], BUNDLE);
    let (manifest, _) = registry.manifest("bundles/app", listed["digest"].as_str().unwrap());
    let typed = oci_spec::image::ImageManifest::from_reader(manifest.as_slice())
        .expect("a valid OCI manifest");
    assert_eq!(
        typed.subject().as_ref().map(|s| s.digest().to_string()),
        Some(digest.clone())
    );
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["subject"]["digest"], digest.as_str());
    let bundle = registry.blob_path(manifest["layers"][0]["digest"].as_str().unwrap());
    assert!(
        peer(&[
            "verify-bundle",
            keys.join("ed.pub").to_str().unwrap(),
            bundle.to_str().unwrap(),
            &digest
        ])
        .is_some(),
        "the peer refused our bundle"
    );
    let public = read(&keys.join("ed.pub"));
    let found = versions(&check(
        &repository,
        json!({"tag": "latest", "cosign_public_key": public}),
    ));
    assert_eq!(found, vec![("latest".to_owned(), digest.clone())]);
    // Signing again changes nothing (deterministic signatures).
    put(
        src.path(),
        &[("SIGNING_PASSWORD", "secret")],
        json!({"repository": repository, "tag": "latest"}),
        json!({"image": "image", "sign": {"key": read(&keys.join("ed.enc.key")),
               "password_env": "SIGNING_PASSWORD", "format": "bundle"}}),
    )
    .json();
    let (again, _) = registry.manifest("bundles/app", &digest.replacen(':', "-", 1));
    let again: Value = serde_json::from_slice(&again).unwrap();
    assert_eq!(again["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_keys_and_settings_fail_clearly_and_push_nothing() {
    let registry = TestRegistry::plain();
    let (_keys, keys) = peer_keys();
    let src = tempfile::tempdir().unwrap();
    write_oci_layout(
        &src.path().join("image"),
        "latest",
        &TestImage::seeded("bad"),
    );
    std::fs::copy(keys.join("ec.enc.key"), src.path().join("cosign.key")).unwrap();
    let repository = registry.repo("bad/app");
    let source = json!({"repository": repository, "tag": "latest"});
    let cases = [
        (
            json!({"key": "cosign.key", "password": "wrong"}),
            "wrong password",
        ),
        (
            json!({"key": "cosign.key", "password": "secret", "password_env": "X"}),
            "cannot both be set",
        ),
        (
            json!({"key": "cosign.key", "password_env": "UNSET_VARIABLE_HERE"}),
            "which is not set",
        ),
        (json!({"key": "missing.key"}), "params.sign.key"),
        (json!({}), "params.sign.key is required"),
        (
            json!({"key": "cosign.key", "password": "secret", "format": "notary"}),
            "must be 'tag' or 'bundle'",
        ),
        (
            json!({"key": read(&keys.join("ec.pub"))}),
            "not a key this resource reads",
        ),
    ];
    for (sign, expected) in cases {
        let out = put(
            src.path(),
            &[],
            source.clone(),
            json!({"image": "image", "sign": sign}),
        );
        let line = out.error_line();
        assert!(line.contains(expected), "{sign}: {line}");
        assert!(!line.contains("secret"), "{line}");
        assert!(
            registry.tags("bad/app").is_empty(),
            "{sign}: something was pushed"
        );
    }
    let out = put(
        src.path(),
        &[],
        source.clone(),
        json!({"delete": {"tags": ["x"]}, "sign": {"key": "cosign.key"}}),
    );
    assert!(
        out.error_line()
            .contains("params.sign cannot be combined with params.delete")
    );

    for (extra, expected) in [
        (
            json!({"cosign_public_key": "not a key"}),
            "source.cosign_public_key: not a PEM",
        ),
        (
            json!({"cosign_public_key": read(&keys.join("ec.key"))}),
            "not a public key",
        ),
        (
            json!({"cosign_certificate_identity": "me@example.org"}),
            "keyless verification needs source.cosign_certificate_oidc_issuer",
        ),
        (json!({"content_trust": {}}), "source.cosign_public_key"),
    ] {
        let out = check(&repository, extra.clone());
        assert!(
            out.error_line().contains(expected),
            "{extra}: {}",
            out.error_line()
        );
    }
}

#[test]
fn a_copy_with_the_origins_key_promotes_only_a_signed_digest_and_its_signature() {
    let registry = TestRegistry::plain();
    let (_keys, keys) = peer_keys();
    let signed = registry.push(
        "staging/app",
        "signed",
        &TestImage::seeded("promote-signed"),
    );
    let unsigned = registry.push(
        "staging/app",
        "unsigned",
        &TestImage::seeded("promote-unsigned"),
    );
    peer_signs_tag(&registry, "staging/app", &signed, &keys.join("ec.key"));
    let public = read(&keys.join("ec.pub"));
    let src = tempfile::tempdir().unwrap();
    let destination = registry.repo("prod/app");
    let copy = |digest: &str| {
        put(
            src.path(),
            &[],
            json!({"repository": destination, "tag": "release"}),
            json!({"copy": {"from": format!("{}@{digest}", registry.repo("staging/app")),
                            "source": {"cosign_public_key": public}, "referrers": true}}),
        )
    };
    let refused = copy(&unsigned);
    assert!(
        refused.error_line().contains("is not signed"),
        "{}",
        refused.error_line()
    );
    assert!(
        registry.tags("prod/app").is_empty(),
        "an unsigned image was promoted"
    );

    assert_eq!(copy(&signed).json()["version"]["digest"], signed.as_str());
    // The signature came along and verifies in the new repository.
    let found = versions(&check(
        &destination,
        json!({"tag": "release", "cosign_public_key": public}),
    ));
    assert_eq!(found, vec![("release".to_owned(), signed)]);
}
