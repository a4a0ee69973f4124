//! Placing an image on a track's canvas and taking it back out.
//!
//! An image is stored at the canvas' top-left corner, turned 90° clockwise when it is
//! portrait (so portrait photos share landscape canvases; pack keeps a track of portrait
//! images only upright on a portrait canvas instead), and the rest of the canvas is
//! filled by repeating the image's last column and last row: cheap to code, unlike black.

use image::{GrayImage, RgbImage};

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

/// Decoded pixels of one image: colour, and the alpha plane when the original had one.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub rgb: RgbImage,
    pub alpha: Option<GrayImage>,
}

impl Picture {
    pub fn opaque(rgb: RgbImage) -> Self {
        Picture { rgb, alpha: None }
    }

    /// As an `image` crate image: RGB, or RGBA when there is alpha.
    pub fn into_dynamic(self) -> image::DynamicImage {
        let Some(alpha) = self.alpha else {
            return image::DynamicImage::ImageRgb8(self.rgb);
        };
        let (w, h) = self.rgb.dimensions();
        let mut rgba = Vec::with_capacity(w as usize * h as usize * 4);
        for (px, &a) in self.rgb.as_raw().chunks_exact(3).zip(alpha.as_raw()) {
            rgba.extend_from_slice(&[px[0], px[1], px[2], a]);
        }
        match image::RgbaImage::from_raw(w, h, rgba) {
            Some(img) => image::DynamicImage::ImageRgba8(img),
            None => image::DynamicImage::ImageRgb8(self.rgb),
        }
    }

    /// Colour and (when it has one) alpha of a decoded image file, at 8 bits.
    pub fn from_dynamic(img: image::DynamicImage) -> Self {
        if !img.color().has_alpha() {
            return Picture::opaque(into_rgb8(img));
        }
        let (w, h) = (img.width(), img.height());
        let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
        let mut alpha = Vec::with_capacity(w as usize * h as usize);
        if let image::DynamicImage::ImageLumaA8(la) = &img {
            for px in la.as_raw().chunks_exact(2) {
                rgb.extend_from_slice(&[px[0], px[0], px[0]]);
                alpha.push(px[1]);
            }
        } else {
            let rgba = img.into_rgba8();
            for px in rgba.as_raw().chunks_exact(4) {
                rgb.extend_from_slice(&px[..3]);
                alpha.push(px[3]);
            }
        }
        Picture {
            rgb: RgbImage::from_raw(w, h, rgb).unwrap_or_default(),
            alpha: GrayImage::from_raw(w, h, alpha),
        }
    }

