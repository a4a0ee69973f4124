//! Mounting an [`FsCore`] with FUSE: in-process, in the foreground, or as a
//! background daemon; and unmounting.
//!
//! # How the pieces fit
//! * [`mount_in_process`] mounts on background threads of the calling
//!   process and returns a [`MountHandle`] that unmounts when dropped (used by
//!   the two modes below and by tests).
//! * [`mount`] with `foreground` blocks until SIGINT/SIGTERM/SIGHUP or an
//!   external unmount; without it, it forks a daemon and returns once the
//!   mount answers requests.
//! * [`unmount`] is `fusermount3 -u`, falling back to `umount2` as root.
//!
//! # Readiness
//! fuser's `Session::new` mounts and completes the FUSE `INIT` handshake
//! before returning; `spawn_mount` then starts the worker threads. A mount
//! counts as ready once a `stat` of the mount point, made by a forked child
//! process, returns a device other than that of the directory underneath and
//! mountinfo lists a FUSE mount there. (Never from a thread of the serving
//! process: such a thread blocked on its own mount cannot be killed, so a
//! daemon killed at that moment could never finish exiting and the mount
//! would hang instead of dying.) In background mode the daemon reports
//! `READY` or the error through a pipe only after that check.
//!
//! # Auto-unmount (why not fuser's `AutoUnmount`)
//! fuser 0.18 (pure-Rust mount code, no libfuse) implements `AutoUnmount` by
//! mounting through the `fusermount3` helper (package `fuse3`), which stays
//! alive holding a socket to the daemon. We do not use it because:
//! * fuser refuses it with the default owner-only access control, so the
//!   kernel mount must carry `allow_other` (fuser then filters other users
//!   itself, but the kernel still serves them cached attributes), and
//!   `fusermount3` allows that to non-root users only with
//!   `user_allow_other` in /etc/fuse.conf;
//! * `fusermount3` only unmounts when `open(mountpoint)` fails with exactly
//!   `ENOTCONN`, which races with the kernel tearing down the killed daemon's
//!   connection (requests in flight fail with `ECONNABORTED` instead): in
//!   our test runs a SIGKILLed daemon occasionally (2 runs in ~35) left a
//!   dead "Transport endpoint is not connected" mount;
//! * in that mode fuser's own unmount only closes the socket, and
//!   `fusermount3` leaves a live mount alone, so an explicit unmount is needed
//!   anyway.
//!
//! Instead every mount gets a small watchdog process (see `spawn_watchdog`),
//! forked before mounting, reparented to init and in its own session. It
//! learns the mount's device number once the mount is ready and waits for its
//! pipe to close. A clean shutdown sends a "disarm" byte first; if the pipe
//! closes without it (the daemon died, SIGKILL included), the watchdog
//! detaches the mount if our device is still mounted there (or, if the
//! daemon died while mounting, if a dead FUSE mount is there):
//! `umount2(MNT_DETACH)` as root, `fusermount3 -u -z` otherwise.

use std::ffi::{CString, OsStr};
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use log::{debug, error, info, warn};

use crate::fs::FsCore;
use crate::fuse::FuseFs;

/// Filesystem subtype: mounts show up as `fuse.av1pack`.
pub const SUBTYPE: &str = "av1pack";
/// How long a fresh mount may take to answer its first `stat`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an unmount waits for the session to end, or for the open files of
/// a lazily detached (busy) mount to be closed.
const UNMOUNT_GRACE: Duration = Duration::from_secs(10);
/// Poll interval of the serving loop (signals, external unmount).
const POLL: Duration = Duration::from_millis(50);

/// How to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Stay in the foreground (log to stderr, block until unmounted or signalled).
    pub foreground: bool,
    /// Let other users access the mount (`allow_other`); private by default.
    pub allow_other: bool,
    /// FUSE worker threads (0 = [`default_threads`]).
    pub threads: usize,
    /// Background mode: append stderr (hence the log) to this file instead of discarding it.
    pub log_file: Option<PathBuf>,
    /// Name shown as the mount source (`df`, `/proc/mounts`), e.g. the archive name.
    pub fsname: String,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            foreground: false,
            allow_other: false,
            threads: default_threads(),
            log_file: None,
            fsname: SUBTYPE.to_owned(),
        }
    }
}

/// Default number of FUSE worker threads: twice the CPU count, 4 to 16.
pub fn default_threads() -> usize {
    let cpus = thread::available_parallelism().map_or(2, usize::from);
    (cpus * 2).clamp(4, 16)
}

/// How [`mount`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountExit {
    /// Background mode: the daemon (this pid) is serving a ready mount.
    Daemonized {
        /// Process id of the daemon.
        pid: u32,
    },
    /// Foreground mode: the filesystem was unmounted, because of this signal
    /// or (None) because someone else unmounted it.
    Unmounted {
        /// The signal that ended the session, if any.
        signal: Option<i32>,
    },
}

