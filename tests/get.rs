//! `in` (get) in rootfs format against a real registry: contents, metadata,
//! whiteouts, links, compression, safety, verification, resume, platforms,
//! and umoci as the unpack referee.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::image::{self, Entry, TestImage, tar};
use support::proxy::{Fault, FaultProxy};
use support::{TestRegistry, run_step};

fn get(dest: &Path, source: Value, version: Value, params: Value) -> support::StepOutput {
    run_step(
        "in",
        &[dest.to_str().unwrap()],
        &json!({"source": source, "version": version, "params": params}),
    )
}

fn amd64(layers: Vec<Vec<u8>>, config: Value) -> TestImage {
    TestImage::new(layers, config, ("linux", "amd64"))
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn rootfs_metadata_and_version_files() {
    let r = TestRegistry::plain();
    let img = amd64(
        vec![tar(&[
            Entry::dir("home/").mode(0o755),
            Entry::dir("home/alex/").owner(1000, 1000),
            Entry::file("home/alex/birthday", "party")
                .mode(0o603)
                .owner(1000, 1000)
                .mtime(675_934_230),
            Entry::file("bin/tool", "#!/bin/sh").mode(0o4755),
            Entry::symlink("bin/alias", "tool"),
            Entry::dir("tmp/").mode(0o1777).mtime(1_000_000),
        ])],
        json!({"config": {"Env": ["PATH=/usr/bin:/bin", "FOO=1"], "User": "someuser", "Entrypoint": ["/bin/sh"],
                          "Cmd": ["-c", "echo hello world"], "Labels": {"org.x": "<1>", "a": "b"}}}),
    );
    let digest = r.push("some/image", "latest", &img);
    let dest = tempfile::tempdir().unwrap();
    let version = json!({"tag": "latest", "digest": digest});
    let out = get(
        dest.path(),
        json!({"repository": r.repo("some/image")}),
        version.clone(),
        json!({}),
    );
    assert_eq!(
        out.json(),
        json!({"version": version, "metadata": [{"name": "repository", "value": r.repo("some/image")}, {"name": "tag", "value": "latest"}]})
    );
    let root = dest.path().join("rootfs");
    let birthday = std::fs::metadata(root.join("home/alex/birthday")).unwrap();
    assert_eq!(birthday.permissions().mode() & 0o7777, 0o603);
    assert_eq!(birthday.mtime(), 675_934_230);
    assert_eq!(
        (birthday.uid(), birthday.gid()),
        (1000, 1000),
        "running as root in CI keeps owners"
    );
    assert_eq!(
        std::fs::metadata(root.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::read_link(root.join("bin/alias")).unwrap(),
        Path::new("tool")
    );
    let tmp = std::fs::metadata(root.join("tmp")).unwrap();
    assert_eq!(
        (tmp.permissions().mode() & 0o7777, tmp.mtime()),
        (0o1777, 1_000_000)
    );
    assert_eq!(
        read(dest.path().join("metadata.json")),
        "{\"cmd\":[\"-c\",\"echo hello world\"],\"entrypoint\":[\"/bin/sh\"],\"env\":[\"PATH=/usr/bin:/bin\",\"FOO=1\"],\"user\":\"someuser\"}\n"
    );
    assert_eq!(
        read(dest.path().join("labels.json")),
        "{\"a\":\"b\",\"org.x\":\"\\u003c1\\u003e\"}\n"
    );
    assert_eq!(read(dest.path().join("digest")), digest);
    assert_eq!(read(dest.path().join("tag")), "latest");
    assert_eq!(read(dest.path().join("repository")), r.repo("some/image"));
    let names: Vec<String> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with('.')),
        "no temp files left: {names:?}"
    );
}

