//! Metadata blocks of JPEG, PNG, TIFF and WebP files: taken from the original byte for byte
//! (a TIFF's tag values in little-endian order), and written back into the files the renderer
//! makes.

use crate::archive::{tiff_type_size, MetaBlock, TiffDir, TIFF_LAYOUT_TAGS};

/// What the metadata scan learned about a JPEG besides its blocks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JpegFacts {
    /// Number of colour components in the frame header (4 = CMYK/YCCK).
    pub components: u8,
    /// Three components with the chroma at half resolution both ways (4:2:0): luma sampled
    /// 2×2, Cb and Cr 1×1.
    pub chroma_halved: bool,
}

/// APPn and COM segments before the first scan, in file order.
pub fn jpeg_blocks(bytes: &[u8]) -> (Vec<MetaBlock>, JpegFacts) {
    let mut blocks = Vec::new();
    let mut facts = JpegFacts::default();
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return (blocks, facts);
    }
    let mut pos = 2;
    while pos + 4 <= bytes.len() {
        if bytes[pos] != 0xFF {
            break;
        }
        let marker = bytes[pos + 1];
        if marker == 0xFF {
            pos += 1; // fill byte
            continue;
        }
        if marker == 0xD9 || marker == 0xDA {
            break; // EOI or start of scan
        }
        let len = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
        if len < 2 || pos + 2 + len > bytes.len() {
            break;
        }
        let data = &bytes[pos + 4..pos + 2 + len];
        match marker {
            0xE0..=0xEF | 0xFE => blocks.push(MetaBlock::JpegSegment {
                marker,
                data: data.to_vec(),
            }),
            0xC0..=0xCF
                if marker != 0xC4 && marker != 0xC8 && marker != 0xCC && data.len() >= 6 =>
            {
                facts.components = data[5];
                // Then per component: id, sampling factors (h << 4 | v), table.
                let sampling = |k: usize| data.get(6 + 3 * k + 1).copied();
                facts.chroma_halved = data[5] == 3
                    && sampling(0) == Some(0x22)
                    && sampling(1) == Some(0x11)
                    && sampling(2) == Some(0x11);
            }
            _ => {}
        }
        pos += 2 + len;
    }
    (blocks, facts)
}

/// Offset just past a JPEG's end-of-image marker, following the marker structure through
/// every scan; `None` for a truncated file.
pub fn jpeg_end(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return None;
    }
    let mut pos = 2;
    loop {
        // At a marker.
        while bytes.get(pos)? == &0xFF && bytes.get(pos + 1)? == &0xFF {
            pos += 1;
        }
        if *bytes.get(pos)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(pos + 1)?;
        match marker {
            0xD9 => return Some(pos + 2),
            0x01 | 0xD0..=0xD7 => {
                pos += 2;
                continue;
            }
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([
            *bytes.get(pos + 2)?,
            *bytes.get(pos + 3)?,
        ]));
        pos = pos.checked_add(2 + len)?;
        if pos > bytes.len() {
            return None;
        }
        if marker == 0xDA {
            // Entropy-coded data: runs until a marker other than a stuffed byte or a restart.
            loop {
                let b = *bytes.get(pos)?;
                if b == 0xFF {
                    let next = *bytes.get(pos + 1)?;
                    if next == 0x00 || (0xD0..=0xD7).contains(&next) || next == 0xFF {
                        pos += if next == 0xFF { 1 } else { 2 };
                        continue;
                    }
                    break;
                }
                pos += 1;
            }
        }
    }
}

/// Chunks that describe pixels we re-encode are not kept: palette and transparency chunks,
/// animation; significant bits and background colour only where the rendered file has the
/// original's colour type (not for palette originals, which come back as RGB or RGBA).
fn png_chunk_kept(kind: &[u8; 4], indexed: bool) -> bool {
    let ancillary = kind[0].is_ascii_lowercase();
    match kind {
        b"sBIT" | b"bKGD" => !indexed,
        b"tRNS" | b"hIST" | b"acTL" | b"fcTL" | b"fdAT" => false,
        _ => ancillary,
    }
}

/// Ancillary PNG chunks worth keeping (colour profile, text, EXIF, physical size, time...).
pub fn png_blocks(bytes: &[u8]) -> Vec<MetaBlock> {
    const SIG: &[u8] = b"\x89PNG\r\n\x1a\n";
    let mut blocks = Vec::new();
    if !bytes.starts_with(SIG) {
        return blocks;
    }
    let mut pos = SIG.len();
    let mut indexed = false;
    let mut keyed = false;
    while pos + 12 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let kind = [
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ];
        let Some(end) = pos.checked_add(12).and_then(|p| p.checked_add(len)) else {
            break;
        };
        if end > bytes.len() {
            break;
        }
        if &kind == b"IEND" {
            break;
        }
        if &kind == b"IHDR" && len >= 10 {
            indexed = bytes[pos + 8 + 9] == 3;
        }
        // A colour-key tRNS turns RGB or grey into RGBA or grey+alpha when rendered.
        keyed |= &kind == b"tRNS";
        if png_chunk_kept(&kind, indexed) {
            blocks.push(MetaBlock::PngChunk {
                kind,
                data: bytes[pos + 8..pos + 8 + len].to_vec(),
            });
        }
        pos = end;
    }
    if keyed {
        blocks.retain(|b| !matches!(b, MetaBlock::PngChunk { kind, .. } if kind == b"sBIT" || kind == b"bKGD"));
    }
    blocks
}

