use super::{color, init, MediaError};
use crate::pixels::YccRef;
use ffmpeg_next::{codec, decoder, format::Pixel, frame, Packet};

/// A decoded frame: the three planes of the whole canvas, as the decoder gave them.
pub struct DecodedFrame {
    /// Frame number (presentation order) inside the track.
    pub pts: i64,
    pub width: u32,
    pub height: u32,
    /// Y', Cb, Cr (full-range BT.601, the JPEG matrix), or G, B, R when `gbr`.
    planes: Planes,
    /// The planes hold G, B, R as they are (lossless RGB coding).
    gbr: bool,
}

/// Where a frame's planes are. 8-bit planes are `height` rows of `stride` bytes each.
enum Planes {
    /// Copied out, one after the other (when the decoder's planes have different strides).
    Owned { buf: Vec<u8>, stride: usize },
    /// The decoder's own frame, held by reference (no copy of its pixels).
    Frame { frame: frame::Video, stride: usize },
    /// The decoder's own 10-bit Y'CbCr frame (two bytes a sample, little-endian, each plane
    /// with the frame's own stride), converted to RGB only when its pixels are asked for: a
    /// read decodes the frames before its own in the GOP, which nobody looks at.
    Deep(frame::Video),
}

impl DecodedFrame {
    /// Whether the frame's planes are 8-bit Y'CbCr, which [`DecodedFrame::ycc`] lends out; a
    /// frame of G, B, R planes (lossless RGB coding) or of 10-bit Y'CbCr ([`Planes::Deep`]) is
    /// read as RGB only.
    pub fn has_ycc_planes(&self) -> bool {
        !self.gbr && !matches!(self.planes, Planes::Deep(_))
    }

    /// Plane `k` of an 8-bit frame, and the bytes from one of its rows to the next (`None`
    /// for a 10-bit frame, whose rows [`deep_rgb`] reads).
    fn plane(&self, k: usize) -> Option<(&[u8], usize)> {
        match &self.planes {
            Planes::Owned { buf, stride } => {
                let n = stride * self.height as usize;
                Some((buf.get(k * n..(k + 1) * n)?, *stride))
            }
            Planes::Frame { frame, stride } => Some((frame.data(k), *stride)),
            Planes::Deep(_) => None,
        }
    }

    /// The Y'CbCr planes of the canvas' top-left `w`×`h` corner (row stride: the canvas
    /// width), or None for an RGB-coded frame or a corner outside the canvas.
    pub fn ycc(&self, w: u32, h: u32) -> Option<YccRef<'_>> {
        if !self.has_ycc_planes() || w == 0 || h == 0 || w > self.width || h > self.height {
            return None;
        }
        let ((y, stride), (cb, _), (cr, _)) = (self.plane(0)?, self.plane(1)?, self.plane(2)?);
        Some(YccRef {
            width: w,
            height: h,
            stride,
            y,
            cb,
            cr,
        })
    }

    /// The canvas' top-left `w`×`h` corner as packed RGB (None when outside the canvas).
    pub fn rgb(&self, w: u32, h: u32) -> Option<Vec<u8>> {
        if w > self.width || h > self.height {
            return None;
        }
        if let Planes::Deep(f) = &self.planes {
            return deep_rgb(f, w as usize, h as usize);
        }
        let w = w as usize;
        let mut rgb = vec![0u8; w * h as usize * 3];
        let ((p0, cw), (p1, _), (p2, _)) = (self.plane(0)?, self.plane(1)?, self.plane(2)?);
        for (row, out) in rgb.chunks_exact_mut(w * 3).enumerate() {
            let a = row * cw;
            let (p0, p1, p2) = (&p0[a..a + w], &p1[a..a + w], &p2[a..a + w]);
            if self.gbr {
                for (i, px) in out.chunks_exact_mut(3).enumerate() {
                    px[0] = p2[i];
                    px[1] = p0[i];
                    px[2] = p1[i];
                }
            } else {
                color::ycbcr_to_rgb_row(p0, p1, p2, out);
            }
        }
        Some(rgb)
    }

    /// The frame's buffer, for [`VideoDecoder::lend`] (empty when the planes are the
    /// decoder's own, which go back to its pool when the frame is dropped).
    fn into_buffer(self) -> Vec<u8> {
        match self.planes {
            Planes::Owned { buf, .. } => buf,
            Planes::Frame { .. } | Planes::Deep(_) => Vec::new(),
        }
    }

    /// The whole canvas as packed RGB.
    pub fn canvas_rgb(&self) -> Vec<u8> {
        self.rgb(self.width, self.height).unwrap_or_default()
    }
}

/// The top-left `w`×`h` corner of a 10-bit Y'CbCr frame as packed 8-bit RGB (its planes were
/// checked against the frame's size when it was decoded).
fn deep_rgb(f: &frame::Video, w: usize, h: usize) -> Option<Vec<u8>> {
    let mut rgb = vec![0u8; w * h * 3];
    for (row, out) in rgb.chunks_exact_mut(w * 3).enumerate() {
        let line = |k: usize| -> Option<&[[u8; 2]]> {
            let a = row * f.stride(k);
            Some(f.data(k).get(a..a + 2 * w)?.as_chunks().0)
        };
        color::ycbcr_to_rgb_row(line(0)?, line(1)?, line(2)?, out);
    }
    Some(rgb)
}

