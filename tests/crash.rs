//! Crash safety of pack: SIGKILL at any moment leaves either no file at the destination or the
//! complete archive, never a partial one; the only other trace is a clearly named
//! `.NAME.*.av1pack-partial` file, which the next pack to the same destination removes.
//! SIGINT, SIGTERM and SIGHUP leave nothing. (A SIGKILLed mount daemon leaving no dead mount
//! is tested in tests/mount.rs and tests/fuse_mount.rs.)

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

/// Packs `album` to `dest`, which must succeed: how long it took and what it printed on stderr.
fn pack_ok(album: &Path, dest: &Path) -> (Duration, String) {
    let start = Instant::now();
    let o = bin().arg("pack").arg(album).arg(dest).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    (start.elapsed(), stderr(&o))
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
    let (mut full, _) = pack_ok(&album, &reference);
    let reference = std::fs::read(&reference).unwrap();
    // Kill early (scanning), in the middle (coding), and near the end (writing, renaming).
    let mut killed_before_the_end = 0;
    let mut partials_seen = 0;
    // A pack that ends before its kill (the reference ran beside other tests, slower) shows
    // how long a pack takes now: the same fraction is tried again on that time.
    let fractions = [0.05, 0.3, 0.6, 0.9, 0.97].map(|f| [f; 3]).concat();
    let mut last = None;
    for frac in fractions {
        if last == Some(frac) {
            continue;
        }
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
        if finished {
            full = full.min(t0.elapsed());
        } else {
            last = Some(frac);
        }
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

#[test]
fn interrupted_pack_removes_its_partial_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let album = album(t);
    let (full, _) = pack_ok(&album, &t.join("reference.mkv"));
    let mut removed = 0;
    for (sig, frac) in [
        (libc::SIGINT, 0.3),
        (libc::SIGTERM, 0.5),
        (libc::SIGHUP, 0.7),
        (libc::SIGINT, 0.6),
    ] {
        let dest = t.join("a.mkv");
        let o = run_interrupted(
            &[
                std::ffi::OsStr::new("pack"),
                album.as_os_str(),
                dest.as_os_str(),
            ],
            full.mul_f64(frac),
            sig,
        );
        let err = stderr(&o);
        if o.status.success() {
            // The signal came after the end: the archive is complete.
            assert!(dest.is_file());
            std::fs::remove_file(&dest).unwrap();
            continue;
        }
        assert_eq!(o.status.code(), Some(128 + sig), "signal {sig}: {err}");
        assert!(
            !dest.exists(),
            "signal {sig}: no archive at the destination"
        );
        assert_eq!(traces(t), Vec::<String>::new(), "signal {sig}: {err}");
        if err.contains("interrupted: removed the partial archive") {
            assert!(err.contains(".a.mkv."), "names the file: {err}");
            removed += 1;
        }
    }
    assert!(
        removed >= 1,
        "no signal came while the partial archive existed"
    );
}

#[test]
fn partial_archives_of_killed_packs_are_removed_by_the_next_pack() {
    use std::os::fd::AsRawFd;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let album = album(t);
    let old = |name: &str| {
        let p = t.join(name);
        std::fs::write(&p, vec![7u8; 50_000]).unwrap();
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        p
    };
    // Left by a killed pack of the same destination: nobody holds it.
    let stale = old(".a.mkv.k1ll3d.av1pack-partial");
    // Being written by a live pack (it holds the lock), however old its time.
    let live = old(".a.mkv.l1v3ly.av1pack-partial");
    let holder = std::fs::File::open(&live).unwrap();
    assert_eq!(
        unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    // Just created, perhaps not locked yet by its pack.
    let fresh = t.join(".a.mkv.fr35h0.av1pack-partial");
    std::fs::write(&fresh, b"x").unwrap();
    // Another destination's.
    let other = old(".b.mkv.k1ll3d.av1pack-partial");

    let (_, err) = pack_ok(&album, &t.join("a.mkv"));
    assert!(!stale.exists(), "the killed pack's file is removed");
    assert!(
        err.contains(".a.mkv.k1ll3d.av1pack-partial")
            && err.contains("left by an interrupted pack"),
        "one line names it: {err}"
    );
    for p in [&live, &fresh, &other] {
        assert!(p.exists(), "{} is kept", p.display());
        assert!(
            !err.contains(&*p.file_name().unwrap().to_string_lossy()),
            "{err}"
        );
    }
    drop(holder);
}
