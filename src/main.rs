use clap::Parser;
use std::process::ExitCode;

/// Whether this CPU has the instructions of x86-64-v3 that `.cargo/config.toml` builds for
/// (FMA, AVX, AVX2, BMI1, BMI2), read with CPUID. Kept to integer tests so that it runs on any
/// x86-64 CPU.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn cpu_has_v3() -> bool {
    use std::arch::x86_64::__cpuid;
    const FMA: u32 = 1 << 12;
    const AVX: u32 = 1 << 28;
    const BMI1: u32 = 1 << 3;
    const AVX2: u32 = 1 << 5;
    const BMI2: u32 = 1 << 8;
    if __cpuid(0).eax < 7 {
        return false;
    }
    __cpuid(1).ecx & (FMA | AVX) == FMA | AVX
        && __cpuid(7).ebx & (BMI1 | AVX2 | BMI2) == BMI1 | AVX2 | BMI2
}

/// Says that this build does not run on this CPU, with no more than a `write(2)` (the rest of
/// av1pack, even formatting, may use the instructions the CPU lacks).
#[cfg(target_arch = "x86_64")]
#[cold]
#[inline(never)]
fn refuse_cpu() -> ExitCode {
    const MSG: &[u8] =
        b"av1pack: error: this build needs an x86-64-v3 CPU (AVX2, FMA, BMI2) and this \
one lacks some of it; build av1pack for this CPU with RUSTFLAGS=\"-C target-cpu=x86-64\"\n";
    // SAFETY: writing a static buffer to standard error.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
    }
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    #[cfg(target_arch = "x86_64")]
    if !cpu_has_v3() {
        return refuse_cpu();
    }
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
