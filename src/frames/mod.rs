//! Getting decoded images out of an archive: sequential decoding of whole tracks (unpack,
//! verify) and random access through a cache (the mount; see `source`).

pub mod source;

use crate::archive::{Archive, EntryKind, ImageEntry, Index, ReadError, Tile};
use crate::media::{DecodedFrame, MediaError, VideoDecoder};
use crate::pixels::{self, Decoded, Picture, YccRef};
use crate::render::{self, OutputFormat, RenderError, Renderer};
use image::{GrayImage, RgbImage};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{mpsc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("frame {frame} of track {track} is missing or damaged")]
    Missing { track: usize, frame: u64 },
    #[error("the index refers to track {0}, which does not exist")]
    NoTrack(usize),
    #[error("image does not fit in its frame")]
    BadTile,
    #[error("internal error: {0}")]
    Internal(String),
}

/// Which plane of an image a tile holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Plane {
    Color,
    Alpha,
}

/// One use of a decoded frame: tile `tile` of `plane` of entry `entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Use {
    pub entry: usize,
    pub plane: Plane,
    pub tile: usize,
}

/// Pixels of one tile, as taken out of its frame.
pub enum Piece {
    Color(RgbImage),
    Alpha(GrayImage),
}

impl Piece {
    pub fn bytes(&self) -> u64 {
        match self {
            Piece::Color(p) => p.as_raw().len() as u64,
            Piece::Alpha(p) => p.as_raw().len() as u64,
        }
    }
}

/// Which entries use which frame of a track: (track, frame) → uses.
pub fn frame_users(index: &Index) -> HashMap<(usize, u64), Vec<Use>> {
    let mut map: HashMap<(usize, u64), Vec<Use>> = HashMap::new();
    for (i, e) in index.entries.iter().enumerate() {
        if let EntryKind::Image(img) = &e.kind {
            let planes = [(Plane::Color, &img.tiles), (Plane::Alpha, &img.alpha)];
            for (plane, tiles) in planes {
                for (k, tile) in tiles.iter().enumerate() {
                    map.entry((tile.track as usize, tile.frame))
                        .or_default()
                        .push(Use {
                            entry: i,
                            plane,
                            tile: k,
                        });
                }
            }
        }
    }
    map
}

/// An image held by one frame whole, without alpha: its pixels need no assembly.
pub fn is_simple(img: &ImageEntry) -> bool {
    img.tiles.len() == 1 && img.alpha.is_empty()
}

/// A tile's pixels out of its decoded frame, upright, as RGB.
pub fn tile_rgb(tile: &Tile, frame: &DecodedFrame) -> Result<RgbImage, FrameError> {
    let (sw, sh) = stored_size(tile);
    let raw = frame.rgb(sw, sh).ok_or(FrameError::BadTile)?;
    let stored = RgbImage::from_raw(sw, sh, raw).ok_or(FrameError::BadTile)?;
    Ok(if tile.rotated {
        image::imageops::rotate270(&stored)
    } else {
        stored
    })
}

/// A tile's size on its canvas (turned when it was stored rotated).
fn stored_size(tile: &Tile) -> (u32, u32) {
    if tile.rotated {
        (tile.height, tile.width)
    } else {
        (tile.width, tile.height)
    }
}

/// Takes the tile `u` refers to out of its decoded frame.
pub fn piece_from_frame(
    img: &ImageEntry,
    u: Use,
    frame: &DecodedFrame,
) -> Result<Piece, FrameError> {
    let tiles = match u.plane {
        Plane::Color => &img.tiles,
        Plane::Alpha => &img.alpha,
    };
    let tile = tiles.get(u.tile).ok_or(FrameError::BadTile)?;
    let rgb = tile_rgb(tile, frame)?;
    Ok(match u.plane {
        Plane::Color => Piece::Color(rgb),
        Plane::Alpha => Piece::Alpha(pixels::first_channel(&rgb)),
    })
}

/// The Y'CbCr planes of a whole, opaque image as they stand in its frame (top-left corner,
/// row stride of the canvas), when the frame holds Y'CbCr and the image is not stored turned.
pub fn planes_in_frame<'f>(img: &ImageEntry, frame: &'f DecodedFrame) -> Option<YccRef<'f>> {
    match img.tiles.as_slice() {
        [tile] if !tile.rotated && img.alpha.is_empty() => frame.ycc(tile.width, tile.height),
        _ => None,
    }
}

