//! Packing an album folder into an archive.
//!
//! Pipeline per track (all order-preserving, bounded channels):
//! loader thread (read, hash, decode, place on canvas) → this thread (encode, write packets)
//! → renderer thread (decode what was written, render the file unpack/mount will serve,
//! record its size and hash).

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

struct TrackPlan {
    width: u32,
    height: u32,
    /// The tiles coded in this track, in order (most images are one tile).
    items: Vec<Job>,
    /// Alpha planes of this track's images go to a track of their own, coded losslessly.
    alpha_frames: u64,
    alpha_track: Option<usize>,
}

/// One tile of one image to code.
#[derive(Debug, Clone, Copy)]
struct Job {
    /// Index into the walked items.
    item: usize,
    tile: usize,
    tiles: usize,
    /// Stored turned 90° (portrait).
    rotated: bool,
    /// Start a new GOP at this tile (a scene change in the similarity order).
    cut: bool,
}

/// A partial archive younger than this is never removed by another pack (it may have just been
/// created, before its writer locked it).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes partial archives named `PREFIX*.av1pack-partial` in `dir` that no process holds
/// (their pack was killed: SIGKILL, a crash, a power cut) and that are older than
/// [`STALE_AFTER`]; returns their paths. Packs that are still writing hold a lock on theirs.
fn remove_stale_partials(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(prefix) && name.ends_with(partial::SUFFIX)) {
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
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
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
    let album::Walk { items, skipped } = album::walk(src, &album::Exclude::archive(dest, true))?;
    // A file with the same bytes as an earlier one is packed once: its entry takes the
    // earlier one's (frames or stored bytes), with its own name, time and mode.
    let copy_of = dedupe::copies(&items);
    let mut probes: Vec<Option<Probe>> = Vec::with_capacity(items.len());
    let mut report = PackReport {
        skipped,
        ..PackReport::default()
    };
    let mut total_bytes = 0;
    for (item, copy) in items.iter().zip(&copy_of) {
        match item.found {
            Found::File { size } => {
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

    let prefix = format!(
        ".{}.",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
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
    let mut kinds: Vec<Option<EntryKind>> = vec![None; items.len()];
    for (i, item) in items.iter().enumerate() {
        if let Some(Probe::Verbatim(reason)) = &probes[i] {
            log::info!("{}: stored as is: {reason}", archive::printable(&item.abs));
            let thin = opts.thin_target().map(|target| Thin {
                target,
                hint: early_hint,
            });
            let form = verbatim_form(item, None, thin)?;
            let blob = write_verbatim(&mut writer, item, form, &mut early_hint)?;
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
        if let Found::File { size } = items[i].found {
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
        let kind = match (copy_of[i], &kind) {
            (Some(of), EntryKind::Image(img))
                if repeated + archive::metadata_bytes(&img.metadata) <= MAX_INDEX_BYTES / 4 =>
            {
                repeated += archive::metadata_bytes(&img.metadata);
                EntryKind::Copy { of: of as u64 }
            }
            (Some(of), EntryKind::Verbatim { .. }) => EntryKind::Copy { of: of as u64 },
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

/// Track `t`'s codec: the chosen one for colour tracks, H.264 (lossless) for alpha tracks.
fn track_codec(t: usize, colour_tracks: usize, opts: &PackOptions) -> Codec {
    if t < colour_tracks {
        opts.codec
    } else {
        Codec::H264
    }
}

/// Puts each track's images in the order `mode` asks for (see [`crate::order`]): tiles of one
/// image stay together and in their order; the first tile of an image after a scene change
/// starts a GOP. Signatures need a decode of every image of the tracks with images to order,
/// on every core; an image that does not decode is not ordered (it goes last, and will be
/// kept as it is when the encoder's decode fails the same way).
fn order_tracks(plans: &mut [TrackPlan], items: &[Item], probes: &[Option<Probe>], mode: Order) {
    let units = |plan: &TrackPlan| plan.items.iter().filter(|j| j.tile == 0).count();
    let wanted: Vec<(usize, bool)> = plans
        .iter()
        .filter(|p| units(p) >= 3)
        .flat_map(|p| {
            p.items
                .iter()
                .filter(|j| j.tile == 0)
                .map(|j| (j.item, j.rotated))
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let big = |k: usize| {
        matches!(probes[wanted[k].0], Some(Probe::Image { width, height, .. })
            if u64::from(width) * u64::from(height) > pixels::MAX_TILE_PIXELS)
    };
    let decode = |k: usize| {
        let (i, rotated) = wanted[k];
        let Some(Probe::Image { format, .. }) = probes[i] else {
            return None;
        };
        let file = File::open(&items[i].abs).ok()?;
        let mut reader =
            image::ImageReader::with_format(io::BufReader::new(file), image_format(format)?);
        reader.limits(decode_limits());
        match reader.decode() {
            Ok(img) => Some((img, rotated)),
            Err(e) => {
                log::debug!("{}: no signature: {e}", archive::printable(&items[i].abs));
                None
            }
        }
    };
    let sigs = order::signatures(wanted.len(), big, decode);
    log::info!(
        "signatures of {} images in {:.2} s",
        wanted.len(),
        started.elapsed().as_secs_f64()
    );
    let by_item: BTreeMap<usize, &order::Signature> = wanted
        .iter()
        .zip(&sigs)
        .filter_map(|(&(i, _), s)| Some((i, s.as_ref()?)))
        .collect();
    for (t, plan) in plans.iter_mut().enumerate() {
        // Runs of tiles of one image.
        let mut runs: Vec<Vec<Job>> = Vec::new();
        for &job in &plan.items {
            match runs.last_mut() {
                Some(run) if job.tile != 0 => run.push(job),
                _ => runs.push(vec![job]),
            }
        }
        let run_sigs: Vec<Option<&order::Signature>> = runs
            .iter()
            .map(|r| r.first().and_then(|j| by_item.get(&j.item).copied()))
            .collect();
        let p = order::plan(&run_sigs, mode);
        if runs.len() >= 3 {
            log::info!(
                "track {} ({}x{}, {} images): path order length {}, greedy tour {}, after 2-opt {} ({:.2} of path): {} order, {} scene cuts",
                t + 1,
                plan.width,
                plan.height,
                runs.len(),
                p.path_length,
                p.greedy_length,
                p.tour_length,
                p.tour_length as f64 / p.path_length.max(1) as f64,
                if p.similar { "similarity" } else { "path" },
                p.cut.iter().filter(|&&c| c).count()
            );
        }
        if !p.similar {
            continue;
        }
        plan.items = p
            .order
            .iter()
            .enumerate()
            .flat_map(|(k, &r)| {
                let cut = p.cut.get(k).copied().unwrap_or(false);
                runs[r].iter().map(move |&j| Job {
                    cut: cut && j.tile == 0,
                    ..j
                })
            })
            .collect();
    }
}

/// The image crate's decoder for a format the video path takes.
fn image_format(format: ImageFormat) -> Option<image::ImageFormat> {
    Some(match format {
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::WebP => image::ImageFormat::WebP,
        ImageFormat::Bmp => image::ImageFormat::Bmp,
        ImageFormat::Tiff => image::ImageFormat::Tiff,
        _ => return None,
    })
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

/// A JPEG's Lepton or recoded form or a PNG's `pngz` form, made to measure it, with the
/// xxh3-64 of the file it was made from.
#[derive(Clone)]
enum Recoded {
    /// A JPEG's Lepton form; `searched`: recoding it in its own DCT was tried and gave
    /// nothing smaller (not tried again when the file is stored).
    Lepton {
        coded: Vec<u8>,
        searched: bool,
    },
    /// A JPEG recoded in its own DCT ([`VerbatimForm::Thinned`]), smaller than its Lepton form.
    Thinned(Box<VerbatimForm>, u64),
    Png(Vec<u8>, u64),
    /// A `pngz::draft` (the zlib settings not searched for yet).
    PngDraft(Vec<u8>, u64),
}

impl Recoded {
    fn len(&self) -> usize {
        match self {
            Recoded::Lepton { coded: b, .. } | Recoded::Png(b, _) | Recoded::PngDraft(b, _) => {
                b.len()
            }
            Recoded::Thinned(form, _) => match form.as_ref() {
                VerbatimForm::Thinned { coded, .. } => coded.len(),
                _ => usize::MAX,
            },
        }
    }
}

/// How kept JPEGs are recoded in their own DCT: the score to reach, and the share of
/// coefficients a JPEG stored before took (a first guess: similar images take similar shares;
/// taken from the files stored in order, never from files recoded side by side, so that the
/// archive does not depend on which finishes first).
#[derive(Clone, Copy)]
struct Thin {
    target: f64,
    hint: Option<f64>,
}

/// The reason a kept file's entry records: why it was not coded as video; none for a JPEG
/// recoded in its own DCT, whose coding says what it is (`Blob::describe`), so that the
/// index, held by the mount and written twice, does not repeat it for every such file.
fn kept_reason(blob: &archive::Blob, reason: &str) -> String {
    match blob.coding {
        archive::BlobCoding::JpegThinned { .. } => String::new(),
        _ => reason.to_string(),
    }
}

/// How a kept file goes into the archive (worked out apart from writing, so that the Lepton
/// work of several files can run in parallel).
#[derive(Clone)]
enum VerbatimForm {
    /// A checked Lepton (JPEG), `pngz` (PNG) or zstd form, and how it is coded (with the
    /// original's size and hash).
    Coded {
        coded: Vec<u8>,
        coding: archive::BlobCoding,
    },
    /// A JPEG recoded in its own DCT, Lepton-compressed and checked, and the share of its
    /// coefficients thinned.
    Thinned {
        coded: Vec<u8>,
        coding: archive::BlobCoding,
        share: f64,
    },
    /// A PNG's checked recoded form as a member of a group (`pngz::member`), with the
    /// file's size and hash.
    PngMember {
        member: Vec<u8>,
        size: u64,
        hash: u64,
    },
    /// The file's bytes, read already.
    Bytes(Vec<u8>),
    /// Streamed from the file as it is written.
    File,
}

fn io_error(item: &Item) -> impl Fn(io::Error) -> PackError + '_ {
    |error| PackError::Io {
        path: item.abs.clone(),
        error,
    }
}

/// Reads a kept file and, for a JPEG, makes (or checks) its Lepton form, for a PNG its
/// `pngz` form; any other file (or a PNG that does not recode) is zstd-compressed when its
/// start promises that it pays. `thin`: the score a JPEG recoded in its own DCT must reach
/// (`None`: JPEGs are kept exactly); the recoded file is taken where its Lepton form is
/// smaller than the original's.
fn verbatim_form(
    item: &Item,
    mut recoded: Option<Recoded>,
    thin: Option<Thin>,
) -> Result<VerbatimForm, PackError> {
    let io_err = io_error(item);
    let mut f = File::open(&item.abs).map_err(&io_err)?;
    let len = f.metadata().map_err(&io_err)?.len();
    let mut head = Vec::with_capacity(compress::PROBE);
    (&mut f)
        .take(compress::PROBE as u64)
        .read_to_end(&mut head)
        .map_err(&io_err)?;
    let jpeg = len <= crate::lepton::MAX_SIZE as u64 && head.starts_with(&[0xFF, 0xD8, 0xFF]);
    let png = len <= crate::pngz::MAX_SIZE as u64 && crate::pngz::is_png(&head);
    let squeeze = !jpeg && len <= compress::MAX_SIZE as u64 && compress::promising(&head);
    if !jpeg && !png && !squeeze {
        return Ok(VerbatimForm::File);
    }
    let mut data = Vec::with_capacity(len as usize);
    f.seek(SeekFrom::Start(0)).map_err(&io_err)?;
    f.read_to_end(&mut data).map_err(&io_err)?;
    if data.len() as u64 != len {
        return Err(io_err(std::io::Error::other(
            "the file changed while it was read",
        )));
    }
    let hash = xxh3_64(&data);
    if png {
        let coded = match recoded.take() {
            Some(Recoded::Png(coded, made_from)) if made_from == hash => Some(coded),
            Some(Recoded::PngDraft(draft, made_from)) if made_from == hash => {
                crate::pngz::settle(draft, &data)
            }
            _ => crate::pngz::measure(&data),
        };
        // Stored as a member of a group with other PNGs, checked in that form.
        if let Some(member) = coded.and_then(|c| crate::pngz::checked_member(&c, &data)) {
            return Ok(VerbatimForm::PngMember {
                member,
                size: len,
                hash,
            });
        }
        if !squeeze {
            return Ok(VerbatimForm::Bytes(data));
        }
    }
    if squeeze {
        return Ok(match compress::compress(&data) {
            Some(coded) => VerbatimForm::Coded {
                coded,
                coding: archive::BlobCoding::Zstd { size: len, hash },
            },
            None => VerbatimForm::Bytes(data),
        });
    }
    // The Lepton form measures what keeping the file exactly takes; it is checked (decoded
    // and compared) only if the file is kept exactly. A form recoded in its own DCT that a
    // GOP's budget measured is taken as it is (it was checked when made).
    let (exact, searched) = match recoded {
        Some(Recoded::Thinned(form, made_from)) if made_from == hash => return Ok(*form),
        Some(Recoded::Lepton { coded, searched }) => (Some(coded), searched),
        _ => (crate::lepton::encode(&data), false),
    };
    let kept = exact
        .as_ref()
        .map_or(data.len(), |c| c.len().min(data.len()));
    if let Some(form) = thin
        .filter(|_| !searched)
        .and_then(|thin| thinned_form(item, &data, thin, kept))
    {
        return Ok(form);
    }
    Ok(
        match exact.and_then(|coded| crate::lepton::checked(coded, &data)) {
            Some(coded) => VerbatimForm::Coded {
                coded,
                coding: archive::BlobCoding::Lepton { size: len, hash },
            },
            None => VerbatimForm::Bytes(data),
        },
    )
}

/// What keeping a JPEG takes, as a GOP's budget measures it: its Lepton form, or, with
/// `thin`, its form recoded in its own DCT where that is smaller (the same search as when the
/// file is stored, which then takes this form).
fn jpeg_kept_form(item: &Item, bytes: &[u8], hash: u64, thin: Option<Thin>) -> Option<Recoded> {
    let lepton = crate::lepton::encode(bytes);
    let Some(thin) = thin else {
        return lepton.map(|coded| Recoded::Lepton {
            coded,
            searched: false,
        });
    };
    let kept = lepton
        .as_ref()
        .map_or(bytes.len(), |c| c.len().min(bytes.len()));
    match thinned_form(item, bytes, thin, kept) {
        Some(form) => Some(Recoded::Thinned(Box::new(form), hash)),
        None => lepton.map(|coded| Recoded::Lepton {
            coded,
            searched: true,
        }),
    }
}

/// A JPEG recoded in its own DCT to the quality `target` and Lepton-compressed, if that is
/// smaller than `kept` bytes (what keeping it exactly takes). Files with data after the image,
/// or that libjpeg-turbo does not take whole, are kept exactly (logged).
fn thinned_form(item: &Item, data: &[u8], thin: Thin, kept: usize) -> Option<VerbatimForm> {
    let name = archive::printable(&item.abs);
    let thinned = match crate::jpegthin::search(data, thin.target, thin.hint) {
        Ok(Some(t)) => t,
        Ok(None) => return None,
        Err(e) => {
            log::info!("{name}: kept exactly, not recoded: {e}");
            return None;
        }
    };
    let coded = crate::lepton::compress(&thinned.bytes)?;
    if coded.len() >= kept {
        return None;
    }
    log::info!(
        "{name}: recoded in its own DCT, {} -> {} bytes stored (SSIMULACRA2 {:.2})",
        kept,
        coded.len(),
        thinned.ssimulacra2
    );
    Some(VerbatimForm::Thinned {
        coded,
        share: thinned.share,
        coding: archive::BlobCoding::JpegThinned {
            size: thinned.bytes.len() as u64,
            hash: xxh3_64(&thinned.bytes),
            score_centi: (thinned.ssimulacra2 * 100.0).floor().clamp(0.0, 10_000.0) as u32,
            original_size: data.len() as u64,
        },
    })
}

/// Writes a kept file in the form made for it; for a JPEG recoded in its own DCT, `hint`
/// becomes the share it took (the next search's first guess, in storing order).
fn write_verbatim(
    writer: &mut ArchiveWriter,
    item: &Item,
    form: VerbatimForm,
    hint: &mut Option<f64>,
) -> Result<archive::Blob, PackError> {
    let name = String::from_utf8_lossy(&item.rel).into_owned();
    if let VerbatimForm::Thinned { share, .. } = form {
        *hint = Some(share);
    }
    match form {
        VerbatimForm::Coded { coded, coding } | VerbatimForm::Thinned { coded, coding, .. } => {
            let mut blob = writer.add_blob(&name, &mut coded.as_slice(), coded.len() as u64)?;
            blob.coding = coding;
            Ok(blob)
        }
        VerbatimForm::PngMember { member, size, hash } => {
            Ok(writer.add_png_member(&member, size, hash)?)
        }
        VerbatimForm::Bytes(data) => {
            Ok(writer.add_blob(&name, &mut data.as_slice(), data.len() as u64)?)
        }
        VerbatimForm::File => {
            // Streamed: an error reading the file is the file's, any other the archive's (a
            // full disk must not be blamed on an album file).
            let io_err = io_error(item);
            let f = File::open(&item.abs).map_err(&io_err)?;
            let len = f.metadata().map_err(&io_err)?.len();
            let mut source = SourceFile {
                file: f,
                failed: false,
            };
            match writer.add_blob(&name, &mut source, len) {
                Ok(blob) => Ok(blob),
                Err(archive::WriteError::Io(error)) if source.failed => Err(io_err(error)),
                Err(e) => Err(PackError::Write(e)),
            }
        }
    }
}

/// A kept file read into the archive, remembering whether reading it failed.
struct SourceFile {
    file: File,
    failed: bool,
}

impl io::Read for SourceFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf);
        self.failed |= n.is_err();
        n
    }
}

enum Outcome {
    Image(Box<ImageEntry>),
    /// Could not be coded (the reason is reported).
    Failed(String),
    /// Coded fine, but the original file is smaller: kept as it is.
    Smaller(String),
    /// Kept as it is (for either reason above), and already stored.
    Stored(archive::Blob, String),
}

/// An image read and decoded, ready to be cut into tiles and placed on canvases.
struct Decoded {
    entry: ImageEntry,
    rgb: image::RgbImage,
    alpha: Option<image::GrayImage>,
    /// The file's size: what keeping it as it is costs at most (a JPEG may take less, in its
    /// Lepton form: see `Budget`).
    file_size: u64,
}

/// A tile read and placed on its canvas (or why it could not be).
struct Loaded {
    job: Job,
    result: Result<Ready, String>,
    /// Tiles of the track after this one.
    left: usize,
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

/// Frames held per GOP while its quality is checked: bounded in memory for large canvases.
const GOP_MEMORY: u64 = 64 << 20;
/// Canvases up to this size (bytes of RGB) code GOP k+1 while GOP k is judged; larger ones
/// take turns, to bound memory (one GOP in flight instead of two).
const OVERLAP_FRAME_BYTES: u64 = 16 << 20;

/// One tile ready to code: its image's entry so far, its canvas and its alpha canvas (the
/// alpha plane as grey RGB) when the image has one.
struct Ready {
    job: Job,
    /// Where this tile is in its image (a copy of `entry.tiles[job.tile]`).
    tile: Tile,
    entry: Box<ImageEntry>,
    canvas: Vec<u8>,
    alpha: Option<Vec<u8>>,
    /// The whole file's size (see `Decoded::file_size`).
    file_size: u64,
}

/// What coding did with one tile; `pixels` (decoded) are kept for images in several tiles,
/// which are rendered whole once all their tiles are in.
struct TileDone {
    job: Job,
    outcome: Outcome,
    pixels: Option<Picture>,
}

/// Tiles of an image coded so far.
struct Pending {
    entry: Option<Box<ImageEntry>>,
    /// The decoded tiles put together (the same assembly unpack and the mount use).
    asm: Option<Assembly>,
    /// The whole picture, once the assembly has every tile.
    pic: Option<Picture>,
    left: usize,
    failure: Option<Outcome>,
}

/// Collects the tiles of images coded in several, and renders each image whole once its last
/// tile is in (to record the served file's size); single-tile images pass straight through.
#[derive(Default)]
struct Assembler {
    pending: BTreeMap<usize, Pending>,
    out: Vec<(usize, Outcome)>,
}

impl Assembler {
    fn take(&mut self, done: TileDone) -> Result<(), PackError> {
        let job = done.job;
        if job.tiles <= 1 {
            self.out.push((job.item, done.outcome));
            return Ok(());
        }
        let p = self.pending.entry(job.item).or_insert_with(|| Pending {
            entry: None,
            asm: None,
            pic: None,
            left: job.tiles,
            failure: None,
        });
        p.left = p.left.saturating_sub(1);
        match done.outcome {
            Outcome::Image(e) if p.failure.is_none() => {
                let k = job.tile;
                let Some(px) = done.pixels else {
                    return Err(PackError::Pipeline(
                        "a tile came back without pixels".into(),
                    ));
                };
                if p.asm.is_none() {
                    let asm = Assembly::new(&e)
                        .map_err(|err| PackError::Pipeline(format!("tiled image: {err}")))?;
                    p.asm = Some(asm);
                }
                let entry: &ImageEntry = match &mut p.entry {
                    None => p.entry.insert(e),
                    Some(pe) => {
                        if let (Some(a), Some(b)) = (pe.tiles.get_mut(k), e.tiles.get(k)) {
                            *a = *b;
                        }
                        if let (Some(a), Some(b)) = (pe.alpha.get_mut(k), e.alpha.get(k)) {
                            *a = *b;
                        }
                        pe.score = match (pe.score, e.score) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        pe
                    }
                };
                let pieces = [
                    (Plane::Color, Some(Piece::Color(px.rgb))),
                    (Plane::Alpha, px.alpha.map(Piece::Alpha)),
                ];
                if let Some(asm) = p.asm.as_mut() {
                    for (plane, piece) in pieces {
                        let Some(piece) = piece else { continue };
                        let u = Use {
                            entry: job.item,
                            plane,
                            tile: k,
                        };
                        if let Some(pic) = asm.add(entry, u, &piece) {
                            p.pic = Some(pic);
                        }
                    }
                }
            }
            Outcome::Image(_) => {}
            failure => {
                if p.failure.is_none() {
                    p.failure = Some(failure);
                    p.asm = None;
                    p.entry = None;
                }
            }
        }
        if p.left > 0 {
            return Ok(());
        }
        let Some(p) = self.pending.remove(&job.item) else {
            return Ok(());
        };
        let outcome = match (p.failure, p.entry, p.pic) {
            (Some(f), _, _) => f,
            (None, Some(mut entry), Some(pic)) => {
                let file = render::render(
                    &entry,
                    &pic,
                    OutputFormat::Original,
                    render::Renderer::CURRENT,
                )
                .map_err(|error| PackError::Render {
                    path: format!("image {} (tiled)", job.item),
                    error,
                })?;
                entry.rendered = Rendered {
                    size: file.len() as u64,
                    hash: xxh3_64(&file),
                };
                Outcome::Image(entry)
            }
            _ => Outcome::Failed("a tile of the image was lost".into()),
        };
        self.out.push((job.item, outcome));
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn encode_track(
    t: usize,
    plan: &TrackPlan,
    album: &AlbumFiles,
    opts: &PackOptions,
    writer: &mut ArchiveWriter,
    progress: &dyn Progress,
) -> Result<Vec<(usize, Outcome)>, PackError> {
    let (items, probes, metadata) = (album.items, album.probes, album.metadata);
    let frame_bytes = u64::from(plan.width) * u64::from(plan.height) * 3;
    let gop = (GOP_MEMORY / frame_bytes.max(1)).clamp(1, u64::from(opts.gop.max(1))) as u32;
    let track_name = format!("track {} ({}x{})", t + 1, plan.width, plan.height);
    let jobs: Vec<(Job, Item, Probe)> = plan
        .items
        .iter()
        .filter_map(|&job| Some((job, items[job.item].clone(), probes[job.item].clone()?)))
        .collect();
    let (cw, ch) = (plan.width, plan.height);
    let alpha_t = plan.alpha_track;
    let deep = deep_track(opts, &jobs);
    // Small canvases overlap coding with judging; large ones (memory) go one step at a time.
    let overlap = frame_bytes <= OVERLAP_FRAME_BYTES;
    let (sessions, threads) = session_threads(opts.threads, encoder_frame_bytes(cw, ch, deep));
    let new_coder = |alpha| GopCoder {
        t,
        cw,
        ch,
        gop,
        opts,
        track_name: &track_name,
        extradata: None,
        next_frame: 0,
        alpha,
        items,
        kept_sizes: HashMap::new(),
        draft_sizes: HashMap::new(),
        kept_forms: HashMap::new(),
        thin_hint: None,
        threads,
        deep,
    };
    let coder = new_coder(alpha_t.map(|t| AlphaTrack {
        t,
        extradata: None,
        next_frame: 0,
    }));
    // Only reads settings: codes the next GOPs while `coder` judges and writes GOP k.
    let ahead_coder = new_coder(None);

    thread::scope(|s| -> Result<Vec<(usize, Outcome)>, PackError> {
        // Tiles loaded ahead of the encoder: two small ones, none for large canvases.
        let ahead = if frame_bytes > (16 << 20) { 0 } else { 2 };
        let (load_tx, load_rx) = mpsc::sync_channel::<Loaded>(ahead);
        let loader = s.spawn(move || {
            // The image being cut into tiles (its tiles come one after another).
            let mut current: Option<(usize, Result<Decoded, String>)> = None;
            let n = jobs.len();
            for (k, (job, item, probe)) in jobs.into_iter().enumerate() {
                if current.as_ref().map(|c| c.0) != Some(job.item) {
                    drop(current.take()); // free the last image before decoding the next
                    current = Some((job.item, load(&item, &probe, metadata)));
                }
                let result = match current.as_ref().map(|c| &c.1) {
                    Some(Ok(d)) => Ok(prepare(d, job, t, alpha_t, cw, ch)),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err("not loaded".into()),
                };
                let left = n - k - 1;
                if load_tx.send(Loaded { job, result, left }).is_err() {
                    break;
                }
            }
        });
        // Judging and writing, in GOP order: on a thread of its own when coding overlaps.
        let mut judge = Judge {
            coder,
            writer,
            assembler: Assembler::default(),
        };
        let (mut here, mut there) = (None, None);
        if overlap {
            let (tx, rx) = mpsc::sync_channel::<Step>(0);
            let handle = s.spawn(move || -> Result<Assembler, PackError> {
                for step in rx {
                    judge.step(step)?;
                }
                Ok(judge.assembler)
            });
            there = Some((tx, handle));
        } else {
            here = Some(judge);
        }
        // Hands a step to the judge; false once the judge has stopped (with an error).
        let mut deliver = |step: Step, failure: &mut Option<PackError>| -> bool {
            if let Some(j) = here.as_mut() {
                if let Err(e) = j.step(step) {
                    *failure = Some(e);
                    return false;
                }
                true
            } else if let Some((tx, _)) = &there {
                tx.send(step).is_ok()
            } else {
                false
            }
        };
        let mut batch: Vec<Ready> = Vec::new();
        let mut failure = None;
        // GOPs being coded ahead (when coding overlaps judging), oldest first: up to
        // `sessions` encoder sessions run at once, each on a thread of its own.
        let mut coding = VecDeque::new();
        let (crf, qp) = ahead_coder.first_attempt();
        let coder = &ahead_coder;
        // Starts coding one GOP (or hands it over as it is), then hands over, in order, the
        // GOPs coded ahead beyond those still allowed to run (all of them with `all`); false
        // once pack must stop (`failure` says why, or the judge has stopped with its own
        // error).
        let mut send_gop = |batch: Option<Vec<Ready>>,
                            all: bool,
                            wide: bool,
                            deliver: &mut dyn FnMut(Step, &mut Option<PackError>) -> bool,
                            failure: &mut Option<PackError>|
         -> bool {
            if let Some(batch) = batch {
                if !overlap {
                    return deliver(Step::Gop(batch, None), failure);
                }
                // The track's last GOPs get every thread: fewer sessions than cores are left
                // to run side by side, and one thread each would leave cores idle while they
                // finish (two seconds of a 10 s burst-1080p pack ran on one core).
                let threads = if wide { opts.threads.max(1) } else { threads };
                coding.push_back(s.spawn(move || {
                    let coded = coder.encode(&batch, crf, qp, threads);
                    (batch, coded)
                }));
            }
            let running = if all { 0 } else { sessions - 1 };
            while coding.len() > running {
                let Some(handle) = coding.pop_front() else {
                    break;
                };
                match handle.join() {
                    Ok((batch, Ok(coded))) => {
                        if !deliver(Step::Gop(batch, Some(coded)), failure) {
                            return false;
                        }
                    }
                    Ok((_, Err(e))) => {
                        *failure = Some(e);
                        return false;
                    }
                    Err(_) => {
                        *failure = Some(PackError::Pipeline("encoder thread panicked".into()));
                        return false;
                    }
                }
            }
            true
        };
        for loaded in load_rx {
            let job = loaded.job;
            let left = loaded.left;
            // Among the track's last `sessions` GOPs (by the tiles left after this one).
            let near_end = |left: usize| left <= (sessions - 1) * gop as usize;
            let item = &items[job.item];
            match loaded.result {
                Err(reason) => {
                    let done = TileDone {
                        job,
                        outcome: Outcome::Failed(reason),
                        pixels: None,
                    };
                    // Steps reach the judge in track order: the GOPs before this tile first.
                    if !send_gop(None, true, false, &mut deliver, &mut failure)
                        || !deliver(Step::Tile(done), &mut failure)
                    {
                        break;
                    }
                }
                Ok(ready) => {
                    // A scene change starts a GOP of its own.
                    if ready.job.cut
                        && !batch.is_empty()
                        && !send_gop(
                            Some(std::mem::take(&mut batch)),
                            false,
                            near_end(left + 1),
                            &mut deliver,
                            &mut failure,
                        )
                    {
                        break;
                    }
                    batch.push(ready)
                }
            }
            if (batch.len() as u32 >= gop || (left == 0 && !batch.is_empty()))
                && !send_gop(
                    Some(std::mem::take(&mut batch)),
                    left == 0,
                    near_end(left),
                    &mut deliver,
                    &mut failure,
                )
            {
                break;
            }
            if job.tile + 1 == job.tiles {
                let bytes = match item.found {
                    Found::File { size } => size,
                    _ => 0,
                };
                progress.file_done(&String::from_utf8_lossy(&item.rel), bytes);
            }
        }
        if failure.is_none() {
            let last = (!batch.is_empty()).then_some(batch);
            send_gop(last, true, true, &mut deliver, &mut failure);
        }
        loader
            .join()
            .map_err(|_| PackError::Pipeline("loader thread panicked".into()))?;
        let assembler = match (here, there) {
            (Some(j), _) => j.assembler,
            (None, Some((tx, handle))) => {
                drop(tx);
                let judged = handle
                    .join()
                    .map_err(|_| PackError::Pipeline("judging thread panicked".into()))?;
                // The judge's own error comes first: it is why sending stopped.
                judged?
            }
            (None, None) => return Err(PackError::Pipeline("no judge".into())),
        };
        if let Some(e) = failure {
            return Err(e);
        }
        if !assembler.pending.is_empty() {
            return Err(PackError::Pipeline("tiles of an image went missing".into()));
        }
        Ok(assembler.out)
    })
}

/// Canvases up to this many bytes (RGB) code several GOPs at once (1920×1088 is 6.3 MB): each
/// x264 session holds its GOP and look-ahead, about 100 MiB more per session at 1080p.
const PARALLEL_FRAME_BYTES: u64 = 8 << 20;

/// How a track's GOPs are coded ahead: how many encoder sessions at once, and the threads of
/// each. With `threads` ≥ 2 and canvases up to [`PARALLEL_FRAME_BYTES`], GOPs are coded
/// `threads` at a time (at most 4) with one thread each: x264's frame threads fill up and
/// drain with every short session, while sessions side by side keep the cores busy (six GOPs
/// of burst-1080p with the ffmpeg CLI: 5.4–5.9 s two at a time with one thread each, 7.2 s one
/// after another with two). Larger canvases code one GOP at a time with `threads` threads.
/// The archive's bytes may depend on these, which depend only on `threads` and the canvas.
fn session_threads(threads: usize, frame_bytes: u64) -> (usize, usize) {
    let threads = threads.max(1);
    if frame_bytes <= PARALLEL_FRAME_BYTES && threads >= 2 {
        (threads.min(4), 1)
    } else {
        (1, threads)
    }
}

/// What the judge receives, in track order.
enum Step {
    /// A tile that failed before coding (it could not be loaded).
    Tile(TileDone),
    /// A full GOP, with its first attempt when it was coded ahead.
    Gop(Vec<Ready>, Option<Encoded>),
}

/// Judges GOPs (decode back, render, score; recode if needed), writes them in order, and
/// collects the outcomes.
struct Judge<'a, 'w> {
    coder: GopCoder<'a>,
    writer: &'w mut ArchiveWriter,
    assembler: Assembler,
}

impl Judge<'_, '_> {
    fn step(&mut self, step: Step) -> Result<(), PackError> {
        let from = self.assembler.out.len();
        match step {
            Step::Tile(done) => self.assembler.take(done)?,
            Step::Gop(batch, ahead) => {
                let done = self.coder.code(batch, self.writer, ahead)?;
                done.into_iter().try_for_each(|d| self.assembler.take(d))?;
            }
        }
        // Files kept as they are go into the archive now, while the next GOPs are coded,
        // with the recoded form made to measure them (checked here, files in parallel).
        // (position in `out`, item, its recoded form)
        let kept: Vec<(usize, usize, Option<Recoded>)> = (from..self.assembler.out.len())
            .filter_map(|k| {
                let (i, outcome) = &self.assembler.out[k];
                matches!(outcome, Outcome::Failed(_) | Outcome::Smaller(_))
                    .then(|| (k, *i, self.coder.kept_forms.remove(i)))
            })
            .collect();
        let items = self.coder.items;
        let hint = self.coder.thin_hint;
        let thin = self
            .coder
            .opts
            .thin_target()
            .map(|target| Thin { target, hint });
        let forms = crate::par::map(&kept, |(_, i, lepton)| {
            verbatim_form(&items[*i], lepton.clone(), thin)
        })
        .map_err(|e| PackError::Pipeline(format!("storing kept files: {e}")))?;
        for ((k, i, _), form) in kept.iter().zip(forms) {
            let (Outcome::Failed(reason) | Outcome::Smaller(reason)) = std::mem::replace(
                &mut self.assembler.out[*k].1,
                Outcome::Failed(String::new()),
            ) else {
                continue;
            };
            let item = &items[*i];
            log::info!("{}: stored as is: {reason}", archive::printable(&item.abs));
            let blob = write_verbatim(self.writer, item, form?, &mut self.coder.thin_hint)?;
            self.assembler.out[*k].1 = Outcome::Stored(blob, kept_reason(&blob, &reason));
        }
        // Recoded forms of files coded as video are no longer needed (their sizes are kept
        // for the other tiles of large images).
        self.coder.kept_forms.clear();
        Ok(())
    }
}

/// The alpha track that goes with a colour track: coded losslessly, GOP by GOP beside it.
struct AlphaTrack {
    t: usize,
    extradata: Option<Vec<u8>>,
    next_frame: u64,
}

/// Codes a track GOP by GOP. Each GOP is its own encoder session (closed, starting with a
/// keyframe, with headers that do not depend on the session: x264's `stitchable`, x265
/// without its info SEI, so every session's codec private data is identical), decoded back at once,
/// rendered as unpack and the mount will serve it, and scored against the original; a GOP
/// with an image below the target is coded again at the next CRF of the ladder.
struct GopCoder<'a> {
    t: usize,
    cw: u32,
    ch: u32,
    gop: u32,
    opts: &'a PackOptions,
    track_name: &'a str,
    extradata: Option<Vec<u8>>,
    next_frame: u64,
    alpha: Option<AlphaTrack>,
    /// The walked items (to read a JPEG or PNG again for its recoded size).
    items: &'a [Item],
    /// Sizes of the JPEG (Lepton) and PNG (`pngz`) files' recoded forms measured so far, by
    /// item (an image in several tiles is measured once); `u64::MAX` where the file does not
    /// recode.
    kept_sizes: HashMap<usize, u64>,
    /// Sizes of the PNG files' drafts (`pngz::draft`) made so far, by item; `u64::MAX` where
    /// the file does not recode.
    draft_sizes: HashMap<usize, u64>,
    /// The recoded forms measured for the GOP being judged: stored with a file that is kept,
    /// dropped once the GOP is judged.
    kept_forms: HashMap<usize, Recoded>,
    /// The share of coefficients the track's last recoded JPEG took ([`Thin`]).
    thin_hint: Option<f64>,
    /// Threads of one encoder session (see [`session_threads`]).
    threads: usize,
    /// Code 10-bit Y'CbCr ([`deep_track`]).
    deep: bool,
}

/// Bytes of one canvas in the encoder: three samples a pixel, of two bytes at 10 bits (what
/// look-ahead and parallel sessions are budgeted by).
fn encoder_frame_bytes(cw: u32, ch: u32, deep: bool) -> u64 {
    u64::from(cw) * u64::from(ch) * 3 * if deep { 2 } else { 1 }
}

/// Whether a track is coded as 10-bit Y'CbCr: with a codec that takes it
/// ([`Codec::takes_ten_bits`]), short of lossless, when none of its images is a JPEG. RGB
/// originals need the two bits to come back within what the codec loses (8-bit Y'CbCr alone
/// cost photos 12 points of SSIMULACRA2: at QP 0 they scored 88), with x264, x265 and libaom
/// alike. Tracks with JPEGs stay 8-bit: their files are JPEGs made straight from the decoded
/// 8-bit planes (the mount's fast path, `Renderer::uses_planes`), and 10 bits did not save them
/// either: burst-1080p's GOPs coded at 10 bits cost at least 1.4x the JPEGs (docs/BENCHMARKS.md).
fn deep_track(opts: &PackOptions, jobs: &[(Job, Item, Probe)]) -> bool {
    opts.codec.takes_ten_bits()
        && !opts.lossless
        && !jobs.iter().any(|(_, _, p)| {
            matches!(
                p,
                Probe::Image {
                    format: ImageFormat::Jpeg,
                    ..
                }
            )
        })
}

enum Attempt {
    Coded(Vec<media::EncodedPacket>, Vec<Judged>),
    /// The coded GOP (its bytes) is at least as large as keeping its files (their bytes).
    TooBig(u64, u64),
    HeadersDiffer,
}

/// What a GOP's coding must beat: keeping its files as the archive would keep them, JPEG files
/// Lepton-compressed, PNG files recoded (`pngz`), the rest as they are. Recoded sizes cost
/// about as much time as coding, so they are measured only when the answer depends on them.
struct Budget {
    /// Metadata stored beside the frames, and the alpha track's bytes.
    overhead: u64,
    /// The files' own sizes (shares of them for tiles).
    raw: u64,
    /// The part of `raw` that is JPEG files.
    jpeg: u64,
    /// The least share of its size a JPEG file can be kept in ([`jpeg_floor`]).
    jpeg_floor: (u64, u64),
    /// The part of `raw` that is PNG files.
    png: u64,
    /// `raw` with the JPEG and PNG files at their recoded size, once measured.
    exact: Option<u64>,
    /// A floor of `exact` with the PNG files at their drafts' size, once made.
    drafts: Option<u64>,
}

impl Budget {
    /// What keeping the files takes, when that is no more than `coded` bytes of frames (plus
    /// the overhead); `None` when coding is smaller. `measure` gives the exact size (JPEGs and
    /// PNGs at their recoded size), called only when the files' own size, the JPEGs' floor
    /// ([`jpeg_floor`]) and nothing of the PNGs' do not decide, nor the PNGs' drafts (`drafts`,
    /// which spare the zlib settings search, most of a PNG's measuring), and remembered in
    /// `exact`.
    fn beats(&mut self, coded: u64, mut measure: impl FnMut(Measure) -> u64) -> Option<u64> {
        let total = coded.saturating_add(self.overhead);
        if total >= self.raw {
            return Some(self.raw);
        }
        // A PNG of text or a user interface recodes to a fifth of its size or less: no
        // floor is safe for PNGs but their drafts.
        let floor =
            self.raw - self.jpeg - self.png + self.jpeg * self.jpeg_floor.0 / self.jpeg_floor.1;
        if total < floor {
            return None;
        }
        if self.png > 0
            && self.exact.is_none()
            && total < *self.drafts.get_or_insert_with(|| measure(Measure::Drafts))
        {
            return None;
        }
        let exact = *self.exact.get_or_insert_with(|| measure(Measure::Exact));
        (total >= exact).then_some(exact)
    }
}

/// What [`Budget::beats`] asks to be measured.
enum Measure {
    /// The files with PNGs at their drafts' size and JPEGs at their floor ([`jpeg_floor`]).
    Drafts,
    /// The files as the archive would keep them.
    Exact,
}

/// A tile of a huge image weighs its share (by area) of `bytes`, a size of the whole file.
fn tile_share(r: &Ready, bytes: u64) -> u64 {
    let t = r.tile;
    let area = u128::from(t.width) * u128::from(t.height);
    let whole = (u128::from(r.entry.width) * u128::from(r.entry.height)).max(1);
    (u128::from(bytes) * area / whole) as u64
}

/// Lepton shrinks a JPEG file by 17 to 29 % on the corpora measured; coding that beats
/// this fraction of the JPEG files' size wins without measuring them.
const LEPTON_FLOOR: (u64, u64) = (3, 5);

/// Recoded in its own DCT, a JPEG can take less again (burst frames at 90: half their size;
/// at lower targets less): below this fraction coding wins without measuring.
const THINNED_FLOOR: (u64, u64) = (1, 5);

/// The fraction of a JPEG file's size below which coding wins without measuring what keeping
/// it takes.
fn jpeg_floor(opts: &PackOptions) -> (u64, u64) {
    if opts.thin_target().is_some() {
        THINNED_FLOOR
    } else {
        LEPTON_FLOOR
    }
}

/// One tile of a GOP after decoding: its served file and score (and its pixels, for images
/// in several tiles).
struct Judged {
    rendered: Rendered,
    score: Option<f64>,
    pixels: Option<Picture>,
}

/// One encoder session's output for a GOP, before it is judged.
struct Encoded {
    crf: Option<f32>,
    qp: Option<u32>,
    extradata: Vec<u8>,
    packets: Vec<media::EncodedPacket>,
}

/// The alpha planes of a GOP, coded losslessly and checked.
struct AlphaGop {
    packets: Vec<media::EncodedPacket>,
    bytes: u64,
}

impl GopCoder<'_> {
    fn media_err(&self, error: MediaError) -> PackError {
        PackError::Media {
            path: self.track_name.to_string(),
            error,
        }
    }

    fn config(&self, crf: Option<f32>, qp: Option<u32>) -> EncoderConfig {
        let frame_bytes = encoder_frame_bytes(self.cw, self.ch, self.deep);
        let lookahead = (LOOKAHEAD_BUDGET / frame_bytes.max(1)).clamp(1, 40) as u32;
        let mut params = match self.opts.codec {
            Codec::H264 => format!("{BASE_X264_PARAMS}:stitchable=1"),
            Codec::Hevc => BASE_X265_PARAMS.to_string(),
            _ => String::new(),
        };
        if !self.opts.extra_params.is_empty() {
            if !params.is_empty() {
                params.push(':');
            }
            params.push_str(&self.opts.extra_params);
        }
        EncoderConfig {
            codec: self.opts.codec,
            width: self.cw,
            height: self.ch,
            preset: self.opts.preset.clone(),
            crf,
            qp,
            gop: self.gop,
            frame_rate: self.opts.frame_rate,
            threads: self.threads,
            lookahead,
            extra_params: params,
            rgb: self.opts.lossless,
            deep: self.deep,
        }
    }

    /// Codes the alpha planes of the batch losslessly (x264 at QP 0; grey survives the colour
    /// conversion exactly) and checks, by decoding them, that they come back identical.
    fn code_alpha(&mut self, batch: &[Ready]) -> Result<Result<AlphaGop, String>, PackError> {
        let Some(alpha) = &self.alpha else {
            return Ok(Err("no alpha track was planned".into()));
        };
        let mut cfg = self.config(None, Some(0));
        // Alpha is always H.264 at QP 0, whatever codes the colour planes; the user's encoder
        // options are for the colour planes; nothing may make alpha lossy.
        cfg.codec = Codec::H264;
        cfg.deep = false;
        cfg.extra_params = "stitchable=1".into();
        let mut encoder = VideoEncoder::new(&cfg).map_err(|e| self.media_err(e))?;
        let extradata = encoder.extradata().map_err(|e| self.media_err(e))?;
        if alpha
            .extradata
            .as_ref()
            .is_some_and(|first| *first != extradata)
        {
            return Ok(Err("alpha stream headers changed".into()));
        }
        let canvases: Vec<&Vec<u8>> = batch.iter().filter_map(|r| r.alpha.as_ref()).collect();
        for c in &canvases {
            encoder.encode(c).map_err(|e| self.media_err(e))?;
        }
        let packets = encoder.finish().map_err(|e| self.media_err(e))?;
        drop(encoder);
        let frames = self.decode_back(Codec::H264, &extradata, &packets, canvases.len())?;
        for (k, (f, c)) in frames.iter().zip(&canvases).enumerate() {
            let same = f.as_ref().is_some_and(|f| f.canvas_rgb() == **c);
            if !same {
                return Ok(Err(format!(
                    "alpha plane {k} of the group did not come back exactly from lossless coding"
                )));
            }
        }
        if let Some(a) = self.alpha.as_mut() {
            a.extradata.get_or_insert(extradata);
        }
        let bytes = packets.iter().map(|p| p.data.len() as u64).sum();
        Ok(Ok(AlphaGop { packets, bytes }))
    }

    /// Decodes a coded GOP back: frame k of the GOP at index k.
    fn decode_back(
        &self,
        codec: Codec,
        extradata: &[u8],
        packets: &[media::EncodedPacket],
        n: usize,
    ) -> Result<Vec<Option<media::DecodedFrame>>, PackError> {
        let codec_id = codec.matroska_id();
        let mut decoder =
            VideoDecoder::new(codec_id, extradata, 1).map_err(|e| self.media_err(e))?;
        let mut frames: Vec<Option<media::DecodedFrame>> = (0..n).map(|_| None).collect();
        let mut take = |decoder: &mut VideoDecoder| -> Result<(), MediaError> {
            while let Some(f) = decoder.receive()? {
                if let Some(slot) = usize::try_from(f.pts).ok().and_then(|i| frames.get_mut(i)) {
                    *slot = Some(f);
                }
            }
            Ok(())
        };
        for p in packets {
            decoder
                .send(&p.data, p.pts, p.dts, p.keyframe)
                .map_err(|e| self.media_err(e))?;
            take(&mut decoder).map_err(|e| self.media_err(e))?;
        }
        decoder.send_eof().map_err(|e| self.media_err(e))?;
        take(&mut decoder).map_err(|e| self.media_err(e))?;
        Ok(frames)
    }

    /// Codes one GOP until every image meets the target (or keeps its files), writes it, and
    /// returns each tile's outcome. `ahead` is the first attempt, if it was coded already.
    fn code(
        &mut self,
        batch: Vec<Ready>,
        writer: &mut ArchiveWriter,
        mut ahead: Option<Encoded>,
    ) -> Result<Vec<TileDone>, PackError> {
        let fail_all = |batch: Vec<Ready>, outcome: &dyn Fn() -> Outcome| {
            batch
                .into_iter()
                .map(|r| TileDone {
                    job: r.job,
                    outcome: outcome(),
                    pixels: None,
                })
                .collect()
        };
        // Alpha planes first: lossless, one try; their bytes count against the budget.
        let alpha_gop = if batch.iter().any(|r| r.alpha.is_some()) {
            match self.code_alpha(&batch)? {
                Ok(a) => Some(a),
                Err(reason) => {
                    log::warn!(
                        "{}: frames {}..: {reason}",
                        self.track_name,
                        self.next_frame
                    );
                    return Ok(fail_all(batch, &|| Outcome::Failed(reason.clone())));
                }
            }
        } else {
            None
        };
        let alpha_bytes = alpha_gop.as_ref().map_or(0, |a| a.bytes);
        let attempts = self.attempts();
        // Coding must beat keeping the files (JPEGs Lepton-compressed, the rest as they are).
        let original: u64 = batch.iter().map(|r| tile_share(r, r.file_size)).sum();
        let share_of = |format: ImageFormat| -> u64 {
            batch
                .iter()
                .filter(|r| r.entry.format == format)
                .map(|r| tile_share(r, r.file_size))
                .sum()
        };
        let (jpeg, png) = (share_of(ImageFormat::Jpeg), share_of(ImageFormat::Png));
        // Metadata blocks are stored in the index beside the frames, and the index twice:
        // they count against the budget as many times (an album's EXIF thumbnails made coded
        // JPEGs 1.02x the originals at --crf 18 when they counted once).
        let metadata: u64 = archive::INDEX_COPIES
            * batch
                .iter()
                .map(|r| {
                    let bytes = r
                        .entry
                        .metadata
                        .iter()
                        .map(|m| match m {
                            // A directory entry, and its data where it does not fit in it.
                            archive::MetaBlock::TiffTag { data, .. } => data.len() as u64 + 12,
                            // A marker or a chunk type, length and CRC.
                            _ => m.len() as u64 + 8,
                        })
                        .sum();
                    tile_share(r, bytes)
                })
                .sum::<u64>();
        let mut budget = Budget {
            overhead: metadata + alpha_bytes,
            raw: original,
            jpeg,
            jpeg_floor: jpeg_floor(self.opts),
            png,
            exact: None,
            drafts: None,
        };
        let mut last = None;
        let mut n = 0;
        while n < attempts.len() {
            let (crf, qp) = attempts[n];
            let final_try = n + 1 == attempts.len();
            let (packets, judged) = match self.attempt(
                &batch,
                crf,
                qp,
                &mut budget,
                ahead.take(),
            )? {
                Attempt::Coded(p, j) => (p, j),
                Attempt::TooBig(coded, kept) => {
                    // Higher quality only costs more: the original files are the better deal.
                    let files = match batch.len() {
                        1 => "a file".to_string(),
                        n => format!("{n} files"),
                    };
                    let reason = format!(
                        "{SMALLER_AS_IS} ({coded} coded bytes, {alpha_bytes} of alpha and {metadata} of metadata vs {kept} kept as {files})"
                    );
                    log::debug!(
                        "{}: frames {}..: {reason}",
                        self.track_name,
                        self.next_frame
                    );
                    return Ok(fail_all(batch, &|| Outcome::Smaller(reason.clone())));
                }
                Attempt::HeadersDiffer => {
                    log::debug!(
                        "{}: crf {crf:?} qp {qp:?} changes the stream headers; skipped",
                        self.track_name
                    );
                    n += 1;
                    continue;
                }
            };
            let worst = judged
                .iter()
                .filter_map(|j| j.score)
                .fold(f64::INFINITY, f64::min);
            if self.opts.lossless && worst < 100.0 {
                let reason = "lossless coding did not give the pixels back exactly".to_string();
                log::warn!(
                    "{}: frames {}..: {reason}",
                    self.track_name,
                    self.next_frame
                );
                return Ok(fail_all(batch, &|| Outcome::Failed(reason.clone())));
            }
            let target = self.opts.target.map_or(f64::NEG_INFINITY, |t| t.min_score);
            if worst >= target || final_try {
                if worst < target {
                    // The promise is every image at the target: a group that cannot reach it
                    // keeps its original files instead (nothing coded is written).
                    let reason = format!(
                        "{UNREACHABLE_TARGET} (best {worst:.2} < {target} in its group of {})",
                        batch.len()
                    );
                    log::debug!(
                        "{}: frames {}..: {reason}",
                        self.track_name,
                        self.next_frame
                    );
                    return Ok(fail_all(batch, &|| Outcome::Failed(reason.clone())));
                }
                last = Some((packets, judged));
                break;
            }
            log::debug!(
                "{}: frames {}..: worst score {worst:.1} at crf {crf:?}; trying higher quality",
                self.track_name,
                self.next_frame
            );
            // Far below the target: skip a step of the ladder.
            n += if target - worst > 3.0 && n + 2 < attempts.len() {
                2
            } else {
                1
            };
        }
        let Some((packets, judged)) = last else {
            let reason = "could not be coded with this track's stream headers".to_string();
            return Ok(fail_all(batch, &|| Outcome::Failed(reason.clone())));
        };
        let base = self.next_frame;
        if base == 0 {
            let extradata = self.extradata.clone().unwrap_or_default();
            writer.set_extradata(self.t, extradata)?;
        }
        for p in &packets {
            let pts = u64::try_from(p.pts)
                .map_err(|_| PackError::Pipeline(format!("negative pts {}", p.pts)))?;
            writer.write_packet(self.t, &p.data, base + pts, base as i64 + p.dts, p.keyframe)?;
        }
        let alpha_base = match (&mut self.alpha, alpha_gop) {
            (Some(alpha), Some(gop)) => {
                let base = alpha.next_frame;
                if base == 0 {
                    writer.set_extradata(alpha.t, alpha.extradata.clone().unwrap_or_default())?;
                    writer.share_timeline(alpha.t, self.t)?;
                }
                for p in &gop.packets {
                    let pts = u64::try_from(p.pts)
                        .map_err(|_| PackError::Pipeline(format!("negative pts {}", p.pts)))?;
                    writer.write_packet(
                        alpha.t,
                        &p.data,
                        base + pts,
                        base as i64 + p.dts,
                        p.keyframe,
                    )?;
                }
                alpha.next_frame += batch.iter().filter(|r| r.alpha.is_some()).count() as u64;
                base
            }
            _ => 0,
        };
        self.next_frame += batch.len() as u64;
        let mut alpha_frame = alpha_base;
        Ok(batch
            .into_iter()
            .zip(judged)
            .enumerate()
            .map(|(k, (mut ready, j))| {
                let tile = ready.job.tile;
                if let Some(t) = ready.entry.tiles.get_mut(tile) {
                    t.frame = base + k as u64;
                }
                if ready.alpha.is_some() {
                    if let Some(a) = ready.entry.alpha.get_mut(tile) {
                        a.frame = alpha_frame;
                    }
                    alpha_frame += 1;
                }
                ready.entry.rendered = j.rendered;
                ready.entry.score = j.score.map(|s| s as f32);
                TileDone {
                    job: ready.job,
                    outcome: Outcome::Image(ready.entry),
                    pixels: j.pixels,
                }
            })
            .collect())
    }

    /// Codes the batch once at `crf`/`qp` (one encoder session of `threads` threads). Reads only the track's
    /// settings, so it can run on another thread while the previous GOP is judged.
    fn encode(
        &self,
        batch: &[Ready],
        crf: Option<f32>,
        qp: Option<u32>,
        threads: usize,
    ) -> Result<Encoded, PackError> {
        let config = EncoderConfig {
            threads,
            ..self.config(crf, qp)
        };
        let mut encoder = VideoEncoder::new(&config).map_err(|e| self.media_err(e))?;
        for r in batch {
            encoder.encode(&r.canvas).map_err(|e| self.media_err(e))?;
        }
        let packets = encoder.finish().map_err(|e| self.media_err(e))?;
        // Read once the session is coded: libaom's wrapper only knows it after a packet.
        let extradata = encoder.extradata().map_err(|e| self.media_err(e))?;
        Ok(Encoded {
            crf,
            qp,
            extradata,
            packets,
        })
    }

    /// The first setting `code` tries for a GOP (what `encode` runs ahead of time).
    fn first_attempt(&self) -> (Option<f32>, Option<u32>) {
        self.attempts()
            .first()
            .copied()
            .unwrap_or((self.opts.crf, None))
    }

    /// The rate settings to try, best compression first.
    fn attempts(&self) -> Vec<(Option<f32>, Option<u32>)> {
        match (self.opts.qp, self.opts.target) {
            (Some(qp), _) => vec![(None, Some(qp))],
            (None, None) => vec![(self.opts.crf, None)],
            (None, Some(target)) => target
                .ladder(self.opts.codec)
                .iter()
                .map(|&c| (Some(c), None))
                .collect(),
        }
    }

    /// `recode` of each job, in parallel. A failed worker leaves its files unmeasured: they
    /// count at their own size.
    fn recode_each<J: Sync>(
        &self,
        jobs: &[J],
        recode: impl Fn(&J) -> Option<Recoded> + Sync,
    ) -> Vec<Option<Recoded>> {
        crate::par::map(jobs, recode).unwrap_or_else(|e| {
            log::warn!("{}: recoded sizes: {e}", self.track_name);
            vec![None; jobs.len()]
        })
    }

    /// A floor of what keeping the batch's files takes: PNGs at their drafts' size (made here
    /// in parallel, and kept to be settled if it comes to that), JPEGs at their floor
    /// ([`jpeg_floor`]), shares of it for tiles.
    fn kept_at_least(&mut self, batch: &[Ready]) -> u64 {
        let mut todo: Vec<usize> = batch
            .iter()
            .filter(|r| r.entry.format == ImageFormat::Png)
            .map(|r| r.job.item)
            .filter(|i| !self.kept_sizes.contains_key(i) && !self.draft_sizes.contains_key(i))
            .collect();
        todo.dedup();
        let items = self.items;
        let drafts = self.recode_each(&todo, |&i| {
            let bytes = std::fs::read(&items[i].abs).ok()?;
            crate::pngz::draft(&bytes).map(|d| Recoded::PngDraft(d, xxh3_64(&bytes)))
        });
        for (i, draft) in todo.into_iter().zip(drafts) {
            self.draft_sizes
                .insert(i, draft.as_ref().map_or(u64::MAX, |d| d.len() as u64));
            if let Some(d) = draft {
                self.kept_forms.insert(i, d);
            }
        }
        batch
            .iter()
            .map(|r| {
                let whole = match r.entry.format {
                    ImageFormat::Png => self
                        .kept_sizes
                        .get(&r.job.item)
                        .or_else(|| self.draft_sizes.get(&r.job.item))
                        .map_or(r.file_size, |&n| n.min(r.file_size)),
                    ImageFormat::Jpeg => {
                        let (num, den) = jpeg_floor(self.opts);
                        r.file_size * num / den
                    }
                    _ => r.file_size,
                };
                tile_share(r, whole)
            })
            .sum()
    }

    /// The batch's files as the archive would keep them: JPEGs at their Lepton size, or
    /// recoded in their own DCT where pack does that and it is smaller, and PNGs at their
    /// recoded size (where that takes them and is smaller), shares of it for tiles.
    fn kept_exactly(&mut self, batch: &[Ready]) -> u64 {
        let recodes = |f: ImageFormat| matches!(f, ImageFormat::Jpeg | ImageFormat::Png);
        // The files not measured yet, recoded in parallel (PNGs from their drafts, if made).
        let mut todo: Vec<(usize, ImageFormat)> = batch
            .iter()
            .filter(|r| recodes(r.entry.format))
            .map(|r| (r.job.item, r.entry.format))
            .filter(|(i, _)| !self.kept_sizes.contains_key(i))
            .collect();
        todo.dedup();
        let jobs: Vec<(usize, ImageFormat, Option<Recoded>)> = todo
            .into_iter()
            .map(|(i, f)| (i, f, self.kept_forms.remove(&i)))
            .collect();
        let items = self.items;
        // The same first guess as the files of this GOP get if they are stored.
        let thin = self.opts.thin_target().map(|target| Thin {
            target,
            hint: self.thin_hint,
        });
        let coded = self.recode_each(&jobs, |(i, format, made)| {
            let bytes = std::fs::read(&items[*i].abs).ok()?;
            let hash = xxh3_64(&bytes);
            match (format, made) {
                (ImageFormat::Jpeg, _) => jpeg_kept_form(&items[*i], &bytes, hash, thin),
                // Checked by decoding only if the file is kept (`verbatim_form`).
                (_, Some(Recoded::PngDraft(d, from))) if *from == hash => {
                    crate::pngz::settle(d.clone(), &bytes).map(|c| Recoded::Png(c, hash))
                }
                _ => crate::pngz::measure(&bytes).map(|c| Recoded::Png(c, hash)),
            }
        });
        for ((i, _, _), coded) in jobs.into_iter().zip(coded) {
            let size = coded.as_ref().map_or(u64::MAX, |c| c.len() as u64);
            self.kept_sizes.insert(i, size);
            if let Some(c) = coded {
                self.kept_forms.insert(i, c);
            }
        }
        batch
            .iter()
            .map(|r| {
                let whole = if recodes(r.entry.format) {
                    self.kept_sizes
                        .get(&r.job.item)
                        .map_or(r.file_size, |&n| n.min(r.file_size))
                } else {
                    r.file_size
                };
                tile_share(r, whole)
            })
            .sum()
    }

    /// Codes the batch once (or takes the coding done ahead); returns its packets and each
    /// tile's served file and score.
    fn attempt(
        &mut self,
        batch: &[Ready],
        crf: Option<f32>,
        qp: Option<u32>,
        budget: &mut Budget,
        ahead: Option<Encoded>,
    ) -> Result<Attempt, PackError> {
        let Encoded {
            extradata, packets, ..
        } = match ahead {
            Some(e) if e.crf == crf && e.qp == qp => e,
            _ => self.encode(batch, crf, qp, self.threads)?,
        };
        match &self.extradata {
            None => self.extradata = Some(extradata.clone()),
            // All GOPs of a track must share one set of headers.
            Some(first) if *first != extradata => return Ok(Attempt::HeadersDiffer),
            Some(_) => {}
        }
        let coded: u64 = packets.iter().map(|p| p.data.len() as u64).sum();
        if let Some(kept) = budget.beats(coded, |m| match m {
            Measure::Drafts => self.kept_at_least(batch),
            Measure::Exact => self.kept_exactly(batch),
        }) {
            return Ok(Attempt::TooBig(coded, kept));
        }
        let frames = self.decode_back(self.opts.codec, &extradata, &packets, batch.len())?;

        // Render and score each tile, in parallel.
        let scoring = self.opts.target.is_some();
        let lossless = self.opts.lossless;
        let (cw, ch) = (self.cw, self.ch);
        let judge = |r: &Ready, f: &Option<media::DecodedFrame>| -> Result<Judged, PackError> {
            let f = f.as_ref().ok_or_else(|| {
                PackError::Pipeline("a frame did not come back from the decoder".into())
            })?;
            let tile = r.tile;
            let cut = |canvas: &[u8]| {
                pixels::extract(canvas, cw, ch, tile.width, tile.height, tile.rotated)
                    .ok_or_else(|| PackError::Pipeline("tile outside canvas".into()))
            };
            // Alpha is lossless (checked when it was coded): the original's is the decoded one.
            let alpha = match &r.alpha {
                Some(c) => Some(pixels::first_channel(&cut(c)?)),
                None => None,
            };
            // The decoded pixels as RGB, made only where they are used: a JPEG made from the
            // frame's planes is scored on its own decoded bytes.
            let decoded = || -> Result<Picture, PackError> {
                Ok(Picture {
                    rgb: frames::tile_rgb(&tile, f)
                        .map_err(|_| PackError::Pipeline("tile outside canvas".into()))?,
                    alpha: alpha.clone(),
                })
            };
            // The file the mount and unpack will make (from the frame's planes, or from RGB).
            let original = OutputFormat::Original;
            let (file, rgb) = match frames::render_from_planes(
                &r.entry,
                f,
                original,
                render::Renderer::CURRENT,
            ) {
                Some(file) => (file, None),
                None => {
                    let rgb = decoded()?;
                    (
                        render::render(&r.entry, &rgb, original, render::Renderer::CURRENT),
                        Some(rgb),
                    )
                }
            };
            let file = file.map_err(|error| PackError::Render {
                path: format!("frame {}", f.pts),
                error,
            })?;
            // Tiles of a larger image are kept for its assembly; lossless coding compares them.
            let rgb = match rgb {
                None if r.job.tiles > 1 || lossless => Some(decoded()?),
                rgb => rgb,
            };
            let keep = if r.job.tiles > 1 { rgb.clone() } else { None };
            let score = if lossless {
                // Pixel-exact or not: no perceptual score needed.
                let original = cut(&r.canvas)?;
                let exact = rgb.as_ref().is_some_and(|p| p.rgb == original);
                Some(if exact { 100.0 } else { 0.0 })
            } else if scoring {
                let original = Picture {
                    rgb: cut(&r.canvas)?,
                    alpha: alpha.clone(),
                };
                let served = served_pixels(&r.entry, &file, move || rgb.map_or_else(decoded, Ok))?;
                Some(
                    quality::score_picture(&original, &served)
                        .map_err(|e| PackError::Pipeline(format!("scoring: {e}")))?
                        .ssimulacra2,
                )
            } else {
                None
            };
            Ok(Judged {
                rendered: Rendered {
                    size: file.len() as u64,
                    hash: xxh3_64(&file),
                },
                score,
                pixels: keep,
            })
        };
        let pairs: Vec<_> = batch.iter().zip(&frames).collect();
        let judged = crate::par::map(&pairs, |(r, f)| judge(r, f))
            .map_err(|_| PackError::Pipeline("scoring thread panicked".into()))?
            .into_iter()
            .collect::<Result<Vec<Judged>, PackError>>()?;
        Ok(Attempt::Coded(packets, judged))
    }
}

/// The pixels a user gets from a served file: for lossy formats, the file decoded again.
/// The pixels a viewer gets from the served file: the file decoded where the renderer is lossy
/// (JPEG, grey), else the decoded pixels themselves (`decoded`, made only then).
fn served_pixels(
    entry: &ImageEntry,
    file: &[u8],
    decoded: impl FnOnce() -> Result<Picture, PackError>,
) -> Result<Picture, PackError> {
    match (entry.format, entry.color) {
        (ImageFormat::Jpeg, _) | (_, ColorModel::Grey) => Ok(Picture::from_dynamic(
            image::load_from_memory(file)
                .map_err(|e| PackError::Pipeline(format!("rendered file does not decode: {e}")))?,
        )),
        _ => decoded(),
    }
}

/// Cuts tile `job.tile` out of a decoded image and places it (and its alpha) on canvases.
fn prepare(d: &Decoded, job: Job, t: usize, alpha_t: Option<usize>, cw: u32, ch: u32) -> Ready {
    let grid = pixels::tile_grid(d.entry.width, d.entry.height);
    let (x, y, w, h) = grid
        .get(job.tile)
        .copied()
        .unwrap_or((0, 0, d.entry.width, d.entry.height));
    let tiles: Vec<Tile> = grid
        .iter()
        .map(|&(x, y, width, height)| Tile {
            track: t as u32,
            frame: 0,
            x,
            y,
            width,
            height,
            rotated: job.rotated,
        })
        .collect();
    let mut entry = Box::new(d.entry.clone());
    entry.alpha = match (&d.alpha, alpha_t) {
        (Some(_), Some(ta)) => tiles
            .iter()
            .map(|tile| Tile {
                track: ta as u32,
                ..*tile
            })
            .collect(),
        _ => Vec::new(),
    };
    entry.tiles = tiles;
    let whole = grid.len() == 1;
    let canvas = if whole {
        pixels::place(&d.rgb, job.rotated, cw, ch)
    } else {
        let part = image::imageops::crop_imm(&d.rgb, x, y, w, h).to_image();
        pixels::place(&part, job.rotated, cw, ch)
    };
    let alpha = match (&d.alpha, alpha_t) {
        (Some(a), Some(_)) => {
            let part = if whole {
                pixels::grey_to_rgb(a)
            } else {
                pixels::grey_to_rgb(&image::imageops::crop_imm(a, x, y, w, h).to_image())
            };
            Some(pixels::place(&part, job.rotated, cw, ch))
        }
        _ => None,
    };
    Ready {
        job,
        tile: Tile {
            track: t as u32,
            frame: 0,
            x,
            y,
            width: w,
            height: h,
            rotated: job.rotated,
        },
        entry,
        canvas,
        alpha,
        file_size: d.file_size,
    }
}

/// The album's files as the tracks read them: each one, what its probe found, and the
/// metadata budget their loaders share.
struct AlbumFiles<'a> {
    items: &'a [Item],
    probes: &'a [Option<Probe>],
    metadata: &'a MetadataBudget,
}

/// What is left of [`PackOptions::metadata_budget`], shared by the tracks' loaders.
struct MetadataBudget {
    limit: u64,
    left: std::sync::atomic::AtomicU64,
}

impl MetadataBudget {
    fn new(limit: u64) -> Self {
        MetadataBudget {
            limit,
            left: std::sync::atomic::AtomicU64::new(limit),
        }
    }

    /// Takes `bytes` from what is left; `Err` with the reason to keep the image when they do
    /// not fit (an image that is then kept anyway has still used its share: the index never
    /// holds more than the limit).
    fn take(&self, bytes: u64) -> Result<(), String> {
        use std::sync::atomic::Ordering::Relaxed;
        if bytes == 0 {
            return Ok(());
        }
        self.left
            .fetch_update(Relaxed, Relaxed, |left| left.checked_sub(bytes))
            .map(|_| ())
            .map_err(|_| {
                format!(
                    "its {bytes} bytes of metadata would take the album's past {} in the index, \
                     which the mount holds in memory",
                    crate::human_bytes(self.limit)
                )
            })
    }
}

/// Reads, hashes and decodes one image; its metadata takes its share of `budget`.
fn load(item: &Item, probe: &Probe, budget: &MetadataBudget) -> Result<Decoded, String> {
    let Probe::Image {
        format,
        width,
        height,
        mut color,
        alpha,
    } = *probe
    else {
        return Err("not an image".into());
    };
    let bytes = std::fs::read(&item.abs).map_err(|e| format!("could not read: {e}"))?;
    let metadata = match format {
        ImageFormat::Jpeg => {
            let (blocks, facts) = meta::jpeg_blocks(&bytes);
            if facts.components == 4 {
                return Err("CMYK JPEG: kept as is".into());
            }
            if facts.chroma_halved && color == ColorModel::Rgb {
                color = ColorModel::Rgb420;
            }
            // A truncated JPEG is kept exactly as it is; a few bytes after the image (often a
            // newline) travel as a trailer, more (an embedded video...) keep the file verbatim.
            let end = meta::jpeg_end(&bytes).ok_or("truncated JPEG (no end-of-image marker)")?;
            let mut blocks = blocks;
            if end < bytes.len() {
                if bytes.len() - end > MAX_TRAILER {
                    return Err(format!(
                        "{} bytes of data after the image",
                        bytes.len() - end
                    ));
                }
                blocks.push(archive::MetaBlock::Trailer(bytes[end..].to_vec()));
            }
            blocks
        }
        ImageFormat::Png => meta::png_blocks(&bytes),
        ImageFormat::WebP => meta::webp_blocks(&bytes),
        ImageFormat::Tiff => match meta::tiff_meta(io::Cursor::new(&bytes)) {
            meta::TiffMeta::Carried(blocks) => blocks,
            meta::TiffMeta::Kept(why) => return Err(why),
        },
        _ => Vec::new(),
    };
    budget.take(archive::metadata_bytes(&metadata))?;
    let img_format = image_format(format).ok_or("unsupported format")?;
    let mut reader = image::ImageReader::with_format(io::Cursor::new(&bytes), img_format);
    reader.limits(decode_limits());
    let decoded = reader
        .decode()
        .map_err(|e| format!("could not decode: {e}"))?;
    if decoded.width() != width || decoded.height() != height {
        return Err(format!(
            "decoded size {}x{} differs from the header's {width}x{height}",
            decoded.width(),
            decoded.height()
        ));
    }
    if decoded.color().has_alpha() != alpha {
        return Err("the image's alpha channel differs from its header".into());
    }
    // `into_*` reuses the decoded buffer when it already has the right layout (no copy of a
    // 12 MP photo on the hot path).
    let (rgb, alpha) = match (color, alpha) {
        (ColorModel::Grey, false) => (pixels::grey_to_rgb(&decoded.into_luma8()), None),
        (ColorModel::Rgb | ColorModel::Rgb420, false) => (pixels::into_rgb8(decoded), None),
        (_, true) => {
            let pic = Picture::from_dynamic(decoded);
            (pic.rgb, pic.alpha)
        }
    };
    let entry = ImageEntry {
        format,
        color,
        width,
        height,
        original_size: bytes.len() as u64,
        original_hash: xxh3_64(&bytes),
        tiles: Vec::new(),
        alpha: Vec::new(),
        metadata,
        rendered: Rendered { size: 0, hash: 0 },
        score: None,
    };
    let file_size = bytes.len() as u64;
    Ok(Decoded {
        entry,
        rgb,
        alpha,
        file_size,
    })
}

/// Limits for decoding untrusted images: sizes beyond the video path are refused early.
pub fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(album::MAX_SIDE);
    limits.max_image_height = Some(album::MAX_SIDE);
    limits.max_alloc = Some(2 << 30);
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gops_are_coded_side_by_side_on_canvases_up_to_1080p() {
        let hd = 1920 * 1088 * 3;
        assert_eq!(session_threads(2, hd), (2, 1));
        assert_eq!(session_threads(8, 640 * 480 * 3), (4, 1));
        // 12 MP: one session at a time, with every thread.
        assert_eq!(session_threads(2, 4000 * 3008 * 3), (1, 2));
        assert_eq!(session_threads(1, hd), (1, 1));
        assert_eq!(session_threads(0, hd), (1, 1));
    }

    /// A budget nothing has been measured for yet.
    fn budget(overhead: u64, raw: u64, jpeg: u64, png: u64) -> Budget {
        Budget {
            overhead,
            raw,
            jpeg,
            jpeg_floor: LEPTON_FLOOR,
            png,
            exact: None,
            drafts: None,
        }
    }

    #[test]
    fn lepton_is_measured_only_when_it_decides() {
        // 1,000 bytes of files, 800 of them JPEG, 50 of metadata beside the frames.
        let mut b = budget(50, 1000, 800, 0);
        let never = |_: Measure| -> u64 { panic!("measured although the sizes decide") };
        // Frames plus overhead at least the files' own size: keep the files.
        assert_eq!(b.beats(950, never), Some(1000));
        // Below 200 + 3/5 of 800 = 680: coding wins whatever Lepton gives.
        assert_eq!(b.beats(629, never), None);
        assert_eq!(b.exact, None);
        // In between, the Lepton size decides, measured once and remembered.
        assert_eq!(b.beats(700, |_| 760), None);
        assert_eq!(b.exact, Some(760));
        assert_eq!(b.beats(710, never), Some(760));
        // No JPEG: the files' own size is exact.
        let mut png = budget(0, 1000, 0, 0);
        assert_eq!(png.beats(999, never), None);
        assert_eq!(png.beats(1000, never), Some(1000));
        // PNG files: any coding below their own size is measured against their recoded size.
        let mut png = budget(0, 1000, 0, 1000);
        assert_eq!(png.beats(1000, never), Some(1000));
        let sizes = |m: Measure| match m {
            Measure::Drafts => 300,
            Measure::Exact => 300,
        };
        assert_eq!(png.beats(400, sizes), Some(300));
        assert_eq!(png.beats(200, never), None);
        // Coding below the PNGs' drafts wins without the zlib settings search; above them the
        // recoded size (the drafts settled, or the files where no setting is found) decides.
        let mut png = budget(0, 1000, 0, 1000);
        let drafts_only = |m: Measure| match m {
            Measure::Drafts => 300,
            Measure::Exact => panic!("searched although the drafts decide"),
        };
        assert_eq!(png.beats(250, drafts_only), None);
        assert_eq!(png.drafts, Some(300));
        assert_eq!(png.beats(280, never), None);
        let settled = |m: Measure| match m {
            Measure::Drafts => panic!("drafts made twice"),
            Measure::Exact => 1000,
        };
        assert_eq!(png.beats(350, settled), None);
        assert_eq!(png.exact, Some(1000));
    }
}