#[test]
fn whiteouts_replacements_and_links_across_layers() {
    let r = TestRegistry::plain();
    let lower = tar(&[
        Entry::file("top-dir-1/nested-file", "x"),
        Entry::file("top-dir-1/nested-dir/file-here", "here"),
        Entry::file("top-dir-1/nested-dir/file-gone", "gone"),
        Entry::file("top-dir-1/nested-dir/file-then-dir", "file"),
        Entry::file("top-dir-2/stuff", "2"),
        Entry::file("top-dir-3/old-a", "a"),
        Entry::file("top-dir-3/nested-dir/old-b", "b"),
        Entry::file("a", "symlinked\n"),
        Entry::symlink("b", "a"),
        Entry::file("hardlink-test/original", "shared"),
        Entry::hardlink("hardlink-test/hardlink-file", "hardlink-test/original"),
        Entry::dir("replace-dir/"),
        Entry::file("replace-dir/inner", "i"),
    ]);
    let upper = tar(&[
        Entry::file("top-dir-1/nested-dir/.wh.file-gone", ""),
        Entry::file("top-dir-1/nested-dir/file-recreated", "new"),
        Entry::dir("top-dir-1/nested-dir/file-then-dir/"),
        Entry::file("top-dir-2/.wh..wh..opq", ""),
        Entry::file(".wh.top-dir-2", ""),
        Entry::dir("top-dir-3/nested-dir/"),
        Entry::file("top-dir-3/.wh..wh..opq", ""),
        Entry::file("never-existed/.wh..wh..opq", ""),
        Entry::file("b", "replaced\n"),
        Entry::file("hardlink-test/.wh.original", ""),
        Entry::file("replace-dir", "now a file"),
        Entry::fifo("pipe"),
    ]);
    let digest = r.push("wh/image", "latest", &amd64(vec![lower, upper], json!({})));
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("wh/image")}),
        json!({"tag": "latest", "digest": digest}),
        json!({}),
    );
    assert!(out.success, "{}", out.stderr);
    let root = dest.path().join("rootfs");
    let list = |p: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join(p))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(list("top-dir-1"), ["nested-dir", "nested-file"]);
    assert_eq!(
        list("top-dir-1/nested-dir"),
        ["file-here", "file-recreated", "file-then-dir"]
    );
    assert!(root.join("top-dir-1/nested-dir/file-then-dir").is_dir());
    assert!(!root.join("top-dir-2").exists());
    assert_eq!(
        list("top-dir-3"),
        ["nested-dir"],
        "opaque: lower contents gone, this layer's kept"
    );
    assert!(list("top-dir-3/nested-dir").is_empty());
    assert!(!root.join("never-existed").exists());
    assert_eq!(read(root.join("a")), "symlinked\n");
    assert_eq!(read(root.join("b")), "replaced\n");
    assert!(
        !std::fs::symlink_metadata(root.join("b"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let hard = root.join("hardlink-test/hardlink-file");
    assert!(
        !std::fs::symlink_metadata(&hard)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read(hard), "shared");
    assert_eq!(read(root.join("replace-dir")), "now a file");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(root.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn compression_is_sniffed_not_trusted() {
    let r = TestRegistry::plain();
    let raw1 = tar(&[Entry::file("from-gzip", "g")]);
    let raw2 = tar(&[Entry::file("from-zstd", "z")]);
    let raw3 = tar(&[Entry::file("from-plain", "p")]);
    let img = TestImage::from_blobs(
        vec![
            (raw1.clone(), image::gzip(&raw1), image::OCI_LAYER_GZIP),
            // zstd labelled as Docker gzip, as BuildKit does.
            (raw2.clone(), image::zstd(&raw2), image::DOCKER_LAYER_GZIP),
            (raw3.clone(), raw3.clone(), image::OCI_LAYER_GZIP),
        ],
        json!({}),
        ("linux", "amd64"),
    );
    let digest = r.push("zstd/image", "zstd", &img);
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("zstd/image")}),
        json!({"tag": "zstd", "digest": digest}),
        json!({}),
    );
    assert!(out.success, "{}", out.stderr);
    for (f, c) in [("from-gzip", "g"), ("from-zstd", "z"), ("from-plain", "p")] {
        assert_eq!(read(dest.path().join("rootfs").join(f)), c);
    }
}

/// A directory holding the destination, so writes next to it can be seen.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dest")).unwrap();
        Sandbox { dir }
    }
    fn dest(&self) -> PathBuf {
        self.dir.path().join("dest")
    }
    /// Everything in the sandbox outside `dest/rootfs`.
    fn outside(&self) -> Vec<String> {
        let mut found = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut found);
        found.retain(|p| !p.starts_with("dest/rootfs/") && p != "dest/rootfs" && p != "dest");
        found
    }
}

