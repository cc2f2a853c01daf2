//! Keyless signatures against the real registry: images signed by
//! Sigstore's own JavaScript signer (`@sigstore/sign` through
//! `@sigstore/mock`'s Fulcio, CT log and Rekor, see
//! `tests/sigstore_peer/peer.mjs`) in both of cosign's storage forms, and
//! `check`, `in` and `out`'s copy told "signed by this identity, through
//! this issuer" with the mock instance's trusted root. Every forgery the
//! verifier must catch has its own image here; the real production
//! signature (and its forgeries) is checked offline by the unit tests of
//! `src/sign/keyless.rs`.

mod support;

use serde_json::{Value, json};
use support::cosign_peer::{peer, peer_keys};
use support::image::TestImage;
use support::signatures::{SIG_ANNOTATION, payload, push_bundle_referrer, push_sig_layers};
use support::sigstore_peer::{Job, Signed, sign};
use support::{StepOutput, TestRegistry, run_step, versions};

const IDENTITY: &str = "https://ci.example.com/teams/main/pipelines/release";
const ISSUER: &str = "https://oidc.ci.example.com";
const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// The source fields of a keyless policy for `IDENTITY` and `ISSUER`
/// under `root`, with `extra` on top.
fn keyless(repository: &str, root: &str, extra: Value) -> Value {
    let mut source = json!({
        "repository": repository,
        "cosign_certificate_identity": IDENTITY,
        "cosign_certificate_oidc_issuer": ISSUER,
    });
    if !root.is_empty() {
        source["cosign_trusted_root"] = json!(root);
    }
    let fields = source.as_object_mut().unwrap();
    for (key, value) in extra.as_object().unwrap() {
        if value.is_null() {
            fields.remove(key);
        } else {
            fields.insert(key.clone(), value.clone());
        }
    }
    source
}

fn check(source: Value) -> StepOutput {
    run_step("check", &[], &json!({"source": source}))
}

fn found(out: &StepOutput) -> Vec<String> {
    versions(out).into_iter().map(|(tag, _)| tag).collect()
}

/// cosign's signing statement about `digest`.
fn statement(digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "", "digest": {"sha256": hex}}],
        "predicateType": SIGN_PREDICATE,
        "predicate": {},
    }))
    .unwrap()
}

fn job<'a>(kind: &'a str, name: &'a str, bytes: &'a [u8]) -> Job<'a> {
    Job {
        kind,
        name,
        bytes,
        identity: IDENTITY,
        issuer: ISSUER,
    }
}

/// Pushes the `sig:` job `name`'s signature of `payload` as `digest`'s
/// `.sig` layer, its annotations edited by `edit`.
fn push_signed_layer(
    registry: &TestRegistry,
    repo: &str,
    digest: &str,
    signed: &Signed,
    name: &str,
    payload: &[u8],
    edit: impl FnOnce(&mut Value),
) {
    let mut annotations = signed.annotations(name);
    edit(&mut annotations);
    push_sig_layers(registry, repo, digest, &[(payload.to_vec(), annotations)]);
}

