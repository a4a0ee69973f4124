//! A track's pipeline: loader, coder and renderer threads, and the assembly of images coded
//! in several tiles.

use super::*;

pub(super) enum Outcome {
    Image(Box<ImageEntry>),
    /// Could not be coded (the reason is reported).
    Failed(String),
    /// Coded fine, but the original file is smaller: kept as it is.
    Smaller(String),
    /// Kept as it is (for either reason above), and already stored.
    Stored(archive::Blob, String),
}

/// An image read and decoded, ready to be cut into tiles and placed on canvases.
pub(super) struct Decoded {
    pub(super) entry: ImageEntry,
    pub(super) rgb: image::RgbImage,
    pub(super) alpha: Option<image::GrayImage>,
    /// The file's size: what keeping it as it is costs at most (a JPEG may take less, in its
    /// Lepton form: see `Budget`).
    pub(super) file_size: u64,
}

/// A tile read and placed on its canvas (or why it could not be).
pub(super) struct Loaded {
    pub(super) job: Job,
    pub(super) result: Result<Ready, String>,
    /// Tiles of the track after this one.
    pub(super) left: usize,
}

/// Frames held per GOP while its quality is checked: bounded in memory for large canvases.
pub(super) const GOP_MEMORY: u64 = 64 << 20;
/// Canvases up to this size (bytes of RGB) code GOP k+1 while GOP k is judged; larger ones
/// take turns, to bound memory (one GOP in flight instead of two).
pub(super) const OVERLAP_FRAME_BYTES: u64 = 16 << 20;

/// One tile ready to code: its image's entry so far, its canvas and its alpha canvas (the
/// alpha plane as grey RGB) when the image has one.
pub(super) struct Ready {
    pub(super) job: Job,
    /// Where this tile is in its image (a copy of `entry.tiles[job.tile]`).
    pub(super) tile: Tile,
    pub(super) entry: Box<ImageEntry>,
    pub(super) canvas: Vec<u8>,
    pub(super) alpha: Option<Vec<u8>>,
    /// The whole file's size (see `Decoded::file_size`).
    pub(super) file_size: u64,
}

/// What coding did with one tile; `pixels` (decoded) are kept for images in several tiles,
/// which are rendered whole once all their tiles are in.
pub(super) struct TileDone {
    pub(super) job: Job,
    pub(super) outcome: Outcome,
    pub(super) pixels: Option<Picture>,
}

/// Tiles of an image coded so far.
pub(super) struct Pending {
    pub(super) entry: Option<Box<ImageEntry>>,
    /// The decoded tiles put together (the same assembly unpack and the mount use).
    pub(super) asm: Option<Assembly>,
    /// The whole picture, once the assembly has every tile.
    pub(super) pic: Option<Picture>,
    pub(super) left: usize,
    pub(super) failure: Option<Outcome>,
}

/// Collects the tiles of images coded in several, and renders each image whole once its last
/// tile is in (to record the served file's size); single-tile images pass straight through.
#[derive(Default)]
pub(super) struct Assembler {
    pub(super) pending: BTreeMap<usize, Pending>,
    pub(super) out: Vec<(usize, Outcome)>,
}