/// Puts the original's APPn/COM segments into a freshly encoded JPEG.
///
/// The encoder's own JFIF (APP0) segment gives way to the original's segments, so the file
/// starts as the original did; the original's Adobe APP14 is not copied (it describes the
/// original's colour transform, not ours).
pub fn splice_jpeg(encoded: &[u8], blocks: &[MetaBlock]) -> Vec<u8> {
    let segments: Vec<(u8, &[u8])> = blocks
        .iter()
        .filter_map(|b| match b {
            MetaBlock::JpegSegment { marker, data } if *marker != 0xEE => {
                Some((*marker, data.as_slice()))
            }
            _ => None,
        })
        .collect();
    let trailer: &[u8] = blocks
        .iter()
        .find_map(|b| match b {
            MetaBlock::Trailer(t) => Some(t.as_slice()),
            _ => None,
        })
        .unwrap_or(&[]);
    if segments.is_empty() || encoded.len() < 2 {
        let mut out = encoded.to_vec();
        out.extend_from_slice(trailer);
        return out;
    }
    let mut out = Vec::with_capacity(
        encoded.len() + segments.iter().map(|(_, d)| d.len() + 4).sum::<usize>(),
    );
    out.extend_from_slice(&encoded[..2]);
    for (marker, data) in &segments {
        // Segments longer than a JPEG length field allows cannot come from a valid original.
        if data.len() + 2 > usize::from(u16::MAX) {
            continue;
        }
        out.push(0xFF);
        out.push(*marker);
        out.extend_from_slice(&((data.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut pos = 2;
    // Skip the encoder's APP0 (JFIF).
    if encoded.len() >= 6 && encoded[2] == 0xFF && encoded[3] == 0xE0 {
        let len = usize::from(u16::from_be_bytes([encoded[4], encoded[5]]));
        pos = (2 + 2 + len).min(encoded.len());
    }
    out.extend_from_slice(&encoded[pos..]);
    out.extend_from_slice(trailer);
    out
}

/// What a PNG can carry of a JPEG's, WebP's or TIFF's metadata, as PNG holds it: the ICC
/// profile (for an iCCP chunk; a JPEG's APP2 pieces joined in order), the EXIF block (for an
/// eXIf chunk: the TIFF structure, without JPEG's "Exif\0\0"; with its orientation, so that
/// viewers turn the image upright as they did the original) and the XMP packet (for an iTXt
/// chunk "XML:com.adobe.xmp"). A TIFF's EXIF directory is not rebuilt. PNG chunks of a PNG
/// original are not looked at: they go into the file as they are.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PngCarried {
    pub icc: Option<Vec<u8>>,
    pub exif: Option<Vec<u8>>,
    pub xmp: Option<String>,
}

/// XMP's JPEG APP1 signature.
const XMP_APP1: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
/// The iTXt keyword of an XMP packet in a PNG.
pub const PNG_XMP_KEYWORD: &str = "XML:com.adobe.xmp";

/// What of `blocks` (an image's kept metadata) a PNG written of it carries ([`PngCarried`]).
pub fn png_carried(blocks: &[MetaBlock]) -> PngCarried {
    let mut out = PngCarried::default();
    // JPEG ICC pieces: (sequence number, count, bytes).
    let mut icc_pieces: Vec<(u8, u8, &[u8])> = Vec::new();
    let xmp = |data: &[u8]| std::str::from_utf8(data).ok().map(str::to_owned);
    for block in blocks {
        match block {
            MetaBlock::JpegSegment { marker: 0xE1, data } => {
                if let Some(exif) = data.strip_prefix(b"Exif\0\0") {
                    out.exif.get_or_insert_with(|| exif.to_vec());
                } else if let Some(packet) = data.strip_prefix(XMP_APP1) {
                    if out.xmp.is_none() {
                        out.xmp = xmp(packet);
                    }
                }
            }
            MetaBlock::JpegSegment { marker: 0xE2, data } => {
                if let Some(&[seq, count, ref rest @ ..]) = data.strip_prefix(b"ICC_PROFILE\0") {
                    icc_pieces.push((seq, count, rest));
                }
            }
            MetaBlock::WebpChunk { kind, data } => match kind {
                b"ICCP" => {
                    out.icc.get_or_insert_with(|| data.clone());
                }
                b"EXIF" => {
                    let exif = data.strip_prefix(b"Exif\0\0").unwrap_or(data);
                    out.exif.get_or_insert_with(|| exif.to_vec());
                }
                b"XMP " if out.xmp.is_none() => out.xmp = xmp(data),
                _ => {}
            },
            MetaBlock::TiffTag {
                dir: TiffDir::Image,
                tag,
                data,
                ..
            } => match tag {
                34675 => {
                    out.icc.get_or_insert_with(|| data.clone());
                }
                700 if out.xmp.is_none() => out.xmp = xmp(data),
                _ => {}
            },
            _ => {}
        }
    }
    // The pieces must be 1..=count, each once, all with the same count.
    icc_pieces.sort_by_key(|p| p.0);
    let whole = icc_pieces.first().is_some_and(|&(_, count, _)| {
        usize::from(count) == icc_pieces.len()
            && icc_pieces
                .iter()
                .enumerate()
                .all(|(i, &(seq, c, _))| usize::from(seq) == i + 1 && c == count)
    });
    if whole && out.icc.is_none() {
        out.icc = Some(
            icc_pieces
                .iter()
                .flat_map(|p| p.2.iter().copied())
                .collect(),
        );
    }
    out
}

/// The metadata chunks of a WebP (ICC profile, EXIF, XMP), in file order.
pub fn webp_blocks(bytes: &[u8]) -> Vec<MetaBlock> {
    webp_chunks(bytes)
        .filter(|(kind, _)| WEBP_META.contains(kind))
        .map(|(kind, data)| MetaBlock::WebpChunk {
            kind,
            data: data.to_vec(),
        })
        .collect()
}

/// The chunks a WebP's metadata travels in.
pub const WEBP_META: [[u8; 4]; 3] = [*b"ICCP", *b"EXIF", *b"XMP "];

/// The chunks of a RIFF WebP file: four-character code and data, until the data ends or a
/// chunk runs past it.
fn webp_chunks(bytes: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let riff = bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP";
    let mut at = if riff { 12 } else { bytes.len() };
    std::iter::from_fn(move || {
        let head = bytes.get(at..at.checked_add(8)?)?;
        let kind = [head[0], head[1], head[2], head[3]];
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let data = bytes.get(at + 8..(at + 8).checked_add(len)?)?;
        at += 8 + len + len % 2;
        Some((kind, data))
    })
}

/// Puts a WebP's metadata chunks (`MetaBlock::WebpChunk`) into a freshly encoded simple
/// WebP, which becomes an extended one: a VP8X header (its flags saying ICC, alpha, EXIF,
/// XMP, and the canvas size), the ICC profile, the image, then EXIF and XMP, in the order the
/// WebP container specification gives. `None` if the file would pass RIFF's 4 GiB.
pub fn splice_webp(
    encoded: &[u8],
    blocks: &[MetaBlock],
    w: u32,
    h: u32,
    alpha: bool,
) -> Option<Vec<u8>> {
    let meta: Vec<(&[u8; 4], &[u8])> = blocks
        .iter()
        .filter_map(|b| match b {
            MetaBlock::WebpChunk { kind, data } => Some((kind, data.as_slice())),
            _ => None,
        })
        .collect();
    if meta.is_empty() {
        return Some(encoded.to_vec());
    }
    let has = |k: &[u8; 4]| meta.iter().any(|(kind, _)| *kind == k);
    let mut flags = 0u8;
    for (bit, on) in [
        (0x20, has(b"ICCP")),
        (0x10, alpha),
        (0x08, has(b"EXIF")),
        (0x04, has(b"XMP ")),
    ] {
        if on {
            flags |= bit;
        }
    }
    let mut vp8x = vec![flags, 0, 0, 0];
    vp8x.extend_from_slice(&(w.checked_sub(1)?).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(h.checked_sub(1)?).to_le_bytes()[..3]);
    let mut out = b"RIFF\0\0\0\0WEBP".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| -> Option<()> {
        out.extend_from_slice(kind);
        out.extend_from_slice(&u32::try_from(data.len()).ok()?.to_le_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(0);
        }
        Some(())
    };
    chunk(b"VP8X", &vp8x)?;
    for (kind, data) in meta.iter().filter(|(k, _)| *k == b"ICCP") {
        chunk(kind, data)?;
    }
    for (kind, data) in webp_chunks(encoded).filter(|(k, _)| k != b"VP8X") {
        chunk(&kind, data)?;
    }
    for after in [b"EXIF", b"XMP "] {
        for (kind, data) in meta.iter().filter(|(k, _)| *k == after) {
            chunk(kind, data)?;
        }
    }
    let size = u32::try_from(out.len() - 8).ok()?;
    out[4..8].copy_from_slice(&size.to_le_bytes());
    Some(out)
}

/// Carried TIFF tags may hold this many bytes in all; a file with more (a Photoshop TIFF's
/// layers, say) is kept as it is, so that the index the mount holds in memory stays small.
pub const MAX_TIFF_TAG_BYTES: usize = 1 << 20;

/// IPTC-NAA: a byte stream that writers declare as LONGs (carried as its bytes).
const TIFF_IPTC: u16 = 33723;

/// What the first directory of a TIFF holds besides its pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TiffMeta {
    /// Tags to write back into the TIFF made from the decoded pixels (maybe none).
    Carried(Vec<MetaBlock>),
    /// What a TIFF made from the decoded pixels could not hold: the file is kept as it is,
    /// for this reason.
    Kept(String),
}

/// Reads the first directory of a TIFF (classic or BigTIFF, either byte order), and the EXIF,
/// GPS and interoperability directories it points at, with the tiff crate (the reader the
/// image decoder uses). Tags about the pixel layout are left to the TIFF written back; the
/// others are carried, unless one of them says the file is more than one full image or holds
/// what cannot be moved: another page, a reduced-resolution first image (a DNG's or a raw
/// file's preview), DNG tags, sub-images (SubIFDs), a MakerNote (whose offsets point into the
/// file), a palette, old-style JPEG data, 64-bit values, or over [`MAX_TIFF_TAG_BYTES`]. A
/// file the TIFF reader refuses outright says nothing here (the image decoder judges it).
pub fn tiff_meta<R: std::io::Read + std::io::Seek>(reader: R) -> TiffMeta {
    let Ok(mut dec) = tiff::decoder::Decoder::new(reader) else {
        return TiffMeta::Carried(Vec::new());
    };
    if dec.more_images() {
        return TiffMeta::Kept("TIFF of more than one page".into());
    }
    let Some(first) = dec.ifd_pointer() else {
        return TiffMeta::Carried(Vec::new());
    };
    let mut read = TiffRead {
        dec,
        blocks: Vec::new(),
        kept: Vec::new(),
        total: 0,
    };
    if let Err(e) = read.directory(first, TiffDir::Image) {
        return TiffMeta::Kept(format!("TIFF whose tags cannot be read: {e}"));
    }
    let TiffRead {
        blocks, mut kept, ..
    } = read;
    // A full-resolution image says NewSubfileType 0 (or nothing).
    let subfile = blocks.iter().any(|b| {
        matches!(b, MetaBlock::TiffTag { dir: TiffDir::Image, tag: 254, data, .. }
            if data.iter().any(|&b| b != 0))
    });
    if subfile {
        kept.insert(0, "a reduced-resolution first image".into());
    }
    if kept.is_empty() {
        return TiffMeta::Carried(blocks);
    }
    TiffMeta::Kept(format!(
        "TIFF with {} (written back it would not have them)",
        kept.join(", ")
    ))
}

/// The state of [`tiff_meta`]'s walk.
struct TiffRead<R: std::io::Read + std::io::Seek> {
    dec: tiff::decoder::Decoder<R>,
    blocks: Vec<MetaBlock>,
    /// What keeps the file, as messages name it.
    kept: Vec<String>,
    /// Bytes of values carried so far.
    total: usize,
}

impl<R: std::io::Read + std::io::Seek> TiffRead<R> {
    /// Carries the tags of directory `which` at `at`, and of the directories it points at.
    fn directory(
        &mut self,
        at: tiff::tags::IfdPointer,
        which: TiffDir,
    ) -> Result<(), tiff::TiffError> {
        use tiff::tags::{ByteOrder, IfdPointer, Type, ValueBuffer};
        let dir = self.dec.read_directory(at)?;
        let mut values = self.dec.read_directory_tags(&dir);
        let mut below = Vec::new();
        for (tag, entry) in dir.iter() {
            let (t, kind) = (tag.to_u16(), entry.field_type());
            if TIFF_LAYOUT_TAGS.contains(&t) && which == TiffDir::Image {
                continue;
            }
            // Each pointer is followed from its one parent only, so the walk ends.
            let sub = match (which, t) {
                (TiffDir::Image, 34665) => Some(TiffDir::Exif),
                (TiffDir::Image, 34853) => Some(TiffDir::Gps),
                (TiffDir::Exif, 40965) => Some(TiffDir::Interop),
                _ => None,
            };
            if let Some(sub) = sub.filter(|_| entry.count() == 1) {
                let offset = values.find_tag(tag)?.map(|v| v.into_u64()).transpose()?;
                below.extend(offset.map(|o| (IfdPointer(o), sub)));
                continue;
            }
            let why = match (t, kind) {
                (330 | 34665 | 34853 | 40965, _) | (_, Type::IFD | Type::IFD8) => tiff_tag_name(t),
                (37500, _) if which == TiffDir::Exif => "a MakerNote".into(),
                (50706..=50999, _) => "DNG tags".into(),
                (320, _) => "a palette".into(),
                (512..=521, _) => "old-style JPEG data".into(),
                (_, Type::LONG8 | Type::SLONG8) => "64-bit tag values".into(),
                _ => String::new(),
            };
            if !why.is_empty() {
                note_once(&mut self.kept, why);
                continue;
            }
            let size =
                tiff_type_size(kind.to_u16()).map(|n| entry.count().saturating_mul(n as u64));
            match size {
                Some(n) if n <= (MAX_TIFF_TAG_BYTES - self.total) as u64 => {
                    self.total += n as usize
                }
                _ => {
                    note_once(
                        &mut self.kept,
                        format!("over {} KiB of tags", MAX_TIFF_TAG_BYTES >> 10),
                    );
                    continue;
                }
            }
            let mut buf = ValueBuffer::empty(kind);
            if values.find_tag_buf(tag, &mut buf)?.is_none() {
                continue;
            }
            let (kind, data) = if t == TIFF_IPTC {
                (7, buf.as_bytes().to_vec())
            } else {
                buf.set_byte_order(ByteOrder::LittleEndian);
                (buf.data_type().to_u16(), buf.as_bytes().to_vec())
            };
            self.blocks.push(MetaBlock::TiffTag {
                dir: which,
                tag: t,
                kind,
                data,
            });
        }
        for (at, sub) in below {
            self.directory(at, sub)?;
        }
        Ok(())
    }
}

/// Adds a reason to keep a file to `kept`, unless it is there already.
fn note_once(kept: &mut Vec<String>, why: String) {
    if !kept.contains(&why) {
        kept.push(why);
    }
}

/// A TIFF tag as a message names it.
fn tiff_tag_name(tag: u16) -> String {
    match tag {
        330 => "sub-images (SubIFDs)".into(),
        34665 => "EXIF".into(),
        34853 => "GPS".into(),
        40965 => "an interoperability directory".into(),
        t => format!("a directory in tag {t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_segments_round_trip() {
        // SOI, APP1 "Exif", COM, SOF0 with 3 components, EOI.
        let mut f = vec![0xFF, 0xD8];
        f.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x08, b'E', b'x', b'i', b'f', 0, 0]);
        f.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x05, b'h', b'i', b'!']);
        f.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x0C, 8, 0, 1, 0, 1, 3, 1, 0x11, 0, 2]);
        f.extend_from_slice(&[0xFF, 0xD9]);
        let (blocks, facts) = jpeg_blocks(&f);
        assert_eq!(facts.components, 3);
        assert_eq!(blocks.len(), 2);
        let encoded = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 1, 2, 0xFF, 0xD9];
        let spliced = splice_jpeg(&encoded, &blocks);
        assert_eq!(jpeg_end(&f), Some(f.len()));
        let (again, _) = jpeg_blocks(&spliced);
        assert_eq!(again, blocks);
        assert!(spliced.ends_with(&[0xFF, 0xFE, 0x00, 0x05, b'h', b'i', b'!', 0xFF, 0xD9]));
    }
}

