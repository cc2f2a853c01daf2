//! Credentials beyond username/password: AWS ECR (static keys, session
//! token, a chain of roles, through a local stand-in for STS and ECR and a
//! real basic-auth registry), `registry_mirror` for Docker Hub names (two
//! real registries; Docker Hub routed to one of them), the docker config,
//! and that no secret ever reaches the output.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use support::aws::{AwsMock, role_keys};
use support::image::{Entry, TestImage, tar, write_docker_save};
use support::proxy::{Fault, FaultProxy};
use support::{StepOutput, TestRegistry, run_step_env};

/// Every secret the tests hand out: none may appear in any output.
const CANARIES: &[&str] = &[
    "ecr-registry-pw-canary",
    "static-secret-canary",
    "static-session-canary",
    "secret-of-role-one-canary",
    "session-of-role-one-canary",
    "secret-of-role-two-canary",
    "session-of-role-two-canary",
    "mirror-pw-canary",
    "docker-config-pw-canary",
    "helper-pw-canary",
    "wrong-pw-canary",
];

fn assert_no_secrets(out: &StepOutput) {
    out.assert_none_leaked(CANARIES, "");
}

fn step(name: &str, dir: Option<&Path>, envs: &[(&str, &str)], request: Value) -> StepOutput {
    let args: Vec<&str> = dir.map(|d| d.to_str().unwrap()).into_iter().collect();
    let out = run_step_env(name, &args, envs, &request);
    assert_no_secrets(&out);
    out
}

