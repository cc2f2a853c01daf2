//! The resource type's own image (`scripts/build-image`): a reproducible
//! multi-platform OCI layout, pushed by our own `out`, fetched by our own
//! `in`, and run as Concourse runs it: by an OCI runtime (runc), as root
//! mapped into a user namespace (container root is host uid 100000, with a
//! container's capabilities only), stdin JSON, `/opt/resource/check`, then
//! `in` into a bind-mounted destination, then `out` from a bind-mounted
//! input. The arm64 image's binary runs `check` under qemu-user.
//!
//! `scripts/test` builds the layout first and passes it in
//! `REGISTRY_IMAGE_LAYOUT`; without that the test builds it itself.

mod support;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};
use support::{StepOutput, TestImage, TestRegistry, run_program_env, run_step};

/// Container root's uid and gid on the host (and the size of the range).
const HOST_ROOT: u32 = 100_000;
const ID_RANGE: u32 = 65_536;

fn build_image(out: &Path) -> String {
    support::project_script("build-image", &[out.as_os_str()], &[])
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// The layout under test.
fn layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| match std::env::var("REGISTRY_IMAGE_LAYOUT") {
        Ok(path) => PathBuf::from(path),
        Err(_) => {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("image");
            build_image(&out);
            out
        }
    })
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap()
}

fn json_blob(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(layout, digest)).unwrap()
}

/// The multi-platform index the layout's `index.json` names, and its digest.
fn index(layout: &Path) -> (String, Value) {
    let top: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entries = top["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "index.json holds one index: {top}");
    assert_eq!(
        entries[0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let digest = entries[0]["digest"].as_str().unwrap().to_owned();
    let index = json_blob(layout, &digest);
    (digest, index)
}

/// One platform's image: its config and its layer's entries (path, mode,
/// uid, gid, mtime, link target) and files' bytes by path.
struct PlatformImage {
    config: Value,
    entries: Vec<(String, u32, u64, u64, u64, String)>,
    files: std::collections::BTreeMap<String, Vec<u8>>,
}

fn platform_image(layout: &Path, index: &Value, arch: &str) -> PlatformImage {
    let descriptor = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == arch)
        .unwrap_or_else(|| panic!("no {arch} image in {index}"));
    let manifest = json_blob(layout, descriptor["digest"].as_str().unwrap());
    let config = json_blob(layout, manifest["config"]["digest"].as_str().unwrap());
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let gz = blob(layout, layers[0]["digest"].as_str().unwrap());
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        support::image::sha256(&tar_bytes).as_str(),
        "diff_id is the uncompressed layer's digest"
    );
    let mut entries = Vec::new();
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        if header.entry_type().is_file() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            files.insert(path.clone(), bytes);
        }
        entries.push((
            path,
            header.mode().unwrap(),
            header.uid().unwrap(),
            header.gid().unwrap(),
            header.mtime().unwrap(),
            link,
        ));
    }
    PlatformImage {
        config,
        entries,
        files,
    }
}

