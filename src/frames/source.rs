//! Random access to rendered images for the mount: a byte-bounded LRU cache of decoded pixels
//! and rendered files, a bounded pool of decoders that remember where they are (so reading
//! files in order keeps decoding forward instead of seeking), one decode per GOP however many
//! readers want it, and a small prefetch of the next images while a reader is busy.
//!
//! No FUSE here: `crate::serve` adapts this to the filesystem core.

use super::{
    decoded_from_frame, is_simple, piece_from_frame, render_from_planes, Assembly, FrameError,
    Piece, Plane, Use,
};
use crate::archive::{Archive, EntryKind, Index};
use crate::bytelru::{ByteLru, Weigh};
use crate::media::{DecodedFrame, VideoDecoder};
use crate::pixels::Decoded;
use crate::render::{self, OutputFormat, Renderer};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;
use xxhash_rust::xxh3::xxh3_64;

/// Reads remembered to tell reading in order from reading at random (several readers in
/// order at once each keep theirs apart).
const RECENT_READS: usize = 16;

/// GOPs decoded ahead of a reader in order: its own and the next two (two cores decode two
/// GOPs at once; the third is ready to start when one ends).
const WALK_GOPS: usize = 3;

/// Memory the decoders of one track may hold.
const DECODER_MEMORY: u64 = 96 << 20;

/// Frames a 4:4:4 decoder holds at most, as counted against the memory budget.
const FRAMES_PER_DECODER: u64 = 8;

/// Decoders allowed for a track of `frame` bytes per RGB frame: at most `max`, fewer for large
/// canvases so that they fit in [`DECODER_MEMORY`].
fn decoders_for(frame: u64, max: usize) -> usize {
    let fit = (DECODER_MEMORY / (frame * FRAMES_PER_DECODER).max(1)) as usize;
    fit.clamp(1, max.max(1))
}

/// The part of the cache budget set aside for the decoders' own frames: what the largest
/// track's decoders may hold, at most half the budget. The LRU keeps the rest, so that the
/// whole of `cache_bytes` bounds decoded pixels, rendered files and decoder frames together.
fn decoder_reserve(index: &Index, opts: &SourceOptions) -> u64 {
    let most = index
        .tracks
        .iter()
        .map(|t| {
            let frame = u64::from(t.width) * u64::from(t.height) * 3;
            decoders_for(frame, opts.max_decoders) as u64 * frame * FRAMES_PER_DECODER
        })
        .max()
        .unwrap_or(0);
    most.min(opts.cache_bytes / 2)
}

#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Bytes of decoded pixels, rendered files and decoder frames kept in memory (see
    /// [`decoder_reserve`]).
    pub cache_bytes: u64,
    /// Decoders alive at once, at most (each holds a few frames of its track).
    pub max_decoders: usize,
    /// Images rendered ahead of a reader, in index order (0: no prefetch).
    pub prefetch: usize,
    pub format: OutputFormat,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            cache_bytes: 512 << 20,
            max_decoders: 4,
            prefetch: 2,
            format: OutputFormat::Original,
        }
    }
}

/// Counters, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub frames_decoded: AtomicU64,
    pub files_rendered: AtomicU64,
    pub cache_hits: AtomicU64,
    pub seeks: AtomicU64,
    /// Time spent decoding (packets in, frames out and converted to RGB), in microseconds,
    /// summed over threads.
    pub decode_us: AtomicU64,
    /// Time spent rendering files, in microseconds, summed over threads.
    pub render_us: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Key {
    /// The whole decoded image of an entry.
    Pixels(usize),
    /// One tile of an image that is put together from several (tiles, alpha).
    Piece(Use),
    File(usize),
}

#[derive(Clone)]
enum Value {
    Pixels(Arc<Decoded>),
    Piece(Arc<Piece>),
    File(Arc<Vec<u8>>),
}

impl Weigh for Value {
    fn weight(&self) -> u64 {
        match self {
            Value::Pixels(p) => p.bytes(),
            Value::Piece(p) => p.bytes(),
            Value::File(f) => f.len() as u64,
        }
    }
}

/// Decoded images, their pieces and rendered files, within the mount's memory budget.
type Cache = ByteLru<Key, Value>;

/// A decoder and where it stands in its track.
struct Positioned {
    track: usize,
    decoder: VideoDecoder,
    /// Packet index of the keyframe of the GOP being decoded.
    gop_start: usize,
    /// Next packet to feed.
    next_packet: usize,
    /// Last frame number that came out (frames come out in order within a GOP).
    last_out: Option<u64>,
}

struct Pool {
    idle: Vec<Positioned>,
    live: usize,
}

/// Per track: for each frame number, the packet index of its GOP's keyframe, and GOP ends.
struct TrackMap {
    gop_of_frame: HashMap<u64, usize>,
    /// For each keyframe packet index, the packet index where its GOP ends (exclusive).
    gop_end: HashMap<usize, usize>,
}

/// What a decode brought back for the key asked for: the cached value, or the decoded frame
/// itself when the file is rendered straight from it.
enum Found {
    Value(Value),
    Frame(DecodedFrame),
}

struct Inner {
    archive: Arc<Archive>,
    opts: SourceOptions,
    /// How the archive's recorded files were made (and so how to make them again).
    renderer: Renderer,
    maps: Vec<TrackMap>,
    users: HashMap<(usize, u64), Vec<Use>>,
    cache: Mutex<Cache>,
    pool: Mutex<Pool>,
    pool_cv: Condvar,
    /// GOPs being decoded: (track, keyframe packet) → whether whole, ahead of a reader (or
    /// else up to the frame a reader waits for).
    in_flight: Mutex<HashMap<(usize, usize), bool>>,
    in_flight_cv: Condvar,
    /// Files being rendered right now (entries).
    rendering: Mutex<HashSet<usize>>,
    rendering_cv: Condvar,
    /// Decodes (and decompressions of kept files) running at once: no more than the cores
    /// (more only holds more frames in memory), however many FUSE threads ask.
    busy_workers: Mutex<usize>,
    busy_cv: Condvar,
    stats: Stats,
    /// Frames of GOPs decoded ahead, to be rendered on other threads while the decoder goes
    /// on (taken away when the source is dropped, which stops the render threads).
    render_tx: Mutex<Option<mpsc::SyncSender<RenderJob>>>,
    /// Entries whose rendered size was found wrong (reported once).
    bad: Mutex<HashSet<usize>>,
    /// Stored files whose bytes were checked against their hash: entry → intact.
    blobs_checked: Mutex<HashMap<usize, bool>>,
}