    /// The image as seen over a uniform background of grey level `bg` (what a viewer shows):
    /// alpha-weighted, rounded. Opaque pictures come back as they are.
    pub fn over(&self, bg: u8) -> std::borrow::Cow<'_, RgbImage> {
        let Some(alpha) = &self.alpha else {
            return std::borrow::Cow::Borrowed(&self.rgb);
        };
        let mut out = self.rgb.clone();
        for (px, a) in out.as_mut().chunks_exact_mut(3).zip(alpha.as_raw()) {
            let a = u32::from(*a);
            for c in px {
                *c = ((u32::from(*c) * a + u32::from(bg) * (255 - a) + 127) / 255) as u8;
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

/// Y'CbCr planes of an image (full-range BT.601, 4:4:4: what the video frames hold),
/// borrowed: `width`×`height` pixels, rows `stride` bytes apart in each plane.
#[derive(Debug, Clone, Copy)]
pub struct YccRef<'a> {
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub y: &'a [u8],
    pub cb: &'a [u8],
    pub cr: &'a [u8],
}

impl YccRef<'_> {
    fn rows(&self) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> {
        let w = self.width as usize;
        (0..self.height as usize).map(move |r| {
            let a = r * self.stride;
            (&self.y[a..a + w], &self.cb[a..a + w], &self.cr[a..a + w])
        })
    }

    /// An owned, tightly packed copy, turned back upright when the image was stored rotated
    /// (as [`extract`] turns RGB).
    pub fn to_owned_upright(&self, rotated: bool) -> Ycc {
        let (w, h) = (self.width, self.height);
        let n = w as usize * h as usize;
        let mut planes = Vec::with_capacity(n * 3);
        for k in 0..3 {
            for (y, cb, cr) in self.rows() {
                planes.extend_from_slice([y, cb, cr][k]);
            }
        }
        if !rotated {
            return Ycc {
                width: w,
                height: h,
                planes,
            };
        }
        let mut upright = Vec::with_capacity(n * 3);
        for plane in planes.chunks_exact(n.max(1)).take(3) {
            let g = GrayImage::from_raw(w, h, plane.to_vec()).unwrap_or_default();
            upright.extend_from_slice(image::imageops::rotate270(&g).as_raw());
        }
        Ycc {
            width: h,
            height: w,
            planes: upright,
        }
    }

    /// Cb and Cr at half resolution both ways (4:2:0): tightly packed planes of
    /// ⌈w/2⌉×⌈h/2⌉.
    ///
    /// Each sample is taken with the taps (−1, 3, 3, −1)/4 across and down (samples beyond the
    /// edge repeat the edge), the exact inverse of the triangle ("fancy") upsampling with
    /// which JPEG decoders bring 4:2:0 chroma to full size: chroma that came from a 4:2:0 JPEG
    /// comes back as it was, where a plain 2×2 mean would blur it once more each time.
    pub fn halved_chroma(&self) -> (Vec<u8>, Vec<u8>) {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut cb = vec![0u8; cw * ch];
        let mut cr = vec![0u8; cw * ch];
        if cw == 0 || ch == 0 {
            return (cb, cr);
        }
        // Down first (four full rows into one, scaled by 4), then across the result (scaled
        // by 4 again): each output row is one pass over a single filtered row.
        let mut down = vec![0i16; w];
        let (mut even, mut odd) = (vec![0i16; cw], vec![0i16; cw]);
        for (plane, out) in [(self.cb, &mut cb), (self.cr, &mut cr)] {
            let row = |i: usize| &plane[i.min(h - 1) * self.stride..][..w];
            for (j, dst) in out.chunks_exact_mut(cw).enumerate() {
                let (a, b, c, d) = (
                    row((2 * j).saturating_sub(1)),
                    row(2 * j),
                    row(2 * j + 1),
                    row(2 * j + 2),
                );
                for ((((v, &a), &b), &c), &d) in down.iter_mut().zip(a).zip(b).zip(c).zip(d) {
                    *v = 3 * (i16::from(b) + i16::from(c)) - i16::from(a) - i16::from(d);
                }
                // Columns 2k and 2k+1; beyond the right edge the last column repeats.
                let pairs = down.chunks_exact(2);
                if let [last] = pairs.remainder() {
                    (even[cw - 1], odd[cw - 1]) = (*last, *last);
                }
                for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
                    (*e, *o) = (pair[0], pair[1]);
                }
                let left = even[0];
                let right = if w % 2 == 0 {
                    odd[cw - 1]
                } else {
                    even[cw - 1]
                };
                dst[0] = taps(left, even[0], odd[0], even.get(1).copied().unwrap_or(right));
                if cw > 2 {
                    let inner = dst[1..cw - 1]
                        .iter_mut()
                        .zip(&odd[..cw - 2])
                        .zip(&even[1..cw - 1])
                        .zip(&odd[1..cw - 1])
                        .zip(&even[2..]);
                    for ((((o, &a), &b), &c), &d) in inner {
                        *o = taps(a, b, c, d);
                    }
                }
                if cw > 1 {
                    let k = cw - 1;
                    dst[k] = taps(odd[k - 1], even[k], odd[k], right);
                }
            }
        }
        (cb, cr)
    }

    /// As packed RGB.
    pub fn to_rgb(&self) -> RgbImage {
        let w = self.width as usize;
        let mut rgb = vec![0u8; w * self.height as usize * 3];
        for ((y, cb, cr), out) in self.rows().zip(rgb.chunks_exact_mut((w * 3).max(1))) {
            crate::media::color::ycbcr_to_rgb_row(y, cb, cr, out);
        }
        RgbImage::from_raw(self.width, self.height, rgb).unwrap_or_default()
    }
}

