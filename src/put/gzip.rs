//! Deterministic parallel gzip, for docker-save layers that arrive
//! uncompressed.
//!
//! The input is cut into 1 MiB blocks compressed independently on a few
//! threads (each ends with a full flush, so the raw deflate outputs simply
//! follow each other) and written in order between a fixed gzip header and
//! trailer. Blocks whose bytes are already near-random (compressed files
//! inside the layer) are stored rather than deflated: at level 1 zlib-rs
//! spends ~14 ns a byte on such data and makes it 5 % larger.
//!
//! Why by hand: flate2 compresses on one thread, and gzp (pigz-style) has no
//! stored-block path and needs a `'static` writer per stream. The output
//! depends only on the input (fixed block size, level and rule), never on
//! the thread count, so the same tarball always gives the same digest.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use flate2::{Compress, Compression, Crc, FlushCompress};

const BLOCK_BYTES: usize = 1 << 20;
/// Go's `BestSpeed`, as the original compresses.
const LEVEL: u32 = 1;
/// No name, no mtime, unknown OS: nothing that varies between runs.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
/// An empty final stored block: ends the deflate stream.
const FINAL_BLOCK: [u8; 5] = [1, 0, 0, 0xff, 0xff];
/// Order-0 entropy (bits a byte) above which a block is stored: text and
/// binaries are far below, compressed data is above 7.99.
const STORE_ENTROPY: f64 = 7.95;

/// A block of input and its compressed form. Each stream reuses its own
/// (as many as it has blocks in flight) and each thread its deflate state,
/// so a layer costs a few allocations, not several a megabyte.
#[derive(Default)]
struct Buffers {
    input: Vec<u8>,
    output: Vec<u8>,
}

type Job = (Buffers, SyncSender<io::Result<Buffers>>);
/// A block's compressed bytes to come, and its place in the budget.
type Pending<'a> = (Receiver<io::Result<Buffers>>, Permit<'a>);

/// Gzips all of `input` into `out` on `threads` threads, calling `read`
/// with the count of each block of input consumed.
pub fn compress(
    input: &mut impl Read,
    out: &mut impl Write,
    threads: usize,
    read: impl Fn(u64),
) -> io::Result<()> {
    let threads = threads.max(1);
    out.write_all(&HEADER)?;
    let mut crc = Crc::new();
    std::thread::scope(|scope| -> io::Result<()> {
        let (jobs, queue) = sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads {
            let queue = queue.clone();
            scope.spawn(move || {
                let mut deflate = Compress::new(Compression::new(LEVEL), false);
                loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok((mut buffers, reply)) = job else {
                        return;
                    };
                    let done = compress_block(&mut deflate, &buffers.input, &mut buffers.output);
                    let _ = reply.send(done.map(|()| buffers));
                }
            });
        }
        // This stream's blocks in flight, oldest first, and buffers free.
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut spare: Vec<Buffers> = Vec::new();
        let budget = Budget::global();
        loop {
            // A stream holding permits never waits for one (two streams
            // could then wait for each other): it finishes its own oldest
            // block instead, and waits only with none.
            let permit = loop {
                if let Some(permit) = budget.try_take() {
                    break permit;
                }
                if pending.is_empty() {
                    break budget.take();
                }
                write_next(&mut pending, &mut spare, out)?;
            };
            let mut buffers = spare.pop().unwrap_or_default();
            read_block(input, &mut buffers.input)?;
            if buffers.input.is_empty() {
                break;
            }
            crc.update(&buffers.input);
            read(buffers.input.len() as u64);
            let (reply, result) = sync_channel(1);
            jobs.send((buffers, reply))
                .map_err(|_| io::Error::other("a compression thread stopped"))?;
            pending.push_back((result, permit));
        }
        drop(jobs);
        while !pending.is_empty() {
            write_next(&mut pending, &mut spare, out)?;
        }
        Ok(())
    })?;
    out.write_all(&FINAL_BLOCK)?;
    out.write_all(&crc.sum().to_le_bytes())?;
    out.write_all(&crc.amount().to_le_bytes())?;
    Ok(())
}

/// Writes the oldest block in flight, keeps its buffers for another block
/// and frees its permit.
fn write_next(
    pending: &mut VecDeque<Pending>,
    spare: &mut Vec<Buffers>,
    out: &mut impl Write,
) -> io::Result<()> {
    let Some((next, _permit)) = pending.pop_front() else {
        return Ok(());
    };
    let buffers = next
        .recv()
        .map_err(|_| io::Error::other("a compression thread stopped"))??;
    out.write_all(&buffers.output)?;
    spare.push(buffers);
    Ok(())
}

/// Threads worth compressing on: the cores, up to 4 (the registry and the
/// uploads need CPU too).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}

/// Blocks in flight across every stream of the process: two per core
/// keeps the cores busy while one block per core waits to be written.
struct Budget {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One block's place in the [`Budget`], given back when dropped.
struct Permit<'a>(&'a Budget);

