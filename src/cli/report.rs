use super::{exit, Global};
use crate::human_bytes;
use crate::report;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;

/// Sizes against the originals, zip and 7z, and the quality of every image, with a chart.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Reports what an archive saves and what its images look like: its size against \
the originals (the sizes recorded at pack time, or the folder itself with --originals, which also \
runs zip -9 and 7z -mx9 on it when they are installed, into a temporary folder), and the \
distribution of the images' SSIMULACRA2 scores measured at pack time (images kept as their \
original files count as exact). --chart draws both as an SVG or PNG chart.",
    after_help = "Examples:\n  av1pack report trip.mkv\n  \
av1pack report trip.mkv --originals ~/Pictures/trip --chart trip.svg\n  \
av1pack report --json trip.mkv | jq .quality"
)]
pub struct Args {
    pub archive: PathBuf,
    /// The original folder: measured on disk and compressed with zip -9 and 7z -mx9.
    #[arg(long, value_name = "DIR")]
    pub originals: Option<PathBuf>,
    /// Draw a chart into this file (.svg, or .png).
    #[arg(long, value_name = "FILE")]
    pub chart: Option<PathBuf>,
    /// Print JSON instead of the table (every image's score included).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, g: Global) -> anyhow::Result<u8> {
    if !g.quiet && a.originals.is_some() && !a.json {
        eprintln!("av1pack: compressing the originals with zip and 7z for comparison...");
    }
    let r = report::gather(&a.archive, a.originals.as_deref())
        .with_context(|| format!("could not report on {}", a.archive.display()))?;
    if let Some(chart) = &a.chart {
        report::chart(&r, chart)?;
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    let base = r.originals.as_ref().map_or(r.original_bytes, |o| o.bytes);
    let row = |out: &mut std::io::StdoutLock, name: &str, bytes: u64, note: &str| {
        writeln!(
            out,
            "  {name:<12} {:>12} {:>11} {:>7.3}×  {note}",
            bytes,
            human_bytes(bytes),
            bytes as f64 / base.max(1) as f64
        )
    };
    writeln!(out, "{}", report::chart_title(&r))?;
    writeln!(out, "sizes (× the originals):")?;
    match &r.originals {
        Some(o) => row(
            &mut out,
            "originals",
            o.bytes,
            &format!("{} files in {}", o.files, o.path),
        )?,
        None => row(
            &mut out,
            "originals",
            r.original_bytes,
            &format!("{} files, as recorded at pack time", r.files),
        )?,
    }
    for ar in &r.archivers {
        match (ar.bytes, ar.seconds) {
            (Some(b), Some(s)) => row(&mut out, &ar.name, b, &format!("{s:.1} s"))?,
            _ => writeln!(out, "  {:<12} not installed", ar.name)?,
        }
    }
    row(&mut out, "av1pack", r.archive_bytes, "")?;
    let q = &r.quality;
    writeln!(
        out,
        "quality (SSIMULACRA2 at pack time; 90 = visually lossless), {} images:",
        q.coded + q.exact
    )?;
    writeln!(out, "  {:<22} {:>6}", "exact (kept as is)", q.exact)?;
    for (label, n) in &q.classes {
        writeln!(out, "  {:<22} {:>6}", label, n)?;
    }
    if q.unmeasured > 0 {
        writeln!(
            out,
            "  {:<22} {:>6}",
            "not measured (--crf/--qp)", q.unmeasured
        )?;
    }
    if let (Some(min), Some(median), Some(mean)) = (q.min, q.median, q.mean) {
        writeln!(
            out,
            "  min {min:.1}, median {median:.1}, mean {mean:.1} over the coded images"
        )?;
    }
    if let Some(chart) = &a.chart {
        writeln!(out, "chart: {}", chart.display())?;
    }
    Ok(exit::OK)
}
