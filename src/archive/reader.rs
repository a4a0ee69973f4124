//! Opens an archive: finds the index through the SeekHead without scanning the video, and
//! reads packets and verbatim files by offset (thread-safe positional reads).

use super::mkv::{self, id, EbmlError, ReadAt};
use super::{codec, Blob, BlobCoding, EntryKind, Index, Packet, INDEX_ATTACHMENT_NAME};
use crate::bytelru::ByteLru;
use crate::jpegthin::Coefficients;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use xxhash_rust::xxh3::xxh3_64;

/// Largest file `read_file` holds in memory at once (larger stored files are read in parts).
pub const MAX_WHOLE_FILE: u64 = crate::lepton::MAX_SIZE as u64;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {error}")]
    Open { path: PathBuf, error: io::Error },
    #[error("{path}: not an av1pack archive ({why})")]
    NotArchive { path: PathBuf, why: String },
    #[error("{path}: damaged archive: {why}")]
    Damaged { path: PathBuf, why: String },
    #[error("{path}: {error}")]
    Index {
        path: PathBuf,
        error: codec::IndexError,
    },
    #[error("i/o reading the archive: {0}")]
    Io(#[from] io::Error),
    #[error("archive data out of range at byte {0} (truncated archive?)")]
    OutOfRange(u64),
    #[error("damaged archive data at byte {0} (checksum mismatch)")]
    Corrupt(u64),
}

/// Where an archive's bytes are: a file, or memory (fuzzing, tests).
enum Store {
    File(File),
    Mem(Vec<u8>),
}

impl ReadAt for Store {
    fn read_at_most(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        match self {
            Store::File(f) => f.read_at_most(buf, pos),
            Store::Mem(m) => m.as_slice().read_at_most(buf, pos),
        }
    }
}

/// An open archive. All reads are positional, so one `Archive` serves many threads.
pub struct Archive {
    path: PathBuf,
    file: Store,
    len: u64,
    blob_area: u64,
    pub index: Index,
    /// Entries whose data lies (partly) beyond the end of the file: a truncated archive.
    pub beyond_end: usize,
    /// The index was read from its second copy (the first is damaged).
    pub from_copy: bool,
    /// Where the index's framed bytes were read from (first copy, or second).
    index_at: std::ops::Range<u64>,
    /// Groups of recoded PNGs decoded lately, up to [`PNG_GROUP_CACHE_BYTES`] (`png_group`).
    png_groups: Mutex<ByteLru<u64, Arc<Vec<u8>>>>,
    /// Blobs that recoded JPEGs are stored against (`BlobCoding::JpegThinnedDelta`), by offset.
    references: HashMap<u64, Blob>,
    /// The coefficients of those files read lately, up to [`REFERENCE_CACHE_BYTES`]: the next
    /// file of a chain is restored against them (unpack and the mount read files in storing
    /// order).
    reference_coefficients: Mutex<ByteLru<u64, Arc<Coefficients>>>,
}

/// Bytes of coefficients kept for the next file stored against them (two of a 12 MP photo).
const REFERENCE_CACHE_BYTES: u64 = 80 << 20;

/// Decoded groups of recoded PNGs kept for the next member read (unpack reads a group's
/// members one after the other; the mount keeps the files it gives out in its own cache).
const PNG_GROUP_CACHE_BYTES: u64 = 2 * crate::pngz::GROUP_BYTES as u64;

impl Archive {
    pub fn open(path: &Path) -> Result<Archive, ReadError> {
        let file = File::open(path).map_err(|error| ReadError::Open {
            path: path.to_owned(),
            error,
        })?;
        let len = file
            .metadata()
            .map_err(|error| ReadError::Open {
                path: path.to_owned(),
                error,
            })?
            .len();
        Self::from_store(path, Store::File(file), len)
    }

