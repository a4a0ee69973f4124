//! The deterministic renderer: decoded pixels → a complete image file.
//!
//! Unpack and the mount use it, and pack runs it on every image to record the exact size of
//! the file it makes (`Rendered`), so the mount knows every size without decoding. Any change
//! to its output must change [`RENDERER_ID`].

use crate::archive::{ColorModel, ImageEntry, ImageFormat, MetaBlock, TiffDir};
use crate::meta;
use crate::pixels::{Decoded, Picture, YccRef};
use image::RgbImage;
use std::io::Cursor;

/// JPEG quality of rendered JPEGs (baseline, 4:4:4, or 4:2:0 where the original was,
/// standard Huffman tables, accurate DCT).
pub const JPEG_QUALITY: u8 = 97;

/// Identifies the renderer's exact output. Bump when anything below changes the bytes.
pub const RENDERER_ID: &str =
    "av1pack-render-6;png-0.18.1-fast;libjpeg-turbo-3.1.0-q97-444|420-islow;\
     image-0.25.10;tiff-0.11.3-deflatefast-hpred-tags;webp-vp8x-chunks";

/// The renderer before TIFFs and WebPs carried their original's metadata (archives up to
/// format version 8).
pub const RENDERER_V5_ID: &str =
    "av1pack-render-5;png-0.18.1-fast;libjpeg-turbo-3.1.0-q97-444|420-islow;\
     image-0.25.10;tiff-0.11.3-deflate6-hpred";

/// The renderer before TIFFs were written compressed (archives up to 2026-12-04).
pub const RENDERER_V4_ID: &str =
    "av1pack-render-4;png-0.18.1-fast;libjpeg-turbo-3.1.0-q97-444|420-islow;image-0.25.10";

/// The renderer before JPEGs of 4:2:0 originals were made 4:2:0 (archives of 2026-12-01).
pub const RENDERER_V3_ID: &str =
    "av1pack-render-3;png-0.18.1-fast;libjpeg-turbo-3.1.0-q97-444-islow;image-0.25.10";

/// The renderer before JPEGs were made from the decoded planes (archives of 2026-11).
pub const RENDERER_V2_ID: &str =
    "av1pack-render-2;png-0.18.1-fast;libjpeg-turbo-3.1.0-q97-444-islow;image-0.25.10";

/// The renderers this av1pack reproduces byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Renderer {
    /// `av1pack-render-2`: every file from RGB pixels.
    V2,
    /// `av1pack-render-3`: as V2, except that the JPEG of a whole, opaque image coded as
    /// Y'CbCr is compressed straight from the decoded planes (no conversion to RGB and back).
    V3,
    /// `av1pack-render-4`: as V3, and the JPEG of an image whose original was 4:2:0
    /// ([`ColorModel::Rgb420`], index format 4) is 4:2:0 too. A version 3 index holds no such
    /// image, so V4 renders every V3 archive as V3 did; the id is kept apart so that a size
    /// recorded by this renderer is never taken for one of V3's.
    V4,
    /// `av1pack-render-5`: as V4, and TIFFs are Deflate-compressed with the horizontal
    /// predictor (V4 wrote them uncompressed: an 800×600 LZW TIFF of 198 KB came back as
    /// 480 KB).
    V5,
    /// `av1pack-render-6` ([`RENDERER_ID`]): as V5, except that a TIFF is Deflate-compressed
    /// at the fast level and holds the tags carried from its original (`MetaBlock::TiffTag`,
    /// index format 9), and a WebP its ICC, EXIF and XMP chunks (`MetaBlock::WebpChunk`).
    V6,
}

impl Renderer {
    /// The renderer whose id ([`RENDERER_ID`]) pack records.
    pub const CURRENT: Renderer = Renderer::V6;

    /// The renderer an archive's recorded sizes come from, if this av1pack has it.
    pub fn of(id: &str) -> Option<Renderer> {
        match id {
            RENDERER_ID => Some(Renderer::V6),
            RENDERER_V5_ID => Some(Renderer::V5),
            RENDERER_V4_ID => Some(Renderer::V4),
            RENDERER_V3_ID => Some(Renderer::V3),
            RENDERER_V2_ID => Some(Renderer::V2),
            _ => None,
        }
    }

