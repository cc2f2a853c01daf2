//! How a client cuts blobs into upload chunks: the bytes per `PATCH`, the
//! smallest chunk its registry takes, and whether the registry takes chunks
//! at all (learnt during the run). Set once from the client's options.

use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes per `PATCH`. Each upload holds two chunks (one being sent until it
/// is acknowledged, the next filling), so this times twice the upload
/// concurrency bounds memory (4 MiB keeps a put of the benchmark image
/// under 64 MiB RSS; 8 MiB and 16 MiB measured no faster).
pub const DEFAULT_CHUNK_BYTES: usize = 4 << 20;
/// A registry asking for larger chunks (`OCI-Chunk-Min-Length`) than this
/// gets the whole blob in one monolithic `PUT` instead: chunks are held in
/// memory until acknowledged.
pub const MAX_CHUNK_BYTES: usize = 64 << 20;
/// AWS ECR's smallest upload part, except the last: 5 MiB (tart#273, the
/// ECR quotas page). Its registries get at least this much per `PATCH`.
pub const ECR_MIN_CHUNK_BYTES: usize = 5 << 20;
/// How to cut uploads, as the client's options say.
#[derive(Clone, Copy, Debug)]
pub struct Chunking {
    /// Bytes per `PATCH` (a registry's `OCI-Chunk-Min-Length` wins).
    pub bytes: usize,
    /// The smallest chunk the registry's kind is known to take (ECR's
    /// [`ECR_MIN_CHUNK_BYTES`]), 0 when none is known.
    pub min_bytes: usize,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            bytes: DEFAULT_CHUNK_BYTES,
            min_bytes: 0,
        }
    }
}

/// How this client uploads; shared by its concurrent uploads.
#[derive(Debug)]
pub struct UploadSettings {
    chunking: Chunking,
    /// Cleared once the registry has shown it does not take chunks.
    chunked: AtomicBool,
}

impl UploadSettings {
    /// Settings from the client's options (a chunk size is at least 1 byte
    /// and at most [`MAX_CHUNK_BYTES`]).
    pub fn new(chunking: Chunking) -> Self {
        UploadSettings {
            chunking: Chunking {
                bytes: chunking.bytes.clamp(1, MAX_CHUNK_BYTES),
                ..chunking
            },
            chunked: AtomicBool::new(true),
        }
    }

    /// Bytes per chunk for a session whose registry asked for `session_min`.
    pub fn chunk_for(&self, session_min: usize) -> usize {
        self.chunking
            .bytes
            .max(self.chunking.min_bytes)
            .max(session_min)
    }

    /// Whether chunks may still be tried.
    pub fn chunked(&self) -> bool {
        self.chunked.load(Ordering::Relaxed)
    }

    /// The registry refused a chunk: whole blobs from now on.
    pub fn refuse_chunks(&self) {
        self.chunked.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_minimum_wins_over_smaller_chunks() {
        let ecr = UploadSettings::new(Chunking {
            bytes: 64 << 10,
            min_bytes: ECR_MIN_CHUNK_BYTES,
        });
        assert_eq!(ecr.chunk_for(0), ECR_MIN_CHUNK_BYTES);
        assert_eq!(ecr.chunk_for(8 << 20), 8 << 20);
        let plain = UploadSettings::new(Chunking::default());
        assert_eq!(plain.chunk_for(0), DEFAULT_CHUNK_BYTES);
        assert_eq!(
            UploadSettings::new(Chunking {
                bytes: 0,
                min_bytes: 0
            })
            .chunk_for(0),
            1
        );
    }
}
