//! Unit tests of the core, without FUSE.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;

/// In-memory content: id -> bytes, or an error message for damaged content.
#[derive(Default)]
struct MemSource {
    files: HashMap<usize, Result<Vec<u8>, String>>,
    reads: AtomicUsize,
    opened: AtomicUsize,
    released: AtomicUsize,
    /// Ids whose reads return one byte less than asked.
    short: Vec<usize>,
    /// Ids whose reads panic.
    panics: Vec<usize>,
}

impl ContentSource for MemSource {
    fn read(&self, id: usize, offset: u64, size: u32) -> Result<Vec<u8>, ContentError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.panics.contains(&id) {
            panic!("decoder exploded");
        }
        let data = match self.files.get(&id) {
            Some(Ok(d)) => d,
            Some(Err(msg)) => return Err(ContentError::Damaged(msg.clone())),
            None => return Err(ContentError::Other(format!("no content {id}"))),
        };
        let start = (offset as usize).min(data.len());
        let mut end = (start + size as usize).min(data.len());
        if self.short.contains(&id) && end > start {
            end -= 1;
        }
        Ok(data[start..end].to_vec())
    }
    fn opened(&self, _id: usize) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }
    fn released(&self, _id: usize) {
        self.released.fetch_add(1, Ordering::SeqCst);
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
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

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn file(path: &[u8], id: usize, size: u64, secs: u64) -> NodeSpec {
    NodeSpec {
        path: path.to_vec(),
        kind: NodeKind::File,
        mtime: t(secs),
        size,
        id,
    }
}

fn dir(path: &[u8], secs: u64) -> NodeSpec {
    NodeSpec {
        path: path.to_vec(),
        kind: NodeKind::Dir,
        mtime: t(secs),
        size: 0,
        id: 0,
    }
}

fn symlink(path: &[u8], target: &[u8], secs: u64) -> NodeSpec {
    NodeSpec {
        path: path.to_vec(),
        kind: NodeKind::Symlink(target.to_vec()),
        mtime: t(secs),
        size: 0,
        id: 0,
    }
}

const OPTS: CoreOptions = CoreOptions {
    uid: 1234,
    gid: 5678,
};

fn core_with(specs: Vec<NodeSpec>, source: MemSource) -> (FsCore, Arc<MemSource>) {
    let source = Arc::new(source);
    let core = FsCore::new(specs, source.clone(), OPTS.clone()).unwrap();
    (core, source)
}

/// A small tree: big.bin (1 MiB random), a/b/c.txt, a/caf\xe9.png,
/// "with space.jpg", link -> a/b/c.txt, bad.png (damaged content).
fn sample() -> (FsCore, Arc<MemSource>, Vec<u8>) {
    let big = pseudo_random(1 << 20, 42);
    let mut source = MemSource::default();
    source.files.insert(1, Ok(big.clone()));
    source.files.insert(2, Ok(b"hello\n".to_vec()));
    source.files.insert(3, Ok(vec![7u8; 3000]));
    source.files.insert(4, Ok(b"spaces".to_vec()));
    source
        .files
        .insert(5, Err("checksum mismatch in frame 3".into()));
    let specs = vec![
        file(b"big.bin", 1, big.len() as u64, 100),
        file(b"a/b/c.txt", 2, 6, 200),
        file(b"a/caf\xe9.png", 3, 3000, 150),
        file(b"with space.jpg", 4, 6, 50),
        symlink(b"link", b"a/b/c.txt", 60),
        file(b"bad.png", 5, 10_000, 70),
    ];
    let (core, source) = core_with(specs, source);
    (core, source, big)
}

fn names(core: &FsCore, ino: u64, offset: u64) -> Vec<Vec<u8>> {
    core.readdir(ino, offset)
        .unwrap()
        .map(|e| e.name.as_bytes().to_vec())
        .collect()
}

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    r.unwrap_err().errno()
}

