//! Damaged archives through the real binary: what survives which damage (docs/FORMAT.md,
//! "Damage"). Every case checks the names on stderr, the exit code, and that what is restored
//! is byte for byte what an undamaged archive gives.

mod common;

use av1pack::archive::{Archive, BlobCoding, EntryKind};
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A burst of similar PNGs coded as video in GOPs of 4, and a few stored files.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    archive: PathBuf,
    bytes: Vec<u8>,
    /// Every file of an undamaged unpack: relative path → bytes.
    reference: BTreeMap<PathBuf, Vec<u8>>,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let album = dir.join("album");
    std::fs::create_dir_all(album.join("burst")).unwrap();
    for i in 0..10u32 {
        let mut img = pattern(160, 120, 1);
        for y in 30..60 {
            for x in (5 + i * 10)..(35 + i * 10) {
                img.put_pixel(x, y, image::Rgb([240, 40, (i * 20) as u8]));
            }
        }
        img.save(album.join(format!("burst/shot {i:02}.png")))
            .unwrap();
    }
    // Text that compresses (stored zstd-compressed) and noise that does not (stored as is).
    for (name, len) in [("a.txt", 3000usize), ("c.txt", 500)] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(album.join(name), data).unwrap();
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(album.join("b.bin"), noise).unwrap();
    let archive = dir.join("album.mkv");
    let o = bin()
        .args(["pack", "-q", "--crf", "20", "--gop", "4"])
        .arg(&album)
        .arg(&archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.join("reference");
    let o = bin()
        .args(["unpack", "-q"])
        .arg(&archive)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = tree(&out);
    assert_eq!(reference.len(), 13, "{:?}", reference.keys());
    let bytes = std::fs::read(&archive).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        archive,
        bytes,
        reference,
    }
}

/// Every regular file below `root`: relative path → bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files(root)
        .into_iter()
        .filter(|rel| root.join(rel).is_file())
        .map(|rel| {
            let b = std::fs::read(root.join(&rel)).unwrap();
            (rel, b)
        })
        .collect()
}

impl Fixture {
    fn damaged(&self, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
        let mut b = self.bytes.clone();
        edit(&mut b);
        let p = self.dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    }

    fn unpack(&self, archive: &Path) -> (Output, BTreeMap<PathBuf, Vec<u8>>) {
        let out = archive.with_extension("out");
        let o = bin()
            .args(["unpack", "-q"])
            .arg(archive)
            .arg(&out)
            .output()
            .unwrap();
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        let t = if out.exists() {
            tree(&out)
        } else {
            BTreeMap::new()
        };
        (o, t)
    }

    /// Files restored identical to the reference, and files restored differently.
    fn compare(&self, got: &BTreeMap<PathBuf, Vec<u8>>) -> (Vec<String>, Vec<String>) {
        let mut same = Vec::new();
        let mut differ = Vec::new();
        for (rel, b) in got {
            let name = rel.to_string_lossy().into_owned();
            if self.reference.get(rel) == Some(b) {
                same.push(name);
            } else {
                differ.push(name);
            }
        }
        (same, differ)
    }
}

fn open(p: &Path) -> Archive {
    Archive::open(p).unwrap()
}

#[test]
fn a_damaged_frame_is_named_and_nothing_else_is_lost() {
    let fx = fixture();
    let a = open(&fx.archive);
    // The last frame of the track: only the images of the last GOP depend on it.
    let track = &a.index.tracks[0];
    let last = track.packets.iter().max_by_key(|p| p.pts).unwrap();
    let victim = a
        .index
        .entries
        .iter()
        .find(|e| matches!(&e.kind, EntryKind::Image(img) if img.tiles[0].frame == last.pts))
        .unwrap()
        .path_lossy();
    let mid = (last.offset + u64::from(last.size) / 2) as usize;
    let damaged = fx.damaged("frame.mkv", |b| b[mid] ^= 0x10);
    let (o, got) = fx.unpack(&damaged);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains(&victim), "{victim} not named in {err}");
    let (same, differ) = fx.compare(&got);
    assert!(differ.is_empty(), "restored wrongly: {differ:?}");
    // Only the images of the damaged frame's GOP may be lost; everything else is back.
    let gop_start = track
        .packets
        .iter()
        .rposition(|p| p.keyframe && p.offset <= last.offset)
        .unwrap();
    let gop: Vec<u64> = track.packets[gop_start..]
        .iter()
        .take_while(|p| !p.keyframe || p.offset == track.packets[gop_start].offset)
        .map(|p| p.pts)
        .collect();
    assert!(gop.len() < 10, "{gop:?}");
    for e in &a.index.entries {
        if let EntryKind::Image(img) = &e.kind {
            if !gop.contains(&img.tiles[0].frame) {
                assert!(
                    same.contains(&e.path_lossy()),
                    "{} lost\n{err}",
                    e.path_lossy()
                );
            }
        }
    }
    for name in fx.reference.keys() {
        let n = name.to_string_lossy();
        assert!(
            same.iter().any(|s| *s == n) || err.contains(n.as_ref()),
            "{n} neither restored nor named"
        );
    }
}

