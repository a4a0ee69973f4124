//! Walking an album folder in a deterministic order and deciding how each file is kept.

use crate::archive::{ColorModel, ImageFormat, Timestamp};
use crate::meta;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{0}: not a directory")]
    NotDir(PathBuf),
    #[error("{0}: the folder is empty: nothing to pack")]
    Empty(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ScanError + '_ {
    move |error| ScanError::Io {
        path: path.to_owned(),
        error,
    }
}

#[derive(Debug, Clone)]
pub enum Found {
    Dir,
    Symlink(Vec<u8>),
    File {
        size: u64,
        /// (device, inode) of a file with other names (hard links), else `None`.
        inode: Option<(u64, u64)>,
    },
}

/// One item of the album, as found on disk.
#[derive(Debug, Clone)]
pub struct Item {
    /// Relative path bytes, '/'-separated.
    pub rel: Vec<u8>,
    pub abs: PathBuf,
    pub mtime: Timestamp,
    pub mode: u32,
    pub found: Found,
}

/// What is in an album folder.
#[derive(Debug, Default)]
pub struct Walk {
    /// Files, folders and symlinks: parents before children, siblings sorted by name bytes.
    pub items: Vec<Item>,
    /// What cannot be packed (named pipes, sockets, devices), each logged as it is found.
    pub skipped: Vec<PathBuf>,
}

/// An archive that may lie inside the album it is packed from or checked against: the walk
/// leaves it out (an archive packed with `--force` into its own album would otherwise hold its
/// previous version), and the unfinished files that packs writing it leave beside it.
#[derive(Debug, Default)]
pub struct Exclude {
    /// (device, inode) of the archive, when it exists.
    file: Option<(u64, u64)>,
    /// (device, inode) of the archive's folder and the start of the names of its partial
    /// files in it ([`crate::partial::pack_prefix`]).
    partials: Option<((u64, u64), std::ffi::OsString)>,
}

impl Exclude {
    /// Nothing left out.
    pub fn nothing() -> Exclude {
        Exclude::default()
    }

    /// The archive at `path` (if it exists), and the partial files a pack writing it makes
    /// beside it.
    pub fn archive(path: &Path) -> Exclude {
        let id = |m: fs::Metadata| (m.dev(), m.ino());
        let file = fs::metadata(path).ok().filter(|m| m.is_file()).map(id);
        let partials = fs::metadata(crate::partial::folder_of(path))
            .ok()
            .map(|m| (id(m), crate::partial::pack_prefix(path)));
        Exclude { file, partials }
    }

    /// Why the file `name` (in the folder `dir`) is left out, if it is.
    fn leaves_out(
        &self,
        dir: (u64, u64),
        name: &std::ffi::OsStr,
        meta: &fs::Metadata,
    ) -> Option<&str> {
        if !meta.is_file() {
            return None;
        }
        if self.file == Some((meta.dev(), meta.ino())) {
            return Some("the archive itself");
        }
        self.partials
            .as_ref()
            .filter(|(d, prefix)| *d == dir && crate::partial::is_partial(name, prefix))
            .map(|_| "an unfinished archive of the same name")
    }
}

/// Lists the album below `root`, without what `exclude` names.
pub fn walk(root: &Path, exclude: &Exclude) -> Result<Walk, ScanError> {
    let meta = fs::metadata(root).map_err(io_err(root))?;
    if !meta.is_dir() {
        return Err(ScanError::NotDir(root.to_owned()));
    }
    let mut found = Walk::default();
    walk_dir(root, (meta.dev(), meta.ino()), &[], exclude, &mut found)?;
    if found.items.is_empty() {
        return Err(ScanError::Empty(root.to_owned()));
    }
    Ok(found)
}

