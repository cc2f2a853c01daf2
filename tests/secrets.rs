//! Fields that may hold a secret (passwords, tokens, keys, and "a key or a
//! path" fields) never appear in any message, whatever is wrong with them,
//! on every step and command-line verb; and every path a put reads stays
//! inside the directory it was given. (ECR's and ACR's credentials have
//! their own canaries in `credentials.rs` and `acr.rs`.)

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::image::{TestImage, write_docker_save};
use support::{StepOutput, TestRegistry, run_program, run_step};

const KEY_CANARY: &str = "sign-key-canary";
const PASSWORD_CANARY: &str = "secret-pw-canary";
/// A PEM label of the user's own (labels are upper case and spaces).
const LABEL_CANARY: &str = "SIGN KEY CANARY";

/// A failure, with none of `canaries` in its output.
fn assert_quiet_about(out: &StepOutput, canaries: &[&str], context: &str) {
    assert!(!out.success, "{context}: expected a failure");
    out.assert_none_leaked(canaries, &format!("{context}: "));
}

fn out_step(src: &Path, source: Value, params: Value) -> StepOutput {
    run_step(
        "out",
        &[src.to_str().unwrap()],
        &json!({"source": source, "params": params}),
    )
}

#[test]
fn a_signing_key_or_its_password_is_never_in_a_message() {
    use base64::Engine as _;
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    write_docker_save(
        &src.path().join("image.tar"),
        &TestImage::seeded("s"),
        "x:y",
    );
    let dir = src.path();
    std::fs::create_dir(dir.join(format!("{KEY_CANARY}-dir"))).unwrap();
    std::fs::write(
        dir.join(format!("{KEY_CANARY}-file")),
        format!("{KEY_CANARY} junk"),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{KEY_CANARY}-a")), "x").unwrap();
    std::fs::write(dir.join(format!("{KEY_CANARY}-b")), "x").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join(format!("{KEY_CANARY}-link"))).unwrap();
    let cosign_key = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cosign/cosign_generated_encrypted_empty_private.key");
    std::fs::copy(&cosign_key, dir.join("cosign.key")).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(KEY_CANARY);
    let cases: Vec<(Value, &str)> = vec![
        // Not a path, not a PEM: no file matches.
        (json!({"key": KEY_CANARY}), "no file matches"),
        (
            json!({"key": format!("none-{KEY_CANARY}*")}),
            "no file matches",
        ),
        // A label line, then armour around junk.
        (
            json!({"key": format!("my {KEY_CANARY}\n-----BEGIN PRIVATE KEY-----\n{KEY_CANARY}\n-----END PRIVATE KEY-----")}),
            "not a PEM private key",
        ),
        // A key of a type we do not read, its body the canary.
        (
            json!({"key": format!("-----BEGIN RSA PRIVATE KEY-----\n{encoded}\n-----END RSA PRIVATE KEY-----")}),
            "is not a key this resource reads",
        ),
        // A label of the user's own.
        (
            json!({"key": format!("-----BEGIN {LABEL_CANARY}-----\n{encoded}\n-----END {LABEL_CANARY}-----")}),
            "a PEM block is not a key",
        ),
        // Paths: a directory, a file of junk, two matches, '..', a link out.
        (
            json!({"key": format!("{KEY_CANARY}-dir")}),
            "cannot be read as text",
        ),
        (
            json!({"key": format!("{KEY_CANARY}-file")}),
            "not a PEM private key",
        ),
        (
            json!({"key": format!("{KEY_CANARY}-?")}),
            "more than one file matches",
        ),
        (
            json!({"key": format!("../{KEY_CANARY}")}),
            "'..' is not allowed",
        ),
        (
            json!({"key": format!("{KEY_CANARY}-link")}),
            "leads outside the put's directory",
        ),
        // cosign's own key with a wrong password, or two passwords.
        (
            json!({"key": "cosign.key", "password": PASSWORD_CANARY}),
            "wrong password",
        ),
        (
            json!({"key": "cosign.key", "password": PASSWORD_CANARY, "password_env": "X"}),
            "cannot both be set",
        ),
    ];
    for (sign, expected) in cases {
        let out = out_step(
            src.path(),
            json!({"repository": registry.repo("secrets/app"), "tag": "t"}),
            json!({"image": "image.tar", "sign": sign}),
        );
        let line = out.error_line();
        assert!(line.contains("params.sign"), "{sign}: {line}");
        assert!(line.contains(expected), "{sign}: {line}");
        assert_quiet_about(
            &out,
            &[KEY_CANARY, PASSWORD_CANARY, LABEL_CANARY, &encoded],
            &sign.to_string(),
        );
    }
    assert!(
        registry.tags("secrets/app").is_empty(),
        "nothing was pushed"
    );
}

