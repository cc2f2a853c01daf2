//! A package's layer as a blob source: the tree packed, gzipped and hashed
//! on demand (again, identically, when an upload starts over). A leaf of
//! `put/`: the blob sources and the package recipe both use it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::image::Digest;
use crate::image::digest::{Algorithm, HashingWriter};
use crate::image::tree_layer::{self, TreeStats};

/// The layer's source: a tree packed on demand (again, identically, when an
/// upload starts over). Packing records the uncompressed layer's digest.
#[derive(Debug)]
pub struct TreeBlob {
    pub root: PathBuf,
    pub prefix: PathBuf,
    pub mtime: u64,
    pub stats: TreeStats,
    diff_id: Mutex<Option<Digest>>,
}

impl TreeBlob {
    /// `root`'s tree under `prefix`, every mtime `mtime`, not packed yet.
    pub fn new(root: PathBuf, prefix: PathBuf, mtime: u64, stats: TreeStats) -> Self {
        TreeBlob {
            root,
            prefix,
            mtime,
            stats,
            diff_id: Mutex::new(None),
        }
    }

    /// The uncompressed layer's digest, once it has been packed.
    pub fn diff_id(&self) -> Option<Digest> {
        self.diff_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_diff_id(&self, digest: Digest) {
        *self.diff_id.lock().unwrap_or_else(PoisonError::into_inner) = Some(digest);
    }
}

/// Writes the tree under `root` (see [`tree_layer::write_tree`]) to `out`
/// gzipped, in one pass: packed on one thread into a pipe, compressed on
/// others by the deterministic `gzip`, calling `read` with the count of each
/// block of tar consumed. Returns the uncompressed layer's digest (its
/// `diff_id`).
pub fn gzip_tree(
    root: &Path,
    prefix: &Path,
    mtime: u64,
    out: &mut impl Write,
    read: impl Fn(u64),
) -> io::Result<Digest> {
    let (mut reader, writer) = io::pipe()?;
    std::thread::scope(|scope| {
        let packer = scope.spawn(move || -> anyhow::Result<Digest> {
            let mut hashed = HashingWriter::new(
                io::BufWriter::with_capacity(256 << 10, writer),
                Algorithm::Sha256,
            );
            tree_layer::write_tree(root, prefix, mtime, &mut hashed)?;
            let (_, digest, _) = hashed.finish()?;
            Ok(digest)
        });
        let compressed = super::gzip::compress(&mut reader, out, super::gzip::cores(), read);
        // A compressor that stopped early must not leave the packer
        // blocked on a full pipe.
        drop(reader);
        let packed = packer
            .join()
            .map_err(|_| io::Error::other("the packing thread failed"))?;
        // The packer's error is the cause (a file that vanished), the
        // compressor's only its echo (a pipe that ended early).
        let diff_id = packed.map_err(|e| io::Error::other(format!("{e:#}")))?;
        compressed?;
        Ok(diff_id)
    })
}
