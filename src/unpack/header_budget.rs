//! A cap on what the tar parser may read between two entries.
//!
//! The `tar` crate reads a PAX extended header, a GNU long name and a GNU
//! long link whole into memory, to whatever size the header declares: a
//! 1.5 GiB PAX header (a few MB of gzip) would cost 1.5 GiB of memory. It
//! has no limit of its own, so the stream under it gets one: while the
//! parser looks for the next entry (headers, extension bodies, sparse maps),
//! at most [`HEADER_BUDGET`] bytes may be read; an entry's own data is read
//! by us and is not counted. Go's archive/tar caps each of these bodies at
//! 1 MiB too.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// Extension headers of one entry, together (PAX, GNU long name and link).
pub const EXTENSION_LIMIT: u64 = 1 << 20;
/// What the parser may read between entries: the extension headers, the
/// 512-byte headers and padding around them, and GNU sparse maps.
pub const HEADER_BUDGET: u64 = EXTENSION_LIMIT + (64 << 10);

/// A reader that fails once a budget, when one is set, is spent.
pub struct Budgeted<R> {
    inner: R,
    budget: Rc<Cell<Option<u64>>>,
}

/// Sets and clears the budget of a [`Budgeted`] reader.
#[derive(Clone)]
pub struct BudgetSwitch(Rc<Cell<Option<u64>>>);

impl<R: Read> Budgeted<R> {
    pub fn new(inner: R) -> (Self, BudgetSwitch) {
        let budget = Rc::new(Cell::new(None));
        (
            Budgeted {
                inner,
                budget: budget.clone(),
            },
            BudgetSwitch(budget),
        )
    }
}

impl BudgetSwitch {
    /// Runs `parse` (the parser looking for the next entry) under the budget.
    pub fn limit<T>(&self, parse: impl FnOnce() -> T) -> T {
        self.0.set(Some(HEADER_BUDGET));
        let found = parse();
        self.0.set(None);
        found
    }
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.budget.get() else {
            return self.inner.read(buf);
        };
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "a tar entry's extension headers (PAX, GNU long name or long link) are over {} MiB",
                EXTENSION_LIMIT >> 20
            )));
        }
        let len = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        self.budget.set(Some(left - n as u64));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_under_the_limit_are_counted() {
        let data = vec![7u8; (HEADER_BUDGET as usize) * 3];
        let (mut reader, switch) = Budgeted::new(&data[..]);
        let mut sink = Vec::new();
        // Unlimited: everything reads.
        (&mut reader)
            .take(HEADER_BUDGET + 10)
            .read_to_end(&mut sink)
            .unwrap();
        let err = switch.limit(|| reader.read_to_end(&mut sink)).unwrap_err();
        assert!(err.to_string().contains("over 1 MiB"), "{err}");
        assert_eq!(sink.len() as u64, 2 * HEADER_BUDGET + 10);
    }
}
