//! av1pack: pack a folder of images into one Matroska video, and get it back.

pub mod album;
pub mod archive;
pub mod cli;
pub mod compress;
pub mod daemon;
pub mod dedupe;
pub mod frames;
pub mod fs;
pub mod fuse;
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
