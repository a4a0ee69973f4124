//! `completions` and `man`: generated from the clap definitions, so they never drift.

use super::{exit, Cli, Global};
use anyhow::Context;
use clap::CommandFactory;
use std::io::Write;
use std::path::PathBuf;

/// Print a shell completion script.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  av1pack completions bash > ~/.local/share/bash-completion/completions/av1pack\n  \
av1pack completions zsh > ~/.zfunc/_av1pack      # with fpath+=(~/.zfunc) in ~/.zshrc\n  \
av1pack completions fish > ~/.config/fish/completions/av1pack.fish"
)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Print the manual page (roff), or write one page per command into a folder.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  av1pack man | man -l -\n  \
av1pack man --dir ~/.local/share/man/man1      # av1pack.1, av1pack-pack.1, ...")]
pub struct ManArgs {
    /// Write av1pack.1 and av1pack-COMMAND.1 into this folder instead of printing av1pack.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn completions(a: CompletionsArgs, _g: Global) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(a.shell, &mut cmd, "av1pack", &mut out);
    out.flush()?;
    Ok(exit::OK)
}

pub fn man(a: ManArgs, _g: Global) -> anyhow::Result<u8> {
    let cmd = Cli::command();
    let Some(dir) = a.dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        out.flush()?;
        return Ok(exit::OK);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let write = |name: String, page: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page).render(&mut buf)?;
        std::fs::write(&path, buf).with_context(|| format!("could not write {}", path.display()))
    };
    for sub in cmd.get_subcommands() {
        let name = format!("av1pack-{}", sub.get_name());
        write(name.clone(), sub.clone().name(name))?;
    }
    write("av1pack".into(), cmd)?;
    Ok(exit::OK)
}
