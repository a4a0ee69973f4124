//! `pack --codec`: every software codec of Debian's FFmpeg packs, unpacks and plays; the
//! GPU encoders fall back when there is no GPU.

mod common;

use av1pack::archive::{Archive, EntryKind};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Six similar frames (a burst), a portrait picture and the sample's icon with its alpha
/// plane: three canvases, inter prediction, and an alpha track beside a colour track.
fn album(root: &Path) -> PathBuf {
    let a = root.join("album");
    std::fs::create_dir_all(a.join("burst")).unwrap();
    for i in 0..6u32 {
        let mut img = pattern(320, 200, 2);
        for y in 50..110 {
            for x in (10 + i * 30)..(60 + i * 30) {
                img.put_pixel(x, y, image::Rgb([230, 50, (i * 40) as u8]));
            }
        }
        img.save(a.join(format!("burst/shot {i}.png"))).unwrap();
    }
    pattern(120, 180, 5).save(a.join("portrait.png")).unwrap();
    std::fs::create_dir_all(a.join("icons")).unwrap();
    std::fs::copy(
        sample_album().join("icons/digikam.png"),
        a.join("icons/digikam.png"),
    )
    .unwrap();
    a
}

/// Packs with `codec`, checks the tracks' codecs, unpacks, scores every coded image, and has
/// FFmpeg decode the archive.
fn round_trip(codec: &str, encoder: &str, matroska_id: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = album(tmp.path());
    let archive = tmp.path().join("a.mkv");
    let err = pack_with(&["--codec", codec], &src, &archive);
    assert!(!err.contains("warning"), "{codec} is available: {err}");

    let a = Archive::open(&archive).unwrap();
    assert_eq!(a.index.settings.codec, encoder);
    let coded: Vec<_> = a
        .index
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Image(img) => Some((e, img)),
            _ => None,
        })
        .collect();
    assert_eq!(coded.len(), 8, "every image is coded as video");
    // Colour tracks are in the chosen codec; the icon's alpha plane is H.264 (lossless).
    let icon = coded
        .iter()
        .find(|(e, _)| e.path.ends_with(b"digikam.png"))
        .unwrap()
        .1;
    let alpha_track = icon.alpha[0].track as usize;
    for (t, track) in a.index.tracks.iter().enumerate() {
        let want = if t == alpha_track {
            "V_MPEG4/ISO/AVC"
        } else {
            matroska_id
        };
        assert_eq!(track.codec, want, "track {}", t + 1);
    }

    let out = tmp.path().join("out");
    unpack_to(&archive, &out);
    assert_eq!(files(&out), files(&src));
    for (e, _) in &coded {
        let rel = std::str::from_utf8(&e.path).unwrap();
        assert_looks_the_same(&src.join(rel), &out.join(rel), 90.0);
    }

    // FFmpeg's own demuxer and decoders read every frame of every track without a complaint.
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&archive)
        .args(["-map", "0:v", "-f", "null", "-"])
        .output()
        .expect("ffmpeg is installed by scripts/install-deps.sh");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "ffmpeg complained: {}", stderr(&o));
    let o = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut listed: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let mut expected: Vec<String> = a
        .index
        .tracks
        .iter()
        .map(|t| {
            let name = match t.codec.as_str() {
                "V_MPEGH/ISO/HEVC" => "hevc",
                "V_AV1" => "av1",
                _ => "h264",
            };
            format!("{name},{}", t.packets.len())
        })
        .collect();
    // (In the file, each alpha track follows the colour track it belongs to.)
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "codec and decoded frames per track");
}

#[test]
fn hevc_round_trip_and_plays() {
    round_trip("hevc", "libx265", "V_MPEGH/ISO/HEVC");
}

#[test]
fn av1_round_trip_and_plays() {
    round_trip("av1", "libaom-av1", "V_AV1");
}

#[test]
fn hevc_and_av1_packing_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let src = album(tmp.path());
    for codec in ["hevc", "av1"] {
        let (a, b) = (tmp.path().join("a.mkv"), tmp.path().join("b.mkv"));
        pack_with(&["--codec", codec], &src, &a);
        std::fs::rename(&a, &b).unwrap();
        pack_with(&["--codec", codec], &src, &a);
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{codec}: same input and flags, same bytes"
        );
        std::fs::remove_file(&a).unwrap();
        std::fs::remove_file(&b).unwrap();
    }
}

