//! Every cited registry quirk ([`Quirk`], each naming the registry and the
//! public source of the behaviour) against every step, in one matrix: a
//! real `docker-registry` behind the fault proxy playing that registry.
//! Each cell is a step's outcome, `ok` or a refusal with the registry's
//! reason in one line; the expectations are the README's "Registries"
//! table (section "Quirks, step by step").

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::cosign_peer::peer_keys;
use support::image::{Entry, TestImage, random_bytes, tar, write_docker_save, write_index_layout};
use support::proxy::FaultProxy;
use support::quirks::Quirk;
use support::{Auth, StepOutput, TestRegistry, run_step};

const USER: &str = "quirk-user";
const PASSWORD: &str = "quirk-password";

/// The steps of a row, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// `out` of a two-platform OCI layout (an index; a 6 MiB layer, more
    /// than one upload chunk).
    OutIndex,
    /// `out` of a `docker save` tarball (Docker media types).
    OutDockerSave,
    /// `check` of the tag.
    CheckTag,
    /// `check` with `tag_regex` (the tag listing).
    CheckRegex,
    /// `in` to a rootfs (the linux/amd64 child, every blob downloaded).
    InRootfs,
    /// `out` with `params.copy` from another repository of the same
    /// registry (a cross-repository mount is asked for).
    CopyMount,
    /// `out` signing in bundle form, then `check` with the public key (the
    /// referrers API probe, else the fallback tag).
    SignVerify,
}

/// `CheckRegex` comes last: by then the signatures' fallback tags make
/// the listing span pages.
const STEPS: [Step; 7] = [
    Step::OutIndex,
    Step::OutDockerSave,
    Step::CheckTag,
    Step::InRootfs,
    Step::CopyMount,
    Step::SignVerify,
    Step::CheckRegex,
];

/// What a cell must do: succeed, or fail with one line holding this text.
fn expected(quirk: Option<Quirk>, step: Step) -> Result<(), &'static str> {
    match (quirk, step) {
        // zot refuses Docker media types; the registry's reason is shown.
        (Some(Quirk::DockerTypesRefused), Step::OutDockerSave) => Err("MANIFEST_INVALID"),
        // A registry refusing `subject` cannot hold a bundle referrer; the
        // line says to sign in the tag form.
        (Some(Quirk::SubjectRefused(_)), Step::SignVerify) => Err("params.sign.format: tag"),
        _ => Ok(()),
    }
}

fn quirks() -> Vec<Option<Quirk>> {
    vec![
        None,
        Some(Quirk::ManifestHead(404)),
        Some(Quirk::ManifestHead(405)),
        Some(Quirk::HeadAnswersChild),
        Some(Quirk::ManifestContentType("")),
        Some(Quirk::ManifestContentType("application/json")),
        Some(Quirk::ManifestContentType("; charset=utf-8")),
        Some(Quirk::IndexNeedsAccept),
        Some(Quirk::AcceptOnlyForManifests),
        Some(Quirk::RelativeUploadLocation),
        Some(Quirk::RelativeBlobRedirect),
        Some(Quirk::MountRefused(202)),
        Some(Quirk::MountRefused(401)),
        Some(Quirk::MountRefused(405)),
        Some(Quirk::TagListJunk),
        Some(Quirk::AbsoluteTagLinks),
        Some(Quirk::PatchCap(4 << 20)),
        Some(Quirk::ChunkMinLength(6 << 20)),
        Some(Quirk::ReferrersHtml),
        Some(Quirk::MediaTypeRequired),
        Some(Quirk::DockerTypesRefused),
        Some(Quirk::ChallengeOnlyOnPing),
        Some(Quirk::UpperCaseScheme),
        Some(Quirk::ImmutableTags),
        Some(Quirk::SubjectRefused(404)),
        Some(Quirk::SubjectRefused(405)),
    ]
}

/// The registry a quirk is about: token auth for a challenge that goes
/// missing, basic auth for the scheme's case, else plain.
fn registry_for(quirk: Option<Quirk>) -> TestRegistry {
    match quirk {
        Some(Quirk::ChallengeOnlyOnPing) => TestRegistry::token(USER, PASSWORD),
        Some(Quirk::UpperCaseScheme) => TestRegistry::start(
            Auth::Basic {
                username: USER.into(),
                password: PASSWORD.into(),
            },
            false,
        ),
        _ => TestRegistry::plain(),
    }
}

