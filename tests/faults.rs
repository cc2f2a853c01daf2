//! The fault matrix: every step against the real registry behind the fault
//! proxy, under each fault, once (the fault clears: the step must succeed
//! with the right result) and persistently (it never clears: the step must
//! fail with one clear line and leave no output, or succeed where progress
//! lets it). Prints the matrix as a table.
//!
//! The registry uses token auth (our token service), so the token endpoint
//! and an expired token are faults like the others. Short budgets through
//! the documented knobs keep it quick: `REGISTRY_IMAGE_READ_TIMEOUT_MS=1000`,
//! `REGISTRY_IMAGE_RETRY_BUDGET_MS=4000`.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::image::{self, Entry, TestImage, tar, write_docker_save, write_oci_layout};
use support::proxy::{Fault, FaultProxy, RangeStart};
use support::token_server::TokenFault;
use support::{StepOutput, TestRegistry, run_step_env};

const USER: &str = "matrix";
const PASSWORD: &str = "matrix-secret";

const ENV: [(&str, &str); 2] = [
    ("REGISTRY_IMAGE_READ_TIMEOUT_MS", "1000"),
    ("REGISTRY_IMAGE_RETRY_BUDGET_MS", "4000"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    CheckTag,
    CheckSemver,
    InRootfs,
    InOci,
    InOciLayout,
    OutLayout,
    OutDockerSave,
}

const STEPS: [Step; 7] = [
    Step::CheckTag,
    Step::CheckSemver,
    Step::InRootfs,
    Step::InOci,
    Step::InOciLayout,
    Step::OutLayout,
    Step::OutDockerSave,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ResetMidBody,
    Stall,
    TooMany,
    Status(u16),
    Truncated,
    RangeFromZero,
    RangeLater,
    TokenUnavailable,
    Unauthorized,
    SlowConsumer,
}

const KINDS: [Kind; 13] = [
    Kind::ResetMidBody,
    Kind::Stall,
    Kind::TooMany,
    Kind::Status(500),
    Kind::Status(502),
    Kind::Status(503),
    Kind::Status(504),
    Kind::Truncated,
    Kind::RangeFromZero,
    Kind::RangeLater,
    Kind::TokenUnavailable,
    Kind::Unauthorized,
    Kind::SlowConsumer,
];

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::ResetMidBody => "reset mid-body".into(),
            Kind::Stall => "stall > read timeout".into(),
            Kind::TooMany => "429 + Retry-After".into(),
            Kind::Status(code) => code.to_string(),
            Kind::Truncated => "truncated body".into(),
            Kind::RangeFromZero => "206 from byte 0".into(),
            Kind::RangeLater => "206 later than asked".into(),
            Kind::TokenUnavailable => "token endpoint 503".into(),
            Kind::Unauthorized => "401 mid-run (token expired)".into(),
            Kind::SlowConsumer => "slow consumer".into(),
        }
    }
}

/// What the matrix expects of a persistent fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    CleanFailure,
    NotApplicable,
}

impl Outcome {
    fn cell(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::CleanFailure => "clean fail",
            Outcome::NotApplicable => "n/a",
        }
    }
}

/// What a fault that never clears must lead to. A layer cut or stalled
/// after a megabyte resumes from there: progress each time, so it ends, and
/// right. A resume answered from byte 0 skips what it already has; one
/// answered from later than asked is not trusted with ranges again: the
/// whole layer, the bytes already had skipped. Everything
/// else runs out of attempts or budget (or, for a refused renewed token,
/// fails at once) and fails cleanly: an upload cut on every request
/// included (the small blobs' chunks never get through), and an upload
/// whose answer never comes within the read timeout after its body.
fn persistent_outcome(step: Step, kind: Kind) -> Outcome {
    let pulling = matches!(step, Step::InRootfs | Step::InOci | Step::InOciLayout);
    match kind {
        Kind::ResetMidBody
        | Kind::Stall
        | Kind::Truncated
        | Kind::RangeFromZero
        | Kind::RangeLater
            if pulling =>
        {
            Outcome::Ok
        }
        _ => Outcome::CleanFailure,
    }
}

