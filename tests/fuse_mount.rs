//! Real FUSE mounts of an in-memory archive.
//!
//! Needs /dev/fuse and fusermount3 (package fuse3). Without /dev/fuse the
//! tests print why and pass, unless the environment variable CI is set, in
//! which case they fail.
//!
//! The daemon tests re-run this test binary as a child process (test
//! `child_entry`, steered by the AV1PACK_TEST_CHILD variable) so that signals
//! and forking hit a separate process.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use av1pack::daemon::{self, DaemonError, MountExit, MountHandle, MountOptions};
use av1pack::fs::{ContentError, ContentSource, CoreOptions, FsCore, NodeKind, NodeSpec};

const CHILD_ENV: &str = "AV1PACK_TEST_CHILD";
const BIG_LEN: usize = 5 * 1024 * 1024 + 321;
const SLOW_DELAY: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Fixture

struct MemSource {
    files: HashMap<usize, Result<Vec<u8>, String>>,
    slow: Vec<usize>,
}

impl ContentSource for MemSource {
    fn read(&self, id: usize, offset: u64, size: u32) -> Result<Vec<u8>, ContentError> {
        if self.slow.contains(&id) {
            thread::sleep(SLOW_DELAY);
        }
        match self.files.get(&id) {
            Some(Ok(data)) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let end = (start + size as usize).min(data.len());
                Ok(data[start..end].to_vec())
            }
            Some(Err(msg)) => Err(ContentError::Damaged(msg.clone())),
            None => Err(ContentError::Other(format!("no content {id}"))),
        }
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn mtime_of(i: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000 + i * 1000, 123_456_789)
}

struct Fixture {
    specs: Vec<NodeSpec>,
    source: Arc<MemSource>,
    /// Readable files: relative path -> content.
    files: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The file whose content errors.
    broken: Vec<u8>,
}

const NON_UTF8: &[u8] = b"caf\xe9 photo.png";

fn fixture(with_slow: bool) -> Fixture {
    let mut files: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    files.insert(b"big.bin".to_vec(), pseudo_random(BIG_LEN, 1));
    files.insert(NON_UTF8.to_vec(), pseudo_random(70_000, 2));
    files.insert(
        b"nested/readme.txt".to_vec(),
        b"hello from inside\n".to_vec(),
    );
    files.insert(
        b"nested/dir/deep/image.jpg".to_vec(),
        pseudo_random(123_457, 3),
    );
    files.insert(b"empty.txt".to_vec(), Vec::new());
    for i in 0..8u64 {
        files.insert(
            format!("parallel/p{i}.bin").into_bytes(),
            pseudo_random(1 << 20, 100 + i),
        );
    }
    if with_slow {
        files.insert(b"slow.bin".to_vec(), pseudo_random(10_000, 9));
    }

    let mut source = MemSource {
        files: HashMap::new(),
        slow: Vec::new(),
    };
    let mut specs = Vec::new();
    for (i, (path, data)) in files.iter().enumerate() {
        let id = i + 10;
        source.files.insert(id, Ok(data.clone()));
        if path.as_slice() == b"slow.bin" {
            source.slow.push(id);
        }
        specs.push(NodeSpec {
            path: path.clone(),
            kind: NodeKind::File,
            mtime: mtime_of(i as u64),
            size: data.len() as u64,
            id,
        });
    }
    let broken = b"broken.png".to_vec();
    source
        .files
        .insert(1, Err("frame 17 failed its checksum".to_owned()));
    specs.push(NodeSpec {
        path: broken.clone(),
        kind: NodeKind::File,
        mtime: mtime_of(50),
        size: 40_000,
        id: 1,
    });
    specs.push(NodeSpec {
        path: b"link".to_vec(),
        kind: NodeKind::Symlink(b"nested/readme.txt".to_vec()),
        mtime: mtime_of(51),
        size: 0,
        id: 0,
    });
    specs.push(NodeSpec {
        path: b"nested".to_vec(),
        kind: NodeKind::Dir,
        mtime: mtime_of(52),
        size: 0,
        id: 0,
    });
    Fixture {
        specs,
        source: Arc::new(source),
        files,
        broken,
    }
}

fn build_core(fx: &Fixture) -> FsCore {
    FsCore::new(
        fx.specs.clone(),
        fx.source.clone(),
        CoreOptions::current_process(),
    )
    .unwrap()
}