fn walk_dir(
    dir: &Path,
    dir_id: (u64, u64),
    prefix: &[u8],
    exclude: &Exclude,
    found: &mut Walk,
) -> Result<(), ScanError> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let abs = dir.join(&name);
        let meta = fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
        if let Some(why) = exclude.leaves_out(dir_id, &name, &meta) {
            log::info!("{}: left out: {why}", crate::archive::printable(&abs));
            continue;
        }
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let mtime = Timestamp {
            secs: meta.mtime(),
            nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        };
        let mode = meta.mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&abs).map_err(io_err(&abs))?;
            found.items.push(Item {
                rel,
                abs,
                mtime,
                mode,
                found: Found::Symlink(target.as_os_str().as_bytes().to_vec()),
            });
        } else if ft.is_dir() {
            found.items.push(Item {
                rel: rel.clone(),
                abs: abs.clone(),
                mtime,
                mode,
                found: Found::Dir,
            });
            walk_dir(&abs, (meta.dev(), meta.ino()), &rel, exclude, found)?;
        } else if ft.is_file() {
            found.items.push(Item {
                rel,
                abs,
                mtime,
                mode,
                found: Found::File {
                    size: meta.len(),
                    inode: (meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
                },
            });
        } else {
            log::warn!(
                "{}: skipped: not a regular file, folder or symlink",
                crate::archive::printable(&abs)
            );
            found.skipped.push(abs);
        }
    }
    Ok(())
}

/// For each item, the earlier item that is another name of the same file (a hard link to
/// it), if any: the first name found stands for the file.
pub fn hard_links(items: &[Item]) -> Vec<Option<usize>> {
    let mut first = std::collections::HashMap::new();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.found {
            Found::File {
                inode: Some(id), ..
            } => match first.entry(id) {
                std::collections::hash_map::Entry::Occupied(o) => Some(*o.get()),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                    None
                }
            },
            _ => None,
        })
        .collect()
}

/// How a file will be kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Image {
        format: ImageFormat,
        width: u32,
        height: u32,
        color: ColorModel,
        /// The original has an alpha channel (coded losslessly in an alpha track).
        alpha: bool,
    },
    Verbatim(String),
}

/// Largest side the video path takes (larger images are split into tiles; beyond this they
/// are kept verbatim).
pub const MAX_SIDE: u32 = 65_535;
/// Largest image (in pixels) the video path takes: decoding one holds it whole in memory
/// (3 bytes a pixel, 4 with alpha), so larger ones are kept verbatim. 134 MP.
pub const MAX_PIXELS: u64 = 1 << 27;

/// Why a file must be kept as it is although its decoder reads it: it holds more than the one
/// picture the decoder gives (an animated PNG or WebP, a TIFF of several pages, data after a
/// PNG's or a WebP's end), metadata the file written back would not carry (a TIFF's
/// sub-images and previews, a WebP's chunks beyond its metadata, a BMP's colour profile; PNG
/// chunks, JPEG segments, WebP ICC, EXIF and XMP chunks and other TIFF tags are carried), or
/// it is a lossy WebP (only lossless WebP can be written back), a PNG with a palette or of
/// fewer than 8 bits a pixel, or a BMP with a palette (written back each would be
/// full colour or 8-bit; TIFFs of 1 bit and CMYK TIFFs are found by their decoder, in
/// [`probe`]). Reads chunk and directory headers only, one function per format. A header too
/// short (`UnexpectedEof`, which [`probe`] takes as nothing to say) or malformed to tell says
/// nothing here: the decoder judges the file.
fn kept_for_its_content(path: &Path, format: ImageFormat) -> io::Result<Option<String>> {
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len();
    match format {
        ImageFormat::Png => png_kept_for(&mut f, len),
        ImageFormat::WebP => webp_kept_for(&mut f, len),
        ImageFormat::Tiff => tiff_kept_for(&mut f),
        ImageFormat::Bmp => bmp_kept_for(&mut f),
        _ => Ok(None),
    }
}

