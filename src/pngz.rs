//! PNG files kept bit-exact with their image data re-coded: the one place that uses zlib and
//! liblzma.
//!
//! A PNG's image data is a zlib stream of filtered rows, and zlib's 32 KiB window cannot see
//! the line of text, the button or the toolbar that repeats a few hundred rows further down.
//! Here the stream is inflated, the rows unfiltered, and the pixels compressed with LZMA,
//! whose window holds the whole image; what the file needs besides (the bytes before and
//! after its IDAT chunks, each row's filter type, the IDAT chunk lengths) goes along. To give
//! the file back, the rows are filtered again and deflated with the zlib settings that made
//! the original stream: those are found at pack time by deflating again and comparing, and a
//! file whose stream no zlib setting reproduces (another deflater wrote it) is not recoded.
//! Pack decodes the result and compares it with the file before it keeps it, as for Lepton.
//!
//! Coded form (all integers little-endian):
//!
//! ```text
//! "AVPZ" version:u8=1 transform:u8 level:u8 strategy:u8 mem_level:u8 window_bits:u8
//! rows:u32 row_bytes:u32 bpp:u8 prefix_len:u32 suffix_len:u32 idat_count:u32 idat_len:u32*idat_count
//! xz stream of: prefix ‖ suffix ‖ filter type of each row ‖ pixels (rows unfiltered)
//! ```
//!
//! `transform` 1: an 8-bit RGB or RGBA image whose red, green and blue are equal everywhere
//! (a grey page saved as colour) keeps one of the three; 0: the rows as they are.
//!
//! Version 2 (a *member*) is the same with the payload not compressed: pack puts members of
//! many PNGs one after the other into a *group* of up to [`GROUP_BYTES`] and compresses the
//! group as one xz stream (`compress_group`), so that LZMA finds the toolbar of one
//! screenshot in the next one too (screenshots: 0.6× the bytes of one stream per file).

use std::io::{Read, Write};

/// Largest unfiltered image data recoded (rows × row bytes): pack holds it about four times
/// over (pixels, filtered rows, the LZMA encoder's window, the check), for two files at once.
pub const MAX_PIXEL_BYTES: u64 = 64 << 20;
/// Largest PNG file recoded.
pub const MAX_SIZE: usize = 64 << 20;
/// LZMA preset (xz -6), with a window no larger than the data (`xz_encoder`): up to 8 MiB
/// for one file (at most about 94 MiB to encode, 9 MiB to decode), up to 16 MiB for a group
/// (about 190 MiB to encode, 17 MiB to decode).
const PRESET: u32 = 6;
/// The zlib settings search deflates at most about this many times the image's bytes.
const SEARCH_BUDGET: usize = 4;
const MAGIC: &[u8; 4] = b"AVPZ";
/// The payload is an xz stream.
const VERSION: u8 = 1;
/// The payload as it is (a member of a group).
const VERSION_MEMBER: u8 = 2;
/// Pack closes a group before a member that would take it beyond this many bytes (a member
/// larger than this is a group of its own). Reading one member decodes its whole group.
pub const GROUP_BYTES: usize = 16 << 20;
/// Largest group a reader decodes: one member of the largest PNG recoded (its pixels, the
/// bytes around them, one IDAT length per 12 bytes of file, the header), or `GROUP_BYTES`.
pub const MAX_GROUP_BYTES: u64 = MAX_PIXEL_BYTES + (MAX_SIZE as u64) * 4 / 3 + 64;
const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

