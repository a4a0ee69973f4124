//! The real binary, mounted with FUSE: what a file manager, a viewer, cp and sha256sum see.

mod common;

use av1pack::archive::{Archive, ColorModel, EntryKind};
use common::*;
use std::ffi::OsStr;
use std::ops::Range;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// FUSE must be there in CI (root, /dev/fuse); elsewhere a missing FUSE skips with a reason.
fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have /dev/fuse for the mount tests"
    );
    eprintln!("SKIPPED: /dev/fuse is absent on this machine, so no real mount can be tested");
    false
}

fn is_mounted(p: &Path) -> bool {
    let want = p.canonicalize().unwrap_or_else(|_| p.to_owned());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap()))
}

/// A mounted archive, unmounted on drop.
struct Mounted {
    dir: PathBuf,
    pid: i32,
    /// What `av1pack mount` printed.
    stderr: String,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = bin().arg("umount").arg(&self.dir).output();
        }
    }
}

fn mount(archive: &Path, dir: &Path, extra: &[&str]) -> Mounted {
    std::fs::create_dir_all(dir).unwrap();
    let log = dir.with_extension("log");
    let o = bin()
        .arg("mount")
        .args(extra)
        .arg("--log-file")
        .arg(&log)
        .arg(archive)
        .arg(dir)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "mount failed: {err}");
    // Usable as soon as the command returns.
    assert!(is_mounted(dir), "not mounted when mount returned");
    let pid = daemon_pid(&err);
    Mounted {
        dir: dir.to_owned(),
        pid,
        stderr: err,
    }
}

/// The daemon's pid, from what `av1pack mount` printed ("… (daemon PID, log …)").
fn daemon_pid(err: &str) -> i32 {
    err.split("daemon ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid in {err:?}"))
}

/// Without --log-file, the background daemon logs under $XDG_CACHE_HOME/av1pack.
#[test]
fn background_logs_go_under_the_cache_home() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = packed_sample(tmp.path());
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let cache = tmp.path().join("cache");
    let o = bin()
        .env("XDG_CACHE_HOME", &cache)
        .arg("mount")
        .arg(&archive)
        .arg(&dir)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let m = Mounted {
        dir: dir.clone(),
        pid: daemon_pid(&err),
        stderr: err.clone(),
    };
    let log = cache.join("av1pack/mount-a.log");
    assert!(m.stderr.contains(&log.display().to_string()), "{err}");
    assert!(log.is_file(), "{}", log.display());
}

