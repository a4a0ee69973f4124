//! End-to-end tests through the real binary: pack, unpack, ls, info, verify, bad input.

mod common;

use av1pack::quality;
use common::*;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn pack(src: &Path, dest: &Path) {
    pack_with(&[], src, dest);
}

fn unpack(archive: &Path, out: &Path) {
    let o = run(&[os("unpack"), archive.as_os_str(), out.as_os_str()]);
    assert!(o.status.success(), "unpack failed: {}", stderr(&o));
}

/// Packs the sample album with `--crf 26`: coded once, without the quality check, at a
/// quality low enough that every photo's frames, with its metadata (counted twice, as the
/// archive stores it), are smaller than its file (so each image goes through the codec rather
/// than being kept as is). SSIMULACRA2 is about 50 to 65 there.
fn pack_coded(dest: &Path) {
    pack_with(&["--crf", "26"], &sample_album(), dest);
}

/// Asserts that `restored` holds the same tree as `original`: names, kinds, mtimes, modes,
/// verbatim bytes, image sizes, and images at least `floor` in SSIMULACRA2.
fn assert_same_tree(original: &Path, restored: &Path, floor: f64) {
    let a = files(original);
    let b = files(restored);
    assert_eq!(a, b, "restored names differ");
    for rel in &a {
        let (pa, pb) = (original.join(rel), restored.join(rel));
        let (ma, mb) = (
            pa.symlink_metadata().unwrap(),
            pb.symlink_metadata().unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", rel.display());
        assert_eq!(ma.mtime(), mb.mtime(), "mtime of {}", rel.display());
        assert_eq!(
            ma.mtime_nsec(),
            mb.mtime_nsec(),
            "mtime ns of {}",
            rel.display()
        );
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "mode of {}",
            rel.display()
        );
        if !ma.is_file() {
            continue;
        }
        let bytes_a = std::fs::read(&pa).unwrap();
        let bytes_b = std::fs::read(&pb).unwrap();
        if bytes_a == bytes_b {
            continue; // kept verbatim
        }
        assert_looks_the_same(&pa, &pb, floor);
    }
}

#[test]
fn sample_album_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("album.mkv");
    let out = tmp.path().join("restored");
    pack(&sample_album(), &archive);
    unpack(&archive, &out);
    // Every image comes back identical (kept as is) or visually lossless (the pack target).
    assert_same_tree(&sample_album(), &out, 90.0);
    // Formats are kept: JPEG stays JPEG, PNG stays PNG.
    let back = std::fs::read(out.join("2006/bar55.jpg")).unwrap();
    assert_eq!(
        image::guess_format(&back).unwrap(),
        image::ImageFormat::Jpeg
    );
    let png = std::fs::read(out.join("screenshots/basics_NewBookOpts.png")).unwrap();
    assert_eq!(image::guess_format(&png).unwrap(), image::ImageFormat::Png);
}

#[test]
fn coded_images_keep_format_and_metadata() {
    // --crf codes once without the quality check; at a deliberately low quality (26) every
    // photo's frames are smaller than its file, so each goes through the codec. (The quality
    // floor is not the point here: format and metadata are.)
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("album.mkv");
    pack_coded(&archive);
    let out = tmp.path().join("restored");
    unpack(&archive, &out);
    assert_same_tree(&sample_album(), &out, 45.0);
    let orig = std::fs::read(sample_album().join("2006/bar55.jpg")).unwrap();
    let back = std::fs::read(out.join("2006/bar55.jpg")).unwrap();
    assert_ne!(orig, back, "coded, not copied");
    assert_eq!(
        image::guess_format(&back).unwrap(),
        image::ImageFormat::Jpeg
    );
    // EXIF and ICC segments travel byte for byte.
    let (a, _) = av1pack::meta::jpeg_blocks(&orig);
    let (b, _) = av1pack::meta::jpeg_blocks(&back);
    let has_exif = a.iter().any(|m| {
        matches!(m, av1pack::archive::MetaBlock::JpegSegment { marker: 0xE1, data } if data.starts_with(b"Exif"))
    });
    assert!(has_exif);
    assert_eq!(a, b);
    // exiftool reports the same tags on every coded image and its restored file (file-level
    // tags aside): EXIF, ICC, XMP, PNG text and significant-bits chunks, alpha PNGs included.
    assert_same_tags(&sample_album(), &out, 9);
}

/// Asserts that exiftool reports the same tags on the `n` images below `original` and their
/// files below `restored` (`scripts/compare-tags.py`: file-level and TIFF pixel-layout fields
/// aside).
fn assert_same_tags(original: &Path, restored: &Path, n: usize) {
    let o = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/compare-tags.py"))
        .arg(original)
        .arg(restored)
        .output()
        .expect("python3 and exiftool (scripts/install-deps.sh installs exiftool)");
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{report}{}", stderr(&o));
    assert!(
        report.contains(&format!("{n} images, {n} with identical tag sets")),
        "{report}"
    );
}

/// `exiftool -q -overwrite_original ARGS FILE`, which must succeed.
fn exiftool_write(file: &Path, args: &[&str]) {
    let st = std::process::Command::new("exiftool")
        .args(["-q", "-overwrite_original"])
        .args(args)
        .arg(file)
        .status()
        .expect("exiftool (scripts/install-deps.sh installs it)");
    assert!(st.success(), "exiftool {args:?}");
}

/// Packs `album` at the default target, which must code all its `n` images (none kept) at
/// SSIMULACRA2 ≥ 90, and unpacks the archive into `out`.
fn pack_all_coded(album: &Path, archive: &Path, out: &Path, n: usize) {
    let err = pack_with(&[], album, archive);
    assert!(!err.contains("kept as is:"), "{err}");
    let v = verify_json(archive, album);
    assert_eq!(v["images"].as_array().unwrap().len(), n, "all coded: {v}");
    assert!(v["min"].as_f64().unwrap() >= 90.0, "{v}");
    unpack(archive, out);
}

#[test]
fn ls_and_info_describe_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("album.mkv");
    pack_coded(&archive);
    let o = run(&[os("ls"), archive.as_os_str()]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), files(&sample_album()).len());
    let bar = lines
        .iter()
        .find(|l| l.ends_with(" 2006/bar55.jpg"))
        .unwrap();
    assert!(bar.starts_with("image"), "{bar}");
    assert!(bar.contains("800x600"), "{bar}");
    assert!(bar.contains(" 102097 "), "original size in {bar}");
    let readme = lines
        .iter()
        .find(|l| l.ends_with(" notes/README.md"))
        .unwrap();
    assert!(readme.starts_with("file"), "{readme}");

    let o = run(&[os("info"), os("--json"), archive.as_os_str()]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Every image is coded (the icon with its alpha plane) but the three scanned pages,
    // whose PNG files with their pixels recoded are smaller than their frames; the README is
    // kept as is.
    assert_eq!(v["images"], 6);
    assert_eq!(v["verbatim"], 4);
    assert_eq!(v["verbatim_png"], 3);
    assert_eq!(v["png_groups"], 1);
    assert_eq!(v["alpha_tracks"].as_array().unwrap().len(), 1);
    let original: u64 = files(&sample_album())
        .iter()
        .map(|r| sample_album().join(r))
        .filter(|p| p.is_file())
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert_eq!(v["original_bytes"], original);
    assert_eq!(v["archive_bytes"], archive.metadata().unwrap().len());
    assert_eq!(v["settings"]["codec"], "libx264");
}

