//! Restoring an album folder from an archive.

use crate::archive::{Archive, Entry, EntryKind, Timestamp};
use crate::frames::{self, FrameError};
use crate::pack::Progress;
use crate::render::{self, OutputFormat};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use xxhash_rust::xxh3::xxh3_64;

#[derive(Debug, Clone)]
pub struct UnpackOptions {
    pub format: OutputFormat,
    /// Write into a folder that is not empty, replacing files of the same names.
    pub force: bool,
    /// Decoder threads.
    pub threads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{0}: the folder is not empty (use --force to write into it)")]
    NotEmpty(PathBuf),
    #[error(transparent)]
    Frames(#[from] FrameError),
}

#[derive(Debug, Default)]
pub struct UnpackReport {
    pub restored: usize,
    pub bytes: u64,
    /// Entries that could not be restored, with the reason.
    pub failed: Vec<(String, String)>,
    /// Images whose rendered bytes differ from what pack recorded (renderer changed).
    pub rendered_differently: usize,
}

/// Checks that an archive path stays inside the output folder: relative, no `..`, `.`,
/// empty components or NUL bytes.
pub fn safe_relative(path: &[u8]) -> Option<PathBuf> {
    if path.is_empty() || path.contains(&0) || path[0] == b'/' {
        return None;
    }
    let p = Path::new(OsStr::from_bytes(path));
    let mut out = PathBuf::new();
    for c in path.split(|&b| b == b'/') {
        if c.is_empty() || c == b"." || c == b".." {
            return None;
        }
    }
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    Some(out)
}

pub fn unpack(
    archive: &Archive,
    out: &Path,
    opts: &UnpackOptions,
    progress: &dyn Progress,
) -> Result<UnpackReport, UnpackError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |error| UnpackError::Io { path, error }
    };
    match fs::read_dir(out) {
        Ok(mut rd) => {
            if rd.next().is_some() && !opts.force {
                return Err(UnpackError::NotEmpty(out.to_owned()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(out).map_err(io_err(out))?
        }
        Err(e) => return Err(io_err(out)(e)),
    }
    let index = &archive.index;
    let total: u64 = index.entries.iter().map(Entry::served_size).sum();
    progress.start(index.entries.len() as u64, total);
    let report = Mutex::new(UnpackReport::default());
    let fail = |path: String, why: String| {
        log::error!("{path}: {why}");
        if let Ok(mut r) = report.lock() {
            r.failed.push((path, why));
        }
    };

    // Targets, checked once.
    let targets: Vec<Option<PathBuf>> = index
        .entries
        .iter()
        .map(|e| {
            let rel = safe_relative(&e.path)?;
            let rel = match (&e.kind, opts.format) {
                (EntryKind::Image(_), OutputFormat::Png) => {
                    safe_relative(&render::png_path(&e.path))?
                }
                _ => rel,
            };
            Some(out.join(rel))
        })
        .collect();

    // Folders first (parents come before children in the index).
    for (e, target) in index.entries.iter().zip(&targets) {
        let Some(target) = target else {
            fail(
                e.path_lossy(),
                "path would leave the output folder: refused".into(),
            );
            continue;
        };
        if let EntryKind::Dir = e.kind {
            if let Err(err) = make_dir(target) {
                fail(
                    e.path_lossy(),
                    format!("could not create the folder: {err}"),
                );
            }
        }
    }

    // Verbatim files, in the order of their bytes in the archive.
    for (i, e, blob) in index.kept_in_archive_order() {
        let Some(target) = &targets[i] else { continue };
        let result = (|| -> io::Result<bool> {
            ensure_parent(target)?;
            if !blob.is_stored() {
                // Stored compressed: decoded whole and checked (size, hash) before writing.
                let data = archive.read_file(blob).map_err(io::Error::other)?;
                let mut f = create_file(target, opts.force)?;
                f.write_all(&data)?;
                finish_file(f, e)?;
                return Ok(true);
            }
            let mut f = create_file(target, opts.force)?;
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            let mut pos = 0u64;
            while pos < blob.len {
                let chunk = archive
                    .read_blob(blob, pos, 1 << 20)
                    .map_err(io::Error::other)?;
                if chunk.is_empty() {
                    break;
                }
                hasher.update(&chunk);
                f.write_all(&chunk)?;
                pos += chunk.len() as u64;
            }
            finish_file(f, e)?;
            Ok(hasher.digest() == blob.hash && pos == blob.len)
        })();
        match result {
            Ok(true) => {
                if let Ok(mut r) = report.lock() {
                    r.restored += 1;
                    r.bytes += blob.len;
                }
            }
            Ok(false) => fail(
                e.path_lossy(),
                "stored bytes are damaged (checksum mismatch); written as found".into(),
            ),
            Err(err) => fail(e.path_lossy(), format!("could not restore: {err}")),
        }
        progress.file_done(&e.path_lossy(), blob.len);
    }

    // Images, track by track, rendered and written by worker threads.
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let renderer = render::Renderer::for_archive(&index.renderer);
    let write_image = |i: usize, pic: crate::pixels::Decoded| {
        let e = &index.entries[i];
        let (EntryKind::Image(img), Some(target)) = (&e.kind, &targets[i]) else {
            return;
        };
        let result = render::render_decoded(img, &pic, opts.format, renderer)
            .map_err(|err| err.to_string())
            .and_then(|bytes| {
                write_whole(target, &bytes, e, opts.force).map_err(|err| err.to_string())?;
                Ok(bytes)
            });
        match result {
            Ok(bytes) => {
                let differs = opts.format == OutputFormat::Original
                    && (bytes.len() as u64 != img.rendered.size
                        || xxh3_64(&bytes) != img.rendered.hash);
                if differs {
                    log::warn!(
                        "{}: rendered bytes differ from those recorded at pack time",
                        e.path_lossy()
                    );
                }
                if let Ok(mut r) = report.lock() {
                    r.restored += 1;
                    r.bytes += bytes.len() as u64;
                    r.rendered_differently += usize::from(differs);
                }
                progress.file_done(&e.path_lossy(), bytes.len() as u64);
            }
            Err(why) => fail(e.path_lossy(), format!("could not write the image: {why}")),
        }
    };
    let lost = frames::each_image(
        archive,
        opts.threads,
        workers,
        |i| targets[i].is_some(),
        |img| renderer.uses_planes(img, opts.format),
        write_image,
    )?;
    for (i, why) in lost {
        fail(index.entries[i].path_lossy(), why);
    }

    // Counts an entry restored, or reports why it was not.
    let settle = |e: &Entry, r: io::Result<()>, what: &str| match r {
        Ok(()) => {
            if let Ok(mut r) = report.lock() {
                r.restored += 1;
            }
        }
        Err(err) => fail(e.path_lossy(), format!("{what}: {err}")),
    };

    // Symlinks last, so that nothing is ever written through one.
    for (e, target) in index.entries.iter().zip(&targets) {
        let (EntryKind::Symlink { target: link }, Some(target)) = (&e.kind, target) else {
            continue;
        };
        let r = ensure_parent(target)
            .and_then(|()| std::os::unix::fs::symlink(OsStr::from_bytes(link), target))
            .and_then(|()| set_mtime(target, e.mtime, false));
        settle(e, r, "could not create the symlink");
    }

    // Folder times and modes last, deepest first (writing into a folder changes its mtime).
    for (e, target) in index.entries.iter().zip(&targets).rev() {
        if let (EntryKind::Dir, Some(target)) = (&e.kind, target) {
            let r = fs::set_permissions(target, fs::Permissions::from_mode(e.mode))
                .and_then(|()| set_mtime(target, e.mtime, true));
            settle(e, r, "could not set the folder's time or mode");
        }
    }
    report
        .into_inner()
        .map_err(|_| UnpackError::Frames(FrameError::Internal("report lock poisoned".into())))
}

fn make_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a folder",
        )),
        Err(_) => {
            ensure_parent(path)?;
            fs::create_dir(path)
        }
    }
}

