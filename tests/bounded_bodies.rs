//! Every response body held in memory has a cap: a hostile or broken
//! registry (the fault proxy in front of the real one) cannot make a step
//! read an error page, a tag listing or a manifest without bound.

mod support;

use serde_json::json;
use support::proxy::{Fault, FaultProxy};
use support::{TestImage, TestRegistry, run_step};

/// The largest resident set of any child this test process has waited for.
fn children_peak_rss_mib() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    usage.ru_maxrss / 1024
}

#[test]
fn a_flooded_error_body_is_read_only_as_far_as_its_excerpt() {
    let registry = TestRegistry::plain();
    let img = TestImage::seeded("flood");
    let digest = registry.push("flood/app", "latest", &img);
    let proxy = FaultProxy::start(&registry);
    proxy.inject(Some("GET"), "/manifests/", Fault::Flood(403, 2 << 30), 1);
    let dest = tempfile::tempdir().unwrap();
    let out = run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": {"repository": proxy.repo("flood/app")},
                "version": {"tag": "latest", "digest": digest}}),
    );
    let line = out.error_line();
    assert!(line.contains("403"), "{line}");
    assert!(line.len() < 1000, "one readable line: {line}");
    let peak = children_peak_rss_mib();
    assert!(
        peak < 512,
        "a 2 GiB error body was read: peak RSS {peak} MiB"
    );
}

#[test]
fn tag_listings_are_capped_per_page_and_in_total() {
    let registry = TestRegistry::plain();
    registry.push("many/app", "1.0.0", &TestImage::seeded("many"));
    let proxy = FaultProxy::start(&registry);
    let source = json!({"source": {"repository": proxy.repo("many/app")}});

    proxy.inject(Some("GET"), "/tags/list", Fault::Flood(200, 64 << 20), 1);
    let out = run_step("check", &[], &source);
    let line = out.error_line();
    assert!(line.contains("larger than"), "{line}");

    let tags: Vec<String> = (0..120_000).map(|i| format!("0.0.{i}")).collect();
    let page = serde_json::to_vec(&json!({"name": "many/app", "tags": tags})).unwrap();
    proxy.inject(
        Some("GET"),
        "/tags/list",
        Fault::Json(std::sync::Arc::new(page)),
        1,
    );
    let out = run_step("check", &[], &source);
    let line = out.error_line();
    assert!(line.contains("over 100000 tags"), "{line}");

    // The real listing still works through the same proxy.
    let out = run_step("check", &[], &source);
    assert_eq!(support::versions(&out).len(), 1, "{}", out.stderr);
}

#[test]
fn a_flooded_token_response_is_refused_at_its_cap() {
    use support::token_server::TokenFault;
    let registry = TestRegistry::token("flood", "flood-secret");
    registry.push("flood/app", "1.0.0", &TestImage::seeded("token-flood"));
    let source = json!({"source": {"repository": registry.repo("flood/app"), "tag": "1.0.0",
                                   "username": "flood", "password": "flood-secret"}});
    let tokens = registry.token_server.as_ref().unwrap();
    // Twice: a failed HEAD of the tag falls back to a GET, which asks again.
    tokens.inject(TokenFault::Flood(2 << 30), 2);
    let out = run_step("check", &[], &source);
    let line = out.error_line();
    assert!(line.contains("larger than 1048576 bytes"), "{line}");
    assert!(line.len() < 1000, "one readable line: {line}");
    assert_eq!(tokens.pending_faults(), 0);
    let peak = children_peak_rss_mib();
    assert!(
        peak < 512,
        "a 2 GiB token response was read: peak RSS {peak} MiB"
    );
    // The same source works once the token service behaves.
    let out = run_step("check", &[], &source);
    assert_eq!(support::versions(&out).len(), 1, "{}", out.stderr);
}
