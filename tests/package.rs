//! `out` with `params.package`: a directory packed into a reproducible
//! single-layer image and pushed; fetched back with our `in` and read by
//! skopeo (the interop referee).

mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use serde_json::{Value, json};
use support::{StepOutput, TestRegistry, run_step, run_step_env};

/// Writes the same application in `dir`, creating entries in `order` with
/// file mtimes of `mtime` (so two calls differ in everything but content).
fn make_app(dir: &Path, order: &[&str], mtime: i64) {
    std::fs::create_dir_all(dir).unwrap();
    for name in order {
        match *name {
            "bin" => {
                std::fs::create_dir_all(dir.join("bin")).unwrap();
                std::fs::write(dir.join("bin/run"), "#!/bin/sh\necho hello\n").unwrap();
                std::fs::set_permissions(dir.join("bin/run"), PermissionsExt::from_mode(0o755))
                    .unwrap();
            }
            "data" => {
                std::fs::create_dir_all(dir.join("data/deep")).unwrap();
                std::fs::write(dir.join("data/deep/table.csv"), "a,b\n1,2\n").unwrap();
            }
            "link" => symlink("bin/run", dir.join("start")).unwrap(),
            other => std::fs::write(dir.join(other), format!("{other}\n")).unwrap(),
        }
    }
    for path in ["bin/run", "data/deep/table.csv", "README", "VERSION"] {
        let t = filetime::FileTime::from_unix_time(mtime, 0);
        if dir.join(path).exists() {
            filetime::set_file_times(dir.join(path), t, t).unwrap();
        }
    }
}

fn push(registry: &TestRegistry, src: &Path, repo: &str, package: Value) -> StepOutput {
    run_step(
        "out",
        &[src.to_str().unwrap()],
        &json!({"source": {"repository": registry.repo(repo), "tag": "latest"},
                "params": {"package": package}}),
    )
}

fn skopeo_config(registry: &TestRegistry, repo: &str) -> Value {
    let raw = support::skopeo(&[
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{}/{repo}:latest", registry.host()),
    ]);
    serde_json::from_slice(&raw).unwrap()
}

#[test]
fn a_directory_becomes_an_image_with_the_same_digest_from_any_checkout() {
    let registry = TestRegistry::plain();
    let one = tempfile::tempdir().unwrap();
    make_app(
        &one.path().join("build/app"),
        &["bin", "data", "link", "README", "VERSION"],
        1,
    );
    let two = tempfile::tempdir().unwrap();
    make_app(
        &two.path().join("build/app"),
        &["VERSION", "link", "README", "data", "bin"],
        1_900_000_000,
    );
    let package = json!({
        "path": "build/*", "prefix": "/app",
        "cmd": ["/app/bin/run"], "env": {"MODE": "prod", "APP_HOME": "/app"},
        "workdir": "/app", "user": "1000:1000", "labels": {"team": "ci"},
    });
    let first = push(&registry, one.path(), "pkg/app", package.clone());
    let digest = first.json()["version"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first.json()["version"]["tag"], "latest");
    // oci-spec, the ecosystem's model, is the referee of what we write.
    let (manifest, _) = registry.manifest("pkg/app", &digest);
    let manifest = oci_spec::image::ImageManifest::from_reader(manifest.as_slice())
        .expect("the package manifest is a valid OCI image manifest");
    let config = std::fs::read(registry.blob_path(manifest.config().digest().as_ref())).unwrap();
    let config = oci_spec::image::ImageConfiguration::from_reader(config.as_slice())
        .expect("the package config is a valid OCI image config");
    assert_eq!(config.rootfs().diff_ids().len(), manifest.layers().len());
    let metadata = first.metadata();
    assert!(
        metadata.contains(&("digest".to_owned(), digest.clone())),
        "{metadata:?}"
    );
    assert!(
        metadata.contains(&(
            "image".to_owned(),
            format!("{}@{digest}", registry.repo("pkg/app"))
        )),
        "{metadata:?}"
    );
    let second = push(&registry, two.path(), "pkg/other", package);
    assert_eq!(
        second.json()["version"]["digest"],
        digest.as_str(),
        "other mtimes and creation order, same files: same digest"
    );
    assert_eq!(
        registry.digest_of("pkg/app", "latest"),
        Some(digest.clone())
    );

    // skopeo reads the config as given.
    let config = skopeo_config(&registry, "pkg/app");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(config["config"]["Cmd"], json!(["/app/bin/run"]));
    assert_eq!(
        config["config"]["Env"],
        json!(["APP_HOME=/app", "MODE=prod"])
    );
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert_eq!(config["config"]["User"], "1000:1000");
    assert_eq!(config["config"]["Labels"], json!({"team": "ci"}));

    // Our `in` gives the files back under the prefix, modes and links kept.
    let dest = tempfile::tempdir().unwrap();
    let fetched = run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": {"repository": registry.repo("pkg/app")},
                "version": {"tag": "latest", "digest": digest}}),
    );
    assert!(fetched.success, "{}", fetched.stderr);
    let rootfs = dest.path().join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/bin/run")).unwrap(),
        "#!/bin/sh\necho hello\n"
    );
    let mode = std::fs::metadata(rootfs.join("app/bin/run"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(rootfs.join("app/start")).unwrap(),
        Path::new("bin/run")
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/data/deep/table.csv")).unwrap(),
        "a,b\n1,2\n"
    );
    let metadata: Value =
        serde_json::from_slice(&std::fs::read(dest.path().join("metadata.json")).unwrap()).unwrap();
    assert_eq!(metadata["env"], json!(["APP_HOME=/app", "MODE=prod"]));
    assert_eq!(metadata["user"], "1000:1000");
}