/// Packs a burst of similar PNGs (coded as video) plus the sample album, and unpacks it.
fn fixture(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let album = root.join("album");
    std::fs::create_dir_all(album.join("burst")).unwrap();
    for i in 0..12u32 {
        let mut img = pattern(400, 260, 1);
        for y in 60..120 {
            for x in (10 + i * 20)..(70 + i * 20) {
                img.put_pixel(x, y, image::Rgb([240, 40, (i * 20) as u8]));
            }
        }
        img.save(album.join(format!("burst/shot {i:02}.png")))
            .unwrap();
    }
    let name = OsStr::new(std::str::from_utf8(b"odd").unwrap());
    std::fs::create_dir_all(album.join(name)).unwrap();
    pattern(33, 17, 9).save(album.join("odd/tiny.png")).unwrap();
    // Wider than a tile: coded as three tiles that the mount puts back together.
    pattern(9000, 120, 4)
        .save(album.join("odd/wide strip.png"))
        .unwrap();
    let o = Command::new("cp")
        .arg("-a")
        .arg(sample_album())
        .arg(album.join("sample"))
        .output()
        .unwrap();
    assert!(o.status.success());
    // A 16-bit PNG export, served as a 16-bit PNG.
    let photo = image::open(sample_album().join("2006/bar55.jpg")).unwrap();
    let crop = image::imageops::crop_imm(&photo.to_rgb8(), 100, 100, 400, 300).to_image();
    write_16_bit_png(&album.join("odd/export.png"), &crop, true);
    let archive = root.join("album.mkv");
    let o = bin()
        .arg("pack")
        .arg(&album)
        .arg(&archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let restored = root.join("restored");
    unpack_to(&archive, &restored);
    (album, archive, restored)
}

#[test]
fn mounted_files_are_exact_and_match_unpack() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (album, archive, restored) = fixture(tmp.path());
    let a = Archive::open(&archive).unwrap();
    let coded = a
        .index
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Image(_)))
        .count();
    assert!(coded >= 12, "the burst is coded as video ({coded} images)");
    // The sample's icon is coded with its alpha plane: the mount puts the two back together.
    let icon = entry(&a, "sample/icons/digikam.png");
    assert!(
        matches!(&icon.kind, EntryKind::Image(img) if !img.alpha.is_empty()),
        "the icon is coded with an alpha plane"
    );
    let strip = entry(&a, "odd/wide strip.png");
    assert!(
        matches!(&strip.kind, EntryKind::Image(img) if img.tiles.len() == 3),
        "the strip is coded in three tiles"
    );
    let export = entry(&a, "odd/export.png");
    assert!(
        matches!(&export.kind, EntryKind::Image(img) if img.color == ColorModel::Rgb16),
        "the 16-bit PNG is coded"
    );
    let m = mount(&archive, &tmp.path().join("mnt"), &[]);
    let served = image::open(m.dir.join("odd/export.png")).unwrap();
    assert_eq!(served.color(), image::ColorType::Rgba16);

    // The same names as the album, read-only modes, original mtimes.
    assert_eq!(files(&m.dir), files(&album));
    for rel in files(&album) {
        let (orig, mounted) = (album.join(&rel), m.dir.join(&rel));
        let mo = orig.symlink_metadata().unwrap();
        let mm = mounted.symlink_metadata().unwrap();
        assert_eq!(mo.mtime(), mm.mtime(), "{}", rel.display());
        if mo.is_dir() {
            assert_eq!(mm.permissions().mode() & 0o777, 0o555);
            continue;
        }
        assert_eq!(mm.permissions().mode() & 0o777, 0o444, "{}", rel.display());
        // stat's size is exactly what reading gives, and the bytes are unpack's.
        let bytes = std::fs::read(&mounted).unwrap();
        assert_eq!(mm.len(), bytes.len() as u64, "{}", rel.display());
        let unpacked = std::fs::read(restored.join(&rel)).unwrap();
        assert!(
            bytes == unpacked,
            "{}: mount and unpack differ",
            rel.display()
        );
        // Images decode at their original size and meet the target against the original.
        let original = std::fs::read(&orig).unwrap();
        if bytes != original {
            assert_looks_the_same(&orig, &mounted, 90.0);
        }
    }
}

#[test]
fn reads_at_any_offset_and_from_many_threads_agree() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (album, archive, restored) = fixture(tmp.path());
    // A small cache: readers compete for it and for the decoders.
    let m = mount(&archive, &tmp.path().join("mnt"), &["--cache-size", "2M"]);
    let all: Vec<PathBuf> = files(&album)
        .into_iter()
        .filter(|r| album.join(r).is_file())
        .collect();
    std::thread::scope(|s| {
        for t in 0..8usize {
            let (all, m, restored) = (&all, &m, &restored);
            s.spawn(move || {
                for k in 0..all.len() {
                    let rel = &all[(k * (2 * t + 5) + t) % all.len()];
                    let expected = std::fs::read(restored.join(rel)).unwrap();
                    let f = std::fs::File::open(m.dir.join(rel)).unwrap();
                    let off = ((t * 7919 + k * 104_729) % expected.len().max(1)) as u64;
                    let mut buf = vec![0u8; 70_000];
                    let n = f.read_at(&mut buf, off).unwrap();
                    let end = (off as usize + 70_000).min(expected.len());
                    assert_eq!(
                        &buf[..n],
                        &expected[off as usize..end],
                        "{} at {off}",
                        rel.display()
                    );
                }
            });
        }
    });
    // cp -r out of the mount gives the same bytes as unpack.
    let copy = tmp.path().join("copy");
    let o = Command::new("cp")
        .arg("-r")
        .arg(&m.dir)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for rel in &all {
        assert!(
            std::fs::read(copy.join(rel)).unwrap() == std::fs::read(restored.join(rel)).unwrap()
        );
    }
}

