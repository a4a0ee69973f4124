//! Frame order by visual similarity.
//!
//! Each image gets a signature: a 16×16 thumbnail (area averages) in full-range YCbCr plus its
//! alpha, as the image is stored in its track (turned when it is). The distance between two
//! images is the mean squared difference of their signatures. A track's images are then put in
//! the order of a greedy nearest-neighbour tour from its first image in path order, improved
//! by 2-opt, so that images which predict each other well share GOPs; and a GOP is cut early
//! where the tour jumps to different content (a new scene), so that a GOP does not mix scenes.
//!
//! Everything is integer arithmetic on fixed inputs, ties broken by position: the same album
//! gives the same order, hence the same archive bytes.

use image::{DynamicImage, GenericImageView};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Thumbnail side.
pub const SIDE: usize = 16;
/// Values in a signature: Y, Cb, Cr and alpha for each thumbnail cell.
const LEN: usize = SIDE * SIDE * 4;
/// Tracks with more images are toured in windows of this many images (in path order): the
/// tour costs the square of its length in distances.
pub const WINDOW: usize = 1000;
/// 2-opt passes at most (each pass is quadratic in the window).
const MAX_PASSES: usize = 20;
/// `auto` uses the similarity order when its tour is at most this share of the path order's
/// length (the sum of distances between consecutive images).
pub const AUTO_RATIO: f64 = 0.9;
/// A GOP is cut before an image whose distance to the previous one is over this many times
/// the median step of the tour...
pub const CUT_FACTOR: u64 = 4;
/// ...and over this mean squared difference (RMS 16 levels: a visibly different picture).
pub const CUT_FLOOR: u64 = 256;

/// How `pack` orders the frames of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The similarity order where it is predicted to pay (its tour clearly shorter than the
    /// path order's), else path order.
    #[default]
    Auto,
    /// Path order (the album's walk order), GOPs of fixed length.
    Path,
    /// Similarity order, with GOPs cut at scene changes.
    Similar,
}

/// A small picture of an image, compared with [`distance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature(Vec<u8>);

impl Signature {
    /// The signature of `img`, turned 90° clockwise first when `rotated` (as the track stores
    /// it). Images smaller than the thumbnail repeat their pixels.
    pub fn of(img: &DynamicImage, rotated: bool) -> Signature {
        let (w, h) = img.dimensions();
        let (w, h) = (w.max(1) as usize, h.max(1) as usize);
        let has_alpha = img.color().has_alpha();
        // Sums of R, G, B, A per cell, over the pixels of the cell's span.
        let span = |i: usize, len: usize| {
            let a = i * len / SIDE;
            let b = ((i + 1) * len / SIDE).max(a + 1).min(len);
            (a.min(len - 1), b)
        };
        let mut cells = vec![[0u8; 4]; SIDE * SIDE];
        let rgba = img.as_rgba8();
        let rgb = img.as_rgb8();
        let converted;
        // Rows of 8-bit RGB(A) without copying the image when it already is one.
        let (raw, channels): (&[u8], usize) = match (rgba, rgb) {
            (Some(b), _) => (b.as_raw(), 4),
            (None, Some(b)) => (b.as_raw(), 3),
            _ if has_alpha => {
                converted = img.to_rgba8().into_raw();
                (&converted, 4)
            }
            _ => {
                converted = img.to_rgb8().into_raw();
                (&converted, 3)
            }
        };
        for cy in 0..SIDE {
            let (y0, y1) = span(cy, h);
            for cx in 0..SIDE {
                let (x0, x1) = span(cx, w);
                let mut sum = [0u64; 4];
                for y in y0..y1 {
                    let row = &raw[(y * w + x0) * channels..(y * w + x1) * channels];
                    for px in row.chunks_exact(channels) {
                        sum[0] += u64::from(px[0]);
                        sum[1] += u64::from(px[1]);
                        sum[2] += u64::from(px[2]);
                        sum[3] += if channels == 4 { u64::from(px[3]) } else { 255 };
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)).max(1) as u64;
                let avg = sum.map(|s| ((s + n / 2) / n) as u8);
                cells[cy * SIDE + cx] = avg;
            }
        }
        if rotated {
            // Clockwise: the cell at (x, y) of the turned grid is (y, SIDE-1-x) of the original.
            let old = cells.clone();
            for y in 0..SIDE {
                for x in 0..SIDE {
                    cells[y * SIDE + x] = old[(SIDE - 1 - x) * SIDE + y];
                }
            }
        }
        let mut v = Vec::with_capacity(LEN);
        for [r, g, b, a] in cells {
            let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
            // BT.601 full range, in 1/65536 units, rounded.
            let y = (19595 * r + 38470 * g + 7471 * b + 32768) >> 16;
            let cb = ((-11059 * r - 21709 * g + 32768 * b + 32768) >> 16) + 128;
            let cr = ((32768 * r - 27439 * g - 5329 * b + 32768) >> 16) + 128;
            v.extend([y, cb, cr].map(|c| c.clamp(0, 255) as u8));
            v.push(a);
        }
        Signature(v)
    }
}

