//! The index format: golden bytes, round trip, and refusal of damaged or hostile input.

use av1pack::archive::codec::{self, IndexError, MAX_INDEX_BYTES};
use av1pack::archive::*;

/// The sample of a version 4 index: the version 5 sample without its zstd blob and copies.
fn sample_index_v4() -> Index {
    sample_index_without_copies()
}

/// The sample of a version 3 index: the same as a version 4 one holding no `Rgb420`.
fn sample_index_v3() -> Index {
    let mut idx = sample_index_v4();
    for e in &mut idx.entries {
        if let EntryKind::Image(img) = &mut e.kind {
            img.color = ColorModel::Rgb;
        }
    }
    idx
}

/// The sample as decoding gives it: every copy holds its original's kind.
/// The index of an older version's golden file, which must say that version.
fn decode_golden(path: &str, version: u32) -> Index {
    let golden = std::fs::read(path).unwrap();
    assert_eq!(&golden[8..12], &version.to_le_bytes(), "{path}");
    codec::decode_index(&golden).unwrap()
}

fn resolved(mut idx: Index) -> Index {
    for i in 0..idx.entries.len() {
        if let EntryKind::Copy { of } | EntryKind::Link { of } = idx.entries[i].kind {
            if matches!(idx.entries[i].kind, EntryKind::Link { .. }) {
                idx.links.push((i, of as usize));
            }
            idx.entries[i].kind = idx.entries[of as usize].kind.clone();
        }
    }
    idx
}

/// Copies of the sample's image (entry 1) and of its kept JPEG (entry 3).
fn sample_copies() -> Vec<Entry> {
    vec![
        Entry {
            path: b"copy of caf\xe9.jpg".to_vec(),
            mtime: Timestamp {
                secs: 1_700_000_000,
                nanos: 0,
            },
            mode: 0o600,
            kind: EntryKind::Copy { of: 1 },
        },
        Entry {
            path: b"kept (1).jpg".to_vec(),
            mtime: Timestamp::default(),
            mode: 0o644,
            kind: EntryKind::Copy { of: 3 },
        },
    ]
}

/// What version 14 added: PNGs of 16 bits a sample, coded (colour and grey), before the last
/// entry.
fn sample_index() -> Index {
    let mut idx = sample_index_v13();
    let scan = idx
        .entries
        .iter()
        .find(|e| e.path == b"scan.tif")
        .cloned()
        .expect("the sample has a scan");
    for (name, color) in [
        ("export 16.png", ColorModel::Rgb16),
        ("grey 16.png", ColorModel::Grey16),
    ] {
        let mut e = scan.clone();
        e.path = name.as_bytes().to_vec();
        if let EntryKind::Image(img) = &mut e.kind {
            img.format = ImageFormat::Png;
            img.color = color;
            img.metadata = vec![MetaBlock::PngChunk {
                kind: *b"sBIT",
                data: vec![16, 16, 16],
            }];
        }
        // Before the last entry, the recoded JPEG that tests of blob codings change.
        let at = idx.entries.len() - 1;
        idx.entries.insert(at, e);
    }
    idx
}

/// What version 13 added: a recoded JPEG stored as its difference from the one before (the
/// last entry, "burst/frame 2.jpg", at offset 3000).
fn sample_index_v13() -> Index {
    let mut idx = sample_index_v12();
    idx.entries
        .push(delta_entry("burst/frame 3.jpg", 43_000, 3000));
    idx
}

/// A recoded JPEG at `offset` stored against the blob at `reference`.
fn delta_entry(path: &str, offset: u64, reference: u64) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        mtime: Timestamp::default(),
        mode: 0o644,
        kind: EntryKind::Verbatim {
            blob: Blob {
                offset,
                len: 9_000,
                hash: 20,
                coding: BlobCoding::JpegThinnedDelta {
                    size: 61_000,
                    hash: 21,
                    score_centi: 9_104,
                    original_size: 79_000,
                    reference,
                    residual_size: 30_000,
                },
            },
            reason: String::new(),
        },
    }
}