fn test_opts() -> MountOptions {
    MountOptions {
        foreground: true,
        allow_other: false,
        threads: 4,
        log_file: None,
        fsname: "fixture.mkv".to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("/dev/fuse is missing but CI is set: FUSE tests cannot run");
    }
    eprintln!("skipping FUSE mount test: /dev/fuse is absent (set CI to make this fatal)");
    false
}

fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .is_test(true)
        .try_init();
}

/// A temporary directory usable as a mount point, traversable by everyone.
fn mount_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mp = dir.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let mp = mp.canonicalize().unwrap();
    (dir, mp)
}

fn mount_fixture(fx: &Fixture, mp: &Path) -> MountHandle {
    init_logging();
    daemon::mount_in_process(build_core(fx), mp, &test_opts()).unwrap()
}

fn p(mp: &Path, rel: &[u8]) -> PathBuf {
    mp.join(OsStr::from_bytes(rel))
}

/// Mount entries (fstype, source) listed at exactly `mp` in /proc/self/mountinfo.
fn mountinfo_at(mp: &Path) -> Vec<(String, String)> {
    let text = fs::read("/proc/self/mountinfo").unwrap();
    let want = mp.as_os_str().as_bytes();
    let mut found = Vec::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        // Mount points containing spaces are escaped as \040; ours have none.
        if fields.get(4) == Some(&want) {
            let sep = fields.iter().position(|f| *f == b"-").unwrap();
            found.push((
                String::from_utf8_lossy(fields[sep + 1]).into_owned(),
                String::from_utf8_lossy(fields[sep + 2]).into_owned(),
            ));
        }
    }
    found
}

