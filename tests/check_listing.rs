//! `check` in semver and regex modes against a real registry: the original's
//! scenario table (spec §9.2), its known bugs fixed (§10.2), request economy,
//! pagination and fault tolerance through a misbehaving proxy.

mod support;

use std::collections::HashMap;

use serde_json::{Value, json};
use support::image::{self, TestImage};
use support::proxy::{Fault, FaultProxy};
use support::{TestRegistry, run_step, versions};

/// Pushes `tags`; tags sharing a letter share an image. Returns tag → digest.
fn push_tags(
    registry: &TestRegistry,
    repo: &str,
    tags: &[(&str, char)],
) -> HashMap<String, String> {
    let mut images: HashMap<char, TestImage> = HashMap::new();
    let mut digests = HashMap::new();
    for (tag, letter) in tags {
        let image = images.entry(*letter).or_insert_with(|| {
            let img = TestImage::seeded(&format!("{repo}-{letter}"));
            for blob in img.blobs() {
                registry.put_blob(repo, blob);
            }
            img
        });
        let digest = registry.put_manifest(repo, tag, &image.manifest_media_type, &image.manifest);
        digests.insert(tag.to_string(), digest);
    }
    digests
}

fn check(repository: &str, source: Value, version: Value) -> support::StepOutput {
    let mut source = source;
    source["repository"] = json!(repository);
    run_step("check", &[], &json!({"source": source, "version": version}))
}

/// Runs a check and asserts the reported tags, each with its own digest.
fn expect(out: support::StepOutput, digests: &HashMap<String, String>, expected: &[&str]) {
    let got = versions(&out);
    let tags: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tags, expected, "stderr: {}", out.stderr);
    for (tag, digest) in &got {
        assert_eq!(Some(digest), digests.get(tag), "digest of {tag}");
    }
}

/// As [`expect`], for regex mode, where the order is the registry's listing
/// order (arbitrary for this registry): the tags as a set.
fn expect_unordered(
    out: support::StepOutput,
    digests: &HashMap<String, String>,
    expected: &[&str],
) {
    let mut got = versions(&out);
    got.sort();
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|t| (t.to_string(), digests[*t].clone()))
        .collect();
    want.sort();
    assert_eq!(got, want, "stderr: {}", out.stderr);
}

/// A regex-mode scenario: compared as a set.
fn regex_scenario(
    registry: &TestRegistry,
    name: &str,
    tags: &[(&str, char)],
    source: Value,
    expected: &[&str],
) {
    run_scenario(registry, name, tags, source, expected, expect_unordered)
}

/// One scenario of the original's table, in its own repository.
fn scenario(
    registry: &TestRegistry,
    name: &str,
    tags: &[(&str, char)],
    source: Value,
    expected: &[&str],
) {
    run_scenario(registry, name, tags, source, expected, expect)
}

fn run_scenario(
    registry: &TestRegistry,
    name: &str,
    tags: &[(&str, char)],
    source: Value,
    expected: &[&str],
    compare: fn(support::StepOutput, &HashMap<String, String>, &[&str]),
) {
    let repo = format!("scenario/{name}");
    let digests = push_tags(registry, &repo, tags);
    compare(
        check(&registry.repo(&repo), source, Value::Null),
        &digests,
        expected,
    );
}

const NON_SEMVER: &str = "non-semver-tag";

