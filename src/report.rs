//! `report`: what an archive saves against its originals and the usual archivers (zip, 7z),
//! and the quality of every image as measured at pack time, as numbers and as a chart.

use crate::archive::{Archive, EntryKind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Archive(#[from] crate::archive::ReadError),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {tool} failed: {why}")]
    Tool {
        path: PathBuf,
        tool: String,
        why: String,
    },
    #[error("{path}: {why}")]
    Chart { path: PathBuf, why: String },
}

/// Reasons under which a verbatim entry is not an image at all.
const NOT_IMAGE_REASONS: [&str; 2] = ["not an image", "empty file"];

/// Lower bounds of the quality classes (SSIMULACRA2), best first, with their labels.
/// One-point steps just above the visually lossless target (90), where pack puts most images.
pub const CLASSES: [(&str, f32); 9] = [
    ("≥ 95", 95.0),
    ("94–95", 94.0),
    ("93–94", 93.0),
    ("92–93", 92.0),
    ("91–92", 91.0),
    ("90–91", 90.0),
    ("85–90", 85.0),
    ("80–85", 80.0),
    ("< 80", f32::NEG_INFINITY),
];

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub archive: String,
    pub archive_bytes: u64,
    /// Sum of the original files' sizes, as recorded in the index.
    pub original_bytes: u64,
    pub files: usize,
    /// The originals folder as found on disk, when given.
    pub originals: Option<Originals>,
    /// Other archivers run on the originals folder.
    pub archivers: Vec<Archiver>,
    pub quality: Quality,
    /// Every image: path, score (None: not measured), kept as is (exact).
    pub images: Vec<ImageScore>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Originals {
    pub path: String,
    pub bytes: u64,
    pub files: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Archiver {
    /// e.g. "zip -9".
    pub name: String,
    /// None when the tool is not installed.
    pub bytes: Option<u64>,
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageScore {
    pub path: String,
    pub score: Option<f32>,
    pub exact: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Quality {
    /// Images coded as video.
    pub coded: usize,
    /// Images kept byte for byte (exact).
    pub exact: usize,
    /// Coded images without a pack-time score (packed with --crf/--qp).
    pub unmeasured: usize,
    pub min: Option<f32>,
    pub median: Option<f32>,
    pub mean: Option<f32>,
    /// Coded images per class of `CLASSES`, in that order.
    pub classes: Vec<(String, usize)>,
}

/// Gathers the report; with `originals`, measures the folder and runs zip -9 and 7z -mx9 on it
/// (into a temporary folder) when they are installed.
pub fn gather(archive_path: &Path, originals: Option<&Path>) -> Result<Report, ReportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| ReportError::Io { path, error }
    };
    let archive = Archive::open(archive_path)?;
    let archive_bytes = archive.file_len();
    let mut images = Vec::new();
    let mut files = 0;
    for e in &archive.index.entries {
        match &e.kind {
            EntryKind::Image(img) => {
                files += 1;
                images.push(ImageScore {
                    path: e.path_lossy(),
                    score: img.score,
                    exact: false,
                });
            }
            EntryKind::Verbatim { blob, .. } if blob.thinned_score().is_some() => {
                files += 1;
                images.push(ImageScore {
                    path: e.path_lossy(),
                    score: blob.thinned_score(),
                    exact: false,
                });
            }
            EntryKind::Verbatim { reason, .. } => {
                files += 1;
                if !NOT_IMAGE_REASONS.contains(&reason.as_str()) {
                    images.push(ImageScore {
                        path: e.path_lossy(),
                        score: None,
                        exact: true,
                    });
                }
            }
            _ => {}
        }
    }
    let quality = quality(&images);
    let original_bytes = archive
        .index
        .entries
        .iter()
        .map(|e| e.original_size())
        .sum();

    let mut report = Report {
        archive: archive_path.display().to_string(),
        archive_bytes,
        original_bytes,
        files,
        originals: None,
        archivers: Vec::new(),
        quality,
        images,
    };
    let Some(dir) = originals else {
        return Ok(report);
    };
    let (bytes, files) = folder_size(dir).map_err(io(dir))?;
    report.originals = Some(Originals {
        path: dir.display().to_string(),
        bytes,
        files,
    });
    let tmp = tempfile::tempdir().map_err(io(Path::new("temporary folder")))?;
    let zip = tmp.path().join("originals.zip");
    let seven = tmp.path().join("originals.7z");
    let mut zip_cmd = Command::new("zip");
    zip_cmd.args(["-9", "-r", "-q", "-y"]).arg(&zip).arg(".");
    let mut seven_cmd = Command::new("7z");
    seven_cmd
        .args(["a", "-mx9", "-bd", "-bso0", "-bsp0", "-snl"])
        .arg(&seven)
        .arg(".");
    for (name, mut cmd, out) in [("zip -9", zip_cmd, zip), ("7z -mx9", seven_cmd, seven)] {
        let tool = name.split(' ').next().unwrap_or(name);
        if !installed(tool) {
            report.archivers.push(Archiver {
                name: name.into(),
                bytes: None,
                seconds: None,
            });
            continue;
        }
        let start = Instant::now();
        let o = cmd.current_dir(dir).output().map_err(io(dir))?;
        if !o.status.success() {
            return Err(ReportError::Tool {
                path: dir.to_owned(),
                tool: name.into(),
                why: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            });
        }
        let bytes = std::fs::metadata(&out).map_err(io(&out))?.len();
        report.archivers.push(Archiver {
            name: name.into(),
            bytes: Some(bytes),
            seconds: Some(start.elapsed().as_secs_f64()),
        });
    }
    Ok(report)
}

fn quality(images: &[ImageScore]) -> Quality {
    let mut q = Quality {
        coded: images.iter().filter(|i| !i.exact).count(),
        exact: images.iter().filter(|i| i.exact).count(),
        unmeasured: images
            .iter()
            .filter(|i| !i.exact && i.score.is_none())
            .count(),
        ..Quality::default()
    };
    let mut scores: Vec<f32> = images.iter().filter_map(|i| i.score).collect();
    scores.sort_by(f32::total_cmp);
    q.classes = CLASSES
        .iter()
        .enumerate()
        .map(|(k, &(label, low))| {
            let high = if k == 0 {
                f32::INFINITY
            } else {
                CLASSES[k - 1].1
            };
            let n = scores.iter().filter(|&&s| s >= low && s < high).count();
            (label.to_string(), n)
        })
        .collect();
    if !scores.is_empty() {
        q.min = scores.first().copied();
        q.median = Some(scores[scores.len() / 2]);
        q.mean = Some(scores.iter().sum::<f32>() / scores.len() as f32);
    }
    q
}

fn installed(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            d.join(tool)
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
    })
}

