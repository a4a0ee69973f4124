//! The mount's frame source without FUSE: random access gives exactly unpack's bytes.

mod common;

use av1pack::archive::{Archive, EntryKind};
use av1pack::frames::source::{FrameSource, SourceOptions};
use av1pack::pack::{self, PackOptions, Quiet};
use av1pack::render::OutputFormat;
use av1pack::unpack::{self, UnpackOptions};
use common::*;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A series of similar images (one track, several GOPs) plus the sample album's files.
fn series_album(root: &Path) -> std::path::PathBuf {
    series_album_of(root, 19)
}

/// The sample album beside a burst of `n` images.
fn series_album_of(root: &Path, n: u32) -> std::path::PathBuf {
    let a = root.join("series");
    std::fs::create_dir_all(a.join("burst")).unwrap();
    for i in 0..n {
        let mut img = pattern(320, 200, 1);
        // A moving square: neighbours differ a little, like a burst.
        let left = 10 + (i * 12) % 250;
        for y in 40..90 {
            for x in left..left + 50 {
                img.put_pixel(x, y, image::Rgb([250, 30, (i * 12) as u8]));
            }
        }
        img.save(a.join(format!("burst/{i:03}.png"))).unwrap();
    }
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(sample_album())
        .arg(a.join("sample"))
        .output()
        .unwrap();
    assert!(o.status.success());
    a
}

/// Unpacks `archive` into `out` in the original formats.
fn unpack_to(archive: &Archive, out: &Path) -> unpack::UnpackReport {
    let u = UnpackOptions {
        format: OutputFormat::Original,
        force: false,
        threads: 2,
    };
    unpack::unpack(archive, out, &u, &Quiet).unwrap()
}

fn packed(root: &Path, gop: u32) -> (Arc<Archive>, std::path::PathBuf) {
    let album = series_album(root);
    let dest = root.join("s.mkv");
    let opts = PackOptions {
        gop,
        ..PackOptions::default()
    };
    let report = pack::pack(&album, &dest, &opts, &Quiet).unwrap();
    // The burst is coded as video (smaller than its PNG files at the target quality).
    assert!(report.images >= 19, "{report:?}");
    let restored = root.join("restored");
    let archive = Archive::open(&dest).unwrap();
    let report = unpack_to(&archive, &restored);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    (Arc::new(archive), restored)
}

/// `album` packed to `dest` at a fixed `crf`, GOPs of 4 frames, every image coded as video.
fn pack_gop4(album: &Path, dest: &Path, crf: f32) -> Arc<Archive> {
    let opts = PackOptions {
        gop: 4,
        crf: Some(crf),
        target: None,
        ..PackOptions::default()
    };
    pack::pack(album, dest, &opts, &Quiet).unwrap();
    Arc::new(Archive::open(dest).unwrap())
}

fn served_equals_unpacked(src: &FrameSource, restored: &Path, order: &[usize]) {
    let entries = &src.archive().index.entries;
    for &i in order {
        let e = &entries[i];
        if matches!(e.kind, EntryKind::Dir | EntryKind::Symlink { .. }) {
            continue;
        }
        let expected = std::fs::read(restored.join(e.path_lossy())).unwrap();
        let size = e.served_size();
        assert_eq!(
            size,
            expected.len() as u64,
            "{}: size known without decoding",
            e.path_lossy()
        );
        let got = src.read(i, 0, size as usize + 100).unwrap();
        assert!(
            got == expected,
            "{}: bytes differ from unpack",
            e.path_lossy()
        );
    }
}

#[test]
fn random_access_matches_unpack_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, restored) = packed(tmp.path(), 4);
    let n = archive.index.entries.len();
    // Reverse order: every read seeks backwards.
    let src = FrameSource::new(
        Arc::clone(&archive),
        SourceOptions {
            prefetch: 0,
            ..SourceOptions::default()
        },
    );
    let order: Vec<usize> = (0..n).rev().collect();
    served_equals_unpacked(&src, &restored, &order);
    // Reading again is served from the cache: nothing more is decoded.
    let decoded = src.stats().frames_decoded.load(Ordering::Relaxed);
    served_equals_unpacked(&src, &restored, &order);
    assert_eq!(src.stats().frames_decoded.load(Ordering::Relaxed), decoded);
}