#[cfg(test)]
mod end_tests {
    use super::*;

    fn tiny_jpeg() -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 16, y as u8 * 16, 255]));
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn finds_the_end_and_refuses_truncations() {
        let j = tiny_jpeg();
        assert_eq!(jpeg_end(&j), Some(j.len()));
        let mut with_tail = j.clone();
        with_tail.extend_from_slice(b"\ntrailing");
        assert_eq!(jpeg_end(&with_tail), Some(j.len()));
        for cut in 0..j.len() - 1 {
            assert_eq!(jpeg_end(&j[..cut]), None, "cut at {cut}");
        }
    }
}

#[cfg(test)]
mod tiff_tests {
    use super::*;
    use std::io::Cursor;
    use tiff::encoder::{colortype, Rational, TiffEncoder, TiffKind};
    use tiff::tags::{ResolutionUnit, Tag};

    fn tag(dir: TiffDir, tag: u16, kind: u16, data: &[u8]) -> MetaBlock {
        MetaBlock::TiffTag {
            dir,
            tag,
            kind,
            data: data.to_vec(),
        }
    }

    fn image_tag(t: u16, kind: u16, data: &[u8]) -> MetaBlock {
        tag(TiffDir::Image, t, kind, data)
    }

    /// A 4×3 RGB TIFF, classic or BigTIFF, at 300 dpi with an Artist, an ICC profile and XMP.
    fn scanned<K: TiffKind>(mut enc: TiffEncoder<&mut Cursor<Vec<u8>>, K>) {
        let mut img = enc.new_image::<colortype::RGB8>(4, 3).unwrap();
        img.resolution(ResolutionUnit::Inch, Rational { n: 300, d: 1 });
        let dir = img.encoder();
        dir.write_tag(Tag::Artist, "A. Photographer").unwrap();
        dir.write_tag(Tag::Unknown(700), &b"<x:xmpmeta/>"[..])
            .unwrap();
        dir.write_tag(Tag::Unknown(34675), &[0u8, 1, 2, 3, 4, 5][..])
            .unwrap();
        img.write_data(&[7u8; 36]).unwrap();
    }