/// Errors of mounting and unmounting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The mount point does not exist.
    #[error("mount point {} does not exist", .0.display())]
    MountpointMissing(PathBuf),
    /// The mount point is not a directory.
    #[error("mount point {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The mount point cannot be examined.
    #[error("cannot use mount point {}: {source}", path.display())]
    Mountpoint {
        /// The mount point.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Something (a FUSE filesystem) is already mounted there.
    #[error("{} is already a FUSE mount ({what}); unmount it first", path.display())]
    AlreadyMounted {
        /// The mount point.
        path: PathBuf,
        /// Type and source of the existing mount.
        what: String,
    },
    /// A dead FUSE mount whose daemon is gone.
    #[error(
        "{} is a dead FUSE mount (transport endpoint is not connected); \
         unmount it first (`fusermount3 -u {}`)",
        .0.display(), .0.display()
    )]
    StaleMount(PathBuf),
    /// The log file cannot be opened.
    #[error("cannot open log file {}: {source}", path.display())]
    LogFile {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The core builder failed (the archive could not be opened).
    #[error("cannot load the archive: {0}")]
    Build(String),
    /// The FUSE mount itself failed.
    #[error("mounting {} failed: {source}", path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `allow_other` was refused by `fusermount3`.
    #[error(
        "--allow-other was refused: users other than root need `user_allow_other` \
         in /etc/fuse.conf ({0})"
    )]
    AllowOtherDenied(String),
    /// The mount was made but did not answer.
    #[error("the filesystem at {} did not become ready: {reason}", path.display())]
    NotReady {
        /// The mount point.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The background daemon reported this error before becoming ready.
    #[error("{0}")]
    Child(String),
    /// The background daemon exited without reporting.
    #[error("the daemon exited before the mount was ready{0}")]
    DaemonDied(String),
    /// fork/setsid/pipe failed.
    #[error("cannot daemonise: {0}")]
    Daemonize(#[source] io::Error),
    /// Signal handlers cannot be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    /// Nothing is mounted at the path.
    #[error("{} is not mounted", .0.display())]
    NotMounted(PathBuf),
    /// Something other than FUSE is mounted at the path.
    #[error("{} is not a FUSE mount (it is {fstype}); refusing to unmount it", path.display())]
    NotFuse {
        /// The mount point.
        path: PathBuf,
        /// Its filesystem type.
        fstype: String,
    },
    /// The mount is in use.
    #[error("{} is busy: files or directories in it are still open", .0.display())]
    Busy(PathBuf),
    /// Unmounting failed for another reason.
    #[error("unmounting {} failed: {msg}", path.display())]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// What the tools said.
        msg: String,
    },
    /// `/proc/self/mountinfo` cannot be read.
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    /// The FUSE session ended with an error.
    #[error("the FUSE session at {} ended with an error: {source}", path.display())]
    Session {
        /// The mount point.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

// ---------------------------------------------------------------------------
// /proc/self/mountinfo

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Kernel mount id (unique while mounted).
    pub id: u64,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `fuse.av1pack`.
    pub fstype: String,
    /// Mount source, e.g. the fsname.
    pub source: String,
}

impl MountEntry {
    /// Whether this is a FUSE mount (`fuse`, `fuse.*`, `fuseblk`).
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype == "fuseblk" || self.fstype.starts_with("fuse.")
    }
}

/// Decodes the octal escapes (`\040` etc.) mountinfo uses in paths.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    let id = std::str::from_utf8(fields.first()?).ok()?.parse().ok()?;
    let mount_point = PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(fields.get(4)?)));
    let fstype = String::from_utf8_lossy(&unescape_mountinfo(fields.get(sep + 1)?)).into_owned();
    let source = String::from_utf8_lossy(&unescape_mountinfo(fields.get(sep + 2)?)).into_owned();
    Some(MountEntry {
        id,
        mount_point,
        fstype,
        source,
    })
}

/// All mounts of this process's mount namespace.
pub fn mounts() -> Result<Vec<MountEntry>, DaemonError> {
    let text = fs::read("/proc/self/mountinfo").map_err(DaemonError::MountInfo)?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect())
}

/// The topmost mount whose mount point is exactly `path` (an absolute,
/// resolved path), if any.
pub fn find_mount(path: &Path) -> Result<Option<MountEntry>, DaemonError> {
    Ok(mounts()?.into_iter().rfind(|m| m.mount_point == path))
}

// ---------------------------------------------------------------------------
// Mount point checks

fn is_enotconn(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTCONN)
}

/// Absolute form of `path` with its parent resolved, without touching the
/// last component (which may be a dead or hung mount).
fn resolve_without_last(path: &Path) -> Result<PathBuf, DaemonError> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| DaemonError::Mountpoint {
                path: path.to_path_buf(),
                source,
            })?
            .join(path)
    };
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = parent
                .canonicalize()
                .map_err(|source| DaemonError::Mountpoint {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok(parent.join(name))
        }
        _ => absolute
            .canonicalize()
            .map_err(|source| DaemonError::Mountpoint {
                path: path.to_path_buf(),
                source,
            }),
    }
}

/// Resolves and checks a mount point: it must exist, be a directory and not
/// already carry a FUSE mount (live or dead). Returns the canonical path.
pub fn check_mountpoint(mountpoint: &Path) -> Result<PathBuf, DaemonError> {
    let resolved = match mountpoint.canonicalize() {
        Ok(p) => p,
        Err(e) if is_enotconn(&e) => {
            return Err(DaemonError::StaleMount(resolve_without_last(mountpoint)?))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DaemonError::MountpointMissing(mountpoint.to_path_buf()))
        }
        Err(source) => {
            return Err(DaemonError::Mountpoint {
                path: mountpoint.to_path_buf(),
                source,
            })
        }
    };
    let meta = fs::metadata(&resolved).map_err(|source| {
        if is_enotconn(&source) {
            DaemonError::StaleMount(resolved.clone())
        } else {
            DaemonError::Mountpoint {
                path: resolved.clone(),
                source,
            }
        }
    })?;
    if !meta.is_dir() {
        return Err(DaemonError::NotADirectory(resolved));
    }
    if let Some(existing) = find_mount(&resolved)? {
        if existing.is_fuse() {
            return Err(DaemonError::AlreadyMounted {
                what: format!("{} from {}", existing.fstype, existing.source),
                path: resolved,
            });
        }
    }
    Ok(resolved)
}

// ---------------------------------------------------------------------------
// In-process mounting

/// Makes the fsname safe for the comma-separated mount option string.
fn sanitize_fsname(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c == ',' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if clean.trim().is_empty() {
        SUBTYPE.to_owned()
    } else {
        clean
    }
}

fn fuser_config(opts: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(sanitize_fsname(&opts.fsname)),
        // As a raw option so that it also reaches the kernel when fuser
        // mounts directly (its `Subtype` only goes to fusermount3).
        MountOption::CUSTOM(format!("subtype={SUBTYPE}")),
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
    ];
    // No fuser `AutoUnmount`: see the module documentation; our watchdog
    // does that job without forcing `allow_other`.
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(if opts.threads == 0 {
        default_threads()
    } else {
        opts.threads
    });
    config
}

