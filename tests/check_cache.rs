//! `check` in a kept container: the registry's session and its tokens are
//! reused between runs (issue 27, "cheap checks at scale"), and nothing in
//! the cache is trusted further than a fresh answer would be.
//!
//! Requests are counted at a recording proxy in front of a real registry
//! (distribution with token auth) and at the token service.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::proxy::FaultProxy;
use support::token_server::{TokenReply, TokenServer};
use support::{StepOutput, TestImage, TestRegistry, run_step_env, versions};

const USER: &str = "cache-user";
const PASSWORD: &str = "cache-password-9f3e";

struct Rig {
    registry: TestRegistry,
    proxy: FaultProxy,
    cache: tempfile::TempDir,
    digest: String,
}

impl Rig {
    fn new() -> Rig {
        let registry = TestRegistry::token(USER, PASSWORD);
        let digest = registry.push("cached/image", "latest", &TestImage::seeded("cache"));
        let proxy = FaultProxy::start(&registry);
        Rig {
            registry,
            proxy,
            cache: tempfile::tempdir().unwrap(),
            digest,
        }
    }

    fn tokens(&self) -> &TokenServer {
        self.registry.token_server.as_ref().unwrap()
    }

    fn cache_dir(&self) -> PathBuf {
        self.cache.path().join("cache")
    }

    fn source(&self, password: &str) -> Value {
        json!({"repository": self.proxy.repo("cached/image"), "tag": "latest",
               "username": USER, "password": password})
    }

    fn check_as(&self, password: &str) -> StepOutput {
        let dir = self.cache_dir();
        run_step_env(
            "check",
            &[],
            &[("REGISTRY_IMAGE_CACHE_DIR", dir.to_str().unwrap())],
            &json!({"source": self.source(password)}),
        )
    }

    /// Runs a check and returns (requests to the registry, requests to the
    /// token service) it made.
    fn counted_check(&self) -> (usize, usize) {
        self.proxy.clear_log();
        let tokens_before = self.tokens().request_count();
        let out = self.check_as(PASSWORD);
        assert_eq!(
            versions(&out),
            [("latest".to_owned(), self.digest.clone())],
            "{}",
            out.stderr
        );
        (
            self.proxy.requests().len(),
            self.tokens().request_count() - tokens_before,
        )
    }

    /// `GET /v2/` pings seen since the log was cleared.
    fn pings(&self) -> usize {
        self.proxy
            .requests()
            .iter()
            .filter(|(m, p)| m == "GET" && p == "/v2/")
            .count()
    }

    fn files(&self, prefix: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.cache_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .collect();
        files.sort();
        files
    }

    fn only_file(&self, prefix: &str) -> PathBuf {
        let files = self.files(prefix);
        assert_eq!(files.len(), 1, "{prefix} files: {files:?}");
        files.into_iter().next().unwrap()
    }
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, value.to_string()).unwrap();
}

#[test]
fn a_warm_check_of_an_unchanged_tag_is_one_request() {
    let rig = Rig::new();
    assert_eq!(
        rig.counted_check(),
        (2, 1),
        "cold: ping and HEAD, one token"
    );
    assert_eq!(rig.counted_check(), (1, 0), "warm: the HEAD only");
    assert_eq!(rig.proxy.count("HEAD", "/manifests/latest"), 1);
    assert_eq!(rig.counted_check(), (1, 0));

    // Private: the directory 0700, the files 0600, all ours; the password
    // itself is in none of them (the token's key holds a hash of it).
    let dir = std::fs::metadata(rig.cache_dir()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    for file in std::fs::read_dir(rig.cache_dir()).unwrap() {
        let path = file.unwrap().path();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{path:?}");
        assert_eq!(meta.uid(), dir.uid());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(PASSWORD), "{path:?} holds the password");
    }
    rig.only_file("session-");
    rig.only_file("token-");
}