#[test]
fn implicit_parents_are_created() {
    let (core, _, _) = sample();
    let a = core.lookup(ROOT_INO, OsStr::new("a")).unwrap();
    assert_eq!(a.kind, FileKind::Dir);
    let b = core.lookup(a.ino, OsStr::new("b")).unwrap();
    assert_eq!(b.kind, FileKind::Dir);
    let c = core.lookup(b.ino, OsStr::new("c.txt")).unwrap();
    assert_eq!((c.kind, c.size), (FileKind::File, 6));
    // Implicit directories take the newest mtime below them.
    assert_eq!(b.mtime, t(200));
    assert_eq!(a.mtime, t(200));
    assert_eq!(core.getattr(ROOT_INO).unwrap().mtime, t(200));
    // Root, a, a/b, 6 explicit nodes.
    assert_eq!(core.node_count(), 9);
}

#[test]
fn explicit_directory_keeps_its_mtime() {
    let (core, _) = core_with(
        vec![dir(b"", 5), dir(b"d", 10), file(b"d/x", 1, 0, 99)],
        MemSource::default(),
    );
    assert_eq!(core.lookup_path(b"d").unwrap().mtime, t(10));
    assert_eq!(core.getattr(ROOT_INO).unwrap().mtime, t(5));
    let empty = FsCore::new(vec![], Arc::new(MemSource::default()), OPTS).unwrap();
    assert_eq!(
        empty.getattr(ROOT_INO).unwrap().mtime,
        SystemTime::UNIX_EPOCH
    );
    assert_eq!(
        names(&empty, ROOT_INO, 0),
        vec![b".".to_vec(), b"..".to_vec()]
    );
}

#[test]
fn inode_numbers_are_stable_and_sorted() {
    let (core, _, _) = sample();
    // Depth-first, name-sorted: a, a/b, a/b/c.txt, a/caf\xe9.png, bad.png, big.bin, link, with space.jpg
    let expected: [(&[u8], u64); 9] = [
        (b"", 1),
        (b"a", 2),
        (b"a/b", 3),
        (b"a/b/c.txt", 4),
        (b"a/caf\xe9.png", 5),
        (b"bad.png", 6),
        (b"big.bin", 7),
        (b"link", 8),
        (b"with space.jpg", 9),
    ];
    for (path, ino) in expected {
        assert_eq!(core.lookup_path(path).unwrap().ino, ino, "{path:?}");
        assert_eq!(core.path_of(ino), Some(path));
    }
    // Same nodes in another order: same numbers.
    let (core2, _, _) = {
        let (c, s, b) = sample();
        drop(c);
        let mut specs = vec![
            symlink(b"link", b"a/b/c.txt", 60),
            file(b"bad.png", 5, 10_000, 70),
            file(b"with space.jpg", 4, 6, 50),
            file(b"a/caf\xe9.png", 3, 3000, 150),
            file(b"a/b/c.txt", 2, 6, 200),
            file(b"big.bin", 1, b.len() as u64, 100),
        ];
        specs.reverse();
        (FsCore::new(specs, s.clone(), OPTS).unwrap(), s, b)
    };
    for (path, ino) in expected {
        assert_eq!(core2.lookup_path(path).unwrap().ino, ino);
    }
}

#[test]
fn non_utf8_and_space_names() {
    let (core, _, _) = sample();
    let a = core.lookup_path(b"a").unwrap();
    let cafe = core
        .lookup(a.ino, OsStr::from_bytes(b"caf\xe9.png"))
        .unwrap();
    assert_eq!(cafe.size, 3000);
    assert_eq!(
        errno(core.lookup(a.ino, OsStr::new("café.png"))),
        libc::ENOENT
    );
    let spaced = core.lookup(ROOT_INO, OsStr::new("with space.jpg")).unwrap();
    assert_eq!(core.read_ino(spaced.ino, 0, 100).unwrap(), b"spaces");
    assert_eq!(
        names(&core, a.ino, 0),
        vec![
            b".".to_vec(),
            b"..".to_vec(),
            b"b".to_vec(),
            b"caf\xe9.png".to_vec()
        ]
    );
    assert_eq!(core.display(cafe.ino), "a/caf\\xe9.png");
}

