//! The inflate stage of `in`: a thread of its own decompresses the layers,
//! in order, into a small fixed pool of buffers, while the rootfs writer
//! parses and writes on the calling thread. With gzip, inflating was about
//! half of the single thread's time (measured on the system bench); two
//! stages put the second core to work.
//!
//! Memory is fixed: [`BUFFERS`] buffers of [`BUFFER_BYTES`] circulate
//! between the stages (inflate may run ahead into the next layer by that
//! much, never more). Verification is unchanged: a layer ends for the
//! writer only with its download's verdict, and a digest mismatch is
//! reported as the cause over whatever it broke first.

use std::io::{self, BufReader, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::image::compression;
use crate::registry::blob_reader::BlobReader;

/// Bytes per hand-off buffer.
const BUFFER_BYTES: usize = 256 << 10;
/// Buffers circulating between the stages.
const BUFFERS: usize = 6;

/// What the inflate stage hands over.
enum Handoff {
    /// The next decompressed bytes of the current layer.
    Data(Vec<u8>),
    /// The layer ended: its download's verdict (and any decompression
    /// error, the verdict taking precedence).
    End(anyhow::Result<()>),
}

/// The decompressed layers, one [`LayerStream`] after another, inflated on
/// a thread of the caller's scope.
pub struct InflatedLayers {
    full: Receiver<Handoff>,
    empty: SyncSender<Vec<u8>>,
}

/// Starts inflating `readers` (each with its digest, for errors) on a
/// thread of `scope`.
pub fn start<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    readers: Vec<(String, BlobReader)>,
) -> InflatedLayers {
    let (full_tx, full) = sync_channel(BUFFERS);
    let (empty, empty_rx) = sync_channel(BUFFERS);
    for _ in 0..BUFFERS {
        // Cannot fail: the channel holds exactly BUFFERS.
        let _ = empty.try_send(Vec::with_capacity(BUFFER_BYTES));
    }
    scope.spawn(move || inflate_all(readers, &full_tx, &empty_rx));
    InflatedLayers { full, empty }
}

/// The writer has gone (it failed): the inflate stage stops at once,
/// without reading the rest of the layer.
struct WriterGone;

/// The inflate thread.
fn inflate_all(
    readers: Vec<(String, BlobReader)>,
    full: &SyncSender<Handoff>,
    empty: &Receiver<Vec<u8>>,
) {
    for (digest, mut reader) in readers {
        let Ok(inflated) = inflate_one(&mut reader, full, empty) else {
            return;
        };
        let verdict = super::settle(&digest, &mut reader, inflated);
        let failed = verdict.is_err();
        if full.send(Handoff::End(verdict)).is_err() || failed {
            return;
        }
    }
}

/// Decompresses one layer into the hand-off buffers; what went wrong with
/// the stream, if anything.
fn inflate_one(
    reader: &mut BlobReader,
    full: &SyncSender<Handoff>,
    empty: &Receiver<Vec<u8>>,
) -> Result<anyhow::Result<()>, WriterGone> {
    let mut stream = match compression::decompress(BufReader::with_capacity(256 << 10, reader)) {
        Ok(stream) => stream,
        Err(e) => return Ok(Err(e.into())),
    };
    loop {
        let mut buffer = empty.recv().map_err(|_| WriterGone)?;
        buffer.resize(BUFFER_BYTES, 0);
        let mut filled = 0;
        while filled < BUFFER_BYTES {
            match stream.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Ok(Err(e.into())),
            }
        }
        buffer.truncate(filled);
        let done = filled < BUFFER_BYTES;
        // Even empty (the layer ended on a buffer boundary): the reader
        // hands every buffer back.
        full.send(Handoff::Data(buffer)).map_err(|_| WriterGone)?;
        if done {
            return Ok(Ok(()));
        }
    }
}

impl InflatedLayers {
    /// The next layer's decompressed bytes.
    pub fn next_layer(&mut self) -> LayerStream<'_> {
        LayerStream {
            layers: self,
            current: Vec::new(),
            position: 0,
            verdict: None,
        }
    }
}

/// One layer's decompressed bytes, as a reader; [`LayerStream::finish`]
/// gives its verdict.
pub struct LayerStream<'a> {
    layers: &'a mut InflatedLayers,
    current: Vec<u8>,
    position: usize,
    verdict: Option<anyhow::Result<()>>,
}

impl LayerStream<'_> {
    /// Reads to the layer's end (tar stops before its padding) and
    /// combines the layer's verdict with `used`, what the writer made of
    /// it: the verdict (a digest mismatch, a broken stream) is the cause
    /// when both failed.
    pub fn finish(mut self, used: anyhow::Result<()>) -> anyhow::Result<()> {
        let drained = io::copy(&mut self, &mut io::sink());
        let verdict = match self.verdict.take() {
            Some(verdict) => verdict,
            None => Err(drained
                .err()
                .map_or_else(|| anyhow::anyhow!("the inflate stage stopped"), Into::into)),
        };
        verdict.and(used)
    }
}

impl Read for LayerStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.position < self.current.len() {
                let n = buf.len().min(self.current.len() - self.position);
                buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
                self.position += n;
                return Ok(n);
            }
            if let Some(verdict) = &self.verdict {
                return match verdict {
                    Ok(()) => Ok(0),
                    Err(e) => Err(io::Error::other(format!("{e:#}"))),
                };
            }
            // The used-up buffer goes back to the inflate stage.
            if self.current.capacity() > 0 {
                let _ = self
                    .layers
                    .empty
                    .try_send(std::mem::take(&mut self.current));
            }
            self.position = 0;
            match self.layers.full.recv() {
                Ok(Handoff::Data(data)) => self.current = data,
                Ok(Handoff::End(verdict)) => self.verdict = Some(verdict),
                Err(_) => return Err(io::Error::other("the inflate stage stopped")),
            }
        }
    }
}