/// Bytes and count of the regular files below `dir` (symlinks not followed).
fn folder_size(dir: &Path) -> std::io::Result<(u64, usize)> {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let m = e.path().symlink_metadata()?;
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                bytes += m.len();
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}

/// Title of the chart (also what tests look for).
pub fn chart_title(r: &Report) -> String {
    let name = Path::new(&r.archive)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| r.archive.clone());
    format!("av1pack report: {name}")
}

/// Draws the chart: sizes (originals, zip, 7z, av1pack) and the quality distribution. The
/// format follows the extension: .svg or .png. Text is laid out (and, in PNG, drawn) with a
/// system TrueType font.
pub fn chart(r: &Report, path: &Path) -> Result<(), ReportError> {
    let err = |why: String| ReportError::Chart {
        path: path.to_owned(),
        why,
    };
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    const W: u32 = 1000;
    const H: u32 = 420;
    match ext.as_str() {
        "svg" => {
            register_font().map_err(err)?;
            let mut svg = String::new();
            {
                let root = plotters::prelude::SVGBackend::with_string(&mut svg, (W, H));
                draw(r, root).map_err(err)?;
            }
            std::fs::write(path, svg).map_err(|error| ReportError::Io {
                path: path.to_owned(),
                error,
            })
        }
        "png" => {
            register_font().map_err(err)?;
            let mut rgb = vec![255u8; (W * H * 3) as usize];
            {
                let root = plotters::prelude::BitMapBackend::with_buffer(&mut rgb, (W, H));
                draw(r, root).map_err(err)?;
            }
            let file = std::fs::File::create(path).map_err(|error| ReportError::Io {
                path: path.to_owned(),
                error,
            })?;
            let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W, H);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(|e| err(e.to_string()))?;
            w.write_image_data(&rgb).map_err(|e| err(e.to_string()))?;
            w.finish().map_err(|e| err(e.to_string()))
        }
        _ => Err(err(
            "unknown chart format: the name must end in .svg or .png".into(),
        )),
    }
}

