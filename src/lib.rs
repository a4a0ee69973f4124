//! av1pack: pack a folder of images into one Matroska video, and get it back.

pub mod album;
pub mod archive;
pub mod bytelru;
pub mod cli;
pub mod compress;
pub mod daemon;
pub mod dedupe;
pub mod frames;
pub mod fs;
pub mod fuse;
pub mod jpegthin;
pub mod lepton;
pub mod media;
pub mod meta;
pub mod order;
pub mod pack;
pub mod par;
pub mod partial;
pub mod pixels;
pub mod pngz;
pub mod quality;
pub mod render;
pub mod report;
pub mod serve;
pub mod ssim2;
pub mod thumbs;
pub mod unpack;
pub mod verify;

/// The user's cache folder: `$XDG_CACHE_HOME`, else `~/.cache` (the XDG base directory rule;
/// thumbnails and the mount's logs go under it).
pub fn cache_home() -> Option<std::path::PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
}

/// A byte count for messages, in binary units: "812 B", "426.8 KiB", "128.0 MiB".
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
