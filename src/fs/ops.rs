//! [`FsCore`]: the filesystem operations over the immutable node table.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use log::{debug, error};

use super::tree::{self, Kind, Node};
use super::{
    display_path, Attr, ContentSource, CoreOptions, FileKind, FsError, NodeSpec, StatFs,
    BLOCK_SIZE, NAME_MAX, ROOT_INO,
};

/// Size reported for directories (`ls -l` convention).
const DIR_SIZE: u64 = 4096;

/// The read-only filesystem: an immutable inode table plus the content source.
///
/// All methods take `&self` and are safe to call from many threads at once.
/// Only [`FsCore::read`] / [`FsCore::read_ino`] call the [`ContentSource`];
/// lookups, attributes and listings never do.
pub struct FsCore {
    nodes: Vec<Node>,
    source: Arc<dyn ContentSource>,
    opts: CoreOptions,
    /// Open file handles: fh -> node index.
    handles: RwLock<HashMap<u64, u32>>,
    next_fh: AtomicU64,
    /// Per node: a content error was already logged at error level.
    error_logged: Vec<AtomicBool>,
    /// Sum of all file sizes.
    total_bytes: u64,
}

impl std::fmt::Debug for FsCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsCore")
            .field("nodes", &self.nodes.len())
            .field("total_bytes", &self.total_bytes)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// One directory entry produced by [`FsCore::readdir`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// Inode of the entry.
    pub ino: u64,
    /// Offset to pass to `readdir` to continue *after* this entry.
    pub next_offset: u64,
    /// File type of the entry.
    pub kind: FileKind,
    /// Name (`.` and `..` included).
    pub name: &'a OsStr,
}

/// Iterator over a directory's entries from some offset on: `.` (offset 0),
/// `..` (offset 1), then the children sorted by name bytes.
#[derive(Debug)]
pub struct ReadDir<'a> {
    core: &'a FsCore,
    dir: u32,
    children: &'a [u32],
    pos: u64,
}

impl<'a> Iterator for ReadDir<'a> {
    type Item = DirEntry<'a>;

    fn next(&mut self) -> Option<DirEntry<'a>> {
        let pos = self.pos;
        let (index, name): (u32, &'a OsStr) = match pos {
            0 => (self.dir, OsStr::new(".")),
            1 => (
                self.core.nodes.get(self.dir as usize)?.parent,
                OsStr::new(".."),
            ),
            _ => {
                let child = *self.children.get(usize::try_from(pos - 2).ok()?)?;
                let node = self.core.nodes.get(child as usize)?;
                (child, OsStr::from_bytes(node.name()))
            }
        };
        let node = self.core.nodes.get(index as usize)?;
        self.pos += 1;
        let shown = match node.kind {
            Kind::File { first, .. } => first,
            _ => index,
        };
        Some(DirEntry {
            ino: ino_of(shown),
            next_offset: pos + 1,
            kind: kind_of(node),
            name,
        })
    }
}

fn ino_of(index: u32) -> u64 {
    u64::from(index) + 1
}

fn kind_of(node: &Node) -> FileKind {
    match node.kind {
        Kind::Dir { .. } => FileKind::Dir,
        Kind::File { .. } => FileKind::File,
        Kind::Symlink { .. } => FileKind::Symlink,
    }
}

fn poisoned<T>(_: T) -> FsError {
    FsError::Internal("file handle table lock poisoned".to_owned())
}

impl FsCore {
    /// Builds the filesystem from the archive's node list.
    ///
    /// Rejects duplicate paths, paths with empty, `.` or `..` components,
    /// absolute paths, names over 255 bytes or containing NUL, and nodes whose
    /// parent is a file or symlink. Missing parent directories are created
    /// (they take the newest mtime found below them).
    pub fn new(
        nodes: Vec<NodeSpec>,
        source: Arc<dyn ContentSource>,
        opts: CoreOptions,
    ) -> Result<FsCore, FsError> {
        let nodes = tree::build(nodes)?;
        let total_bytes = nodes
            .iter()
            .enumerate()
            .map(|(index, n)| match n.kind {
                // A file with several names counts once.
                Kind::File { size, first, .. } if first as usize == index => size,
                _ => 0,
            })
            .fold(0u64, u64::saturating_add);
        let error_logged = nodes.iter().map(|_| AtomicBool::new(false)).collect();
        debug!(
            "filesystem built: {} nodes, {} bytes of file content",
            nodes.len(),
            total_bytes
        );
        Ok(FsCore {
            nodes,
            source,
            opts,
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            error_logged,
            total_bytes,
        })
    }

    /// Number of nodes, root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Sum of all file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The relative path of an inode (empty for the root), for messages.
    pub fn path_of(&self, ino: u64) -> Option<&[u8]> {
        self.node(ino).ok().map(|(_, n)| &*n.path)
    }