/// Mean squared difference between two signatures (0 = same thumbnail, 65,025 at most).
pub fn distance(a: &Signature, b: &Signature) -> u64 {
    let ssd: u64 =
        a.0.iter()
            .zip(&b.0)
            .map(|(&x, &y)| {
                let d = u64::from(x.abs_diff(y));
                d * d
            })
            .sum();
    ssd / LEN as u64
}

/// Signatures of `n` images, decoded by `decode(i)` (which gives the image and whether the
/// track stores it turned), on every core. `big(i)`: images so large that only one of them is
/// decoded at a time (bounds memory). An image that does not decode has no signature.
pub fn signatures(
    n: usize,
    big: impl Fn(usize) -> bool + Sync,
    decode: impl Fn(usize) -> Option<(DynamicImage, bool)> + Sync,
) -> Vec<Option<Signature>> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |c| c.get())
        .clamp(1, n.max(1));
    let next = AtomicUsize::new(0);
    let one_big = Mutex::new(());
    let results: Mutex<Vec<Option<Signature>>> = Mutex::new(vec![None; n]);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let sig = {
                    let _guard = big(i).then(|| one_big.lock());
                    decode(i).map(|(img, rotated)| Signature::of(&img, rotated))
                };
                if let Ok(mut r) = results.lock() {
                    r[i] = sig;
                }
            });
        }
    });
    results.into_inner().unwrap_or_default()
}

/// How a track's images are ordered: positions into the list given to [`plan`], and before
/// which positions of that order a new GOP starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `order[k]` is the image coded k-th.
    pub order: Vec<usize>,
    /// `cut[k]`: start a GOP at the k-th coded image (scene change).
    pub cut: Vec<bool>,
    /// The similarity order was chosen (false: path order, no cuts).
    pub similar: bool,
    /// Sum of distances between consecutive images in path order, and along the tour.
    pub path_length: u64,
    pub tour_length: u64,
    /// Tour length before 2-opt.
    pub greedy_length: u64,
}

impl Plan {
    fn path(n: usize) -> Plan {
        Plan {
            order: (0..n).collect(),
            cut: vec![false; n],
            similar: false,
            path_length: 0,
            tour_length: 0,
            greedy_length: 0,
        }
    }
}

