//! Writes an archive: Matroska header, clusters of coded frames, cues, and an attachment area
//! holding the index, the verbatim files and a second copy of the index, then a trailer.
//!
//! File layout:
//! `EBML header` · `Segment { SeekHead (reserved) · Info · Tracks (reserved) · Cluster* · Cues ·
//! Attachments { index · verbatim files · index copy } · Void trailer }`.
//! Verbatim files are streamed into a side file while packing and copied in at the end; the
//! index stores their offsets relative to the end of the index attachment, so the index can be
//! written last without knowing its own size in advance.

use super::mkv::{self, id, CountingWriter};
use super::{
    codec, Blob, EntryKind, Index, Packet, INDEX_ATTACHMENT_NAME, INDEX_COPY_ATTACHMENT_NAME,
};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

/// Bytes reserved at the start of the segment for the SeekHead.
const SEEK_HEAD_RESERVE: usize = 128;
/// Bytes reserved per track for its TrackEntry (codec private data included).
const TRACK_RESERVE: usize = 640;
/// Size field width used for elements patched at the end.
const PATCHED_SIZE_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Index(#[from] codec::IndexError),
    #[error("codec private data of track {track} is too large ({len} bytes)")]
    ExtradataTooLarge { track: usize, len: usize },
    #[error("no such track {0}")]
    NoTrack(usize),
    #[error("liblzma could not compress a group of recoded PNGs")]
    PngGroup,
}

/// What the writer needs to know about a track before any frame is written.
#[derive(Debug, Clone)]
pub struct TrackSpec {
    pub width: u32,
    pub height: u32,
    /// Matroska codec ID, e.g. "V_MPEG4/ISO/AVC".
    pub codec_id: String,
    /// Number of frames the track will hold (the Info duration until the real one is known).
    pub frames: u64,
}

struct TrackState {
    spec: TrackSpec,
    /// Matroska track number, given when the first frame is written (empty tracks get none).
    number: Option<u64>,
    extradata: Vec<u8>,
    packets: Vec<Packet>,
    /// PixelCropRight/Bottom when every image of the track has the same stored size.
    crop: Option<(u32, u32)>,
    /// First timeline slot (in frames) of this track, given with its first frame: tracks
    /// follow one another on the timeline without gaps.
    first_slot: Option<u64>,
    /// An alpha track shares the timeline of its colour track (see `share_timeline`).
    timeline_of: Option<usize>,
}

struct Cluster {
    track: usize,
    /// Absolute offset of the Cluster element.
    start: u64,
    /// Cluster timestamp in milliseconds.
    time_ms: u64,
    body: Vec<u8>,
}

pub struct ArchiveWriter {
    out: CountingWriter<BufWriter<File>>,
    blobs: CountingWriter<BufWriter<File>>,
    blob_count: u64,
    /// The group of recoded PNGs being filled (`add_png_member`).
    png_group: Vec<u8>,
    /// Groups written: each one's blob and decompressed length.
    png_groups: Vec<(Blob, u64)>,
    segment_body_start: u64,
    tracks_pos: u64,
    info_pos: u64,
    tracks: Vec<TrackState>,
    frame_ms: u64,
    cluster: Option<Cluster>,
    cues: Vec<(u64, u64, u64)>,
    numbered: u64,
    /// First free timeline slot (in frames) after the frames written so far.
    next_slot: u64,
    /// Absolute offset of the Info Duration's 8-byte float, patched at the end.
    duration_pos: u64,
}