/// One half-resolution sample from four filtered (×4) values across: (−1, 3, 3, −1)/4,
/// then the ×16 of both passes undone with rounding.
#[inline(always)]
fn taps(a: i16, b: i16, c: i16, d: i16) -> u8 {
    // At most 3 × (1530 + 1530) + 2 × 510 = 10200 either way: no overflow in i16.
    ((3 * (b + c) - a - d + 8) >> 4).clamp(0, 255) as u8
}

/// Y'CbCr planes of an image, owned and tightly packed (Y', then Cb, then Cr).
#[derive(Debug, Clone, PartialEq)]
pub struct Ycc {
    pub width: u32,
    pub height: u32,
    planes: Vec<u8>,
}

impl Ycc {
    pub fn as_ref(&self) -> YccRef<'_> {
        let n = self.width as usize * self.height as usize;
        YccRef {
            width: self.width,
            height: self.height,
            stride: self.width as usize,
            y: &self.planes[..n],
            cb: &self.planes[n..2 * n],
            cr: &self.planes[2 * n..3 * n],
        }
    }

    pub fn bytes(&self) -> u64 {
        self.planes.len() as u64
    }
}

/// A decoded image as it came out of the video: Y'CbCr planes for a whole, opaque image
/// coded as Y'CbCr (the renderer makes JPEGs straight from them), RGB pixels otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Ycc(Ycc),
    Picture(Picture),
}

impl Decoded {
    /// The pixels as RGB (and alpha).
    pub fn into_picture(self) -> Picture {
        match self {
            Decoded::Ycc(y) => Picture::opaque(y.as_ref().to_rgb()),
            Decoded::Picture(p) => p,
        }
    }

    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            Decoded::Ycc(y) => (y.width, y.height),
            Decoded::Picture(p) => p.rgb.dimensions(),
        }
    }

    /// Bytes of pixel data held.
    pub fn bytes(&self) -> u64 {
        match self {
            Decoded::Ycc(y) => y.bytes(),
            Decoded::Picture(p) => {
                p.rgb.as_raw().len() as u64
                    + p.alpha.as_ref().map_or(0, |a| a.as_raw().len() as u64)
            }
        }
    }
}

/// A grey plane as an RGB image with R = G = B (how alpha planes travel through the video
/// path: the colour conversion keeps grey exactly, so lossless coding keeps them exactly).
/// A decoded image as 8-bit RGB. Grey is spread to three channels here: the `image` crate's
/// own conversion goes through floating point per pixel (7 % of packing a grey series).
pub fn into_rgb8(img: image::DynamicImage) -> RgbImage {
    match img {
        image::DynamicImage::ImageLuma8(g) => grey_to_rgb(&g),
        other => other.into_rgb8(),
    }
}

pub fn grey_to_rgb(g: &GrayImage) -> RgbImage {
    let mut raw = Vec::with_capacity(g.as_raw().len() * 3);
    for &v in g.as_raw() {
        raw.extend_from_slice(&[v, v, v]);
    }
    RgbImage::from_raw(g.width(), g.height(), raw).unwrap_or_default()
}

/// The first channel of an RGB image (the alpha plane of a grey canvas).
pub fn first_channel(rgb: &RgbImage) -> GrayImage {
    let raw = rgb.as_raw().chunks_exact(3).map(|p| p[0]).collect();
    GrayImage::from_raw(rgb.width(), rgb.height(), raw).unwrap_or_default()
}

/// Largest tile side: images beyond it (or beyond `MAX_TILE_PIXELS`) are split into tiles
/// coded as separate frames, so that no frame exceeds what H.264 level 6 allows
/// (139,264 macroblocks, 8,192 px on a side in practice) and one frame's memory stays bounded.
pub const MAX_TILE_SIDE: u32 = 4096;
/// Largest tile area (16.8 MP: a 24 MP photo becomes two tiles).
pub const MAX_TILE_PIXELS: u64 = 1 << 24;

