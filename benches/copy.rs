//! `scripts/bench copy`: promotion across registries. The get benchmark's
//! image (259 MiB uncompressed, gzip layers) copied by digest from one
//! local registry to another with `out` and `params.copy`, against
//! `skopeo copy docker://… docker://…`, in alternating runs, each into a
//! fresh repository; wall time and peak RSS. Both registries on tmpfs.

use serde_json::json;

use super::measure::{self, Measurement, median, median_u64, ms};

use super::support::TestRegistry;

const RUNS: usize = 5;

pub fn run() {
    println!("== copy: the get benchmark's image, registry to registry by digest");
    // SAFETY: no other thread reads the environment at this point.
    unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    let origin = TestRegistry::plain();
    let destination = TestRegistry::plain();
    let digest = {
        let (image, compressed) = super::gzip_image(super::big_layers());
        println!("  image: {} MiB as gzip layers", compressed >> 20);
        origin.push("bench/app", "rc", &image)
    };
    let from = format!("{}@{digest}", origin.repo("bench/app"));
    let ours = |run: usize| -> Measurement {
        let request = json!({"source": {"repository": destination.repo(&format!("bench/ours-{run}")),
                                        "tag": "latest", "debug": std::env::var("BENCH_DEBUG").is_ok()},
                             "params": {"copy": {"from": from}}});
        let m = measure::resource_step("out", std::path::Path::new("/dev/shm"), &request);
        let served = serde_json::from_str::<serde_json::Value>(&m.stdout).unwrap();
        assert_eq!(served["version"]["digest"], digest.as_str(), "digest kept");
        if std::env::var("BENCH_DEBUG").is_ok() {
            eprintln!("{}", m.stderr);
        }
        m
    };
    let skopeo = |run: usize| -> Measurement {
        let m = measure::skopeo(&format!(
            "copy --quiet --src-tls-verify=false --dest-tls-verify=false docker://{}/bench/app@{digest} \
             docker://{}/bench/skopeo-{run}:latest",
            origin.host(),
            destination.host()
        ));
        assert!(m.success, "skopeo failed: {}", m.stderr);
        m
    };
    let (mut ours_runs, mut peer_runs) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        ours_runs.push(ours(run));
        peer_runs.push(skopeo(run));
    }
    let wall = |runs: &[Measurement]| median(runs.iter().map(|m| m.wall).collect());
    let rss =
        |runs: &[Measurement]| median_u64(runs.iter().map(|m| m.max_rss_kib).collect()) / 1024;
    let (ours_wall, peer_wall) = (wall(&ours_runs), wall(&peer_runs));
    println!("  median of {RUNS} alternating runs, a fresh destination repository each:");
    println!(
        "    ours (out, params.copy)        {:>10}   peak RSS {} MiB",
        ms(ours_wall),
        rss(&ours_runs)
    );
    println!(
        "    skopeo copy docker:// docker:// {:>10}   peak RSS {} MiB",
        ms(peer_wall),
        rss(&peer_runs)
    );
    println!(
        "    ratio ours/peer: {:.2}x",
        ours_wall.as_secs_f64() / peer_wall.as_secs_f64()
    );
}