/// The decoded image of a whole, opaque entry (`is_simple`): its Y'CbCr planes when `planes`
/// and the frame holds Y'CbCr, else RGB.
pub fn decoded_from_frame(
    img: &ImageEntry,
    frame: &DecodedFrame,
    planes: bool,
) -> Result<Decoded, FrameError> {
    let tile = img.tiles.first().ok_or(FrameError::BadTile)?;
    if planes {
        let (sw, sh) = stored_size(tile);
        if let Some(ycc) = frame.ycc(sw, sh) {
            return Ok(Decoded::Ycc(ycc.to_owned_upright(tile.rotated)));
        }
    }
    Ok(Decoded::Picture(Picture::opaque(tile_rgb(tile, frame)?)))
}

/// The file of a whole, opaque image rendered straight from its frame's Y'CbCr planes, when
/// `renderer` makes it from planes and the frame holds Y'CbCr (None: render from RGB).
pub fn render_from_planes(
    img: &ImageEntry,
    frame: &DecodedFrame,
    format: OutputFormat,
    renderer: Renderer,
) -> Option<Result<Vec<u8>, RenderError>> {
    if !renderer.uses_planes(img, format) {
        return None;
    }
    if let Some(ycc) = planes_in_frame(img, frame) {
        return Some(render::render_planes(img, ycc));
    }
    let tile = img.tiles.first()?;
    let (sw, sh) = stored_size(tile);
    let ycc = frame.ycc(sw, sh)?.to_owned_upright(tile.rotated);
    Some(render::render_planes(img, ycc.as_ref()))
}

/// An image being put together from its tiles (colour and alpha).
pub struct Assembly {
    pic: Picture,
    /// Tiles not yet placed, per plane.
    missing: HashSet<(Plane, usize)>,
}

impl Assembly {
    /// Limit on the pixels of an image assembled from tiles (the index is untrusted).
    const MAX_PIXELS: u64 = crate::album::MAX_PIXELS;

    pub fn new(img: &ImageEntry) -> Result<Self, FrameError> {
        if u64::from(img.width) * u64::from(img.height) > Self::MAX_PIXELS {
            return Err(FrameError::BadTile);
        }
        let mut missing = HashSet::new();
        missing.extend((0..img.tiles.len()).map(|k| (Plane::Color, k)));
        missing.extend((0..img.alpha.len()).map(|k| (Plane::Alpha, k)));
        Ok(Assembly {
            pic: Picture {
                rgb: RgbImage::new(img.width, img.height),
                alpha: (!img.alpha.is_empty()).then(|| GrayImage::new(img.width, img.height)),
            },
            missing,
        })
    }

    /// Places one tile; returns the picture once every tile is in.
    pub fn add(&mut self, img: &ImageEntry, u: Use, piece: &Piece) -> Option<Picture> {
        let tile = match u.plane {
            Plane::Color => img.tiles.get(u.tile),
            Plane::Alpha => img.alpha.get(u.tile),
        };
        if let Some(tile) = tile {
            match (piece, &mut self.pic.alpha) {
                (Piece::Color(p), _) => pixels::paste(&mut self.pic.rgb, p, tile.x, tile.y),
                (Piece::Alpha(p), Some(a)) => pixels::paste(a, p, tile.x, tile.y),
                (Piece::Alpha(_), None) => {}
            }
            self.missing.remove(&(u.plane, u.tile));
        }
        if self.missing.is_empty() {
            Some(std::mem::replace(
                &mut self.pic,
                Picture::opaque(RgbImage::new(0, 0)),
            ))
        } else {
            None
        }
    }
}

/// The frames of one track in presentation order, decoded as they are asked for.
///
/// A damaged or unreadable packet does not stop the track: decoding resumes at the next
/// keyframe, and the frames lost are reported by `lost`.
pub struct TrackFrames<'a> {
    archive: &'a Archive,
    t: usize,
    decoder: VideoDecoder,
    next: usize,
    skipping: bool,
    eof_sent: bool,
    expected: BTreeSet<u64>,
    ready: VecDeque<DecodedFrame>,
}