fn ecr_source(extra: Value) -> Value {
    let mut source = json!({
        "repository": "team/app",
        "tag": "latest",
        "aws_region": "us-east-1",
        "aws_access_key_id": "AKIDSTATIC",
        "aws_secret_access_key": "static-secret-canary",
        "aws_session_token": "static-session-canary",
        "aws_role_arns": ["arn:aws:iam::123456789012:role/role-one",
                          "arn:aws:iam::123456789012:role/role-two"],
        "debug": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        source[k] = v.clone();
    }
    source
}

#[test]
fn ecr_keys_then_two_roles_then_token_for_check_in_and_out() {
    let registry = TestRegistry::basic("AWS", "ecr-registry-pw-canary");
    let aws = AwsMock::start(
        &format!("http://{}", registry.host()),
        "ecr-registry-pw-canary",
    );
    let owned = aws.envs();
    let envs = as_refs(&owned);
    let src = tempfile::tempdir().unwrap();
    let img = TestImage::new(
        vec![tar(&[Entry::file("ecr", "pushed through ECR auth")])],
        json!({}),
        ("linux", "amd64"),
    );
    write_docker_save(&src.path().join("image.tar"), &img, "x:y");

    // out: host-less repository, qualified with the ECR endpoint.
    let out = step(
        "out",
        Some(src.path()),
        &envs,
        json!({"source": ecr_source(json!({})), "params": {"image": "image.tar"}}),
    );
    let response = out.json();
    let qualified = registry.repo("team/app");
    assert_eq!(response["metadata"][0]["value"], qualified.as_str());
    let digest = response["version"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        registry.digest_of("team/app", "latest").as_deref(),
        Some(digest.as_str())
    );
    // The chain: the static keys (with their session token) assume role
    // one, role one's keys assume role two, role two's keys get the token.
    let (one_key, _, one_session) = role_keys("role-one");
    let (two_key, _, two_session) = role_keys("role-two");
    assert_eq!(
        aws.calls(),
        vec![
            (
                "AssumeRole arn:aws:iam::123456789012:role/role-one".to_owned(),
                "AKIDSTATIC".to_owned(),
                "static-session-canary".to_owned()
            ),
            (
                "AssumeRole arn:aws:iam::123456789012:role/role-two".to_owned(),
                one_key,
                one_session
            ),
            ("GetAuthorizationToken".to_owned(), two_key, two_session),
        ]
    );

    // check and in with the same source.
    let versions = support::versions(&step(
        "check",
        None,
        &envs,
        json!({"source": ecr_source(json!({}))}),
    ));
    assert_eq!(versions, vec![("latest".to_owned(), digest.clone())]);
    let dest = tempfile::tempdir().unwrap();
    let got = step(
        "in",
        Some(dest.path()),
        &envs,
        json!({"source": ecr_source(json!({})), "version": {"tag": "latest", "digest": digest}}),
    );
    got.json();
    assert_eq!(
        std::fs::read_to_string(dest.path().join("repository")).unwrap(),
        qualified
    );
    assert_eq!(
        std::fs::read(dest.path().join("rootfs/ecr")).unwrap(),
        b"pushed through ECR auth"
    );

    // No keys in the source: the SDK's default chain (here the environment).
    aws.clear();
    let mut env_chain = envs.clone();
    env_chain.extend([
        ("AWS_ACCESS_KEY_ID", "AKIDFROMENV"),
        ("AWS_SECRET_ACCESS_KEY", "static-secret-canary"),
    ]);
    let keyless = ecr_source(json!({"aws_access_key_id": "", "aws_secret_access_key": "",
                                    "aws_session_token": "", "aws_role_arns": []}));
    let versions = support::versions(&step("check", None, &env_chain, json!({"source": keyless})));
    assert_eq!(versions.len(), 1);
    assert_eq!(aws.calls()[0].1, "AKIDFROMENV");

    // A repository that already names the registry is not prefixed again,
    // also with aws_account_id (whose host is only derived for host-less
    // repositories).
    let versions = support::versions(&step(
        "check",
        None,
        &envs,
        json!({"source": ecr_source(json!({"repository": qualified, "aws_account_id": "123456789012",
                                            "aws_role_arns": []}))}),
    ));
    assert_eq!(versions.len(), 1);
}

#[test]
fn ecr_failures_are_one_clear_line_without_secrets() {
    let registry = TestRegistry::basic("AWS", "ecr-registry-pw-canary");
    let aws = AwsMock::start(&format!("http://{}", registry.host()), "wrong-pw-canary");
    let owned = aws.envs();
    let envs = as_refs(&owned);
    let denied = step(
        "check",
        None,
        &envs,
        json!({"source": ecr_source(json!({"aws_role_arns": ["arn:aws:iam::1:role/denied"]}))}),
    );
    let line = denied.error_line();
    assert!(
        line.contains("cannot authenticate with ECR")
            && line.contains("error assuming role 'arn:aws:iam::1:role/denied'"),
        "{line}"
    );
    // The token works for ECR, not for this registry: refused credentials.
    let refused = step(
        "check",
        None,
        &envs,
        json!({"source": ecr_source(json!({}))}),
    );
    assert!(
        refused.error_line().contains("refused the credentials"),
        "{}",
        refused.stderr
    );
    // Both role fields: refused before any network use.
    let calls = aws.calls().len();
    let both = step(
        "check",
        None,
        &envs,
        json!({"source": ecr_source(json!({"aws_role_arn": "arn:aws:iam::1:role/x"}))}),
    );
    assert!(both.error_line().contains("cannot be set at the same time"));
    assert_eq!(
        aws.calls().len(),
        calls,
        "AWS was called: {:?}",
        aws.calls()
    );
}

/// An origin standing in for Docker Hub, and a mirror with its own
/// credentials.
struct Hub {
    origin: TestRegistry,
    mirror: TestRegistry,
}

impl Hub {
    fn new() -> Self {
        Hub {
            origin: TestRegistry::plain(),
            mirror: TestRegistry::basic("mirror-user", "mirror-pw-canary"),
        }
    }

    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![("REGISTRY_IMAGE_DOCKER_HUB_HOST", self.origin.host())]
    }

    fn source(&self, mirror_host: &str) -> Value {
        json!({"repository": "app", "tag": "latest",
               "registry_mirror": {"host": mirror_host, "username": "mirror-user",
                                   "password": "mirror-pw-canary"}})
    }
}

