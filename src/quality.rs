//! Image quality scores: SSIMULACRA2 (perceptual; 90 = visually lossless) and PSNR.

use crate::ssim2;
use image::RgbImage;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("dimensions differ: {0}x{1} vs {2}x{3}")]
    Dimensions(u32, u32, u32, u32),
    #[error("SSIMULACRA2 failed: {0}")]
    Ssimulacra2(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub ssimulacra2: f64,
    pub psnr: f64,
}

/// 8-bit sRGB levels in linear light, as the scorer's own sRGB conversion gives them: made by
/// converting the 256 levels with it, so that scores are bit for bit those of handing it
/// 8-bit sRGB, without a `powf` per sample (a tenth of pack's time on large photos).
pub(crate) fn linear_levels() -> Result<&'static [f32; 256], QualityError> {
    static LEVELS: std::sync::OnceLock<Result<[f32; 256], String>> = std::sync::OnceLock::new();
    let made = LEVELS.get_or_init(|| {
        let ramp = (0..=255u8)
            .map(|v| [f32::from(v) / 255.0; 3])
            .collect::<Vec<_>>();
        let rgb = ssimulacra2::Rgb::new(
            ramp,
            256,
            1,
            ssimulacra2::TransferCharacteristic::SRGB,
            ssimulacra2::ColorPrimaries::BT709,
        )
        .map_err(|e| format!("{e:?}"))?;
        let linear = ssimulacra2::LinearRgb::try_from(rgb).map_err(|e| format!("{e:?}"))?;
        let mut levels = [0.0f32; 256];
        for (level, px) in levels.iter_mut().zip(linear.data()) {
            *level = px[0];
        }
        Ok(levels)
    });
    made.as_ref()
        .map_err(|e| QualityError::Ssimulacra2(e.clone()))
}

/// Images larger than this many pixels are scored tile by tile (the scorer needs 88 bytes of
/// working memory per pixel, `ssim2`: a 12 MP photo would need about 1 GB at once).
pub const MAX_WHOLE_PIXELS: u64 = 1_500_000;
/// Side of the square tiles large images are scored in.
pub const TILE: u32 = 1024;
/// Where [`TILE`] would make tiles of more than [`MAX_TILE_PIXELS`] (photos of 12 MP: 1 MP
/// tiles), tiles of this side instead (0.4 MP there): two of them, scored side by side, take
/// less memory than one tile of 1 MP did.
pub const SMALL_TILE: u32 = 724;
/// The largest tile [`TILE`] may make (a 4K frame's tiles, 960×720, stay as they are).
pub const MAX_TILE_PIXELS: u64 = 786_432;
/// Tiles scored at the same time in the whole process, whichever threads score them: the
/// memory of scoring stays that of two tiles however many images are scored side by side.
const SCORING_SLOTS: usize = 2;

/// A counting semaphore of [`SCORING_SLOTS`] (a poisoned lock is taken over: the count
/// stays right, as nothing panics while holding it), which also lends each slot a scorer: the
/// working memory of one tile, kept for the next tile while tiles are being scored
/// ([`Scoring`]) and given back to the system when none are.
struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
}

struct SlotState {
    used: usize,
    spare: Vec<ssim2::Scorer>,
    scoring: usize,
}

static SLOTS: Slots = Slots {
    state: Mutex::new(SlotState {
        used: 0,
        spare: Vec::new(),
        scoring: 0,
    }),
    freed: Condvar::new(),
};

/// One slot of a [`Slots`] and its scorer, given back when dropped.
struct Slot {
    slots: &'static Slots,
    scorer: ssim2::Scorer,
}