#[test]
fn a_damaged_first_index_falls_back_to_the_copy() {
    let fx = fixture();
    let a = open(&fx.archive);
    let first = a.index_range();
    let copy = a.index_copy_range().expect("a second copy");
    assert!(copy.start > first.end, "copies {first:?} and {copy:?}");
    let mid = ((first.start + first.end) / 2) as usize;
    let damaged = fx.damaged("index.mkv", |b| b[mid] ^= 0x01);
    let o = bin().arg("ls").arg(&damaged).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("index checksum mismatch") && stderr(&o).contains("second copy"),
        "{}",
        stderr(&o)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 14);
    let (o, got) = fx.unpack(&damaged);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(got, fx.reference);
}

#[test]
fn a_wiped_file_start_falls_back_to_the_copy() {
    let fx = fixture();
    // EBML header, Segment header and SeekHead gone.
    let damaged = fx.damaged("head.mkv", |b| b[..200].fill(0));
    let o = bin().arg("ls").arg(&damaged).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("second copy"), "{}", stderr(&o));
    let (o, got) = fx.unpack(&damaged);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(got, fx.reference);
}

#[test]
fn both_index_copies_damaged_is_refused_with_one_line() {
    let fx = fixture();
    let a = open(&fx.archive);
    let (first, copy) = (a.index_range(), a.index_copy_range().unwrap());
    let damaged = fx.damaged("both.mkv", |b| {
        b[first.start as usize + 40] ^= 0x04;
        b[copy.start as usize + 40] ^= 0x04;
    });
    for cmd in ["ls", "info"] {
        let o = bin().arg(cmd).arg(&damaged).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("both.mkv") && err.contains("index checksum mismatch"));
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let (o, got) = fx.unpack(&damaged);
    assert_eq!(o.status.code(), Some(1));
    assert!(got.is_empty());
}

/// A damaged file stored as it is comes out as found, named; a damaged compressed one is
/// named and not written (it cannot be decoded into anything trustworthy). The others are
/// restored exactly either way.
#[test]
fn a_damaged_stored_file_is_named_and_the_rest_restored() {
    let fx = fixture();
    let a = open(&fx.archive);
    let blob_of = |name: &[u8]| {
        a.index
            .entries
            .iter()
            .find_map(|e| match &e.kind {
                EntryKind::Verbatim { blob, .. } if e.path == name => Some(*blob),
                _ => None,
            })
            .unwrap()
    };
    let (stored, compressed) = (blob_of(b"b.bin"), blob_of(b"a.txt"));
    assert!(stored.is_stored(), "{stored:?}");
    assert!(
        matches!(compressed.coding, BlobCoding::Zstd { .. }),
        "{compressed:?}"
    );
    for (name, blob, written) in [("b.bin", stored, true), ("a.txt", compressed, false)] {
        let r = a.blob_range(&blob);
        let mid = (r.start + r.end) as usize / 2;
        let damaged = fx.damaged(&format!("{name}.mkv"), |b| b[mid] ^= 0x80);
        let (o, got) = fx.unpack(&damaged);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(4), "{err}");
        assert!(err.contains(name) && err.contains("damaged"), "{err}");
        let (same, differ) = fx.compare(&got);
        if written {
            assert_eq!(
                differ,
                vec![name.to_string()],
                "only the damaged file differs"
            );
        } else {
            assert!(differ.is_empty(), "{differ:?}");
            assert!(!got.keys().any(|p| p.to_string_lossy() == name));
        }
        assert_eq!(same.len(), 12, "{name}");
    }
}