    #[test]
    fn a_scanners_tags_are_carried_from_classic_and_big_tiffs() {
        let mut classic = Cursor::new(Vec::new());
        scanned(TiffEncoder::new(&mut classic).unwrap());
        let mut big = Cursor::new(Vec::new());
        scanned(TiffEncoder::new_big(&mut big).unwrap());
        for file in [classic, big] {
            assert_eq!(
                tiff_meta(Cursor::new(file.into_inner())),
                TiffMeta::Carried(vec![
                    image_tag(282, 5, &[44, 1, 0, 0, 1, 0, 0, 0]),
                    image_tag(283, 5, &[44, 1, 0, 0, 1, 0, 0, 0]),
                    image_tag(296, 3, &[2, 0]),
                    image_tag(315, 2, b"A. Photographer\0"),
                    image_tag(700, 1, b"<x:xmpmeta/>"),
                    image_tag(34675, 1, &[0, 1, 2, 3, 4, 5]),
                ])
            );
        }
    }

    type Entries = [(u16, u16, Vec<u8>)];

    /// A big-endian directory at `at`: its entries (tag, type, values in big-endian order,
    /// sorted here), the next-directory link 0, then the values that do not fit in an entry.
    fn directory(entries: &Entries, at: usize) -> Vec<u8> {
        // Type 13 (IFD) is a LONG offset.
        let size = |kind: u16| tiff_type_size(kind).unwrap_or(4);
        let mut entries = entries.to_vec();
        entries.sort_by_key(|e| e.0);
        let data_at = at + 2 + 12 * entries.len() + 4;
        let (mut out, mut data) = ((entries.len() as u16).to_be_bytes().to_vec(), Vec::new());
        for (t, kind, value) in &entries {
            out.extend(t.to_be_bytes());
            out.extend(kind.to_be_bytes());
            out.extend(((value.len() / size(*kind)) as u32).to_be_bytes());
            if value.len() <= 4 {
                out.extend(value);
                out.extend(vec![0; 4 - value.len()]);
            } else {
                out.extend(((data_at + data.len()) as u32).to_be_bytes());
                data.extend(value);
                data.resize(data.len().next_multiple_of(2), 0);
            }
        }
        out.extend([0; 4]);
        out.extend(data);
        out
    }