fn walk(base: &Path, dir: &Path, found: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        found.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(base, &p, found);
        }
    }
}

#[test]
fn path_escapes_are_refused_or_contained() {
    let r = TestRegistry::plain();
    // `..` out of the root, and hard links out of it: the step fails.
    for (name, layer, expected) in [
        (
            "dotdot",
            tar(&[Entry::file("../../escaped", "x")]),
            "points outside the rootfs",
        ),
        (
            "dotdot-inner",
            tar(&[Entry::file("a/../../escaped", "x")]),
            "points outside the rootfs",
        ),
        (
            "hardlink-out",
            tar(&[Entry::hardlink("link", "../../../etc/hostname")]),
            "points outside the rootfs",
        ),
        (
            "hardlink-abs",
            tar(&[Entry::hardlink("link", "/etc/hostname")]),
            "linking",
        ),
    ] {
        let digest = r.push(
            &format!("evil/{name}"),
            "latest",
            &amd64(vec![tar(&[Entry::file("ok", "1")]), layer], json!({})),
        );
        let sandbox = Sandbox::new();
        let out = get(
            &sandbox.dest(),
            json!({"repository": r.repo(&format!("evil/{name}"))}),
            json!({"digest": digest}),
            json!({}),
        );
        let line = out.error_line();
        assert!(
            line.contains(expected) && line.contains("download failed"),
            "{name}: {line}"
        );
        assert!(
            sandbox.outside().is_empty(),
            "{name}: wrote {:?}",
            sandbox.outside()
        );
        assert!(
            !sandbox.dest().join("rootfs").exists(),
            "{name}: no partial rootfs"
        );
    }
    // Absolute names and writes through symlinks land inside the root.
    let layers = vec![
        tar(&[
            Entry::symlink("up", "../../../.."),
            Entry::symlink("root-link", "/"),
            Entry::symlink("etc", "/tmp/outside-etc"),
        ]),
        tar(&[
            Entry::file("/abs-file", "a"),
            Entry::file("up/through-relative", "r"),
            Entry::file("root-link/through-absolute", "b"),
            Entry::file("etc/passwd", "p"),
        ]),
    ];
    let digest = r.push("evil/contained", "latest", &amd64(layers, json!({})));
    let sandbox = Sandbox::new();
    let out = get(
        &sandbox.dest(),
        json!({"repository": r.repo("evil/contained")}),
        json!({"digest": digest}),
        json!({}),
    );
    assert!(out.success, "{}", out.stderr);
    let root = sandbox.dest().join("rootfs");
    for (path, contents) in [
        ("abs-file", "a"),
        ("through-relative", "r"),
        ("through-absolute", "b"),
        ("tmp/outside-etc/passwd", "p"),
    ] {
        assert_eq!(read(root.join(path)), contents, "{path}");
    }
    let outside: Vec<String> = sandbox
        .outside()
        .into_iter()
        .filter(|p| {
            ![
                "dest/digest",
                "dest/tag",
                "dest/repository",
                "dest/metadata.json",
                "dest/labels.json",
            ]
            .contains(&p.as_str())
        })
        .collect();
    assert!(outside.is_empty(), "wrote outside: {outside:?}");
    assert!(!Path::new("/tmp/outside-etc").exists());
}

#[test]
fn a_corrupted_blob_fails_the_step() {
    let r = TestRegistry::plain();
    let layer = tar(&[Entry::file("data", "original contents")]);
    let img = amd64(vec![layer.clone()], json!({}));
    let digest = r.push("corrupt/image", "latest", &img);
    let blob = r.blob_path(&image::sha256(&layer));
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.len() - 600;
    bytes[at] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("corrupt/image")}),
        json!({"digest": digest}),
        json!({}),
    );
    assert!(
        out.error_line().contains("does not match its digest"),
        "{}",
        out.stderr
    );
    assert!(!dest.path().join("rootfs").exists());
    assert!(
        !dest.path().join("digest").exists(),
        "no version files for a failed step"
    );
}