/// Tiles being scored (a call of [`scores_of`]): while any are, the slots' scorers are kept.
struct Scoring(&'static Slots);

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&'static self) -> Slot {
        let mut state = self.lock();
        while state.used >= SCORING_SLOTS {
            state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.used += 1;
        let scorer = state.spare.pop().unwrap_or_default();
        Slot {
            slots: self,
            scorer,
        }
    }

    fn scoring(&'static self) -> Scoring {
        self.lock().scoring += 1;
        Scoring(self)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        state.used = state.used.saturating_sub(1);
        if state.scoring > 0 {
            state.spare.push(std::mem::take(&mut self.scorer));
        }
        self.slots.freed.notify_one();
    }
}

impl Drop for Scoring {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.scoring = state.scoring.saturating_sub(1);
        if state.scoring == 0 {
            state.spare.clear();
        }
    }
}

/// Scores `distorted` against `original`. Images under 8×8 pixels (too small for
/// SSIMULACRA2) are scored by enlarging both by pixel replication; images over
/// [`MAX_WHOLE_PIXELS`] get the worst score of their tiles ([`tiles`]; a conservative
/// score: every region must be good), scored on two threads.
pub fn score(original: &RgbImage, distorted: &RgbImage) -> Result<Scores, QualityError> {
    if original.dimensions() != distorted.dimensions() {
        return Err(QualityError::Dimensions(
            original.width(),
            original.height(),
            distorted.width(),
            distorted.height(),
        ));
    }
    let psnr = psnr(original, distorted);
    if original.as_raw() == distorted.as_raw() {
        return Ok(Scores {
            ssimulacra2: 100.0,
            psnr,
        });
    }
    let (w, h) = original.dimensions();
    let ssimulacra2 = if u64::from(w) * u64::from(h) > MAX_WHOLE_PIXELS {
        worst_tile(original, distorted, None)?
    } else {
        ssimulacra2_of(original, distorted)?
    };
    Ok(Scores { ssimulacra2, psnr })
}

/// The SSIMULACRA2 of one tile (x, y, width, height) of two images, infinity where the tile
/// is the same in both; the scoring itself takes a slot of [`SLOTS`].
fn tile_score(
    original: &RgbImage,
    distorted: &RgbImage,
    (x, y, w, h): (u32, u32, u32, u32),
) -> Result<f64, QualityError> {
    let same =
        (y..y + h).all(|row| region_row(original, x, row, w) == region_row(distorted, x, row, w));
    if same {
        return Ok(f64::INFINITY);
    }
    if w < 8 || h < 8 {
        let a = image::imageops::crop_imm(original, x, y, w, h).to_image();
        let b = image::imageops::crop_imm(distorted, x, y, w, h).to_image();
        return ssimulacra2_of(&a, &b);
    }
    let mut slot = SLOTS.take();
    slot.scorer
        .score(original, distorted, (x, y, w, h), linear_levels()?)
        .ok_or(QualityError::Dimensions(w, h, w, h))
}

/// `w` pixels of row `y` from column `x` (`None` outside the image).
fn region_row(img: &RgbImage, x: u32, y: u32, w: u32) -> Option<&[u8]> {
    let start = (y as usize * img.width() as usize + x as usize) * 3;
    img.as_raw().get(start..start + 3 * w as usize)
}

/// The tiles (x, y, width, height) a large image is scored in: about [`TILE`] pixels a side,
/// or [`SMALL_TILE`] where those would be over [`MAX_TILE_PIXELS`].
pub fn tiles(w: u32, h: u32) -> Vec<(u32, u32, u32, u32)> {
    let grid = |side: u32| -> Vec<(u32, u32, u32, u32)> {
        let rows = spans(h, side);
        spans(w, side)
            .into_iter()
            .flat_map(|(x, tw)| rows.iter().map(move |&(y, th)| (x, y, tw, th)))
            .collect()
    };
    let large = grid(TILE);
    if large
        .iter()
        .any(|&(_, _, tw, th)| u64::from(tw) * u64::from(th) > MAX_TILE_PIXELS)
    {
        grid(SMALL_TILE)
    } else {
        large
    }
}

