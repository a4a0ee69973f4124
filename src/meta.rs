//! Metadata blocks of JPEG and PNG files: taken from the original byte for byte, and
//! written back into the files the renderer makes.

use crate::archive::MetaBlock;

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