impl Assembler {
    fn take(&mut self, done: TileDone) -> Result<(), PackError> {
        let job = done.job;
        if job.tiles <= 1 {
            self.out.push((job.item, done.outcome));
            return Ok(());
        }
        let p = self.pending.entry(job.item).or_insert_with(|| Pending {
            entry: None,
            asm: None,
            pic: None,
            left: job.tiles,
            failure: None,
        });
        p.left = p.left.saturating_sub(1);
        match done.outcome {
            Outcome::Image(e) if p.failure.is_none() => {
                let k = job.tile;
                let Some(px) = done.pixels else {
                    return Err(PackError::Pipeline(
                        "a tile came back without pixels".into(),
                    ));
                };
                if p.asm.is_none() {
                    let asm = Assembly::new(&e)
                        .map_err(|err| PackError::Pipeline(format!("tiled image: {err}")))?;
                    p.asm = Some(asm);
                }
                let entry: &ImageEntry = match &mut p.entry {
                    None => p.entry.insert(e),
                    Some(pe) => {
                        if let (Some(a), Some(b)) = (pe.tiles.get_mut(k), e.tiles.get(k)) {
                            *a = *b;
                        }
                        if let (Some(a), Some(b)) = (pe.alpha.get_mut(k), e.alpha.get(k)) {
                            *a = *b;
                        }
                        pe.score = match (pe.score, e.score) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        pe
                    }
                };
                let pieces = [
                    (Plane::Color, Some(Piece::Color(px.rgb))),
                    (Plane::Alpha, px.alpha.map(Piece::Alpha)),
                ];
                if let Some(asm) = p.asm.as_mut() {
                    for (plane, piece) in pieces {
                        let Some(piece) = piece else { continue };
                        let u = Use {
                            entry: job.item,
                            plane,
                            tile: k,
                        };
                        if let Some(pic) = asm.add(entry, u, &piece) {
                            p.pic = Some(pic);
                        }
                    }
                }
            }
            Outcome::Image(_) => {}
            failure => {
                if p.failure.is_none() {
                    p.failure = Some(failure);
                    p.asm = None;
                    p.entry = None;
                }
            }
        }
        if p.left > 0 {
            return Ok(());
        }
        let Some(p) = self.pending.remove(&job.item) else {
            return Ok(());
        };
        let outcome = match (p.failure, p.entry, p.pic) {
            (Some(f), _, _) => f,
            (None, Some(mut entry), Some(pic)) => {
                let file = render::render(
                    &entry,
                    &pic,
                    OutputFormat::Original,
                    render::Renderer::CURRENT,
                )
                .map_err(|error| PackError::Render {
                    path: format!("image {} (tiled)", job.item),
                    error,
                })?;
                entry.rendered = Rendered {
                    size: file.len() as u64,
                    hash: xxh3_64(&file),
                };
                Outcome::Image(entry)
            }
            _ => Outcome::Failed("a tile of the image was lost".into()),
        };
        self.out.push((job.item, outcome));
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn encode_track(
    t: usize,
    plan: &TrackPlan,
    album: &AlbumFiles,
    opts: &PackOptions,
    writer: &mut ArchiveWriter,
    progress: &dyn Progress,
) -> Result<Vec<(usize, Outcome)>, PackError> {
    let (items, probes, metadata) = (album.items, album.probes, album.metadata);
    let frame_bytes = u64::from(plan.width) * u64::from(plan.height) * 3;
    let gop = (GOP_MEMORY / frame_bytes.max(1)).clamp(1, u64::from(opts.gop.max(1))) as u32;
    let track_name = format!("track {} ({}x{})", t + 1, plan.width, plan.height);
    let jobs: Vec<(Job, Item, Probe)> = plan
        .items
        .iter()
        .filter_map(|&job| Some((job, items[job.item].clone(), probes[job.item].clone()?)))
        .collect();
    let (cw, ch) = (plan.width, plan.height);
    let alpha_t = plan.alpha_track;
    let deep = deep_track(opts, &jobs);
    // Small canvases overlap coding with judging; large ones (memory) go one step at a time.
    let overlap = frame_bytes <= OVERLAP_FRAME_BYTES;
    let (sessions, threads) = session_threads(opts.threads, encoder_frame_bytes(cw, ch, deep));
    let new_coder = |alpha| GopCoder {
        t,
        cw,
        ch,
        gop,
        opts,
        track_name: &track_name,
        extradata: None,
        next_frame: 0,
        alpha,
        items,
        kept_sizes: HashMap::new(),
        draft_sizes: HashMap::new(),
        kept_forms: HashMap::new(),
        thin_hint: None,
        chain: Chain::default(),
        threads,
        deep,
    };
    let coder = new_coder(alpha_t.map(|t| AlphaTrack {
        t,
        extradata: None,
        next_frame: 0,
    }));
    // Only reads settings: codes the next GOPs while `coder` judges and writes GOP k.
    let ahead_coder = new_coder(None);

    thread::scope(|s| -> Result<Vec<(usize, Outcome)>, PackError> {
        // Tiles loaded ahead of the encoder: two small ones, none for large canvases.
        let ahead = if frame_bytes > (16 << 20) { 0 } else { 2 };
        let (load_tx, load_rx) = mpsc::sync_channel::<Loaded>(ahead);
        let loader = s.spawn(move || {
            // The image being cut into tiles (its tiles come one after another).
            let mut current: Option<(usize, Result<Decoded, String>)> = None;
            let n = jobs.len();
            for (k, (job, item, probe)) in jobs.into_iter().enumerate() {
                if current.as_ref().map(|c| c.0) != Some(job.item) {
                    drop(current.take()); // free the last image before decoding the next
                    current = Some((job.item, load(&item, &probe, metadata)));
                }
                let result = match current.as_ref().map(|c| &c.1) {
                    Some(Ok(d)) => Ok(prepare(d, job, t, alpha_t, cw, ch)),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err("not loaded".into()),
                };
                let left = n - k - 1;
                if load_tx.send(Loaded { job, result, left }).is_err() {
                    break;
                }
            }
        });
        // Judging and writing, in GOP order: on a thread of its own when coding overlaps.
        let mut judge = Judge {
            coder,
            writer,
            assembler: Assembler::default(),
        };
        let (mut here, mut there) = (None, None);
        if overlap {
            let (tx, rx) = mpsc::sync_channel::<Step>(0);
            let handle = s.spawn(move || -> Result<Assembler, PackError> {
                for step in rx {
                    judge.step(step)?;
                }
                Ok(judge.assembler)
            });
            there = Some((tx, handle));
        } else {
            here = Some(judge);
        }
        // Hands a step to the judge; false once the judge has stopped (with an error).
        let mut deliver = |step: Step, failure: &mut Option<PackError>| -> bool {
            if let Some(j) = here.as_mut() {
                if let Err(e) = j.step(step) {
                    *failure = Some(e);
                    return false;
                }
                true
            } else if let Some((tx, _)) = &there {
                tx.send(step).is_ok()
            } else {
                false
            }
        };
        let mut batch: Vec<Ready> = Vec::new();
        let mut failure = None;
        // GOPs being coded ahead (when coding overlaps judging), oldest first: up to
        // `sessions` encoder sessions run at once, each on a thread of its own.
        let mut coding = VecDeque::new();
        let (crf, qp) = ahead_coder.first_attempt();
        let coder = &ahead_coder;
        // Starts coding one GOP (or hands it over as it is), then hands over, in order, the
        // GOPs coded ahead beyond those still allowed to run (all of them with `all`); false
        // once pack must stop (`failure` says why, or the judge has stopped with its own
        // error).
        let mut send_gop = |batch: Option<Vec<Ready>>,
                            all: bool,
                            wide: bool,
                            deliver: &mut dyn FnMut(Step, &mut Option<PackError>) -> bool,
                            failure: &mut Option<PackError>|
         -> bool {
            if let Some(batch) = batch {
                if !overlap {
                    return deliver(Step::Gop(batch, None), failure);
                }
                // The track's last GOPs get every thread: fewer sessions than cores are left
                // to run side by side, and one thread each would leave cores idle while they
                // finish (two seconds of a 10 s burst-1080p pack ran on one core).
                let threads = if wide { opts.threads.max(1) } else { threads };
                coding.push_back(s.spawn(move || {
                    let coded = coder.encode(&batch, crf, qp, threads);
                    (batch, coded)
                }));
            }
            let running = if all { 0 } else { sessions - 1 };
            while coding.len() > running {
                let Some(handle) = coding.pop_front() else {
                    break;
                };
                match handle.join() {
                    Ok((batch, Ok(coded))) => {
                        if !deliver(Step::Gop(batch, Some(coded)), failure) {
                            return false;
                        }
                    }
                    Ok((_, Err(e))) => {
                        *failure = Some(e);
                        return false;
                    }
                    Err(_) => {
                        *failure = Some(PackError::Pipeline("encoder thread panicked".into()));
                        return false;
                    }
                }
            }
            true
        };
        for loaded in load_rx {
            let job = loaded.job;
            let left = loaded.left;
            // Among the track's last `sessions` GOPs (by the tiles left after this one).
            let near_end = |left: usize| left <= (sessions - 1) * gop as usize;
            let item = &items[job.item];
            match loaded.result {
                Err(reason) => {
                    let done = TileDone {
                        job,
                        outcome: Outcome::Failed(reason),
                        pixels: None,
                    };
                    // Steps reach the judge in track order: the GOPs before this tile first.
                    if !send_gop(None, true, false, &mut deliver, &mut failure)
                        || !deliver(Step::Tile(done), &mut failure)
                    {
                        break;
                    }
                }
                Ok(ready) => {
                    // A scene change starts a GOP of its own.
                    if ready.job.cut
                        && !batch.is_empty()
                        && !send_gop(
                            Some(std::mem::take(&mut batch)),
                            false,
                            near_end(left + 1),
                            &mut deliver,
                            &mut failure,
                        )
                    {
                        break;
                    }
                    batch.push(ready)
                }
            }
            if (batch.len() as u32 >= gop || (left == 0 && !batch.is_empty()))
                && !send_gop(
                    Some(std::mem::take(&mut batch)),
                    left == 0,
                    near_end(left),
                    &mut deliver,
                    &mut failure,
                )
            {
                break;
            }
            if job.tile + 1 == job.tiles {
                let bytes = match item.found {
                    Found::File { size, .. } => size,
                    _ => 0,
                };
                progress.file_done(&String::from_utf8_lossy(&item.rel), bytes);
            }
        }
        if failure.is_none() {
            let last = (!batch.is_empty()).then_some(batch);
            send_gop(last, true, true, &mut deliver, &mut failure);
        }
        loader
            .join()
            .map_err(|_| PackError::Pipeline("loader thread panicked".into()))?;
        let assembler = match (here, there) {
            (Some(j), _) => j.assembler,
            (None, Some((tx, handle))) => {
                drop(tx);
                let judged = handle
                    .join()
                    .map_err(|_| PackError::Pipeline("judging thread panicked".into()))?;
                // The judge's own error comes first: it is why sending stopped.
                judged?
            }
            (None, None) => return Err(PackError::Pipeline("no judge".into())),
        };
        if let Some(e) = failure {
            return Err(e);
        }
        if !assembler.pending.is_empty() {
            return Err(PackError::Pipeline("tiles of an image went missing".into()));
        }
        Ok(assembler.out)
    })
}

/// Canvases up to this many bytes (RGB) code several GOPs at once (1920×1088 is 6.3 MB): each
/// x264 session holds its GOP and look-ahead, about 100 MiB more per session at 1080p.
pub(super) const PARALLEL_FRAME_BYTES: u64 = 8 << 20;

/// How a track's GOPs are coded ahead: how many encoder sessions at once, and the threads of
/// each. With `threads` ≥ 2 and canvases up to [`PARALLEL_FRAME_BYTES`], GOPs are coded
/// `threads` at a time (at most 4) with one thread each: x264's frame threads fill up and
/// drain with every short session, while sessions side by side keep the cores busy (six GOPs
/// of burst-1080p with the ffmpeg CLI: 5.4–5.9 s two at a time with one thread each, 7.2 s one
/// after another with two). Larger canvases code one GOP at a time with `threads` threads.
/// The archive's bytes may depend on these, which depend only on `threads` and the canvas.
pub(super) fn session_threads(threads: usize, frame_bytes: u64) -> (usize, usize) {
    let threads = threads.max(1);
    if frame_bytes <= PARALLEL_FRAME_BYTES && threads >= 2 {
        (threads.min(4), 1)
    } else {
        (1, threads)
    }
}

/// What the judge receives, in track order.
pub(super) enum Step {
    /// A tile that failed before coding (it could not be loaded).
    Tile(TileDone),
    /// A full GOP, with its first attempt when it was coded ahead.
    Gop(Vec<Ready>, Option<Encoded>),
}

/// Judges GOPs (decode back, render, score; recode if needed), writes them in order, and
/// collects the outcomes.
pub(super) struct Judge<'a, 'w> {
    pub(super) coder: GopCoder<'a>,
    pub(super) writer: &'w mut ArchiveWriter,
    pub(super) assembler: Assembler,
}

impl Judge<'_, '_> {
    fn step(&mut self, step: Step) -> Result<(), PackError> {
        let from = self.assembler.out.len();
        match step {
            Step::Tile(done) => self.assembler.take(done)?,
            Step::Gop(batch, ahead) => {
                let done = self.coder.code(batch, self.writer, ahead)?;
                done.into_iter().try_for_each(|d| self.assembler.take(d))?;
            }
        }
        // Files kept as they are go into the archive now, while the next GOPs are coded,
        // with the recoded form made to measure them (checked here, files in parallel).
        // (position in `out`, item, its recoded form, taken by the worker that stores it)
        type Made = std::sync::Mutex<Option<Recoded>>;
        let kept: Vec<(usize, usize, Made)> = (from..self.assembler.out.len())
            .filter_map(|k| {
                let (i, outcome) = &self.assembler.out[k];
                matches!(outcome, Outcome::Failed(_) | Outcome::Smaller(_))
                    .then(|| (k, *i, Made::new(self.coder.kept_forms.remove(i))))
            })
            .collect();
        let items = self.coder.items;
        let thin = self.coder.thin();
        let forms = crate::par::map(&kept, |(_, i, made)| {
            // A poisoned lock only loses the form made ahead: it is made again.
            let made = made.lock().map(|mut m| m.take()).unwrap_or(None);
            verbatim_form(&items[*i], made, thin)
        })
        .map_err(|e| PackError::Pipeline(format!("storing kept files: {e}")))?;
        for ((k, i, _), form) in kept.iter().zip(forms) {
            let (Outcome::Failed(reason) | Outcome::Smaller(reason)) = std::mem::replace(
                &mut self.assembler.out[*k].1,
                Outcome::Failed(String::new()),
            ) else {
                continue;
            };
            let item = &items[*i];
            log::info!("{}: stored as is: {reason}", archive::printable(&item.abs));
            let blob = write_verbatim(
                self.writer,
                item,
                form?,
                &mut self.coder.thin_hint,
                &mut self.coder.chain,
            )?;
            self.assembler.out[*k].1 = Outcome::Stored(blob, kept_reason(&blob, &reason));
        }
        // Recoded forms of files coded as video are no longer needed (their sizes are kept
        // for the other tiles of large images).
        self.coder.kept_forms.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gops_are_coded_side_by_side_on_canvases_up_to_1080p() {
        let hd = 1920 * 1088 * 3;
        assert_eq!(session_threads(2, hd), (2, 1));
        assert_eq!(session_threads(8, 640 * 480 * 3), (4, 1));
        // 12 MP: one session at a time, with every thread.
        assert_eq!(session_threads(2, 4000 * 3008 * 3), (1, 2));
        assert_eq!(session_threads(1, hd), (1, 1));
        assert_eq!(session_threads(0, hd), (1, 1));
    }
}
