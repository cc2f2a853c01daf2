//! `scripts/bench [check|get|put|package|artifact|copy|system|soak]`: benchmarks against a local registry,
//! printing ratios against the comparison measured in the same run, and
//! peak RSS. Not a test: it asserts only that each run succeeded.

mod artifact;
mod copy;
mod measure;
mod package;
mod s3;
mod soak;
#[path = "../tests/support/mod.rs"]
mod support;
mod system;

use std::path::Path;
use std::time::Duration;

use measure::{median, median_u64, ms};
use serde_json::json;
use support::proxy::FaultProxy;
use support::{TestImage, TestRegistry};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__measure") {
        measure::measure_mode(&args[1..]);
    }
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let which = if which.is_empty() {
        vec!["check".to_owned()]
    } else {
        which
    };
    for name in which {
        match name.as_str() {
            "check" => bench_check(),
            "get" => bench_get(),
            "put" => bench_put(),
            "soak" => soak::run(),
            "package" => package::run(),
            "artifact" => artifact::run(),
            "copy" => copy::run(),
            "system" => system::run(),
            "s3" => s3::run(),
            other => panic!(
                "unknown benchmark {other:?}: use check, get, put, package, artifact, copy, system, s3 or soak"
            ),
        }
    }
}

const RUNS: usize = 5;
const TAGS: usize = 1000;

fn step(
    name: &str,
    concurrency: Option<usize>,
    request: &serde_json::Value,
) -> measure::Measurement {
    let envs: Vec<(&str, String)> = concurrency
        .map(|n| ("REGISTRY_IMAGE_CHECK_CONCURRENCY", n.to_string()))
        .into_iter()
        .collect();
    let program = support::resource_dir().join(name);
    let m = measure::run(&program, &[], &envs, request.to_string().as_bytes());
    assert!(m.success, "{name} failed: {}", m.stderr);
    m
}

fn bench_check() {
    println!("== check: {TAGS} semver tags, each its own image, on a local registry");
    let registry = TestRegistry::plain();
    let repo = "bench/semver";
    let layer = image::layer();
    for i in 0..TAGS {
        let img = TestImage::new(
            vec![layer.clone()],
            json!({"config": {"Labels": {"build": i.to_string()}}}),
            ("linux", "amd64"),
        );
        if i == 0 {
            registry.put_blob(repo, &layer);
        }
        registry.put_blob(repo, &img.config);
        registry.put_manifest(
            repo,
            &format!("1.{}.{}", i / 100, i % 100),
            &img.manifest_media_type,
            &img.manifest,
        );
        if i == TAGS - 1 {
            registry.put_manifest(repo, "latest", &img.manifest_media_type, &img.manifest);
        }
    }

    let proxy = FaultProxy::start(&registry);
    for (label, host, latency) in [
        ("loopback (no added latency)", registry.host(), None),
        (
            "20 ms emulated round trip (through the proxy)",
            proxy.host(),
            Some(Duration::from_millis(20)),
        ),
    ] {
        if let Some(l) = latency {
            proxy.set_latency(l);
        }
        let request = json!({"source": {"repository": format!("{host}/{repo}")}});
        let (mut serial, mut parallel) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            serial.push(step("check", Some(1), &request).wall);
            parallel.push(step("check", None, &request).wall);
        }
        let (s, p) = (median(serial), median(parallel));
        println!("  semver check, {label}:");
        println!(
            "    concurrency 1: {}   default (8): {}   speed-up {:.1}x",
            ms(s),
            ms(p),
            s.as_secs_f64() / p.as_secs_f64()
        );
    }

    // With a cosign key, every version's signature is looked for (none is
    // there: the `.sig` tag, the referrers API and the fallback tag, three
    // requests each), as many at once as digests are resolved.
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/cosign/sigstore_rs_cosign_signature.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let request = json!({"source": {"repository": registry.repo(repo),
                                    "cosign_public_key": fixture["public_key"]}});
    let (mut serial, mut parallel) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        serial.push(step("check", Some(1), &request).wall);
        parallel.push(step("check", None, &request).wall);
    }
    let (s, p) = (median(serial), median(parallel));
    println!("  semver check with cosign_public_key (no version signed), loopback, median of 3:");
    println!(
        "    concurrency 1: {}   default (8): {}   speed-up {:.1}x",
        ms(s),
        ms(p),
        s.as_secs_f64() / p.as_secs_f64()
    );

    proxy.set_latency(Duration::ZERO);
    let request = json!({"source": {"repository": proxy.repo(repo)}});
    for concurrency in [Some(1), None] {
        proxy.clear_log();
        let out = step("check", concurrency, &request);
        let versions: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        println!(
            "  requests, concurrency {}: {} ({} versions reported)",
            concurrency.map_or("8".to_owned(), |n| n.to_string()),
            proxy.requests().len(),
            versions.as_array().unwrap().len()
        );
    }
    let cursor_tag = format!("1.{}.{}", (TAGS - 2) / 100, (TAGS - 2) % 100);
    let cursor_digest = {
        let out = step(
            "check",
            None,
            &json!({"source": {"repository": registry.repo(repo), "tag": cursor_tag}}),
        );
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()[0]["digest"].clone()
    };
    proxy.clear_log();
    step(
        "check",
        None,
        &json!({"source": {"repository": proxy.repo(repo)}, "version": {"tag": cursor_tag, "digest": cursor_digest}}),
    );
    println!(
        "  requests with a cursor at the second-newest version: {}",
        proxy.requests().len()
    );

    let tag_request = json!({"source": {"repository": registry.repo(repo), "tag": "latest"}});
    let (mut cpu, mut rss, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..20 {
        let m = step("check", None, &tag_request);
        cpu.push(m.cpu);
        rss.push(m.max_rss_kib);
        wall.push(m.wall);
    }
    println!(
        "  tag-mode check: CPU {} (user+sys, median of 20), wall {}, peak RSS {} MiB",
        ms(median(cpu)),
        ms(median(wall)),
        median_u64(rss) / 1024
    );
    bench_tag_check_per_connection();
    bench_signed_tag_check();
}