/// The sample album, packed at the default settings.
fn packed_sample(root: &Path) -> PathBuf {
    let archive = root.join("a.mkv");
    let o = bin()
        .arg("pack")
        .arg(sample_album())
        .arg(&archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    archive
}

/// Mounting on a folder that holds something works, as mount(8) does, with a warning: its
/// files are out of sight until the unmount, and there again after it.
#[test]
fn mounting_on_a_non_empty_folder_warns_and_hides_it() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = packed_sample(tmp.path());
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("mine.txt"), b"mine").unwrap();
    let m = mount(&archive, &dir, &[]);
    assert!(
        m.stderr.contains(
            "the folder is not empty: what it holds is hidden while the archive is mounted on it"
        ),
        "{}",
        m.stderr
    );
    assert!(!dir.join("mine.txt").exists());
    assert!(dir.join("notes/README.md").exists());
    let o = bin().arg("umount").arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(dir.join("mine.txt")).unwrap(), b"mine");
}

/// Sends `signal` to the daemon; true once the mount is gone (within 10 s).
fn kill_and_wait(m: &Mounted, signal: i32) -> bool {
    unsafe { libc::kill(m.pid, signal) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while is_mounted(&m.dir) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    !is_mounted(&m.dir)
}

#[test]
fn writes_are_refused_and_sigterm_unmounts() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = packed_sample(tmp.path());
    let m = mount(&archive, &tmp.path().join("mnt"), &[]);
    let err = std::fs::write(m.dir.join("new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(m.dir.join("notes/README.md"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    // Mounting again on a mounted folder is refused with a clear message.
    let o = bin()
        .arg("mount")
        .arg(&archive)
        .arg(&m.dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already"), "{}", stderr(&o));
    // SIGTERM: the daemon unmounts and leaves no dead mount.
    assert!(
        kill_and_wait(&m, libc::SIGTERM),
        "still mounted after SIGTERM"
    );
    assert!(
        std::fs::read_dir(&m.dir).is_ok(),
        "the folder is usable again"
    );
}

#[test]
fn sigkill_leaves_no_dead_mount() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = packed_sample(tmp.path());
    let m = mount(&archive, &tmp.path().join("mnt"), &[]);
    assert!(
        kill_and_wait(&m, libc::SIGKILL),
        "a dead mount was left after SIGKILL"
    );
    let err = std::fs::metadata(m.dir.join("notes")).unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::NotFound,
        "no 'Transport endpoint is not connected'"
    );
}

#[test]
fn a_damaged_frame_gives_eio_for_that_file_only() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_album, archive, restored) = fixture(tmp.path());
    let a = Archive::open(&archive).unwrap();
    // Damage the last frame of the burst's track: only its image depends on it.
    let (victim, tile) = a
        .index
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Image(img) if e.path.starts_with(b"burst/") => {
                Some((e.path_lossy(), img.tiles[0]))
            }
            _ => None,
        })
        .max_by_key(|(_, t)| t.frame)
        .unwrap();
    let track = &a.index.tracks[tile.track as usize];
    let packet = track.packets.iter().find(|p| p.pts == tile.frame).unwrap();
    let mut bytes = std::fs::read(&archive).unwrap();
    for b in
        &mut bytes[packet.offset as usize + 8..(packet.offset + u64::from(packet.size)) as usize]
    {
        *b ^= 0xA5;
    }
    let damaged = tmp.path().join("damaged.mkv");
    std::fs::write(&damaged, &bytes).unwrap();
    let m = mount(&damaged, &tmp.path().join("mnt"), &[]);
    let err = std::fs::read(m.dir.join(&victim)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{victim}");
    // The others still read, byte for byte.
    let other = "burst/shot 00.png";
    assert!(
        std::fs::read(m.dir.join(other)).unwrap() == std::fs::read(restored.join(other)).unwrap()
    );
    assert!(std::fs::read(m.dir.join("sample/notes/README.md")).is_ok());
}

