//! The testable core of the read-only filesystem served by `av1pack mount`.
//!
//! Nothing in this module knows about FUSE: [`FsCore`] answers plain questions
//! ("what is in directory 7?", "give me 4096 bytes of inode 12 at offset 0")
//! with plain values and [`FsError`]s that carry an errno. `crate::fuse` is the
//! thin adapter that turns kernel requests into these calls.
//!
//! The tree is fixed at construction time from a list of [`NodeSpec`]s; file
//! bytes come from a [`ContentSource`] (the archive decoder), which is only
//! ever asked for file *content*: listing, lookup and `stat` are answered from
//! the node table alone.

mod ops;
mod tree;

#[cfg(test)]
mod tests;

use std::time::SystemTime;

pub use self::ops::{DirEntry, FsCore, ReadDir};

/// One entry of the archive as it should appear in the mounted tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Relative path, `/`-separated bytes, no leading `/`, may be non-UTF-8.
    /// Parents may be missing from the list: they are created implicitly.
    /// The empty path names the root directory (only a `Dir` may use it, to
    /// give the root an explicit mtime).
    pub path: Vec<u8>,
    /// What the node is.
    pub kind: NodeKind,
    /// Modification time reported for the node (also used as atime and ctime).
    pub mtime: SystemTime,
    /// Exact byte size of the file as served (files only; ignored otherwise).
    pub size: u64,
    /// Opaque content id handed back to the [`ContentSource`] (files only).
    pub id: usize,
}

/// The kind of a [`NodeSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A regular file whose bytes come from the [`ContentSource`].
    File,
    /// A symbolic link with the given target (bytes, may be non-UTF-8).
    Symlink(Vec<u8>),
}

/// Supplies file bytes. Implementations may be slow (decoding video) and are
/// called from several threads at once.
pub trait ContentSource: Send + Sync {
    /// Read up to `size` bytes at `offset` of content `id`; returns fewer only
    /// at end of file.
    fn read(&self, id: usize, offset: u64, size: u32) -> Result<Vec<u8>, ContentError>;
    /// Hint: a file with this content id was opened (for prefetching).
    fn opened(&self, _id: usize) {}
    /// Hint: a file handle with this content id was closed.
    fn released(&self, _id: usize) {}
}

/// Why a [`ContentSource`] could not produce bytes.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The archive data is damaged (bad checksum, undecodable frame, ...).
    #[error("damaged data: {0}")]
    Damaged(String),
    /// Reading the archive failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Options of the core that do not come from the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreOptions {
    /// Owner reported for every node.
    pub uid: u32,
    /// Group reported for every node.
    pub gid: u32,
}

impl CoreOptions {
    /// Owner and group of the current (mounting) process: its effective ids.
    pub fn current_process() -> CoreOptions {
        // SAFETY: geteuid/getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        CoreOptions { uid, gid }
    }
}

impl Default for CoreOptions {
    fn default() -> Self {
        CoreOptions::current_process()
    }
}

/// File type of a node, as reported in attributes and directory entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Directory (`S_IFDIR`).
    Dir,
    /// Regular file (`S_IFREG`).
    File,
    /// Symbolic link (`S_IFLNK`).
    Symlink,
}

/// Attributes of a node (what `stat` shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number (root = 1).
    pub ino: u64,
    /// File type.
    pub kind: FileKind,
    /// Size in bytes: exact file size; target length for symlinks; 4096 for directories.
    pub size: u64,
    /// 512-byte blocks: `ceil(size / 512)` for files, 0 for directories and symlinks.
    pub blocks: u64,
    /// Permission bits: 0o555 directories, 0o444 files, 0o777 symlinks.
    pub perm: u16,
    /// Link count: 2 + subdirectories for directories, 1 otherwise.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time (= mtime).
    pub atime: SystemTime,
    /// Modification time.
    pub mtime: SystemTime,
    /// Status change time (= mtime).
    pub ctime: SystemTime,
    /// Preferred I/O block size (4096).
    pub blksize: u32,
}

/// Filesystem statistics (what `statfs`/`df` shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Total blocks of `frsize` bytes: `ceil(sum of file sizes / 4096)`.
    pub blocks: u64,
    /// Free blocks (always 0: the filesystem is read-only).
    pub bfree: u64,
    /// Blocks available to unprivileged users (always 0).
    pub bavail: u64,
    /// Number of nodes, root included.
    pub files: u64,
    /// Free nodes (always 0).
    pub ffree: u64,
    /// Block size (4096).
    pub bsize: u32,
    /// Maximum name length (255).
    pub namelen: u32,
    /// Fragment size (4096).
    pub frsize: u32,
}