#[test]
fn deep_nesting() {
    let mut path = Vec::new();
    for i in 0..200 {
        if i > 0 {
            path.push(b'/');
        }
        path.extend_from_slice(format!("level{i}").as_bytes());
    }
    path.extend_from_slice(b"/leaf");
    let mut source = MemSource::default();
    source.files.insert(9, Ok(b"deep".to_vec()));
    let (core, _) = core_with(vec![file(&path, 9, 4, 1)], source);
    assert_eq!(core.node_count(), 202);
    let leaf = core.lookup_path(&path).unwrap();
    assert_eq!(core.read_ino(leaf.ino, 0, 10).unwrap(), b"deep");
    let level0 = core.lookup_path(b"level0").unwrap();
    assert_eq!(level0.nlink, 3);
    // ".." of each level leads back up.
    let level1 = core.lookup(level0.ino, OsStr::new("level1")).unwrap();
    assert_eq!(
        core.lookup(level1.ino, OsStr::new("..")).unwrap().ino,
        level0.ino
    );
}

#[test]
fn attributes() {
    let (core, _, big) = sample();
    let root = core.getattr(ROOT_INO).unwrap();
    assert_eq!(root.kind, FileKind::Dir);
    assert_eq!(root.perm, 0o555);
    assert_eq!(root.nlink, 3); // . + .. + "a"
    assert_eq!((root.uid, root.gid), (1234, 5678));
    assert_eq!(root.blksize, 4096);

    let f = core.lookup_path(b"big.bin").unwrap();
    assert_eq!(f.perm, 0o444);
    assert_eq!(f.nlink, 1);
    assert_eq!(f.size, big.len() as u64);
    assert_eq!(f.blocks, (big.len() as u64).div_ceil(512));
    assert_eq!((f.mtime, f.atime, f.ctime), (t(100), t(100), t(100)));
    assert_eq!(core.lookup_path(b"a/caf\xe9.png").unwrap().blocks, 6); // 3000 bytes

    let l = core.lookup_path(b"link").unwrap();
    assert_eq!(l.kind, FileKind::Symlink);
    assert_eq!(l.perm, 0o777);
    assert_eq!(l.size, 9);
    assert_eq!(core.readlink(l.ino).unwrap(), b"a/b/c.txt");
    assert_eq!(errno(core.readlink(f.ino)), libc::EINVAL);

    assert_eq!(errno(core.getattr(0)), libc::ENOENT);
    assert_eq!(errno(core.getattr(1000)), libc::ENOENT);
    assert_eq!(errno(core.getattr(u64::MAX)), libc::ENOENT);
}

#[test]
fn lookup_errors() {
    let (core, _, _) = sample();
    let f = core.lookup_path(b"big.bin").unwrap();
    assert_eq!(
        errno(core.lookup(ROOT_INO, OsStr::new("nope"))),
        libc::ENOENT
    );
    assert_eq!(errno(core.lookup(f.ino, OsStr::new("x"))), libc::ENOTDIR);
    assert_eq!(errno(core.lookup(77, OsStr::new("x"))), libc::ENOENT);
    let long = "x".repeat(256);
    assert_eq!(
        errno(core.lookup(ROOT_INO, OsStr::new(&long))),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        core.lookup(ROOT_INO, OsStr::new("..")).unwrap().ino,
        ROOT_INO
    );
}