fn as_refs<'a>(envs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    envs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn mirror_first_for_docker_hub_names_with_clean_fallback() {
    let hub = Hub::new();
    let envs = hub.envs();
    let envs = as_refs(&envs);
    let on_origin = TestImage::seeded("origin");
    let on_mirror = TestImage::seeded("mirror");
    let origin_digest = hub.origin.push("library/app", "latest", &on_origin);

    // Not on the mirror: check and in fall back to the origin. The mirror
    // sees the ping, one HEAD and, after its 404, one GET (a registry's
    // HEAD 404 may be wrong where its GET works, as Nexus's).
    let proxy = FaultProxy::start(&hub.mirror);
    let source = hub.source(&proxy.host());
    let versions = support::versions(&step("check", None, &envs, json!({"source": source})));
    assert_eq!(versions, vec![("latest".to_owned(), origin_digest.clone())]);
    let request = |method: &str, path: &str| (method.to_owned(), path.to_owned());
    assert_eq!(
        proxy.requests(),
        vec![
            request("GET", "/v2/"),
            request("HEAD", "/v2/library/app/manifests/latest"),
            request("GET", "/v2/library/app/manifests/latest"),
        ]
    );
    // Docker Hub itself: a missing tag is one HEAD, never a GET, which
    // would count against the pull limit.
    let hub_front = FaultProxy::start(&hub.origin);
    let hub_envs = [("REGISTRY_IMAGE_DOCKER_HUB_HOST", hub_front.host())];
    let absent = json!({"source": {"repository": "app", "tag": "absent"}});
    let versions = support::versions(&step("check", None, &as_refs(&hub_envs), absent));
    assert!(versions.is_empty());
    assert_eq!(
        hub_front.requests(),
        vec![
            request("GET", "/v2/"),
            request("HEAD", "/v2/library/app/manifests/absent"),
        ]
    );
    let dest = tempfile::tempdir().unwrap();
    step(
        "in",
        Some(dest.path()),
        &envs,
        json!({"source": source, "version": {"tag": "latest", "digest": origin_digest}}),
    )
    .json();
    assert_eq!(
        std::fs::read(dest.path().join("rootfs/seed")).unwrap(),
        b"origin"
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("repository")).unwrap(),
        "app",
        "files name the origin repository"
    );

    // On the mirror (under library/app, with the mirror's credentials): the
    // mirror answers.
    let mirror_digest = hub.mirror.push("library/app", "latest", &on_mirror);
    let versions = support::versions(&step("check", None, &envs, json!({"source": source})));
    assert_eq!(versions, vec![("latest".to_owned(), mirror_digest.clone())]);
    let dest = tempfile::tempdir().unwrap();
    step(
        "in",
        Some(dest.path()),
        &envs,
        json!({"source": source, "version": {"tag": "latest", "digest": mirror_digest}}),
    )
    .json();
    assert_eq!(
        std::fs::read(dest.path().join("rootfs/seed")).unwrap(),
        b"mirror"
    );

    // A repository on another registry never touches the mirror.
    let elsewhere = TestRegistry::plain();
    let digest = elsewhere.push("team/app", "latest", &on_origin);
    let mut other = hub.source(&proxy.host());
    other["repository"] = json!(elsewhere.repo("team/app"));
    proxy.clear_log();
    let versions = support::versions(&step("check", None, &envs, json!({"source": other})));
    assert_eq!(versions, vec![("latest".to_owned(), digest)]);
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());

    // out never uses the mirror.
    let src = tempfile::tempdir().unwrap();
    write_docker_save(
        &src.path().join("image.tar"),
        &TestImage::seeded("pushed"),
        "x:y",
    );
    let mut push_source = hub.source(&proxy.host());
    push_source["tag"] = json!("pushed");
    proxy.clear_log();
    step(
        "out",
        Some(src.path()),
        &envs,
        json!({"source": push_source, "params": {"image": "image.tar"}}),
    )
    .json();
    assert!(hub.origin.digest_of("library/app", "pushed").is_some());
    assert!(hub.mirror.digest_of("library/app", "pushed").is_none());
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
}