#[test]
fn a_damaged_stored_file_gives_eio_for_that_file_only() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = packed_sample(tmp.path());
    let a = Archive::open(&archive).unwrap();
    let (victim, range) = a
        .index
        .entries
        .iter()
        .find_map(|e| match &e.kind {
            EntryKind::Verbatim { blob, .. } if blob.len > 10_000 => {
                Some((e.path_lossy(), a.blob_range(blob)))
            }
            _ => None,
        })
        .unwrap();
    let mut bytes = std::fs::read(&archive).unwrap();
    // One flipped byte near the end: even a read of the file's first bytes must fail.
    bytes[range.end as usize - 3] ^= 0x01;
    let damaged = tmp.path().join("damaged.mkv");
    std::fs::write(&damaged, &bytes).unwrap();
    let m = mount(&damaged, &tmp.path().join("mnt"), &[]);
    let f = std::fs::File::open(m.dir.join(&victim)).unwrap();
    let mut head = [0u8; 16];
    let err = f.read_at(&mut head, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{victim}");
    // Every other stored file reads back as the original (JPEGs through Lepton included).
    for e in &a.index.entries {
        if let EntryKind::Verbatim { .. } = &e.kind {
            if e.path_lossy() != victim {
                let got = std::fs::read(m.dir.join(e.path_lossy())).unwrap();
                let want = std::fs::read(sample_album().join(e.path_lossy())).unwrap();
                assert!(got == want, "{}", e.path_lossy());
            }
        }
    }
}

#[test]
fn kept_jpegs_stored_with_lepton_are_served_exactly() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Lossless mode keeps every JPEG as it is: stored Lepton-compressed.
    let archive = tmp.path().join("a.mkv");
    pack_with(&["-q", "--quality", "lossless"], &sample_album(), &archive);
    let a = Archive::open(&archive).unwrap();
    let lepton: Vec<(String, Range<u64>)> = a
        .index
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Verbatim { blob, .. }
                if matches!(blob.coding, av1pack::archive::BlobCoding::Lepton { .. }) =>
            {
                Some((e.path_lossy(), a.blob_range(blob)))
            }
            _ => None,
        })
        .collect();
    let jpegs = files(&sample_album())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .count();
    assert_eq!(
        lepton.len(),
        jpegs,
        "every sample JPEG is stored with Lepton"
    );
    {
        let m = mount(&archive, &tmp.path().join("mnt"), &[]);
        for (path, _) in &lepton {
            let want = std::fs::read(sample_album().join(path)).unwrap();
            let meta = std::fs::metadata(m.dir.join(path)).unwrap();
            assert_eq!(meta.len(), want.len() as u64, "{path}: st_size");
            let got = std::fs::read(m.dir.join(path)).unwrap();
            assert!(got == want, "{path}: served bytes differ from the original");
            // A read in the middle agrees with the whole file.
            let f = std::fs::File::open(m.dir.join(path)).unwrap();
            let mut part = vec![0u8; 1000];
            let n = f.read_at(&mut part, want.len() as u64 / 2).unwrap();
            assert!(
                n > 0 && part[..n] == want[want.len() / 2..want.len() / 2 + n],
                "{path}"
            );
        }
    }
    // A damaged Lepton blob: EIO for that file, the other JPEGs still exact.
    let (victim, range) = lepton[0].clone();
    let mut bytes = std::fs::read(&archive).unwrap();
    bytes[(range.start + range.end) as usize / 2] ^= 0x10;
    let damaged = tmp.path().join("damaged.mkv");
    std::fs::write(&damaged, &bytes).unwrap();
    let m = mount(&damaged, &tmp.path().join("mnt2"), &[]);
    let err = std::fs::read(m.dir.join(&victim)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{victim}");
    for (path, _) in &lepton[1..] {
        let got = std::fs::read(m.dir.join(path)).unwrap();
        assert!(
            got == std::fs::read(sample_album().join(path)).unwrap(),
            "{path}"
        );
    }
}

