//! Kept files that are not JPEGs (sidecars, text, uncompressed or 16-bit images, anything
//! else) stored zstd-compressed where that pays, and the archive's index ([`squeeze`]); the
//! one place that uses the zstd crate.
//!
//! A file is tried only when a quick look at its start compresses well, so that videos,
//! archives and compressed images (which make up most of such bytes in an album) cost one
//! small trial, not a full pass. The compressed form is decoded and compared before it is
//! kept, as the Lepton form of a JPEG is.

/// Largest file compressed: pack holds it about three times over (the file, its compressed
/// form, and the check's decoded copy), for two files at once; readers hold it whole.
pub const MAX_SIZE: usize = 32 << 20;
/// Smallest file worth it: below this the blob's own overhead eats the gain.
pub const MIN_SIZE: usize = 256;
/// Bytes of the file's start tried first.
pub const PROBE: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
    #[error("zstd data gives {got} bytes where {want} were recorded")]
    Size { got: usize, want: u64 },
    #[error("zstd data gives more than {0} bytes")]
    Limit(u64),
}

/// Whether the start of a file (up to [`PROBE`] bytes) compresses by at least a tenth at a
/// fast level: only then is the whole file tried.
pub fn promising(head: &[u8]) -> bool {
    head.len() >= MIN_SIZE
        && zstd::bulk::compress(head, 3).is_ok_and(|c| c.len() * 10 <= head.len() * 9)
}

/// The compressed form of `data`, checked by decoding it, when it saves at least 1/16 of the
/// file; `None` otherwise.
pub fn compress(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < MIN_SIZE || data.len() > MAX_SIZE {
        return None;
    }
    // The strongest level for small files (sidecars, text), a quick one for large files.
    let level = if data.len() <= 4 << 20 { 19 } else { 9 };
    let coded = zstd::bulk::compress(data, level).ok()?;
    if coded.len() + data.len() / 16 > data.len() {
        return None;
    }
    match decompress(&coded, data.len() as u64) {
        Ok(back) if back == data => Some(coded),
        _ => None,
    }
}

/// The file back from its compressed form; `size` is the recorded size of the file, which the
/// output may not exceed.
pub fn decompress(coded: &[u8], size: u64) -> Result<Vec<u8>, CompressError> {
    let cap = usize::try_from(size.min(MAX_SIZE as u64)).unwrap_or(MAX_SIZE);
    let out = zstd::bulk::decompress(coded, cap)?;
    if out.len() as u64 != size {
        return Err(CompressError::Size {
            got: out.len(),
            want: size,
        });
    }
    Ok(out)
}

/// Compresses bytes that must be stored smaller whatever they hold (the archive's index):
/// the strongest level up to 16 MiB, a quicker one above. The frame records its content size.
pub fn squeeze(data: &[u8]) -> Result<Vec<u8>, CompressError> {
    let level = if data.len() <= 16 << 20 { 19 } else { 9 };
    Ok(zstd::bulk::compress(data, level)?)
}

/// Bytes back from [`squeeze`], refusing output over `limit` bytes as it is produced (a small
/// hostile frame cannot make a huge allocation).
pub fn unsqueeze(coded: &[u8], limit: u64) -> Result<Vec<u8>, CompressError> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::with_buffer(coded)?;
    let mut out = Vec::new();
    decoder
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(CompressError::Limit(limit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_compressed_and_comes_back() {
        let text: Vec<u8> = (0..2000)
            .flat_map(|i| format!("<rdf:li>photo {i} rating=\"3\"</rdf:li>\n").into_bytes())
            .collect();
        assert!(promising(&text[..PROBE.min(text.len())]));
        let coded = compress(&text).unwrap();
        assert!(
            coded.len() * 5 < text.len(),
            "{} of {}",
            coded.len(),
            text.len()
        );
        assert_eq!(decompress(&coded, text.len() as u64).unwrap(), text);
        // A wrong recorded size is an error, whichever way it is wrong.
        assert!(decompress(&coded, text.len() as u64 - 1).is_err());
        assert!(decompress(&coded, text.len() as u64 + 1).is_err());
        // Damaged data is an error, not a panic.
        let mut bad = coded.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        bad.truncate(bad.len() - 3);
        assert!(decompress(&bad, text.len() as u64).is_err());
    }

    #[test]
    fn incompressible_and_tiny_files_are_left_alone() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(!promising(&noise[..PROBE]));
        assert!(compress(&noise).is_none());
        assert!(compress(b"hello hello hello").is_none());
    }

    #[test]
    fn squeezed_bytes_come_back_within_their_limit() {
        let index: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("holiday/img_{i:04}.jpg").into_bytes())
            .collect();
        let coded = squeeze(&index).unwrap();
        assert!(coded.len() * 4 < index.len(), "{}", coded.len());
        assert_eq!(unsqueeze(&coded, index.len() as u64).unwrap(), index);
        // One byte more than the limit is refused, as is a damaged or cut frame.
        assert!(matches!(
            unsqueeze(&coded, index.len() as u64 - 1),
            Err(CompressError::Limit(_))
        ));
        let mut bad = coded.clone();
        bad.truncate(bad.len() / 2);
        assert!(unsqueeze(&bad, 1 << 20).is_err());
        assert!(unsqueeze(b"not zstd at all", 1 << 20).is_err());
        // A frame that inflates far past the limit stops at the limit.
        let zeros = squeeze(&vec![0u8; 8 << 20]).unwrap();
        assert!(zeros.len() < 4096);
        assert!(matches!(
            unsqueeze(&zeros, 1 << 20),
            Err(CompressError::Limit(_))
        ));
    }
}
