//! Files that pack and unpack are still writing: named `….av1pack-partial` until whole, locked
//! while they are written, and known to this process until they have their real names, so that
//! a signal handler can remove them ([`remove_all`]). How a later run tells that one was left
//! by a killed process differs by who wrote it (pack: unlocked and a minute old; unpack:
//! unlocked and its process gone); that stays with each.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The end of the name of a file that pack or unpack is still writing.
pub(crate) const SUFFIX: &str = ".av1pack-partial";

/// The folder a file at `path` is written in (`.` for a bare name).
pub(crate) fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The start of the names of the partial files a pack writing `archive` makes beside it
/// (`.NAME.`, then a random part and [`SUFFIX`]).
pub(crate) fn pack_prefix(archive: &Path) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(archive.file_name().unwrap_or_default());
    prefix.push(".");
    prefix
}

/// Whether `name` is the name of a partial file whose names start with `prefix`.
pub(crate) fn is_partial(name: &std::ffi::OsStr, prefix: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes().starts_with(prefix.as_bytes()) && name.as_bytes().ends_with(SUFFIX.as_bytes())
}

/// Takes the advisory lock that marks a partial file as being written (held until `file`
/// closes); false when another process holds it, or the filesystem has no locks.
pub(crate) fn lock(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an open descriptor that `file` owns.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Partial files of a process: [`WRITING`]'s type (tests make their own).
pub(crate) struct Registry(Mutex<Vec<PathBuf>>);

/// The partial files this process is writing.
static WRITING: Registry = Registry::new();

impl Registry {
    const fn new() -> Registry {
        Registry(Mutex::new(Vec::new()))
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        // The list stays valid whatever panicked while holding it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&'static self, path: PathBuf) -> Writing {
        self.list().push(path.clone());
        Writing {
            path,
            registry: self,
        }
    }

    fn remove_all(&self) -> Vec<PathBuf> {
        self.list()
            .drain(..)
            .filter(|p| std::fs::remove_file(p).is_ok())
            .collect()
    }
}

/// A partial file, known to [`remove_all`] while this value lives: drop it once the file has
/// its real name or is removed.
pub(crate) struct Writing {
    path: PathBuf,
    registry: &'static Registry,
}

impl Writing {
    pub(crate) fn register(path: PathBuf) -> Writing {
        WRITING.register(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the unfinished file (best effort: it is named as partial if it stays) and
    /// forgets it.
    pub(crate) fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut list = self.registry.list();
        if let Some(i) = list.iter().position(|p| *p == self.path) {
            list.swap_remove(i);
        }
    }
}

/// Removes the partial files this process is writing (for a signal handler: the process is
/// about to end) and returns the paths of those removed.
pub fn remove_all() -> Vec<PathBuf> {
    WRITING.remove_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_files_are_removed_until_dropped() {
        static R: Registry = Registry::new();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let keep = R.register(a.clone());
        let done = R.register(b.clone());
        assert_eq!(keep.path(), a);
        drop(done);
        assert_eq!(R.remove_all(), std::slice::from_ref(&a));
        assert!(!a.exists() && b.exists());
        drop(keep);
        assert!(R.remove_all().is_empty());
    }
}
