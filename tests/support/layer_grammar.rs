//! Random layers from a grammar of hostile entries, decoded from plain
//! bytes so that proptest (bounded runs in `cargo test`) and cargo-fuzz
//! (long, coverage-guided runs) drive the same generator; and the oracle
//! both check: whatever the layers, nothing outside the rootfs changes, the
//! two path resolvers agree, and the writer never panics.

use std::path::Path;

use registry_image::unpack::rootfs::{Resolver, RootfsWriter};

use super::raw_tar::{BLOCK, CHAR, DIRECTORY, FIFO, HARDLINK, REGULAR, RawEntry, SYMLINK, layer};
use super::sandbox::{Sandbox, changes, tree};

/// Name components a hostile layer uses: names that clash with each other,
/// whiteouts, non-UTF-8 bytes...
const HOSTILE_NAMES: &[&[u8]] = &[
    b"a",
    b"b",
    b"c",
    b"a",
    b"b",
    b".wh..wh..opq",
    b".wh.a",
    b".wh.b",
    b"caf\xe9",
    b".wh.caf\xe9",
    b".wh..wh.plnk",
];

/// ... and, one component in 48, names that climb or that a whiteout
/// cannot name (most of these make the writer refuse the layer).
const ODD_NAMES: &[&[u8]] = &[b"..", b".", b"", b".wh.", b".wh..", b".wh..."];

/// Names an honest layer uses (whiteouts included).
const HONEST_NAMES: &[&[u8]] = &[b"a", b"b", b"c", b".wh.a", b".wh.b", b".wh..wh..opq"];

/// Link targets: climbs, absolute paths of the sandbox (as a layer that
/// knows where it is unpacked would name them), loops.
const HOSTILE_TARGETS: &[&str] = &[
    "/",
    "..",
    "../..",
    "../../../../..",
    "a",
    "a/b",
    "/a",
    "b/../..",
    "{S}/canary",
    "{S}",
    "{S}/canary-file",
    "{S}/canary-link",
    "{S}/hard-a",
    "a",
    "loop",
    ".",
];

const HONEST_TARGETS: &[&str] = &["a", "b", "c", "a/b", "/a", "/c/b"];

const MODES: &[u32] = &[0o644, 0o755, 0o4755, 0o600, 0o000, 0o1777];

/// Reads choices off the input; past its end every choice is 0.
struct Choices<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }
    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len())]
    }
}

/// Whether the layers may be hostile, or must be what an honest tool
/// writes (for the umoci comparison).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Grammar {
    Hostile,
    Honest,
}

