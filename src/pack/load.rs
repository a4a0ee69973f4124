//! Reading album images for coding: decode, metadata within the album's budget, limits on
//! untrusted sizes.

use super::*;

/// The album's files as the tracks read them: each one, what its probe found, and the
/// metadata budget their loaders share.
pub(super) struct AlbumFiles<'a> {
    pub(super) items: &'a [Item],
    pub(super) probes: &'a [Option<Probe>],
    pub(super) metadata: &'a MetadataBudget,
}

/// What is left of [`PackOptions::metadata_budget`], shared by the tracks' loaders.
pub(super) struct MetadataBudget {
    pub(super) limit: u64,
    pub(super) left: std::sync::atomic::AtomicU64,
}

impl MetadataBudget {
    pub(super) fn new(limit: u64) -> Self {
        MetadataBudget {
            limit,
            left: std::sync::atomic::AtomicU64::new(limit),
        }
    }

    /// Takes `bytes` from what is left; `Err` with the reason to keep the image when they do
    /// not fit (an image that is then kept anyway has still used its share: the index never
    /// holds more than the limit).
    fn take(&self, bytes: u64) -> Result<(), String> {
        use std::sync::atomic::Ordering::Relaxed;
        if bytes == 0 {
            return Ok(());
        }
        self.left
            .fetch_update(Relaxed, Relaxed, |left| left.checked_sub(bytes))
            .map(|_| ())
            .map_err(|_| {
                format!(
                    "its {bytes} bytes of metadata would take the album's past {} in the index, \
                     which the mount holds in memory",
                    crate::human_bytes(self.limit)
                )
            })
    }
}

/// Reads, hashes and decodes one image; its metadata takes its share of `budget`.
pub(super) fn load(item: &Item, probe: &Probe, budget: &MetadataBudget) -> Result<Decoded, String> {
    let Probe::Image {
        format,
        width,
        height,
        mut color,
        alpha,
    } = *probe
    else {
        return Err("not an image".into());
    };
    let bytes = std::fs::read(&item.abs).map_err(|e| format!("could not read: {e}"))?;
    let metadata = match format {
        ImageFormat::Jpeg => {
            let (blocks, facts) = meta::jpeg_blocks(&bytes);
            if facts.components == 4 {
                return Err("CMYK JPEG: kept as is".into());
            }
            if facts.chroma_halved && color == ColorModel::Rgb {
                color = ColorModel::Rgb420;
            }
            // A truncated JPEG is kept exactly as it is; a few bytes after the image (often a
            // newline) travel as a trailer, more (an embedded video...) keep the file verbatim.
            let end = meta::jpeg_end(&bytes).ok_or("truncated JPEG (no end-of-image marker)")?;
            let mut blocks = blocks;
            if end < bytes.len() {
                if bytes.len() - end > MAX_TRAILER {
                    return Err(format!(
                        "{} bytes of data after the image",
                        bytes.len() - end
                    ));
                }
                blocks.push(archive::MetaBlock::Trailer(bytes[end..].to_vec()));
            }
            blocks
        }
        ImageFormat::Png => meta::png_blocks(&bytes),
        ImageFormat::WebP => meta::webp_blocks(&bytes),
        ImageFormat::Tiff => match meta::tiff_meta(io::Cursor::new(&bytes)) {
            meta::TiffMeta::Carried(blocks) => blocks,
            meta::TiffMeta::Kept(why) => return Err(why),
        },
        _ => Vec::new(),
    };
    budget.take(archive::metadata_bytes(&metadata))?;
    let img_format = image_format(format).ok_or("unsupported format")?;
    let mut reader = image::ImageReader::with_format(io::Cursor::new(&bytes), img_format);
    reader.limits(decode_limits());
    let decoded = reader
        .decode()
        .map_err(|e| format!("could not decode: {e}"))?;
    if decoded.width() != width || decoded.height() != height {
        return Err(format!(
            "decoded size {}x{} differs from the header's {width}x{height}",
            decoded.width(),
            decoded.height()
        ));
    }
    if decoded.color().has_alpha() != alpha {
        return Err("the image's alpha channel differs from its header".into());
    }
    // `into_*` reuses the decoded buffer when it already has the right layout (no copy of a
    // 12 MP photo on the hot path).
    let (rgb, alpha) = match (color, alpha) {
        // 16-bit samples are rounded to 8 here: what is coded, and what the score compares.
        (c, false) if c.is_grey() => (pixels::grey_to_rgb(&decoded.into_luma8()), None),
        (_, false) => (pixels::into_rgb8(decoded), None),
        (_, true) => {
            let pic = Picture::from_dynamic(decoded);
            (pic.rgb, pic.alpha)
        }
    };
    let entry = ImageEntry {
        format,
        color,
        width,
        height,
        original_size: bytes.len() as u64,
        original_hash: xxh3_64(&bytes),
        tiles: Vec::new(),
        alpha: Vec::new(),
        metadata,
        rendered: Rendered { size: 0, hash: 0 },
        score: None,
    };
    let file_size = bytes.len() as u64;
    Ok(Decoded {
        entry,
        rgb,
        alpha,
        file_size,
    })
}

/// Limits for decoding untrusted images: sizes beyond the video path are refused early.
pub fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(album::MAX_SIDE);
    limits.max_image_height = Some(album::MAX_SIDE);
    limits.max_alloc = Some(2 << 30);
    limits
}