#[test]
fn edge_cases_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let album = edge_album(tmp.path());
    // A phone's HEIF photo (its first box; no decoder here reads HEIF) and a JPEG XL.
    let heic = [&[0, 0, 0, 24][..], b"ftypheic\0\0\0\0mif1heic", &[7; 64]].concat();
    std::fs::write(album.join("IMG_0001.HEIC"), heic).unwrap();
    std::fs::write(album.join("scan.jxl"), [0xFF, 0x0A, 0xFA, 0x7F, 1, 2, 3]).unwrap();
    let archive = tmp.path().join("edge.mkv");
    let o = run(&[os("pack"), album.as_os_str(), archive.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    // Each file kept as is is reported once, with the reason.
    for (name, why) in [
        ("truncated.jpg", "truncated JPEG"),
        ("empty.jpg", "empty file"),
        (
            "sixteen-bit.tif",
            "16 bits a sample (coded frames would keep 8)",
        ),
        ("animated.gif", "GIF"),
        ("palette.png", "PNG with a palette"),
        ("bilevel.png", "1, 2 or 4 bits a pixel"),
        ("fax.tif", "TIFF of 1, 2 or 4 bits a sample"),
        ("print.tif", "CMYK TIFF"),
        ("profile.bmp", "BMP with a colour profile"),
        ("tail.webp", "3 bytes after the WebP's end"),
        (
            "IMG_2001.dng",
            "TIFF with a reduced-resolution first image, DNG tags",
        ),
        ("palette.bmp", "BMP with a palette"),
        ("cut short.png", "unreadable image header"),
        ("notes.txt", "not an image"),
        (
            "IMG_0001.HEIC",
            "HEIF image (HEIC), which av1pack does not decode",
        ),
        ("scan.jxl", "JPEG XL image, which av1pack does not decode"),
    ] {
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(name)).collect();
        assert_eq!(lines.len(), 1, "{name} in {err}");
        assert!(lines[0].contains(why), "{name}: {}", lines[0]);
    }
    // Without such metadata, TIFF, WebP and BMP images are coded; a TIFF's resolution and
    // Artist travel with it.
    for name in ["scan.tiff", "scanned.tif", "web.webp", "bitmap.bmp"] {
        assert!(
            !err.contains(&format!("kept as is: {name}")),
            "{name}: {err}"
        );
    }
    let out = tmp.path().join("restored");
    unpack(&archive, &out);
    // Tiny images are scored on an enlarged copy; the target holds for them too.
    assert_same_tree(&album, &out, 90.0);
    let grey = image::open(out.join("grey.png")).unwrap();
    assert_eq!(grey.color(), image::ColorType::L8, "grey stays grey");
    for name in [
        "bitmap.bmp",
        "scan.tiff",
        "web.webp",
        "photo.jpg",
        "grey.png",
    ] {
        let (orig, back) = (
            std::fs::read(album.join(name)).unwrap(),
            std::fs::read(out.join(name)).unwrap(),
        );
        assert_eq!(
            image::guess_format(&back).unwrap(),
            image::guess_format(&orig).unwrap(),
            "{name} keeps its format"
        );
    }
    // Transparency survives in every kind of PNG that has it (alpha compared exactly above).
    for (name, color) in [
        ("alpha.png", image::ColorType::Rgba8),
        ("grey alpha.png", image::ColorType::La8),
        ("palette.png", image::ColorType::Rgba8),
    ] {
        let img = image::open(out.join(name)).unwrap();
        assert_eq!(img.color(), color, "{name}");
    }
    let deep = image::open(out.join("sixteen-bit.png")).unwrap();
    assert_eq!(deep.color(), image::ColorType::L16, "16 bits stay 16 bits");
    assert_eq!(std::fs::read(out.join("empty.jpg")).unwrap().len(), 0);
    // Coded, a palette PNG would come back as RGBA, several times its size: it is kept.
    for name in [
        "palette.png",
        "bilevel.png",
        "fax.tif",
        "sixteen-bit.tif",
        "print.tif",
        "profile.bmp",
        "tail.webp",
        "IMG_2001.dng",
        "palette.bmp",
    ] {
        assert!(
            std::fs::read(out.join(name)).unwrap() == std::fs::read(album.join(name)).unwrap(),
            "{name} comes back as it was"
        );
    }
}

/// A scanner's TIFFs (300 dpi, an Artist, Software, an ICC profile, XMP), one of them with
/// EXIF, GPS and IPTC written by exiftool, are coded at the target, not kept, and come back
/// with the same tags.
#[test]
fn scanned_tiffs_are_coded_and_keep_their_tags() {
    use tiff::decoder::Decoder;
    use tiff::tags::Tag;
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("scans");
    std::fs::create_dir(&album).unwrap();
    for (k, name) in ["2005/anne_helene.jpg", "2006/bar55.jpg"]
        .iter()
        .enumerate()
    {
        let rgb = image::open(sample_album().join(name)).unwrap().to_rgb8();
        write_scanner_tiff(&album.join(format!("scan {k}.tif")), &rgb);
    }
    exiftool_write(
        &album.join("scan 1.tif"),
        &[
            "-DateTimeOriginal=2020:01:01 10:00:00",
            "-ExposureTime=1/125",
            "-Make=Canon",
            "-GPSLatitude=48.85",
            "-GPSLatitudeRef=N",
            "-InteropIndex=R98",
            "-IPTC:Keywords=holiday",
        ],
    );
    let out = tmp.path().join("restored");
    pack_all_coded(&album, &tmp.path().join("scans.mkv"), &out, 2);
    let tags = |path: &Path| {
        let mut d = Decoder::new(std::fs::File::open(path).unwrap()).unwrap();
        let mut get = |t: Tag| d.get_tag(t).unwrap();
        (
            get(Tag::XResolution),
            get(Tag::YResolution),
            get(Tag::ResolutionUnit),
            get(Tag::Artist).into_string().unwrap(),
            get(Tag::Software).into_string().unwrap(),
            get(Tag::Unknown(34675)).into_u8_vec().unwrap(),
            get(Tag::Unknown(700)).into_u8_vec().unwrap(),
        )
    };
    for k in 0..2 {
        let name = format!("scan {k}.tif");
        let back = tags(&out.join(&name));
        assert_eq!(back, tags(&album.join(&name)), "{name}");
        assert_eq!(back.3, "A. Photographer");
        assert_eq!(back.5, SCANNER_ICC);
        // Smaller than the original: a Deflate TIFF of the decoded pixels.
        let (orig, restored) = (
            album.join(&name).metadata().unwrap().len(),
            out.join(&name).metadata().unwrap().len(),
        );
        assert!(restored < orig * 11 / 10, "{name}: {restored} vs {orig}");
    }
    // exiftool sees the same tags (the pixel layout aside), EXIF and GPS included.
    assert_same_tags(&album, &out, 2);
    let exif = std::process::Command::new("exiftool")
        .args(["-s3", "-GPSLatitudeRef", "-InteropIndex", "-Keywords"])
        .arg(out.join("scan 1.tif"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&exif.stdout),
        "North\nR98 - DCF basic file (sRGB)\nholiday\n"
    );
}

/// Photos as lossless WebP with an ICC profile, and EXIF and XMP written by exiftool, are
/// coded at the target, not kept, and come back with the same chunks.
#[test]
fn webp_photos_are_coded_with_their_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("webp");
    std::fs::create_dir(&album).unwrap();
    for (k, name) in ["2005/skagen.jpg", "2006/bar55_2.jpg"].iter().enumerate() {
        let rgb = image::open(sample_album().join(name)).unwrap().to_rgb8();
        let path = album.join(format!("photo {k}.webp"));
        write_webp_with_chunks(&path, &rgb, &[(*b"ICCP", &SCANNER_ICC[..])]);
        exiftool_write(
            &path,
            &[
                "-Artist=A. Photographer",
                "-DateTimeOriginal=2020:01:01 10:00:00",
                "-XMP:Title=Holiday",
            ],
        );
    }
    let out = tmp.path().join("restored");
    pack_all_coded(&album, &tmp.path().join("webp.mkv"), &out, 2);
    let chunks = |p: &Path| av1pack::meta::webp_blocks(&std::fs::read(p).unwrap());
    for k in 0..2 {
        let name = format!("photo {k}.webp");
        let (a, b) = (chunks(&album.join(&name)), chunks(&out.join(&name)));
        assert_eq!(a.len(), 3, "ICC, EXIF and XMP: {a:?}");
        assert_eq!(a, b, "{name}");
    }
    assert_same_tags(&album, &out, 2);
}

