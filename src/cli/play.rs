use super::{exit, Global};
use crate::archive::{Archive, EntryKind, Index};
use anyhow::{bail, Context};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// Play the archive as a slideshow in mpv (one image per slide, chapters titled with paths).
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Plays the archive as a slideshow in mpv, if it is installed. Each video track \
(one per canvas size) becomes one playlist entry, so every coded image is shown; tracks whose \
images all share one size are cropped to it, and tracks holding only portrait images are turned \
upright. Chapters (one per image, titled with its path) jump between images: PgUp/PgDn in mpv. \
Any other player can open the archive directly; it then shows the first track only (see \
docs/FORMAT.md).",
    after_help = "Examples:\n  av1pack play trip.mkv\n  av1pack play trip.mkv -- --fullscreen --loop-playlist\n  \
av1pack play --print-command trip.mkv"
)]
pub struct Args {
    pub archive: PathBuf,
    /// Print the mpv command line (one argument per line) instead of running it.
    #[arg(long)]
    pub print_command: bool,
    /// Extra options for mpv, after `--` (e.g. `-- --fullscreen`).
    #[arg(last = true, value_name = "MPV_OPTIONS")]
    pub mpv_options: Vec<OsString>,
}

pub fn run(a: Args, _g: Global) -> anyhow::Result<u8> {
    let archive = Archive::open(&a.archive)?;
    let entries = playlist(&archive.index, &a.archive);
    if entries.is_empty() {
        bail!(
            "{}: nothing to play: no image is coded as video (all were kept as files)",
            a.archive.display()
        );
    }
    let mut args: Vec<OsString> = a.mpv_options.clone();
    args.extend(entries);
    if a.print_command {
        println!("mpv");
        for arg in &args {
            println!("{}", arg.to_string_lossy());
        }
        return Ok(exit::OK);
    }
    let Some(mpv) = find_in_path(OsStr::new("mpv")) else {
        bail!(
            "{}: mpv is not installed (Debian/Ubuntu: apt install mpv); any video player can \
open the archive, showing its first track",
            a.archive.display()
        );
    };
    let status = std::process::Command::new(&mpv)
        .args(&args)
        .status()
        .with_context(|| format!("could not start {}", mpv.display()))?;
    if !status.success() {
        bail!("{}: mpv ended with {status}", a.archive.display());
    }
    Ok(exit::OK)
}

/// mpv's per-file option groups: one playlist entry per video track, starting and ending at
/// the chapters of its images, with the crop and rotation the track's images share.
fn playlist(index: &Index, archive: &Path) -> Vec<OsString> {
    let mut order: Vec<usize> = (0..index.tracks.len()).collect();
    order.sort_by_key(|&t| index.tracks[t].number);
    let title = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut chapter = 1usize;
    for (k, &t) in order.iter().enumerate() {
        let track = &index.tracks[t];
        let mut images = 0usize;
        let mut stored: Option<Option<(u32, u32)>> = None;
        let mut all_rotated = true;
        for e in &index.entries {
            let EntryKind::Image(img) = &e.kind else {
                continue;
            };
            let Some(tile) = img.tiles.first() else {
                continue;
            };
            if tile.track as usize != t {
                continue;
            }
            images += 1;
            all_rotated &= tile.rotated;
            let size = if tile.rotated {
                (tile.height, tile.width)
            } else {
                (tile.width, tile.height)
            };
            stored = Some(match stored {
                None => Some(size),
                Some(Some(s)) if s == size => Some(s),
                _ => None,
            });
        }
        if images == 0 {
            continue;
        }
        out.push("--{".into());
        out.push(format!("--vid={}", k + 1).into());
        out.push(format!("--start=#{chapter}").into());
        if k + 1 < order.len() {
            out.push(format!("--end=#{}", chapter + images).into());
        }
        if let Some(Some((w, h))) = stored {
            if (w, h) != (track.width, track.height) {
                out.push(format!("--vf=crop={w}:{h}:0:0").into());
            }
        }
        if all_rotated {
            // Stored turned 90° clockwise: turn back.
            out.push("--video-rotate=270".into());
        }
        out.push(
            format!(
                "--force-media-title={title} (track {} of {}: {} image(s))",
                k + 1,
                order.len(),
                images
            )
            .into(),
        );
        out.push(archive.as_os_str().to_owned());
        out.push("--}".into());
        chapter += images;
    }
    out
}

fn find_in_path(name: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