fn proc_mounts_has(mp: &Path) -> bool {
    let text = fs::read("/proc/mounts").unwrap();
    let want = mp.as_os_str().as_bytes();
    text.split(|&b| b == b'\n')
        .any(|line| line.split(|&b| b == b' ').nth(1) == Some(want))
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn assert_plain_dir(mp: &Path) {
    assert!(
        mountinfo_at(mp).is_empty(),
        "{} is still a mount point: {:?}",
        mp.display(),
        mountinfo_at(mp)
    );
    let meta = fs::metadata(mp).expect("stat after unmount (no ENOTCONN)");
    assert!(meta.is_dir());
    assert_eq!(fs::read_dir(mp).unwrap().count(), 0);
}

fn raw_errno(r: std::io::Result<impl std::fmt::Debug>) -> i32 {
    r.unwrap_err().raw_os_error().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// In-process mounts

#[test]
fn listing_metadata_and_contents() {
    if !fuse_available() {
        return;
    }
    let fx = fixture(false);
    let (_dir, mp) = mount_dir();
    let handle = mount_fixture(&fx, &mp);
    assert_eq!(
        mountinfo_at(&mp),
        vec![("fuse.av1pack".to_owned(), "fixture.mkv".to_owned())]
    );

    // Directory listing.
    let mut root: Vec<Vec<u8>> = fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    root.sort();
    let mut expected: Vec<Vec<u8>> = vec![
        b"big.bin".to_vec(),
        b"broken.png".to_vec(),
        NON_UTF8.to_vec(),
        b"empty.txt".to_vec(),
        b"link".to_vec(),
        b"nested".to_vec(),
        b"parallel".to_vec(),
    ];
    expected.sort();
    assert_eq!(root, expected);
    let nested: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(mp.join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(nested, vec!["dir", "readme.txt"]);

    // Attributes and contents of every file.
    let uid = unsafe { libc::geteuid() };
    for (i, (rel, data)) in fx.files.iter().enumerate() {
        let path = p(&mp, rel);
        let meta = fs::metadata(&path).unwrap();
        let content = fs::read(&path).unwrap();
        assert_eq!(meta.len(), content.len() as u64, "{}", path.display());
        assert_eq!(&content, data, "{}", path.display());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
        assert!(meta.is_file());
        assert_eq!(meta.nlink(), 1);
        assert_eq!(meta.uid(), uid);
        assert_eq!(meta.blocks(), (data.len() as u64).div_ceil(512));
        assert_eq!(meta.modified().unwrap(), mtime_of(i as u64));
    }
    for d in ["", "nested", "nested/dir", "nested/dir/deep", "parallel"] {
        let meta = fs::metadata(mp.join(d)).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o555, "{d}");
    }
    assert_eq!(fs::metadata(mp.join("nested")).unwrap().nlink(), 3);
    assert_eq!(
        fs::metadata(mp.join("nested")).unwrap().modified().unwrap(),
        mtime_of(52)
    );
    // Sizes are known without reading: even the damaged file has its size.
    assert_eq!(fs::metadata(mp.join("broken.png")).unwrap().len(), 40_000);

    // Symlink.
    let link = mp.join("link");
    let lmeta = fs::symlink_metadata(&link).unwrap();
    assert!(lmeta.file_type().is_symlink());
    assert_eq!(lmeta.permissions().mode() & 0o7777, 0o777);
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("nested/readme.txt")
    );
    assert_eq!(fs::read(&link).unwrap(), b"hello from inside\n");

    // Inode numbers are stable across lookups.
    let ino = fs::metadata(mp.join("big.bin")).unwrap().ino();
    assert_eq!(fs::metadata(mp.join("big.bin")).unwrap().ino(), ino);
    assert_eq!(fs::metadata(&mp).unwrap().ino(), 1);

    // statfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let cpath = std::ffi::CString::new(mp.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::statvfs(cpath.as_ptr(), &mut st) }, 0);
    let total: u64 = fx.files.values().map(|d| d.len() as u64).sum::<u64>() + 40_000;
    assert_eq!(st.f_bsize, 4096);
    assert_eq!(st.f_blocks, total.div_ceil(4096));
    assert_eq!(st.f_bfree, 0);
    assert_eq!(st.f_namemax, 255);
    assert_eq!(st.f_files, handle.core().node_count() as u64);
    assert_ne!(st.f_flag & libc::ST_RDONLY, 0);

    // ls -lR walks everything (getxattr/listxattr/readlink included).
    let out = Command::new("ls").arg("-lR").arg(&mp).output().unwrap();
    assert!(
        out.status.success(),
        "ls -lR failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("readme.txt"));
    assert!(listing.contains("link -> nested/readme.txt"));

    handle.unmount().unwrap();
    assert_plain_dir(&mp);
}

#[test]
fn random_offset_and_concurrent_reads() {
    if !fuse_available() {
        return;
    }
    let fx = fixture(false);
    let (_dir, mp) = mount_dir();
    let handle = mount_fixture(&fx, &mp);
    let big = &fx.files[&b"big.bin".to_vec()];

    let file = File::open(mp.join("big.bin")).unwrap();
    let picks = pseudo_random(600, 77);
    for pick in picks.chunks(6) {
        let off =
            u64::from(u32::from_le_bytes([pick[0], pick[1], pick[2], 0])) % (BIG_LEN as u64 + 1000);
        let len = usize::from(u16::from_le_bytes([pick[4], pick[5]])) + 1;
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = file.read_at(&mut buf[got..], off + got as u64).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        let start = (off as usize).min(BIG_LEN);
        let end = (start + len).min(BIG_LEN);
        assert_eq!(&buf[..got], &big[start..end], "offset {off} len {len}");
    }
    let mut tail = [0u8; 10];
    assert_eq!(file.read_at(&mut tail, BIG_LEN as u64).unwrap(), 0);
    assert_eq!(file.read_at(&mut tail, BIG_LEN as u64 + 4096).unwrap(), 0);

    // 8 threads at once: each reads its own 1 MiB file (cold in the page
    // cache, so the daemon serves them concurrently) and the shared big file.
    let expected: Vec<(PathBuf, Vec<u8>)> = (0..8)
        .map(|i| {
            let rel = format!("parallel/p{i}.bin").into_bytes();
            (p(&mp, &rel), fx.files[&rel].clone())
        })
        .collect();
    let threads: Vec<_> = expected
        .into_iter()
        .enumerate()
        .map(|(i, (path, want))| {
            let big_path = mp.join("big.bin");
            let big = big.clone();
            thread::spawn(move || {
                let mut f = File::open(&path).unwrap();
                let mut got = Vec::new();
                let mut chunk = vec![0u8; 4096 * (i + 1) + 17];
                loop {
                    let n = f.read(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&chunk[..n]);
                }
                assert_eq!(got, want, "{}", path.display());
                assert_eq!(fs::read(&big_path).unwrap(), big);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(file);
    drop(handle); // unmounts
    assert_plain_dir(&mp);
}

#[test]
fn writes_fail_with_erofs() {
    if !fuse_available() {
        return;
    }
    let fx = fixture(false);
    let (_dir, mp) = mount_dir();
    let handle = mount_fixture(&fx, &mp);
    let existing = mp.join("nested/readme.txt");

    assert_eq!(raw_errno(File::create(mp.join("new.txt"))), libc::EROFS);
    assert_eq!(
        raw_errno(OpenOptions::new().write(true).open(&existing)),
        libc::EROFS
    );
    assert_eq!(
        raw_errno(OpenOptions::new().append(true).open(&existing)),
        libc::EROFS
    );
    assert_eq!(
        raw_errno(OpenOptions::new().read(true).write(true).open(&existing)),
        libc::EROFS
    );
    assert_eq!(raw_errno(fs::create_dir(mp.join("d"))), libc::EROFS);
    assert_eq!(raw_errno(fs::remove_file(&existing)), libc::EROFS);
    assert_eq!(raw_errno(fs::remove_dir(mp.join("parallel"))), libc::EROFS);
    assert_eq!(
        raw_errno(fs::rename(&existing, mp.join("moved.txt"))),
        libc::EROFS
    );
    assert_eq!(
        raw_errno(std::os::unix::fs::symlink("x", mp.join("l2"))),
        libc::EROFS
    );
    assert_eq!(
        raw_errno(fs::set_permissions(
            &existing,
            fs::Permissions::from_mode(0o644)
        )),
        libc::EROFS
    );
    assert_eq!(
        raw_errno(fs::hard_link(&existing, mp.join("h"))),
        libc::EROFS
    );
    // Nothing changed.
    assert_eq!(fs::read(&existing).unwrap(), b"hello from inside\n");
    assert!(fs::metadata(mp.join("new.txt")).is_err());
    handle.unmount().unwrap();
    assert_plain_dir(&mp);
}

#[test]
fn damaged_content_is_eio_and_isolated() {
    if !fuse_available() {
        return;
    }
    let fx = fixture(false);
    let (_dir, mp) = mount_dir();
    let handle = mount_fixture(&fx, &mp);
    let broken = p(&mp, &fx.broken);
    for _ in 0..3 {
        assert_eq!(raw_errno(fs::read(&broken)), libc::EIO);
    }
    let f = File::open(&broken).unwrap();
    let mut buf = [0u8; 100];
    assert_eq!(raw_errno(f.read_at(&mut buf, 20_000)), libc::EIO);
    drop(f);
    // Everything else still reads.
    assert_eq!(
        fs::read(mp.join("nested/readme.txt")).unwrap(),
        b"hello from inside\n"
    );
    assert_eq!(
        fs::read(p(&mp, NON_UTF8)).unwrap(),
        fx.files[&NON_UTF8.to_vec()]
    );
    handle.unmount().unwrap();
    assert_plain_dir(&mp);
}

#[test]
fn slow_read_does_not_block_other_requests() {
    if !fuse_available() {
        return;
    }
    let fx = fixture(true);
    let (_dir, mp) = mount_dir();
    let handle = mount_fixture(&fx, &mp);
    let slow_path = mp.join("slow.bin");
    let slow = thread::spawn(move || {
        let start = Instant::now();
        let data = fs::read(&slow_path).unwrap();
        (data, start.elapsed())
    });
    thread::sleep(Duration::from_millis(300)); // let the slow read start
    let start = Instant::now();
    assert_eq!(fs::read_dir(mp.join("nested")).unwrap().count(), 2);
    assert_eq!(
        fs::read(mp.join("nested/dir/deep/image.jpg")).unwrap(),
        fx.files[&b"nested/dir/deep/image.jpg".to_vec()]
    );
    let ls = Command::new("ls").arg("-l").arg(&mp).output().unwrap();
    assert!(ls.status.success());
    let elapsed = start.elapsed();
    assert!(
        elapsed < SLOW_DELAY / 2,
        "other requests waited {elapsed:?} behind a slow read"
    );
    let (data, slow_elapsed) = slow.join().unwrap();
    assert_eq!(data, fx.files[&b"slow.bin".to_vec()]);
    assert!(slow_elapsed >= SLOW_DELAY);
    handle.unmount().unwrap();
    assert_plain_dir(&mp);
}

#[test]
fn mount_point_checks_and_external_unmount() {
    if !fuse_available() {
        return;
    }
    let fx = fixture(false);
    let (dir, mp) = mount_dir();
    let handle = mount_fixture(&fx, &mp);

    // A second mount on the same directory is refused with a clear error.
    let err = daemon::mount_in_process(build_core(&fx), &mp, &test_opts()).unwrap_err();
    assert!(matches!(err, DaemonError::AlreadyMounted { .. }), "{err}");
    assert!(err.to_string().contains("fuse.av1pack"), "{err}");
    let file = dir.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let err = daemon::mount_in_process(build_core(&fx), &file, &test_opts()).unwrap_err();
    assert!(matches!(err, DaemonError::NotADirectory(_)), "{err}");

    // Busy: an open file keeps the mount busy for a plain unmount.
    let open = File::open(mp.join("big.bin")).unwrap();
    let err = daemon::unmount(&mp).unwrap_err();
    assert!(matches!(err, DaemonError::Busy(_)), "{err}");
    drop(open);

    // Unmounting from outside ends the session; the handle notices. (Retry
    // briefly: a fork by a concurrent test may still hold a copy of the fd.)
    let start = Instant::now();
    while let Err(e) = daemon::unmount(&mp) {
        assert!(
            matches!(e, DaemonError::Busy(_)) && start.elapsed() < Duration::from_secs(5),
            "{e}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_plain_dir(&mp);
    wait_until("session end", Duration::from_secs(10), || {
        handle.is_finished()
    });
    // Mounted again on the same folder at once: the old session, ending after that, leaves
    // the new mount alone (fuser 0.18 on its own unmounted the folder by path as it ended).
    let again = mount_fixture(&fx, &mp);
    handle.unmount().unwrap();
    assert!(
        proc_mounts_has(&mp),
        "the new mount was unmounted by the old session"
    );
    assert_eq!(
        fs::read(mp.join("big.bin")).unwrap(),
        fx.files[&b"big.bin"[..]]
    );
    again.unmount().unwrap();
    assert_plain_dir(&mp);
    let err = daemon::unmount(&mp).unwrap_err();
    assert!(matches!(err, DaemonError::NotMounted(_)), "{err}");
}

/// The directory of `mp`'s FUSE connection under /sys/fs/fuse/connections (fusectl, mounted
/// here if it is not), or None where that is not possible (not root, outside CI).
fn fuse_connection(mp: &Path) -> Option<PathBuf> {
    let conns = Path::new("/sys/fs/fuse/connections");
    let dev = fs::metadata(mp).unwrap().dev();
    let conn = conns.join(libc::minor(dev).to_string());
    if !conn.exists() {
        let out = Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(conns)
            .output()
            .unwrap();
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot mount fusectl in CI: {why}"
            );
            eprintln!("skipping: fusectl is not mounted and cannot be: {why}");
            return None;
        }
    }
    assert!(conn.join("abort").exists(), "{}", conn.display());
    Some(conn)
}

/// A connection aborted from outside (fusectl's `abort`) ends the session on its own; the
/// handle then detaches the dead mount instead of leaving "Transport endpoint is not
/// connected" behind.
#[test]
fn aborted_connection_leaves_no_dead_mount() {
    if !fuse_available() {
        return;
    }
    let fx = fixture(false);
    let (_dir, mp) = mount_dir();
    let handle = mount_fixture(&fx, &mp);
    assert_eq!(fs::read(mp.join("empty.txt")).unwrap(), b"");
    let Some(conn) = fuse_connection(&mp) else {
        handle.unmount().unwrap();
        return;
    };
    fs::write(conn.join("abort"), b"1").unwrap();
    wait_until("session end", Duration::from_secs(10), || {
        handle.is_finished()
    });
    // The session ended with an error (its connection aborted), which the handle reports;
    // what matters is that no dead mount is left.
    if let Err(e) = handle.unmount() {
        assert!(matches!(e, DaemonError::Session { .. }), "{e}");
    }
    assert_plain_dir(&mp);
}

#[test]
fn private_mount_refuses_other_users_allow_other_admits_them() {
    if !fuse_available() {
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root to run commands as another user");
        return;
    }
    let fx = fixture(false);
    let as_nobody = |mp: &Path| {
        Command::new("ls")
            .arg(mp)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };

    let (_dir, mp) = mount_dir();
    let handle = mount_fixture(&fx, &mp);
    let out = as_nobody(&mp);
    assert!(
        !out.status.success(),
        "private mount listed by another user"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Even content the owner has just read (now in the page cache) stays private.
    let readme = mp.join("nested/readme.txt");
    assert_eq!(fs::read(&readme).unwrap(), b"hello from inside\n");
    let out = Command::new("cat")
        .arg(&readme)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success(), "another user read a private file");
    handle.unmount().unwrap();

    let opts = MountOptions {
        allow_other: true,
        ..test_opts()
    };
    let handle = daemon::mount_in_process(build_core(&fx), &mp, &opts).unwrap();
    let out = as_nobody(&mp);
    assert!(
        out.status.success(),
        "allow_other mount not listable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("big.bin"));
    handle.unmount().unwrap();
    assert_plain_dir(&mp);
}

// ---------------------------------------------------------------------------
// Daemon processes

/// Entry point of the child processes; a no-op in a normal test run.
#[test]
fn child_entry() {
    let Some(spec) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    init_logging();
    let spec = spec.to_string_lossy().into_owned();
    let (mode, mp) = spec.split_once(':').unwrap();
    let mp = PathBuf::from(mp);
    let fx = fixture(false);
    let mut opts = test_opts();
    match mode {
        "foreground" => {
            let exit = daemon::mount(|| Ok::<_, String>(build_core(&fx)), &mp, &opts).unwrap();
            println!("CHILD_EXIT={exit:?}");
        }
        "background" => {
            opts.foreground = false;
            opts.log_file = Some(mp.with_extension("log"));
            match daemon::mount(|| Ok::<_, String>(build_core(&fx)), &mp, &opts).unwrap() {
                MountExit::Daemonized { pid } => println!("DAEMON_PID={pid}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        "background-fail" => {
            opts.foreground = false;
            let err = daemon::mount(
                || Err::<FsCore, _>("archive index is corrupt (test)".to_owned()),
                &mp,
                &opts,
            )
            .unwrap_err();
            println!("CHILD_ERR={err}");
        }
        other => panic!("unknown child mode {other}"),
    }
    std::io::stdout().flush().unwrap();
}

/// Kills a leftover daemon and unmounts if a test fails half-way.
struct Cleanup {
    pid: Option<u32>,
    mp: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            if !process_gone(pid) {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if !mountinfo_at(&self.mp).is_empty() {
            let _ = daemon::unmount(&self.mp);
        }
    }
}

/// Starts a foreground daemon on `mp` in a child process; the guard kills it and unmounts.
fn spawn_foreground(mp: &Path, logs: &Path) -> (Child, Cleanup) {
    let child = spawn_child("foreground", mp, logs);
    let cleanup = Cleanup {
        pid: Some(child.id()),
        mp: mp.to_owned(),
    };
    (child, cleanup)
}

fn spawn_child(mode: &str, mp: &Path, logs: &Path) -> Child {
    let stdout = File::create(logs.join(format!("{mode}.out"))).unwrap();
    let stderr = File::create(logs.join(format!("{mode}.err"))).unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{}", mp.display()))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

fn child_output(mode: &str, logs: &Path) -> String {
    let out = fs::read_to_string(logs.join(format!("{mode}.out"))).unwrap_or_default();
    let err = fs::read_to_string(logs.join(format!("{mode}.err"))).unwrap_or_default();
    format!("--- stdout\n{out}\n--- stderr\n{err}")
}

fn wait_for_mount(mp: &Path, child: &mut Child, mode: &str, logs: &Path) {
    let start = Instant::now();
    while mountinfo_at(mp).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "child exited early ({status}):\n{}",
                child_output(mode, logs)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no mount appeared:\n{}",
            child_output(mode, logs)
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Mounted; wait until it answers.
    wait_until("the mount to answer", Duration::from_secs(20), || {
        fs::metadata(mp.join("big.bin")).is_ok()
    });
}

fn wait_child(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < timeout, "child did not exit");
        thread::sleep(Duration::from_millis(50));
    }
}

fn process_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(status) => status
            .lines()
            .any(|l| l.starts_with("State:") && (l.contains("Z") || l.contains("X"))),
    }
}

fn assert_not_stale(mp: &Path) {
    match fs::metadata(mp) {
        Ok(meta) => assert!(meta.is_dir()),
        Err(e) => panic!(
            "stat {} after the daemon died: {e} (raw {:?})",
            mp.display(),
            e.raw_os_error()
        ),
    }
}

/// Runs a foreground daemon in a child process and signals it: once it
/// serves (`early` = false) or the instant its mount appears (`early`).
fn signal_child_test(signal: i32, mode_label: &str, early: bool) {
    if !fuse_available() {
        return;
    }
    let (dir, mp) = mount_dir();
    let logs = dir.path();
    let (mut child, _cleanup) = spawn_foreground(&mp, logs);
    if early {
        let start = Instant::now();
        while mountinfo_at(&mp).is_empty() {
            assert!(
                child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(60),
                "no mount appeared:\n{}",
                child_output("foreground", logs)
            );
            thread::sleep(Duration::from_millis(1));
        }
    } else {
        wait_for_mount(&mp, &mut child, "foreground", logs);
        assert_eq!(
            fs::read(mp.join("nested/readme.txt")).unwrap(),
            b"hello from inside\n"
        );
    }
    let pid = i32::try_from(child.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let status = wait_child(&mut child, Duration::from_secs(30));
    let output = child_output("foreground", logs);
    if signal == libc::SIGKILL {
        assert!(!status.success());
        // The watchdog notices the daemon's death and unmounts.
        let start = Instant::now();
        while proc_mounts_has(&mp) {
            if start.elapsed() > Duration::from_secs(15) {
                let ps = Command::new("ps").arg("-ef").output().unwrap();
                panic!(
                    "no auto-unmount after SIGKILL; stat: {:?}\n{output}\n{}",
                    fs::metadata(&mp).map(|m| m.dev()),
                    String::from_utf8_lossy(&ps.stdout)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    } else {
        assert!(status.success(), "{mode_label}: {status}\n{output}");
        assert!(
            output.contains(&format!(
                "CHILD_EXIT=Unmounted {{ signal: Some({signal}) }}"
            )),
            "{output}"
        );
        assert!(!proc_mounts_has(&mp), "still mounted after {mode_label}");
    }
    assert_not_stale(&mp);
    assert_plain_dir(&mp);
}

#[test]
fn foreground_daemon_unmounts_on_sigterm() {
    signal_child_test(libc::SIGTERM, "SIGTERM", false);
}

#[test]
fn foreground_daemon_unmounts_on_sigint() {
    signal_child_test(libc::SIGINT, "SIGINT", false);
}

#[test]
fn sigkilled_daemon_is_auto_unmounted() {
    signal_child_test(libc::SIGKILL, "SIGKILL", false);
}

#[test]
fn daemon_killed_while_mounting_is_auto_unmounted() {
    signal_child_test(libc::SIGKILL, "SIGKILL", true);
}

#[test]
fn sigterm_with_open_file_detaches_and_keeps_serving_it() {
    if !fuse_available() {
        return;
    }
    let (dir, mp) = mount_dir();
    let logs = dir.path();
    let (mut child, _cleanup) = spawn_foreground(&mp, logs);
    wait_for_mount(&mp, &mut child, "foreground", logs);
    let open = File::open(mp.join("big.bin")).unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // Detached from the namespace at once...
    wait_until("lazy detach", Duration::from_secs(10), || {
        !proc_mounts_has(&mp)
    });
    assert_plain_dir(&mp);
    // ...while the open file is still served.
    assert!(child.try_wait().unwrap().is_none());
    let mut buf = vec![0u8; 100_000];
    open.read_exact_at(&mut buf, 4_000_000).unwrap();
    let fx = fixture(false);
    assert_eq!(buf, fx.files[&b"big.bin".to_vec()][4_000_000..4_100_000]);
    drop(open);
    let status = wait_child(&mut child, Duration::from_secs(30));
    assert!(
        status.success(),
        "{status}\n{}",
        child_output("foreground", logs)
    );
}

/// Pids of watchdog processes whose environment names `mp`.
fn watchdogs_for(mp: &Path) -> Vec<i32> {
    let needle = format!("{CHILD_ENV}=foreground:{}", mp.display()).into_bytes();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "av1pack-watch")
                && fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle.as_slice()))
        })
        .collect()
}

/// Mounts the fixture at `mp` in a foreground daemon, then kills its watchdog and the daemon:
/// a dead mount stays behind. With `occupied`, a process sits in the mount (its working
/// folder) meanwhile and after, as a shell left there would; it is returned, to be killed.
fn leave_a_dead_mount(mp: &Path, logs: &Path, occupied: bool) -> (Cleanup, Option<Child>) {
    let (mut child, cleanup) = spawn_foreground(mp, logs);
    wait_for_mount(mp, &mut child, "foreground", logs);
    let sitter = occupied.then(|| {
        Command::new("sleep")
            .arg("120")
            .current_dir(mp)
            .spawn()
            .unwrap()
    });
    // Kill the watchdog first, then the daemon.
    let watchdogs = watchdogs_for(mp);
    assert_eq!(watchdogs.len(), 1, "watchdogs: {watchdogs:?}");
    assert_eq!(unsafe { libc::kill(watchdogs[0], libc::SIGKILL) }, 0);
    wait_until("watchdog death", Duration::from_secs(10), || {
        process_gone(watchdogs[0] as u32)
    });
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    wait_child(&mut child, Duration::from_secs(30));
    assert!(proc_mounts_has(mp));
    assert_eq!(raw_errno(fs::read_dir(mp)), libc::ENOTCONN);
    (cleanup, sitter)
}

/// A dead mount that something is still in (a shell's working folder) cannot be unmounted;
/// `umount` detaches it lazily instead of failing with "busy" for ever.
#[test]
fn dead_mount_in_use_is_detached() {
    if !fuse_available() {
        return;
    }
    let (dir, mp) = mount_dir();
    let (_cleanup, sitter) = leave_a_dead_mount(&mp, dir.path(), true);
    let mut sitter = sitter.unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_av1pack"))
        .arg("umount")
        .arg(&mp)
        .output()
        .unwrap();
    let _ = sitter.kill();
    let _ = sitter.wait();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("detached lazily"), "{err}");
    assert_plain_dir(&mp);
}

#[test]
fn dead_mount_is_refused_and_can_be_unmounted() {
    if !fuse_available() {
        return;
    }
    let (dir, mp) = mount_dir();
    let (_cleanup, _) = leave_a_dead_mount(&mp, dir.path(), false);
    let fx = fixture(false);
    let err = daemon::mount_in_process(build_core(&fx), &mp, &test_opts()).unwrap_err();
    assert!(
        matches!(
            err,
            DaemonError::StaleMount(_) | DaemonError::AlreadyMounted { .. }
        ),
        "{err}"
    );
    daemon::unmount(&mp).unwrap();
    assert_plain_dir(&mp);
}

#[test]
fn background_daemon_is_ready_when_parent_returns() {
    if !fuse_available() {
        return;
    }
    let (dir, mp) = mount_dir();
    let logs = dir.path();
    let mut child = spawn_child("background", &mp, logs);
    let status = wait_child(&mut child, Duration::from_secs(60));
    let output = child_output("background", logs);
    assert!(status.success(), "{status}\n{output}");
    let pid: u32 = output
        .split_once("DAEMON_PID=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid reported:\n{output}"));
    let _cleanup = Cleanup {
        pid: Some(pid),
        mp: mp.clone(),
    };
    // The parent has returned: the mount must already be usable, no waiting.
    assert_eq!(
        mountinfo_at(&mp),
        vec![("fuse.av1pack".to_owned(), "fixture.mkv".to_owned())]
    );
    assert_eq!(
        fs::read(mp.join("nested/readme.txt")).unwrap(),
        b"hello from inside\n"
    );
    assert!(!process_gone(pid));
    // The daemon left the parent's session and directory.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let session: i32 = fields[3].parse().unwrap();
    assert_ne!(session, unsafe { libc::getsid(0) });
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/")
    );
    // Its log went to the log file.
    let log_path = mp.with_extension("log");
    let log = fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("mounted fixture.mkv"), "log:\n{log}");

    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    wait_until("unmount after SIGHUP", Duration::from_secs(20), || {
        !proc_mounts_has(&mp)
    });
    wait_until("daemon exit", Duration::from_secs(20), || process_gone(pid));
    assert_plain_dir(&mp);
}

#[test]
fn background_daemon_failure_reaches_the_parent() {
    if !fuse_available() {
        return;
    }
    let (dir, mp) = mount_dir();
    let logs = dir.path();
    let mut child = spawn_child("background-fail", &mp, logs);
    let _cleanup = Cleanup {
        pid: None,
        mp: mp.clone(),
    };
    let status = wait_child(&mut child, Duration::from_secs(60));
    let output = child_output("background-fail", logs);
    assert!(status.success(), "{status}\n{output}");
    assert!(
        output.contains("CHILD_ERR=cannot load the archive: archive index is corrupt (test)"),
        "{output}"
    );
    assert_plain_dir(&mp);
    // The missing mount point error names the path, before any fork.
    let err = daemon::mount(
        || Ok::<_, String>(build_core(&fixture(false))),
        &dir.path().join("missing"),
        &MountOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(matches!(err, DaemonError::MountpointMissing(_)));
}