#[test]
fn format_png_gives_pixel_exact_decoded_images() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.mkv");
    // Low quality on purpose, so that every photo is coded rather than kept as is.
    pack_coded(&archive);
    let out = tmp.path().join("png");
    let o = run(&[
        os("unpack"),
        os("--format"),
        os("png"),
        archive.as_os_str(),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let photo = out.join("2006/bar55.png");
    assert_eq!(
        image::guess_format(&std::fs::read(&photo).unwrap()).unwrap(),
        image::ImageFormat::Png
    );
    // The PNG holds exactly what was decoded: the same pixels the renderer starts from.
    let archive = av1pack::archive::Archive::open(&archive).unwrap();
    let i = archive
        .index
        .entries
        .iter()
        .position(|e| e.path == b"2006/bar55.jpg")
        .unwrap();
    let src = av1pack::frames::source::FrameSource::new(
        std::sync::Arc::new(archive),
        av1pack::frames::source::SourceOptions {
            format: av1pack::render::OutputFormat::Png,
            ..Default::default()
        },
    );
    let served = src.file(i).unwrap();
    assert!(served.as_slice() == std::fs::read(&photo).unwrap().as_slice());
    let s = quality::score(
        &rgb_of(&sample_album().join("2006/bar55.jpg")),
        &rgb_of(&photo),
    )
    .unwrap();
    // The photo itself, not another frame (coded at --crf 26: about 54).
    assert!(s.ssimulacra2 > 45.0, "{s:?}");
    assert!(
        out.join("notes/README.md").is_file(),
        "non-images keep their names"
    );
}

#[test]
fn packing_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.mkv"), tmp.path().join("b.mkv"));
    pack(&sample_album(), &a);
    pack(&sample_album(), &b);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "same input, same bytes"
    );
}

/// The quality loop codes a group again at a higher rate when an image falls short; the
/// retried sessions must give the same bytes every time too (they did not on CPUs with
/// AVX-512 until libx264 was kept off its AVX-512 code: docs/FORMAT.md, "Determinism").
#[test]
fn packs_whose_groups_are_coded_again_are_repeatable() {
    let tmp = tempfile::tempdir().unwrap();
    let album = noisy_album(tmp.path(), 12);
    let packs: Vec<(Vec<u8>, String)> = (0..3)
        .map(|k| {
            let dest = tmp.path().join(format!("{k}.mkv"));
            let log = pack_with(&["-vv"], &album, &dest);
            (std::fs::read(&dest).unwrap(), log)
        })
        .collect();
    let (first, log) = &packs[0];
    assert!(
        log.contains("trying higher quality"),
        "no group was coded again, so this tests nothing: {log}"
    );
    let info = run(&[
        os("info"),
        os("--json"),
        tmp.path().join("0.mkv").as_os_str(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let frames: u64 = v["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[2].as_u64().unwrap())
        .sum();
    assert!(frames > 0, "the photos are coded, not kept: {v}");
    for (k, (bytes, _)) in packs.iter().enumerate().skip(1) {
        assert!(bytes == first, "pack {k} differs from pack 0");
    }
}

#[test]
fn archive_is_a_valid_matroska_video() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.mkv");
    pack(&sample_album(), &archive);
    // FFmpeg's own demuxer and decoder read every track.
    let o = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&archive)
        .args(["-map", "0", "-f", "null", "-"])
        .output()
        .expect("ffmpeg is installed by scripts/install-deps.sh");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "ffmpeg complained: {}", stderr(&o));
}

#[test]
fn verify_reports_scores_and_thresholds() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.mkv");
    pack(&sample_album(), &archive);
    let v = verify_json(&archive, &sample_album());
    let info = run(&[os("info"), os("--json"), archive.as_os_str()]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let coded = info["images"].as_u64().unwrap();
    assert!(coded >= 1, "{info}");
    assert_eq!(v["summary"]["count"].as_u64().unwrap(), coded);
    assert_eq!(
        v["verbatim_identical"].as_u64().unwrap(),
        info["verbatim"].as_u64().unwrap()
    );
    // Pack's promise, checked independently: every coded image is visually lossless.
    let min = v["min"].as_f64().unwrap();
    assert!(min >= 90.0, "min {min}");
    // An impossible threshold fails with exit code 3 and says so.
    let o = run(&[
        os("verify"),
        os("--min-score"),
        os("100.5"),
        archive.as_os_str(),
        sample_album().as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains(&format!("{coded} images scored below 100.5")),
        "{}",
        stderr(&o)
    );
    // A changed original is noticed.
    let changed = tmp.path().join("changed");
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(sample_album())
        .arg(&changed)
        .output()
        .unwrap();
    assert!(o.status.success());
    std::fs::write(changed.join("notes/README.md"), b"edited").unwrap();
    // So is a file added to the folder since it was packed.
    std::fs::create_dir(changed.join("later")).unwrap();
    std::fs::write(changed.join("later/added.txt"), b"new").unwrap();
    let o = run(&[os("verify"), archive.as_os_str(), changed.as_os_str()]);
    assert_eq!(o.status.code(), Some(3));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("notes/README.md: stored bytes differ"),
        "{out}"
    );
    for added in ["later", "later/added.txt"] {
        assert!(
            out.contains(&format!(
                "problem: {added}: in the folder, not in the archive"
            )),
            "{out}"
        );
    }
    assert!(
        stderr(&o).contains("3 files differ, are missing or could not be checked"),
        "{}",
        stderr(&o)
    );
}

// ---- bad input: one clear message naming the path, a documented exit code, nothing left ----

fn assert_fails(args: &[&OsStr], code: i32, needles: &[&str]) -> String {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: expected {n:?} in {err:?}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("av1pack-partial") || n.ends_with(".mkv"))
        .collect()
}

#[test]
fn bad_input_to_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dest = t.join("out.mkv");
    let missing = t.join("no-such-album");
    assert_fails(
        &[os("pack"), missing.as_os_str(), dest.as_os_str()],
        1,
        &["no-such-album", "No such file"],
    );
    let empty = t.join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_fails(
        &[os("pack"), empty.as_os_str(), dest.as_os_str()],
        1,
        &["empty", "nothing to pack"],
    );
    let a_file = t.join("file.txt");
    std::fs::write(&a_file, b"x").unwrap();
    assert_fails(
        &[os("pack"), a_file.as_os_str(), dest.as_os_str()],
        1,
        &["file.txt", "not a directory"],
    );
    let nodir = t.join("missing-dir/out.mkv");
    assert_fails(
        &[os("pack"), sample_album().as_os_str(), nodir.as_os_str()],
        1,
        &["missing-dir", "does not exist"],
    );
    assert!(leftovers(t).is_empty(), "{:?}", leftovers(t));
    // An existing archive is not replaced without --force.
    std::fs::write(&dest, b"precious").unwrap();
    assert_fails(
        &[os("pack"), sample_album().as_os_str(), dest.as_os_str()],
        1,
        &["out.mkv", "already exists", "--force"],
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
    pack_with(&["--force"], &sample_album(), &dest);
    assert_eq!(leftovers(t), vec!["out.mkv".to_string()]);
    // Never replaced, even with --force: a folder, a device, a named pipe (refused before any
    // work, and left as they were).
    let folder = t.join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    let fifo = t.join("a-fifo");
    let c =
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(fifo.as_os_str())).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let device = Path::new("/dev/null");
    let album = sample_album();
    for (what, path) in [
        ("is a folder", folder.as_path()),
        ("is a named pipe", fifo.as_path()),
        ("is a device", device),
    ] {
        for force in [false, true] {
            let mut args = vec![os("pack")];
            if force {
                args.push(os("--force"));
            }
            args.extend([album.as_os_str(), path.as_os_str()]);
            assert_fails(&args, 1, &[&path.display().to_string(), what]);
        }
    }
    assert!(folder.is_dir() && std::fs::read_dir(&folder).unwrap().next().is_none());
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::metadata(device)
        .unwrap()
        .file_type()
        .is_char_device());
    std::fs::remove_file(&fifo).unwrap();
    std::fs::remove_dir(&folder).unwrap();
    // Bad settings are refused before any work.
    assert_fails(
        &[
            os("pack"),
            os("--gop"),
            os("0"),
            sample_album().as_os_str(),
            t.join("g.mkv").as_os_str(),
        ],
        2,
        &["--gop"],
    );
    assert_fails(
        &[
            os("pack"),
            os("--preset"),
            os("warp"),
            sample_album().as_os_str(),
            t.join("g.mkv").as_os_str(),
        ],
        2,
        &["warp", "preset"],
    );
    // Encoder options are key=value pairs (wrong usage otherwise, exit 2 like clap's).
    assert_fails(
        &[
            os("pack"),
            os("--encoder-params"),
            os("aq-mode=3:no-equals"),
            sample_album().as_os_str(),
            t.join("g.mkv").as_os_str(),
        ],
        2,
        &["--encoder-params", "\"no-equals\" is not key=value"],
    );
    assert!(!t.join("g.mkv").exists());
    assert_fails(&[os("pack"), os("--bogus")], 2, &["--bogus"]);
}