/// The `score` of each of `tiles`, taken in their order on `threads` threads (`score` takes a
/// slot of [`SLOTS`] around the scoring itself), until one scores below `stop_below`: no tile
/// is started after that one (`None` for them; the tiles already being scored are finished).
/// A helper thread that cannot be started leaves the work to this one; an error stops the
/// other thread at its next tile, and a panic is an error too.
fn scores_of<T: Sync>(
    tiles: &[T],
    stop_below: f64,
    threads: usize,
    score: impl Fn(&T) -> Result<f64, QualityError> + Sync,
) -> Result<Vec<Option<f64>>, QualityError> {
    let _scoring = SLOTS.scoring();
    let next = AtomicUsize::new(0);
    let work = || -> Result<Vec<(usize, f64)>, QualityError> {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(tile) = tiles.get(i) else {
                return Ok(done);
            };
            match score(tile) {
                Ok(s) => {
                    if s < stop_below {
                        next.store(tiles.len(), Ordering::Relaxed);
                    }
                    done.push((i, s));
                }
                Err(e) => {
                    next.store(tiles.len(), Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads.min(tiles.len()))
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
            .collect();
        let mut results = vec![work()];
        for h in helpers {
            results.push(h.join().unwrap_or_else(|_| {
                Err(QualityError::Ssimulacra2(
                    "a scoring thread panicked".into(),
                ))
            }));
        }
        let mut scores = vec![None; tiles.len()];
        for done in results {
            for (i, s) in done? {
                scores[i] = Some(s);
            }
        }
        Ok(scores)
    })
}

/// Threads tiles are scored on: the cores, at most [`SCORING_SLOTS`].
fn scoring_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, SCORING_SLOTS)
}

/// What scoring versions of one image has shown of its tiles: each tile's last score, so that
/// [`score_against`] looks at the worst ones first.
#[derive(Debug, Default, Clone)]
pub struct TileMemory {
    scores: Vec<f64>,
}

/// The SSIMULACRA2 of `distorted` against `original` as [`score_picture`] gives it, when that
/// is at least `bar`. Below it, it may be the score of one tile below `bar` only (at least the
/// image's score, still below `bar`): a large image's tiles are scored worst first, as far as
/// `memory` knows them from scoring other versions of the same image, and no tile is scored
/// after one falls short. The first scoring of an image scores every tile (to learn which
/// are the worst). Images with alpha, and those scored whole, are scored as
/// [`score_picture`] scores them.
pub fn score_against(
    original: &crate::pixels::Picture,
    distorted: &crate::pixels::Picture,
    bar: f64,
    memory: &mut TileMemory,
) -> Result<f64, QualityError> {
    let (a, b) = (&original.rgb, &distorted.rgb);
    let (w, h) = a.dimensions();
    if original.alpha.is_some()
        || distorted.alpha.is_some()
        || a.dimensions() != b.dimensions()
        || u64::from(w) * u64::from(h) <= MAX_WHOLE_PIXELS
        || a.as_raw() == b.as_raw()
    {
        return Ok(score_picture(original, distorted)?.ssimulacra2);
    }
    worst_tile(a, b, Some((bar, memory)))
}

/// The worst score of a large image's tiles (100 where none differs). Against a bar
/// ([`score_against`]): the tiles worst first as `memory` knows them, stopping at the first
/// below the bar, and their scores remembered.
fn worst_tile(
    a: &RgbImage,
    b: &RgbImage,
    mut against: Option<(f64, &mut TileMemory)>,
) -> Result<f64, QualityError> {
    let (w, h) = a.dimensions();
    let all = tiles(w, h);
    let mut order: Vec<usize> = (0..all.len()).collect();
    let mut stop_below = f64::NEG_INFINITY;
    if let Some((bar, memory)) = &mut against {
        if memory.scores.len() == all.len() {
            order.sort_by(|&i, &j| memory.scores[i].total_cmp(&memory.scores[j]));
            stop_below = *bar;
        } else {
            memory.scores = vec![f64::INFINITY; all.len()];
        }
    }
    let scores = scores_of(&order, stop_below, scoring_threads(), |&i| {
        tile_score(a, b, all[i])
    })?;
    let mut worst = f64::INFINITY;
    for (&i, s) in order.iter().zip(scores) {
        if let Some(s) = s {
            if let Some((_, memory)) = &mut against {
                memory.scores[i] = s;
            }
            worst = worst.min(s);
        }
    }
    Ok(if worst.is_finite() { worst } else { 100.0 })
}

