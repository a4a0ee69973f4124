//! Lossless recompression of JPEG files kept as they are, with Lepton (the `lepton_jpeg`
//! crate; the only module that uses it). A JPEG's entropy-coded data is re-coded with a
//! stronger model; decoding gives back the original file bit for bit. Pack only stores the
//! Lepton form after decoding it again and comparing with the file; the archive records the
//! original's size and hash, checked after every decode.

use lepton_jpeg::{EnabledFeatures, DEFAULT_THREAD_POOL};
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Files smaller than this are not worth a try (Lepton's own header is a few hundred bytes).
const MIN_SIZE: usize = 4 << 10;
/// Files larger than this are stored as they are (both forms are held in memory at once).
pub const MAX_SIZE: usize = 128 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LeptonError {
    #[error("Lepton decoding failed: {0}")]
    Decode(String),
    #[error("Lepton decoding gave {got} bytes instead of {want}")]
    Size { got: u64, want: u64 },
}

/// Whether `data` starts like a JPEG file (SOI followed by a marker).
pub fn looks_like_jpeg(data: &[u8]) -> bool {
    data.len() >= MIN_SIZE && data.len() <= MAX_SIZE && data.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// The Lepton form of a JPEG file, if Lepton takes it, gives it back exactly (checked here by
/// decoding it with the decoder the archive's readers use), and it is smaller. `None`
/// otherwise: the file is then stored as it is.
pub fn compress(jpeg: &[u8]) -> Option<Vec<u8>> {
    checked(encode(jpeg)?, jpeg)
}

/// `coded` (from [`encode`]) if it decodes to `jpeg` exactly and is smaller: what
/// [`compress`] gives, for a file whose Lepton form was made before (to measure its size).
pub fn checked(coded: Vec<u8>, jpeg: &[u8]) -> Option<Vec<u8>> {
    if coded.len() >= jpeg.len() {
        return None;
    }
    let back = decompress(&coded, jpeg.len() as u64).ok()?;
    (back == jpeg).then_some(coded)
}

/// Lepton's encoder alone, without the decode that checks it (pack's budget needs the size;
/// storing goes through [`checked`] or [`compress`]), panics caught. `None` when Lepton does
/// not take the file.
pub fn encode(jpeg: &[u8]) -> Option<Vec<u8>> {
    if !looks_like_jpeg(jpeg) {
        return None;
    }
    encode_any(jpeg)
}

/// [`encode`] for a JPEG of any size up to [`MAX_SIZE`]: a residual of a few hundred bytes
/// (`jpegthin::residual`) still comes out smaller.
pub fn encode_any(jpeg: &[u8]) -> Option<Vec<u8>> {
    if jpeg.len() > MAX_SIZE || !jpeg.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return None;
    }
    let features = EnabledFeatures::compat_lepton_vector_write();
    let mut out = Cursor::new(Vec::with_capacity(jpeg.len()));
    let done = catch_unwind(AssertUnwindSafe(|| {
        lepton_jpeg::encode_lepton(
            &mut Cursor::new(jpeg),
            &mut out,
            &features,
            &DEFAULT_THREAD_POOL,
        )
    }));
    match done {
        Ok(Ok(_)) => Some(out.into_inner()),
        Ok(Err(e)) => {
            log::debug!("Lepton does not take this JPEG: {e}");
            None
        }
        Err(_) => {
            log::debug!("Lepton failed on this JPEG");
            None
        }
    }
}

/// The original JPEG file from its Lepton form; `size` is the original's length.
pub fn decompress(data: &[u8], size: u64) -> Result<Vec<u8>, LeptonError> {
    if size > MAX_SIZE as u64 {
        return Err(LeptonError::Size { got: 0, want: size });
    }
    let features = EnabledFeatures::compat_lepton_vector_read();
    let out = catch_unwind(AssertUnwindSafe(|| {
        let mut out = Vec::with_capacity(size as usize);
        lepton_jpeg::decode_lepton(
            &mut Cursor::new(data),
            &mut out,
            &features,
            &DEFAULT_THREAD_POOL,
        )
        .map(|_| out)
    }));
    let out = match out {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(LeptonError::Decode(e.to_string())),
        Err(_) => return Err(LeptonError::Decode("the decoder failed".into())),
    };
    if out.len() as u64 != size {
        return Err(LeptonError::Size {
            got: out.len() as u64,
            want: size,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(160, 120, |x, y| {
            image::Rgb([
                (x * 3 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let mut out = Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .expect("encode test JPEG");
        out.into_inner()
    }

    #[test]
    fn round_trip_is_bit_exact_and_smaller() {
        let jpeg = sample_jpeg();
        let coded = compress(&jpeg).expect("Lepton takes a baseline JPEG");
        assert!(coded.len() < jpeg.len());
        assert_eq!(decompress(&coded, jpeg.len() as u64).unwrap(), jpeg);
    }

    #[test]
    fn encode_then_check_is_compress() {
        let jpeg = sample_jpeg();
        let coded = compress(&jpeg).expect("Lepton takes a baseline JPEG");
        let unchecked = encode(&jpeg).expect("Lepton takes a baseline JPEG");
        assert_eq!(unchecked, coded);
        assert_eq!(checked(unchecked.clone(), &jpeg), Some(coded));
        // Another file's Lepton form does not pass for this one.
        let mut other = jpeg.clone();
        let n = other.len();
        other[n / 2] ^= 0x10;
        assert_eq!(checked(unchecked, &other), None);
        assert_eq!(encode(b"not a jpeg"), None);
    }

    #[test]
    fn not_a_jpeg_is_left_alone() {
        assert!(compress(&[0u8; 10_000]).is_none());
        let mut truncated = sample_jpeg();
        truncated.truncate(truncated.len() / 2);
        // Whatever Lepton makes of a truncated file, it is only used if it decodes exactly.
        if let Some(c) = compress(&truncated) {
            assert_eq!(decompress(&c, truncated.len() as u64).unwrap(), truncated);
        }
    }

    #[test]
    fn truncated_data_is_an_error_not_a_panic() {
        let jpeg = sample_jpeg();
        let coded = compress(&jpeg).expect("Lepton takes a baseline JPEG");
        for cut in [0, 10, coded.len() / 2, coded.len() - 1] {
            assert!(
                decompress(&coded[..cut], jpeg.len() as u64).is_err(),
                "{cut} of {} bytes decoded",
                coded.len()
            );
        }
    }
}