#[test]
fn a_dropped_connection_resumes_with_range() {
    let r = TestRegistry::plain();
    let proxy = FaultProxy::start(&r);
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let layer = tar(&[Entry::file("big", &big)]);
    assert!(layer.len() > 3_000_000);
    let img = amd64(vec![layer.clone()], json!({}));
    let digest = r.push("resume/image", "latest", &img);
    let blob_path = format!("/blobs/{}", image::sha256(&layer));
    proxy.inject(Some("GET"), "/v2/", Fault::Status(429, Some(1)), 1);
    proxy.inject(Some("GET"), "/manifests/", Fault::Status(429, Some(1)), 1);
    proxy.inject(
        Some("GET"),
        &format!("/blobs/{}", img.config_digest()),
        Fault::Status(502, None),
        1,
    );
    proxy.inject(Some("GET"), &blob_path, Fault::DropAfter(1_000_000), 1);
    proxy.inject(Some("GET"), &blob_path, Fault::Status(503, None), 1);
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": proxy.repo("resume/image")}),
        json!({"digest": digest}),
        json!({}),
    );
    assert!(out.success, "{}", out.stderr);
    assert_eq!(std::fs::read(dest.path().join("rootfs/big")).unwrap(), big);
    assert_eq!(proxy.count("GET", &blob_path), 3, "{:?}", proxy.requests());
    assert!(out.stderr.contains("resuming"), "{}", out.stderr);
    assert_eq!(proxy.pending_faults(), 0);
}

#[test]
fn skip_download_platforms_and_metadata_regexes() {
    let r = TestRegistry::plain();
    let amd = amd64(
        vec![tar(&[Entry::file("arch", "amd64")])],
        json!({"config": {"Labels": {"z-label": "z", "a-label": "a", "org.other": "no"}}}),
    )
    .with_annotations(json!({"com.example.build": "123", "org.internal": "skip"}));
    let arm = TestImage::new(
        vec![tar(&[Entry::file("arch", "arm64")])],
        json!({}),
        ("linux", "arm64"),
    );
    let armv7 = TestImage::new(
        vec![tar(&[Entry::file("arch", "arm/v7")])],
        json!({}),
        ("linux", "arm"),
    );
    for i in [&amd, &arm, &armv7] {
        r.push("multi/image", &i.digest(), i);
    }
    let mut index: Value = serde_json::from_slice(&image::index(&[
        (&amd, "linux", "amd64"),
        (&arm, "linux", "arm64"),
        (&armv7, "linux", "arm"),
    ]))
    .unwrap();
    index["manifests"][2]["platform"]["variant"] = json!("v7");
    let index = serde_json::to_vec(&index).unwrap();
    let digest = r.put_manifest("multi/image", "latest", image::OCI_INDEX, &index);
    let source = json!({"repository": r.repo("multi/image"), "label_regex": "-label$", "annotation_regex": "^com\\.example\\."});
    let version = json!({"tag": "latest", "digest": digest});

    // skip_download: version files and metadata only.
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        source.clone(),
        version.clone(),
        json!({"skip_download": true, "platform": {"os": "linux", "architecture": "amd64"}}),
    );
    let metadata = out.metadata();
    let names: Vec<&str> = metadata.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "repository",
            "tag",
            "a-label",
            "z-label",
            "com.example.build"
        ]
    );
    let mut files: Vec<String> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["digest", "repository", "tag"]);

    // Platforms, with variants written either way.
    for (platform, expected) in [
        (json!({"os": "linux", "architecture": "arm64"}), "arm64"),
        (json!({"os": "linux", "architecture": "arm64/v8"}), "arm64"),
        (
            json!({"os": "linux", "architecture": "arm", "variant": "v7"}),
            "arm/v7",
        ),
        (json!({"os": "linux", "architecture": "amd64"}), "amd64"),
    ] {
        let dest = tempfile::tempdir().unwrap();
        let out = get(
            dest.path(),
            json!({"repository": r.repo("multi/image")}),
            version.clone(),
            json!({"platform": platform}),
        );
        assert!(out.success, "{}", out.stderr);
        assert_eq!(read(dest.path().join("rootfs/arch")), expected);
    }
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("multi/image")}),
        version,
        json!({"platform": {"os": "linux", "architecture": "s390x"}}),
    );
    let line = out.error_line();
    assert!(
        line.contains("no image for platform linux/s390x") && line.contains("linux/arm/v7"),
        "{line}"
    );
}