/// How many kept files of the archive are stored with a coding that `is` accepts.
fn count_kept(archive: &Path, is: fn(&av1pack::archive::BlobCoding) -> bool) -> usize {
    Archive::open(archive)
        .unwrap()
        .index
        .entries
        .iter()
        .filter(|e| matches!(&e.kind, EntryKind::Verbatim { blob, .. } if is(&blob.coding)))
        .count()
}

/// `served` (a file in a mount) has `want`'s size in `stat`, its bytes read whole, and a read
/// from the middle agrees.
fn assert_served_whole_and_in_part(served: &Path, want: &[u8]) {
    let name = served.display();
    assert_eq!(
        std::fs::metadata(served).unwrap().len(),
        want.len() as u64,
        "{name}: st_size"
    );
    let f = std::fs::File::open(served).unwrap();
    let mut part = vec![0u8; 1000];
    let n = f.read_at(&mut part, want.len() as u64 / 2).unwrap();
    assert!(n > 0 && part[..n] == want[want.len() / 2..want.len() / 2 + n]);
    assert!(
        std::fs::read(served).unwrap() == want,
        "{name}: served bytes"
    );
}

/// JPEGs recoded in their own DCT are served as the recoded file: the size `ls -l` shows is
/// exact, the bytes are unpack's, a read in the middle agrees with the whole, and each scores
/// at least 90 against its original.
#[test]
fn recoded_jpegs_are_served_as_unpack_gives_them() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir(&album).unwrap();
    for i in 0..3 {
        write_fine_jpeg(&album.join(format!("IMG_{i}.jpg")), 960, 640, i);
    }
    let archive = tmp.path().join("a.mkv");
    pack_with(&["-q"], &album, &archive);
    let thinned = count_kept(&archive, |c| {
        matches!(c, av1pack::archive::BlobCoding::JpegThinned { .. })
    });
    assert_eq!(thinned, 3, "every JPEG recoded");
    let out = tmp.path().join("out");
    unpack_to(&archive, &out);
    let m = mount(&archive, &tmp.path().join("mnt"), &[]);
    for i in 0..3 {
        let name = format!("IMG_{i}.jpg");
        let want = std::fs::read(out.join(&name)).unwrap();
        assert_ne!(
            want,
            std::fs::read(album.join(&name)).unwrap(),
            "{name} recoded"
        );
        let served = m.dir.join(&name);
        assert_served_whole_and_in_part(&served, &want);
        assert_looks_the_same(&album.join(&name), &served, 90.0);
    }
}

/// Frames of a JPEG burst stored each against the one before are served as unpack gives them,
/// the last one first (its whole chain decoded on a cold read), then in any order.
#[test]
fn burst_frames_stored_against_each_other_are_served_as_unpack_gives_them() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_, archive) = packed_jpeg_burst(tmp.path());
    let chained = count_kept(&archive, |c| {
        matches!(c, av1pack::archive::BlobCoding::JpegThinnedDelta { .. })
    });
    assert!(chained >= 3, "{chained} frames stored against another");
    let out = tmp.path().join("out");
    unpack_to(&archive, &out);
    let m = mount(&archive, &tmp.path().join("mnt"), &[]);
    for i in [4, 0, 2, 3, 1] {
        let name = format!("frame_{i}.jpg");
        let want = std::fs::read(out.join(&name)).unwrap();
        let served = m.dir.join(&name);
        assert_served_whole_and_in_part(&served, &want);
    }
}

