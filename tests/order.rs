//! `pack --order`: frames ordered by visual similarity, with a keyframe where the content
//! changes; the index maps every frame back to its file.

mod common;

use av1pack::archive::{Archive, EntryKind};
use common::*;
use std::path::{Path, PathBuf};

/// Eight photo-like PNGs of two scenes taking turns in path order: 1.png (scene A), 2.png
/// (scene B), 3.png (A), ... Images of one scene differ a little from each other.
fn alternating_album(root: &Path) -> PathBuf {
    let dir = root.join("album");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..8u32 {
        let mut img = pattern(160, 120, i / 2);
        if i % 2 == 1 {
            // Scene B: the same texture turned upside down, colours inverted.
            image::imageops::rotate180_in_place(&mut img);
            image::imageops::invert(&mut img);
        }
        img.save(dir.join(format!("{}.png", i + 1))).unwrap();
    }
    dir
}

/// Packs with x264's own scene-cut detection off: every keyframe is one pack asked for.
fn pack(album: &Path, archive: &Path, order: &str) {
    let o = run(&[
        os("pack"),
        os("--x264-params"),
        os("scenecut=0"),
        os("--order"),
        os(order),
        album.as_os_str(),
        archive.as_os_str(),
    ]);
    assert!(o.status.success(), "pack --order {order}: {}", stderr(&o));
}

/// The frame each image was coded at, by file name (1.png ... 8.png), and the track's
/// keyframes.
fn frames(archive: &Path) -> (Vec<(String, u64)>, Vec<u64>) {
    let a = Archive::open(archive).unwrap();
    let mut out = Vec::new();
    let mut track = None;
    for e in &a.index.entries {
        if let EntryKind::Image(img) = &e.kind {
            assert_eq!(img.tiles.len(), 1);
            let t = img.tiles[0];
            assert_eq!(*track.get_or_insert(t.track), t.track, "one track");
            out.push((e.path_lossy(), t.frame));
        }
    }
    assert_eq!(out.len(), 8, "every image coded as video: {out:?}");
    let track = &a.index.tracks[track.unwrap() as usize];
    let keys = track
        .packets
        .iter()
        .filter(|p| p.keyframe)
        .map(|p| p.pts)
        .collect();
    (out, keys)
}

fn scene_a_frames(frames: &[(String, u64)]) -> Vec<u64> {
    let mut a: Vec<u64> = ["1.png", "3.png", "5.png", "7.png"]
        .iter()
        .map(|n| frames.iter().find(|(p, _)| p == n).unwrap().1)
        .collect();
    a.sort_unstable();
    a
}

#[test]
fn similar_order_puts_each_scene_together_and_unpacks_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let album = alternating_album(tmp.path());
    let archive = tmp.path().join("similar.mkv");
    pack(&album, &archive, "similar");
    let (frames, keys) = frames(&archive);
    // 1.png is coded first; the other three images of scene A follow it.
    assert_eq!(scene_a_frames(&frames), vec![0, 1, 2, 3], "{frames:?}");
    // A GOP starts where scene B starts (not only every --gop frames).
    assert!(keys.contains(&0) && keys.contains(&4), "keyframes {keys:?}");

    let out = tmp.path().join("out");
    let o = run(&[os("unpack"), archive.as_os_str(), out.as_os_str()]);
    assert!(o.status.success(), "unpack: {}", stderr(&o));
    for i in 1..=8 {
        let name = format!("{i}.png");
        assert_looks_the_same(&album.join(&name), &out.join(&name), 90.0);
    }
    // Same input, same order, same bytes.
    let again = tmp.path().join("again.mkv");
    pack(&album, &again, "similar");
    assert!(
        std::fs::read(&archive).unwrap() == std::fs::read(&again).unwrap(),
        "--order similar is deterministic"
    );
}

#[test]
fn path_order_keeps_the_walk_and_auto_takes_the_shorter_tour() {
    let tmp = tempfile::tempdir().unwrap();
    let album = alternating_album(tmp.path());
    let path = tmp.path().join("path.mkv");
    pack(&album, &path, "path");
    let (frames_path, keys) = frames(&path);
    for (name, frame) in &frames_path {
        let n: u64 = name.trim_end_matches(".png").parse().unwrap();
        assert_eq!(*frame, n - 1, "{name} at its place in path order");
    }
    assert_eq!(keys, vec![0], "one GOP of 8 frames");

    // Two scenes taking turns: the similarity tour is far shorter, so auto uses it.
    let auto = tmp.path().join("auto.mkv");
    pack(&album, &auto, "auto");
    assert_eq!(scene_a_frames(&frames(&auto).0), vec![0, 1, 2, 3]);
}
