//! Docker Hub's names and auth through the real code paths, offline: the
//! test runs itself again inside a private user, network and mount
//! namespace (only a loopback, no route out; `/etc/hosts` bound over with
//! Hub's names). There, a real `docker-registry` serves HTTPS as
//! `registry-1.docker.io` on 127.0.0.1:443 with Docker Hub's token auth
//! (`realm="https://auth.docker.io/token",service="registry.docker.io"`),
//! and the harness's token service answers as `auth.docker.io` on
//! 127.0.0.2:443; certificates come from a test CA given through
//! `ca_certs`. `docker.io` and `index.docker.io` resolve nowhere, so a
//! step that named them on the wire would fail: every name form must
//! become the API host as Docker Hub's clients do (registry-quirks.md §4).
//! The real Docker Hub is never contacted: there is no route to it.

mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use support::image::{Entry, TestImage, tar, write_oci_layout};
use support::proxy::FaultProxy;
use support::token_server::TokenServer;
use support::{StepOutput, TestRegistry, private_network, run_step, run_step_env, tls};

const USER: &str = "hub-user";
const PASSWORD: &str = "hub-password";

fn image(seed: &str) -> TestImage {
    let layer = tar(&[Entry::file("etc/seed", seed)]);
    TestImage::new(vec![layer], json!({"Env": ["HUB=1"]}), ("linux", "amd64"))
}

struct Hub {
    ca: String,
    work: tempfile::TempDir,
}

impl Hub {
    fn source(&self, repository: &str, extra: Value) -> Value {
        let mut source = json!({"repository": repository, "tag": "latest",
                                "ca_certs": [self.ca]});
        for (key, value) in extra.as_object().unwrap() {
            source[key] = value.clone();
        }
        source
    }

    fn credentials(&self, repository: &str) -> Value {
        self.source(repository, json!({"username": USER, "password": PASSWORD}))
    }

    fn step(&self, name: &str, request: Value) -> StepOutput {
        run_step(name, &[self.work.path().to_str().unwrap()], &request)
    }

    fn check(&self, source: Value) -> String {
        let out = self.step("check", json!({ "source": source }));
        assert!(out.success, "{}", out.stderr);
        out.json()[0]["digest"].as_str().unwrap().to_owned()
    }

    fn push(&self, repository: &str, seed: &str) -> String {
        let layout = self.work.path().join(seed);
        write_oci_layout(&layout, "latest", &image(seed));
        let out = self.step(
            "out",
            json!({"source": self.credentials(repository),
                   "params": {"image": layout.file_name().unwrap().to_str().unwrap()}}),
        );
        assert!(out.success, "{}", out.stderr);
        out.json()["version"]["digest"].as_str().unwrap().to_owned()
    }
}

