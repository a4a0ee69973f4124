//! The one place that serialises the index (bincode behind a small framed header).
//!
//! Layout (all integers little-endian):
//! `magic "AV1PKIDX"` · `u32 format version` · `u64 payload length` · `u64 xxh3-64 of payload`
//! · payload (from version 11 a zstd frame of the bincode, before it the bincode itself:
//! bincode 2, standard config, serde). Decoding checks every field and refuses payloads over
//! [`MAX_INDEX_BYTES`], stored or inflated, before allocating them.

use super::Index;
use xxhash_rust::xxh3::xxh3_64;

pub const MAGIC: &[u8; 8] = b"AV1PKIDX";
/// 2: packets carry an xxh3-64 of their payload (`Packet::hash`); a second copy of the index
/// at the end of the file, found through a trailer. 3: `Blob::coding`. 4: `ColorModel::Rgb420`.
/// 5: `EntryKind::Copy`. 6: `BlobCoding::Png`. 7: `BlobCoding::PngGrouped`. 8: the index is
/// as in 7, but colour tracks may be 10-bit Y'CbCr (`yuv444p10le`, with any codec but NVENC),
/// which a reader of version 7 cannot decode: the number tells it so before it tries.
/// 9: `MetaBlock::TiffTag` and `MetaBlock::WebpChunk` (a TIFF's tags and a WebP's ICC, EXIF
/// and XMP chunks, carried into the file written back). 10: `BlobCoding::JpegThinned` (a JPEG
/// recoded smaller in its own DCT, given back as that file). 11: the payload is a zstd frame of
/// the same bincode (an index of a few hundred entries is about 0.4 of its size). 12: hard
/// links (`EntryKind::Link`). 13: `BlobCoding::JpegThinnedDelta` (a recoded JPEG stored as its
/// difference from an earlier one). 14: `ColorModel::Rgb16` and `Grey16` (PNGs of 16 bits a
/// sample, coded at 8 and written back at 16).
pub const FORMAT_VERSION: u32 = 14;
/// The first version whose payload is zstd-compressed.
const SQUEEZED_SINCE: u32 = 11;
/// The oldest version this av1pack reads: the payload of a version 3 index is, uncompressed,
/// the bincode of a version 14 index that holds no `ColorModel::Rgb420`, `Rgb16` or `Grey16`,
/// no `EntryKind::Copy`
/// or `EntryKind::Link`,
/// no `BlobCoding::Png`, no `BlobCoding::PngGrouped`, no `MetaBlock::TiffTag` or `WebpChunk`
/// and no `BlobCoding::JpegThinned` or `JpegThinnedDelta` (each variant was added at the end, so the bytes decode
/// alike).
pub const OLDEST_READ_VERSION: u32 = 3;
pub const HEADER_LEN: usize = 8 + 4 + 8 + 8;
/// Upper bound for an index payload: 256 MiB is ~2 million entries.
pub const MAX_INDEX_BYTES: u64 = 256 << 20;
/// Upper bounds checked after decoding.
pub const MAX_ENTRIES: usize = 10_000_000;
pub const MAX_TRACKS: usize = 65_535;
/// Largest modification time (seconds either side of 1970) an index may hold.
pub const MAX_TIME_SECS: u64 = 1 << 40;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("not an av1pack index (bad magic)")]
    BadMagic,
    #[error(
        "index format version {0} is not supported (this av1pack reads versions {OLDEST_READ_VERSION} to {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u32),
    #[error("index is truncated ({have} of {need} bytes)")]
    Truncated { have: u64, need: u64 },
    #[error("index is too large ({0} bytes)")]
    TooLarge(u64),
    #[error("index checksum mismatch: the index is damaged")]
    Checksum,
    #[error("index is malformed: {0}")]
    Malformed(String),
    #[error("could not serialise the index: {0}")]
    Encode(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ MAX_INDEX_BYTES as usize }>()
}

