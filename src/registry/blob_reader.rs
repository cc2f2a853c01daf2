//! The one verified blob reader: a blocking reader over a blob download's
//! channel, for whatever thread consumes the blob (`in`'s extraction, the
//! relay of a copy to another registry, the command line's `blob`). It
//! reports end of data only once the download has been verified, so no
//! blob can be taken as complete before its digest matched.
//!
//! What a download may buffer ahead of its reader is bounded in bytes, not
//! chunks: hyper hands out chunks of whatever its read buffer held (up to
//! about 400 KiB on a fast link), so a chunk count bounded nothing (a
//! 64-chunk channel per layer held up to 25 MiB; measured on the system
//! bench, peak RSS grew with the layers' size).

use std::io::{self, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::sync::mpsc::{self, Receiver};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::RegistryClient;
use super::blob::BlobChunk;
use crate::image::Digest;
use crate::reference::Repository;

/// A chunk and the share of its download's byte budget it holds until the
/// reader has used it up.
#[derive(Debug)]
pub struct Buffered {
    chunk: BlobChunk,
    budget: Option<OwnedSemaphorePermit>,
}

/// A channel for one download whose unread data never exceeds `budget`
/// bytes: the download sends into the returned sender, a relay task takes
/// each chunk's share of the budget before passing it on (one chunk larger
/// than the budget takes all of it), and the reader gives it back as it
/// reads. Must be called inside a tokio runtime.
pub fn budgeted_channel(budget: usize) -> (mpsc::Sender<BlobChunk>, Receiver<Buffered>) {
    let (download_tx, mut download_rx) = mpsc::channel::<BlobChunk>(2);
    // Slots only need to outnumber the chunks the budget admits (hyper's
    // chunks are at least a few KiB); the bytes are what is bounded.
    let (tx, rx) = mpsc::channel::<Buffered>(1024);
    let permits = Arc::new(Semaphore::new(budget));
    tokio::spawn(async move {
        while let Some(chunk) = download_rx.recv().await {
            let share = match &chunk {
                BlobChunk::Data(bytes) => {
                    let wanted = bytes.len().clamp(1, budget) as u32;
                    match permits.clone().acquire_many_owned(wanted).await {
                        Ok(permit) => Some(permit),
                        Err(_) => break,
                    }
                }
                _ => None,
            };
            let message = Buffered {
                chunk,
                budget: share,
            };
            if tx.send(message).await.is_err() {
                // The reader is gone: dropping `download_rx` stops the download.
                break;
            }
        }
    });
    (download_tx, rx)
}

/// Starts downloading `digest` (`size` bytes: verified, resumed) on a task
/// of its own; its bytes are read from the returned reader, at most
/// `budget` bytes ahead of it. `bar`, if any, advances as it is read. Must
/// be called inside a tokio runtime.
pub fn open(
    client: Arc<RegistryClient>,
    repository: Repository,
    digest: Digest,
    size: u64,
    budget: usize,
    bar: Option<indicatif::ProgressBar>,
) -> BlobReader {
    let (tx, rx) = budgeted_channel(budget);
    tokio::spawn(async move {
        // The outcome also arrives down the channel.
        let _ = client.download_blob(&repository, &digest, size, tx).await;
    });
    BlobReader::new(rx, bar)
}

/// A blob's bytes as they are downloaded: end of data only once verified.
pub struct BlobReader {
    rx: Receiver<Buffered>,
    current: Bytes,
    /// The budget share of `current`, given back when the next chunk is taken.
    current_budget: Option<OwnedSemaphorePermit>,
    verified: bool,
    /// The download's failure, kept: whoever reads next (a decompressor
    /// that turned the first report into its own error, then `finish`)
    /// hears the cause again, not "ended without being verified".
    failed: Option<String>,
    bar: Option<indicatif::ProgressBar>,
}

impl BlobReader {
    /// A reader that advances `bar`, if any, as the blob is consumed.
    pub fn new(rx: Receiver<Buffered>, bar: Option<indicatif::ProgressBar>) -> Self {
        BlobReader {
            rx,
            current: Bytes::new(),
            current_budget: None,
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
            // The used-up chunk's share goes back before waiting for the next.
            self.current_budget = None;
            match self.rx.blocking_recv().map(|b| (b.chunk, b.budget)) {
                Some((BlobChunk::Data(b), budget)) => {
                    self.current = b;
                    self.current_budget = budget;
                }
                Some((BlobChunk::Verified, _)) => self.verified = true,
                Some((BlobChunk::Failed(message), _)) => self.failed = Some(message),
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

    fn message(chunk: BlobChunk) -> Buffered {
        Buffered {
            chunk,
            budget: None,
        }
    }

    #[test]
    fn a_failure_is_told_to_every_later_read() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(message(BlobChunk::Data(Bytes::from_static(b"ab"))))
            .unwrap();
        tx.try_send(message(BlobChunk::Failed("GET blob: 503".into())))
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

    #[test]
    fn unread_data_never_exceeds_the_budget() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = runtime.block_on(async { budgeted_channel(1000) });
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent.clone();
        runtime.spawn(async move {
            for _ in 0..100 {
                tx.send(BlobChunk::Data(Bytes::from(vec![7u8; 300])))
                    .await
                    .unwrap();
                counter.fetch_add(300, std::sync::atomic::Ordering::SeqCst);
            }
            tx.send(BlobChunk::Verified).await.unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        // Three chunks fit the budget; two more wait in the relay and the
        // download's own channel, one in the relay's hands: nothing beyond.
        let ahead = sent.load(std::sync::atomic::Ordering::SeqCst);
        assert!(ahead <= 6 * 300, "{ahead} bytes sent before any read");
        let mut reader = BlobReader::new(rx, None);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 30_000);
        assert!(reader.finish().is_ok());
    }
}
