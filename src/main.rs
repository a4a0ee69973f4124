use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = av1pack::cli::Cli::parse();
    if !matches!(cli.command, av1pack::cli::Command::Mount(_)) {
        // Like other command-line tools: a reader that goes away (`av1pack verify ... | head`)
        // ends the process quietly instead of making `println!` panic. The mount daemon keeps
        // SIGPIPE ignored: it must survive a parent that stops listening.
        // SAFETY: setting a signal disposition before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match av1pack::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e)
            if e.chain().any(|c| {
                let kind = c
                    .downcast_ref::<std::io::Error>()
                    .map(|io| io.kind())
                    .or_else(|| c.downcast_ref::<serde_json::Error>()?.io_error_kind());
                kind == Some(std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            // The reader went away (`av1pack ls big.mkv | head`): not an error.
            ExitCode::from(av1pack::cli::exit::OK)
        }
        Err(e) if e.downcast_ref::<av1pack::cli::Usage>().is_some() => {
            eprintln!("av1pack: error: {e}");
            ExitCode::from(av1pack::cli::exit::USAGE)
        }
        Err(e) => {
            // The chain of causes, without repeating what a message already says.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            eprintln!("av1pack: error: {msg}");
            ExitCode::from(av1pack::cli::exit::ERROR)
        }
    }
}