fn file_says(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("binary");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("file")
        .arg("-b")
        .arg(&path)
        .output()
        .expect("file is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_layout_is_a_reproducible_multi_platform_image() {
    let layout = layout();
    let (digest, index) = index(layout);
    let platforms: Vec<Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"].clone())
        .collect();
    assert_eq!(
        platforms,
        [
            json!({"os": "linux", "architecture": "amd64"}),
            json!({"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ]
    );
    let mut epoch = None;
    for (arch, file_words) in [
        ("amd64", "ELF 64-bit LSB executable, x86-64"),
        ("arm64", "ELF 64-bit LSB executable, ARM aarch64"),
    ] {
        let image = platform_image(layout, &index, arch);
        let config = &image.config;
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], arch);
        let env: Vec<&str> = config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(env.iter().any(|e| e.starts_with("PATH=/")), "{env:?}");
        assert!(
            env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"),
            "{env:?}"
        );
        let labels = &config["config"]["Labels"];
        assert_eq!(
            labels["org.opencontainers.image.version"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
        assert!(
            labels["org.opencontainers.image.revision"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{labels}"
        );
        // Every entry root-owned, at one mtime; the files Concourse and
        // TLS need, with their modes.
        let mtime = image.entries[0].4;
        assert_eq!(*epoch.get_or_insert(mtime), mtime, "one epoch for both");
        let mut paths = Vec::new();
        for (path, mode, uid, gid, entry_mtime, link) in &image.entries {
            assert_eq!((*uid, *gid, *entry_mtime), (0, 0, mtime), "{path}");
            match path.as_str() {
                "opt/resource/registry-image" => assert_eq!(*mode, 0o755),
                "opt/resource/check" | "opt/resource/in" | "opt/resource/out" => {
                    assert_eq!(link, "registry-image")
                }
                "tmp/" => assert_eq!(*mode, 0o1777),
                "etc/ssl/certs/ca-certificates.crt" => assert_eq!(*mode, 0o644),
                _ => {}
            }
            paths.push(path.as_str());
        }
        for wanted in [
            "etc/ssl/certs/ca-certificates.crt",
            "usr/share/doc/ca-certificates/copyright",
            "opt/resource/registry-image",
            "opt/resource/check",
            "opt/resource/in",
            "opt/resource/out",
            "tmp/",
        ] {
            assert!(paths.contains(&wanted), "{arch}: no {wanted} in {paths:?}");
        }
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "entries are sorted");
        assert!(
            image.files["etc/ssl/certs/ca-certificates.crt"]
                .starts_with(b"-----BEGIN CERTIFICATE-----")
        );
        let says = file_says(&image.files["opt/resource/registry-image"]);
        assert!(
            says.contains(file_words) && says.contains("statically linked"),
            "{arch}: {says}"
        );
    }

    // A second build of the same commit: the same bytes, the same digest.
    let again = tempfile::tempdir().unwrap();
    let printed = build_image(&again.path().join("image"));
    assert_eq!(printed, digest, "a rebuild gives the same index digest");
    assert_eq!(
        std::fs::read(again.path().join("image/index.json")).unwrap(),
        std::fs::read(layout.join("index.json")).unwrap()
    );

    // skopeo (the interop referee) reads both images of the layout.
    let tag = index_tag(layout);
    for arch in ["amd64", "arm64"] {
        let raw = support::skopeo(&[
            "inspect",
            "--override-os",
            "linux",
            "--override-arch",
            arch,
            &format!("oci:{}:{tag}", layout.display()),
        ]);
        let inspected: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(inspected["Architecture"], arch, "{inspected}");
    }
}

fn index_tag(layout: &Path) -> String {
    let top: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    top["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Runs `args` in a container of `bundle` with runc: container root is
/// host uid `HOST_ROOT`, a container's capabilities only, no network
/// namespace of its own (the loopback registry is reachable), `binds` of
/// (host, container) paths, `request` on stdin.
fn run_in_container(
    bundle: &Path,
    env: &[String],
    args: &[&str],
    binds: &[(&Path, &str)],
    request: &Value,
) -> StepOutput {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "registry-image-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    // Garden's default capabilities for unprivileged containers.
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
    ];
    for (host, inside) in binds {
        mounts.push(json!({"destination": inside, "type": "bind",
                           "source": host, "options": ["rbind", "rw"]}));
    }
    let mapping = json!([{"containerID": 0, "hostID": HOST_ROOT, "size": ID_RANGE}]);
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false, "user": {"uid": 0, "gid": 0}, "args": args, "env": env, "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs"},
        "hostname": "resource",
        "mounts": mounts,
        "linux": {
            "uidMappings": mapping, "gidMappings": mapping,
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                           {"type": "user"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let state = bundle.join("state");
    let out = run_program_env(
        Path::new("/usr/sbin/runc"),
        &[
            "--root",
            state.to_str().unwrap(),
            "run",
            "--bundle",
            bundle.to_str().unwrap(),
            &id,
        ],
        &[],
        request.to_string().as_bytes(),
    );
    // A container that failed to start leaves state behind.
    let _ = Command::new("/usr/sbin/runc")
        .args(["--root", state.to_str().unwrap(), "delete", "--force", &id])
        .output();
    out
}

/// A directory container root owns (as a Concourse volume is).
fn volume(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    chown_tree(path);
}

/// Shifts a tree's owners into the container's range (as Concourse's
/// volumes and image rootfs are shifted).
fn chown_tree(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "-h", &format!("{HOST_ROOT}:{HOST_ROOT}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_image_runs_check_in_and_out_as_concourse_runs_it() {
    let started = std::time::Instant::now();
    let layout = layout();
    let (index_digest, index) = index(layout);
    let registry = TestRegistry::plain();
    let repo = registry.repo("resource/registry-image");

    // Pushed by our own `out` (multi-arch, digests kept) and fetched by our
    // own `in` as a rootfs.
    let parent = layout.parent().unwrap();
    let name = layout.file_name().unwrap().to_str().unwrap();
    let pushed = run_step(
        "out",
        &[parent.to_str().unwrap()],
        &json!({"source": {"repository": repo, "tag": "test"}, "params": {"image": name}}),
    );
    assert_eq!(
        pushed.json()["version"]["digest"],
        index_digest.as_str(),
        "{}",
        pushed.stderr
    );
    assert_eq!(
        registry.digest_of("resource/registry-image", "test"),
        Some(index_digest.clone())
    );
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let fetched = run_step(
        "in",
        &[bundle.to_str().unwrap()],
        &json!({"source": {"repository": repo, "platform": {"os": "linux", "architecture": "amd64"}},
                "version": {"tag": "test", "digest": index_digest}}),
    );
    assert!(fetched.success, "{}", fetched.stderr);
    chown_tree(&bundle.join("rootfs"));
    let amd64 = platform_image(layout, &index, "amd64");
    let env: Vec<String> = amd64.config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();

    // check, in the container: the image's own digest.
    let checked = run_in_container(
        &bundle,
        &env,
        &["/opt/resource/check"],
        &[],
        &json!({"source": {"repository": repo, "tag": "test"}}),
    );
    assert_eq!(
        support::versions(&checked),
        [("test".to_owned(), index_digest.clone())],
        "{}",
        checked.stderr
    );

    // in, in the container, into a bind-mounted destination.
    let app = TestImage::seeded("in-a-container");
    let app_digest = registry.push("app/small", "1.0", &app);
    let get = work.path().join("get");
    volume(&get);
    let got = run_in_container(
        &bundle,
        &env,
        &["/opt/resource/in", "/tmp/build/get"],
        &[(&get, "/tmp/build/get")],
        &json!({"source": {"repository": registry.repo("app/small")},
                "version": {"tag": "1.0", "digest": app_digest}}),
    );
    assert_eq!(
        got.json()["version"]["digest"],
        app_digest.as_str(),
        "{}",
        got.stderr
    );
    assert_eq!(
        std::fs::read_to_string(get.join("rootfs/seed")).unwrap(),
        "in-a-container"
    );
    assert_eq!(
        std::fs::read_to_string(get.join("digest")).unwrap(),
        app_digest
    );
    // Written by container root, which is host uid 100000, not host root.
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(get.join("digest")).unwrap());
    assert_eq!(owner, HOST_ROOT);

    // out, in the container, from a bind-mounted input.
    let put = work.path().join("put");
    let pushed_image = TestImage::seeded("out-of-a-container");
    support::image::write_oci_layout(&put.join("oci"), "latest", &pushed_image);
    chown_tree(&put);
    std::fs::set_permissions(&put, std::fs::Permissions::from_mode(0o755)).unwrap();
    let put_out = run_in_container(
        &bundle,
        &env,
        &["/opt/resource/out", "/tmp/build/put"],
        &[(&put, "/tmp/build/put")],
        &json!({"source": {"repository": registry.repo("app/pushed"), "tag": "latest"},
                "params": {"image": "oci"}}),
    );
    // The same push from the host gives the same (deterministic) digest.
    let reference = run_step(
        "out",
        &[put.to_str().unwrap()],
        &json!({"source": {"repository": registry.repo("app/reference"), "tag": "latest"},
                "params": {"image": "oci"}}),
    );
    let expected = reference.json()["version"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        put_out.json()["version"]["digest"],
        expected.as_str(),
        "{}",
        put_out.stderr
    );
    assert_eq!(registry.digest_of("app/pushed", "latest"), Some(expected));
    eprintln!(
        "resource image: pushed, fetched and run (check, in, out) in {} ms",
        started.elapsed().as_millis()
    );
}

#[test]
fn the_arm64_binary_runs_check_under_qemu() {
    let layout = layout();
    let (_, index) = index(layout);
    let arm64 = platform_image(layout, &index, "arm64");
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("registry-image");
    std::fs::write(&binary, &arm64.files["opt/resource/registry-image"]).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let check = dir.path().join("check");
    std::os::unix::fs::symlink(&binary, &check).unwrap();

    let registry = TestRegistry::plain();
    let app = TestImage::seeded("arm64");
    let digest = registry.push("app/arm", "2.0", &app);
    // qemu-user runs the binary directly (no binfmt needed); argv[0] is
    // `check`, as Concourse names it.
    let out = run_program_env(
        Path::new("/usr/bin/qemu-aarch64-static"),
        &["-0", check.to_str().unwrap(), binary.to_str().unwrap()],
        &[],
        json!({"source": {"repository": registry.repo("app/arm"), "tag": "2.0"}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(
        support::versions(&out),
        [("2.0".to_owned(), digest)],
        "{}",
        out.stderr
    );
}

/// The Dockerfiles build for the architecture asked for, and install the
/// same paths, links, environment and label keys as the layout.
#[test]
fn the_dockerfiles_agree_with_the_layout() {
    let layout = layout();
    let (_, index) = index(layout);
    let image = platform_image(layout, &index, "amd64");
    let links: std::collections::BTreeMap<&str, &str> = image
        .entries
        .iter()
        .map(|e| (e.0.as_str(), e.5.as_str()))
        .collect();
    let env = &image.config["config"]["Env"];
    let labels = image.config["config"]["Labels"].as_object().unwrap();
    for flavour in ["alpine", "ubuntu"] {
        let path = format!(
            "{}/dockerfiles/{flavour}/Dockerfile",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("ARG TARGETARCH")
                && text.contains(r#"scripts/build-static "$TARGETARCH""#)
                && !text.contains("unknown-linux-musl/release"),
            "{flavour}: builds for TARGETARCH through scripts/build-static"
        );
        // COPY destinations and `ln -s TARGET LINK` pairs.
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut installed = Vec::new();
        for (i, word) in words.iter().enumerate() {
            if *word == "COPY" && words[i + 1].starts_with("--from=") {
                installed.push((
                    words[i + 3].trim_start_matches('/').to_owned(),
                    String::new(),
                ));
            }
            if *word == "ln" && words[i + 1] == "-s" {
                installed.push((
                    words[i + 3].trim_start_matches('/').to_owned(),
                    words[i + 2].to_owned(),
                ));
            }
        }
        assert_eq!(installed.len(), 4, "{flavour}: {installed:?}");
        for (path, target) in &installed {
            assert_eq!(
                links.get(path.as_str()).copied(),
                Some(target.as_str()),
                "{flavour}: {path} differs from the layout's"
            );
        }
        for line in text.lines().filter(|l| l.starts_with("ENV ")) {
            let setting = line.trim_start_matches("ENV ").trim();
            assert!(
                env.as_array().unwrap().iter().any(|e| e == setting),
                "{flavour}: {setting} is not in the layout's Env {env}"
            );
        }
        for key in text
            .split_whitespace()
            .filter(|w| w.starts_with("org.opencontainers.image."))
            .map(|w| w.split('=').next().unwrap())
        {
            assert!(
                labels.contains_key(key),
                "{flavour}: label {key} not in the layout's"
            );
        }
    }
}

/// `scripts/publish-image` pushes the layout with the resource's own `out`,
/// credentials from the docker config, and prints `repository@digest`.
#[test]
fn publish_image_pushes_the_layout_with_docker_config_credentials() {
    use base64::Engine as _;
    let layout = layout();
    let (index_digest, _) = index(layout);
    let registry = TestRegistry::basic("publisher", "publish-secret");
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("publisher:publish-secret");
    std::fs::write(
        config.path().join("config.json"),
        json!({"auths": {registry.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let repository = registry.repo("resource/published");
    let reference = format!("{repository}:v1");
    let stdout = support::project_script(
        "publish-image",
        &[reference.as_ref()],
        &[("IMAGE_LAYOUT", layout), ("DOCKER_CONFIG", config.path())],
    );
    assert_eq!(stdout.trim(), format!("{repository}@{index_digest}"));
    assert_eq!(
        registry.digest_of("resource/published", "v1"),
        Some(index_digest)
    );
}