    /// A big-endian ("MM") 2×1 RGB TIFF, uncompressed, with `extra` tags beside its layout,
    /// and EXIF, interoperability and GPS directories where they have entries.
    fn big_endian_with(
        extra: &Entries,
        exif: &Entries,
        interop: &Entries,
        gps: &Entries,
    ) -> Vec<u8> {
        let long = |v: usize| (v as u32).to_be_bytes().to_vec();
        // Offsets do not change sizes: lay out with zeros, then with the offsets.
        let layout = |offsets: [usize; 4]| {
            let [exif_at, interop_at, gps_at, strip_at] = offsets;
            let mut image: Vec<(u16, u16, Vec<u8>)> = vec![
                (256, 3, vec![0, 2]),
                (257, 3, vec![0, 1]),
                (258, 3, vec![0, 8, 0, 8, 0, 8]),
                (259, 3, vec![0, 1]),
                (262, 3, vec![0, 2]),
                (273, 4, long(strip_at)),
                (277, 3, vec![0, 3]),
                (278, 3, vec![0, 1]),
                (279, 4, long(6)),
            ];
            image.extend(extra.iter().cloned());
            let mut exif = exif.to_vec();
            if !interop.is_empty() {
                exif.push((40965, 4, long(interop_at)));
            }
            if !exif.is_empty() {
                image.push((34665, 4, long(exif_at)));
            }
            if !gps.is_empty() {
                // Some writers type a pointer IFD (13) rather than LONG.
                image.push((34853, 13, long(gps_at)));
            }
            let mut out = b"MM\0*".to_vec();
            out.extend(long(8));
            let mut at = [0; 4];
            for (k, entries) in [&image[..], &exif, interop, gps].into_iter().enumerate() {
                if k > 0 {
                    at[k - 1] = out.len();
                }
                if k == 0 || !entries.is_empty() {
                    out.extend(directory(entries, out.len()));
                }
            }
            at[3] = out.len();
            out.extend([10, 20, 30, 40, 50, 60]);
            (out, at)
        };
        let (_, at) = layout([0; 4]);
        layout(at).0
    }

