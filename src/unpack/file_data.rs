//! A regular file's data, written in large writes, or with holes where a
//! GNU sparse entry has none of its data.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Bytes per `write` of file data.
pub const COPY_BUFFER_BYTES: usize = 256 << 10;

/// Copies an entry's data into its file in writes of up to
/// [`COPY_BUFFER_BYTES`]: `io::copy` from a plain reader goes 8 KiB at a
/// time, one `write` each, so a large file took 32 times the syscalls.
pub fn copy_through(data: &mut impl Read, file: &mut File, buffer: &mut [u8]) -> io::Result<()> {
    loop {
        match data.read(buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => io::Write::write_all(file, &buffer[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes a GNU sparse entry with holes where it has none of its data (the
/// parser gives the holes as zeros): its apparent size costs no disk.
pub fn write_sparse(data: &mut impl Read, file: &File) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0u64;
    loop {
        let n = data.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if chunk.iter().any(|b| *b != 0) {
            file.write_all_at(chunk, at)?;
        }
        at += n as u64;
    }
    file.set_len(at)
}
