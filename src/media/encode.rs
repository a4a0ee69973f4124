use super::{color, init, MediaError};
use ffmpeg_next::{codec, encoder, format::Pixel, frame, Dictionary, Packet, Rational};

/// How to code one track.
#[derive(Debug, Clone)]
pub struct EncoderConfig {
    /// FFmpeg encoder name, e.g. "libx264".
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub preset: String,
    pub crf: Option<f32>,
    pub qp: Option<u32>,
    /// Maximum distance between keyframes.
    pub gop: u32,
    /// Nominal frame rate told to the encoder (x264's CRF depends on it).
    pub frame_rate: u32,
    /// Encoder threads. Fixed, not derived from the machine: the output depends on it.
    pub threads: usize,
    /// Frames the rate control may look ahead (bounded for large canvases to bound memory).
    pub lookahead: u32,
    /// Extra `key=value:key=value` options for x264/x265.
    pub extra_params: String,
    /// Code the R, G, B planes as they are (GBR order, identity matrix) instead of converting
    /// to YCbCr: with QP 0 this is pixel-exact RGB.
    pub rgb: bool,
}

/// One coded frame as it leaves the encoder.
#[derive(Debug, Clone)]
pub struct EncodedPacket {
    pub data: Vec<u8>,
    /// Frame number (presentation order).
    pub pts: i64,
    pub dts: i64,
    pub keyframe: bool,
}

/// A video encoder fed with packed RGB canvases of a fixed size.
pub struct VideoEncoder {
    enc: encoder::Video,
    frame: frame::Video,
    next_pts: i64,
    width: u32,
    height: u32,
    rgb: bool,
}

