//! SSIMULACRA2, the perceptual metric pack's quality targets are set in (Jon Sneyers' metric
//! as libjxl's `ssimulacra2` tool defines it; the `ssimulacra2` crate computes the same and is
//! the reference this module is tested against: scores are the crate's, bit for bit,
//! `agrees_with_the_crate`). What differs is how the work is done, since pack scores dozens of
//! candidates per photo:
//!
//! * one block of working memory per [`Scorer`], reused from tile to tile (the crate allocates
//!   and frees some forty planes per scale, and the kernel zeroed every page of them anew);
//! * planes throughout, the colour conversion with a cube root that vectorises;
//! * the recursive Gaussian run down columns only, the horizontal pass on the transposed
//!   plane, so that both passes work on whole rows of independent columns at once;
//! * the region scored read straight out of the images (no crops).
//!
//! The metric: both images in linear light, at six scales (each half the last, averaged in
//! linear light), converted to XYB; per scale and channel, SSIM without its luminance
//! denominator and two edge maps (artefacts: edges the original lacks; detail lost) from a
//! Gaussian of sigma 1.5, each as a mean and a 4-norm; 108 weighted terms, then a fixed curve to
//! a score of 100 (identical) down.

use image::RgbImage;
use std::f64::consts::PI;
use std::sync::OnceLock;

/// Scales scored (1:1 to 1:32), fewer where a side would drop under 8 pixels.
const SCALES: usize = 6;
/// The Gaussian's sigma, in pixels of the scale.
const SIGMA: f64 = 1.5;
/// SSIM's stabilising constant for the structure term.
const C2: f32 = 0.0009;
/// The opsin absorbance matrix of XYB (rows sum to one) and its bias.
const OPSIN: [[f32; 3]; 3] = [
    [0.30, 1.0 - 0.078 - 0.30, 0.078],
    [0.23, 1.0 - 0.078 - 0.23, 0.078],
    [
        0.243_422_69,
        0.204_767_45,
        1.0 - 0.243_422_69 - 0.204_767_45,
    ],
];
const BIAS: f32 = 0.003_793_073_4;
/// Working planes per scorer, each the size of the region: linear light of both images (6),
/// their XYB (6), one channel of each transposed, the five blurred maps, a product and two for
/// the blur.
const PLANES: usize = 22;

/// The weights of the 108 terms (per channel X, Y, B; per scale; per norm: SSIM, artefacts,
/// detail lost), as the metric defines them.
#[rustfmt::skip]
const WEIGHTS: [f64; 108] = [
    0.0, 0.0007376606707406586, 0.0, 0.0, 0.0007793481682867309, 0.0,
    0.0, 0.0004371155730107379, 0.0, 1.1041726426657346, 0.00066284834129271, 0.00015231632783718752,
    0.0, 0.0016406437456599754, 0.0, 1.8422455520539298, 11.441172603757666, 0.0,
    0.0007989109436015163, 0.000176816438078653, 0.0, 1.8787594979546387, 10.94906990605142, 0.0,
    0.0007289346991508072, 0.9677937080626833, 0.0, 0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053,
    0.0004550992113792063, 0.0, 0.0, 0.0013648766163243398, 0.0, 0.0,
    0.0, 0.0, 0.0, 7.466890328078848, 0.0, 17.445833984131262,
    0.0006235601634041466, 0.0, 0.0, 6.683678146179332, 0.00037724407979611296, 1.027889937768264,
    225.20515300849274, 0.0, 0.0, 19.213238186143016, 0.0011401524586618361, 0.001237755635509985,
    176.39317598450694, 0.0, 0.0, 24.43300999870476, 0.28520802612117757, 0.0004485436923833408,
    0.0, 0.0, 0.0, 34.77906344483772, 44.835625328877896, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0008680556573291698, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0005313191874358747, 0.0, 0.00016533814161379112, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0004179171803251336, 0.0017290828234722833, 0.0,
    0.0020827005846636437, 0.0, 0.0, 8.826982764996862, 23.19243343998926, 0.0,
    95.1080498811086, 0.9863978034400682, 0.9834382792465353, 0.0012286405048278493, 171.2667255897307, 0.9807858872435379,
    0.0, 0.0, 0.0, 0.0005130064588990679, 0.0, 0.00010854057858411537,
];