/// Where a fault is injected.
enum Injection {
    /// At the proxy, on requests matching method and path, after the
    /// `prelude` fault (once) if any.
    Proxy {
        method: Option<&'static str>,
        path: String,
        fault: Fault,
        prelude: Option<Fault>,
    },
    /// At the token service, on every token request.
    TokenService(TokenFault),
}

/// The fault a step gets (None: the fault does not apply to this step).
fn fault_for(step: Step, kind: Kind, blob: &str) -> Option<Injection> {
    let stall = Duration::from_secs(3);
    let pulling = matches!(step, Step::InRootfs | Step::InOci | Step::InOciLayout);
    let pushing = matches!(step, Step::OutLayout | Step::OutDockerSave);
    let (method, path): (Option<&'static str>, String) = match step {
        Step::CheckTag => (Some("GET"), "/manifests/".into()),
        Step::CheckSemver => (Some("GET"), "/tags/list".into()),
        Step::InRootfs | Step::InOci | Step::InOciLayout => (Some("GET"), format!("/blobs/{blob}")),
        Step::OutLayout | Step::OutDockerSave => (Some("PATCH"), "/blobs/uploads/".into()),
    };
    // Where a body is cut: inside the manifest or tag page of a check, a
    // megabyte into the layer of an `in`.
    let at = if pulling { 1 << 20 } else { 20 };
    let mut prelude = None;
    let fault = match (kind, pushing) {
        (Kind::ResetMidBody, false) => Fault::DropAfter(at),
        (Kind::ResetMidBody, true) => Fault::CutUpload(1 << 20),
        (Kind::Stall, false) => Fault::StallAfter(at, stall),
        (Kind::Stall, true) => Fault::Delay(stall),
        (Kind::TooMany, _) => Fault::Status(429, Some(1)),
        (Kind::Status(code), _) => Fault::Status(code, None),
        (Kind::Truncated, false) => Fault::Truncate(at),
        (Kind::Truncated, true) => return None,
        // A layer cut a megabyte in, then the resume answered with another
        // part of it than asked for (Content-Range and bytes agreeing).
        (Kind::RangeFromZero | Kind::RangeLater, _) if pulling => {
            prelude = Some(Fault::DropAfter(at));
            Fault::RangeFrom(if kind == Kind::RangeFromZero {
                RangeStart::Zero
            } else {
                RangeStart::Later(1000)
            })
        }
        (Kind::RangeFromZero | Kind::RangeLater, _) => return None,
        (Kind::TokenUnavailable, _) => {
            return Some(Injection::TokenService(TokenFault::Status(503)));
        }
        (Kind::Unauthorized, _) => Fault::Unauthorized,
        (Kind::SlowConsumer, _) => return None,
    };
    Some(Injection::Proxy {
        method,
        path,
        fault,
        prelude,
    })
}

impl Injection {
    /// Applies the fault `times` times (its prelude once).
    fn apply(&self, registry: &TestRegistry, proxy: &FaultProxy, times: usize) {
        match self {
            Injection::Proxy {
                method,
                path,
                fault,
                prelude,
            } => {
                if let Some(prelude) = prelude {
                    proxy.inject(*method, path, prelude.clone(), 1);
                }
                proxy.inject(*method, path, fault.clone(), times);
            }
            Injection::TokenService(fault) => {
                let service = token_service(registry);
                service.clear_faults();
                service.inject(*fault, times);
            }
        }
    }

    /// Faults injected and not yet hit.
    fn pending(&self, registry: &TestRegistry, proxy: &FaultProxy) -> usize {
        match self {
            Injection::Proxy { .. } => proxy.pending_faults(),
            Injection::TokenService(_) => token_service(registry).pending_faults(),
        }
    }
}

fn token_service(registry: &TestRegistry) -> &support::token_server::TokenServer {
    registry
        .token_server
        .as_ref()
        .expect("a token-auth registry")
}

/// `source` for a repository behind the proxy, with the credentials.
fn source(proxy: &FaultProxy, repo: &str, tag: Option<&str>) -> serde_json::Value {
    let mut source =
        json!({"repository": proxy.repo(repo), "username": USER, "password": PASSWORD});
    if let Some(tag) = tag {
        source["tag"] = tag.into();
    }
    source
}

struct Fixture {
    registry: TestRegistry,
    image: TestImage,
    big_layer: Vec<u8>,
    src_layout: tempfile::TempDir,
    src_docker: tempfile::TempDir,
    docker_digest: String,
    layout_digest: String,
}

