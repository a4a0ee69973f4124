//! The command line around the core: completions, man pages, `ls --json`, `--help` examples,
//! and `report` with its chart, through the real binary.

mod common;

use common::*;
use std::path::Path;

const SUBCOMMANDS: [&str; 12] = [
    "pack",
    "unpack",
    "ls",
    "info",
    "verify",
    "mount",
    "umount",
    "play",
    "report",
    "completions",
    "man",
    "thumbnails",
];

/// The sample album packed at the default settings, once for all the tests of this file
/// (they only read it).
fn sample_archive() -> &'static Path {
    static ARCHIVE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("commands-sample");
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("a.mkv");
        let o = run(&[
            os("pack"),
            os("--force"),
            sample_album().as_os_str(),
            dest.as_os_str(),
        ]);
        assert!(o.status.success(), "pack failed: {}", stderr(&o));
        dest
    })
}

#[test]
fn completions_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&[os("completions"), os(shell)]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = String::from_utf8(o.stdout).unwrap();
        for sub in SUBCOMMANDS {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(text.contains("slide-seconds"), "{shell}: pack options");
    }
    let o = run(&[os("completions"), os("tcsh")]);
    assert_eq!(o.status.code(), Some(2), "unknown shell is a usage error");
}

#[test]
fn man_page_documents_every_subcommand() {
    let o = run(&[os("man")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = String::from_utf8(o.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH av1pack 1"),
        "roff"
    );
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("av1pack\\-{sub}")),
            "man lacks {sub}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&[os("man"), os("--dir"), tmp.path().as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for sub in SUBCOMMANDS {
        let p = tmp.path().join(format!("av1pack-{sub}.1"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains(&format!(".TH av1pack-{sub} 1")),
            "{}",
            p.display()
        );
    }
    let pack = std::fs::read_to_string(tmp.path().join("av1pack-pack.1")).unwrap();
    assert!(
        pack.contains("slide\\-seconds"),
        "pack page lists its options"
    );
}

#[test]
fn every_subcommand_help_has_examples() {
    for sub in SUBCOMMANDS {
        let o = run(&[os(sub), os("--help")]);
        assert!(o.status.success(), "{sub}: {}", stderr(&o));
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.contains("Examples:"), "{sub} --help: {text}");
        assert!(
            text.contains(&format!("av1pack {sub}")),
            "{sub} --help: {text}"
        );
    }
}

