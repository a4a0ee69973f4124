//! Walking an album folder in a deterministic order and deciding how each file is kept.

use crate::archive::{ColorModel, ImageFormat, Timestamp};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{0}: not a directory")]
    NotDir(PathBuf),
    #[error("{0}: the folder is empty: nothing to pack")]
    Empty(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ScanError + '_ {
    move |error| ScanError::Io {
        path: path.to_owned(),
        error,
    }
}

#[derive(Debug, Clone)]
pub enum Found {
    Dir,
    Symlink(Vec<u8>),
    File { size: u64 },
}

/// One item of the album, as found on disk.
#[derive(Debug, Clone)]
pub struct Item {
    /// Relative path bytes, '/'-separated.
    pub rel: Vec<u8>,
    pub abs: PathBuf,
    pub mtime: Timestamp,
    pub mode: u32,
    pub found: Found,
}

/// Lists the album below `root`: parents before children, siblings sorted by name bytes.
pub fn walk(root: &Path) -> Result<Vec<Item>, ScanError> {
    let meta = fs::metadata(root).map_err(io_err(root))?;
    if !meta.is_dir() {
        return Err(ScanError::NotDir(root.to_owned()));
    }
    let mut items = Vec::new();
    walk_dir(root, &[], &mut items)?;
    if items.is_empty() {
        return Err(ScanError::Empty(root.to_owned()));
    }
    Ok(items)
}

fn walk_dir(dir: &Path, prefix: &[u8], items: &mut Vec<Item>) -> Result<(), ScanError> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let abs = dir.join(&name);
        let meta = fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let mtime = Timestamp {
            secs: meta.mtime(),
            nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        };
        let mode = meta.mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&abs).map_err(io_err(&abs))?;
            items.push(Item {
                rel,
                abs,
                mtime,
                mode,
                found: Found::Symlink(target.as_os_str().as_bytes().to_vec()),
            });
        } else if ft.is_dir() {
            items.push(Item {
                rel: rel.clone(),
                abs: abs.clone(),
                mtime,
                mode,
                found: Found::Dir,
            });
            walk_dir(&abs, &rel, items)?;
        } else if ft.is_file() {
            items.push(Item {
                rel,
                abs,
                mtime,
                mode,
                found: Found::File { size: meta.len() },
            });
        } else {
            log::warn!(
                "{}: skipped: not a regular file, folder or symlink",
                abs.display()
            );
        }
    }
    Ok(())
}

/// How a file will be kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Image {
        format: ImageFormat,
        width: u32,
        height: u32,
        color: ColorModel,
        /// The original has an alpha channel (coded losslessly in an alpha track).
        alpha: bool,
    },
    Verbatim(String),
}

/// Largest side the video path takes (larger images are split into tiles; beyond this they
/// are kept verbatim).
pub const MAX_SIDE: u32 = 65_535;
/// Largest image (in pixels) the video path takes: decoding one holds it whole in memory
/// (3 bytes a pixel, 4 with alpha), so larger ones are kept verbatim. 134 MP.
pub const MAX_PIXELS: u64 = 1 << 27;

/// Looks at a file's header (no pixel decoding) and decides whether it is coded as video.
pub fn probe(path: &Path) -> Result<Probe, ScanError> {
    use image::ImageDecoder;
    if fs::metadata(path).map_err(io_err(path))?.len() == 0 {
        return Ok(Probe::Verbatim("empty file".into()));
    }
    let reader = image::ImageReader::open(path)
        .map_err(io_err(path))?
        .with_guessed_format()
        .map_err(io_err(path))?;
    let Some(fmt) = reader.format() else {
        return Ok(Probe::Verbatim("not an image".into()));
    };
    let format = match fmt {
        image::ImageFormat::Png => ImageFormat::Png,
        image::ImageFormat::Jpeg => ImageFormat::Jpeg,
        image::ImageFormat::WebP => ImageFormat::WebP,
        image::ImageFormat::Bmp => ImageFormat::Bmp,
        image::ImageFormat::Tiff => ImageFormat::Tiff,
        image::ImageFormat::Gif => {
            return Ok(Probe::Verbatim(
                "GIF (palette, transparency, animation): kept as is".into(),
            ))
        }
        other => {
            return Ok(Probe::Verbatim(format!(
                "{other:?} images are kept as they are"
            )))
        }
    };
    let decoder = match reader.into_decoder() {
        Ok(d) => d,
        Err(e) => return Ok(Probe::Verbatim(format!("unreadable image header: {e}"))),
    };
    let (width, height) = decoder.dimensions();
    let (color, alpha) = match decoder.color_type() {
        image::ColorType::Rgb8 => (ColorModel::Rgb, false),
        image::ColorType::L8 => (ColorModel::Grey, false),
        image::ColorType::Rgba8 => (ColorModel::Rgb, true),
        image::ColorType::La8 => (ColorModel::Grey, true),
        other => {
            return Ok(Probe::Verbatim(format!(
                "{other:?} pixels (more than 8 bits per channel): kept as is for now"
            )))
        }
    };
    if width == 0 || height == 0 {
        return Ok(Probe::Verbatim("image has no pixels".into()));
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Ok(Probe::Verbatim(format!(
            "{width}x{height} is larger than the video path takes ({MAX_SIDE} px on a side, {} MP): kept as is",
            MAX_PIXELS / 1_000_000
        )));
    }
    Ok(Probe::Image {
        format,
        width,
        height,
        color,
        alpha,
    })
}