#[test]
fn reading_in_order_decodes_each_frame_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, restored) = packed(tmp.path(), 4);
    let src = FrameSource::new(
        Arc::clone(&archive),
        SourceOptions {
            prefetch: 0,
            ..SourceOptions::default()
        },
    );
    let order: Vec<usize> = (0..archive.index.entries.len()).collect();
    served_equals_unpacked(&src, &restored, &order);
    let frames: usize = archive.index.tracks.iter().map(|t| t.packets.len()).sum();
    let decoded = src.stats().frames_decoded.load(Ordering::Relaxed) as usize;
    assert_eq!(
        decoded, frames,
        "sequential reading decodes every frame exactly once"
    );
}

#[test]
fn a_tiny_cache_still_serves_correct_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, restored) = packed(tmp.path(), 8);
    let src = FrameSource::new(
        Arc::clone(&archive),
        SourceOptions {
            cache_bytes: 300_000,
            max_decoders: 1,
            prefetch: 1,
            ..SourceOptions::default()
        },
    );
    let n = archive.index.entries.len();
    let order: Vec<usize> = (0..n).map(|i| (i * 7) % n).collect();
    served_equals_unpacked(&src, &restored, &order);
    assert!(src.cached_bytes() <= 300_000);
}

#[test]
fn eight_threads_in_random_order_get_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, restored) = packed(tmp.path(), 4);
    let src = Arc::new(FrameSource::new(
        Arc::clone(&archive),
        SourceOptions {
            cache_bytes: 2_000_000,
            max_decoders: 3,
            ..SourceOptions::default()
        },
    ));
    let n = archive.index.entries.len();
    std::thread::scope(|s| {
        for t in 0..8usize {
            let src = Arc::clone(&src);
            let restored = restored.clone();
            s.spawn(move || {
                // A different pseudo-random permutation per thread, with partial reads.
                let order: Vec<usize> = (0..n).map(|i| (i * (2 * t + 3) + t) % n).collect();
                for &i in &order {
                    let e = &src.archive().index.entries[i];
                    if matches!(e.kind, EntryKind::Dir | EntryKind::Symlink { .. }) {
                        continue;
                    }
                    let expected = std::fs::read(restored.join(e.path_lossy())).unwrap();
                    let off = (t as u64 * 977) % (expected.len() as u64).max(1);
                    let got = src.read(i, off, 4096).unwrap();
                    let end = (off as usize + 4096).min(expected.len());
                    assert_eq!(
                        got,
                        &expected[off as usize..end],
                        "{} at {off}",
                        e.path_lossy()
                    );
                }
            });
        }
    });
}

/// JPEG images (landscape, portrait, grey; 4:2:0 and 4:4:4, even and odd sizes) coded as
/// video: their files are made straight from the decoded Y'CbCr planes, by pack (to record the
/// sizes), unpack and the mount alike.
fn jpeg_album(root: &Path) -> std::path::PathBuf {
    let a = root.join("jpegs");
    std::fs::create_dir_all(&a).unwrap();
    let save = |img: image::DynamicImage, name: &str, subsamp: turbojpeg::Subsamp| {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (pixels, format, subsamp) = match img {
            image::DynamicImage::ImageLuma8(g) => (
                g.into_raw(),
                turbojpeg::PixelFormat::GRAY,
                turbojpeg::Subsamp::Gray,
            ),
            other => (
                other.into_rgb8().into_raw(),
                turbojpeg::PixelFormat::RGB,
                subsamp,
            ),
        };
        let image = turbojpeg::Image {
            pixels: &pixels[..],
            width: w,
            pitch: w * format.size(),
            height: h,
            format,
        };
        let jpeg = turbojpeg::compress(image, 95, subsamp).unwrap();
        std::fs::write(a.join(name), &*jpeg).unwrap();
    };
    for i in 0..8u32 {
        // Odd sizes for half of them: 4:2:0 chroma then has a half-filled last row and column.
        let (w, h) = if i % 2 == 0 { (320, 200) } else { (321, 201) };
        let subsamp = if i < 6 {
            turbojpeg::Subsamp::Sub2x2
        } else {
            turbojpeg::Subsamp::None
        };
        let mut img = pattern(w, h, 3);
        for y in 50..110 {
            for x in (10 + i * 20)..(70 + i * 20) {
                img.put_pixel(x, y, image::Rgb([240, 200, (i * 30) as u8]));
            }
        }
        save(
            image::DynamicImage::ImageRgb8(img.clone()),
            &format!("land{i}.jpg"),
            subsamp,
        );
        if i < 3 {
            let turned = image::imageops::rotate90(&img);
            save(
                image::DynamicImage::ImageRgb8(turned),
                &format!("port{i}.jpg"),
                subsamp,
            );
            let grey = image::DynamicImage::ImageRgb8(img).into_luma8();
            save(
                image::DynamicImage::ImageLuma8(grey),
                &format!("grey{i}.jpg"),
                subsamp,
            );
        }
    }
    a
}