#[test]
fn source_date_epoch_and_platform_are_honoured() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    make_app(&src.path().join("app"), &["bin", "README"], 5);
    let out = run_step_env(
        "out",
        &[src.path().to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
        &json!({"source": {"repository": registry.repo("pkg/arm"), "tag": "latest"},
                "params": {"package": {"path": "app",
                           "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}}}),
    );
    assert!(out.success, "{}", out.stderr);
    let config = skopeo_config(&registry, "pkg/arm");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["variant"], "v8");
}

#[test]
fn bad_packages_fail_with_one_line_and_push_nothing() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    make_app(&src.path().join("app"), &["bin", "README"], 5);
    std::fs::write(src.path().join("app.zip"), "not a zip").unwrap();
    std::fs::write(src.path().join("notes.txt"), "text").unwrap();
    let fifo_dir = src.path().join("with-fifo");
    std::fs::create_dir(&fifo_dir).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fifo_dir.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let cases = [
        (
            json!({"image": "x", "package": {"path": "app"}}),
            "cannot be combined",
        ),
        (
            json!({"package": {"path": "missing/*"}}),
            "no files match glob",
        ),
        (
            json!({"package": {"path": "app", "prefix": "../up"}}),
            "climbs out",
        ),
        (
            json!({"package": {"path": "app", "env": {"A=B": "1"}}}),
            "not a variable name",
        ),
        (
            json!({"package": {"path": "app", "base": "x"}}),
            "params.package.base",
        ),
        (
            json!({"package": {"path": "app", "from": "x"}}),
            r#"unknown field "from" in params.package"#,
        ),
        (
            json!({"package": {"path": "notes.txt"}}),
            "not a directory or an archive",
        ),
        (json!({"package": {"path": "app.zip"}}), "reading the zip"),
        (json!({"package": {"path": "with-fifo"}}), "FIFOs"),
    ];
    for (params, expected) in cases {
        let out = run_step(
            "out",
            &[src.path().to_str().unwrap()],
            &json!({"source": {"repository": registry.repo("pkg/bad"), "tag": "latest"},
                    "params": params}),
        );
        let line = out.error_line();
        assert!(line.contains(expected), "{params}: {line}");
    }
    assert_eq!(registry.digest_of("pkg/bad", "latest"), None);
}

/// A zip of `dir` as `zip` would make it: directories and files with their
/// modes, symlinks as symlinks, names sorted.
fn zip_of(dir: &Path, out: &Path) {
    use std::io::Write as _;
    let mut names = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            names.push((
                path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned(),
                path,
                meta,
            ));
        }
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    for (name, path, meta) in names {
        let options = zip::write::SimpleFileOptions::default()
            .unix_permissions(meta.permissions().mode() & 0o7777);
        if meta.is_dir() {
            zip.add_directory(format!("{name}/"), options).unwrap();
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            zip.add_symlink(name, target.to_str().unwrap(), options)
                .unwrap();
        } else {
            zip.start_file(name, options).unwrap();
            zip.write_all(&std::fs::read(&path).unwrap()).unwrap();
        }
    }
    zip.finish().unwrap();
}

/// A gzipped tar of `dir` (symlinks kept), as `tar czf` would make it.
fn tgz_of(dir: &Path, out: &Path) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(out).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn an_archive_gives_the_same_digest_as_the_directory_it_holds() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let app = src.path().join("app");
    make_app(&app, &["bin", "data", "link", "README", "VERSION"], 7);
    zip_of(&app, &src.path().join("app.zip"));
    tgz_of(&app, &src.path().join("app.tar.gz"));
    let mut digests = Vec::new();
    for (path, repo) in [
        ("app", "pkg/dir"),
        ("app.zip", "pkg/zip"),
        ("app.tar.gz", "pkg/tgz"),
    ] {
        let out = push(
            &registry,
            src.path(),
            repo,
            json!({"path": path, "prefix": "/srv"}),
        );
        assert!(out.success, "{path}: {}", out.stderr);
        digests.push(out.json()["version"]["digest"].as_str().unwrap().to_owned());
    }
    assert_eq!(digests[0], digests[1], "zip");
    assert_eq!(digests[0], digests[2], "tar.gz");
}

