use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = av1pack::cli::Cli::parse();
    match av1pack::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("av1pack: error: {e:#}");
            ExitCode::from(av1pack::cli::exit::ERROR)
        }
    }
}