/// Every image's served file: its size and checksum are the ones the index recorded.
fn assert_served_as_recorded(src: &FrameSource, order: &[usize]) -> usize {
    let mut images = 0;
    for &i in order {
        let e = &src.archive().index.entries[i];
        let EntryKind::Image(img) = &e.kind else {
            continue;
        };
        let got = src.read(i, 0, img.rendered.size as usize + 10).unwrap();
        assert_eq!(got.len() as u64, img.rendered.size, "{}", e.path_lossy());
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(&got),
            img.rendered.hash,
            "{}: served bytes are the ones pack recorded",
            e.path_lossy()
        );
        images += 1;
    }
    images
}

#[test]
fn jpegs_are_served_as_pack_recorded_from_the_decoded_planes() {
    let tmp = tempfile::tempdir().unwrap();
    let album = jpeg_album(tmp.path());
    let archive = pack_gop4(&album, &tmp.path().join("j.mkv"), 18.0);
    assert_eq!(archive.index.renderer, av1pack::render::RENDERER_ID);
    let coded = archive
        .index
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Image(_)))
        .count();
    assert_eq!(coded, 14, "every JPEG is coded as video");
    let restored = tmp.path().join("restored");
    let report = unpack_to(&archive, &restored);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        report.rendered_differently, 0,
        "unpack makes what pack recorded"
    );
    let n = archive.index.entries.len();
    let forward: Vec<usize> = (0..n).collect();
    let backward: Vec<usize> = (0..n).rev().collect();
    // In order with the prefetcher (files rendered from the frames the decoder hands out),
    // and backwards without it (planes cached on the way to a later frame).
    for (order, prefetch) in [(&forward, 2), (&backward, 0)] {
        let src = FrameSource::new(
            Arc::clone(&archive),
            SourceOptions {
                prefetch,
                ..SourceOptions::default()
            },
        );
        assert_eq!(assert_served_as_recorded(&src, order), 14);
        served_equals_unpacked(&src, &restored, order);
    }
    // The served JPEGs look like the originals, turned and grey ones included, and keep
    // their chroma sampling: 4:2:0 stays 4:2:0, 4:4:4 stays 4:4:4.
    let mut samplings = std::collections::BTreeMap::new();
    for e in &archive.index.entries {
        if matches!(e.kind, EntryKind::Image(_)) {
            let name = e.path_lossy();
            // At --crf 18 these noisy patterns score 72 to 88, 4:2:0 or not (measured).
            assert_looks_the_same(&album.join(&name), &restored.join(&name), 70.0);
            let sampling = |p: &Path| {
                turbojpeg::read_header(&std::fs::read(p).unwrap())
                    .unwrap()
                    .subsamp
            };
            let original = sampling(&album.join(&name));
            assert_eq!(sampling(&restored.join(&name)), original, "{name}");
            *samplings.entry(format!("{original:?}")).or_insert(0) += 1;
        }
    }
    assert_eq!(
        samplings.into_iter().collect::<Vec<_>>(),
        [("Gray".into(), 3), ("None".into(), 2), ("Sub2x2".into(), 9)],
        "the album has every kind"
    );
}

/// An archive packed by the renderer before this one (`av1pack-render-2`, kept in
/// tests/golden): unpack and the mount still make exactly the files it recorded.
#[test]
fn archives_of_the_previous_renderer_are_served_as_recorded() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/render-v2.mkv");
    let archive = Arc::new(Archive::open(Path::new(path)).unwrap());
    assert_eq!(archive.index.renderer, av1pack::render::RENDERER_V2_ID);
    let n = archive.index.entries.len();
    let src = FrameSource::new(Arc::clone(&archive), SourceOptions::default());
    let images = assert_served_as_recorded(&src, &(0..n).collect::<Vec<_>>());
    assert_eq!(images, 7, "landscape, portrait and grey JPEGs");
    let tmp = tempfile::tempdir().unwrap();
    let report = unpack_to(&archive, &tmp.path().join("out"));
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.rendered_differently, 0);
}