    /// The renderer to serve an archive with: its own when known, else this one's.
    pub fn for_archive(id: &str) -> Renderer {
        Renderer::of(id).unwrap_or(Renderer::CURRENT)
    }

    /// How TIFFs are Deflate-compressed: not at all before V5; at the balanced level by V5;
    /// at the fast level from V6 on, as PNGs are (a 1080p photo: 1.46 MB in 26 ms, against
    /// 0.88 MB in 205 ms, which a first read through the mount waited for).
    pub fn tiff_deflate(self) -> Option<tiff::encoder::DeflateLevel> {
        use tiff::encoder::DeflateLevel;
        match self {
            Renderer::V2 | Renderer::V3 | Renderer::V4 => None,
            Renderer::V5 => Some(DeflateLevel::Balanced),
            Renderer::V6 => Some(DeflateLevel::Fast),
        }
    }

    /// Whether `entry`'s file is made from Y'CbCr planes (when its frame has them): a whole,
    /// opaque image that comes out as a JPEG.
    pub fn uses_planes(self, entry: &ImageEntry, format: OutputFormat) -> bool {
        self != Renderer::V2
            && entry.tiles.len() == 1
            && entry.alpha.is_empty()
            && target(entry, format) == ImageFormat::Jpeg
    }
}

fn target(entry: &ImageEntry, format: OutputFormat) -> ImageFormat {
    match format {
        OutputFormat::Png => ImageFormat::Png,
        OutputFormat::Original => entry.format,
    }
}

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
    #[error("TIFF encoding failed: {0}")]
    Tiff(#[from] tiff::TiffError),
    #[error("damaged index: TIFF tag {0} of type {1} with {2} bytes cannot be written")]
    TiffTag(u16, u16, usize),
    #[error("image of {0}x{1} is too large for this format")]
    TooLarge(u32, u32),
}

/// Renders `pic` (the decoded image, original size) as the file for `entry`.
pub fn render(
    entry: &ImageEntry,
    pic: &Picture,
    format: OutputFormat,
    renderer: Renderer,
) -> Result<Vec<u8>, RenderError> {
    let target = target(entry, format);
    let tiff_deflate = renderer.tiff_deflate();
    let rgb = &pic.rgb;
    let grey = entry.color.is_grey();
    let sixteen = entry.color.is_16_bit();
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
                // These writers take RGBA only (grey + alpha goes out as RGBA).
                let rgba: Vec<u8> = if grey {
                    with_alpha
                        .chunks_exact(2)
                        .flat_map(|p| [p[0], p[0], p[0], p[1]])
                        .collect()
                } else {
                    with_alpha
                };
                bitmap_file(target, rgba, 4, (w, h), &entry.metadata, tiff_deflate)
            }
            _ => png_file(&with_alpha, (w, h), (grey, true, sixteen), &entry.metadata),
        };
    }
    match target {
        ImageFormat::Png => png_file(&pixels, (w, h), (grey, false, sixteen), &entry.metadata),
        ImageFormat::Jpeg => {
            let jpeg = jpeg_file(&pixels, w, h, entry.color)?;
            Ok(meta::splice_jpeg(&jpeg, &entry.metadata))
        }
        ImageFormat::Bmp | ImageFormat::Tiff | ImageFormat::WebP => {
            let channels = if grey { 1 } else { 3 };
            let data = pixels.into_owned();
            bitmap_file(
                target,
                data,
                channels,
                (w, h),
                &entry.metadata,
                tiff_deflate,
            )
        }
        // Formats we do not write come out as PNG.
        ImageFormat::Gif | ImageFormat::Other => {
            png_file(&pixels, (w, h), (grey, false, sixteen), &entry.metadata)
        }
    }
}

