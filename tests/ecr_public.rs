//! Amazon ECR Public through the real code paths, offline (issue 27 item 2,
//! upstream PR #379): the test runs itself again inside a private user,
//! network and mount namespace (no route out; `/etc/hosts` names
//! `public.ecr.aws` 127.0.0.1). There an HTTPS front (certificates from a
//! test CA given in `ca_certs`) serves a real `docker-registry`'s API and,
//! at `/token`, the harness's token service, as ECR Public serves both on
//! its one host (`realm="https://public.ecr.aws/token",
//! service="public.ecr.aws"`; anonymous pulls, `registry-quirks.md` §3).
//! The AWS `ecr-public` API is the stand-in of `support/aws.rs`, which
//! answers `SpencerFrontendService.GetAuthorizationToken` as the API
//! reference shows (one `authorizationData` object, `AWS:<password>`).

mod support;

use serde_json::{Value, json};
use support::aws::AwsMock;
use support::image::{Entry, TestImage, tar, write_oci_layout};
use support::proxy::FaultProxy;
use support::token_server::TokenServer;
use support::{StepOutput, TestRegistry, private_network, run_step_env, tls};

const PASSWORD: &str = "ecr-public-password-canary";
const ACCESS_KEY: &str = "AKIDPUBLICPUSHER";
const SECRET_KEY: &str = "secret-key-canary";
const REPOSITORY: &str = "public.ecr.aws/team-alias/app";

struct Rig {
    ca: String,
    aws: AwsMock,
    work: tempfile::TempDir,
}

impl Rig {
    fn source(&self, with_aws: bool) -> Value {
        let mut source = json!({"repository": REPOSITORY, "tag": "latest", "ca_certs": [self.ca]});
        if with_aws {
            source["aws_region"] = json!("eu-west-1");
            source["aws_access_key_id"] = json!(ACCESS_KEY);
            source["aws_secret_access_key"] = json!(SECRET_KEY);
        }
        source
    }

    fn step(&self, name: &str, args: &[&str], request: Value) -> StepOutput {
        let envs = self.aws.envs();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_step_env(name, args, &envs, &request)
    }

    fn push(&self, with_aws: bool) -> StepOutput {
        let layout = self.work.path().join("image");
        if !layout.exists() {
            let layer = tar(&[Entry::file("etc/ecr-public", "hello")]);
            let image = TestImage::new(vec![layer], json!({}), ("linux", "amd64"));
            write_oci_layout(&layout, "latest", &image);
        }
        self.step(
            "out",
            &[self.work.path().to_str().unwrap()],
            json!({"source": self.source(with_aws), "params": {"image": "image"}}),
        )
    }
}

#[test]
fn ecr_public_pulls_anonymously_and_pushes_with_aws_credentials() {
    if !private_network::inside() {
        return private_network::run_test_inside(
            "ecr_public_pulls_anonymously_and_pushes_with_aws_credentials",
            &[
                ("127.0.0.1", "public.ecr.aws"),
                ("127.0.0.2", "elsewhere.example"),
            ],
            &[],
        );
    }
    private_network::assert_no_route_out();
    let tls = tls::generate_for(&["public.ecr.aws", "elsewhere.example"], &[]);
    let tokens = TokenServer::for_service("AWS", PASSWORD, "public.ecr.aws");
    tokens.allow_anonymous_pull();
    let token_upstream = format!("http://127.0.0.1:{}", tokens.port);
    let registry = TestRegistry::token_as(tokens, "https://public.ecr.aws/token", "public.ecr.aws");
    let front = FaultProxy::tls_front(
        &format!("http://{}", registry.host()),
        &token_upstream,
        std::net::Ipv4Addr::LOCALHOST,
        &tls,
    );
    let tokens = registry.token_server.as_ref().unwrap();
    let rig = Rig {
        ca: tls.ca_pem.clone(),
        aws: AwsMock::start("https://public.ecr.aws", PASSWORD),
        work: tempfile::tempdir().unwrap(),
    };

    // A push without AWS credentials: anonymous tokens pull only.
    let refused = rig.push(false);
    assert!(!refused.success, "{}", refused.stdout);
    let errors: Vec<&str> = refused
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("set aws_region and AWS credentials"),
        "{}",
        refused.stderr
    );

    // With them: the ecr-public token, asked in us-east-1 whatever the
    // source's region, signed with the source's key.
    let pushed = rig.push(true);
    assert!(pushed.success, "{}", pushed.stderr);
    let digest = pushed.json()["version"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let calls = rig.aws.calls();
    assert!(
        calls.iter().any(
            |(call, key, _)| call == "ecr-public GetAuthorizationToken us-east-1"
                && key == ACCESS_KEY
        ),
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|(call, _, _)| call == "GetAuthorizationToken"),
        "private ECR was not asked: {calls:?}"
    );
    let queries = tokens.queries();
    assert!(
        queries.iter().any(|q| q.contains("service=public.ecr.aws")
            && q.contains("scope=repository%3Ateam-alias%2Fapp%3Apull%2Cpush")),
        "{queries:?}"
    );
    // The password went to the token endpoint only, as Basic; the
    // registry's API saw bearer tokens.
    for (method, path, scheme) in front.authorized() {
        match path.starts_with("/token") {
            true => assert_eq!(scheme, "Basic", "{method} {path}"),
            false => assert_eq!(scheme, "Bearer", "{method} {path}"),
        }
    }
    assert!(!pushed.stderr.contains(PASSWORD) && !pushed.stderr.contains(SECRET_KEY));

    // Anonymous pulls: check and in, no AWS call, no credentials sent.
    rig.aws.clear();
    let authorized_before = front.authorized().len();
    let check = rig.step("check", &[], json!({"source": rig.source(false)}));
    assert!(check.success, "{}", check.stderr);
    assert_eq!(check.json()[0]["digest"], json!(digest));
    let dest = tempfile::tempdir().unwrap();
    let got = rig.step(
        "in",
        &[dest.path().to_str().unwrap()],
        json!({"source": rig.source(false), "version": {"tag": "latest", "digest": digest}}),
    );
    assert!(got.success, "{}", got.stderr);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("rootfs/etc/ecr-public")).unwrap(),
        "hello"
    );
    assert!(rig.aws.calls().is_empty());
    let pulls = &front.authorized()[authorized_before..];
    assert!(!pulls.is_empty());
    assert!(
        pulls.iter().all(|(_, _, scheme)| scheme == "Bearer"),
        "{pulls:?}"
    );

    // The guard: a challenge naming a token realm on another host gets
    // nothing, though the ECR Public token is at hand.
    let elsewhere = FaultProxy::tls_front(
        &token_upstream,
        &token_upstream,
        std::net::Ipv4Addr::new(127, 0, 0, 2),
        &tls,
    );
    front.rewrite_challenge_realm("https://elsewhere.example/token");
    let diverted = rig.step("check", &[], json!({"source": rig.source(true)}));
    assert!(!diverted.success, "{}", diverted.stdout);
    assert!(
        diverted
            .stderr
            .contains("the ECR Public credentials go only to public.ecr.aws"),
        "{}",
        diverted.stderr
    );
    assert!(
        elsewhere.requests().is_empty(),
        "the other host got {:?}",
        elsewhere.requests()
    );
    assert!(!diverted.stderr.contains(PASSWORD));
}