fn image(seed: &str, arch: &str, bytes: usize) -> TestImage {
    let layer = tar(&[
        Entry::file("etc/seed", format!("{seed} {arch}")),
        Entry::file("data.bin", random_bytes(bytes, seed.len() as u64)),
    ]);
    TestImage::new(vec![layer], json!({"Env": ["A=1"]}), ("linux", arch))
}

struct Row<'a> {
    proxy: &'a FaultProxy,
    work: &'a Path,
    credentials: Value,
    keys: &'a Path,
}

impl Row<'_> {
    fn source(&self, repo: &str, extra: Value) -> Value {
        let mut source = json!({"repository": self.proxy.repo(repo), "tag": "latest"});
        for (key, value) in self
            .credentials
            .as_object()
            .unwrap()
            .iter()
            .chain(extra.as_object().unwrap())
        {
            source[key] = value.clone();
        }
        source
    }

    fn step(&self, name: &str, dir: &Path, request: Value) -> StepOutput {
        run_step(name, &[dir.to_str().unwrap()], &request)
    }

    /// `out` to `repo` with `params`: its output when it succeeded.
    fn put(&self, repo: &str, params: Value) -> Result<StepOutput, StepOutput> {
        let out = self.step(
            "out",
            self.work,
            json!({"source": self.source(repo, json!({})), "params": params}),
        );
        if out.success { Ok(out) } else { Err(out) }
    }

    /// Runs `step`; `Ok` with the step's output when every run in it
    /// succeeded, else the failing run.
    fn run(&self, step: Step, index_digest: &str) -> Result<(), StepOutput> {
        let work = self.work;
        let single = |out: StepOutput| if out.success { Ok(out) } else { Err(out) };
        let key = |name: &str| std::fs::read_to_string(self.keys.join(name)).unwrap();
        match step {
            Step::OutIndex => {
                let out = self.put("q/app", json!({"image": "layout"}))?;
                assert_eq!(out.json()["version"]["digest"], index_digest);
            }
            Step::OutDockerSave => {
                self.put("q/saved", json!({"image": "image.tar"}))?;
            }
            Step::CheckTag | Step::CheckRegex => {
                let mut source = self.source("q/app", json!({}));
                if step == Step::CheckRegex {
                    source.as_object_mut().unwrap().remove("tag");
                    source["tag_regex"] = json!("^lat");
                }
                let out = single(self.step("check", work, json!({ "source": source })))?;
                let versions = out.json();
                assert_eq!(versions[0]["digest"], index_digest, "{versions}");
            }
            Step::InRootfs => {
                let dest = tempfile::tempdir().unwrap();
                single(self.step(
                    "in",
                    dest.path(),
                    json!({"source": self.source("q/app", json!({})),
                           "version": {"tag": "latest", "digest": index_digest},
                           "params": {"platform": {"os": "linux", "architecture": "amd64"}}}),
                ))?;
                let seed = std::fs::read_to_string(dest.path().join("rootfs/etc/seed")).unwrap();
                assert_eq!(seed, "quirk amd64");
            }
            Step::CopyMount => {
                let from = format!("{}@{index_digest}", self.proxy.repo("q/app"));
                let out = self.put("q/copy", json!({"copy": {"from": from}}))?;
                assert_eq!(out.json()["version"]["digest"], index_digest);
            }
            Step::SignVerify => {
                self.put(
                    "q/app",
                    json!({"image": "layout",
                           "sign": {"key": key("ec.key"), "format": "bundle"}}),
                )?;
                let out = single(self.step(
                    "check",
                    work,
                    json!({"source": self.source("q/app", json!({"cosign_public_key": key("ec.pub")}))}),
                ))?;
                assert_eq!(out.json()[0]["digest"], index_digest);
            }
        }
        Ok(())
    }
}