/// A BMP, TIFF or (lossless) WebP of `data`, 8-bit samples, `channels` 1 (grey), 3 (RGB) or 4
/// (RGBA): a TIFF by [`tiff_file`] where the renderer compresses TIFFs (`tiff_deflate`), the
/// others by the image crate, a WebP with the original's metadata chunks.
fn bitmap_file(
    target: ImageFormat,
    data: Vec<u8>,
    channels: u8,
    (w, h): (u32, u32),
    metadata: &[MetaBlock],
    tiff_deflate: Option<tiff::encoder::DeflateLevel>,
) -> Result<Vec<u8>, RenderError> {
    let fmt = match target {
        ImageFormat::Bmp => image::ImageFormat::Bmp,
        ImageFormat::Tiff => match tiff_deflate {
            Some(level) => return tiff_file(&data, w, h, channels, metadata, level),
            None => image::ImageFormat::Tiff,
        },
        _ => image::ImageFormat::WebP,
    };
    let too_large = RenderError::TooLarge(w, h);
    let img = match channels {
        1 => image::DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(w, h, data).ok_or(too_large)?,
        ),
        3 => image::DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, data).ok_or(too_large)?),
        _ => image::DynamicImage::ImageRgba8(
            image::RgbaImage::from_raw(w, h, data).ok_or(too_large)?,
        ),
    };
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, fmt)?;
    let file = out.into_inner();
    if target != ImageFormat::WebP {
        return Ok(file);
    }
    meta::splice_webp(&file, metadata, w, h, channels == 4).ok_or(RenderError::TooLarge(w, h))
}

/// A TIFF of 8-bit samples (`channels` 1: grey, 3: RGB, 4: RGBA), one image, Deflate at
/// `level` with the horizontal predictor (uncompressed ones were 2–3 times the LZW or Deflate
/// TIFFs scanners and editors write; see [`Renderer::tiff_deflate`]). The original's carried
/// tags (`MetaBlock::TiffTag`) go into its directory, in place of the encoder's own
/// resolution.
fn tiff_file(
    data: &[u8],
    w: u32,
    h: u32,
    channels: u8,
    metadata: &[MetaBlock],
    level: tiff::encoder::DeflateLevel,
) -> Result<Vec<u8>, RenderError> {
    use tiff::encoder::{colortype, Compression, Predictor, TiffEncoder};
    let mut out = Cursor::new(Vec::new());
    let mut enc = TiffEncoder::new(&mut out)?
        .with_compression(Compression::Deflate(level))
        .with_predictor(Predictor::Horizontal);
    match channels {
        1 => tagged_tiff::<colortype::Gray8, _>(&mut enc, w, h, data, metadata)?,
        3 => tagged_tiff::<colortype::RGB8, _>(&mut enc, w, h, data, metadata)?,
        _ => tagged_tiff::<colortype::RGBA8, _>(&mut enc, w, h, data, metadata)?,
    }
    Ok(out.into_inner())
}

/// Writes one image of colour type `C` with the carried tags among `metadata`: the EXIF, GPS
/// and interoperability directories first (each before the one that points at it), then the
/// image's.
fn tagged_tiff<C, W>(
    enc: &mut tiff::encoder::TiffEncoder<W>,
    w: u32,
    h: u32,
    data: &[u8],
    metadata: &[MetaBlock],
) -> Result<(), RenderError>
where
    C: tiff::encoder::colortype::ColorType<Inner = u8>,
    W: std::io::Write + std::io::Seek,
{
    let interop = sub_directory(enc, metadata, TiffDir::Interop, &[])?;
    let exif = sub_directory(enc, metadata, TiffDir::Exif, &[(TiffDir::Interop, interop)])?;
    let gps = sub_directory(enc, metadata, TiffDir::Gps, &[])?;
    let mut image = enc.new_image::<C>(w, h)?;
    let alpha = C::BITS_PER_SAMPLE.len() == 4;
    write_tags(
        image.encoder(),
        metadata,
        TiffDir::Image,
        &[(TiffDir::Exif, exif), (TiffDir::Gps, gps)],
        alpha,
    )?;
    image.write_data(data)?;
    Ok(())
}

