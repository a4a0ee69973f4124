use super::{exit, write_path, Global};
use crate::archive::{Archive, EntryKind};
use std::io::Write;
use std::path::PathBuf;

/// List the entries of an archive: kind, dimensions, original size, restored size, path.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  av1pack ls trip.mkv\n  av1pack ls --json trip.mkv | jq -r '.[] | select(.kind == \"image\") | .path'"
)]
pub struct Args {
    pub archive: PathBuf,
    /// Print a JSON array, one object per entry (path, kind, sizes, dimensions, score...).
    #[arg(long)]
    pub json: bool,
}

/// One entry as `ls --json` prints it.
#[derive(serde::Serialize)]
struct JsonEntry {
    /// The path, lossy UTF-8 (`path_bytes` holds the exact bytes when they are not UTF-8).
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<Vec<u8>>,
    /// dir, link, file (kept byte for byte) or image (coded as video).
    kind: &'static str,
    original_size: u64,
    /// Size of the file unpack and the mount give back.
    restored_size: u64,
    mode: u32,
    mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'static str>,
    /// SSIMULACRA2 measured at pack time.
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
    /// Why a file was kept as is.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

pub fn run(a: Args, _g: Global) -> anyhow::Result<u8> {
    let archive = Archive::open(&a.archive)?;
    if a.json {
        let entries: Vec<JsonEntry> = archive
            .index
            .entries
            .iter()
            .map(|e| {
                let path = e.path_lossy();
                let mut j = JsonEntry {
                    path_bytes: (path.as_bytes() != e.path.as_slice()).then(|| e.path.clone()),
                    path,
                    kind: "dir",
                    original_size: e.original_size(),
                    restored_size: e.served_size(),
                    mode: e.mode,
                    mtime: e.mtime.secs,
                    width: None,
                    height: None,
                    format: None,
                    score: None,
                    reason: None,
                    target: None,
                };
                match &e.kind {
                    EntryKind::Dir | EntryKind::Copy { .. } | EntryKind::Link { .. } => {}
                    EntryKind::Symlink { target } => {
                        j.kind = "link";
                        j.target = Some(String::from_utf8_lossy(target).into_owned());
                    }
                    EntryKind::Verbatim { blob, reason } => {
                        j.kind = "file";
                        j.reason = Some(blob.describe(reason));
                    }
                    EntryKind::Image(img) => {
                        j.kind = "image";
                        j.width = Some(img.width);
                        j.height = Some(img.height);
                        j.format = Some(img.format.name());
                        j.score = img.score;
                    }
                }
                j
            })
            .collect();
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &entries)?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for e in &archive.index.entries {
        let (kind, dims) = match &e.kind {
            EntryKind::Dir | EntryKind::Copy { .. } | EntryKind::Link { .. } => {
                ("dir", String::from("-"))
            }
            EntryKind::Symlink { .. } => ("link", String::from("-")),
            EntryKind::Verbatim { .. } => ("file", String::from("-")),
            EntryKind::Image(img) => ("image", format!("{}x{}", img.width, img.height)),
        };
        write!(
            out,
            "{kind:<5} {dims:>11} {:>12} {:>12} ",
            e.original_size(),
            e.served_size()
        )?;
        write_path(&mut out, &e.path)?;
        if let EntryKind::Symlink { target } = &e.kind {
            out.write_all(b" -> ")?;
            write_path(&mut out, target)?;
        }
        writeln!(out)?;
    }
    out.flush()?;
    Ok(exit::OK)
}
