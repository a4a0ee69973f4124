//! Pre-made thumbnails in the freedesktop.org thumbnail cache (Thumbnail Managing Standard), so
//! that file managers showing a mounted (or unpacked) archive find every image's thumbnail
//! ready instead of reading and decoding each file.
//!
//! A thumbnail is a PNG in `$XDG_CACHE_HOME/thumbnails/{normal,large}/`, named by the MD5 of
//! the file's URI, carrying `Thumb::URI` and `Thumb::MTime` (the file's modification time in
//! seconds) so that a reader can tell it is current. Coded images are thumbnailed from their
//! decoded frames (one decode per GOP, no file rendered); images kept as files from their bytes.

use crate::archive::{Archive, Entry, EntryKind, MetaBlock};
use crate::frames;
use image::DynamicImage;
use md5::{Digest, Md5};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum ThumbError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Frames(#[from] frames::FrameError),
    #[error(
        "{0}: none of the archive's images is there: is it the mount or unpack of another archive?"
    )]
    NotThisArchive(PathBuf),
}

/// Thumbnail sizes of the standard: folder name and the longest side in pixels.
pub const NORMAL: (&str, u32) = ("normal", 128);
pub const LARGE: (&str, u32) = ("large", 256);
pub const X_LARGE: (&str, u32) = ("x-large", 512);

#[derive(Debug, Clone)]
pub struct ThumbOptions {
    /// Absolute folder where the archive's files appear (its mount point, or where it was
    /// unpacked): thumbnails are keyed by the files' URIs there.
    pub folder: PathBuf,
    /// The thumbnail cache (`$XDG_CACHE_HOME/thumbnails`).
    pub cache: PathBuf,
    pub sizes: Vec<(&'static str, u32)>,
    pub threads: usize,
}

#[derive(Debug, Default)]
pub struct ThumbReport {
    /// Images thumbnailed.
    pub images: usize,
    /// PNG files written (images × sizes).
    pub written: usize,
    /// Images that could not be thumbnailed, with the reason.
    pub failed: Vec<(String, String)>,
}

/// The cache folder GLib and KDE use: `$XDG_CACHE_HOME/thumbnails`, else `~/.cache/thumbnails`.
pub fn default_cache() -> Option<PathBuf> {
    Some(crate::cache_home()?.join("thumbnails"))
}

/// `file://` URI of an absolute path, escaped as GLib's `g_filename_to_uri` does (the form
/// whose MD5 names the thumbnail).
pub fn file_uri(path: &[u8]) -> String {
    let mut uri = String::from("file://");
    for &b in path {
        let keep = b.is_ascii_alphanumeric() || b"!$&'()*+,-./:=@_~".contains(&b);
        if keep {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

/// File name of the thumbnail of `uri`: the MD5 of the URI in lower-case hex, `.png`.
pub fn thumb_name(uri: &str) -> String {
    let digest = Md5::digest(uri.as_bytes());
    let mut name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    name.push_str(".png");
    name
}

/// Whether a file kept as is is an image worth a thumbnail (see `album::probe`'s reasons).
fn verbatim_is_image(reason: &str) -> bool {
    !matches!(reason, "not an image" | "empty file")
}

/// Writes thumbnails for every image of the archive.
pub fn write_thumbnails(archive: &Archive, opts: &ThumbOptions) -> Result<ThumbReport, ThumbError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| ThumbError::Io { path, error }
    };
    let index = &archive.index;
    // A thumbnail is for a file in the folder: images that are not there get none (the folder
    // may be the mount or unpack of another archive, or hold only part of this one).
    let images: Vec<usize> = index
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| match &e.kind {
            EntryKind::Image(_) => true,
            EntryKind::Verbatim { reason, .. } => verbatim_is_image(reason),
            _ => false,
        })
        .map(|(i, _)| i)
        .collect();
    let absent: std::collections::HashSet<usize> = images
        .iter()
        .copied()
        .filter(|&i| {
            let rel = std::ffi::OsStr::from_bytes(&index.entries[i].path);
            opts.folder.join(rel).symlink_metadata().is_err()
        })
        .collect();
    if !images.is_empty() && absent.len() == images.len() {
        return Err(ThumbError::NotThisArchive(opts.folder.clone()));
    }
    // Only now, with something to write: a refusal leaves the cache as it was.
    for (dir, _) in &opts.sizes {
        let d = opts.cache.join(dir);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&opts.cache, std::fs::Permissions::from_mode(0o700));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).map_err(io(&d))?;
    }
    let report = Mutex::new(ThumbReport::default());
    let note = |r: Result<usize, String>, e: &Entry| {
        if let Ok(mut rep) = report.lock() {
            match r {
                Ok(n) => {
                    rep.images += 1;
                    rep.written += n;
                }
                Err(why) => rep.failed.push((e.path_lossy(), why)),
            }
        }
    };

    if let Ok(mut rep) = report.lock() {
        for &i in &absent {
            let e = &index.entries[i];
            rep.failed
                .push((e.path_lossy(), "not in the folder".into()));
        }
    }
    // Images kept as files: decoded from their bytes.
    let verbatim: Vec<usize> = images
        .iter()
        .copied()
        .filter(|i| !absent.contains(i))
        .filter(|&i| matches!(index.entries[i].kind, EntryKind::Verbatim { .. }))
        .collect();
    let next = Mutex::new(verbatim.into_iter());
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| loop {
                let Some(i) = next.lock().ok().and_then(|mut it| it.next()) else {
                    return;
                };
                let e = &index.entries[i];
                let EntryKind::Verbatim { blob, .. } = &e.kind else {
                    continue;
                };
                let r = archive
                    .read_file(blob)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| decode_oriented(&bytes))
                    .and_then(|img| store(&img, e, opts));
                note(r, e);
            });
        }
    });

    // Coded images: from the decoded frames.
    let failed = frames::each_image(
        archive,
        opts.threads.max(1),
        opts.threads.max(1),
        |i| matches!(index.entries[i].kind, EntryKind::Image(_)) && !absent.contains(&i),
        |_| false,
        |i, pic: crate::pixels::Decoded| {
            let e = &index.entries[i];
            let EntryKind::Image(img) = &e.kind else {
                return;
            };
            let img = apply_exif_orientation(pic.into_picture().into_dynamic(), &img.metadata);
            note(store(&img, e, opts), e);
        },
    )?;
    let mut report = report.into_inner().unwrap_or_default();
    for (i, why) in failed {
        if let Some(e) = index.entries.get(i) {
            report.failed.push((e.path_lossy(), why));
        }
    }
    Ok(report)
}