impl ArchiveWriter {
    /// Starts an archive in `out` (an empty file); `blobs` is a scratch file for verbatim data.
    pub fn create(
        out: File,
        blobs: File,
        tracks: Vec<TrackSpec>,
        frame_rate: u32,
        title: &str,
    ) -> Result<Self, WriteError> {
        let mut w = CountingWriter::new(BufWriter::with_capacity(1 << 20, out), 0);
        let mut head = Vec::new();
        let mut ebml = Vec::new();
        mkv::uint(&mut ebml, id::EBML_VERSION, 1);
        mkv::uint(&mut ebml, id::EBML_READ_VERSION, 1);
        mkv::uint(&mut ebml, id::EBML_MAX_ID_LENGTH, 4);
        mkv::uint(&mut ebml, id::EBML_MAX_SIZE_LENGTH, 8);
        mkv::string(&mut ebml, id::DOC_TYPE, "matroska");
        mkv::uint(&mut ebml, id::DOC_TYPE_VERSION, 4);
        mkv::uint(&mut ebml, id::DOC_TYPE_READ_VERSION, 2);
        mkv::master(&mut head, id::EBML, &ebml);
        mkv::put_id(&mut head, id::SEGMENT);
        mkv::put_size_fixed(&mut head, 0, PATCHED_SIZE_LEN);
        let segment_body_start = head.len() as u64;
        mkv::void(&mut head, SEEK_HEAD_RESERVE);

        let frame_rate = u64::from(frame_rate.max(1));
        let frame_ms = (1000 / frame_rate).max(1);
        let total_frames: u64 = tracks.iter().map(|t| t.frames).sum();
        let info_pos = head.len() as u64;
        let mut info = Vec::new();
        mkv::uint(&mut info, id::TIMESTAMP_SCALE, 1_000_000);
        mkv::float(&mut info, id::DURATION, (total_frames * frame_ms) as f64);
        mkv::string(&mut info, id::TITLE, title);
        let app = concat!("av1pack ", env!("CARGO_PKG_VERSION"));
        mkv::string(&mut info, id::MUXING_APP, app);
        mkv::string(&mut info, id::WRITING_APP, app);
        let info_head_len = {
            let mut h = Vec::new();
            mkv::master(&mut h, id::INFO, &info);
            h.len() - info.len()
        };
        let duration_pos = info_pos + (info_head_len + duration_offset_in_info()) as u64;
        mkv::master(&mut head, id::INFO, &info);

        let tracks_pos = head.len() as u64;
        mkv::void(&mut head, TRACK_RESERVE * tracks.len().max(1) + 16);
        w.write_all(&head)?;

        let tracks = tracks
            .into_iter()
            .map(|spec| TrackState {
                spec,
                number: None,
                extradata: Vec::new(),
                packets: Vec::new(),
                crop: None,
                first_slot: None,
                timeline_of: None,
            })
            .collect();
        Ok(ArchiveWriter {
            out: w,
            blobs: CountingWriter::new(BufWriter::with_capacity(1 << 20, blobs), 0),
            blob_count: 0,
            png_group: Vec::new(),
            png_groups: Vec::new(),
            segment_body_start,
            tracks_pos,
            info_pos,
            tracks,
            frame_ms,
            cluster: None,
            cues: Vec::new(),
            numbered: 0,
            next_slot: 0,
            duration_pos,
        })
    }

    /// How long each frame is shown when the archive plays as a slideshow (the container's
    /// timestamps only: the encoder's nominal frame rate is unchanged). Call before the first
    /// packet; the default is one frame period of the nominal frame rate.
    pub fn set_frame_duration_ms(&mut self, ms: u64) {
        self.frame_ms = ms.max(1);
    }

    pub fn set_extradata(&mut self, track: usize, data: Vec<u8>) -> Result<(), WriteError> {
        let t = self
            .tracks
            .get_mut(track)
            .ok_or(WriteError::NoTrack(track))?;
        if data.len() > TRACK_RESERVE - 128 {
            return Err(WriteError::ExtradataTooLarge {
                track,
                len: data.len(),
            });
        }
        t.extradata = data;
        Ok(())
    }

    /// Places `track` on the timeline of `other` instead of after it: alpha tracks, whose
    /// frames are not for showing, take no time of the slideshow of their own. `other`'s first
    /// frame must be written before `track`'s.
    pub fn share_timeline(&mut self, track: usize, other: usize) -> Result<(), WriteError> {
        if other >= self.tracks.len() {
            return Err(WriteError::NoTrack(other));
        }
        let t = self
            .tracks
            .get_mut(track)
            .ok_or(WriteError::NoTrack(track))?;
        t.timeline_of = Some(other);
        Ok(())
    }

