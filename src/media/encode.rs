use super::{color, init, Codec, MediaError};
use ffmpeg_next::{codec, encoder, format::Pixel, frame, Dictionary, Packet, Rational};
use std::sync::Once;

/// Opts the process out of transparent huge pages, once, before its first encoder. x264 asks
/// the kernel for huge pages for each of its larger buffers (`madvise`), and every encoder
/// session (one per group of frames and quality try) touches only part of them, so the
/// kernel zeroed whole 2 MiB pages for nothing. Measured on the 2-core machine (the same
/// archives): docpages 44.9 -> 35.3 s of pack (system time 16 -> 8 s), screenshots
/// 49.1 -> 45.0 s, camera-12mp 23.0 -> 19.5 s; also with the kernel's setting at `always`
/// (docpages 43.5 -> 33.8 s). docs/BENCHMARKS.md, "Transparent huge pages off".
fn small_pages() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: PR_SET_THP_DISABLE takes integer arguments and changes only this
            // process's memory policy.
            let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
            if rc != 0 {
                log::debug!(
                    "could not turn transparent huge pages off: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    });
}

/// How to code one track.
#[derive(Debug, Clone)]
pub struct EncoderConfig {
    pub codec: Codec,
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
    /// Extra `key=value:key=value` options for the encoder (x264-params, x265-params,
    /// aom-params; for NVENC, plain FFmpeg options).
    pub extra_params: String,
    /// Code the R, G, B planes as they are (GBR order, identity matrix) instead of converting
    /// to YCbCr: with QP 0 this is pixel-exact RGB.
    pub rgb: bool,
    /// Code 10-bit Y'CbCr (from 8-bit RGB, which comes back exactly at 10 bits; 8-bit Y'CbCr
    /// loses up to 3 levels a channel, which alone kept photos below SSIMULACRA2 90). Only
    /// with `!rgb`, and with a codec that takes it ([`Codec::takes_ten_bits`]).
    pub deep: bool,
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
    deep: bool,
    codec: Codec,
    /// Stream headers that came as packet side data (libaom's wrapper sends them so).
    side_extradata: Option<Vec<u8>>,
    /// The session's packets so far, in decode order.
    packets: Vec<EncodedPacket>,
}

impl VideoEncoder {
    pub fn new(cfg: &EncoderConfig) -> Result<Self, MediaError> {
        init(false);
        small_pages();
        let name = cfg.codec.encoder();
        let codec =
            encoder::find_by_name(name).ok_or_else(|| MediaError::NoEncoder(name.to_string()))?;
        let open_err = |error| MediaError::OpenEncoder {
            codec: name.to_string(),
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
        let deep = cfg.deep && !cfg.rgb;
        let pix_fmt = if deep {
            Pixel::YUV444P10LE
        } else {
            Pixel::YUV444P
        };
        enc.set_format(pix_fmt);
        enc.set_color_range(ffmpeg_next::color::Range::JPEG);
        enc.set_colorspace(if cfg.rgb {
            ffmpeg_next::color::Space::RGB
        } else {
            ffmpeg_next::color::Space::BT470BG
        });
        enc.set_time_base(Rational::new(1, cfg.frame_rate as i32));
        enc.set_frame_rate(Some(Rational::new(cfg.frame_rate as i32, 1)));
        enc.set_gop(cfg.gop.max(1));
        // SAFETY: the context is not open yet; keyint_min is a plain field.
        unsafe {
            (*enc.as_mut_ptr()).keyint_min = 1;
        }
        // set_flags replaces every flag: keep closed GOPs explicitly (FIELD-NOTES).
        enc.set_flags(
            codec::Flags::GLOBAL_HEADER | codec::Flags::CLOSED_GOP | codec::Flags::BITEXACT,
        );
        let opts = options(cfg);
        let enc = enc.open_as_with(codec, opts).map_err(open_err)?;
        let frame = frame::Video::new(pix_fmt, cfg.width, cfg.height);
        Ok(VideoEncoder {
            enc,
            frame,
            next_pts: 0,
            width: cfg.width,
            height: cfg.height,
            rgb: cfg.rgb,
            deep,
            codec: cfg.codec,
            side_extradata: None,
            packets: Vec::new(),
        })
    }

    /// Codec private data as Matroska wants it (avcC for H.264, hvcC for HEVC, av1C and the
    /// sequence header for AV1): x264 and x265 give it when they open, libaom with its first
    /// packet, so ask once the session is coded.
    pub fn extradata(&self) -> Result<Vec<u8>, MediaError> {
        // SAFETY: the context is open; extradata is either null or extradata_size bytes.
        let raw = unsafe {
            let ctx = self.enc.as_ptr();
            let ptr = (*ctx).extradata;
            let len = (*ctx).extradata_size;
            if ptr.is_null() || len <= 0 {
                self.side_extradata.as_deref().unwrap_or(&[])
            } else {
                std::slice::from_raw_parts(ptr, len as usize)
            }
        };
        let bad = |what: &str| {
            MediaError::BadFrame(format!(
                "{}: its stream headers are not {what} ({} bytes: {:02x?})",
                self.codec.encoder(),
                raw.len(),
                &raw[..raw.len().min(24)]
            ))
        };
        match self.codec.matroska_id() {
            "V_MPEGH/ISO/HEVC" => super::hevc::hvcc_from_annexb(raw).ok_or_else(|| bad("HEVC")),
            "V_AV1" => super::av1::av1c(raw).ok_or_else(|| bad("an AV1 sequence header")),
            _ => Ok(super::avc::avcc_from_annexb(raw)),
        }
    }

    /// Codes one canvas (packed RGB, `width * height * 3` bytes); its packets come from
    /// [`VideoEncoder::finish`].
    pub fn encode(&mut self, rgb: &[u8]) -> Result<(), MediaError> {
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
        // Writes straight into the frame's planes (two bytes a sample at 10 bits).
        let (p0, p1, p2) = planes_mut(&mut self.frame);
        let bytes = if self.deep { 2 * w } else { w };
        for (row, src) in rgb.chunks_exact(w * 3).enumerate() {
            let (y, cb, cr) = (
                &mut p0[row * strides[0]..row * strides[0] + bytes],
                &mut p1[row * strides[1]..row * strides[1] + bytes],
                &mut p2[row * strides[2]..row * strides[2] + bytes],
            );
            if self.deep {
                let (y, cb, cr) = (
                    y.as_chunks_mut().0,
                    cb.as_chunks_mut().0,
                    cr.as_chunks_mut().0,
                );
                color::rgb_to_ycbcr_row::<[u8; 2]>(src, y, cb, cr);
            } else if self.rgb {
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

    /// Flushes the encoder and gives the session's packets in decode order, with decode
    /// timestamps of our own ([`settle_dts`]).
    pub fn finish(&mut self) -> Result<Vec<EncodedPacket>, MediaError> {
        self.enc.send_eof().map_err(MediaError::Encode)?;
        self.drain()?;
        let mut packets = std::mem::take(&mut self.packets);
        settle_dts(&mut packets);
        Ok(packets)
    }

    fn drain(&mut self) -> Result<(), MediaError> {
        let out = &mut self.packets;
        let mut packet = Packet::empty();
        loop {
            match self.enc.receive_packet(&mut packet) {
                Ok(()) => {
                    if self.side_extradata.is_none() {
                        self.side_extradata = packet
                            .side_data()
                            .find(|d| {
                                d.kind() == ffmpeg_next::packet::side_data::Type::NewExtraData
                            })
                            .map(|d| d.data().to_vec());
                    }
                    let raw = packet.data().unwrap_or(&[]);
                    let data = match self.codec.matroska_id() {
                        "V_MPEGH/ISO/HEVC" => super::hevc::to_length_prefixed(raw),
                        "V_AV1" => super::av1::to_matroska(raw),
                        _ => super::avc::to_length_prefixed(raw),
                    };
                    let pts = packet.pts().unwrap_or(0);
                    out.push(EncodedPacket {
                        data,
                        pts,
                        // Set by `finish`: libx265 leaves a one-frame session's dts
                        // uninitialised (a different number every run, measured).
                        dts: pts,
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
        Ok(())
    }
}

/// Decode timestamps from the presentation order alone: the k-th packet in decode order gets
/// the k-th smallest pts, moved back by the reorder delay so that no packet is decoded after
/// it is shown. The same packets always get the same timestamps, whatever the encoder wrote.
pub fn settle_dts(packets: &mut [EncodedPacket]) {
    let mut sorted: Vec<i64> = packets.iter().map(|p| p.pts).collect();
    sorted.sort_unstable();
    let delay = packets
        .iter()
        .zip(&sorted)
        .map(|(p, s)| s - p.pts)
        .max()
        .unwrap_or(0)
        .max(0);
    for (p, s) in packets.iter_mut().zip(&sorted) {
        p.dts = s - delay;
    }
}

/// The encoder's options: rate, preset, keyframes, threads, look-ahead, per codec.
fn options(cfg: &EncoderConfig) -> Dictionary<'static> {
    let mut opts = Dictionary::new();
    let gop = cfg.gop.max(1);
    let join = |base: String| {
        if cfg.extra_params.is_empty() {
            base
        } else {
            format!("{base}:{}", cfg.extra_params)
        }
    };
    match cfg.codec {
        Codec::H264 => {
            opts.set("preset", &cfg.preset);
            if let Some(qp) = cfg.qp {
                opts.set("qp", &qp.to_string());
            } else if let Some(crf) = cfg.crf {
                opts.set("crf", &format!("{crf}"));
            }
            let mut params = format!("keyint={gop}:min-keyint=1:rc-lookahead={}", cfg.lookahead);
            if let Some(asm) = x264_asm_without_avx512() {
                params.push_str(":asm=");
                params.push_str(&asm);
            }
            opts.set("x264-params", &join(params));
        }
        Codec::Hevc => {
            opts.set("preset", &cfg.preset);
            // x265 takes its thread pool from its own options, not FFmpeg's: fix it (the
            // output depends on it). Closed GOPs (every keyframe an IDR a decoder can start
            // at), no version SEI (it differs between sessions), headers once in hvcC.
            let mut params = format!(
                "keyint={gop}:min-keyint=1:rc-lookahead={}:open-gop=0:info=0:repeat-headers=0:\
                 annexb=1:pools={}:frame-threads={}:log-level=error",
                cfg.lookahead.max(1),
                cfg.threads.max(1),
                cfg.threads.clamp(1, 2),
            );
            if cfg.lookahead <= 4 {
                // x265 refuses a look-ahead shorter than its B-frame runs.
                params.push_str(&format!(":bframes={}", cfg.lookahead.max(1) - 1));
            }
            match (cfg.qp, cfg.crf) {
                // QP 0 is lossless in x264, not in x265 without its own switch.
                (Some(0), _) => params.push_str(":lossless=1"),
                (Some(qp), _) => opts.set("qp", &qp.to_string()),
                (None, Some(crf)) => opts.set("crf", &format!("{crf}")),
                (None, None) => {}
            }
            opts.set("x265-params", &join(params));
        }
        Codec::Av1 => {
            opts.set("cpu-used", av1_speed(&cfg.preset));
            opts.set("row-mt", "1");
            opts.set("lag-in-frames", &cfg.lookahead.min(35).to_string());
            match (cfg.qp, cfg.crf) {
                (Some(0), _) => {
                    opts.set("crf", "0");
                    opts.set("aom-params", &join("lossless=1".into()));
                }
                (qp, crf) => {
                    // Without a bit rate, a CRF is libaom's constant quality mode ("q").
                    let crf = qp
                        .map(|q| q as f32)
                        .or(crf)
                        .unwrap_or(30.0)
                        .round()
                        .clamp(0.0, 63.0) as u32;
                    opts.set("crf", &crf.to_string());
                    // libaom filters a keyframe towards the frames after it (denoising it):
                    // right for video, wrong for photos judged one by one. On 8 noisy photos
                    // the keyframes scored 68-70 where the frames after them scored 85-90 at
                    // the same CRF, so no rate reached 90 and all were kept as files (8.7 MB);
                    // without the filter they were coded at every image >= 90.6 in 4.1 MB
                    // (docs/BENCHMARKS.md, "AV1 keyframes unfiltered").
                    opts.set("aom-params", &join("enable-keyframe-filtering=0".into()));
                }
            }
        }
        Codec::H264Nvenc | Codec::HevcNvenc => {
            opts.set("preset", nvenc_preset(&cfg.preset));
            opts.set("tune", "hq");
            opts.set("rc", "constqp");
            let qp = cfg
                .qp
                .or_else(|| cfg.crf.map(|c| c.round().clamp(0.0, 51.0) as u32))
                .unwrap_or(20);
            opts.set("qp", &qp.to_string());
            opts.set(
                "profile",
                if cfg.codec == Codec::H264Nvenc {
                    "high444p"
                } else {
                    "rext"
                },
            );
            opts.set("bf", "0");
            for kv in cfg.extra_params.split(':').filter(|s| !s.is_empty()) {
                if let Some((k, v)) = kv.split_once('=') {
                    opts.set(k, v);
                }
            }
        }
    }
    opts
}

/// On a CPU with AVX-512, the instruction sets x264 may use, without AVX-512: x264's AVX-512
/// code reads memory it never wrote, so a session coded again (the quality loop's retries)
/// gave different bytes from run to run (5 packs of 15 images at 320x240: 5 archives; with
/// this list, or without asm at all, every run the same; docs/FORMAT.md, "Determinism").
/// `None` elsewhere: x264 picks for itself.
fn x264_asm_without_avx512() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return None;
        }
        let has = [
            ("SSE3", std::arch::is_x86_feature_detected!("sse3")),
            ("SSSE3", std::arch::is_x86_feature_detected!("ssse3")),
            ("SSE4.1", std::arch::is_x86_feature_detected!("sse4.1")),
            ("SSE4.2", std::arch::is_x86_feature_detected!("sse4.2")),
            ("AVX", std::arch::is_x86_feature_detected!("avx")),
            ("FMA3", std::arch::is_x86_feature_detected!("fma")),
            ("BMI1", std::arch::is_x86_feature_detected!("bmi1")),
            ("BMI2", std::arch::is_x86_feature_detected!("bmi2")),
            ("AVX2", std::arch::is_x86_feature_detected!("avx2")),
            ("LZCNT", std::arch::is_x86_feature_detected!("lzcnt")),
        ];
        // x86-64 always has MMX2, SSE and SSE2; CPUs with AVX-512 have fast SSE2 and 64-byte
        // cache lines (what x264's own detection adds for them).
        let mut names = vec!["MMX2", "SSE", "SSE2", "SSE2Fast", "Cache64"];
        names.extend(has.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
        Some(names.join(","))
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// x264/x265 preset names → libaom's cpu-used (0 slowest .. 8 fastest).
fn av1_speed(preset: &str) -> &'static str {
    match preset {
        "ultrafast" => "8",
        "superfast" => "7",
        "veryfast" | "faster" => "6",
        "fast" => "5",
        "medium" => "4",
        "slow" => "3",
        "slower" => "2",
        "veryslow" => "1",
        "placebo" => "0",
        _ => "4",
    }
}

/// x264/x265 preset names → NVENC's p1 (fastest) .. p7 (slowest).
fn nvenc_preset(preset: &str) -> &'static str {
    match preset {
        "ultrafast" | "superfast" => "p1",
        "veryfast" => "p2",
        "faster" => "p3",
        "fast" => "p4",
        "medium" => "p5",
        "slow" => "p6",
        _ => "p7",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(pts: &[i64], garbage_dts: i64) -> Vec<EncodedPacket> {
        pts.iter()
            .map(|&pts| EncodedPacket {
                data: Vec::new(),
                pts,
                dts: garbage_dts,
                keyframe: pts == 0,
            })
            .collect()
    }

    /// Opening an encoder turns transparent huge pages off for the process (what the kernel
    /// says through `PR_GET_THP_DISABLE`, and `THP_enabled` in /proc/self/status).
    #[test]
    #[cfg(target_os = "linux")]
    fn an_encoder_turns_huge_pages_off() {
        // The probe opens an encoder and codes a frame with it.
        Codec::H264.probe().unwrap();
        // SAFETY: PR_GET_THP_DISABLE reads this process's setting and takes no pointers.
        let off = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(off, 1, "PR_GET_THP_DISABLE");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert!(line.ends_with('0'), "{line}");
        }
    }

    #[test]
    fn dts_follow_from_the_presentation_order_alone() {
        // One frame: whatever the encoder wrote, its dts is its pts.
        let mut one = packets(&[0], -4_529_927_318_389_351_683);
        settle_dts(&mut one);
        assert_eq!(one[0].dts, 0);

        // I P B B (decode order) shown as 0 3 1 2: one frame of reorder delay.
        let mut b = packets(&[0, 3, 1, 2], 7);
        settle_dts(&mut b);
        let dts: Vec<i64> = b.iter().map(|p| p.dts).collect();
        assert_eq!(dts, [-1, 0, 1, 2]);
        assert!(b.iter().all(|p| p.dts <= p.pts), "decoded before shown");

        // A pyramid I P B b b shown as 0 4 2 1 3: two frames of delay.
        let mut pyr = packets(&[0, 4, 2, 1, 3], 0);
        settle_dts(&mut pyr);
        let dts: Vec<i64> = pyr.iter().map(|p| p.dts).collect();
        assert_eq!(dts, [-2, -1, 0, 1, 2]);
        assert!(pyr.iter().all(|p| p.dts <= p.pts));
    }
}