/// The recursive Gaussian (Charalampidis 2016, "Recursive implementation of the Gaussian filter
/// using truncated cosine functions"): three second-order sections, each
/// `o[n] = n2 * (x[n - r - 1] + x[n + r - 1]) - d1 * o[n - 1] - o[n - 2]`, summed.
struct Gaussian {
    radius: usize,
    n2: [f32; 3],
    d1: [f32; 3],
}

fn gaussian() -> &'static Gaussian {
    static G: OnceLock<Gaussian> = OnceLock::new();
    G.get_or_init(|| {
        let radius = 3.2795f64.mul_add(SIGMA, 0.2546).round();
        let omega = [1.0, 3.0, 5.0].map(|k: f64| k * PI / (2.0 * radius));
        let p = [
            1.0 / (0.5 * omega[0]).tan(),
            -1.0 / (0.5 * omega[1]).tan(),
            1.0 / (0.5 * omega[2]).tan(),
        ];
        let r = [
            p[0] * p[0] / omega[0].sin(),
            -p[1] * p[1] / omega[1].sin(),
            p[2] * p[2] / omega[2].sin(),
        ];
        let rho = omega.map(|w| (-0.5 * SIGMA * SIGMA * w * w).exp() / radius);
        let d13 = p[0] * r[1] - r[0] * p[1];
        let d35 = p[1] * r[2] - r[1] * p[2];
        let d51 = p[2] * r[0] - r[2] * p[0];
        let (z15, z35) = (d35 / d13, d51 / d13);
        // The section weights: unit gain, the Gaussian's variance, and the truncation term.
        let beta = solve3(
            [p, r, [z15, z35, 1.0]],
            [
                1.0,
                radius * radius - SIGMA * SIGMA,
                z15 * rho[0] + z35 * rho[1] + rho[2],
            ],
        );
        Gaussian {
            radius: radius as usize,
            n2: [0, 1, 2].map(|k| (-beta[k] * (omega[k] * (radius + 1.0)).cos()) as f32),
            d1: omega.map(|w| (-2.0 * w.cos()) as f32),
        }
    })
}

/// `x` with `a x = b`, by Cramer's rule.
fn solve3(a: [[f64; 3]; 3], b: [f64; 3]) -> [f64; 3] {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(a);
    [0, 1, 2].map(|col| {
        let mut m = a;
        for (row, &v) in b.iter().enumerate() {
            m[row][col] = v;
        }
        det(m) / d
    })
}

/// Cube root of `x >= 0`, rounded to single precision from a double-precision result (so that
/// it is the correctly rounded root but for the rarest ties), in a form that vectorises: a
/// first guess from the exponent bits, then three Halley steps (cubic convergence: the guess's
/// few per cent become double rounding).
#[inline(always)]
fn cbrt(x: f32) -> f32 {
    let x = f64::from(x);
    let mut y = f64::from_bits(x.to_bits() / 3 + 0x2a9f_7893_782d_a1ce);
    for _ in 0..3 {
        let y3 = y * y * y;
        y *= (y3 + 2.0 * x) / (2.0 * y3 + x);
    }
    y as f32
}

/// A SSIMULACRA2 scorer: its working memory, kept from one region to the next.
#[derive(Default)]
pub struct Scorer {
    memory: Vec<f32>,
}

impl Scorer {
    pub fn new() -> Self {
        Self::default()
    }