    /// Appends one coded frame of `track` (packets in decode order).
    pub fn write_packet(
        &mut self,
        track: usize,
        data: &[u8],
        pts: u64,
        dts: i64,
        keyframe: bool,
    ) -> Result<Packet, WriteError> {
        // A track sharing another's timeline starts where that one starts and does not
        // move the timeline on (its frames never outnumber the other's).
        let shared = self
            .tracks
            .get(track)
            .and_then(|s| s.timeline_of)
            .and_then(|o| self.tracks.get(o))
            .and_then(|o| o.first_slot);
        let state = self
            .tracks
            .get_mut(track)
            .ok_or(WriteError::NoTrack(track))?;
        let first_slot = *state
            .first_slot
            .get_or_insert(shared.unwrap_or(self.next_slot));
        if shared.is_none() {
            self.next_slot = self.next_slot.max(first_slot + pts + 1);
        }
        let number = match state.number {
            Some(n) => n,
            None => {
                self.numbered += 1;
                state.number = Some(self.numbered);
                self.numbered
            }
        };
        let time_ms = (first_slot + pts) * self.frame_ms;
        let needs_new = match &self.cluster {
            None => true,
            Some(c) => {
                c.track != track
                    || keyframe
                    || time_ms < c.time_ms
                    || time_ms - c.time_ms > i16::MAX as u64
                    || c.body.len() > (8 << 20)
            }
        };
        if needs_new {
            self.flush_cluster()?;
            let mut body = Vec::new();
            mkv::uint(&mut body, id::TIMESTAMP, time_ms);
            self.cluster = Some(Cluster {
                track,
                start: self.out.pos,
                time_ms,
                body,
            });
            if keyframe {
                self.cues
                    .push((time_ms, number, self.out.pos - self.segment_body_start));
            }
        }
        let Some(c) = self.cluster.as_mut() else {
            return Err(WriteError::NoTrack(track));
        };
        // SimpleBlock: track number (vint), relative timestamp (i16), flags, payload.
        let mut block_head = Vec::with_capacity(8);
        mkv::put_size(&mut block_head, number);
        let rel = (time_ms - c.time_ms) as i16;
        block_head.extend_from_slice(&rel.to_be_bytes());
        block_head.push(if keyframe { 0x80 } else { 0x00 });
        let block_len = (block_head.len() + data.len()) as u64;
        mkv::put_id(&mut c.body, id::SIMPLE_BLOCK);
        mkv::put_size(&mut c.body, block_len);
        c.body.extend_from_slice(&block_head);
        let offset_in_body = c.body.len() as u64;
        c.body.extend_from_slice(data);
        // The cluster is written as ID + 8-byte size + body.
        let offset = c.start + 4 + PATCHED_SIZE_LEN as u64 + offset_in_body;
        let packet = Packet {
            offset,
            size: data.len() as u32,
            pts,
            dts,
            keyframe,
            hash: xxhash_rust::xxh3::xxh3_64(data),
        };
        self.tracks[track].packets.push(packet);
        Ok(packet)
    }

    fn flush_cluster(&mut self) -> Result<(), WriteError> {
        if let Some(c) = self.cluster.take() {
            let mut head = Vec::with_capacity(12);
            mkv::put_id(&mut head, id::CLUSTER);
            mkv::put_size_fixed(&mut head, c.body.len() as u64, PATCHED_SIZE_LEN);
            debug_assert_eq!(self.out.pos, c.start);
            self.out.write_all(&head)?;
            self.out.write_all(&c.body)?;
        }
        Ok(())
    }