/// A GOP decoded ahead counts as in flight until its decoder is done and every frame it
/// handed to the render threads is rendered: a reader waiting for one of its files waits for
/// that render instead of decoding the GOP again.
struct GopInFlight {
    inner: Arc<Inner>,
    key: (usize, usize),
}

impl Drop for GopInFlight {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.inner.in_flight.lock() {
            busy.remove(&self.key);
        }
        self.inner.in_flight_cv.notify_all();
    }
}

/// A frame of a GOP decoded ahead, for a render thread to make `entry`'s file from.
struct RenderJob {
    entry: usize,
    frame: DecodedFrame,
    /// Held until the frame is rendered.
    gop: Arc<GopInFlight>,
}

/// Why a GOP is decoded.
enum Decode<'a> {
    /// For a reader waiting for this key (on the last frame decoded).
    For(Key),
    /// Whole, ahead of a reader: the GOP's in-flight mark, which each render holds.
    Ahead(&'a Arc<GopInFlight>),
}

/// Frames waiting for a render thread, at most: each holds a decoder's buffer (6 MiB at
/// 1080p), and a decoder that finds the queue full renders the frame itself.
const RENDER_QUEUE: usize = 1;

/// Memory that frames handed to the render threads (queued or being rendered) may hold, on
/// top of the decoders' own: larger frames are rendered by their decoder.
const RENDER_MEMORY: u64 = 48 << 20;

/// Whether the frames the render threads may hold at once, each the size of `frame`, fit in
/// [`RENDER_MEMORY`] (1080p: 3 × 6 MiB; a 12-megapixel canvas, 3 × 36 MiB, does not).
fn frames_to_render_fit(frame: &DecodedFrame) -> bool {
    let bytes = u64::from(frame.width) * u64::from(frame.height) * 3;
    bytes * (RENDER_QUEUE + cores()) as u64 <= RENDER_MEMORY
}

/// Work for the prefetchers.
#[derive(Clone, Copy, Debug)]
enum Ahead {
    /// Render this entry's file.
    File(usize),
    /// Decode the whole GOP that holds this entry's first tile, rendering every file on it.
    Gop(usize),
}

/// Rendered image files of an archive, decoded on demand.
pub struct FrameSource {
    inner: Arc<Inner>,
    prefetch_tx: Option<mpsc::SyncSender<Ahead>>,
    /// The images whose reads began most recently, newest last: a read that follows one of
    /// them in archive order is part of a reading in order.
    recent: Mutex<VecDeque<usize>>,
    prefetchers: Vec<std::thread::JoinHandle<()>>,
    renderers: Vec<std::thread::JoinHandle<()>>,
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 16)
}