    /// SSIMULACRA2 of `region` (x, y, width, height) of `distorted` against the same region of
    /// `original`; `linear` gives each 8-bit sRGB level in linear light. `None` where the
    /// images differ in size, the region is not inside them, or a side is under 8 pixels.
    pub fn score(
        &mut self,
        original: &RgbImage,
        distorted: &RgbImage,
        region: (u32, u32, u32, u32),
        linear: &[f32; 256],
    ) -> Option<f64> {
        let (x0, y0, w32, h32) = region;
        if original.dimensions() != distorted.dimensions()
            || w32 < 8
            || h32 < 8
            || x0.checked_add(w32)? > original.width()
            || y0.checked_add(h32)? > original.height()
        {
            return None;
        }
        let (w, h) = (w32 as usize, h32 as usize);
        let plane = w * h;
        let rows = 8 * w.max(h);
        let need = PLANES * plane + rows;
        if self.memory.len() < need {
            // The old block freed first; the new one zeroed by the allocator (fresh pages),
            // not written twice.
            self.memory = Vec::new();
            self.memory = vec![0.0; need];
        }
        let (planes, rows) = self.memory[..need].split_at_mut(PLANES * plane);
        let mut planes = planes.chunks_exact_mut(plane);
        let mut next = || planes.next().unwrap_or_default();
        let mut la = [next(), next(), next()];
        let mut lb = [next(), next(), next()];
        let mut xa = [next(), next(), next()];
        let mut xb = [next(), next(), next()];
        let mut work = Work {
            mu1: next(),
            mu2: next(),
            s11: next(),
            s22: next(),
            s12: next(),
            product: next(),
            t1: next(),
            t2: next(),
            at: next(),
            bt: next(),
            rows,
        };
        to_linear(original, region, linear, &mut la);
        to_linear(distorted, region, linear, &mut lb);

        let mut terms = Vec::with_capacity(SCALES);
        let (mut w, mut h) = (w, h);
        for scale in 0..SCALES {
            // As the metric is defined: a scale is scored when the one before was at least
            // 8 pixels a side (so the last may be smaller).
            if w < 8 || h < 8 {
                break;
            }
            if scale > 0 {
                for p in la.iter_mut().chain(lb.iter_mut()) {
                    halve(p, w, h);
                }
                (w, h) = (w.div_ceil(2), h.div_ceil(2));
            }
            let n = w * h;
            to_xyb(&la, &mut xa, n);
            to_xyb(&lb, &mut xb, n);
            terms.push(std::array::from_fn(|c| {
                work.channel(&xa[c][..n], &xb[c][..n], w, h)
            }));
        }
        Some(combine(&terms))
    }
}

/// The blurred maps and scratch of one scale's channel.
struct Work<'a> {
    mu1: &'a mut [f32],
    mu2: &'a mut [f32],
    s11: &'a mut [f32],
    s22: &'a mut [f32],
    s12: &'a mut [f32],
    product: &'a mut [f32],
    t1: &'a mut [f32],
    t2: &'a mut [f32],
    at: &'a mut [f32],
    bt: &'a mut [f32],
    rows: &'a mut [f32],
}

impl Work<'_> {
    /// The six terms of one channel at one scale: SSIM's mean and 4-norm, the artefact map's,
    /// the detail-lost map's.
    fn channel(&mut self, a: &[f32], b: &[f32], w: usize, h: usize) -> [f64; 6] {
        let n = w * h;
        // The blur takes its planes transposed: the products of the transposed planes are the
        // transposed products.
        let (at, bt) = (&mut self.at[..n], &mut self.bt[..n]);
        transpose(a, at, w, h);
        transpose(b, bt, w, h);
        let (t1, t2, rows) = (&mut *self.t1, &mut *self.t2, &mut *self.rows);
        blur(at, &mut self.mu1[..n], (w, h), t1, t2, rows);
        blur(bt, &mut self.mu2[..n], (w, h), t1, t2, rows);
        let (at, bt) = (&*at, &*bt);
        for (sink, (x, y)) in [(&mut *self.s11, (at, at)), (&mut *self.s22, (bt, bt))]
            .into_iter()
            .chain([(&mut *self.s12, (at, bt))])
        {
            for ((p, &u), &v) in self.product[..n].iter_mut().zip(x).zip(y) {
                *p = u * v;
            }
            blur(&self.product[..n], &mut sink[..n], (w, h), t1, t2, rows);
        }
        let (mu1, mu2) = (&self.mu1[..n], &self.mu2[..n]);
        let (s11, s22, s12) = (&self.s11[..n], &self.s22[..n], &self.s12[..n]);
        // One pass for both maps; each sum adds its terms in pixel order, as the reference's.
        let (a, b) = (&a[..n], &b[..n]);
        let mut ssim = [0.0f64; 2];
        let mut edge = [0.0f64; 4];
        for i in 0..n {
            let (m1, m2) = (mu1[i], mu2[i]);
            let diff = m1 - m2;
            let num_m = diff.mul_add(-diff, 1.0);
            let num_s = 2f32.mul_add(s12[i] - m1 * m2, C2);
            let denom_s = (s11[i] - m1 * m1) + (s22[i] - m2 * m2) + C2;
            let d = (1.0 - f64::from((num_m * num_s) / denom_s)).max(0.0);
            ssim[0] += d;
            ssim[1] += (d * d) * (d * d);
            let d =
                (1.0 + f64::from((b[i] - m2).abs())) / (1.0 + f64::from((a[i] - m1).abs())) - 1.0;
            let artefact = d.max(0.0);
            let lost = (-d).max(0.0);
            edge[0] += artefact;
            edge[1] += (artefact * artefact) * (artefact * artefact);
            edge[2] += lost;
            edge[3] += (lost * lost) * (lost * lost);
        }
        let per = 1.0 / n as f64;
        let norm4 = |s: f64| (per * s).sqrt().sqrt();
        [
            per * ssim[0],
            norm4(ssim[1]),
            per * edge[0],
            norm4(edge[1]),
            per * edge[2],
            norm4(edge[3]),
        ]
    }
}

