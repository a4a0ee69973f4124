use super::{exit, write_path, Global};
use crate::archive::{Archive, EntryKind};
use std::io::Write;
use std::path::PathBuf;

/// List the entries of an archive: kind, dimensions, original size, restored size, path.
#[derive(clap::Args, Debug)]
pub struct Args {
    pub archive: PathBuf,
}

pub fn run(a: Args, _g: Global) -> anyhow::Result<u8> {
    let archive = Archive::open(&a.archive)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for e in &archive.index.entries {
        let (kind, dims) = match &e.kind {
            EntryKind::Dir => ("dir", String::from("-")),
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