/// A tag-mode check of a signed tag: the signature found and verified in
/// every check, with a key and keyless (a Fulcio certificate, its chain and
/// SCT, the Rekor SET; the signature made by Sigstore's own signer), beside
/// the same check with no policy.
fn bench_signed_tag_check() {
    use support::signatures::{SIG_ANNOTATION, payload, push_sig_layers};
    const CHECKS: usize = 50;
    let registry = TestRegistry::plain();
    let repo = "bench/signed";
    let repository = registry.repo(repo);
    let keyless_digest = registry.push(repo, "keyless", &TestImage::seeded("bench-keyless"));
    let keyed_digest = registry.push(repo, "keyed", &TestImage::seeded("bench-keyed"));
    let keyless_payload = payload(&repository, &keyless_digest);
    let signed = support::sigstore_peer::sign(
        &[support::sigstore_peer::Job {
            kind: "sig",
            name: "bench",
            bytes: &keyless_payload,
            identity: "https://ci.example.com/bench",
            issuer: "https://oidc.example.com",
        }],
        &[],
    );
    push_sig_layers(
        &registry,
        repo,
        &keyless_digest,
        &[(keyless_payload, signed.annotations("bench"))],
    );
    let (_keys, keys) = support::cosign_peer::peer_keys();
    let keyed_payload = payload(&repository, &keyed_digest);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &keyed_payload).unwrap();
    let signature = support::cosign_peer::peer(&[
        "sign",
        keys.join("ec.key").to_str().unwrap(),
        file.path().to_str().unwrap(),
    ])
    .unwrap();
    push_sig_layers(
        &registry,
        repo,
        &keyed_digest,
        &[(keyed_payload, json!({SIG_ANNOTATION: signature.trim()}))],
    );
    let public = std::fs::read_to_string(keys.join("ec.pub")).unwrap();
    let cases = [
        (
            "no signature policy",
            json!({"repository": repository, "tag": "keyless"}),
        ),
        (
            "cosign_public_key, signed with the key",
            json!({"repository": repository, "tag": "keyed", "cosign_public_key": public}),
        ),
        (
            "keyless (identity, issuer, trusted root), signed keyless",
            json!({"repository": repository, "tag": "keyless",
                   "cosign_certificate_identity": "https://ci.example.com/bench",
                   "cosign_certificate_oidc_issuer": "https://oidc.example.com",
                   "cosign_trusted_root": signed.trusted_root()}),
        ),
        (
            "keyless with the built-in public-good root (parsed, nothing signed for it)",
            json!({"repository": repository, "tag": "keyed",
                   "cosign_certificate_identity": "https://ci.example.com/bench",
                   "cosign_certificate_oidc_issuer": "https://oidc.example.com"}),
        ),
    ];
    println!("  tag-mode check of a signed tag, {CHECKS} in a row, plain HTTP:");
    for (label, source) in cases {
        let request = json!({ "source": source });
        let (mut cpu, mut rss) = (Vec::new(), Vec::new());
        let mut reported = 0;
        for _ in 0..CHECKS {
            let m = step("check", None, &request);
            let versions: serde_json::Value = serde_json::from_str(&m.stdout).unwrap();
            reported = versions.as_array().map_or(0, Vec::len);
            cpu.push(m.cpu);
            rss.push(m.max_rss_kib);
        }
        println!(
            "    {label}: CPU {} a check (median), peak RSS {} MiB, {reported} version reported",
            ms(median(cpu)),
            median_u64(rss) / 1024
        );
    }
}