/// The score from each scale's channel terms ([`Work::channel`]'s order).
fn combine(terms: &[[[f64; 6]; 3]]) -> f64 {
    let mut sum = 0.0f64;
    let mut weights = WEIGHTS.iter();
    for c in 0..3 {
        for scale in terms {
            let t = scale[c];
            for norm in 0..2 {
                // SSIM, artefacts, detail lost: this norm of each.
                for v in [t[norm], t[2 + norm], t[4 + norm]] {
                    sum = weights.next().copied().unwrap_or(0.0).mul_add(v.abs(), sum);
                }
            }
        }
    }
    let s = sum * 0.956_238_261_683_484_4;
    let s = (6.248_496_625_763_138e-5 * s * s).mul_add(
        s,
        2.326_765_642_916_932f64.mul_add(s, -0.020_884_521_182_843_837 * s * s),
    );
    if s > 0.0 {
        s.powf(0.627_633_646_783_138_7).mul_add(-10.0, 100.0)
    } else {
        100.0
    }
}

/// The region of an 8-bit image as three planes of linear light.
fn to_linear(
    img: &RgbImage,
    (x0, y0, w, h): (u32, u32, u32, u32),
    linear: &[f32; 256],
    out: &mut [&mut [f32]; 3],
) {
    let (w, stride) = (w as usize, img.width() as usize * 3);
    let raw = img.as_raw();
    for row in 0..h as usize {
        let start = (y0 as usize + row) * stride + x0 as usize * 3;
        let src = &raw[start..start + 3 * w];
        let at = row * w;
        let [r, g, b] = out;
        for (i, px) in src.chunks_exact(3).enumerate() {
            r[at + i] = linear[usize::from(px[0])];
            g[at + i] = linear[usize::from(px[1])];
            b[at + i] = linear[usize::from(px[2])];
        }
    }
}

/// Halves a `w`×`h` plane in place (each pixel the mean of a 2×2 block; the last row and
/// column repeated where a side is odd). Writing in order never overwrites a value still to
/// be read: output `i` reads at `i` or later.
fn halve(p: &mut [f32], w: usize, h: usize) {
    let (ow, oh) = (w.div_ceil(2), h.div_ceil(2));
    for oy in 0..oh {
        let (r0, r1) = (2 * oy * w, (2 * oy + 1).min(h - 1) * w);
        for ox in 0..ow {
            let (c0, c1) = (2 * ox, (2 * ox + 1).min(w - 1));
            let sum = p[r0 + c0] + p[r0 + c1] + p[r1 + c0] + p[r1 + c1];
            p[oy * ow + ox] = sum * 0.25;
        }
    }
}

