//! Packing an album folder into an archive.
//!
//! Pipeline per track (all order-preserving, bounded channels):
//! loader thread (read, hash, decode, place on canvas) → this thread (encode, write packets)
//! → renderer thread (decode what was written, render the file unpack/mount will serve,
//! record its size and hash).

use crate::album::{self, Found, Item, Probe, ScanError};
use crate::archive::writer::TrackSpec;
use crate::archive::{
    self, ArchiveWriter, ColorModel, Entry, EntryKind, ImageEntry, ImageFormat, Index, Rendered,
    Settings, Tile, Track,
};
use crate::media::{self, EncoderConfig, MediaError, VideoDecoder, VideoEncoder};
use crate::render::{self, OutputFormat, RenderError};
use crate::{meta, pixels, quality};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use xxhash_rust::xxh3::xxh3_64;

/// Settings for `pack`.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub codec: String,
    pub preset: String,
    pub crf: Option<f32>,
    pub qp: Option<u32>,
    pub gop: u32,
    pub frame_rate: u32,
    pub threads: usize,
    /// Replace an existing archive at the destination.
    pub force: bool,
    /// Extra encoder options (x264's key=value:key=value).
    pub extra_params: String,
    /// Quality every image must reach (checked at pack time); `None` codes once at `crf`/`qp`.
    pub target: Option<QualityTarget>,
    /// How long each image is shown when the archive plays as a slideshow, in milliseconds
    /// (container timestamps only: the encoder still runs at `frame_rate`).
    pub slide_ms: u64,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            codec: "libx264".into(),
            preset: "medium".into(),
            crf: Some(DEFAULT_CRF),
            qp: None,
            gop: DEFAULT_GOP,
            frame_rate: DEFAULT_FRAME_RATE,
            threads: 2,
            force: false,
            extra_params: String::new(),
            target: Some(VISUALLY_LOSSLESS),
            slide_ms: DEFAULT_SLIDE_MS,
        }
    }
}

