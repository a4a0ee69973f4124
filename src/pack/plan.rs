//! Which images go into which track, and in what order.

use super::*;

pub(super) struct TrackPlan {
    pub(super) width: u32,
    pub(super) height: u32,
    /// The tiles coded in this track, in order (most images are one tile).
    pub(super) items: Vec<Job>,
    /// Alpha planes of this track's images go to a track of their own, coded losslessly.
    pub(super) alpha_frames: u64,
    pub(super) alpha_track: Option<usize>,
}

/// One tile of one image to code.
#[derive(Debug, Clone, Copy)]
pub(super) struct Job {
    /// Index into the walked items.
    pub(super) item: usize,
    pub(super) tile: usize,
    pub(super) tiles: usize,
    /// Stored turned 90° (portrait).
    pub(super) rotated: bool,
    /// Start a new GOP at this tile (a scene change in the similarity order).
    pub(super) cut: bool,
}

/// Track `t`'s codec: the chosen one for colour tracks, H.264 (lossless) for alpha tracks.
pub(super) fn track_codec(t: usize, colour_tracks: usize, opts: &PackOptions) -> Codec {
    if t < colour_tracks {
        opts.codec
    } else {
        Codec::H264
    }
}

/// Puts each track's images in the order `mode` asks for (see [`crate::order`]): tiles of one
/// image stay together and in their order; the first tile of an image after a scene change
/// starts a GOP. Signatures need a decode of every image of the tracks with images to order,
/// on every core; an image that does not decode is not ordered (it goes last, and will be
/// kept as it is when the encoder's decode fails the same way).
pub(super) fn order_tracks(
    plans: &mut [TrackPlan],
    items: &[Item],
    probes: &[Option<Probe>],
    mode: Order,
) {
    let units = |plan: &TrackPlan| plan.items.iter().filter(|j| j.tile == 0).count();
    let wanted: Vec<(usize, bool)> = plans
        .iter()
        .filter(|p| units(p) >= 3)
        .flat_map(|p| {
            p.items
                .iter()
                .filter(|j| j.tile == 0)
                .map(|j| (j.item, j.rotated))
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let big = |k: usize| {
        matches!(probes[wanted[k].0], Some(Probe::Image { width, height, .. })
            if u64::from(width) * u64::from(height) > pixels::MAX_TILE_PIXELS)
    };
    let decode = |k: usize| {
        let (i, rotated) = wanted[k];
        let Some(Probe::Image { format, .. }) = probes[i] else {
            return None;
        };
        let file = File::open(&items[i].abs).ok()?;
        let mut reader =
            image::ImageReader::with_format(io::BufReader::new(file), image_format(format)?);
        reader.limits(decode_limits());
        match reader.decode() {
            Ok(img) => Some((img, rotated)),
            Err(e) => {
                log::debug!("{}: no signature: {e}", archive::printable(&items[i].abs));
                None
            }
        }
    };
    let sigs = order::signatures(wanted.len(), big, decode);
    log::info!(
        "signatures of {} images in {:.2} s",
        wanted.len(),
        started.elapsed().as_secs_f64()
    );
    let by_item: BTreeMap<usize, &order::Signature> = wanted
        .iter()
        .zip(&sigs)
        .filter_map(|(&(i, _), s)| Some((i, s.as_ref()?)))
        .collect();
    for (t, plan) in plans.iter_mut().enumerate() {
        // Runs of tiles of one image.
        let mut runs: Vec<Vec<Job>> = Vec::new();
        for &job in &plan.items {
            match runs.last_mut() {
                Some(run) if job.tile != 0 => run.push(job),
                _ => runs.push(vec![job]),
            }
        }
        let run_sigs: Vec<Option<&order::Signature>> = runs
            .iter()
            .map(|r| r.first().and_then(|j| by_item.get(&j.item).copied()))
            .collect();
        let p = order::plan(&run_sigs, mode);
        if runs.len() >= 3 {
            log::info!(
                "track {} ({}x{}, {} images): path order length {}, greedy tour {}, after 2-opt {} ({:.2} of path): {} order, {} scene cuts",
                t + 1,
                plan.width,
                plan.height,
                runs.len(),
                p.path_length,
                p.greedy_length,
                p.tour_length,
                p.tour_length as f64 / p.path_length.max(1) as f64,
                if p.similar { "similarity" } else { "path" },
                p.cut.iter().filter(|&&c| c).count()
            );
        }
        if !p.similar {
            continue;
        }
        plan.items = p
            .order
            .iter()
            .enumerate()
            .flat_map(|(k, &r)| {
                let cut = p.cut.get(k).copied().unwrap_or(false);
                runs[r].iter().map(move |&j| Job {
                    cut: cut && j.tile == 0,
                    ..j
                })
            })
            .collect();
    }
}

/// The image crate's decoder for a format the video path takes.
pub(super) fn image_format(format: ImageFormat) -> Option<image::ImageFormat> {
    Some(match format {
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::WebP => image::ImageFormat::WebP,
        ImageFormat::Bmp => image::ImageFormat::Bmp,
        ImageFormat::Tiff => image::ImageFormat::Tiff,
        _ => return None,
    })
}