#[derive(Debug, thiserror::Error)]
pub enum PngzError {
    #[error("recoded PNG data is damaged: {0}")]
    Damaged(&'static str),
    #[error("recoded PNG data: {0}")]
    Lzma(#[from] std::io::Error),
    #[error("zlib refused to deflate (code {0})")]
    Zlib(i32),
    #[error("recoded PNG gives {got} bytes where {want} were recorded")]
    Size { got: usize, want: u64 },
}

/// Whether a file's first bytes are a PNG signature.
pub fn is_png(head: &[u8]) -> bool {
    head.starts_with(&SIGNATURE)
}

/// What the recoder learned of a PNG file.
struct Layout {
    /// Bytes before the first IDAT chunk and after the last one.
    prefix: std::ops::Range<usize>,
    suffix: std::ops::Range<usize>,
    idat_lens: Vec<u32>,
    /// The concatenated IDAT data (a zlib stream).
    zlib: Vec<u8>,
    rows: u32,
    row_bytes: u32,
    bpp: u8,
    /// Channels of 8 bits for transform 1 (3 or 4), else 0.
    rgb8: u8,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Finds the IDAT chunks and reads the header; `None` for anything this recoder does not
/// take (interlaced images, IDAT chunks not in one run, damaged structure).
fn layout(file: &[u8]) -> Option<Layout> {
    if !is_png(file) {
        return None;
    }
    let mut at = SIGNATURE.len();
    let (mut width, mut height, mut depth, mut colour) = (0u32, 0u32, 0u8, 0u8);
    let mut first = None;
    let mut end = None;
    let mut idat_lens = Vec::new();
    let mut zlib = Vec::new();
    let mut seen_ihdr = false;
    while at < file.len() {
        let len = be32(file, at)? as usize;
        let kind = file.get(at + 4..at + 8)?;
        let data = file.get(at + 8..at.checked_add(8 + len)?)?;
        let next = at.checked_add(12 + len)?;
        if next > file.len() {
            return None;
        }
        match kind {
            b"IHDR" => {
                if data.len() != 13 || seen_ihdr {
                    return None;
                }
                seen_ihdr = true;
                width = be32(data, 0)?;
                height = be32(data, 4)?;
                depth = data[8];
                colour = data[9];
                if data[10] != 0 || data[11] != 0 || data[12] != 0 {
                    // Another compression or filter method, or interlaced.
                    return None;
                }
            }
            b"IDAT" => {
                match (first, end) {
                    (None, _) => first = Some(at),
                    (Some(_), Some(e)) if e != at => return None,
                    _ => {}
                }
                end = Some(next);
                idat_lens.push(u32::try_from(len).ok()?);
                zlib.extend_from_slice(data);
            }
            b"IEND" => break,
            _ => {}
        }
        at = next;
    }
    let (first, end) = (first?, end?);
    let channels: u64 = match colour {
        0 => 1,
        2 => 3,
        3 => 1,
        4 => 2,
        6 => 4,
        _ => return None,
    };
    let ok_depth = match colour {
        0 => matches!(depth, 1 | 2 | 4 | 8 | 16),
        3 => matches!(depth, 1 | 2 | 4 | 8),
        _ => matches!(depth, 8 | 16),
    };
    if !seen_ihdr || !ok_depth || width == 0 || height == 0 {
        return None;
    }
    let bits = channels * u64::from(depth);
    let row_bytes = (u64::from(width) * bits).div_ceil(8);
    if u64::from(height) * (row_bytes + 1) > MAX_PIXEL_BYTES {
        return None;
    }
    let rgb8 = if depth == 8 && (colour == 2 || colour == 6) {
        channels as u8
    } else {
        0
    };
    Some(Layout {
        prefix: 0..first,
        suffix: end..file.len(),
        idat_lens,
        zlib,
        rows: height,
        row_bytes: u32::try_from(row_bytes).ok()?,
        bpp: bits.div_ceil(8).max(1) as u8,
        rgb8,
    })
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Undoes (`undo`) or applies a row's filter in place: `row` holds the row's bytes, `prev`
/// the previous row's unfiltered bytes (zeros for the first row).
fn filter_row(kind: u8, row: &mut [u8], prev: &[u8], bpp: usize, undo: bool) {
    // Applying works from the end so that each byte's left neighbour is still unfiltered.
    let n = row.len();
    let pred = |row: &[u8], i: usize| -> u8 {
        let a = if i >= bpp { row[i - bpp] } else { 0 };
        let b = prev[i];
        let c = if i >= bpp { prev[i - bpp] } else { 0 };
        match kind {
            1 => a,
            2 => b,
            3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
            4 => paeth(a, b, c),
            _ => 0,
        }
    };
    if undo {
        for i in 0..n {
            row[i] = row[i].wrapping_add(pred(row, i));
        }
    } else {
        for i in (0..n).rev() {
            row[i] = row[i].wrapping_sub(pred(row, i));
        }
    }
}

/// A zlib deflate stream with the settings of one candidate.
struct Deflater {
    strm: Box<libz_sys::z_stream>,
}

extern "C" fn z_alloc(
    _: libz_sys::voidpf,
    items: libz_sys::uInt,
    size: libz_sys::uInt,
) -> libz_sys::voidpf {
    // SAFETY: calloc with any sizes is sound; zlib checks for null.
    unsafe { libc::calloc(items as libc::size_t, size as libc::size_t) }
}

extern "C" fn z_free(_: libz_sys::voidpf, p: libz_sys::voidpf) {
    // SAFETY: `p` came from `z_alloc` (calloc) or is null.
    unsafe { libc::free(p) }
}

impl Deflater {
    fn new(s: Settings) -> Result<Self, PngzError> {
        let mut strm = Box::new(libz_sys::z_stream {
            next_in: std::ptr::null_mut(),
            avail_in: 0,
            total_in: 0,
            next_out: std::ptr::null_mut(),
            avail_out: 0,
            total_out: 0,
            msg: std::ptr::null_mut(),
            state: std::ptr::null_mut(),
            zalloc: z_alloc,
            zfree: z_free,
            opaque: std::ptr::null_mut(),
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        // SAFETY: `strm` is a valid, boxed (so never moved) stream with our allocator; the
        // version string and struct size are the ones libz-sys was built against.
        let code = unsafe {
            libz_sys::deflateInit2_(
                &mut *strm,
                i32::from(s.level),
                libz_sys::Z_DEFLATED,
                i32::from(s.window_bits),
                i32::from(s.mem_level),
                i32::from(s.strategy),
                libz_sys::zlibVersion(),
                std::mem::size_of::<libz_sys::z_stream>() as i32,
            )
        };
        if code != libz_sys::Z_OK {
            return Err(PngzError::Zlib(code));
        }
        Ok(Deflater { strm })
    }

    /// Deflates `input` (all of it when `finish`), appending up to `room` bytes to `out`;
    /// returns zlib's code.
    fn run(&mut self, input: &mut &[u8], out: &mut Vec<u8>, room: usize, finish: bool) -> i32 {
        out.reserve(room);
        let start = out.len();
        let avail_in = input.len().min(u32::MAX as usize) as u32;
        let room = room.min(u32::MAX as usize) as u32;
        self.strm.next_in = input.as_ptr() as *mut u8;
        self.strm.avail_in = avail_in;
        // SAFETY: `out` has `room` bytes reserved past `start`; zlib writes at most
        // `avail_out` bytes there and reads at most `avail_in` bytes of `input`.
        let code = unsafe {
            self.strm.next_out = out.as_mut_ptr().add(start);
            self.strm.avail_out = room;
            let flush = if finish {
                libz_sys::Z_FINISH
            } else {
                libz_sys::Z_NO_FLUSH
            };
            let code = libz_sys::deflate(&mut *self.strm, flush);
            out.set_len(start + (room - self.strm.avail_out) as usize);
            code
        };
        let used = (avail_in - self.strm.avail_in) as usize;
        *input = &input[used..];
        code
    }
}

impl Drop for Deflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by deflateInit2_.
        unsafe {
            libz_sys::deflateEnd(&mut *self.strm);
        }
    }
}

/// zlib settings that reproduce a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Settings {
    level: u8,
    strategy: u8,
    mem_level: u8,
    window_bits: u8,
}

/// Deflates `data` with `s` in full.
fn deflate_all(data: &[u8], s: Settings) -> Result<Vec<u8>, PngzError> {
    let mut d = Deflater::new(s)?;
    let mut input = data;
    let mut out = Vec::new();
    loop {
        let code = d.run(&mut input, &mut out, data.len() / 2 + (64 << 10), true);
        match code {
            libz_sys::Z_STREAM_END => return Ok(out),
            libz_sys::Z_OK | libz_sys::Z_BUF_ERROR => {}
            other => return Err(PngzError::Zlib(other)),
        }
    }
}

/// Whether deflating `data` with `s` gives exactly `want`: compared as it goes, so that a
/// wrong setting usually costs a few KiB of work.
/// Also returns how many bytes of `data` it deflated.
fn reproduces(data: &[u8], want: &[u8], s: Settings) -> (bool, usize) {
    let Ok(mut d) = Deflater::new(s) else {
        return (false, 0);
    };
    let mut input = data;
    let mut out = Vec::with_capacity(64 << 10);
    let mut pos = 0;
    loop {
        out.clear();
        let take = input.len().min(16 << 10);
        let finish = take == input.len();
        let mut piece = &input[..take];
        let code = d.run(&mut piece, &mut out, 64 << 10, finish);
        input = &input[take - piece.len()..];
        let Some(expected) = want.get(pos..pos + out.len()) else {
            return (false, data.len() - input.len());
        };
        if expected != out.as_slice() {
            return (false, data.len() - input.len());
        }
        pos += out.len();
        match code {
            libz_sys::Z_STREAM_END => {
                return (pos == want.len() && input.is_empty(), data.len());
            }
            libz_sys::Z_OK | libz_sys::Z_BUF_ERROR => {}
            _ => return (false, data.len() - input.len()),
        }
    }
}

/// The zlib settings worth trying for a stream, most likely first, from what its two-byte
/// header says (window size, and the level class zlib writes into FLEVEL).
fn candidates(zlib: &[u8]) -> Vec<Settings> {
    let (Some(&cmf), Some(&flg)) = (zlib.first(), zlib.get(1)) else {
        return Vec::new();
    };
    if cmf & 0x0F != 8 || (u16::from(cmf) << 8 | u16::from(flg)) % 31 != 0 || flg & 0x20 != 0 {
        return Vec::new();
    }
    let window_bits = (cmf >> 4) + 8;
    if !(9..=15).contains(&window_bits) {
        return Vec::new();
    }
    // zlib's FLEVEL: 0 for levels 0-1 and the Huffman-only and RLE strategies, 1 for 2-5,
    // 2 for 6, 3 for 7-9.
    let (levels, strategies): (&[u8], &[u8]) = match flg >> 6 {
        0 => (&[1, 0, 6, 9, 2, 3, 4, 5, 7, 8], &[0, 1, 2, 3]),
        1 => (&[2, 3, 4, 5], &[0, 1]),
        2 => (&[6], &[0, 1]),
        _ => (&[9, 7, 8], &[0, 1]),
    };
    let mut out = Vec::new();
    for &mem_level in &[8u8, 9] {
        for &level in levels {
            for &strategy in strategies {
                // Huffman-only and RLE only ever write FLEVEL 0; levels 2-9 with the other
                // strategies never do.
                if flg >> 6 == 0 && strategy < 2 && level > 1 {
                    continue;
                }
                out.push(Settings {
                    level,
                    strategy,
                    mem_level,
                    window_bits,
                });
            }
        }
    }
    // What common writers use, first: libpng at level 9 (GIMP, and the screenshot and page
    // corpora's writers) with the default or the filtered strategy, then ImageMagick (a
    // memory level of 9, filtered, level 7 from its default -quality 75, or 9). A wrong
    // candidate can read a flat image's whole stream before it differs (its first block holds
    // it all), so a writer tried late could be out of the search budget.
    const FIRST: [(u8, u8, u8); 4] = [(9, 0, 8), (9, 1, 8), (7, 1, 9), (9, 1, 9)];
    out.sort_by_key(|s| {
        FIRST
            .iter()
            .position(|&f| f == (s.level, s.strategy, s.mem_level))
            .unwrap_or(FIRST.len())
    });
    out
}

/// The filtered rows' bytes split into filter types and unfiltered pixels.
fn unfilter(
    filtered: &[u8],
    rows: usize,
    row_bytes: usize,
    bpp: usize,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut kinds = Vec::with_capacity(rows);
    let mut pixels = vec![0u8; rows * row_bytes];
    let zeros = vec![0u8; row_bytes];
    for r in 0..rows {
        let line = &filtered[r * (row_bytes + 1)..(r + 1) * (row_bytes + 1)];
        let kind = line[0];
        if kind > 4 {
            return None;
        }
        kinds.push(kind);
        let (done, rest) = pixels.split_at_mut(r * row_bytes);
        let row = &mut rest[..row_bytes];
        row.copy_from_slice(&line[1..]);
        let prev = if r == 0 {
            &zeros[..]
        } else {
            &done[(r - 1) * row_bytes..]
        };
        filter_row(kind, row, prev, bpp, true);
    }
    Some((kinds, pixels))
}

/// The rows filtered again as `kinds` says, each after its filter type byte.
fn refilter(kinds: &[u8], pixels: &[u8], row_bytes: usize, bpp: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(kinds.len() * (row_bytes + 1));
    let zeros = vec![0u8; row_bytes];
    let mut row = vec![0u8; row_bytes];
    for (r, &kind) in kinds.iter().enumerate() {
        row.copy_from_slice(&pixels[r * row_bytes..(r + 1) * row_bytes]);
        let prev = if r == 0 {
            &zeros[..]
        } else {
            &pixels[(r - 1) * row_bytes..r * row_bytes]
        };
        filter_row(kind, &mut row, prev, bpp, false);
        out.push(kind);
        out.extend_from_slice(&row);
    }
    out
}

/// Keeps one of three equal colour channels (transform 1), or `None` when they differ.
fn drop_equal_channels(pixels: &[u8], channels: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(pixels.len() / channels * (channels - 2));
    for px in pixels.chunks_exact(channels) {
        if px[0] != px[1] || px[1] != px[2] {
            return None;
        }
        out.extend_from_slice(&px[2..]);
    }
    Some(out)
}

fn restore_equal_channels(kept: &[u8], channels: usize) -> Vec<u8> {
    let per = channels - 2;
    let mut out = Vec::with_capacity(kept.len() / per * channels);
    for px in kept.chunks_exact(per) {
        out.extend_from_slice(&[px[0], px[0]]);
        out.extend_from_slice(px);
    }
    out
}

fn inflate(zlib: &[u8], size: usize) -> Option<Vec<u8>> {
    let mut d = flate2::Decompress::new(true);
    let mut out = Vec::with_capacity(size + 1);
    // One byte of room more than expected: a stream that holds more is refused.
    match d.decompress_vec(zlib, &mut out, flate2::FlushDecompress::Finish) {
        Ok(flate2::Status::StreamEnd) if out.len() == size && d.total_in() == zlib.len() as u64 => {
            Some(out)
        }
        _ => None,
    }
}

/// The member form of `coded` (a measured or settled coded form of `file`), when it decodes
/// to `file` exactly: what pack stores, checked in the form it is stored in.
pub fn checked_member(coded: &[u8], file: &[u8]) -> Option<Vec<u8>> {
    let size = file.len() as u64;
    let back = member(coded, size).and_then(|m| Ok((decode(&m, size)?, m)));
    match back {
        Ok((back, m)) if back == file => Some(m),
        Ok(_) => {
            log::debug!("recoded PNG does not give the file back: not kept");
            None
        }
        Err(e) => {
            log::debug!("recoded PNG does not decode: {e}");
            None
        }
    }
}

/// The recoded form of a PNG file when it is smaller than the file, not yet checked by
/// decoding it (`checked_member`): to measure what keeping the file costs.
pub fn measure(file: &[u8]) -> Option<Vec<u8>> {
    recode(file, true)
}

/// The recoded form of a PNG file without the zlib settings that give its stream back (not
/// searched for yet: that is most of the work): exactly as long as the recoded form if they
/// are found, so a lower bound of what keeping the file costs. `settle` completes it.
pub fn draft(file: &[u8]) -> Option<Vec<u8>> {
    recode(file, false)
}

/// A `draft` of `file` completed with the zlib settings that give its stream back; `None`
/// when no setting does (the file is not recoded).
pub fn settle(mut draft: Vec<u8>, file: &[u8]) -> Option<Vec<u8>> {
    let l = layout(file)?;
    let filtered = inflate(&l.zlib, l.rows as usize * (l.row_bytes as usize + 1))?;
    let s = search(&filtered, &l.zlib)?;
    // Magic, version, transform, then the four settings bytes (zeros in a draft).
    let at = MAGIC.len() + 2;
    let is_draft = draft.starts_with(MAGIC)
        && draft.get(MAGIC.len()) == Some(&VERSION)
        && draft.get(at..at + 4) == Some(&[0u8; 4][..]);
    if !is_draft {
        return None;
    }
    draft[at..at + 4].copy_from_slice(&[s.level, s.strategy, s.mem_level, s.window_bits]);
    Some(draft)
}

/// The zlib settings that deflate `filtered` to `zlib` exactly. Candidates are tried most
/// likely first; a wrong one usually fails at the stream's first block, which for a small or
/// flat image is all of it. The search stops once it has deflated SEARCH_BUDGET times the
/// image's bytes.
fn search(filtered: &[u8], zlib: &[u8]) -> Option<Settings> {
    let mut spent = 0;
    candidates(zlib).into_iter().find(|&s| {
        if spent > SEARCH_BUDGET * filtered.len() {
            return false;
        }
        let (found, read) = reproduces(filtered, zlib, s);
        spent += read;
        found
    })
}

/// The recoded form, with the zlib settings searched for (`measure`) or left as zeros
/// (`draft`).
fn recode(file: &[u8], with_settings: bool) -> Option<Vec<u8>> {
    if file.len() > MAX_SIZE {
        return None;
    }
    let l = layout(file)?;
    let (rows, row_bytes, bpp) = (l.rows as usize, l.row_bytes as usize, usize::from(l.bpp));
    let filtered = inflate(&l.zlib, rows * (row_bytes + 1))?;
    let settings = match with_settings {
        true => search(&filtered, &l.zlib)?,
        false => Settings {
            level: 0,
            strategy: 0,
            mem_level: 0,
            window_bits: 0,
        },
    };
    let (kinds, pixels) = unfilter(&filtered, rows, row_bytes, bpp)?;
    drop(filtered);
    let (transform, pixels) = match l.rgb8 {
        0 => (0u8, pixels),
        ch => match drop_equal_channels(&pixels, usize::from(ch)) {
            Some(kept) => (1, kept),
            None => (0, pixels),
        },
    };
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[
        VERSION,
        transform,
        settings.level,
        settings.strategy,
        settings.mem_level,
        settings.window_bits,
    ]);
    out.extend_from_slice(&l.rows.to_le_bytes());
    out.extend_from_slice(&l.row_bytes.to_le_bytes());
    out.push(l.bpp);
    out.extend_from_slice(&(l.prefix.len() as u32).to_le_bytes());
    out.extend_from_slice(&(l.suffix.len() as u32).to_le_bytes());
    out.extend_from_slice(&(l.idat_lens.len() as u32).to_le_bytes());
    for n in &l.idat_lens {
        out.extend_from_slice(&n.to_le_bytes());
    }
    let parts = [
        &file[l.prefix.clone()],
        &file[l.suffix.clone()],
        &kinds,
        &pixels,
    ];
    let mut xz = liblzma::write::XzEncoder::new_stream(
        out,
        xz_encoder(parts.iter().map(|p| p.len()).sum(), 8 << 20)?,
    );
    for part in parts {
        xz.write_all(part).ok()?;
    }
    let out = xz.finish().ok()?;
    (out.len() < file.len()).then_some(out)
}

/// An xz encoder at `PRESET` whose dictionary is no larger than the data (from 4 KiB up to
/// `most`): the same bytes out for less memory to set up, here and when reading.
fn xz_encoder(len: usize, most: usize) -> Option<liblzma::stream::Stream> {
    let dict = len.clamp(4 << 10, most).next_power_of_two() as u32;
    let mut options = liblzma::stream::LzmaOptions::new_preset(PRESET).ok()?;
    options.dict_size(dict);
    let mut filters = liblzma::stream::Filters::new();
    filters.lzma2(&options);
    liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc64).ok()
}

/// A little-endian reader over the coded form's header.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn bytes(&mut self, n: usize) -> Result<&[u8], PngzError> {
        if self.0.len() < n {
            return Err(PngzError::Damaged("header cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, PngzError> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, PngzError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The coded form's header, read and checked against the recorded size of the file.
struct Header {
    version: u8,
    settings: Settings,
    rows: usize,
    row_bytes: usize,
    bpp: usize,
    prefix_len: u64,
    suffix_len: u64,
    idat_lens: Vec<usize>,
    /// With the grey transform, the colour channels of which one is stored; else 0.
    channels: usize,
    /// Length of the payload (prefix, suffix, filter types, pixels).
    payload_len: u64,
}

/// Reads the header of a coded form or a member; returns it with the rest of the bytes.
fn header(coded: &[u8], size: u64) -> Result<(Header, &[u8]), PngzError> {
    let damaged = PngzError::Damaged;
    let mut f = Fields(coded);
    let version = match (f.bytes(4)? == MAGIC, f.u8()?) {
        (true, v @ (VERSION | VERSION_MEMBER)) => v,
        _ => return Err(damaged("not a recoded PNG of this version")),
    };
    let transform = f.u8()?;
    let settings = Settings {
        level: f.u8()?,
        strategy: f.u8()?,
        mem_level: f.u8()?,
        window_bits: f.u8()?,
    };
    let rows = f.u32()? as usize;
    let row_bytes = f.u32()? as usize;
    let bpp = usize::from(f.u8()?);
    let prefix_len = f.u32()? as u64;
    let suffix_len = f.u32()? as u64;
    let idats = f.u32()? as usize;
    if size > MAX_SIZE as u64
        || (rows as u64) * (row_bytes as u64 + 1) > MAX_PIXEL_BYTES
        || idats as u64 > size / 12
        || prefix_len + suffix_len > size
        || !(1..=8).contains(&bpp)
        || transform > 1
        || settings.level > 9
        || settings.strategy > 3
        || !(1..=9).contains(&settings.mem_level)
        || !(9..=15).contains(&settings.window_bits)
    {
        return Err(damaged("header out of range"));
    }
    let mut idat_lens = Vec::with_capacity(idats);
    for _ in 0..idats {
        idat_lens.push(f.u32()? as usize);
    }
    let channels = match (transform, bpp) {
        (0, _) => 0,
        (1, 3 | 4) => bpp,
        _ => return Err(damaged("transform does not fit the pixels")),
    };
    // With the grey transform one channel of `channels` is stored.
    let pixel_bytes = match (rows * row_bytes).checked_div(channels) {
        None => rows * row_bytes,
        Some(per_channel) => per_channel * (channels - 2),
    };
    let header = Header {
        version,
        settings,
        rows,
        row_bytes,
        bpp,
        prefix_len,
        suffix_len,
        idat_lens,
        channels,
        payload_len: prefix_len + suffix_len + rows as u64 + pixel_bytes as u64,
    };
    Ok((header, f.0))
}

/// The member form (version 2) of a coded form: the same header, the payload decompressed.
/// `size` is the size of the file.
pub fn member(coded: &[u8], size: u64) -> Result<Vec<u8>, PngzError> {
    let (h, rest) = header(coded, size)?;
    if h.version != VERSION {
        return Err(PngzError::Damaged("not a coded form"));
    }
    let head = &coded[..coded.len() - rest.len()];
    let mut out = Vec::with_capacity(head.len() + h.payload_len as usize);
    out.extend_from_slice(head);
    out[MAGIC.len()] = VERSION_MEMBER;
    unxz(
        rest,
        h.payload_len,
        &mut out,
        "pixel data of the wrong length",
    )?;
    Ok(out)
}

/// Appends the xz stream `coded` decompressed to `out`, which must give exactly `len` bytes
/// (no more are read); `wrong` names the damage otherwise.
fn unxz(coded: &[u8], len: u64, out: &mut Vec<u8>, wrong: &'static str) -> Result<(), PngzError> {
    let start = out.len();
    liblzma::read::XzDecoder::new(coded)
        .take(len + 1)
        .read_to_end(out)?;
    if (out.len() - start) as u64 != len {
        return Err(PngzError::Damaged(wrong));
    }
    Ok(())
}

/// Compresses a group of members as one xz stream (checked by decoding it); `None` if
/// liblzma fails.
pub fn compress_group(group: &[u8]) -> Option<Vec<u8>> {
    let mut xz =
        liblzma::write::XzEncoder::new_stream(Vec::new(), xz_encoder(group.len(), GROUP_BYTES)?);
    xz.write_all(group).ok()?;
    let coded = xz.finish().ok()?;
    match decompress_group(&coded, group.len() as u64) {
        Ok(back) if back == group => Some(coded),
        _ => {
            log::warn!("a group of recoded PNGs does not decode to itself");
            None
        }
    }
}

/// A group back from its xz stream; `len` is its recorded length.
pub fn decompress_group(coded: &[u8], len: u64) -> Result<Vec<u8>, PngzError> {
    if len > MAX_GROUP_BYTES {
        return Err(PngzError::Damaged("group too large"));
    }
    let mut out = Vec::with_capacity(len as usize);
    unxz(coded, len, &mut out, "group of the wrong length")?;
    Ok(out)
}

/// The PNG file back from its coded form or a member; `size` is the recorded size of the
/// file.
pub fn decode(coded: &[u8], size: u64) -> Result<Vec<u8>, PngzError> {
    let damaged = PngzError::Damaged;
    let (h, rest) = header(coded, size)?;
    let Header {
        settings,
        rows,
        row_bytes,
        bpp,
        prefix_len,
        suffix_len,
        idat_lens,
        channels,
        payload_len: total,
        ..
    } = h;
    let mut owned = Vec::new();
    let payload = if h.version == VERSION_MEMBER {
        rest
    } else {
        owned.reserve_exact(total as usize);
        unxz(rest, total, &mut owned, "pixel data of the wrong length")?;
        &owned[..]
    };
    if payload.len() as u64 != total {
        return Err(damaged("pixel data of the wrong length"));
    }
    let (prefix, rest) = payload.split_at(prefix_len as usize);
    let (suffix, rest) = rest.split_at(suffix_len as usize);
    let (kinds, pixels) = rest.split_at(rows);
    if kinds.iter().any(|&k| k > 4) {
        return Err(damaged("unknown row filter"));
    }
    let restored;
    let pixels = if channels == 0 {
        pixels
    } else {
        restored = restore_equal_channels(pixels, channels);
        &restored[..]
    };
    let filtered = refilter(kinds, pixels, row_bytes, bpp);
    let zlib = deflate_all(&filtered, settings)?;
    if idat_lens.iter().sum::<usize>() != zlib.len() {
        return Err(damaged("IDAT lengths do not add up"));
    }
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(prefix);
    let mut at = 0;
    for n in idat_lens {
        push_chunk(&mut out, b"IDAT", &zlib[at..at + n]);
        at += n;
    }
    out.extend_from_slice(suffix);
    if out.len() as u64 != size {
        return Err(PngzError::Size {
            got: out.len(),
            want: size,
        });
    }
    Ok(out)
}

/// Appends a PNG chunk: length, type, data, CRC of type and data.
fn push_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(&out[start..]);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A checked coded form (version 1, one xz stream: what format 6 archives hold).
    fn encode(file: &[u8]) -> Option<Vec<u8>> {
        let coded = measure(file)?;
        (decode(&coded, file.len() as u64).ok()? == file).then_some(coded)
    }

    /// An RGB user-interface image of `w` × `h` written as libpng and zlib (level 9) write
    /// one, with a flat "dialog" of grey `shade` at row `y`: for other modules' tests.
    pub(crate) fn zlib_png(w: usize, h: usize, y: usize, shade: u8) -> Vec<u8> {
        let mut px = interface(w, h, 3, false);
        for row in px.chunks_exact_mut(w * 3).skip(y).take(40) {
            row[..w.min(200) * 3].fill(shade);
        }
        png(w as u32, h as u32, 8, 2, &px, settings(9, 0), 8192)
    }

    use super::push_chunk as chunk;

    /// A PNG as libpng and zlib write one: rows filtered with a mix of filters, deflated
    /// with `s`, the stream cut into IDAT chunks of `idat` bytes, text before and after.
    fn png(
        w: u32,
        h: u32,
        depth: u8,
        colour: u8,
        pixels: &[u8],
        s: Settings,
        idat: usize,
    ) -> Vec<u8> {
        let channels = [1, 0, 3, 1, 2, 0, 4][colour as usize];
        let row_bytes = (w as usize * channels * depth as usize).div_ceil(8);
        let bpp = (channels * depth as usize).div_ceil(8).max(1);
        let kinds: Vec<u8> = (0..h as usize).map(|r| (r % 5) as u8).collect();
        let filtered = refilter(&kinds, pixels, row_bytes, bpp);
        let zlib = deflate_all(&filtered, s).unwrap();
        let mut out = SIGNATURE.to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        if colour == 3 {
            let palette: Vec<u8> = (0..16u8).flat_map(|i| [i * 16, 255 - i * 16, i]).collect();
            chunk(&mut out, b"PLTE", &palette);
        }
        chunk(
            &mut out,
            b"tEXt",
            b"Comment\0a window with the same button twice",
        );
        for piece in zlib.chunks(idat) {
            chunk(&mut out, b"IDAT", piece);
        }
        chunk(&mut out, b"tEXt", b"Software\0after the image data");
        chunk(&mut out, b"IEND", b"");
        out
    }

    /// A user interface's pixels: flat areas, and one "widget" repeated far apart.
    fn interface(w: usize, h: usize, channels: usize, grey: bool) -> Vec<u8> {
        let mut px = vec![0u8; w * h * channels];
        for y in 0..h {
            for x in 0..w {
                let widget = ((x % 97) * 7 + (y % 61) * 13) as u8;
                let v = if (x / 97 + y / 61) % 3 == 0 {
                    widget
                } else {
                    230
                };
                for c in 0..channels {
                    px[(y * w + x) * channels + c] = match (c, grey) {
                        (3, _) => 255 - (x % 2) as u8,
                        (_, true) => v,
                        (c, false) => v.wrapping_add(c as u8 * 40),
                    };
                }
            }
        }
        px
    }

    fn settings(level: u8, strategy: u8) -> Settings {
        Settings {
            level,
            strategy,
            mem_level: 8,
            window_bits: 15,
        }
    }

    /// ImageMagick's PNGs (zlib level 7, filtered, memory level 9; here a flat 16-bit
    /// screenshot, whose stream a wrong setting reads to the end before it differs) are found
    /// within the search budget.
    #[test]
    fn imagemagick_settings_are_found_on_flat_images() {
        let (w, h) = (1280, 800);
        let mut px = vec![0u8; w * h * 6];
        for (i, p) in px.chunks_exact_mut(6).enumerate() {
            let (x, y) = (i % w, i / w);
            let v: u16 = if y < 24 {
                0x3366
            } else if (x / 8 + y / 16) % 50 == 0 {
                0
            } else {
                0xeeee
            };
            for c in p.chunks_exact_mut(2) {
                c.copy_from_slice(&v.to_be_bytes());
            }
        }
        for level in [7, 9] {
            let s = Settings {
                level,
                strategy: 1,
                mem_level: 9,
                window_bits: 15,
            };
            let file = png(w as u32, h as u32, 16, 2, &px, s, 8192);
            let coded = encode(&file);
            assert!(coded.is_some(), "level {level}: not recoded");
            assert!(coded.unwrap().len() < file.len(), "level {level}");
        }
    }

    #[test]
    fn png_files_written_by_zlib_come_back_bit_exact_and_smaller() {
        let (w, h) = (400, 300);
        let cases = [
            ("rgb", 8, 2, interface(w, h, 3, false), settings(9, 1)),
            (
                "grey as rgb",
                8,
                2,
                interface(w, h, 3, true),
                settings(6, 0),
            ),
            (
                "grey as rgba",
                8,
                6,
                interface(w, h, 4, true),
                settings(9, 0),
            ),
            ("rgba", 8, 6, interface(w, h, 4, false), settings(1, 0)),
            ("grey", 8, 0, interface(w, h, 1, true), settings(3, 1)),
            (
                "grey 16-bit",
                16,
                0,
                interface(w * 2, h, 1, true),
                settings(9, 3),
            ),
            (
                "huffman only",
                8,
                0,
                interface(w, h, 1, true),
                settings(1, 2),
            ),
            (
                "4-bit palette",
                4,
                3,
                interface(w / 2, h, 1, true)
                    .iter()
                    .map(|v| v & 0xF7)
                    .collect(),
                settings(9, 0),
            ),
        ];
        for (name, depth, colour, pixels, s) in cases {
            let file = png(w as u32, h as u32, depth, colour, &pixels, s, 8192);
            let coded = encode(&file).unwrap_or_else(|| panic!("{name}: not recoded"));
            assert!(
                coded.len() * 2 < file.len(),
                "{name}: {} of {}",
                coded.len(),
                file.len()
            );
            assert_eq!(decode(&coded, file.len() as u64).unwrap(), file, "{name}");
            let transform = coded[5];
            assert_eq!(transform, u8::from(name.starts_with("grey as")), "{name}");
        }
    }

    /// A draft is as long as the recoded form, does not decode, and settles into it.
    #[test]
    fn a_settled_draft_is_the_recoded_form() {
        let file = zlib_png(200, 150, 30, 90);
        let d = draft(&file).unwrap();
        let m = measure(&file).unwrap();
        assert_eq!(d.len(), m.len());
        assert!(decode(&d, file.len() as u64).is_err());
        assert_eq!(settle(d.clone(), &file).unwrap(), m);
        // The member pack stores gives the file back; for another file it is refused.
        let kept = checked_member(&m, &file).unwrap();
        assert_eq!(decode(&kept, file.len() as u64).unwrap(), file);
        let other = zlib_png(200, 150, 60, 90);
        assert!(checked_member(&m, &other).is_none());
        // A settled form is not a draft.
        assert!(settle(m, &file).is_none());
    }

    #[test]
    fn files_it_cannot_give_back_exactly_are_not_recoded() {
        let (w, h) = (200, 100);
        let pixels = interface(w, h, 3, false);
        let good = png(w as u32, h as u32, 8, 2, &pixels, settings(9, 1), 4096);
        assert!(encode(&good).is_some());
        // Interlaced.
        let mut interlaced = good.clone();
        interlaced[8 + 8 + 12] = 1;
        assert!(encode(&interlaced).is_none());
        // A damaged IDAT CRC cannot be written back.
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        let idat_end = n - 12 - (12 + b"Software\0after the image data".len()) - 1;
        bad_crc[idat_end] ^= 1;
        assert!(encode(&bad_crc).is_none());
        // Cut short, not a PNG, empty.
        assert!(encode(&good[..good.len() / 2]).is_none());
        assert!(encode(b"GIF89a not a png").is_none());
        assert!(encode(b"").is_none());
    }

    #[test]
    fn damaged_recoded_data_is_an_error_not_a_panic() {
        let (w, h) = (120, 80);
        let file = png(
            w,
            h,
            8,
            2,
            &interface(120, 80, 3, true),
            settings(9, 0),
            1000,
        );
        let coded = encode(&file).unwrap();
        let size = file.len() as u64;
        for cut in (0..coded.len()).step_by(7) {
            assert!(decode(&coded[..cut], size).is_err(), "cut at {cut}");
        }
        for at in (0..coded.len()).step_by(3) {
            let mut bad = coded.clone();
            bad[at] ^= 0x5A;
            // A flipped bit either fails or (in a field that does not matter) gives the file.
            if let Ok(back) = decode(&bad, size) {
                assert_eq!(back.len() as u64, size);
            }
        }
        assert!(decode(&coded, size + 1).is_err());
    }

    /// Screens of one program differ a little; a group finds what they share.
    #[test]
    fn members_grouped_come_back_bit_exact_and_smaller_than_one_by_one() {
        let (w, h) = (300, 200);
        let base = interface(w, h, 3, false);
        let files: Vec<Vec<u8>> = (0..4)
            .map(|k| {
                let mut px = base.clone();
                // A different dialog on each screen.
                for y in 40 + k * 30..60 + k * 30 {
                    for x in 50..150 {
                        px[(y * w + x) * 3 + k % 3] = (60 * k) as u8;
                    }
                }
                png(w as u32, h as u32, 8, 2, &px, settings(9, 0), 8192)
            })
            .collect();
        let coded: Vec<Vec<u8>> = files.iter().map(|f| encode(f).unwrap()).collect();
        let mut group = Vec::new();
        let mut ranges = Vec::new();
        for (f, c) in files.iter().zip(&coded) {
            let m = member(c, f.len() as u64).unwrap();
            assert_eq!(m[4], VERSION_MEMBER);
            assert_eq!(decode(&m, f.len() as u64).unwrap(), *f);
            ranges.push(group.len()..group.len() + m.len());
            group.extend_from_slice(&m);
        }
        let xz = compress_group(&group).unwrap();
        let one_by_one: usize = coded.iter().map(Vec::len).sum();
        assert!(
            xz.len() * 3 < one_by_one * 2,
            "group {} vs one by one {one_by_one}",
            xz.len()
        );
        let back = decompress_group(&xz, group.len() as u64).unwrap();
        for (f, r) in files.iter().zip(ranges) {
            assert_eq!(decode(&back[r], f.len() as u64).unwrap(), *f);
        }
        // The recorded length is checked; damage is an error.
        assert!(decompress_group(&xz, group.len() as u64 - 1).is_err());
        assert!(decompress_group(&xz, group.len() as u64 + 1).is_err());
        assert!(decompress_group(&xz, MAX_GROUP_BYTES + 1).is_err());
        let mut bad = xz.clone();
        bad[xz.len() / 2] ^= 0x10;
        assert!(decompress_group(&bad, group.len() as u64).is_err());
        // A member is not a coded form, and a member cut short does not decode.
        let m = member(&coded[0], files[0].len() as u64).unwrap();
        assert!(member(&m, files[0].len() as u64).is_err());
        assert!(decode(&m[..m.len() - 1], files[0].len() as u64).is_err());
    }
}
