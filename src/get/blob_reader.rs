//! A blocking reader over a blob download's channel, for the extraction
//! thread. It reports end of data only once the download has been verified,
//! so no layer can be taken as complete before its digest matched.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc::Receiver;

use crate::registry::blob::BlobChunk;

pub struct BlobReader {
    rx: Receiver<BlobChunk>,
    current: Bytes,
    verified: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl BlobReader {
    /// A reader that advances `bar`, if any, as the blob is consumed.
    pub fn new(rx: Receiver<BlobChunk>, bar: Option<indicatif::ProgressBar>) -> Self {
        BlobReader {
            rx,
            current: Bytes::new(),
            verified: false,
            bar,
        }
    }

    /// Reads (and discards) the rest of the blob, to its verification:
    /// decompressors and tar stop before the end of their input.
    pub fn finish(&mut self) -> io::Result<()> {
        let result = io::copy(self, &mut io::sink()).map(|_| ());
        if let Some(bar) = &self.bar {
            match &result {
                Ok(()) => bar.finish(),
                Err(_) => bar.abandon(),
            }
        }
        result
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.current.is_empty() {
                let n = buf.len().min(self.current.len());
                buf[..n].copy_from_slice(&self.current[..n]);
                self.current.advance(n);
                if let Some(bar) = &self.bar {
                    bar.inc(n as u64);
                }
                return Ok(n);
            }
            if self.verified {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(BlobChunk::Data(b)) => self.current = b,
                Some(BlobChunk::Verified) => self.verified = true,
                Some(BlobChunk::Failed(message)) => return Err(io::Error::other(message)),
                None => {
                    return Err(io::Error::other(
                        "the download ended without being verified",
                    ));
                }
            }
        }
    }
}
