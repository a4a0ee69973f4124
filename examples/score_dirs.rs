//! Scores a folder of decoded images against the originals with the same SSIMULACRA2 as
//! `av1pack verify`: for comparing another codec (e.g. JPEG XL through cjxl/djxl, see
//! scripts/bench-pack.sh) with av1pack on equal terms.
//!
//!     cargo run --release --example score_dirs -- [--json] [--upright] [--jobs N] ORIG_DIR DECODED_DIR
//!
//! Every file below ORIG_DIR (symlinks to files followed) is decoded as `verify` decodes originals
//! (`av1pack::verify::load_picture`: format from the content, 8-bit colour plus alpha); files
//! that are not images are skipped and counted. Its counterpart is the file with the same
//! relative path below DECODED_DIR, or else the one file in the same folder whose name is the
//! original's with another extension (`a.jpg` -> `a.png`) or with one more (`a.jpg.png`).
//! Pairs are scored with `av1pack::quality::score_picture`: SSIMULACRA2 (images over 1.5 MP
//! scored by 1024-pixel tiles, the worst counts) and PSNR; images with alpha are scored over
//! black and over white and the worse counts, and the largest alpha difference is reported.
//!
//! --upright turns both images of a pair upright as their own EXIF orientation says before
//! scoring (`av1pack::verify::load_picture_upright`): djxl writes the pixels turned as the
//! orientation said and no EXIF, so an original photo tagged "Rotate 180" must be turned too
//! to compare what a viewer shows of each. Without it, pixels are compared as stored, as
//! `verify` does (av1pack keeps the EXIF with the pixels as they were).
//!
//! Output (stdout), tab-separated: a `#` header, one line per image
//! `ssimulacra2 psnr alpha_max_diff original decoded` (alpha_max_diff `-` for opaque
//! originals), then `count`, `min`, `p10`, `mean` (as `verify` computes them), `skipped`
//! (files that are not images) and `problems` lines. With --json, one object:
//! `{"images": [...], "summary": {"count", "min", "p10", "mean", ...} or null,
//! "skipped": [paths], "problems": [{"path", "why"}]}`.
//!
//! Images without a decoded counterpart, with other dimensions, or that do not decode are
//! problems (also named on stderr). Exit status: 0 when every image was scored, 1 when there
//! were problems, 2 on a usage error or an unreadable folder.

use av1pack::album::{self, Found};
use av1pack::pixels::Picture;
use av1pack::quality;
use av1pack::verify::{load_picture, load_picture_upright, ImageScore, LoadError, VerifyReport};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One scored pair.
#[derive(Debug, Clone, serde::Serialize)]
struct Scored {
    path: String,
    decoded: String,
    ssimulacra2: f64,
    psnr: f64,
    alpha_max_diff: Option<u8>,
}

#[derive(Debug, Default)]
struct Outcome {
    images: Vec<Scored>,
    skipped: Vec<String>,
    problems: Vec<(String, String)>,
}

impl Outcome {
    /// min/p10/mean exactly as `verify` computes them.
    fn summary(&self) -> Option<av1pack::verify::Summary> {
        VerifyReport {
            images: self
                .images
                .iter()
                .map(|s| ImageScore {
                    path: s.path.clone(),
                    ssimulacra2: s.ssimulacra2,
                    psnr: s.psnr,
                    alpha_max_diff: s.alpha_max_diff,
                    seam: None,
                })
                .collect(),
            ..VerifyReport::default()
        }
        .summary()
    }
}

