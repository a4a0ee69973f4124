//! RGB ⇄ full-range BT.601 YCbCr (the JPEG matrix), 8 or 10 bits, in fixed point.
//!
//! Written here rather than through swscale so that the result is identical on every CPU and
//! FFmpeg version: the renderer's output (and so every file size recorded in the index)
//! depends on it.

const SHIFT: i32 = 16;

// Coefficients × 65536. Each row sums so that grey maps to grey exactly.
const YR: i32 = 19595; // 0.299
const YG: i32 = 38470; // 0.587
const YB: i32 = 7471; // 0.114 (19595 + 38470 + 7471 = 65536)
const CBR: i32 = -11059; // -0.168736
const CBG: i32 = -21709; // -0.331264
const CBB: i32 = 32768; // 0.5 (sums to 0)
const CRR: i32 = 32768; // 0.5
const CRG: i32 = -27439; // -0.418688
const CRB: i32 = -5329; // -0.081312 (sums to 0)

const RCR: i32 = 91881; // 1.402
const GCB: i32 = -22554; // -0.344136
const GCR: i32 = -46802; // -0.714136
const BCB: i32 = 116130; // 1.772

#[inline]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// One Y', Cb or Cr sample as a plane holds it: 8 bits (`u8`), or 10 bits in two
/// little-endian bytes (`[u8; 2]`, FFmpeg's `yuv444p10le`). The 10-bit scale is the 8-bit one
/// times 4, so one set of coefficients serves both.
pub trait Sample: Copy {
    /// Bits beyond 8.
    const EXTRA: i32;
    fn get(self) -> i32;
    /// `v` clamped to the sample's range.
    fn put(v: i32) -> Self;
}

impl Sample for u8 {
    const EXTRA: i32 = 0;
    #[inline]
    fn get(self) -> i32 {
        i32::from(self)
    }
    #[inline]
    fn put(v: i32) -> Self {
        clamp8(v)
    }
}

impl Sample for [u8; 2] {
    const EXTRA: i32 = 2;
    #[inline]
    fn get(self) -> i32 {
        i32::from(u16::from_le_bytes(self))
    }
    #[inline]
    fn put(v: i32) -> Self {
        (v.clamp(0, 1023) as u16).to_le_bytes()
    }
}

/// Converts one row of packed 8-bit RGB into three planes. At 10 bits every RGB value comes
/// back exactly ([`ycbcr_to_rgb_row`]); at 8 bits most colours move by a level or more.
pub fn rgb_to_ycbcr_row<T: Sample>(rgb: &[u8], y: &mut [T], cb: &mut [T], cr: &mut [T]) {
    let shift = SHIFT - T::EXTRA;
    let half = 1 << (shift - 1);
    let mid = 128 << T::EXTRA;
    for (((px, y), cb), cr) in rgb
        .chunks_exact(3)
        .zip(y.iter_mut())
        .zip(cb.iter_mut())
        .zip(cr.iter_mut())
    {
        let (r, g, b) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
        *y = T::put((YR * r + YG * g + YB * b + half) >> shift);
        *cb = T::put(((CBR * r + CBG * g + CBB * b + half) >> shift) + mid);
        *cr = T::put(((CRR * r + CRG * g + CRB * b + half) >> shift) + mid);
    }
}

/// Converts one row of three planes into packed 8-bit RGB.
pub fn ycbcr_to_rgb_row<T: Sample>(y: &[T], cb: &[T], cr: &[T], rgb: &mut [u8]) {
    let shift = SHIFT + T::EXTRA;
    let half = 1 << (shift - 1);
    let mid = 128 << T::EXTRA;
    for (((px, &y), &cb), &cr) in rgb
        .chunks_exact_mut(3)
        .zip(y.iter())
        .zip(cb.iter())
        .zip(cr.iter())
    {
        let yy = (y.get() << SHIFT) + half;
        let cb = cb.get() - mid;
        let cr = cr.get() - mid;
        px[0] = clamp8((yy + RCR * cr) >> shift);
        px[1] = clamp8((yy + GCB * cb + GCR * cr) >> shift);
        px[2] = clamp8((yy + BCB * cb) >> shift);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_bits_give_every_rgb_value_back() {
        let mut rgb = Vec::with_capacity(256 * 256 * 3);
        for r in 0..=255u8 {
            for g in 0..=255u8 {
                rgb.clear();
                for b in 0..=255u8 {
                    rgb.extend([r, g, b]);
                }
                let (mut y, mut cb, mut cr) = ([[0u8; 2]; 256], [[0u8; 2]; 256], [[0u8; 2]; 256]);
                rgb_to_ycbcr_row(&rgb, &mut y, &mut cb, &mut cr);
                let mut back = [0u8; 256 * 3];
                ycbcr_to_rgb_row(&y, &cb, &cr, &mut back);
                assert_eq!(&back[..], &rgb[..], "r {r} g {g}");
            }
        }
    }

    #[test]
    fn eight_bits_lose_levels() {
        // Why coding uses 10 bits: the 8-bit round trip alone changes most colours.
        let (mut changed, mut total) = (0, 0);
        for r in (0..256).step_by(3) {
            for g in (0..256).step_by(5) {
                for b in (0..256).step_by(7) {
                    let px = [r as u8, g as u8, b as u8];
                    let (mut y, mut cb, mut cr) = ([0u8], [0u8], [0u8]);
                    rgb_to_ycbcr_row(&px, &mut y, &mut cb, &mut cr);
                    let mut back = [0u8; 3];
                    ycbcr_to_rgb_row(&y, &cb, &cr, &mut back);
                    changed += usize::from(back != px);
                    total += 1;
                }
            }
        }
        assert!(changed * 2 > total, "{changed} of {total}");
    }

    #[test]
    fn grey_stays_grey_exactly() {
        for v in 0..=255u8 {
            let (mut y, mut cb, mut cr) = ([0u8], [0u8], [0u8]);
            rgb_to_ycbcr_row(&[v, v, v], &mut y, &mut cb, &mut cr);
            assert_eq!((y[0], cb[0], cr[0]), (v, 128, 128));
            let mut rgb = [0u8; 3];
            ycbcr_to_rgb_row(&y, &cb, &cr, &mut rgb);
            assert_eq!(rgb, [v, v, v]);
        }
    }

    #[test]
    fn round_trip_error_is_small() {
        let mut worst = 0i32;
        for r in (0..256).step_by(5) {
            for g in (0..256).step_by(7) {
                for b in (0..256).step_by(3) {
                    let px = [r as u8, g as u8, b as u8];
                    let (mut y, mut cb, mut cr) = ([0u8], [0u8], [0u8]);
                    rgb_to_ycbcr_row(&px, &mut y, &mut cb, &mut cr);
                    let mut back = [0u8; 3];
                    ycbcr_to_rgb_row(&y, &cb, &cr, &mut back);
                    for c in 0..3 {
                        worst = worst.max((i32::from(back[c]) - i32::from(px[c])).abs());
                    }
                }
            }
        }
        assert!(worst <= 3, "worst channel error {worst}");
    }
}
