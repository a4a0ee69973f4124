//! Scoring every image of an archive against the original files.

use crate::archive::{Archive, EntryKind};
use crate::frames::{self, FrameError};
use crate::pixels::{Decoded, Picture};
use crate::quality;
use crate::render::{self, OutputFormat};
use crate::unpack::safe_relative;
use std::path::Path;
use std::sync::Mutex;
use xxhash_rust::xxh3::xxh3_64;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageScore {
    pub path: String,
    pub ssimulacra2: f64,
    pub psnr: f64,
    /// For images with alpha: the largest difference of the served alpha from the original's.
    pub alpha_max_diff: Option<u8>,
    /// For images coded in tiles: the worst score of the bands across the seams.
    pub seam: Option<f64>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub images: Vec<ImageScore>,
    /// Verbatim files identical to the originals.
    pub verbatim_identical: usize,
    /// Entries that could not be checked or differ, with the reason.
    pub problems: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub p10: f64,
    pub mean: f64,
    pub min_psnr: f64,
    /// Images with alpha, and the largest alpha difference among them.
    pub alpha_images: usize,
    pub alpha_max_diff: u8,
    /// Images coded in tiles, and the worst seam-band score among them.
    pub tiled_images: usize,
    pub min_seam: Option<f64>,
}

impl VerifyReport {
    pub fn summary(&self) -> Option<Summary> {
        if self.images.is_empty() {
            return None;
        }
        let mut s: Vec<f64> = self.images.iter().map(|i| i.ssimulacra2).collect();
        s.sort_by(f64::total_cmp);
        let p10 = s[(s.len() - 1) / 10];
        Some(Summary {
            count: s.len(),
            min: s[0],
            p10,
            mean: s.iter().sum::<f64>() / s.len() as f64,
            min_psnr: self
                .images
                .iter()
                .map(|i| i.psnr)
                .fold(f64::INFINITY, f64::min),
            alpha_images: self
                .images
                .iter()
                .filter(|i| i.alpha_max_diff.is_some())
                .count(),
            alpha_max_diff: self
                .images
                .iter()
                .filter_map(|i| i.alpha_max_diff)
                .max()
                .unwrap_or(0),
            tiled_images: self.images.iter().filter(|i| i.seam.is_some()).count(),
            min_seam: self.images.iter().filter_map(|i| i.seam).reduce(f64::min),
        })
    }

    /// The `n` lowest-scoring images.
    pub fn worst(&self, n: usize) -> Vec<ImageScore> {
        let mut v = self.images.clone();
        v.sort_by(|a, b| a.ssimulacra2.total_cmp(&b.ssimulacra2));
        v.truncate(n);
        v
    }
}

/// Why an image file could not be decoded by [`load_picture`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not an image (no known image format in its first bytes)")]
    NotAnImage,
    #[error("{0}")]
    Decode(#[from] image::ImageError),
}

/// Decodes an image file the way `verify` decodes the originals it scores against: format
/// recognised from the content (not the name), pack's decode limits, 8-bit colour and the
/// alpha plane when the file has one. No EXIF orientation is applied (the archive stores and
/// serves pixels as the file has them, with the same EXIF).
pub fn load_picture(path: &Path) -> Result<Picture, LoadError> {
    decode_file(path, false)
}

/// [`load_picture`], then turned upright as the file's EXIF orientation says: what a viewer
/// shows. For comparing with a decoder that applies the orientation to the pixels (djxl).
pub fn load_picture_upright(path: &Path) -> Result<Picture, LoadError> {
    decode_file(path, true)
}

fn decode_file(path: &Path, upright: bool) -> Result<Picture, LoadError> {
    decode(image::ImageReader::open(path)?, upright)
}