#[test]
fn original_scenarios_plain_listing() {
    let r = TestRegistry::plain();
    scenario(&r, "s1", &[(NON_SEMVER, 'a')], json!({}), &[]);
    scenario(
        &r,
        "s2",
        &[("non-matching-regex-tag", 'a')],
        json!({"tag_regex": "foo.*"}),
        &[],
    );
    scenario(
        &r,
        "s3",
        &[(NON_SEMVER, 'a'), ("latest", 'b')],
        json!({}),
        &["latest"],
    );
    regex_scenario(
        &r,
        "s5",
        &[
            ("1.0.0", 'a'),
            (NON_SEMVER, 'b'),
            ("gray", 'c'),
            ("grey", 'd'),
        ],
        json!({"tag_regex": "gr(a|e)y"}),
        &["gray", "grey"],
    );
    regex_scenario(
        &r,
        "s7",
        &[
            ("1.0.0", 'a'),
            ("1.2.1", 'b'),
            ("1.2.2", 'c'),
            ("2.0.0", 'd'),
            ("latest", 'e'),
            ("gray", 'f'),
            ("grey", 'g'),
        ],
        json!({"tag_regex": "gr(a|e)y", "semver_constraint": "1.2.x"}),
        &["gray", "grey"],
    );
    scenario(
        &r,
        "s8",
        &[("1.0.0", 'a'), (NON_SEMVER, 'b')],
        json!({}),
        &["1.0.0"],
    );
    regex_scenario(
        &r,
        "s9",
        &[
            ("1.0.0", 'a'),
            ("3bd8a5e-dev", 'b'),
            ("3bd8a5e-stage", 'c'),
            ("non-matching-regex-tag", 'd'),
            ("67e3c33-dev", 'e'),
        ],
        json!({"tag_regex": "^[0-9a-f]{7}-dev$"}),
        &["3bd8a5e-dev", "67e3c33-dev"],
    );
    scenario(
        &r,
        "s10",
        &[("1.0.0", 'a'), ("1.2.1", 'b'), ("2.0.0", 'c')],
        json!({}),
        &["1.0.0", "1.2.1", "2.0.0"],
    );
    scenario(
        &r,
        "s13",
        &[
            ("1.0.0", 'a'),
            ("1.2.1", 'b'),
            ("1.2.2", 'c'),
            ("v1.2.3", 'd'),
            ("2.0.0", 'e'),
            ("latest", 'f'),
        ],
        json!({"semver_constraint": "1.2.x"}),
        &["1.2.1", "1.2.2", "v1.2.3"],
    );
}

#[test]
fn original_scenarios_prereleases() {
    let r = TestRegistry::plain();
    let s14 = [
        ("1.0.0-alpha.1", 'a'),
        ("1.0.0", 'b'),
        ("1.2.1-beta.1", 'c'),
        ("1.2.1", 'd'),
        ("2.0.0-rc.1", 'e'),
        ("2.0.0", 'f'),
    ];
    scenario(&r, "s14", &s14, json!({}), &["1.0.0", "1.2.1", "2.0.0"]);
    scenario(
        &r,
        "s15",
        &s14,
        json!({"pre_releases": true}),
        &[
            "1.0.0-alpha.1",
            "1.0.0",
            "1.2.1-beta.1",
            "1.2.1",
            "2.0.0-rc.1",
            "2.0.0",
        ],
    );
    let mut s16 = s14.to_vec();
    s16.push(("2.0.0-build.1", 'g'));
    scenario(
        &r,
        "s16",
        &s16,
        json!({"pre_releases": true, "pre_release_prefixes": ["build"]}),
        &[
            "1.0.0-alpha.1",
            "1.0.0",
            "1.2.1-beta.1",
            "1.2.1",
            "2.0.0-build.1",
            "2.0.0-rc.1",
            "2.0.0",
        ],
    );
    scenario(
        &r,
        "s17",
        &[
            ("1.0.0-alpha.1", 'a'),
            ("1.0.0-beta.1", 'b'),
            ("1.0.0-rc.1", 'c'),
            ("1.0.0-foo.1", 'd'),
        ],
        json!({"pre_releases": true}),
        &["1.0.0-alpha.1", "1.0.0-beta.1", "1.0.0-rc.1"],
    );
    scenario(
        &r,
        "s18",
        &[
            ("1.0.0-alpha1", 'a'),
            ("1.0.0-alpha2", 'b'),
            ("1.0.0-beta1", 'c'),
            ("1.0.0-beta2", 'd'),
            ("1.0.0-rc1", 'e'),
            ("1.0.0-rc2", 'f'),
            ("1.0.0-foo1", 'g'),
            ("1.0.0-foo2", 'h'),
        ],
        json!({"pre_releases": true}),
        &[
            "1.0.0-alpha1",
            "1.0.0-alpha2",
            "1.0.0-beta1",
            "1.0.0-beta2",
            "1.0.0-rc1",
            "1.0.0-rc2",
        ],
    );
    scenario(
        &r,
        "s19",
        &[
            ("1.0.0-alpha", 'a'),
            ("1.0.0-beta", 'b'),
            ("1.0.0-rc", 'c'),
            ("1.0.0-foo", 'd'),
        ],
        json!({"pre_releases": true}),
        &["1.0.0-alpha", "1.0.0-beta", "1.0.0-rc"],
    );
    scenario(
        &r,
        "s20",
        &[
            ("1.0.0-rc.1", 'a'),
            ("1.0.0-rc1", 'a'),
            ("1.0.0-rc", 'a'),
            ("1.0.0", 'a'),
        ],
        json!({"pre_releases": true}),
        &["1.0.0"],
    );
}