    fn big_endian(extra: &Entries) -> Vec<u8> {
        big_endian_with(extra, &[], &[], &[])
    }

    #[test]
    fn big_endian_values_are_carried_little_endian_and_iptc_as_its_bytes() {
        let iptc = vec![0x1c, 2, 0, 0, 2, 0, 4, 0x1c, 2, 0x78, 0, 2];
        let file = big_endian(&[
            (274, 3, vec![0, 6]),
            (282, 5, vec![0, 0, 1, 44, 0, 0, 0, 1]),
            (305, 2, b"scanner 1.0\0".to_vec()),
            (33723, 4, iptc.clone()),
        ]);
        assert!(image::load_from_memory(&file).is_ok(), "a valid TIFF");
        assert_eq!(
            tiff_meta(Cursor::new(file)),
            TiffMeta::Carried(vec![
                image_tag(274, 3, &[6, 0]),
                image_tag(282, 5, &[44, 1, 0, 0, 1, 0, 0, 0]),
                image_tag(305, 2, b"scanner 1.0\0"),
                image_tag(33723, 7, &iptc),
            ])
        );
    }

    /// EXIF (with its interoperability directory) and GPS fields are carried, each with its
    /// directory; the pointers are not blocks.
    #[test]
    fn exif_gps_and_interoperability_directories_are_carried() {
        let file = big_endian_with(
            &[(315, 2, b"Me\0".to_vec())],
            &[
                (33434, 5, vec![0, 0, 0, 1, 0, 0, 0, 125]),
                (36867, 2, b"2020:01:01 10:00:00\0".to_vec()),
            ],
            &[(1, 2, b"R98\0".to_vec())],
            &[(0, 1, vec![2, 3, 0, 0]), (1, 2, b"N\0".to_vec())],
        );
        assert!(image::load_from_memory(&file).is_ok(), "a valid TIFF");
        assert_eq!(
            tiff_meta(Cursor::new(file)),
            TiffMeta::Carried(vec![
                image_tag(315, 2, b"Me\0"),
                tag(TiffDir::Exif, 33434, 5, &[1, 0, 0, 0, 125, 0, 0, 0]),
                tag(TiffDir::Exif, 36867, 2, b"2020:01:01 10:00:00\0"),
                tag(TiffDir::Interop, 1, 2, b"R98\0"),
                tag(TiffDir::Gps, 0, 1, &[2, 3, 0, 0]),
                tag(TiffDir::Gps, 1, 2, b"N\0"),
            ])
        );
    }

