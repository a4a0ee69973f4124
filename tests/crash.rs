//! Crash safety of pack: SIGKILL at any moment leaves either no file at the destination or the
//! complete archive, never a partial one; the only other trace is a clearly named
//! `.NAME.*.av1pack-partial` file. (A SIGKILLed mount daemon leaving no dead mount is tested in
//! tests/mount.rs and tests/fuse_mount.rs.)

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn album(root: &Path) -> std::path::PathBuf {
    let album = root.join("album");
    std::fs::create_dir_all(album.join("sub")).unwrap();
    for i in 0..8u32 {
        let mut img = pattern(320, 240, 1);
        for y in 50..100 {
            for x in (10 + i * 25)..(60 + i * 25) {
                img.put_pixel(x, y, image::Rgb([200, 60, (i * 30) as u8]));
            }
        }
        img.save(album.join(format!("sub/shot {i}.png"))).unwrap();
    }
    std::fs::write(album.join("notes.txt"), vec![b'n'; 300_000]).unwrap();
    album
}

/// Names in `dir` other than the album folder and the reference archive.
fn traces(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "album" && n != "reference.mkv")
        .collect()
}

#[test]
fn sigkill_during_pack_never_leaves_a_partial_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let album = album(t);
    let reference = t.join("reference.mkv");
    let start = Instant::now();
    let o = bin()
        .arg("pack")
        .arg(&album)
        .arg(&reference)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let full = start.elapsed();
    let reference = std::fs::read(&reference).unwrap();
    // Kill early (scanning), in the middle (coding), and near the end (writing, renaming).
    let mut killed_before_the_end = 0;
    let mut partials_seen = 0;
    for frac in [0.05, 0.3, 0.6, 0.9, 0.97] {
        let dest = t.join("a.mkv");
        let mut child = bin().arg("pack").arg(&album).arg(&dest).spawn().unwrap();
        let at = full.mul_f64(frac);
        let t0 = Instant::now();
        while t0.elapsed() < at {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let finished = child.try_wait().unwrap().is_some();
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        let names = traces(t);
        if dest.exists() {
            // Killed too late to matter: the archive is complete, byte for byte.
            assert!(
                std::fs::read(&dest).unwrap() == reference,
                "killed at {frac}: a partial archive at the destination"
            );
        } else {
            assert!(!finished);
            killed_before_the_end += 1;
            partials_seen += usize::from(!names.is_empty());
            for n in &names {
                assert!(
                    n.starts_with(".a.mkv.") && n.ends_with(".av1pack-partial"),
                    "killed at {frac}: unexpected trace {n:?} in {names:?}"
                );
            }
        }
        // Clean up for the next round, as a user would.
        for n in names {
            let _ = std::fs::remove_file(t.join(n));
        }
    }
    assert!(killed_before_the_end >= 3, "the kills all came too late");
    assert!(partials_seen >= 1, "no kill caught the partial file");
}
