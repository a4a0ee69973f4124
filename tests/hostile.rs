//! Hostile or odd input folders, and hostile archives, through the real binary: decompression
//! bombs, corrupt images, symlinks (loops, pointing outside), names differing only in case, a
//! very deep tree; archives whose paths or symlinks try to leave the output folder.

mod common;

use av1pack::archive::{self, Archive, ArchiveWriter, Entry, EntryKind, Index, Timestamp};
use common::*;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};

/// Runs a command to its end; returns its output and its peak RSS in KiB (from wait4).
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives the rusage
fn run_measured(mut cmd: Command) -> (Output, u64) {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t = std::thread::spawn(move || {
        let mut b = Vec::new();
        so.read_to_end(&mut b).unwrap();
        b
    });
    let mut stderr = Vec::new();
    se.read_to_end(&mut stderr).unwrap();
    let stdout = t.join().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it in for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let status = std::os::unix::process::ExitStatusExt::from_raw(code << 8);
    (
        Output {
            status,
            stdout,
            stderr,
        },
        ru.ru_maxrss as u64,
    )
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut c = kind.to_vec();
    c.extend_from_slice(data);
    out.extend_from_slice(&c);
    out.extend_from_slice(&crc32(&c).to_be_bytes());
}

/// A PNG that declares `w`×`h` RGB pixels but carries almost no data.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // zlib stream of a single zero byte.
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A JPEG header declaring 65000×65000 (baseline, 3 components), then the end marker.
fn jpeg_bomb() -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 8]);
    out.extend_from_slice(&65000u16.to_be_bytes());
    out.extend_from_slice(&65000u16.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

fn verbatim_reason(a: &Archive, path: &str) -> String {
    match &entry(a, path).kind {
        EntryKind::Verbatim { reason, .. } => reason.clone(),
        other => panic!("{path} was not kept as is: {other:?}"),
    }
}

/// Packs `album` once at a fixed rate (no quality loop: these tests are about names and bytes).
fn pack_ok(album: &Path, archive: &Path) {
    let o = bin()
        .args(["pack", "--crf", "20"])
        .arg(album)
        .arg(archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

fn unpack_ok(archive: &Path, out: &Path) {
    let o = bin()
        .args(["unpack", "-q"])
        .arg(archive)
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn decompression_bombs_are_kept_as_files_without_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir(&album).unwrap();
    std::fs::write(album.join("huge.png"), png_bomb(100_000, 100_000)).unwrap();
    std::fs::write(album.join("wide.png"), png_bomb(4_000_000, 1)).unwrap();
    std::fs::write(album.join("huge.jpg"), jpeg_bomb()).unwrap();
    // Within the sides the video path takes, but its data is missing: decoding fails.
    std::fs::write(album.join("big-empty.png"), png_bomb(8000, 8000)).unwrap();
    pattern(64, 48, 1).save(album.join("fine.png")).unwrap();
    let archive = tmp.path().join("a.mkv");
    let mut cmd = bin();
    cmd.args(["pack", "--crf", "20"]).arg(&album).arg(&archive);
    let (o, rss_kib) = run_measured(cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
    eprintln!("pack of the bombs: peak RSS {} MiB", rss_kib / 1024);
    // 100000×100000 RGB would be 28 GiB; 8000×8000 is 183 MiB, decoded at most once.
    assert!(rss_kib < 600 * 1024, "peak RSS {rss_kib} KiB");
    let a = Archive::open(&archive).unwrap();
    for name in ["huge.png", "wide.png"] {
        let why = verbatim_reason(&a, name);
        assert!(why.contains("larger than"), "{name}: {why}");
    }
    let why = verbatim_reason(&a, "huge.jpg");
    assert!(!why.is_empty());
    let why = verbatim_reason(&a, "big-empty.png");
    assert!(why.contains("decode"), "big-empty.png: {why}");
    assert!(matches!(
        a.index
            .entries
            .iter()
            .find(|e| e.path == b"fine.png")
            .unwrap()
            .kind,
        EntryKind::Image(_)
    ));
    // ls and info read the archive, unpack gives every file back byte for byte.
    for cmd in ["ls", "info"] {
        let o = bin().arg(cmd).arg(&archive).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
    }
    let out = tmp.path().join("out");
    unpack_ok(&archive, &out);
    for name in ["huge.png", "wide.png", "huge.jpg", "big-empty.png"] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(album.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn corrupt_images_are_kept_as_files_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir(&album).unwrap();
    pattern(120, 80, 2).save(album.join("good.png")).unwrap();
    let mut bad = std::fs::read(album.join("good.png")).unwrap();
    // Scramble the compressed pixels (the chunk CRCs no longer match either).
    let idat = bad.windows(4).position(|w| w == b"IDAT").unwrap();
    for b in &mut bad[idat + 10..idat + 60] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(album.join("scrambled.png"), &bad).unwrap();
    std::fs::write(album.join("header-only.jpg"), [0xFF, 0xD8, 0xFF, 0xE0]).unwrap();
    std::fs::write(album.join("text.png"), b"I am not a PNG").unwrap();
    let archive = tmp.path().join("a.mkv");
    pack_ok(&album, &archive);
    let a = Archive::open(&archive).unwrap();
    for name in ["scrambled.png", "header-only.jpg", "text.png"] {
        let why = verbatim_reason(&a, name);
        assert!(!why.is_empty(), "{name}");
    }
    let out = tmp.path().join("out");
    unpack_ok(&archive, &out);
    for name in ["scrambled.png", "header-only.jpg", "text.png"] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(album.join(name)).unwrap()
        );
    }
}

/// An animated PNG with `frames` frames of `w`×`h` (through the `png` crate).
fn apng(w: u32, h: u32, frames: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_animated(frames, 0).unwrap();
    let mut writer = enc.write_header().unwrap();
    for i in 0..frames {
        let img = pattern(w, h, i + 1);
        writer.write_image_data(img.as_raw()).unwrap();
    }
    writer.finish().unwrap();
    out
}

fn riff_chunk(fourcc: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut c = fourcc.to_vec();
    c.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    c.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        c.push(0);
    }
    c
}

/// An animated WebP of `frames` lossless frames of `w`×`h`: each frame's VP8L chunk (from the
/// image crate's still encoder) in an ANMF chunk, after VP8X (animation flag) and ANIM.
fn animated_webp(w: u32, h: u32, frames: u32) -> Vec<u8> {
    let le24 = |v: u32| v.to_le_bytes()[..3].to_vec();
    let mut vp8x = vec![0x02, 0, 0, 0];
    vp8x.extend(le24(w - 1));
    vp8x.extend(le24(h - 1));
    let mut body = b"WEBP".to_vec();
    body.extend(riff_chunk(b"VP8X", &vp8x));
    body.extend(riff_chunk(b"ANIM", &[0, 0, 0, 0, 0, 0]));
    for i in 0..frames {
        let mut still = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(pattern(w, h, i + 1))
            .write_to(&mut still, image::ImageFormat::WebP)
            .unwrap();
        let still = still.into_inner();
        // RIFF, size, WEBP, then the one VP8L chunk.
        assert_eq!(&still[12..16], b"VP8L");
        let mut anmf = [le24(0), le24(0), le24(w - 1), le24(h - 1), le24(100)].concat();
        anmf.push(0);
        anmf.extend_from_slice(&still[12..]);
        body.extend(riff_chunk(b"ANMF", &anmf));
    }
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend(body);
    file
}

/// A TIFF of two pages: the image crate's one-page TIFF with a copy of its directory chained
/// after the first (both pages show the same strips).
fn two_page_tiff(w: u32, h: u32) -> Vec<u8> {
    let mut one = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(pattern(w, h, 5))
        .write_to(&mut one, image::ImageFormat::Tiff)
        .unwrap();
    let mut t = one.into_inner();
    assert_eq!(&t[..4], b"II*\0");
    let u32_at = |t: &[u8], at: usize| u32::from_le_bytes(t[at..at + 4].try_into().unwrap());
    let first = u32_at(&t, 4) as usize;
    let n = u16::from_le_bytes([t[first], t[first + 1]]) as usize;
    let next_field = first + 2 + 12 * n;
    assert_eq!(u32_at(&t, next_field), 0, "one page to begin with");
    if t.len() % 2 == 1 {
        t.push(0);
    }
    let second = t.len();
    let dir = t[first..next_field].to_vec();
    t.extend_from_slice(&dir);
    t.extend_from_slice(&0u32.to_le_bytes());
    t[next_field..next_field + 4].copy_from_slice(&(second as u32).to_le_bytes());
    t
}

/// Files with more than the one picture a decoder gives (an animated PNG or WebP, a TIFF of
/// two pages, a PNG with data after its end) are kept as they are, with the reason, and
/// come back byte for byte: coding their first picture would lose the rest. So are lossy
/// WebPs, which could only be written back lossless, several times larger.
#[test]
fn pictures_beyond_the_first_and_lossy_webps_are_kept_as_files() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir(&album).unwrap();
    // Each decodes as a still image (the first frame or page) with the image crate.
    let mut trailing = Vec::new();
    image::DynamicImage::ImageRgb8(pattern(96, 64, 4))
        .write_to(
            &mut std::io::Cursor::new(&mut trailing),
            image::ImageFormat::Png,
        )
        .unwrap();
    trailing.extend_from_slice(b"appended by some program");
    let files: [(&str, Vec<u8>, &str); 4] = [
        ("anim.png", apng(96, 64, 3), "animated PNG"),
        ("anim.webp", animated_webp(96, 64, 3), "animated WebP"),
        ("pages.tif", two_page_tiff(96, 64), "more than one page"),
        ("trailing.png", trailing, "24 bytes after the PNG's end"),
    ];
    for (name, bytes, _) in &files {
        std::fs::write(album.join(name), bytes).unwrap();
        assert!(
            image::open(album.join(name)).is_ok(),
            "{name}: the image crate reads its first picture"
        );
    }
    // A lossy WebP (FFmpeg's libwebp): written back it could only be lossless, and larger.
    let o = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=96x64")
        .args(["-frames:v", "1", "-c:v", "libwebp", "-lossless", "0"])
        .arg(album.join("lossy.webp"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lossy = std::fs::read(album.join("lossy.webp")).unwrap();
    assert_eq!(&lossy[12..16], b"VP8 ", "a lossy WebP");
    let files: Vec<(&str, Vec<u8>, &str)> = files
        .into_iter()
        .chain([("lossy.webp", lossy, "lossy WebP")])
        .collect();
    // A still image beside them is still coded.
    pattern(96, 64, 9).save(album.join("still.png")).unwrap();
    let archive = tmp.path().join("a.mkv");
    pack_ok(&album, &archive);
    let a = Archive::open(&archive).unwrap();
    for (name, _, why) in &files {
        let reason = verbatim_reason(&a, name);
        assert!(reason.contains(why), "{name}: {reason}");
    }
    let still = a
        .index
        .entries
        .iter()
        .find(|e| e.path == b"still.png")
        .unwrap();
    assert!(matches!(still.kind, EntryKind::Image(_)), "still.png coded");
    let out = tmp.path().join("out");
    unpack_ok(&archive, &out);
    for (name, bytes, _) in &files {
        assert_eq!(&std::fs::read(out.join(name)).unwrap(), bytes, "{name}");
    }
}

#[test]
fn symlinks_are_kept_as_links_and_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(album.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"outside the album").unwrap();
    pattern(40, 30, 3).save(album.join("sub/pic.png")).unwrap();
    let links: [(&str, &Path); 7] = [
        ("self", Path::new("self")),
        ("a", Path::new("b")),
        ("b", Path::new("a")),
        ("out-abs", &outside),
        ("out-rel", Path::new("../outside")),
        ("root", Path::new("/")),
        ("sub/up", Path::new("..")),
    ];
    for (name, target) in links {
        std::os::unix::fs::symlink(target, album.join(name)).unwrap();
    }
    let archive = tmp.path().join("a.mkv");
    pack_ok(&album, &archive);
    let a = Archive::open(&archive).unwrap();
    let paths: Vec<String> = a.index.entries.iter().map(Entry::path_lossy).collect();
    assert_eq!(
        paths,
        [
            "a",
            "b",
            "out-abs",
            "out-rel",
            "root",
            "self",
            "sub",
            "sub/pic.png",
            "sub/up"
        ],
        "nothing behind a link was packed"
    );
    for (name, target) in links {
        let e = a.index.entries.iter().find(|e| e.path_lossy() == name);
        match &e.unwrap().kind {
            EntryKind::Symlink { target: t } => assert_eq!(t, target.as_os_str().as_bytes()),
            other => panic!("{name}: {other:?}"),
        }
    }
    let out = tmp.path().join("out");
    unpack_ok(&archive, &out);
    for (name, target) in links {
        assert_eq!(
            std::fs::read_link(out.join(name)).unwrap(),
            target,
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read(outside.join("secret.txt")).unwrap(),
        b"outside the album"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
}

#[test]
fn names_that_differ_only_in_case_stay_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    for d in ["Dir", "dir"] {
        std::fs::create_dir_all(album.join(d)).unwrap();
        std::fs::write(album.join(d).join("a.txt"), d.as_bytes()).unwrap();
    }
    for (i, n) in ["Photo.png", "photo.png", "PHOTO.PNG"].iter().enumerate() {
        pattern(50, 40, i as u32 * 5).save(album.join(n)).unwrap();
    }
    let archive = tmp.path().join("a.mkv");
    pack_ok(&album, &archive);
    let out = tmp.path().join("out");
    unpack_ok(&archive, &out);
    assert_eq!(files(&out), files(&album));
    assert_eq!(std::fs::read(out.join("Dir/a.txt")).unwrap(), b"Dir");
    assert_eq!(std::fs::read(out.join("dir/a.txt")).unwrap(), b"dir");
    let imgs: Vec<_> = ["Photo.png", "photo.png", "PHOTO.PNG"]
        .iter()
        .map(|n| rgb_of(&out.join(n)))
        .collect();
    assert!(imgs[0] != imgs[1] && imgs[1] != imgs[2] && imgs[0] != imgs[2]);
}

#[test]
fn a_tree_200_folders_deep_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    let mut deep = album.clone();
    for i in 0..200 {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom.txt"), b"deep down").unwrap();
    pattern(32, 24, 4).save(deep.join("bottom.png")).unwrap();
    let archive = tmp.path().join("a.mkv");
    pack_ok(&album, &archive);
    let o = bin().arg("ls").arg(&archive).output().unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 202);
    let out = tmp.path().join("out");
    unpack_ok(&archive, &out);
    let rel = deep.strip_prefix(&album).unwrap();
    assert_eq!(
        std::fs::read(out.join(rel).join("bottom.txt")).unwrap(),
        b"deep down"
    );
    assert_eq!(
        rgb_of(&out.join(rel).join("bottom.png")).dimensions(),
        (32, 24)
    );
}

/// Writes an archive whose index holds `entries` (stored files get `data`).
fn hostile_archive(path: &Path, entries: Vec<(&[u8], Option<&[u8]>)>) {
    let out = std::fs::File::create(path).unwrap();
    let blobs = tempfile::tempfile().unwrap();
    let mut w = ArchiveWriter::create(out, blobs, Vec::new(), 25, "hostile").unwrap();
    let mut index = Index {
        tool_version: "0.1.0".into(),
        renderer: "x".into(),
        settings: archive::Settings {
            codec: "libx264".into(),
            preset: "medium".into(),
            crf: None,
            qp: None,
            gop: 8,
            frame_rate: 25,
            pix_fmt: "yuvj444p".into(),
        },
        tracks: Vec::new(),
        entries: Vec::new(),
        links: Vec::new(),
    };
    for (p, data) in entries {
        let kind = match data {
            Some(d) => {
                let blob = w
                    .add_blob(&String::from_utf8_lossy(p), &mut &d[..], d.len() as u64)
                    .unwrap();
                EntryKind::Verbatim {
                    blob,
                    reason: "planted".into(),
                }
            }
            None => EntryKind::Symlink {
                target: std::env::temp_dir().as_os_str().as_bytes().to_vec(),
            },
        };
        index.entries.push(Entry {
            path: p.to_vec(),
            mtime: Timestamp::default(),
            mode: 0o644,
            kind,
        });
    }
    w.finish(&mut index).unwrap();
}

#[test]
fn unpack_never_writes_outside_its_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let outside = t.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let abs = outside.join("abs.txt");
    let archive = t.join("hostile.mkv");
    hostile_archive(
        &archive,
        vec![
            (b"ok.txt", Some(b"fine")),
            (abs.as_os_str().as_bytes(), Some(b"absolute")),
            (b"../outside/dotdot.txt", Some(b"dotdot")),
            (b"sub/../../outside/mid.txt", Some(b"mid")),
            // A symlink to a folder outside, then a file "inside" it.
            (b"link", None),
            (b"link/through.txt", Some(b"through")),
        ],
    );
    let out = t.join("out");
    let o = bin()
        .arg("unpack")
        .arg(&archive)
        .arg(&out)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(!err.contains("panicked"));
    for named in [
        "abs.txt",
        "../outside/dotdot.txt",
        "sub/../../outside/mid.txt",
    ] {
        assert!(err.contains(named), "{named} not named: {err}");
    }
    assert_eq!(std::fs::read(out.join("ok.txt")).unwrap(), b"fine");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{err}");
    assert!(!std::env::temp_dir().join("through.txt").exists());
    // The same archive into a folder where "link" already is a symlink to outside.
    let out2 = t.join("out2");
    std::fs::create_dir(&out2).unwrap();
    std::os::unix::fs::symlink(&outside, out2.join("link")).unwrap();
    let o = bin()
        .args(["unpack", "--force"])
        .arg(&archive)
        .arg(&out2)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("link/through.txt"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

/// An index whose recoded-PNG entries point at the wrong place in, or past, their group (or
/// claim a group larger than any pack writes) makes reading that file an error, never a panic
/// or a huge allocation; the honest entries still read.
#[test]
fn hostile_png_group_fields_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let album = sample_scans(tmp.path(), "scans");
    let archive = tmp.path().join("a.mkv");
    let o = run(&["pack".as_ref(), album.as_os_str(), archive.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = Archive::open(&archive).unwrap();
    let members: Vec<archive::Blob> = a
        .index
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Verbatim { blob, .. } => Some(*blob),
            _ => None,
        })
        .collect();
    assert_eq!(members.len(), 3);
    let fields = |b: &archive::Blob| match b.coding {
        archive::BlobCoding::PngGrouped {
            size,
            hash,
            at,
            len,
            group_len,
        } => (size, hash, at, len, group_len),
        other => panic!("not in a group: {other:?}"),
    };
    let (size, hash, at, len, group_len) = fields(&members[0]);
    let (_, _, other_at, other_len, _) = fields(&members[1]);
    let with = |at: u64, len: u64, group_len: u64| archive::Blob {
        coding: archive::BlobCoding::PngGrouped {
            size,
            hash,
            at,
            len,
            group_len,
        },
        ..members[0]
    };
    let hostile = [
        ("group larger than any pack writes", with(at, len, u64::MAX)),
        ("group length one more", with(at, len, group_len + 1)),
        ("group length one less", with(at, len, group_len - 1)),
        (
            "member past the group",
            with(group_len - 10, 100, group_len),
        ),
        ("member offset overflowing", with(u64::MAX, 2, group_len)),
        ("empty member", with(at, 0, group_len)),
        (
            "another member's bytes",
            with(other_at, other_len, group_len),
        ),
        ("member cut short", with(at, len - 1, group_len)),
        (
            "the group's bytes moved",
            archive::Blob {
                offset: members[0].offset + 1,
                ..members[0]
            },
        ),
    ];
    for (what, blob) in &hostile {
        assert!(a.read_file(blob).is_err(), "{what}");
    }
    // The honest entries are untouched by the failed reads (the group cache holds only what
    // was checked), and the hostile ones still fail with the group decoded and cached.
    for (b, e) in members.iter().zip(
        a.index
            .entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Verbatim { .. })),
    ) {
        let original = std::fs::read(album.join(e.path_lossy())).unwrap();
        assert_eq!(a.read_file(b).unwrap(), original, "{}", e.path_lossy());
    }
    for (what, blob) in &hostile {
        assert!(a.read_file(blob).is_err(), "{what}, group cached");
    }
}
