//! Coding one track GOP by GOP: encode, decode back, render, score, and code again at a higher
//! quality (or keep the files) until every image meets the target.

use super::*;

/// The alpha track that goes with a colour track: coded losslessly, GOP by GOP beside it.
pub(super) struct AlphaTrack {
    pub(super) t: usize,
    pub(super) extradata: Option<Vec<u8>>,
    pub(super) next_frame: u64,
}

/// Codes a track GOP by GOP. Each GOP is its own encoder session (closed, starting with a
/// keyframe, with headers that do not depend on the session: x264's `stitchable`, x265
/// without its info SEI, so every session's codec private data is identical), decoded back at once,
/// rendered as unpack and the mount will serve it, and scored against the original; a GOP
/// with an image below the target is coded again at the next CRF of the ladder.
pub(super) struct GopCoder<'a> {
    pub(super) t: usize,
    pub(super) cw: u32,
    pub(super) ch: u32,
    pub(super) gop: u32,
    pub(super) opts: &'a PackOptions,
    pub(super) track_name: &'a str,
    pub(super) extradata: Option<Vec<u8>>,
    pub(super) next_frame: u64,
    pub(super) alpha: Option<AlphaTrack>,
    /// The walked items (to read a JPEG or PNG again for its recoded size).
    pub(super) items: &'a [Item],
    /// Sizes of the JPEG (Lepton) and PNG (`pngz`) files' recoded forms measured so far, by
    /// item (an image in several tiles is measured once); `u64::MAX` where the file does not
    /// recode.
    pub(super) kept_sizes: HashMap<usize, u64>,
    /// Sizes of the PNG files' drafts (`pngz::draft`) made so far, by item; `u64::MAX` where
    /// the file does not recode.
    pub(super) draft_sizes: HashMap<usize, u64>,
    /// The recoded forms measured for the GOP being judged: stored with a file that is kept,
    /// dropped once the GOP is judged.
    pub(super) kept_forms: HashMap<usize, Recoded>,
    /// The share of coefficients the track's last recoded JPEG took ([`Thin`]).
    pub(super) thin_hint: Option<f64>,
    /// The track's last recoded JPEG, which the next may be stored against.
    pub(super) chain: Chain,
    /// Threads of one encoder session (see [`session_threads`]).
    pub(super) threads: usize,
    /// Code 10-bit Y'CbCr ([`deep_track`]).
    pub(super) deep: bool,
}

/// Bytes of one canvas in the encoder: three samples a pixel, of two bytes at 10 bits (what
/// look-ahead and parallel sessions are budgeted by).
pub(super) fn encoder_frame_bytes(cw: u32, ch: u32, deep: bool) -> u64 {
    u64::from(cw) * u64::from(ch) * 3 * if deep { 2 } else { 1 }
}

/// Whether a track is coded as 10-bit Y'CbCr: with a codec that takes it
/// ([`Codec::takes_ten_bits`]), short of lossless, when none of its images is a JPEG. RGB
/// originals need the two bits to come back within what the codec loses (8-bit Y'CbCr alone
/// cost photos 12 points of SSIMULACRA2: at QP 0 they scored 88), with x264, x265 and libaom
/// alike. Tracks with JPEGs stay 8-bit: their files are JPEGs made straight from the decoded
/// 8-bit planes (the mount's fast path, `Renderer::uses_planes`), and 10 bits did not save them
/// either: burst-1080p's GOPs coded at 10 bits cost at least 1.4x the JPEGs (docs/BENCHMARKS.md).
pub(super) fn deep_track(opts: &PackOptions, jobs: &[(Job, Item, Probe)]) -> bool {
    opts.codec.takes_ten_bits()
        && !opts.lossless
        && !jobs.iter().any(|(_, _, p)| {
            matches!(
                p,
                Probe::Image {
                    format: ImageFormat::Jpeg,
                    ..
                }
            )
        })
}

