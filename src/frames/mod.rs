//! Getting decoded images out of an archive: sequential decoding of whole tracks (unpack,
//! verify) and random access through a cache (the mount; see `source`).

pub mod source;

use crate::archive::{Archive, EntryKind, ImageEntry, Index, ReadError};
use crate::media::{DecodedFrame, MediaError, VideoDecoder};
use crate::pixels;
use image::RgbImage;
use std::collections::HashMap;
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

/// Which entries use which frame of a track: (track, frame) → entry indices.
pub fn frame_users(index: &Index) -> HashMap<(usize, u64), Vec<usize>> {
    let mut map: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    for (i, e) in index.entries.iter().enumerate() {
        if let EntryKind::Image(img) = &e.kind {
            for tile in &img.tiles {
                map.entry((tile.track as usize, tile.frame))
                    .or_default()
                    .push(i);
            }
        }
    }
    map
}

/// The image of `entry` from the decoded frame that holds it (single-tile images).
pub fn image_from_frame(entry: &ImageEntry, frame: &DecodedFrame) -> Result<RgbImage, FrameError> {
    let tile = entry.tiles.first().ok_or(FrameError::BadTile)?;
    pixels::extract(
        &frame.rgb,
        frame.width,
        frame.height,
        entry.width,
        entry.height,
        tile.rotated,
    )
    .ok_or(FrameError::BadTile)
}

/// Decodes every frame of track `t` in order and hands each to `on_frame`.
///
/// A damaged or unreadable packet does not stop the track: decoding resumes at the next
/// keyframe, and the frames lost are returned.
pub fn decode_track(
    archive: &Archive,
    t: usize,
    threads: usize,
    mut on_frame: impl FnMut(DecodedFrame) -> Result<(), FrameError>,
) -> Result<Vec<u64>, FrameError> {
    let track = archive.index.tracks.get(t).ok_or(FrameError::NoTrack(t))?;
    let mut decoder = VideoDecoder::new(&track.codec, &track.extradata, threads)?;
    let mut expected: std::collections::BTreeSet<u64> =
        track.packets.iter().map(|p| p.pts).collect();
    let mut skipping = false;
    let mut i = 0;
    while i < track.packets.len() {
        let p = &track.packets[i];
        i += 1;
        if skipping && !p.keyframe {
            continue;
        }
        skipping = false;
        let data = match archive.read_packet(p) {
            Ok(data) => data,
            Err(e) => {
                // Every frame sent so far depends only on frames sent before it, none on
                // this one: drain them, then skip to the next keyframe.
                log::warn!(
                    "track {}: frame {} unreadable ({e}); resuming at the next keyframe",
                    t + 1,
                    p.pts
                );
                if decoder.send_eof().is_ok() {
                    if let Err(e) = drain(&mut decoder, &mut expected, &mut on_frame) {
                        match e {
                            FrameError::Read(_) | FrameError::Media(_) => {}
                            other => return Err(other),
                        }
                    }
                }
                decoder.reset();
                skipping = true;
                continue;
            }
        };
        let sent = decoder
            .send(&data, p.pts as i64, p.dts, p.keyframe)
            .map_err(FrameError::from);
        let received = sent.and_then(|()| drain(&mut decoder, &mut expected, &mut on_frame));
        if let Err(e) = received {
            match e {
                FrameError::Read(_) | FrameError::Media(_) => {
                    log::warn!(
                        "track {}: frame {} unreadable ({e}); resuming at the next keyframe",
                        t + 1,
                        p.pts
                    );
                    decoder.reset();
                    skipping = true;
                }
                other => return Err(other),
            }
        }
    }
    if decoder.send_eof().is_ok() {
        if let Err(e) = drain(&mut decoder, &mut expected, &mut on_frame) {
            match e {
                FrameError::Read(_) | FrameError::Media(_) => {
                    log::warn!("track {}: damaged frames at the end ({e})", t + 1);
                }
                other => return Err(other),
            }
        }
    }
    Ok(expected.into_iter().collect())
}

fn drain(
    decoder: &mut VideoDecoder,
    expected: &mut std::collections::BTreeSet<u64>,
    on_frame: &mut impl FnMut(DecodedFrame) -> Result<(), FrameError>,
) -> Result<(), FrameError> {
    while let Some(f) = decoder.receive()? {
        let pts = f.pts as u64;
        if f.pts >= 0 && expected.remove(&pts) {
            on_frame(f)?;
        }
    }
    Ok(())
}

/// Decodes every track in order (with `decoder_threads`) and hands the pixels of each coded
/// image (for which `want` says yes) to `work`, run on `workers` threads while decoding goes on. Returns the images
/// that could not be had, with the reason (damaged data, a tile outside its frame).
pub fn each_image(
    archive: &Archive,
    decoder_threads: usize,
    workers: usize,
    want: impl Fn(usize) -> bool + Sync,
    work: impl Fn(usize, RgbImage) + Sync,
) -> Result<Vec<(usize, String)>, FrameError> {
    let index = &archive.index;
    let users = frame_users(index);
    let workers = workers.max(1);
    let failed = Mutex::new(Vec::new());
    let note = |i: usize, why: String| {
        if let Ok(mut f) = failed.lock() {
            f.push((i, why));
        }
    };
    for t in 0..index.tracks.len() {
        let (tx, rx) = mpsc::sync_channel::<(usize, RgbImage)>(workers * 2);
        let rx = Mutex::new(rx);
        let lost = std::thread::scope(|s| -> Result<Vec<u64>, FrameError> {
            for _ in 0..workers {
                let (rx, work) = (&rx, &work);
                s.spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((i, rgb)) = job else { return };
                    work(i, rgb);
                });
            }
            let tx = tx;
            decode_track(archive, t, decoder_threads, |frame| {
                for &i in users
                    .get(&(t, frame.pts as u64))
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                {
                    if let EntryKind::Image(img) = &index.entries[i].kind {
                        if !want(i) {
                            continue;
                        }
                        match image_from_frame(img, &frame) {
                            Ok(rgb) => tx.send((i, rgb)).map_err(|_| {
                                FrameError::Internal("image workers stopped".into())
                            })?,
                            Err(err) => note(i, err.to_string()),
                        }
                    }
                }
                Ok(())
            })
        })?;
        for frame in lost {
            for &i in users.get(&(t, frame)).map(Vec::as_slice).unwrap_or(&[]) {
                note(i, "image data is damaged: could not decode it".into());
            }
        }
    }
    failed
        .into_inner()
        .map_err(|_| FrameError::Internal("lock poisoned".into()))
}