#[test]
fn another_password_never_gets_the_cached_token() {
    let rig = Rig::new();
    assert_eq!(rig.counted_check(), (2, 1));
    let tokens_before = rig.tokens().request_count();
    let out = rig.check_as("not-the-password");
    assert!(!out.success, "{}", out.stdout);
    assert!(
        out.stderr.contains("check username and password"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("not-the-password"), "{}", out.stderr);
    assert!(
        rig.tokens().request_count() > tokens_before,
        "the token service was asked, with the wrong password"
    );
    // The right password still finds its token.
    assert_eq!(rig.counted_check(), (1, 0));
}

#[test]
fn a_refused_cached_token_is_renewed_once_and_kept() {
    let rig = Rig::new();
    rig.counted_check();
    // The registry's answer to a token it no longer accepts (a revoked or
    // re-keyed token service) is a 401: the token is fetched again, once.
    edit_json(&rig.only_file("token-"), |v| v["token"] = json!("revoked"));
    assert_eq!(rig.counted_check(), (2, 1), "HEAD refused, token, HEAD");
    assert_eq!(rig.proxy.count("HEAD", "/manifests/latest"), 2);
    let renewed = std::fs::read_to_string(rig.only_file("token-")).unwrap();
    assert!(!renewed.contains("revoked"));
    assert_eq!(rig.counted_check(), (1, 0));
}

#[test]
fn a_token_is_not_used_in_the_last_part_of_its_life() {
    let rig = Rig::new();
    // 4 s: used for 2 s (the margin is 30 s or half the lifetime).
    rig.tokens().reply_with(TokenReply::Lifetime(4));
    assert_eq!(rig.counted_check(), (2, 1));
    assert_eq!(rig.counted_check(), (1, 0));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(
        rig.counted_check(),
        (1, 1),
        "a fresh token, the session kept"
    );
    // A token that lasts no longer than the margin is never kept.
    rig.tokens().reply_with(TokenReply::Lifetime(0));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(rig.counted_check(), (1, 1));
    assert_eq!(rig.counted_check(), (1, 1));
}

#[test]
fn a_cached_session_the_registry_refuses_is_pinged_again() {
    let rig = Rig::new();
    rig.counted_check();
    // The registry asked for tokens; the file now says it asked for none.
    edit_json(&rig.only_file("session-"), |v| {
        v["auth"] = json!({"mode": "anonymous"})
    });
    let (registry, tokens) = rig.counted_check();
    assert_eq!((registry, tokens), (3, 0), "HEAD refused, ping, HEAD");
    assert_eq!(rig.pings(), 1);
    let fixed = std::fs::read_to_string(rig.only_file("session-")).unwrap();
    assert!(fixed.contains("bearer"), "{fixed}");
    assert_eq!(rig.counted_check(), (1, 0));
}

#[test]
fn a_session_file_cannot_send_requests_or_credentials_elsewhere() {
    let rig = Rig::new();
    rig.counted_check();
    let session = rig.only_file("session-");
    // Another host as the registry's base: not what this source names.
    edit_json(&session, |v| v["base"] = json!("http://127.0.0.1:9/"));
    assert_eq!(rig.counted_check(), (2, 0), "pinged again; token kept");
    assert_eq!(rig.pings(), 1);
    // A token realm over plain HTTP for an HTTPS registry is refused as a
    // ping's would be; here the base is plain HTTP, so the realm is
    // checked for its form: not a URL at all.
    edit_json(&session, |v| {
        v["auth"] = json!({"mode": "bearer", "realm": "not a url", "service": null})
    });
    assert_eq!(rig.counted_check(), (2, 0));
    // Garbage, a link, a file open to others: each ignored.
    std::fs::write(&session, b"\x00garbage").unwrap();
    assert_eq!(rig.counted_check(), (2, 0));
    std::fs::set_permissions(&session, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(rig.counted_check(), (2, 0));
    assert_eq!(rig.counted_check(), (1, 0), "and the cache works again");
}

#[test]
fn a_cache_directory_open_to_others_is_not_used() {
    let rig = Rig::new();
    std::fs::create_dir(rig.cache_dir()).unwrap();
    std::fs::set_permissions(rig.cache_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(rig.counted_check(), (2, 1));
    assert_eq!(rig.counted_check(), (2, 1), "still cold, and no error");
    assert!(rig.files("").is_empty());
}

#[test]
fn the_cache_lives_in_the_temporary_directory_and_only_check_uses_it() {
    let rig = Rig::new();
    let tmp = tempfile::tempdir().unwrap();
    let run = |step: &str, request: Value, args: &[&str]| {
        run_step_env(
            step,
            args,
            &[("TMPDIR", tmp.path().to_str().unwrap())],
            &request,
        )
    };
    let out = run("check", json!({"source": rig.source(PASSWORD)}), &[]);
    assert!(out.success, "{}", out.stderr);
    let uid = std::fs::metadata(tmp.path()).unwrap().uid();
    let dir = tmp.path().join(format!("registry-image-{uid}"));
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    rig.proxy.clear_log();
    let out = run("check", json!({"source": rig.source(PASSWORD)}), &[]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(rig.proxy.requests().len(), 1);

    // `in` starts its own session (its container is new in Concourse).
    rig.proxy.clear_log();
    let dest = tempfile::tempdir().unwrap();
    let out = run(
        "in",
        json!({"source": rig.source(PASSWORD),
               "version": {"digest": rig.digest}, "params": {"skip_download": true}}),
        &[dest.path().to_str().unwrap()],
    );
    assert!(out.success, "{}", out.stderr);
    assert_eq!(rig.pings(), 1, "{:?}", rig.proxy.requests());
}
