//! `check` in tag mode, run as Concourse runs it, against real registries.

mod support;

use serde_json::{Value, json};
use support::image::{self, TestImage, write_oci_layout};
use support::{TestRegistry, run_step, versions};

fn check(source: Value, version: Value) -> support::StepOutput {
    run_step("check", &[], &json!({"source": source, "version": version}))
}

fn pair(tag: &str, digest: &str) -> (String, String) {
    (tag.to_owned(), digest.to_owned())
}

#[test]
fn reports_the_digest_of_a_tag() {
    let registry = TestRegistry::plain();
    let digest = registry.push("some/image", "latest", &TestImage::seeded("one"));
    let out = check(
        json!({"repository": registry.repo("some/image"), "tag": "latest"}),
        Value::Null,
    );
    assert_eq!(versions(&out), [pair("latest", &digest)]);
    assert_eq!(
        out.stdout,
        format!("[{{\"tag\":\"latest\",\"digest\":\"{digest}\"}}]\n")
    );
}

#[test]
fn missing_tag_or_repository_is_an_empty_list() {
    let registry = TestRegistry::plain();
    registry.push("some/image", "latest", &TestImage::seeded("one"));
    let out = check(
        json!({"repository": registry.repo("some/image"), "tag": "not-exist-image"}),
        Value::Null,
    );
    assert_eq!(out.stdout, "[]\n");
    let out = check(
        json!({"repository": registry.repo("no/such-repo"), "tag": "latest"}),
        Value::Null,
    );
    assert_eq!(out.stdout, "[]\n");
}

#[test]
fn numeric_tag_from_json_number() {
    let registry = TestRegistry::plain();
    let digest = registry.push("some/image", "42.1", &TestImage::seeded("n"));
    let out = check(
        json!({"repository": registry.repo("some/image"), "tag": 42.1}),
        Value::Null,
    );
    assert_eq!(versions(&out), [pair("42.1", &digest)]);
}

#[test]
fn cursor_cases() {
    let registry = TestRegistry::plain();
    let repo = registry.repo("some/image");
    let older = registry.push("some/image", "latest", &TestImage::seeded("older"));
    let current = registry.push("some/image", "latest", &TestImage::seeded("current"));
    assert_ne!(older, current);
    let source = json!({"repository": repo, "tag": "latest"});

    // Cursor equals the current digest: just the current version.
    let out = check(source.clone(), json!({"tag": "latest", "digest": current}));
    assert_eq!(versions(&out), [pair("latest", &current)]);
    // A cursor without a tag gets the source tag.
    let out = check(source.clone(), json!({"tag": "", "digest": current}));
    assert_eq!(versions(&out), [pair("latest", &current)]);
    // An older digest that still exists comes first.
    let out = check(source.clone(), json!({"tag": "latest", "digest": older}));
    assert_eq!(
        versions(&out),
        [pair("latest", &older), pair("latest", &current)]
    );
    let out = check(source.clone(), json!({"digest": older}));
    assert_eq!(
        versions(&out),
        [pair("latest", &older), pair("latest", &current)]
    );
    // A digest the registry does not have is dropped.
    let bogus = format!("sha256:{}", "deadbeef".repeat(8));
    let out = check(source.clone(), json!({"tag": "latest", "digest": bogus}));
    assert_eq!(versions(&out), [pair("latest", &current)]);
    // So is something that is not a digest at all.
    let out = check(source.clone(), json!({"tag": "latest", "digest": "bogus"}));
    assert_eq!(versions(&out), [pair("latest", &current)]);
    // And a digest that was deleted since.
    registry.delete_manifest("some/image", &older);
    let out = check(source, json!({"tag": "latest", "digest": older}));
    assert_eq!(versions(&out), [pair("latest", &current)]);
}

