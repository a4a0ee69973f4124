//! The command line: raw clap arguments become validated settings, one file per subcommand.
//! `anyhow` lives here only; the library returns typed errors.

mod info;
mod ls;
mod mount;
mod pack;
mod play;
mod progress;
mod report;
mod shell;
mod thumbnails;
mod umount;
mod unpack;
mod verify;

use clap::{Parser, Subcommand};

/// A command line that asks for what cannot be (an option out of its range, options that
/// exclude each other): exits with [`exit::USAGE`], like clap's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Returns a [`Usage`] error from the enclosing function, formatted like `format!`.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err($crate::cli::Usage(format!($($arg)*)).into())
    };
}
pub(crate) use usage;

/// On SIGINT, SIGTERM or SIGHUP (Ctrl-C, `kill`, a closed terminal), runs `cleanup` on a
/// thread of its own, then ends the process with 128 + the signal's number, as a shell
/// reports a signal.
fn on_interrupt(cleanup: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    use anyhow::Context;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("av1pack-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                cleanup();
                // _exit: the other threads are inside FFmpeg, the encoders or the decoders;
                // running exit handlers under them is not safe.
                // SAFETY: ends the process at once; nothing is used afterwards.
                unsafe { libc::_exit(128 + sig) }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Exit codes (also in README.md).
pub mod exit {
    pub const OK: u8 = 0;
    /// Any error: bad input, unreadable files, a damaged or foreign archive, I/O failures.
    pub const ERROR: u8 = 1;
    /// Wrong usage (unknown option, missing argument: printed by clap; an option's value out
    /// of its range: [`Usage`]).
    pub const USAGE: u8 = 2;
    /// `verify`: an image scored below `--min-score`, or a file differs from its original.
    pub const VERIFY_FAILED: u8 = 3;
    /// `unpack` (and `thumbnails`): some entries could not be restored (they are named on stderr).
    pub const INCOMPLETE: u8 = 4;
}

#[derive(Parser, Debug)]
#[command(
    name = "av1pack",
    version,
    about = "Pack a folder of images into one Matroska video, and get it back",
    long_about = "Packs a folder of images (an album) into one Matroska (MKV) video, one image per \
frame, so that the codec's prediction between similar images saves space. Everything else in \
the folder is kept too: names, sub-folders, modification times, metadata, files that are not \
images.",
    after_help = "Examples:\n  av1pack pack ~/Pictures/trip trip.mkv\n  av1pack ls trip.mkv\n  \
av1pack unpack trip.mkv restored/\n  av1pack verify trip.mkv ~/Pictures/trip --min-score 85\n  \
av1pack mount trip.mkv ~/trip\n  av1pack play trip.mkv\n  av1pack report trip.mkv --originals ~/Pictures/trip --chart trip.svg\n\n\
Exit codes: 0 success, 1 error, 2 wrong usage, 3 verify: below --min-score, a file differs or is not in the archive, \
4 unpack/thumbnails: some entries could not be restored/thumbnailed.\n\
Shell completions: av1pack completions bash|zsh|fish; manual: av1pack man."
)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug, -vvv: also FFmpeg's own messages).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress bar and no notes; errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Pack(pack::Args),
    Unpack(unpack::Args),
    Ls(ls::Args),
    Info(info::Args),
    Verify(verify::Args),
    Mount(mount::Args),
    Umount(umount::Args),
    Play(play::Args),
    Report(report::Args),
    Thumbnails(thumbnails::Args),
    Completions(shell::CompletionsArgs),
    Man(shell::ManArgs),
}

/// Options every subcommand sees.
#[derive(Debug, Clone, Copy)]
pub struct Global {
    pub verbose: u8,
    pub quiet: bool,
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    init_logging(cli.verbose, cli.quiet);
    crate::media::init(cli.verbose >= 3);
    let g = Global {
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Pack(a) => pack::run(a, g),
        Command::Unpack(a) => unpack::run(a, g),
        Command::Ls(a) => ls::run(a, g),
        Command::Info(a) => info::run(a, g),
        Command::Verify(a) => verify::run(a, g),
        Command::Mount(a) => mount::run(a, g),
        Command::Umount(a) => umount::run(a, g),
        Command::Play(a) => play::run(a, g),
        Command::Report(a) => report::run(a, g),
        Command::Thumbnails(a) => thumbnails::run(a, g),
        Command::Completions(a) => shell::completions(a, g),
        Command::Man(a) => shell::man(a, g),
    }
}

/// Tunes glibc's allocator for pack and verify, before they start their threads.
///
/// Canvases are tens of megabytes and are freed on other threads than the ones that
/// allocated them (loader, coder, judge, scorers): with one malloc arena they are reused
/// instead of piling up per thread (camera-12mp peak 383 MiB instead of 391-476 MiB, same
/// speed; docs/BENCHMARKS.md).
/// A fixed mmap threshold keeps buffers of 1 MiB and more out of the heap: with glibc's moving
/// threshold they went to the heap too, and the small allocations that live on (index entries)
/// pinned its holes, so peak memory grew with the album (640x480 JPEGs at --crf 18: 190, 212,
/// 264 MiB for 100, 1,000, 3,000 images; now 164-170 MiB flat).
/// Fixing that threshold also fixes glibc's trim threshold at 128 KiB: the heap's free top was
/// given back to the system after every SSIMULACRA2 score and faulted in again, zeroed, by the
/// next (a third of pack's time on 12 MP photos was the kernel's). Up to 64 MiB of free heap
/// top is now kept for reuse: camera-12mp packs in 48-52 s instead of 57-59 s, its peak
/// 350-362 MiB instead of 344 (docs/BENCHMARKS.md).
fn tune_allocator_for_batch_work() {
    // SAFETY: mallopt only tunes glibc's allocator; called before the command starts threads.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let _ = env_logger::Builder::new()
        .filter_level(level)
        // fuser reports an unmount done by someone else as a failure: noise for users.
        .filter_module("fuser", log::LevelFilter::Error)
        // lepton_jpeg reports its thread counts for every file at info, and warns, without
        // the file's name, about what it handles (a truncated JPEG's "Truncating output
        // buffer"): noise for users, whose files come back exact; shown from -vv.
        .filter_module(
            "lepton_jpeg",
            if verbose >= 2 {
                level
            } else {
                log::LevelFilter::Error
            },
        )
        .format_timestamp(None)
        .format_target(false)
        .parse_env("AV1PACK_LOG")
        .try_init();
}

/// Writes a path's raw bytes (names need not be UTF-8).
pub(crate) fn write_path(out: &mut impl std::io::Write, path: &[u8]) -> std::io::Result<()> {
    out.write_all(path)
}
