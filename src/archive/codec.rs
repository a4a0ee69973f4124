//! The one place that serialises the index (bincode behind a small framed header).
//!
//! Layout (all integers little-endian):
//! `magic "AV1PKIDX"` · `u32 format version` · `u64 payload length` · `u64 xxh3-64 of payload`
//! · payload (bincode 2, standard config, serde). Decoding checks every field and refuses
//! payloads over [`MAX_INDEX_BYTES`] before allocating.

use super::Index;
use xxhash_rust::xxh3::xxh3_64;

pub const MAGIC: &[u8; 8] = b"AV1PKIDX";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 8 + 4 + 8 + 8;
/// Upper bound for an index payload: 256 MiB is ~2 million entries.
pub const MAX_INDEX_BYTES: u64 = 256 << 20;
/// Upper bounds checked after decoding.
pub const MAX_ENTRIES: usize = 10_000_000;
pub const MAX_TRACKS: usize = 65_535;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("not an av1pack index (bad magic)")]
    BadMagic,
    #[error(
        "index format version {0} is not supported (this av1pack reads version {FORMAT_VERSION})"
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
    let payload = bincode::serde::encode_to_vec(index, config())
        .map_err(|e| IndexError::Encode(e.to_string()))?;
    if payload.len() as u64 > MAX_INDEX_BYTES {
        return Err(IndexError::TooLarge(payload.len() as u64));
    }
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
    if version != FORMAT_VERSION {
        return Err(IndexError::UnsupportedVersion(version));
    }
    let len = u64::from_le_bytes(le8(&header[12..20]));
    if len > MAX_INDEX_BYTES {
        return Err(IndexError::TooLarge(len));
    }
    Ok(len)
}

/// Parses and validates a serialised index.
pub fn decode_index(bytes: &[u8]) -> Result<Index, IndexError> {
    let len = payload_len(bytes)?;
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
    let (index, used): (Index, usize) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| IndexError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(IndexError::Malformed(format!(
            "{} trailing bytes",
            payload.len() - used
        )));
    }
    validate(&index)?;
    Ok(index)
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
    for entry in &index.entries {
        if let EntryKind::Image(img) = &entry.kind {
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
            if img.tiles.is_empty() {
                return Err(IndexError::Malformed(format!(
                    "{} has no tiles",
                    entry.path_lossy()
                )));
            }
        }
    }
    Ok(())
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
