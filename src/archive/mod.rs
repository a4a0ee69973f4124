//! The on-disk format: the index that describes an album, the Matroska container that holds
//! it, and the reader that finds both again. See docs/FORMAT.md.

pub mod codec;
pub mod mkv;
pub mod reader;
pub mod writer;

use serde::{Deserialize, Serialize};

pub use codec::{decode_index, encode_index, IndexError};
pub use reader::{Archive, ReadError};
pub use writer::{ArchiveWriter, WriteError};

/// Name of the Matroska attachment that carries the index.
pub const INDEX_ATTACHMENT_NAME: &str = "av1pack-index.bin";
/// Name of the last attachment: a second copy of the index, used when the first is damaged.
pub const INDEX_COPY_ATTACHMENT_NAME: &str = "av1pack-index-copy.bin";
/// How many times the index is written (the index and its copy): every byte in it, metadata
/// blocks included, costs this many bytes of archive.
pub const INDEX_COPIES: u64 = 2;

/// Everything a reader needs to know about an album, without scanning the video.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Index {
    /// Version of av1pack that wrote the archive.
    pub tool_version: String,
    /// Identifies the renderer that produced `Rendered::size`; see `crate::render::RENDERER_ID`.
    pub renderer: String,
    pub settings: Settings,
    pub tracks: Vec<Track>,
    /// Entries in the deterministic order of the walk (parents before children).
    pub entries: Vec<Entry>,
    /// Hard links as decoded: (entry, entry it is another name of), from the on-disk
    /// `EntryKind::Link` entries. Not stored as such.
    #[serde(skip)]
    pub links: Vec<(usize, usize)>,
}

impl Index {
    /// The files kept as they are (entry number, entry, blob), in the order of their bytes in
    /// the archive: reading them so decodes each group of recoded PNGs once.
    pub fn kept_in_archive_order(&self) -> Vec<(usize, &Entry, &Blob)> {
        let mut kept: Vec<_> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.kind {
                EntryKind::Verbatim { blob, .. } => Some((i, e, blob)),
                _ => None,
            })
            .collect();
        kept.sort_by_key(|(_, _, blob)| blob.offset);
        kept
    }
}

/// Encoder settings the archive was packed with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Settings {
    pub codec: String,
    pub preset: String,
    pub crf: Option<f32>,
    pub qp: Option<u32>,
    pub gop: u32,
    /// Nominal frame rate told to the encoder (frames per second).
    pub frame_rate: u32,
    /// Pixel format of the coded planes, e.g. "yuvj444p".
    pub pix_fmt: String,
}

/// One video track: all its frames share one canvas size.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Track {
    /// Matroska track number (1-based).
    pub number: u32,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Codec private data (for H.264: the avcC record).
    pub extradata: Vec<u8>,
    /// Every packet in decode order. `pts` is the frame number inside the track.
    pub packets: Vec<Packet>,
}

/// One coded frame: where its bytes are in the archive file.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Absolute offset of the packet payload in the archive file.
    pub offset: u64,
    pub size: u32,
    /// Presentation order: the frame number inside the track.
    pub pts: u64,
    /// Decode order timestamp as the encoder gave it (may be negative with B-frames).
    pub dts: i64,
    pub keyframe: bool,
    /// xxh3-64 of the payload: a damaged frame is an error, never a wrong picture.
    pub hash: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// One file, directory or symlink of the album.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Entry {
    /// Relative path as raw bytes, '/'-separated: non-UTF-8 names survive.
    pub path: Vec<u8>,
    pub mtime: Timestamp,
    /// Unix permission bits (st_mode & 0o7777).
    pub mode: u32,
    pub kind: EntryKind,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum EntryKind {
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// Stored byte for byte in an attachment.
    Verbatim {
        blob: Blob,
        /// Why the file was not coded as video (shown by `ls` and `info`).
        reason: String,
    },
    Image(Box<ImageEntry>),
    /// A file with the same bytes as entry `of` (an earlier file entry): stored once. Only on
    /// disk: decoding the index gives the copy entry `of`'s kind (format version 5).
    Copy {
        of: u64,
    },
    /// Another name of entry `of`'s file (an earlier file entry): a hard link, stored once.
    /// Only on disk: decoding gives it entry `of`'s kind and records the pair in
    /// [`Index::links`] (format version 12).
    Link {
        of: u64,
    },
}

