//! The deterministic renderer: decoded pixels → a complete image file.
//!
//! Unpack and the mount use it, and pack runs it on every image to record the exact size of
//! the file it makes (`Rendered`), so the mount knows every size without decoding. Any change
//! to its output must change [`RENDERER_ID`].

use crate::archive::{ColorModel, ImageEntry, ImageFormat, MetaBlock};
use crate::meta;
use crate::pixels::Picture;
use image::RgbImage;
use std::io::Cursor;

/// JPEG quality of rendered JPEGs (baseline, 4:4:4, standard Huffman tables, accurate DCT).
pub const JPEG_QUALITY: u8 = 97;

/// Identifies the renderer's exact output. Bump when anything below changes the bytes.
pub const RENDERER_ID: &str =
    "av1pack-render-2;png-0.18.1-fast;libjpeg-turbo-3.1.0-q97-444-islow;image-0.25.10";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The original file's format (PNG stays PNG, JPEG stays JPEG...).
    Original,
    /// Lossless PNG of exactly what was decoded.
    Png,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
    #[error("JPEG encoding failed: {0}")]
    Jpeg(#[from] turbojpeg::Error),
    #[error("image encoding failed: {0}")]
    Image(#[from] image::ImageError),
    #[error("image of {0}x{1} is too large for this format")]
    TooLarge(u32, u32),
}

/// Renders `pic` (the decoded image, original size) as the file for `entry`.
pub fn render(
    entry: &ImageEntry,
    pic: &Picture,
    format: OutputFormat,
) -> Result<Vec<u8>, RenderError> {
    let target = match format {
        OutputFormat::Png => ImageFormat::Png,
        OutputFormat::Original => entry.format,
    };
    let rgb = &pic.rgb;
    let grey = entry.color == ColorModel::Grey;
    let pixels: std::borrow::Cow<'_, [u8]> = if grey {
        std::borrow::Cow::Owned(to_luma(rgb))
    } else {
        std::borrow::Cow::Borrowed(rgb.as_raw())
    };
    let (w, h) = rgb.dimensions();
    // JPEG has no alpha (and a JPEG original never had one).
    if let (Some(alpha), false) = (&pic.alpha, target == ImageFormat::Jpeg) {
        if alpha.dimensions() != (w, h) {
            return Err(RenderError::TooLarge(alpha.width(), alpha.height()));
        }
        let channels = if grey { 1 } else { 3 };
        let mut with_alpha = Vec::with_capacity(pixels.len() / channels * (channels + 1));
        for (px, &a) in pixels.chunks_exact(channels).zip(alpha.as_raw()) {
            with_alpha.extend_from_slice(px);
            with_alpha.push(a);
        }
        return match target {
            ImageFormat::Bmp | ImageFormat::Tiff | ImageFormat::WebP => {
                let fmt = match target {
                    ImageFormat::Bmp => image::ImageFormat::Bmp,
                    ImageFormat::Tiff => image::ImageFormat::Tiff,
                    _ => image::ImageFormat::WebP,
                };
                // These writers take RGBA only (grey + alpha goes out as RGBA).
                let rgba = if grey {
                    with_alpha
                        .chunks_exact(2)
                        .flat_map(|p| [p[0], p[0], p[0], p[1]])
                        .collect()
                } else {
                    with_alpha
                };
                let img =
                    image::RgbaImage::from_raw(w, h, rgba).ok_or(RenderError::TooLarge(w, h))?;
                let mut out = Cursor::new(Vec::new());
                image::DynamicImage::ImageRgba8(img).write_to(&mut out, fmt)?;
                Ok(out.into_inner())
            }
            _ => png_file(&with_alpha, w, h, grey, true, &entry.metadata),
        };
    }
    match target {
        ImageFormat::Png => png_file(&pixels, w, h, grey, false, &entry.metadata),
        ImageFormat::Jpeg => {
            let jpeg = jpeg_file(&pixels, w, h, grey)?;
            Ok(meta::splice_jpeg(&jpeg, &entry.metadata))
        }
        ImageFormat::Bmp
        | ImageFormat::Tiff
        | ImageFormat::WebP
        | ImageFormat::Gif
        | ImageFormat::Other => {
            let fmt = match target {
                ImageFormat::Bmp => image::ImageFormat::Bmp,
                ImageFormat::Tiff => image::ImageFormat::Tiff,
                ImageFormat::WebP => image::ImageFormat::WebP,
                // Formats we do not write come out as PNG.
                _ => return png_file(&pixels, w, h, grey, false, &entry.metadata),
            };
            let img = if grey {
                image::DynamicImage::ImageLuma8(
                    image::GrayImage::from_raw(w, h, pixels.into_owned())
                        .ok_or(RenderError::TooLarge(w, h))?,
                )
            } else {
                image::DynamicImage::ImageRgb8(rgb.clone())
            };
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, fmt)?;
            Ok(out.into_inner())
        }
    }
}

