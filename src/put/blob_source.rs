//! The bytes of a blob being pushed, produced on a blocking thread and
//! hashed on the way: a file (or a file inside a tar) as it is, an
//! in-memory config, a layer (re)compressed (an uncompressed one gzipped,
//! see `recompress.rs`), a packed tree, or another repository's blob
//! relayed, each hashed in the same pass that produces it, so its digest
//! is known the moment its last byte is sent.

use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use super::store::FileSlice;
use super::tree_blob::{TreeBlob, gzip_tree};
use crate::image::Digest;
use crate::image::compression::Compression;
use crate::image::digest::{Algorithm, Hasher};
use crate::progress::Progress;
use crate::reference::Repository;
use crate::registry::blob_reader::{self, BlobReader};
use crate::registry::{BlobSource, Piece, RegistryClient};

/// Bytes per message to the uploader.
const PIECE_BYTES: usize = 256 << 10;
/// Messages buffered ahead of the uploader (with the piece size, 1 MiB).
const PIECES_BUFFERED: usize = 4;
/// Bytes a relayed download may be ahead of the upload.
const RELAY_BYTES_AHEAD: usize = 1 << 20;

/// What a blob's bytes are.
#[derive(Clone, Debug)]
pub enum BlobData {
    Slice(FileSlice),
    Memory(Bytes),
    /// A directory packed into a layer and gzipped while it is sent.
    Tree(Arc<TreeBlob>),
    /// A blob of another repository (`params.copy`), relayed as it is
    /// downloaded (verified, resumable), never stored.
    Remote(Arc<RemoteBlob>),
    /// A tar layer recompressed on the way (`params.compression`).
    Recompress(FileSlice, Compression),
}

/// A blob to relay from another repository, maybe of another registry.
pub struct RemoteBlob {
    pub client: Arc<RegistryClient>,
    pub repository: Repository,
    pub digest: Digest,
    pub size: u64,
}

impl std::fmt::Debug for RemoteBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteBlob({}@{})", self.repository, self.digest)
    }
}

impl RemoteBlob {
    /// Starts the download: a verified reader of it.
    fn start(&self) -> BlobReader {
        blob_reader::open(
            self.client.clone(),
            self.repository.clone(),
            self.digest.clone(),
            self.size,
            RELAY_BYTES_AHEAD,
            None,
        )
    }
}

impl BlobData {
    /// Bytes read from the input (the progress bar's total).
    pub fn input_len(&self) -> u64 {
        match self {
            BlobData::Slice(s) | BlobData::Recompress(s, _) => s.len,
            BlobData::Memory(b) => b.len() as u64,
            BlobData::Tree(tree) => tree.stats.file_bytes,
            BlobData::Remote(remote) => remote.size,
        }
    }
}

/// A [`BlobSource`] over local data, with a progress bar made when it is
/// first read (blobs the registry already has get none).
pub struct LocalBlob {
    data: BlobData,
    algorithm: Algorithm,
    label: String,
    progress: Progress,
    bar: OnceLock<Option<ProgressBar>>,
}

impl LocalBlob {
    pub fn new(data: BlobData, algorithm: Algorithm, label: &str, progress: &Progress) -> Self {
        LocalBlob {
            data,
            algorithm,
            label: label.to_owned(),
            progress: progress.clone(),
            bar: OnceLock::new(),
        }
    }

    /// What the blob is, for progress, logs and errors (`layer 2/3`).
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn finish_bar(&self) {
        if let Some(Some(bar)) = self.bar.get() {
            bar.finish();
        }
    }
}

impl BlobSource for LocalBlob {
    fn open(&self) -> mpsc::Receiver<anyhow::Result<Piece>> {
        let (tx, rx) = mpsc::channel(PIECES_BUFFERED);
        let bar = self
            .bar
            .get_or_init(|| self.progress.blob(&self.label, self.data.input_len()))
            .clone();
        if let Some(bar) = &bar {
            bar.set_position(0);
        }
        let data = self.data.clone();
        let algorithm = self.algorithm;
        // A download is an async task; the relay reads it on this thread.
        let download = match &data {
            BlobData::Remote(remote) => Some(remote.start()),
            _ => None,
        };
        tokio::task::spawn_blocking(move || {
            let mut out = PieceWriter::new(tx, algorithm);
            let produced = match download {
                Some(mut reader) => relay(&mut reader, &mut out, bar.as_ref()),
                None => produce(&data, &mut out, bar.as_ref()),
            };
            out.finish(produced);
        });
        rx
    }
}