/// Bytes of the original file kept in the archive's attachment area.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Offset relative to the start of the blob area (the end of the index attachment).
    pub offset: u64,
    /// Bytes stored in the archive.
    pub len: u64,
    /// xxh3-64 of the stored bytes.
    pub hash: u64,
    /// How the file's bytes are stored.
    pub coding: BlobCoding,
}

/// How a kept file is stored.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobCoding {
    /// The file's bytes as they are.
    Stored,
    /// A JPEG file recompressed with Lepton (lossless, bit-exact); `size` and `hash` (xxh3-64)
    /// are the original file's.
    Lepton { size: u64, hash: u64 },
    /// Any other file compressed with zstd (format version 5); `size` and `hash` are the
    /// original file's.
    Zstd { size: u64, hash: u64 },
    /// A PNG file whose image data is re-coded (`crate::pngz`, format version 6): the pixels
    /// LZMA-compressed, deflated back bit-exact on reading; `size` and `hash` are the
    /// original file's.
    Png { size: u64, hash: u64 },
    /// A PNG file recoded as a member of a group (`crate::pngz`, format version 7): the blob
    /// is the group's xz stream, which its members share; `group_len` is the group's length
    /// decompressed, `at` and `len` where the member lies in it; `size` and `hash` are the
    /// original file's.
    PngGrouped {
        size: u64,
        hash: u64,
        at: u64,
        len: u64,
        group_len: u64,
    },
    /// A JPEG file recoded in its own DCT (`crate::jpegthin`, format version 10): some of its
    /// AC coefficients of magnitude 1 set to zero, the markers kept; what the archive gives
    /// back is that file, not the original, Lepton-compressed here like `Lepton`. `size` and
    /// `hash` are the recoded file's; `score_centi` is its SSIMULACRA2 against the original
    /// in hundredths, rounded down, measured at pack time; `original_size` the original
    /// file's size.
    JpegThinned {
        size: u64,
        hash: u64,
        score_centi: u32,
        original_size: u64,
    },
    /// A JPEG recoded in its own DCT like `JpegThinned` (format version 13), stored as its
    /// difference from an earlier recoded JPEG of the same layout (`crate::jpegthin::residual`):
    /// the blob is the Lepton form of that residual JPEG, `residual_size` bytes long;
    /// `reference` is the offset of the earlier file's blob (`JpegThinned` or
    /// `JpegThinnedDelta`, a lower offset: chains end). The other fields are `JpegThinned`'s.
    JpegThinnedDelta {
        size: u64,
        hash: u64,
        score_centi: u32,
        original_size: u64,
        reference: u64,
        residual_size: u64,
    },
}

/// Longest chain of recoded JPEGs each stored against the one before (`JpegThinnedDelta`)
/// that a reader follows: reading the last file decodes them all (pack makes shorter ones).
pub const MAX_DELTA_CHAIN: u32 = 64;

/// How `ls`, `info` and pack's report describe a JPEG recoded in its own DCT (followed by its
/// score). Its entry records no reason of its own: the coding says it all.
pub const THINNED: &str = "JPEG recoded smaller in its own DCT";

impl Blob {
    /// What a kept file's entry says of it: the `reason` it records, or for a JPEG recoded in
    /// its own DCT (which records none), that and its score.
    pub fn describe(&self, reason: &str) -> String {
        match self.thinned_score() {
            Some(score) => format!("{THINNED} (SSIMULACRA2 {score:.2})"),
            None => reason.to_string(),
        }
    }

