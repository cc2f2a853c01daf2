//! Credentials never travel in clear to a registry off this host unless the
//! source says `insecure: true`. A registry at a private (RFC 1918) address
//! that speaks only plain HTTP is reached through the original's
//! https-then-http fallback; with credentials that fallback stops with a
//! clear error. The registry runs in a private network namespace with a
//! `10.x` address on its own loopback device, so no packet leaves the
//! namespace and the address is a real non-loopback one to the client.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::json;

const ADDRESS: &str = "10.213.0.7";
const USER: &str = "ci";
const PASSWORD: &str = "plain-http-canary-9081";

/// One step run inside the namespace: its exit code, stdout and stderr.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Starts an htpasswd registry on `ADDRESS:5000` inside a fresh user and
/// network namespace, runs `check` once per request, and returns what each
/// run gave.
fn run_in_private_network(requests: &[serde_json::Value]) -> Vec<Outcome> {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash_with_result(PASSWORD, 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    std::fs::write(dir.path().join("htpasswd"), format!("{USER}:{hash}\n")).unwrap();
    std::fs::write(
        dir.path().join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n\
             http:\n  addr: {ADDRESS}:5000\n\
             auth:\n  htpasswd:\n    realm: test-realm\n    path: {htpasswd}\n",
            storage = dir.path().join("storage").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        ),
    )
    .unwrap();
    for (i, request) in requests.iter().enumerate() {
        std::fs::write(dir.path().join(format!("in{i}")), request.to_string()).unwrap();
    }
    let check = support::resource_dir().join("check");
    // Bounded: the registry gets 10 s to listen; each step runs under the
    // test's short timeouts.
    let script = format!(
        r#"set -eu
ip link set lo up
ip addr add {ADDRESS}/32 dev lo
/usr/bin/docker-registry serve config.yml >registry.log 2>&1 &
for i in $(seq 100); do
  if (exec 3<>/dev/tcp/{ADDRESS}/5000) 2>/dev/null; then break; fi
  sleep 0.1
done
for i in $(seq 0 {last}); do
  rc=0
  {check} <in$i >out$i 2>err$i || rc=$?
  echo $rc >rc$i
done
kill %1
"#,
        last = requests.len() - 1,
        check = check.display(),
    );
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "bash", "-c", &script])
        .current_dir(dir.path())
        .env("REGISTRY_IMAGE_READ_TIMEOUT_MS", "5000")
        .env("REGISTRY_IMAGE_RETRY_BUDGET_MS", "3000")
        .status()
        .expect("unshare (util-linux) and ip (iproute2) are installed");
    let log = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
    assert!(
        status.success(),
        "the namespace script failed; registry log: {log}"
    );
    let read = |name: String| std::fs::read_to_string(dir.path().join(name)).unwrap();
    (0..requests.len())
        .map(|i| Outcome {
            code: read(format!("rc{i}")).trim().parse().unwrap(),
            stdout: read(format!("out{i}")),
            stderr: read(format!("err{i}")),
        })
        .collect()
}

#[test]
fn credentials_are_refused_over_plain_http_off_this_host_unless_insecure() {
    assert!(
        Path::new("/usr/bin/docker-registry").exists(),
        "run scripts/setup"
    );
    let source = |insecure: Option<bool>, password: &str| {
        let mut source = json!({"repository": format!("{ADDRESS}:5000/team/app"), "tag": "1.0",
                                "username": USER, "password": password});
        if let Some(insecure) = insecure {
            source["insecure"] = insecure.into();
        }
        json!({ "source": source })
    };
    let outcomes = run_in_private_network(&[
        source(None, PASSWORD),
        source(Some(false), PASSWORD),
        source(Some(true), PASSWORD),
        source(Some(true), "not-the-password"),
    ]);

    // Without insecure: one clear line, nothing on stdout, no secret.
    for (i, refused) in outcomes[..2].iter().enumerate() {
        assert_eq!(refused.code, 1, "run {i}: {}", refused.stderr);
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
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    assert_eq!(allowed.stdout.trim(), "[]", "{}", allowed.stderr);
    let wrong = &outcomes[3];
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("refused the credentials"),
        "{}",
        wrong.stderr
    );
}