#[test]
fn multi_arch_tag_reports_the_index_digest() {
    let registry = TestRegistry::plain();
    let amd = TestImage::seeded("amd64");
    let arm = TestImage::new(
        vec![image::tar(&[image::Entry::file("a", "arm")])],
        json!({}),
        ("linux", "arm64"),
    );
    registry.push("multi/arch", &amd.digest(), &amd);
    registry.push("multi/arch", &arm.digest(), &arm);
    let index = image::index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    let digest = registry.put_manifest("multi/arch", "latest", image::OCI_INDEX, &index);
    let out = check(
        json!({"repository": registry.repo("multi/arch"), "tag": "latest"}),
        Value::Null,
    );
    assert_eq!(versions(&out), [pair("latest", &digest)]);
    assert_eq!(skopeo_digest(&registry, "multi/arch:latest"), digest);
}

/// The digest skopeo computes from the raw manifest it is served.
fn skopeo_digest(registry: &TestRegistry, reference: &str) -> String {
    let raw = support::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/{reference}", registry.host()),
    ]);
    image::sha256(&raw)
}

#[test]
fn image_pushed_by_skopeo() {
    let registry = TestRegistry::plain();
    let layout = tempfile::tempdir().unwrap();
    let img = TestImage::seeded("from-skopeo");
    write_oci_layout(layout.path(), "v1", &img);
    let status = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.path().display()))
        .arg(format!("docker://{}/interop/skopeo:v1", registry.host()))
        .status()
        .expect("run skopeo");
    assert!(status.success());
    let out = check(
        json!({"repository": registry.repo("interop/skopeo"), "tag": "v1"}),
        Value::Null,
    );
    let expected = skopeo_digest(&registry, "interop/skopeo:v1");
    assert_eq!(versions(&out), [pair("v1", &expected)]);
}

#[test]
fn basic_auth() {
    let registry = TestRegistry::basic("alice", "correct-horse-battery");
    let digest = registry.push("private/image", "latest", &TestImage::seeded("basic"));
    let repo = registry.repo("private/image");

    let out = check(
        json!({"repository": repo, "tag": "latest", "username": "alice", "password": "correct-horse-battery"}),
        Value::Null,
    );
    assert_eq!(versions(&out), [pair("latest", &digest)]);

    let out = check(
        json!({"repository": repo, "tag": "latest", "username": "alice", "password": "wrong-canary-pw"}),
        Value::Null,
    );
    let line = out.error_line();
    assert!(line.contains("refused the credentials"), "{line}");
    assert!(
        !out.stderr.contains("wrong-canary-pw"),
        "password leaked: {}",
        out.stderr
    );

    let out = check(json!({"repository": repo, "tag": "latest"}), Value::Null);
    assert!(
        out.error_line().contains("requires authentication"),
        "{}",
        out.stderr
    );
}

#[test]
fn token_auth() {
    let registry = TestRegistry::token("bob", "token-secret-pw");
    let older = registry.push("private/image", "latest", &TestImage::seeded("token-old"));
    let current = registry.push("private/image", "latest", &TestImage::seeded("token-new"));
    let repo = registry.repo("private/image");
    let tokens = registry.token_server.as_ref().unwrap();

    let before = tokens.request_count();
    let out = check(
        json!({"repository": repo, "tag": "latest", "username": "bob", "password": "token-secret-pw"}),
        json!({"tag": "latest", "digest": older}),
    );
    assert_eq!(
        versions(&out),
        [pair("latest", &older), pair("latest", &current)]
    );
    // Two manifest requests, one token: reused within the run.
    assert_eq!(tokens.request_count() - before, 1);

    let out = check(
        json!({"repository": repo, "tag": "latest", "username": "bob", "password": "wrong-token-canary"}),
        Value::Null,
    );
    let line = out.error_line();
    assert!(line.contains("check username and password"), "{line}");
    assert!(
        !out.stderr.contains("wrong-token-canary"),
        "password leaked: {}",
        out.stderr
    );

    // Anonymous: the token service hands out a token without access.
    let out = check(json!({"repository": repo, "tag": "latest"}), Value::Null);
    assert!(
        out.error_line().contains("requires authentication"),
        "{}",
        out.stderr
    );
}