#[test]
fn an_hevc_coded_image_is_served_like_unpack_gives_it() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir_all(&album).unwrap();
    for i in 0..3u32 {
        let mut img = pattern(300, 200, 7);
        for y in 40..90 {
            for x in (20 + i * 40)..(80 + i * 40) {
                img.put_pixel(x, y, image::Rgb([30, 200, (i * 60) as u8]));
            }
        }
        img.save(album.join(format!("frame {i}.png"))).unwrap();
    }
    let archive = tmp.path().join("hevc.mkv");
    pack_with(&["--codec", "hevc"], &album, &archive);
    let a = Archive::open(&archive).unwrap();
    assert_eq!(a.index.tracks[0].codec, "V_MPEGH/ISO/HEVC");
    let last = a
        .index
        .entries
        .iter()
        .find(|e| e.path == b"frame 2.png")
        .unwrap();
    assert!(
        matches!(&last.kind, EntryKind::Image(img) if img.tiles[0].frame == 2),
        "the third frame of the HEVC track (decoded after the two before it)"
    );
    let restored = tmp.path().join("restored");
    unpack_to(&archive, &restored);

    let m = mount(&archive, &tmp.path().join("mnt"), &[]);
    let served = m.dir.join("frame 2.png");
    let bytes = std::fs::read(&served).unwrap();
    assert_eq!(served.metadata().unwrap().len(), bytes.len() as u64);
    assert!(
        bytes == std::fs::read(restored.join("frame 2.png")).unwrap(),
        "mount and unpack give the same file"
    );
    assert_looks_the_same(&album.join("frame 2.png"), &served, 90.0);
}

/// Packs `album` with `flags` and returns the archive's size.
fn pack_sized(flags: &[&str], album: &Path, archive: &Path) -> u64 {
    let o = bin()
        .arg("pack")
        .args(flags)
        .arg(album)
        .arg(archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "pack {flags:?}: {}", stderr(&o));
    std::fs::metadata(archive).unwrap().len()
}

