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
use std::sync::{Arc, Mutex};

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

type Job = (Vec<u8>, SyncSender<io::Result<Vec<u8>>>);

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
                loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok((block, reply)) = job else { return };
                    let _ = reply.send(compress_block(&block));
                }
            });
        }
        // Blocks in flight, oldest first: bounded, so memory stays small.
        let mut pending: VecDeque<Receiver<io::Result<Vec<u8>>>> = VecDeque::new();
        loop {
            let block = read_block(input)?;
            if block.is_empty() {
                break;
            }
            crc.update(&block);
            read(block.len() as u64);
            let (reply, result) = sync_channel(1);
            jobs.send((block, reply))
                .map_err(|_| io::Error::other("a compression thread stopped"))?;
            pending.push_back(result);
            while pending.len() > threads {
                write_next(&mut pending, out)?;
            }
        }
        drop(jobs);
        while !pending.is_empty() {
            write_next(&mut pending, out)?;
        }
        Ok(())
    })?;
    out.write_all(&FINAL_BLOCK)?;
    out.write_all(&crc.sum().to_le_bytes())?;
    out.write_all(&crc.amount().to_le_bytes())?;
    Ok(())
}

fn write_next(
    pending: &mut VecDeque<Receiver<io::Result<Vec<u8>>>>,
    out: &mut impl Write,
) -> io::Result<()> {
    let Some(next) = pending.pop_front() else {
        return Ok(());
    };
    let bytes = next
        .recv()
        .map_err(|_| io::Error::other("a compression thread stopped"))??;
    out.write_all(&bytes)
}

/// Up to one block; shorter only at the end of the input.
fn read_block(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut block = Vec::with_capacity(BLOCK_BYTES);
    input.take(BLOCK_BYTES as u64).read_to_end(&mut block)?;
    Ok(block)
}

/// One block as raw deflate ending byte-aligned and non-final.
fn compress_block(block: &[u8]) -> io::Result<Vec<u8>> {
    if entropy(block) > STORE_ENTROPY {
        return Ok(stored(block));
    }
    let mut deflate = Compress::new(Compression::new(LEVEL), false);
    let mut out = Vec::with_capacity(block.len() / 2 + 4096);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(block.len() / 4 + 4096);
        }
        let consumed = deflate.total_in() as usize;
        deflate
            .compress_vec(&block[consumed..], &mut out, FlushCompress::Full)
            .map_err(io::Error::other)?;
        // The flush is complete once it left output space unused.
        if deflate.total_in() as usize == block.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.len() >= block.len() {
        return Ok(stored(block));
    }
    Ok(out)
}

/// Stored (uncompressed) deflate blocks of at most 65,535 bytes.
fn stored(block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() + block.len() / 65535 * 5 + 5);
    for part in block.chunks(65535) {
        let len = part.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(part);
    }
    out
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

    #[test]
    fn round_trips_and_is_deterministic_whatever_the_threads() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut input = Vec::new();
        // Text, then random bytes (stored), then text again, across blocks.
        for i in 0..60_000 {
            input.extend_from_slice(format!("line {i} of some text\n").as_bytes());
        }
        for _ in 0..(3 * BLOCK_BYTES / 2) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            input.push((state >> 32) as u8);
        }
        input.extend_from_slice(&vec![b'x'; 100_000]);
        let one = gzip(&input, 1);
        assert_eq!(gunzip(&one), input);
        assert_eq!(gzip(&input, 3), one);
        assert!(one.len() < input.len());
        assert_eq!(gunzip(&gzip(b"", 2)), b"");
        assert_eq!(gunzip(&gzip(b"a", 2)), b"a");
    }

    #[test]
    fn random_data_is_stored_not_expanded_much() {
        let mut state = 7u64;
        let input: Vec<u8> = (0..BLOCK_BYTES * 2)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let out = gzip(&input, 2);
        assert!(
            out.len() < input.len() + input.len() / 1000,
            "{}",
            out.len()
        );
        assert_eq!(gunzip(&out), input);
    }
}
