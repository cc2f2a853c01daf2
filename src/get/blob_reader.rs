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
    /// The download's failure, kept: whoever reads next (a decompressor
    /// that turned the first report into its own error, then `finish`)
    /// hears the cause again, not "ended without being verified".
    failed: Option<String>,
    bar: Option<indicatif::ProgressBar>,
}

impl BlobReader {
    /// A reader that advances `bar`, if any, as the blob is consumed.
    pub fn new(rx: Receiver<BlobChunk>, bar: Option<indicatif::ProgressBar>) -> Self {
        BlobReader {
            rx,
            current: Bytes::new(),
            verified: false,
            failed: None,
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
            if let Some(message) = &self.failed {
                return Err(io::Error::other(message.clone()));
            }
            match self.rx.blocking_recv() {
                Some(BlobChunk::Data(b)) => self.current = b,
                Some(BlobChunk::Verified) => self.verified = true,
                Some(BlobChunk::Failed(message)) => self.failed = Some(message),
                None => {
                    return Err(io::Error::other(
                        "the download ended without being verified",
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_told_to_every_later_read() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(BlobChunk::Data(Bytes::from_static(b"ab")))
            .unwrap();
        tx.try_send(BlobChunk::Failed("GET blob: 503".into()))
            .unwrap();
        drop(tx);
        let mut reader = BlobReader::new(rx, None);
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).unwrap(), 2);
        // A decompressor may swallow the first report; `finish` must still
        // hear the cause, not "ended without being verified".
        assert_eq!(
            reader.read(&mut buf).unwrap_err().to_string(),
            "GET blob: 503"
        );
        assert_eq!(reader.finish().unwrap_err().to_string(), "GET blob: 503");
    }
}