impl Budget {
    fn global() -> &'static Budget {
        static BUDGET: OnceLock<Budget> = OnceLock::new();
        BUDGET.get_or_init(|| Budget {
            free: Mutex::new(2 * cores()),
            freed: Condvar::new(),
        })
    }

    fn try_take(&self) -> Option<Permit<'_>> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        (*free > 0).then(|| {
            *free -= 1;
            Permit(self)
        })
    }

    fn take(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

/// Up to one block into `block`; shorter only at the end of the input.
fn read_block(input: &mut impl Read, block: &mut Vec<u8>) -> io::Result<()> {
    block.clear();
    block.reserve(BLOCK_BYTES);
    input.take(BLOCK_BYTES as u64).read_to_end(block)?;
    Ok(())
}

/// One block as raw deflate ending byte-aligned and non-final, into `out`.
fn compress_block(deflate: &mut Compress, block: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    if entropy(block) > STORE_ENTROPY {
        stored(block, out);
        return Ok(());
    }
    deflate.reset();
    out.reserve(block.len() / 2 + 4096);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(block.len() / 4 + 4096);
        }
        let consumed = deflate.total_in() as usize;
        deflate
            .compress_vec(&block[consumed..], out, FlushCompress::Full)
            .map_err(io::Error::other)?;
        // The flush is complete once it left output space unused.
        if deflate.total_in() as usize == block.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.len() >= block.len() {
        out.clear();
        stored(block, out);
    }
    Ok(())
}

/// Stored (uncompressed) deflate blocks of at most 65,535 bytes.
fn stored(block: &[u8], out: &mut Vec<u8>) {
    out.reserve(block.len() + block.len() / 65535 * 5 + 5);
    for part in block.chunks(65535) {
        let len = part.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(part);
    }
}

/// Bytes sampled for the entropy estimate: one in this many (131,072 of a
/// full block, plenty to tell 7.95 bits from 8 with 256 symbols).
const ENTROPY_STRIDE: usize = 8;

/// Order-0 entropy of `bytes` (sampled), in bits a byte.
fn entropy(bytes: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    let mut total = 0u64;
    for &b in bytes.iter().step_by(ENTROPY_STRIDE) {
        counts[b as usize] += 1;
        total += 1;
    }
    if total < 4096 {
        // Too few samples to call a block incompressible: deflate decides.
        return 0.0;
    }
    let total = total as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(input: &[u8], threads: usize) -> Vec<u8> {
        let mut out = Vec::new();
        compress(&mut &input[..], &mut out, threads, |_| {}).unwrap();
        out
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// `len` incompressible bytes (xorshift) from `seed`.
    fn noise(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect()
    }

    /// The mixed test input (text, random, text) across several blocks.
    fn mixed_input() -> Vec<u8> {
        let mut input = Vec::new();
        for i in 0..60_000 {
            input.extend_from_slice(format!("line {i} of some text\n").as_bytes());
        }
        input.extend_from_slice(&noise(3 * BLOCK_BYTES / 2, 0x1234_5678_9abc_def0));
        input.extend_from_slice(&vec![b'x'; 100_000]);
        input
    }

    #[test]
    fn output_is_pinned_across_releases() {
        // A layer pushed again by a later release must keep its digest, or
        // every put of an unchanged tarball would make a new version.
        let digest = crate::image::Digest::sha256_of(&gzip(&mixed_input(), 2));
        assert_eq!(
            digest.to_string(),
            "sha256:52350b8cdf08823f2cb7498bae5c185d5fab1427ecefc2ea9969c29e09840528"
        );
    }

    #[test]
    fn round_trips_and_is_deterministic_whatever_the_threads() {
        let input = mixed_input();
        let one = gzip(&input, 1);
        assert_eq!(gunzip(&one), input);
        assert_eq!(gzip(&input, 3), one);
        assert!(one.len() < input.len());
        assert_eq!(gunzip(&gzip(b"", 2)), b"");
        assert_eq!(gunzip(&gzip(b"a", 2)), b"a");
    }

    #[test]
    fn streams_at_once_share_the_budget_without_waiting_on_each_other() {
        let input: Vec<u8> = (0..5 * BLOCK_BYTES + 17).map(|i| (i % 251) as u8).collect();
        let alone = gzip(&input, 2);
        let limit = 2 * cores();
        let input = &input;
        std::thread::scope(|scope| {
            let streams: Vec<_> = (0..limit + 3)
                .map(|i| scope.spawn(move || gzip(input, 1 + i % 3)))
                .collect();
            for stream in streams {
                assert!(stream.join().unwrap() == alone);
            }
        });
    }

    #[test]
    fn random_data_is_stored_not_expanded_much() {
        let input = noise(BLOCK_BYTES * 2, 7);
        let out = gzip(&input, 2);
        assert!(
            out.len() < input.len() + input.len() / 1000,
            "{}",
            out.len()
        );
        assert_eq!(gunzip(&out), input);
    }
}
