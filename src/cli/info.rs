use super::{exit, Global};
use crate::archive::{Archive, BlobCoding, EntryKind, Index};
use crate::human_bytes;
use std::path::PathBuf;

/// Show an archive's settings, counts and sizes.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  av1pack info trip.mkv\n  av1pack info --json trip.mkv | jq .ratio"
)]
pub struct Args {
    pub archive: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Info<'a> {
    archive: String,
    archive_bytes: u64,
    tool_version: &'a str,
    renderer: &'a str,
    settings: &'a crate::archive::Settings,
    tracks: Vec<(u32, u32, usize)>,
    entries: usize,
    images: usize,
    verbatim: usize,
    /// Files kept as they are, by how their bytes are stored.
    verbatim_lepton: usize,
    verbatim_zstd: usize,
    /// JPEG files recoded in their own DCT (`crate::jpegthin`), Lepton-compressed.
    verbatim_thinned: usize,
    /// Of those, files stored as their difference from an earlier one (format version 13).
    thinned_against_another: usize,
    /// Their lowest SSIMULACRA2 against the originals, measured at pack time.
    thinned_score_min: Option<f32>,
    /// PNG files with their image data recoded (`pngz`).
    verbatim_png: usize,
    /// Groups the recoded PNGs are compressed in (format version 7; 0 before).
    png_groups: usize,
    /// Files stored once with an earlier file of the same bytes (sharing its frames or bytes).
    copies: usize,
    /// Of those, names of an earlier file (hard links; format version 12).
    hard_links: usize,
    dirs: usize,
    symlinks: usize,
    original_bytes: u64,
    restored_bytes: u64,
    ratio: f64,
    /// SSIMULACRA2 measured at pack time over the images coded as video.
    pack_score_min: Option<f32>,
    pack_score_mean: Option<f32>,
    /// Tracks (1-based) that hold alpha planes, coded losslessly.
    alpha_tracks: Vec<usize>,
    /// Share of coded pixels that are canvas padding (0 without frames).
    padding: f64,
}