#[test]
fn ls_json_lists_what_ls_lists() {
    let archive = sample_archive();
    let o = run(&[os("ls"), os("--json"), archive.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let entries = v.as_array().unwrap();
    let text = run(&[os("ls"), archive.as_os_str()]);
    let lines: Vec<String> = String::from_utf8(text.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(entries.len(), lines.len());
    for (e, line) in entries.iter().zip(&lines) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(e["kind"].as_str(), Some(cols[0]), "{line}");
        assert_eq!(e["original_size"].as_u64().unwrap().to_string(), cols[2]);
        assert_eq!(e["restored_size"].as_u64().unwrap().to_string(), cols[3]);
        assert!(line.ends_with(e["path"].as_str().unwrap()), "{line}");
        if cols[0] == "image" {
            let dims = format!("{}x{}", e["width"], e["height"]);
            assert_eq!(dims, cols[1]);
            let score = e["score"].as_f64().unwrap();
            assert!(score >= 90.0, "visually lossless by default: {e}");
        }
    }
    // Every file of the album is listed with its size on disk.
    for rel in files(&sample_album()) {
        let p = sample_album().join(&rel);
        if !p.is_file() {
            continue;
        }
        let e = entries
            .iter()
            .find(|e| e["path"].as_str() == rel.to_str())
            .unwrap_or_else(|| panic!("{} not listed", rel.display()));
        assert_eq!(
            e["original_size"].as_u64(),
            Some(p.metadata().unwrap().len())
        );
    }
}

#[test]
fn report_compares_sizes_and_counts_images_by_quality() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = sample_archive();
    let svg = tmp.path().join("chart.svg");
    let o = run(&[
        os("report"),
        os("--json"),
        os("--originals"),
        sample_album().as_os_str(),
        os("--chart"),
        svg.as_os_str(),
        archive.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        r["archive_bytes"].as_u64(),
        Some(archive.metadata().unwrap().len())
    );
    let album_bytes: u64 = files(&sample_album())
        .iter()
        .map(|rel| sample_album().join(rel))
        .filter(|p| p.symlink_metadata().unwrap().is_file())
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert_eq!(r["originals"]["bytes"].as_u64(), Some(album_bytes));
    assert_eq!(r["original_bytes"].as_u64(), Some(album_bytes));
    // zip and 7z are installed by scripts/install-deps.sh: both ran and made smaller files.
    let archivers = r["archivers"].as_array().unwrap();
    assert_eq!(archivers.len(), 2);
    for a in archivers {
        let b = a["bytes"].as_u64().unwrap_or_else(|| panic!("{a}"));
        assert!(b > 0 && b < album_bytes + 64 * 1024, "{a}");
    }
    // Quality: every image of the album once; coded ones at their pack-time scores.
    let images = r["images"].as_array().unwrap();
    let ls = run(&[os("ls"), os("--json"), archive.as_os_str()]);
    let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let coded: Vec<&serde_json::Value> = ls
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "image")
        .collect();
    let q = &r["quality"];
    assert_eq!(q["coded"].as_u64(), Some(coded.len() as u64));
    for e in &coded {
        let i = images.iter().find(|i| i["path"] == e["path"]).unwrap();
        assert_eq!(i["score"], e["score"]);
        assert_eq!(i["exact"], false);
    }
    let exact = images.iter().filter(|i| i["exact"] == true).count();
    assert_eq!(q["exact"].as_u64(), Some(exact as u64));
    assert!(
        images
            .iter()
            .any(|i| i["path"] == "2006/bar55.jpg" && i["exact"] == true),
        "an image kept as is counts as exact"
    );
    assert!(
        !images.iter().any(|i| i["path"] == "notes/README.md"),
        "not an image"
    );
    let in_classes: u64 = q["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_u64().unwrap())
        .sum();
    assert_eq!(in_classes, coded.len() as u64);

    // The chart: valid SVG with the title, the axes' names and the series labels.
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the chart is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect();
    for want in [
        "av1pack report: a.mkv",
        "originals",
        "zip -9",
        "7z -mx9",
        "av1pack",
        "exact",
        "90–91",
        "coded as video",
        "kept as is (exact)",
    ] {
        assert!(texts.iter().any(|t| t == want), "{want} not in {texts:?}");
    }
}

#[test]
fn report_draws_png_charts_and_refuses_other_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = sample_archive();
    let png = tmp.path().join("chart.png");
    let o = run(&[
        os("report"),
        os("--chart"),
        png.as_os_str(),
        archive.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("av1pack report: a.mkv"), "{out}");
    assert!(out.contains("exact (kept as is)"), "{out}");
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1000, 420));
    // Something is drawn: the bars' colours, not just a white page.
    let coloured = img
        .pixels()
        .filter(|p| p[0] != p[1] || p[1] != p[2])
        .count();
    assert!(coloured > 1000, "{coloured} coloured pixels");

    let gif = tmp.path().join("chart.gif");
    let o = run(&[
        os("report"),
        os("--chart"),
        gif.as_os_str(),
        archive.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("chart.gif"), "{}", stderr(&o));
    assert!(stderr(&o).contains(".svg or .png"), "{}", stderr(&o));
}

/// `gio info` (GLib, as GNOME Files uses it) on `files`: each file's thumbnail path and
/// whether GLib considers it current.
fn gio_thumbnails(cache_home: &Path, files: &[std::path::PathBuf]) -> Vec<(String, bool)> {
    let o = std::process::Command::new("gio")
        .env("XDG_CACHE_HOME", cache_home)
        .args(["info", "-a", "thumbnail::path,thumbnail::is-valid"])
        .args(files)
        .output()
        .expect("gio is installed by scripts/install-deps.sh");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let mut out = Vec::new();
    for block in text.split("uri: ").skip(1) {
        let path = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("thumbnail::path: "))
            .unwrap_or("")
            .to_string();
        let valid = block.contains("thumbnail::is-valid: TRUE");
        out.push((path, valid));
    }
    out
}

