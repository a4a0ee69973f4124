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
pub mod pixels;
pub mod pngz;
pub mod quality;
pub mod render;
pub mod report;
pub mod serve;
pub mod thumbs;
pub mod unpack;
pub mod verify;
