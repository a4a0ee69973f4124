//! Opens an archive: finds the index through the SeekHead without scanning the video, and
//! reads packets and verbatim files by offset (thread-safe positional reads).

use super::mkv::{self, id, EbmlError, ReadAt};
use super::{codec, Blob, EntryKind, Index, Packet, INDEX_ATTACHMENT_NAME};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

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
    #[error("archive data out of range at byte {0}")]
    OutOfRange(u64),
}

/// An open archive. All reads are positional, so one `Archive` serves many threads.
pub struct Archive {
    path: PathBuf,
    file: File,
    len: u64,
    blob_area: u64,
    pub index: Index,
}

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
        let not = |why: String| ReadError::NotArchive {
            path: path.to_owned(),
            why,
        };
        let damaged = |why: String| ReadError::Damaged {
            path: path.to_owned(),
            why,
        };
        let ebml = mkv::read_header(&file, 0).map_err(|e| not(e.to_string()))?;
        if ebml.id != id::EBML {
            return Err(not("no Matroska header".into()));
        }
        let ebml_body = read_body(&file, &ebml, 4096).map_err(|e| not(e.to_string()))?;
        let doc_type = mkv::children(&ebml_body)
            .filter_map(Result::ok)
            .find(|(i, _)| *i == id::DOC_TYPE)
            .map(|(_, b)| b.to_vec());
        if doc_type.as_deref() != Some(b"matroska") {
            return Err(not("not a Matroska file".into()));
        }
        let segment = mkv::read_header(&file, ebml.end()).map_err(|e| not(e.to_string()))?;
        if segment.id != id::SEGMENT {
            return Err(not("no Matroska segment".into()));
        }
        let seg_start = segment.body_start;
        let seek_head = mkv::read_header(&file, seg_start).map_err(|e| damaged(e.to_string()))?;
        if seek_head.id != id::SEEK_HEAD {
            return Err(not("no av1pack seek head (made by another program?)".into()));
        }
        let body = read_body(&file, &seek_head, 64 << 10).map_err(|e| damaged(e.to_string()))?;
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
            mkv::read_header(&file, attachments_pos).map_err(|e| damaged(e.to_string()))?;
        if attachments.id != id::ATTACHMENTS {
            return Err(damaged(
                "seek head does not point at the attachments".into(),
            ));
        }
        let first =
            mkv::read_header(&file, attachments.body_start).map_err(|e| damaged(e.to_string()))?;
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
        let body = read_body(&file, &first, limit).map_err(|e| damaged(e.to_string()))?;
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
        if name != Some(INDEX_ATTACHMENT_NAME.as_bytes()) {
            return Err(not("the first attachment is not an av1pack index".into()));
        }
        let data = data.ok_or_else(|| damaged("index attachment has no data".into()))?;
        let index = codec::decode_index(data).map_err(|error| ReadError::Index {
            path: path.to_owned(),
            error,
        })?;
        let archive = Archive {
            path: path.to_owned(),
            file,
            len,
            blob_area: first.end(),
            index,
        };
        archive.check_ranges().map_err(damaged)?;
        Ok(archive)
    }

    /// Every packet and blob the index names must lie inside the file.
    fn check_ranges(&self) -> Result<(), String> {
        for (t, track) in self.index.tracks.iter().enumerate() {
            for p in &track.packets {
                if p.offset.saturating_add(u64::from(p.size)) > self.len {
                    return Err(format!(
                        "track {t}: frame at byte {} lies beyond the end of the file (truncated?)",
                        p.offset
                    ));
                }
            }
        }
        for e in &self.index.entries {
            if let EntryKind::Verbatim { blob, .. } = &e.kind {
                if self
                    .blob_area
                    .saturating_add(blob.offset)
                    .saturating_add(blob.len)
                    > self.len
                {
                    return Err(format!(
                        "{}: stored bytes lie beyond the end of the file (truncated?)",
                        e.path_lossy()
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Reads one coded frame.
    pub fn read_packet(&self, packet: &Packet) -> Result<Vec<u8>, ReadError> {
        let mut buf = vec![0u8; packet.size as usize];
        self.file.read_exact_at(&mut buf, packet.offset)?;
        Ok(buf)
    }

    /// Reads part of a verbatim file; returns fewer bytes only at its end.
    pub fn read_blob(&self, blob: &Blob, offset: u64, len: usize) -> Result<Vec<u8>, ReadError> {
        if offset >= blob.len {
            return Ok(Vec::new());
        }
        let n = (blob.len - offset).min(len as u64) as usize;
        let mut buf = vec![0u8; n];
        let pos = self
            .blob_area
            .checked_add(blob.offset)
            .and_then(|p| p.checked_add(offset))
            .ok_or(ReadError::OutOfRange(blob.offset))?;
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    /// Opens a reader over a whole verbatim file.
    pub fn blob_reader(&self, blob: &Blob) -> BlobReader<'_> {
        BlobReader {
            archive: self,
            blob: *blob,
            pos: 0,
        }
    }
}

/// Sequential reader over a verbatim file.
pub struct BlobReader<'a> {
    archive: &'a Archive,
    blob: Blob,
    pos: u64,
}

impl io::Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let data = self
            .archive
            .read_blob(&self.blob, self.pos, buf.len().min(1 << 20))
            .map_err(io::Error::other)?;
        buf[..data.len()].copy_from_slice(&data);
        self.pos += data.len() as u64;
        Ok(data.len())
    }
}

fn read_body(file: &File, h: &mkv::ElementHeader, limit: u64) -> Result<Vec<u8>, EbmlError> {
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