/// A tag-mode check of an unchanged tag, 100 times in a row, as Concourse
/// runs it every minute: CPU and requests per check, over plain HTTP
/// (anonymous and with token auth) and TLS. Requests are counted by a proxy
/// in front of the registry (and, with token auth, at the token service).
fn bench_tag_check_per_connection() {
    const CHECKS: usize = 100;
    let image = TestImage::seeded("tag-check");
    let plain = TestRegistry::plain();
    let token = TestRegistry::token("bench", "bench-password");
    let tls = TestRegistry::tls();
    for registry in [&plain, &token, &tls] {
        registry.push("bench/tag", "latest", &image);
    }
    let plain_proxy = FaultProxy::start(&plain);
    let token_proxy = FaultProxy::start(&token);
    let cases = [
        (
            "plain HTTP, anonymous",
            json!({"repository": plain_proxy.repo("bench/tag"), "tag": "latest"}),
            Some(&plain_proxy),
            None,
        ),
        (
            "plain HTTP, token auth",
            json!({"repository": token_proxy.repo("bench/tag"), "tag": "latest",
                   "username": "bench", "password": "bench-password"}),
            Some(&token_proxy),
            token.token_server.as_ref(),
        ),
        (
            "TLS (a private CA in ca_certs), anonymous",
            json!({"repository": tls.repo("bench/tag"), "tag": "latest",
                   "ca_certs": [tls.ca_pem()]}),
            None,
            None,
        ),
    ];
    println!(
        "  tag-mode check of an unchanged tag, {CHECKS} in a row; cold: no cache (a new \
         container each time), warm: one container's cache, primed by one check"
    );
    for (label, source, proxy, tokens) in cases {
        for warm in [false, true] {
            let cache = tempfile::tempdir().unwrap();
            let cache_dir = cache.path().join("cache");
            let envs: Vec<(&str, String)> = match warm {
                true => vec![(
                    "REGISTRY_IMAGE_CACHE_DIR",
                    cache_dir.to_string_lossy().into_owned(),
                )],
                false => Vec::new(),
            };
            let request = json!({ "source": source });
            let program = support::resource_dir().join("check");
            let run = || {
                let m = measure::run(&program, &[], &envs, request.to_string().as_bytes());
                assert!(m.success, "check failed: {}", m.stderr);
                m
            };
            if warm {
                run();
            }
            if let Some(proxy) = proxy {
                proxy.clear_log();
            }
            let token_requests = tokens.map_or(0, |t| t.request_count());
            let cpu: Vec<_> = (0..CHECKS).map(|_| run().cpu).collect();
            let requests = proxy.map(|p| p.requests().len()).unwrap_or_default()
                + tokens.map_or(0, |t| t.request_count() - token_requests);
            let per_check = match proxy {
                Some(_) => format!("{:.1}", requests as f64 / CHECKS as f64),
                None => "not counted".to_owned(),
            };
            println!(
                "    {label}, {}: CPU {} a check (median), requests a check {per_check}",
                if warm { "warm" } else { "cold" },
                ms(median(cpu))
            );
        }
    }
}