#[test]
fn tls_with_and_without_ca_certs() {
    let registry = TestRegistry::tls();
    let digest = registry.push("secure/image", "latest", &TestImage::seeded("tls"));
    let repo = registry.repo("secure/image");

    let out = check(
        json!({"repository": repo, "tag": "latest", "ca_certs": [registry.ca_pem()]}),
        Value::Null,
    );
    assert_eq!(versions(&out), [pair("latest", &digest)]);

    let out = check(json!({"repository": repo, "tag": "latest"}), Value::Null);
    let line = out.error_line();
    assert!(
        line.contains("certificate") || line.contains("UnknownIssuer"),
        "{line}"
    );
    // A refused certificate is never followed by a plain-HTTP attempt, and
    // the error says what to do.
    assert!(line.contains("source.ca_certs"), "{line}");
    assert!(!line.contains("http: "), "{line}");
    assert!(!out.stderr.contains("GET http://"), "{}", out.stderr);
}

#[test]
fn debug_logs_requests_without_secrets() {
    let registry = TestRegistry::basic("carol", "debug-canary-pw");
    registry.push("private/image", "latest", &TestImage::seeded("debug"));
    let out = check(
        json!({"repository": registry.repo("private/image"), "tag": "latest",
               "username": "carol", "password": "debug-canary-pw", "debug": true}),
        Value::Null,
    );
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("HEAD /v2/private/image/manifests/latest -> 200"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("debug-canary-pw"));
    assert!(!out.stdout.contains("debug-canary-pw"));
}

/// A port that records whether anything connected to it.
struct Tripwire(std::net::TcpListener);

impl Tripwire {
    fn new() -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Tripwire(l)
    }
    fn repo(&self) -> String {
        format!(
            "127.0.0.1:{}/some/image",
            self.0.local_addr().unwrap().port()
        )
    }
    fn untouched(&self) -> bool {
        matches!(self.0.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

#[test]
fn bad_requests_fail_before_any_network_use() {
    let wire = Tripwire::new();
    let repo = wire.repo();
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "invalid payload"),
        ("".into(), "invalid payload"),
        (
            json!({"source": {"repository": repo, "tag": "x", "foo": 1}}).to_string(),
            r#"unknown field "foo" in source"#,
        ),
        (
            json!({"source": {"repository": repo, "tag": "x"}, "params": {}}).to_string(),
            r#"unknown field "params""#,
        ),
        (
            json!({"source": {"tag": "x"}}).to_string(),
            "source.repository is required",
        ),
        (
            json!({"source": {"repository": "Not A Repo", "tag": "x"}}).to_string(),
            "source.repository",
        ),
        (
            json!({"source": {"repository": repo, "tag": "bad/tag"}}).to_string(),
            "invalid tag",
        ),
        (
            json!({"source": {"repository": repo, "tag_regex": "(oops"}}).to_string(),
            "invalid regex pattern",
        ),
        (
            json!({"source": {"repository": repo, "tag": "x", "insecure": "true"}}).to_string(),
            "source.insecure: invalid type",
        ),
        (
            json!({"source": {"repository": repo, "tag": "x", "ca_certs": ["nope"]}}).to_string(),
            "source.ca_certs",
        ),
    ];
    for (input, expected) in cases {
        let out = support::run_program(
            &support::resource_dir().join("check"),
            &[],
            input.as_bytes(),
        );
        let line = out.error_line();
        assert!(line.contains(expected), "input {input}: {line}");
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "one error line: {}",
            out.stderr
        );
    }
    assert!(wire.untouched(), "a bad request reached the network");
}

#[test]
fn subcommands_and_step_names() {
    let registry = TestRegistry::plain();
    let digest = registry.push("some/image", "latest", &TestImage::seeded("cli"));
    let request = json!({"source": {"repository": registry.repo("some/image"), "tag": "latest"}});
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_registry-image"));
    let out = support::run_program(binary, &["check"], request.to_string().as_bytes());
    assert_eq!(versions(&out), [pair("latest", &digest)]);

    let help = support::run_program(binary, &["--help"], b"");
    assert!(help.success);
    for word in ["check", "in", "out", "/opt/resource/check"] {
        assert!(
            help.stdout.contains(word),
            "--help lacks {word}: {}",
            help.stdout
        );
    }

    for step in ["in", "out"] {
        let out = run_step(step, &[], &request);
        assert!(
            out.error_line().contains("destination path not specified"),
            "{}",
            out.stderr
        );
    }
}