#[test]
fn unreadable_file_stops_pack_with_its_name() {
    // Permissions do not stop root, so the unreadable case runs as an unprivileged user.
    let tmp = tempfile::Builder::new()
        .prefix("av1pack-unreadable")
        .tempdir_in("/tmp")
        .unwrap();
    let t = tmp.path();
    let album = t.join("album");
    std::fs::create_dir(&album).unwrap();
    pattern(64, 48, 1).save(album.join("ok.png")).unwrap();
    std::fs::write(album.join("secret.jpg"), b"not for you").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        album.join("secret.jpg"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o777)).unwrap();
    let is_root = unsafe { libc::geteuid() } == 0;
    let dest = t.join("out.mkv");
    let o = if is_root {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_av1pack"))
            .arg("pack")
            .arg(&album)
            .arg(&dest)
            .output()
            .expect("setpriv (util-linux)")
    } else {
        run(&[os("pack"), album.as_os_str(), dest.as_os_str()])
    };
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("secret.jpg") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(leftovers(t).is_empty(), "{:?}", leftovers(t));
}

#[test]
fn bad_input_to_unpack_and_friends() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let not_archive = t.join("photo.mkv");
    std::fs::write(&not_archive, b"this is not a video").unwrap();
    let out = t.join("out");
    for cmd in ["unpack", "ls", "info"] {
        let mut args = vec![os(cmd), not_archive.as_os_str()];
        if cmd == "unpack" {
            args.push(out.as_os_str());
        }
        assert_fails(&args, 1, &["photo.mkv", "not an av1pack archive"]);
    }
    assert!(!out.exists(), "nothing created for a bad archive");
    let missing = t.join("missing.mkv");
    assert_fails(
        &[os("ls"), missing.as_os_str()],
        1,
        &["missing.mkv", "No such file"],
    );
    // A real Matroska file that av1pack did not make.
    let foreign = t.join("foreign.mkv");
    let o = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:duration=0.2",
            "-c:v",
            "libx264",
        ])
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_fails(
        &[os("info"), foreign.as_os_str()],
        1,
        &["foreign.mkv", "not an av1pack archive"],
    );
    // A zero-byte file.
    let zero = t.join("zero.mkv");
    std::fs::write(&zero, b"").unwrap();
    assert_fails(
        &[os("ls"), zero.as_os_str()],
        1,
        &["zero.mkv", "not an av1pack archive"],
    );
    // Unpacking into a folder that is not empty needs --force.
    let archive = t.join("a.mkv");
    pack(&sample_album(), &archive);
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"mine").unwrap();
    assert_fails(
        &[os("unpack"), archive.as_os_str(), out.as_os_str()],
        1,
        &["out", "not empty", "--force"],
    );
    assert_eq!(files(&out).len(), 1);
}

#[test]
fn truncated_archive_is_refused_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.mkv");
    pack(&sample_album(), &archive);
    let bytes = std::fs::read(&archive).unwrap();
    let listing = run(&[os("ls"), archive.as_os_str()]).stdout;
    // The first copy of the index is where a cut starts to lose everything (see the Damage
    // section of docs/FORMAT.md); after it, the listing survives.
    let index_end = av1pack::archive::Archive::open(&archive)
        .unwrap()
        .index_range()
        .end as usize;
    for cut in [
        10,
        100,
        index_end / 2,
        index_end - 1,
        bytes.len() - 1000,
        bytes.len() - 1,
    ] {
        let t = tmp.path().join(format!("cut{cut}.mkv"));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        let o = run(&[os("ls"), t.as_os_str()]);
        assert!(!stderr(&o).contains("panicked"));
        if cut < index_end {
            assert_eq!(o.status.code(), Some(1), "cut at {cut}: {}", stderr(&o));
            assert!(
                stderr(&o).contains(&format!("cut{cut}.mkv")),
                "{}",
                stderr(&o)
            );
        } else {
            assert_eq!(o.status.code(), Some(0), "cut at {cut}: {}", stderr(&o));
            assert_eq!(o.stdout, listing, "cut at {cut}");
        }
    }
}

