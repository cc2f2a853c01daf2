//! `scripts/bench artifact`: a 4 GiB disk image (pseudo-random, no sparse
//! holes) pushed as an OCI artifact with `out` and fetched with
//! `in format: artifact`, against the oras Python SDK (`push`, `pull`)
//! doing the same in alternating runs; peak RSS; and the digest of the same
//! file in a second checkout with another mtime. Everything on tmpfs
//! (`ARTIFACT_MIB=…` for another size).

use std::path::Path;

use serde_json::json;

use super::measure::{self, Measurement, median, median_u64, ms};
use super::support::{self, TestRegistry};

const RUNS: usize = 3;
const ARTIFACT_TYPE: &str = "application/vnd.example.vm-image.v1";

pub fn run() {
    let mib: usize = std::env::var("ARTIFACT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    println!("== artifact: a {mib} MiB disk image pushed and fetched as an OCI artifact");
    let shm = Path::new("/dev/shm/registry-image-artifact");
    let _ = std::fs::remove_dir_all(shm);
    for checkout in ["one", "two"] {
        std::fs::create_dir_all(shm.join(checkout)).unwrap();
    }
    write_disk(&shm.join("one/disk.raw"), mib, 1);
    std::fs::copy(shm.join("one/disk.raw"), shm.join("two/disk.raw")).unwrap();
    let t = filetime::FileTime::from_unix_time(1_800_000_000, 0);
    filetime::set_file_times(shm.join("two/disk.raw"), t, t).unwrap();
    std::fs::write(shm.join("one/vm.json"), r#"{"name": "bench"}"#).unwrap();
    std::fs::write(shm.join("two/vm.json"), r#"{"name": "bench"}"#).unwrap();
    // SAFETY: no other thread reads the environment at this point.
    unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    let registry = TestRegistry::plain();

    let push_ours = |checkout: &str, repo: &str| -> Measurement {
        let request = json!({"source": {"repository": registry.repo(repo), "tag": "v1"},
                             "params": {"artifact": {"files": ["disk.raw"], "metadata": "vm.json",
                                                     "artifact_type": ARTIFACT_TYPE}}});
        measure::resource_step("out", &shm.join(checkout), &request)
    };
    let fetch_ours = |repo: &str, digest: &str, run: usize| -> Measurement {
        let dest = shm.join(format!("get-ours-{run}"));
        std::fs::create_dir_all(&dest).unwrap();
        let request = json!({"source": {"repository": registry.repo(repo)},
                             "version": {"tag": "v1", "digest": digest},
                             "params": {"format": "artifact"}});
        let m = measure::resource_step("in", &dest, &request);
        let _ = std::fs::remove_dir_all(&dest);
        m
    };
    let oras = |script: String| -> Measurement {
        let script =
            format!("import oras.client\nclient = oras.client.OrasClient(insecure=True)\n{script}");
        let m = measure::run(
            Path::new("/usr/bin/env"),
            &["python3".into(), "-c".into(), script.into()],
            &[],
            b"",
        );
        assert!(m.success, "oras failed: {}", m.stderr);
        m
    };
    let disk = shm.join("one/disk.raw");
    let (mut push_runs, mut peer_push_runs) = (Vec::new(), Vec::new());
    let (mut get_runs, mut peer_get_runs) = (Vec::new(), Vec::new());
    let mut digests = Vec::new();
    for run in 0..RUNS {
        let repo = format!("bench/ours-{run}");
        let m = push_ours("one", &repo);
        let digest = digest_of(&m);
        push_runs.push(m);
        let target = format!("{}/bench/oras-{run}:v1", registry.host());
        peer_push_runs.push(oras(format!(
            "client.push(target={target:?}, files=[{:?}], disable_path_validation=True)",
            disk.display().to_string()
        )));
        get_runs.push(fetch_ours(&repo, &digest, run));
        let outdir = shm.join(format!("get-oras-{run}"));
        peer_get_runs.push(oras(format!(
            "client.pull(target={target:?}, outdir={:?})",
            outdir.display().to_string()
        )));
        let _ = std::fs::remove_dir_all(&outdir);
        digests.push(digest);
    }
    let other = digest_of(&push_ours("two", "bench/other-checkout"));
    let same = digests.iter().all(|d| *d == other);

    println!("  median of {RUNS} alternating runs, a fresh repository each:");
    report(
        "push: ours (out, params.artifact)",
        "oras-py push",
        &push_runs,
        &peer_push_runs,
    );
    report(
        "fetch: ours (in, format: artifact)",
        "oras-py pull",
        &get_runs,
        &peer_get_runs,
    );
    println!(
        "  digest {other}: {} across {RUNS} runs and a second checkout with another mtime",
        if same { "the same" } else { "DIFFERENT" }
    );
    let _ = std::fs::remove_dir_all(shm);
}

fn digest_of(m: &Measurement) -> String {
    serde_json::from_str::<serde_json::Value>(&m.stdout).unwrap()["version"]["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn report(ours_label: &str, peer_label: &str, ours: &[Measurement], peer: &[Measurement]) {
    let wall = |runs: &[Measurement]| median(runs.iter().map(|m| m.wall).collect());
    let rss =
        |runs: &[Measurement]| median_u64(runs.iter().map(|m| m.max_rss_kib).collect()) / 1024;
    let (ours_wall, peer_wall) = (wall(ours), wall(peer));
    println!(
        "    {ours_label:<40} {:>10}   peak RSS {} MiB",
        ms(ours_wall),
        rss(ours)
    );
    println!(
        "    {peer_label:<40} {:>10}   peak RSS {} MiB",
        ms(peer_wall),
        rss(peer)
    );
    println!(
        "    ratio ours/peer: {:.2}x",
        ours_wall.as_secs_f64() / peer_wall.as_secs_f64()
    );
}

/// `mib` MiB of xorshift output: every block written, none sparse.
fn write_disk(path: &Path, mib: usize, seed: u64) {
    use std::io::Write as _;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        support::image::fill_random(&mut block, &mut seed);
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
}