#[test]
fn registry_passwords_are_never_in_a_message_on_any_step_or_verb() {
    let registry = TestRegistry::basic("alice", "right-password");
    let digest = registry.push("secrets/app", "latest", &TestImage::seeded("p"));
    let wrong = json!({"repository": registry.repo("secrets/app"), "tag": "latest",
                       "username": "alice", "password": PASSWORD_CANARY});
    let check = run_step("check", &[], &json!({"source": wrong}));
    assert_quiet_about(&check, &[PASSWORD_CANARY], "check");
    let dest = tempfile::tempdir().unwrap();
    let get = run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": wrong, "version": {"tag": "latest", "digest": digest}}),
    );
    assert_quiet_about(&get, &[PASSWORD_CANARY], "in");
    let src = tempfile::tempdir().unwrap();
    write_docker_save(
        &src.path().join("image.tar"),
        &TestImage::seeded("q"),
        "x:y",
    );
    let put = out_step(src.path(), wrong.clone(), json!({"image": "image.tar"}));
    assert_quiet_about(&put, &[PASSWORD_CANARY], "out");
    // The origin of a copy, with its own (wrong) credentials.
    let copy = out_step(
        src.path(),
        json!({"repository": registry.repo("secrets/copy"), "tag": "t",
               "username": "alice", "password": "right-password"}),
        json!({"copy": {"from": format!("{}@{digest}", registry.repo("secrets/app")),
                        "source": {"username": "alice", "password": PASSWORD_CANARY}}}),
    );
    assert_quiet_about(&copy, &[PASSWORD_CANARY], "out copy");

    // Every verb, with the password on stdin: one error line, nothing else.
    let binary = Path::new(env!("CARGO_BIN_EXE_registry-image"));
    let repo = registry.repo("secrets/app");
    let reference = format!("{repo}@{digest}");
    let tagged = format!("{repo}:latest");
    let host = registry.host();
    let verbs: Vec<Vec<&str>> = vec![
        vec!["ls", &repo],
        vec!["digest", &tagged],
        vec!["manifest", &tagged],
        vec!["config", &tagged],
        vec!["blob", &reference],
        vec!["cp", &tagged, "secrets/elsewhere:x"],
        vec!["tag", &tagged, "more"],
        vec!["rm", &tagged],
        vec!["catalog", &host],
    ];
    for mut args in verbs {
        args.extend(["--username", "alice", "--password-stdin"]);
        let out = run_program(binary, &args, PASSWORD_CANARY.as_bytes());
        assert_quiet_about(&out, &[PASSWORD_CANARY], &args.join(" "));
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}: {:?}", args[0], out.stderr);
        assert!(
            lines[0].starts_with("error: "),
            "{}: {:?}",
            args[0],
            out.stderr
        );
    }
}

#[test]
fn every_path_a_put_reads_stays_inside_its_directory() {
    let registry = TestRegistry::plain();
    let parent = tempfile::tempdir().unwrap();
    let src = parent.path().join("put");
    let outside = parent.path().join("outside");
    std::fs::create_dir_all(src.join("inputs")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("file.txt"), "outside").unwrap();
    std::fs::write(outside.join("tags"), "t1\n").unwrap();
    write_docker_save(&outside.join("image.tar"), &TestImage::seeded("o"), "x:y");
    std::fs::write(outside.join("repository"), registry.repo("paths/app")).unwrap();
    std::fs::write(outside.join("digest"), format!("sha256:{}", "0".repeat(64))).unwrap();
    std::os::unix::fs::symlink(&outside, src.join("inputs/out-link")).unwrap();
    std::os::unix::fs::symlink(outside.join("file.txt"), src.join("file-link")).unwrap();
    let artifact = |files: &str, metadata: &str| {
        let mut a = json!({"files": [files], "artifact_type": "application/x-test"});
        if !metadata.is_empty() {
            a["metadata"] = json!(metadata);
        }
        json!({"artifact": a})
    };
    std::fs::write(src.join("ok.txt"), "ok").unwrap();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"image": "../outside/image.tar"}),
            "'..' is not allowed",
        ),
        (
            json!({"image": "inputs/out-link/image.tar"}),
            "leads outside",
        ),
        (
            json!({"package": {"path": "../outside"}}),
            "params.package.path",
        ),
        (
            json!({"package": {"path": "inputs/out-link"}}),
            "leads outside",
        ),
        (
            json!({"package": {"path": "ok.txt", "base": "../outside/image.tar"}}),
            "params.package.base",
        ),
        (artifact("../outside/file.txt", ""), "params.artifact.files"),
        (artifact("file-link", ""), "leads outside"),
        (artifact("inputs/*/file.txt", ""), "leads outside"),
        (artifact("ok.txt", "file-link"), "params.artifact.metadata"),
        (
            json!({"copy": {"from_dir": "../outside"}}),
            "params.copy.from_dir",
        ),
        (
            json!({"copy": {"from_dir": "inputs/out-link"}}),
            "leads outside",
        ),
        (
            json!({"delete": {"tags_file": "../outside/tags"}}),
            "params.delete.tags_file",
        ),
        (
            json!({"delete": {"tags_file": "inputs/out-link/tags"}}),
            "leads outside",
        ),
        (
            json!({"image": "x", "additional_tags": "../outside/tags"}),
            "params.additional_tags",
        ),
        (
            json!({"sign": {"key": "inputs/out-link/file.txt"}, "image": "x"}),
            "leads outside",
        ),
    ];
    for (params, expected) in cases {
        let out = out_step(
            &src,
            json!({"repository": registry.repo("paths/app"), "tag": "t"}),
            params.clone(),
        );
        let line = out.error_line();
        assert!(line.contains(expected), "{params}: {line}");
        assert!(
            line.contains("outside") || line.contains(".."),
            "{params}: {line}"
        );
    }
    assert!(registry.tags("paths/app").is_empty(), "nothing was pushed");
}