pub(super) enum Attempt {
    Coded(Vec<media::EncodedPacket>, Vec<Judged>),
    /// The coded GOP (its bytes) is at least as large as keeping its files (their bytes).
    TooBig(u64, u64),
    HeadersDiffer,
}

/// One tile of a GOP after decoding: its served file and score (and its pixels, for images
/// in several tiles).
pub(super) struct Judged {
    pub(super) rendered: Rendered,
    pub(super) score: Option<f64>,
    pub(super) pixels: Option<Picture>,
}

/// One encoder session's output for a GOP, before it is judged.
pub(super) struct Encoded {
    pub(super) crf: Option<f32>,
    pub(super) qp: Option<u32>,
    pub(super) extradata: Vec<u8>,
    pub(super) packets: Vec<media::EncodedPacket>,
}

/// The alpha planes of a GOP, coded losslessly and checked.
pub(super) struct AlphaGop {
    pub(super) packets: Vec<media::EncodedPacket>,
    pub(super) bytes: u64,
}

impl GopCoder<'_> {
    fn media_err(&self, error: MediaError) -> PackError {
        PackError::Media {
            path: self.track_name.to_string(),
            error,
        }
    }

    fn config(&self, crf: Option<f32>, qp: Option<u32>) -> EncoderConfig {
        let frame_bytes = encoder_frame_bytes(self.cw, self.ch, self.deep);
        let lookahead = (LOOKAHEAD_BUDGET / frame_bytes.max(1)).clamp(1, 40) as u32;
        let mut params = match self.opts.codec {
            Codec::H264 => format!("{BASE_X264_PARAMS}:stitchable=1"),
            Codec::Hevc => BASE_X265_PARAMS.to_string(),
            _ => String::new(),
        };
        if !self.opts.extra_params.is_empty() {
            if !params.is_empty() {
                params.push(':');
            }
            params.push_str(&self.opts.extra_params);
        }
        EncoderConfig {
            codec: self.opts.codec,
            width: self.cw,
            height: self.ch,
            preset: self.opts.preset.clone(),
            crf,
            qp,
            gop: self.gop,
            frame_rate: self.opts.frame_rate,
            threads: self.threads,
            lookahead,
            extra_params: params,
            rgb: self.opts.lossless,
            deep: self.deep,
        }
    }

    /// Codes the alpha planes of the batch losslessly (x264 at QP 0; grey survives the colour
    /// conversion exactly) and checks, by decoding them, that they come back identical.
    fn code_alpha(&mut self, batch: &[Ready]) -> Result<Result<AlphaGop, String>, PackError> {
        let Some(alpha) = &self.alpha else {
            return Ok(Err("no alpha track was planned".into()));
        };
        let mut cfg = self.config(None, Some(0));
        // Alpha is always H.264 at QP 0, whatever codes the colour planes; the user's encoder
        // options are for the colour planes; nothing may make alpha lossy.
        cfg.codec = Codec::H264;
        cfg.deep = false;
        cfg.extra_params = "stitchable=1".into();
        let mut encoder = VideoEncoder::new(&cfg).map_err(|e| self.media_err(e))?;
        let extradata = encoder.extradata().map_err(|e| self.media_err(e))?;
        if alpha
            .extradata
            .as_ref()
            .is_some_and(|first| *first != extradata)
        {
            return Ok(Err("alpha stream headers changed".into()));
        }
        let canvases: Vec<&Vec<u8>> = batch.iter().filter_map(|r| r.alpha.as_ref()).collect();
        for c in &canvases {
            encoder.encode(c).map_err(|e| self.media_err(e))?;
        }
        let packets = encoder.finish().map_err(|e| self.media_err(e))?;
        drop(encoder);
        let frames = self.decode_back(Codec::H264, &extradata, &packets, canvases.len())?;
        for (k, (f, c)) in frames.iter().zip(&canvases).enumerate() {
            let same = f.as_ref().is_some_and(|f| f.canvas_rgb() == **c);
            if !same {
                return Ok(Err(format!(
                    "alpha plane {k} of the group did not come back exactly from lossless coding"
                )));
            }
        }
        if let Some(a) = self.alpha.as_mut() {
            a.extradata.get_or_insert(extradata);
        }
        let bytes = packets.iter().map(|p| p.data.len() as u64).sum();
        Ok(Ok(AlphaGop { packets, bytes }))
    }

    /// Decodes a coded GOP back: frame k of the GOP at index k.
    fn decode_back(
        &self,
        codec: Codec,
        extradata: &[u8],
        packets: &[media::EncodedPacket],
        n: usize,
    ) -> Result<Vec<Option<media::DecodedFrame>>, PackError> {
        let codec_id = codec.matroska_id();
        let mut decoder =
            VideoDecoder::new(codec_id, extradata, 1).map_err(|e| self.media_err(e))?;
        let mut frames: Vec<Option<media::DecodedFrame>> = (0..n).map(|_| None).collect();
        let mut take = |decoder: &mut VideoDecoder| -> Result<(), MediaError> {
            while let Some(f) = decoder.receive()? {
                if let Some(slot) = usize::try_from(f.pts).ok().and_then(|i| frames.get_mut(i)) {
                    *slot = Some(f);
                }
            }
            Ok(())
        };
        for p in packets {
            decoder
                .send(&p.data, p.pts, p.dts, p.keyframe)
                .map_err(|e| self.media_err(e))?;
            take(&mut decoder).map_err(|e| self.media_err(e))?;
        }
        decoder.send_eof().map_err(|e| self.media_err(e))?;
        take(&mut decoder).map_err(|e| self.media_err(e))?;
        Ok(frames)
    }

    /// Codes one GOP until every image meets the target (or keeps its files), writes it, and
    /// returns each tile's outcome. `ahead` is the first attempt, if it was coded already.
    pub(super) fn code(
        &mut self,
        batch: Vec<Ready>,
        writer: &mut ArchiveWriter,
        mut ahead: Option<Encoded>,
    ) -> Result<Vec<TileDone>, PackError> {
        let fail_all = |batch: Vec<Ready>, outcome: &dyn Fn() -> Outcome| {
            batch
                .into_iter()
                .map(|r| TileDone {
                    job: r.job,
                    outcome: outcome(),
                    pixels: None,
                })
                .collect()
        };
        // Alpha planes first: lossless, one try; their bytes count against the budget.
        let alpha_gop = if batch.iter().any(|r| r.alpha.is_some()) {
            match self.code_alpha(&batch)? {
                Ok(a) => Some(a),
                Err(reason) => {
                    log::warn!(
                        "{}: frames {}..: {reason}",
                        self.track_name,
                        self.next_frame
                    );
                    return Ok(fail_all(batch, &|| Outcome::Failed(reason.clone())));
                }
            }
        } else {
            None
        };
        let alpha_bytes = alpha_gop.as_ref().map_or(0, |a| a.bytes);
        let attempts = self.attempts();
        // Coding must beat keeping the files (JPEGs Lepton-compressed, the rest as they are).
        let original: u64 = batch.iter().map(|r| tile_share(r, r.file_size)).sum();
        let share_of = |format: ImageFormat| -> u64 {
            batch
                .iter()
                .filter(|r| r.entry.format == format)
                .map(|r| tile_share(r, r.file_size))
                .sum()
        };
        let (jpeg, png) = (share_of(ImageFormat::Jpeg), share_of(ImageFormat::Png));
        // Metadata blocks are stored in the index beside the frames, and the index twice:
        // they count against the budget as many times (an album's EXIF thumbnails made coded
        // JPEGs 1.02x the originals at --crf 18 when they counted once).
        let metadata: u64 = archive::INDEX_COPIES
            * batch
                .iter()
                .map(|r| {
                    let bytes = r
                        .entry
                        .metadata
                        .iter()
                        .map(|m| match m {
                            // A directory entry, and its data where it does not fit in it.
                            archive::MetaBlock::TiffTag { data, .. } => data.len() as u64 + 12,
                            // A marker or a chunk type, length and CRC.
                            _ => m.len() as u64 + 8,
                        })
                        .sum();
                    tile_share(r, bytes)
                })
                .sum::<u64>();
        let mut budget = Budget {
            overhead: metadata + alpha_bytes,
            raw: original,
            jpeg,
            jpeg_floor: jpeg_floor(self.opts),
            png,
            exact: None,
            drafts: None,
        };
        let mut last = None;
        let mut n = 0;
        while n < attempts.len() {
            let (crf, qp) = attempts[n];
            let final_try = n + 1 == attempts.len();
            let (packets, judged) = match self.attempt(
                &batch,
                crf,
                qp,
                &mut budget,
                ahead.take(),
            )? {
                Attempt::Coded(p, j) => (p, j),
                Attempt::TooBig(coded, kept) => {
                    // Higher quality only costs more: the original files are the better deal.
                    let files = match batch.len() {
                        1 => "a file".to_string(),
                        n => format!("{n} files"),
                    };
                    let reason = format!(
                        "{SMALLER_AS_IS} ({coded} coded bytes, {alpha_bytes} of alpha and {metadata} of metadata vs {kept} kept as {files})"
                    );
                    log::debug!(
                        "{}: frames {}..: {reason}",
                        self.track_name,
                        self.next_frame
                    );
                    return Ok(fail_all(batch, &|| Outcome::Smaller(reason.clone())));
                }
                Attempt::HeadersDiffer => {
                    log::debug!(
                        "{}: crf {crf:?} qp {qp:?} changes the stream headers; skipped",
                        self.track_name
                    );
                    n += 1;
                    continue;
                }
            };
            let worst = judged
                .iter()
                .filter_map(|j| j.score)
                .fold(f64::INFINITY, f64::min);
            if self.opts.lossless && worst < 100.0 {
                let reason = "lossless coding did not give the pixels back exactly".to_string();
                log::warn!(
                    "{}: frames {}..: {reason}",
                    self.track_name,
                    self.next_frame
                );
                return Ok(fail_all(batch, &|| Outcome::Failed(reason.clone())));
            }
            let target = self.opts.target.map_or(f64::NEG_INFINITY, |t| t.min_score);
            if worst >= target || final_try {
                if worst < target {
                    // The promise is every image at the target: a group that cannot reach it
                    // keeps its original files instead (nothing coded is written).
                    let reason = format!(
                        "{UNREACHABLE_TARGET} (best {worst:.2} < {target} in its group of {})",
                        batch.len()
                    );
                    log::debug!(
                        "{}: frames {}..: {reason}",
                        self.track_name,
                        self.next_frame
                    );
                    return Ok(fail_all(batch, &|| Outcome::Failed(reason.clone())));
                }
                last = Some((packets, judged));
                break;
            }
            log::debug!(
                "{}: frames {}..: worst score {worst:.1} at crf {crf:?}; trying higher quality",
                self.track_name,
                self.next_frame
            );
            // Far below the target: skip a step of the ladder.
            n += if target - worst > 3.0 && n + 2 < attempts.len() {
                2
            } else {
                1
            };
        }
        let Some((packets, judged)) = last else {
            let reason = "could not be coded with this track's stream headers".to_string();
            return Ok(fail_all(batch, &|| Outcome::Failed(reason.clone())));
        };
        let base = self.next_frame;
        if base == 0 {
            let extradata = self.extradata.clone().unwrap_or_default();
            writer.set_extradata(self.t, extradata)?;
        }
        for p in &packets {
            let pts = u64::try_from(p.pts)
                .map_err(|_| PackError::Pipeline(format!("negative pts {}", p.pts)))?;
            writer.write_packet(self.t, &p.data, base + pts, base as i64 + p.dts, p.keyframe)?;
        }
        let alpha_base = match (&mut self.alpha, alpha_gop) {
            (Some(alpha), Some(gop)) => {
                let base = alpha.next_frame;
                if base == 0 {
                    writer.set_extradata(alpha.t, alpha.extradata.clone().unwrap_or_default())?;
                    writer.share_timeline(alpha.t, self.t)?;
                }
                for p in &gop.packets {
                    let pts = u64::try_from(p.pts)
                        .map_err(|_| PackError::Pipeline(format!("negative pts {}", p.pts)))?;
                    writer.write_packet(
                        alpha.t,
                        &p.data,
                        base + pts,
                        base as i64 + p.dts,
                        p.keyframe,
                    )?;
                }
                alpha.next_frame += batch.iter().filter(|r| r.alpha.is_some()).count() as u64;
                base
            }
            _ => 0,
        };
        self.next_frame += batch.len() as u64;
        let mut alpha_frame = alpha_base;
        Ok(batch
            .into_iter()
            .zip(judged)
            .enumerate()
            .map(|(k, (mut ready, j))| {
                let tile = ready.job.tile;
                if let Some(t) = ready.entry.tiles.get_mut(tile) {
                    t.frame = base + k as u64;
                }
                if ready.alpha.is_some() {
                    if let Some(a) = ready.entry.alpha.get_mut(tile) {
                        a.frame = alpha_frame;
                    }
                    alpha_frame += 1;
                }
                ready.entry.rendered = j.rendered;
                ready.entry.score = j.score.map(|s| s as f32);
                TileDone {
                    job: ready.job,
                    outcome: Outcome::Image(ready.entry),
                    pixels: j.pixels,
                }
            })
            .collect())
    }

    /// Codes the batch once at `crf`/`qp` (one encoder session of `threads` threads). Reads only the track's
    /// settings, so it can run on another thread while the previous GOP is judged.
    pub(super) fn encode(
        &self,
        batch: &[Ready],
        crf: Option<f32>,
        qp: Option<u32>,
        threads: usize,
    ) -> Result<Encoded, PackError> {
        let config = EncoderConfig {
            threads,
            ..self.config(crf, qp)
        };
        let mut encoder = VideoEncoder::new(&config).map_err(|e| self.media_err(e))?;
        for r in batch {
            encoder.encode(&r.canvas).map_err(|e| self.media_err(e))?;
        }
        let packets = encoder.finish().map_err(|e| self.media_err(e))?;
        // Read once the session is coded: libaom's wrapper only knows it after a packet.
        let extradata = encoder.extradata().map_err(|e| self.media_err(e))?;
        Ok(Encoded {
            crf,
            qp,
            extradata,
            packets,
        })
    }

    /// The first setting `code` tries for a GOP (what `encode` runs ahead of time).
    pub(super) fn first_attempt(&self) -> (Option<f32>, Option<u32>) {
        self.attempts()
            .first()
            .copied()
            .unwrap_or((self.opts.crf, None))
    }

    /// The rate settings to try, best compression first.
    fn attempts(&self) -> Vec<(Option<f32>, Option<u32>)> {
        match (self.opts.qp, self.opts.target) {
            (Some(qp), _) => vec![(None, Some(qp))],
            (None, None) => vec![(self.opts.crf, None)],
            (None, Some(target)) => target
                .ladder(self.opts.codec)
                .iter()
                .map(|&c| (Some(c), None))
                .collect(),
        }
    }

    /// `recode` of each job, in parallel. A failed worker leaves its files unmeasured: they
    /// count at their own size.
    fn recode_each<J: Sync>(
        &self,
        jobs: &[J],
        recode: impl Fn(&J) -> Option<Recoded> + Sync,
    ) -> Vec<Option<Recoded>> {
        crate::par::map(jobs, recode).unwrap_or_else(|e| {
            log::warn!("{}: recoded sizes: {e}", self.track_name);
            vec![None; jobs.len()]
        })
    }

    /// A floor of what keeping the batch's files takes: PNGs at their drafts' size (made here
    /// in parallel, and kept to be settled if it comes to that), JPEGs at their floor
    /// ([`jpeg_floor`]), shares of it for tiles.
    fn kept_at_least(&mut self, batch: &[Ready]) -> u64 {
        let mut todo: Vec<usize> = batch
            .iter()
            .filter(|r| r.entry.format == ImageFormat::Png)
            .map(|r| r.job.item)
            .filter(|i| !self.kept_sizes.contains_key(i) && !self.draft_sizes.contains_key(i))
            .collect();
        todo.dedup();
        let items = self.items;
        let drafts = self.recode_each(&todo, |&i| {
            let bytes = std::fs::read(&items[i].abs).ok()?;
            crate::pngz::draft(&bytes).map(|d| Recoded::PngDraft(d, xxh3_64(&bytes)))
        });
        for (i, draft) in todo.into_iter().zip(drafts) {
            self.draft_sizes
                .insert(i, draft.as_ref().map_or(u64::MAX, |d| d.len() as u64));
            if let Some(d) = draft {
                self.kept_forms.insert(i, d);
            }
        }
        batch
            .iter()
            .map(|r| {
                let whole = match r.entry.format {
                    ImageFormat::Png => self
                        .kept_sizes
                        .get(&r.job.item)
                        .or_else(|| self.draft_sizes.get(&r.job.item))
                        .map_or(r.file_size, |&n| n.min(r.file_size)),
                    ImageFormat::Jpeg => {
                        let (num, den) = jpeg_floor(self.opts);
                        r.file_size * num / den
                    }
                    _ => r.file_size,
                };
                tile_share(r, whole)
            })
            .sum()
    }

    /// How the track's kept JPEGs are recoded in their own DCT now: the target, and the
    /// share the last one stored took as the first guess.
    pub(super) fn thin(&self) -> Option<Thin> {
        self.opts.thin_target().map(|target| Thin {
            target,
            hint: self.thin_hint,
        })
    }

    /// The batch's files as the archive would keep them: JPEGs at their Lepton size, or
    /// recoded in their own DCT where pack does that and it is smaller, and PNGs at their
    /// recoded size (where that takes them and is smaller), shares of it for tiles.
    fn kept_exactly(&mut self, batch: &[Ready]) -> u64 {
        let recodes = |f: ImageFormat| matches!(f, ImageFormat::Jpeg | ImageFormat::Png);
        // The files not measured yet, recoded in parallel (PNGs from their drafts, if made).
        let mut todo: Vec<(usize, ImageFormat)> = batch
            .iter()
            .filter(|r| recodes(r.entry.format))
            .map(|r| (r.job.item, r.entry.format))
            .filter(|(i, _)| !self.kept_sizes.contains_key(i))
            .collect();
        todo.dedup();
        let jobs: Vec<(usize, ImageFormat, Option<Recoded>)> = todo
            .into_iter()
            .map(|(i, f)| (i, f, self.kept_forms.remove(&i)))
            .collect();
        let items = self.items;
        // The same as the files of this GOP get if they are stored.
        let thin = self.thin();
        let coded = self.recode_each(&jobs, |(i, format, made)| {
            let bytes = std::fs::read(&items[*i].abs).ok()?;
            let hash = xxh3_64(&bytes);
            match (format, made) {
                (ImageFormat::Jpeg, _) => jpeg_kept_form(&bytes, hash, thin, &items[*i]),
                // Checked by decoding only if the file is kept (`verbatim_form`).
                (_, Some(Recoded::PngDraft(d, from))) if *from == hash => {
                    crate::pngz::settle(d.clone(), &bytes).map(|c| Recoded::Png(c, hash))
                }
                _ => crate::pngz::measure(&bytes).map(|c| Recoded::Png(c, hash)),
            }
        });
        for ((i, _, _), coded) in jobs.into_iter().zip(coded) {
            let size = coded.as_ref().map_or(u64::MAX, |c| c.len() as u64);
            self.kept_sizes.insert(i, size);
            if let Some(c) = coded {
                self.kept_forms.insert(i, c);
            }
        }
        batch
            .iter()
            .map(|r| {
                let whole = if recodes(r.entry.format) {
                    self.kept_sizes
                        .get(&r.job.item)
                        .map_or(r.file_size, |&n| n.min(r.file_size))
                } else {
                    r.file_size
                };
                tile_share(r, whole)
            })
            .sum()
    }

    /// Codes the batch once (or takes the coding done ahead); returns its packets and each
    /// tile's served file and score.
    fn attempt(
        &mut self,
        batch: &[Ready],
        crf: Option<f32>,
        qp: Option<u32>,
        budget: &mut Budget,
        ahead: Option<Encoded>,
    ) -> Result<Attempt, PackError> {
        let Encoded {
            extradata, packets, ..
        } = match ahead {
            Some(e) if e.crf == crf && e.qp == qp => e,
            _ => self.encode(batch, crf, qp, self.threads)?,
        };
        match &self.extradata {
            None => self.extradata = Some(extradata.clone()),
            // All GOPs of a track must share one set of headers.
            Some(first) if *first != extradata => return Ok(Attempt::HeadersDiffer),
            Some(_) => {}
        }
        let coded: u64 = packets.iter().map(|p| p.data.len() as u64).sum();
        if let Some(kept) = budget.beats(coded, |m| match m {
            Measure::Drafts => self.kept_at_least(batch),
            Measure::Exact => self.kept_exactly(batch),
        }) {
            return Ok(Attempt::TooBig(coded, kept));
        }
        let frames = self.decode_back(self.opts.codec, &extradata, &packets, batch.len())?;

        // Render and score each tile, in parallel.
        let scoring = self.opts.target.is_some();
        let lossless = self.opts.lossless;
        let (cw, ch) = (self.cw, self.ch);
        let judge = |r: &Ready, f: &Option<media::DecodedFrame>| -> Result<Judged, PackError> {
            let f = f.as_ref().ok_or_else(|| {
                PackError::Pipeline("a frame did not come back from the decoder".into())
            })?;
            let tile = r.tile;
            let cut = |canvas: &[u8]| {
                pixels::extract(canvas, cw, ch, tile.width, tile.height, tile.rotated)
                    .ok_or_else(|| PackError::Pipeline("tile outside canvas".into()))
            };
            // Alpha is lossless (checked when it was coded): the original's is the decoded one.
            let alpha = match &r.alpha {
                Some(c) => Some(pixels::first_channel(&cut(c)?)),
                None => None,
            };
            // The decoded pixels as RGB, made only where they are used: a JPEG made from the
            // frame's planes is scored on its own decoded bytes.
            let decoded = || -> Result<Picture, PackError> {
                Ok(Picture {
                    rgb: frames::tile_rgb(&tile, f)
                        .map_err(|_| PackError::Pipeline("tile outside canvas".into()))?,
                    alpha: alpha.clone(),
                })
            };
            // The file the mount and unpack will make (from the frame's planes, or from RGB).
            let original = OutputFormat::Original;
            let (file, rgb) = match frames::render_from_planes(
                &r.entry,
                f,
                original,
                render::Renderer::CURRENT,
            ) {
                Some(file) => (file, None),
                None => {
                    let rgb = decoded()?;
                    (
                        render::render(&r.entry, &rgb, original, render::Renderer::CURRENT),
                        Some(rgb),
                    )
                }
            };
            let file = file.map_err(|error| PackError::Render {
                path: format!("frame {}", f.pts),
                error,
            })?;
            // Tiles of a larger image are kept for its assembly; lossless coding compares them.
            let rgb = match rgb {
                None if r.job.tiles > 1 || lossless => Some(decoded()?),
                rgb => rgb,
            };
            let keep = if r.job.tiles > 1 { rgb.clone() } else { None };
            let score = if lossless {
                // Pixel-exact or not: no perceptual score needed.
                let original = cut(&r.canvas)?;
                let exact = rgb.as_ref().is_some_and(|p| p.rgb == original);
                Some(if exact { 100.0 } else { 0.0 })
            } else if scoring {
                let original = Picture {
                    rgb: cut(&r.canvas)?,
                    alpha: alpha.clone(),
                };
                let served = served_pixels(&r.entry, &file, move || rgb.map_or_else(decoded, Ok))?;
                Some(
                    quality::score_picture(&original, &served)
                        .map_err(|e| PackError::Pipeline(format!("scoring: {e}")))?
                        .ssimulacra2,
                )
            } else {
                None
            };
            Ok(Judged {
                rendered: Rendered {
                    size: file.len() as u64,
                    hash: xxh3_64(&file),
                },
                score,
                pixels: keep,
            })
        };
        let pairs: Vec<_> = batch.iter().zip(&frames).collect();
        let judged = crate::par::map(&pairs, |(r, f)| judge(r, f))
            .map_err(|_| PackError::Pipeline("scoring thread panicked".into()))?
            .into_iter()
            .collect::<Result<Vec<Judged>, PackError>>()?;
        Ok(Attempt::Coded(packets, judged))
    }
}

