//! Placing an image on a track's canvas and taking it back out.
//!
//! An image is stored at the canvas' top-left corner, turned 90° clockwise when it is
//! portrait (so portrait photos share landscape canvases), and the rest of the canvas is
//! filled by repeating the image's last column and last row: cheap to code, unlike black.

use image::RgbImage;

/// Canvas side for an image side: rounded up to a ladder of sizes with steps of at most
/// 1/16 of the side (at least 16), so similar sizes share a track and waste stays under ~6 %
/// per side.
pub fn ladder(side: u32) -> u32 {
    let side = side.max(1);
    let pow = 1u32 << (31 - side.leading_zeros());
    let step = (pow / 16).max(16);
    side.div_ceil(step) * step
}

/// The orientation an image is stored in, and the canvas it needs.
pub fn plan(width: u32, height: u32) -> (bool, u32, u32) {
    let rotated = height > width;
    let (sw, sh) = if rotated {
        (height, width)
    } else {
        (width, height)
    };
    (rotated, ladder(sw), ladder(sh))
}

/// Builds the packed RGB canvas for `img`.
pub fn place(img: &RgbImage, rotated: bool, cw: u32, ch: u32) -> Vec<u8> {
    let turned;
    let src = if rotated {
        turned = image::imageops::rotate90(img);
        &turned
    } else {
        img
    };
    let (w, h) = (src.width() as usize, src.height() as usize);
    let (cw, ch) = (cw as usize, ch as usize);
    debug_assert!(w <= cw && h <= ch && w > 0 && h > 0);
    let mut canvas = vec![0u8; cw * ch * 3];
    let raw = src.as_raw();
    for y in 0..h {
        let row = &mut canvas[y * cw * 3..(y + 1) * cw * 3];
        row[..w * 3].copy_from_slice(&raw[y * w * 3..(y + 1) * w * 3]);
        let last = [row[w * 3 - 3], row[w * 3 - 2], row[w * 3 - 1]];
        for px in row[w * 3..].chunks_exact_mut(3) {
            px.copy_from_slice(&last);
        }
    }
    let (done, rest) = canvas.split_at_mut(h * cw * 3);
    let last_row = &done[(h - 1) * cw * 3..];
    for row in rest.chunks_exact_mut(cw * 3) {
        row.copy_from_slice(last_row);
    }
    canvas
}

/// Takes a stored image (`w`×`h` as the original is, before any rotation) out of a canvas.
pub fn extract(canvas: &[u8], cw: u32, ch: u32, w: u32, h: u32, rotated: bool) -> Option<RgbImage> {
    let (sw, sh) = if rotated { (h, w) } else { (w, h) };
    if sw > cw || sh > ch || canvas.len() < (cw as usize) * (ch as usize) * 3 {
        return None;
    }
    let (sw_, cw_) = (sw as usize, cw as usize);
    let mut out = Vec::with_capacity(sw_ * sh as usize * 3);
    for y in 0..sh as usize {
        out.extend_from_slice(&canvas[y * cw_ * 3..y * cw_ * 3 + sw_ * 3]);
    }
    let stored = RgbImage::from_raw(sw, sh, out)?;
    Some(if rotated {
        image::imageops::rotate270(&stored)
    } else {
        stored
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_bounds_waste() {
        for side in 1..5000u32 {
            let l = ladder(side);
            assert!(l >= side && l.is_multiple_of(16), "{side} -> {l}");
            assert!(
                l - side < 16 || (l - side) as f64 / side as f64 <= 1.0 / 16.0 + 1e-9,
                "{side} -> {l}"
            );
        }
        assert_eq!(ladder(1920), 1920);
        assert_eq!(ladder(1080), 1088);
    }

    #[test]
    fn place_and_extract_round_trip() {
        for &(w, h) in &[(1u32, 1u32), (3, 5), (5, 3), (17, 16), (40, 7)] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([x as u8, y as u8, (x * 7 + y) as u8])
            });
            let (rotated, cw, ch) = plan(w, h);
            let canvas = place(&img, rotated, cw, ch);
            // Padding repeats the edge.
            let stored = if rotated {
                image::imageops::rotate90(&img)
            } else {
                img.clone()
            };
            let corner = stored.get_pixel(stored.width() - 1, stored.height() - 1).0;
            assert_eq!(&canvas[(cw as usize * ch as usize - 1) * 3..], &corner[..]);
            let back = extract(&canvas, cw, ch, w, h, rotated).unwrap();
            assert_eq!(back, img, "{w}x{h}");
        }
    }
}