/// Writes directory `which` unchained, if any block is in it or it points anywhere; returns
/// its offset.
fn sub_directory<W: std::io::Write + std::io::Seek>(
    enc: &mut tiff::encoder::TiffEncoder<W>,
    metadata: &[MetaBlock],
    which: TiffDir,
    pointers: &[(TiffDir, Option<u32>)],
) -> Result<Option<u32>, RenderError> {
    let used = metadata
        .iter()
        .any(|b| matches!(b, MetaBlock::TiffTag { dir, .. } if *dir == which));
    if !used && pointers.iter().all(|(_, at)| at.is_none()) {
        return Ok(None);
    }
    let mut dir = enc.extra_directory()?;
    write_tags(&mut dir, metadata, which, pointers, false)?;
    Ok(Some(dir.finish_with_offsets()?.offset))
}

/// Writes the blocks of directory `which` into `out`, and the pointers to the directories
/// written before it (as LONGs, as most writers do). `alpha`: the image written has an alpha
/// sample.
fn write_tags<W: std::io::Write + std::io::Seek>(
    out: &mut tiff::encoder::DirectoryEncoder<'_, W, tiff::encoder::TiffKindStandard>,
    metadata: &[MetaBlock],
    which: TiffDir,
    pointers: &[(TiffDir, Option<u32>)],
    alpha: bool,
) -> Result<(), RenderError> {
    use tiff::tags::{ByteOrder, Tag, Type};
    for block in metadata {
        let MetaBlock::TiffTag {
            dir,
            tag,
            kind,
            data,
        } = block
        else {
            continue;
        };
        if *dir != which {
            continue;
        }
        // The original's ExtraSamples describes the alpha sample only where the file made has
        // one (RGBA: a grey + alpha original comes out as RGBA, with one extra sample too).
        if *tag == crate::archive::TIFF_EXTRA_SAMPLES && !(alpha && *kind == 3 && data.len() == 2) {
            continue;
        }
        // The index reader checked this; a renderer must not write a broken file either way.
        let ty = Type::from_u16(*kind)
            .filter(|_| crate::archive::tiff_tag_writable(*dir, *tag, *kind, data.len()))
            .ok_or(RenderError::TiffTag(*tag, *kind, data.len()))?;
        let mut bytes = data.clone();
        ByteOrder::LittleEndian.convert(ty, &mut bytes, ByteOrder::native());
        let entry = out.write_entry_bytes(ty, &bytes)?;
        let mut one = tiff::Directory::empty();
        one.extend([(Tag::from_u16_exhaustive(*tag), entry)]);
        out.extend_from(&one);
    }
    for (to, at) in pointers {
        if let (Some(tag), Some(at)) = (to.pointer_tag(), at) {
            out.write_tag(Tag::from_u16_exhaustive(tag), *at)?;
        }
    }
    Ok(())
}

/// Renders a decoded image as `renderer` does: a JPEG straight from Y'CbCr planes where
/// [`Renderer::uses_planes`] says so, else through RGB pixels with [`render`].
pub fn render_decoded(
    entry: &ImageEntry,
    decoded: &Decoded,
    format: OutputFormat,
    renderer: Renderer,
) -> Result<Vec<u8>, RenderError> {
    match decoded {
        Decoded::Ycc(ycc) if renderer.uses_planes(entry, format) => {
            render_planes(entry, ycc.as_ref())
        }
        Decoded::Ycc(ycc) => render(
            entry,
            &Picture::opaque(ycc.as_ref().to_rgb()),
            format,
            renderer,
        ),
        Decoded::Picture(pic) => render(entry, pic, format, renderer),
    }
}

