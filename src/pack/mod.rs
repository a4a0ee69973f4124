//! Packing an album folder into an archive.
//!
//! Pipeline per track (all order-preserving, bounded channels):
//! loader thread (read, hash, decode, place on canvas) → this thread (encode, write packets)
//! → renderer thread (decode what was written, render the file unpack/mount will serve,
//! record its size and hash).
//!
//! `pack` here walks the album, plans the tracks (`plan`) and writes the archive; each track
//! runs through `track`, whose GOPs `gop` codes against a `budget` of keeping the files,
//! which `kept` stores in their smallest exact (or recoded) form; `load` decodes the
//! images.

use crate::album::{self, Found, Item, Probe, ScanError};
use crate::archive::codec::MAX_INDEX_BYTES;
use crate::archive::writer::TrackSpec;
use crate::archive::{
    self, ArchiveWriter, ColorModel, Entry, EntryKind, ImageEntry, ImageFormat, Index, Rendered,
    Settings, Tile, Track,
};
use crate::frames::{self, Assembly, Piece, Plane, Use};
use crate::media::{self, Codec, EncoderConfig, MediaError, VideoDecoder, VideoEncoder};
use crate::order::{self, Order};
use crate::partial;
use crate::pixels::{self, Picture};
use crate::render::{self, OutputFormat, RenderError};
use crate::{compress, dedupe, meta, quality};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use xxhash_rust::xxh3::xxh3_64;

mod budget;
mod gop;
mod kept;
mod load;
mod plan;
mod track;

use budget::*;
use gop::*;
use kept::*;
pub use load::decode_limits;
use load::*;
use plan::*;
use track::*;

/// Settings for `pack`.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Codec of the colour tracks (alpha tracks are always H.264, lossless).
    pub codec: Codec,
    pub preset: String,
    pub crf: Option<f32>,
    pub qp: Option<u32>,
    pub gop: u32,
    pub frame_rate: u32,
    pub threads: usize,
    /// Replace an existing archive at the destination.
    pub force: bool,
    /// Extra encoder options for the colour tracks, key=value:key=value (x264-params,
    /// x265-params or aom-params, by codec).
    pub extra_params: String,
    /// Quality every image must reach (checked at pack time); `None` codes once at `crf`/`qp`.
    pub target: Option<QualityTarget>,
    /// Pixel-exact: RGB planes coded as they are at QP 0; JPEG files are kept as they are.
    pub lossless: bool,
    /// How long each image is shown when the archive plays as a slideshow, in milliseconds
    /// (container timestamps only: the encoder still runs at `frame_rate`).
    pub slide_ms: u64,
    /// Frame order within a track: path order, or by visual similarity.
    pub order: Order,
    /// Bytes of metadata (EXIF, ICC, XMP, TIFF tags...) the coded images may bring into the
    /// index in all: an image whose metadata would go past it is kept as it is. The index is
    /// held in memory by the mount, and may not pass `MAX_INDEX_BYTES`.
    pub metadata_budget: u64,
    /// Keep JPEG files bit for bit (Lepton) even where recoding them in their own DCT
    /// (`crate::jpegthin`) would keep the quality target and be smaller.
    pub exact_jpegs: bool,
}

impl PackOptions {
    /// The score a kept JPEG recoded in its own DCT must reach, if JPEGs may be recoded.
    pub fn thin_target(&self) -> Option<f64> {
        if self.lossless || self.exact_jpegs {
            return None;
        }
        self.target.map(|t| t.min_score)
    }
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            codec: Codec::H264,
            preset: "medium".into(),
            crf: Some(DEFAULT_CRF),
            qp: None,
            gop: DEFAULT_GOP,
            frame_rate: DEFAULT_FRAME_RATE,
            threads: 2,
            force: false,
            extra_params: String::new(),
            target: Some(VISUALLY_LOSSLESS),
            lossless: false,
            slide_ms: DEFAULT_SLIDE_MS,
            order: Order::Auto,
            metadata_budget: MAX_INDEX_BYTES / 2,
            exact_jpegs: false,
        }
    }
}

/// Why PNGs of 16 bits a sample are not coded in lossless mode.
const LOSSLESS_KEEPS_16_BITS: &str =
    "lossless mode keeps images of 16 bits a sample as they are (coded frames hold 8)";

/// Why JPEG files are not coded in lossless mode.
pub const LOSSLESS_KEEPS_JPEG: &str =
    "lossless mode keeps JPEG files as they are (a re-encoded JPEG is never pixel-exact)";