fn start_session(
    fs: FuseFs,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<BackgroundSession, DaemonError> {
    fuser::spawn_mount(fs, mountpoint, &fuser_config(opts)).map_err(|e| {
        // fuser 0.18 opens /dev/fuse itself first and only falls back to
        // the setuid fusermount3 when mount(2) says EPERM, so users other
        // than root need access to /dev/fuse (mode 0666, the usual default).
        // SAFETY: access() on a constant NUL-terminated path.
        let dev_fuse_ok =
            unsafe { libc::access(c"/dev/fuse".as_ptr(), libc::R_OK | libc::W_OK) } == 0;
        if e.kind() == io::ErrorKind::PermissionDenied && !dev_fuse_ok {
            DaemonError::Mount {
                path: mountpoint.to_path_buf(),
                source: io::Error::new(
                    e.kind(),
                    format!("{e}: this user cannot open /dev/fuse (it needs mode 0666)"),
                ),
            }
        } else if opts.allow_other && e.kind() == io::ErrorKind::PermissionDenied {
            DaemonError::AllowOtherDenied(e.to_string().trim().to_owned())
        } else {
            DaemonError::Mount {
                path: mountpoint.to_path_buf(),
                source: e,
            }
        }
    })
}

/// Whether the mount at `path` is a FUSE mount whose connection is gone (ENOTCONN, or
/// ECONNABORTED once aborted). Asks its server for fresh attributes (cached ones would hide
/// a dead connection): only for a mount found to be ours, whose session has ended, so no
/// live server of ours is asked.
fn is_dead_mount(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statx on a NUL-terminated path into a zeroed struct owned here.
    let res = unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_FORCE_SYNC | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_TYPE,
            &mut stx,
        )
    };
    res != 0 && matches!(errno(), libc::ENOTCONN | libc::ECONNABORTED)
}

/// Joins a session that ended on its own (someone unmounted it) without letting fuser
/// unmount its mount point once more.
///
/// fuser 0.18 unmounts the mount point *by path* when its mount object is dropped, after a
/// check meant to skip that when the connection is already gone; the check is inverted
/// (cberner/fuser#703, fixed after 0.18.0), so it always unmounts. After `av1pack umount`
/// and a new `av1pack mount` on the same folder at once, the old daemon, exiting, unmounted
/// the new mount. The mount object is leaked instead: its /dev/fuse descriptor, of a
/// connection the kernel has already ended, is closed when the process exits. (A mount left
/// behind, dead, is detached by the caller after checking that it is ours.)
fn join_ended(session: BackgroundSession) -> io::Result<()> {
    let session = std::mem::ManuallyDrop::new(session);
    // SAFETY: the join handle is read out of `session` once, and `session` is never dropped
    // (ManuallyDrop), so nothing in it is dropped twice; the rest of it is leaked.
    let guard = unsafe { std::ptr::read(&session.guard) };
    guard
        .join()
        .map_err(|_| io::Error::other("the FUSE session thread panicked"))?
}

// ---------------------------------------------------------------------------
// Watchdog: unmounts a mount whose serving process died

/// Finds `fusermount3` before forking (the watchdog may not search PATH).
fn find_fusermount() -> Option<CString> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("fusermount3"))
        .find(|candidate| candidate.is_file())
        .and_then(|found| CString::new(found.into_os_string().into_vec()).ok())
}

/// Starts the watchdog for a mount about to be made at `mountpoint` (whose
/// directory has device `dev_before`) and returns the write end of its pipe.
///
/// Protocol on the pipe: 8 bytes, the mount's device number, once it is
/// ready; 1 byte, "disarm", after a deliberate unmount; then end-of-file.
/// End-of-file without the disarm byte means this process died: the
/// watchdog then detaches the mount point if our device is still mounted
/// there (or, if no device was sent yet, if a *dead* FUSE mount appeared
/// there): `umount2(MNT_DETACH)` as root, else `fusermount3 -u -z`. It looks
/// with `statx(AT_STATX_DONT_SYNC)` so that it never waits on the dead
/// daemon. It runs in its own session, ignores SIGINT/SIGTERM/SIGHUP/SIGPIPE,
/// keeps no descriptor but its pipe, and is reparented to init (double
/// fork), so it holds no zombie in this process.
fn spawn_watchdog(mountpoint: &Path, dev_before: u64) -> Option<io::PipeWriter> {
    let path = CString::new(mountpoint.as_os_str().as_bytes()).ok()?;
    let fusermount = find_fusermount();
    let mut argv: Vec<*const libc::c_char> = Vec::new();
    if let Some(fm) = &fusermount {
        argv.extend([
            fm.as_ptr(),
            c"-u".as_ptr(),
            c"-z".as_ptr(),
            c"-q".as_ptr(),
            c"--".as_ptr(),
            path.as_ptr(),
        ]);
    }
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let (reader, writer) = match io::pipe() {
        Ok(pair) => pair,
        Err(e) => {
            warn!("no watchdog for {}: pipe: {e}", mountpoint.display());
            return None;
        }
    };
    let spec = WatchdogSpec {
        read_fd: reader.as_raw_fd(),
        dev_before,
        path: path.as_ptr(),
        fusermount: fusermount.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
    };
    // SAFETY: the child only runs async-signal-safe calls on data prepared
    // above (see `watchdog_main`), so forking a multi-threaded process is fine.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the forked child; never returns.
        unsafe { watchdog_intermediate(&spec) }
    }
    drop(reader);
    if pid < 0 {
        warn!(
            "no watchdog for {}: fork: {}",
            mountpoint.display(),
            io::Error::last_os_error()
        );
        return None;
    }
    let mut status = 0;
    // SAFETY: reaping our own short-lived child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    debug!("watchdog started for {}", mountpoint.display());
    Some(writer)
}

