//! `scripts/bench package`: `out` with `params.package` of a 1 GiB
//! directory of 10,000 files (half pseudo-random, half text), against the
//! same job done by umoci (`init`, `new`, `insert`) and `skopeo copy`, in
//! alternating runs; peak RSS; and the digest of the same files written a
//! second time elsewhere with other mtimes (another checkout).

use std::path::Path;

use serde_json::json;

use super::measure::{self, Measurement, median, median_u64, ms, skopeo};
use super::support::{self, TestRegistry};

const RUNS: usize = 3;
const FILES: usize = 10_000;
const FILE_BYTES: usize = 100 << 10;

pub fn run() {
    println!(
        "== package: a directory of {FILES} files, {} MiB, packed and pushed",
        (FILES * FILE_BYTES) >> 20
    );
    let shm = Path::new("/dev/shm/registry-image-package");
    let _ = std::fs::remove_dir_all(shm);
    std::fs::create_dir_all(shm).unwrap();
    write_tree(&shm.join("one/app"), 1);
    write_tree(&shm.join("two/app"), 1_800_000_000);
    // SAFETY: no other thread reads the environment at this point.
    unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    let registry = TestRegistry::plain();

    let ours = |checkout: &str, repo: &str| -> Measurement {
        let request = json!({"source": {"repository": registry.repo(repo), "tag": "latest"},
                             "params": {"package": {"path": "app", "prefix": "/srv"}}});
        measure::resource_step("out", &shm.join(checkout), &request)
    };
    let peer = |run: usize| -> Vec<Measurement> {
        let layout = shm.join(format!("umoci-{run}"));
        let image = format!("{}:latest", layout.display());
        let umoci = |args: &[&str]| {
            let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            let m = measure::run(Path::new("/usr/bin/umoci"), &args, &[], b"");
            assert!(m.success, "umoci: {}", m.stderr);
            m
        };
        let steps = vec![
            umoci(&["init", "--layout", layout.to_str().unwrap()]),
            umoci(&["new", "--image", &image]),
            umoci(&[
                "insert",
                "--image",
                &image,
                shm.join("one/app").to_str().unwrap(),
                "/srv",
            ]),
            skopeo(&format!(
                "copy --quiet --dest-tls-verify=false oci:{image} docker://{}/bench/umoci-{run}:latest",
                registry.host()
            )),
        ];
        for step in &steps {
            assert!(step.success, "the peer failed: {}", step.stderr);
        }
        let _ = std::fs::remove_dir_all(&layout);
        steps
    };
    let (mut ours_runs, mut peer_runs) = (Vec::new(), Vec::new());
    let mut digests = Vec::new();
    for run in 0..RUNS {
        let m = ours("one", &format!("bench/ours-{run}"));
        digests.push(m.stdout.clone());
        ours_runs.push(m);
        peer_runs.push(peer(run));
    }
    let other = ours("two", "bench/other-checkout");
    let digest_of = |m: &Measurement| {
        serde_json::from_str::<serde_json::Value>(&m.stdout).unwrap()["version"]["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = digest_of(&ours_runs[0]);
    let same_everywhere =
        ours_runs.iter().all(|m| digest_of(m) == first) && digest_of(&other) == first;
    let ours_wall = median(ours_runs.iter().map(|m| m.wall).collect());
    let ours_rss = median_u64(ours_runs.iter().map(|m| m.max_rss_kib).collect()) / 1024;
    let peer_wall = median(
        peer_runs
            .iter()
            .map(|steps| steps.iter().map(|m| m.wall).sum())
            .collect(),
    );
    let peer_rss = median_u64(
        peer_runs
            .iter()
            .map(|steps| steps.iter().map(|m| m.max_rss_kib).max().unwrap_or(0))
            .collect(),
    ) / 1024;
    println!("  median of {RUNS} alternating runs, a fresh repository each:");
    println!(
        "    ours (out, params.package)              {:>9}   peak RSS {ours_rss} MiB",
        ms(ours_wall)
    );
    println!(
        "    umoci init/new/insert + skopeo copy     {:>9}   peak RSS {peer_rss} MiB",
        ms(peer_wall)
    );
    println!(
        "    ratio ours/peer: {:.2}x",
        ours_wall.as_secs_f64() / peer_wall.as_secs_f64()
    );
    println!(
        "  digest {first}: {} across {RUNS} runs and a second checkout with other mtimes",
        if same_everywhere {
            "the same"
        } else {
            "DIFFERENT"
        }
    );
    let _ = std::fs::remove_dir_all(shm);
}

/// The benchmark's tree at `dir`: 100 directories of 100 files, even ones
/// pseudo-random, odd ones text, every mtime `mtime`.
fn write_tree(dir: &Path, mtime: i64) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let time = filetime::FileTime::from_unix_time(mtime, 0);
    for i in 0..FILES {
        let sub = dir.join(format!("d{:03}", i / 100));
        std::fs::create_dir_all(&sub).unwrap();
        let bytes: Vec<u8> = if i % 2 == 0 {
            let mut out = vec![0u8; FILE_BYTES];
            support::image::fill_random(&mut out, &mut seed);
            out
        } else {
            format!("line {i}: the quick brown fox jumps over the lazy dog\n")
                .into_bytes()
                .into_iter()
                .cycle()
                .take(FILE_BYTES)
                .collect()
        };
        let path = sub.join(format!("f{i:05}.dat"));
        std::fs::write(&path, bytes).unwrap();
        filetime::set_file_times(&path, time, time).unwrap();
    }
}