/// Default CRF at the nominal frame rate below (chosen by measured SSIMULACRA2, see
/// docs/BENCHMARKS.md).
pub const DEFAULT_CRF: f32 = 8.0;
/// x264 options always set: the deblocking filter at its weakest, which keeps text and fine
/// edges sharp (docs/BENCHMARKS.md: +5 SSIMULACRA2 on document pages at equal size, no cost
/// on photos). `--encoder-params` can override it.
pub const BASE_X264_PARAMS: &str = "deblock=-3,-3";
/// x265 options always set (the same weakest deblocking as x264's).
pub const BASE_X265_PARAMS: &str = "deblock=-3,-3";
/// Keyframe interval: bounds the frames the mount decodes for one random read.
pub const DEFAULT_GOP: u32 = 8;
/// Nominal frame rate told to x264 (its CRF depends on it).
pub const DEFAULT_FRAME_RATE: u32 = 25;
/// Default time each image is shown when the archive plays as a slideshow.
pub const DEFAULT_SLIDE_MS: u64 = 3000;
/// Largest run of bytes after a JPEG image kept alongside it (more keeps the file verbatim).
const MAX_TRAILER: usize = 64 << 10;
/// Memory x264 may spend on look-ahead frames, in bytes of canvas.
const LOOKAHEAD_BUDGET: u64 = 160 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{0}: already exists (use --force to replace it)")]
    Exists(PathBuf),
    #[error("{path}: is {kind}; the archive must be a file name (for example album.mkv)")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{0}: the folder for the archive does not exist")]
    NoOutputDir(PathBuf),
    #[error("{path}: {error}")]
    Media { path: String, error: MediaError },
    #[error("{path}: could not render the decoded image: {error}")]
    Render { path: String, error: RenderError },
    #[error("writing the archive: {0}")]
    Write(#[from] archive::WriteError),
    #[error("internal pipeline failure: {0}")]
    Pipeline(String),
}

/// What happened to each file, for the report.
#[derive(Debug, Clone, Default)]
pub struct PackReport {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub images: usize,
    /// Files kept byte for byte, with the reason.
    pub verbatim: Vec<(String, String)>,
    /// JPEG files recoded in their own DCT (kept as files, not byte for byte).
    pub thinned: usize,
    pub original_bytes: u64,
    pub archive_bytes: u64,
    pub tracks: usize,
    /// Files with the same bytes as an earlier file of the album, stored once.
    pub copies: usize,
    /// Partial archives for the same destination left by packs that were killed, removed.
    pub removed_partials: Vec<PathBuf>,
    /// What is not packed: named pipes, sockets, devices.
    pub skipped: Vec<PathBuf>,
}

/// Progress callbacks (the CLI draws a bar with them).
pub trait Progress: Sync {
    fn start(&self, _files: u64, _bytes: u64) {}
    fn file_done(&self, _path: &str, _bytes: u64) {}
}

/// No progress reporting.
pub struct Quiet;
impl Progress for Quiet {}

/// A partial archive younger than this is never removed by another pack (it may have just been
/// created, before its writer locked it).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes partial archives named `PREFIX*.av1pack-partial` in `dir` that no process holds
/// (their pack was killed: SIGKILL, a crash, a power cut) and that are older than
/// [`STALE_AFTER`]; returns their paths. Packs that are still writing hold a lock on theirs.
fn remove_stale_partials(dir: &Path, prefix: &std::ffi::OsStr) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        if !partial::is_partial(&e.file_name(), prefix) {
            continue;
        }
        let path = e.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let old = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if old && partial::lock(&file) && std::fs::remove_file(&path).is_ok() {
            log::info!("{}: removed, left by an interrupted pack", path.display());
            removed.push(path);
        }
    }
    removed
}