    /// For a JPEG recoded in its own DCT, its SSIMULACRA2 against the original at pack time.
    pub fn thinned_score(&self) -> Option<f32> {
        match self.coding {
            BlobCoding::JpegThinned { score_centi, .. }
            | BlobCoding::JpegThinnedDelta { score_centi, .. } => Some(score_centi as f32 / 100.0),
            _ => None,
        }
    }

    /// Length of the file the blob gives back.
    pub fn file_size(&self) -> u64 {
        match self.coding {
            BlobCoding::Stored => self.len,
            BlobCoding::Lepton { size, .. }
            | BlobCoding::Zstd { size, .. }
            | BlobCoding::Png { size, .. }
            | BlobCoding::PngGrouped { size, .. }
            | BlobCoding::JpegThinned { size, .. }
            | BlobCoding::JpegThinnedDelta { size, .. } => size,
        }
    }

    /// xxh3-64 of the file the blob gives back.
    pub fn file_hash(&self) -> u64 {
        match self.coding {
            BlobCoding::Stored => self.hash,
            BlobCoding::Lepton { hash, .. }
            | BlobCoding::Zstd { hash, .. }
            | BlobCoding::Png { hash, .. }
            | BlobCoding::PngGrouped { hash, .. }
            | BlobCoding::JpegThinned { hash, .. }
            | BlobCoding::JpegThinnedDelta { hash, .. } => hash,
        }
    }

    /// Whether the file is a JPEG recoded in its own DCT (stored alone or against another).
    pub fn is_thinned(&self) -> bool {
        self.thinned_score().is_some()
    }

    /// Whether the file's bytes are in the archive as they are (readable at any offset).
    pub fn is_stored(&self) -> bool {
        self.coding == BlobCoding::Stored
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Gif,
    WebP,
    Bmp,
    Tiff,
    Other,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Gif => "gif",
            ImageFormat::WebP => "webp",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Tiff => "tiff",
            ImageFormat::Other => "other",
        }
    }
}

/// Colour model of the original pixels, which the renderer reproduces.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorModel {
    Rgb,
    Grey,
    /// Colour from a JPEG that held its chroma at half resolution both ways (4:2:0): the
    /// renderer makes its JPEGs the same way (format version 4).
    Rgb420,
    /// Colour from a PNG of 16 bits a sample: coded at 8 bits like any other, written back as
    /// a 16-bit PNG whose samples are the decoded ones × 257 (format version 14).
    Rgb16,
    /// Grey from a PNG of 16 bits a sample, written back the same way (format version 14).
    Grey16,
}

impl ColorModel {
    /// Grey originals (8 or 16 bits), written back as grey.
    pub fn is_grey(self) -> bool {
        matches!(self, ColorModel::Grey | ColorModel::Grey16)
    }

    /// Originals of 16 bits a sample, written back as 16-bit PNGs.
    pub fn is_16_bit(self) -> bool {
        matches!(self, ColorModel::Rgb16 | ColorModel::Grey16)
    }
}

/// An image coded as video.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ImageEntry {
    pub format: ImageFormat,
    pub color: ColorModel,
    pub width: u32,
    pub height: u32,
    /// Size and xxh3-64 of the original file.
    pub original_size: u64,
    pub original_hash: u64,
    /// Where the colour pixels are: one tile for now; huge images will use several.
    pub tiles: Vec<Tile>,
    /// Where a losslessly coded alpha plane is (empty: opaque).
    pub alpha: Vec<Tile>,
    /// Metadata blocks of the original (EXIF, ICC, XMP, text...), written back by the renderer.
    pub metadata: Vec<MetaBlock>,
    /// The file the renderer makes from the decoded frame, in the original format.
    pub rendered: Rendered,
    /// Quality of the decoded image against the original, if measured at pack time.
    pub score: Option<f32>,
}