/// Splits a side into spans of about `tile` pixels (the last one at least half a tile).
fn spans(side: u32, tile: u32) -> Vec<(u32, u32)> {
    let n = side.div_ceil(tile).max(1);
    let base = side / n;
    let extra = side % n;
    let mut out = Vec::with_capacity(n as usize);
    let mut at = 0;
    for i in 0..n {
        let len = base + u32::from(i < extra);
        out.push((at, len));
        at += len;
    }
    out
}

fn ssimulacra2_of(original: &RgbImage, distorted: &RgbImage) -> Result<f64, QualityError> {
    use std::borrow::Cow;
    let (a, b) = if original.width() < 8 || original.height() < 8 {
        let f = 8u32.div_ceil(original.width().min(original.height()).max(1));
        let up = |i: &RgbImage| {
            Cow::Owned(image::imageops::resize(
                i,
                i.width() * f,
                i.height() * f,
                image::imageops::FilterType::Nearest,
            ))
        };
        (up(original), up(distorted))
    } else {
        (Cow::Borrowed(original), Cow::Borrowed(distorted))
    };
    let (w, h) = a.dimensions();
    ssim2::Scorer::new()
        .score(&a, &b, (0, 0, w, h), linear_levels()?)
        .ok_or(QualityError::Dimensions(w, h, b.width(), b.height()))
}

/// PSNR over all channels (infinity for identical images, reported as 100).
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let n = a.as_raw().len().max(1) as f64;
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum();
    if se == 0.0 {
        100.0
    } else {
        10.0 * (255.0f64 * 255.0 / (se / n)).log10()
    }
}

/// Scores of a picture that may have alpha: what a viewer shows is the image over some
/// background, so it is scored over black and over white and the worse counts. PSNR too.
pub fn score_picture(
    original: &crate::pixels::Picture,
    distorted: &crate::pixels::Picture,
) -> Result<Scores, QualityError> {
    if original.alpha.is_none() && distorted.alpha.is_none() {
        return score(&original.rgb, &distorted.rgb);
    }
    let dark = score(&original.over(0), &distorted.over(0))?;
    let light = score(&original.over(255), &distorted.over(255))?;
    Ok(Scores {
        ssimulacra2: dark.ssimulacra2.min(light.ssimulacra2),
        psnr: dark.psnr.min(light.psnr),
    })
}

/// Scores an image coded in tiles the way pack does: each tile's region on its own (the worst
/// counts), so that the regions scored are the same at pack time and in `verify`. Images in one
/// tile are scored whole.
pub fn score_tiled(
    original: &crate::pixels::Picture,
    distorted: &crate::pixels::Picture,
    tiles: &[(u32, u32, u32, u32)],
) -> Result<Scores, QualityError> {
    if tiles.len() <= 1 {
        return score_picture(original, distorted);
    }
    let crop =
        |p: &crate::pixels::Picture, &(x, y, w, h): &(u32, u32, u32, u32)| crate::pixels::Picture {
            rgb: image::imageops::crop_imm(&p.rgb, x, y, w, h).to_image(),
            alpha: p
                .alpha
                .as_ref()
                .map(|a| image::imageops::crop_imm(a, x, y, w, h).to_image()),
        };
    let mut worst: Option<Scores> = None;
    for t in tiles {
        let s = score_picture(&crop(original, t), &crop(distorted, t))?;
        worst = Some(match worst {
            None => s,
            Some(w) => Scores {
                ssimulacra2: w.ssimulacra2.min(s.ssimulacra2),
                psnr: w.psnr.min(s.psnr),
            },
        });
    }
    worst.ok_or(QualityError::Dimensions(0, 0, 0, 0))
}

