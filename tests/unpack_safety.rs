//! What unpack leaves behind when it cannot finish a file or is interrupted, what it does with
//! symlinks it finds in the output folder, and the names `--format png` gives images whose
//! converted names would clash: through the real binary.

mod common;

use av1pack::archive::{Archive, EntryKind};
use common::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `av1pack unpack ARGS...` (flags first, then archive and folder).
fn unpack_args(args: &[&std::ffi::OsStr]) -> Output {
    bin()
        .arg("unpack")
        .args(args)
        .output()
        .expect("run av1pack")
}

/// The same, in a child whose files cannot grow past 100 blocks of 512 bytes (dash's unit;
/// 1024 in bash: 51,200 or 102,400 bytes), with SIGXFSZ ignored, so that a write past the
/// limit fails with EFBIG as a full disk fails with ENOSPC.
fn unpack_with_file_size_limit(args: &[&std::ffi::OsStr]) -> Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 100 || exit 99; exec \"$0\" unpack \"$@\"")
        .arg(env!("CARGO_BIN_EXE_av1pack"))
        .args(args)
        .env_remove("AV1PACK_LOG")
        .output()
        .expect("run sh")
}

fn kind_of(a: &Archive, path: &str) -> &'static str {
    match &entry(a, path).kind {
        EntryKind::Image(_) => "image",
        EntryKind::Verbatim { .. } => "kept",
        EntryKind::Dir => "dir",
        EntryKind::Symlink { .. } => "symlink",
        EntryKind::Copy { .. } => "copy",
        EntryKind::Link { .. } => "link",
    }
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .modified()
        .unwrap()
}