#[test]
fn readdir_and_offsets() {
    let (core, _, _) = sample();
    let all: Vec<DirEntry<'_>> = core.readdir(ROOT_INO, 0).unwrap().collect();
    let got: Vec<&[u8]> = all.iter().map(|e| e.name.as_bytes()).collect();
    assert_eq!(
        got,
        vec![
            &b"."[..],
            b"..",
            b"a",
            b"bad.png",
            b"big.bin",
            b"link",
            b"with space.jpg"
        ]
    );
    assert_eq!(all[0].ino, ROOT_INO);
    assert_eq!(all[1].ino, ROOT_INO);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.next_offset, i as u64 + 1);
        if i >= 2 {
            let attr = core.lookup(ROOT_INO, e.name).unwrap();
            assert_eq!((attr.ino, attr.kind), (e.ino, e.kind));
        }
    }
    // Resuming at every offset gives the rest of the listing.
    for off in 0..=all.len() as u64 + 3 {
        let rest: Vec<DirEntry<'_>> = core.readdir(ROOT_INO, off).unwrap().collect();
        let start = (off as usize).min(all.len());
        assert_eq!(rest, all[start..].to_vec(), "offset {off}");
    }
    let b = core.lookup_path(b"a/b").unwrap();
    let a = core.lookup_path(b"a").unwrap();
    let entries: Vec<DirEntry<'_>> = core.readdir(b.ino, 0).unwrap().collect();
    assert_eq!(entries[1].ino, a.ino); // ".." of a/b is a
    let f = core.lookup_path(b"big.bin").unwrap();
    assert_eq!(errno(core.readdir(f.ino, 0)), libc::ENOTDIR);
    assert_eq!(core.opendir(ROOT_INO, libc::O_RDONLY).unwrap(), 0);
    assert_eq!(errno(core.opendir(f.ino, libc::O_RDONLY)), libc::ENOTDIR);
    core.releasedir(0).unwrap();
}

#[test]
fn open_flags() {
    let (core, source, _) = sample();
    let f = core.lookup_path(b"big.bin").unwrap().ino;
    for flags in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_RDONLY | libc::O_TRUNC,
        libc::O_WRONLY | libc::O_APPEND,
        libc::O_RDWR | libc::O_CREAT,
    ] {
        assert_eq!(errno(core.open(f, flags)), libc::EROFS, "flags {flags:#o}");
    }
    assert_eq!(errno(core.open(ROOT_INO, libc::O_RDONLY)), libc::EISDIR);
    let link = core.lookup_path(b"link").unwrap().ino;
    assert_eq!(errno(core.open(link, libc::O_RDONLY)), libc::ELOOP);
    assert_eq!(source.opened.load(Ordering::SeqCst), 0);

    let fh = core
        .open(f, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .unwrap();
    let fh2 = core.open(f, libc::O_RDONLY | libc::O_APPEND).unwrap();
    assert_ne!(fh, fh2);
    assert_eq!(core.open_handles().unwrap(), 2);
    assert_eq!(source.opened.load(Ordering::SeqCst), 2);
    core.release(fh).unwrap();
    assert_eq!(source.released.load(Ordering::SeqCst), 1);
    assert_eq!(errno(core.read(fh, 0, 10)), libc::EBADF);
    assert_eq!(errno(core.release(fh)), libc::EBADF);
    assert_eq!(core.read(fh2, 0, 3).unwrap().len(), 3);
    core.release(fh2).unwrap();
    assert_eq!(core.open_handles().unwrap(), 0);
}

#[test]
fn reads_match_slices_of_the_content() {
    let (core, _, big) = sample();
    let ino = core.lookup_path(b"big.bin").unwrap().ino;
    let fh = core.open(ino, libc::O_RDONLY).unwrap();
    let offsets = pseudo_random(400, 7);
    for pair in offsets.chunks(4) {
        let off = u64::from(u16::from_le_bytes([pair[0], pair[1]])) * 17;
        let size = u32::from(u16::from_le_bytes([pair[2], pair[3]])) + 1;
        let got = core.read(fh, off, size).unwrap();
        let start = (off as usize).min(big.len());
        let end = (start + size as usize).min(big.len());
        assert_eq!(got, &big[start..end], "offset {off} size {size}");
    }
    // Whole file in 128 KiB reads, like the kernel's readahead.
    let mut whole = Vec::new();
    let mut off = 0u64;
    loop {
        let chunk = core.read(fh, off, 128 * 1024).unwrap();
        if chunk.is_empty() {
            break;
        }
        off += chunk.len() as u64;
        whole.extend(chunk);
    }
    assert_eq!(whole, big);
    core.release(fh).unwrap();
}