/// An archive of `av1pack-render-3` (kept in tests/golden: 4:2:0 JPEGs, landscape and
/// portrait, made by ffmpeg and packed by the build of 2026-12-01, index format 3): it opens, and
/// its JPEGs are served 4:4:4 as it recorded them (its index marks no image 4:2:0), each
/// exactly the size the index lists.
#[test]
fn archives_of_render_3_keep_their_4_4_4_jpegs() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/render-v3.mkv");
    let archive = Arc::new(Archive::open(Path::new(path)).unwrap());
    assert_eq!(archive.index.renderer, av1pack::render::RENDERER_V3_ID);
    let n = archive.index.entries.len();
    let src = FrameSource::new(Arc::clone(&archive), SourceOptions::default());
    assert_eq!(
        assert_served_as_recorded(&src, &(0..n).collect::<Vec<_>>()),
        6
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let report = unpack_to(&archive, &out);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.rendered_differently, 0);
    for e in &archive.index.entries {
        let bytes = std::fs::read(out.join(e.path_lossy())).unwrap();
        let sampling = turbojpeg::read_header(&bytes).unwrap().subsamp;
        assert_eq!(sampling, turbojpeg::Subsamp::None, "{}", e.path_lossy());
    }
}

/// Two readers of neighbouring JPEGs at the end of a GOP, arriving together: whichever
/// decodes, the other finds the planes that came out on the way and renders from them, so the
/// GOP is decoded once (before, the one that waited decoded the whole GOP again).
#[test]
fn two_readers_of_one_gop_share_its_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let album = jpeg_album(tmp.path());
    let archive = pack_gop4(&album, &tmp.path().join("j.mkv"), 18.0);
    let track = &archive.index.tracks[0];
    let gop_len = track
        .packets
        .iter()
        .skip(1)
        .position(|p| p.keyframe)
        .map_or(track.packets.len(), |i| i + 1);
    assert!(gop_len >= 2, "a GOP of {gop_len} frames");
    let on_frame = |f: u64| {
        archive
            .index
            .entries
            .iter()
            .position(|e| match &e.kind {
                EntryKind::Image(img) => img.tiles[0].track == 0 && img.tiles[0].frame == f,
                _ => false,
            })
            .unwrap()
    };
    let pair = [on_frame(gop_len as u64 - 2), on_frame(gop_len as u64 - 1)];
    for round in 0..6 {
        let src = FrameSource::new(
            Arc::clone(&archive),
            SourceOptions {
                prefetch: 0,
                ..SourceOptions::default()
            },
        );
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            for &entry in &pair {
                let (src, start) = (&src, &start);
                s.spawn(move || {
                    start.wait();
                    src.file(entry).unwrap()
                });
            }
        });
        assert_eq!(
            src.stats().frames_decoded.load(Ordering::Relaxed) as usize,
            gop_len,
            "round {round}: the GOP's {gop_len} frames decoded once"
        );
    }
}

/// Portrait images share a landscape canvas turned on their side; a canvas that only portrait
/// images use is turned itself and they are stored upright. Either way the mount and unpack
/// give them back upright, at their size, as recorded.
#[test]
fn portrait_images_alone_are_stored_upright() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("pages");
    std::fs::create_dir_all(&album).unwrap();
    for i in 0..3u32 {
        pattern(120, 160, i)
            .save(album.join(format!("page{i}.png")))
            .unwrap();
    }
    pattern(200, 150, 7).save(album.join("wide.png")).unwrap();
    pattern(150, 200, 8).save(album.join("tall.png")).unwrap();
    let archive = pack_gop4(&album, &tmp.path().join("p.mkv"), 14.0);
    let mut stored = std::collections::BTreeMap::new();
    for e in &archive.index.entries {
        if let EntryKind::Image(img) = &e.kind {
            let tile = img.tiles[0];
            let track = &archive.index.tracks[tile.track as usize];
            stored.insert(e.path_lossy(), (track.width, track.height, tile.rotated));
        }
    }
    let expected: std::collections::BTreeMap<String, (u32, u32, bool)> = [
        ("page0.png", (128, 160, false)),
        ("page1.png", (128, 160, false)),
        ("page2.png", (128, 160, false)),
        ("tall.png", (208, 160, true)),
        ("wide.png", (208, 160, false)),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    assert_eq!(
        stored, expected,
        "canvas (width, height) and turn of each image"
    );
    let n = archive.index.entries.len();
    let src = FrameSource::new(Arc::clone(&archive), SourceOptions::default());
    assert_eq!(
        assert_served_as_recorded(&src, &(0..n).collect::<Vec<_>>()),
        5
    );
    let restored = tmp.path().join("restored");
    let report = unpack_to(&archive, &restored);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for name in expected.keys() {
        assert_looks_the_same(&album.join(name), &restored.join(name), 75.0);
    }
}