fn set_mtime(path: &Path, when: SystemTime) {
    std::fs::File::open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

fn names(paths: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    v.sort();
    v
}

/// A write that fails half way (a full disk; here the file size limit) leaves no file under
/// its real name, and no partial file under any other; with --force, the file that was there
/// stays as it was.
#[test]
fn a_file_that_cannot_be_written_whole_is_not_left_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // Three kept PNG pages (41,853, 218,908 and 302,824 bytes), a note, two coded images.
    let album = sample_scans(t, "album");
    std::fs::write(album.join("notes.txt"), b"small enough\n").unwrap();
    pattern(24, 16, 1).save(album.join("small.png")).unwrap();
    pattern(640, 480, 2).save(album.join("large.png")).unwrap();
    let archive = t.join("a.mkv");
    pack_fixed_rate(&album, &archive);
    let a = Archive::open(&archive).unwrap();
    assert_eq!(kind_of(&a, "large.png"), "image");
    assert_eq!(kind_of(&a, "gnucash-guide-p21.png"), "kept");
    let too_large = [
        "gnucash-guide-p21.png",
        "gnucash-guide-p22.png",
        "large.png",
    ];
    let fit = ["gnucash-guide-p23.png", "notes.txt", "small.png"];
    let full = t.join("full");
    std::fs::create_dir(&full).unwrap();
    let o = unpack_args(&[archive.as_os_str(), full.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for name in too_large {
        assert!(
            std::fs::metadata(full.join(name)).unwrap().len() > 102_400,
            "{name} is not larger than the limit: the test proves nothing"
        );
    }

    let out = t.join("out");
    let o = unpack_with_file_size_limit(&[archive.as_os_str(), out.as_os_str()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    for name in too_large {
        let line = err.lines().find(|l| l.contains(name));
        assert!(
            line.is_some_and(|l| l.contains("File too large")),
            "{name} not named with its reason: {err}"
        );
    }
    // Only the files written whole are there, with their bytes and times.
    assert_eq!(files(&out), names(&fit), "{err}");
    for name in ["gnucash-guide-p23.png", "notes.txt"] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(album.join(name)).unwrap(),
            "{name}"
        );
    }
    for name in fit {
        assert_eq!(mtime(&out.join(name)), mtime(&album.join(name)), "{name}");
    }

    // With --force, files already there that could not be replaced are left as they were.
    let old = UNIX_EPOCH + Duration::from_secs(1_321_009_871); // 2011-11-11
    let kept = t.join("kept");
    std::fs::create_dir(&kept).unwrap();
    for name in too_large {
        std::fs::write(kept.join(name), b"the previous version").unwrap();
        set_mtime(&kept.join(name), old);
    }
    let o = unpack_with_file_size_limit(&[
        std::ffi::OsStr::new("--force"),
        archive.as_os_str(),
        kept.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let mut expected = fit.to_vec();
    expected.extend(too_large);
    assert_eq!(files(&kept), names(&expected), "{}", stderr(&o));
    for name in too_large {
        assert_eq!(
            std::fs::read(kept.join(name)).unwrap(),
            b"the previous version",
            "{name}"
        );
        assert_eq!(mtime(&kept.join(name)), old, "{name}");
    }
    // Without the limit, --force replaces them whole.
    let o = unpack_args(&[
        std::ffi::OsStr::new("--force"),
        archive.as_os_str(),
        kept.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(files(&kept), names(&expected));
    for name in too_large {
        assert_eq!(
            std::fs::read(kept.join(name)).unwrap(),
            std::fs::read(full.join(name)).unwrap(),
            "{name}"
        );
        assert_eq!(mtime(&kept.join(name)), mtime(&album.join(name)), "{name}");
    }
}

/// With --force, symlinks already in the output folder are never followed: a symlink at a
/// folder's name is refused (and what it points to keeps its contents, mode and time), a
/// symlink at a file's name is replaced by the file.
#[test]
fn force_changes_nothing_through_a_symlink_in_the_output_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let album = t.join("album");
    std::fs::create_dir_all(album.join("burst/sub")).unwrap();
    std::fs::write(album.join("burst/b.txt"), b"in burst").unwrap();
    std::fs::write(album.join("burst/sub/deep.txt"), b"in burst/sub").unwrap();
    std::fs::write(album.join("notes.txt"), b"the album's notes").unwrap();
    pattern(64, 48, 3).save(album.join("pic.png")).unwrap();
    std::os::unix::fs::symlink("notes.txt", album.join("link")).unwrap();
    let album_time = UNIX_EPOCH + Duration::from_secs(1_577_836_800); // 2020-01-01
    for d in ["burst/sub", "burst"] {
        set_mtime(&album.join(d), album_time);
    }
    let archive = t.join("a.mkv");
    pack_fixed_rate(&album, &archive);
    assert_eq!(
        kind_of(&Archive::open(&archive).unwrap(), "pic.png"),
        "image"
    );

    // Outside the output folder: a folder with a sub-folder and a file.
    let outside = t.join("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("secret.txt"), b"outside").unwrap();
    let old = UNIX_EPOCH + Duration::from_secs(1_321_009_871); // 2011-11-11
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
    for d in [outside.join("sub"), outside.clone()] {
        set_mtime(&d, old);
    }
    let out = t.join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink("../outside", out.join("burst")).unwrap();
    std::os::unix::fs::symlink("../outside/secret.txt", out.join("notes.txt")).unwrap();
    std::os::unix::fs::symlink("../outside/pic.png", out.join("pic.png")).unwrap();
    std::fs::write(out.join("link"), b"a file where the album has a symlink").unwrap();

    let o = unpack_args(&[
        std::ffi::OsStr::new("--force"),
        archive.as_os_str(),
        out.as_os_str(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("burst: could not create the folder: exists and is a symbolic link"),
        "{err}"
    );
    for name in ["burst/b.txt", "burst/sub/deep.txt"] {
        let line = err.lines().find(|l| l.contains(name));
        assert!(
            line.is_some_and(|l| l.contains("burst exists and is a symbolic link")),
            "{name} not named with its reason: {err}"
        );
    }
    assert!(!err.contains("notes.txt"), "{err}");
    assert!(!err.contains("pic.png"), "{err}");
    // Nothing outside changed: contents, mode, times.
    assert_eq!(
        files(&outside),
        names(&["secret.txt", "sub"]),
        "written through the link"
    );
    assert_eq!(
        std::fs::read(outside.join("secret.txt")).unwrap(),
        b"outside"
    );
    assert_eq!(mtime(&outside), old, "time of the folder behind the link");
    assert_eq!(mtime(&outside.join("sub")), old);
    let mode = std::fs::metadata(&outside).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "mode of the folder behind the link");
    // The symlink at the folder's name stays; those at files' names are replaced by the files.
    assert_eq!(
        std::fs::read_link(out.join("burst")).unwrap(),
        Path::new("../outside")
    );
    for name in ["notes.txt", "pic.png"] {
        let m = std::fs::symlink_metadata(out.join(name)).unwrap();
        assert!(m.file_type().is_file(), "{name} is still a symlink");
        assert_eq!(mtime(&out.join(name)), mtime(&album.join(name)), "{name}");
    }
    assert_eq!(
        std::fs::read(out.join("notes.txt")).unwrap(),
        b"the album's notes"
    );
    assert_eq!(rgb_of(&out.join("pic.png")).dimensions(), (64, 48));
    // A file at a symlink's name is replaced by the symlink.
    assert_eq!(
        std::fs::read_link(out.join("link")).unwrap(),
        Path::new("notes.txt")
    );
}

/// `--format png` never loses an image to a name clash: an image that is a PNG already keeps
/// its name exactly, a converted name that another entry has (ASCII case ignored) or that two
/// images would share becomes the whole name plus `.png`, and a name too long to take `.png`
/// stays as it is.
#[test]
fn format_png_gives_every_image_its_own_name() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let album = t.join("album");
    std::fs::create_dir_all(album.join("sub")).unwrap();
    let long = "n".repeat(253);
    // Each image its own size, so that each restored file shows which image it is.
    let images: [(&str, u32, image::ImageFormat); 8] = [
        ("IMG_0001.jpg", 200, image::ImageFormat::Jpeg),
        ("IMG_0001.png", 202, image::ImageFormat::Png),
        ("IMG_0001.bmp", 204, image::ImageFormat::Bmp),
        ("IMG_0001.tif", 206, image::ImageFormat::Tiff),
        ("sub/IMG_0002.PNG", 208, image::ImageFormat::Png),
        ("sub/IMG_0002.webp", 210, image::ImageFormat::WebP),
        ("photo.jpeg", 212, image::ImageFormat::Jpeg),
        (&long, 214, image::ImageFormat::Bmp),
    ];
    for (i, (name, w, format)) in images.iter().enumerate() {
        pattern(*w, 150, i as u32 * 7)
            .save_with_format(album.join(name), *format)
            .unwrap();
    }
    pattern(216, 150, 99).save(album.join("UPPER.PNG")).unwrap();
    let archive = t.join("a.mkv");
    pack_fixed_rate(&album, &archive);
    let a = Archive::open(&archive).unwrap();
    for (name, ..) in &images {
        assert_eq!(kind_of(&a, name), "image", "{name}");
    }

    let out = t.join("out");
    let o = unpack_args(&[
        std::ffi::OsStr::new("--format"),
        std::ffi::OsStr::new("png"),
        archive.as_os_str(),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = [
        ("IMG_0001.jpg.png", 200),
        ("IMG_0001.png", 202),
        ("IMG_0001.bmp.png", 204),
        ("IMG_0001.tif.png", 206),
        ("sub/IMG_0002.PNG", 208),
        ("sub/IMG_0002.webp.png", 210),
        ("photo.png", 212),
        (long.as_str(), 214),
        ("UPPER.PNG", 216),
    ];
    let mut all: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    all.push("sub");
    assert_eq!(files(&out), names(&all));
    for (name, w) in expected {
        let bytes = std::fs::read(out.join(name)).unwrap();
        assert_eq!(
            image::guess_format(&bytes).unwrap(),
            image::ImageFormat::Png,
            "{name}"
        );
        assert_eq!(rgb_of(&out.join(name)).dimensions(), (w, 150), "{name}");
    }
    assert!(out.join(&long).as_os_str().as_bytes().ends_with(b"nnn"));
    // Without --format, every image keeps its name and format.
    let orig = t.join("orig");
    let o = unpack_args(&[archive.as_os_str(), orig.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(files(&orig), files(&album));
}

/// SIGINT, SIGTERM or SIGHUP during unpack: the process ends with 128 + the signal, the file
/// being written is removed (no partial file under any name), the files in place are whole.
#[test]
fn interrupted_unpack_leaves_only_whole_files() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let album = t.join("album");
    std::fs::create_dir(&album).unwrap();
    // Random bytes do not compress: stored as they are, written in 1 MiB pieces (3 x 64 MiB:
    // a whole unpack takes about 0.2 s, most of it writing them).
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for name in ["a.bin", "b.bin", "c.bin"] {
        let bytes: Vec<u8> = (0..64 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(album.join(name), bytes).unwrap();
    }
    pattern(320, 240, 5).save(album.join("pic.png")).unwrap();
    let archive = t.join("a.mkv");
    pack_fixed_rate(&album, &archive);
    let whole = t.join("whole");
    let started = std::time::Instant::now();
    let o = unpack_args(&[archive.as_os_str(), whole.as_os_str()]);
    let full = started.elapsed();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut interrupted = 0;
    for (i, (sig, frac)) in [
        (libc::SIGINT, 0.3),
        (libc::SIGTERM, 0.5),
        (libc::SIGHUP, 0.7),
        (libc::SIGINT, 0.9),
    ]
    .into_iter()
    .enumerate()
    {
        let out = t.join(format!("out{i}"));
        let o = run_interrupted(
            &[os("unpack"), archive.as_os_str(), out.as_os_str()],
            full.mul_f64(frac),
            sig,
        );
        let err = stderr(&o);
        use std::os::unix::process::ExitStatusExt;
        if o.status.signal() == Some(sig) {
            // Before main installed its handler: nothing written yet, checked below.
        } else if !o.status.success() {
            assert_eq!(o.status.code(), Some(128 + sig), "signal {sig}: {err}");
            assert!(err.contains("interrupted"), "{err}");
            interrupted += 1;
        }
        if !out.exists() {
            continue;
        }
        for rel in files(&out) {
            let (got, want) = (out.join(&rel), whole.join(&rel));
            assert!(want.exists(), "signal {sig}: {} left behind", rel.display());
            if want.is_file() {
                assert!(
                    std::fs::read(&got).unwrap() == std::fs::read(&want).unwrap(),
                    "signal {sig}: {} is not whole",
                    rel.display()
                );
            }
        }
    }
    assert!(interrupted >= 1, "no signal came before the end");

    // SIGKILL: no handler runs, so the file being written stays under its temporary name;
    // the next unpack into that folder removes it. Kills at several moments, until one has
    // caught a file being written.
    let partials = |dir: &Path| {
        files(dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".av1pack-partial"))
            .count()
    };
    let mut caught = 0;
    for (k, frac) in [0.5, 0.3, 0.7, 0.4, 0.6, 0.2, 0.8].into_iter().enumerate() {
        let out = t.join(format!("killed{k}"));
        run_interrupted(
            &[os("unpack"), archive.as_os_str(), out.as_os_str()],
            full.mul_f64(frac),
            libc::SIGKILL,
        );
        let left = if out.exists() { partials(&out) } else { 0 };
        let o = unpack_args(&[
            os("-v"),
            os("--force"),
            archive.as_os_str(),
            out.as_os_str(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            stderr(&o).matches("left by an interrupted unpack").count(),
            left,
            "{}",
            stderr(&o)
        );
        assert_eq!(partials(&out), 0);
        assert_eq!(files(&out), files(&whole));
        caught += usize::from(left > 0);
        if caught > 0 {
            break;
        }
    }
    assert!(caught > 0, "no kill caught a file being written");
}

/// What an unpack killed outright left (temporary names of a process that is gone) is removed
/// by the next unpack into that folder; temporary files of a running unpack are not touched.
#[test]
fn what_a_killed_unpack_left_is_removed_by_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let archive = t.join("a.mkv");
    pack_fixed_rate(&sample_album(), &archive);
    // A process that has ended: its id names the leftovers.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let dead = child.id();
    let out = t.join("out");
    std::fs::create_dir_all(out.join("2006")).unwrap();
    let stale = [
        out.join(format!(".{dead}-0.av1pack-partial")),
        out.join(format!("2006/.{dead}-4.av1pack-partial")),
    ];
    for p in &stale {
        std::fs::write(p, b"half a photo").unwrap();
    }
    let stale_link = out.join(format!("2006/.{dead}-9.av1pack-partial"));
    std::os::unix::fs::symlink("bar55.jpg", &stale_link).unwrap();
    // Still being written: by a running process (this one), or locked by one whose id this
    // machine does not know (another PID namespace).
    let running = out.join(format!("2006/.{}-0.av1pack-partial", std::process::id()));
    std::fs::write(&running, b"x").unwrap();
    let locked = out.join(format!(".{dead}-1.av1pack-partial"));
    let held = std::fs::File::create(&locked).unwrap();
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor `held` owns.
        assert_eq!(
            unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
    }
    let o = unpack_args(&[
        os("-v"),
        os("--force"),
        archive.as_os_str(),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(
        err.matches("left by an interrupted unpack").count(),
        3,
        "{err}"
    );
    for p in stale.iter().chain([&stale_link]) {
        assert!(p.symlink_metadata().is_err(), "{} stays", p.display());
    }
    assert!(running.exists() && locked.exists());
    assert_eq!(
        std::fs::read(out.join("2006/bar55.jpg")).unwrap(),
        std::fs::read(sample_album().join("2006/bar55.jpg")).unwrap()
    );
    drop(held);

    // Leftovers alone do not make a folder "not empty" for an unpack without --force.
    let fresh = t.join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::write(fresh.join(format!(".{dead}-2.av1pack-partial")), b"x").unwrap();
    let o = unpack_args(&[archive.as_os_str(), fresh.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!fresh.join(format!(".{dead}-2.av1pack-partial")).exists());
}