    /// Streams a verbatim file into the attachment area; `len` bytes are read from `src`.
    pub fn add_blob(
        &mut self,
        name: &str,
        src: &mut impl Read,
        len: u64,
    ) -> Result<Blob, WriteError> {
        self.blob_count += 1;
        let mut fields = Vec::new();
        mkv::string(&mut fields, id::FILE_NAME, name);
        mkv::string(&mut fields, id::FILE_MEDIA_TYPE, "application/octet-stream");
        mkv::uint(&mut fields, id::FILE_UID, self.blob_count + 1);
        let data_head = mkv::header(id::FILE_DATA, len);
        let body_len = fields.len() as u64 + data_head.len() as u64 + len;
        let mut head = mkv::header(id::ATTACHED_FILE, body_len);
        head.extend_from_slice(&fields);
        head.extend_from_slice(&data_head);
        self.blobs.write_all(&head)?;
        let offset = self.blobs.pos;
        let mut hasher = HashingWriter {
            inner: &mut self.blobs,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
        };
        mkv::copy_exact(src, &mut hasher, len)?;
        let hash = hasher.hasher.digest();
        Ok(Blob {
            offset,
            len,
            hash,
            coding: super::BlobCoding::Stored,
        })
    }

    /// Adds a recoded PNG's member form (`crate::pngz::member`; `size` and `hash` are the
    /// file's) to the group being filled, which is written once it is full. The blob returned
    /// stands for the group until `finish` puts the group's place into the index: it is only
    /// for an entry of the index given to `finish`.
    pub fn add_png_member(
        &mut self,
        member: &[u8],
        size: u64,
        hash: u64,
    ) -> Result<Blob, WriteError> {
        if !self.png_group.is_empty()
            && self.png_group.len() + member.len() > crate::pngz::GROUP_BYTES
        {
            self.flush_png_group()?;
        }
        let at = self.png_group.len() as u64;
        self.png_group.extend_from_slice(member);
        Ok(Blob {
            // The group's number until `finish`.
            offset: self.png_groups.len() as u64,
            len: 0,
            hash: 0,
            coding: super::BlobCoding::PngGrouped {
                size,
                hash,
                at,
                len: member.len() as u64,
                group_len: 0,
            },
        })
    }

    fn flush_png_group(&mut self) -> Result<(), WriteError> {
        if self.png_group.is_empty() {
            return Ok(());
        }
        let coded = crate::pngz::compress_group(&self.png_group).ok_or(WriteError::PngGroup)?;
        let name = format!("av1pack-png-group-{}.xz", self.png_groups.len() + 1);
        let blob = self.add_blob(&name, &mut coded.as_slice(), coded.len() as u64)?;
        self.png_groups.push((blob, self.png_group.len() as u64));
        self.png_group = Vec::new();
        Ok(())
    }

    /// Writes the last group of recoded PNGs and puts each group's place into the entries of
    /// its members.
    fn place_png_groups(&mut self, index: &mut Index) -> Result<(), WriteError> {
        self.flush_png_group()?;
        for e in &mut index.entries {
            let EntryKind::Verbatim { blob, .. } = &mut e.kind else {
                continue;
            };
            let super::BlobCoding::PngGrouped { group_len, .. } = &mut blob.coding else {
                continue;
            };
            let (group, len) = usize::try_from(blob.offset)
                .ok()
                .and_then(|g| self.png_groups.get(g))
                .ok_or(WriteError::PngGroup)?;
            *group_len = *len;
            (blob.offset, blob.len, blob.hash) = (group.offset, group.len, group.hash);
        }
        Ok(())
    }

