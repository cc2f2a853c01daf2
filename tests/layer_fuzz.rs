//! The layer fuzzer, bounded: random tar streams from a grammar of hostile
//! entries (tests/support/layer_grammar.rs) applied to a sandbox, asserting
//! containment and that the two path resolvers agree; and random honest
//! layers unpacked by us and by umoci, asserting the same tree.
//!
//! `LAYER_FUZZ_SECONDS` bounds the hostile run (default 10; `scripts/test`
//! gives it 60), `LAYER_FUZZ_SEED` picks the first batch (default 0, so a
//! failure in CI reproduces). Long coverage-guided runs: `fuzz/`.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use registry_image::unpack::rootfs::Resolver;
use serde_json::json;
use support::image::{TestImage, write_oci_layout};
use support::layer_grammar::{Grammar, apply, check_containment, layers_from_bytes};
use support::raw_tar::layer;
use support::sandbox::{Sandbox, tree};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn runner(batch: u64, cases: u32) -> TestRunner {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&batch.to_le_bytes());
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    )
}

/// Set inside the confined child that runs the hostile cases.
const CONFINED: &str = "LAYER_FUZZ_CONFINED";

/// Hostile layers are generated to attack the host (`/`, the sandbox's
/// absolute path): a containment bug must not damage the machine running
/// the test. So the cases run in a child that is root only inside a user
/// namespace whose root is the host's `nobody` (as Concourse's unprivileged
/// containers are), where the host's files are out of reach.
#[test]
fn random_hostile_layers_stay_inside_the_rootfs() {
    if std::env::var_os(CONFINED).is_none() {
        let (_guard, me) = support::world_runnable(&std::env::current_exe().unwrap(), "layer_fuzz");
        let mut cmd = if rustix::process::geteuid().is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "unshare",
            ]);
            c
        } else {
            Command::new("unshare")
        };
        let out = cmd
            .args(["--user", "--map-root-user"])
            .arg(me)
            .args([
                "--exact",
                "random_hostile_layers_stay_inside_the_rootfs",
                "--nocapture",
            ])
            .env(CONFINED, "1")
            .output()
            .expect("setpriv and unshare (util-linux) are installed");
        let log = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "{}",
            log.lines()
                .filter(|l| l.starts_with("layer fuzzer"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            out.status.success(),
            "the confined fuzzer failed:\n{log}{}",
            String::from_utf8_lossy(&out.stdout)
        );
        return;
    }
    let budget = Duration::from_secs(env_number("LAYER_FUZZ_SECONDS", 10));
    let first = env_number("LAYER_FUZZ_SEED", 0);
    let started = Instant::now();
    let (mut batch, mut cases) = (first, 0u64);
    let applied = std::cell::Cell::new(0u64);
    // Bounded by time and, as every loop here, by count.
    while started.elapsed() < budget && batch < first + 100_000 {
        runner(batch, 50)
            .run(&vec(any::<u8>(), 0..400), |bytes| {
                if check_containment(&bytes) {
                    applied.set(applied.get() + 1);
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("LAYER_FUZZ_SEED={batch}: {e}"));
        batch += 1;
        cases += 50;
    }
    eprintln!(
        "layer fuzzer: {cases} cases (seeds {first}..{batch}, {} applied, the rest refused) in {:.1} s",
        applied.get(),
        started.elapsed().as_secs_f64()
    );
    assert!(cases > 0);
}

#[test]
fn honest_random_layers_unpack_as_umoci_does() {
    let compared = std::cell::Cell::new(0);
    runner(env_number("LAYER_FUZZ_SEED", 0), 40)
        .run(&vec(any::<u8>(), 0..300), |bytes| {
            let sandbox = Sandbox::new();
            let entries = layers_from_bytes(&bytes, &sandbox.abs(""), Grammar::Honest);
            let layers: Vec<Vec<u8>> = entries.iter().map(|l| layer(l)).collect();
            let ours_root = sandbox.dest().join("root-ours");
            let ours = apply(&ours_root, &layers, Resolver::Kernel);
            let layout = sandbox.path().join("layout");
            write_oci_layout(
                &layout,
                "t",
                &TestImage::new(layers, json!({}), ("linux", "amd64")),
            );
            let theirs_root = sandbox.dest().join("root-umoci");
            let umoci = Command::new("umoci")
                .args(["raw", "unpack", "--image"])
                .arg(format!("{}:t", layout.display()))
                .arg(&theirs_root)
                .output()
                .expect("umoci is installed");
            match (&ours, umoci.status.success()) {
                (Ok(()), true) => {
                    assert_eq!(tree(&ours_root), tree(&theirs_root), "layers: {entries:?}");
                    compared.set(compared.get() + 1);
                }
                (Err(_), false) => {}
                _ => panic!(
                    "ours: {ours:?}; umoci: {}\nlayers: {entries:?}",
                    String::from_utf8_lossy(&umoci.stderr)
                ),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let compared = compared.get();
    eprintln!("umoci agreed on {compared} unpacked trees");
    assert!(
        compared > 10,
        "too few layers both could unpack: {compared}"
    );
}