pub fn run(a: Args, _g: Global) -> anyhow::Result<u8> {
    let archive = Archive::open(&a.archive)?;
    let idx = &archive.index;
    let count = |f: fn(&EntryKind) -> bool| idx.entries.iter().filter(|e| f(&e.kind)).count();
    let original: u64 = idx.entries.iter().map(|e| e.original_size()).sum();
    let scores: Vec<f32> = idx
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Image(img) => img.score,
            _ => None,
        })
        .collect();
    let alpha_tracks: std::collections::BTreeSet<usize> = idx
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Image(img) => Some(img.alpha.iter().map(|t| t.track as usize)),
            _ => None,
        })
        .flatten()
        .collect();
    let canvas_pixels: u64 = idx
        .tracks
        .iter()
        .map(|t| u64::from(t.width) * u64::from(t.height) * t.packets.len() as u64)
        .sum();
    // Copies share their original's stored bytes or frames.
    let mut storage = std::collections::HashSet::new();
    let is_copy: Vec<bool> = idx
        .entries
        .iter()
        .map(|e| match &e.kind {
            // Recoded PNGs of one group share its stored bytes, each at its own place.
            EntryKind::Verbatim { blob, .. } => {
                let at = match blob.coding {
                    BlobCoding::PngGrouped { at, .. } => at + 1,
                    _ => 0,
                };
                !storage.insert((u32::MAX, blob.offset, at))
            }
            EntryKind::Image(img) => img.tiles.first().is_some_and(|t| {
                !storage.insert((t.track, t.frame, u64::from(t.x) << 32 | u64::from(t.y)))
            }),
            _ => false,
        })
        .collect();
    let copies = is_copy.iter().filter(|&&c| c).count();
    // Pixels of the images (colour tiles and alpha planes) in the coded frames, each frame
    // counted once (a copy codes none).
    let image_pixels: u64 = idx
        .entries
        .iter()
        .zip(&is_copy)
        .filter_map(|(e, &copy)| match &e.kind {
            EntryKind::Image(img) if !copy => Some(
                img.tiles
                    .iter()
                    .chain(&img.alpha)
                    .map(|t| u64::from(t.width) * u64::from(t.height))
                    .sum::<u64>(),
            ),
            _ => None,
        })
        .sum();
    let coding = |c: fn(&BlobCoding) -> bool| count_kept(idx, c);
    let info = Info {
        archive: a.archive.display().to_string(),
        archive_bytes: archive.file_len(),
        tool_version: &idx.tool_version,
        renderer: &idx.renderer,
        settings: &idx.settings,
        tracks: idx
            .tracks
            .iter()
            .map(|t| (t.width, t.height, t.packets.len()))
            .collect(),
        alpha_tracks: alpha_tracks.iter().map(|t| t + 1).collect(),
        entries: idx.entries.len(),
        images: count(|k| matches!(k, EntryKind::Image(_))),
        verbatim: count(|k| matches!(k, EntryKind::Verbatim { .. })),
        verbatim_lepton: coding(|c| matches!(c, BlobCoding::Lepton { .. })),
        verbatim_zstd: coding(|c| matches!(c, BlobCoding::Zstd { .. })),
        verbatim_thinned: coding(|c| {
            matches!(
                c,
                BlobCoding::JpegThinned { .. } | BlobCoding::JpegThinnedDelta { .. }
            )
        }),
        thinned_against_another: coding(|c| matches!(c, BlobCoding::JpegThinnedDelta { .. })),
        thinned_score_min: idx
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Verbatim { blob, .. } => blob.thinned_score(),
                _ => None,
            })
            .reduce(f32::min),
        verbatim_png: coding(|c| {
            matches!(c, BlobCoding::Png { .. } | BlobCoding::PngGrouped { .. })
        }),
        png_groups: idx
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Verbatim { blob, .. }
                    if matches!(blob.coding, BlobCoding::PngGrouped { .. }) =>
                {
                    Some(blob.offset)
                }
                _ => None,
            })
            .collect::<std::collections::HashSet<_>>()
            .len(),
        copies,
        hard_links: idx.links.len(),
        dirs: count(|k| matches!(k, EntryKind::Dir)),
        symlinks: count(|k| matches!(k, EntryKind::Symlink { .. })),
        original_bytes: original,
        restored_bytes: idx.entries.iter().map(|e| e.served_size()).sum(),
        ratio: archive.file_len() as f64 / original.max(1) as f64,
        pack_score_min: scores.iter().copied().reduce(f32::min),
        pack_score_mean: (!scores.is_empty())
            .then(|| scores.iter().sum::<f32>() / scores.len() as f32),
        padding: if canvas_pixels == 0 {
            0.0
        } else {
            1.0 - image_pixels as f64 / canvas_pixels as f64
        },
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(exit::OK);
    }
    let s = info.settings;
    println!(
        "archive:    {} ({})",
        info.archive,
        human_bytes(info.archive_bytes)
    );
    println!("written by: av1pack {}", info.tool_version);
    println!(
        "coding:     {} preset {} {} gop {} at a nominal {} fps, {}",
        s.codec,
        s.preset,
        match (s.qp, s.crf) {
            (Some(qp), _) => format!("qp {qp}"),
            (None, Some(crf)) => format!("crf {crf}"),
            _ => String::from("default rate control"),
        },
        s.gop,
        s.frame_rate,
        s.pix_fmt
    );
    let frames: usize = info.tracks.iter().map(|t| t.2).sum();
    println!("tracks:     {} ({} frames)", info.tracks.len(), frames);
    for (i, (w, h, n)) in info.tracks.iter().enumerate() {
        let alpha = if info.alpha_tracks.contains(&(i + 1)) {
            ", alpha planes (lossless)"
        } else {
            ""
        };
        println!("  track {:<3} {w}x{h}, {n} frames{alpha}", i + 1);
    }
    println!(
        "entries:    {} ({} images as video, {} files kept as is, {} folders, {} symlinks)",
        info.entries, info.images, info.verbatim, info.dirs, info.symlinks
    );
    if info.verbatim > 0 {
        println!(
            "kept files: {} Lepton-compressed JPEGs{}, {} PNGs with their pixels LZMA-recoded{}, {} zstd-compressed, {} as they are",
            info.verbatim_lepton,
            match (info.verbatim_thinned, info.thinned_score_min) {
                (0, _) | (_, None) => String::new(),
                (n, Some(min)) => format!(
                    ", {n} JPEGs recoded smaller in their own DCT (SSIMULACRA2 min {min:.2}), Lepton-compressed{}",
                    match info.thinned_against_another {
                        0 => String::new(),
                        k => format!(" ({k} as their difference from a similar one)"),
                    }
                ),
            },
            info.verbatim_png,
            match info.png_groups {
                0 => String::new(),
                1 => " (in 1 group)".into(),
                n => format!(" (in {n} groups)"),
            },
            info.verbatim_zstd,
            info.verbatim
                - info.verbatim_lepton
                - info.verbatim_thinned
                - info.verbatim_png
                - info.verbatim_zstd
        );
    }
    if info.copies > 0 {
        let links = match info.hard_links {
            0 => String::new(),
            n => format!(" ({n} of them hard links, linked again by unpack)"),
        };
        println!(
            "copies:     {} files stored once with an earlier file of the same bytes{links}",
            info.copies
        );
    }
    println!("originals:  {}", human_bytes(info.original_bytes));
    println!(
        "restored:   {} (what unpack and the mount give back)",
        human_bytes(info.restored_bytes)
    );
    println!("ratio:      {:.3}× the originals", info.ratio);
    if let (Some(min), Some(mean)) = (info.pack_score_min, info.pack_score_mean) {
        println!("quality:    SSIMULACRA2 at pack time: min {min:.2}, mean {mean:.2} (verify re-measures)");
    }
    if canvas_pixels_nonzero(&info) {
        println!(
            "padding:    {:.1}% of the coded pixels",
            info.padding * 100.0
        );
    }
    Ok(exit::OK)
}

fn canvas_pixels_nonzero(info: &Info<'_>) -> bool {
    info.tracks.iter().any(|t| t.2 > 0)
}

/// Files kept as they are whose bytes are stored as `coding` says.
fn count_kept(idx: &Index, coding: fn(&BlobCoding) -> bool) -> usize {
    idx.entries
        .iter()
        .filter(|e| matches!(&e.kind, EntryKind::Verbatim { blob, .. } if coding(&blob.coding)))
        .count()
}