/// What version 10 added: a JPEG recoded in its own DCT, given back as that file.
/// What version 12 added: a hard link (another name of the kept JPEG, entry 3), before the
/// last entry.
fn sample_index_v12() -> Index {
    let mut idx = sample_index_v11();
    let at = idx.entries.len() - 1;
    idx.entries.insert(
        at,
        Entry {
            path: b"kept (another name).jpg".to_vec(),
            mtime: Timestamp::default(),
            mode: 0o644,
            kind: EntryKind::Link { of: 3 },
        },
    );
    idx
}

/// The sample of a version 11 index (and 10, whose bincode is the same).
fn sample_index_v11() -> Index {
    let mut idx = sample_index_v9();
    idx.entries.push(Entry {
        path: b"burst/frame 2.jpg".to_vec(),
        mtime: Timestamp::default(),
        mode: 0o644,
        kind: EntryKind::Verbatim {
            blob: Blob {
                offset: 3000,
                len: 40_000,
                hash: 18,
                coding: BlobCoding::JpegThinned {
                    size: 60_000,
                    hash: 19,
                    score_centi: 9_017,
                    original_size: 80_000,
                },
            },
            reason: String::new(),
        },
    });
    idx
}

/// What version 9 added: an image whose TIFF tags (a resolution, an Artist, EXIF and GPS
/// fields) and WebP chunks travel with it.
fn sample_index_v9() -> Index {
    let mut idx = sample_index_v7();
    let tag = |dir: TiffDir, tag: u16, kind: u16, data: &[u8]| MetaBlock::TiffTag {
        dir,
        tag,
        kind,
        data: data.to_vec(),
    };
    idx.entries.push(Entry {
        path: b"scan.tif".to_vec(),
        mtime: Timestamp::default(),
        mode: 0o644,
        kind: EntryKind::Image(Box::new(ImageEntry {
            format: ImageFormat::Tiff,
            color: ColorModel::Rgb,
            width: 640,
            height: 480,
            original_size: 900_000,
            original_hash: 16,
            tiles: vec![Tile {
                track: 0,
                frame: 2,
                x: 0,
                y: 0,
                width: 640,
                height: 480,
                rotated: false,
            }],
            alpha: vec![],
            metadata: vec![
                tag(TiffDir::Image, 282, 5, &[44, 1, 0, 0, 1, 0, 0, 0]),
                tag(TiffDir::Image, 296, 3, &[2, 0]),
                tag(TiffDir::Image, 315, 2, b"A. Photographer\0"),
                tag(TiffDir::Exif, 36867, 2, b"2020:01:01 10:00:00\0"),
                tag(TiffDir::Gps, 1, 2, b"N\0"),
                tag(TiffDir::Interop, 1, 2, b"R98\0"),
                MetaBlock::WebpChunk {
                    kind: *b"XMP ",
                    data: b"<x/>".to_vec(),
                },
            ],
            rendered: Rendered {
                size: 600_000,
                hash: 17,
            },
            score: Some(90.5),
        })),
    });
    idx
}

/// What version 7 added: two kept PNG files recoded as members of one group.
fn sample_index_v7() -> Index {
    let mut idx = sample_index_v6();
    for (k, (at, len)) in [(0u64, 700u64), (700, 900)].into_iter().enumerate() {
        idx.entries.push(Entry {
            path: format!("screen {k}.png").into_bytes(),
            mtime: Timestamp::default(),
            mode: 0o644,
            kind: EntryKind::Verbatim {
                blob: Blob {
                    offset: 1700,
                    len: 400,
                    hash: 14,
                    coding: BlobCoding::PngGrouped {
                        size: 3000 + k as u64,
                        hash: 15 + k as u64,
                        at,
                        len,
                        group_len: 1600,
                    },
                },
                reason: "smaller as it is".into(),
            },
        });
    }
    idx
}

/// What version 6 added: a kept PNG file with its image data recoded.
fn sample_index_v6() -> Index {
    let mut idx = sample_index_v5();
    idx.entries.push(Entry {
        path: b"screenshot.png".to_vec(),
        mtime: Timestamp::default(),
        mode: 0o644,
        kind: EntryKind::Verbatim {
            blob: Blob {
                offset: 1200,
                len: 500,
                hash: 12,
                coding: BlobCoding::Png {
                    size: 2000,
                    hash: 13,
                },
            },
            reason: "smaller as it is".into(),
        },
    });
    idx
}

