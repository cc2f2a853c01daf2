//! `scripts/bench s3`: the cost of storage redirects. The get benchmark's
//! image through distribution on S3 (moto, behind the recording proxy that
//! stands for the storage host: blob GETs answer 307 to presigned URLs)
//! next to the same image on the plain filesystem registry, in alternating
//! runs: `in` (rootfs, to tmpfs) and `out` (an OCI layout, a fresh
//! repository each run). moto is a Python server, so the S3 side measures
//! moto's speed as much as the redirect's: read the ratio as an upper bound.

use serde_json::json;

use super::measure::{self, Measurement, median, ms};
use super::support::image::write_oci_layout;
use super::support::s3::S3Storage;
use super::support::{Auth, TestRegistry};

const RUNS: usize = 3;

pub fn run() {
    println!(
        "== s3: the get benchmark's image through storage redirects (distribution on S3, moto)"
    );
    // SAFETY: no other thread reads the environment at this point.
    unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    let storage = S3Storage::start();
    let s3 = TestRegistry::on_s3(Auth::Anonymous, &storage);
    let plain = TestRegistry::plain();
    let (image, compressed) = super::gzip_image(super::big_layers());
    println!("  image: {} MiB as gzip layers", compressed >> 20);
    let shm = std::path::Path::new("/dev/shm/registry-image-bench-s3");
    let _ = std::fs::remove_dir_all(shm);
    std::fs::create_dir_all(shm).unwrap();
    let layout = shm.join("layout");
    write_oci_layout(&layout, "latest", &image);
    let digest = image.digest();
    drop(image);

    let push = |registry: &TestRegistry, repo: &str| -> Measurement {
        let request = json!({"source": {"repository": registry.repo(repo), "tag": "latest"},
                             "params": {"image": "layout"}});
        measure::resource_step("out", shm, &request)
    };
    let get = |registry: &TestRegistry| -> Measurement {
        let dest = shm.join("dest");
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::create_dir_all(&dest).unwrap();
        let request = json!({"source": {"repository": registry.repo("bench/app")},
                             "version": {"tag": "latest", "digest": digest}});
        let m = measure::resource_step("in", &dest, &request);
        let _ = std::fs::remove_dir_all(&dest);
        m
    };
    let (mut out_plain, mut out_s3, mut in_plain, mut in_s3) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        out_plain.push(push(&plain, &format!("bench/out-{run}")).wall);
        out_s3.push(push(&s3, &format!("bench/out-{run}")).wall);
    }
    push(&plain, "bench/app");
    push(&s3, "bench/app");
    let redirects_before = storage.presigned_gets().len();
    for _ in 0..RUNS {
        in_plain.push(get(&plain).wall);
        in_s3.push(get(&s3).wall);
    }
    assert!(
        storage.presigned_gets().len() >= redirects_before + 3 * RUNS,
        "the S3 registry's blobs came through presigned URLs"
    );
    let _ = std::fs::remove_dir_all(shm);
    let row = |what: &str, plain: Vec<std::time::Duration>, s3: Vec<std::time::Duration>| {
        let (p, s) = (median(plain), median(s3));
        println!(
            "    {what:<34} plain {:>10}   S3 (redirected) {:>10}   ratio {:.2}x",
            ms(p),
            ms(s),
            s.as_secs_f64() / p.as_secs_f64()
        );
    };
    println!("  median of {RUNS} alternating runs:");
    row("out, OCI layout, fresh repository", out_plain, out_s3);
    row("in, rootfs to tmpfs", in_plain, in_s3);
}
