//! The default build targets x86-64-v3 (`.cargo/config.toml`): on an older CPU av1pack must
//! say so and exit with status 1, not die on an illegal instruction. Run under qemu-user
//! (Debian's qemu-user, installed by scripts/install-deps.sh) as a Nehalem, which has no AVX,
//! AVX2, FMA or BMI, and as a Haswell, which has them all.
#![cfg(target_arch = "x86_64")]

use std::process::{Command, Output};

fn run_as(cpu: &str) -> Output {
    Command::new("qemu-x86_64")
        .args(["-cpu", cpu, env!("CARGO_BIN_EXE_av1pack"), "--version"])
        .output()
        .expect("qemu-x86_64 (Debian package qemu-user; scripts/install-deps.sh installs it)")
}

#[test]
fn an_older_cpu_is_told_what_to_build() {
    let old = run_as("Nehalem");
    let err = String::from_utf8_lossy(&old.stderr);
    if cfg!(target_feature = "avx2") {
        assert_eq!(old.status.code(), Some(1), "{err}");
        assert!(
            err.contains("this build needs an x86-64-v3 CPU")
                && err.contains("RUSTFLAGS=\"-C target-cpu=x86-64\""),
            "{err}"
        );
        assert!(old.stdout.is_empty());
    } else {
        // Built for any x86-64 (RUSTFLAGS="-C target-cpu=x86-64"): it runs there too.
        assert!(old.status.success(), "{err}");
    }
    let new = run_as("Haswell");
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    assert!(String::from_utf8_lossy(&new.stdout).starts_with("av1pack "));
}