/// What version 5 added: a zstd-compressed kept file, and copies.
fn sample_index_v5() -> Index {
    let mut idx = sample_index_without_copies();
    idx.entries.push(Entry {
        path: b"sidecar.xmp".to_vec(),
        mtime: Timestamp::default(),
        mode: 0o644,
        kind: EntryKind::Verbatim {
            blob: Blob {
                offset: 900,
                len: 300,
                hash: 10,
                coding: BlobCoding::Zstd {
                    size: 4000,
                    hash: 11,
                },
            },
            reason: "not an image".into(),
        },
    });
    idx.entries.extend(sample_copies());
    idx
}

fn sample_index_without_copies() -> Index {
    Index {
        tool_version: "0.1.0".into(),
        renderer: "renderer-x".into(),
        settings: Settings {
            codec: "libx264".into(),
            preset: "medium".into(),
            crf: Some(8.0),
            qp: None,
            gop: 8,
            frame_rate: 25,
            pix_fmt: "yuvj444p".into(),
        },
        tracks: vec![Track {
            number: 1,
            codec: "V_MPEG4/ISO/AVC".into(),
            width: 1920,
            height: 1088,
            extradata: vec![1, 100, 0, 31],
            packets: vec![
                Packet {
                    offset: 4096,
                    size: 1000,
                    pts: 0,
                    dts: -2,
                    keyframe: true,
                    hash: 0x0123_4567_89ab_cdef,
                },
                Packet {
                    offset: 5100,
                    size: 200,
                    pts: 2,
                    dts: -1,
                    keyframe: false,
                    hash: 7,
                },
                Packet {
                    offset: 5310,
                    size: 150,
                    pts: 1,
                    dts: 0,
                    keyframe: false,
                    hash: u64::MAX,
                },
            ],
        }],
        entries: vec![
            Entry {
                path: b"2019".to_vec(),
                mtime: Timestamp {
                    secs: 1_560_000_000,
                    nanos: 5,
                },
                mode: 0o755,
                kind: EntryKind::Dir,
            },
            Entry {
                path: b"2019/caf\xe9.jpg".to_vec(),
                mtime: Timestamp {
                    secs: -5,
                    nanos: 999_999_999,
                },
                mode: 0o644,
                kind: EntryKind::Image(Box::new(ImageEntry {
                    format: ImageFormat::Jpeg,
                    color: ColorModel::Rgb420,
                    width: 1080,
                    height: 1920,
                    original_size: 123_456,
                    original_hash: 0xDEAD_BEEF_0123_4567,
                    tiles: vec![Tile {
                        track: 0,
                        frame: 1,
                        x: 0,
                        y: 0,
                        width: 1080,
                        height: 1920,
                        rotated: true,
                    }],
                    alpha: vec![],
                    metadata: vec![
                        MetaBlock::JpegSegment {
                            marker: 0xE1,
                            data: b"Exif\0\0".to_vec(),
                        },
                        MetaBlock::PngChunk {
                            kind: *b"iCCP",
                            data: vec![9, 8, 7],
                        },
                    ],
                    rendered: Rendered {
                        size: 200_000,
                        hash: 42,
                    },
                    score: Some(91.5),
                })),
            },
            Entry {
                path: b"notes.txt".to_vec(),
                mtime: Timestamp::default(),
                mode: 0o600,
                kind: EntryKind::Verbatim {
                    blob: Blob {
                        offset: 77,
                        len: 12,
                        hash: 7,
                        coding: BlobCoding::Stored,
                    },
                    reason: "not an image".into(),
                },
            },
            Entry {
                path: b"kept.jpg".to_vec(),
                mtime: Timestamp::default(),
                mode: 0o644,
                kind: EntryKind::Verbatim {
                    blob: Blob {
                        offset: 89,
                        len: 800,
                        hash: 8,
                        coding: BlobCoding::Lepton {
                            size: 1000,
                            hash: 9,
                        },
                    },
                    reason: "smaller as it is".into(),
                },
            },
            Entry {
                path: b"link".to_vec(),
                mtime: Timestamp::default(),
                mode: 0o777,
                kind: EntryKind::Symlink {
                    target: b"notes.txt".to_vec(),
                },
            },
        ],
        links: Vec::new(),
    }
}

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v14.bin");
/// Written by the av1pack of format version 13 (kept, not regenerated).
const GOLDEN_V13: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v13.bin");
/// Written by the av1pack of format version 12 (kept, not regenerated).
const GOLDEN_V12: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v12.bin");
/// Written by the av1pack of format version 11 (kept, not regenerated).
const GOLDEN_V11: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v11.bin");
/// Written by the av1pack of format version 10 (kept, not regenerated).
const GOLDEN_V10: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v10.bin");
/// Written by the av1pack of format version 9 (kept, not regenerated).
const GOLDEN_V9: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v9.bin");
/// Written by the av1pack of format version 8 (kept, not regenerated).
const GOLDEN_V8: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v8.bin");
/// Written by the av1pack of format version 7 (kept, not regenerated).
const GOLDEN_V7: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v7.bin");
/// Written by the av1pack of format version 6 (kept, not regenerated).
const GOLDEN_V6: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v6.bin");
/// Written by the av1pack of format version 5 (kept, not regenerated).
const GOLDEN_V5: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v5.bin");
/// Written by the av1pack of format version 4 (kept, not regenerated).
const GOLDEN_V4: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v4.bin");
/// Written by the av1pack of format version 3 (kept, not regenerated).
const GOLDEN_V3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/index-v3.bin");

