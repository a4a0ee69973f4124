//! Opening an archive held in memory and reading everything in it: the Matroska head, the
//! SeekHead, both index copies and the trailer, every packet, every stored file, and the
//! decoder on every track. Checksums inside the index are recomputed for the first index
//! found, so mutations of the index payload reach the structural checks and the readers.
#![no_main]

use av1pack::archive::codec::{HEADER_LEN, MAGIC};
use av1pack::archive::{Archive, EntryKind};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

fn fix_index_checksum(bytes: &mut [u8]) {
    let Some(at) = bytes.windows(8).position(|w| w == MAGIC) else {
        return;
    };
    let Some(head) = bytes.get(at..at + HEADER_LEN) else {
        return;
    };
    let mut l = [0u8; 8];
    l.copy_from_slice(&head[12..20]);
    let len = u64::from_le_bytes(l) as usize;
    let start = at + HEADER_LEN;
    let Some(payload) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
        return;
    };
    let sum = xxh3_64(payload).to_le_bytes();
    bytes[at + 20..at + 28].copy_from_slice(&sum);
}

fuzz_target!(|data: &[u8]| {
    av1pack::media::init(false);
    // The first byte chooses: the archive (the rest) as is, or with its first index's
    // checksum made right.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        fix_index_checksum(&mut bytes);
    }
    let Ok(archive) = Archive::from_bytes(Path::new("fuzz.mkv"), bytes) else {
        return;
    };
    for track in &archive.index.tracks {
        for p in &track.packets {
            let _ = archive.read_packet(p);
        }
    }
    for e in &archive.index.entries {
        if let EntryKind::Verbatim { blob, .. } = &e.kind {
            let _ = archive.verify_blob(blob);
            let _ = archive.read_blob(blob, blob.len / 2, 4096);
        }
    }
    for t in 0..archive.index.tracks.len().min(4) {
        let _ = av1pack::frames::decode_track(&archive, t, 1, |_| Ok(()));
    }
});