/// Rectangles (x, y, width, height) covering a `width`×`height` image: one when it is small
/// enough, else a grid of near-equal tiles, row by row.
pub fn tile_grid(width: u32, height: u32) -> Vec<(u32, u32, u32, u32)> {
    let mut cols = width.div_ceil(MAX_TILE_SIDE).max(1);
    let mut rows = height.div_ceil(MAX_TILE_SIDE).max(1);
    // Split the longer tile side further until the area fits too.
    while u64::from(width.div_ceil(cols)) * u64::from(height.div_ceil(rows)) > MAX_TILE_PIXELS {
        if width.div_ceil(cols) >= height.div_ceil(rows) {
            cols += 1;
        } else {
            rows += 1;
        }
    }
    let edges = |len: u32, n: u32| -> Vec<u32> {
        (0..=n)
            .map(|i| (u64::from(len) * u64::from(i) / u64::from(n)) as u32)
            .collect()
    };
    let (xs, ys) = (edges(width, cols), edges(height, rows));
    let mut out = Vec::with_capacity((cols * rows) as usize);
    for r in 0..rows as usize {
        for c in 0..cols as usize {
            out.push((xs[c], ys[r], xs[c + 1] - xs[c], ys[r + 1] - ys[r]));
        }
    }
    out
}