/// Starts one thread per core, named `name`, each taking jobs from `rx` in turn and running
/// `work` on them, until every sender of the queue is gone.
fn workers<J: Send + 'static>(
    name: &str,
    inner: &Arc<Inner>,
    rx: mpsc::Receiver<J>,
    work: fn(&Arc<Inner>, J),
) -> Vec<std::thread::JoinHandle<()>> {
    let rx = Arc::new(Mutex::new(rx));
    (0..cores())
        .filter_map(|_| {
            let inner = Arc::clone(inner);
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || loop {
                    let next = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = next else { return };
                    work(&inner, job);
                })
                .ok()
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, FrameError> {
    m.lock()
        .map_err(|_| FrameError::Internal("a lock was poisoned by an earlier failure".into()))
}

impl FrameSource {
    pub fn new(archive: Arc<Archive>, opts: SourceOptions) -> Self {
        let index: &Index = &archive.index;
        let maps = index
            .tracks
            .iter()
            .map(|t| {
                let mut gop_of_frame = HashMap::new();
                let mut gop_end = HashMap::new();
                let mut start = 0;
                for (i, p) in t.packets.iter().enumerate() {
                    if p.keyframe || i == 0 {
                        if i > 0 {
                            gop_end.insert(start, i);
                        }
                        start = i;
                    }
                    gop_of_frame.insert(p.pts, start);
                }
                gop_end.insert(start, t.packets.len());
                TrackMap {
                    gop_of_frame,
                    gop_end,
                }
            })
            .collect();
        let users = super::frame_users(index);
        let prefetch = opts.prefetch;
        let inner = Arc::new(Inner {
            renderer: Renderer::for_archive(&index.renderer),
            cache: Mutex::new(Cache::new(opts.cache_bytes - decoder_reserve(index, &opts))),
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                live: 0,
            }),
            pool_cv: Condvar::new(),
            in_flight: Mutex::new(HashMap::new()),
            in_flight_cv: Condvar::new(),
            rendering: Mutex::new(HashSet::new()),
            rendering_cv: Condvar::new(),
            busy_workers: Mutex::new(0),
            busy_cv: Condvar::new(),
            stats: Stats::default(),
            render_tx: Mutex::new(None),
            bad: Mutex::new(HashSet::new()),
            blobs_checked: Mutex::new(HashMap::new()),
            archive,
            opts,
            maps,
            users,
        });
        let (prefetch_tx, prefetchers, renderers) = if prefetch > 0 {
            // A short queue: when it is full, prefetch requests are dropped, so a reader that
            // stops reading stops the prefetching too. One worker per core: decoding is
            // sequential (one decoder continues forward) but GOPs decode side by side.
            let (tx, rx) = mpsc::sync_channel::<Ahead>(prefetch + WALK_GOPS);
            let prefetchers = workers("av1pack-prefetch", &inner, rx, Inner::prefetch);
            // The frames of GOPs decoded ahead, rendered on other threads while the decoders
            // go on (reading in order, a GOP's decoding is the longest chain of work, and the
            // renders fill the other cores).
            let (render_tx, rx) = mpsc::sync_channel::<RenderJob>(RENDER_QUEUE);
            let renderers = workers("av1pack-render", &inner, rx, Inner::render_ahead);
            if !renderers.is_empty() {
                if let Ok(mut slot) = inner.render_tx.lock() {
                    *slot = Some(render_tx);
                }
            }
            (Some(tx), prefetchers, renderers)
        } else {
            (None, Vec::new(), Vec::new())
        };
        FrameSource {
            inner,
            prefetch_tx,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_READS)),
            prefetchers,
            renderers,
        }
    }

    pub fn archive(&self) -> &Archive {
        &self.inner.archive
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Bytes held by the cache now.
    pub fn cached_bytes(&self) -> u64 {
        self.inner.cache.lock().map(|c| c.bytes()).unwrap_or(0)
    }

    /// The served bytes of entry `entry` (rendered image or stored file), `offset..offset+size`.
    pub fn read(&self, entry: usize, offset: u64, size: usize) -> Result<Vec<u8>, FrameError> {
        let e = self
            .inner
            .archive
            .index
            .entries
            .get(entry)
            .ok_or_else(|| FrameError::Internal(format!("no entry {entry}")))?;
        match &e.kind {
            EntryKind::Verbatim { blob, .. } if blob.is_stored() => {
                self.inner.check_blob(entry, blob)?;
                Ok(self.inner.archive.read_blob(blob, offset, size)?)
            }
            // Compressed stored files are decoded whole and cached like rendered images.
            EntryKind::Verbatim { .. } | EntryKind::Image(_) => {
                // A reader in order (or starting on a folder) gets the GOPs ahead asked for
                // before it waits for anything, the next files once it has its own.
                let walking = offset == 0 && self.walk_ahead(entry);
                let file = self.inner.file(entry)?;
                if offset == 0 {
                    self.prefetch_after(entry, walking);
                }
                let start = (offset.min(file.len() as u64)) as usize;
                let end = start.saturating_add(size).min(file.len());
                Ok(file[start..end].to_vec())
            }
            _ => Err(FrameError::Internal("not a file".into())),
        }
    }

    /// The whole rendered file of an image entry.
    pub fn file(&self, entry: usize) -> Result<Arc<Vec<u8>>, FrameError> {
        self.inner.file(entry)
    }

    /// Whether `entry` is the first image of its folder, in archive order (where a copy, a
    /// thumbnailer or `cat *` starts).
    fn starts_folder(&self, entry: usize) -> bool {
        let entries = &self.inner.archive.index.entries;
        let folder = |p: &[u8]| p.iter().rposition(|&b| b == b'/').map_or(0, |i| i);
        let Some(e) = entries.get(entry) else {
            return false;
        };
        let here = &e.path[..folder(&e.path)];
        entries[..entry]
            .iter()
            .rev()
            .find(|e| matches!(e.kind, EntryKind::Image(_)))
            .is_none_or(|before| &before.path[..folder(&before.path)] != here)
    }

    /// Whether the read of `entry` follows a recent read of the image before it in archive
    /// order; remembers it.
    fn in_order(&self, entry: usize) -> bool {
        let entries = &self.inner.archive.index.entries;
        let before = entries[..entry]
            .iter()
            .rposition(|e| matches!(e.kind, EntryKind::Image(_)));
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        let follows = before.is_some_and(|b| recent.contains(&b));
        if recent.len() == RECENT_READS {
            recent.pop_front();
        }
        recent.push_back(entry);
        follows
    }

    /// Whether a reader starting to read `entry` walks through the images: it read the image
    /// before this one, or this is the first image of its folder and not rendered yet (where
    /// a copy, a thumbnailer or `cat *` starts). If so, asks the prefetchers for the rest of
    /// this GOP and the [`WALK_GOPS`]` - 1` after it, each decoded whole (two cores decode
    /// GOPs, the render threads make their files). Called when a read at the start of a file
    /// begins, before it waits for anything.
    fn walk_ahead(&self, entry: usize) -> bool {
        let Some(tx) = &self.prefetch_tx else {
            return false;
        };
        if !matches!(
            self.inner.archive.index.entries[entry].kind,
            EntryKind::Image(_)
        ) {
            return false;
        }
        let walking = self.in_order(entry)
            || (self.starts_folder(entry)
                && !self.inner.is_cached(Key::File(entry)).unwrap_or(true));
        if walking {
            let mut next = Some(entry);
            for _ in 0..WALK_GOPS {
                let Some(g) = next else { break };
                if self.inner.gop_wanted(g) && tx.try_send(Ahead::Gop(g)).is_err() {
                    break;
                }
                next = self.inner.next_gop_entry(g);
            }
        }
        walking
    }

    /// Asks the prefetchers for the next files after `entry` that are decoded on their first
    /// read, one by one, in index order: images (unless a reader `walking` has the GOPs
    /// ahead decoded whole), and kept files stored compressed (a viewer paging through scans
    /// kept as recoded PNGs finds the next one ready). Requests are dropped when the queue
    /// is full, so a reader who stops reading stops the prefetching too.
    fn prefetch_after(&self, entry: usize, walking: bool) {
        let Some(tx) = &self.prefetch_tx else { return };
        let next = self
            .inner
            .archive
            .index
            .entries
            .iter()
            .enumerate()
            .skip(entry + 1)
            .filter(|(_, e)| match &e.kind {
                EntryKind::Image(_) => true,
                EntryKind::Verbatim { blob, .. } => !blob.is_stored(),
                _ => false,
            })
            .take(self.inner.opts.prefetch)
            .filter(|(_, e)| !(walking && matches!(e.kind, EntryKind::Image(_))));
        for (i, _) in next {
            let cached = self
                .inner
                .cache
                .lock()
                .map(|c| c.contains(&Key::File(i)))
                .unwrap_or(true);
            let rendering = self
                .inner
                .rendering
                .lock()
                .map(|r| r.contains(&i))
                .unwrap_or(true);
            if cached || rendering {
                continue;
            }
            if tx.try_send(Ahead::File(i)).is_err() {
                break;
            }
        }
    }
}