/// Packs `src` into a new archive at `dest`.
pub fn pack(
    src: &Path,
    dest: &Path,
    opts: &PackOptions,
    progress: &dyn Progress,
) -> Result<PackReport, PackError> {
    media::init(false);
    let parent = partial::folder_of(dest).to_owned();
    if !parent.is_dir() {
        return Err(PackError::NoOutputDir(parent));
    }
    if let Ok(meta) = dest.symlink_metadata() {
        // Only a file (or a symlink, itself replaced) is ever replaced: never a folder, and
        // never a device (`--force … /dev/null` as root would replace the device node).
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        let other = if t.is_dir() {
            Some("a folder")
        } else if t.is_block_device() || t.is_char_device() {
            Some("a device")
        } else if t.is_fifo() {
            Some("a named pipe")
        } else if t.is_socket() {
            Some("a socket")
        } else {
            None
        };
        if let Some(kind) = other {
            return Err(PackError::NotAFile {
                path: dest.to_owned(),
                kind,
            });
        }
        if !opts.force {
            return Err(PackError::Exists(dest.to_owned()));
        }
    }
    let album::Walk { items, skipped } = album::walk(src, &album::Exclude::archive(dest))?;
    // A file with the same bytes as an earlier one is packed once: its entry takes the
    // earlier one's (frames or stored bytes), with its own name, time and mode.
    let copy_of = dedupe::copies(&items);
    // Another name of an earlier file (a hard link) is recorded as such, so that unpack makes
    // it a link again.
    let link_of = album::hard_links(&items);
    let mut probes: Vec<Option<Probe>> = Vec::with_capacity(items.len());
    let mut report = PackReport {
        skipped,
        ..PackReport::default()
    };
    let mut total_bytes = 0;
    for (item, copy) in items.iter().zip(&copy_of) {
        match item.found {
            Found::File { size, .. } => {
                report.files += 1;
                total_bytes += size;
                if copy.is_some() {
                    report.copies += 1;
                    probes.push(None);
                    continue;
                }
                let probe = match album::probe(&item.abs)? {
                    Probe::Image {
                        format: ImageFormat::Jpeg,
                        ..
                    } if opts.lossless => Probe::Verbatim(LOSSLESS_KEEPS_JPEG.into()),
                    Probe::Image { color, .. } if opts.lossless && color.is_16_bit() => {
                        Probe::Verbatim(LOSSLESS_KEEPS_16_BITS.into())
                    }
                    probe => probe,
                };
                probes.push(Some(probe));
            }
            Found::Dir => {
                report.dirs += 1;
                probes.push(None);
            }
            Found::Symlink(_) => {
                report.symlinks += 1;
                probes.push(None);
            }
        }
    }
    report.original_bytes = total_bytes;
    progress.start(report.files as u64, total_bytes);

    // Tracks by canvas size, in order of first appearance.
    let mut by_canvas: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    let mut plans: Vec<TrackPlan> = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        if let Some(Probe::Image {
            width,
            height,
            alpha,
            ..
        }) = p
        {
            // Huge images are split into tiles; all tiles of an image share one canvas.
            let grid = pixels::tile_grid(*width, *height);
            let mw = grid.iter().map(|r| r.2).max().unwrap_or(1);
            let mh = grid.iter().map(|r| r.3).max().unwrap_or(1);
            let (rotated, cw, ch) = pixels::plan(mw, mh);
            let t = *by_canvas.entry((cw, ch)).or_insert_with(|| {
                plans.push(TrackPlan {
                    width: cw,
                    height: ch,
                    items: Vec::new(),
                    alpha_frames: 0,
                    alpha_track: None,
                });
                plans.len() - 1
            });
            for tile in 0..grid.len() {
                plans[t].items.push(Job {
                    item: i,
                    tile,
                    tiles: grid.len(),
                    rotated,
                    cut: false,
                });
            }
            if *alpha {
                plans[t].alpha_frames += grid.len() as u64;
            }
        }
    }
    // Portrait images are turned to share a canvas with landscape ones; a track that holds
    // none (a folder of scanned pages, say) keeps them upright on a portrait canvas instead,
    // which spares turning every image on the way in and every read on the way out.
    for plan in &mut plans {
        if plan.items.iter().all(|j| j.rotated) {
            (plan.width, plan.height) = (plan.height, plan.width);
            for job in &mut plan.items {
                job.rotated = false;
            }
        }
    }
    if opts.order != Order::Path {
        order_tracks(&mut plans, &items, &probes, opts.order);
    }
    // Alpha tracks come after the colour tracks, one per colour track that needs one.
    let mut alpha_specs = Vec::new();
    let colour_tracks = plans.len();
    for plan in &mut plans {
        if plan.alpha_frames > 0 {
            plan.alpha_track = Some(colour_tracks + alpha_specs.len());
            alpha_specs.push((plan.width, plan.height, plan.alpha_frames));
        }
    }
    let canvases: Vec<(u32, u32, u64)> = plans
        .iter()
        .map(|p| (p.width, p.height, p.items.len() as u64))
        .chain(alpha_specs.iter().copied())
        .collect();
    report.tracks = canvases.len();

    let prefix = partial::pack_prefix(dest);
    report.removed_partials = remove_stale_partials(&parent, &prefix);
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(partial::SUFFIX)
        .tempfile_in(&parent)
        .map_err(|error| PackError::Io {
            path: parent.clone(),
            error,
        })?;
    let (tmp_file, tmp_path) = tmp.into_parts();
    let _partial = partial::Writing::register(tmp_path.to_path_buf());
    // Held while this process lives: a later pack sees the file is in use.
    if !partial::lock(&tmp_file) {
        log::debug!(
            "{}: not locked ({}): a later pack may take it for a killed one's once it is a minute old",
            tmp_path.display(),
            io::Error::last_os_error()
        );
    }
    let blobs = tempfile::tempfile_in(&parent).map_err(|error| PackError::Io {
        path: parent.clone(),
        error,
    })?;
    let specs = canvases
        .iter()
        .enumerate()
        .map(|(t, &(width, height, frames))| TrackSpec {
            width,
            height,
            codec_id: track_codec(t, colour_tracks, opts)
                .matroska_id()
                .to_string(),
            frames,
        })
        .collect();
    let title = src
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "album".into());
    let mut writer = ArchiveWriter::create(tmp_file, blobs, specs, opts.frame_rate, &title)?;
    writer.set_frame_duration_ms(opts.slide_ms);

    // Non-images first: streamed into the attachment area.
    let mut early_hint = None;
    let mut early_chain = Chain::default();
    let mut kinds: Vec<Option<EntryKind>> = vec![None; items.len()];
    for (i, item) in items.iter().enumerate() {
        if let Some(Probe::Verbatim(reason)) = &probes[i] {
            log::info!("{}: stored as is: {reason}", archive::printable(&item.abs));
            let thin = opts.thin_target().map(|target| Thin {
                target,
                hint: early_hint,
            });
            let form = verbatim_form(item, None, thin)?;
            let blob = write_verbatim(&mut writer, item, form, &mut early_hint, &mut early_chain)?;
            progress.file_done(&String::from_utf8_lossy(&item.rel), blob.file_size());
            kinds[i] = Some(EntryKind::Verbatim {
                blob,
                reason: kept_reason(&blob, reason),
            });
        }
    }

    let metadata = MetadataBudget::new(opts.metadata_budget);
    let album = AlbumFiles {
        items: &items,
        probes: &probes,
        metadata: &metadata,
    };
    for (t, plan) in plans.iter().enumerate() {
        let results = encode_track(t, plan, &album, opts, &mut writer, progress)?;
        for (i, outcome) in results {
            kinds[i] = Some(match outcome {
                Outcome::Image(img) => EntryKind::Image(img),
                Outcome::Stored(blob, reason) => EntryKind::Verbatim { blob, reason },
                // The judge stores every file it keeps (`Judge::step`).
                Outcome::Failed(_) | Outcome::Smaller(_) => {
                    return Err(PackError::Pipeline("a kept file was not stored".into()));
                }
            });
        }
    }
    for (i, copy) in copy_of.iter().enumerate() {
        let Some(o) = *copy else { continue };
        kinds[i] = kinds[o].clone();
        log::info!(
            "{}: the same bytes as {}: stored once",
            archive::printable(&items[i].abs),
            archive::printable(&items[o].abs)
        );
        if let Found::File { size, .. } = items[i].found {
            progress.file_done(&String::from_utf8_lossy(&items[i].rel), size);
        }
    }
    let tracks = canvases
        .iter()
        .enumerate()
        .map(|(t, &(width, height, _))| Track {
            number: t as u32 + 1,
            codec: track_codec(t, colour_tracks, opts)
                .matroska_id()
                .to_string(),
            width,
            height,
            extradata: Vec::new(),
            packets: Vec::new(),
        })
        .collect();

    let mut entries = Vec::with_capacity(items.len());
    // Metadata the copies repeat when the index is read, within what a reader accepts.
    let mut repeated = 0u64;
    for (i, item) in items.into_iter().enumerate() {
        let kind = match item.found {
            Found::Dir => EntryKind::Dir,
            Found::Symlink(target) => EntryKind::Symlink { target },
            Found::File { .. } => match kinds[i].take() {
                Some(k) => k,
                None => {
                    return Err(PackError::Pipeline(format!(
                        "{} was not packed",
                        archive::printable(&item.abs)
                    )))
                }
            },
        };
        match &kind {
            EntryKind::Image(_) => report.images += 1,
            EntryKind::Verbatim { blob, .. } if blob.thinned_score().is_some() => {
                report.thinned += 1
            }
            EntryKind::Verbatim { reason, .. } => report
                .verbatim
                .push((archive::printable_path(&item.rel), reason.clone())),
            _ => {}
        }
        let same = |of: usize| match link_of[i] {
            Some(first) => EntryKind::Link { of: first as u64 },
            None => EntryKind::Copy { of: of as u64 },
        };
        let kind = match (link_of[i].or(copy_of[i]), &kind) {
            (Some(of), EntryKind::Image(img))
                if repeated + archive::metadata_bytes(&img.metadata) <= MAX_INDEX_BYTES / 4 =>
            {
                repeated += archive::metadata_bytes(&img.metadata);
                same(of)
            }
            (Some(of), EntryKind::Verbatim { .. }) => same(of),
            _ => kind,
        };
        entries.push(Entry {
            path: item.rel,
            mtime: item.mtime,
            mode: item.mode,
            kind,
        });
    }
    let mut index = Index {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        renderer: render::RENDERER_ID.to_string(),
        settings: Settings {
            codec: opts.codec.encoder().to_string(),
            preset: opts.preset.clone(),
            crf: if opts.qp.is_some() { None } else { opts.crf },
            qp: opts.qp,
            gop: opts.gop,
            frame_rate: opts.frame_rate,
            pix_fmt: if opts.lossless {
                "gbrp"
            } else if opts.codec.takes_ten_bits() {
                "yuv444p10le (yuvj444p for tracks of JPEGs)"
            } else {
                "yuvj444p"
            }
            .into(),
        },
        tracks,
        entries,
        links: Vec::new(),
    };
    let file = writer.finish(&mut index)?;
    report.tracks = index.tracks.len();
    let io_dest = |error| PackError::Io {
        path: dest.to_owned(),
        error,
    };
    // Like any new file: readable as the umask allows (the temporary file was 0600).
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o666 & !umask()))
        .map_err(io_dest)?;
    file.sync_all().map_err(io_dest)?;
    report.archive_bytes = file.metadata().map_err(io_dest)?.len();
    drop(file);
    if opts.force {
        tmp_path.persist(dest).map_err(|e| io_dest(e.error))?;
    } else {
        tmp_path.persist_noclobber(dest).map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                PackError::Exists(dest.to_owned())
            } else {
                io_dest(e.error)
            }
        })?;
    }
    Ok(report)
}