/// Copies of files (the same bytes under other names, in other folders) are stored once:
/// the archive grows by their index entries only. Unpack and the mount give each copy the
/// bytes its original gets, with the copy's own time (and, from unpack, mode). Coded images
/// (one with an alpha plane), a kept JPEG (Lepton) and a text file are copied.
#[test]
fn copies_are_stored_once_and_served_under_every_name() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    let o = Command::new("cp")
        .arg("-a")
        .arg(sample_album())
        .arg(&album)
        .output()
        .unwrap();
    assert!(o.status.success());
    // Coded (--crf 26 codes every image) and kept (lossless keeps JPEG files, Lepton-coded).
    let modes: [&[&str]; 2] = [&["--crf", "26"], &["--quality", "lossless"]];
    let plain: Vec<u64> = modes
        .iter()
        .enumerate()
        .map(|(k, flags)| pack_sized(flags, &album, &tmp.path().join(format!("plain{k}.mkv"))))
        .collect();
    let copies = [
        ("2005/anne_helene.jpg", "copies/anne_helene (1).jpg"),
        ("icons/digikam.png", "copies/deeper/digikam.png"),
        ("scans/gnucash-guide-p22.png", "copies/p22.png"),
        ("notes/README.md", "copies/README copy.md"),
    ];
    let mut copied_bytes = 0;
    for (k, (from, to)) in copies.iter().enumerate() {
        let to = album.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        copied_bytes += std::fs::copy(album.join(from), &to).unwrap();
        // Their own times and modes.
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000 + k as u64);
        std::fs::File::options()
            .write(true)
            .open(&to)
            .unwrap()
            .set_modified(when)
            .unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for (k, flags) in modes.iter().enumerate() {
        let archive = tmp.path().join(format!("copies{k}.mkv"));
        let size = pack_sized(flags, &album, &archive);
        assert!(
            size < plain[k] + 1024 * copies.len() as u64,
            "{flags:?}: {size} bytes with {copied_bytes} bytes of copies, {} without",
            plain[k]
        );
        // `info` counts them.
        let o = bin()
            .args(["info", "--json"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(info["copies"], copies.len(), "{flags:?}: {info}");
        // The frames' padding is the same with copies as without (a copy codes no frame).
        let o = bin()
            .args(["info", "--json"])
            .arg(tmp.path().join(format!("plain{k}.mkv")))
            .output()
            .unwrap();
        let without: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let padding = info["padding"].as_f64().unwrap();
        assert!(
            (0.0..1.0).contains(&padding) && (padding > 0.0) == (info["images"] != 0),
            "{flags:?}: {info}"
        );
        assert_eq!(info["padding"], without["padding"], "{flags:?}: {info}");
        let out = tmp.path().join(format!("out{k}"));
        let o = bin()
            .arg("unpack")
            .arg(&archive)
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let m = mount(&archive, &tmp.path().join(format!("mnt{k}")), &[]);
        for (from, to) in copies {
            let original = std::fs::read(out.join(from)).unwrap();
            let copy = std::fs::read(out.join(to)).unwrap();
            assert!(
                copy == original,
                "{flags:?}: unpacked {to} differs from {from}"
            );
            let (src_meta, out_meta) = (
                album.join(to).metadata().unwrap(),
                out.join(to).metadata().unwrap(),
            );
            assert_eq!(src_meta.mtime(), out_meta.mtime(), "{flags:?}: {to}");
            assert_eq!(
                out_meta.permissions().mode() & 0o777,
                0o600,
                "{flags:?}: {to}"
            );
            let served = std::fs::read(m.dir.join(to)).unwrap();
            let stat = m.dir.join(to).metadata().unwrap();
            assert_eq!(stat.len(), served.len() as u64, "{flags:?}: {to}");
            assert_eq!(stat.mtime(), src_meta.mtime(), "{flags:?}: {to}");
            assert!(served == original, "{flags:?}: mounted {to} differs");
        }
        // The text file and, in lossless mode, the JPEG come back bit for bit.
        for (from, to) in copies {
            if to.ends_with(".md") || k == 1 && to.ends_with(".jpg") {
                assert_eq!(
                    std::fs::read(album.join(from)).unwrap(),
                    std::fs::read(out.join(to)).unwrap(),
                    "{flags:?}: {to}"
                );
            }
        }
    }
}

/// Hard links are hard links in the mount too: the names of one file show one inode with a
/// link count of 2 (in `stat` and in the directory listing), read the same bytes as unpack
/// gives, and `cp -a` out of the mount links them again; a copy is a file of its own.
#[test]
fn hard_links_are_one_file_under_two_names() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let album = hard_linked_album(tmp.path());
    let archive = tmp.path().join("a.mkv");
    pack_sized(&["--crf", "20"], &album, &archive);
    let restored = tmp.path().join("restored");
    unpack_to(&archive, &restored);
    let m = mount(&archive, &tmp.path().join("mnt"), &[]);
    let meta = |rel: &str| std::fs::metadata(m.dir.join(rel)).unwrap();
    let listed = |dir: &str, name: &str| {
        std::fs::read_dir(m.dir.join(dir))
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == name)
            .map(|e| e.ino())
            .unwrap()
    };
    for (first, other) in [
        ("a.png", "sub/a (link).png"),
        ("notes.txt", "sub/notes.txt"),
    ] {
        assert_eq!(meta(first).ino(), meta(other).ino(), "{other}");
        assert_eq!((meta(first).nlink(), meta(other).nlink()), (2, 2));
        let name = other.strip_prefix("sub/").unwrap();
        assert_eq!(listed("sub", name), meta(first).ino(), "{other} listed");
        for rel in [first, other] {
            let served = std::fs::read(m.dir.join(rel)).unwrap();
            assert_eq!(served.len() as u64, meta(rel).len(), "{rel}");
            assert!(
                served == std::fs::read(restored.join(rel)).unwrap(),
                "{rel}: mount and unpack differ"
            );
        }
    }
    assert_ne!(meta("copy.txt").ino(), meta("notes.txt").ino());
    assert_eq!(meta("copy.txt").nlink(), 1);
    // What a user copying the folder out gets: the links linked again.
    let copied = tmp.path().join("copied");
    let o = Command::new("cp")
        .arg("-a")
        .arg(&m.dir)
        .arg(&copied)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = |rel: &str| std::fs::metadata(copied.join(rel)).unwrap();
    assert_eq!(out("notes.txt").ino(), out("sub/notes.txt").ino());
    assert_eq!(out("a.png").ino(), out("sub/a (link).png").ino());
    assert_eq!(out("copy.txt").nlink(), 1);
}