/// A PNG with a palette or of fewer than 8 bits a pixel (its IHDR), an animated PNG (acTL), or
/// bytes after its IEND.
fn png_kept_for(f: &mut fs::File, len: u64) -> io::Result<Option<String>> {
    let mut buf = [0u8; 8];
    // Signature, then chunks: length, type, data, CRC.
    let mut at = 8u64;
    while at + 8 <= len {
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut buf)?;
        let size = u64::from(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        match &buf[4..8] {
            b"IHDR" if size >= 13 => {
                // Width, height, bit depth, then the colour type: 3 is a palette.
                let mut ihdr = [0u8; 10];
                f.read_exact(&mut ihdr)?;
                if ihdr[9] == 3 {
                    return Ok(Some(PALETTE_PNG.into()));
                }
                if ihdr[8] < 8 {
                    return Ok(Some(FEW_BITS_PNG.into()));
                }
                at += 12 + size;
            }
            b"acTL" => return Ok(Some("animated PNG (APNG)".into())),
            b"IEND" => {
                let end = at + 12 + size;
                return Ok((end < len).then(|| format!("{} bytes after the PNG's end", len - end)));
            }
            _ => at += 12 + size,
        }
    }
    Ok(None)
}

/// An animated WebP (the VP8X flags), a lossy one (a "VP8 " chunk), one with a chunk a WebP
/// written back would not have (its ICC profile, EXIF and XMP are carried), or bytes after
/// its last chunk.
fn webp_kept_for(f: &mut fs::File, len: u64) -> io::Result<Option<String>> {
    let mut buf = [0u8; 8];
    // RIFF header, then chunks: a VP8X header (whose flags say whether the file is
    // animated), metadata, and the image: "VP8 " (lossy) or "VP8L" (lossless).
    let mut at = 12u64;
    while at + 8 <= len {
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut buf)?;
        let size = u64::from(u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]));
        let kind = [buf[0], buf[1], buf[2], buf[3]];
        match &kind {
            b"VP8X" => {
                let mut flags = [0u8; 1];
                f.read_exact(&mut flags)?;
                if flags[0] & 0x02 != 0 {
                    return Ok(Some("animated WebP".into()));
                }
            }
            // Rendered back it would be a lossless WebP, several times larger.
            b"VP8 " => return Ok(Some(LOSSY_WEBP.into())),
            // A lossy image's alpha comes before its "VP8 " chunk.
            b"VP8L" | b"ALPH" => {}
            k if meta::WEBP_META.contains(k) => {}
            _ => {
                return Ok(Some(format!(
                    "WebP with a chunk \"{}\" (written back it would not have it)",
                    String::from_utf8_lossy(&kind).escape_debug()
                )))
            }
        }
        at += 8 + size + size % 2;
    }
    Ok((at < len).then(|| format!("{} bytes after the WebP's end", len - at)))
}

/// A TIFF whose first directory a TIFF written back could not hold: another page, a preview
/// (a DNG's or a raw file's), sub-directories (EXIF, GPS); see [`meta::tiff_meta`]. Its other
/// tags (a resolution, an ICC profile, XMP...) are carried.
fn tiff_kept_for(f: &mut fs::File) -> io::Result<Option<String>> {
    Ok(match meta::tiff_meta(io::BufReader::new(f)) {
        meta::TiffMeta::Kept(why) => Some(why),
        meta::TiffMeta::Carried(_) => None,
    })
}

