//! Tag lists read from files are deduplicated in linear time and capped
//! while reading: a file of a million distinct tags is refused at its
//! 1,001st, in well under a second of CPU. CPU time comes from the child's
//! rusage (`RUSAGE_CHILDREN`: this file holds one test, so every child of
//! this process is one of its own), never from the wall clock.

mod support;

use std::io::Write as _;
use std::time::Duration;

use serde_json::json;
use support::{TestRegistry, run_step};

/// User + system CPU of every waited-for child so far.
fn children_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the struct it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0);
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// A file of `lines` distinct tags, one a line.
fn tags_file(path: &std::path::Path, lines: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..lines {
        writeln!(out, "tag-{i}").unwrap();
    }
    out.flush().unwrap();
}

#[test]
fn a_million_line_tag_file_is_refused_within_a_second_of_cpu() {
    let registry = TestRegistry::plain();
    let dir = tempfile::tempdir().unwrap();
    tags_file(&dir.path().join("tags"), 1_000_000);
    let source = json!({"repository": registry.repo("lists/app"), "tag": "latest"});
    for params in [
        json!({"image": "image.tar", "additional_tags": "tags"}),
        json!({"delete": {"tags_file": "tags"}}),
    ] {
        let before = children_cpu();
        let out = run_step(
            "out",
            &[dir.path().to_str().unwrap()],
            &json!({"source": source, "params": params}),
        );
        let cpu = children_cpu() - before;
        let line = out.error_line();
        assert!(line.contains("more than 1000 tags"), "{params}: {line}");
        assert!(
            cpu < Duration::from_secs(1),
            "{params}: {} ms of CPU to refuse the list",
            cpu.as_millis()
        );
        eprintln!("{params}: refused in {} ms of CPU", cpu.as_millis());
    }
    // The same million lines all alike is one tag: accepted (and deleted as
    // not found), in linear time too.
    let mut same = std::io::BufWriter::new(std::fs::File::create(dir.path().join("same")).unwrap());
    for _ in 0..1_000_000 {
        writeln!(same, "gone").unwrap();
    }
    drop(same);
    let before = children_cpu();
    let out = run_step(
        "out",
        &[dir.path().to_str().unwrap()],
        &json!({"source": source, "params": {"delete": {"tags_file": "same"}}}),
    );
    let cpu = children_cpu() - before;
    let metadata = out.metadata();
    assert!(
        metadata
            .iter()
            .any(|(k, v)| k == "not_found" && v == "gone"),
        "{metadata:?} {}",
        out.stderr
    );
    assert!(cpu < Duration::from_secs(1), "{} ms", cpu.as_millis());
}
