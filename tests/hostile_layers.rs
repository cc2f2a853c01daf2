//! The hostile-layer corpus: images whose layers try to reach outside
//! `rootfs/` (or merely do odd things), each pushed to the real registry and
//! fetched with `in`, as root and as root inside a user namespace (how
//! unprivileged Concourse workers run resources).
//!
//! Every vector asserts that nothing outside the rootfs changed (a snapshot
//! of the whole sandbox around the destination: contents, modes, owners,
//! mtimes, link targets, hard-link counts, existence) and that the step
//! either refused the image with the expected error and left no output, or
//! produced the expected rootfs.

mod support;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::image::{self, TestImage};
use support::raw_tar::{self, RawEntry as E, layer};
use support::sandbox::{Sandbox, changes};
use support::{StepOutput, TestRegistry};

/// How a step was run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    Root,
    /// Root inside a user namespace that maps only itself.
    UserNamespace,
    /// A plain user (`nobody`): owners and devices are left alone, as
    /// before the rewrite.
    Unprivileged,
}

struct Ctx<'a> {
    rootfs: &'a Path,
    sandbox: &'a Sandbox,
    runner: Runner,
    stderr: &'a str,
}

enum Expect {
    /// The step fails and its error line holds this text.
    Refused(&'static str),
    /// The step succeeds and the rootfs passes this check.
    Rootfs(Box<dyn Fn(&Ctx<'_>)>),
}

/// Builds a vector's layer blobs (tar, or gzip where the vector needs it)
/// for a sandbox (whose absolute path they may name).
type Layers = Box<dyn Fn(&Sandbox) -> Vec<Vec<u8>>>;

struct Vector {
    name: &'static str,
    /// Layer blobs (tar, or gzip where the vector needs it).
    layers: Layers,
    expect: Expect,
}

fn v(
    name: &'static str,
    layers: impl Fn(&Sandbox) -> Vec<Vec<u8>> + 'static,
    expect: Expect,
) -> Vector {
    Vector {
        name,
        layers: Box::new(layers),
        expect,
    }
}

fn ok(check: impl Fn(&Ctx<'_>) + 'static) -> Expect {
    Expect::Rootfs(Box::new(check))
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn lmeta(p: PathBuf) -> std::fs::Metadata {
    std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn names(dir: PathBuf) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `rootfs/<the sandbox's absolute path>/p`: where an absolute name of the
/// sandbox lands when resolved inside the rootfs.
fn inside(c: &Ctx<'_>, p: &str) -> PathBuf {
    c.rootfs.join(c.sandbox.abs(p).trim_start_matches('/'))
}

/// A gzip layer whose stream is an extension header (`x`, `L` or `K`)
/// declaring 1.5 GiB, followed by 16 MiB of it (the rest never comes).
fn header_bomb(kind: u8) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut start = Vec::new();
    raw_tar::extension(&mut start, kind, b"");
    // Patch the declared size: 1.5 GiB.
    let mut head = start[..512].to_vec();
    head[124..136].copy_from_slice(format!("{:011o}\0", 3u64 << 29).as_bytes());
    head[148..156].fill(b' ');
    let sum: u32 = head.iter().map(|b| u32::from(*b)).sum();
    head[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    gz.write_all(&head).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..16 {
        gz.write_all(&chunk).unwrap();
    }
    gz.finish().unwrap()
}

fn vectors() -> Vec<Vector> {
    use raw_tar::{BLOCK, CHAR, FIFO};
    vec![
        v(
            "dotdot-name",
            |_| vec![layer(&[E::file("../../escaped", "x")])],
            Expect::Refused("points outside the rootfs"),
        ),
        v(
            "dotdot-inner-name",
            |_| vec![layer(&[E::file("a/../../escaped", "x")])],
            Expect::Refused("points outside the rootfs"),
        ),
        v(
            "absolute-names",
            |_| vec![layer(&[E::file("/abs", "a"), E::file("/etc/x", "b")])],
            ok(|c| {
                assert_eq!(read(c.rootfs.join("abs")), "a");
                assert_eq!(read(c.rootfs.join("etc/x")), "b");
            }),
        ),
        v(
            "relative-climb-symlink",
            |_| {
                vec![layer(&[
                    E::symlink("up", "../../../../../../.."),
                    E::file("up/escaped", "x"),
                ])]
            },
            ok(|c| assert_eq!(read(c.rootfs.join("escaped")), "x")),
        ),
        v(
            "absolute-symlink-to-sandbox",
            |s| {
                vec![layer(&[
                    E::symlink("esc", s.abs("canary")),
                    E::file("esc/file", "pwned"),
                ])]
            },
            ok(|c| assert_eq!(read(inside(c, "canary/file")), "pwned")),
        ),
        v(
            "root-symlink",
            |_| vec![layer(&[E::symlink("r", "/"), E::file("r/x", "x")])],
            ok(|c| assert_eq!(read(c.rootfs.join("x")), "x")),
        ),
        v(
            "hardlink-climbing-out",
            |_| vec![layer(&[E::hardlink("h", "../../../canary-file")])],
            Expect::Refused("points outside the rootfs"),
        ),
        v(
            "hardlink-to-absolute-host-path",
            |s| vec![layer(&[E::hardlink("h", s.abs("canary-file"))])],
            Expect::Refused("linking to"),
        ),
        v(
            "hardlink-through-symlinked-dir",
            |s| {
                vec![
                    layer(&[E::symlink("l", s.abs(""))]),
                    layer(&[E::hardlink("h", "l/canary-file")]),
                ]
            },
            Expect::Refused("linking to"),
        ),
        v(
            "hardlink-to-symlink-pointing-out",
            |s| {
                vec![layer(&[
                    E::symlink("s", s.abs("canary-file")),
                    E::hardlink("h", "s"),
                ])]
            },
            ok(|c| {
                let m = lmeta(c.rootfs.join("h"));
                assert!(
                    m.file_type().is_symlink(),
                    "the link is to the symlink itself"
                );
                assert_eq!(m.nlink(), 2);
            }),
        ),
        v(
            "symlink-chain-across-layers",
            |s| {
                vec![
                    layer(&[E::symlink("a", "b")]),
                    layer(&[E::symlink("b", s.abs("canary"))]),
                    layer(&[E::file("a/new", "x")]),
                ]
            },
            ok(|c| assert_eq!(read(inside(c, "canary/new")), "x")),
        ),
        v(
            "ancestor-swapped-for-symlink-in-same-layer",
            |s| {
                vec![layer(&[
                    E::dir("d/").mode(0o777).mtime(5),
                    E::file("d/f", "x"),
                    E::symlink("d", s.abs("canary")),
                ])]
            },
            ok(|c| assert!(lmeta(c.rootfs.join("d")).file_type().is_symlink())),
        ),
        v(
            "ancestor-swapped-for-symlink-in-later-layer",
            |s| {
                vec![
                    layer(&[E::dir("d/").mode(0o777).mtime(5)]),
                    layer(&[E::symlink("d", s.abs("canary"))]),
                ]
            },
            ok(|c| assert!(lmeta(c.rootfs.join("d")).file_type().is_symlink())),
        ),
        v(
            "grandparent-swapped-for-symlink",
            |s| {
                vec![
                    layer(&[E::dir("p/"), E::dir("p/q/").mode(0o777).mtime(5)]),
                    layer(&[
                        E::symlink("p", s.abs("canary")),
                        E::dir(format!("{}/", s.abs("canary/q"))).mode(0o700),
                    ]),
                ]
            },
            ok(|c| {
                let q = lmeta(inside(c, "canary/q"));
                assert_eq!(
                    q.mode() & 0o7777,
                    0o700,
                    "p/q's fix-up did not follow the new symlink"
                );
            }),
        ),
        v(
            "whiteout-of-dotdot",
            |_| vec![layer(&[E::file("a/.wh...", "")])],
            Expect::Refused("names no file"),
        ),
        v(
            "whiteout-of-the-destination",
            |_| vec![layer(&[E::file(".wh...", "")])],
            Expect::Refused("names no file"),
        ),
        v(
            "whiteout-of-dot",
            |_| vec![layer(&[E::file(".wh..", "")])],
            Expect::Refused("names no file"),
        ),
        v(
            "whiteout-of-nothing",
            |_| vec![layer(&[E::file("sub/.wh.", "")])],
            Expect::Refused("names no file"),
        ),
        v(
            "whiteout-through-symlinked-parent",
            |s| {
                vec![
                    layer(&[E::symlink("l", s.abs(""))]),
                    layer(&[E::file("l/.wh.canary-file", "")]),
                ]
            },
            ok(|c| assert!(lmeta(c.rootfs.join("l")).file_type().is_symlink())),
        ),
        v(
            "whiteout-of-non-utf8-name",
            |_| {
                vec![
                    layer(&[
                        E::file(b"caf\xe9", "latin1"),
                        E::file("caf\u{fffd}", "utf8"),
                    ]),
                    layer(&[E::file(b".wh.caf\xe9", "")]),
                ]
            },
            ok(|c| assert_eq!(names(c.rootfs.to_path_buf()), ["caf\u{fffd}"])),
        ),
        v(
            "opaque-whiteout-over-symlink",
            |s| {
                vec![
                    layer(&[E::symlink("l", s.abs("canary"))]),
                    layer(&[E::file("l/.wh..wh..opq", "")]),
                ]
            },
            ok(|c| assert!(lmeta(c.rootfs.join("l")).file_type().is_symlink())),
        ),
        v(
            "opaque-whiteout-at-root",
            |_| {
                vec![
                    layer(&[E::file("old", "o"), E::dir("olddir/")]),
                    layer(&[E::file(".wh..wh..opq", ""), E::file("new", "n")]),
                ]
            },
            ok(|c| assert_eq!(names(c.rootfs.to_path_buf()), ["new"])),
        ),
        v(
            "opaque-whiteout-keeps-implicit-parents",
            |_| {
                vec![
                    layer(&[E::file("d/sub/old", "o"), E::file("d/other", "o")]),
                    layer(&[E::file("d/sub/new", "n"), E::file("d/.wh..wh..opq", "")]),
                ]
            },
            ok(|c| {
                assert_eq!(names(c.rootfs.join("d")), ["sub"]);
                assert_eq!(names(c.rootfs.join("d/sub")), ["new"]);
            }),
        ),
        v(
            "opaque-whiteout-before-this-layers-entries",
            |_| {
                vec![
                    layer(&[E::file("d/old", "o")]),
                    layer(&[E::file("d/.wh..wh..opq", ""), E::file("d/new", "n")]),
                ]
            },
            ok(|c| assert_eq!(names(c.rootfs.join("d")), ["new"])),
        ),
        v(
            "whiteout-spares-this-layer",
            |_| {
                vec![
                    layer(&[E::file("w/lower", "l")]),
                    layer(&[E::dir("w/"), E::file("w/mine", "m"), E::file(".wh.w", "")]),
                ]
            },
            ok(|c| assert_eq!(names(c.rootfs.join("w")), ["mine"])),
        ),
        v(
            "root-entry-as-symlink",
            |s| vec![layer(&[E::symlink("./", s.abs("")), E::file("x", "x")])],
            ok(|c| {
                assert!(lmeta(c.rootfs.to_path_buf()).is_dir());
                assert_eq!(read(c.rootfs.join("x")), "x");
            }),
        ),
        v(
            "root-entry-as-file",
            |_| vec![layer(&[E::file("/", "data"), E::file("y", "y")])],
            ok(|c| assert_eq!(read(c.rootfs.join("y")), "y")),
        ),
        v(
            "char-device",
            |_| {
                vec![layer(&[
                    E::device("dev/null", CHAR, 1, 3),
                    E::file("ok", "1"),
                ])]
            },
            ok(|c| {
                let dev = c.rootfs.join("dev/null");
                match c.runner {
                    Runner::Root => assert!(lmeta(dev).file_type().is_char_device()),
                    Runner::UserNamespace | Runner::Unprivileged => {
                        assert!(!dev.exists());
                        assert!(c.stderr.contains("skipped 1 device nodes"), "{}", c.stderr);
                    }
                }
            }),
        ),
        v(
            "block-device",
            |_| vec![layer(&[E::device("dev/sda", BLOCK, 8, 0)])],
            ok(|c| {
                let dev = c.rootfs.join("dev/sda");
                match c.runner {
                    Runner::Root => assert!(lmeta(dev).file_type().is_block_device()),
                    Runner::UserNamespace | Runner::Unprivileged => assert!(!dev.exists()),
                }
            }),
        ),
        v(
            "fifo",
            |_| vec![layer(&[E::device("p", FIFO, 0, 0).mode(0o600)])],
            ok(|c| {
                let m = lmeta(c.rootfs.join("p"));
                assert!(m.file_type().is_fifo());
                assert_eq!(m.mode() & 0o7777, 0o600);
            }),
        ),
        v(
            "unknown-entry-type",
            |_| vec![layer(&[E::new("sock", b'Q')])],
            Expect::Refused("unsupported entry type"),
        ),
        v(
            "pax-header-bomb",
            |_| vec![header_bomb(b'x')],
            Expect::Refused("over 1 MiB"),
        ),
        v(
            "gnu-long-name-bomb",
            |_| vec![header_bomb(b'L')],
            Expect::Refused("over 1 MiB"),
        ),
        v(
            "gnu-long-link-bomb",
            |_| vec![header_bomb(b'K')],
            Expect::Refused("over 1 MiB"),
        ),
        v(
            "pax-header-under-the-limit",
            |_| {
                vec![layer(&[
                    E::file("commented", "c").pax("comment", vec![b'z'; 900 << 10])
                ])]
            },
            ok(|c| assert_eq!(read(c.rootfs.join("commented")), "c")),
        ),
        v(
            "long-names",
            |_| {
                let long = format!("{}/{}/file", "a".repeat(120), "b".repeat(200));
                vec![layer(&[
                    E::file(&long, "deep"),
                    E::symlink("to-long", &long),
                ])]
            },
            ok(|c| {
                let long = format!("{}/{}/file", "a".repeat(120), "b".repeat(200));
                assert_eq!(read(c.rootfs.join(&long)), "deep");
                assert_eq!(
                    std::fs::read_link(c.rootfs.join("to-long")).unwrap(),
                    Path::new(&long)
                );
            }),
        ),
        v(
            "name-longer-than-path-max",
            |_| {
                let long = vec!["c".repeat(120); 40].join("/") + "/file";
                vec![layer(&[E::file(&long, "very deep")])]
            },
            ok(|c| {
                // Deeper than a path can name: walked by handles.
                use rustix::fs::{Mode, OFlags};
                let mut dir = rustix::fs::open(c.rootfs, OFlags::DIRECTORY, Mode::empty()).unwrap();
                for _ in 0..40 {
                    dir = rustix::fs::openat(
                        &dir,
                        "c".repeat(120),
                        OFlags::DIRECTORY | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )
                    .unwrap();
                }
                let file = rustix::fs::openat(
                    &dir,
                    "file",
                    OFlags::RDONLY | OFlags::NOFOLLOW,
                    Mode::empty(),
                )
                .unwrap();
                let mut contents = String::new();
                std::io::Read::read_to_string(&mut std::fs::File::from(file), &mut contents)
                    .unwrap();
                assert_eq!(contents, "very deep");
            }),
        ),
        v(
            "sparse-file",
            |_| {
                vec![layer(&[E::sparse(
                    "holes",
                    1 << 30,
                    &[(0, &[b'h'; 512]), (512 << 20, &[b'm'; 512]), (1 << 30, &[])],
                )])]
            },
            ok(|c| {
                let p = c.rootfs.join("holes");
                let m = lmeta(p.clone());
                assert_eq!(m.len(), 1 << 30);
                assert!(
                    m.blocks() * 512 < 4 << 20,
                    "written with holes: {} blocks",
                    m.blocks()
                );
                let f = std::fs::File::open(&p).unwrap();
                let mut buf = [0u8; 512];
                use std::os::unix::fs::FileExt;
                f.read_exact_at(&mut buf, 512 << 20).unwrap();
                assert_eq!(buf, [b'm'; 512]);
                f.read_exact_at(&mut buf, 4096).unwrap();
                assert_eq!(buf, [0; 512]);
            }),
        ),
        v(
            "duplicate-entries",
            |_| {
                vec![layer(&[
                    E::file("dup", "one"),
                    E::file("dup", "two"),
                    E::dir("dd/"),
                    E::file("dd/x", "x"),
                    E::dir("dd/").mode(0o700),
                ])]
            },
            ok(|c| {
                assert_eq!(read(c.rootfs.join("dup")), "two");
                assert_eq!(names(c.rootfs.join("dd")), ["x"]);
                assert_eq!(lmeta(c.rootfs.join("dd")).mode() & 0o7777, 0o700);
            }),
        ),
        v(
            "directory-to-file-and-back",
            |_| {
                vec![
                    layer(&[E::dir("x/"), E::file("x/y", "y")]),
                    layer(&[E::file("x", "file")]),
                    layer(&[E::dir("x/"), E::file("x/z", "z")]),
                ]
            },
            ok(|c| assert_eq!(names(c.rootfs.join("x")), ["z"])),
        ),
        v(
            "file-to-directory-in-one-layer",
            |_| {
                vec![layer(&[
                    E::file("f", "file"),
                    E::dir("f/"),
                    E::file("f/in", "in"),
                ])]
            },
            ok(|c| assert_eq!(names(c.rootfs.join("f")), ["in"])),
        ),
        v(
            "directory-over-symlink-pointing-out",
            |s| {
                vec![
                    layer(&[E::symlink("l", s.abs("canary"))]),
                    layer(&[E::dir("l/").mode(0o700)]),
                ]
            },
            ok(|c| {
                let m = lmeta(c.rootfs.join("l"));
                assert!(m.is_dir());
                assert_eq!(m.mode() & 0o7777, 0o700);
            }),
        ),
        v(
            "hardlink-to-directory",
            |_| vec![layer(&[E::dir("d/"), E::hardlink("h", "d")])],
            Expect::Refused("linking to"),
        ),
        v(
            "hardlink-chain",
            |_| {
                vec![layer(&[
                    E::file("a", "x"),
                    E::hardlink("b", "a"),
                    E::hardlink("c", "b"),
                ])]
            },
            ok(|c| assert_eq!(lmeta(c.rootfs.join("a")).nlink(), 3)),
        ),
        v(
            "extended-attributes-filtered",
            |_| {
                vec![layer(&[E::file("f", "x")
                    .xattr("user.kept", "yes")
                    .xattr("trusted.evil", "no")
                    .xattr("security.selinux", "system_u:object_r:etc_t:s0")])]
            },
            ok(|c| {
                let get = |name: &str| {
                    let mut buf = [0u8; 64];
                    rustix::fs::lgetxattr(c.rootfs.join("f"), name, &mut buf)
                        .map(|n| buf[..n].to_vec())
                };
                assert_eq!(get("user.kept").unwrap(), b"yes");
                assert!(get("trusted.evil").is_err());
                assert_ne!(
                    get("security.selinux").ok(),
                    Some(b"system_u:object_r:etc_t:s0".to_vec())
                );
            }),
        ),
        v(
            "symlink-loop-in-parents",
            |_| {
                vec![layer(&[
                    E::symlink("a", "b"),
                    E::symlink("b", "a"),
                    E::file("a/x", "x"),
                ])]
            },
            Expect::Refused("symbolic links"),
        ),
        v(
            "file-as-parent",
            |_| vec![layer(&[E::file("f", "f"), E::file("f/x", "x")])],
            Expect::Refused("Not a directory"),
        ),
        v(
            "whiteout-of-symlink-pointing-out",
            |s| {
                vec![
                    layer(&[E::symlink("s", s.abs("canary"))]),
                    layer(&[E::file(".wh.s", "")]),
                ]
            },
            ok(|c| assert!(names(c.rootfs.to_path_buf()).is_empty())),
        ),
        v(
            "backslash-names",
            |_| vec![layer(&[E::file("..\\..\\x", "b")])],
            ok(|c| assert_eq!(read(c.rootfs.join("..\\..\\x")), "b")),
        ),
        v(
            "owner-outside-the-namespace",
            |_| vec![layer(&[E::file("owned", "o").owner(4242, 4343)])],
            ok(|c| {
                let m = lmeta(c.rootfs.join("owned"));
                match c.runner {
                    Runner::Root => assert_eq!((m.uid(), m.gid()), (4242, 4343)),
                    Runner::UserNamespace => {
                        assert_eq!((m.uid(), m.gid()), (0, 0));
                        assert!(c.stderr.contains("does not map"), "{}", c.stderr);
                    }
                    Runner::Unprivileged => assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY)),
                }
            }),
        ),
        v(
            "setuid-kept",
            |_| vec![layer(&[E::file("suid", "s").mode(0o4755)])],
            ok(|c| assert_eq!(lmeta(c.rootfs.join("suid")).mode() & 0o7777, 0o4755)),
        ),
        v(
            "read-only-directory-filled-later",
            |_| {
                vec![
                    layer(&[E::dir("ro/").mode(0o500).mtime(7)]),
                    layer(&[E::file("ro/x", "x")]),
                ]
            },
            ok(|c| {
                let m = lmeta(c.rootfs.join("ro"));
                assert_eq!((m.mode() & 0o7777, m.mtime()), (0o500, 7));
                assert_eq!(read(c.rootfs.join("ro/x")), "x");
            }),
        ),
        v(
            "dangling-absolute-symlink-as-parent",
            |s| {
                vec![layer(&[
                    E::symlink("dl", s.abs("nonexistent/dir")),
                    E::file("dl/x", "x"),
                ])]
            },
            ok(|c| {
                assert_eq!(read(inside(c, "nonexistent/dir/x")), "x");
                assert!(!c.sandbox.path().join("nonexistent").exists());
            }),
        ),
        v(
            "directory-with-data",
            |_| {
                vec![layer(&[
                    {
                        let mut d = E::dir("d/");
                        d.data = b"hidden bytes".to_vec();
                        d
                    },
                    E::file("after", "a"),
                ])]
            },
            ok(|c| assert_eq!(read(c.rootfs.join("after")), "a")),
        ),
        v(
            "hardlink-to-whited-out-file",
            |_| {
                vec![
                    layer(&[E::file("gone", "g")]),
                    layer(&[E::file(".wh.gone", ""), E::hardlink("h", "gone")]),
                ]
            },
            Expect::Refused("linking to"),
        ),
        v(
            "nul-in-pax-path",
            |_| vec![layer(&[E::file("plain", "p").pax("path", b"evil\0name")])],
            Expect::Refused("entry"),
        ),
        v(
            "pax-path-climbing-out",
            |_| {
                vec![layer(&[
                    E::file("innocent", "p").pax("path", "../../pax-escaped")
                ])]
            },
            Expect::Refused("points outside the rootfs"),
        ),
        v(
            "pax-linkpath-through-symlink",
            |s| {
                vec![
                    layer(&[E::symlink("l", s.abs(""))]),
                    layer(&[E::hardlink("h", "innocent").pax("linkpath", "l/canary-file")]),
                ]
            },
            Expect::Refused("linking to"),
        ),
    ]
}

fn run(runner: Runner, dest: &Path, request: &serde_json::Value) -> StepOutput {
    let program = support::resource_dir().join("in");
    let dest = dest.to_str().unwrap();
    match runner {
        Runner::Root => support::run_program(&program, &[dest], request.to_string().as_bytes()),
        Runner::UserNamespace => {
            let wrapper = Path::new("/usr/bin/unshare");
            let program = program.to_str().unwrap();
            support::run_program(
                wrapper,
                &["--user", "--map-root-user", program, dest],
                request.to_string().as_bytes(),
            )
        }
        Runner::Unprivileged => {
            let (_guard, program) = support::world_runnable(&program, "in");
            let program = program.to_str().unwrap();
            let (uid, gid) = (format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"));
            support::run_program(
                Path::new("/usr/bin/setpriv"),
                &[&uid, &gid, "--clear-groups", program, dest],
                request.to_string().as_bytes(),
            )
        }
    }
}

/// The unprivileged user the corpus also runs as.
const NOBODY: u32 = 65534;

fn run_corpus(runner: Runner) {
    let r = TestRegistry::plain();
    let all = vectors();
    assert!(all.len() >= 40, "the corpus has {} vectors", all.len());
    let mut failures = Vec::new();
    for vector in &all {
        let sandbox = Sandbox::new();
        let blobs = (vector.layers)(&sandbox);
        let img = TestImage::from_blobs(
            blobs
                .into_iter()
                .map(|b| {
                    let media = if b.starts_with(&[0x1f, 0x8b]) {
                        image::OCI_LAYER_GZIP
                    } else {
                        image::OCI_LAYER_TAR
                    };
                    (b.clone(), b, media)
                })
                .collect(),
            json!({}),
            ("linux", "amd64"),
        );
        let repo = format!("hostile/{}", vector.name);
        let digest = r.push(&repo, "latest", &img);
        if runner == Runner::Unprivileged {
            let nobody = Some(rustix::fs::Uid::from_raw(NOBODY));
            rustix::fs::chown(
                sandbox.dest(),
                nobody,
                Some(rustix::fs::Gid::from_raw(NOBODY)),
            )
            .unwrap();
        }
        let before = sandbox.snapshot();
        let out = run(
            runner,
            &sandbox.dest(),
            &json!({"source": {"repository": r.repo(&repo)}, "version": {"tag": "latest", "digest": digest}}),
        );
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut after = sandbox.snapshot();
            let outputs = [
                "dest/digest",
                "dest/tag",
                "dest/repository",
                "dest/metadata.json",
                "dest/labels.json",
            ];
            match &vector.expect {
                Expect::Refused(text) => {
                    let line = out.error_line();
                    assert!(line.contains(text), "expected {text:?} in {line:?}");
                    assert!(
                        !sandbox.dest().join("rootfs").exists(),
                        "no rootfs on failure"
                    );
                }
                Expect::Rootfs(check) => {
                    assert!(out.success, "step failed: {}", out.stderr);
                    for o in outputs {
                        assert!(after.remove(o).is_some(), "{o} written");
                    }
                    check(&Ctx {
                        rootfs: &sandbox.dest().join("rootfs"),
                        sandbox: &sandbox,
                        runner,
                        stderr: &out.stderr,
                    });
                }
            }
            let changed = changes(&before, &after);
            assert!(
                changed.is_empty(),
                "changed outside the rootfs: {changed:?}"
            );
        }));
        if let Err(panic) = outcome {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{} ({runner:?}): {why}", vector.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_layers_as_root() {
    run_corpus(Runner::Root);
}

/// As unprivileged Concourse workers run resources: root in a user
/// namespace that maps only our own uid, where mknod of devices and chown
/// to unmapped ids fail.
#[test]
fn hostile_layers_as_root_in_a_user_namespace() {
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .status()
        .expect("unshare (util-linux) is installed");
    assert!(
        probe.success(),
        "this machine must allow user namespaces (CI does)"
    );
    run_corpus(Runner::UserNamespace);
}

/// As a plain user (local use, or a worker that does not run resources as
/// root): the same containment, owners and devices left alone.
#[test]
fn hostile_layers_as_an_unprivileged_user() {
    run_corpus(Runner::Unprivileged);
}