/// Up to 4 layers of up to 12 entries each, decoded from `bytes`; `{S}` in
/// link targets is the sandbox's absolute path.
pub fn layers_from_bytes(bytes: &[u8], sandbox: &str, grammar: Grammar) -> Vec<Vec<RawEntry>> {
    let mut c = Choices { bytes, at: 0 };
    let (names, targets) = match grammar {
        Grammar::Hostile => (HOSTILE_NAMES, HOSTILE_TARGETS),
        Grammar::Honest => (HONEST_NAMES, HONEST_TARGETS),
    };
    let layers = 1 + c.below(4);
    (0..layers)
        .map(|_| {
            let entries = c.below(13);
            (0..entries)
                .map(|_| {
                    let depth = 1 + c.below(3);
                    let mut name: Vec<u8> = Vec::new();
                    if grammar == Grammar::Hostile {
                        name.extend_from_slice([&b""[..], b"/", b"./"][c.below(3)]);
                    }
                    for i in 0..depth {
                        if i > 0 {
                            name.push(b'/');
                        }
                        // Whiteouts only as the last component.
                        let part = if grammar == Grammar::Hostile && c.below(48) == 0 {
                            c.pick(ODD_NAMES)
                        } else {
                            c.pick(names)
                        };
                        let part = if i + 1 < depth && part.starts_with(b".wh.") {
                            &b"a"[..]
                        } else {
                            part
                        };
                        name.extend_from_slice(part);
                    }
                    let target = c.pick(targets).replace("{S}", sandbox);
                    let mode = *c.pick(MODES);
                    let kinds: &[u8] = match grammar {
                        Grammar::Hostile => &[
                            REGULAR, DIRECTORY, DIRECTORY, DIRECTORY, SYMLINK, SYMLINK, HARDLINK,
                            FIFO, CHAR, BLOCK, b'x',
                        ],
                        Grammar::Honest => {
                            &[REGULAR, REGULAR, DIRECTORY, DIRECTORY, SYMLINK, HARDLINK]
                        }
                    };
                    let mut e = match *c.pick(kinds) {
                        REGULAR => {
                            let fill = c.byte();
                            RawEntry::file(&name, vec![fill; c.below(700)])
                        }
                        DIRECTORY => {
                            name.push(b'/');
                            RawEntry::dir(&name)
                        }
                        SYMLINK => RawEntry::symlink(&name, target.as_bytes()),
                        HARDLINK => {
                            let to = c.pick(&["a", "b", "c", "a/a", "b/c", "/c/b", "caf\u{e9}"]);
                            RawEntry::hardlink(&name, to)
                        }
                        CHAR => RawEntry::device(&name, CHAR, 1, 3),
                        BLOCK => RawEntry::device(&name, BLOCK, 8, 0),
                        FIFO => RawEntry::device(&name, FIFO, 0, 0),
                        // A file carrying extended attributes.
                        _ => RawEntry::file(&name, "x")
                            .xattr("user.a", "1")
                            .xattr("trusted.b", "2")
                            .xattr("security.selinux", "3"),
                    };
                    if e.kind != SYMLINK {
                        e.mode = mode;
                    }
                    e.mtime = u64::from(c.byte()) * 1000;
                    if grammar == Grammar::Hostile && c.below(8) == 0 {
                        e.uid = 1000 + u64::from(c.byte());
                        e.gid = e.uid;
                    }
                    e
                })
                .collect()
        })
        .collect()
}

/// Applies `layers` to a fresh rootfs with `resolver`; `Err` if the writer
/// refused them.
pub fn apply(root: &Path, layers: &[Vec<u8>], resolver: Resolver) -> Result<(), String> {
    let mut writer = RootfsWriter::with_resolver(root, resolver).map_err(|e| format!("{e:#}"))?;
    for l in layers {
        writer
            .apply_layer(l.as_slice())
            .map_err(|e| format!("{e:#}"))?;
    }
    writer.finish().map(drop).map_err(|e| format!("{e:#}"))
}

/// The fuzzing oracle: applies the layers `bytes` decode to, once with
/// each resolver, and panics if anything outside the two rootfs changed,
/// if either root stopped being a directory, or if the resolvers disagree.
/// Returns whether the layers were applied (rather than refused).
pub fn check_containment(bytes: &[u8]) -> bool {
    let sandbox = Sandbox::new();
    let entries = layers_from_bytes(bytes, &sandbox.abs(""), Grammar::Hostile);
    let layers: Vec<Vec<u8>> = entries.iter().map(|l| layer(l)).collect();
    let before = sandbox.snapshot();
    let kernel = sandbox.dest().join("root-kernel");
    let walk = sandbox.dest().join("root-walk");
    let by_kernel = apply(&kernel, &layers, Resolver::Kernel);
    let by_walk = apply(&walk, &layers, Resolver::Walk);
    let changed = changes(&before, &sandbox.snapshot());
    assert!(
        changed.is_empty(),
        "changed outside the rootfs: {changed:?}\nlayers: {entries:?}"
    );
    for root in [&kernel, &walk] {
        assert!(
            std::fs::symlink_metadata(root).unwrap().is_dir(),
            "the root is still a directory"
        );
    }
    assert_eq!(
        by_kernel.is_ok(),
        by_walk.is_ok(),
        "resolvers disagree: kernel {by_kernel:?}, walk {by_walk:?}\nlayers: {entries:?}"
    );
    if by_kernel.is_ok() {
        assert_eq!(
            tree(&kernel),
            tree(&walk),
            "resolvers disagree\nlayers: {entries:?}"
        );
    }
    by_kernel.is_ok()
}
