//! What one cold read of a mounted image costs without FUSE: decoding the image's GOP from its
//! keyframe up to its frame, plus rendering the file, in process.
//!
//!     cargo build --release --examples
//!     target/release/examples/decode_cost [--repeat N] [--no-breakdown] ARCHIVE [PATH...]
//!
//! PATHs are entries of the archive as `av1pack ls` names them (default: every coded image).
//! Each sample creates a fresh `FrameSource` (empty cache, no decoder, no prefetch) and times
//! `source.file(entry)`, which is exactly what the mount does on the first read of a file.
//! With --repeat N, each image is timed N times (each with a fresh source) and its median is
//! kept. Unless --no-breakdown, the same work is also timed in two parts with the library's
//! decoder and renderer directly: decoding (with the conversion to RGB of every frame that
//! comes out) and rendering.
//!
//! Output (tab-separated, for scripts): a header line starting with `#`, one line per image
//! `ms frames_decoded decode_ms render_ms path`, then `median_ms`, `p90_ms`, `mean_ms`,
//! `median_decode_ms`, `median_render_ms` lines (median: mean of the two middle values for an
//! even count; p90: nearest rank).

use av1pack::archive::{Archive, EntryKind, ImageEntry};
use av1pack::frames::decoded_from_frame;
use av1pack::frames::source::{FrameSource, SourceOptions};
use av1pack::media::VideoDecoder;
use av1pack::render::{self, OutputFormat};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

struct Sample {
    ms: f64,
    frames: u64,
    decode_ms: Option<f64>,
    render_ms: Option<f64>,
    path: String,
}

fn usage() -> ExitCode {
    eprintln!("usage: decode_cost [--repeat N] [--no-breakdown] ARCHIVE [PATH...]");
    ExitCode::from(2)
}

/// Median of a non-empty slice (the mean of the two middle values for an even count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank quantile (q in 0..=1) of a non-empty slice.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Times `source.file(entry)` on a fresh source; returns (ms, frames decoded).
fn time_file(archive: &Arc<Archive>, entry: usize) -> Result<(f64, u64), String> {
    let source = FrameSource::new(
        Arc::clone(archive),
        SourceOptions {
            prefetch: 0,
            ..Default::default()
        },
    );
    let t = Instant::now();
    let file = source.file(entry).map_err(|e| e.to_string())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    std::hint::black_box(file.len());
    Ok((ms, source.stats().frames_decoded.load(Ordering::Relaxed)))
}

/// The same work in two parts: decode the GOP up to the image's frame, then render.
fn time_parts(archive: &Archive, img: &ImageEntry) -> Result<(f64, f64), String> {
    let tile = img.tiles.first().ok_or("image without tile")?;
    let track = archive
        .index
        .tracks
        .get(tile.track as usize)
        .ok_or("no such track")?;
    let packets = &track.packets;
    // Packets are in decode order; the GOP of the frame starts at the last keyframe before
    // the packet that carries it.
    let at = packets
        .iter()
        .position(|p| p.pts == tile.frame)
        .ok_or("frame not in its track")?;
    let start = packets[..=at].iter().rposition(|p| p.keyframe).unwrap_or(0);
    let end = packets[start + 1..]
        .iter()
        .position(|p| p.keyframe)
        .map_or(packets.len(), |i| start + 1 + i);
    let t = Instant::now();
    let mut dec =
        VideoDecoder::new(&track.codec, &track.extradata, 1).map_err(|e| e.to_string())?;
    let mut next = start;
    let mut eof = false;
    let frame = 'outer: loop {
        while let Some(f) = dec.receive().map_err(|e| e.to_string())? {
            if f.pts as u64 == tile.frame {
                break 'outer f;
            }
        }
        if next < end {
            let p = &packets[next];
            let data = archive.read_packet(p).map_err(|e| e.to_string())?;
            dec.send(&data, p.pts as i64, p.dts, p.keyframe)
                .map_err(|e| e.to_string())?;
            next += 1;
        } else if !eof {
            dec.send_eof().map_err(|e| e.to_string())?;
            eof = true;
        } else {
            return Err("frame never came out of the decoder".into());
        }
    };
    let renderer = render::Renderer::for_archive(&archive.index.renderer);
    let planes = renderer.uses_planes(img, OutputFormat::Original);
    let pixels = decoded_from_frame(img, &frame, planes).map_err(|e| e.to_string())?;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let bytes = render::render_decoded(img, &pixels, OutputFormat::Original, renderer)
        .map_err(|e| e.to_string())?;
    let render_ms = t.elapsed().as_secs_f64() * 1e3;
    std::hint::black_box(bytes.len());
    Ok((decode_ms, render_ms))
}