#[test]
fn original_scenarios_aliases_latest_and_variants() {
    let r = TestRegistry::plain();
    scenario(
        &r,
        "s21",
        &[
            ("1", 'a'),
            ("2", 'b'),
            ("2.1", 'b'),
            ("latest", 'c'),
            ("3", 'c'),
            ("3.2", 'c'),
            ("3.2.1", 'c'),
            ("3.1", 'd'),
            ("3.1.0", 'd'),
            ("3.0", 'e'),
            ("3.0.0", 'e'),
        ],
        json!({}),
        &["1", "2.1", "3.0.0", "3.1.0", "3.2.1"],
    );
    scenario(
        &r,
        "s22",
        &[("1.0.0", 'a'), (NON_SEMVER, 'b'), ("latest", 'c')],
        json!({}),
        &["1.0.0", "latest"],
    );
    scenario(
        &r,
        "s23",
        &[("1", 'a'), ("2", 'b'), ("3", 'c'), ("latest", 'c')],
        json!({}),
        &["1", "2", "3"],
    );
    scenario(
        &r,
        "s24",
        &[("1", 'a'), ("2", 'b'), ("latest", 'b'), ("3", 'c')],
        json!({}),
        &["1", "2", "3"],
    );
    scenario(
        &r,
        "s25",
        &[
            ("latest", 'a'),
            ("1.0.0", 'a'),
            ("0.9.0", 'b'),
            ("foo", 'c'),
            ("1.0.0-foo", 'c'),
            ("0.9.0-foo", 'd'),
            ("bar", 'e'),
            ("1.0.0-bar", 'e'),
            ("0.9.0-bar", 'f'),
        ],
        json!({"variant": "foo"}),
        &["0.9.0-foo", "1.0.0-foo"],
    );
    scenario(
        &r,
        "s26",
        &[
            ("latest", 'a'),
            ("1.0.0", 'a'),
            ("0.9.0", 'b'),
            ("foo", 'c'),
            ("0.8.0-foo", 'd'),
            ("bar", 'e'),
            ("1.0.0-bar", 'e'),
            ("0.9.0-bar", 'f'),
        ],
        json!({"variant": "foo"}),
        &["0.8.0-foo", "foo"],
    );
    scenario(
        &r,
        "s27",
        &[
            ("1.0.0-foo", 'a'),
            ("1.0.0-rc.1-foo", 'b'),
            ("1.0.0-alpha.1-foo", 'c'),
            ("1.0.0-beta.1-foo", 'd'),
            ("1.0.0-bar-foo", 'e'),
            ("1.0.0-rc.1-bar-foo", 'f'),
            ("1.0.0-alpha.1-bar-foo", 'g'),
            ("1.0.0-beta.1-bar-foo", 'h'),
        ],
        json!({"variant": "foo", "pre_releases": true}),
        &[
            "1.0.0-alpha.1-foo",
            "1.0.0-beta.1-foo",
            "1.0.0-rc.1-foo",
            "1.0.0-foo",
        ],
    );
    scenario(
        &r,
        "s28",
        &[
            ("1.0.0-build-foo", 'a'),
            ("1.0.0-rc.1-foo", 'b'),
            ("1.0.0-alpha.1-foo", 'c'),
            ("1.0.0-beta.1-foo", 'd'),
            ("1.0.0-bar-foo", 'e'),
            ("1.0.0-rc.1-bar-foo", 'f'),
            ("1.0.0-alpha.1-bar-foo", 'g'),
            ("1.0.0-beta.1-bar-foo", 'h'),
        ],
        json!({"variant": "foo", "pre_releases": true, "pre_release_prefixes": ["build"]}),
        &[
            "1.0.0-alpha.1-foo",
            "1.0.0-alpha.1-bar-foo",
            "1.0.0-beta.1-foo",
            "1.0.0-beta.1-bar-foo",
            "1.0.0-build-foo",
            "1.0.0-rc.1-foo",
            "1.0.0-rc.1-bar-foo",
        ],
    );
}