#[test]
fn zero_layer_images_and_bad_params() {
    let r = TestRegistry::plain();
    let digest = r.push("empty/image", "latest", &amd64(vec![], json!({})));
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("empty/image")}),
        json!({"tag": "latest", "digest": digest}),
        json!({}),
    );
    assert!(out.success, "{}", out.stderr);
    assert!(
        dest.path().join("rootfs").is_dir(),
        "an empty rootfs, not none"
    );
    let out = get(
        dest.path(),
        json!({"repository": r.repo("empty/image")}),
        json!({"digest": digest}),
        json!({"format": "tarball"}),
    );
    assert!(
        out.error_line().contains("unknown format"),
        "{}",
        out.stderr
    );
    let out = get(
        dest.path(),
        json!({"repository": r.repo("empty/image")}),
        json!({"digest": "latest"}),
        json!({}),
    );
    assert!(
        out.error_line().contains("is not a digest"),
        "{}",
        out.stderr
    );
    let missing = format!("sha256:{}", "ab".repeat(32));
    let out = get(
        dest.path(),
        json!({"repository": r.repo("empty/image")}),
        json!({"digest": missing}),
        json!({}),
    );
    assert!(out.error_line().contains("not found"), "{}", out.stderr);
}

#[test]
fn umoci_unpacks_the_same_tree() {
    let r = TestRegistry::plain();
    let layers = vec![
        tar(&[
            Entry::dir("etc/").mode(0o755),
            Entry::file("etc/config", "a=1")
                .mode(0o640)
                .owner(1000, 100),
            Entry::file("usr/bin/app", "binary").mode(0o4755),
            Entry::symlink("usr/bin/alias", "app"),
            Entry::dir("var/tmp/").mode(0o1777),
            Entry::file("gone/file", "x"),
            Entry::file("opaque/old", "o"),
            Entry::hardlink("usr/bin/hard", "usr/bin/app"),
        ]),
        tar(&[
            Entry::file(".wh.gone", ""),
            Entry::file("opaque/.wh..wh..opq", ""),
            Entry::file("opaque/new", "n"),
            Entry::file("etc/config", "a=2").mode(0o600),
        ]),
    ];
    let img = TestImage::from_blobs(
        layers
            .into_iter()
            .map(|l| (l.clone(), image::gzip(&l), image::OCI_LAYER_GZIP))
            .collect(),
        json!({}),
        ("linux", "amd64"),
    );
    let digest = r.push("interop/umoci", "v1", &img);

    let ours = tempfile::tempdir().unwrap();
    let out = get(
        ours.path(),
        json!({"repository": r.repo("interop/umoci")}),
        json!({"digest": digest}),
        json!({}),
    );
    assert!(out.success, "{}", out.stderr);

    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let run = |cmd: &mut std::process::Command| {
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{}/interop/umoci:v1", r.host()))
        .arg(format!("oci:{}:v1", layout.display())));
    run(std::process::Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(work.path().join("rootfs")));
    assert_eq!(
        support::sandbox::tree(&ours.path().join("rootfs")),
        support::sandbox::tree(&work.path().join("rootfs"))
    );
}

#[test]
fn progress_bars_in_a_pipe_and_lines_under_debug() {
    let r = TestRegistry::plain();
    let layer = tar(&[Entry::file("data", vec![7u8; 200_000])]);
    let digest = r.push(
        "progress/image",
        "latest",
        &amd64(vec![layer.clone()], json!({})),
    );
    let short = &image::sha256(&layer)[7..19];
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("progress/image")}),
        json!({"digest": digest}),
        json!({}),
    );
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains(short) && out.stderr.contains("KiB"),
        "a bar for the layer: {:?}",
        out.stderr
    );
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("progress/image"), "debug": true}),
        json!({"digest": digest}),
        json!({}),
    );
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains("layer 1/1") && !out.stderr.contains("KiB/"),
        "lines, no bars: {:?}",
        out.stderr
    );
}