/// Copies `src` into `dst` with its top-left corner at (x, y) (clipped to `dst`).
pub fn paste<P: image::Pixel>(
    dst: &mut image::ImageBuffer<P, Vec<P::Subpixel>>,
    src: &image::ImageBuffer<P, Vec<P::Subpixel>>,
    x: u32,
    y: u32,
) {
    image::imageops::replace(dst, src, i64::from(x), i64::from(y));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_is_spread_as_the_image_crate_spreads_it() {
        // Every grey level, with and without alpha: the same pixels as image's conversion.
        let g = GrayImage::from_fn(256, 3, |x, _| image::Luma([x as u8]));
        let ours = into_rgb8(image::DynamicImage::ImageLuma8(g.clone()));
        let theirs = image::DynamicImage::ImageLuma8(g).into_rgb8();
        assert_eq!(ours, theirs);
        let la = image::GrayAlphaImage::from_fn(256, 2, |x, y| {
            image::LumaA([x as u8, (x as u8).wrapping_mul(7) ^ y as u8])
        });
        let theirs = image::DynamicImage::ImageLumaA8(la.clone()).into_rgba8();
        let ours = Picture::from_dynamic(image::DynamicImage::ImageLumaA8(la));
        let rgba: Vec<u8> = theirs.as_raw().to_vec();
        let back = ours.into_dynamic().into_rgba8().into_raw();
        assert_eq!(back, rgba);
    }

    /// Half-size chroma brought to `w`×`h` as a JPEG decoder does (triangle weights 3/4 and
    /// 1/4 each way, the edge repeated), rounded to 8 bits.
    fn fancy_upsample(c: &[u8], cw: usize, ch: usize, w: usize, h: usize) -> Vec<u8> {
        let at = |i: isize, j: isize| {
            f64::from(
                c[j.clamp(0, ch as isize - 1) as usize * cw + i.clamp(0, cw as isize - 1) as usize],
            )
        };
        let mut out = Vec::with_capacity(w * h);
        for y in 0..h as isize {
            let (j, dj) = (y / 2, if y % 2 == 0 { -1 } else { 1 });
            for x in 0..w as isize {
                let (i, di) = (x / 2, if x % 2 == 0 { -1 } else { 1 });
                let v =
                    9.0 * at(i, j) + 3.0 * at(i + di, j) + 3.0 * at(i, j + dj) + at(i + di, j + dj);
                out.push((v / 16.0).round() as u8);
            }
        }
        out
    }

    #[test]
    fn halved_chroma_undoes_a_decoders_upsampling() {
        for (w, h) in [(16usize, 10usize), (17, 11), (2, 2), (6, 2), (7, 5)] {
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            // Chroma with detail at every sample, clear of 0 and 255.
            let cb: Vec<u8> = (0..cw * ch)
                .map(|k| 40 + ((k * 37 + k / cw * 11) % 170) as u8)
                .collect();
            let cr: Vec<u8> = (0..cw * ch)
                .map(|k| 60 + ((k * 53 + 7) % 130) as u8)
                .collect();
            let (up_b, up_r) = (
                fancy_upsample(&cb, cw, ch, w, h),
                fancy_upsample(&cr, cw, ch, w, h),
            );
            let y = vec![128u8; w * h];
            let ycc = YccRef {
                width: w as u32,
                height: h as u32,
                stride: w,
                y: &y,
                cb: &up_b,
                cr: &up_r,
            };
            let (got_b, got_r) = ycc.halved_chroma();
            assert_eq!((got_b.len(), got_r.len()), (cw * ch, cw * ch));
            for (want, got) in [(&cb, &got_b), (&cr, &got_r)] {
                for j in 0..ch {
                    for i in 0..cw {
                        // An odd size leaves the last column (row) half the data to go on.
                        let edge = (w % 2 == 1 && i + 1 == cw) || (h % 2 == 1 && j + 1 == ch);
                        if edge {
                            continue;
                        }
                        let (a, b) = (want[j * cw + i], got[j * cw + i]);
                        assert!(
                            a.abs_diff(b) <= 1,
                            "{w}x{h} at ({i},{j}): {a} came back as {b}"
                        );
                    }
                }
            }
        }
    }

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
    fn tiles_cover_the_image_within_limits() {
        for &(w, h) in &[
            (1u32, 1u32),
            (4096, 4096),
            (4097, 10),
            (6000, 4000),
            (20000, 300),
            (12000, 9000),
            (65535, 3),
        ] {
            let tiles = tile_grid(w, h);
            let area: u64 = tiles.iter().map(|t| u64::from(t.2) * u64::from(t.3)).sum();
            assert_eq!(area, u64::from(w) * u64::from(h), "{w}x{h}");
            for &(x, y, tw, th) in &tiles {
                assert!(tw <= MAX_TILE_SIDE && th <= MAX_TILE_SIDE, "{w}x{h}");
                assert!(u64::from(tw) * u64::from(th) <= MAX_TILE_PIXELS);
                assert!(x + tw <= w && y + th <= h && tw > 0 && th > 0);
            }
        }
        assert_eq!(tile_grid(6000, 4000).len(), 2);
        assert_eq!(tile_grid(4000, 3000).len(), 1);
    }

    #[test]
    fn compositing_weights_by_alpha() {
        let rgb = RgbImage::from_pixel(2, 1, image::Rgb([200, 100, 0]));
        let alpha = GrayImage::from_raw(2, 1, vec![255, 0]).unwrap();
        let p = Picture {
            rgb,
            alpha: Some(alpha),
        };
        assert_eq!(p.over(0).get_pixel(0, 0).0, [200, 100, 0]);
        assert_eq!(p.over(255).get_pixel(1, 0).0, [255, 255, 255]);
        let back = first_channel(&grey_to_rgb(
            &GrayImage::from_raw(1, 2, vec![7, 9]).unwrap(),
        ));
        assert_eq!(back.as_raw(), &vec![7, 9]);
    }

    #[test]
    fn planes_turn_upright_as_rgb_does() {
        // A 5×3 stored image in planes of stride 7 (a canvas wider than the image).
        let (w, h, stride) = (5u32, 3u32, 7usize);
        let plane = |k: u8| -> Vec<u8> {
            (0..stride * h as usize)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(k * 50))
                .collect()
        };
        let (y, cb, cr) = (plane(0), plane(1), plane(2));
        let stored = YccRef {
            width: w,
            height: h,
            stride,
            y: &y,
            cb: &cb,
            cr: &cr,
        };
        let flat = stored.to_owned_upright(false);
        assert_eq!((flat.width, flat.height), (5, 3));
        assert_eq!(flat.as_ref().to_rgb(), stored.to_rgb());
        assert_eq!(&flat.as_ref().cb[..5], &cb[..5]);
        assert_eq!(&flat.as_ref().cb[5..10], &cb[7..12]);
        let upright = stored.to_owned_upright(true);
        assert_eq!((upright.width, upright.height), (3, 5));
        assert_eq!(
            upright.as_ref().to_rgb(),
            image::imageops::rotate270(&stored.to_rgb())
        );
        assert_eq!(upright.bytes(), 45);
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
