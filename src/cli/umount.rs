use super::{exit, Global};
use crate::daemon;
use anyhow::Context;
use std::path::PathBuf;

/// Unmount a mounted archive.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  av1pack umount ~/trip")]
pub struct Args {
    pub mountpoint: PathBuf,
}

pub fn run(a: Args, _g: Global) -> anyhow::Result<u8> {
    daemon::unmount(&a.mountpoint)
        .with_context(|| format!("could not unmount {}", a.mountpoint.display()))?;
    Ok(exit::OK)
}