    /// The path of an inode escaped for display (`/` for the root,
    /// `<inode N>` for unknown inodes).
    pub fn display(&self, ino: u64) -> String {
        match self.path_of(ino) {
            Some(path) => display_path(path),
            None => format!("<inode {ino}>"),
        }
    }

    fn node(&self, ino: u64) -> Result<(u32, &Node), FsError> {
        let index = ino
            .checked_sub(1)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or(FsError::BadInode(ino))?;
        self.nodes
            .get(index as usize)
            .map(|n| (index, n))
            .ok_or(FsError::BadInode(ino))
    }

    fn attr_of(&self, index: u32, node: &Node) -> Attr {
        // Another name of a file shows that file's inode (the first name's, whose mtime the
        // archive recorded for all of them).
        if let Kind::File { first, .. } = node.kind {
            if first != index {
                if let Some(shown) = self.nodes.get(first as usize) {
                    return self.attr_of(first, shown);
                }
            }
        }
        let (kind, size, blocks, perm, nlink) = match &node.kind {
            Kind::Dir { subdirs, .. } => {
                (FileKind::Dir, DIR_SIZE, 0, 0o555, subdirs.saturating_add(2))
            }
            Kind::File { size, names, .. } => {
                (FileKind::File, *size, size.div_ceil(512), 0o444, *names)
            }
            Kind::Symlink { target } => (FileKind::Symlink, target.len() as u64, 0, 0o777, 1),
        };
        Attr {
            ino: ino_of(index),
            kind,
            size,
            blocks,
            perm,
            nlink,
            uid: self.opts.uid,
            gid: self.opts.gid,
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            blksize: BLOCK_SIZE,
        }
    }

