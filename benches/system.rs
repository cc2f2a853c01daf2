//! `scripts/bench system`: a real-world image made at bench time of this
//! machine's own files (not committed): three gzip layers, GNU tar with
//! `--xattrs` piped into pigz, of `/usr/bin /usr/sbin /etc`,
//! `/usr/lib/x86_64-linux-gnu`, and `/usr/share /usr/include`. `in` to a
//! rootfs against the `curl | gzip -dc | tar -x` and `curl | pigz -dc |
//! tar -x` floors and skopeo copy + umoci raw unpack, alternating; peak
//! RSS and CPU use. Everything on tmpfs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::measure;
use super::support::TestRegistry;

const RUNS: usize = 3;
const LAYERS: [&[&str]; 3] = [
    &["usr/bin", "usr/sbin", "etc"],
    &["usr/lib/x86_64-linux-gnu"],
    &["usr/share", "usr/include"],
];

pub fn run() {
    println!("== system: an image of this machine's /usr and /etc (3 gzip layers)");
    let shm = Path::new("/dev/shm/registry-image-system");
    let _ = std::fs::remove_dir_all(shm);
    std::fs::create_dir_all(shm).unwrap();
    // SAFETY: no other thread reads the environment at this point.
    unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    let registry = TestRegistry::plain();
    let repo = "bench/system";
    let (mut layers, mut diff_ids, mut uncompressed) = (Vec::new(), Vec::new(), 0u64);
    let mut gz_files = Vec::new();
    for (i, dirs) in LAYERS.iter().enumerate() {
        let gz = shm.join(format!("layer{i}.tar.gz"));
        let script = format!(
            "set -o pipefail; tar --xattrs --ignore-failed-read -C / -cf - {} 2>/dev/null \
             | tee >(sha256sum > {sum}) >(wc -c > {size}) | pigz > {gz}; \
             s=$?; [ $s -le 1 ] || exit $s",
            dirs.join(" "),
            sum = shm.join(format!("layer{i}.sum")).display(),
            size = shm.join(format!("layer{i}.size")).display(),
            gz = gz.display()
        );
        let status = std::process::Command::new("bash")
            .args(["-c", &script])
            .status()
            .expect("bash runs");
        assert!(
            status.success() || status.code() == Some(1),
            "building layer {i}"
        );
        // The process substitutions finish after the pipeline: wait for them.
        let read = |name: String| -> String {
            for _ in 0..100 {
                if let Ok(text) = std::fs::read_to_string(shm.join(&name))
                    && !text.trim().is_empty()
                {
                    return text;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            panic!("{name} was not written");
        };
        let sum = read(format!("layer{i}.sum"));
        let size: u64 = read(format!("layer{i}.size")).trim().parse().unwrap();
        uncompressed += size;
        diff_ids.push(format!("sha256:{}", sum.split_whitespace().next().unwrap()));
        let bytes = std::fs::read(&gz).unwrap();
        let digest = registry.put_blob(repo, &bytes);
        layers.push((digest, bytes.len()));
        gz_files.push(gz);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {},
    }))
    .unwrap();
    let config_digest = registry.put_blob(repo, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|(d, n)| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n,
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let digest = registry.put_manifest(
        repo,
        "latest",
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    );
    println!(
        "  image: {} MiB uncompressed, {} MiB as gzip",
        uncompressed >> 20,
        layers.iter().map(|(_, n)| n).sum::<usize>() >> 20
    );
    let layer_digests: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    let ours = measure::compare_unpack(&registry.host(), repo, &digest, &layer_digests, shm, RUNS);
    machine_floors(&gz_files, shm, ours);
    let _ = std::fs::remove_dir_all(shm);
}

/// What this machine can do at most, each part of `in` alone (issue 28):
/// inflating the layers (zlib-rs, our inflater, one thread; libdeflate's
/// `libdeflate-gunzip`, one thread; `pigz -dc`, the layers in parallel)
/// and writing them (GNU `tar -x` of the uncompressed layers). On two
/// cores the floor of `in` is the larger of the fastest inflate and the
/// write. Medians of [`RUNS`], the rows alternating; files on tmpfs.
fn machine_floors(gz_files: &[std::path::PathBuf], shm: &Path, ours: Duration) {
    let tars: Vec<std::path::PathBuf> = gz_files
        .iter()
        .map(|gz| {
            let tar = gz.with_extension("");
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!("pigz -dc {} > {}", gz.display(), tar.display()))
                .status()
                .unwrap();
            assert!(status.success(), "inflating {}", gz.display());
            tar
        })
        .collect();
    let libdeflate = Path::new("/usr/bin/libdeflate-gunzip").exists();
    let mut rows: Vec<(&str, Vec<Duration>)> = vec![
        ("inflate only, zlib-rs, one thread", Vec::new()),
        ("inflate only, libdeflate-gunzip, one thread", Vec::new()),
        ("inflate only, pigz -dc, the layers in parallel", Vec::new()),
        (
            "write only, GNU tar -x of the uncompressed layers",
            Vec::new(),
        ),
    ];
    for _ in 0..RUNS {
        rows[0].1.push(timed(|| {
            for gz in gz_files {
                let file =
                    std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(gz).unwrap());
                let mut inflater = flate2::read::MultiGzDecoder::new(file);
                std::io::copy(&mut inflater, &mut std::io::sink()).unwrap();
            }
        }));
        if libdeflate {
            rows[1].1.push(timed(|| {
                for gz in gz_files {
                    shell(&format!(
                        "libdeflate-gunzip -c {} > /dev/null",
                        gz.display()
                    ));
                }
            }));
        }
        rows[2].1.push(timed(|| {
            let all: Vec<String> = gz_files
                .iter()
                .map(|gz| format!("pigz -dc {} > /dev/null &", gz.display()))
                .collect();
            shell(&format!("{} wait", all.join(" ")));
        }));
        let dest = shm.join("tar-x");
        std::fs::create_dir_all(&dest).unwrap();
        rows[3].1.push(timed(|| {
            for tar in &tars {
                shell(&format!(
                    "tar -x -C {} -f {}",
                    dest.display(),
                    tar.display()
                ));
            }
        }));
        std::fs::remove_dir_all(&dest).unwrap();
    }
    println!("  this machine's floors, each part alone, median of {RUNS}:");
    let mut fastest_inflate = Duration::MAX;
    for (label, runs) in &rows {
        if runs.is_empty() {
            println!("    {label:<50} not installed (scripts/setup installs it)");
            continue;
        }
        let median = measure::median(runs.clone());
        if label.starts_with("inflate") {
            fastest_inflate = fastest_inflate.min(median);
        }
        println!("    {label:<50} {}", measure::ms(median));
    }
    let write = measure::median(rows[3].1.clone());
    let floor = fastest_inflate.max(write);
    println!(
        "    floor on two cores (the larger of the fastest inflate and the write): {}; \
         ours/floor {:.2}x",
        measure::ms(floor),
        ours.as_secs_f64() / floor.as_secs_f64()
    );
    for tar in tars {
        let _ = std::fs::remove_file(tar);
    }
}

fn timed(work: impl FnOnce()) -> Duration {
    let started = Instant::now();
    work();
    started.elapsed()
}

fn shell(script: &str) {
    let status = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "{script}");
}
