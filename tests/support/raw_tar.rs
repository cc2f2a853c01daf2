//! Tar streams written header by header, for layers no honest tool would
//! write: names of any bytes and length (GNU long names), PAX records of any
//! size, GNU sparse maps, unknown entry types. Used by the hostile-layer
//! corpus and the layer fuzzer.

/// One tar member.
#[derive(Clone, Debug)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub kind: u8,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub device: (u32, u32),
    /// PAX records (key, value) written in an `x` header before the entry.
    pub pax: Vec<(String, Vec<u8>)>,
    /// GNU sparse map: (offset, length) of each data region; `data` holds
    /// the regions back to back and `sparse_size` is the apparent size.
    pub sparse: Vec<(u64, u64)>,
    pub sparse_size: u64,
}

pub const REGULAR: u8 = b'0';
pub const HARDLINK: u8 = b'1';
pub const SYMLINK: u8 = b'2';
pub const CHAR: u8 = b'3';
pub const BLOCK: u8 = b'4';
pub const DIRECTORY: u8 = b'5';
pub const FIFO: u8 = b'6';
pub const GNU_SPARSE: u8 = b'S';

impl RawEntry {
    pub fn new(name: impl AsRef<[u8]>, kind: u8) -> Self {
        RawEntry {
            name: name.as_ref().to_vec(),
            kind,
            link: Vec::new(),
            data: Vec::new(),
            mode: if kind == DIRECTORY { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            device: (0, 0),
            pax: Vec::new(),
            sparse: Vec::new(),
            sparse_size: 0,
        }
    }
    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Self {
        let mut e = Self::new(name, REGULAR);
        e.data = data.as_ref().to_vec();
        e
    }
    pub fn dir(name: impl AsRef<[u8]>) -> Self {
        Self::new(name, DIRECTORY)
    }
    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        let mut e = Self::new(name, SYMLINK);
        e.link = target.as_ref().to_vec();
        e.mode = 0o777;
        e
    }
    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        let mut e = Self::new(name, HARDLINK);
        e.link = target.as_ref().to_vec();
        e
    }
    pub fn device(name: impl AsRef<[u8]>, kind: u8, major: u32, minor: u32) -> Self {
        let mut e = Self::new(name, kind);
        e.device = (major, minor);
        e.mode = 0o666;
        e
    }
    /// A GNU sparse file of `size` bytes holding `regions` (offset, data).
    pub fn sparse(name: impl AsRef<[u8]>, size: u64, regions: &[(u64, &[u8])]) -> Self {
        let mut e = Self::new(name, GNU_SPARSE);
        for (offset, bytes) in regions {
            e.sparse.push((*offset, bytes.len() as u64));
            e.data.extend_from_slice(bytes);
        }
        e.sparse_size = size;
        e
    }
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }
    pub fn pax(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.pax.push((key.into(), value.as_ref().to_vec()));
        self
    }
    pub fn xattr(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.pax(&format!("SCHILY.xattr.{name}"), value)
    }
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert!(
        text.len() <= digits,
        "{value} does not fit {digits} octal digits"
    );
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// A 512-byte GNU header.
fn header(name: &[u8], kind: u8, size: u64, e: &RawEntry) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(e.mode));
    octal(&mut h[108..116], e.uid);
    octal(&mut h[116..124], e.gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], e.mtime);
    h[156] = kind;
    let l = e.link.len().min(100);
    h[157..157 + l].copy_from_slice(&e.link[..l]);
    h[257..265].copy_from_slice(b"ustar  \0");
    octal(&mut h[329..337], u64::from(e.device.0));
    octal(&mut h[337..345], u64::from(e.device.1));
    if kind == GNU_SPARSE {
        assert!(e.sparse.len() <= 4, "test sparse maps fit the header");
        for (i, (offset, len)) in e.sparse.iter().enumerate() {
            let at = 386 + i * 24;
            octal(&mut h[at..at + 12], *offset);
            octal(&mut h[at + 12..at + 24], *len);
        }
        octal(&mut h[483..495], e.sparse_size);
    }
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// One PAX record: its length counts its own digits.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = [b" ", key.as_bytes(), b"=", value, b"\n"].concat();
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    [len.to_string().into_bytes(), body].concat()
}

/// Appends an extension member (`L`, `K` or `x`) with `body`.
pub fn extension(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let name: &[u8] = if kind == b'x' {
        b"PaxHeaders/entry"
    } else {
        b"././@LongLink"
    };
    let carrier = RawEntry::new(name, kind);
    out.extend_from_slice(&header(name, kind, body.len() as u64, &carrier));
    out.extend_from_slice(body);
    pad(out);
}

/// Appends one entry: GNU long name/link members where the name or target
/// does not fit 100 bytes, a PAX member for its records.
pub fn append(out: &mut Vec<u8>, e: &RawEntry) {
    if e.name.len() > 100 {
        extension(out, b'L', &[e.name.as_slice(), b"\0"].concat());
    }
    if e.link.len() > 100 {
        extension(out, b'K', &[e.link.as_slice(), b"\0"].concat());
    }
    if !e.pax.is_empty() {
        let body: Vec<u8> = e.pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        extension(out, b'x', &body);
    }
    out.extend_from_slice(&header(&e.name, e.kind, e.data.len() as u64, e));
    out.extend_from_slice(&e.data);
    pad(out);
}

/// A whole layer: the entries, then the two zero blocks.
pub fn layer(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        append(&mut out, e);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}