/// A reader walking through a folder (starting on its first image, or reading the image after
/// the one it read) has the prefetchers decode the rest of its GOP and the next two GOPs whole,
/// and the render threads make their files; nothing beyond: prefetching follows the reader.
/// A reader at random gets only the next two files. Reading everything in order then decodes
/// every frame exactly once (a reader waits for a file rendered ahead instead of decoding it
/// again).
#[test]
fn the_next_gops_are_rendered_ahead_of_a_reader_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let album = series_album_of(tmp.path(), 40);
    let dest = tmp.path().join("s.mkv");
    let opts = PackOptions {
        gop: 8,
        crf: Some(18.0),
        target: None,
        order: av1pack::order::Order::Path,
        ..PackOptions::default()
    };
    pack::pack(&album, &dest, &opts, &Quiet).unwrap();
    let archive = Arc::new(Archive::open(&dest).unwrap());
    // The burst's 40 images, in archive order, are frames 0 to 39 of one track: five GOPs.
    let burst: Vec<usize> = (0..40)
        .map(|i| {
            let name = format!("burst/{i:03}.png");
            let k = archive
                .index
                .entries
                .iter()
                .position(|e| e.path_lossy() == name)
                .unwrap();
            let EntryKind::Image(img) = &archive.index.entries[k].kind else {
                panic!("{name} is not coded as an image");
            };
            assert_eq!(img.tiles[0].frame, i as u64, "{name}");
            assert_eq!(img.tiles[0].track, 0, "{name}");
            k
        })
        .collect();
    assert!(burst.windows(2).all(|w| w[1] == w[0] + 1));
    let keyframes: Vec<u64> = archive.index.tracks[0]
        .packets
        .iter()
        .filter(|p| p.keyframe)
        .map(|p| p.pts)
        .filter(|&f| f < 40)
        .collect();
    assert_eq!(keyframes, [0, 8, 16, 24, 32]);
    let read_with = |src: &FrameSource, k: usize| {
        let size = archive.index.entries[k].served_size() as usize;
        assert_eq!(src.read(k, 0, size).unwrap().len(), size);
    };
    // Waits until `files` files were rendered, then until the prefetchers have stopped.
    let settle = |src: &FrameSource, files: u64| {
        let stats = src.stats();
        let counts = || {
            (
                stats.frames_decoded.load(Ordering::Relaxed),
                stats.files_rendered.load(Ordering::Relaxed),
            )
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut last = counts();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let now = counts();
            assert!(
                std::time::Instant::now() < deadline,
                "{files} files not rendered in time: {now:?}"
            );
            if now == last && now.1 >= files {
                return now;
            }
            last = now;
        }
    };

    // At random: one image in the third GOP, then the next two files ahead of the reader.
    let src = FrameSource::new(Arc::clone(&archive), SourceOptions::default());
    read_with(&src, burst[19]);
    let (decoded, rendered) = settle(&src, 3);
    assert_eq!(rendered, 3, "the file read and the next two");
    assert!(
        decoded <= 8,
        "{decoded} frames decoded for a read at random: no further than its GOP"
    );
    drop(src);

    let src = FrameSource::new(Arc::clone(&archive), SourceOptions::default());
    // The folder's first image: the reader starts a walk, its GOP and the next two are
    // decoded and rendered ahead (frames 0 to 23), and no more.
    read_with(&src, burst[0]);
    let (decoded, rendered) = settle(&src, 24);
    assert_eq!(
        (decoded, rendered),
        (24, 24),
        "three GOPs decoded and rendered ahead, no further"
    );
    // Their files are ready: reading them in order comes from the cache, and asks for
    // nothing new until the reader enters the second GOP.
    for &k in &burst[1..8] {
        read_with(&src, k);
    }
    assert_eq!(
        settle(&src, 0),
        (24, 24),
        "nothing new within the first GOP"
    );
    // The second GOP's first image: the walk goes one GOP further (frames 24 to 31).
    read_with(&src, burst[8]);
    assert_eq!(settle(&src, 32), (32, 32), "one more GOP ahead, no further");
    let stats = src.stats();
    let order: Vec<usize> = (0..archive.index.entries.len()).collect();
    assert_served_as_recorded(&src, &order);
    let frames: u64 = archive
        .index
        .tracks
        .iter()
        .map(|t| t.packets.len() as u64)
        .sum();
    settle(&src, 0);
    assert_eq!(
        stats.frames_decoded.load(Ordering::Relaxed),
        frames,
        "reading in order with the prefetchers decodes every frame once"
    );
    // What the cache holds then is files: no frames are left in it.
    let files: u64 = archive
        .index
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Image(_) | EntryKind::Verbatim { .. }))
        .map(|e| e.served_size())
        .sum();
    assert!(
        src.cached_bytes() <= files,
        "{} bytes cached for {files} bytes of files",
        src.cached_bytes()
    );
}