/// Orders the images of one track (given in path order). Images without a signature (they
/// will not decode) go last, in path order; under `Order::Path` nothing moves.
pub fn plan(sigs: &[Option<&Signature>], mode: Order) -> Plan {
    let n = sigs.len();
    if mode == Order::Path || n < 3 {
        return Plan::path(n);
    }
    let known: Vec<usize> = (0..n).filter(|&i| sigs[i].is_some()).collect();
    let sig = |i: usize| sigs[i].unwrap_or_else(|| unreachable!("only images with signatures"));
    let length = |order: &[usize]| -> u64 {
        order
            .windows(2)
            .map(|w| distance(sig(w[0]), sig(w[1])))
            .sum()
    };
    let path_length = length(&known);
    let mut order = Vec::with_capacity(n);
    let mut greedy_length = 0;
    for window in known.chunks(WINDOW) {
        let (tour, greedy) = tour(&window.iter().map(|&i| sig(i)).collect::<Vec<_>>());
        greedy_length += greedy;
        order.extend(tour.into_iter().map(|k| window[k]));
    }
    let tour_length = length(&order);
    let similar = match mode {
        Order::Similar => true,
        Order::Auto => (tour_length as f64) <= AUTO_RATIO * path_length as f64,
        Order::Path => false,
    };
    if !similar {
        return Plan {
            path_length,
            tour_length,
            greedy_length,
            ..Plan::path(n)
        };
    }
    let steps: Vec<u64> = order
        .windows(2)
        .map(|w| distance(sig(w[0]), sig(w[1])))
        .collect();
    let mut sorted = steps.clone();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    let threshold = (median * CUT_FACTOR).max(CUT_FLOOR);
    let mut cut = vec![false; n];
    for (k, &d) in steps.iter().enumerate() {
        cut[k + 1] = d > threshold;
    }
    order.extend((0..n).filter(|&i| sigs[i].is_none()));
    Plan {
        order,
        cut,
        similar,
        path_length,
        tour_length,
        greedy_length,
    }
}