impl<'a> TrackFrames<'a> {
    pub fn new(archive: &'a Archive, t: usize, threads: usize) -> Result<Self, FrameError> {
        let track = archive.index.tracks.get(t).ok_or(FrameError::NoTrack(t))?;
        Ok(TrackFrames {
            archive,
            t,
            decoder: VideoDecoder::new(&track.codec, &track.extradata, threads)?,
            next: 0,
            skipping: false,
            eof_sent: false,
            expected: track.packets.iter().map(|p| p.pts).collect(),
            ready: VecDeque::new(),
        })
    }

    /// The next frame that decodes, or None at the end of the track.
    pub fn next_frame(&mut self) -> Result<Option<DecodedFrame>, FrameError> {
        let packets = &self.archive.index.tracks[self.t].packets;
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some(f));
            }
            if self.next < packets.len() {
                let p = &packets[self.next];
                self.next += 1;
                if self.skipping && !p.keyframe {
                    continue;
                }
                self.skipping = false;
                let data = match self.archive.read_packet(p) {
                    Ok(data) => data,
                    Err(e) => {
                        // Every frame sent so far depends only on frames sent before it, none
                        // on this one: drain them, then skip to the next keyframe.
                        log::warn!(
                            "track {}: frame {} unreadable ({e}); resuming at the next keyframe",
                            self.t + 1,
                            p.pts
                        );
                        if self.decoder.send_eof().is_ok() {
                            if let Err(e) = self.drain() {
                                if !matches!(e, FrameError::Read(_) | FrameError::Media(_)) {
                                    return Err(e);
                                }
                            }
                        }
                        self.decoder.reset();
                        self.skipping = true;
                        continue;
                    }
                };
                let sent = self
                    .decoder
                    .send(&data, p.pts as i64, p.dts, p.keyframe)
                    .map_err(FrameError::from);
                if let Err(e) = sent.and_then(|()| self.drain()) {
                    match e {
                        FrameError::Read(_) | FrameError::Media(_) => {
                            log::warn!(
                                "track {}: frame {} unreadable ({e}); resuming at the next keyframe",
                                self.t + 1,
                                p.pts
                            );
                            self.decoder.reset();
                            self.skipping = true;
                        }
                        other => return Err(other),
                    }
                }
            } else if !self.eof_sent {
                self.eof_sent = true;
                if self.decoder.send_eof().is_ok() {
                    if let Err(e) = self.drain() {
                        match e {
                            FrameError::Read(_) | FrameError::Media(_) => {
                                log::warn!("track {}: damaged frames at the end ({e})", self.t + 1);
                            }
                            other => return Err(other),
                        }
                    }
                }
            } else {
                return Ok(None);
            }
        }
    }

    fn drain(&mut self) -> Result<(), FrameError> {
        while let Some(f) = self.decoder.receive()? {
            if f.pts >= 0 && self.expected.remove(&(f.pts as u64)) {
                self.ready.push_back(f);
            }
        }
        Ok(())
    }

    /// Frames that did not decode (valid once `next_frame` returned None).
    pub fn lost(&self) -> Vec<u64> {
        self.expected.iter().copied().collect()
    }
}

