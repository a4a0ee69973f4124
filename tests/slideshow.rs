//! The archive as a slideshow, through the real binary and real players: chapters as ffprobe
//! sees them, the container's crop, mpv playing it headless, `av1pack play`.

mod common;

use av1pack::archive::mkv::{self, id};
use av1pack::archive::{Archive, EntryKind};
use common::*;
use std::ffi::OsStr;
use std::path::Path;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Packs the sample album with its pages coded as video (`album_with_video_pages`, in the
/// folder of `dest`), coded once at `--crf 18`: the icon and the three pages go through the codec,
/// the photos (Lepton) and the screenshot (recoded PNG) are kept smaller as files.
fn pack_slides(dest: &Path, slide: &str) {
    let album = album_with_video_pages(dest.parent().unwrap());
    let o = run(&[
        os("pack"),
        os("--crf"),
        os("18"),
        os("--slide-seconds"),
        os(slide),
        album.as_os_str(),
        dest.as_os_str(),
    ]);
    assert!(o.status.success(), "pack failed: {}", stderr(&o));
}

/// Coded images in timeline order (tracks in Matroska order, frames in order): path,
/// width, height.
fn coded_images(archive: &Path) -> Vec<(String, u32, u32)> {
    let a = Archive::open(archive).unwrap();
    let mut v: Vec<(u32, u64, String, u32, u32)> = a
        .index
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Image(img) => {
                let tile = img.tiles.first()?;
                let number = a.index.tracks[tile.track as usize].number;
                Some((number, tile.frame, e.path_lossy(), img.width, img.height))
            }
            _ => None,
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, p, w, h)| (p, w, h)).collect()
}

fn ffprobe_json(archive: &Path, what: &str) -> serde_json::Value {
    let o = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-of", "json", what])
        .arg(archive)
        .output()
        .expect("ffprobe is installed by scripts/install-deps.sh");
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn ffprobe_shows_one_chapter_per_image_with_its_path_and_duration() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.mkv");
    pack_slides(&archive, "2.5");
    let images = coded_images(&archive);
    assert!(
        images.len() >= 4,
        "the sample codes several images: {images:?}"
    );

    let v = ffprobe_json(&archive, "-show_chapters");
    let chapters = v["chapters"].as_array().unwrap();
    assert_eq!(chapters.len(), images.len(), "{v}");
    for (k, (c, (path, _, _))) in chapters.iter().zip(&images).enumerate() {
        assert_eq!(c["tags"]["title"].as_str(), Some(path.as_str()), "{c}");
        let start: f64 = c["start_time"].as_str().unwrap().parse().unwrap();
        let end: f64 = c["end_time"].as_str().unwrap().parse().unwrap();
        assert!((start - 2.5 * k as f64).abs() < 1e-6, "{c}");
        assert!((end - start - 2.5).abs() < 1e-6, "{c}");
    }
    let v = ffprobe_json(&archive, "-show_format");
    let duration: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(
        (duration - 2.5 * images.len() as f64).abs() < 1e-3,
        "duration {duration}"
    );
    // Every video track declares the slide as its frame duration.
    let v = ffprobe_json(&archive, "-show_streams");
    for s in v["streams"].as_array().unwrap() {
        if s["codec_type"] == "video" {
            assert_eq!(s["avg_frame_rate"].as_str(), Some("2/5"), "{s}");
        }
    }
}

