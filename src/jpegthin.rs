//! Visually lossless recoding of JPEG files in their own DCT ("thinning"): the luma AC
//! coefficients of magnitude 1 (the costliest to code for the least they carry) are set to
//! zero, highest zigzag positions first and busier blocks first within a position (see
//! `rank`), as far as the image still scores the quality target
//! against the original; where every one of them can go, the chroma ones follow in the same
//! order (measured on 12 MP phone photos: 5 % less again); the file is then written back with
//! optimised Huffman tables and every marker segment of the original (EXIF, ICC, XMP,
//! comments). What comes back is a JPEG of the
//! same size in pixels, the same metadata, whose blocks keep the original's quantisation, so
//! none of the original's artefacts need to be reproduced (as a video codec must, which is why
//! it cannot beat a JPEG at visually lossless quality).
//!
//! A recoded file can also be written as its difference from a similar one ([`residual`],
//! [`restore`]): frames of a burst share most of their blocks, which then cost Lepton almost
//! nothing (measured on an animation's 40 frames: 18 % less than each frame alone; on a 1080p
//! photo burst 7 %).
//!
//! The coefficient work is libjpeg-turbo's lossless transform (`tj3Transform`) with a custom
//! filter: the only module that calls `turbojpeg-sys` directly.

use crate::pixels::Picture;
use crate::quality;
use std::os::raw::{c_int, c_short, c_void};
use turbojpeg_sys as tj;

/// Steps of the thinning order: 63 zigzag positions, each split in [`SUBSTEPS`]: by how busy
/// the block is (its count of non-zero AC coefficients, up to [`BUSY_LEVELS`]` - 1`: busier
/// blocks first, where texture masks the change), then by a hash of the block's place, so
/// that the amount thinned grows in small steps.
const SUBSTEPS: usize = BUSY_LEVELS * HASH_STEPS;
const BUSY_LEVELS: usize = 9;
const HASH_STEPS: usize = 4;
/// Ranks of the luma coefficients: `0..LUMA_CUTS`; those of the chroma coefficients come
/// after them, `LUMA_CUTS..CUTS`, in the same order within their planes.
const LUMA_CUTS: usize = 63 * SUBSTEPS;
/// Number of cuts: a cut `c` zeroes the magnitude-1 AC coefficients of rank below `c`.
const CUTS: usize = 2 * LUMA_CUTS;
/// The thinned file must be at least this much smaller (per mille) than the original
/// rewritten with optimised tables, or the original is kept.
const MIN_GAIN_PERMILLE: usize = 30;
/// Thinning chroma too must save at least this much more (per mille of the file thinned in
/// luma) to be tried.
const MIN_CHROMA_GAIN_PERMILLE: usize = 10;
/// Quality searches score at most this many candidates per image.
const MAX_TRIES: usize = 5;
/// Searches toward a reference score at most this many: the ranks the file took thinned
/// alone, and one more share. Measured (burst-1080p, megamind-burst): one try 1,625,866 and
/// 544,945 bytes, two 1,598,629 and 521,472, three 1,596,202 and 537,271, five 1,596,202 and
/// 533,592 (each frame's choice changes the reference of the next, so more tries are not
/// always smaller), in 25.4 and 9.1 s, 28.8 and 11.0, 30.1 and 12.9, 30.7 and 16.0.
const MAX_TOWARD_TRIES: usize = 2;
/// Aim this far above the target when interpolating, so that a try lands above it.
const CUSHION: f64 = 0.15;
/// A first guess that fails by less than this is a near miss: the next try is interpolated
/// from it rather than halved.
const NEAR_MISS: f64 = 1.0;

/// Zigzag position of each coefficient in natural (row-major) order.
const ZIGZAG_OF_NATURAL: [u8; 64] = [
    0, 1, 5, 6, 14, 15, 27, 28, 2, 4, 7, 13, 16, 26, 29, 42, 3, 8, 12, 17, 25, 30, 41, 43, 9, 11,
    18, 24, 31, 40, 44, 53, 10, 19, 23, 32, 39, 45, 52, 54, 20, 22, 33, 38, 46, 51, 55, 60, 21, 34,
    37, 47, 50, 56, 59, 61, 35, 36, 48, 49, 57, 58, 62, 63,
];

#[derive(Debug, thiserror::Error)]
pub enum ThinError {
    #[error("libjpeg-turbo: {0}")]
    Turbo(String),
    #[error("the JPEG does not decode: {0}")]
    Decode(String),
    #[error("scoring: {0}")]
    Quality(#[from] quality::QualityError),
    #[error("data after the image's end (a motion photo's video, a second picture) would be lost")]
    DataAfterImage,
}

/// A thinned JPEG file and its score against the original.
#[derive(Debug, Clone)]
pub struct Thinned {
    pub bytes: Vec<u8>,
    pub ssimulacra2: f64,
    /// Share of the magnitude-1 luma coefficients set to zero.
    pub share: f64,
}

/// Rank of a magnitude-1 AC coefficient in the thinning order (0 = thinned first): high
/// zigzag positions first; within a position, blocks with more non-zero AC coefficients
/// (`busy`) first, each level spread over [`HASH_STEPS`] ranks by the block's place.
///
/// Measured on six frames of a 1080p burst at ≥ 90: busiest first 244,404 bytes of Lepton,
/// the hash alone 247,099, calmest first 248,064.
fn rank(zigzag: usize, busy: usize, bx: usize, by: usize) -> usize {
    let h = (bx.wrapping_mul(0x9E37_79B9) ^ by.wrapping_mul(0x85EB_CA6B)).wrapping_mul(0x2545_F491);
    let calm = BUSY_LEVELS - 1 - busy.min(BUSY_LEVELS - 1);
    (63 - zigzag.min(63)) * SUBSTEPS + calm * HASH_STEPS + (h >> 7) % HASH_STEPS
}

/// What the filter does with the coefficients.
enum Work<'a> {
    /// Counts the magnitude-1 AC coefficients of each rank (with `toward`: the AC
    /// coefficients one step from the reference's, [`Toward`]).
    Count(Vec<u64>, Toward<'a>),
    /// Zeroes those of rank below the cut (with `toward`: sets them to the reference's).
    Cut(usize, Toward<'a>),
    /// Copies every coefficient out.
    Collect(Coefficients),
    /// Adds (`sign` 1) or subtracts (-1) the reference's coefficients, block by block;
    /// `blocks` counts the blocks seen per component (to check that the layouts match).
    Shift {
        reference: &'a Coefficients,
        sign: i32,
        blocks: Vec<usize>,
        /// The resulting coefficients, when asked for.
        result: Option<Coefficients>,
    },
}

/// What thinning changes: `None`, AC coefficients of magnitude 1, set to zero; a reference's
/// coefficients (a similar image of the same layout, which the file will be stored against
/// as its difference), AC coefficients one step from the reference's, set to its value, so
/// that their difference is zero. Either way each change moves one coefficient by one step.
type Toward<'a> = Option<&'a Coefficients>;

/// A JPEG's quantised DCT coefficients as the transform hands them over: per component, its
/// blocks per row and the blocks (64 coefficients each, natural order), row after row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coefficients {
    planes: Vec<(usize, Vec<i16>)>,
}

/// Bytes they take in memory, as a reader's cache counts them.
impl crate::bytelru::Weigh for Coefficients {
    fn weight(&self) -> u64 {
        self.planes.iter().map(|(_, p)| p.len() as u64 * 2).sum()
    }
}

impl Coefficients {
    /// Pixels of the image's first component (its blocks × 64).
    pub fn pixels(&self) -> usize {
        self.planes.first().map_or(0, |(_, p)| p.len())
    }

