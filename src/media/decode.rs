use super::{color, init, MediaError};
use ffmpeg_next::{codec, decoder, format::Pixel, frame, Packet};

/// A decoded frame as packed RGB of the whole canvas.
pub struct DecodedFrame {
    /// Frame number (presentation order) inside the track.
    pub pts: i64,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// A decoder for one track, fed with packets read from the archive.
pub struct VideoDecoder {
    dec: decoder::Video,
    frame: frame::Video,
    /// An RGB buffer handed back with [`VideoDecoder::recycle`], reused by the next frame
    /// (a fresh multi-megabyte buffer per frame costs page faults on every frame).
    spare: Vec<u8>,
}

// SAFETY: the decoder context is owned exclusively by this value and FFmpeg's decoder contexts
// may move between threads (they must not be shared, which &mut self methods ensure).
unsafe impl Send for VideoDecoder {}

impl VideoDecoder {
    /// `codec_id` is the Matroska codec ID of the track.
    pub fn new(codec_id: &str, extradata: &[u8], threads: usize) -> Result<Self, MediaError> {
        init(false);
        let id = match codec_id {
            "V_MPEGH/ISO/HEVC" => codec::Id::HEVC,
            "V_AV1" => codec::Id::AV1,
            "V_MPEG4/ISO/AVC" => codec::Id::H264,
            other => return Err(MediaError::NoDecoder(other.to_string())),
        };
        let codec = decoder::find(id).ok_or_else(|| MediaError::NoDecoder(codec_id.to_string()))?;
        let mut ctx = codec::context::Context::new_with_codec(codec);
        // SAFETY: extradata must be av_malloc'ed with padding; the context frees it.
        unsafe {
            let pad = ffmpeg_next::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
            let buf = ffmpeg_next::ffi::av_mallocz(extradata.len() + pad) as *mut u8;
            if buf.is_null() {
                return Err(MediaError::OpenDecoder(ffmpeg_next::Error::Other {
                    errno: libc::ENOMEM,
                }));
            }
            std::ptr::copy_nonoverlapping(extradata.as_ptr(), buf, extradata.len());
            let raw = ctx.as_mut_ptr();
            (*raw).extradata = buf;
            (*raw).extradata_size = extradata.len() as i32;
        }
        if threads > 1 {
            ctx.set_threading(codec::threading::Config {
                kind: codec::threading::Type::Frame,
                count: threads,
                ..Default::default()
            });
        }
        let dec = ctx.decoder().video().map_err(MediaError::OpenDecoder)?;
        Ok(VideoDecoder {
            dec,
            frame: frame::Video::empty(),
            spare: Vec::new(),
        })
    }

    /// Sends one packet; call `receive` until it returns None afterwards.
    pub fn send(
        &mut self,
        data: &[u8],
        pts: i64,
        dts: i64,
        keyframe: bool,
    ) -> Result<(), MediaError> {
        let mut packet = Packet::copy(data);
        packet.set_pts(Some(pts));
        packet.set_dts(Some(dts));
        if keyframe {
            packet.set_flags(ffmpeg_next::packet::Flags::KEY);
        }
        self.dec.send_packet(&packet).map_err(MediaError::Decode)
    }

    /// Signals the end of the packets (then `receive` drains the delayed frames).
    pub fn send_eof(&mut self) -> Result<(), MediaError> {
        self.dec.send_eof().map_err(MediaError::Decode)
    }

    /// Forgets all state, ready to start again at a keyframe.
    pub fn reset(&mut self) {
        self.dec.flush();
    }

    /// Hands a frame's buffer back once its pixels have been copied out, for the next frame.
    pub fn recycle(&mut self, frame: DecodedFrame) {
        if frame.rgb.capacity() > self.spare.capacity() {
            self.spare = frame.rgb;
        }
    }

    /// Returns the next decoded frame, if one is ready.
    pub fn receive(&mut self) -> Result<Option<DecodedFrame>, MediaError> {
        match self.dec.receive_frame(&mut self.frame) {
            Ok(()) => {}
            Err(ffmpeg_next::Error::Other {
                errno: ffmpeg_next::util::error::EAGAIN,
            })
            | Err(ffmpeg_next::Error::Eof) => return Ok(None),
            Err(e) => return Err(MediaError::Decode(e)),
        }
        let f = &self.frame;
        let gbr = match f.format() {
            Pixel::YUV444P | Pixel::YUVJ444P => false,
            Pixel::GBRP => true,
            other => {
                return Err(MediaError::BadFrame(format!(
                    "pixel format {other:?} (expected 4:4:4)"
                )))
            }
        };
        let (w, h) = (f.width() as usize, f.height() as usize);
        let pts = f.pts().or_else(|| f.timestamp()).unwrap_or(-1);
        let mut rgb = std::mem::take(&mut self.spare);
        rgb.clear();
        rgb.resize(w * h * 3, 0);
        let (d0, d1, d2) = (f.data(0), f.data(1), f.data(2));
        let (s0, s1, s2) = (f.stride(0), f.stride(1), f.stride(2));
        for (row, out) in rgb.chunks_exact_mut(w * 3).enumerate() {
            let (a, b, c) = (row * s0, row * s1, row * s2);
            let (Some(y), Some(cb), Some(cr)) =
                (d0.get(a..a + w), d1.get(b..b + w), d2.get(c..c + w))
            else {
                return Err(MediaError::BadFrame("plane shorter than the frame".into()));
            };
            if gbr {
                // Planes hold G, B, R as they are (lossless RGB coding).
                for (i, px) in out.chunks_exact_mut(3).enumerate() {
                    px[0] = cr[i];
                    px[1] = y[i];
                    px[2] = cb[i];
                }
            } else {
                color::ycbcr_to_rgb_row(y, cb, cr, out);
            }
        }
        Ok(Some(DecodedFrame {
            pts,
            width: w as u32,
            height: h as u32,
            rgb,
        }))
    }
}