    /// Cut at every length, or with any byte changed, a TIFF with EXIF, interoperability and
    /// GPS directories is carried or kept, never a panic; and whatever is carried can be
    /// written back.
    #[test]
    fn damaged_tiffs_are_carried_or_kept_never_a_panic() {
        let file = big_endian_with(
            &[(315, 2, b"Me\0".to_vec()), (33723, 4, vec![0x1c; 8])],
            &[(36867, 2, b"2020:01:01 10:00:00\0".to_vec())],
            &[(1, 2, b"R98\0".to_vec())],
            &[(1, 2, b"N\0".to_vec())],
        );
        let check = |bytes: Vec<u8>| {
            if let TiffMeta::Carried(blocks) = tiff_meta(Cursor::new(bytes)) {
                for b in &blocks {
                    let MetaBlock::TiffTag {
                        dir,
                        tag,
                        kind,
                        data,
                    } = b
                    else {
                        panic!("{b:?}");
                    };
                    assert!(
                        crate::archive::tiff_tag_writable(*dir, *tag, *kind, data.len()),
                        "{b:?}"
                    );
                }
            }
        };
        for cut in 0..file.len() {
            check(file[..cut].to_vec());
        }
        for at in 0..file.len() {
            for v in [0x00, 0x01, 0x7f, 0xff] {
                let mut bad = file.clone();
                bad[at] = v;
                check(bad);
            }
        }
    }

    #[test]
    fn what_a_tiff_written_back_cannot_hold_keeps_the_file() {
        let kept = |file: Vec<u8>| match tiff_meta(Cursor::new(file)) {
            TiffMeta::Kept(why) => why,
            TiffMeta::Carried(b) => panic!("carried {b:?}"),
        };
        let why = kept(big_endian(&[
            (254, 4, vec![0, 0, 0, 1]),
            (50706, 1, vec![1, 4, 0, 0]),
        ]));
        assert!(
            why.contains("a reduced-resolution first image, DNG tags"),
            "{why}"
        );
        let why = kept(big_endian(&[(330, 13, vec![0, 0, 0, 8])]));
        assert!(why.contains("sub-images (SubIFDs)"), "{why}");
        let why = kept(big_endian(&[(320, 3, vec![0; 6 * 256])]));
        assert!(why.contains("a palette"), "{why}");
        let why = kept(big_endian(&[(37724, 7, vec![0; MAX_TIFF_TAG_BYTES + 1])]));
        assert!(why.contains("over 1024 KiB of tags"), "{why}");
        // A MakerNote's offsets point into the file; a GPS pointer belongs in the image's
        // directory, not EXIF's.
        let why = kept(big_endian_with(&[], &[(37500, 7, vec![1; 40])], &[], &[]));
        assert!(why.contains("a MakerNote"), "{why}");
        let why = kept(big_endian_with(
            &[],
            &[(34853, 4, vec![0, 0, 0, 8])],
            &[],
            &[],
        ));
        assert!(why.contains("GPS"), "{why}");
        // A pointer past the end of the file.
        let mut cut = big_endian_with(&[], &[(36867, 2, b"2020\0".to_vec())], &[], &[]);
        cut.truncate(cut.len() - 30);
        let why = kept(cut);
        assert!(why.contains("tags cannot be read"), "{why}");
        // A full-resolution image that says so is carried.
        assert_eq!(
            tiff_meta(Cursor::new(big_endian(&[(254, 4, vec![0; 4])]))),
            TiffMeta::Carried(vec![image_tag(254, 4, &[0; 4])])
        );
    }
}