/// The JPEG of a whole, opaque image from its decoded Y'CbCr planes (grey images from Y'
/// alone), with the original's metadata.
pub fn render_planes(entry: &ImageEntry, ycc: YccRef<'_>) -> Result<Vec<u8>, RenderError> {
    let (w, h) = (ycc.width, ycc.height);
    if w == 0 || h == 0 || w > 65_535 || h > 65_535 {
        return Err(RenderError::TooLarge(w, h));
    }
    // What libjpeg-turbo reads of each plane (the crate panics on less).
    let need = ycc.stride * (h as usize - 1) + w as usize;
    if ycc.stride < w as usize || [ycc.y, ycc.cb, ycc.cr].iter().any(|p| p.len() < need) {
        return Err(RenderError::TooLarge(w, h));
    }
    let mut c = jpeg_compressor()?;
    let jpeg = if entry.color.is_grey() {
        c.set_subsamp(turbojpeg::Subsamp::Gray)?;
        let image = turbojpeg::Image {
            pixels: ycc.y,
            width: w as usize,
            pitch: ycc.stride,
            height: h as usize,
            format: turbojpeg::PixelFormat::GRAY,
        };
        c.compress_to_vec(image)?
    } else {
        // 4:2:0 where the original was: half-size chroma, and Y' up to an even width and
        // height, which libjpeg-turbo reads (an odd size gets its last column and row
        // repeated from the image itself, never the canvas beyond it).
        let halved = entry.color == ColorModel::Rgb420;
        let chroma = halved.then(|| ycc.halved_chroma());
        let odd = halved && (w % 2 == 1 || h % 2 == 1);
        let even_luma = odd.then(|| even_plane(ycc));
        let (y_plane, y_stride) = match &even_luma {
            Some(y) => (&y[..], w as usize + w as usize % 2),
            None => (ycc.y, ycc.stride),
        };
        let (u_plane, v_plane, c_stride, subsamp) = match &chroma {
            Some((cb, cr)) => (
                &cb[..],
                &cr[..],
                (w as usize).div_ceil(2),
                turbojpeg::Subsamp::Sub2x2,
            ),
            None => (ycc.cb, ycc.cr, ycc.stride, turbojpeg::Subsamp::None),
        };
        let planes = turbojpeg::YuvPlanesImage {
            y_plane,
            u_plane,
            v_plane,
            width: w as usize,
            height: h as usize,
            y_stride,
            u_stride: c_stride,
            v_stride: c_stride,
            subsamp,
        };
        c.compress_yuv_planes_to_vec(&planes)?
    };
    Ok(meta::splice_jpeg(&jpeg, &entry.metadata))
}

/// The Y' plane of `ycc` padded to an even width and height by repeating its last column and
/// row, tightly packed.
fn even_plane(ycc: YccRef<'_>) -> Vec<u8> {
    let (w, h) = (ycc.width as usize, ycc.height as usize);
    let (w2, h2) = (w + w % 2, h + h % 2);
    let mut out = Vec::with_capacity(w2 * h2);
    for r in 0..h2 {
        let row = &ycc.y[r.min(h - 1) * ycc.stride..][..w];
        out.extend_from_slice(row);
        if w2 > w {
            out.push(row[w - 1]);
        }
    }
    out
}

fn jpeg_compressor() -> Result<turbojpeg::Compressor, RenderError> {
    let mut c = turbojpeg::Compressor::new()?;
    c.set_quality(i32::from(JPEG_QUALITY))?;
    c.set_optimize(false)?;
    Ok(c)
}

/// A baseline JPEG through libjpeg-turbo (the copy bundled with turbojpeg-sys, pinned in
/// Cargo.toml). Its accurate integer DCT gives the same bytes with or without SIMD, so the size
/// pack records holds on every x86-64 and ARM machine. Huffman tables are the standard ones:
/// optimising them saves about 5 % of the file but more than doubles the time (measured in
/// docs/BENCHMARKS.md), and the mount renders on every cold read.
/// `pixels` are grey for [`ColorModel::Grey`], else RGB; a [`ColorModel::Rgb420`] image is
/// made 4:2:0 by libjpeg-turbo's own downsampling.
fn jpeg_file(pixels: &[u8], w: u32, h: u32, color: ColorModel) -> Result<Vec<u8>, RenderError> {
    if w > 65_535 || h > 65_535 {
        return Err(RenderError::TooLarge(w, h));
    }
    let (format, subsamp) = match color {
        ColorModel::Grey | ColorModel::Grey16 => {
            (turbojpeg::PixelFormat::GRAY, turbojpeg::Subsamp::Gray)
        }
        ColorModel::Rgb | ColorModel::Rgb16 => {
            (turbojpeg::PixelFormat::RGB, turbojpeg::Subsamp::None)
        }
        ColorModel::Rgb420 => (turbojpeg::PixelFormat::RGB, turbojpeg::Subsamp::Sub2x2),
    };
    let image = turbojpeg::Image {
        pixels,
        width: w as usize,
        pitch: w as usize * format.size(),
        height: h as usize,
        format,
    };
    let mut c = jpeg_compressor()?;
    c.set_subsamp(subsamp)?;
    Ok(c.compress_to_vec(image)?)
}