/// A BMP of 1 to 8 bits a pixel (a palette), or with a colour profile.
fn bmp_kept_for(f: &mut fs::File) -> io::Result<Option<String>> {
    let mut buf = [0u8; 16];
    // File header (14 bytes), then the DIB header: its size, and the bits a pixel at
    // byte 14 of it (byte 10 in the old 12-byte OS/2 header).
    f.read_exact(&mut buf[..16])?;
    let dib = u32::from_le_bytes([buf[14], buf[15], 0, 0]);
    let at = if dib == 12 { 24 } else { 28 };
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut buf[..2])?;
    let bits = u16::from_le_bytes([buf[0], buf[1]]);
    if (1..=8).contains(&bits) {
        return Ok(Some(PALETTE_BMP.into()));
    }
    // A version 5 header (124 bytes) says at its byte 56 whether a colour profile comes with
    // the file, embedded ('MBED') or as a file name ('LINK').
    if dib >= 124 {
        f.seek(SeekFrom::Start(14 + 56))?;
        f.read_exact(&mut buf[..4])?;
        let kind = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if kind == u32::from_be_bytes(*b"MBED") || kind == u32::from_be_bytes(*b"LINK") {
            return Ok(Some(
                "BMP with a colour profile (written back it would not have it)".into(),
            ));
        }
    }
    Ok(None)
}

/// Why a lossy WebP is kept as it is: only lossless WebPs can be written back, and they are
/// several times the size of the original (185 KB → 922 KB measured).
pub const LOSSY_WEBP: &str = "lossy WebP (written back it would be lossless, several times larger)";
/// Why a PNG with a palette is kept: coded, it would come back as full colour (RGB or RGBA),
/// often ten times the bytes (an 800×600 one: 14.6 KB, written back 385 KB). GIFs are kept
/// for the same reason.
pub const PALETTE_PNG: &str =
    "PNG with a palette (written back it would be full colour, several times larger)";
/// Why a TIFF of 1 bit a sample (a black-and-white scan; 2 and 4 bits its decoder refuses,
/// and such files are kept as unreadable) is kept: written back it
/// would have 8, uncompressed (a 17.5 KB scan of 1240×1754: 2.2 MB).
pub const FEW_BITS_TIFF: &str =
    "TIFF of 1, 2 or 4 bits a sample (written back it would have 8, many times larger)";
/// Why a CMYK TIFF (prepress, print) is kept: its decoder gives RGB without the file's colour
/// management, so written back it would be an RGB TIFF of other colours, and its black plane
/// would be gone.
pub const CMYK_TIFF: &str = "CMYK TIFF (written back it would be RGB, without its ink planes)";
/// Why a BMP of 1 to 8 bits a pixel (a palette) is kept: written back it would have 24.
pub const PALETTE_BMP: &str =
    "BMP with a palette (written back it would be 24-bit, several times larger)";
/// Why a grey PNG of 1, 2 or 4 bits a pixel (a black-and-white scan) is kept: written back it
/// would have 8.
pub const FEW_BITS_PNG: &str =
    "PNG of 1, 2 or 4 bits a pixel (written back it would have 8, several times larger)";

/// Image formats that cameras and phones write and the image decoders here do not read (so
/// that a kept file is named for what it is): by their first bytes.
fn undecoded_image(head: &[u8]) -> Option<&'static str> {
    // ISO base media files: a box size, "ftyp", the major brand.
    if head.get(4..8) == Some(b"ftyp") {
        return match head.get(8..12)? {
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1" => {
                Some("HEIF image (HEIC)")
            }
            b"crx " => Some("Canon raw image (CR3)"),
            _ => None,
        };
    }
    if head.starts_with(&[0xFF, 0x0A]) || head.starts_with(b"\0\0\0\x0CJXL \r\n\x87\n") {
        return Some("JPEG XL image");
    }
    if head.starts_with(b"FUJIFILMCCD-RAW") {
        return Some("Fujifilm raw image (RAF)");
    }
    None
}

