//! Tag lists a put reads from files (`params.additional_tags`,
//! `params.delete.tags_file`) and assembles from several parts: read as a
//! stream of whitespace-separated words, each checked against the tag
//! grammar as it comes, duplicates dropped through a set (linear time), and
//! the list refused at its first tag past the cap, before the rest of the
//! file is read. A file of a million lines costs what its first thousand
//! tags cost.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};

use anyhow::{anyhow, bail};

use crate::reference::{MAX_TAG_BYTES, validate_tag};

/// Tags one put may push or delete.
pub const MAX_TAGS: usize = 1000;

/// Distinct, valid tags in the order first seen, at most [`MAX_TAGS`].
#[derive(Debug)]
pub struct TagList {
    field: &'static str,
    tags: Vec<String>,
    seen: HashSet<String>,
}

impl TagList {
    /// An empty list; `field` names the parameter in messages.
    pub fn new(field: &'static str) -> Self {
        TagList {
            field,
            tags: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// Adds `tag` unless it is already there; an invalid tag, or a new one
    /// past the cap, is an error.
    pub fn push(&mut self, tag: String) -> anyhow::Result<()> {
        if self.seen.contains(&tag) {
            return Ok(());
        }
        validate_tag(&tag).map_err(|e| anyhow!("{}: {e}", self.field))?;
        if self.tags.len() == MAX_TAGS {
            bail!("{} names more than {MAX_TAGS} tags", self.field);
        }
        self.seen.insert(tag.clone());
        self.tags.push(tag);
        Ok(())
    }

    /// Adds the whitespace-separated words of `reader`, each behind
    /// `prefix`, stopping at the first error.
    pub fn read(&mut self, reader: impl Read, prefix: &str) -> anyhow::Result<()> {
        let mut reader = BufReader::with_capacity(64 << 10, reader);
        let mut word: Vec<u8> = Vec::new();
        loop {
            let buffer = reader
                .fill_buf()
                .map_err(|e| anyhow!("{}: reading the file: {e}", self.field))?;
            if buffer.is_empty() {
                break;
            }
            let length = buffer.len();
            for &byte in buffer {
                if byte.is_ascii_whitespace() {
                    self.end_word(&mut word, prefix)?;
                } else if word.len() > MAX_TAG_BYTES {
                    // Too long to be a tag already: keep no more of it.
                    continue;
                } else {
                    word.push(byte);
                }
            }
            reader.consume(length);
        }
        self.end_word(&mut word, prefix)
    }

    fn end_word(&mut self, word: &mut Vec<u8>, prefix: &str) -> anyhow::Result<()> {
        if word.is_empty() {
            return Ok(());
        }
        if word.len() > MAX_TAG_BYTES {
            bail!(
                "{}: a word of more than {MAX_TAG_BYTES} characters is not a tag",
                self.field
            );
        }
        let text = String::from_utf8_lossy(word);
        let tag = format!("{prefix}{text}");
        word.clear();
        self.push(tag)
    }

    /// The tags, in the order first seen.
    pub fn into_vec(self) -> Vec<String> {
        self.tags
    }

    /// Whether no tag was added.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_read_validated_and_kept_once_in_order() {
        let mut list = TagList::new("params.additional_tags");
        list.read("b a\n\n b\tc  a\n".as_bytes(), "p-").unwrap();
        assert_eq!(list.into_vec(), ["p-b", "p-a", "p-c"]);
        let mut list = TagList::new("params.additional_tags");
        let e = list.read("ok bad/tag".as_bytes(), "").unwrap_err();
        assert!(e.to_string().contains("invalid tag \"bad/tag\""), "{e}");
        let mut list = TagList::new("params.additional_tags");
        let long = "x".repeat(10_000);
        let e = list.read(long.as_bytes(), "").unwrap_err();
        assert!(e.to_string().contains("more than 128"), "{e}");
    }

    #[test]
    fn the_cap_counts_distinct_tags_and_stops_reading() {
        let mut list = TagList::new("params.delete.tags_file");
        let repeated = "same\n".repeat(5000);
        list.read(repeated.as_bytes(), "").unwrap();
        assert_eq!(list.into_vec(), ["same"]);
        // A reader that never ends: the cap stops it.
        let endless = std::io::repeat(b'\n').take(1).chain(Counter(0));
        let mut list = TagList::new("params.delete.tags_file");
        let e = list.read(endless, "").unwrap_err();
        assert!(e.to_string().contains("more than 1000 tags"), "{e}");
    }

    /// Distinct tags (`t0 t1 t2 …`) forever.
    struct Counter(u64);

    impl Read for Counter {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let word = format!("t{} ", self.0);
            self.0 += 1;
            let n = word.len().min(buf.len());
            buf[..n].copy_from_slice(&word.as_bytes()[..n]);
            Ok(n)
        }
    }
}