#[test]
fn reads_at_and_past_eof() {
    let (core, _, big) = sample();
    let ino = core.lookup_path(b"big.bin").unwrap().ino;
    let len = big.len() as u64;
    assert!(core.read_ino(ino, len, 4096).unwrap().is_empty());
    assert!(core
        .read_ino(ino, len + 1_000_000, 4096)
        .unwrap()
        .is_empty());
    assert!(core.read_ino(ino, u64::MAX, 4096).unwrap().is_empty());
    assert_eq!(
        core.read_ino(ino, len - 10, 4096).unwrap(),
        &big[big.len() - 10..]
    );
    assert!(core.read_ino(ino, 0, 0).unwrap().is_empty());
    assert_eq!(errno(core.read_ino(ROOT_INO, 0, 10)), libc::EISDIR);
    let (empty, _) = core_with(vec![file(b"empty", 1, 0, 1)], MemSource::default());
    let e = empty.lookup_path(b"empty").unwrap();
    // Empty files never reach the source (which has no content 1 at all).
    assert!(empty.read_ino(e.ino, 0, 10).unwrap().is_empty());
}

#[test]
fn content_errors_are_eio_and_isolated() {
    let (core, source, big) = sample();
    let bad = core.lookup_path(b"bad.png").unwrap();
    assert_eq!(bad.size, 10_000); // stat works without the content
    let fh = core.open(bad.ino, libc::O_RDONLY).unwrap();
    for off in [0u64, 4096, 8192] {
        let err = core.read(fh, off, 4096).unwrap_err();
        assert_eq!(err.errno(), libc::EIO);
        assert!(err.to_string().contains("bad.png"), "{err}");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }
    // Past EOF is still just EOF.
    assert!(core.read(fh, 10_000, 10).unwrap().is_empty());
    core.release(fh).unwrap();
    let ok = core.lookup_path(b"big.bin").unwrap();
    assert_eq!(core.read_ino(ok.ino, 5, 5).unwrap(), &big[5..10]);
    assert!(source.reads.load(Ordering::SeqCst) >= 4);
}

#[test]
fn inconsistent_or_panicking_sources_are_eio() {
    let mut source = MemSource::default();
    source.files.insert(1, Ok(vec![1u8; 100]));
    source.files.insert(2, Ok(vec![2u8; 100]));
    source.files.insert(3, Ok(vec![3u8; 50]));
    source.short.push(1);
    source.panics.push(2);
    let (core, _) = core_with(
        vec![
            file(b"short", 1, 100, 1),
            file(b"panics", 2, 100, 1),
            // Declared bigger than the content: the source hits EOF early.
            file(b"truncated", 3, 100, 1),
        ],
        source,
    );
    for name in [&b"short"[..], b"panics", b"truncated"] {
        let ino = core.lookup_path(name).unwrap().ino;
        let err = core.read_ino(ino, 0, 100).unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "{name:?}: {err}");
    }
    let truncated = core.lookup_path(b"truncated").unwrap().ino;
    assert_eq!(core.read_ino(truncated, 0, 50).unwrap(), vec![3u8; 50]);
}

#[test]
fn listing_never_reads_content() {
    let (core, source, _) = sample();
    for path in [&b""[..], b"a", b"a/b"] {
        let dir = core.lookup_path(path).unwrap();
        for e in core.readdir(dir.ino, 0).unwrap() {
            let attr = core.lookup(dir.ino, e.name).unwrap();
            core.getattr(attr.ino).unwrap();
        }
    }
    core.statfs();
    assert_eq!(source.reads.load(Ordering::SeqCst), 0);
}

fn build_err(specs: Vec<NodeSpec>) -> FsError {
    FsCore::new(specs, Arc::new(MemSource::default()), OPTS).unwrap_err()
}