#[test]
fn every_cited_registry_quirk_against_every_step() {
    let (_keys_dir, keys) = peer_keys();
    let work = tempfile::tempdir().unwrap();
    let amd64 = image("quirk", "amd64", 6 << 20);
    let arm64 = image("quirk", "arm64", 1000);
    let index_digest = write_index_layout(
        &work.path().join("layout"),
        &[(&amd64, "linux", "amd64"), (&arm64, "linux", "arm64")],
    );
    write_docker_save(
        &work.path().join("image.tar"),
        &image("saved", "amd64", 2000),
        "saved:latest",
    );
    let mut failures = Vec::new();
    // The outcomes as the README's table rows (printed with --nocapture).
    let mut table = String::new();
    for quirk in quirks() {
        let mut cells = format!("| {quirk:?} |");
        let registry = registry_for(quirk);
        let proxy = FaultProxy::start(&registry);
        if let Some(quirk) = quirk {
            proxy.quirk(quirk);
        }
        let credentials = match registry.auth {
            Auth::Anonymous => json!({}),
            _ => json!({"username": USER, "password": PASSWORD}),
        };
        let row = Row {
            proxy: &proxy,
            work: work.path(),
            credentials,
            keys: &keys,
        };
        for step in STEPS {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                row.run(step, &index_digest)
            }));
            let Ok(outcome) = run else {
                failures.push(format!(
                    "{quirk:?} {step:?}: wrong result (see the panic above)"
                ));
                continue;
            };
            cells.push_str(match &outcome {
                Ok(()) => " ok |",
                Err(_) => " refused |",
            });
            match (expected(quirk, step), outcome) {
                (Ok(()), Ok(())) => {}
                (Err(reason), Err(out)) => {
                    let line = out.error_line();
                    eprintln!("{quirk:?} {step:?}: {line}");
                    if !line.contains(reason) {
                        failures.push(format!(
                            "{quirk:?} {step:?}: refused without {reason:?}: {line}"
                        ));
                    }
                    assert_eq!(
                        line.lines().count(),
                        1,
                        "{quirk:?} {step:?}: one error line"
                    );
                }
                (Ok(()), Err(out)) => {
                    failures.push(format!("{quirk:?} {step:?} failed: {}", out.stderr.trim()))
                }
                (Err(reason), Ok(())) => failures.push(format!(
                    "{quirk:?} {step:?} succeeded where {reason:?} was expected"
                )),
            }
        }
        if !quirk_was_exercised(quirk, &proxy) {
            failures.push(format!("{quirk:?} never met the client"));
        }
        table.push_str(&cells);
        table.push('\n');
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each mode must have met the client (a mode nothing triggers proves
/// nothing): the requests that show it did.
fn quirk_was_exercised(quirk: Option<Quirk>, proxy: &FaultProxy) -> bool {
    let requests = proxy.requests();
    let saw = |method: &str, part: &str| {
        requests
            .iter()
            .any(|(m, p)| m == method && p.contains(part))
    };
    match quirk {
        None | Some(Quirk::ManifestContentType(_)) => true,
        Some(Quirk::ManifestHead(_)) | Some(Quirk::HeadAnswersChild) => {
            saw("HEAD", "/manifests/latest")
        }
        Some(Quirk::IndexNeedsAccept) => saw("GET", "/manifests/sha256:"),
        Some(Quirk::AcceptOnlyForManifests) | Some(Quirk::PatchCap(_)) => {
            saw("PATCH", "/blobs/uploads/")
        }
        Some(Quirk::ChunkMinLength(_)) | Some(Quirk::RelativeUploadLocation) => {
            saw("PUT", "/blobs/uploads/")
        }
        Some(Quirk::RelativeBlobRedirect) => saw("GET", "/artifacts-downloads/v2/"),
        Some(Quirk::MountRefused(_)) => {
            saw("POST", "mount=") && saw("PUT", "/q/copy/blobs/uploads/")
        }
        Some(Quirk::TagListJunk) => saw("GET", "/tags/list"),
        Some(Quirk::AbsoluteTagLinks) => saw("GET", "next_page="),
        Some(Quirk::ReferrersHtml) => saw("GET", "/signin"),
        Some(Quirk::MediaTypeRequired) | Some(Quirk::DockerTypesRefused) => {
            saw("PUT", "/manifests/")
        }
        Some(Quirk::ChallengeOnlyOnPing) | Some(Quirk::UpperCaseScheme) => saw("GET", "/v2/"),
        Some(Quirk::PullLimit(_)) => saw("GET", "/manifests/"),
        // The sign step pushes `latest` again.
        Some(Quirk::ImmutableTags) => {
            requests
                .iter()
                .filter(|(m, p)| m == "PUT" && p.ends_with("/q/app/manifests/latest"))
                .count()
                == 2
        }
        Some(Quirk::SubjectRefused(_)) => saw("PUT", "/manifests/sha256:"),
    }
}

/// Docker Hub's pull limit, spent: `check` (HEADs, not counted) still
/// works; `in` fails at its first manifest GET, without waiting through
/// retries for a window of hours, in one line that names the limit. A
/// bare 429 (Hub's abuse limit, GHCR's bucket) is retried and passes.
#[test]
fn a_spent_pull_limit_is_named_in_one_line_and_not_retried() {
    let registry = TestRegistry::plain();
    let digest = registry.push("hub/app", "latest", &image("limited", "amd64", 1000));
    let proxy = FaultProxy::start(&registry);
    proxy.quirk(Quirk::PullLimit(0));
    let source = json!({"repository": proxy.repo("hub/app"), "tag": "latest"});
    let work = tempfile::tempdir().unwrap();
    let checked = run_step(
        "check",
        &[work.path().to_str().unwrap()],
        &json!({"source": source}),
    );
    assert_eq!(checked.json()[0]["digest"], digest, "{}", checked.stderr);

    let dest = tempfile::tempdir().unwrap();
    let got = run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": source, "version": {"tag": "latest", "digest": digest}}),
    );
    let line = got.error_line();
    eprintln!("{line}");
    for part in [
        "429 Too Many Requests",
        "TOOMANYREQUESTS",
        "rate limit 100 per 6 h, 0 left (counted for 192.0.2.1)",
    ] {
        assert!(line.contains(part), "{part:?} missing: {line}");
    }
    assert_eq!(
        proxy.count("GET", "/manifests/"),
        1,
        "{:?}",
        proxy.requests()
    );
    assert_eq!(
        std::fs::read_dir(dest.path()).unwrap().count(),
        0,
        "nothing written"
    );

    // A bare 429, twice: retried with backoff, then served.
    let bare = FaultProxy::start(&registry);
    bare.inject(
        Some("GET"),
        "/manifests/",
        support::proxy::Fault::Status(429, None),
        2,
    );
    let source = json!({"repository": bare.repo("hub/app"), "tag": "latest"});
    let got = run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": source, "version": {"tag": "latest", "digest": digest}}),
    );
    assert!(got.success, "{}", got.stderr);
    assert_eq!(bare.pending_faults(), 0);
}