#[test]
fn a_failing_mirror_falls_back_quickly_and_leaves_nothing_behind() {
    let hub = Hub::new();
    let envs = hub.envs();
    let envs = as_refs(&envs);
    let img = TestImage::new(
        vec![tar(&[Entry::file("big", vec![7u8; 300_000])])],
        json!({}),
        ("linux", "amd64"),
    );
    let digest = hub.origin.push("library/app", "latest", &img);
    hub.mirror.push("library/app", "latest", &img);
    // The mirror serves the manifest, then fails every blob download.
    let proxy = FaultProxy::start(&hub.mirror);
    proxy.inject(Some("GET"), "/blobs/", Fault::Status(503, None), 1000);
    let source = hub.source(&proxy.host());
    for format in ["rootfs", "oci", "oci-layout"] {
        let dest = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = step(
            "in",
            Some(dest.path()),
            &envs,
            json!({"source": source, "version": {"tag": "latest", "digest": digest},
                   "params": {"format": format}}),
        );
        out.json();
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the mirror held the step for {:?}",
            started.elapsed()
        );
        assert!(out.stderr.contains("using the origin"), "{}", out.stderr);
        let expected: &[&str] = match format {
            "rootfs" => &[
                "digest",
                "labels.json",
                "metadata.json",
                "repository",
                "rootfs",
                "tag",
            ],
            "oci" => &["digest", "image.tar", "labels.json", "repository", "tag"],
            _ => &["digest", "oci", "repository", "tag"],
        };
        assert_eq!(files(dest.path()), expected, "{format}");
    }
}

fn write_docker_config(dir: &Path, config: Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[test]
fn docker_config_credentials_when_the_source_has_none() {
    let registry = TestRegistry::basic("dockeruser", "docker-config-pw-canary");
    let digest = registry.push("team/app", "latest", &TestImage::seeded("docker-config"));
    let home = tempfile::tempdir().unwrap();
    let config_dir = home.path().join("docker");
    let auth =
        base64::engine::general_purpose::STANDARD.encode("dockeruser:docker-config-pw-canary");
    write_docker_config(
        &config_dir,
        json!({"auths": {format!("http://{}", registry.host()): {"auth": auth}}}),
    );
    let config_env = config_dir.to_str().unwrap().to_owned();
    let envs = [("DOCKER_CONFIG", config_env.as_str())];
    let source = json!({"repository": registry.repo("team/app"), "tag": "latest"});
    let versions = support::versions(&step("check", None, &envs, json!({"source": source})));
    assert_eq!(versions, vec![("latest".to_owned(), digest.clone())]);
    // Without it: refused.
    let out = step("check", None, &[], json!({"source": source}));
    assert!(out.error_line().contains("requires authentication"));

    // Source credentials always win over the config.
    write_docker_config(
        &config_dir,
        json!({"auths": {registry.host(): {"username": "dockeruser", "password": "wrong-pw-canary"}}}),
    );
    let mut with_creds = source.clone();
    with_creds["username"] = json!("dockeruser");
    with_creds["password"] = json!("docker-config-pw-canary");
    support::versions(&step("check", None, &envs, json!({"source": with_creds})));
    let out = step("check", None, &envs, json!({"source": source}));
    assert!(out.error_line().contains("refused the credentials"));

    // A credential helper (credHelpers for this registry).
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-test");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 2\n\
         echo \"{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"dockeruser\\\",\\\"Secret\\\":\\\"docker-config-pw-canary\\\"}\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_docker_config(
        &config_dir,
        json!({"credHelpers": {registry.host(): "test"}, "credsStore": "missing-helper"}),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let envs = [
        ("DOCKER_CONFIG", config_env.as_str()),
        ("PATH", path.as_str()),
    ];
    let versions = support::versions(&step("check", None, &envs, json!({"source": source})));
    assert_eq!(versions, vec![("latest".to_owned(), digest)]);
}

#[test]
fn no_secret_in_any_output_of_any_step() {
    // Every step, succeeding and failing, with debug logs on.
    let registry = TestRegistry::token("canary-user", "helper-pw-canary");
    let src = tempfile::tempdir().unwrap();
    write_docker_save(
        &src.path().join("image.tar"),
        &TestImage::seeded("canary"),
        "x:y",
    );
    for password in ["helper-pw-canary", "wrong-pw-canary"] {
        let source = json!({"repository": registry.repo("team/canary"), "tag": "latest",
                            "username": "canary-user", "password": password, "debug": true});
        let out = step(
            "out",
            Some(src.path()),
            &[],
            json!({"source": source, "params": {"image": "image.tar"}}),
        );
        let check = step("check", None, &[], json!({"source": source}));
        let dest = tempfile::tempdir().unwrap();
        let digest = registry
            .digest_of("team/canary", "latest")
            .unwrap_or_else(|| format!("sha256:{}", "0".repeat(64)));
        let get = step(
            "in",
            Some(dest.path()),
            &[],
            json!({"source": source, "version": {"tag": "latest", "digest": digest}}),
        );
        let ok = password == "helper-pw-canary";
        assert_eq!(
            (out.success, check.success, get.success),
            (ok, ok, ok),
            "{password}: {} {} {}",
            out.stderr,
            check.stderr,
            get.stderr
        );
    }
}

/// Secrets given with the wrong JSON type (YAML's unquoted `12345`, a list,
/// a map): a number is taken as its text, anything else is refused naming
/// the field, and the value appears in no output of any step.
#[test]
fn secrets_of_any_json_type_never_reach_the_output() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    write_docker_save(
        &src.path().join("image.tar"),
        &TestImage::seeded("typed"),
        "x:y",
    );
    let number: u64 = 918_273_645_501;
    let wrong = [
        json!(number),
        json!(-7_364_591.25),
        json!(["list-secret-canary"]),
        json!({"k": "map-secret-canary"}),
        json!(true),
    ];
    let canaries = [
        "918273645501",
        "7364591.25",
        "list-secret-canary",
        "map-secret-canary",
    ];
    for field in [
        "password",
        "aws_secret_access_key",
        "aws_session_token",
        "mirror",
    ] {
        for value in &wrong {
            let mut source = json!({"repository": registry.repo("typed/app"), "tag": "latest",
                                    "username": "u", "debug": true});
            if field == "mirror" {
                source["registry_mirror"] =
                    json!({"host": registry.host(), "username": "m", "password": value});
            } else {
                source[field] = value.clone();
            }
            let dest = tempfile::tempdir().unwrap();
            let outs = [
                run_step_env(
                    "out",
                    &[src.path().to_str().unwrap()],
                    &[],
                    &json!({"source": source, "params": {"image": "image.tar"}}),
                ),
                run_step_env("check", &[], &[], &json!({"source": source})),
                run_step_env(
                    "in",
                    &[dest.path().to_str().unwrap()],
                    &[],
                    &json!({"source": source, "version": {"tag": "latest", "digest": format!("sha256:{}", "1".repeat(64))}}),
                ),
            ];
            for out in &outs {
                out.assert_none_leaked(&canaries, &format!("{field}={value}: "));
                if !value.is_number() {
                    let line = out.error_line();
                    let named = if field == "mirror" { "password" } else { field };
                    assert!(line.contains(named), "{field}={value}: {line}");
                }
            }
            if value.is_number() && field == "password" {
                assert!(
                    outs[0].success && outs[1].success,
                    "{}{}",
                    outs[0].stderr,
                    outs[1].stderr
                );
            }
        }
    }
}