/// Creates missing parent folders; refuses to go through a symlink.
fn ensure_parent(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        match fs::symlink_metadata(parent) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "parent is not a folder",
            )),
            Err(_) => {
                ensure_parent(parent)?;
                fs::create_dir(parent)
            }
        }
    } else {
        Ok(())
    }
}

fn create_file(path: &Path, replace: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).custom_flags(libc::O_NOFOLLOW);
    if replace {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    o.mode(0o600).open(path)
}

fn finish_file(f: File, e: &Entry) -> io::Result<()> {
    f.set_permissions(fs::Permissions::from_mode(e.mode))?;
    f.set_modified(to_system_time(e.mtime))?;
    Ok(())
}

fn write_whole(path: &Path, bytes: &[u8], e: &Entry, replace: bool) -> io::Result<()> {
    ensure_parent(path)?;
    let mut f = create_file(path, replace)?;
    f.write_all(bytes)?;
    finish_file(f, e)
}

/// The time an index records (the epoch if it cannot be represented: never a panic).
pub fn to_system_time(t: Timestamp) -> std::time::SystemTime {
    use std::time::{Duration, UNIX_EPOCH};
    let nanos = Duration::from_nanos(u64::from(t.nanos));
    let secs = Duration::from_secs(t.secs.unsigned_abs());
    let base = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(secs)
    } else {
        UNIX_EPOCH.checked_sub(secs)
    };
    base.and_then(|b| b.checked_add(nanos))
        .unwrap_or(UNIX_EPOCH)
}

/// Sets a path's mtime without following a final symlink.
fn set_mtime(path: &Path, t: Timestamp, follow: bool) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: t.secs as libc::time_t,
            tv_nsec: t.nanos as libc::c_long,
        },
    ];
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: valid NUL-terminated path and a two-element timespec array.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"a/../../x",
            b"a//b",
            b"./a",
            b"a/.",
            b"",
            b"a\0b",
        ] {
            assert!(
                safe_relative(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            safe_relative(b"a/b c/d.jpg"),
            Some(PathBuf::from("a/b c/d.jpg"))
        );
        assert!(safe_relative(b"caf\xe9/x").is_some());
    }

    #[test]
    fn any_recorded_time_converts_without_panicking() {
        use std::time::{Duration, UNIX_EPOCH};
        for (secs, nanos) in [(i64::MAX, u32::MAX), (i64::MIN, u32::MAX), (0, u32::MAX)] {
            to_system_time(Timestamp { secs, nanos });
        }
        let t = to_system_time(Timestamp {
            secs: -5,
            nanos: 250_000_000,
        });
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_millis(4750)
        );
    }
}