impl Fixture {
    fn new() -> Self {
        let registry = TestRegistry::token(USER, PASSWORD);
        let big = image::random_bytes(3 << 20, 42);
        let big_layer = tar(&[Entry::file("big", &big)]);
        let image = TestImage::new(
            vec![tar(&[Entry::file("small", "s")]), big_layer.clone()],
            json!({}),
            ("linux", "amd64"),
        );
        registry.push("matrix/app", "1.0.0", &image);
        let src_layout = tempfile::tempdir().unwrap();
        write_oci_layout(&src_layout.path().join("oci"), "latest", &image);
        let src_docker = tempfile::tempdir().unwrap();
        write_docker_save(&src_docker.path().join("image.tar"), &image, "x:y");
        // Each push without faults: its (deterministic) digest.
        let reference = |src: &Path, image: &str| {
            let out = run_step_env(
                "out",
                &[src.to_str().unwrap()],
                &ENV,
                &json!({"source": {"repository": registry.repo("matrix/reference"), "tag": "latest",
                                   "username": USER, "password": PASSWORD},
                        "params": {"image": image}}),
            );
            out.json()["version"]["digest"].as_str().unwrap().to_owned()
        };
        let docker_digest = reference(src_docker.path(), "image.tar");
        let layout_digest = reference(src_layout.path(), "oci");
        Fixture {
            registry,
            image,
            big_layer,
            src_layout,
            src_docker,
            docker_digest,
            layout_digest,
        }
    }
}

/// Runs `step` through `proxy`; `repo` is where an `out` pushes.
fn run(
    f: &Fixture,
    proxy: &FaultProxy,
    step: Step,
    repo: &str,
    envs: &[(&str, &str)],
    dest: &Path,
) -> StepOutput {
    let dest_arg = dest.to_str().unwrap();
    let digest = f.image.digest();
    let format = match step {
        Step::InOci => "oci",
        Step::InOciLayout => "oci-layout",
        _ => "rootfs",
    };
    match step {
        Step::CheckTag => run_step_env(
            "check",
            &[],
            envs,
            &json!({"source": source(proxy, "matrix/app", Some("1.0.0"))}),
        ),
        Step::CheckSemver => run_step_env(
            "check",
            &[],
            envs,
            &json!({"source": source(proxy, "matrix/app", None)}),
        ),
        Step::InRootfs | Step::InOci | Step::InOciLayout => run_step_env(
            "in",
            &[dest_arg],
            envs,
            &json!({"source": source(proxy, "matrix/app", None),
                    "version": {"tag": "1.0.0", "digest": digest},
                    "params": {"format": format}}),
        ),
        Step::OutLayout | Step::OutDockerSave => {
            let (src, image) = if step == Step::OutLayout {
                (f.src_layout.path(), "oci")
            } else {
                (f.src_docker.path(), "image.tar")
            };
            run_step_env(
                "out",
                &[src.to_str().unwrap()],
                envs,
                &json!({"source": source(proxy, repo, Some("latest")),
                        "params": {"image": image}}),
            )
        }
    }
}

/// Asserts a successful step's result.
fn assert_right(f: &Fixture, step: Step, repo: &str, out: &StepOutput, dest: &Path) {
    let digest = f.image.digest();
    match step {
        Step::CheckTag | Step::CheckSemver => {
            let versions = support::versions(out);
            assert_eq!(versions, [("1.0.0".to_owned(), digest)]);
        }
        Step::InRootfs => {
            let big = std::fs::read(dest.join("rootfs/big")).unwrap();
            assert_eq!(
                image::sha256(&tar(&[Entry::file("big", &big)])),
                image::sha256(&f.big_layer)
            );
        }
        Step::InOci => assert!(dest.join("image.tar").is_file()),
        Step::InOciLayout => assert!(dest.join("oci/index.json").is_file()),
        Step::OutLayout | Step::OutDockerSave => {
            let expected = if step == Step::OutLayout {
                f.layout_digest.clone()
            } else {
                f.docker_digest.clone()
            };
            assert_eq!(out.json()["version"]["digest"], expected.as_str());
            assert_eq!(f.registry.digest_of(repo, "latest"), Some(expected));
        }
    }
}