    /// A rough count of the bits an entropy coder spends on these coefficients, and on their
    /// differences from `reference`'s (`None` where the layouts differ): for each non-zero
    /// value, its magnitude's bit length and one more. Far cheaper than coding them, it tells
    /// whether a residual is worth trying.
    pub fn bits_alone_and_against(&self, reference: &Coefficients) -> Option<(u64, u64)> {
        let bits = |v: i32| {
            if v == 0 {
                0
            } else {
                u64::from(33 - v.unsigned_abs().leading_zeros())
            }
        };
        if self.planes.len() != reference.planes.len() {
            return None;
        }
        let (mut alone, mut against) = (0, 0);
        for ((row, plane), (r_row, r_plane)) in self.planes.iter().zip(&reference.planes) {
            if row != r_row || plane.len() != r_plane.len() {
                return None;
            }
            for (&c, &r) in plane.iter().zip(r_plane) {
                alone += bits(i32::from(c));
                against += bits(i32::from(c) - i32::from(r));
            }
        }
        Some((alone, against))
    }

    /// Keeps a row of blocks of `component` starting at coefficient `at`.
    fn store(&mut self, component: usize, per_row: usize, at: usize, coefs: &[c_short]) {
        if self.planes.len() <= component {
            self.planes.resize(component + 1, (0, Vec::new()));
        }
        let (row, plane) = &mut self.planes[component];
        *row = per_row;
        let end = at + coefs.len();
        if plane.len() < end {
            plane.resize(end, 0);
        }
        plane[at..end].copy_from_slice(coefs);
    }
}

/// Largest magnitude of a coefficient in an 8-bit JPEG (and of a difference the residual may
/// hold: larger ones cannot be Huffman-coded in baseline JPEG).
const MAX_COEF: i32 = 1023;

/// The filter's work on one row of blocks of `component` (`by0`: the first block row,
/// `per_row` blocks per row) other than counting and cutting. `Err(())` fails the transform.
fn shift_or_collect(
    work: &mut Work,
    coefs: &mut [c_short],
    component: usize,
    by0: usize,
    per_row: usize,
) -> Result<(), ()> {
    let at = by0 * per_row * 64;
    let end = at + coefs.len();
    match work {
        Work::Collect(c) => {
            c.store(component, per_row, at, coefs);
            Ok(())
        }
        Work::Shift {
            reference,
            sign,
            blocks,
            result,
        } => {
            let (row, plane) = reference.planes.get(component).ok_or(())?;
            if *row != per_row {
                return Err(());
            }
            let r = plane.get(at..end).ok_or(())?;
            for (c, &v) in coefs.iter_mut().zip(r) {
                let n = i32::from(*c) + *sign * i32::from(v);
                if n.abs() > MAX_COEF {
                    return Err(());
                }
                *c = n as c_short;
            }
            if blocks.len() <= component {
                blocks.resize(component + 1, 0);
            }
            blocks[component] += coefs.len() / 64;
            if let Some(c) = result {
                c.store(component, per_row, at, coefs);
            }
            Ok(())
        }
        Work::Count(..) | Work::Cut(..) => Ok(()),
    }
}

unsafe extern "C" fn filter(
    coeffs: *mut c_short,
    array: tj::tjregion,
    _plane: tj::tjregion,
    component: c_int,
    _transform_id: c_int,
    transform: *mut tj::tjtransform,
) -> c_int {
    if coeffs.is_null() || transform.is_null() {
        return 0;
    }
    let stage = if component == 0 { 0 } else { LUMA_CUTS };
    // SAFETY: libjpeg-turbo calls the filter with rows of blocks (`array.w / 8` blocks of
    // 64 coefficients in natural order, `array.h / 8` rows) and the transform passed to
    // tj3Transform, whose `data` is the `Work` owned by `transform_with` for the call.
    let work = unsafe { &mut *((*transform).data as *mut Work) };
    let blocks = (array.w.max(0) as usize) / 8;
    let rows = (array.h.max(0) as usize) / 8;
    let coefs = unsafe { std::slice::from_raw_parts_mut(coeffs, blocks * rows * 64) };
    let by0 = array.y.max(0) as usize / 8;
    if let Work::Collect(_) | Work::Shift { .. } = work {
        let c = usize::try_from(component).unwrap_or(usize::MAX);
        return match shift_or_collect(work, coefs, c, by0, blocks) {
            Ok(()) => 0,
            Err(()) => -1,
        };
    }
    let toward = match work {
        Work::Count(_, t) | Work::Cut(_, t) => *t,
        _ => None,
    };
    // The reference's blocks of this row, where thinning goes toward it.
    let reference = match toward {
        None => None,
        Some(r) => {
            let c = usize::try_from(component).unwrap_or(usize::MAX);
            let at = by0 * blocks * 64;
            // A reference of another layout fails the transform.
            match r.planes.get(c) {
                Some((row, plane)) if *row == blocks => match plane.get(at..at + coefs.len()) {
                    Some(row_of_blocks) => Some(row_of_blocks),
                    None => return -1,
                },
                _ => return -1,
            }
        }
    };
    for (n, block) in coefs.chunks_exact_mut(64).enumerate() {
        let (bx, by) = (n % blocks.max(1), by0 + n / blocks.max(1));
        let goal = reference.map(|r| &r[n * 64..n * 64 + 64]);
        let busy = block[1..].iter().filter(|&&c| c != 0).count();
        for (natural, c) in block.iter_mut().enumerate().skip(1) {
            let to = goal.map_or(0, |g| g[natural]);
            if (i32::from(*c) - i32::from(to)).abs() != 1 {
                continue;
            }
            let r = stage + rank(usize::from(ZIGZAG_OF_NATURAL[natural]), busy, bx, by);
            match work {
                Work::Count(counts, _) => {
                    if let Some(k) = counts.get_mut(r) {
                        *k += 1;
                    }
                }
                Work::Cut(cut, _) => {
                    if r < *cut {
                        *c = to;
                    }
                }
                Work::Collect(_) | Work::Shift { .. } => {}
            }
        }
    }
    0
}

/// A TurboJPEG transform instance, destroyed on drop.
struct Handle(tj::tjhandle);

impl Handle {
    fn new() -> Result<Self, ThinError> {
        // SAFETY: tj3Init has no preconditions; a null handle is an error.
        let h = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_TRANSFORM as c_int) };
        if h.is_null() {
            return Err(ThinError::Turbo("could not start a transform".into()));
        }
        Ok(Handle(h))
    }

    fn error(&self) -> ThinError {
        // SAFETY: the handle is live; the message is a NUL-terminated string it owns.
        let msg = unsafe { std::ffi::CStr::from_ptr(tj::tj3GetErrorStr(self.0)) };
        ThinError::Turbo(msg.to_string_lossy().into_owned())
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        // SAFETY: the handle is live.
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle was made by tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// Runs the transform with `work` as the filter's state; the new file unless `count_only`.
fn transform_with(jpeg: &[u8], work: &mut Work, count_only: bool) -> Result<Vec<u8>, ThinError> {
    let h = Handle::new()?;
    // No larger image than pack codes at all (its coefficients are held whole).
    let max_pixels = c_int::try_from(crate::album::MAX_PIXELS).unwrap_or(c_int::MAX);
    // SAFETY: the handle is live; an out-of-range value is refused with an error code.
    if unsafe { tj::tj3Set(h.0, tj::TJPARAM_TJPARAM_MAXPIXELS as c_int, max_pixels) } != 0 {
        return Err(h.error());
    }
    // SAFETY: `jpeg` outlives the call.
    if unsafe { tj::tj3DecompressHeader(h.0, jpeg.as_ptr(), jpeg.len() as tj::size_t) } != 0 {
        return Err(h.error());
    }
    let colorspace = h.get(tj::TJPARAM_TJPARAM_COLORSPACE);
    if h.get(tj::TJPARAM_TJPARAM_LOSSLESS) != 0
        || h.get(tj::TJPARAM_TJPARAM_PRECISION) != 8
        || !(colorspace == tj::TJCS_TJCS_YCbCr as c_int
            || colorspace == tj::TJCS_TJCS_GRAY as c_int)
    {
        return Err(ThinError::Turbo(
            "only 8-bit lossy YCbCr or grey JPEGs are thinned".into(),
        ));
    }
    let mut options = tj::TJXOPT_OPTIMIZE as c_int;
    if count_only {
        options |= tj::TJXOPT_NOOUTPUT as c_int;
    }
    let t = tj::tjtransform {
        r: tj::tjregion {
            x: 0,
            y: 0,
            w: 0,
            h: 0,
        },
        op: tj::TJXOP_TJXOP_NONE as c_int,
        options,
        data: work as *mut Work as *mut c_void,
        customFilter: Some(filter),
    };
    let mut buf: *mut u8 = std::ptr::null_mut();
    let mut size: tj::size_t = 0;
    // SAFETY: one transform, one output buffer allocated by TurboJPEG (freed below); the
    // filter's `data` points at `work`, alive for the call. Warnings (damaged data) make
    // the call fail.
    let rc = unsafe {
        tj::tj3Transform(
            h.0,
            jpeg.as_ptr(),
            jpeg.len() as tj::size_t,
            1,
            &mut buf,
            &mut size,
            &t,
        )
    };
    let out = if rc == 0 && !buf.is_null() && !count_only {
        // SAFETY: TurboJPEG wrote `size` bytes at `buf`.
        unsafe { std::slice::from_raw_parts(buf, size as usize) }.to_vec()
    } else {
        Vec::new()
    };
    if !buf.is_null() {
        // SAFETY: allocated by TurboJPEG for this call.
        unsafe { tj::tj3Free(buf as *mut c_void) };
    }
    if rc != 0 {
        return Err(h.error());
    }
    Ok(out)
}

/// How many magnitude-1 AC coefficients (with `toward`: one step from the reference's) the
/// JPEG has at each rank, and with `rewrite` the file written again unchanged (optimised Huffman tables: what thinning is measured
/// against), in the same pass.
fn count(jpeg: &[u8], rewrite: bool, toward: Toward) -> Result<(Vec<u64>, Vec<u8>), ThinError> {
    let mut work = Work::Count(vec![0; CUTS], toward);
    let file = transform_with(jpeg, &mut work, !rewrite)?;
    match work {
        Work::Count(c, _) => Ok((c, file)),
        _ => Err(ThinError::Turbo("lost the census".into())),
    }
}

/// The JPEG rewritten with its magnitude-1 AC coefficients of rank below `cut` set to zero
/// (with `toward`: those one step from the reference's set to its value; `cut` 0: the same
/// coefficients, optimised Huffman tables), markers kept.
fn thin(jpeg: &[u8], cut: usize, toward: Toward) -> Result<Vec<u8>, ThinError> {
    transform_with(jpeg, &mut Work::Cut(cut.min(CUTS), toward), false)
}

/// The quantised DCT coefficients of `jpeg`.
pub fn coefficients(jpeg: &[u8]) -> Result<Coefficients, ThinError> {
    let mut work = Work::Collect(Coefficients::default());
    transform_with(jpeg, &mut work, true)?;
    match work {
        Work::Collect(c) => Ok(c),
        _ => Err(ThinError::Turbo("lost the coefficients".into())),
    }
}

/// `jpeg` written again (optimised Huffman tables, markers kept) with `reference`'s
/// coefficients subtracted (`sign` -1) or added (1), and what followed its image (a recoded
/// file's trailer, [`carried_trailer`]) after it: an error where the layouts of the two
/// differ (size, sampling, components) or a result is out of a baseline JPEG's range.
fn shifted(
    jpeg: &[u8],
    reference: &Coefficients,
    sign: i32,
    keep: bool,
) -> Result<(Vec<u8>, Option<Coefficients>), ThinError> {
    let mut work = Work::Shift {
        reference,
        sign,
        blocks: Vec::new(),
        result: keep.then(Coefficients::default),
    };
    let mut out = transform_with(jpeg, &mut work, false)
        .map_err(|e| ThinError::Turbo(format!("not coded against the reference: {e}")))?;
    if let Some(end) = image_end(jpeg) {
        out.extend_from_slice(&jpeg[end..]);
    }
    let Work::Shift { blocks, result, .. } = work else {
        return Err(ThinError::Turbo("lost the blocks".into()));
    };
    let whole = reference.planes.len() == blocks.len()
        && reference
            .planes
            .iter()
            .zip(&blocks)
            .all(|((_, plane), &n)| plane.len() == n * 64);
    if !whole {
        return Err(ThinError::Turbo(
            "the reference has another layout of blocks".into(),
        ));
    }
    Ok((out, result))
}

/// `jpeg` as its difference from a similar JPEG of the same layout (`reference`, from
/// [`coefficients`]): a JPEG whose coefficients are the differences, zero wherever a block is
/// the same, so that Lepton codes it in far fewer bytes than the file alone where the two are
/// frames of one scene. [`restore`] gives back `jpeg` where `jpeg` was itself written by
/// this module (what comes out of the transform comes out alike; the caller checks).
pub fn residual(jpeg: &[u8], reference: &Coefficients) -> Result<Vec<u8>, ThinError> {
    shifted(jpeg, reference, -1, false).map(|(out, _)| out)
}

/// The JPEG whose [`residual`] against `reference` is `residual`.
pub fn restore(residual: &[u8], reference: &Coefficients) -> Result<Vec<u8>, ThinError> {
    shifted(residual, reference, 1, false).map(|(out, _)| out)
}

/// [`restore`], and the [`coefficients`] of the JPEG it gives, from the same pass (what the
/// next file of a chain is restored against).
pub fn restore_keeping(
    residual: &[u8],
    reference: &Coefficients,
) -> Result<(Vec<u8>, Coefficients), ThinError> {
    match shifted(residual, reference, 1, true)? {
        (out, Some(c)) => Ok((out, c)),
        (_, None) => Err(ThinError::Turbo("lost the coefficients".into())),
    }
}

/// Longest trailer (bytes after the image's EOI marker) a recoded file carries.
const MAX_TRAILER: usize = 64 << 10;

/// The bytes after the image's end (its EOI marker) that a recoded file can carry as they are
/// (empty for most files): a newline, padding, a vendor's block of tags. An error where the
/// file has no end (truncated, damaged), or what follows is more than [`MAX_TRAILER`] (a
/// motion photo's video) or holds another JPEG (the second picture of a multi-picture file,
/// whose offset, counted from inside the first, would no longer hold).
fn carried_trailer(jpeg: &[u8]) -> Result<&[u8], ThinError> {
    let end = image_end(jpeg)
        .ok_or_else(|| ThinError::Decode("no end-of-image marker after the image".into()))?;
    let trailer = &jpeg[end..];
    let another = trailer.windows(3).any(|w| w == [0xFF, 0xD8, 0xFF]);
    match trailer.len() <= MAX_TRAILER && !another {
        true => Ok(trailer),
        false => Err(ThinError::DataAfterImage),
    }
}

/// Where the image ends: just after its EOI marker. `None` if it has none.
fn image_end(jpeg: &[u8]) -> Option<usize> {
    let mut at = 2;
    // Marker segments up to the first scan.
    loop {
        let &[0xFF, m] = jpeg.get(at..at + 2)? else {
            return None;
        };
        match m {
            0xFF => at += 1,
            0xD9 => return Some(at + 2),
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => {
                let &[hi, lo] = jpeg.get(at + 2..at + 4)? else {
                    return None;
                };
                at += 2 + usize::from(u16::from_be_bytes([hi, lo]));
                if m == 0xDA {
                    // Entropy-coded data: skip to the next marker that is not a stuffed byte
                    // or a restart, then go on with the segments (progressive files have
                    // several scans).
                    while let Some(rest) = jpeg.get(at..) {
                        at += rest.iter().position(|&b| b == 0xFF)?;
                        match jpeg.get(at + 1)? {
                            0x00 | 0xD0..=0xD7 | 0xFF => at += 1,
                            _ => break,
                        }
                    }
                }
            }
        }
    }
}

/// Decodes a JPEG as `verify` does (its scores are verify's).
fn decode(jpeg: &[u8]) -> Result<Picture, ThinError> {
    crate::verify::decode_bytes(jpeg).map_err(|e| ThinError::Decode(e.to_string()))
}

/// The cut that thins `share` of the counted coefficients (the smallest cut reaching it).
fn cut_for(counts: &[u64], share: f64) -> usize {
    let total: u64 = counts.iter().sum();
    let want = (share.clamp(0.0, 1.0) * total as f64).round() as u64;
    let mut sum = 0;
    for (c, &n) in counts.iter().enumerate() {
        if sum >= want {
            return c;
        }
        sum += n;
    }
    counts.len()
}

/// The most thinned form of `jpeg` that still scores at least `target` against the
/// original's pixels (SSIMULACRA2 as `verify` scores it), when that is at least 3 % smaller
/// than the original rewritten with optimised tables. `None`: nothing worth it (no
/// candidate, or none both good and smaller); errors: the file does not take the transform,
/// or has data after the image that a rewrite would drop. A short trailer after the image
/// ([`carried_trailer`]) ends the thinned file as it ended the original.
///
/// Luma first: at most [`MAX_TRIES`] shares of its coefficients are scored, `hint` first (the
/// share taken for a similar image; everything thinned without one), then shares interpolated
/// between the best passing and the worst failing try, or extrapolated above the best passing
/// one. Only where every luma coefficient could go are the chroma ones searched the same way,
/// from there.
///
/// With `toward` (the coefficients of a similar JPEG of the same layout, which the result will
/// be stored against as its [`residual`]), the coefficients one step from the reference's take
/// its value instead, every candidate that reaches the target counts (the caller compares
/// what the residuals take), at most
/// [`MAX_TOWARD_TRIES`] shares are scored, and `hint` is the share of its own ±1s the file
/// took thinned alone: the first try changes the coefficients of the same ranks.
pub fn search(
    file: &[u8],
    target: f64,
    hint: Option<f64>,
    toward: Toward,
) -> Result<Option<Thinned>, ThinError> {
    let trailer = carried_trailer(file)?;
    let jpeg = &file[..file.len() - trailer.len()];
    let carry = |mut t: Thinned| {
        t.bytes.extend_from_slice(trailer);
        t
    };
    // Alone, candidates must be smaller than the file rewritten; toward a reference, the
    // caller compares the residuals.
    let (counts, rewritten) = count(jpeg, toward.is_none(), toward)?;
    let (luma, chroma) = counts.split_at(LUMA_CUTS.min(counts.len()));
    if luma.iter().sum::<u64>() == 0 {
        return Ok(None);
    }
    let base = toward.is_none().then_some(rewritten.len());
    drop(rewritten);
    // Decoded at the first score: files not worth thinning are never decoded.
    let original = std::cell::OnceCell::new();
    // Which tiles of a large photo scored worst: later tries look at them first, and a try
    // stops at the first tile below the target (its score is then that tile's).
    let tiles = std::cell::RefCell::new(quality::TileMemory::default());
    let score = |bytes: &[u8]| -> Result<f64, ThinError> {
        let original = match original.get() {
            Some(o) => o,
            None => {
                let o = decode(jpeg)?;
                original.get_or_init(|| o)
            }
        };
        let pic = decode(bytes)?;
        if pic.rgb.dimensions() != original.rgb.dimensions() {
            return Err(ThinError::Decode(
                "the thinned file has other dimensions".into(),
            ));
        }
        Ok(quality::score_against(
            original,
            &pic,
            target,
            &mut tiles.borrow_mut(),
        )?)
    };
    let descent = Descent {
        jpeg,
        target,
        score: &score,
        toward,
    };
    // Toward a reference, the hint is the share of the file's own luma ±1s it took thinned
    // alone: first try the same ranks (where the two files were recoded alike, exactly what
    // makes their difference zero).
    let hint = match (toward, hint) {
        (Some(_), Some(h)) => {
            let (alone, _) = count(jpeg, false, None)?;
            let cut = cut_for(&alone[..LUMA_CUTS.min(alone.len())], h);
            let total: u64 = luma.iter().sum();
            let below: u64 = luma[..cut.min(luma.len())].iter().sum();
            Some(below as f64 / total.max(1) as f64)
        }
        (_, h) => h,
    };
    let Some(best) = descent.run(luma, 0, (100.0, base), MIN_GAIN_PERMILLE, hint)? else {
        return Ok(None);
    };
    if best.share < 1.0 || chroma.iter().sum::<u64>() == 0 {
        return Ok(Some(carry(best)));
    }
    let from = (best.ssimulacra2, base.map(|_| best.bytes.len()));
    Ok(Some(carry(
        descent
            .run(chroma, LUMA_CUTS, from, MIN_CHROMA_GAIN_PERMILLE, None)?
            .map(|more| Thinned { share: 1.0, ..more })
            .unwrap_or(best),
    )))
}

/// One stage of the search: shares of the coefficients counted in `counts`, whose ranks start
/// at `offset` (every rank below it thinned already).
struct Descent<'a, F> {
    jpeg: &'a [u8],
    target: f64,
    score: &'a F,
    toward: Toward<'a>,
}