/// Largest difference between two alpha planes (255 when one is missing or sizes differ).
pub fn alpha_max_diff(a: Option<&image::GrayImage>, b: Option<&image::GrayImage>) -> u8 {
    match (a, b) {
        (None, None) => 0,
        (Some(a), Some(b)) if a.dimensions() == b.dimensions() => a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0),
        _ => 255,
    }
}

/// Half-width of the band scored across each seam between tiles.
pub const SEAM_BAND: u32 = 64;

/// The worst SSIMULACRA2 of the bands across the inner edges of `tiles` (x, y, w, h): a seam
/// that shows would score low there even when every tile scores well. None without seams.
pub fn seam_score(
    original: &RgbImage,
    distorted: &RgbImage,
    tiles: &[(u32, u32, u32, u32)],
) -> Result<Option<f64>, QualityError> {
    let (w, h) = original.dimensions();
    let mut worst: Option<f64> = None;
    let mut bands = Vec::new();
    for &(x, y, tw, th) in tiles {
        if x > 0 {
            // A vertical seam at x, along this tile's height.
            let x0 = x.saturating_sub(SEAM_BAND);
            bands.push((x0, y, (x + SEAM_BAND).min(w) - x0, th));
        }
        if y > 0 {
            let y0 = y.saturating_sub(SEAM_BAND);
            bands.push((x, y0, tw, (y + SEAM_BAND).min(h) - y0));
        }
    }
    for (x, y, bw, bh) in bands {
        let a = image::imageops::crop_imm(original, x, y, bw, bh).to_image();
        let b = image::imageops::crop_imm(distorted, x, y, bw, bh).to_image();
        let s = score(&a, &b)?.ssimulacra2;
        worst = Some(worst.map_or(s, |v: f64| v.min(s)));
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_the_side_exactly() {
        for tile in [TILE, SMALL_TILE] {
            for side in [1u32, 7, 1024, 1025, 3000, 4000, 20000] {
                let sp = spans(side, tile);
                assert_eq!(sp[0].0, 0);
                assert_eq!(sp.iter().map(|s| s.1).sum::<u32>(), side);
                for w in sp.windows(2) {
                    assert_eq!(w[0].0 + w[0].1, w[1].0);
                }
                assert!(
                    sp.iter().all(|s| s.1 <= tile && (s.1 >= 8 || side < 8)),
                    "{side}: {sp:?}"
                );
            }
        }
    }

    /// Frames up to 4K keep their 1024-pixel tiles; photos whose 1024-pixel tiles would be
    /// over 0.75 MP (a 12 MP one's are 1 MP) are cut in tiles of at most half a megapixel, two
    /// of which, scored side by side, take less memory than one of 1 MP did.
    #[test]
    fn photos_are_cut_in_tiles_two_of_which_fit_where_one_did() {
        let area = |t: &[(u32, u32, u32, u32)]| -> u64 {
            t.iter()
                .map(|&(_, _, w, h)| u64::from(w) * u64::from(h))
                .sum()
        };
        let hd = tiles(1920, 1080);
        assert_eq!(hd.len(), 4);
        assert!(hd.iter().all(|&(_, _, w, h)| (w, h) == (960, 540)));
        let uhd = tiles(3840, 2160);
        assert!(uhd.iter().all(|&(_, _, w, h)| (w, h) == (960, 720)));
        for (w, h) in [(4000u32, 3000u32), (3000, 4000), (6000, 4000), (2600, 1900)] {
            let t = tiles(w, h);
            assert_eq!(area(&t), u64::from(w) * u64::from(h), "{w}x{h}");
            let largest = t
                .iter()
                .map(|&(_, _, w, h)| u64::from(w) * u64::from(h))
                .max();
            assert!(largest.unwrap() <= (1 << 20) / 2, "{w}x{h}: {t:?}");
        }
    }

    /// Linear light from the table gives the very score the scorer's own sRGB conversion
    /// gives (scores recorded in archives before the table must still be reproduced).
    #[test]
    fn table_scores_are_the_scorers_own() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let a = RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([(x * 2 + y) as u8, (y * 4) as u8, (x ^ y) as u8])
        });
        let mut b = a.clone();
        for p in b.pixels_mut() {
            for c in p.0.iter_mut() {
                *c = c.saturating_add_signed((noise() % 9) as i8 - 4);
            }
        }
        let own = crate::ssim2::tests::reference(&a, &b);
        let table = ssimulacra2_of(&a, &b).unwrap();
        assert!(own < 95.0, "{own}");
        assert_eq!(own.to_bits(), table.to_bits(), "{own} vs {table}");
    }

    /// A large image scores its worst tile, exactly.
    #[test]
    fn large_images_score_their_worst_tile() {
        let (w, h) = (1500u32, 1100u32);
        assert!(u64::from(w) * u64::from(h) > MAX_WHOLE_PIXELS);
        let a = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x / 3) as u8, (y / 5) as u8, ((x + y) / 7) as u8])
        });
        let mut b = a.clone();
        // Light noise everywhere, heavier damage in one corner tile.
        for (x, y, p) in b.enumerate_pixels_mut() {
            let heavy = x > 1200 && y > 800;
            let n = ((x * 7 + y * 13) % if heavy { 41 } else { 5 }) as u8;
            p.0[1] = p.0[1].saturating_add(n);
        }
        let tiles = tiles(w, h)
            .into_iter()
            .map(|(x, y, tw, th)| {
                let ta = image::imageops::crop_imm(&a, x, y, tw, th).to_image();
                let tb = image::imageops::crop_imm(&b, x, y, tw, th).to_image();
                ssimulacra2_of(&ta, &tb).unwrap()
            })
            .collect::<Vec<_>>();
        assert_eq!(tiles.len(), 4);
        let worst = tiles.iter().copied().fold(f64::INFINITY, f64::min);
        let best = tiles.iter().copied().fold(0.0, f64::max);
        assert!(worst < best - 5.0, "{tiles:?}");
        let s = score(&a, &b).unwrap().ssimulacra2;
        assert_eq!(s.to_bits(), worst.to_bits(), "{s} vs {tiles:?}");

        // Whichever thread scores which tile, the minimum is the same, and a tile that cannot
        // be scored is the error of the whole.
        let items: Vec<u32> = (0..40).collect();
        let worst_of = |score: &(dyn Fn(&u32) -> Result<f64, QualityError> + Sync)| {
            scores_of(&items, f64::NEG_INFINITY, 2, score)
                .map(|s| s.into_iter().flatten().fold(f64::INFINITY, f64::min))
        };
        let low = worst_of(&|&i| {
            std::thread::sleep(std::time::Duration::from_micros(u64::from(i % 3) * 300));
            Ok(f64::from(100 - (i * 37) % 41))
        });
        assert_eq!(low.unwrap(), 60.0);
        let failing = worst_of(&|&i| {
            if i == 17 {
                Err(QualityError::Ssimulacra2("tile 17".into()))
            } else {
                Ok(95.0)
            }
        });
        assert!(
            matches!(&failing, Err(QualityError::Ssimulacra2(m)) if m == "tile 17"),
            "{failing:?}"
        );
    }

    /// Against a bar, a version that reaches it gets its exact score; one that falls short
    /// gets a score below the bar and no lower than its own, found from the tile that was
    /// worst before, without scoring the rest.
    #[test]
    fn scoring_against_a_bar_stops_at_the_first_tile_below_it() {
        let (w, h) = (1500u32, 1100u32);
        let a = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x / 3) as u8, (y / 5) as u8, ((x + y) / 7) as u8])
        });
        // Damage of `strength` everywhere, four times as much in the bottom-right tile.
        let damaged = |strength: u32| {
            let mut b = a.clone();
            for (x, y, p) in b.enumerate_pixels_mut() {
                let m = if x > 1200 && y > 800 {
                    4 * strength
                } else {
                    strength
                };
                p.0[1] = p.0[1].saturating_add(((x * 7 + y * 13) % (m + 1)) as u8);
            }
            crate::pixels::Picture {
                rgb: b,
                alpha: None,
            }
        };
        let original = crate::pixels::Picture {
            rgb: a.clone(),
            alpha: None,
        };
        let exact = |p: &crate::pixels::Picture| score(&a, &p.rgb).unwrap().ssimulacra2;
        let (light, heavy) = (damaged(1), damaged(6));
        let (good, bad) = (exact(&light), exact(&heavy));
        assert!(bad < good - 3.0, "{good} {bad}");
        let bar = (good + bad) / 2.0;

        let mut memory = TileMemory::default();
        // The first scoring scores every tile, whatever the bar.
        let first = score_against(&original, &heavy, 100.0, &mut memory).unwrap();
        assert_eq!(first.to_bits(), bad.to_bits());
        assert!(memory.scores.iter().all(|s| s.is_finite()), "{memory:?}");
        let worst_tile = (0..memory.scores.len())
            .min_by(|&i, &j| memory.scores[i].total_cmp(&memory.scores[j]))
            .unwrap();
        // A version above the bar: exact.
        let passed = score_against(&original, &light, bar, &mut memory).unwrap();
        assert_eq!(passed.to_bits(), good.to_bits());
        // Below it: a score under the bar and no lower than the image's, from the tile put
        // first (scored again: its remembered score is replaced by the image's worst).
        memory.scores[worst_tile] = f64::NEG_INFINITY;
        let failed = score_against(&original, &heavy, bar, &mut memory).unwrap();
        assert!(failed < bar && failed >= bad, "{failed} {bad} {bar}");
        assert_eq!(memory.scores[worst_tile].to_bits(), bad.to_bits());

        // On one thread, nothing is scored after the first tile below the bar; on two, the
        // tiles scored are scored right (which ones depends on timing).
        let items: Vec<u32> = (0..40).collect();
        let fake = |&i: &u32| Ok(if i == 5 || i == 9 { 80.0 } else { 95.0 });
        let scored = scores_of(&items, 90.0, 1, fake).unwrap();
        assert!(scored[..6].iter().all(Option::is_some), "{scored:?}");
        assert!(scored[6..].iter().all(Option::is_none), "{scored:?}");
        let scored = scores_of(&items, 90.0, 2, fake).unwrap();
        assert_eq!(scored[5], Some(80.0));
        for (i, s) in scored.iter().enumerate() {
            assert!(
                s.is_none_or(|s| s == fake(&(i as u32)).unwrap()),
                "{scored:?}"
            );
        }
        let all = scores_of(&items, f64::NEG_INFINITY, 2, |&i| Ok(f64::from(i))).unwrap();
        assert!(all.iter().all(Option::is_some));
    }

    #[test]
    fn identical_images_score_100_and_damage_scores_lower() {
        let a = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
        });
        assert_eq!(score(&a, &a).unwrap().ssimulacra2, 100.0);
        let mut b = a.clone();
        for x in 10..30 {
            b.put_pixel(x, 20, image::Rgb([255, 0, 0]));
        }
        let s = score(&a, &b).unwrap();
        assert!(s.ssimulacra2 < 90.0 && s.psnr < 40.0, "{s:?}");
    }
}