/// Serialises an index with its header.
pub fn encode_index(index: &Index) -> Result<Vec<u8>, IndexError> {
    let raw = bincode::serde::encode_to_vec(index, config())
        .map_err(|e| IndexError::Encode(e.to_string()))?;
    if raw.len() as u64 > MAX_INDEX_BYTES {
        return Err(IndexError::TooLarge(raw.len() as u64));
    }
    let payload = crate::compress::squeeze(&raw).map_err(|e| IndexError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reads the header only: returns the payload length it announces.
pub fn payload_len(header: &[u8]) -> Result<u64, IndexError> {
    Ok(read_header(header)?.1)
}

/// The version and payload length a header announces, checked.
fn read_header(header: &[u8]) -> Result<(u32, u64), IndexError> {
    if header.len() < HEADER_LEN {
        return Err(IndexError::Truncated {
            have: header.len() as u64,
            need: HEADER_LEN as u64,
        });
    }
    if &header[..8] != MAGIC {
        return Err(IndexError::BadMagic);
    }
    let version = u32::from_le_bytes(le4(&header[8..12]));
    if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(IndexError::UnsupportedVersion(version));
    }
    let len = u64::from_le_bytes(le8(&header[12..20]));
    if len > MAX_INDEX_BYTES {
        return Err(IndexError::TooLarge(len));
    }
    Ok((version, len))
}

/// The bincode of a serialised index: its header and checksum checked, inflated if the version
/// compresses it (at most [`MAX_INDEX_BYTES`]).
pub fn raw_payload(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, IndexError> {
    let (version, len) = read_header(bytes)?;
    let need = HEADER_LEN as u64 + len;
    if (bytes.len() as u64) < need {
        return Err(IndexError::Truncated {
            have: bytes.len() as u64,
            need,
        });
    }
    let checksum = u64::from_le_bytes(le8(&bytes[20..28]));
    let payload = &bytes[HEADER_LEN..need as usize];
    if xxh3_64(payload) != checksum {
        return Err(IndexError::Checksum);
    }
    if version < SQUEEZED_SINCE {
        return Ok(payload.into());
    }
    crate::compress::unsqueeze(payload, MAX_INDEX_BYTES)
        .map(Into::into)
        .map_err(|e| IndexError::Malformed(format!("payload does not inflate: {e}")))
}

/// Parses and validates a serialised index.
pub fn decode_index(bytes: &[u8]) -> Result<Index, IndexError> {
    let payload = raw_payload(bytes)?;
    let payload = &payload[..];
    let (index, used): (Index, usize) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| IndexError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(IndexError::Malformed(format!(
            "{} trailing bytes",
            payload.len() - used
        )));
    }
    let mut index = index;
    resolve_copies(&mut index)?;
    validate(&index)?;
    Ok(index)
}

/// Gives every copy and hard link entry its original's kind, and lists the links in
/// `Index::links`. A copy or link must follow its original, which must be a file; the metadata
/// they repeat may not exceed [`MAX_INDEX_BYTES`] in all (checked before anything is repeated),
/// so that a small hostile index cannot make a huge one in memory.
fn resolve_copies(index: &mut Index) -> Result<(), IndexError> {
    use super::EntryKind;
    let entries = &index.entries;
    let mut repeated = 0u64;
    let mut copies = Vec::new();
    let mut links = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (of, link) = match e.kind {
            EntryKind::Copy { of } => (of, false),
            EntryKind::Link { of } => (of, true),
            _ => continue,
        };
        // The original, followed through earlier copies and links (a link to a copy: the
        // second name of a file whose bytes an earlier file has).
        let mut o = usize::try_from(of).ok().filter(|&o| o < i);
        if let (true, Some(first)) = (link, o) {
            links.push((i, first));
        }
        while let Some(EntryKind::Copy { of } | EntryKind::Link { of }) =
            o.map(|o| &entries[o].kind)
        {
            o = usize::try_from(*of).ok().filter(|&next| Some(next) < o);
        }
        match o.map(|o| (o, &entries[o].kind)) {
            Some((o, EntryKind::Verbatim { .. })) => copies.push((i, o)),
            Some((o, EntryKind::Image(img))) => {
                repeated = repeated.saturating_add(super::metadata_bytes(&img.metadata));
                copies.push((i, o));
            }
            _ => {
                return Err(IndexError::Malformed(format!(
                    "{} is a copy of entry {of}, which is not an earlier file",
                    e.path_lossy()
                )))
            }
        }
    }
    if repeated > MAX_INDEX_BYTES {
        return Err(IndexError::Malformed(format!(
            "copies repeat {repeated} bytes of metadata"
        )));
    }
    for (i, o) in copies {
        index.entries[i].kind = index.entries[o].kind.clone();
    }
    index.links = links;
    Ok(())
}

