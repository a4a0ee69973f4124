//! The video codecs av1pack can code with, what each needs from FFmpeg, and how to find out
//! whether this machine's FFmpeg can actually use one (by opening it).

use super::{init, EncoderConfig, MediaError, VideoEncoder};

/// A codec (and the FFmpeg encoder used for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 High 4:4:4 with libx264.
    H264,
    /// HEVC Main 4:4:4 with libx265.
    Hevc,
    /// AV1 High profile (4:4:4) with libaom.
    Av1,
    /// H.264 with NVIDIA's hardware encoder.
    H264Nvenc,
    /// HEVC with NVIDIA's hardware encoder.
    HevcNvenc,
}

impl Codec {
    pub const ALL: [Codec; 5] = [
        Codec::H264,
        Codec::Hevc,
        Codec::Av1,
        Codec::H264Nvenc,
        Codec::HevcNvenc,
    ];

    /// The name users type (`--codec`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Hevc => "hevc",
            Codec::Av1 => "av1",
            Codec::H264Nvenc => "h264-nvenc",
            Codec::HevcNvenc => "hevc-nvenc",
        }
    }

    /// The FFmpeg encoder's name.
    pub fn encoder(self) -> &'static str {
        match self {
            Codec::H264 => "libx264",
            Codec::Hevc => "libx265",
            Codec::Av1 => "libaom-av1",
            Codec::H264Nvenc => "h264_nvenc",
            Codec::HevcNvenc => "hevc_nvenc",
        }
    }

    /// The codec for an FFmpeg encoder name (as recorded in an archive's settings).
    pub fn from_encoder(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.encoder() == name)
    }

    /// The codec for a user-facing name.
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether its encoder takes 10-bit 4:4:4 Y'CbCr (`yuv444p10le`), which gives 8-bit RGB back
    /// exactly: libx264, libx265 and libaom do. NVENC takes 4:4:4 beyond 8 bits only as 16-bit
    /// samples (`yuv444p16le`); that is neither wired up nor measured, so it stays at 8 bits.
    pub fn takes_ten_bits(self) -> bool {
        match self {
            Codec::H264 | Codec::Hevc | Codec::Av1 => true,
            Codec::H264Nvenc | Codec::HevcNvenc => false,
        }
    }

    /// Matroska codec ID of the tracks it codes.
    pub fn matroska_id(self) -> &'static str {
        match self {
            Codec::H264 | Codec::H264Nvenc => "V_MPEG4/ISO/AVC",
            Codec::Hevc | Codec::HevcNvenc => "V_MPEGH/ISO/HEVC",
            Codec::Av1 => "V_AV1",
        }
    }

    /// What to use instead when this one cannot be opened: a hardware encoder falls back to the
    /// software encoder of the same format, any other to H.264 (libx264); H.264 has none.
    pub fn fallback(self) -> Option<Codec> {
        match self {
            Codec::H264 => None,
            Codec::HevcNvenc => Some(Codec::Hevc),
            Codec::H264Nvenc | Codec::Hevc | Codec::Av1 => Some(Codec::H264),
        }
    }

    /// A GPU encoder (NVENC).
    pub fn is_hardware(self) -> bool {
        matches!(self, Codec::H264Nvenc | Codec::HevcNvenc)
    }

    /// The range of `--crf` and `--qp` values this codec takes.
    pub fn rate_range(self) -> (u32, u32) {
        match self {
            Codec::Av1 => (0, 63),
            _ => (0, 51),
        }
    }

    /// Opens the encoder on a tiny canvas (4:4:4, as av1pack codes) and codes one frame: the
    /// only reliable test (a hardware encoder is listed by FFmpeg whether or not there is a
    /// GPU, and an encoder may be listed but refuse 4:4:4).
    pub fn probe(self) -> Result<(), MediaError> {
        init(false);
        let cfg = EncoderConfig {
            codec: self,
            width: 64,
            height: 64,
            preset: "ultrafast".into(),
            crf: None,
            qp: Some(30),
            gop: 1,
            frame_rate: 25,
            threads: 1,
            lookahead: 1,
            extra_params: String::new(),
            rgb: false,
            deep: false,
        };
        let mut enc = VideoEncoder::new(&cfg)?;
        enc.encode(&vec![128u8; 64 * 64 * 3])?;
        let packets = enc.finish()?;
        if packets.is_empty() {
            return Err(MediaError::BadFrame(format!(
                "{} gave no packet for a test frame",
                self.encoder()
            )));
        }
        Ok(())
    }

    /// The codec to use when `self` is asked for: itself when it opens, else the first of its
    /// fallbacks that does, with a message naming what was asked, why it is not used, and
    /// what is used instead.
    pub fn resolve(self) -> Result<(Codec, Option<String>), MediaError> {
        let Err(first) = self.probe() else {
            return Ok((self, None));
        };
        let mut next = self.fallback();
        while let Some(c) = next {
            if c.probe().is_ok() {
                let note = format!(
                    "--codec {} is not available here ({}: {first}); using {} ({}) instead",
                    self.name(),
                    self.encoder(),
                    c.name(),
                    c.encoder()
                );
                return Ok((c, Some(note)));
            }
            next = c.fallback();
        }
        Err(first)
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