/// Fonts tried for PNG text, in order (Debian: fonts-dejavu-core, fonts-liberation).
const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_font() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = FONTS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or_else(|| {
                format!(
                    "charts need a TrueType font for their text ({}; Debian: fonts-dejavu-core)",
                    FONTS[0]
                )
            })?;
        // Registered once for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
            .map_err(|_| "the system font could not be read".to_string())
    })
    .clone()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn draw<DB: plotters::prelude::DrawingBackend>(r: &Report, backend: DB) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root
        .titled(&chart_title(r), ("sans-serif", 22))
        .map_err(|x| e(&x))?;
    let (left, right) = root.split_horizontally(420);
    // Values written centred just above their bars.
    let label_style = TextStyle::from(("sans-serif", 13).into_font()).pos(
        plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Bottom,
        ),
    );

    // Sizes.
    let originals = r.originals.as_ref().map_or(r.original_bytes, |o| o.bytes);
    let mut sizes: Vec<(String, u64)> = vec![("originals".into(), originals)];
    for a in &r.archivers {
        if let Some(b) = a.bytes {
            sizes.push((a.name.clone(), b));
        }
    }
    sizes.push(("av1pack".into(), r.archive_bytes));
    let top = sizes
        .iter()
        .map(|s| mib(s.1))
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.15;
    let names: Vec<String> = sizes.iter().map(|s| s.0.clone()).collect();
    let mut chart = ChartBuilder::on(&left)
        .caption("Size (MiB)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((0..sizes.len() - 1).into_segmented(), 0.0..top)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style(BLUE.mix(0.6).filled())
                .margin(12)
                .data(sizes.iter().enumerate().map(|(i, s)| (i, mib(s.1)))),
        )
        .map_err(|x| e(&x))?
        .label("size of the folder / archive")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], BLUE.mix(0.6).filled()));
    chart
        .draw_series(sizes.iter().enumerate().map(|(i, s)| {
            Text::new(
                format!("{:.2}", mib(s.1)),
                (SegmentValue::CenterOf(i), mib(s.1)),
                label_style.clone(),
            )
        }))
        .map_err(|x| e(&x))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|x| e(&x))?;

    // Quality distribution.
    let q = &r.quality;
    let mut classes: Vec<(String, usize)> = vec![("exact".into(), q.exact)];
    classes.extend(q.classes.iter().cloned());
    if q.unmeasured > 0 {
        classes.push(("not measured".into(), q.unmeasured));
    }
    let most = classes.iter().map(|c| c.1).max().unwrap_or(0).max(1);
    let labels: Vec<String> = classes.iter().map(|c| c.0.clone()).collect();
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "Images per quality class (SSIMULACRA2 at pack time)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(
            (0..classes.len() - 1).into_segmented(),
            0u32..(most as u32 * 115 / 100 + 1),
        )
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style(GREEN.mix(0.6).filled())
                .margin(10)
                .data(
                    classes
                        .iter()
                        .enumerate()
                        .skip(1)
                        .map(|(i, c)| (i, c.1 as u32)),
                ),
        )
        .map_err(|x| e(&x))?
        .label("coded as video")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], GREEN.mix(0.6).filled()));
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style(RGBColor(120, 120, 120).filled())
                .margin(10)
                .data(std::iter::once((0usize, q.exact as u32))),
        )
        .map_err(|x| e(&x))?
        .label("kept as is (exact)")
        .legend(|(x, y)| {
            Rectangle::new(
                [(x, y - 5), (x + 10, y + 5)],
                RGBColor(120, 120, 120).filled(),
            )
        });
    chart
        .draw_series(classes.iter().enumerate().map(|(i, c)| {
            Text::new(
                c.1.to_string(),
                (SegmentValue::CenterOf(i), c.1 as u32),
                label_style.clone(),
            )
        }))
        .map_err(|x| e(&x))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