impl<F: Fn(&[u8]) -> Result<f64, ThinError>> Descent<'_, F> {
    /// The most thinned share of this stage that scores at least the target and is
    /// `min_gain` per mille smaller than `from` (the score and size of the file with nothing
    /// of this stage thinned; no size: every candidate that scores counts), `hint` tried
    /// first.
    fn run(
        &self,
        counts: &[u64],
        offset: usize,
        from: (f64, Option<usize>),
        min_gain: usize,
        hint: Option<f64>,
    ) -> Result<Option<Thinned>, ThinError> {
        let (start, base) = from;
        let worth = |len: usize| base.is_none_or(|base| len * 1000 <= base * (1000 - min_gain));
        // Everything thinned, made first where sizes count (nothing less thinned can be worth
        // it if that is not), and scored at most once (a share of 1 that fails is never tried
        // again, one that passes ends the search).
        let mut all = None;
        let mut full_gain = 1.0;
        if let Some(base) = base {
            let a = thin(self.jpeg, offset + counts.len(), self.toward)?;
            if !worth(a.len()) {
                return Ok(None);
            }
            full_gain = 1.0 - a.len() as f64 / base as f64;
            all = Some(a);
        }
        // (share, score) of the best passing try, and of the worst failing one.
        let mut good = (0.0, start);
        let mut bad: Option<(f64, f64)> = None;
        // The failing try before `bad`, if any.
        let mut before_bad: Option<(f64, f64)> = None;
        let mut best: Option<Thinned> = None;
        let mut share = hint.map_or(1.0, |h| h.clamp(0.05, 1.0));
        // (file hash, score) of every try: two shares whose cuts are the same, or differ only by
        // ranks with no coefficient, make the same file, scored once.
        let mut tried: Vec<(u64, f64)> = Vec::new();
        let tries = match self.toward {
            None => MAX_TRIES,
            Some(_) => MAX_TOWARD_TRIES,
        };
        for _ in 0..tries {
            // The gain grows about in proportion to the share: stop before scoring a share
            // that cannot be worth it.
            if share * full_gain * 1000.0 < min_gain as f64 {
                break;
            }
            let cut = if share >= 1.0 {
                counts.len()
            } else {
                cut_for(counts, share)
            };
            let bytes = match (share >= 1.0).then(|| all.take()).flatten() {
                Some(bytes) => bytes,
                None => thin(self.jpeg, offset + cut, self.toward)?,
            };
            if !worth(bytes.len()) {
                break;
            }
            let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
            let s = match tried.iter().find(|&&(h, _)| h == hash) {
                Some(&(_, s)) => s,
                None => (self.score)(&bytes)?,
            };
            tried.push((hash, s));
            log::debug!(
                "recoding in the DCT: share {share:.3} of ranks {offset}.., {} bytes, SSIMULACRA2 {s:.2}",
                bytes.len()
            );
            if s >= self.target {
                good = (share, s);
                best = Some(Thinned {
                    bytes,
                    ssimulacra2: s,
                    share,
                });
                if share >= 1.0 {
                    break;
                }
            } else {
                before_bad = bad;
                bad = Some((share, s));
            }
            let aim = (self.target + CUSHION).min(good.1);
            share = match bad {
                Some(bad) => {
                    if bad.0 - good.0 < 0.03 {
                        break;
                    }
                    // Two failing tries and nothing passed: the line through them says how much
                    // less to thin. Where it says more than half of the last share must go,
                    // interpolating from nothing thinned would creep down by near misses.
                    let far = before_bad.is_some_and(|(b0, b1)| {
                        let rate = (bad.1 - b1) / (b0 - bad.0).max(1e-9);
                        rate <= 0.0 || bad.0 - (aim - bad.1) / rate < bad.0 / 2.0
                    });
                    if good.0 == 0.0 && (hint.is_none() || bad.1 < self.target - NEAR_MISS || far) {
                        // Nothing passed yet, and no near miss from a first guess: scores
                        // drop steeply with the first coefficients thinned and slowly after
                        // (measured: 100, 94.8 at 5 %, 91.2 at 70 %, 88.5 at all), so
                        // interpolating from nothing thinned lands just below the failed
                        // share again. Halve it instead.
                        bad.0 / 2.0
                    } else {
                        let t = (good.1 - aim) / (good.1 - bad.1).max(1e-9);
                        good.0 + (bad.0 - good.0) * t.clamp(0.05, 0.95)
                    }
                }
                None => {
                    // Above the best passing share, at the slope from nothing thinned to it.
                    let slope = (start - good.1) / good.0.max(1e-9);
                    let next = (good.0 + (good.1 - aim) / slope.max(1e-9)).min(1.0);
                    if next - good.0 < 0.03 {
                        break;
                    }
                    next
                }
            };
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many magnitude-1 AC coefficients the JPEG has at each rank.
    fn census(jpeg: &[u8]) -> Result<Vec<u64>, ThinError> {
        count(jpeg, false, None).map(|(counts, _)| counts)
    }

    /// `img` as a 4:2:0 JPEG at `quality`.
    fn jpeg_420(img: &image::RgbImage, quality: i32) -> Vec<u8> {
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_quality(quality).unwrap();
        c.set_subsamp(turbojpeg::Subsamp::Sub2x2).unwrap();
        c.compress_to_vec(turbojpeg::Image {
            pixels: img.as_raw().as_slice(),
            width: img.width() as usize,
            pitch: img.width() as usize * 3,
            height: img.height() as usize,
            format: turbojpeg::PixelFormat::RGB,
        })
        .unwrap()
    }

    /// A 256×192 photo-like JPEG at quality 95 (fine quantisation: many ±1 coefficients).
    fn sample(quality: i32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(256, 192, |x, y| {
            let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 3 & 15;
            image::Rgb([
                (x + n) as u8,
                ((x * y) / 200 + n) as u8,
                (255 - y as u8).wrapping_add(n as u8),
            ])
        });
        jpeg_420(&img, quality)
    }

    /// A JPEG of [`sample`]'s picture with another draw of noise, of ±1 or 2 levels, in
    /// its lower half (a second frame of one scene), at `quality` and 4:2:0.
    fn sample_again(quality: i32) -> Vec<u8> {
        let img = decode(&sample(100)).unwrap().rgb;
        let img = image::RgbImage::from_fn(256, 192, |x, y| {
            let p = *img.get_pixel(x, y);
            let h = (x.wrapping_mul(0x9E37_79B9) ^ y.wrapping_mul(0x85EB_CA6B)) >> 9;
            let d = if y >= 96 { (h % 5) as i32 - 2 } else { 0 };
            image::Rgb(p.0.map(|v| (i32::from(v) + d).clamp(0, 255) as u8))
        });
        jpeg_420(&img, quality)
    }

    /// Odd sizes (partial blocks and MCUs), every subsampling, grey and progressive: a full cut leaves the same dimensions and no AC coefficient of
    /// magnitude 1; CMYK and lossless JPEGs are refused, not mangled.
    #[test]
    fn every_layout_takes_a_cut_and_others_are_refused() {
        let encode = |w: usize, h: usize, setup: &dyn Fn(&mut turbojpeg::Compressor)| {
            let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 5 & 7;
                image::Rgb([(x / 3 + n) as u8, (y / 2 + n) as u8, ((x + y) / 5) as u8])
            });
            let mut c = turbojpeg::Compressor::new().unwrap();
            c.set_quality(95).unwrap();
            setup(&mut c);
            c.compress_to_vec(turbojpeg::Image {
                pixels: img.as_raw().as_slice(),
                width: w,
                pitch: w * 3,
                height: h,
                format: turbojpeg::PixelFormat::RGB,
            })
            .unwrap()
        };
        use turbojpeg::Subsamp;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "4:4:4",
                encode(203, 157, &|c| c.set_subsamp(Subsamp::None).unwrap()),
            ),
            (
                "4:2:2",
                encode(203, 157, &|c| c.set_subsamp(Subsamp::Sub2x1).unwrap()),
            ),
            (
                "4:2:0",
                encode(203, 157, &|c| c.set_subsamp(Subsamp::Sub2x2).unwrap()),
            ),
            (
                "grey",
                encode(201, 99, &|c| c.set_subsamp(Subsamp::Gray).unwrap()),
            ),
            (
                "progressive",
                encode(130, 77, &|c| c.set_progressive(true).unwrap()),
            ),
        ];
        for (name, jpeg) in &cases {
            let before = decode(jpeg).unwrap();
            let all = thin(jpeg, CUTS, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(census(&all).unwrap().iter().sum::<u64>(), 0, "{name}");
            let after = decode(&all).unwrap();
            assert_eq!(before.rgb.dimensions(), after.rgb.dimensions(), "{name}");
            assert_eq!(image_end(&all), Some(all.len()), "{name}");
        }
        let cmyk = {
            let mut c = turbojpeg::Compressor::new().unwrap();
            c.set_quality(95).unwrap();
            c.set_colorspace(turbojpeg::Colorspace::CMYK).unwrap();
            let px = vec![100u8; 64 * 48 * 4];
            c.compress_to_vec(turbojpeg::Image {
                pixels: px.as_slice(),
                width: 64,
                pitch: 64 * 4,
                height: 48,
                format: turbojpeg::PixelFormat::CMYK,
            })
            .unwrap()
        };
        assert!(
            matches!(thin(&cmyk, CUTS, None), Err(ThinError::Turbo(m)) if m.contains("YCbCr or grey"))
        );
        let lossless = encode(64, 48, &|c| c.set_lossless(true).unwrap());
        assert!(thin(&lossless, CUTS, None).is_err());
        // Arithmetic coding: the decoder that scores does not take it, so the
        // file is never recoded (pack keeps it exactly).
        let arithmetic = encode(130, 77, &|c| c.set_arithmetic(true).unwrap());
        assert!(!matches!(
            search(&arithmetic, 90.0, None, None),
            Ok(Some(_))
        ));
    }

    /// Two frames of one scene (`moved`: a patch of the second differs) in a layout.
    fn frames(
        w: usize,
        h: usize,
        subsamp: turbojpeg::Subsamp,
        progressive: bool,
    ) -> (Vec<u8>, Vec<u8>) {
        let frame = |moved: bool| {
            let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 5 & 7;
                let patch = moved && (20..60).contains(&x) && (10..40).contains(&y);
                let v = if patch { 200 } else { (x / 3 + n) as u8 };
                image::Rgb([v, (y / 2 + n) as u8, ((x + y) / 5) as u8])
            });
            let mut c = turbojpeg::Compressor::new().unwrap();
            c.set_quality(95).unwrap();
            c.set_subsamp(subsamp).unwrap();
            c.set_progressive(progressive).unwrap();
            let jpeg = c
                .compress_to_vec(turbojpeg::Image {
                    pixels: img.as_raw().as_slice(),
                    width: w,
                    pitch: w * 3,
                    height: h,
                    format: turbojpeg::PixelFormat::RGB,
                })
                .unwrap();
            // Written by this module, as every file stored against another is.
            thin(&jpeg, CUTS / 3, None).unwrap()
        };
        (frame(false), frame(true))
    }

    /// A frame coded as its difference from the one before comes back byte for byte, in
    /// every layout; where little changed the residual is a fraction of the frame in Lepton.
    #[test]
    fn residuals_give_back_the_file_in_every_layout() {
        use turbojpeg::Subsamp;
        for (name, w, h, sub, progressive) in [
            ("4:4:4", 203, 157, Subsamp::None, false),
            ("4:2:2", 203, 157, Subsamp::Sub2x1, false),
            ("4:2:0", 203, 157, Subsamp::Sub2x2, false),
            ("grey", 201, 99, Subsamp::Gray, false),
            ("progressive", 130, 77, Subsamp::Sub2x2, true),
        ] {
            let (a, b) = frames(w, h, sub, progressive);
            assert_ne!(a, b, "{name}");
            let reference = coefficients(&a).unwrap();
            assert_eq!(
                reference.pixels(),
                w.div_ceil(8) * h.div_ceil(8) * 64,
                "{name}"
            );
            let r = residual(&b, &reference).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(restore(&r, &reference).unwrap(), b, "{name}");
            // A file that ends with a trailer (a newline) comes back with it.
            let tailed = [&b[..], b"\n"].concat();
            let r_tailed = residual(&tailed, &reference).unwrap();
            assert_eq!(r_tailed, [&r[..], b"\n"].concat(), "{name}");
            assert_eq!(restore(&r_tailed, &reference).unwrap(), tailed, "{name}");
            let (file, kept) = restore_keeping(&r, &reference).unwrap();
            assert_eq!(file, b, "{name}");
            assert_eq!(kept, coefficients(&b).unwrap(), "{name}");
            let alone = crate::lepton::encode_any(&b).unwrap().len();
            let against = crate::lepton::encode_any(&r).unwrap().len();
            assert!(
                against * 2 < alone,
                "{name}: {against} against, {alone} alone"
            );
            // The same frame against itself: no coefficient left.
            let same = residual(&a, &reference).unwrap();
            assert_eq!(
                coefficients(&same)
                    .unwrap()
                    .planes
                    .iter()
                    .flat_map(|p| &p.1)
                    .filter(|&&c| c != 0)
                    .count(),
                0,
                "{name}"
            );
        }
    }

    /// The rough bit count tells frames of one scene (differences far cheaper than the file)
    /// from unrelated pictures (differences dearer), and refuses other layouts.
    #[test]
    fn bit_counts_tell_similar_frames_from_unrelated_ones() {
        let (a, b) = frames(256, 192, turbojpeg::Subsamp::Sub2x2, false);
        let (ca, cb) = (coefficients(&a).unwrap(), coefficients(&b).unwrap());
        let (alone, against) = cb.bits_alone_and_against(&ca).unwrap();
        assert!(against * 4 < alone, "{against} of {alone}");
        assert_eq!(ca.bits_alone_and_against(&ca).unwrap().1, 0);
        let unrelated = coefficients(&sample(95)).unwrap();
        let (alone, against) = unrelated.bits_alone_and_against(&ca).unwrap();
        assert!(against > alone, "{against} of {alone}");
        let (grey, _) = frames(256, 192, turbojpeg::Subsamp::Gray, false);
        assert_eq!(
            coefficients(&grey).unwrap().bits_alone_and_against(&ca),
            None
        );
        let (wider, _) = frames(264, 192, turbojpeg::Subsamp::Sub2x2, false);
        assert_eq!(
            coefficients(&wider).unwrap().bits_alone_and_against(&ca),
            None
        );
    }

    /// A reference of another layout, or one that would leave differences no baseline JPEG
    /// can hold, is an error (the file is then stored alone), never a wrong file.
    #[test]
    fn residuals_refuse_other_layouts_and_overflow() {
        use turbojpeg::Subsamp;
        let (a, b) = frames(203, 157, Subsamp::Sub2x2, false);
        let reference = coefficients(&a).unwrap();
        let (other, _) = frames(211, 157, Subsamp::Sub2x2, false);
        assert!(residual(&other, &reference).is_err());
        let (sub444, _) = frames(203, 157, Subsamp::None, false);
        assert!(residual(&sub444, &reference).is_err());
        let (grey, _) = frames(203, 157, Subsamp::Gray, false);
        assert!(residual(&grey, &reference).is_err());
        // Taller: the reference runs out of rows.
        let (taller, _) = frames(203, 181, Subsamp::Sub2x2, false);
        assert!(residual(&taller, &reference).is_err());
        // Shorter: rows of the reference are left over.
        let (shorter, _) = frames(203, 133, Subsamp::Sub2x2, false);
        assert!(residual(&shorter, &reference).is_err());
        let mut extreme = reference.clone();
        for (_, plane) in &mut extreme.planes {
            for block in plane.chunks_exact_mut(64) {
                // Bright blocks (DC > 0) minus -1023 pass the largest DC there is.
                block[0] = if block[0] > 0 {
                    -MAX_COEF as i16
                } else {
                    MAX_COEF as i16
                };
            }
        }
        assert!(
            matches!(residual(&b, &extreme), Err(ThinError::Turbo(m)) if m.contains("not coded against"))
        );
        assert!(
            matches!(residual(&shorter, &reference), Err(ThinError::Turbo(m)) if m.contains("another layout"))
        );
    }

    #[test]
    fn zigzag_table_is_a_permutation() {
        let mut seen = [false; 64];
        for &z in &ZIGZAG_OF_NATURAL {
            seen[z as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        // The first row in natural order: 0 1 5 6 14 15 27 28.
        assert_eq!(ZIGZAG_OF_NATURAL[7], 28);
        assert_eq!(ZIGZAG_OF_NATURAL[63], 63);
    }

    #[test]
    fn cut_zero_keeps_the_pixels_and_a_full_cut_shrinks_the_file() {
        let jpeg = sample(95);
        let counts = census(&jpeg).unwrap();
        assert!(counts.iter().sum::<u64>() > 1000, "{counts:?}");
        let same = thin(&jpeg, 0, None).unwrap();
        assert_eq!(decode(&same).unwrap().rgb, decode(&jpeg).unwrap().rgb);
        let all = thin(&jpeg, CUTS, None).unwrap();
        assert!(
            all.len() < same.len() * 9 / 10,
            "{} {}",
            all.len(),
            same.len()
        );
        assert_eq!(census(&all).unwrap().iter().sum::<u64>(), 0);
        // Thinning more never leaves more coefficients.
        let half = thin(&jpeg, cut_for(&counts, 0.5), None).unwrap();
        let left: u64 = census(&half).unwrap().iter().sum();
        let total: u64 = counts.iter().sum();
        assert!(
            left < total * 6 / 10 && left > total * 4 / 10,
            "{left} of {total}"
        );
    }

    /// Chroma coefficients rank after every luma one: a search that keeps some luma
    /// coefficients leaves the chroma ones alone, and one that takes every luma one may go on
    /// with the chroma ones.
    #[test]
    fn chroma_is_thinned_only_once_all_luma_is() {
        let jpeg = sample(95);
        let counts = census(&jpeg).unwrap();
        let (luma, chroma) = counts.split_at(LUMA_CUTS);
        let chroma_total: u64 = chroma.iter().sum();
        assert!(luma.iter().sum::<u64>() > 0 && chroma_total > 0);
        let luma_gone = census(&thin(&jpeg, LUMA_CUTS, None).unwrap()).unwrap();
        assert_eq!(luma_gone[..LUMA_CUTS].iter().sum::<u64>(), 0);
        assert_eq!(&luma_gone[LUMA_CUTS..], chroma);
        // A target between what thinning all the luma and 60 % of it score (60 % the first
        // guess): the search keeps some luma, and every chroma coefficient.
        let original = decode(&jpeg).unwrap();
        let score = |bytes: &[u8]| {
            quality::score_picture(&original, &decode(bytes).unwrap())
                .unwrap()
                .ssimulacra2
        };
        let all_luma = score(&thin(&jpeg, LUMA_CUTS, None).unwrap());
        let most = score(&thin(&jpeg, cut_for(luma, 0.6), None).unwrap());
        assert!(all_luma < most - 1.0, "{all_luma} {most}");
        let t = search(&jpeg, (all_luma + most) / 2.0, Some(0.6), None)
            .unwrap()
            .expect("a share between");
        assert!(t.share < 1.0, "{}", t.share);
        assert_eq!(&census(&t.bytes).unwrap()[LUMA_CUTS..], chroma);
        // A low target lets everything go, chroma too.
        let low = search(&jpeg, 20.0, None, None)
            .unwrap()
            .expect("something at 20");
        assert_eq!(low.share, 1.0);
        let left: u64 = census(&low.bytes).unwrap().iter().sum();
        assert!(left < chroma_total / 2, "{left} of {chroma_total} left");
    }

    /// The search over a sample JPEG's luma with `curve` (a score for each share thinned) as
    /// the scorer, a share told by the candidate's length; the target is 90.
    fn search_on_curve(
        curve: impl Fn(f64) -> f64,
        min_gain: usize,
        hint: Option<f64>,
    ) -> Option<Thinned> {
        search_on_curve_of(&sample(95), curve, min_gain, hint, &mut |_| {})
    }

    /// [`search_on_curve`] over `jpeg`, `scored` told every file the search scores.
    fn search_on_curve_of(
        jpeg: &[u8],
        curve: impl Fn(f64) -> f64,
        min_gain: usize,
        hint: Option<f64>,
        scored: &mut dyn FnMut(&[u8]),
    ) -> Option<Thinned> {
        let scored = std::cell::RefCell::new(scored);
        let (counts, rewritten) = count(jpeg, true, None).unwrap();
        let luma = &counts[..LUMA_CUTS];
        // The share a candidate was thinned by, told by its length (a table of lengths at
        // every hundredth of a share).
        let lengths: Vec<(usize, f64)> = (0..=100)
            .map(|k| {
                let share = f64::from(k) / 100.0;
                (thin(jpeg, cut_for(luma, share), None).unwrap().len(), share)
            })
            .collect();
        let score = |bytes: &[u8]| -> Result<f64, ThinError> {
            (scored.borrow_mut())(bytes);
            let share = lengths
                .iter()
                .min_by_key(|(len, _)| len.abs_diff(bytes.len()))
                .map_or(0.0, |&(_, share)| share);
            Ok(curve(share))
        };
        let descent = Descent {
            jpeg,
            target: 90.0,
            score: &score,
            toward: None,
        };
        descent
            .run(luma, 0, (100.0, Some(rewritten.len())), min_gain, hint)
            .unwrap()
    }

    /// Scores shaped like a 12 MP night photo's (measured: 100, 93.4 at 5 %, 90.1 at 70 %, 89.6
    /// with everything thinned; here 91.3 - 1.7 × share past the first drop) are searched
    /// from everything thinned down by halving, and the share found keeps the target.
    /// Interpolating from nothing thinned tries 0.95, 0.90, 0.85, 0.82: all fail.
    #[test]
    fn a_steep_first_drop_is_searched_by_halving() {
        let curve = |share: f64| {
            if share == 0.0 {
                100.0
            } else {
                91.3 - 1.7 * share
            }
        };
        let t = search_on_curve(curve, MIN_GAIN_PERMILLE, None).expect("a share at 90");
        assert!(t.ssimulacra2 >= 90.0);
        assert!(t.share >= 0.5, "{}", t.share);
    }

    /// A first guess from the file before (everything thinned) that fails, then a near miss
    /// at half: scores measured on a 12 MP photo (100, 90.32 at a quarter, 89.44 at half,
    /// 88.88 at all) rise too slowly towards nothing thinned for interpolating from there,
    /// which crept down by near misses (0.467, 0.439, 0.417) and kept the file exactly. The
    /// line through the two failing tries says a quarter or less: halving again finds it.
    #[test]
    fn near_misses_that_creep_are_halved() {
        // Piecewise linear through the photo's measured points.
        let points = [
            (0.0, 100.0),
            (0.05, 94.8),
            (0.25, 90.32),
            (0.5, 89.44),
            (1.0, 88.88),
        ];
        let curve = |share: f64| {
            let k = points.windows(2).position(|w| share <= w[1].0).unwrap_or(3);
            let ((x0, y0), (x1, y1)) = (points[k], points[k + 1]);
            y0 + (y1 - y0) * (share - x0) / (x1 - x0)
        };
        let t = search_on_curve(curve, 1, Some(1.0)).expect("a share at 90");
        assert!(t.ssimulacra2 >= 90.0);
        assert!(t.share >= 0.25, "{}", t.share);
    }

    /// Two shares whose cuts differ only by ranks that hold no coefficient make the same
    /// file: the search scores it once. Coarse JPEGs (few ±1s, many empty ranks) searched
    /// with targets crossed at several shares, from several first guesses.
    #[test]
    fn no_file_is_scored_twice() {
        for quality in [20, 40, 95] {
            let jpeg = sample(quality);
            for cross in [0.1, 0.3, 0.55, 0.8] {
                // 100 with nothing thinned, 90 at `cross`, falling after it.
                let curve = |share: f64| {
                    if share == 0.0 {
                        100.0
                    } else {
                        91.0 - share / cross
                    }
                };
                for hint in [None, Some(1.0), Some(0.5), Some(0.2)] {
                    let mut seen = Vec::new();
                    let t = search_on_curve_of(&jpeg, curve, 1, hint, &mut |bytes| {
                        seen.push(xxhash_rust::xxh3::xxh3_64(bytes))
                    });
                    let tries = seen.len();
                    seen.sort_unstable();
                    seen.dedup();
                    assert_eq!(seen.len(), tries, "quality {quality}, {cross}, {hint:?}");
                    if let Some(t) = t {
                        assert!(t.ssimulacra2 >= 90.0);
                    }
                }
            }
        }
    }

    #[test]
    fn markers_survive_a_rewrite() {
        let jpeg = sample(95);
        // An EXIF-like APP1 and a comment after SOI.
        let mut with = jpeg[..2].to_vec();
        with.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x0C]);
        with.extend_from_slice(b"Exif\0\0ABCD");
        with.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x07]);
        with.extend_from_slice(b"hello");
        with.extend_from_slice(&jpeg[2..]);
        let out = thin(&with, CUTS, None).unwrap();
        let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(find(&out, b"Exif\0\0ABCD"));
        assert!(find(&out, b"\xFF\xFE\x00\x07hello"));
        assert_eq!(image_end(&out), Some(out.len()));
    }

    #[test]
    fn search_meets_the_target_or_gives_nothing() {
        let jpeg = sample(95);
        let original = decode(&jpeg).unwrap();
        let mut found = 0;
        for target in [80.0, 90.0] {
            if let Some(t) = search(&jpeg, target, None, None).unwrap() {
                found += 1;
                let back = decode(&t.bytes).unwrap();
                let s = quality::score_picture(&original, &back)
                    .unwrap()
                    .ssimulacra2;
                assert!(s >= target, "{s} < {target}");
                assert!((s - t.ssimulacra2).abs() < 1e-9);
                assert!(t.bytes.len() < thin(&jpeg, 0, None).unwrap().len());
            }
        }
        // At 80 at least, this noisy quality-95 picture has something to give.
        assert!(found >= 1, "nothing found at 80 or 90");
        // An unreachable target gives nothing.
        assert!(search(&jpeg, 100.5, None, None).unwrap().is_none());
    }

    /// Thinning toward a reference moves AC coefficients one step from the reference's onto
    /// its value and changes nothing else; all of it leaves none one step away; the
    /// difference from the reference then has fewer non-zero coefficients, and a search
    /// toward it meets the target with a smaller difference than the file as it was. A
    /// reference of another layout is refused.
    #[test]
    fn thinning_toward_a_reference_takes_its_values() {
        let first = sample(95);
        let second = sample_again(95);
        let reference = coefficients(&first).unwrap();
        let before = coefficients(&second).unwrap();
        // (component, index, coefficient) of every coefficient of a JPEG.
        let all = |c: &Coefficients| -> Vec<(usize, usize, i32)> {
            c.planes
                .iter()
                .enumerate()
                .flat_map(|(k, (_, p))| {
                    p.iter()
                        .enumerate()
                        .map(move |(i, &v)| (k, i, i32::from(v)))
                })
                .collect()
        };
        let (r, b) = (all(&reference), all(&before));
        assert_eq!(r.len(), b.len());
        let one_step = |c: &[(usize, usize, i32)]| {
            c.iter()
                .zip(&r)
                .filter(|((_, i, v), (_, _, w))| i % 64 != 0 && (v - w).abs() == 1)
                .count()
        };
        let differing =
            |c: &[(usize, usize, i32)]| c.iter().zip(&r).filter(|(a, b)| a.2 != b.2).count();
        assert!(one_step(&b) > 1000, "{} one step away", one_step(&b));
        // Nothing cut: the same coefficients.
        assert_eq!(
            coefficients(&thin(&second, 0, Some(&reference)).unwrap()).unwrap(),
            before
        );
        for cut in [LUMA_CUTS / 2, CUTS] {
            let after = all(&coefficients(&thin(&second, cut, Some(&reference)).unwrap()).unwrap());
            let mut moved = 0;
            for ((a, was), (_, _, to)) in after.iter().zip(&b).zip(&r) {
                if a.2 != was.2 {
                    moved += 1;
                    assert!(a.1 % 64 != 0, "a DC coefficient moved");
                    assert_eq!((was.2 - to).abs(), 1, "{a:?} was not one step away");
                    assert_eq!(a.2, *to, "{a:?} did not take the reference's value");
                }
            }
            assert!(moved > 0, "cut {cut}: nothing moved");
            assert_eq!(differing(&after), differing(&b) - moved);
            if cut == CUTS {
                assert_eq!(one_step(&after), 0);
            }
        }
        // A search toward the reference.
        let t = search(&second, 85.0, None, Some(&reference))
            .unwrap()
            .expect("a form at 85");
        assert!(t.ssimulacra2 >= 85.0);
        let score = quality::score_picture(&decode(&second).unwrap(), &decode(&t.bytes).unwrap())
            .unwrap()
            .ssimulacra2;
        assert!((score - t.ssimulacra2).abs() < 1e-9);
        let as_it_was = residual(&thin(&second, 0, None).unwrap(), &reference).unwrap();
        let toward = residual(&t.bytes, &reference).unwrap();
        assert!(
            toward.len() < as_it_was.len(),
            "{} against {}",
            toward.len(),
            as_it_was.len()
        );
        assert_eq!(restore(&toward, &reference).unwrap(), t.bytes);
        // Another layout: refused.
        let small = {
            let img = image::RgbImage::from_pixel(64, 48, image::Rgb([90, 120, 150]));
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode_image(&img)
                .unwrap();
            out
        };
        assert!(thin(&second, CUTS, Some(&coefficients(&small).unwrap())).is_err());
        assert!(search(&second, 85.0, None, Some(&coefficients(&small).unwrap())).is_err());
    }

    #[test]
    fn data_after_the_image_is_carried_when_short_and_refused_otherwise() {
        let jpeg = sample(95);
        assert_eq!(image_end(&jpeg), Some(jpeg.len()));
        assert_eq!(image_end(&jpeg[..jpeg.len() - 1]), None);
        // A file cut short is named as such, not as one with data after its end.
        assert!(matches!(
            search(&jpeg[..jpeg.len() - 1], 80.0, None, None),
            Err(ThinError::Decode(m)) if m.contains("no end-of-image marker")
        ));
        assert_eq!(image_end(b"\xFF\xD8"), None);
        let with = |tail: &[u8]| [&jpeg[..], tail].concat();
        // A newline, or a vendor's block of tags, ends the recoded file as it ended the
        // original; the image is recoded as without it.
        let plain = search(&jpeg, 80.0, None, None)
            .unwrap()
            .expect("recoded at 80");
        for tail in [&b"\n"[..], b"SEFHvendor tags\0\0\0\0SEFT"] {
            let file = with(tail);
            assert_eq!(carried_trailer(&file).unwrap(), tail);
            let t = search(&file, 80.0, None, None)
                .unwrap()
                .expect("recoded at 80");
            assert!(t.bytes.ends_with(tail));
            assert_eq!(&t.bytes[..t.bytes.len() - tail.len()], &plain.bytes[..]);
            assert_eq!(image_end(&t.bytes), Some(t.bytes.len() - tail.len()));
        }
        // A motion photo's video (over 64 KiB) or a second picture is refused rather than
        // carried: the file is kept exactly.
        let video = with(&[b"ftypmp42".as_slice(), &vec![7; MAX_TRAILER]].concat());
        let second = with(&sample(60));
        for file in [video, second] {
            assert!(matches!(
                carried_trailer(&file),
                Err(ThinError::DataAfterImage)
            ));
            assert!(matches!(
                search(&file, 80.0, None, None),
                Err(ThinError::DataAfterImage)
            ));
        }
    }

    #[test]
    fn damaged_and_unusual_files_are_errors_not_crashes() {
        let jpeg = sample(90);
        for cut in [10, jpeg.len() / 2, jpeg.len() - 3] {
            assert!(thin(&jpeg[..cut], CUTS, None).is_err(), "cut at {cut}");
            assert!(census(&jpeg[..cut]).is_err(), "cut at {cut}");
            assert!(
                search(&jpeg[..cut], 90.0, None, None).is_err(),
                "cut at {cut}"
            );
        }
        assert!(thin(b"not a jpeg at all", 0, None).is_err());
        let mut flipped = jpeg.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        let _ = search(&flipped, 90.0, Some(0.5), None);
    }
}