/// Token replies in the shapes registries give: only `access_token` (ACR),
/// only `token` without a lifetime (Docker Hub in 2016). `out`, `check`
/// and `in` pass with each.
#[test]
fn token_replies_in_every_shape() {
    use support::token_server::TokenReply;
    let work = tempfile::tempdir().unwrap();
    support::image::write_oci_layout(
        &work.path().join("layout"),
        "latest",
        &image("token-shape", "amd64", 1000),
    );
    for reply in [TokenReply::AccessTokenOnly, TokenReply::TokenOnly] {
        let registry = TestRegistry::token(USER, PASSWORD);
        registry.token_server.as_ref().unwrap().reply_with(reply);
        let source = json!({"repository": registry.repo("t/app"), "tag": "latest",
                            "username": USER, "password": PASSWORD});
        let dir = work.path().to_str().unwrap();
        let out = run_step(
            "out",
            &[dir],
            &json!({"source": source, "params": {"image": "layout"}}),
        );
        let digest = out.json()["version"]["digest"].clone();
        let checked = run_step("check", &[dir], &json!({ "source": source }));
        assert_eq!(checked.json()[0]["digest"], digest, "{reply:?}");
        let dest = tempfile::tempdir().unwrap();
        let got = run_step(
            "in",
            &[dest.path().to_str().unwrap()],
            &json!({"source": source, "version": {"tag": "latest", "digest": digest}}),
        );
        assert!(got.success, "{reply:?}: {}", got.stderr);
    }
}