    /// Writes cues, tracks, the index and the attachments; fills `index.tracks` packets and
    /// extradata. Returns the finished file (flushed, not yet synced).
    pub fn finish(mut self, index: &mut Index) -> Result<File, WriteError> {
        self.place_png_groups(index)?;
        self.flush_cluster()?;
        if self.numbered == 0 {
            // No frame at all (every file kept as it is): one empty cluster, without which
            // FFmpeg's demuxer takes the file for a damaged one.
            let mut body = Vec::new();
            mkv::uint(&mut body, id::TIMESTAMP, 0);
            let mut el = Vec::new();
            mkv::master(&mut el, id::CLUSTER, &body);
            self.out.write_all(&el)?;
        }
        // Chapters and crops are found through the tiles, before empty tracks are dropped.
        let chapters = self.chapters(index);
        self.set_crops(index);
        for (t, state) in index.tracks.iter_mut().zip(self.tracks.iter_mut()) {
            t.packets = std::mem::take(&mut state.packets);
            t.extradata = state.extradata.clone();
            t.number = state.number.unwrap_or(0) as u32;
        }
        drop_empty_tracks(index);

        // Cues.
        let cues_pos = self.out.pos;
        let mut cues = Vec::new();
        for &(time, track, cluster_pos) in &self.cues {
            let mut ctp = Vec::new();
            mkv::uint(&mut ctp, id::CUE_TRACK, track);
            mkv::uint(&mut ctp, id::CUE_CLUSTER_POSITION, cluster_pos);
            let mut cp = Vec::new();
            mkv::uint(&mut cp, id::CUE_TIME, time);
            mkv::master(&mut cp, id::CUE_TRACK_POSITIONS, &ctp);
            mkv::master(&mut cues, id::CUE_POINT, &cp);
        }
        if !cues.is_empty() {
            let mut el = Vec::new();
            mkv::master(&mut el, id::CUES, &cues);
            self.out.write_all(&el)?;
        }

        let chapters_pos = self.out.pos;
        if !chapters.is_empty() {
            self.out.write_all(&chapters)?;
        }

        // Attachments: the index first, then the verbatim files, then a second copy of the
        // index; a trailer after them points at the copy.
        let attachments_pos = self.out.pos;
        let index_bytes = codec::encode_index(index)?;
        let attached = |name: &str, uid: u64| {
            let mut fields = Vec::new();
            mkv::string(&mut fields, id::FILE_NAME, name);
            mkv::string(&mut fields, id::FILE_MEDIA_TYPE, "application/octet-stream");
            mkv::uint(&mut fields, id::FILE_UID, uid);
            mkv::master(&mut fields, id::FILE_DATA, &index_bytes);
            let mut el = Vec::new();
            mkv::master(&mut el, id::ATTACHED_FILE, &fields);
            el
        };
        let index_el = attached(INDEX_ATTACHMENT_NAME, 1);
        let copy_el = attached(INDEX_COPY_ATTACHMENT_NAME, self.blob_count + 2);
        self.blobs.flush()?;
        let blob_bytes = self.blobs.pos;
        let mut blob_file = self
            .blobs
            .into_inner()
            .into_inner()
            .map_err(|e| e.into_error())?;
        let mut head = Vec::new();
        mkv::put_id(&mut head, id::ATTACHMENTS);
        mkv::put_size_fixed(
            &mut head,
            index_el.len() as u64 + blob_bytes + copy_el.len() as u64,
            PATCHED_SIZE_LEN,
        );
        self.out.write_all(&head)?;
        self.out.write_all(&index_el)?;
        let blob_area = self.out.pos;
        blob_file.seek(SeekFrom::Start(0))?;
        mkv::copy_exact(&mut blob_file, &mut self.out, blob_bytes)?;
        // The framed index is the last field of the attached file.
        let copy_offset = self.out.pos + (copy_el.len() - index_bytes.len()) as u64;
        self.out.write_all(&copy_el)?;
        let trailer = codec::Trailer {
            blob_area,
            copy_offset,
            copy_len: index_bytes.len() as u64,
        };
        self.out.write_all(&trailer.encode())?;
        let end = self.out.pos;

        let mut file = self
            .out
            .into_inner()
            .into_inner()
            .map_err(|e| e.into_error())?;

        // Tracks, into the space reserved for them.
        let mut entries = Vec::new();
        let mut numbered: Vec<(u64, &TrackState)> = self
            .tracks
            .iter()
            .filter_map(|t| Some((t.number?, t)))
            .collect();
        numbered.sort_by_key(|(n, _)| *n);
        for (n, t) in numbered {
            let mut video = Vec::new();
            mkv::uint(&mut video, id::PIXEL_WIDTH, u64::from(t.spec.width));
            mkv::uint(&mut video, id::PIXEL_HEIGHT, u64::from(t.spec.height));
            if let Some((right, bottom)) = t.crop {
                mkv::uint(&mut video, id::PIXEL_CROP_BOTTOM, u64::from(bottom));
                mkv::uint(&mut video, id::PIXEL_CROP_RIGHT, u64::from(right));
            }
            let mut te = Vec::new();
            mkv::uint(&mut te, id::TRACK_NUMBER, n);
            mkv::uint(&mut te, id::TRACK_UID, n);
            mkv::uint(&mut te, id::TRACK_TYPE, 1);
            mkv::uint(&mut te, id::FLAG_LACING, 0);
            mkv::uint(&mut te, id::FLAG_DEFAULT, u64::from(n == 1));
            mkv::uint(&mut te, id::DEFAULT_DURATION, self.frame_ms * 1_000_000);
            mkv::string(&mut te, id::LANGUAGE, "und");
            mkv::string(&mut te, id::CODEC_ID, &t.spec.codec_id);
            if !t.extradata.is_empty() {
                mkv::master(&mut te, id::CODEC_PRIVATE, &t.extradata);
            }
            mkv::master(&mut te, id::VIDEO, &video);
            mkv::master(&mut entries, id::TRACK_ENTRY, &te);
        }
        let mut tracks_el = Vec::new();
        mkv::master(&mut tracks_el, id::TRACKS, &entries);
        let reserve = TRACK_RESERVE * self.tracks.len().max(1) + 16;
        if tracks_el.len() + 2 > reserve {
            return Err(WriteError::ExtradataTooLarge {
                track: 0,
                len: tracks_el.len(),
            });
        }
        let pad = reserve - tracks_el.len();
        mkv::void(&mut tracks_el, pad);
        write_at(&mut file, self.tracks_pos, &tracks_el)?;

        // SeekHead.
        let mut seeks = Vec::new();
        let rel = |p: u64| p - self.segment_body_start;
        let mut targets = vec![
            (id::INFO, rel(self.info_pos)),
            (id::TRACKS, rel(self.tracks_pos)),
            (id::ATTACHMENTS, rel(attachments_pos)),
        ];
        if !self.cues.is_empty() {
            targets.push((id::CUES, rel(cues_pos)));
        }
        if !chapters.is_empty() {
            targets.push((id::CHAPTERS, rel(chapters_pos)));
        }
        for (target, pos) in targets {
            let mut seek = Vec::new();
            let mut idb = Vec::new();
            mkv::put_id(&mut idb, target);
            mkv::master(&mut seek, id::SEEK_ID, &idb);
            mkv::uint(&mut seek, id::SEEK_POSITION, pos);
            mkv::master(&mut seeks, id::SEEK, &seek);
        }
        let mut seek_head = Vec::new();
        mkv::master(&mut seek_head, id::SEEK_HEAD, &seeks);
        let pad = SEEK_HEAD_RESERVE - seek_head.len();
        mkv::void(&mut seek_head, pad);
        write_at(&mut file, self.segment_body_start, &seek_head)?;

        // Duration: the frames actually written (planned images kept as files take no time);
        // Matroska wants it above zero, so an archive without frames says one slide.
        let duration = (self.next_slot.max(1) * self.frame_ms) as f64;
        write_at(&mut file, self.duration_pos, &duration.to_be_bytes())?;

        // Segment size.
        let mut size = Vec::new();
        mkv::put_size_fixed(&mut size, end - self.segment_body_start, PATCHED_SIZE_LEN);
        write_at(
            &mut file,
            self.segment_body_start - PATCHED_SIZE_LEN as u64,
            &size,
        )?;
        file.flush()?;
        Ok(file)
    }
}