impl Drop for FrameSource {
    fn drop(&mut self) {
        self.prefetch_tx = None;
        for h in self.prefetchers.drain(..) {
            let _ = h.join();
        }
        // The render threads finish what is queued and stop.
        if let Ok(mut tx) = self.inner.render_tx.lock() {
            *tx = None;
        }
        for h in self.renderers.drain(..) {
            let _ = h.join();
        }
        let s = &self.inner.stats;
        log::info!(
            "frame source: {} frames decoded, {} files rendered, {} cache hits, {} seeks, {} ms decoding, {} ms rendering",
            s.frames_decoded.load(Ordering::Relaxed),
            s.files_rendered.load(Ordering::Relaxed),
            s.cache_hits.load(Ordering::Relaxed),
            s.seeks.load(Ordering::Relaxed),
            s.decode_us.load(Ordering::Relaxed) / 1000,
            s.render_us.load(Ordering::Relaxed) / 1000
        );
    }
}

impl Inner {
    /// The image on the first frame of the GOP after the one holding `entry`'s first tile.
    fn next_gop_entry(&self, entry: usize) -> Option<usize> {
        let (t, gop, _, _) = self.gop_span(entry)?;
        let next = *self.maps.get(t)?.gop_end.get(&gop)?;
        let pts = self.archive.index.tracks.get(t)?.packets.get(next)?.pts;
        self.users
            .get(&(t, pts))?
            .iter()
            .find(|u| u.plane == Plane::Color && u.entry != entry)
            .map(|u| u.entry)
    }

    /// Track, keyframe packet, and first and last frame numbers of the GOP that holds
    /// `entry`'s first tile.
    fn gop_span(&self, entry: usize) -> Option<(usize, usize, u64, u64)> {
        let EntryKind::Image(img) = &self.archive.index.entries.get(entry)?.kind else {
            return None;
        };
        let tile = img.tiles.first()?;
        let t = tile.track as usize;
        let map = self.maps.get(t)?;
        let gop = *map.gop_of_frame.get(&tile.frame)?;
        let len = map.gop_end.get(&gop)?.checked_sub(gop)? as u64;
        // A closed GOP's keyframe comes first in decoding order and shows first.
        let first = self.archive.index.tracks.get(t)?.packets.get(gop)?.pts;
        Some((t, gop, first, first + len.checked_sub(1)?))
    }

    /// Whether decoding the GOP of `entry` ahead would bring anything: no prefetcher decodes
    /// it now, and some image on it is not in the cache yet (a reader decoding it up to its
    /// own file leaves the rest to a prefetcher, which goes on from there).
    fn gop_wanted(&self, entry: usize) -> bool {
        let Some((t, gop, first, last)) = self.gop_span(entry) else {
            return false;
        };
        let ahead = self
            .in_flight
            .lock()
            .map_or(true, |b| b.get(&(t, gop)) == Some(&true));
        !ahead && self.gop_unrendered(t, first, last)
    }

    /// Whether some image on frames `first..=last` of track `t` has neither its file nor its
    /// pixels in the cache.
    fn gop_unrendered(&self, t: usize, first: u64, last: u64) -> bool {
        let Ok(cache) = self.cache.lock() else {
            return false;
        };
        (first..=last).any(|pts| {
            self.users.get(&(t, pts)).is_some_and(|users| {
                users.iter().any(|u| {
                    !cache.contains(&Key::File(u.entry))
                        && !cache.contains(&Key::Pixels(u.entry))
                        && !cache.contains(&Key::Piece(*u))
                })
            })
        })
    }

    /// Decodes the whole GOP that holds `entry`'s first tile and renders every whole image on
    /// it into the cache (a prefetcher's job: reading in order finds them ready). When a
    /// reader is decoding that GOP up to its own file, goes on from there once it is done;
    /// nothing to do when another prefetcher decodes it already.
    fn read_ahead_gop(self: &Arc<Self>, entry: usize) -> Result<(), FrameError> {
        let Some((t, gop, first, last)) = self.gop_span(entry) else {
            return Ok(());
        };
        {
            // Waiting for a reader and claiming the GOP happen under one lock: a reader that
            // starts decoding it in between must not make this job think a prefetcher has it.
            let mut busy = lock(&self.in_flight)?;
            loop {
                match busy.get(&(t, gop)) {
                    // A reader decoding this GOP up to its file: continue from there.
                    Some(false) => {
                        busy = self
                            .in_flight_cv
                            .wait(busy)
                            .map_err(|_| FrameError::Internal("lock poisoned".into()))?;
                    }
                    Some(true) => return Ok(()),
                    None => break,
                }
            }
            if !self.gop_unrendered(t, first, last) {
                return Ok(());
            }
            busy.insert((t, gop), true);
        }
        // In flight until the decode ends and the last of its renders is done.
        let in_flight = Arc::new(GopInFlight {
            inner: Arc::clone(self),
            key: (t, gop),
        });
        self.with_worker_slot(|| self.decode_until(t, gop, last, Decode::Ahead(&in_flight)))
            .map(drop)
    }

    /// A prefetcher's job.
    fn prefetch(self: &Arc<Self>, job: Ahead) {
        let result = match job {
            Ahead::File(entry) => self.file(entry).map(drop),
            Ahead::Gop(entry) => self.read_ahead_gop(entry),
        };
        if let Err(e) = result {
            log::debug!("prefetch {job:?} failed: {e}");
        }
    }

    /// A render thread's job: the file of a frame decoded ahead.
    fn render_ahead(self: &Arc<Self>, job: RenderJob) {
        let started = Instant::now();
        if let Err(e) = self.render_on_the_way(job.entry, &job.frame) {
            log::debug!("render ahead of entry {} failed: {e}", job.entry);
        }
        self.stats
            .render_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        // The frame goes back to its decoder's pool, then the GOP's mark may go (the last
        // render of a GOP whose decode has ended).
        drop(job.frame);
        drop(job.gop);
        self.in_flight_cv.notify_all();
    }