impl VideoEncoder {
    pub fn new(cfg: &EncoderConfig) -> Result<Self, MediaError> {
        init(false);
        let codec = encoder::find_by_name(&cfg.codec)
            .ok_or_else(|| MediaError::NoEncoder(cfg.codec.clone()))?;
        let open_err = |error| MediaError::OpenEncoder {
            codec: cfg.codec.clone(),
            width: cfg.width,
            height: cfg.height,
            error,
        };
        let mut ctx = codec::context::Context::new_with_codec(codec);
        ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            count: cfg.threads.max(1),
            ..Default::default()
        });
        let mut enc = ctx.encoder().video().map_err(open_err)?;
        enc.set_width(cfg.width);
        enc.set_height(cfg.height);
        enc.set_format(Pixel::YUV444P);
        enc.set_color_range(ffmpeg_next::color::Range::JPEG);
        enc.set_colorspace(if cfg.rgb {
            ffmpeg_next::color::Space::RGB
        } else {
            ffmpeg_next::color::Space::BT470BG
        });
        enc.set_time_base(Rational::new(1, cfg.frame_rate as i32));
        enc.set_frame_rate(Some(Rational::new(cfg.frame_rate as i32, 1)));
        enc.set_gop(cfg.gop.max(1));
        // set_flags replaces every flag: keep closed GOPs explicitly (FIELD-NOTES).
        enc.set_flags(
            codec::Flags::GLOBAL_HEADER | codec::Flags::CLOSED_GOP | codec::Flags::BITEXACT,
        );
        let mut opts = Dictionary::new();
        opts.set("preset", &cfg.preset);
        if let Some(qp) = cfg.qp {
            opts.set("qp", &qp.to_string());
        } else if let Some(crf) = cfg.crf {
            opts.set("crf", &format!("{crf}"));
        }
        let mut params = format!(
            "keyint={}:min-keyint=1:rc-lookahead={}",
            cfg.gop.max(1),
            cfg.lookahead
        );
        if !cfg.extra_params.is_empty() {
            params.push(':');
            params.push_str(&cfg.extra_params);
        }
        if cfg.codec == "libx264" {
            opts.set("x264-params", &params);
        }
        let enc = enc.open_as_with(codec, opts).map_err(open_err)?;
        let frame = frame::Video::new(Pixel::YUV444P, cfg.width, cfg.height);
        Ok(VideoEncoder {
            enc,
            frame,
            next_pts: 0,
            width: cfg.width,
            height: cfg.height,
            rgb: cfg.rgb,
        })
    }

    /// Codec private data as Matroska wants it (avcC for H.264), once the encoder is open.
    pub fn extradata(&self) -> Vec<u8> {
        // SAFETY: the context is open; extradata is either null or extradata_size bytes.
        unsafe {
            let ctx = self.enc.as_ptr();
            let ptr = (*ctx).extradata;
            let len = (*ctx).extradata_size;
            if ptr.is_null() || len <= 0 {
                Vec::new()
            } else {
                super::avc::avcc_from_annexb(std::slice::from_raw_parts(ptr, len as usize))
            }
        }
    }

    /// Codes one canvas (packed RGB, `width * height * 3` bytes); returns the packets ready.
    pub fn encode(&mut self, rgb: &[u8]) -> Result<Vec<EncodedPacket>, MediaError> {
        let w = self.width as usize;
        if rgb.len() != w * self.height as usize * 3 {
            return Err(MediaError::BadFrame(format!(
                "canvas of {} bytes for {}x{}",
                rgb.len(),
                self.width,
                self.height
            )));
        }
        // The encoder may still hold a reference to the previous buffer.
        // SAFETY: a valid allocated frame; av_frame_make_writable reallocates if shared.
        let ret = unsafe { ffmpeg_next::ffi::av_frame_make_writable(self.frame.as_mut_ptr()) };
        if ret < 0 {
            return Err(MediaError::Encode(ffmpeg_next::Error::from(ret)));
        }
        let strides = [
            self.frame.stride(0),
            self.frame.stride(1),
            self.frame.stride(2),
        ];
        // Writes straight into the frame's planes.
        let (p0, p1, p2) = planes_mut(&mut self.frame);
        for (row, src) in rgb.chunks_exact(w * 3).enumerate() {
            let (y, cb, cr) = (
                &mut p0[row * strides[0]..row * strides[0] + w],
                &mut p1[row * strides[1]..row * strides[1] + w],
                &mut p2[row * strides[2]..row * strides[2] + w],
            );
            if self.rgb {
                // H.264's GBR order: G in the first plane, then B, then R.
                for (i, px) in src.chunks_exact(3).enumerate() {
                    y[i] = px[1];
                    cb[i] = px[2];
                    cr[i] = px[0];
                }
            } else {
                color::rgb_to_ycbcr_row(src, y, cb, cr);
            }
        }
        self.frame.set_pts(Some(self.next_pts));
        self.frame.set_color_range(ffmpeg_next::color::Range::JPEG);
        self.next_pts += 1;
        self.enc
            .send_frame(&self.frame)
            .map_err(MediaError::Encode)?;
        self.drain()
    }

    /// Flushes the encoder: the last packets.
    pub fn finish(&mut self) -> Result<Vec<EncodedPacket>, MediaError> {
        self.enc.send_eof().map_err(MediaError::Encode)?;
        self.drain()
    }

    fn drain(&mut self) -> Result<Vec<EncodedPacket>, MediaError> {
        let mut out = Vec::new();
        let mut packet = Packet::empty();
        loop {
            match self.enc.receive_packet(&mut packet) {
                Ok(()) => {
                    let data = super::avc::to_length_prefixed(packet.data().unwrap_or(&[]));
                    let pts = packet.pts().unwrap_or(0);
                    out.push(EncodedPacket {
                        data,
                        pts,
                        dts: packet.dts().unwrap_or(pts),
                        keyframe: packet.is_key(),
                    });
                }
                Err(ffmpeg_next::Error::Other {
                    errno: ffmpeg_next::util::error::EAGAIN,
                })
                | Err(ffmpeg_next::Error::Eof) => break,
                Err(e) => return Err(MediaError::Encode(e)),
            }
        }
        Ok(out)
    }
}

/// The three planes of a planar frame, mutably at once.
fn planes_mut(frame: &mut frame::Video) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let h = frame.height() as usize;
    let s = [frame.stride(0), frame.stride(1), frame.stride(2)];
    // SAFETY: the three planes of an allocated planar frame are disjoint buffers of
    // stride * height bytes each.
    unsafe {
        let f = frame.as_mut_ptr();
        (
            std::slice::from_raw_parts_mut((*f).data[0], s[0] * h),
            std::slice::from_raw_parts_mut((*f).data[1], s[1] * h),
            std::slice::from_raw_parts_mut((*f).data[2], s[2] * h),
        )
    }
}
