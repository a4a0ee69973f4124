//! Load on a mounted archive (run by scripts/stress.sh): READERS threads read random files at
//! random offsets and lengths while LISTERS threads list the whole tree with metadata, for
//! SECONDS. Every read is compared with a single-threaded read of the same file made before
//! the storm; every listing with the first one. Half the reads drop the file's pages from the
//! kernel's cache first, so they reach the daemon. Samples the daemon's RSS every 100 ms.
//!
//! stress_mount MOUNTPOINT DAEMON_PID [SECONDS] [READERS] [LISTERS] [SEED]

#[path = "shared/rng.rs"]
mod rng;
use rng::Rng;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn listing(root: &Path) -> std::io::Result<BTreeMap<PathBuf, (u64, i64, u32)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            let m = p.symlink_metadata()?;
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p, (m.size(), m.mtime(), m.mode()));
        }
    }
    Ok(out)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        eprintln!("usage: stress_mount MOUNTPOINT DAEMON_PID [SECONDS] [READERS] [LISTERS] [SEED]");
        std::process::exit(2);
    }
    let root = PathBuf::from(&a[1]);
    let pid: u32 = a[2].parse().expect("pid");
    let secs: u64 = a.get(3).map_or(180, |s| s.parse().unwrap());
    let readers: usize = a.get(4).map_or(16, |s| s.parse().unwrap());
    let listers: usize = a.get(5).map_or(2, |s| s.parse().unwrap());
    let seed: u64 = a.get(6).map_or(7, |s| s.parse().unwrap());

    let t0 = Instant::now();
    let list0 = listing(&root).expect("first listing");
    let files: Vec<PathBuf> = list0
        .iter()
        .filter(|(p, _)| p.symlink_metadata().map(|m| m.is_file()).unwrap_or(false))
        .map(|(p, _)| p.clone())
        .collect();
    let mut reference = Vec::new();
    let mut total = 0u64;
    for f in &files {
        let b = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        total += b.len() as u64;
        reference.push(b);
    }
    println!(
        "reference: {} files, {} entries, {:.1} MiB read single-threaded in {:.1} s",
        files.len(),
        list0.len(),
        total as f64 / 1048576.0,
        t0.elapsed().as_secs_f64()
    );
    let rss_after_reference = rss_kib(pid).unwrap_or(0);
    let files = Arc::new(files);
    let reference = Arc::new(reference);
    let list0 = Arc::new(list0);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mismatches = Arc::new(AtomicU64::new(0));
    let listings = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for r in 0..readers {
        let (files, reference, stop) = (files.clone(), reference.clone(), stop.clone());
        let (reads, bytes, errors, mismatches) = (
            reads.clone(),
            bytes.clone(),
            errors.clone(),
            mismatches.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let mut rng = Rng::seeded(seed + r as u64 + 1);
            let mut buf = vec![0u8; 4 << 20];
            while !stop.load(Ordering::Relaxed) {
                let i = (rng.next() % files.len() as u64) as usize;
                let want = &reference[i];
                let len = want.len() as u64;
                // Whole files, small reads, and large reads from anywhere (also past the end).
                let (off, n) = match rng.next() % 4 {
                    0 => (0, len.min(buf.len() as u64)),
                    1 => (rng.next() % (len + 1), 1 + rng.next() % 4096),
                    2 => (rng.next() % (len + 1), 1 + rng.next() % (1 << 20)),
                    _ => (rng.next() % (len + 4097), 1 + rng.next() % (256 << 10)),
                };
                let n = n.min(buf.len() as u64) as usize;
                let f = match std::fs::File::open(&files[i]) {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("open {}: {e}", files[i].display());
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                // Half the reads first drop the kernel's cached pages of the file, so that
                // they reach the daemon (and its small cache) instead of the page cache.
                if rng.next().is_multiple_of(2) {
                    use std::os::fd::AsRawFd;
                    // SAFETY: a valid open descriptor; advice only.
                    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                }
                let mut got = 0;
                let res = loop {
                    match f.read_at(&mut buf[got..n], off + got as u64) {
                        Ok(0) => break Ok(()),
                        Ok(k) => {
                            got += k;
                            if got == n {
                                break Ok(());
                            }
                        }
                        Err(e) => break Err(e),
                    }
                };
                if let Err(e) = res {
                    eprintln!("read {} at {off}: {e}", files[i].display());
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let s = (off.min(len)) as usize;
                let e = (off + n as u64).min(len) as usize;
                if buf[..got] != want[s..e] {
                    eprintln!(
                        "MISMATCH {} at {off} len {n}: got {got} bytes",
                        files[i].display()
                    );
                    mismatches.fetch_add(1, Ordering::Relaxed);
                }
                reads.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(got as u64, Ordering::Relaxed);
            }
        }));
    }
    for _ in 0..listers {
        let (root, list0, stop, listings, errors, mismatches) = (
            root.clone(),
            list0.clone(),
            stop.clone(),
            listings.clone(),
            errors.clone(),
            mismatches.clone(),
        );
        handles.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listing(&root) {
                    Ok(l) if l == *list0 => {}
                    Ok(_) => {
                        eprintln!("MISMATCH: listing differs");
                        mismatches.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("listing: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                listings.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut peak = 0;
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(100));
        match rss_kib(pid) {
            Some(r) => {
                peak = peak.max(r);
                samples.push(r);
            }
            None => {
                eprintln!("the daemon (pid {pid}) is gone");
                errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        if h.join().is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    samples.sort_unstable();
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0);
    let el = start.elapsed().as_secs_f64();
    println!(
        "storm: {el:.0} s, {readers} readers, {listers} listers: {} reads ({:.0}/s), {:.1} MiB checked, {} listings",
        reads.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed) as f64 / el,
        bytes.load(Ordering::Relaxed) as f64 / 1048576.0,
        listings.load(Ordering::Relaxed)
    );
    println!(
        "errors {}, mismatches {}",
        errors.load(Ordering::Relaxed),
        mismatches.load(Ordering::Relaxed)
    );
    println!(
        "daemon RSS: {:.0} MiB after the reference read; during the storm median {:.0} MiB, peak {:.0} MiB ({} samples)",
        rss_after_reference as f64 / 1024.0,
        median as f64 / 1024.0,
        peak as f64 / 1024.0,
        samples.len()
    );
    let failed = errors.load(Ordering::Relaxed) + mismatches.load(Ordering::Relaxed);
    std::process::exit(i32::from(failed > 0));
}