    /// Opens an archive held in memory; `path` only names it in messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Archive, ReadError> {
        let len = bytes.len() as u64;
        Self::from_store(path, Store::Mem(bytes), len)
    }

    fn from_store(path: &Path, file: Store, len: u64) -> Result<Archive, ReadError> {
        let (index, blob_area, index_at, from_copy) = match primary_index(&file, len, path) {
            Ok((index, blob_area, at)) => (index, blob_area, at, false),
            Err(first) => match index_copy(&file, len) {
                Some((index, blob_area, at)) => {
                    log::warn!("{first}; using the second copy of the index");
                    (index, blob_area, at, true)
                }
                None => return Err(first),
            },
        };
        let mut archive = Archive {
            path: path.to_owned(),
            file,
            len,
            blob_area,
            index,
            beyond_end: 0,
            from_copy,
            index_at,
            png_groups: Mutex::new(ByteLru::new(PNG_GROUP_CACHE_BYTES)),
            references: HashMap::new(),
            reference_coefficients: Mutex::new(ByteLru::new(REFERENCE_CACHE_BYTES)),
        };
        archive.references = archive.find_references();
        archive.beyond_end = archive.count_beyond_end();
        if archive.beyond_end > 0 {
            log::warn!(
                "{}: damaged archive: the data of {} entries lies beyond the end of the file (truncated?)",
                path.display(),
                archive.beyond_end
            );
        }
        Ok(archive)
    }

    /// The blobs that others are stored against, by offset (the index's checks made sure that
    /// each reference is an earlier recoded JPEG).
    fn find_references(&self) -> HashMap<u64, Blob> {
        let blobs = || {
            self.index.entries.iter().filter_map(|e| match &e.kind {
                EntryKind::Verbatim { blob, .. } => Some(blob),
                _ => None,
            })
        };
        let wanted: std::collections::HashSet<u64> = blobs()
            .filter_map(|b| match b.coding {
                BlobCoding::JpegThinnedDelta { reference, .. } => Some(reference),
                _ => None,
            })
            .collect();
        blobs()
            .filter(|b| wanted.contains(&b.offset))
            .map(|b| (b.offset, *b))
            .collect()
    }

    /// Entries whose packets or stored bytes do not lie inside the file: they fail when read.
    fn count_beyond_end(&self) -> usize {
        let track_ok: Vec<bool> = self
            .index
            .tracks
            .iter()
            .map(|track| {
                track
                    .packets
                    .iter()
                    .all(|p| p.offset.saturating_add(u64::from(p.size)) <= self.len)
            })
            .collect();
        self.index
            .entries
            .iter()
            .filter(|e| match &e.kind {
                EntryKind::Verbatim { blob, .. } => {
                    self.blob_area
                        .saturating_add(blob.offset)
                        .saturating_add(blob.len)
                        > self.len
                }
                EntryKind::Image(img) => img
                    .tiles
                    .iter()
                    .chain(img.alpha.iter())
                    .any(|t| !track_ok.get(t.track as usize).copied().unwrap_or(false)),
                _ => false,
            })
            .count()
    }

    /// Where the framed index that was used lies in the file.
    pub fn index_range(&self) -> std::ops::Range<u64> {
        self.index_at.clone()
    }

    /// Where the second copy of the index lies, if the trailer that points at it is intact.
    pub fn index_copy_range(&self) -> Option<std::ops::Range<u64>> {
        let at = self.len.checked_sub(codec::TRAILER_ELEMENT_LEN as u64)?;
        let mut buf = [0u8; codec::TRAILER_ELEMENT_LEN];
        self.file.read_exact_at(&mut buf, at).ok()?;
        let t = codec::Trailer::parse(&buf)?;
        Some(t.copy_offset..t.copy_offset.checked_add(t.copy_len)?)
    }

    /// Where a stored file's bytes lie in the archive file.
    pub fn blob_range(&self, blob: &Blob) -> std::ops::Range<u64> {
        let start = self.blob_area.saturating_add(blob.offset);
        start..start.saturating_add(blob.len)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Reads one coded frame.
    /// Reads one coded frame and checks it against the checksum the index records.
    pub fn read_packet(&self, packet: &Packet) -> Result<Vec<u8>, ReadError> {
        if packet.offset.saturating_add(u64::from(packet.size)) > self.len {
            return Err(ReadError::OutOfRange(packet.offset));
        }
        let mut buf = vec![0u8; packet.size as usize];
        self.file.read_exact_at(&mut buf, packet.offset)?;
        if xxh3_64(&buf) != packet.hash {
            return Err(ReadError::Corrupt(packet.offset));
        }
        Ok(buf)
    }

    /// Reads part of a verbatim file; returns fewer bytes only at its end.
    pub fn read_blob(&self, blob: &Blob, offset: u64, len: usize) -> Result<Vec<u8>, ReadError> {
        if offset >= blob.len {
            return Ok(Vec::new());
        }
        let n = (blob.len - offset).min(len as u64) as usize;
        let pos = self
            .blob_area
            .checked_add(blob.offset)
            .and_then(|p| p.checked_add(offset))
            .filter(|p| p.saturating_add(n as u64) <= self.len)
            .ok_or(ReadError::OutOfRange(blob.offset))?;
        let mut buf = vec![0u8; n];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    /// The whole file a blob gives back (decompressed if it is stored compressed), checked
    /// against the recorded hashes and size.
    pub fn read_file(&self, blob: &Blob) -> Result<Vec<u8>, ReadError> {
        self.read_file_keeping(blob).map(|(file, _)| file)
    }

    /// [`read_file`](Self::read_file), and for a file that others are stored against, its
    /// coefficients (from restoring it, where it is itself stored against another), kept in
    /// the cache for the next file of its chain.
    fn read_file_keeping(
        &self,
        blob: &Blob,
    ) -> Result<(Vec<u8>, Option<Arc<Coefficients>>), ReadError> {
        let start = self.blob_range(blob).start;
        let mut kept = None;
        if blob.file_size() > MAX_WHOLE_FILE {
            return Err(ReadError::OutOfRange(start));
        }
        let decoded = match blob.coding {
            BlobCoding::PngGrouped {
                size,
                at,
                len,
                group_len,
                ..
            } => {
                let group = self.png_group(blob, group_len)?;
                let member = usize::try_from(at)
                    .ok()
                    .zip(usize::try_from(len).ok())
                    .and_then(|(at, len)| group.get(at..at.checked_add(len)?))
                    .ok_or(ReadError::Corrupt(start))?;
                crate::pngz::decode(member, size).map_err(|e| e.to_string())
            }
            coding => {
                let stored = self.stored_bytes(blob)?;
                match coding {
                    BlobCoding::Lepton { size, .. } | BlobCoding::JpegThinned { size, .. } => {
                        crate::lepton::decompress(&stored, size).map_err(|e| e.to_string())
                    }
                    BlobCoding::Zstd { size, .. } => {
                        crate::compress::decompress(&stored, size).map_err(|e| e.to_string())
                    }
                    BlobCoding::Png { size, .. } => {
                        crate::pngz::decode(&stored, size).map_err(|e| e.to_string())
                    }
                    BlobCoding::Stored => Ok(stored),
                    BlobCoding::JpegThinnedDelta {
                        reference,
                        residual_size,
                        ..
                    } => {
                        let by = self.reference_coefficients(reference, start)?;
                        crate::lepton::decompress(&stored, residual_size)
                            .map_err(|e| e.to_string())
                            .and_then(|residual| {
                                crate::jpegthin::restore_keeping(&residual, &by)
                                    .map_err(|e| e.to_string())
                            })
                            .map(|(file, coefficients)| {
                                kept = Some(coefficients);
                                file
                            })
                    }
                    // Read through its group, above.
                    BlobCoding::PngGrouped { .. } => Err("not a stored blob".into()),
                }
            }
        };
        let file = decoded.map_err(|e| {
            log::debug!("blob at {start}: {e}");
            ReadError::Corrupt(start)
        })?;
        if file.len() as u64 != blob.file_size() || xxh3_64(&file) != blob.file_hash() {
            return Err(ReadError::Corrupt(start));
        }
        if !self.references.contains_key(&blob.offset) {
            return Ok((file, None));
        }
        // A file others are stored against: its coefficients, for the next one.
        let coefficients = Arc::new(match kept {
            Some(c) => c,
            None => crate::jpegthin::coefficients(&file).map_err(|e| {
                log::debug!("blob at {start}: {e}");
                ReadError::Corrupt(start)
            })?,
        });
        self.reference_cache()
            .insert(blob.offset, coefficients.clone());
        Ok((file, Some(coefficients)))
    }

    /// The cache of reference coefficients (a poisoned lock only means another reader
    /// panicked: the cache is still sound).
    fn reference_cache(&self) -> std::sync::MutexGuard<'_, ByteLru<u64, Arc<Coefficients>>> {
        self.reference_coefficients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The coefficients of the file a recoded JPEG (whose blob starts at byte `start`) is
    /// stored against: the blob at `offset`, from the cache or read (its own reference first,
    /// and so on: the index's checks bound the chain).
    fn reference_coefficients(
        &self,
        offset: u64,
        start: u64,
    ) -> Result<Arc<Coefficients>, ReadError> {
        if let Some(hit) = self.reference_cache().get(&offset) {
            return Ok(hit.clone());
        }
        let blob = self
            .references
            .get(&offset)
            .filter(|b| b.offset < start.saturating_sub(self.blob_area))
            .ok_or(ReadError::Corrupt(start))?;
        let (_, kept) = self.read_file_keeping(blob)?;
        kept.ok_or(ReadError::Corrupt(start))
    }

    /// A blob's stored bytes, whole, checked against its recorded length and hash.
    fn stored_bytes(&self, blob: &Blob) -> Result<Vec<u8>, ReadError> {
        let stored = self.read_blob(blob, 0, blob.len as usize)?;
        if stored.len() as u64 != blob.len || xxh3_64(&stored) != blob.hash {
            return Err(ReadError::Corrupt(self.blob_range(blob).start));
        }
        Ok(stored)
    }

    /// The decoded group of recoded PNGs that `blob` (the group's xz stream) holds, `len`
    /// bytes long: from the cache of recent groups, or read, checked and decoded (outside the
    /// cache's lock; two threads may decode the same group at once).
    fn png_group(&self, blob: &Blob, len: u64) -> Result<Arc<Vec<u8>>, ReadError> {
        let start = self.blob_range(blob).start;
        // A poisoned lock only means another reader panicked: the cache is still sound.
        let groups = || self.png_groups.lock().unwrap_or_else(|p| p.into_inner());
        let cached = groups().get(&start).cloned();
        if let Some(g) = cached {
            // The same group bytes with another length recorded: a damaged index.
            return match g.len() as u64 == len {
                true => Ok(g),
                false => Err(ReadError::Corrupt(start)),
            };
        }
        if len > crate::pngz::MAX_GROUP_BYTES || blob.len > crate::pngz::MAX_GROUP_BYTES {
            return Err(ReadError::OutOfRange(start));
        }
        let stored = self.stored_bytes(blob)?;
        let group = Arc::new(crate::pngz::decompress_group(&stored, len).map_err(|e| {
            log::debug!("group at {start}: {e}");
            ReadError::Corrupt(start)
        })?);
        groups().insert(start, group.clone());
        Ok(group)
    }

    /// Reads a whole verbatim file through and checks it against its recorded hash.
    pub fn verify_blob(&self, blob: &Blob) -> Result<(), ReadError> {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut pos = 0;
        while pos < blob.len {
            let chunk = self.read_blob(blob, pos, 1 << 20)?;
            if chunk.is_empty() {
                break;
            }
            hasher.update(&chunk);
            pos += chunk.len() as u64;
        }
        if pos != blob.len || hasher.digest() != blob.hash {
            return Err(ReadError::Corrupt(
                self.blob_area.saturating_add(blob.offset),
            ));
        }
        Ok(())
    }
}

/// Finds the index the ordinary way: EBML header, Segment, SeekHead, first attachment.
/// Returns it with the start of the blob area.
fn primary_index(
    file: &Store,
    len: u64,
    path: &Path,
) -> Result<(Index, u64, std::ops::Range<u64>), ReadError> {
    let not = |why: String| ReadError::NotArchive {
        path: path.to_owned(),
        why,
    };
    let damaged = |why: String| ReadError::Damaged {
        path: path.to_owned(),
        why,
    };
    let ebml = mkv::read_header(file, 0).map_err(|e| not(e.to_string()))?;
    if ebml.id != id::EBML {
        return Err(not("no Matroska header".into()));
    }
    let ebml_body = read_body(file, &ebml, 4096).map_err(|e| not(e.to_string()))?;
    let doc_type = mkv::children(&ebml_body)
        .filter_map(Result::ok)
        .find(|(i, _)| *i == id::DOC_TYPE)
        .map(|(_, b)| b.to_vec());
    if doc_type.as_deref() != Some(b"matroska") {
        return Err(not("not a Matroska file".into()));
    }
    let segment = mkv::read_header(file, ebml.end()).map_err(|e| not(e.to_string()))?;
    if segment.id != id::SEGMENT {
        return Err(not("no Matroska segment".into()));
    }
    let seg_start = segment.body_start;
    let seek_head = mkv::read_header(file, seg_start).map_err(|e| damaged(e.to_string()))?;
    if seek_head.id != id::SEEK_HEAD {
        return Err(not("no av1pack seek head (made by another program?)".into()));
    }
    let body = read_body(file, &seek_head, 64 << 10).map_err(|e| damaged(e.to_string()))?;
    let mut attachments_pos = None;
    for child in mkv::children(&body) {
        let (cid, seek) = child.map_err(|e| damaged(e.to_string()))?;
        if cid != id::SEEK {
            continue;
        }
        let mut target = None;
        let mut pos = None;
        for field in mkv::children(seek) {
            let (fid, fb) = field.map_err(|e| damaged(e.to_string()))?;
            match fid {
                id::SEEK_ID => target = mkv::read_uint(fb),
                id::SEEK_POSITION => pos = mkv::read_uint(fb),
                _ => {}
            }
        }
        if target == Some(u64::from(id::ATTACHMENTS)) {
            attachments_pos = pos;
        }
    }
    let attachments_pos = attachments_pos
        .ok_or_else(|| not("no attachments listed (not made by av1pack?)".into()))?
        .checked_add(seg_start)
        .filter(|&p| p < len)
        .ok_or_else(|| damaged("attachments position beyond the end of the file".into()))?;
    let attachments =
        mkv::read_header(file, attachments_pos).map_err(|e| damaged(e.to_string()))?;
    if attachments.id != id::ATTACHMENTS {
        return Err(damaged(
            "seek head does not point at the attachments".into(),
        ));
    }
    let first =
        mkv::read_header(file, attachments.body_start).map_err(|e| damaged(e.to_string()))?;
    if first.id != id::ATTACHED_FILE {
        return Err(damaged("attachments do not start with a file".into()));
    }
    let limit = codec::MAX_INDEX_BYTES + 64 * 1024;
    if first.body_len > limit || first.end() > len {
        return Err(damaged(format!(
            "index attachment of {} bytes does not fit in the file",
            first.body_len
        )));
    }
    let body = read_body(file, &first, limit).map_err(|e| damaged(e.to_string()))?;
    let mut name = None;
    let mut data = None;
    for child in mkv::children(&body) {
        let (cid, b) = child.map_err(|e| damaged(e.to_string()))?;
        match cid {
            id::FILE_NAME => name = Some(b),
            id::FILE_DATA => data = Some(b),
            _ => {}
        }
    }
    // FileData is a slice of `body`: its offset in the file follows from the pointers.
    let data_at = |d: &[u8]| {
        let start = first.body_start + (d.as_ptr() as usize - body.as_ptr() as usize) as u64;
        start..start + d.len() as u64
    };
    if name != Some(INDEX_ATTACHMENT_NAME.as_bytes()) {
        return Err(not("the first attachment is not an av1pack index".into()));
    }
    let data = data.ok_or_else(|| damaged("index attachment has no data".into()))?;
    let index = codec::decode_index(data).map_err(|error| ReadError::Index {
        path: path.to_owned(),
        error,
    })?;
    Ok((index, first.end(), data_at(data)))
}

/// Finds the second copy of the index through the trailer at the very end of the file
/// (see [`codec::Trailer`]). `None` when there is no valid trailer or copy.
fn index_copy(file: &Store, len: u64) -> Option<(Index, u64, std::ops::Range<u64>)> {
    let at = len.checked_sub(codec::TRAILER_ELEMENT_LEN as u64)?;
    let mut buf = [0u8; codec::TRAILER_ELEMENT_LEN];
    file.read_exact_at(&mut buf, at).ok()?;
    let t = codec::Trailer::parse(&buf)?;
    let copy_end = t.copy_offset.checked_add(t.copy_len)?;
    if t.copy_len > codec::MAX_INDEX_BYTES + codec::HEADER_LEN as u64
        || copy_end > at
        || t.blob_area > t.copy_offset
    {
        return None;
    }
    let mut data = vec![0u8; t.copy_len as usize];
    file.read_exact_at(&mut data, t.copy_offset).ok()?;
    let index = codec::decode_index(&data).ok()?;
    Some((index, t.blob_area, t.copy_offset..copy_end))
}

fn read_body(file: &impl ReadAt, h: &mkv::ElementHeader, limit: u64) -> Result<Vec<u8>, EbmlError> {
    if h.body_len > limit {
        return Err(EbmlError::Malformed {
            at: h.body_start,
            what: "element larger than allowed",
        });
    }
    let mut buf = vec![0u8; h.body_len as usize];
    file.read_exact_at(&mut buf, h.body_start)?;
    Ok(buf)
}