#[test]
fn cursor_scenarios() {
    let r = TestRegistry::plain();
    let repo = "scenario/cursor";
    let digests = push_tags(&r, repo, &[("1.0.0", 'a'), ("1.2.1", 'b'), ("2.0.0", 'c')]);
    // S11: a valid cursor: itself and everything newer.
    let cursor = json!({"tag": "1.2.1", "digest": digests["1.2.1"]});
    expect(
        check(&r.repo(repo), json!({}), cursor),
        &digests,
        &["1.2.1", "2.0.0"],
    );
    // S12: the cursor's digest changed: everything.
    let cursor = json!({"tag": "1.2.1", "digest": "bogus"});
    expect(
        check(&r.repo(repo), json!({}), cursor),
        &digests,
        &["1.0.0", "1.2.1", "2.0.0"],
    );
    // The cursor tag is gone: everything.
    let cursor = json!({"tag": "1.1.0", "digest": digests["1.2.1"]});
    expect(
        check(&r.repo(repo), json!({}), cursor),
        &digests,
        &["1.0.0", "1.2.1", "2.0.0"],
    );
}

#[test]
fn head_without_digest_falls_back_to_get() {
    // S4: a registry whose HEAD answers carry no digest.
    let r = TestRegistry::plain();
    let proxy = FaultProxy::start(&r);
    proxy.strip_head_digest();
    let digests = push_tags(&r, "scenario/s4", &[(NON_SEMVER, 'a'), ("latest", 'b')]);
    expect(
        check(&proxy.repo("scenario/s4"), json!({}), Value::Null),
        &digests,
        &["latest"],
    );
    assert_eq!(
        proxy.count("GET", "/manifests/latest"),
        1,
        "{:?}",
        proxy.requests()
    );
    // Tag mode too: the digest is the hash of the GET body.
    let out = check(
        &proxy.repo("scenario/s4"),
        json!({"tag": "latest"}),
        Value::Null,
    );
    assert_eq!(
        out.json(),
        json!([{"tag": "latest", "digest": digests["latest"]}])
    );
}