#[test]
fn index_bytes_match_the_golden_file() {
    let bytes = codec::encode_index(&sample_index()).unwrap();
    if std::env::var_os("AV1PACK_BLESS").is_some() {
        std::fs::write(GOLDEN, &bytes).unwrap();
    }
    let golden = std::fs::read(GOLDEN)
        .expect("golden file (regenerate with AV1PACK_BLESS=1 only for a new format version)");
    assert_eq!(&bytes[..8], b"AV1PKIDX");
    assert_eq!(&bytes[8..12], &codec::FORMAT_VERSION.to_le_bytes());
    assert_eq!(codec::FORMAT_VERSION, 14);
    // The bincode inside is pinned byte for byte; the zstd frame around it only as far as it
    // inflates to those bytes (another zstd build may compress them differently).
    assert!(
        codec::raw_payload(&bytes).unwrap() == codec::raw_payload(&golden).unwrap(),
        "index encoding changed: bump codec::FORMAT_VERSION and document it in docs/FORMAT.md"
    );
    let decoded = codec::decode_index(&golden).unwrap();
    assert_eq!(decoded, resolved(sample_index()));
}

/// Version 11 compresses the payload; the bincode inside is version 10's, which is stored
/// uncompressed: the payload is smaller and decodes to the same index.
#[test]
fn version_10_indexes_still_decode_and_11_is_smaller() {
    let v10 = std::fs::read(GOLDEN_V10).unwrap();
    assert_eq!(decode_golden(GOLDEN_V10, 10), resolved(sample_index_v11()));
    assert_eq!(
        codec::raw_payload(&v10).unwrap(),
        codec::raw_payload(&codec::encode_index(&sample_index_v11()).unwrap()).unwrap()
    );
    // A larger album's index: many entries that share folders and most fields.
    let mut idx = sample_index_v11();
    let image = idx.entries[1].clone();
    idx.entries = (0..500)
        .map(|i| {
            let mut e = image.clone();
            e.path = format!("2024/summer/IMG_{:04}.JPG", 1000 + i * 7).into_bytes();
            e.mtime.secs += i64::from(i) * 13;
            e
        })
        .collect();
    let squeezed = codec::encode_index(&idx).unwrap();
    let raw = codec::raw_payload(&squeezed).unwrap().len();
    assert!(
        squeezed.len() * 2 < raw,
        "{} bytes stored for {raw} of bincode",
        squeezed.len()
    );
    assert_eq!(codec::decode_index(&squeezed).unwrap(), idx);
}

