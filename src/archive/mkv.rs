//! A minimal Matroska (EBML) writer and reader: just the elements av1pack writes.
//!
//! av1pack writes its own Matroska so that it knows the exact byte offset of every coded
//! frame and of every attachment without scanning, and can stream verbatim files from disk.
//! Element IDs are from the Matroska specification (RFC 9559).

use std::io::{self, Read, Write};

pub mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const SEEK: u32 = 0x4DBB;
    pub const SEEK_ID: u32 = 0x53AB;
    pub const SEEK_POSITION: u32 = 0x53AC;
    pub const VOID: u32 = 0xEC;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const DURATION: u32 = 0x4489;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TITLE: u32 = 0x7BA9;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const FLAG_DEFAULT: u32 = 0x88;
    pub const DEFAULT_DURATION: u32 = 0x23_E383;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const LANGUAGE: u32 = 0x22_B59C;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const PIXEL_CROP_BOTTOM: u32 = 0x54AA;
    pub const PIXEL_CROP_RIGHT: u32 = 0x54DD;
    pub const CHAPTERS: u32 = 0x1043_A770;
    pub const EDITION_ENTRY: u32 = 0x45B9;
    pub const EDITION_UID: u32 = 0x45BC;
    pub const CHAPTER_ATOM: u32 = 0xB6;
    pub const CHAPTER_UID: u32 = 0x73C4;
    pub const CHAPTER_TIME_START: u32 = 0x91;
    pub const CHAPTER_TIME_END: u32 = 0x92;
    pub const CHAPTER_DISPLAY: u32 = 0x80;
    pub const CHAP_STRING: u32 = 0x85;
    pub const CHAP_LANGUAGE: u32 = 0x437C;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CUE_POINT: u32 = 0xBB;
    pub const CUE_TIME: u32 = 0xB3;
    pub const CUE_TRACK_POSITIONS: u32 = 0xB7;
    pub const CUE_TRACK: u32 = 0xF7;
    pub const CUE_CLUSTER_POSITION: u32 = 0xF1;
    pub const ATTACHMENTS: u32 = 0x1941_A469;
    pub const ATTACHED_FILE: u32 = 0x61A7;
    pub const FILE_NAME: u32 = 0x466E;
    pub const FILE_MEDIA_TYPE: u32 = 0x4660;
    pub const FILE_DATA: u32 = 0x465C;
    pub const FILE_UID: u32 = 0x46AE;
}

/// Appends an element ID (IDs carry their own length marker).
pub fn put_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends a size as the shortest EBML variable-length integer.
pub fn put_size(out: &mut Vec<u8>, size: u64) {
    let mut len = 1;
    while len < 8 && size >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    put_size_fixed(out, size, len);
}

/// Appends a size as a variable-length integer of exactly `len` bytes.
pub fn put_size_fixed(out: &mut Vec<u8>, size: u64, len: usize) {
    let marker = 1u64 << (7 * len);
    let v = size | marker;
    let bytes = v.to_be_bytes();
    out.extend_from_slice(&bytes[8 - len..]);
}

pub fn header(id: u32, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    put_id(&mut out, id);
    put_size(&mut out, size);
    out
}

pub fn master(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    put_id(out, id);
    put_size(out, body.len() as u64);
    out.extend_from_slice(body);
}

pub fn uint(out: &mut Vec<u8>, id: u32, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    master(out, id, &bytes[skip..]);
}

pub fn float(out: &mut Vec<u8>, id: u32, v: f64) {
    master(out, id, &v.to_be_bytes());
}

pub fn string(out: &mut Vec<u8>, id: u32, s: &str) {
    master(out, id, s.as_bytes());
}

/// A Void element that occupies exactly `total` bytes (total >= 2).
pub fn void(out: &mut Vec<u8>, total: usize) {
    debug_assert!(total >= 2);
    // 1 byte ID; use an 8-byte size field when the body is large enough to keep totals exact.
    if total < 9 {
        put_id(out, id::VOID);
        put_size_fixed(out, (total - 2) as u64, 1);
        out.resize(out.len() + total - 2, 0);
    } else {
        put_id(out, id::VOID);
        put_size_fixed(out, (total - 9) as u64, 8);
        out.resize(out.len() + total - 9, 0);
    }
}

/// An element header as read back: its ID, where its body starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementHeader {
    pub id: u32,
    pub body_start: u64,
    pub body_len: u64,
}