/// PixelCropRight/Bottom of each TrackEntry, by track number, read with av1pack's own EBML
/// reader.
fn track_crops(archive: &Path) -> Vec<(u64, u64, u64, u64, u64)> {
    let file = std::fs::File::open(archive).unwrap();
    let bytes = std::fs::read(archive).unwrap();
    let ebml = mkv::read_header(&file, 0).unwrap();
    let segment = mkv::read_header(&file, ebml.end()).unwrap();
    let mut pos = segment.body_start;
    let mut out = Vec::new();
    while pos < segment.end() {
        let h = mkv::read_header(&file, pos).unwrap();
        if h.id == id::TRACKS {
            let body = &bytes[h.body_start as usize..h.end() as usize];
            for child in mkv::children(body) {
                let (cid, te) = child.unwrap();
                if cid != id::TRACK_ENTRY {
                    continue;
                }
                let (mut number, mut w, mut h, mut right, mut bottom) = (0, 0, 0, 0, 0);
                for f in mkv::children(te) {
                    let (fid, fb) = f.unwrap();
                    match fid {
                        id::TRACK_NUMBER => number = mkv::read_uint(fb).unwrap(),
                        id::VIDEO => {
                            for v in mkv::children(fb) {
                                let (vid, vb) = v.unwrap();
                                let n = mkv::read_uint(vb).unwrap();
                                match vid {
                                    id::PIXEL_WIDTH => w = n,
                                    id::PIXEL_HEIGHT => h = n,
                                    id::PIXEL_CROP_RIGHT => right = n,
                                    id::PIXEL_CROP_BOTTOM => bottom = n,
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                out.push((number, w, h, right, bottom));
            }
            break;
        }
        pos = h.end();
    }
    out
}

#[test]
fn tracks_crop_the_canvas_padding_when_their_images_share_a_size() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.mkv");
    pack_slides(&archive, "3");
    let a = Archive::open(&archive).unwrap();
    let crops = track_crops(&archive);
    assert_eq!(crops.len(), a.index.tracks.len());
    for (t, track) in a.index.tracks.iter().enumerate() {
        let sizes: std::collections::BTreeSet<(u32, u32)> = a
            .index
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Image(img) => img.tiles.first().map(|tile| (img, tile)),
                _ => None,
            })
            .filter(|(_, tile)| tile.track as usize == t)
            .map(|(img, tile)| {
                if tile.rotated {
                    (img.height, img.width)
                } else {
                    (img.width, img.height)
                }
            })
            .collect();
        let &(number, w, h, right, bottom) = crops
            .iter()
            .find(|c| c.0 == u64::from(track.number))
            .unwrap();
        assert_eq!((w, h), (u64::from(track.width), u64::from(track.height)));
        if sizes.len() == 1 {
            let (sw, sh) = *sizes.iter().next().unwrap();
            assert_eq!(
                (right, bottom),
                (w - u64::from(sw), h - u64::from(sh)),
                "track {number}"
            );
        } else {
            assert_eq!((right, bottom), (0, 0), "track {number}: mixed sizes");
        }
    }
    assert!(
        crops.iter().any(|c| c.3 > 0 || c.4 > 0),
        "the sample's images are smaller than their canvases: {crops:?}"
    );
}

#[test]
fn mpv_plays_the_archive_headless_without_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.mkv");
    pack_slides(&archive, "3");
    let o = std::process::Command::new("mpv")
        .args([
            "--no-config",
            "--vo=null",
            "--ao=null",
            "--untimed",
            "--msg-level=all=warn",
        ])
        .arg(&archive)
        .output()
        .expect("mpv is installed by scripts/install-deps.sh");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!out.to_lowercase().contains("error"), "mpv: {out}");
}

#[test]
fn play_shows_every_coded_image_upright_at_its_size() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.mkv");
    pack_slides(&archive, "3");
    let shots = tmp.path().join("shots");
    let o = run(&[
        os("play"),
        archive.as_os_str(),
        os("--"),
        os("--no-config"),
        os("--ao=null"),
        os("--untimed"),
        os("--vo=image"),
        os("--vo-image-format=png"),
        os(&format!("--vo-image-outdir={}", shots.display())),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let images = coded_images(&archive);
    let mut shot_files = files(&shots);
    shot_files.sort();
    assert_eq!(shot_files.len(), images.len(), "{shot_files:?}");
    for (shot, (path, w, h)) in shot_files.iter().zip(&images) {
        let img = image::open(shots.join(shot)).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (*w, *h),
            "{path} shown as {}",
            shot.display()
        );
    }
}

#[test]
fn play_without_mpv_says_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.mkv");
    pack_slides(&archive, "1");
    let o = bin()
        .env("PATH", tmp.path())
        .args([os("play"), archive.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("mpv is not installed"), "{err}");
    assert!(err.contains("a.mkv"), "{err}");
}

#[test]
fn slide_seconds_out_of_range_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&[
        os("pack"),
        os("--slide-seconds"),
        os("0"),
        sample_album().as_os_str(),
        tmp.path().join("a.mkv").as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--slide-seconds 0"), "{}", stderr(&o));
    assert!(!tmp.path().join("a.mkv").exists());
}

#[test]
fn play_refuses_an_archive_without_video() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("notes");
    std::fs::create_dir_all(&album).unwrap();
    std::fs::write(album.join("a.txt"), b"no images here\n").unwrap();
    let archive = tmp.path().join("notes.mkv");
    let o = run(&[os("pack"), album.as_os_str(), archive.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[os("play"), archive.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nothing to play"), "{}", stderr(&o));
    // Still a Matroska file FFmpeg reads without an error: no video, the file attached.
    let v = ffprobe_json(&archive, "-show_streams");
    let streams = v["streams"].as_array().unwrap();
    assert!(
        streams.iter().all(|s| s["codec_type"] == "attachment"),
        "{v}"
    );
    assert!(
        streams.iter().any(|s| s["tags"]["filename"] == "a.txt"),
        "{v}"
    );
}
