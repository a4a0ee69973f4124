use super::{exit, progress::Bar, Global};
use crate::archive::Archive;
use crate::render::OutputFormat;
use crate::unpack::{self, UnpackOptions};
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    /// Each image in its original format (PNG stays PNG, JPEG becomes a quality-97 JPEG).
    Original,
    /// Every coded image as a lossless PNG of exactly what was decoded (files kept as they are,
    /// such as JPEGs not worth coding, come back as they are). PNG files keep their names;
    /// others get .png in place of their extension, or after their whole name where that
    /// would clash with another name (IMG_1.jpg.png).
    Png,
}

impl From<Format> for OutputFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Original => OutputFormat::Original,
            Format::Png => OutputFormat::Png,
        }
    }
}

/// Restore the folder from an archive.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  av1pack unpack trip.mkv restored/\n  av1pack unpack --format png trip.mkv pixels/"
)]
pub struct Args {
    pub archive: PathBuf,
    /// Folder to restore into (created if missing; must be empty unless --force).
    pub out: PathBuf,
    /// Write into a folder that is not empty, replacing files (and symlinks) of the same
    /// names once their replacements are complete; symlinks there are never followed.
    #[arg(long)]
    pub force: bool,
    /// Format of the restored images.
    #[arg(long, value_enum, default_value = "original")]
    pub format: Format,
}

/// Ctrl-C, SIGTERM and SIGHUP remove the files being written (under their temporary
/// names): the files already in place are complete.
fn remove_partials_on_signal() -> anyhow::Result<()> {
    super::on_interrupt(|| {
        let removed = crate::partial::remove_all().len();
        let files = if removed == 1 { "file" } else { "files" };
        eprintln!(
            "\nav1pack: interrupted: removed {removed} partly written {files}; the files in place are complete"
        );
    })
}

pub fn run(a: Args, g: Global) -> anyhow::Result<u8> {
    remove_partials_on_signal()?;
    let archive = Archive::open(&a.archive)?;
    let opts = UnpackOptions {
        format: a.format.into(),
        force: a.force,
        threads: 2,
    };
    let bar = Bar::new("unpacking", g.quiet);
    let result = unpack::unpack(&archive, &a.out, &opts, &bar);
    bar.finish();
    let report = result.with_context(|| format!("could not unpack {}", a.archive.display()))?;
    if report.rendered_differently > 0 {
        eprintln!(
            "av1pack: note: {} images came out differently from pack time (another renderer version?)",
            report.rendered_differently
        );
    }
    if !report.failed.is_empty() {
        let entries = |n: usize| {
            if n == 1 {
                "1 entry".to_string()
            } else {
                format!("{n} entries")
            }
        };
        eprintln!(
            "av1pack: {} could not be restored (named above); {} restored",
            entries(report.failed.len()),
            entries(report.restored)
        );
        return Ok(exit::INCOMPLETE);
    }
    if !g.quiet {
        eprintln!(
            "av1pack: restored {} entries into {}",
            report.restored,
            a.out.display()
        );
    }
    Ok(exit::OK)
}
