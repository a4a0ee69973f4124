//! Helpers shared by the integration tests: the binary, generated albums, comparisons.
#![allow(dead_code)]

use image::{ImageBuffer, Luma, Rgb, Rgba};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_av1pack"));
    c.env_remove("AV1PACK_LOG");
    c
}

pub fn run(args: &[&OsStr]) -> Output {
    bin().args(args).output().expect("run av1pack")
}

pub fn sample_album() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/album")
}

/// A copy of the sample's scanned pages (three PNG files written by zlib, with their times) in
/// `dir/name`.
pub fn sample_scans(dir: &Path, name: &str) -> PathBuf {
    let album = dir.join(name);
    let st = Command::new("cp")
        .arg("-a")
        .arg(sample_album().join("scans"))
        .arg(&album)
        .status()
        .unwrap();
    assert!(st.success());
    album
}

/// `av1pack verify --json ARCHIVE ALBUM`, which must succeed: its report.
pub fn verify_json(archive: &Path, album: &Path) -> serde_json::Value {
    let o = run(&[
        OsStr::new("verify"),
        OsStr::new("--json"),
        archive.as_os_str(),
        album.as_os_str(),
    ]);
    assert!(o.status.success(), "verify failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A photo-like test pattern: gradients, edges and fine texture (not flat, not noise).
pub fn pattern(w: u32, h: u32, seed: u32) -> ImageBuffer<Rgb<u8>, Vec<u8>> {
    ImageBuffer::from_fn(w, h, |x, y| {
        let fx = x as f32 / w.max(1) as f32;
        let fy = y as f32 / h.max(1) as f32;
        let ring = (((x as f32 - w as f32 / 2.0).hypot(y as f32 - h as f32 / 2.0) / 6.0).sin()
            * 40.0) as i32;
        let r = (fx * 200.0) as i32 + ring + (seed as i32 * 13 % 40);
        let g = (fy * 180.0) as i32 + ((x / 8 + y / 8) % 2) as i32 * 30;
        let b = ((fx + fy) * 100.0) as i32 + ((x * 7 + y * 3 + seed) % 17) as i32;
        Rgb([
            r.clamp(0, 255) as u8,
            g.clamp(0, 255) as u8,
            b.clamp(0, 255) as u8,
        ])
    })
}

/// A noisy photo: smooth colour waves under sensor-like noise (about σ 6 per channel) and a
/// few flat patches. Such frames need more than the quality loop's first rate to reach 90.
pub fn noisy_photo(w: u32, h: u32, seed: u32) -> ImageBuffer<Rgb<u8>, Vec<u8>> {
    photo(w, h, seed, 6.0)
}

/// `dir/noisy` with `n` noisy photos of 320×240 (`IMG_0000.png` ...): groups that need more
/// than the quality loop's first rate.
pub fn noisy_album(dir: &Path, n: u32) -> PathBuf {
    let album = dir.join("noisy");
    std::fs::create_dir(&album).unwrap();
    for i in 0..n {
        noisy_photo(320, 240, i)
            .save(album.join(format!("IMG_{i:04}.png")))
            .unwrap();
    }
    album
}

/// A photo-like picture: smooth colour waves, a few flat patches, and noise of about `sigma`
/// levels a channel (0: none).
pub fn photo(w: u32, h: u32, seed: u32, sigma: f32) -> ImageBuffer<Rgb<u8>, Vec<u8>> {
    // The sum of four uniforms (below) has σ ≈ 0.58: 10.4 of it is σ 6.
    let scale = sigma * (10.4 / 6.0);
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut noise = move || {
        // xorshift64*; the sum of four uniforms in 0..1 is nearly normal (σ ≈ 0.58).
        let mut sum = 0.0f32;
        for _ in 0..4 {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            sum += (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
        }
        (sum - 2.0) * scale
    };
    let patches: Vec<(u32, u32, [f32; 3])> = (0..6)
        .map(|i| {
            let k = seed * 31 + i * 17;
            (
                (k * 53) % w.max(1),
                (k * 29) % h.max(1),
                [
                    (k * 7 % 256) as f32,
                    (k * 13 % 256) as f32,
                    (k * 23 % 256) as f32,
                ],
            )
        })
        .collect();
    ImageBuffer::from_fn(w, h, |x, y| {
        let (fx, fy, s) = (x as f32, y as f32, seed as f32);
        let mut c = [
            128.0 + 100.0 * (fx / (37.0 + s)).sin() * (fy / 53.0).cos(),
            128.0 + 90.0 * ((fx + fy) / 71.0).cos(),
            128.0 + 80.0 * (fy / 29.0 + s).sin(),
        ];
        for &(px, py, colour) in &patches {
            if x >= px && x < px + w / 6 && y >= py && y < py + h / 6 {
                c = colour;
            }
        }
        Rgb(c.map(|v| (v + noise()).round().clamp(0.0, 255.0) as u8))
    })
}

/// A PNG of 16 bits a sample as image editors export them: `rgb` scaled to 16 bits with low
/// bytes that are not the high ones (a ramp under each 8-bit level), as RGBA when `alpha` (a
/// nearly opaque band, 65267, and a transparent corner) or as grey.
pub fn write_16_bit_png(path: &Path, rgb: &image::RgbImage, alpha: bool) {
    let (w, h) = rgb.dimensions();
    let deep =
        |v: u8, x: u32, y: u32| u16::from(v) * 257 - u16::from(v > 0) * ((x + y) % 128) as u16;
    if alpha {
        let img: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::from_fn(w, h, |x, y| {
            let p = rgb.get_pixel(x, y).0;
            let a = if x < w / 8 && y < h / 8 {
                0
            } else if y < h / 4 {
                65267
            } else {
                65535
            };
            Rgba([deep(p[0], x, y), deep(p[1], x, y), deep(p[2], x, y), a])
        });
        img.save(path).unwrap();
    } else {
        let img: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_fn(w, h, |x, y| {
            let p = rgb.get_pixel(x, y).0;
            Luma([deep(p[1], x, y)])
        });
        img.save(path).unwrap();
    }
}

/// `root/album` with two hard links (an image, `a.png` and `sub/a (link).png`, and a text
/// file, `notes.txt` and `sub/notes.txt`) and a copy of the text (`copy.txt`, another file of
/// the same bytes).
pub fn hard_linked_album(root: &Path) -> PathBuf {
    let album = root.join("album");
    std::fs::create_dir_all(album.join("sub")).unwrap();
    pattern(64, 48, 1).save(album.join("a.png")).unwrap();
    std::fs::hard_link(album.join("a.png"), album.join("sub/a (link).png")).unwrap();
    std::fs::write(album.join("notes.txt"), "the same notes").unwrap();
    std::fs::hard_link(album.join("notes.txt"), album.join("sub/notes.txt")).unwrap();
    std::fs::write(album.join("copy.txt"), "the same notes").unwrap();
    album
}

/// An album of awkward cases. Returns its root.
pub fn edge_album(root: &Path) -> PathBuf {
    let a = root.join("edge");
    std::fs::create_dir_all(a.join("deep/er/still deeper")).unwrap();
    pattern(1, 1, 1).save(a.join("one.png")).unwrap();
    pattern(3, 5, 2).save(a.join("three by five.png")).unwrap();
    pattern(641, 479, 3)
        .save(a.join("deep/odd 641x479.png"))
        .unwrap();
    pattern(2000, 9, 4)
        .save(a.join("deep/er/strip.png"))
        .unwrap();
    pattern(9, 700, 5)
        .save(a.join("deep/er/still deeper/tall.png"))
        .unwrap();
    let jpg = pattern(320, 240, 6);
    jpg.save_with_format(a.join("photo.jpg"), image::ImageFormat::Jpeg)
        .unwrap();
    let grey: ImageBuffer<Luma<u8>, Vec<u8>> =
        ImageBuffer::from_fn(200, 150, |x, y| Luma([((x * 255 / 200) ^ (y % 32)) as u8]));
    grey.save(a.join("grey.png")).unwrap();
    let deep16: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(64, 48, |x, y| Luma([(x * 1000 + y * 7) as u16]));
    deep16.save(a.join("sixteen-bit.png")).unwrap();
    // A scanner's 16-bit TIFF, kept: such files are made for editing.
    deep16.save(a.join("sixteen-bit.tif")).unwrap();
    let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> = ImageBuffer::from_fn(50, 40, |x, y| {
        Rgba([x as u8 * 5, y as u8 * 6, 100, (x * 5) as u8])
    });
    rgba.save(a.join("alpha.png")).unwrap();
    // Grey with alpha, and a palette PNG with transparency (tRNS).
    let la: ImageBuffer<image::LumaA<u8>, Vec<u8>> = ImageBuffer::from_fn(120, 90, |x, y| {
        image::LumaA([
            ((x * 2 + y) % 256) as u8,
            if (x / 10 + y / 10) % 3 == 0 { 0 } else { 255 },
        ])
    });
    la.save(a.join("grey alpha.png")).unwrap();
    write_palette_png(&a.join("palette.png"), 140, 100);
    write_bilevel_png(&a.join("bilevel.png"), 300, 200);
    write_bilevel_tiff(&a.join("fax.tif"), 300, 200);
    write_cmyk_tiff(&a.join("print.tif"), 80, 60);
    // A TIFF's resolution and Artist and a WebP's EXIF travel with them; the BMP's profile
    // and the DNG's raw data would not: those are kept as they are.
    write_tagged_tiff(&a.join("scanned.tif"), 90, 60);
    write_webp_with_exif(&a.join("exif.webp"), 64, 40);
    write_bmp_with_profile(&a.join("profile.bmp"), 30, 20);
    write_dng_like(&a.join("IMG_2001.dng"), 64, 48);
    write_palette_bmp(&a.join("palette.bmp"), 90, 60);
    // Cut inside its first chunk (IHDR): kept, and the rest of the album packed.
    let png = std::fs::read(a.join("palette.png")).unwrap();
    std::fs::write(a.join("cut short.png"), &png[..20]).unwrap();
    // BMP, TIFF and (lossless) WebP originals come back in their own format.
    pattern(90, 60, 8).save(a.join("bitmap.bmp")).unwrap();
    pattern(90, 60, 9).save(a.join("scan.tiff")).unwrap();
    pattern(90, 60, 10).save(a.join("web.webp")).unwrap();
    // Bytes after a WebP's last chunk would not survive coding: kept.
    let mut tail = std::fs::read(a.join("web.webp")).unwrap();
    tail.extend(b"xyz");
    std::fs::write(a.join("tail.webp"), tail).unwrap();
    // An animated GIF (three frames): kept byte for byte.
    {
        let file = std::fs::File::create(a.join("animated.gif")).unwrap();
        let mut enc = image::codecs::gif::GifEncoder::new(file);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite)
            .unwrap();
        for i in 0..3u32 {
            let frame = image::RgbaImage::from_fn(40, 30, |x, y| {
                image::Rgba([(x * 6) as u8, (y * 8) as u8, (i * 80) as u8, 255])
            });
            enc.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    // Not images, or broken ones.
    std::fs::write(a.join("notes.txt"), b"hello album\n").unwrap();
    std::fs::write(a.join("empty.jpg"), b"").unwrap();
    let full = std::fs::read(a.join("photo.jpg")).unwrap();
    std::fs::write(a.join("truncated.jpg"), &full[..full.len() / 3]).unwrap();
    // A non-UTF-8 name.
    let name = OsStr::from_bytes(b"caf\xe9 latin1.png");
    pattern(30, 20, 7).save(a.join(name)).unwrap();
    std::fs::create_dir_all(a.join("empty folder")).unwrap();
    std::os::unix::fs::symlink("one.png", a.join("link to one")).unwrap();
    a
}

/// A black-and-white scan: grey, 1 bit a pixel.
pub fn write_bilevel_png(path: &Path, w: u32, h: u32) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::One);
    let mut writer = enc.write_header().unwrap();
    let row = w.div_ceil(8) as usize;
    let data: Vec<u8> = (0..h as usize * row)
        .map(|i| {
            let (byte, y) = (i % row, i / row);
            if (y / 12) % 3 == 0 {
                0x0f ^ (byte as u8).wrapping_mul(37)
            } else {
                0xff
            }
        })
        .collect();
    writer.write_image_data(&data).unwrap();
}

/// A black-and-white fax-style TIFF: 1 bit a sample, uncompressed, one strip, and no
/// BitsPerSample tag (1 is the default), little-endian.
pub fn write_bilevel_tiff(path: &Path, w: u32, h: u32) {
    let row = w.div_ceil(8) as usize;
    let pixels: Vec<u8> = (0..h as usize * row)
        .map(|i| {
            if (i / row / 10).is_multiple_of(2) {
                0xf0
            } else {
                0x0f
            }
        })
        .collect();
    // Tag, type (3 SHORT, 4 LONG), count 1, value.
    let tags: [(u16, u16, u32); 8] = [
        (256, 4, w),
        (257, 4, h),
        (259, 3, 1), // no compression
        (262, 3, 0), // white is zero
        (273, 4, 8), // the strip, right after the header
        (277, 3, 1), // one sample a pixel
        (278, 4, h), // rows in the strip
        (279, 4, pixels.len() as u32),
    ];
    let mut out = b"II*\0".to_vec();
    out.extend((8 + pixels.len() as u32).to_le_bytes());
    out.extend(&pixels);
    out.extend((tags.len() as u16).to_le_bytes());
    for (tag, kind, value) in tags {
        out.extend(tag.to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        if kind == 3 {
            out.extend((value as u16).to_le_bytes());
            out.extend([0, 0]);
        } else {
            out.extend(value.to_le_bytes());
        }
    }
    out.extend(0u32.to_le_bytes());
    std::fs::write(path, out).unwrap();
}

/// A CMYK TIFF of 8 bits a sample (as prepress software writes them), uncompressed.
pub fn write_cmyk_tiff(path: &Path, w: u32, h: u32) {
    let inks: Vec<u8> = (0..w * h)
        .flat_map(|i| {
            let (x, y) = (i % w, i / w);
            [
                (x * 3) as u8,
                (y * 4) as u8,
                ((x + y) * 2) as u8,
                (x ^ y) as u8 / 4,
            ]
        })
        .collect();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = tiff::encoder::TiffEncoder::new(std::io::BufWriter::new(file)).unwrap();
    enc.write_image::<tiff::encoder::colortype::CMYK8>(w, h, &inks)
        .unwrap();
}

/// An RGB TIFF as a scanner writes one: 300 dpi and an Artist tag.
pub fn write_tagged_tiff(path: &Path, w: u32, h: u32) {
    use tiff::encoder::{colortype, Rational, TiffEncoder};
    let rgb = pattern(w, h, 11);
    let file = std::fs::File::create(path).unwrap();
    let mut enc = TiffEncoder::new(std::io::BufWriter::new(file)).unwrap();
    let mut img = enc.new_image::<colortype::RGB8>(w, h).unwrap();
    img.resolution(tiff::tags::ResolutionUnit::Inch, Rational { n: 300, d: 1 });
    img.encoder()
        .write_tag(tiff::tags::Tag::Artist, "A. Photographer")
        .unwrap();
    img.write_data(rgb.as_raw()).unwrap();
}

/// A TIFF as a scanner or an editor writes one: Deflate, 300 dpi, an Artist, a colour profile
/// and XMP.
pub fn write_scanner_tiff(path: &Path, rgb: &image::RgbImage) {
    use tiff::encoder::{colortype, Compression, DeflateLevel, Rational, TiffEncoder};
    use tiff::tags::{ResolutionUnit, Tag};
    let file = std::fs::File::create(path).unwrap();
    let mut enc = TiffEncoder::new(std::io::BufWriter::new(file))
        .unwrap()
        .with_compression(Compression::Deflate(DeflateLevel::Balanced));
    let (w, h) = rgb.dimensions();
    let mut img = enc.new_image::<colortype::RGB8>(w, h).unwrap();
    img.resolution(ResolutionUnit::Inch, Rational { n: 300, d: 1 });
    let dir = img.encoder();
    dir.write_tag(Tag::Artist, "A. Photographer").unwrap();
    dir.write_tag(Tag::Software, "ScanApp 2.1").unwrap();
    dir.write_tag(Tag::Unknown(34675), &SCANNER_ICC[..])
        .unwrap();
    dir.write_tag(Tag::Unknown(700), &b"<x:xmpmeta>scan</x:xmpmeta>"[..])
        .unwrap();
    img.write_data(rgb.as_raw()).unwrap();
}

/// Stand-in bytes for a scanner's ICC profile (carried as bytes, never parsed).
pub const SCANNER_ICC: [u8; 16] = *b"\0\0\0\x10scnrRGB XYZ ";

/// The shape of a DNG (or a TIFF-based camera raw file): its first directory a small RGB
/// preview (NewSubfileType 1) with the DNG version tag; the raw data, elsewhere in real files,
/// is left out here.
pub fn write_dng_like(path: &Path, w: u32, h: u32) {
    use tiff::encoder::{colortype, TiffEncoder};
    let rgb = pattern(w, h, 13);
    let file = std::fs::File::create(path).unwrap();
    let mut enc = TiffEncoder::new(std::io::BufWriter::new(file)).unwrap();
    let mut img = enc.new_image::<colortype::RGB8>(w, h).unwrap();
    img.encoder()
        .write_tag(tiff::tags::Tag::NewSubfileType, 1u32)
        .unwrap();
    img.encoder()
        .write_tag(tiff::tags::Tag::Unknown(50706), &[1u8, 4, 0, 0][..])
        .unwrap();
    img.write_data(rgb.as_raw()).unwrap();
}

/// A lossless WebP in the extended format (VP8X) with an EXIF chunk.
pub fn write_webp_with_exif(path: &Path, w: u32, h: u32) {
    let exif = b"Exif\0\0II*\0\x08\0\0\0\0\0\0\0\0\0";
    write_webp_with_chunks(path, &pattern(w, h, 12), &[(*b"EXIF", &exif[..])]);
}

/// `rgb` as a lossless WebP in the extended format (VP8X) with metadata `chunks` (ICCP before
/// the image, the others after it, as the container specification orders them).
pub fn write_webp_with_chunks(path: &Path, rgb: &image::RgbImage, chunks: &[([u8; 4], &[u8])]) {
    let (w, h) = rgb.dimensions();
    let mut simple = Vec::new();
    rgb.write_to(
        &mut std::io::Cursor::new(&mut simple),
        image::ImageFormat::WebP,
    )
    .unwrap();
    assert_eq!(&simple[12..16], b"VP8L", "a simple lossless WebP");
    let chunk = |body: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]| {
        body.extend(kind);
        body.extend((data.len() as u32).to_le_bytes());
        body.extend(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    };
    let mut flags = 0u8;
    for (kind, _) in chunks {
        flags |= match kind {
            b"ICCP" => 0x20,
            b"EXIF" => 0x08,
            b"XMP " => 0x04,
            _ => 0,
        };
    }
    let mut body = b"WEBP".to_vec();
    let mut vp8x = vec![flags, 0, 0, 0];
    vp8x.extend(&(w - 1).to_le_bytes()[..3]);
    vp8x.extend(&(h - 1).to_le_bytes()[..3]);
    chunk(&mut body, b"VP8X", &vp8x);
    for (kind, data) in chunks.iter().filter(|(k, _)| k == b"ICCP") {
        chunk(&mut body, kind, data);
    }
    body.extend(&simple[12..]);
    for (kind, data) in chunks.iter().filter(|(k, _)| k != b"ICCP") {
        chunk(&mut body, kind, data);
    }
    let mut out = b"RIFF".to_vec();
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    std::fs::write(path, out).unwrap();
}

/// A 24-bit BMP with a version 5 header and an embedded colour profile (its bytes made up).
pub fn write_bmp_with_profile(path: &Path, w: u32, h: u32) {
    let row = (w as usize * 3).div_ceil(4) * 4;
    let profile = b"not really an ICC profile, but where one goes".to_vec();
    let pixels_at = 14 + 124;
    let profile_at = pixels_at + row * h as usize;
    let size = profile_at + profile.len();
    let mut out = b"BM".to_vec();
    out.extend((size as u32).to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((pixels_at as u32).to_le_bytes());
    let mut dib = vec![0u8; 124];
    dib[0..4].copy_from_slice(&124u32.to_le_bytes());
    dib[4..8].copy_from_slice(&w.to_le_bytes());
    dib[8..12].copy_from_slice(&h.to_le_bytes());
    dib[12..14].copy_from_slice(&1u16.to_le_bytes());
    dib[14..16].copy_from_slice(&24u16.to_le_bytes());
    dib[20..24].copy_from_slice(&((row * h as usize) as u32).to_le_bytes());
    dib[56..60].copy_from_slice(b"DEBM"); // 'MBED', little-endian
                                          // Where the profile is, from the start of this header, and its size.
    dib[112..116].copy_from_slice(&((profile_at - 14) as u32).to_le_bytes());
    dib[116..120].copy_from_slice(&(profile.len() as u32).to_le_bytes());
    out.extend(dib);
    for y in 0..h {
        let mut line: Vec<u8> = (0..w)
            .flat_map(|x| [(x * 7) as u8, (y * 5) as u8, 90])
            .collect();
        line.resize(row, 0);
        out.extend(line);
    }
    out.extend(profile);
    std::fs::write(path, out).unwrap();
}

/// An 8-bit BMP with a palette of 256 greys, bottom-up.
pub fn write_palette_bmp(path: &Path, w: u32, h: u32) {
    let row = (w as usize).div_ceil(4) * 4;
    let data_at = 14 + 40 + 256 * 4;
    let size = data_at + row * h as usize;
    let mut out = b"BM".to_vec();
    out.extend((size as u32).to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((data_at as u32).to_le_bytes());
    out.extend(40u32.to_le_bytes());
    out.extend((w as i32).to_le_bytes());
    out.extend((h as i32).to_le_bytes());
    out.extend(1u16.to_le_bytes());
    out.extend(8u16.to_le_bytes());
    out.extend(0u32.to_le_bytes()); // no compression
    out.extend(((row * h as usize) as u32).to_le_bytes());
    out.extend([0u8; 8]); // resolution
    out.extend(256u32.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    for i in 0..=255u8 {
        out.extend([i, i, i, 0]);
    }
    for y in 0..h as usize {
        out.extend((0..row).map(|x| ((x * 3 + y * 5) % 256) as u8));
    }
    std::fs::write(path, out).unwrap();
}

/// A palette PNG with four colours, two of them partly or fully transparent.
pub fn write_palette_png(path: &Path, w: u32, h: u32) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(vec![255, 0, 0, 0, 128, 255, 250, 250, 240, 20, 20, 20]);
    enc.set_trns(vec![255, 128, 0, 255]);
    let mut writer = enc.write_header().unwrap();
    let data: Vec<u8> = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            (((x / 7) + (y / 5) * 3) % 4) as u8
        })
        .collect();
    writer.write_image_data(&data).unwrap();
}

/// Colour and alpha of an image file.
/// The sample album's four JPEG photos decoded by FFmpeg to RGB PNG, as a converter or an
/// editor would export them, in `dir/photos`.
pub fn photos_as_png(dir: &Path) -> PathBuf {
    let album = dir.join("photos");
    std::fs::create_dir(&album).unwrap();
    for name in [
        "2005/anne_helene.jpg",
        "2005/skagen.jpg",
        "2006/bar55.jpg",
        "2006/bar55_2.jpg",
    ] {
        let stem = Path::new(name).file_stem().unwrap();
        let st = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(sample_album().join(name))
            .args(["-pix_fmt", "rgb24"])
            .arg(album.join(stem).with_extension("png"))
            .status()
            .unwrap();
        assert!(st.success());
    }
    album
}

/// Asserts that `archive` has video tracks and that all of them are 10-bit 4:4:4.
pub fn assert_ten_bit_tracks(archive: &Path) {
    let formats = track_pixel_formats(archive);
    assert!(
        !formats.is_empty() && formats.iter().all(|f| f == "yuv444p10le"),
        "every track 10-bit: {formats:?}"
    );
}

/// The pixel format of each video track of `archive`, as ffprobe reports it.
pub fn track_pixel_formats(archive: &Path) -> Vec<String> {
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=pix_fmt",
            "-of",
            "csv=p=0",
        ])
        .arg(archive)
        .output()
        .unwrap();
    assert!(probe.status.success(), "ffprobe failed on {archive:?}");
    String::from_utf8_lossy(&probe.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn picture_of(path: &Path) -> av1pack::pixels::Picture {
    av1pack::pixels::Picture::from_dynamic(
        image::ImageReader::open(path)
            .unwrap()
            .with_guessed_format()
            .unwrap()
            .decode()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

/// Asserts that `served` looks like `original` (SSIMULACRA2 at least `floor`, over black and
/// over white for images with alpha) and that its alpha plane is identical.
pub fn assert_looks_the_same(original: &Path, served: &Path, floor: f64) {
    let (a, b) = (picture_of(original), picture_of(served));
    assert_eq!(
        a.rgb.dimensions(),
        b.rgb.dimensions(),
        "size of {}",
        served.display()
    );
    assert_eq!(
        a.alpha.is_some(),
        b.alpha.is_some(),
        "{}: alpha channel kept",
        served.display()
    );
    assert_eq!(
        av1pack::quality::alpha_max_diff(a.alpha.as_ref(), b.alpha.as_ref()),
        0,
        "{}: alpha differs",
        served.display()
    );
    let s = av1pack::quality::score_picture(&a, &b).unwrap();
    assert!(
        s.ssimulacra2 >= floor,
        "{}: SSIMULACRA2 {:.2} below {floor} (PSNR {:.2})",
        served.display(),
        s.ssimulacra2,
        s.psnr
    );
}

/// Every file below `root`, as relative paths.
pub fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            out.push(p.strip_prefix(root).unwrap().to_owned());
            if p.symlink_metadata().unwrap().is_dir() {
                walk(&p, root, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

pub fn rgb_of(path: &Path) -> image::RgbImage {
    image::ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap()
        .decode()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// A copy of the sample album in `dir` with its scanned pages saved again by the `image`
/// crate (same pixels, no ancillary chunks). Pack recodes only PNG files whose image data
/// zlib wrote (`av1pack::pngz`), and keeps the sample's own pages that way, smaller than
/// their frames; these pages it codes as video, which tests of tracks and frames need.
pub fn album_with_video_pages(dir: &Path) -> PathBuf {
    let dest = dir.join("album-video-pages");
    let st = Command::new("cp")
        .arg("-a")
        .arg(sample_album())
        .arg(&dest)
        .status()
        .expect("cp");
    assert!(st.success());
    for entry in std::fs::read_dir(dest.join("scans")).unwrap() {
        let p = entry.unwrap().path();
        image::open(&p).unwrap().save(&p).unwrap();
    }
    dest
}

/// Packs `album` into `archive` at a fixed rate (`--crf 20`, no quality loop: for tests about
/// names, bytes and files rather than quality); must succeed.
pub fn pack_fixed_rate(album: &Path, archive: &Path) {
    let o = bin()
        .args(["pack", "-q", "--crf", "20"])
        .arg(album)
        .arg(archive)
        .output()
        .expect("run av1pack");
    assert!(o.status.success(), "pack failed: {}", stderr(&o));
}

/// Runs `av1pack ARGS` with stderr captured, sends it `sig` after `after`, and waits for it.
pub fn run_interrupted(args: &[&OsStr], after: std::time::Duration, sig: i32) -> Output {
    let child = bin()
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run av1pack");
    std::thread::sleep(after);
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
    child.wait_with_output().expect("wait for av1pack")
}

/// The entry of `a` at `path`.
pub fn entry<'a>(a: &'a av1pack::archive::Archive, path: &str) -> &'a av1pack::archive::Entry {
    a.index
        .entries
        .iter()
        .find(|e| e.path == path.as_bytes())
        .unwrap_or_else(|| panic!("{path} not in the archive"))
}

/// An argument for [`run`]-style helpers.
pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A photo with some sensor noise as a finely quantised JPEG (quality 92, as phones write
/// them): video at ≥ 90 does not beat it (it must code the noise), and its coefficients of
/// magnitude 1 can go.
pub fn write_fine_jpeg(path: &Path, w: u32, h: u32, seed: u32) {
    let img = photo(w, h, seed, 1.5);
    let mut out = std::fs::File::create(path).unwrap();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode_image(&img)
        .unwrap();
}

/// `n` frames of a burst as fine JPEGs (`frame_0.jpg`…): one scene whose top half is the same
/// in every frame (the 8×8 blocks there too) and whose bottom half has noise of its own in
/// each (a sensor's: what makes a video codec pay for every frame again). Frames 2 and 3 end
/// with a newline after the image, as some tools write them.
pub fn write_jpeg_burst(dir: &Path, n: u32) {
    let scene = photo(960, 640, 3, 1.5);
    for i in 0..n {
        let mut img = scene.clone();
        let mut state = 0x2545_f491_4f6c_dd1du64.wrapping_mul(u64::from(i) + 1);
        for y in 320..640 {
            for x in 0..960 {
                let p = img.get_pixel_mut(x, y);
                for c in p.0.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *c = c.saturating_add((state % 9) as u8).saturating_sub(4);
                }
            }
        }
        let mut out = std::fs::File::create(dir.join(format!("frame_{i}.jpg"))).unwrap();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
            .encode_image(&img)
            .unwrap();
        if i == 2 || i == 3 {
            use std::io::Write;
            out.write_all(b"\n").unwrap();
        }
    }
}

/// A 5-frame [`write_jpeg_burst`] in `dir/album`, packed with defaults into `dir/a.mkv`:
/// (album, archive).
pub fn packed_jpeg_burst(dir: &Path) -> (PathBuf, PathBuf) {
    let album = dir.join("album");
    std::fs::create_dir_all(&album).unwrap();
    write_jpeg_burst(&album, 5);
    let archive = dir.join("a.mkv");
    pack_with(&["-q"], &album, &archive);
    (album, archive)
}

/// `av1pack unpack ARCHIVE OUT`, which must succeed.
pub fn unpack_to(archive: &Path, out: &Path) {
    let o = bin().arg("unpack").arg(archive).arg(out).output().unwrap();
    assert!(o.status.success(), "unpack: {}", stderr(&o));
}

/// `av1pack pack FLAGS SRC DEST`, which must succeed; returns what it printed on stderr.
pub fn pack_with(flags: &[&str], src: &Path, dest: &Path) -> String {
    let mut args: Vec<&OsStr> = vec![os("pack")];
    args.extend(flags.iter().map(|f| os(f)));
    args.extend([src.as_os_str(), dest.as_os_str()]);
    let o = run(&args);
    assert!(o.status.success(), "pack {flags:?} failed: {}", stderr(&o));
    stderr(&o)
}
