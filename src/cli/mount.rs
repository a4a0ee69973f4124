use super::{exit, usage, Global};
use crate::archive::Archive;
use crate::daemon::{self, MountExit, MountOptions};
use crate::frames::source::{FrameSource, SourceOptions};
use crate::fs::{CoreOptions, FsCore};
use crate::render;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;

/// Mount an archive as a read-only folder (returns once the mount is usable).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  av1pack mount trip.mkv ~/trip\n  av1pack mount --foreground --cache-size 1G trip.mkv ~/trip\n  av1pack umount ~/trip"
)]
pub struct Args {
    pub archive: PathBuf,
    /// An existing folder to mount on.
    pub mountpoint: PathBuf,
    /// Stay attached: log to stderr, unmount on Ctrl-C.
    #[arg(long)]
    pub foreground: bool,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf for non-root).
    #[arg(long)]
    pub allow_other: bool,
    /// Memory for decoded and rendered images, e.g. 256M, 2G.
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    pub cache_size: u64,
    /// Background mode: where the daemon logs (default: $XDG_CACHE_HOME/av1pack/mount-NAME.log, else ~/.cache/av1pack/…).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// FUSE worker threads (default: twice the CPUs, 4 to 16).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Parses a byte count with an optional K/M/G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mul = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
            };
            (&t[..i], mul)
        }
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: not a size"))?;
    if !(0.0..=1e18).contains(&n) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok((n * mul as f64) as u64)
}

fn default_log_file(archive: &std::path::Path) -> Option<PathBuf> {
    let dir = crate::cache_home()?.join("av1pack");
    std::fs::create_dir_all(&dir).ok()?;
    let stem = archive.file_stem()?.to_string_lossy().into_owned();
    Some(dir.join(format!("mount-{stem}.log")))
}

pub fn run(a: Args, _g: Global) -> anyhow::Result<u8> {
    // Opened here, before any fork, so that a bad archive is reported at once.
    let archive = Archive::open(&a.archive)?;
    if render::Renderer::of(&archive.index.renderer).is_none() {
        log::warn!(
            "{}: packed by a renderer ({}) that this av1pack ({}) does not have: images whose rendered size comes out different will read as I/O errors rather than with a wrong size",
            a.archive.display(),
            archive.index.renderer,
            render::RENDERER_ID
        );
    }
    if a.threads == Some(0) {
        usage!("--threads must be at least 1");
    }
    // Like mount(8): allowed, but what the folder holds is out of sight until the unmount.
    if std::fs::read_dir(&a.mountpoint).is_ok_and(|mut d| d.next().is_some()) {
        log::warn!(
            "{}: the folder is not empty: what it holds is hidden while the archive is mounted on it",
            a.mountpoint.display()
        );
    }
    let log_file = match (&a.log_file, a.foreground) {
        (Some(f), _) => Some(f.clone()),
        (None, false) => default_log_file(&a.archive),
        (None, true) => None,
    };
    let opts = MountOptions {
        foreground: a.foreground,
        allow_other: a.allow_other,
        threads: a.threads.unwrap_or_else(daemon::default_threads),
        log_file: log_file.clone(),
        fsname: a
            .archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "av1pack".into()),
    };
    let cache = a.cache_size;
    // Runs in the daemon, after the fork: it starts the prefetch thread.
    let build = move || -> Result<FsCore, String> {
        // Decoded frames are megabytes each and come and go on many threads: keep them out of
        // per-thread malloc arenas (which would hold on to freed frames) so that the memory
        // follows --cache-size. Fixed mmap threshold: large buffers go back to the system.
        // SAFETY: mallopt only tunes glibc's allocator; called before the serving threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
        let archive = Arc::new(archive);
        let nodes = crate::serve::nodes(&archive);
        let source = FrameSource::new(
            archive,
            SourceOptions {
                cache_bytes: cache,
                ..SourceOptions::default()
            },
        );
        FsCore::new(nodes, Arc::new(source), CoreOptions::current_process())
            .map_err(|e| e.to_string())
    };
    let result = daemon::mount(build, &a.mountpoint, &opts).with_context(|| {
        format!(
            "could not mount {} on {}",
            a.archive.display(),
            a.mountpoint.display()
        )
    })?;
    match result {
        MountExit::Daemonized { pid } => {
            if let Some(f) = &log_file {
                eprintln!(
                    "av1pack: mounted {} on {} (daemon {pid}, log {})",
                    a.archive.display(),
                    a.mountpoint.display(),
                    f.display()
                );
            }
        }
        MountExit::Unmounted { .. } => {}
    }
    Ok(exit::OK)
}