#[test]
fn buildkit_nested_index_is_unwrapped() {
    let r = TestRegistry::plain();
    let amd = amd64(vec![tar(&[Entry::file("arch", "amd64")])], json!({}));
    r.push("nested/image", &amd.digest(), &amd);
    let inner = image::index(&[(&amd, "linux", "amd64")]);
    let inner_digest = r.put_manifest("nested/image", "inner", image::OCI_INDEX, &inner);
    let outer = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": image::OCI_INDEX, "manifests": [
        {"mediaType": image::OCI_INDEX, "digest": inner_digest, "size": inner.len()}]}),
    )
    .unwrap();
    let digest = r.put_manifest("nested/image", "latest", image::OCI_INDEX, &outer);
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("nested/image")}),
        json!({"digest": digest}),
        json!({"platform": {"os": "linux", "architecture": "amd64"}}),
    );
    assert!(out.success, "{}", out.stderr);
    assert_eq!(read(dest.path().join("rootfs/arch")), "amd64");
}

#[test]
fn a_registry_that_ignores_range_restarts_the_blob() {
    let r = TestRegistry::plain();
    let proxy = FaultProxy::start(&r);
    proxy.ignore_range();
    let big: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let layer = tar(&[Entry::file("big", &big)]);
    let digest = r.push(
        "norange/image",
        "latest",
        &amd64(vec![layer.clone()], json!({})),
    );
    let blob_path = format!("/blobs/{}", image::sha256(&layer));
    proxy.inject(Some("GET"), &blob_path, Fault::DropAfter(700_000), 1);
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": proxy.repo("norange/image")}),
        json!({"digest": digest}),
        json!({}),
    );
    assert!(out.success, "{}", out.stderr);
    assert_eq!(std::fs::read(dest.path().join("rootfs/big")).unwrap(), big);
    assert_eq!(proxy.count("GET", &blob_path), 2);
}

