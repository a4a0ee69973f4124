//! Thin FUSE adapter: translates `fuser` requests into [`FsCore`] calls and
//! [`FsError`]s into errnos.
//!
//! Read-only: every request that would modify something is answered `EROFS`.
//! Attributes and entries are cached by the kernel for [`TTL`] (the content
//! never changes while mounted) and files are opened with `FOPEN_KEEP_CACHE`,
//! so re-reads are served from the page cache without reaching the daemon.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, PollEvents,
    PollFlags, PollNotifier, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::{debug, log};

use crate::fs::{display_path, Attr, FileKind, FsCore, FsError};

/// How long the kernel may cache attributes and directory entries.
pub const TTL: Duration = Duration::from_secs(3600);

/// The `fuser::Filesystem` implementation over an [`FsCore`].
#[derive(Debug, Clone)]
pub struct FuseFs {
    core: Arc<FsCore>,
    ttl: Duration,
    ended: Arc<AtomicBool>,
}

impl FuseFs {
    /// Wraps a core with the default [`TTL`].
    pub fn new(core: Arc<FsCore>) -> FuseFs {
        FuseFs {
            core,
            ttl: TTL,
            ended: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A flag that becomes true once the FUSE session has ended (fuser calls
    /// `destroy` after its worker threads stopped: unmounted or aborted).
    pub fn ended_flag(&self) -> Arc<AtomicBool> {
        self.ended.clone()
    }

    /// The wrapped core.
    pub fn core(&self) -> &Arc<FsCore> {
        &self.core
    }

    /// Describes `ino` (and optionally a name in it) for log lines.
    fn describe(&self, ino: INodeNo, name: Option<&OsStr>) -> String {
        let base = self.core.display(ino.0);
        match name {
            None => base,
            Some(name) => {
                use std::os::unix::ffi::OsStrExt;
                let name = display_path(name.as_bytes());
                if ino.0 == crate::fs::ROOT_INO {
                    name
                } else {
                    format!("{base}/{name}")
                }
            }
        }
    }

    /// Logs one line for a failed operation and returns its errno.
    /// Content errors are logged by the core (once per file), not here.
    fn fail(&self, op: &str, ino: INodeNo, name: Option<&OsStr>, err: &FsError) -> Errno {
        if !matches!(err, FsError::Content { .. }) {
            log!(
                err.log_level(),
                "{op} {}: {err} (errno {})",
                self.describe(ino, name),
                err.errno()
            );
        }
        Errno::from_i32(err.errno())
    }

    /// Refuses a modifying operation with `EROFS`.
    fn refuse(&self, op: &str, ino: INodeNo, name: Option<&OsStr>) -> Errno {
        self.fail(op, ino, name, &FsError::ReadOnly)
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Dir => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
    }
}

/// Converts core attributes into `fuser`'s.
pub fn to_file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.blocks,
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.mtime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: attr.blksize,
        flags: 0,
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Optional capabilities that suit an immutable tree; ignore those the
        // kernel lacks.
        // READDIRPLUS: a listing's entries come with their attributes, so `ls -l` and file
        // managers need no LOOKUP per file (the attributes are in the index: no cost here).
        for cap in [
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DO_READDIRPLUS,
        ] {
            if config.add_capabilities(cap).is_err() {
                debug!("kernel lacks {cap:?}");
            }
        }
        debug!(
            "FUSE session initialised (kernel ABI {:?})",
            config.kernel_abi()
        );
        Ok(())
    }

    fn destroy(&mut self) {
        debug!("FUSE session ended");
        self.ended.store(true, Ordering::SeqCst);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.core.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&self.ttl, &to_file_attr(&attr), Generation(0)),
            Err(e) => reply.error(self.fail("lookup", parent, Some(name), &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.core.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.ttl, &to_file_attr(&attr)),
            Err(e) => reply.error(self.fail("getattr", ino, None, &e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(self.refuse("setattr", ino, None));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.core.readlink(ino.0) {
            Ok(target) => reply.data(target),
            Err(e) => reply.error(self.fail("readlink", ino, None, &e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse("mknod", parent, Some(name)));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse("mkdir", parent, Some(name)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse("unlink", parent, Some(name)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse("rmdir", parent, Some(name)));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse("symlink", parent, Some(link_name)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse("rename", parent, Some(name)));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse("link", newparent, Some(newname)));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.core.open(ino.0, flags.0) {
            Ok(fh) => {
                debug!("open {} -> fh {fh}", self.core.display(ino.0));
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(self.fail("open", ino, None, &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.core.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(self.fail("read", ino, None, &e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(self.refuse("write", ino, None));
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.core.release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("release", ino, None, &e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever dirty.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(ino.0, flags.0) {
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(self.fail("opendir", ino, None, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.core.readdir(ino.0, offset) {
            Ok(entries) => {
                for entry in entries {
                    if reply.add(
                        INodeNo(entry.ino),
                        entry.next_offset,
                        file_type(entry.kind),
                        entry.name,
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(self.fail("readdir", ino, None, &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.core.readdir(ino.0, offset) {
            Ok(entries) => {
                for entry in entries {
                    let attr = match self.core.getattr(entry.ino) {
                        Ok(attr) => attr,
                        Err(e) => {
                            reply.error(self.fail("readdirplus", ino, Some(entry.name), &e));
                            return;
                        }
                    };
                    if reply.add(
                        INodeNo(entry.ino),
                        entry.next_offset,
                        entry.name,
                        &self.ttl,
                        &to_file_attr(&attr),
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(self.fail("readdirplus", ino, None, &e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        match self.core.releasedir(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("releasedir", ino, None, &e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.core.statfs();
        reply.statfs(
            st.blocks, st.bfree, st.bavail, st.files, st.ffree, st.bsize, st.namelen, st.frsize,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse("setxattr", ino, Some(name)));
    }

    // Archives carry no extended attributes. ENOSYS (rather than ENODATA per call) tells the
    // kernel that this filesystem has none at all: it stops asking, so `ls -l` of 10,000 files
    // does not make 20,000 round trips (callers get EOPNOTSUPP from the kernel).
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse("removexattr", ino, None));
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.core.access(ino.0, mask.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("access", ino, None, &e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(self.refuse("create", parent, Some(name)));
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse("fallocate", ino, None));
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // Only SEEK_DATA/SEEK_HOLE reach us; files have no holes, and ENOSYS
        // makes the kernel fall back to its generic implementation for good.
        debug!(
            "lseek {} offset {offset} whence {whence}: ENOSYS",
            self.core.display(ino.0)
        );
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        debug!("ioctl {} cmd {cmd:#x}: ENOTTY", self.core.display(ino.0));
        reply.error(Errno::ENOTTY);
    }

    fn poll(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        // ENOSYS: the kernel then treats the file as always ready.
        debug!("poll {}: ENOSYS", self.core.display(ino.0));
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(self.refuse("copy_file_range", ino_out, None));
    }
}