#[test]
fn a_truncated_archive_restores_what_is_before_the_cut() {
    let fx = fixture();
    let a = open(&fx.archive);
    let blobs: Vec<(String, std::ops::Range<u64>)> = a
        .index
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Verbatim { blob, .. } => Some((e.path_lossy(), a.blob_range(blob))),
            _ => None,
        })
        .collect();
    // Cut in the middle of the last stored file.
    let last = blobs.iter().max_by_key(|(_, r)| r.start).unwrap().clone();
    let cut = ((last.1.start + last.1.end) / 2) as usize;
    let damaged = fx.damaged("cut.mkv", |b| b.truncate(cut));
    let o = bin().arg("ls").arg(&damaged).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cut.mkv") && stderr(&o).contains("beyond the end of the file"),
        "{}",
        stderr(&o)
    );
    let (o, got) = fx.unpack(&damaged);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains(&last.0), "{err}");
    let (same, _) = fx.compare(&got);
    assert_eq!(same.len(), 12, "{same:?}\n{err}");
    assert!(!same.contains(&last.0));
    // Cut before the first copy of the index: nothing to read, one clear line.
    let cut = (a.index_range().start - 100) as usize;
    let damaged = fx.damaged("short.mkv", |b| b.truncate(cut));
    let o = bin().arg("ls").arg(&damaged).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("short.mkv"), "{}", stderr(&o));
}

#[test]
fn archives_of_format_version_1_are_refused_clearly() {
    let fx = fixture();
    let a = open(&fx.archive);
    let (first, copy) = (a.index_range(), a.index_copy_range().unwrap());
    let damaged = fx.damaged("v1.mkv", |b| {
        for r in [&first, &copy] {
            b[r.start as usize + 8..r.start as usize + 12].copy_from_slice(&1u32.to_le_bytes());
        }
    });
    let o = bin().arg("info").arg(&damaged).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("v1.mkv") && stderr(&o).contains("format version 1 is not supported"),
        "{}",
        stderr(&o)
    );
}

/// A damaged frame of a JPEG burst stored frame against frame: it and the frames stored
/// against it (directly or down the chain) are named and not written; the frames before it
/// are restored exactly; nothing panics.
#[test]
fn a_damaged_burst_frame_takes_the_rest_of_its_chain_and_nothing_before() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, archive) = packed_jpeg_burst(tmp.path());
    let good = tmp.path().join("good");
    unpack_to(&archive, &good);
    let reference = tree(&good);
    let a = open(&archive);
    // Frames in storing order, with the offset each is stored against.
    let mut frames: Vec<(String, std::ops::Range<u64>, u64, Option<u64>)> = a
        .index
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Verbatim { blob, .. } => Some((
                e.path_lossy(),
                a.blob_range(blob),
                blob.offset,
                match blob.coding {
                    BlobCoding::JpegThinnedDelta { reference, .. } => Some(reference),
                    _ => None,
                },
            )),
            _ => None,
        })
        .collect();
    frames.sort_by_key(|f| f.2);
    let chained = frames.iter().filter(|f| f.3.is_some()).count();
    assert!(chained >= 3, "{frames:?}");
    // The second frame of the chain: the first survives, every later one depends on it.
    let (victim, range, offset, _) = frames[1].clone();
    assert_eq!(frames[2].3, Some(offset), "{frames:?}");
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = ((range.start + range.end) / 2) as usize;
    bytes[mid] ^= 0x80;
    let damaged = tmp.path().join("damaged.mkv");
    std::fs::write(&damaged, bytes).unwrap();
    let out = tmp.path().join("out");
    let o = bin()
        .args(["unpack", "-q"])
        .arg(&damaged)
        .arg(&out)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(4), "{err}");
    let got = tree(&out);
    // Those stored against the victim, down the chain.
    let mut lost = vec![offset];
    for f in &frames {
        if f.3.is_some_and(|r| lost.contains(&r)) {
            lost.push(f.2);
        }
    }
    for (name, _, off, _) in &frames {
        let rel = PathBuf::from(name);
        if lost.contains(off) {
            assert!(err.contains(name.as_str()), "{name} not named: {err}");
            assert!(!got.contains_key(&rel), "{name} written");
        } else {
            assert_eq!(got.get(&rel), reference.get(&rel), "{name}");
        }
    }
    assert!(
        lost.len() >= 3 && lost.len() < frames.len(),
        "{lost:?} of {frames:?}"
    );
    assert!(err.contains(&victim), "{err}");
}