impl ArchiveWriter {
    /// Start time of frame `frame` of track `track` on the file's timeline, in milliseconds.
    fn frame_time_ms(&self, track: u32, frame: u64) -> Option<u64> {
        let first = self.tracks.get(track as usize)?.first_slot?;
        Some((first + frame) * self.frame_ms)
    }

    /// The Chapters element: one chapter per coded image, titled with its path, in timeline
    /// order (empty when no image was coded). `index.entries` still use the planned track
    /// numbering here.
    fn chapters(&self, index: &Index) -> Vec<u8> {
        let mut spans: Vec<(u64, u64, String)> = Vec::new();
        for e in &index.entries {
            let super::EntryKind::Image(img) = &e.kind else {
                continue;
            };
            let times: Vec<u64> = img
                .tiles
                .iter()
                .filter_map(|t| self.frame_time_ms(t.track, t.frame))
                .collect();
            let (Some(&start), Some(&last)) = (times.iter().min(), times.iter().max()) else {
                continue;
            };
            spans.push((start, last + self.frame_ms, e.path_lossy()));
        }
        if spans.is_empty() {
            return Vec::new();
        }
        spans.sort_by_key(|s| s.0);
        let mut edition = Vec::new();
        mkv::uint(&mut edition, id::EDITION_UID, 1);
        for (n, (start, end, title)) in spans.into_iter().enumerate() {
            let mut display = Vec::new();
            mkv::string(&mut display, id::CHAP_STRING, &title);
            mkv::string(&mut display, id::CHAP_LANGUAGE, "und");
            let mut atom = Vec::new();
            mkv::uint(&mut atom, id::CHAPTER_UID, n as u64 + 1);
            mkv::uint(&mut atom, id::CHAPTER_TIME_START, start * 1_000_000);
            mkv::uint(&mut atom, id::CHAPTER_TIME_END, end * 1_000_000);
            mkv::master(&mut atom, id::CHAPTER_DISPLAY, &display);
            mkv::master(&mut edition, id::CHAPTER_ATOM, &atom);
        }
        let mut entry = Vec::new();
        mkv::master(&mut entry, id::EDITION_ENTRY, &edition);
        let mut el = Vec::new();
        mkv::master(&mut el, id::CHAPTERS, &entry);
        el
    }