#[test]
fn check_and_in_accept_keyless_signatures_of_sigstore_js_in_both_forms() {
    let registry = TestRegistry::plain();
    let repo = "keyless/app";
    let repository = registry.repo(repo);
    let mut digests = std::collections::BTreeMap::new();
    for tag in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"] {
        digests.insert(
            tag,
            registry.push(repo, tag, &TestImage::seeded(&format!("keyless-{tag}"))),
        );
    }
    let sig_payload = payload(&repository, &digests["1.0.0"]);
    let dsse_statement = statement(&digests["1.1.0"]);
    let (manifest, _) = registry.manifest(repo, &digests["1.2.0"]);
    let signed = sign(
        &[
            job("sig", "tag-form", &sig_payload),
            job("dsse", "envelope", &dsse_statement),
            job("msg", "message", &manifest),
        ],
        &[],
    );
    let root = signed.trusted_root();
    // 1.0.0: cosign's .sig tag; 1.1.0: a DSSE bundle among its referrers;
    // 1.2.0: a message-signature bundle over the manifest; 1.3.0: unsigned.
    push_signed_layer(
        &registry,
        repo,
        &digests["1.0.0"],
        &signed,
        "tag-form",
        &sig_payload,
        |_| {},
    );
    push_bundle_referrer(
        &registry,
        repo,
        &digests["1.1.0"],
        signed.read("envelope.sigstore.json").as_bytes(),
    );
    push_bundle_referrer(
        &registry,
        repo,
        &digests["1.2.0"],
        signed.read("message.sigstore.json").as_bytes(),
    );

    let out = check(keyless(&repository, &root, json!({})));
    assert_eq!(found(&out), ["1.0.0", "1.1.0", "1.2.0"], "{}", out.stderr);
    assert!(out.stderr.contains("skipping 1.3.0:"), "{}", out.stderr);

    // A pattern matching the whole identity, and one for the issuer.
    let out = check(keyless(
        &repository,
        &root,
        json!({"cosign_certificate_identity": null,
               "cosign_certificate_identity_regexp": "https://ci\\.example\\.com/teams/[^/]+/pipelines/.*",
               "cosign_certificate_oidc_issuer": null,
               "cosign_certificate_oidc_issuer_regexp": "https://oidc\\.ci\\.example\\.com"}),
    ));
    assert_eq!(found(&out), ["1.0.0", "1.1.0", "1.2.0"], "{}", out.stderr);

    // The trusted root given as an object (YAML in a pipeline) works too.
    let object: Value = serde_json::from_str(&root).unwrap();
    let out = check(keyless(
        &repository,
        "",
        json!({"cosign_trusted_root": object}),
    ));
    assert_eq!(found(&out), ["1.0.0", "1.1.0", "1.2.0"], "{}", out.stderr);

    // in: the signed image is fetched, the unsigned one refused first.
    let get = |tag: &str| {
        let dest = tempfile::tempdir().unwrap();
        let out = run_step(
            "in",
            &[dest.path().to_str().unwrap()],
            &json!({"source": keyless(&repository, &root, json!({})),
                    "version": {"tag": tag, "digest": digests[tag]}}),
        );
        (out, dest)
    };
    let (out, dest) = get("1.1.0");
    assert_eq!(out.json()["version"]["digest"], digests["1.1.0"].as_str());
    assert!(dest.path().join("rootfs").is_dir());
    assert!(out.stderr.contains("signature verified"), "{}", out.stderr);
    let (out, dest) = get("1.3.0");
    assert!(
        out.error_line().contains("is not signed"),
        "{}",
        out.error_line()
    );
    assert!(!dest.path().join("rootfs").exists());

    // The copy's origin: only a signed digest is promoted.
    let src = tempfile::tempdir().unwrap();
    let destination = registry.repo("keyless/prod");
    let copy = |tag: &str| {
        let origin = keyless(&repository, &root, json!({"repository": null}));
        run_step(
            "out",
            &[src.path().to_str().unwrap()],
            &json!({"source": {"repository": destination, "tag": "release"},
                    "params": {"copy": {"from": format!("{repository}@{}", digests[tag]),
                                        "source": origin}}}),
        )
    };
    let refused = copy("1.3.0");
    assert!(
        refused.error_line().contains("is not signed"),
        "{}",
        refused.error_line()
    );
    assert!(registry.tags("keyless/prod").is_empty());
    assert_eq!(
        copy("1.0.0").json()["version"]["digest"],
        digests["1.0.0"].as_str()
    );
}