/// Decodes an image file's bytes, turned upright as its EXIF orientation says.
fn decode_oriented(bytes: &[u8]) -> Result<DynamicImage, String> {
    use image::ImageDecoder;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    reader.limits(crate::pack::decode_limits());
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img)
}

/// Turns a decoded image upright as the metadata kept with it says: an EXIF block (JPEG APP1,
/// PNG eXIf, WebP EXIF) or a TIFF's Orientation tag.
fn apply_exif_orientation(mut img: DynamicImage, metadata: &[MetaBlock]) -> DynamicImage {
    use image::metadata::Orientation;
    let orientation = metadata.iter().find_map(|m| match m {
        MetaBlock::JpegSegment { marker: 0xE1, data } => data
            .strip_prefix(b"Exif\0\0")
            .and_then(Orientation::from_exif_chunk),
        MetaBlock::PngChunk {
            kind: [b'e', b'X', b'I', b'f'],
            data,
        } => Orientation::from_exif_chunk(data),
        // Some writers start a WebP's EXIF chunk with JPEG's "Exif\0\0".
        MetaBlock::WebpChunk {
            kind: [b'E', b'X', b'I', b'F'],
            data,
        } => Orientation::from_exif_chunk(data.strip_prefix(b"Exif\0\0").unwrap_or(data)),
        // One SHORT, little-endian.
        MetaBlock::TiffTag {
            dir: crate::archive::TiffDir::Image,
            tag: 274,
            kind: 3,
            data,
        } if data.len() == 2 && data[1] == 0 => Orientation::from_exif(data[0]),
        _ => None,
    });
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    img
}