    /// Sets each track's crop when all its images share one stored size smaller than the
    /// canvas (the padding is then hidden by players that honour PixelCrop).
    fn set_crops(&mut self, index: &Index) {
        let mut sizes: Vec<Option<Option<(u32, u32)>>> = vec![None; self.tracks.len()];
        for e in &index.entries {
            let super::EntryKind::Image(img) = &e.kind else {
                continue;
            };
            for t in &img.tiles {
                let stored = if t.rotated {
                    (t.height, t.width)
                } else {
                    (t.width, t.height)
                };
                if let Some(slot) = sizes.get_mut(t.track as usize) {
                    *slot = match *slot {
                        None => Some(Some(stored)),
                        Some(Some(s)) if s == stored => Some(Some(s)),
                        _ => Some(None),
                    };
                }
            }
        }
        for (state, size) in self.tracks.iter_mut().zip(sizes) {
            state.crop = match size {
                Some(Some((w, h))) if w <= state.spec.width && h <= state.spec.height => {
                    Some((state.spec.width - w, state.spec.height - h)).filter(|&c| c != (0, 0))
                }
                _ => None,
            };
        }
    }
}

/// Offset of the Duration element's float inside the Info body written by `create`.
fn duration_offset_in_info() -> usize {
    let mut v = Vec::new();
    mkv::uint(&mut v, id::TIMESTAMP_SCALE, 1_000_000);
    let mut d = Vec::new();
    mkv::float(&mut d, id::DURATION, 0.0);
    v.len() + d.len() - 8
}

/// Removes tracks that received no frame (all their images were kept as files) and renumbers
/// the tiles that point at the others.
fn drop_empty_tracks(index: &mut Index) {
    let mut new_pos = Vec::with_capacity(index.tracks.len());
    let mut kept = 0u32;
    for t in &index.tracks {
        new_pos.push(kept);
        if !t.packets.is_empty() {
            kept += 1;
        }
    }
    index.tracks.retain(|t| !t.packets.is_empty());
    for e in &mut index.entries {
        if let super::EntryKind::Image(img) = &mut e.kind {
            for tile in img.tiles.iter_mut().chain(img.alpha.iter_mut()) {
                if let Some(&p) = new_pos.get(tile.track as usize) {
                    tile.track = p;
                }
            }
        }
    }
}