/// The decoded counterpart of `rel` (an original's relative path) below `decoded`.
fn counterpart(decoded: &Path, rel: &Path) -> Result<PathBuf, String> {
    let exact = decoded.join(rel);
    if exact.is_file() {
        return Ok(exact);
    }
    let name = rel.file_name().ok_or("no file name")?;
    let stem = rel.file_stem().unwrap_or(name);
    let dir = exact.parent().unwrap_or(decoded);
    let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some())
            .filter(|p| p.file_stem().is_some_and(|s| s == stem || s == name))
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    match found.len() {
        0 => Err(format!("no decoded file for it in {}", dir.display())),
        1 => Ok(found.remove(0)),
        _ => Err(format!(
            "ambiguous: {}",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

enum One {
    Scored(Scored),
    Skipped,
    Problem(String),
}

fn score_one(orig_root: &Path, decoded_root: &Path, rel: &Path, upright: bool) -> One {
    let load = if upright {
        load_picture_upright
    } else {
        load_picture
    };
    let original = match load(&orig_root.join(rel)) {
        Ok(p) => p,
        Err(LoadError::NotAnImage) => return One::Skipped,
        Err(e) => return One::Problem(format!("original: {e}")),
    };
    let dec_path = match counterpart(decoded_root, rel) {
        Ok(p) => p,
        Err(why) => return One::Problem(why),
    };
    let decoded: Picture = match load(&dec_path) {
        Ok(p) => p,
        Err(e) => return One::Problem(format!("{}: {e}", dec_path.display())),
    };
    if original.rgb.dimensions() != decoded.rgb.dimensions() {
        return One::Problem(format!(
            "{} is {}x{}, the original {}x{}",
            dec_path.display(),
            decoded.rgb.width(),
            decoded.rgb.height(),
            original.rgb.width(),
            original.rgb.height()
        ));
    }
    match quality::score_picture(&original, &decoded) {
        Ok(s) => One::Scored(Scored {
            path: rel.display().to_string(),
            decoded: dec_path
                .strip_prefix(decoded_root)
                .unwrap_or(&dec_path)
                .display()
                .to_string(),
            ssimulacra2: s.ssimulacra2,
            psnr: s.psnr,
            alpha_max_diff: original
                .alpha
                .as_ref()
                .map(|a| quality::alpha_max_diff(Some(a), decoded.alpha.as_ref())),
        }),
        Err(e) => One::Problem(e.to_string()),
    }
}

/// Scores every image below `orig_root` against its counterpart below `decoded_root`, with
/// `jobs` threads (both sides turned upright first with `upright`). Results are sorted by path.
fn score_dirs(
    orig_root: &Path,
    decoded_root: &Path,
    upright: bool,
    jobs: usize,
) -> Result<Outcome, album::ScanError> {
    let files: Vec<PathBuf> = album::walk(orig_root, &album::Exclude::nothing())?
        .items
        .into_iter()
        .filter(|i| match i.found {
            Found::File { .. } => true,
            Found::Symlink(_) => i.abs.is_file(), // followed, like the tools that made DECODED
            Found::Dir => false,
        })
        .map(|i| PathBuf::from(std::ffi::OsStr::from_bytes(&i.rel)))
        .collect();
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Outcome::default());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(rel) = files.get(i) else { break };
                let one = score_one(orig_root, decoded_root, rel, upright);
                let Ok(mut o) = out.lock() else { break };
                match one {
                    One::Scored(sc) => o.images.push(sc),
                    One::Skipped => o.skipped.push(rel.display().to_string()),
                    One::Problem(why) => o.problems.push((rel.display().to_string(), why)),
                }
            });
        }
    });
    let mut o = out.into_inner().unwrap_or_default();
    o.images.sort_by(|a, b| a.path.cmp(&b.path));
    o.skipped.sort();
    o.problems.sort();
    Ok(o)
}

fn tsv(o: &Outcome) -> String {
    let mut s = String::from("# ssimulacra2\tpsnr\talpha_max_diff\toriginal\tdecoded\n");
    for i in &o.images {
        let alpha = i.alpha_max_diff.map_or("-".to_string(), |d| d.to_string());
        s += &format!(
            "{:.2}\t{:.2}\t{alpha}\t{}\t{}\n",
            i.ssimulacra2, i.psnr, i.path, i.decoded
        );
    }
    let sum = o.summary();
    let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
    s += &format!("count\t{}\n", o.images.len());
    s += &format!("min\t{}\n", f(sum.map(|m| m.min)));
    s += &format!("p10\t{}\n", f(sum.map(|m| m.p10)));
    s += &format!("mean\t{}\n", f(sum.map(|m| m.mean)));
    s += &format!("skipped\t{}\n", o.skipped.len());
    s += &format!("problems\t{}\n", o.problems.len());
    s
}

fn json(o: &Outcome) -> serde_json::Value {
    serde_json::json!({
        "images": o.images,
        "summary": o.summary(),
        "skipped": o.skipped,
        "problems": o
            .problems
            .iter()
            .map(|(path, why)| serde_json::json!({ "path": path, "why": why }))
            .collect::<Vec<_>>(),
    })
}

