//! av1pack: pack a folder of images into one Matroska video, and get it back.

pub mod archive;
pub mod media;
pub mod meta;
pub mod pixels;
pub mod quality;
pub mod render;
pub mod album;
pub mod pack;
pub mod frames;
pub mod unpack;
pub mod verify;
pub mod cli;