#[cfg(test)]
mod webp_tests {
    use super::*;

    fn encoded(alpha: bool) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let img = image::RgbaImage::from_fn(5, 3, |x, y| {
            image::Rgba([
                x as u8 * 40,
                y as u8 * 80,
                7,
                if alpha { x as u8 * 50 } else { 255 },
            ])
        });
        let img = if alpha {
            image::DynamicImage::ImageRgba8(img)
        } else {
            image::DynamicImage::ImageRgb8(image::DynamicImage::ImageRgba8(img).to_rgb8())
        };
        img.write_to(&mut out, image::ImageFormat::WebP).unwrap();
        out.into_inner()
    }

    /// The chunks spliced into a WebP read back as they were carried, the VP8X header says
    /// what the file holds, and the pixels are the encoder's.
    #[test]
    fn metadata_chunks_spliced_into_a_webp_read_back() {
        let blocks = vec![
            MetaBlock::WebpChunk {
                kind: *b"ICCP",
                data: vec![1, 2, 3],
            },
            MetaBlock::WebpChunk {
                kind: *b"EXIF",
                data: b"II*\0\x08\0\0\0\0\0".to_vec(),
            },
            MetaBlock::WebpChunk {
                kind: *b"XMP ",
                data: b"<x:xmpmeta/>".to_vec(),
            },
        ];
        for alpha in [false, true] {
            let plain = encoded(alpha);
            let file = splice_webp(&plain, &blocks, 5, 3, alpha).unwrap();
            assert_eq!(webp_blocks(&file), blocks);
            let chunks: Vec<[u8; 4]> = webp_chunks(&file).map(|(k, _)| k).collect();
            assert_eq!(chunks, [*b"VP8X", *b"ICCP", *b"VP8L", *b"EXIF", *b"XMP "]);
            let vp8x = webp_chunks(&file).next().unwrap().1.to_vec();
            let flags = if alpha { 0x3c } else { 0x2c };
            assert_eq!(vp8x, [flags, 0, 0, 0, 4, 0, 0, 2, 0, 0]);
            assert_eq!(
                u32::from_le_bytes(file[4..8].try_into().unwrap()) as usize,
                file.len() - 8
            );
            let a = image::load_from_memory(&plain).unwrap().to_rgba8();
            let b = image::load_from_memory(&file).unwrap().to_rgba8();
            assert_eq!(a, b);
            // Without chunks, the encoder's file as it is.
            assert_eq!(splice_webp(&plain, &[], 5, 3, alpha).unwrap(), plain);
            // Cut anywhere, the chunks read are whole ones, never a panic.
            for cut in 0..file.len() {
                let some = webp_blocks(&file[..cut]);
                assert!(blocks.starts_with(&some), "cut at {cut}: {some:?}");
            }
        }
    }

    /// An ICC profile is carried only when every APP2 piece of it is there, once; WebP and
    /// TIFF originals give theirs too, a WebP's EXIF without JPEG's header.
    #[test]
    fn only_whole_icc_profiles_are_carried_into_png() {
        let icc = |seq: u8, count: u8, body: &[u8]| MetaBlock::JpegSegment {
            marker: 0xE2,
            data: [b"ICC_PROFILE\0".as_slice(), &[seq, count], body].concat(),
        };
        let joined = png_carried(&[icc(2, 2, b"cd"), icc(1, 2, b"ab")]);
        assert_eq!(joined.icc.as_deref(), Some(&b"abcd"[..]));
        for broken in [
            vec![icc(1, 2, b"ab")],
            vec![icc(1, 2, b"ab"), icc(1, 2, b"ab")],
            vec![icc(1, 2, b"ab"), icc(2, 3, b"cd")],
            vec![icc(0, 1, b"ab")],
        ] {
            assert_eq!(png_carried(&broken).icc, None, "{broken:?}");
        }
        let webp = png_carried(&[
            MetaBlock::WebpChunk {
                kind: *b"EXIF",
                data: b"Exif\0\0II*\0".to_vec(),
            },
            MetaBlock::WebpChunk {
                kind: *b"ICCP",
                data: b"profile".to_vec(),
            },
        ]);
        assert_eq!(webp.exif.as_deref(), Some(&b"II*\0"[..]));
        assert_eq!(webp.icc.as_deref(), Some(&b"profile"[..]));
        let tiff = png_carried(&[MetaBlock::TiffTag {
            dir: TiffDir::Image,
            tag: 34675,
            kind: 7,
            data: b"tiff icc".to_vec(),
        }]);
        assert_eq!(tiff.icc.as_deref(), Some(&b"tiff icc"[..]));
        // A PNG original's chunks are written as they are, not carried again.
        let png = png_carried(&[MetaBlock::PngChunk {
            kind: *b"eXIf",
            data: b"MM".to_vec(),
        }]);
        assert_eq!(png, PngCarried::default());
    }
}