#[test]
fn huge_images_are_tiled_without_seams() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("huge");
    std::fs::create_dir_all(&album).unwrap();
    // A 24 MP image (over the 16.8 MP tile limit) and a 20000 px wide strip.
    pattern(6000, 4000, 11)
        .save(album.join("24mp.png"))
        .unwrap();
    pattern(20000, 300, 12)
        .save(album.join("strip.png"))
        .unwrap();
    let archive = tmp.path().join("huge.mkv");
    // Coded once at a fixed high quality (the scoring below is what is checked), kept
    // quick for the suite.
    pack_with(&["--crf", "6", "--preset", "ultrafast"], &album, &archive);
    let a = av1pack::archive::Archive::open(&archive).unwrap();
    let tiles = |name: &[u8]| {
        let e = a.index.entries.iter().find(|e| e.path == name).unwrap();
        match &e.kind {
            av1pack::archive::EntryKind::Image(img) => img.tiles.len(),
            other => panic!("{} not coded: {other:?}", e.path_lossy()),
        }
    };
    assert_eq!(tiles(b"24mp.png"), 2);
    assert_eq!(tiles(b"strip.png"), 5);
    // Every tile and every band across a seam scores as visually lossless.
    let o = run(&[
        os("verify"),
        os("--json"),
        os("--min-score"),
        os("90"),
        archive.as_os_str(),
        album.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for img in v["images"].as_array().unwrap() {
        let seam = img["seam"].as_f64().expect("seams scored");
        assert!(seam >= 90.0, "{img}");
        assert!(img["ssimulacra2"].as_f64().unwrap() >= 90.0, "{img}");
    }
    // Unpack puts the tiles back together into whole images (verify scored the same files).
    let out = tmp.path().join("restored");
    unpack(&archive, &out);
    for (name, w, h) in [("24mp.png", 6000, 4000), ("strip.png", 20000, 300)] {
        assert_eq!(
            image::image_dimensions(out.join(name)).unwrap(),
            (w, h),
            "{name}"
        );
    }
}

#[test]
fn exif_orientation_travels_with_unturned_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir_all(&album).unwrap();
    let photo = album.join("turned.jpg");
    std::fs::copy(sample_album().join("2005/skagen.jpg"), &photo).unwrap();
    // Mark the photo "rotate 90° clockwise to display" (EXIF Orientation 6).
    let o = std::process::Command::new("exiftool")
        .args(["-q", "-overwrite_original", "-n", "-Orientation=6"])
        .arg(&photo)
        .output()
        .expect("exiftool (scripts/install-deps.sh installs it)");
    assert!(o.status.success(), "{}", stderr(&o));
    let archive = tmp.path().join("a.mkv");
    // Low quality, so that the photo is coded (its EXIF counts twice against its frame).
    pack_with(&["--crf", "26"], &album, &archive);
    let out = tmp.path().join("out");
    unpack(&archive, &out);
    let back = out.join("turned.jpg");
    assert_ne!(
        std::fs::read(&photo).unwrap(),
        std::fs::read(&back).unwrap()
    );
    let orientation = |p: &Path| {
        let o = std::process::Command::new("exiftool")
            .args(["-s3", "-n", "-Orientation"])
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(orientation(&back), "6");
    // The pixels are stored as the file holds them: same dimensions, not turned twice.
    assert_eq!(
        image::image_dimensions(&back).unwrap(),
        image::image_dimensions(&photo).unwrap()
    );
    // Turned pixels would score near 0 (and have other dimensions).
    let s = quality::score(&rgb_of(&photo), &rgb_of(&back)).unwrap();
    assert!(s.ssimulacra2 > 45.0, "{s:?}");
}

#[test]
fn lossless_quality_gives_every_pixel_back() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(sample_album())
        .arg(&album)
        .output()
        .unwrap();
    assert!(o.status.success());
    // A burst of near-identical frames: where lossless video pays.
    std::fs::create_dir_all(album.join("burst")).unwrap();
    for i in 0..6u32 {
        let mut img = pattern(320, 200, 3);
        for y in 50..90 {
            for x in (20 + i * 30)..(60 + i * 30) {
                img.put_pixel(x, y, image::Rgb([250, 30, (i * 40) as u8]));
            }
        }
        img.save(album.join(format!("burst/{i}.png"))).unwrap();
    }
    let archive = tmp.path().join("a.mkv");
    let err = pack_with(&["--quality", "lossless"], &album, &archive);
    assert!(
        err.contains("bar55.jpg (lossless mode keeps JPEG files as they are"),
        "{err}"
    );
    let o = run(&[os("info"), os("--json"), archive.as_os_str()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["settings"]["pix_fmt"], "gbrp");
    assert!(
        v["images"].as_u64().unwrap() >= 6,
        "the burst is coded: {v}"
    );
    let out = tmp.path().join("out");
    unpack(&archive, &out);
    for rel in files(&album) {
        let (a, b) = (album.join(&rel), out.join(&rel));
        if !a.is_file() {
            continue;
        }
        let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        if ba == bb {
            continue;
        }
        assert!(image::guess_format(&ba).is_ok(), "{}", rel.display());
        // Coded images: the same pixels and the same alpha, exactly.
        assert_eq!(picture_of(&a), picture_of(&b), "{}", rel.display());
    }
}

/// PNGs of 16 bits a sample (editors' exports, screenshots) are coded at the target like the
/// 8-bit ones and come back as PNGs of 16 bits and the same colour type, each sample the
/// decoded 8-bit one × 257. Lossless mode keeps them as they are.
#[test]
fn sixteen_bit_pngs_are_coded_and_come_back_with_sixteen_bits() {
    use av1pack::archive::{ColorModel, EntryKind};
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("exports");
    std::fs::create_dir(&album).unwrap();
    let photo = image::open(sample_album().join("2006/bar55.jpg")).unwrap();
    write_16_bit_png(&album.join("colour.png"), &photo.to_rgb8(), true);
    let portrait = image::open(sample_album().join("2005/anne_helene.jpg")).unwrap();
    write_16_bit_png(&album.join("grey.png"), &portrait.to_rgb8(), false);
    let archive = tmp.path().join("exports.mkv");
    pack(&album, &archive);
    let a = av1pack::archive::Archive::open(&archive).unwrap();
    for (name, color) in [
        ("colour.png", ColorModel::Rgb16),
        ("grey.png", ColorModel::Grey16),
    ] {
        match &entry(&a, name).kind {
            EntryKind::Image(img) => {
                assert_eq!(img.color, color, "{name}");
                assert!(img.score.is_some_and(|s| s >= 90.0), "{name}: {img:?}");
            }
            other => panic!("{name} is not coded: {other:?}"),
        }
    }
    let out = tmp.path().join("restored");
    unpack(&archive, &out);
    // Names, times, sizes, alpha (as 8 bits) and a score of at least 90 against the original.
    assert_same_tree(&album, &out, 90.0);
    for (name, color) in [
        ("colour.png", image::ColorType::Rgba16),
        ("grey.png", image::ColorType::L16),
    ] {
        let back = image::open(out.join(name)).unwrap();
        assert_eq!(back.color(), color, "{name}");
        let samples = match back {
            image::DynamicImage::ImageRgba16(i) => i.into_raw(),
            image::DynamicImage::ImageLuma16(i) => i.into_raw(),
            other => panic!("{name}: {:?}", other.color()),
        };
        assert!(samples.iter().all(|v| v % 257 == 0), "{name}");
    }
    // The nearly opaque band (65267) comes back as 254 × 257, the transparent corner as 0.
    let back = image::open(out.join("colour.png")).unwrap().into_rgba16();
    assert_eq!(back.get_pixel(400, 100)[3], 254 * 257);
    assert_eq!(back.get_pixel(5, 5)[3], 0);
    let v = verify_json(&archive, &album);
    assert_eq!(v["images"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["min"].as_f64().unwrap() >= 90.0, "{v}");

    let lossless = tmp.path().join("lossless.mkv");
    let err = pack_with(&["--quality", "lossless"], &album, &lossless);
    for name in ["colour.png", "grey.png"] {
        assert!(
            err.contains(&format!(
                "{name} (lossless mode keeps images of 16 bits a sample as they are"
            )),
            "{name}: {err}"
        );
    }
    let out = tmp.path().join("lossless");
    unpack(&lossless, &out);
    for name in ["colour.png", "grey.png"] {
        assert!(
            std::fs::read(out.join(name)).unwrap() == std::fs::read(album.join(name)).unwrap(),
            "{name} comes back as it was"
        );
    }
}

#[test]
fn metadata_counts_as_often_as_it_is_stored() {
    // A photo carrying 60 KB of metadata that no coder can shrink (an APP9 segment of
    // noise): its coded frame is small, but the metadata goes into the index, which the
    // archive holds twice. Coding it would make the archive larger than the file.
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir_all(&album).unwrap();
    let jpeg = std::fs::read(sample_album().join("2005/anne_helene.jpg")).unwrap();
    let mut noise = Vec::with_capacity(60_000);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while noise.len() < 60_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    noise.truncate(60_000);
    let mut file = jpeg[..2].to_vec();
    file.extend_from_slice(&[0xFF, 0xE9]);
    file.extend_from_slice(&(noise.len() as u16 + 2).to_be_bytes());
    file.extend_from_slice(&noise);
    file.extend_from_slice(&jpeg[2..]);
    std::fs::write(album.join("tagged.jpg"), &file).unwrap();
    let archive = tmp.path().join("a.mkv");
    // A low rate: the frame alone costs far less than the file.
    pack_with(&["--crf", "30"], &album, &archive);
    let size = std::fs::metadata(&archive).unwrap().len();
    assert!(
        size < file.len() as u64,
        "archive {size} bytes for a {} byte file",
        file.len()
    );
    let a = av1pack::archive::Archive::open(&archive).unwrap();
    assert!(
        matches!(
            a.index.entries[0].kind,
            av1pack::archive::EntryKind::Verbatim { .. }
        ),
        "kept as a file"
    );
    let out = tmp.path().join("out");
    unpack(&archive, &out);
    assert_eq!(std::fs::read(out.join("tagged.jpg")).unwrap(), file);
}

/// Each of `rels` has the same bytes under `a` as under `b`.
fn assert_same_files<P: AsRef<Path>>(a: &Path, b: &Path, rels: impl IntoIterator<Item = P>) {
    for rel in rels {
        let rel = rel.as_ref();
        assert_eq!(
            std::fs::read(a.join(rel)).unwrap(),
            std::fs::read(b.join(rel)).unwrap(),
            "{}",
            rel.display()
        );
    }
}

/// Flips one byte in the middle of `range` of `archive` (a kept file's stored bytes): unpack
/// exits 4 naming `name` and restores every other file of `album` (`rels`) bit for bit.
fn damaged_kept_file_is_named(
    tmp: &Path,
    archive: &Path,
    album: &Path,
    range: std::ops::Range<u64>,
    name: &str,
    rels: &[PathBuf],
) {
    damaged_kept_files_are_named(tmp, archive, album, range, &[name], rels);
}

/// The same for bytes that several files share (a group of recoded PNGs): unpack names each
/// of `names` and restores every other file.
fn damaged_kept_files_are_named(
    tmp: &Path,
    archive: &Path,
    album: &Path,
    range: std::ops::Range<u64>,
    names: &[&str],
    rels: &[PathBuf],
) {
    let mut bytes = std::fs::read(archive).unwrap();
    bytes[(range.start + range.end) as usize / 2] ^= 0x40;
    let damaged = tmp.join("damaged.mkv");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = tmp.join("out-damaged");
    let o = run(&[os("unpack"), damaged.as_os_str(), out.as_os_str()]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    for name in names {
        assert!(stderr(&o).contains(name), "{name}: {}", stderr(&o));
    }
    let others: Vec<&PathBuf> = rels
        .iter()
        .filter(|r| !names.contains(&&*r.to_string_lossy()))
        .collect();
    assert_eq!(others.len() + names.len(), rels.len());
    assert_same_files(album, &out, others);
}

#[test]
fn kept_jpegs_are_stored_smaller_and_come_back_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir_all(&album).unwrap();
    let jpegs: Vec<PathBuf> = files(&sample_album())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    assert!(jpegs.len() >= 3);
    let mut originals = 0u64;
    for rel in &jpegs {
        let name = rel.file_name().unwrap();
        std::fs::copy(sample_album().join(rel), album.join(name)).unwrap();
        originals += std::fs::metadata(album.join(name)).unwrap().len();
    }
    let archive = tmp.path().join("a.mkv");
    // Lossless mode keeps JPEG files as they are.
    pack_with(&["--quality", "lossless"], &album, &archive);
    let size = std::fs::metadata(&archive).unwrap().len();
    // Lepton saves about a fifth on camera JPEGs; the archive's own overhead is a few KB.
    assert!(
        (size as f64) < 0.92 * originals as f64,
        "archive {size} bytes for {originals} bytes of JPEG files"
    );
    let a = av1pack::archive::Archive::open(&archive).unwrap();
    let mut victim = None;
    for e in &a.index.entries {
        if let av1pack::archive::EntryKind::Verbatim { blob, .. } = &e.kind {
            assert!(!blob.is_stored(), "{} is stored as Lepton", e.path_lossy());
            assert!(blob.len < blob.file_size());
            victim.get_or_insert((e.path_lossy(), a.blob_range(blob)));
        }
    }
    let out = tmp.path().join("out");
    unpack(&archive, &out);
    assert_same_files(&album, &out, files(&album));
    let o = run(&[os("verify"), archive.as_os_str(), album.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!(
            "{} files kept as is, identical to the originals",
            jpegs.len()
        )),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // One flipped byte in a stored JPEG: unpack names it, exits 4, restores the others.
    let (name, range) = victim.unwrap();
    damaged_kept_file_is_named(tmp.path(), &archive, &album, range, &name, &files(&album));
}

/// The sample's scanned pages (PNG files written by zlib) are kept with their pixels recoded,
/// in one group compressed together: at the default quality that is smaller than their
/// frames, at a third of the files or less, and unpack, verify and the mount's reader give the
/// files back bit for bit. A flipped byte in the group is named by unpack for each page in it;
/// the file beside them comes back.
#[test]
fn kept_pngs_are_recoded_smaller_and_come_back_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let album = sample_scans(tmp.path(), "album");
    let pages = files(&album);
    assert_eq!(pages.len(), 3);
    let originals: u64 = pages
        .iter()
        .map(|p| std::fs::metadata(album.join(p)).unwrap().len())
        .sum();
    std::fs::write(album.join("notes.txt"), b"scanned at 300 dpi\n").unwrap();
    let archive = tmp.path().join("a.mkv");
    pack_with(&[], &album, &archive);
    let size = std::fs::metadata(&archive).unwrap().len();
    assert!(
        size * 3 < originals,
        "archive {size} bytes for {originals} bytes of PNG files"
    );
    let a = av1pack::archive::Archive::open(&archive).unwrap();
    let mut group = None;
    let mut recoded = Vec::new();
    for e in &a.index.entries {
        let av1pack::archive::EntryKind::Verbatim { blob, .. } = &e.kind else {
            continue;
        };
        if e.path_lossy() == "notes.txt" {
            continue;
        }
        assert!(
            matches!(blob.coding, av1pack::archive::BlobCoding::PngGrouped { .. }),
            "{}: {:?}",
            e.path_lossy(),
            blob.coding
        );
        // All three pages in one group, which is a third of the pages or less.
        assert_eq!(*group.get_or_insert(a.blob_range(blob)), a.blob_range(blob));
        assert!(blob.len * 3 < originals, "{}", e.path_lossy());
        let original = std::fs::read(album.join(e.path_lossy())).unwrap();
        assert_eq!(a.read_file(blob).unwrap(), original, "{}", e.path_lossy());
        recoded.push(e.path_lossy());
    }
    assert_eq!(recoded.len(), 3);
    let out = tmp.path().join("out");
    unpack(&archive, &out);
    assert_same_files(&album, &out, files(&album));
    let o = run(&[os("verify"), archive.as_os_str(), album.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("4 files kept as is, identical to the originals"),
        "{text}"
    );
    let o = run(&[os("info"), archive.as_os_str()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("3 PNGs with their pixels LZMA-recoded (in 1 group)"),
        "{text}"
    );
    // Three files share the group's bytes; they are not copies of each other.
    assert!(!text.contains("copies:"), "{text}");
    let names: Vec<&str> = recoded.iter().map(String::as_str).collect();
    damaged_kept_files_are_named(
        tmp.path(),
        &archive,
        &album,
        group.unwrap(),
        &names,
        &files(&album),
    );
}

/// Kept files that compress (a sidecar's text, an uncompressed 16-bit TIFF) are stored
/// zstd-compressed, checked, and come back bit for bit; incompressible ones are stored as they
/// are. A flipped byte in a compressed one is named by unpack, which restores the others.
#[test]
fn compressible_kept_files_are_stored_smaller_and_come_back_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir_all(album.join("sidecars")).unwrap();
    let xmp: String = (0..3000)
        .map(|i| format!("<rdf:li xmp:Rating=\"{}\">IMG_{i:04}.JPG</rdf:li>\n", i % 5))
        .collect();
    std::fs::write(album.join("sidecars/album.xmp"), &xmp).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..150_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(album.join("noise.bin"), &noise).unwrap();
    // 16-bit images are kept as they are; the image crate writes TIFF uncompressed. A scan:
    // white paper around a patch of detail.
    let deep = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(300, 200, |x, y| {
        if (100..160).contains(&x) && (50..90).contains(&y) {
            image::Rgb([(x * 200) as u16, (y * 300) as u16, ((x + y) * 100) as u16])
        } else {
            image::Rgb([65535, 65535, 65000])
        }
    });
    deep.save(album.join("deep.tif")).unwrap();
    let kept: Vec<PathBuf> = files(&album)
        .into_iter()
        .filter(|r| album.join(r).is_file())
        .collect();
    let originals: u64 = kept
        .iter()
        .map(|r| std::fs::metadata(album.join(r)).unwrap().len())
        .sum();
    let archive = tmp.path().join("a.mkv");
    pack(&album, &archive);
    let a = av1pack::archive::Archive::open(&archive).unwrap();
    let coding = |name: &str| {
        let e = a
            .index
            .entries
            .iter()
            .find(|e| e.path_lossy() == name)
            .unwrap();
        match &e.kind {
            av1pack::archive::EntryKind::Verbatim { blob, .. } => (blob.coding, a.blob_range(blob)),
            other => panic!("{name} is not kept as a file: {other:?}"),
        }
    };
    use av1pack::archive::BlobCoding;
    for name in ["sidecars/album.xmp", "deep.tif"] {
        let (c, _) = coding(name);
        assert!(matches!(c, BlobCoding::Zstd { .. }), "{name}: {c:?}");
    }
    assert_eq!(coding("noise.bin").0, BlobCoding::Stored);
    let size = std::fs::metadata(&archive).unwrap().len();
    // The text alone shrinks by more than 100 KB; the noise does not shrink.
    assert!(
        size + 100_000 < originals,
        "archive {size} bytes for {originals} bytes of files"
    );
    let out = tmp.path().join("out");
    unpack(&archive, &out);
    assert_same_files(&album, &out, &kept);
    let o = run(&[os("verify"), archive.as_os_str(), album.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("3 files kept as is, identical to the originals"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // One flipped byte in the compressed sidecar.
    let (_, range) = coding("sidecars/album.xmp");
    damaged_kept_file_is_named(
        tmp.path(),
        &archive,
        &album,
        range,
        "sidecars/album.xmp",
        &kept,
    );
}

/// A write that fails (here: a file size limit, as a full disk would) is reported as the
/// archive's, never as one of the album's files, and leaves no partial archive behind.
#[test]
fn a_failed_write_is_blamed_on_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir(&album).unwrap();
    // Bytes that do not compress, kept as they are: more than the limit below.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..400_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(album.join("noise.bin"), noise).unwrap();
    let dest = tmp.path().join("out.mkv");
    // 200 blocks of 512 bytes (dash) or 1024 (bash): under 400 KB either way. SIGXFSZ is
    // ignored so that the write fails with EFBIG instead of killing the process.
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 200; trap '' XFSZ; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_av1pack"))
        .arg("pack")
        .arg(&album)
        .arg(&dest)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("into {}", dest.display()))
            && err.contains("writing the archive")
            && err.contains("File too large"),
        "{err}"
    );
    assert!(!err.contains("noise.bin"), "blames an album file: {err}");
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

/// What pack cannot keep (a named pipe) is named as it is met and counted in the summary;
/// the rest is packed; copies are counted in words that fit their number.
#[test]
fn pack_names_what_it_does_not_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir(&album).unwrap();
    pattern(64, 48, 1).save(album.join("a.png")).unwrap();
    std::fs::copy(album.join("a.png"), album.join("b.png")).unwrap();
    let fifo = album.join("pipe");
    let c =
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(fifo.as_os_str())).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let dest = tmp.path().join("a.mkv");
    let o = run(&[
        os("pack"),
        os("--crf"),
        os("20"),
        album.as_os_str(),
        dest.as_os_str(),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for needle in [
        "pipe: skipped: not a regular file, folder or symlink",
        "not packed: 1 item",
        "1 file is a copy of another",
        "packed 2 files",
    ] {
        assert!(err.contains(needle), "expected {needle:?} in {err}");
    }
    let out = tmp.path().join("out");
    let o = run(&[os("unpack"), dest.as_os_str(), out.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.png", "b.png"]);
}

/// An archive written into the album it packs is not packed into itself: packed again with
/// `--force`, it holds the album's files only (not its previous version, nor the unfinished
/// file of another pack of that name), and verify does not count it as a file of the folder.
#[test]
fn an_archive_inside_its_album_leaves_itself_out() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir(&album).unwrap();
    pattern(64, 48, 1).save(album.join("a.png")).unwrap();
    std::fs::write(album.join("notes.txt"), "kept").unwrap();
    let dest = album.join("album.mkv");
    let names = |archive: &Path| {
        let out = tmp.path().join("out");
        let _ = std::fs::remove_dir_all(&out);
        unpack(archive, &out);
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    pack(&album, &dest);
    assert_eq!(names(&dest), ["a.png", "notes.txt"]);
    let first = std::fs::metadata(&dest).unwrap().len();
    // Another pack's unfinished archive of the same name, beside it.
    let partial = album.join(".album.mkv.x1y2z3.av1pack-partial");
    std::fs::write(&partial, b"half an archive").unwrap();
    let log = pack_with(&["--force", "-v"], &album, &dest);
    for needle in [
        "album.mkv: left out: the archive itself",
        "album.mkv.x1y2z3.av1pack-partial: left out: an unfinished archive of the same name",
    ] {
        assert!(log.contains(needle), "expected {needle:?} in {log}");
    }
    assert_eq!(names(&dest), ["a.png", "notes.txt"]);
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), first);
    assert!(
        partial.exists(),
        "another pack's file is not removed while young"
    );
    let v = verify_json(&dest, &album);
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
    // Any other folder's archive is an ordinary file of the album.
    std::fs::remove_file(&partial).unwrap();
    let other = tmp.path().join("other.mkv");
    pack(&album, &other);
    assert_eq!(names(&other), ["a.png", "album.mkv", "notes.txt"]);
}

/// Hard links come back as hard links: two names of one file are one file again after unpack
/// (one inode, two links), an image's as well as a kept file's, while a copy with the same
/// bytes stays a file of its own. Both are stored once.
#[test]
fn hard_links_come_back_as_links() {
    let tmp = tempfile::tempdir().unwrap();
    let album = hard_linked_album(tmp.path());
    let archive = tmp.path().join("a.mkv");
    pack_with(&["--crf", "20"], &album, &archive);
    let out = tmp.path().join("out");
    unpack(&archive, &out);
    let meta = |rel: &str| std::fs::metadata(out.join(rel)).unwrap();
    for (first, other) in [
        ("a.png", "sub/a (link).png"),
        ("notes.txt", "sub/notes.txt"),
    ] {
        assert_eq!(meta(first).ino(), meta(other).ino(), "{other}");
        assert_eq!(meta(first).nlink(), 2, "{first}");
    }
    assert_ne!(meta("copy.txt").ino(), meta("notes.txt").ino());
    assert_eq!(meta("copy.txt").nlink(), 1);
    assert_eq!(
        std::fs::read(out.join("sub/notes.txt")).unwrap(),
        b"the same notes"
    );
    assert_eq!(
        std::fs::read(out.join("sub/a (link).png")).unwrap(),
        std::fs::read(out.join("a.png")).unwrap()
    );
    let o = run(&[os("info"), archive.as_os_str()]);
    let info = String::from_utf8_lossy(&o.stdout);
    assert!(
        info.contains(
            "3 files stored once with an earlier file of the same bytes (2 of them hard links"
        ),
        "{info}"
    );
}

/// Names that are not UTF-8 or hold a newline are escaped in `-v` lines as in warnings: one
/// line per file, and two names that differ only there stay apart.
#[test]
fn verbose_lines_escape_names() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("odd");
    std::fs::create_dir(&album).unwrap();
    std::fs::write(album.join(OsStr::from_bytes(b"caf\xe9.txt")), "a").unwrap();
    std::fs::write(album.join(OsStr::from_bytes(b"caf\xc3.txt")), "b").unwrap();
    std::fs::write(album.join(OsStr::from_bytes(b"new\nline.txt")), "c").unwrap();
    let log = pack_with(&["-v"], &album, &tmp.path().join("a.mkv"));
    for name in ["caf\\xe9.txt", "caf\\xc3.txt", "new\\nline.txt"] {
        let line = format!("odd/{name}: stored as is: not an image");
        assert!(
            log.lines().any(|l| l.ends_with(&line)),
            "no line {line:?} in {log}"
        );
    }
    assert!(!log.contains('\u{fffd}'), "{log}");
}

/// Photos saved as PNG (the sample's four JPEG photos, decoded) are coded as 10-bit Y'CbCr:
/// every one at 90 or more. In 8 bits the colour conversion alone kept one of them below 90
/// at any rate (kept as its file), and the archive was 1.9 times as large (737 KB, 386 KB).
#[test]
fn photos_in_png_are_all_coded_to_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let album = photos_as_png(tmp.path());
    let archive = tmp.path().join("a.mkv");
    pack(&album, &archive);
    let v = verify_json(&archive, &album);
    assert_eq!(v["images"].as_array().unwrap().len(), 4, "all coded: {v}");
    assert!(v["min"].as_f64().unwrap() >= 90.0, "{v}");
    assert_ten_bit_tracks(&archive);
}

/// JPEGs that video does not beat are recoded in their own DCT at the default target: each
/// comes back a smaller JPEG of the same size in pixels and the same tags, scoring ≥ 90
/// against the original in pack, `verify` and a test's own scoring; a JPEG with data after its
/// image (a motion photo's video) comes back bit for bit, as every JPEG does with
/// `--exact-jpegs`.
/// `--quality high` keeps JPEGs recoded in their own DCT where that is smaller than their
/// frames coded at 80: the choice between frames and files counts the recoded size, not only
/// the Lepton form. Before, a burst whose frames at 80 beat its Lepton form was all coded as
/// video even where the recoded files were smaller (the 1080p burst corpus came out at 2.18 MB
/// with `high`, larger than its 1.78 MB at the default).
#[test]
fn high_quality_keeps_recoded_jpegs_smaller_than_their_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("burst");
    std::fs::create_dir_all(&album).unwrap();
    let scene = photo(1000, 700, 3, 4.0);
    for i in 0..4u32 {
        let frame = image::imageops::crop_imm(&scene, 6 * i, 3 * i, 960, 640).to_image();
        let mut out = std::fs::File::create(album.join(format!("frame_{i}.jpg"))).unwrap();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(&frame)
            .unwrap();
    }
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    // Frames or exact files only: here the frames at 80 beat the files' Lepton form.
    let frames = tmp.path().join("frames.mkv");
    let log = pack_with(&["--quality", "high", "--exact-jpegs"], &album, &frames);
    assert!(log.contains("4 images as video"), "{log}");
    let high = tmp.path().join("high.mkv");
    let log = pack_with(&["--quality", "high"], &album, &high);
    assert!(log.contains("recoded smaller in their own DCT"), "{log}");
    assert!(
        size(&high) < size(&frames),
        "high {} bytes, as frames {}",
        size(&high),
        size(&frames)
    );
    let default = tmp.path().join("default.mkv");
    pack_with(&[], &album, &default);
    assert!(size(&high) <= size(&default), "{}", size(&default));
    let v = verify_json(&high, &album);
    assert!(v["min"].as_f64().unwrap() >= 80.0, "{v}");
}

#[test]
fn fine_jpegs_are_recoded_in_their_own_dct_at_the_quality_target() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir_all(&album).unwrap();
    for i in 0..3 {
        let p = album.join(format!("IMG_{i}.jpg"));
        write_fine_jpeg(&p, 960, 640, i);
        exiftool_write(
            &p,
            &[
                "-Artist=A. Photographer",
                "-Orientation#=6",
                "-Comment=kept",
            ],
        );
    }
    let motion = album.join("motion.jpg");
    write_fine_jpeg(&motion, 960, 640, 7);
    let mut bytes = std::fs::read(&motion).unwrap();
    bytes.extend_from_slice(b"\0\0\0\x18ftypmp42 the video of a motion photo");
    bytes.extend((0..100_000u32).map(|i| ((i * 7919) >> 3) as u8));
    std::fs::write(&motion, &bytes).unwrap();
    // A newline after the image's end (some tools write one): recoded, and given back with it.
    let newline = album.join("newline.jpg");
    write_fine_jpeg(&newline, 960, 640, 8);
    let mut bytes = std::fs::read(&newline).unwrap();
    bytes.push(b'\n');
    std::fs::write(&newline, &bytes).unwrap();

    let exact = tmp.path().join("exact.mkv");
    pack_with(&["--exact-jpegs"], &album, &exact);
    let out_exact = tmp.path().join("out-exact");
    unpack(&exact, &out_exact);
    assert_same_files(&album, &out_exact, files(&album));

    let archive = tmp.path().join("a.mkv");
    let err = pack_with(&[], &album, &archive);
    assert!(
        err.contains("4 JPEGs recoded smaller in their own DCT"),
        "{err}"
    );
    let (small, big) = (
        std::fs::metadata(&archive).unwrap().len(),
        std::fs::metadata(&exact).unwrap().len(),
    );
    assert!(small * 10 < big * 9, "{small} bytes recoded, {big} exact");
    // The search's first guess comes from files stored before, never from files recoded side
    // by side: the same album gives the same archive.
    let again = tmp.path().join("again.mkv");
    pack_with(&[], &album, &again);
    assert!(
        std::fs::read(&archive).unwrap() == std::fs::read(&again).unwrap(),
        "packing again gave another archive"
    );

    let out = tmp.path().join("out");
    unpack(&archive, &out);
    assert_same_files(&album, &out, ["motion.jpg"]);
    let a = av1pack::archive::Archive::open(&archive).unwrap();
    let names = (0..3).map(|i| format!("IMG_{i}.jpg"));
    for name in names.chain(["newline.jpg".to_string()]) {
        let (orig, back) = (album.join(&name), out.join(&name));
        let (o, b) = (std::fs::read(&orig).unwrap(), std::fs::read(&back).unwrap());
        assert_ne!(o, b, "{name} recoded");
        assert!(
            b.len() < o.len(),
            "{name}: {} of {} bytes",
            b.len(),
            o.len()
        );
        let end: &[u8] = match name.as_str() {
            "newline.jpg" => b"\xFF\xD9\n",
            _ => b"\xFF\xD9",
        };
        assert!(b.starts_with(&[0xFF, 0xD8]) && b.ends_with(end), "{name}");
        assert_looks_the_same(&orig, &back, 90.0);
        // The index records the file given back and its score; ls shows the original's size.
        let e = entry(&a, &name);
        let av1pack::archive::EntryKind::Verbatim { blob, reason } = &e.kind else {
            panic!("{name} kept as a file");
        };
        let av1pack::archive::BlobCoding::JpegThinned {
            size,
            score_centi,
            original_size,
            ..
        } = blob.coding
        else {
            panic!("{name}: {:?}", blob.coding);
        };
        assert_eq!(size, b.len() as u64);
        assert_eq!(original_size, o.len() as u64);
        assert!(score_centi >= 9000, "{name}: {score_centi}");
        // The entry records no reason of its own (the coding says it); ls describes it.
        assert_eq!(reason, "");
        assert!(blob
            .describe(reason)
            .starts_with("JPEG recoded smaller in its own DCT (SSIMULACRA2 9"));
        assert_eq!(e.original_size(), o.len() as u64);
        assert_eq!(e.served_size(), b.len() as u64);
    }
    // EXIF (orientation, artist) and the comment travel with the pixels.
    assert_same_tags(&album, &out, 5);

    let v = verify_json(&archive, &album);
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 4, "{v}");
    assert!(v["min"].as_f64().unwrap() >= 90.0, "{v}");
    let o = run(&[os("verify"), archive.as_os_str(), album.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[os("info"), archive.as_os_str()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("4 JPEGs recoded smaller in their own DCT (SSIMULACRA2 min 9"),
        "{text}"
    );
    let o = run(&[os("ls"), os("--json"), archive.as_os_str()]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reasons: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .filter(|r| r.starts_with("JPEG recoded smaller in its own DCT (SSIMULACRA2 9"))
        .collect();
    assert_eq!(reasons.len(), 4, "{listed}");
}

/// A burst of JPEGs: after the first, frames are stored as their difference from the frame
/// before, a fifth smaller at least, and come back exactly as recoded (the hash the index records), each
/// scoring at least 90 against its original.
#[test]
fn a_jpeg_burst_is_stored_frame_against_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("album");
    std::fs::create_dir_all(&album).unwrap();
    write_jpeg_burst(&album, 5);
    let archive = tmp.path().join("a.mkv");
    let log = pack_with(&["-v"], &album, &archive);
    // The frames differ by noise: a frame against the one before is recoded toward it (its
    // thinning spent where it makes their difference zero), and says so.
    let toward = log
        .lines()
        .filter(|l| l.contains("recoded toward the file before"))
        .count();
    assert!(
        toward >= 1,
        "no frame recoded toward the one before:\n{log}"
    );
    let a = av1pack::archive::Archive::open(&archive).unwrap();
    let blob = |i: u32| {
        let name = format!("frame_{i}.jpg");
        match &entry(&a, &name).kind {
            av1pack::archive::EntryKind::Verbatim { blob, .. } => *blob,
            other => panic!("{name}: {other:?}"),
        }
    };
    let mut deltas = 0;
    let offsets: Vec<u64> = (0..5).map(|i| blob(i).offset).collect();
    // What a frame stored alone takes (the first of the chain is).
    let alone = (0..5)
        .map(blob)
        .filter(|b| matches!(b.coding, av1pack::archive::BlobCoding::JpegThinned { .. }))
        .map(|b| b.len)
        .max()
        .expect("the first frame is stored alone");
    for i in 0..5 {
        let b = blob(i);
        match b.coding {
            av1pack::archive::BlobCoding::JpegThinned { .. } => {}
            av1pack::archive::BlobCoding::JpegThinnedDelta { reference, .. } => {
                deltas += 1;
                assert!(
                    offsets.contains(&reference),
                    "frame_{i} against another file"
                );
                assert!(reference < b.offset, "frame_{i} against a later blob");
                assert!(
                    b.len * 10 < alone * 8,
                    "frame_{i}: {} bytes, {alone} alone",
                    b.len
                );
            }
            other => panic!("frame_{i}: {other:?}"),
        }
    }
    assert!(deltas >= 3, "{deltas} frames stored against another");
    // Frames that end with a newline after the image are stored against another too.
    for i in [2, 3] {
        assert!(
            matches!(
                blob(i).coding,
                av1pack::archive::BlobCoding::JpegThinnedDelta { .. }
            ),
            "frame_{i}"
        );
    }
    let out = tmp.path().join("out");
    unpack(&archive, &out);
    for i in 0..5 {
        let name = format!("frame_{i}.jpg");
        let back = std::fs::read(out.join(&name)).unwrap();
        assert_eq!(back.len() as u64, blob(i).file_size(), "{name}");
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(&back),
            blob(i).file_hash(),
            "{name}"
        );
        assert_looks_the_same(&album.join(&name), &out.join(&name), 90.0);
        // The newline after two frames' images ends them as it ended their originals.
        let end: &[u8] = if i == 2 || i == 3 {
            b"\xFF\xD9\n"
        } else {
            b"\xFF\xD9"
        };
        assert!(back.ends_with(end), "{name}");
    }
    // Any one file alone (a chain read from the start), as the mount and verify read them.
    for i in (0..5).rev() {
        let fresh = av1pack::archive::Archive::open(&archive).unwrap();
        let back = fresh.read_file(&blob(i)).unwrap();
        assert!(
            back == std::fs::read(out.join(format!("frame_{i}.jpg"))).unwrap(),
            "frame_{i}"
        );
    }
    let v = verify_json(&archive, &album);
    assert!(v["min"].as_f64().unwrap() >= 90.0, "{v}");
    let o = run(&[os("info"), archive.as_os_str()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "({deltas} as their difference from a similar one)"
        )),
        "{text}"
    );
}