fn write_at(file: &mut File, pos: u64, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, pos)
}

struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    hasher: xxhash_rust::xxh3::Xxh3,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{reader::Archive, BlobCoding, Entry, Settings, Timestamp};
    use xxhash_rust::xxh3::xxh3_64;

    /// Recoded PNGs go into groups of up to `GROUP_BYTES`; each member's entry gets its
    /// group's place, and every file comes back bit for bit beside an ordinary stored file.
    #[test]
    fn recoded_pngs_are_grouped_and_placed_in_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mkv");
        let out = File::create(&path).unwrap();
        let mut w =
            ArchiveWriter::create(out, tempfile::tempfile().unwrap(), Vec::new(), 25, "t").unwrap();
        // About 6.7 MiB of pixels each: two fill a group, the third starts the next one.
        let files: Vec<Vec<u8>> = (0..3)
            .map(|k| crate::pngz::tests::zlib_png(1500, 1560, 100 + 300 * k, 40 * k as u8))
            .collect();
        let mut entries = Vec::new();
        for (k, f) in files.iter().enumerate() {
            let coded = crate::pngz::measure(f).unwrap();
            let member = crate::pngz::checked_member(&coded, f).unwrap();
            assert!(member.len() > crate::pngz::GROUP_BYTES / 3);
            assert!(member.len() < crate::pngz::GROUP_BYTES / 2);
            let blob = w
                .add_png_member(&member, f.len() as u64, xxh3_64(f))
                .unwrap();
            entries.push((format!("page{k}.png"), blob));
            if k == 0 {
                let blob = w.add_blob("notes.txt", &mut &b"notes"[..], 5).unwrap();
                entries.push(("notes.txt".into(), blob));
            }
        }
        let mut index = Index {
            tool_version: "0".into(),
            renderer: "r".into(),
            settings: Settings {
                codec: "libx264".into(),
                preset: "medium".into(),
                crf: None,
                qp: None,
                gop: 8,
                frame_rate: 25,
                pix_fmt: "yuvj444p".into(),
            },
            tracks: Vec::new(),
            entries: entries
                .iter()
                .map(|(name, blob)| Entry {
                    path: name.clone().into_bytes(),
                    mtime: Timestamp::default(),
                    mode: 0o644,
                    kind: EntryKind::Verbatim {
                        blob: *blob,
                        reason: "kept".into(),
                    },
                })
                .collect(),
            links: Vec::new(),
        };
        w.finish(&mut index).unwrap();
        let a = Archive::open(&path).unwrap();
        let blobs: Vec<Blob> = a
            .index
            .entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::Verbatim { blob, .. } => *blob,
                other => panic!("{other:?}"),
            })
            .collect();
        // page0, notes, page1, page2: pages 0 and 1 share a group, page 2 has its own.
        assert_eq!(blobs[0].offset, blobs[2].offset);
        assert_ne!(blobs[0].offset, blobs[3].offset);
        assert!(blobs[1].is_stored());
        let mut group_lens = Vec::new();
        for (b, at_start) in [(blobs[0], true), (blobs[2], false), (blobs[3], true)] {
            let BlobCoding::PngGrouped { at, group_len, .. } = b.coding else {
                panic!("{:?}", b.coding)
            };
            assert_eq!(at == 0, at_start);
            group_lens.push(group_len);
        }
        assert!(group_lens[0] as usize <= crate::pngz::GROUP_BYTES);
        assert_eq!(group_lens[0], group_lens[1]);
        let pages = [&files[0], &files[1], &files[2]];
        for (b, f) in [blobs[0], blobs[2], blobs[3]].iter().zip(pages) {
            assert_eq!(a.read_file(b).unwrap(), *f);
            assert!(b.len * 4 < f.len() as u64);
        }
        assert_eq!(a.read_file(&blobs[1]).unwrap(), b"notes");
    }
}