/// A baseline JPEG through libjpeg-turbo (the copy bundled with turbojpeg-sys, pinned in
/// Cargo.toml). Its accurate integer DCT gives the same bytes with or without SIMD, so the size
/// pack records holds on every x86-64 and ARM machine. Huffman tables are the standard ones:
/// optimising them saves about 5 % of the file but more than doubles the time (measured in
/// docs/BENCHMARKS.md), and the mount renders on every cold read.
fn jpeg_file(pixels: &[u8], w: u32, h: u32, grey: bool) -> Result<Vec<u8>, RenderError> {
    if w > 65_535 || h > 65_535 {
        return Err(RenderError::TooLarge(w, h));
    }
    let (format, subsamp) = if grey {
        (turbojpeg::PixelFormat::GRAY, turbojpeg::Subsamp::Gray)
    } else {
        (turbojpeg::PixelFormat::RGB, turbojpeg::Subsamp::None)
    };
    let image = turbojpeg::Image {
        pixels,
        width: w as usize,
        pitch: w as usize * format.size(),
        height: h as usize,
        format,
    };
    let mut c = turbojpeg::Compressor::new()?;
    c.set_quality(i32::from(JPEG_QUALITY))?;
    c.set_subsamp(subsamp)?;
    c.set_optimize(false)?;
    Ok(c.compress_to_vec(image)?)
}

fn png_file(
    pixels: &[u8],
    w: u32,
    h: u32,
    grey: bool,
    alpha: bool,
    metadata: &[MetaBlock],
) -> Result<Vec<u8>, RenderError> {
    let mut buf = Vec::with_capacity(pixels.len() / 2 + 1024);
    {
        let mut enc = png::Encoder::new(&mut buf, w, h);
        enc.set_color(match (grey, alpha) {
            (true, false) => png::ColorType::Grayscale,
            (true, true) => png::ColorType::GrayscaleAlpha,
            (false, false) => png::ColorType::Rgb,
            (false, true) => png::ColorType::Rgba,
        });
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header()?;
        for block in metadata {
            if let MetaBlock::PngChunk { kind, data } = block {
                writer.write_chunk(png::chunk::ChunkType(*kind), data)?;
            }
        }
        writer.write_image_data(pixels)?;
        writer.finish()?;
    }
    Ok(buf)
}

/// Luma of decoded pixels, with the same matrix the encoder used (grey in, grey out).
fn to_luma(rgb: &RgbImage) -> Vec<u8> {
    rgb.as_raw()
        .chunks_exact(3)
        .map(|p| {
            let v =
                19595 * u32::from(p[0]) + 38470 * u32::from(p[1]) + 7471 * u32::from(p[2]) + 32768;
            (v >> 16).min(255) as u8
        })
        .collect()
}

/// File extension for `--format png` output paths.
pub fn png_path(path: &[u8]) -> Vec<u8> {
    let name_start = path.iter().rposition(|&b| b == b'/').map_or(0, |p| p + 1);
    let stem_end = path[name_start..]
        .iter()
        .rposition(|&b| b == b'.')
        .filter(|&p| p > 0)
        .map_or(path.len(), |p| name_start + p);
    let mut out = path[..stem_end].to_vec();
    out.extend_from_slice(b".png");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_paths() {
        assert_eq!(png_path(b"a/b.jpg"), b"a/b.png");
        assert_eq!(png_path(b"a.b/c"), b"a.b/c.png");
        assert_eq!(png_path(b".hidden"), b".hidden.png");
        assert_eq!(png_path(b"x.tar.jpeg"), b"x.tar.png");
    }
}
