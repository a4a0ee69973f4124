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
use crate::{meta, pixels};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
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
    fn note(&self, _message: &str) {}
}

/// No progress reporting.
pub struct Quiet;
impl Progress for Quiet {}

struct TrackPlan {
    width: u32,
    height: u32,
    /// Indices into the walked items.
    items: Vec<usize>,
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
    let mut placement: HashMap<usize, (usize, bool)> = HashMap::new();
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
            plans[t].items.push(i);
            placement.insert(i, (t, rotated));
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
        let results = encode_track(
            t,
            plan,
            &items,
            &probes,
            &placement,
            opts,
            &mut writer,
            progress,
        )?;
        for (i, outcome) in results {
            kinds[i] = Some(match outcome {
                Outcome::Image(img) => EntryKind::Image(img),
                Outcome::Failed(reason) => {
                    let item = &items[i];
                    log::warn!("{}: stored as is: {reason}", item.abs.display());
                    progress.note(&format!("{}: stored as is: {reason}", item.abs.display()));
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
    let io_dest = |error| PackError::Io {
        path: dest.to_owned(),
        error,
    };
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
    Failed(String),
}

/// An image read and placed on its canvas, ready to encode.
struct Loaded {
    item: usize,
    result: Result<(Box<ImageEntry>, Vec<u8>), String>,
}

enum ToRenderer {
    Frame {
        frame: u64,
        item: usize,
        entry: Box<ImageEntry>,
    },
    Packet {
        data: Vec<u8>,
        pts: i64,
        dts: i64,
        key: bool,
    },
}

#[allow(clippy::too_many_arguments)]
fn encode_track(
    t: usize,
    plan: &TrackPlan,
    items: &[Item],
    probes: &[Option<Probe>],
    placement: &HashMap<usize, (usize, bool)>,
    opts: &PackOptions,
    writer: &mut ArchiveWriter,
    progress: &dyn Progress,
) -> Result<Vec<(usize, Outcome)>, PackError> {
    let frame_bytes = u64::from(plan.width) * u64::from(plan.height) * 3;
    let lookahead = (LOOKAHEAD_BUDGET / frame_bytes.max(1)).clamp(1, 40) as u32;
    let cfg = EncoderConfig {
        codec: opts.codec.clone(),
        width: plan.width,
        height: plan.height,
        preset: opts.preset.clone(),
        crf: opts.crf,
        qp: opts.qp,
        gop: opts.gop,
        frame_rate: opts.frame_rate,
        threads: opts.threads,
        lookahead,
        extra_params: if opts.extra_params.is_empty() {
            BASE_X264_PARAMS.to_string()
        } else {
            format!("{BASE_X264_PARAMS}:{}", opts.extra_params)
        },
    };
    let track_name = format!("track {} ({}x{})", t + 1, plan.width, plan.height);
    let media_err = |error| PackError::Media {
        path: track_name.clone(),
        error,
    };
    let mut encoder = VideoEncoder::new(&cfg).map_err(media_err)?;
    let extradata = encoder.extradata();
    writer.set_extradata(t, extradata.clone())?;
    let codec_id = media::matroska_codec_id(&opts.codec).to_string();

    let jobs: Vec<(usize, Item, Probe, bool)> = plan
        .items
        .iter()
        .filter_map(|&i| {
            let probe = probes[i].clone()?;
            let rotated = placement.get(&i).map(|p| p.1)?;
            Some((i, items[i].clone(), probe, rotated))
        })
        .collect();
    let (cw, ch) = (plan.width, plan.height);

    thread::scope(|s| -> Result<Vec<(usize, Outcome)>, PackError> {
        let (load_tx, load_rx) = mpsc::sync_channel::<Loaded>(2);
        let loader = s.spawn(move || {
            for (i, item, probe, rotated) in jobs {
                let result = load(&item, &probe, t, rotated, cw, ch);
                if load_tx.send(Loaded { item: i, result }).is_err() {
                    break;
                }
            }
        });
        let (render_tx, render_rx) = mpsc::sync_channel::<ToRenderer>(64);
        let renderer = s.spawn(move || renderer_loop(&codec_id, &extradata, cw, ch, render_rx));

        let mut outcomes = Vec::new();
        let mut frame: u64 = 0;
        let mut failure = None;
        for loaded in load_rx {
            let item = &items[loaded.item];
            let bytes = match item.found {
                Found::File { size } => size,
                _ => 0,
            };
            match loaded.result {
                Err(reason) => outcomes.push((loaded.item, Outcome::Failed(reason))),
                Ok((mut entry, canvas)) => {
                    if let Some(tile) = entry.tiles.first_mut() {
                        tile.frame = frame;
                    }
                    let sent = render_tx.send(ToRenderer::Frame {
                        frame,
                        item: loaded.item,
                        entry,
                    });
                    frame += 1;
                    let packets = match encoder.encode(&canvas) {
                        Ok(p) => p,
                        Err(e) => {
                            failure = Some(media_err(e));
                            break;
                        }
                    };
                    if let Err(e) = forward(writer, &render_tx, t, packets)
                        .and(sent.map_err(|_| PackError::Pipeline("renderer stopped".into())))
                    {
                        failure = Some(e);
                        break;
                    }
                }
            }
            progress.file_done(&String::from_utf8_lossy(&item.rel), bytes);
        }
        if failure.is_none() {
            match encoder.finish() {
                Ok(packets) => {
                    if let Err(e) = forward(writer, &render_tx, t, packets) {
                        failure = Some(e);
                    }
                }
                Err(e) => failure = Some(media_err(e)),
            }
        }
        drop(render_tx);
        let rendered = renderer
            .join()
            .map_err(|_| PackError::Pipeline("renderer thread panicked".into()))?;
        loader
            .join()
            .map_err(|_| PackError::Pipeline("loader thread panicked".into()))?;
        if let Some(e) = failure {
            return Err(e);
        }
        let rendered = rendered?;
        if rendered.len() as u64 != frame {
            return Err(PackError::Pipeline(format!(
                "{track_name}: {} frames encoded but {} decoded back",
                frame,
                rendered.len()
            )));
        }
        outcomes.extend(rendered.into_iter().map(|(i, e)| (i, Outcome::Image(e))));
        Ok(outcomes)
    })
}

fn forward(
    writer: &mut ArchiveWriter,
    render_tx: &SyncSender<ToRenderer>,
    t: usize,
    packets: Vec<media::EncodedPacket>,
) -> Result<(), PackError> {
    for p in packets {
        let pts = u64::try_from(p.pts)
            .map_err(|_| PackError::Pipeline(format!("negative pts {}", p.pts)))?;
        writer.write_packet(t, &p.data, pts, p.dts, p.keyframe)?;
        render_tx
            .send(ToRenderer::Packet {
                data: p.data,
                pts: p.pts,
                dts: p.dts,
                key: p.keyframe,
            })
            .map_err(|_| PackError::Pipeline("renderer stopped".into()))?;
    }
    Ok(())
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
    let rgb = match color {
        ColorModel::Grey => image::DynamicImage::ImageLuma8(decoded.to_luma8()).to_rgb8(),
        ColorModel::Rgb => decoded.to_rgb8(),
    };
    drop(decoded);
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

/// Decodes the packets just written and renders each image, recording its size and hash.
fn renderer_loop(
    codec_id: &str,
    extradata: &[u8],
    cw: u32,
    ch: u32,
    rx: Receiver<ToRenderer>,
) -> Result<Vec<(usize, Box<ImageEntry>)>, PackError> {
    let media_err = |error| PackError::Media {
        path: "decoding back".into(),
        error,
    };
    let mut decoder = VideoDecoder::new(codec_id, extradata, 1).map_err(media_err)?;
    let mut pending: HashMap<u64, (usize, Box<ImageEntry>)> = HashMap::new();
    let mut done = Vec::new();
    let mut drain = |decoder: &mut VideoDecoder,
                     pending: &mut HashMap<u64, (usize, Box<ImageEntry>)>|
     -> Result<(), PackError> {
        while let Some(f) = decoder.receive().map_err(media_err)? {
            let pts = f.pts as u64;
            let Some((item, mut entry)) = pending.remove(&pts) else {
                return Err(PackError::Pipeline(format!(
                    "decoded frame {pts} belongs to no image"
                )));
            };
            if (f.width, f.height) != (cw, ch) {
                return Err(PackError::Pipeline(format!(
                    "decoded frame {pts} is {}x{}",
                    f.width, f.height
                )));
            }
            let tile = entry.tiles[0];
            let rgb = pixels::extract(&f.rgb, cw, ch, tile.width, tile.height, tile.rotated)
                .ok_or_else(|| PackError::Pipeline("tile outside canvas".into()))?;
            let file = render::render(&entry, &rgb, OutputFormat::Original).map_err(|error| {
                PackError::Render {
                    path: format!("frame {pts}"),
                    error,
                }
            })?;
            entry.rendered = Rendered {
                size: file.len() as u64,
                hash: xxh3_64(&file),
            };
            done.push((item, entry));
        }
        Ok(())
    };
    for msg in rx {
        match msg {
            ToRenderer::Frame { frame, item, entry } => {
                pending.insert(frame, (item, entry));
            }
            ToRenderer::Packet {
                data,
                pts,
                dts,
                key,
            } => {
                decoder.send(&data, pts, dts, key).map_err(media_err)?;
                drain(&mut decoder, &mut pending)?;
            }
        }
    }
    decoder.send_eof().map_err(media_err)?;
    drain(&mut decoder, &mut pending)?;
    if !pending.is_empty() {
        return Err(PackError::Pipeline(format!(
            "{} frames never came out of the decoder",
            pending.len()
        )));
    }
    Ok(done)
}