fn usage() -> ExitCode {
    eprintln!("usage: score_dirs [--json] [--upright] [--jobs N] ORIG_DIR DECODED_DIR");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut as_json = false;
    let mut upright = false;
    let mut jobs = 2usize;
    let mut dirs: Vec<OsString> = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--json") => as_json = true,
            Some("--upright") => upright = true,
            Some("--jobs") => match args.next().and_then(|n| n.to_str()?.parse().ok()) {
                Some(n) if n > 0 => jobs = n,
                _ => return usage(),
            },
            Some("-h" | "--help") => {
                println!("usage: score_dirs [--json] [--upright] [--jobs N] ORIG_DIR DECODED_DIR");
                return ExitCode::SUCCESS;
            }
            Some(s) if s.starts_with("--") => return usage(),
            _ => dirs.push(a),
        }
    }
    let [orig, decoded] = dirs.as_slice() else {
        return usage();
    };
    let (orig, decoded) = (Path::new(orig), Path::new(decoded));
    if !decoded.is_dir() {
        eprintln!("score_dirs: {}: not a directory", decoded.display());
        return ExitCode::from(2);
    }
    let o = match score_dirs(orig, decoded, upright, jobs) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("score_dirs: {e}");
            return ExitCode::from(2);
        }
    };
    for (path, why) in &o.problems {
        eprintln!("score_dirs: {path}: {why}");
    }
    if as_json {
        println!("{:#}", json(&o));
    } else {
        print!("{}", tsv(&o));
    }
    if o.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn photo(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let ring = (((x as f32 - 40.0).hypot(y as f32 - 30.0) / 5.0).sin() * 50.0) as i32;
            Rgb([
                (x * 3) as u8,
                (100 + ring).clamp(0, 255) as u8,
                ((x + y) * 2 % 251) as u8,
            ])
        })
    }

    /// Originals: a JPEG, a PNG with alpha in a sub-folder, a text file, and a PNG whose
    /// decoded counterpart is missing. Decoded: the JPEG's pixels as `photo.png` (djxl's
    /// naming), the RGBA PNG with its colour damaged under transparent pixels only.
    #[test]
    fn pairs_by_stem_scores_like_verify_and_counts_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let (orig, dec) = (t.path().join("orig"), t.path().join("dec"));
        std::fs::create_dir_all(orig.join("icons")).unwrap();
        std::fs::create_dir_all(dec.join("icons")).unwrap();

        let jpg = orig.join("photo.jpg");
        image::DynamicImage::ImageRgb8(photo(96, 64))
            .save_with_format(&jpg, image::ImageFormat::Jpeg)
            .unwrap();
        // The JPEG decoded, then damaged: a 20-pixel red bar.
        let mut damaged = load_picture(&jpg).unwrap().rgb;
        for x in 10..30 {
            damaged.put_pixel(x, 20, Rgb([255, 0, 0]));
        }
        damaged.save(dec.join("photo.png")).unwrap();

        // Left half opaque, right half fully transparent; the decoded copy changes the colour
        // of transparent pixels only, so it looks the same over any background.
        let icon = RgbaImage::from_fn(64, 64, |x, y| {
            let Rgb([r, g, b]) = *photo(64, 64).get_pixel(x, y);
            Rgba([r, g, b, if x < 32 { 255 } else { 0 }])
        });
        icon.save(orig.join("icons/i.png")).unwrap();
        let mut icon2 = icon.clone();
        for (x, _, p) in icon2.enumerate_pixels_mut() {
            if x >= 32 {
                p.0 = [0, 0, 0, 0];
            }
        }
        icon2.save(dec.join("icons/i.png")).unwrap();

        std::fs::write(orig.join("notes.txt"), b"not an image\n").unwrap();
        photo(20, 20).save(orig.join("lost.png")).unwrap();

        let o = score_dirs(&orig, &dec, false, 2).unwrap();
        let paths: Vec<_> = o.images.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["icons/i.png", "photo.jpg"]);
        assert_eq!(o.images[1].decoded, "photo.png");
        assert_eq!(o.skipped, ["notes.txt"]);
        assert_eq!(o.problems.len(), 1, "{:?}", o.problems);
        assert_eq!(o.problems[0].0, "lost.png");
        assert!(
            o.problems[0].1.contains("no decoded file"),
            "{:?}",
            o.problems
        );

        // The JPEG pair: the same score as the library gives the decoded pictures.
        let want = quality::score_picture(
            &load_picture(&jpg).unwrap(),
            &Picture::opaque(damaged.clone()),
        )
        .unwrap();
        assert_eq!(o.images[1].ssimulacra2, want.ssimulacra2);
        assert!(o.images[1].ssimulacra2 < 90.0, "{:?}", o.images[1]);
        assert_eq!(o.images[1].alpha_max_diff, None);
        // The icon: composited over black and white, it is identical: 100, alpha exact.
        assert_eq!(o.images[0].ssimulacra2, 100.0);
        assert_eq!(o.images[0].alpha_max_diff, Some(0));

        let sum = o.summary().unwrap();
        assert_eq!(sum.count, 2);
        assert_eq!(sum.min, o.images[1].ssimulacra2);
        assert_eq!(sum.mean, (100.0 + o.images[1].ssimulacra2) / 2.0);

        let text = tsv(&o);
        assert!(text.contains("\t0\ticons/i.png\ticons/i.png\n"), "{text}");
        assert!(text.contains("count\t2\n") && text.contains("skipped\t1\n"));
        assert!(text.contains("problems\t1\n"), "{text}");
        let j = json(&o);
        assert_eq!(j["summary"]["count"], 2);
        assert_eq!(j["problems"][0]["path"], "lost.png");
    }

    #[test]
    fn other_dimensions_and_ambiguous_names_are_problems() {
        let t = tempfile::tempdir().unwrap();
        let (orig, dec) = (t.path().join("orig"), t.path().join("dec"));
        std::fs::create_dir_all(&orig).unwrap();
        std::fs::create_dir_all(&dec).unwrap();
        photo(40, 30).save(orig.join("a.png")).unwrap();
        photo(30, 40).save(dec.join("a.png")).unwrap();
        photo(40, 30).save(orig.join("b.bmp")).unwrap();
        photo(40, 30).save(dec.join("b.png")).unwrap();
        photo(40, 30).save(dec.join("b.bmp.png")).unwrap();

        let o = score_dirs(&orig, &dec, false, 1).unwrap();
        assert!(o.images.is_empty(), "{:?}", o.images);
        assert!(o.summary().is_none());
        assert_eq!(o.problems.len(), 2);
        assert_eq!(o.problems[0].0, "a.png");
        assert!(o.problems[0].1.contains("is 30x40, the original 40x30"));
        assert_eq!(o.problems[1].0, "b.bmp");
        assert!(o.problems[1].1.starts_with("ambiguous"), "{:?}", o.problems);
        assert!(tsv(&o).contains("min\tn/a\n"));
    }

    /// A JPEG tagged "Rotate 180" and its pixels decoded upright (as djxl writes them).
    #[test]
    fn upright_compares_what_a_viewer_shows() {
        let t = tempfile::tempdir().unwrap();
        let (orig, dec) = (t.path().join("orig"), t.path().join("dec"));
        std::fs::create_dir_all(&orig).unwrap();
        std::fs::create_dir_all(&dec).unwrap();
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageRgb8(photo(96, 64))
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        // APP1 Exif, big-endian TIFF with one IFD entry: Orientation (0x0112) = 3.
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01".to_vec();
        exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 3, 0, 0, 0, 0, 0, 0]);
        let len = (exif.len() + 2) as u16;
        let mut tagged = vec![0xFF, 0xD8, 0xFF, 0xE1];
        tagged.extend_from_slice(&len.to_be_bytes());
        tagged.extend_from_slice(&exif);
        tagged.extend_from_slice(&jpeg[2..]);
        std::fs::write(orig.join("p.jpg"), &tagged).unwrap();
        let stored = load_picture(&orig.join("p.jpg")).unwrap().rgb;
        image::imageops::rotate180(&stored)
            .save(dec.join("p.png"))
            .unwrap();

        let upright = score_dirs(&orig, &dec, true, 1).unwrap();
        assert_eq!(upright.images.len(), 1, "{:?}", upright.problems);
        assert_eq!(upright.images[0].ssimulacra2, 100.0);
        let as_stored = score_dirs(&orig, &dec, false, 1).unwrap();
        assert!(
            as_stored.images[0].ssimulacra2 < 50.0,
            "{:?}",
            as_stored.images
        );
    }
}