/// A PNG of `pixels` (8-bit samples: grey or RGB, then alpha if `alpha`). With `sixteen`, the
/// PNG has 16 bits a sample, each one the 8-bit one × 257 (its byte twice, big-endian), which
/// decodes back to the same 8 bits.
fn png_file(
    pixels: &[u8],
    (w, h): (u32, u32),
    (grey, alpha, sixteen): (bool, bool, bool),
    metadata: &[MetaBlock],
) -> Result<Vec<u8>, RenderError> {
    let widened: Vec<u8>;
    let (pixels, depth) = if sixteen {
        widened = pixels.iter().flat_map(|&v| [v, v]).collect();
        (&widened[..], png::BitDepth::Sixteen)
    } else {
        (pixels, png::BitDepth::Eight)
    };
    let mut buf = Vec::with_capacity(pixels.len() / 2 + 1024);
    // A JPEG, WebP or TIFF original's profile, EXIF and XMP (`unpack --format png`).
    let meta::PngCarried { icc, exif, xmp } = meta::png_carried(metadata);
    {
        let mut info = png::Info::with_size(w, h);
        info.icc_profile = icc.map(std::borrow::Cow::Owned);
        info.exif_metadata = exif.map(std::borrow::Cow::Owned);
        let mut enc = png::Encoder::with_info(&mut buf, info)?;
        if let Some(xmp) = xmp {
            enc.add_itxt_chunk(meta::PNG_XMP_KEYWORD.into(), xmp)?;
        }
        enc.set_color(match (grey, alpha) {
            (true, false) => png::ColorType::Grayscale,
            (true, true) => png::ColorType::GrayscaleAlpha,
            (false, false) => png::ColorType::Rgb,
            (false, true) => png::ColorType::Rgba,
        });
        enc.set_depth(depth);
        enc.set_compression(png::Compression::Fast);
        if sixteen {
            // Doubled bytes defeat the fast coder: a 12 MP photo's 16-bit PNG came out at
            // 41.0 MB in 0.5 s with it, 20.1 MB in 1.9 s with zlib level 3 (its original: 20.5
            // MB); the 16 screenshots of 16 bits of gimp-screenshots 1.43 MB, then 0.59 MB.
            enc.set_deflate_compression(png::DeflateCompression::Level(3));
        }
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

    const FAST: tiff::encoder::DeflateLevel = tiff::encoder::DeflateLevel::Fast;

    /// The tags carried from a TIFF are in the TIFF written back, as they were read, in their
    /// directories (the resolution in place of the encoder's 1/1), beside the same pixels.
    #[test]
    fn a_tiff_written_back_holds_the_carried_tags() {
        let tag = |dir: TiffDir, tag: u16, kind: u16, data: &[u8]| MetaBlock::TiffTag {
            dir,
            tag,
            kind,
            data: data.to_vec(),
        };
        let image = TiffDir::Image;
        let blocks = vec![
            tag(image, 274, 3, &[6, 0]),
            tag(image, 282, 5, &[44, 1, 0, 0, 1, 0, 0, 0]),
            tag(image, 283, 5, &[88, 2, 0, 0, 1, 0, 0, 0]),
            tag(image, 296, 3, &[2, 0]),
            tag(image, 315, 2, b"A. Photographer\0"),
            tag(image, 33723, 7, &[0x1c, 2, 0, 0, 2, 0, 4]),
            tag(image, 34675, 7, &[1, 2, 3]),
            tag(image, 65000, 11, &1.5f32.to_le_bytes()),
            tag(TiffDir::Exif, 33434, 5, &[1, 0, 0, 0, 125, 0, 0, 0]),
            tag(TiffDir::Exif, 36867, 2, b"2020:01:01 10:00:00\0"),
            tag(TiffDir::Interop, 1, 2, b"R98\0"),
            tag(TiffDir::Gps, 0, 1, &[2, 3, 0, 0]),
        ];
        let pixels: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7) as u8).collect();
        let file = tiff_file(&pixels, 5, 4, 3, &blocks, FAST).unwrap();
        assert_eq!(
            meta::tiff_meta(Cursor::new(&file)),
            meta::TiffMeta::Carried(blocks.clone())
        );
        let back = image::load_from_memory(&file).unwrap().to_rgb8();
        assert_eq!(back.as_raw(), &pixels);
        // Without tags and at render-5's level, the file is the one render-5 made.
        let mut plain = Cursor::new(Vec::new());
        {
            use tiff::encoder::{colortype, Compression, DeflateLevel, Predictor, TiffEncoder};
            TiffEncoder::new(&mut plain)
                .unwrap()
                .with_compression(Compression::Deflate(DeflateLevel::Balanced))
                .with_predictor(Predictor::Horizontal)
                .write_image::<colortype::RGB8>(5, 4, &pixels)
                .unwrap();
        }
        let v5 = Renderer::V5.tiff_deflate().unwrap();
        assert_eq!(
            tiff_file(&pixels, 5, 4, 3, &[], v5).unwrap(),
            plain.into_inner()
        );
        // A layout tag, a pointer type or a partial value is refused, not written.
        for bad in [
            tag(image, 273, 4, &[0; 4]),
            tag(image, 34665, 13, &[8, 0, 0, 0]),
            tag(TiffDir::Exif, 40965, 4, &[8, 0, 0, 0]),
            tag(image, 282, 5, &[1, 0, 0, 0]),
        ] {
            assert!(matches!(
                tiff_file(&pixels, 5, 4, 3, &[bad], FAST),
                Err(RenderError::TiffTag(..))
            ));
        }
    }

    /// A 16-bit original's PNG has 16 bits a sample, each the decoded one × 257, alpha too, and
    /// its chunks (an sBIT of 16 bits); decoded to 8 bits it gives the decoded pixels back.
    #[test]
    fn sixteen_bit_originals_are_written_with_sixteen_bits() {
        let pixels: Vec<u8> = (0..5 * 3 * 4).map(|i| (i * 11 % 256) as u8).collect();
        let sbit = vec![MetaBlock::PngChunk {
            kind: *b"sBIT",
            data: vec![16, 16, 16, 16],
        }];
        let file = png_file(&pixels, (5, 3), (false, true, true), &sbit).unwrap();
        let mut reader = png::Decoder::new(Cursor::new(&file)).read_info().unwrap();
        let mut back = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut back).unwrap();
        assert_eq!(reader.info().bit_depth, png::BitDepth::Sixteen);
        assert_eq!(reader.info().color_type, png::ColorType::Rgba);
        let wide: Vec<u16> = back
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect();
        let want: Vec<u16> = pixels.iter().map(|&v| u16::from(v) * 257).collect();
        assert_eq!(wide, want);
        assert!(file.windows(4).any(|w| w == b"sBIT"));
        let img = image::load_from_memory(&file).unwrap();
        assert_eq!(img.color(), image::ColorType::Rgba16);
        assert_eq!(img.into_rgba8().into_raw(), pixels);
    }

    /// A JPEG original written as PNG (`unpack --format png`) keeps its ICC profile (from two
    /// APP2 pieces given out of order), its EXIF (orientation included) and its XMP, in the
    /// chunks PNG readers look for; with nothing to carry the file is what it was before.
    #[test]
    fn a_png_of_a_jpeg_carries_its_profile_exif_and_xmp() {
        let seg = |marker: u8, head: &[u8], body: &[u8]| MetaBlock::JpegSegment {
            marker,
            data: [head, body].concat(),
        };
        let profile: Vec<u8> = (0..300u32).map(|i| (i * 13) as u8).collect();
        // A big-endian TIFF header, one entry: Orientation (274) = 6.
        let exif = [
            b"MM\0\x2a\0\0\0\x08\0\x01".as_slice(),
            &[1, 18, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0],
            &[0, 0, 0, 0],
        ]
        .concat();
        let xmp = "<x:xmpmeta xmlns:x='adobe:ns:meta/'>été</x:xmpmeta>";
        let blocks = vec![
            seg(0xE1, b"Exif\0\0", &exif),
            seg(0xE2, b"ICC_PROFILE\0\x02\x02", &profile[200..]),
            seg(0xE1, b"http://ns.adobe.com/xap/1.0/\0", xmp.as_bytes()),
            seg(0xE2, b"ICC_PROFILE\0\x01\x02", &profile[..200]),
            seg(0xFE, b"", b"a comment"),
        ];
        let pixels: Vec<u8> = (0..6 * 4 * 3).map(|i| (i * 5) as u8).collect();
        let file = png_file(&pixels, (6, 4), (false, false, false), &blocks).unwrap();
        let mut reader = png::Decoder::new(Cursor::new(&file)).read_info().unwrap();
        let mut back = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut back).unwrap();
        assert_eq!(back, pixels);
        let info = reader.info();
        assert_eq!(info.icc_profile.as_deref(), Some(&profile[..]));
        assert_eq!(info.exif_metadata.as_deref(), Some(&exif[..]));
        let texts: Vec<_> = info
            .utf8_text
            .iter()
            .map(|t| (t.keyword.clone(), t.get_text().unwrap()))
            .collect();
        assert_eq!(
            texts,
            [(meta::PNG_XMP_KEYWORD.to_string(), xmp.to_string())]
        );
        let upright = image::metadata::Orientation::from_exif_chunk(&exif);
        assert_eq!(upright, Some(image::metadata::Orientation::Rotate90));

        let mut plain = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut plain, 6, 4);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::Fast);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&pixels).unwrap();
            w.finish().unwrap();
        }
        let comment_only = &blocks[4..];
        assert_eq!(
            png_file(&pixels, (6, 4), (false, false, false), comment_only).unwrap(),
            plain
        );
    }

    /// The original's ExtraSamples (unassociated or premultiplied alpha) goes into a TIFF
    /// with alpha, and not into one without.
    #[test]
    fn extra_samples_describe_the_alpha_written() {
        let extra = |v: u8| MetaBlock::TiffTag {
            dir: TiffDir::Image,
            tag: 338,
            kind: 3,
            data: vec![v, 0],
        };
        let read = |file: &[u8]| {
            tiff::decoder::Decoder::new(Cursor::new(file))
                .unwrap()
                .find_tag(tiff::tags::Tag::ExtraSamples)
                .unwrap()
                .map(|v| v.into_u32().unwrap())
        };
        let rgba = [9u8; 2 * 2 * 4];
        for v in [1, 2] {
            let file = tiff_file(&rgba, 2, 2, 4, &[extra(v)], FAST).unwrap();
            assert_eq!(read(&file), Some(u32::from(v)));
        }
        assert_eq!(
            read(&tiff_file(&rgba[..12], 2, 2, 3, &[extra(2)], FAST).unwrap()),
            None
        );
        assert_eq!(read(&tiff_file(&rgba, 2, 2, 4, &[], FAST).unwrap()), None);
    }

    #[test]
    fn png_paths() {
        assert_eq!(png_path(b"a/b.jpg"), b"a/b.png");
        assert_eq!(png_path(b"a.b/c"), b"a.b/c.png");
        assert_eq!(png_path(b".hidden"), b".hidden.png");
        assert_eq!(png_path(b"x.tar.jpeg"), b"x.tar.png");
    }
}