/// An open tour through `sigs` from the first: greedy nearest neighbour (or the given order
/// when that is shorter), then 2-opt. Returns the order and the greedy tour's length.
fn tour(sigs: &[&Signature]) -> (Vec<usize>, u64) {
    let n = sigs.len();
    if n < 3 {
        return ((0..n).collect(), 0);
    }
    // Distance matrix (n ≤ WINDOW: at most 4 MB).
    let mut d = vec![0u32; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let v = distance(sigs[i], sigs[j]) as u32;
            d[i * n + j] = v;
            d[j * n + i] = v;
        }
    }
    let dist = |a: usize, b: usize| u64::from(d[a * n + b]);
    let mut used = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut at = 0;
    used[0] = true;
    order.push(0);
    for _ in 1..n {
        // Nearest unused; the first in path order on ties.
        let mut best: Option<(u64, usize)> = None;
        for (j, &u) in used.iter().enumerate() {
            if !u && best.is_none_or(|(bd, _)| dist(at, j) < bd) {
                best = Some((dist(at, j), j));
            }
        }
        let Some((_, j)) = best else { break };
        used[j] = true;
        order.push(j);
        at = j;
    }
    let greedy: u64 = order.windows(2).map(|w| dist(w[0], w[1])).sum();
    // Greedy tours can end worse than the path order (stragglers left for the end): 2-opt
    // starts from the shorter of the two.
    let path: u64 = (1..n).map(|k| dist(k - 1, k)).sum();
    if path <= greedy {
        order = (0..n).collect();
    }
    // 2-opt on the open path (the first image stays first): reverse order[i..=j] when that
    // shortens the tour.
    for _ in 0..MAX_PASSES {
        let mut improved = false;
        for i in 1..n - 1 {
            for j in i + 1..n {
                let (a, b, c) = (order[i - 1], order[i], order[j]);
                let before = dist(a, b) + order.get(j + 1).map_or(0, |&e| dist(c, e));
                let after = dist(a, c) + order.get(j + 1).map_or(0, |&e| dist(b, e));
                if after < before {
                    order[i..=j].reverse();
                    improved = true;
                }
            }
        }
        if !improved {
            break;
        }
    }
    (order, greedy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn scene(kind: u32, variant: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(64, 48, |x, y| {
            let v = match kind {
                0 => (x * 4 + variant) as u8,
                _ => 255 - (y * 5 + variant) as u8,
            };
            Rgb([v, v / 2, 255 - v])
        }))
    }

    #[test]
    fn alternating_scenes_are_put_together_with_a_cut_between() {
        let sigs: Vec<Signature> = (0..8)
            .map(|i| Signature::of(&scene(i % 2, i), false))
            .collect();
        let refs: Vec<Option<&Signature>> = sigs.iter().map(Some).collect();
        let p = plan(&refs, Order::Similar);
        assert_eq!(p.order, vec![0, 2, 4, 6, 7, 5, 3, 1]);
        assert_eq!(
            p.cut,
            vec![false, false, false, false, true, false, false, false]
        );
        assert!(p.tour_length * 3 < p.path_length, "{p:?}");
        // Auto finds it pays; path keeps the walk order.
        assert_eq!(plan(&refs, Order::Auto).order, p.order);
        assert_eq!(plan(&refs, Order::Path).order, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn auto_keeps_an_album_already_in_order() {
        // A slow pan: path order is already the shortest tour.
        let sigs: Vec<Signature> = (0..10)
            .map(|i| Signature::of(&scene(0, i * 10), false))
            .collect();
        let refs: Vec<Option<&Signature>> = sigs.iter().map(Some).collect();
        let p = plan(&refs, Order::Auto);
        assert!(!p.similar);
        assert_eq!(p.order, (0..10).collect::<Vec<_>>());
        assert!(p.cut.iter().all(|c| !c));
    }

    #[test]
    fn images_without_signature_go_last() {
        let a = Signature::of(&scene(0, 0), false);
        let b = Signature::of(&scene(1, 0), false);
        let refs = vec![Some(&a), None, Some(&b), Some(&a), None];
        let p = plan(&refs, Order::Similar);
        assert_eq!(p.order, vec![0, 3, 2, 1, 4]);
    }

    #[test]
    fn two_opt_never_lengthens_the_greedy_tour() {
        // Points on a noisy curve, where greedy tours leave stragglers.
        let sigs: Vec<Signature> = (0..40u32)
            .map(|i| Signature::of(&scene(i % 3 / 2, (i * 37) % 50), false))
            .collect();
        let refs: Vec<&Signature> = sigs.iter().collect();
        let (order, greedy) = tour(&refs);
        let len: u64 = order
            .windows(2)
            .map(|w| distance(refs[w[0]], refs[w[1]]))
            .sum();
        assert!(len <= greedy);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..40).collect::<Vec<_>>(), "a permutation");
        assert_eq!(order[0], 0, "starts at the first image");
    }

    #[test]
    fn signature_sees_rotation_alpha_and_tiny_images() {
        let wide = RgbImage::from_fn(40, 20, |x, _| Rgb([(x * 6) as u8, 0, 0]));
        let tall = image::imageops::rotate270(&wide);
        let a = Signature::of(&DynamicImage::ImageRgb8(wide), false);
        // Portrait turned clockwise as the track stores it: the same picture as the landscape
        // (but for the rounding of cell spans, which run the other way).
        let b = Signature::of(&DynamicImage::ImageRgb8(tall.clone()), true);
        assert!(distance(&a, &b) <= 2, "{}", distance(&a, &b));
        assert!(distance(&a, &Signature::of(&DynamicImage::ImageRgb8(tall), false)) > 100);
        let opaque = Signature::of(&DynamicImage::ImageRgba8(RgbaImage::new(8, 8)), false);
        let clear = Signature::of(
            &DynamicImage::ImageRgba8(RgbaImage::from_pixel(8, 8, Rgba([0, 0, 0, 255]))),
            false,
        );
        assert!(distance(&opaque, &clear) > 1000);
        let one = Signature::of(
            &DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([9, 9, 9]))),
            false,
        );
        assert_eq!(one.0.len(), LEN);
    }
}