    /// Attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let (index, node) = self.node(ino)?;
        Ok(self.attr_of(index, node))
    }

    /// Looks `name` up in directory `parent` (`.` and `..` included).
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        let (pindex, pnode) = self.node(parent)?;
        let Kind::Dir { children, .. } = &pnode.kind else {
            return Err(FsError::NotDir);
        };
        let name = name.as_bytes();
        let index = match name {
            b"." => pindex,
            b".." => pnode.parent,
            _ if name.len() > NAME_MAX => return Err(FsError::NameTooLong),
            _ => {
                let pos = children
                    .binary_search_by(|&c| {
                        self.nodes
                            .get(c as usize)
                            .map_or(&[][..], Node::name)
                            .cmp(name)
                    })
                    .map_err(|_| FsError::NotFound)?;
                children.get(pos).copied().ok_or(FsError::NotFound)?
            }
        };
        let node = self
            .nodes
            .get(index as usize)
            .ok_or(FsError::BadInode(ino_of(index)))?;
        Ok(self.attr_of(index, node))
    }

    /// Resolves a relative `/`-separated path from the root (empty = root).
    pub fn lookup_path(&self, path: &[u8]) -> Result<Attr, FsError> {
        let mut attr = self.getattr(ROOT_INO)?;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            attr = self.lookup(attr.ino, OsStr::from_bytes(comp))?;
        }
        Ok(attr)
    }

    /// Entries of directory `ino` starting at `offset` (0 = from the start).
    /// Each entry carries the offset to resume after it.
    pub fn readdir(&self, ino: u64, offset: u64) -> Result<ReadDir<'_>, FsError> {
        let (index, node) = self.node(ino)?;
        let Kind::Dir { children, .. } = &node.kind else {
            return Err(FsError::NotDir);
        };
        Ok(ReadDir {
            core: self,
            dir: index,
            children,
            pos: offset,
        })
    }

    /// Opens a directory. Directories never change, so the handle is stateless (0).
    pub fn opendir(&self, ino: u64, flags: i32) -> Result<u64, FsError> {
        let (_, node) = self.node(ino)?;
        if !matches!(node.kind, Kind::Dir { .. }) {
            return Err(FsError::NotDir);
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(FsError::ReadOnly);
        }
        Ok(0)
    }

    /// Closes a directory handle from [`FsCore::opendir`].
    pub fn releasedir(&self, _fh: u64) -> Result<(), FsError> {
        Ok(())
    }

    /// Opens a file for reading and returns a handle for [`FsCore::read`].
    ///
    /// Any write access mode or `O_TRUNC` gives `EROFS`;
    /// directories give `EISDIR`, symlinks `ELOOP`.
    pub fn open(&self, ino: u64, flags: i32) -> Result<u64, FsError> {
        let (index, node) = self.node(ino)?;
        let id = match node.kind {
            Kind::File { id, .. } => id,
            Kind::Dir { .. } => return Err(FsError::IsDir),
            Kind::Symlink { .. } => return Err(FsError::IsSymlink),
        };
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.write().map_err(poisoned)?.insert(fh, index);
        self.source.opened(id);
        Ok(fh)
    }

    /// Closes a handle from [`FsCore::open`].
    pub fn release(&self, fh: u64) -> Result<(), FsError> {
        let index = self
            .handles
            .write()
            .map_err(poisoned)?
            .remove(&fh)
            .ok_or(FsError::BadHandle(fh))?;
        if let Some(Node {
            kind: Kind::File { id, .. },
            ..
        }) = self.nodes.get(index as usize)
        {
            self.source.released(*id);
        }
        Ok(())
    }

    /// Number of currently open file handles.
    pub fn open_handles(&self) -> Result<usize, FsError> {
        Ok(self.handles.read().map_err(poisoned)?.len())
    }

    /// Reads up to `size` bytes at `offset` through an open handle.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let index = *self
            .handles
            .read()
            .map_err(poisoned)?
            .get(&fh)
            .ok_or(FsError::BadHandle(fh))?;
        self.read_index(index, offset, size)
    }

    /// Reads up to `size` bytes at `offset` of inode `ino` without a handle.
    pub fn read_ino(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let (index, _) = self.node(ino)?;
        self.read_index(index, offset, size)
    }

    fn read_index(&self, index: u32, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let node = self
            .nodes
            .get(index as usize)
            .ok_or(FsError::BadInode(ino_of(index)))?;
        let (id, file_size) = match node.kind {
            Kind::File { id, size, .. } => (id, size),
            Kind::Dir { .. } => return Err(FsError::IsDir),
            Kind::Symlink { .. } => return Err(FsError::IsSymlink),
        };
        if offset >= file_size || size == 0 {
            return Ok(Vec::new());
        }
        // Never ask for bytes past the end: the source only returns a short
        // read at EOF, so anything but exactly `want` bytes is inconsistent.
        let want = u32::try_from(file_size - offset).map_or(size, |left| left.min(size));
        let result = catch_unwind(AssertUnwindSafe(|| self.source.read(id, offset, want)));
        let outcome = match result {
            Ok(Ok(data)) if data.len() == want as usize => return Ok(data),
            Ok(Ok(data)) => format!(
                "content source returned {} bytes at offset {offset}, expected {want} (file size {file_size})",
                data.len()
            ),
            Ok(Err(e)) => e.to_string(),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                format!("content source panicked: {what}")
            }
        };
        let err = FsError::Content {
            path: display_path(&node.path),
            reason: outcome,
        };
        let first = self
            .error_logged
            .get(index as usize)
            .is_some_and(|flag| !flag.swap(true, Ordering::Relaxed));
        if first {
            error!(
                "{err} (reported as EIO; further errors for this file are logged at debug level)"
            );
        } else {
            debug!("{err} (offset {offset}, size {size})");
        }
        Err(err)
    }

    /// Target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> Result<&[u8], FsError> {
        let (_, node) = self.node(ino)?;
        match &node.kind {
            Kind::Symlink { target } => Ok(target),
            _ => Err(FsError::NotSymlink),
        }
    }

    /// Filesystem statistics.
    pub fn statfs(&self) -> StatFs {
        StatFs {
            blocks: self.total_bytes.div_ceil(u64::from(BLOCK_SIZE)),
            bfree: 0,
            bavail: 0,
            files: self.nodes.len() as u64,
            ffree: 0,
            bsize: BLOCK_SIZE,
            namelen: NAME_MAX as u32,
            frsize: BLOCK_SIZE,
        }
    }

    /// Extended attribute `name` of `ino`: no node has any, so always
    /// `ENODATA` (or `ENOENT` for an unknown inode).
    pub fn getxattr(&self, ino: u64, _name: &OsStr) -> Result<Vec<u8>, FsError> {
        self.node(ino)?;
        Err(FsError::NoXattr)
    }

    /// Extended attribute names of `ino` (NUL-separated): always empty.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        self.node(ino)?;
        Ok(Vec::new())
    }

    /// `access(2)` check with `mask` of `R_OK`/`W_OK`/`X_OK` (or `F_OK`):
    /// write is `EROFS`, execute on a file is `EACCES`, the rest is allowed.
    pub fn access(&self, ino: u64, mask: i32) -> Result<(), FsError> {
        let (_, node) = self.node(ino)?;
        if mask & libc::W_OK != 0 {
            return Err(FsError::ReadOnly);
        }
        if mask & libc::X_OK != 0 && matches!(node.kind, Kind::File { .. }) {
            return Err(FsError::PermissionDenied);
        }
        Ok(())
    }
}
