//! The static (musl) release binary, as the Dockerfiles install it, works as
//! `/opt/resource/check`. `scripts/test` builds it first and passes its path
//! in `REGISTRY_IMAGE_STATIC_BIN`; without that the test builds it itself.

mod support;

use std::path::PathBuf;

use serde_json::json;
use support::{TestImage, TestRegistry};

fn static_binary() -> PathBuf {
    if let Ok(path) = std::env::var("REGISTRY_IMAGE_STATIC_BIN") {
        return PathBuf::from(path);
    }
    PathBuf::from(support::project_script("build-static", &[], &[]).trim())
}

/// Whether an ELF file has no program interpreter (PT_INTERP), i.e. needs no
/// dynamic loader.
fn is_static_elf(bytes: &[u8]) -> bool {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) != PT_INTERP
    })
}

#[test]
fn static_binary_runs_as_check() {
    let binary = static_binary();
    assert!(
        is_static_elf(&std::fs::read(&binary).unwrap()),
        "{} is dynamically linked",
        binary.display()
    );

    let dir = tempfile::tempdir().unwrap();
    support::link_steps(&binary, dir.path());
    let registry = TestRegistry::tls();
    let digest = registry.push("static/image", "latest", &TestImage::seeded("static"));
    let request = json!({"source": {"repository": registry.repo("static/image"), "tag": "latest",
                                    "ca_certs": [registry.ca_pem()]}});
    let out = support::run_program(
        &dir.path().join("check"),
        &[],
        request.to_string().as_bytes(),
    );
    assert_eq!(out.json(), json!([{"tag": "latest", "digest": digest}]));
}