/// Default CRF at the nominal frame rate below (chosen by measured SSIMULACRA2, see
/// docs/BENCHMARKS.md).
pub const DEFAULT_CRF: f32 = 8.0;
/// x264 options always set: the deblocking filter at its weakest, which keeps text and fine
/// edges sharp (docs/BENCHMARKS.md: +5 SSIMULACRA2 on document pages at equal size, no cost
/// on photos). `--x264-params` can override it.
pub const BASE_X264_PARAMS: &str = "deblock=-3,-3";
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
    pub original_bytes: u64,
    pub archive_bytes: u64,
    pub tracks: usize,
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
    /// Indices into the walked items, and whether each is stored turned (portrait).
    items: Vec<(usize, bool)>,
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
    if !opts.force && dest.symlink_metadata().is_ok() {
        return Err(PackError::Exists(dest.to_owned()));
    }
    let items = album::walk(src)?;
    let mut probes: Vec<Option<Probe>> = Vec::with_capacity(items.len());
    let mut report = PackReport::default();
    let mut total_bytes = 0;
    for item in &items {
        match item.found {
            Found::File { size } => {
                report.files += 1;
                total_bytes += size;
                probes.push(Some(album::probe(&item.abs)?));
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
        if let Some(Probe::Image { width, height, .. }) = p {
            let (rotated, cw, ch) = pixels::plan(*width, *height);
            let t = *by_canvas.entry((cw, ch)).or_insert_with(|| {
                plans.push(TrackPlan {
                    width: cw,
                    height: ch,
                    items: Vec::new(),
                });
                plans.len() - 1
            });
            plans[t].items.push((i, rotated));
        }
    }
    report.tracks = plans.len();

    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ))
        .suffix(".av1pack-partial")
        .tempfile_in(&parent)
        .map_err(|error| PackError::Io {
            path: parent.clone(),
            error,
        })?;
    let (tmp_file, tmp_path) = tmp.into_parts();
    let blobs = tempfile::tempfile_in(&parent).map_err(|error| PackError::Io {
        path: parent.clone(),
        error,
    })?;
    let specs = plans
        .iter()
        .map(|p| TrackSpec {
            width: p.width,
            height: p.height,
            codec_id: media::matroska_codec_id(&opts.codec).to_string(),
            frames: p.items.len() as u64,
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
    let mut kinds: Vec<Option<EntryKind>> = vec![None; items.len()];
    for (i, item) in items.iter().enumerate() {
        if let Some(Probe::Verbatim(reason)) = &probes[i] {
            log::info!("{}: stored as is: {reason}", item.abs.display());
            let blob = store_verbatim(&mut writer, item)?;
            progress.file_done(&String::from_utf8_lossy(&item.rel), blob.len);
            kinds[i] = Some(EntryKind::Verbatim {
                blob,
                reason: reason.clone(),
            });
        }
    }

    let mut tracks = Vec::with_capacity(plans.len());
    for (t, plan) in plans.iter().enumerate() {
        let results = encode_track(t, plan, &items, &probes, opts, &mut writer, progress)?;
        for (i, outcome) in results {
            kinds[i] = Some(match outcome {
                Outcome::Image(img) => EntryKind::Image(img),
                Outcome::Failed(reason) | Outcome::Smaller(reason) => {
                    let item = &items[i];
                    log::info!("{}: stored as is: {reason}", item.abs.display());
                    let blob = store_verbatim(&mut writer, item)?;
                    EntryKind::Verbatim { blob, reason }
                }
            });
        }
        tracks.push(Track {
            number: t as u32 + 1,
            codec: media::matroska_codec_id(&opts.codec).to_string(),
            width: plan.width,
            height: plan.height,
            extradata: Vec::new(),
            packets: Vec::new(),
        });
    }

    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let kind = match item.found {
            Found::Dir => EntryKind::Dir,
            Found::Symlink(target) => EntryKind::Symlink { target },
            Found::File { .. } => match kinds[i].take() {
                Some(k) => k,
                None => {
                    return Err(PackError::Pipeline(format!(
                        "{} was not packed",
                        item.abs.display()
                    )))
                }
            },
        };
        match &kind {
            EntryKind::Image(_) => report.images += 1,
            EntryKind::Verbatim { reason, .. } => report.verbatim.push((
                String::from_utf8_lossy(&item.rel).into_owned(),
                reason.clone(),
            )),
            _ => {}
        }
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
            codec: opts.codec.clone(),
            preset: opts.preset.clone(),
            crf: if opts.qp.is_some() { None } else { opts.crf },
            qp: opts.qp,
            gop: opts.gop,
            frame_rate: opts.frame_rate,
            pix_fmt: "yuvj444p".into(),
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

fn store_verbatim(writer: &mut ArchiveWriter, item: &Item) -> Result<archive::Blob, PackError> {
    let io_err = |error| PackError::Io {
        path: item.abs.clone(),
        error,
    };
    let mut f = File::open(&item.abs).map_err(io_err)?;
    let len = f.metadata().map_err(io_err)?.len();
    let name = String::from_utf8_lossy(&item.rel).into_owned();
    writer.add_blob(&name, &mut f, len).map_err(|e| match e {
        archive::WriteError::Io(error) => io_err(error),
        other => PackError::Write(other),
    })
}

enum Outcome {
    Image(Box<ImageEntry>),
    /// Could not be coded (the reason is reported).
    Failed(String),
    /// Coded fine, but the original file is smaller: kept as it is.
    Smaller(String),
}

/// An image read and placed on its canvas, ready to encode.
struct Loaded {
    item: usize,
    result: Result<(Box<ImageEntry>, Vec<u8>), String>,
}

/// Quality the pack loop must reach for every image (SSIMULACRA2 of the served file against
/// the original), or none to code once at the given CRF.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityTarget {
    pub min_score: f64,
    /// CRF values tried in turn for a GOP until every image in it reaches `min_score`.
    pub ladder: &'static [f32],
}

/// SSIMULACRA2 90: visually lossless (indistinguishable in a flicker test at 1:1).
pub const VISUALLY_LOSSLESS: QualityTarget = QualityTarget {
    min_score: 90.0,
    ladder: &[8.0, 6.0, 4.0, 2.0, 1.0],
};
/// SSIMULACRA2 80: very high quality.
pub const HIGH: QualityTarget = QualityTarget {
    min_score: 80.0,
    ladder: &[16.0, 13.0, 10.0, 7.0, 4.0],
};

/// Reason given for images kept as they are because coding them costs more.
pub const SMALLER_AS_IS: &str = "the original is smaller than its coded frames";

/// Frames held per GOP while its quality is checked: bounded in memory for large canvases.
const GOP_MEMORY: u64 = 64 << 20;

/// One image ready to code: its entry so far and its canvas.
struct Ready {
    item: usize,
    entry: Box<ImageEntry>,
    canvas: Vec<u8>,
}

#[allow(clippy::too_many_arguments)]
fn encode_track(
    t: usize,
    plan: &TrackPlan,
    items: &[Item],
    probes: &[Option<Probe>],
    opts: &PackOptions,
    writer: &mut ArchiveWriter,
    progress: &dyn Progress,
) -> Result<Vec<(usize, Outcome)>, PackError> {
    let frame_bytes = u64::from(plan.width) * u64::from(plan.height) * 3;
    let gop = (GOP_MEMORY / frame_bytes.max(1)).clamp(1, u64::from(opts.gop.max(1))) as u32;
    let track_name = format!("track {} ({}x{})", t + 1, plan.width, plan.height);
    let jobs: Vec<(usize, Item, Probe, bool)> = plan
        .items
        .iter()
        .filter_map(|&(i, rotated)| Some((i, items[i].clone(), probes[i].clone()?, rotated)))
        .collect();
    let (cw, ch) = (plan.width, plan.height);
    let mut coder = GopCoder {
        t,
        cw,
        ch,
        gop,
        opts,
        track_name: &track_name,
        extradata: None,
        next_frame: 0,
    };

    thread::scope(|s| -> Result<Vec<(usize, Outcome)>, PackError> {
        // Images loaded ahead of the encoder: two small ones, one large one.
        let ahead = if frame_bytes > (16 << 20) { 0 } else { 2 };
        let (load_tx, load_rx) = mpsc::sync_channel::<Loaded>(ahead);
        let loader = s.spawn(move || {
            for (i, item, probe, rotated) in jobs {
                let result = load(&item, &probe, t, rotated, cw, ch);
                if load_tx.send(Loaded { item: i, result }).is_err() {
                    break;
                }
            }
        });
        let mut outcomes = Vec::new();
        let mut batch: Vec<Ready> = Vec::new();
        let mut failure = None;
        for loaded in load_rx {
            let item = &items[loaded.item];
            let bytes = match item.found {
                Found::File { size } => size,
                _ => 0,
            };
            match loaded.result {
                Err(reason) => outcomes.push((loaded.item, Outcome::Failed(reason))),
                Ok((entry, canvas)) => batch.push(Ready {
                    item: loaded.item,
                    entry,
                    canvas,
                }),
            }
            if batch.len() as u32 >= gop {
                match coder.code(std::mem::take(&mut batch), writer) {
                    Ok(done) => outcomes.extend(done),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            progress.file_done(&String::from_utf8_lossy(&item.rel), bytes);
        }
        if failure.is_none() && !batch.is_empty() {
            match coder.code(batch, writer) {
                Ok(done) => outcomes.extend(done),
                Err(e) => failure = Some(e),
            }
        }
        loader
            .join()
            .map_err(|_| PackError::Pipeline("loader thread panicked".into()))?;
        match failure {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    })
}

/// Codes a track GOP by GOP. Each GOP is its own x264 session (closed, starting with an IDR,
/// with `stitchable` headers so every session's SPS/PPS are identical), decoded back at once,
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
}

enum Attempt {
    Coded(Vec<media::EncodedPacket>, Vec<Judged>),
    /// The coded GOP is at least as large as the original files.
    TooBig(u64),
    HeadersDiffer,
}

/// One image of a GOP after decoding: its served file and score.
struct Judged {
    rendered: Rendered,
    score: Option<f64>,
}

impl GopCoder<'_> {
    fn media_err(&self, error: MediaError) -> PackError {
        PackError::Media {
            path: self.track_name.to_string(),
            error,
        }
    }

    fn config(&self, crf: Option<f32>, qp: Option<u32>) -> EncoderConfig {
        let frame_bytes = u64::from(self.cw) * u64::from(self.ch) * 3;
        let lookahead = (LOOKAHEAD_BUDGET / frame_bytes.max(1)).clamp(1, 40) as u32;
        let mut params = format!("{BASE_X264_PARAMS}:stitchable=1");
        if !self.opts.extra_params.is_empty() {
            params.push(':');
            params.push_str(&self.opts.extra_params);
        }
        EncoderConfig {
            codec: self.opts.codec.clone(),
            width: self.cw,
            height: self.ch,
            preset: self.opts.preset.clone(),
            crf,
            qp,
            gop: self.gop,
            frame_rate: self.opts.frame_rate,
            threads: self.opts.threads,
            lookahead,
            extra_params: params,
        }
    }

    fn code(
        &mut self,
        batch: Vec<Ready>,
        writer: &mut ArchiveWriter,
    ) -> Result<Vec<(usize, Outcome)>, PackError> {
        // The rate settings to try, best compression first.
        let mut attempts: Vec<(Option<f32>, Option<u32>)> = Vec::new();
        match (self.opts.qp, self.opts.target) {
            (Some(qp), _) => attempts.push((None, Some(qp))),
            (None, None) => attempts.push((self.opts.crf, None)),
            (None, Some(target)) => attempts.extend(target.ladder.iter().map(|&c| (Some(c), None))),
        }
        let original: u64 = batch.iter().map(|r| r.entry.original_size).sum();
        // Metadata blocks are stored beside the frames: they count against the budget too.
        let metadata: u64 = batch
            .iter()
            .flat_map(|r| r.entry.metadata.iter())
            .map(|m| match m {
                archive::MetaBlock::JpegSegment { data, .. }
                | archive::MetaBlock::PngChunk { data, .. }
                | archive::MetaBlock::Trailer(data) => data.len() as u64 + 8,
            })
            .sum();
        let budget = original.saturating_sub(metadata);
        let mut last = None;
        let mut n = 0;
        while n < attempts.len() {
            let (crf, qp) = attempts[n];
            let final_try = n + 1 == attempts.len();
            let (packets, judged) = match self.attempt(&batch, crf, qp, budget)? {
                Attempt::Coded(p, j) => (p, j),
                Attempt::TooBig(coded) => {
                    // Higher quality only costs more: the original files are the better deal.
                    let reason = format!(
                        "{SMALLER_AS_IS} ({coded} coded bytes and {metadata} of metadata vs {original} for the group of {})",
                        batch.len()
                    );
                    log::debug!(
                        "{}: frames {}..: {reason}",
                        self.track_name,
                        self.next_frame
                    );
                    return Ok(batch
                        .into_iter()
                        .map(|r| (r.item, Outcome::Smaller(reason.clone())))
                        .collect());
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
            let target = self.opts.target.map_or(f64::NEG_INFINITY, |t| t.min_score);
            if worst >= target || final_try {
                if worst < target {
                    log::warn!(
                        "{}: frames {}..{}: best score {:.1} is below the target even at the highest quality",
                        self.track_name,
                        self.next_frame,
                        self.next_frame + batch.len() as u64,
                        worst
                    );
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
            return Ok(batch
                .into_iter()
                .map(|r| (r.item, Outcome::Failed(reason.clone())))
                .collect());
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
        self.next_frame += batch.len() as u64;
        Ok(batch
            .into_iter()
            .zip(judged)
            .enumerate()
            .map(|(k, (mut ready, j))| {
                if let Some(tile) = ready.entry.tiles.first_mut() {
                    tile.frame = base + k as u64;
                }
                ready.entry.rendered = j.rendered;
                ready.entry.score = j.score.map(|s| s as f32);
                (ready.item, Outcome::Image(ready.entry))
            })
            .collect())
    }

    /// Codes the batch once; returns its packets and each image's served file and score.
    fn attempt(
        &mut self,
        batch: &[Ready],
        crf: Option<f32>,
        qp: Option<u32>,
        budget: u64,
    ) -> Result<Attempt, PackError> {
        let mut encoder =
            VideoEncoder::new(&self.config(crf, qp)).map_err(|e| self.media_err(e))?;
        let extradata = encoder.extradata();
        match &self.extradata {
            None => self.extradata = Some(extradata.clone()),
            // All GOPs of a track must share one set of headers.
            Some(first) if *first != extradata => return Ok(Attempt::HeadersDiffer),
            Some(_) => {}
        }
        let mut packets = Vec::new();
        for r in batch {
            packets.extend(encoder.encode(&r.canvas).map_err(|e| self.media_err(e))?);
        }
        packets.extend(encoder.finish().map_err(|e| self.media_err(e))?);
        drop(encoder);
        let coded: u64 = packets.iter().map(|p| p.data.len() as u64).sum();
        if coded >= budget {
            return Ok(Attempt::TooBig(coded));
        }

        let codec_id = media::matroska_codec_id(&self.opts.codec);
        let mut decoder =
            VideoDecoder::new(codec_id, &extradata, 1).map_err(|e| self.media_err(e))?;
        let mut frames: Vec<Option<media::DecodedFrame>> = (0..batch.len()).map(|_| None).collect();
        let mut take = |decoder: &mut VideoDecoder| -> Result<(), MediaError> {
            while let Some(f) = decoder.receive()? {
                if let Some(slot) = usize::try_from(f.pts).ok().and_then(|i| frames.get_mut(i)) {
                    *slot = Some(f);
                }
            }
            Ok(())
        };
        for p in &packets {
            decoder
                .send(&p.data, p.pts, p.dts, p.keyframe)
                .map_err(|e| self.media_err(e))?;
            take(&mut decoder).map_err(|e| self.media_err(e))?;
        }
        decoder.send_eof().map_err(|e| self.media_err(e))?;
        take(&mut decoder).map_err(|e| self.media_err(e))?;
        drop(decoder);

        // Render and score each image, in parallel.
        let scoring = self.opts.target.is_some();
        let (cw, ch) = (self.cw, self.ch);
        let judge = |r: &Ready, f: &Option<media::DecodedFrame>| -> Result<Judged, PackError> {
            let f = f.as_ref().ok_or_else(|| {
                PackError::Pipeline("a frame did not come back from the decoder".into())
            })?;
            let tile = r.entry.tiles[0];
            let decoded = pixels::extract(&f.rgb, cw, ch, tile.width, tile.height, tile.rotated)
                .ok_or_else(|| PackError::Pipeline("tile outside canvas".into()))?;
            let file =
                render::render(&r.entry, &decoded, OutputFormat::Original).map_err(|error| {
                    PackError::Render {
                        path: format!("frame {}", f.pts),
                        error,
                    }
                })?;
            let score = if scoring {
                let original =
                    pixels::extract(&r.canvas, cw, ch, tile.width, tile.height, tile.rotated)
                        .ok_or_else(|| PackError::Pipeline("tile outside canvas".into()))?;
                let served = served_pixels(&r.entry, &file, decoded)?;
                Some(
                    quality::score(&original, &served)
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
            })
        };
        let workers = thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, batch.len().max(1));
        let per = batch.len().div_ceil(workers).max(1);
        let judged: Vec<Judged> = thread::scope(|s| {
            let handles: Vec<_> = batch
                .chunks(per)
                .zip(frames.chunks(per))
                .map(|(rs, fs)| {
                    let judge = &judge;
                    s.spawn(move || {
                        rs.iter()
                            .zip(fs)
                            .map(|(r, f)| judge(r, f))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            let mut all = Vec::with_capacity(batch.len());
            for h in handles {
                all.extend(
                    h.join()
                        .map_err(|_| PackError::Pipeline("scoring thread panicked".into()))??,
                );
            }
            Ok::<_, PackError>(all)
        })?;
        Ok(Attempt::Coded(packets, judged))
    }
}

/// The pixels a user gets from a served file: for lossy formats, the file decoded again.
fn served_pixels(
    entry: &ImageEntry,
    file: &[u8],
    decoded: image::RgbImage,
) -> Result<image::RgbImage, PackError> {
    match (entry.format, entry.color) {
        (ImageFormat::Jpeg, _) | (_, ColorModel::Grey) => Ok(image::load_from_memory(file)
            .map_err(|e| PackError::Pipeline(format!("rendered file does not decode: {e}")))?
            .to_rgb8()),
        _ => Ok(decoded),
    }
}

/// Reads, hashes and decodes one image, and places it on the canvas.
fn load(
    item: &Item,
    probe: &Probe,
    track: usize,
    rotated: bool,
    cw: u32,
    ch: u32,
) -> Result<(Box<ImageEntry>, Vec<u8>), String> {
    let Probe::Image {
        format,
        width,
        height,
        color,
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
        _ => Vec::new(),
    };
    let img_format = match format {
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::WebP => image::ImageFormat::WebP,
        ImageFormat::Bmp => image::ImageFormat::Bmp,
        ImageFormat::Tiff => image::ImageFormat::Tiff,
        _ => return Err("unsupported format".into()),
    };
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
    // `into_*` reuses the decoded buffer when it already has the right layout (no copy of a
    // 12 MP photo on the hot path).
    let rgb = match color {
        ColorModel::Grey => image::DynamicImage::ImageLuma8(decoded.into_luma8()).into_rgb8(),
        ColorModel::Rgb => decoded.into_rgb8(),
    };
    let canvas = pixels::place(&rgb, rotated, cw, ch);
    let entry = ImageEntry {
        format,
        color,
        width,
        height,
        original_size: bytes.len() as u64,
        original_hash: xxh3_64(&bytes),
        tiles: vec![Tile {
            track: track as u32,
            frame: 0,
            x: 0,
            y: 0,
            width,
            height,
            rotated,
        }],
        alpha: Vec::new(),
        metadata,
        rendered: Rendered { size: 0, hash: 0 },
        score: None,
    };
    Ok((Box::new(entry), canvas))
}

/// Limits for decoding untrusted images: sizes beyond the video path are refused early.
pub fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(album::MAX_SIDE);
    limits.max_image_height = Some(album::MAX_SIDE);
    limits.max_alloc = Some(2 << 30);
    limits
}