/// Version 12 added hard links at the end of the entry kinds: a version 11 index decodes as it
/// did, with no links; a link decodes to its file's kind and is listed in `links`.
#[test]
fn version_11_indexes_still_decode_and_links_resolve() {
    let v11 = decode_golden(GOLDEN_V11, 11);
    assert_eq!(v11, resolved(sample_index_v11()));
    assert!(v11.links.is_empty());
    let idx = codec::decode_index(&codec::encode_index(&sample_index()).unwrap()).unwrap();
    let link = idx
        .entries
        .iter()
        .position(|e| e.path == b"kept (another name).jpg")
        .unwrap();
    assert_eq!(idx.links, vec![(link, 3)]);
    assert_eq!(idx.entries[link].kind, idx.entries[3].kind);
    // A link to a later entry, to itself or to a folder is refused.
    for of in [link as u64, link as u64 + 1, 0] {
        let mut bad = sample_index();
        bad.entries[link].kind = EntryKind::Link { of };
        assert!(
            matches!(
                codec::decode_index(&codec::encode_index(&bad).unwrap()),
                Err(IndexError::Malformed(_))
            ),
            "link to {of}"
        );
    }
}

/// Version 13 added recoded JPEGs stored against another at the end of the blob codings: a
/// version 12 index decodes as it did.
#[test]
fn version_12_indexes_still_decode() {
    assert_eq!(decode_golden(GOLDEN_V12, 12), resolved(sample_index_v12()));
}

/// Version 14 added 16-bit colour models at the end of `ColorModel`: a version 13 index
/// decodes as it did.
#[test]
fn version_13_indexes_still_decode() {
    assert_eq!(decode_golden(GOLDEN_V13, 13), resolved(sample_index_v13()));
}

/// A recoded JPEG may only be stored against an earlier recoded JPEG, in chains no longer than
/// a reader follows.
#[test]
fn delta_references_must_be_earlier_recoded_jpegs_in_short_chains() {
    let decode = |idx: &Index| codec::decode_index(&codec::encode_index(idx).unwrap());
    assert!(decode(&sample_index()).is_ok());
    // A later blob, itself, a kept file that is not a recoded JPEG (1700: a PNG group), nothing.
    for reference in [50_000, 43_000, 1700, 7] {
        let mut bad = sample_index_v12();
        bad.entries
            .push(delta_entry("burst/frame 3.jpg", 43_000, reference));
        assert!(
            matches!(decode(&bad), Err(IndexError::Malformed(m)) if m.contains("not an earlier recoded JPEG")),
            "reference {reference}"
        );
    }
    // The longest chain a reader follows, and one more.
    let chain = |n: u64| {
        let mut idx = sample_index_v12();
        let mut reference = 3000;
        for k in 0..n {
            let offset = 100_000 + k * 10_000;
            idx.entries
                .push(delta_entry(&format!("burst/{k}.jpg"), offset, reference));
            reference = offset;
        }
        idx
    };
    let longest = u64::from(MAX_DELTA_CHAIN);
    assert!(decode(&chain(longest)).is_ok());
    assert!(matches!(
        decode(&chain(longest + 1)),
        Err(IndexError::Malformed(m)) if m.contains("too long a chain")
    ));
}

/// A payload whose checksum holds but that is not a zstd frame is malformed, not a panic.
#[test]
fn payloads_that_do_not_inflate_are_refused() {
    let junk = b"this is not zstd data at all....";
    let mut b = Vec::new();
    b.extend_from_slice(b"AV1PKIDX");
    b.extend_from_slice(&codec::FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(junk.len() as u64).to_le_bytes());
    b.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(junk).to_le_bytes());
    b.extend_from_slice(junk);
    assert!(matches!(
        codec::decode_index(&b),
        Err(IndexError::Malformed(m)) if m.contains("inflate")
    ));
}

/// Version 10 added a way of storing kept files at the end of its enum.
#[test]
fn version_9_indexes_still_decode() {
    assert_eq!(decode_golden(GOLDEN_V9, 9), resolved(sample_index_v9()));
}