#[test]
fn created_at_sort_orders_by_image_creation() {
    // S6, with creation times in the configs; the reported digests are the
    // tags' own.
    let r = TestRegistry::plain();
    let repo = "scenario/s6";
    let mut digests = push_tags(&r, repo, &[("1.0.0", 'a'), (NON_SEMVER, 'b')]);
    for (tag, created) in [
        ("gem-1338-git-4bd8a5e1a244", "2024-01-04T05:00:00Z"),
        ("gem-182-git-6bd8a5e1a2b3", "2024-01-04T00:00:00Z"),
        (
            "gem-1337-git-4bd8a5e1a244",
            "2024-01-04T04:00:00.123456789+00:00",
        ),
    ] {
        let img = TestImage::new(
            vec![image::tar(&[image::Entry::file("t", tag)])],
            json!({"created": created}),
            ("linux", "amd64"),
        );
        digests.insert(tag.to_owned(), r.push(repo, tag, &img));
    }
    let source = json!({"tag_regex": "gem-(\\d+)-git-([a-f0-9]{12})", "created_at_sort": true});
    expect(
        check(&r.repo(repo), source.clone(), Value::Null),
        &digests,
        &[
            "gem-182-git-6bd8a5e1a2b3",
            "gem-1337-git-4bd8a5e1a244",
            "gem-1338-git-4bd8a5e1a244",
        ],
    );
    // Without the sort: the registry's listing order.
    let mut unsorted = source;
    unsorted["created_at_sort"] = json!(false);
    expect_unordered(
        check(&r.repo(repo), unsorted, Value::Null),
        &digests,
        &[
            "gem-1337-git-4bd8a5e1a244",
            "gem-1338-git-4bd8a5e1a244",
            "gem-182-git-6bd8a5e1a2b3",
        ],
    );
}

#[test]
fn created_at_sort_resolves_indexes_to_the_platform() {
    let r = TestRegistry::plain();
    let repo = "scenario/multi";
    let mut digests = HashMap::new();
    for (tag, amd_time, arm_time) in [
        ("build-1", "2024-01-02T00:00:00Z", "2020-01-01T00:00:00Z"),
        ("build-2", "2024-01-01T00:00:00Z", "2021-01-01T00:00:00Z"),
    ] {
        let amd = TestImage::new(
            vec![image::tar(&[image::Entry::file("a", tag)])],
            json!({"created": amd_time}),
            ("linux", "amd64"),
        );
        let arm = TestImage::new(
            vec![image::tar(&[image::Entry::file("b", tag)])],
            json!({"created": arm_time}),
            ("linux", "arm64"),
        );
        r.push(repo, &format!("{tag}-amd"), &amd);
        r.push(repo, &format!("{tag}-arm"), &arm);
        let index = image::index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
        digests.insert(
            tag.to_owned(),
            r.put_manifest(repo, tag, image::OCI_INDEX, &index),
        );
    }
    let source = json!({"tag_regex": "^build-\\d$", "created_at_sort": true, "platform": {"os": "linux", "architecture": "amd64"}});
    expect(
        check(&r.repo(repo), source, Value::Null),
        &digests,
        &["build-2", "build-1"],
    );
    let source = json!({"tag_regex": "^build-\\d$", "created_at_sort": true, "platform": {"os": "linux", "architecture": "arm64"}});
    expect(
        check(&r.repo(repo), source, Value::Null),
        &digests,
        &["build-1", "build-2"],
    );
    let source = json!({"tag_regex": "^build-\\d$", "created_at_sort": true, "platform": {"os": "linux", "architecture": "s390x"}});
    let out = check(&r.repo(repo), source, Value::Null);
    let line = out.error_line();
    assert!(
        line.contains("no image for platform linux/s390x")
            && line.contains("linux/amd64, linux/arm64"),
        "{line}"
    );
}

#[test]
fn latest_of_an_older_image_is_not_a_new_version_after_the_cursor() {
    // The original reports `latest` here as a version newer than 2.0.0.
    let r = TestRegistry::plain();
    let repo = "fix/latest";
    let digests = push_tags(&r, repo, &[("1.0.0", 'a'), ("2.0.0", 'b'), ("latest", 'a')]);
    let cursor = json!({"tag": "2.0.0", "digest": digests["2.0.0"]});
    expect(
        check(&r.repo(repo), json!({}), cursor),
        &digests,
        &["2.0.0"],
    );
    expect(
        check(&r.repo(repo), json!({}), Value::Null),
        &digests,
        &["1.0.0", "2.0.0"],
    );
    // A `latest` that no version tags is still reported after the cursor.
    let digests = push_tags(&r, repo, &[("latest", 'z')]);
    let mut all = push_tags(&r, repo, &[("2.0.0", 'b')]);
    all.extend(digests);
    let cursor = json!({"tag": "2.0.0", "digest": all["2.0.0"]});
    expect(
        check(&r.repo(repo), json!({}), cursor),
        &all,
        &["2.0.0", "latest"],
    );
}