/// Looks at a file's header (no pixel decoding) and decides whether it is coded as video.
pub fn probe(path: &Path) -> Result<Probe, ScanError> {
    use image::ImageDecoder;
    if fs::metadata(path).map_err(io_err(path))?.len() == 0 {
        return Ok(Probe::Verbatim("empty file".into()));
    }
    let reader = image::ImageReader::open(path)
        .map_err(io_err(path))?
        .with_guessed_format()
        .map_err(io_err(path))?;
    let Some(fmt) = reader.format() else {
        // The format guess left the reader at the file's start.
        let mut head = [0u8; 32];
        let n =
            crate::dedupe::read_full(&mut reader.into_inner(), &mut head).map_err(io_err(path))?;
        return Ok(Probe::Verbatim(match undecoded_image(&head[..n]) {
            Some(kind) => format!("{kind}, which av1pack does not decode"),
            None => "not an image".into(),
        }));
    };
    let format = match fmt {
        image::ImageFormat::Png => ImageFormat::Png,
        image::ImageFormat::Jpeg => ImageFormat::Jpeg,
        image::ImageFormat::WebP => ImageFormat::WebP,
        image::ImageFormat::Bmp => ImageFormat::Bmp,
        image::ImageFormat::Tiff => ImageFormat::Tiff,
        image::ImageFormat::Gif => {
            return Ok(Probe::Verbatim(
                "GIF (palette, transparency, animation): kept as is".into(),
            ))
        }
        other => {
            return Ok(Probe::Verbatim(format!(
                "{other:?} images are kept as they are"
            )))
        }
    };
    // One picture per file goes through the video path; more (pages, frames) or bytes the
    // decoder does not read would be lost there.
    let content = match kept_for_its_content(path, format) {
        // A header cut short says nothing here: the decoder judges the file.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => None,
        other => other.map_err(io_err(path))?,
    };
    if let Some(reason) = content {
        return Ok(Probe::Verbatim(reason));
    }
    let decoder = match reader.into_decoder() {
        Ok(d) => d,
        Err(e) => return Ok(Probe::Verbatim(format!("unreadable image header: {e}"))),
    };
    // The TIFF decoder widens 1-bit samples to 8 (2 and 4 bits it refuses, above), and turns
    // CMYK into RGB (CMYK JPEGs are found by their frame header, when pack reads them).
    match decoder.original_color_type() {
        image::ExtendedColorType::L1 => return Ok(Probe::Verbatim(FEW_BITS_TIFF.into())),
        image::ExtendedColorType::Cmyk8 | image::ExtendedColorType::Cmyk16 => {
            return Ok(Probe::Verbatim(CMYK_TIFF.into()))
        }
        _ => {}
    }
    let (width, height) = decoder.dimensions();
    let (color, alpha) = match decoder.color_type() {
        image::ColorType::Rgb8 => (ColorModel::Rgb, false),
        image::ColorType::L8 => (ColorModel::Grey, false),
        image::ColorType::Rgba8 => (ColorModel::Rgb, true),
        image::ColorType::La8 => (ColorModel::Grey, true),
        // 16-bit PNGs are coded at 8 bits and written back at 16 (screenshots and exports that
        // editors save at 16 bits); 16-bit TIFFs, which scanners make for editing, stay as
        // they are.
        image::ColorType::Rgb16 if format == ImageFormat::Png => (ColorModel::Rgb16, false),
        image::ColorType::L16 if format == ImageFormat::Png => (ColorModel::Grey16, false),
        image::ColorType::Rgba16 if format == ImageFormat::Png => (ColorModel::Rgb16, true),
        image::ColorType::La16 if format == ImageFormat::Png => (ColorModel::Grey16, true),
        other => {
            let bits = other.bits_per_pixel() / u16::from(other.channel_count().max(1));
            return Ok(Probe::Verbatim(format!(
                "{bits} bits a sample (coded frames would keep 8)"
            )));
        }
    };
    if width == 0 || height == 0 {
        return Ok(Probe::Verbatim("image has no pixels".into()));
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Ok(Probe::Verbatim(format!(
            "{width}x{height} is larger than the video path takes ({MAX_SIDE} px on a side, {} MP): kept as is",
            MAX_PIXELS / 1_000_000
        )));
    }
    Ok(Probe::Image {
        format,
        width,
        height,
        color,
        alpha,
    })
}