/// With `aws_region` set, the ECR token goes only to the registry ECR
/// named: a repository on another registry gets the source's own
/// credentials (here the right ones for it), and the step says so.
#[test]
fn the_ecr_token_never_leaves_the_ecr_registry() {
    let ecr_registry = TestRegistry::basic("AWS", "ecr-registry-pw-canary");
    let other = TestRegistry::basic("other-user", "wrong-pw-canary");
    other.push("team/app", "latest", &TestImage::seeded("other"));
    let aws = AwsMock::start(
        &format!("http://{}", ecr_registry.host()),
        "ecr-registry-pw-canary",
    );
    let owned = aws.envs();
    let envs = as_refs(&owned);
    let source = ecr_source(json!({
        "repository": other.repo("team/app"),
        "username": "other-user",
        "password": "wrong-pw-canary",
    }));
    let out = step("check", None, &envs, json!({"source": source}));
    assert_eq!(
        support::versions(&out),
        [(
            "latest".to_owned(),
            other.digest_of("team/app", "latest").unwrap()
        )],
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("not sending the ECR token to"),
        "{}",
        out.stderr
    );
    // Without credentials of its own, the other registry gets none.
    let mut anonymous = source.clone();
    anonymous.as_object_mut().unwrap().remove("username");
    anonymous.as_object_mut().unwrap().remove("password");
    let out = step("check", None, &envs, json!({"source": anonymous}));
    assert!(
        out.error_line().contains("requires authentication"),
        "{}",
        out.stderr
    );
}