fn main() -> ExitCode {
    let mut repeat = 1usize;
    let mut breakdown = true;
    let mut positional = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--repeat") => match args.next().and_then(|n| n.to_str()?.parse().ok()) {
                Some(n) if n >= 1 => repeat = n,
                _ => return usage(),
            },
            Some("--no-breakdown") => breakdown = false,
            Some("-h" | "--help") => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ => positional.push(a),
        }
    }
    if positional.is_empty() {
        return usage();
    }
    let archive_path = PathBuf::from(positional.remove(0));
    let archive = match Archive::open(&archive_path) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("decode_cost: {e}");
            return ExitCode::FAILURE;
        }
    };
    let entries = &archive.index.entries;
    let wanted: Vec<usize> = if positional.is_empty() {
        (0..entries.len())
            .filter(|&i| matches!(entries[i].kind, EntryKind::Image(_)))
            .collect()
    } else {
        let mut v = Vec::new();
        for p in &positional {
            let bytes = p.as_encoded_bytes();
            let bytes = bytes.strip_prefix(b"./").unwrap_or(bytes);
            match entries.iter().position(|e| e.path == bytes) {
                Some(i) if matches!(entries[i].kind, EntryKind::Image(_)) => v.push(i),
                Some(_) => {
                    eprintln!("decode_cost: {}: not a coded image", p.to_string_lossy());
                    return ExitCode::FAILURE;
                }
                None => {
                    eprintln!("decode_cost: {}: no such entry", p.to_string_lossy());
                    return ExitCode::FAILURE;
                }
            }
        }
        v
    };
    if wanted.is_empty() {
        eprintln!("decode_cost: no coded image in {}", archive_path.display());
        return ExitCode::FAILURE;
    }

    // Warm-up (FFmpeg's one-time initialisation, first page-in of the code), not timed.
    if let Err(e) = time_file(&archive, wanted[0]) {
        eprintln!("decode_cost: {}: {e}", entries[wanted[0]].path_lossy());
        return ExitCode::FAILURE;
    }

    let mut samples = Vec::new();
    for &i in &wanted {
        let EntryKind::Image(img) = &entries[i].kind else {
            continue;
        };
        let mut times = Vec::new();
        let mut frames = 0;
        let (mut dec, mut ren) = (Vec::new(), Vec::new());
        for _ in 0..repeat {
            match time_file(&archive, i) {
                Ok((ms, n)) => {
                    times.push(ms);
                    frames = n;
                }
                Err(e) => {
                    eprintln!("decode_cost: {}: {e}", entries[i].path_lossy());
                    return ExitCode::FAILURE;
                }
            }
            if breakdown {
                match time_parts(&archive, img) {
                    Ok((d, r)) => {
                        dec.push(d);
                        ren.push(r);
                    }
                    Err(e) => {
                        eprintln!("decode_cost: {} (breakdown): {e}", entries[i].path_lossy());
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
        samples.push(Sample {
            ms: median(&mut times),
            frames,
            decode_ms: (!dec.is_empty()).then(|| median(&mut dec)),
            render_ms: (!ren.is_empty()).then(|| median(&mut ren)),
            path: entries[i].path_lossy(),
        });
    }

    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.2}"));
    println!(
        "# {} ({} images, {} run(s) each)\tms\tframes_decoded\tdecode_ms\trender_ms\tpath",
        archive_path.display(),
        samples.len(),
        repeat
    );
    for s in &samples {
        println!(
            "{:.2}\t{}\t{}\t{}\t{}",
            s.ms,
            s.frames,
            fmt(s.decode_ms),
            fmt(s.render_ms),
            s.path
        );
    }
    let mut all: Vec<f64> = samples.iter().map(|s| s.ms).collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    println!("median_ms\t{:.2}", median(&mut all));
    println!("p90_ms\t{:.2}", quantile(&mut all, 0.9));
    println!("mean_ms\t{mean:.2}");
    if breakdown {
        let mut d: Vec<f64> = samples.iter().filter_map(|s| s.decode_ms).collect();
        let mut r: Vec<f64> = samples.iter().filter_map(|s| s.render_ms).collect();
        println!("median_decode_ms\t{:.2}", median(&mut d));
        println!("median_render_ms\t{:.2}", median(&mut r));
    }
    ExitCode::SUCCESS
}