#[test]
fn docker_hub_names_auth_config_and_mirror_in_a_private_network() {
    if !private_network::inside() {
        return private_network::run_test_inside(
            "docker_hub_names_auth_config_and_mirror_in_a_private_network",
            &[
                ("127.0.0.1", "registry-1.docker.io"),
                ("127.0.0.2", "auth.docker.io"),
            ],
            &[],
        );
    }
    private_network::assert_no_route_out();
    let tls = tls::generate_for(&["registry-1.docker.io", "auth.docker.io"], &[]);
    let token_server = TokenServer::docker_hub(USER, PASSWORD, &tls);
    let ca = tls.ca_pem.clone();
    let registry = TestRegistry::docker_hub(token_server, tls);
    let hub = Hub {
        ca,
        work: tempfile::tempdir().unwrap(),
    };
    let tokens = registry.token_server.as_ref().unwrap();

    // out by a one-component name lands in library/, through Hub's token
    // service, with Hub's service and scope.
    let alpine = hub.push("alpine", "hub-alpine");
    let busybox = hub.push("docker.io/busybox", "hub-busybox");
    assert_ne!(alpine, busybox);
    let queries = tokens.queries();
    assert!(!queries.is_empty());
    for query in &queries {
        assert!(query.contains("service=registry.docker.io"), "{query}");
    }
    for scope in [
        "scope=repository%3Alibrary%2Falpine%3Apull%2Cpush",
        "scope=repository%3Alibrary%2Fbusybox%3Apull%2Cpush",
    ] {
        assert!(
            queries.iter().any(|q| q.contains(scope)),
            "{scope} not asked for: {queries:?}"
        );
    }

    // Every name form of one repository is the same repository.
    for name in [
        "alpine",
        "library/alpine",
        "docker.io/alpine",
        "docker.io/library/alpine",
        "index.docker.io/library/alpine",
        "registry-1.docker.io/library/alpine",
    ] {
        assert_eq!(hub.check(hub.credentials(name)), alpine, "{name}");
    }
    let pulls = tokens.queries();
    assert!(
        pulls.iter().any(
            |q| q.contains("scope=repository%3Alibrary%2Falpine%3Apull") && !q.contains("push")
        ),
        "no pull-only token asked for: {pulls:?}"
    );

    // in, by Hub's short name.
    let dest = tempfile::tempdir().unwrap();
    let got = run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": hub.credentials("alpine"),
                "version": {"tag": "latest", "digest": alpine}}),
    );
    assert!(got.success, "{}", got.stderr);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("rootfs/etc/seed")).unwrap(),
        "hub-alpine"
    );

    // The docker config's Docker Hub key, `https://index.docker.io/v1/`,
    // is found for every Hub name; without it the private repository is
    // refused (anonymous Hub tokens grant nothing here).
    let config = hub.work.path().join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        config.join("config.json"),
        json!({"auths": {"https://index.docker.io/v1/": {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let refused = hub.step("check", json!({"source": hub.source("alpine", json!({}))}));
    assert!(!refused.success, "an anonymous check was let in");
    for name in [
        "alpine",
        "docker.io/library/alpine",
        "index.docker.io/library/alpine",
    ] {
        let out = run_step_env(
            "check",
            &[hub.work.path().to_str().unwrap()],
            &[("DOCKER_CONFIG", config.to_str().unwrap())],
            &json!({"source": hub.source(name, json!({}))}),
        );
        assert!(out.success, "{name}: {}", out.stderr);
        assert_eq!(out.json()[0]["digest"], alpine, "{name}");
    }

    mirror_serves_only_docker_hub_names_and_only_pulls(&hub, &alpine, &busybox);
    drop(registry);
}

/// `registry_mirror` is used for Docker Hub names only, for pulls only,
/// and a mirror without the image falls back to Hub (as the original).
fn mirror_serves_only_docker_hub_names_and_only_pulls(hub: &Hub, alpine: &str, busybox: &str) {
    let mirror_registry = TestRegistry::plain();
    let mirrored = mirror_registry.push("library/alpine", "latest", &image("mirror-alpine"));
    let mirror = FaultProxy::start(&mirror_registry);
    let with_mirror = |name: &str| {
        hub.credentials(name)
            .as_object()
            .cloned()
            .map(|mut source| {
                source.insert("registry_mirror".into(), json!({"host": mirror.host()}));
                Value::Object(source)
            })
            .unwrap()
    };
    assert_eq!(hub.check(with_mirror("alpine")), mirrored);
    assert_eq!(hub.check(with_mirror("docker.io/library/alpine")), mirrored);
    let dest = tempfile::tempdir().unwrap();
    let got = run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": with_mirror("alpine"),
                "version": {"tag": "latest", "digest": mirrored}}),
    );
    assert!(got.success, "{}", got.stderr);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("rootfs/etc/seed")).unwrap(),
        "mirror-alpine"
    );
    // A mirror on an IPv6 literal.
    let mirror_v6 = TestRegistry::plain_ipv6();
    let on_v6 = mirror_v6.push("library/alpine", "latest", &image("mirror-v6-alpine"));
    let mut source = hub.credentials("alpine");
    source["registry_mirror"] = json!({"host": mirror_v6.host()});
    assert!(mirror_v6.host().starts_with("[::1]:"));
    assert_eq!(hub.check(source), on_v6);
    // Not on the mirror: Hub answers.
    assert_eq!(hub.check(with_mirror("busybox")), busybox);
    // A name on another registry never goes to the mirror.
    let other = TestRegistry::plain();
    let elsewhere = other.push("library/alpine", "latest", &image("other-alpine"));
    mirror.clear_log();
    let mut source = with_mirror(&other.repo("library/alpine"));
    source.as_object_mut().unwrap().remove("username");
    source.as_object_mut().unwrap().remove("password");
    assert_eq!(hub.check(source), elsewhere);
    assert!(mirror.requests().is_empty(), "{:?}", mirror.requests());
    // out goes to Hub, never to the mirror.
    let layout = hub.work.path().join("pushed-with-mirror");
    write_oci_layout(&layout, "latest", &image("pushed-with-mirror"));
    let out = hub.step(
        "out",
        json!({"source": with_mirror("alpine"), "params": {"image": "pushed-with-mirror"}}),
    );
    assert!(out.success, "{}", out.stderr);
    assert!(
        !mirror
            .requests()
            .iter()
            .any(|(m, _)| m != "GET" && m != "HEAD"),
        "{:?}",
        mirror.requests()
    );
    assert_eq!(
        mirror_registry
            .digest_of("library/alpine", "latest")
            .unwrap(),
        mirrored
    );
    let pushed = out.json()["version"]["digest"].as_str().unwrap().to_owned();
    assert_ne!(pushed, alpine);
    assert_eq!(hub.check(hub.credentials("alpine")), pushed);
}