#[test]
fn invalid_trees_are_rejected() {
    let dup = build_err(vec![file(b"a/x", 1, 1, 1), file(b"a/x", 2, 1, 1)]);
    assert!(
        matches!(dup, FsError::DuplicatePath(ref p) if p == "a/x"),
        "{dup}"
    );
    assert!(matches!(
        build_err(vec![dir(b"d", 1), dir(b"d", 2)]),
        FsError::DuplicatePath(_)
    ));
    for bad in [
        &b"../etc/passwd"[..],
        b"a/../b",
        b"a/./b",
        b".",
        b"a//b",
        b"a/",
        b"/abs",
        b"nul\0byte",
    ] {
        let err = build_err(vec![file(bad, 1, 1, 1)]);
        assert!(matches!(err, FsError::InvalidPath { .. }), "{bad:?}: {err}");
        assert_eq!(err.errno(), libc::EINVAL);
    }
    let long = vec![b'n'; 256];
    assert!(matches!(
        build_err(vec![file(&long, 1, 1, 1)]),
        FsError::InvalidPath { .. }
    ));
    assert!(FsCore::new(
        vec![file(&[b'n'; 255], 1, 1, 1)],
        Arc::new(MemSource::default()),
        OPTS
    )
    .is_ok());
    let err = build_err(vec![file(b"f", 1, 1, 1), file(b"f/child", 2, 1, 1)]);
    assert!(matches!(err, FsError::ParentNotDir { .. }), "{err}");
    // Order must not matter.
    let err = build_err(vec![file(b"f/child/x", 2, 1, 1), file(b"f", 1, 1, 1)]);
    assert!(matches!(err, FsError::ParentNotDir { .. }), "{err}");
    let err = build_err(vec![symlink(b"l", b"t", 1), file(b"l/x", 1, 1, 1)]);
    assert!(matches!(err, FsError::ParentNotDir { .. }), "{err}");
    assert!(matches!(
        build_err(vec![file(b"", 1, 1, 1)]),
        FsError::InvalidPath { .. }
    ));
    assert!(matches!(
        build_err(vec![symlink(b"l", b"", 1)]),
        FsError::InvalidPath { .. }
    ));
    assert!(matches!(
        build_err(vec![dir(b"", 1), dir(b"", 1)]),
        FsError::DuplicatePath(_)
    ));
}

#[test]
fn statfs_values() {
    let (core, _, big) = sample();
    let st = core.statfs();
    let total = big.len() as u64 + 6 + 3000 + 6 + 10_000;
    assert_eq!(core.total_bytes(), total);
    assert_eq!(st.blocks, total.div_ceil(4096));
    assert_eq!((st.bfree, st.bavail, st.ffree), (0, 0, 0));
    assert_eq!(st.files, 9);
    assert_eq!((st.bsize, st.frsize, st.namelen), (4096, 4096, 255));
}

#[test]
fn xattrs_and_access() {
    let (core, _, _) = sample();
    let f = core.lookup_path(b"big.bin").unwrap().ino;
    assert_eq!(errno(core.getxattr(f, OsStr::new("user.x"))), libc::ENODATA);
    assert_eq!(
        errno(core.getxattr(ROOT_INO, OsStr::new("security.selinux"))),
        libc::ENODATA
    );
    assert!(core.listxattr(f).unwrap().is_empty());
    assert_eq!(errno(core.listxattr(999)), libc::ENOENT);
    core.access(f, libc::R_OK).unwrap();
    core.access(f, libc::F_OK).unwrap();
    core.access(ROOT_INO, libc::R_OK | libc::X_OK).unwrap();
    assert_eq!(errno(core.access(f, libc::W_OK)), libc::EROFS);
    assert_eq!(errno(core.access(ROOT_INO, libc::W_OK)), libc::EROFS);
    assert_eq!(errno(core.access(f, libc::X_OK)), libc::EACCES);
}

#[test]
fn concurrent_reads_are_consistent() {
    let (core, _, big) = sample();
    let core = Arc::new(core);
    let ino = core.lookup_path(b"big.bin").unwrap().ino;
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let core = core.clone();
            std::thread::spawn(move || {
                let fh = core.open(ino, libc::O_RDONLY).unwrap();
                let mut out = Vec::new();
                let mut off = 0;
                loop {
                    let chunk = core.read(fh, off, 4096 * (i as u32 + 1)).unwrap();
                    if chunk.is_empty() {
                        break;
                    }
                    off += chunk.len() as u64;
                    out.extend(chunk);
                }
                core.release(fh).unwrap();
                out
            })
        })
        .collect();
    for th in threads {
        assert_eq!(th.join().unwrap(), big);
    }
    assert_eq!(core.open_handles().unwrap(), 0);
}

