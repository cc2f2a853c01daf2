//! Credentials never travel in clear to a registry off this host unless the
//! source says `insecure: true`. A registry at a private (RFC 1918) address
//! that speaks only plain HTTP is reached through the original's
//! https-then-http fallback; with credentials that fallback stops with a
//! clear error. The registry runs in a private network namespace with a
//! `10.x` address on its own loopback device, so no packet leaves the
//! namespace and the address is a real non-loopback one to the client.

mod support;

use serde_json::json;
use support::{TestRegistry, private_network, run_step_env};

const ADDRESS: &str = "10.213.0.7";
const USER: &str = "ci";
const PASSWORD: &str = "plain-http-canary-9081";

#[test]
fn credentials_are_refused_over_plain_http_off_this_host_unless_insecure() {
    if !private_network::inside() {
        return private_network::run_test_inside(
            "credentials_are_refused_over_plain_http_off_this_host_unless_insecure",
            &[],
            &[ADDRESS],
        );
    }
    let _registry =
        TestRegistry::basic_at(format!("{ADDRESS}:5000").parse().unwrap(), USER, PASSWORD);
    let source = |insecure: Option<bool>, password: &str| {
        let mut source = json!({"repository": format!("{ADDRESS}:5000/team/app"), "tag": "1.0",
                                "username": USER, "password": password});
        if let Some(insecure) = insecure {
            source["insecure"] = insecure.into();
        }
        json!({ "source": source })
    };
    // Each step under short timeouts: a refusal must not wait.
    let outcomes: Vec<_> = [
        source(None, PASSWORD),
        source(Some(false), PASSWORD),
        source(Some(true), PASSWORD),
        source(Some(true), "not-the-password"),
    ]
    .iter()
    .map(|request| {
        run_step_env(
            "check",
            &[],
            &[
                ("REGISTRY_IMAGE_READ_TIMEOUT_MS", "5000"),
                ("REGISTRY_IMAGE_RETRY_BUDGET_MS", "3000"),
            ],
            request,
        )
    })
    .collect();

    // Without insecure: one clear line, nothing on stdout, no secret.
    for (i, refused) in outcomes[..2].iter().enumerate() {
        assert_eq!(refused.code, Some(1), "run {i}: {}", refused.stderr);
        assert!(refused.stdout.is_empty(), "run {i}: {}", refused.stdout);
        let line = refused.stderr.trim_end().lines().last().unwrap_or_default();
        assert!(
            line.contains("refusing to send credentials to")
                && line.contains("over plain HTTP")
                && line.contains("insecure: true"),
            "run {i}: {line}"
        );
        assert!(
            !refused.stderr.contains(PASSWORD),
            "run {i} printed the password"
        );
    }
    // With insecure: the registry gets the credentials and checks them (an
    // empty repository: no versions).
    let allowed = &outcomes[2];
    assert_eq!(allowed.code, Some(0), "{}", allowed.stderr);
    assert_eq!(allowed.stdout.trim(), "[]", "{}", allowed.stderr);
    let wrong = &outcomes[3];
    assert_eq!(wrong.code, Some(1), "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("refused the credentials"),
        "{}",
        wrong.stderr
    );
}