#[test]
fn equal_precedence_has_a_stable_order() {
    let r = TestRegistry::plain();
    let repo = "fix/equal";
    let digests = push_tags(
        &r,
        repo,
        &[
            ("1.0.0", 'b'),
            ("1.0", 'a'),
            ("v1.2.3", 'c'),
            ("1.2.3", 'd'),
        ],
    );
    for _ in 0..3 {
        expect(
            check(&r.repo(repo), json!({}), Value::Null),
            &digests,
            &["1.0", "1.0.0", "1.2.3", "v1.2.3"],
        );
    }
    // Date-like numeric tags are versions (documented): 20240101 is 20240101.0.0.
    let digests = push_tags(&r, "fix/dates", &[("20240101", 'a'), ("1.2.3", 'b')]);
    expect(
        check(&r.repo("fix/dates"), json!({}), Value::Null),
        &digests,
        &["1.2.3", "20240101"],
    );
}

#[test]
fn only_reportable_tags_are_resolved() {
    let r = TestRegistry::plain();
    let proxy = FaultProxy::start(&r);
    let repo = "cheap/image";
    let digests = push_tags(
        &r,
        repo,
        &[
            ("1.0.0", 'a'),
            ("1.1.0", 'b'),
            ("1.2.1", 'c'),
            ("2.0.0", 'd'),
            ("latest", 'd'),
            ("junk", 'e'),
        ],
    );
    let cursor = json!({"tag": "1.2.1", "digest": digests["1.2.1"]});
    expect(
        check(&proxy.repo(repo), json!({}), cursor),
        &digests,
        &["1.2.1", "2.0.0"],
    );
    let heads: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|(m, _)| m == "HEAD")
        .map(|(_, p)| p)
        .collect();
    let mut heads_sorted = heads.clone();
    heads_sorted.sort();
    assert_eq!(
        heads_sorted,
        [
            "/v2/cheap/image/manifests/1.2.1",
            "/v2/cheap/image/manifests/2.0.0",
            "/v2/cheap/image/manifests/latest",
        ]
    );
    // With a constraint, `latest` can never be reported: not resolved.
    proxy.clear_log();
    expect(
        check(
            &proxy.repo(repo),
            json!({"semver_constraint": ">=1.1"}),
            Value::Null,
        ),
        &digests,
        &["1.1.0", "1.2.1", "2.0.0"],
    );
    assert_eq!(proxy.count("HEAD", "/manifests/latest"), 0);
    assert_eq!(proxy.count("HEAD", "/manifests/1.0.0"), 0);
    assert_eq!(proxy.count("HEAD", "/manifests/junk"), 0);
}

#[test]
fn pagination_follows_opaque_links() {
    let r = TestRegistry::plain();
    let proxy = FaultProxy::start(&r);
    let repo = "many/tags";
    let img = TestImage::seeded("many");
    for blob in img.blobs() {
        r.put_blob(repo, blob);
    }
    let mut digest = String::new();
    for i in 0..1200 {
        digest = r.put_manifest(
            repo,
            &format!("1.0.{i}"),
            &img.manifest_media_type,
            &img.manifest,
        );
    }
    proxy.paginate(100);
    let out = check(
        &proxy.repo(repo),
        json!({"tag_regex": "^1\\.0\\.\\d+$"}),
        Value::Null,
    );
    let versions = out.json();
    let versions = versions.as_array().unwrap();
    assert_eq!(versions.len(), 1200, "{}", out.stderr);
    assert!(versions.iter().all(|v| v["digest"] == json!(digest)));
    let pages: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|(m, p)| m == "GET" && p.contains("/tags/list"))
        .map(|(_, p)| p)
        .collect();
    assert_eq!(pages.len(), 12);
    assert!(
        pages[1..]
            .iter()
            .all(|p| p.contains("next_page=") && !p.contains("last=")),
        "{pages:?}"
    );
    // Semver mode over the same pages: one image, its most specific and
    // highest tag... all 1,200 are equally specific: the bytewise-smallest wins.
    let out = check(&proxy.repo(repo), json!({}), Value::Null);
    assert_eq!(out.json(), json!([{"tag": "1.0.0", "digest": digest}]));

    // A listing longer than the page cap fails clearly.
    proxy.paginate(1);
    let out = check(&proxy.repo(repo), json!({"tag_regex": "x"}), Value::Null);
    assert!(
        out.error_line().contains("more than 1000 pages"),
        "{}",
        out.stderr
    );
}

