//! Restoring an album folder from an archive.

use crate::archive::{Archive, Entry, EntryKind, ImageFormat, Timestamp};
use crate::frames::{self, FrameError};
use crate::pack::Progress;
use crate::partial::{self, Writing};
use crate::render::{self, OutputFormat};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use xxhash_rust::xxh3::xxh3_64;

#[derive(Debug, Clone)]
pub struct UnpackOptions {
    pub format: OutputFormat,
    /// Write into a folder that is not empty, replacing files and symlinks of the same names
    /// (each once its replacement is complete); symlinks there are never followed.
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
        Ok(_) => {
            // What an unpack killed here outright left is not the user's: it does not count.
            remove_stale_partials(out);
            let mut rd = fs::read_dir(out).map_err(io_err(out))?;
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
    let tree = Tree::new(out, opts.force);

    // Targets relative to `out`, named and checked once, before anything is written.
    let targets: Vec<Option<PathBuf>> = output_paths(&index.entries, opts.format)
        .iter()
        .map(|p| safe_relative(p))
        .collect();

    // Folders first (parents come before children in the index). Only those found or made
    // here as real folders get their times and modes at the end.
    let mut folders_made = vec![false; index.entries.len()];
    for (i, (e, target)) in index.entries.iter().zip(&targets).enumerate() {
        let Some(target) = target else {
            fail(
                e.path_lossy(),
                "path would leave the output folder: refused".into(),
            );
            continue;
        };
        if let EntryKind::Dir = e.kind {
            match tree.folder(target) {
                Ok(()) => folders_made[i] = true,
                Err(b) => fail(
                    e.path_lossy(),
                    format!("could not create the folder: {}", b.seen_from(target)),
                ),
            }
        }
    }

    // Verbatim files, in the order of their bytes in the archive.
    for (i, e, blob) in index.kept_in_archive_order() {
        let Some(target) = &targets[i] else { continue };
        let result = if !blob.is_stored() {
            // Stored compressed: decoded whole and checked (size, hash) before writing.
            match archive.read_file(blob) {
                Ok(data) => tree
                    .write_file(target, e, |f| f.write_all(&data))
                    .map(|()| true),
                Err(err) => Err(err.to_string()),
            }
        } else {
            tree.write_file(target, e, |f| {
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
                Ok(hasher.digest() == blob.hash && pos == blob.len)
            })
        };
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
            Err(why) => fail(e.path_lossy(), format!("could not restore: {why}")),
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
                tree.write_file(target, e, |f| f.write_all(&bytes))?;
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

    // Hard links: each later name, written above with the same bytes, becomes another name of
    // the first one's file, where both were written whole (else the copy stays).
    let failed: std::collections::HashSet<String> = report
        .lock()
        .map(|r| r.failed.iter().map(|(p, _)| p.clone()).collect())
        .unwrap_or_default();
    for &(i, first) in &index.links {
        let (Some(e), Some(f), Some(Some(rel)), Some(Some(first_rel))) = (
            index.entries.get(i),
            index.entries.get(first),
            targets.get(i),
            targets.get(first),
        ) else {
            continue;
        };
        if failed.contains(&e.path_lossy()) || failed.contains(&f.path_lossy()) {
            continue;
        }
        if let Err(why) = tree.link_file(first_rel, rel) {
            log::warn!(
                "{}: kept as a copy, not a hard link of {}: {why}",
                e.path_lossy(),
                f.path_lossy()
            );
        }
    }

    // Counts an entry restored, or reports why it was not.
    let settle = |e: &Entry, r: Result<(), String>, what: &str| match r {
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
        let r = tree.write_symlink(target, OsStr::from_bytes(link), e.mtime);
        settle(e, r, "could not create the symlink");
    }

    // Folder times and modes last, deepest first (writing into a folder changes its mtime),
    // on the folders checked above only, opened without following any symlink.
    for ((e, target), made) in index.entries.iter().zip(&targets).zip(&folders_made).rev() {
        if let (EntryKind::Dir, Some(target), true) = (&e.kind, target, made) {
            let r = open_folder_nofollow(out, target)
                .and_then(|f| {
                    f.set_permissions(fs::Permissions::from_mode(e.mode))?;
                    f.set_modified(to_system_time(e.mtime))
                })
                .map_err(|err| err.to_string());
            settle(e, r, "could not set the folder's time or mode");
        }
    }
    report
        .into_inner()
        .map_err(|_| UnpackError::Frames(FrameError::Internal("report lock poisoned".into())))
}

/// The longest file name Linux file systems take (NAME_MAX), in bytes.
const NAME_MAX: usize = 255;

/// Where unpack writes each entry, as a path in the archive's terms (relative, `/`-separated;
/// still to be checked with [`safe_relative`]).
///
/// With [`OutputFormat::Original`], every entry's own path. With [`OutputFormat::Png`], an
/// image coded as video that is not a PNG becomes a PNG named with `.png` in place of its
/// extension (`a/IMG_1.jpg` → `a/IMG_1.png`), unless another entry of the archive has that name
/// in the same folder, or another image would get it too (names compared with ASCII case
/// ignored, so that `IMG_2.PNG` and a converted `IMG_2.png` never sit side by side): then its
/// whole name plus `.png` (`a/IMG_1.jpg.png`), or if that is taken as well, `.2.png`, `.3.png`,
/// ... (`a/IMG_1.jpg.2.png`). A name that would grow past 255 bytes, the longest file name
/// Linux takes, stays as it is. Images that are PNG files already or named `.png` (any case),
/// kept files, folders and symlinks keep their names exactly. Decided from the index alone, in index order, so the
/// same archive always gives the same names.
pub fn output_paths(entries: &[Entry], format: OutputFormat) -> Vec<Vec<u8>> {
    let paths: Vec<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
    if format == OutputFormat::Original {
        return paths.iter().map(|p| p.to_vec()).collect();
    }
    let converted: Vec<bool> = entries
        .iter()
        .map(|e| matches!(&e.kind, EntryKind::Image(img) if img.format != ImageFormat::Png))
        .collect();
    png_names(&paths, &converted)
}

/// Where a path's file name starts.
fn name_start(path: &[u8]) -> usize {
    path.iter().rposition(|&b| b == b'/').map_or(0, |p| p + 1)
}

/// [`output_paths`]'s rule for `--format png`, on paths and which of them are converted.
fn png_names(paths: &[&[u8]], converted: &[bool]) -> Vec<Vec<u8>> {
    // A name's folder as it is, its file name with ASCII case ignored.
    let key = |p: &[u8]| -> Vec<u8> {
        let start = name_start(p);
        let mut k = p[..start].to_vec();
        k.extend(p[start..].iter().map(u8::to_ascii_lowercase));
        k
    };
    let fits = |p: &[u8]| p.len() - name_start(p) <= NAME_MAX;
    let mut entries: HashMap<Vec<u8>, usize> = HashMap::new();
    for p in paths {
        *entries.entry(key(p)).or_default() += 1;
    }
    let primary: Vec<Option<Vec<u8>>> = paths
        .iter()
        .zip(converted)
        .map(|(p, &c)| c.then(|| render::png_path(p)))
        .collect();
    // How many images want each name that is not their own.
    let mut wanted: HashMap<Vec<u8>, usize> = HashMap::new();
    for (p, own) in primary.iter().zip(paths) {
        if let Some(p) = p.as_ref().map(|p| key(p)).filter(|p| *p != key(own)) {
            *wanted.entry(p).or_default() += 1;
        }
    }
    let mut out: Vec<Vec<u8>> = paths.iter().map(|p| p.to_vec()).collect();
    // Every entry's own name stays reserved: a converted name never takes one.
    let mut taken: HashSet<Vec<u8>> = entries.keys().cloned().collect();
    let mut clashed = Vec::new();
    for (i, p) in primary.into_iter().enumerate() {
        let Some(p) = p else { continue };
        let k = key(&p);
        let own = k == key(paths[i]);
        let others = entries
            .get(&k)
            .copied()
            .unwrap_or(0)
            .saturating_sub(usize::from(own));
        let rivals = if own {
            0
        } else {
            wanted.get(&k).map_or(0, |n| n - 1)
        };
        if own && others == 0 {
            // Named .png already (`photo.PNG` holding a JPEG): the name stays, case included.
        } else if others == 0 && rivals == 0 && fits(&p) {
            taken.insert(k);
            out[i] = p;
        } else {
            clashed.push(i);
        }
    }
    for i in clashed {
        // At most taken.len() candidates can be taken: one of the next ones is free.
        for n in 1..=taken.len() + 1 {
            let mut c = paths[i].to_vec();
            if n > 1 {
                c.extend_from_slice(format!(".{n}").as_bytes());
            }
            c.extend_from_slice(b".png");
            if !fits(&c) {
                break;
            }
            if taken.insert(key(&c)) {
                out[i] = c;
                break;
            }
        }
    }
    out
}

/// Something in the way of a folder: the folder itself or one of its parents.
#[derive(Debug, Clone)]
struct Blocked {
    /// The folder in the way, relative to the output folder.
    at: PathBuf,
    why: Obstacle,
}

#[derive(Debug, Clone)]
enum Obstacle {
    /// Something else has the name: "exists and is ...".
    Exists(&'static str),
    /// The system's error.
    Io(String),
}

impl Blocked {
    /// The reason, as told about `path` (the blocked folder itself, or a path below it).
    fn seen_from(&self, path: &Path) -> String {
        let at = crate::archive::printable_path(self.at.as_os_str().as_bytes());
        match &self.why {
            Obstacle::Exists(what) if self.at == path => (*what).into(),
            Obstacle::Io(err) if self.at == path => err.clone(),
            Obstacle::Exists(what) => format!("{at} {what}"),
            Obstacle::Io(err) => format!("{at}: {err}"),
        }
    }
}

/// What is at a name that unpack wants, as the end of a message.
fn what_is_there(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "exists and is a symbolic link"
    } else if t.is_dir() {
        "exists and is a folder"
    } else if t.is_file() {
        "exists and is a file"
    } else {
        "exists and is not a regular file"
    }
}

/// The temporary name of a file being unpacked: `.PID-N.av1pack-partial` in its folder.
fn partial_name(n: u64) -> String {
    format!(".{}-{n}{}", std::process::id(), partial::SUFFIX)
}

/// The process that made a temporary file named as [`partial_name`] does.
fn partial_owner(name: &OsStr) -> Option<libc::pid_t> {
    let rest = name
        .to_str()?
        .strip_prefix('.')?
        .strip_suffix(partial::SUFFIX)?;
    let (pid, n) = rest.split_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Whether process `pid` is running (or exists and is another user's).
fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes from `dir` the temporary files and symlinks an unpack left when it was killed
/// outright (SIGKILL, a crash, a power cut: no handler ran): named as [`partial_name`]
/// does, their process gone, and (files) not locked by a running unpack. Returns how many.
fn remove_stale_partials(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = partial_owner(&name) else {
            continue;
        };
        if pid as u32 == std::process::id() || process_alive(pid) {
            continue;
        }
        let path = e.path();
        let stale = match e.file_type() {
            Ok(t) if t.is_symlink() => true,
            Ok(t) if t.is_file() => OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .is_ok_and(|f| partial::lock(&f)),
            _ => false,
        };
        if stale && fs::remove_file(&path).is_ok() {
            log::info!(
                "{}: removed, left by an interrupted unpack",
                crate::archive::printable(&path)
            );
            removed += 1;
        }
    }
    removed
}

/// The output folder. Every file and symlink is made under a temporary name in its folder and
/// renamed into place when complete, so that a name never holds a partial file, and a file
/// that `--force` replaces stays as it was until its replacement is whole. Folders are
/// reached through real folders only, each checked once (`lstat`): a symlink found in the
/// output folder is never followed.
struct Tree<'a> {
    root: &'a Path,
    force: bool,
    /// Folders below `root` found or made as real folders, or what is in their way.
    folders: Mutex<HashMap<PathBuf, Result<(), Blocked>>>,
    /// Numbers temporary names.
    next: AtomicU64,
}

impl<'a> Tree<'a> {
    fn new(root: &'a Path, force: bool) -> Self {
        Tree {
            root,
            force,
            folders: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// Makes sure `rel` (relative to the root) is a real folder reached through real folders,
    /// creating it and its parents where missing.
    fn folder(&self, rel: &Path) -> Result<(), Blocked> {
        let mut folders = self.folders.lock().map_err(|_| Blocked {
            at: rel.to_owned(),
            why: Obstacle::Io("folder cache poisoned".into()),
        })?;
        // The folders to check, deepest first, up to one already known (or the root).
        let mut chain = Vec::new();
        let mut known = Ok(());
        let mut p = rel;
        while !p.as_os_str().is_empty() {
            if let Some(r) = folders.get(p) {
                known = r.clone();
                break;
            }
            chain.push(p);
            p = p.parent().unwrap_or(Path::new(""));
        }
        for p in chain.into_iter().rev() {
            let r = known.and_then(|()| {
                self.check_folder(p).map_err(|why| Blocked {
                    at: p.to_owned(),
                    why,
                })
            });
            folders.insert(p.to_owned(), r.clone());
            known = r;
        }
        known
    }

    /// One folder whose parent is known to be a real folder.
    fn check_folder(&self, rel: &Path) -> Result<(), Obstacle> {
        let path = self.root.join(rel);
        let mut made_meanwhile = false;
        loop {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    if !made_meanwhile {
                        remove_stale_partials(&path);
                    }
                    return Ok(());
                }
                Ok(m) => return Err(Obstacle::Exists(what_is_there(&m))),
                Err(e) if e.kind() == io::ErrorKind::NotFound && !made_meanwhile => {
                    match fs::create_dir(&path) {
                        Ok(()) => return Ok(()),
                        // Made by someone else meanwhile: look again, once.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => made_meanwhile = true,
                        Err(e) => return Err(Obstacle::Io(e.to_string())),
                    }
                }
                Err(e) => return Err(Obstacle::Io(e.to_string())),
            }
        }
    }

    /// The parent folder of `rel` (checked), and the full path of `rel`. What is at `rel`
    /// already is found by the rename that puts the new file there ([`Tree::commit`]).
    fn place(&self, rel: &Path) -> Result<(PathBuf, PathBuf), String> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.folder(parent).map_err(|b| b.seen_from(rel))?;
        Ok((self.root.join(parent), self.root.join(rel)))
    }

    /// Creates something new under a free temporary name in `dir` with `make` (which must
    /// fail with `AlreadyExists` when the name is taken, and leave nothing behind then).
    fn create_temp<T>(
        &self,
        dir: &Path,
        make: impl Fn(&Path) -> io::Result<T>,
    ) -> io::Result<(Writing, T)> {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let tmp = Writing::register(dir.join(partial_name(n)));
            match make(tmp.path()) {
                Ok(t) => return Ok((tmp, t)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Renames the complete `tmp` to `path`: over what is there with --force (a file or a
    /// symlink, itself, never what it points to), else only if nothing is. Removes `tmp` if
    /// that fails.
    fn commit(&self, tmp: Writing, path: &Path) -> Result<(), String> {
        let r = if self.force {
            fs::rename(tmp.path(), path)
        } else {
            rename_noreplace(tmp.path(), path)
        };
        if let Err(e) = r {
            tmp.discard();
            let in_the_way = matches!(
                e.raw_os_error(),
                Some(libc::EEXIST | libc::EISDIR | libc::ENOTEMPTY)
            );
            return Err(match fs::symlink_metadata(path) {
                Ok(m) if in_the_way => what_is_there(&m).into(),
                _ => e.to_string(),
            });
        }
        Ok(())
    }

    /// Writes the file of entry `e` at `rel` with `write`, gives it the entry's mode and time,
    /// and renames it into place. Nothing is left under any name if a step fails.
    fn write_file<T>(
        &self,
        rel: &Path,
        e: &Entry,
        write: impl FnOnce(&mut File) -> io::Result<T>,
    ) -> Result<T, String> {
        let (dir, path) = self.place(rel)?;
        let (tmp, mut f) = self
            .create_temp(&dir, |tmp| {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .mode(0o600)
                    .open(tmp)
            })
            .map_err(|e| e.to_string())?;
        // Held until the file has its name: a later unpack does not take it for a killed
        // one's (`remove_stale_partials`).
        partial::lock(&f);
        let written = write(&mut f).and_then(|t| {
            f.set_permissions(fs::Permissions::from_mode(e.mode))?;
            f.set_modified(to_system_time(e.mtime))?;
            Ok(t)
        });
        match written {
            Ok(t) => self.commit(tmp, &path).map(|()| t),
            Err(err) => {
                tmp.discard();
                Err(err.to_string())
            }
        }
    }

    /// Makes the file at `rel`, written already, another name of the file at `first`: a hard
    /// link made under a temporary name and renamed over it (so `rel` keeps its bytes if
    /// linking fails).
    fn link_file(&self, first: &Path, rel: &Path) -> Result<(), String> {
        let (dir, path) = self.place(rel)?;
        let source = self.root.join(first);
        let (tmp, ()) = self
            .create_temp(&dir, |tmp| fs::hard_link(&source, tmp))
            .map_err(|e| e.to_string())?;
        if let Err(e) = fs::rename(tmp.path(), &path) {
            tmp.discard();
            return Err(e.to_string());
        }
        Ok(())
    }

    /// Makes the symlink `rel` → `link` with time `mtime`, and renames it into place.
    fn write_symlink(&self, rel: &Path, link: &OsStr, mtime: Timestamp) -> Result<(), String> {
        let (dir, path) = self.place(rel)?;
        let (tmp, ()) = self
            .create_temp(&dir, |tmp| std::os::unix::fs::symlink(link, tmp))
            .map_err(|e| e.to_string())?;
        if let Err(e) = set_mtime(tmp.path(), mtime) {
            tmp.discard();
            return Err(e.to_string());
        }
        self.commit(tmp, &path)
    }
}

/// Renames `from` to `to` unless `to` exists (renameat2 RENAME_NOREPLACE; where the file
/// system does not have it, a check before the rename).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => match fs::symlink_metadata(to) {
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EEXIST)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::rename(from, to),
            Err(e) => Err(e),
        },
        _ => Err(err),
    }
}

/// Opens folder `rel` below `root` for its mode and time, following no symlink on the way
/// (below `root`) nor at its end.
fn open_folder_nofollow(root: &Path, rel: &Path) -> io::Result<File> {
    let mut dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)?;
    let mut names = rel.components().peekable();
    while let Some(c) = names.next() {
        let name = std::ffi::CString::new(c.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        // Folders on the way only to go through (as path resolution does), the last one to
        // change.
        let access = if names.peek().is_some() {
            libc::O_PATH
        } else {
            libc::O_RDONLY
        };
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                access | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor openat just gave us, owned by nothing else.
        dir = unsafe { File::from_raw_fd(fd) };
    }
    Ok(dir)
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
fn set_mtime(path: &Path, t: Timestamp) -> io::Result<()> {
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
    // SAFETY: valid NUL-terminated path and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
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

    /// `png_names` on (path, converted) pairs, as strings.
    fn png_names_of(entries: &[(&str, bool)]) -> Vec<String> {
        let paths: Vec<&[u8]> = entries.iter().map(|(p, _)| p.as_bytes()).collect();
        let converted: Vec<bool> = entries.iter().map(|&(_, c)| c).collect();
        png_names(&paths, &converted)
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect()
    }

    #[test]
    fn converted_names_never_clash() {
        let long = "n".repeat(252);
        let long_ext = format!("{}.bmp", "m".repeat(251));
        let names = png_names_of(&[
            ("IMG_0001.bmp", true),
            ("IMG_0001.jpg", true),
            ("IMG_0001.png", false),
            ("IMG_0001.tif", true),
            ("a.jpg", true),
            ("b.jpg", true),
            ("b.webp", true),
            ("c.bmp", true),
            ("c.bmp.png", false),
            ("c.jpg", true),
            ("dir.png", false),
            ("dir.jpg", true),
            ("mixed.JPG", true),
            ("misnamed.PNG", true),
            ("other/IMG_0001.jpg", true),
            ("sub/Case.PNG", false),
            ("sub/case.webp", true),
            ("x.tar.jpeg", true),
            ("x.tar.png", true),
            (&long, true),
            (&long_ext, true),
            ("noext", true),
        ]);
        assert_eq!(
            names,
            [
                "IMG_0001.bmp.png",
                "IMG_0001.jpg.png",
                "IMG_0001.png",
                "IMG_0001.tif.png",
                "a.png",
                // Two converted names alike: both get their whole name plus .png.
                "b.jpg.png",
                "b.webp.png",
                // c.bmp.png is an entry of its own.
                "c.bmp.2.png",
                "c.bmp.png",
                "c.jpg.png",
                "dir.png",
                "dir.jpg.png",
                "mixed.png",
                // A JPEG named .PNG keeps its name.
                "misnamed.PNG",
                "other/IMG_0001.png",
                "sub/Case.PNG",
                "sub/case.webp.png",
                // A JPEG named x.tar.png converts to its own name, which x.tar.jpeg may not take.
                "x.tar.jpeg.png",
                "x.tar.png",
                // 256 bytes with .png: kept as it is.
                long.as_str(),
                // Its own .png fits (255 bytes); the whole name plus .png would not.
                &format!("{}.png", "m".repeat(251)),
                "noext.png",
            ]
        );
    }

    #[test]
    fn too_long_converted_names_stay_as_they_are() {
        let long = format!("{}.bmp", "m".repeat(251));
        let names = png_names_of(&[(&long, true), (&format!("{}.jpg", "m".repeat(251)), true)]);
        // Both want the same .png name; neither fits with its whole name plus .png.
        assert_eq!(names[0], long);
        assert!(names[1].ends_with(".jpg"));
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