/// A rectangle of an image stored in one frame of one track.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Index into `Index::tracks`.
    pub track: u32,
    /// Frame number inside the track (presentation order).
    pub frame: u64,
    /// The rectangle of the image this tile covers.
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// Stored turned 90° clockwise (portrait images on a landscape canvas).
    pub rotated: bool,
}

/// A metadata block copied from the original file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MetaBlock {
    /// A JPEG APPn or COM segment: marker byte and payload (without the length field).
    JpegSegment { marker: u8, data: Vec<u8> },
    /// A PNG ancillary chunk: type and data.
    PngChunk { kind: [u8; 4], data: Vec<u8> },
    /// Bytes after the end of the image data (after a JPEG's EOI marker), appended back.
    Trailer(Vec<u8>),
    /// A TIFF tag of the original that is not about how its pixels are stored (a resolution,
    /// an ICC profile, XMP, an Artist, EXIF and GPS fields...; format version 9): the
    /// directory it is in, the tag number, its TIFF field type (1 to 12), and its values'
    /// bytes, little-endian whatever the original's byte order (an IPTC block, which writers
    /// declare as LONGs although it is a byte stream, is held as its bytes with type 7,
    /// UNDEFINED). The pointers between directories are not blocks: the TIFF written back
    /// makes its own.
    TiffTag {
        dir: TiffDir,
        tag: u16,
        kind: u16,
        data: Vec<u8>,
    },
    /// A WebP metadata chunk (format version 9): `ICCP`, `EXIF` or `XMP ` and its data,
    /// written back into the extended (VP8X) WebP the renderer makes.
    WebpChunk { kind: [u8; 4], data: Vec<u8> },
}

/// The directory of a TIFF a carried tag belongs to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TiffDir {
    /// The image's own (first) directory.
    Image,
    /// The EXIF directory (tag 34665 of the image's).
    Exif,
    /// The GPS directory (tag 34853 of the image's).
    Gps,
    /// The interoperability directory (tag 40965 of the EXIF one).
    Interop,
}

impl TiffDir {
    /// The tag that points at this directory (from the image's or, for Interop, the EXIF
    /// one), or `None` for the image's own.
    pub fn pointer_tag(self) -> Option<u16> {
        match self {
            TiffDir::Image => None,
            TiffDir::Exif => Some(34665),
            TiffDir::Gps => Some(34853),
            TiffDir::Interop => Some(40965),
        }
    }
}