#[test]
fn every_forgery_and_every_other_signer_is_refused() {
    let registry = TestRegistry::plain();
    let repo = "keyless/forged";
    let repository = registry.repo(repo);
    let tags = [
        "2.0.0", "2.1.0", "2.2.0", "2.3.0", "2.4.0", "2.5.0", "2.6.0", "2.7.0", "2.8.0", "2.9.0",
        "3.0.0",
    ];
    let mut digests = std::collections::BTreeMap::new();
    for tag in tags {
        digests.insert(
            tag,
            registry.push(repo, tag, &TestImage::seeded(&format!("forged-{tag}"))),
        );
    }
    let payloads: std::collections::BTreeMap<&str, Vec<u8>> = tags
        .iter()
        .map(|tag| (*tag, payload(&repository, &digests[tag])))
        .collect();
    let good_statement = statement(&digests["2.0.0"]);
    let other_statement = statement(&digests["2.5.0"]);
    let (good_manifest, _) = registry.manifest(repo, &digests["2.0.0"]);
    let signed = sign(
        &[
            // 2.0.0: good, in both forms (the control).
            job("sig", "good", &payloads["2.0.0"]),
            job("dsse", "good-envelope", &good_statement),
            job("msg", "good-message", &good_manifest),
            // 2.1.0: another identity.
            Job {
                identity: "https://ci.example.com/teams/main/pipelines/release-evil",
                ..job("sig", "other-identity", &payloads["2.1.0"])
            },
            // 2.2.0: another issuer.
            Job {
                issuer: "https://oidc.attacker.example",
                ..job("sig", "other-issuer", &payloads["2.2.0"])
            },
            // 2.3.0: no log entry; 2.4.0: a forged SET (signed by the log,
            // then its time moved).
            job("sig", "no-set", &payloads["2.3.0"]),
            job("sig", "forged-set", &payloads["2.4.0"]),
            // 2.5.0: a bundle whose inclusion proof is another entry's.
            job("dsse", "proof-donor", &other_statement),
            job("dsse", "proof-taker", &other_statement),
        ],
        &[],
    );
    let root = signed.trusted_root();
    let push = |tag: &str, name: &str, edit: &dyn Fn(&mut Value)| {
        push_signed_layer(
            &registry,
            repo,
            &digests[tag],
            &signed,
            name,
            &payloads[tag],
            |a| edit(a),
        );
    };
    push("2.0.0", "good", &|_| {});
    push("2.1.0", "other-identity", &|_| {});
    push("2.2.0", "other-issuer", &|_| {});
    push("2.3.0", "no-set", &|a| {
        a.as_object_mut()
            .unwrap()
            .remove("dev.sigstore.cosign/bundle");
    });
    push("2.4.0", "forged-set", &|a| {
        let mut bundle: Value =
            serde_json::from_str(a["dev.sigstore.cosign/bundle"].as_str().unwrap()).unwrap();
        let time = bundle["Payload"]["integratedTime"].as_i64().unwrap();
        bundle["Payload"]["integratedTime"] = json!(time - 1);
        a["dev.sigstore.cosign/bundle"] = json!(bundle.to_string());
    });
    let mut taker: Value = serde_json::from_str(&signed.read("proof-taker.sigstore.json")).unwrap();
    let donor: Value = serde_json::from_str(&signed.read("proof-donor.sigstore.json")).unwrap();
    taker["verificationMaterial"]["tlogEntries"][0]["inclusionProof"] =
        donor["verificationMaterial"]["tlogEntries"][0]["inclusionProof"].clone();
    push_bundle_referrer(
        &registry,
        repo,
        &digests["2.5.0"],
        taker.to_string().as_bytes(),
    );
    // 2.6.0: 2.0.0's good bundle, attached to another digest.
    push_bundle_referrer(
        &registry,
        repo,
        &digests["2.6.0"],
        signed.read("good-envelope.sigstore.json").as_bytes(),
    );
    // 3.0.0: a message signature over 2.0.0's manifest, attached to
    // another digest.
    push_bundle_referrer(
        &registry,
        repo,
        &digests["3.0.0"],
        signed.read("good-message.sigstore.json").as_bytes(),
    );
    // 2.7.0: signed with a key (cosign sign --key), not keyless.
    let (_keys, keys) = peer_keys();
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), &payloads["2.7.0"]).unwrap();
    let key_signature = peer(&[
        "sign",
        keys.join("ec.key").to_str().unwrap(),
        key_file.path().to_str().unwrap(),
    ])
    .unwrap();
    push_sig_layers(
        &registry,
        repo,
        &digests["2.7.0"],
        &[(
            payloads["2.7.0"].clone(),
            json!({SIG_ANNOTATION: key_signature.trim()}),
        )],
    );
    // 2.8.0: signed by another Fulcio (another mock instance); 2.9.0: a
    // certificate that had expired when its signature was logged (another
    // instance whose CA clock is an hour behind its log's).
    let foreign = sign(&[job("sig", "foreign", &payloads["2.8.0"])], &[]);
    push_signed_layer(
        &registry,
        repo,
        &digests["2.8.0"],
        &foreign,
        "foreign",
        &payloads["2.8.0"],
        |_| {},
    );
    let expired = sign(&[job("sig", "expired", &payloads["2.9.0"])], &["--expired"]);
    push_signed_layer(
        &registry,
        repo,
        &digests["2.9.0"],
        &expired,
        "expired",
        &payloads["2.9.0"],
        |_| {},
    );

    let out = check(keyless(&repository, &root, json!({})));
    assert_eq!(found(&out), ["2.0.0"], "{}", out.stderr);
    let reasons = [
        (
            "2.1.0",
            "signed by https://ci.example.com/teams/main/pipelines/release-evil",
        ),
        (
            "2.2.0",
            "signed through the OIDC issuer \"https://oidc.attacker.example\"",
        ),
        ("2.3.0", "no transparency-log entry"),
        ("2.4.0", "signed entry timestamp does not verify"),
        ("2.5.0", "inclusion proof does not lead from the entry"),
        ("2.6.0", "subject is not"),
        ("2.7.0", "no certificate (a key-based signature"),
        ("2.8.0", "transparency log the trusted root does not name"),
        ("3.0.0", "signs another digest"),
    ];
    let skipped = |out: &StepOutput, tag: &str| -> String {
        out.stderr
            .lines()
            .find(|l| l.contains(&format!("skipping {tag}:")))
            .unwrap_or_else(|| panic!("{tag} not skipped: {}", out.stderr))
            .to_owned()
    };
    for (tag, reason) in reasons {
        let line = skipped(&out, tag);
        assert!(line.contains(reason), "{tag}: want {reason:?} in {line}");
    }

    // The expired certificate, under its own instance's root.
    let out = check(keyless(&repository, &expired.trusted_root(), json!({})));
    assert!(found(&out).is_empty(), "{}", out.stderr);
    let line = skipped(&out, "2.9.0");
    assert!(
        line.contains("not valid when the signature was logged"),
        "{line}"
    );

    // Another Fulcio with the same logs: the root's CA swapped for the
    // foreign instance's, so 2.0.0's certificate chains to nothing.
    let mut mixed: Value = serde_json::from_str(&root).unwrap();
    let foreign_root: Value = serde_json::from_str(&foreign.trusted_root()).unwrap();
    mixed["certificateAuthorities"] = foreign_root["certificateAuthorities"].clone();
    let out = check(keyless(&repository, &mixed.to_string(), json!({})));
    assert!(found(&out).is_empty(), "{}", out.stderr);
    let line = skipped(&out, "2.0.0");
    assert!(
        line.contains("does not chain to a certificate authority"),
        "{line}"
    );

    // The certificate's SCT checked with another CT log's key: the root's
    // CT log swapped for the foreign instance's.
    let mut other_ct: Value = serde_json::from_str(&root).unwrap();
    other_ct["ctlogs"] = foreign_root["ctlogs"].clone();
    let out = check(keyless(&repository, &other_ct.to_string(), json!({})));
    assert!(found(&out).is_empty(), "{}", out.stderr);
    let line = skipped(&out, "2.0.0");
    assert!(
        line.contains("no SCT of the signing certificate verifies"),
        "{line}"
    );

    // A pattern that matches only a prefix of the identity does not count
    // (anchored, unlike cosign's), one that matches it whole does.
    let prefix = json!({"cosign_certificate_identity": null,
        "cosign_certificate_identity_regexp": "https://ci\\.example\\.com/teams/main/pipelines/release"});
    let out = check(keyless(&repository, &root, prefix));
    assert_eq!(found(&out), ["2.0.0"], "{}", out.stderr);
    assert!(skipped(&out, "2.1.0").contains("signed by"));

    // A keyless signature is not a key-based one.
    let out = check(json!({"repository": repository,
        "cosign_public_key": std::fs::read_to_string(keys.join("ec.pub")).unwrap()}));
    assert_eq!(found(&out), ["2.7.0"], "{}", out.stderr);
    assert!(skipped(&out, "2.0.0").contains("does not verify with the key"));
}

