//! Corruption sweep (run by scripts/corrupt-sweep.sh): damages copies of a packed archive —
//! truncated at every STEP bytes, and FLIPS random single-byte changes (seeded) — and runs the
//! real `av1pack info`, `ls` and `unpack` on each with a timeout. Counts panics and hangs, and
//! checks that every entry whose bytes (and whose index copy) the damage did not touch is
//! restored identical to an undamaged unpack, and that every entry restored differently is
//! named on stderr (no silent corruption).
//!
//! cargo run --release --example corrupt_sweep -- BIN ARCHIVE WORKDIR [STEP] [FLIPS] [SEED]

#[path = "shared/rng.rs"]
mod rng;
use av1pack::archive::{mkv, Archive, EntryKind};
use rng::Rng;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

struct Layout {
    /// Ranges the first index path needs (file head, SeekHead, first index attachment).
    primary: Vec<Range<u64>>,
    /// The range the second copy needs (its bytes and the trailer).
    copy: Range<u64>,
    /// Per entry (index order): its path and the ranges its data needs.
    entries: Vec<(String, Vec<Range<u64>>)>,
}

fn layout(a: &Archive) -> Layout {
    let f = std::fs::File::open(a.path()).expect("archive");
    let ebml = mkv::read_header(&f, 0).expect("EBML header");
    let seg = mkv::read_header(&f, ebml.end()).expect("segment");
    let seek_head = mkv::read_header(&f, seg.body_start).expect("seek head");
    let idx = a.index_range();
    // The Attachments and AttachedFile headers and the name field come just before the data.
    let primary = vec![0..seek_head.end(), idx.start.saturating_sub(96)..idx.end];
    let copy_range = a.index_copy_range().expect("trailer");
    let copy = copy_range.start..a.file_len();
    let mut entries = Vec::new();
    for e in &a.index.entries {
        let mut ranges = Vec::new();
        match &e.kind {
            EntryKind::Verbatim { blob, .. } => ranges.push(a.blob_range(blob)),
            EntryKind::Image(img) => {
                for tile in img.tiles.iter().chain(img.alpha.iter()) {
                    let t = &a.index.tracks[tile.track as usize];
                    // The whole GOP holding the frame, in decode order.
                    let at = t.packets.iter().position(|p| p.pts == tile.frame).unwrap();
                    let start = (0..=at).rev().find(|&i| t.packets[i].keyframe).unwrap_or(0);
                    let end = (at + 1..t.packets.len())
                        .find(|&i| t.packets[i].keyframe)
                        .unwrap_or(t.packets.len());
                    for p in &t.packets[start..end] {
                        ranges.push(p.offset..p.offset + u64::from(p.size));
                    }
                }
            }
            EntryKind::Dir
            | EntryKind::Symlink { .. }
            | EntryKind::Copy { .. }
            | EntryKind::Link { .. } => {}
        }
        entries.push((e.path_lossy(), ranges));
    }
    Layout {
        primary,
        copy,
        entries,
    }
}

enum Damage {
    Truncate(u64),
    Flip(u64, u8),
}

impl Damage {
    fn touches(&self, r: &Range<u64>) -> bool {
        match *self {
            Damage::Truncate(at) => r.end > at,
            Damage::Flip(at, _) => r.contains(&at),
        }
    }
    fn describe(&self) -> String {
        match *self {
            Damage::Truncate(at) => format!("truncated at {at}"),
            Damage::Flip(at, x) => format!("byte {at} xor {x:#04x}"),
        }
    }
}

struct Run {
    code: Option<i32>,
    stderr: String,
    hung: bool,
    secs: f64,
}

fn run(bin: &Path, args: &[&Path]) -> Run {
    let t = Instant::now();
    let dir = std::env::temp_dir();
    let err_path = dir.join(format!("corrupt-sweep-{}.err", std::process::id()));
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .expect("spawn av1pack");
    let mut hung = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if t.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            hung = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    Run {
        code: status.and_then(|s| s.code()),
        stderr,
        hung,
        secs: t.elapsed().as_secs_f64(),
    }
}

fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = p.symlink_metadata() else {
                continue;
            };
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if m.is_dir() {
                walk(&p, root, out);
            } else if m.is_file() {
                out.insert(rel, std::fs::read(&p).unwrap_or_default());
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap_or_default();
                out.insert(rel, t.to_string_lossy().into_owned().into_bytes());
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Mounts the damaged archive and reads every file the reference has, on a thread, with a
/// timeout. Returns (hung, files read identical, files failing with EIO, files wrong, other
/// errors, whether the mount could be made).
fn mount_check(
    bin: &Path,
    archive: &Path,
    mnt: &Path,
    reference: &BTreeMap<String, Vec<u8>>,
    intact: &[String],
) -> (bool, usize, usize, Vec<String>, usize, bool) {
    let _ = std::fs::create_dir_all(mnt);
    let r = run(bin, &[Path::new("mount"), archive, mnt]);
    if r.code != Some(0) {
        return (r.hung, 0, 0, Vec::new(), 0, false);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (mnt2, reference2, intact2) = (mnt.to_owned(), reference.clone(), intact.to_vec());
    std::thread::spawn(move || {
        let (mut same, mut eio, mut wrong, mut other) = (0, 0, Vec::new(), 0);
        for (path, want) in &reference2 {
            let p = mnt2.join(path);
            if p.symlink_metadata()
                .map(|m| m.is_symlink())
                .unwrap_or(false)
            {
                continue;
            }
            match std::fs::read(&p) {
                Ok(b) if &b == want => same += 1,
                // Damaged files may fail; intact ones may not, and nothing may read wrong.
                Ok(_) => wrong.push(path.clone()),
                Err(e) if e.raw_os_error() == Some(libc::EIO) && !intact2.contains(path) => {
                    eio += 1
                }
                Err(_) => other += 1,
            }
        }
        let _ = tx.send((same, eio, wrong, other));
    });
    let res = rx.recv_timeout(TIMEOUT);
    let _ = run(bin, &[Path::new("umount"), mnt]);
    match res {
        Ok((same, eio, wrong, other)) => (false, same, eio, wrong, other, true),
        Err(_) => {
            let _ = Command::new("umount").arg("-l").arg(mnt).status();
            (true, 0, 0, Vec::new(), 0, true)
        }
    }
}

#[derive(Default)]
struct Totals {
    cases: usize,
    runs: usize,
    panics: usize,
    hangs: usize,
    /// Entries whose data and an index copy were intact.
    expected: usize,
    /// ...of which restored identical.
    restored: usize,
    /// Intact entries not restored identical (must be 0).
    lost_intact: usize,
    /// Damaged entries restored identical anyway (damage in bytes that do not matter).
    restored_despite: usize,
    /// Entries restored differently and not named on stderr (must be 0).
    silent: usize,
    /// unpack exit code not 0 when all came back, or 0 when something did not.
    wrong_exit: usize,
    unreadable: usize,
    max_secs: f64,
    mounts: usize,
    mount_refused: usize,
    mount_hangs: usize,
    mount_same: usize,
    mount_eio: usize,
    /// Files the mount served with wrong bytes (must be 0).
    mount_wrong: usize,
    /// Intact files the mount failed to serve, or errors other than EIO (must be 0).
    mount_other: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: corrupt_sweep BIN ARCHIVE WORKDIR [STEP] [FLIPS] [SEED]");
        std::process::exit(2);
    }
    let bin = PathBuf::from(&args[1]);
    let archive = PathBuf::from(&args[2]);
    let work = PathBuf::from(&args[3]);
    let step: u64 = args.get(4).map_or(4096, |s| s.parse().unwrap());
    let flips: usize = args.get(5).map_or(1000, |s| s.parse().unwrap());
    let seed: u64 = args.get(6).map_or(1, |s| s.parse().unwrap());
    // Every MOUNT_EVERY-th case is also mounted and read through (0: never).
    let mount_every: usize = std::env::var("MOUNT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::fs::create_dir_all(&work).unwrap();
    let a = Archive::open(&archive).expect("an undamaged archive");
    let lay = layout(&a);
    let bytes = std::fs::read(&archive).unwrap();
    let len = bytes.len() as u64;
    let reference_dir = work.join("reference");
    let _ = std::fs::remove_dir_all(&reference_dir);
    let r = run(&bin, &[Path::new("unpack"), &archive, &reference_dir]);
    assert_eq!(r.code, Some(0), "reference unpack: {}", r.stderr);
    let reference = tree(&reference_dir);

    let mut cases: Vec<Damage> = (1..)
        .map(|k| k * step)
        .take_while(|&at| at < len)
        .map(Damage::Truncate)
        .collect();
    let mut rng = Rng::seeded(seed);
    for _ in 0..flips {
        let at = rng.next() % len;
        let x = (rng.next() % 255) as u8 + 1;
        cases.push(Damage::Flip(at, x));
    }
    let mut t = Totals::default();
    let damaged = work.join("damaged.mkv");
    let out = work.join("out");
    for (n, d) in cases.iter().enumerate() {
        let mut b = bytes.clone();
        match *d {
            Damage::Truncate(at) => b.truncate(at as usize),
            Damage::Flip(at, x) => b[at as usize] ^= x,
        }
        std::fs::write(&damaged, &b).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        t.cases += 1;
        let runs = [
            run(&bin, &[Path::new("info"), &damaged]),
            run(&bin, &[Path::new("ls"), &damaged]),
            run(
                &bin,
                &[Path::new("-q"), Path::new("unpack"), &damaged, &out],
            ),
        ];
        for r in &runs {
            t.runs += 1;
            t.max_secs = t.max_secs.max(r.secs);
            if r.code == Some(101) || r.stderr.contains("panicked") {
                t.panics += 1;
                println!("PANIC ({}): {}", d.describe(), r.stderr.trim());
            }
            if r.hung {
                t.hangs += 1;
                println!("HANG ({})", d.describe());
            }
        }
        let unpack = &runs[2];
        let index_ok = !lay.primary.iter().any(|r| d.touches(r)) || !d.touches(&lay.copy);
        if unpack.code == Some(1) {
            t.unreadable += 1;
        }
        let got = tree(&out);
        let mut all_back = true;
        let mut intact_paths = Vec::new();
        for (path, ranges) in &lay.entries {
            let Some(want) = reference.get(path) else {
                continue; // folders
            };
            let intact = index_ok && !ranges.iter().any(|r| d.touches(r));
            let same = got.get(path) == Some(want);
            all_back &= same;
            if intact {
                intact_paths.push(path.clone());
                t.expected += 1;
                if same {
                    t.restored += 1;
                } else {
                    t.lost_intact += 1;
                    println!(
                        "LOST INTACT ({}): {path}: {}",
                        d.describe(),
                        unpack.stderr.trim()
                    );
                }
            } else if same {
                t.restored_despite += 1;
            }
            if !same && got.contains_key(path) && !unpack.stderr.contains(path.as_str()) {
                t.silent += 1;
                println!("SILENT ({}): {path} differs, not named", d.describe());
            }
        }
        let exit_ok = match unpack.code {
            Some(0) => all_back,
            Some(1) | Some(4) => !all_back,
            _ => false,
        };
        if !exit_ok {
            t.wrong_exit += 1;
            println!(
                "EXIT {:?} ({}), all restored: {all_back}: {}",
                unpack.code,
                d.describe(),
                unpack.stderr.trim()
            );
        }
        if mount_every > 0 && n % mount_every == 0 {
            let (hung, same, eio, wrong, other, mounted) =
                mount_check(&bin, &damaged, &work.join("mnt"), &reference, &intact_paths);
            t.mounts += 1;
            t.mount_refused += usize::from(!mounted);
            if hung {
                t.mount_hangs += 1;
                println!("MOUNT HANG ({})", d.describe());
            }
            t.mount_same += same;
            t.mount_eio += eio;
            t.mount_other += other;
            if !wrong.is_empty() {
                println!("MOUNT WRONG BYTES ({}): {wrong:?}", d.describe());
            }
            if other > 0 {
                println!("MOUNT ERROR ({}): {other} files", d.describe());
            }
            t.mount_wrong += wrong.len();
        }
        if (n + 1) % 100 == 0 {
            eprintln!("{} of {} cases", n + 1, cases.len());
        }
    }
    let truncations = cases
        .iter()
        .filter(|d| matches!(d, Damage::Truncate(_)))
        .count();
    println!(
        "archive {} ({len} bytes, {} entries)",
        archive.display(),
        lay.entries.len()
    );
    println!(
        "cases {} ({truncations} truncations every {step} bytes, {} flips, seed {seed}); runs {}",
        t.cases,
        t.cases - truncations,
        t.runs
    );
    println!(
        "panics {}; hangs {} (timeout {} s); slowest run {:.2} s",
        t.panics,
        t.hangs,
        TIMEOUT.as_secs(),
        t.max_secs
    );
    println!("unpack refused the archive (exit 1): {}", t.unreadable);
    println!(
        "intact entries {}: restored identical {}, lost {}",
        t.expected, t.restored, t.lost_intact
    );
    println!(
        "damaged entries restored identical anyway: {}",
        t.restored_despite
    );
    println!(
        "entries restored differently without being named: {}",
        t.silent
    );
    println!(
        "unpack exit code inconsistent with the result: {}",
        t.wrong_exit
    );
    if t.mounts > 0 {
        println!(
            "mount (every {mount_every}th case): {} mounts, {} refused (unreadable archive), {} hangs; files read identical {}, EIO (damaged) {}, wrong bytes {}, other errors or intact files failing {}",
            t.mounts, t.mount_refused, t.mount_hangs, t.mount_same, t.mount_eio, t.mount_wrong, t.mount_other
        );
    }
    let _ = std::fs::remove_file(&damaged);
    let failed = t.panics
        + t.hangs
        + t.lost_intact
        + t.silent
        + t.wrong_exit
        + t.mount_hangs
        + t.mount_wrong
        + t.mount_other;
    std::process::exit(i32::from(failed > 0));
}
