//! What an upload sends: the request (which blob, from which
//! [`BlobSource`]) and its outcome, what a source's producer sends
//! ([`Piece`]), and the three ways an upload reads it: in chunks, as one
//! streamed body, or only to hash it.

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::image::Digest;

/// One blob to upload.
pub struct UploadRequest<'a> {
    /// Digest and size when known before reading: the blob is skipped if the
    /// repository has it, and what is read must match.
    pub expected: Option<(Digest, u64)>,
    /// Another repository of this registry known to hold the blob.
    pub mount_from: Option<&'a str>,
    /// Where the bytes come from.
    pub source: &'a dyn BlobSource,
}

/// How a blob got to the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// The repository had it.
    Existed,
    /// Mounted from another repository.
    Mounted,
    /// Sent.
    Uploaded,
}

/// How one blob got into the repository.
#[derive(Debug)]
pub struct UploadOutcome {
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size.
    pub size: u64,
    /// How it got there.
    pub transfer: Transfer,
}

/// One message from a blob's producer.
#[derive(Debug)]
pub enum Piece {
    /// The next bytes.
    Data(Bytes),
    /// Everything was produced: the digest and size of what was sent.
    End {
        /// The digest of everything produced.
        digest: Digest,
        /// The number of bytes produced.
        size: u64,
    },
}

/// Where a blob's bytes come from. Every `open` starts again at byte 0 (an
/// upload the registry lost is sent again from the start).
pub trait BlobSource: Send + Sync {
    /// A fresh stream of the blob's bytes, from the first.
    fn open(&self) -> mpsc::Receiver<anyhow::Result<Piece>>;
}

/// Fills `buffer` up to `chunk_bytes` from the stream (starting with what
/// `carry` holds of the previous piece); the blob's digest and size once
/// the stream ended.
pub async fn fill_chunk(
    stream: &mut mpsc::Receiver<anyhow::Result<Piece>>,
    carry: &mut Bytes,
    buffer: &mut BytesMut,
    chunk_bytes: usize,
) -> anyhow::Result<Option<(Digest, u64)>> {
    loop {
        if !carry.is_empty() {
            let take = carry.len().min(chunk_bytes - buffer.len());
            buffer.extend_from_slice(&carry.split_to(take));
        }
        if buffer.len() == chunk_bytes {
            return Ok(None);
        }
        match stream.recv().await {
            Some(Ok(Piece::Data(bytes))) => *carry = bytes,
            Some(Ok(Piece::End { digest, size })) => return Ok(Some((digest, size))),
            Some(Err(e)) => return Err(e),
            None => bail!("the blob source stopped early"),
        }
    }
}

/// Where a streamed body records how its source ended: the digest and size
/// produced, or why it failed.
pub type BodyEnd = Arc<Mutex<Option<anyhow::Result<(Digest, u64)>>>>;

/// A request body streaming a source's pieces. It holds one piece back
/// until it knows what follows, so the source's end is recorded before the
/// last bytes go out: an HTTP client that stops polling once the declared
/// length was sent still leaves the verdict.
pub fn body_stream(
    source: mpsc::Receiver<anyhow::Result<Piece>>,
) -> (
    impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    BodyEnd,
) {
    struct State {
        source: Option<mpsc::Receiver<anyhow::Result<Piece>>>,
        held: Option<Bytes>,
        end: BodyEnd,
    }
    let end: BodyEnd = Arc::default();
    let state = State {
        source: Some(source),
        held: None,
        end: end.clone(),
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            let source = state.source.as_mut()?;
            let verdict = match source.recv().await {
                Some(Ok(Piece::Data(bytes))) => {
                    if bytes.is_empty() {
                        continue;
                    }
                    match state.held.replace(bytes) {
                        Some(previous) => return Some((Ok(previous), state)),
                        None => continue,
                    }
                }
                Some(Ok(Piece::End { digest, size })) => Ok((digest, size)),
                Some(Err(e)) => Err(e),
                None => Err(anyhow!("the blob source stopped early")),
            };
            state.source = None;
            let failed = verdict.is_err();
            if let Ok(mut slot) = state.end.lock() {
                *slot = Some(verdict);
            }
            if failed {
                let error = std::io::Error::other("the blob source failed");
                return Some((Err(error), state));
            }
            return state.held.take().map(|last| (Ok(last), state));
        }
    });
    (stream, end)
}

/// Reads a source to its end, keeping nothing: the digest and size of what
/// it produces.
pub async fn drain(
    mut stream: mpsc::Receiver<anyhow::Result<Piece>>,
) -> anyhow::Result<(Digest, u64)> {
    loop {
        match stream.recv().await {
            Some(Ok(Piece::Data(_))) => {}
            Some(Ok(Piece::End { digest, size })) => return Ok((digest, size)),
            Some(Err(e)) => return Err(e),
            None => bail!("the blob source stopped early"),
        }
    }
}

/// What was produced must be what the request said it would be.
pub fn check_expected(
    request: &UploadRequest<'_>,
    digest: &Digest,
    size: u64,
) -> anyhow::Result<()> {
    match &request.expected {
        Some((want, want_size)) if want != digest || *want_size != size => Err(anyhow!(
            "blob {want} ({want_size} bytes): the local data does not match its digest \
             (read {size} bytes hashing to {digest})"
        )),
        _ => Ok(()),
    }
}