/// Decodes every colour track in order (with `decoder_threads`), pulling alpha tracks along
/// as their planes are needed, and hands the pixels of each coded image (for which `want`
/// says yes) to `work`: Y'CbCr planes where `planes` says yes and the frame has them
/// (see [`decoded_from_frame`]), RGB otherwise, run on `workers` threads while decoding goes on. Returns the images
/// that could not be had, with the reason (damaged data, a tile outside its frame).
pub fn each_image(
    archive: &Archive,
    decoder_threads: usize,
    workers: usize,
    want: impl Fn(usize) -> bool + Sync,
    planes: impl Fn(&ImageEntry) -> bool + Sync,
    work: impl Fn(usize, Decoded) + Sync,
) -> Result<Vec<(usize, String)>, FrameError> {
    let index = &archive.index;
    let users = frame_users(index);
    let workers = workers.max(1);
    let mut failed: Vec<(usize, String)> = Vec::new();
    let mut done: HashSet<usize> = HashSet::new();
    let color_tracks: BTreeSet<usize> = users
        .iter()
        .filter(|(_, us)| us.iter().any(|u| u.plane == Plane::Color))
        .map(|(&(t, _), _)| t)
        .collect();
    let (tx, rx) = mpsc::sync_channel::<(usize, Decoded)>(workers * 2);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| -> Result<(), FrameError> {
        for _ in 0..workers {
            let (rx, work) = (&rx, &work);
            s.spawn(move || loop {
                let job = match rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((i, pic)) = job else { return };
                work(i, pic);
            });
        }
        let tx = tx;
        let mut pending: HashMap<usize, Assembly> = HashMap::new();
        let mut alpha_streams: HashMap<usize, TrackFrames<'_>> = HashMap::new();
        // Takes the pieces of a decoded frame; sends the images that are complete.
        let take = |t: usize,
                    frame: &DecodedFrame,
                    plane: Plane,
                    pending: &mut HashMap<usize, Assembly>,
                    failed: &mut Vec<(usize, String)>,
                    done: &mut HashSet<usize>|
         -> Result<(), FrameError> {
            for &u in users
                .get(&(t, frame.pts as u64))
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                let EntryKind::Image(img) = &index.entries[u.entry].kind else {
                    continue;
                };
                if u.plane != plane || !want(u.entry) || done.contains(&u.entry) {
                    continue;
                }
                // A whole, opaque image comes out of its frame as it is; others are put
                // together from their tiles and alpha planes.
                let got = if is_simple(img) {
                    match u.plane {
                        Plane::Color => decoded_from_frame(img, frame, planes(img)).map(Some),
                        Plane::Alpha => Ok(None),
                    }
                } else {
                    piece_from_frame(img, u, frame).and_then(|piece| {
                        let asm = match pending.entry(u.entry) {
                            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                            std::collections::hash_map::Entry::Vacant(v) => {
                                v.insert(Assembly::new(img)?)
                            }
                        };
                        Ok(asm.add(img, u, &piece).map(Decoded::Picture))
                    })
                };
                let pic = match got {
                    Ok(pic) => pic,
                    Err(err) => {
                        done.insert(u.entry);
                        pending.remove(&u.entry);
                        failed.push((u.entry, err.to_string()));
                        continue;
                    }
                };
                if let Some(pic) = pic {
                    pending.remove(&u.entry);
                    done.insert(u.entry);
                    tx.send((u.entry, pic))
                        .map_err(|_| FrameError::Internal("image workers stopped".into()))?;
                }
            }
            Ok(())
        };
        for &t in &color_tracks {
            let mut frames = TrackFrames::new(archive, t, decoder_threads)?;
            while let Some(frame) = frames.next_frame()? {
                take(
                    t,
                    &frame,
                    Plane::Color,
                    &mut pending,
                    &mut failed,
                    &mut done,
                )?;
                // Alpha planes of the images on this frame: pull their tracks forward to them
                // (they were coded in the same order, so this stays a step behind at most).
                let alpha_tiles: Vec<(usize, u64)> = users
                    .get(&(t, frame.pts as u64))
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                    .iter()
                    .filter(|u| u.plane == Plane::Color && pending.contains_key(&u.entry))
                    .filter_map(|u| match &index.entries[u.entry].kind {
                        EntryKind::Image(img) => {
                            img.alpha.get(u.tile).map(|a| (a.track as usize, a.frame))
                        }
                        _ => None,
                    })
                    .collect();
                for (ta, fa) in alpha_tiles {
                    let stream = match alpha_streams.entry(ta) {
                        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(TrackFrames::new(archive, ta, decoder_threads)?)
                        }
                    };
                    while let Some(af) = stream.next_frame()? {
                        let reached = af.pts as u64 >= fa;
                        take(ta, &af, Plane::Alpha, &mut pending, &mut failed, &mut done)?;
                        if reached {
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    })?;
    for (i, e) in index.entries.iter().enumerate() {
        if matches!(e.kind, EntryKind::Image(_)) && want(i) && !done.contains(&i) {
            failed.push((i, "image data is damaged: could not decode it".into()));
        }
    }
    Ok(failed)
}