/// The pixels a viewer gets from the served file: the file decoded where the renderer is lossy
/// (JPEG, grey), else the decoded pixels themselves (`decoded`, made only then; a 16-bit PNG's
/// samples, v × 257, decode back to v).
pub(super) fn served_pixels(
    entry: &ImageEntry,
    file: &[u8],
    decoded: impl FnOnce() -> Result<Picture, PackError>,
) -> Result<Picture, PackError> {
    if entry.format != ImageFormat::Jpeg && !entry.color.is_grey() {
        return decoded();
    }
    Ok(Picture::from_dynamic(
        image::load_from_memory(file)
            .map_err(|e| PackError::Pipeline(format!("rendered file does not decode: {e}")))?,
    ))
}

/// Cuts tile `job.tile` out of a decoded image and places it (and its alpha) on canvases.
pub(super) fn prepare(
    d: &Decoded,
    job: Job,
    t: usize,
    alpha_t: Option<usize>,
    cw: u32,
    ch: u32,
) -> Ready {
    let grid = pixels::tile_grid(d.entry.width, d.entry.height);
    let (x, y, w, h) = grid
        .get(job.tile)
        .copied()
        .unwrap_or((0, 0, d.entry.width, d.entry.height));
    let tiles: Vec<Tile> = grid
        .iter()
        .map(|&(x, y, width, height)| Tile {
            track: t as u32,
            frame: 0,
            x,
            y,
            width,
            height,
            rotated: job.rotated,
        })
        .collect();
    let mut entry = Box::new(d.entry.clone());
    entry.alpha = match (&d.alpha, alpha_t) {
        (Some(_), Some(ta)) => tiles
            .iter()
            .map(|tile| Tile {
                track: ta as u32,
                ..*tile
            })
            .collect(),
        _ => Vec::new(),
    };
    entry.tiles = tiles;
    let whole = grid.len() == 1;
    let canvas = if whole {
        pixels::place(&d.rgb, job.rotated, cw, ch)
    } else {
        let part = image::imageops::crop_imm(&d.rgb, x, y, w, h).to_image();
        pixels::place(&part, job.rotated, cw, ch)
    };
    let alpha = match (&d.alpha, alpha_t) {
        (Some(a), Some(_)) => {
            let part = if whole {
                pixels::grey_to_rgb(a)
            } else {
                pixels::grey_to_rgb(&image::imageops::crop_imm(a, x, y, w, h).to_image())
            };
            Some(pixels::place(&part, job.rotated, cw, ch))
        }
        _ => None,
    };
    Ready {
        job,
        tile: Tile {
            track: t as u32,
            frame: 0,
            x,
            y,
            width: w,
            height: h,
            rotated: job.rotated,
        },
        entry,
        canvas,
        alpha,
        file_size: d.file_size,
    }
}
