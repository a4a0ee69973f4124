//! The only module that touches FFmpeg (through ffmpeg-next): encoding canvases into packets
//! and decoding packets back into pixels. Colour conversion is ours (see `color`), so that the
//! pixels a decoder gives back are the same on every machine and FFmpeg build.

pub mod av1;
pub mod avc;
mod codecs;
pub mod color;
mod decode;
mod encode;
pub mod hevc;

pub use codecs::Codec;
pub use decode::{DecodedFrame, VideoDecoder};
pub use encode::{EncodedPacket, EncoderConfig, VideoEncoder};

use std::sync::Once;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("FFmpeg has no encoder named {0} (is the ffmpeg build complete?)")]
    NoEncoder(String),
    #[error("FFmpeg has no decoder for {0}")]
    NoDecoder(String),
    #[error("could not open the {codec} encoder for {width}x{height}: {error}")]
    OpenEncoder {
        codec: String,
        width: u32,
        height: u32,
        error: ffmpeg_next::Error,
    },
    #[error("could not open the decoder: {0}")]
    OpenDecoder(ffmpeg_next::Error),
    #[error("encoding failed: {0}")]
    Encode(ffmpeg_next::Error),
    #[error("decoding failed: {0}")]
    Decode(ffmpeg_next::Error),
    #[error("unexpected frame from the decoder: {0}")]
    BadFrame(String),
}

static INIT: Once = Once::new();

/// Initialises FFmpeg once; its own logging stays quiet unless `verbose`. The first call
/// decides (the command line's, before the library's own calls).
pub fn init(verbose: bool) {
    INIT.call_once(|| {
        let _ = ffmpeg_next::init();
        use ffmpeg_next::util::log::{set_level, Level};
        set_level(if verbose {
            Level::Warning
        } else {
            Level::Quiet
        });
    });
}
