use super::{exit, Global};
use crate::archive::Archive;
use crate::verify;
use anyhow::Context;
use std::path::PathBuf;

/// Score every image against the original folder (SSIMULACRA2 and PSNR).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "SSIMULACRA2: 90 = visually lossless, 80 = very high, 70 = high, 50 = medium.\n\
Examples:\n  av1pack verify trip.mkv ~/Pictures/trip\n  av1pack verify --min-score 85 --json trip.mkv ~/Pictures/trip"
)]
pub struct Args {
    pub archive: PathBuf,
    /// The folder that was packed.
    pub originals: PathBuf,
    /// Exit with code 3 if any image scores below this SSIMULACRA2 value.
    #[arg(long)]
    pub min_score: Option<f64>,
    /// Score the images as `unpack --format` of this value would give them.
    #[arg(long, value_enum, default_value = "original")]
    pub format: super::unpack::Format,
    /// Print JSON (summary, worst files, every score) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, _g: Global) -> anyhow::Result<u8> {
    super::tune_allocator_for_batch_work();
    let archive = Archive::open(&a.archive)?;
    if !a.originals.is_dir() {
        anyhow::bail!("{}: not a folder", a.originals.display());
    }
    let report = verify::verify(&archive, &a.originals, a.format.into())
        .with_context(|| format!("could not verify {}", a.archive.display()))?;
    let summary = report.summary();
    let worst = report.worst(5);
    let below = a
        .min_score
        .map(|m| {
            report
                .images
                .iter()
                .filter(|i| i.ssimulacra2 < m || i.seam.is_some_and(|s| s < m))
                .count()
        })
        .unwrap_or(0);
    if a.json {
        let v = serde_json::json!({
            "summary": summary,
            "min": summary.map(|s| s.min),
            "p10": summary.map(|s| s.p10),
            "mean": summary.map(|s| s.mean),
            "worst": worst,
            "verbatim_identical": report.verbatim_identical,
            "problems": report.problems,
            "below_min_score": below,
            "images": report.images,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        match summary {
            Some(s) => {
                println!(
                    "{} images: SSIMULACRA2 min {:.2} / p10 {:.2} / mean {:.2}; PSNR min {:.2} dB",
                    s.count, s.min, s.p10, s.mean, s.min_psnr
                );
                if s.alpha_images > 0 {
                    println!(
                        "{} images with alpha: largest alpha difference {}",
                        s.alpha_images, s.alpha_max_diff
                    );
                }
                if let Some(seam) = s.min_seam {
                    println!(
                        "{} images coded in tiles: worst seam band SSIMULACRA2 {:.2}",
                        s.tiled_images, seam
                    );
                }
                println!("worst:");
                for w in &worst {
                    println!("  {:>7.2} {:>7.2} dB  {}", w.ssimulacra2, w.psnr, w.path);
                }
            }
            None => println!("no images coded as video"),
        }
        println!(
            "{} files kept as is, identical to the originals",
            report.verbatim_identical
        );
        for (p, why) in &report.problems {
            println!("problem: {p}: {why}");
        }
    }
    if below > 0 || !report.problems.is_empty() {
        if let Some(m) = a.min_score {
            eprintln!("av1pack: {below} images scored below {m}");
        }
        if !report.problems.is_empty() {
            eprintln!(
                "av1pack: {} files differ, are missing or could not be checked",
                report.problems.len()
            );
        }
        return Ok(exit::VERIFY_FAILED);
    }
    Ok(exit::OK)
}