/// A recoded JPEG's score is at most 100.
#[test]
fn thinned_jpeg_scores_over_100_are_refused() {
    let mut idx = sample_index();
    let Some(EntryKind::Verbatim { blob, .. }) = idx.entries.last_mut().map(|e| &mut e.kind) else {
        panic!("the sample ends with a thinned JPEG");
    };
    blob.coding = BlobCoding::JpegThinned {
        size: 60_000,
        hash: 19,
        score_centi: 10_001,
        original_size: 80_000,
    };
    let b = codec::encode_index(&idx).unwrap();
    assert!(matches!(
        codec::decode_index(&b),
        Err(IndexError::Malformed(m)) if m.contains("score over 100")
    ));
}

/// Version 9 added a kind of metadata block at the end of its enum.
#[test]
fn version_8_indexes_still_decode() {
    assert_eq!(decode_golden(GOLDEN_V8, 8), resolved(sample_index_v7()));
}

/// Version 8 changed what tracks may hold, not the index: version 7's bytes differ only in
/// the version number.
#[test]
fn version_7_indexes_still_decode() {
    assert_eq!(decode_golden(GOLDEN_V7, 7), resolved(sample_index_v7()));
}

#[test]
fn version_6_indexes_still_decode() {
    assert_eq!(decode_golden(GOLDEN_V6, 6), resolved(sample_index_v6()));
}

#[test]
fn version_5_indexes_still_decode() {
    let decoded = decode_golden(GOLDEN_V5, 5);
    assert_eq!(decoded, resolved(sample_index_v5()));
    // The copies keep their own names, times and modes, and take their originals' kinds.
    let n = decoded.entries.len();
    assert_eq!(decoded.entries[n - 2].path, b"copy of caf\xe9.jpg");
    assert_eq!(decoded.entries[n - 2].mode, 0o600);
    assert_eq!(decoded.entries[n - 2].kind, decoded.entries[1].kind);
    assert_eq!(decoded.entries[n - 1].kind, decoded.entries[3].kind);
}

#[test]
fn version_4_indexes_still_decode() {
    assert_eq!(decode_golden(GOLDEN_V4, 4), sample_index_v4());
}

/// A copy must point at an earlier file, and copies may not repeat more metadata than an
/// index may hold.
#[test]
fn copies_of_what_is_not_an_earlier_file_are_refused() {
    let refused = |idx: &Index| {
        let b = codec::encode_index(idx).unwrap();
        matches!(codec::decode_index(&b), Err(IndexError::Malformed(_)))
    };
    let n = sample_index().entries.len() as u64;
    // Entry 0 is a folder, entry 4 a symlink, the last entry comes after, and beyond the end.
    for of in [0, 4, n - 1, n, u64::MAX] {
        let mut idx = sample_index();
        idx.entries.last_mut().unwrap().kind = EntryKind::Copy { of };
        assert!(refused(&idx), "copy of entry {of}");
    }
    // 300 copies of an image with 1 MiB of metadata would make 300 MiB in memory.
    let mut idx = sample_index_without_copies();
    if let EntryKind::Image(img) = &mut idx.entries[1].kind {
        img.metadata = vec![MetaBlock::Trailer(vec![0; 1 << 20])];
    }
    for k in 0..300 {
        idx.entries.push(Entry {
            path: format!("copy {k}").into_bytes(),
            mtime: Timestamp::default(),
            mode: 0o644,
            kind: EntryKind::Copy { of: 1 },
        });
    }
    assert!(refused(&idx), "300 MiB of repeated metadata");
    // Three are fine.
    idx.entries.truncate(idx.entries.len() - 297);
    let b = codec::encode_index(&idx).unwrap();
    assert_eq!(
        codec::decode_index(&b).unwrap().entries.len(),
        idx.entries.len()
    );
}

#[test]
fn version_3_indexes_still_decode() {
    assert_eq!(decode_golden(GOLDEN_V3, 3), sample_index_v3());
}

#[test]
fn every_truncation_is_refused() {
    let bytes = codec::encode_index(&sample_index()).unwrap();
    for cut in 0..bytes.len() {
        let r = codec::decode_index(&bytes[..cut]);
        assert!(r.is_err(), "truncated at {cut} accepted");
    }
}