/// Everything the forked watchdog needs, prepared before the fork.
struct WatchdogSpec {
    read_fd: libc::c_int,
    /// Device of the directory underneath the mount point.
    dev_before: u64,
    path: *const libc::c_char,
    fusermount: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
}

/// First child: fork the watchdog proper and exit, so that it is reparented.
///
/// # Safety
/// Must only be called in a freshly forked child.
unsafe fn watchdog_intermediate(spec: &WatchdogSpec) -> ! {
    // SAFETY: async-signal-safe calls only.
    unsafe {
        libc::setsid();
        match libc::fork() {
            0 => watchdog_main(spec),
            -1 => libc::_exit(1),
            _ => libc::_exit(0),
        }
    }
}

fn errno() -> libc::c_int {
    // SAFETY: reading the thread's errno.
    unsafe { *libc::__errno_location() }
}

/// The watchdog proper. Only async-signal-safe calls: it may have been forked
/// from a multi-threaded process.
///
/// # Safety
/// Must only be called in a forked child, with `spec` valid.
unsafe fn watchdog_main(spec: &WatchdogSpec) -> ! {
    // SAFETY: plain syscalls on memory owned by this process.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::prctl(libc::PR_SET_NAME, c"av1pack-watch".as_ptr());
        libc::chdir(c"/".as_ptr());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        // Keep only the pipe (as fd 3): copies of other descriptors (other
        // mounts' /dev/fuse, the pipe's write end, ...) must not stay open here.
        if spec.read_fd != 3 && libc::dup2(spec.read_fd, 3) < 0 {
            libc::_exit(1);
        }
        if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
            for fd in 4..4096 {
                libc::close(fd);
            }
        }

        // Protocol: 8 bytes (the mount's device number, once it is ready),
        // then 1 byte ("disarm": unmounted on purpose), then end-of-file.
        // End-of-file before the disarm byte means the process died.
        let mut msg = [0u8; 9];
        let mut got = 0usize;
        while got < msg.len() {
            let n = libc::read(3, msg.as_mut_ptr().add(got).cast(), msg.len() - got);
            if n > 0 {
                got += n as usize;
            } else if n == 0 || errno() != libc::EINTR {
                break;
            }
        }
        if got == msg.len() {
            libc::_exit(0);
        }
        let known_dev = (got == 8).then(|| {
            let mut dev = [0u8; 8];
            dev.copy_from_slice(&msg[..8]);
            u64::from_le_bytes(dev)
        });

        // The serving process is gone (or done). Is our mount still there?
        // AT_STATX_DONT_SYNC: use cached attributes, never ask the daemon.
        let mut stx: libc::statx = std::mem::zeroed();
        let res = libc::statx(
            libc::AT_FDCWD,
            spec.path,
            libc::AT_STATX_DONT_SYNC | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_TYPE,
            &mut stx,
        );
        let dead_fuse = |e: libc::c_int| matches!(e, libc::ENOTCONN | libc::ECONNABORTED);
        let ours = if res != 0 {
            dead_fuse(errno())
        } else {
            let now = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
            match known_dev {
                Some(dev) => now == dev,
                // Died while mounting: only a *dead* mount that appeared
                // there is ours (a live one answers `open`).
                None if now != spec.dev_before => {
                    let fd = libc::open(spec.path, libc::O_RDONLY | libc::O_DIRECTORY);
                    if fd >= 0 {
                        libc::close(fd);
                        false
                    } else {
                        dead_fuse(errno())
                    }
                }
                None => false,
            }
        };
        if !ours {
            libc::_exit(0);
        }
        if libc::geteuid() == 0
            && libc::umount2(spec.path, libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) == 0
        {
            libc::_exit(0);
        }
        if !spec.fusermount.is_null() {
            libc::execve(spec.fusermount, spec.argv, spec.envp);
        }
        libc::_exit(1)
    }
}

/// `stat`s `mountpoint` in a forked child process and returns its `st_dev`.
///
/// Never from a thread of this process: a thread of the serving process
/// blocked in a request to its own mount cannot be killed, so if the process
/// died meanwhile it could never finish exiting, /dev/fuse would never close
/// and the mount would hang for good. The child keeps no other descriptor
/// (in particular no copy of /dev/fuse), so it cannot keep the mount alive.
fn stat_dev_out_of_process(mountpoint: &Path, timeout: Duration) -> Result<u64, String> {
    let path = CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|e| format!("bad mount point path: {e}"))?;
    let (mut reader, writer) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let wfd = writer.as_raw_fd();
    // SAFETY: the child only makes async-signal-safe calls on data prepared
    // before the fork, then exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: plain syscalls in the forked child.
        unsafe {
            if wfd != 3 && libc::dup2(wfd, 3) < 0 {
                libc::_exit(2);
            }
            if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
                for fd in 4..4096 {
                    libc::close(fd);
                }
            }
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(path.as_ptr(), &mut st) != 0 {
                let code = errno().to_le_bytes();
                libc::write(3, code.as_ptr().cast(), code.len());
                libc::_exit(1);
            }
            let dev = st.st_dev.to_le_bytes();
            libc::write(3, dev.as_ptr().cast(), dev.len());
            libc::_exit(0)
        }
    }
    drop(writer);
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    let mut pfd = libc::pollfd {
        fd: reader.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: polling one valid descriptor.
    let ready = unsafe { libc::poll(&mut pfd, 1, millis) };
    if ready <= 0 {
        // SAFETY: signalling our own child; reap it in the background since
        // it may stay blocked until the mount is gone.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = thread::Builder::new()
            .name("av1pack-reap".to_owned())
            .spawn(move || {
                let mut status = 0;
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
            });
        return Err(format!("no answer to stat within {timeout:?}"));
    }
    let mut out = Vec::new();
    let read = reader.read_to_end(&mut out);
    let mut status = 0;
    // SAFETY: reaping our own child, which has written and exits.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    read.map_err(|e| format!("reading the probe: {e}"))?;
    let exited_ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    match (exited_ok, out.len()) {
        (true, 8) => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&out);
            Ok(u64::from_le_bytes(bytes))
        }
        (false, 4) => {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&out);
            Err(format!(
                "stat failed: {}",
                io::Error::from_raw_os_error(i32::from_le_bytes(bytes))
            ))
        }
        _ => Err(format!("the stat probe failed (status {status:#x})")),
    }
}