/// A decoder for one track, fed with packets read from the archive.
pub struct VideoDecoder {
    dec: decoder::Video,
    frame: frame::Video,
    /// A plane buffer handed back with [`VideoDecoder::recycle`], reused by the next frame
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
        self.lend(frame.into_buffer());
    }

    /// Gives the decoder a buffer (of an earlier frame) to put its next frame in.
    fn lend(&mut self, buf: Vec<u8>) {
        if buf.capacity() > self.spare.capacity() {
            self.spare = buf;
        }
    }

    /// The decoded 10-bit Y'CbCr frame, held as it is ([`Planes::Deep`]); it is read as RGB
    /// only, converted exactly as pack judged it.
    fn deep_frame(&mut self) -> Result<DecodedFrame, MediaError> {
        let f = &self.frame;
        let (w, h) = (f.width() as usize, f.height() as usize);
        if f.planes() != 3
            || (0..3).any(|k| f.stride(k) < 2 * w || f.data(k).len() < f.stride(k) * h)
        {
            return Err(MediaError::BadFrame(
                "10-bit planes shorter than the frame".into(),
            ));
        }
        let pts = f.pts().or_else(|| f.timestamp()).unwrap_or(-1);
        let frame = std::mem::replace(&mut self.frame, frame::Video::empty());
        Ok(DecodedFrame {
            pts,
            width: w as u32,
            height: h as u32,
            planes: Planes::Deep(frame),
            gbr: false,
        })
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
            Pixel::YUV444P10LE => return self.deep_frame().map(Some),
            other => {
                return Err(MediaError::BadFrame(format!(
                    "pixel format {other:?} (expected 4:4:4)"
                )))
            }
        };
        let (w, h) = (f.width() as usize, f.height() as usize);
        let pts = f.pts().or_else(|| f.timestamp()).unwrap_or(-1);
        let stride = f.stride(0);
        if f.planes() == 3
            && (1..3).all(|k| f.stride(k) == stride)
            && stride >= w
            && (0..3).all(|k| f.data(k).len() >= stride * h)
        {
            // The usual case: hand out the decoder's frame itself (a reference to its buffer).
            let frame = std::mem::replace(&mut self.frame, frame::Video::empty());
            return Ok(Some(DecodedFrame {
                pts,
                width: w as u32,
                height: h as u32,
                planes: Planes::Frame { frame, stride },
                gbr,
            }));
        }
        let mut planes = std::mem::take(&mut self.spare);
        planes.clear();
        planes.reserve(w * h * 3);
        for k in 0..3 {
            let (data, stride) = (f.data(k), f.stride(k));
            for row in 0..h {
                let a = row * stride;
                let Some(line) = data.get(a..a + w) else {
                    return Err(MediaError::BadFrame("plane shorter than the frame".into()));
                };
                planes.extend_from_slice(line);
            }
        }
        Ok(Some(DecodedFrame {
            pts,
            width: w as u32,
            height: h as u32,
            planes: Planes::Owned {
                buf: planes,
                stride: w,
            },
            gbr,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Codec, EncoderConfig, VideoEncoder};

    /// Codes two frames of a colour ramp at QP 0 and decodes them back.
    fn round_trip(codec: Codec, rgb: bool, deep: bool) -> (Vec<u8>, Vec<DecodedFrame>) {
        let (w, h) = (64u32, 48u32);
        let canvas: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 4) as u8, (y * 5) as u8, (x * 3 + y * 2) as u8]
            })
            .collect();
        let cfg = EncoderConfig {
            codec,
            width: w,
            height: h,
            preset: "ultrafast".into(),
            crf: None,
            qp: Some(0),
            gop: 2,
            frame_rate: 25,
            threads: 1,
            lookahead: 1,
            extra_params: String::new(),
            rgb,
            deep,
        };
        let mut enc = VideoEncoder::new(&cfg).unwrap();
        enc.encode(&canvas).unwrap();
        enc.encode(&canvas).unwrap();
        let packets = enc.finish().unwrap();
        let mut dec = VideoDecoder::new(codec.matroska_id(), &enc.extradata().unwrap(), 1).unwrap();
        let mut frames = Vec::new();
        for p in &packets {
            dec.send(&p.data, p.pts, p.dts, p.keyframe).unwrap();
            while let Some(f) = dec.receive().unwrap() {
                frames.push(f);
            }
        }
        dec.send_eof().unwrap();
        while let Some(f) = dec.receive().unwrap() {
            frames.push(f);
        }
        assert_eq!(frames.len(), 2, "{codec:?} rgb={rgb} deep={deep}");
        (canvas, frames)
    }

    #[test]
    fn eight_bit_frames_lend_their_planes() {
        let (_, frames) = round_trip(Codec::H264, false, false);
        assert!(frames[0].has_ycc_planes());
        let ycc = frames[0].ycc(64, 48).unwrap();
        assert_eq!((ycc.width, ycc.height), (64, 48));
    }

    /// 10-bit frames and RGB-coded frames are read as RGB only, and at QP 0 both give the
    /// canvas back exactly.
    #[test]
    fn ten_bit_and_rgb_frames_are_read_as_exact_rgb() {
        for (codec, rgb, deep) in [
            (Codec::H264, false, true),
            (Codec::Hevc, false, true),
            (Codec::Av1, false, true),
            (Codec::H264, true, false),
        ] {
            let (canvas, frames) = round_trip(codec, rgb, deep);
            for f in &frames {
                assert!(!f.has_ycc_planes(), "{codec:?} rgb={rgb} deep={deep}");
                assert!(f.ycc(64, 48).is_none());
                assert_eq!(f.canvas_rgb(), canvas, "{codec:?} rgb={rgb} deep={deep}");
                let corner = f.rgb(10, 3).unwrap();
                let want: Vec<u8> = canvas
                    .chunks_exact(64 * 3)
                    .take(3)
                    .flat_map(|row| row[..30].to_vec())
                    .collect();
                assert_eq!(corner, want);
            }
        }
    }
}