/// Writes the thumbnails of one image; returns how many files were written.
fn store(img: &DynamicImage, e: &Entry, opts: &ThumbOptions) -> Result<usize, String> {
    let mut path = opts.folder.as_os_str().as_encoded_bytes().to_vec();
    if !path.ends_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(&e.path);
    let uri = file_uri(&path);
    let name = thumb_name(&uri);
    let (w, h) = match &e.kind {
        EntryKind::Image(i) => (i.width, i.height),
        _ => (img.width(), img.height()),
    };
    let mut n = 0;
    for (dir, side) in &opts.sizes {
        // Never scaled up (the standard): small images are stored at their own size.
        let small = if img.width() <= *side && img.height() <= *side {
            img.clone()
        } else {
            img.thumbnail(*side, *side)
        };
        let texts = [
            ("Thumb::URI", uri.clone()),
            ("Thumb::MTime", e.mtime.secs.to_string()),
            ("Thumb::Size", e.served_size().to_string()),
            ("Thumb::Image::Width", w.to_string()),
            ("Thumb::Image::Height", h.to_string()),
            (
                "Software",
                concat!("av1pack ", env!("CARGO_PKG_VERSION")).to_string(),
            ),
        ];
        let dest = opts.cache.join(dir).join(&name);
        write_png(&small, &texts, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        n += 1;
    }
    Ok(n)
}

/// Writes an RGB or RGBA PNG with text chunks, atomically (temporary file, then rename) and
/// readable by its owner only, as the standard asks.
fn write_png(img: &DynamicImage, texts: &[(&str, String)], dest: &Path) -> Result<(), String> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".av1pack-thumb")
        .tempfile_in(dir)
        .map_err(|e| e.to_string())?;
    {
        let (data, color) = if img.color().has_alpha() {
            (img.to_rgba8().into_raw(), png::ColorType::Rgba)
        } else {
            (img.to_rgb8().into_raw(), png::ColorType::Rgb)
        };
        let mut enc = png::Encoder::new(
            std::io::BufWriter::new(tmp.as_file()),
            img.width(),
            img.height(),
        );
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        for (k, v) in texts {
            enc.add_text_chunk(k.to_string(), v.clone())
                .map_err(|e| e.to_string())?;
        }
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&data).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    tmp.persist(dest).map_err(|e| e.error.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TIFF's Orientation tag or a WebP's EXIF chunk turns its thumbnail as an EXIF block
    /// does a JPEG's.
    #[test]
    fn a_tiffs_or_webps_orientation_turns_its_thumbnail() {
        let img = || DynamicImage::ImageRgb8(image::RgbImage::new(40, 30));
        let tiff = |o: u8| MetaBlock::TiffTag {
            dir: crate::archive::TiffDir::Image,
            tag: 274,
            kind: 3,
            data: vec![o, 0],
        };
        let dims = |m: &[MetaBlock]| {
            let t = apply_exif_orientation(img(), m);
            (t.width(), t.height())
        };
        assert_eq!(dims(&[tiff(6)]), (30, 40));
        assert_eq!(dims(&[tiff(3)]), (40, 30));
        assert_eq!(dims(&[tiff(8)]), (30, 40));
        assert_eq!(dims(&[]), (40, 30));
        // Another directory's tag 274 is not the image's orientation.
        let exif = MetaBlock::TiffTag {
            dir: crate::archive::TiffDir::Exif,
            tag: 274,
            kind: 3,
            data: vec![6, 0],
        };
        assert_eq!(dims(&[exif]), (40, 30));
        // A WebP's EXIF chunk, with or without JPEG's "Exif\0\0" before it.
        let mut tiff = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0".to_vec();
        tiff.extend([0; 4]);
        for data in [tiff.clone(), [&b"Exif\0\0"[..], &tiff].concat()] {
            let webp = MetaBlock::WebpChunk {
                kind: *b"EXIF",
                data,
            };
            assert_eq!(dims(&[webp]), (30, 40));
        }
    }

    #[test]
    fn uris_are_escaped_like_glib() {
        assert_eq!(file_uri(b"/a b/c%d#e.png"), "file:///a%20b/c%25d%23e.png");
        assert_eq!(
            file_uri(b"/x/caf\xc3\xa9 (1).jpg"),
            "file:///x/caf%C3%A9%20(1).jpg"
        );
        assert_eq!(
            file_uri(b"/k/a&b=c+d,e;f?g.png"),
            "file:///k/a&b=c+d,e%3Bf%3Fg.png"
        );
    }

    #[test]
    fn names_are_the_md5_of_the_uri() {
        // md5("file:///home/jens/photos/me.png"), the standard's own example.
        assert_eq!(
            thumb_name("file:///home/jens/photos/me.png"),
            "c6ee772d9e49320e97ec29a7eb5b1697.png"
        );
    }
}