/// Kept files stored compressed (the sample's scans, recoded PNGs in one group) are decoded
/// ahead of a reader like images: after the first page is read, the next two come from the
/// cache, with the original bytes.
#[test]
fn the_next_kept_pages_are_decoded_ahead_of_a_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let album = sample_scans(tmp.path(), "scans");
    let dest = tmp.path().join("s.mkv");
    pack::pack(&album, &dest, &PackOptions::default(), &Quiet).unwrap();
    let archive = Arc::new(Archive::open(&dest).unwrap());
    let pages: Vec<usize> = (0..archive.index.entries.len())
        .filter(|&k| {
            matches!(&archive.index.entries[k].kind,
                EntryKind::Verbatim { blob, .. } if !blob.is_stored())
        })
        .collect();
    assert_eq!(pages.len(), 3, "the scans are kept recoded");
    let src = FrameSource::new(Arc::clone(&archive), SourceOptions::default());
    let size = |k: usize| archive.index.entries[k].served_size();
    let read = |k: usize| {
        let bytes = src.read(k, 0, size(k) as usize).unwrap();
        let original = std::fs::read(album.join(archive.index.entries[k].path_lossy())).unwrap();
        assert_eq!(bytes, original, "{}", archive.index.entries[k].path_lossy());
    };
    read(pages[0]);
    let all: u64 = pages.iter().map(|&k| size(k)).sum();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while src.cached_bytes() < all {
        assert!(
            std::time::Instant::now() < deadline,
            "the next pages were not decoded ahead: {} of {all} bytes cached",
            src.cached_bytes()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let hits = src.stats().cache_hits.load(Ordering::Relaxed);
    read(pages[1]);
    read(pages[2]);
    assert_eq!(src.stats().cache_hits.load(Ordering::Relaxed), hits + 2);
}

/// Past the metadata budget the index may hold, an image is kept as it is, named with the
/// reason, rather than pack failing at the end with an index too large; the images within it
/// are coded with their tags.
#[test]
fn metadata_past_the_budget_keeps_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("scans");
    std::fs::create_dir(&album).unwrap();
    for (k, name) in ["2005/skagen.jpg", "2006/bar55.jpg", "2006/bar55_2.jpg"]
        .iter()
        .enumerate()
    {
        let photo = image::open(sample_album().join(name)).unwrap().to_rgb8();
        write_scanner_tiff(&album.join(format!("scan {k}.tif")), &photo);
    }
    let dest = tmp.path().join("s.mkv");
    let full = pack::pack(&album, &dest, &PackOptions::default(), &Quiet).unwrap();
    assert_eq!(full.images, 3, "{full:?}");
    let archive = Archive::open(&dest).unwrap();
    let per_image = match &archive.index.entries[0].kind {
        EntryKind::Image(img) => av1pack::archive::metadata_bytes(&img.metadata),
        other => panic!("{other:?}"),
    };
    assert!(per_image > 50, "{per_image}");
    // Room for two images' tags, not three.
    let opts = PackOptions {
        metadata_budget: 2 * per_image + per_image / 2,
        force: true,
        ..PackOptions::default()
    };
    let report = pack::pack(&album, &dest, &opts, &Quiet).unwrap();
    assert_eq!(report.images, 2, "{report:?}");
    assert_eq!(report.verbatim.len(), 1, "{report:?}");
    let (path, reason) = &report.verbatim[0];
    assert!(path.starts_with("scan "), "{path}");
    assert!(
        reason.contains(&format!("its {per_image} bytes of metadata would take")),
        "{reason}"
    );
    let restored = tmp.path().join("restored");
    let archive = Archive::open(&dest).unwrap();
    assert!(unpack_to(&archive, &restored).failed.is_empty());
    assert_eq!(
        std::fs::read(restored.join(path)).unwrap(),
        std::fs::read(album.join(path)).unwrap()
    );
}