#[test]
fn every_flipped_byte_is_refused() {
    let bytes = codec::encode_index(&sample_index()).unwrap();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x5A;
        assert!(codec::decode_index(&b).is_err(), "flip at {i} accepted");
    }
}

#[test]
fn hostile_headers_are_refused_before_allocating() {
    let mut b = codec::encode_index(&sample_index()).unwrap();
    b[12..20].copy_from_slice(&(MAX_INDEX_BYTES + 1).to_le_bytes());
    assert!(matches!(
        codec::decode_index(&b),
        Err(IndexError::TooLarge(_))
    ));
    let mut b = codec::encode_index(&sample_index()).unwrap();
    for v in [1u32, 2, codec::FORMAT_VERSION + 1] {
        b[8..12].copy_from_slice(&v.to_le_bytes());
        assert!(matches!(
            codec::decode_index(&b),
            Err(IndexError::UnsupportedVersion(x)) if x == v
        ));
    }
    assert!(matches!(
        codec::decode_index(b"NOTANIDX and more bytes here...."),
        Err(IndexError::BadMagic)
    ));
}

#[test]
fn structurally_impossible_indexes_are_refused() {
    // A tile that points past the track's frames: encodes fine, refused on decode.
    let mut idx = sample_index();
    if let EntryKind::Image(img) = &mut idx.entries[1].kind {
        img.tiles[0].frame = 99;
    }
    let b = codec::encode_index(&idx).unwrap();
    assert!(matches!(
        codec::decode_index(&b),
        Err(IndexError::Malformed(_))
    ));
    let mut idx = sample_index();
    if let EntryKind::Image(img) = &mut idx.entries[1].kind {
        img.tiles[0].track = 5;
    }
    let b = codec::encode_index(&idx).unwrap();
    assert!(matches!(
        codec::decode_index(&b),
        Err(IndexError::Malformed(_))
    ));
}

/// A TIFF tag a TIFF cannot take as it is (a layout tag the renderer writes itself, a
/// directory pointer, part of a value) is refused on reading, before any file is written.
#[test]
fn tiff_tags_that_cannot_be_written_are_refused() {
    let (image, exif) = (TiffDir::Image, TiffDir::Exif);
    for (dir, tag, kind, len) in [
        (image, 273, 4, 4),
        (image, 34665, 13, 4),
        (exif, 40965, 4, 4),
        (image, 282, 5, 4),
        (image, 315, 0, 1),
    ] {
        let mut idx = sample_index_v9();
        if let Some(EntryKind::Image(img)) = idx.entries.last_mut().map(|e| &mut e.kind) {
            img.metadata.push(MetaBlock::TiffTag {
                dir,
                tag,
                kind,
                data: vec![0; len],
            });
        }
        let b = codec::encode_index(&idx).unwrap();
        assert!(
            matches!(codec::decode_index(&b), Err(IndexError::Malformed(m)) if m.contains("TIFF tag")),
            "tag {tag} type {kind}"
        );
    }
}

/// Found by fuzzing (fuzz/ decode_index): values that decode but that readers cannot use.
#[test]
fn impossible_numbers_are_refused() {
    let refused = |idx: &Index| {
        let b = codec::encode_index(idx).unwrap();
        matches!(codec::decode_index(&b), Err(IndexError::Malformed(_)))
    };
    let mut idx = sample_index();
    idx.settings.crf = Some(f32::NAN);
    assert!(refused(&idx), "NaN crf");
    for (secs, nanos) in [(0, 1_000_000_000), (i64::MAX, 0), (i64::MIN, 0)] {
        let mut idx = sample_index();
        idx.entries[0].mtime = Timestamp { secs, nanos };
        assert!(refused(&idx), "time {secs} s {nanos} ns");
    }
    let mut idx = sample_index();
    if let EntryKind::Image(img) = &mut idx.entries[1].kind {
        img.score = Some(f32::INFINITY);
    }
    assert!(refused(&idx), "infinite score");
    let mut idx = sample_index();
    idx.entries[0].mtime = Timestamp {
        secs: -86_400,
        nanos: 999_999_999,
    };
    assert!(!refused(&idx), "a time before 1970 is fine");
}