/// Block size reported by `stat` and `statfs`.
pub const BLOCK_SIZE: u32 = 4096;
/// Longest name component accepted (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Inode number of the root directory.
pub const ROOT_INO: u64 = 1;

/// Errors of the core. Every variant maps to an errno via [`FsError::errno`].
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No entry with that name (`ENOENT`).
    #[error("no such file or directory")]
    NotFound,
    /// The inode number was never handed out (`ENOENT`).
    #[error("unknown inode {0}")]
    BadInode(u64),
    /// A directory operation on something else (`ENOTDIR`).
    #[error("not a directory")]
    NotDir,
    /// A file operation on a directory (`EISDIR`).
    #[error("is a directory")]
    IsDir,
    /// A file operation on a symlink (`ELOOP`).
    #[error("is a symbolic link")]
    IsSymlink,
    /// `readlink` on something that is not a symlink (`EINVAL`).
    #[error("not a symbolic link")]
    NotSymlink,
    /// Any attempt to modify the tree or to open for writing (`EROFS`).
    #[error("read-only file system")]
    ReadOnly,
    /// Permission the mode bits do not grant, e.g. execute on a file (`EACCES`).
    #[error("permission denied")]
    PermissionDenied,
    /// Unknown file handle (`EBADF`).
    #[error("unknown file handle {0}")]
    BadHandle(u64),
    /// The extended attribute does not exist (`ENODATA`); no node has any.
    #[error("no such extended attribute")]
    NoXattr,
    /// A name longer than 255 bytes (`ENAMETOOLONG`).
    #[error("name too long")]
    NameTooLong,
    /// The content source failed or returned inconsistent data (`EIO`).
    #[error("cannot read {path}: {reason}")]
    Content {
        /// Path of the file, escaped for display.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// An internal failure such as a poisoned lock (`EIO`).
    #[error("internal error: {0}")]
    Internal(String),
    /// A node path that cannot be served (`EINVAL`; construction only).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path, escaped for display.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The same path listed twice (`EINVAL`; construction only).
    #[error("duplicate path {0:?}")]
    DuplicatePath(String),
    /// A node below a file or symlink (`EINVAL`; construction only).
    #[error("parent of {path:?} is not a directory ({parent:?} is a {kind})")]
    ParentNotDir {
        /// The node whose parent is wrong.
        path: String,
        /// The parent that is not a directory.
        parent: String,
        /// What the parent is instead.
        kind: &'static str,
    },
    /// More nodes than inode numbers fit in the table (`EINVAL`; construction only).
    #[error("too many nodes ({0})")]
    TooManyNodes(usize),
}

impl FsError {
    /// The errno this error is reported as.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound | FsError::BadInode(_) => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::IsSymlink => libc::ELOOP,
            FsError::NotSymlink => libc::EINVAL,
            FsError::ReadOnly => libc::EROFS,
            FsError::PermissionDenied => libc::EACCES,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::NoXattr => libc::ENODATA,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Content { .. } | FsError::Internal(_) => libc::EIO,
            FsError::InvalidPath { .. }
            | FsError::DuplicatePath(_)
            | FsError::ParentNotDir { .. }
            | FsError::TooManyNodes(_) => libc::EINVAL,
        }
    }

    /// How loudly a failed operation with this error should be logged.
    ///
    /// Misses that every tool provokes (`ENOENT` lookups, absent xattrs) are
    /// `Debug`; refused requests (writes, opening a directory) are `Info`;
    /// failures of the filesystem itself (`EIO`) are `Error`.
    pub fn log_level(&self) -> log::Level {
        match self {
            FsError::NotFound | FsError::NoXattr | FsError::NameTooLong => log::Level::Debug,
            FsError::NotDir
            | FsError::IsDir
            | FsError::IsSymlink
            | FsError::NotSymlink
            | FsError::ReadOnly
            | FsError::PermissionDenied => log::Level::Info,
            FsError::BadInode(_) | FsError::BadHandle(_) => log::Level::Warn,
            FsError::Content { .. }
            | FsError::Internal(_)
            | FsError::InvalidPath { .. }
            | FsError::DuplicatePath(_)
            | FsError::ParentNotDir { .. }
            | FsError::TooManyNodes(_) => log::Level::Error,
        }
    }
}

/// Escapes a path for logs and error messages (`\xNN` for non-UTF-8 bytes).
pub fn display_path(path: &[u8]) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    match std::str::from_utf8(path) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        Ok(s) => s
            .chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect(),
        Err(_) => path.escape_ascii().to_string(),
    }
}