/// Linear RGB planes to XYB, shifted and scaled into about 0..1 as the metric takes them.
fn to_xyb(lin: &[&mut [f32]; 3], out: &mut [&mut [f32]; 3], n: usize) {
    let cbrt_bias = cbrt(BIAS);
    let [r, g, b] = lin;
    let (r, g, b) = (&r[..n], &g[..n], &b[..n]);
    let [ox, oy, ob] = out;
    let (ox, oy, ob) = (&mut ox[..n], &mut oy[..n], &mut ob[..n]);
    for i in 0..n {
        let mix = |m: [f32; 3]| {
            let v = m[0].mul_add(r[i], m[1].mul_add(g[i], m[2].mul_add(b[i], BIAS)));
            cbrt(v.max(0.0)) - cbrt_bias
        };
        let (l, m, s) = (mix(OPSIN[0]), mix(OPSIN[1]), mix(OPSIN[2]));
        let x = 0.5 * (l - m);
        let y = 0.5 * (l + m);
        ox[i] = x.mul_add(14.0, 0.42);
        oy[i] = y + 0.01;
        ob[i] = (s - y) + 0.55;
    }
}

/// Gaussian blur of a `w`×`h` plane given transposed (`src_t`: `w` rows of `h`), into
/// `out` (`h` rows of `w`): along the plane's rows (down the columns of its transpose), then,
/// transposed back, down its columns. `t1`, `t2`: planes of scratch; `rows`: at least
/// `8 × max(w, h)`.
fn blur(
    src_t: &[f32],
    out: &mut [f32],
    (w, h): (usize, usize),
    t1: &mut [f32],
    t2: &mut [f32],
    rows: &mut [f32],
) {
    let n = w * h;
    columns::<true>(src_t, &mut t1[..n], h, w, rows);
    transpose(&t1[..n], &mut t2[..n], h, w);
    columns::<false>(&t2[..n], out, w, h, rows);
}

/// `src` (`h` rows of `w`) transposed into `dst` (`w` rows of `h`): by blocks of 8×8 in
/// vector registers where the build has AVX2, the edges (and other builds) element by element.
fn transpose(src: &[f32], dst: &mut [f32], w: usize, h: usize) {
    let (src, dst) = (&src[..w * h], &mut dst[..w * h]);
    // The part covered by whole blocks.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    let (fw, fh) = {
        let (fw, fh) = (w - w % 8, h - h % 8);
        for by in (0..fh).step_by(8) {
            for bx in (0..fw).step_by(8) {
                let from = &src[by * w + bx..][..7 * w + 8];
                let to = &mut dst[bx * h + by..][..7 * h + 8];
                // SAFETY: AVX2 is there (the cfg), and the slices hold the eight rows of eight
                // read and written (7 strides and 8 more).
                unsafe { transpose8(from, w, to, h) };
            }
        }
        (fw, fh)
    };
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    let (fw, fh) = (0, 0);
    for y in 0..h {
        let from = if y < fh { fw } else { 0 };
        for x in from..w {
            dst[x * h + y] = src[y * w + x];
        }
    }
}

/// One 8×8 block: rows of `from` `stride_from` apart to columns of rows of `to`
/// `stride_to` apart. The caller sees to AVX2 and to the slices' lengths (`7 × stride + 8`).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[inline(always)]
unsafe fn transpose8(from: &[f32], stride_from: usize, to: &mut [f32], stride_to: usize) {
    use std::arch::x86_64::*;
    let (p, q) = (from.as_ptr(), to.as_mut_ptr());
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(p.add(i * stride_from)));
    // Pairs of rows interleaved, then pairs of pairs, then the halves swapped across lanes.
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    for i in 0..4 {
        _mm256_storeu_ps(
            q.add(i * stride_to),
            _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]),
        );
        _mm256_storeu_ps(
            q.add((i + 4) * stride_to),
            _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]),
        );
    }
}