/// The large image's layers, uncompressed: 20,000 small files, 120 MiB of
/// random bytes, 120 MiB of text.
/// `layers` gzipped into an image, and their compressed size.
fn gzip_image(layers: [Vec<u8>; 3]) -> (TestImage, usize) {
    use support::image::{OCI_LAYER_GZIP, gzip};
    let layers: Vec<(Vec<u8>, Vec<u8>, &str)> = layers
        .into_iter()
        .map(|l| {
            let gz = gzip(&l);
            (l, gz, OCI_LAYER_GZIP)
        })
        .collect();
    let compressed = layers.iter().map(|(_, gz, _)| gz.len()).sum();
    (
        TestImage::from_blobs(layers, json!({}), ("linux", "amd64")),
        compressed,
    )
}

fn big_layers() -> [Vec<u8>; 3] {
    use support::image::{Entry, tar};
    const MIB: usize = 1 << 20;
    let small: Vec<Entry> = (0..20_000)
        .map(|i| {
            Entry::file(
                &format!("small/d{:03}/f{i:05}.txt", i / 100),
                format!("file {i}\n").repeat(8),
            )
        })
        .collect();
    let small = tar(&small);
    let random = tar(&[Entry::file(
        "random.bin",
        support::image::random_bytes(120 * MIB, 0x9e37_79b9_7f4a_7c15),
    )]);
    let text: Vec<u8> = (0..)
        .flat_map(|i: u64| {
            format!(
                "line {i}: the quick brown fox jumps over the lazy dog {}\n",
                i % 977
            )
            .into_bytes()
        })
        .take(120 * MIB)
        .collect();
    let text = tar(&[Entry::file("text.log", text)]);
    [small, random, text]
}

