use super::{exit, progress::Bar, usage, Global};
use crate::human_bytes;
use crate::media::Codec;
use crate::order::Order;
use crate::pack::{self, PackOptions};
use anyhow::Context;
use std::path::PathBuf;

const PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecArg {
    /// H.264 High 4:4:4 (libx264): the default; plays in every FFmpeg-based player.
    H264,
    /// HEVC Main 4:4:4 (libx265).
    Hevc,
    /// AV1 High profile, 4:4:4 (libaom).
    Av1,
    /// H.264 on an NVIDIA GPU (h264_nvenc); falls back to h264 without one.
    H264Nvenc,
    /// HEVC on an NVIDIA GPU (hevc_nvenc); falls back to hevc without one.
    HevcNvenc,
}

impl CodecArg {
    fn codec(self) -> Codec {
        match self {
            CodecArg::H264 => Codec::H264,
            CodecArg::Hevc => Codec::Hevc,
            CodecArg::Av1 => Codec::Av1,
            CodecArg::H264Nvenc => Codec::H264Nvenc,
            CodecArg::HevcNvenc => Codec::HevcNvenc,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Quality {
    /// Every image scores at least 90 (indistinguishable from the original at 1:1).
    VisuallyLossless,
    /// Every image scores at least 80 (very high quality, smaller archives).
    High,
    /// Every image comes back pixel for pixel (RGB coded as it is at QP 0); JPEG files, which
    /// no re-encoding gives back exactly, are kept as they are.
    Lossless,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum FrameOrder {
    /// By similarity where that is predicted to pay (the similarity tour clearly shorter than
    /// path order), else path order; decided per track.
    Auto,
    /// Path order, keyframes every --gop frames.
    Path,
    /// Similar images next to each other, with a keyframe where the content changes.
    Similar,
}

/// Pack a folder into an archive.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  av1pack pack ~/Pictures/trip trip.mkv\n  av1pack pack --codec hevc ~/Pictures/trip trip.mkv\n  av1pack pack --gop 16 --preset slow scans/ scans.mkv"
)]
pub struct Args {
    /// The album folder to pack (read only; never changed).
    pub album: PathBuf,
    /// The archive to write (.mkv).
    pub archive: PathBuf,
    /// Replace the archive if it exists.
    #[arg(long)]
    pub force: bool,
    /// Quality every image must reach, measured at pack time (SSIMULACRA2 against the
    /// original): each group of frames is coded again at higher quality until it does.
    #[arg(long, value_enum, default_value = "visually-lossless")]
    pub quality: Quality,
    /// Video codec of the images. An encoder this machine's FFmpeg cannot open is replaced,
    /// with a warning: a GPU one by the software encoder of the same format, any other by
    /// h264. Alpha planes are always h264 (lossless).
    #[arg(long, value_enum, default_value = "h264")]
    pub codec: CodecArg,
    /// Expert: code once at this constant rate factor (the codec's own scale: 0-51 for
    /// h264/hevc, 0-63 for av1), without the quality check.
    #[arg(long, conflicts_with = "qp")]
    pub crf: Option<f32>,
    /// Expert: code once at this constant quantiser (0 = lossless YCbCr), without the check.
    #[arg(long)]
    pub qp: Option<u32>,
    /// Maximum frames between keyframes: smaller reads faster in the mount, larger packs smaller.
    #[arg(long, default_value_t = pack::DEFAULT_GOP)]
    pub gop: u32,
    /// Encoder preset (speed against size), x264's names; for av1 mapped to libaom's
    /// cpu-used (medium = 4), for the NVIDIA encoders to p1-p7.
    #[arg(long, default_value = "medium")]
    pub preset: String,
    /// Extra encoder options for experts, as key=value:key=value: x264-params for h264,
    /// x265-params for hevc, aom-params for av1 (e.g. "aq-mode=3:deblock=-1,-1"). The encoder
    /// ignores keys it does not know, with a warning shown by -vvv.
    #[arg(long, alias = "x264-params", default_value = "")]
    pub encoder_params: String,
    /// Encoder threads: canvases up to 1080p code this many GOPs side by side with one thread
    /// each (a track's last GOPs with all of them), larger ones one GOP at a time with all of
    /// them. The archive's bytes depend on it, not on the machine.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// How long a video player shows each image when the archive plays as a slideshow
    /// (container timestamps only; the coding does not depend on it).
    #[arg(long, value_name = "SECONDS", default_value_t = pack::DEFAULT_SLIDE_MS as f64 / 1000.0)]
    pub slide_seconds: f64,
    /// Order of the frames in each track: similar images next to each other predict each
    /// other (the index maps every frame back to its file, whatever the order).
    #[arg(long, value_enum, default_value = "auto")]
    pub order: FrameOrder,
    /// Keep JPEG files bit for bit (Lepton-compressed). By default a JPEG that is not coded as
    /// video is recoded in its own DCT where that keeps the quality target and is smaller
    /// (some fine detail of magnitude 1 dropped; EXIF, ICC and every other marker kept).
    #[arg(long)]
    pub exact_jpegs: bool,
}

/// Ctrl-C, SIGTERM and SIGHUP remove the partial archive: nothing of the interrupted pack is
/// left.
fn remove_partial_on_signal() -> anyhow::Result<()> {
    super::on_interrupt(|| {
        for path in crate::partial::remove_all() {
            eprintln!(
                "\nav1pack: interrupted: removed the partial archive {}",
                path.display()
            );
        }
    })
}

pub fn run(a: Args, g: Global) -> anyhow::Result<u8> {
    super::tune_allocator_for_batch_work();
    if !PRESETS.contains(&a.preset.as_str()) {
        usage!(
            "--preset {}: not an x264 preset (one of {})",
            a.preset,
            PRESETS.join(", ")
        );
    }
    if let Some(bad) = a
        .encoder_params
        .split(':')
        .find(|kv| !kv.is_empty() && kv.split_once('=').is_none_or(|(k, _)| k.is_empty()))
    {
        usage!("--encoder-params: {bad:?} is not key=value (give key=value:key=value)");
    }
    let asked = a.codec.codec();
    let (lo, hi) = asked.rate_range();
    if let Some(crf) = a.crf {
        if !(lo as f32..=hi as f32).contains(&crf) {
            usage!("--crf {crf}: must be between {lo} and {hi} for {asked}");
        }
    }
    if let Some(qp) = a.qp {
        if !(lo..=hi).contains(&qp) {
            usage!("--qp {qp}: must be between {lo} and {hi} for {asked}");
        }
    }
    if a.gop == 0 || a.gop > 1000 {
        usage!("--gop {}: must be between 1 and 1000", a.gop);
    }
    if a.threads == 0 || a.threads > 64 {
        usage!("--threads {}: must be between 1 and 64", a.threads);
    }
    let lossless = matches!(a.quality, Quality::Lossless);
    if lossless && (a.crf.is_some() || a.qp.is_some()) {
        usage!("--quality lossless sets the rate itself: leave out --crf and --qp");
    }
    if !(a.slide_seconds >= 0.001 && a.slide_seconds <= 3600.0) {
        usage!(
            "--slide-seconds {}: must be between 0.001 and 3600",
            a.slide_seconds
        );
    }
    let target = match (a.crf, a.qp, a.quality) {
        (Some(_), _, _) | (_, Some(_), _) => None,
        (None, None, Quality::VisuallyLossless) => Some(pack::VISUALLY_LOSSLESS),
        (None, None, Quality::High) => Some(pack::HIGH),
        (None, None, Quality::Lossless) => None,
    };
    let qp = if lossless { Some(0) } else { a.qp };
    let (codec, note) = asked
        .resolve()
        .with_context(|| format!("--codec {asked}: no encoder for it can be opened"))?;
    if let Some(note) = note {
        // Shown even with --quiet: the archive is not what was asked for.
        eprintln!("av1pack: warning: {note}");
    }
    // Lossless RGB is smallest with x264 (docs/BENCHMARKS.md, "Codecs": x265 +22 %, AV1 +10 %
    // on document pages), so lossless archives are H.264 whatever was asked.
    let codec = if lossless && codec != Codec::H264 {
        if !g.quiet {
            eprintln!(
                "av1pack: --quality lossless codes with h264 (the smallest lossless coding measured), not {codec}"
            );
        }
        Codec::H264
    } else {
        codec
    };
    let opts = PackOptions {
        codec,
        target,
        // Recorded in the index: the CRF given, else the first the quality loop tries.
        crf: if lossless {
            None
        } else {
            a.crf
                .or_else(|| target.and_then(|t| t.ladder(codec).first().copied()))
                .or(Some(pack::DEFAULT_CRF))
        },
        qp,
        gop: a.gop,
        preset: a.preset,
        threads: a.threads,
        force: a.force,
        extra_params: a.encoder_params,
        lossless,
        exact_jpegs: a.exact_jpegs,
        slide_ms: (a.slide_seconds * 1000.0).round() as u64,
        order: match a.order {
            FrameOrder::Auto => Order::Auto,
            FrameOrder::Path => Order::Path,
            FrameOrder::Similar => Order::Similar,
        },
        ..PackOptions::default()
    };
    remove_partial_on_signal()?;
    let bar = Bar::new("packing", g.quiet);
    let result = pack::pack(&a.album, &a.archive, &opts, &bar);
    bar.finish();
    let report = result.with_context(|| {
        format!(
            "could not pack {} into {}",
            a.album.display(),
            a.archive.display()
        )
    })?;
    for path in &report.removed_partials {
        eprintln!(
            "av1pack: removed {}, a partial archive left by an interrupted pack",
            path.display()
        );
    }
    if !g.quiet {
        let mut smaller = 0;
        for (path, reason) in &report.verbatim {
            if reason.starts_with(pack::SMALLER_AS_IS) {
                smaller += 1;
            } else {
                eprintln!("av1pack: kept as is: {path} ({reason})");
            }
        }
        if smaller > 0 {
            eprintln!(
                "av1pack: {} kept as {}: smaller than coded at this quality",
                count(smaller, "image"),
                if smaller == 1 {
                    "its original file"
                } else {
                    "their original files"
                }
            );
        }
        if report.thinned > 0 {
            eprintln!(
                "av1pack: {} recoded smaller in {} own DCT, each at the quality target (--exact-jpegs keeps JPEGs bit for bit)",
                count(report.thinned, "JPEG"),
                if report.thinned == 1 { "its" } else { "their" }
            );
        }
        if report.copies > 0 {
            eprintln!(
                "av1pack: {} (the same bytes): each content stored once",
                if report.copies == 1 {
                    "1 file is a copy of another".to_string()
                } else {
                    format!("{} files are copies of others", report.copies)
                }
            );
        }
        if !report.skipped.is_empty() {
            eprintln!(
                "av1pack: not packed: {} (not a regular file, folder or symlink: named above)",
                count(report.skipped.len(), "item")
            );
        }
        let ratio = report.archive_bytes as f64 / report.original_bytes.max(1) as f64;
        eprintln!(
            "av1pack: packed {} ({} as video in {}, {}{} kept as is), {}, {}: {} → {} ({:.2}× the originals)",
            count(report.files, "file"),
            count(report.images, "image"),
            count(report.tracks, "track"),
            if report.thinned > 0 {
                format!("{} JPEGs recoded, ", report.thinned)
            } else {
                String::new()
            },
            report.verbatim.len(),
            count(report.dirs, "folder"),
            count(report.symlinks, "symlink"),
            human_bytes(report.original_bytes),
            human_bytes(report.archive_bytes),
            ratio
        );
    }
    Ok(exit::OK)
}

/// "1 file", "2 files".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