/// Asserts a failed step left nothing that looks like a result.
fn assert_clean_failure(out: &StepOutput, dest: &Path) {
    let line = out.error_line();
    assert!(line.len() < 2000, "one readable line: {line}");
    let left: Vec<String> = std::fs::read_dir(dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "a failed step left {left:?}");
}

#[test]
fn fault_matrix() {
    let f = Fixture::new();
    let blob = image::sha256(&f.big_layer);
    let mut table = vec![format!(
        "| fault | {} |",
        STEPS.map(|s| format!("{s:?}")).join(" | ")
    )];
    table.push(format!("|---|{}", "---|".repeat(STEPS.len())));
    // One thread per fault (the cells mostly wait on timeouts and
    // Retry-After), each with its own proxies, all but one on one registry.
    let rows: Vec<(String, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = KINDS
            .map(|kind| {
                let (shared, blob) = (&f, &blob);
                scope.spawn(move || {
                    // Token service faults would reach every row's cells:
                    // that row gets a registry of its own.
                    let own;
                    let f = if kind == Kind::TokenUnavailable {
                        own = Fixture::new();
                        &own
                    } else {
                        shared
                    };
                    let mut row = vec![kind.name()];
                    let mut failed = Vec::new();
                    for step in STEPS {
                        let cell = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            run_cell(f, blob, step, kind)
                        }));
                        match cell {
                            Ok(text) => row.push(text),
                            Err(panic) => {
                                let why = panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                failed.push(format!("{} × {step:?}: {why}", kind.name()));
                                row.push("FAILED".into());
                            }
                        }
                    }
                    (format!("| {} |", row.join(" | ")), failed)
                })
            })
            .into_iter()
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (row, failed) in rows {
        table.push(row);
        failures.extend(failed);
    }
    eprintln!("{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One cell: the fault once (must succeed with the right result), then
/// persistently (must fail cleanly, or succeed where progress carries it).
/// Returns the cell's text.
fn run_cell(f: &Fixture, blob: &str, step: Step, kind: Kind) -> String {
    let cell_repo = |n: &str| {
        format!(
            "matrix/out-{step:?}-{}-{n}",
            kind.name()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        )
        .to_lowercase()
    };
    if kind == Kind::SlowConsumer {
        if !matches!(step, Step::InRootfs) {
            return Outcome::NotApplicable.cell().into();
        }
        let proxy = FaultProxy::start(&f.registry);
        let dest = tempfile::tempdir().unwrap();
        let mut envs = ENV.to_vec();
        envs.push(("REGISTRY_IMAGE_TEST_EXTRACT_DELAY_MS", "2000"));
        let out = run(f, &proxy, step, "", &envs, dest.path());
        assert!(out.success, "{}", out.stderr);
        assert!(!out.stderr.contains("resuming"), "{}", out.stderr);
        assert_right(f, step, "", &out, dest.path());
        return "ok / ok".into();
    }
    let Some(injection) = fault_for(step, kind, blob) else {
        return Outcome::NotApplicable.cell().into();
    };
    let proxy_for = || {
        let proxy = FaultProxy::start(&f.registry);
        if step == Step::CheckTag {
            proxy.strip_head_digest();
        }
        proxy
    };
    // Once: retried or resumed, and right.
    let proxy = proxy_for();
    injection.apply(&f.registry, &proxy, 1);
    let dest = tempfile::tempdir().unwrap();
    let repo = cell_repo("once");
    let out = run(f, &proxy, step, &repo, &ENV, dest.path());
    assert!(out.success, "once: {}", out.stderr);
    assert_right(f, step, &repo, &out, dest.path());
    assert_eq!(
        injection.pending(&f.registry, &proxy),
        0,
        "the fault was hit"
    );

    // Persistent.
    let proxy = proxy_for();
    injection.apply(&f.registry, &proxy, 1000);
    let dest = tempfile::tempdir().unwrap();
    let repo = cell_repo("always");
    let out = run(f, &proxy, step, &repo, &ENV, dest.path());
    let expected = persistent_outcome(step, kind);
    match expected {
        Outcome::Ok => {
            assert!(out.success, "always: {}", out.stderr);
            assert_right(f, step, &repo, &out, dest.path());
        }
        _ => assert_clean_failure(&out, dest.path()),
    }
    format!("ok / {}", expected.cell())
}