#[test]
fn errno_mapping() {
    let cases = [
        (FsError::NotFound, libc::ENOENT),
        (FsError::BadInode(9), libc::ENOENT),
        (FsError::NotDir, libc::ENOTDIR),
        (FsError::IsDir, libc::EISDIR),
        (FsError::ReadOnly, libc::EROFS),
        (FsError::BadHandle(1), libc::EBADF),
        (FsError::NoXattr, libc::ENODATA),
        (FsError::Internal("x".into()), libc::EIO),
        (
            FsError::Content {
                path: "p".into(),
                reason: "r".into(),
            },
            libc::EIO,
        ),
    ];
    for (err, code) in cases {
        assert_eq!(err.errno(), code, "{err}");
    }
    assert_eq!(display_path(b""), "/");
    assert_eq!(display_path(b"a\nb"), "a\\nb");
    assert_eq!(display_path(b"ok name"), "ok name");
}

/// Files of one content id are one file under several names (hard links): every name shows
/// the first name's inode (in lookup, getattr and readdir alike) with a link count of the
/// names, reads the same bytes, and the bytes count once; a name of another size is refused.
#[test]
fn names_of_one_file_share_its_inode_and_count_as_links() {
    let mut source = MemSource::default();
    source.files.insert(1, Ok(b"one file".to_vec()));
    source.files.insert(2, Ok(b"same bytes".to_vec()));
    source.files.insert(3, Ok(b"same bytes".to_vec()));
    let specs = vec![
        file(b"a/photo.jpg", 1, 8, 100),
        file(b"b/photo (link).jpg", 1, 8, 100),
        file(b"z.jpg", 1, 8, 100),
        file(b"copy 1.txt", 2, 10, 5),
        file(b"copy 2.txt", 3, 10, 5),
    ];
    let (core, _) = core_with(specs, source);
    let names = [&b"a/photo.jpg"[..], b"b/photo (link).jpg", b"z.jpg"];
    let attrs: Vec<Attr> = names.iter().map(|p| core.lookup_path(p).unwrap()).collect();
    for a in &attrs {
        assert_eq!(a.ino, attrs[0].ino);
        assert_eq!(a.nlink, 3);
        assert_eq!(a.size, 8);
        assert_eq!(a.mtime, t(100));
        assert_eq!(core.getattr(a.ino).unwrap().nlink, 3);
    }
    // Readdir gives the same inode number as lookup.
    let listed = |dir: u64| -> Vec<(u64, Vec<u8>)> {
        core.readdir(dir, 0)
            .unwrap()
            .map(|e| (e.ino, e.name.as_bytes().to_vec()))
            .collect()
    };
    let b = core.lookup_path(b"b").unwrap().ino;
    assert!(listed(b).contains(&(attrs[0].ino, b"photo (link).jpg".to_vec())));
    assert!(listed(ROOT_INO).contains(&(attrs[0].ino, b"z.jpg".to_vec())));
    // Each name reads the file.
    for p in names {
        let ino = core.lookup_path(p).unwrap().ino;
        let fh = core.open(ino, libc::O_RDONLY).unwrap();
        assert_eq!(core.read(fh, 0, 100).unwrap(), b"one file");
        core.release(fh).unwrap();
    }
    // Copies (other ids, the same bytes) stay files of their own.
    let (c1, c2) = (
        core.lookup_path(b"copy 1.txt").unwrap(),
        core.lookup_path(b"copy 2.txt").unwrap(),
    );
    assert_ne!(c1.ino, c2.ino);
    assert_eq!((c1.nlink, c2.nlink), (1, 1));
    assert_eq!(core.total_bytes(), 8 + 10 + 10);

    let err = build_err(vec![file(b"a", 1, 8, 1), file(b"b", 1, 9, 1)]);
    assert!(
        matches!(&err, FsError::InvalidPath { reason, .. } if reason.contains("another size")),
        "{err}"
    );
}
