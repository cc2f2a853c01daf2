//! `scripts/bench [check|get|put]`: benchmarks against a local registry,
//! printing ratios against the comparison measured in the same run, and
//! peak RSS. Not a test: it asserts only that each run succeeded.

mod measure;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use measure::{median, median_u64, ms};
use serde_json::json;
use support::proxy::FaultProxy;
use support::{TestImage, TestRegistry};

fn main() {
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
            other => panic!("unknown benchmark {other:?}: use check"),
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
    let mut command = Command::new(support::resource_dir().join(name));
    command.env_clear();
    if let Some(n) = concurrency {
        command.env("REGISTRY_IMAGE_CHECK_CONCURRENCY", n.to_string());
    }
    let m = measure::run(command, request.to_string().as_bytes());
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
}

mod image {
    /// One small shared layer.
    pub fn layer() -> Vec<u8> {
        super::support::image::tar(&[super::support::image::Entry::file("shared", "layer")])
    }
}