#[test]
fn survives_injected_faults() {
    let r = TestRegistry::plain();
    let proxy = FaultProxy::start(&r);
    let repo = "flaky/image";
    let digests = push_tags(&r, repo, &[("1.0.0", 'a'), ("1.2.1", 'b'), ("2.0.0", 'c')]);
    proxy.paginate(2);
    proxy.inject(Some("GET"), "/tags/list", Fault::Status(503, None), 1);
    proxy.inject(
        Some("HEAD"),
        "/manifests/1.2.1",
        Fault::Status(429, Some(1)),
        1,
    );
    proxy.inject(Some("GET"), "/tags/list", Fault::DropAfter(10), 1);
    proxy.inject(Some("GET"), "/v2/", Fault::Status(502, None), 1);
    let out = check(&proxy.repo(repo), json!({}), Value::Null);
    expect(out, &digests, &["1.0.0", "1.2.1", "2.0.0"]);
    assert_eq!(
        proxy.pending_faults(),
        0,
        "every fault was hit: {:?}",
        proxy.requests()
    );

    // A registry that keeps failing: a clear error after bounded attempts
    // (and no GET after a HEAD that used up its retries).
    proxy.clear_log();
    proxy.inject(None, "/manifests/2.0.0", Fault::Status(503, None), 100);
    let out = check(&proxy.repo(repo), json!({"tag": "2.0.0"}), Value::Null);
    assert_eq!(proxy.count("GET", "/manifests/2.0.0"), 0);
    assert_eq!(proxy.count("HEAD", "/manifests/2.0.0"), 6);
    let line = out.error_line();
    assert!(
        line.contains("giving up after 6 attempts") && line.contains("503"),
        "{line}"
    );
}

#[test]
fn listing_errors() {
    let r = TestRegistry::plain();
    // Semver and regex modes need the repository to exist (tag mode does not).
    let out = check(&r.repo("no/such"), json!({}), Value::Null);
    let line = out.error_line();
    assert!(
        line.contains("list repository tags") && line.contains("404"),
        "{line}"
    );
    let out = check(
        &r.repo("no/such"),
        json!({"semver_constraint": ">= 1.0 ||"}),
        Value::Null,
    );
    assert!(
        out.error_line().contains("parse semver constraint"),
        "{}",
        out.stderr
    );
}

#[test]
fn one_token_for_many_concurrent_requests() {
    let r = TestRegistry::token("dora", "token-pw");
    let tags: Vec<(String, char)> = (0..20)
        .map(|i| (format!("1.{i}.0"), (b'a' + i as u8) as char))
        .collect();
    let tag_refs: Vec<(&str, char)> = tags.iter().map(|(t, c)| (t.as_str(), *c)).collect();
    let digests = push_tags(&r, "private/many", &tag_refs);
    let tokens = r.token_server.as_ref().unwrap();
    let before = tokens.request_count();
    let out = check(
        &r.repo("private/many"),
        json!({"username": "dora", "password": "token-pw"}),
        Value::Null,
    );
    let mut expected: Vec<&str> = tag_refs.iter().map(|(t, _)| *t).collect();
    expected.sort_by_key(|t| t.split('.').nth(1).unwrap().parse::<u32>().unwrap());
    expect(out, &digests, &expected);
    assert_eq!(tokens.request_count() - before, 1);
}