/// Checks that `mountpoint` now shows a live FUSE filesystem: `stat` is
/// answered (by our worker threads) with a device other than the one of the
/// directory underneath, and mountinfo lists a FUSE mount there. Returns the
/// mount id and device number of the new mount.
fn wait_ready(mountpoint: &Path, dev_before: u64) -> Result<(u64, u64), String> {
    let dev = stat_dev_out_of_process(mountpoint, READY_TIMEOUT)?;
    if dev == dev_before {
        return Err("the mount point still shows the directory underneath".to_owned());
    }
    match find_mount(mountpoint) {
        Ok(Some(entry)) if entry.is_fuse() => Ok((entry.id, dev)),
        Ok(Some(entry)) => Err(format!("the mount point carries {}", entry.fstype)),
        Ok(None) => Err("no mount listed at the mount point".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// A live mount made by [`mount_in_process`]. Dropping it unmounts.
#[derive(Debug)]
pub struct MountHandle {
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
    /// Set when the FUSE session has ended (see [`FuseFs::ended_flag`]).
    ended: Arc<std::sync::atomic::AtomicBool>,
    /// Write end of the watchdog's pipe; closing it lets the watchdog exit.
    watchdog: Option<io::PipeWriter>,
    mount_id: u64,
    core: Arc<FsCore>,
}

/// Mounts `core` at `mountpoint`, served by threads of this process, and
/// returns once the mount answers requests (see the module documentation).
///
/// Also forks the mount's watchdog process (async-signal-safe, so this may be
/// called from a multi-threaded process). Dropping the handle unmounts.
///
/// Avoid touching the mount from the serving process itself outside tests:
/// if the process is killed while one of its threads waits on its own mount,
/// it cannot finish exiting and the mount hangs.
pub fn mount_in_process(
    core: FsCore,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<MountHandle, DaemonError> {
    let mountpoint = check_mountpoint(mountpoint)?;
    let dev_before = fs::metadata(&mountpoint)
        .map_err(|source| DaemonError::Mountpoint {
            path: mountpoint.clone(),
            source,
        })?
        .dev();
    let core = Arc::new(core);
    // Forked before mounting so that it holds no descriptor of the new mount.
    let watchdog = spawn_watchdog(&mountpoint, dev_before);
    let fs = FuseFs::new(core.clone());
    let ended = fs.ended_flag();
    let session = start_session(fs, &mountpoint, opts)?;
    let mut handle = MountHandle {
        mountpoint,
        session: Some(session),
        ended,
        watchdog,
        mount_id: 0,
        core,
    };
    match wait_ready(&handle.mountpoint, dev_before) {
        Ok((id, dev)) => {
            handle.mount_id = id;
            if let Some(writer) = &mut handle.watchdog {
                if let Err(e) = writer.write_all(&dev.to_le_bytes()) {
                    warn!(
                        "watchdog for {} unavailable: {e}",
                        handle.mountpoint.display()
                    );
                    handle.watchdog = None;
                }
            }
        }
        Err(reason) => {
            if let Err(e) = handle.shutdown() {
                warn!("cleaning up {}: {e}", handle.mountpoint.display());
            }
            return Err(DaemonError::NotReady {
                path: handle.mountpoint.clone(),
                reason,
            });
        }
    }
    info!(
        "mounted {} at {} ({} nodes, {} threads, {}{})",
        sanitize_fsname(&opts.fsname),
        handle.mountpoint.display(),
        handle.core.node_count(),
        fuser_config(opts).n_threads.unwrap_or(1),
        if opts.allow_other {
            "allow_other"
        } else {
            "private"
        },
        if handle.watchdog.is_some() {
            ", auto-unmount"
        } else {
            ""
        }
    );
    Ok(handle)
}

impl MountHandle {
    /// The canonical mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether a watchdog process will unmount if this process dies.
    pub fn auto_unmount(&self) -> bool {
        self.watchdog.is_some()
    }

    /// The served core.
    pub fn core(&self) -> &Arc<FsCore> {
        &self.core
    }

    /// Whether the FUSE session has ended (e.g. someone unmounted it).
    pub fn is_finished(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
            || self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts and waits for the session to end. If files are still open
    /// (`EBUSY`), detaches the mount lazily and keeps serving them for up to
    /// 10 s.
    pub fn unmount(mut self) -> Result<(), DaemonError> {
        self.shutdown()
    }

    /// Whether our mount is the topmost one at the mount point.
    fn ours_on_top(&self) -> bool {
        match find_mount(&self.mountpoint) {
            Ok(Some(entry)) if self.mount_id != 0 => entry.id == self.mount_id,
            Ok(Some(entry)) => entry.is_fuse(),
            _ => false,
        }
    }

    /// Tells the watchdog that the mount is gone on purpose, then closes its pipe.
    fn disarm_watchdog(&mut self) {
        if let Some(mut writer) = self.watchdog.take() {
            if let Err(e) = writer.write_all(b"X") {
                debug!("disarming the watchdog: {e}");
            }
        }
    }

    fn shutdown(&mut self) -> Result<(), DaemonError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let path = self.mountpoint.clone();
        // Ended on its own (external unmount)? Then only collect the outcome.
        let finished = self.ended.load(Ordering::SeqCst) || session.guard.is_finished();
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("av1pack-umount".to_owned())
            .spawn(move || {
                // fuser unmounts (umount(2) as root, else `fusermount3 -u
                // -z`), then the session ends with ENODEV and is joined.
                let result = if finished {
                    join_ended(session)
                } else {
                    session.umount_and_join()
                };
                // The receiver may have given up waiting; nothing to do then.
                let _ = tx.send(result);
            })
            .map_err(|e| DaemonError::Unmount {
                path: path.clone(),
                msg: format!("cannot start the unmount thread: {e}"),
            })?;
        let result = match rx.recv_timeout(UNMOUNT_GRACE) {
            Ok(Ok(())) => {
                info!("unmounted {}", path.display());
                Ok(())
            }
            Ok(Err(source)) if finished => Err(DaemonError::Session { path, source }),
            Ok(Err(e)) => {
                // Typically EBUSY: files are still open. Detach lazily (the
                // kernel drops the mount once they are closed) and keep
                // serving them for a while.
                warn!("{} is busy ({e}); detaching it lazily", path.display());
                let detached = self.detach_if_ours();
                self.wait_for_open_files();
                detached
            }
            Err(_) => {
                warn!(
                    "{} still in use after {UNMOUNT_GRACE:?}; detaching it lazily \
                     (its open files fail once this process exits)",
                    path.display()
                );
                self.detach_if_ours()
            }
        };
        // A session that ended on its own may leave its mount behind, dead (its connection
        // was aborted): detach it. (Not a live mount found there: someone may have mounted
        // again, and mount IDs are reused.)
        let mut left_behind = finished && self.ours_on_top();
        if left_behind && is_dead_mount(&self.mountpoint) {
            match detach_lazily(&self.mountpoint) {
                Ok(()) => left_behind = false,
                Err(e) => error!("{e}"),
            }
        }
        if result.is_ok() || (finished && !left_behind) {
            self.disarm_watchdog();
        }
        result
    }

    /// Serves still-open files of a detached mount for up to the grace
    /// period, or until the kernel ends the session (last file closed).
    fn wait_for_open_files(&self) {
        let start = std::time::Instant::now();
        while let Ok(open) = self.core.open_handles() {
            if open == 0 || self.ended.load(Ordering::SeqCst) {
                return;
            }
            if start.elapsed() >= UNMOUNT_GRACE {
                warn!(
                    "{open} file(s) of {} still open after {UNMOUNT_GRACE:?}; they fail \
                     once this process exits",
                    self.mountpoint.display()
                );
                return;
            }
            thread::sleep(POLL);
        }
    }

    fn detach_if_ours(&self) -> Result<(), DaemonError> {
        if self.ours_on_top() {
            detach_lazily(&self.mountpoint)?;
        }
        Ok(())
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            error!("{e}");
        }
    }
}

// ---------------------------------------------------------------------------
// Signals and the serving loop

/// SIGINT/SIGTERM/SIGHUP handlers that record the signal number.
struct SignalWatch {
    received: Arc<AtomicUsize>,
    ids: Vec<signal_hook::SigId>,
}

impl SignalWatch {
    fn install() -> Result<SignalWatch, DaemonError> {
        let received = Arc::new(AtomicUsize::new(0));
        let mut watch = SignalWatch {
            received: received.clone(),
            ids: Vec::new(),
        };
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let value = usize::try_from(sig).unwrap_or(usize::MAX);
            let id = signal_hook::flag::register_usize(sig, received.clone(), value)
                .map_err(DaemonError::Signals)?;
            watch.ids.push(id);
        }
        Ok(watch)
    }

    fn received(&self) -> Option<i32> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            sig => i32::try_from(sig).ok(),
        }
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Serves until a signal arrives or the mount goes away, then unmounts.
fn serve(handle: MountHandle, signals: &SignalWatch) -> Result<Option<i32>, DaemonError> {
    loop {
        if let Some(sig) = signals.received() {
            info!(
                "received signal {sig}; unmounting {}",
                handle.mountpoint().display()
            );
            handle.unmount()?;
            return Ok(Some(sig));
        }
        if handle.is_finished() {
            info!("{} was unmounted", handle.mountpoint().display());
            handle.unmount()?;
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// mount(): foreground and background

/// Mounts the filesystem built by `core_builder` at `mountpoint`.
///
/// * Foreground: builds the core, mounts, logs to stderr (through whatever
///   `log` logger the caller installed) and blocks until SIGINT/SIGTERM/SIGHUP
///   (unmount, return `Unmounted { signal }`) or an external unmount
///   (`Unmounted { signal: None }`). While the core is being built, signals
///   keep their default action; the handlers are removed again on return
///   (signal-hook leaves its own no-op handler installed: exit soon after).
/// * Background: checks the mount point and the log file, forks a daemon
///   (new session, second fork, cwd `/`, stdin `/dev/null`, stdout/stderr to
///   `log_file` or `/dev/null`) and returns `Daemonized { pid }` only once
///   the daemon's mount answers requests; if the daemon fails first, returns
///   its error message as [`DaemonError::Child`]. `core_builder` runs in the
///   daemon, after the fork, so it may start threads and open decoders. Call
///   this before starting any thread of your own (only the calling thread
///   survives a fork; a warning is logged otherwise). The daemon never
///   returns from this function: it exits with status 0 after a clean
///   unmount, 1 on failure.
pub fn mount<E: Display>(
    core_builder: impl FnOnce() -> Result<FsCore, E>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<MountExit, DaemonError> {
    let resolved = check_mountpoint(mountpoint)?;
    if opts.foreground {
        run_foreground(core_builder, &resolved, opts)
    } else {
        daemonize(core_builder, &resolved, opts)
    }
}

fn run_foreground<E: Display>(
    core_builder: impl FnOnce() -> Result<FsCore, E>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<MountExit, DaemonError> {
    // Until the core is built nothing is mounted: signals keep their default
    // action (Ctrl-C stops a slow load at once). From here on they unmount.
    let core = core_builder().map_err(|e| DaemonError::Build(format!("{e:#}")))?;
    let signals = SignalWatch::install()?;
    let handle = mount_in_process(core, mountpoint, opts)?;
    info!(
        "serving {} in the foreground; Ctrl-C, SIGTERM or `av1pack umount` to stop",
        mountpoint.display()
    );
    let signal = serve(handle, &signals)?;
    Ok(MountExit::Unmounted { signal })
}

fn thread_count() -> usize {
    fs::read_dir("/proc/self/task").map_or(1, |dir| dir.count())
}

/// First line the daemon writes to the readiness pipe.
fn send_status(writer: &mut io::PipeWriter, status: Result<u32, &str>) {
    let line = match status {
        Ok(pid) => format!("READY {pid}\n"),
        Err(msg) => format!("ERROR {}\n", msg.replace('\n', " ")),
    };
    if let Err(e) = writer.write_all(line.as_bytes()) {
        error!("cannot report to the parent process: {e}");
    }
}

fn daemonize<E: Display>(
    core_builder: impl FnOnce() -> Result<FsCore, E>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<MountExit, DaemonError> {
    let log_file = match &opts.log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| DaemonError::LogFile {
                    path: path.clone(),
                    source,
                })?;
            Some(file)
        }
        None => None,
    };
    let threads = thread_count();
    if threads > 1 {
        warn!("daemonising a process with {threads} threads; only the calling thread is kept");
    }
    // Nothing buffered may be duplicated into the child.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    let (mut reader, writer) = io::pipe().map_err(DaemonError::Daemonize)?;

    // SAFETY: fork has no preconditions; the child only continues on the
    // calling thread, which owns everything it touches below.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(DaemonError::Daemonize(io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(reader);
        daemon_child(core_builder, mountpoint, opts, writer, log_file);
    }
    drop(writer);
    drop(log_file);

    // Reap the intermediate child (it exits right after the second fork).
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };

    let mut report = String::new();
    if let Err(e) = reader.read_to_string(&mut report) {
        return Err(DaemonError::Daemonize(e));
    }
    let first = report.lines().next().unwrap_or("");
    if let Some(pid) = first.strip_prefix("READY ") {
        let pid = pid.trim().parse().unwrap_or(0);
        info!("daemon {pid} is serving {}", mountpoint.display());
        return Ok(MountExit::Daemonized { pid });
    }
    if let Some(msg) = first.strip_prefix("ERROR ") {
        return Err(DaemonError::Child(msg.to_owned()));
    }
    let hint = match &opts.log_file {
        Some(path) => format!(" (see {})", path.display()),
        None => " (run with --foreground to see why)".to_owned(),
    };
    Err(DaemonError::DaemonDied(hint))
}

fn redirect_stdio(log_file: Option<&File>) -> io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let out = log_file.map_or(null.as_raw_fd(), AsRawFd::as_raw_fd);
    for (from, to) in [(null.as_raw_fd(), 0), (out, 1), (out, 2)] {
        // SAFETY: dup2 on descriptors we own onto the standard ones.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs in the forked child; never returns.
fn daemon_child<E: Display>(
    core_builder: impl FnOnce() -> Result<FsCore, E>,
    mountpoint: &Path,
    opts: &MountOptions,
    mut writer: io::PipeWriter,
    log_file: Option<File>,
) -> ! {
    let fail = |writer: &mut io::PipeWriter, msg: String| -> ! {
        error!("{msg}");
        send_status(writer, Err(&msg));
        std::process::exit(1)
    };
    // New session (no controlling terminal), then fork again so that the
    // daemon is not a session leader and can never acquire one.
    // SAFETY: plain syscalls without preconditions.
    if unsafe { libc::setsid() } < 0 {
        let e = io::Error::last_os_error();
        fail(&mut writer, format!("cannot daemonise: setsid: {e}"));
    }
    // SAFETY: as above; single-threaded at this point.
    match unsafe { libc::fork() } {
        -1 => {
            let e = io::Error::last_os_error();
            fail(&mut writer, format!("cannot daemonise: fork: {e}"));
        }
        0 => {}
        // SAFETY: leave the intermediate process without running any
        // destructors or atexit handlers inherited from the parent.
        _ => unsafe { libc::_exit(0) },
    }
    if let Err(e) = std::env::set_current_dir("/") {
        fail(&mut writer, format!("cannot daemonise: chdir /: {e}"));
    }
    if let Err(e) = redirect_stdio(log_file.as_ref()) {
        fail(
            &mut writer,
            format!("cannot daemonise: redirecting stdio: {e}"),
        );
    }
    drop(log_file);
    let pid = std::process::id();
    info!("daemon {pid} starting for {}", mountpoint.display());

    let core = match core_builder() {
        Ok(core) => core,
        Err(e) => fail(
            &mut writer,
            DaemonError::Build(format!("{e:#}")).to_string(),
        ),
    };
    let signals = match SignalWatch::install() {
        Ok(s) => s,
        Err(e) => fail(&mut writer, e.to_string()),
    };
    let handle = match mount_in_process(core, mountpoint, opts) {
        Ok(handle) => handle,
        Err(e) => fail(&mut writer, e.to_string()),
    };
    send_status(&mut writer, Ok(pid));
    drop(writer);
    match serve(handle, &signals) {
        Ok(_) => {
            info!("daemon {pid} exiting");
            std::process::exit(0)
        }
        Err(e) => {
            error!("{e}");
            std::process::exit(1)
        }
    }
}

// ---------------------------------------------------------------------------
// Unmounting

fn euid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn fusermount(args: &[&str], path: &Path) -> Result<(), String> {
    match Command::new("fusermount3")
        .args(args)
        .arg("--")
        .arg(path)
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "fusermount3: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run fusermount3: {e}")),
    }
}

fn umount2(path: &Path, flags: i32) -> io::Result<()> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: valid NUL-terminated path. The path is already resolved:
    // never follow a symlink swapped in for its last component.
    if unsafe { libc::umount2(cpath.as_ptr(), flags | libc::UMOUNT_NOFOLLOW) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lazy unmount: detaches `path` now; the kernel drops the mount once unused.
fn detach_lazily(path: &Path) -> Result<(), DaemonError> {
    if euid_is_root() {
        match umount2(path, libc::MNT_DETACH) {
            Ok(()) => return Ok(()),
            // E.g. EPERM in a user namespace: let fusermount3 try.
            Err(e) => debug!("umount2(MNT_DETACH) {}: {e}", path.display()),
        }
    }
    fusermount(&["-u", "-z"], path).map_err(|msg| DaemonError::Unmount {
        path: path.to_path_buf(),
        msg,
    })
}

/// A mount that is busy: refused, unless its daemon is gone (a shell left inside a dead
/// mount keeps it busy for ever): then it is detached lazily, which is all that can be done.
fn detach_if_dead(path: PathBuf) -> Result<(), DaemonError> {
    if !is_dead_mount(&path) {
        return Err(DaemonError::Busy(path));
    }
    detach_lazily(&path)?;
    warn!(
        "{}: its server was gone and something was still in it: detached lazily",
        path.display()
    );
    Ok(())
}

/// Unmounts the FUSE filesystem at `mountpoint` (`fusermount3 -u`, falling
/// back to `umount2` when running as root). Errors: not mounted, not a FUSE
/// mount, busy. Works on dead mounts too; never `stat`s the mount itself.
pub fn unmount(mountpoint: &Path) -> Result<(), DaemonError> {
    let mut path = resolve_without_last(mountpoint)?;
    let mut entry = find_mount(&path)?;
    if entry.is_none() {
        // Perhaps the last component is a symlink to the mount point.
        if let Ok(full) = mountpoint.canonicalize() {
            if full != path {
                entry = find_mount(&full)?;
                path = full;
            }
        }
    }
    let entry = entry.ok_or_else(|| DaemonError::NotMounted(path.clone()))?;
    if !entry.is_fuse() {
        return Err(DaemonError::NotFuse {
            path,
            fstype: entry.fstype,
        });
    }
    if let Err(fusermount_msg) = fusermount(&["-u"], &path) {
        debug!("{fusermount_msg}");
        if !euid_is_root() {
            if fusermount_msg.contains("busy") {
                return detach_if_dead(path);
            }
            return Err(DaemonError::Unmount {
                path,
                msg: fusermount_msg,
            });
        }
        match umount2(&path, 0) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return detach_if_dead(path),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(DaemonError::NotMounted(path))
            }
            Err(e) => {
                return Err(DaemonError::Unmount {
                    path,
                    msg: format!("{fusermount_msg}; umount2: {e}"),
                })
            }
        }
    }
    // The same mount still there (mount IDs are reused: another mount made meanwhile
    // elsewhere may carry this one's).
    if mounts()?
        .iter()
        .any(|m| m.id == entry.id && m.mount_point == entry.mount_point)
    {
        return Err(DaemonError::Unmount {
            path,
            msg: "still mounted after unmounting".to_owned(),
        });
    }
    info!("unmounted {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed() {
        let line = b"36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - fuse.av1pack my\\040pics.mkv ro,user_id=0";
        let e = parse_mountinfo_line(line).unwrap();
        assert_eq!(e.id, 36);
        assert_eq!(e.mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(e.fstype, "fuse.av1pack");
        assert_eq!(e.source, "my pics.mkv");
        assert!(e.is_fuse());
        let plain = b"22 27 0:21 / /proc rw,relatime - proc proc rw";
        let p = parse_mountinfo_line(plain).unwrap();
        assert!(!p.is_fuse());
        assert!(parse_mountinfo_line(b"garbage").is_none());
        assert_eq!(unescape_mountinfo(b"a\\134b\\011"), b"a\\b\t");
        assert_eq!(unescape_mountinfo(b"trailing\\04"), b"trailing\\04");
        assert!(mounts()
            .unwrap()
            .iter()
            .any(|m| m.mount_point == Path::new("/")));
    }

    #[test]
    fn fsname_is_sanitized() {
        assert_eq!(sanitize_fsname("a,b\\c\nd"), "a_b_c_d");
        assert_eq!(sanitize_fsname("  "), SUBTYPE);
        assert_eq!(sanitize_fsname("photos 2024.mkv"), "photos 2024.mkv");
    }

    #[test]
    fn config_follows_options() {
        let opts = MountOptions::default();
        let c = fuser_config(&opts);
        assert_eq!(c.acl, SessionACL::Owner);
        assert!(!c.mount_options.contains(&MountOption::AutoUnmount));
        assert!(c.mount_options.contains(&MountOption::RO));
        assert!(c.mount_options.contains(&MountOption::NoSuid));
        assert!(c.mount_options.contains(&MountOption::NoDev));
        let other = MountOptions {
            allow_other: true,
            threads: 3,
            ..MountOptions::default()
        };
        assert_eq!(fuser_config(&other).acl, SessionACL::All);
        assert_eq!(fuser_config(&other).n_threads, Some(3));
        assert!(default_threads() >= 4);
    }

    #[test]
    fn mountpoint_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = check_mountpoint(&missing).unwrap_err();
        assert!(matches!(err, DaemonError::MountpointMissing(_)), "{err}");
        assert!(err.to_string().contains("nope"));
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = check_mountpoint(&file).unwrap_err();
        assert!(matches!(err, DaemonError::NotADirectory(_)), "{err}");
        assert_eq!(
            check_mountpoint(dir.path()).unwrap(),
            dir.path().canonicalize().unwrap()
        );
        let err = unmount(dir.path()).unwrap_err();
        assert!(matches!(err, DaemonError::NotMounted(_)), "{err}");
        let err = unmount(Path::new("/proc")).unwrap_err();
        assert!(matches!(err, DaemonError::NotFuse { .. }), "{err}");
    }
}