/// The process umask, read without changing it (Linux: /proc/self/status), else 022.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Quality the pack loop must reach for every image (SSIMULACRA2 of the served file against
/// the original), or none to code once at the given CRF.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityTarget {
    pub min_score: f64,
    /// CRF values tried in turn for a GOP until every image in it reaches `min_score`, per
    /// codec (their CRF scales differ): H.264, HEVC, AV1 (libaom's 0..63).
    ladders: [&'static [f32]; 3],
}

impl QualityTarget {
    /// The CRF values tried in turn with `codec`, best compression first (hardware encoders
    /// use their format's ladder as constant QPs).
    pub fn ladder(&self, codec: Codec) -> &'static [f32] {
        match codec {
            Codec::H264 | Codec::H264Nvenc => self.ladders[0],
            Codec::Hevc | Codec::HevcNvenc => self.ladders[1],
            Codec::Av1 => self.ladders[2],
        }
    }
}

/// SSIMULACRA2 90: visually lossless (indistinguishable in a flicker test at 1:1).
pub const VISUALLY_LOSSLESS: QualityTarget = QualityTarget {
    min_score: 90.0,
    ladders: [
        &[8.0, 6.0, 4.0, 2.0, 1.0],
        &[12.0, 10.0, 8.0, 6.0, 4.0, 2.0],
        &[20.0, 16.0, 12.0, 8.0, 4.0, 2.0],
    ],
};
/// SSIMULACRA2 80: very high quality.
pub const HIGH: QualityTarget = QualityTarget {
    min_score: 80.0,
    ladders: [
        &[16.0, 13.0, 10.0, 7.0, 4.0],
        &[20.0, 17.0, 14.0, 11.0, 8.0],
        &[32.0, 27.0, 22.0, 17.0, 12.0],
    ],
};

/// Reason given for images kept as they are because no rate of the ladder reached the target.
pub const UNREACHABLE_TARGET: &str =
    "the quality target was not reached even at the highest quality: kept as is";

/// Reason given for images kept as they are because coding them costs more.
pub const SMALLER_AS_IS: &str = "the original is smaller than its coded frames";