impl MetaBlock {
    /// Bytes of data the block holds.
    pub fn len(&self) -> usize {
        match self {
            MetaBlock::JpegSegment { data, .. }
            | MetaBlock::PngChunk { data, .. }
            | MetaBlock::TiffTag { data, .. }
            | MetaBlock::WebpChunk { data, .. } => data.len(),
            MetaBlock::Trailer(data) => data.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// TIFF tags that only say how the pixels are stored, which the TIFF written back states in
/// its own way, so no `MetaBlock::TiffTag` holds one: size, samples, compression, photometric
/// interpretation, fill order, strips, sample range, planar configuration, free space, fax
/// options, predictor, tiles, sample format, JPEG tables, Y'CbCr coding. ExtraSamples (338)
/// is carried: it says whether the alpha sample is premultiplied, which the decoded pixels do
/// not tell, and the renderer writes it where the TIFF it makes has alpha.
pub const TIFF_LAYOUT_TAGS: [u16; 28] = [
    256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 280, 281, 284, 288, 289, 292, 293, 317, 322,
    323, 324, 325, 339, 347, 529, 530, 531, 532,
];

/// ExtraSamples: what a TIFF's samples beyond its colour are (alpha, premultiplied or not).
pub const TIFF_EXTRA_SAMPLES: u16 = 338;

/// Bytes of one value of a TIFF field type a `MetaBlock::TiffTag` may have (1 to 12: no
/// directory pointers, no BigTIFF 64-bit integers), else `None`.
pub fn tiff_type_size(kind: u16) -> Option<usize> {
    match kind {
        1 | 2 | 6 | 7 => Some(1),
        3 | 8 => Some(2),
        4 | 9 | 11 => Some(4),
        5 | 10 | 12 => Some(8),
        _ => None,
    }
}

/// Tags that point at other directories, which a `MetaBlock::TiffTag` never holds: SubIFDs,
/// EXIF, GPS, interoperability.
pub const TIFF_POINTER_TAGS: [u16; 4] = [330, 34665, 34853, 40965];

/// Whether a `MetaBlock::TiffTag` can be written into a TIFF: not a pointer, nor in the
/// image's directory a tag about the pixel layout; a field type of 1 to 12, and whole values.
pub fn tiff_tag_writable(dir: TiffDir, tag: u16, kind: u16, len: usize) -> bool {
    let layout = dir == TiffDir::Image && TIFF_LAYOUT_TAGS.contains(&tag);
    let pointer = TIFF_POINTER_TAGS.contains(&tag);
    !layout && !pointer && tiff_type_size(kind).is_some_and(|n| len.is_multiple_of(n))
}

/// Bytes of data metadata blocks hold (an image entry's, or a file's before it becomes one).
pub fn metadata_bytes(blocks: &[MetaBlock]) -> u64 {
    blocks.iter().map(|m| m.len() as u64).sum()
}

/// A path on this machine as text for messages, escaped as [`printable_path`] does.
pub fn printable(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    printable_path(path.as_os_str().as_bytes())
}

/// A path's bytes as text for messages: see [`Entry::path_lossy`].
pub fn printable_path(path: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(path.len());
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Size and hash of the rendered file, so that the mount knows sizes without decoding.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub size: u64,
    pub hash: u64,
}

impl Entry {
    /// The path for messages and reports: UTF-8 as it is, with bytes that are not UTF-8
    /// written `\xNN` and control characters escaped (`\n`, `\u{1b}`), so that every name can
    /// be told apart and a message stays on one line.
    pub fn path_lossy(&self) -> String {
        printable_path(&self.path)
    }

    /// Size of the file as unpack and the mount give it back.
    pub fn served_size(&self) -> u64 {
        match &self.kind {
            // A decoded index holds no copies (they take their original's kind).
            EntryKind::Dir
            | EntryKind::Symlink { .. }
            | EntryKind::Copy { .. }
            | EntryKind::Link { .. } => 0,
            EntryKind::Verbatim { blob, .. } => blob.file_size(),
            EntryKind::Image(img) => img.rendered.size,
        }
    }

    /// Size of the original file.
    pub fn original_size(&self) -> u64 {
        match &self.kind {
            EntryKind::Dir
            | EntryKind::Symlink { .. }
            | EntryKind::Copy { .. }
            | EntryKind::Link { .. } => 0,
            EntryKind::Verbatim { blob, .. } => match blob.coding {
                BlobCoding::JpegThinned { original_size, .. }
                | BlobCoding::JpegThinnedDelta { original_size, .. } => original_size,
                _ => blob.file_size(),
            },
            EntryKind::Image(img) => img.original_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::printable_path;

    #[test]
    fn printable_paths_tell_every_name_apart_on_one_line() {
        assert_eq!(
            printable_path("trip/été 1.jpg".as_bytes()),
            "trip/été 1.jpg"
        );
        assert_eq!(printable_path(b"latin1_\xe9.txt"), "latin1_\\xe9.txt");
        assert_eq!(printable_path(b"latin1_\xc3.txt"), "latin1_\\xc3.txt");
        assert_eq!(printable_path(b"new\nline\t.png"), "new\\nline\\t.png");
        assert_eq!(printable_path(b"esc\x1b[31m"), "esc\\u{1b}[31m");
    }
}