#[test]
fn hostile_archives_are_refused_before_anything_is_pushed() {
    use std::io::Write as _;
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let outside = src.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let zip_with = |name: &str, build: &dyn Fn(&mut zip::ZipWriter<std::fs::File>)| {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(src.path().join(name)).unwrap());
        build(&mut zip);
        zip.finish().unwrap();
    };
    let options = zip::write::SimpleFileOptions::default();
    zip_with("climb.zip", &|zip| {
        zip.start_file("../outside/evil", options).unwrap();
        zip.write_all(b"x").unwrap();
    });
    zip_with("absolute.zip", &|zip| {
        zip.start_file("/tmp/evil", options).unwrap();
        zip.write_all(b"x").unwrap();
    });
    zip_with("link.zip", &|zip| {
        zip.add_symlink("etc", "../../../etc", options).unwrap();
    });
    // A chain: each link's target is inside when read from its own name,
    // but `a/up/esc` is written where `a/up` leads (the top), from where
    // `../../etc/shadow` climbs out.
    zip_with("chain.zip", &|zip| {
        zip.add_directory("a/", options).unwrap();
        zip.add_symlink("a/up", "..", options).unwrap();
        zip.add_symlink("a/up/esc", "../../etc/shadow", options)
            .unwrap();
    });
    let climbing_tar = support::raw_tar::RawEntry::file("../outside/evil", b"x");
    std::fs::write(
        src.path().join("climb.tar"),
        support::raw_tar::layer(&[climbing_tar]),
    )
    .unwrap();
    for (path, expected) in [
        ("climb.zip", "would land outside the package"),
        ("absolute.zip", "would land outside the package"),
        ("link.zip", "points outside the package"),
        ("chain.zip", "points outside the package"),
        ("climb.tar", ".."),
    ] {
        let out = push(&registry, src.path(), "pkg/hostile", json!({"path": path}));
        let line = out.error_line();
        assert!(line.contains(expected), "{path}: {line}");
        // As Concourse runs resources: root in a user namespace.
        let request = json!({"source": {"repository": registry.repo("pkg/hostile"), "tag": "latest"},
                             "params": {"package": {"path": path}}});
        let out = support::run_program(
            Path::new("/usr/bin/unshare"),
            &[
                "--user",
                "--map-root-user",
                support::resource_dir().join("out").to_str().unwrap(),
                src.path().to_str().unwrap(),
            ],
            request.to_string().as_bytes(),
        );
        let line = out.error_line();
        assert!(
            line.contains(expected),
            "{path} in a user namespace: {line}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert_eq!(registry.digest_of("pkg/hostile", "latest"), None);
}

/// A base image: a file of its own, a PATH and a command, on `arch`.
fn base_image(arch: &str) -> support::image::TestImage {
    use support::image::{Entry, TestImage, tar};
    TestImage::new(
        vec![tar(&[
            Entry::dir("etc"),
            Entry::file("etc/os-release", format!("ID=base-{arch}\n")),
        ])],
        json!({"config": {"Env": ["PATH=/usr/bin", "MODE=dev"], "Cmd": ["/bin/sh"],
                          "Labels": {"base": "yes"}}}),
        ("linux", arch),
    )
}

#[test]
fn a_package_goes_on_top_of_a_base_fetched_by_get() {
    let registry = TestRegistry::plain();
    let base = base_image("arm64");
    let base_digest = registry.push("pkg/base", "latest", &base);
    // A `get` with format: oci-layout writes the base as a pipeline would.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("base")).unwrap();
    let got = run_step(
        "in",
        &[src.path().join("base").to_str().unwrap()],
        &json!({"source": {"repository": registry.repo("pkg/base")},
                "version": {"tag": "latest", "digest": base_digest},
                "params": {"format": "oci-layout"}}),
    );
    assert!(got.success, "{}", got.stderr);
    make_app(&src.path().join("app"), &["bin", "README"], 3);

    let package = json!({"path": "app", "prefix": "/app", "base": "base/oci",
                         "cmd": ["/app/bin/run"], "env": {"MODE": "prod"},
                         "labels": {"app": "demo"}});
    let out = push(&registry, src.path(), "pkg/on-base", package.clone());
    assert!(out.success, "{}", out.stderr);
    let digest = out.json()["version"]["digest"].as_str().unwrap().to_owned();
    let again = push(&registry, src.path(), "pkg/on-base-2", package);
    assert_eq!(
        again.json()["version"]["digest"],
        digest.as_str(),
        "reproducible"
    );

    // The base's platform and settings, extended; two layers.
    let config = skopeo_config(&registry, "pkg/on-base");
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(
        config["config"]["Env"],
        json!(["PATH=/usr/bin", "MODE=prod"])
    );
    assert_eq!(config["config"]["Cmd"], json!(["/app/bin/run"]));
    assert_eq!(
        config["config"]["Labels"],
        json!({"base": "yes", "app": "demo"})
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(config["history"].as_array().unwrap().len(), 1);

    // Our `in` gives the base's files and the package's.
    let dest = tempfile::tempdir().unwrap();
    let fetched = run_step(
        "in",
        &[dest.path().to_str().unwrap()],
        &json!({"source": {"repository": registry.repo("pkg/on-base")},
                "version": {"tag": "latest", "digest": digest}}),
    );
    assert!(fetched.success, "{}", fetched.stderr);
    let rootfs = dest.path().join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/os-release")).unwrap(),
        "ID=base-arm64\n"
    );
    assert!(rootfs.join("app/bin/run").exists());
}

#[test]
fn a_base_may_be_a_docker_save_tarball_or_one_platform_of_a_layout() {
    let registry = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    make_app(&src.path().join("app"), &["bin"], 3);
    support::image::write_docker_save(
        &src.path().join("base.tar"),
        &base_image("amd64"),
        "base:latest",
    );
    let (amd, arm) = (base_image("amd64"), base_image("arm64"));
    support::image::write_index_layout(
        &src.path().join("multi"),
        &[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")],
    );

    let out = push(
        &registry,
        src.path(),
        "pkg/from-tar",
        json!({"path": "app", "base": "base.tar", "entrypoint": ["/bin/run"]}),
    );
    assert!(out.success, "{}", out.stderr);
    let config = skopeo_config(&registry, "pkg/from-tar");
    assert_eq!(config["config"]["Entrypoint"], json!(["/bin/run"]));
    assert!(
        config["config"].get("Cmd").is_none(),
        "a new entrypoint drops the base's command: {config}"
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);

    let unpicked = push(
        &registry,
        src.path(),
        "pkg/multi",
        json!({"path": "app", "base": "multi"}),
    );
    assert!(
        unpicked.error_line().contains("holds 2 images"),
        "{}",
        unpicked.stderr
    );
    let picked = push(
        &registry,
        src.path(),
        "pkg/multi",
        json!({"path": "app", "base": "multi",
               "platform": {"os": "linux", "architecture": "arm64"}}),
    );
    assert!(picked.success, "{}", picked.stderr);
    assert_eq!(
        skopeo_config(&registry, "pkg/multi")["architecture"],
        "arm64"
    );
    let wrong = push(
        &registry,
        src.path(),
        "pkg/wrong",
        json!({"path": "app", "base": "base.tar",
               "platform": {"os": "linux", "architecture": "arm64"}}),
    );
    assert!(
        wrong
            .error_line()
            .contains("but the base image is linux/amd64"),
        "{}",
        wrong.stderr
    );
}
