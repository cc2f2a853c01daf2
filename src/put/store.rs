//! Where a put's input lives: a directory (an OCI layout) or a tar file (a
//! docker-save tarball or an OCI layout tarball). A tar is scanned once,
//! seeking over file data, and its files are then read in place by offset:
//! nothing is extracted, and no file lookup rescans the archive.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::image::entry_path::entry_components;

/// A byte range of a file on disk: a whole file, or one file inside a tar.
#[derive(Clone, Debug)]
pub struct FileSlice {
    pub path: Arc<PathBuf>,
    pub offset: u64,
    pub len: u64,
}

impl FileSlice {
    /// A reader of exactly this slice.
    pub fn open(&self) -> io::Result<io::Take<File>> {
        let mut file = File::open(self.path.as_path())?;
        file.seek(SeekFrom::Start(self.offset))?;
        Ok(file.take(self.len))
    }

    /// The whole slice, refusing more than `limit` bytes (manifests, configs).
    pub fn read_all(&self, limit: u64) -> anyhow::Result<Vec<u8>> {
        if self.len > limit {
            bail!("{} bytes is larger than the {limit} allowed", self.len);
        }
        let mut bytes = Vec::with_capacity(self.len as usize);
        self.open()?.read_to_end(&mut bytes)?;
        if bytes.len() as u64 != self.len {
            bail!("the file ended after {} of {} bytes", bytes.len(), self.len);
        }
        Ok(bytes)
    }

    /// Up to the first `n` bytes (to sniff compression).
    pub fn head(&self, n: usize) -> io::Result<Vec<u8>> {
        let mut head = Vec::with_capacity(n);
        self.open()?.take(n as u64).read_to_end(&mut head)?;
        Ok(head)
    }
}

#[derive(Debug)]
pub enum TarEntry {
    File {
        offset: u64,
        len: u64,
    },
    /// A symbolic or hard link, its target as an archive path.
    Link(String),
}

/// An input image's files, by relative path (`index.json`, `blobs/sha256/…`).
#[derive(Debug)]
pub enum Store {
    Dir(PathBuf),
    Tar {
        path: Arc<PathBuf>,
        entries: HashMap<String, TarEntry>,
    },
}

/// Links followed in a row before giving up (a loop).
const MAX_LINKS: usize = 16;

impl Store {
    /// Indexes a tar file in one pass over its headers.
    pub fn tar(path: &Path) -> anyhow::Result<Store> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut archive = tar::Archive::new(file);
        let mut entries = HashMap::new();
        for entry in archive
            .entries_with_seek()
            .context("reading the tar archive")?
        {
            let entry = entry.context("reading the tar archive")?;
            let raw = entry.path().context("a tar entry has an invalid name")?;
            let Some(name) = normalize(&raw) else {
                continue;
            };
            let kind = entry.header().entry_type();
            let value = if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .context("a tar link has an invalid target")?
                    .unwrap_or_default();
                // A symbolic link is relative to its own directory; a hard
                // link names an archive path.
                let joined = if kind.is_symlink() && !target.is_absolute() {
                    Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(&target)
                } else {
                    target.to_path_buf()
                };
                match normalize(&joined) {
                    Some(target) => TarEntry::Link(target),
                    None => continue,
                }
            } else if kind.is_file() || kind == tar::EntryType::Continuous {
                TarEntry::File {
                    offset: entry.raw_file_position(),
                    len: entry.size(),
                }
            } else {
                continue;
            };
            entries.insert(name, value);
        }
        Ok(Store::Tar {
            path: Arc::new(path.to_path_buf()),
            entries,
        })
    }

    /// The file at `name`, or `None` when there is none.
    pub fn slice(&self, name: &str) -> anyhow::Result<Option<FileSlice>> {
        match self {
            Store::Dir(root) => {
                let path = root.join(name);
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => Ok(Some(FileSlice {
                        path: Arc::new(path),
                        offset: 0,
                        len: meta.len(),
                    })),
                    Ok(_) => bail!("{} is not a regular file", path.display()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
            Store::Tar { path, entries } => {
                let mut current = name.to_owned();
                for _ in 0..MAX_LINKS {
                    match entries.get(&current) {
                        None => return Ok(None),
                        Some(TarEntry::File { offset, len }) => {
                            return Ok(Some(FileSlice {
                                path: path.clone(),
                                offset: *offset,
                                len: *len,
                            }));
                        }
                        Some(TarEntry::Link(target)) => current = target.clone(),
                    }
                }
                bail!("{name}: too many links in a row in the tarball")
            }
        }
    }

    /// A small file read whole (`None` when absent).
    pub fn read_small(&self, name: &str, limit: u64) -> anyhow::Result<Option<Vec<u8>>> {
        self.slice(name)?
            .map(|s| s.read_all(limit).with_context(|| format!("reading {name}")))
            .transpose()
    }

    /// Whether the store has a file at `name`.
    pub fn has(&self, name: &str) -> bool {
        matches!(self.slice(name), Ok(Some(_)))
    }
}

/// An archive path as `a/b/c`: `./` and leading `/` dropped, `..` applied
/// (as `in` reads layer entries); `None` for names that leave the archive,
/// name its root or are not UTF-8.
fn normalize(path: &Path) -> Option<String> {
    let parts = entry_components(path).ok()?;
    let parts = parts
        .iter()
        .map(|part| part.to_str())
        .collect::<Option<Vec<&str>>>()?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths() {
        assert_eq!(
            normalize(Path::new("./manifest.json")).unwrap(),
            "manifest.json"
        );
        assert_eq!(normalize(Path::new("/a/./b")).unwrap(), "a/b");
        assert_eq!(
            normalize(Path::new("a/../b/layer.tar")).unwrap(),
            "b/layer.tar"
        );
        assert!(normalize(Path::new("../x")).is_none());
        assert!(normalize(Path::new("./")).is_none());
    }

    #[test]
    fn tar_files_and_links_are_read_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar");
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        let add = |b: &mut tar::Builder<File>, name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        };
        add(&mut builder, "./a/layer.tar", b"layer bytes");
        add(&mut builder, "manifest.json", b"[]");
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_cksum();
        builder
            .append_link(&mut link, "b/layer.tar", "../a/layer.tar")
            .unwrap();
        builder.finish().unwrap();
        drop(builder);

        let store = Store::tar(&path).unwrap();
        let read = |name: &str| store.read_small(name, 100).unwrap();
        assert_eq!(read("a/layer.tar").unwrap(), b"layer bytes");
        assert_eq!(read("b/layer.tar").unwrap(), b"layer bytes");
        assert_eq!(read("manifest.json").unwrap(), b"[]");
        assert!(read("missing").is_none());
        assert!(store.has("b/layer.tar"));
    }
}