fn bench_get() {
    const MIB: usize = 1 << 20;
    println!(
        "== get: a 3-layer image (20,000 small files; 120 MiB random; 120 MiB compressible), gzip"
    );
    let [small, random, text] = big_layers();
    let uncompressed = small.len() + random.len() + text.len();
    // The same layers as zstd, for the second comparison.
    let zstd_image = {
        let layers: Vec<(Vec<u8>, Vec<u8>, &str)> = [&small, &random, &text]
            .into_iter()
            .map(|l| {
                (
                    l.clone(),
                    support::image::zstd(l),
                    support::image::OCI_LAYER_ZSTD,
                )
            })
            .collect();
        TestImage::from_blobs(layers, json!({}), ("linux", "amd64"))
    };
    let (img, compressed) = gzip_image([small, random, text]);
    let registry = TestRegistry::plain();
    let digest = registry.push("bench/big", "latest", &img);
    let layer_digests: Vec<String> = img
        .layers
        .iter()
        .map(|l| support::image::sha256(l))
        .collect();
    drop(img);
    println!(
        "  image: {} MiB uncompressed, {} MiB compressed",
        uncompressed / MIB,
        compressed / MIB
    );

    let shm = std::path::Path::new("/dev/shm/registry-image-bench");
    let _ = std::fs::remove_dir_all(shm);
    std::fs::create_dir_all(shm).unwrap();
    let request = json!({"source": {"repository": registry.repo("bench/big")}, "version": {"tag": "latest", "digest": digest}});
    measure::compare_unpack(
        &registry.host(),
        "bench/big",
        &digest,
        &layer_digests,
        shm,
        RUNS,
    );
    let _ = std::fs::remove_dir_all(shm);

    // The same image with zstd layers (as `out` with compression: zstd
    // writes them), against the gzip one, both fetched by our `in`.
    let zstd_digest = registry.push("bench/big-zstd", "latest", &zstd_image);
    let zstd_request = json!({"source": {"repository": registry.repo("bench/big-zstd")},
                              "version": {"tag": "latest", "digest": zstd_digest}});
    std::fs::create_dir_all(shm).unwrap();
    let (mut gz_runs, mut zstd_runs) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        for (request, runs, name) in [
            (&request, &mut gz_runs, "gz"),
            (&zstd_request, &mut zstd_runs, "zstd"),
        ] {
            let dest = shm.join(format!("{name}-{run}"));
            std::fs::create_dir_all(&dest).unwrap();
            runs.push(measure::resource_step("in", &dest, request));
            std::fs::remove_dir_all(&dest).unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(shm);
    let wall = |runs: &[measure::Measurement]| median(runs.iter().map(|m| m.wall).collect());
    let cpu = |runs: &[measure::Measurement]| median(runs.iter().map(|m| m.cpu).collect());
    let (g, z) = (wall(&gz_runs), wall(&zstd_runs));
    println!(
        "  the same layers as zstd ({} MiB), ours (in), median of {RUNS} alternating runs:",
        zstd_image.layers.iter().map(Vec::len).sum::<usize>() / MIB
    );
    println!("    gzip layers: {}   CPU {}", ms(g), ms(cpu(&gz_runs)));
    println!("    zstd layers: {}   CPU {}", ms(z), ms(cpu(&zstd_runs)));
    println!(
        "    zstd/gzip: {:.2}x wall, {:.2}x CPU",
        z.as_secs_f64() / g.as_secs_f64(),
        cpu(&zstd_runs).as_secs_f64() / cpu(&gz_runs).as_secs_f64()
    );
}

/// `out` of the large image, ours vs `skopeo copy`, from an OCI layout
/// (gzip layers) and from a docker-save tarball (uncompressed layers,
/// compressed on the way by both): into a fresh repository each run, then
/// again into the repository that already has the blobs.
fn bench_put() {
    use support::image::{write_docker_save, write_oci_layout};
    const MIB: usize = 1 << 20;
    println!(
        "== put: the get benchmark's image (3 layers, 20,000 small files), to a local registry"
    );
    let shm = std::path::Path::new("/dev/shm/registry-image-bench-put");
    let _ = std::fs::remove_dir_all(shm);
    std::fs::create_dir_all(shm).unwrap();
    {
        let raw = big_layers();
        let uncompressed: usize = raw.iter().map(Vec::len).sum();
        let saved = TestImage::new(raw.to_vec(), json!({}), ("linux", "amd64"));
        write_docker_save(&shm.join("image.tar"), &saved, "bench/big:latest");
        drop(saved);
        let (img, compressed) = gzip_image(raw);
        let layout = shm.join("oci");
        write_oci_layout(&layout, "latest", &img);
        // Push the image manifest, as skopeo does from `oci:DIR:latest`.
        std::fs::write(layout.join("single-image-digest"), img.digest()).unwrap();
        println!(
            "  image: {} MiB uncompressed, {} MiB as gzip layers",
            uncompressed / MIB,
            compressed / MIB
        );
    }
    // The registry's storage on tmpfs too: this disk's noise would
    // otherwise decide the figures.
    // SAFETY: no other thread reads the environment at this point.
    unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    let registry = TestRegistry::plain();
    let program = support::resource_dir().join("out");
    let chunk_env: Vec<(&str, String)> = std::env::var("REGISTRY_IMAGE_UPLOAD_CHUNK_BYTES")
        .map(|v| vec![("REGISTRY_IMAGE_UPLOAD_CHUNK_BYTES", v)])
        .unwrap_or_default();
    let ours = |repo: &str, image: &str| {
        let request = json!({"source": {"repository": registry.repo(repo), "tag": "latest"},
                             "params": {"image": image}});
        let m = measure::run(
            &program,
            &[shm.into()],
            &chunk_env,
            request.to_string().as_bytes(),
        );
        assert!(m.success, "out failed: {}", m.stderr);
        m
    };
    let skopeo = |repo: &str, from: &str| {
        let m = measure::skopeo(&format!(
            "copy --quiet --dest-tls-verify=false {from} docker://{}/{repo}:latest",
            registry.host()
        ));
        assert!(m.success, "skopeo failed: {}", m.stderr);
        m
    };
    // Our fresh-push medians (layout, then docker-save): the layout push
    // only uploads, so it is the floor the local registry sets.
    let mut fresh_ours = Vec::new();
    let layout_ref = format!("oci:{}:latest", shm.join("oci").display());
    let archive_ref = format!("docker-archive:{}", shm.join("image.tar").display());
    for (name, image, from) in [
        ("OCI layout", "oci", layout_ref.as_str()),
        ("docker-save tarball", "image.tar", archive_ref.as_str()),
    ] {
        let key = if image == "oci" { "layout" } else { "archive" };
        let mut rows: Vec<(&str, Vec<measure::Measurement>, Vec<measure::Measurement>)> = vec![
            ("fresh repository", Vec::new(), Vec::new()),
            ("repository has the blobs", Vec::new(), Vec::new()),
        ];
        for run in 0..RUNS {
            let (mine, theirs) = (
                format!("bench/{key}-ours-{run}"),
                format!("bench/{key}-skopeo-{run}"),
            );
            rows[0].1.push(ours(&mine, image));
            rows[0].2.push(skopeo(&theirs, from));
            rows[1].1.push(ours(&mine, image));
            rows[1].2.push(skopeo(&theirs, from));
        }
        println!("  from a {name}, median of {RUNS} alternating runs:");
        fresh_ours.push(median(rows[0].1.iter().map(|m| m.wall).collect()));
        for (label, o, p) in rows {
            let (ow, pw) = (
                median(o.iter().map(|m| m.wall).collect()),
                median(p.iter().map(|m| m.wall).collect()),
            );
            println!(
                "    {label:<25} ours {:>9} (RSS {:>3} MiB)   skopeo {:>9} (RSS {:>3} MiB)   ratio {:.2}x",
                ms(ow),
                median_u64(o.iter().map(|m| m.max_rss_kib).collect()) / 1024,
                ms(pw),
                median_u64(p.iter().map(|m| m.max_rss_kib).collect()) / 1024,
                ow.as_secs_f64() / pw.as_secs_f64()
            );
        }
    }
    if let [layout, archive] = fresh_ours[..] {
        println!(
            "  docker-save fresh (gzip on the way) / OCI layout fresh (upload only): ours {:.2}x",
            archive.as_secs_f64() / layout.as_secs_f64()
        );
        // The registry's intake floor: the layout's blobs (already
        // compressed) pushed by curl, one monolithic PUT each, then the
        // manifest.
        let floor = median(
            (0..RUNS)
                .map(|run| {
                    intake_floor(
                        &registry.host(),
                        &format!("bench/floor-{run}"),
                        &shm.join("oci"),
                    )
                })
                .collect(),
        );
        println!(
            "  registry intake floor (curl, one PUT per blob, all at once), median of {RUNS}: {}; \
             ours from the layout {:.2}x, from docker-save {:.2}x",
            ms(floor),
            layout.as_secs_f64() / floor.as_secs_f64(),
            archive.as_secs_f64() / floor.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(shm);
}

/// Pushes the single-image OCI layout at `layout` with curl alone: each
/// blob in one monolithic PUT, all at once, then the manifest. Its wall
/// time. (`wait` does not report a failed blob: the manifest PUT, which the
/// registry refuses over a missing blob, does.)
fn intake_floor(host: &str, repo: &str, layout: &Path) -> Duration {
    let manifest_digest = std::fs::read_to_string(layout.join("single-image-digest")).unwrap();
    let manifest_hex = manifest_digest
        .trim()
        .trim_start_matches("sha256:")
        .to_owned();
    let mut script = String::from("set -e\n");
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == manifest_hex {
            continue;
        }
        // Every blob at once (as we and skopeo push several).
        script.push_str(&format!(
            "(loc=$(curl -sf -X POST -D - -o /dev/null http://{host}/v2/{repo}/blobs/uploads/ \
             | tr -d '\\r' | awk 'tolower($1)==\"location:\" {{print $2}}')\n\
             case $loc in http*) ;; *) loc=\"http://{host}$loc\" ;; esac\n\
             case $loc in *\\?*) sep='&' ;; *) sep='?' ;; esac\n\
             curl -sf -X PUT -H 'Content-Type: application/octet-stream' \
             --data-binary @{blobs}/{name} \"$loc${{sep}}digest=sha256:{name}\" -o /dev/null) &\n",
            blobs = layout.join("blobs/sha256").display(),
        ));
    }
    script.push_str("wait\n");
    script.push_str(&format!(
        "curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
         --data-binary @{}/{manifest_hex} http://{host}/v2/{repo}/manifests/latest -o /dev/null\n",
        layout.join("blobs/sha256").display()
    ));
    let m = measure::run(
        Path::new("/bin/sh"),
        &["-c".into(), script.into()],
        &[],
        b"",
    );
    assert!(m.success, "the curl push failed: {}", m.stderr);
    m.wall
}

mod image {
    /// One small shared layer.
    pub fn layer() -> Vec<u8> {
        super::support::image::tar(&[super::support::image::Entry::file("shared", "layer")])
    }
}