fn produce(data: &BlobData, out: &mut PieceWriter, bar: Option<&ProgressBar>) -> io::Result<()> {
    match data {
        BlobData::Memory(bytes) => {
            out.write_all(bytes)?;
            if let Some(bar) = bar {
                bar.inc(bytes.len() as u64);
            }
            Ok(())
        }
        BlobData::Slice(slice) => copy(slice, out, bar),
        BlobData::Tree(tree) => pack(tree, out, bar),
        BlobData::Recompress(slice, to) => super::recompress::recompress(slice, *to, out, |n| {
            if let Some(bar) = bar {
                bar.inc(n);
            }
        }),
        BlobData::Remote(_) => Err(io::Error::other(
            "internal error: a remote blob not relayed",
        )),
    }
}

/// Packs and gzips a tree (see `tree_blob::gzip_tree`), recording its
/// `diff_id` for the config.
fn pack(tree: &TreeBlob, out: &mut PieceWriter, bar: Option<&ProgressBar>) -> io::Result<()> {
    let diff_id = gzip_tree(&tree.root, &tree.prefix, tree.mtime, out, |n| {
        if let Some(bar) = bar {
            bar.inc(n);
        }
    })?;
    tree.set_diff_id(diff_id);
    Ok(())
}

/// A download relayed: it ends well only once it was verified (the
/// reader's end of data).
fn relay(
    reader: &mut BlobReader,
    out: &mut PieceWriter,
    bar: Option<&ProgressBar>,
) -> io::Result<()> {
    pass_on(reader, out, bar).map(|_| ())
}

fn copy(slice: &FileSlice, out: &mut impl Write, bar: Option<&ProgressBar>) -> io::Result<()> {
    let total = pass_on(&mut slice.open()?, out, bar)?;
    if total != slice.len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the input ended after {total} of {} bytes", slice.len),
        ));
    }
    Ok(())
}

/// Copies `reader` to its end into `out`, advancing `bar`; the bytes copied.
fn pass_on(
    reader: &mut impl Read,
    out: &mut impl Write,
    bar: Option<&ProgressBar>,
) -> io::Result<u64> {
    let mut buffer = vec![0u8; PIECE_BYTES];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok(total);
        }
        out.write_all(&buffer[..n])?;
        total += n as u64;
        if let Some(bar) = bar {
            bar.inc(n as u64);
        }
    }
}

/// Collects output into pieces, hashing and counting it, and hands them to
/// the uploader; fails (stopping the producer) once the uploader is gone.
struct PieceWriter {
    tx: mpsc::Sender<anyhow::Result<Piece>>,
    hasher: Hasher,
    size: u64,
    buffer: BytesMut,
}

impl PieceWriter {
    fn new(tx: mpsc::Sender<anyhow::Result<Piece>>, algorithm: Algorithm) -> Self {
        PieceWriter {
            tx,
            hasher: Hasher::new(algorithm),
            size: 0,
            buffer: BytesMut::with_capacity(PIECE_BYTES),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let piece = self.buffer.split().freeze();
        self.buffer.reserve(PIECE_BYTES);
        self.tx
            .blocking_send(Ok(Piece::Data(piece)))
            .map_err(|_| io::Error::other("the upload stopped"))
    }

    fn finish(mut self, produced: io::Result<()>) {
        let message = match produced.and_then(|()| self.send()) {
            Ok(()) => Ok(Piece::End {
                digest: self.hasher.finish(),
                size: self.size,
            }),
            Err(e) => Err(anyhow::Error::new(e).context("reading the image")),
        };
        let _ = self.tx.blocking_send(message);
    }
}

impl Write for PieceWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= PIECE_BYTES {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hashes a file slice (a compressed docker-save layer, whose digest must
/// be known before asking the registry whether it has it).
pub fn hash(slice: &FileSlice, algorithm: Algorithm) -> io::Result<crate::image::Digest> {
    let mut hasher = Hasher::new(algorithm);
    io::copy(
        &mut io::BufReader::with_capacity(PIECE_BYTES, slice.open()?),
        &mut hasher,
    )?;
    Ok(hasher.finish())
}