impl ElementHeader {
    pub fn end(&self) -> u64 {
        self.body_start.saturating_add(self.body_len)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EbmlError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("malformed Matroska at byte {at}: {what}")]
    Malformed { at: u64, what: &'static str },
}

fn malformed(at: u64, what: &'static str) -> EbmlError {
    EbmlError::Malformed { at, what }
}

/// Reads an element header at `pos` from a random-access source.
pub fn read_header(src: &impl ReadAt, pos: u64) -> Result<ElementHeader, EbmlError> {
    let mut buf = [0u8; 12];
    let n = src.read_at_most(&mut buf, pos)?;
    let buf = &buf[..n];
    let first = *buf
        .first()
        .ok_or_else(|| malformed(pos, "unexpected end of file"))?;
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 || buf.len() < id_len {
        return Err(malformed(pos, "bad element ID"));
    }
    let id = buf[..id_len]
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    let rest = &buf[id_len..];
    let s0 = *rest
        .first()
        .ok_or_else(|| malformed(pos, "unexpected end of file"))?;
    let size_len = s0.leading_zeros() as usize + 1;
    if size_len > 8 || rest.len() < size_len {
        return Err(malformed(pos, "bad element size"));
    }
    let mut size = u64::from(s0) & (0xFFu64 >> size_len);
    for &b in &rest[1..size_len] {
        size = (size << 8) | u64::from(b);
    }
    if size == (1u64 << (7 * size_len)) - 1 {
        return Err(malformed(pos, "unknown-size element"));
    }
    Ok(ElementHeader {
        id,
        body_start: pos + (id_len + size_len) as u64,
        body_len: size,
    })
}

/// Reads an unsigned integer element body.
pub fn read_uint(body: &[u8]) -> Option<u64> {
    if body.len() > 8 {
        return None;
    }
    Some(body.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Iterates over the child elements of a master element held in memory.
pub fn children(body: &[u8]) -> impl Iterator<Item = Result<(u32, &[u8]), EbmlError>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= body.len() {
            return None;
        }
        let h = match read_header(&body, pos as u64) {
            Ok(h) => h,
            Err(e) => {
                pos = body.len();
                return Some(Err(e));
            }
        };
        let start = h.body_start as usize;
        let Some(end) = start
            .checked_add(h.body_len as usize)
            .filter(|&e| e <= body.len())
        else {
            pos = body.len();
            return Some(Err(malformed(
                pos as u64,
                "child element overruns its parent",
            )));
        };
        pos = end;
        Some(Ok((h.id, &body[start..end])))
    })
}

/// Positional reads, implemented for files and byte slices.
pub trait ReadAt {
    /// Reads as many bytes as available up to `buf.len()`.
    fn read_at_most(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let n = self.read_at_most(buf, pos)?;
        if n < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file ends before byte {}", pos + buf.len() as u64),
            ));
        }
        Ok(())
    }
}

impl ReadAt for std::fs::File {
    fn read_at_most(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl ReadAt for &[u8] {
    fn read_at_most(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let start = usize::try_from(pos).unwrap_or(usize::MAX).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// A writer that counts the bytes it has written.
pub struct CountingWriter<W: Write> {
    inner: W,
    pub pos: u64,
}

impl<W: Write> CountingWriter<W> {
    pub fn new(inner: W, pos: u64) -> Self {
        CountingWriter { inner, pos }
    }
    pub fn into_inner(self) -> W {
        self.inner
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies exactly `len` bytes, failing if the source is shorter.
pub fn copy_exact(src: &mut impl Read, dst: &mut impl Write, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut src.take(len), dst)?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("expected {len} bytes, got {copied}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        for size in [
            0u64,
            1,
            126,
            127,
            128,
            16382,
            16383,
            16384,
            1 << 30,
            (1 << 56) - 2,
        ] {
            let mut out = Vec::new();
            put_id(&mut out, id::SEGMENT);
            put_size(&mut out, size);
            let h = read_header(&out.as_slice(), 0).unwrap();
            assert_eq!(h.id, id::SEGMENT);
            assert_eq!(h.body_len, size, "size {size}");
            assert_eq!(h.body_start, out.len() as u64);
        }
    }

    #[test]
    fn void_has_exact_length() {
        for total in [2usize, 5, 8, 9, 10, 200, 5000] {
            let mut out = Vec::new();
            void(&mut out, total);
            assert_eq!(out.len(), total);
            let h = read_header(&out.as_slice(), 0).unwrap();
            assert_eq!(h.id, id::VOID);
            assert_eq!(h.end(), total as u64);
        }
    }

    #[test]
    fn truncated_headers_are_errors() {
        let mut out = Vec::new();
        put_id(&mut out, id::SEGMENT);
        put_size_fixed(&mut out, 1000, 8);
        for cut in 0..out.len() {
            assert!(read_header(&&out[..cut], 0).is_err(), "cut at {cut}");
        }
    }
}