/// Recoded JPEGs stored against another (`BlobCoding::JpegThinnedDelta`) must name the blob
/// of an earlier recoded JPEG, in chains of at most [`super::MAX_DELTA_CHAIN`] files.
fn check_references(index: &Index) -> Result<(), IndexError> {
    use super::{BlobCoding, EntryKind};
    let mut blobs: Vec<(u64, &super::Blob, String)> = index
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Verbatim { blob, .. } if blob.is_thinned() => {
                Some((blob.offset, blob, e.path_lossy()))
            }
            _ => None,
        })
        .collect();
    if !blobs
        .iter()
        .any(|(_, b, _)| matches!(b.coding, BlobCoding::JpegThinnedDelta { .. }))
    {
        return Ok(());
    }
    blobs.sort_by_key(|(offset, ..)| *offset);
    // Chain length of each blob, by offset (references are earlier: one pass in order).
    let mut depth: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    for (offset, blob, path) in blobs {
        let d = match blob.coding {
            BlobCoding::JpegThinnedDelta { reference, .. } => {
                match depth.get(&reference).filter(|_| reference < offset) {
                    Some(&d) if d < super::MAX_DELTA_CHAIN => d + 1,
                    Some(_) => {
                        return Err(IndexError::Malformed(format!(
                            "{path} is stored at the end of too long a chain of files"
                        )))
                    }
                    None => {
                        return Err(IndexError::Malformed(format!(
                            "{path} is stored against data that is not an earlier recoded JPEG"
                        )))
                    }
                }
            }
            _ => 0,
        };
        depth.insert(offset, d);
    }
    Ok(())
}

/// Structural checks a reader relies on, so that later code can index without panicking.
fn validate(index: &Index) -> Result<(), IndexError> {
    use super::EntryKind;
    if index.entries.len() > MAX_ENTRIES {
        return Err(IndexError::Malformed("too many entries".into()));
    }
    if index.tracks.len() > MAX_TRACKS {
        return Err(IndexError::Malformed("too many tracks".into()));
    }
    for track in &index.tracks {
        if track.width == 0 || track.height == 0 || track.width > 65_536 || track.height > 65_536 {
            return Err(IndexError::Malformed(format!(
                "track {} has canvas {}x{}",
                track.number, track.width, track.height
            )));
        }
    }
    let finite = |v: Option<f32>| v.is_none_or(f32::is_finite);
    if !finite(index.settings.crf) {
        return Err(IndexError::Malformed("crf is not a number".into()));
    }
    for entry in &index.entries {
        // Times a reader can turn into a SystemTime without overflow (±30,000 years).
        if entry.mtime.nanos > 999_999_999 || entry.mtime.secs.unsigned_abs() > MAX_TIME_SECS {
            return Err(IndexError::Malformed(format!(
                "{} has an impossible time",
                entry.path_lossy()
            )));
        }
        if let EntryKind::Verbatim { blob, .. } = &entry.kind {
            if let super::BlobCoding::JpegThinned { score_centi, .. }
            | super::BlobCoding::JpegThinnedDelta { score_centi, .. } = blob.coding
            {
                if score_centi > 10_000 {
                    return Err(IndexError::Malformed(format!(
                        "{} has a score over 100",
                        entry.path_lossy()
                    )));
                }
            }
        }
        if let EntryKind::Image(img) = &entry.kind {
            if !finite(img.score) {
                return Err(IndexError::Malformed(format!(
                    "{} has a score that is not a number",
                    entry.path_lossy()
                )));
            }
            for tile in img.tiles.iter().chain(img.alpha.iter()) {
                let Some(track) = index.tracks.get(tile.track as usize) else {
                    return Err(IndexError::Malformed(format!(
                        "{} refers to missing track {}",
                        entry.path_lossy(),
                        tile.track
                    )));
                };
                let (cw, ch) = if tile.rotated {
                    (tile.height, tile.width)
                } else {
                    (tile.width, tile.height)
                };
                if tile.frame >= track.packets.len() as u64
                    || cw > track.width
                    || ch > track.height
                    || tile.width == 0
                    || tile.height == 0
                    || u64::from(tile.x) + u64::from(tile.width) > u64::from(img.width)
                    || u64::from(tile.y) + u64::from(tile.height) > u64::from(img.height)
                {
                    return Err(IndexError::Malformed(format!(
                        "{} has a tile outside its track or image",
                        entry.path_lossy()
                    )));
                }
            }
            for block in &img.metadata {
                if let super::MetaBlock::TiffTag {
                    dir,
                    tag,
                    kind,
                    data,
                } = block
                {
                    if !super::tiff_tag_writable(*dir, *tag, *kind, data.len()) {
                        return Err(IndexError::Malformed(format!(
                            "{} has TIFF tag {tag} of type {kind} with {} bytes",
                            entry.path_lossy(),
                            data.len()
                        )));
                    }
                }
            }
            if img.tiles.is_empty() {
                return Err(IndexError::Malformed(format!(
                    "{} has no tiles",
                    entry.path_lossy()
                )));
            }
        }
    }
    check_references(index)
}