#[test]
fn device_nodes_are_created_when_root() {
    let r = TestRegistry::plain();
    let layer = tar(&[Entry::char_device("dev/null", 1, 3), Entry::file("ok", "1")]);
    let digest = r.push("dev/image", "latest", &amd64(vec![layer], json!({})));
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("dev/image")}),
        json!({"digest": digest}),
        json!({}),
    );
    assert!(out.success, "{}", out.stderr);
    let node = dest.path().join("rootfs/dev/null");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::symlink_metadata(&node).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.rdev(), libc::makedev(1, 3));
    } else {
        assert!(!node.exists());
        assert!(
            out.stderr.contains("skipped 1 device nodes"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn extended_attributes_are_kept() {
    let r = TestRegistry::plain();
    // cap_net_raw+ep, as `ping` carries it.
    let capability = [
        1u8, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let layer = tar(&[
        Entry::file("bin/ping", "elf")
            .mode(0o755)
            .owner(0, 0)
            .xattr("security.capability", &capability),
        Entry::file("data", "x").xattr("user.origin", b"layer one"),
    ]);
    let digest = r.push("xattr/image", "latest", &amd64(vec![layer], json!({})));
    let dest = tempfile::tempdir().unwrap();
    let out = get(
        dest.path(),
        json!({"repository": r.repo("xattr/image")}),
        json!({"digest": digest}),
        json!({}),
    );
    assert!(out.success, "{}", out.stderr);
    let read_xattr = |path: &str, name: &str| -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let n = rustix::fs::getxattr(dest.path().join("rootfs").join(path), name, &mut buf)
            .unwrap_or_else(|e| panic!("{path} {name}: {e}"));
        buf.truncate(n);
        buf
    };
    assert_eq!(read_xattr("data", "user.origin"), b"layer one");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(read_xattr("bin/ping", "security.capability"), capability);
    }
}

/// A blob that breaks late (here after waiting on our own consumer for
/// longer than the whole retry budget) still resumes: the budget counts
/// from the last progress, not from the blob's first byte.
#[test]
fn a_blob_interrupted_after_the_budget_resumes_when_it_made_progress() {
    let r = TestRegistry::plain();
    let big = image::random_bytes(48 << 20, 7);
    let first = tar(&[Entry::file("first", "slow to arrive")]);
    let second = tar(&[Entry::file("big", &big)]);
    let img = amd64(vec![first.clone(), second.clone()], json!({}));
    let digest = r.push("late/image", "latest", &img);
    let proxy = FaultProxy::start(&r);
    let first_path = format!("/blobs/{}", image::sha256(&first));
    let second_path = format!("/blobs/{}", image::sha256(&second));
    // Layer 0 arrives late, so layer 1 waits on the extraction (our own
    // back-pressure) for longer than the 1 s budget, then breaks.
    proxy.inject(
        Some("GET"),
        &first_path,
        Fault::Delay(std::time::Duration::from_millis(2500)),
        1,
    );
    proxy.inject(Some("GET"), &second_path, Fault::DropAfter(40 << 20), 1);
    let dest = tempfile::tempdir().unwrap();
    let out = support::run_step_env(
        "in",
        &[dest.path().to_str().unwrap()],
        &[("REGISTRY_IMAGE_RETRY_BUDGET_MS", "1000")],
        &json!({"source": {"repository": proxy.repo("late/image")},
                "version": {"tag": "latest", "digest": digest}}),
    );
    assert!(out.success, "{}", out.stderr);
    assert!(out.stderr.contains("resuming"), "{}", out.stderr);
    assert_eq!(std::fs::read(dest.path().join("rootfs/big")).unwrap(), big);
    assert_eq!(
        proxy.count("GET", &second_path),
        2,
        "{:?}",
        proxy.requests()
    );
}

/// Our own back-pressure is not server silence: layer downloads paused for
/// longer than the read timeout while earlier layers are extracted (slowed
/// by the test knob) go on without a timeout or a resume.
#[test]
fn a_download_paused_by_extraction_is_not_a_stalled_server() {
    let r = TestRegistry::plain();
    let big = image::random_bytes(48 << 20, 9);
    let first = tar(&[Entry::file("first", "first")]);
    let second = tar(&[Entry::file("big", &big)]);
    let img = amd64(vec![first, second.clone()], json!({}));
    let digest = r.push("paused/image", "latest", &img);
    let proxy = FaultProxy::start(&r);
    let second_path = format!("/blobs/{}", image::sha256(&second));
    let dest = tempfile::tempdir().unwrap();
    let out = support::run_step_env(
        "in",
        &[dest.path().to_str().unwrap()],
        &[
            ("REGISTRY_IMAGE_READ_TIMEOUT_MS", "1000"),
            ("REGISTRY_IMAGE_TEST_EXTRACT_DELAY_MS", "2500"),
        ],
        &json!({"source": {"repository": proxy.repo("paused/image")},
                "version": {"tag": "latest", "digest": digest}}),
    );
    assert!(out.success, "{}", out.stderr);
    assert!(
        !out.stderr.contains("resuming") && !out.stderr.contains("transient"),
        "{}",
        out.stderr
    );
    assert_eq!(
        proxy.count("GET", &second_path),
        1,
        "{:?}",
        proxy.requests()
    );
    assert_eq!(std::fs::read(dest.path().join("rootfs/big")).unwrap(), big);
}

/// A server that falls silent while we read (before its headers, or in the
/// middle of a blob) is retried or resumed after the read timeout.
#[test]
fn a_stalled_server_is_retried_and_resumed() {
    let r = TestRegistry::plain();
    let big = image::random_bytes(8 << 20, 11);
    let layer = tar(&[Entry::file("big", &big)]);
    let img = amd64(vec![layer.clone()], json!({}));
    let digest = r.push("stalled/image", "latest", &img);
    let proxy = FaultProxy::start(&r);
    let blob_path = format!("/blobs/{}", image::sha256(&layer));
    let stall = std::time::Duration::from_secs(4);
    proxy.inject(Some("GET"), "/manifests/", Fault::Delay(stall), 1);
    proxy.inject(
        Some("GET"),
        &blob_path,
        Fault::StallAfter(2 << 20, stall),
        1,
    );
    let dest = tempfile::tempdir().unwrap();
    let out = support::run_step_env(
        "in",
        &[dest.path().to_str().unwrap()],
        &[("REGISTRY_IMAGE_READ_TIMEOUT_MS", "1000")],
        &json!({"source": {"repository": proxy.repo("stalled/image")},
                "version": {"tag": "latest", "digest": digest}}),
    );
    assert!(out.success, "{}", out.stderr);
    assert!(out.stderr.contains("transient"), "{}", out.stderr);
    assert!(out.stderr.contains("resuming"), "{}", out.stderr);
    assert_eq!(proxy.count("GET", &blob_path), 2, "{:?}", proxy.requests());
    assert_eq!(std::fs::read(dest.path().join("rootfs/big")).unwrap(), big);
}