/// The recursive Gaussian down each column of `src` (`h` rows of `w`), every column at once,
/// zero outside the plane. `rows`: scratch of at least `8 × w`.
fn columns<const ALONG_ROWS: bool>(
    src: &[f32],
    out: &mut [f32],
    w: usize,
    h: usize,
    rows: &mut [f32],
) {
    let g = gaussian();
    let r = g.radius as isize;
    // Six rows of the sections' state and a row of zeros, cleared (the scratch is shared by
    // planes of other widths), and a row for the outputs before the first.
    let (cleared, junk) = rows.split_at_mut(7 * w);
    cleared.fill(0.0);
    let (state, zeros) = cleared.split_at_mut(6 * w);
    let (zeros, junk) = (&*zeros, &mut junk[..w]);
    let (p1, p2) = state.split_at_mut(3 * w);
    let (a1, p1) = p1.split_at_mut(w);
    let (b1, c1) = p1.split_at_mut(w);
    let (a2, p2) = p2.split_at_mut(w);
    let (b2, c2) = p2.split_at_mut(w);
    let ([n0, n1, n2], [d0, d1, d2]) = (g.n2, g.d1);
    for row in (1 - r)..h as isize {
        let (top, bottom) = (row - r - 1, row + r - 1);
        let t = if top >= 0 {
            &src[top as usize * w..][..w]
        } else {
            zeros
        };
        let b = if bottom < h as isize {
            &src[bottom as usize * w..][..w]
        } else {
            zeros
        };
        let o = if row >= 0 {
            &mut out[row as usize * w..][..w]
        } else {
            &mut *junk
        };
        for x in 0..w {
            let sum = t[x] + b[x];
            // The same filter, its steps grouped as the reference groups them for each pass.
            let step = |n: f32, d: f32, p1: f32, p2: f32| {
                if ALONG_ROWS {
                    (-d).mul_add(p1, (-1f32).mul_add(p2, sum * n))
                } else {
                    sum.mul_add(n, -p1.mul_add(d, p2))
                }
            };
            let oa = step(n0, d0, a1[x], a2[x]);
            let ob = step(n1, d1, b1[x], b2[x]);
            let oc = step(n2, d2, c1[x], c2[x]);
            a2[x] = a1[x];
            b2[x] = b1[x];
            c2[x] = c1[x];
            a1[x] = oa;
            b1[x] = ob;
            c1[x] = oc;
            o[x] = oa + ob + oc;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The crate's score of the same images (sRGB levels through its own conversion).
    pub(crate) fn reference(a: &RgbImage, b: &RgbImage) -> f64 {
        let srgb = |img: &RgbImage| {
            let data = img
                .pixels()
                .map(|p| p.0.map(|c| f32::from(c) / 255.0))
                .collect();
            ssimulacra2::Rgb::new(
                data,
                img.width() as usize,
                img.height() as usize,
                ssimulacra2::TransferCharacteristic::SRGB,
                ssimulacra2::ColorPrimaries::BT709,
            )
            .unwrap()
        };
        ssimulacra2::compute_frame_ssimulacra2(srgb(a), srgb(b)).unwrap()
    }

    fn levels() -> [f32; 256] {
        *crate::quality::linear_levels().unwrap()
    }

    #[test]
    fn cube_roots_are_correctly_rounded() {
        let mut x = 1e-6f32;
        let mut off = 0;
        while x < 4.0 {
            let want = f64::from(x).cbrt() as f32;
            off += usize::from(cbrt(x) != want);
            x *= 1.0001;
        }
        assert_eq!(off, 0);
        assert_eq!(cbrt(0.0), 0.0);
    }

    /// Transposed, every value lands where it should, on sides that are and are not
    /// multiples of the block.
    #[test]
    fn transposes_move_every_value() {
        for (w, h) in [
            (8usize, 8usize),
            (16, 24),
            (13, 9),
            (3, 20),
            (37, 41),
            (64, 7),
        ] {
            let src: Vec<f32> = (0..w * h).map(|i| i as f32).collect();
            let mut dst = vec![-1.0f32; w * h];
            transpose(&src, &mut dst, w, h);
            for y in 0..h {
                for x in 0..w {
                    assert_eq!(dst[x * h + y], src[y * w + x], "{w}x{h} at {x},{y}");
                }
            }
        }
    }

    /// The blur keeps a constant inside the plane and spreads a point as a Gaussian of
    /// sigma 1.5 (weights summing to one, the centre's about 1 / (2 pi 1.5^2)).
    #[test]
    fn the_blur_is_a_gaussian_of_sigma_one_and_a_half() {
        let (w, h) = (41, 37);
        let mut point = vec![0.0f32; w * h];
        point[18 * w + 20] = 1.0;
        let mut out = vec![0.0f32; w * h];
        let (mut t1, mut t2, mut pt) = (vec![0.0; w * h], vec![0.0; w * h], vec![0.0; w * h]);
        let mut rows = vec![0.0; 8 * w.max(h)];
        transpose(&point, &mut pt, w, h);
        blur(&pt, &mut out, (w, h), &mut t1, &mut t2, &mut rows);
        let total: f32 = out.iter().sum();
        assert!((total - 1.0).abs() < 1e-3, "{total}");
        let centre = out[18 * w + 20];
        let ideal = 1.0 / (2.0 * std::f32::consts::PI * 2.25);
        assert!(
            (centre - ideal).abs() < 0.01 * ideal * 5.0,
            "{centre} vs {ideal}"
        );
        // Symmetric, and falling off as exp(-d^2 / 4.5).
        let right = out[18 * w + 22];
        let left = out[18 * w + 18];
        assert!((right - left).abs() < 1e-5, "{left} {right}");
        let ratio = right / centre;
        assert!((ratio - (-4.0f32 / 4.5).exp()).abs() < 0.02, "{ratio}");
    }

    /// On images of many sizes (odd, tall, tiny, from one scale to six) and kinds of damage,
    /// the score is the crate's, bit for bit.
    #[test]
    fn agrees_with_the_crate() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut noise = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut scorer = Scorer::new();
        let linear = levels();
        for (w, h, damage) in [
            (8u32, 8u32, 3i32),
            (9, 15, 9),
            (64, 48, 2),
            (97, 61, 5),
            (130, 257, 20),
            (300, 200, 1),
            (517, 389, 4),
            (260, 33, 60),
        ] {
            let a = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (x * 3 + y) as u8,
                    ((x * y) / 7) as u8,
                    (200 - (x + 2 * y) % 190) as u8,
                ])
            });
            let mut b = a.clone();
            for (x, y, p) in b.enumerate_pixels_mut() {
                for c in p.0.iter_mut() {
                    let d = (noise() % (2 * damage as u64 + 1)) as i32 - damage;
                    *c = (i32::from(*c) + if (x / 16 + y / 16) % 3 == 0 { 2 * d } else { d })
                        .clamp(0, 255) as u8;
                }
            }
            let want = reference(&a, &b);
            let got = scorer.score(&a, &b, (0, 0, w, h), &linear).unwrap();
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{w}x{h} damage {damage}: {got} vs the crate's {want}"
            );
            assert_eq!(scorer.score(&a, &a, (0, 0, w, h), &linear), Some(100.0));
        }
    }

    /// A region is scored as the same pixels cut out would be; regions outside the image or
    /// under 8 pixels are refused.
    #[test]
    fn regions_score_as_their_crops() {
        let linear = levels();
        let a = RgbImage::from_fn(120, 90, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 2) as u8, 77])
        });
        let mut b = a.clone();
        for (x, y, p) in b.enumerate_pixels_mut() {
            p.0[0] = p.0[0].wrapping_add(((x ^ y) % 7) as u8);
        }
        let crop = |i: &RgbImage| image::imageops::crop_imm(i, 30, 20, 50, 40).to_image();
        let mut s = Scorer::new();
        let region = s.score(&a, &b, (30, 20, 50, 40), &linear).unwrap();
        let cut = s
            .score(&crop(&a), &crop(&b), (0, 0, 50, 40), &linear)
            .unwrap();
        assert_eq!(region.to_bits(), cut.to_bits());
        assert_eq!(s.score(&a, &b, (100, 20, 50, 40), &linear), None);
        assert_eq!(s.score(&a, &b, (0, 0, 7, 40), &linear), None);
        assert_eq!(s.score(&a, &crop(&b), (0, 0, 50, 40), &linear), None);
    }
}