/// Magic of the trailer that closes an archive and points at the second copy of the index.
pub const TRAILER_MAGIC: &[u8; 8] = b"AV1PKTRL";
/// Body of the trailer: magic, three u64 fields and their xxh3-64.
pub const TRAILER_BODY_LEN: usize = 8 + 8 * 4;
/// The trailer as written: a Matroska Void element (ID 0xEC, 1-byte size) around the body.
pub const TRAILER_ELEMENT_LEN: usize = 2 + TRAILER_BODY_LEN;

/// The last bytes of an archive (a Void element, ignored by Matroska readers): where the
/// second copy of the index is and where the blob area starts, so that the archive can be
/// read when its start, its SeekHead or its first index copy is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Absolute offset of the blob area (end of the first index attachment).
    pub blob_area: u64,
    /// Absolute offset and length of the second copy's framed bytes (header + payload).
    pub copy_offset: u64,
    pub copy_len: u64,
}

impl Trailer {
    /// The whole Void element.
    pub fn encode(&self) -> [u8; TRAILER_ELEMENT_LEN] {
        let mut out = [0u8; TRAILER_ELEMENT_LEN];
        out[0] = 0xEC;
        out[1] = 0x80 | TRAILER_BODY_LEN as u8;
        out[2..10].copy_from_slice(TRAILER_MAGIC);
        out[10..18].copy_from_slice(&self.blob_area.to_le_bytes());
        out[18..26].copy_from_slice(&self.copy_offset.to_le_bytes());
        out[26..34].copy_from_slice(&self.copy_len.to_le_bytes());
        let sum = xxh3_64(&out[2..34]);
        out[34..42].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parses the whole Void element; `None` unless every byte checks out.
    pub fn parse(b: &[u8]) -> Option<Trailer> {
        if b.len() != TRAILER_ELEMENT_LEN
            || b[0] != 0xEC
            || b[1] != 0x80 | TRAILER_BODY_LEN as u8
            || &b[2..10] != TRAILER_MAGIC
            || xxh3_64(&b[2..34]) != u64::from_le_bytes(le8(&b[34..42]))
        {
            return None;
        }
        Some(Trailer {
            blob_area: u64::from_le_bytes(le8(&b[10..18])),
            copy_offset: u64::from_le_bytes(le8(&b[18..26])),
            copy_len: u64::from_le_bytes(le8(&b[26..34])),
        })
    }
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}