/// Decodes an image from `reader` as [`load_picture`] says (and turned upright if asked).
fn decode<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
    upright: bool,
) -> Result<Picture, LoadError> {
    use image::ImageDecoder;
    let mut reader = reader.with_guessed_format()?;
    if reader.format().is_none() {
        return Err(LoadError::NotAnImage);
    }
    reader.limits(crate::pack::decode_limits());
    if !upright {
        return Ok(Picture::from_dynamic(reader.decode()?));
    }
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation().ok();
    let mut img = image::DynamicImage::from_decoder(decoder)?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(Picture::from_dynamic(img))
}

fn load_original(path: &Path) -> Result<Picture, String> {
    load_picture(path).map_err(|e| format!("original: {e}"))
}

/// Decodes an image held in memory as [`load_picture`] decodes a file, under pack's decode
/// limits: what the archive gives back (a rendered image, a recoded JPEG), and the candidates
/// `jpegthin` scores. A damaged or hostile archive's file that claims huge dimensions is a
/// problem named for its image, not an allocation that brings verify down.
pub(crate) fn decode_bytes(bytes: &[u8]) -> Result<Picture, LoadError> {
    decode(image::ImageReader::new(std::io::Cursor::new(bytes)), false)
}

/// Decodes every image as unpack would give it back and scores it against `originals`.
pub fn verify(
    archive: &Archive,
    originals: &Path,
    format: OutputFormat,
) -> Result<VerifyReport, FrameError> {
    let index = &archive.index;
    let report = Mutex::new(VerifyReport::default());
    let problem = |path: String, why: String| {
        log::warn!("{path}: {why}");
        if let Ok(mut r) = report.lock() {
            r.problems.push((path, why));
        }
    };
    // JPEGs recoded in their own DCT: scored against the originals (in parallel, below).
    let mut thinned = Vec::new();
    for (_, e, blob) in index.kept_in_archive_order() {
        let Some(rel) = safe_relative(&e.path) else {
            problem(e.path_lossy(), "unsafe path".into());
            continue;
        };
        if blob.is_thinned() {
            thinned.push((e, blob, rel));
            continue;
        }
        // read_file checks the stored bytes (and a decompressed file) against the index.
        let stored = archive.read_file(blob).map(|b| xxh3_64(&b));
        let orig = std::fs::read(originals.join(rel)).map(|b| xxh3_64(&b));
        match (stored, orig) {
            (Ok(a), Ok(b)) if a == b && a == blob.file_hash() => {
                if let Ok(mut r) = report.lock() {
                    r.verbatim_identical += 1;
                }
            }
            (Ok(_), Ok(_)) => problem(
                e.path_lossy(),
                "stored bytes differ from the original".into(),
            ),
            (Err(err), _) => problem(e.path_lossy(), format!("archive: {err}")),
            (_, Err(err)) => problem(e.path_lossy(), format!("original: {err}")),
        }
    }
    let scored = crate::par::map(&thinned, |(e, blob, rel)| {
        let served = archive
            .read_file(blob)
            .map_err(|err| format!("archive: {err}"))?;
        let original = load_original(&originals.join(rel))?;
        let back =
            decode_bytes(&served).map_err(|err| format!("recoded JPEG does not decode: {err}"))?;
        if original.rgb.dimensions() != back.rgb.dimensions() {
            return Err("recoded JPEG has other dimensions than the original".to_string());
        }
        let s = quality::score_picture(&original, &back).map_err(|err| err.to_string())?;
        Ok(ImageScore {
            path: e.path_lossy(),
            ssimulacra2: s.ssimulacra2,
            psnr: s.psnr,
            alpha_max_diff: None,
            seam: None,
        })
    })
    .map_err(|_| FrameError::Internal("a worker scoring recoded JPEGs panicked".into()))?;
    for ((e, _, _), result) in thinned.iter().zip(scored) {
        match result {
            Ok(score) => {
                if let Ok(mut r) = report.lock() {
                    r.images.push(score);
                }
            }
            Err(why) => problem(e.path_lossy(), why),
        }
    }
    // What the folder holds and the archive does not (added since, or packed elsewhere).
    let packed: std::collections::HashSet<&[u8]> =
        index.entries.iter().map(|e| e.path.as_slice()).collect();
    // The archive itself may lie in the folder (packed into its own album), and another
    // pack's unfinished file of its name: neither is a file of the album.
    let exclude = crate::album::Exclude::archive(archive.path());
    match crate::album::walk(originals, &exclude) {
        Ok(found) => {
            for item in found.items {
                if !packed.contains(item.rel.as_slice()) {
                    problem(
                        crate::archive::printable_path(&item.rel),
                        "in the folder, not in the archive".into(),
                    );
                }
            }
        }
        Err(crate::album::ScanError::Empty(_)) => {}
        Err(e) => problem(originals.display().to_string(), e.to_string()),
    }
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let renderer = render::Renderer::for_archive(&index.renderer);
    let score_image = |i: usize, pic: Decoded| {
        let e = &index.entries[i];
        let EntryKind::Image(img) = &e.kind else {
            return;
        };
        let result = (|| -> Result<ImageScore, String> {
            let rel = safe_relative(&e.path).ok_or("unsafe path")?;
            let original = load_original(&originals.join(rel))?;
            let file =
                render::render_decoded(img, &pic, format, renderer).map_err(|e| e.to_string())?;
            drop(pic);
            let served =
                decode_bytes(&file).map_err(|e| format!("rendered file does not decode: {e}"))?;
            let tiles: Vec<_> = img
                .tiles
                .iter()
                .map(|t| (t.x, t.y, t.width, t.height))
                .collect();
            if original.rgb.dimensions() != served.rgb.dimensions() {
                return Err(format!(
                    "served image is {}x{}, the original {}x{}",
                    served.rgb.width(),
                    served.rgb.height(),
                    original.rgb.width(),
                    original.rgb.height()
                ));
            }
            let s = quality::score_tiled(&original, &served, &tiles).map_err(|e| e.to_string())?;
            let seam = quality::seam_score(&original.over(0), &served.over(0), &tiles)
                .map_err(|e| e.to_string())?;
            Ok(ImageScore {
                path: e.path_lossy(),
                ssimulacra2: s.ssimulacra2,
                psnr: s.psnr,
                alpha_max_diff: original
                    .alpha
                    .as_ref()
                    .map(|a| quality::alpha_max_diff(Some(a), served.alpha.as_ref())),
                seam,
            })
        })();
        match result {
            Ok(score) => {
                if let Some(d) = score.alpha_max_diff.filter(|&d| d > 0) {
                    problem(
                        e.path_lossy(),
                        format!("alpha differs from the original (by up to {d})"),
                    );
                }
                if let Ok(mut r) = report.lock() {
                    r.images.push(score);
                }
            }
            Err(why) => problem(e.path_lossy(), why),
        }
    };
    for (i, why) in frames::each_image(
        archive,
        2,
        workers,
        |_| true,
        |img| renderer.uses_planes(img, format),
        score_image,
    )? {
        problem(index.entries[i].path_lossy(), why);
    }
    let mut r = report
        .into_inner()
        .map_err(|_| FrameError::Internal("report lock poisoned".into()))?;
    r.images.sort_by(|a, b| a.path.cmp(&b.path));
    r.problems.sort();
    Ok(r)
}

#[cfg(test)]
mod tests {
    /// A served JPEG whose header claims 65,535 × 65,535 pixels is refused by the decode
    /// limits before any pixel buffer is made.
    #[test]
    fn served_files_claiming_huge_dimensions_are_refused() {
        let img =
            image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 16, y as u8 * 16, 7]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .unwrap();
        assert_eq!(
            super::decode_bytes(&jpeg).unwrap().rgb.dimensions(),
            (16, 16)
        );
        // SOF0: FF C0, length, precision, then height and width.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let err = super::decode_bytes(&jpeg).unwrap_err();
        assert!(
            matches!(err, super::LoadError::Decode(image::ImageError::Limits(_))),
            "{err}"
        );
    }
}