    /// Hands `frame` to a render thread for `entry`'s file; gives the job back when the
    /// queue is full or there are no render threads.
    fn queue_render(&self, job: RenderJob) -> Result<(), RenderJob> {
        let Ok(tx) = self.render_tx.lock() else {
            return Err(job);
        };
        match tx.as_ref() {
            Some(tx) => tx.try_send(job).map_err(|e| match e {
                mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job) => job,
            }),
            None => Err(job),
        }
    }

    /// Renders `entry`'s file from `frame` (on the way through a GOP decoded ahead) into the
    /// cache.
    fn render_on_the_way(&self, entry: usize, frame: &DecodedFrame) -> Result<(), FrameError> {
        let EntryKind::Image(img) = &self.archive.index.entries[entry].kind else {
            return Err(FrameError::Internal("not an image".into()));
        };
        let bytes = if self.renders_from_frame(entry, frame) {
            render_from_planes(img, frame, self.opts.format, self.renderer)
                .ok_or_else(|| FrameError::Internal("frame has no Y'CbCr planes".into()))?
        } else {
            let decoded = decoded_from_frame(img, frame, false)?;
            render::render_decoded(img, &decoded, self.opts.format, self.renderer)
        }
        .map_err(|err| FrameError::Internal(format!("render: {err}")))?;
        self.accept(entry, bytes).map(drop)
    }

    fn cached(&self, key: Key) -> Result<Option<Value>, FrameError> {
        let mut c = lock(&self.cache)?;
        Ok(c.get(&key).cloned())
    }

    /// Whether `key` is cached, without counting as a use: the LRU order stays as readers
    /// made it (decoding ahead and the walk only look).
    fn is_cached(&self, key: Key) -> Result<bool, FrameError> {
        Ok(lock(&self.cache)?.contains(&key))
    }

    fn file(&self, entry: usize) -> Result<Arc<Vec<u8>>, FrameError> {
        loop {
            if let Some(Value::File(f)) = self.cached(Key::File(entry))? {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(f);
            }
            // One render per file: a reader arriving while the prefetcher (or another reader)
            // renders it waits for that render instead of doing it again.
            {
                let mut busy = lock(&self.rendering)?;
                if busy.contains(&entry) {
                    while busy.contains(&entry) {
                        busy = self
                            .rendering_cv
                            .wait(busy)
                            .map_err(|_| FrameError::Internal("lock poisoned".into()))?;
                    }
                    continue;
                }
                busy.insert(entry);
            }
            let result = self.render_file(entry);
            if let Ok(mut busy) = self.rendering.lock() {
                busy.remove(&entry);
            }
            self.rendering_cv.notify_all();
            return result;
        }
    }

    /// Runs `f` once fewer than `cores()` decodes are running.
    fn with_worker_slot<T>(
        &self,
        f: impl FnOnce() -> Result<T, FrameError>,
    ) -> Result<T, FrameError> {
        {
            let mut n = lock(&self.busy_workers)?;
            while *n >= cores() {
                n = self
                    .busy_cv
                    .wait(n)
                    .map_err(|_| FrameError::Internal("lock poisoned".into()))?;
            }
            *n += 1;
        }
        let result = f();
        if let Ok(mut n) = self.busy_workers.lock() {
            *n = n.saturating_sub(1);
        }
        self.busy_cv.notify_one();
        result
    }

    /// A stored file is read through and checked against its hash once, on its first read:
    /// damaged bytes give an error instead of wrong data.
    fn check_blob(&self, entry: usize, blob: &crate::archive::Blob) -> Result<(), FrameError> {
        use crate::archive::ReadError;
        let known = lock(&self.blobs_checked)?.get(&entry).copied();
        let result = match known {
            Some(true) => return Ok(()),
            Some(false) => Err(ReadError::Corrupt(self.archive.blob_range(blob).start)),
            None => self.archive.verify_blob(blob),
        };
        match result {
            Ok(()) => {
                lock(&self.blobs_checked)?.insert(entry, true);
                Ok(())
            }
            Err(e @ (ReadError::Corrupt(_) | ReadError::OutOfRange(_))) => {
                if lock(&self.blobs_checked)?.insert(entry, false).is_none() {
                    log::error!(
                        "{}: stored bytes are damaged: {e}",
                        self.archive.index.entries[entry].path_lossy()
                    );
                }
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn render_file(&self, entry: usize) -> Result<Arc<Vec<u8>>, FrameError> {
        let e = &self.archive.index.entries[entry];
        if let EntryKind::Verbatim { blob, .. } = &e.kind {
            // A file stored compressed: decoded and checked against its recorded hash, then
            // cached, so that reading it in pieces decodes it once.
            return match self.with_worker_slot(|| Ok(self.archive.read_file(blob)))? {
                Ok(bytes) => {
                    let bytes = Arc::new(bytes);
                    lock(&self.cache)?.insert(Key::File(entry), Value::File(Arc::clone(&bytes)));
                    Ok(bytes)
                }
                Err(err) => {
                    if lock(&self.bad)?.insert(entry) {
                        log::error!("{}: stored bytes are damaged: {err}", e.path_lossy());
                    }
                    Err(err.into())
                }
            };
        }
        let EntryKind::Image(img) = &e.kind else {
            return Err(FrameError::Internal("not an image".into()));
        };
        if is_simple(img) || self.renderer.uses_planes(img, self.opts.format) {
            // Rendered straight from the decoder's frame when it is decoded for this file,
            // or from the pixels cached when the frame came out on the way to another; or
            // found rendered, when a GOP decoded ahead brought it while this waited.
            if let Some(Value::Pixels(pixels)) = self.cached(Key::Pixels(entry))? {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return self.render_cached_pixels(entry, &pixels);
            }
            let first = Use {
                entry,
                plane: Plane::Color,
                tile: 0,
            };
            return match self.value(Key::File(entry), first)? {
                Found::Value(Value::File(f)) => Ok(f),
                Found::Value(Value::Pixels(pixels)) => self.render_cached_pixels(entry, &pixels),
                Found::Frame(frame) => self.render_frame(entry, frame),
                Found::Value(Value::Piece(_)) => Err(FrameError::Internal(
                    "cache holds the wrong kind of value".into(),
                )),
            };
        }
        let pixels = self.pixels(entry)?;
        self.render_pixels(entry, &pixels)
    }

    /// Whether `entry`'s file is rendered straight from `frame`'s planes.
    fn renders_from_frame(&self, entry: usize, frame: &DecodedFrame) -> bool {
        match &self.archive.index.entries[entry].kind {
            EntryKind::Image(img) => {
                frame.has_ycc_planes() && self.renderer.uses_planes(img, self.opts.format)
            }
            _ => false,
        }
    }

    /// Renders `entry`'s file from the decoded frame that holds it.
    fn render_frame(&self, entry: usize, frame: DecodedFrame) -> Result<Arc<Vec<u8>>, FrameError> {
        let EntryKind::Image(img) = &self.archive.index.entries[entry].kind else {
            return Err(FrameError::Internal("not an image".into()));
        };
        let bytes = self
            .rendering(|| {
                render_from_planes(img, &frame, self.opts.format, self.renderer)
                    .ok_or_else(|| FrameError::Internal("frame has no Y'CbCr planes".into()))
            })?
            .map_err(|err| FrameError::Internal(format!("render: {err}")));
        // The frame goes back to the decoder's pool here.
        drop(frame);
        self.accept(entry, bytes?)
    }

    /// Renders a whole image's file from its pixels found in the cache, which then make way
    /// (a frame's planes are 4:4:4: 24 times the bytes of the file at 1080p).
    fn render_cached_pixels(
        &self,
        entry: usize,
        pixels: &Decoded,
    ) -> Result<Arc<Vec<u8>>, FrameError> {
        let file = self.render_pixels(entry, pixels)?;
        lock(&self.cache)?.remove(&Key::Pixels(entry));
        Ok(file)
    }

    fn render_pixels(&self, entry: usize, pixels: &Decoded) -> Result<Arc<Vec<u8>>, FrameError> {
        let EntryKind::Image(img) = &self.archive.index.entries[entry].kind else {
            return Err(FrameError::Internal("not an image".into()));
        };
        let bytes = self.rendering(|| {
            render::render_decoded(img, pixels, self.opts.format, self.renderer)
                .map_err(|err| FrameError::Internal(format!("render: {err}")))
        })?;
        self.accept(entry, bytes)
    }

    /// Runs the render `f` for a reader, counting its time. It takes no worker slot: its frame
    /// is decoded already (no more memory held by running it now), and a reader must not wait
    /// behind decodes that prefetchers run ahead of it.
    fn rendering<T>(&self, f: impl FnOnce() -> Result<T, FrameError>) -> Result<T, FrameError> {
        let started = Instant::now();
        let result = f();
        self.stats
            .render_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        result
    }

    /// Checks a freshly rendered file of `entry` against what the index recorded (size always,
    /// checksum with the same renderer) and caches it.
    fn accept(&self, entry: usize, bytes: Vec<u8>) -> Result<Arc<Vec<u8>>, FrameError> {
        let e = &self.archive.index.entries[entry];
        let EntryKind::Image(img) = &e.kind else {
            return Err(FrameError::Internal("not an image".into()));
        };
        self.stats.files_rendered.fetch_add(1, Ordering::Relaxed);
        if self.opts.format == OutputFormat::Original {
            if bytes.len() as u64 != img.rendered.size {
                if lock(&self.bad)?.insert(entry) {
                    log::error!(
                        "{}: rendered {} bytes but the index promises {}: refusing to serve a wrong size",
                        e.path_lossy(),
                        bytes.len(),
                        img.rendered.size
                    );
                }
                return Err(FrameError::Internal(
                    "rendered size differs from the index".into(),
                ));
            }
            if xxh3_64(&bytes) != img.rendered.hash {
                // With the same renderer, different bytes can only come from damaged data.
                let same_renderer = Renderer::of(&self.archive.index.renderer).is_some();
                if lock(&self.bad)?.insert(entry) {
                    if same_renderer {
                        log::error!(
                            "{}: decoded image differs from pack time: damaged data",
                            e.path_lossy()
                        );
                    } else {
                        log::warn!(
                            "{}: rendered bytes differ from pack time (same size)",
                            e.path_lossy()
                        );
                    }
                }
                if same_renderer {
                    return Err(FrameError::Internal(
                        "damaged image data (checksum mismatch)".into(),
                    ));
                }
            }
        }
        let bytes = Arc::new(bytes);
        lock(&self.cache)?.insert(Key::File(entry), Value::File(Arc::clone(&bytes)));
        Ok(bytes)
    }

    /// Decoded pixels of an image entry: one frame's worth, or put together from its tiles
    /// and alpha plane.
    fn pixels(&self, entry: usize) -> Result<Arc<Decoded>, FrameError> {
        let e = &self.archive.index.entries[entry];
        let EntryKind::Image(img) = &e.kind else {
            return Err(FrameError::Internal("not an image".into()));
        };
        let first = Use {
            entry,
            plane: Plane::Color,
            tile: 0,
        };
        if is_simple(img) {
            return match self.value(Key::Pixels(entry), first)? {
                Found::Value(Value::Pixels(p)) => Ok(p),
                _ => Err(FrameError::Internal(
                    "cache holds the wrong kind of value".into(),
                )),
            };
        }
        if let Some(Value::Pixels(p)) = self.cached(Key::Pixels(entry))? {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(p);
        }
        let mut asm = Assembly::new(img)?;
        let uses = (0..img.tiles.len())
            .map(|k| (Plane::Color, k))
            .chain((0..img.alpha.len()).map(|k| (Plane::Alpha, k)));
        let mut pic = None;
        for (plane, tile) in uses {
            let u = Use { entry, plane, tile };
            let Found::Value(Value::Piece(piece)) = self.value(Key::Piece(u), u)? else {
                return Err(FrameError::Internal(
                    "cache holds the wrong kind of value".into(),
                ));
            };
            pic = asm.add(img, u, &piece);
        }
        let pic = Arc::new(Decoded::Picture(pic.ok_or(FrameError::BadTile)?));
        let mut cache = lock(&self.cache)?;
        // The tiles are in the picture now: drop them (their bytes leave the count too).
        let pieces = (0..img.tiles.len())
            .map(|k| (Plane::Color, k))
            .chain((0..img.alpha.len()).map(|k| (Plane::Alpha, k)));
        for (plane, tile) in pieces {
            cache.remove(&Key::Piece(Use { entry, plane, tile }));
        }
        cache.insert(Key::Pixels(entry), Value::Pixels(Arc::clone(&pic)));
        Ok(pic)
    }

    /// The cached value under `key`, decoding the frame that holds tile `u` when it is not.
    fn value(&self, key: Key, u: Use) -> Result<Found, FrameError> {
        let EntryKind::Image(img) = &self.archive.index.entries[u.entry].kind else {
            return Err(FrameError::Internal("not an image".into()));
        };
        let tiles = match u.plane {
            Plane::Color => &img.tiles,
            Plane::Alpha => &img.alpha,
        };
        let tile = *tiles.get(u.tile).ok_or(FrameError::BadTile)?;
        let (t, f) = (tile.track as usize, tile.frame);
        let gop = *self
            .maps
            .get(t)
            .and_then(|m| m.gop_of_frame.get(&f))
            .ok_or(FrameError::Missing { track: t, frame: f })?;
        // A file rendered from planes may find them cached instead: they came out of a
        // decode that another thread ran while this one waited.
        let planes = match key {
            Key::File(entry) => Some(Key::Pixels(entry)),
            _ => None,
        };
        loop {
            for k in std::iter::once(key).chain(planes) {
                if let Some(v) = self.cached(k)? {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Found::Value(v));
                }
            }
            // One decode per GOP: while another thread decodes this one, look again each time
            // a frame comes out of it (this one's may be among them) and when it ends.
            {
                let mut busy = lock(&self.in_flight)?;
                if busy.contains_key(&(t, gop)) {
                    drop(
                        self.in_flight_cv
                            .wait(busy)
                            .map_err(|_| FrameError::Internal("lock poisoned".into()))?,
                    );
                    continue;
                }
                busy.insert((t, gop), false);
            }
            let result = self
                .with_worker_slot(|| self.decode_until(t, gop, f, Decode::For(key)))
                .and_then(|w| w.ok_or(FrameError::Missing { track: t, frame: f }));
            if let Ok(mut busy) = self.in_flight.lock() {
                busy.remove(&(t, gop));
            }
            self.in_flight_cv.notify_all();
            return result;
        }
    }

    fn take_decoder(&self, t: usize, gop: usize, f: u64) -> Result<Option<Positioned>, FrameError> {
        let mut pool = lock(&self.pool)?;
        loop {
            // A decoder already in this GOP, short of frame f, continues forward.
            if let Some(i) = pool.idle.iter().position(|d| {
                d.track == t && d.gop_start == gop && d.last_out.is_none_or(|o| o < f)
            }) {
                return Ok(Some(pool.idle.swap_remove(i)));
            }
            if pool.live < self.max_decoders(t) {
                pool.live += 1;
                return Ok(None);
            }
            if !pool.idle.is_empty() {
                // Reuse an idle decoder that holds no place in a GOP (a GOP decoded to its end
                // resets its decoder), else the least recently returned (it will be reset or
                // replaced): one stopped inside a GOP is kept for the reader who goes on there.
                let spent = pool.idle.iter().position(|d| d.last_out.is_none());
                let d = pool.idle.remove(spent.unwrap_or(0));
                if d.track == t {
                    return Ok(Some(d));
                }
                drop(d);
                return Ok(None);
            }
            pool = self
                .pool_cv
                .wait(pool)
                .map_err(|_| FrameError::Internal("lock poisoned".into()))?;
        }
    }

    /// Decoders allowed for track `t`: `max_decoders`, fewer for large canvases (a 4:4:4
    /// decoder holds about eight frames), so that they fit in 96 MiB.
    fn max_decoders(&self, t: usize) -> usize {
        let frame = self
            .archive
            .index
            .tracks
            .get(t)
            .map_or(1, |tr| u64::from(tr.width) * u64::from(tr.height) * 3);
        decoders_for(frame, self.opts.max_decoders)
    }

    fn give_back(&self, d: Option<Positioned>) {
        if let Ok(mut pool) = self.pool.lock() {
            match d {
                Some(d) => pool.idle.push(d),
                None => pool.live = pool.live.saturating_sub(1),
            }
        }
        self.pool_cv.notify_one();
    }

    /// Decodes track `t` from the keyframe `gop` (or onwards from where a decoder stands)
    /// until frame `f` has come out, caching what every image decoded on the way needs:
    /// its pixels, or, for a GOP decoded ahead, the rendered file of a whole image, on the
    /// render threads when they are free. Returns what a reader asked for (an entry on frame
    /// `f`), whatever the cache keeps.
    fn decode_until(
        &self,
        t: usize,
        gop: usize,
        f: u64,
        purpose: Decode<'_>,
    ) -> Result<Option<Found>, FrameError> {
        let (want, ahead) = match purpose {
            Decode::For(key) => (Some(key), None),
            Decode::Ahead(gop) => (None, Some(gop)),
        };
        let track = self
            .archive
            .index
            .tracks
            .get(t)
            .ok_or(FrameError::NoTrack(t))?;
        let taken = self.take_decoder(t, gop, f)?;
        let mut d = match taken {
            Some(mut d) if d.gop_start == gop && d.last_out.is_none_or(|o| o < f) => {
                d.track = t;
                d
            }
            Some(mut d) => {
                d.decoder.reset();
                d.gop_start = gop;
                d.next_packet = gop;
                d.last_out = None;
                self.stats.seeks.fetch_add(1, Ordering::Relaxed);
                d
            }
            None => {
                let decoder = match VideoDecoder::new(&track.codec, &track.extradata, 1) {
                    Ok(dec) => dec,
                    Err(e) => {
                        self.give_back(None);
                        return Err(e.into());
                    }
                };
                self.stats.seeks.fetch_add(1, Ordering::Relaxed);
                Positioned {
                    track: t,
                    decoder,
                    gop_start: gop,
                    next_packet: gop,
                    last_out: None,
                }
            }
        };
        let end = self.maps[t]
            .gop_end
            .get(&gop)
            .copied()
            .unwrap_or(track.packets.len());
        log::debug!(
            "track {t}: decoding GOP {gop} from packet {} to frame {f} for {want:?}",
            d.next_packet
        );
        let mut wanted: Option<Found> = None;
        let started = Instant::now();
        // Time spent rendering files on the way (counted as rendering, not decoding).
        let mut rendered_ahead = std::time::Duration::ZERO;
        let result = (|| -> Result<bool, FrameError> {
            loop {
                while let Some(frame) = d.decoder.receive()? {
                    self.stats.frames_decoded.fetch_add(1, Ordering::Relaxed);
                    let pts = frame.pts as u64;
                    d.last_out = Some(pts);
                    let users = self.users.get(&(t, pts)).map(Vec::as_slice).unwrap_or(&[]);
                    if let (Some(Key::File(entry)), [u]) = (want, users) {
                        if u.entry == entry && self.renders_from_frame(entry, &frame) {
                            // The file is rendered from this frame (the decoder's own,
                            // held by reference) once the decoder is free for the next one.
                            wanted = Some(Found::Frame(frame));
                            if pts >= f && d.next_packet <= end {
                                return Ok(true);
                            }
                            continue;
                        }
                    }
                    if let (None, [u]) = (want, users) {
                        let simple = match &self.archive.index.entries[u.entry].kind {
                            EntryKind::Image(img) if is_simple(img) && u.plane == Plane::Color => {
                                Some(img)
                            }
                            _ => None,
                        };
                        let unrendered = match simple {
                            Some(img) => (!self.is_cached(Key::File(u.entry))?).then_some(img),
                            None => None,
                        };
                        if unrendered.is_some() {
                            // A render thread makes the file from the decoder's frame (held by
                            // reference) while this one decodes on; when they are all busy,
                            // or the frames they would hold are too large, this one renders it.
                            let queued = match ahead {
                                Some(gop)
                                    if self.renders_from_frame(u.entry, &frame)
                                        && frames_to_render_fit(&frame) =>
                                {
                                    self.queue_render(RenderJob {
                                        entry: u.entry,
                                        frame,
                                        gop: Arc::clone(gop),
                                    })
                                    .map_err(|job| job.frame)
                                }
                                _ => Err(frame),
                            };
                            if let Err(frame) = queued {
                                let render = Instant::now();
                                if let Err(e) = self.render_on_the_way(u.entry, &frame) {
                                    log::debug!("render ahead of entry {} failed: {e}", u.entry);
                                }
                                rendered_ahead += render.elapsed();
                                d.decoder.recycle(frame);
                            }
                            self.in_flight_cv.notify_all();
                            if pts >= f && d.next_packet <= end {
                                return Ok(true);
                            }
                            continue;
                        }
                    }
                    for &u in users {
                        if let EntryKind::Image(img) = &self.archive.index.entries[u.entry].kind {
                            let planes = self.renderer.uses_planes(img, self.opts.format);
                            let (key, value) = if is_simple(img) && u.plane == Plane::Color {
                                let decoded = decoded_from_frame(img, &frame, planes)?;
                                let key = Key::Pixels(u.entry);
                                (key, Value::Pixels(Arc::new(decoded)))
                            } else {
                                let piece = piece_from_frame(img, u, &frame)?;
                                (Key::Piece(u), Value::Piece(Arc::new(piece)))
                            };
                            if want == Some(key) || want == Some(Key::File(u.entry)) {
                                wanted = Some(Found::Value(value.clone()));
                            }
                            lock(&self.cache)?.insert(key, value);
                        }
                    }
                    if !users.is_empty() {
                        self.in_flight_cv.notify_all();
                    }
                    d.decoder.recycle(frame);
                    // After the end of the GOP was signalled, drain it whole: the decoder is
                    // reset afterwards and the frames still inside would be lost.
                    if pts >= f && d.next_packet <= end {
                        return Ok(true);
                    }
                }
                if d.next_packet < end {
                    let p = &track.packets[d.next_packet];
                    let data = self.archive.read_packet(p)?;
                    d.next_packet += 1;
                    d.decoder.send(&data, p.pts as i64, p.dts, p.keyframe)?;
                } else if d.next_packet == end {
                    // The GOP's last frames are held back by the decoder: drain it.
                    d.decoder.send_eof()?;
                    d.next_packet = end + 1;
                } else {
                    return Ok(d.last_out.is_some_and(|o| o >= f));
                }
            }
        })();
        let decoding = started.elapsed().saturating_sub(rendered_ahead);
        self.stats
            .decode_us
            .fetch_add(decoding.as_micros() as u64, Ordering::Relaxed);
        self.stats
            .render_us
            .fetch_add(rendered_ahead.as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(true) if d.next_packet <= end => {
                self.give_back(Some(d));
                Ok(wanted)
            }
            Ok(true) => {
                // Drained with EOF: the decoder must be reset before it is used again.
                d.decoder.reset();
                d.next_packet = d.gop_start;
                d.last_out = None;
                self.give_back(Some(d));
                Ok(wanted)
            }
            Ok(false) => {
                self.give_back(None);
                Err(FrameError::Missing { track: t, frame: f })
            }
            Err(e) => {
                // A decoder that failed is dropped, not reused.
                self.give_back(None);
                Err(e)
            }
        }
    }
}
