//! `scripts/bench soak`: `out` and `in` of a single-layer image of 2 GiB
//! (`SOAK_MIB` overrides the size) through the fault proxy, clean and with
//! a fault every ~200 MiB, reporting wall time, peak RSS and the bytes sent
//! again because of the faults. skopeo gets the same faults on `in` (it
//! sends a blob in one PATCH, so upload faults by chunk do not apply to it;
//! its clean push is shown for scale). Not in CI: it moves gigabytes.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::measure::{self, Measurement, ms, skopeo};
use super::support::image::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST, sha256};
use super::support::proxy::{Fault, FaultProxy};
use super::support::{self, TestRegistry};

const MIB: u64 = 1 << 20;
/// Bytes between faults.
const FAULT_EVERY: u64 = 200 * MIB;
/// Our read timeout for the run, and the stall that exceeds it.
const READ_TIMEOUT_MS: u64 = 2000;
const STALL: Duration = Duration::from_secs(4);
const RSS_TARGET_MIB: u64 = 64;

pub fn run() {
    let size = std::env::var("SOAK_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(2048)
        * MIB;
    let faults = (size / FAULT_EVERY).max(1) as usize;
    println!(
        "== soak: a single-layer image of {} MiB (uncompressed), {faults} faults, one every {} MiB",
        size / MIB,
        FAULT_EVERY / MIB
    );
    let shm = Path::new("/dev/shm/registry-image-soak");
    let _ = std::fs::remove_dir_all(shm);
    std::fs::create_dir_all(shm).unwrap();
    // The registry's storage on tmpfs too (see bench_put).
    // SAFETY: no other thread reads the environment at this point.
    unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    let (manifest_digest, layer_digest) = write_layout(&shm.join("src/oci"), size);
    let registry = TestRegistry::plain();
    let envs = [(
        "REGISTRY_IMAGE_READ_TIMEOUT_MS",
        READ_TIMEOUT_MS.to_string(),
    )];

    // out: ours clean, ours with an upload cut every ~200 MiB (the
    // connection reset before the registry took the chunk), skopeo clean.
    let out = |proxy: &FaultProxy, repo: &str| {
        let request = json!({"source": {"repository": proxy.repo(repo), "tag": "latest"},
                             "params": {"image": "oci"}});
        measure::run(
            &support::resource_dir().join("out"),
            &[shm.join("src").into()],
            &envs,
            request.to_string().as_bytes(),
        )
    };
    let clean_proxy = FaultProxy::start(&registry);
    let clean = out(&clean_proxy, "soak/out-clean");
    let faulty_proxy = FaultProxy::start(&registry);
    let chunks_between = (FAULT_EVERY / (4 * MIB)) as usize;
    for _ in 0..faults {
        faulty_proxy.inject(
            Some("PATCH"),
            "/blobs/uploads/",
            Fault::Pass,
            chunks_between - 1,
        );
        faulty_proxy.inject(Some("PATCH"), "/blobs/uploads/", Fault::CutUpload(0), 1);
    }
    let faulty = out(&faulty_proxy, "soak/out-faulty");
    let skopeo_proxy = FaultProxy::start(&registry);
    let skopeo_out = skopeo(&format!(
        "copy --quiet --dest-tls-verify=false oci:{}:latest docker://{}/soak/out-skopeo:latest",
        shm.join("src/oci").display(),
        skopeo_proxy.host()
    ));
    println!("  out (a fault: an upload PATCH reset before the registry takes it):");
    report("ours, clean", &clean, clean_proxy.bytes_moved().1, None);
    report(
        "ours, faults",
        &faulty,
        faulty_proxy.bytes_moved().1,
        Some(clean_proxy.bytes_moved().1),
    );
    report(
        "skopeo, clean",
        &skopeo_out,
        skopeo_proxy.bytes_moved().1,
        None,
    );
    println!(
        "    pending faults after our faulty run: {} (0: every fault was hit)",
        faulty_proxy.pending_faults()
    );
    let _ = std::fs::remove_dir_all(shm.join("src"));

    // in: ours and skopeo, clean and with the layer's response cut (reset,
    // then a stall longer than our read timeout, alternating) every
    // ~200 MiB of what it sends.
    let blob_path = format!("/blobs/{layer_digest}");
    let faulty_in = || {
        let proxy = FaultProxy::start(&registry);
        for i in 0..faults {
            let fault = if i % 2 == 0 {
                Fault::DropAfter(FAULT_EVERY as usize)
            } else {
                Fault::StallAfter(FAULT_EVERY as usize, STALL)
            };
            proxy.inject(Some("GET"), &blob_path, fault, 1);
        }
        proxy
    };
    let ours_in = |proxy: &FaultProxy, name: &str| {
        let dest = shm.join(name);
        std::fs::create_dir_all(&dest).unwrap();
        let request = json!({"source": {"repository": proxy.repo("soak/out-clean")},
                             "version": {"tag": "latest", "digest": manifest_digest}});
        let m = measure::run(
            &support::resource_dir().join("in"),
            &[dest.clone().into()],
            &envs,
            request.to_string().as_bytes(),
        );
        let _ = std::fs::remove_dir_all(&dest);
        m
    };
    let skopeo_in = |proxy: &FaultProxy, name: &str| {
        let m = skopeo(&format!(
            "copy --quiet --src-tls-verify=false docker://{}/soak/out-clean@{manifest_digest} oci:{}:latest",
            proxy.host(),
            shm.join(name).display()
        ));
        let _ = std::fs::remove_dir_all(shm.join(name));
        m
    };
    let clean_proxy = FaultProxy::start(&registry);
    let clean = ours_in(&clean_proxy, "in-clean");
    let faulty_proxy = faulty_in();
    let faulty = ours_in(&faulty_proxy, "in-faulty");
    let peer_clean_proxy = FaultProxy::start(&registry);
    let peer_clean = skopeo_in(&peer_clean_proxy, "skopeo-clean");
    let peer_faulty_proxy = faulty_in();
    let peer_faulty = skopeo_in(&peer_faulty_proxy, "skopeo-faulty");
    println!(
        "  in, rootfs (ours) / OCI layout (skopeo) (a fault: the layer's answer reset, or stalled {} s, {} MiB in):",
        STALL.as_secs(),
        FAULT_EVERY / MIB
    );
    let clean_down = clean_proxy.bytes_moved().0;
    report("ours, clean", &clean, clean_down, None);
    report(
        "ours, faults",
        &faulty,
        faulty_proxy.bytes_moved().0,
        Some(clean_down),
    );
    let peer_down = peer_clean_proxy.bytes_moved().0;
    report("skopeo, clean", &peer_clean, peer_down, None);
    report(
        "skopeo, faults",
        &peer_faulty,
        peer_faulty_proxy.bytes_moved().0,
        Some(peer_down),
    );
    if faulty.success && peer_faulty.success {
        println!(
            "    ratio ours/skopeo under faults: {:.2}x",
            faulty.wall.as_secs_f64() / peer_faulty.wall.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(shm);
}

/// One line: outcome, wall time, peak RSS against the target, bytes moved
/// and, with the clean run's figure, bytes moved again.
fn report(label: &str, m: &Measurement, moved: u64, clean: Option<u64>) {
    let rss = m.max_rss_kib / 1024;
    let outcome = if m.success {
        "ok".to_owned()
    } else {
        let line = m.stderr.trim_end().lines().last().unwrap_or_default();
        format!("FAILED: {}", line.chars().take(160).collect::<String>())
    };
    let again = clean
        .map(|c| format!(", {} MiB again", moved.saturating_sub(c) / MIB))
        .unwrap_or_default();
    let target = if label.starts_with("ours") && rss > RSS_TARGET_MIB {
        format!(" (over the {RSS_TARGET_MIB} MiB target)")
    } else {
        String::new()
    };
    println!(
        "    {label:<15} {:>9}  peak RSS {rss:>4} MiB{target}  moved {} MiB{again}  {outcome}",
        ms(m.wall),
        moved / MIB
    );
}

/// Writes an OCI layout at `dir` holding one image whose single
/// uncompressed layer is a tar of one file of `size` pseudo-random bytes,
/// streamed to disk (never held whole). Returns the manifest's and the
/// layer's digests.
fn write_layout(dir: &Path, size: u64) -> (String, String) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let partial = blobs.join("layer.partial");
    let mut file =
        std::io::BufWriter::with_capacity(MIB as usize, std::fs::File::create(&partial).unwrap());
    let mut hasher = Sha256::new();
    let mut put = |bytes: &[u8]| {
        hasher.update(bytes);
        file.write_all(bytes).unwrap();
    };
    let mut header = tar::Header::new_gnu();
    header.set_path("soak.bin").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    put(header.as_bytes());
    let mut seed = 0x5eed_5eed_5eed_5eedu64;
    let mut block = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        super::support::image::fill_random(&mut block, &mut seed);
        let n = left.min(MIB);
        put(&block[..n as usize]);
        left -= n;
    }
    let padding = (512 - size % 512) % 512;
    put(&vec![0u8; padding as usize + 1024]);
    file.flush().unwrap();
    drop(file);
    let layer_digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let layer_size = std::fs::metadata(&partial).unwrap().len();
    std::fs::rename(&partial, blobs.join(&layer_digest["sha256:".len()..])).unwrap();

    let blob = |bytes: &[u8]| {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
        digest
    };
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let config_digest = blob(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": layer_size}],
    }))
    .unwrap();
    let manifest_digest = blob(&manifest);
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (manifest_digest, layer_digest)
}