#[test]
fn thumbnails_are_found_by_glib_for_every_image() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = sample_archive();
    // Characters that URIs escape, so the MD5 key must match GLib's own.
    let folder = tmp.path().join("un packed #1 (é)");
    let o = run(&[os("unpack"), archive.as_os_str(), folder.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cache_home = tmp.path().join("cache");
    let o = bin()
        .env("XDG_CACHE_HOME", &cache_home)
        .args([os("thumbnails"), archive.as_os_str(), folder.as_os_str()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let ls = run(&[os("ls"), os("--json"), archive.as_os_str()]);
    let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let mut images = Vec::new();
    let mut others = Vec::new();
    for e in ls.as_array().unwrap() {
        let p = folder.join(e["path"].as_str().unwrap());
        match e["kind"].as_str().unwrap() {
            "image" => images.push((p, e.clone())),
            "file" if e["reason"] != "not an image" => images.push((p, e.clone())),
            "file" => others.push(p),
            _ => {}
        }
    }
    assert!(images.len() >= 8, "{images:?}");
    let paths: Vec<_> = images.iter().map(|(p, _)| p.clone()).collect();
    let found = gio_thumbnails(&cache_home, &paths);
    assert_eq!(found.len(), images.len());
    for ((path, _), (thumb, valid)) in images.iter().zip(&found) {
        assert!(
            thumb.starts_with(cache_home.join("thumbnails").to_str().unwrap()),
            "{}: {thumb}",
            path.display()
        );
        assert!(
            valid,
            "{}: GLib finds the thumbnail out of date",
            path.display()
        );
        // Upright and at most 256 px on its longest side, like the original.
        let t = image::open(thumb).unwrap();
        let orig = image::open(path).unwrap();
        assert_eq!(
            t.width().max(t.height()),
            orig.width().max(orig.height()).min(256),
            "{}",
            path.display()
        );
        assert_eq!(
            t.width() >= t.height(),
            orig.width() >= orig.height(),
            "{} keeps its orientation",
            path.display()
        );
    }
    let found = gio_thumbnails(&cache_home, &others);
    assert!(found.iter().all(|(t, _)| t.is_empty()), "{found:?}");
    let normal = std::fs::read_dir(cache_home.join("thumbnails/normal"))
        .unwrap()
        .count();
    assert_eq!(normal, images.len(), "one 128-px thumbnail per image too");

    // A folder that holds none of the archive's images (another archive's mount, say) is
    // refused, and nothing is written for it.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("unrelated.txt"), b"x").unwrap();
    let other_cache = tmp.path().join("other-cache");
    let o = bin()
        .env("XDG_CACHE_HOME", &other_cache)
        .args([os("thumbnails"), archive.as_os_str(), other.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("none of the archive's images is there"),
        "{}",
        stderr(&o)
    );
    assert!(
        !other_cache.join("thumbnails").exists(),
        "a refusal leaves the cache as it was"
    );
    // Part of the album there: thumbnails for what is there, the rest named (exit 4).
    let first = &images[0].0;
    let part = tmp.path().join("part");
    std::fs::create_dir(&part).unwrap();
    let rel = first.strip_prefix(&folder).unwrap();
    std::fs::create_dir_all(part.join(rel).parent().unwrap()).unwrap();
    std::fs::copy(first, part.join(rel)).unwrap();
    let o = bin()
        .env("XDG_CACHE_HOME", &other_cache)
        .args([os("thumbnails"), archive.as_os_str(), part.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("not in the folder"), "{}", stderr(&o));
    let written = std::fs::read_dir(other_cache.join("thumbnails/large"))
        .unwrap()
        .count();
    assert_eq!(written, 1, "a thumbnail for the one image there");
}

/// Unmounts on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = bin().arg("umount").arg(&self.0).output();
    }
}

#[test]
fn thumbnails_for_a_mount_are_current_for_glib() {
    if !Path::new("/dev/fuse").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must have /dev/fuse");
        eprintln!("SKIPPED: no /dev/fuse");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = sample_archive();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let o = bin()
        .arg("mount")
        .arg("--log-file")
        .arg(tmp.path().join("mount.log"))
        .arg(archive)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let _mount = Mount(mnt.clone());
    let cache_home = tmp.path().join("cache");
    let o = bin()
        .env("XDG_CACHE_HOME", &cache_home)
        .args([os("thumbnails"), archive.as_os_str(), mnt.as_os_str()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let images: Vec<std::path::PathBuf> = ["2005/anne_helene.jpg", "scans/gnucash-guide-p21.png"]
        .iter()
        .map(|p| mnt.join(p))
        .collect();
    let found = gio_thumbnails(&cache_home, &images);
    assert_eq!(found.len(), images.len());
    for (p, (thumb, valid)) in images.iter().zip(&found) {
        assert!(!thumb.is_empty() && *valid, "{}: {thumb}", p.display());
    }
}