#[test]
fn keyless_settings_are_checked_before_any_request() {
    let registry = TestRegistry::plain();
    let repository = registry.repo("keyless/settings");
    let cases = [
        (
            json!({"cosign_certificate_oidc_issuer": null}),
            "needs source.cosign_certificate_oidc_issuer",
        ),
        (
            json!({"cosign_certificate_identity": null}),
            "needs source.cosign_certificate_identity",
        ),
        (
            json!({"cosign_certificate_identity_regexp": "x"}),
            "set one of source.cosign_certificate_identity and source.cosign_certificate_identity_regexp",
        ),
        (
            json!({"cosign_certificate_identity": null, "cosign_certificate_identity_regexp": "("}),
            "invalid regex",
        ),
        (
            json!({"cosign_trusted_root": "{}"}),
            "source.cosign_trusted_root",
        ),
        (
            json!({"cosign_trusted_root": 7}),
            "source.cosign_trusted_root",
        ),
        (
            json!({"cosign_public_key": "-----BEGIN PUBLIC KEY-----"}),
            "exclusive",
        ),
    ];
    for (extra, want) in cases {
        let out = check(keyless(&repository, "", extra.clone()));
        assert!(
            out.error_line().contains(want),
            "{extra}: want {want:?}, got {}",
            out.error_line()
        );
    }
    // A trusted root without a policy says what is missing.
    let out = check(json!({"repository": repository, "cosign_trusted_root": "{}"}));
    assert!(
        out.error_line()
            .contains("without source.cosign_certificate_identity")
    );
    // With no trusted root, the built-in public-good one is used: an image
    // signed only by the mock instance is refused by it.
    let digest = registry.push("keyless/settings", "1.0.0", &TestImage::seeded("settings"));
    let signed_payload = payload(&repository, &digest);
    let signed = sign(&[job("sig", "mock", &signed_payload)], &[]);
    push_signed_layer(
        &registry,
        "keyless/settings",
        &digest,
        &signed,
        "mock",
        &signed_payload,
        |_| {},
    );
    let out = check(keyless(&repository, "", json!({})));
    assert!(found(&out).is_empty(), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("transparency log the trusted root does not name"),
        "{}",
        out.stderr
    );
}