#[test]
fn gpu_encoder_without_gpu_falls_back_with_one_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    pattern(160, 120, 3).save(src.join("one.png")).unwrap();
    let archive = tmp.path().join("a.mkv");
    let err = pack_with(&["--codec", "hevc-nvenc"], &src, &archive);
    let a = Archive::open(&archive).unwrap();
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    if a.index.settings.codec == "hevc_nvenc" {
        // A machine with an NVIDIA GPU: nothing to fall back from.
        assert!(warnings.is_empty(), "{err}");
        return;
    }
    assert_eq!(warnings.len(), 1, "one warning line: {err}");
    let w = warnings[0];
    assert!(
        w.contains("--codec hevc-nvenc is not available")
            && w.contains("using hevc (libx265) instead"),
        "names what was asked and what is used: {w}"
    );
    assert_eq!(a.index.settings.codec, "libx265");
    assert_eq!(a.index.tracks[0].codec, "V_MPEGH/ISO/HEVC");
}

#[test]
fn rate_ranges_follow_the_codec() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    pattern(64, 48, 1).save(src.join("p.png")).unwrap();
    // 60 is a valid AV1 CRF (0-63) but not an H.264/HEVC one (0-51).
    let o = bin()
        .args(["pack", "--codec", "hevc", "--crf", "60"])
        .arg(&src)
        .arg(tmp.path().join("h.mkv"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--crf 60: must be between 0 and 51 for hevc"),
        "{}",
        stderr(&o)
    );
    let o = bin()
        .args(["pack", "--codec", "av1", "--crf", "60"])
        .arg(&src)
        .arg(tmp.path().join("a.mkv"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let a = Archive::open(&tmp.path().join("a.mkv")).unwrap();
    assert_eq!(a.index.settings.crf, Some(60.0));
}

#[test]
fn encoder_params_reach_the_chosen_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    pattern(96, 64, 2).save(src.join("p.png")).unwrap();
    // The old spelling still works for x264.
    let o = bin()
        .args(["pack", "--crf", "20", "--x264-params", "deblock=-1,-1"])
        .arg(&src)
        .arg(tmp.path().join("x.mkv"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // x265 gets them: lossless=1 makes the same CRF far larger.
    let size = |name: &str, params: &str| {
        let dest = tmp.path().join(name);
        let o = bin()
            .args(["pack", "--codec", "hevc", "--crf", "30"])
            .args(["--encoder-params", params])
            .arg(&src)
            .arg(&dest)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::metadata(&dest).unwrap().len()
    };
    let (plain, lossless) = (size("plain.mkv", ""), size("lossless.mkv", "lossless=1"));
    assert!(
        lossless > plain * 3 / 2,
        "lossless=1 reached x265: {lossless} vs {plain} bytes"
    );
}

/// Noisy photos at the default quality with `--codec av1`: coded, every image at 90 or more.
/// With libaom's keyframe filter (a denoiser) the keyframes fell 20 points below the frames
/// after them, no rate of the ladder reached 90 and every photo was kept as a file. The track
/// is 10-bit (8-bit Y'CbCr alone would cost these photos points too).
#[test]
fn av1_codes_noisy_photos_to_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let album = noisy_album(tmp.path(), 6);
    let archive = tmp.path().join("a.mkv");
    pack_with(&["--codec", "av1"], &album, &archive);
    let a = Archive::open(&archive).unwrap();
    let coded = a
        .index
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Image(_)))
        .count();
    assert_eq!(coded, 6, "every photo coded as video");
    let v = verify_json(&archive, &album);
    assert!(v["min"].as_f64().unwrap() >= 90.0, "{v}");
    assert_ten_bit_tracks(&archive);
}

/// x265 too needs 10 bits to give photos stored as PNG back at 90 (at 8 bits one of these four
/// was kept as its file: no rate reached 90).
#[test]
fn hevc_codes_photos_in_png_to_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let album = photos_as_png(tmp.path());
    let archive = tmp.path().join("a.mkv");
    pack_with(&["--codec", "hevc"], &album, &archive);
    let v = verify_json(&archive, &album);
    assert_eq!(v["images"].as_array().unwrap().len(), 4, "all coded: {v}");
    // What `info` says of the archive's coding.
    let o = bin()
        .args(["info", "--json"])
        .arg(&archive)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        info["settings"]["pix_fmt"]
            .as_str()
            .is_some_and(|f| f.starts_with("yuv444p10le")),
        "{}",
        info["settings"]
    );
    assert!(v["min"].as_f64().unwrap() >= 90.0, "{v}");
    assert_ten_bit_tracks(&archive);
}
