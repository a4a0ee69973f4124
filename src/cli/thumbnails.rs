use super::{exit, usage, Global};
use crate::archive::Archive;
use crate::thumbs::{self, ThumbOptions};
use anyhow::{bail, Context};
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// 128 px (thumbnails/normal)
    Normal,
    /// 256 px (thumbnails/large)
    Large,
    /// 512 px (thumbnails/x-large)
    XLarge,
}

/// Fill the desktop's thumbnail cache for a mounted or unpacked archive, so that file managers
/// show its images without reading every file.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Writes a thumbnail of every image of the archive into the freedesktop.org \
thumbnail cache ($XDG_CACHE_HOME/thumbnails, else ~/.cache/thumbnails), keyed by the URI the \
file has in FOLDER (where the archive is mounted or was unpacked) and marked with its \
modification time, as GNOME Files, Thunar (tumbler), Dolphin and others expect. A file manager \
opening the folder then finds every thumbnail ready instead of reading and decoding each file \
through the mount. Coded images are thumbnailed straight from their decoded frames.",
    after_help = "Examples:\n  av1pack mount trip.mkv ~/trip && av1pack thumbnails trip.mkv ~/trip\n  \
av1pack thumbnails --size large trip.mkv restored/"
)]
pub struct Args {
    pub archive: PathBuf,
    /// Where the archive's files appear: its mount point, or the folder it was unpacked to.
    pub folder: PathBuf,
    /// Thumbnail sizes to write (repeat or comma-separate; default normal and large).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["normal", "large"])]
    pub size: Vec<Size>,
    /// The thumbnail cache folder (default $XDG_CACHE_HOME/thumbnails or ~/.cache/thumbnails).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Decoding and scaling threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

pub fn run(a: Args, g: Global) -> anyhow::Result<u8> {
    if a.threads == 0 || a.threads > 64 {
        usage!("--threads {}: must be between 1 and 64", a.threads);
    }
    let archive = Archive::open(&a.archive)?;
    let folder = a
        .folder
        .canonicalize()
        .with_context(|| format!("{}: not a folder", a.folder.display()))?;
    if !folder.is_dir() {
        bail!("{}: not a folder", a.folder.display());
    }
    let Some(cache) = a.cache_dir.or_else(thumbs::default_cache) else {
        bail!("no thumbnail cache: neither XDG_CACHE_HOME nor HOME is set (use --cache-dir)");
    };
    let mut sizes = Vec::new();
    for s in &a.size {
        let size = match s {
            Size::Normal => thumbs::NORMAL,
            Size::Large => thumbs::LARGE,
            Size::XLarge => thumbs::X_LARGE,
        };
        if !sizes.contains(&size) {
            sizes.push(size);
        }
    }
    let opts = ThumbOptions {
        folder,
        cache: cache.clone(),
        sizes,
        threads: a.threads,
    };
    let report = thumbs::write_thumbnails(&archive, &opts)
        .with_context(|| format!("could not make thumbnails for {}", a.archive.display()))?;
    for (path, why) in &report.failed {
        eprintln!("av1pack: no thumbnail for {path}: {why}");
    }
    if !g.quiet {
        eprintln!(
            "av1pack: {} thumbnails of {} images written to {}",
            report.written,
            report.images,
            cache.display()
        );
    }
    Ok(if report.failed.is_empty() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}
